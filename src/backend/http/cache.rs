//! The answers kept: fixed-size entries under keyed 128-bit hashes, bounded in bytes.

use super::*;

/// One kept answer: 24 bytes beside its 16-byte key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) allowed: bool,
    /// Seconds after the cache's start (`u32::MAX`: never).
    pub(super) expires: u32,
    /// The reload it was last asked or handed out stale in.
    pub(super) epoch: u32,
    /// Its place in `order` (wrapping: `order` never holds 2^32 places).
    pub(super) seq: u32,
}

// 114 bytes an answer at most, whatever its topic: 8 MiB hold about 73,000.
const _: () = assert!(AnswerCache::ENTRY_BYTES <= 128);

/// A kept answer as it is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Fresh(bool),
    /// Asked before the last reload and handed out the first time since: ask again (the
    /// answer is served meanwhile).
    Stale(bool),
}

impl Cached {
    pub fn allowed(self) -> bool {
        match self {
            Cached::Fresh(allowed) | Cached::Stale(allowed) => allowed,
        }
    }
}

/// Answers under fixed-size keys, at most `capacity` (from a size in bytes), for `ttl` (or
/// until pushed out): the oldest answer goes first, one at a time (expired ones ahead of
/// their turn), never all at once. A reload marks every answer stale.
#[derive(Debug)]
pub struct AnswerCache {
    pub(super) ttl: Option<Duration>,
    pub(super) capacity: usize,
    pub(super) start: Instant,
    pub(super) epoch: u32,
    pub(super) next_seq: u32,
    pub(super) entries: HashMap<Key, Entry>,
    /// Keys in the order they were put, with the `seq` they were put with (a key put again
    /// has an older place left here, skipped when reached).
    pub(super) order: VecDeque<(Key, u32)>,
}

impl AnswerCache {
    /// The bytes one answer costs at most: its entry in a hash table at its lowest load, and
    /// two places in `order`.
    pub const ENTRY_BYTES: usize =
        2 * (size_of::<(Key, Entry)>() + 1) + 2 * size_of::<(Key, u32)>();

    /// `ttl` `None`: kept until pushed out; `Some(ZERO)`: nothing is kept.
    pub fn new(ttl: Option<Duration>, max_bytes: usize, now: Instant) -> AnswerCache {
        AnswerCache {
            ttl,
            capacity: (max_bytes / Self::ENTRY_BYTES).max(1),
            start: now,
            epoch: 0,
            next_seq: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn seconds(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.start).as_secs()).unwrap_or(u32::MAX - 1)
    }

    /// The answer under `key`, if kept and not expired.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Cached> {
        let seconds = self.seconds(now);
        let epoch = self.epoch;
        let entry = self.entries.get_mut(key)?;
        if entry.expires <= seconds {
            return None;
        }
        if entry.epoch == epoch {
            return Some(Cached::Fresh(entry.allowed));
        }
        entry.epoch = epoch;
        Some(Cached::Stale(entry.allowed))
    }

    pub fn put(&mut self, key: Key, allowed: bool, now: Instant) {
        let expires = match self.ttl {
            Some(ttl) if ttl.is_zero() => return,
            // Rounded down, so an answer never outlives its time.
            Some(ttl) => self
                .seconds(now)
                .saturating_add(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)),
            None => u32::MAX,
        };
        let seconds = self.seconds(now);
        // Expired answers at the front go ahead of their turn, a few per put.
        for _ in 0..2 {
            match self.order.front() {
                Some((front, seq))
                    if self
                        .entries
                        .get(front)
                        .is_some_and(|e| e.seq == *seq && e.expires <= seconds) =>
                {
                    let front = *front;
                    self.entries.remove(&front);
                    self.order.pop_front();
                }
                _ => break,
            }
        }
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                let Some((oldest, seq)) = self.order.pop_front() else {
                    break;
                };
                if self.entries.get(&oldest).is_some_and(|e| e.seq == seq) {
                    self.entries.remove(&oldest);
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.entries.insert(
            key,
            Entry {
                allowed,
                expires,
                epoch: self.epoch,
                seq,
            },
        );
        self.order.push_back((key, seq));
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }

    pub fn remove(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Every answer kept is stale from now on.
    pub fn reload(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The key of an ACL answer: per client (id and username: a client id is the client's
/// choice, and another user may take it), topic and access.
pub(super) fn acl_key(
    keys: &Keys,
    client_id: &[u8],
    username: &str,
    topic: &str,
    access: Access,
) -> Key {
    keys.key(&[
        b"acl",
        client_id,
        username.as_bytes(),
        topic.as_bytes(),
        &acc(access).to_le_bytes(),
    ])
}
