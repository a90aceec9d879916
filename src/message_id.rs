//! Message ids: UUIDv7 (RFC 9562) made on the broker thread for every accepted chat
//! message, held inline (no heap allocation per message, issue 26).
//!
//! An id is the stamp's millisecond time (48 bits: ids sort by time) and 74 bits that start
//! at random each millisecond and then count up by a random step (RFC 9562 section 6.2,
//! method 2: monotonic within this process, even when the clock steps back). The random
//! bits come from a generator seeded once from the OS: two brokers stamping in the same
//! millisecond collide with a chance of about 2^-74 per pair of ids. They are not secret:
//! an id is a name, never a permission (history and ACL decisions read the rules).

use arrayvec::ArrayString;
use std::fmt;

/// The longest id the `messages` table holds (a trusted sender may bring its own).
pub const MAX_ID_BYTES: usize = 64;

/// A message id's text: printable ASCII, 1 to `MAX_ID_BYTES` bytes, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(ArrayString<MAX_ID_BYTES>);

impl MessageId {
    /// An id brought by a trusted sender (another broker's stamp), when it fits the table.
    pub fn parse(text: &str) -> Option<MessageId> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        ArrayString::from(text).ok().map(MessageId)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for MessageId {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The 74 bits after the version and variant fields.
const TAIL_BITS: u32 = 74;
const TAIL_MASK: u128 = (1 << TAIL_BITS) - 1;

/// Makes UUIDv7 message ids, in order.
pub struct MessageIds {
    last_ms: u64,
    /// The 74 bits of the last id.
    tail: u128,
    random: SplitMix64,
}

impl MessageIds {
    /// A generator seeded from the OS random source.
    pub fn new() -> MessageIds {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the OS random source failed");
        MessageIds::seeded(u64::from_le_bytes(seed))
    }

    /// A generator with a given seed (tests: the same seed makes the same ids).
    pub fn seeded(seed: u64) -> MessageIds {
        MessageIds {
            last_ms: 0,
            tail: 0,
            random: SplitMix64(seed),
        }
    }

    /// The next id, for a message stamped at `now_ms` (Unix time in milliseconds).
    pub fn next(&mut self, now_ms: i64) -> MessageId {
        let now = u64::try_from(now_ms).unwrap_or(0) & ((1 << 48) - 1);
        if now > self.last_ms {
            self.last_ms = now;
            // A fresh start with its top bit clear: room for a great many steps.
            self.tail = self.random_tail() >> 1;
        } else {
            // The same millisecond, or the clock stepped back: count on from the last id.
            let step = 1 + u128::from(self.random.next() & 0xffff_ffff);
            self.tail += step;
            if self.tail > TAIL_MASK {
                // Used up: borrow the next millisecond, as RFC 9562 allows.
                self.last_ms += 1;
                self.tail = self.random_tail() >> 1;
            }
        }
        // `from_unix_timestamp_millis` takes 80 bits and keeps 74 of them (the 4 version
        // and 2 variant bits replace the rest): spread the 74 across those places.
        let spread = spread_tail(self.tail);
        let uuid = uuid::Builder::from_unix_timestamp_millis(self.last_ms, &spread).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        MessageId(ArrayString::from(text).unwrap_or_default())
    }

    fn random_tail(&mut self) -> u128 {
        ((u128::from(self.random.next()) << 64) | u128::from(self.random.next())) & TAIL_MASK
    }
}

impl Default for MessageIds {
    fn default() -> Self {
        MessageIds::new()
    }
}

/// The 74 bits as the 10 bytes `Builder::from_unix_timestamp_millis` takes: 12 bits for
/// `rand_a` in the low nibble of byte 0 and byte 1, then 62 bits for `rand_b` in the low six
/// bits of byte 2 and bytes 3 to 9 (the builder overwrites the others with the version and
/// variant), so ids in counting order are in byte order.
fn spread_tail(tail: u128) -> [u8; 10] {
    let rand_a = (tail >> 62) as u16 & 0x0fff;
    let rand_b = tail as u64 & ((1 << 62) - 1);
    let mut out = [0u8; 10];
    out[..2].copy_from_slice(&rand_a.to_be_bytes());
    out[2..].copy_from_slice(&rand_b.to_be_bytes());
    out
}

/// SplitMix64 (Steele, Lea and Flood): fast, and every seed gives a full-period stream.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_of_the_stamp_time_and_sort_in_the_order_made() {
        let mut ids = MessageIds::seeded(1);
        let now = 1_795_000_000_000_i64;
        let mut made = Vec::new();
        // Many in one millisecond, then later ones, then a clock that steps back.
        for ms in std::iter::repeat_n(now, 5_000)
            .chain(now + 1..now + 200)
            .chain(std::iter::repeat_n(now - 10_000, 100))
        {
            made.push(ids.next(ms));
        }
        for id in &made {
            let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(&*uuid.hyphenated().to_string(), id.as_str());
            let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
            let ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
            assert!((now..now + 300).contains(&ms), "{id}: {ms}");
        }
        assert!(
            made.windows(2).all(|w| w[0] < w[1]),
            "ids sort in the order made"
        );
        let first = uuid::Uuid::parse_str(&made[0]).unwrap();
        let (secs, _) = first.get_timestamp().unwrap().to_unix();
        assert_eq!(secs, 1_795_000_000);
    }

    #[test]
    fn two_generators_never_make_the_same_id() {
        let (mut a, mut b) = (MessageIds::new(), MessageIds::new());
        let mut seen = std::collections::HashSet::new();
        for n in 0..20_000 {
            let ms = 1_795_000_000_000 + n / 1000;
            assert!(seen.insert(a.next(ms)));
            assert!(seen.insert(b.next(ms)));
        }
    }

    #[test]
    fn a_used_up_millisecond_borrows_the_next() {
        let mut ids = MessageIds::seeded(7);
        let now = 1_795_000_000_000;
        ids.next(now);
        ids.tail = TAIL_MASK - 1;
        let next = ids.next(now);
        let ms = |id: &MessageId| {
            let (s, n) = uuid::Uuid::parse_str(id)
                .unwrap()
                .get_timestamp()
                .unwrap()
                .to_unix();
            s as i64 * 1000 + i64::from(n / 1_000_000)
        };
        assert_eq!(ms(&next), now + 1);
        assert!(ids.next(now) > next);
    }

    #[test]
    fn brought_ids_are_printable_ascii_that_fits_the_table() {
        assert_eq!(MessageId::parse("m-1").unwrap(), "m-1");
        assert!(MessageId::parse(&"x".repeat(MAX_ID_BYTES)).is_some());
        for bad in ["", "a b", "é", "\u{1}", &"x".repeat(MAX_ID_BYTES + 1)] {
            assert!(MessageId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
