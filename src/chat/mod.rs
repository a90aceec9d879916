//! Chat messages, as pure functions: the topics they travel on and their payloads.
//!
//! `{"type":"CHAT"|"GROUPCHAT","fromId":..,"toId":..,"content":".."}` (extra fields kept).
//! Ids are JSON integers or strings, compared by their decimal text. The broker adds `"id"`
//! (a UUIDv7: unique, sortable by time) and `"ts"` (server time, ms).
//!
//! - `topics`: which topics are inboxes and groups, and whose (`ChatTopics::classify`).
//! - `payload`: validation and stamping, over bytes (`accept`, `restamp`).
//! - `json`: object keys, strings and numbers read and written as serde_json does (`Key`
//!   also reads the members of a `$CONTROL` request).

pub(crate) mod json;
pub mod payload;
mod scan;
pub mod topics;

/// Longest id (user, group, message) the `messages` table holds.
pub use crate::message_id::MAX_ID_BYTES;

/// The most top-level members a chat payload may have (a chat message has a handful, an
/// application's extra fields a few dozen): reading stops at the first one beyond.
pub const MAX_MEMBERS: usize = 1_000;

/// Chat payload validation and stamping (`chat_validate`, `chat_max_content_bytes`,
/// `chat_dedup_seconds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    pub max_content_bytes: usize,
    /// How long a `clientMsgId` keeps its first stamp (`chat_dedup_seconds`); 0: off.
    pub dedup: std::time::Duration,
}

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

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests;
