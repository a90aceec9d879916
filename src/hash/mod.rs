//! Password verification for every stored format the plugin reads. Each family lives in its
//! own file; this one detects the format and compares in constant time.

mod digest;
mod modern;
mod mysql_native;
mod pbkdf2;

pub use self::pbkdf2::{PbkdfAlgorithm, generate_auth_plug, generate_django, generate_mosquitto};
pub use modern::{generate_argon2id, generate_bcrypt};

use std::fmt;
use subtle::ConstantTimeEq;

// Every login's hash runs on the broker's only thread, so a stored row may ask for at most a
// few hundred milliseconds of it. The caps below were measured on the project's 2-core
// machine (`chat-auth-passwd --check`, release build; docs/passwords.md, "Cost on the broker
// thread").

/// PBKDF2 work (iterations x output blocks of the hash) a row may ask for, per algorithm:
/// SHA-1 and SHA-256 about 0.15 us per iteration-block on CPUs with SHA extensions,
/// SHA-512 about 0.7 us. Django's 1,000,000 SHA-256 iterations (its 5.2 default) fit.
pub const MAX_PBKDF2_WORK_SHA1: u64 = 2_000_000;
pub const MAX_PBKDF2_WORK_SHA256: u64 = 1_500_000;
pub const MAX_PBKDF2_WORK_SHA512: u64 = 400_000;
/// The largest iteration count any algorithm accepts (`chat-auth-passwd --iterations`).
pub const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;
/// bcrypt rows with a higher cost are refused (cost 12 is about 0.23 s, 13 twice that).
pub const MAX_BCRYPT_COST: u32 = 12;
/// argon2 rows asking for more memory (KiB), or more memory times passes, are refused
/// (about 0.8 us per KiB-pass: PHP's 64 MiB x 4 passes is 0.2 s; the cap about 0.3 s).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_ARGON2_WORK_KIB_PASSES: u64 = 384 * 1024;
/// Derived keys shorter than this are refused: an empty key would match every password.
pub const MIN_KEY_BYTES: usize = 8;
const MAX_KEY_BYTES: usize = 1024;

/// A stored password format, as detected or as named by `auth_opt_password_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// auth-plug / go-auth `PBKDF2$alg$iter$salt$key`.
    AuthPlugPbkdf2,
    /// `mosquitto_passwd` 2.0 `$7$iter$salt$key`.
    MosquittoPbkdf2,
    /// `mosquitto_passwd` 1.x / `-H sha512` `$6$salt$hash`.
    MosquittoSha512,
    /// Django `pbkdf2_sha256$iter$salt$key`.
    Django,
    Bcrypt,
    Argon2,
    /// MySQL 4.1+ `PASSWORD()`: `*` and 40 hex digits.
    MysqlNative,
    /// MySQL pre-4.1 `OLD_PASSWORD()`: 16 hex digits.
    MysqlOld,
    Hex(DigestAlgorithm),
    /// Only when configured: the column holds the password itself.
    Plain,
    /// Only when configured (EMQX's `password_hash_algorithm {name = pbkdf2, ...}`): the
    /// column holds the derived key in hex, the `salt` column the salt, the rounds are in
    /// the configuration.
    EmqxPbkdf2(EmqxPbkdf2),
}

/// EMQX's PBKDF2 parameters (`mac_fun`, `iterations`, `dk_length`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmqxPbkdf2 {
    pub mac: PbkdfAlgorithm,
    pub iterations: u32,
    /// Bytes of the derived key (the stored hex has twice as many digits).
    pub key_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    const ALL: [DigestAlgorithm; 6] = [
        Self::Md5,
        Self::Sha1,
        Self::Sha224,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
    ];

    fn output_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha224 => "sha224",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

impl Format {
    /// The names `auth_opt_password_format` accepts (besides `auto`).
    pub const NAMES: &'static [&'static str] = &[
        "pbkdf2",
        "mosquitto",
        "django",
        "bcrypt",
        "argon2",
        "mysql",
        "mysql_old",
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "plain",
    ];

    /// Parses a configured name. `mosquitto` covers both `$7$` and `$6$`, which are told
    /// apart by their prefix; `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Format> {
        let format = match name {
            "pbkdf2" => Format::AuthPlugPbkdf2,
            "mosquitto" => Format::MosquittoPbkdf2,
            "django" => Format::Django,
            "bcrypt" => Format::Bcrypt,
            "argon2" => Format::Argon2,
            "mysql" => Format::MysqlNative,
            "mysql_old" => Format::MysqlOld,
            "plain" => Format::Plain,
            _ => Format::Hex(
                DigestAlgorithm::ALL
                    .into_iter()
                    .find(|alg| alg.name() == name)?,
            ),
        };
        Some(format)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::AuthPlugPbkdf2 => f.write_str("pbkdf2"),
            Format::MosquittoPbkdf2 => f.write_str("mosquitto $7$"),
            Format::MosquittoSha512 => f.write_str("mosquitto $6$"),
            Format::Django => f.write_str("django"),
            Format::Bcrypt => f.write_str("bcrypt"),
            Format::Argon2 => f.write_str("argon2"),
            Format::MysqlNative => f.write_str("mysql"),
            Format::MysqlOld => f.write_str("mysql_old"),
            Format::Hex(alg) => f.write_str(alg.name()),
            Format::Plain => f.write_str("plain"),
            Format::EmqxPbkdf2(_) => f.write_str("emqx pbkdf2"),
        }
    }
}

/// How auth-plug's PBKDF2 salt field is turned into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaltEncoding {
    /// The salt text itself (auth-plug's `np`).
    #[default]
    Literal,
    /// Base64-decoded (go-auth's `hasher_salt_encoding base64`).
    Base64,
}

/// Where a `salt` column goes for hex digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaltPosition {
    #[default]
    Prefix,
    Suffix,
}

/// Table-wide settings that change how a stored string is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashSettings {
    /// `None`: detect from the stored string.
    pub forced: Option<Format>,
    pub salt_encoding: SaltEncoding,
    pub salt_position: SaltPosition,
}

/// Why a stored hash could not be used. Never carries the hash or the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// Not a format the plugin knows (or not the forced one).
    Unrecognised,
    /// The right shape, but a field is unusable (bad base64, cost over the limit, ...).
    Invalid(Format, String),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Unrecognised => f.write_str("unrecognised password hash format"),
            HashError::Invalid(format, why) => write!(f, "unusable {format} password hash: {why}"),
        }
    }
}

/// Checks `password` against the stored string (and optional per-row salt).
/// `Ok(false)` is a wrong password; `Err` a row the plugin cannot use.
pub fn verify(
    stored: &[u8],
    salt: Option<&[u8]>,
    password: &[u8],
    settings: &HashSettings,
) -> Result<bool, HashError> {
    let stored = std::str::from_utf8(stored).map_err(|_| HashError::Unrecognised)?;
    let stored = stored.trim_end_matches(['\n', '\r', ' ']);
    let format = match settings.forced {
        None => detect(stored).ok_or(HashError::Unrecognised)?,
        // `mosquitto` names both of mosquitto_passwd's formats.
        Some(Format::MosquittoPbkdf2) if stored.starts_with("$6$") => Format::MosquittoSha512,
        Some(format) => format,
    };
    match format {
        Format::AuthPlugPbkdf2 => {
            pbkdf2::verify_auth_plug(stored, password, settings.salt_encoding)
        }
        Format::MosquittoPbkdf2 => pbkdf2::verify_mosquitto(stored, password),
        Format::Django => pbkdf2::verify_django(stored, password),
        Format::MosquittoSha512 => digest::verify_mosquitto_sha512(stored, password),
        Format::Bcrypt => modern::verify_bcrypt(stored, password),
        Format::Argon2 => modern::verify_argon2(stored, password),
        Format::MysqlNative => mysql_native::verify_password(stored, password),
        Format::MysqlOld => mysql_native::verify_old_password(stored, password),
        Format::Hex(alg) => digest::verify_hex(alg, stored, salt, password, settings.salt_position),
        Format::Plain => Ok(constant_time_eq(stored.as_bytes(), password)),
        Format::EmqxPbkdf2(params) => pbkdf2::verify_emqx(params, stored, salt, password),
    }
}

/// Names the format of a stored string, or `None`. Plain text is never guessed.
pub fn detect(stored: &str) -> Option<Format> {
    const PREFIXES: &[(&str, Format)] = &[
        ("PBKDF2$", Format::AuthPlugPbkdf2),
        ("pbkdf2_sha256$", Format::Django),
        ("pbkdf2_sha1$", Format::Django),
        ("$7$", Format::MosquittoPbkdf2),
        ("$6$", Format::MosquittoSha512),
        ("$2a$", Format::Bcrypt),
        ("$2b$", Format::Bcrypt),
        ("$2y$", Format::Bcrypt),
        ("$2x$", Format::Bcrypt),
        ("$argon2", Format::Argon2),
    ];
    if let Some((_, format)) = PREFIXES.iter().find(|(p, _)| stored.starts_with(p)) {
        return Some(*format);
    }
    if let Some(hex) = stored.strip_prefix('*') {
        return (hex.len() == 40 && is_hex(hex)).then_some(Format::MysqlNative);
    }
    if !is_hex(stored) {
        return None;
    }
    if stored.len() == 16 {
        return Some(Format::MysqlOld);
    }
    DigestAlgorithm::ALL
        .into_iter()
        .find(|alg| alg.output_len() * 2 == stored.len())
        .map(Format::Hex)
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Equal length and equal bytes, without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Decodes hex of any case into exactly `len` bytes.
fn decode_hex(format: Format, text: &str, len: usize) -> Result<Vec<u8>, HashError> {
    let bytes = hex::decode(text).map_err(|_| HashError::Invalid(format, "not hex".into()))?;
    if bytes.len() != len {
        return Err(HashError::Invalid(
            format,
            format!("{} hex digits, expected {}", text.len(), len * 2),
        ));
    }
    Ok(bytes)
}

/// Standard base64, padded or not (mosquitto pads, some tools strip it).
fn decode_base64(format: Format, field: &str, text: &str) -> Result<Vec<u8>, HashError> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| HashError::Invalid(format, format!("{field} is not base64")))
}

fn check_key_len(format: Format, key: &[u8]) -> Result<(), HashError> {
    if key.len() < MIN_KEY_BYTES || key.len() > MAX_KEY_BYTES {
        return Err(HashError::Invalid(
            format,
            format!(
                "key of {} bytes (accepted: {MIN_KEY_BYTES} to {MAX_KEY_BYTES})",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// Random bytes for new salts (the hash tool).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EMQX's pbkdf2 rows: vectors from Python's `hashlib.pbkdf2_hmac` (and RFC 6070's).
    #[test]
    fn emqx_pbkdf2_rows() {
        let emqx = |mac, iterations, key_len| HashSettings {
            forced: Some(Format::EmqxPbkdf2(EmqxPbkdf2 {
                mac,
                iterations,
                key_len,
            })),
            ..HashSettings::default()
        };
        let sha256 = emqx(PbkdfAlgorithm::Sha256, 4096, 32);
        // hashlib.pbkdf2_hmac('sha256', b's3cret pw', b'pbkdf2-salt', 4096, 32).hex()
        let stored = b"d7d9df33515d13bb08f2215476dade33b5ed29784f9c50e07996e6dc8d012413";
        let salt = Some(&b"pbkdf2-salt"[..]);
        assert_eq!(verify(stored, salt, b"s3cret pw", &sha256), Ok(true));
        assert_eq!(verify(stored, salt, b"s3cret pq", &sha256), Ok(false));
        assert_eq!(
            verify(stored, Some(b"other"), b"s3cret pw", &sha256),
            Ok(false)
        );
        let upper = stored.to_ascii_uppercase();
        assert_eq!(verify(&upper, salt, b"s3cret pw", &sha256), Ok(true));
        // RFC 6070: PBKDF2-HMAC-SHA1("password", "salt", 4096, 20).
        let sha1 = emqx(PbkdfAlgorithm::Sha1, 4096, 20);
        let rfc = b"4b007901b765489abead49d926f721d065a429c1";
        assert_eq!(verify(rfc, Some(b"salt"), b"password", &sha1), Ok(true));
        // A key of another length than dk_length is an unusable row, not a wrong password.
        assert!(matches!(
            verify(&stored[..40], salt, b"s3cret pw", &sha256),
            Err(HashError::Invalid(..))
        ));
    }

    #[test]
    fn detection_by_shape() {
        assert_eq!(
            detect("PBKDF2$sha256$901$abc$def"),
            Some(Format::AuthPlugPbkdf2)
        );
        assert_eq!(detect("$7$101$a$b"), Some(Format::MosquittoPbkdf2));
        assert_eq!(detect("$6$a$b"), Some(Format::MosquittoSha512));
        assert_eq!(detect("pbkdf2_sha256$1$a$b"), Some(Format::Django));
        assert_eq!(detect("$2y$10$abc"), Some(Format::Bcrypt));
        assert_eq!(
            detect("$argon2id$v=19$m=1,t=1,p=1$a$b"),
            Some(Format::Argon2)
        );
        assert_eq!(
            detect("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"),
            Some(Format::MysqlNative)
        );
        assert_eq!(detect("428567f408994404"), Some(Format::MysqlOld));
        assert_eq!(
            detect(&"a".repeat(32)),
            Some(Format::Hex(DigestAlgorithm::Md5))
        );
        assert_eq!(
            detect(&"A".repeat(128)),
            Some(Format::Hex(DigestAlgorithm::Sha512))
        );
    }

    #[test]
    fn plain_text_and_odd_shapes_are_never_guessed() {
        for stored in ["secret", "", "*123", &"a".repeat(33), "$1$abc$def", "zz"] {
            assert_eq!(detect(stored), None, "{stored}");
            assert_eq!(
                verify(
                    stored.as_bytes(),
                    None,
                    stored.as_bytes(),
                    &HashSettings::default()
                ),
                Err(HashError::Unrecognised)
            );
        }
    }

    #[test]
    fn plain_only_when_forced() {
        let settings = HashSettings {
            forced: Some(Format::Plain),
            ..Default::default()
        };
        assert_eq!(verify(b"s3cret", None, b"s3cret", &settings), Ok(true));
        assert_eq!(verify(b"s3cret", None, b"s3cre", &settings), Ok(false));
        assert_eq!(verify(b"s3cret", None, b"s3cret\xff", &settings), Ok(false));
    }

    #[test]
    fn non_utf8_stored_value_is_unrecognised() {
        assert_eq!(
            verify(b"\xff\xfe", None, b"x", &HashSettings::default()),
            Err(HashError::Unrecognised)
        );
    }

    #[test]
    fn a_forced_format_does_not_fall_back_to_detection() {
        let settings = HashSettings {
            forced: Some(Format::Hex(DigestAlgorithm::Sha256)),
            ..Default::default()
        };
        // An MD5 digest (32 hex digits) read as SHA-256 is refused, not detected as MD5.
        let md5 = "5ebe2294ecd0e0f08eab7690d2a6ee69";
        assert!(matches!(
            verify(md5.as_bytes(), None, b"secret", &settings),
            Err(HashError::Invalid(..))
        ));
    }

    #[test]
    fn format_names_round_trip() {
        for name in Format::NAMES {
            assert!(Format::from_name(name).is_some(), "{name}");
        }
        assert_eq!(Format::from_name("rot13"), None);
    }
}
