//! One identity per account (issue 23): an operator's users table with MariaDB's default
//! case-insensitive collation, `superusers` and `bridge_users` globs as auth-plug's example
//! has them, and logins spelled otherwise than the row.

use crate::acl::{NOT_AUTHORIZED, PASSWORD, USERQUERY, assert_chat, chat_db, control};
use crate::harness::{Broker, MariaDb, Outcome, connect, free_port, fresh_dir, shared};
use crate::mqtt::{Mqtt, accepted};
use crate::security::{client_id, persistent};
use libtest_mimic::Trial;
use serde_json::json;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "identity::a_names_spelling_gives_no_rights",
            a_names_spelling_gives_no_rights,
        ),
        (
            "identity::the_stored_spelling_is_the_only_one",
            the_stored_spelling_is_the_only_one,
        ),
        (
            "identity::superuser_rights_follow_the_row_at_refresh",
            superuser_rights_follow_the_row_at_refresh,
        ),
        (
            "identity::a_restored_session_keeps_its_rights_without_a_sessions_file",
            a_restored_session_keeps_its_rights_without_a_sessions_file,
        ),
    ];
    crate::trials(tests)
}

const GLOBS: &str = "auth_opt_superusers S*\nauth_opt_bridge_users Joe-*\n";

/// The chat database with its users table as most operators have one (utf8mb4_general_ci:
/// `Steve` finds `steve`), steve (503, not a superuser), joe-bridge (777, not a bridge
/// account) and nobody, whose chat identity is NULL.
fn case_insensitive_db(db: &MariaDb, test: &str) -> String {
    let dbname = chat_db(db, test);
    db.root_exec(&format!(
        "USE `{dbname}`;
         ALTER TABLE users MODIFY username VARCHAR(255) COLLATE utf8mb4_general_ci NOT NULL;
         INSERT INTO users (id, username, password_hash) VALUES
           (503, 'steve', SHA2('{PASSWORD}', 256)), (777, 'joe-bridge', SHA2('{PASSWORD}', 256)),
           (900, 'nobody', SHA2('{PASSWORD}', 256));"
    ));
    dbname
}

fn broker(db: &MariaDb, dbname: &str, columns: &str) -> Broker {
    Broker::start(&format!(
        "{}auth_opt_userquery SELECT password_hash, IF(username = 'nobody', NULL, id) AS \
         user_id, is_superuser{columns} FROM users WHERE username = ? LIMIT 1\n{GLOBS}",
        db.plugin_options(dbname)
    ))
}

fn admin(port: u16) -> Mqtt {
    let mut admin = Mqtt::connect(port, &client_id("admin"), "admin", PASSWORD);
    assert_eq!(admin.subscribe("$CONTROL/chat-auth/v1/response"), 1);
    admin
}

/// auth-plug's `userquery` returns no name: `Steve` gets in as the collation lets him (he
/// is steve), but no glob applies to a name the row does not show, and the control
/// commands for steve reach him.
fn a_names_spelling_gives_no_rights() {
    let db = shared();
    let dbname = case_insensitive_db(db, "spelling");
    let broker = broker(db, &dbname, "");
    let port = broker.port;
    let mut bob = Mqtt::connect(port, &client_id("bob"), "bob", PASSWORD);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut steve = Mqtt::connect(port, &client_id("Steve"), "Steve", PASSWORD);
    for filter in ["#", "/users/2/messages", "/users/+/messages"] {
        assert_eq!(steve.subscribe(filter), NOT_AUTHORIZED, "Steve: {filter}");
    }
    let forged = json!({"type": "CHAT", "fromId": 503, "toId": 2, "content": "as steve"});
    let as_other = json!({"type": "CHAT", "fromId": 1, "toId": 2, "content": "as alice"});
    assert!(accepted(steve.publish(
        "/users/2/messages",
        forged.to_string(),
        false
    )));
    assert!(!accepted(steve.publish(
        "/users/2/messages",
        as_other.to_string(),
        false
    )));
    let got: Vec<_> = bob.drain(Duration::from_millis(800));
    assert_eq!(got.len(), 1, "only steve's own message: {got:?}");
    let mut joe = Mqtt::connect(port, &client_id("Joe-bridge"), "Joe-bridge", PASSWORD);
    for filter in ["/users/+/messages", "chat-auth/cluster/v1"] {
        assert_eq!(
            joe.subscribe(filter),
            NOT_AUTHORIZED,
            "Joe-bridge: {filter}"
        );
    }
    // A relay's stamp is kept only for bridge accounts.
    let stamped = json!({"type": "CHAT", "fromId": 777, "toId": 2, "content": "relayed",
        "id": "0190c3b2-7d5e-7a00-8000-000000000001", "ts": 1});
    joe.publish("/users/2/messages", stamped.to_string(), false);
    let relayed = bob.drain(Duration::from_millis(500));
    assert!(
        relayed.iter().all(|m| !String::from_utf8_lossy(&m.payload)
            .contains("0190c3b2-7d5e-7a00-8000-000000000001")),
        "Joe-bridge's stamp was kept: {relayed:?}"
    );
    assert_eq!(connect(port, "nobody", PASSWORD), Outcome::Refused(5));
    // refreshUser and kickUser for steve reach the client that typed Steve.
    let mut admin = admin(port);
    let refreshed = control(
        &mut admin,
        json!({"command": "refreshUser", "username": "steve"}),
    );
    assert_eq!(refreshed["data"]["clients"], 1, "{refreshed}");
    control(
        &mut admin,
        json!({"command": "kickUser", "username": "steve"}),
    );
    assert!(
        steve.closed_within(Duration::from_secs(5)),
        "Steve was not kicked"
    );
    let log = broker.log();
    for line in [
        "user 'Steve' matches auth_opt_superusers, which is not applied",
        "login refused for user 'nobody': its row's user_id is NULL",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
}

/// With the stored name in the row (a `username` column), only that spelling logs in.
fn the_stored_spelling_is_the_only_one() {
    let db = shared();
    let dbname = case_insensitive_db(db, "stored_spelling");
    let broker = broker(db, &dbname, ", username");
    let port = broker.port;
    for typed in ["Steve", "STEVE", "steve ", "Joe-bridge"] {
        assert_eq!(
            connect(port, typed, PASSWORD),
            Outcome::Refused(5),
            "{typed:?}"
        );
    }
    assert_eq!(connect(port, "steve", PASSWORD), Outcome::Accepted);
    // joe-bridge as stored does not match Joe-*: an ordinary user.
    let mut joe = Mqtt::connect(port, &client_id("joe"), "joe-bridge", PASSWORD);
    assert_eq!(joe.subscribe("/users/+/messages"), NOT_AUTHORIZED);
    let log = broker.log();
    assert!(
        log.contains("login refused for user 'Steve': the account is spelled 'steve'"),
        "{log}"
    );
}

/// `persistence true` without storage: the broker restores bob's persistent session after a
/// restart, and the queued inbox and group messages are delivered when bob connects. On 2.0
/// (no sessions file) the plugin meets the session first when chat is queued for it and looks
/// it up by its username; on 2.1 the sessions file is kept in the broker's persistence
/// location, private (0600).
fn a_restored_session_keeps_its_rights_without_a_sessions_file() {
    let db = shared();
    let dbname = chat_db(db, "restored_no_file");
    let dir = fresh_dir("restored-no-file");
    let port = free_port();
    let conf = format!(
        "log_type all\nper_listener_settings false\nlistener {port} 127.0.0.1\n\
         allow_anonymous false\npersistence true\npersistence_location {}/\n\
         plugin {}\n{}{USERQUERY}",
        dir.display(),
        crate::harness::plugin_path().display(),
        db.plugin_options(&dbname),
    );
    let broker = Broker::run(&conf, port).expect("start");
    let bob_id = client_id("bob-restored");
    let mut bob = persistent(port, &bob_id, "bob");
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert_eq!(bob.subscribe("/groups/10/messages"), 1);
    bob.disconnect();
    drop(broker);
    let broker = Broker::run(&conf, port).expect("restart");
    let mut alice = Mqtt::connect(port, &client_id("alice"), "alice", PASSWORD);
    let inbox = json!({"type": "CHAT", "fromId": 1, "toId": 2, "content": "while away"});
    let group = json!({"type": "GROUPCHAT", "fromId": 1, "toId": 10, "content": "team"});
    assert!(accepted(alice.publish(
        "/users/2/messages",
        inbox.to_string(),
        false
    )));
    assert!(accepted(alice.publish(
        "/groups/10/messages",
        group.to_string(),
        false
    )));
    let mut bob = persistent(port, &bob_id, "bob");
    let got = bob.drain(Duration::from_millis(1500));
    let on = |topic: &str| got.iter().filter(|m| m.topic == topic).count();
    assert_eq!(
        on("/users/2/messages"),
        1,
        "inbox: {got:?}\n{}",
        broker.log()
    );
    assert_eq!(
        on("/groups/10/messages"),
        1,
        "group: {got:?}\n{}",
        broker.log()
    );
    let delivered = got.iter().find(|m| m.topic == "/users/2/messages").unwrap();
    assert_chat(&delivered.payload, inbox.to_string().as_bytes());
    let sessions_file = dir.join("chat-auth-sessions.jsonl");
    if crate::harness::mosquitto_version().contains(" 2.1.") {
        // 2.1 tells the plugin its persistence location: the sessions file goes there.
        assert!(
            broker.log().contains(&format!(
                "restored 1 persistent sessions from {}",
                sessions_file.display()
            )),
            "{}",
            broker.log()
        );
        let mode = std::fs::metadata(&sessions_file)
            .expect("sessions file")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{}",
            sessions_file.display()
        );
    } else {
        assert!(!sessions_file.exists(), "2.0 tells no persistence location");
        assert!(
            broker.log().contains(&format!(
                "client '{bob_id}' restored from the broker's persistence as user 'bob'"
            )),
            "{}",
            broker.log()
        );
    }
}

/// A superuser taken out of `is_superuser` loses the right at the next `refreshUser`: its
/// client is disconnected and logs in again as an ordinary user.
fn superuser_rights_follow_the_row_at_refresh() {
    let db = shared();
    let dbname = chat_db(db, "demoted");
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.users (id, username, password_hash, is_superuser) \
         VALUES (6, 'ops', SHA2('{PASSWORD}', 256), 1)"
    ));
    let broker = Broker::start(&format!("{}{USERQUERY}", db.plugin_options(&dbname)));
    let port = broker.port;
    let mut ops = Mqtt::connect(port, &client_id("ops"), "ops", PASSWORD);
    assert_eq!(ops.subscribe("#"), 1);
    db.root_exec(&format!(
        "UPDATE `{dbname}`.users SET is_superuser = 0 WHERE username = 'ops'"
    ));
    let mut admin = admin(port);
    control(
        &mut admin,
        json!({"command": "refreshUser", "username": "ops"}),
    );
    assert!(
        ops.closed_within(Duration::from_secs(5)),
        "ops kept its session"
    );
    let mut ops = Mqtt::connect(port, &client_id("ops"), "ops", PASSWORD);
    assert_eq!(ops.subscribe("#"), NOT_AUTHORIZED);
    assert!(
        broker.log().contains("user 'ops' is no longer a superuser"),
        "{}",
        broker.log()
    );
}
