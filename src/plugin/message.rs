//! PUBLISH (MOSQ_EVT_MESSAGE): cluster commands from other brokers, and chat messages
//! validated, stamped, deduplicated and spooled.

use super::{Client, Entry, MessageVerdict, Plugin, State, now_ms};
use crate::chat::Kind;
use crate::chat::payload::{self, Sender};
use crate::cluster;
use crate::control;
use crate::dedup::Stamp;
use crate::logging::printable;
use crate::refresh::Work;
use crate::sessions::Author;
use crate::store::{NewRecord, StoreRefusal};

impl Plugin {
    /// A PUBLISH after its WRITE check: chat payloads are validated, stamped and spooled
    /// here; nothing waits on MySQL.
    pub fn message(
        &self,
        client: Client<'_>,
        topic: &[u8],
        payload: &[u8],
        qos: u8,
    ) -> MessageVerdict {
        // Entering clears the mark its WRITE check left: the PUBLISH is validated here (see
        // `Registry::check` for the ones that never are).
        let mut state = self.enter(Entry::Message);
        if topic == cluster::TOPIC.as_bytes() {
            return self.cluster_message(&mut state, client, payload);
        }
        match self.judge(&mut state, client, topic, payload, qos) {
            Ok(verdict) => verdict,
            Err(reason) => {
                state.counters.chat_refused(reason);
                if over_quota(reason) {
                    MessageVerdict::OverQuota
                } else {
                    MessageVerdict::Deny
                }
            }
        }
    }

    /// A cluster command from another broker (through a bridge) is run here once, and
    /// passed on (the bridges carry it further); from anyone else it is refused.
    fn cluster_message(
        &self,
        state: &mut State,
        client: Client<'_>,
        payload: &[u8],
    ) -> MessageVerdict {
        let client_id = client.id.unwrap_or_default();
        let trusted = matches!(
            state
                .registry
                .author(client_id, client.pointer, client.facts),
            Author::Relay | Author::OwnBridge | Author::Superuser
        );
        let decoded = cluster::decode(payload);
        let Some((id, command)) = decoded.filter(|_| trusted) else {
            log::warn!(
                "message on {} from client '{}' refused: {}",
                cluster::TOPIC,
                printable(&String::from_utf8_lossy(client_id)),
                if trusted {
                    "not a cluster command"
                } else {
                    "not a bridge account"
                }
            );
            return MessageVerdict::Deny;
        };
        if state.cluster_seen.first_time(&id) {
            state.counters.cluster_commands += 1;
            if let cluster::ClusterCommand::RefreshUser(username) = &command {
                self.read_row_again(state, username);
            }
            let mut jobs = Vec::new();
            let State {
                registry,
                outbox,
                cluster_seen,
                ..
            } = &mut *state;
            control::Context {
                registry,
                jobs: &mut jobs,
                outbox,
                cluster: cluster_seen,
                stats: None,
            }
            .run_from_cluster(command);
            for job in jobs {
                state.refresher.submit(Work::Rules(job));
            }
        }
        MessageVerdict::Pass
    }

    /// The verdict on one PUBLISH, or why a chat message is refused (a `$SYS` name).
    fn judge(
        &self,
        state: &mut State,
        client: Client<'_>,
        topic: &[u8],
        payload: &[u8],
        qos: u8,
    ) -> Result<MessageVerdict, &'static str> {
        let (Some(chat), Some(validation)) = (&self.chat, &self.validation) else {
            return Ok(MessageVerdict::Pass);
        };
        let Ok(topic) = std::str::from_utf8(topic) else {
            return Ok(MessageVerdict::Pass);
        };
        let (kind, topic_id) = if let Some(id) = chat.inbox.id_of(topic) {
            (Kind::Chat, id)
        } else if let Some(id) = chat.group.id_of(topic) {
            (Kind::GroupChat, id)
        } else {
            return Ok(MessageVerdict::Pass);
        };
        let client_id = client.id.unwrap_or_default();
        let client_name = String::from_utf8_lossy(client_id);
        let author = state
            .registry
            .author(client_id, client.pointer, client.facts);
        // A bridge: another broker's (a bridge account here) or this broker's own.
        let bridge = matches!(author, Author::Relay | Author::OwnBridge);
        let sender = match author {
            Author::User(user_id) => Sender::User(user_id),
            Author::Superuser | Author::OwnBridge | Author::Relay => Sender::Trusted,
            Author::Unknown => {
                log::debug!(
                    "chat message from client '{}' refused: no session or no rules known for it",
                    printable(&client_name)
                );
                return Err("unknown-client");
            }
        };
        // A QoS 2 copy of a message stamped lately (see `resend`) is stamped as it was.
        let resent = match qos {
            2 => state
                .resends
                .get(client_id, topic.as_bytes(), payload, now_ms()),
            _ => None,
        };
        let (stamp_ts, stamp_id) = match &resent {
            Some(first) => (first.server_ts, Some(first.message_id.clone())),
            None => (now_ms(), None),
        };
        let stamped = match payload::accept(
            kind,
            topic_id,
            payload,
            sender,
            validation.max_content_bytes,
            stamp_ts,
            || stamp_id.unwrap_or_else(payload::new_message_id),
        ) {
            Ok(stamped) => stamped,
            Err(why) => {
                if log::log_enabled!(log::Level::Debug) {
                    log::debug!(
                        "chat message from client '{}' on '{}' refused: {why}",
                        printable(&client_name),
                        printable(topic)
                    );
                }
                return Err(why.name());
            }
        };
        if resent.is_some() {
            // A resend before PUBREL: the same bytes the broker holds, no second row.
            state.counters.chat_retransmissions += 1;
            return Ok(MessageVerdict::Replace(stamped.payload));
        }
        if bridge && stamped.kept_stamp {
            // Stamped by the broker its sender is connected to, which stores it: delivered
            // here as it came, not written again.
            state.counters.chat_relayed += 1;
            return Ok(MessageVerdict::Pass);
        }
        let now = now_ms();
        // The same message only when the payload received is byte for byte the same.
        let retransmission = match (&stamped.client_msg_id, &mut state.dedup) {
            (Some(id), Some(dedup)) => dedup.get(&stamped.from_id, id, payload, now),
            _ => None,
        };
        if let Some(first) = retransmission {
            // The same sender sent this `clientMsgId` before: same id and ts, no second row.
            state.counters.chat_retransmissions += 1;
            return payload::restamp(&stamped.payload, &first.message_id, first.server_ts)
                .map(MessageVerdict::Replace)
                .ok_or("not-json");
        }
        state.limits.chat(sender, kind, now)?;
        if let Some(store) = &mut state.store {
            let record = NewRecord::from_stamped(&stamped, topic, qos, truncate(&client_name, 256));
            match store.put(&record) {
                Ok(()) => {}
                Err(StoreRefusal::SpoolFull) => return Err("spool-full"),
                Err(StoreRefusal::Io(e)) => {
                    log::error!("cannot write the chat spool ({e}); chat message refused");
                    return Err("spool-error");
                }
            }
        }
        if let (Some(id), Some(dedup)) = (&stamped.client_msg_id, &mut state.dedup) {
            let first = Stamp {
                message_id: stamped.message_id.clone(),
                server_ts: stamped.server_ts,
            };
            dedup.remember(&stamped.from_id, id, payload, first, now);
        }
        state.counters.chat_accepted += 1;
        if qos == 2 {
            let first = Stamp {
                message_id: stamped.message_id.clone(),
                server_ts: stamped.server_ts,
            };
            let topic = topic.as_bytes();
            state
                .resends
                .remember(client_id, topic, payload, first, now);
        }
        Ok(MessageVerdict::Replace(stamped.payload))
    }
}

/// The refusals that are a limit reached, not a fault of the message (`OverQuota`).
fn over_quota(reason: &str) -> bool {
    matches!(reason, "spool-full" | crate::limits::RATE_LIMITED)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
