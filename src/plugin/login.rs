//! Logins: BASIC_AUTH (a CONNECT, or the broker re-checking its clients after a SIGHUP),
//! Mosquitto 2.1's CONNECT, DISCONNECT, the reload itself, and the clients known only by the
//! username the broker holds for them.

use super::{Client, Entry, Plugin, State};
use crate::auth::{Decision, Identity, Refusal};
use crate::logging::printable;
use crate::refresh::Work;
use crate::sessions::Connection;
use crate::sessions::LoginKind;
use std::time::{Duration, Instant};

impl Plugin {
    /// One CONNECT, or the broker re-checking a client it holds (SIGHUP): the password,
    /// then the client's rules, loaded now so that changes committed before the CONNECT
    /// apply to it (a login the credential cache answers keeps rules loaded less than
    /// `acl_cacheseconds` ago: see `Registry::login`).
    pub fn basic_auth(
        &self,
        client: Client<'_>,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
    ) -> Decision {
        // The event is entered in `login_decision`.
        let decision = self.login_decision(client, username, password);
        let mut state = self.state();
        match &decision {
            Decision::Allow(_) => state.counters.logins_accepted += 1,
            Decision::Refuse(Refusal::Throttled) => state.counters.logins_throttled += 1,
            Decision::Refuse(why) => state.counters.login_refused(why.name()),
            Decision::Defer | Decision::Later => {}
        }
        decision
    }

    fn login_decision(
        &self,
        client: Client<'_>,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
    ) -> Decision {
        let now = Instant::now();
        let mut state = self.enter(Entry::BasicAuth);
        let rechecking = state
            .recheck_window
            .is_some_and(|since| now.duration_since(since) < RECHECK_WINDOW);
        if let (true, Some(client_id), Some(name)) = (
            rechecking,
            client.id,
            username.and_then(|u| std::str::from_utf8(u).ok()),
        ) {
            let held = state
                .registry
                .recheck_target(Connection::new(client_id, client.pointer), name);
            // A session restored after a restart has no proof: only the broker's own restored
            // context (never connected, so no address) passes without a password, never a
            // live connection that presents itself with that client id and username.
            let restored_context_only =
                |identity: &Identity| identity.proof.is_some() || client.facts.address().is_none();
            match held {
                Some(identity)
                    if restored_context_only(&identity)
                        && self
                            .auth
                            .same_login(name, password, identity.proof.as_ref()) =>
                {
                    // Verified before against this very password: no hash, no waiting on
                    // MySQL; the row is read again in the background.
                    state
                        .registry
                        .rechecked(Connection::new(client_id, client.pointer));
                    if identity.backend.holds_rows() {
                        // The service's users have no row to read again.
                        state.user_checks.insert(name.to_string(), now);
                    }
                    return Decision::Allow(identity);
                }
                // Another password than the verified one: checked in full below.
                Some(_) => {}
                None => return self.recheck_unheld(state, name, password, client_id, now),
            }
        }
        // One look-up in the credential cache serves the whole login (a HMAC and a map).
        let cached = match (rechecking, username) {
            (false, Some(name)) => self.auth.cached(name, password, now),
            _ => None,
        };
        if !rechecking {
            // Mosquitto 2.1: checked on a login thread unless decided here at once.
            if let Some(decision) = self.begin_later(
                &mut state,
                client,
                username,
                password,
                cached.is_some(),
                now,
            ) {
                return decision;
            }
        }
        drop(state);
        let address = client.facts.address();
        let from_cache = cached.is_some();
        // A re-check's failure is the broker's question, not a client's guess: not throttled.
        let decision = match (rechecking, cached, username) {
            (true, _, _) => {
                self.auth
                    .recheck(username, password, client.id.unwrap_or_default(), now)
            }
            (false, Some(identity), Some(name)) => self.auth.login_cached(
                name,
                identity,
                client.id.unwrap_or_default(),
                address.as_deref(),
                now,
            ),
            (false, _, _) => self.auth.login(
                username,
                password,
                client.id.unwrap_or_default(),
                address.as_deref(),
                now,
            ),
        };
        let mut state = self.state();
        let Some(client_id) = client.id else {
            if let Decision::Allow(identity) = &decision {
                log::warn!(
                    "login refused for user '{}': the broker gave no client id",
                    printable(&identity.username)
                );
                return Decision::Refuse(Refusal::NoClientId);
            }
            return decision;
        };
        let Decision::Allow(identity) = &decision else {
            state
                .registry
                .refused(Connection::new(client_id, client.pointer));
            return decision;
        };
        let kind = if rechecking && client.id.is_some() {
            LoginKind::Recheck
        } else {
            LoginKind::Connect {
                persistent: !client.facts.clean_session(),
                cached: from_cache,
            }
        };
        if let LoginKind::Connect { .. } = kind {
            if let Err(refusal) = Self::admit_connection(&mut state, client_id, identity) {
                state
                    .registry
                    .refused(Connection::new(client_id, client.pointer));
                return Decision::Refuse(refusal);
            }
        }
        state.registry.login(
            Connection::new(client_id, client.pointer),
            kind,
            identity,
            now,
        );
        if let LoginKind::Connect { .. } = kind {
            Self::connection_accepted(&mut state, client_id, client.pointer, identity);
        }
        // The rules load on a background thread while the broker goes on; the client's
        // first check waits for them (`acl_check`).
        Self::start_urgent(&mut state);
        decision
    }

    /// A re-check of a client the plugin holds no session for (an offline session it
    /// forgot, by a cap): checked once per username and password in this reload, however
    /// many such clients one account left behind; no session is made (it stays forgotten).
    fn recheck_unheld(
        &self,
        state: std::sync::MutexGuard<'_, State>,
        name: &str,
        password: Option<&[u8]>,
        client_id: &[u8],
        now: Instant,
    ) -> Decision {
        if let Some(identity) = state
            .recheck_memo
            .get(name)
            .filter(|i| self.auth.same_login(name, password, i.proof.as_ref()))
        {
            return Decision::Allow(identity.clone());
        }
        drop(state);
        let decision = self
            .auth
            .recheck(Some(name.as_bytes()), password, client_id, now);
        if let Decision::Allow(identity) = &decision {
            self.state()
                .recheck_memo
                .insert(name.to_string(), identity.clone());
        }
        decision
    }

    /// Mosquitto 2.1's CONNECT: a client is in, whatever the method. One the broker let in by
    /// its TLS certificate is looked up now (as at its first check on 2.0), so it is known as
    /// a logged-in client from its CONNACK on.
    pub fn connect(&self, client: Client<'_>) {
        let Some(client_id) = client.id else {
            return;
        };
        let mut state = self.enter(Entry::Connect);
        let persistent = !client.facts.clean_session();
        if self.bind_completed(
            &mut state,
            client_id,
            client.pointer,
            persistent,
            Instant::now(),
        ) {
            return;
        }
        if state
            .registry
            .certificate_login_due(Connection::new(client_id, client.pointer), client.facts)
        {
            let kind = LoginKind::Connect {
                persistent: !client.facts.clean_session(),
                cached: false,
            };
            self.login_by_username(&mut state, client_id, client, kind);
        }
    }

    /// A client the plugin first meets in an ACL check, known by the username the broker
    /// holds for it: one the broker let in by its TLS certificate
    /// (`use_identity_as_username`, `use_subject_as_username`; Mosquitto 2.0 skips
    /// BASIC_AUTH for it), or a persistent session the broker restored from its own
    /// persistence that no sessions file gave the plugin. It is looked up by that username
    /// (the user row without a password check, or `cert_userquery`) on the broker thread,
    /// within the usual timeouts, once per connection; from then on it is a logged-in
    /// client (online), or an offline session (restored). An unknown user is refused
    /// everything (one warning).
    pub(super) fn login_by_username(
        &self,
        state: &mut State,
        client_id: &[u8],
        client: Client<'_>,
        kind: LoginKind,
    ) {
        let (how, with) = match kind {
            LoginKind::Restored => (
                "restored from the broker's persistence",
                "restored from the broker's persistence",
            ),
            _ => ("logged in by its TLS certificate", "with a TLS certificate"),
        };
        let username = client.facts.username().unwrap_or_default();
        let identity = if username.is_empty() {
            // Let in without a username (allow_anonymous, another plugin's extended auth):
            // the certificate names nobody the plugin could look up.
            Err(
                "the broker gave it no username (use_identity_as_username or \
                 use_subject_as_username is not set on its listener)"
                    .to_string(),
            )
        } else {
            self.hushed(|| self.auth.certificate_identity(&username, Instant::now()))
                .map_err(|why| why.to_string())
        };
        let login = identity.inspect(|identity| {
            state.registry.login(
                Connection::new(client_id, client.pointer),
                kind,
                identity,
                Instant::now(),
            );
        });
        match login {
            Ok(identity) => {
                if let LoginKind::Connect { .. } = kind {
                    // Counted, never refused: the broker let it in before the plugin heard.
                    Self::connection_accepted(state, client_id, client.pointer, &identity);
                }
                Self::start_urgent(state);
                log::info!(
                    "client '{}' {how} as user '{}' (user id '{}')",
                    printable(&String::from_utf8_lossy(client_id)),
                    printable(&identity.username),
                    printable(&identity.user_id)
                );
            }
            Err(why) => {
                state
                    .registry
                    .certificate_refused(Connection::new(client_id, client.pointer));
                log::warn!(
                    "client '{}' {with} for user '{}' is refused everything: {why}",
                    printable(&String::from_utf8_lossy(client_id)),
                    printable(&username)
                );
            }
        }
    }

    /// Starts the rules loads logins asked for (ahead of other background work).
    pub(super) fn start_urgent(state: &mut State) {
        for job in state.registry.urgent_jobs() {
            state.refresher.submit_urgent(Work::Rules(job));
        }
    }

    pub fn disconnect(&self, client: Client<'_>, clean_session: bool) {
        if let Some(client_id) = client.id {
            let mut state = self.enter(Entry::Disconnect);
            state
                .registry
                .disconnect(Connection::new(client_id, client.pointer), clean_session);
            state.limits.disconnected(client_id, client.pointer);
        }
    }

    /// SIGHUP: every connected user's rules are reloaded in the background, and the
    /// broker's re-checks of its clients, which follow at once, are answered from memory.
    pub fn reload(&self) {
        let mut state = self.enter(Entry::Reload);
        let jobs = state.registry.refresh_all();
        log::info!("reload: refreshing the rules of {} users", jobs.len());
        for job in jobs {
            state.refresher.submit(Work::Rules(job));
        }
        if let Some(http) = &self.http {
            // The operator may have changed the service's rules: its answers are asked
            // again in the background (nothing is asked here, nor in the re-checks).
            http.reload();
        }
    }
}

/// The longest a reload's re-check window lasts without another event ending it.
const RECHECK_WINDOW: Duration = Duration::from_secs(5);
