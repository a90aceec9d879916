//! Two brokers bridged on the chat topics (QoS 1, both ways), one MariaDB: chat across
//! them, each message stored once by the broker its sender is connected to, relayed
//! stamps kept, forged relays refused, and administration reaching both brokers.

use crate::acl::{PASSWORD, USERQUERY, assert_chat, chat_db};
use crate::fixtures::{chat, id_of, login_tagged, stats_on, stored_ids};
use crate::harness::{Broker, MariaDb, eventually, free_port, fresh_dir, plugin_path, shared};
use crate::mqtt::{Mqtt, accepted};
use crate::security::{RawConnect, raw_ack, raw_disconnect, raw_publish, raw_session};
use chat_auth::cluster;
use libtest_mimic::Trial;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "cluster::two_bridged_brokers_chat_and_store_each_message_once",
            two_bridged_brokers_chat_and_store_each_message_once,
        ),
        (
            "cluster::a_client_without_a_session_is_no_bridge",
            a_client_without_a_session_is_no_bridge,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(800);

/// The bridge section a broker bridges to `port` with (docs/clustering.md).
pub fn bridge_section(name: &str, port: u16, account: &str, password: &str) -> String {
    format!(
        "connection {name}\naddress 127.0.0.1:{port}\nremote_username {account}\n\
         remote_password {password}\nremote_clientid {account}\ntry_private true\n\
         cleansession false\nnotifications false\n\
         topic /users/+/messages both 1\ntopic /groups/+/messages both 1\n\
         topic chat-auth/cluster/v1 both 1\n"
    )
}

/// A broker with chat-auth storing into `dbname`, with `tail` (a bridge section) last.
fn cluster_broker(db: &MariaDb, dbname: &str, tail: &str) -> Broker {
    cluster_broker_at(db, dbname, tail, free_port(), &fresh_dir("cluster-spool"))
}

fn cluster_broker_at(db: &MariaDb, dbname: &str, tail: &str, port: u16, spool: &Path) -> Broker {
    cluster_broker_with(db, dbname, "allow_anonymous false\n", tail, port, spool)
}

/// The same, with `head` (broker options, plugins loaded before chat-auth) first.
fn cluster_broker_with(
    db: &MariaDb,
    dbname: &str,
    head: &str,
    tail: &str,
    port: u16,
    spool: &Path,
) -> Broker {
    let conf = format!(
        "log_type all\nper_listener_settings false\nlistener {port} 127.0.0.1\n\
         {head}plugin {}\n{}{USERQUERY}auth_opt_persist_enabled true\n\
         auth_opt_persist_spool_dir {}\nauth_opt_bridge_users bridge-*\n{tail}",
        plugin_path().display(),
        db.plugin_options(dbname),
        spool.display()
    );
    Broker::run(&conf, port).unwrap_or_else(|f| panic!("broker did not start:\n{}", f.log))
}

/// The rows this broker's writer has written (`getStats`).
fn rows_written(admin: &mut Mqtt) -> u64 {
    let stats = stats_on(admin);
    stats["storage"]["rowsWritten"]
        .as_u64()
        .unwrap_or_else(|| panic!("{stats}"))
}

fn two_bridged_brokers_chat_and_store_each_message_once() {
    let db = shared();
    let dbname = chat_db(db, "cluster");
    db.root_exec(&format!(
        "USE `{dbname}`; INSERT INTO users (id, username, password_hash) VALUES \
           (6, 'bridge-b', SHA2('{PASSWORD}', 256));
         GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'%';
         GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'localhost'"
    ));
    let a = cluster_broker(db, &dbname, "");
    let b_port = free_port();
    let b_spool = fresh_dir("cluster-spool");
    let b_bridge = bridge_section("to-a", a.port, "bridge-b", PASSWORD);
    let mut b = cluster_broker_at(db, &dbname, &b_bridge, b_port, &b_spool);
    eventually("B's bridge subscribed on A", SOON, || {
        a.log().contains("bridge-b 1 chat-auth/cluster/v1")
    });

    // alice (1) and carol (3) on A; bob (2) and dave (4) on B.
    let mut alice = login_tagged(a.port, "alice", "a");
    let mut carol = login_tagged(a.port, "carol", "a");
    let mut bob = login_tagged(b.port, "bob", "b");
    let mut dave = login_tagged(b.port, "dave", "b");
    assert_eq!(alice.subscribe("/users/1/messages"), 1);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert_eq!(carol.subscribe("/groups/10/messages"), 1);
    assert_eq!(bob.subscribe("/groups/10/messages"), 1);
    std::thread::sleep(Duration::from_millis(300));

    // B to A: stamped and stored by B, delivered on A with the same id, not stored again.
    let to_alice = chat("CHAT", 2, 1, "from bob on B");
    assert!(accepted(bob.publish(
        "/users/1/messages",
        to_alice.clone(),
        false
    )));
    let got = alice
        .message_on("/users/1/messages", SOON)
        .expect("bob's message");
    assert_chat(&got.payload, &to_alice);
    let first = id_of(&got.payload);
    // A to B.
    let to_bob = chat("CHAT", 1, 2, "from alice on A");
    assert!(accepted(alice.publish(
        "/users/2/messages",
        to_bob.clone(),
        false
    )));
    let got = bob
        .message_on("/users/2/messages", SOON)
        .expect("alice's message");
    assert_chat(&got.payload, &to_bob);
    let second = id_of(&got.payload);
    // A group with members on both brokers: every copy once.
    let to_group = chat("GROUPCHAT", 1, 10, "to the team");
    assert!(accepted(alice.publish(
        "/groups/10/messages",
        to_group.clone(),
        false
    )));
    let at_carol = carol.drain(QUIET);
    let at_bob: Vec<_> = bob
        .drain(QUIET)
        .into_iter()
        .filter(|m| m.topic == "/groups/10/messages")
        .collect();
    assert_eq!(
        (at_carol.len(), at_bob.len()),
        (1, 1),
        "{at_carol:?} {at_bob:?}"
    );
    assert_eq!(id_of(&at_carol[0].payload), id_of(&at_bob[0].payload));
    let third = id_of(&at_bob[0].payload);
    eventually("three rows", SOON, || stored_ids(db, &dbname).len() >= 3);
    std::thread::sleep(QUIET);
    assert_eq!(
        stored_ids(db, &dbname),
        [first.clone(), second.clone(), third.clone()],
        "one row per message, with the id every copy carries"
    );
    assert!(alice.drain(QUIET).is_empty(), "nothing delivered twice");
    // No second INSERT either: each broker wrote only its own senders' messages.
    let mut admin_a = login_tagged(a.port, "admin", "a");
    let mut admin_b = login_tagged(b.port, "admin", "b");
    assert_eq!(rows_written(&mut admin_a), 2, "alice's two messages");
    assert_eq!(rows_written(&mut admin_b), 1, "bob's message");
    // History reads the one MySQL: the same answer on either broker, whoever stored what.
    let conversation = |client: &mut Mqtt, other: u32| {
        crate::history::ask_ids(
            client,
            json!({"command": "getHistory", "type": "CHAT", "id": other}),
        )
    };
    let newest_first = [second.clone(), first.clone()];
    assert_eq!(conversation(&mut alice, 2), newest_first, "alice on A");
    assert_eq!(conversation(&mut bob, 1), newest_first, "bob on B");
    let team = json!({"command": "getHistory", "type": "GROUPCHAT", "id": 10});
    assert_eq!(
        crate::history::ask_ids(&mut bob, team),
        std::slice::from_ref(&third)
    );

    // Only a bridge account relays: dave cannot send as bob, nor reach the cluster topic.
    let forged = json!({"type": "CHAT", "fromId": 2, "toId": 1, "content": "forged",
        "id": "0190a1b2-0000-7000-8000-000000000000", "ts": 1});
    assert!(!accepted(dave.publish(
        "/users/1/messages",
        forged.to_string(),
        false
    )));
    assert!(!accepted(dave.publish(
        "chat-auth/cluster/v1",
        r#"{"id":"x","command":"kickUser","username":"alice"}"#,
        false
    )));
    assert!(
        alice.message(QUIET).is_none(),
        "nothing forged reached alice"
    );
    assert_eq!(stored_ids(db, &dbname).len(), 3);
    // A relay without a stamp (a broker without chat-auth behind the bridge account) is
    // validated as a trusted sender's, stamped and stored here.
    let mut relay = login_tagged(a.port, "bridge-b", "plain");
    let unstamped = chat("CHAT", 4, 1, "via a plain broker");
    assert!(accepted(relay.publish(
        "/users/1/messages",
        unstamped.clone(),
        false
    )));
    let got = alice
        .message_on("/users/1/messages", SOON)
        .expect("the relayed message");
    assert_chat(&got.payload, &unstamped);
    eventually("stored on A", SOON, || stored_ids(db, &dbname).len() == 4);
    assert_eq!(stored_ids(db, &dbname)[3], id_of(&got.payload));
    assert!(!accepted(relay.publish(
        "/users/1/messages",
        "not json",
        false
    )));
    drop(relay);

    // refreshUser sent to A removes bob (on B) from the group.
    db.root_exec(&format!(
        "DELETE FROM `{dbname}`.group_members WHERE group_id = 10 AND user_id = 2"
    ));
    let request = json!({"commands": [{"command": "refreshUser", "username": "bob"}]});
    assert!(accepted(admin_a.publish(
        "$CONTROL/chat-auth/v1",
        request.to_string(),
        false
    )));
    eventually("B ran the refresh", Duration::from_secs(2), || {
        b.log().contains("cluster: refreshUser 'bob'")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(accepted(alice.publish(
        "/groups/10/messages",
        chat("GROUPCHAT", 1, 10, "bob left"),
        false
    )));
    assert!(carol.message_on("/groups/10/messages", SOON).is_some());
    assert!(
        bob.drain(QUIET).is_empty(),
        "a removed member on the other broker gets nothing"
    );
    assert!(
        !a.log().contains("cluster: refreshUser"),
        "A ran its own command once, not again when it came back"
    );
    // kickUser sent to A disconnects dave from B.
    let request = json!({"commands": [{"command": "kickUser", "username": "dave"}]});
    assert!(accepted(admin_a.publish(
        "$CONTROL/chat-auth/v1",
        request.to_string(),
        false
    )));
    assert!(
        dave.closed_within(Duration::from_secs(2)),
        "kickUser reached the other broker"
    );

    // B killed right after bob's burst, and started again on its spool: every message
    // stored, none twice.
    let before = stored_ids(db, &dbname).len();
    for n in 0..20 {
        assert!(accepted(bob.publish(
            "/users/1/messages",
            chat("CHAT", 2, 1, &format!("burst {n}")),
            false
        )));
    }
    b.kill();
    drop(bob);
    let b = cluster_broker_at(db, &dbname, &b_bridge, b_port, &b_spool);
    eventually("the burst stored", SOON, || {
        stored_ids(db, &dbname).len() >= before + 20
    });
    std::thread::sleep(QUIET);
    let ids = stored_ids(db, &dbname);
    assert_eq!(ids.len(), before + 20, "nothing stored twice");
    let contents = db.root_column(&format!(
        "SELECT COUNT(DISTINCT content) FROM `{dbname}`.messages WHERE content LIKE 'burst %'"
    ));
    assert_eq!(contents, ["20"], "nothing lost");
    // A broker that was down catches up by itself: every login there reads the rules fresh
    // (carol leaves the group now; a change made while B was down applies the same way).
    db.root_exec(&format!(
        "DELETE FROM `{dbname}`.group_members WHERE group_id = 10 AND user_id = 3"
    ));
    let mut carol_on_b = login_tagged(b.port, "carol", "b2");
    assert_eq!(
        carol_on_b.subscribe("/groups/10/messages"),
        crate::acl::NOT_AUTHORIZED,
        "rules read at login on the restarted broker"
    );
    drop(b);
}

/// Mosquitto's dynamic-security plugin, from the package of the broker the tests run.
fn dynamic_security_plugin() -> PathBuf {
    let lib = match std::env::var_os("CHAT_AUTH_MOSQUITTO") {
        // .../usr/sbin/mosquitto: the plugin is under .../usr/lib.
        Some(broker) => PathBuf::from(broker)
            .parent()
            .and_then(Path::parent)
            .map(|usr| usr.join("lib"))
            .expect("CHAT_AUTH_MOSQUITTO under usr/sbin"),
        None => PathBuf::from("/usr/lib"),
    };
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("mosquitto_dynamic_security.so"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no mosquitto_dynamic_security.so under {}", lib.display()))
}

/// A dynamic-security configuration letting anonymous clients (its anonymous group) and its
/// own client `device` publish on every topic; it knows no other name, and answers nothing
/// else (chat-auth decides).
fn dynamic_security_config(dir: &Path) -> PathBuf {
    // `$7$iterations$salt$key`: PBKDF2-SHA512 with a 12-byte salt, as dynamic-security keeps it.
    let hash = chat_auth::hash::generate_mosquitto(PASSWORD.as_bytes(), 101);
    let parts: Vec<&str> = hash.split('$').collect();
    let config = json!({
        "defaultACLAccess": {"publishClientSend": false, "publishClientReceive": false,
            "subscribe": false, "unsubscribe": false},
        "clients": [{"username": "device", "password": parts[4], "salt": parts[3],
            "iterations": 101, "roles": [{"rolename": "publisher"}]}],
        "groups": [{"groupname": "guests", "roles": [{"rolename": "publisher"}]}],
        "roles": [{"rolename": "publisher", "acls": [
            {"acltype": "publishClientSend", "topic": "#", "allow": true}]}],
        "anonymousGroup": "guests"
    });
    let path = dir.join("dynamic-security.json");
    std::fs::write(&path, config.to_string()).expect("write the dynamic-security config");
    path
}

/// Issue 23: a client chat-auth holds no session for is this broker's own outgoing bridge
/// only when it is one (its context has no peer address). On B, Mosquitto's dynamic-security
/// plugin runs first and lets an anonymous client (chat-auth deferred its login) and its own
/// client `device` (chat-auth never saw that login) publish anywhere: chat-auth meets both
/// at MESSAGE without a session. Neither gets a stamp of its choice delivered, sends as
/// someone else, or runs a cluster command; B's own bridge still relays both ways.
fn a_client_without_a_session_is_no_bridge() {
    let db = shared();
    let dbname = chat_db(db, "stranger");
    db.root_exec(&format!(
        "USE `{dbname}`; INSERT INTO users (id, username, password_hash) VALUES \
           (6, 'bridge-b', SHA2('{PASSWORD}', 256));
         GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'%';
         GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'localhost'"
    ));
    let a = cluster_broker(db, &dbname, "");
    let dynsec = fresh_dir("dynsec");
    let head = format!(
        "allow_anonymous true\nplugin {}\nplugin_opt_config_file {}\n",
        dynamic_security_plugin().display(),
        dynamic_security_config(&dynsec).display()
    );
    let b_bridge = bridge_section("to-a", a.port, "bridge-b", PASSWORD);
    let b = cluster_broker_with(
        db,
        &dbname,
        &head,
        &b_bridge,
        free_port(),
        &fresh_dir("cluster-spool"),
    );
    eventually("B's bridge subscribed on A", SOON, || {
        a.log().contains("bridge-b 1 chat-auth/cluster/v1")
    });
    let mut alice = login_tagged(a.port, "alice", "a");
    let mut bob = login_tagged(b.port, "bob", "b");
    assert_eq!(alice.subscribe("/users/1/messages"), 1);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    std::thread::sleep(Duration::from_millis(300));

    let stamped = |from: u32, to: u32, n: u32| {
        json!({"type": "CHAT", "fromId": from, "toId": to, "content": "forged",
            "id": format!("0190a1b2-0000-7000-8000-00000000000{n}"), "ts": 1})
        .to_string()
        .into_bytes()
    };
    let kick = json!({"id": "stranger-kick", "command": "kickUser", "username": "bob"});
    let publishes = [
        ("/users/2/messages", stamped(1, 2, 1)),
        ("/users/2/messages", chat("CHAT", 1, 2, "as alice")),
        // Would cross to A, where B's bridge is trusted with its stamp.
        ("/users/1/messages", stamped(2, 1, 2)),
        (cluster::TOPIC, kick.to_string().into_bytes()),
    ];
    for (name, username) in [("anonymous", ""), ("device", "device")] {
        let client_id = format!("{name}-{}", std::process::id());
        let mut stranger = raw_session(
            b.port,
            RawConnect {
                client_id: &client_id,
                username,
                password: PASSWORD,
                v5: false,
                clean: true,
                session_expiry: None,
                will: None,
            },
        )
        .unwrap_or_else(|code| panic!("{name} refused ({code:#x}): {}", b.log()));
        for (mid, (topic, payload)) in (1u16..).zip(&publishes) {
            raw_publish(&mut stranger, topic, payload, 1, mid, false);
            raw_ack(&mut stranger, 0x40, mid);
        }
        raw_disconnect(stranger);
    }
    let at_bob: Vec<_> = bob
        .drain(QUIET)
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert!(
        at_bob.is_empty(),
        "a stranger's message reached bob: {at_bob:?}"
    );
    assert!(alice.drain(QUIET).is_empty(), "nor alice on A");
    assert!(
        !b.log().contains("cluster: kickUser"),
        "a stranger's cluster command ran on B"
    );
    assert_eq!(
        stored_ids(db, &dbname),
        Vec::<String>::new(),
        "nothing stored"
    );

    // B's own outgoing bridge still relays both ways, stamp kept, each message stored once;
    // bob is still connected.
    let hello = chat("CHAT", 1, 2, "from alice on A");
    assert!(accepted(alice.publish(
        "/users/2/messages",
        hello.clone(),
        false
    )));
    let got = bob
        .message_on("/users/2/messages", SOON)
        .expect("alice's message over B's bridge");
    assert_chat(&got.payload, &hello);
    let first = id_of(&got.payload);
    let reply = chat("CHAT", 2, 1, "from bob on B");
    assert!(accepted(bob.publish(
        "/users/1/messages",
        reply.clone(),
        false
    )));
    let got = alice
        .message_on("/users/1/messages", SOON)
        .expect("bob's reply");
    assert_chat(&got.payload, &reply);
    let second = id_of(&got.payload);
    eventually("two rows", SOON, || stored_ids(db, &dbname).len() >= 2);
    std::thread::sleep(QUIET);
    assert_eq!(stored_ids(db, &dbname), [first, second]);
    // And a cluster command from A (through B's own bridge) still runs on B.
    let mut dave = login_tagged(b.port, "dave", "b");
    let mut admin_a = login_tagged(a.port, "admin", "a");
    let request = json!({"commands": [{"command": "kickUser", "username": "dave"}]});
    assert!(accepted(admin_a.publish(
        "$CONTROL/chat-auth/v1",
        request.to_string(),
        false
    )));
    assert!(
        dave.closed_within(Duration::from_secs(2)),
        "kickUser from A reached B over its bridge"
    );
}
