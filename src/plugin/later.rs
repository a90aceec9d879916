//! Mosquitto 2.1's delayed logins, the plugin's side (the tables and threads are in
//! `crate::delayed`). A CONNECT the credential cache cannot answer is checked on a login
//! thread, which also loads the user's rules; the broker thread only queues it
//! (`MOSQ_ERR_AUTH_DELAYED`). At a later TICK the answer becomes a `CompleteLogin` action;
//! the FFI edge completes the login, and the broker, inside that call, sends the CONNACK
//! and the CONNECT event, where the plugin binds the session to the connection and installs
//! the rules loaded with it: the client's first check finds them without waiting. A client
//! that left meanwhile gets no CONNECT: what was kept for it is dropped after the call.

use super::{Client, Plugin, State};
use crate::acl::RuleSet;
use crate::auth::{Authenticator, BackendKind, Decision, Identity, Refusal};
use crate::db::DbError;
use crate::delayed::{LoginThreads, Waiting};
use crate::logging::printable;
use crate::refresh::{Done, RuleSource, Work};
use crate::sessions::{Loaded, LoginKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Login threads: the checks wait on MySQL or the HTTP service (each within its timeouts),
/// hashing is a few milliseconds at most; four keep the pools busy without crowding the
/// broker thread's core.
const THREADS: usize = 4;
/// Checks queued beyond the threads; a login that finds the queue full is refused at once.
const QUEUE: usize = 1_000;
/// Logins held by the broker for the plugin at once; beyond, refused at once.
const MOST_WAITING: usize = 10_000;
/// A login not answered within this is refused (the threads' own timeouts end far sooner:
/// this is for a check that never returns).
pub(super) const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// One login to check.
pub(super) struct Request {
    client_id: Box<[u8]>,
    ticket: u64,
    username: Vec<u8>,
    password: Option<Vec<u8>>,
    address: Option<String>,
}

/// A check's answer, with the user's rules when it was let in.
pub(super) struct Checked {
    client_id: Box<[u8]>,
    ticket: u64,
    decision: Decision,
    rules: Option<Result<RuleSet, DbError>>,
}

/// A login let in, kept until the broker's CONNECT event for its connection (inside the
/// completion call).
pub(super) struct Completing {
    pointer: usize,
    identity: Identity,
    rules: Option<Result<RuleSet, DbError>>,
}

pub(super) struct Later {
    threads: LoginThreads<Request, Checked>,
}

/// The login threads' work: the same check as on the broker thread, then the rules.
fn check<S: crate::auth::UserSource>(
    auth: &Authenticator<S>,
    rules: Option<&dyn RuleSource>,
    request: Request,
) -> Checked {
    let decision = auth.login(
        Some(&request.username),
        request.password.as_deref(),
        &request.client_id,
        request.address.as_deref(),
        Instant::now(),
    );
    let rules = match (&decision, rules) {
        (Decision::Allow(identity), Some(source))
            if !identity.superuser && identity.backend == BackendKind::Mysql =>
        {
            Some(source.load(&identity.username, &identity.user_id))
        }
        _ => None,
    };
    Checked {
        client_id: request.client_id,
        ticket: request.ticket,
        decision,
        rules,
    }
}

impl Later {
    pub(super) fn start<S: crate::auth::UserSource + Send + Sync + 'static>(
        auth: Arc<Authenticator<S>>,
        rules: Option<Arc<dyn RuleSource>>,
        wake: Option<crate::action::Waker>,
    ) -> Result<Later, String> {
        let threads = LoginThreads::start(
            THREADS,
            QUEUE,
            Arc::new(move |request| check(&auth, rules.as_deref(), request)),
            wake,
        )?;
        Ok(Later { threads })
    }
}

pub(super) fn waiting() -> Waiting {
    Waiting::new(MOST_WAITING, LONGEST_WAIT)
}

impl Plugin {
    /// A CONNECT on Mosquitto 2.1: `Some(Later)` when it goes to a login thread, `None` when
    /// the broker thread decides it now (no username, no client id, the credential cache
    /// knows it, or no delayed logins).
    pub(super) fn begin_later(
        &self,
        state: &mut State,
        client: Client<'_>,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
        now: Instant,
    ) -> Option<Decision> {
        let later = self.later.as_ref()?;
        let pointer = client.pointer;
        let (Some(client_id), Some(username)) = (client.id, username) else {
            return None;
        };
        if self.auth.is_cached(username, password, now) {
            return None;
        }
        let Ok(ticket) = state.waiting.begin(client_id, pointer, now) else {
            log::warn!(
                "login refused for user '{}': {} logins wait for their check already",
                printable(&String::from_utf8_lossy(username)),
                state.waiting.len()
            );
            state.registry.refused(client_id, pointer);
            return Some(Decision::Refuse(Refusal::Throttled));
        };
        let request = Request {
            client_id: client_id.into(),
            ticket,
            username: username.to_vec(),
            password: password.map(<[u8]>::to_vec),
            address: client.facts.address(),
        };
        if later.threads.submit(request).is_err() {
            state.waiting.finish(client_id, ticket);
            log::warn!(
                "login refused for user '{}': the login threads' queue is full",
                printable(&String::from_utf8_lossy(username))
            );
            state.registry.refused(client_id, pointer);
            return Some(Decision::Refuse(Refusal::Throttled));
        }
        Some(Decision::Later)
    }

    /// At TICK: the answers the login threads made, and the logins that waited too long,
    /// as `CompleteLogin` actions (in the outbox).
    pub(super) fn hand_over_logins(&self, state: &mut State, now: Instant) {
        let Some(later) = self.later.as_ref() else {
            return;
        };
        for checked in later.threads.take() {
            let Some(held) = state.waiting.finish(&checked.client_id, checked.ticket) else {
                // Taken over by a later login with the same id (this connection left).
                continue;
            };
            let accepted = match checked.decision {
                Decision::Allow(identity) => {
                    state.counters.logins_accepted += 1;
                    state.completing.insert(
                        checked.client_id.clone(),
                        Completing {
                            pointer: held.pointer,
                            identity,
                            rules: checked.rules,
                        },
                    );
                    true
                }
                Decision::Refuse(why) => {
                    match why {
                        Refusal::Throttled => state.counters.logins_throttled += 1,
                        why => state.counters.login_refused(why.name()),
                    }
                    state.registry.refused(&checked.client_id, held.pointer);
                    false
                }
                // A username was given: neither comes back.
                Decision::Defer | Decision::Later => false,
            };
            state.outbox.push(crate::action::Action::CompleteLogin {
                client_id: checked.client_id.into_vec(),
                accepted,
            });
        }
        for (client_id, held) in state.waiting.overdue(now) {
            log::warn!(
                "login of client '{}' refused: no answer from its check within {} s",
                printable(&String::from_utf8_lossy(&client_id)),
                LONGEST_WAIT.as_secs()
            );
            state.counters.login_refused("timeout");
            state.registry.refused(&client_id, held.pointer);
            state.outbox.push(crate::action::Action::CompleteLogin {
                client_id: client_id.into_vec(),
                accepted: false,
            });
        }
    }

    /// The broker's CONNECT for a login completed from here: the session is bound to the
    /// connection and the rules loaded with the login are installed. `false` when the
    /// connection is not one this plugin completed.
    pub(super) fn bind_completed(
        &self,
        state: &mut State,
        client_id: &[u8],
        pointer: usize,
        persistent: bool,
        now: Instant,
    ) -> bool {
        let Some(done) = state.completing.remove(client_id) else {
            return false;
        };
        if done.pointer != pointer {
            return false;
        }
        state.registry.login(
            client_id,
            pointer,
            LoginKind::Connect { persistent },
            &done.identity,
            now,
        );
        let preloaded = done.rules.filter(Result::is_ok);
        self.install_preloaded(state, &done.identity.username, preloaded, now);
        Self::start_urgent(state);
        log::debug!(
            "login accepted for user '{}' (user id '{}'), completed",
            printable(&done.identity.username),
            printable(&done.identity.user_id)
        );
        true
    }

    /// After the TICK's completions: what no CONNECT took was for clients that left.
    pub fn completions_done(&self) {
        let mut state = self.state();
        for (client_id, done) in state.completing.drain() {
            log::debug!(
                "login of client '{}' (user '{}') completed after it left",
                printable(&String::from_utf8_lossy(&client_id)),
                printable(&done.identity.username)
            );
        }
    }

    /// The rules a login thread loaded for `username` stand for the load the login just
    /// asked for (its urgent job: with the job's ticket the registry takes them as current);
    /// a load that failed is left to the background threads, which try again.
    fn install_preloaded(
        &self,
        state: &mut State,
        username: &str,
        preloaded: Option<Result<RuleSet, DbError>>,
        now: Instant,
    ) {
        let Some(result) = preloaded else {
            return;
        };
        let mut result = Some(result);
        for job in state.registry.urgent_jobs() {
            match result.take_if(|_| job.username == username) {
                Some(result) => {
                    let loaded = Loaded { job, result };
                    self.apply_done(state, Done::Rules(Box::new(loaded)), now);
                }
                None => state.refresher.submit_urgent(Work::Rules(job)),
            }
        }
    }
}
