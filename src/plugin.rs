//! The plugin assembled from its parts: config, the MySQL pool, the authenticator. The FFI
//! edge owns one `Plugin` and forwards each broker event to it.

use crate::acl::{Access, ChatTopics, Patterns};
use crate::auth::{Authenticator, Decision, Refusal, UserRecord, UserSource};
use crate::chat::{self, Kind, Sender};
use crate::config::Config;
use crate::config::ValidationConfig;
use crate::control::{self, Command, Reply, Request};
use crate::db::{Db, DbError, value_bytes};
use crate::logging::printable;
use crate::query::{Param, Query};
use crate::refresh::{Refresher, RuleSource};
use crate::sessions::{Applied, Author, DEFAULT_OFFLINE_CAP, Registry, RuleSet};
use crate::store::{NewRecord, Store, StoreRefusal};
use crate::topic;
use mysql::{Row, Value};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows read per rules query at most (groups of a user, ACL rows of an access level).
const MAX_RULE_ROWS: usize = 10_000;

/// A client as the broker identifies it in a callback.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// `mosquitto_client_id`; `None` only for clients refused before they had one.
    pub id: Option<&'a [u8]>,
    /// The broker's `struct mosquitto *`, as an address: tells connections apart when a
    /// client id is taken over.
    pub pointer: usize,
}

/// A broker call to make from the main thread (at TICK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Publish {
        client_id: String,
        topic: String,
        payload: Vec<u8>,
    },
    KickUser(String),
}

pub struct Plugin {
    auth: Authenticator<MysqlUsers>,
    rules: Arc<MysqlRules>,
    chat: Option<ChatTopics>,
    validation: Option<ValidationConfig>,
    /// Touched only by broker callbacks (one thread), so the lock is never contended.
    state: Mutex<State>,
}

struct State {
    registry: Registry,
    refresher: Refresher,
    outbox: Vec<Action>,
    /// Chat message storage, when `persist_enabled`.
    store: Option<Store>,
    last_stats_log: Instant,
    last_stats: (u64, u64),
}

/// What to do with a PUBLISH (MOSQ_EVT_MESSAGE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Not a chat topic (or validation off): untouched.
    Pass,
    /// Accepted; deliver this payload (stamped) instead.
    Replace(Vec<u8>),
    /// Refused: not delivered, not stored.
    Deny,
}

/// How often the storage figures are logged (when they changed).
const STATS_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Plugin {
    /// Validates the options and starts the background parts. An `Err` names the option and
    /// stops the broker; an unreachable database does not.
    pub fn start<K: AsRef<str>, V: AsRef<str>>(options: &[(K, V)]) -> Result<Plugin, String> {
        let (config, warnings) = Config::parse(options).map_err(|e| e.to_string())?;
        log::set_max_level(config.log_level);
        for warning in &warnings {
            log::warn!("{warning}");
        }
        let mut checks = vec![("userquery", config.userquery.sql.clone())];
        for (name, query) in [
            ("superquery", &config.superquery),
            ("groupsquery", &config.acl.groupsquery),
            ("aclquery", &config.acl.aclquery),
        ] {
            if let Some(q) = query {
                checks.push((name, q.sql.clone()));
            }
        }
        let db = Arc::new(Db::start(&config.db, checks)?);
        let users = MysqlUsers {
            db: Arc::clone(&db),
            userquery: config.userquery,
            superquery: config.superquery,
        };
        let acl = config.acl;
        let rules = Arc::new(MysqlRules {
            db,
            groupsquery: acl.groupsquery,
            aclquery: acl.aclquery,
            subscribe_level: acl.subscribe_level,
        });
        let refresher = Refresher::start(rules.clone())?;
        let store = config
            .persist
            .as_ref()
            .map(|persist| Store::start(persist, Arc::clone(&rules.db)))
            .transpose()?;
        log::info!(
            "started: MySQL {}, credential cache {} s, chat topics {}, ACL rows {}, rules \
             refreshed every {} s",
            match &config.db.socket {
                Some(socket) => format!("socket {}", socket.display()),
                None => format!("{}:{}", config.db.host, config.db.port),
            },
            config.auth_cache.as_secs(),
            if acl.chat.is_some() { "on" } else { "off" },
            if rules.aclquery.is_some() {
                "from aclquery"
            } else {
                "off"
            },
            acl.refresh.as_secs(),
        );
        if let Some(persist) = &config.persist {
            log::info!(
                "chat messages are stored in {} (batches of up to {} rows every {} ms; spool {}, \
                 at most {} MB{})",
                persist.table,
                persist.batch_rows,
                persist.flush.as_millis(),
                persist.spool_dir.display(),
                persist.spool_max_bytes / (1024 * 1024),
                if persist.fsync {
                    ", fsync per message"
                } else {
                    ""
                }
            );
        }
        Ok(Plugin {
            auth: Authenticator::new(users, config.hash, config.superusers, config.auth_cache),
            rules,
            chat: acl.chat.clone(),
            validation: config.validation,
            state: Mutex::new(State {
                registry: Registry::new(acl.chat, acl.refresh, DEFAULT_OFFLINE_CAP),
                refresher,
                outbox: Vec::new(),
                store,
                last_stats_log: Instant::now(),
                last_stats: (0, 0),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere never leaves the registry half-updated in a way that could
        // allow more than before, so the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One CONNECT: the password, then the client's rules (loaded now unless held already).
    pub fn basic_auth(
        &self,
        client: Client<'_>,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
    ) -> Decision {
        let decision = self.auth.login(username, password, Instant::now());
        let Decision::Allow(identity) = &decision else {
            return decision;
        };
        let Some(client_id) = client.id else {
            log::warn!(
                "login refused for user '{}': the broker gave no client id",
                printable(&identity.username)
            );
            return Decision::Refuse(Refusal::NoClientId);
        };
        let loaded = self.state().registry.login(
            client_id,
            client.pointer,
            identity,
            Instant::now(),
            || {
                let started = Instant::now();
                let rules = self.rules.load(&identity.username, &identity.user_id);
                self.auth
                    .times
                    .add(RULES_LABEL, Duration::ZERO, started.elapsed());
                rules
            },
        );
        match loaded {
            Ok(()) => decision,
            Err(e) => {
                log::warn!(
                    "login refused for user '{}': cannot load their groups and ACL rows ({e})",
                    printable(&identity.username)
                );
                Decision::Refuse(Refusal::Database(e))
            }
        }
    }

    /// An ACL check; in memory only. Anything unknown is refused.
    pub fn acl_check(
        &self,
        client: Client<'_>,
        access: Access,
        topic: &[u8],
        retain: bool,
    ) -> bool {
        let (Some(client_id), Ok(topic)) = (client.id, std::str::from_utf8(topic)) else {
            return false;
        };
        let allowed = self
            .state()
            .registry
            .check(client_id, client.pointer, access, topic, retain);
        if !allowed && log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "{access:?} of '{}' refused for client '{}'",
                printable(topic),
                printable(&String::from_utf8_lossy(client_id))
            );
        }
        allowed
    }

    /// A PUBLISH after its WRITE check: chat payloads are validated, stamped and spooled
    /// here; nothing waits on MySQL.
    pub fn message(
        &self,
        client: Client<'_>,
        topic: &[u8],
        payload: &[u8],
        qos: u8,
    ) -> MessageVerdict {
        let (Some(chat), Some(validation)) = (&self.chat, &self.validation) else {
            return MessageVerdict::Pass;
        };
        let Ok(topic) = std::str::from_utf8(topic) else {
            return MessageVerdict::Pass;
        };
        let (kind, topic_id) = if let Some(id) = chat.inbox.id_of(topic) {
            (Kind::Chat, id)
        } else if let Some(id) = chat.group.id_of(topic) {
            (Kind::GroupChat, id)
        } else {
            return MessageVerdict::Pass;
        };
        let client_id = client.id.unwrap_or_default();
        let client_name = String::from_utf8_lossy(client_id);
        let mut state = self.state();
        let sender = match state.registry.author(client_id, client.pointer) {
            Author::User(user_id) => Sender::User(user_id),
            Author::Superuser | Author::NoSession => Sender::Trusted,
            Author::Unknown => {
                log::debug!(
                    "chat message from client '{}' refused: no rules known for it",
                    printable(&client_name)
                );
                return MessageVerdict::Deny;
            }
        };
        let stamped = match chat::accept(
            kind,
            topic_id,
            payload,
            sender,
            validation.max_content_bytes,
            now_ms(),
            chat::new_message_id,
        ) {
            Ok(stamped) => stamped,
            Err(why) => {
                if log::log_enabled!(log::Level::Debug) {
                    log::debug!(
                        "chat message from client '{}' on '{}' refused: {why}",
                        printable(&client_name),
                        printable(topic)
                    );
                }
                return MessageVerdict::Deny;
            }
        };
        if let Some(store) = &mut state.store {
            let record = NewRecord {
                message_id: &stamped.message_id,
                kind: stamped.kind.name(),
                from_id: &stamped.from_id,
                to_id: &stamped.to_id,
                content: &stamped.content,
                topic,
                qos,
                client_id: truncate(&client_name, 256),
                server_ts: stamped.server_ts,
            };
            match store.put(&record) {
                Ok(()) => {}
                Err(StoreRefusal::SpoolFull) => return MessageVerdict::Deny,
                Err(StoreRefusal::Io(e)) => {
                    log::error!("cannot write the chat spool ({e}); chat message refused");
                    return MessageVerdict::Deny;
                }
            }
        }
        MessageVerdict::Replace(stamped.payload)
    }

    pub fn disconnect(&self, client: Client<'_>, clean_session: bool) {
        if let Some(client_id) = client.id {
            self.state()
                .registry
                .disconnect(client_id, client.pointer, clean_session);
        }
    }

    /// SIGHUP: every connected user's rules are reloaded in the background.
    pub fn reload(&self) {
        let mut state = self.state();
        let jobs = state.registry.refresh_all();
        log::info!("reload: refreshing the rules of {} users", jobs.len());
        for job in jobs {
            state.refresher.submit(job);
        }
    }

    /// A message on `$CONTROL/chat-auth/v1`. Answers go out at the next TICK.
    pub fn control(&self, client: Client<'_>, payload: &[u8]) {
        let Some(client_id) = client.id else {
            return;
        };
        let client_name = String::from_utf8_lossy(client_id).into_owned();
        let mut state = self.state();
        let State {
            registry,
            refresher,
            outbox,
            store,
            ..
        } = &mut *state;
        let answer = |outbox: &mut Vec<Action>, reply: &Reply, outcome| {
            outbox.push(Action::Publish {
                client_id: reply.client_id.clone(),
                topic: control::RESPONSE_TOPIC.into(),
                payload: control::response(reply, outcome),
            });
        };
        if !registry.is_superuser(client_id, client.pointer) {
            log::warn!(
                "control command from client '{}' refused: not a superuser",
                printable(&client_name)
            );
            let reply = Reply {
                client_id: client_name,
                command: String::new(),
                correlation: None,
            };
            answer(outbox, &reply, Err("not authorised".into()));
            return;
        }
        let requests = match control::parse(payload, &client_name) {
            Ok(requests) => requests,
            Err(e) => {
                let reply = Reply {
                    client_id: client_name,
                    command: String::new(),
                    correlation: None,
                };
                answer(outbox, &reply, Err(e));
                return;
            }
        };
        for Request { command, reply } in requests {
            match command {
                Err(e) => answer(outbox, &reply, Err(e)),
                Ok(Command::RefreshUser { username }) => {
                    log::info!("control: refreshUser '{}'", printable(&username));
                    match registry.refresh_user(&username, Some(reply.clone())) {
                        Some(job) => refresher.submit(job),
                        None => answer(outbox, &reply, Ok(Some(json!({ "clients": 0 })))),
                    }
                }
                Ok(Command::KickUser { username }) => {
                    log::info!("control: kickUser '{}'", printable(&username));
                    outbox.push(Action::KickUser(username));
                    answer(outbox, &reply, Ok(None));
                }
                Ok(Command::GetStats) => {
                    let stats = registry.stats();
                    let data = json!({
                        "sessions": stats.sessions,
                        "onlineSessions": stats.online,
                        "offlineSessions": stats.offline,
                        "usersWithRules": stats.users,
                        "refreshes": stats.refreshes,
                        "refreshFailures": stats.refresh_failures,
                        "cachedLogins": self.auth.cached_logins(),
                        "loginTimes": login_times(&self.auth.times),
                        "databaseDown": self.rules.db.is_down(),
                    });
                    let mut data = data;
                    if let Some(store) = store {
                        data["storage"] = storage_stats(store);
                    }
                    answer(outbox, &reply, Ok(Some(data)));
                }
            }
        }
    }

    /// The main loop's tick: applies refreshed rules, starts due refreshes, and hands back
    /// the broker calls to make.
    pub fn tick(&self) -> Vec<Action> {
        let now = Instant::now();
        let mut state = self.state();
        let State {
            registry,
            refresher,
            outbox,
            store,
            last_stats_log,
            last_stats,
        } = &mut *state;
        for loaded in refresher.ready() {
            let reply = loaded.job.reply.clone();
            let applied = registry.apply(loaded, now);
            if let Some(reply) = reply {
                let outcome = match applied {
                    Applied::Refreshed { clients } => Ok(Some(json!({ "clients": clients }))),
                    Applied::Gone => Ok(Some(json!({ "clients": 0 }))),
                    Applied::Failed(e) => Err(e),
                };
                outbox.push(Action::Publish {
                    client_id: reply.client_id.clone(),
                    topic: control::RESPONSE_TOPIC.into(),
                    payload: control::response(&reply, outcome),
                });
            }
        }
        for job in registry.due_jobs(now) {
            refresher.submit(job);
        }
        if let Some(store) = store {
            if now.duration_since(*last_stats_log) >= STATS_LOG_INTERVAL {
                let counters = &store.counters;
                let figures = (
                    counters.rows_written.load(Ordering::Relaxed),
                    counters.failed_attempts.load(Ordering::Relaxed),
                );
                let queued = store.usage().pending_records.load(Ordering::Relaxed);
                if figures != *last_stats || queued > 0 {
                    log::info!("chat storage: {}", storage_stats(store));
                }
                *last_stats = figures;
                *last_stats_log = now;
            }
        }
        std::mem::take(outbox)
    }
}

/// The `loginTimes` entry that counts loading a user's groups and ACL rows at login.
const RULES_LABEL: &str = "rules";

/// `{"<format>": {"logins", "hashMicros", "databaseMicros"}, "rules": {...}}`.
fn login_times(times: &crate::auth::LoginTimes) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (label, time) in times.snapshot() {
        out.insert(
            label,
            json!({
                "logins": time.logins,
                "hashMicros": time.hash.as_micros() as u64,
                "databaseMicros": time.database.as_micros() as u64,
            }),
        );
    }
    serde_json::Value::Object(out)
}

fn storage_stats(store: &Store) -> serde_json::Value {
    let usage = store.usage();
    let counters = &store.counters;
    json!({
        "queuedMessages": usage.pending_records.load(Ordering::Relaxed),
        "spoolBytes": usage.pending_bytes.load(Ordering::Relaxed),
        "spoolFull": store.is_full(),
        "rowsWritten": counters.rows_written.load(Ordering::Relaxed),
        "batches": counters.batches.load(Ordering::Relaxed),
        "failedAttempts": counters.failed_attempts.load(Ordering::Relaxed),
        "rejectedRows": counters.rejected_rows.load(Ordering::Relaxed),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Groups and ACL rows read with `groupsquery` and `aclquery`.
pub struct MysqlRules {
    db: Arc<Db>,
    groupsquery: Option<Query>,
    aclquery: Option<Query>,
    subscribe_level: u8,
}

impl MysqlRules {
    fn texts(&self, query: &Query, values: Vec<Value>) -> Result<Vec<String>, DbError> {
        Ok(self
            .db
            .rows(query, values, MAX_RULE_ROWS)?
            .iter()
            .filter_map(|row| row.as_ref(0).and_then(value_bytes))
            .filter_map(|bytes| String::from_utf8(bytes).ok())
            .collect())
    }

    fn acl_rows(&self, query: &Query, username: &str, level: u8) -> Result<Vec<String>, DbError> {
        let values = query
            .params
            .iter()
            .map(|p| match p {
                Param::Access => Value::from(level),
                _ => Value::from(username),
            })
            .collect();
        let mut rows = self.texts(query, values)?;
        rows.retain(|pattern| {
            let valid = topic::is_valid_filter(pattern);
            if !valid {
                log::warn!(
                    "ACL row '{}' of user '{}' is not a valid topic pattern; ignored",
                    printable(pattern),
                    printable(username)
                );
            }
            valid
        });
        Ok(rows)
    }
}

impl RuleSource for MysqlRules {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, DbError> {
        let groups = match &self.groupsquery {
            Some(query) => self
                .texts(query, vec![Value::from(user_id); query.params.len()])?
                .into_iter()
                .collect(),
            None => Default::default(),
        };
        let rows = match &self.aclquery {
            None => Patterns::default(),
            Some(query) if !query.params.contains(&Param::Access) => {
                let all = self.acl_rows(query, username, 0)?;
                Patterns {
                    read: all.clone(),
                    write: all.clone(),
                    subscribe: all,
                }
            }
            Some(query) => {
                let read = self.acl_rows(query, username, 1)?;
                let write = self.acl_rows(query, username, 2)?;
                let subscribe = if self.subscribe_level == 1 {
                    read.clone()
                } else {
                    self.acl_rows(query, username, self.subscribe_level)?
                };
                Patterns {
                    read,
                    write,
                    subscribe,
                }
            }
        };
        Ok(RuleSet {
            user_id: user_id.to_string(),
            groups,
            rows,
        })
    }
}

/// Users read with the configured `userquery` / `superquery`.
pub struct MysqlUsers {
    db: Arc<Db>,
    userquery: Query,
    superquery: Option<Query>,
}

/// Values for a user query's placeholders: `query::USER_BINDINGS` lets every one of them
/// be only the username.
fn bind(query: &Query, username: &str) -> Vec<Value> {
    debug_assert!(query.params.iter().all(|p| *p == Param::Username));
    vec![Value::from(username); query.params.len()]
}

fn column<'r>(row: &'r Row, name: &str) -> Option<&'r Value> {
    let index = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str().eq_ignore_ascii_case(name))?;
    row.as_ref(index)
}

fn truthy(value: Option<&Value>) -> bool {
    let Some(bytes) = value.and_then(value_bytes) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_ascii_lowercase();
    match text.parse::<f64>() {
        Ok(n) => n != 0.0,
        Err(_) => matches!(text.as_str(), "true" | "t" | "yes" | "y" | "on"),
    }
}

impl UserSource for MysqlUsers {
    fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, DbError> {
        let Some(row) = self
            .db
            .first_row(&self.userquery, bind(&self.userquery, username))?
        else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            hash: row.as_ref(0).and_then(value_bytes),
            salt: column(&row, "salt").and_then(value_bytes),
            user_id: column(&row, "user_id")
                .and_then(value_bytes)
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            is_superuser: truthy(column(&row, "is_superuser")),
        }))
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, DbError>> {
        let query = self.superquery.as_ref()?;
        Some(
            self.db
                .first_row(query, bind(query, username))
                .map(|row| row.is_some_and(|row| truthy(row.as_ref(0)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_of_superuser_columns() {
        for yes in [
            Value::Int(1),
            Value::Int(-3),
            Value::from("TRUE"),
            Value::from("y"),
        ] {
            assert!(truthy(Some(&yes)), "{yes:?}");
        }
        for no in [
            Value::NULL,
            Value::Int(0),
            Value::from("0"),
            Value::from("no"),
            Value::from(""),
        ] {
            assert!(!truthy(Some(&no)), "{no:?}");
        }
        assert!(!truthy(None));
    }
}
