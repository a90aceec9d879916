use super::*;
use std::cell::Cell;
use std::collections::HashMap;

/// An in-memory user table for the decision logic; MySQL itself is covered by the
/// broker tests.
#[derive(Default)]
struct Table {
    users: HashMap<&'static str, UserRecord>,
    fetches: Cell<usize>,
    down: Cell<bool>,
    superquery: Option<bool>,
}

impl Table {
    fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        self.fetches.set(self.fetches.get() + 1);
        if self.down.get() {
            return Err(BackendError::Unavailable("test".into()));
        }
        Ok(self.users.get(username).cloned())
    }
}

impl UserSource for Table {
    fn kind(&self) -> BackendKind {
        BackendKind::Mysql
    }
    fn lookup(&self, username: &str, _: &[u8], _: &[u8]) -> Result<Lookup, BackendError> {
        Ok(self
            .fetch_user(username)?
            .map_or(Lookup::Unknown, Lookup::Row))
    }
    fn superquery(&self, _: &str) -> Option<Result<bool, BackendError>> {
        self.superquery.map(Ok)
    }
    fn fetch_certificate_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        self.fetch_user(username)
    }
}

// MariaDB: SELECT PASSWORD('secret')
const SECRET: &[u8] = b"*14E65567ABDB5135D0CFD9A70B3032C179A49EE7";

fn table() -> Table {
    let mut t = Table::default();
    t.users.insert(
        "alice",
        UserRecord {
            hash: Some(SECRET.to_vec()),
            user_id: Some("17".into()),
            username: Some("alice".into()),
            ..Default::default()
        },
    );
    t.users.insert(
        "Sam",
        UserRecord {
            hash: Some(SECRET.to_vec()),
            username: Some("Sam".into()),
            ..Default::default()
        },
    );
    t.users.insert("nohash", UserRecord::default());
    t.users.insert(
        "empty",
        UserRecord {
            hash: Some(Vec::new()),
            ..Default::default()
        },
    );
    t.users.insert(
        "weird",
        UserRecord {
            hash: Some(b"{SSHA}abc".to_vec()),
            ..Default::default()
        },
    );
    t
}

fn auth(table: Table, ttl: u64) -> Authenticator<Table> {
    Authenticator::new(
        vec![table],
        HashSettings::default(),
        Some(glob::Pattern::new("S*").unwrap()),
        Duration::from_secs(ttl),
        ThrottleConfig::default(),
    )
}

/// steve's row as a case-insensitive users table finds it for every spelling.
fn steve(stored_name: bool) -> UserRecord {
    UserRecord {
        hash: Some(SECRET.to_vec()),
        user_id: Some("503".into()),
        username: stored_name.then(|| "steve".into()),
        ..Default::default()
    }
}

#[test]
fn a_name_is_spelled_as_the_row_holds_it() {
    let mut t = table();
    for spelling in ["steve", "Steve", "steve "] {
        t.users.insert(spelling, steve(true));
    }
    let a = auth(t, 0);
    let now = Instant::now();
    let Decision::Allow(id) = a.login(Some(b"steve"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert!(!id.superuser);
    for other in ["Steve", "steve "] {
        assert_eq!(
            a.login(Some(other.as_bytes()), Some(b"secret"), b"c", None, now),
            Decision::Refuse(Refusal::OtherSpelling("steve".into())),
            "{other:?}"
        );
        assert!(a.certificate_identity(other, now).is_err(), "{other:?}");
    }
}

#[test]
fn globs_match_only_a_name_the_row_holds() {
    let mut t = table();
    t.users.insert("Steve", steve(false));
    t.users.insert(
        "Joe-bridge",
        UserRecord {
            hash: Some(SECRET.to_vec()),
            ..Default::default()
        },
    );
    t.users.insert(
        "bridge-b",
        UserRecord {
            hash: Some(SECRET.to_vec()),
            username: Some("bridge-b".into()),
            ..Default::default()
        },
    );
    let a = auth(t, 60).with_bridge_users(Some(glob::Pattern::new("*-b*").unwrap()));
    let now = Instant::now();
    // No `username` column: the row does not say how the name is stored.
    let Decision::Allow(id) = a.login(Some(b"Steve"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert!(!id.superuser, "S* matched a name the row does not hold");
    assert!(
        a.certificate_identity("Steve", now)
            .is_ok_and(|id| !id.superuser)
    );
    let Decision::Allow(id) = a.login(Some(b"Joe-bridge"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert!(!id.relay);
    let Decision::Allow(id) = a.login(Some(b"bridge-b"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert!(id.relay, "the row holds the name: the glob applies");
    // The cache answers as the login decided.
    let Decision::Allow(id) = a.login(Some(b"Steve"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert!(!id.superuser && !id.relay);
}

#[test]
fn a_null_user_id_is_no_chat_identity() {
    let mut t = table();
    t.users.insert(
        "nobody",
        UserRecord {
            hash: Some(SECRET.to_vec()),
            user_id_null: true,
            ..Default::default()
        },
    );
    let a = auth(t, 0);
    assert_eq!(
        a.login(Some(b"nobody"), Some(b"secret"), b"c", None, Instant::now()),
        Decision::Refuse(Refusal::NullUserId)
    );
}

#[test]
fn right_password_gives_identity() {
    let a = auth(table(), 0);
    let now = Instant::now();
    let Decision::Allow(id) = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert_eq!(id.user_id, "17");
    assert!(!id.superuser);
    let Decision::Allow(id) = a.login(Some(b"Sam"), Some(b"secret"), b"c", None, now) else {
        panic!("refused");
    };
    assert_eq!(id.user_id, "Sam");
    assert!(id.superuser, "superusers glob S*");
}

#[test]
fn refusals() {
    let a = auth(table(), 0);
    let now = Instant::now();
    type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Refusal);
    let cases: &[Case] = &[
        (Some(b"alice"), Some(b"wrong"), Refusal::WrongPassword),
        (Some(b"alice"), None, Refusal::NoPassword),
        (Some(b"bob"), Some(b"secret"), Refusal::UnknownUser),
        (Some(b"nohash"), Some(b"x"), Refusal::NoStoredHash),
        (Some(b"empty"), Some(b"x"), Refusal::NoStoredHash),
        (Some(b"\xff\xfe"), Some(b"x"), Refusal::UnknownUser),
        (
            Some(b"weird"),
            Some(b"x"),
            Refusal::UnusableHash(HashError::Unrecognised),
        ),
    ];
    for (i, (user, pw, why)) in cases.iter().enumerate() {
        // Apart in time, as a client would be.
        let at = now + Duration::from_millis(100) * i as u32;
        assert_eq!(
            a.login(*user, *pw, b"c", None, at),
            Decision::Refuse(why.clone())
        );
    }
    assert_eq!(a.login(None, Some(b"x"), b"c", None, now), Decision::Defer);
}

#[test]
fn superquery_grants_superuser() {
    let mut t = table();
    t.superquery = Some(true);
    let a = auth(t, 0);
    let Decision::Allow(id) = a.login(Some(b"alice"), Some(b"secret"), b"c", None, Instant::now())
    else {
        panic!("refused");
    };
    assert!(id.superuser);
}

#[test]
fn cache_spares_the_database_and_expires() {
    let a = auth(table(), 10);
    let t0 = Instant::now();
    assert!(matches!(
        a.login(Some(b"alice"), Some(b"secret"), b"c", None, t0),
        Decision::Allow(_)
    ));
    assert_eq!(a.sources[0].fetches.get(), 1);
    a.sources[0].down.set(true);
    let t1 = t0 + Duration::from_secs(9);
    assert!(matches!(
        a.login(Some(b"alice"), Some(b"secret"), b"c", None, t1),
        Decision::Allow(_)
    ));
    assert_eq!(a.sources[0].fetches.get(), 1, "served from the cache");
    // A different password is never answered from the cache.
    assert!(matches!(
        a.login(Some(b"alice"), Some(b"secreT"), b"c", None, t1),
        Decision::Refuse(_)
    ));
    assert_eq!(a.sources[0].fetches.get(), 2);
    // After the TTL the database is asked again (and is down: refused).
    let t2 = t0 + Duration::from_secs(11);
    assert!(matches!(
        a.login(Some(b"alice"), Some(b"secret"), b"c", None, t2),
        Decision::Refuse(Refusal::Database(_))
    ));
    assert_eq!(a.cached_logins(), 1);
}

#[test]
fn certificate_users_are_remembered_but_not_their_refusals() {
    let a = auth(table(), 10);
    let t0 = Instant::now();
    let first = a.certificate_identity("alice", t0).unwrap();
    assert_eq!(first.proof, None);
    assert_eq!(a.sources[0].fetches.get(), 1);
    a.sources[0].down.set(true);
    let again = a.certificate_identity("alice", t0 + Duration::from_secs(9));
    assert_eq!(
        again.unwrap(),
        first,
        "served from the cache, still without a proof"
    );
    assert_eq!(a.sources[0].fetches.get(), 1);
    // A password login of the same name is not answered by the certificate's entry.
    assert!(matches!(
        a.login(Some(b"alice"), Some(b""), b"c", None, t0),
        Decision::Refuse(Refusal::Database(_))
    ));
    assert!(matches!(
        a.certificate_identity("alice", t0 + Duration::from_secs(11)),
        Err(Refusal::Database(_))
    ));
    a.sources[0].down.set(false);
    assert!(matches!(
        a.certificate_identity("nobody", t0),
        Err(Refusal::UnknownUser)
    ));
    assert!(matches!(
        a.certificate_identity("nobody", t0),
        Err(Refusal::UnknownUser)
    ));
    assert_eq!(a.sources[0].fetches.get(), 5, "refusals are asked again");
}

#[test]
fn failures_are_not_cached() {
    let a = auth(table(), 10);
    let now = Instant::now();
    a.login(Some(b"alice"), Some(b"nope"), b"c", None, now);
    assert_eq!(a.cached_logins(), 0);
}

#[test]
fn first_logins_are_timed_by_format_and_cached_ones_are_not() {
    let a = auth(table(), 10);
    let t0 = Instant::now();
    let logins: [(&[u8], &[u8], bool); 5] = [
        (b"alice", b"secret", true),
        (b"alice", b"secret", true),
        (b"Sam", b"wrong", false),
        (b"weird", b"x", false),
        (b"nobody", b"x", false),
    ];
    for (user, password, accepted) in logins {
        let decision = a.login(Some(user), Some(password), b"c", None, t0);
        assert_eq!(matches!(decision, Decision::Allow(_)), accepted);
    }
    let times = a.times.snapshot();
    let logins: Vec<(&str, u64)> = times.iter().map(|(k, v)| (k.as_str(), v.logins)).collect();
    // alice once (then cached), Sam's wrong password; the unusable row under its own label.
    assert_eq!(logins, [("mysql", 2), ("unrecognised", 1)]);
}

#[test]
fn macs_hold_no_password_bytes() {
    let secret = Secret::new();
    let a = secret.login_mac("alice", b"secret");
    let b = Secret::new().login_mac("alice", b"secret");
    assert_ne!(a, b, "keyed per process");
    assert_ne!(secret.login_mac("ab", b"c"), secret.login_mac("a", b"bc"));
}

#[test]
fn a_recheck_needs_the_verified_password_and_notices_a_new_hash() {
    let a = auth(table(), 0);
    let Decision::Allow(id) = a.login(Some(b"alice"), Some(b"secret"), b"c", None, Instant::now())
    else {
        panic!("refused");
    };
    let proof = id.proof.expect("a verified login has a proof");
    assert!(a.same_login("alice", Some(b"secret"), Some(&proof)));
    assert!(!a.same_login("alice", Some(b"other"), Some(&proof)));
    assert!(!a.same_login("bob", Some(b"secret"), Some(&proof)));
    assert!(!a.same_login("alice", None, Some(&proof)));
    assert!(a.same_login("alice", None, None), "a restored session");
    assert!(a.still_valid(&proof, SECRET));
    assert!(!a.still_valid(&proof, b"*0000000000000000000000000000000000000000"));
}

#[test]
fn cached_logins_carry_the_same_proof() {
    let a = auth(table(), 10);
    let now = Instant::now();
    let first = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now);
    a.sources[0].down.set(true);
    let cached = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now);
    assert_eq!(first, cached);
}

#[test]
fn a_certificate_user_is_looked_up_without_a_password() {
    let a = auth(table(), 0);
    let now = Instant::now();
    let id = a.certificate_identity("alice", now).unwrap();
    assert_eq!(
        (id.user_id.as_str(), id.superuser, id.proof),
        ("17", false, None)
    );
    assert!(
        a.certificate_identity("Sam", now).unwrap().superuser,
        "glob S*"
    );
    assert_eq!(
        a.certificate_identity("stranger", now),
        Err(Refusal::UnknownUser)
    );
    a.sources[0].down.set(true);
    assert!(matches!(
        a.certificate_identity("alice", now),
        Err(Refusal::Database(_))
    ));
}

#[test]
fn rechecks_are_neither_throttled_nor_counted() {
    let a = auth(table(), 0);
    let now = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            a.recheck(Some(b"alice"), None, b"c", now),
            Decision::Refuse(Refusal::NoPassword)
        );
    }
    assert!(matches!(
        a.login(Some(b"alice"), Some(b"secret"), b"c", Some("10.3.3.3"), now),
        Decision::Allow(_)
    ));
}

#[test]
fn a_wrong_password_flood_is_refused_unchecked_but_not_the_owners_device() {
    let a = auth(table(), 0);
    let mut now = Instant::now();
    let login = |pw: &[u8], client: &str, address: &str, at| {
        a.login(
            Some(b"alice"),
            Some(pw),
            client.as_bytes(),
            Some(address),
            at,
        )
    };
    // The owner's phone logged in once: a known device from then on.
    assert!(matches!(
        login(b"secret", "phone", "10.9.9.9", now),
        Decision::Allow(_)
    ));
    // 20 wrong passwords (a fast hash: no duty-cycle block) from new devices...
    for i in 0..20 {
        now += Duration::from_millis(100);
        assert_eq!(
            login(b"guess", &format!("bot{i}"), "10.1.1.1", now),
            Decision::Refuse(Refusal::WrongPassword)
        );
    }
    // ...then new devices are refused unchecked.
    let fetches = a.sources[0].fetches.get();
    for i in 0..100 {
        assert_eq!(
            login(b"guess", &format!("more{i}"), "10.1.1.1", now),
            Decision::Refuse(Refusal::Throttled)
        );
    }
    assert_eq!(a.sources[0].fetches.get(), fetches, "no row read, no hash");
    // Even a new device with the right password waits for the block...
    assert_eq!(
        login(b"secret", "laptop", "10.2.2.2", now),
        Decision::Refuse(Refusal::Throttled)
    );
    // ...but the phone gets in, from any address, and after a typo at once too.
    assert!(matches!(
        login(b"secret", "phone", "10.1.1.1", now),
        Decision::Allow(_)
    ));
    assert_eq!(
        login(b"typo", "phone", "10.9.9.9", now),
        Decision::Refuse(Refusal::WrongPassword)
    );
    assert!(matches!(
        login(b"secret", "phone", "10.9.9.9", now),
        Decision::Allow(_)
    ));
    // The laptop once the block is over (1 s at the 20th failure).
    let later = now + Duration::from_secs(1);
    assert!(matches!(
        login(b"secret", "laptop", "10.2.2.2", later),
        Decision::Allow(_)
    ));
    let stats = a.throttle_stats();
    assert_eq!(stats.known_devices, 2, "{stats:?}");
    assert_eq!(stats.usernames, 1, "{stats:?}");
    // A database outage is not the client's fault.
    a.sources[0].down.set(true);
    for _ in 0..30 {
        assert!(matches!(
            a.login(Some(b"Sam"), Some(b"x"), b"c", None, later),
            Decision::Refuse(Refusal::Database(_))
        ));
    }
}

/// An HTTP-like backend: checks the password itself.
#[derive(Default)]
struct Service {
    accepts: Vec<(&'static str, &'static [u8])>,
    superusers: Vec<&'static str>,
    down: Cell<bool>,
    asked: Cell<usize>,
}

impl UserSource for Service {
    fn kind(&self) -> BackendKind {
        BackendKind::Http
    }
    fn lookup(&self, username: &str, password: &[u8], _: &[u8]) -> Result<Lookup, BackendError> {
        self.asked.set(self.asked.get() + 1);
        if self.down.get() {
            return Err(BackendError::Service("503".into()));
        }
        Ok(if self.accepts.contains(&(username, password)) {
            Lookup::Accepted
        } else {
            Lookup::Unknown
        })
    }
    fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>> {
        Some(if self.down.get() {
            Err(BackendError::Service("503".into()))
        } else {
            Ok(self.superusers.contains(&username))
        })
    }
    fn fetch_certificate_user(&self, _: &str) -> Result<Option<UserRecord>, BackendError> {
        Ok(None)
    }
}

fn chain(
    sources: Vec<std::sync::Arc<dyn UserSource>>,
) -> Authenticator<std::sync::Arc<dyn UserSource>> {
    Authenticator::new(
        sources,
        HashSettings::default(),
        None,
        Duration::ZERO,
        ThrottleConfig::default(),
    )
    // Every name matches: only MySQL's users become bridge accounts.
    .with_bridge_users(Some(glob::Pattern::new("*").unwrap()))
}

#[test]
// The sources count their calls in Cells; the test is single-threaded.
#[allow(clippy::arc_with_non_send_sync)]
fn the_first_backend_that_knows_the_user_decides() {
    let table = std::sync::Arc::new(table());
    let service = std::sync::Arc::new(Service {
        accepts: vec![("carol", b"pw"), ("alice", b"http-pw")],
        superusers: vec!["carol"],
        ..Default::default()
    });
    let a = chain(vec![table.clone(), service.clone()]);
    let now = Instant::now();
    let login = |user: &[u8], pw: &[u8]| a.login(Some(user), Some(pw), b"c", None, now);
    let Decision::Allow(alice) = login(b"alice", b"secret") else {
        panic!("alice is MySQL's");
    };
    assert_eq!(
        (alice.backend, alice.user_id.as_str(), alice.relay),
        (BackendKind::Mysql, "17", true)
    );
    assert_eq!(service.asked.get(), 0, "MySQL knew alice");
    // MySQL knows alice: its wrong password is not the service's to accept.
    assert_eq!(
        login(b"alice", b"http-pw"),
        Decision::Refuse(Refusal::WrongPassword)
    );
    assert_eq!(service.asked.get(), 0);
    let Decision::Allow(carol) = login(b"carol", b"pw") else {
        panic!("carol is the service's");
    };
    assert_eq!(carol.backend, BackendKind::Http);
    assert!(!carol.relay);
    assert!(carol.superuser, "superusers are asked of each backend");
    assert!(carol.proof.is_none(), "a re-check asks the service again");
    assert_eq!(
        login(b"carol", b"wrong"),
        Decision::Refuse(Refusal::UnknownUser)
    );
    // A backend that is down decides: the next one never answers for its users.
    table.down.set(true);
    assert!(matches!(
        login(b"carol", b"pw"),
        Decision::Refuse(Refusal::Database(_))
    ));
    assert_eq!(service.asked.get(), 2);
    table.down.set(false);
    let a = chain(vec![service.clone(), table.clone()]);
    service.down.set(true);
    assert!(matches!(
        a.login(Some(b"alice"), Some(b"secret"), b"c", None, now),
        Decision::Refuse(Refusal::Database(_))
    ));
    service.down.set(false);
    let Decision::Allow(alice) = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now) else {
        panic!("the service does not know alice's MySQL password: MySQL decides");
    };
    assert_eq!(alice.backend, BackendKind::Mysql);
    assert!(!alice.superuser);
    // Certificate users come from the backend with rows.
    assert_eq!(
        a.certificate_identity("alice", now).map(|i| i.backend),
        Ok(BackendKind::Mysql)
    );
}
