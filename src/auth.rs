//! The login decision: who the user is, whether the password matches, whether they are a
//! superuser, and a short-lived credential cache that spares MySQL on reconnect storms.

use crate::backend::{BackendError, BackendKind, Lookup, UserNow, UserRecord, UserSource};
use crate::hash::{self, HashError, HashSettings};
use crate::logging::printable;
use crate::throttle::{self, Event, Refused, Throttle, ThrottleConfig};
use hmac::{KeyInit, Mac};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The login options: who is a superuser or a bridge account by name, how long a login is
/// remembered, how stored passwords are read, and the failed-login throttle.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub superusers: Option<glob::Pattern>,
    /// `bridge_users`: the accounts other brokers bridge in with.
    pub bridge_users: Option<glob::Pattern>,
    /// `auth_cacheseconds`: how long a login is remembered (zero: never).
    pub cache: Duration,
    pub hash: HashSettings,
    pub throttle: ThrottleConfig,
}

/// Who an accepted client is, for the ACL and chat rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub user_id: String,
    pub superuser: bool,
    /// What was verified, so a re-check of the same connection (SIGHUP) needs no hash
    /// (`None` for the HTTP backend's users: the service is asked again).
    pub proof: Option<Proof>,
    pub backend: BackendKind,
    /// A bridge account (`bridge_users`, a MySQL user): trusted to relay chat messages
    /// between brokers.
    pub relay: bool,
}

/// A verified login, as keyed MACs (the key is made at start and never stored): the
/// password, and the stored hash it was verified against. Neither can be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    pub password: [u8; 16],
    pub stored_hash: [u8; 8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoPassword,
    UnknownUser,
    NoStoredHash,
    WrongPassword,
    UnusableHash(HashError),
    Database(BackendError),
    /// The broker passed no client id (never seen; refused rather than guessed).
    NoClientId,
    /// Refused unchecked by the throttle (a spent login budget, too many failed logins for
    /// the username, from the address or of this client id).
    Throttled,
    /// The row found holds the name spelled otherwise (the `username` column): names are
    /// compared byte for byte, so one account has one identity.
    OtherSpelling(String),
    /// The row's `user_id` is NULL.
    NullUserId,
}

impl Refusal {
    /// A short name, for `$SYS` topics.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::NoPassword => "no-password",
            Refusal::UnknownUser => "unknown-user",
            Refusal::NoStoredHash => "no-stored-hash",
            Refusal::WrongPassword => "wrong-password",
            Refusal::UnusableHash(_) => "unusable-hash",
            Refusal::Database(_) => "database",
            Refusal::NoClientId => "no-client-id",
            Refusal::Throttled => "throttled",
            Refusal::OtherSpelling(_) => "other-spelling",
            Refusal::NullUserId => "null-user-id",
        }
    }

    /// Whether the attempt counts as a failure for the throttle (the client's fault, not
    /// the database's).
    fn counts_as_failure(&self) -> bool {
        !matches!(
            self,
            Refusal::Database(_) | Refusal::NoClientId | Refusal::Throttled | Refusal::NullUserId
        )
    }
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
            Refusal::Throttled => f.write_str("too many failed logins; throttled"),
            Refusal::OtherSpelling(stored) => write!(
                f,
                "the account is spelled '{}' (names are compared byte for byte)",
                printable(stored)
            ),
            Refusal::NullUserId => {
                f.write_str("its row's user_id is NULL (no chat identity; fix the row)")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Identity),
    Refuse(Refusal),
    /// No username: the broker's `allow_anonymous` decides.
    Defer,
    /// Checked on a login thread (Mosquitto 2.1's delayed logins): the broker holds the
    /// client until a later TICK completes its login.
    Later,
}

/// A ticket the throttle admitted, whose place on its budget is given back when it drops,
/// whatever happened meanwhile (a panic in a check included); telling the outcome first
/// (`failed`, `succeeded`) makes that a no-op.
struct Admitted<'s, 'a> {
    throttle: &'s Mutex<Throttle>,
    ticket: throttle::Ticket<'a>,
}

impl Drop for Admitted<'_, '_> {
    fn drop(&mut self) {
        self.throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ended(&self.ticket);
    }
}

pub struct Authenticator<S> {
    /// Asked in order: the first that knows the user decides (`auth_opt_backends`).
    sources: Vec<S>,
    hash: HashSettings,
    superusers: Option<glob::Pattern>,
    /// `bridge_users`: the accounts brokers bridge to each other with.
    bridge_users: Option<glob::Pattern>,
    secret: Secret,
    cache: Option<CredentialCache>,
    /// Certificate users found, for the same time: a client with a valid certificate
    /// reconnecting in a loop costs one lookup on the broker thread per period.
    certificate_cache: Option<CredentialCache>,
    throttle: Mutex<Throttle>,
    /// Time spent on logins the cache did not answer (shared with the rules loads).
    pub times: std::sync::Arc<LoginTimes>,
    /// A glob was not applied for want of the row's `username` (said once).
    unproven_glob_said: AtomicBool,
}

impl<S: UserSource> Authenticator<S> {
    pub fn new(
        sources: Vec<S>,
        hash: HashSettings,
        superusers: Option<glob::Pattern>,
        cache_ttl: Duration,
        throttle: ThrottleConfig,
    ) -> Self {
        let cache = (!cache_ttl.is_zero()).then(|| CredentialCache::new(cache_ttl));
        Authenticator {
            sources,
            hash,
            superusers,
            bridge_users: None,
            secret: Secret::new(),
            cache,
            certificate_cache: (!cache_ttl.is_zero()).then(|| CredentialCache::new(cache_ttl)),
            throttle: Mutex::new(Throttle::new(throttle, Instant::now())),
            times: Default::default(),
            unproven_glob_said: AtomicBool::new(false),
        }
    }

    /// Decides one CONNECT. `username` and `password` are as the broker passed them (NULL
    /// becomes `None`), `address` is the client's; nothing here can let a client in because
    /// something failed. Logins refused for a reason of the client's are throttled.
    pub fn login(
        &self,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
        client_id: &[u8],
        address: Option<&str>,
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
        let (admitted, events) = self.throttle().admit(
            throttle::Login {
                username,
                client_id,
                address,
            },
            now,
        );
        log_throttle_events(events);
        let admitted = match admitted {
            Ok(ticket) => Admitted {
                throttle: &self.throttle,
                ticket,
            },
            Err(why) => {
                log::debug!(
                    "login refused for user '{}': throttled ({why})",
                    printable(username)
                );
                return Decision::Refuse(Refusal::Throttled);
            }
        };
        let ticket = &admitted.ticket;
        let started = Instant::now();
        let decision = self.decide(username, password, client_id, now);
        let events = match &decision {
            Decision::Refuse(why) if why.counts_as_failure() => {
                self.throttle().failed(ticket, started.elapsed(), now)
            }
            Decision::Allow(_) => self.throttle().succeeded(ticket, now),
            // Told when `admitted` drops.
            _ => Vec::new(),
        };
        log_throttle_events(events);
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
            Decision::Defer | Decision::Later => {}
        }
        decision
    }

    /// Whether this username and password would be answered from the credential cache now
    /// (a HMAC and a map lookup: what the broker thread may decide itself on Mosquitto 2.1,
    /// where every other login is checked on a login thread).
    pub fn is_cached(&self, username: &[u8], password: Option<&[u8]>, now: Instant) -> bool {
        let (Some(cache), Ok(username), Some(password)) =
            (self.cache.as_ref(), std::str::from_utf8(username), password)
        else {
            return false;
        };
        cache
            .get(username, &self.secret.login_mac(username, password), now)
            .is_some()
    }

    /// The broker re-checking a login it holds (SIGHUP): decided like `login`, but neither
    /// refused by the throttle nor counted by it (the broker asks, no client guesses).
    pub fn recheck(
        &self,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
        client_id: &[u8],
        now: Instant,
    ) -> Decision {
        let Some(username) = username else {
            return Decision::Defer;
        };
        match std::str::from_utf8(username) {
            Ok(username) => self.decide(username, password, client_id, now),
            Err(_) => Decision::Refuse(Refusal::UnknownUser),
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends throttling episodes that are over (logged); call it now and then (TICK).
    pub fn tick(&self, now: Instant) {
        let events = self.throttle().sweep(now);
        log_throttle_events(events);
    }

    /// A re-check (SIGHUP) of a connection the plugin let in: whether `password` is the one
    /// `proof` verified, so it stays without hashing again (the user row is read again in
    /// the background, see [`Authenticator::still_valid`] and `MysqlUsers::stored_hash`). A session restored after a
    /// restart has no proof and the broker no password for it: it stays as it is.
    pub fn same_login(
        &self,
        username: &str,
        password: Option<&[u8]>,
        proof: Option<&Proof>,
    ) -> bool {
        match (proof, password) {
            (Some(proof), Some(password)) => hash::constant_time_eq(
                &self.secret.login_mac(username, password)[..16],
                &proof.password,
            ),
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether the user is a superuser by the row read again now (see `is_superuser`).
    pub fn superuser_now(&self, username: &str, now: &UserNow) -> bool {
        now.superuser_by_row
            || self.glob_matches(self.superusers.as_ref(), "superusers", username, now.named)
    }

    /// Whether a session's proof still holds for the stored hash read now.
    pub fn still_valid(&self, proof: &Proof, stored: &[u8]) -> bool {
        hash::constant_time_eq(&self.secret.hash_fingerprint(stored), &proof.stored_hash)
    }

    fn decide(
        &self,
        username: &str,
        password: Option<&[u8]>,
        client_id: &[u8],
        now: Instant,
    ) -> Decision {
        let Some(password) = password else {
            return Decision::Refuse(Refusal::NoPassword);
        };
        if let Some(identity) = self
            .cache
            .as_ref()
            .and_then(|c| c.get(username, &self.secret.login_mac(username, password), now))
        {
            // As decided at the login the cache remembers (the globs with the row's name).
            return Decision::Allow(identity);
        }
        let started = Instant::now();
        // The first backend that knows the user decides; one that fails decides too (a
        // backend that is down never lets the next one answer for its users).
        let mut found = None;
        for source in &self.sources {
            match source.lookup(username, password, client_id) {
                Ok(Lookup::Unknown) => continue,
                Ok(lookup) => {
                    found = Some((source.kind(), lookup));
                    break;
                }
                Err(e) => return Decision::Refuse(Refusal::Database(e)),
            }
        }
        let login_mac = self.secret.login_mac(username, password);
        let (backend, record) = match found {
            None | Some((_, Lookup::Unknown)) => return Decision::Refuse(Refusal::UnknownUser),
            Some((backend, Lookup::Accepted)) => {
                self.times
                    .add(backend.name(), Duration::ZERO, started.elapsed());
                let identity = Identity {
                    username: username.to_string(),
                    user_id: username.to_string(),
                    // The service answered for this very name.
                    superuser: self.is_superuser(username, false, true),
                    proof: None,
                    backend,
                    // Bridge accounts are rows of the user table, never the service's users.
                    relay: false,
                };
                if let Some(cache) = &self.cache {
                    cache.put(username, &login_mac, identity.clone(), now);
                }
                return Decision::Allow(identity);
            }
            Some((backend, Lookup::Row(record))) => (backend, record),
        };
        let fetched = Instant::now();
        if let Err(why) = Self::row_names(&record, username) {
            return Decision::Refuse(why);
        }
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
        let named = record.holds_name(username);
        let superuser = self.is_superuser(username, record.is_superuser, named);
        let mut proof = Proof {
            password: [0; 16],
            stored_hash: self.secret.hash_fingerprint(stored),
        };
        proof.password.copy_from_slice(&login_mac[..16]);
        let identity = Identity {
            username: username.to_string(),
            user_id: record.user_id.unwrap_or_else(|| username.to_string()),
            superuser,
            proof: Some(proof),
            backend,
            relay: self.is_relay(username, named),
        };
        if let Some(cache) = &self.cache {
            cache.put(username, &login_mac, identity.clone(), now);
        }
        Decision::Allow(identity)
    }

    /// Names the bridge accounts (`bridge_users`).
    pub fn with_bridge_users(mut self, pattern: Option<glob::Pattern>) -> Self {
        self.bridge_users = pattern;
        self
    }

    /// A bridge account: `bridge_users` matches the name, and the row holds it as typed.
    fn is_relay(&self, username: &str, named: bool) -> bool {
        self.glob_matches(self.bridge_users.as_ref(), "bridge_users", username, named)
    }

    /// Whether `glob` matches `username`, which a row proves was typed as stored (`named`).
    /// Without that proof (a `userquery` without a `username` column) no glob matches: on a
    /// case-insensitive table `Steve` finds `steve`'s row, and `S*` must not make him a
    /// superuser. Said once, so the operator adds the column.
    fn glob_matches(
        &self,
        glob: Option<&glob::Pattern>,
        option: &str,
        username: &str,
        named: bool,
    ) -> bool {
        if !glob.is_some_and(|glob| glob.matches(username)) {
            return false;
        }
        if !named && !self.unproven_glob_said.swap(true, Ordering::Relaxed) {
            log::warn!(
                "user '{}' matches auth_opt_{option}, which is not applied: the user row does \
                 not show the name as stored (add a `username` column to auth_opt_userquery, \
                 e.g. SELECT password_hash, username FROM ...); a glob applies only to a name \
                 the row holds byte for byte",
                printable(username)
            );
        }
        named
    }

    /// The `is_superuser` column, the `superusers` glob (for a name the row holds, `named`),
    /// or `superquery`.
    fn is_superuser(&self, username: &str, column: bool, named: bool) -> bool {
        column
            || self.glob_matches(self.superusers.as_ref(), "superusers", username, named)
            || self
                .sources
                .iter()
                .any(|source| match source.superquery(username) {
                    None => false,
                    Some(Ok(is)) => is,
                    Some(Err(e)) => {
                        // Fail closed: the login stands, the privilege does not.
                        log::warn!(
                            "superuser check ({}) for user '{}' failed ({e}); treated as not a \
                         superuser",
                            source.kind().name(),
                            printable(username)
                        );
                        false
                    }
                })
    }

    /// A row that names the user otherwise than typed, or gives no chat identity: refused.
    fn row_names(record: &UserRecord, username: &str) -> Result<(), Refusal> {
        match &record.username {
            Some(stored) if stored != username => {
                return Err(Refusal::OtherSpelling(stored.clone()));
            }
            _ => {}
        }
        if record.user_id_null {
            return Err(Refusal::NullUserId);
        }
        Ok(())
    }

    /// Who a client is that the broker let in by its TLS certificate (the username from the
    /// certificate's identity or subject): the user's row without a password check
    /// (`UserSource::fetch_certificate_user`). No row: refused.
    /// Found users are remembered for `auth_cacheseconds` (not refusals: a row added or
    /// MySQL back is seen at the next connection).
    pub fn certificate_identity(&self, username: &str, now: Instant) -> Result<Identity, Refusal> {
        let mac = self.secret.mac(&[b"certificate", username.as_bytes()]);
        if let Some(identity) = self
            .certificate_cache
            .as_ref()
            .and_then(|c| c.get(username, &mac, now))
        {
            return Ok(Identity {
                proof: None,
                ..identity
            });
        }
        let mut found = None;
        for source in &self.sources {
            match source.fetch_certificate_user(username) {
                Ok(Some(record)) => {
                    found = Some((source.kind(), record));
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(Refusal::Database(e)),
            }
        }
        let Some((backend, record)) = found else {
            return Err(Refusal::UnknownUser);
        };
        Self::row_names(&record, username)?;
        let named = record.holds_name(username);
        let identity = Identity {
            username: username.to_string(),
            user_id: record.user_id.unwrap_or_else(|| username.to_string()),
            superuser: self.is_superuser(username, record.is_superuser, named),
            proof: None,
            backend,
            relay: self.is_relay(username, named),
        };
        if let Some(cache) = &self.certificate_cache {
            cache.put(username, &mac, identity.clone(), now);
        }
        Ok(identity)
    }

    /// What the throttle remembers and what its budgets were charged (for stats).
    pub fn throttled_keys(&self) -> serde_json::Value {
        let s = self.throttle().stats();
        serde_json::json!({
            "usernames": s.usernames,
            "addresses": s.addresses,
            "knownDevices": s.known_devices,
            "bytes": s.bytes,
            "failedLoginMicros": {
                "newDevices": s.new_failed.as_micros() as u64,
                "knownDevices": s.known_failed.as_micros() as u64,
            },
            "refused": {
                "budget": s.refused(Refused::Budget),
                "knownBudget": s.refused(Refused::KnownBudget),
                "username": s.refused(Refused::Username),
                "address": s.refused(Refused::Address),
                "device": s.refused(Refused::Device),
            },
        })
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

fn log_throttle_events(events: Vec<Event>) {
    let whose = |user: &Option<String>| {
        user.as_ref()
            .map_or_else(String::new, |u| format!(" of user '{}'", printable(u)))
    };
    for event in events {
        match event {
            Event::Started {
                kind,
                key,
                user,
                failures,
                blocked_for,
            } => log::warn!(
                "login throttled for {kind} '{}'{}: {failures} failed logins; further logins \
                 are refused without checking for {} ms, growing while they go on{}",
                printable(&key),
                whose(&user),
                blocked_for.as_millis(),
                if user.is_some() {
                    ""
                } else {
                    " (devices that logged in before are not refused)"
                }
            ),
            Event::Ended {
                kind,
                key,
                user,
                refused,
            } => log::info!(
                "login throttling for {kind} '{}'{} ended ({refused} logins refused unchecked)",
                printable(&key),
                whose(&user)
            ),
            Event::BudgetSpent {
                known: false,
                percent,
            } => log::warn!(
                "login budget spent: failed logins took {percent}% of the broker thread; logins \
                 of devices not seen before are refused without checking until it refills \
                 (devices that logged in before are not refused)"
            ),
            Event::BudgetSpent {
                known: true,
                percent,
            } => log::warn!(
                "login budget for known devices spent: client ids that logged in before, failing \
                 again, took {percent}% of the broker thread; those failing twice or more in a \
                 row are refused without checking until it refills"
            ),
            Event::BudgetRefilled { known, refused } => log::info!(
                "login budget{} refilled ({refused} logins refused unchecked)",
                if known { " for known devices" } else { "" }
            ),
        }
    }
}

/// The key of the plugin's keyed MACs, made at start and never stored: a memory dump
/// reveals no password and no fast unsalted hash to crack.
struct Secret {
    key: [u8; 32],
}

impl Secret {
    fn new() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source failed");
        Secret { key }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        for part in parts {
            // Length-prefixed so ("ab","c") and ("a","bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// A username and password.
    fn login_mac(&self, username: &str, password: &[u8]) -> [u8; 32] {
        self.mac(&[b"login", username.as_bytes(), password])
    }

    /// A stored hash, to tell later whether it changed.
    fn hash_fingerprint(&self, stored: &[u8]) -> [u8; 8] {
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&self.mac(&[b"stored", stored])[..8]);
        fingerprint
    }
}

/// Successful logins remembered for `ttl`, keyed by username, holding only the keyed MAC
/// of the username and password (see [`Secret`]).
struct CredentialCache {
    ttl: Duration,
    /// Expiry times are whole seconds after this (4 bytes per entry, not 16).
    created: Instant,
    entries: Mutex<HashMap<Box<str>, CachedLogin>>,
}

/// Kept small: one per connected user (the username is the map's key).
struct CachedLogin {
    /// The first 128 bits of the MAC: ample for an equality check under a secret key.
    mac: [u8; 16],
    /// The fingerprint of the stored hash the password was verified against.
    stored_hash: [u8; 8],
    user_id: Box<str>,
    superuser: bool,
    backend: BackendKind,
    /// Seconds after `created`, rounded so an entry never outlives the TTL.
    expires: u32,
}

/// Bound on remembered logins; expired ones are swept when it is reached.
const CACHE_MAX_ENTRIES: usize = 100_000;

impl CredentialCache {
    fn new(ttl: Duration) -> Self {
        CredentialCache {
            ttl,
            created: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, username: &str, login_mac: &[u8; 32], now: Instant) -> Option<Identity> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(username)?;
        (entry.expires > self.seconds(now) && hash::constant_time_eq(&entry.mac, &login_mac[..16]))
            .then(|| Identity {
                username: username.to_string(),
                user_id: entry.user_id.to_string(),
                superuser: entry.superuser,
                // Only a stored hash makes a proof (see `Identity::proof`).
                proof: (entry.backend == BackendKind::Mysql).then_some(Proof {
                    password: entry.mac,
                    stored_hash: entry.stored_hash,
                }),
                backend: entry.backend,
                relay: false,
            })
    }

    fn put(&self, username: &str, login_mac: &[u8; 32], identity: Identity, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX_ENTRIES && !entries.contains_key(username) {
            let now = self.seconds(now);
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= CACHE_MAX_ENTRIES {
                return;
            }
        }
        let mut short_mac = [0u8; 16];
        short_mac.copy_from_slice(&login_mac[..16]);
        entries.insert(
            username.into(),
            CachedLogin {
                mac: short_mac,
                stored_hash: identity.proof.map_or([0; 8], |p| p.stored_hash),
                user_id: identity.user_id.into_boxed_str(),
                superuser: identity.superuser,
                backend: identity.backend,
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

    impl Table {
        fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
            self.fetches.set(self.fetches.get() + 1);
            if self.down.get() {
                return Err(BackendError::Unavailable("test".into()));
            }
            Ok(self.users.get(username).cloned())
        }
    }

    impl UserSource for Table {
        fn kind(&self) -> BackendKind {
            BackendKind::Mysql
        }
        fn lookup(&self, username: &str, _: &[u8], _: &[u8]) -> Result<Lookup, BackendError> {
            Ok(self
                .fetch_user(username)?
                .map_or(Lookup::Unknown, Lookup::Row))
        }
        fn superquery(&self, _: &str) -> Option<Result<bool, BackendError>> {
            self.superquery.map(Ok)
        }
        fn fetch_certificate_user(
            &self,
            username: &str,
        ) -> Result<Option<UserRecord>, BackendError> {
            self.fetch_user(username)
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
                username: Some("alice".into()),
                ..Default::default()
            },
        );
        t.users.insert(
            "Sam",
            UserRecord {
                hash: Some(SECRET.to_vec()),
                username: Some("Sam".into()),
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
            vec![table],
            HashSettings::default(),
            Some(glob::Pattern::new("S*").unwrap()),
            Duration::from_secs(ttl),
            ThrottleConfig::default(),
        )
    }

    /// steve's row as a case-insensitive users table finds it for every spelling.
    fn steve(stored_name: bool) -> UserRecord {
        UserRecord {
            hash: Some(SECRET.to_vec()),
            user_id: Some("503".into()),
            username: stored_name.then(|| "steve".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_name_is_spelled_as_the_row_holds_it() {
        let mut t = table();
        for spelling in ["steve", "Steve", "steve "] {
            t.users.insert(spelling, steve(true));
        }
        let a = auth(t, 0);
        let now = Instant::now();
        let Decision::Allow(id) = a.login(Some(b"steve"), Some(b"secret"), b"c", None, now) else {
            panic!("refused");
        };
        assert!(!id.superuser);
        for other in ["Steve", "steve "] {
            assert_eq!(
                a.login(Some(other.as_bytes()), Some(b"secret"), b"c", None, now),
                Decision::Refuse(Refusal::OtherSpelling("steve".into())),
                "{other:?}"
            );
            assert!(a.certificate_identity(other, now).is_err(), "{other:?}");
        }
    }

    #[test]
    fn globs_match_only_a_name_the_row_holds() {
        let mut t = table();
        t.users.insert("Steve", steve(false));
        t.users.insert(
            "Joe-bridge",
            UserRecord {
                hash: Some(SECRET.to_vec()),
                ..Default::default()
            },
        );
        t.users.insert(
            "bridge-b",
            UserRecord {
                hash: Some(SECRET.to_vec()),
                username: Some("bridge-b".into()),
                ..Default::default()
            },
        );
        let a = auth(t, 60).with_bridge_users(Some(glob::Pattern::new("*-b*").unwrap()));
        let now = Instant::now();
        // No `username` column: the row does not say how the name is stored.
        let Decision::Allow(id) = a.login(Some(b"Steve"), Some(b"secret"), b"c", None, now) else {
            panic!("refused");
        };
        assert!(!id.superuser, "S* matched a name the row does not hold");
        assert!(
            a.certificate_identity("Steve", now)
                .is_ok_and(|id| !id.superuser)
        );
        let Decision::Allow(id) = a.login(Some(b"Joe-bridge"), Some(b"secret"), b"c", None, now)
        else {
            panic!("refused");
        };
        assert!(!id.relay);
        let Decision::Allow(id) = a.login(Some(b"bridge-b"), Some(b"secret"), b"c", None, now)
        else {
            panic!("refused");
        };
        assert!(id.relay, "the row holds the name: the glob applies");
        // The cache answers as the login decided.
        let Decision::Allow(id) = a.login(Some(b"Steve"), Some(b"secret"), b"c", None, now) else {
            panic!("refused");
        };
        assert!(!id.superuser && !id.relay);
    }

    #[test]
    fn a_null_user_id_is_no_chat_identity() {
        let mut t = table();
        t.users.insert(
            "nobody",
            UserRecord {
                hash: Some(SECRET.to_vec()),
                user_id_null: true,
                ..Default::default()
            },
        );
        let a = auth(t, 0);
        assert_eq!(
            a.login(Some(b"nobody"), Some(b"secret"), b"c", None, Instant::now()),
            Decision::Refuse(Refusal::NullUserId)
        );
    }

    #[test]
    fn right_password_gives_identity() {
        let a = auth(table(), 0);
        let now = Instant::now();
        let Decision::Allow(id) = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now) else {
            panic!("refused");
        };
        assert_eq!(id.user_id, "17");
        assert!(!id.superuser);
        let Decision::Allow(id) = a.login(Some(b"Sam"), Some(b"secret"), b"c", None, now) else {
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
        for (i, (user, pw, why)) in cases.iter().enumerate() {
            // Apart in time, as a client would be.
            let at = now + Duration::from_millis(100) * i as u32;
            assert_eq!(
                a.login(*user, *pw, b"c", None, at),
                Decision::Refuse(why.clone())
            );
        }
        assert_eq!(a.login(None, Some(b"x"), b"c", None, now), Decision::Defer);
    }

    #[test]
    fn superquery_grants_superuser() {
        let mut t = table();
        t.superquery = Some(true);
        let a = auth(t, 0);
        let Decision::Allow(id) =
            a.login(Some(b"alice"), Some(b"secret"), b"c", None, Instant::now())
        else {
            panic!("refused");
        };
        assert!(id.superuser);
    }

    #[test]
    fn cache_spares_the_database_and_expires() {
        let a = auth(table(), 10);
        let t0 = Instant::now();
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), b"c", None, t0),
            Decision::Allow(_)
        ));
        assert_eq!(a.sources[0].fetches.get(), 1);
        a.sources[0].down.set(true);
        let t1 = t0 + Duration::from_secs(9);
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), b"c", None, t1),
            Decision::Allow(_)
        ));
        assert_eq!(a.sources[0].fetches.get(), 1, "served from the cache");
        // A different password is never answered from the cache.
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secreT"), b"c", None, t1),
            Decision::Refuse(_)
        ));
        assert_eq!(a.sources[0].fetches.get(), 2);
        // After the TTL the database is asked again (and is down: refused).
        let t2 = t0 + Duration::from_secs(11);
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), b"c", None, t2),
            Decision::Refuse(Refusal::Database(_))
        ));
        assert_eq!(a.cached_logins(), 1);
    }

    #[test]
    fn certificate_users_are_remembered_but_not_their_refusals() {
        let a = auth(table(), 10);
        let t0 = Instant::now();
        let first = a.certificate_identity("alice", t0).unwrap();
        assert_eq!(first.proof, None);
        assert_eq!(a.sources[0].fetches.get(), 1);
        a.sources[0].down.set(true);
        let again = a.certificate_identity("alice", t0 + Duration::from_secs(9));
        assert_eq!(
            again.unwrap(),
            first,
            "served from the cache, still without a proof"
        );
        assert_eq!(a.sources[0].fetches.get(), 1);
        // A password login of the same name is not answered by the certificate's entry.
        assert!(matches!(
            a.login(Some(b"alice"), Some(b""), b"c", None, t0),
            Decision::Refuse(Refusal::Database(_))
        ));
        assert!(matches!(
            a.certificate_identity("alice", t0 + Duration::from_secs(11)),
            Err(Refusal::Database(_))
        ));
        a.sources[0].down.set(false);
        assert!(matches!(
            a.certificate_identity("nobody", t0),
            Err(Refusal::UnknownUser)
        ));
        assert!(matches!(
            a.certificate_identity("nobody", t0),
            Err(Refusal::UnknownUser)
        ));
        assert_eq!(a.sources[0].fetches.get(), 5, "refusals are asked again");
    }

    #[test]
    fn failures_are_not_cached() {
        let a = auth(table(), 10);
        let now = Instant::now();
        a.login(Some(b"alice"), Some(b"nope"), b"c", None, now);
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
            let decision = a.login(Some(user), Some(password), b"c", None, t0);
            assert_eq!(matches!(decision, Decision::Allow(_)), accepted);
        }
        let times = a.times.snapshot();
        let logins: Vec<(&str, u64)> = times.iter().map(|(k, v)| (k.as_str(), v.logins)).collect();
        // alice once (then cached), Sam's wrong password; the unusable row under its own label.
        assert_eq!(logins, [("mysql", 2), ("unrecognised", 1)]);
    }

    #[test]
    fn macs_hold_no_password_bytes() {
        let secret = Secret::new();
        let a = secret.login_mac("alice", b"secret");
        let b = Secret::new().login_mac("alice", b"secret");
        assert_ne!(a, b, "keyed per process");
        assert_ne!(secret.login_mac("ab", b"c"), secret.login_mac("a", b"bc"));
    }

    #[test]
    fn a_recheck_needs_the_verified_password_and_notices_a_new_hash() {
        let a = auth(table(), 0);
        let Decision::Allow(id) =
            a.login(Some(b"alice"), Some(b"secret"), b"c", None, Instant::now())
        else {
            panic!("refused");
        };
        let proof = id.proof.expect("a verified login has a proof");
        assert!(a.same_login("alice", Some(b"secret"), Some(&proof)));
        assert!(!a.same_login("alice", Some(b"other"), Some(&proof)));
        assert!(!a.same_login("bob", Some(b"secret"), Some(&proof)));
        assert!(!a.same_login("alice", None, Some(&proof)));
        assert!(a.same_login("alice", None, None), "a restored session");
        assert!(a.still_valid(&proof, SECRET));
        assert!(!a.still_valid(&proof, b"*0000000000000000000000000000000000000000"));
    }

    #[test]
    fn cached_logins_carry_the_same_proof() {
        let a = auth(table(), 10);
        let now = Instant::now();
        let first = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now);
        a.sources[0].down.set(true);
        let cached = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now);
        assert_eq!(first, cached);
    }

    #[test]
    fn a_certificate_user_is_looked_up_without_a_password() {
        let a = auth(table(), 0);
        let now = Instant::now();
        let id = a.certificate_identity("alice", now).unwrap();
        assert_eq!(
            (id.user_id.as_str(), id.superuser, id.proof),
            ("17", false, None)
        );
        assert!(
            a.certificate_identity("Sam", now).unwrap().superuser,
            "glob S*"
        );
        assert_eq!(
            a.certificate_identity("stranger", now),
            Err(Refusal::UnknownUser)
        );
        a.sources[0].down.set(true);
        assert!(matches!(
            a.certificate_identity("alice", now),
            Err(Refusal::Database(_))
        ));
    }

    #[test]
    fn rechecks_are_neither_throttled_nor_counted() {
        let a = auth(table(), 0);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                a.recheck(Some(b"alice"), None, b"c", now),
                Decision::Refuse(Refusal::NoPassword)
            );
        }
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), b"c", Some("10.3.3.3"), now),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn a_wrong_password_flood_is_refused_unchecked_but_not_the_owners_device() {
        let a = auth(table(), 0);
        let mut now = Instant::now();
        let login = |pw: &[u8], client: &str, address: &str, at| {
            a.login(
                Some(b"alice"),
                Some(pw),
                client.as_bytes(),
                Some(address),
                at,
            )
        };
        // The owner's phone logged in once: a known device from then on.
        assert!(matches!(
            login(b"secret", "phone", "10.9.9.9", now),
            Decision::Allow(_)
        ));
        // 20 wrong passwords (a fast hash: no duty-cycle block) from new devices...
        for i in 0..20 {
            now += Duration::from_millis(100);
            assert_eq!(
                login(b"guess", &format!("bot{i}"), "10.1.1.1", now),
                Decision::Refuse(Refusal::WrongPassword)
            );
        }
        // ...then new devices are refused unchecked.
        let fetches = a.sources[0].fetches.get();
        for i in 0..100 {
            assert_eq!(
                login(b"guess", &format!("more{i}"), "10.1.1.1", now),
                Decision::Refuse(Refusal::Throttled)
            );
        }
        assert_eq!(a.sources[0].fetches.get(), fetches, "no row read, no hash");
        // Even a new device with the right password waits for the block...
        assert_eq!(
            login(b"secret", "laptop", "10.2.2.2", now),
            Decision::Refuse(Refusal::Throttled)
        );
        // ...but the phone gets in, from any address, and after a typo at once too.
        assert!(matches!(
            login(b"secret", "phone", "10.1.1.1", now),
            Decision::Allow(_)
        ));
        assert_eq!(
            login(b"typo", "phone", "10.9.9.9", now),
            Decision::Refuse(Refusal::WrongPassword)
        );
        assert!(matches!(
            login(b"secret", "phone", "10.9.9.9", now),
            Decision::Allow(_)
        ));
        // The laptop once the block is over (1 s at the 20th failure).
        let later = now + Duration::from_secs(1);
        assert!(matches!(
            login(b"secret", "laptop", "10.2.2.2", later),
            Decision::Allow(_)
        ));
        let stats = a.throttled_keys();
        assert_eq!(stats["knownDevices"], 2, "{stats}");
        assert_eq!(stats["usernames"], 1, "{stats}");
        // A database outage is not the client's fault.
        a.sources[0].down.set(true);
        for _ in 0..30 {
            assert!(matches!(
                a.login(Some(b"Sam"), Some(b"x"), b"c", None, later),
                Decision::Refuse(Refusal::Database(_))
            ));
        }
    }

    /// An HTTP-like backend: checks the password itself.
    #[derive(Default)]
    struct Service {
        accepts: Vec<(&'static str, &'static [u8])>,
        superusers: Vec<&'static str>,
        down: Cell<bool>,
        asked: Cell<usize>,
    }

    impl UserSource for Service {
        fn kind(&self) -> BackendKind {
            BackendKind::Http
        }
        fn lookup(
            &self,
            username: &str,
            password: &[u8],
            _: &[u8],
        ) -> Result<Lookup, BackendError> {
            self.asked.set(self.asked.get() + 1);
            if self.down.get() {
                return Err(BackendError::Service("503".into()));
            }
            Ok(if self.accepts.contains(&(username, password)) {
                Lookup::Accepted
            } else {
                Lookup::Unknown
            })
        }
        fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>> {
            Some(if self.down.get() {
                Err(BackendError::Service("503".into()))
            } else {
                Ok(self.superusers.contains(&username))
            })
        }
        fn fetch_certificate_user(&self, _: &str) -> Result<Option<UserRecord>, BackendError> {
            Ok(None)
        }
    }

    fn chain(
        sources: Vec<std::sync::Arc<dyn UserSource>>,
    ) -> Authenticator<std::sync::Arc<dyn UserSource>> {
        Authenticator::new(
            sources,
            HashSettings::default(),
            None,
            Duration::ZERO,
            ThrottleConfig::default(),
        )
        // Every name matches: only MySQL's users become bridge accounts.
        .with_bridge_users(Some(glob::Pattern::new("*").unwrap()))
    }

    #[test]
    // The sources count their calls in Cells; the test is single-threaded.
    #[allow(clippy::arc_with_non_send_sync)]
    fn the_first_backend_that_knows_the_user_decides() {
        let table = std::sync::Arc::new(table());
        let service = std::sync::Arc::new(Service {
            accepts: vec![("carol", b"pw"), ("alice", b"http-pw")],
            superusers: vec!["carol"],
            ..Default::default()
        });
        let a = chain(vec![table.clone(), service.clone()]);
        let now = Instant::now();
        let login = |user: &[u8], pw: &[u8]| a.login(Some(user), Some(pw), b"c", None, now);
        let Decision::Allow(alice) = login(b"alice", b"secret") else {
            panic!("alice is MySQL's");
        };
        assert_eq!(
            (alice.backend, alice.user_id.as_str(), alice.relay),
            (BackendKind::Mysql, "17", true)
        );
        assert_eq!(service.asked.get(), 0, "MySQL knew alice");
        // MySQL knows alice: its wrong password is not the service's to accept.
        assert_eq!(
            login(b"alice", b"http-pw"),
            Decision::Refuse(Refusal::WrongPassword)
        );
        assert_eq!(service.asked.get(), 0);
        let Decision::Allow(carol) = login(b"carol", b"pw") else {
            panic!("carol is the service's");
        };
        assert_eq!(carol.backend, BackendKind::Http);
        assert!(!carol.relay);
        assert!(carol.superuser, "superusers are asked of each backend");
        assert!(carol.proof.is_none(), "a re-check asks the service again");
        assert_eq!(
            login(b"carol", b"wrong"),
            Decision::Refuse(Refusal::UnknownUser)
        );
        // A backend that is down decides: the next one never answers for its users.
        table.down.set(true);
        assert!(matches!(
            login(b"carol", b"pw"),
            Decision::Refuse(Refusal::Database(_))
        ));
        assert_eq!(service.asked.get(), 2);
        table.down.set(false);
        let a = chain(vec![service.clone(), table.clone()]);
        service.down.set(true);
        assert!(matches!(
            a.login(Some(b"alice"), Some(b"secret"), b"c", None, now),
            Decision::Refuse(Refusal::Database(_))
        ));
        service.down.set(false);
        let Decision::Allow(alice) = a.login(Some(b"alice"), Some(b"secret"), b"c", None, now)
        else {
            panic!("the service does not know alice's MySQL password: MySQL decides");
        };
        assert_eq!(alice.backend, BackendKind::Mysql);
        assert!(!alice.superuser);
        // Certificate users come from the backend with rows.
        assert_eq!(
            a.certificate_identity("alice", now).map(|i| i.backend),
            Ok(BackendKind::Mysql)
        );
    }
}
