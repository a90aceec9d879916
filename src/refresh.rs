//! The background thread that reloads users' rules (groups, ACL rows), so an ACL check
//! never waits on MySQL. Jobs go in, results come out; the broker thread applies them.

use crate::db::DbError;
use crate::sessions::{Job, Loaded, RuleSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// Where rules come from: MySQL in the plugin (see `plugin::MysqlRules`).
pub trait RuleSource: Send + Sync {
    fn load(&self, username: &str, user_id: &str) -> Result<RuleSet, DbError>;
}

pub struct Refresher {
    jobs: Option<Sender<Job>>,
    results: Receiver<Loaded>,
    thread: Option<JoinHandle<()>>,
}

impl Refresher {
    pub fn start(source: Arc<dyn RuleSource>) -> Result<Refresher, String> {
        let (jobs, job_queue) = channel::<Job>();
        let (done, results) = channel();
        let thread = std::thread::Builder::new()
            .name("chat-auth-refresh".into())
            .spawn(move || {
                for job in job_queue {
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        source.load(&job.username, &job.user_id)
                    }))
                    .unwrap_or_else(|_| Err(DbError::Query("internal panic while loading".into())));
                    if done.send(Loaded { job, result }).is_err() {
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

    pub fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // Fails only once the thread is gone (shutdown); nothing to do then.
            let _ = jobs.send(job);
        }
    }

    /// Results ready now; never waits.
    pub fn ready(&self) -> impl Iterator<Item = Loaded> + '_ {
        self.results.try_iter()
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
    }

    fn job(username: &str) -> Job {
        Job {
            username: username.into(),
            user_id: "1".into(),
            reply: None,
        }
    }

    #[test]
    fn jobs_come_back_in_order_and_a_panic_is_an_error() {
        let refresher = Refresher::start(Arc::new(Counting)).unwrap();
        refresher.submit(job("alice"));
        refresher.submit(job("boom"));
        refresher.submit(job("bob"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut results = Vec::new();
        while results.len() < 3 && Instant::now() < deadline {
            results.extend(refresher.ready());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(results.len(), 3);
        assert!(
            results[0]
                .result
                .as_ref()
                .unwrap()
                .groups
                .contains("g-alice")
        );
        assert!(results[1].result.is_err());
        assert_eq!(results[2].job.username, "bob");
    }
}
