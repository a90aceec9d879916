//! Stable ids across retransmission: a sender's chat message carrying a `clientMsgId` gets
//! the same stamped `id` and `ts` each time it is sent again within the window, and is
//! stored once. A retransmission is the same message: the same `clientMsgId` from the same
//! sender (`fromId`) with a byte-identical payload as received; the same `clientMsgId` on
//! any other payload (another content, another field, the same fields in another order) is
//! another message, stored as such. Payloads are compared by a keyed hash (SipHash-1-3 with
//! a random key drawn once per process), so no sender can make two payloads of its choice
//! collide. Remembered oldest first out: at most `per_sender` per sender and `total` in all,
//! each for `window`. Pure: time is passed in.

use crate::message_id::MessageId;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};

/// The stamp of the first copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub message_id: MessageId,
    pub server_ts: i64,
}

pub struct Dedup {
    /// The fingerprint's key: random, drawn once (another process has another).
    key: RandomState,
    window_ms: i64,
    per_sender: usize,
    total: usize,
    /// By `sender \0 clientMsgId`: the stamp, the payload's fingerprint, when.
    stamps: HashMap<Box<str>, (Stamp, u64, i64)>,
    /// Keys in the order they were remembered, with when (may hold keys already gone).
    order: VecDeque<(Box<str>, i64)>,
    /// Each sender's keys, oldest first.
    by_sender: HashMap<Box<str>, VecDeque<Box<str>>>,
}

/// Remembered per sender at most.
pub const PER_SENDER: usize = 1_000;
/// Remembered in all at most.
pub const TOTAL: usize = 200_000;

impl Dedup {
    pub fn new(window_ms: i64, per_sender: usize, total: usize) -> Self {
        Dedup {
            key: RandomState::new(),
            window_ms,
            per_sender,
            total,
            stamps: HashMap::new(),
            order: VecDeque::new(),
            by_sender: HashMap::new(),
        }
    }

    /// The first copy's stamp, when this `payload` (as received, byte for byte) was
    /// remembered under `client_msg_id` from `sender`.
    pub fn get(
        &mut self,
        sender: &str,
        client_msg_id: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Option<Stamp> {
        self.expire(now_ms);
        let fingerprint = self.fingerprint(payload);
        self.stamps
            .get(&*key(sender, client_msg_id))
            .filter(|(_, remembered, _)| *remembered == fingerprint)
            .map(|(stamp, _, _)| stamp.clone())
    }

    /// Remembers the stamp of a message now stored (a refused one is not remembered: its
    /// retransmission is a first copy).
    pub fn remember(
        &mut self,
        sender: &str,
        client_msg_id: &str,
        payload: &[u8],
        stamp: Stamp,
        now_ms: i64,
    ) {
        self.expire(now_ms);
        let fingerprint = self.fingerprint(payload);
        let key = key(sender, client_msg_id);
        if let Some(held) = self.stamps.get_mut(&key) {
            // The id reused for another message: the newest is the one to match.
            *held = (stamp, fingerprint, held.2);
            return;
        }
        self.stamps
            .insert(key.clone(), (stamp, fingerprint, now_ms));
        self.order.push_back((key.clone(), now_ms));
        let keys = self.by_sender.entry(sender.into()).or_default();
        keys.push_back(key);
        while keys.len() > self.per_sender {
            if let Some(oldest) = keys.pop_front() {
                self.stamps.remove(&oldest);
            }
        }
        while self.stamps.len() > self.total {
            let Some((oldest, _)) = self.order.pop_front() else {
                break;
            };
            self.forget(&oldest);
        }
    }

    /// What makes two copies the same message: the whole payload, hashed with this
    /// process's key (a collision is as unlikely as guessing the key).
    fn fingerprint(&self, payload: &[u8]) -> u64 {
        self.key.hash_one(payload)
    }

    /// Stamps remembered now.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((key, at)) = self.order.front() {
            let gone = self.stamps.get(key).is_none_or(|(_, _, since)| since != at);
            if !gone && now_ms - at < self.window_ms {
                break;
            }
            let (key, _) = self.order.pop_front().expect("peeked");
            if !gone {
                self.forget(&key);
            }
        }
        // Keys dropped by the per-sender bound leave entries behind in `order`.
        if self.order.len() > 2 * self.stamps.len() + 1024 {
            let stamps = &self.stamps;
            self.order
                .retain(|(key, at)| stamps.get(key).is_some_and(|(_, _, since)| since == at));
        }
    }

    fn forget(&mut self, key: &str) {
        self.stamps.remove(key);
        let sender = key.split('\0').next().unwrap_or_default();
        if let Some(keys) = self.by_sender.get_mut(sender) {
            keys.retain(|k| &**k != key);
            if keys.is_empty() {
                self.by_sender.remove(sender);
            }
        }
    }
}

fn key(sender: &str, client_msg_id: &str) -> Box<str> {
    format!("{sender}\0{client_msg_id}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u32) -> Stamp {
        Stamp {
            message_id: MessageId::parse(&format!("id-{n}")).unwrap(),
            server_ts: n as i64,
        }
    }

    const SAME: &[u8] =
        br#"{"type":"CHAT","fromId":17,"toId":2,"content":"hi","clientMsgId":"a1"}"#;

    /// As the plugin does: the first copy's stamp, or `new` remembered.
    fn stamp_of(d: &mut Dedup, sender: &str, id: &str, at: i64, new: Stamp) -> (Stamp, bool) {
        match d.get(sender, id, SAME, at) {
            Some(first) => (first, true),
            None => {
                d.remember(sender, id, SAME, new.clone(), at);
                (new, false)
            }
        }
    }

    #[test]
    fn the_same_client_msg_id_on_another_message_is_another_message() {
        let mut d = Dedup::new(300_000, PER_SENDER, TOTAL);
        let first = br#"{"type":"CHAT","fromId":17,"toId":2,"content":"hello","clientMsgId":"a1"}"#;
        d.remember("17", "a1", first, stamp(1), 1_000);
        assert_eq!(d.get("17", "a1", first, 2_000), Some(stamp(1)));
        // Anything else under the same id is another message: another recipient, another
        // content, a field the content does not hold, the same fields in another order, one
        // byte of white space.
        for other in [
            &br#"{"type":"CHAT","fromId":17,"toId":3,"content":"hello","clientMsgId":"a1"}"#[..],
            br#"{"type":"CHAT","fromId":17,"toId":2,"content":"hellO","clientMsgId":"a1"}"#,
            br#"{"type":"CHAT","fromId":17,"toId":2,"content":"hello","clientMsgId":"a1","replyTo":"x"}"#,
            br#"{"fromId":17,"type":"CHAT","toId":2,"content":"hello","clientMsgId":"a1"}"#,
            br#"{"type":"CHAT","fromId":17,"toId":2,"content":"hello","clientMsgId":"a1"} "#,
            b"",
        ] {
            assert_eq!(
                d.get("17", "a1", other, 2_000),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let other = br#"{"type":"CHAT","fromId":17,"toId":2,"content":"bye","clientMsgId":"a1"}"#;
        d.remember("17", "a1", other, stamp(2), 2_000);
        assert_eq!(
            d.get("17", "a1", other, 3_000),
            Some(stamp(2)),
            "the newest"
        );
        assert_eq!(
            d.get("17", "a1", first, 3_000),
            None,
            "replaced by the newest"
        );
    }

    #[test]
    fn the_fingerprint_is_keyed_per_process_and_covers_every_byte() {
        let (one, two) = (
            Dedup::new(1, PER_SENDER, TOTAL),
            Dedup::new(1, PER_SENDER, TOTAL),
        );
        assert_eq!(one.fingerprint(SAME), one.fingerprint(SAME));
        // Two instances draw two keys: the hash is not a fixed function a sender can
        // search for collisions offline.
        assert_ne!(one.fingerprint(SAME), two.fingerprint(SAME));
        // Boundaries count: a payload is one byte string, not a list of parts.
        assert_ne!(one.fingerprint(b"ab"), one.fingerprint(b"a"));
        let mut seen = std::collections::HashSet::new();
        for n in 0..SAME.len() {
            let mut changed = SAME.to_vec();
            changed[n] ^= 1;
            assert!(seen.insert(one.fingerprint(&changed)), "byte {n}");
        }
        assert!(!seen.contains(&one.fingerprint(SAME)));
    }

    #[test]
    fn a_retransmission_gets_the_first_stamp_within_the_window() {
        let mut d = Dedup::new(300_000, PER_SENDER, TOTAL);
        let (first, again) = stamp_of(&mut d, "17", "a1", 1_000, stamp(1));
        assert!(!again);
        for at in [2_000, 100_000, 300_999] {
            let (same, again) = stamp_of(&mut d, "17", "a1", at, stamp(99));
            assert!(again);
            assert_eq!(same, first);
        }
        // Another sender's same clientMsgId is another message.
        assert!(!stamp_of(&mut d, "18", "a1", 2_000, stamp(2)).1);
        // After the window: a new message.
        let (later, again) = stamp_of(&mut d, "17", "a1", 301_001, stamp(3));
        assert!(!again);
        assert_eq!(later.message_id, "id-3");
    }

    #[test]
    fn memory_is_bounded_per_sender_and_in_all() {
        let mut d = Dedup::new(300_000, 3, 5);
        for n in 0..10 {
            stamp_of(&mut d, "spammer", &n.to_string(), 1_000, stamp(n));
        }
        assert_eq!(d.len(), 3, "per sender");
        assert!(
            d.get("spammer", "9", SAME, 1_000).is_some(),
            "the newest kept"
        );
        assert!(
            d.get("spammer", "0", SAME, 1_000).is_none(),
            "the oldest forgotten"
        );
        for n in 0..10 {
            stamp_of(&mut d, &format!("user{n}"), "x", 1_000, stamp(n));
        }
        assert_eq!(d.len(), 5, "in all");
        // Everything expires.
        stamp_of(&mut d, "late", "y", 400_000, stamp(1));
        assert_eq!(d.len(), 1);
        assert!(d.by_sender.len() == 1 && d.order.len() == 1);
    }
}
