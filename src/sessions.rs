//! Per-client state for the ACL checks: who each client is, and the rules of each user,
//! shared by all of that user's clients. Owned by the broker thread; the background
//! refresher only ever sees [`Job`]s and hands back [`Loaded`] results.
//!
//! Clients are keyed by client id (what a persistent session is keyed by in the broker)
//! and remember the broker's `struct mosquitto` pointer, so a stale connection whose id
//! was taken over is never judged under the newcomer's identity.
//!
//! A session lives as long as the broker's, as far as Mosquitto 2.0 lets a plugin see it:
//! - online from its login to its DISCONNECT; a clean one then ends;
//! - a persistent one stays *offline*, judged for deliveries (READ) only: its client can
//!   not publish or subscribe, so nothing offline (a will, above all) writes as the user;
//! - the broker tells plugins nothing when it discards an offline session (MQTT 5 expiry,
//!   `persistent_client_expiration`), so an offline session costs nothing until the broker
//!   delivers to it: its rules are refreshed only when a delivery finds them due, it is
//!   forgotten when any connection shows up at its address without logging in (the broker
//!   discarded it and reused the memory), when its client id logs in again, or by the caps
//!   (per user, then overall, oldest first);
//! - a session restored from the sessions file after a restart is offline and not yet tied
//!   to a broker pointer: the first delivery from a context that never had a connection
//!   (no address) with the same client id and username ties it.

use crate::acl::{self, Access, ChatTopics, GroupIds, PatternSet, RuleSet, Subject};
use crate::action::Reply;
use crate::auth::{BackendKind, Identity, Proof};
use crate::cluster;
pub use crate::config::OfflineCaps;
use crate::db::DbError;
use crate::history;
use crate::logging::printable;
use crate::names::same_name;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a failed refresh is tried again (or the refresh period, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Client ids of unknown clients logged once; the set is cleared when full.
const UNKNOWN_LOG_MEMORY: usize = 1024;

/// What the edge can tell about the client of a callback, asked only when needed.
pub trait ClientFacts {
    /// The peer address; `None` for a context that never had a connection in this run (a
    /// session the broker restored from its persistence file).
    fn address(&self) -> Option<String>;
    /// The username the broker holds for the client (from the CONNECT, a certificate, or
    /// the broker's persistence file).
    fn username(&self) -> Option<String>;
    /// The CONNECT's clean session / clean start flag.
    fn clean_session(&self) -> bool;
    /// Whether the client presented a TLS certificate on this connection.
    fn has_certificate(&self) -> bool;
}

/// Facts for callers that have none (unit tests, benches).
pub struct NoFacts;

impl ClientFacts for NoFacts {
    fn address(&self) -> Option<String> {
        None
    }
    fn username(&self) -> Option<String> {
        None
    }
    fn clean_session(&self) -> bool {
        true
    }
    fn has_certificate(&self) -> bool {
        false
    }
}

/// A user row read again, as `Registry::user_checked` weighs it: whether a session's proof
/// still holds for the stored hash, and whether the row makes the user a superuser.
pub type RowNow<'a> = (&'a dyn Fn(&Proof) -> bool, bool);

/// A request to the background refresher.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub username: String,
    pub user_id: String,
    /// Set for a `$CONTROL` `refreshUser`: answered when the load is done.
    pub reply: Option<Reply>,
    /// Jobs are numbered as they are made; a result older than the rules held is dropped
    /// (several threads load, and may finish out of order).
    pub ticket: u64,
    /// The rules a client that just logged in waits for (see `LoginKind::Connect`).
    pub urgent: bool,
}

/// A check that needs something the registry cannot do on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// The client's login asked for its rules and they have not arrived: apply background
    /// results and ask again (or `stop_waiting`).
    Rules,
    /// A live client presented a TLS certificate and has no session at its address (the
    /// broker took its username from the certificate and skipped BASIC_AUTH): log it in by
    /// that username and ask again (or `certificate_refused`).
    CertificateLogin,
    /// A delivery to a context the broker restored from its persistence (no address, a
    /// username) that no sessions file gave the plugin: look the user up by that username
    /// (as for a certificate), make it an offline session and ask again (or
    /// `certificate_refused`).
    RestoredLogin,
    /// A user of the HTTP backend, on a topic outside the chat model: the service decides
    /// (for this username).
    Remote(Arc<str>),
}

/// What the refresher hands back.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub job: Job,
    pub result: Result<RuleSet, DbError>,
}

/// How an applied result went, for the control answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Refreshed {
        clients: usize,
    },
    Failed(String),
    /// The user has no client left (or logged in again with another identity).
    Gone,
}

/// A persistent session as the sessions file keeps it across a broker restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedSession {
    #[serde(rename = "clientId")]
    pub client_id: String,
    pub username: String,
    #[serde(rename = "userId")]
    pub user_id: String,
    pub superuser: bool,
    /// Absent in files written before the HTTP backend: MySQL.
    #[serde(default)]
    pub backend: BackendKind,
    /// A bridge account's session.
    #[serde(default)]
    pub relay: bool,
}

/// How a login relates to the session the registry may already hold for its client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// A CONNECT: a new connection, whatever the registry holds for the id.
    Connect {
        /// `clean_session` false: the session outlives the connection.
        persistent: bool,
    },
    /// The broker re-checking a connection it holds (SIGHUP): the session keeps its state
    /// and the rules are refreshed in the background, not here.
    Recheck,
    /// A persistent session the broker restored from its own persistence (no sessions file
    /// held it), met at a delivery: offline until its client connects again.
    Restored,
}

/// A user's rules as held: the rows without `%c` are stored with `%u` already expanded
/// (the same for every client of the user, so held once instead of per client).
#[derive(Debug, PartialEq, Eq)]
struct HeldRules {
    user_id: Box<str>,
    groups: GroupIds,
    rows: PatternSet,
}

struct UserEntry {
    rules: HeldRules,
    /// Some row has `%c`: each client expands the rows itself.
    per_client: bool,
    /// Bumped whenever `rules` change, so clients re-expand their patterns once.
    generation: u32,
    /// Sessions (online or offline) using these rules; at 0 the entry lives until it is due.
    clients: u32,
    /// Online sessions: only they keep the rules refreshed on a timer.
    online: u32,
    next_due: Instant,
    in_flight: bool,
    /// The ticket of the job the held rules came from.
    installed: u64,
    /// The highest ticket whose result (rules, or a failure) was applied.
    settled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Online,
    /// A persistent session whose client is gone: judged for deliveries only.
    Offline,
}

/// `pointer` value of a session restored from the sessions file, not yet seen.
const UNBOUND: usize = 0;

struct Session {
    pointer: usize,
    /// Shared with the user entry's key.
    username: Arc<str>,
    superuser: bool,
    /// The backend that let the client in: `Http` holds no rules here (the service is asked
    /// per topic, see `Pending::Remote`).
    backend: BackendKind,
    /// A bridge account (`bridge_users`): relays every chat topic (`Author::Relay`).
    relay: bool,
    state: State,
    /// Logged in with `clean_session` false (kept in the sessions file).
    persistent: bool,
    /// The verified password, for the SIGHUP re-check (`None` for restored sessions).
    proof: Option<Proof>,
    /// The ticket of the rules this client's login asked for; its checks wait for them
    /// (0: none).
    awaiting: u64,
    /// The user entry generation `patterns` were expanded from (0: not yet).
    generation: u32,
    /// This client's own expansion, only for users with `%c` rows (boxed: most clients
    /// have none, and every session pays for the field).
    patterns: Option<Box<PatternSet>>,
}

/// The offline sessions of one user, oldest first (may hold stale entries).
#[derive(Default)]
struct OfflineOfUser {
    order: VecDeque<(Box<[u8]>, usize)>,
    live: usize,
}

/// The publisher of a message, as far as the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author<'a> {
    User(&'a str),
    Superuser,
    /// No session for the client id, and a context without a peer address: this broker's
    /// own outgoing bridge. Mosquitto makes that context without a socket and never gives it
    /// an address, while every client of a listener has one from its accept (a context the
    /// broker restored from persistence has none either, but publishes nothing). A client
    /// with an address and no session (anonymous, or let in by another plugin) is `Unknown`.
    OwnBridge,
    /// A bridge account (`bridge_users`) logged in here: another broker's bridge.
    Relay,
    /// A session that does not match (stale connection), is offline, or has no rules; or no
    /// session for a client with a peer address.
    Unknown,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: usize,
    pub online: usize,
    pub offline: usize,
    /// Offline sessions restored from the sessions file that no delivery has tied to a
    /// broker context yet (part of `offline`).
    pub restored: usize,
    /// Users whose rules are held (connected users, and recently disconnected ones until
    /// their rules are due).
    pub users: usize,
    pub refreshes: u64,
    pub refresh_failures: u64,
    /// Deliveries refused because nothing validated them (wills, retained chat messages).
    pub unvalidated_refused: u64,
}

pub struct Registry {
    chat: Option<ChatTopics>,
    refresh: Duration,
    caps: OfflineCaps,
    sessions: HashMap<Box<[u8]>, Session>,
    users: HashMap<Arc<str>, UserEntry>,
    due: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// Offline sessions in the order they went offline (may hold stale entries).
    offline: VecDeque<(Box<[u8]>, usize)>,
    offline_count: usize,
    offline_by_user: HashMap<Arc<str>, OfflineOfUser>,
    /// Offline sessions not yet tied to a broker pointer.
    unbound: usize,
    /// Wraps after 4 billion rule changes, skipping 0 (a client's "not yet expanded").
    next_generation: u32,
    refreshes: u64,
    refresh_failures: u64,
    /// Refreshes asked for by deliveries to offline sessions, handed out by `due_jobs`.
    wanted: Vec<Job>,
    /// Rules loads asked for by logins, handed out at once by `urgent_jobs`.
    urgent: Vec<Job>,
    next_ticket: u64,
    /// The time of the last tick: deliveries to offline sessions compare it with the rules'
    /// due time without reading the clock.
    clock: Instant,
    /// The topic (hashed) of a chat-topic WRITE the broker allowed and that MESSAGE has not
    /// seen yet. Every PUBLISH is followed by its MESSAGE before any delivery; a will (and
    /// anything else the broker publishes after only a WRITE check) is not, so deliveries of
    /// that topic before the next event are refused: they were never validated or stamped.
    unvalidated_write: Option<u64>,
    unvalidated_refused: u64,
    /// The connection whose DISCONNECT was the last event: the broker sends its will (a
    /// WRITE check) right after, before anything else happens.
    departed: Option<Departed>,
    /// Client ids already logged as unknown (bounded).
    unknown_logged: HashSet<Box<[u8]>>,
    /// Connections whose certificate login was refused: not looked up again (bounded).
    certificate_refused: HashSet<(Box<[u8]>, usize)>,
    /// The sessions file has to be written again.
    dirty: bool,
    /// Chat users may ask for their history (`history::TOPIC`).
    history: bool,
}

struct Departed {
    client_id: Box<[u8]>,
    pointer: usize,
    username: Arc<str>,
    superuser: bool,
    backend: BackendKind,
    relay: bool,
    /// The rules load its login asked for (0: none), which its will waits for too.
    awaiting: u64,
}

/// FNV-1a, fixed: equal topics hash equally between a WRITE check and its deliveries, and
/// it costs a few instructions per byte on every chat WRITE. A collision (even a crafted
/// one) can only refuse a delivery, never allow one.
fn topic_hash(topic: &str) -> u64 {
    topic.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Registry {
    pub fn new(chat: Option<ChatTopics>, refresh: Duration, caps: OfflineCaps) -> Registry {
        Registry {
            chat,
            refresh,
            caps,
            sessions: HashMap::new(),
            users: HashMap::new(),
            due: BinaryHeap::new(),
            offline: VecDeque::new(),
            offline_count: 0,
            offline_by_user: HashMap::new(),
            unbound: 0,
            next_generation: 1,
            refreshes: 0,
            refresh_failures: 0,
            wanted: Vec::new(),
            urgent: Vec::new(),
            next_ticket: 1,
            clock: Instant::now(),
            unvalidated_write: None,
            unvalidated_refused: 0,
            departed: None,
            unknown_logged: HashSet::new(),
            certificate_refused: HashSet::new(),
            dirty: false,
            history: false,
        }
    }

    /// Lets every chat user publish history requests and receive their answers.
    pub fn serve_history(&mut self) {
        self.history = true;
    }

    /// The chat identity and current groups of a live client whose rules are in (a
    /// superuser, a bridge account or an HTTP service user has none).
    pub fn chat_user(&self, client_id: &[u8], pointer: usize) -> Option<history::Requester<'_>> {
        let session = self.sessions.get(client_id)?;
        let usable = session.pointer == pointer
            && session.state == State::Online
            && !session.superuser
            && !session.relay
            && !session.backend.asks_per_topic();
        let entry = self.users.get(&session.username).filter(|_| usable)?;
        if session.awaiting != 0 && entry.settled < session.awaiting {
            return None;
        }
        Some(history::Requester {
            user_id: &entry.rules.user_id,
            groups: &entry.rules.groups,
        })
    }

    /// Any broker event other than an ACL check: a WRITE check not followed by MESSAGE is
    /// over (MESSAGE itself calls this too).
    pub fn event(&mut self) {
        self.unvalidated_write = None;
        self.departed = None;
    }

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
        client_id: &[u8],
        pointer: usize,
        kind: LoginKind,
        identity: &Identity,
        now: Instant,
    ) {
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
            (LoginKind::Connect { persistent }, _) => (State::Online, persistent),
            (LoginKind::Restored, _) => (State::Offline, true),
        };
        let held = self
            .users
            .get(identity.username.as_str())
            .is_some_and(|e| *e.rules.user_id == *identity.user_id);
        let mut awaiting = 0;
        if !identity.superuser && !identity.backend.asks_per_topic() {
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

    /// The rules loads logins asked for, to start now (ahead of other work).
    pub fn urgent_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.urgent)
    }

    /// Applies the loads logins asked for with results from `load` rather than the
    /// background threads (benchmarks and tests without MySQL). Returns how many.
    pub fn apply_urgent(
        &mut self,
        now: Instant,
        mut load: impl FnMut(&Job) -> Result<RuleSet, DbError>,
    ) -> usize {
        let jobs = self.urgent_jobs();
        let count = jobs.len();
        for job in jobs {
            let result = load(&job);
            self.apply(Loaded { job, result }, now);
        }
        count
    }

    /// A certificate login that failed (unknown user, MySQL unavailable): this connection is
    /// refused everything and not looked up again until it disconnects.
    pub fn certificate_refused(&mut self, client_id: &[u8], pointer: usize) {
        if self.certificate_refused.len() >= UNKNOWN_LOG_MEMORY {
            self.certificate_refused.clear();
        }
        self.certificate_refused.insert((client_id.into(), pointer));
    }

    /// A client's wait for its login's rules ended without them (timed out): its checks use
    /// the rules held.
    pub fn stop_waiting(&mut self, client_id: &[u8], pointer: usize) {
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

    fn take_ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    fn job(&mut self, username: &str, user_id: &str, reply: Option<Reply>, urgent: bool) -> Job {
        Job {
            username: username.to_string(),
            user_id: user_id.to_string(),
            reply,
            ticket: self.take_ticket(),
            urgent,
        }
    }

    /// The identity a SIGHUP re-check of this connection would keep, with the proof of its
    /// verified password (`None` for a restored session), when its username is `username`.
    pub fn recheck_target(
        &self,
        client_id: &[u8],
        pointer: usize,
        username: &str,
    ) -> Option<Identity> {
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

    /// A re-check accepted from memory: the session stays as it is (a restored one is now
    /// tied to this broker context, and its place in the eviction order carries the pointer).
    pub fn rechecked(&mut self, client_id: &[u8], pointer: usize) {
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

    /// A login of this connection that was not accepted: a session left at its address
    /// belonged to an earlier connection (the broker reused the memory) and ends here. A
    /// session of another connection with the same id is the live one and stays.
    pub fn refused(&mut self, client_id: &[u8], pointer: usize) {
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
    pub fn disconnect(&mut self, client_id: &[u8], pointer: usize, clean: bool) {
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

    /// The ACL decision for one check; no I/O. A client the registry does not know (never
    /// logged in through this plugin, or forgotten) is refused. `Pending::Rules`: the client's
    /// login asked for its rules and they have not arrived; apply background results and
    /// ask again (or `stop_waiting`).
    pub fn check(
        &mut self,
        client_id: &[u8],
        pointer: usize,
        access: Access,
        topic: &str,
        retain: bool,
        facts: &dyn ClientFacts,
    ) -> Result<bool, Pending> {
        if access == Access::Read {
            if let Some(chat) = &self.chat {
                // Deliveries of chat topics that MESSAGE never validated: a will (see
                // `unvalidated_write`), or a retained message from before the plugin (a
                // retained chat PUBLISH is refused at WRITE).
                let unvalidated = self.unvalidated_write.is_some()
                    && self.unvalidated_write == Some(topic_hash(topic));
                if (unvalidated || retain) && chat.is_chat(topic) {
                    self.unvalidated_refused += 1;
                    log::debug!(
                        "delivery of '{}' to client '{}' refused: not a validated chat message \
                         (a will, or a retained message)",
                        printable(topic),
                        printable(&String::from_utf8_lossy(client_id))
                    );
                    return Ok(false);
                }
            }
        } else {
            self.unvalidated_write = None;
        }
        if let Some(departed) = self.departed.take() {
            if access == Access::Write
                && departed.pointer == pointer
                && *departed.client_id == *client_id
            {
                let verdict = self.will(&departed, topic, retain);
                if verdict == Err(Pending::Rules) {
                    // Asked again once the rules are in (or `stop_waiting`).
                    self.departed = Some(departed);
                }
                return verdict;
            }
        }
        let allowed = self.decide(client_id, pointer, access, topic, retain, facts)?;
        if allowed
            && access == Access::Write
            && self.chat.as_ref().is_some_and(|c| c.is_chat(topic))
        {
            self.unvalidated_write = Some(topic_hash(topic));
        }
        Ok(allowed)
    }

    fn decide(
        &mut self,
        client_id: &[u8],
        pointer: usize,
        access: Access,
        topic: &str,
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
            self.note_unknown(client_id, topic, facts);
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
            self.rechecked(client_id, pointer);
            return self.decide(client_id, pointer, access, topic, retain, facts);
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
            self.note_unknown(client_id, topic, facts);
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
                    c.is_chat(topic)
                }
            })
        {
            // A bridge relays every chat topic, both ways (MESSAGE checks what it brings).
            return Ok(true);
        }
        if session.backend.asks_per_topic() {
            let username = session.username.clone();
            return self.remote(&username, topic);
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
            retain,
        ))
    }

    /// The will of a connection that just went away, judged as its user's PUBLISH: never
    /// on a chat topic (a will cannot be validated, stamped or stored), and like any
    /// PUBLISH elsewhere (a presence topic granted by an `aclquery` row, say).
    fn will(&mut self, departed: &Departed, topic: &str, retain: bool) -> Result<bool, Pending> {
        if self.chat.as_ref().is_some_and(|c| c.is_chat(topic)) {
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
            return self.remote(&departed.username, topic);
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
            retain,
        ))
    }

    /// A user of the HTTP backend: no chat identity (chat topics need a MySQL user's id,
    /// groups and validation), so the chat topics are refused; the service decides the rest.
    fn remote(&self, username: &Arc<str>, topic: &str) -> Result<bool, Pending> {
        if self.chat.as_ref().is_some_and(|c| c.is_chat(topic)) {
            return Ok(false);
        }
        Err(Pending::Remote(username.clone()))
    }

    /// A client with no session: one log line per client id (bounded), naming what it most
    /// likely is.
    fn note_unknown(&mut self, client_id: &[u8], topic: &str, facts: &dyn ClientFacts) {
        if self.unknown_logged.contains(client_id) {
            return;
        }
        if self.unknown_logged.len() >= UNKNOWN_LOG_MEMORY {
            self.unknown_logged.clear();
        }
        self.unknown_logged.insert(client_id.into());
        let chat = self.chat.as_ref().is_some_and(|c| c.is_chat(topic));
        log::warn!(
            "client '{}' (username '{}') is refused everything{}: chat-auth holds no session \
             for it (it did not log in with a password: a TLS certificate, PSK or anonymous \
             login, which chat-auth does not support yet; or its session ended)",
            printable(&String::from_utf8_lossy(client_id)),
            printable(&facts.username().unwrap_or_default()),
            if chat { ", chat topics included" } else { "" },
        );
    }

    /// Who is publishing, for chat payload checks (`facts` are asked only when the client
    /// id has no session).
    pub fn author(&self, client_id: &[u8], pointer: usize, facts: &dyn ClientFacts) -> Author<'_> {
        match self.sessions.get(client_id) {
            Some(s) if s.pointer != pointer || s.state != State::Online => Author::Unknown,
            Some(s) if s.superuser => Author::Superuser,
            Some(s) if s.relay => Author::Relay,
            Some(s) if s.backend.asks_per_topic() => Author::Unknown,
            Some(s) => self
                .users
                .get(&s.username)
                .map_or(Author::Unknown, |e| Author::User(&e.rules.user_id)),
            None if facts.address().is_none() => Author::OwnBridge,
            None => Author::Unknown,
        }
    }

    /// Whether this client logged in as a superuser (for `$CONTROL`).
    pub fn is_superuser(&self, client_id: &[u8], pointer: usize) -> bool {
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.pointer == pointer && s.state == State::Online && s.superuser)
    }

    /// The tick: rules whose time has come get refresh jobs while the user has an online
    /// client; users without clients are forgotten; refreshes wanted by deliveries to offline
    /// sessions are added.
    pub fn due_jobs(&mut self, now: Instant) -> Vec<Job> {
        self.event();
        self.clock = now;
        let mut jobs = std::mem::take(&mut self.wanted);
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, username))) = self.due.pop() else {
                break;
            };
            let Some(entry) = self.users.get_mut(&username) else {
                continue;
            };
            if entry.next_due != at {
                continue; // superseded by a later load
            }
            if entry.clients == 0 {
                self.users.remove(&username);
                continue;
            }
            if entry.online > 0 && !entry.in_flight {
                entry.in_flight = true;
                let user_id = entry.rules.user_id.to_string();
                jobs.push(self.job(&username, &user_id, None, false));
            }
        }
        jobs
    }

    /// SIGHUP: reload the rules of every user with an online client; forget users without
    /// clients.
    pub fn refresh_all(&mut self) -> Vec<Job> {
        self.event();
        self.users.retain(|_, entry| entry.clients > 0);
        let due: Vec<(String, String)> = self
            .users
            .iter_mut()
            .filter(|(_, entry)| !entry.in_flight && entry.online > 0)
            .map(|(username, entry)| {
                entry.in_flight = true;
                (username.to_string(), entry.rules.user_id.to_string())
            })
            .collect();
        due.into_iter()
            .map(|(username, user_id)| self.job(&username, &user_id, None, false))
            .collect()
    }

    /// `refreshUser`: a job for each spelling of the name that has clients (`same_name`;
    /// the one spelled as asked first, with `reply`); none when no client is known.
    pub fn refresh_user(&mut self, username: &str, reply: Option<Reply>) -> Vec<Job> {
        self.event();
        let mut names: Vec<Arc<str>> = self
            .users
            .iter()
            .filter(|(name, entry)| entry.clients > 0 && same_name(name, username))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_by_key(|name| **name != *username);
        let mut reply = reply;
        names
            .into_iter()
            .filter_map(|name| {
                let entry = self.users.get_mut(&name)?;
                entry.in_flight = true;
                let user_id = entry.rules.user_id.to_string();
                Some(self.job(&name, &user_id, reply.take(), false))
            })
            .collect()
    }

    /// The clients of the name spelled otherwise than `username` (`same_name`), for a
    /// `kickUser` (the broker kicks the exact spelling by itself).
    pub fn other_spellings(&self, username: &str) -> Vec<Box<[u8]>> {
        self.sessions
            .iter()
            .filter(|(_, s)| *s.username != *username && same_name(&s.username, username))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Applies a refresher result. A failure keeps the last known rules.
    pub fn apply(&mut self, loaded: Loaded, now: Instant) -> Applied {
        let Loaded { job, result } = loaded;
        let Some(entry) = self.users.get_mut(job.username.as_str()) else {
            return Applied::Gone;
        };
        if *entry.rules.user_id != *job.user_id {
            // Loaded for the user's earlier identity: dropped, but the refresh it was is over.
            if !job.urgent {
                entry.in_flight = false;
            }
            return Applied::Gone;
        }
        if !job.urgent {
            entry.in_flight = false;
        }
        entry.settled = entry.settled.max(job.ticket);
        if job.ticket < entry.installed {
            // Finished after a newer load: its rules are older than those held.
            return Applied::Refreshed {
                clients: entry.clients as usize,
            };
        }
        match result {
            Ok(rules) => {
                self.refreshes += 1;
                self.install(&job.username, rules, now, job.ticket);
                let clients = self
                    .users
                    .get(job.username.as_str())
                    .map_or(0, |e| e.clients as usize);
                Applied::Refreshed { clients }
            }
            Err(e) => {
                self.refresh_failures += 1;
                log::warn!(
                    "refreshing the rules of user '{}' failed ({e}); keeping the last known rules",
                    printable(&job.username)
                );
                let retry = now + self.refresh.min(RETRY_AFTER_FAILURE);
                entry.next_due = retry;
                let key = self
                    .users
                    .get_key_value(job.username.as_str())
                    .map(|(key, _)| key.clone())
                    .unwrap_or_else(|| Arc::from(job.username.as_str()));
                self.due.push(Reverse((retry, key)));
                Applied::Failed(e.to_string())
            }
        }
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

    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len(),
            online: self.sessions.len() - self.offline_count,
            offline: self.offline_count,
            restored: self.unbound,
            users: self.users.len(),
            refreshes: self.refreshes,
            refresh_failures: self.refresh_failures,
            unvalidated_refused: self.unvalidated_refused,
        }
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

    /// Sessions from the sessions file, at start: offline, not yet tied to a broker context.
    /// Their users' rules are loaded by the jobs returned.
    pub fn restore(&mut self, saved: Vec<SavedSession>, now: Instant) -> Vec<Job> {
        let mut jobs = Vec::new();
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
                    jobs.push(self.job(&session.username, &session.user_id, None, false));
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
                    awaiting: 0,
                    generation: 0,
                    patterns: None,
                },
            );
            self.unbound += 1;
            self.note_offline(session.client_id.as_bytes(), UNBOUND, &username);
        }
        jobs
    }

    /// Holds `rules`, loaded by the job numbered `ticket`, for the user.
    fn install(&mut self, username: &str, rules: RuleSet, now: Instant, ticket: u64) {
        let next_due = now + self.refresh;
        let (rules, per_client) = normalize(rules, username);
        let key = match self.users.get_key_value(username) {
            Some((key, _)) => key.clone(),
            None => Arc::from(username),
        };
        match self.users.get_mut(&key) {
            Some(entry) => {
                if entry.rules != rules {
                    entry.rules = rules;
                    entry.per_client = per_client;
                    entry.generation = take_generation(&mut self.next_generation);
                }
                entry.next_due = next_due;
                entry.installed = entry.installed.max(ticket);
                entry.settled = entry.settled.max(ticket);
            }
            None => {
                self.users.insert(
                    key.clone(),
                    UserEntry {
                        rules,
                        per_client,
                        generation: take_generation(&mut self.next_generation),
                        clients: 0,
                        online: 0,
                        next_due,
                        in_flight: false,
                        installed: ticket,
                        settled: ticket,
                    },
                );
            }
        }
        // Rules held until their load arrives (ticket 0: a first login's or a restored
        // session's identity) get their due time when that load's result is applied.
        if ticket != 0 {
            self.due.push(Reverse((next_due, key)));
        }
    }

    fn remove_session(&mut self, client_id: &[u8]) {
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

    /// Books a session that just became offline, then applies the caps: first the user's
    /// own oldest, then everyone's oldest.
    fn note_offline(&mut self, client_id: &[u8], pointer: usize, username: &Arc<str>) {
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

fn is_live_offline(sessions: &HashMap<Box<[u8]>, Session>, id: &[u8], pointer: usize) -> bool {
    sessions
        .get(id)
        .is_some_and(|s| s.state == State::Offline && s.pointer == pointer)
}

/// The next rules generation; wraps after 4 billion changes, skipping 0 (a client's
/// "not yet expanded").
fn take_generation(next: &mut u32) -> u32 {
    let generation = *next;
    *next = next.wrapping_add(1).max(1);
    generation
}

/// Rules as a user entry holds them: without `%c`, the rows are expanded for the user now
/// (`%u` is the same for all their clients). `true` when clients must expand them.
fn normalize(rules: RuleSet, username: &str) -> (HeldRules, bool) {
    let rows = PatternSet::from(&rules.rows);
    let per_client = [&rules.rows.read, &rules.rows.write, &rules.rows.subscribe]
        .into_iter()
        .flatten()
        .any(|pattern| pattern.contains("%c"));
    let rows = if per_client {
        rows
    } else {
        expand_all(&rows, username, "")
    };
    let held = HeldRules {
        user_id: rules.user_id.into_boxed_str(),
        groups: rules.groups,
        rows,
    };
    (held, per_client)
}

/// One client's patterns: `%u`/`%c` substituted; a row that would widen is dropped.
fn expand_all(rows: &PatternSet, username: &str, client_id: &str) -> PatternSet {
    rows.map(|pattern| acl::expand(pattern, username, client_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Patterns;

    const REFRESH: Duration = Duration::from_secs(60);
    const CONNECT: LoginKind = LoginKind::Connect { persistent: false };
    const PERSISTENT: LoginKind = LoginKind::Connect { persistent: true };

    fn registry_with(caps: OfflineCaps) -> Registry {
        let chat = ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap();
        Registry::new(Some(chat), REFRESH, caps)
    }

    fn registry() -> Registry {
        registry_with(OfflineCaps {
            total: 3,
            per_user: 3,
        })
    }

    fn identity(username: &str, user_id: &str) -> Identity {
        Identity {
            username: username.into(),
            user_id: user_id.into(),
            superuser: false,
            proof: None,
            backend: Default::default(),
            relay: false,
        }
    }

    fn rules(user_id: &str, groups: &[&str]) -> RuleSet {
        RuleSet {
            user_id: user_id.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            rows: Patterns::default(),
        }
    }

    fn no_load() -> Result<RuleSet, DbError> {
        panic!("rules should have been reused")
    }

    /// A context the broker restored from its persistence file (no address).
    struct Restored(&'static str);

    impl ClientFacts for Restored {
        fn address(&self) -> Option<String> {
            None
        }
        fn username(&self) -> Option<String> {
            Some(self.0.into())
        }
        fn clean_session(&self) -> bool {
            false
        }
        fn has_certificate(&self) -> bool {
            false
        }
    }

    /// A live connection; `Live(true)` presented a TLS certificate.
    struct Live(bool);

    impl ClientFacts for Live {
        fn address(&self) -> Option<String> {
            Some("127.0.0.1".into())
        }
        fn username(&self) -> Option<String> {
            Some("cert-user".into())
        }
        fn clean_session(&self) -> bool {
            false
        }
        fn has_certificate(&self) -> bool {
            self.0
        }
    }

    impl Registry {
        fn ok(&mut self, id: &[u8], pointer: usize, access: Access, topic: &str) -> bool {
            self.check(id, pointer, access, topic, false, &NoFacts)
                .expect("not waiting for rules")
        }

        fn decided(
            &mut self,
            id: &[u8],
            pointer: usize,
            access: Access,
            topic: &str,
            retain: bool,
            facts: &dyn ClientFacts,
        ) -> bool {
            self.check(id, pointer, access, topic, retain, facts)
                .expect("not waiting for rules")
        }

        /// A login whose first rules load (a user's first login) is done now with `load`, as
        /// the background thread would before the client's first check; a warm login's load
        /// waits for `deliver_urgent`. `Err`: the load failed (the login stands).
        fn login_loaded(
            &mut self,
            id: &[u8],
            pointer: usize,
            kind: LoginKind,
            identity: &Identity,
            now: Instant,
            load: impl FnOnce() -> Result<RuleSet, DbError>,
        ) -> Result<(), DbError> {
            let pending = self.urgent_jobs();
            let held = self
                .users
                .get(identity.username.as_str())
                .is_some_and(|e| *e.rules.user_id == *identity.user_id);
            self.login(id, pointer, kind, identity, now);
            let mut jobs = self.urgent_jobs();
            self.urgent = pending;
            if held {
                self.urgent.append(&mut jobs);
                return Ok(());
            }
            let Some(job) = jobs.pop() else {
                return Ok(());
            };
            let result = load();
            let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
            self.apply(Loaded { job, result }, now);
            outcome
        }

        /// Applies the loads logins asked for, as the background threads would.
        fn deliver_urgent(&mut self, rules: RuleSet) {
            self.apply_urgent(Instant::now(), |_| Ok(rules.clone()));
        }
    }

    #[test]
    fn checks_are_per_client_and_rules_load_at_every_connect() {
        let mut reg = registry();
        let now = Instant::now();
        let alice = identity("alice", "1");
        reg.login_loaded(b"phone", 10, CONNECT, &alice, now, || {
            Ok(rules("1", &["7"]))
        })
        .unwrap();
        // A second client of the user is let in at once; its first check waits for the
        // rules its login asked for: a group granted in between counts for it, and for the
        // first client too (the rules are the user's).
        reg.login_loaded(b"laptop", 11, CONNECT, &alice, now, no_load)
            .unwrap();
        assert_eq!(
            reg.check(
                b"laptop",
                11,
                Access::Write,
                "/groups/8/messages",
                false,
                &NoFacts
            ),
            Err(Pending::Rules)
        );
        assert!(
            reg.ok(b"phone", 10, Access::Write, "/groups/7/messages"),
            "not waiting"
        );
        reg.deliver_urgent(rules("1", &["7", "8"]));
        assert_eq!(reg.stats().users, 1);
        assert!(reg.ok(b"phone", 10, Access::Subscribe, "/users/1/messages"));
        assert!(reg.ok(b"laptop", 11, Access::Write, "/groups/7/messages"));
        assert!(reg.ok(b"phone", 10, Access::Write, "/groups/8/messages"));
        assert!(!reg.ok(b"laptop", 11, Access::Read, "/users/2/messages"));
        // A stale pointer (the connection whose id was taken over) gets nothing.
        assert!(!reg.ok(b"phone", 99, Access::Read, "/users/1/messages"));
        assert!(!reg.ok(b"stranger", 12, Access::Read, "/users/1/messages"));
    }

    #[test]
    fn bridge_accounts_relay_the_chat_topics_and_alone_carry_cluster_commands() {
        let mut reg = registry();
        let now = Instant::now();
        let bridge = Identity {
            relay: true,
            ..identity("bridge-b", "bridge-b")
        };
        reg.login_loaded(b"br", 1, CONNECT, &bridge, now, || {
            Ok(rules("bridge-b", &[]))
        })
        .unwrap();
        let mut everything = rules("2", &[]);
        everything.rows.read = vec!["#".into()];
        everything.rows.write = vec!["#".into()];
        everything.rows.subscribe = vec!["#".into()];
        reg.login_loaded(b"bob", 2, CONNECT, &identity("bob", "2"), now, || {
            Ok(everything)
        })
        .unwrap();
        for (access, topic) in [
            (Access::Subscribe, "/users/+/messages"),
            (Access::Subscribe, "/groups/+/messages"),
            (Access::Subscribe, "/users/7/messages"),
            (Access::Write, "/users/7/messages"),
            (Access::Read, "/groups/3/messages"),
            (Access::Subscribe, cluster::TOPIC),
            (Access::Write, cluster::TOPIC),
        ] {
            assert!(reg.ok(b"br", 1, access, topic), "{access:?} {topic}");
        }
        for (access, topic) in [
            (Access::Subscribe, "/users/#"),
            (Access::Subscribe, "#"),
            (Access::Write, "elsewhere"),
        ] {
            assert!(!reg.ok(b"br", 1, access, topic), "{access:?} {topic}");
        }
        assert_eq!(reg.author(b"br", 1, &NoFacts), Author::Relay);
        // A `#` row grants bob everything but the cluster topic, his will included.
        assert!(reg.ok(b"bob", 2, Access::Write, "elsewhere"));
        assert!(!reg.ok(b"bob", 2, Access::Write, cluster::TOPIC));
        assert!(!reg.ok(b"bob", 2, Access::Read, cluster::TOPIC));
        assert_eq!(reg.author(b"bob", 2, &NoFacts), Author::User("2"));
        reg.disconnect(b"bob", 2, true);
        assert!(
            !reg.ok(b"bob", 2, Access::Write, cluster::TOPIC),
            "bob's will"
        );
        // The service's users are never bridge accounts, whatever the identity says.
        let service_user = Identity {
            relay: true,
            backend: BackendKind::Http,
            ..identity("bridge-h", "bridge-h")
        };
        reg.login(b"h", 3, CONNECT, &service_user, now);
        assert_eq!(reg.author(b"h", 3, &NoFacts), Author::Unknown);
        assert!(!reg.ok(b"h", 3, Access::Subscribe, "/users/+/messages"));
        assert!(!reg.ok(b"h", 3, Access::Write, cluster::TOPIC));
        // Nor are their sessions ended by a MySQL row that is not there.
        assert!(reg.user_checked("bridge-h", None).is_empty());
        assert_eq!(reg.author(b"h", 3, &NoFacts), Author::Unknown);
        // A client id without a session is this broker's own bridge only when its context has
        // no peer address; an anonymous client or one another plugin let in has one.
        assert_eq!(reg.author(b"nobody", 9, &NoFacts), Author::OwnBridge);
        assert_eq!(reg.author(b"nobody", 9, &Live(false)), Author::Unknown);
        assert_eq!(reg.stats().online, 2);
    }

    #[test]
    fn a_will_before_the_first_check_waits_for_the_logins_rules() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login(b"d", 4, CONNECT, &identity("dave", "4"), now);
        reg.disconnect(b"d", 4, true);
        let will =
            |reg: &mut Registry| reg.check(b"d", 4, Access::Write, "status/dave", false, &NoFacts);
        assert_eq!(will(&mut reg), Err(Pending::Rules));
        assert_eq!(
            will(&mut reg),
            Err(Pending::Rules),
            "asked again, still the will"
        );
        // A user row read again meanwhile (after a SIGHUP) does not end the wait.
        assert!(reg.user_checked("someone-else", None).is_empty());
        let job = reg.urgent_jobs().pop().expect("a load was asked for");
        let mut loaded = rules("4", &[]);
        loaded.rows.write = vec!["status/%u".into()];
        reg.apply(
            Loaded {
                job,
                result: Ok(loaded),
            },
            now,
        );
        assert_eq!(
            will(&mut reg),
            Ok(true),
            "judged by the rows the login loaded"
        );
        assert_eq!(
            will(&mut reg),
            Ok(false),
            "only the will right after the DISCONNECT"
        );
    }

    #[test]
    fn a_first_login_waits_for_its_rules_and_a_failed_load_grants_no_group() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login(b"c", 1, CONNECT, &identity("bob", "2"), now);
        assert_eq!(
            reg.check(b"c", 1, Access::Read, "/users/2/messages", false, &NoFacts),
            Err(Pending::Rules),
            "the first check waits for the load the login asked for"
        );
        let job = reg.urgent_jobs().pop().expect("a load was asked for");
        reg.apply(
            Loaded {
                job,
                result: Err(DbError::Unavailable("down".into())),
            },
            now,
        );
        assert!(
            reg.ok(b"c", 1, Access::Read, "/users/2/messages"),
            "own inbox"
        );
        assert!(!reg.ok(b"c", 1, Access::Read, "/groups/7/messages"));
        assert!(!reg.ok(b"c", 1, Access::Read, "/users/3/messages"));
    }

    #[test]
    fn clean_disconnect_empties_the_state_once_rules_are_due() {
        let mut reg = registry();
        let now = Instant::now();
        for i in 0..1000u32 {
            let user = format!("u{i}");
            reg.login_loaded(
                format!("c{i}").as_bytes(),
                i as usize + 1,
                CONNECT,
                &identity(&user, &i.to_string()),
                now,
                || Ok(rules(&i.to_string(), &[])),
            )
            .unwrap();
        }
        assert_eq!(reg.stats().sessions, 1000);
        for i in 0..1000u32 {
            reg.disconnect(format!("c{i}").as_bytes(), i as usize + 1, true);
        }
        assert_eq!(reg.stats().sessions, 0);
        assert_eq!(reg.stats().users, 1000, "kept until due");
        assert!(reg.due_jobs(now + REFRESH).is_empty());
        assert_eq!(reg.stats().users, 0);
        assert!(reg.due.is_empty());
    }

    #[test]
    fn offline_sessions_only_receive() {
        let mut reg = registry();
        let now = Instant::now();
        let alice = identity("alice", "1");
        reg.login_loaded(b"alice-phone", 5, PERSISTENT, &alice, now, || {
            Ok(rules("1", &["7"]))
        })
        .unwrap();
        reg.disconnect(b"alice-phone", 5, false);
        assert_eq!(reg.stats().offline, 1);
        // Messages queued while offline are still judged by the rules...
        assert!(reg.ok(b"alice-phone", 5, Access::Read, "/users/1/messages"));
        // ...but nothing is written in its name (a delayed will, say).
        reg.event();
        assert!(!reg.ok(b"alice-phone", 5, Access::Write, "/users/2/messages"));
        assert!(!reg.ok(b"alice-phone", 5, Access::Write, "status/alice"));
        assert_eq!(reg.stats().offline, 1);
        // A SUBSCRIBE comes from a live connection at a dead session's address: forgotten.
        assert!(!reg.ok(b"alice-phone", 5, Access::Subscribe, "/users/1/messages"));
        assert_eq!(reg.stats().offline, 0);
        assert!(!reg.ok(b"alice-phone", 5, Access::Read, "/users/1/messages"));
    }

    #[test]
    fn the_will_right_after_a_disconnect_is_judged_once_and_never_on_chat_topics() {
        let mut reg = registry();
        let now = Instant::now();
        let mut loaded = rules("1", &["7"]);
        loaded.rows.write = vec!["status/%u".into()];
        for (id, pointer, kind) in [(b"clean", 5, CONNECT), (b"keeps", 6, PERSISTENT)] {
            reg.login_loaded(id, pointer, kind, &identity("alice", "1"), now, || {
                Ok(loaded.clone())
            })
            .unwrap();
            reg.disconnect(id, pointer, false);
            assert!(!reg.ok(id, pointer, Access::Write, "/users/2/messages"));
            reg.disconnect(id, pointer, false);
            reg.login_loaded(id, pointer, kind, &identity("alice", "1"), now, || {
                Ok(loaded.clone())
            })
            .unwrap();
            reg.disconnect(id, pointer, false);
            // The will waits for the rules this login asked for.
            assert_eq!(
                reg.check(id, pointer, Access::Write, "status/alice", false, &NoFacts),
                Err(Pending::Rules)
            );
            reg.deliver_urgent(loaded.clone());
            assert!(reg.ok(id, pointer, Access::Write, "status/alice"));
            assert!(
                !reg.ok(id, pointer, Access::Write, "status/alice"),
                "only the one check right after the DISCONNECT"
            );
        }
        reg.login_loaded(b"x", 9, CONNECT, &identity("alice", "1"), now, || {
            Ok(loaded.clone())
        })
        .unwrap();
        reg.disconnect(b"x", 9, true);
        reg.event();
        assert!(
            !reg.ok(b"x", 9, Access::Write, "status/alice"),
            "not after another event"
        );
    }

    #[test]
    fn offline_rules_refresh_only_when_a_delivery_finds_them_due() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(b"p", 5, PERSISTENT, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        reg.disconnect(b"p", 5, false);
        // A session the broker may have discarded costs MySQL nothing on a timer.
        assert!(reg.due_jobs(now + REFRESH).is_empty());
        assert!(reg.due_jobs(now + 10 * REFRESH).is_empty());
        // A delivery proves it alive: its rules are refreshed once.
        assert!(reg.ok(b"p", 5, Access::Read, "/users/1/messages"));
        assert!(reg.ok(b"p", 5, Access::Read, "/users/1/messages"));
        let jobs = reg.due_jobs(now + 10 * REFRESH);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].username, "alice");
    }

    #[test]
    fn reconnecting_makes_a_persistent_session_online_again() {
        let mut reg = registry();
        let now = Instant::now();
        let alice = identity("alice", "1");
        reg.login_loaded(b"p", 5, PERSISTENT, &alice, now, || Ok(rules("1", &[])))
            .unwrap();
        reg.disconnect(b"p", 5, false);
        // A recheck (SIGHUP) of the offline session keeps it offline, without a load.
        reg.login_loaded(b"p", 5, LoginKind::Recheck, &alice, now, no_load)
            .unwrap();
        assert_eq!((reg.stats().online, reg.stats().offline), (0, 1));
        // A CONNECT is a new connection, even at a reused address.
        reg.login_loaded(b"p", 5, PERSISTENT, &alice, now, no_load)
            .unwrap();
        reg.deliver_urgent(rules("1", &[]));
        assert_eq!((reg.stats().online, reg.stats().offline), (1, 0));
        assert!(reg.ok(b"p", 5, Access::Write, "/users/2/messages"));
    }

    #[test]
    fn a_clean_session_flag_never_keeps_a_session() {
        let mut reg = registry();
        let now = Instant::now();
        // Logged in with a clean session: even a DISCONNECT saying otherwise ends it.
        reg.login_loaded(b"c", 5, CONNECT, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        reg.disconnect(b"c", 5, false);
        assert_eq!(reg.stats().sessions, 0);
    }

    #[test]
    fn offline_sessions_are_capped_per_user_then_overall() {
        let mut reg = registry_with(OfflineCaps {
            total: 4,
            per_user: 2,
        });
        let now = Instant::now();
        // One account with many client ids pushes out only its own sessions.
        for i in 0..5usize {
            let id = format!("m{i}");
            reg.login_loaded(
                id.as_bytes(),
                100 + i,
                PERSISTENT,
                &identity("mallory", "9"),
                now,
                || Ok(rules("9", &[])),
            )
            .unwrap();
            reg.disconnect(id.as_bytes(), 100 + i, false);
            reg.deliver_urgent(rules("9", &[]));
        }
        assert_eq!(reg.stats().offline, 2);
        assert!(!reg.ok(b"m2", 102, Access::Read, "/users/9/messages"));
        assert!(reg.ok(b"m4", 104, Access::Read, "/users/9/messages"));
        for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
            let id = format!("{user}-phone");
            reg.login_loaded(
                id.as_bytes(),
                200 + i,
                PERSISTENT,
                &identity(user, user),
                now,
                || Ok(rules(user, &[])),
            )
            .unwrap();
            reg.disconnect(id.as_bytes(), 200 + i, false);
        }
        // Over the total of 4: the oldest overall (mallory's m3) went first.
        assert_eq!(reg.stats().offline, 4);
        assert!(!reg.ok(b"m3", 103, Access::Read, "/users/9/messages"));
        assert!(reg.ok(b"a-phone", 200, Access::Read, "/users/a/messages"));
    }

    #[test]
    fn take_over_keeps_the_newcomer() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(
            b"shared-id",
            1,
            CONNECT,
            &identity("alice", "1"),
            now,
            || Ok(rules("1", &[])),
        )
        .unwrap();
        reg.login_loaded(b"shared-id", 2, CONNECT, &identity("bob", "2"), now, || {
            Ok(rules("2", &[]))
        })
        .unwrap();
        // The old connection's DISCONNECT arrives after the newcomer's login.
        reg.disconnect(b"shared-id", 1, true);
        assert!(reg.ok(b"shared-id", 2, Access::Read, "/users/2/messages"));
        assert!(!reg.ok(b"shared-id", 1, Access::Read, "/users/1/messages"));
        assert_eq!(reg.stats().sessions, 1);
    }

    #[test]
    fn a_refused_or_deferred_login_ends_a_dead_session_at_its_address() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(b"id", 7, PERSISTENT, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        // A live session of the id at another address stays.
        reg.refused(b"id", 8);
        assert_eq!(reg.stats().sessions, 1);
        reg.disconnect(b"id", 7, false);
        // An anonymous client at the reused address of the offline session.
        reg.refused(b"id", 7);
        assert_eq!(reg.stats().sessions, 0);
    }

    #[test]
    fn wills_and_retained_messages_on_chat_topics_never_reach_anyone() {
        let mut reg = registry();
        let now = Instant::now();
        let root = Identity {
            superuser: true,
            ..identity("root", "0")
        };
        reg.login_loaded(b"root", 1, CONNECT, &root, now, no_load)
            .unwrap();
        reg.login_loaded(b"bob", 2, CONNECT, &identity("bob", "2"), now, || {
            Ok(rules("2", &[]))
        })
        .unwrap();
        reg.login_loaded(b"eve", 3, CONNECT, &identity("eve", "3"), now, || {
            Ok(rules("3", &[]))
        })
        .unwrap();
        // A PUBLISH: WRITE, then MESSAGE (`event`), then the deliveries.
        assert!(reg.ok(b"eve", 3, Access::Write, "/users/2/messages"));
        reg.event();
        assert!(reg.ok(b"bob", 2, Access::Read, "/users/2/messages"));
        assert!(reg.ok(b"root", 1, Access::Read, "/users/2/messages"));
        // A will of a still-online session (a take-over by a certificate client, or the
        // broker shutting down): WRITE, then straight to the deliveries.
        assert!(reg.ok(b"eve", 3, Access::Write, "/users/2/messages"));
        assert!(!reg.ok(b"bob", 2, Access::Read, "/users/2/messages"));
        assert!(!reg.ok(b"root", 1, Access::Read, "/users/2/messages"));
        assert_eq!(reg.stats().unvalidated_refused, 2);
        // Other topics and later events are not affected.
        assert!(reg.ok(b"root", 1, Access::Read, "status/eve"));
        reg.event();
        assert!(reg.ok(b"bob", 2, Access::Read, "/users/2/messages"));
        // A retained chat message (from before the plugin) is never delivered.
        assert!(!reg.decided(b"bob", 2, Access::Read, "/users/2/messages", true, &NoFacts));
        assert!(!reg.decided(
            b"root",
            1,
            Access::Read,
            "/users/2/messages",
            true,
            &NoFacts
        ));
        assert!(reg.decided(b"root", 1, Access::Read, "status/x", true, &NoFacts));
    }

    #[test]
    fn restored_sessions_bind_to_the_restored_context_only() {
        let mut reg = registry();
        let now = Instant::now();
        let jobs = reg.restore(
            vec![
                SavedSession {
                    client_id: "alice-phone".into(),
                    username: "alice".into(),
                    user_id: "1".into(),
                    superuser: false,
                    backend: Default::default(),
                    relay: false,
                },
                SavedSession {
                    client_id: "alice-tablet".into(),
                    username: "alice".into(),
                    user_id: "1".into(),
                    superuser: false,
                    backend: Default::default(),
                    relay: false,
                },
            ],
            now,
        );
        assert_eq!(jobs.len(), 1, "one load per user");
        assert_eq!(reg.stats().restored, 2);
        // Before the rules arrive: the identity (its inbox), no group.
        assert!(!reg.decided(
            b"alice-phone",
            50,
            Access::Read,
            "/users/1/messages",
            false,
            &Live(false)
        ));
        assert!(!reg.decided(
            b"alice-phone",
            50,
            Access::Read,
            "/users/1/messages",
            false,
            &Restored("mallory")
        ));
        assert!(reg.decided(
            b"alice-phone",
            50,
            Access::Read,
            "/users/1/messages",
            false,
            &Restored("alice")
        ));
        assert_eq!(reg.stats().restored, 1);
        reg.apply(
            Loaded {
                job: jobs[0].clone(),
                result: Ok(rules("1", &["7"])),
            },
            now,
        );
        assert!(reg.ok(b"alice-phone", 50, Access::Read, "/groups/7/messages"));
        // Only deliveries: a live client reaching an unbound session gets nothing.
        assert!(!reg.decided(
            b"alice-tablet",
            51,
            Access::Subscribe,
            "/users/1/messages",
            false,
            &Live(false)
        ));
        let saved = reg.persistent_sessions(true).unwrap();
        assert_eq!(saved.len(), 2);
    }

    #[test]
    fn certificate_clients_log_in_again_when_they_resume_a_session() {
        let mut reg = registry();
        let now = Instant::now();
        let inbox = "/users/5/messages";
        let cert = identity("cert-user", "5");
        let check = |reg: &mut Registry, pointer, access, facts: &dyn ClientFacts| {
            reg.check(b"cam", pointer, access, inbox, false, facts)
        };
        assert_eq!(
            check(&mut reg, 10, Access::Subscribe, &Live(true)),
            Err(Pending::CertificateLogin)
        );
        reg.login_loaded(b"cam", 10, PERSISTENT, &cert, now, || Ok(rules("5", &[])))
            .unwrap();
        assert_eq!(
            check(&mut reg, 10, Access::Subscribe, &Live(true)),
            Ok(true)
        );
        reg.disconnect(b"cam", 10, false);
        // The offline session's own deliveries and wills (no certificate once disconnected).
        assert_eq!(check(&mut reg, 10, Access::Read, &NoFacts), Ok(true));
        assert_eq!(check(&mut reg, 10, Access::Write, &NoFacts), Ok(false));
        // Back at another address, or at the same one: logged in again, not refused.
        assert_eq!(
            check(&mut reg, 20, Access::Subscribe, &Live(true)),
            Err(Pending::CertificateLogin)
        );
        assert_eq!(
            check(&mut reg, 10, Access::Write, &Live(true)),
            Err(Pending::CertificateLogin)
        );
        // Without a certificate, an unbound address gets nothing.
        assert_eq!(
            check(&mut reg, 20, Access::Subscribe, &Live(false)),
            Ok(false)
        );
        reg.login_loaded(b"cam", 20, PERSISTENT, &cert, now, no_load)
            .unwrap();
        reg.deliver_urgent(rules("5", &[]));
        assert_eq!(check(&mut reg, 20, Access::Write, &Live(true)), Ok(true));
        assert_eq!(reg.stats().offline, 0);

        // A refused certificate connection is not looked up again, until it comes back.
        reg.certificate_refused(b"other", 30);
        let other = |reg: &mut Registry| {
            reg.check(b"other", 30, Access::Subscribe, inbox, false, &Live(true))
        };
        assert_eq!(other(&mut reg), Ok(false));
        reg.disconnect(b"other", 30, true);
        assert_eq!(other(&mut reg), Err(Pending::CertificateLogin));
    }

    fn alice_again() -> Identity {
        Identity {
            proof: Some(Proof {
                password: [1; 16],
                stored_hash: [1; 8],
            }),
            ..identity("alice", "1")
        }
    }

    #[test]
    fn a_superuser_no_longer_one_in_its_row_logs_in_again() {
        let mut reg = registry();
        let root = Identity {
            superuser: true,
            ..alice_again()
        };
        reg.login_loaded(b"r", 1, CONNECT, &root, Instant::now(), no_load)
            .unwrap();
        let valid = |_: &Proof| true;
        assert!(reg.user_checked("alice", Some((&valid, true))).is_empty());
        assert_eq!(
            reg.user_checked("alice", Some((&valid, false))),
            [Box::from(&b"r"[..])]
        );
        assert!(!reg.is_superuser(b"r", 1));
    }

    #[test]
    fn a_changed_password_or_a_removed_user_ends_sessions() {
        let mut reg = registry();
        let now = Instant::now();
        let proof = |n: u8| Proof {
            password: [n; 16],
            stored_hash: [n; 8],
        };
        let mut alice = identity("alice", "1");
        alice.proof = Some(proof(1));
        reg.login_loaded(b"a1", 1, CONNECT, &alice, now, || Ok(rules("1", &[])))
            .unwrap();
        alice.proof = Some(proof(2));
        reg.login_loaded(b"a2", 2, PERSISTENT, &alice, now, || Ok(rules("1", &[])))
            .unwrap();
        reg.disconnect(b"a2", 2, false);
        let valid = |p: &Proof| p.stored_hash == [1; 8];
        let kicked = reg.user_checked("alice", Some((&valid, false)));
        assert!(kicked.is_empty(), "the offline one ends without a kick");
        assert_eq!(reg.stats().sessions, 1);
        // Made a superuser since: the client logs in again to be one.
        assert_eq!(reg.user_checked("alice", Some((&valid, true))).len(), 1);
        reg.login_loaded(b"a1", 1, CONNECT, &alice_again(), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        let kicked = reg.user_checked("alice", None);
        assert_eq!(kicked, vec![Box::<[u8]>::from(&b"a1"[..])]);
        assert_eq!(reg.stats().sessions, 0);
    }

    #[test]
    fn an_offline_only_user_is_forgotten_once_its_last_session_goes() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(b"p", 5, PERSISTENT, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        reg.disconnect(b"p", 5, false);
        // Due while only offline: no refresh, and out of the due queue.
        assert!(reg.due_jobs(now + REFRESH).is_empty());
        // A SUBSCRIBE at its place ends the session.
        assert!(!reg.ok(b"p", 5, Access::Subscribe, "/users/1/messages"));
        assert_eq!(reg.stats().users, 1);
        reg.due_jobs(now + 3 * REFRESH);
        assert_eq!(reg.stats().users, 0, "forgotten");
    }

    #[test]
    fn a_refresh_for_an_earlier_identity_ends_without_blocking_the_next() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(b"a", 1, CONNECT, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        let old = reg.due_jobs(now + REFRESH);
        assert_eq!(old.len(), 1);
        // The user's row now says another id; a new login loads for it.
        reg.login_loaded(b"b", 2, CONNECT, &identity("alice", "9"), now, || {
            Ok(rules("9", &[]))
        })
        .unwrap();
        let gone = reg.apply(
            Loaded {
                job: old[0].clone(),
                result: Ok(rules("1", &["7"])),
            },
            now + REFRESH,
        );
        assert_eq!(gone, Applied::Gone);
        assert_eq!(reg.due_jobs(now + 3 * REFRESH).len(), 1, "refreshed again");
    }

    #[test]
    fn refresh_swaps_rules_and_failure_keeps_them() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(b"c", 1, CONNECT, &identity("alice", "1"), now, || {
            Ok(rules("1", &["7"]))
        })
        .unwrap();
        let jobs = reg.due_jobs(now + REFRESH);
        assert_eq!(jobs.len(), 1);
        assert!(reg.due_jobs(now + REFRESH).is_empty(), "one job in flight");
        let failed = reg.apply(
            Loaded {
                job: jobs[0].clone(),
                result: Err(DbError::Unavailable("down".into())),
            },
            now + REFRESH,
        );
        assert!(matches!(failed, Applied::Failed(_)));
        assert!(reg.ok(b"c", 1, Access::Write, "/groups/7/messages"));
        let retry = reg.due_jobs(now + REFRESH + RETRY_AFTER_FAILURE);
        assert_eq!(retry.len(), 1);
        let applied = reg.apply(
            Loaded {
                job: retry[0].clone(),
                result: Ok(rules("1", &["8"])),
            },
            now + REFRESH + RETRY_AFTER_FAILURE,
        );
        assert_eq!(applied, Applied::Refreshed { clients: 1 });
        assert!(!reg.ok(b"c", 1, Access::Write, "/groups/7/messages"));
        assert!(reg.ok(b"c", 1, Access::Write, "/groups/8/messages"));
        assert_eq!(reg.stats().refresh_failures, 1);
    }

    #[test]
    fn patterns_are_expanded_per_client_and_follow_refreshes() {
        let mut reg = registry();
        let now = Instant::now();
        let mut loaded = rules("1", &[]);
        loaded.rows.write = vec!["devices/%c/out".into(), "users/%u/#".into()];
        let load = || Ok(loaded.clone());
        reg.login_loaded(b"dev1", 1, CONNECT, &identity("alice", "1"), now, load)
            .unwrap();
        reg.login_loaded(b"dev2", 2, CONNECT, &identity("alice", "1"), now, load)
            .unwrap();
        reg.deliver_urgent(loaded.clone());
        assert!(reg.ok(b"dev1", 1, Access::Write, "devices/dev1/out"));
        assert!(!reg.ok(b"dev1", 1, Access::Write, "devices/dev2/out"));
        assert!(reg.ok(b"dev2", 2, Access::Write, "devices/dev2/out"));
        assert!(reg.ok(b"dev2", 2, Access::Write, "users/alice/x"));
        let job = reg.refresh_user("alice", None).pop().unwrap();
        reg.apply(
            Loaded {
                job,
                result: Ok(rules("1", &[])),
            },
            now,
        );
        assert!(!reg.ok(b"dev1", 1, Access::Write, "devices/dev1/out"));
    }

    #[test]
    fn kick_and_refresh_reach_every_spelling_of_a_name() {
        let mut reg = registry();
        let now = Instant::now();
        let load = || Ok(rules("503", &[]));
        for (client, spelling) in [(&b"phone"[..], "Steve"), (b"desk", "steve"), (b"x", "bob")] {
            reg.login_loaded(client, 1, CONNECT, &identity(spelling, "503"), now, load)
                .unwrap();
        }
        assert_eq!(reg.other_spellings("steve"), [Box::from(&b"phone"[..])]);
        let jobs = reg.refresh_user("steve", Some(Reply::to("admin", "r")));
        let asked: Vec<_> = jobs
            .iter()
            .map(|job| (job.username.as_str(), job.reply.is_some()))
            .collect();
        assert_eq!(asked, [("steve", true), ("Steve", false)]);
    }

    #[test]
    fn superusers_need_no_rules() {
        let mut reg = registry();
        let root = Identity {
            superuser: true,
            ..identity("root", "0")
        };
        reg.login_loaded(b"admin", 1, CONNECT, &root, Instant::now(), no_load)
            .unwrap();
        assert!(reg.ok(b"admin", 1, Access::Subscribe, "#"));
        assert!(reg.is_superuser(b"admin", 1));
        assert_eq!(reg.stats().users, 0);
    }

    #[test]
    fn reload_refreshes_connected_users_and_forgets_the_rest() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login_loaded(b"a", 1, CONNECT, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        reg.login_loaded(b"b", 2, CONNECT, &identity("bob", "2"), now, || {
            Ok(rules("2", &[]))
        })
        .unwrap();
        reg.disconnect(b"b", 2, true);
        let jobs = reg.refresh_all();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].username, "alice");
        assert_eq!(reg.stats().users, 1);
        assert!(reg.refresh_user("bob", None).is_empty());
    }
}
