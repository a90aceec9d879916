//! Containing failures: a growing pause per user and path, and a breaker for the whole service.

use super::*;

/// After an error the service is left alone for a pause that doubles while it keeps failing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub(super) until: Option<Instant>,
    pub(super) next: Duration,
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

    /// Whether it had been failing.
    pub fn succeeded(&mut self) -> bool {
        let was_failing = self.until.is_some();
        self.until = None;
        self.next = FIRST_PAUSE;
        was_failing
    }

    /// Whether the last pause ended more than `LONGEST_PAUSE` ago (or none began): nothing
    /// worth remembering.
    pub(super) fn forgotten(&self, now: Instant) -> bool {
        self.until
            .is_none_or(|until| now.saturating_duration_since(until) > LONGEST_PAUSE)
    }
}

/// A question's fields as a fixed-size key: two keyed 64-bit hashes (SipHash under random
/// keys made at start), so a cached answer costs the same few bytes whatever the length of
/// its topic or username, and nobody can aim two questions at one key.
#[derive(Debug, Clone)]
pub struct Keys {
    pub(super) first: RandomState,
    pub(super) second: RandomState,
}

pub type Key = [u64; 2];

impl Default for Keys {
    fn default() -> Self {
        Keys {
            first: RandomState::new(),
            second: RandomState::new(),
        }
    }
}

impl Keys {
    pub fn key(&self, parts: &[&[u8]]) -> Key {
        let (mut first, mut second) = (self.first.build_hasher(), self.second.build_hasher());
        for part in parts {
            for hasher in [&mut first, &mut second] {
                hasher.write_usize(part.len());
                hasher.write(part);
            }
        }
        [first.finish(), second.finish()]
    }
}

/// Pauses per user (a key for the path and username): a 5xx or a timeout for one user's
/// question leaves that user alone for a while (1 s, doubling to 30 s while it goes on) and
/// nobody else. At most `capacity` users are remembered: those whose pause ended long ago go
/// first, then the one whose pause ends soonest.
#[derive(Debug)]
pub struct Pauses {
    pub(super) capacity: usize,
    pub(super) paused: HashMap<u64, Backoff>,
}

impl Pauses {
    pub fn new(capacity: usize) -> Pauses {
        Pauses {
            capacity,
            paused: HashMap::new(),
        }
    }

    pub fn pausing(&self, user: u64, now: Instant) -> Option<Duration> {
        self.paused.get(&user)?.pausing(now)
    }

    /// The pause that starts now for `user`.
    pub fn failed(&mut self, user: u64, now: Instant) -> Duration {
        if !self.paused.contains_key(&user) && self.paused.len() >= self.capacity {
            self.paused.retain(|_, backoff| !backoff.forgotten(now));
            if self.paused.len() >= self.capacity {
                let soonest = self
                    .paused
                    .iter()
                    .min_by_key(|(_, backoff)| backoff.until)
                    .map(|(user, _)| *user);
                if let Some(soonest) = soonest {
                    self.paused.remove(&soonest);
                }
            }
        }
        self.paused.entry(user).or_default().failed(now)
    }

    /// Whether `user` had been failing.
    pub fn succeeded(&mut self, user: u64) -> bool {
        self.paused.remove(&user).is_some()
    }

    pub fn len(&self) -> usize {
        self.paused.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paused.is_empty()
    }
}

/// The service as a whole: left alone for everyone (1 s, doubling to 30 s) only when it
/// could not be reached (no connection, no answer in time) for `UNREACHABLE_USERS`
/// different users in a row, with no answer between; once it is, one more such failure
/// (the first question after the pause) starts the next pause. Any answer, a 5xx too
/// (the service is there), closes it.
#[derive(Debug, Default)]
pub struct Breaker {
    /// The users it could not be reached for since its last answer.
    pub(super) streak: Vec<u64>,
    pub(super) backoff: Backoff,
}

impl Breaker {
    pub fn pausing(&self, now: Instant) -> Option<Duration> {
        self.backoff.pausing(now)
    }

    /// The service could not be reached for `user`: `Some(pause)` when the pause for
    /// everyone starts.
    pub fn unreachable(&mut self, user: u64, now: Instant) -> Option<Duration> {
        if !self.streak.contains(&user) {
            self.streak.push(user);
        }
        let open = self.backoff.until.is_some();
        (open || self.streak.len() >= UNREACHABLE_USERS).then(|| {
            self.streak.clear();
            self.backoff.failed(now)
        })
    }

    /// The service answered: whether it had been left alone.
    pub fn answered(&mut self) -> bool {
        self.streak.clear();
        self.backoff.succeeded()
    }
}
