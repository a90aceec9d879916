//! The broker calls the plugin's parts ask for (`Action`), made on the broker thread at TICK.

use super::bindings::*;
use super::broker21::COMPLETE_LOGIN;
use crate::plugin::Action;
use std::ffi::{CStr, CString, c_int, c_void};

/// Memory from `mosquitto_malloc`: freed with `mosquitto_free` unless handed to the broker.
struct BrokerMemory(*mut c_void);

impl BrokerMemory {
    /// A copy of `bytes` (at least one byte is allocated); `None` when out of memory.
    fn copy_of(bytes: &[u8]) -> Option<BrokerMemory> {
        // SAFETY: a fresh allocation of at least `bytes.len()` bytes, filled from `bytes`.
        unsafe {
            let memory = mosquitto_malloc(bytes.len().max(1));
            if memory.is_null() {
                return None;
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), memory as *mut u8, bytes.len());
            Some(BrokerMemory(memory))
        }
    }

    /// The broker owns it from now on.
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for BrokerMemory {
    fn drop(&mut self) {
        // SAFETY: ours (from mosquitto_malloc), never handed over.
        unsafe { mosquitto_free(self.0) };
    }
}

/// A property list built with libmosquitto: freed with `mosquitto_property_free_all`
/// unless handed to the broker.
struct PropertyList(*mut mosquitto_property);

impl PropertyList {
    fn empty() -> PropertyList {
        PropertyList(std::ptr::null_mut())
    }

    /// Adds MQTT 5 correlation data; the broker's error code.
    fn add_correlation_data(&mut self, data: &[u8]) -> c_int {
        let Ok(len) = u16::try_from(data.len()) else {
            return MOSQ_ERR_INVAL;
        };
        // SAFETY: `self.0` is NULL or a list libmosquitto built; the value is copied.
        unsafe {
            mosquitto_property_add_binary(
                &mut self.0,
                MQTT_PROP_CORRELATION_DATA as c_int,
                data.as_ptr() as *const c_void,
                len,
            )
        }
    }

    /// The broker owns it from now on.
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for PropertyList {
    fn drop(&mut self) {
        // SAFETY: NULL or a list libmosquitto built for us, never handed over.
        unsafe { mosquitto_property_free_all(&mut self.0) };
    }
}

/// Publishes through the broker: to one client (`client_id`), or to every subscriber;
/// with MQTT 5 correlation data if given. Returns the broker's error code.
pub(super) fn broker_publish(
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
    let mut properties = PropertyList::empty();
    if let Some(data) = correlation_data {
        let rc = properties.add_correlation_data(data);
        if rc != MOSQ_ERR_SUCCESS {
            return rc;
        }
    }
    let Some(buffer) = BrokerMemory::copy_of(payload) else {
        return MOSQ_ERR_NOMEM;
    };
    // SAFETY: both strings are valid C strings, the payload is `len` bytes from
    // mosquitto_malloc; on the main thread. The broker takes the payload and the properties
    // on success; on failure they are still ours (freed as they drop).
    let rc = unsafe {
        mosquitto_broker_publish(
            client_id.map_or(std::ptr::null(), CStr::as_ptr),
            topic.as_ptr(),
            len,
            buffer.0,
            qos,
            retain,
            properties.0,
        )
    };
    if rc == MOSQ_ERR_SUCCESS {
        buffer.hand_over();
        properties.hand_over();
    }
    rc
}

/// Makes one broker call; on the main thread (TICK) only.
pub(super) fn perform(action: Action) {
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
