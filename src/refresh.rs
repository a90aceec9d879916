//! The background threads for the broker thread's slow work: reloading users' rules (groups,
//! ACL rows), reading a user row again after a SIGHUP re-check, and writing the sessions
//! file, so no callback waits on MySQL or the disk for them. Work goes in, results come out;
//! the broker thread applies them (and logs) at TICK.

use crate::backend::{BackendError, RuleSource, UserNow};
use crate::sessions::{Job, Loaded, SavedSession};
use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
        result: Result<Option<UserNow>, BackendError>,
    },
    Saved {
        path: PathBuf,
        result: Result<usize, String>,
    },
}

/// Jobs waiting for a thread: urgent ones (rules a client that just logged in waits for)
/// before the rest. A user's rules load waits once per lane: a newer one asked for meanwhile
/// (ten reconnects, a refresh after a login) joins it (`Pending::merge`).
#[derive(Default)]
struct Queue {
    urgent: VecDeque<Queued>,
    normal: VecDeque<Queued>,
    /// The rules loads waiting, by lane and username.
    rules: HashMap<(bool, String), Job>,
    closed: bool,
}

/// A place in a lane: a user's rules load (in `Queue::rules`) or other work.
enum Queued {
    Rules(String),
    Other(Box<Work>),
}

impl Queue {
    fn len(&self) -> usize {
        self.urgent.len() + self.normal.len()
    }

    /// Queues `work`; `Err` gives it back when the queue is full.
    fn push(&mut self, work: Work, urgent: bool) -> Result<(), Box<Work>> {
        let full = self.len() >= MAX_QUEUED;
        let work = match work {
            Work::Rules(job) => match self.rules.get_mut(&(urgent, job.username.clone())) {
                Some(waiting) => match merge(waiting, job) {
                    None => return Ok(()),
                    // Waits on its own.
                    Some(job) => Work::Rules(job),
                },
                None if !full => {
                    let username = job.username.clone();
                    self.rules.insert((urgent, username.clone()), job);
                    self.lane(urgent).push_back(Queued::Rules(username));
                    return Ok(());
                }
                None => Work::Rules(job),
            },
            other => other,
        };
        if full {
            return Err(Box::new(work));
        }
        self.lane(urgent).push_back(Queued::Other(Box::new(work)));
        Ok(())
    }

    fn lane(&mut self, urgent: bool) -> &mut VecDeque<Queued> {
        if urgent {
            &mut self.urgent
        } else {
            &mut self.normal
        }
    }

    fn pop(&mut self) -> Option<Work> {
        let (queued, urgent) = match self.urgent.pop_front() {
            Some(queued) => (queued, true),
            None => (self.normal.pop_front()?, false),
        };
        Some(match queued {
            Queued::Other(work) => *work,
            Queued::Rules(username) => Work::Rules(
                self.rules
                    .remove(&(urgent, username))
                    .expect("a queued load is in the map"),
            ),
        })
    }
}

/// Folds `newer`, a rules load of the same user in the same lane, into `waiting`: one load
/// answers both (it starts later than either was asked for, so it holds what both would).
/// Gives `newer` back when it cannot be folded in: another chat identity, or both answer a
/// `refreshUser`.
fn merge(waiting: &mut Job, newer: Job) -> Option<Job> {
    if waiting.user_id != newer.user_id || (waiting.reply.is_some() && newer.reply.is_some()) {
        return Some(newer);
    }
    // The later ticket settles both waits (`Registry::apply` settles every ticket below it).
    waiting.ticket = waiting.ticket.max(newer.ticket);
    if waiting.reply.is_none() {
        waiting.reply = newer.reply;
    }
    None
}

/// Jobs waiting at most; more are answered at once with an error (a rules load's waiter
/// then uses the rules held, a user row is read again later, the sessions file is saved at
/// the next interval).
const MAX_QUEUED: usize = 10_000;

/// Background threads sharing one queue. Results come back in the order they finish.
pub struct Refresher {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    results: Receiver<Done>,
    /// Hands back work the full queue refused, as a failed result.
    refused: Sender<Done>,
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
            refused: done,
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
        let pushed = lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(work, urgent);
        match pushed {
            Ok(()) => wake.notify_one(),
            Err(work) => {
                let why = BackendError::Unavailable(format!(
                    "{MAX_QUEUED} background jobs are waiting already (MySQL is slow)"
                ));
                let _ = self.refused.send(failed(*work, why));
            }
        }
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
        if let Some(work) = queue.pop() {
            return Some(work);
        }
        if queue.closed {
            return None;
        }
        queue = wake.wait(queue).unwrap_or_else(|e| e.into_inner());
    }
}

/// The result of `work` that was not done, failed with `why`.
fn failed(work: Work, why: BackendError) -> Done {
    match work {
        Work::Rules(job) => Done::Rules(Box::new(Loaded {
            job,
            result: Err(why),
        })),
        Work::CheckUser(username) => Done::UserChecked {
            username,
            result: Err(why),
        },
        Work::SaveSessions { path, .. } => Done::Saved {
            path,
            result: Err(why.to_string()),
        },
    }
}

/// One piece of work; a panic becomes an error result, never the end of the thread.
fn run(source: &dyn RuleSource, work: Work) -> Done {
    let panicked = || BackendError::Query("internal panic in the background thread".into());
    match work {
        Work::Rules(job) => {
            let result = catch_unwind(AssertUnwindSafe(|| {
                source.load(&job.username, &job.user_id)
            }))
            .unwrap_or_else(|_| Err(panicked()));
            Done::Rules(Box::new(Loaded { job, result }))
        }
        Work::CheckUser(username) => {
            let result = catch_unwind(AssertUnwindSafe(|| source.user_now(&username)))
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
    use crate::acl::RuleSet;
    use crate::action::Reply;
    use std::time::{Duration, Instant};

    struct Counting;

    impl RuleSource for Counting {
        fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, BackendError> {
            if username == "boom" {
                panic!("driver bug");
            }
            Ok(RuleSet {
                user_id: user_id.into(),
                groups: [format!("g-{username}")].into_iter().collect(),
                ..Default::default()
            })
        }
        fn user_now(&self, username: &str) -> Result<Option<UserNow>, BackendError> {
            Ok((username != "gone").then(|| UserNow {
                hash: b"hash".to_vec(),
                superuser_by_row: false,
                named: true,
            }))
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

    fn rules(username: &str, user_id: &str, ticket: u64, reply: Option<&str>) -> Work {
        Work::Rules(Job {
            username: username.into(),
            user_id: user_id.into(),
            reply: reply.map(|client| Reply::to(client, "response")),
            ticket,
            urgent: true,
        })
    }

    fn ticket_and_reply(work: Work) -> (String, u64, Option<String>) {
        match work {
            Work::Rules(job) => (job.username, job.ticket, job.reply.map(|r| r.client_id)),
            other => panic!("not a rules load: {other:?}"),
        }
    }

    #[test]
    fn a_users_waiting_loads_are_one() {
        let mut queue = Queue::default();
        for ticket in 1..=10 {
            queue.push(rules("alice", "1", ticket, None), true).unwrap();
        }
        queue.push(rules("bob", "2", 11, None), true).unwrap();
        // A refresh answer joins a waiting load; a second one waits on its own.
        queue
            .push(rules("alice", "1", 12, Some("admin")), true)
            .unwrap();
        queue
            .push(rules("alice", "1", 13, Some("ops")), true)
            .unwrap();
        // Another identity of the name is never answered by the old one's load.
        queue.push(rules("alice", "9", 14, None), true).unwrap();
        // The other lane is another load.
        queue.push(rules("alice", "1", 15, None), false).unwrap();
        assert_eq!(queue.len(), 5);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop())
            .map(ticket_and_reply)
            .collect();
        assert_eq!(
            order,
            [
                ("alice".into(), 12, Some("admin".into())),
                ("bob".into(), 11, None),
                ("alice".into(), 13, Some("ops".into())),
                ("alice".into(), 14, None),
                ("alice".into(), 15, None),
            ]
        );
        assert!(queue.rules.is_empty());
    }

    #[test]
    fn a_full_queue_gives_work_back_and_still_merges() {
        let mut queue = Queue::default();
        for n in 0..MAX_QUEUED {
            queue
                .push(rules(&format!("user{n}"), "1", n as u64, None), false)
                .unwrap();
        }
        let refused = queue.push(rules("late", "1", 1, None), false).unwrap_err();
        assert_eq!(ticket_and_reply(*refused).0, "late");
        assert!(queue.push(Work::CheckUser("x".into()), true).is_err());
        // A load that joins a waiting one takes no place.
        queue
            .push(rules("user7", "1", 99_999, None), false)
            .unwrap();
        assert_eq!(queue.len(), MAX_QUEUED);
    }

    #[test]
    fn refused_work_comes_back_failed() {
        match failed(
            rules("a", "1", 3, None),
            BackendError::Unavailable("full".into()),
        ) {
            Done::Rules(loaded) => {
                assert_eq!(loaded.job.ticket, 3);
                assert!(loaded.result.is_err());
            }
            _ => panic!("a rules result"),
        }
        assert!(matches!(
            failed(
                Work::CheckUser("a".into()),
                BackendError::Unavailable("full".into())
            ),
            Done::UserChecked { result: Err(_), .. }
        ));
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
