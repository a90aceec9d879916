//! PBKDF2-HMAC formats: auth-plug/go-auth `PBKDF2$...`, mosquitto_passwd `$7$...`, Django.

use super::{
    Format, HashError, MAX_PBKDF2_ITERATIONS, MAX_PBKDF2_WORK_SHA1, MAX_PBKDF2_WORK_SHA256,
    MAX_PBKDF2_WORK_SHA512, SaltEncoding, check_key_len, constant_time_eq, decode_base64,
    random_bytes,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbkdfAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl PbkdfAlgorithm {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Output bytes of one PBKDF2 block.
    pub fn block_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// The most work (iterations x blocks) a stored row may ask of this algorithm.
    pub fn max_work(self) -> u64 {
        match self {
            Self::Sha1 => MAX_PBKDF2_WORK_SHA1,
            Self::Sha256 => MAX_PBKDF2_WORK_SHA256,
            Self::Sha512 => MAX_PBKDF2_WORK_SHA512,
        }
    }

    /// Whether deriving `key_len` bytes with `iterations` stays within the cap.
    pub fn affordable(self, iterations: u32, key_len: usize) -> bool {
        let blocks = key_len.div_ceil(self.block_len()).max(1) as u64;
        u64::from(iterations).saturating_mul(blocks) <= self.max_work()
    }

    fn derive(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        match self {
            Self::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            Self::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
            Self::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
        }
    }
}

/// EMQX's `pbkdf2`: the stored text is the derived key in hex (of any case), made from the
/// password and the row's `salt` column (`None`: empty) with the configured parameters.
pub fn verify_emqx(
    params: super::EmqxPbkdf2,
    stored: &str,
    salt: Option<&[u8]>,
    password: &[u8],
) -> Result<bool, HashError> {
    let format = Format::EmqxPbkdf2(params);
    let expected = super::decode_hex(format, stored, params.key_len)?;
    let mut key = vec![0u8; params.key_len];
    params.mac.derive(
        password,
        salt.unwrap_or_default(),
        params.iterations,
        &mut key,
    );
    Ok(constant_time_eq(&key, &expected))
}

/// `PBKDF2$sha256$901$SALT$BASE64KEY`. Unlike auth-plug, an unknown algorithm name is an
/// error rather than a silent sha256: no tool writes such rows, and guessing hides typos.
pub fn verify_auth_plug(
    stored: &str,
    password: &[u8],
    salt_encoding: SaltEncoding,
) -> Result<bool, HashError> {
    const F: Format = Format::AuthPlugPbkdf2;
    let fields = split_fields(F, stored, "PBKDF2$", 4)?;
    let algorithm = algorithm(F, fields[0])?;
    let iterations = iterations(F, fields[1])?;
    let salt = match salt_encoding {
        SaltEncoding::Literal => fields[2].as_bytes().to_vec(),
        SaltEncoding::Base64 => decode_base64(F, "salt", fields[2])?,
    };
    let key = decode_base64(F, "key", fields[3])?;
    check_derived(F, algorithm, password, &salt, iterations, &key)
}

/// mosquitto_passwd 2.0: `$7$ITER$BASE64SALT$BASE64KEY`, PBKDF2-HMAC-SHA512.
pub fn verify_mosquitto(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    const F: Format = Format::MosquittoPbkdf2;
    let fields = split_fields(F, stored, "$7$", 3)?;
    let iterations = iterations(F, fields[0])?;
    let salt = decode_base64(F, "salt", fields[1])?;
    let key = decode_base64(F, "key", fields[2])?;
    check_derived(F, PbkdfAlgorithm::Sha512, password, &salt, iterations, &key)
}

/// Django: `pbkdf2_sha256$ITER$SALT$BASE64KEY` (salt is text), also `pbkdf2_sha1`.
pub fn verify_django(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    const F: Format = Format::Django;
    let (algorithm, rest) = stored.split_once('$').ok_or(HashError::Unrecognised)?;
    let algorithm = match algorithm {
        "pbkdf2_sha256" => PbkdfAlgorithm::Sha256,
        "pbkdf2_sha1" => PbkdfAlgorithm::Sha1,
        _ => return Err(HashError::Unrecognised),
    };
    let fields: Vec<&str> = rest.splitn(3, '$').collect();
    if fields.len() != 3 {
        return Err(HashError::Invalid(F, "expected ITER$SALT$KEY".into()));
    }
    let iterations = iterations(F, fields[0])?;
    let key = decode_base64(F, "key", fields[2])?;
    check_derived(
        F,
        algorithm,
        password,
        fields[1].as_bytes(),
        iterations,
        &key,
    )
}

/// Splits what follows `prefix` into exactly `count` `$`-separated fields.
fn split_fields<'a>(
    format: Format,
    stored: &'a str,
    prefix: &str,
    count: usize,
) -> Result<Vec<&'a str>, HashError> {
    let rest = stored.strip_prefix(prefix).ok_or(HashError::Unrecognised)?;
    let fields: Vec<&str> = rest.split('$').collect();
    if fields.len() != count {
        return Err(HashError::Invalid(
            format,
            format!(
                "{} '$'-separated fields after {prefix}, expected {count}",
                fields.len()
            ),
        ));
    }
    Ok(fields)
}

fn algorithm(format: Format, name: &str) -> Result<PbkdfAlgorithm, HashError> {
    PbkdfAlgorithm::from_name(name).ok_or_else(|| {
        HashError::Invalid(
            format,
            "algorithm is not sha1, sha256 or sha512".to_string(),
        )
    })
}

fn iterations(format: Format, text: &str) -> Result<u32, HashError> {
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_PBKDF2_ITERATIONS).contains(&n) => Ok(n),
        _ => Err(HashError::Invalid(
            format,
            format!("iteration count is not between 1 and {MAX_PBKDF2_ITERATIONS}"),
        )),
    }
}

fn check_derived(
    format: Format,
    algorithm: PbkdfAlgorithm,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    expected: &[u8],
) -> Result<bool, HashError> {
    check_key_len(format, expected)?;
    if !algorithm.affordable(iterations, expected.len()) {
        return Err(HashError::Invalid(
            format,
            format!(
                "{iterations} {} iterations for a {}-byte key are more work than the limit \
                 of {} iteration-blocks (one login must not hold the broker for long)",
                algorithm.name(),
                expected.len(),
                algorithm.max_work()
            ),
        ));
    }
    let mut derived = vec![0u8; expected.len()];
    algorithm.derive(password, salt, iterations, &mut derived);
    Ok(constant_time_eq(&derived, expected))
}

/// A new auth-plug style hash. The salt is 16 base64 characters used as literal text, as
/// auth-plug's `np` writes them, so auth-plug itself can still read the row.
pub fn generate_auth_plug(password: &[u8], algorithm: PbkdfAlgorithm, iterations: u32) -> String {
    let salt = STANDARD.encode(random_bytes::<12>());
    let mut key = vec![0u8; algorithm.block_len()];
    algorithm.derive(password, salt.as_bytes(), iterations, &mut key);
    format!(
        "PBKDF2${}${iterations}${salt}${}",
        algorithm.name(),
        STANDARD.encode(key)
    )
}

/// A new mosquitto_passwd 2.0 style hash (`$7$`), 12-byte salt, 64-byte key.
pub fn generate_mosquitto(password: &[u8], iterations: u32) -> String {
    let salt = random_bytes::<12>();
    let mut key = [0u8; 64];
    PbkdfAlgorithm::Sha512.derive(password, &salt, iterations, &mut key);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(key)
    )
}

/// A new Django style hash (`pbkdf2_sha256`).
pub fn generate_django(password: &[u8], iterations: u32) -> String {
    // Django salts are alphanumeric text; base64 minus its symbols keeps that true.
    let salt: String = STANDARD
        .encode(random_bytes::<18>())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let mut key = [0u8; 32];
    PbkdfAlgorithm::Sha256.derive(password, salt.as_bytes(), iterations, &mut key);
    format!("pbkdf2_sha256${iterations}${salt}${}", STANDARD.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors made outside this crate, each with the command that made it:
    //
    // auth-plug `np` style (salt used as literal text, 24-byte key, as np writes):
    //   python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac(
    //     'sha256',b'secret',b'XJWTUtSDSMKtwqkZ',901,24)).decode())"
    const AUTH_PLUG: &str = "PBKDF2$sha256$901$XJWTUtSDSMKtwqkZ$4BFBbpRRlpzGyoiwYxTJjn2Vq6vbm1ky";
    // go-auth with hasher_salt_encoding base64 (salt decoded before use):
    //   python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac(
    //     'sha512',b'secret',base64.b64decode('c2FsdHlzYWx0'),1000,32)).decode())"
    const GO_AUTH_B64: &str =
        "PBKDF2$sha512$1000$c2FsdHlzYWx0$bPM86XHmloZrmDxX4Lp4XgasTZcBGszSJTEQahAitDY=";
    // Django: python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac(
    //     'sha256',b'l\xc3\xa8tmein','seasalt'.encode(),260000)).decode())"
    const DJANGO: &str =
        "pbkdf2_sha256$260000$seasalt$YlZ2Vggtqdc61YjArZuoApoBh9JNGYoDRBUGu6tcJQo=";
    // mosquitto_passwd -b FILE alice secret   (Mosquitto 2.0.11)
    const MOSQUITTO_7: &str = "$7$101$1KWdkiAgMyqFgpuQ$kiLqujMSISYq/30yV4cqdVtFMcdeQdvDPk2iJc+875JmT+ro4MTRFVUamzV6n1oKKsovQv4OdheAQKAmxXgZbg==";

    #[test]
    fn auth_plug_literal_salt() {
        assert_eq!(
            verify_auth_plug(AUTH_PLUG, b"secret", SaltEncoding::Literal),
            Ok(true)
        );
        assert_eq!(
            verify_auth_plug(AUTH_PLUG, b"Secret", SaltEncoding::Literal),
            Ok(false)
        );
        // Read with the other encoding it is simply a different salt: refused.
        assert_eq!(
            verify_auth_plug(AUTH_PLUG, b"secret", SaltEncoding::Base64),
            Ok(false)
        );
    }

    #[test]
    fn go_auth_base64_salt() {
        assert_eq!(
            verify_auth_plug(GO_AUTH_B64, b"secret", SaltEncoding::Base64),
            Ok(true)
        );
        assert_eq!(
            verify_auth_plug(GO_AUTH_B64, b"secret", SaltEncoding::Literal),
            Ok(false)
        );
    }

    #[test]
    fn django_vector() {
        assert_eq!(verify_django(DJANGO, "lètmein".as_bytes()), Ok(true));
        assert_eq!(verify_django(DJANGO, b"letmein"), Ok(false));
    }

    #[test]
    fn mosquitto_passwd_vector() {
        assert_eq!(verify_mosquitto(MOSQUITTO_7, b"secret"), Ok(true));
        assert_eq!(verify_mosquitto(MOSQUITTO_7, b"secreT"), Ok(false));
    }

    #[test]
    fn hostile_rows_are_refused_not_computed() {
        let cases = [
            "PBKDF2$sha256$0$salt$CZjoYcS8C+ShBtDuUSEJq7jjPNtmQzrS",
            "PBKDF2$sha256$4294967295$salt$CZjoYcS8C+ShBtDuUSEJq7jjPNtmQzrS",
            "PBKDF2$sha256$901$salt$",
            "PBKDF2$sha256$901$salt$!!!",
            "PBKDF2$md4$901$salt$CZjoYcS8C+ShBtDuUSEJq7jjPNtmQzrS",
            "PBKDF2$sha256$901$salt",
            "PBKDF2$sha256$-1$salt$CZjoYcS8C+ShBtDuUSEJq7jjPNtmQzrS",
        ];
        for stored in cases {
            assert!(
                matches!(
                    verify_auth_plug(stored, b"", SaltEncoding::Literal),
                    Err(HashError::Invalid(..))
                ),
                "{stored}"
            );
        }
    }

    #[test]
    fn work_is_capped_by_iterations_times_blocks() {
        use std::time::{Duration, Instant};
        // A 64-byte key from SHA-256 is two blocks: 800,000 iterations are 1,600,000 of
        // work, over the SHA-256 cap of 1,500,000; 32 bytes (one block) are not.
        let two_blocks = format!("PBKDF2$sha256$800000$salt${}", STANDARD.encode([0u8; 64]));
        let one_block = format!("PBKDF2$sha256$800000$salt${}", STANDARD.encode([0u8; 32]));
        let sha512 = format!("PBKDF2$sha512$400001$salt${}", STANDARD.encode([0u8; 64]));
        let mosquitto = format!(
            "$7$400001${}${}",
            STANDARD.encode([1u8; 12]),
            STANDARD.encode([0u8; 64])
        );
        let django = format!("pbkdf2_sha256$1500001$salt${}", STANDARD.encode([0u8; 32]));
        let started = Instant::now();
        for refused in [
            verify_auth_plug(&two_blocks, b"pw", SaltEncoding::Literal),
            verify_auth_plug(&sha512, b"pw", SaltEncoding::Literal),
            verify_mosquitto(&mosquitto, b"pw"),
            verify_django(&django, b"pw"),
        ] {
            assert!(
                matches!(refused, Err(HashError::Invalid(..))),
                "{refused:?}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "refused before computing"
        );
        assert_eq!(
            verify_auth_plug(&one_block, b"pw", SaltEncoding::Literal),
            Ok(false)
        );
        assert!(PbkdfAlgorithm::Sha512.affordable(400_000, 64));
        assert!(!PbkdfAlgorithm::Sha512.affordable(200_001, 128));
        assert!(PbkdfAlgorithm::Sha1.affordable(2_000_000, 20));
        assert!(!PbkdfAlgorithm::Sha1.affordable(2_000_000, 21));
    }

    #[test]
    fn generated_hashes_verify() {
        let h = generate_auth_plug(b"pw", PbkdfAlgorithm::Sha512, 1000);
        assert!(h.starts_with("PBKDF2$sha512$1000$"));
        assert_eq!(verify_auth_plug(&h, b"pw", SaltEncoding::Literal), Ok(true));
        assert_eq!(
            verify_auth_plug(&h, b"px", SaltEncoding::Literal),
            Ok(false)
        );
        let h = generate_mosquitto(b"pw", 101);
        assert_eq!(verify_mosquitto(&h, b"pw"), Ok(true));
        let h = generate_django(b"pw", 1000);
        assert_eq!(verify_django(&h, b"pw"), Ok(true));
    }
}
