//! A Mosquitto plugin that registers the events chat-auth registers and allows everything,
//! for the benchmark only (`scripts/bench` builds it): the broker with it shows what calling
//! a plugin at all costs Mosquitto, so chat-auth's own cost is chat-auth over this one.
//! Not installed, not tested for anything else.

use std::ffi::{c_int, c_void};

const MOSQ_ERR_SUCCESS: c_int = 0;
// mosquitto_broker.h, enum mosquitto_plugin_event.
const EVENTS: [c_int; 7] = [
    1,  // MOSQ_EVT_RELOAD
    2,  // MOSQ_EVT_ACL_CHECK
    3,  // MOSQ_EVT_BASIC_AUTH
    6,  // MOSQ_EVT_CONTROL
    7,  // MOSQ_EVT_MESSAGE
    9,  // MOSQ_EVT_TICK
    10, // MOSQ_EVT_DISCONNECT
];
const CONTROL_TOPIC: &std::ffi::CStr = c"$CONTROL/chat-auth/v1";

type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

unsafe extern "C" {
    // The broker's, resolved when it loads the plugin.
    fn mosquitto_callback_register(
        identifier: *mut c_void,
        event: c_int,
        callback: Option<Callback>,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int;
}

unsafe extern "C" fn allow(_event: c_int, _data: *mut c_void, _userdata: *mut c_void) -> c_int {
    MOSQ_ERR_SUCCESS
}

/// # Safety
/// Called by the broker with `count` versions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_version(count: c_int, versions: *const c_int) -> c_int {
    // SAFETY: the broker passes `count` versions.
    let offered = unsafe { std::slice::from_raw_parts(versions, count.max(0) as usize) };
    if offered.contains(&5) { 5 } else { -1 }
}

/// # Safety
/// Called by the broker with its plugin id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_init(
    identifier: *mut c_void,
    _userdata: *mut *mut c_void,
    _opts: *mut c_void,
    _opt_count: c_int,
) -> c_int {
    for event in EVENTS {
        let data = if event == 6 {
            CONTROL_TOPIC.as_ptr() as *const c_void
        } else {
            std::ptr::null()
        };
        // SAFETY: a callback that touches nothing, registered with the broker's own id.
        let rc = unsafe {
            mosquitto_callback_register(identifier, event, Some(allow), data, std::ptr::null_mut())
        };
        if rc != MOSQ_ERR_SUCCESS {
            return rc;
        }
    }
    MOSQ_ERR_SUCCESS
}

/// # Safety
/// Called by the broker at shutdown.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mosquitto_plugin_cleanup(
    _userdata: *mut c_void,
    _opts: *mut c_void,
    _opt_count: c_int,
) -> c_int {
    MOSQ_ERR_SUCCESS
}
