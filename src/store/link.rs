//! The writer's own MySQL connection. One connection, used only by the writer thread, apart
//! from the logins' pool: a slow or locked messages table is not an outage of the users
//! table, so nothing the writer meets ever marks MySQL down for logins. Every failure keeps
//! what the server said (its error number), because only a refusal of the row itself may
//! set a row aside; everything else (a lock wait, a deadlock, a timeout, a lost connection,
//! a missing grant) is waited out.
//!
//! Lock waits end on the server, not on a client timeout: the session's
//! `innodb_lock_wait_timeout` (row locks) and `lock_wait_timeout` (table locks) are at most
//! `LOCK_WAIT`, well inside the connection's read timeout, so a statement waiting behind
//! another transaction's locks gets a definite answer (ERROR 1205, nothing of it written)
//! and the transaction is rolled back. A read timeout still happens (a server paused or
//! overloaded): then the outcome of a COMMIT in flight is unknown, the connection is
//! dropped, and the batch is written again; the table's unique `message_id` makes that
//! write skip the rows already there, so a message is stored once either way.

use crate::db::DbConfig;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Row, Value};
use std::time::Duration;

/// The longest a statement of the writer waits for another transaction's locks before the
/// server answers ERROR 1205 (lower when the server's own setting is lower).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why a statement of the writer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server refused a row: a constraint, a value the column cannot take, a trigger's
    /// `SIGNAL`, a row too large for it (see `is_refusal`); or a spool record that cannot be
    /// decoded. Nothing was committed. The same row would be refused again.
    Refused(String),
    /// The server answered with another error: a lock wait or a deadlock, a missing grant
    /// or table, a read-only server... Nothing was committed; the rows may go in later.
    Server(String),
    /// No connection could be made: nothing was sent.
    Unreachable(String),
    /// The connection failed or timed out during the statements: whether a COMMIT in
    /// flight took effect is unknown (writing the batch again is harmless).
    Lost(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(why) => write!(f, "refused: {why}"),
            Failure::Server(why) => write!(f, "server error: {why}"),
            Failure::Unreachable(why) => write!(f, "cannot connect: {why}"),
            Failure::Lost(why) => write!(f, "connection lost: {why}"),
        }
    }
}

/// Whether a server error refuses the row itself, so that the same row alone is refused
/// every time, whatever else happens on the server. By SQLSTATE class: `22` (data
/// exception: a value too long, out of range, of the wrong type), `23` (integrity
/// constraint: NOT NULL, a foreign key, a unique key, MariaDB's CHECK), `45` (a trigger's
/// `SIGNAL`). By number, for the same refusals that MySQL files under `HY000` or `01000`:
/// 1265 data truncated (a value an ENUM does not hold), 1366 incorrect string value (a
/// 4-byte character in a utf8mb3 column), 1644 a `SIGNAL` (its default number), 3819
/// MySQL's CHECK, 4025 MariaDB's CHECK, 3140 invalid JSON, 1153 and 1301 a row larger than
/// `max_allowed_packet`. Everything else is not about the row and is waited out: 1205 lock
/// wait timeout, 1213 deadlock, 1142 / 1146 / 1054 a grant, table or column missing, 1364 a
/// column without a default (the table is not the plugin's shape), 1290 / 1792 read-only,
/// 1021 / 1114 a full disk or table, 1040 too many connections, 1526 no partition for the
/// value (add the partition: the rows wait).
pub fn is_refusal(code: u16, state: &str) -> bool {
    matches!(state.get(..2), Some("22" | "23" | "45"))
        || matches!(code, 1153 | 1265 | 1301 | 1366 | 1644 | 3140 | 3819 | 4025)
}

/// What an error of the driver means for the writer.
fn classify(error: mysql::Error) -> Failure {
    match error {
        mysql::Error::MySqlError(e) if is_refusal(e.code, &e.state) => {
            Failure::Refused(e.to_string())
        }
        mysql::Error::MySqlError(e) => Failure::Server(e.to_string()),
        other => Failure::Lost(other.to_string()),
    }
}

pub struct Link {
    opts: Opts,
    conn: Option<Conn>,
    /// The server's `max_allowed_packet`, read when connecting.
    max_packet: Option<usize>,
    /// The TLS files the connector reads at each new connection.
    _tls: Option<crate::tls::TlsFiles>,
}

impl Link {
    /// Prepares the connection's settings (TLS files are checked here, naming the option);
    /// nothing connects until the writer's first statement.
    pub fn new(config: &DbConfig) -> Result<Link, String> {
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::prepare)
            .transpose()
            .map_err(|(option, why)| format!("auth_opt_{option} (plugin_opt_{option}): {why}"))?;
        let opts = crate::db::opts(config, tls.as_ref())?;
        // Longer than any lock wait the server ends (it answers first), plus the query
        // timeout logins have for an answer.
        let read_timeout = LOCK_WAIT + config.query_timeout.max(Duration::from_secs(5));
        let opts = OptsBuilder::from_opts(opts)
            .read_timeout(Some(read_timeout))
            .into();
        Ok(Link {
            opts,
            conn: None,
            max_packet: None,
            _tls: tls,
        })
    }

    /// Drops the connection (after a panic in the middle of using it).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// The server's `max_allowed_packet`, when connected once.
    pub fn max_packet(&self) -> Option<usize> {
        self.max_packet
    }

    fn conn(&mut self) -> Result<&mut Conn, Failure> {
        if self.conn.is_none() {
            let mut conn =
                Conn::new(self.opts.clone()).map_err(|e| Failure::Unreachable(e.to_string()))?;
            // Best effort: a server without one of these (no InnoDB) keeps its own.
            let wait = LOCK_WAIT.as_secs();
            for variable in ["innodb_lock_wait_timeout", "lock_wait_timeout"] {
                let set = format!("SET SESSION {variable} = LEAST(@@GLOBAL.{variable}, {wait})");
                if let Err(e) = conn.query_drop(&set) {
                    log::debug!("chat message writer: {set}: {e}");
                }
            }
            match conn.query_first::<Option<u64>, _>("SELECT @@max_allowed_packet") {
                Ok(Some(Some(bytes))) => self.max_packet = usize::try_from(bytes).ok(),
                Ok(_) => {}
                Err(e) => log::debug!("chat message writer: max_allowed_packet: {e}"),
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// After a failure: a server error leaves the connection usable; anything else drops it
    /// (its state is unknown; the server rolls back what it left open).
    fn failed(&mut self, failure: &Failure) {
        if !matches!(failure, Failure::Refused(_) | Failure::Server(_)) {
            self.conn = None;
        }
    }

    /// Runs one statement without parameters (the writer's probes of its table).
    pub fn execute(&mut self, sql: &str) -> Result<(), Failure> {
        let result = self.conn()?.query_drop(sql).map_err(classify);
        if let Err(failure) = &result {
            self.failed(failure);
        }
        result
    }

    /// Rows of a statement without parameters.
    pub fn rows(&mut self, sql: &str) -> Result<Vec<Row>, Failure> {
        let result = self.conn()?.query::<Row, _>(sql).map_err(classify);
        if let Err(failure) = &result {
            self.failed(failure);
        }
        result
    }

    /// Runs prepared statements in one transaction and commits them. On a server error the
    /// transaction is rolled back (a lock wait timeout rolls back only its statement).
    pub fn transaction(&mut self, statements: Vec<(&str, Vec<Value>)>) -> Result<(), Failure> {
        let conn = self.conn()?;
        let run = |conn: &mut Conn| -> mysql::Result<()> {
            conn.query_drop("START TRANSACTION")?;
            for (sql, values) in statements {
                conn.exec_drop(sql, values)?;
            }
            conn.query_drop("COMMIT")
        };
        let result = run(conn).map_err(classify);
        let usable = match &result {
            Ok(()) => true,
            Err(Failure::Refused(_) | Failure::Server(_)) => conn.query_drop("ROLLBACK").is_ok(),
            Err(_) => false,
        };
        if !usable {
            self.conn = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, state: &str, message: &str) -> mysql::Error {
        mysql::Error::MySqlError(mysql::MySqlError {
            state: state.into(),
            message: message.into(),
            code,
        })
    }

    #[test]
    fn only_a_refusal_of_the_row_sets_it_aside() {
        // As MariaDB and MySQL answer them.
        for (code, state) in [
            (4025, "23000"), // MariaDB CHECK
            (3819, "HY000"), // MySQL CHECK
            (1644, "45000"), // SIGNAL SQLSTATE '45000'
            (1644, "HY000"),
            (1048, "23000"), // NOT NULL
            (1452, "23000"), // foreign key
            (1406, "22001"), // data too long
            (1264, "22003"), // out of range
            (1366, "HY000"), // incorrect string value (MySQL)
            (1366, "22007"), // (MariaDB)
            (1265, "01000"), // not a value of the ENUM
            (1153, "08S01"), // larger than max_allowed_packet
        ] {
            assert!(is_refusal(code, state), "{code} {state}");
            assert!(matches!(
                classify(server(code, state, "x")),
                Failure::Refused(_)
            ));
        }
        for (code, state) in [
            (1205, "HY000"), // lock wait timeout
            (1213, "40001"), // deadlock
            (1142, "42000"), // INSERT denied
            (1146, "42S02"), // no table
            (1054, "42S22"), // unknown column
            (1364, "HY000"), // a column without a default
            (1290, "HY000"), // --read-only
            (1021, "HY000"), // disk full
            (1040, "08004"), // too many connections
            (1927, "70100"), // connection killed
            (1526, "HY000"), // no partition for the value
        ] {
            assert!(!is_refusal(code, state), "{code} {state}");
            assert!(matches!(
                classify(server(code, state, "x")),
                Failure::Server(_)
            ));
        }
        assert!(matches!(
            classify(mysql::Error::server_disconnected()),
            Failure::Lost(_)
        ));
        let timeout = mysql::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable",
        ));
        assert!(matches!(classify(timeout), Failure::Lost(_)));
        // The server's words are kept (rejected.jsonl has them).
        let refused = classify(server(4025, "23000", "CONSTRAINT `no_spam` failed"));
        assert!(refused.to_string().contains("no_spam"), "{refused}");
        assert!(refused.to_string().contains("4025"), "{refused}");
    }
}
