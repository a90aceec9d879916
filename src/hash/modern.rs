//! bcrypt (`$2a$`, `$2b$`, `$2y$`, PHP's `password_hash`) and argon2 PHC strings.

use super::{
    Format, HashError, MAX_ARGON2_MEMORY_KIB, MAX_ARGON2_WORK_KIB_PASSES, MAX_BCRYPT_COST,
    random_bytes,
};

pub fn verify_bcrypt(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    const F: Format = Format::Bcrypt;
    // `$2y$10$` + 53 characters of salt and hash.
    let cost: u32 = stored
        .get(4..6)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HashError::Invalid(F, "no cost field".into()))?;
    if cost > MAX_BCRYPT_COST {
        return Err(HashError::Invalid(
            F,
            format!("cost {cost} is above the limit of {MAX_BCRYPT_COST}"),
        ));
    }
    bcrypt::verify(password, stored).map_err(|e| HashError::Invalid(F, e.to_string()))
}

pub fn verify_argon2(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    const F: Format = Format::Argon2;
    let hash = PasswordHash::new(stored).map_err(|e| HashError::Invalid(F, e.to_string()))?;
    let params =
        argon2::Params::try_from(&hash).map_err(|e| HashError::Invalid(F, e.to_string()))?;
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB || work > MAX_ARGON2_WORK_KIB_PASSES {
        return Err(HashError::Invalid(
            F,
            format!(
                "m={} t={} is above the limit of m={MAX_ARGON2_MEMORY_KIB} KiB and m*t={}",
                params.m_cost(),
                params.t_cost(),
                MAX_ARGON2_WORK_KIB_PASSES
            ),
        ));
    }
    match argon2::Argon2::default().verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(HashError::Invalid(F, e.to_string())),
    }
}

pub fn generate_bcrypt(password: &[u8], cost: u32) -> Result<String, String> {
    bcrypt::hash_with_salt(password, cost, random_bytes::<16>())
        .map(|parts| parts.format_for_version(bcrypt::Version::TwoB))
        .map_err(|e| e.to_string())
}

pub fn generate_argon2id(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, phc::PasswordHash};
    let hash: PasswordHash = argon2::Argon2::default()
        .hash_password_with_salt(password, &random_bytes::<16>())
        .map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_password_hash_vector() {
        // The example from PHP's manual for password_verify():
        // password_hash("rasmuslerdorf", PASSWORD_DEFAULT)
        let stored = "$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a";
        assert_eq!(verify_bcrypt(stored, b"rasmuslerdorf"), Ok(true));
        assert_eq!(verify_bcrypt(stored, b"rasmuslerdorF"), Ok(false));
    }

    #[test]
    fn python_bcrypt_vector() {
        // python3 -c "import bcrypt; print(bcrypt.hashpw(b'secret',
        //   b'\$2b\$06\$abcdefghijklmnopqrstuu'))"   (Debian python3-bcrypt)
        let stored = "$2b$06$abcdefghijklmnopqrstuuxLa0AkDDSrQ9VwNnETzOsObiucpMYgC";
        assert_eq!(verify_bcrypt(stored, b"secret"), Ok(true));
        assert_eq!(verify_bcrypt(stored, b"secret!"), Ok(false));
    }

    #[test]
    fn argon2_cffi_vector() {
        // python3 -c "import argon2; print(argon2.PasswordHasher(time_cost=2,
        //   memory_cost=1024, parallelism=1).hash('secret'))"   (Debian python3-argon2)
        let stored = "$argon2id$v=19$m=1024,t=2,p=1$Yg9nl6NLaWZeJm6mD/4EwA$HjD2XdriDtJBL5NzP/rI9w";
        assert_eq!(verify_argon2(stored, b"secret"), Ok(true));
        assert_eq!(verify_argon2(stored, b"Secret"), Ok(false));
    }

    #[test]
    fn costly_or_broken_rows_are_refused() {
        let too_costly = "$2y$31$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a";
        assert!(matches!(
            verify_bcrypt(too_costly, b"x"),
            Err(HashError::Invalid(..))
        ));
        assert!(matches!(
            verify_bcrypt("$2y$", b"x"),
            Err(HashError::Invalid(..))
        ));
        assert!(matches!(
            verify_bcrypt("$2y$10$short", b"x"),
            Err(HashError::Invalid(..))
        ));
        // Cost 13 is twice cost 12, the cap: refused before any work.
        let cost_13 = "$2y$13$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a";
        assert!(matches!(
            verify_bcrypt(cost_13, b"x"),
            Err(HashError::Invalid(..))
        ));
        // Too much memory; memory times passes over the cap (128 MiB x 4).
        for huge in [
            "$argon2id$v=19$m=4194304,t=2,p=1$Yg9nl6NLaWZeJm6mD/4EwA$HjD2XdriDtJBL5NzP/rI9w",
            "$argon2id$v=19$m=131072,t=4,p=1$Yg9nl6NLaWZeJm6mD/4EwA$HjD2XdriDtJBL5NzP/rI9w",
        ] {
            assert!(
                matches!(verify_argon2(huge, b"x"), Err(HashError::Invalid(..))),
                "{huge}"
            );
        }
        // PHP's default (64 MiB x 4) is within it.
        let php = "$argon2id$v=19$m=65536,t=4,p=1$Yg9nl6NLaWZeJm6mD/4EwA$HjD2XdriDtJBL5NzP/rI9w";
        assert_eq!(verify_argon2(php, b"x"), Ok(false));
        assert!(matches!(
            verify_argon2("$argon2id$garbage", b"x"),
            Err(HashError::Invalid(..))
        ));
    }

    #[test]
    fn generated_hashes_verify() {
        let h = generate_bcrypt(b"pw", 4).unwrap();
        assert!(h.starts_with("$2b$04$"));
        assert_eq!(verify_bcrypt(&h, b"pw"), Ok(true));
        let h = generate_argon2id(b"pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify_argon2(&h, b"pw"), Ok(true));
        assert_eq!(verify_argon2(&h, b"pW"), Ok(false));
    }
}
