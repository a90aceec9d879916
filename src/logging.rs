//! Routes the `log` crate to a sink the FFI edge installs (the broker's
//! `mosquitto_log_printf`). The core never calls the broker itself, so unit tests link.
//!
//! No line is ever written where it is logged. The broker's logger is synchronous and, with
//! `log_dest topic`, publishes each line into the broker at once, which runs an ACL check
//! for every `$SYS/#` subscriber on the same thread: a line written while a plugin lock is
//! held would call back into the plugin and wait for that lock for good. So every line,
//! from any thread, waits in a bounded queue, and only `drain` writes them: the FFI edge
//! calls it on the broker thread after each callback has returned (no plugin lock can be
//! held there: the core hands out no guard), and at TICK for the background threads' lines.
//! A line logged while `drain` writes (by a callback the broker makes for a written line)
//! waits for the next drain, so one drain is bounded.

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

/// Lines waiting for a drain, at most (a drain follows every callback, so only a burst of
/// the background threads' lines between two TICKs can come near it).
const QUEUE_LINES: usize = 10_000;

/// Lines waiting for the broker thread, bounded; lines that find it full are counted.
struct LineQueue {
    lines: Mutex<VecDeque<(log::Level, String)>>,
    /// Set by `push`: `drain`, after every callback, looks at this before taking the lock.
    waiting: AtomicBool,
    /// A drain is writing: a drain started by a callback the broker made for a written line
    /// leaves the queue to the outer one's next call.
    draining: AtomicBool,
    dropped: AtomicU64,
    capacity: usize,
}

impl LineQueue {
    const fn new(capacity: usize) -> Self {
        LineQueue {
            lines: Mutex::new(VecDeque::new()),
            waiting: AtomicBool::new(false),
            draining: AtomicBool::new(false),
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

    /// Hands every line waiting now to `sink`, then one line for the dropped ones. Lines
    /// queued meanwhile (by what `sink` makes the broker do) wait for the next call.
    fn drain_into(&self, sink: Sink) {
        // A load first: after every callback, most often nothing waits.
        if !self.waiting.load(Ordering::Relaxed) || self.draining.swap(true, Ordering::Acquire) {
            return;
        }
        self.waiting.store(false, Ordering::Relaxed);
        self.write_waiting(sink);
        self.draining.store(false, Ordering::Release);
    }

    fn write_waiting(&self, sink: Sink) {
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
        if SINK.get().is_none() {
            return;
        }
        QUEUE.push(record.level(), format!("chat-auth: {}", record.args()));
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

/// Writes the lines waiting; on the broker's thread only, where no plugin lock is held
/// (the FFI edge, after each callback; elsewhere it does nothing).
pub fn drain() {
    // After nearly every callback nothing waits: one load, before asking which thread
    // this is (that costs a reference count's two atomic operations).
    if !QUEUE.waiting.load(Ordering::Relaxed) {
        return;
    }
    if let Some(sink) = SINK.get() {
        if BROKER_THREAD.get() == Some(&std::thread::current().id()) {
            QUEUE.drain_into(*sink);
        }
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
    fn lines_are_written_only_by_a_drain_on_the_broker_thread() {
        // This test thread plays the broker's (other tests may log meanwhile: only this
        // test's lines are counted).
        install(sink, log::LevelFilter::Info);
        log::info!("on the broker thread");
        assert_eq!(
            sunk("on the broker thread"),
            0,
            "queued, not written in the call"
        );
        std::thread::spawn(|| {
            log::info!("from the writer thread");
            drain();
        })
        .join()
        .unwrap();
        assert_eq!(
            sunk("from the writer thread"),
            0,
            "no drain off the broker thread"
        );
        drain();
        assert_eq!(sunk("on the broker thread"), 1);
        assert_eq!(sunk("from the writer thread"), 1);
    }

    #[test]
    fn a_line_logged_while_draining_waits_for_the_next_drain() {
        // The broker's logger calls back into the plugin (log_dest topic -> ACL check),
        // which logs and drains again: the inner drain writes nothing, the outer one only
        // what waited when it began, so a line that makes a line cannot loop for ever.
        static NESTED: LineQueue = LineQueue::new(100);
        static WRITTEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        fn echoing(_: log::Level, line: &str) {
            WRITTEN.lock().unwrap().push(line.to_string());
            NESTED.push(log::Level::Info, format!("echo of {line}"));
            NESTED.drain_into(echoing);
        }
        NESTED.push(log::Level::Info, "first".into());
        NESTED.drain_into(echoing);
        assert_eq!(*WRITTEN.lock().unwrap(), ["first"]);
        NESTED.drain_into(echoing);
        assert_eq!(*WRITTEN.lock().unwrap(), ["first", "echo of first"]);
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
