//! Logins, re-checks, refusals and disconnects: sessions begin (a take-over of the client id
//! ends the one held), go offline or end here.

use super::Connection;
use super::{
    ClientFacts, Departed, LoginKind, Registry, RowNow, Session, State, UNBOUND, UNKNOWN_LOG_MEMORY,
};
use crate::acl::RuleSet;
use crate::auth::Identity;
use crate::logging::printable;
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Instant;

impl Registry {
    /// Records an accepted login. A CONNECT gets rules read after it, so changes committed
    /// before it apply to it: the login is accepted at once and a load is asked for
    /// (`urgent_jobs`), which the client's checks wait for (`check` answers
    /// `Pending::Rules`). A user's first login holds only its identity until then (no group,
    /// no row: a load that fails leaves it at that, so only the chat rules that need neither
    /// apply: the user's own inbox, and publishing to inboxes),
    /// so the broker thread never waits for the rules queries during a login. A recheck keeps
    /// the session's state and rules.
    pub fn login(
        &mut self,
        connection: Connection<'_>,
        kind: LoginKind,
        identity: &Identity,
        now: Instant,
    ) {
        let Connection { client_id, pointer } = connection;
        self.event();
        let existing = self
            .sessions
            .get(client_id)
            .filter(|s| s.pointer == pointer || s.pointer == UNBOUND)
            .filter(|s| *s.username == *identity.username)
            .map(|s| (s.state, s.persistent));
        let (state, persistent) = match (kind, existing) {
            (LoginKind::Recheck, Some(held)) => held,
            (LoginKind::Recheck, None) => (State::Online, false),
            (LoginKind::Connect { persistent, .. }, _) => (State::Online, persistent),
            (LoginKind::Restored, _) => (State::Offline, true),
        };
        let entry = self
            .users
            .get(identity.username.as_str())
            .filter(|e| *e.rules.user_id == *identity.user_id);
        let held = entry.is_some();
        // A login the credential cache answered keeps rules loaded less than
        // `acl_cacheseconds` ago: by that option's meaning, as current as the operator asks
        // rule answers to be; anything that may have changed them cleared `loaded`.
        let fresh = matches!(kind, LoginKind::Connect { cached: true, .. })
            && entry
                .and_then(|e| e.loaded)
                .is_some_and(|at| now.saturating_duration_since(at) < self.refresh);
        let mut awaiting = 0;
        if !identity.superuser && !identity.backend.asks_per_topic() && !fresh {
            if !held {
                // Until the rules arrive: the identity, and no group or row.
                self.install(
                    &identity.username,
                    RuleSet {
                        user_id: identity.user_id.clone(),
                        ..Default::default()
                    },
                    now,
                    0,
                );
            }
            if !held || !matches!(kind, LoginKind::Recheck) {
                let job = self.job(&identity.username, &identity.user_id, None, true);
                awaiting = job.ticket;
                self.urgent.push(job);
            }
        }
        // Otherwise a reconnect or a take-over of the id.
        self.remove_session(client_id);
        let username = match self.users.get_key_value(identity.username.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(identity.username.as_str()),
        };
        if let Some(entry) = self.users.get_mut(&username) {
            entry.clients += 1;
            if state == State::Online {
                entry.online += 1;
            }
        }
        self.sessions.insert(
            client_id.into(),
            Session {
                pointer,
                username: username.clone(),
                superuser: identity.superuser,
                backend: identity.backend,
                // Bridge accounts are rows of the user table (see `Identity::relay`).
                relay: identity.relay && !identity.backend.asks_per_topic(),
                state,
                persistent,
                proof: identity.proof,
                awaiting,
                generation: 0,
                patterns: None,
            },
        );
        if state == State::Offline {
            self.note_offline(client_id, pointer, &username);
        }
        self.dirty |= persistent;
    }

    /// A live client the broker let in by its TLS certificate (skipping BASIC_AUTH) that the
    /// plugin has not logged in at this connection, nor refused: Mosquitto 2.1's CONNECT
    /// event asks, so that it gets its identity when it connects rather than at its first
    /// check (the same conditions as the check's `Pending::CertificateLogin`).
    pub fn certificate_login_due(
        &self,
        connection: Connection<'_>,
        facts: &dyn ClientFacts,
    ) -> bool {
        let Connection { client_id, pointer } = connection;
        if !facts.has_certificate()
            || facts.address().is_none()
            || self
                .certificate_refused
                .contains(&(Box::<[u8]>::from(client_id), pointer))
        {
            return false;
        }
        self.sessions
            .get(client_id)
            .is_none_or(|session| session.pointer != pointer || session.state == State::Offline)
    }

    /// A certificate login that failed (unknown user, MySQL unavailable): this connection is
    /// refused everything and not looked up again until it disconnects.
    pub fn certificate_refused(&mut self, connection: Connection<'_>) {
        let Connection { client_id, pointer } = connection;
        if self.certificate_refused.len() >= UNKNOWN_LOG_MEMORY {
            self.certificate_refused.clear();
        }
        self.certificate_refused.insert((client_id.into(), pointer));
    }

    /// The identity a SIGHUP re-check of this connection would keep, with the proof of its
    /// verified password (`None` for a restored session), when its username is `username`.
    pub fn recheck_target(&self, connection: Connection<'_>, username: &str) -> Option<Identity> {
        let Connection { client_id, pointer } = connection;
        let session = self.sessions.get(client_id).filter(|s| {
            (s.pointer == pointer || s.pointer == UNBOUND) && *s.username == *username
        })?;
        Some(Identity {
            username: username.to_string(),
            user_id: self
                .users
                .get(&session.username)
                .map_or_else(|| username.to_string(), |e| e.rules.user_id.to_string()),
            superuser: session.superuser,
            proof: session.proof,
            backend: session.backend,
            relay: session.relay,
        })
    }

    /// A login of this connection that was not accepted: a session left at its address
    /// belonged to an earlier connection (the broker reused the memory) and ends here. A
    /// session of another connection with the same id is the live one and stays.
    pub fn refused(&mut self, connection: Connection<'_>) {
        let Connection { client_id, pointer } = connection;
        self.event();
        if self
            .sessions
            .get(client_id)
            .is_some_and(|s| s.pointer == pointer && s.state == State::Offline)
        {
            self.remove_session(client_id);
        }
    }

    /// A client went away. A persistent session stays, offline, so that messages queued
    /// for it are still judged by its rules.
    pub fn disconnect(&mut self, connection: Connection<'_>, clean: bool) {
        let Connection { client_id, pointer } = connection;
        self.event();
        // A refused certificate connection is looked up again when it comes back (its row
        // may exist by then, MySQL may be back), even at the same address.
        if !self.certificate_refused.is_empty() {
            self.certificate_refused
                .remove(&(Box::<[u8]>::from(client_id), pointer));
        }
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        if session.pointer != pointer || session.state != State::Online {
            return;
        }
        self.departed = Some(Departed {
            client_id: client_id.into(),
            pointer,
            username: session.username.clone(),
            superuser: session.superuser,
            backend: session.backend,
            relay: session.relay,
            awaiting: session.awaiting,
        });
        if clean || !session.persistent {
            self.remove_session(client_id);
            return;
        }
        session.state = State::Offline;
        let username = session.username.clone();
        if let Some(entry) = self.users.get_mut(&username) {
            entry.online = entry.online.saturating_sub(1);
        }
        self.note_offline(client_id, pointer, &username);
    }

    /// The user row was read again (after a SIGHUP re-check): sessions whose verified
    /// password no longer holds (`still_valid` false for their proof, or the user is gone:
    /// `None`) end. Returns the client ids of the online ones, to disconnect.
    pub fn user_checked(&mut self, username: &str, row: Option<RowNow<'_>>) -> Vec<Box<[u8]>> {
        // Not a broker event: applied at TICK, or while a check waits for rules (a will's
        // included), which must still find the connection that just left.
        let ending: Vec<(Box<[u8]>, State, &str)> = self
            .sessions
            .iter()
            .filter(|(_, s)| *s.username == *username && !s.backend.asks_per_topic())
            .filter_map(|(id, s)| {
                let why = match (&row, &s.proof) {
                    (None, _) => "no longer exists",
                    (Some((valid, _)), Some(proof)) if !valid(proof) => {
                        "has another stored password"
                    }
                    // Rights follow the row: the client logs in again as what it is now.
                    (Some((_, superuser)), _) if *superuser != s.superuser => {
                        if s.superuser {
                            "is no longer a superuser"
                        } else {
                            "is a superuser now"
                        }
                    }
                    _ => return None,
                };
                Some((id.clone(), s.state, why))
            })
            .collect();
        let mut kick = Vec::new();
        for (id, state, why) in ending {
            log::warn!(
                "user '{}' {why} since client '{}' logged in; its session ends",
                printable(username),
                printable(&String::from_utf8_lossy(&id))
            );
            self.remove_session(&id);
            if state == State::Online {
                kick.push(id);
            }
        }
        kick
    }

    pub(super) fn remove_session(&mut self, client_id: &[u8]) {
        let Some(session) = self.sessions.remove(client_id) else {
            return;
        };
        self.dirty |= session.persistent;
        if session.state == State::Offline {
            self.offline_count -= 1;
            if session.pointer == UNBOUND {
                self.unbound -= 1;
            }
            if let Some(of_user) = self.offline_by_user.get_mut(&session.username) {
                of_user.live -= 1;
                if of_user.live == 0 {
                    self.offline_by_user.remove(&session.username);
                }
            }
        }
        if let Some(entry) = self.users.get_mut(&session.username) {
            entry.clients = entry.clients.saturating_sub(1);
            if session.state == State::Online {
                entry.online = entry.online.saturating_sub(1);
            }
            if entry.clients == 0 {
                // Kept for a quick reconnect, then forgotten by `due_jobs` (an offline-only
                // user's entry may have left the due queue).
                let at = self
                    .clock
                    .max(entry.next_due.min(self.clock + self.refresh));
                entry.next_due = at;
                self.due.push(Reverse((at, session.username.clone())));
            }
        }
    }
}
