//! ACL checks, in memory; a client's first one waits a few milliseconds for the rules its
//! login asked for.

use super::{Client, Entry, LateRules, Plugin, State};
use crate::acl::Access;
use crate::logging::printable;
use crate::sessions::Connection;
use crate::sessions::{LoginKind, Pending};
use std::time::Instant;

impl Plugin {
    /// An ACL check; in memory only. Anything unknown is refused.
    pub fn acl_check(
        &self,
        client: Client<'_>,
        access: Access,
        topic: &[u8],
        retain: bool,
    ) -> bool {
        let (Some(client_id), Ok(topic)) = (client.id, std::str::from_utf8(topic)) else {
            return false;
        };
        let mut state = self.enter(Entry::AclCheck);
        if !state.completing.is_empty() {
            // Inside a delayed login's completion (2.1), before its CONNECT event: the
            // messages queued for a resumed session are checked as they are written out.
            let persistent = !client.facts.clean_session();
            self.bind_completed(
                &mut state,
                client_id,
                client.pointer,
                persistent,
                Instant::now(),
            );
        }
        let mut deadline = None;
        let allowed = loop {
            match state.registry.check(
                Connection::new(client_id, client.pointer),
                access,
                topic,
                retain,
                client.facts,
            ) {
                Ok(allowed) => break allowed,
                Err(Pending::Remote(username)) => {
                    // A miss waits on the service, bounded by http_timeout
                    // (docs/http-backend.md); answers are cached per client, topic and access.
                    break self.http.as_ref().is_some_and(|http| {
                        self.hushed(|| http.acl(&username, client_id, topic, access))
                    });
                }
                Err(Pending::CertificateLogin) => {
                    let kind = LoginKind::Connect {
                        persistent: !client.facts.clean_session(),
                        cached: false,
                    };
                    self.login_by_username(&mut state, client_id, client, kind);
                }
                Err(Pending::RestoredLogin) => {
                    self.login_by_username(&mut state, client_id, client, LoginKind::Restored);
                }
                Err(Pending::Rules) => {
                    // The client's login asked for its rules and this is its first check
                    // since: wait for them a few milliseconds (applying whatever else comes
                    // back meanwhile), and not at all while loads are late.
                    let now = Instant::now();
                    let until = *deadline.get_or_insert(now + self.rules_wait);
                    let done = match until.checked_duration_since(now) {
                        Some(left) if state.rules_late.is_none() => state.refresher.wait(left),
                        _ => None,
                    };
                    match done {
                        Some(done) => self.apply_done(&mut state, done, now),
                        None => {
                            Self::rules_late(&mut state, now);
                            state
                                .registry
                                .stop_waiting(Connection::new(client_id, client.pointer));
                        }
                    }
                }
            }
        };
        if allowed {
            state.counters.acl_allowed += 1;
        } else {
            state.counters.acl_denied += 1;
        }
        drop(state);
        if !allowed && log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "{access:?} of '{}' refused for client '{}'",
                printable(topic),
                printable(&String::from_utf8_lossy(client_id))
            );
        }
        allowed
    }

    /// A check answers from the rules held because its login's did not come in time; the
    /// first one of an episode says so.
    fn rules_late(state: &mut State, now: Instant) {
        let late = state.rules_late.get_or_insert_with(|| {
            log::warn!(
                "rules loads from MySQL are late (none came back within rules_wait_ms): \
                 checks answer from the rules held (a user's last known ones; a first \
                 login has only its own inbox) until loads come back"
            );
            LateRules {
                since: now,
                answered_from_memory: 0,
            }
        });
        late.answered_from_memory += 1;
    }

    /// A rules load came back: checks wait for their login's rules again.
    pub(super) fn rules_flow(state: &mut State, now: Instant) {
        if let Some(late) = state.rules_late.take() {
            log::info!(
                "rules loads come back again after {} ms; {} checks were answered from the \
                 rules held meanwhile",
                now.duration_since(late.since).as_millis(),
                late.answered_from_memory
            );
        }
    }
}
