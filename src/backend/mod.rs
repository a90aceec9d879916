//! The backends, each in its own file behind the interfaces here, as mosquitto-go-auth has
//! them: a [`UserSource`] answers who a user is and whether they are a superuser; a
//! [`RuleSource`] loads a user's rules (chat groups and ACL rows) as one set, decided in
//! memory (MySQL: `mysql::MysqlRules`), while the HTTP service answers per client, topic and
//! access (`http::HttpBackend::acl`). Both fail with one [`BackendError`].
//! `auth_opt_backends` lists them in the order they are asked.

use crate::acl::{Patterns, RuleSet};
use crate::db::DbError;
use crate::logging::printable;
use crate::query::{Param, Query};

pub mod http;
pub mod mysql;
pub mod postgres;

/// Which backend let a user in; its ACL checks go to the same backend.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Rules loaded per user from `groupsquery` / `aclquery` and decided in memory.
    #[default]
    Mysql,
    /// Each client, topic and access asked of the HTTP service (cached).
    Http,
    /// As MySQL: rules loaded per user from PostgreSQL's queries, decided in memory.
    Postgres,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Mysql => "mysql",
            BackendKind::Http => "http",
            BackendKind::Postgres => "postgres",
        }
    }

    /// Its users come with a stored hash checked here, and rules loaded per user (MySQL,
    /// PostgreSQL).
    pub fn holds_rows(self) -> bool {
        matches!(self, BackendKind::Mysql | BackendKind::Postgres)
    }

    /// Its users' topics are asked one by one, not decided from loaded rules.
    pub fn asks_per_topic(self) -> bool {
        self == BackendKind::Http
    }
}

/// What the `userquery` row says about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// First column: the stored password hash. `None` when NULL.
    pub hash: Option<Vec<u8>>,
    /// The `salt` column, for salted hex digests.
    pub salt: Option<Vec<u8>>,
    /// The `user_id` column: the chat identity.
    pub user_id: Option<String>,
    /// The query has a `user_id` column and this row holds NULL there: no chat identity,
    /// so the login is refused (the username is no stand-in for a missing id).
    pub user_id_null: bool,
    /// The `username` column: the name as the row holds it. With it, a login must spell the
    /// name byte for byte as stored (a case-insensitive collation finds `steve` for
    /// `Steve`), and only then may a `superusers` or `bridge_users` glob match it.
    pub username: Option<String>,
    /// The `is_superuser` column, read as truthy.
    pub is_superuser: bool,
}

/// A user's row read again (after a SIGHUP re-check, or for a `refreshUser`): what the
/// sessions that row let in must still match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNow {
    /// The stored hash (never empty).
    pub hash: Vec<u8>,
    /// The `is_superuser` column or `superquery` says superuser.
    pub superuser_by_row: bool,
    /// The row holds the name as asked (`UserRecord::holds_name`), for the globs.
    pub named: bool,
}

impl UserNow {
    /// What a row-holding backend's `userquery` row (`None`: no such user) and its
    /// `superquery` say now; `None` also for a row without a stored hash.
    pub fn from_row(
        record: Option<UserRecord>,
        username: &str,
        superquery: impl FnOnce() -> Option<Result<bool, BackendError>>,
    ) -> Result<Option<UserNow>, BackendError> {
        let Some(record) = record else {
            return Ok(None);
        };
        let named = record.holds_name(username);
        let Some(hash) = record.hash.filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let by_query = superquery().transpose()?.unwrap_or(false);
        Ok(Some(UserNow {
            hash,
            superuser_by_row: record.is_superuser || by_query,
            named,
        }))
    }
}

impl UserRecord {
    /// Whether the row proves the name was typed as it is stored (for the globs).
    pub fn holds_name(&self, typed: &str) -> bool {
        self.username.as_deref() == Some(typed)
    }
}

/// What one backend knows of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not its user (or refused by it): the next backend is asked.
    Unknown,
    /// Its user, with a stored hash checked here (MySQL).
    Row(UserRecord),
    /// Its user, the password checked by the backend itself (HTTP).
    Accepted,
}

/// One backend's users (see `crate::backend`).
pub trait UserSource {
    fn kind(&self) -> BackendKind;
    fn lookup(
        &self,
        username: &str,
        password: &[u8],
        client_id: &[u8],
    ) -> Result<Lookup, BackendError>;
    /// `None` when the backend has no superuser question configured.
    fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>>;

    /// The row of a user the broker let in by a TLS certificate (`cert_userquery`, or the
    /// `userquery` row whose hash is not checked).
    fn fetch_certificate_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError>;
}

impl<T: UserSource + ?Sized> UserSource for std::sync::Arc<T> {
    fn kind(&self) -> BackendKind {
        (**self).kind()
    }
    fn lookup(
        &self,
        username: &str,
        password: &[u8],
        client_id: &[u8],
    ) -> Result<Lookup, BackendError> {
        (**self).lookup(username, password, client_id)
    }
    fn superquery(&self, username: &str) -> Option<Result<bool, BackendError>> {
        (**self).superquery(username)
    }
    fn fetch_certificate_user(&self, username: &str) -> Result<Option<UserRecord>, BackendError> {
        (**self).fetch_certificate_user(username)
    }
}

/// Where users' rules (their chat groups and ACL rows) come from, and their rows read again
/// (after a SIGHUP re-check, for a `refreshUser`): MySQL's, loaded on the background threads
/// (`crate::refresh`; the plugin's `Background` times them).
pub trait RuleSource: Send + Sync {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError>;
    /// The user's row now (`None`: no such user, or no stored hash).
    fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError>;
}

/// What a backend failed with; a login it fails is refused, rules it fails are kept as
/// they were (or none, for a new login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// No connection (down, unreachable, refused our credentials, timed out). Fails fast
    /// until the prober sees the server answer again.
    Unavailable(String),
    /// The server answered with an error for this statement (a broken query, usually).
    Query(String),
    /// The HTTP auth service failed (5xx, transport error, timeout, or pausing after one).
    Service(String),
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            BackendError::Query(why) => write!(f, "query failed: {why}"),
            BackendError::Service(why) => write!(f, "HTTP auth service unavailable: {why}"),
        }
    }
}

impl From<DbError> for BackendError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(why) => BackendError::Unavailable(why),
            DbError::Query(why) => BackendError::Query(why),
        }
    }
}

/// A value read as truthy (`is_superuser`, a `superquery` count): a non-zero number, or
/// `true`/`t`/`yes`/`y`/`on`.
pub fn truthy(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes).trim().to_ascii_lowercase();
    match text.parse::<f64>() {
        Ok(n) => n != 0.0,
        Err(_) => matches!(text.as_str(), "true" | "t" | "yes" | "y" | "on"),
    }
}

/// One query a user's rules are read with: the groups, or the ACL rows of an access level
/// (0: a query without an access placeholder, its rows grant every access).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RulePart {
    Groups,
    Acl(u8),
}

/// The queries a user's rules take: the groups, and the ACL rows of each access level.
pub(crate) fn rule_parts(
    groups: bool,
    aclquery: Option<&Query>,
    subscribe_level: u8,
) -> Vec<RulePart> {
    let mut parts = Vec::new();
    if groups {
        parts.push(RulePart::Groups);
    }
    if let Some(query) = aclquery {
        if query.params.contains(&Param::Access) {
            parts.push(RulePart::Acl(1));
            parts.push(RulePart::Acl(2));
            if subscribe_level != 1 {
                parts.push(RulePart::Acl(subscribe_level));
            }
        } else {
            parts.push(RulePart::Acl(0));
        }
    }
    parts
}

fn valid_patterns(mut rows: Vec<String>, username: &str) -> Vec<String> {
    rows.retain(|pattern| {
        let valid = crate::topic::is_valid_filter(pattern);
        if !valid {
            log::warn!(
                "ACL row '{}' of user '{}' is not a valid topic pattern; ignored",
                printable(pattern),
                printable(username)
            );
        }
        valid
    });
    rows
}

/// A user's rules from the first column of each part's rows (as text).
pub(crate) fn assemble(
    parts: &[RulePart],
    texts: Vec<Vec<String>>,
    username: &str,
    user_id: &str,
) -> RuleSet {
    let mut groups = Default::default();
    let mut rows = Patterns::default();
    for (part, texts) in parts.iter().zip(texts) {
        match part {
            RulePart::Groups => groups = texts.into_iter().collect(),
            RulePart::Acl(level) => {
                let patterns = valid_patterns(texts, username);
                match level {
                    0 => {
                        rows.read = patterns.clone();
                        rows.write = patterns.clone();
                        rows.subscribe = patterns;
                    }
                    1 => rows.read = patterns,
                    2 => rows.write = patterns,
                    _ => rows.subscribe = patterns,
                }
            }
        }
    }
    if parts.contains(&RulePart::Acl(1)) && !parts.contains(&RulePart::Acl(4)) {
        // SUBSCRIBE needs a read row (acl_subscribe_level 1).
        rows.subscribe = rows.read.clone();
    }
    RuleSet {
        user_id: user_id.to_string(),
        groups,
        rows,
    }
}
