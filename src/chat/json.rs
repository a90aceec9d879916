//! The JSON pieces the payload reader and writer share: object keys and strings borrowed
//! from the payload, a key given twice, and values written as serde_json writes them.

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;

/// Up to this many keys are compared pairwise; beyond, through a hash set.
pub(super) const PAIRWISE: usize = 16;

/// A key given twice, if any: compared pairwise for the few members of an object,
/// through a hash set beyond (50,000 keys took seconds pairwise).
pub(super) fn duplicate<'k, T>(
    members: &'k [T],
    key: impl Fn(&'k T) -> &'k str,
) -> Option<&'k str> {
    if members.len() <= PAIRWISE {
        return members
            .iter()
            .enumerate()
            .find(|&(i, member)| members[..i].iter().any(|seen| key(seen) == key(member)))
            .map(|(_, member)| key(member));
    }
    let mut seen = HashSet::with_capacity(members.len());
    members.iter().map(key).find(|&name| !seen.insert(name))
}

/// A JSON string's text, borrowed from the payload unless it holds escapes; `None` when
/// `raw` (a value serde_json has read) is not a string, or holds an escape serde_json does
/// not decode (a lone surrogate).
pub(super) fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    // A raw value that starts with a quote is one whole string; with no backslash in it,
    // its text is what is between the quotes.
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.as_bytes().contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// An object key (a member name), borrowed from the payload unless it holds escapes; also
/// how `envelope` reads the members of a request.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text.to_string())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A JSON string as serde_json writes it (it escapes only `"`, `\` and control
/// characters).
pub(super) fn write_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// A whole number as `Display` (and serde_json) writes it, without the formatting machinery.
pub(super) fn write_integer(out: &mut Vec<u8>, number: i64) {
    // "00" to "99": two digits per division.
    const PAIRS: [u8; 200] = {
        let mut pairs = [0; 200];
        let mut n = 0;
        while n < 100 {
            pairs[2 * n] = b'0' + (n / 10) as u8;
            pairs[2 * n + 1] = b'0' + (n % 10) as u8;
            n += 1;
        }
        pairs
    };
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = number.unsigned_abs();
    while rest >= 10 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if rest > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + rest as u8;
    }
    if number < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[start..]);
}

/// A whole number as `Display` (and serde_json) writes it.
pub(super) fn write_number(out: &mut Vec<u8>, number: impl fmt::Display) {
    use std::io::Write;
    let _ = write!(out, "{number}");
}

/// Writes the JSON value it reads as serde_json's `Value` writes it again: compact, the
/// same number and string forms, and an object's repeated key in its first place with its
/// last value. Memory: the output, and per object its members' places.
pub(super) struct Compact<'o>(pub(super) &'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Compact<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Compact<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write_number(self.0, v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_number(self.0, v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // serde_json's own float form (and `null` where a Value would hold Null).
        let _ = serde_json::to_writer(&mut *self.0, &v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            if items.next_element_seed(Compact(out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let start = out.len();
        out.push(b'{');
        // Each member's key and where its `"key":value` text is in `out`.
        let mut members: Vec<(Key<'de>, Range<usize>)> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if !members.is_empty() {
                out.push(b',');
            }
            let from = out.len();
            write_str(out, &key.0);
            out.push(b':');
            map.next_value_seed(Compact(out))?;
            members.push((key, from..out.len()));
        }
        out.push(b'}');
        if duplicate(&members, |(key, _)| key.0.as_ref()).is_some() {
            // Rare: written again, once, each key in its first place with its last value.
            let written = out.split_off(start);
            let mut last = HashMap::with_capacity(members.len());
            for (key, place) in &members {
                last.insert(key.0.as_ref(), place.clone());
            }
            out.push(b'{');
            for (key, _) in &members {
                if let Some(place) = last.remove(key.0.as_ref()) {
                    if out.len() > start + 1 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&written[place.start - start..place.end - start]);
                }
            }
            out.push(b'}');
        }
        Ok(())
    }
}
