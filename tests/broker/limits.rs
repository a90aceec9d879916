//! Per-user limits through the real broker: the chat rate (a flood from two connections of
//! one user, group messages' weight, superusers unlimited) and connections per user (both
//! policies, take-overs).

use crate::acl::{NOT_AUTHORIZED, PASSWORD};
use crate::fixtures::{chat, chat_broker, login, login_tagged, stats};
use crate::harness::{eventually, fresh_dir, mosquitto_version, shared};
use crate::mqtt::{Mqtt, accepted};
use crate::store::{count, store_broker, store_db};
use chat_auth::limits::rate::RateConfig;
use libtest_mimic::Trial;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "limits::a_flood_gets_the_burst_and_the_rate_through",
            a_flood_gets_the_burst_and_the_rate_through,
        ),
        (
            "limits::group_messages_take_their_weight",
            group_messages_take_their_weight,
        ),
        (
            "limits::connections_beyond_the_limit_are_refused",
            connections_beyond_the_limit_are_refused,
        ),
        (
            "limits::the_oldest_connection_makes_room",
            the_oldest_connection_makes_room,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(5);

/// What an MQTT 5 sender over its rate is told: "quota exceeded" on Mosquitto 2.1, "not
/// authorized" on 2.0 (which has no other answer a plugin may give).
fn over_the_limit() -> u8 {
    if mosquitto_version().contains(" 2.1.") {
        0x97
    } else {
        NOT_AUTHORIZED
    }
}

/// The defaults (docs/limits.md): `chat_burst` at once, then `chat_rate` a second; both of alice's connections
/// draw on one bucket; nothing refused is delivered or stored; one warning; the superuser
/// is not limited.
fn a_flood_gets_the_burst_and_the_rate_through() {
    let db = shared();
    let dbname = store_db(db, "rate");
    let spool = fresh_dir("spool");
    // The defaults, given again: the harness turns the rate off for the other tests.
    let defaults = RateConfig::default();
    let (rate, burst) = (defaults.rate as usize, defaults.burst as usize);
    let broker = store_broker(
        db,
        &dbname,
        &spool,
        &format!("auth_opt_chat_rate {rate}\nauth_opt_chat_burst {burst}\n"),
    );
    let mut bob = login(broker.port, "bob");
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut phone = login_tagged(broker.port, "alice", "phone");
    let mut laptop = login_tagged(broker.port, "alice", "laptop");
    let over = over_the_limit();
    let (mut through, mut refused) = (0usize, 0usize);
    let start = Instant::now();
    for n in 0..200 {
        let client = if n % 2 == 0 { &mut phone } else { &mut laptop };
        let code = client.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("flood {n}")),
            false,
        );
        if accepted(code) {
            through += 1;
        } else {
            assert_eq!(code, over, "message {n} refused with the limit's code");
            refused += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(elapsed < 5.0, "the flood took {elapsed} s");
    // Every token the bucket gains while the flood goes on is used at once.
    let most = burst + (elapsed * rate as f64).ceil() as usize;
    let least = (burst + (elapsed * rate as f64).floor() as usize).saturating_sub(2);
    assert!(
        (least..=most).contains(&through),
        "{through} of 200 through in {elapsed:.2} s (expected {least} to {most})"
    );
    assert_eq!(through + refused, 200);
    let delivered = bob.drain(Duration::from_millis(800));
    assert_eq!(delivered.len(), through, "only the accepted ones delivered");
    eventually("the accepted ones stored", SOON, || {
        count(db, &dbname) == through
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(db, &dbname), through, "none of the refused stored");
    let figures = stats(broker.port);
    assert_eq!(figures["chatRefused"]["rate-limited"], refused, "{figures}");
    assert_eq!(figures["limits"]["rateEpisodes"], 1, "{figures}");
    let log = broker.log();
    assert_eq!(
        log.matches("faster than chat_rate").count(),
        1,
        "one warning for the episode:\n{log}"
    );
    // The superuser sends as it likes.
    let mut admin = Mqtt::connect(broker.port, "admin-flood", "admin", PASSWORD);
    for n in 0..60 {
        let code = admin.publish(
            "/users/2/messages",
            chat("CHAT", 5, 2, &format!("announcement {n}")),
            false,
        );
        assert!(accepted(code), "the superuser's message {n}: {code:#x}");
    }
}

/// A group message takes `chat_group_weight` tokens, an inbox message one.
fn group_messages_take_their_weight() {
    let db = shared();
    let dbname = crate::acl::chat_db(db, "rate_group");
    let broker = chat_broker(
        db,
        &dbname,
        "auth_opt_chat_rate 1\nauth_opt_chat_burst 6\nauth_opt_chat_group_weight 3\n",
    );
    let mut bob = login(broker.port, "bob");
    assert_eq!(bob.subscribe("/groups/10/messages"), 1);
    let mut alice = login(broker.port, "alice");
    let over = over_the_limit();
    let start = Instant::now();
    let codes: Vec<u8> = (0..10)
        .map(|n| {
            alice.publish(
                "/groups/10/messages",
                chat("GROUPCHAT", 1, 10, &format!("all of you {n}")),
                false,
            )
        })
        .collect();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "sent within a token's time"
    );
    // Six tokens: two group messages.
    let through = codes.iter().filter(|c| accepted(**c)).count();
    assert_eq!(through, 2, "{codes:x?}");
    assert!(codes[2..].iter().all(|c| *c == over), "{codes:x?}");
    assert_eq!(bob.drain(Duration::from_millis(500)).len(), 2);
    // A second later one token: an inbox message passes, a group message does not.
    std::thread::sleep(Duration::from_millis(1_100));
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "just you"),
        false
    )));
    assert_eq!(
        alice.publish(
            "/groups/10/messages",
            chat("GROUPCHAT", 1, 10, "all of you again"),
            false
        ),
        over
    );
}

fn alice_as(port: u16, device: &str) -> Result<Mqtt, String> {
    Mqtt::login(
        port,
        crate::mqtt::Login {
            client_id: &format!("alice-{device}"),
            username: "alice",
            password: PASSWORD,
            clean_start: true,
        },
    )
}

/// `max_connections_per_user 2`: a third login is refused (the log says why), a take-over
/// of an id alice holds is let in, and a connection gone makes room.
fn connections_beyond_the_limit_are_refused() {
    let db = shared();
    let dbname = crate::acl::chat_db(db, "connlimit");
    let broker = chat_broker(db, &dbname, "auth_opt_max_connections_per_user 2\n");
    let phone = alice_as(broker.port, "phone").unwrap();
    let _laptop = alice_as(broker.port, "laptop").unwrap();
    let refused = alice_as(broker.port, "tablet")
        .err()
        .expect("a third refused");
    assert!(refused.contains("refused"), "{refused}");
    assert!(
        broker.log().contains("max_connections_per_user"),
        "{}",
        broker.log()
    );
    // Someone else is not concerned; the superuser neither.
    let _bob = login(broker.port, "bob");
    // The phone reconnects with its id before the broker saw it go: a take-over, not a third.
    let mut phone_again = alice_as(broker.port, "phone").expect("a take-over is let in");
    assert_eq!(phone_again.subscribe("/users/1/messages"), 1);
    drop(phone);
    assert!(alice_as(broker.port, "tablet").is_err(), "still two");
    phone_again.disconnect();
    eventually("room for the tablet", SOON, || {
        alice_as(broker.port, "tablet").is_ok()
    });
    let figures = stats(broker.port);
    assert!(
        figures["limits"]["connectedUsers"].as_u64() >= Some(1),
        "{figures}"
    );
}

/// `connection_limit_policy oldest`: the newcomer is let in and the oldest connection is
/// disconnected; a take-over disconnects nobody else.
fn the_oldest_connection_makes_room() {
    let db = shared();
    let dbname = crate::acl::chat_db(db, "connoldest");
    let broker = chat_broker(
        db,
        &dbname,
        "auth_opt_max_connections_per_user 2\nauth_opt_connection_limit_policy oldest\n",
    );
    let mut phone = alice_as(broker.port, "phone").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut laptop = alice_as(broker.port, "laptop").unwrap();
    // A take-over of the laptop's id: no one else goes.
    let mut laptop_again = alice_as(broker.port, "laptop").unwrap();
    assert!(laptop.closed_within(SOON), "the taken-over connection ends");
    assert!(
        !phone.closed_within(Duration::from_millis(700)),
        "the phone stays"
    );
    // A third device: the phone, the oldest, goes.
    let mut tablet = alice_as(broker.port, "tablet").unwrap();
    assert!(
        phone.closed_within(SOON),
        "the oldest connection is disconnected"
    );
    assert!(!laptop_again.closed_within(Duration::from_millis(500)));
    assert_eq!(tablet.subscribe("/users/1/messages"), 1);
    assert!(
        broker.log().contains("oldest connection"),
        "{}",
        broker.log()
    );
    let figures = stats(broker.port);
    assert_eq!(figures["limits"]["connectionsEnded"], 1, "{figures}");
}
