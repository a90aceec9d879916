//! MySQL's own password functions: `PASSWORD()` (4.1+) and the pre-4.1 `OLD_PASSWORD()`.

use super::{Format, HashError, constant_time_eq, decode_hex};
use sha1::{Digest, Sha1};

/// `*` followed by the hex of SHA1(SHA1(password)).
pub fn verify_password(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    let hex = stored.strip_prefix('*').ok_or(HashError::Unrecognised)?;
    let expected = decode_hex(Format::MysqlNative, hex, 20)?;
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    Ok(constant_time_eq(&stage2, &expected))
}

/// The pre-4.1 scramble: 16 hex digits, two 31-bit words.
pub fn verify_old_password(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    let expected = decode_hex(Format::MysqlOld, stored, 8)?;
    Ok(constant_time_eq(&old_password(password), &expected))
}

/// MySQL's `hash_password()`. It skips spaces and tabs, and only low bits ever reach the
/// result, so 32-bit wrapping arithmetic gives the server's answer.
fn old_password(password: &[u8]) -> [u8; 8] {
    let mut nr: u32 = 1_345_345_333;
    let mut add: u32 = 7;
    let mut nr2: u32 = 0x1234_5671;
    for &byte in password.iter().filter(|b| **b != b' ' && **b != b'\t') {
        let tmp = u32::from(byte);
        nr ^= ((nr & 63).wrapping_add(add))
            .wrapping_mul(tmp)
            .wrapping_add(nr << 8);
        nr2 = nr2.wrapping_add((nr2 << 8) ^ nr);
        add = add.wrapping_add(tmp);
    }
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(nr & 0x7fff_ffff).to_be_bytes());
    out[4..].copy_from_slice(&(nr2 & 0x7fff_ffff).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // MariaDB 10.11: SELECT PASSWORD('secret'), PASSWORD(CONVERT(X'c3a9' USING utf8mb4)),
    //                       OLD_PASSWORD('secret'), OLD_PASSWORD('pass word');
    #[test]
    fn mariadb_password_function() {
        let stored = "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7";
        assert_eq!(verify_password(stored, b"secret"), Ok(true));
        assert_eq!(verify_password(&stored.to_lowercase(), b"secret"), Ok(true));
        assert_eq!(verify_password(stored, b"Secret"), Ok(false));
        let stored = "*55C78B637516A8567FEE3A4884177DB8D4F6A7F3";
        assert_eq!(verify_password(stored, "é".as_bytes()), Ok(true));
    }

    #[test]
    fn mariadb_old_password_function() {
        assert_eq!(verify_old_password("428567f408994404", b"secret"), Ok(true));
        assert_eq!(
            verify_old_password("428567f408994404", b"secreT"),
            Ok(false)
        );
        // The old scramble ignores spaces: MySQL's own weakness, reproduced faithfully.
        assert_eq!(
            verify_old_password("5d2e19393cc5ef67", b"pass word"),
            Ok(true)
        );
        assert_eq!(
            verify_old_password("5d2e19393cc5ef67", b"password"),
            Ok(true)
        );
    }
}
