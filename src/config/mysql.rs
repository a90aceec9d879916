//! The MySQL backend's options: the server, TLS to it, the user queries.

use super::given::{Given, translate};
use super::{ConfigError, err};
use crate::backend::mysql::MysqlConfig;
use crate::db::DbConfig;
use crate::query::USER_BINDINGS;
use crate::tls::TlsConfig;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn mysql_config(
    given: &Given<'_>,
    warnings: &mut Vec<String>,
) -> Result<MysqlConfig, ConfigError> {
    let userquery = given.get("userquery").ok_or_else(|| {
        err(
            "userquery",
            "is required (the query that returns the password hash)",
        )
    })?;
    let userquery = translate("userquery", userquery, USER_BINDINGS)?;
    let superquery = given
        .get("superquery")
        .map(|q| translate("superquery", q, USER_BINDINGS))
        .transpose()?;
    let cert_userquery = given
        .get("cert_userquery")
        .map(|q| translate("cert_userquery", q, USER_BINDINGS))
        .transpose()?;
    let ssl_enabled = given.flag_given("ssl_enabled")?;
    let tls_files = [
        given.get("ssl_ca"),
        given.get("ssl_cert"),
        given.get("ssl_key"),
    ];
    let tls = match ssl_enabled {
        Some(true) => {
            for (name, path) in ["ssl_ca", "ssl_cert", "ssl_key"].iter().zip(tls_files) {
                if let Some(path) = path {
                    if !std::path::Path::new(path).is_file() {
                        return Err(err(name, format!("file '{path}' does not exist")));
                    }
                }
            }
            if tls_files[1].is_some() != tls_files[2].is_some() {
                return Err(err(
                    if tls_files[1].is_some() {
                        "ssl_key"
                    } else {
                        "ssl_cert"
                    },
                    "ssl_cert and ssl_key go together",
                ));
            }
            if let Some(dir) = given.get("ssl_capath") {
                if !std::path::Path::new(dir).is_dir() {
                    return Err(err(
                        "ssl_capath",
                        format!("directory '{dir}' does not exist"),
                    ));
                }
            }
            if let Some(ciphers) = given.get("ssl_cipher") {
                // The mysql crate's OpenSSL connector (native-tls) takes no cipher list.
                warnings.push(format!(
                    "auth_opt_ssl_cipher '{ciphers}' is not applied: chat-auth's MySQL TLS uses \
                     OpenSSL's default suites (TLS 1.2+, the system's security level); restrict \
                     them on the server (ssl_cipher / tls_version in MariaDB) instead"
                ));
            }
            Some(TlsConfig {
                ca: tls_files[0].map(PathBuf::from),
                capath: given.get("ssl_capath").map(PathBuf::from),
                cert: tls_files[1].map(PathBuf::from),
                key: tls_files[2].map(PathBuf::from),
            })
        }
        _ => {
            if tls_files.iter().any(Option::is_some)
                || given.get("ssl_capath").is_some()
                || given.get("ssl_cipher").is_some()
            {
                warnings.push(
                    "auth_opt_ssl_ca/ssl_capath/ssl_cert/ssl_key/ssl_cipher are set but \
                     auth_opt_ssl_enabled is not true: connecting to MySQL without TLS"
                        .into(),
                );
            }
            None
        }
    };

    let db = DbConfig {
        host: given.value("host").unwrap_or_default().to_string(),
        port: given.whole::<u16>("port")?,
        socket: given.get("socket").map(PathBuf::from),
        dbname: given.get("dbname").map(str::to_string),
        user: given.get("user").map(str::to_string),
        // Not trimmed, and may be empty: a password is what it is.
        pass: given.raw("pass").map(str::to_string),
        tls,
        connect_timeout: Duration::from_millis(given.whole::<u64>("connect_timeout_ms")?),
        query_timeout: Duration::from_millis(given.whole::<u64>("query_timeout_ms")?),
        pool_size: given.whole::<usize>("pool_size")?,
    };

    Ok(MysqlConfig {
        db,
        userquery,
        superquery,
        cert_userquery,
        rules_wait: Duration::from_millis(given.whole::<u64>("rules_wait_ms")?),
    })
}
