//! Offline persistent sessions: their eviction order and caps, and the sessions file that
//! keeps them across a broker restart (restored unbound, tied to a broker context later).

use super::Connection;
use super::{Job, Registry, SavedSession, Session, State, UNBOUND};
use crate::acl::RuleSet;
use crate::logging::printable;
use std::sync::Arc;
use std::time::Instant;

impl Registry {
    /// A re-check accepted from memory: the session stays as it is (a restored one is now
    /// tied to this broker context, and its place in the eviction order carries the pointer).
    pub fn rechecked(&mut self, connection: Connection<'_>) {
        let Connection { client_id, pointer } = connection;
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        if session.pointer == UNBOUND {
            session.pointer = pointer;
            self.unbound -= 1;
            let username = session.username.clone();
            self.offline.push_back((client_id.into(), pointer));
            if let Some(of_user) = self.offline_by_user.get_mut(&username) {
                of_user.order.push_back((client_id.into(), pointer));
            }
        }
    }

    /// Sessions from the sessions file, at start: offline, not yet tied to a broker context.
    /// Their users' rules are loaded by the jobs returned.
    pub fn restore(&mut self, saved: Vec<SavedSession>, now: Instant) -> Vec<Job> {
        let mut jobs = Vec::new();
        // The load each user's sessions wait for at their first check (as a login's): chat
        // queued for a restored session right after a restart is checked against the rules,
        // not against the identity alone.
        let mut tickets: std::collections::HashMap<Arc<str>, u64> = Default::default();
        for session in saved {
            if self.sessions.contains_key(session.client_id.as_bytes()) {
                continue;
            }
            let username: Arc<str> = match self.users.get_key_value(session.username.as_str()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(session.username.as_str()),
            };
            if !session.superuser && !session.backend.asks_per_topic() {
                if !self.users.contains_key(&username) {
                    // Until the rules arrive: the identity, and no group or row.
                    self.install(
                        &username,
                        RuleSet {
                            user_id: session.user_id.clone(),
                            ..Default::default()
                        },
                        now,
                        0,
                    );
                    if let Some(entry) = self.users.get_mut(&username) {
                        entry.in_flight = true;
                    }
                    let job = self.job(&session.username, &session.user_id, None, true);
                    tickets.insert(username.clone(), job.ticket);
                    jobs.push(job);
                }
                if let Some(entry) = self.users.get_mut(&username) {
                    entry.clients += 1;
                }
            }
            self.sessions.insert(
                session.client_id.as_bytes().into(),
                Session {
                    pointer: UNBOUND,
                    username: username.clone(),
                    superuser: session.superuser,
                    backend: session.backend,
                    relay: session.relay && !session.backend.asks_per_topic(),
                    state: State::Offline,
                    persistent: true,
                    proof: None,
                    awaiting: tickets.get(&username).copied().unwrap_or(0),
                    generation: 0,
                    patterns: None,
                },
            );
            self.unbound += 1;
            self.note_offline(session.client_id.as_bytes(), UNBOUND, &username);
        }
        jobs
    }

    /// The persistent sessions, for the sessions file, when they changed since the last
    /// call (`force`: in any case).
    pub fn persistent_sessions(&mut self, force: bool) -> Option<Vec<SavedSession>> {
        if !self.dirty && !force {
            return None;
        }
        self.dirty = false;
        Some(
            self.sessions
                .iter()
                .filter(|(_, s)| s.persistent)
                .map(|(id, s)| SavedSession {
                    client_id: String::from_utf8_lossy(id).into_owned(),
                    username: s.username.to_string(),
                    user_id: self
                        .users
                        .get(&s.username)
                        .map_or_else(|| s.username.to_string(), |e| e.rules.user_id.to_string()),
                    superuser: s.superuser,
                    backend: s.backend,
                    relay: s.relay,
                })
                .collect(),
        )
    }

    /// The sessions file has to be written again (the last write failed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Books a session that just became offline, then applies the caps: first the user's
    /// own oldest, then everyone's oldest.
    pub(super) fn note_offline(&mut self, client_id: &[u8], pointer: usize, username: &Arc<str>) {
        self.offline_count += 1;
        self.offline.push_back((client_id.into(), pointer));
        let of_user = self.offline_by_user.entry(username.clone()).or_default();
        of_user.order.push_back((client_id.into(), pointer));
        of_user.live += 1;
        let mut evict = Vec::new();
        while of_user.live > self.caps.per_user {
            let Some((id, pointer)) = of_user.order.pop_front() else {
                break;
            };
            if is_live_offline(&self.sessions, &id, pointer) && !evict.contains(&id) {
                of_user.live -= 1;
                evict.push(id);
            }
        }
        // Reconnected sessions leave stale entries behind; drop them now and then.
        if of_user.order.len() > 2 * of_user.live + 16 {
            let sessions = &self.sessions;
            of_user
                .order
                .retain(|(id, pointer)| is_live_offline(sessions, id, *pointer));
        }
        for id in evict {
            log::warn!(
                "user '{}' has more than {} offline persistent sessions: forgetting its oldest \
                 ('{}'); messages queued for it are refused until it logs in again",
                printable(username),
                self.caps.per_user,
                printable(&String::from_utf8_lossy(&id))
            );
            // Counted out of `live` above already: keep `remove_session` from doing it again.
            if let Some(of_user) = self.offline_by_user.get_mut(username) {
                of_user.live += 1;
            }
            self.remove_session(&id);
        }
        self.enforce_offline_cap();
    }

    fn enforce_offline_cap(&mut self) {
        while self.offline_count > self.caps.total {
            let Some((id, pointer)) = self.offline.pop_front() else {
                break;
            };
            if is_live_offline(&self.sessions, &id, pointer) {
                log::warn!(
                    "more than {} offline persistent sessions: forgetting the oldest ('{}'); \
                     messages queued for it are refused until it logs in again",
                    self.caps.total,
                    printable(&String::from_utf8_lossy(&id))
                );
                self.remove_session(&id);
            }
        }
        if self.offline.len() > 2 * self.offline_count + 1024 {
            let sessions = &self.sessions;
            self.offline
                .retain(|(id, pointer)| is_live_offline(sessions, id, *pointer));
        }
    }
}

fn is_live_offline(sessions: &super::Map<Box<[u8]>, Session>, id: &[u8], pointer: usize) -> bool {
    sessions
        .get(id)
        .is_some_and(|s| s.state == State::Offline && s.pointer == pointer)
}
