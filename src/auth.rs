//! The login decision: who the user is, whether the password matches, whether they are a
//! superuser, and a short-lived credential cache that spares MySQL on reconnect storms.

use crate::db::DbError;
use crate::hash::{self, HashError, HashSettings};
use crate::logging::printable;
use hmac::{KeyInit, Mac};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the `userquery` row says about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// First column: the stored password hash. `None` when NULL.
    pub hash: Option<Vec<u8>>,
    /// The `salt` column, for salted hex digests.
    pub salt: Option<Vec<u8>>,
    /// The `user_id` column: the chat identity.
    pub user_id: Option<String>,
    /// The `is_superuser` column, read as truthy.
    pub is_superuser: bool,
}

/// Where user rows come from: MySQL in the plugin (see `plugin::MysqlUsers`).
pub trait UserSource {
    fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, DbError>;
    /// `None` when no `superquery` is configured.
    fn superquery(&self, username: &str) -> Option<Result<bool, DbError>>;
}

/// Who an accepted client is, for the ACL and chat rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub user_id: String,
    pub superuser: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoPassword,
    UnknownUser,
    NoStoredHash,
    WrongPassword,
    UnusableHash(HashError),
    Database(DbError),
    /// The broker passed no client id (never seen; refused rather than guessed).
    NoClientId,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoPassword => f.write_str("no password given"),
            Refusal::UnknownUser => f.write_str("no such user"),
            Refusal::NoStoredHash => f.write_str("the user has no stored password"),
            Refusal::WrongPassword => f.write_str("wrong password"),
            Refusal::UnusableHash(e) => write!(f, "{e}"),
            Refusal::Database(e) => write!(f, "{e}"),
            Refusal::NoClientId => f.write_str("no client id"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Identity),
    Refuse(Refusal),
    /// No username: the broker's `allow_anonymous` decides.
    Defer,
}

pub struct Authenticator<S> {
    source: S,
    hash: HashSettings,
    superusers: Option<glob::Pattern>,
    cache: Option<CredentialCache>,
    /// Time spent on logins the cache did not answer.
    pub times: LoginTimes,
}

impl<S: UserSource> Authenticator<S> {
    pub fn new(
        source: S,
        hash: HashSettings,
        superusers: Option<glob::Pattern>,
        cache_ttl: Duration,
    ) -> Self {
        let cache = (!cache_ttl.is_zero()).then(|| CredentialCache::new(cache_ttl));
        Authenticator {
            source,
            hash,
            superusers,
            cache,
            times: LoginTimes::default(),
        }
    }

    /// Decides one CONNECT. `username` and `password` are as the broker passed them (NULL
    /// becomes `None`); nothing here can let a client in because something failed.
    pub fn login(
        &self,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
        now: Instant,
    ) -> Decision {
        let Some(username) = username else {
            return Decision::Defer;
        };
        // The broker refuses non-UTF-8 usernames itself; be safe if that ever changes.
        let Ok(username) = std::str::from_utf8(username) else {
            log::info!("login refused: username is not UTF-8");
            return Decision::Refuse(Refusal::UnknownUser);
        };
        let decision = self.decide(username, password, now);
        match &decision {
            Decision::Allow(identity) => log::debug!(
                "login accepted for user '{}' (user id '{}'{})",
                printable(username),
                printable(&identity.user_id),
                if identity.superuser {
                    ", superuser"
                } else {
                    ""
                }
            ),
            Decision::Refuse(why @ Refusal::UnusableHash(_)) => {
                log::warn!("login refused for user '{}': {why}", printable(username))
            }
            Decision::Refuse(why) => {
                log::info!("login refused for user '{}': {why}", printable(username))
            }
            Decision::Defer => {}
        }
        decision
    }

    fn decide(&self, username: &str, password: Option<&[u8]>, now: Instant) -> Decision {
        let Some(password) = password else {
            return Decision::Refuse(Refusal::NoPassword);
        };
        if let Some(identity) = self
            .cache
            .as_ref()
            .and_then(|c| c.get(username, password, now))
        {
            return Decision::Allow(identity);
        }
        let started = Instant::now();
        let record = match self.source.fetch_user(username) {
            Ok(Some(record)) => record,
            Ok(None) => return Decision::Refuse(Refusal::UnknownUser),
            Err(e) => return Decision::Refuse(Refusal::Database(e)),
        };
        let fetched = Instant::now();
        let Some(stored) = record.hash.as_deref().filter(|h| !h.is_empty()) else {
            return Decision::Refuse(Refusal::NoStoredHash);
        };
        let verified = hash::verify(stored, record.salt.as_deref(), password, &self.hash);
        self.times.add(
            &format_label(stored, &self.hash),
            fetched.elapsed(),
            fetched - started,
        );
        match verified {
            Ok(true) => {}
            Ok(false) => return Decision::Refuse(Refusal::WrongPassword),
            Err(e) => return Decision::Refuse(Refusal::UnusableHash(e)),
        }
        let superuser = record.is_superuser
            || self
                .superusers
                .as_ref()
                .is_some_and(|glob| glob.matches(username))
            || match self.source.superquery(username) {
                None => false,
                Some(Ok(is)) => is,
                Some(Err(e)) => {
                    // Fail closed: the login stands, the privilege does not.
                    log::warn!(
                        "superquery for user '{}' failed ({e}); treated as not a superuser",
                        printable(username)
                    );
                    false
                }
            };
        let identity = Identity {
            username: username.to_string(),
            user_id: record.user_id.unwrap_or_else(|| username.to_string()),
            superuser,
        };
        if let Some(cache) = &self.cache {
            cache.put(username, password, identity.clone(), now);
        }
        Decision::Allow(identity)
    }

    /// Number of remembered logins (for tests and stats).
    pub fn cached_logins(&self) -> usize {
        self.cache.as_ref().map_or(0, CredentialCache::len)
    }
}

/// Broker-thread time of logins the cache did not answer, by stored password format:
/// checking the hash, and reading the user row. `getStats` reports it, so an operator (and
/// the benchmark) can see which format or which query makes first logins slow.
#[derive(Debug, Default)]
pub struct LoginTimes(Mutex<BTreeMap<String, LoginTime>>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoginTime {
    pub logins: u64,
    pub hash: Duration,
    pub database: Duration,
}

impl LoginTimes {
    pub fn add(&self, label: &str, hash: Duration, database: Duration) {
        let mut times = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = times.entry(label.to_string()).or_default();
        entry.logins += 1;
        entry.hash += hash;
        entry.database += database;
    }

    pub fn snapshot(&self) -> BTreeMap<String, LoginTime> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The format a stored string is read as (for the figures; never the string itself).
fn format_label(stored: &[u8], settings: &HashSettings) -> String {
    settings
        .forced
        .or_else(|| std::str::from_utf8(stored).ok().and_then(hash::detect))
        .map_or_else(|| "unrecognised".to_string(), |format| format.to_string())
}

/// Successful logins remembered for `ttl`, keyed by username, holding only an HMAC of the
/// password under a key made at start and never stored: a memory dump reveals no password
/// and no fast unsalted hash to crack.
struct CredentialCache {
    key: [u8; 32],
    ttl: Duration,
    /// Expiry times are whole seconds after this (4 bytes per entry, not 16).
    created: Instant,
    entries: Mutex<HashMap<Box<str>, CachedLogin>>,
}

/// Kept small: one per connected user (the username is the map's key).
struct CachedLogin {
    /// The first 128 bits of the HMAC: ample for an equality check under a secret key.
    mac: [u8; 16],
    user_id: Box<str>,
    superuser: bool,
    /// Seconds after `created`, rounded so an entry never outlives the TTL.
    expires: u32,
}

/// Bound on remembered logins; expired ones are swept when it is reached.
const CACHE_MAX_ENTRIES: usize = 100_000;

impl CredentialCache {
    fn new(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source failed");
        CredentialCache {
            key,
            ttl,
            created: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, username: &str, password: &[u8]) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        // Length-prefixed so ("ab","c") and ("a","bc") differ.
        mac.update(&(username.len() as u64).to_be_bytes());
        mac.update(username.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    fn get(&self, username: &str, password: &[u8], now: Instant) -> Option<Identity> {
        let mac = self.mac(username, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(username)?;
        (entry.expires > self.seconds(now) && hash::constant_time_eq(&entry.mac, &mac[..16])).then(
            || Identity {
                username: username.to_string(),
                user_id: entry.user_id.to_string(),
                superuser: entry.superuser,
            },
        )
    }

    fn put(&self, username: &str, password: &[u8], identity: Identity, now: Instant) {
        let mac = self.mac(username, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX_ENTRIES && !entries.contains_key(username) {
            let now = self.seconds(now);
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= CACHE_MAX_ENTRIES {
                return;
            }
        }
        let mut short_mac = [0u8; 16];
        short_mac.copy_from_slice(&mac[..16]);
        entries.insert(
            username.into(),
            CachedLogin {
                mac: short_mac,
                user_id: identity.user_id.into_boxed_str(),
                superuser: identity.superuser,
                expires: self.seconds(now).saturating_add(self.ttl.as_secs() as u32),
            },
        );
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whole seconds from `created` to `now` (rounded down; 0 before it).
    fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.created).as_secs() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// An in-memory user table for the decision logic; MySQL itself is covered by the
    /// broker tests.
    #[derive(Default)]
    struct Table {
        users: HashMap<&'static str, UserRecord>,
        fetches: Cell<usize>,
        down: Cell<bool>,
        superquery: Option<bool>,
    }

    impl UserSource for Table {
        fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, DbError> {
            self.fetches.set(self.fetches.get() + 1);
            if self.down.get() {
                return Err(DbError::Unavailable("test".into()));
            }
            Ok(self.users.get(username).cloned())
        }
        fn superquery(&self, _: &str) -> Option<Result<bool, DbError>> {
            self.superquery.map(Ok)
        }
    }

    // MariaDB: SELECT PASSWORD('secret')
    const SECRET: &[u8] = b"*14E65567ABDB5135D0CFD9A70B3032C179A49EE7";

    fn table() -> Table {
        let mut t = Table::default();
        t.users.insert(
            "alice",
            UserRecord {
                hash: Some(SECRET.to_vec()),
                user_id: Some("17".into()),
                ..Default::default()
            },
        );
        t.users.insert(
            "Sam",
            UserRecord {
                hash: Some(SECRET.to_vec()),
                ..Default::default()
            },
        );
        t.users.insert("nohash", UserRecord::default());
        t.users.insert(
            "empty",
            UserRecord {
                hash: Some(Vec::new()),
                ..Default::default()
            },
        );
        t.users.insert(
            "weird",
            UserRecord {
                hash: Some(b"{SSHA}abc".to_vec()),
                ..Default::default()
            },
        );
        t
    }

    fn auth(table: Table, ttl: u64) -> Authenticator<Table> {
        Authenticator::new(
            table,
            HashSettings::default(),
            Some(glob::Pattern::new("S*").unwrap()),
            Duration::from_secs(ttl),
        )
    }

    #[test]
    fn right_password_gives_identity() {
        let a = auth(table(), 0);
        let now = Instant::now();
        let Decision::Allow(id) = a.login(Some(b"alice"), Some(b"secret"), now) else {
            panic!("refused");
        };
        assert_eq!(id.user_id, "17");
        assert!(!id.superuser);
        let Decision::Allow(id) = a.login(Some(b"Sam"), Some(b"secret"), now) else {
            panic!("refused");
        };
        assert_eq!(id.user_id, "Sam");
        assert!(id.superuser, "superusers glob S*");
    }

    #[test]
    fn refusals() {
        let a = auth(table(), 0);
        let now = Instant::now();
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Refusal);
        let cases: &[Case] = &[
            (Some(b"alice"), Some(b"wrong"), Refusal::WrongPassword),
            (Some(b"alice"), None, Refusal::NoPassword),
            (Some(b"bob"), Some(b"secret"), Refusal::UnknownUser),
            (Some(b"nohash"), Some(b"x"), Refusal::NoStoredHash),
            (Some(b"empty"), Some(b"x"), Refusal::NoStoredHash),
            (Some(b"\xff\xfe"), Some(b"x"), Refusal::UnknownUser),
            (
                Some(b"weird"),
                Some(b"x"),
                Refusal::UnusableHash(HashError::Unrecognised),
            ),
        ];
        for (user, pw, why) in cases {
            assert_eq!(a.login(*user, *pw, now), Decision::Refuse(why.clone()));
        }
        assert_eq!(a.login(None, Some(b"x"), now), Decision::Defer);
    }

    #[test]
    fn superquery_grants_superuser() {
        let mut t = table();
        t.superquery = Some(true);
        let a = auth(t, 0);
        let Decision::Allow(id) = a.login(Some(b"alice"), Some(b"secret"), Instant::now()) else {
            panic!("refused");
        };
        assert!(id.superuser);
    }

    #[test]
    fn cache_spares_the_database_and_expires() {
        let a = auth(table(), 10);
        let t0 = Instant::now();
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), t0),
            Decision::Allow(_)
        ));
        assert_eq!(a.source.fetches.get(), 1);
        a.source.down.set(true);
        let t1 = t0 + Duration::from_secs(9);
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), t1),
            Decision::Allow(_)
        ));
        assert_eq!(a.source.fetches.get(), 1, "served from the cache");
        // A different password is never answered from the cache.
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secreT"), t1),
            Decision::Refuse(_)
        ));
        assert_eq!(a.source.fetches.get(), 2);
        // After the TTL the database is asked again (and is down: refused).
        let t2 = t0 + Duration::from_secs(11);
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), t2),
            Decision::Refuse(Refusal::Database(_))
        ));
        assert_eq!(a.cached_logins(), 1);
    }

    #[test]
    fn failures_are_not_cached() {
        let a = auth(table(), 10);
        let now = Instant::now();
        a.login(Some(b"alice"), Some(b"nope"), now);
        assert_eq!(a.cached_logins(), 0);
    }

    #[test]
    fn first_logins_are_timed_by_format_and_cached_ones_are_not() {
        let a = auth(table(), 10);
        let t0 = Instant::now();
        let logins: [(&[u8], &[u8], bool); 5] = [
            (b"alice", b"secret", true),
            (b"alice", b"secret", true),
            (b"Sam", b"wrong", false),
            (b"weird", b"x", false),
            (b"nobody", b"x", false),
        ];
        for (user, password, accepted) in logins {
            let decision = a.login(Some(user), Some(password), t0);
            assert_eq!(matches!(decision, Decision::Allow(_)), accepted);
        }
        let times = a.times.snapshot();
        let logins: Vec<(&str, u64)> = times.iter().map(|(k, v)| (k.as_str(), v.logins)).collect();
        // alice once (then cached), Sam's wrong password; the unusable row under its own label.
        assert_eq!(logins, [("mysql", 2), ("unrecognised", 1)]);
    }

    #[test]
    fn cache_holds_no_password_bytes() {
        let cache = CredentialCache::new(Duration::from_secs(5));
        let a = cache.mac("alice", b"secret");
        let b = CredentialCache::new(Duration::from_secs(5)).mac("alice", b"secret");
        assert_ne!(a, b, "keyed per process");
        assert_ne!(cache.mac("ab", b"c"), cache.mac("a", b"bc"));
    }
}
