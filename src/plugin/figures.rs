//! The figures read from the parts into one snapshot, for `getStats`, the
//! `$SYS/broker/chat-auth/` topics and the Prometheus endpoint.

use super::{Action, Plugin, State, now_ms};
use crate::control;
use crate::figures::{self, Snapshot};
use crate::metrics;
use crate::store::Store;
use std::sync::atomic::Ordering;

/// Whether a snapshot reads the throttle's figures (`getStats` only: it walks the
/// throttle's tables).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Throttle {
    Read,
    Skip,
}

impl Plugin {
    /// Every figure now, from the parts that hold them.
    pub(super) fn snapshot(&self, state: &State, throttle: Throttle) -> Snapshot {
        let stats = state.registry.stats();
        Snapshot {
            counters: state.counters.clone(),
            sessions: figures::Sessions {
                sessions: stats.sessions as u64,
                online: stats.online as u64,
                offline: stats.offline as u64,
                restored: stats.restored as u64,
                users: stats.users as u64,
                refreshes: stats.refreshes,
                refresh_failures: stats.refresh_failures,
                unvalidated_refused: stats.unvalidated_refused,
            },
            throttle: (throttle == Throttle::Read).then(|| {
                use crate::throttle::Refused;
                let s = self.auth.throttle_stats();
                figures::Throttle {
                    usernames: s.usernames as u64,
                    addresses: s.addresses as u64,
                    known_devices: s.known_devices as u64,
                    bytes: s.bytes as u64,
                    new_failed_us: s.new_failed.as_micros() as u64,
                    known_failed_us: s.known_failed.as_micros() as u64,
                    refused_budget: s.refused(Refused::Budget),
                    refused_known_budget: s.refused(Refused::KnownBudget),
                    refused_username: s.refused(Refused::Username),
                    refused_address: s.refused(Refused::Address),
                    refused_device: s.refused(Refused::Device),
                }
            }),
            logins_cached: self.auth.cached_logins() as u64,
            login_times: self
                .auth
                .times
                .snapshot()
                .into_iter()
                .map(|(format, t)| figures::LoginTime {
                    format,
                    logins: t.logins,
                    hash_us: t.hash.as_micros() as u64,
                    database_us: t.database.as_micros() as u64,
                })
                .collect(),
            database_down: self.mysql.as_ref().is_some_and(|m| m.users.db().is_down())
                || self
                    .postgres
                    .as_ref()
                    .is_some_and(|p| p.users.db().is_down()),
            storage: state.store.as_ref().map(storage),
            history: state.history.as_ref().map(|history| {
                let counters = &history.reader.counters;
                figures::History {
                    pages: counters.pages.load(Ordering::Relaxed),
                    failed: counters.failed.load(Ordering::Relaxed),
                    query_us: counters.query_micros.load(Ordering::Relaxed),
                    clients_tracked: history.limits.tracked() as u64,
                }
            }),
            limits: figures::Limits {
                rate_episodes: state.limits.rate_episodes,
                rate_users: state.limits.rate_users() as u64,
                connections_ended: state.limits.connections_ended,
                connected_users: state.limits.connected_users() as u64,
            },
        }
    }

    /// The figures `getStats` answers with.
    pub(super) fn stats(&self, state: &State) -> serde_json::Value {
        control::stats(&self.snapshot(state, Throttle::Read))
    }

    /// The figures, as retained messages under `$SYS/broker/chat-auth/` (at TICK).
    pub(super) fn publish_sys(&self, state: &mut State) {
        let snapshot = self.snapshot(state, Throttle::Skip);
        for (topic, value) in metrics::topics(&snapshot) {
            state.outbox.push(Action::Retain {
                topic,
                payload: value.into_bytes(),
            });
        }
    }
}

/// Storage's figures now.
pub(super) fn storage(store: &Store) -> figures::Storage {
    let usage = store.usage();
    let counters = &store.counters;
    let oldest = counters.oldest_unstored_ms.load(Ordering::Relaxed);
    figures::Storage {
        queued: usage.pending_records.load(Ordering::Relaxed),
        pending_bytes: usage.pending_bytes.load(Ordering::Relaxed),
        backlog_bytes: usage.backlog_bytes(),
        full: store.is_full(),
        rows_written: counters.rows_written.load(Ordering::Relaxed),
        batches: counters.batches.load(Ordering::Relaxed),
        failed_attempts: counters.failed_attempts.load(Ordering::Relaxed),
        rejected_rows: counters.rejected_rows.load(Ordering::Relaxed),
        backlog_age_ms: if oldest > 0 {
            (now_ms() - oldest).max(0) as u64
        } else {
            0
        },
    }
}
