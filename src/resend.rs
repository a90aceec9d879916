//! QoS 2 resends before PUBREL. Mosquitto runs MESSAGE for every PUBLISH it reads, a QoS 2
//! copy sent again (DUP, on the same connection or after a reconnect) while the first still
//! waits for its PUBREL included, and only afterwards compares it with the message it holds
//! under that packet id: the same topic and payload as MESSAGE left them is a duplicate (not
//! stored or delivered again); anything else replaces the held message, which is then never
//! delivered. A second stamp would do just that, and leave the first copy's row in MySQL for
//! a message nobody received. The plugin is shown no packet id, DUP flag or PUBREL, so it
//! knows a resend by what it sees: the same client id, topic and payload, byte for byte, as
//! a QoS 2 message it stamped lately. That copy gets the first copy's stamp again (the same
//! bytes, so the broker takes it for the duplicate it is) and no second row. The payload is
//! compared by a keyed hash (SipHash with a random key per process). Remembered oldest
//! first out: at most `per_client` per client id and `total` in all, each for `window`.
//! Pure: time is passed in.

use crate::dedup::Stamp;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};

/// How long a QoS 2 message's stamp is kept for its resends.
pub const WINDOW_MS: i64 = 3_600_000;
/// Remembered per client id at most (Mosquitto holds at most `max_inflight_messages`, 20 by
/// default, QoS 2 messages of a client waiting for PUBREL).
pub const PER_CLIENT: usize = 100;
/// Remembered in all at most.
pub const TOTAL: usize = 50_000;

type Key = (Box<[u8]>, u64);

pub struct Resends {
    /// The fingerprint's key: random, drawn once (another process has another).
    key: RandomState,
    window_ms: i64,
    per_client: usize,
    total: usize,
    /// By client id and fingerprint of topic and payload: the stamp, and when.
    stamps: HashMap<Key, (Stamp, i64)>,
    /// Keys in the order they were remembered, with when (may hold keys already gone).
    order: VecDeque<(Key, i64)>,
    /// Each client id's fingerprints, oldest first.
    by_client: HashMap<Box<[u8]>, VecDeque<u64>>,
}

impl Resends {
    pub fn new(window_ms: i64, per_client: usize, total: usize) -> Self {
        Resends {
            key: RandomState::new(),
            window_ms,
            per_client,
            total,
            stamps: HashMap::new(),
            order: VecDeque::new(),
            by_client: HashMap::new(),
        }
    }

    /// The stamp a QoS 2 message with this topic and payload from `client_id` was given
    /// within the window, if one was.
    pub fn get(
        &mut self,
        client_id: &[u8],
        topic: &[u8],
        payload: &[u8],
        now_ms: i64,
    ) -> Option<Stamp> {
        self.expire(now_ms);
        let key = (Box::from(client_id), self.fingerprint(topic, payload));
        self.stamps.get(&key).map(|(stamp, _)| stamp.clone())
    }

    /// Remembers the stamp a QoS 2 message was just given.
    pub fn remember(
        &mut self,
        client_id: &[u8],
        topic: &[u8],
        payload: &[u8],
        stamp: Stamp,
        now_ms: i64,
    ) {
        self.expire(now_ms);
        let fingerprint = self.fingerprint(topic, payload);
        let key: Key = (Box::from(client_id), fingerprint);
        if let Some(held) = self.stamps.get_mut(&key) {
            // Not asked for first (it would have been found): the newest stamp counts.
            *held = (stamp, held.1);
            return;
        }
        self.stamps.insert(key.clone(), (stamp, now_ms));
        self.order.push_back((key, now_ms));
        let own = self.by_client.entry(Box::from(client_id)).or_default();
        own.push_back(fingerprint);
        while own.len() > self.per_client {
            if let Some(oldest) = own.pop_front() {
                self.stamps.remove(&(Box::from(client_id), oldest));
            }
        }
        while self.stamps.len() > self.total {
            let Some((oldest, at)) = self.order.pop_front() else {
                break;
            };
            if self
                .stamps
                .get(&oldest)
                .is_some_and(|(_, since)| *since == at)
            {
                self.forget(&oldest);
            }
        }
    }

    /// Stamps remembered now.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    fn fingerprint(&self, topic: &[u8], payload: &[u8]) -> u64 {
        // Each slice is hashed with its length: no topic and payload pair runs into another.
        self.key.hash_one((topic, payload))
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some((key, at)) = self.order.front() {
            let current = self.stamps.get(key).is_some_and(|(_, since)| since == at);
            if current && now_ms - at < self.window_ms {
                break;
            }
            let (key, _) = self.order.pop_front().expect("peeked");
            if current {
                self.forget(&key);
            }
        }
        // Keys dropped by the per-client bound leave entries behind in `order`.
        if self.order.len() > 2 * self.stamps.len() + 1024 {
            let stamps = &self.stamps;
            self.order
                .retain(|(key, at)| stamps.get(key).is_some_and(|(_, since)| since == at));
        }
    }

    fn forget(&mut self, key: &Key) {
        self.stamps.remove(key);
        if let Some(own) = self.by_client.get_mut(&key.0) {
            own.retain(|f| *f != key.1);
            if own.is_empty() {
                self.by_client.remove(&key.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: i64) -> Stamp {
        Stamp {
            message_id: crate::message_id::MessageId::parse(&format!("id-{n}")).unwrap(),
            server_ts: n,
        }
    }

    const TOPIC: &[u8] = b"/users/2/messages";
    const PAYLOAD: &[u8] = br#"{"type":"CHAT","fromId":1,"toId":2,"content":"hi"}"#;

    #[test]
    fn a_resend_is_the_same_client_topic_and_payload_within_the_window() {
        let mut r = Resends::new(WINDOW_MS, PER_CLIENT, TOTAL);
        assert_eq!(r.get(b"alice-1", TOPIC, PAYLOAD, 1_000), None);
        r.remember(b"alice-1", TOPIC, PAYLOAD, stamp(1), 1_000);
        for at in [1_000, 2_000, WINDOW_MS + 999] {
            assert_eq!(r.get(b"alice-1", TOPIC, PAYLOAD, at), Some(stamp(1)));
        }
        // Anything else is another message: another client id, topic or payload (one byte
        // more, a topic byte moved into the payload).
        assert_eq!(r.get(b"alice-2", TOPIC, PAYLOAD, 2_000), None);
        assert_eq!(
            r.get(b"alice-1", b"/users/3/messages", PAYLOAD, 2_000),
            None
        );
        let longer = [PAYLOAD, b" "].concat();
        assert_eq!(r.get(b"alice-1", TOPIC, &longer, 2_000), None);
        let moved = [b"s".as_slice(), PAYLOAD].concat();
        assert_eq!(
            r.get(b"alice-1", &TOPIC[..TOPIC.len() - 1], &moved, 2_000),
            None
        );
        // After the window: forgotten.
        assert_eq!(r.get(b"alice-1", TOPIC, PAYLOAD, WINDOW_MS + 1_000), None);
        assert!(r.is_empty() && r.by_client.is_empty() && r.order.is_empty());
    }

    #[test]
    fn memory_is_bounded_per_client_and_in_all() {
        let mut r = Resends::new(WINDOW_MS, 3, 5);
        let payload = |n: usize| format!("message {n}").into_bytes();
        for n in 0..10 {
            r.remember(b"busy", TOPIC, &payload(n), stamp(n as i64), 1_000);
        }
        assert_eq!(r.len(), 3, "per client id");
        assert_eq!(r.get(b"busy", TOPIC, &payload(9), 1_000), Some(stamp(9)));
        assert_eq!(
            r.get(b"busy", TOPIC, &payload(6), 1_000),
            None,
            "oldest out"
        );
        for n in 0..10 {
            let client = format!("client-{n}");
            r.remember(client.as_bytes(), TOPIC, PAYLOAD, stamp(n), 2_000);
        }
        assert_eq!(r.len(), 5, "in all");
        assert_eq!(r.get(b"client-9", TOPIC, PAYLOAD, 2_000), Some(stamp(9)));
        assert_eq!(r.get(b"client-4", TOPIC, PAYLOAD, 2_000), None);
        assert!(r.by_client.len() <= 5);
        // Everything expires; the bookkeeping with it.
        r.remember(b"late", TOPIC, PAYLOAD, stamp(1), WINDOW_MS + 3_000);
        assert_eq!(r.len(), 1);
        assert_eq!((r.by_client.len(), r.order.len()), (1, 1));
    }

    #[test]
    fn remembering_again_keeps_one_entry_with_the_newest_stamp() {
        let mut r = Resends::new(WINDOW_MS, 2, 10);
        r.remember(b"c", TOPIC, PAYLOAD, stamp(1), 1_000);
        r.remember(b"c", TOPIC, PAYLOAD, stamp(2), 1_500);
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(b"c", TOPIC, PAYLOAD, 1_600), Some(stamp(2)));
        // The per-client bound counts it once: two others fit beside it before it goes.
        r.remember(b"c", TOPIC, b"other", stamp(3), 1_700);
        assert_eq!(r.get(b"c", TOPIC, PAYLOAD, 1_700), Some(stamp(2)));
        r.remember(b"c", TOPIC, b"third", stamp(4), 1_800);
        assert_eq!(r.get(b"c", TOPIC, PAYLOAD, 1_800), None);
        assert_eq!(r.len(), 2);
    }
}
