use super::*;

const MS: Duration = Duration::from_millis(1);
/// What a bcrypt cost 10 check costs the broker thread.
const BCRYPT: Duration = Duration::from_millis(60);

fn config() -> ThrottleConfig {
    ThrottleConfig {
        user_failures: 5,
        address_failures: 8,
        max: Duration::from_secs(8),
        ..ThrottleConfig::default()
    }
}

fn login<'a>(user: &'a str, client: &'a str) -> Login<'a> {
    Login {
        username: user,
        client_id: client.as_bytes(),
        address: None,
    }
}

fn from<'a>(user: &'a str, client: &'a str, address: &'a str) -> Login<'a> {
    Login {
        address: Some(address),
        ..login(user, client)
    }
}

/// One login through the throttle: `None` when refused unchecked, else whether it
/// was accepted (`right`), with what it cost.
fn attempt(
    t: &mut Throttle,
    l: Login<'_>,
    right: bool,
    cost: Duration,
    now: Instant,
) -> Option<bool> {
    let (verdict, _) = t.admit(l, now);
    let ticket = verdict.ok()?;
    if right {
        t.succeeded(&ticket, now);
    } else {
        t.failed(&ticket, cost, now);
    }
    Some(right)
}

fn admitted(t: &mut Throttle, l: Login<'_>, now: Instant) -> Result<bool, Refused> {
    t.admit(l, now).0.map(|ticket| ticket.known())
}

#[test]
fn a_typo_then_the_right_password_is_admitted_at_once() {
    let mut t = Throttle::new(config(), Instant::now());
    let now = Instant::now();
    // A new device: its costly failure blocks the username for others...
    assert_eq!(
        attempt(&mut t, login("alice", "laptop"), false, BCRYPT, now),
        Some(false)
    );
    assert_eq!(
        admitted(&mut t, login("alice", "attacker"), now + MS),
        Err(Refused::Username)
    );
    // ...not for its own first retry.
    assert_eq!(
        attempt(&mut t, login("alice", "laptop"), true, BCRYPT, now + MS),
        Some(true)
    );
    // A second failure in a row of the same device gets no such retry.
    let later = now + Duration::from_secs(5);
    attempt(&mut t, login("bob", "laptop"), false, BCRYPT, later);
    attempt(&mut t, login("bob", "laptop"), false, BCRYPT, later + MS);
    assert_eq!(
        admitted(&mut t, login("bob", "laptop"), later + 2 * MS),
        Err(Refused::Username)
    );
    // The block is the cost times 200 / 20 - 1 = 9: one key gets half the budget at most.
    assert!(admitted(&mut t, login("bob", "laptop"), later + MS + 9 * BCRYPT).is_ok());
}

#[test]
fn a_known_device_is_never_refused_by_other_devices() {
    let mut t = Throttle::new(config(), Instant::now());
    let t0 = Instant::now();
    assert_eq!(
        attempt(&mut t, from("alice", "phone", "10.0.0.1"), true, BCRYPT, t0),
        Some(true)
    );
    // A flood from new devices and one address: the username, the address and the
    // budget are all spent.
    let mut now = t0 + MS;
    let mut checked = 0;
    let mut last_checked = now;
    for i in 0..10_000 {
        let device = format!("attacker-{i}");
        if attempt(
            &mut t,
            from("alice", &device, "10.0.0.66"),
            false,
            BCRYPT,
            now,
        )
        .is_some()
        {
            checked += 1;
            last_checked = now;
            now += BCRYPT;
        }
        now += MS;
        // The owner's phone, from the attacker's address too, at any moment.
        if i % 100 == 0 {
            assert_eq!(
                admitted(&mut t, from("alice", "phone", "10.0.0.66"), now),
                Ok(true)
            );
        }
    }
    assert!(checked < 60, "{checked} checked");
    assert_eq!(
        admitted(&mut t, from("alice", "new-tablet", "10.0.0.2"), now),
        Err(Refused::Username)
    );
    assert_eq!(
        admitted(&mut t, from("carol", "new", "10.0.0.66"), last_checked + MS),
        Err(Refused::Address)
    );
    // The phone's own typo, then the right password at once.
    assert_eq!(
        attempt(&mut t, login("alice", "phone"), false, BCRYPT, now),
        Some(false)
    );
    assert_eq!(
        attempt(&mut t, login("alice", "phone"), true, BCRYPT, now),
        Some(true)
    );
}

#[test]
fn a_known_device_is_limited_by_its_own_failures_only() {
    let mut t = Throttle::new(config(), Instant::now());
    let now = Instant::now();
    attempt(&mut t, login("alice", "phone"), true, BCRYPT, now);
    // First failure and first retry: free.
    attempt(&mut t, login("alice", "phone"), false, BCRYPT, now);
    assert_eq!(admitted(&mut t, login("alice", "phone"), now), Ok(true));
    attempt(&mut t, login("alice", "phone"), false, BCRYPT, now);
    // The second failure in a row blocks it for 9 times the cost.
    assert_eq!(
        admitted(&mut t, login("alice", "phone"), now + 539 * MS),
        Err(Refused::Device)
    );
    assert_eq!(
        admitted(&mut t, login("alice", "tablet"), now + MS),
        Ok(false),
        "not others"
    );
    assert_eq!(
        admitted(&mut t, login("alice", "phone"), now + 540 * MS),
        Ok(true)
    );
    // From `user_failures` in a row, the growing block, logged once.
    let mut at = now + Duration::from_secs(1);
    let mut started = Vec::new();
    for _ in 0..3 {
        let (verdict, _) = t.admit(login("alice", "phone"), at);
        started.extend(t.failed(&verdict.unwrap(), MS, at));
        at += Duration::from_secs(10);
    }
    assert_eq!(
        started,
        [Event::Started {
            kind: KeyKind::Device,
            key: "phone".into(),
            user: Some("alice".into()),
            failures: 5,
            blocked_for: Duration::from_secs(1),
        }]
    );
    assert_eq!(
        t.stats().usernames,
        0,
        "a known device's failures are its own"
    );
    // Its success ends the episode and its failures.
    let (verdict, _) = t.admit(login("alice", "phone"), at);
    let ended = t.succeeded(&verdict.unwrap(), at);
    assert!(
        matches!(
            &ended[..],
            [Event::Ended {
                kind: KeyKind::Device,
                refused: 0,
                ..
            }]
        ),
        "{ended:?}"
    );
}

#[test]
fn known_devices_failing_again_share_a_second_budget() {
    let mut t = Throttle::new(config(), Instant::now());
    let t0 = Instant::now();
    let devices: Vec<String> = (0..50).map(|i| format!("id{i}")).collect();
    for d in &devices {
        attempt(&mut t, login("alice", d), true, BCRYPT, t0);
    }
    // Someone presents known client ids with wrong passwords, round and round.
    let mut now = t0;
    let mut refused_by_budget = 0;
    let mut all_events = Vec::new();
    for round in 0..20 {
        for d in &devices {
            let (verdict, events) = t.admit(login("alice", d), now);
            all_events.extend(events);
            match verdict {
                Ok(ticket) => {
                    all_events.extend(t.failed(&ticket, BCRYPT, now));
                    now += BCRYPT;
                }
                Err(Refused::KnownBudget) => refused_by_budget += 1,
                Err(_) => {}
            }
            now += MS;
        }
        assert!(round < 19 || refused_by_budget > 0);
    }
    let elapsed = now - t0;
    let charged = t.stats().known_failed;
    // Two free tries per device, then 20% of the time (plus one second's worth).
    let bound = BCRYPT * 2 * 50 + elapsed / 5 + Duration::from_millis(200) + BCRYPT;
    assert!(charged <= bound, "{charged:?} > {bound:?} in {elapsed:?}");
    assert_eq!(
        all_events
            .iter()
            .filter(|e| matches!(e, Event::BudgetSpent { known: true, .. }))
            .count(),
        1,
        "{all_events:?}"
    );
    // New devices are not refused by the known devices' budget.
    assert!(admitted(&mut t, login("bob", "x"), now).is_ok());
}

#[test]
fn the_budget_bounds_failed_logins_of_new_devices() {
    let mut t = Throttle::new(config(), Instant::now());
    let t0 = Instant::now();
    let mut now = t0;
    let mut events = Vec::new();
    let mut checked = 0u32;
    // A different username and client id each time: no key limit applies.
    for i in 0..200_000u32 {
        let user = format!("user{i}");
        let (verdict, e) = t.admit(login(&user, "x"), now);
        events.extend(e);
        if let Ok(ticket) = verdict {
            events.extend(t.failed(&ticket, BCRYPT, now));
            now += BCRYPT;
            checked += 1;
        }
        now += Duration::from_micros(50);
        if now - t0 > Duration::from_secs(10) {
            break;
        }
    }
    let elapsed = now - t0;
    let spent = BCRYPT * checked;
    assert_eq!(t.stats().new_failed, spent);
    let bound = elapsed / 5 + Duration::from_millis(200) + BCRYPT;
    assert!(spent <= bound, "{spent:?} in {elapsed:?}");
    assert!(
        spent >= elapsed / 5 - BCRYPT * 2,
        "the budget is usable: {spent:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(
                e,
                Event::BudgetSpent {
                    known: false,
                    percent: 20
                }
            ))
            .count(),
        1,
        "one line per episode"
    );
    assert!(t.stats().refused(Refused::Budget) > 1_000);
    assert_eq!(t.stats().refused(Refused::Username), 0);
    // A new device gets in once the bucket refills (the debt is one login's at most: 60 ms
    // at 20% takes 0.3 s).
    assert_eq!(admitted(&mut t, login("x", "y"), now), Err(Refused::Budget));
    let later = now + Duration::from_secs(2);
    let (verdict, ended) = t.admit(login("x", "y"), later);
    assert!(verdict.is_ok());
    assert!(
        matches!(&ended[..], [Event::BudgetRefilled { known: false, refused }] if *refused > 0),
        "{ended:?}"
    );
}

#[test]
fn successes_are_never_charged() {
    let mut t = Throttle::new(config(), Instant::now());
    let now = Instant::now();
    for i in 0..1_000 {
        let user = format!("user{i}");
        assert_eq!(
            attempt(&mut t, login(&user, "c"), true, BCRYPT, now),
            Some(true)
        );
    }
    assert_eq!(t.stats().new_failed, Duration::ZERO);
    assert_eq!(t.stats().known_devices, 1_000);
}

#[test]
fn every_spelling_of_a_name_counts_for_one_account() {
    let mut t = Throttle::new(ThrottleConfig::default(), Instant::now());
    let mut now = Instant::now();
    for i in 0..20 {
        let spelling = ["alice", "Alice", "ALICE ", "aLiCe"][i % 4];
        let device = format!("d{i}");
        let (verdict, _) = t.admit(login(spelling, &device), now);
        t.failed(&verdict.unwrap(), MS, now);
        now += 10 * MS;
    }
    assert_eq!(
        admitted(&mut t, login("alice", "other"), now),
        Err(Refused::Username)
    );
}

#[test]
fn username_blocking_starts_only_after_many_failures() {
    let mut t = Throttle::new(ThrottleConfig::default(), Instant::now());
    let t0 = Instant::now();
    let mut now = t0;
    // Cheap failures (a fast hash), each from another device.
    for i in 0..19 {
        let device = format!("d{i}");
        let (verdict, _) = t.admit(login("alice", &device), now);
        assert!(t.failed(&verdict.unwrap(), MS, now).is_empty());
        now += 10 * MS;
    }
    assert!(admitted(&mut t, login("alice", "other"), now).is_ok());
    let (verdict, _) = t.admit(login("alice", "d19"), now);
    let events = t.failed(&verdict.unwrap(), MS, now);
    assert_eq!(
        events,
        [Event::Started {
            kind: KeyKind::Username,
            key: "alice".into(),
            user: None,
            failures: 20,
            blocked_for: Duration::from_secs(1),
        }]
    );
    assert_eq!(
        admitted(&mut t, login("alice", "other"), now + 999 * MS),
        Err(Refused::Username)
    );
    assert!(
        admitted(&mut t, login("bob", "other"), now).is_ok(),
        "other users"
    );
    // 21st: 2 s, 22nd: 4 s...; logged once per episode.
    let mut at = now + Duration::from_secs(1);
    for (i, expected) in [2, 4, 8].into_iter().enumerate() {
        let device = format!("e{i}");
        let (verdict, _) = t.admit(login("alice", &device), at);
        assert!(t.failed(&verdict.unwrap(), MS, at).is_empty());
        assert_eq!(
            admitted(
                &mut t,
                login("alice", "other"),
                at + Duration::from_secs(expected) - MS
            ),
            Err(Refused::Username)
        );
        at += Duration::from_secs(expected);
    }
    // No success resets it (the owner's known device proves nothing about the others)...
    attempt(&mut t, login("alice", "phone"), true, MS, at);
    assert_eq!(t.stats().usernames, 1);
    // ...it is forgotten once the failures stop, with one line.
    let ended = t.sweep(at + Duration::from_secs(3600));
    assert!(
        matches!(&ended[..], [Event::Ended { kind: KeyKind::Username, key, refused: 4, .. }] if key == "alice"),
        "{ended:?}"
    );
    assert_eq!(t.stats().usernames, 0);
}

#[test]
fn an_address_is_throttled_across_usernames_and_not_reset_by_a_success() {
    let mut t = Throttle::new(config(), Instant::now());
    let now = Instant::now();
    for i in 0..8u32 {
        let user = format!("u{i}");
        assert!(
            attempt(
                &mut t,
                from(&user, "c", "10.0.0.9"),
                false,
                MS,
                now + i * 10 * MS
            )
            .is_some()
        );
    }
    assert_eq!(
        admitted(&mut t, from("someone", "c", "10.0.0.9"), now + 100 * MS),
        Err(Refused::Address)
    );
    assert!(admitted(&mut t, from("someone", "c", "10.0.0.10"), now + 100 * MS).is_ok());
    // The attacker's own account logs in from there (after the block): nothing reset.
    let later = now + Duration::from_secs(2);
    assert_eq!(
        attempt(&mut t, from("mallory", "m", "10.0.0.9"), true, MS, later),
        Some(true)
    );
    attempt(&mut t, from("u9", "c", "10.0.0.9"), false, MS, later);
    assert_eq!(
        admitted(&mut t, from("someone", "c", "10.0.0.9"), later + MS),
        Err(Refused::Address),
        "the 9th failure blocks for 2 s: the count went on"
    );
}

#[test]
fn loopback_addresses_are_never_throttled() {
    let mut t = Throttle::new(config(), Instant::now());
    let now = Instant::now();
    for address in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        for i in 0..20u32 {
            let user = format!("{address}-{i}");
            attempt(
                &mut t,
                from(&user, "c", address),
                false,
                MS,
                now + i * 10 * MS,
            );
        }
        assert!(
            admitted(
                &mut t,
                from("fresh", "c", address),
                now + Duration::from_secs(1)
            )
            .is_ok()
        );
    }
    assert_eq!(t.stats().addresses, 0);
}

#[test]
fn the_address_limit_can_be_off() {
    let mut t = Throttle::new(
        ThrottleConfig {
            address_failures: 0,
            ..config()
        },
        Instant::now(),
    );
    let now = Instant::now();
    for i in 0..20u32 {
        attempt(
            &mut t,
            from(&format!("u{i}"), "c", "10.0.0.9"),
            false,
            MS,
            now + i * 10 * MS,
        );
    }
    assert!(
        admitted(
            &mut t,
            from("fresh", "c", "10.0.0.9"),
            now + Duration::from_secs(1)
        )
        .is_ok()
    );
}

#[test]
fn disabled_throttle_admits_everything_and_keeps_nothing() {
    let mut t = Throttle::new(
        ThrottleConfig {
            user_failures: 0,
            ..config()
        },
        Instant::now(),
    );
    let now = Instant::now();
    for _ in 0..100 {
        attempt(
            &mut t,
            from("alice", "c", "10.0.0.1"),
            false,
            Duration::from_secs(1),
            now,
        );
    }
    attempt(&mut t, from("alice", "c", "10.0.0.1"), true, MS, now);
    assert!(admitted(&mut t, from("alice", "d", "10.0.0.1"), now).is_ok());
    assert_eq!(
        t.stats().usernames + t.stats().addresses + t.stats().known_devices,
        0
    );
    assert_eq!(t.stats().new_failed, Duration::ZERO);
}

#[test]
fn known_devices_expire_and_are_bounded_per_user_and_in_all() {
    let config = ThrottleConfig {
        known_devices: 20,
        known_device_lifetime: Duration::from_secs(3600),
        ..config()
    };
    let mut t = Throttle::new(config, Instant::now());
    let t0 = Instant::now();
    // One account with many client ids keeps only its own last 8.
    for i in 0..30u32 {
        let device = format!("m{i}");
        attempt(&mut t, login("mallory", &device), true, MS, t0 + i * MS);
    }
    assert_eq!(t.stats().known_devices, DEVICES_PER_USER);
    assert_eq!(admitted(&mut t, login("mallory", "m29"), t0), Ok(true));
    assert_eq!(admitted(&mut t, login("mallory", "m0"), t0), Ok(false));
    for i in 0..12u32 {
        let user = format!("u{i}");
        attempt(&mut t, login(&user, "c"), true, MS, t0);
    }
    assert_eq!(t.stats().known_devices, 20);
    // Full: a new user's device is not remembered, nobody's is pushed out.
    attempt(&mut t, login("late", "c"), true, MS, t0);
    assert_eq!(admitted(&mut t, login("late", "c"), t0), Ok(false));
    assert_eq!(admitted(&mut t, login("u0", "c"), t0), Ok(true));
    // The same username with another client id is another device.
    assert_eq!(admitted(&mut t, login("u0", "d"), t0), Ok(false));
    // Full: a known user's new device is not remembered either while none of its own
    // expired. A known device's failures are kept beside it...
    let half = t0 + Duration::from_secs(1800);
    attempt(&mut t, login("u1", "d"), true, MS, half);
    assert_eq!(admitted(&mut t, login("u1", "d"), half), Ok(false));
    attempt(&mut t, login("u1", "c"), false, BCRYPT, half);
    attempt(&mut t, login("u1", "c"), false, BCRYPT, half);
    assert_eq!(t.known.failing.len(), 1);
    // After the lifetime a device is new again, and the sweep frees its room.
    let later = t0 + Duration::from_secs(3601);
    assert_eq!(admitted(&mut t, login("u0", "c"), later), Ok(false));
    t.sweep(later);
    assert_eq!(t.stats().known_devices, 0);
    assert_eq!(t.known.failing.len(), 0, "...and go with it");
    attempt(&mut t, login("late", "c"), true, MS, later);
    assert_eq!(admitted(&mut t, login("late", "c"), later), Ok(true));
}

#[test]
fn a_users_devices_expire_one_by_one() {
    let config = ThrottleConfig {
        known_device_lifetime: Duration::from_secs(3600),
        ..config()
    };
    let mut t = Throttle::new(config, Instant::now());
    let t0 = Instant::now();
    for (i, device) in ["a", "b", "c"].into_iter().enumerate() {
        attempt(
            &mut t,
            login("alice", device),
            true,
            MS,
            t0 + Duration::from_secs(1000) * i as u32,
        );
    }
    let later = t0 + Duration::from_secs(4500);
    t.sweep(later);
    assert_eq!(t.stats().known_devices, 2);
    assert_eq!(admitted(&mut t, login("alice", "a"), later), Ok(false));
    assert_eq!(admitted(&mut t, login("alice", "b"), later), Ok(true));
    t.sweep(later + Duration::from_secs(1000));
    assert_eq!(t.stats().known_devices, 1);
    assert_eq!(admitted(&mut t, login("alice", "c"), later), Ok(true));
}

#[test]
fn memory_is_bounded_in_bytes_whatever_the_names() {
    let config = ThrottleConfig {
        user_failures: 10,
        address_failures: 10,
        ..ThrottleConfig::default()
    };
    let mut t = Throttle::new(config, Instant::now());
    let now = Instant::now();
    let long = "x".repeat(1_000);
    // More keys than kept, with 1 KB usernames (100 MB if they were kept), from as many
    // addresses; cheap
    // failures so no budget stops them (the budget is tested above); and as many known
    // devices as allowed, one user each.
    let mut known = 0;
    for i in 0..(MAX_KEYS + 1_000) {
        let user = format!("{long}{i}");
        let address = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let device = format!("{long}-device");
        for _ in 0..if i < 2 * MAX_EPISODES { 20 } else { 1 } {
            let (verdict, _) = t.admit(from(&user, &device, &address), now);
            if let Ok(ticket) = verdict {
                t.failed(&ticket, Duration::ZERO, now);
            }
        }
        let (verdict, _) = t.admit(login(&user, "c"), now);
        if let Ok(ticket) = verdict {
            t.succeeded(&ticket, now);
            known += 1;
        }
    }
    let stats = t.stats();
    assert_eq!((stats.usernames, stats.addresses), (MAX_KEYS, MAX_KEYS));
    assert_eq!(stats.known_devices, 100_000.min(known));
    // Documented (docs/security.md): 14.4 MB at most with the defaults, against
    // gigabytes when whole names were the keys.
    println!(
        "throttle state: {} bytes (usernames {}, addresses {}, known devices {})",
        stats.bytes,
        t.users.bytes(),
        t.addresses.bytes(),
        t.known.bytes()
    );
    assert!(stats.bytes < 15_000_000, "{} bytes", stats.bytes);
    let episodes = t.users.episodes.0.len() + t.addresses.episodes.0.len();
    assert_eq!(episodes, 2 * MAX_EPISODES, "named episodes are capped");
    assert!(
        t.users
            .episodes
            .0
            .values()
            .all(|e| e.name.len() <= NAME_BYTES + 3)
    );
}

#[test]
fn logins_checked_at_once_cannot_overdraw_the_budget() {
    // Mosquitto 2.1 checks several logins at once on login threads: each admitted login
    // holds back the last failure's cost until its outcome is told.
    let start = Instant::now();
    let mut t = Throttle::new(config(), start);
    // The budget holds 200 ms (20 % of a second); one failure of 150 ms leaves 50 ms.
    let cost = 150 * MS;
    assert_eq!(
        attempt(&mut t, login("u0", "d0"), false, cost, start),
        Some(false)
    );
    let (first, _) = t.admit(login("u1", "d1"), start);
    let first = first.expect("50 ms left: one more check");
    let (second, _) = t.admit(login("u2", "d2"), start);
    assert_eq!(
        second.err(),
        Some(Refused::Budget),
        "the first one in flight holds the rest back"
    );
    // Its outcome is told (no failure charged): the place is given back.
    t.ended(&first);
    let (third, _) = t.admit(login("u3", "d3"), start);
    let third = third.expect("nothing in flight");
    t.succeeded(&third, start);
    assert!(t.admit(login("u4", "d4"), start).0.is_ok());
}
