//! Per-client state for the ACL checks: who each client is, and the rules of each user,
//! shared by all of that user's clients. Owned by the broker thread; the background
//! refresher only ever sees [`Job`]s and hands back [`Loaded`] results.
//!
//! Clients are keyed by client id (what a persistent session is keyed by in the broker)
//! and remember the broker's `struct mosquitto` pointer, so a stale connection whose id
//! was taken over is never judged under the newcomer's identity.

use crate::acl::{self, Access, ChatTopics, GroupIds, PatternSet, Patterns, Subject};
use crate::auth::Identity;
use crate::control::Reply;
use crate::db::DbError;
use crate::logging::printable;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How soon a failed refresh is tried again (or the refresh period, if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Offline persistent sessions kept for their queued deliveries; beyond this the oldest
/// are forgotten (their queued chat messages are then refused until they log in again).
pub const DEFAULT_OFFLINE_CAP: usize = 100_000;

/// The rules of one user, as loaded from MySQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The chat identity the groups were loaded for.
    pub user_id: String,
    pub groups: GroupIds,
    /// auth-plug ACL rows, not yet expanded (`%u`, `%c` differ per client).
    pub rows: Patterns,
}

/// A request to the background refresher.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub username: String,
    pub user_id: String,
    /// Set for a `$CONTROL` `refreshUser`: answered when the load is done.
    pub reply: Option<Reply>,
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
    next_due: Instant,
    in_flight: bool,
}

struct Session {
    pointer: usize,
    /// Shared with the user entry's key.
    username: Arc<str>,
    superuser: bool,
    online: bool,
    /// The user entry generation `patterns` were expanded from (0: not yet).
    generation: u32,
    /// This client's own expansion, only for users with `%c` rows (boxed: most clients
    /// have none, and every session pays for the field).
    patterns: Option<Box<PatternSet>>,
}

/// The publisher of a message, as far as the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author<'a> {
    User(&'a str),
    Superuser,
    /// No session for the client id: a bridge (the only kind of client whose PUBLISH passes
    /// without an ACL check, so without a session).
    NoSession,
    /// A session that does not match (stale connection) or has no rules.
    Unknown,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: usize,
    pub online: usize,
    pub offline: usize,
    /// Users whose rules are held (connected users, and recently disconnected ones until
    /// their rules are due).
    pub users: usize,
    pub refreshes: u64,
    pub refresh_failures: u64,
}

pub struct Registry {
    chat: Option<ChatTopics>,
    refresh: Duration,
    offline_cap: usize,
    sessions: HashMap<Box<[u8]>, Session>,
    users: HashMap<Arc<str>, UserEntry>,
    due: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// Offline sessions in the order they went offline (may hold stale entries).
    offline: VecDeque<(Box<[u8]>, usize)>,
    offline_count: usize,
    /// Wraps after 4 billion rule changes, skipping 0 (a client's "not yet expanded").
    next_generation: u32,
    refreshes: u64,
    refresh_failures: u64,
}

impl Registry {
    pub fn new(chat: Option<ChatTopics>, refresh: Duration, offline_cap: usize) -> Registry {
        Registry {
            chat,
            refresh,
            offline_cap,
            sessions: HashMap::new(),
            users: HashMap::new(),
            due: BinaryHeap::new(),
            offline: VecDeque::new(),
            offline_count: 0,
            next_generation: 1,
            refreshes: 0,
            refresh_failures: 0,
        }
    }

    /// Records an accepted login. The user's rules are reused when held (another client of
    /// the user, or a recent one); otherwise `load` is called, and its error refuses the
    /// login: a client whose rules are unknown could do nothing anyway.
    pub fn login(
        &mut self,
        client_id: &[u8],
        pointer: usize,
        identity: &Identity,
        now: Instant,
        load: impl FnOnce() -> Result<RuleSet, DbError>,
    ) -> Result<(), DbError> {
        if !identity.superuser {
            let held = self
                .users
                .get(identity.username.as_str())
                .is_some_and(|e| *e.rules.user_id == *identity.user_id);
            if !held {
                let rules = load()?;
                self.install(&identity.username, rules, now);
            }
        }
        // The same connection logging in again is the broker re-checking everyone at SIGHUP,
        // offline persistent sessions included: they stay offline.
        let online = self
            .sessions
            .get(client_id)
            .filter(|s| s.pointer == pointer)
            .is_none_or(|s| s.online);
        // Otherwise a reconnect or a take-over of the id.
        self.remove_session(client_id);
        if !online {
            self.offline_count += 1;
        }
        let username = match self.users.get_key_value(identity.username.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(identity.username.as_str()),
        };
        if !identity.superuser {
            if let Some(entry) = self.users.get_mut(&username) {
                entry.clients += 1;
            }
        }
        self.sessions.insert(
            client_id.into(),
            Session {
                pointer,
                username,
                superuser: identity.superuser,
                online,
                generation: 0,
                patterns: None,
            },
        );
        Ok(())
    }

    /// A client went away. A persistent session (`clean` false) stays, offline, so that
    /// messages queued for it are still judged by its rules.
    pub fn disconnect(&mut self, client_id: &[u8], pointer: usize, clean: bool) {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        if session.pointer != pointer || !session.online {
            return;
        }
        if clean {
            self.remove_session(client_id);
        } else {
            session.online = false;
            self.offline_count += 1;
            self.offline.push_back((client_id.into(), pointer));
            self.enforce_offline_cap();
        }
    }

    /// The ACL decision for one check; no I/O. A client the registry does not know (never
    /// logged in through this plugin, or forgotten) is refused.
    pub fn check(
        &mut self,
        client_id: &[u8],
        pointer: usize,
        access: Access,
        topic: &str,
        retain: bool,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return false;
        };
        if session.pointer != pointer {
            return false;
        }
        if session.superuser || access == Access::Unsubscribe {
            return true;
        }
        let Some(entry) = self.users.get(&session.username) else {
            return false;
        };
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
        acl::allowed(
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
        )
    }

    /// Who is publishing, for chat payload checks.
    pub fn author(&self, client_id: &[u8], pointer: usize) -> Author<'_> {
        match self.sessions.get(client_id) {
            Some(s) if s.pointer != pointer => Author::Unknown,
            Some(s) if s.superuser => Author::Superuser,
            Some(s) => self
                .users
                .get(&s.username)
                .map_or(Author::Unknown, |e| Author::User(&e.rules.user_id)),
            None => Author::NoSession,
        }
    }

    /// Whether this client logged in as a superuser (for `$CONTROL`).
    pub fn is_superuser(&self, client_id: &[u8], pointer: usize) -> bool {
        self.sessions
            .get(client_id)
            .is_some_and(|s| s.pointer == pointer && s.online && s.superuser)
    }

    /// Rules whose time has come: refresh jobs for users with clients; users without
    /// clients are forgotten.
    pub fn due_jobs(&mut self, now: Instant) -> Vec<Job> {
        let mut jobs = Vec::new();
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
            if !entry.in_flight {
                entry.in_flight = true;
                jobs.push(Job {
                    username: username.to_string(),
                    user_id: entry.rules.user_id.to_string(),
                    reply: None,
                });
            }
        }
        jobs
    }

    /// SIGHUP: reload the rules of every user with a client; forget the others.
    pub fn refresh_all(&mut self) -> Vec<Job> {
        self.users.retain(|_, entry| entry.clients > 0);
        self.users
            .iter_mut()
            .filter(|(_, entry)| !entry.in_flight)
            .map(|(username, entry)| {
                entry.in_flight = true;
                Job {
                    username: username.to_string(),
                    user_id: entry.rules.user_id.to_string(),
                    reply: None,
                }
            })
            .collect()
    }

    /// `refreshUser`: a job for the user, or `None` when no client of theirs is known.
    pub fn refresh_user(&mut self, username: &str, reply: Option<Reply>) -> Option<Job> {
        let entry = self.users.get_mut(username).filter(|e| e.clients > 0)?;
        entry.in_flight = true;
        Some(Job {
            username: username.to_string(),
            user_id: entry.rules.user_id.to_string(),
            reply,
        })
    }

    /// Applies a refresher result. A failure keeps the last known rules.
    pub fn apply(&mut self, loaded: Loaded, now: Instant) -> Applied {
        let Loaded { job, result } = loaded;
        let Some(entry) = self
            .users
            .get_mut(job.username.as_str())
            .filter(|e| *e.rules.user_id == *job.user_id)
        else {
            return Applied::Gone;
        };
        entry.in_flight = false;
        match result {
            Ok(rules) => {
                self.refreshes += 1;
                self.install(&job.username, rules, now);
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

    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len(),
            online: self.sessions.len() - self.offline_count,
            offline: self.offline_count,
            users: self.users.len(),
            refreshes: self.refreshes,
            refresh_failures: self.refresh_failures,
        }
    }

    fn install(&mut self, username: &str, rules: RuleSet, now: Instant) {
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
            }
            None => {
                self.users.insert(
                    key.clone(),
                    UserEntry {
                        rules,
                        per_client,
                        generation: take_generation(&mut self.next_generation),
                        clients: 0,
                        next_due,
                        in_flight: false,
                    },
                );
            }
        }
        self.due.push(Reverse((next_due, key)));
    }

    fn remove_session(&mut self, client_id: &[u8]) {
        let Some(session) = self.sessions.remove(client_id) else {
            return;
        };
        if !session.online {
            self.offline_count -= 1;
        }
        if let Some(entry) = self.users.get_mut(&session.username) {
            entry.clients = entry.clients.saturating_sub(1);
        }
    }

    fn enforce_offline_cap(&mut self) {
        let is_live = |sessions: &HashMap<Box<[u8]>, Session>, id: &[u8], pointer: usize| {
            sessions
                .get(id)
                .is_some_and(|s| !s.online && s.pointer == pointer)
        };
        while self.offline_count > self.offline_cap {
            let Some((id, pointer)) = self.offline.pop_front() else {
                break;
            };
            if is_live(&self.sessions, &id, pointer) {
                log::warn!(
                    "more than {} offline persistent sessions: forgetting the oldest ('{}'); \
                     messages queued for it are refused until it logs in again",
                    self.offline_cap,
                    printable(&String::from_utf8_lossy(&id))
                );
                self.remove_session(&id);
            }
        }
        // Reconnected sessions leave stale entries behind; drop them now and then.
        if self.offline.len() > 2 * self.offline_count + 1024 {
            let sessions = &self.sessions;
            self.offline
                .retain(|(id, pointer)| is_live(sessions, id, *pointer));
        }
    }
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

    const REFRESH: Duration = Duration::from_secs(60);

    fn registry() -> Registry {
        let chat = ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap();
        Registry::new(Some(chat), REFRESH, 3)
    }

    fn identity(username: &str, user_id: &str) -> Identity {
        Identity {
            username: username.into(),
            user_id: user_id.into(),
            superuser: false,
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

    #[test]
    fn login_loads_once_per_user_and_checks_are_per_client() {
        let mut reg = registry();
        let now = Instant::now();
        let alice = identity("alice", "1");
        reg.login(b"phone", 10, &alice, now, || Ok(rules("1", &["7"])))
            .unwrap();
        reg.login(b"laptop", 11, &alice, now, no_load).unwrap();
        assert_eq!(reg.stats().users, 1);
        assert!(reg.check(b"phone", 10, Access::Subscribe, "/users/1/messages", false));
        assert!(reg.check(b"laptop", 11, Access::Write, "/groups/7/messages", false));
        assert!(!reg.check(b"laptop", 11, Access::Read, "/users/2/messages", false));
        // A stale pointer (the connection whose id was taken over) gets nothing.
        assert!(!reg.check(b"phone", 99, Access::Read, "/users/1/messages", false));
        assert!(!reg.check(b"stranger", 12, Access::Read, "/users/1/messages", false));
    }

    #[test]
    fn a_failed_first_load_refuses_the_login() {
        let mut reg = registry();
        let result = reg.login(b"c", 1, &identity("bob", "2"), Instant::now(), || {
            Err(DbError::Unavailable("down".into()))
        });
        assert!(result.is_err());
        assert_eq!(reg.stats(), Stats::default());
    }

    #[test]
    fn clean_disconnect_empties_the_state_once_rules_are_due() {
        let mut reg = registry();
        let now = Instant::now();
        for i in 0..1000u32 {
            let user = format!("u{i}");
            reg.login(
                format!("c{i}").as_bytes(),
                i as usize,
                &identity(&user, &i.to_string()),
                now,
                || Ok(rules(&i.to_string(), &[])),
            )
            .unwrap();
        }
        assert_eq!(reg.stats().sessions, 1000);
        for i in 0..1000u32 {
            reg.disconnect(format!("c{i}").as_bytes(), i as usize, true);
        }
        assert_eq!(reg.stats().sessions, 0);
        assert_eq!(reg.stats().users, 1000, "kept for a quick reconnect");
        assert!(reg.due_jobs(now + REFRESH).is_empty());
        assert_eq!(reg.stats().users, 0);
        assert!(reg.due.is_empty());
    }

    #[test]
    fn persistent_sessions_stay_offline_with_their_rules() {
        let mut reg = registry();
        let now = Instant::now();
        let alice = identity("alice", "1");
        reg.login(b"alice-phone", 5, &alice, now, || Ok(rules("1", &[])))
            .unwrap();
        reg.disconnect(b"alice-phone", 5, false);
        assert_eq!(reg.stats().offline, 1);
        // Messages queued while offline are still judged by the rules.
        assert!(reg.check(b"alice-phone", 5, Access::Read, "/users/1/messages", false));
        // The rules keep being refreshed for it.
        assert_eq!(reg.due_jobs(now + REFRESH).len(), 1);
        // Reconnecting (new pointer) makes it online again.
        reg.login(b"alice-phone", 6, &alice, now, no_load).unwrap();
        assert_eq!(reg.stats().offline, 0);
        assert_eq!(reg.stats().online, 1);
    }

    #[test]
    fn sighup_recheck_of_an_offline_session_keeps_it_offline() {
        let mut reg = registry();
        let now = Instant::now();
        let alice = identity("alice", "1");
        reg.login(b"p", 5, &alice, now, || Ok(rules("1", &[])))
            .unwrap();
        reg.disconnect(b"p", 5, false);
        reg.login(b"p", 5, &alice, now, no_load).unwrap();
        assert_eq!(reg.stats().offline, 1);
        assert_eq!(reg.stats().online, 0);
        reg.login(b"p", 6, &alice, now, no_load).unwrap();
        assert_eq!(reg.stats().offline, 0);
        assert_eq!(reg.stats().online, 1);
    }

    #[test]
    fn offline_sessions_are_capped_oldest_first() {
        let mut reg = registry(); // cap 3
        let now = Instant::now();
        for i in 0..5usize {
            let id = format!("c{i}");
            reg.login(id.as_bytes(), i, &identity("u", "1"), now, || {
                Ok(rules("1", &[]))
            })
            .unwrap();
            reg.disconnect(id.as_bytes(), i, false);
        }
        assert_eq!(reg.stats().offline, 3);
        assert!(!reg.check(b"c0", 0, Access::Read, "/users/1/messages", false));
        assert!(reg.check(b"c4", 4, Access::Read, "/users/1/messages", false));
    }

    #[test]
    fn take_over_keeps_the_newcomer() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login(b"shared-id", 1, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        reg.login(b"shared-id", 2, &identity("bob", "2"), now, || {
            Ok(rules("2", &[]))
        })
        .unwrap();
        // The old connection's DISCONNECT arrives after the newcomer's login.
        reg.disconnect(b"shared-id", 1, true);
        assert!(reg.check(b"shared-id", 2, Access::Read, "/users/2/messages", false));
        assert!(!reg.check(b"shared-id", 1, Access::Read, "/users/1/messages", false));
        assert_eq!(reg.stats().sessions, 1);
    }

    #[test]
    fn refresh_swaps_rules_and_failure_keeps_them() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login(b"c", 1, &identity("alice", "1"), now, || {
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
        assert!(reg.check(b"c", 1, Access::Write, "/groups/7/messages", false));
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
        assert!(!reg.check(b"c", 1, Access::Write, "/groups/7/messages", false));
        assert!(reg.check(b"c", 1, Access::Write, "/groups/8/messages", false));
        assert_eq!(reg.stats().refresh_failures, 1);
    }

    #[test]
    fn patterns_are_expanded_per_client_and_follow_refreshes() {
        let mut reg = registry();
        let now = Instant::now();
        let mut loaded = rules("1", &[]);
        loaded.rows.write = vec!["devices/%c/out".into(), "users/%u/#".into()];
        reg.login(b"dev1", 1, &identity("alice", "1"), now, || {
            Ok(loaded.clone())
        })
        .unwrap();
        reg.login(b"dev2", 2, &identity("alice", "1"), now, no_load)
            .unwrap();
        assert!(reg.check(b"dev1", 1, Access::Write, "devices/dev1/out", false));
        assert!(!reg.check(b"dev1", 1, Access::Write, "devices/dev2/out", false));
        assert!(reg.check(b"dev2", 2, Access::Write, "devices/dev2/out", false));
        assert!(reg.check(b"dev2", 2, Access::Write, "users/alice/x", false));
        let job = reg.refresh_user("alice", None).unwrap();
        reg.apply(
            Loaded {
                job,
                result: Ok(rules("1", &[])),
            },
            now,
        );
        assert!(!reg.check(b"dev1", 1, Access::Write, "devices/dev1/out", false));
    }

    #[test]
    fn superusers_need_no_rules() {
        let mut reg = registry();
        let root = Identity {
            superuser: true,
            ..identity("root", "0")
        };
        reg.login(b"admin", 1, &root, Instant::now(), no_load)
            .unwrap();
        assert!(reg.check(b"admin", 1, Access::Subscribe, "#", false));
        assert!(reg.is_superuser(b"admin", 1));
        assert_eq!(reg.stats().users, 0);
    }

    #[test]
    fn reload_refreshes_connected_users_and_forgets_the_rest() {
        let mut reg = registry();
        let now = Instant::now();
        reg.login(b"a", 1, &identity("alice", "1"), now, || {
            Ok(rules("1", &[]))
        })
        .unwrap();
        reg.login(b"b", 2, &identity("bob", "2"), now, || Ok(rules("2", &[])))
            .unwrap();
        reg.disconnect(b"b", 2, true);
        let jobs = reg.refresh_all();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].username, "alice");
        assert_eq!(reg.stats().users, 1);
        assert!(reg.refresh_user("bob", None).is_none());
    }
}
