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
//!
//! Here the types and the queries; `lifecycle` logins and disconnects, `offline` the offline
//! sessions' caps and the sessions file, `decide` the ACL checks (wills included), `rules` the
//! users' rules and their loads.

mod decide;
mod lifecycle;
mod offline;
mod rules;

use crate::acl::{GroupIds, PatternSet, RuleSet};
use crate::action::Reply;
use crate::auth::Proof;
use crate::backend::{BackendError, BackendKind};
use crate::chat::topics::ChatTopics;
use crate::history;
use crate::names::same_name;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

/// The maps every ACL check reads (twice per chat message): aHash, seeded at random per
/// map, costs a tenth of SipHash for a short id and still keeps a client from choosing ids
/// that collide (issue 26).
type Map<K, V> = HashMap<K, V, ahash::RandomState>;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a failed refresh is tried again (or the refresh period, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Client ids of unknown clients logged once; the set is cleared when full.
const UNKNOWN_LOG_MEMORY: usize = 1024;

/// The limits on offline sessions (`auth_opt_offline_sessions_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineCaps {
    pub total: usize,
    pub per_user: usize,
}

impl Default for OfflineCaps {
    fn default() -> Self {
        OfflineCaps {
            // Offline persistent sessions kept for their queued deliveries; beyond this the
            // oldest are forgotten (their queued chat messages are then refused until they
            // log in again).
            total: 100_000,
            // Per username: one account cannot push out everyone else's.
            per_user: 16,
        }
    }
}

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
    pub result: Result<RuleSet, BackendError>,
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
        /// Answered from the credential cache (no password check): the user's rules held are
        /// kept when loaded less than `acl_cacheseconds` ago (see [`Registry::login`]).
        cached: bool,
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
    /// When the rules held were loaded, while a login answered from the credential cache
    /// may keep them (less than `acl_cacheseconds` ago); `None` once anything may have
    /// changed them: a failed load, SIGHUP, `refreshUser`, `kickUser`, or the identity-only
    /// rules of a first login.
    loaded: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Online,
    /// A persistent session whose client is gone: judged for deliveries only.
    Offline,
}

/// One connection of a client: its client id, and the broker's context for it (its
/// `struct mosquitto *`, as an address), which tells two connections apart when a client id
/// is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    pub client_id: &'a [u8],
    pub pointer: usize,
}

impl<'a> Connection<'a> {
    pub fn new(client_id: &'a [u8], pointer: usize) -> Connection<'a> {
        Connection { client_id, pointer }
    }
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
    sessions: Map<Box<[u8]>, Session>,
    users: Map<Arc<str>, UserEntry>,
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

impl Registry {
    pub fn new(chat: Option<ChatTopics>, refresh: Duration, caps: OfflineCaps) -> Registry {
        Registry {
            chat,
            refresh,
            caps,
            sessions: Map::default(),
            users: Map::default(),
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
    pub fn chat_user(&self, connection: Connection<'_>) -> Option<history::Requester<'_>> {
        let Connection { client_id, pointer } = connection;
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

    /// Who is publishing, for chat payload checks (`facts` are asked only when the client
    /// id has no session).
    pub fn author(&self, connection: Connection<'_>, facts: &dyn ClientFacts) -> Author<'_> {
        let Connection { client_id, pointer } = connection;
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
    /// Whether this connection is logged in: a BASIC_AUTH for it is the broker's re-check
    /// (SIGHUP), one CONNECT per connection.
    pub fn is_online_at(&self, connection: Connection<'_>) -> bool {
        let Connection { client_id, pointer } = connection;
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.pointer == pointer && s.state == State::Online)
    }

    pub fn is_superuser(&self, connection: Connection<'_>) -> bool {
        let Connection { client_id, pointer } = connection;
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.pointer == pointer && s.state == State::Online && s.superuser)
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
}

#[cfg(test)]
mod tests;
