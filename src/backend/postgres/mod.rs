//! The PostgreSQL backend: users read with its `userquery` / `superquery`, and a user's
//! rules (chat groups and ACL rows) with its `groupsquery` and `aclquery`, decided in
//! memory as the MySQL backend's are. auth-plug's and mosquitto-go-auth's PostgreSQL
//! options, and EMQX's query, are read (`crate::config`); chat storage and history stay on
//! MySQL.

pub mod pool;
pub mod tls;
pub mod values;

use crate::acl::RuleSet;
use crate::backend::{
    BackendError, BackendKind, Lookup, RulePart, RuleSource, UserNow, UserRecord, UserSource,
    assemble, rule_parts, truthy,
};
use crate::query::Query;
use pool::{Check, PgDb, PgDbConfig, PgRow, values_for};
use std::sync::Arc;
use std::time::Duration;

/// The PostgreSQL backend's server, queries and waits.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub db: PgDbConfig,
    pub userquery: Query,
    pub superquery: Option<Query>,
    /// The chat groups (`None` with the chat rules off).
    pub groupsquery: Option<Query>,
    /// `groupsquery` is the default: refused at start, groups are off (said once).
    pub groupsquery_defaulted: bool,
    pub aclquery: Option<Query>,
    pub rules_wait: Duration,
    /// The options the queries were given as (auth-plug's or go-auth's), for messages.
    pub option_names: QueryNames,
}

/// The option each query was given as: `pg_aclquery`, or `aclquery` with postgres alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryNames {
    pub userquery: &'static str,
    pub superquery: &'static str,
    pub groupsquery: &'static str,
    pub aclquery: &'static str,
}

/// Rows read per rules query at most.
const MAX_RULE_ROWS: usize = 10_000;

/// Users read with `userquery` / `superquery`.
pub struct PgUsers {
    db: Arc<PgDb>,
    userquery: Query,
    superquery: Option<Query>,
}

fn record(row: &PgRow) -> UserRecord {
    let text = |name: &str| {
        row.column(name)
            .flatten()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    UserRecord {
        hash: row.get(0).map(<[u8]>::to_vec),
        salt: row.column("salt").flatten().map(<[u8]>::to_vec),
        user_id: text("user_id"),
        user_id_null: row.column("user_id").is_some_and(|v| v.is_none()),
        username: text("username"),
        is_superuser: row.column("is_superuser").flatten().is_some_and(truthy),
    }
}

impl PgUsers {
    pub fn db(&self) -> &Arc<PgDb> {
        &self.db
    }

    pub fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        let row = self.db.first_row(
            &self.userquery,
            values_for(&self.userquery, username, "", 0),
        )?;
        Ok(row.as_ref().map(record))
    }

    pub fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError> {
        UserNow::from_row(self.fetch_user(username)?, username, || {
            self.superquery(username)
        })
    }
}

impl UserSource for PgUsers {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    fn lookup(&self, username: &str, _: &[u8], _: &[u8]) -> Result<Lookup, BackendError> {
        Ok(match self.fetch_user(username)? {
            Some(record) => Lookup::Row(record),
            None => Lookup::Unknown,
        })
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>> {
        let query = self.superquery.as_ref()?;
        Some(
            self.db
                .first_row(query, values_for(query, username, "", 0))
                .map(|row| row.is_some_and(|row| row.get(0).is_some_and(truthy)))
                .map_err(BackendError::from),
        )
    }

    fn fetch_certificate_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        self.fetch_user(username)
    }
}

/// Groups and ACL rows, every part pipelined on one connection (one round trip).
pub struct PgRules {
    db: Arc<PgDb>,
    /// The default groups query's option, when it may be set aside.
    groupsquery_option: Option<&'static str>,
    groupsquery: Option<Query>,
    aclquery: Option<Query>,
    parts: Vec<RulePart>,
}

impl PgRules {
    pub fn has_aclquery(&self) -> bool {
        self.aclquery.is_some()
    }

    pub fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError> {
        let groups_off = self
            .groupsquery_option
            .is_some_and(|o| self.db.set_aside(o));
        let parts: Vec<RulePart> = self
            .parts
            .iter()
            .copied()
            .filter(|part| !(groups_off && *part == RulePart::Groups))
            .collect();
        let statements: Vec<(&Query, _)> = parts
            .iter()
            .map(|part| match part {
                RulePart::Groups => {
                    let q = self
                        .groupsquery
                        .as_ref()
                        .expect("a groups part has its query");
                    (q, values_for(q, username, user_id, 0))
                }
                RulePart::Acl(level) => {
                    let q = self.aclquery.as_ref().expect("an ACL part has its query");
                    (q, values_for(q, username, user_id, *level))
                }
            })
            .collect();
        let rows = self.db.rows(&statements, MAX_RULE_ROWS)?;
        let texts = rows
            .into_iter()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| row.get(0))
                    .filter_map(|b| String::from_utf8(b.to_vec()).ok())
                    .collect()
            })
            .collect();
        Ok(assemble(&parts, texts, username, user_id))
    }
}

/// The PostgreSQL backend's users and their rules.
#[derive(Clone)]
pub struct PgBackend {
    pub users: Arc<PgUsers>,
    pub rules: Arc<PgRules>,
}

impl PgBackend {
    /// Starts the connections; a statement PostgreSQL refuses, or whose columns cannot be
    /// read, stops the broker naming its option (when the server answers at start).
    pub fn start(config: PostgresConfig, subscribe_level: u8) -> Result<PgBackend, String> {
        let names = config.option_names;
        let mut checks = vec![Check {
            option: names.userquery,
            query: config.userquery.clone(),
            optional: false,
        }];
        for (option, query, optional) in [
            (names.superquery, &config.superquery, false),
            (
                names.groupsquery,
                &config.groupsquery,
                config.groupsquery_defaulted,
            ),
            (names.aclquery, &config.aclquery, false),
        ] {
            if let Some(q) = query {
                checks.push(Check {
                    option,
                    query: q.clone(),
                    optional,
                });
            }
        }
        let db = Arc::new(PgDb::start(
            &config.db,
            checks,
            config.userquery.clone(),
            "logins",
        )?);
        let parts = rule_parts(
            config.groupsquery.is_some(),
            config.aclquery.as_ref(),
            subscribe_level,
        );
        Ok(PgBackend {
            users: Arc::new(PgUsers {
                db: Arc::clone(&db),
                userquery: config.userquery,
                superquery: config.superquery,
            }),
            rules: Arc::new(PgRules {
                db,
                groupsquery_option: config.groupsquery_defaulted.then_some(names.groupsquery),
                groupsquery: config.groupsquery,
                aclquery: config.aclquery,
                parts,
            }),
        })
    }
}

impl RuleSource for PgBackend {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError> {
        self.rules.load(username, user_id)
    }

    fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError> {
        self.users.user_now(username)
    }
}
