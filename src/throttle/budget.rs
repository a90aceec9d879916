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
    /// Logins admitted on this budget whose outcome is not known yet (Mosquitto 2.1 checks
    /// several at once on login threads): each holds back the cost of the last failure, so
    /// that concurrent checks cannot overdraw the budget by more than one.
    pub(super) in_flight: i64,
    /// The last failure's cost, in microseconds.
    pub(super) typical: i64,
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
            in_flight: 0,
            typical: 0,
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
        if self.level - self.in_flight * self.typical > 0 {
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
        let micros = cost.as_micros().min(1 << 40) as i64;
        self.level -= micros;
        self.typical = micros;
        self.charged += cost;
    }

    /// A login admitted on this budget is being checked.
    pub(super) fn reserve(&mut self) {
        self.in_flight += 1;
    }

    /// Its outcome is known (charged or not).
    pub(super) fn release(&mut self) {
        self.in_flight = (self.in_flight - 1).max(0);
    }
}
