//! Chat payloads: validation and stamping, as pure functions over bytes.

use super::json::{Compact, Key, PAIRWISE, json_str, write_integer, write_str};
use super::{Kind, MAX_ID_BYTES, MAX_MEMBERS};
use crate::message_id::MessageId;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

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
    /// More than `MAX_MEMBERS` top-level members.
    TooManyMembers,
    NotJson(String),
    NotObject,
    WrongType {
        expected: &'static str,
    },
    BadId(&'static str),
    ToIdMismatch,
    FromIdMismatch,
    Content(String),
}

impl Invalid {
    /// A short name, for `$SYS` topics.
    pub fn name(&self) -> &'static str {
        match self {
            Invalid::TooLarge(_) => "too-large",
            Invalid::TooManyMembers => "too-many-members",
            Invalid::NotJson(_) => "not-json",
            Invalid::NotObject => "not-object",
            Invalid::WrongType { .. } => "wrong-type",
            Invalid::BadId(_) => "bad-id",
            Invalid::ToIdMismatch => "to-id-mismatch",
            Invalid::FromIdMismatch => "from-id-mismatch",
            Invalid::Content(_) => "content",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::TooLarge(n) => write!(f, "payload of {n} bytes is too large"),
            Invalid::TooManyMembers => {
                write!(f, "payload has more than {MAX_MEMBERS} top-level members")
            }
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

/// An accepted message: the payload to deliver, and what to store (text borrowed from the
/// sender's payload where it holds no escapes: no copy on the broker thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<'a> {
    /// A trusted sender brought the whole stamp (`id` and `ts`), and it was kept: a message
    /// another broker stamped, when the sender is a bridge.
    pub kept_stamp: bool,
    pub payload: Vec<u8>,
    pub message_id: MessageId,
    pub kind: Kind,
    pub from_id: Cow<'a, str>,
    pub to_id: Cow<'a, str>,
    pub content: Cow<'a, str>,
    pub server_ts: i64,
    /// The sender's own id for the message (`clientMsgId`), when it gave one: a
    /// retransmission with the same one gets the first copy's stamp (see `dedup`).
    pub client_msg_id: Option<String>,
}

/// Validates a chat payload published on a topic of `kind` whose id is `topic_id`, and
/// stamps it. `new_id` is called only when the broker's id is needed.
pub fn accept<'a>(
    kind: Kind,
    topic_id: &str,
    payload: &'a [u8],
    sender: Sender<'_>,
    max_content_bytes: usize,
    now_ms: i64,
    new_id: impl FnOnce() -> MessageId,
) -> Result<Stamped<'a>, Invalid> {
    // JSON escapes can take 6 bytes per content byte; anything beyond is not a chat message.
    let limit = max_content_bytes.saturating_mul(6).saturating_add(65_536);
    if payload.len() > limit {
        return Err(Invalid::TooLarge(payload.len()));
    }
    let fields = Fields::parse(payload)?;
    if !fields.type_is(kind.name()) {
        return Err(Invalid::WrongType {
            expected: kind.name(),
        });
    }
    let to_id = fields.id_text(Known::ToId).ok_or(Invalid::BadId("toId"))?;
    if to_id != topic_id {
        return Err(Invalid::ToIdMismatch);
    }
    let from_id = fields
        .id_text(Known::FromId)
        .ok_or(Invalid::BadId("fromId"))?;
    if let Sender::User(user_id) = sender {
        if from_id != user_id {
            return Err(Invalid::FromIdMismatch);
        }
    }
    let content = match fields.get(Known::Content).and_then(json_str) {
        Some(text) if text.len() <= max_content_bytes => text,
        Some(text) => {
            return Err(Invalid::Content(format!(
                "is {} bytes, more than the {max_content_bytes} allowed",
                text.len()
            )));
        }
        None => return Err(Invalid::Content("must be a string".into())),
    };
    let client_msg_id = match fields.get(Known::ClientMsgId) {
        None => None,
        Some(raw) => Some(
            json_str(raw)
                .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES)
                .ok_or(Invalid::BadId("clientMsgId"))?
                .into_owned(),
        ),
    };
    let trusted = sender == Sender::Trusted;
    let brought_id = fields.get(Known::Id);
    let brought_ts = fields.get(Known::Ts);
    let kept_stamp = trusted
        && brought_id.is_some()
        && brought_ts.is_some_and(|ts| serde_json::from_str::<i64>(ts).is_ok());
    let message_id = match brought_id {
        Some(id) if trusted => message_id(id).ok_or(Invalid::BadId("id"))?,
        _ => new_id(),
    };
    let server_ts = match brought_ts.and_then(|ts| serde_json::from_str::<i64>(ts).ok()) {
        Some(ts) if trusted => ts,
        _ => now_ms,
    };
    let payload = if brought_id.is_none() && brought_ts.is_none() {
        append_stamp(payload, &message_id, server_ts)
    } else {
        replace_stamp(payload, &message_id, server_ts).ok_or_else(unwritable)?
    };
    Ok(Stamped {
        payload,
        kept_stamp,
        message_id,
        kind,
        from_id,
        to_id,
        content,
        server_ts,
        client_msg_id,
    })
}

/// A payload whose `id` or `ts` is replaced holds a value serde_json skips but will not
/// write again: refused as not JSON rather than rewritten without it.
pub(crate) fn unwritable() -> Invalid {
    Invalid::NotJson(
        "a value that cannot be written again (a lone surrogate escape, a number beyond \
         f64, or nesting deeper than 128)"
            .into(),
    )
}

/// The same accepted payload with another stamp (a retransmission gets its first copy's).
pub fn restamp(payload: &[u8], message_id: &str, server_ts: i64) -> Option<Vec<u8>> {
    Fields::parse(payload).ok()?;
    replace_stamp(payload, message_id, server_ts)
}

/// The top-level members the validation reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Known {
    Type,
    FromId,
    ToId,
    Content,
    ClientMsgId,
    Id,
    Ts,
}

impl Known {
    const COUNT: usize = 7;

    fn of(key: &str) -> Option<Known> {
        Some(match key {
            "type" => Known::Type,
            "fromId" => Known::FromId,
            "toId" => Known::ToId,
            "content" => Known::Content,
            "clientMsgId" => Known::ClientMsgId,
            "id" => Known::Id,
            "ts" => Known::Ts,
            _ => return None,
        })
    }
}

/// A JSON object's top-level members the validation reads, values left unparsed, read in
/// one pass that builds nothing: every member is read (checked) as a raw value borrowed
/// from the payload, the few known ones are kept, the others only counted and their keys
/// compared. Duplicate keys are refused: which one counts would depend on the reader.
pub(super) struct Fields<'a> {
    /// Each known member's raw text, as serde_json's `RawValue` holds it.
    pub(super) known: [Option<&'a str>; Known::COUNT],
}

/// Every top-level member, in order (only to write a payload anew).
type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

impl<'a> Fields<'a> {
    fn parse(payload: &'a [u8]) -> Result<Fields<'a>, Invalid> {
        Self::read(payload, None)
    }

    /// Reads the payload, and lists its members in `members` when given.
    fn read(payload: &'a [u8], members: Option<&mut Members<'a>>) -> Result<Fields<'a>, Invalid> {
        if members.is_none() {
            if let Some(known) = Self::scan(payload) {
                return Ok(Fields { known });
            }
        }
        Self::read_serde(payload, members)
    }

    /// The fast path (`scan`): a flat object of the usual shape, or `None`.
    pub(super) fn scan(payload: &'a [u8]) -> Option<[Option<&'a str>; Known::COUNT]> {
        super::scan::flat_object(payload, |key| Known::of(key).map(|k| k as usize))
    }

    /// Any payload, through serde_json's reader (with its words for what is wrong).
    pub(super) fn read_serde(
        payload: &'a [u8],
        members: Option<&mut Members<'a>>,
    ) -> Result<Fields<'a>, Invalid> {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(match serde_json::from_slice::<IgnoredAny>(payload) {
                Ok(_) => Invalid::NotObject,
                Err(e) => Invalid::NotJson(e.to_string()),
            });
        }
        let crowded = std::cell::Cell::new(false);
        let reader = Reader {
            crowded: &crowded,
            members,
        };
        // Checked once as a whole, UTF-8 is not checked again string by string; a payload
        // that is not UTF-8 is read as bytes, for serde_json's own error at the first bad
        // string.
        let read = match std::str::from_utf8(payload) {
            Ok(text) => read_object(&mut serde_json::Deserializer::from_str(text), reader),
            Err(_) => read_object(&mut serde_json::Deserializer::from_slice(payload), reader),
        };
        let read = read.map_err(|e| match crowded.get() {
            true => Invalid::TooManyMembers,
            false => Invalid::NotJson(e.to_string()),
        })?;
        if let Some(key) = read.duplicate {
            return Err(Invalid::NotJson(format!("duplicate key \"{key}\"")));
        }
        Ok(Fields { known: read.known })
    }

    fn get(&self, member: Known) -> Option<&'a str> {
        self.known[member as usize]
    }

    fn type_is(&self, name: &str) -> bool {
        self.get(Known::Type)
            .and_then(json_str)
            .is_some_and(|text| text == name)
    }

    /// An id as text: a JSON integer in decimal, or a string as it is (borrowed from the
    /// payload unless it has escapes).
    fn id_text(&self, member: Known) -> Option<Cow<'a, str>> {
        let raw: &'a str = self.get(member)?;
        let text: Cow<'a, str> = if raw.starts_with('"') {
            json_str(raw)?
        } else if raw != "-0" && (raw.parse::<i64>().is_ok() || raw.parse::<u64>().is_ok()) {
            // A JSON integer is in decimal with no leading zeros, the text the row stores;
            // "-0" would be stored as another ("0") and is refused, as it always was.
            Cow::Borrowed(raw)
        } else {
            return None;
        };
        (!text.is_empty() && text.len() <= MAX_ID_BYTES).then_some(text)
    }
}

/// The whole payload read by `reader`: one object, nothing after it.
fn read_object<'de, 'm, R: serde_json::de::Read<'de>>(
    reader: &mut serde_json::Deserializer<R>,
    seed: Reader<'_, 'm, 'de>,
) -> serde_json::Result<Read<'de>> {
    let read = seed.deserialize(&mut *reader)?;
    reader.end()?;
    Ok(read)
}

/// Reads the top-level members, at most `MAX_MEMBERS` of them (setting the flag when
/// there are more: reading stops there).
struct Reader<'f, 'm, 'de> {
    crowded: &'f std::cell::Cell<bool>,
    members: Option<&'m mut Members<'de>>,
}

/// What `Reader` found: the known members, and the first key given a second time.
struct Read<'de> {
    known: [Option<&'de str>; Known::COUNT],
    duplicate: Option<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for Reader<'_, '_, 'de> {
    type Value = Read<'de>;
    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Read<'de>, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_, '_, 'de> {
    type Value = Read<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Read<'de>, A::Error> {
        let mut known = [None; Known::COUNT];
        let mut keys = Keys::default();
        let mut duplicate = None;
        let mut count = 0;
        while let Some(Key(key)) = map.next_key()? {
            if count == MAX_MEMBERS {
                self.crowded.set(true);
                return Err(serde::de::Error::custom("too many members"));
            }
            count += 1;
            // Read as a raw value whatever the member: the value is checked as JSON (and, in
            // a payload read as bytes, as UTF-8) all the same.
            let raw: &'de RawValue = map.next_value()?;
            if let Some(members) = self.members.as_deref_mut() {
                members.push((key.clone(), raw));
            }
            if duplicate.is_some() {
                // The first key found twice is the one said: the rest need not be compared.
                continue;
            }
            match Known::of(&key) {
                Some(member) if known[member as usize].is_some() => duplicate = Some(key),
                Some(member) => known[member as usize] = Some(raw.get()),
                None => duplicate = keys.add(key).err(),
            }
        }
        Ok(Read { known, duplicate })
    }
}

/// The keys of an object's members other than the known ones (a known one given twice is
/// found by its place, filled already), to find the first one given twice: compared
/// pairwise for the few members of a chat message (kept in place: nothing allocated but
/// the keys that had escapes), through a hash set beyond (50,000 keys took seconds
/// pairwise).
struct Keys<'a> {
    few: [&'a str; PAIRWISE],
    len: usize,
    /// Of the few, those that had escapes (decoded, so not borrowed from the payload).
    unescaped: Vec<String>,
    many: HashSet<Cow<'a, str>>,
}

impl Default for Keys<'_> {
    fn default() -> Self {
        Keys {
            few: [""; PAIRWISE],
            len: 0,
            unescaped: Vec::new(),
            many: HashSet::new(),
        }
    }
}

impl<'a> Keys<'a> {
    /// Adds `key`, or hands it back when it was there already.
    fn add(&mut self, key: Cow<'a, str>) -> Result<(), Cow<'a, str>> {
        if self.many.is_empty() && self.len + self.unescaped.len() < PAIRWISE {
            let text: &str = &key;
            if self.few[..self.len].contains(&text) || self.unescaped.iter().any(|k| k == text) {
                return Err(key);
            }
            match key {
                Cow::Borrowed(text) => {
                    self.few[self.len] = text;
                    self.len += 1;
                }
                Cow::Owned(text) => self.unescaped.push(text),
            }
            return Ok(());
        }
        if self.many.is_empty() {
            self.many.reserve(16 * PAIRWISE);
            self.many
                .extend(self.few[..self.len].iter().map(|&k| Cow::Borrowed(k)));
            self.many.extend(self.unescaped.drain(..).map(Cow::Owned));
        }
        // One hash per key (a borrowed key's copy is a pointer's).
        match self.many.insert(key.clone()) {
            true => Ok(()),
            false => Err(key),
        }
    }
}

/// The payload with `"id"` and `"ts"` added before its closing brace: the sender's bytes
/// are kept as they are (no re-serialisation on the broker thread).
fn append_stamp(payload: &[u8], message_id: &str, server_ts: i64) -> Vec<u8> {
    // Validated above: a JSON object with members, so the last non-space byte is `}`.
    let close = payload
        .iter()
        .rposition(|&b| b == b'}')
        .expect("a validated JSON object ends with }");
    let mut out = Vec::with_capacity(close + message_id.len() + 40);
    out.extend_from_slice(&payload[..close]);
    // Only our own ids come here (a UUID: nothing to escape).
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(message_id.as_bytes());
    out.extend_from_slice(b"\",\"ts\":");
    write_integer(&mut out, server_ts);
    out.push(b'}');
    out
}

/// The payload with `"id"` and `"ts"` set, for the rare payload that already has one:
/// written anew as serde_json's `Value` would write it (compact; `id` and `ts` each in its
/// place, or after the rest), but streamed member by member, never built as a tree (a
/// payload of 100,000 nested arrays took 190 ms as a `Value`).
fn replace_stamp(payload: &[u8], message_id: &str, server_ts: i64) -> Option<Vec<u8>> {
    // Validated already: read again, rarely, for every member in its place.
    let mut members = Members::with_capacity(16);
    Fields::read(payload, Some(&mut members)).ok()?;
    let mut out = Vec::with_capacity(payload.len() + message_id.len() + 40);
    out.push(b'{');
    let stamp = |out: &mut Vec<u8>, key: &str| {
        write_str(out, key);
        out.push(b':');
        if key == "id" {
            write_str(out, message_id);
        } else {
            write_integer(out, server_ts);
        }
    };
    for (n, (key, raw)) in members.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if key == "id" || key == "ts" {
            stamp(&mut out, key);
            continue;
        }
        write_str(&mut out, key);
        out.push(b':');
        let mut reader = serde_json::Deserializer::from_str(raw.get());
        // Read once already (as a RawValue), by the same reader. It fails only where
        // serde_json skips what it will not read (a lone surrogate escape, a number beyond
        // `f64`, nesting deeper than 128): then the message is refused, never delivered or
        // stored with the value left out.
        DeserializeSeed::deserialize(Compact(&mut out), &mut reader).ok()?;
    }
    for key in ["id", "ts"] {
        if !members.iter().any(|(k, _)| k == key) {
            if out.len() > 1 {
                out.push(b',');
            }
            stamp(&mut out, key);
        }
    }
    out.push(b'}');
    Some(out)
}

/// A message id brought by a trusted sender: printable ASCII that fits the table.
fn message_id(raw: &str) -> Option<MessageId> {
    MessageId::parse(&json_str(raw)?)
}

/// Payloads of the largest size accepted with `max` content bytes (`chat_max_content_bytes`),
/// each of a shape that costs the
/// parser most: many keys, escaped keys, repeated keys, deep nesting, many values,
/// escapes; each also with a stamp given (`"ts"`: the payload is written anew). For the unit
/// tests and `benches/chat.rs`, which times them.
#[doc(hidden)]
pub fn costly_shapes(max: usize) -> Vec<(String, Vec<u8>)> {
    let limit = max * 6 + 65_536;
    let head = r#"{"type":"CHAT","fromId":1,"toId":2,"content":"x""#;
    // `{head},"x":<open><item>,<item>,...<close>}`, as many items as fit.
    let fill = |open: &str, item: &dyn Fn(usize) -> String, close: &str, stamp: &str| {
        let mut out = format!(r#"{head}{stamp},"x":{open}"#);
        for n in 0.. {
            let next = format!("{}{}", if n == 0 { "" } else { "," }, item(n));
            if out.len() + next.len() + close.len() + 1 > limit {
                break;
            }
            out.push_str(&next);
        }
        out.push_str(close);
        out.push('}');
        out.into_bytes()
    };
    let mut shapes = Vec::new();
    for stamp in ["", r#","ts":"x""#] {
        let members = |n: usize| format!(r#""m{n}":0"#);
        let mut crowded = format!("{head}{stamp}");
        for n in 0..MAX_MEMBERS - 6 {
            crowded.push_str(&format!(",{}", members(n)));
        }
        crowded.push_str(r#","pad":""#);
        crowded.push_str(&"p".repeat(limit - 2 - crowded.len()));
        crowded.push_str(r#""}"#);
        shapes.push((format!("{MAX_MEMBERS} members"), crowded.into_bytes()));
        shapes.push(("many keys".into(), fill("{", &members, "}", stamp)));
        let escaped = |n: usize| format!(r#""\u006d{n}":"\n\u00e9""#);
        shapes.push(("escaped keys".into(), fill("{", &escaped, "}", stamp)));
        let repeated = |n: usize| format!(r#""k{}":{n}"#, n % 7);
        shapes.push(("repeated keys".into(), fill("{", &repeated, "}", stamp)));
        let deep = |n: usize| format!("{}{n}{}", "[".repeat(125), "]".repeat(125));
        shapes.push(("deep arrays".into(), fill("[", &deep, "]", stamp)));
        let objects = |n: usize| format!(r#"{{"a":[{{}}],"b":{n}}}"#);
        shapes.push(("small objects".into(), fill("[", &objects, "]", stamp)));
        shapes.push((
            "many numbers".into(),
            fill("[", &|_| "0.5".into(), "]", stamp),
        ));
        // Repeated at every level, the deep value last: each level is written twice.
        let mut nested = format!(r#""{}""#, "s".repeat(limit - 126 * 13 - 100));
        for _ in 0..126 {
            nested = format!(r#"{{"k":0,"k":{nested}}}"#);
        }
        let nested = format!(r#"{head}{stamp},"x":{nested}}}"#);
        shapes.push(("repeated keys, nested".into(), nested.into_bytes()));
        let mut content = format!(r#"{{"type":"CHAT","fromId":1,"toId":2{stamp},"content":""#);
        while content.len() + 8 < limit {
            content.push_str(r"\u00e9");
        }
        content.push_str(r#""}"#);
        shapes.push(("escaped content".into(), content.into_bytes()));
    }
    shapes
}
