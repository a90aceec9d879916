//! The `$CONTROL` message format Mosquitto's own APIs use, shared by the administrative
//! commands (`control`) and chat history (`history`): a list of commands in, one
//! `{"responses":[...]}` answer per command out, to the client that asked.
//!
//! A request is bounded before it is read: one larger than its API's size limit is refused
//! unread, and reading keeps only what the API uses (the commands' places in the payload,
//! each command's members its reader names, unparsed): memory stays a small multiple of the
//! limit whatever the payload's shape.

use crate::action::{Action, Reply};
use crate::chat::json::Key;
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The largest requests read, in bytes (`control_max_request_kb`, `history_max_request_kb`):
/// a larger one is refused unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub control: usize,
    pub history: usize,
}

/// What one API accepts in a message.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Commands per message.
    pub commands: usize,
    /// Bytes per message; a larger one is refused unread.
    pub bytes: usize,
    /// The option that sets `bytes`, named in the refusal.
    pub option: &'static str,
    /// The members of a command its reader looks at (beside `command` and
    /// `correlationData`); the rest are skipped unread.
    pub members: &'static [&'static str],
}

/// One command of a message: the members its reader named, unparsed (the last one of a
/// repeated key, as a JSON reader keeps).
#[derive(Debug, Default)]
pub struct Body<'a> {
    members: Vec<(&'static str, &'a RawValue)>,
}

impl<'a> Body<'a> {
    fn set(&mut self, key: &'static str, raw: &'a RawValue) {
        match self.members.iter_mut().find(|(k, _)| *k == key) {
            Some(member) => member.1 = raw,
            None => self.members.push((key, raw)),
        }
    }

    /// The member's JSON text.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, raw)| raw.get())
    }

    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// The member, when it is a JSON string (borrowed unless it holds escapes).
    pub fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.raw(key)?;
        if !raw.starts_with('"') {
            return None;
        }
        match serde_json::from_str::<&str>(raw) {
            Ok(text) => Some(Cow::Borrowed(text)),
            Err(_) => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
        }
    }

    /// The member, when it is a JSON number.
    pub fn number(&self, key: &str) -> Option<serde_json::Number> {
        serde_json::from_str(self.raw(key)?).ok()
    }

    pub fn is_null(&self, key: &str) -> bool {
        self.raw(key) == Some("null")
    }
}

/// Each command of a message (or why it cannot be read), with its reply.
pub type Parsed<'a> = Vec<(Result<Body<'a>, String>, Reply)>;

/// The commands of a control message, `{"commands":[...]}` or a single `{"command":...}`,
/// each with the reply it gets (`base` with the command's name and `correlationData`).
/// `Err` when the message is larger than `bounds.bytes` (not read at all), not a command
/// list, or holds more than `bounds.commands`; a command's own `Err` when its
/// `correlationData` is neither a string nor a number (echoed as it is, the others would
/// cost the broker a tree).
pub fn commands<'a>(
    payload: &'a [u8],
    base: &Reply,
    bounds: &Bounds,
) -> Result<Parsed<'a>, String> {
    if payload.len() > bounds.bytes {
        return Err(format!(
            "request of {} bytes refused unread: at most {} bytes ({})",
            payload.len(),
            bounds.bytes,
            bounds.option
        ));
    }
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(payload) {
            Ok(_) => "expected {\"commands\":[...]}".into(),
            Err(e) => format!("payload is not JSON: {e}"),
        });
    }
    let mut reader = serde_json::Deserializer::from_slice(payload);
    let message = Message { bounds }
        .deserialize(&mut reader)
        .and_then(|message| reader.end().map(|()| message))
        .map_err(|e| format!("payload is not JSON: {e}"))?;
    let bodies: Vec<Body<'a>> = match message {
        Read::List(list, count) => {
            if count > bounds.commands {
                return Err(format!("at most {} commands per message", bounds.commands));
            }
            list.into_iter()
                .map(|raw| body(raw.get(), bounds))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("payload is not JSON: {e}"))?
        }
        Read::NotAList => return Err("\"commands\" must be an array".into()),
        Read::Single(body) if body.has("command") => vec![body],
        Read::Single(_) => return Err("expected {\"commands\":[...]}".into()),
    };
    Ok(bodies
        .into_iter()
        .map(|body| {
            let mut reply = base.clone();
            reply.command = body.text("command").unwrap_or_default().into_owned();
            let correlation = match body.raw("correlationData") {
                None => Ok(None),
                Some(raw) if raw.starts_with(['[', '{']) => Err(
                    "\"correlationData\" must be a string or a number (or true, false, null)"
                        .to_string(),
                ),
                Some(raw) => serde_json::from_str::<Value>(raw)
                    .map(Some)
                    .map_err(|e| e.to_string()),
            };
            match correlation {
                Ok(correlation) => {
                    reply.correlation = correlation;
                    (Ok(body), reply)
                }
                Err(why) => (Err(why), reply),
            }
        })
        .collect())
}

/// A message as read: its command list (each command's place in the payload), or the
/// message itself as its one command.
enum Read<'a> {
    /// The first commands (at most one more than allowed), and how many there are.
    List(Vec<&'a RawValue>, usize),
    NotAList,
    Single(Body<'a>),
}

struct Message<'b> {
    bounds: &'b Bounds,
}

impl<'de> DeserializeSeed<'de> for Message<'_> {
    type Value = Read<'de>;
    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Read<'de>, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = Read<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read<'de>, A::Error> {
        let mut list = None;
        let mut single = Body::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == "commands" {
                let raw: &'de RawValue = map.next_value()?;
                list = Some(if raw.get().starts_with('[') {
                    let mut items = serde_json::Deserializer::from_str(raw.get());
                    let limit = self.bounds.commands + 1;
                    let (first, count) = List { limit }
                        .deserialize(&mut items)
                        .map_err(serde::de::Error::custom)?;
                    Read::List(first, count)
                } else {
                    Read::NotAList
                });
            } else if let Some(wanted) = wanted(&key.0, self.bounds) {
                single.set(wanted, map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(list.unwrap_or(Read::Single(single)))
    }
}

/// A command list: the places of its first `limit` items, and how many there are.
struct List {
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for List {
    type Value = (Vec<&'de RawValue>, usize);
    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List {
    type Value = (Vec<&'de RawValue>, usize);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let (mut list, mut count) = (Vec::new(), 0);
        while let Some(raw) = items.next_element::<&'de RawValue>()? {
            if list.len() < self.limit {
                list.push(raw);
            }
            count += 1;
        }
        Ok((list, count))
    }
}

/// The member name a reader wants, as the table spells it.
fn wanted(key: &str, bounds: &Bounds) -> Option<&'static str> {
    ["command", "correlationData"]
        .into_iter()
        .chain(bounds.members.iter().copied())
        .find(|wanted| *wanted == key)
}

/// One command's wanted members (a command that is not an object has none).
fn body<'a>(raw: &'a str, bounds: &Bounds) -> Result<Body<'a>, serde_json::Error> {
    if !raw.starts_with('{') {
        return Ok(Body::default());
    }
    struct Members<'b>(&'b Bounds);
    impl<'de> Visitor<'de> for Members<'_> {
        type Value = Body<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body<'de>, A::Error> {
            let mut body = Body::default();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                match wanted(&key.0, self.0) {
                    Some(wanted) => body.set(wanted, map.next_value()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(body)
        }
    }
    serde_json::Deserializer::from_str(raw).deserialize_map(Members(bounds))
}

/// The answer to one command, to the client that asked.
pub fn answer(reply: &Reply, outcome: Result<Option<Value>, String>) -> Action {
    answer_with(reply, outcome)
}

/// The same with any data (a history page, raw JSON).
pub fn answer_with<T: Serialize>(reply: &Reply, outcome: Result<Option<T>, String>) -> Action {
    Action::Publish {
        client_id: reply.client_id.clone(),
        topic: reply.topic.clone(),
        payload: response(reply, outcome),
        correlation_data: reply.correlation_data.clone(),
    }
}

/// The answer to one command: `Ok(data)` or `Err(error)`.
pub fn response<T: Serialize>(reply: &Reply, outcome: Result<Option<T>, String>) -> Vec<u8> {
    let (data, error) = match outcome {
        Ok(data) => (data, None),
        Err(error) => (None, Some(error)),
    };
    let item = Response {
        command: &reply.command,
        correlation: reply.correlation.as_ref(),
        data,
        error,
    };
    serde_json::to_vec(&Responses { responses: [item] }).unwrap_or_default()
}

#[derive(Serialize)]
struct Responses<'a, T: Serialize> {
    responses: [Response<'a, T>; 1],
}

/// One answer: `data` (verbatim, also when it holds raw JSON) or `error`.
#[derive(Serialize)]
struct Response<'a, T: Serialize> {
    command: &'a str,
    #[serde(rename = "correlationData", skip_serializing_if = "Option::is_none")]
    correlation: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOUNDS: Bounds = Bounds {
        commands: 3,
        bytes: 1024,
        option: "auth_opt_x_max_request_kb",
        members: &["username", "limit"],
    };

    fn read(payload: &str) -> Result<Parsed<'_>, String> {
        commands(payload.as_bytes(), &Reply::to("c", "r"), &BOUNDS)
    }

    #[test]
    fn a_request_over_the_size_limit_is_refused_unread() {
        // Not even JSON: refused for its size before anything is read.
        let big = "x".repeat(BOUNDS.bytes + 1);
        assert_eq!(
            read(&big).map(|c| c.len()),
            Err("request of 1025 bytes refused unread: at most 1024 bytes \
                 (auth_opt_x_max_request_kb)"
                .into())
        );
        let mut exact = r#"{"command":"a","pad":""#.to_string();
        exact.push_str(&" ".repeat(BOUNDS.bytes - exact.len() - 2));
        exact.push_str("\"}");
        assert_eq!(exact.len(), BOUNDS.bytes);
        assert_eq!(read(&exact).map(|c| c.len()), Ok(1));
    }

    #[test]
    fn commands_keep_only_the_members_their_reader_names() {
        let parsed = read(
            r#"{"other":[1,2,{"commands":5}],"commands":[
                {"command":"a","username":"al\u0069ce","ignored":{"deep":[[[]]]},"correlationData":7},
                {"command":"b","limit":5,"limit":6,"username":17,"correlationData":"c-\n"},
                ["not an object"]]}"#,
        )
        .unwrap();
        let (a, reply) = &parsed[0];
        let a = a.as_ref().unwrap();
        assert_eq!(a.text("username").as_deref(), Some("alice"));
        assert!(!a.has("ignored"), "not named: not kept");
        assert_eq!(
            (reply.command.as_str(), &reply.correlation),
            ("a", &Some(json!(7)))
        );
        assert_eq!(reply.client_id, "c");
        let (b, reply) = &parsed[1];
        let b = b.as_ref().unwrap();
        assert_eq!(
            b.number("limit").and_then(|n| n.as_u64()),
            Some(6),
            "the last one"
        );
        assert_eq!(b.text("username"), None, "not a string");
        assert_eq!(
            b.number("username").map(|n| n.to_string()),
            Some("17".into())
        );
        assert_eq!(reply.correlation, Some(json!("c-\n")));
        let (c, reply) = &parsed[2];
        assert!(!c.as_ref().unwrap().has("command"));
        assert_eq!(reply.command, "");
        // A single command is the message itself.
        let single = read(r#"{"command":"a","username":null}"#).unwrap();
        assert!(single[0].0.as_ref().unwrap().is_null("username"));
    }

    #[test]
    fn what_is_not_a_command_list_is_refused_as_a_whole() {
        let error = |payload: &str| read(payload).map(|c| c.len()).unwrap_err();
        assert!(error("not json").starts_with("payload is not JSON"));
        assert!(error(r#"{"commands":[{}],"x":}"#).starts_with("payload is not JSON"));
        assert!(error(r#"{"commands":[{}]} trailing"#).starts_with("payload is not JSON"));
        assert_eq!(error("[1,2]"), "expected {\"commands\":[...]}");
        assert_eq!(
            error(r#"{"username":"a"}"#),
            "expected {\"commands\":[...]}"
        );
        assert_eq!(error(r#"{"commands":{}}"#), "\"commands\" must be an array");
        assert_eq!(
            error(r#"{"commands":[1,2,3,4]}"#),
            "at most 3 commands per message"
        );
        assert_eq!(read(r#"{"commands":[]}"#).map(|c| c.len()), Ok(0));
    }

    #[test]
    fn a_correlation_that_is_a_tree_is_refused_per_command() {
        let parsed = read(
            r#"{"commands":[{"command":"a","correlationData":[1]},
                {"command":"b","correlationData":{"x":1}},{"command":"c","correlationData":true}]}"#,
        )
        .unwrap();
        assert!(
            parsed[0]
                .0
                .as_ref()
                .unwrap_err()
                .contains("correlationData")
        );
        assert!(parsed[1].0.is_err());
        assert_eq!(parsed[1].1.command, "b");
        assert_eq!(parsed[1].1.correlation, None);
        assert_eq!(parsed[2].1.correlation, Some(json!(true)));
    }
}
