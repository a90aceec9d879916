//! The MySQL backend: users read with `userquery` / `superquery` / `cert_userquery`, and a
//! user's rules (groups and ACL rows) read with `groupsquery` and `aclquery`.

use crate::acl::RuleSet;
use crate::backend::{
    BackendError, BackendKind, Lookup, RulePart, RuleSource, UserNow, UserRecord, UserSource,
    assemble, rule_parts,
};
use crate::db::{Db, DbConfig, DbError, value_bytes};
use crate::query::{Param, Query};
use mysql::{Row, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The MySQL backend's connection and user queries.
#[derive(Debug, Clone)]
pub struct MysqlConfig {
    pub db: DbConfig,
    pub userquery: Query,
    pub superquery: Option<Query>,
    /// The row of a user who logged in by a TLS certificate; `None`: `userquery`'s.
    pub cert_userquery: Option<Query>,
    /// The longest a first check waits for its login's rules (`rules_wait_ms`).
    pub rules_wait: Duration,
}

/// Rows read per rules query at most (groups of a user, ACL rows of an access level).
const MAX_RULE_ROWS: usize = 10_000;

/// Groups and ACL rows read with `groupsquery` and `aclquery`: in one round trip when
/// MariaDB takes the queries as one `UNION ALL` of derived tables (each part tagged by its
/// index), else one query per part.
pub struct MysqlRules {
    db: Arc<Db>,
    groupsquery: Option<Query>,
    aclquery: Option<Query>,
    parts: Vec<RulePart>,
    /// The parts as one statement (`None` with a single part).
    combined: Option<Query>,
    /// Cleared for good when the server refuses the combined statement (e.g. the queries
    /// return different numbers of columns).
    combined_works: AtomicBool,
}

impl MysqlRules {
    pub fn new(
        db: Arc<Db>,
        groupsquery: Option<Query>,
        aclquery: Option<Query>,
        subscribe_level: u8,
    ) -> Self {
        let parts = rule_parts(groupsquery.is_some(), aclquery.as_ref(), subscribe_level);
        let mut rules = MysqlRules {
            db,
            groupsquery,
            aclquery,
            parts,
            combined: None,
            combined_works: AtomicBool::new(true),
        };
        if rules.parts.len() > 1 {
            let sql = rules
                .parts
                .iter()
                .enumerate()
                .map(|(index, part)| {
                    format!(
                        "SELECT {index} AS chat_auth_part, p{index}.* FROM ({}) AS p{index}",
                        rules.query(*part).sql.trim().trim_end_matches(';')
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            rules.combined = Some(Query {
                sql,
                params: Vec::new(),
            });
        }
        rules
    }

    pub fn has_aclquery(&self) -> bool {
        self.aclquery.is_some()
    }

    fn query(&self, part: RulePart) -> &Query {
        match part {
            RulePart::Groups => self.groupsquery.as_ref(),
            RulePart::Acl(_) => self.aclquery.as_ref(),
        }
        .expect("parts are made from the queries that exist")
    }

    /// The values for one part's placeholders.
    fn values(&self, part: RulePart, username: &str, user_id: &str) -> Vec<Value> {
        self.query(part)
            .params
            .iter()
            .map(|param| match (param, part) {
                (Param::Access, RulePart::Acl(level)) => Value::from(level),
                (Param::UserId, _) => Value::from(user_id),
                _ => Value::from(username),
            })
            .collect()
    }

    /// The first column of each row as text, by part.
    fn read(&self, username: &str, user_id: &str) -> Result<Vec<Vec<String>>, DbError> {
        let text = |value: Option<&Value>| {
            value
                .and_then(value_bytes)
                .and_then(|bytes| String::from_utf8(bytes).ok())
        };
        if let Some(combined) = self
            .combined
            .as_ref()
            .filter(|_| self.combined_works.load(Ordering::Relaxed))
        {
            let values = self
                .parts
                .iter()
                .flat_map(|part| self.values(*part, username, user_id))
                .collect();
            match self
                .db
                .rows(combined, values, MAX_RULE_ROWS * self.parts.len())
            {
                Ok(rows) => {
                    let mut texts = vec![Vec::new(); self.parts.len()];
                    for row in rows {
                        let part = text(row.as_ref(0)).and_then(|t| t.parse::<usize>().ok());
                        if let (Some(part), Some(value)) = (part, text(row.as_ref(1))) {
                            if let Some(texts) = texts.get_mut(part) {
                                texts.push(value);
                            }
                        }
                    }
                    return Ok(texts);
                }
                Err(DbError::Query(why)) => {
                    self.combined_works.store(false, Ordering::Relaxed);
                    log::info!(
                        "groupsquery and aclquery are read with one query each from now on: \
                         MariaDB refused them as one statement ({why})"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.parts
            .iter()
            .map(|part| {
                let rows = self.db.rows(
                    self.query(*part),
                    self.values(*part, username, user_id),
                    MAX_RULE_ROWS,
                )?;
                Ok(rows.iter().filter_map(|row| text(row.as_ref(0))).collect())
            })
            .collect()
    }

    pub fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError> {
        let texts = self.read(username, user_id)?;
        Ok(assemble(&self.parts, texts, username, user_id))
    }
}

/// Users read with the configured `userquery` / `superquery` / `cert_userquery`.
pub struct MysqlUsers {
    db: Arc<Db>,
    userquery: Query,
    superquery: Option<Query>,
    cert_userquery: Option<Query>,
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
    value
        .and_then(value_bytes)
        .is_some_and(|bytes| super::truthy(&bytes))
}

impl MysqlUsers {
    pub fn new(
        db: Arc<Db>,
        userquery: Query,
        superquery: Option<Query>,
        cert_userquery: Option<Query>,
    ) -> Self {
        MysqlUsers {
            db,
            userquery,
            superquery,
            cert_userquery,
        }
    }

    /// The database the users are read from (storage writes to the same one).
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    pub fn fetch_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        self.user_row(&self.userquery, username)
    }

    /// The user's row now (`None`: no such user, or no hash), for re-checks and refreshes:
    /// the stored hash and whether the row (the column, `superquery`) says superuser.
    pub fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError> {
        UserNow::from_row(self.fetch_user(username)?, username, || {
            self.superquery(username)
        })
    }

    fn user_row(&self, query: &Query, username: &str) -> Result<Option<UserRecord>, BackendError> {
        let Some(row) = self.db.first_row(query, bind(query, username))? else {
            return Ok(None);
        };
        let text = |name: &str| {
            column(&row, name)
                .and_then(value_bytes)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok(Some(UserRecord {
            hash: row.as_ref(0).and_then(value_bytes),
            salt: column(&row, "salt").and_then(value_bytes),
            user_id: text("user_id"),
            user_id_null: column(&row, "user_id").is_some_and(|v| *v == Value::NULL),
            username: text("username"),
            is_superuser: truthy(column(&row, "is_superuser")),
        }))
    }
}

impl UserSource for MysqlUsers {
    fn kind(&self) -> BackendKind {
        BackendKind::Mysql
    }

    fn lookup(
        &self,
        username: &str,
        _password: &[u8],
        _client: &[u8],
    ) -> Result<Lookup, BackendError> {
        Ok(match self.fetch_user(username)? {
            Some(record) => Lookup::Row(record),
            None => Lookup::Unknown,
        })
    }

    fn fetch_certificate_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        self.user_row(
            self.cert_userquery.as_ref().unwrap_or(&self.userquery),
            username,
        )
    }

    fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>> {
        let query = self.superquery.as_ref()?;
        Some(
            self.db
                .first_row(query, bind(query, username))
                .map(|row| row.is_some_and(|row| truthy(row.as_ref(0))))
                .map_err(BackendError::from),
        )
    }
}

/// The MySQL backend's two parts: its users (a [`UserSource`]) and their rules, which the
/// background threads load (a [`RuleSource`]).
#[derive(Clone)]
pub struct MysqlBackend {
    pub users: Arc<MysqlUsers>,
    pub rules: Arc<MysqlRules>,
}

impl RuleSource for MysqlBackend {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError> {
        self.rules.load(username, user_id)
    }

    fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError> {
        self.users.user_now(username)
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
