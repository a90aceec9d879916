//! The chat rate: a token bucket per user id, shared by all of the user's connections on this
//! broker. Pure: the time (milliseconds) is passed in.
//!
//! Tokens are held in thousandths, so a bucket refilled at `rate` messages per second gains
//! exactly `rate` thousandths per millisecond: no rounding, whatever the gap between two
//! messages. A bucket is full again after `burst / rate` seconds of quiet, and a full bucket is
//! the same as none: `prune` forgets those, so the map holds only users who sent lately.

use std::collections::HashMap;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Thousandths of a token in one token.
const MILLI: u64 = 1_000;

/// `chat_rate`, `chat_burst`, `chat_group_weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Messages per second a user's bucket refills with; 0: no limit.
    pub rate: u32,
    /// The bucket's size: messages a quiet user may send at once.
    pub burst: u32,
    /// Tokens a group message takes (an inbox message takes one).
    pub group_weight: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            rate: 5,
            burst: 20,
            group_weight: 2,
        }
    }
}

impl RateConfig {
    pub fn is_off(&self) -> bool {
        self.rate == 0
    }
}

/// What `Rates::take` says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Within the limit.
    Yes,
    /// Within the limit again, after `refused` messages refused in the episode that ends here.
    Again { refused: u64 },
    /// Over the limit; `first` for the first refusal of an episode (the one to log).
    No { first: bool },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token.
    milli: u64,
    /// When `milli` was last brought up to date.
    at_ms: i64,
    /// Messages refused since the last one let through (0: not in an episode).
    refused: u64,
}

/// The buckets of the users who sent lately.
pub struct Rates {
    config: RateConfig,
    buckets: Map<Box<str>, Bucket>,
}

impl Rates {
    pub fn new(config: RateConfig) -> Rates {
        Rates {
            config,
            buckets: Map::default(),
        }
    }

    pub fn config(&self) -> &RateConfig {
        &self.config
    }

    /// One message of `weight` tokens from `user` at `now_ms`. A clock that went back counts
    /// as no time passed (the bucket is never emptied by a clock step).
    pub fn take(&mut self, user: &str, weight: u32, now_ms: i64) -> Take {
        let RateConfig { rate, burst, .. } = self.config;
        if rate == 0 {
            return Take::Yes;
        }
        let capacity = u64::from(burst) * MILLI;
        let cost = u64::from(weight) * MILLI;
        let bucket = match self.buckets.get_mut(user) {
            Some(bucket) => {
                let elapsed = now_ms.saturating_sub(bucket.at_ms).max(0) as u64;
                bucket.milli = capacity.min(
                    bucket
                        .milli
                        .saturating_add(elapsed.saturating_mul(u64::from(rate))),
                );
                bucket.at_ms = now_ms;
                bucket
            }
            None => self.buckets.entry(user.into()).or_insert(Bucket {
                milli: capacity,
                at_ms: now_ms,
                refused: 0,
            }),
        };
        if bucket.milli >= cost {
            bucket.milli -= cost;
            match std::mem::take(&mut bucket.refused) {
                0 => Take::Yes,
                refused => Take::Again { refused },
            }
        } else {
            bucket.refused += 1;
            Take::No {
                first: bucket.refused == 1,
            }
        }
    }

    /// Forgets the buckets that are full again at `now_ms` (as good as none), and returns the
    /// episodes that ended with them: `(user, refused)`.
    pub fn prune(&mut self, now_ms: i64) -> Vec<(Box<str>, u64)> {
        let RateConfig { rate, burst, .. } = self.config;
        let capacity = u64::from(burst) * MILLI;
        let mut ended = Vec::new();
        self.buckets.retain(|user, bucket| {
            let elapsed = now_ms.saturating_sub(bucket.at_ms).max(0) as u64;
            let full = bucket
                .milli
                .saturating_add(elapsed.saturating_mul(u64::from(rate)))
                >= capacity;
            if full && bucket.refused > 0 {
                ended.push((user.clone(), bucket.refused));
            }
            !full
        });
        ended
    }

    /// Users with a bucket held (not full).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(rate: u32, burst: u32) -> Rates {
        Rates::new(RateConfig {
            rate,
            burst,
            group_weight: 3,
        })
    }

    /// How many of `n` messages sent at the same instant go through.
    fn through(r: &mut Rates, user: &str, n: usize, weight: u32, at: i64) -> usize {
        (0..n)
            .filter(|_| matches!(r.take(user, weight, at), Take::Yes | Take::Again { .. }))
            .count()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut r = rates(5, 20);
        assert_eq!(through(&mut r, "1", 200, 1, 0), 20);
        // 5 per second: 200 ms gives one token, 100 ms only half of one.
        assert_eq!(through(&mut r, "1", 10, 1, 100), 0);
        assert_eq!(through(&mut r, "1", 10, 1, 200), 1);
        assert_eq!(through(&mut r, "1", 10, 1, 1_200), 5);
        // Ten quiet seconds fill it, never beyond the burst.
        assert_eq!(through(&mut r, "1", 100, 1, 11_200), 20);
    }

    #[test]
    fn users_have_buckets_of_their_own() {
        let mut r = rates(1, 3);
        assert_eq!(through(&mut r, "1", 10, 1, 0), 3);
        assert_eq!(through(&mut r, "2", 10, 1, 0), 3);
    }

    #[test]
    fn group_messages_take_their_weight() {
        let mut r = rates(1, 10);
        assert_eq!(through(&mut r, "1", 10, 3, 0), 3);
        // One token left: a group message is refused (the episode began with the 4th), an
        // inbox message passes.
        assert_eq!(r.take("1", 3, 0), Take::No { first: false });
        assert_eq!(r.take("1", 1, 0), Take::Again { refused: 8 });
    }

    #[test]
    fn an_episode_is_said_once_and_ends_with_a_message_let_through() {
        let mut r = rates(1, 1);
        assert_eq!(r.take("1", 1, 0), Take::Yes);
        assert_eq!(r.take("1", 1, 0), Take::No { first: true });
        assert_eq!(r.take("1", 1, 10), Take::No { first: false });
        assert_eq!(r.take("1", 1, 20), Take::No { first: false });
        assert_eq!(r.take("1", 1, 1_000), Take::Again { refused: 3 });
        assert_eq!(r.take("1", 1, 1_000), Take::No { first: true });
    }

    #[test]
    fn off_limits_nothing() {
        let mut r = rates(0, 0);
        assert_eq!(through(&mut r, "1", 10_000, 1, 0), 10_000);
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn a_clock_going_back_neither_fills_nor_empties() {
        let mut r = rates(1, 2);
        assert_eq!(through(&mut r, "1", 2, 1, 1_000_000), 2);
        // An hour back: nothing gained, and the bucket starts over from there.
        assert_eq!(through(&mut r, "1", 2, 1, 1_000_000 - 3_600_000), 0);
        assert_eq!(through(&mut r, "1", 2, 1, 1_000_000 - 3_600_000 + 1_000), 1);
    }

    #[test]
    fn full_buckets_are_forgotten_and_their_episodes_end() {
        let mut r = rates(2, 4);
        through(&mut r, "1", 10, 1, 0);
        through(&mut r, "2", 1, 1, 0);
        assert_eq!(r.tracked(), 2);
        // "2" is full after 500 ms, "1" after 2 s.
        assert!(r.prune(600).is_empty());
        assert_eq!(r.tracked(), 1);
        assert_eq!(r.prune(2_000), vec![("1".into(), 6)]);
        assert_eq!(r.tracked(), 0);
        assert_eq!(through(&mut r, "1", 10, 1, 2_000), 4);
    }
}
