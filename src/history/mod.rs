//! `$CONTROL/chat-history/v1`: a logged-in chat user reads its stored conversations, in the
//! style of Mosquitto's `$CONTROL` APIs.
//!
//! Request: `{"commands":[{"command":"getHistory","type":"CHAT","id":42,"before":"<message
//! id>","limit":50,"correlationData":"x"}]}`. Answer, to the requesting client only, on
//! `$CONTROL/chat-history/v1/response` (or the request's MQTT 5 response topic):
//! `{"responses":[{"command":"getHistory","correlationData":"x","data":{"messages":[...],
//! "more":true}}]}`, each message as it was delivered.
//!
//! This module decides (who may read what, the SQL, the answer, the per-client limits) with
//! data and time passed in; [`reader`] runs the queries on its own threads and connections.

pub mod reader;

use crate::acl::{Access, GroupIds};
use crate::action::Reply;
use crate::chat::{Kind, MAX_ID_BYTES};
use crate::envelope::{self, Body, Bounds};
use mysql::Value as SqlValue;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "$CONTROL/chat-history/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/chat-history/v1/response";

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// More commands than this in one message are refused as a whole (each is a query).
const MAX_COMMANDS: usize = 10;

/// An `INBOX` reads one index range per group: a user in more groups asks per group.
pub const MAX_INBOX_GROUPS: usize = 500;

/// Chat history (`history_*`): reads the storage table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Threads, each with its own MySQL connection.
    pub connections: usize,
    /// Per client.
    pub in_flight: u32,
    /// Per client.
    pub per_second: u32,
    /// The most bytes of messages in one answer.
    pub max_response_bytes: usize,
}

/// Which messages a request reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thread {
    /// The conversation between the requester and this user, both directions.
    Chat(String),
    /// A group's messages (for a current member).
    Group(String),
    /// Every chat message to the requester and to its current groups.
    Inbox,
}

/// Where a page starts (exclusive), by message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// The newest messages, newest first.
    Newest,
    /// Older than this message, newest first.
    Before(String),
    /// Newer than this message, oldest first (catching up).
    After(String),
}

impl Cursor {
    fn message_id(&self) -> Option<&str> {
        match self {
            Cursor::Newest => None,
            Cursor::Before(id) | Cursor::After(id) => Some(id),
        }
    }

    fn oldest_first(&self) -> bool {
        matches!(self, Cursor::After(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub thread: Thread,
    pub cursor: Cursor,
    pub limit: usize,
}

/// Each command of a message: the request (or why it is not one) and its reply.
pub type Commands = Vec<(Result<Request, String>, Reply)>;

/// The commands of one message, each with its reply. `Err`: not a command list at all, or
/// larger than `max_bytes` (`history_max_request_kb`; not read at all).
pub fn parse(payload: &[u8], base: &Reply, max_bytes: usize) -> Result<Commands, String> {
    let bounds = Bounds {
        commands: MAX_COMMANDS,
        bytes: max_bytes,
        option: "auth_opt_history_max_request_kb",
        members: &["type", "id", "before", "after", "limit"],
    };
    Ok(envelope::commands(payload, base, &bounds)?
        .into_iter()
        .map(|(body, reply)| {
            let request = body.and_then(|body| match reply.command.as_str() {
                "getHistory" => request(&body),
                "" => Err("\"command\" (a string) is required".into()),
                other => Err(format!("unknown command '{other}'")),
            });
            (request, reply)
        })
        .collect())
}

fn request(body: &Body<'_>) -> Result<Request, String> {
    let thread = match body.text("type").as_deref() {
        Some("CHAT") => {
            Thread::Chat(id(body, "id")?.ok_or("\"id\" (the other user's id) is required")?)
        }
        Some("GROUPCHAT") => {
            Thread::Group(id(body, "id")?.ok_or("\"id\" (the group's id) is required")?)
        }
        Some("INBOX") => {
            if body.has("id") {
                return Err("\"id\" is not used with INBOX".into());
            }
            Thread::Inbox
        }
        _ => return Err("\"type\" must be \"CHAT\", \"GROUPCHAT\" or \"INBOX\"".into()),
    };
    let cursor = match (message_id(body, "before")?, message_id(body, "after")?) {
        (Some(_), Some(_)) => return Err("give \"before\" or \"after\", not both".into()),
        (Some(id), None) => Cursor::Before(id),
        (None, Some(id)) => Cursor::After(id),
        (None, None) => Cursor::Newest,
    };
    let limit = match body.has("limit") {
        false => DEFAULT_LIMIT,
        true => body
            .number("limit")
            .and_then(|n| n.as_u64())
            .filter(|n| (1..=MAX_LIMIT as u64).contains(n))
            .ok_or_else(|| format!("\"limit\" must be a whole number from 1 to {MAX_LIMIT}"))?
            as usize,
    };
    Ok(Request {
        thread,
        cursor,
        limit,
    })
}

/// A user or group id as the chat payloads carry it: a JSON integer (its decimal text) or
/// a non-empty string of at most 64 bytes that could be a topic level.
fn id(body: &Body<'_>, key: &str) -> Result<Option<String>, String> {
    let text = match (body.has(key), body.text(key), body.number(key)) {
        (false, _, _) => return Ok(None),
        (_, Some(text), _) => text.into_owned(),
        (_, None, Some(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => String::new(),
    };
    let usable =
        !text.is_empty() && text.len() <= MAX_ID_BYTES && !text.contains(['/', '+', '#', '\0']);
    if usable {
        Ok(Some(text))
    } else {
        Err(format!(
            "\"{key}\" must be an integer or a string of 1 to {MAX_ID_BYTES} bytes without \
             '/', '+' or '#'"
        ))
    }
}

fn message_id(body: &Body<'_>, key: &str) -> Result<Option<String>, String> {
    if !body.has(key) || body.is_null(key) {
        return Ok(None);
    }
    match body.text(key) {
        Some(s) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Ok(Some(s.into_owned())),
        _ => Err(format!("\"{key}\" must be a message id (a string)")),
    }
}

/// One index range: the messages of one type to one id (from one sender, for a pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub kind: Kind,
    pub to_id: String,
    pub from_id: Option<String>,
}

/// What a request reads, once it is known to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub branches: Vec<Branch>,
    pub cursor: Cursor,
    pub limit: usize,
}

impl Plan {
    /// Whether a row belongs to one of the plan's ranges, compared byte for byte.
    pub fn reads(&self, message: &StoredMessage) -> bool {
        self.branches.iter().any(|branch| {
            branch.kind.name() == message.kind
                && branch.to_id == message.to_id
                && branch
                    .from_id
                    .as_ref()
                    .is_none_or(|from_id| *from_id == message.from_id)
        })
    }
}

/// Who asks: its chat identity and its current groups (the rules the ACL uses).
pub struct Requester<'a> {
    pub user_id: &'a str,
    pub groups: &'a GroupIds,
}

/// The ranges a request may read: only messages the requester could have subscribed to
/// (its own inbox, what it sent to an inbox, its current groups).
pub fn plan(request: Request, who: &Requester<'_>) -> Result<Plan, String> {
    let me = who.user_id.to_string();
    let chat = |to_id: &str, from_id: &str| Branch {
        kind: Kind::Chat,
        to_id: to_id.to_string(),
        from_id: Some(from_id.to_string()),
    };
    let group = |id: &str| Branch {
        kind: Kind::GroupChat,
        to_id: id.to_string(),
        from_id: None,
    };
    let branches = match &request.thread {
        Thread::Chat(other) if *other == me => vec![chat(&me, &me)],
        Thread::Chat(other) => vec![chat(other, &me), chat(&me, other)],
        Thread::Group(id) if who.groups.contains(id) => vec![group(id)],
        Thread::Group(id) => return Err(format!("not a member of group '{id}'")),
        Thread::Inbox => {
            if who.groups.len() > MAX_INBOX_GROUPS {
                return Err(format!(
                    "member of more than {MAX_INBOX_GROUPS} groups: ask per GROUPCHAT"
                ));
            }
            let mut branches = vec![Branch {
                kind: Kind::Chat,
                to_id: me.clone(),
                from_id: None,
            }];
            branches.extend(who.groups.iter().map(group));
            branches
        }
    };
    Ok(Plan {
        branches,
        cursor: request.cursor,
        limit: request.limit,
    })
}

/// The columns a page reads, in order (`payload` last, when the table has it).
const PAGE_COLUMNS: &str = "id, message_id, type, from_id, to_id, content, server_ts";

/// The indexes of `schema.sql` a page reads: one recipient's messages of one type, and one
/// sender's to one recipient (InnoDB appends `id` to both, so either gives a range in `id`
/// order).
pub const INDEX_TO: &str = "messages_history_to";
pub const INDEX_PAIR: &str = "messages_history_pair";

/// What the messages table has (asked once by the reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableShape {
    /// The `payload` column (the message as delivered).
    pub payload: bool,
    /// The history indexes: each branch is then told which to read (`FORCE INDEX`), so a
    /// page is a range scan whatever the statistics say.
    pub indexes: bool,
}

/// The row id of the cursor's message.
pub fn cursor_sql(table: &str) -> String {
    format!("SELECT id FROM {table} WHERE message_id = ?")
}

/// One page: each branch an index range scan of at most `limit + 1` rows past the cursor's
/// row id, merged. `table` is already quoted.
pub fn page_sql(
    table: &str,
    plan: &Plan,
    position: Option<u64>,
    shape: TableShape,
) -> (String, Vec<SqlValue>) {
    let (direction, comparison) = if plan.cursor.oldest_first() {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    let columns = if shape.payload {
        format!("{PAGE_COLUMNS}, payload")
    } else {
        PAGE_COLUMNS.to_string()
    };
    let rows = plan.limit + 1;
    let mut values = Vec::new();
    let branch_sql: Vec<String> = plan
        .branches
        .iter()
        .map(|branch| {
            let hint = match (shape.indexes, &branch.from_id) {
                (false, _) => String::new(),
                (true, Some(_)) => format!(" FORCE INDEX ({INDEX_PAIR})"),
                (true, None) => format!(" FORCE INDEX ({INDEX_TO})"),
            };
            // Each id twice: `=` in the column's collation reads the index range, the
            // binary comparison keeps only the same bytes (a PAD SPACE or case-insensitive
            // collation equates '2 ' or 'Bob' with '2' or 'bob'), before the LIMIT.
            let mut sql = format!(
                "SELECT {columns} FROM {table}{hint} WHERE type = ? AND to_id = ? AND \
                 CAST(to_id AS BINARY) = ?"
            );
            values.push(SqlValue::from(branch.kind.name()));
            values.push(SqlValue::from(branch.to_id.as_str()));
            values.push(SqlValue::Bytes(branch.to_id.clone().into_bytes()));
            if let Some(from_id) = &branch.from_id {
                sql.push_str(" AND from_id = ? AND CAST(from_id AS BINARY) = ?");
                values.push(SqlValue::from(from_id.as_str()));
                values.push(SqlValue::Bytes(from_id.clone().into_bytes()));
            }
            if let Some(position) = position {
                sql.push_str(&format!(" AND id {comparison} ?"));
                values.push(SqlValue::from(position));
            }
            sql.push_str(&format!(" ORDER BY id {direction} LIMIT {rows}"));
            sql
        })
        .collect();
    let sql = if branch_sql.len() == 1 {
        branch_sql.into_iter().next().unwrap_or_default()
    } else {
        format!(
            "SELECT * FROM ({}) AS page ORDER BY id {direction} LIMIT {rows}",
            branch_sql
                .iter()
                .map(|b| format!("({b})"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        )
    };
    (sql, values)
}

/// A stored message as a page reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: String,
    pub kind: String,
    pub from_id: String,
    pub to_id: String,
    pub content: String,
    pub server_ts: i64,
    /// The payload as delivered (`None`: a table without the column, or a row written
    /// before it had one).
    pub payload: Option<String>,
}

impl StoredMessage {
    /// The message as it was delivered: the stored payload, or (without one) the message
    /// rebuilt from its columns, ids as JSON integers where they are decimal integers.
    fn delivered(&self) -> Box<RawValue> {
        if let Some(raw) = self
            .payload
            .as_deref()
            .and_then(|p| RawValue::from_string(p.to_string()).ok())
        {
            return raw;
        }
        let id = |text: &str| match text.parse::<i64>() {
            Ok(n) if n.to_string() == text => Value::from(n),
            _ => Value::from(text),
        };
        let rebuilt = serde_json::json!({
            "type": self.kind,
            "fromId": id(&self.from_id),
            "toId": id(&self.to_id),
            "content": self.content,
            "id": self.message_id,
            "ts": self.server_ts,
        });
        serde_json::value::to_raw_value(&rebuilt).expect("a JSON value serialises")
    }
}

/// One page as `data`: `{"messages":[...],"more":bool}`.
#[derive(Serialize)]
pub struct Page {
    messages: Vec<Box<RawValue>>,
    more: bool,
}

/// The page from the rows read (`limit + 1` at most, in page order): at most `limit`
/// messages and `max_bytes` of them (one at least), `more` when rows were left out.
pub fn page(rows: &[StoredMessage], limit: usize, max_bytes: usize) -> Page {
    let mut messages = Vec::with_capacity(rows.len().min(limit));
    let mut bytes = 0;
    for row in rows.iter().take(limit) {
        let message = row.delivered();
        bytes += message.get().len() + 1;
        if bytes > max_bytes && !messages.is_empty() {
            break;
        }
        messages.push(message);
    }
    let more = rows.len() > messages.len();
    Page { messages, more }
}

/// Per-client limits: requests in flight and requests per second. Memory stays bounded:
/// a client's entry goes when it has nothing in flight and its second is over.
#[derive(Debug)]
pub struct Limits {
    max_in_flight: u32,
    per_second: u32,
    clients: HashMap<Box<[u8]>, Budget>,
    /// The size at which idle clients are next dropped (twice what the last sweep left, so
    /// sweeping costs O(1) per request on average).
    prune_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    in_flight: u32,
    window: Instant,
    in_window: u32,
}

/// Clients tracked before the ones with nothing pending are dropped.
const LIMITS_PRUNE_AT: usize = 4_096;

impl Limits {
    pub fn new(max_in_flight: u32, per_second: u32) -> Limits {
        Limits {
            max_in_flight,
            per_second,
            clients: HashMap::new(),
            prune_at: LIMITS_PRUNE_AT,
        }
    }

    /// Takes one request of `client_id`, or says why not.
    pub fn admit(&mut self, client_id: &[u8], now: Instant) -> Result<(), String> {
        if self.clients.len() >= self.prune_at {
            self.clients.retain(|_, b| {
                b.in_flight > 0 || now.duration_since(b.window) < Duration::from_secs(1)
            });
            self.prune_at = (self.clients.len() * 2).max(LIMITS_PRUNE_AT);
        }
        let budget = self.clients.entry(client_id.into()).or_insert(Budget {
            in_flight: 0,
            window: now,
            in_window: 0,
        });
        if now.duration_since(budget.window) >= Duration::from_secs(1) {
            budget.window = now;
            budget.in_window = 0;
        }
        if budget.in_window >= self.per_second {
            return Err(format!(
                "too many requests: at most {} per second per client",
                self.per_second
            ));
        }
        if budget.in_flight >= self.max_in_flight {
            return Err(format!(
                "too many requests in flight: at most {} per client",
                self.max_in_flight
            ));
        }
        budget.in_window += 1;
        budget.in_flight += 1;
        Ok(())
    }

    /// A request of `client_id` was answered.
    pub fn done(&mut self, client_id: &[u8]) {
        if let Some(budget) = self.clients.get_mut(client_id) {
            budget.in_flight = budget.in_flight.saturating_sub(1);
        }
    }

    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

/// The API's own topics a chat user is granted: publishing requests, and receiving (and
/// subscribing to) the answers.
pub fn granted(topic: &str, access: Access) -> bool {
    match access {
        Access::Write => topic == TOPIC,
        Access::Read | Access::Subscribe => topic == RESPONSE_TOPIC,
        Access::Unsubscribe => false,
    }
}

/// The request's MQTT 5 response topic and correlation data, as the broker gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseTo {
    pub topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
}

/// Whether a topic may carry answers to this client: the API's response topic, or an MQTT 5
/// response topic the client may read that is not a chat topic, not another `$` topic, and
/// a valid topic to publish to.
pub fn valid_response_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 65_535
        && !topic.contains(['+', '#', '\0'])
        && (topic == RESPONSE_TOPIC || !topic.starts_with('$'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `history_max_request_kb`'s default.
    const LIMIT: usize = 4 * 1024;

    fn one(payload: &str) -> Result<Request, String> {
        let base = Reply::to("c", RESPONSE_TOPIC);
        let mut parsed = parse(payload.as_bytes(), &base, LIMIT)?;
        assert_eq!(parsed.len(), 1);
        parsed.remove(0).0
    }

    #[test]
    fn requests_are_read_with_their_defaults_and_bounds() {
        assert_eq!(
            one(
                r#"{"commands":[{"command":"getHistory","type":"CHAT","id":42,"before":"m1","limit":10}]}"#
            ),
            Ok(Request {
                thread: Thread::Chat("42".into()),
                cursor: Cursor::Before("m1".into()),
                limit: 10
            })
        );
        assert_eq!(
            one(r#"{"command":"getHistory","type":"INBOX","after":"m9"}"#),
            Ok(Request {
                thread: Thread::Inbox,
                cursor: Cursor::After("m9".into()),
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            one(r#"{"command":"getHistory","type":"GROUPCHAT","id":"g-7"}"#).map(|r| r.thread),
            Ok(Thread::Group("g-7".into()))
        );
        for bad in [
            r#"{"command":"getHistory","type":"CHAT"}"#,
            r#"{"command":"getHistory","type":"CHAT","id":"+"}"#,
            r##"{"command":"getHistory","type":"CHAT","id":"#"}"##,
            r#"{"command":"getHistory","type":"CHAT","id":"1/2"}"#,
            r#"{"command":"getHistory","type":"CHAT","id":1.5}"#,
            r#"{"command":"getHistory","type":"CHAT","id":""}"#,
            r#"{"command":"getHistory","type":"CHAT","id":[1]}"#,
            r#"{"command":"getHistory","type":"GROUPCHAT"}"#,
            r#"{"command":"getHistory","type":"INBOX","id":3}"#,
            r#"{"command":"getHistory","type":"ALL"}"#,
            r#"{"command":"getHistory","type":"CHAT","id":2,"limit":201}"#,
            r#"{"command":"getHistory","type":"CHAT","id":2,"limit":0}"#,
            r#"{"command":"getHistory","type":"CHAT","id":2,"limit":1e9}"#,
            r#"{"command":"getHistory","type":"CHAT","id":2,"limit":"5"}"#,
            r#"{"command":"getHistory","type":"CHAT","id":2,"before":"a","after":"b"}"#,
            r#"{"command":"getHistory","type":"CHAT","id":2,"before":7}"#,
            r#"{"command":"dropTable"}"#,
        ] {
            assert!(one(bad).is_err(), "{bad}");
        }
        let base = Reply::to("c", RESPONSE_TOPIC);
        assert!(parse(b"not json", &base, LIMIT).is_err());
        let eleven = format!(
            "{{\"commands\":[{}]}}",
            [r#"{"command":"getHistory","type":"INBOX"}"#; 11].join(",")
        );
        assert!(parse(eleven.as_bytes(), &base, LIMIT).is_err());
        // 48 MiB once grew the broker by 731 MiB before this answer: now refused unread.
        let huge = format!("{{\"commands\":[{}]}}", "{},".repeat(LIMIT / 3));
        assert_eq!(
            parse(huge.as_bytes(), &base, LIMIT).map(|c| c.len()),
            Err(format!(
                "request of {} bytes refused unread: at most 4096 bytes \
                 (auth_opt_history_max_request_kb)",
                huge.len()
            ))
        );
    }

    /// The newest page of five of `thread`.
    fn request(thread: Thread) -> Request {
        Request {
            thread,
            cursor: Cursor::Newest,
            limit: 5,
        }
    }

    #[test]
    fn a_request_reads_only_what_the_requester_could_subscribe_to() {
        let groups: GroupIds = ["10", "11"].into_iter().collect();
        let who = Requester {
            user_id: "7",
            groups: &groups,
        };
        let pair = plan(request(Thread::Chat("42".into())), &who).unwrap();
        assert_eq!(
            pair.branches,
            [
                Branch {
                    kind: Kind::Chat,
                    to_id: "42".into(),
                    from_id: Some("7".into())
                },
                Branch {
                    kind: Kind::Chat,
                    to_id: "7".into(),
                    from_id: Some("42".into())
                }
            ],
            "both directions, and nothing else of user 42's inbox"
        );
        assert_eq!(
            plan(request(Thread::Chat("7".into())), &who)
                .unwrap()
                .branches
                .len(),
            1
        );
        assert!(plan(request(Thread::Group("10".into())), &who).is_ok());
        assert_eq!(
            plan(request(Thread::Group("12".into())), &who),
            Err("not a member of group '12'".into())
        );
        let inbox = plan(request(Thread::Inbox), &who).unwrap();
        let targets: Vec<(&str, &str, bool)> = inbox
            .branches
            .iter()
            .map(|b| (b.kind.name(), b.to_id.as_str(), b.from_id.is_some()))
            .collect();
        assert_eq!(
            targets,
            [
                ("CHAT", "7", false),
                ("GROUPCHAT", "10", false),
                ("GROUPCHAT", "11", false)
            ]
        );
    }

    #[test]
    fn pages_are_index_ranges_with_every_value_bound() {
        let groups = GroupIds::default();
        let who = Requester {
            user_id: "7",
            groups: &groups,
        };
        let pair = plan(
            Request {
                thread: Thread::Chat("x' OR 1=1 --".into()),
                cursor: Cursor::After("m".into()),
                limit: 3,
            },
            &who,
        )
        .unwrap();
        let full = TableShape {
            payload: true,
            indexes: true,
        };
        let (sql, values) = page_sql("`messages`", &pair, Some(99), full);
        assert_eq!(
            sql,
            "SELECT * FROM ((SELECT id, message_id, type, from_id, to_id, content, server_ts, \
             payload FROM `messages` FORCE INDEX (messages_history_pair) WHERE type = ? AND \
             to_id = ? AND CAST(to_id AS BINARY) = ? AND from_id = ? AND CAST(from_id AS \
             BINARY) = ? AND id > ? ORDER BY id ASC LIMIT 4) UNION ALL (SELECT id, message_id, \
             type, from_id, to_id, content, server_ts, payload FROM `messages` FORCE INDEX \
             (messages_history_pair) WHERE type = ? AND to_id = ? AND CAST(to_id AS BINARY) = ? \
             AND from_id = ? AND CAST(from_id AS BINARY) = ? AND id > ? ORDER BY id ASC LIMIT \
             4)) AS page ORDER BY id ASC LIMIT 4"
        );
        assert_eq!(values.len(), 12);
        assert_eq!(values[1], SqlValue::from("x' OR 1=1 --"));
        let newest = Plan {
            cursor: Cursor::Newest,
            ..pair.clone()
        };
        let old_table = TableShape {
            payload: false,
            indexes: false,
        };
        let (sql, values) = page_sql("`messages`", &newest, None, old_table);
        assert!(sql.contains("ORDER BY id DESC LIMIT 4") && !sql.contains("payload"));
        assert!(!sql.contains("FORCE INDEX"));
        assert_eq!(values.len(), 10);
    }

    fn stored(n: u32, payload: Option<&str>) -> StoredMessage {
        StoredMessage {
            message_id: format!("m{n}"),
            kind: "CHAT".into(),
            from_id: "7".into(),
            to_id: "0042".into(),
            content: format!("hello {n}"),
            server_ts: 1_700_000_000_000 + i64::from(n),
            payload: payload.map(str::to_string),
        }
    }

    #[test]
    fn messages_come_back_as_delivered_or_rebuilt_from_their_columns() {
        let delivered = r#"{"type":"CHAT", "fromId":7,"toId":"0042","content":"hello 1","clientMsgId":"c1","id":"m1","ts":1700000000001}"#;
        let rows = [
            stored(1, Some(delivered)),
            stored(2, None),
            stored(3, Some("{broken")),
        ];
        let page = page(&rows, 10, 1 << 20);
        assert!(!page.more);
        assert_eq!(page.messages[0].get(), delivered, "byte for byte");
        let rebuilt: Value = serde_json::from_str(page.messages[1].get()).unwrap();
        assert_eq!(
            rebuilt,
            json!({"type":"CHAT","fromId":7,"toId":"0042","content":"hello 2","id":"m2","ts":1_700_000_000_002_i64})
        );
        let rebuilt: Value = serde_json::from_str(page.messages[2].get()).unwrap();
        assert_eq!(rebuilt["content"], "hello 3");
    }

    #[test]
    fn only_rows_of_the_plan_byte_for_byte() {
        let groups: GroupIds = ["10"].into_iter().collect();
        let who = Requester {
            user_id: "bob",
            groups: &groups,
        };
        let inbox = plan(request(Thread::Inbox), &who).unwrap();
        let row = |kind: &str, to: &str, from: &str| StoredMessage {
            kind: kind.into(),
            to_id: to.into(),
            from_id: from.into(),
            ..stored(1, None)
        };
        assert!(inbox.reads(&row("CHAT", "bob", "x")));
        assert!(inbox.reads(&row("GROUPCHAT", "10", "x")));
        for (kind, to) in [
            ("CHAT", "Bob"),
            ("CHAT", "bob "),
            ("GROUPCHAT", "10 "),
            ("CHAT", "10"),
        ] {
            assert!(!inbox.reads(&row(kind, to, "x")), "{kind} {to:?}");
        }
        let pair = plan(request(Thread::Chat("alice".into())), &who).unwrap();
        assert!(pair.reads(&row("CHAT", "bob", "alice")));
        assert!(!pair.reads(&row("CHAT", "bob", "ALICE")));
        assert!(!pair.reads(&row("CHAT", "bob", "carol")));
    }

    #[test]
    fn a_page_stops_at_its_limit_and_its_bytes() {
        let rows: Vec<StoredMessage> = (0..4).map(|n| stored(n, None)).collect();
        let full = page(&rows, 3, 1 << 20);
        assert_eq!((full.messages.len(), full.more), (3, true));
        let all = page(&rows[..3], 3, 1 << 20);
        assert_eq!((all.messages.len(), all.more), (3, false));
        let small = page(&rows, 3, 150);
        assert_eq!((small.messages.len(), small.more), (1, true));
        let tiny = page(&rows[..1], 3, 1);
        assert_eq!((tiny.messages.len(), tiny.more), (1, false), "one at least");
        let answer: Value = serde_json::from_slice(&envelope::response(
            &Reply {
                command: "getHistory".into(),
                correlation: Some(json!("x")),
                ..Reply::to("c", RESPONSE_TOPIC)
            },
            Ok(Some(full)),
        ))
        .unwrap();
        assert_eq!(answer["responses"][0]["correlationData"], "x");
        assert_eq!(answer["responses"][0]["data"]["more"], true);
        assert_eq!(answer["responses"][0]["data"]["messages"][2]["id"], "m2");
    }

    #[test]
    fn limits_count_in_flight_and_per_second_and_forget_idle_clients() {
        let start = Instant::now();
        let mut limits = Limits::new(2, 3);
        assert!(limits.admit(b"a", start).is_ok());
        assert!(limits.admit(b"a", start).is_ok());
        assert!(limits.admit(b"a", start).unwrap_err().contains("in flight"));
        assert!(limits.admit(b"b", start).is_ok(), "per client");
        limits.done(b"a");
        assert!(limits.admit(b"a", start).is_ok());
        limits.done(b"a");
        assert!(
            limits
                .admit(b"a", start)
                .unwrap_err()
                .contains("per second")
        );
        let later = start + Duration::from_secs(1);
        assert!(limits.admit(b"a", later).is_ok());
        // Many clients once, then as many others seconds later: the idle ones are dropped
        // as the map grows, so it holds about the clients of the last second (bounded).
        let client = |n: usize| (n as u64).to_le_bytes();
        for n in 0..LIMITS_PRUNE_AT {
            limits.admit(&client(n), start).unwrap();
            limits.done(&client(n));
        }
        let much_later = start + Duration::from_secs(5);
        for n in LIMITS_PRUNE_AT..3 * LIMITS_PRUNE_AT {
            limits.admit(&client(n), much_later).unwrap();
            limits.done(&client(n));
        }
        assert!(
            limits.tracked() <= 2 * LIMITS_PRUNE_AT + 2,
            "{} tracked: the idle ones were not dropped",
            limits.tracked()
        );
        assert!(
            limits
                .clients
                .contains_key(&client(3 * LIMITS_PRUNE_AT - 1)[..])
        );
        assert!(!limits.clients.contains_key(&client(0)[..]));
    }

    #[test]
    fn response_topics_never_reach_other_dollar_topics_or_wildcards() {
        assert!(valid_response_topic(RESPONSE_TOPIC));
        assert!(valid_response_topic("replies/alice/1"));
        for bad in [
            "",
            "a/+",
            "a/#",
            "$SYS/x",
            "$CONTROL/chat-auth/v1/response",
            "a\0b",
        ] {
            assert!(!valid_response_topic(bad), "{bad}");
        }
    }
}
