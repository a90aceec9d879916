//! TLS to PostgreSQL as libpq's `sslmode` does it, with OpenSSL (`postgres-openssl`):
//! `disable` (none), `prefer` (TLS when the server offers it, unverified, else plain: libpq's
//! default), `require` (TLS, unverified; verified as `verify-ca` when a root certificate is
//! given, as libpq does), `verify-ca` (the chain), `verify-full` (the chain and the host
//! name). A client certificate and key are sent when given.

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static [&'static str] =
        &["disable", "prefer", "require", "verify-ca", "verify-full"];

    pub fn from_name(name: &str) -> Option<SslMode> {
        Some(match name {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsConfig {
    pub mode: SslMode,
    /// `sslrootcert`: the CAs to trust; the system's roots without it.
    pub rootcert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The connector for `config` (`None`: `disable`). An `Err` names the option whose file is
/// unusable.
pub fn connector(config: &PgTlsConfig) -> Result<Option<MakeTlsConnector>, (&'static str, String)> {
    if config.mode == SslMode::Disable {
        return Ok(None);
    }
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| ("pg_sslmode", format!("OpenSSL: {e}")))?;
    if let Some(root) = &config.rootcert {
        builder
            .set_ca_file(root)
            .map_err(|e| ("pg_sslrootcert", format!("'{}': {e}", root.display())))?;
    }
    if let Some(cert) = &config.cert {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| ("pg_sslcert", format!("'{}': {e}", cert.display())))?;
    }
    if let Some(key) = &config.key {
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| ("pg_sslkey", format!("'{}': {e}", key.display())))?;
        builder.check_private_key().map_err(|e| {
            (
                "pg_sslkey",
                format!("'{}' is not the key of pg_sslcert: {e}", key.display()),
            )
        })?;
    }
    let verify = match config.mode {
        SslMode::Prefer => false,
        SslMode::Require => config.rootcert.is_some(),
        _ => true,
    };
    if !verify {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if config.mode != SslMode::VerifyFull {
        // The chain (when verified) but not the host name.
        connector.set_callback(|connect, _| {
            connect.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Some(connector))
}
