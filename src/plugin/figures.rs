//! The figures: `getStats`, the `$SYS/broker/chat-auth/` topics and the Prometheus gauges.

use super::{Action, Plugin, State, now_ms};
use crate::metrics;
use crate::store::Store;
use serde_json::json;
use std::sync::atomic::Ordering;

impl Plugin {
    /// The figures `getStats` answers with.
    pub(super) fn stats(&self, state: &State) -> serde_json::Value {
        let stats = state.registry.stats();
        let mut data = json!({
            "sessions": stats.sessions,
            "onlineSessions": stats.online,
            "offlineSessions": stats.offline,
            "restoredSessions": stats.restored,
            "unvalidatedDeliveriesRefused": stats.unvalidated_refused,
            "throttledKeys": self.auth.throttled_keys(),
            "usersWithRules": stats.users,
            "refreshes": stats.refreshes,
            "refreshFailures": stats.refresh_failures,
            "cachedLogins": self.auth.cached_logins(),
            "loginTimes": login_times(&self.auth.times),
            "databaseDown": self
                .mysql
                .as_ref()
                .is_some_and(|m| m.users.db().is_down()),
        });
        if let Some(store) = &state.store {
            data["storage"] = storage_stats(store);
        }
        if let Some(history) = &state.history {
            let counters = &history.reader.counters;
            data["history"] = json!({
                "pagesAnswered": counters.pages.load(Ordering::Relaxed),
                "pagesFailed": counters.failed.load(Ordering::Relaxed),
                "queryMicros": counters.query_micros.load(Ordering::Relaxed),
                "clientsTracked": history.limits.tracked(),
            });
        }
        data
    }

    /// The figures, as retained messages under `$SYS/broker/chat-auth/` (at TICK).
    pub(super) fn publish_sys(&self, state: &mut State) {
        let gauges = self.gauges(state);
        for (topic, value) in metrics::topics(&state.counters, &gauges) {
            state.outbox.push(Action::Retain {
                topic,
                payload: value.into_bytes(),
            });
        }
    }

    /// The figures read from the other parts now.
    pub(super) fn gauges(&self, state: &State) -> metrics::Gauges {
        let stats = state.registry.stats();
        metrics::Gauges {
            logins_cached: self.auth.cached_logins() as u64,
            login_times: self
                .auth
                .times
                .snapshot()
                .into_iter()
                .map(|(format, t)| {
                    (
                        format.replace(['/', '+', '#', ' ', '$'], "_"),
                        t.logins,
                        t.hash.as_micros() as u64,
                        t.database.as_micros() as u64,
                    )
                })
                .collect(),
            sessions_online: stats.online as u64,
            sessions_offline: stats.offline as u64,
            rules_refreshes: stats.refreshes,
            rules_refresh_failures: stats.refresh_failures,
            mysql_up: self.mysql.as_ref().is_none_or(|m| !m.users.db().is_down()),
            history: state.history.as_ref().map(|history| {
                let counters = &history.reader.counters;
                metrics::HistoryGauges {
                    pages: counters.pages.load(Ordering::Relaxed),
                    failed: counters.failed.load(Ordering::Relaxed),
                    query_us: counters.query_micros.load(Ordering::Relaxed),
                }
            }),
            storage: state.store.as_ref().map(|store| {
                let usage = store.usage();
                let counters = &store.counters;
                let oldest = counters.oldest_unstored_ms.load(Ordering::Relaxed);
                metrics::StorageGauges {
                    rows_stored: counters.rows_written.load(Ordering::Relaxed),
                    rows_rejected: counters.rejected_rows.load(Ordering::Relaxed),
                    spool_bytes: usage.backlog_bytes(),
                    spool_messages: usage.pending_records.load(Ordering::Relaxed),
                    backlog_age_ms: if oldest > 0 {
                        (now_ms() - oldest).max(0) as u64
                    } else {
                        0
                    },
                }
            }),
        }
    }
}

/// `{"<format>": {"logins", "hashMicros", "databaseMicros"}, "rules": {...}}`.
fn login_times(times: &crate::auth::LoginTimes) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (label, time) in times.snapshot() {
        out.insert(
            label,
            json!({
                "logins": time.logins,
                "hashMicros": time.hash.as_micros() as u64,
                "databaseMicros": time.database.as_micros() as u64,
            }),
        );
    }
    serde_json::Value::Object(out)
}

pub(super) fn storage_stats(store: &Store) -> serde_json::Value {
    let usage = store.usage();
    let counters = &store.counters;
    json!({
        "queuedMessages": usage.pending_records.load(Ordering::Relaxed),
        "spoolBytes": usage.pending_bytes.load(Ordering::Relaxed),
        "spoolFull": store.is_full(),
        "rowsWritten": counters.rows_written.load(Ordering::Relaxed),
        "batches": counters.batches.load(Ordering::Relaxed),
        "failedAttempts": counters.failed_attempts.load(Ordering::Relaxed),
        "rejectedRows": counters.rejected_rows.load(Ordering::Relaxed),
    })
}
