//! Chat messages stored from inside the broker: exact rows, refusals, MySQL down, the broker
//! killed, the spool limit.

use crate::acl::{NOT_AUTHORIZED, PASSWORD, USERQUERY, chat_db};
use crate::fixtures::{chat, id_of, login_tagged, stats_on, stored_ids};
use crate::harness::{Broker, MariaDb, eventually, fresh_dir, shared};
use crate::mqtt::{Mqtt, accepted};
use libtest_mimic::Trial;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "store::thousands_of_messages_become_identical_rows",
            thousands_of_messages_become_identical_rows,
        ),
        (
            "store::invalid_payloads_are_refused_and_not_stored",
            invalid_payloads_are_refused_and_not_stored,
        ),
        (
            "store::mysql_stopped_mid_stream_loses_nothing",
            mysql_stopped_mid_stream_loses_nothing,
        ),
        (
            "store::broker_killed_mid_stream_loses_nothing",
            broker_killed_mid_stream_loses_nothing,
        ),
        (
            "store::full_spool_refuses_then_recovers",
            full_spool_refuses_then_recovers,
        ),
        (
            "store::missing_grant_keeps_messages_until_fixed",
            missing_grant_keeps_messages_until_fixed,
        ),
        (
            "store::refused_rows_are_set_aside_and_the_rest_stored",
            refused_rows_are_set_aside_and_the_rest_stored,
        ),
        ("store::writer_survives_a_panic", writer_survives_a_panic),
        (
            "store::damaged_checkpoint_is_recovered_from",
            damaged_checkpoint_is_recovered_from,
        ),
        (
            "store::storage_options_need_the_switch",
            storage_options_need_the_switch,
        ),
        (
            "store::an_outage_backlog_stays_on_disk",
            an_outage_backlog_stays_on_disk,
        ),
        (
            "store::a_retransmitted_client_msg_id_is_one_row",
            a_retransmitted_client_msg_id_is_one_row,
        ),
        (
            "store::a_client_msg_id_on_another_payload_is_another_message",
            a_client_msg_id_on_another_payload_is_another_message,
        ),
        (
            "store::spool_files_are_private_under_umask_022",
            spool_files_are_private_under_umask_022,
        ),
        (
            "store::a_row_lock_of_15_s_with_2_s_lock_waits_loses_nothing",
            a_row_lock_of_15_s_with_2_s_lock_waits_loses_nothing,
        ),
        (
            "store::a_table_lock_of_30_s_is_waited_out_without_an_outage",
            a_table_lock_of_30_s_is_waited_out_without_an_outage,
        ),
        (
            "store::a_table_without_a_unique_message_id_is_reported",
            a_table_without_a_unique_message_id_is_reported,
        ),
        (
            "store::a_full_disk_refuses_then_recovers",
            a_full_disk_refuses_then_recovers,
        ),
        (
            "store::sys_topics_show_the_figures",
            sys_topics_show_the_figures,
        ),
        (
            "store::prometheus_endpoint_serves_the_same_figures",
            prometheus_endpoint_serves_the_same_figures,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(10);

/// The chat database plus the right to write messages.
pub fn store_db(db: &MariaDb, test: &str) -> String {
    let dbname = chat_db(db, test);
    for host in ["%", "localhost"] {
        db.root_exec(&format!(
            "GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'{host}'"
        ));
    }
    dbname
}

pub fn store_broker(db: &MariaDb, dbname: &str, spool: &Path, extra: &str) -> Broker {
    Broker::start(&format!(
        "{}{USERQUERY}auth_opt_persist_enabled true\nauth_opt_persist_spool_dir {}\n\
         auth_opt_connect_timeout_ms 500\nauth_opt_query_timeout_ms 1000\n{extra}",
        db.plugin_options(dbname),
        spool.display()
    ))
}

pub fn count(db: &MariaDb, dbname: &str) -> usize {
    db.root_column(&format!("SELECT COUNT(*) FROM `{dbname}`.messages"))[0]
        .parse()
        .unwrap()
}

fn tricky_content(n: usize) -> String {
    match n % 5 {
        0 => format!("plain {n}"),
        1 => format!("quotes \"{n}\" and 'single' and `back`"),
        2 => format!("back\\slash\\{n} \\\" \\n not a newline"),
        3 => format!("emoji 😀🎉 {n} ✓ ünïcödé \u{0}nul"),
        _ => format!("{n} newline\nand tab\t and %s %d ?"),
    }
}

fn thousands_of_messages_become_identical_rows() {
    let db = shared();
    let dbname = store_db(db, "rows");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let port = broker.port;
    // Several publishers at once: alice, carol, dave to bob's inbox.
    let senders: Vec<_> = [(1u32, "alice"), (3, "carol"), (4, "dave")]
        .into_iter()
        .map(|(id, user)| {
            std::thread::spawn(move || {
                let mut client = login_tagged(port, user, 1);
                let mut sent = Vec::new();
                for n in 0..700 {
                    let content = if n == 350 {
                        "x".repeat(65_536)
                    } else {
                        tricky_content(n)
                    };
                    let payload = chat("CHAT", id, 2, &content);
                    assert!(accepted(client.publish(
                        "/users/2/messages",
                        payload,
                        false
                    )));
                    sent.push((id, content));
                }
                sent
            })
        })
        .collect();
    let sent: Vec<(u32, String)> = senders
        .into_iter()
        .flat_map(|t| t.join().expect("sender"))
        .collect();
    assert_eq!(sent.len(), 2100);
    // Every delivered message is a row with byte-identical content, none twice.
    let mut delivered = Vec::new();
    while delivered.len() < sent.len() {
        let m = bob
            .message_on("/users/2/messages", SOON)
            .expect("every message delivered");
        delivered.push(m.payload);
    }
    eventually("all rows written", SOON, || count(db, &dbname) == 2100);
    let rows = db.root_column(&format!(
        "SELECT CONCAT(message_id, ' ', from_id, ' ', HEX(content)) FROM `{dbname}`.messages"
    ));
    let rows: HashSet<String> = rows.into_iter().collect();
    assert_eq!(rows.len(), 2100);
    for payload in &delivered {
        let value: Value = serde_json::from_slice(payload).unwrap();
        let row = format!(
            "{} {} {}",
            value["id"].as_str().unwrap(),
            value["fromId"],
            hex::encode_upper(value["content"].as_str().unwrap().as_bytes())
        );
        assert!(rows.contains(&row), "no identical row for {}", value["id"]);
    }
    // Conversations keep their order: a sender's rows come in the order it sent them.
    let alice_contents = db.root_column(&format!(
        "SELECT content FROM `{dbname}`.messages WHERE from_id = '1' ORDER BY id"
    ));
    let alice_sent: Vec<&String> = sent
        .iter()
        .filter(|(id, _)| *id == 1)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(alice_contents.iter().collect::<Vec<_>>(), alice_sent);
    let topic_qos = db.root_column(&format!(
        "SELECT DISTINCT CONCAT(type, ' ', to_id, ' ', topic, ' ', qos) FROM `{dbname}`.messages"
    ));
    assert_eq!(topic_qos, ["CHAT 2 /users/2/messages 1"]);
}

fn invalid_payloads_are_refused_and_not_stored() {
    let db = shared();
    let dbname = store_db(db, "invalid");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "auth_opt_chat_max_content_bytes 100\n");
    let mut alice = login_tagged(broker.port, "alice", 0);
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert_eq!(bob.subscribe("/groups/10/messages"), 1);
    let inbox = "/users/2/messages";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello bob".to_vec()),
        ("JSON array", b"[1,2]".to_vec()),
        ("wrong type", chat("GROUPCHAT", 1, 2, "x")),
        ("toId not the topic's", chat("CHAT", 1, 3, "x")),
        ("spoofed fromId", chat("CHAT", 2, 2, "x")),
        ("content too long", chat("CHAT", 1, 2, &"y".repeat(101))),
        (
            "content not a string",
            json!({"type":"CHAT","fromId":1,"toId":2,"content":7})
                .to_string()
                .into_bytes(),
        ),
        (
            "missing fromId",
            json!({"type":"CHAT","toId":2,"content":"x"})
                .to_string()
                .into_bytes(),
        ),
        (
            "invalid UTF-8",
            b"{\"type\":\"CHAT\",\"fromId\":1,\"toId\":2,\"content\":\"\xff\"}".to_vec(),
        ),
    ];
    for (what, payload) in cases {
        assert_eq!(
            alice.publish(inbox, payload, false),
            NOT_AUTHORIZED,
            "{what}"
        );
    }
    assert_eq!(
        alice.publish("/groups/10/messages", chat("CHAT", 1, 10, "x"), false),
        NOT_AUTHORIZED,
        "CHAT on a group"
    );
    assert!(
        bob.drain(Duration::from_millis(500)).is_empty(),
        "nothing refused was delivered"
    );
    // A valid one goes through, stamped; a client-chosen id is replaced.
    let valid = json!({"type":"CHAT","fromId":1,"toId":2,"content":"ok","id":"mine","ts":1});
    assert!(accepted(alice.publish(inbox, valid.to_string(), false)));
    let got = bob.message_on(inbox, SOON).expect("the valid message");
    let stamped: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_ne!(stamped["id"], "mine");
    assert_ne!(stamped["ts"], 1);
    // A superuser may send as anyone and keep its id (a bridge peer's replay).
    let mut admin = login_tagged(broker.port, "admin", 0);
    let relayed =
        json!({"type":"GROUPCHAT","fromId":3,"toId":10,"content":"relayed","id":"peer-42"});
    assert!(accepted(admin.publish(
        "/groups/10/messages",
        relayed.to_string(),
        false
    )));
    let got = bob
        .message_on("/groups/10/messages", SOON)
        .expect("relayed");
    assert_eq!(id_of(&got.payload), "peer-42");
    eventually("two rows", SOON, || count(db, &dbname) == 2);
    assert!(stored_ids(db, &dbname).contains(&"peer-42".to_string()));
    // Topics outside the chat model pass untouched (given a row allowing them).
    drop(broker);
}

fn mysql_stopped_mid_stream_loses_nothing() {
    let db = MariaDb::start_new("store-outage");
    let dbname = store_db(&db, "outage");
    let spool = fresh_dir("spool");
    let broker = store_broker(&db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 0);
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut delivered = Vec::new();
    for n in 0..600 {
        if n == 200 {
            db.stop();
        }
        if n == 400 {
            db.start();
        }
        let payload = chat("CHAT", 1, 2, &format!("message {n}"));
        assert!(
            accepted(alice.publish("/users/2/messages", payload, false)),
            "message {n}"
        );
        if n == 300 {
            std::thread::sleep(Duration::from_secs(2)); // several seconds without MySQL
        }
    }
    while delivered.len() < 600 {
        let m = bob
            .message_on("/users/2/messages", SOON)
            .expect("delivered during the outage");
        delivered.push(id_of(&m.payload));
    }
    eventually("every message stored once", Duration::from_secs(20), || {
        count(&db, &dbname) == 600
    });
    let mut stored = stored_ids(&db, &dbname);
    let contents = db.root_column(&format!(
        "SELECT content FROM `{dbname}`.messages ORDER BY id"
    ));
    let expected: Vec<String> = (0..600).map(|n| format!("message {n}")).collect();
    assert_eq!(contents, expected, "stored once each, in order");
    stored.sort();
    delivered.sort();
    assert_eq!(stored, delivered);
    assert!(broker.log().contains("chat-auth"), "{}", broker.log());
}

fn broker_killed_mid_stream_loses_nothing() {
    let db = MariaDb::start_new("store-kill");
    let dbname = store_db(&db, "kill");
    let spool = fresh_dir("spool");
    let mut broker = store_broker(&db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 0);
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    for n in 0..300 {
        if n == 150 {
            // MySQL goes away: the rest can only be in the spool when the broker dies.
            db.stop();
        }
        let payload = chat("CHAT", 1, 2, &format!("before the kill {n}"));
        assert!(accepted(alice.publish("/users/2/messages", payload, false)));
    }
    let mut delivered = HashSet::new();
    while let Some(m) = bob.message_on("/users/2/messages", Duration::from_secs(2)) {
        delivered.insert(id_of(&m.payload));
        if delivered.len() == 300 {
            break;
        }
    }
    assert_eq!(
        delivered.len(),
        300,
        "bob received everything before the kill"
    );
    broker.kill();
    drop((alice, bob));
    db.start();
    assert!(
        count(&db, &dbname) < 300,
        "some messages were only in the spool"
    );
    let broker = store_broker(&db, &dbname, &spool, "");
    eventually(
        "the spool replayed into MySQL",
        Duration::from_secs(20),
        || count(&db, &dbname) == 300,
    );
    let stored: HashSet<String> = stored_ids(&db, &dbname).into_iter().collect();
    assert_eq!(
        stored, delivered,
        "every received message stored, none twice"
    );
    assert!(broker.log().contains("replaying"), "{}", broker.log());
    // SIGTERM with MySQL down: the shutdown gives up after its grace, the spool keeps
    // the rest for the next start.
    let mut alice = login_tagged(broker.port, "alice", 1);
    db.stop();
    for n in 0..50 {
        let payload = chat("CHAT", 1, 2, &format!("before the stop {n}"));
        assert!(accepted(alice.publish("/users/2/messages", payload, false)));
    }
    drop(alice);
    drop(broker);
    db.start();
    let _broker = store_broker(&db, &dbname, &spool, "");
    eventually("the rest replayed", Duration::from_secs(20), || {
        count(&db, &dbname) == 350
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&db, &dbname), 350, "nothing twice");
}

fn full_spool_refuses_then_recovers() {
    let db = MariaDb::start_new("store-full");
    let dbname = store_db(&db, "full");
    let spool = fresh_dir("spool");
    let broker = store_broker(
        &db,
        &dbname,
        &spool,
        "auth_opt_persist_spool_max_mb 1\nauth_opt_chat_max_content_bytes 65536\n",
    );
    let mut alice = login_tagged(broker.port, "alice", 0);
    db.stop();
    // Mosquitto 2.1 tells an MQTT 5 sender why: "quota exceeded"; 2.0 only "not authorized".
    let full = if crate::harness::mosquitto_version().contains(" 2.1.") {
        0x97
    } else {
        NOT_AUTHORIZED
    };
    let big = "z".repeat(60_000);
    let mut accepted_count = 0;
    let mut refused = false;
    for n in 0..100 {
        let code = alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("{n} {big}")),
            false,
        );
        if code == full {
            refused = true;
            break;
        }
        assert!(accepted(code));
        accepted_count += 1;
    }
    assert!(refused, "the spool limit refuses new chat messages");
    assert!(
        (10..40).contains(&accepted_count),
        "{accepted_count} accepted before the limit"
    );
    // Still refused, and warned about once.
    assert_eq!(
        alice.publish("/users/2/messages", chat("CHAT", 1, 2, "small"), false),
        full
    );
    assert_eq!(
        broker.log().matches("spool full").count(),
        1,
        "{}",
        broker.log()
    );
    db.start();
    eventually("accepting again", Duration::from_secs(20), || {
        accepted(alice.publish("/users/2/messages", chat("CHAT", 1, 2, "after"), false))
    });
    eventually("the spooled ones stored", SOON, || {
        count(&db, &dbname) == accepted_count + 1
    });
    assert!(broker.log().contains("spool has room again"));
}

fn missing_grant_keeps_messages_until_fixed() {
    let db = shared();
    let dbname = chat_db(db, "grant"); // SELECT only: INSERT is refused by the server
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 0);
    for n in 0..3 {
        let payload = chat("CHAT", 1, 2, &format!("waiting for a grant {n}"));
        assert!(accepted(alice.publish("/users/2/messages", payload, false)));
    }
    eventually("the failure is reported", SOON, || {
        broker.log().contains("storing chat messages failed")
    });
    assert_eq!(count(db, &dbname), 0);
    for host in ["%", "localhost"] {
        db.root_exec(&format!(
            "GRANT INSERT, UPDATE ON `{dbname}`.messages TO 'chatauth'@'{host}'"
        ));
    }
    eventually("stored once the grant is there", SOON, || {
        count(db, &dbname) == 3
    });
    // Written by the broker thread at its next tick (lines of other threads wait for it).
    eventually("the recovery is logged", SOON, || {
        broker.log().contains("chat messages are stored again")
    });
    assert!(!spool.join("rejected.jsonl").exists());
}

/// The operator's own constraints: a CHECK and a trigger's SIGNAL refuse one row each; the
/// twenty behind them are stored in order, the refused ones are in `rejected.jsonl` with the
/// server's answer, and `getStats` counts them.
fn refused_rows_are_set_aside_and_the_rest_stored() {
    let db = shared();
    let dbname = store_db(db, "refused");
    db.root_exec(&format!(
        "USE `{dbname}`;
         ALTER TABLE messages ADD CONSTRAINT no_spam CHECK (content <> 'spam');
         CREATE TRIGGER no_shouting BEFORE INSERT ON messages FOR EACH ROW
           IF NEW.content = 'SHOUT' THEN
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no shouting';
           END IF"
    ));
    let spool = fresh_dir("spool");
    // Small batches: the refused rows sit inside batches with good ones.
    let broker = store_broker(db, &dbname, &spool, "auth_opt_persist_flush_ms 200\n");
    let mut alice = login_tagged(broker.port, "alice", 0);
    let mut sent = Vec::new();
    for n in 0..22 {
        let content = match n {
            3 => "spam".to_string(),
            11 => "SHOUT".to_string(),
            n => format!("fine {n}"),
        };
        assert!(accepted(alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &content),
            false
        )));
        sent.push(content);
    }
    eventually("the twenty good rows", SOON, || count(db, &dbname) == 20);
    let contents = db.root_column(&format!(
        "SELECT content FROM `{dbname}`.messages ORDER BY id"
    ));
    let good: Vec<String> = sent
        .iter()
        .filter(|c| *c != "spam" && *c != "SHOUT")
        .cloned()
        .collect();
    assert_eq!(contents, good);
    let rejected = std::fs::read_to_string(spool.join("rejected.jsonl")).unwrap();
    let lines: Vec<Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{rejected}");
    assert_eq!(lines[0]["content"], "spam");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("no_spam"),
        "{rejected}"
    );
    assert_eq!(lines[1]["content"], "SHOUT");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("no shouting"),
        "{rejected}"
    );
    let mut admin = login_tagged(broker.port, "admin", 0);
    let stats = stats_on(&mut admin);
    assert_eq!(stats["storage"]["rejectedRows"], 2);
    eventually("a warning logged at a tick", SOON, || {
        broker.log().contains("was refused by MySQL")
    });
}

/// A panic inside the writer (the test-only fault `CHAT_AUTH_TEST_WRITER_PANICS`) is caught;
/// the batch is written again and storage goes on.
fn writer_survives_a_panic() {
    let db = shared();
    let dbname = store_db(db, "panic");
    let spool = fresh_dir("spool");
    let port = crate::harness::free_port();
    let conf = format!(
        "log_type all\nper_listener_settings false\nlistener {port} 127.0.0.1\n\
         allow_anonymous false\nplugin {}\n{}{USERQUERY}auth_opt_persist_enabled true\n\
         auth_opt_persist_spool_dir {}\n",
        crate::harness::plugin_path().display(),
        db.plugin_options(&dbname),
        spool.display()
    );
    let broker =
        Broker::run_with_env(&conf, port, &[("CHAT_AUTH_TEST_WRITER_PANICS", "2")]).expect("start");
    let mut alice = login_tagged(port, "alice", 0);
    for n in 0..5 {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("after a panic {n}")),
            false
        )));
    }
    eventually("stored despite two panics", SOON, || {
        count(db, &dbname) == 5
    });
    eventually("the panic is logged", SOON, || {
        broker
            .log()
            .contains("internal panic in the chat message writer")
    });
    // And later messages too: the writer lives on.
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "later"),
        false
    )));
    eventually("the later one", SOON, || count(db, &dbname) == 6);
}

/// A checkpoint emptied by a power cut: the broker starts, replays, stores nothing twice.
fn damaged_checkpoint_is_recovered_from() {
    let db = shared();
    let dbname = store_db(db, "checkpoint");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 0);
    for n in 0..10 {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("before {n}")),
            false
        )));
    }
    eventually("stored", SOON, || count(db, &dbname) == 10);
    drop(alice);
    drop(broker);
    std::fs::write(spool.join("checkpoint"), b"").unwrap();
    let broker = store_broker(db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 1);
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "after"),
        false
    )));
    eventually("the new one stored", SOON, || count(db, &dbname) == 11);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(db, &dbname), 11, "nothing stored twice");
    eventually("the replay is reported", SOON, || {
        broker.log().contains("the checkpoint is damaged")
    });
}

fn storage_options_need_the_switch() {
    let db = shared();
    let dbname = store_db(db, "switch");
    let failure = Broker::try_start(
        &format!(
            "{}{USERQUERY}auth_opt_persist_spool_dir /tmp\nauth_opt_persist_table messages\n",
            db.plugin_options(&dbname)
        ),
        "",
    )
    .err()
    .expect("the broker refuses to start");
    assert!(
        failure
            .log
            .contains("auth_opt_persist_enabled (plugin_opt_persist_enabled): is not true"),
        "{}",
        failure.log
    );
}

/// The broker's resident memory, from `/proc/<pid>/status`.
pub fn rss_kib(broker: &Broker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 150 MB of chat while MySQL is stopped: the backlog waits on disk (the broker's resident
/// memory grows by far less than the backlog), then every message is stored once. Batches
/// of 500 such messages are bigger than MariaDB's `max_allowed_packet` (16 MB): the server
/// drops the connection, and the writer halves them.
fn an_outage_backlog_stays_on_disk() {
    let db = MariaDb::start_new("store-outage");
    let dbname = store_db(&db, "outage");
    let spool = fresh_dir("spool");
    let broker = store_broker(&db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 0);
    for n in 0..20 {
        let payload = chat("CHAT", 1, 2, &format!("warm-up {n} {}", "w".repeat(60_000)));
        assert!(accepted(alice.publish("/users/2/messages", payload, false)));
    }
    eventually("the warm-up stored", SOON, || count(&db, &dbname) == 20);
    let before = rss_kib(&broker);
    db.stop();
    let content = "c".repeat(62_000);
    let total = 2_420;
    for n in 20..total {
        let payload = chat("CHAT", 1, 2, &format!("{n} {content}"));
        assert!(accepted(alice.publish("/users/2/messages", payload, false)));
    }
    let after = rss_kib(&broker);
    let grew_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "outage backlog of {} MB: broker RSS {before} kB -> {after} kB (+{grew_mib:.1} MiB)",
        (total - 20) * 62_000 / 1_000_000
    );
    assert!(grew_mib < 48.0, "RSS grew by {grew_mib:.1} MiB");
    db.start();
    eventually("every message stored", Duration::from_secs(120), || {
        count(&db, &dbname) == total
    });
    let distinct = db.root_column(&format!(
        "SELECT COUNT(DISTINCT message_id) FROM `{dbname}`.messages"
    ))[0]
        .parse::<usize>()
        .unwrap();
    assert_eq!(distinct, total, "each message once");
    assert!(!spool.join("rejected.jsonl").exists(), "nothing set aside");
}

/// A `clientMsgId` sent three times (an app's resend, a QoS 1 retry): every copy delivered
/// carries the first copy's `id` and `ts`, and MySQL has one row. Another sender's same
/// `clientMsgId`, the same sender's next one, and the same id on another content are
/// messages of their own.
fn a_retransmitted_client_msg_id_is_one_row() {
    let db = shared();
    let dbname = store_db(db, "dedup");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut alice = login_tagged(broker.port, "alice", 0);
    let mut carol = login_tagged(broker.port, "carol", 0);
    let with_id = |from: u32, content: &str, id: &str| {
        json!({"type": "CHAT", "fromId": from, "toId": 2, "content": content, "clientMsgId": id})
            .to_string()
            .into_bytes()
    };
    for _ in 0..3 {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            with_id(1, "hello once", "a-1"),
            false
        )));
    }
    assert!(accepted(carol.publish(
        "/users/2/messages",
        with_id(3, "carol's a-1", "a-1"),
        false
    )));
    assert!(accepted(alice.publish(
        "/users/2/messages",
        with_id(1, "the next one", "a-2"),
        false
    )));
    // The same clientMsgId on another message (an app that reuses ids) is a new message.
    assert!(accepted(alice.publish(
        "/users/2/messages",
        with_id(1, "not a resend", "a-1"),
        false
    )));
    let got: Vec<Value> = (0..6)
        .map(|_| {
            let m = bob
                .message_on("/users/2/messages", SOON)
                .expect("delivered");
            serde_json::from_slice(&m.payload).unwrap()
        })
        .collect();
    assert_eq!(got[0]["id"], got[1]["id"]);
    assert_eq!(got[0]["id"], got[2]["id"]);
    assert_eq!(got[0]["ts"], got[2]["ts"]);
    assert_eq!(got[2]["clientMsgId"], "a-1");
    assert_ne!(got[3]["id"], got[0]["id"], "another sender");
    assert_ne!(got[4]["id"], got[0]["id"], "another clientMsgId");
    assert_ne!(
        got[5]["id"], got[0]["id"],
        "another message under the same clientMsgId"
    );
    eventually("four rows", SOON, || count(db, &dbname) == 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(db, &dbname), 4, "one row per message");
    let ids = stored_ids(db, &dbname);
    assert_eq!(ids[0], got[0]["id"].as_str().unwrap());
}

/// One `clientMsgId` on payloads that differ in a field the plugin does not read, then in
/// the content: each is a message of its own, delivered with its own id and stored (a
/// fingerprint of type, recipient and content took the second for a resend of the first,
/// delivered under the first's id and never stored). A true resend (the same bytes) still
/// gets the first id and makes no row.
fn a_client_msg_id_on_another_payload_is_another_message() {
    let db = shared();
    let dbname = store_db(db, "dedup_payload");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut alice = login_tagged(broker.port, "alice", 0);
    let first = json!({"type": "CHAT", "fromId": 1, "toId": 2, "content": "see you",
        "clientMsgId": "c-1", "replyTo": "m-1"})
    .to_string();
    let other_field = first.replace("m-1", "m-2");
    let other_content = first.replace("see you", "see you later");
    let sent = [
        &first,
        &other_field,
        &other_field,
        &other_content,
        &other_content,
    ];
    let mut got = Vec::new();
    for payload in sent {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            payload.as_bytes().to_vec(),
            false
        )));
        let m = bob
            .message_on("/users/2/messages", SOON)
            .expect("delivered");
        let value: Value = serde_json::from_slice(&m.payload).unwrap();
        got.push(value);
    }
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(got[1]["replyTo"], "m-2");
    assert_ne!(ids[1], ids[0], "another field: another message");
    assert_eq!(ids[2], ids[1], "the same bytes again: a resend");
    assert_eq!(got[2]["ts"], got[1]["ts"]);
    assert_ne!(ids[3], ids[0], "another content: another message");
    assert_ne!(ids[3], ids[1], "another content: another message");
    assert_eq!(ids[4], ids[3], "the same bytes again: a resend");
    eventually("three rows", SOON, || count(db, &dbname) == 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(db, &dbname), 3, "no row for a resend");
    // Each row is the message delivered under its id.
    let rows = db.root_column(&format!(
        "SELECT CONCAT(message_id, ' ', content, ' ', JSON_VALUE(payload, '$.replyTo')) \
         FROM `{dbname}`.messages ORDER BY id"
    ));
    assert_eq!(
        rows,
        [
            format!("{} see you m-1", ids[0]),
            format!("{} see you m-2", ids[1]),
            format!("{} see you later m-1", ids[3]),
        ]
    );
}

/// The mode of a file or directory, permission bits only.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Mosquitto sets no umask: under 022 (the usual one) a spool directory the plugin made was
/// 0755 and its segments, `rejected.jsonl` and the sessions file 0644, chat readable by any
/// local user. Now directories are 0700 and files 0600 whatever the umask; what an earlier
/// version left open is named at start, in one warning.
fn spool_files_are_private_under_umask_022() {
    let db = shared();
    let dbname = store_db(db, "modes");
    db.root_exec(&format!(
        "ALTER TABLE `{dbname}`.messages ADD CONSTRAINT no_secret CHECK (content <> 'secret')"
    ));
    let top = fresh_dir("private");
    // Two levels the plugin makes itself.
    let made = top.join("spool");
    let spool = made.join("chat");
    // SAFETY: umask(2) has no preconditions; the broker inherits it when it is spawned, and
    // the test's own is put back once it runs (files other tests make meanwhile get 022).
    let previous = unsafe { libc::umask(0o022) };
    let broker = store_broker(db, &dbname, &spool, "");
    unsafe { libc::umask(previous) };
    let mut bob = Mqtt::login(
        broker.port,
        crate::mqtt::Login {
            client_id: "modes-bob",
            username: "bob",
            password: PASSWORD,
            clean_start: false,
        },
    )
    .expect("bob's persistent session");
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut alice = login_tagged(broker.port, "alice", 0);
    for content in ["secret", "kept"] {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, content),
            false
        )));
    }
    eventually("one row stored, one set aside", SOON, || {
        count(db, &dbname) == 1 && spool.join("rejected.jsonl").exists()
    });
    drop((alice, bob));
    drop(broker); // the sessions file is written at shutdown
    let segments: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .collect();
    assert!(!segments.is_empty(), "a segment");
    let sessions = spool.join("sessions.jsonl");
    assert!(
        std::fs::read_to_string(&sessions)
            .unwrap()
            .contains("modes-bob")
    );
    for dir in [&made, &spool] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let files = [
        spool.join("rejected.jsonl"),
        spool.join("checkpoint"),
        sessions,
    ];
    for file in segments.iter().chain(&files) {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // As an earlier version left them: named at the next start, in one line.
    let rejected = spool.join("rejected.jsonl");
    for (path, mode) in [(&spool, 0o755), (&rejected, 0o644)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let broker = store_broker(db, &dbname, &spool, "");
    let warnings: Vec<String> = broker
        .log()
        .lines()
        .filter(|l| l.contains("other local users may read"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", broker.log());
    assert!(
        warnings[0].contains(&format!("{} (0755)", spool.display()))
            && warnings[0].contains(&format!("{} (0644)", rejected.display())),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].contains("checkpoint"), "{}", warnings[0]);
}

/// Holds `lock` (run in a transaction as root, from a connection of its own) for `hold`,
/// on another thread; returns once the lock is taken. The thread commits at the end.
fn hold_lock(db: &MariaDb, lock: &str, hold: Duration) -> std::thread::JoinHandle<()> {
    use mysql::prelude::Queryable;
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(db.port)
        .user(Some("root"))
        .prefer_socket(false);
    let mut conn = mysql::Conn::new(opts).expect("a root connection");
    conn.query_drop("START TRANSACTION").unwrap();
    conn.query_drop(lock)
        .unwrap_or_else(|e| panic!("{lock}: {e}"));
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        conn.query_drop("COMMIT").unwrap();
        conn.query_drop("UNLOCK TABLES").unwrap();
    })
}

/// Twenty messages to bob while `lock` is held for `hold` on the messages table, and a
/// user's first login in the middle of it: the login is answered at once (the users table
/// is not the messages table), every message is delivered, and once the lock is gone every
/// one is a row, once, with nothing set aside and no outage reported for logins.
fn twenty_messages_under_a_lock(
    db: &MariaDb,
    dbname: &str,
    lock: &str,
    hold: Duration,
    extra: &str,
) -> Broker {
    let spool = fresh_dir("spool");
    let broker = store_broker(db, dbname, &spool, extra);
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    let mut alice = login_tagged(broker.port, "alice", 0);
    let started = std::time::Instant::now();
    let holder = hold_lock(db, &lock.replace("{db}", dbname), hold);
    let mut delivered = HashSet::new();
    for n in 0..20 {
        if n == 10 {
            // A login that needs the users table (carol has not logged in to this broker).
            let asked = std::time::Instant::now();
            let carol = login_tagged(broker.port, "carol", 0);
            assert!(
                asked.elapsed() < Duration::from_secs(2),
                "carol's login took {:?}",
                asked.elapsed()
            );
            drop(carol);
        }
        let payload = chat("CHAT", 1, 2, &format!("under the lock {n}"));
        assert!(accepted(alice.publish("/users/2/messages", payload, false)));
        let m = bob
            .message_on("/users/2/messages", SOON)
            .expect("delivered under the lock");
        delivered.insert(id_of(&m.payload));
        std::thread::sleep(hold / 40);
    }
    assert!(started.elapsed() < hold, "all sent while the lock was held");
    holder.join().expect("the lock holder");
    eventually("all twenty rows after the lock", SOON, || {
        count(db, dbname) == 20
    });
    let stored: HashSet<String> = stored_ids(db, dbname).into_iter().collect();
    assert_eq!(stored, delivered, "each delivered message stored, once");
    assert!(
        !spool.join("rejected.jsonl").exists(),
        "set aside: {}",
        std::fs::read_to_string(spool.join("rejected.jsonl")).unwrap_or_default()
    );
    eventually("storing again, logged", SOON, || {
        broker.log().contains("chat messages are stored again")
    });
    let log = broker.log();
    assert!(
        !log.contains("MySQL unreachable") && !log.contains("logins refused"),
        "{log}"
    );
    assert_eq!(
        log.matches("storing chat messages failed").count(),
        1,
        "one warning for the episode:\n{log}"
    );
    broker
}

/// Issue 23: with the server's lock waits lowered to 2 s (below the query timeout), a 15 s
/// `SELECT ... FOR UPDATE` made the writer's INSERTs end in ERROR 1205, and rows were set
/// aside as refused although their recipient had them. A lock wait is waited out, like a
/// deadlock or a timeout.
fn a_row_lock_of_15_s_with_2_s_lock_waits_loses_nothing() {
    let db = MariaDb::start_new("store-row-lock");
    db.root_exec("SET GLOBAL innodb_lock_wait_timeout = 2");
    let dbname = store_db(&db, "row_lock");
    let broker = twenty_messages_under_a_lock(
        &db,
        &dbname,
        "SELECT * FROM `{db}`.messages FOR UPDATE",
        Duration::from_secs(15),
        "auth_opt_query_timeout_ms 4000\n",
    );
    let log = broker.log();
    assert!(
        log.contains("ERROR 1205"),
        "the server ended lock waits:\n{log}"
    );
}

/// Issue 23: with the server's default lock waits (here a table lock, which waits
/// `lock_wait_timeout`, a day by default), the writer's statements outlived the query
/// timeout, the busy table was taken for a dead server, and "MySQL unreachable" / "MySQL
/// answers again" flapped for logins every few seconds. The writer's own connection ends its
/// waits on the server's side (at most 5 s, then ERROR 1205) and tries again.
fn a_table_lock_of_30_s_is_waited_out_without_an_outage() {
    let db = shared();
    let dbname = store_db(db, "table_lock");
    twenty_messages_under_a_lock(
        db,
        &dbname,
        "LOCK TABLES `{db}`.messages WRITE",
        Duration::from_secs(30),
        "",
    );
}

/// Exactly once rests on a unique `message_id`: an operator's table without one is named at
/// start (a batch written again after a lost answer would store its rows twice).
fn a_table_without_a_unique_message_id_is_reported() {
    let db = shared();
    let dbname = store_db(db, "not_unique");
    db.root_exec(&format!(
        "ALTER TABLE `{dbname}`.messages DROP INDEX messages_message_id, \
         ADD INDEX messages_message_id (message_id)"
    ));
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 0);
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "stored all the same"),
        false
    )));
    eventually("stored", SOON, || count(db, &dbname) == 1);
    eventually("the warning", SOON, || {
        broker
            .log()
            .contains("has no unique key on message_id alone")
    });
    // The bundled schema has one: no warning there.
    let dbname = store_db(db, "unique");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "");
    let mut alice = login_tagged(broker.port, "alice", 1);
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "unique"),
        false
    )));
    eventually("stored", SOON, || count(db, &dbname) == 1);
    std::thread::sleep(Duration::from_millis(1200)); // a tick writes the writer's lines
    assert!(
        !broker.log().contains("no unique key on message_id"),
        "{}",
        broker.log()
    );
}

/// Unmounts a test's tmpfs when the test ends, pass or fail.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The spool on a 4 MiB tmpfs with MySQL stopped: the disk fills, new chat messages are
/// refused (never a crash, never delivered unstored); once MySQL is back, the writer stores
/// the backlog, deletes the segments (freeing the disk even though it was full) and new
/// messages are accepted again by themselves.
fn a_full_disk_refuses_then_recovers() {
    let spool = fresh_dir("tmpfs-spool");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&spool)
        .output();
    match &mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "skipped: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot run mount ({e})");
            return;
        }
    }
    let _unmount = Mounted(spool.clone());
    let db = MariaDb::start_new("store-disk");
    let dbname = store_db(&db, "disk");
    // 8 MB of spool: 1 MB segments, of which the 4 MiB disk holds three.
    let broker = store_broker(&db, &dbname, &spool, "auth_opt_persist_spool_max_mb 8\n");
    let mut alice = login_tagged(broker.port, "alice", 0);
    let mut bob = login_tagged(broker.port, "bob", 0);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    db.stop();
    let content = "d".repeat(60_000);
    let mut accepted_count = 0;
    let mut refused = false;
    for n in 0..200 {
        let code = alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("{n} {content}")),
            false,
        );
        if accepted(code) {
            accepted_count += 1;
        } else {
            assert_eq!(code, NOT_AUTHORIZED);
            refused = true;
            break;
        }
    }
    assert!(refused, "the disk never filled");
    assert!(
        accepted_count > 20,
        "{accepted_count} accepted before the disk filled"
    );
    // Every accepted message was delivered; the refused one was not.
    assert_eq!(bob.drain(Duration::from_secs(1)).len(), accepted_count);
    assert!(
        broker.log().contains("cannot write the chat spool"),
        "{}",
        broker.log()
    );
    db.start();
    eventually("the backlog stored", SOON, || {
        count(&db, &dbname) == accepted_count
    });
    eventually("accepting again", SOON, || {
        accepted(alice.publish("/users/2/messages", chat("CHAT", 1, 2, "room again"), false))
    });
    eventually("the new one stored", SOON, || {
        count(&db, &dbname) == accepted_count + 1
    });
}

/// `$SYS/broker/chat-auth/...`, retained, every `sys_interval`: a superuser sees the counters
/// move after logins, refusals and stored messages.
fn sys_topics_show_the_figures() {
    let db = shared();
    let dbname = store_db(db, "sys");
    let spool = fresh_dir("spool");
    let broker = store_broker(db, &dbname, &spool, "auth_opt_sys_interval 1\n");
    let mut admin = login_tagged(broker.port, "admin", 0);
    assert_eq!(admin.subscribe("$SYS/broker/chat-auth/#"), 1);
    let mut figures = std::collections::HashMap::<String, u64>::new();
    let read = |admin: &mut Mqtt, figures: &mut std::collections::HashMap<String, u64>| {
        for m in admin.drain(Duration::from_millis(300)) {
            let name = m
                .topic
                .trim_start_matches("$SYS/broker/chat-auth/")
                .to_string();
            if let Ok(value) = String::from_utf8_lossy(&m.payload).parse() {
                figures.insert(name, value);
            }
        }
    };
    eventually("the first figures", SOON, || {
        read(&mut admin, &mut figures);
        figures.contains_key("logins/accepted")
    });
    let accepted_before = figures["logins/accepted"];
    assert_eq!(
        crate::harness::connect(broker.port, "bob", "wrong"),
        crate::harness::Outcome::Refused(5)
    );
    let mut alice = login_tagged(broker.port, "alice", 0);
    for n in 0..3 {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("counted {n}")),
            false
        )));
    }
    assert_eq!(
        alice.publish("/users/2/messages", chat("CHAT", 3, 2, "forged"), false),
        NOT_AUTHORIZED
    );
    eventually("the figures moved", SOON, || {
        read(&mut admin, &mut figures);
        figures.get("logins/accepted") > Some(&accepted_before)
            && figures.get("logins/refused/wrong-password") >= Some(&1)
            && figures.get("chat/accepted") >= Some(&3)
            && figures.get("chat/refused/from-id-mismatch") >= Some(&1)
            && figures.get("storage/rows-stored") >= Some(&3)
            && figures.get("mysql/up") == Some(&1)
            && figures.get("acl/allowed").is_some_and(|n| *n > 0)
    });
    // Retained: a new subscriber gets them at once.
    let mut late = login_tagged(broker.port, "admin", 1);
    assert_eq!(late.subscribe("$SYS/broker/chat-auth/chat/accepted"), 1);
    let retained = late.message(SOON).expect("a retained figure");
    assert!(retained.retain);
}

/// `GET /metrics` with a plain HTTP client.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of one sample line, `name{labels} value`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `auth_opt_metrics_listen`: the `$SYS` figures at `GET /metrics` in the Prometheus text
/// format, agreeing with `getStats`; a port in use stops the broker, naming the option.
fn prometheus_endpoint_serves_the_same_figures() {
    let db = shared();
    let dbname = store_db(db, "prometheus");
    let spool = fresh_dir("spool");
    let metrics_port = crate::harness::free_port();
    let broker = store_broker(
        db,
        &dbname,
        &spool,
        &format!(
            "auth_opt_metrics_listen 127.0.0.1:{metrics_port}\nauth_opt_auth_cacheseconds 60\n"
        ),
    );
    let mut alice = login_tagged(broker.port, "alice", 0);
    for n in 0..4 {
        assert!(accepted(alice.publish(
            "/users/2/messages",
            chat("CHAT", 1, 2, &format!("scraped {n}")),
            false
        )));
    }
    eventually("stored", SOON, || count(db, &dbname) == 4);
    // One chat history page, counted as answered.
    assert!(accepted(alice.publish(
        "$CONTROL/chat-history/v1",
        json!({"command": "getHistory", "type": "CHAT", "id": 2}).to_string(),
        false
    )));
    let page = alice
        .message_on("$CONTROL/chat-history/v1/response", SOON)
        .expect("a history page");
    let page: Value = serde_json::from_slice(&page.payload).unwrap();
    assert_eq!(
        page["responses"][0]["data"]["messages"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    let mut admin = login_tagged(broker.port, "admin", 0);
    let stats = &stats_on(&mut admin);
    let mut text = String::new();
    eventually("the endpoint has the figures", SOON, || {
        text = scrape(metrics_port);
        sample(&text, "chatauth_storage_rows_total{result=\"stored\"}") == Some(4.0)
            && sample(&text, "chatauth_logins_cached") == stats["cachedLogins"].as_f64()
            && sample(
                &text,
                "chatauth_history_requests_total{result=\"answered\"}",
            ) == stats["history"]["pagesAnswered"].as_f64()
    });
    assert_eq!(stats["history"]["pagesAnswered"], 1, "{stats}");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "# HELP chatauth_logins Logins by outcome",
        "# TYPE chatauth_logins counter",
        "# TYPE chatauth_chat_messages counter",
        "# UNIT chatauth_spool_bytes bytes",
        "# TYPE chatauth_mysql_up gauge",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert_eq!(
        sample(&text, "chatauth_storage_rows_total{result=\"stored\"}"),
        stats["storage"]["rowsWritten"].as_f64()
    );
    assert!(sample(&text, "chatauth_logins_total{outcome=\"accepted\"}") >= Some(2.0));
    assert_eq!(sample(&text, "chatauth_mysql_up"), Some(1.0));
    // The same port again: the second broker refuses to start and says which option.
    let failure = Broker::try_start(
        &format!(
            "{}{USERQUERY}auth_opt_metrics_listen 127.0.0.1:{metrics_port}\n",
            db.plugin_options(&dbname)
        ),
        "",
    )
    .err()
    .expect("refused to start");
    assert!(
        failure
            .log
            .contains("auth_opt_metrics_listen (plugin_opt_metrics_listen)"),
        "{}",
        failure.log
    );
}
