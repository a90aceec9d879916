//! What stopped the broker for everybody (issue 22): the plugin's own log lines with
//! `log_dest topic` and a `$SYS/#` subscriber, a paused MariaDB while clients reconnect, and
//! a users table that answers pings but not queries. Every broker here logs to a topic and
//! has a `$SYS/#` subscriber, so any line the plugin writes goes back through its ACL check.

use crate::acl::{NOT_AUTHORIZED, PASSWORD, USERQUERY, chat_db};
use crate::harness::{Broker, MariaDb, Outcome, connect, eventually, shared};
use crate::mqtt::{Mqtt, accepted};
use crate::security::{
    RawConnect, RawWill, client_id, connect_packet, probe_round_trips, raw_session,
};
use libtest_mimic::Trial;
use mysql::prelude::Queryable;
use serde_json::json;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "stalls::log_lines_to_a_topic_never_deadlock",
            log_lines_to_a_topic_never_deadlock,
        ),
        (
            "stalls::a_paused_mysql_never_holds_a_check",
            a_paused_mysql_never_holds_a_check,
        ),
        (
            "stalls::a_late_rules_refusal_is_not_for_good",
            a_late_rules_refusal_is_not_for_good,
        ),
        (
            "stalls::a_locked_users_table_stalls_once",
            a_locked_users_table_stalls_once,
        ),
        (
            "stalls::new_logins_with_mysql_paused",
            new_logins_with_mysql_paused,
        ),
        (
            "stalls::a_login_that_left_while_waiting_completes_nothing",
            a_login_that_left_while_waiting_completes_nothing,
        ),
        (
            "stalls::a_take_over_binds_the_new_connection",
            a_take_over_binds_the_new_connection,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

/// A chat broker logging to `$SYS/broker/log/#` too, and the superuser `admin` subscribed
/// to `$SYS/#` (a dashboard, mosquitto-exporter).
fn watched_broker(db: &MariaDb, dbname: &str, extra: &str) -> (Broker, Mqtt) {
    let broker = Broker::try_start(
        &format!("{}{USERQUERY}{extra}", db.plugin_options(dbname)),
        "log_dest topic\n",
    )
    .unwrap_or_else(|f| panic!("mosquitto did not start: {}", f.log));
    let mut dashboard = Mqtt::connect(broker.port, &client_id("dashboard"), "admin", PASSWORD);
    assert_eq!(dashboard.subscribe("$SYS/#"), 1);
    (broker, dashboard)
}

/// An inbox message from alice reaches bob: the broker answers.
fn answers(broker: &Broker, what: &str) {
    let mut alice = Mqtt::connect(broker.port, &client_id("alice-check"), "alice", PASSWORD);
    let mut bob = Mqtt::connect(broker.port, &client_id("bob-check"), "bob", PASSWORD);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let text = json!({"type": "CHAT", "fromId": 1, "toId": 2, "content": what}).to_string();
    assert!(accepted(alice.publish("/users/2/messages", text, false)));
    assert!(
        bob.message_on("/users/2/messages", SOON).is_some(),
        "the broker stopped answering after {what}:\n{}",
        broker.log()
    );
}

/// The dashboard saw one of the plugin's lines containing `marker` on a log topic.
fn saw_line(dashboard: &mut Mqtt, marker: &str) {
    let seen = dashboard.drain(Duration::from_millis(500));
    assert!(
        seen.iter().any(|m| m.topic.starts_with("$SYS/broker/log/")
            && String::from_utf8_lossy(&m.payload).contains(marker)),
        "no log line with '{marker}' on $SYS/broker/log: {:?}",
        seen.iter()
            .map(|m| (&m.topic, String::from_utf8_lossy(&m.payload)))
            .collect::<Vec<_>>()
    );
}

fn log_lines_to_a_topic_never_deadlock() {
    let db = MariaDb::start_new("log-topic");
    let dbname = chat_db(&db, "log_topic");
    // Cached logins: the broker is checked with MySQL gone too.
    let (broker, mut dashboard) = watched_broker(&db, &dbname, "auth_opt_auth_cacheseconds 600\n");
    let port = broker.port;
    // A chat will, refused (and logged) while the plugin decides it.
    let will = RawConnect {
        client_id: "dave-will",
        username: "dave",
        password: PASSWORD,
        v5: false,
        clean: true,
        session_expiry: None,
        will: Some(RawWill {
            topic: "/users/2/messages",
            payload: br#"{"type":"CHAT","fromId":4,"toId":2,"content":"will"}"#,
            delay: None,
        }),
    };
    drop(raw_session(port, will).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    answers(&broker, "a refused will");
    saw_line(&mut dashboard, "will of client 'dave-will'");
    // A wrong password.
    assert_eq!(connect(port, "alice", "wrong"), Outcome::Refused(5));
    answers(&broker, "a wrong password");
    saw_line(&mut dashboard, "login refused for user 'alice'");
    // SIGHUP: the reload logs, and the broker re-checks every client it holds.
    broker.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    answers(&broker, "SIGHUP");
    saw_line(&mut dashboard, "reload: refreshing the rules");
    // MySQL gone: the outage lines of a login and of the prober.
    db.stop();
    assert_eq!(connect(port, "carol", PASSWORD), Outcome::Refused(5));
    answers(&broker, "MySQL stopped");
    saw_line(&mut dashboard, "MySQL unreachable");
    db.start();
    eventually("MySQL answers again", Duration::from_secs(20), || {
        broker.log().contains("MySQL answers again")
    });
    answers(&broker, "MySQL started again");
}

/// Ten users with cached logins reconnect and subscribe while MariaDB is frozen: their
/// rules loads hang, and no check waits for them more than `rules_wait_ms`, once; each
/// gets its last known rules (its group).
fn a_paused_mysql_never_holds_a_check() {
    let db = MariaDb::start_new("paused");
    let dbname = chat_db(&db, "paused");
    let users: Vec<String> = (0..10).map(|n| format!("user{n}")).collect();
    for (n, user) in users.iter().enumerate() {
        db.root_exec(&format!(
            "INSERT INTO `{dbname}`.users (id, username, password_hash) \
             VALUES ({}, '{user}', SHA2('{PASSWORD}', 256));
             INSERT INTO `{dbname}`.group_members (group_id, user_id) VALUES (10, {})",
            100 + n,
            100 + n
        ));
    }
    let (broker, _dashboard) = watched_broker(&db, &dbname, "auth_opt_auth_cacheseconds 600\n");
    let port = broker.port;
    let id = |user: &str| client_id(&format!("{user}-phone"));
    // Each logs in once (the credential cache keeps the login) and leaves.
    for user in &users {
        Mqtt::connect(port, &id(user), user, PASSWORD).disconnect();
    }
    // kickUser: the rules held are no longer kept by a cached login, so each reconnect
    // below asks for its rules (from a paused server).
    let mut admin = crate::fixtures::login(port, "admin");
    let kicks: Vec<_> = users
        .iter()
        .map(|user| serde_json::json!({"command": "kickUser", "username": user}))
        .collect();
    let request = serde_json::json!({ "commands": kicks }).to_string();
    assert!(crate::mqtt::accepted(admin.publish(
        "$CONTROL/chat-auth/v1",
        request,
        false
    )));
    admin
        .message_on("$CONTROL/chat-auth/v1/response", Duration::from_secs(5))
        .expect("the kicks answered");
    let mut granted = 0;
    let worst = probe_round_trips(port, || {
        db.pause();
        let started = Instant::now();
        for user in &users {
            let mut client = Mqtt::connect(port, &id(user), user, PASSWORD);
            granted += usize::from(client.subscribe("/groups/10/messages") == 1);
        }
        println!("10 reconnects with subscriptions: {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    });
    db.resume();
    println!("paused MariaDB, 10 cached reconnects: worst probe round trip {worst:?}");
    assert!(worst < Duration::from_secs(1), "worst round trip {worst:?}");
    assert_eq!(granted, 10, "the last known rules hold the group");
    eventually("rules loads flow again", Duration::from_secs(20), || {
        broker.log().contains("rules loads come back again")
    });
    let log = broker.log();
    assert_eq!(
        log.matches("rules loads from MySQL are late").count(),
        1,
        "one line for the episode:\n{log}"
    );
}

/// A group granted just before a first login whose rules load is held up (the members
/// table locked): the first SUBSCRIBE waits a few milliseconds and is refused, and the same
/// SUBSCRIBE is granted once the load comes back.
fn a_late_rules_refusal_is_not_for_good() {
    let db = shared();
    let dbname = chat_db(db, "late_rules");
    let (broker, _dashboard) = watched_broker(db, &dbname, "");
    let port = broker.port;
    let mut lock = root_conn(db, &dbname);
    lock.query_drop("INSERT INTO group_members (group_id, user_id) VALUES (10, 4)")
        .unwrap();
    lock.query_drop("LOCK TABLES group_members WRITE").unwrap();
    let mut dave = Mqtt::connect(port, &client_id("dave"), "dave", PASSWORD);
    let started = Instant::now();
    assert_eq!(dave.subscribe("/groups/10/messages"), NOT_AUTHORIZED);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(500),
        "the check waited {waited:?}"
    );
    // Released before the load's query timeout: the load itself comes back.
    std::thread::sleep(Duration::from_millis(800));
    lock.query_drop("UNLOCK TABLES").unwrap();
    eventually("dave's group subscription", Duration::from_secs(10), || {
        dave.subscribe("/groups/10/messages") == 1
    });
    let log = broker.log();
    assert!(log.contains("rules loads from MySQL are late"), "{log}");
    assert!(!log.contains("MySQL unreachable"), "{log}");
}

/// `count` users named `{prefix}{n}` with ids from `first_id`, the test password (SHA2).
fn new_users(
    db: &MariaDb,
    dbname: &str,
    prefix: &str,
    first_id: usize,
    count: usize,
) -> Vec<String> {
    let users: Vec<String> = (0..count).map(|n| format!("{prefix}{n}")).collect();
    for (n, user) in users.iter().enumerate() {
        db.root_exec(&format!(
            "INSERT INTO `{dbname}`.users (id, username, password_hash) \
             VALUES ({}, '{user}', SHA2('{PASSWORD}', 256))",
            first_id + n
        ));
    }
    users
}

/// A root connection to `dbname` on `db`, for locks the test holds.
fn root_conn(db: &MariaDb, dbname: &str) -> mysql::Conn {
    mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(db.port)
            .user(Some("root"))
            .db_name(Some(dbname)),
    )
    .expect("a root connection")
}

/// A users table locked for 12 s (a long DDL, a report's `LOCK TABLES`): MySQL answers
/// pings, not the user lookup. Eight new users log in meanwhile: the first waits for the
/// query timeout, the others are refused at once, and the breaker closes only once a real
/// lookup is answered again.
fn a_locked_users_table_stalls_once() {
    let db = shared();
    let dbname = chat_db(db, "locked");
    let users = new_users(db, &dbname, "new", 200, 8);
    let (broker, _dashboard) = watched_broker(db, &dbname, "");
    let port = broker.port;
    let mut lock = root_conn(db, &dbname);
    let mut slow_logins = Vec::new();
    let worst = probe_round_trips(port, || {
        lock.query_drop("LOCK TABLES users WRITE").unwrap();
        let locked = Instant::now();
        for user in &users {
            let started = Instant::now();
            let outcome = connect(port, user, PASSWORD);
            let took = started.elapsed();
            println!("{user}: {outcome:?} in {took:?}");
            if took > Duration::from_millis(500) {
                slow_logins.push(took);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(12).saturating_sub(locked.elapsed()));
        lock.query_drop("UNLOCK TABLES").unwrap();
    });
    println!("users table locked 12 s, 8 new logins: worst probe round trip {worst:?}");
    assert!(
        slow_logins.len() <= 1,
        "more than one stall: {slow_logins:?}"
    );
    if delayed_logins() {
        // Mosquitto 2.1: the logins wait on login threads, the broker thread on nothing.
        assert!(
            worst < Duration::from_millis(500),
            "worst round trip {worst:?}"
        );
    } else {
        // One login waits for the query timeout (2 s) on the broker thread, the probe with it.
        assert!(
            worst < Duration::from_millis(3500),
            "worst round trip {worst:?}"
        );
    }
    eventually("a login after the lock", Duration::from_secs(20), || {
        connect(port, "new0", PASSWORD) == Outcome::Accepted
    });
    let log = broker.log();
    assert_eq!(
        log.matches("MySQL unreachable").count(),
        1,
        "one outage, not a flapping one:\n{log}"
    );
    assert_eq!(log.matches("MySQL answers again").count(), 1, "{log}");
}

/// Mosquitto 2.1 lets the plugin answer logins later (`delayed logins` in the start-up line).
fn delayed_logins() -> bool {
    crate::harness::mosquitto_version().contains(" 2.1.")
}

/// Five new users log in while MariaDB is frozen (SIGSTOP) for 6 s. On Mosquitto 2.1 their
/// logins wait on the login threads and are refused when the queries time out, while a
/// probe's round trips stay under 0.5 s; on 2.0 the first one holds the broker thread for the
/// query timeout, the breaker answers the rest at once. Every one of them logs in afterwards.
fn new_logins_with_mysql_paused() {
    let db = MariaDb::start_new("paused-logins");
    let dbname = chat_db(&db, "paused_logins");
    let users = new_users(&db, &dbname, "fresh", 300, 5);
    let (broker, _dashboard) = watched_broker(&db, &dbname, "");
    let port = broker.port;
    let mut outcomes = Vec::new();
    let worst = probe_round_trips(port, || {
        db.pause();
        let paused = Instant::now();
        std::thread::scope(|scope| {
            let logins: Vec<_> = users
                .iter()
                .map(|user| scope.spawn(move || (user, connect(port, user, PASSWORD))))
                .collect();
            for login in logins {
                outcomes.push(login.join().unwrap());
            }
        });
        std::thread::sleep(Duration::from_secs(6).saturating_sub(paused.elapsed()));
        db.resume();
    });
    println!("MariaDB paused 6 s, 5 new logins {outcomes:?}: worst probe round trip {worst:?}");
    assert!(
        outcomes.iter().all(|(_, o)| *o != Outcome::Accepted),
        "no login without its row: {outcomes:?}"
    );
    let bound = if delayed_logins() {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(3500)
    };
    assert!(worst < bound, "worst round trip {worst:?}");
    for user in &users {
        eventually(
            &format!("{user} logs in after the pause"),
            Duration::from_secs(20),
            || connect(port, user, PASSWORD) == Outcome::Accepted,
        );
    }
    if delayed_logins() {
        assert!(
            broker
                .log()
                .contains("delayed logins (checked on login threads)"),
            "{}",
            broker.log()
        );
    }
}

/// Mosquitto 2.1's delayed logins and a client that leaves while its login waits (the
/// broker's own test of it is upstream issue 3388): with the users table locked, so that
/// logins wait on the login threads, a connection for alice sends its CONNECT and closes; a
/// connection for bob with the same client id logs in meanwhile. Once the table is unlocked,
/// bob's connection is let in as bob: alice's answer, for a connection that left, completes
/// nothing, and none of her rights reach bob. On 2.0 nothing waits (logins are answered at
/// once on the broker thread): the steps run, bob logs in as bob.
fn a_login_that_left_while_waiting_completes_nothing() {
    let db = shared();
    let dbname = chat_db(db, "left_waiting");
    let (broker, _dashboard) = watched_broker(db, &dbname, "");
    let port = broker.port;
    let id = client_id("shared-id");
    let mut lock = root_conn(db, &dbname);
    if delayed_logins() {
        lock.query_drop("LOCK TABLES users WRITE").unwrap();
    }
    let alice = RawConnect {
        client_id: &id,
        username: "alice",
        password: PASSWORD,
        v5: false,
        clean: true,
        session_expiry: None,
        will: None,
    };
    let mut left = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut left, &connect_packet(&alice)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(left);
    std::thread::sleep(Duration::from_millis(100));
    let mut bob = std::thread::scope(|scope| {
        let bob = scope.spawn(|| Mqtt::connect(port, &id, "bob", PASSWORD));
        std::thread::sleep(Duration::from_millis(400));
        lock.query_drop("UNLOCK TABLES").unwrap();
        bob.join().unwrap()
    });
    assert_eq!(bob.subscribe("/users/2/messages"), 1, "bob's own inbox");
    assert_eq!(
        bob.subscribe("/users/1/messages"),
        NOT_AUTHORIZED,
        "alice's inbox is not bob's:\n{}",
        broker.log()
    );
    // The broker keeps answering, alice logs in on her own connection.
    answers(&broker, "a login left while it waited");
}

/// A client id held by alice's live connection (with a will) taken over by a new login as bob
/// (delayed on Mosquitto 2.1, completed while the old connection is closed under the same id):
/// the new connection gets bob's session and rights, never alice's.
fn a_take_over_binds_the_new_connection() {
    let db = shared();
    let dbname = chat_db(db, "take_over");
    let (broker, _dashboard) = watched_broker(db, &dbname, "");
    let port = broker.port;
    let id = client_id("taken");
    let mut carol = Mqtt::connect(port, &client_id("carol-reader"), "carol", PASSWORD);
    assert_eq!(carol.subscribe("/users/3/messages"), 1);
    let will = json!({"type": "CHAT", "fromId": 1, "toId": 3, "content": "alice's will"});
    let will = will.to_string();
    let _old = raw_session(
        port,
        RawConnect {
            client_id: &id,
            username: "alice",
            password: PASSWORD,
            v5: false,
            clean: true,
            session_expiry: None,
            will: Some(RawWill {
                topic: "/users/3/messages",
                payload: will.as_bytes(),
                delay: None,
            }),
        },
    )
    .expect("alice's connection");
    let mut bob = Mqtt::connect(port, &id, "bob", PASSWORD);
    assert_eq!(
        bob.subscribe("/users/2/messages"),
        1,
        "bob's own inbox on the new connection:\n{}",
        broker.log()
    );
    assert_eq!(bob.subscribe("/users/1/messages"), NOT_AUTHORIZED);
    // Whatever the broker does with the old connection's will (2.1 drops it at a take-over),
    // nothing of it is delivered under bob's name.
    if let Some(m) = carol.message_on("/users/3/messages", QUIET) {
        let got: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON");
        assert_eq!(got["fromId"], 1, "{got}");
    }
}
