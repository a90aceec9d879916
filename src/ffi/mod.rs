//! The C ABI edge: the exported `mosquitto_plugin_*` functions and one callback per event.
//! All `unsafe` in the crate is here; every callback runs inside `catch_unwind` and maps a
//! panic to a refusal, never to "allow".

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

use crate::auth::Decision;
use crate::plugin::Plugin;
use bindings::*;
use std::ffi::{CStr, CString, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

const PLUGIN_API_VERSION: c_int = 5;

/// Runs `body`, turning a panic into `on_panic` with an error log line.
fn guard<T>(what: &str, on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("internal error in {what} ({why}); refused");
        on_panic
    })
}

/// The bytes of a C string the broker owns, or `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string valid for the callback's duration.
unsafe fn c_bytes<'a>(ptr: *const std::ffi::c_char) -> Option<&'a [u8]> {
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
    unsafe { mosquitto_log_printf(level as c_int, c"%s".as_ptr(), text.as_ptr()) };
}

struct Registration {
    identifier: *mut mosquitto_plugin_id_t,
    plugin: Box<Plugin>,
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
        let plugin = match Plugin::start(&options) {
            Ok(plugin) => Box::new(plugin),
            Err(message) => {
                log::error!("{message}");
                return MOSQ_ERR_INVAL;
            }
        };
        let registration = Box::new(Registration { identifier, plugin });
        let data = &*registration.plugin as *const Plugin as *mut c_void;
        // SAFETY: `data` stays valid until cleanup unregisters the callback and frees it.
        let rc = unsafe {
            mosquitto_callback_register(
                identifier,
                MOSQ_EVT_BASIC_AUTH as c_int,
                Some(on_basic_auth),
                std::ptr::null(),
                data,
            )
        };
        if rc != MOSQ_ERR_SUCCESS {
            log::error!("cannot register the authentication callback (error {rc})");
            return rc;
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
        let registration = unsafe { Box::from_raw(userdata as *mut Registration) };
        unsafe {
            mosquitto_callback_unregister(
                registration.identifier,
                MOSQ_EVT_BASIC_AUTH as c_int,
                Some(on_basic_auth),
                std::ptr::null(),
            );
        }
        drop(registration);
        MOSQ_ERR_SUCCESS
    })
}

unsafe extern "C" fn on_basic_auth(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("basic_auth", MOSQ_ERR_AUTH, || {
        if event_data.is_null() || userdata.is_null() {
            return MOSQ_ERR_AUTH;
        }
        // SAFETY: the broker passes a basic-auth event; userdata is our Plugin (see init).
        let (event, plugin) = unsafe {
            (
                &*(event_data as *const mosquitto_evt_basic_auth),
                &*(userdata as *const Plugin),
            )
        };
        let (username, password) = unsafe { (c_bytes(event.username), c_bytes(event.password)) };
        match plugin.basic_auth(username, password) {
            Decision::Allow(_) => MOSQ_ERR_SUCCESS,
            Decision::Refuse(_) => MOSQ_ERR_AUTH,
            Decision::Defer => MOSQ_ERR_PLUGIN_DEFER,
        }
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
