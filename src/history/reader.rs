//! The history queries, on their own threads and MySQL connections (never the broker's
//! thread, never the login pool): a bounded queue in, answers out, picked up at TICK.

use super::{INDEX_PAIR, INDEX_TO, Plan, StoredMessage, TableShape, cursor_sql, page, page_sql};
use crate::action::{Reply, Waker};
use crate::db::{Db, DbError, value_bytes};
use crate::query::Query;
use crate::store::UNKNOWN_PAYLOAD;
use mysql::Row;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The asking connection (`Client::pointer`) and its user: the answer goes to them
    /// only, not to whoever holds the client id when the page is ready (a take-over, or a
    /// new connection the broker placed at the freed address of the asker's).
    pub connection: usize,
    pub user_id: String,
}

/// The answer to one request: the page (`data`), or why not.
pub struct Answer {
    pub reply: Reply,
    pub connection: usize,
    pub user_id: String,
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
    /// Set by the first answer since the last `ready`, which wakes the broker's loop.
    woken: Arc<AtomicBool>,
    /// Set at shutdown: queued requests are dropped, not run.
    stop: Arc<AtomicBool>,
}

struct Worker {
    db: Arc<Db>,
    table: String,
    max_bytes: usize,
    /// What the table has, once asked.
    shape: Arc<Mutex<Option<TableShape>>>,
    counters: Arc<Counters>,
    woken: Arc<AtomicBool>,
    wake: Option<Waker>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    /// Starts `threads` workers sharing `db` (a pool of their own).
    pub fn start(
        db: Db,
        table: &str,
        threads: usize,
        max_bytes: usize,
        wake: Option<Waker>,
    ) -> Result<Reader, String> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let (done, answers) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let db = Arc::new(db);
        let shape = Arc::new(Mutex::new(None));
        let counters = Arc::new(Counters::default());
        let woken = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for n in 0..threads {
            let worker = Worker {
                db: Arc::clone(&db),
                table: table.to_string(),
                max_bytes,
                shape: Arc::clone(&shape),
                counters: Arc::clone(&counters),
                woken: Arc::clone(&woken),
                wake: wake.clone(),
                stop: Arc::clone(&stop),
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
            woken,
            stop,
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

    /// Whether an answer came since the last `ready` (cheap: one atomic load).
    pub fn has_answers(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    /// The answers ready now.
    pub fn ready(&self) -> impl Iterator<Item = Answer> + '_ {
        // Cleared first: an answer sent after this wakes the loop again.
        self.woken.store(false, Ordering::Release);
        self.answers.try_iter()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Each worker ends after its current query (bounded by the MySQL timeouts); what is
        // still queued is dropped (its clients are going away with the broker).
        self.stop.store(true, Ordering::Release);
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
            let Ok(Job {
                plan,
                reply,
                connection,
                user_id,
            }) = job
            else {
                return;
            };
            if self.stop.load(Ordering::Acquire) {
                return;
            }
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
            let answer = Answer {
                reply,
                connection,
                user_id,
                outcome,
            };
            if done.send(answer).is_err() {
                return;
            }
            // One wake-up per batch of answers, not one per answer.
            if !self.woken.swap(true, Ordering::AcqRel) {
                if let Some(wake) = &self.wake {
                    wake();
                }
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
        let shape = self.shape().map_err(unavailable)?;
        let (sql, values) = page_sql(&self.table, plan, position, shape);
        let rows = self
            .db
            .rows(&query(sql), values, plan.limit + 1)
            .map_err(unavailable)?;
        let read = rows.len();
        // Only rows of the plan's ranges, compared byte for byte: the id columns of an older
        // table may compare case-insensitively or ignore trailing spaces in SQL.
        let stored: Vec<StoredMessage> = rows
            .into_iter()
            .filter_map(stored)
            .filter(|message| plan.reads(message))
            .collect();
        let mut page = page(&stored, plan.limit, self.max_bytes);
        page.more |= read > plan.limit;
        serde_json::value::to_raw_value(&page).map_err(|e| format!("internal error: {e}"))
    }

    /// What the table has (asked once): a table made before chat history has neither the
    /// `payload` column (messages are rebuilt from their columns) nor the history indexes
    /// (pages are left to the optimizer).
    fn shape(&self) -> Result<TableShape, DbError> {
        if let Some(shape) = *self.shape.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(shape);
        }
        // Only the server saying the column or index does not exist counts as missing;
        // any other error (a lock wait during the upgrade's ALTER, a grant) is not cached.
        let has = |probe: String, absent: &str, missing: &str| match self.db.execute(&probe) {
            Ok(()) => Ok(true),
            Err(DbError::Query(why)) if why.contains(absent) => {
                log::warn!(
                    "the table {}: {missing} ({why}); see docs/control-and-history.md, Chat \
                     history",
                    self.table
                );
                Ok(false)
            }
            Err(e) => Err(e),
        };
        let shape = TableShape {
            payload: has(
                format!("SELECT payload FROM {} WHERE FALSE", self.table),
                UNKNOWN_PAYLOAD,
                "no payload column: history answers are rebuilt from the message columns",
            )?,
            indexes: has(
                format!(
                    "SELECT id FROM {} FORCE INDEX ({}, {}) WHERE FALSE",
                    self.table, INDEX_TO, INDEX_PAIR
                ),
                "doesn't exist in table",
                "no chat history indexes: pages may scan and sort more rows",
            )?,
        };
        *self.shape.lock().unwrap_or_else(|e| e.into_inner()) = Some(shape);
        Ok(shape)
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
