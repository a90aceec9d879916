//! The credential cache and the key of its MACs: successful logins remembered for
//! `auth_cacheseconds`, as keyed MACs that reveal no password.

use super::{Identity, Proof};
use crate::backend::BackendKind;
use crate::hash;
use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The key of the plugin's keyed MACs, made at start and never stored: a memory dump
/// reveals no password and no fast unsalted hash to crack.
pub(super) struct Secret {
    key: [u8; 32],
}

impl Secret {
    pub(super) fn new() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source failed");
        Secret { key }
    }

    pub(super) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        for part in parts {
            // Length-prefixed so ("ab","c") and ("a","bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// A username and password.
    pub(super) fn login_mac(&self, username: &str, password: &[u8]) -> [u8; 32] {
        self.mac(&[b"login", username.as_bytes(), password])
    }

    /// A stored hash, to tell later whether it changed.
    pub(super) fn hash_fingerprint(&self, stored: &[u8]) -> [u8; 8] {
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&self.mac(&[b"stored", stored])[..8]);
        fingerprint
    }
}

/// Successful logins remembered for `ttl`, keyed by username, holding only the keyed MAC
/// of the username and password (see [`Secret`]).
pub(super) struct CredentialCache {
    ttl: Duration,
    /// Expiry times are whole seconds after this (4 bytes per entry, not 16).
    created: Instant,
    entries: Mutex<HashMap<Box<str>, CachedLogin>>,
}

/// Kept small: one per connected user (the username is the map's key).
struct CachedLogin {
    /// The first 128 bits of the MAC: ample for an equality check under a secret key.
    mac: [u8; 16],
    /// The fingerprint of the stored hash the password was verified against.
    stored_hash: [u8; 8],
    user_id: Box<str>,
    superuser: bool,
    backend: BackendKind,
    /// Seconds after `created`, rounded so an entry never outlives the TTL.
    expires: u32,
}

/// Bound on remembered logins; expired ones are swept when it is reached.
const CACHE_MAX_ENTRIES: usize = 100_000;

impl CredentialCache {
    pub(super) fn new(ttl: Duration) -> Self {
        CredentialCache {
            ttl,
            created: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn get(
        &self,
        username: &str,
        login_mac: &[u8; 32],
        now: Instant,
    ) -> Option<Identity> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(username)?;
        (entry.expires > self.seconds(now) && hash::constant_time_eq(&entry.mac, &login_mac[..16]))
            .then(|| Identity {
                username: username.to_string(),
                user_id: entry.user_id.to_string(),
                superuser: entry.superuser,
                // Only a stored hash makes a proof (see `Identity::proof`).
                proof: entry.backend.holds_rows().then_some(Proof {
                    password: entry.mac,
                    stored_hash: entry.stored_hash,
                }),
                backend: entry.backend,
                relay: false,
            })
    }

    pub(super) fn put(
        &self,
        username: &str,
        login_mac: &[u8; 32],
        identity: Identity,
        now: Instant,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX_ENTRIES && !entries.contains_key(username) {
            let now = self.seconds(now);
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= CACHE_MAX_ENTRIES {
                return;
            }
        }
        let mut short_mac = [0u8; 16];
        short_mac.copy_from_slice(&login_mac[..16]);
        entries.insert(
            username.into(),
            CachedLogin {
                mac: short_mac,
                stored_hash: identity.proof.map_or([0; 8], |p| p.stored_hash),
                user_id: identity.user_id.into_boxed_str(),
                superuser: identity.superuser,
                backend: identity.backend,
                expires: self.seconds(now).saturating_add(self.ttl.as_secs() as u32),
            },
        );
    }

    pub(super) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whole seconds from `created` to `now` (rounded down; 0 before it).
    pub(super) fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.created).as_secs() as u32
    }
}
