//! The fast path of the validation: a chat payload of the usual shape (a flat object of at
//! most `MAX_KEYS` members whose keys have no escapes and whose values are strings, numbers,
//! `true`, `false` or `null`) read in one pass over its bytes, building nothing. Anything
//! else (nesting, an escaped key, a duplicate key, a surrogate escape, an error of any kind)
//! is handed to serde_json's reader, which gives the verdict and its words: this path only
//! ever says "read, and here are the members", never "refused". The property test in
//! `chat::tests` holds it to serde_json's verdict for every payload it reads.

/// The most members read here; a payload with more goes to serde_json's reader.
const MAX_KEYS: usize = 16;

/// The raw text of the members whose key `slot` places (as serde_json's `RawValue` gives
/// it: a string with its quotes and escapes, a number as written), or `None` when the
/// payload is not of the usual shape or not valid (serde_json's reader then decides).
pub(super) fn flat_object<const SLOTS: usize>(
    payload: &[u8],
    slot: impl Fn(&str) -> Option<usize>,
) -> Option<[Option<&str>; SLOTS]> {
    let text = std::str::from_utf8(payload).ok()?;
    let bytes = text.as_bytes();
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut known = [None; SLOTS];
    let mut keys = [""; MAX_KEYS];
    let mut count = 0;
    loop {
        at = skip_space(bytes, at + 1);
        if bytes.get(at) != Some(&b'"') {
            // An empty object (or an error): rare, serde_json's.
            return None;
        }
        let (key_end, escaped) = string_end(bytes, at)?;
        if escaped || count == MAX_KEYS {
            return None;
        }
        let key = text.get(at + 1..key_end - 1)?;
        if keys[..count].contains(&key) {
            // serde_json's reader names the duplicate.
            return None;
        }
        keys[count] = key;
        count += 1;
        at = skip_space(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(bytes, at + 1);
        let end = match *bytes.get(start)? {
            b'"' => string_end(bytes, start)?.0,
            b'-' | b'0'..=b'9' => number_end(bytes, start)?,
            b't' => literal_end(bytes, start, b"true")?,
            b'f' => literal_end(bytes, start, b"false")?,
            b'n' => literal_end(bytes, start, b"null")?,
            _ => return None,
        };
        if let Some(place) = slot(key) {
            *known.get_mut(place)? = Some(text.get(start..end)?);
        }
        at = skip_space(bytes, end);
        match bytes.get(at) {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => return None,
        }
    }
    (skip_space(bytes, at + 1) == bytes.len()).then_some(known)
}

/// The first byte at or after `at` that is not JSON white space.
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The end (one past the closing quote) of the string opening at `open`, and whether it has
/// escapes; `None` for a control character, a bad escape, a surrogate escape (serde_json's
/// reader decides those) or no closing quote.
fn string_end(bytes: &[u8], open: usize) -> Option<(usize, bool)> {
    let mut at = open + 1;
    let mut escaped = false;
    loop {
        at = plain_run_end(bytes, at);
        match *bytes.get(at)? {
            b'"' => return Some((at + 1, escaped)),
            b'\\' => {
                escaped = true;
                at += match *bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' => {
                        let hex = std::str::from_utf8(bytes.get(at + 2..at + 6)?).ok()?;
                        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return None;
                        }
                        let unit = u16::from_str_radix(hex, 16).ok()?;
                        if (0xd800..0xe000).contains(&unit) {
                            return None;
                        }
                        6
                    }
                    _ => return None,
                };
            }
            // A control character.
            _ => return None,
        }
    }
}

/// The first byte at or after `at` that ends a run of plain string bytes: a quote, a
/// backslash or a control character (or the end). Eight bytes at a time: a 100-byte
/// message is most of its length in one string.
fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // The high bit of each byte below `n` (n <= 0x80), and perhaps of bytes above a first
    // one, never below it: the lowest bit set is exact.
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGHS;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A byte below 0x20, or equal to '"' or '\\' (bytes of 0x80 and above, UTF-8
        // checked already, are plain).
        let special = below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1);
        if special != 0 {
            // Little-endian: the first byte in memory is the lowest.
            return at + special.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte < 0x20 || byte == b'"' || byte == b'\\' {
            break;
        }
        at += 1;
    }
    at
}

/// The end of the JSON number starting at `start` (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
fn number_end(bytes: &[u8], start: usize) -> Option<usize> {
    let digits = |at: usize| {
        let mut end = at;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        (end > at).then_some(end)
    };
    let mut at = start + usize::from(bytes[start] == b'-');
    at = match bytes.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(at)?,
        _ => return None,
    };
    if bytes.get(at) == Some(&b'.') {
        at = digits(at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = digits(at)?;
    }
    Some(at)
}

fn literal_end(bytes: &[u8], start: usize, word: &[u8]) -> Option<usize> {
    let end = start + word.len();
    (bytes.get(start..end)? == word).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> Option<usize> {
        ["type", "fromId", "toId", "content"]
            .iter()
            .position(|k| *k == key)
    }

    fn read(payload: &str) -> Option<[Option<&str>; 4]> {
        flat_object::<4>(payload.as_bytes(), slot)
    }

    #[test]
    fn the_usual_message_is_read_here() {
        let got = read(r#"{"type":"CHAT","fromId":17,"toId":"42","content":"hi \"there\"\u00e9"}"#);
        assert_eq!(
            got,
            Some([
                Some(r#""CHAT""#),
                Some("17"),
                Some(r#""42""#),
                Some(r#""hi \"there\"\u00e9""#)
            ])
        );
        let spaced = read(" {\r\n\"toId\" :\t-1.5e+3 , \"x\" : null,\"y\":true,\"z\":false}\n ");
        assert_eq!(spaced, Some([None, None, Some("-1.5e+3"), None]));
        // Non-ASCII text, and strings around the eight-byte steps.
        for n in 0..20 {
            let content = format!("{}é\u{1F600}", "x".repeat(n));
            let payload = format!(r#"{{"content":"{content}"}}"#);
            assert_eq!(read(&payload).unwrap()[3], Some(&*format!("\"{content}\"")));
        }
    }

    #[test]
    fn anything_else_is_left_to_serde_json() {
        for payload in [
            "",
            "{}",
            "[]",
            r#"{"a":1"#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"\u0061":1}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\uDFFF"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            "{\"a\":1}\u{0c}",
            r#"{"a" 1}"#,
            r#"{"a":"unterminated}"#,
        ] {
            assert_eq!(read(payload), None, "{payload}");
        }
        assert_eq!(flat_object::<4>(b"{\"a\":\"\xff\"}", slot), None);
        let crowded: String = (0..=MAX_KEYS).map(|n| format!(",\"k{n}\":0")).collect();
        assert_eq!(read(&format!("{{{}}}", &crowded[1..])), None);
        let full: String = (0..MAX_KEYS).map(|n| format!(",\"k{n}\":0")).collect();
        assert!(read(&format!("{{{}}}", &full[1..])).is_some());
    }

    #[test]
    fn a_plain_run_ends_where_a_byte_by_byte_reader_says() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|n| {
                    let pick = (rng >> (n % 56)) as u8;
                    match pick % 9 {
                        0 => b'"',
                        1 => b'\\',
                        2 => pick % 0x20,
                        3 => 0x80 | pick,
                        _ => b'a' + pick % 26,
                    }
                })
                .collect();
            let start = (rng >> 40) as usize % (len + 1);
            let expected = (start..len)
                .find(|&at| bytes[at] < 0x20 || bytes[at] == b'"' || bytes[at] == b'\\')
                .unwrap_or(len);
            assert_eq!(
                plain_run_end(&bytes, start),
                expected,
                "{bytes:?} from {start}"
            );
        }
    }
}
