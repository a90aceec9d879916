//! TLS to MySQL as libmysqlclient sets it up, through the mysql crate's OpenSSL connector
//! (native-tls): the CA file and the CA directory (`ssl_ca`, `ssl_capath`) become one PEM
//! bundle of trusted certificates, and the client certificate and key (PEM, as auth-plug
//! and go-auth take them) become the PKCS#12 file native-tls reads. Both are written to a
//! private directory (mode 0700, files 0600) that lives as long as the pool, and are checked
//! at start, so a bad file stops the broker naming its option.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// MySQL over TLS (`ssl_*`): the files as the options name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca: Option<PathBuf>,
    /// A directory of CA certificates (`ssl_capath`), trusted with `ca`.
    pub capath: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The files the connector reads; the private directory goes with it.
#[derive(Debug)]
pub struct TlsFiles {
    dir: Option<PathBuf>,
    /// Trusted certificates (PEM); `None`: the system's.
    pub roots: Option<PathBuf>,
    /// PKCS#12 file and its password.
    pub identity: Option<(PathBuf, String)>,
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The certificates of a PEM file (none when it holds none).
fn certificates(path: &Path) -> Result<Vec<openssl::x509::X509>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    openssl::x509::X509::stack_from_pem(&bytes)
        .map_err(|e| format!("'{}' is not PEM certificates: {e}", path.display()))
}

/// The certificates in a CA directory (`ssl_capath`): every file that holds PEM
/// certificates (the `c_rehash` links included, each certificate taken once).
fn directory_certificates(dir: &Path) -> Result<Vec<openssl::x509::X509>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read '{}': {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut found: Vec<openssl::x509::X509> = Vec::new();
    // The same certificate under several names (the hash links): taken once, by its DER.
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        // Other files may live there (a README, keys): only certificates count.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for cert in openssl::x509::X509::stack_from_pem(&bytes).unwrap_or_default() {
            if seen.insert(cert.to_der().unwrap_or_default()) {
                found.push(cert);
            }
        }
    }
    Ok(found)
}

fn private_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    Ok(path)
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(buf))
}

/// Prepares the files for `config`; `Err` names the option at fault.
pub fn prepare(config: &TlsConfig) -> Result<TlsFiles, (&'static str, String)> {
    let mut roots = Vec::new();
    if let Some(ca) = &config.ca {
        let found = certificates(ca).map_err(|e| ("ssl_ca", e))?;
        if found.is_empty() {
            return Err(("ssl_ca", format!("'{}' holds no certificate", ca.display())));
        }
        roots.extend(found);
    }
    if let Some(capath) = &config.capath {
        let found = directory_certificates(capath).map_err(|e| ("ssl_capath", e))?;
        if found.is_empty() {
            return Err((
                "ssl_capath",
                format!("'{}' holds no PEM certificate", capath.display()),
            ));
        }
        roots.extend(found);
    }
    let identity = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(|e| ("ssl_cert", e))?;
            let mut chain = chain.into_iter();
            let leaf = chain.next().ok_or_else(|| {
                (
                    "ssl_cert",
                    format!("'{}' holds no certificate", cert.display()),
                )
            })?;
            let key_bytes = std::fs::read(key)
                .map_err(|e| ("ssl_key", format!("cannot read '{}': {e}", key.display())))?;
            let pkey = openssl::pkey::PKey::private_key_from_pem(&key_bytes).map_err(|e| {
                (
                    "ssl_key",
                    format!("'{}' is not a PEM private key: {e}", key.display()),
                )
            })?;
            if !leaf
                .public_key()
                .is_ok_and(|public| public.public_eq(&pkey))
            {
                return Err((
                    "ssl_key",
                    format!(
                        "'{}' is not the key of the certificate in '{}'",
                        key.display(),
                        cert.display()
                    ),
                ));
            }
            Some((leaf, pkey, chain.collect::<Vec<_>>()))
        }
        _ => None,
    };
    if roots.is_empty() && identity.is_none() {
        return Ok(TlsFiles {
            dir: None,
            roots: None,
            identity: None,
        });
    }
    let dir = std::env::temp_dir().join(format!(
        "chat-auth-tls-{}-{}",
        std::process::id(),
        random_hex(8).map_err(|e| ("ssl_enabled", e))?
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            (
                "ssl_enabled",
                format!("cannot make '{}': {e}", dir.display()),
            )
        })?;
    let mut files = TlsFiles {
        dir: Some(dir.clone()),
        roots: None,
        identity: None,
    };
    if !roots.is_empty() {
        let mut pem = Vec::new();
        for cert in &roots {
            pem.extend(cert.to_pem().map_err(|e| ("ssl_ca", e.to_string()))?);
        }
        files.roots = Some(private_file(&dir, "roots.pem", &pem).map_err(|e| ("ssl_ca", e))?);
    }
    if let Some((leaf, pkey, chain)) = identity {
        let password = random_hex(16).map_err(|e| ("ssl_cert", e))?;
        let mut extra = openssl::stack::Stack::new().map_err(|e| ("ssl_cert", e.to_string()))?;
        for cert in chain {
            extra.push(cert).map_err(|e| ("ssl_cert", e.to_string()))?;
        }
        let pkcs12 = openssl::pkcs12::Pkcs12::builder()
            .name("chat-auth")
            .pkey(&pkey)
            .cert(&leaf)
            .ca(extra)
            .build2(&password)
            .and_then(|p| p.to_der())
            .map_err(|e| {
                (
                    "ssl_cert",
                    format!("cannot pack the certificate and key: {e}"),
                )
            })?;
        let path = private_file(&dir, "client.p12", &pkcs12).map_err(|e| ("ssl_cert", e))?;
        files.identity = Some((path, password));
    }
    Ok(files)
}
