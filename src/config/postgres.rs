//! The PostgreSQL backend's options: go-auth's `pg_*` names, or (with `backends postgres`
//! alone) auth-plug's plain names for the same things.

use super::given::Given;
use super::{ConfigError, err};
use crate::backend::postgres::pool::PgDbConfig;
use crate::backend::postgres::tls::{PgTlsConfig, SslMode};
use crate::backend::postgres::{PostgresConfig, QueryNames};
use crate::query::{self, ACL_BINDINGS, Bindings, GROUP_BINDINGS, Query, USER_BINDINGS};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The auth-plug names read for PostgreSQL with `backends postgres` alone.
pub(super) const PLAIN_NAMES: &[(&str, &str)] = &[
    ("pg_host", "host"),
    ("pg_port", "port"),
    ("pg_user", "user"),
    ("pg_password", "pass"),
    ("pg_dbname", "dbname"),
    ("pg_userquery", "userquery"),
    ("pg_superquery", "superquery"),
    ("pg_aclquery", "aclquery"),
    ("pg_groupsquery", "groupsquery"),
];

/// Options of the MySQL part that size and time PostgreSQL's connections too.
pub(super) const SHARED: &[&str] = &[
    "connect_timeout_ms",
    "query_timeout_ms",
    "pool_size",
    "rules_wait_ms",
];

struct Names<'g, 'a> {
    given: &'g Given<'a>,
    alone: bool,
}

impl<'a> Names<'_, 'a> {
    /// The option given for `pg_name` (its own name, or auth-plug's when postgres is alone),
    /// with the name it was given as.
    fn get(&self, pg_name: &'static str) -> Option<(&'static str, &'a str)> {
        if let Some(value) = self.given.get(pg_name) {
            return Some((pg_name, value));
        }
        let plain = PLAIN_NAMES.iter().find(|(pg, _)| *pg == pg_name)?.1;
        self.alone
            .then(|| self.given.get(plain).map(|v| (plain, v)))
            .flatten()
    }

    /// The query given for `pg_name`, with the name it was given as.
    fn query(
        &self,
        pg_name: &'static str,
        bindings: Bindings,
    ) -> Result<Option<(Query, &'static str)>, ConfigError> {
        self.get(pg_name)
            .map(|(name, text)| {
                query::translate_pg(text, bindings)
                    .map(|q| (q, name))
                    .map_err(|e| err(name, e.0))
            })
            .transpose()
    }
}

/// `alone`: `backends` is `postgres` alone. `chat`: the chat rules are on (their groups are
/// read). `go_auth_names`: a `pg_*` option was given (libpq's `verify-full` then, as
/// go-auth; auth-plug's configurations get libpq's `prefer`).
pub(super) fn postgres_config(
    given: &Given<'_>,
    alone: bool,
    chat: bool,
    go_auth_names: bool,
) -> Result<PostgresConfig, ConfigError> {
    let names = Names { given, alone };
    let (userquery, userquery_name) =
        names.query("pg_userquery", USER_BINDINGS)?.ok_or_else(|| {
            err(
                "pg_userquery",
                "is required with auth_opt_backends postgres (the query that returns the password \
             hash; auth_opt_userquery with postgres alone)",
            )
        })?;
    let user = names
        .get("pg_user")
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| {
            err(
                "pg_user",
                "is required with auth_opt_backends postgres (auth_opt_user with postgres alone)",
            )
        })?;
    let port = match names.get("pg_port") {
        Some((name, value)) => value
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                err(
                    name,
                    format!("'{value}' is not a whole number from 1 to 65535"),
                )
            })?,
        None => given.whole::<u16>("pg_port")?,
    };
    let pass = given
        .raw("pg_password")
        .or_else(|| alone.then(|| given.raw("pass")).flatten())
        .map(str::to_string);
    let mode = match given.choice("pg_sslmode")? {
        Some(name) => SslMode::from_name(name).expect("the table lists SslMode::NAMES"),
        None if go_auth_names => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    let file = |names: &[&'static str]| -> Result<Option<PathBuf>, ConfigError> {
        for name in names {
            if let Some(path) = given.get(name) {
                if !Path::new(path).is_file() {
                    return Err(err(name, format!("file '{path}' does not exist")));
                }
                return Ok(Some(PathBuf::from(path)));
            }
        }
        Ok(None)
    };
    let rootcert = file(&["pg_sslrootcert"])?;
    let cert = file(&["pg_sslcert", "sslcert"])?;
    let key = file(&["pg_sslkey", "sslkey"])?;
    if cert.is_some() != key.is_some() {
        return Err(err(
            if cert.is_some() {
                "pg_sslkey"
            } else {
                "pg_sslcert"
            },
            "pg_sslcert and pg_sslkey (sslcert and sslkey) go together",
        ));
    }
    let host = names
        .get("pg_host")
        .map(|(_, v)| v)
        .or(super::options::get("pg_host").default)
        .unwrap_or_default()
        .to_string();
    let groupsquery = if chat {
        let given_query = names.query("pg_groupsquery", GROUP_BINDINGS)?;
        let defaulted = given_query.is_none();
        let query = match given_query {
            Some(q) => q,
            None => (
                query::translate_pg(
                    super::options::get("pg_groupsquery")
                        .default
                        .unwrap_or_default(),
                    GROUP_BINDINGS,
                )
                .map_err(|e| err("pg_groupsquery", e.0))?,
                "pg_groupsquery",
            ),
        };
        Some((query, defaulted))
    } else {
        None
    };
    let max_life = given.whole::<u64>("pg_max_life_time")?;
    let db = PgDbConfig {
        host,
        port,
        dbname: names.get("pg_dbname").map(|(_, v)| v.to_string()),
        user,
        pass,
        tls: PgTlsConfig {
            mode,
            rootcert,
            cert,
            key,
        },
        connect_timeout: Duration::from_millis(given.whole::<u64>("connect_timeout_ms")?),
        query_timeout: Duration::from_millis(given.whole::<u64>("query_timeout_ms")?),
        pool_size: given.whole::<usize>("pool_size")?,
        max_life: (max_life > 0).then(|| Duration::from_secs(max_life)),
    };
    let groups_defaulted = groupsquery.as_ref().is_some_and(|(_, d)| *d);
    let superquery = names.query("pg_superquery", USER_BINDINGS)?;
    let aclquery = names.query("pg_aclquery", ACL_BINDINGS)?;
    let name_of =
        |q: &Option<(Query, &'static str)>, pg: &'static str| q.as_ref().map_or(pg, |(_, n)| *n);
    let option_names = QueryNames {
        userquery: userquery_name,
        superquery: name_of(&superquery, "pg_superquery"),
        groupsquery: groupsquery
            .as_ref()
            .map_or("pg_groupsquery", |((_, n), _)| *n),
        aclquery: name_of(&aclquery, "pg_aclquery"),
    };
    Ok(PostgresConfig {
        db,
        userquery,
        superquery: superquery.map(|(q, _)| q),
        groupsquery: groupsquery.map(|((q, _), _)| q),
        groupsquery_defaulted: groups_defaulted,
        aclquery: aclquery.map(|(q, _)| q),
        option_names,
        rules_wait: Duration::from_millis(given.whole::<u64>("rules_wait_ms")?),
    })
}
