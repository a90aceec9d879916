//! The history queries, on their own threads and MySQL connections (never the broker's
//! thread, never the login pool): a bounded queue in, answers out, picked up at TICK.

use super::{Plan, StoredMessage, cursor_sql, page, page_sql};
use crate::action::Reply;
use crate::db::{Db, DbError, value_bytes};
use crate::query::Query;
use mysql::Row;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Requests waiting for a connection, in all; beyond it requests are answered "busy".
pub const QUEUE: usize = 1_024;

/// One request to run.
pub struct Job {
    pub plan: Plan,
    pub reply: Reply,
}

/// The answer to one request: the page (`data`), or why not.
pub struct Answer {
    pub reply: Reply,
    pub outcome: Result<Box<RawValue>, String>,
}

/// Figures for `getStats` and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub pages: AtomicU64,
    pub failed: AtomicU64,
    pub query_micros: AtomicU64,
}

pub struct Reader {
    jobs: Option<SyncSender<Job>>,
    answers: Receiver<Answer>,
    workers: Vec<JoinHandle<()>>,
    pub counters: Arc<Counters>,
}

/// Whether the table has the `payload` column: not known yet, yes, no.
const PAYLOAD_UNKNOWN: u8 = 0;
const PAYLOAD_YES: u8 = 1;
const PAYLOAD_NO: u8 = 2;

struct Worker {
    db: Arc<Db>,
    table: String,
    max_bytes: usize,
    payload: Arc<AtomicU8>,
    counters: Arc<Counters>,
}

impl Reader {
    /// Starts `threads` workers sharing `db` (a pool of their own).
    pub fn start(db: Db, table: &str, threads: usize, max_bytes: usize) -> Result<Reader, String> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let (done, answers) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let db = Arc::new(db);
        let payload = Arc::new(AtomicU8::new(PAYLOAD_UNKNOWN));
        let counters = Arc::new(Counters::default());
        let mut workers = Vec::new();
        for n in 0..threads {
            let worker = Worker {
                db: Arc::clone(&db),
                table: table.to_string(),
                max_bytes,
                payload: Arc::clone(&payload),
                counters: Arc::clone(&counters),
            };
            let (queue, done) = (Arc::clone(&queue), done.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("chat-auth-history-{n}"))
                    .spawn(move || worker.run(&queue, &done))
                    .map_err(|e| format!("cannot start a history thread: {e}"))?,
            );
        }
        Ok(Reader {
            jobs: Some(jobs),
            answers,
            workers,
            counters,
        })
    }

    /// Queues a request; gives its reply back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Box<Reply>> {
        let jobs = self.jobs.as_ref().expect("the sender lives until drop");
        jobs.try_send(job).map_err(|e| {
            let (TrySendError::Full(job) | TrySendError::Disconnected(job)) = e;
            Box::new(job.reply)
        })
    }

    /// The answers ready now.
    pub fn ready(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current query (bounded by the
        // MySQL timeouts).
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Worker {
    fn run(self, queue: &Mutex<Receiver<Job>>, done: &Sender<Answer>) {
        loop {
            let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(Job { plan, reply }) = job else {
                return;
            };
            let started = Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(&plan)))
                    .unwrap_or_else(|_| Err("internal error".into()));
            self.counters
                .query_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            let counter = match &outcome {
                Ok(_) => &self.counters.pages,
                Err(_) => &self.counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if done.send(Answer { reply, outcome }).is_err() {
                return;
            }
        }
    }

    /// One page: the cursor's row, then the page's rows.
    fn read(&self, plan: &Plan) -> Result<Box<RawValue>, String> {
        let unavailable = |e: DbError| format!("history unavailable: {e}");
        let position = match plan.cursor.message_id() {
            None => None,
            Some(message_id) => {
                let row = self
                    .db
                    .first_row(&query(cursor_sql(&self.table)), vec![message_id.into()])
                    .map_err(unavailable)?;
                let id = row.and_then(|row| row.get::<u64, _>(0)).ok_or_else(|| {
                    format!("unknown message id '{message_id}' (not stored, or not yet)")
                })?;
                Some(id)
            }
        };
        let with_payload = self.has_payload().map_err(unavailable)?;
        let (sql, values) = page_sql(&self.table, plan, position, with_payload);
        let rows = self
            .db
            .rows(&query(sql), values, plan.limit + 1)
            .map_err(unavailable)?;
        let stored: Vec<StoredMessage> = rows.into_iter().filter_map(stored).collect();
        serde_json::value::to_raw_value(&page(&stored, plan.limit, self.max_bytes))
            .map_err(|e| format!("internal error: {e}"))
    }

    /// Whether the table has the `payload` column (asked once; a table without it gets
    /// messages rebuilt from their columns).
    fn has_payload(&self) -> Result<bool, DbError> {
        match self.payload.load(Ordering::Relaxed) {
            PAYLOAD_YES => return Ok(true),
            PAYLOAD_NO => return Ok(false),
            _ => {}
        }
        let probe = format!("SELECT payload FROM {} WHERE FALSE", self.table);
        let has = match self.db.execute(&probe) {
            Ok(()) => true,
            Err(DbError::Query(why)) if why.contains("payload") => {
                log::warn!(
                    "the table {} has no payload column: history answers are rebuilt from the \
                     message columns (see README, Chat history, to add it)",
                    self.table
                );
                false
            }
            Err(e) => return Err(e),
        };
        self.payload.store(
            if has { PAYLOAD_YES } else { PAYLOAD_NO },
            Ordering::Relaxed,
        );
        Ok(has)
    }
}

fn query(sql: String) -> Query {
    Query {
        sql,
        params: Vec::new(),
    }
}

/// A page's row (`PAGE_COLUMNS`, then `payload` when read).
fn stored(row: Row) -> Option<StoredMessage> {
    let text = |i: usize| -> Option<String> {
        row.as_ref(i)
            .and_then(value_bytes)
            .and_then(|b| String::from_utf8(b).ok())
    };
    Some(StoredMessage {
        message_id: text(1)?,
        kind: text(2)?,
        from_id: text(3)?,
        to_id: text(4)?,
        content: text(5)?,
        server_ts: text(6)?.parse().ok()?,
        payload: if row.len() > 7 { text(7) } else { None },
    })
}
