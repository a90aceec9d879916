//! The background thread for the broker thread's slow work: reloading users' rules (groups,
//! ACL rows), reading a user row again after a SIGHUP re-check, and writing the sessions
//! file, so no callback waits on MySQL or the disk for them. Work goes in, results come out;
//! the broker thread applies them (and logs) at TICK.

use crate::db::DbError;
use crate::sessions::{Job, Loaded, RuleSet, SavedSession};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

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

pub struct Refresher {
    jobs: Option<Sender<Work>>,
    results: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Refresher {
    pub fn start(source: Arc<dyn RuleSource>) -> Result<Refresher, String> {
        let (jobs, job_queue) = channel::<Work>();
        let (done, results) = channel();
        let thread = std::thread::Builder::new()
            .name("chat-auth-refresh".into())
            .spawn(move || {
                for work in job_queue {
                    if done.send(run(&*source, work)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the rules refresher thread: {e}"))?;
        Ok(Refresher {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
        })
    }

    pub fn submit(&self, work: Work) {
        if let Some(jobs) = &self.jobs {
            // Fails only once the thread is gone (shutdown); nothing to do then.
            let _ = jobs.send(work);
        }
    }

    /// Results ready now; never waits.
    pub fn ready(&self) -> impl Iterator<Item = Done> + '_ {
        self.results.try_iter()
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
        Work::SaveSessions { path, sessions } => {
            let result = catch_unwind(AssertUnwindSafe(|| {
                crate::session_file::save(&path, &sessions).map(|()| sessions.len())
            }))
            .unwrap_or_else(|_| Err("internal panic".into()));
            Done::Saved { path, result }
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current job.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
    fn jobs_come_back_in_order_and_a_panic_is_an_error() {
        let refresher = Refresher::start(Arc::new(Counting)).unwrap();
        refresher.submit(job("alice"));
        refresher.submit(job("boom"));
        refresher.submit(job("bob"));
        refresher.submit(Work::CheckUser("gone".into()));
        let results = collect(&refresher, 4);
        assert_eq!(results.len(), 4);
        let Done::Rules(alice) = &results[0] else {
            panic!("{:?}", results[0]);
        };
        assert!(alice.result.as_ref().unwrap().groups.contains("g-alice"));
        assert!(matches!(&results[1], Done::Rules(l) if l.result.is_err()));
        assert!(matches!(&results[2], Done::Rules(l) if l.job.username == "bob"));
        assert!(matches!(
            &results[3],
            Done::UserChecked { username, result: Ok(None) } if username == "gone"
        ));
    }
}
