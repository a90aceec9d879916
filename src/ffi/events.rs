//! The broker's events: each callback turns the event's raw data into the core's types and
//! hands it to the `Plugin`, inside `guard` (no panic crosses into C).

use super::bindings::*;
use super::broker21::*;
use super::properties::response_properties;
use super::publish::perform;
use super::waker::hushed;
use super::{HUSH_LOGINS, QUOTA_ANSWERS, TICK_NEXT_MS, c_bytes, guard};
use crate::acl::Access;
use crate::auth::Decision;
use crate::plugin::{Action, Client, MessageVerdict, Plugin};
use crate::sessions::ClientFacts;
use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;

/// The event struct and our plugin behind a callback's raw pointers.
///
/// # Safety
/// `event_data` points to the event type `E` of the event being delivered, `userdata` is
/// the `Plugin` registered in init; both outlive the callback.
pub(super) unsafe fn event<'a, E>(
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
pub(super) struct BrokerClient(*mut mosquitto);

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
        // SSL_get_peer_certificate), or NULL.
        let certificate = unsafe { mosquitto_client_certificate(self.0) };
        PeerCertificate::take(certificate).is_some()
    }
}

/// A reference to a peer's X509 certificate that the broker handed us: given back to
/// OpenSSL (`X509_free`) when it drops.
struct PeerCertificate(std::ptr::NonNull<c_void>);

impl PeerCertificate {
    fn take(certificate: *mut c_void) -> Option<PeerCertificate> {
        std::ptr::NonNull::new(certificate).map(PeerCertificate)
    }
}

impl Drop for PeerCertificate {
    fn drop(&mut self) {
        // SAFETY: a reference counted for us by mosquitto_client_certificate, given back once.
        unsafe { X509_free(self.0.as_ptr()) };
    }
}

unsafe extern "C" {
    /// OpenSSL's, from the libcrypto the broker itself links (resolved when it loads us).
    fn X509_free(certificate: *mut c_void);
}

/// # Safety
/// `broker_client.0` is NULL or a live client of the broker, for the callback's duration;
/// the returned `Client` borrows it and cannot outlive the callback.
pub(super) unsafe fn client(broker_client: &BrokerClient) -> Client<'_> {
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

pub(super) unsafe extern "C" fn on_basic_auth(
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

pub(super) unsafe extern "C" fn on_acl_check(
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

pub(super) unsafe extern "C" fn on_message(
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
pub(super) static OFFLINE_TOLD_APART: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// 2.1: a client whose session outlives the connection went offline.
pub(super) unsafe extern "C" fn on_client_offline(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("client offline", MOSQ_ERR_SUCCESS, || {
        // SAFETY: registered for MOSQ_EVT_CLIENT_OFFLINE, whose struct begins as 2.0's
        // DISCONNECT's ({future, client, reason, ...}); userdata is our Plugin.
        unsafe { session_end(event_data, userdata, Some(false)) };
        MOSQ_ERR_SUCCESS
    })
}

pub(super) unsafe extern "C" fn on_disconnect(
    _event: c_int,
    event_data: *mut c_void,
    userdata: *mut c_void,
) -> c_int {
    guard("disconnect", MOSQ_ERR_SUCCESS, || {
        // On 2.1 a DISCONNECT is a session's end (expiry 0, whatever the clean-start flag);
        // on 2.0 only a clean session's.
        let ends = OFFLINE_TOLD_APART
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(true);
        // SAFETY: registered for MOSQ_EVT_DISCONNECT; userdata is our Plugin.
        unsafe { session_end(event_data, userdata, ends) };
        MOSQ_ERR_SUCCESS
    })
}

/// A connection's end told to the plugin: `clean` says whether its session ends with it
/// (`None`: as the client's clean-session flag says).
///
/// # Safety
/// `event_data` is a `mosquitto_evt_disconnect` (or 2.1's CLIENT_OFFLINE, which begins the
/// same), `userdata` our Plugin, both valid for the callback.
unsafe fn session_end(event_data: *mut c_void, userdata: *mut c_void, clean: Option<bool>) {
    // SAFETY: as the caller promises.
    let told = unsafe { event::<mosquitto_evt_disconnect>(event_data, userdata) };
    let Some((event, plugin)) = told else {
        return;
    };
    if event.client.is_null() {
        return;
    }
    let broker_client = BrokerClient(event.client);
    let clean = clean.unwrap_or_else(|| broker_client.clean_session());
    // SAFETY: the event's client lives for the callback.
    plugin.disconnect(unsafe { client(&broker_client) }, clean);
}

pub(super) unsafe extern "C" fn on_connect(
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

pub(super) unsafe extern "C" fn on_reload(
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

pub(super) unsafe extern "C" fn on_control(
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

pub(super) unsafe extern "C" fn on_history(
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

pub(super) unsafe extern "C" fn on_tick(
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
pub(super) unsafe fn payload<'a>(data: *const c_void, len: u32) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: non-NULL and valid for `len` bytes, as the caller promises.
        unsafe { std::slice::from_raw_parts(data as *const u8, len as usize) }
    }
}
