//! The user source of the harnesses without MySQL (`tests/memory.rs`, `examples/hotpath.rs`):
//! every user's row is MariaDB's `PASSWORD('secret')`, user id = the digits of the name.

use chat_auth::backend::{BackendError, BackendKind, Lookup, UserRecord, UserSource};

pub struct Users;

impl UserSource for Users {
    fn kind(&self) -> BackendKind {
        BackendKind::Mysql
    }
    fn lookup(&self, username: &str, _: &[u8], _: &[u8]) -> Result<Lookup, BackendError> {
        Ok(Lookup::Row(UserRecord {
            hash: Some(b"*14E65567ABDB5135D0CFD9A70B3032C179A49EE7".to_vec()),
            salt: None,
            user_id: Some(username.trim_start_matches('u').to_string()),
            username: Some(username.to_string()),
            ..Default::default()
        }))
    }
    fn superquery(&self, _: &str) -> Option<Result<bool, BackendError>> {
        None
    }
    fn fetch_certificate_user(&self, _: &str) -> Result<Option<UserRecord>, BackendError> {
        Ok(None)
    }
}
