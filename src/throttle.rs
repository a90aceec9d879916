//! Failed-login throttling: a wrong-password flood must cost the broker thread almost
//! nothing. Failures are counted per username and per client address; once a key is
//! throttled its logins are refused without reading MySQL or hashing until the block ends.
//!
//! Two limits make a block:
//! - a *duty cycle*: after a failure that cost `c` of broker-thread time (reading the row,
//!   hashing; 5 ms or more), the key is blocked for `cost_factor * c`, so one account or one
//!   address can hold at most 1 / (1 + cost_factor) of the thread, and other clients never
//!   wait more than one hash;
//! - a *growing block*: from the `free_failures`-th failure in a row on, the block is at
//!   least `base * 2^(n - free_failures)`, up to `max`.
//!
//! A success resets the key. A key that stopped failing is forgotten after `forget`. Pure:
//! time is passed in; the caller logs the returned [`Event`]s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The limits, from `auth_opt_login_throttle_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures in a row per username before the growing block starts; 0 turns the whole
    /// throttle off.
    pub user_failures: u32,
    /// The same per client address (higher: many users may share one NAT address); 0 turns
    /// the address limit off. Loopback addresses are never limited: behind a local proxy
    /// every client has one.
    pub address_failures: u32,
    /// The first growing block; doubled at each further failure.
    pub base: Duration,
    /// The longest block.
    pub max: Duration,
    /// Block after each failure as a multiple of what the failure cost the broker thread.
    pub cost_factor: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            user_failures: 3,
            address_failures: 10,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            cost_factor: 2,
        }
    }
}

impl ThrottleConfig {
    pub fn enabled(&self) -> bool {
        self.user_failures > 0
    }
}

/// A failure that cost the broker thread at least this blocks its key for a multiple of it.
const COSTLY: Duration = Duration::from_millis(5);

/// Keys remembered per limiter at most; expired ones are swept when it is reached.
const MAX_KEYS: usize = 100_000;

/// What the caller should log: once when a key starts being throttled, once when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        kind: KeyKind,
        key: String,
        failures: u32,
        blocked_for: Duration,
    },
    Ended {
        kind: KeyKind,
        key: String,
        refused: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Username,
    Address,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Username => "user",
            KeyKind::Address => "address",
        })
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
    /// Attempts refused while blocked in this episode (0: no episode yet).
    refused: u64,
    /// An episode started (and was logged).
    throttled: bool,
}

#[derive(Debug)]
struct Limiter {
    kind: KeyKind,
    free_failures: u32,
    entries: HashMap<Box<str>, Entry>,
}

impl Limiter {
    fn new(kind: KeyKind, free_failures: u32) -> Self {
        Limiter {
            kind,
            free_failures,
            entries: HashMap::new(),
        }
    }

    fn blocked(&mut self, key: &str, now: Instant) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) if entry.blocked_until > now => {
                entry.refused += 1;
                true
            }
            _ => false,
        }
    }

    fn failed(
        &mut self,
        key: &str,
        cost: Duration,
        now: Instant,
        config: &ThrottleConfig,
        events: &mut Vec<Event>,
    ) {
        if self.free_failures == 0 {
            return;
        }
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_KEYS {
            self.sweep(now, config, events);
            if self.entries.len() >= MAX_KEYS {
                return; // the other limiter still counts this attempt
            }
        }
        let entry = self.entries.entry(key.into()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: now,
            refused: 0,
            throttled: false,
        });
        if now.saturating_duration_since(entry.last_failure) > forget_after(config) {
            *entry = Entry {
                failures: 0,
                last_failure: now,
                blocked_until: now,
                refused: 0,
                throttled: false,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        // A cheap failure (a fast hash, an unknown user) holds the thread for microseconds:
        // only the growing block counts those.
        let duty = if cost >= COSTLY {
            cost.saturating_mul(config.cost_factor)
        } else {
            Duration::ZERO
        };
        let growing = if entry.failures >= self.free_failures {
            let doublings = (entry.failures - self.free_failures).min(30);
            config.base.saturating_mul(1 << doublings).min(config.max)
        } else {
            Duration::ZERO
        };
        let block = duty.max(growing).min(config.max);
        entry.blocked_until = entry.blocked_until.max(now + block);
        if !entry.throttled && entry.failures >= self.free_failures {
            entry.throttled = true;
            events.push(Event::Started {
                kind: self.kind,
                key: key.to_string(),
                failures: entry.failures,
                blocked_for: block,
            });
        }
    }

    fn succeeded(&mut self, key: &str, events: &mut Vec<Event>) {
        if let Some(entry) = self.entries.remove(key) {
            if entry.throttled {
                events.push(Event::Ended {
                    kind: self.kind,
                    key: key.to_string(),
                    refused: entry.refused,
                });
            }
        }
    }

    fn sweep(&mut self, now: Instant, config: &ThrottleConfig, events: &mut Vec<Event>) {
        let kind = self.kind;
        self.entries.retain(|key, entry| {
            let keep = entry.blocked_until > now
                || now.saturating_duration_since(entry.last_failure) <= forget_after(config);
            if !keep && entry.throttled {
                events.push(Event::Ended {
                    kind,
                    key: key.to_string(),
                    refused: entry.refused,
                });
            }
            keep
        });
    }
}

/// 127.0.0.0/8 and ::1 (also as an IPv4-mapped address).
fn is_loopback(address: &str) -> bool {
    let address = address.strip_prefix("::ffff:").unwrap_or(address);
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A key whose last failure is this old starts again from zero.
fn forget_after(config: &ThrottleConfig) -> Duration {
    config.max.saturating_mul(2).max(Duration::from_secs(60))
}

/// Both limiters. Owned by the broker thread (behind the authenticator's lock).
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    users: Limiter,
    addresses: Limiter,
    last_sweep: Option<Instant>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        let (users, addresses) = if config.enabled() {
            (config.user_failures, config.address_failures)
        } else {
            (0, 0)
        };
        Throttle {
            config,
            users: Limiter::new(KeyKind::Username, users),
            addresses: Limiter::new(KeyKind::Address, addresses),
            last_sweep: None,
        }
    }

    /// Whether a login may be checked now. `false`: refuse it without any work.
    pub fn admit(&mut self, username: &str, address: Option<&str>, now: Instant) -> bool {
        if !self.config.enabled() {
            return true;
        }
        let address = address.filter(|a| !is_loopback(a));
        // Both are counted as refused when both block.
        let user = self.users.blocked(username, now);
        let address = address.is_some_and(|a| self.addresses.blocked(a, now));
        !(user || address)
    }

    /// A refused login that cost the broker thread `cost`.
    pub fn failed(
        &mut self,
        username: &str,
        address: Option<&str>,
        cost: Duration,
        now: Instant,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        self.users
            .failed(username, cost, now, &self.config, &mut events);
        if let Some(address) = address.filter(|a| !is_loopback(a)) {
            self.addresses
                .failed(address, cost, now, &self.config, &mut events);
        }
        events
    }

    /// An accepted login resets its username; its address too (a user behind a shared
    /// address proves the address is not only an attacker's).
    pub fn succeeded(&mut self, username: &str, address: Option<&str>) -> Vec<Event> {
        let mut events = Vec::new();
        if self.users.entries.is_empty() && self.addresses.entries.is_empty() {
            return events;
        }
        self.users.succeeded(username, &mut events);
        if let Some(address) = address {
            self.addresses.succeeded(address, &mut events);
        }
        events
    }

    /// Forgets keys that stopped failing (at most once a second); reports ended episodes.
    pub fn sweep(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if self
            .last_sweep
            .is_some_and(|at| now < at + Duration::from_secs(1))
        {
            return events;
        }
        self.last_sweep = Some(now);
        self.users.sweep(now, &self.config, &mut events);
        self.addresses.sweep(now, &self.config, &mut events);
        events
    }

    /// Keys currently remembered (usernames, addresses).
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.entries.len(), self.addresses.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            user_failures: 3,
            address_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            cost_factor: 2,
        }
    }

    #[test]
    fn cheap_failures_are_free_until_the_limit_then_blocks_grow() {
        let mut t = Throttle::new(config());
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..2 {
            assert!(t.admit("alice", None, now));
            assert!(t.failed("alice", None, MS, now).is_empty());
            now += 10 * MS;
        }
        assert!(t.admit("alice", None, now));
        let events = t.failed("alice", None, MS, now);
        assert_eq!(
            events,
            [Event::Started {
                kind: KeyKind::Username,
                key: "alice".into(),
                failures: 3,
                blocked_for: Duration::from_secs(1),
            }]
        );
        assert!(!t.admit("alice", None, now + 999 * MS));
        assert!(t.admit("bob", None, now), "other users are not affected");
        // 4th failure: 2 s, 5th: 4 s, then capped at 8 s; logged once per episode.
        let mut at = now + Duration::from_secs(1);
        for expected in [2, 4, 8, 8] {
            assert!(t.admit("alice", None, at));
            assert!(t.failed("alice", None, MS, at).is_empty());
            assert!(!t.admit("alice", None, at + Duration::from_secs(expected) - MS));
            at += Duration::from_secs(expected);
        }
    }

    #[test]
    fn an_expensive_failure_blocks_for_twice_its_cost_at_once() {
        let mut t = Throttle::new(config());
        let now = Instant::now();
        t.failed("alice", None, 300 * MS, now);
        assert!(!t.admit("alice", None, now + 599 * MS));
        assert!(t.admit("alice", None, now + 600 * MS));
    }

    #[test]
    fn success_resets_and_ends_the_episode() {
        let mut t = Throttle::new(config());
        let now = Instant::now();
        for i in 0..3 {
            t.failed("alice", None, MS, now + i * 10 * MS);
        }
        assert!(!t.admit("alice", None, now + 100 * MS));
        let later = now + Duration::from_secs(2);
        assert!(t.admit("alice", None, later));
        let events = t.succeeded("alice", None);
        assert_eq!(
            events,
            [Event::Ended {
                kind: KeyKind::Username,
                key: "alice".into(),
                refused: 1
            }]
        );
        assert_eq!(t.tracked(), (0, 0));
        assert!(t.failed("alice", None, MS, later).is_empty(), "counts anew");
    }

    #[test]
    fn an_address_is_throttled_across_usernames() {
        let mut t = Throttle::new(config());
        let now = Instant::now();
        for i in 0..5u32 {
            let user = format!("u{i}");
            assert!(t.admit(&user, Some("10.0.0.9"), now + i * 10 * MS));
            t.failed(&user, Some("10.0.0.9"), MS, now + i * 10 * MS);
        }
        assert!(!t.admit("someone-else", Some("10.0.0.9"), now + 100 * MS));
        assert!(t.admit("someone-else", Some("10.0.0.10"), now + 100 * MS));
    }

    #[test]
    fn loopback_addresses_are_never_throttled() {
        let mut t = Throttle::new(config());
        let now = Instant::now();
        for address in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            for i in 0..20u32 {
                let user = format!("{address}-{i}");
                t.failed(&user, Some(address), MS, now + i * 10 * MS);
            }
            assert!(t.admit("fresh", Some(address), now + Duration::from_secs(1)));
        }
        assert_eq!(t.tracked().1, 0);
    }

    #[test]
    fn the_address_limit_can_be_off() {
        let mut t = Throttle::new(ThrottleConfig {
            address_failures: 0,
            ..config()
        });
        let now = Instant::now();
        for i in 0..20u32 {
            t.failed(&format!("u{i}"), Some("10.0.0.9"), MS, now + i * 10 * MS);
        }
        assert!(t.admit("fresh", Some("10.0.0.9"), now + Duration::from_secs(1)));
    }

    #[test]
    fn old_failures_are_forgotten_and_swept() {
        let mut t = Throttle::new(config());
        let now = Instant::now();
        for i in 0..3 {
            t.failed("alice", Some("a"), MS, now + i * 10 * MS);
        }
        let much_later = now + Duration::from_secs(3600);
        let events = t.sweep(much_later);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(t.tracked(), (0, 0));
        assert!(t.failed("alice", None, MS, much_later).is_empty());
    }

    #[test]
    fn disabled_throttle_admits_everything() {
        let mut t = Throttle::new(ThrottleConfig {
            user_failures: 0,
            ..config()
        });
        let now = Instant::now();
        for _ in 0..100 {
            t.failed("alice", Some("a"), Duration::from_secs(1), now);
        }
        assert!(t.admit("alice", Some("a"), now));
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::new(config());
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            t.failed(&format!("user{i}"), None, MS, now);
        }
        assert_eq!(t.tracked().0, MAX_KEYS);
    }
}
