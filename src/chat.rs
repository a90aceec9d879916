//! Chat payloads: validation and stamping, as pure functions over bytes.
//!
//! `{"type":"CHAT"|"GROUPCHAT","fromId":..,"toId":..,"content":".."}` (extra fields kept).
//! Ids are JSON integers or strings, compared by their decimal text. The broker adds `"id"`
//! (a UUIDv7: unique, sortable by time) and `"ts"` (server time, ms).

use serde_json::Value;
use std::fmt;

/// Longest id (user, group, message) the `messages` table holds.
pub const MAX_ID_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `CHAT` on an inbox topic.
    Chat,
    /// `GROUPCHAT` on a group topic.
    GroupChat,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "CHAT",
            Kind::GroupChat => "GROUPCHAT",
        }
    }
}

/// Who sent the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender<'a> {
    /// An ordinary client: `fromId` must be its user id; `id`/`ts` are always the broker's.
    User(&'a str),
    /// A superuser or a bridge peer: may send as anyone and keeps an `id` it brings.
    Trusted,
}

/// Why a chat payload was refused (logged at debug level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    TooLarge(usize),
    NotJson(String),
    NotObject,
    WrongType { expected: &'static str },
    BadId(&'static str),
    ToIdMismatch,
    FromIdMismatch,
    Content(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::TooLarge(n) => write!(f, "payload of {n} bytes is too large"),
            Invalid::NotJson(e) => write!(f, "payload is not JSON ({e})"),
            Invalid::NotObject => f.write_str("payload is not a JSON object"),
            Invalid::WrongType { expected } => {
                write!(f, "\"type\" must be \"{expected}\" on this topic")
            }
            Invalid::BadId(field) => write!(
                f,
                "\"{field}\" must be an integer or a non-empty string of at most \
                 {MAX_ID_BYTES} bytes"
            ),
            Invalid::ToIdMismatch => f.write_str("\"toId\" is not the topic's id"),
            Invalid::FromIdMismatch => f.write_str("\"fromId\" is not the sender's user id"),
            Invalid::Content(why) => write!(f, "\"content\" {why}"),
        }
    }
}

/// An accepted message: the payload to deliver, and what to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub payload: Vec<u8>,
    pub message_id: String,
    pub kind: Kind,
    pub from_id: String,
    pub to_id: String,
    pub content: String,
    pub server_ts: i64,
}

/// Validates a chat payload published on a topic of `kind` whose id is `topic_id`, and
/// stamps it. `new_id` is called only when the broker's id is needed.
pub fn accept(
    kind: Kind,
    topic_id: &str,
    payload: &[u8],
    sender: Sender<'_>,
    max_content_bytes: usize,
    now_ms: i64,
    new_id: impl FnOnce() -> String,
) -> Result<Stamped, Invalid> {
    // JSON escapes can take 6 bytes per content byte; anything beyond is not a chat message.
    let limit = max_content_bytes.saturating_mul(6).saturating_add(65_536);
    if payload.len() > limit {
        return Err(Invalid::TooLarge(payload.len()));
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| Invalid::NotJson(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(Invalid::NotObject);
    };
    if object.get("type").and_then(Value::as_str) != Some(kind.name()) {
        return Err(Invalid::WrongType {
            expected: kind.name(),
        });
    }
    let to_id = id_text(object.get("toId")).ok_or(Invalid::BadId("toId"))?;
    if to_id != topic_id {
        return Err(Invalid::ToIdMismatch);
    }
    let from_id = id_text(object.get("fromId")).ok_or(Invalid::BadId("fromId"))?;
    if let Sender::User(user_id) = sender {
        if from_id != user_id {
            return Err(Invalid::FromIdMismatch);
        }
    }
    let content = match object.get("content") {
        Some(Value::String(text)) if text.len() <= max_content_bytes => text.clone(),
        Some(Value::String(text)) => {
            return Err(Invalid::Content(format!(
                "is {} bytes, more than the {max_content_bytes} allowed",
                text.len()
            )));
        }
        _ => return Err(Invalid::Content("must be a string".into())),
    };
    let trusted = sender == Sender::Trusted;
    let message_id = match object.get("id") {
        Some(id) if trusted => message_id(id).ok_or(Invalid::BadId("id"))?,
        _ => new_id(),
    };
    let server_ts = match object.get("ts").and_then(Value::as_i64) {
        Some(ts) if trusted => ts,
        _ => now_ms,
    };
    object.insert("id".into(), Value::String(message_id.clone()));
    object.insert("ts".into(), Value::from(server_ts));
    let payload = serde_json::to_vec(&Value::Object(object)).expect("a JSON map serialises");
    Ok(Stamped {
        payload,
        message_id,
        kind,
        from_id,
        to_id,
        content,
        server_ts,
    })
}

/// An id as text: a JSON integer in decimal, or a string as it is.
fn id_text(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    (!text.is_empty() && text.len() <= MAX_ID_BYTES).then_some(text)
}

/// A message id brought by a trusted sender: printable ASCII that fits the table.
fn message_id(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    (!text.is_empty() && text.len() <= MAX_ID_BYTES && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_string())
}

/// A new message id: a UUIDv7 (48-bit ms timestamp first, so ids sort by time; monotonic
/// within this process).
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    const MAX: usize = 65_536;

    fn fields(payload: &[u8]) -> Option<Map<String, Value>> {
        match serde_json::from_slice(payload).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    fn run(
        kind: Kind,
        topic_id: &str,
        payload: &Value,
        sender: Sender<'_>,
    ) -> Result<Stamped, Invalid> {
        accept(
            kind,
            topic_id,
            payload.to_string().as_bytes(),
            sender,
            MAX,
            1_700_000_000_000,
            || "0190a1b2-0000-7000-8000-000000000001".into(),
        )
    }

    #[test]
    fn a_chat_message_is_stamped_and_keeps_its_fields() {
        let payload =
            json!({"type":"CHAT","fromId":1,"toId":2,"content":"hi \"bob\" \\ ✓","extra":[1]});
        let stamped = run(Kind::Chat, "2", &payload, Sender::User("1")).unwrap();
        assert_eq!(stamped.from_id, "1");
        assert_eq!(stamped.to_id, "2");
        assert_eq!(stamped.content, "hi \"bob\" \\ ✓");
        let out = fields(&stamped.payload).unwrap();
        assert_eq!(out["id"], "0190a1b2-0000-7000-8000-000000000001");
        assert_eq!(out["ts"], 1_700_000_000_000i64);
        assert_eq!(out["extra"], json!([1]));
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["type", "fromId", "toId", "content", "extra", "id", "ts"]
        );
    }

    #[test]
    fn string_ids_compare_by_text() {
        let payload = json!({"type":"GROUPCHAT","fromId":"u-7","toId":"10","content":""});
        assert!(run(Kind::GroupChat, "10", &payload, Sender::User("u-7")).is_ok());
        let number = json!({"type":"GROUPCHAT","fromId":7,"toId":10,"content":"x"});
        assert!(run(Kind::GroupChat, "10", &number, Sender::User("7")).is_ok());
    }

    #[test]
    fn every_kind_of_invalid_payload_is_refused() {
        let base = json!({"type":"CHAT","fromId":1,"toId":2,"content":"x"});
        let with = |key: &str, value: Value| {
            let mut p = base.clone();
            p[key] = value;
            p
        };
        let without = |key: &str| {
            let mut p = base.clone();
            p.as_object_mut().unwrap().remove(key);
            p
        };
        let user = Sender::User("1");
        let cases: Vec<(Value, Invalid)> = vec![
            (
                with("type", json!("GROUPCHAT")),
                Invalid::WrongType { expected: "CHAT" },
            ),
            (without("type"), Invalid::WrongType { expected: "CHAT" }),
            (with("toId", json!(3)), Invalid::ToIdMismatch),
            (with("toId", json!(2.0)), Invalid::BadId("toId")),
            (without("toId"), Invalid::BadId("toId")),
            (with("fromId", json!(9)), Invalid::FromIdMismatch),
            (with("fromId", json!(null)), Invalid::BadId("fromId")),
            (
                with("fromId", json!("x".repeat(65))),
                Invalid::BadId("fromId"),
            ),
            (
                with("content", json!(5)),
                Invalid::Content("must be a string".into()),
            ),
            (
                without("content"),
                Invalid::Content("must be a string".into()),
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                run(Kind::Chat, "2", &payload, user),
                Err(expected),
                "{payload}"
            );
        }
        assert_eq!(
            run(Kind::Chat, "2", &json!([1]), user),
            Err(Invalid::NotObject)
        );
        let not_json = accept(Kind::Chat, "2", b"{\"type\":", user, MAX, 0, String::new);
        assert!(matches!(not_json, Err(Invalid::NotJson(_))));
        let bad_utf8 = accept(
            Kind::Chat,
            "2",
            b"{\"content\":\"\xff\"}",
            user,
            MAX,
            0,
            String::new,
        );
        assert!(matches!(bad_utf8, Err(Invalid::NotJson(_))));
        let long = with("content", json!("é".repeat(MAX / 2 + 1)));
        assert!(matches!(
            run(Kind::Chat, "2", &long, user),
            Err(Invalid::Content(_))
        ));
        let exact = with("content", json!("a".repeat(MAX)));
        assert!(run(Kind::Chat, "2", &exact, user).is_ok());
        let huge = vec![b' '; MAX * 7 + 65_537];
        assert!(matches!(
            accept(Kind::Chat, "2", &huge, user, MAX, 0, String::new),
            Err(Invalid::TooLarge(_))
        ));
    }

    #[test]
    fn only_trusted_senders_keep_their_id_and_send_as_anyone() {
        let payload = json!({"type":"CHAT","fromId":9,"toId":2,"content":"x","id":"peer-1","ts":5});
        let trusted = run(Kind::Chat, "2", &payload, Sender::Trusted).unwrap();
        assert_eq!(trusted.message_id, "peer-1");
        assert_eq!(trusted.server_ts, 5);
        let mut own = payload.clone();
        own["fromId"] = json!(1);
        let user = run(Kind::Chat, "2", &own, Sender::User("1")).unwrap();
        assert_eq!(user.message_id, "0190a1b2-0000-7000-8000-000000000001");
        assert_eq!(user.server_ts, 1_700_000_000_000);
        let mut bad = payload;
        bad["id"] = json!("has space");
        assert_eq!(
            run(Kind::Chat, "2", &bad, Sender::Trusted),
            Err(Invalid::BadId("id"))
        );
    }

    #[test]
    fn message_ids_sort_by_time_and_are_unique() {
        let ids: Vec<String> = (0..1000).map(|_| new_message_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
    }
}
