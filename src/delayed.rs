//! Delayed logins (Mosquitto 2.1): a CONNECT whose check needs MySQL or the HTTP service is
//! answered `MOSQ_ERR_AUTH_DELAYED` on the broker thread, checked on a login thread, and
//! completed by the broker thread at a later TICK (`mosquitto_complete_basic_auth`, by client
//! id). Two parts, both plain data and threads, no broker call:
//!
//! - [`Waiting`]: the logins the broker holds for the plugin, by client id, each with a ticket.
//!   A client that leaves while it waits tells the plugin nothing (2.1 sends no DISCONNECT for
//!   it); the broker refuses a second CONNECT with an id that waits, so a new login with the
//!   same id means the old one is gone: it takes the id over, and the old answer, when it
//!   comes, is dropped by its ticket. A login that waits too long is refused (`overdue`).
//! - [`LoginThreads`]: a few threads that run the checks, a bounded queue in front of them
//!   (a full queue refuses at once: the broker thread never waits for a place), and the
//!   answers they leave for TICK.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A login the broker holds: which connection asked, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub ticket: u64,
    /// The broker's context of the connection (compared, never dereferenced).
    pub pointer: usize,
    pub since: Instant,
}

/// The logins waiting for their answer.
#[derive(Debug)]
pub struct Waiting {
    by_id: HashMap<Box<[u8]>, Held>,
    /// Client ids in the order they began, for `overdue` (an id taken over by a later login
    /// stays here under its old ticket until it comes up; skipped then).
    order: VecDeque<(Box<[u8]>, u64)>,
    next_ticket: u64,
    cap: usize,
    limit: Duration,
}

/// Why a login could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `cap` logins wait already.
    TooMany,
}

impl Waiting {
    /// At most `cap` logins wait at once, each at most `limit`.
    pub fn new(cap: usize, limit: Duration) -> Waiting {
        Waiting {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            next_ticket: 1,
            cap,
            limit,
        }
    }

    /// Holds the login of `client_id` (its connection `pointer`) from `now`; returns its
    /// ticket. An id that waits already is taken over (its connection left: see the module).
    pub fn begin(&mut self, client_id: &[u8], pointer: usize, now: Instant) -> Result<u64, Full> {
        if self.by_id.len() >= self.cap && !self.by_id.contains_key(client_id) {
            return Err(Full::TooMany);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.by_id.insert(
            client_id.into(),
            Held {
                ticket,
                pointer,
                since: now,
            },
        );
        self.order.push_back((client_id.into(), ticket));
        // Entries of taken-over ids pile up only as fast as logins come; drop them when they
        // outnumber the waiting ones.
        if self.order.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.order
                .retain(|(id, ticket)| by_id.get(id).is_some_and(|h| h.ticket == *ticket));
        }
        Ok(ticket)
    }

    /// The answer for `ticket` came back: the held login, if it still waits (not taken over
    /// by a later login with the same id, not refused as overdue).
    pub fn finish(&mut self, client_id: &[u8], ticket: u64) -> Option<Held> {
        match self.by_id.get(client_id) {
            Some(held) if held.ticket == ticket => self.by_id.remove(client_id),
            _ => None,
        }
    }

    /// The broker holds no login with this id any more (it refuses a CONNECT while one waits,
    /// so a new one means the old connection left): its answer, when it comes, is dropped.
    pub fn forget(&mut self, client_id: &[u8]) {
        self.by_id.remove(client_id);
    }

    /// The logins that have waited longer than the limit at `now`, taken out (oldest first).
    pub fn overdue(&mut self, now: Instant) -> Vec<(Box<[u8]>, Held)> {
        let mut late = Vec::new();
        while let Some((id, ticket)) = self.order.front() {
            match self.by_id.get(id) {
                Some(held) if held.ticket == *ticket => {
                    if now.duration_since(held.since) < self.limit {
                        break;
                    }
                    let (id, _) = self.order.pop_front().expect("a front entry");
                    let held = self.by_id.remove(&id).expect("held");
                    late.push((id, held));
                }
                // Finished, or taken over by a later login (which has its own entry).
                _ => {
                    self.order.pop_front();
                }
            }
        }
        late
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Where a login thread leaves its answers: a list the broker thread takes (`take`), and
/// `wake` (if any) called after each one so the broker's loop comes round to take it.
pub struct Post<A> {
    answers: Arc<Mutex<Vec<A>>>,
    wake: Option<crate::action::Waker>,
}

impl<A> Post<A> {
    /// Leaves one answer (a request may have several: a login's, then its rules).
    pub fn send(&self, answer: A) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(answer);
        if let Some(wake) = &self.wake {
            wake();
        }
    }
}

/// The work of a login thread: a request, and where its answers go.
pub type Work<Q, A> = Arc<dyn Fn(Q, &Post<A>) + Send + Sync>;

/// A few threads running `work` on requests, with a bounded queue in front of them; the
/// answers wait in a list for the broker thread (`take`).
pub struct LoginThreads<Q, A> {
    sender: Option<SyncSender<Q>>,
    answers: Arc<Mutex<Vec<A>>>,
    threads: Vec<JoinHandle<()>>,
    /// Set when the plugin stops: requests still queued are dropped unchecked.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl<Q: Send + 'static, A: Send + 'static> LoginThreads<Q, A> {
    /// Starts `threads` threads (named `chat-auth-login`) behind a queue of `queue` requests.
    /// `work` sends no answer for a request no longer worth one (it waited too long).
    pub fn start(
        threads: usize,
        queue: usize,
        work: Work<Q, A>,
        wake: Option<crate::action::Waker>,
    ) -> Result<LoginThreads<Q, A>, String> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Q>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..threads.max(1) {
            let receiver = receiver.clone();
            let post = Post {
                answers: answers.clone(),
                wake: wake.clone(),
            };
            let work = work.clone();
            let stop = stop.clone();
            let handle = std::thread::Builder::new()
                .name("chat-auth-login".into())
                .spawn(move || {
                    loop {
                        let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(request) = next else {
                            return; // the plugin is stopping
                        };
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            continue; // stopping: what is still queued goes unchecked
                        }
                        // A panic in a check must not take the thread (and later logins)
                        // with it; the login then waits until it is overdue (refused).
                        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            work(request, &post)
                        }));
                        if done.is_err() {
                            log::error!("a login check panicked; the login is refused");
                        }
                    }
                })
                .map_err(|e| format!("cannot start a login thread: {e}"))?;
            handles.push(handle);
        }
        Ok(LoginThreads {
            sender: Some(sender),
            answers,
            threads: handles,
            stop,
        })
    }

    /// Queues a request; a full queue gives it back at once.
    pub fn submit(&self, request: Q) -> Result<(), Q> {
        match self.sender.as_ref() {
            Some(sender) => sender.try_send(request).map_err(|e| match e {
                TrySendError::Full(q) | TrySendError::Disconnected(q) => q,
            }),
            None => Err(request),
        }
    }

    /// The answers made since the last call.
    pub fn take(&self) -> Vec<A> {
        std::mem::take(&mut *self.answers.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<Q, A> Drop for LoginThreads<Q, A> {
    /// Closes the queue; each thread ends after the check it runs (bounded by the timeouts),
    /// and what is still queued is dropped unchecked.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sender = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn an_answer_finishes_only_the_login_it_was_asked_for() {
        let t0 = Instant::now();
        let mut waiting = Waiting::new(10, LIMIT);
        let first = waiting.begin(b"phone", 1, t0).unwrap();
        // The first connection left unseen; the same id logs in again on another one.
        let second = waiting.begin(b"phone", 2, t0).unwrap();
        assert_ne!(first, second);
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting.finish(b"phone", first), None, "a stale answer");
        let held = waiting.finish(b"phone", second).expect("the current one");
        assert_eq!(held.pointer, 2);
        assert!(waiting.is_empty());
        assert_eq!(waiting.finish(b"phone", second), None, "answered once");
        // A login with the id answered at once (from the cache): the held one is forgotten.
        let third = waiting.begin(b"phone", 3, t0).unwrap();
        waiting.forget(b"phone");
        assert_eq!(waiting.finish(b"phone", third), None);
        assert!(waiting.overdue(t0 + LIMIT * 2).is_empty());
    }

    #[test]
    fn logins_waiting_too_long_are_taken_out_oldest_first() {
        let t0 = Instant::now();
        let mut waiting = Waiting::new(10, LIMIT);
        let a = waiting.begin(b"a", 1, t0).unwrap();
        waiting.begin(b"b", 2, t0 + Duration::from_secs(1)).unwrap();
        waiting.begin(b"a", 3, t0 + Duration::from_secs(2)).unwrap(); // takes a over
        assert!(
            waiting
                .overdue(t0 + Duration::from_millis(5_500))
                .is_empty()
        );
        let late = waiting.overdue(t0 + Duration::from_millis(6_500));
        assert_eq!(late.len(), 1);
        assert_eq!(&*late[0].0, b"b");
        let late = waiting.overdue(t0 + Duration::from_secs(8));
        assert_eq!(late.len(), 1);
        assert_eq!((&*late[0].0, late[0].1.pointer), (&b"a"[..], 3));
        assert!(waiting.is_empty());
        assert_eq!(waiting.finish(b"a", a), None);
    }

    #[test]
    fn the_cap_refuses_new_ids_but_not_a_take_over() {
        let t0 = Instant::now();
        let mut waiting = Waiting::new(2, LIMIT);
        waiting.begin(b"a", 1, t0).unwrap();
        waiting.begin(b"b", 2, t0).unwrap();
        assert_eq!(waiting.begin(b"c", 3, t0), Err(Full::TooMany));
        assert!(waiting.begin(b"a", 4, t0).is_ok());
        assert_eq!(waiting.len(), 2);
    }

    #[test]
    fn taken_over_entries_do_not_pile_up() {
        let t0 = Instant::now();
        let mut waiting = Waiting::new(10, LIMIT);
        for pointer in 0..10_000 {
            waiting.begin(b"loop", pointer, t0).unwrap();
        }
        assert_eq!(waiting.len(), 1);
        assert!(waiting.order.len() <= 2 + 64, "{}", waiting.order.len());
    }

    #[test]
    fn threads_answer_wake_and_refuse_when_the_queue_is_full() {
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let work_gate = gate.clone();
        let wake_count = woken.clone();
        let threads: LoginThreads<u32, u32> = LoginThreads::start(
            1,
            1,
            Arc::new(move |n, post: &Post<u32>| {
                let _open = work_gate.lock().unwrap();
                post.send(n * 2)
            }),
            Some(Arc::new(move || {
                wake_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
        )
        .unwrap();
        threads.submit(1).unwrap(); // taken by the thread, which waits at the gate
        let deadline = Instant::now() + Duration::from_secs(5);
        // One more fits the queue; then it is full.
        while threads.submit(2).is_err() {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let mut refused = false;
        for _ in 0..1000 {
            if threads.submit(3) == Err(3) {
                refused = true;
                break;
            }
        }
        assert!(refused, "a full queue gives the request back");
        drop(held);
        let mut answers = Vec::new();
        while answers.len() < 2 {
            assert!(Instant::now() < deadline, "answers: {answers:?}");
            answers.extend(threads.take());
            std::thread::yield_now();
        }
        answers.sort();
        assert!(answers.starts_with(&[2, 4]), "{answers:?}");
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }

    #[test]
    fn a_panicking_check_keeps_the_thread() {
        let threads: LoginThreads<u32, u32> = LoginThreads::start(
            1,
            4,
            Arc::new(|n, post: &Post<u32>| {
                assert!(n != 0, "a bad request");
                if n != 1 {
                    post.send(n)
                }
            }),
            None,
        )
        .unwrap();
        threads.submit(0).unwrap();
        threads.submit(1).unwrap(); // no longer worth an answer: none
        threads.submit(7).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answers = Vec::new();
        while answers.is_empty() {
            assert!(Instant::now() < deadline);
            answers.extend(threads.take());
            std::thread::yield_now();
        }
        assert_eq!(answers, vec![7]);
    }
}
