//! What only Mosquitto 2.1 has: its event and error numbers (the plugin is built against
//! 2.0's headers), its CONNECT event's struct, and its functions, looked up at run time
//! (2.1 opens plugins `RTLD_LOCAL`: a plugin linking a symbol 2.0 lacks would not load there).

use super::bindings::*;
use super::c_bytes;
use std::ffi::{c_int, c_void};
use std::os::unix::ffi::OsStrExt;

/// `MOSQ_EVT_CLIENT_OFFLINE`: Mosquitto 2.1's event for a client with a session expiry
/// going offline (its DISCONNECT event is then only for sessions that end with the
/// connection). Not in 2.0's headers, which the plugin is built against.
pub(super) const MOSQ_EVT_CLIENT_OFFLINE: mosquitto_plugin_event = 28;

/// 2.1's answer to BASIC_AUTH for a login completed later (`mosquitto_complete_basic_auth`).
pub(super) const MOSQ_ERR_AUTH_DELAYED: c_int = -5;

/// `mosquitto_complete_basic_auth(client_id, result)`, which only Mosquitto 2.1 has.
pub(super) type CompleteLogin = unsafe extern "C" fn(*const std::ffi::c_char, c_int);

/// Found at init where the broker has it: then logins are checked on login threads.
pub(super) static COMPLETE_LOGIN: std::sync::OnceLock<CompleteLogin> = std::sync::OnceLock::new();

/// Looks up `mosquitto_complete_basic_auth` (2.1's; the plugin links no symbol 2.0 lacks).
pub(super) fn find_complete_login() -> Option<CompleteLogin> {
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
pub(super) const MOSQ_EVT_CONNECT: mosquitto_plugin_event = 11;

/// 2.1's `struct mosquitto_evt_connect` (include/mosquitto/broker.h).
#[repr(C)]
pub(super) struct EvtConnect {
    future: *mut c_void,
    pub(super) client: *mut mosquitto,
    future2: [*mut c_void; 4],
}

/// 2.1's answer to MESSAGE for a message over a limit (PUBACK 0x97 "quota exceeded"); 2.0
/// handles only `ACL_DENIED` from MESSAGE cleanly.
pub(super) const MOSQ_ERR_QUOTA_EXCEEDED: c_int = -6;

/// The broker's `persistence_location` (or `MOSQUITTO_PERSISTENCE_LOCATION`), from
/// `mosquitto_persistence_location`, which only Mosquitto 2.1 has: looked up at run time, so
/// the plugin still loads on 2.0 (`None` there, and when neither is set).
pub(super) fn persistence_location() -> Option<std::path::PathBuf> {
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
