//! PUBLISH (MOSQ_EVT_MESSAGE): cluster commands from other brokers, and chat messages
//! through the chat pipeline (`crate::intake`).

use super::{Client, Entry, MessageVerdict, Plugin, State, now_ms};
use crate::chat::topics::classify;
use crate::cluster;
use crate::control;
use crate::intake::{self, ChatPublish, ChatRefusal, Intake, Verdict};
use crate::logging::printable;
use crate::refresh::Work;
use crate::sessions::Author;
use crate::sessions::Connection;
use crate::store::Store;

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
            Err(refusal) => {
                state.counters.chat_refused(refusal.name());
                if refusal.is_limit() {
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
                .author(Connection::new(client_id, client.pointer), client.facts),
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

    /// A PUBLISH on a chat topic (with validation on), through the chat pipeline
    /// (`intake::judge`); anything else passes untouched.
    fn judge(
        &self,
        state: &mut State,
        client: Client<'_>,
        topic: &[u8],
        payload: &[u8],
        qos: u8,
    ) -> Result<MessageVerdict, ChatRefusal> {
        let Some(validation) = &self.validation else {
            return Ok(MessageVerdict::Pass);
        };
        let Some((topic, chat)) = std::str::from_utf8(topic)
            .ok()
            .and_then(|topic| Some((topic, classify(self.chat.as_ref(), topic)?)))
        else {
            return Ok(MessageVerdict::Pass);
        };
        let client_id = client.id.unwrap_or_default();
        let State {
            registry,
            resends,
            dedup,
            store,
            counters,
            message_ids,
            ..
        } = state;
        let publish = ChatPublish {
            topic,
            chat,
            payload,
            qos,
            client_id,
            author: registry.author(Connection::new(client_id, client.pointer), client.facts),
        };
        let mut intake = Intake {
            validation,
            resends,
            dedup: dedup.as_mut(),
            spooler: store.as_mut().map(Store::spooler),
            ids: message_ids,
        };
        let verdict = intake::judge(&mut intake, &publish, now_ms()).inspect_err(|refusal| {
            let client = String::from_utf8_lossy(client_id);
            match refusal {
                ChatRefusal::SpoolError(_) => {
                    log::error!("chat message refused: {refusal}");
                }
                _ if log::log_enabled!(log::Level::Debug) => log::debug!(
                    "chat message from client '{}' on '{}' refused: {refusal}",
                    printable(&client),
                    printable(topic)
                ),
                _ => {}
            }
        })?;
        Ok(match verdict {
            Verdict::Accepted(payload) => {
                counters.chat_accepted += 1;
                MessageVerdict::Replace(payload)
            }
            Verdict::Retransmission(payload) => {
                counters.chat_retransmissions += 1;
                MessageVerdict::Replace(payload)
            }
            Verdict::Relayed => {
                counters.chat_relayed += 1;
                MessageVerdict::Pass
            }
        })
    }
}
