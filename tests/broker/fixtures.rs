//! Small helpers the broker tests share: the chat broker, logins with the password `chat_db`
//! gives, chat messages, the rows stored and `getStats` as the superuser `admin`.

use crate::acl::{PASSWORD, USERQUERY};
use crate::harness::{Broker, MariaDb};
use crate::mqtt::{Mqtt, accepted};
use serde_json::{Value, json};
use std::fmt::Display;
use std::time::Duration;

/// How long a `getStats` answer may take.
const ANSWER: Duration = Duration::from_secs(10);

/// A broker on `dbname` with the bundled schema's userquery, then `extra` option lines.
pub fn chat_broker(db: &MariaDb, dbname: &str, extra: &str) -> Broker {
    Broker::start(&format!("{}{USERQUERY}{extra}", db.plugin_options(dbname)))
}

/// `user` logged in as the client id `<user>-<this process's id>`.
pub fn login(port: u16, user: &str) -> Mqtt {
    login_tagged(port, user, std::process::id())
}

/// `user` logged in as the client id `<user>-<tag>`.
pub fn login_tagged(port: u16, user: &str, tag: impl Display) -> Mqtt {
    Mqtt::connect(port, &format!("{user}-{tag}"), user, PASSWORD)
}

/// A chat message's JSON payload.
pub fn chat(kind: &str, from: u32, to: u32, content: &str) -> Vec<u8> {
    json!({"type": kind, "fromId": from, "toId": to, "content": content})
        .to_string()
        .into_bytes()
}

/// The `message_id`s of the rows stored in `dbname`, in the order they were written.
pub fn stored_ids(db: &MariaDb, dbname: &str) -> Vec<String> {
    db.root_column(&format!(
        "SELECT message_id FROM `{dbname}`.messages ORDER BY id"
    ))
}

/// The id the broker stamped on a delivered message.
pub fn id_of(payload: &[u8]) -> String {
    let value: Value = serde_json::from_slice(payload).expect("JSON");
    value["id"].as_str().expect("stamped").to_string()
}

/// `getStats`' data, asked on `admin`, a superuser's connection (subscribed to the response
/// topic here).
pub fn stats_on(admin: &mut Mqtt) -> Value {
    assert_eq!(admin.subscribe("$CONTROL/chat-auth/v1/response"), 1);
    let command = json!({"commands": [{"command": "getStats"}]}).to_string();
    assert!(accepted(admin.publish(
        "$CONTROL/chat-auth/v1",
        command,
        false
    )));
    let answer = admin
        .message_on("$CONTROL/chat-auth/v1/response", ANSWER)
        .expect("a getStats answer");
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    answer["responses"][0]["data"].clone()
}

/// `getStats`' data, asked as the superuser `admin` on a connection of its own (client id
/// `admin-stats-<this process's id>`).
pub fn stats(port: u16) -> Value {
    let id = format!("admin-stats-{}", std::process::id());
    stats_on(&mut Mqtt::connect(port, &id, "admin", PASSWORD))
}
