//! Per-key limits (usernames, client addresses) and the episodes named in the log.

use super::*;

/// The growing block of the `failures`-th failure for a `threshold`.
pub(super) fn growing_block(failures: u32, threshold: u32, config: &ThrottleConfig) -> Duration {
    if threshold == 0 || failures < threshold {
        return Duration::ZERO;
    }
    let doublings = (failures - threshold).min(30);
    config.base.saturating_mul(1 << doublings).min(config.max)
}

pub(super) fn duty_block(cost: Duration, config: &ThrottleConfig) -> Duration {
    if cost >= COSTLY {
        cost.saturating_mul(config.duty_factor())
    } else {
        Duration::ZERO
    }
}

/// A key being throttled: its name for the log and what it refused.
#[derive(Debug)]
pub(super) struct Episode {
    pub(super) name: Box<str>,
    pub(super) user: Option<Box<str>>,
    pub(super) refused: u64,
}

impl Episode {
    pub(super) fn bytes(&self) -> usize {
        self.name.len() + self.user.as_ref().map_or(0, |u| u.len()) + 2 * ALLOCATION_OVERHEAD
    }
}

/// Episodes of one kind, at most [`MAX_EPISODES`].
#[derive(Debug, Default)]
pub(super) struct Episodes(pub(super) Keyed<Episode>);

impl Episodes {
    pub(super) fn start(&mut self, key: u64, name: &str, user: Option<&str>) -> bool {
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

    pub(super) fn refused(&mut self, key: u64) {
        if let Some(episode) = self.0.get_mut(&key) {
            episode.refused += 1;
        }
    }

    pub(super) fn end(&mut self, kind: KeyKind, key: u64, events: &mut Vec<Event>) {
        if let Some(episode) = self.0.remove(&key) {
            events.push(Event::Ended {
                kind,
                key: episode.name.into(),
                user: episode.user.map(Into::into),
                refused: episode.refused,
            });
        }
    }

    pub(super) fn bytes(&self) -> usize {
        table_bytes(&self.0) + self.0.values().map(Episode::bytes).sum::<usize>()
    }
}

/// A username's or an address's failures (new devices only). 32 bytes.
#[derive(Debug)]
pub(super) struct Entry {
    /// Milliseconds after the clock's start.
    pub(super) blocked_until: u64,
    /// The device of the last failure, and its failures in a row.
    pub(super) last_device: u64,
    pub(super) failures: u32,
    /// Seconds after the clock's start.
    pub(super) last_failure: u32,
    pub(super) device_streak: u8,
}

#[derive(Debug)]
pub(super) struct Limiter {
    pub(super) kind: KeyKind,
    pub(super) threshold: u32,
    pub(super) entries: Keyed<Entry>,
    pub(super) episodes: Episodes,
}

impl Limiter {
    pub(super) fn new(kind: KeyKind, threshold: u32) -> Self {
        Limiter {
            kind,
            threshold,
            entries: Keyed::default(),
            episodes: Episodes::default(),
        }
    }

    pub(super) fn blocks(&mut self, key: u64, device: u64, now_ms: u64) -> bool {
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
    pub(super) fn failed(
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

    pub(super) fn sweep(
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

    pub(super) fn bytes(&self) -> usize {
        table_bytes(&self.entries) + self.episodes.bytes()
    }
}

/// Gives memory back after a flood.
pub(super) fn shrink<V>(map: &mut Keyed<V>) {
    if map.capacity() > 1024 && map.capacity() > 4 * map.len() {
        map.shrink_to_fit();
    }
}
