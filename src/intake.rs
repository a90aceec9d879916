//! The chat pipeline: one PUBLISH on a chat topic validated, stamped, recognised as a
//! retransmission or relayed copy, and spooled, before the MESSAGE callback answers. Time
//! is passed in; the only effect outside memory is the spool's append (a file), so the
//! tests below run it against a spool in a temporary directory.

use crate::chat::ValidationConfig;
use crate::chat::payload::{self, Invalid, Sender};
use crate::chat::topics::ChatTopic;
use crate::dedup::{Dedup, Stamp};
use crate::message_id::MessageIds;
use crate::resend::Resends;
use crate::sessions::Author;
use crate::store::{NewRecord, Spooler, StoreRefusal};
use std::fmt;

/// A PUBLISH on a chat topic, as the broker hands it over.
#[derive(Debug, Clone, Copy)]
pub struct ChatPublish<'a> {
    pub topic: &'a str,
    /// The topic, classified.
    pub chat: ChatTopic<'a>,
    pub payload: &'a [u8],
    pub qos: u8,
    pub client_id: &'a [u8],
    /// Who the client is (`Registry::author`).
    pub author: Author<'a>,
}

/// What the pipeline keeps between messages.
pub struct Intake<'a> {
    pub validation: &'a ValidationConfig,
    /// QoS 2 stamps, for resends before PUBREL.
    pub resends: &'a mut Resends,
    /// `clientMsgId` stamps (`chat_dedup_seconds`), when on.
    pub dedup: Option<&'a mut Dedup>,
    /// The spool, when storage is on.
    pub spooler: Option<&'a mut Spooler>,
    /// The broker's message ids.
    pub ids: &'a mut MessageIds,
}

/// An accepted chat message: what to deliver instead of what was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stamped by this broker (and spooled, with storage on).
    Accepted(Vec<u8>),
    /// A copy of a message accepted lately (a QoS 2 resend, or the same `clientMsgId`
    /// with the same bytes): its first stamp, not stored again.
    Retransmission(Vec<u8>),
    /// Stamped by the broker its sender is connected to, which stores it (a bridge):
    /// delivered as it came, not stored here.
    Relayed,
}

/// Why a chat message is refused: not delivered, not stored.
#[derive(Debug)]
pub enum ChatRefusal {
    /// No session (or no rules yet) for the client: nobody to stamp it as.
    UnknownClient,
    /// The payload is not a chat message of this topic from this sender.
    Invalid(Invalid),
    /// The spool holds `persist_spool_max_mb` not yet in MySQL.
    SpoolFull,
    /// The spool cannot be written (a full disk, say).
    SpoolError(std::io::Error),
}

impl ChatRefusal {
    /// The reason's name in the figures (`$SYS`, Prometheus, `getStats`).
    pub fn name(&self) -> &'static str {
        match self {
            ChatRefusal::UnknownClient => "unknown-client",
            ChatRefusal::Invalid(why) => why.name(),
            ChatRefusal::SpoolFull => "spool-full",
            ChatRefusal::SpoolError(_) => "spool-error",
        }
    }

    /// A limit reached, not a fault of the message: Mosquitto 2.1 answers an MQTT 5 sender
    /// "quota exceeded" (0x97).
    pub fn is_limit(&self) -> bool {
        matches!(self, ChatRefusal::SpoolFull)
    }
}

impl fmt::Display for ChatRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatRefusal::UnknownClient => f.write_str("no session or no rules known for it"),
            ChatRefusal::Invalid(why) => why.fmt(f),
            ChatRefusal::SpoolFull => f.write_str("the spool is full"),
            ChatRefusal::SpoolError(e) => write!(f, "cannot write the chat spool ({e})"),
        }
    }
}

/// The longest client id kept with a stored message (the column's size).
const MAX_STORED_CLIENT_ID: usize = 256;

/// Judges one chat PUBLISH at `now_ms`.
pub fn judge(
    intake: &mut Intake<'_>,
    publish: &ChatPublish<'_>,
    now_ms: i64,
) -> Result<Verdict, ChatRefusal> {
    let sender = match publish.author {
        Author::User(user_id) => Sender::User(user_id),
        Author::Superuser | Author::OwnBridge | Author::Relay => Sender::Trusted,
        Author::Unknown => return Err(ChatRefusal::UnknownClient),
    };
    // A bridge: another broker's (a bridge account here) or this broker's own.
    let bridge = matches!(publish.author, Author::Relay | Author::OwnBridge);
    let topic = publish.topic.as_bytes();
    // A QoS 2 copy of a message stamped lately (see `resend`) is stamped as it was.
    let resent = match publish.qos {
        2 => intake
            .resends
            .get(publish.client_id, topic, publish.payload, now_ms),
        _ => None,
    };
    let (stamp_ts, stamp_id) = match &resent {
        Some(first) => (first.server_ts, Some(first.message_id)),
        None => (now_ms, None),
    };
    let stamped = payload::accept(
        publish.chat.kind,
        publish.chat.id,
        publish.payload,
        sender,
        intake.validation.max_content_bytes,
        stamp_ts,
        || stamp_id.unwrap_or_else(|| intake.ids.next(stamp_ts)),
    )
    .map_err(ChatRefusal::Invalid)?;
    if resent.is_some() {
        // A resend before PUBREL: the same bytes the broker holds, no second row.
        return Ok(Verdict::Retransmission(stamped.payload));
    }
    if bridge && stamped.kept_stamp {
        return Ok(Verdict::Relayed);
    }
    // The same message only when the payload received is byte for byte the same.
    let retransmission = match (&stamped.client_msg_id, &mut intake.dedup) {
        (Some(id), Some(dedup)) => dedup.get(&stamped.from_id, id, publish.payload, now_ms),
        _ => None,
    };
    if let Some(first) = retransmission {
        // The same sender sent this `clientMsgId` before: same id and ts, no second row.
        return payload::restamp(&stamped.payload, &first.message_id, first.server_ts)
            .map(Verdict::Retransmission)
            .ok_or_else(|| ChatRefusal::Invalid(payload::unwritable()));
    }
    if let Some(spooler) = &mut intake.spooler {
        let client_name = String::from_utf8_lossy(publish.client_id);
        let client_name = truncate(&client_name, MAX_STORED_CLIENT_ID);
        let record = NewRecord::from_stamped(&stamped, publish.topic, publish.qos, client_name);
        spooler.put(&record).map_err(|refusal| match refusal {
            StoreRefusal::SpoolFull => ChatRefusal::SpoolFull,
            StoreRefusal::Io(e) => ChatRefusal::SpoolError(e),
        })?;
    }
    let first = || Stamp {
        message_id: stamped.message_id,
        server_ts: stamped.server_ts,
    };
    if let (Some(id), Some(dedup)) = (&stamped.client_msg_id, &mut intake.dedup) {
        dedup.remember(&stamped.from_id, id, publish.payload, first(), now_ms);
    }
    if publish.qos == 2 {
        intake
            .resends
            .remember(publish.client_id, topic, publish.payload, first(), now_ms);
    }
    Ok(Verdict::Accepted(stamped.payload))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
