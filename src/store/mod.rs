//! Chat message storage: the spool the broker thread appends to before the MESSAGE callback
//! returns (`Spooler`), and the writer thread (`writer`) that reads it back, inserts
//! multi-row batches in transactions and then moves the spool's checkpoint. A replay (after a crash, or of a batch whose commit answer was lost) can
//! never make a second row: `message_id` is unique and duplicates are skipped. The writer
//! has a MySQL connection of its own (`link`): its waits never touch the logins' pool.

// The spool's memory map: with `ffi`, the only place `unsafe` is allowed.
pub mod link;
#[allow(unsafe_code)]
mod mapped_file;
pub mod spool;
mod writer;

use crate::chat::payload::Stamped;
use crate::db::DbConfig;
use link::Link;
use mysql::Value;
use serde::{Deserialize, Serialize};
use spool::{Spool, SpoolReader, Usage};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use writer::{Signal, Writer};

/// Chat message storage (`persist_*`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Quoted (`quoted_table`).
    pub table: String,
    pub batch_rows: usize,
    pub flush: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub fsync: bool,
}

/// One stored chat message: a row of the messages table. The broker thread holds it with
/// borrowed text (`NewRecord`, encoded into the spool without a copy per field); the writer
/// with owned text, decoded from the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<S = String> {
    pub message_id: S,
    pub kind: S,
    pub from_id: S,
    pub to_id: S,
    pub content: S,
    pub topic: S,
    pub qos: u8,
    pub client_id: S,
    pub server_ts: i64,
    /// The payload as delivered (what history answers with); empty for records spooled
    /// before it was kept.
    pub payload: S,
}

/// A record borrowed from the MESSAGE callback.
pub type NewRecord<'a> = Record<&'a str>;

/// The columns of the messages table a record fills, in the order of `Record::values`: the
/// one list the INSERT, the writer's probe and `schema.sql` follow.
pub const COLUMNS: [&str; 10] = [
    "message_id",
    "type",
    "from_id",
    "to_id",
    "content",
    "topic",
    "qos",
    "client_id",
    "server_ts",
    "payload",
];

/// The columns of a table made before `payload` (the writer leaves it out there).
const COLUMNS_WITHOUT_PAYLOAD: usize = COLUMNS.len() - 1;

/// The server's words (MariaDB and MySQL, error 1054) for a table without `payload`.
pub const UNKNOWN_PAYLOAD: &str = "Unknown column 'payload'";

impl<'r> NewRecord<'r> {
    /// The row `stamped` is stored as, published on `topic` at `qos` by `client_id`.
    pub fn from_stamped(
        stamped: &'r Stamped<'_>,
        topic: &'r str,
        qos: u8,
        client_id: &'r str,
    ) -> NewRecord<'r> {
        Record {
            message_id: stamped.message_id.as_str(),
            kind: stamped.kind.name(),
            from_id: &stamped.from_id,
            to_id: &stamped.to_id,
            content: &stamped.content,
            topic,
            qos,
            client_id,
            server_ts: stamped.server_ts,
            // A validated JSON payload is UTF-8.
            payload: std::str::from_utf8(&stamped.payload).unwrap_or_default(),
        }
    }
}

impl Record {
    pub fn borrowed(&self) -> NewRecord<'_> {
        Record {
            message_id: &self.message_id,
            kind: &self.kind,
            from_id: &self.from_id,
            to_id: &self.to_id,
            content: &self.content,
            topic: &self.topic,
            qos: self.qos,
            client_id: &self.client_id,
            server_ts: self.server_ts,
            payload: &self.payload,
        }
    }

    /// The values for `COLUMNS`, in its order.
    pub fn values(self) -> [Value; COLUMNS.len()] {
        [
            Value::Bytes(self.message_id.into_bytes()),
            Value::Bytes(self.kind.into_bytes()),
            Value::Bytes(self.from_id.into_bytes()),
            Value::Bytes(self.to_id.into_bytes()),
            Value::Bytes(self.content.into_bytes()),
            Value::Bytes(self.topic.into_bytes()),
            Value::from(self.qos),
            Value::Bytes(self.client_id.into_bytes()),
            Value::from(self.server_ts),
            if self.payload.is_empty() {
                Value::NULL
            } else {
                Value::Bytes(self.payload.into_bytes())
            },
        ]
    }
}

/// Progress counters, read by the periodic log line and `getStats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub rows_written: AtomicU64,
    pub batches: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub rejected_rows: AtomicU64,
    /// The server time (ms) of the first message of the batch being written; 0 when the
    /// writer has nothing in hand (the storage backlog's age).
    pub oldest_unstored_ms: AtomicI64,
}

/// Why a message could not be stored (and so is refused).
#[derive(Debug)]
pub enum StoreRefusal {
    SpoolFull,
    Io(io::Error),
}

/// The broker-thread side of the spool: appends within `spool_max_bytes` not yet in MySQL,
/// and wakes the writer when it waits. Opened alone (no writer) by the intake's tests.
pub struct Spooler {
    spool: Spool,
    max_bytes: u64,
    signal: Arc<Signal>,
    full: bool,
}

impl Spooler {
    /// Opens (or goes on with) the spool in `dir`; the reader reads back what is appended.
    pub fn open(dir: &Path, fsync: bool, max_bytes: u64) -> io::Result<(Spooler, SpoolReader)> {
        let rotate_at = (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024);
        let (spool, reader) = Spool::open(dir, fsync, rotate_at)?;
        let spooler = Spooler {
            spool,
            max_bytes,
            signal: Arc::default(),
            full: false,
        };
        Ok((spooler, reader))
    }

    /// Spools one message and wakes the writer if it waits. Refuses when the spool holds
    /// `spool_max_bytes` not yet in MySQL (one warning per episode), or when the spool
    /// cannot be written.
    pub fn put(&mut self, record: &NewRecord<'_>) -> Result<(), StoreRefusal> {
        let pending = self.usage().backlog_bytes();
        if pending >= self.max_bytes {
            if !self.full {
                self.full = true;
                log::warn!(
                    "spool full ({} MB not yet in MySQL): chat messages are refused until \
                     MySQL catches up",
                    pending / (1024 * 1024)
                );
            }
            return Err(StoreRefusal::SpoolFull);
        }
        if self.full {
            self.full = false;
            log::warn!("spool has room again: chat messages are accepted");
        }
        self.spool.append(record).map_err(StoreRefusal::Io)?;
        if self.signal.idle.load(Ordering::Acquire) {
            self.signal.wake.notify_one();
        }
        Ok(())
    }

    pub fn usage(&self) -> &Usage {
        &self.spool.usage
    }

    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// Storage: the spool the broker thread appends to, and the writer thread
/// (`writer::Writer`) that reads it back into MySQL. The spool on disk is the queue, so a
/// backlog (MySQL down) costs disk, not memory.
pub struct Store {
    spooler: Spooler,
    writer: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
}

/// How long shutdown waits for MySQL to take what is spooled (the rest stays spooled).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Store {
    /// Opens the spool and starts the writer, which first writes (from disk) what the last
    /// run left uncommitted.
    pub fn start(config: &StoreConfig, db: &DbConfig) -> Result<Store, String> {
        let (spooler, reader) =
            Spooler::open(&config.spool_dir, config.fsync, config.spool_max_bytes).map_err(
                |e| {
                    format!(
                        "auth_opt_persist_spool_dir (plugin_opt_persist_spool_dir): cannot use \
                         '{}': {e}",
                        config.spool_dir.display()
                    )
                },
            )?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Writer::new(config, Link::new(db)?, &reader, &counters, &stop);
        let writer = {
            let signal = Arc::clone(&spooler.signal);
            std::thread::Builder::new()
                .name("chat-auth-writer".into())
                .spawn(move || writer.run(reader, &signal))
                .map_err(|e| format!("cannot start the message writer thread: {e}"))?
        };
        Ok(Store {
            spooler,
            writer: Some(writer),
            stop,
            counters,
        })
    }

    /// Where the broker thread appends.
    pub fn spooler(&mut self) -> &mut Spooler {
        &mut self.spooler
    }

    pub fn usage(&self) -> &Usage {
        self.spooler.usage()
    }

    pub fn is_full(&self) -> bool {
        self.spooler.is_full()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The writer writes what is spooled, giving MySQL a short grace; the spool keeps
        // the rest for the next start.
        self.spooler.signal.close();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        if let Some(writer) = self.writer.take() {
            while !writer.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.stop.store(true, Ordering::Release);
            let _ = writer.join();
        }
    }
}
