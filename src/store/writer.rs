//! The writer thread: reads the spool back and inserts multi-row batches in transactions,
//! then moves the spool's checkpoint. A row the server refuses on its own is set aside
//! (`rejected.jsonl`); everything else (an outage, a lock wait, a lost connection) is
//! waited out, so nothing spooled is lost.

use super::link::{Failure, Link};
use super::spool::{self, Checkpoint, Position, SpoolReader};
use super::{COLUMNS, COLUMNS_WITHOUT_PAYLOAD, Counters, Record, StoreConfig, UNKNOWN_PAYLOAD};
use mysql::Value;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A record read back from the spool: its encoding (decoded on the writer thread), where it
/// ends, its size in the spool.
type Queued = spool::Replayed;

/// Wakes the writer when it waits for records.
#[derive(Default)]
pub(super) struct Signal {
    closing: Mutex<bool>,
    pub(super) wake: Condvar,
    /// The writer is waiting: the next append wakes it.
    pub(super) idle: AtomicBool,
}

impl Signal {
    pub(super) fn closing(&self) -> bool {
        *self.closing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a wake-up, `timeout` at most (a wake-up lost to a race costs that much).
    pub(super) fn wait(&self, timeout: Duration) {
        let closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        if !*closing {
            let _ = self.wake.wait_timeout(closing, timeout);
        }
    }

    pub(super) fn close(&self) {
        *self.closing.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}

/// How often the writer looks for a full batch while it gathers one.
const GATHER_POLL: Duration = Duration::from_millis(5);

/// The longest the idle writer sleeps between looks at the spool.
const IDLE_POLL: Duration = Duration::from_millis(20);

pub(super) struct Writer {
    link: Link,
    /// Quoted.
    table: String,
    /// How many of `COLUMNS` the table has (all, or all but `payload`); `None` until asked.
    columns: Option<usize>,
    /// Whether the table's unique `message_id` was looked for (once).
    unique_checked: bool,
    batch_rows: usize,
    flush: Duration,
    /// Where reading started: the writer goes back to the last commit (or here) after a
    /// panic.
    start: Position,
    checkpoint: Checkpoint,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    rejected: PathBuf,
    /// INSERT statements by row and column count (a handful of fixed sizes).
    insert_sql: std::collections::HashMap<(usize, usize), String>,
    /// Inside a run of failed attempts (one warning per run).
    failing: bool,
    /// Batches left to fail on purpose (`test_panic`).
    test_panics: u32,
}

impl Writer {
    pub(super) fn new(
        config: &StoreConfig,
        link: Link,
        reader: &SpoolReader,
        counters: &Arc<Counters>,
        stop: &Arc<AtomicBool>,
    ) -> Writer {
        Writer {
            link,
            table: config.table.clone(),
            columns: None,
            unique_checked: false,
            batch_rows: config.batch_rows,
            flush: config.flush,
            start: reader.position(),
            checkpoint: reader.checkpoint(),
            counters: counters.clone(),
            stop: stop.clone(),
            rejected: config.spool_dir.join("rejected.jsonl"),
            insert_sql: Default::default(),
            failing: false,
            test_panics: std::env::var("CHAT_AUTH_TEST_WRITER_PANICS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }
    }

    pub(super) fn run(mut self, mut reader: SpoolReader, signal: &Signal) {
        let mut read_failing = false;
        loop {
            let step = catch_unwind(AssertUnwindSafe(|| self.step(&mut reader, signal)));
            match step {
                Ok(Ok(true)) => read_failing = false,
                Ok(Ok(false)) => return,
                Ok(Err(e)) => {
                    if !read_failing {
                        read_failing = true;
                        log::error!("cannot read the chat spool back ({e}); retrying");
                    }
                    // Records read before the error were dropped with it: read them again.
                    reader.rewind(self.checkpoint.last().unwrap_or(self.start));
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(_) => {
                    // Nothing is lost: what was read and not committed is read again.
                    log::error!(
                        "internal panic in the chat message writer; it goes on from the last \
                         stored message"
                    );
                    reader.rewind(self.checkpoint.last().unwrap_or(self.start));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Reads and writes one batch. `Ok(false)`: stop (closing with nothing left, or told
    /// to stop).
    fn step(&mut self, reader: &mut SpoolReader, signal: &Signal) -> io::Result<bool> {
        if self.stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut batch = reader.read(self.batch_rows)?;
        if batch.is_empty() {
            if signal.closing() {
                return Ok(false);
            }
            signal.idle.store(true, Ordering::Release);
            batch = reader.read(self.batch_rows)?;
            if batch.is_empty() {
                signal.wait(IDLE_POLL);
            }
            signal.idle.store(false, Ordering::Release);
            if batch.is_empty() {
                return Ok(true);
            }
        }
        // Gather without being woken per message (a wake-up per message cost the broker
        // thread a futex call each): poll until the batch is full or the flush time ends.
        let deadline = Instant::now() + self.flush;
        while batch.len() < self.batch_rows && !signal.closing() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(GATHER_POLL));
            batch.extend(reader.read(self.batch_rows - batch.len())?);
        }
        Ok(self.write(&batch))
    }

    /// Writes one batch, retrying for as long as it takes; `false` when told to stop first.
    /// A row is set aside (`rejected.jsonl`) only when the server refuses the row itself
    /// (`link::is_refusal`: a constraint, a value, a trigger's `SIGNAL`, a row too large): a
    /// batch so refused is halved until the refused rows are alone, and the rest is stored
    /// in order. A lock wait or a deadlock, a timeout, a lost connection, a missing grant or
    /// table are waited out, with a backoff, one warning per episode and every attempt
    /// counted (`failedAttempts`). A batch that loses the connection twice in a row (one
    /// larger than `max_allowed_packet`: the server drops the connection) is halved too; a
    /// row that does so alone is set aside only when it is larger than the server's
    /// `max_allowed_packet` (read when connecting).
    fn write(&mut self, batch: &[Queued]) -> bool {
        if let Some(first) = batch.first().and_then(|q| spool::decode(&q.0)) {
            self.counters
                .oldest_unstored_ms
                .store(first.server_ts, Ordering::Relaxed);
        }
        let mut backoff = Duration::from_millis(50);
        let mut lost = 0;
        loop {
            let attempt = catch_unwind(AssertUnwindSafe(|| {
                self.test_panic();
                self.insert(batch)
            }))
            .unwrap_or_else(|_| {
                log::error!(
                    "internal panic in the chat message writer; the batch stays in the spool \
                     and is tried again"
                );
                self.link.reset();
                Err(Failure::Lost("internal panic".into()))
            });
            let failure = match attempt {
                Ok(()) => {
                    self.stored_again();
                    self.committed(batch, batch.len());
                    return true;
                }
                Err(failure) => failure,
            };
            self.counters
                .failed_attempts
                .fetch_add(1, Ordering::Relaxed);
            let refused = match &failure {
                Failure::Refused(_) => Some(failure.clone()),
                Failure::Lost(_) => {
                    lost += 1;
                    match batch {
                        [item] if lost >= 2 => self.too_large(item),
                        _ => None,
                    }
                }
                Failure::Server(_) | Failure::Unreachable(_) => {
                    lost = 0;
                    None
                }
            };
            if let (Some(refusal), [item]) = (&refused, batch) {
                self.reject(item, refusal);
                self.committed(batch, 0);
                return true;
            }
            if refused.is_some() || (lost >= 2 && batch.len() > 1) {
                let (first, second) = batch.split_at(batch.len() / 2);
                return self.write(first) && self.write(second);
            }
            if !self.failing {
                self.failing = true;
                log::warn!(
                    "storing chat messages failed ({failure}); they stay in the spool and are \
                     retried until MySQL takes them"
                );
            }
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// A row that lost the connection alone: refused when its values alone are larger than
    /// the server's `max_allowed_packet` (it can never be sent), else `None` (waited out).
    fn too_large(&self, item: &Queued) -> Option<Failure> {
        let max = self.link.max_packet()?;
        let record = spool::decode(&item.0)?;
        let columns = self.columns.unwrap_or(COLUMNS.len());
        let bytes: usize = record
            .values()
            .iter()
            .take(columns)
            .map(|v| match v {
                Value::Bytes(b) => b.len(),
                _ => 8,
            })
            .sum();
        // The statement's own framing: a few bytes per column.
        (bytes + 16 * columns >= max).then(|| {
            Failure::Refused(format!(
                "the row is {bytes} bytes, more than the server's max_allowed_packet \
                 ({max} bytes): the server drops the connection"
            ))
        })
    }

    /// `INSERT ... SELECT ... WHERE FALSE` into the first `columns` of `COLUMNS`.
    fn probe_sql(&self, columns: usize) -> String {
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM DUAL WHERE FALSE",
            self.table,
            COLUMNS[..columns].join(", "),
            vec!["NULL"; columns].join(", ")
        )
    }

    /// How many of `COLUMNS` the table takes: a table made before `payload` existed is
    /// written without it (one warning; history then rebuilds messages from the columns).
    fn columns(&mut self) -> Result<usize, Failure> {
        if let Some(columns) = self.columns {
            return Ok(columns);
        }
        let probe = self.probe_sql(COLUMNS.len());
        let columns = match self.link.execute(&probe) {
            Ok(()) => COLUMNS.len(),
            // Only the server saying the column does not exist: any other error (a grant,
            // a missing table) waits like an outage, and is asked again.
            Err(Failure::Server(why)) if why.contains(UNKNOWN_PAYLOAD) => {
                log::warn!(
                    "the table {} has no payload column: messages are stored without the payload as \
                     delivered, and chat history rebuilds them (run history-upgrade.sql: \
                     docs/control-and-history.md, Chat history)",
                    self.table
                );
                COLUMNS_WITHOUT_PAYLOAD
            }
            // No table, no grant, no server: the batch waits as for any other failure.
            Err(e) => return Err(e),
        };
        self.columns = Some(columns);
        if !self.unique_checked {
            self.unique_checked = true;
            self.check_unique();
        }
        Ok(columns)
    }

    /// Once: warns when no unique key of the table is `message_id` alone. Without one, a
    /// batch written again (its COMMIT's answer lost to a timeout, a crash before the
    /// checkpoint) stores its rows twice. An index list the server will not give is not
    /// reported.
    fn check_unique(&mut self) {
        let sql = format!("SHOW INDEX FROM {}", self.table);
        let rows = match self.link.rows(&sql) {
            Ok(rows) => rows,
            Err(e) => {
                log::debug!("chat message writer: {sql}: {e}");
                return;
            }
        };
        let mut keys: std::collections::HashMap<String, Vec<String>> = Default::default();
        for row in rows {
            let unique = row.get::<u64, _>("Non_unique") == Some(0);
            if let (true, Some(key), Some(column)) = (
                unique,
                row.get::<String, _>("Key_name"),
                row.get::<String, _>("Column_name"),
            ) {
                keys.entry(key).or_default().push(column);
            }
        }
        let unique = keys
            .values()
            .any(|columns| matches!(&columns[..], [c] if c.eq_ignore_ascii_case("message_id")));
        if !unique {
            log::warn!(
                "the table {} has no unique key on message_id alone: a batch written again \
                 (its commit's answer lost, a crash before the spool's checkpoint) stores its \
                 messages twice; add UNIQUE KEY (message_id) as in schema.sql",
                self.table
            );
        }
    }

    fn stored_again(&mut self) {
        if self.failing {
            self.failing = false;
            log::info!("chat messages are stored again");
        }
    }

    /// A row the server refuses on its own: set aside, with the server's answer.
    fn reject(&self, item: &Queued, error: &Failure) {
        let record = spool::decode(&item.0);
        log::warn!(
            "chat message {} was refused by MySQL ({error}); set aside in {}",
            record.as_ref().map_or("(undecodable)", |r| &r.message_id),
            self.rejected.display()
        );
        self.keep_rejected(record.as_ref(), &item.0, error);
        self.counters.rejected_rows.fetch_add(1, Ordering::Relaxed);
    }

    /// The test-only fault: `CHAT_AUTH_TEST_WRITER_PANICS=N` makes the first N batches panic
    /// (the broker tests prove the writer survives it).
    fn test_panic(&mut self) {
        if self.test_panics > 0 {
            self.test_panics -= 1;
            panic!("injected by CHAT_AUTH_TEST_WRITER_PANICS");
        }
    }

    fn keep_rejected(&self, record: Option<&Record>, body: &[u8], error: &Failure) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut line = match record.map(serde_json::to_value) {
            Some(Ok(value)) => value,
            _ => serde_json::json!({ "undecodable": hex::encode(body) }),
        };
        line["error"] = serde_json::Value::String(error.to_string());
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(spool::FILE_MODE)
            .open(&self.rejected)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = result {
            log::error!("cannot write {}: {e}", self.rejected.display());
        }
    }

    /// The batch is done with (`stored` of its rows in MySQL, the rest set aside): the
    /// checkpoint moves past it.
    fn committed(&mut self, batch: &[Queued], stored: usize) {
        let last = batch.last().expect("batches are never empty").1;
        // Records of an earlier run were never counted as pending (see `Usage`).
        let live: Vec<&Queued> = batch
            .iter()
            .filter(|q| self.checkpoint.is_live(q.1.segment))
            .collect();
        let bytes = live.iter().map(|q| q.2).sum();
        self.counters
            .rows_written
            .fetch_add(stored as u64, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.oldest_unstored_ms.store(0, Ordering::Relaxed);
        if let Err(e) = self.checkpoint.commit(last, live.len() as u64, bytes) {
            // The rows are in MySQL; a replay would only skip them as duplicates.
            log::error!("cannot move the spool checkpoint: {e}");
        }
    }

    /// Multi-row INSERTs in one transaction; rows already present (a replay) are skipped.
    /// A batch is cut into a few fixed sizes, so the server prepares each statement once
    /// per connection (one statement per batch length re-prepared nearly every batch).
    fn insert(&mut self, batch: &[Queued]) -> Result<(), Failure> {
        let columns = self.columns()?;
        let mut statements = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            let rows = statement_rows(rest.len(), self.batch_rows);
            let (chunk, after) = rest.split_at(rows);
            rest = after;
            let mut values = Vec::with_capacity(rows * columns);
            for item in chunk {
                // Decoded here, on the writer thread: its allocations never touch the broker's.
                let record = spool::decode(&item.0)
                    .ok_or_else(|| Failure::Refused("a spool record cannot be decoded".into()))?;
                values.extend(record.values().into_iter().take(columns));
            }
            statements.push((rows, values));
        }
        for (rows, _) in &statements {
            let key = (*rows, columns);
            if !self.insert_sql.contains_key(&key) {
                let row = format!("({})", vec!["?"; columns].join(","));
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE message_id = \
                     message_id",
                    self.table,
                    COLUMNS[..columns].join(", "),
                    vec![row; *rows].join(",")
                );
                self.insert_sql.insert(key, sql);
            }
        }
        let statements = statements
            .into_iter()
            .map(|(rows, values)| (self.insert_sql[&(rows, columns)].as_str(), values))
            .collect();
        let result = self.link.transaction(statements);
        if matches!(&result, Err(Failure::Server(why)) if why.contains(UNKNOWN_PAYLOAD)) {
            // The column went away under us: ask the table again. (One that comes is used
            // from the next start: rows without it still go in meanwhile.)
            self.columns = None;
        }
        result
    }
}

/// Rows of the next INSERT for `left` rows: the batch size, or a power of ten below it.
fn statement_rows(left: usize, batch_rows: usize) -> usize {
    if left >= batch_rows {
        return batch_rows;
    }
    let mut size = 1;
    while size * 10 <= left && size * 10 < batch_rows {
        size *= 10;
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_use_a_few_statement_sizes() {
        let split = |mut left: usize, batch: usize| {
            let mut sizes = Vec::new();
            while left > 0 {
                let rows = statement_rows(left, batch);
                sizes.push(rows);
                left -= rows;
            }
            sizes
        };
        assert_eq!(split(500, 500), [500]);
        assert_eq!(
            split(1234, 500),
            [500, 500, 100, 100, 10, 10, 10, 1, 1, 1, 1]
        );
        assert_eq!(split(7, 500), [1; 7]);
        assert_eq!(split(25, 20), [20, 1, 1, 1, 1, 1]);
        assert_eq!(
            split(99, 50),
            [50, 10, 10, 10, 10, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        );
    }
}
