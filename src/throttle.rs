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
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'a> {
    login: Login<'a>,
    /// `false`: the throttle is off; nothing is recorded.
    active: bool,
    user: u64,
    device: u64,
    /// `None` for loopback or no address, or no address limit.
    address: Option<u64>,
    known: bool,
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

/// The growing block of the `failures`-th failure for a `threshold`.
fn growing_block(failures: u32, threshold: u32, config: &ThrottleConfig) -> Duration {
    if threshold == 0 || failures < threshold {
        return Duration::ZERO;
    }
    let doublings = (failures - threshold).min(30);
    config.base.saturating_mul(1 << doublings).min(config.max)
}

fn duty_block(cost: Duration, config: &ThrottleConfig) -> Duration {
    if cost >= COSTLY {
        cost.saturating_mul(config.duty_factor())
    } else {
        Duration::ZERO
    }
}

/// A key being throttled: its name for the log and what it refused.
#[derive(Debug)]
struct Episode {
    name: Box<str>,
    user: Option<Box<str>>,
    refused: u64,
}

impl Episode {
    fn bytes(&self) -> usize {
        self.name.len() + self.user.as_ref().map_or(0, |u| u.len()) + 2 * ALLOCATION_OVERHEAD
    }
}

/// Episodes of one kind, at most [`MAX_EPISODES`].
#[derive(Debug, Default)]
struct Episodes(Keyed<Episode>);

impl Episodes {
    fn start(&mut self, key: u64, name: &str, user: Option<&str>) -> bool {
        if self.0.contains_key(&key) || self.0.len() >= MAX_EPISODES {
            return false;
        }
        self.0.insert(
            key,
            Episode {
                name: short_name(name),
                user: user.map(short_name),
                refused: 0,
            },
        );
        true
    }

    fn refused(&mut self, key: u64) {
        if let Some(episode) = self.0.get_mut(&key) {
            episode.refused += 1;
        }
    }

    fn end(&mut self, kind: KeyKind, key: u64, events: &mut Vec<Event>) {
        if let Some(episode) = self.0.remove(&key) {
            events.push(Event::Ended {
                kind,
                key: episode.name.into(),
                user: episode.user.map(Into::into),
                refused: episode.refused,
            });
        }
    }

    fn bytes(&self) -> usize {
        table_bytes(&self.0) + self.0.values().map(Episode::bytes).sum::<usize>()
    }
}

/// A username's or an address's failures (new devices only). 32 bytes.
#[derive(Debug)]
struct Entry {
    /// Milliseconds after the clock's start.
    blocked_until: u64,
    /// The device of the last failure, and its failures in a row.
    last_device: u64,
    failures: u32,
    /// Seconds after the clock's start.
    last_failure: u32,
    device_streak: u8,
}

#[derive(Debug)]
struct Limiter {
    kind: KeyKind,
    threshold: u32,
    entries: Keyed<Entry>,
    episodes: Episodes,
}

impl Limiter {
    fn new(kind: KeyKind, threshold: u32) -> Self {
        Limiter {
            kind,
            threshold,
            entries: Keyed::default(),
            episodes: Episodes::default(),
        }
    }

    fn blocks(&mut self, key: u64, device: u64, now_ms: u64) -> bool {
        match self.entries.get(&key) {
            Some(e) if e.blocked_until > now_ms => {
                let first_retry = e.last_device == device && e.device_streak == 1;
                if !first_retry {
                    self.episodes.refused(key);
                }
                !first_retry
            }
            _ => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(
        &mut self,
        key: u64,
        device: u64,
        name: &str,
        cost: Duration,
        now: Instant,
        clock: Clock,
        config: &ThrottleConfig,
        events: &mut Vec<Event>,
    ) {
        if self.threshold == 0 || !self.entries.contains_key(&key) && self.entries.len() >= MAX_KEYS
        {
            return;
        }
        let (now_s, now_ms) = (clock.secs(now), clock.ms(now));
        let forget = config.forget_after().as_secs();
        let entry = self.entries.entry(key).or_insert(Entry {
            blocked_until: 0,
            last_device: device,
            failures: 0,
            last_failure: now_s,
            device_streak: 0,
        });
        if u64::from(now_s.saturating_sub(entry.last_failure)) > forget {
            entry.failures = 0;
            entry.device_streak = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now_s;
        if entry.last_device == device {
            entry.device_streak = entry.device_streak.saturating_add(1);
        } else {
            entry.last_device = device;
            entry.device_streak = 1;
        }
        let block = duty_block(cost, config)
            .max(growing_block(entry.failures, self.threshold, config))
            .min(config.max);
        entry.blocked_until = entry.blocked_until.max(now_ms + millis(block));
        let failures = entry.failures;
        if failures >= self.threshold && self.episodes.start(key, name, None) {
            events.push(Event::Started {
                kind: self.kind,
                key: short_name(name).into(),
                user: None,
                failures,
                blocked_for: block,
            });
        }
    }

    fn sweep(
        &mut self,
        now: Instant,
        clock: Clock,
        config: &ThrottleConfig,
        events: &mut Vec<Event>,
    ) {
        let (now_s, now_ms) = (clock.secs(now), clock.ms(now));
        let forget = config.forget_after().as_secs();
        let mut gone = Vec::new();
        self.entries.retain(|key, e| {
            let keep = e.blocked_until > now_ms
                || u64::from(now_s.saturating_sub(e.last_failure)) <= forget;
            if !keep {
                gone.push(*key);
            }
            keep
        });
        for key in gone {
            self.episodes.end(self.kind, key, events);
        }
        shrink(&mut self.entries);
    }

    fn bytes(&self) -> usize {
        table_bytes(&self.entries) + self.episodes.bytes()
    }
}

/// Gives memory back after a flood.
fn shrink<V>(map: &mut Keyed<V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to_fit();
    }
}

/// A token bucket of broker-thread time, in microseconds.
#[derive(Debug)]
struct Budget {
    known: bool,
    percent: u32,
    level: i64,
    last: Instant,
    /// Refusals in the episode going on, if one is.
    episode: Option<u64>,
    charged: Duration,
}

impl Budget {
    fn new(known: bool, percent: u32, now: Instant) -> Self {
        let mut budget = Budget {
            known,
            percent: percent.clamp(1, 100),
            level: 0,
            last: now,
            episode: None,
            charged: Duration::ZERO,
        };
        budget.level = budget.burst();
        budget
    }

    /// One second's worth.
    fn burst(&self) -> i64 {
        10_000 * i64::from(self.percent)
    }

    fn refill(&mut self, now: Instant, events: &mut Vec<Event>) {
        let elapsed = now.saturating_duration_since(self.last).as_micros();
        self.last = self.last.max(now);
        let gained = (elapsed.min(1 << 40) as i64) * i64::from(self.percent) / 100;
        self.level = (self.level + gained).min(self.burst());
        if self.level >= self.burst() {
            if let Some(refused) = self.episode.take() {
                events.push(Event::BudgetRefilled {
                    known: self.known,
                    refused,
                });
            }
        }
    }

    fn allows(&mut self, now: Instant, events: &mut Vec<Event>) -> bool {
        self.refill(now, events);
        if self.level > 0 {
            return true;
        }
        match &mut self.episode {
            Some(refused) => *refused += 1,
            None => {
                self.episode = Some(1);
                events.push(Event::BudgetSpent {
                    known: self.known,
                    percent: self.percent,
                });
            }
        }
        false
    }

    fn charge(&mut self, cost: Duration, now: Instant, events: &mut Vec<Event>) {
        self.refill(now, events);
        self.level -= cost.as_micros().min(1 << 40) as i64;
        self.charged += cost;
    }
}

/// A known device, in its username's entry: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Device {
    /// 32 bits of the device's keyed hash: two devices of one username share it by a
    /// chance of 2^-32, and someone who does not know the key cannot aim at it.
    tag: u32,
    /// Its last success, seconds after the clock's start.
    seen: u32,
}

/// A username's known devices: one inline (most users), more beside it. 16 bytes (the
/// box's null niche tells them apart).
#[derive(Debug)]
enum Devices {
    One(Device),
    Many(Box<[Device]>),
}

impl Devices {
    fn as_slice(&self) -> &[Device] {
        match self {
            Devices::One(device) => std::slice::from_ref(device),
            Devices::Many(devices) => devices,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Device] {
        match self {
            Devices::One(device) => std::slice::from_mut(device),
            Devices::Many(devices) => devices,
        }
    }

    fn push(&mut self, device: Device) {
        let mut devices = self.as_slice().to_vec();
        devices.push(device);
        *self = Devices::Many(devices.into_boxed_slice());
    }

    /// Keeps the devices `keep` says; the others go to `gone`. `false`: none is left.
    fn retain(&mut self, mut keep: impl FnMut(&Device) -> bool, gone: &mut Vec<Device>) -> bool {
        if self.as_slice().iter().all(&mut keep) {
            return true;
        }
        let (kept, dropped): (Vec<Device>, Vec<Device>) =
            self.as_slice().iter().partition(|d| keep(d));
        gone.extend(dropped);
        *self = match kept[..] {
            [] => return false,
            [one] => Devices::One(one),
            _ => Devices::Many(kept.into_boxed_slice()),
        };
        true
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Devices::One(_) => 0,
            Devices::Many(devices) => {
                std::mem::size_of_val::<[Device]>(devices) + ALLOCATION_OVERHEAD
            }
        }
    }
}

/// A known device's failures in a row, kept only while it has some.
#[derive(Debug, Default)]
struct Failing {
    /// Milliseconds after the clock's start (set from its second failure in a row).
    blocked_until: u64,
    failures: u16,
}

/// The key of a known device's failures and episode.
fn device_key(user: u64, tag: u32) -> u64 {
    user.rotate_left(17) ^ u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Known devices by username, at most [`DEVICES_PER_USER`] each and `limit` in all.
#[derive(Debug, Default)]
struct KnownDevices {
    users: Keyed<Devices>,
    count: usize,
    failing: Keyed<Failing>,
    episodes: Episodes,
}

impl KnownDevices {
    fn is_known(&self, user: u64, tag: u32, now_s: u32, lifetime: u32) -> bool {
        self.users.get(&user).is_some_and(|devices| {
            devices
                .as_slice()
                .iter()
                .any(|d| d.tag == tag && now_s.saturating_sub(d.seen) <= lifetime)
        })
    }

    /// A device no longer known: its failures and episode go with it.
    fn forget(&mut self, user: u64, tag: u32, events: &mut Vec<Event>) {
        let key = device_key(user, tag);
        self.failing.remove(&key);
        self.episodes.end(KeyKind::Device, key, events);
    }

    /// A successful login: remembered (or refreshed), its failures forgotten.
    fn remember(
        &mut self,
        user: u64,
        tag: u32,
        now_s: u32,
        lifetime: u32,
        limit: usize,
        events: &mut Vec<Event>,
    ) {
        if limit == 0 {
            return;
        }
        self.forget(user, tag, events);
        let fresh = Device { tag, seen: now_s };
        let full = self.count >= limit;
        let Some(devices) = self.users.get_mut(&user) else {
            // When full, the sweep frees room: other users' devices are never pushed out.
            if !full {
                self.users.insert(user, Devices::One(fresh));
                self.count += 1;
            }
            return;
        };
        let slice = devices.as_mut_slice();
        if let Some(device) = slice.iter_mut().find(|d| d.tag == tag) {
            device.seen = now_s;
            return;
        }
        // The user's own least recently seen makes room (an expired one even when full).
        let (oldest, seen) = slice
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.seen))
            .min_by_key(|&(_, seen)| seen)
            .expect("never empty");
        let expired = now_s.saturating_sub(seen) > lifetime;
        if slice.len() >= DEVICES_PER_USER || full && expired {
            let old = std::mem::replace(&mut slice[oldest], fresh);
            self.forget(user, old.tag, events);
        } else if !full {
            devices.push(fresh);
            self.count += 1;
        }
    }

    fn sweep(&mut self, now_s: u32, lifetime: u32, events: &mut Vec<Event>) {
        let mut gone = Vec::new();
        let mut forgotten = Vec::new();
        self.users.retain(|&user, devices| {
            let start = gone.len();
            let left = devices.retain(|d| now_s.saturating_sub(d.seen) <= lifetime, &mut gone);
            forgotten.extend(gone[start..].iter().map(|d| (user, d.tag)));
            left
        });
        self.count -= forgotten.len();
        for (user, tag) in forgotten {
            self.forget(user, tag, events);
        }
        shrink(&mut self.users);
        shrink(&mut self.failing);
    }

    fn bytes(&self) -> usize {
        table_bytes(&self.users)
            + self.users.values().map(Devices::heap_bytes).sum::<usize>()
            + table_bytes(&self.failing)
            + self.episodes.bytes()
    }
}

/// 127.0.0.0/8 and ::1 (also as an IPv4-mapped address).
fn is_loopback(address: &str) -> bool {
    let address = address.strip_prefix("::ffff:").unwrap_or(address);
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
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
            Ok(ticket)
        };
        (verdict, events)
    }

    /// An admitted login refused for a reason of the client's, that cost the broker thread
    /// `cost`.
    pub fn failed(&mut self, ticket: &Ticket<'_>, cost: Duration, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// What a bcrypt cost 10 check costs the broker thread.
    const BCRYPT: Duration = Duration::from_millis(60);

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            user_failures: 5,
            address_failures: 8,
            max: Duration::from_secs(8),
            ..ThrottleConfig::default()
        }
    }

    fn login<'a>(user: &'a str, client: &'a str) -> Login<'a> {
        Login {
            username: user,
            client_id: client.as_bytes(),
            address: None,
        }
    }

    fn from<'a>(user: &'a str, client: &'a str, address: &'a str) -> Login<'a> {
        Login {
            address: Some(address),
            ..login(user, client)
        }
    }

    /// One login through the throttle: `None` when refused unchecked, else whether it
    /// was accepted (`right`), with what it cost.
    fn attempt(
        t: &mut Throttle,
        l: Login<'_>,
        right: bool,
        cost: Duration,
        now: Instant,
    ) -> Option<bool> {
        let (verdict, _) = t.admit(l, now);
        let ticket = verdict.ok()?;
        if right {
            t.succeeded(&ticket, now);
        } else {
            t.failed(&ticket, cost, now);
        }
        Some(right)
    }

    fn admitted(t: &mut Throttle, l: Login<'_>, now: Instant) -> Result<bool, Refused> {
        t.admit(l, now).0.map(|ticket| ticket.known())
    }

    #[test]
    fn a_typo_then_the_right_password_is_admitted_at_once() {
        let mut t = Throttle::new(config(), Instant::now());
        let now = Instant::now();
        // A new device: its costly failure blocks the username for others...
        assert_eq!(
            attempt(&mut t, login("alice", "laptop"), false, BCRYPT, now),
            Some(false)
        );
        assert_eq!(
            admitted(&mut t, login("alice", "attacker"), now + MS),
            Err(Refused::Username)
        );
        // ...not for its own first retry.
        assert_eq!(
            attempt(&mut t, login("alice", "laptop"), true, BCRYPT, now + MS),
            Some(true)
        );
        // A second failure in a row of the same device gets no such retry.
        let later = now + Duration::from_secs(5);
        attempt(&mut t, login("bob", "laptop"), false, BCRYPT, later);
        attempt(&mut t, login("bob", "laptop"), false, BCRYPT, later + MS);
        assert_eq!(
            admitted(&mut t, login("bob", "laptop"), later + 2 * MS),
            Err(Refused::Username)
        );
        // The block is the cost times 200 / 20 - 1 = 9: one key gets half the budget at most.
        assert!(admitted(&mut t, login("bob", "laptop"), later + MS + 9 * BCRYPT).is_ok());
    }

    #[test]
    fn a_known_device_is_never_refused_by_other_devices() {
        let mut t = Throttle::new(config(), Instant::now());
        let t0 = Instant::now();
        assert_eq!(
            attempt(&mut t, from("alice", "phone", "10.0.0.1"), true, BCRYPT, t0),
            Some(true)
        );
        // A flood from new devices and one address: the username, the address and the
        // budget are all spent.
        let mut now = t0 + MS;
        let mut checked = 0;
        let mut last_checked = now;
        for i in 0..10_000 {
            let device = format!("attacker-{i}");
            if attempt(
                &mut t,
                from("alice", &device, "10.0.0.66"),
                false,
                BCRYPT,
                now,
            )
            .is_some()
            {
                checked += 1;
                last_checked = now;
                now += BCRYPT;
            }
            now += MS;
            // The owner's phone, from the attacker's address too, at any moment.
            if i % 100 == 0 {
                assert_eq!(
                    admitted(&mut t, from("alice", "phone", "10.0.0.66"), now),
                    Ok(true)
                );
            }
        }
        assert!(checked < 60, "{checked} checked");
        assert_eq!(
            admitted(&mut t, from("alice", "new-tablet", "10.0.0.2"), now),
            Err(Refused::Username)
        );
        assert_eq!(
            admitted(&mut t, from("carol", "new", "10.0.0.66"), last_checked + MS),
            Err(Refused::Address)
        );
        // The phone's own typo, then the right password at once.
        assert_eq!(
            attempt(&mut t, login("alice", "phone"), false, BCRYPT, now),
            Some(false)
        );
        assert_eq!(
            attempt(&mut t, login("alice", "phone"), true, BCRYPT, now),
            Some(true)
        );
    }

    #[test]
    fn a_known_device_is_limited_by_its_own_failures_only() {
        let mut t = Throttle::new(config(), Instant::now());
        let now = Instant::now();
        attempt(&mut t, login("alice", "phone"), true, BCRYPT, now);
        // First failure and first retry: free.
        attempt(&mut t, login("alice", "phone"), false, BCRYPT, now);
        assert_eq!(admitted(&mut t, login("alice", "phone"), now), Ok(true));
        attempt(&mut t, login("alice", "phone"), false, BCRYPT, now);
        // The second failure in a row blocks it for 9 times the cost.
        assert_eq!(
            admitted(&mut t, login("alice", "phone"), now + 539 * MS),
            Err(Refused::Device)
        );
        assert_eq!(
            admitted(&mut t, login("alice", "tablet"), now + MS),
            Ok(false),
            "not others"
        );
        assert_eq!(
            admitted(&mut t, login("alice", "phone"), now + 540 * MS),
            Ok(true)
        );
        // From `user_failures` in a row, the growing block, logged once.
        let mut at = now + Duration::from_secs(1);
        let mut started = Vec::new();
        for _ in 0..3 {
            let (verdict, _) = t.admit(login("alice", "phone"), at);
            started.extend(t.failed(&verdict.unwrap(), MS, at));
            at += Duration::from_secs(10);
        }
        assert_eq!(
            started,
            [Event::Started {
                kind: KeyKind::Device,
                key: "phone".into(),
                user: Some("alice".into()),
                failures: 5,
                blocked_for: Duration::from_secs(1),
            }]
        );
        assert_eq!(
            t.stats().usernames,
            0,
            "a known device's failures are its own"
        );
        // Its success ends the episode and its failures.
        let (verdict, _) = t.admit(login("alice", "phone"), at);
        let ended = t.succeeded(&verdict.unwrap(), at);
        assert!(
            matches!(
                &ended[..],
                [Event::Ended {
                    kind: KeyKind::Device,
                    refused: 0,
                    ..
                }]
            ),
            "{ended:?}"
        );
    }

    #[test]
    fn known_devices_failing_again_share_a_second_budget() {
        let mut t = Throttle::new(config(), Instant::now());
        let t0 = Instant::now();
        let devices: Vec<String> = (0..50).map(|i| format!("id{i}")).collect();
        for d in &devices {
            attempt(&mut t, login("alice", d), true, BCRYPT, t0);
        }
        // Someone presents known client ids with wrong passwords, round and round.
        let mut now = t0;
        let mut refused_by_budget = 0;
        let mut all_events = Vec::new();
        for round in 0..20 {
            for d in &devices {
                let (verdict, events) = t.admit(login("alice", d), now);
                all_events.extend(events);
                match verdict {
                    Ok(ticket) => {
                        all_events.extend(t.failed(&ticket, BCRYPT, now));
                        now += BCRYPT;
                    }
                    Err(Refused::KnownBudget) => refused_by_budget += 1,
                    Err(_) => {}
                }
                now += MS;
            }
            assert!(round < 19 || refused_by_budget > 0);
        }
        let elapsed = now - t0;
        let charged = t.stats().known_failed;
        // Two free tries per device, then 20% of the time (plus one second's worth).
        let bound = BCRYPT * 2 * 50 + elapsed / 5 + Duration::from_millis(200) + BCRYPT;
        assert!(charged <= bound, "{charged:?} > {bound:?} in {elapsed:?}");
        assert_eq!(
            all_events
                .iter()
                .filter(|e| matches!(e, Event::BudgetSpent { known: true, .. }))
                .count(),
            1,
            "{all_events:?}"
        );
        // New devices are not refused by the known devices' budget.
        assert!(admitted(&mut t, login("bob", "x"), now).is_ok());
    }

    #[test]
    fn the_budget_bounds_failed_logins_of_new_devices() {
        let mut t = Throttle::new(config(), Instant::now());
        let t0 = Instant::now();
        let mut now = t0;
        let mut events = Vec::new();
        let mut checked = 0u32;
        // A different username and client id each time: no key limit applies.
        for i in 0..200_000u32 {
            let user = format!("user{i}");
            let (verdict, e) = t.admit(login(&user, "x"), now);
            events.extend(e);
            if let Ok(ticket) = verdict {
                events.extend(t.failed(&ticket, BCRYPT, now));
                now += BCRYPT;
                checked += 1;
            }
            now += Duration::from_micros(50);
            if now - t0 > Duration::from_secs(10) {
                break;
            }
        }
        let elapsed = now - t0;
        let spent = BCRYPT * checked;
        assert_eq!(t.stats().new_failed, spent);
        let bound = elapsed / 5 + Duration::from_millis(200) + BCRYPT;
        assert!(spent <= bound, "{spent:?} in {elapsed:?}");
        assert!(
            spent >= elapsed / 5 - BCRYPT * 2,
            "the budget is usable: {spent:?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(
                    e,
                    Event::BudgetSpent {
                        known: false,
                        percent: 20
                    }
                ))
                .count(),
            1,
            "one line per episode"
        );
        assert!(t.stats().refused(Refused::Budget) > 1_000);
        assert_eq!(t.stats().refused(Refused::Username), 0);
        // A new device gets in once the bucket refills (the debt is one login's at most: 60 ms
        // at 20% takes 0.3 s).
        assert_eq!(admitted(&mut t, login("x", "y"), now), Err(Refused::Budget));
        let later = now + Duration::from_secs(2);
        let (verdict, ended) = t.admit(login("x", "y"), later);
        assert!(verdict.is_ok());
        assert!(
            matches!(&ended[..], [Event::BudgetRefilled { known: false, refused }] if *refused > 0),
            "{ended:?}"
        );
    }

    #[test]
    fn successes_are_never_charged() {
        let mut t = Throttle::new(config(), Instant::now());
        let now = Instant::now();
        for i in 0..1_000 {
            let user = format!("user{i}");
            assert_eq!(
                attempt(&mut t, login(&user, "c"), true, BCRYPT, now),
                Some(true)
            );
        }
        assert_eq!(t.stats().new_failed, Duration::ZERO);
        assert_eq!(t.stats().known_devices, 1_000);
    }

    #[test]
    fn every_spelling_of_a_name_counts_for_one_account() {
        let mut t = Throttle::new(ThrottleConfig::default(), Instant::now());
        let mut now = Instant::now();
        for i in 0..20 {
            let spelling = ["alice", "Alice", "ALICE ", "aLiCe"][i % 4];
            let device = format!("d{i}");
            let (verdict, _) = t.admit(login(spelling, &device), now);
            t.failed(&verdict.unwrap(), MS, now);
            now += 10 * MS;
        }
        assert_eq!(
            admitted(&mut t, login("alice", "other"), now),
            Err(Refused::Username)
        );
    }

    #[test]
    fn username_blocking_starts_only_after_many_failures() {
        let mut t = Throttle::new(ThrottleConfig::default(), Instant::now());
        let t0 = Instant::now();
        let mut now = t0;
        // Cheap failures (a fast hash), each from another device.
        for i in 0..19 {
            let device = format!("d{i}");
            let (verdict, _) = t.admit(login("alice", &device), now);
            assert!(t.failed(&verdict.unwrap(), MS, now).is_empty());
            now += 10 * MS;
        }
        assert!(admitted(&mut t, login("alice", "other"), now).is_ok());
        let (verdict, _) = t.admit(login("alice", "d19"), now);
        let events = t.failed(&verdict.unwrap(), MS, now);
        assert_eq!(
            events,
            [Event::Started {
                kind: KeyKind::Username,
                key: "alice".into(),
                user: None,
                failures: 20,
                blocked_for: Duration::from_secs(1),
            }]
        );
        assert_eq!(
            admitted(&mut t, login("alice", "other"), now + 999 * MS),
            Err(Refused::Username)
        );
        assert!(
            admitted(&mut t, login("bob", "other"), now).is_ok(),
            "other users"
        );
        // 21st: 2 s, 22nd: 4 s...; logged once per episode.
        let mut at = now + Duration::from_secs(1);
        for (i, expected) in [2, 4, 8].into_iter().enumerate() {
            let device = format!("e{i}");
            let (verdict, _) = t.admit(login("alice", &device), at);
            assert!(t.failed(&verdict.unwrap(), MS, at).is_empty());
            assert_eq!(
                admitted(
                    &mut t,
                    login("alice", "other"),
                    at + Duration::from_secs(expected) - MS
                ),
                Err(Refused::Username)
            );
            at += Duration::from_secs(expected);
        }
        // No success resets it (the owner's known device proves nothing about the others)...
        attempt(&mut t, login("alice", "phone"), true, MS, at);
        assert_eq!(t.stats().usernames, 1);
        // ...it is forgotten once the failures stop, with one line.
        let ended = t.sweep(at + Duration::from_secs(3600));
        assert!(
            matches!(&ended[..], [Event::Ended { kind: KeyKind::Username, key, refused: 4, .. }] if key == "alice"),
            "{ended:?}"
        );
        assert_eq!(t.stats().usernames, 0);
    }

    #[test]
    fn an_address_is_throttled_across_usernames_and_not_reset_by_a_success() {
        let mut t = Throttle::new(config(), Instant::now());
        let now = Instant::now();
        for i in 0..8u32 {
            let user = format!("u{i}");
            assert!(
                attempt(
                    &mut t,
                    from(&user, "c", "10.0.0.9"),
                    false,
                    MS,
                    now + i * 10 * MS
                )
                .is_some()
            );
        }
        assert_eq!(
            admitted(&mut t, from("someone", "c", "10.0.0.9"), now + 100 * MS),
            Err(Refused::Address)
        );
        assert!(admitted(&mut t, from("someone", "c", "10.0.0.10"), now + 100 * MS).is_ok());
        // The attacker's own account logs in from there (after the block): nothing reset.
        let later = now + Duration::from_secs(2);
        assert_eq!(
            attempt(&mut t, from("mallory", "m", "10.0.0.9"), true, MS, later),
            Some(true)
        );
        attempt(&mut t, from("u9", "c", "10.0.0.9"), false, MS, later);
        assert_eq!(
            admitted(&mut t, from("someone", "c", "10.0.0.9"), later + MS),
            Err(Refused::Address),
            "the 9th failure blocks for 2 s: the count went on"
        );
    }

    #[test]
    fn loopback_addresses_are_never_throttled() {
        let mut t = Throttle::new(config(), Instant::now());
        let now = Instant::now();
        for address in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            for i in 0..20u32 {
                let user = format!("{address}-{i}");
                attempt(
                    &mut t,
                    from(&user, "c", address),
                    false,
                    MS,
                    now + i * 10 * MS,
                );
            }
            assert!(
                admitted(
                    &mut t,
                    from("fresh", "c", address),
                    now + Duration::from_secs(1)
                )
                .is_ok()
            );
        }
        assert_eq!(t.stats().addresses, 0);
    }

    #[test]
    fn the_address_limit_can_be_off() {
        let mut t = Throttle::new(
            ThrottleConfig {
                address_failures: 0,
                ..config()
            },
            Instant::now(),
        );
        let now = Instant::now();
        for i in 0..20u32 {
            attempt(
                &mut t,
                from(&format!("u{i}"), "c", "10.0.0.9"),
                false,
                MS,
                now + i * 10 * MS,
            );
        }
        assert!(
            admitted(
                &mut t,
                from("fresh", "c", "10.0.0.9"),
                now + Duration::from_secs(1)
            )
            .is_ok()
        );
    }

    #[test]
    fn disabled_throttle_admits_everything_and_keeps_nothing() {
        let mut t = Throttle::new(
            ThrottleConfig {
                user_failures: 0,
                ..config()
            },
            Instant::now(),
        );
        let now = Instant::now();
        for _ in 0..100 {
            attempt(
                &mut t,
                from("alice", "c", "10.0.0.1"),
                false,
                Duration::from_secs(1),
                now,
            );
        }
        attempt(&mut t, from("alice", "c", "10.0.0.1"), true, MS, now);
        assert!(admitted(&mut t, from("alice", "d", "10.0.0.1"), now).is_ok());
        assert_eq!(
            t.stats().usernames + t.stats().addresses + t.stats().known_devices,
            0
        );
        assert_eq!(t.stats().new_failed, Duration::ZERO);
    }

    #[test]
    fn known_devices_expire_and_are_bounded_per_user_and_in_all() {
        let config = ThrottleConfig {
            known_devices: 20,
            known_device_lifetime: Duration::from_secs(3600),
            ..config()
        };
        let mut t = Throttle::new(config, Instant::now());
        let t0 = Instant::now();
        // One account with many client ids keeps only its own last 8.
        for i in 0..30u32 {
            let device = format!("m{i}");
            attempt(&mut t, login("mallory", &device), true, MS, t0 + i * MS);
        }
        assert_eq!(t.stats().known_devices, DEVICES_PER_USER);
        assert_eq!(admitted(&mut t, login("mallory", "m29"), t0), Ok(true));
        assert_eq!(admitted(&mut t, login("mallory", "m0"), t0), Ok(false));
        for i in 0..12u32 {
            let user = format!("u{i}");
            attempt(&mut t, login(&user, "c"), true, MS, t0);
        }
        assert_eq!(t.stats().known_devices, 20);
        // Full: a new user's device is not remembered, nobody's is pushed out.
        attempt(&mut t, login("late", "c"), true, MS, t0);
        assert_eq!(admitted(&mut t, login("late", "c"), t0), Ok(false));
        assert_eq!(admitted(&mut t, login("u0", "c"), t0), Ok(true));
        // The same username with another client id is another device.
        assert_eq!(admitted(&mut t, login("u0", "d"), t0), Ok(false));
        // Full: a known user's new device is not remembered either while none of its own
        // expired. A known device's failures are kept beside it...
        let half = t0 + Duration::from_secs(1800);
        attempt(&mut t, login("u1", "d"), true, MS, half);
        assert_eq!(admitted(&mut t, login("u1", "d"), half), Ok(false));
        attempt(&mut t, login("u1", "c"), false, BCRYPT, half);
        attempt(&mut t, login("u1", "c"), false, BCRYPT, half);
        assert_eq!(t.known.failing.len(), 1);
        // After the lifetime a device is new again, and the sweep frees its room.
        let later = t0 + Duration::from_secs(3601);
        assert_eq!(admitted(&mut t, login("u0", "c"), later), Ok(false));
        t.sweep(later);
        assert_eq!(t.stats().known_devices, 0);
        assert_eq!(t.known.failing.len(), 0, "...and go with it");
        attempt(&mut t, login("late", "c"), true, MS, later);
        assert_eq!(admitted(&mut t, login("late", "c"), later), Ok(true));
    }

    #[test]
    fn a_users_devices_expire_one_by_one() {
        let config = ThrottleConfig {
            known_device_lifetime: Duration::from_secs(3600),
            ..config()
        };
        let mut t = Throttle::new(config, Instant::now());
        let t0 = Instant::now();
        for (i, device) in ["a", "b", "c"].into_iter().enumerate() {
            attempt(
                &mut t,
                login("alice", device),
                true,
                MS,
                t0 + Duration::from_secs(1000) * i as u32,
            );
        }
        let later = t0 + Duration::from_secs(4500);
        t.sweep(later);
        assert_eq!(t.stats().known_devices, 2);
        assert_eq!(admitted(&mut t, login("alice", "a"), later), Ok(false));
        assert_eq!(admitted(&mut t, login("alice", "b"), later), Ok(true));
        t.sweep(later + Duration::from_secs(1000));
        assert_eq!(t.stats().known_devices, 1);
        assert_eq!(admitted(&mut t, login("alice", "c"), later), Ok(true));
    }

    #[test]
    fn memory_is_bounded_in_bytes_whatever_the_names() {
        let config = ThrottleConfig {
            user_failures: 10,
            address_failures: 10,
            ..ThrottleConfig::default()
        };
        let mut t = Throttle::new(config, Instant::now());
        let now = Instant::now();
        let long = "x".repeat(1_000);
        // More keys than kept, with 1 KB usernames (100 MB if they were kept), from as many
        // addresses; cheap
        // failures so no budget stops them (the budget is tested above); and as many known
        // devices as allowed, one user each.
        let mut known = 0;
        for i in 0..(MAX_KEYS + 1_000) {
            let user = format!("{long}{i}");
            let address = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let device = format!("{long}-device");
            for _ in 0..if i < 2 * MAX_EPISODES { 20 } else { 1 } {
                let (verdict, _) = t.admit(from(&user, &device, &address), now);
                if let Ok(ticket) = verdict {
                    t.failed(&ticket, Duration::ZERO, now);
                }
            }
            let (verdict, _) = t.admit(login(&user, "c"), now);
            if let Ok(ticket) = verdict {
                t.succeeded(&ticket, now);
                known += 1;
            }
        }
        let stats = t.stats();
        assert_eq!((stats.usernames, stats.addresses), (MAX_KEYS, MAX_KEYS));
        assert_eq!(stats.known_devices, 100_000.min(known));
        // Documented (README, Attacks): 14.4 MB at most with the defaults, against
        // gigabytes when whole names were the keys.
        println!(
            "throttle state: {} bytes (usernames {}, addresses {}, known devices {})",
            stats.bytes,
            t.users.bytes(),
            t.addresses.bytes(),
            t.known.bytes()
        );
        assert!(stats.bytes < 15_000_000, "{} bytes", stats.bytes);
        let episodes = t.users.episodes.0.len() + t.addresses.episodes.0.len();
        assert_eq!(episodes, 2 * MAX_EPISODES, "named episodes are capped");
        assert!(
            t.users
                .episodes
                .0
                .values()
                .all(|e| e.name.len() <= NAME_BYTES + 3)
        );
    }
}
