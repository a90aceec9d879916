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
pub(super) static PROPERTY_READERS: std::sync::LazyLock<Option<Readers>> =
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
            Some(Readers {
                string: std::mem::transmute::<*mut c_void, ReadString>(string),
                binary: std::mem::transmute::<*mut c_void, ReadBinary>(binary),
                broker_memory: same_object(string, mosquitto_free as *const c_void),
            })
        }
    });

/// The property readers found, and whose memory their values are in.
pub(super) struct Readers {
    string: ReadString,
    binary: ReadBinary,
    /// The readers are the broker's own (2.0.11 and 2.1 export them): their values come from
    /// its `mosquitto_calloc`, which may count them (memory tracking), and go back with
    /// `mosquitto_free`. From `libmosquitto.so.1` (2.0.21): plain `calloc`, plain `free`.
    broker_memory: bool,
}

/// Whether two symbols are in the same loaded object.
fn same_object(a: *const c_void, b: *const c_void) -> bool {
    // SAFETY: dladdr only reads the loader's tables for the two addresses.
    unsafe {
        let (mut first, mut second): (libc::Dl_info, libc::Dl_info) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::dladdr(a, &mut first) != 0
            && libc::dladdr(b, &mut second) != 0
            && first.dli_fbase == second.dli_fbase
    }
}

/// A value a property reader copied out, given back when it drops the way it was allocated
/// (see `Readers::broker_memory`).
struct ReadValue(*mut c_void, bool);

impl Drop for ReadValue {
    fn drop(&mut self) {
        // SAFETY: NULL or the reader's own allocation, freed once, by its allocator's twin.
        unsafe {
            if self.1 {
                mosquitto_free(self.0);
            } else {
                libc::free(self.0);
            }
        }
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
    let Some(readers) = (!properties.is_null())
        .then(|| PROPERTY_READERS.as_ref())
        .flatten()
    else {
        return response;
    };
    let (read_string, read_binary, broker) =
        (readers.string, readers.binary, readers.broker_memory);
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
        let topic = ReadValue(topic as *mut c_void, broker);
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
        let data = ReadValue(data, broker);
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
