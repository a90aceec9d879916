//! Failed-login throttling: a wrong-password flood must cost the broker thread a bounded
//! share of its time, and must never hand the attacker the power to lock an owner out.
//!
//! A login comes from a *device*: its username with its client id. A device that logged in
//! successfully within `known_device_lifetime` is *known*; every other login is *new*.
//!
//! - **Budget.** Failed logins of new devices draw on a token bucket of broker-thread time
//!   that refills at `budget_percent` of real time and holds one second's worth. While it is
//!   empty, new devices are refused unchecked (no row read, no hash). So in any `T` seconds
//!   the broker thread spends at most `P·T + P·1 s + one login` on new devices' failures.
//!   Successful logins are never charged (an attacker without the password cannot make
//!   them, and a reconnect storm after a restart must not be slowed): the budget bounds the
//!   time spent on logins that turned out not to be proven.
//! - **Known devices** skip the budget and the username and address limits: a flood from
//!   other devices never refuses them. Their own failures count on their own record only:
//!   the first failure and the first retry are always admitted (a typo, then the right
//!   password); from the second failure in a row the device is blocked after each costly
//!   failure, its further attempts draw on a second bucket of the same share, and from the
//!   `user_failures`-th the growing block applies. Client ids are not secret: someone who
//!   presents a known device's client id is that device here and can get that device (only
//!   it) blocked; the two free attempts per known device are charged to the second bucket
//!   but not refused, so they cost two checks per device between its owner's successes.
//! - **Per key** (username, client address; new devices only): after a failure that cost
//!   the broker thread 5 ms or more, the key is blocked for `(200 / P - 1)` times that cost,
//!   so one account or one address gets at most half the budget; from the
//!   `user_failures`-th (`address_failures`-th) failure the block is at least
//!   `base * 2^(n - threshold)`, up to `max`. The device that made a key's last failure,
//!   if that was its first failure in a row, may retry once through either block (the
//!   owner's typo on a new device; the budget still applies). A success resets neither a
//!   username nor an address: a key is forgotten after `max(2 * max, 60 s)` without
//!   failures.
//!
//! Memory: usernames, client ids and addresses are kept only as keyed hashes (SipHash
//! with a random key per process: 64 bits, 32 for a device among its username's), never
//! as strings, except the names of at most [`MAX_EPISODES`] keys per kind being throttled
//! (for the log), each cut to [`NAME_BYTES`]. Entries are bounded in number ([`MAX_KEYS`]
//! per limiter, `known_devices` devices, [`DEVICES_PER_USER`] per username), so bytes are
//! bounded ([`Throttle::bytes`]): about 5.5 MB per limiter when full, 33 bytes per known
//! device (a user's first device in the table itself, 25 bytes a slot), 14.4 MB in all
//! with the defaults (`memory_is_bounded_in_bytes_whatever_the_names`).
//!
//! Pure: time is passed in; the caller logs the returned [`Event`]s (one line when an
//! episode starts, one when it ends).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::time::{Duration, Instant};

mod budget;
mod devices;
mod limiter;
#[cfg(test)]
mod tests;

use budget::Budget;
use devices::{KnownDevices, device_key, is_loopback};
use limiter::{Limiter, duty_block, growing_block};

/// The limits, from `auth_opt_login_throttle_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures per username (new devices) before the growing block starts, and per known
    /// device; 0 turns the whole throttle off.
    pub user_failures: u32,
    /// The same per client address, across usernames (higher: many users may share one NAT
    /// address); 0 turns the address limit off. Loopback addresses are never limited:
    /// behind a local proxy every client has one.
    pub address_failures: u32,
    /// The first growing block; doubled at each further failure.
    pub base: Duration,
    /// The longest block.
    pub max: Duration,
    /// Share of the broker thread, in percent, that failed logins of new devices may use
    /// (and known devices failing twice or more in a row, a second share).
    pub budget_percent: u32,
    /// How long a device stays known after its last successful login.
    pub known_device_lifetime: Duration,
    /// Known devices remembered at most (0: none, every login is a new device's).
    pub known_devices: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            user_failures: 20,
            address_failures: 100,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            budget_percent: 20,
            known_device_lifetime: Duration::from_secs(30 * 86_400),
            known_devices: 100_000,
        }
    }
}

impl ThrottleConfig {
    pub fn enabled(&self) -> bool {
        self.user_failures > 0
    }

    /// A key's block after a costly failure, as a multiple of its cost: one key then gets
    /// at most half the budget (1 / (1 + factor) of the thread).
    fn duty_factor(&self) -> u32 {
        (200 / self.budget_percent.clamp(1, 100))
            .saturating_sub(1)
            .max(1)
    }

    /// A key whose last failure is this old starts again from zero.
    fn forget_after(&self) -> Duration {
        self.max.saturating_mul(2).max(Duration::from_secs(60))
    }
}

/// A failure that cost the broker thread at least this blocks its key for a multiple of it;
/// a cheaper one (a fast hash, an unknown user) only counts towards the growing block.
const COSTLY: Duration = Duration::from_millis(5);

/// Keys remembered per limiter (usernames, addresses) at most; beyond it a new key is not
/// counted until the sweep (at most once a second) forgets old ones. The budget still holds.
pub const MAX_KEYS: usize = 100_000;

/// Known devices per username: a new one replaces the user's least recently seen, so one
/// account with many client ids cannot push other users' devices out.
pub const DEVICES_PER_USER: usize = 8;

/// Throttled keys named at once per kind (for the end-of-episode line).
pub const MAX_EPISODES: usize = 1_000;

/// Longest name kept for the log, in bytes.
pub const NAME_BYTES: usize = 64;

/// What the caller should log: once when a key starts being throttled, once when it ends;
/// once when a budget runs out, once when it is full again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        kind: KeyKind,
        key: String,
        /// The device's username (`kind` Device).
        user: Option<String>,
        failures: u32,
        blocked_for: Duration,
    },
    Ended {
        kind: KeyKind,
        key: String,
        user: Option<String>,
        refused: u64,
    },
    BudgetSpent {
        /// The known devices' bucket (failing twice or more in a row).
        known: bool,
        percent: u32,
    },
    BudgetRefilled {
        known: bool,
        refused: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Username,
    Address,
    Device,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Username => "user",
            KeyKind::Address => "address",
            KeyKind::Device => "client id",
        })
    }
}

/// Why a login was refused unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Refused {
    /// The budget for new devices' failed logins is spent.
    Budget,
    /// The budget for known devices failing again is spent.
    KnownBudget,
    Username,
    Address,
    /// A known device's own failures.
    Device,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Budget => "login budget for new devices spent",
            Refused::KnownBudget => "login budget for known devices failing again spent",
            Refused::Username => "too many failed logins for the username",
            Refused::Address => "too many failed logins from the address",
            Refused::Device => "too many failed logins of this client id",
        })
    }
}

/// One login as the throttle sees it. `username` is keyed as given (a canonical name, once
/// the caller makes one, keys every spelling alike).
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub username: &'a str,
    pub client_id: &'a [u8],
    pub address: Option<&'a str>,
}

/// An admitted login, handed back with its outcome ([`Throttle::failed`],
/// [`Throttle::succeeded`]).
#[derive(Debug)]
pub struct Ticket<'a> {
    login: Login<'a>,
    /// `false`: the throttle is off; nothing is recorded.
    active: bool,
    user: u64,
    device: u64,
    /// `None` for loopback or no address, or no address limit.
    address: Option<u64>,
    known: bool,
    /// The budget the login holds a place on while it is checked (`Some(known)`), released
    /// when its outcome is told (`failed`, `succeeded` or `ended`).
    reserved: std::cell::Cell<Option<bool>>,
}

impl Ticket<'_> {
    /// Whether the login came from a known device.
    pub fn known(&self) -> bool {
        self.known
    }

    /// The device's tag among its username's known devices.
    fn tag(&self) -> u32 {
        (self.device >> 32) as u32
    }
}

/// Figures for `getStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub usernames: usize,
    pub addresses: usize,
    pub known_devices: usize,
    /// Estimated heap bytes of the whole throttle state.
    pub bytes: usize,
    /// Broker-thread time charged to the budgets (failed logins).
    pub new_failed: Duration,
    pub known_failed: Duration,
    /// Logins refused unchecked, by [`Refused`] (see [`Stats::refused`]).
    refused: [u64; 5],
}

impl Stats {
    /// Logins refused unchecked for this reason.
    pub fn refused(&self, why: Refused) -> u64 {
        self.refused[why as usize]
    }
}

/// Keys are already keyed hashes: the map uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Keyed<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Heap bytes of a hash map's table (hashbrown: buckets of key and value, one control byte
/// each, about 8/7 of the capacity).
fn table_bytes<V>(map: &Keyed<V>) -> usize {
    let buckets = if map.capacity() == 0 {
        0
    } else {
        (map.capacity() * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<(u64, V)>() + 1)
}

/// A heap block's bookkeeping, estimated.
const ALLOCATION_OVERHEAD: usize = 16;

/// Times are kept as offsets from the throttle's start: 4 or 8 bytes, not 16.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.0).as_millis() as u64
    }
    fn secs(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.0)
            .as_secs()
            .min(u64::from(u32::MAX)) as u32
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn short_name(text: &str) -> Box<str> {
    if text.len() <= NAME_BYTES {
        return text.into();
    }
    let mut end = NAME_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into_boxed_str()
}

/// Everything. Owned by the broker thread (behind the authenticator's lock).
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    /// SipHash with a random key: the keys of every table.
    hasher: RandomState,
    clock: Clock,
    users: Limiter,
    addresses: Limiter,
    known: KnownDevices,
    new_budget: Budget,
    known_budget: Budget,
    last_sweep: Option<Instant>,
    last_device_sweep: Option<Instant>,
    refused: [u64; 5],
}

impl Throttle {
    /// `now`: times before it count as it.
    pub fn new(config: ThrottleConfig, now: Instant) -> Self {
        let (users, addresses) = if config.enabled() {
            (config.user_failures, config.address_failures)
        } else {
            (0, 0)
        };
        Throttle {
            config,
            hasher: RandomState::new(),
            clock: Clock(now),
            users: Limiter::new(KeyKind::Username, users),
            addresses: Limiter::new(KeyKind::Address, addresses),
            known: KnownDevices::default(),
            new_budget: Budget::new(false, config.budget_percent, now),
            known_budget: Budget::new(true, config.budget_percent, now),
            last_sweep: None,
            last_device_sweep: None,
            refused: [0; 5],
        }
    }

    fn lifetime(&self) -> u32 {
        self.config
            .known_device_lifetime
            .as_secs()
            .min(u64::from(u32::MAX)) as u32
    }

    /// Whether a login may be checked now (`Err`: refuse it without any work), and what
    /// to log.
    pub fn admit<'a>(
        &mut self,
        login: Login<'a>,
        now: Instant,
    ) -> (Result<Ticket<'a>, Refused>, Vec<Event>) {
        let (verdict, events) = self.verdict(login, now);
        if let Err(why) = verdict {
            self.refused[why as usize] += 1;
        }
        (verdict, events)
    }

    fn verdict<'a>(
        &mut self,
        login: Login<'a>,
        now: Instant,
    ) -> (Result<Ticket<'a>, Refused>, Vec<Event>) {
        let mut events = Vec::new();
        let mut ticket = Ticket {
            login,
            active: false,
            user: 0,
            device: 0,
            address: None,
            known: false,
            reserved: std::cell::Cell::new(None),
        };
        if !self.config.enabled() {
            return (Ok(ticket), events);
        }
        ticket.active = true;
        // Every spelling of a name is one account's (`names`): one counter.
        let name = crate::names::folded(login.username);
        ticket.user = self.hasher.hash_one((0u8, &*name));
        ticket.device = self.hasher.hash_one((1u8, &*name, login.client_id));
        ticket.address = login
            .address
            .filter(|a| self.config.address_failures > 0 && !is_loopback(a))
            .map(|a| self.hasher.hash_one((2u8, a)));
        let now_ms = self.clock.ms(now);
        if self.known.is_known(
            ticket.user,
            ticket.tag(),
            self.clock.secs(now),
            self.lifetime(),
        ) {
            ticket.known = true;
            let key = device_key(ticket.user, ticket.tag());
            let (blocked, failing) = self.known.failing.get(&key).map_or((false, false), |f| {
                (f.blocked_until > now_ms, f.failures >= 2)
            });
            let verdict = if blocked {
                Err(Refused::Device)
            } else if failing && !self.known_budget.allows(now, &mut events) {
                Err(Refused::KnownBudget)
            } else {
                if failing {
                    self.known_budget.reserve();
                    ticket.reserved.set(Some(true));
                }
                Ok(ticket)
            };
            if verdict.is_err() {
                self.known.episodes.refused(key);
            }
            return (verdict, events);
        }
        let verdict = if self.users.blocks(ticket.user, ticket.device, now_ms) {
            Err(Refused::Username)
        } else if ticket
            .address
            .is_some_and(|a| self.addresses.blocks(a, ticket.device, now_ms))
        {
            Err(Refused::Address)
        } else if !self.new_budget.allows(now, &mut events) {
            Err(Refused::Budget)
        } else {
            self.new_budget.reserve();
            ticket.reserved.set(Some(false));
            Ok(ticket)
        };
        (verdict, events)
    }

    /// Gives back the ticket's place on its budget, once.
    fn release(&mut self, ticket: &Ticket<'_>) {
        match ticket.reserved.take() {
            Some(true) => self.known_budget.release(),
            Some(false) => self.new_budget.release(),
            None => {}
        }
    }

    /// An admitted login that ended neither failed nor accepted (MySQL unavailable, no
    /// password): nothing is recorded, its place on the budget is given back.
    pub fn ended(&mut self, ticket: &Ticket<'_>) {
        self.release(ticket);
    }

    /// An admitted login refused for a reason of the client's, that cost the broker thread
    /// `cost`.
    pub fn failed(&mut self, ticket: &Ticket<'_>, cost: Duration, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        self.release(ticket);
        if !ticket.active {
            return events;
        }
        let login = ticket.login;
        if ticket.known {
            self.known_budget.charge(cost, now, &mut events);
            let config = self.config;
            let key = device_key(ticket.user, ticket.tag());
            let failing = self.known.failing.entry(key).or_default();
            failing.failures = failing.failures.saturating_add(1);
            let failures = u32::from(failing.failures);
            if failures >= 2 {
                let threshold = config.user_failures.max(2);
                let block = duty_block(cost, &config)
                    .max(growing_block(failures, threshold, &config))
                    .min(config.max);
                failing.blocked_until = failing
                    .blocked_until
                    .max(self.clock.ms(now) + millis(block));
                let name = String::from_utf8_lossy(login.client_id);
                if failures >= threshold
                    && self.known.episodes.start(key, &name, Some(login.username))
                {
                    events.push(Event::Started {
                        kind: KeyKind::Device,
                        key: short_name(&name).into(),
                        user: Some(short_name(login.username).into()),
                        failures,
                        blocked_for: block,
                    });
                }
            }
            return events;
        }
        self.new_budget.charge(cost, now, &mut events);
        let config = self.config;
        self.users.failed(
            ticket.user,
            ticket.device,
            login.username,
            cost,
            now,
            self.clock,
            &config,
            &mut events,
        );
        if let (Some(key), Some(address)) = (ticket.address, login.address) {
            self.addresses.failed(
                key,
                ticket.device,
                address,
                cost,
                now,
                self.clock,
                &config,
                &mut events,
            );
        }
        events
    }

    /// An accepted login: its device is known from now on (its own failures forgotten).
    /// Neither the username's nor the address's failures are reset: an attacker's own
    /// account proves nothing about the other logins from its address.
    pub fn succeeded(&mut self, ticket: &Ticket<'_>, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        self.release(ticket);
        if ticket.active {
            let lifetime = self.lifetime();
            self.known.remember(
                ticket.user,
                ticket.tag(),
                self.clock.secs(now),
                lifetime,
                self.config.known_devices,
                &mut events,
            );
        }
        events
    }

    /// Forgets keys that stopped failing (at most once a second) and expired devices (at
    /// most once a minute); reports ended episodes and refilled budgets.
    pub fn sweep(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        self.new_budget.refill(now, &mut events);
        self.known_budget.refill(now, &mut events);
        let due = |last: Option<Instant>, every: Duration| last.is_none_or(|at| now >= at + every);
        if due(self.last_sweep, Duration::from_secs(1)) {
            self.last_sweep = Some(now);
            let config = self.config;
            self.users.sweep(now, self.clock, &config, &mut events);
            self.addresses.sweep(now, self.clock, &config, &mut events);
        }
        if due(self.last_device_sweep, Duration::from_secs(60)) {
            self.last_device_sweep = Some(now);
            let lifetime = self.lifetime();
            self.known
                .sweep(self.clock.secs(now), lifetime, &mut events);
        }
        events
    }

    /// Estimated heap bytes of everything the throttle holds.
    pub fn bytes(&self) -> usize {
        self.users.bytes() + self.addresses.bytes() + self.known.bytes()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            usernames: self.users.entries.len(),
            addresses: self.addresses.entries.len(),
            known_devices: self.known.count,
            bytes: self.bytes(),
            new_failed: self.new_budget.charged,
            known_failed: self.known_budget.charged,
            refused: self.refused,
        }
    }
}
