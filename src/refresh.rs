//! The background threads for the broker thread's slow work: reloading users' rules (groups,
//! ACL rows), reading a user row again after a SIGHUP re-check, and writing the sessions
//! file, so no callback waits on MySQL or the disk for them. Work goes in, results come out;
//! the broker thread applies them (and logs) at TICK.

use crate::db::DbError;
use crate::sessions::{Job, Loaded, RuleSet, SavedSession};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where rules and user rows come from: MySQL in the plugin (see `plugin::Background`).
pub trait RuleSource: Send + Sync {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, DbError>;
    /// The user's stored password hash now (`None`: no such user).
    fn stored_hash(&self, username: &str) -> Result<Option<Vec<u8>>, DbError>;
}

#[derive(Debug)]
pub enum Work {
    Rules(Job),
    /// Read the user row again (a SIGHUP re-check was answered from memory).
    CheckUser(String),
    /// Write the sessions file (atomically: a temporary file renamed over it).
    SaveSessions {
        path: PathBuf,
        sessions: Vec<SavedSession>,
        /// Snapshots are numbered in the order they were taken (see `session_file::save`).
        seq: u64,
    },
}

#[derive(Debug)]
pub enum Done {
    Rules(Box<Loaded>),
    UserChecked {
        username: String,
        result: Result<Option<Vec<u8>>, DbError>,
    },
    Saved {
        path: PathBuf,
        result: Result<usize, String>,
    },
}

/// Jobs waiting for a thread: urgent ones (rules a client that just logged in waits for)
/// before the rest.
#[derive(Default)]
struct Queue {
    urgent: std::collections::VecDeque<Work>,
    normal: std::collections::VecDeque<Work>,
    closed: bool,
}

/// Background threads sharing one queue. Results come back in the order they finish.
pub struct Refresher {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

/// Threads: rules for a login are read while another thread reads a refresh or a row.
const THREADS: usize = 2;

impl Refresher {
    pub fn start(source: Arc<dyn RuleSource>) -> Result<Refresher, String> {
        let queue: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let (done, results) = channel();
        let mut threads = Vec::new();
        for n in 0..THREADS {
            let (queue, source, done) = (Arc::clone(&queue), Arc::clone(&source), done.clone());
            let thread = std::thread::Builder::new()
                .name(format!("chat-auth-bg{n}"))
                .spawn(move || {
                    while let Some(work) = next(&queue) {
                        if done.send(run(&*source, work)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| format!("cannot start the background thread: {e}"))?;
            threads.push(thread);
        }
        Ok(Refresher {
            queue,
            results,
            threads,
        })
    }

    pub fn submit(&self, work: Work) {
        self.push(work, false);
    }

    /// Ahead of the other work: a client waits for it.
    pub fn submit_urgent(&self, work: Work) {
        self.push(work, true);
    }

    fn push(&self, work: Work, urgent: bool) {
        let (lock, wake) = &*self.queue;
        let mut queue = lock.lock().unwrap_or_else(|e| e.into_inner());
        if urgent {
            queue.urgent.push_back(work);
        } else {
            queue.normal.push_back(work);
        }
        wake.notify_one();
    }

    /// Results ready now; never waits.
    pub fn ready(&self) -> impl Iterator<Item = Done> + '_ {
        self.results.try_iter()
    }

    /// The next result, waiting at most `wait`.
    pub fn wait(&self, wait: Duration) -> Option<Done> {
        self.results.recv_timeout(wait).ok()
    }
}

/// The next job for a thread; `None` once the queue is closed.
fn next(queue: &(Mutex<Queue>, Condvar)) -> Option<Work> {
    let (lock, wake) = queue;
    let mut queue = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(work) = queue
            .urgent
            .pop_front()
            .or_else(|| queue.normal.pop_front())
        {
            return Some(work);
        }
        if queue.closed {
            return None;
        }
        queue = wake.wait(queue).unwrap_or_else(|e| e.into_inner());
    }
}

/// One piece of work; a panic becomes an error result, never the end of the thread.
fn run(source: &dyn RuleSource, work: Work) -> Done {
    let panicked = || DbError::Query("internal panic in the background thread".into());
    match work {
        Work::Rules(job) => {
            let result = catch_unwind(AssertUnwindSafe(|| {
                source.load(&job.username, &job.user_id)
            }))
            .unwrap_or_else(|_| Err(panicked()));
            Done::Rules(Box::new(Loaded { job, result }))
        }
        Work::CheckUser(username) => {
            let result = catch_unwind(AssertUnwindSafe(|| source.stored_hash(&username)))
                .unwrap_or_else(|_| Err(panicked()));
            Done::UserChecked { username, result }
        }
        Work::SaveSessions {
            path,
            sessions,
            seq,
        } => {
            let result = catch_unwind(AssertUnwindSafe(|| {
                crate::session_file::save(&path, &sessions, seq).map(|()| sessions.len())
            }))
            .unwrap_or_else(|_| Err("internal panic".into()));
            Done::Saved { path, result }
        }
    }
}

impl Refresher {
    /// Ends the threads after the queued work (each job is bounded by the timeouts).
    pub fn shutdown(&mut self) {
        let (lock, wake) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    struct Counting;

    impl RuleSource for Counting {
        fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, DbError> {
            if username == "boom" {
                panic!("driver bug");
            }
            Ok(RuleSet {
                user_id: user_id.into(),
                groups: [format!("g-{username}")].into_iter().collect(),
                ..Default::default()
            })
        }
        fn stored_hash(&self, username: &str) -> Result<Option<Vec<u8>>, DbError> {
            Ok((username != "gone").then(|| b"hash".to_vec()))
        }
    }

    fn job(username: &str) -> Work {
        Work::Rules(Job {
            username: username.into(),
            user_id: "1".into(),
            reply: None,
            ticket: 1,
            urgent: false,
        })
    }

    fn collect(refresher: &Refresher, count: usize) -> Vec<Done> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut results = Vec::new();
        while results.len() < count && Instant::now() < deadline {
            results.extend(refresher.ready());
            std::thread::sleep(Duration::from_millis(5));
        }
        results
    }

    #[test]
    fn every_job_comes_back_and_a_panic_is_an_error() {
        let refresher = Refresher::start(Arc::new(Counting)).unwrap();
        refresher.submit(job("alice"));
        refresher.submit(job("boom"));
        refresher.submit_urgent(job("bob"));
        refresher.submit(Work::CheckUser("gone".into()));
        let mut results = collect(&refresher, 4);
        assert_eq!(results.len(), 4);
        let mut rules: Vec<(String, bool)> = Vec::new();
        let mut checked = None;
        for done in results.drain(..) {
            match done {
                Done::Rules(loaded) => rules.push((loaded.job.username, loaded.result.is_ok())),
                Done::UserChecked { username, result } => checked = Some((username, result)),
                Done::Saved { .. } => panic!("nothing saved"),
            }
        }
        rules.sort();
        assert_eq!(
            rules,
            [
                ("alice".to_string(), true),
                ("bob".to_string(), true),
                ("boom".to_string(), false)
            ]
        );
        assert_eq!(checked, Some(("gone".to_string(), Ok(None))));
        assert!(refresher.wait(Duration::from_millis(10)).is_none());
    }
}
