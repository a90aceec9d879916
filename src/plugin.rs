//! The plugin assembled from its parts: config, the MySQL pool, the authenticator. The FFI
//! edge owns one `Plugin` and forwards each broker event to it.

use crate::auth::{Authenticator, Decision, UserRecord, UserSource};
use crate::config::Config;
use crate::db::{Db, DbError, value_bytes};
use crate::query::{Param, Query};
use mysql::{Row, Value};
use std::time::Instant;

pub struct Plugin {
    pub auth: Authenticator<MysqlUsers>,
}

impl Plugin {
    /// Validates the options and starts the background parts. An `Err` names the option and
    /// stops the broker; an unreachable database does not.
    pub fn start<K: AsRef<str>, V: AsRef<str>>(options: &[(K, V)]) -> Result<Plugin, String> {
        let (config, warnings) = Config::parse(options).map_err(|e| e.to_string())?;
        log::set_max_level(config.log_level);
        for warning in &warnings {
            log::warn!("{warning}");
        }
        let mut checks = vec![("userquery", config.userquery.sql.clone())];
        if let Some(q) = &config.superquery {
            checks.push(("superquery", q.sql.clone()));
        }
        let db = Db::start(&config.db, checks)?;
        let users = MysqlUsers {
            db,
            userquery: config.userquery,
            superquery: config.superquery,
        };
        log::info!(
            "started: MySQL {}, credential cache {} s",
            match &config.db.socket {
                Some(socket) => format!("socket {}", socket.display()),
                None => format!("{}:{}", config.db.host, config.db.port),
            },
            config.auth_cache.as_secs()
        );
        Ok(Plugin {
            auth: Authenticator::new(users, config.hash, config.superusers, config.auth_cache),
        })
    }

    pub fn basic_auth(&self, username: Option<&[u8]>, password: Option<&[u8]>) -> Decision {
        self.auth.login(username, password, Instant::now())
    }
}

/// Users read with the configured `userquery` / `superquery`.
pub struct MysqlUsers {
    db: Db,
    userquery: Query,
    superquery: Option<Query>,
}

/// Values for a user query's placeholders: `query::USER_BINDINGS` lets every one of them
/// be only the username.
fn bind(query: &Query, username: &str) -> Vec<Value> {
    debug_assert!(query.params.iter().all(|p| *p == Param::Username));
    vec![Value::from(username); query.params.len()]
}

fn column<'r>(row: &'r Row, name: &str) -> Option<&'r Value> {
    let index = row
        .columns_ref()
        .iter()
        .position(|c| c.name_str().eq_ignore_ascii_case(name))?;
    row.as_ref(index)
}

fn truthy(value: Option<&Value>) -> bool {
    let Some(bytes) = value.and_then(value_bytes) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_ascii_lowercase();
    match text.parse::<f64>() {
        Ok(n) => n != 0.0,
        Err(_) => matches!(text.as_str(), "true" | "t" | "yes" | "y" | "on"),
    }
}

impl UserSource for MysqlUsers {
    fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, DbError> {
        let Some(row) = self
            .db
            .first_row(&self.userquery, bind(&self.userquery, username))?
        else {
            return Ok(None);
        };
        Ok(Some(UserRecord {
            hash: row.as_ref(0).and_then(value_bytes),
            salt: column(&row, "salt").and_then(value_bytes),
            user_id: column(&row, "user_id")
                .and_then(value_bytes)
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            is_superuser: truthy(column(&row, "is_superuser")),
        }))
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, DbError>> {
        let query = self.superquery.as_ref()?;
        Some(
            self.db
                .first_row(query, bind(query, username))
                .map(|row| row.is_some_and(|row| truthy(row.as_ref(0)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_of_superuser_columns() {
        for yes in [
            Value::Int(1),
            Value::Int(-3),
            Value::from("TRUE"),
            Value::from("y"),
        ] {
            assert!(truthy(Some(&yes)), "{yes:?}");
        }
        for no in [
            Value::NULL,
            Value::Int(0),
            Value::from("0"),
            Value::from("no"),
            Value::from(""),
        ] {
            assert!(!truthy(Some(&no)), "{no:?}");
        }
        assert!(!truthy(None));
    }
}
