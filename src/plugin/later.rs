//! Mosquitto 2.1's delayed logins, the plugin's side (the tables and threads are in
//! `crate::delayed`). A CONNECT the credential cache cannot answer is checked on a login
//! thread; the broker thread only queues it (`MOSQ_ERR_AUTH_DELAYED`). A user let in has its
//! rules loaded next by the same login thread, right after the password, and waits for
//! them at most `rules_wait_ms` more; then, at a
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
use crate::delayed::{Held, LoginThreads, Post, Waiting};
use crate::logging::printable;
use crate::refresh::Work;
use crate::sessions::{Connection, LoginKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Login threads: the checks wait on MySQL or the HTTP service (each within its timeouts),
/// hashing is a few milliseconds at most. As many as the MySQL pool has connections
/// (`pool_size`), so each can hold one, within these bounds: fewer would leave the pool idle
/// in a storm, more would crowd the broker thread's core.
const FEWEST_THREADS: usize = 4;
const MOST_THREADS: usize = 16;
/// Checks queued beyond the threads; a login that finds the queue full is refused at once.
const QUEUE: usize = 1_000;
/// Logins held by the broker for the plugin at once; beyond, refused at once.
const MOST_WAITING: usize = 10_000;
/// A login not answered within this is refused (the threads' own timeouts end far sooner:
/// this is for a check that never returns).
pub(super) const LONGEST_WAIT: Duration = Duration::from_secs(10);
/// How often a login refused because too many wait is said at warning level.
const FULL_SAID_EVERY: Duration = Duration::from_secs(60);

/// The number of login threads for a MySQL pool of `pool_size` connections (none: the
/// fewest).
pub(super) fn threads_for(pool_size: Option<usize>) -> usize {
    pool_size
        .unwrap_or(FEWEST_THREADS)
        .clamp(FEWEST_THREADS, MOST_THREADS)
}

/// Work for a login thread: one login to check, and, if it is let in, its rules to load
/// right after (no second trip through the queue).
pub(super) struct Request {
    client_id: Box<[u8]>,
    ticket: u64,
    username: Vec<u8>,
    password: Option<Vec<u8>>,
    address: Option<String>,
    /// Past this, its answer would be thrown away (the login ended overdue).
    deadline: Instant,
    /// A registry ticket taken before the request was queued, so before its rules are
    /// read: a rules load asked for later (a `refreshUser`) is newer than these rules,
    /// whichever finishes first (see `Registry::apply_preloaded`).
    rules_read: u64,
}

/// A login thread's answers: the login's, then, for a user let in whose rules are loaded
/// per user, the rules (`rules_follow`).
pub(super) enum Answer {
    Login {
        client_id: Box<[u8]>,
        ticket: u64,
        decision: Decision,
        rules_follow: bool,
    },
    Rules {
        client_id: Box<[u8]>,
        ticket: u64,
        result: Result<RuleSet, BackendError>,
        rules_read: u64,
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
    /// The rules loaded with the login, and the registry ticket taken before they were read.
    rules: Option<(RuleSet, u64)>,
}

pub(super) struct Later {
    threads: LoginThreads<Request, Answer>,
}

/// Logins of one account are checked one at a time, as on 2.0's broker thread: a flood of
/// wrong passwords for one name then meets the throttle's block after its first failure
/// instead of several hashes running at once. Names share one of these turns by their hash.
/// A login whose turn is taken is left with the thread that holds it, which checks it next:
/// one account's burst occupies one login thread, never all of them.
struct Turns(Vec<std::sync::Mutex<Turn>>);

#[derive(Default)]
struct Turn {
    /// A thread is checking a login of this turn.
    taken: bool,
    /// Logins left for that thread (at most `QUEUE`).
    left: std::collections::VecDeque<Request>,
}

/// Gives the turn back if a check panics (the logins left wait for the next one taking it).
struct Taken<'a> {
    turn: &'a std::sync::Mutex<Turn>,
    /// Still held (cleared when given back in the ordinary way, under the turn's lock).
    held: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.held {
            self.turn.lock().unwrap_or_else(|e| e.into_inner()).taken = false;
        }
    }
}

impl Turns {
    fn new() -> Turns {
        Turns((0..64).map(|_| Default::default()).collect())
    }

    fn of(&self, username: &[u8]) -> &std::sync::Mutex<Turn> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let name = crate::names::folded(&String::from_utf8_lossy(username)).into_owned();
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        &self.0[(hash % self.0.len() as u64) as usize]
    }
}

/// The login threads' work: the request's check and those left to its turn meanwhile.
fn work<S: UserSource>(
    auth: &Authenticator<S>,
    rules: Option<&dyn RuleSource>,
    turns: &Turns,
    request: Request,
    post: &Post<Answer>,
) {
    let turn = turns.of(&request.username);
    {
        let mut held = turn.lock().unwrap_or_else(|e| e.into_inner());
        if held.taken {
            if held.left.len() < QUEUE {
                held.left.push_back(request);
            } else {
                // One account's backlog is full: refused unchecked, as a full queue is.
                post.send(Answer::Login {
                    client_id: request.client_id,
                    ticket: request.ticket,
                    decision: Decision::Refuse(Refusal::Throttled),
                    rules_follow: false,
                });
            }
            return;
        }
        held.taken = true;
    }
    let mut taken = Taken { turn, held: true };
    let mut next = Some(request);
    while let Some(request) = next {
        check(auth, rules, request, post);
        let mut held = turn.lock().unwrap_or_else(|e| e.into_inner());
        next = held.left.pop_front();
        if next.is_none() {
            // Given back under the same lock that found nothing left: a login left after
            // this finds the turn free and takes it.
            held.taken = false;
            taken.held = false;
        }
    }
}

/// One login: the same check as on the broker thread; for a user let in whose rules are
/// loaded per user, the answer goes out and the rules are loaded at once.
fn check<S: UserSource>(
    auth: &Authenticator<S>,
    rules: Option<&dyn RuleSource>,
    request: Request,
    post: &Post<Answer>,
) {
    // A request that waited in the queue past its use is not checked (in a backlog the
    // threads would otherwise serve only dead requests).
    if Instant::now() > request.deadline {
        return;
    }
    let Request {
        client_id,
        ticket,
        username,
        password,
        address,
        rules_read,
        ..
    } = request;
    let decision = auth.login(
        Some(&username),
        password.as_deref(),
        &client_id,
        address.as_deref(),
        Instant::now(),
    );
    let load = match (&decision, rules) {
        (Decision::Allow(identity), Some(source))
            if !identity.superuser && identity.backend.holds_rows() =>
        {
            Some((source, identity.username.clone(), identity.user_id.clone()))
        }
        _ => None,
    };
    post.send(Answer::Login {
        client_id: client_id.clone(),
        ticket,
        decision,
        rules_follow: load.is_some(),
    });
    if let Some((source, username, user_id)) = load {
        post.send(Answer::Rules {
            client_id,
            ticket,
            result: source.load(&username, &user_id),
            rules_read,
        });
    }
}

impl Later {
    pub(super) fn start<S: UserSource + Send + Sync + 'static>(
        auth: Arc<Authenticator<S>>,
        rules: Option<Arc<dyn RuleSource>>,
        threads: usize,
        wake: Option<crate::action::Waker>,
    ) -> Result<Later, String> {
        let threads = LoginThreads::start(
            threads,
            QUEUE,
            {
                let turns = Turns::new();
                Arc::new(move |request, post: &Post<Answer>| {
                    work(&auth, rules.as_deref(), &turns, request, post)
                })
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
        cached: bool,
        now: Instant,
    ) -> Option<Decision> {
        let later = self.later.as_ref()?;
        let pointer = client.pointer;
        let (Some(client_id), Some(username)) = (client.id, username) else {
            return None;
        };
        // A connection logged in already: the broker's re-check, which 2.1 cannot delay (it
        // disconnects on any answer but success), even after the re-check window closed.
        if state
            .registry
            .is_online_at(Connection::new(client_id, pointer))
        {
            return None;
        }
        // Whatever this id's earlier connection left waiting is for a connection that left
        // (see `Waiting::forget`), however this one is answered.
        state.waiting.forget(client_id);
        state.awaiting_rules.remove(client_id);
        if cached {
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
        let request = Request {
            client_id: client_id.into(),
            ticket,
            username: username.to_vec(),
            password: password.map(<[u8]>::to_vec),
            address: client.facts.address(),
            deadline: now + LONGEST_WAIT,
            rules_read: state.registry.reserve_ticket(),
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
        state.registry.refused(Connection::new(client_id, pointer));
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
                    rules_follow,
                } => {
                    // None: taken over by a later login with the same id (this one left).
                    if let Some(held) = state.waiting.finish(&client_id, ticket) {
                        Self::checked(state, client_id, held, decision, rules_follow, now);
                    }
                }
                Answer::Rules {
                    client_id,
                    ticket,
                    result,
                    rules_read,
                } => {
                    let current = state
                        .awaiting_rules
                        .get(&client_id)
                        .is_some_and(|a| a.ticket == ticket);
                    if current {
                        let awaiting = state.awaiting_rules.remove(&client_id).expect("held");
                        let rules = result.ok().map(|rules| (rules, rules_read));
                        Self::complete(state, client_id, awaiting, rules);
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
            state
                .registry
                .refused(Connection::new(&client_id, held.pointer));
            state.outbox.push(crate::action::Action::CompleteLogin {
                client_id: client_id.into_vec(),
                accepted: false,
            });
        }
    }

    /// A login thread's decision: refused at once; let in, once its rules are loaded (or
    /// `rules_wait` is over), for a user whose rules the login thread loads next.
    fn checked(
        state: &mut State,
        client_id: Box<[u8]>,
        held: Held,
        decision: Decision,
        rules_follow: bool,
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
                state.registry.refused(Connection::new(&client_id, pointer));
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
        if let Err(refusal) = Self::admit_connection(state, &client_id, &identity) {
            state.counters.login_refused(refusal.name());
            state.registry.refused(Connection::new(&client_id, pointer));
            state.outbox.push(crate::action::Action::CompleteLogin {
                client_id: client_id.into_vec(),
                accepted: false,
            });
            return;
        }
        state.counters.logins_accepted += 1;
        let awaiting = AwaitingRules {
            ticket,
            pointer,
            since: now,
            identity,
        };
        if rules_follow {
            state.awaiting_rules.insert(client_id, awaiting);
            return;
        }
        Self::complete(state, client_id, awaiting, None);
    }

    /// Kept for the CONNECT the completion brings, and the completion asked for.
    fn complete(
        state: &mut State,
        client_id: Box<[u8]>,
        awaiting: AwaitingRules,
        rules: Option<(RuleSet, u64)>,
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
            Connection::new(client_id, pointer),
            LoginKind::Connect {
                persistent,
                cached: false,
            },
            &done.identity,
            now,
        );
        Self::connection_accepted(state, client_id, pointer, &done.identity);
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
    /// asked for (its urgent job: the registry takes them as current unless rules asked for
    /// after they were read came in first, see `Registry::apply_preloaded`); a load that
    /// failed is left to the background threads, which try again.
    fn install_preloaded(
        &self,
        state: &mut State,
        username: &str,
        preloaded: Option<(RuleSet, u64)>,
        now: Instant,
    ) {
        let Some(preloaded) = preloaded else {
            return;
        };
        let mut preloaded = Some(preloaded);
        for job in state.registry.urgent_jobs() {
            match preloaded.take_if(|_| job.username == username) {
                Some((rules, read)) => {
                    Self::rules_flow(state, now);
                    state.registry.apply_preloaded(job, rules, read, now);
                }
                None => state.refresher.submit_urgent(Work::Rules(job)),
            }
        }
    }
}
