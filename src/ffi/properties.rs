//! MQTT 5 properties of a request (its response topic and correlation data), read with
//! libmosquitto's readers, which are looked up at run time.

use super::bindings::*;
use std::ffi::{CStr, c_int, c_void};

pub(super) type ReadString = unsafe extern "C" fn(
    *const mosquitto_property,
    c_int,
    *mut *mut std::ffi::c_char,
    bool,
) -> *const mosquitto_property;
pub(super) type ReadBinary = unsafe extern "C" fn(
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
pub(super) static PROPERTY_READERS: std::sync::LazyLock<Option<(ReadString, ReadBinary)>> =
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

/// A value a property reader copied out: plain `calloc` memory (libmosquitto's
/// property_mosq.c), given back with plain `free` when it drops (`mosquitto_free` would take
/// it off the broker's memory count, which never counted it).
struct ReadValue(*mut c_void);

impl Drop for ReadValue {
    fn drop(&mut self) {
        // SAFETY: NULL or the reader's own allocation, freed once.
        unsafe { libc::free(self.0) };
    }
}

/// The request's MQTT 5 response topic and correlation data.
///
/// # Safety
/// `properties` is NULL or the broker's property list, valid for the callback.
pub(super) unsafe fn response_properties(
    properties: *const mosquitto_property,
) -> crate::plugin::ResponseTo {
    let mut response = crate::plugin::ResponseTo::default();
    let Some((read_string, read_binary)) =
        (!properties.is_null()).then(|| *PROPERTY_READERS).flatten()
    else {
        return response;
    };
    // SAFETY: the readers copy the value into fresh memory (owned by `ReadValue` from then
    // on) and set `len` to its size; `properties` is valid (above).
    unsafe {
        let mut topic: *mut std::ffi::c_char = std::ptr::null_mut();
        let found = !read_string(
            properties,
            MQTT_PROP_RESPONSE_TOPIC as c_int,
            &mut topic,
            false,
        )
        .is_null();
        let topic = ReadValue(topic as *mut c_void);
        if found && !topic.0.is_null() {
            let text = CStr::from_ptr(topic.0 as *const std::ffi::c_char);
            response.topic = Some(String::from_utf8_lossy(text.to_bytes()).into_owned());
        }
        let mut data: *mut c_void = std::ptr::null_mut();
        let mut len: u16 = 0;
        let found = !read_binary(
            properties,
            MQTT_PROP_CORRELATION_DATA as c_int,
            &mut data,
            &mut len,
            false,
        )
        .is_null();
        let data = ReadValue(data);
        if found {
            response.correlation_data = Some(if data.0.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.0 as *const u8, len as usize).to_vec()
            });
        }
    }
    response
}
