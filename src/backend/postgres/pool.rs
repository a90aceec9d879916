//! Connections to PostgreSQL (`tokio-postgres`, run on a small runtime of its own), with the
//! MySQL side's guarantees (`crate::db`): every network step under a timeout, statements
//! prepared once per connection and every value bound, and a circuit breaker: a round trip
//! that fails for want of the server opens it, every query then fails at once, and the
//! prober asks the server a real query (a user lookup) after pauses that double
//! (`crate::db::Breaker`) until it answers.
//!
//! The callers (a login on the broker thread, the rules threads) wait on `block_on`, each
//! for at most the connect timeout plus the query timeout (twice when a connection found
//! dead is replaced, as on the MySQL side: a restarted server costs no login).

use super::tls::{PgTlsConfig, SslMode};
use super::values::{PgValue, Raw, readable, text_of};
use crate::db::{Breaker, DbError};
use crate::query::{Param, Query};
use futures_util::TryStreamExt;
use postgres_openssl::MakeTlsConnector;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

/// A PostgreSQL server and how its connections are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDbConfig {
    /// A host name, an address, or (starting with `/`) the directory of its Unix socket.
    pub host: String,
    pub port: u16,
    pub dbname: Option<String>,
    pub user: String,
    pub pass: Option<String>,
    pub tls: PgTlsConfig,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub pool_size: usize,
    /// go-auth's `pg_max_life_time`: a connection older than this is replaced.
    pub max_life: Option<Duration>,
}

/// A statement checked at start, by option name. An `optional` one (a default the operator
/// did not write) that PostgreSQL refuses is set aside (`PgDb::set_aside`) and logged
/// instead of stopping the broker.
#[derive(Debug, Clone)]
pub struct Check {
    pub option: &'static str,
    pub query: Query,
    pub optional: bool,
}

pub type PgChecks = Vec<Check>;

/// One row, each column as text (`values::text_of`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRow {
    pub names: Arc<[String]>,
    pub values: Vec<Option<Vec<u8>>>,
}

impl PgRow {
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.values.get(index)?.as_deref()
    }

    /// The column `name` (any case): `None` when absent, `Some(None)` when NULL.
    pub fn column(&self, name: &str) -> Option<Option<&[u8]>> {
        let index = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))?;
        Some(self.get(index))
    }
}

/// The values of `query`'s placeholders.
pub fn values_for(query: &Query, username: &str, user_id: &str, access: u8) -> Vec<PgValue> {
    query
        .params
        .iter()
        .map(|param| match param {
            Param::Username => PgValue::Text(username.to_string()),
            Param::UserId => PgValue::Text(user_id.to_string()),
            Param::Access => PgValue::Int(access.into()),
        })
        .collect()
}

struct Conn {
    client: Client,
    born: Instant,
    statements: Mutex<HashMap<String, Statement>>,
    /// The connection's task, ended with it.
    task: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a round trip failed.
enum Failure {
    /// No answer in time: a stalled server (not tried again).
    TimedOut(&'static str),
    Pg(tokio_postgres::Error),
}

impl Failure {
    fn text(&self) -> String {
        match self {
            Failure::TimedOut(step) => format!("{step} timed out"),
            Failure::Pg(e) => match e.as_db_error() {
                Some(db) => format!("{} ({})", db.message(), db.code().code()),
                None => e.to_string(),
            },
        }
    }

    /// The server refused this statement (its connection is still good).
    fn refused(&self) -> bool {
        match self {
            Failure::TimedOut(_) => false,
            Failure::Pg(e) => match e.code() {
                Some(code) => !outage_code(code),
                // Our value did not fit the placeholder's type: nothing was sent.
                None => e.to_string().starts_with("error serializing parameter"),
            },
        }
    }
}

/// Server errors that mean the server (not the statement) is the trouble: shutting down or
/// starting up, out of connections, or the connection broken.
fn outage_code(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "57" | "58")
        || *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        || *code == SqlState::INVALID_CATALOG_NAME
}

struct Shared {
    serves: &'static str,
    runtime: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    tls: Option<MakeTlsConnector>,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    connect_timeout: Duration,
    query_timeout: Duration,
    max_life: Option<Duration>,
    down: AtomicBool,
    stop: AtomicBool,
    wake: Mutex<bool>,
    signal: Condvar,
    /// Optional statements PostgreSQL refused.
    set_aside: Mutex<Vec<&'static str>>,
}

impl Shared {
    fn wake(&self) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.signal.notify_all();
    }

    fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            log::error!(
                "PostgreSQL unreachable ({why}); {} refused until it answers",
                self.serves
            );
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let connecting = async {
            match &self.tls {
                None => {
                    let (client, connection) = self.config.connect(NoTls).await?;
                    let task = tokio::spawn(connection).abort_handle();
                    Ok::<_, tokio_postgres::Error>((client, task))
                }
                Some(tls) => {
                    let (client, connection) = self.config.connect(tls.clone()).await?;
                    let task = tokio::spawn(connection).abort_handle();
                    Ok((client, task))
                }
            }
        };
        let (client, task) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| Failure::TimedOut("connecting"))?
            .map_err(Failure::Pg)?;
        Ok(Conn {
            client,
            born: Instant::now(),
            statements: Mutex::new(HashMap::new()),
            task,
        })
    }

    /// The connection of `slot`, made when it has none (or a closed or too old one).
    async fn conn(&self, slot: usize) -> Result<Arc<Conn>, Failure> {
        let held = self.slots[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(conn) = held.filter(|c| {
            !c.client.is_closed() && self.max_life.is_none_or(|life| c.born.elapsed() < life)
        }) {
            return Ok(conn);
        }
        let conn = Arc::new(self.connect().await?);
        *self.slots[slot].lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn forget(&self, slot: usize) {
        self.slots[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    async fn prepared(&self, conn: &Conn, sql: &str) -> Result<Statement, Failure> {
        let cached = conn
            .statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = tokio::time::timeout(self.query_timeout, conn.client.prepare(sql))
            .await
            .map_err(|_| Failure::TimedOut("preparing a statement"))?
            .map_err(Failure::Pg)?;
        conn.statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Runs each statement (pipelined on one connection: one round trip) and reads at most
    /// `limit` rows of each.
    async fn run(
        &self,
        slot: usize,
        parts: &[(&Query, Vec<PgValue>)],
        limit: usize,
    ) -> Result<Vec<Vec<PgRow>>, Failure> {
        let conn = self.conn(slot).await?;
        let conn = &*conn;
        let work = async {
            let statements = futures_util::future::try_join_all(
                parts
                    .iter()
                    .map(|(query, _)| self.prepared(conn, &query.sql)),
            )
            .await?;
            futures_util::future::try_join_all(parts.iter().zip(&statements).map(
                |((_, values), statement)| async move {
                    let names: Arc<[String]> = statement
                        .columns()
                        .iter()
                        .map(|c| c.name().to_string())
                        .collect();
                    let types: Vec<_> = statement
                        .columns()
                        .iter()
                        .map(|c| c.type_().clone())
                        .collect();
                    let stream = conn
                        .client
                        .query_raw(statement, values.iter())
                        .await
                        .map_err(Failure::Pg)?;
                    let mut stream = std::pin::pin!(stream);
                    let mut rows = Vec::new();
                    let mut dropped = 0usize;
                    while let Some(row) = stream.try_next().await.map_err(Failure::Pg)? {
                        if rows.len() == limit {
                            dropped += 1;
                            continue;
                        }
                        let values = (0..types.len())
                            .map(|i| {
                                let raw: Raw = row.try_get(i).map_err(Failure::Pg)?;
                                Ok(raw.0.and_then(|raw| text_of(&types[i], &raw)))
                            })
                            .collect::<Result<Vec<_>, Failure>>()?;
                        rows.push(PgRow {
                            names: Arc::clone(&names),
                            values,
                        });
                    }
                    if dropped > 0 {
                        log::warn!(
                            "a query returned {} rows; only the first {limit} are used",
                            limit + dropped
                        );
                    }
                    Ok(rows)
                },
            ))
            .await
        };
        tokio::time::timeout(self.query_timeout, work)
            .await
            .map_err(|_| Failure::TimedOut("a query"))?
    }

    /// `run` on the next connection; a connection found dead is replaced and the work tried
    /// once more (not after a timeout: the server is stalled).
    fn run_blocking(
        &self,
        parts: &[(&Query, Vec<PgValue>)],
        limit: usize,
    ) -> Result<Vec<Vec<PgRow>>, Failure> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let result = self.runtime.block_on(self.run(slot, parts, limit));
        match result {
            Err(failure) if !failure.refused() => {
                self.forget(slot);
                if matches!(failure, Failure::TimedOut(_)) {
                    return Err(failure);
                }
                self.runtime
                    .block_on(self.run(slot, parts, limit))
                    .inspect_err(|failure| {
                        if !failure.refused() {
                            self.forget(slot);
                        }
                    })
            }
            other => other,
        }
    }

    fn sleep(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        let mut woken = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
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
}

/// Connections to one PostgreSQL server, and its prober.
pub struct PgDb {
    shared: Arc<Shared>,
    prober: Option<JoinHandle<()>>,
}

/// What a statement check found wrong (the option named), or that the server did not answer.
enum CheckFailed {
    Shape(String),
    Unreachable(String),
}

impl PgDb {
    /// Makes the connector and tries the server once, for at most the connect and query
    /// timeouts: when it answers, each statement of `checks` is prepared and its shape
    /// checked, and one the server refuses (or whose columns cannot be read) is an `Err`
    /// naming its option, which stops the broker. A server that does not answer stops
    /// nothing: the prober connects in the background and checks them then (logged).
    pub fn start(
        config: &PgDbConfig,
        checks: PgChecks,
        probe: Query,
        serves: &'static str,
    ) -> Result<PgDb, String> {
        let tls = super::tls::connector(&config.tls)
            .map_err(|(option, why)| format!("auth_opt_{option} (plugin_opt_{option}): {why}"))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .user(&config.user)
            .connect_timeout(config.connect_timeout)
            .application_name("chat-auth")
            .keepalives(true)
            .ssl_mode(match config.tls.mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(dbname) = &config.dbname {
            pg.dbname(dbname);
        }
        if let Some(pass) = &config.pass {
            pg.password(pass);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chat-auth-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL runtime: {e}"))?;
        let shared = Arc::new(Shared {
            serves,
            runtime,
            config: pg,
            tls,
            slots: (0..config.pool_size.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            query_timeout: config.query_timeout,
            max_life: config.max_life,
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Mutex::new(false),
            signal: Condvar::new(),
            set_aside: Mutex::new(Vec::new()),
        });
        let checked = match check(&shared, &checks) {
            Ok(()) => true,
            Err(CheckFailed::Shape(why)) => return Err(why),
            Err(CheckFailed::Unreachable(why)) => {
                shared.mark_down(&why);
                false
            }
        };
        let prober = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("chat-auth-pg-probe".into())
                .spawn(move || probe_loop(&shared, checks, checked, probe))
                .map_err(|e| format!("cannot start the PostgreSQL prober thread: {e}"))?
        };
        Ok(PgDb {
            shared,
            prober: Some(prober),
        })
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::Acquire)
    }

    /// Whether the optional statement of `option` was refused at its check.
    pub fn set_aside(&self, option: &str) -> bool {
        self.shared
            .set_aside
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&option)
    }

    /// Runs `query` with `values` bound and returns its first row.
    pub fn first_row(&self, query: &Query, values: Vec<PgValue>) -> Result<Option<PgRow>, DbError> {
        Ok(self
            .rows(&[(query, values)], 1)?
            .pop()
            .and_then(|rows| rows.into_iter().next()))
    }

    /// Runs the statements in one round trip; at most `limit` rows of each.
    pub fn rows(
        &self,
        parts: &[(&Query, Vec<PgValue>)],
        limit: usize,
    ) -> Result<Vec<Vec<PgRow>>, DbError> {
        if self.is_down() {
            return Err(DbError::Unavailable("still unreachable".into()));
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.shared.run_blocking(parts, limit)))
            .unwrap_or_else(|_| Err(Failure::TimedOut("a query (internal panic)")));
        result.map_err(|failure| {
            if failure.refused() {
                DbError::Query(failure.text())
            } else {
                let why = failure.text();
                self.shared.mark_down(&why);
                self.shared.wake();
                DbError::Unavailable(why)
            }
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(prober) = self.prober.take() {
            let _ = prober.join();
        }
        for slot in &self.shared.slots {
            slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

/// Prepares each statement of `checks` on one connection and checks what it returns and
/// binds.
fn check(shared: &Shared, checks: &PgChecks) -> Result<(), CheckFailed> {
    let unreachable = |f: Failure| CheckFailed::Unreachable(f.text());
    let work = async {
        let conn = shared.connect().await.map_err(unreachable)?;
        for Check {
            option,
            query,
            optional,
        } in checks
        {
            let statement = match shared.prepared(&conn, &query.sql).await {
                Ok(statement) => statement,
                Err(f) if f.refused() && *optional => {
                    log::warn!(
                        "auth_opt_{option} is not given and its default is refused by \
                         PostgreSQL ({}): it is not used",
                        f.text()
                    );
                    shared
                        .set_aside
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(option);
                    continue;
                }
                Err(f) if f.refused() => {
                    return Err(CheckFailed::Shape(format!(
                        "auth_opt_{option} (plugin_opt_{option}) is refused by PostgreSQL: {}",
                        f.text()
                    )));
                }
                Err(f) => return Err(unreachable(f)),
            };
            shape(option, &statement).map_err(CheckFailed::Shape)?;
        }
        // The pool made at once, each connection with the statements prepared: the first
        // logins and rules loads wait on no connection handshake.
        let usable: Vec<&Check> = checks
            .iter()
            .filter(|c| {
                !shared
                    .set_aside
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&c.option)
            })
            .collect();
        *shared.slots[0].lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(conn));
        futures_util::future::join_all((1..shared.slots.len()).map(|slot| {
            let usable = &usable;
            async move {
                let Ok(conn) = shared.connect().await else {
                    return;
                };
                for check in usable {
                    if shared.prepared(&conn, &check.query.sql).await.is_err() {
                        return;
                    }
                }
                *shared.slots[slot].lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::new(conn));
            }
        }))
        .await;
        Ok(())
    };
    shared.runtime.block_on(work)
}

/// A statement chat-auth can read: at least one column, every column and placeholder of a
/// type it reads and binds.
fn shape(option: &str, statement: &Statement) -> Result<(), String> {
    let named = format!("auth_opt_{option} (plugin_opt_{option})");
    if statement.columns().is_empty() {
        return Err(format!("{named} returns no column"));
    }
    for column in statement.columns() {
        if !readable(column.type_()) {
            return Err(format!(
                "{named}: its column '{}' is of type {}, which chat-auth does not read; cast \
                 it in the query (e.g. {}::text)",
                column.name(),
                column.type_().name(),
                column.name()
            ));
        }
    }
    for (i, ty) in statement.params().iter().enumerate() {
        if !readable(ty) {
            return Err(format!(
                "{named}: PostgreSQL takes ${} as {}, which chat-auth cannot bind a name or \
                 number to; cast it (e.g. ${}::text)",
                i + 1,
                ty.name(),
                i + 1
            ));
        }
    }
    Ok(())
}

/// As `crate::db`'s prober: waits until a query reports the server down, then pauses as
/// the `Breaker` says and asks `probe` until the server answers; the statements not yet
/// checked (the server was down at start) are checked at the first answer, and logged.
fn probe_loop(shared: &Shared, checks: PgChecks, mut checked: bool, probe: Query) {
    let mut breaker = Breaker::default();
    let values = values_for(&probe, "", "", 0);
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if !shared.down.load(Ordering::Acquire) {
            let guard = shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            let mut woken = shared
                .signal
                .wait_while(guard, |woken| {
                    !*woken && !shared.stop.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner());
            *woken = false;
            continue;
        }
        if !shared.sleep(breaker.pause()) {
            return;
        }
        let probed = catch_unwind(AssertUnwindSafe(|| {
            match shared.run_blocking(&[(&probe, values.clone())], 1) {
                Err(f) if !f.refused() => return Err(f.text()),
                _ => {}
            }
            if !checked {
                match check(shared, &checks) {
                    Err(CheckFailed::Unreachable(why)) => return Err(why),
                    Err(CheckFailed::Shape(why)) => {
                        log::error!("{why}; logins that need it will be refused")
                    }
                    Ok(()) => {}
                }
                checked = true;
            }
            Ok(())
        }))
        .unwrap_or_else(|_| Err("internal panic while probing".to_string()));
        match probed {
            Ok(()) => {
                breaker.closed();
                if shared.down.swap(false, Ordering::AcqRel) {
                    log::info!("PostgreSQL answers again ({} served again)", shared.serves);
                }
            }
            Err(e) => shared.mark_down(&e),
        }
    }
}

/// A path as the host option may give it (a socket directory).
pub fn is_socket_dir(host: &str) -> bool {
    PathBuf::from(host).is_absolute()
}
