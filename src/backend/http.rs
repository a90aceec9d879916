//! auth-plug's HTTP backend (and mosquitto-go-auth's): a POST per question to the operator's
//! service. A 2xx answer allows, 5xx or a transport error is an error (refused, asked again
//! next time), anything else refuses. `acc` is as auth-plug sends it: -1 for logins and
//! superuser checks, 1 read, 2 write, 4 subscribe.
//!
//! Logins and ACL checks ask on the broker thread (Mosquitto 2.0 cannot wait for a plugin),
//! so every request is bounded by `http_timeout`, ACL answers are cached per client, topic and
//! access, and after an error the service is not asked again for a growing pause (1 s
//! doubling to 30 s): a dead or hanging service costs the broker one timeout per pause.

use crate::acl::Access;
use crate::auth::{BackendKind, Lookup, UserRecord, UserSource};
use crate::config::{HttpConfig, ParamsMode, ResponseMode};
use crate::db::DbError;
use crate::logging::printable;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most ACL answers kept; beyond it, expired ones are dropped, then all.
const ACL_CACHE_ENTRIES: usize = 100_000;
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
#[derive(Debug)]
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

    /// Whether the service had been failing.
    pub fn succeeded(&mut self) -> bool {
        let was_failing = self.until.is_some();
        self.until = None;
        self.next = FIRST_PAUSE;
        was_failing
    }
}

type AclKey = (Box<[u8]>, Box<str>, Box<str>, u8);

/// ACL answers per client (id and username: a client id is the client's choice, and another
/// user may take it), topic and access, for `ttl`, at most `capacity` of them.
pub struct AclCache {
    ttl: Duration,
    capacity: usize,
    answers: HashMap<AclKey, (bool, Instant)>,
}

impl AclCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        AclCache {
            ttl,
            capacity,
            answers: HashMap::new(),
        }
    }

    pub fn get(
        &self,
        client_id: &[u8],
        username: &str,
        topic: &str,
        acc: u8,
        now: Instant,
    ) -> Option<bool> {
        // The key is built only to look it up; the hit path of a delivery storm.
        let key: AclKey = (client_id.into(), username.into(), topic.into(), acc);
        self.answers
            .get(&key)
            .filter(|(_, expires)| now < *expires)
            .map(|(allowed, _)| *allowed)
    }

    pub fn put(
        &mut self,
        (client_id, username): (&[u8], &str),
        topic: &str,
        acc: u8,
        allowed: bool,
        now: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        if self.answers.len() >= self.capacity {
            self.answers.retain(|_, (_, expires)| now < *expires);
            if self.answers.len() >= self.capacity {
                self.answers.clear();
            }
        }
        self.answers.insert(
            (client_id.into(), username.into(), topic.into(), acc),
            (allowed, now + self.ttl),
        );
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn clear(&mut self) {
        self.answers.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

struct Pauses {
    backoff: Backoff,
    acl: AclCache,
}

/// The HTTP backend: one kept-alive agent, the ACL cache and the back-off.
pub struct HttpBackend {
    agent: ureq::Agent,
    config: HttpConfig,
    state: Mutex<Pauses>,
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
        let acl = AclCache::new(config.acl_cache, ACL_CACHE_ENTRIES);
        HttpBackend {
            agent,
            config,
            state: Mutex::new(Pauses {
                backoff: Backoff::default(),
                acl,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Pauses> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One POST, unless the service is in a pause after an error.
    fn ask(&self, uri: &str, fields: &[(&str, FieldValue<'_>)]) -> Answer {
        let now = Instant::now();
        if let Some(left) = self.state().backoff.pausing(now) {
            return Answer::Error(format!(
                "the HTTP service failed just before; asked again in {} ms",
                left.as_millis()
            ));
        }
        let (content_type, body) = body(self.config.params_mode, fields);
        let url = format!("{}{}", self.config.base_url, uri);
        let mut request = self.agent.post(&url).header("Content-Type", content_type);
        if let Some(host) = &self.config.host_header {
            request = request.header("Host", host);
        }
        let answer = match request.send(body.as_bytes()) {
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
                verdict(self.config.response_mode, status, &text)
            }
            Err(e) => Answer::Error(format!("{url}: {e}")),
        };
        let mut state = self.state();
        match &answer {
            Answer::Error(why) => {
                let pause = state.backoff.failed(Instant::now());
                log::warn!(
                    "HTTP auth service: {why}; not asked again for {} s",
                    pause.as_secs()
                );
            }
            _ => {
                if state.backoff.succeeded() {
                    log::info!("HTTP auth service answers again");
                }
            }
        }
        answer
    }

    /// An ACL check of a user this backend logged in: from the cache, or asked now (bounded
    /// by `http_timeout`). Errors refuse and are not cached.
    pub fn acl(&self, username: &str, client_id: &[u8], topic: &str, access: Access) -> bool {
        let acc = acc(access);
        let now = Instant::now();
        if let Some(allowed) = self
            .state()
            .acl
            .get(client_id, username, topic, acc as u8, now)
        {
            return allowed;
        }
        let Some(uri) = &self.config.aclcheck_uri else {
            return false;
        };
        let client = String::from_utf8_lossy(client_id);
        let answer = self.ask(
            uri,
            &fields(
                username,
                "",
                topic,
                acc,
                &client,
                &self.config.aclcheck_params,
            ),
        );
        let allowed = match answer {
            Answer::Allow => true,
            Answer::Refuse => false,
            Answer::Error(_) => return false,
        };
        self.state().acl.put(
            (client_id, username),
            topic,
            acc as u8,
            allowed,
            Instant::now(),
        );
        if !allowed && log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "HTTP auth service refused {access:?} of '{}' to user '{}'",
                printable(topic),
                printable(username)
            );
        }
        allowed
    }

    /// Drops every cached ACL answer (a reload).
    pub fn forget_answers(&self) {
        self.state().acl.clear();
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
        let client = String::from_utf8_lossy(client_id);
        match self.ask(
            &self.config.getuser_uri,
            &fields(
                username,
                password,
                "",
                -1,
                &client,
                &self.config.getuser_params,
            ),
        ) {
            Answer::Allow => Ok(Lookup::Accepted),
            Answer::Refuse => Ok(Lookup::Unknown),
            Answer::Error(why) => Err(DbError::Service(why)),
        }
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, DbError>> {
        let uri = self.config.superuser_uri.as_ref()?;
        Some(
            match self.ask(
                uri,
                &fields(username, "", "", -1, "", &self.config.superuser_params),
            ) {
                Answer::Allow => Ok(true),
                Answer::Refuse => Ok(false),
                Answer::Error(why) => Err(DbError::Service(why)),
            },
        )
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
    fn acl_answers_are_kept_per_client_user_topic_and_access_until_they_expire() {
        let t0 = Instant::now();
        let mut cache = AclCache::new(Duration::from_secs(10), 3);
        cache.put((b"c1", "alice"), "t", 1, true, t0);
        assert_eq!(cache.get(b"c1", "alice", "t", 1, t0), Some(true));
        assert_eq!(cache.get(b"c1", "alice", "t", 2, t0), None);
        assert_eq!(cache.get(b"c2", "alice", "t", 1, t0), None);
        assert_eq!(
            cache.get(b"c1", "mallory", "t", 1, t0),
            None,
            "another user taking the client id asks again"
        );
        assert_eq!(cache.get(b"c1", "alice", "t/x", 1, t0), None);
        assert_eq!(
            cache.get(b"c1", "alice", "t", 1, t0 + Duration::from_secs(10)),
            None
        );
        cache.put((b"c1", "alice"), "u", 1, false, t0);
        cache.put((b"c1", "alice"), "v", 1, false, t0);
        // Full: expired answers go first, then everything.
        cache.put((b"c1", "alice"), "w", 1, true, t0 + Duration::from_secs(11));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(b"c1", "alice", "u", 1, t0), None);
        let mut off = AclCache::new(Duration::ZERO, 3);
        off.put((b"c1", "alice"), "t", 1, true, t0);
        assert!(off.is_empty());
    }
}
