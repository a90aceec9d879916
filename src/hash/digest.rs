//! Unsalted or column-salted hex digests as MySQL's `MD5()`, `SHA1()` and `SHA2()` write
//! them, and mosquitto_passwd's `$6$` (SHA-512 of password then salt).

use super::{
    DigestAlgorithm, Format, HashError, SaltPosition, constant_time_eq, decode_base64, decode_hex,
};
use sha2::Digest;

fn digest(algorithm: DigestAlgorithm, parts: [&[u8]; 2]) -> Vec<u8> {
    fn run<D: Digest>(parts: [&[u8]; 2]) -> Vec<u8> {
        let mut hasher = D::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().to_vec()
    }
    match algorithm {
        DigestAlgorithm::Md5 => run::<md5::Md5>(parts),
        DigestAlgorithm::Sha1 => run::<sha1::Sha1>(parts),
        DigestAlgorithm::Sha224 => run::<sha2::Sha224>(parts),
        DigestAlgorithm::Sha256 => run::<sha2::Sha256>(parts),
        DigestAlgorithm::Sha384 => run::<sha2::Sha384>(parts),
        DigestAlgorithm::Sha512 => run::<sha2::Sha512>(parts),
    }
}

/// A hex digest of the password, with the row's `salt` column before it (or after it,
/// with `password_salt_position suffix`) when the row has one.
pub fn verify_hex(
    algorithm: DigestAlgorithm,
    stored: &str,
    salt: Option<&[u8]>,
    password: &[u8],
    position: SaltPosition,
) -> Result<bool, HashError> {
    let expected = decode_hex(Format::Hex(algorithm), stored, algorithm.output_len())?;
    let salt = salt.unwrap_or_default();
    let parts = match position {
        SaltPosition::Prefix => [salt, password],
        SaltPosition::Suffix => [password, salt],
    };
    Ok(constant_time_eq(&digest(algorithm, parts), &expected))
}

/// `$6$BASE64SALT$BASE64HASH`: SHA-512(password || salt).
pub fn verify_mosquitto_sha512(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    const F: Format = Format::MosquittoSha512;
    let rest = stored.strip_prefix("$6$").ok_or(HashError::Unrecognised)?;
    let (salt, hash) = rest.split_once('$').ok_or(HashError::Unrecognised)?;
    let salt = decode_base64(F, "salt", salt)?;
    // glibc's sha512-crypt also starts with $6$, but its hash is not base64 of 64 bytes.
    let expected = match decode_base64(F, "hash", hash) {
        Ok(bytes) if bytes.len() == 64 => bytes,
        _ => return Err(HashError::Unrecognised),
    };
    Ok(constant_time_eq(
        &digest(DigestAlgorithm::Sha512, [password, &salt]),
        &expected,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // From MariaDB 10.11: SELECT MD5('secret'), SHA1('secret'), SHA2('secret',224),
    // SHA2('secret',256), SHA2('secret',384), SHA2('secret',512),
    // SHA2(CONCAT('NaCl','secret'),256), SHA2(CONCAT('secret','NaCl'),256);
    const VECTORS: &[(DigestAlgorithm, &str)] = &[
        (DigestAlgorithm::Md5, "5ebe2294ecd0e0f08eab7690d2a6ee69"),
        (
            DigestAlgorithm::Sha1,
            "e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4",
        ),
        (
            DigestAlgorithm::Sha224,
            "95c7fbca92ac5083afda62a564a3d014fc3b72c9140e3cb99ea6bf12",
        ),
        (
            DigestAlgorithm::Sha256,
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
        ),
        (
            DigestAlgorithm::Sha384,
            "58a775ba4112be3005ae4407ce757d88fda71d40497bb8026ecac54d4e3ffc7232ce8de3ab5acb30ae39760fee7c53ed",
        ),
        (
            DigestAlgorithm::Sha512,
            "bd2b1aaf7ef4f09be9f52ce2d8d599674d81aa9d6a4421696dc4d93dd0619d682ce56b4d64a9ef097761ced99e0f67265b5f76085e5b0ee7ca4696b2ad6fe2b2",
        ),
    ];
    const SALT_PREFIX_SHA256: &str =
        "1ae64ea46f1b1656b372cb1fc25e17402040909e093a7640a11f2039b073a3d5";
    const SALT_SUFFIX_SHA256: &str =
        "32204a58f275250b427e7f48c8e095ae32156838ef8eaed0109db7dfc6cbcba9";

    #[test]
    fn mariadb_digests() {
        for (alg, hex) in VECTORS {
            assert_eq!(
                verify_hex(*alg, hex, None, b"secret", SaltPosition::Prefix),
                Ok(true),
                "{alg:?}"
            );
            let upper = hex.to_uppercase();
            assert_eq!(
                verify_hex(*alg, &upper, None, b"secret", SaltPosition::Prefix),
                Ok(true),
                "{alg:?} upper case"
            );
            assert_eq!(
                verify_hex(*alg, hex, None, b"secrets", SaltPosition::Prefix),
                Ok(false)
            );
        }
    }

    #[test]
    fn mariadb_salted_digests() {
        let (salt, pw) = (Some(&b"NaCl"[..]), &b"secret"[..]);
        let pre = SALT_PREFIX_SHA256;
        let suf = SALT_SUFFIX_SHA256;
        let alg = DigestAlgorithm::Sha256;
        assert_eq!(
            verify_hex(alg, pre, salt, pw, SaltPosition::Prefix),
            Ok(true)
        );
        assert_eq!(
            verify_hex(alg, pre, salt, pw, SaltPosition::Suffix),
            Ok(false)
        );
        assert_eq!(
            verify_hex(alg, suf, salt, pw, SaltPosition::Suffix),
            Ok(true)
        );
        assert_eq!(
            verify_hex(alg, suf, None, pw, SaltPosition::Suffix),
            Ok(false)
        );
    }

    #[test]
    fn mosquitto_passwd_sha512() {
        // mosquitto_passwd -H sha512 -b FILE bob secret   (Mosquitto 2.0.11)
        let stored = "$6$dIpNXrbC4DCbQn23$oNAvmXgXuWfqhz8eH28CFVCYu6HOL6F/t+OGgYhteYBZ3hOuHkl9jA90HFhrhiM4nMxYveGja4INzlJ+4pytbw==";
        assert_eq!(verify_mosquitto_sha512(stored, b"secret"), Ok(true));
        assert_eq!(verify_mosquitto_sha512(stored, b"secret "), Ok(false));
    }

    #[test]
    fn sha512_crypt_is_not_mistaken_for_mosquitto() {
        // glibc crypt(3): mkpasswd -m sha-512 secret saltsalt
        let stored = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        assert_eq!(
            verify_mosquitto_sha512(stored, b"secret"),
            Err(HashError::Unrecognised)
        );
    }
}
