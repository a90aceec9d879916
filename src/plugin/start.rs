//! Starting the plugin: the options read, the backends and background parts started, the
//! sessions file read back; and at shutdown, the sessions file written once more.

use super::{History, Plugin, Source, State, later};
use crate::acl::RuleSet;
use crate::auth::Authenticator;
use crate::backend::http::HttpBackend;
use crate::backend::mysql::{MysqlBackend, MysqlRules, MysqlUsers};
use crate::backend::postgres::PgBackend;
use crate::backend::{BackendError, BackendKind, RuleSource, UserNow};
use crate::cluster;
use crate::config::Config;
use crate::db::{Db, Probe};
use crate::dedup::{self, Dedup};
use crate::exporter::Exporter;
use crate::history::{self, Limits, reader::Reader};
use crate::refresh::{Refresher, Work};
use crate::resend::{self, Resends};
use crate::sessions::Registry;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

impl Plugin {
    /// Validates the options and starts the background parts. An `Err` names the option and
    /// stops the broker; an unreachable database does not.
    ///
    /// `wake` interrupts the broker's loop wait, so background answers (history pages) go
    /// out at once; `persistence_location` is the broker's, where Mosquitto 2.1 tells it.
    pub fn start<K: AsRef<str>, V: AsRef<str>>(
        options: &[(K, V)],
        wake: Option<crate::action::Waker>,
        hush: Option<crate::action::Hush>,
        persistence_location: Option<&std::path::Path>,
        delayed_logins: bool,
    ) -> Result<Plugin, String> {
        let (mut config, warnings) = Config::parse(options).map_err(|e| e.to_string())?;
        if let Some(dir) = persistence_location {
            config.use_persistence_location(dir);
        }
        log::set_max_level(config.log_level);
        for warning in &warnings {
            log::warn!("{warning}");
        }
        for note in &config.notes {
            log::info!("{note}");
        }
        let rules_wait = config
            .mysql
            .as_ref()
            .map(|m| m.rules_wait)
            .or(config.postgres.as_ref().map(|p| p.rules_wait))
            .unwrap_or(Duration::ZERO);
        let mut addresses = Vec::new();
        if let Some(mysql) = &config.mysql {
            addresses.push(match &mysql.db.socket {
                Some(socket) => format!("MySQL socket {}", socket.display()),
                None => format!("MySQL {}:{}", mysql.db.host, mysql.db.port),
            });
        }
        if let Some(pg) = &config.postgres {
            addresses.push(
                if crate::backend::postgres::pool::is_socket_dir(&pg.db.host) {
                    format!("PostgreSQL socket {}, port {}", pg.db.host, pg.db.port)
                } else {
                    format!(
                        "PostgreSQL {}:{}, sslmode {}",
                        pg.db.host,
                        pg.db.port,
                        pg.db.tls.mode.name()
                    )
                },
            );
        }
        if let Some(http) = &config.http {
            addresses.push(format!("HTTP {}", http.base_url));
        }
        let history_db = config.mysql.as_ref().map(|m| m.db.clone());
        let login_threads = later::threads_for(config.mysql.as_ref().map(|m| m.db.pool_size));
        let mysql = config.mysql.map(|mysql| -> Result<MysqlBackend, String> {
            let mut checks = vec![("userquery", mysql.userquery.sql.clone())];
            for (name, query) in [
                ("superquery", &mysql.superquery),
                ("cert_userquery", &mysql.cert_userquery),
                ("groupsquery", &config.acl.groupsquery),
                ("aclquery", &config.acl.aclquery),
            ] {
                if let Some(q) = query {
                    checks.push((name, q.sql.clone()));
                }
            }
            let db = Arc::new(Db::start(
                &mysql.db,
                checks,
                // Closed again only by a user lookup the server answers (a locked users
                // table answers pings).
                Some(Probe::of(&mysql.userquery)),
                "logins",
                "auth_opt_pool_size",
            )?);
            let users = Arc::new(MysqlUsers::new(
                Arc::clone(&db),
                mysql.userquery,
                mysql.superquery,
                mysql.cert_userquery,
            ));
            let rules = Arc::new(MysqlRules::new(
                db,
                config.acl.groupsquery.clone(),
                config.acl.aclquery.clone(),
                config.acl.subscribe_level,
            ));
            Ok(MysqlBackend { users, rules })
        });
        let mysql = mysql.transpose()?;
        let postgres = config
            .postgres
            .take()
            .map(|pg| PgBackend::start(pg, config.acl.subscribe_level))
            .transpose()?;
        let http = config
            .http
            .clone()
            .map(|http| Arc::new(HttpBackend::new(http)));
        let sources: Vec<Source> = config
            .backends
            .iter()
            .filter_map(|kind| match kind {
                BackendKind::Mysql => mysql.as_ref().map(|m| Arc::clone(&m.users) as Source),
                BackendKind::Http => http.as_ref().map(|h| Arc::clone(h) as Source),
                BackendKind::Postgres => postgres.as_ref().map(|p| Arc::clone(&p.users) as Source),
            })
            .collect();
        let acl = config.acl;
        let auth = Authenticator::new(
            sources,
            config.auth.hash,
            config.auth.superusers,
            config.auth.cache,
            config.auth.throttle,
        )
        .with_bridge_users(config.auth.bridge_users);
        let auth = Arc::new(auth);
        let background = Arc::new(Background {
            mysql: mysql.clone(),
            postgres: postgres.clone(),
            order: config
                .backends
                .iter()
                .copied()
                .filter(|b| b.holds_rows())
                .collect(),
            times: Arc::clone(&auth.times),
        });
        let refresher = Refresher::start(Arc::clone(&background) as Arc<dyn RuleSource>)?;
        let later = if delayed_logins {
            let rules = (mysql.is_some() || postgres.is_some())
                .then_some(background as Arc<dyn RuleSource>);
            Some(later::Later::start(
                Arc::clone(&auth),
                rules,
                login_threads,
                wake.clone(),
            )?)
        } else {
            None
        };
        let mut registry = Registry::new(acl.chat.clone(), acl.refresh, config.offline);
        if let Some(path) = &config.session_file {
            match crate::session_file::load(path) {
                Ok((saved, unreadable)) => {
                    if unreadable > 0 {
                        log::warn!(
                            "{} lines of the sessions file {} could not be read; those \
                             clients get their rules at their next login",
                            unreadable,
                            path.display()
                        );
                    }
                    let count = saved.len();
                    for job in registry.restore(saved, Instant::now()) {
                        refresher.submit_urgent(Work::Rules(job));
                    }
                    if count > 0 {
                        log::info!(
                            "restored {count} persistent sessions from {}",
                            path.display()
                        );
                    }
                }
                Err(e) => log::warn!("{e}; no session is restored"),
            }
        }
        // Its own connection to the same server: the writer's waits on a busy messages table
        // never mark MySQL down for logins.
        let store = match (&config.persist, &history_db) {
            (Some(persist), Some(db)) => Some(Store::start(persist, db)?),
            _ => None,
        };
        let history = match (&config.history, &config.persist, history_db) {
            (Some(settings), Some(persist), Some(db)) => {
                // A pool of its own: history pages never take the connections logins wait on.
                let db = Db::start(
                    &crate::db::DbConfig {
                        pool_size: settings.connections,
                        ..db
                    },
                    Vec::new(),
                    None,
                    "chat history requests",
                    "auth_opt_history_connections",
                )?;
                registry.serve_history();
                log::info!(
                    "chat history answered on {} ({} connections; per client {} in flight, {} \
                     per second)",
                    history::TOPIC,
                    settings.connections,
                    settings.in_flight,
                    settings.per_second
                );
                Some(History {
                    reader: Reader::start(
                        db,
                        &persist.table,
                        settings.connections,
                        settings.max_response_bytes,
                        wake,
                    )?,
                    limits: Limits::new(settings.in_flight, settings.per_second),
                })
            }
            _ => None,
        };
        log::info!(
            "started: backends {}{}, credential cache {} s, chat topics {}, ACL rows {}, rules \
             refreshed every {} s",
            config
                .backends
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(","),
            if addresses.is_empty() {
                String::new()
            } else {
                format!(" ({})", addresses.join(", "))
            },
            config.auth.cache.as_secs(),
            match (&acl.chat, mysql.is_some() || postgres.is_some()) {
                (Some(_), _) if mysql.is_none() =>
                    "on (chat storage and history off: they are on MySQL, and backends has \
                     no mysql)",
                (Some(_), _) => "on",
                (None, false) =>
                    "off (they need the mysql or postgres backend for chat identities, \
                                 groups and rows: chat messages are neither validated nor \
                                 stored; the HTTP service decides every topic)",
                (None, true) => "off",
            },
            match (&mysql, &postgres) {
                (Some(m), Some(p)) if m.rules.has_aclquery() && p.rules.has_aclquery() => {
                    "from aclquery (MySQL) and pg_aclquery (PostgreSQL)".to_string()
                }
                (Some(m), _) if m.rules.has_aclquery() => "from aclquery".to_string(),
                (_, Some(p)) if p.rules.has_aclquery() => "from pg_aclquery".to_string(),
                _ => "off".to_string(),
            } + if http.is_some() {
                ", the HTTP service's users asked per client, topic and access"
            } else {
                ""
            },
            acl.refresh.as_secs(),
        );
        if let Some(persist) = &config.persist {
            log::info!(
                "chat messages are stored in {} (batches of up to {} rows every {} ms; spool {}, \
                 at most {} MB{})",
                persist.table,
                persist.batch_rows,
                persist.flush.as_millis(),
                persist.spool_dir.display(),
                persist.spool_max_bytes / (1024 * 1024),
                if persist.fsync {
                    ", fsync per message"
                } else {
                    ""
                }
            );
        }
        let exporter = config
            .metrics_listen
            .as_deref()
            .map(|address| {
                Exporter::start(address).map_err(|e| {
                    format!(
                        "auth_opt_metrics_listen (plugin_opt_metrics_listen): cannot serve \
                         metrics on '{address}': {e}"
                    )
                })
            })
            .transpose()?;
        if let Some(exporter) = &exporter {
            log::info!("metrics at http://{}/metrics", exporter.address);
        }
        let dedup = config
            .validation
            .as_ref()
            .filter(|v| !v.dedup.is_zero())
            .map(|v| Dedup::new(v.dedup.as_millis() as i64, dedup::PER_SENDER, dedup::TOTAL));
        Ok(Plugin {
            auth,
            later,
            hush,
            mysql,
            postgres,
            http,
            chat: acl.chat,
            validation: config.validation,
            requests: config.requests,
            session_file: config.session_file,
            rules_wait,
            sys_interval: (!config.sys_interval.is_zero()).then_some(config.sys_interval),
            state: Mutex::new(State {
                registry,
                refresher,
                outbox: Vec::new(),
                store,
                dedup,
                resends: Resends::new(resend::WINDOW_MS, resend::PER_CLIENT, resend::TOTAL),
                message_ids: crate::message_id::MessageIds::new(),
                last_stats_log: Instant::now(),
                last_stats: (0, 0),
                recheck_window: None,
                recheck_memo: HashMap::new(),
                user_checks: HashMap::new(),
                last_session_save: Instant::now(),
                next_full_tick: Instant::now(),
                save_seq: 0,
                untick_since: Some(Instant::now()),
                counters: crate::figures::Counters::default(),
                next_sys_publish: Instant::now(),
                exporter,
                next_export: Instant::now(),
                cluster_seen: cluster::Seen::default(),
                history,
                rules_late: None,
                waiting: later::waiting(),
                awaiting_rules: HashMap::new(),
                completing: HashMap::new(),
                logins_full_said: None,
                logins_overdue_said: None,
                limits: crate::limits::Limits::new(config.limits, false),
            }),
        })
    }
}

impl Drop for Plugin {
    /// At shutdown the sessions file is written once more, on this thread: it must be on
    /// disk before the broker restarts.
    fn drop(&mut self) {
        let Some(path) = &self.session_file else {
            return;
        };
        let mut state = self.state();
        // No background save may rename an older file over this one.
        state.refresher.shutdown();
        if let Some(sessions) = state.registry.persistent_sessions(true) {
            match crate::session_file::save(path, &sessions, u64::MAX) {
                Ok(()) => log::info!(
                    "{} persistent sessions saved to {}",
                    sessions.len(),
                    path.display()
                ),
                Err(e) => log::error!("sessions file not saved at shutdown: {e}"),
            }
        }
    }
}

/// The `loginTimes` entry that counts loading a user's groups and ACL rows (in the
/// background, after a login or for a refresh).
const RULES_LABEL: &str = "rules";

/// The background thread's sources: rules, and user rows read again after a re-check
/// (MySQL's and PostgreSQL's; without either no job is ever made).
struct Background {
    mysql: Option<MysqlBackend>,
    postgres: Option<PgBackend>,
    /// The backends of user rows, in `backends` order.
    order: Vec<BackendKind>,
    /// Rules loads are timed with the logins (`loginTimes` in the stats).
    times: Arc<crate::auth::LoginTimes>,
}

impl Background {
    fn source(&self, kind: BackendKind) -> Option<&dyn RuleSource> {
        match kind {
            BackendKind::Mysql => self.mysql.as_ref().map(|m| m as &dyn RuleSource),
            BackendKind::Postgres => self.postgres.as_ref().map(|p| p as &dyn RuleSource),
            BackendKind::Http => None,
        }
    }

    /// The backend whose user `username` is: the only one, or in a `mysql,postgres` chain
    /// the first that has the row, as the login was decided (`auth::decide`).
    fn owner(&self, username: &str) -> Result<&dyn RuleSource, BackendError> {
        let none = || BackendError::Unavailable("no mysql or postgres backend".into());
        if let [only] = self.order[..] {
            return self.source(only).ok_or_else(none);
        }
        for kind in &self.order {
            let found = match kind {
                BackendKind::Mysql => self
                    .mysql
                    .as_ref()
                    .map(|m| m.users.fetch_user(username))
                    .transpose()?
                    .flatten()
                    .is_some(),
                BackendKind::Postgres => self
                    .postgres
                    .as_ref()
                    .map(|p| p.users.fetch_user(username))
                    .transpose()?
                    .flatten()
                    .is_some(),
                BackendKind::Http => false,
            };
            if found {
                return self.source(*kind).ok_or_else(none);
            }
        }
        self.order
            .first()
            .and_then(|kind| self.source(*kind))
            .ok_or_else(none)
    }
}

impl RuleSource for Background {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError> {
        let started = Instant::now();
        let rules = self
            .owner(username)
            .and_then(|source| source.load(username, user_id));
        self.times
            .add(RULES_LABEL, Duration::ZERO, started.elapsed());
        rules
    }

    fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError> {
        self.owner(username)?.user_now(username)
    }
}
