//! Waking the broker's event loop from a background thread: `SIGURG` to the broker's thread
//! with a handler that does nothing. The signal only ends the loop's wait early (`EINTR`,
//! which Mosquitto's `epoll_wait` carries on after), so the next TICK hands over what the
//! thread made. SIGURG is otherwise only sent for TCP urgent data to a socket owner set with
//! `F_SETOWN`, which Mosquitto never sets.
//!
//! The signal must never cut short anything else the broker thread does (a MySQL read over
//! TLS, say: a read with a timeout is not restarted after a handler).
//!
//! - **Mosquitto 2.0** swaps its own signal mask (which lacks SIGURG) in around `epoll_wait`
//!   and puts the previous one back after: SIGURG stays blocked on the broker thread and only
//!   the wait lets it in. A signal sent while the thread works waits, pending, and the TICK at
//!   the end of that pass hands the answers over anyway. 2.0 waits at most 100 ms.
//! - **Mosquitto 2.1** waits with a plain `epoll_wait` (built with websockets, at most 100 ms;
//!   without, until its next timer), so a blocked SIGURG would never reach it. SIGURG is left
//!   unblocked; the few places where the broker thread itself waits on the network (a SIGHUP
//!   re-check's query, a certificate user's lookup, an HTTP ACL question) block it for their
//!   duration (`hush`). A pulse thread sends it every 100 ms as well, so a 2.1 built without
//!   websockets keeps 2.0's pace.

use std::ffi::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// 2.0's longest wait, the pace the pulse keeps on 2.1.
const PULSE: Duration = Duration::from_millis(100);

pub(super) struct LoopWaker {
    previous: libc::sigaction,
    /// The plugin blocked SIGURG on the broker thread (2.0), which was not blocked before.
    unblock_at_drop: bool,
    /// The pulse thread (2.1) and its stop flag.
    pulse: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

extern "C" fn wake_up(_signal: c_int) {}

/// The signal set of SIGURG alone.
fn urgent_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGURG);
        set
    }
}

/// Runs `work` with SIGURG blocked on this thread (2.1's broker thread, around its own waits
/// on the network); a signal sent meanwhile runs the empty handler after.
pub(super) fn hushed(work: &mut dyn FnMut()) {
    /// Unblocks SIGURG when dropped, so a panic in `work` (caught further out) leaves the
    /// mask as it was.
    struct Unblock(bool);
    impl Drop for Unblock {
        fn drop(&mut self) {
            if self.0 {
                // SAFETY: pthread_sigmask with a valid set, on the calling thread only.
                unsafe {
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &urgent_set(), std::ptr::null_mut())
                };
            }
        }
    }
    // SAFETY: pthread_sigmask with valid sets, on the calling thread only.
    let _unblock = unsafe {
        let mut before: libc::sigset_t = std::mem::zeroed();
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &urgent_set(), &mut before) == 0;
        Unblock(blocked && libc::sigismember(&before, libc::SIGURG) != 1)
    };
    work();
}

impl LoopWaker {
    /// Installs the handler, unless another one is installed (then answers wait for the
    /// loop's own pace). On the broker's thread (plugin init). `plain_wait`: the broker waits
    /// with a plain `epoll_wait` (2.1; see the module).
    pub(super) fn install(plain_wait: bool) -> Option<(LoopWaker, crate::action::Waker)> {
        // SAFETY: sigaction with valid pointers; pthread_self has no preconditions.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGURG, std::ptr::null(), &mut previous) != 0
                || (previous.sa_sigaction != libc::SIG_DFL
                    && previous.sa_sigaction != libc::SIG_IGN)
            {
                log::warn!(
                    "SIGURG has a handler already: answers made by the plugin's threads wait \
                     for the broker's next loop pass (up to 100 ms)"
                );
                return None;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = wake_up as extern "C" fn(c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()) != 0 {
                return None;
            }
            let mut unblock_at_drop = false;
            if !plain_wait {
                let mut before: libc::sigset_t = std::mem::zeroed();
                if libc::pthread_sigmask(libc::SIG_BLOCK, &urgent_set(), &mut before) != 0 {
                    libc::sigaction(libc::SIGURG, &previous, std::ptr::null_mut());
                    return None;
                }
                unblock_at_drop = libc::sigismember(&before, libc::SIGURG) != 1;
            }
            let broker_thread = libc::pthread_self();
            let wake: crate::action::Waker = Arc::new(move || {
                // SAFETY: the broker's thread lives as long as the plugin (its threads are
                // joined at cleanup before the handler is removed).
                libc::pthread_kill(broker_thread, libc::SIGURG);
            });
            let pulse = plain_wait.then(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let (flag, pulse_wake) = (stop.clone(), wake.clone());
                std::thread::Builder::new()
                    .name("chat-auth-pulse".into())
                    .spawn(move || {
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(PULSE);
                            pulse_wake();
                        }
                    })
                    .ok()
                    .map(|thread| (stop, thread))
            });
            Some((
                LoopWaker {
                    previous,
                    unblock_at_drop,
                    pulse: pulse.flatten(),
                },
                wake,
            ))
        }
    }
}

impl Drop for LoopWaker {
    /// The handler lives in this library, which the broker may unload after cleanup.
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.pulse.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        // SAFETY: on the broker thread (cleanup, or init): unblocks SIGURG as it was (a
        // pending one runs our handler, still installed), then restores the disposition read
        // at install, unless another handler replaced ours since.
        unsafe {
            if self.unblock_at_drop {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &urgent_set(), std::ptr::null_mut());
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            let ours = wake_up as extern "C" fn(c_int) as libc::sighandler_t;
            if libc::sigaction(libc::SIGURG, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == ours
            {
                libc::sigaction(libc::SIGURG, &self.previous, std::ptr::null_mut());
            }
        }
    }
}
