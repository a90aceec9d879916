//! The plugin's figures (counters and gauges), read once into a [`Snapshot`]: `$SYS`
//! (`metrics`), the Prometheus endpoint (`exporter`) and `getStats` (`control`) are all made
//! from one snapshot. Pure: the plugin gathers the values from its parts.

use std::collections::BTreeMap;

/// The counters the broker thread bumps (plain integers: only that thread touches them);
/// they only go up (until the broker restarts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub logins_accepted: u64,
    pub logins_throttled: u64,
    /// By reason (`wrong-password`, `unknown-user`, ...).
    pub logins_refused: BTreeMap<&'static str, u64>,
    pub acl_allowed: u64,
    pub acl_denied: u64,
    pub chat_accepted: u64,
    /// By reason (`from-id-mismatch`, `not-json`, `spool-full`, ...).
    pub chat_refused: BTreeMap<&'static str, u64>,
    pub chat_retransmissions: u64,
    /// Stamped chat messages relayed by a bridge: delivered, stored by the broker they
    /// were sent to.
    pub chat_relayed: u64,
    /// Cluster commands run here from another broker.
    pub cluster_commands: u64,
}

impl Counters {
    pub fn login_refused(&mut self, reason: &'static str) {
        *self.logins_refused.entry(reason).or_default() += 1;
    }

    pub fn chat_refused(&mut self, reason: &'static str) {
        *self.chat_refused.entry(reason).or_default() += 1;
    }
}

/// Every figure at one moment: the broker thread's counters and what the other parts hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: Counters,
    pub sessions: Sessions,
    /// The throttle's state; read for `getStats` only (it walks the throttle's tables).
    pub throttle: Option<Throttle>,
    /// Logins the credential cache holds.
    pub logins_cached: u64,
    /// Logins the cache did not answer, by stored format (as the authenticator names it),
    /// in the formats' order.
    pub login_times: Vec<LoginTime>,
    /// MySQL is known down (never with MySQL off).
    pub database_down: bool,
    /// With storage on.
    pub storage: Option<Storage>,
    /// With chat history on.
    pub history: Option<History>,
}

/// The sessions registry's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sessions {
    pub sessions: u64,
    pub online: u64,
    pub offline: u64,
    /// Offline sessions from the sessions file no delivery has reached yet.
    pub restored: u64,
    /// Users whose rules are held.
    pub users: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
    /// Deliveries refused because nothing validated them (wills, retained chat messages).
    pub unvalidated_refused: u64,
}

/// The login throttle's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub usernames: u64,
    pub addresses: u64,
    pub known_devices: u64,
    /// Estimated heap bytes of the whole throttle state.
    pub bytes: u64,
    /// Broker-thread time charged to the login budgets (failed logins), in microseconds.
    pub new_failed_us: u64,
    pub known_failed_us: u64,
    /// Logins refused unchecked, by why.
    pub refused_budget: u64,
    pub refused_known_budget: u64,
    pub refused_username: u64,
    pub refused_address: u64,
    pub refused_device: u64,
}

/// Broker-thread time of the logins of one stored format the cache did not answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoginTime {
    pub format: String,
    pub logins: u64,
    pub hash_us: u64,
    pub database_us: u64,
}

/// Storage's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Messages spooled, not yet in MySQL.
    pub queued: u64,
    /// Bytes of the records appended in this run and not yet in MySQL.
    pub pending_bytes: u64,
    /// Bytes on disk not yet in MySQL (with what an earlier run left).
    pub backlog_bytes: u64,
    pub full: bool,
    pub rows_written: u64,
    pub batches: u64,
    pub failed_attempts: u64,
    pub rejected_rows: u64,
    /// Milliseconds since the oldest message not yet in MySQL was stamped (0: none).
    pub backlog_age_ms: u64,
}

/// Chat history's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    pub pages: u64,
    pub failed: u64,
    pub query_us: u64,
    pub clients_tracked: u64,
}

/// Known snapshots and the outputs made from them, kept under `tests/figures/`.
#[cfg(test)]
pub(crate) mod golden {
    use super::*;

    /// Everything on, every value distinct and non-zero.
    pub(crate) fn full() -> Snapshot {
        let mut counters = Counters {
            logins_accepted: 101,
            logins_throttled: 102,
            acl_allowed: 103,
            acl_denied: 104,
            chat_accepted: 105,
            chat_retransmissions: 106,
            chat_relayed: 107,
            cluster_commands: 108,
            ..Default::default()
        };
        counters.logins_refused.insert("wrong-password", 111);
        counters.logins_refused.insert("unknown-user", 112);
        counters.logins_refused.insert("timeout", 113);
        counters.chat_refused.insert("not-json", 121);
        counters.chat_refused.insert("from-id-mismatch", 122);
        counters.chat_refused.insert("spool-full", 123);
        Snapshot {
            counters,
            sessions: Sessions {
                sessions: 201,
                online: 202,
                offline: 203,
                restored: 204,
                users: 205,
                refreshes: 206,
                refresh_failures: 207,
                unvalidated_refused: 208,
            },
            throttle: Some(Throttle {
                usernames: 301,
                addresses: 302,
                known_devices: 303,
                bytes: 304,
                new_failed_us: 305,
                known_failed_us: 306,
                refused_budget: 307,
                refused_known_budget: 308,
                refused_username: 309,
                refused_address: 310,
                refused_device: 311,
            }),
            logins_cached: 401,
            login_times: vec![
                LoginTime {
                    format: "bcrypt".into(),
                    logins: 411,
                    hash_us: 1_412_000,
                    database_us: 413,
                },
                LoginTime {
                    format: "pbkdf2 sha/256".into(),
                    logins: 421,
                    hash_us: 422,
                    database_us: 2_423_500,
                },
                LoginTime {
                    format: "rules".into(),
                    logins: 431,
                    hash_us: 0,
                    database_us: 433,
                },
            ],
            database_down: false,
            storage: Some(Storage {
                queued: 501,
                pending_bytes: 502,
                backlog_bytes: 503,
                full: true,
                rows_written: 504,
                batches: 505,
                failed_attempts: 506,
                rejected_rows: 507,
                backlog_age_ms: 1_508,
            }),
            history: Some(History {
                pages: 601,
                failed: 602,
                query_us: 3_603_000,
                clients_tracked: 604,
            }),
        }
    }

    /// `full` a while later: counters grown (one smaller, as after a restart of a part),
    /// a new refusal reason and password format, gauges changed.
    pub(crate) fn later() -> Snapshot {
        let mut s = full();
        s.counters.logins_accepted += 50;
        s.counters.acl_denied -= 4;
        s.counters.logins_refused.insert("database", 114);
        *s.counters.chat_refused.get_mut("not-json").unwrap() += 9;
        s.sessions.online = 2;
        s.sessions.refreshes += 10;
        s.logins_cached = 7;
        s.login_times[0].hash_us += 500_000;
        s.login_times[1].database_us -= 1_000;
        s.login_times.insert(
            1,
            LoginTime {
                format: "md5".into(),
                logins: 441,
                hash_us: 442,
                database_us: 443,
            },
        );
        let storage = s.storage.as_mut().unwrap();
        storage.rows_written += 1_000;
        storage.backlog_bytes = 0;
        storage.backlog_age_ms = 0;
        let history = s.history.as_mut().unwrap();
        history.pages += 1;
        history.query_us += 250_000;
        s
    }

    /// Storage and history off, MySQL down, nothing counted yet.
    pub(crate) fn bare() -> Snapshot {
        Snapshot {
            throttle: Some(Throttle::default()),
            database_down: true,
            ..Default::default()
        }
    }

    /// `tests/figures/<name>` holds `text`; `CHAT_AUTH_WRITE_GOLDEN=1 cargo test --lib
    /// golden` writes it instead (after a change to the figures that is meant).
    pub(crate) fn check(name: &str, text: &str) {
        let path = format!("{}/tests/figures/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("CHAT_AUTH_WRITE_GOLDEN").is_some() {
            std::fs::write(&path, text).unwrap();
            return;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == text,
            "tests/figures/{name} differs from what is made now (a published figure changed?); \
             if the change is meant: CHAT_AUTH_WRITE_GOLDEN=1 cargo test --lib golden\n\
             --- kept\n{kept}\n--- now\n{text}"
        );
    }
}
