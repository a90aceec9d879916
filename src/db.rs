//! The MySQL connection pool, with timeouts on every network step and a circuit breaker,
//! so the broker thread never waits on a database it already knows is down or stalled.
//!
//! One round trip that fails for want of the server (gone, refused, or timed out: paused,
//! a locked table, a long DDL) opens the breaker: every query fails at once, and the
//! prober, after a pause that doubles at each failed probe (`Breaker`), asks the server
//! a real query (the pool's probe statement: a user lookup for the logins' pool), not a
//! ping, which a locked table would answer. Only its success closes the breaker.

use crate::query::Query;
use crate::tls::TlsConfig;
use mysql::prelude::Queryable;
use mysql::{
    DriverError, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn, Row, Value,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A MySQL server and how its pool connects (`host`, `port`, `socket`, `dbname`, `user`,
/// `pass`, `ssl_*`, the timeouts, `pool_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub socket: Option<PathBuf>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub tls: Option<TlsConfig>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub pool_size: usize,
}

/// The first pause of an open breaker before the prober asks again.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause: the most a recovered server waits to be used again.
const LONGEST_PAUSE: Duration = Duration::from_secs(8);

/// How long an open breaker waits before each probe: `FIRST_PAUSE`, doubling at each
/// probe that fails, up to `LONGEST_PAUSE`; back to the first once a probe succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    next_pause: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            next_pause: FIRST_PAUSE,
        }
    }
}

impl Breaker {
    /// The pause before the next probe (the breaker is open).
    pub fn pause(&mut self) -> Duration {
        let pause = self.next_pause;
        self.next_pause = (pause * 2).min(LONGEST_PAUSE);
        pause
    }

    /// A probe succeeded: the breaker closes.
    pub fn closed(&mut self) {
        self.next_pause = FIRST_PAUSE;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// No connection (down, unreachable, refused our credentials, timed out). Fails fast
    /// until the prober sees the server answer again.
    Unavailable(String),
    /// The server answered with an error for this statement (a broken query, usually).
    Query(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            DbError::Query(why) => write!(f, "query failed: {why}"),
        }
    }
}

/// Statements checked by the prober on its first successful connection, by option name, so
/// a typo in a query is reported at start rather than at the first login.
pub type StatementChecks = Vec<(&'static str, String)>;

/// The prober's question to an open breaker: a real query of what the pool serves, with
/// values that match no row (`Probe::of`), or `DO 1` for a pool without one.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    sql: String,
    values: Vec<Value>,
}

impl Probe {
    /// `query` with an empty username and user id (never a login's: the broker passes an
    /// empty username as none) and access 0.
    pub fn of(query: &Query) -> Probe {
        use crate::query::Param;
        Probe {
            sql: query.sql.clone(),
            values: query
                .params
                .iter()
                .map(|param| match param {
                    Param::Username | Param::UserId => Value::from(""),
                    Param::Access => Value::from(0),
                })
                .collect(),
        }
    }

    fn ping() -> Probe {
        Probe {
            sql: "DO 1".into(),
            values: Vec::new(),
        }
    }
}

/// State shared by the broker thread and the prober.
struct Shared {
    /// What waits on this pool, for the outage log lines ("logins", "chat history").
    serves: &'static str,
    /// The option that sizes it, named when every connection stays busy.
    pool_option: &'static str,
    /// Replaced when a panic inside the driver poisons it (see `conn`).
    pool: Mutex<Pool>,
    opts: Opts,
    down: AtomicBool,
    stop: AtomicBool,
    /// Wakes the prober: set when a query finds MySQL down, and by shutdown.
    wake: Mutex<bool>,
    signal: Condvar,
}

impl Shared {
    fn wake(&self) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.signal.notify_all();
    }

    /// Records an outage. The swap makes one log line per outage, whoever noticed it first.
    fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            log::error!(
                "MySQL unreachable ({why}); {} refused until it answers",
                self.serves
            );
        }
    }

    /// A connection, waiting at most `wait`. A pool whose lock was poisoned by a panic in
    /// the driver is replaced, so one panic cannot refuse every later login.
    fn conn(&self, wait: Duration) -> mysql::Result<PooledConn> {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = catch_unwind(AssertUnwindSafe(|| pool.try_get_conn(wait)))
            .unwrap_or_else(|_| Err(DriverError::PoisonedPoolMutex.into()));
        if let Err(mysql::Error::DriverError(DriverError::PoisonedPoolMutex)) = &result {
            log::error!("the MySQL pool was broken by an internal panic; replacing it");
            self.replace_pool();
        }
        result
    }

    /// Runs `work` on a pooled connection. Connections are not pinged at every checkout (that
    /// doubled the round trips of every query); a connection found dead instead takes the
    /// whole pool with it (its siblings died with the same server) and `work` runs once
    /// more on a fresh connection, so a MySQL restart costs no login. A round trip that
    /// timed out is not tried again: the server is stalled, and a second try would make
    /// the caller (a login, on the broker thread) wait as long again.
    fn with_conn<T>(
        &self,
        wait: Duration,
        mut work: impl FnMut(&mut PooledConn) -> mysql::Result<T>,
    ) -> mysql::Result<T> {
        match self.conn(wait).and_then(|mut conn| work(&mut conn)) {
            Err(e) if connection_died(&e) => {
                // A connection that timed out mid-answer is out of step with the server.
                self.replace_pool();
                if timed_out(&e) {
                    return Err(e);
                }
                self.conn(wait).and_then(|mut conn| work(&mut conn))
            }
            other => other,
        }
    }

    /// Sleeps `pause`, or less if the plugin stops (`false` then).
    fn sleep(&self, pause: Duration) -> bool {
        let until = std::time::Instant::now() + pause;
        let mut woken = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            let Some(left) = until.checked_duration_since(std::time::Instant::now()) else {
                return true;
            };
            woken = self
                .signal
                .wait_timeout(woken, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            *woken = false;
        }
    }

    fn replace_pool(&self) {
        if let Ok(fresh) = Pool::new(self.opts.clone()) {
            *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
    }
}

pub struct Db {
    wait: Duration,
    shared: Arc<Shared>,
    prober: Option<JoinHandle<()>>,
    /// The TLS files the connector reads at each new connection.
    _tls: Option<crate::tls::TlsFiles>,
}

impl Db {
    /// Builds the pool (no connection is opened here: a dead database must not stop the
    /// broker from starting) and starts the prober, which connects at once in the background.
    /// `serves` names what waits on the pool in its outage lines ("logins"), `pool_option`
    /// the option that sizes it.
    pub fn start(
        config: &DbConfig,
        checks: StatementChecks,
        probe: Option<Probe>,
        serves: &'static str,
        pool_option: &'static str,
    ) -> Result<Db, String> {
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::prepare)
            .transpose()
            .map_err(|(option, why)| format!("auth_opt_{option} (plugin_opt_{option}): {why}"))?;
        let opts = opts(config, tls.as_ref())?;
        let pool = Pool::new(opts.clone()).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            serves,
            pool_option,
            pool: Mutex::new(pool),
            opts,
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Mutex::new(true),
            signal: Condvar::new(),
        });
        let wait = config.connect_timeout + config.query_timeout;
        let prober = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("chat-auth-db-probe".into())
                .spawn(move || probe_loop(&shared, wait, checks, probe.unwrap_or_else(Probe::ping)))
                .map_err(|e| format!("cannot start the database prober thread: {e}"))?
        };
        Ok(Db {
            wait,
            shared,
            prober: Some(prober),
            _tls: tls,
        })
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::Acquire)
    }

    /// Runs `query` with `values` bound to its placeholders and returns its first row.
    pub fn first_row(&self, query: &Query, values: Vec<Value>) -> Result<Option<Row>, DbError> {
        if self.is_down() {
            return Err(DbError::Unavailable("still unreachable".into()));
        }
        let result = self.shared.with_conn(self.wait, |conn| {
            conn.exec_first::<Row, _, _>(&query.sql, values.clone())
        });
        result.map_err(|e| self.classify(e))
    }

    /// Runs `query` and returns at most `limit` rows (the rest are read and dropped, with a
    /// warning, so one user's rules stay bounded in memory).
    pub fn rows(
        &self,
        query: &Query,
        values: Vec<Value>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        if self.is_down() {
            return Err(DbError::Unavailable("still unreachable".into()));
        }
        let result = self.shared.with_conn(self.wait, |conn| {
            let mut rows = Vec::new();
            let mut dropped = 0usize;
            for row in conn.exec_iter(&query.sql, values.clone())? {
                let row = row?;
                if rows.len() < limit {
                    rows.push(row);
                } else {
                    dropped += 1;
                }
            }
            if dropped > 0 {
                log::warn!(
                    "a query returned {} rows; only the first {limit} are used",
                    limit + dropped
                );
            }
            Ok(rows)
        });
        result.map_err(|e| self.classify(e))
    }

    /// Runs one statement without parameters (the writer's probe of its table).
    pub fn execute(&self, sql: &str) -> Result<(), DbError> {
        if self.is_down() {
            return Err(DbError::Unavailable("still unreachable".into()));
        }
        self.shared
            .with_conn(self.wait, |conn| conn.query_drop(sql))
            .map_err(|e| self.classify(e))
    }

    fn classify(&self, error: mysql::Error) -> DbError {
        match classify(error) {
            (DbError::Unavailable(why), true) => {
                self.shared.mark_down(&why);
                self.shared.wake();
                DbError::Unavailable(why)
            }
            // A busy pool: name the option that sizes this one.
            (DbError::Unavailable(why), false) => {
                DbError::Unavailable(format!("{why} ({})", self.shared.pool_option))
            }
            (error, _) => error,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(prober) = self.prober.take() {
            let _ = prober.join();
        }
    }
}

/// What an error means, and whether it is an outage (MySQL marked down until the prober
/// sees it answer). A server error is `Query`. A pool whose every connection stayed busy
/// for the whole wait is not an outage: the server answers, the plugin is just asking a
/// lot; later logins still try.
fn classify(error: mysql::Error) -> (DbError, bool) {
    match error {
        mysql::Error::MySqlError(e) => (DbError::Query(e.to_string()), false),
        mysql::Error::DriverError(DriverError::Timeout) => (
            DbError::Unavailable("every MySQL connection of the pool stayed busy".into()),
            false,
        ),
        other => (DbError::Unavailable(other.to_string()), true),
    }
}

/// Whether a round trip ran out of time (connect or read timeout): a stalled server.
/// The driver reports a read timeout as a codec error (the packet reader's I/O error).
fn timed_out(error: &mysql::Error) -> bool {
    let io = match error {
        mysql::Error::IoError(e) => e,
        mysql::Error::CodecError(mysql_common::proto::codec::error::PacketCodecError::Io(e)) => e,
        mysql::Error::DriverError(DriverError::ConnectTimeout) => return true,
        _ => return false,
    };
    matches!(
        io.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Whether an error means the connection is unusable (I/O, protocol, TLS), as opposed to
/// the server refusing a statement or every pooled connection being busy.
fn connection_died(error: &mysql::Error) -> bool {
    !matches!(
        error,
        mysql::Error::DriverError(
            DriverError::Timeout
                | DriverError::MismatchedStmtParams(..)
                | DriverError::Params(_)
                | DriverError::MixedParams
        ) | mysql::Error::MySqlError(_)
            | mysql::Error::UrlError(_)
            | mysql::Error::FromValueError(_)
            | mysql::Error::FromRowError(_)
    )
}

/// The connection settings of `config` (the writer's own connection uses them too).
pub(crate) fn opts(config: &DbConfig, tls: Option<&crate::tls::TlsFiles>) -> Result<Opts, String> {
    let constraints =
        PoolConstraints::new(0, config.pool_size).ok_or_else(|| "invalid pool size".to_string())?;
    let mut builder = OptsBuilder::new()
        .ip_or_hostname(Some(config.host.clone()))
        .tcp_port(config.port)
        .user(config.user.clone())
        .pass(config.pass.clone())
        .db_name(config.dbname.clone())
        .tcp_connect_timeout(Some(config.connect_timeout))
        .read_timeout(Some(config.query_timeout))
        .write_timeout(Some(config.query_timeout))
        // Never silently hop to a socket the config did not name.
        .prefer_socket(false)
        .pool_opts(
            PoolOpts::default()
                .with_constraints(constraints)
                // Keeps prepared statements cached across uses; no transaction is left open.
                .with_reset_connection(false)
                // No COM_PING per checkout: `Shared::with_conn` handles dead connections.
                .with_check_health(false),
        );
    if let Some(socket) = &config.socket {
        builder = builder.socket(Some(socket.to_string_lossy().into_owned()));
    }
    if let Some(tls) = tls {
        // Verification stays on: the certificate chain and the host name.
        let mut ssl = mysql::SslOpts::default().with_root_cert_path(tls.roots.clone());
        if let Some((pkcs12, password)) = &tls.identity {
            ssl = ssl.with_client_identity(Some(
                mysql::ClientIdentity::new(pkcs12.clone()).with_password(password.clone()),
            ));
        }
        builder = builder.ssl_opts(Some(ssl));
    }
    Ok(builder.into())
}

/// Connects at start (reporting statements the server will not prepare), then sleeps until
/// a query reports the database down; then, while it is down, pauses as the `Breaker` says
/// and asks `probe`, until the server answers it.
fn probe_loop(shared: &Shared, wait: Duration, checks: StatementChecks, probe: Probe) {
    let mut checked = false;
    let mut breaker = Breaker::default();
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let down = shared.down.load(Ordering::Acquire);
        if checked && !down {
            let guard = shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            let mut woken = shared
                .signal
                .wait_while(guard, |woken| !*woken)
                .unwrap_or_else(|e| e.into_inner());
            *woken = false;
            continue;
        }
        if down && !shared.sleep(breaker.pause()) {
            return;
        }
        // A panic here must not end the prober: logins would stay refused for good.
        let probed = catch_unwind(AssertUnwindSafe(|| {
            probe_once(shared, wait, &checks, checked, &probe)
        }))
        .unwrap_or_else(|_| Err("internal panic while probing".to_string()));
        match probed {
            Ok(()) => {
                checked = true;
                breaker.closed();
                if shared.down.swap(false, Ordering::AcqRel) {
                    log::info!("MySQL answers again ({} served again)", shared.serves);
                }
            }
            Err(e) => shared.mark_down(&e),
        }
    }
}

/// One round trip of `probe`; on the first success also prepares each configured statement
/// once, so a query the server rejects is reported at start rather than at the first login.
/// A server error for the probe itself still proves the server answers (the statement check
/// reports it).
fn probe_once(
    shared: &Shared,
    wait: Duration,
    checks: &StatementChecks,
    checked: bool,
    probe: &Probe,
) -> Result<(), String> {
    let mut conn = shared
        .with_conn(wait, |conn| {
            match conn.exec_drop(&probe.sql, probe.values.clone()) {
                Err(mysql::Error::MySqlError(_)) => Ok(()),
                other => other,
            }
        })
        .and_then(|()| shared.conn(wait))
        .map_err(|e| e.to_string())?;
    if !checked {
        for (option, sql) in checks {
            if let Err(e) = conn.prep(sql) {
                log::error!(
                    "auth_opt_{option} is rejected by the server: {e}; logins that need it \
                     will be refused"
                );
            }
        }
    }
    Ok(())
}

/// Reads a column of a row as bytes: text and blobs as they are, numbers as decimal text.
pub fn value_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(bytes.clone()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::UInt(n) => Some(n.to_string().into_bytes()),
        Value::Float(n) => Some(n.to_string().into_bytes()),
        Value::Double(n) => Some(n.to_string().into_bytes()),
        other => Some(other.as_sql(true).into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_connections_are_told_from_refused_statements_and_a_busy_pool() {
        assert!(connection_died(&mysql::Error::server_disconnected()));
        assert!(connection_died(&DriverError::PacketOutOfSync.into()));
        assert!(!connection_died(&DriverError::MixedParams.into()));
        assert!(!connection_died(&DriverError::Timeout.into()));
        let refused = mysql::Error::MySqlError(mysql::MySqlError {
            state: "42000".into(),
            message: "SELECT command denied".into(),
            code: 1142,
        });
        assert!(!connection_died(&refused));
    }

    #[test]
    fn a_busy_pool_is_not_an_outage_and_a_dead_server_is() {
        let (error, outage) = classify(DriverError::Timeout.into());
        assert!(matches!(error, DbError::Unavailable(why) if why.contains("busy")));
        assert!(!outage);
        let (error, outage) = classify(mysql::Error::server_disconnected());
        assert!(matches!(error, DbError::Unavailable(_)));
        assert!(outage);
        let refused = mysql::Error::MySqlError(mysql::MySqlError {
            state: "23000".into(),
            message: "CONSTRAINT `no_spam` failed".into(),
            code: 4025,
        });
        assert!(!classify(refused).1);
    }

    #[test]
    fn an_open_breaker_pauses_longer_at_each_failed_probe() {
        let mut breaker = Breaker::default();
        let pauses: Vec<u64> = (0..7).map(|_| breaker.pause().as_millis() as u64).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        breaker.closed();
        assert_eq!(breaker.pause(), FIRST_PAUSE);
    }

    #[test]
    fn timeouts_are_told_from_a_dead_connection() {
        let read_timeout = || std::io::Error::from(std::io::ErrorKind::WouldBlock);
        let as_codec: mysql::Error =
            mysql_common::proto::codec::error::PacketCodecError::Io(read_timeout()).into();
        let as_io: mysql::Error = read_timeout().into();
        for error in [as_codec, as_io] {
            assert!(timed_out(&error) && connection_died(&error), "{error}");
        }
        assert!(timed_out(&DriverError::ConnectTimeout.into()));
        assert!(!timed_out(&mysql::Error::server_disconnected()));
        assert!(!timed_out(&DriverError::Timeout.into()), "a busy pool");
    }

    #[test]
    fn the_probe_is_the_query_with_values_that_match_nobody() {
        use crate::query::{ACL_BINDINGS, translate};
        let query = translate(
            "SELECT topic FROM acls WHERE username = %s AND rw >= %d",
            ACL_BINDINGS,
        )
        .unwrap();
        let probe = Probe::of(&query);
        assert_eq!(probe.sql, query.sql);
        assert_eq!(probe.values, [Value::from(""), Value::from(0)]);
    }

    #[test]
    fn values_read_as_text() {
        assert_eq!(value_bytes(&Value::NULL), None);
        assert_eq!(value_bytes(&Value::Int(-7)), Some(b"-7".to_vec()));
        assert_eq!(value_bytes(&Value::UInt(42)), Some(b"42".to_vec()));
        assert_eq!(
            value_bytes(&Value::Bytes(b"PBKDF2$x".to_vec())),
            Some(b"PBKDF2$x".to_vec())
        );
    }
}
