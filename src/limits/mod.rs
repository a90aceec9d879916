//! Per-user limits, as the broker thread applies them: the chat rate (`rate`, a token bucket
//! per user id) and the connections each user holds (`connections`). The decisions are pure
//! (time passed in); this file says them in the log, once per episode.

pub mod connections;
pub mod rate;

use crate::chat::Kind;
use crate::chat::payload::Sender;
use crate::logging::printable;
use connections::{Admission, Connections, ConnectionsConfig};
use rate::{RateConfig, Rates, Take};

/// Why a chat message over its sender's rate is refused (a `chat.refused` reason; Mosquitto
/// 2.1 answers it "quota exceeded").
pub const RATE_LIMITED: &str = "rate-limited";

/// How often full buckets are forgotten (at TICK).
pub const PRUNE_EVERY_MS: i64 = 10_000;

/// The limits' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitsConfig {
    pub rate: RateConfig,
    pub connections: ConnectionsConfig,
}

/// The limits' state, on the broker thread.
pub struct Limits {
    rates: Rates,
    connections: Connections,
    /// Connections are followed (a limit, or presence).
    follow: bool,
    next_prune_ms: i64,
    /// Messages refused for the rate, all users.
    pub rate_refused: u64,
    /// Episodes of a user over the rate (their first refusals).
    pub rate_episodes: u64,
    /// Logins refused, and connections ended, for `max_connections_per_user`.
    pub connections_refused: u64,
    pub connections_ended: u64,
}

impl Limits {
    pub fn new(config: LimitsConfig, follow_connections: bool) -> Limits {
        Limits {
            rates: Rates::new(config.rate),
            connections: Connections::new(config.connections),
            follow: follow_connections || config.connections.max > 0,
            next_prune_ms: 0,
            rate_refused: 0,
            rate_episodes: 0,
            connections_refused: 0,
            connections_ended: 0,
        }
    }

    /// An accepted chat message of `kind` from `sender`, before it is stored: `Err` when over
    /// the sender's rate. Superusers and bridges (`Sender::Trusted`) are not limited: a
    /// relayed message was limited where it was sent.
    #[inline]
    pub fn chat(
        &mut self,
        sender: Sender<'_>,
        kind: Kind,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        let Sender::User(user) = sender else {
            return Ok(());
        };
        let weight = match kind {
            Kind::Chat => 1,
            Kind::GroupChat => self.rates.config().group_weight,
        };
        match self.rates.take(user, weight, now_ms) {
            Take::Yes => Ok(()),
            Take::Again { refused } => {
                log::info!(
                    "user id '{}' sends within chat_rate again ({refused} chat messages refused)",
                    printable(user)
                );
                Ok(())
            }
            Take::No { first } => {
                self.rate_refused += 1;
                if first {
                    self.rate_episodes += 1;
                    let config = self.rates.config();
                    log::warn!(
                        "user id '{}' sends chat messages faster than chat_rate {}/s (burst {}): \
                         refused until it slows down (said once)",
                        printable(user),
                        config.rate,
                        config.burst
                    );
                }
                Err(RATE_LIMITED)
            }
        }
    }

    /// At TICK: forgets the buckets full again, every `PRUNE_EVERY_MS`.
    pub fn tick(&mut self, now_ms: i64) {
        if now_ms < self.next_prune_ms || self.rates.tracked() == 0 {
            return;
        }
        self.next_prune_ms = now_ms + PRUNE_EVERY_MS;
        for (user, refused) in self.rates.prune(now_ms) {
            log::info!(
                "user id '{}' is within chat_rate again ({refused} chat messages refused)",
                printable(&user)
            );
        }
    }

    /// Users holding a rate bucket (sent lately).
    pub fn rate_users(&self) -> usize {
        self.rates.tracked()
    }

    /// Whether connections are followed.
    pub fn follows_connections(&self) -> bool {
        self.follow
    }

    /// A login of `user` (user id) as `client_id`, let in by its password: refused, let in,
    /// or let in with the user's oldest connection to end (its client id).
    pub fn admit(&mut self, user: &str, client_id: &[u8]) -> Result<Option<Box<[u8]>>, usize> {
        if !self.connections.limits() {
            return Ok(None);
        }
        match self.connections.admit(user, client_id) {
            Admission::Admit => Ok(None),
            Admission::Refuse { held } => {
                self.connections_refused += 1;
                Err(held)
            }
            Admission::AdmitEnding(oldest) => {
                self.connections.ending(&oldest);
                self.connections_ended += 1;
                Ok(Some(oldest))
            }
        }
    }

    /// A login let in (a CONNECT): `true` when it is the user's first connection.
    pub fn connected(&mut self, user: &str, client_id: &[u8], pointer: usize) -> bool {
        self.follow && self.connections.connected(user, client_id, pointer)
    }

    /// A connection ended: the user whose last connection it was.
    pub fn disconnected(&mut self, client_id: &[u8], pointer: usize) -> Option<Box<str>> {
        if !self.follow {
            return None;
        }
        self.connections.disconnected(client_id, pointer)
    }

    /// Users with a connection followed.
    pub fn connected_users(&self) -> usize {
        self.connections.users()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_senders_are_not_limited() {
        let config = LimitsConfig {
            rate: RateConfig {
                rate: 1,
                burst: 1,
                group_weight: 1,
            },
            ..Default::default()
        };
        let mut limits = Limits::new(config, false);
        for _ in 0..100 {
            assert_eq!(limits.chat(Sender::Trusted, Kind::Chat, 0), Ok(()));
        }
        assert_eq!(limits.chat(Sender::User("1"), Kind::Chat, 0), Ok(()));
        assert_eq!(
            limits.chat(Sender::User("1"), Kind::Chat, 0),
            Err(RATE_LIMITED)
        );
        assert_eq!(
            limits.chat(Sender::User("1"), Kind::GroupChat, 0),
            Err(RATE_LIMITED)
        );
        assert_eq!((limits.rate_refused, limits.rate_episodes), (2, 1));
    }

    #[test]
    fn group_messages_weigh_more() {
        let config = LimitsConfig {
            rate: RateConfig {
                rate: 1,
                burst: 6,
                group_weight: 3,
            },
            ..Default::default()
        };
        let mut limits = Limits::new(config, false);
        let sent = (0..10)
            .filter(|_| limits.chat(Sender::User("1"), Kind::GroupChat, 0).is_ok())
            .count();
        assert_eq!(sent, 2);
    }

    #[test]
    fn connections_are_followed_only_when_needed() {
        let mut limits = Limits::new(LimitsConfig::default(), false);
        assert!(!limits.connected("1", b"a", 1));
        assert_eq!(limits.connected_users(), 0);
        let mut limits = Limits::new(LimitsConfig::default(), true);
        assert!(limits.connected("1", b"a", 1));
        assert_eq!(limits.disconnected(b"a", 1), Some("1".into()));
    }

    #[test]
    fn the_oldest_connection_is_named_and_forgotten() {
        let config = LimitsConfig {
            connections: ConnectionsConfig {
                max: 1,
                policy: connections::Policy::Oldest,
            },
            ..Default::default()
        };
        let mut limits = Limits::new(config, false);
        limits.connected("1", b"a", 1);
        assert_eq!(limits.admit("1", b"b"), Ok(Some((*b"a").into())));
        limits.connected("1", b"b", 2);
        assert_eq!(limits.disconnected(b"a", 1), None);
        assert_eq!(limits.connections_ended, 1);
    }
}
