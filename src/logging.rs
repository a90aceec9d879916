//! Routes the `log` crate to a sink the FFI edge installs (the broker's
//! `mosquitto_log_printf`). The core never calls the broker itself, so unit tests link.
//!
//! Only the broker's thread may call the broker's logger (with `log_dest topic` it publishes
//! into the broker's store). Lines logged on other threads (the writer, the background
//! threads, the MySQL prober) wait in a bounded queue until the broker thread writes them at
//! its next TICK (`drain`); lines that find the queue full are counted and reported.

use once_cell::sync::OnceCell;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::ThreadId;

/// Where formatted lines go: level and text, already prefixed with `chat-auth: `.
pub type Sink = fn(log::Level, &str);

static SINK: OnceCell<Sink> = OnceCell::new();
static LOGGER: BrokerLogger = BrokerLogger;
/// The broker's thread: the one that installed the sink (plugin init).
static BROKER_THREAD: OnceCell<ThreadId> = OnceCell::new();
static QUEUE: LineQueue = LineQueue::new(QUEUE_LINES);

/// Lines from other threads waiting for the broker thread, at most.
const QUEUE_LINES: usize = 1000;

/// Lines waiting for the broker thread, bounded; lines that find it full are counted.
struct LineQueue {
    lines: Mutex<VecDeque<(log::Level, String)>>,
    /// Set by `push`: `drain`, at every tick, looks at this before taking the lock.
    waiting: AtomicBool,
    dropped: AtomicU64,
    capacity: usize,
}

impl LineQueue {
    const fn new(capacity: usize) -> Self {
        LineQueue {
            lines: Mutex::new(VecDeque::new()),
            waiting: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            capacity,
        }
    }

    fn push(&self, level: log::Level, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.push_back((level, line));
        }
        self.waiting.store(true, Ordering::Release);
    }

    /// Hands every waiting line to `sink`, then one line for the dropped ones.
    fn drain_into(&self, sink: Sink) {
        if !self.waiting.swap(false, Ordering::Acquire) {
            return;
        }
        let lines: Vec<(log::Level, String)> = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            if lines.is_empty() && self.dropped.load(Ordering::Relaxed) == 0 {
                return;
            }
            lines.drain(..).collect()
        };
        for (level, line) in &lines {
            sink(*level, line);
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            sink(
                log::Level::Warn,
                &format!(
                    "chat-auth: {dropped} log lines of background threads were dropped (more \
                     than {} waited for the broker thread)",
                    self.capacity
                ),
            );
        }
    }
}

struct BrokerLogger;

impl log::Log for BrokerLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        // `log!` already checked max_level before formatting anything: a disabled level
        // costs one comparison on the message path.
        let Some(sink) = SINK.get() else {
            return;
        };
        let line = format!("chat-auth: {}", record.args());
        if BROKER_THREAD.get() == Some(&std::thread::current().id()) {
            sink(record.level(), &line);
        } else {
            QUEUE.push(record.level(), line);
        }
    }

    fn flush(&self) {}
}

/// Installs `sink` (first call wins), on the broker's thread, and sets the level; later
/// calls only change the level.
pub fn install(sink: Sink, level: log::LevelFilter) {
    let _ = BROKER_THREAD.set(std::thread::current().id());
    let _ = SINK.set(sink);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Writes the lines other threads queued; on the broker's thread (TICK, shutdown).
pub fn drain() {
    if let Some(sink) = SINK.get() {
        QUEUE.drain_into(*sink);
    }
}

/// A user-supplied name made safe for one log line: control characters escaped, and
/// cut to 64 characters (a 64 KiB username must not flood the log).
pub fn printable(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    static SUNK: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn sink(_: log::Level, line: &str) {
        SUNK.lock().unwrap().push(line.to_string());
    }

    fn sunk(marker: &str) -> usize {
        SUNK.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(marker))
            .count()
    }

    #[test]
    fn other_threads_lines_wait_for_the_broker_thread() {
        // This test thread plays the broker's (other tests may log meanwhile: only this
        // test's lines are counted).
        install(sink, log::LevelFilter::Info);
        log::info!("on the broker thread");
        assert_eq!(sunk("on the broker thread"), 1);
        std::thread::spawn(|| log::info!("from the writer thread"))
            .join()
            .unwrap();
        assert_eq!(sunk("from the writer thread"), 0, "queued, not written");
        drain();
        assert_eq!(sunk("from the writer thread"), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        static LOCAL: Mutex<Vec<String>> = Mutex::new(Vec::new());
        fn local(_: log::Level, line: &str) {
            LOCAL.lock().unwrap().push(line.to_string());
        }
        let queue = LineQueue::new(3);
        for n in 0..5 {
            queue.push(log::Level::Info, format!("line {n}"));
        }
        queue.drain_into(local);
        let lines = LOCAL.lock().unwrap().clone();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2], "line 2");
        assert!(lines[3].contains("2 log lines of background threads were dropped"));
        queue.drain_into(local);
        assert_eq!(LOCAL.lock().unwrap().len(), 4, "nothing more");
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("' OR '1'='1"), "\\' OR \\'1\\'=\\'1");
        let long = "x".repeat(70_000);
        assert_eq!(printable(&long).len(), 67);
    }
}
