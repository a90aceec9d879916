//! The plugin's figures for `$SYS/broker/chat-auth/...`: counters the broker thread bumps
//! (plain integers: only that thread touches them) and the topic/value list published
//! every `sys_interval`. Named in the style of Mosquitto's own `$SYS` topics. Pure: the
//! plugin hands in the gauges it reads elsewhere.

/// The prefix of every topic.
pub const PREFIX: &str = "$SYS/broker/chat-auth/";

pub use crate::figures::Counters;
use crate::figures::Snapshot;

/// What is published, besides the counters: figures read from the other parts now.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Gauges {
    pub logins_cached: u64,
    /// By stored format: logins, hash microseconds, database microseconds (counters).
    pub login_times: Vec<(String, u64, u64, u64)>,
    pub sessions_online: u64,
    pub sessions_offline: u64,
    pub rules_refreshes: u64,
    pub rules_refresh_failures: u64,
    pub mysql_up: bool,
    /// With storage on.
    pub storage: Option<StorageGauges>,
    /// With chat history on: pages answered, requests that failed (MySQL), and the
    /// history threads' time (counters).
    pub history: Option<HistoryGauges>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct HistoryGauges {
    pub pages: u64,
    pub failed: u64,
    pub query_us: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct StorageGauges {
    pub rows_stored: u64,
    pub rows_rejected: u64,
    pub spool_bytes: u64,
    pub spool_messages: u64,
    /// Milliseconds since the oldest message not yet in MySQL was stamped (0: none).
    pub backlog_age_ms: u64,
}

impl Gauges {
    /// The gauges of a snapshot.
    pub fn of(s: &Snapshot) -> Gauges {
        Gauges {
            logins_cached: s.logins_cached,
            login_times: s
                .login_times
                .iter()
                .map(|t| {
                    (
                        t.format.replace(['/', '+', '#', ' ', '$'], "_"),
                        t.logins,
                        t.hash_us,
                        t.database_us,
                    )
                })
                .collect(),
            sessions_online: s.sessions.online,
            sessions_offline: s.sessions.offline,
            rules_refreshes: s.sessions.refreshes,
            rules_refresh_failures: s.sessions.refresh_failures,
            mysql_up: !s.database_down,
            history: s.history.as_ref().map(|h| HistoryGauges {
                pages: h.pages,
                failed: h.failed,
                query_us: h.query_us,
            }),
            storage: s.storage.as_ref().map(|st| StorageGauges {
                rows_stored: st.rows_written,
                rows_rejected: st.rejected_rows,
                spool_bytes: st.backlog_bytes,
                spool_messages: st.queued,
                backlog_age_ms: st.backlog_age_ms,
            }),
        }
    }
}

/// Every topic (under `PREFIX`) with its value, in a stable order.
pub fn topics(counters: &Counters, gauges: &Gauges) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put =
        |topic: &str, value: u64| out.push((format!("{PREFIX}{topic}"), value.to_string()));
    put("logins/accepted", counters.logins_accepted);
    put("logins/throttled", counters.logins_throttled);
    for (reason, count) in &counters.logins_refused {
        put(&format!("logins/refused/{reason}"), *count);
    }
    put("logins/cached", gauges.logins_cached);
    for (format, logins, hash_us, db_us) in &gauges.login_times {
        put(&format!("logins/time/{format}/count"), *logins);
        put(&format!("logins/time/{format}/hash-us"), *hash_us);
        put(&format!("logins/time/{format}/database-us"), *db_us);
    }
    put("acl/allowed", counters.acl_allowed);
    put("acl/denied", counters.acl_denied);
    put("chat/accepted", counters.chat_accepted);
    put("chat/retransmissions", counters.chat_retransmissions);
    put("chat/relayed", counters.chat_relayed);
    put("cluster/commands", counters.cluster_commands);
    for (reason, count) in &counters.chat_refused {
        put(&format!("chat/refused/{reason}"), *count);
    }
    put("rules/refreshes", gauges.rules_refreshes);
    put("rules/refresh-failures", gauges.rules_refresh_failures);
    put("sessions/online", gauges.sessions_online);
    put("sessions/offline", gauges.sessions_offline);
    put("mysql/up", u64::from(gauges.mysql_up));
    if let Some(storage) = &gauges.storage {
        put("storage/rows-stored", storage.rows_stored);
        put("storage/rows-rejected", storage.rows_rejected);
        put("storage/spool-bytes", storage.spool_bytes);
        put("storage/spool-messages", storage.spool_messages);
        put("storage/backlog-age-ms", storage.backlog_age_ms);
    }
    if let Some(history) = &gauges.history {
        put("history/pages", history.pages);
        put("history/failed", history.failed);
        put("history/query-us", history.query_us);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_named_and_counted() {
        let mut counters = Counters {
            logins_accepted: 3,
            acl_allowed: 10,
            ..Default::default()
        };
        counters.login_refused("wrong-password");
        counters.login_refused("wrong-password");
        counters.chat_refused("from-id-mismatch");
        let gauges = Gauges {
            login_times: vec![("bcrypt".into(), 2, 120_000, 300)],
            mysql_up: true,
            storage: Some(StorageGauges {
                rows_stored: 7,
                ..Default::default()
            }),
            history: Some(HistoryGauges {
                pages: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let topics = topics(&counters, &gauges);
        let get = |name: &str| {
            topics
                .iter()
                .find(|(t, _)| t == &format!("{PREFIX}{name}"))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("logins/accepted"), Some("3"));
        assert_eq!(get("logins/refused/wrong-password"), Some("2"));
        assert_eq!(get("chat/refused/from-id-mismatch"), Some("1"));
        assert_eq!(get("logins/time/bcrypt/hash-us"), Some("120000"));
        assert_eq!(get("mysql/up"), Some("1"));
        assert_eq!(get("storage/rows-stored"), Some("7"));
        assert_eq!(get("history/pages"), Some("4"));
        assert!(topics.iter().all(|(t, _)| t.starts_with(PREFIX)));
    }

    /// The topics and values of known snapshots, as kept in `tests/figures/sys.txt`.
    #[test]
    fn golden_sys_topics() {
        use crate::figures::golden;
        let mut text = String::new();
        for (name, snapshot) in [
            ("full", golden::full()),
            ("later", golden::later()),
            ("bare", golden::bare()),
        ] {
            text.push_str(&format!("# {name}\n"));
            for (topic, value) in topics(&snapshot.counters, &Gauges::of(&snapshot)) {
                text.push_str(&format!("{topic} {value}\n"));
            }
        }
        golden::check("sys.txt", &text);
    }
}
