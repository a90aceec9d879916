//! Questions asked again in the background after a SIGHUP.

use super::*;

/// A question asked again in the background after a reload (its answer was handed out
/// stale, or a re-check was answered from the logins kept).
#[derive(Debug)]
pub(super) enum Job {
    Login {
        key: Key,
        username: String,
        password: String,
        client_id: Vec<u8>,
    },
    Superuser {
        key: Key,
        username: String,
    },
    Acl {
        key: Key,
        username: String,
        client_id: Vec<u8>,
        topic: String,
        access: Access,
    },
}

impl Job {
    pub(super) fn bytes(&self) -> usize {
        size_of::<Job>()
            + match self {
                Job::Login {
                    username,
                    password,
                    client_id,
                    ..
                } => username.len() + password.len() + client_id.len(),
                Job::Superuser { username, .. } => username.len(),
                Job::Acl {
                    username,
                    client_id,
                    topic,
                    ..
                } => username.len() + client_id.len() + topic.len(),
            }
    }
}

/// Questions waiting for the background thread, bounded in bytes.
#[derive(Default)]
pub(super) struct Jobs {
    pub(super) queue: Mutex<JobQueue>,
    pub(super) ready: Condvar,
}

#[derive(Default)]
pub(super) struct JobQueue {
    pub(super) jobs: VecDeque<Job>,
    pub(super) bytes: usize,
    /// Jobs not queued because it was full, since the last warning.
    pub(super) dropped: u64,
    pub(super) closed: bool,
}

impl Jobs {
    pub(super) fn lock(&self) -> MutexGuard<'_, JobQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn push(&self, job: Job) {
        let mut queue = self.lock();
        let bytes = job.bytes();
        if queue.closed || queue.bytes + bytes > REFRESH_QUEUE_BYTES {
            queue.dropped += 1;
            return;
        }
        queue.bytes += bytes;
        queue.jobs.push_back(job);
        drop(queue);
        self.ready.notify_one();
    }

    /// The next job; `None` once closed.
    pub(super) fn next(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            if let Some(job) = queue.jobs.pop_front() {
                queue.bytes -= job.bytes();
                let dropped = match queue.jobs.is_empty() {
                    true => std::mem::take(&mut queue.dropped),
                    false => 0,
                };
                drop(queue);
                if dropped > 0 {
                    log::warn!(
                        "HTTP auth service: {dropped} answers were not asked again after the \
                         reload (more than {} MiB of questions waiting); they are served until \
                         they expire",
                        REFRESH_QUEUE_BYTES >> 20
                    );
                }
                return Some(job);
            }
            queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}
