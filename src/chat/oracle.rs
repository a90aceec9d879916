//! The validation as it was before the single-pass reader (issue 26): every top-level
//! member read into a `Vec` of raw values, then looked up by name. Kept unchanged as the
//! oracle of the property test in `chat::tests`: the reader that replaced it must give the
//! same verdict, the same refusal and the same stamped bytes for any payload.

use super::json::{Compact, Key, write_number, write_str};
use super::payload::{Invalid, Sender, Stamped};
use super::{Kind, MAX_ID_BYTES, MAX_MEMBERS};
use crate::message_id::MessageId;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Validates a chat payload published on a topic of `kind` whose id is `topic_id`, and
/// stamps it. `new_id` is called only when the broker's id is needed.
pub(super) fn accept<'a>(
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
    let to_id = fields.id_text("toId").ok_or(Invalid::BadId("toId"))?;
    if to_id != topic_id {
        return Err(Invalid::ToIdMismatch);
    }
    let from_id = fields.id_text("fromId").ok_or(Invalid::BadId("fromId"))?;
    if let Sender::User(user_id) = sender {
        if from_id != user_id {
            return Err(Invalid::FromIdMismatch);
        }
    }
    let content = match fields.get("content").and_then(|raw| json_str(raw.get())) {
        Some(text) if text.len() <= max_content_bytes => text,
        Some(text) => {
            return Err(Invalid::Content(format!(
                "is {} bytes, more than the {max_content_bytes} allowed",
                text.len()
            )));
        }
        None => return Err(Invalid::Content("must be a string".into())),
    };
    let client_msg_id = match fields.get("clientMsgId") {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .ok()
                .filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES)
                .ok_or(Invalid::BadId("clientMsgId"))?,
        ),
    };
    let trusted = sender == Sender::Trusted;
    let brought_id = fields.get("id");
    let brought_ts = fields.get("ts");
    let kept_stamp = trusted
        && brought_id.is_some()
        && brought_ts.is_some_and(|ts| serde_json::from_str::<i64>(ts.get()).is_ok());
    let message_id = match brought_id {
        Some(id) if trusted => message_id(id).ok_or(Invalid::BadId("id"))?,
        _ => new_id(),
    };
    let server_ts = match brought_ts.and_then(|ts| serde_json::from_str::<i64>(ts.get()).ok()) {
        Some(ts) if trusted => ts,
        _ => now_ms,
    };
    let payload = if brought_id.is_none() && brought_ts.is_none() {
        append_stamp(payload, &message_id, server_ts)
    } else {
        replace_stamp(&fields, &message_id, server_ts).ok_or_else(super::payload::unwritable)?
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

/// The same accepted payload with another stamp (a retransmission gets its first copy's).
pub(super) fn restamp(payload: &[u8], message_id: &str, server_ts: i64) -> Option<Vec<u8>> {
    let fields = Fields::parse(payload).ok()?;
    replace_stamp(&fields, message_id, server_ts)
}
/// The top-level members of a JSON object, values left unparsed (only the few the
/// validation reads are ever decoded). Duplicate keys are refused: which one counts would
/// depend on the reader.
struct Fields<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// The payload's length.
    bytes: usize,
}

impl<'a> Fields<'a> {
    fn parse(payload: &'a [u8]) -> Result<Fields<'a>, Invalid> {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(match serde_json::from_slice::<IgnoredAny>(payload) {
                Ok(_) => Invalid::NotObject,
                Err(e) => Invalid::NotJson(e.to_string()),
            });
        }
        let crowded = std::cell::Cell::new(false);
        let mut reader = serde_json::Deserializer::from_slice(payload);
        let members = DeserializeSeed::deserialize(Members(&crowded), &mut reader)
            .and_then(|members| reader.end().map(|()| members))
            .map_err(|e| match crowded.get() {
                true => Invalid::TooManyMembers,
                false => Invalid::NotJson(e.to_string()),
            })?;
        if let Some(key) = duplicate(&members, |(key, _)| key.as_ref()) {
            return Err(Invalid::NotJson(format!("duplicate key \"{key}\"")));
        }
        Ok(Fields {
            members,
            bytes: payload.len(),
        })
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn type_is(&self, name: &str) -> bool {
        self.get("type")
            .and_then(|raw| json_str(raw.get()))
            .is_some_and(|text| text == name)
    }

    /// An id as text: a JSON integer in decimal, or a string as it is (borrowed from the
    /// payload unless it has escapes).
    fn id_text(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw: &'a str = self.get(key)?.get();
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

/// A key given twice, if any: compared pairwise for the few members of a chat message,
/// through a hash set beyond (50,000 keys took seconds pairwise).
fn duplicate<'k, T>(members: &'k [T], key: impl Fn(&'k T) -> &'k str) -> Option<&'k str> {
    const PAIRWISE: usize = 16;
    if members.len() <= PAIRWISE {
        return members
            .iter()
            .enumerate()
            .find(|&(i, member)| members[..i].iter().any(|seen| key(seen) == key(member)))
            .map(|(_, member)| key(member));
    }
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    members.iter().map(key).find(|&name| !seen.insert(name))
}

/// Reads the top-level members, at most `MAX_MEMBERS` of them (setting the flag when
/// there are more: reading stops there).
struct Members<'f>(&'f std::cell::Cell<bool>);

type Raw<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Raw<'de>, D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Raw<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut members = Vec::with_capacity(8);
        while let Some(Key(key)) = map.next_key()? {
            if members.len() == MAX_MEMBERS {
                self.0.set(true);
                return Err(serde::de::Error::custom("too many members"));
            }
            members.push((key, map.next_value()?));
        }
        Ok(members)
    }
}

/// A JSON string's text, borrowed from the payload unless it holds escapes (serde's own
/// `Cow<str>` always copies).
fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
    }
}

/// The payload with `"id"` and `"ts"` added before its closing brace: the sender's bytes
/// are kept as they are (no re-serialisation on the broker thread).
fn append_stamp(payload: &[u8], message_id: &str, server_ts: i64) -> Vec<u8> {
    use std::io::Write;
    // Validated above: a JSON object with members, so the last non-space byte is `}`.
    let close = payload
        .iter()
        .rposition(|&b| b == b'}')
        .expect("a validated JSON object ends with }");
    let mut out = Vec::with_capacity(close + message_id.len() + 40);
    out.extend_from_slice(&payload[..close]);
    // Only our own ids come here (a UUID: nothing to escape).
    let _ = write!(out, ",\"id\":\"{message_id}\",\"ts\":{server_ts}}}");
    out
}

/// The payload with `"id"` and `"ts"` set, for the rare payload that already has one:
/// written anew as serde_json's `Value` would write it (compact; `id` and `ts` each in its
/// place, or after the rest), but streamed member by member, never built as a tree (a
/// payload of 100,000 nested arrays took 190 ms as a `Value`).
fn replace_stamp(fields: &Fields<'_>, message_id: &str, server_ts: i64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(fields.bytes + message_id.len() + 40);
    out.push(b'{');
    let stamp = |out: &mut Vec<u8>, key: &str| {
        write_str(out, key);
        out.push(b':');
        if key == "id" {
            write_str(out, message_id);
        } else {
            write_number(out, server_ts);
        }
    };
    for (n, (key, raw)) in fields.members.iter().enumerate() {
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
        DeserializeSeed::deserialize(Compact(&mut out), &mut reader).ok()?;
    }
    for key in ["id", "ts"] {
        if fields.get(key).is_none() {
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
fn message_id(raw: &RawValue) -> Option<MessageId> {
    MessageId::parse(&serde_json::from_str::<String>(raw.get()).ok()?)
}
