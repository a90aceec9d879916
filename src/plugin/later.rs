//! Mosquitto 2.1's delayed logins, the plugin's side (the tables and threads are in
//! `crate::delayed`). A CONNECT the credential cache cannot answer is checked on a login
//! thread; the broker thread only queues it (`MOSQ_ERR_AUTH_DELAYED`). A user let in has its
//! rules loaded next, on a login thread too, for at most `rules_wait_ms` more; then, at a
//! TICK, a `CompleteLogin` action: the FFI edge completes the login, and the broker, inside
//! that call, sends the CONNACK and the CONNECT event, where the plugin binds the session to
//! the connection and installs the rules loaded with it, so the client's first check finds
//! them without waiting. Rules that did not come in time are loaded as on 2.0 (the first
//! check waits for them up to `rules_wait_ms`). A client that left meanwhile gets no
//! CONNECT: what was kept for it is dropped after the call.

use super::{Client, Entry, Plugin, State};
use crate::acl::RuleSet;
use crate::auth::{Authenticator, Decision, Identity, Refusal};
use crate::backend::{BackendError, RuleSource, UserSource};
use crate::delayed::{Held, LoginThreads, Waiting};
use crate::logging::printable;
use crate::refresh::{Done, Work};
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
/// How often a login refused because too many wait is said at warning level.
const FULL_SAID_EVERY: Duration = Duration::from_secs(60);

/// Work for a login thread.
pub(super) enum Request {
    /// Check one login.
    Login {
        client_id: Box<[u8]>,
        ticket: u64,
        username: Vec<u8>,
        password: Option<Vec<u8>>,
        address: Option<String>,
        /// Past this, its answer would be thrown away (the login ended overdue).
        deadline: Instant,
    },
    /// Load the rules of a user just let in.
    Rules {
        client_id: Box<[u8]>,
        ticket: u64,
        username: String,
        user_id: String,
        /// Past this (`rules_wait` after the login's answer), the login is completed without.
        deadline: Instant,
    },
}

impl Request {
    fn deadline(&self) -> Instant {
        match self {
            Request::Login { deadline, .. } | Request::Rules { deadline, .. } => *deadline,
        }
    }
}

/// A login thread's answer.
pub(super) enum Answer {
    Login {
        client_id: Box<[u8]>,
        ticket: u64,
        decision: Decision,
    },
    Rules {
        client_id: Box<[u8]>,
        ticket: u64,
        result: Result<RuleSet, BackendError>,
    },
}

/// A user let in whose rules are loading, until they come or `rules_wait` is over.
pub(super) struct AwaitingRules {
    ticket: u64,
    pointer: usize,
    identity: Identity,
    since: Instant,
}

/// A login let in, kept until the broker's CONNECT for its connection (inside the
/// completion call).
pub(super) struct Completing {
    pointer: usize,
    identity: Identity,
    rules: Option<RuleSet>,
}

pub(super) struct Later {
    threads: LoginThreads<Request, Answer>,
}

/// Logins of one account are checked one at a time, as on 2.0's broker thread: a flood of
/// wrong passwords for one name then meets the throttle's block after its first failure
/// instead of several hashes running at once. Names share one of these locks by their hash.
struct Turns(Vec<std::sync::Mutex<()>>);

impl Turns {
    fn new() -> Turns {
        Turns((0..64).map(|_| std::sync::Mutex::new(())).collect())
    }

    fn take(&self, username: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let name = crate::names::folded(&String::from_utf8_lossy(username)).into_owned();
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        let turn = &self.0[(hash % self.0.len() as u64) as usize];
        turn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The login threads' work: the same check as on the broker thread, or a rules load.
fn work<S: UserSource>(
    auth: &Authenticator<S>,
    rules: Option<&dyn RuleSource>,
    turns: &Turns,
    request: Request,
) -> Option<Answer> {
    // A request that waited in the queue past its use is not checked (in a backlog the
    // threads would otherwise serve only dead requests).
    if Instant::now() > request.deadline() {
        return None;
    }
    Some(match request {
        Request::Login {
            client_id,
            ticket,
            username,
            password,
            address,
            ..
        } => {
            let _turn = turns.take(&username);
            let decision = auth.login(
                Some(&username),
                password.as_deref(),
                &client_id,
                address.as_deref(),
                Instant::now(),
            );
            Answer::Login {
                client_id,
                ticket,
                decision,
            }
        }
        Request::Rules {
            client_id,
            ticket,
            username,
            user_id,
            ..
        } => Answer::Rules {
            client_id,
            ticket,
            result: match rules {
                Some(source) => source.load(&username, &user_id),
                None => Err(BackendError::Unavailable(
                    "no mysql or postgres backend".into(),
                )),
            },
        },
    })
}

impl Later {
    pub(super) fn start<S: UserSource + Send + Sync + 'static>(
        auth: Arc<Authenticator<S>>,
        rules: Option<Arc<dyn RuleSource>>,
        wake: Option<crate::action::Waker>,
    ) -> Result<Later, String> {
        let threads = LoginThreads::start(
            THREADS,
            QUEUE,
            {
                let turns = Turns::new();
                Arc::new(move |request| work(&auth, rules.as_deref(), &turns, request))
            },
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
        // A connection logged in already: the broker's re-check, which 2.1 cannot delay (it
        // disconnects on any answer but success), even after the re-check window closed.
        if state.registry.is_online_at(client_id, pointer) {
            return None;
        }
        // Whatever this id's earlier connection left waiting is for a connection that left
        // (see `Waiting::forget`), however this one is answered.
        state.waiting.forget(client_id);
        state.awaiting_rules.remove(client_id);
        if self.auth.is_cached(username, password, now) {
            return None;
        }
        let Ok(ticket) = state.waiting.begin(client_id, pointer, now) else {
            let why = format!(
                "{} logins wait for their check already",
                state.waiting.len()
            );
            Self::refused_unchecked(state, client_id, pointer, username, &why, now);
            return Some(Decision::Refuse(Refusal::Throttled));
        };
        let request = Request::Login {
            client_id: client_id.into(),
            ticket,
            username: username.to_vec(),
            password: password.map(<[u8]>::to_vec),
            address: client.facts.address(),
            deadline: now + LONGEST_WAIT,
        };
        if later.threads.submit(request).is_err() {
            state.waiting.finish(client_id, ticket);
            let why = "the login threads' queue is full";
            Self::refused_unchecked(state, client_id, pointer, username, why, now);
            return Some(Decision::Refuse(Refusal::Throttled));
        }
        Some(Decision::Later)
    }

    /// A login refused before any check, because too many wait: one warning a minute at
    /// most (a flood would otherwise write a line per connection), the rest at debug level.
    fn refused_unchecked(
        state: &mut State,
        client_id: &[u8],
        pointer: usize,
        username: &[u8],
        why: &str,
        now: Instant,
    ) {
        let user = printable(&String::from_utf8_lossy(username)).to_string();
        if state
            .logins_full_said
            .is_none_or(|said| now.duration_since(said) >= FULL_SAID_EVERY)
        {
            state.logins_full_said = Some(now);
            log::warn!("login refused for user '{user}': {why} (said once a minute)");
        } else {
            log::debug!("login refused for user '{user}': {why}");
        }
        state.registry.refused(client_id, pointer);
    }

    /// At TICK: the answers the login threads made, the rules that did not come in time,
    /// and the logins that waited too long, as `CompleteLogin` actions (in the outbox).
    pub(super) fn hand_over_logins(&self, state: &mut State, now: Instant) {
        let Some(later) = self.later.as_ref() else {
            return;
        };
        // Left by a completion whose TICK did not finish (a panic): for connections gone.
        state.completing.clear();
        for answer in later.threads.take() {
            match answer {
                Answer::Login {
                    client_id,
                    ticket,
                    decision,
                } => {
                    // None: taken over by a later login with the same id (this one left).
                    if let Some(held) = state.waiting.finish(&client_id, ticket) {
                        self.checked(state, later, client_id, held, decision, now);
                    }
                }
                Answer::Rules {
                    client_id,
                    ticket,
                    result,
                } => {
                    let current = state
                        .awaiting_rules
                        .get(&client_id)
                        .is_some_and(|a| a.ticket == ticket);
                    if current {
                        let awaiting = state.awaiting_rules.remove(&client_id).expect("held");
                        Self::complete(state, client_id, awaiting, result.ok());
                    }
                }
            }
        }
        let rules_wait = self.rules_wait;
        let late: Vec<Box<[u8]>> = state
            .awaiting_rules
            .iter()
            .filter(|(_, a)| now.duration_since(a.since) >= rules_wait)
            .map(|(id, _)| id.clone())
            .collect();
        for client_id in late {
            let awaiting = state.awaiting_rules.remove(&client_id).expect("held");
            Self::complete(state, client_id, awaiting, None);
        }
        for (client_id, held) in state.waiting.overdue(now) {
            let client = printable(&String::from_utf8_lossy(&client_id)).to_string();
            let why = format!(
                "no answer from its check within {} s",
                LONGEST_WAIT.as_secs()
            );
            if state
                .logins_overdue_said
                .is_none_or(|said| now.duration_since(said) >= FULL_SAID_EVERY)
            {
                state.logins_overdue_said = Some(now);
                log::warn!("login of client '{client}' refused: {why} (said once a minute)");
            } else {
                log::debug!("login of client '{client}' refused: {why}");
            }
            state.counters.login_refused("timeout");
            state.registry.refused(&client_id, held.pointer);
            state.outbox.push(crate::action::Action::CompleteLogin {
                client_id: client_id.into_vec(),
                accepted: false,
            });
        }
    }

    /// A login thread's decision: refused at once; let in, once its rules are loaded (or
    /// `rules_wait` is over), for a user whose rules are loaded per user.
    fn checked(
        &self,
        state: &mut State,
        later: &Later,
        client_id: Box<[u8]>,
        held: Held,
        decision: Decision,
        now: Instant,
    ) {
        let Held {
            ticket, pointer, ..
        } = held;
        let identity = match decision {
            Decision::Allow(identity) => identity,
            Decision::Refuse(why) => {
                match why {
                    Refusal::Throttled => state.counters.logins_throttled += 1,
                    why => state.counters.login_refused(why.name()),
                }
                state.registry.refused(&client_id, pointer);
                state.outbox.push(crate::action::Action::CompleteLogin {
                    client_id: client_id.into_vec(),
                    accepted: false,
                });
                return;
            }
            // A username was given: neither comes back.
            Decision::Defer | Decision::Later => {
                state.outbox.push(crate::action::Action::CompleteLogin {
                    client_id: client_id.into_vec(),
                    accepted: false,
                });
                return;
            }
        };
        state.counters.logins_accepted += 1;
        let awaiting = AwaitingRules {
            ticket,
            pointer,
            since: now,
            identity,
        };
        let loads_rules = (self.mysql.is_some() || self.postgres.is_some())
            && !awaiting.identity.superuser
            && awaiting.identity.backend.holds_rows();
        if loads_rules {
            let request = Request::Rules {
                client_id: client_id.clone(),
                ticket,
                username: awaiting.identity.username.clone(),
                user_id: awaiting.identity.user_id.clone(),
                deadline: now + self.rules_wait,
            };
            if later.threads.submit(request).is_ok() {
                state.awaiting_rules.insert(client_id, awaiting);
                return;
            }
        }
        Self::complete(state, client_id, awaiting, None);
    }

    /// Kept for the CONNECT the completion brings, and the completion asked for.
    fn complete(
        state: &mut State,
        client_id: Box<[u8]>,
        awaiting: AwaitingRules,
        rules: Option<RuleSet>,
    ) {
        state.completing.insert(
            client_id.clone(),
            Completing {
                pointer: awaiting.pointer,
                identity: awaiting.identity,
                rules,
            },
        );
        state.outbox.push(crate::action::Action::CompleteLogin {
            client_id: client_id.into_vec(),
            accepted: true,
        });
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
        // Another connection with this id (the one taken over, whose will is checked during
        // the completion) leaves the entry for the one completed.
        if state
            .completing
            .get(client_id)
            .is_none_or(|done| done.pointer != pointer)
        {
            return false;
        }
        let done = state.completing.remove(client_id).expect("checked");
        state.registry.login(
            client_id,
            pointer,
            LoginKind::Connect { persistent },
            &done.identity,
            now,
        );
        self.install_preloaded(state, &done.identity.username, done.rules, now);
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
        let mut state = self.enter(Entry::CompletionsDone);
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
        preloaded: Option<RuleSet>,
        now: Instant,
    ) {
        let Some(rules) = preloaded else {
            return;
        };
        let mut result = Some(Ok(rules));
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
