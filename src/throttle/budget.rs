//! The token buckets of broker-thread time that failed logins draw on.

use super::*;

/// A token bucket of broker-thread time, in microseconds.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) known: bool,
    pub(super) percent: u32,
    pub(super) level: i64,
    pub(super) last: Instant,
    /// Refusals in the episode going on, if one is.
    pub(super) episode: Option<u64>,
    pub(super) charged: Duration,
}

impl Budget {
    pub(super) fn new(known: bool, percent: u32, now: Instant) -> Self {
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
    pub(super) fn burst(&self) -> i64 {
        10_000 * i64::from(self.percent)
    }

    pub(super) fn refill(&mut self, now: Instant, events: &mut Vec<Event>) {
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

    pub(super) fn allows(&mut self, now: Instant, events: &mut Vec<Event>) -> bool {
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

    pub(super) fn charge(&mut self, cost: Duration, now: Instant, events: &mut Vec<Event>) {
        self.refill(now, events);
        self.level -= cost.as_micros().min(1 << 40) as i64;
        self.charged += cost;
    }
}
