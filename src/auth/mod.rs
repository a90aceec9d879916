//! The login decision: who the user is, whether the password matches, whether they are a
//! superuser, and a short-lived credential cache that spares MySQL on reconnect storms.
//!
//! Here the types, the throttled entry points and the re-check proofs; `decide` the decision
//! itself (and certificate users), `cache` the credential cache and its keyed MACs.

use crate::backend::{BackendError, BackendKind, Lookup, UserNow, UserRecord, UserSource};
use crate::hash::{self, HashError, HashSettings};
use crate::logging::printable;
use crate::throttle::{self, Event, Throttle, ThrottleConfig};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod cache;
mod decide;
#[cfg(test)]
mod tests;

use cache::{CredentialCache, Secret};

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
    /// The user holds `max_connections_per_user` connections already (decided by the
    /// plugin after the password, `crate::limits`).
    TooManyConnections,
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
            Refusal::TooManyConnections => "too-many-connections",
        }
    }

    /// Whether the attempt counts as a failure for the throttle (the client's fault, not
    /// the database's).
    fn counts_as_failure(&self) -> bool {
        !matches!(
            self,
            Refusal::Database(_)
                | Refusal::NoClientId
                | Refusal::Throttled
                | Refusal::NullUserId
                | Refusal::TooManyConnections
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
            Refusal::TooManyConnections => {
                f.write_str("the user holds max_connections_per_user connections already")
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
        self.login_with(username, password, client_id, address, now, None)
    }

    /// A CONNECT the credential cache answered (`identity`, from [`Authenticator::cached`]):
    /// throttled and counted like `login`, without a second look-up.
    pub fn login_cached(
        &self,
        username: &[u8],
        identity: Identity,
        client_id: &[u8],
        address: Option<&str>,
        now: Instant,
    ) -> Decision {
        self.login_with(
            Some(username),
            None,
            client_id,
            address,
            now,
            Some(identity),
        )
    }

    fn login_with(
        &self,
        username: Option<&[u8]>,
        password: Option<&[u8]>,
        client_id: &[u8],
        address: Option<&str>,
        now: Instant,
        cached: Option<Identity>,
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
        let decision = match cached {
            Some(identity) => Decision::Allow(identity),
            None => self.decide(username, password, client_id, now),
        };
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

    /// The identity the credential cache remembers for this username and password now, if
    /// any (one HMAC and a map lookup: what the broker thread decides itself; on Mosquitto
    /// 2.1 every other login is checked on a login thread). Hand it to
    /// [`Authenticator::login_cached`].
    pub fn cached(
        &self,
        username: &[u8],
        password: Option<&[u8]>,
        now: Instant,
    ) -> Option<Identity> {
        let (Some(cache), Ok(username), Some(password)) =
            (self.cache.as_ref(), std::str::from_utf8(username), password)
        else {
            return None;
        };
        cache.get(username, &self.secret.login_mac(username, password), now)
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

    /// Names the bridge accounts (`bridge_users`).
    pub fn with_bridge_users(mut self, pattern: Option<glob::Pattern>) -> Self {
        self.bridge_users = pattern;
        self
    }

    /// What the throttle remembers and what its budgets were charged (for stats).
    pub fn throttle_stats(&self) -> crate::throttle::Stats {
        self.throttle().stats()
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
