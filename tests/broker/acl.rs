//! Authorization through the real broker: inboxes, groups, wildcards and `$share`,
//! refreshes (refreshUser, SIGHUP, cache time), superusers, auth-plug ACL rows, MySQL
//! stopping mid-run, persistent sessions, and the plugin's state after many clients.

use crate::fixtures::{chat, chat_broker, login};
use crate::harness::{MariaDb, eventually, raw_connect, shared};
use crate::mqtt::{Login, Mqtt, accepted};
use libtest_mimic::Trial;
use serde_json::{Value, json};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        ("acl::inbox_is_private", inbox_is_private),
        ("acl::group_members_only", group_members_only),
        (
            "acl::membership_changes_apply_without_reconnect",
            membership_changes_apply_without_reconnect,
        ),
        ("acl::superuser_sees_everything", superuser_sees_everything),
        ("acl::auth_plug_acl_rows", auth_plug_acl_rows),
        (
            "acl::mysql_stopped_keeps_last_rules",
            mysql_stopped_keeps_last_rules,
        ),
        (
            "acl::persistent_session_gets_queued_inbox_messages",
            persistent_session_gets_queued_inbox_messages,
        ),
        (
            "acl::state_is_empty_after_thousands_of_clients",
            state_is_empty_after_thousands_of_clients,
        ),
    ];
    crate::trials(tests)
}

/// The password `chat_db` gives every user.
pub const PASSWORD: &str = "s3cret pw";
pub const USERQUERY: &str = "auth_opt_userquery SELECT password_hash, salt, id AS user_id, \
     is_superuser, username FROM users WHERE username = ? LIMIT 1\n";
const QUIET: Duration = Duration::from_millis(600);
const SOON: Duration = Duration::from_secs(5);
pub const NOT_AUTHORIZED: u8 = 0x87;

/// A database with alice (1), bob (2), carol (3), dave (4) and the superuser admin (5);
/// group 10 holds alice, bob and carol.
pub fn chat_db(db: &MariaDb, test: &str) -> String {
    let dbname = db.database(&format!("{test}_{}", std::process::id()));
    db.root_exec(&format!(
        "USE `{dbname}`;
         INSERT INTO users (id, username, password_hash, is_superuser) VALUES
           (1, 'alice', SHA2('{PASSWORD}', 256), 0), (2, 'bob', SHA2('{PASSWORD}', 256), 0),
           (3, 'carol', SHA2('{PASSWORD}', 256), 0), (4, 'dave', SHA2('{PASSWORD}', 256), 0),
           (5, 'admin', SHA2('{PASSWORD}', 256), 1);
         INSERT INTO chat_groups (id, name) VALUES (10, 'team');
         INSERT INTO group_members (group_id, user_id) VALUES (10, 1), (10, 2), (10, 3);"
    ));
    dbname
}

/// A delivered chat message is the one sent, stamped by the broker with `id` and `ts`.
pub fn assert_chat(delivered: &[u8], sent: &[u8]) {
    let delivered: Value = serde_json::from_slice(delivered).expect("delivered JSON");
    let sent: Value = serde_json::from_slice(sent).expect("sent JSON");
    for (key, value) in sent.as_object().unwrap() {
        assert_eq!(&delivered[key], value, "field {key} of {delivered}");
    }
    assert!(delivered["id"].is_string(), "{delivered}");
    assert!(delivered["ts"].is_i64(), "{delivered}");
}

/// Sends a control command as `admin` and returns the first response item.
pub fn control(admin: &mut Mqtt, command: Value) -> Value {
    let payload = json!({ "commands": [command] }).to_string();
    assert!(accepted(admin.publish(
        "$CONTROL/chat-auth/v1",
        payload,
        false
    )));
    let answer = admin
        .message_on("$CONTROL/chat-auth/v1/response", SOON)
        .expect("a control response");
    let answer: Value = serde_json::from_slice(&answer.payload).expect("JSON response");
    answer["responses"][0].clone()
}

fn inbox_is_private() {
    let db = shared();
    let dbname = chat_db(db, "inbox");
    let broker = chat_broker(db, &dbname, "");
    let mut alice = login(broker.port, "alice");
    let mut bob = login(broker.port, "bob");
    for filter in [
        "/users/2/messages",
        "#",
        "/users/#",
        "/users/+/messages",
        "+/+/+/+",
        "/+/2/messages",
        "$share/spies//users/2/messages",
        "$share/spies/#",
    ] {
        assert_eq!(alice.subscribe(filter), NOT_AUTHORIZED, "alice on {filter}");
    }
    assert_eq!(alice.subscribe("/users/1/messages"), 1);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);

    let hello = chat("CHAT", 1, 2, "hi bob \"quoted\" ✓");
    assert!(accepted(alice.publish(
        "/users/2/messages",
        hello.clone(),
        false
    )));
    let got = bob
        .message_on("/users/2/messages", SOON)
        .expect("bob gets it");
    assert_chat(&got.payload, &hello);
    assert!(alice.drain(QUIET).is_empty(), "alice sees nothing of bob's");

    // A retained chat message would replay forever: refused.
    assert_eq!(
        alice.publish("/users/2/messages", chat("CHAT", 1, 2, "r"), true),
        NOT_AUTHORIZED
    );
    // Topics outside the chat model need an ACL row.
    assert_eq!(alice.publish("random/topic", "x", false), NOT_AUTHORIZED);
    assert_eq!(
        alice.publish("$CONTROL/chat-auth/v1", "{}", false),
        NOT_AUTHORIZED
    );
    assert!(bob.drain(QUIET).is_empty(), "nothing refused was delivered");
    let log = broker.log();
    assert!(!log.contains("internal error"), "{log}");
}

fn group_members_only() {
    let db = shared();
    let dbname = chat_db(db, "group");
    let broker = chat_broker(db, &dbname, "");
    let group = "/groups/10/messages";
    let mut members: Vec<Mqtt> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| login(broker.port, u))
        .collect();
    for member in &mut members {
        assert_eq!(member.subscribe(group), 1);
    }
    let mut dave = login(broker.port, "dave");
    assert_eq!(dave.subscribe(group), NOT_AUTHORIZED);
    assert_eq!(dave.subscribe("/groups/+/messages"), NOT_AUTHORIZED);
    assert_eq!(
        dave.publish(group, chat("GROUPCHAT", 4, 10, "let me in"), false),
        NOT_AUTHORIZED
    );
    assert_eq!(members[1].subscribe("/groups/11/messages"), NOT_AUTHORIZED);

    let text = chat("GROUPCHAT", 1, 10, "team meeting at 10");
    assert!(accepted(members[0].publish(group, text.clone(), false)));
    for member in &mut members {
        let got = member
            .message_on(group, SOON)
            .unwrap_or_else(|| panic!("{} gets the group message", member.client_id));
        assert_chat(&got.payload, &text);
        assert!(
            member.drain(QUIET).is_empty(),
            "dave's message never arrived"
        );
    }
    assert_eq!(
        members[0].publish(group, chat("GROUPCHAT", 1, 10, "r"), true),
        NOT_AUTHORIZED
    );
}

fn membership_changes_apply_without_reconnect() {
    let db = shared();
    let dbname = chat_db(db, "refresh");
    let broker = chat_broker(db, &dbname, "auth_opt_acl_cacheseconds 3\n");
    let group = "/groups/10/messages";
    let mut carol = login(broker.port, "carol");
    let mut alice = login(broker.port, "alice");
    let mut admin = login(broker.port, "admin");
    assert_eq!(carol.subscribe(group), 1);
    let can_write = |carol: &mut Mqtt| {
        accepted(carol.publish(group, chat("GROUPCHAT", 3, 10, "still here?"), false))
    };

    // 1. refreshUser: applied when the answer comes back.
    db.root_exec(&format!(
        "DELETE FROM `{dbname}`.group_members WHERE user_id = 3"
    ));
    let answer = control(
        &mut admin,
        json!({"command": "refreshUser", "username": "carol", "correlationData": "r1"}),
    );
    assert_eq!(answer["command"], "refreshUser", "{answer}");
    assert_eq!(answer["correlationData"], "r1");
    assert_eq!(answer["data"]["clients"], 1, "{answer}");
    assert!(!can_write(&mut carol), "removed by refreshUser");
    // Her old subscription no longer delivers (READ is checked per message).
    assert!(accepted(alice.publish(
        group,
        chat("GROUPCHAT", 1, 10, "secret"),
        false
    )));
    assert!(carol.message_on(group, QUIET).is_none());

    // 2. SIGHUP reloads everyone.
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.group_members VALUES (10, 3)"
    ));
    broker.signal(libc::SIGHUP);
    eventually("carol back after SIGHUP", SOON, || can_write(&mut carol));

    // 3. The cache time alone.
    db.root_exec(&format!(
        "DELETE FROM `{dbname}`.group_members WHERE user_id = 3"
    ));
    assert!(can_write(&mut carol), "rules held until the refresh");
    eventually("carol removed after acl_cacheseconds", SOON, || {
        !can_write(&mut carol)
    });

    // Control commands are for superusers only; others cannot even publish there.
    assert_eq!(
        alice.publish(
            "$CONTROL/chat-auth/v1",
            r#"{"commands":[{"command":"kickUser","username":"bob"}]}"#,
            false
        ),
        NOT_AUTHORIZED
    );
    let unknown = control(&mut admin, json!({"command": "dropTables"}));
    assert!(unknown["error"].as_str().unwrap().contains("unknown"));
    // kickUser disconnects every client of the user.
    let kicked = control(
        &mut admin,
        json!({"command": "kickUser", "username": "carol"}),
    );
    assert!(kicked.get("error").is_none(), "{kicked}");
    assert!(carol.closed_within(SOON), "carol disconnected");
    assert!(!alice.closed_within(QUIET), "alice stays");
}

fn superuser_sees_everything() {
    let db = shared();
    let dbname = chat_db(db, "superuser");
    let broker = chat_broker(db, &dbname, "");
    let mut admin = login(broker.port, "admin");
    let mut alice = login(broker.port, "alice");
    assert_eq!(admin.subscribe("#"), 1);
    assert_eq!(admin.subscribe("/users/+/messages"), 1);
    let text = chat("CHAT", 1, 2, "for bob only");
    assert!(accepted(alice.publish(
        "/users/2/messages",
        text.clone(),
        false
    )));
    let seen = admin
        .message_on("/users/2/messages", SOON)
        .expect("the superuser sees every inbox");
    assert_chat(&seen.payload, &text);
    let stats = control(&mut admin, json!({"command": "getStats"}));
    assert_eq!(stats["data"]["onlineSessions"], 2, "{stats}");
    assert_eq!(stats["data"]["databaseDown"], false);
}

fn auth_plug_acl_rows() {
    let db = shared();
    let dbname = chat_db(db, "aclrows");
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.acls (username, topic, rw) VALUES
           ('alice', 'sensors/%u/#', 1), ('alice', 'cmd/%c', 2), ('alice', 'both/#', 3),
           ('alice', 'sub/only', 4), ('bob', 'sensors/#', 1)"
    ));
    let aclquery =
        "auth_opt_aclquery SELECT topic FROM acls WHERE (username = '%s') AND (rw >= %d)\n";
    let broker = chat_broker(db, &dbname, aclquery);
    // A client id with '/' (auth-plug refused those).
    let mut alice = Mqtt::connect(broker.port, "dev/1", "alice", PASSWORD);
    // rw 1: read only.
    assert_eq!(alice.subscribe("sensors/alice/+"), 1);
    assert_eq!(alice.subscribe("sensors/alice/#"), 1);
    assert_eq!(alice.subscribe("sensors/bob/#"), NOT_AUTHORIZED);
    assert_eq!(
        alice.subscribe("sensors/#"),
        NOT_AUTHORIZED,
        "wider than the row"
    );
    assert_eq!(alice.publish("sensors/alice/t", "1", false), NOT_AUTHORIZED);
    // rw 2: write; %c is the client id, '/' and all.
    assert!(accepted(alice.publish("cmd/dev/1", "go", false)));
    assert_eq!(alice.publish("cmd/dev/2", "go", false), NOT_AUTHORIZED);
    // rw 3: both.
    assert_eq!(alice.subscribe("both/+"), 1);
    assert!(accepted(alice.publish("both/x", "1", false)));
    let echo = alice.message_on("both/x", SOON).expect("own rw 3 message");
    assert_eq!(echo.payload, b"1");
    // The chat rules still come first: a row cannot open another inbox.
    assert_eq!(alice.subscribe("#"), NOT_AUTHORIZED);
    // Delivery is checked too: bob's rows let him read sensors/# but not alice's 'both/'.
    let mut bob = Mqtt::connect(broker.port, "bob-1", "bob", PASSWORD);
    assert_eq!(bob.subscribe("sensors/#"), 1);
    assert_eq!(bob.subscribe("both/#"), NOT_AUTHORIZED);
    drop(broker);

    // acl_subscribe_level 4: SUBSCRIBE needs a row with rw >= 4 (go-auth's meaning).
    let broker = chat_broker(
        db,
        &dbname,
        &format!("{aclquery}auth_opt_acl_subscribe_level 4\n"),
    );
    let mut alice = Mqtt::connect(broker.port, "dev/1", "alice", PASSWORD);
    assert_eq!(alice.subscribe("sensors/alice/x"), NOT_AUTHORIZED);
    assert_eq!(alice.subscribe("sub/only"), 1);
}

fn mysql_stopped_keeps_last_rules() {
    let db = MariaDb::start_new("acl-outage");
    let dbname = chat_db(&db, "outage");
    let broker = chat_broker(
        &db,
        &dbname,
        "auth_opt_acl_cacheseconds 1\nauth_opt_connect_timeout_ms 500\n\
         auth_opt_query_timeout_ms 500\n",
    );
    let mut alice = login(broker.port, "alice");
    let mut bob = login(broker.port, "bob");
    assert_eq!(bob.subscribe("/groups/10/messages"), 1);
    db.stop();
    eventually("a failed refresh", Duration::from_secs(10), || {
        broker.log().contains("keeping the last known rules")
    });
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert_eq!(bob.subscribe("/users/1/messages"), NOT_AUTHORIZED);
    let text = chat("CHAT", 1, 2, "during the outage");
    assert!(accepted(alice.publish(
        "/users/2/messages",
        text.clone(),
        false
    )));
    assert_chat(
        &bob.message_on("/users/2/messages", SOON).unwrap().payload,
        &text,
    );
    let group_text = chat("GROUPCHAT", 1, 10, "group too");
    assert!(accepted(alice.publish(
        "/groups/10/messages",
        group_text.clone(),
        false
    )));
    assert_chat(
        &bob.message_on("/groups/10/messages", SOON).unwrap().payload,
        &group_text,
    );
    // New logins need MySQL (no credential cache here): refused, not let in.
    assert!(
        Mqtt::login(
            broker.port,
            Login {
                client_id: "carol-x",
                username: "carol",
                password: PASSWORD,
                clean_start: true,
            }
        )
        .is_err()
    );
    db.start();
    eventually("refreshes succeed again", Duration::from_secs(10), || {
        broker.log().contains("MySQL answers again")
    });
    let _carol = login(broker.port, "carol");
}

fn persistent_session_gets_queued_inbox_messages() {
    let db = shared();
    let dbname = chat_db(db, "persist");
    let broker = chat_broker(db, &dbname, "");
    let phone = format!("alice-phone-{}", std::process::id());
    let persistent = || Login {
        client_id: &phone,
        username: "alice",
        password: PASSWORD,
        clean_start: false,
    };
    let mut alice = Mqtt::login(broker.port, persistent()).unwrap();
    assert_eq!(alice.subscribe("/users/1/messages"), 1);
    alice.disconnect();
    let mut bob = login(broker.port, "bob");
    let text = chat("CHAT", 2, 1, "while you were away");
    assert!(accepted(bob.publish(
        "/users/1/messages",
        text.clone(),
        false
    )));
    // The READ check ran for the offline session, under alice's rules: queued, not dropped.
    let mut alice = Mqtt::login(broker.port, persistent()).unwrap();
    let got = alice
        .message_on("/users/1/messages", SOON)
        .expect("the queued message arrives on reconnect");
    assert_chat(&got.payload, &text);

    // Another user taking over the client id does not inherit alice's inbox.
    let mut mallory = Mqtt::login(
        broker.port,
        Login {
            client_id: &phone,
            username: "dave",
            password: PASSWORD,
            clean_start: false,
        },
    )
    .unwrap();
    assert!(accepted(bob.publish(
        "/users/1/messages",
        chat("CHAT", 2, 1, "2"),
        false
    )));
    assert!(mallory.message_on("/users/1/messages", QUIET).is_none());
}

fn state_is_empty_after_thousands_of_clients() {
    let db = shared();
    let dbname = chat_db(db, "churn");
    let mut users = String::new();
    for i in 0..200 {
        users.push_str(&format!(
            "{}('churn{i}', SHA2('{PASSWORD}', 256))",
            if i == 0 { "" } else { "," }
        ));
    }
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.users (username, password_hash) VALUES {users}"
    ));
    let broker = chat_broker(
        db,
        &dbname,
        "auth_opt_acl_cacheseconds 1\nauth_opt_auth_cacheseconds 30\n",
    );
    let mut admin = login(broker.port, "admin");
    // 4 threads x 750 connections: CONNECT, CONNACK, DISCONNECT (clean sessions).
    let port = broker.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for n in 0..750 {
                    let user = format!("churn{}", (t * 750 + n) % 200);
                    let outcome =
                        raw_connect(port, Some(user.as_bytes()), Some(PASSWORD.as_bytes()));
                    assert_eq!(outcome, crate::harness::Outcome::Accepted, "{user}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("connect thread");
    }
    eventually("every churn session gone", SOON, || {
        let stats = control(&mut admin, json!({"command": "getStats"}));
        stats["data"]["sessions"] == 1 && stats["data"]["usersWithRules"] == 0
    });
    let stats = control(&mut admin, json!({"command": "getStats"}));
    assert_eq!(stats["data"]["offlineSessions"], 0, "{stats}");
}
