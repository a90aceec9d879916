//! The ACL decision for one check: the WRITE-then-MESSAGE window (deliveries that MESSAGE
//! never validated), the will of a connection that just left, certificate and restored
//! logins asked for, and the user's rules.

use super::Connection;
use super::rules::expand_all;
use super::{ClientFacts, Departed, Job, Pending, Registry, State, UNBOUND, UNKNOWN_LOG_MEMORY};
use crate::acl::{self, Access, Subject};
use crate::chat::topics::{self, ChatTopic};
use crate::cluster;
use crate::history;
use crate::logging::printable;
use std::collections::HashSet;
use std::sync::Arc;

/// FNV-1a, fixed: equal topics hash equally between a WRITE check and its deliveries, and
/// it costs a few instructions per byte on every chat WRITE. A collision (even a crafted
/// one) can only refuse a delivery, never allow one.
fn topic_hash(topic: &str) -> u64 {
    topic.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Registry {
    /// The ACL decision for one check; no I/O. A client the registry does not know (never
    /// logged in through this plugin, or forgotten) is refused. `Pending::Rules`: the client's
    /// login asked for its rules and they have not arrived; apply background results and
    /// ask again (or `stop_waiting`). The topic is classified once here, and the
    /// classification passed on.
    pub fn check(
        &mut self,
        connection: Connection<'_>,
        access: Access,
        topic: &str,
        retain: bool,
        facts: &dyn ClientFacts,
    ) -> Result<bool, Pending> {
        let Connection { client_id, pointer } = connection;
        let class = topics::classify(self.chat.as_ref(), topic);
        if access == Access::Read {
            // Deliveries of chat topics that MESSAGE never validated: a will (see
            // `unvalidated_write`), or a retained message from before the plugin (a retained
            // chat PUBLISH is refused at WRITE).
            let unvalidated = self.unvalidated_write.is_some()
                && self.unvalidated_write == Some(topic_hash(topic));
            if (unvalidated || retain) && class.is_some() {
                self.unvalidated_refused += 1;
                log::debug!(
                    "delivery of '{}' to client '{}' refused: not a validated chat message (a \
                     will, or a retained message)",
                    printable(topic),
                    printable(&String::from_utf8_lossy(client_id))
                );
                return Ok(false);
            }
        } else {
            self.unvalidated_write = None;
        }
        if let Some(departed) = self.departed.take() {
            if access == Access::Write
                && departed.pointer == pointer
                && *departed.client_id == *client_id
            {
                let verdict = self.will(&departed, topic, class, retain);
                if verdict == Err(Pending::Rules) {
                    // Asked again once the rules are in (or `stop_waiting`).
                    self.departed = Some(departed);
                }
                return verdict;
            }
        }
        let allowed = self.decide(client_id, pointer, access, topic, class, retain, facts)?;
        if allowed && access == Access::Write && class.is_some() {
            self.unvalidated_write = Some(topic_hash(topic));
        }
        Ok(allowed)
    }

    /// `class`: `topic`'s classification (see `check`).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        client_id: &[u8],
        pointer: usize,
        access: Access,
        topic: &str,
        class: Option<ChatTopic<'_>>,
        retain: bool,
        facts: &dyn ClientFacts,
    ) -> Result<bool, Pending> {
        // Asked only off the hot path (the facts are calls into the broker).
        let certificate_login_due = |refused: &HashSet<(Box<[u8]>, usize)>| {
            facts.has_certificate()
                && facts.address().is_some()
                && !refused.contains(&(Box::<[u8]>::from(client_id), pointer))
        };
        let Some(session) = self.sessions.get_mut(client_id) else {
            if certificate_login_due(&self.certificate_refused) {
                return Err(Pending::CertificateLogin);
            }
            if access == Access::Read
                && facts.address().is_none()
                && facts.username().is_some()
                && !self
                    .certificate_refused
                    .contains(&(Box::<[u8]>::from(client_id), pointer))
            {
                return Err(Pending::RestoredLogin);
            }
            self.note_unknown(client_id, class, facts);
            return Ok(false);
        };
        // A live TLS connection holding a certificate that the plugin has not logged in at
        // this address: the broker admitted it by its certificate, skipping BASIC_AUTH, to
        // resume a persistent session (held offline at its old address or restored after a
        // restart) or at the reused address of an offline one. An offline context holds no
        // certificate (the broker closes the TLS connection before it sends a will).
        if (session.pointer != pointer || session.state == State::Offline)
            && certificate_login_due(&self.certificate_refused)
        {
            return Err(Pending::CertificateLogin);
        }
        if session.pointer != pointer {
            let restored_context = session.pointer == UNBOUND
                && access == Access::Read
                && facts.address().is_none()
                && facts.username().as_deref() == Some(&*session.username);
            if !restored_context {
                return Ok(false);
            }
            self.rechecked(Connection::new(client_id, pointer));
            return self.decide(client_id, pointer, access, topic, class, retain, facts);
        }
        if session.state == State::Offline && access != Access::Read {
            if access == Access::Write {
                // A will sent later than the DISCONNECT (MQTT 5 will delay, session expiry),
                // or a PUBLISH of a client that never logged in: nothing offline writes.
                log::debug!(
                    "publish to '{}' in the name of offline client '{}' refused",
                    printable(topic),
                    printable(&String::from_utf8_lossy(client_id))
                );
                return Ok(false);
            }
            // Only a live connection subscribes, and this one reached the address of an
            // offline session without logging in through the plugin: the broker discarded
            // that session and reused its memory.
            log::info!(
                "client '{}' subscribed at the address of an offline session without logging \
                 in; the old session of user '{}' is forgotten",
                printable(&String::from_utf8_lossy(client_id)),
                printable(&session.username)
            );
            self.remove_session(client_id);
            self.note_unknown(client_id, class, facts);
            return Ok(false);
        }
        if session.superuser || access == Access::Unsubscribe {
            return Ok(true);
        }
        if topic == cluster::TOPIC {
            // Cluster commands: bridge accounts only, whatever the rows say.
            return Ok(session.relay);
        }
        if session.relay
            && self.chat.as_ref().is_some_and(|c| {
                if access == Access::Subscribe {
                    c.covers(topic)
                } else {
                    class.is_some()
                }
            })
        {
            // A bridge relays every chat topic, both ways (MESSAGE checks what it brings).
            return Ok(true);
        }
        if session.backend.asks_per_topic() {
            let username = session.username.clone();
            return self.remote(&username, class);
        }
        let Some(entry) = self.users.get_mut(&session.username) else {
            return Ok(false);
        };
        if session.awaiting != 0 {
            if entry.settled < session.awaiting {
                return Err(Pending::Rules);
            }
            session.awaiting = 0;
        }
        if self.history && history::granted(topic, access) {
            // Every chat user asks for its own history; what it may read is decided per
            // request (`history::plan`).
            return Ok(true);
        }
        if session.state == State::Offline && entry.next_due <= self.clock && !entry.in_flight {
            // An offline session's rules are refreshed only when the broker delivers to it.
            entry.in_flight = true;
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.wanted.push(Job {
                username: session.username.to_string(),
                user_id: entry.rules.user_id.to_string(),
                reply: None,
                ticket,
                urgent: false,
            });
        }
        let patterns = if entry.per_client {
            if session.generation != entry.generation || session.patterns.is_none() {
                let client_id = String::from_utf8_lossy(client_id);
                session.patterns = Some(Box::new(expand_all(
                    &entry.rules.rows,
                    &session.username,
                    &client_id,
                )));
                session.generation = entry.generation;
            }
            session.patterns.as_deref().unwrap_or(&entry.rules.rows)
        } else {
            session.patterns = None;
            &entry.rules.rows
        };
        Ok(acl::allowed(
            self.chat.as_ref(),
            Subject {
                user_id: &entry.rules.user_id,
                superuser: false,
                groups: Some(&entry.rules.groups),
                patterns,
            },
            access,
            topic,
            class,
            retain,
        ))
    }

    /// The will of a connection that just went away, judged as its user's PUBLISH: never
    /// on a chat topic (a will cannot be validated, stamped or stored), and like any
    /// PUBLISH elsewhere (a presence topic granted by an `aclquery` row, say).
    fn will(
        &mut self,
        departed: &Departed,
        topic: &str,
        class: Option<ChatTopic<'_>>,
        retain: bool,
    ) -> Result<bool, Pending> {
        if class.is_some() {
            log::info!(
                "will of client '{}' (user '{}') on chat topic '{}' refused: a will is never \
                 validated, stamped or stored",
                printable(&String::from_utf8_lossy(&departed.client_id)),
                printable(&departed.username),
                printable(topic)
            );
            return Ok(false);
        }
        if departed.superuser {
            return Ok(true);
        }
        if topic == cluster::TOPIC {
            // As for a PUBLISH (`decide`): bridge accounts only, whatever the rows say.
            return Ok(departed.relay);
        }
        if departed.backend.asks_per_topic() {
            return self.remote(&departed.username, class);
        }
        let Some(entry) = self.users.get(&departed.username) else {
            return Ok(false);
        };
        if departed.awaiting != 0 && entry.settled < departed.awaiting {
            // The client left before its first check: its will is judged by the rules its
            // login asked for, like a PUBLISH would have been.
            return Err(Pending::Rules);
        }
        let patterns = if entry.per_client {
            &expand_all(
                &entry.rules.rows,
                &departed.username,
                &String::from_utf8_lossy(&departed.client_id),
            )
        } else {
            &entry.rules.rows
        };
        Ok(acl::allowed(
            self.chat.as_ref(),
            Subject {
                user_id: &entry.rules.user_id,
                superuser: false,
                groups: Some(&entry.rules.groups),
                patterns,
            },
            Access::Write,
            topic,
            class,
            retain,
        ))
    }

    /// A user of the HTTP backend: no chat identity (chat topics need a MySQL user's id,
    /// groups and validation), so the chat topics are refused; the service decides the rest.
    fn remote(&self, username: &Arc<str>, class: Option<ChatTopic<'_>>) -> Result<bool, Pending> {
        if class.is_some() {
            return Ok(false);
        }
        Err(Pending::Remote(username.clone()))
    }

    /// A client with no session: one log line per client id (bounded), naming what it most
    /// likely is.
    fn note_unknown(
        &mut self,
        client_id: &[u8],
        class: Option<ChatTopic<'_>>,
        facts: &dyn ClientFacts,
    ) {
        if self.unknown_logged.contains(client_id) {
            return;
        }
        if self.unknown_logged.len() >= UNKNOWN_LOG_MEMORY {
            self.unknown_logged.clear();
        }
        self.unknown_logged.insert(client_id.into());
        let chat = class.is_some();
        log::warn!(
            "client '{}' (username '{}') is refused everything{}: chat-auth holds no session \
             for it (it did not log in with a password: a TLS certificate, PSK or anonymous \
             login, which chat-auth does not support yet; or its session ended)",
            printable(&String::from_utf8_lossy(client_id)),
            printable(&facts.username().unwrap_or_default()),
            if chat { ", chat topics included" } else { "" },
        );
    }

    /// A client's wait for its login's rules ended without them (timed out): its checks use
    /// the rules held.
    pub fn stop_waiting(&mut self, connection: Connection<'_>) {
        let Connection { client_id, pointer } = connection;
        if let Some(departed) = self
            .departed
            .as_mut()
            .filter(|d| d.pointer == pointer && *d.client_id == *client_id)
        {
            departed.awaiting = 0;
        }
        if let Some(session) = self
            .sessions
            .get_mut(client_id)
            .filter(|s| s.pointer == pointer)
        {
            session.awaiting = 0;
        }
    }
}
