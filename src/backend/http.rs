//! auth-plug's HTTP backend (and mosquitto-go-auth's): a POST per question to the operator's
//! service. A 2xx answer allows, 5xx or a transport error is an error (refused, asked again
//! next time), anything else refuses. `acc` is as auth-plug sends it: -1 for logins and
//! superuser checks, 1 read, 2 write, 4 subscribe.
//!
//! Logins and ACL checks ask on the broker thread (Mosquitto 2.0 cannot wait for a plugin),
//! so every request is bounded by `http_timeout`, and failures are contained:
//! - after an error for one user's question (a 5xx, a timeout) that user is not asked about
//!   at that path again for a growing pause (1 s doubling to 30 s); other users are asked as
//!   usual ([`Pauses`], bounded);
//! - only when the service cannot be reached (no connection, a timeout) for several users in
//!   a row is it left alone for everyone ([`Breaker`]): a dead or hanging service then costs
//!   the broker a few timeouts per pause, not one per user;
//! - answers are kept in fixed-size entries, bounded in bytes, pushed out oldest first
//!   ([`AnswerCache`]);
//! - a SIGHUP asks nothing on the broker thread: the answers kept are marked stale, served
//!   until the service answers again, and asked again on a background thread; the broker's
//!   re-checks of the service's users are answered from the logins the service accepted,
//!   each asked again in the background (a login it now refuses is disconnected at TICK).

use crate::acl::Access;
use crate::action::Action;
use crate::auth::{BackendKind, Lookup, UserRecord, UserSource};
use crate::config::{HttpConfig, ParamsMode, ResponseMode};
use crate::db::DbError;
use crate::logging::printable;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of ACL answers kept (about 73,000 answers; `AnswerCache::ENTRY_BYTES`).
const ACL_CACHE_BYTES: usize = 8 << 20;
/// Bytes of accepted logins kept for SIGHUP re-checks (about 73,000).
const LOGIN_MEMO_BYTES: usize = 8 << 20;
/// Bytes of superuser answers kept for SIGHUP re-checks.
const SUPERUSER_MEMO_BYTES: usize = 2 << 20;
/// Users (per path) kept in a pause at most.
const PAUSED_USERS: usize = 10_000;
/// Users in a row the service could not be reached for before it is left alone for all.
const UNREACHABLE_USERS: usize = 3;
/// Bytes of questions waiting to be asked again in the background (beyond: not asked
/// again; the answer kept is served until it expires).
const REFRESH_QUEUE_BYTES: usize = 8 << 20;
/// Disconnections waiting for the broker thread, at most.
const KICKS_WAITING: usize = 100_000;
/// How long after a reload the broker's re-checks are answered from the logins kept (as
/// the plugin's own re-check window).
const RECHECK_WINDOW: Duration = Duration::from_secs(5);
/// The longest answer body read (json and text modes).
const MAX_BODY: u64 = 16 * 1024;
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// What the service said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow,
    Refuse,
    /// 5xx, a transport error or a timeout: neither allowed nor cached.
    Error(String),
}

/// The `acc` value auth-plug sends.
pub fn acc(access: Access) -> i32 {
    match access {
        Access::Read => 1,
        Access::Write => 2,
        Access::Subscribe => 4,
        // Never asked: unsubscribing is always allowed.
        Access::Unsubscribe => 8,
    }
}

/// The fields of one request, in auth-plug's order, with the operator's extra parameters
/// (`http_*_params`) after them.
pub fn fields<'a>(
    username: &'a str,
    password: &'a str,
    topic: &'a str,
    acc: i32,
    client_id: &'a str,
    extra: &'a [(String, String)],
) -> Vec<(&'a str, FieldValue<'a>)> {
    let mut fields = vec![
        ("username", FieldValue::Text(username)),
        ("password", FieldValue::Text(password)),
        ("topic", FieldValue::Text(topic)),
        ("acc", FieldValue::Number(acc)),
        ("clientid", FieldValue::Text(client_id)),
    ];
    fields.extend(
        extra
            .iter()
            .map(|(k, v)| (k.as_str(), FieldValue::Text(v.as_str()))),
    );
    fields
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Number(i32),
}

/// The request body and its content type. Form values are percent-encoded (every value,
/// the client id too); JSON is serde_json's.
pub fn body(mode: ParamsMode, fields: &[(&str, FieldValue<'_>)]) -> (&'static str, String) {
    match mode {
        ParamsMode::Form => {
            let pairs = fields.iter().map(|(k, v)| {
                let value = match v {
                    FieldValue::Text(t) => (*t).to_string(),
                    FieldValue::Number(n) => n.to_string(),
                };
                format!("{}={}", form_escape(k), form_escape(&value))
            });
            (
                "application/x-www-form-urlencoded",
                pairs.collect::<Vec<_>>().join("&"),
            )
        }
        ParamsMode::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        FieldValue::Text(t) => serde_json::Value::from(*t),
                        FieldValue::Number(n) => serde_json::Value::from(*n),
                    };
                    (k.to_string(), value)
                })
                .collect();
            (
                "application/json",
                serde_json::Value::Object(object).to_string(),
            )
        }
    }
}

/// `application/x-www-form-urlencoded`: unreserved bytes as they are, space as `+`, the
/// rest `%XX`.
fn form_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The verdict on one answer. `status` mode (auth-plug): 2xx allows, 5xx is an error, the
/// rest refuses. `json` (go-auth): 200 with `{"ok": true}` allows. `text` (go-auth): 200 with
/// the body `ok` allows. In both, a 5xx is an error and anything else refuses.
pub fn verdict(mode: ResponseMode, status: u16, body: &str) -> Answer {
    if status >= 500 {
        return Answer::Error(format!("the service answered {status}"));
    }
    let allowed = match mode {
        ResponseMode::Status => (200..300).contains(&status),
        ResponseMode::Json => {
            status == 200
                && serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("ok").and_then(serde_json::Value::as_bool))
                    == Some(true)
        }
        ResponseMode::Text => status == 200 && body.trim() == "ok",
    };
    if allowed {
        Answer::Allow
    } else {
        Answer::Refuse
    }
}

/// After an error the service is left alone for a pause that doubles while it keeps failing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    until: Option<Instant>,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            until: None,
            next: FIRST_PAUSE,
        }
    }
}

impl Backoff {
    /// `Some(left)` while pausing.
    pub fn pausing(&self, now: Instant) -> Option<Duration> {
        self.until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Returns the pause that starts now.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let pause = self.next;
        self.until = Some(now + pause);
        self.next = (pause * 2).min(LONGEST_PAUSE);
        pause
    }

    /// Whether it had been failing.
    pub fn succeeded(&mut self) -> bool {
        let was_failing = self.until.is_some();
        self.until = None;
        self.next = FIRST_PAUSE;
        was_failing
    }

    /// Whether the last pause ended more than `LONGEST_PAUSE` ago (or none began): nothing
    /// worth remembering.
    fn forgotten(&self, now: Instant) -> bool {
        self.until
            .is_none_or(|until| now.saturating_duration_since(until) > LONGEST_PAUSE)
    }
}

/// A question's fields as a fixed-size key: two keyed 64-bit hashes (SipHash under random
/// keys made at start), so a cached answer costs the same few bytes whatever the length of
/// its topic or username, and nobody can aim two questions at one key.
#[derive(Debug, Clone)]
pub struct Keys {
    first: RandomState,
    second: RandomState,
}

pub type Key = [u64; 2];

impl Default for Keys {
    fn default() -> Self {
        Keys {
            first: RandomState::new(),
            second: RandomState::new(),
        }
    }
}

impl Keys {
    pub fn key(&self, parts: &[&[u8]]) -> Key {
        let (mut first, mut second) = (self.first.build_hasher(), self.second.build_hasher());
        for part in parts {
            for hasher in [&mut first, &mut second] {
                hasher.write_usize(part.len());
                hasher.write(part);
            }
        }
        [first.finish(), second.finish()]
    }
}

/// Pauses per user (a key for the path and username): a 5xx or a timeout for one user's
/// question leaves that user alone for a while (1 s, doubling to 30 s while it goes on) and
/// nobody else. At most `capacity` users are remembered: those whose pause ended long ago go
/// first, then the one whose pause ends soonest.
#[derive(Debug)]
pub struct Pauses {
    capacity: usize,
    paused: HashMap<u64, Backoff>,
}

impl Pauses {
    pub fn new(capacity: usize) -> Pauses {
        Pauses {
            capacity,
            paused: HashMap::new(),
        }
    }

    pub fn pausing(&self, user: u64, now: Instant) -> Option<Duration> {
        self.paused.get(&user)?.pausing(now)
    }

    /// The pause that starts now for `user`.
    pub fn failed(&mut self, user: u64, now: Instant) -> Duration {
        if !self.paused.contains_key(&user) && self.paused.len() >= self.capacity {
            self.paused.retain(|_, backoff| !backoff.forgotten(now));
            if self.paused.len() >= self.capacity {
                let soonest = self
                    .paused
                    .iter()
                    .min_by_key(|(_, backoff)| backoff.until)
                    .map(|(user, _)| *user);
                if let Some(soonest) = soonest {
                    self.paused.remove(&soonest);
                }
            }
        }
        self.paused.entry(user).or_default().failed(now)
    }

    /// Whether `user` had been failing.
    pub fn succeeded(&mut self, user: u64) -> bool {
        self.paused.remove(&user).is_some()
    }

    pub fn len(&self) -> usize {
        self.paused.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paused.is_empty()
    }
}

/// The service as a whole: left alone for everyone (1 s, doubling to 30 s) only when it
/// could not be reached (no connection, no answer in time) for `UNREACHABLE_USERS`
/// different users in a row, with no answer between; once it is, one more such failure
/// (the first question after the pause) starts the next pause. Any answer, a 5xx too
/// (the service is there), closes it.
#[derive(Debug, Default)]
pub struct Breaker {
    /// The users it could not be reached for since its last answer.
    streak: Vec<u64>,
    backoff: Backoff,
}

impl Breaker {
    pub fn pausing(&self, now: Instant) -> Option<Duration> {
        self.backoff.pausing(now)
    }

    /// The service could not be reached for `user`: `Some(pause)` when the pause for
    /// everyone starts.
    pub fn unreachable(&mut self, user: u64, now: Instant) -> Option<Duration> {
        if !self.streak.contains(&user) {
            self.streak.push(user);
        }
        let open = self.backoff.until.is_some();
        (open || self.streak.len() >= UNREACHABLE_USERS).then(|| {
            self.streak.clear();
            self.backoff.failed(now)
        })
    }

    /// The service answered: whether it had been left alone.
    pub fn answered(&mut self) -> bool {
        self.streak.clear();
        self.backoff.succeeded()
    }
}

/// One kept answer: 24 bytes beside its 16-byte key.
#[derive(Debug, Clone, Copy)]
struct Entry {
    allowed: bool,
    /// Seconds after the cache's start (`u32::MAX`: never).
    expires: u32,
    /// The reload it was last asked or handed out stale in.
    epoch: u32,
    /// Its place in `order` (wrapping: `order` never holds 2^32 places).
    seq: u32,
}

// 114 bytes an answer at most, whatever its topic: 8 MiB hold about 73,000.
const _: () = assert!(AnswerCache::ENTRY_BYTES <= 128);

/// A kept answer as it is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Fresh(bool),
    /// Asked before the last reload and handed out the first time since: ask again (the
    /// answer is served meanwhile).
    Stale(bool),
}

impl Cached {
    pub fn allowed(self) -> bool {
        match self {
            Cached::Fresh(allowed) | Cached::Stale(allowed) => allowed,
        }
    }
}

/// Answers under fixed-size keys, at most `capacity` (from a size in bytes), for `ttl` (or
/// until pushed out): the oldest answer goes first, one at a time (expired ones ahead of
/// their turn), never all at once. A reload marks every answer stale.
#[derive(Debug)]
pub struct AnswerCache {
    ttl: Option<Duration>,
    capacity: usize,
    start: Instant,
    epoch: u32,
    next_seq: u32,
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were put, with the `seq` they were put with (a key put again
    /// has an older place left here, skipped when reached).
    order: VecDeque<(Key, u32)>,
}

impl AnswerCache {
    /// The bytes one answer costs at most: its entry in a hash table at its lowest load, and
    /// two places in `order`.
    pub const ENTRY_BYTES: usize =
        2 * (size_of::<(Key, Entry)>() + 1) + 2 * size_of::<(Key, u32)>();

    /// `ttl` `None`: kept until pushed out; `Some(ZERO)`: nothing is kept.
    pub fn new(ttl: Option<Duration>, max_bytes: usize, now: Instant) -> AnswerCache {
        AnswerCache {
            ttl,
            capacity: (max_bytes / Self::ENTRY_BYTES).max(1),
            start: now,
            epoch: 0,
            next_seq: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn seconds(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.start).as_secs()).unwrap_or(u32::MAX - 1)
    }

    /// The answer under `key`, if kept and not expired.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Cached> {
        let seconds = self.seconds(now);
        let epoch = self.epoch;
        let entry = self.entries.get_mut(key)?;
        if entry.expires <= seconds {
            return None;
        }
        if entry.epoch == epoch {
            return Some(Cached::Fresh(entry.allowed));
        }
        entry.epoch = epoch;
        Some(Cached::Stale(entry.allowed))
    }

    pub fn put(&mut self, key: Key, allowed: bool, now: Instant) {
        let expires = match self.ttl {
            Some(ttl) if ttl.is_zero() => return,
            // Rounded down, so an answer never outlives its time.
            Some(ttl) => self
                .seconds(now)
                .saturating_add(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)),
            None => u32::MAX,
        };
        let seconds = self.seconds(now);
        // Expired answers at the front go ahead of their turn, a few per put.
        for _ in 0..2 {
            match self.order.front() {
                Some((front, seq))
                    if self
                        .entries
                        .get(front)
                        .is_some_and(|e| e.seq == *seq && e.expires <= seconds) =>
                {
                    let front = *front;
                    self.entries.remove(&front);
                    self.order.pop_front();
                }
                _ => break,
            }
        }
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                let Some((oldest, seq)) = self.order.pop_front() else {
                    break;
                };
                if self.entries.get(&oldest).is_some_and(|e| e.seq == seq) {
                    self.entries.remove(&oldest);
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.entries.insert(
            key,
            Entry {
                allowed,
                expires,
                epoch: self.epoch,
                seq,
            },
        );
        self.order.push_back((key, seq));
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }

    pub fn remove(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Every answer kept is stale from now on.
    pub fn reload(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The key of an ACL answer: per client (id and username: a client id is the client's
/// choice, and another user may take it), topic and access.
fn acl_key(keys: &Keys, client_id: &[u8], username: &str, topic: &str, access: Access) -> Key {
    keys.key(&[
        b"acl",
        client_id,
        username.as_bytes(),
        topic.as_bytes(),
        &acc(access).to_le_bytes(),
    ])
}

/// A question asked again in the background after a reload (its answer was handed out
/// stale, or a re-check was answered from the logins kept).
#[derive(Debug)]
enum Job {
    Login {
        key: Key,
        username: String,
        password: String,
        client_id: Vec<u8>,
    },
    Superuser {
        key: Key,
        username: String,
    },
    Acl {
        key: Key,
        username: String,
        client_id: Vec<u8>,
        topic: String,
        access: Access,
    },
}

impl Job {
    fn bytes(&self) -> usize {
        size_of::<Job>()
            + match self {
                Job::Login {
                    username,
                    password,
                    client_id,
                    ..
                } => username.len() + password.len() + client_id.len(),
                Job::Superuser { username, .. } => username.len(),
                Job::Acl {
                    username,
                    client_id,
                    topic,
                    ..
                } => username.len() + client_id.len() + topic.len(),
            }
    }
}

/// Questions waiting for the background thread, bounded in bytes.
#[derive(Default)]
struct Jobs {
    queue: Mutex<JobQueue>,
    ready: Condvar,
}

#[derive(Default)]
struct JobQueue {
    jobs: VecDeque<Job>,
    bytes: usize,
    /// Jobs not queued because it was full, since the last warning.
    dropped: u64,
    closed: bool,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, JobQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, job: Job) {
        let mut queue = self.lock();
        let bytes = job.bytes();
        if queue.closed || queue.bytes + bytes > REFRESH_QUEUE_BYTES {
            queue.dropped += 1;
            return;
        }
        queue.bytes += bytes;
        queue.jobs.push_back(job);
        drop(queue);
        self.ready.notify_one();
    }

    /// The next job; `None` once closed.
    fn next(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            if let Some(job) = queue.jobs.pop_front() {
                queue.bytes -= job.bytes();
                let dropped = match queue.jobs.is_empty() {
                    true => std::mem::take(&mut queue.dropped),
                    false => 0,
                };
                drop(queue);
                if dropped > 0 {
                    log::warn!(
                        "HTTP auth service: {dropped} answers were not asked again after the \
                         reload (more than {} MiB of questions waiting); they are served until \
                         they expire",
                        REFRESH_QUEUE_BYTES >> 20
                    );
                }
                return Some(job);
            }
            queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// What the backend keeps, behind one lock (never held while asking the service).
struct State {
    pauses: Pauses,
    breaker: Breaker,
    acl: AnswerCache,
    /// Logins the service accepted (username and password), for SIGHUP re-checks.
    logins: AnswerCache,
    superusers: AnswerCache,
    /// The last reload: re-checks within `RECHECK_WINDOW` of it are answered from `logins`.
    reloaded: Option<Instant>,
    /// Disconnections for the broker thread (logins and superusers the service no longer
    /// accepts on being asked again).
    kicks: Vec<Action>,
    /// Per-user failures not logged yet (at most one line a second), and the last line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

/// The parts the broker thread and the background thread share.
struct Inner {
    agent: ureq::Agent,
    config: HttpConfig,
    keys: Keys,
    state: Mutex<State>,
    jobs: Jobs,
    kicks_waiting: AtomicBool,
}

/// The HTTP backend: one kept-alive agent, the answers kept, the pauses, and the thread that
/// asks again after a reload.
pub struct HttpBackend {
    inner: Arc<Inner>,
    worker: Option<JoinHandle<()>>,
}

/// What a question's failure means.
enum Failure {
    /// The service answered 5xx.
    Answered(String),
    /// No answer: no connection, a timeout, a broken reply.
    Unreachable(String),
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn user_key(&self, uri: &str, username: &str) -> u64 {
        self.keys.key(&[uri.as_bytes(), username.as_bytes()])[0]
    }

    /// Whether a re-check now belongs to the last reload's burst.
    fn rechecking(&self, now: Instant) -> bool {
        self.state()
            .reloaded
            .is_some_and(|at| now.saturating_duration_since(at) < RECHECK_WINDOW)
    }

    /// One POST, unless `username` (at `uri`) or the whole service is in a pause.
    fn ask(&self, uri: &str, username: &str, fields: &[(&str, FieldValue<'_>)]) -> Answer {
        let now = Instant::now();
        let user = self.user_key(uri, username);
        {
            let state = self.state();
            if let Some(left) = state.breaker.pausing(now) {
                return Answer::Error(format!(
                    "the HTTP service could not be reached just before; asked again in {} ms",
                    left.as_millis()
                ));
            }
            if let Some(left) = state.pauses.pausing(user, now) {
                return Answer::Error(format!(
                    "the HTTP service failed for this user just before; asked again in {} ms",
                    left.as_millis()
                ));
            }
        }
        let (content_type, body) = body(self.config.params_mode, fields);
        let url = format!("{}{}", self.config.base_url, uri);
        let mut request = self.agent.post(&url).header("Content-Type", content_type);
        if let Some(host) = &self.config.host_header {
            request = request.header("Host", host);
        }
        let outcome = match request.send(body.as_bytes()) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = match self.config.response_mode {
                    ResponseMode::Status => String::new(),
                    _ => response
                        .body_mut()
                        .with_config()
                        .limit(MAX_BODY)
                        .read_to_string()
                        .unwrap_or_default(),
                };
                match verdict(self.config.response_mode, status, &text) {
                    Answer::Error(why) => Err(Failure::Answered(why)),
                    answer => Ok(answer),
                }
            }
            Err(e) => Err(Failure::Unreachable(format!("{url}: {e}"))),
        };
        let now = Instant::now();
        let mut state = self.state();
        // Lines are written after the lock is released.
        let mut lines: Vec<(log::Level, String)> = Vec::new();
        let answer = match outcome {
            Ok(answer) => {
                state.pauses.succeeded(user);
                if state.breaker.answered() {
                    lines.push((log::Level::Info, "HTTP auth service answers again".into()));
                }
                answer
            }
            Err(failure) => {
                let (why, reachable) = match failure {
                    Failure::Answered(why) => (why, true),
                    Failure::Unreachable(why) => (why, false),
                };
                let pause = state.pauses.failed(user, now);
                let everyone = if reachable {
                    state.breaker.answered();
                    None
                } else {
                    state.breaker.unreachable(user, now)
                };
                match everyone {
                    Some(all) => lines.push((
                        log::Level::Warn,
                        format!(
                            "HTTP auth service: {why}; it could not be reached for {} users in \
                             a row: not asked again for anyone for {} s",
                            UNREACHABLE_USERS,
                            all.as_secs()
                        ),
                    )),
                    None => {
                        let due = state
                            .last_logged
                            .is_none_or(|at| now.saturating_duration_since(at) >= FIRST_PAUSE);
                        if due {
                            let more = std::mem::take(&mut state.unlogged);
                            state.last_logged = Some(now);
                            lines.push((
                                log::Level::Warn,
                                format!(
                                    "HTTP auth service: {why}; not asked about user '{}' at {uri} \
                                     again for {} s{}",
                                    printable(username),
                                    pause.as_secs(),
                                    if more > 0 {
                                        format!(" ({more} more such failures in the last second)")
                                    } else {
                                        String::new()
                                    }
                                ),
                            ));
                        } else {
                            state.unlogged += 1;
                        }
                    }
                }
                Answer::Error(why)
            }
        };
        drop(state);
        for (level, line) in lines {
            log::log!(level, "{line}");
        }
        answer
    }

    fn login_fields<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
        client: &'a str,
    ) -> Vec<(&'a str, FieldValue<'a>)> {
        fields(
            username,
            password,
            "",
            -1,
            client,
            &self.config.getuser_params,
        )
    }

    fn ask_login(&self, username: &str, password: &str, client_id: &[u8]) -> Answer {
        let client = String::from_utf8_lossy(client_id);
        let fields = self.login_fields(username, password, &client);
        self.ask(&self.config.getuser_uri, username, &fields)
    }

    fn ask_superuser(&self, uri: &str, username: &str) -> Answer {
        let fields = fields(username, "", "", -1, "", &self.config.superuser_params);
        self.ask(uri, username, &fields)
    }

    fn ask_acl(
        &self,
        uri: &str,
        username: &str,
        client_id: &[u8],
        topic: &str,
        access: Access,
    ) -> Answer {
        let client = String::from_utf8_lossy(client_id);
        let fields = fields(
            username,
            "",
            topic,
            acc(access),
            &client,
            &self.config.aclcheck_params,
        );
        self.ask(uri, username, &fields)
    }

    /// Asks one question again (the background thread) and keeps what the service says now;
    /// an error keeps the answer held.
    fn refresh(&self, job: Job) {
        let now = || Instant::now();
        match job {
            Job::Login {
                key,
                username,
                password,
                client_id,
            } => match self.ask_login(&username, &password, &client_id) {
                Answer::Allow => self.state().logins.put(key, true, now()),
                Answer::Refuse => {
                    log::info!(
                        "HTTP auth service no longer accepts the login of client '{}' (user \
                         '{}'): disconnected",
                        printable(&String::from_utf8_lossy(&client_id)),
                        printable(&username)
                    );
                    let mut state = self.state();
                    state.logins.remove(&key);
                    self.kick(&mut state, Action::KickClient(client_id));
                }
                Answer::Error(_) => {}
            },
            Job::Superuser { key, username } => {
                let Some(uri) = &self.config.superuser_uri else {
                    return;
                };
                let is = match self.ask_superuser(uri, &username) {
                    Answer::Allow => true,
                    Answer::Refuse => false,
                    Answer::Error(_) => return,
                };
                let mut state = self.state();
                let was = state.superusers.get(&key, now()).map(Cached::allowed);
                state.superusers.put(key, is, now());
                if was == Some(true) && !is {
                    self.kick(&mut state, Action::KickUser(username.clone()));
                    drop(state);
                    log::info!(
                        "HTTP auth service: user '{}' is no longer a superuser: its clients are \
                         disconnected",
                        printable(&username)
                    );
                }
            }
            Job::Acl {
                key,
                username,
                client_id,
                topic,
                access,
            } => {
                let Some(uri) = &self.config.aclcheck_uri else {
                    return;
                };
                let allowed = match self.ask_acl(uri, &username, &client_id, &topic, access) {
                    Answer::Allow => true,
                    Answer::Refuse => false,
                    Answer::Error(_) => return,
                };
                self.state().acl.put(key, allowed, now());
            }
        }
    }

    fn kick(&self, state: &mut State, kick: Action) {
        if state.kicks.len() < KICKS_WAITING {
            state.kicks.push(kick);
            self.kicks_waiting.store(true, Ordering::Release);
        }
    }
}

impl HttpBackend {
    pub fn new(config: HttpConfig) -> HttpBackend {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .disable_verification(!config.verify_peer)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .user_agent("chat-auth")
            .build()
            .into();
        let now = Instant::now();
        let state = State {
            pauses: Pauses::new(PAUSED_USERS),
            breaker: Breaker::default(),
            acl: AnswerCache::new(Some(config.acl_cache), ACL_CACHE_BYTES, now),
            logins: AnswerCache::new(None, LOGIN_MEMO_BYTES, now),
            superusers: AnswerCache::new(None, SUPERUSER_MEMO_BYTES, now),
            reloaded: None,
            kicks: Vec::new(),
            unlogged: 0,
            last_logged: None,
        };
        let inner = Arc::new(Inner {
            agent,
            config,
            keys: Keys::default(),
            state: Mutex::new(state),
            jobs: Jobs::default(),
            kicks_waiting: AtomicBool::new(false),
        });
        let shared = Arc::clone(&inner);
        let worker = std::thread::Builder::new()
            .name("chat-auth-http".into())
            .spawn(move || {
                while let Some(job) = shared.jobs.next() {
                    shared.refresh(job);
                }
            });
        let worker = match worker {
            Ok(worker) => Some(worker),
            Err(e) => {
                log::warn!(
                    "HTTP backend: cannot start its background thread ({e}): after a SIGHUP, \
                     answers kept are served until they expire"
                );
                inner.jobs.close();
                None
            }
        };
        HttpBackend { inner, worker }
    }

    /// An ACL check of a user this backend logged in: from the answers kept, or asked now
    /// (bounded by `http_timeout`). Errors refuse and are not kept.
    pub fn acl(&self, username: &str, client_id: &[u8], topic: &str, access: Access) -> bool {
        let inner = &*self.inner;
        let now = Instant::now();
        let key = acl_key(&inner.keys, client_id, username, topic, access);
        let kept = inner.state().acl.get(&key, now);
        match kept {
            Some(Cached::Fresh(allowed)) => return allowed,
            Some(Cached::Stale(allowed)) => {
                inner.jobs.push(Job::Acl {
                    key,
                    username: username.to_string(),
                    client_id: client_id.to_vec(),
                    topic: topic.to_string(),
                    access,
                });
                return allowed;
            }
            None => {}
        }
        let Some(uri) = &inner.config.aclcheck_uri else {
            return false;
        };
        let allowed = match inner.ask_acl(uri, username, client_id, topic, access) {
            Answer::Allow => true,
            Answer::Refuse => false,
            Answer::Error(_) => return false,
        };
        inner.state().acl.put(key, allowed, Instant::now());
        if !allowed && log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "HTTP auth service refused {access:?} of '{}' to user '{}'",
                printable(topic),
                printable(username)
            );
        }
        allowed
    }

    /// A reload (SIGHUP): every answer kept is stale (served until asked again, in the
    /// background, at its next use), and the re-checks that follow are answered from the
    /// logins kept. Nothing is asked here.
    pub fn reload(&self) {
        let mut state = self.inner.state();
        state.acl.reload();
        state.logins.reload();
        state.superusers.reload();
        state.reloaded = Some(Instant::now());
    }

    /// The disconnections the answers asked again call for (logins and superusers the
    /// service no longer accepts), for the broker thread.
    pub fn take_kicks(&self) -> Vec<Action> {
        if !self.inner.kicks_waiting.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut self.inner.state().kicks)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.inner.jobs.close();
        if let Some(worker) = self.worker.take() {
            // At most one request in flight: bounded by `http_timeout`.
            let _ = worker.join();
        }
    }
}

impl UserSource for HttpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Http
    }

    fn lookup(&self, username: &str, password: &[u8], client_id: &[u8]) -> Result<Lookup, DbError> {
        // A password that is not UTF-8 cannot be sent as auth-plug sends it.
        let Ok(password) = std::str::from_utf8(password) else {
            return Ok(Lookup::Unknown);
        };
        let inner = &*self.inner;
        let now = Instant::now();
        let key = inner
            .keys
            .key(&[b"login", username.as_bytes(), password.as_bytes()]);
        if inner.rechecking(now) && inner.state().logins.get(&key, now).is_some() {
            // The broker re-checking its clients (SIGHUP): accepted as before, asked again
            // in the background (a refusal then disconnects the client).
            inner.jobs.push(Job::Login {
                key,
                username: username.to_string(),
                password: password.to_string(),
                client_id: client_id.to_vec(),
            });
            return Ok(Lookup::Accepted);
        }
        match inner.ask_login(username, password, client_id) {
            Answer::Allow => {
                inner.state().logins.put(key, true, Instant::now());
                Ok(Lookup::Accepted)
            }
            Answer::Refuse => {
                inner.state().logins.remove(&key);
                Ok(Lookup::Unknown)
            }
            Answer::Error(why) => Err(DbError::Service(why)),
        }
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, DbError>> {
        let inner = &*self.inner;
        let uri = inner.config.superuser_uri.as_ref()?;
        let now = Instant::now();
        let key = inner.keys.key(&[b"superuser", username.as_bytes()]);
        if inner.rechecking(now) {
            let kept = inner.state().superusers.get(&key, now);
            match kept {
                Some(Cached::Stale(is)) => {
                    inner.jobs.push(Job::Superuser {
                        key,
                        username: username.to_string(),
                    });
                    return Some(Ok(is));
                }
                Some(Cached::Fresh(is)) => return Some(Ok(is)),
                None => {}
            }
        }
        Some(match inner.ask_superuser(uri, username) {
            Answer::Allow => {
                inner.state().superusers.put(key, true, Instant::now());
                Ok(true)
            }
            Answer::Refuse => {
                inner.state().superusers.put(key, false, Instant::now());
                Ok(false)
            }
            Answer::Error(why) => Err(DbError::Service(why)),
        })
    }

    fn fetch_certificate_user(&self, _username: &str) -> Result<Option<UserRecord>, DbError> {
        // auth-plug's protocol has no question for a user without a password.
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_escape_every_value_and_keep_auth_plugs_order() {
        let extra = vec![("domain".to_string(), "a b&c".to_string())];
        let f = fields("al&ice=", "p@ss w/ord%", "a/+/#", 4, "id&x=1", &extra);
        let (kind, body) = body(ParamsMode::Form, &f);
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            body,
            "username=al%26ice%3D&password=p%40ss+w%2Ford%25&topic=a%2F%2B%2F%23&acc=4&\
             clientid=id%26x%3D1&domain=a+b%26c"
        );
    }

    #[test]
    fn json_bodies_are_objects_with_a_numeric_acc() {
        let f = fields("u\"", "p", "", -1, "c", &[]);
        let (kind, body) = body(ParamsMode::Json, &f);
        assert_eq!(kind, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["username"], "u\"");
        assert_eq!(v["acc"], -1);
        assert_eq!(v["clientid"], "c");
    }

    #[test]
    fn verdicts_by_mode() {
        use ResponseMode::*;
        assert_eq!(verdict(Status, 200, ""), Answer::Allow);
        assert_eq!(verdict(Status, 204, ""), Answer::Allow);
        assert_eq!(verdict(Status, 403, ""), Answer::Refuse);
        assert_eq!(verdict(Status, 302, ""), Answer::Refuse);
        assert!(matches!(verdict(Status, 503, ""), Answer::Error(_)));
        assert_eq!(verdict(Json, 200, r#"{"ok":true}"#), Answer::Allow);
        assert_eq!(
            verdict(Json, 200, r#"{"ok":false,"error":"x"}"#),
            Answer::Refuse
        );
        assert_eq!(verdict(Json, 200, "ok"), Answer::Refuse);
        assert_eq!(verdict(Json, 201, r#"{"ok":true}"#), Answer::Refuse);
        assert_eq!(verdict(Text, 200, "ok\n"), Answer::Allow);
        assert_eq!(verdict(Text, 200, "okay"), Answer::Refuse);
        assert!(matches!(verdict(Text, 500, "ok"), Answer::Error(_)));
    }

    #[test]
    fn pauses_double_up_to_thirty_seconds_and_end_on_success() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.pausing(t0), None);
        assert_eq!(b.failed(t0), Duration::from_secs(1));
        assert!(b.pausing(t0 + Duration::from_millis(999)).is_some());
        assert_eq!(b.pausing(t0 + Duration::from_secs(1)), None);
        let pauses: Vec<u64> = (0..7).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30]);
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert_eq!(b.failed(t0), Duration::from_secs(1));
    }

    #[test]
    fn pauses_are_per_user_and_bounded() {
        let t0 = Instant::now();
        let mut pauses = Pauses::new(3);
        assert_eq!(pauses.failed(1, t0), Duration::from_secs(1));
        assert!(pauses.pausing(1, t0).is_some());
        assert_eq!(
            pauses.pausing(2, t0),
            None,
            "another user is asked as usual"
        );
        assert_eq!(pauses.failed(1, t0), Duration::from_secs(2), "doubling");
        assert!(pauses.succeeded(1));
        assert_eq!(pauses.pausing(1, t0), None);
        assert!(!pauses.succeeded(1));
        assert_eq!(
            pauses.failed(1, t0),
            Duration::from_secs(1),
            "from 1 s again"
        );
        // Full: a pause that ended long ago goes first, then the one that ends soonest.
        pauses.failed(2, t0 + Duration::from_secs(25));
        pauses.failed(3, t0 + Duration::from_secs(26));
        let later = t0 + Duration::from_secs(40);
        pauses.failed(4, later);
        assert_eq!(pauses.len(), 3);
        assert_eq!(pauses.pausing(1, t0), None, "ended 39 s before: forgotten");
        pauses.failed(5, later);
        assert_eq!(pauses.len(), 3);
        assert_eq!(
            pauses.pausing(2, t0 + Duration::from_secs(25)),
            None,
            "ended soonest"
        );
        assert!(pauses.pausing(3, t0 + Duration::from_secs(26)).is_some());
        assert!(pauses.pausing(4, later).is_some() && pauses.pausing(5, later).is_some());
    }

    #[test]
    fn the_service_is_left_alone_only_when_unreachable_for_several_users() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        // One user's questions fail, again and again: nobody else is concerned.
        for _ in 0..10 {
            assert_eq!(breaker.unreachable(7, t0), None);
        }
        assert_eq!(breaker.unreachable(8, t0), None);
        // An answer between (a 5xx too) starts the count again.
        assert!(!breaker.answered());
        assert_eq!(breaker.unreachable(9, t0), None);
        assert_eq!(breaker.unreachable(10, t0), None);
        assert_eq!(breaker.pausing(t0), None);
        assert_eq!(breaker.unreachable(11, t0), Some(Duration::from_secs(1)));
        assert!(breaker.pausing(t0).is_some());
        // The first question after the pause fails too: the next pause at once, doubled.
        let after = t0 + Duration::from_secs(1);
        assert_eq!(breaker.pausing(after), None);
        assert_eq!(breaker.unreachable(12, after), Some(Duration::from_secs(2)));
        assert!(breaker.answered(), "it had been left alone");
        assert_eq!(breaker.unreachable(13, after), None);
    }

    #[test]
    fn answers_are_fixed_size_bounded_and_pushed_out_oldest_first() {
        let t0 = Instant::now();
        let keys = Keys::default();
        let key = |n: usize| keys.key(&[b"acl", n.to_string().as_bytes()]);
        // A 64 KiB topic costs what a short one does.
        assert_eq!(
            size_of_val(&keys.key(&[&[b't'; 65_536]])),
            size_of_val(&key(1))
        );
        assert_ne!(key(1), key(2));
        assert_ne!(keys.key(&[b"ab", b"c"]), keys.key(&[b"a", b"bc"]));
        let mut cache = AnswerCache::new(
            Some(Duration::from_secs(10)),
            3 * AnswerCache::ENTRY_BYTES,
            t0,
        );
        assert_eq!(cache.capacity(), 3);
        for n in 0..3 {
            cache.put(key(n), n % 2 == 0, t0);
        }
        assert_eq!(cache.get(&key(0), t0), Some(Cached::Fresh(true)));
        assert_eq!(cache.get(&key(1), t0), Some(Cached::Fresh(false)));
        // Full: the oldest goes, one at a time, never all.
        cache.put(key(3), true, t0 + Duration::from_secs(1));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&key(0), t0), None);
        assert!(cache.get(&key(1), t0).is_some());
        // Put again: it is the newest, so the next to go is key 2.
        cache.put(key(1), true, t0 + Duration::from_secs(2));
        cache.put(key(4), true, t0 + Duration::from_secs(2));
        assert_eq!(cache.get(&key(2), t0), None);
        assert_eq!(cache.get(&key(1), t0), Some(Cached::Fresh(true)));
        // Expired answers are not handed out, and go ahead of their turn.
        assert_eq!(cache.get(&key(3), t0 + Duration::from_secs(11)), None);
        cache.put(key(5), false, t0 + Duration::from_secs(11));
        assert_eq!(cache.len(), 3, "key 3 made room, not key 1 or 4");
        assert!(cache.get(&key(4), t0 + Duration::from_secs(11)).is_some());
        // Many puts of the same keys keep the bookkeeping bounded too.
        for n in 0..10_000 {
            cache.put(key(n % 5), true, t0 + Duration::from_secs(11));
        }
        assert!(cache.order.len() <= 2 * cache.capacity());
        let mut off = AnswerCache::new(Some(Duration::ZERO), 1 << 20, t0);
        off.put(key(1), true, t0);
        assert!(off.is_empty());
    }

    #[test]
    fn acl_answers_are_kept_per_client_user_topic_and_access() {
        let keys = Keys::default();
        let key = |client: &[u8], user: &str, topic: &str, access| {
            acl_key(&keys, client, user, topic, access)
        };
        let alice = key(b"c1", "alice", "t", Access::Read);
        assert_eq!(alice, key(b"c1", "alice", "t", Access::Read));
        for other in [
            key(b"c1", "alice", "t", Access::Write),
            key(b"c2", "alice", "t", Access::Read),
            // Another user taking the client id asks again.
            key(b"c1", "mallory", "t", Access::Read),
            key(b"c1", "alice", "t/x", Access::Read),
            key(b"c1a", "lice", "t", Access::Read),
        ] {
            assert_ne!(alice, other);
        }
    }

    #[test]
    fn a_reload_makes_answers_stale_once_and_keeps_them() {
        let t0 = Instant::now();
        let keys = Keys::default();
        let mut cache = AnswerCache::new(None, 1 << 20, t0);
        let (a, b) = (keys.key(&[b"a"]), keys.key(&[b"b"]));
        cache.put(a, true, t0);
        cache.put(b, false, t0);
        cache.reload();
        let later = t0 + Duration::from_secs(86_400 * 30);
        assert_eq!(
            cache.get(&a, later),
            Some(Cached::Stale(true)),
            "kept, never expires"
        );
        assert_eq!(
            cache.get(&a, later),
            Some(Cached::Fresh(true)),
            "asked again once per reload"
        );
        // The fresh answer replaces it.
        cache.put(b, true, later);
        assert_eq!(cache.get(&b, later), Some(Cached::Fresh(true)));
        cache.reload();
        assert_eq!(cache.get(&b, later), Some(Cached::Stale(true)));
    }
}
