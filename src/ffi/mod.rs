//! The C ABI edge: the exported `mosquitto_plugin_*` functions and one callback per event.
//! All `unsafe` in the crate is here (and in `store::mapped_file`, the spool's memory map);
//! every callback runs inside `catch_unwind` and maps a panic to a refusal, never to "allow".

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

use crate::plugin::Plugin;
use bindings::*;
use broker21::*;
use events::*;
use std::ffi::{CStr, CString, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use waker::{LoopWaker, hushed};

mod broker21;
mod events;
mod properties;
mod publish;
mod waker;

const PLUGIN_API_VERSION: c_int = 5;

/// Runs `body`, turning a panic into `on_panic` with an error log line, then writes the
/// lines logged meanwhile. Here, after `body` has returned, the plugin holds no lock: the
/// broker's logger may call back into the plugin (`log_dest topic` runs an ACL check per
/// `$SYS` subscriber) without finding a lock taken (see `logging`).
fn guard<T>(what: &str, on_panic: T, body: impl FnOnce() -> T) -> T {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("internal error in {what} ({why}); refused");
        on_panic
    });
    crate::logging::drain();
    result
}

/// The bytes of a C string the broker owns, or `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string valid for the callback's duration.
unsafe fn c_bytes<'a>(ptr: *const std::ffi::c_char) -> Option<&'a [u8]> {
    // SAFETY: non-NULL and NUL-terminated for the callback, as the caller promises.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

fn broker_log(level: log::Level, text: &str) {
    let level = match level {
        log::Level::Error => MOSQ_LOG_ERR,
        log::Level::Warn => MOSQ_LOG_WARNING,
        log::Level::Info => MOSQ_LOG_INFO,
        log::Level::Debug | log::Level::Trace => MOSQ_LOG_DEBUG,
    };
    let text = CString::new(text.replace('\0', "\\0")).expect("NULs were replaced");
    // A fixed "%s" format: the text is never read as a format string.
    // SAFETY: two valid C strings; the broker's variadic logger reads one `%s` argument.
    unsafe { mosquitto_log_printf(level as c_int, c"%s".as_ptr(), text.as_ptr()) };
}

type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

/// An event the plugin handles, with the `event_data` its registration needs; `since_2_1`
/// names what a broker without the event (2.0 answers `MOSQ_ERR_NOT_SUPPORTED`) goes without.
struct Event {
    event: mosquitto_plugin_event,
    callback: Callback,
    event_data: Option<&'static CStr>,
    since_2_1: Option<&'static str>,
}

const fn on(event: mosquitto_plugin_event, callback: Callback) -> Event {
    Event {
        event,
        callback,
        event_data: None,
        since_2_1: None,
    }
}

/// Every event the plugin handles.
const EVENTS: &[Event] = &[
    on(MOSQ_EVT_BASIC_AUTH, on_basic_auth),
    on(MOSQ_EVT_ACL_CHECK, on_acl_check),
    on(MOSQ_EVT_MESSAGE, on_message),
    on(MOSQ_EVT_DISCONNECT, on_disconnect),
    Event {
        since_2_1: Some("exact session ends (CLIENT_OFFLINE)"),
        ..on(MOSQ_EVT_CLIENT_OFFLINE, on_client_offline)
    },
    Event {
        since_2_1: Some("certificate clients known at CONNECT"),
        ..on(MOSQ_EVT_CONNECT, on_connect)
    },
    on(MOSQ_EVT_RELOAD, on_reload),
    on(MOSQ_EVT_TICK, on_tick),
    Event {
        event_data: Some(c"$CONTROL/chat-auth/v1"),
        ..on(MOSQ_EVT_CONTROL, on_control)
    },
    Event {
        event_data: Some(c"$CONTROL/chat-history/v1"),
        ..on(MOSQ_EVT_CONTROL, on_history)
    },
];

/// How often TICK comes when the broker has nothing else to do. Mosquitto 2.0 passes its loop
/// at least every 100 ms, and calls TICK at every pass; 2.1 calls it only when the `next_ms`
/// it last asked for is over, and sleeps until its next timer (a keepalive: many seconds)
/// unless built with websockets (100 ms). With the loop waker (see `waker`), TICK asks for
/// every pass (0), as 2.0 gives it, and the waker's pulse keeps 2.0's pace; without it, for
/// 2.0's pace itself, so answers and batches handed over at TICK keep their latency.
const TICK_PACE_MS: i64 = 100;
static TICK_NEXT_MS: AtomicI64 = AtomicI64::new(TICK_PACE_MS);

/// The broker takes `MOSQ_ERR_QUOTA_EXCEEDED` from MESSAGE (2.1). Set once at init.
static QUOTA_ANSWERS: AtomicBool = AtomicBool::new(false);

/// 2.1 with the loop waker: the BASIC_AUTH callback, which may wait on MySQL (a SIGHUP
/// re-check), blocks SIGURG for its duration.
static HUSH_LOGINS: AtomicBool = AtomicBool::new(false);

struct Registration {
    identifier: *mut mosquitto_plugin_id_t,
    /// The entries of `EVENTS` the broker took.
    registered: Vec<&'static Event>,
    plugin: Box<Plugin>,
    /// The loop waker's signal, given back at cleanup.
    waker: Option<LoopWaker>,
}

impl Registration {
    fn unregister(&mut self) {
        for Event {
            event,
            callback,
            event_data,
            ..
        } in self.registered.drain(..)
        {
            // SAFETY: the same arguments the callback was registered with.
            unsafe {
                mosquitto_callback_unregister(
                    self.identifier,
                    *event as c_int,
                    Some(*callback),
                    event_data.map_or(std::ptr::null(), |d| d.as_ptr() as *const c_void),
                );
            }
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn mosquitto_plugin_version(count: c_int, versions: *const c_int) -> c_int {
    guard("mosquitto_plugin_version", -1, || {
        if versions.is_null() || count <= 0 {
            return -1;
        }
        // SAFETY: the broker passes `count` versions.
        let offered = unsafe { std::slice::from_raw_parts(versions, count as usize) };
        if offered.contains(&PLUGIN_API_VERSION) {
            PLUGIN_API_VERSION
        } else {
            -1
        }
    })
}

/// # Safety
/// Called by the broker with its plugin id, a place for our userdata and `opt_count` options.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut mosquitto_plugin_id_t,
    userdata: *mut *mut c_void,
    opts: *mut mosquitto_opt,
    opt_count: c_int,
) -> c_int {
    crate::logging::install(broker_log, log::LevelFilter::Info);
    guard("mosquitto_plugin_init", MOSQ_ERR_UNKNOWN, || {
        let options: Vec<(String, String)> = if opts.is_null() || opt_count <= 0 {
            Vec::new()
        } else {
            // SAFETY: the broker passes `opt_count` key/value pairs.
            unsafe { std::slice::from_raw_parts(opts, opt_count as usize) }
                .iter()
                .map(|o| unsafe {
                    (
                        String::from_utf8_lossy(c_bytes(o.key).unwrap_or_default()).into_owned(),
                        String::from_utf8_lossy(c_bytes(o.value).unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        };
        let complete_login = find_complete_login();
        if let Some(complete) = complete_login {
            let _ = COMPLETE_LOGIN.set(complete);
        }
        // 2.1 (the only broker with delayed logins) waits with a plain epoll_wait and takes
        // quota answers from MESSAGE.
        let plain_wait = complete_login.is_some();
        QUOTA_ANSWERS.store(plain_wait, Ordering::Relaxed);
        let (waker, wake) = match LoopWaker::install(plain_wait) {
            Some((waker, wake)) => (Some(waker), Some(wake)),
            None => (None, None),
        };
        // Held back on 2.1 even without our handler: another instance's pulse may signal.
        let hush: Option<crate::action::Hush> =
            plain_wait.then(|| std::sync::Arc::new(hushed) as crate::action::Hush);
        let persistence = persistence_location();
        let plugin = match Plugin::start(
            &options,
            wake,
            hush,
            persistence.as_deref(),
            complete_login.is_some(),
        ) {
            Ok(plugin) => Box::new(plugin),
            Err(message) => {
                log::error!("{message}");
                return MOSQ_ERR_INVAL;
            }
        };
        // On 2.0 only chat history uses the waker: without it, SIGURG is left as it was. On
        // 2.1 the login threads and the pulse use it too.
        let waker = waker.filter(|_| plain_wait || plugin.serves_history());
        HUSH_LOGINS.store(plain_wait, Ordering::Relaxed);
        if plain_wait && waker.is_some() {
            TICK_NEXT_MS.store(0, Ordering::Relaxed);
        }
        let mut registration = Box::new(Registration {
            identifier,
            registered: Vec::new(),
            plugin,
            waker,
        });
        let data = &*registration.plugin as *const Plugin as *mut c_void;
        let mut newer = Vec::new();
        for entry in EVENTS {
            // SAFETY: `data` stays valid until cleanup unregisters the callbacks and frees it.
            let rc = unsafe {
                mosquitto_callback_register(
                    identifier,
                    entry.event as c_int,
                    Some(entry.callback),
                    entry
                        .event_data
                        .map_or(std::ptr::null(), |d| d.as_ptr() as *const c_void),
                    data,
                )
            };
            match (rc, entry.since_2_1) {
                (MOSQ_ERR_SUCCESS, newer_feature) => {
                    if entry.event == MOSQ_EVT_CLIENT_OFFLINE {
                        OFFLINE_TOLD_APART.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    registration.registered.push(entry);
                    newer.extend(newer_feature);
                }
                (MOSQ_ERR_NOT_SUPPORTED, Some(_)) => {}
                _ => {
                    log::error!(
                        "cannot register the callback for broker event {} (error {rc})",
                        entry.event
                    );
                    registration.unregister();
                    return rc;
                }
            }
        }
        if complete_login.is_some() {
            newer.push("delayed logins (checked on login threads)");
            newer.push("quota answers (0x97) for chat messages over a limit");
        }
        if newer.is_empty() {
            log::info!("Mosquitto 2.1 features: none (a 2.0 broker)");
        } else {
            log::info!("Mosquitto 2.1 features in use: {}", newer.join(", "));
        }
        // SAFETY: the broker hands this pointer back to cleanup.
        unsafe { *userdata = Box::into_raw(registration) as *mut c_void };
        MOSQ_ERR_SUCCESS
    })
}

/// # Safety
/// Called once by the broker with the userdata `mosquitto_plugin_init` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    userdata: *mut c_void,
    _opts: *mut mosquitto_opt,
    _opt_count: c_int,
) -> c_int {
    guard("mosquitto_plugin_cleanup", MOSQ_ERR_SUCCESS, || {
        if userdata.is_null() {
            return MOSQ_ERR_SUCCESS;
        }
        // SAFETY: made by Box::into_raw in init, handed back exactly once.
        let mut registration = unsafe { Box::from_raw(userdata as *mut Registration) };
        registration.unregister();
        // The plugin first (its threads stop), then the waker's handler.
        let Registration { plugin, waker, .. } = *registration;
        drop(plugin);
        drop(waker);
        MOSQ_ERR_SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_refusal_code() {
        let code = guard("test", MOSQ_ERR_AUTH, || -> c_int { panic!("boom") });
        assert_eq!(code, MOSQ_ERR_AUTH);
        assert_eq!(
            guard("test", MOSQ_ERR_AUTH, || MOSQ_ERR_SUCCESS),
            MOSQ_ERR_SUCCESS
        );
    }

    #[test]
    fn plugin_version_answers_5_only_when_offered() {
        assert_eq!(mosquitto_plugin_version(4, [5, 4, 3, 2].as_ptr()), 5);
        assert_eq!(mosquitto_plugin_version(2, [4, 3].as_ptr()), -1);
        assert_eq!(mosquitto_plugin_version(0, std::ptr::null()), -1);
    }
}
