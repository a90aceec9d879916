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

use crate::acl::Access;
use crate::auth::Decision;
use crate::plugin::{Action, Client, MessageVerdict, Plugin};
use crate::sessions::ClientFacts;
use bindings::*;
use std::ffi::{CStr, CString, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use waker::{LoopWaker, hushed};

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

/// `MOSQ_EVT_CLIENT_OFFLINE`: Mosquitto 2.1's event for a client with a session expiry
/// going offline (its DISCONNECT event is then only for sessions that end with the
/// connection). Not in 2.0's headers, which the plugin is built against.
const MOSQ_EVT_CLIENT_OFFLINE: mosquitto_plugin_event = 28;

/// 2.1's answer to BASIC_AUTH for a login completed later (`mosquitto_complete_basic_auth`).
const MOSQ_ERR_AUTH_DELAYED: c_int = -5;

/// `mosquitto_complete_basic_auth(client_id, result)`, which only Mosquitto 2.1 has.
type CompleteLogin = unsafe extern "C" fn(*const std::ffi::c_char, c_int);

/// Found at init where the broker has it: then logins are checked on login threads.
static COMPLETE_LOGIN: std::sync::OnceLock<CompleteLogin> = std::sync::OnceLock::new();

/// Looks up `mosquitto_complete_basic_auth` (2.1's; the plugin links no symbol 2.0 lacks).
fn find_complete_login() -> Option<CompleteLogin> {
    // SAFETY: dlsym with a NUL-terminated name; a found symbol is the broker's function of
    // this signature (include/mosquitto/broker.h, 2.1).
    unsafe {
        let found = libc::dlsym(
            libc::RTLD_DEFAULT,
            c"mosquitto_complete_basic_auth".as_ptr(),
        );
        (!found.is_null()).then(|| std::mem::transmute::<*mut c_void, CompleteLogin>(found))
    }
}

/// `MOSQ_EVT_CONNECT`: Mosquitto 2.1's event for a client that is authenticated, whatever
/// the method (certificate logins too); after its CONNACK.
const MOSQ_EVT_CONNECT: mosquitto_plugin_event = 11;

/// 2.1's `struct mosquitto_evt_connect` (include/mosquitto/broker.h).
#[repr(C)]
struct EvtConnect {
    future: *mut c_void,
    client: *mut mosquitto,
    future2: [*mut c_void; 4],
}

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

/// 2.1's answer to MESSAGE for a message over a limit (PUBACK 0x97 "quota exceeded"); 2.0
/// handles only `ACL_DENIED` from MESSAGE cleanly.
const MOSQ_ERR_QUOTA_EXCEEDED: c_int = -6;

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
        let hush: Option<crate::action::Hush> = (plain_wait && waker.is_some())
            .then(|| std::sync::Arc::new(hushed) as crate::action::Hush);
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
        if plain_wait && waker.is_some() {
            TICK_NEXT_MS.store(0, Ordering::Relaxed);
            HUSH_LOGINS.store(true, Ordering::Relaxed);
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

/// The event struct and our plugin behind a callback's raw pointers.
///
/// # Safety
/// `event_data` points to the event type `E` of the event being delivered, `userdata` is
/// the `Plugin` registered in init; both outlive the callback.
unsafe fn event<'a, E>(
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> Option<(&'a E, &'a Plugin)> {
    if event_data.is_null() || userdata.is_null() {
        return None;
    }
    // SAFETY: both non-NULL and of these types for the callback, as the caller promises.
    Some(unsafe { (&*(event_data as *const E), &*(userdata as *const Plugin)) })
}

/// A broker client for the duration of one callback, asked for what the core needs.
struct BrokerClient(*mut mosquitto);

impl BrokerClient {
    fn text(ptr: *const std::ffi::c_char) -> Option<String> {
        // SAFETY: the broker's getters return NULL or a string it owns for the callback.
        unsafe { c_bytes(ptr) }.map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }
}

impl ClientFacts for BrokerClient {
    fn address(&self) -> Option<String> {
        // SAFETY: `self.0` is the callback's live client (see `client`).
        Self::text(unsafe { mosquitto_client_address(self.0) })
    }

    fn username(&self) -> Option<String> {
        // SAFETY: as above.
        Self::text(unsafe { mosquitto_client_username(self.0) })
    }

    fn clean_session(&self) -> bool {
        // SAFETY: as above.
        unsafe { mosquitto_client_clean_session(self.0) }
    }

    fn has_certificate(&self) -> bool {
        // SAFETY: as above; the broker returns a new reference to the peer's X509 (OpenSSL's
        // SSL_get_peer_certificate), or NULL, and the reference is given back at once.
        unsafe {
            let certificate = mosquitto_client_certificate(self.0);
            if certificate.is_null() {
                return false;
            }
            X509_free(certificate);
        }
        true
    }
}

unsafe extern "C" {
    /// OpenSSL's, from the libcrypto the broker itself links (resolved when it loads us).
    fn X509_free(certificate: *mut c_void);
}

/// # Safety
/// `broker_client.0` is NULL or a live client of the broker, for the callback's duration;
/// the returned `Client` borrows it and cannot outlive the callback.
unsafe fn client(broker_client: &BrokerClient) -> Client<'_> {
    let id = if broker_client.0.is_null() {
        None
    } else {
        // SAFETY: a live client (see above).
        unsafe { c_bytes(mosquitto_client_id(broker_client.0)) }
    };
    Client {
        id,
        pointer: broker_client.0 as usize,
        facts: broker_client,
    }
}

unsafe extern "C" fn on_basic_auth(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("basic_auth", MOSQ_ERR_AUTH, || {
        // SAFETY: registered for MOSQ_EVT_BASIC_AUTH.
        let Some((event, plugin)) =
            (unsafe { event::<mosquitto_evt_basic_auth>(event_data, userdata) })
        else {
            return MOSQ_ERR_AUTH;
        };
        let broker_client = BrokerClient(event.client);
        // SAFETY: the event's client, username and password live for the callback.
        let (client, username, password) = unsafe {
            (
                client(&broker_client),
                c_bytes(event.username),
                c_bytes(event.password),
            )
        };
        let mut decision = None;
        let mut decide = || decision = Some(plugin.basic_auth(client, username, password));
        if HUSH_LOGINS.load(Ordering::Relaxed) {
            hushed(&mut decide);
        } else {
            decide();
        }
        match decision.expect("decided") {
            Decision::Allow(_) => MOSQ_ERR_SUCCESS,
            Decision::Refuse(_) => MOSQ_ERR_AUTH,
            Decision::Defer => MOSQ_ERR_PLUGIN_DEFER,
            Decision::Later => MOSQ_ERR_AUTH_DELAYED,
        }
    })
}

unsafe extern "C" fn on_acl_check(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    // Only "denied" may come back: any other error from a READ check disconnects the
    // publisher (see the facts file).
    guard("acl_check", MOSQ_ERR_ACL_DENIED, || {
        // SAFETY: registered for MOSQ_EVT_ACL_CHECK.
        let Some((event, plugin)) =
            (unsafe { event::<mosquitto_evt_acl_check>(event_data, userdata) })
        else {
            return MOSQ_ERR_ACL_DENIED;
        };
        let access = match event.access as u32 {
            MOSQ_ACL_READ => Access::Read,
            MOSQ_ACL_WRITE => Access::Write,
            MOSQ_ACL_SUBSCRIBE => Access::Subscribe,
            MOSQ_ACL_UNSUBSCRIBE => Access::Unsubscribe,
            _ => return MOSQ_ERR_ACL_DENIED,
        };
        let broker_client = BrokerClient(event.client);
        // SAFETY: the event's client and topic live for the callback.
        let (client, topic) = unsafe { (client(&broker_client), c_bytes(event.topic)) };
        let Some(topic) = topic else {
            return MOSQ_ERR_ACL_DENIED;
        };
        if plugin.acl_check(client, access, topic, event.retain) {
            MOSQ_ERR_SUCCESS
        } else {
            MOSQ_ERR_ACL_DENIED
        }
    })
}

unsafe extern "C" fn on_message(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    // "Denied" drops the message and keeps the publisher connected (v5: PUBACK 0x87); any
    // other error would disconnect it.
    guard("message", MOSQ_ERR_ACL_DENIED, || {
        if event_data.is_null() || userdata.is_null() {
            return MOSQ_ERR_ACL_DENIED;
        }
        // SAFETY: registered for MOSQ_EVT_MESSAGE; the broker lets us replace the payload.
        let (event, plugin) = unsafe {
            (
                &mut *(event_data as *mut mosquitto_evt_message),
                &*(userdata as *const Plugin),
            )
        };
        // SAFETY: the event's topic lives for the callback.
        let Some(topic) = (unsafe { c_bytes(event.topic) }) else {
            return MOSQ_ERR_ACL_DENIED;
        };
        // SAFETY: the payload is valid for `payloadlen` bytes during the callback.
        let payload = unsafe { payload(event.payload, event.payloadlen) };
        let broker_client = BrokerClient(event.client);
        // SAFETY: the event's client lives for the callback.
        match plugin.message(unsafe { client(&broker_client) }, topic, payload, event.qos) {
            MessageVerdict::Pass => MOSQ_ERR_SUCCESS,
            MessageVerdict::Deny => MOSQ_ERR_ACL_DENIED,
            MessageVerdict::OverQuota if QUOTA_ANSWERS.load(Ordering::Relaxed) => {
                MOSQ_ERR_QUOTA_EXCEEDED
            }
            MessageVerdict::OverQuota => MOSQ_ERR_ACL_DENIED,
            MessageVerdict::Replace(stamped) => {
                let Ok(len) = u32::try_from(stamped.len()) else {
                    return MOSQ_ERR_ACL_DENIED;
                };
                // SAFETY: a mosquitto_malloc'd buffer replaces the payload; the broker frees
                // the old one and owns the new one.
                unsafe {
                    let buffer = mosquitto_malloc(stamped.len());
                    if buffer.is_null() {
                        log::error!("out of memory for a stamped chat message; refused");
                        return MOSQ_ERR_ACL_DENIED;
                    }
                    std::ptr::copy_nonoverlapping(
                        stamped.as_ptr(),
                        buffer as *mut u8,
                        stamped.len(),
                    );
                    event.payload = buffer;
                    event.payloadlen = len;
                }
                MOSQ_ERR_SUCCESS
            }
        }
    })
}

/// The broker tells a session that stays (CLIENT_OFFLINE, 2.1) apart from one that ends with
/// its connection (DISCONNECT); 2.0 calls DISCONNECT for both. Set once at init.
static OFFLINE_TOLD_APART: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// 2.1: a client whose session outlives the connection went offline.
unsafe extern "C" fn on_client_offline(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("client offline", MOSQ_ERR_SUCCESS, || {
        // The event's struct begins as 2.0's DISCONNECT's ({future, client, reason, ...}).
        let told = {
            // SAFETY: registered for MOSQ_EVT_CLIENT_OFFLINE; userdata is our Plugin.
            unsafe { event::<mosquitto_evt_disconnect>(event_data, userdata) }
        };
        if let Some((event, plugin)) = told {
            if !event.client.is_null() {
                let broker_client = BrokerClient(event.client);
                // SAFETY: the event's client lives for the callback.
                plugin.disconnect(unsafe { client(&broker_client) }, false);
            }
        }
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_disconnect(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("disconnect", MOSQ_ERR_SUCCESS, || {
        // SAFETY: registered for MOSQ_EVT_DISCONNECT.
        if let Some((event, plugin)) =
            // SAFETY: registered for MOSQ_EVT_DISCONNECT; userdata is our Plugin.
            unsafe { event::<mosquitto_evt_disconnect>(event_data, userdata) }
        {
            if !event.client.is_null() {
                let broker_client = BrokerClient(event.client);
                // On 2.1 a DISCONNECT is a session's end (expiry 0, whatever the clean-start
                // flag); on 2.0 only a clean session's.
                let clean = OFFLINE_TOLD_APART.load(std::sync::atomic::Ordering::Relaxed)
                    || broker_client.clean_session();
                // SAFETY: the event's client lives for the callback.
                plugin.disconnect(unsafe { client(&broker_client) }, clean);
            }
        }
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_connect(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("connect", MOSQ_ERR_SUCCESS, || {
        // SAFETY: registered for MOSQ_EVT_CONNECT (2.1's event struct); userdata is our Plugin.
        if let Some((event, plugin)) = unsafe { event::<EvtConnect>(event_data, userdata) } {
            if !event.client.is_null() {
                let broker_client = BrokerClient(event.client);
                // SAFETY: the event's client lives for the callback.
                plugin.connect(unsafe { client(&broker_client) });
            }
        }
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_reload(
    _event: c_int,
    _event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("reload", MOSQ_ERR_SUCCESS, || {
        if !userdata.is_null() {
            // SAFETY: userdata is our Plugin (see init).
            unsafe { &*(userdata as *const Plugin) }.reload();
        }
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_control(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("control", MOSQ_ERR_SUCCESS, || {
        // SAFETY: registered for MOSQ_EVT_CONTROL on our topic.
        if let Some((event, plugin)) =
            // SAFETY: registered for MOSQ_EVT_CONTROL; userdata is our Plugin.
            unsafe { event::<mosquitto_evt_control>(event_data, userdata) }
        {
            // SAFETY: the payload is valid for `payloadlen` bytes during the callback.
            let payload = unsafe { payload(event.payload, event.payloadlen) };
            let broker_client = BrokerClient(event.client);
            // SAFETY: the event's client lives for the callback.
            plugin.control(unsafe { client(&broker_client) }, payload);
        }
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_history(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    // Any other answer than success would disconnect the client (2.0.11).
    guard("history", MOSQ_ERR_SUCCESS, || {
        if let Some((event, plugin)) =
            // SAFETY: registered for MOSQ_EVT_CONTROL on the history topic; userdata is our
            // Plugin.
            unsafe { event::<mosquitto_evt_control>(event_data, userdata) }
        {
            // SAFETY: the payload is valid for `payloadlen` bytes during the callback.
            let payload = unsafe { payload(event.payload, event.payloadlen) };
            // SAFETY: the event's properties live for the callback.
            let response = unsafe { response_properties(event.properties) };
            let broker_client = BrokerClient(event.client);
            // SAFETY: the event's client lives for the callback.
            plugin.history(unsafe { client(&broker_client) }, payload, response);
        }
        MOSQ_ERR_SUCCESS
    })
}

/// The broker's `persistence_location` (or `MOSQUITTO_PERSISTENCE_LOCATION`), from
/// `mosquitto_persistence_location`, which only Mosquitto 2.1 has: looked up at run time, so
/// the plugin still loads on 2.0 (`None` there, and when neither is set).
fn persistence_location() -> Option<std::path::PathBuf> {
    type Location = unsafe extern "C" fn() -> *const std::ffi::c_char;
    // SAFETY: dlsym with a NUL-terminated name; a found symbol is the broker's function of
    // this signature (include/mosquitto/broker.h, 2.1), which returns NULL or a string the
    // broker's configuration owns for its lifetime (copied here at once).
    unsafe {
        let found = libc::dlsym(
            libc::RTLD_DEFAULT,
            c"mosquitto_persistence_location".as_ptr(),
        );
        if found.is_null() {
            return None;
        }
        let location = std::mem::transmute::<*mut c_void, Location>(found)();
        c_bytes(location).map(|bytes| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
}

type ReadString = unsafe extern "C" fn(
    *const mosquitto_property,
    c_int,
    *mut *mut std::ffi::c_char,
    bool,
) -> *const mosquitto_property;
type ReadBinary = unsafe extern "C" fn(
    *const mosquitto_property,
    c_int,
    *mut *mut c_void,
    *mut u16,
    bool,
) -> *const mosquitto_property;

/// The property readers, looked up at run time, never linked: Debian 12's broker (2.0.11)
/// exports them, Debian 13's (2.0.21, linked with Mosquitto's `linker.syms`) does not, and
/// a missing symbol must not stop the plugin from loading. Then they come from
/// `libmosquitto.so.1`, which Debian's `mosquitto` package depends on at its own version
/// (the same property list layout; Mosquitto's dynamic-security plugin links it the same
/// way). Without either, MQTT 5 response topics are not honoured.
static PROPERTY_READERS: std::sync::LazyLock<Option<(ReadString, ReadBinary)>> =
    std::sync::LazyLock::new(|| {
        // SAFETY: dlsym/dlopen with NUL-terminated names; a found symbol is Mosquitto's
        // function of this signature (mosquitto.h). The library stays loaded for good.
        unsafe {
            let find = |handle: *mut c_void| {
                (
                    libc::dlsym(handle, c"mosquitto_property_read_string".as_ptr()),
                    libc::dlsym(handle, c"mosquitto_property_read_binary".as_ptr()),
                )
            };
            let mut found = find(libc::RTLD_DEFAULT);
            if found.0.is_null() || found.1.is_null() {
                let library = libc::dlopen(
                    c"libmosquitto.so.1".as_ptr(),
                    libc::RTLD_NOW | libc::RTLD_LOCAL,
                );
                if !library.is_null() {
                    found = find(library);
                }
            }
            let (string, binary) = found;
            if string.is_null() || binary.is_null() {
                log::warn!(
                    "neither the broker nor libmosquitto.so.1 gives mosquitto_property_read_*: \
                     MQTT 5 response topics of history requests are not honoured (answers go \
                     to the API's response topic)"
                );
                return None;
            }
            Some((
                std::mem::transmute::<*mut c_void, ReadString>(string),
                std::mem::transmute::<*mut c_void, ReadBinary>(binary),
            ))
        }
    });

/// The request's MQTT 5 response topic and correlation data.
///
/// # Safety
/// `properties` is NULL or the broker's property list, valid for the callback.
unsafe fn response_properties(properties: *const mosquitto_property) -> crate::plugin::ResponseTo {
    let mut response = crate::plugin::ResponseTo::default();
    let Some((read_string, read_binary)) =
        (!properties.is_null()).then(|| *PROPERTY_READERS).flatten()
    else {
        return response;
    };
    // SAFETY: the readers copy the value into memory from plain `calloc` (libmosquitto's
    // property_mosq.c), given back with plain `free` (`mosquitto_free` would take it off
    // the broker's memory count, which never counted it); `properties` is valid (above).
    unsafe {
        let mut topic: *mut std::ffi::c_char = std::ptr::null_mut();
        if !read_string(
            properties,
            MQTT_PROP_RESPONSE_TOPIC as c_int,
            &mut topic,
            false,
        )
        .is_null()
            && !topic.is_null()
        {
            response.topic =
                Some(String::from_utf8_lossy(CStr::from_ptr(topic).to_bytes()).into_owned());
            libc::free(topic as *mut c_void);
        }
        let mut data: *mut c_void = std::ptr::null_mut();
        let mut len: u16 = 0;
        if !read_binary(
            properties,
            MQTT_PROP_CORRELATION_DATA as c_int,
            &mut data,
            &mut len,
            false,
        )
        .is_null()
        {
            response.correlation_data = Some(if data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data as *const u8, len as usize).to_vec()
            });
            libc::free(data);
        }
    }
    response
}

unsafe extern "C" fn on_tick(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("tick", MOSQ_ERR_SUCCESS, || {
        if userdata.is_null() {
            return MOSQ_ERR_SUCCESS;
        }
        if !event_data.is_null() {
            // SAFETY: registered for MOSQ_EVT_TICK: the broker's event, ours to fill in for
            // the callback. 2.1 reads the field as `next_ms` (its header renamed 2.0's unused
            // `next_ns`, at the same place); 2.0 reads nothing back.
            unsafe {
                (*(event_data as *mut mosquitto_evt_tick)).next_ns =
                    TICK_NEXT_MS.load(Ordering::Relaxed)
            };
        }
        // SAFETY: userdata is our Plugin (see init).
        let plugin = unsafe { &*(userdata as *const Plugin) };
        // The broker calls, made after `tick` let go of the plugin's state: a publish or a
        // kick may call back into the plugin (an ACL check, a DISCONNECT).
        let mut completed = false;
        for action in plugin.tick() {
            completed |= matches!(action, Action::CompleteLogin { .. });
            perform(action);
        }
        if completed {
            plugin.completions_done();
        }
        MOSQ_ERR_SUCCESS
    })
}

/// # Safety
/// `data` is NULL or valid for `len` bytes for the callback's duration.
unsafe fn payload<'a>(data: *const c_void, len: u32) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: non-NULL and valid for `len` bytes, as the caller promises.
        unsafe { std::slice::from_raw_parts(data as *const u8, len as usize) }
    }
}

/// Publishes through the broker: to one client (`client_id`), or to every subscriber;
/// with MQTT 5 correlation data if given. Returns the broker's error code.
fn broker_publish(
    client_id: Option<&CStr>,
    topic: &CStr,
    payload: &[u8],
    qos: c_int,
    retain: bool,
    correlation_data: Option<&[u8]>,
) -> c_int {
    let Ok(len) = c_int::try_from(payload.len()) else {
        return MOSQ_ERR_INVAL;
    };
    // SAFETY: the broker takes ownership of a mosquitto_malloc'd payload on success; we
    // free it on failure. Both strings are valid C strings; main thread.
    // Same for the properties, which the broker frees with the message.
    unsafe {
        let mut properties: *mut mosquitto_property = std::ptr::null_mut();
        if let Some(data) = correlation_data {
            let Ok(data_len) = u16::try_from(data.len()) else {
                return MOSQ_ERR_INVAL;
            };
            let rc = mosquitto_property_add_binary(
                &mut properties,
                MQTT_PROP_CORRELATION_DATA as c_int,
                data.as_ptr() as *const c_void,
                data_len,
            );
            if rc != MOSQ_ERR_SUCCESS {
                mosquitto_property_free_all(&mut properties);
                return rc;
            }
        }
        let buffer = mosquitto_malloc(payload.len().max(1));
        if buffer.is_null() {
            mosquitto_property_free_all(&mut properties);
            return MOSQ_ERR_NOMEM;
        }
        std::ptr::copy_nonoverlapping(payload.as_ptr(), buffer as *mut u8, payload.len());
        let rc = mosquitto_broker_publish(
            client_id.map_or(std::ptr::null(), CStr::as_ptr),
            topic.as_ptr(),
            len,
            buffer,
            qos,
            retain,
            properties,
        );
        if rc != MOSQ_ERR_SUCCESS {
            mosquitto_free(buffer);
            mosquitto_property_free_all(&mut properties);
        }
        rc
    }
}

/// Makes one broker call; on the main thread (TICK) only.
fn perform(action: Action) {
    let c_string = |text: &str| CString::new(text.replace('\0', "")).expect("NULs removed");
    match action {
        Action::Publish {
            client_id,
            topic,
            payload,
            correlation_data,
        } => {
            let (client_id, topic) = (c_string(&client_id), c_string(&topic));
            let rc = broker_publish(
                Some(&client_id),
                &topic,
                &payload,
                0,
                false,
                correlation_data.as_deref(),
            );
            if rc != MOSQ_ERR_SUCCESS {
                log::warn!("could not publish a control answer (error {rc})");
            }
        }
        Action::Retain { topic, payload } => {
            // A figure not published now is published again at the next interval.
            let _ = broker_publish(None, &c_string(&topic), &payload, 0, true, None);
        }
        Action::Broadcast { topic, payload } => {
            let rc = broker_publish(None, &c_string(&topic), &payload, 1, false, None);
            if rc != MOSQ_ERR_SUCCESS {
                log::warn!("could not publish a cluster command (error {rc})");
            }
        }
        Action::KickUser(username) => {
            let username = c_string(&username);
            // SAFETY: a valid C string; main thread.
            unsafe { mosquitto_kick_client_by_username(username.as_ptr(), false) };
        }
        Action::CompleteLogin {
            client_id,
            accepted,
        } => {
            // A client id holds no NUL (MQTT forbids U+0000); one that did would name no
            // waiting client, and its login would end overdue.
            let (Some(complete), Ok(client_id)) = (COMPLETE_LOGIN.get(), CString::new(client_id))
            else {
                return;
            };
            let result = if accepted {
                MOSQ_ERR_SUCCESS
            } else {
                MOSQ_ERR_AUTH as c_int
            };
            // SAFETY: the broker's own function (found by dlsym, of this signature in 2.1's
            // broker.h), on the main thread (TICK), with a valid C string it only reads. An
            // id that no longer waits (the client left) is looked up and ignored.
            unsafe { complete(client_id.as_ptr(), result) };
        }
        Action::KickClient(client_id) => {
            let client_id = c_string(&String::from_utf8_lossy(&client_id));
            // SAFETY: a valid C string; main thread. Without its will: the session ended.
            unsafe { mosquitto_kick_client_by_clientid(client_id.as_ptr(), false) };
        }
    }
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
