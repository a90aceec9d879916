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
use crate::backend::{BackendError, BackendKind, Lookup, UserRecord, UserSource};
use crate::logging::printable;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod cache;
mod jobs;
mod pauses;
mod protocol;
#[cfg(test)]
mod tests;

use cache::acl_key;
pub use cache::{AnswerCache, Cached};
use jobs::{Job, Jobs};
pub use pauses::{Backoff, Breaker, Key, Keys, Pauses};
pub use protocol::{Answer, FieldValue, acc, body, fields, verdict};

/// How the HTTP backend sends its fields (`http_params_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamsMode {
    /// `application/x-www-form-urlencoded`, as auth-plug sends them.
    Form,
    /// A JSON object, mosquitto-go-auth's default.
    Json,
}

/// How the HTTP backend reads an answer (`http_response_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// The status alone: 2xx allows (auth-plug).
    Status,
    /// 200 with `{"ok": true}` (go-auth).
    Json,
    /// 200 with the body `ok` (go-auth).
    Text,
}

/// The HTTP backend (auth-plug's `http_*` options, and go-auth's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http://ip:port` or `https://...`, no trailing slash.
    pub base_url: String,
    /// `http_hostname`: the `Host` header, when it is not the address connected to.
    pub host_header: Option<String>,
    pub getuser_uri: String,
    pub superuser_uri: Option<String>,
    pub aclcheck_uri: Option<String>,
    pub getuser_params: Vec<(String, String)>,
    pub superuser_params: Vec<(String, String)>,
    pub aclcheck_params: Vec<(String, String)>,
    pub timeout: Duration,
    pub params_mode: ParamsMode,
    pub response_mode: ResponseMode,
    pub verify_peer: bool,
    /// How long an ACL answer is used (`acl_cacheseconds`).
    pub acl_cache: Duration,
}

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

    fn lookup(
        &self,
        username: &str,
        password: &[u8],
        client_id: &[u8],
    ) -> Result<Lookup, BackendError> {
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
            Answer::Error(why) => Err(BackendError::Service(why)),
        }
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>> {
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
            Answer::Error(why) => Err(BackendError::Service(why)),
        })
    }

    fn fetch_certificate_user(&self, _username: &str) -> Result<Option<UserRecord>, BackendError> {
        // auth-plug's protocol has no question for a user without a password.
        Ok(None)
    }
}
