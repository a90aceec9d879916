//! Chat history over MQTT (`$CONTROL/chat-history/v1`): pages of a conversation both ways,
//! groups and the inbox for members only, what nobody else may read, answers to the asker
//! only, MySQL down, and the query plans.

use crate::acl::{PASSWORD, control};
// The storage tests' set-up: the chat database with storage, its broker, their clients.
use crate::fixtures::{chat, login_tagged};
use crate::harness::Broker;
use crate::harness::{MariaDb, eventually, fresh_dir, shared};
use crate::mqtt::{Mqtt, accepted};
use crate::security::probe_round_trips;
use crate::store::{count, rss_kib, store_broker as history_broker, store_db as history_db};
use chat_auth::acl::GroupIds;
use chat_auth::history::{self, Cursor, Request, Requester, Thread};
use libtest_mimic::Trial;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "history::a_conversation_pages_both_ways_as_delivered",
            a_conversation_pages_both_ways_as_delivered,
        ),
        (
            "history::groups_and_inbox_for_members_and_nobody_else",
            groups_and_inbox_for_members_and_nobody_else,
        ),
        (
            "history::answers_reach_the_asker_only",
            answers_reach_the_asker_only,
        ),
        (
            "history::mysql_down_answers_an_error_in_time",
            mysql_down_answers_an_error_in_time,
        ),
        (
            "history::a_table_without_the_payload_column_still_answers",
            a_table_without_the_payload_column_still_answers,
        ),
        (
            "history::huge_requests_are_refused_unread",
            huge_requests_are_refused_unread,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

/// One answer: the response item, and its messages as the exact JSON text they came as.
#[derive(Debug)]
struct Answer {
    item: Value,
    messages: Vec<String>,
    more: bool,
}

impl Answer {
    fn read(payload: &[u8]) -> Answer {
        #[derive(Deserialize)]
        struct Responses<'a> {
            #[serde(borrow)]
            responses: Vec<Item<'a>>,
        }
        #[derive(Deserialize)]
        struct Item<'a> {
            #[serde(borrow)]
            data: Option<Data<'a>>,
        }
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            messages: Vec<&'a RawValue>,
            more: bool,
        }
        let whole: Value = serde_json::from_slice(payload).expect("a JSON answer");
        assert_eq!(
            whole["responses"].as_array().map(Vec::len),
            Some(1),
            "{whole}"
        );
        let raw: Responses<'_> = serde_json::from_slice(payload).expect("an answer");
        let data = raw.responses.into_iter().next().and_then(|i| i.data);
        Answer {
            item: whole["responses"][0].clone(),
            messages: data
                .as_ref()
                .map(|d| d.messages.iter().map(|m| m.get().to_string()).collect())
                .unwrap_or_default(),
            more: data.is_some_and(|d| d.more),
        }
    }

    fn error(&self) -> &str {
        self.item["error"].as_str().unwrap_or("")
    }
}

fn id_of(message: &str) -> String {
    let value: Value = serde_json::from_str(message).expect("a message");
    value["id"].as_str().expect("an id").to_string()
}

/// Sends one request and waits for its answer on the API's response topic.
fn ask(client: &mut Mqtt, command: Value) -> Answer {
    send(client, &json!({ "commands": [command] }).to_string())
}

/// The ids of the messages one request answers with (oldest last for `before` pages).
pub fn ask_ids(client: &mut Mqtt, command: Value) -> Vec<String> {
    let answer = ask(client, command);
    assert!(answer.error().is_empty(), "{:?}", answer.item);
    answer.messages.iter().map(|m| id_of(m)).collect()
}

fn send(client: &mut Mqtt, payload: &str) -> Answer {
    assert!(accepted(client.publish(history::TOPIC, payload, false)));
    let answer = client
        .message_on(history::RESPONSE_TOPIC, SOON)
        .unwrap_or_else(|| panic!("{}: no history answer to {payload}", client.client_id));
    Answer::read(&answer.payload)
}

/// Every page of a thread, following `before` (newest first) or `after` (oldest first).
fn all_pages(client: &mut Mqtt, thread: Value, after: Option<&str>, limit: usize) -> Vec<String> {
    let mut messages = Vec::new();
    let mut cursor = after.map(str::to_string);
    for _ in 0..100 {
        let mut command = thread.clone();
        command["command"] = "getHistory".into();
        command["limit"] = limit.into();
        if let Some(cursor) = &cursor {
            command[if after.is_some() { "after" } else { "before" }] = cursor.clone().into();
        }
        let page = ask(client, command);
        assert!(page.error().is_empty(), "{:?}", page.item);
        assert!(page.messages.len() <= limit);
        messages.extend(page.messages.iter().cloned());
        if !page.more {
            return messages;
        }
        cursor = Some(id_of(page.messages.last().expect("more means a full page")));
    }
    panic!("pages never ended");
}

/// The next message on `topic` from user `from`, others skipped.
fn next_from(client: &mut Mqtt, topic: &str, from: u32) -> String {
    loop {
        let message = client.message_on(topic, SOON).expect("a chat message");
        let text = String::from_utf8(message.payload).expect("UTF-8");
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["fromId"] == from {
            return text;
        }
    }
}

fn a_conversation_pages_both_ways_as_delivered() {
    let db = shared();
    let dbname = history_db(db, "hpages");
    let spool = fresh_dir("spool");
    let broker = history_broker(db, &dbname, &spool, "");
    let port = broker.port;
    let (mut alice, mut bob, mut carol) = (
        login_tagged(port, "alice", 0),
        login_tagged(port, "bob", 0),
        login_tagged(port, "carol", 0),
    );
    assert_eq!(alice.subscribe("/users/1/messages"), 1);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    // 250 messages between alice and bob, as delivered; carol writes to both meanwhile.
    let mut conversation = Vec::new();
    let mut others = 0;
    for n in 0..250 {
        let content = format!("message {n} \"quoted\" ✓ \\ {}", "x".repeat(n % 7));
        let delivered = if n % 2 == 0 {
            assert!(accepted(alice.publish(
                "/users/2/messages",
                chat("CHAT", 1, 2, &content),
                false
            )));
            next_from(&mut bob, "/users/2/messages", 1)
        } else {
            // Extra fields and another order: kept as sent.
            let payload = format!(
                r#"{{"content":{},"toId":"1","type":"CHAT","fromId":2,"clientMsgId":"b-{n}"}}"#,
                json!(content)
            );
            assert!(accepted(bob.publish("/users/1/messages", payload, false)));
            next_from(&mut alice, "/users/1/messages", 2)
        };
        conversation.push(delivered);
        if n % 25 == 0 {
            for to in [1, 2] {
                let topic = format!("/users/{to}/messages");
                assert!(accepted(carol.publish(
                    &topic,
                    chat("CHAT", 3, to, "not yours"),
                    false
                )));
                others += 1;
            }
        }
    }
    eventually("every message stored", SOON, || {
        count(db, &dbname) == 250 + others
    });

    // Newest first, page after page with `before`: the whole conversation once, in order,
    // each message byte for byte as it was delivered.
    let mut newest_first = all_pages(&mut alice, json!({"type": "CHAT", "id": 2}), None, 100);
    newest_first.reverse();
    assert_eq!(newest_first.len(), 250);
    assert!(
        newest_first == conversation,
        "pages with before differ from the conversation"
    );
    // Oldest first with `after`, from bob's side (the other user's id as a string).
    let first = id_of(&conversation[0]);
    let caught_up = all_pages(
        &mut bob,
        json!({"type": "CHAT", "id": "1"}),
        Some(&first),
        64,
    );
    assert!(caught_up == conversation[1..], "pages with after differ");
    // The default page: the 50 newest, newest first, more to come.
    let newest = ask(
        &mut bob,
        json!({"command": "getHistory", "type": "CHAT", "id": 1}),
    );
    assert_eq!(newest.messages.len(), 50);
    assert!(newest.more);
    assert_eq!(newest.messages[0], conversation[249]);
    // Nothing after the last; an unknown cursor is an error, not an empty page.
    let last = id_of(&conversation[249]);
    let end = ask(
        &mut bob,
        json!({"command": "getHistory", "type": "CHAT", "id": 1, "after": last}),
    );
    assert!(
        end.messages.is_empty() && !end.more && end.error().is_empty(),
        "{:?}",
        end.item
    );
    let unknown = ask(
        &mut bob,
        json!({"command": "getHistory", "type": "CHAT", "id": 1, "before": "nope"}),
    );
    assert!(
        unknown.error().contains("unknown message id"),
        "{:?}",
        unknown.item
    );
    // Carol sees only her own messages to each of them.
    let hers = all_pages(&mut carol, json!({"type": "CHAT", "id": 2}), None, 200);
    assert_eq!(hers.len(), others / 2);

    explain_uses_the_history_indexes(db, &dbname);
}

/// With many other rows in the table, every page is an index range scan of the history
/// indexes (`EXPLAIN` of the statements the plugin sends).
fn explain_uses_the_history_indexes(db: &MariaDb, dbname: &str) {
    db.root_exec(&format!(
        "USE `{dbname}`; INSERT INTO messages (message_id, type, from_id, to_id, content, topic, qos, \
         client_id, server_ts) SELECT CONCAT('filler-', seq), IF(seq % 3 = 0, 'GROUPCHAT', \
         'CHAT'), seq % 97, seq % 89, 'filler', '/t', 0, 'c', seq FROM seq_1_to_50000; \
         ANALYZE TABLE `{dbname}`.messages"
    ));
    let groups: GroupIds = ["10", "11", "12"].into_iter().collect();
    let who = Requester {
        user_id: "2",
        groups: &groups,
    };
    let table = format!("`{dbname}`.messages");
    for (thread, position) in [
        (Thread::Chat("1".into()), Some(40_000u64)),
        (Thread::Chat("1".into()), None),
        (Thread::Group("10".into()), Some(40_000)),
        (Thread::Inbox, None),
    ] {
        let cursor = if position.is_some() {
            Cursor::Before("x".into())
        } else {
            Cursor::Newest
        };
        let plan = history::plan(
            Request {
                thread: thread.clone(),
                cursor,
                limit: 50,
            },
            &who,
        )
        .unwrap();
        let (sql, values) = history::page_sql(
            &table,
            &plan,
            position,
            history::TableShape {
                payload: true,
                indexes: true,
            },
        );
        let rows = db.root_rows(&format!("EXPLAIN {sql}"), values);
        let field = |row: &std::collections::HashMap<String, String>, name: &str| {
            row.get(name).cloned().unwrap_or_default()
        };
        let scans: Vec<_> = rows
            .iter()
            .filter(|r| field(r, "table") == "messages")
            .collect();
        assert!(!scans.is_empty(), "{rows:?}");
        for row in scans {
            let key = field(row, "key");
            let access = field(row, "type");
            let extra = field(row, "Extra");
            assert!(
                key.starts_with("messages_history_") && ["range", "ref"].contains(&access.as_str()),
                "{thread:?}: not an index range scan: {row:?}\n{sql}"
            );
            assert!(
                !extra.contains("filesort"),
                "{thread:?}: sorts rows: {row:?}"
            );
        }
    }
}

fn groups_and_inbox_for_members_and_nobody_else() {
    let db = shared();
    let dbname = history_db(db, "hgroups");
    let spool = fresh_dir("spool");
    let broker = history_broker(db, &dbname, &spool, "");
    let port = broker.port;
    let group = "/groups/10/messages";
    let (mut alice, mut bob, mut carol, mut dave) = (
        login_tagged(port, "alice", 1),
        login_tagged(port, "bob", 1),
        login_tagged(port, "carol", 1),
        login_tagged(port, "dave", 1),
    );
    let mut admin = login_tagged(port, "admin", 1);
    assert_eq!(bob.subscribe(group), 1);
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    for n in 0..5 {
        assert!(accepted(alice.publish(
            group,
            chat("GROUPCHAT", 1, 10, &format!("team {n}")),
            false
        )));
    }
    assert!(accepted(carol.publish(
        "/users/4/messages",
        chat("CHAT", 3, 4, "for dave only"),
        false
    )));
    let mut last_seen = String::new();
    for _ in 0..5 {
        last_seen =
            id_of(&String::from_utf8(bob.message_on(group, SOON).unwrap().payload).unwrap());
    }
    eventually("stored", SOON, || count(db, &dbname) == 6);

    // A member reads the group; a non-member is refused.
    let team = ask(
        &mut bob,
        json!({"command": "getHistory", "type": "GROUPCHAT", "id": 10}),
    );
    assert_eq!(team.messages.len(), 5, "{:?}", team.item);
    let refused = ask(
        &mut dave,
        json!({"command": "getHistory", "type": "GROUPCHAT", "id": 10}),
    );
    assert!(
        refused.error().contains("not a member"),
        "{:?}",
        refused.item
    );
    assert!(refused.messages.is_empty());

    // Removed from the group, carol can no longer read it once refreshUser applied.
    let before = ask(
        &mut carol,
        json!({"command": "getHistory", "type": "GROUPCHAT", "id": "10"}),
    );
    assert_eq!(before.messages.len(), 5);
    db.root_exec(&format!(
        "DELETE FROM `{dbname}`.group_members WHERE user_id = 3"
    ));
    let answer = control(
        &mut admin,
        json!({"command": "refreshUser", "username": "carol"}),
    );
    assert_eq!(answer["data"]["clients"], 1, "{answer}");
    let after = ask(
        &mut carol,
        json!({"command": "getHistory", "type": "GROUPCHAT", "id": 10}),
    );
    assert!(after.error().contains("not a member"), "{:?}", after.item);
    let inbox = ask(
        &mut carol,
        json!({"command": "getHistory", "type": "INBOX"}),
    );
    assert!(
        inbox.messages.is_empty(),
        "no group left, nothing to her: {:?}",
        inbox.messages
    );

    // Bob goes offline; what arrives meanwhile is his INBOX after the last one he saw,
    // oldest first, and nothing of dave's.
    bob.disconnect();
    let mut meanwhile = Vec::new();
    for n in 0..3 {
        let private = chat("CHAT", 1, 2, &format!("while you were away {n}"));
        assert!(accepted(alice.publish("/users/2/messages", private, false)));
        meanwhile.push(format!("while you were away {n}"));
        assert!(accepted(alice.publish(
            group,
            chat("GROUPCHAT", 1, 10, &format!("team later {n}")),
            false
        )));
        meanwhile.push(format!("team later {n}"));
    }
    assert!(accepted(carol.publish(
        "/users/4/messages",
        chat("CHAT", 3, 4, "dave again"),
        false
    )));
    eventually("stored", SOON, || count(db, &dbname) == 13);
    let mut bob = login_tagged(port, "bob", 2);
    let caught_up = ask(
        &mut bob,
        json!({"command": "getHistory", "type": "INBOX", "after": last_seen}),
    );
    let contents: Vec<String> = caught_up
        .messages
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(m).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(contents, meanwhile, "{:?}", caught_up.item);
    assert!(!caught_up.more);

    // Another user's conversation is never readable, however the request is made.
    let dave_id = 4;
    for (what, command) in [
        (
            "dave's id",
            json!({"command": "getHistory", "type": "CHAT", "id": dave_id}),
        ),
        (
            "an id with SQL",
            json!({"command": "getHistory", "type": "CHAT", "id": "4' OR '1'='1"}),
        ),
        (
            "a forged requester",
            json!({"command": "getHistory", "type": "CHAT", "id": 4, "userId": 3, "fromId": 3}),
        ),
    ] {
        let answer = ask(&mut bob, command);
        assert!(answer.messages.is_empty(), "{what}: {:?}", answer.messages);
    }
    for (what, command) in [
        (
            "a wildcard id",
            json!({"command": "getHistory", "type": "CHAT", "id": "+"}),
        ),
        (
            "a multi-level wildcard",
            json!({"command": "getHistory", "type": "GROUPCHAT", "id": "#"}),
        ),
        (
            "a topic as id",
            json!({"command": "getHistory", "type": "CHAT", "id": "3/../4"}),
        ),
        (
            "a huge limit",
            json!({"command": "getHistory", "type": "INBOX", "limit": 1_000_000}),
        ),
        (
            "a negative limit",
            json!({"command": "getHistory", "type": "INBOX", "limit": -1}),
        ),
        (
            "another type",
            json!({"command": "getHistory", "type": "ALL"}),
        ),
        (
            "another command",
            json!({"command": "refreshUser", "username": "bob"}),
        ),
    ] {
        let answer = ask(&mut bob, command);
        assert!(
            !answer.error().is_empty() && answer.messages.is_empty(),
            "{what}: {:?}",
            answer.item
        );
    }
    for bad in ["not json", "[1,2]", "{\"commands\":7}", ""] {
        let answer = send(&mut bob, bad);
        assert!(!answer.error().is_empty(), "{bad}: {:?}", answer.item);
    }
    // Rows whose ids match bob's or alice's only loosely in SQL (a trailing space, which
    // MySQL's PAD SPACE collations ignore): not his, never in his pages.
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.messages (message_id, type, from_id, to_id, content, topic, \
         qos, client_id, server_ts) VALUES \
         ('pad-1', 'CHAT', '1', '2 ', 'loose inbox', '/users/2 /messages', 1, 'x', 1), \
         ('pad-2', 'GROUPCHAT', '1', '10 ', 'loose group', '/groups/10 /messages', 1, 'x', 1), \
         ('pad-3', 'CHAT', '1 ', '2', 'odd sender', '/users/2/messages', 1, 'x', 1)"
    ));
    let with_alice = all_pages(&mut bob, json!({"type": "CHAT", "id": 1}), None, 200);
    assert_eq!(with_alice.len(), 3, "only alice's three: {with_alice:?}");
    // Dave's own inbox holds carol's two; bob's INBOX has none of them.
    let daves = ask(&mut dave, json!({"command": "getHistory", "type": "INBOX"}));
    assert_eq!(daves.messages.len(), 2);
    let bobs = all_pages(&mut bob, json!({"type": "INBOX"}), None, 200);
    assert!(bobs.iter().all(|m| !m.contains("dave")), "{bobs:?}");
    assert!(bobs.iter().all(|m| !m.contains("loose")), "{bobs:?}");
    // The 11 above, and pad-3: a message to bob's inbox (from an odd sender id).
    assert_eq!(bobs.len(), 12, "{bobs:?}");
}

fn answers_reach_the_asker_only() {
    let db = shared();
    let dbname = history_db(db, "hasker");
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.acls (username, topic, rw) VALUES ('bob', 'replies/bob/#', 3)"
    ));
    let spool = fresh_dir("spool");
    let broker = history_broker(
        db,
        &dbname,
        &spool,
        "auth_opt_aclquery SELECT topic FROM acls WHERE username = '%s' AND rw >= %d\n",
    );
    let port = broker.port;
    let (mut alice, mut bob) = (login_tagged(port, "alice", 3), login_tagged(port, "bob", 3));
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "hi bob"),
        false
    )));
    eventually("stored", SOON, || count(db, &dbname) == 1);
    // Alice listens on the response topic (and tries a wildcard over the API's topics).
    assert_eq!(alice.subscribe(history::RESPONSE_TOPIC), 1);
    assert_eq!(alice.subscribe("$CONTROL/#"), 0x87);
    assert_eq!(alice.subscribe("$CONTROL/chat-history/v1/+"), 0x87);
    let answer = ask(
        &mut bob,
        json!({"command": "getHistory", "type": "CHAT", "id": 1, "correlationData": "c-1"}),
    );
    assert_eq!(answer.messages.len(), 1);
    assert_eq!(answer.item["correlationData"], "c-1");
    assert!(alice.message(QUIET).is_none(), "alice got bob's answer");

    // An MQTT 5 response topic the asker may read gets the answer, with the correlation data.
    assert!(accepted(bob.request(
        history::TOPIC,
        json!({"command": "getHistory", "type": "INBOX"}).to_string(),
        "replies/bob/7",
        b"\x00corr\xff",
    )));
    let reply = bob
        .message_on("replies/bob/7", SOON)
        .expect("an answer on the response topic");
    assert_eq!(
        reply.correlation_data.as_deref(),
        Some(&b"\x00corr\xff"[..])
    );
    assert_eq!(Answer::read(&reply.payload).messages.len(), 1);
    // One it may not read, or a chat topic: refused, answered on the API's topic.
    for topic in ["replies/alice/1", "/users/1/messages", "$SYS/broker/x"] {
        assert!(accepted(bob.request(
            history::TOPIC,
            json!({"command": "getHistory", "type": "INBOX"}).to_string(),
            topic,
            b"x",
        )));
        let refused = bob
            .message_on(history::RESPONSE_TOPIC, SOON)
            .expect("an error answer");
        let refused = Answer::read(&refused.payload);
        assert!(
            refused.error().contains("response topic"),
            "{topic}: {:?}",
            refused.item
        );
        assert!(refused.messages.is_empty());
    }
    assert!(alice.message(QUIET).is_none(), "nothing reached alice");

    // Limits: more than 4 in flight at once (five commands in one message are admitted
    // before any is answered) gets an error for the fifth, not a queue.
    let five = json!({"commands": vec![json!({"command": "getHistory", "type": "INBOX"}); 5]});
    assert!(accepted(bob.publish(
        history::TOPIC,
        five.to_string(),
        false
    )));
    let answers: Vec<Answer> = (0..5)
        .map(|_| {
            Answer::read(
                &bob.message_on(history::RESPONSE_TOPIC, SOON)
                    .unwrap()
                    .payload,
            )
        })
        .collect();
    let in_flight: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.error().contains("in flight"))
        .collect();
    assert_eq!(in_flight.len(), 1, "{answers:?}");
    std::thread::sleep(Duration::from_millis(1_100)); // a new second for the next budget
    // Beyond the per-second budget a request gets an error, not a queue.
    let burst = json!({"commands": vec![json!({"command": "getHistory", "type": "INBOX"}); 10]});
    assert!(accepted(bob.publish(
        history::TOPIC,
        burst.to_string(),
        false
    )));
    assert!(accepted(bob.publish(
        history::TOPIC,
        burst.to_string(),
        false
    )));
    let answers = bob.drain(Duration::from_secs(2));
    let answers: Vec<Answer> = answers
        .iter()
        .filter(|m| m.topic == history::RESPONSE_TOPIC)
        .map(|m| Answer::read(&m.payload))
        .collect();
    assert_eq!(answers.len(), 20, "one answer per request");
    let limited = answers
        .iter()
        .filter(|a| a.error().contains("too many"))
        .count();
    assert!(limited >= 10, "only {limited} of 20 limited");
    for answer in answers.iter().filter(|a| a.error().is_empty()) {
        assert_eq!(answer.messages.len(), 1, "{:?}", answer.item);
    }
}

fn mysql_down_answers_an_error_in_time() {
    let db = MariaDb::start_new("history-outage");
    let dbname = history_db(&db, "houtage");
    let spool = fresh_dir("spool");
    let broker = history_broker(&db, &dbname, &spool, "auth_opt_auth_cacheseconds 60\n");
    let port = broker.port;
    let (mut alice, mut bob) = (login_tagged(port, "alice", 4), login_tagged(port, "bob", 4));
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "before"),
        false
    )));
    eventually("stored", SOON, || count(&db, &dbname) == 1);
    assert_eq!(
        ask(&mut bob, json!({"command": "getHistory", "type": "INBOX"}))
            .messages
            .len(),
        1
    );

    // A hung server (stopped, not closed): the answer is an error within the timeouts.
    db.pause();
    let asked = Instant::now();
    let answer = ask(&mut bob, json!({"command": "getHistory", "type": "INBOX"}));
    let waited = asked.elapsed();
    assert!(
        answer.error().contains("history unavailable"),
        "{:?}",
        answer.item
    );
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    // The broker keeps serving meanwhile: a chat message is delivered (and spooled).
    let sent = Instant::now();
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "during"),
        false
    )));
    assert!(bob.message_on("/users/2/messages", SOON).is_some());
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "delivery waited {:?}",
        sent.elapsed()
    );
    let again = ask(&mut bob, json!({"command": "getHistory", "type": "INBOX"}));
    assert!(!again.error().is_empty());
    db.resume();
    eventually(
        "history again, with the message sent meanwhile",
        Duration::from_secs(20),
        || {
            ask(&mut bob, json!({"command": "getHistory", "type": "INBOX"}))
                .messages
                .len()
                == 2
        },
    );

    // A client id taken over while its request waits on MySQL (live, or after the asker
    // left, when the broker may place the new connection at the asker's freed address): the
    // answer is not handed to the connection that holds the id now (another user).
    Mqtt::connect(port, "carol-h4", "carol", PASSWORD).disconnect(); // cached from now
    let mut admin = login_tagged(port, "admin", 4);
    let failed = |admin: &mut Mqtt| {
        let stats = control(admin, json!({"command": "getStats"}));
        stats["data"]["history"]["pagesFailed"]
            .as_u64()
            .unwrap_or(0)
    };
    for leaves_first in [false, true] {
        let mut asker = login_tagged(port, "bob", 10 + usize::from(leaves_first));
        // MySQL known up again (a request then waits on the stopped server, not fails fast).
        // Asked at most ~5 times a second: the request below must not meet the per-client
        // rate limit (10 a second), which answers at once without a query.
        eventually("history answers", Duration::from_secs(20), || {
            std::thread::sleep(Duration::from_millis(150));
            ask(
                &mut asker,
                json!({"command": "getHistory", "type": "INBOX"}),
            )
            .error()
            .is_empty()
        });
        std::thread::sleep(Duration::from_millis(1100));
        let before = failed(&mut admin);
        db.pause();
        assert!(accepted(asker.publish(
            history::TOPIC,
            json!({"command": "getHistory", "type": "INBOX"}).to_string(),
            false
        )));
        let id = asker.client_id.clone();
        if leaves_first {
            asker.disconnect();
        }
        let mut thief = Mqtt::connect(port, &id, "carol", PASSWORD);
        // The query has ended (failed: MySQL stopped) and its answer was handed over or not.
        let asked = Instant::now();
        while failed(&mut admin) == before {
            assert!(
                asked.elapsed() < Duration::from_secs(10),
                "the request not answered after 10 s (leaves first: {leaves_first}):\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stolen = thief.message_on(history::RESPONSE_TOPIC, QUIET);
        db.resume();
        assert!(stolen.is_none(), "carol got bob's answer: {stolen:?}");
    }
}

fn a_table_without_the_payload_column_still_answers() {
    let db = shared();
    let dbname = history_db(db, "hold");
    // A table from before chat history: no payload column, no history indexes, ids in the
    // table's default (case-insensitive) collation.
    db.root_exec(&format!(
        "ALTER TABLE `{dbname}`.messages DROP COLUMN payload, DROP KEY messages_history_to, \
         DROP KEY messages_history_pair, MODIFY from_id VARCHAR(64) NOT NULL, \
         MODIFY to_id VARCHAR(64) NOT NULL"
    ));
    let spool = fresh_dir("spool");
    let broker = history_broker(db, &dbname, &spool, "");
    let (mut alice, mut bob) = (
        login_tagged(broker.port, "alice", 5),
        login_tagged(broker.port, "bob", 5),
    );
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "old table"),
        false
    )));
    let delivered: Value =
        serde_json::from_slice(&bob.message_on("/users/2/messages", SOON).unwrap().payload)
            .unwrap();
    eventually("stored without the payload", SOON, || {
        count(db, &dbname) == 1
    });
    // A row to '2 ': equal to bob's '2' in this table's collation (PAD SPACE), not his.
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.messages (message_id, type, from_id, to_id, content, topic, \
         qos, client_id, server_ts) VALUES ('loose', 'CHAT', '1', '2 ', 'loose', '/t', 1, 'x', 1)"
    ));
    let answer = ask(&mut bob, json!({"command": "getHistory", "type": "INBOX"}));
    assert_eq!(answer.messages.len(), 1, "{:?}", answer.item);
    let rebuilt: Value = serde_json::from_str(&answer.messages[0]).unwrap();
    assert_eq!(rebuilt, delivered, "rebuilt from the columns");
    assert!(
        broker.log().contains("no payload column"),
        "{}",
        broker.log()
    );
    // The upgrade script brings it to what history reads; new rows keep their payload.
    let upgrade = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto-conf/history-upgrade.sql"),
    )
    .unwrap();
    db.root_exec(&format!("USE `{dbname}`; {upgrade}"));
    let collations = db.root_column(&format!(
        "SELECT DISTINCT collation_name FROM information_schema.columns WHERE table_schema = \
         '{dbname}' AND table_name = 'messages' AND column_name IN ('from_id', 'to_id')"
    ));
    assert_eq!(collations, ["utf8mb4_bin"]);
    // Noticed at the next start: new rows keep their payload, answered byte for byte (the
    // old row still rebuilt), each branch on its history index.
    drop((alice, bob));
    drop(broker);
    let broker = history_broker(db, &dbname, &spool, "");
    let (mut alice, mut bob) = (
        login_tagged(broker.port, "alice", 6),
        login_tagged(broker.port, "bob", 6),
    );
    assert_eq!(bob.subscribe("/users/2/messages"), 1);
    assert!(accepted(alice.publish(
        "/users/2/messages",
        chat("CHAT", 1, 2, "upgraded table"),
        false
    )));
    let delivered = bob.message_on("/users/2/messages", SOON).unwrap().payload;
    eventually("stored with the payload", SOON, || count(db, &dbname) == 3);
    let payloads = db.root_column(&format!("SELECT COUNT(payload) FROM `{dbname}`.messages"));
    assert_eq!(payloads, ["1"]);
    let answer = ask(&mut bob, json!({"command": "getHistory", "type": "INBOX"}));
    assert_eq!(answer.messages.len(), 2, "{:?}", answer.item);
    assert_eq!(
        answer.messages[0].as_bytes(),
        &delivered[..],
        "newest, as delivered"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&answer.messages[1]).unwrap(),
        rebuilt
    );
    assert!(
        !broker.log().contains("no payload column"),
        "{}",
        broker.log()
    );
}

/// The broker's peak resident memory so far (`VmHWM`).
fn peak_rss_kib(broker: &Broker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A 50 MB history request (a million commands) and a 20 MB chat message: the request is
/// answered with the size refusal, unread, the message refused by its length; meanwhile a
/// probe's chat round trips stay under 1 s, and the broker's memory peaks less than 200 MiB
/// above where it was (Mosquitto itself holds each PUBLISH it reads). Before, a 48 MiB
/// request grew the broker by 731 MiB and held its thread 1.6 s.
fn huge_requests_are_refused_unread() {
    let db = shared();
    let dbname = history_db(db, "hhuge");
    let spool = fresh_dir("spool");
    // Mosquitto 2.1 refuses packets over 2,000,000 bytes by default (2.0: no limit): the
    // limit is lifted so that the plugin's own bound is what is tried.
    let broker = history_broker(db, &dbname, &spool, "max_packet_size 100000000\n");
    let port = broker.port;
    let mut carol = login_tagged(port, "carol", 6);
    let command = r#"{"command":"getHistory","type":"INBOX","limit":5},"#;
    let mut request = String::from(r#"{"commands":["#);
    while request.len() < 50_000_000 {
        request.push_str(command);
    }
    request.pop();
    request.push_str("]}");
    let huge_chat = chat("CHAT", 3, 2, &"x".repeat(20_000_000));
    let before = rss_kib(&broker);
    let worst = probe_round_trips(port, || {
        let asked = Instant::now();
        assert!(accepted(carol.publish(history::TOPIC, request, false)));
        let answer = carol
            .message_on(history::RESPONSE_TOPIC, SOON)
            .expect("an answer to the huge request");
        let answer = Answer::read(&answer.payload);
        println!(
            "50 MB request answered in {:?}: {:?}",
            asked.elapsed(),
            answer.item
        );
        assert!(
            answer.error().starts_with("request of 5000")
                && answer.error().contains(
                    "refused unread: at most 4096 bytes (auth_opt_history_max_request_kb)"
                ),
            "{:?}",
            answer.item
        );
        assert!(!accepted(carol.publish(
            "/users/2/messages",
            huge_chat,
            false
        )));
    });
    let peak = peak_rss_kib(&broker);
    let grew_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "huge requests: worst probe round trip {worst:?}; broker RSS {before} kB, peak {peak} kB (+{grew_mib:.0} MiB)"
    );
    assert!(worst < Duration::from_secs(1), "worst round trip {worst:?}");
    assert!(grew_mib < 200.0, "the broker grew by {grew_mib:.0} MiB");
    // Nothing of carol's was stored (the probe's messages were), and a request of ordinary
    // size is still answered.
    let carols = db.root_column(&format!(
        "SELECT COUNT(*) FROM `{dbname}`.messages WHERE from_id = '3'"
    ));
    assert_eq!(carols, ["0"]);
    let answer = ask(
        &mut carol,
        json!({"command": "getHistory", "type": "INBOX"}),
    );
    assert!(answer.error().is_empty(), "{:?}", answer.item);
}
