//! `auth_opt_*` / `plugin_opt_*` options (the broker strips the prefix) into one validated
//! [`Config`]. Every error names the option it is about.

pub mod options;

use crate::acl::{AclConfig, ChatTopics};
use crate::auth::AuthConfig;
use crate::backend::BackendKind;
use crate::backend::http::{HttpConfig, ParamsMode, ResponseMode};
use crate::backend::mysql::MysqlConfig;
use crate::chat::ValidationConfig;
use crate::db::DbConfig;
use crate::envelope::RequestLimits;
use crate::hash::{Format, HashSettings, SaltEncoding, SaltPosition};
use crate::history::HistoryConfig;
use crate::query::{self, ACL_BINDINGS, Bindings, GROUP_BINDINGS, Query, USER_BINDINGS};
use crate::sessions::OfflineCaps;
use crate::store::StoreConfig;
use crate::throttle::ThrottleConfig;
use crate::tls::TlsConfig;
use options::{Kind, Part};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration error; the broker refuses to start with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub option: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The broker strips either prefix; name both so the user finds the line they wrote.
        write!(
            f,
            "auth_opt_{0} (plugin_opt_{0}): {1}",
            self.option, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(option: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        option: option.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `auth_opt_backends`, in the order they are asked.
    pub backends: Vec<BackendKind>,
    /// Set when `backends` names mysql.
    pub mysql: Option<MysqlConfig>,
    /// Set when `backends` names http.
    pub http: Option<HttpConfig>,
    /// The logins: superusers, bridge accounts, the credential cache, passwords, the throttle.
    pub auth: AuthConfig,
    pub acl: AclConfig,
    /// Chat payload validation and stamping; `None` when off (or chat rules off).
    pub validation: Option<ValidationConfig>,
    /// Message storage; `None` unless `persist_enabled`.
    pub persist: Option<StoreConfig>,
    /// Chat history over `$CONTROL/chat-history/v1`; `None` without storage or with
    /// `history_enabled false`.
    pub history: Option<HistoryConfig>,
    /// The largest `$CONTROL` requests read.
    pub requests: RequestLimits,
    pub log_level: log::LevelFilter,
    pub offline: OfflineCaps,
    /// Info lines for the start-up log (options of mosquitto-go-auth that change nothing).
    pub notes: Vec<String>,
    /// How often the figures go to `$SYS/broker/chat-auth/` (zero: never).
    pub sys_interval: Duration,
    /// Where the Prometheus endpoint listens (`host:port`); `None`: off.
    pub metrics_listen: Option<String>,
    /// Where persistent sessions are kept across restarts; `None`: not kept.
    pub session_file: Option<PathBuf>,
    /// `session_file` was given (a path, or `none`).
    session_file_given: bool,
}

/// The sessions file's name in the broker's persistence location (Mosquitto 2.1).
pub const SESSIONS_IN_PERSISTENCE: &str = "chat-auth-sessions.jsonl";

impl Config {
    /// Mosquitto 2.1 tells plugins its `persistence_location`, where they may keep their
    /// own files: without `session_file` and without storage the sessions file goes there,
    /// so persistent sessions keep their identity across a restart.
    pub fn use_persistence_location(&mut self, dir: &std::path::Path) {
        if !self.session_file_given && self.session_file.is_none() && dir.is_dir() {
            self.session_file = Some(dir.join(SESSIONS_IN_PERSISTENCE));
        }
    }
}

/// Options of auth-plug's other backends and of its features this plugin does not have:
/// accepted with a warning so an auth-plug config loads unchanged.
const FOREIGN_PREFIXES: &[&str] = &[
    "redis_",
    "mongo_",
    "jwt_",
    "ldap_",
    "sqlite_",
    "psk_",
    "files_",
    "cdb",
    "pg_",
    "postgres_",
    "memcached_",
    "grpc_",
    "js_",
    "plugin_",
];
const FOREIGN_KEYS: &[&str] = &[
    "dbpath",
    "mysql_opt_reconnect",
    "mysql_auto_connect",
    "anonusername",
    "acl_cachejitter",
    "auth_cachejitter",
    "password_file",
    "acl_file",
    "cache",
    "cache_type",
    "check_prefix",
    "prefixes",
    "disable_superuser",
];

/// How mosquitto-go-auth names its MySQL backend's options: a configuration holding one is
/// a go-auth configuration, read with go-auth's meanings (subscribe level 4, base64 salts,
/// chat rules off unless named).
const GO_AUTH_MYSQL_PREFIX: &str = "mysql_";

impl Config {
    /// Parses the broker's key/value options (later duplicates win, as in auth-plug) into
    /// the config and the warnings to log at start. Every option is in `options::OPTIONS`:
    /// mosquitto-go-auth's names are read as the options they stand for, and its options that
    /// change nothing here become info notes (`Config::notes`).
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(
        options: &[(K, V)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        let mut values: HashMap<&'static str, &str> = HashMap::new();
        let mut go_auth = false;
        for (key, value) in options {
            let key = key.as_ref();
            let value = value.as_ref();
            let Some(spec) = options::find(key) else {
                if FOREIGN_KEYS.contains(&key)
                    || FOREIGN_PREFIXES.iter().any(|p| key.starts_with(p))
                {
                    warnings.push(format!(
                        "auth_opt_{key} is not used by chat-auth (another auth-plug backend or \
                         feature); ignored"
                    ));
                } else if let Some(near) = options::OPTIONS
                    .iter()
                    .flat_map(|s| std::iter::once(&s.name).chain(s.aliases))
                    .find(|name| edit_distance(name, key) <= 2)
                {
                    return Err(err(
                        key,
                        format!("unknown option; did you mean auth_opt_{near}?"),
                    ));
                } else {
                    warnings.push(format!("auth_opt_{key} is not a chat-auth option; ignored"));
                }
                continue;
            };
            // go-auth's meanings (below) follow from its MySQL backend's own names, never
            // from a leftover option both plugins could hold (`hasher_*`, `log_dest`, ...)
            // nor from auth-plug's `mysql_opt_reconnect` (not in the table).
            go_auth |= key.starts_with(GO_AUTH_MYSQL_PREFIX);
            match spec.kind {
                Kind::Noted(instead) => notes.push(format!(
                    "auth_opt_{key} (mosquitto-go-auth) changes nothing here: {instead}"
                )),
                _ if spec.name == "mysql_sslmode" => match value.trim() {
                    "disable" | "false" => {}
                    "true" | "custom" => {
                        values.insert("ssl_enabled", "true");
                    }
                    other => {
                        return Err(err(
                            "mysql_sslmode",
                            format!(
                                "'{other}' is not supported: chat-auth always verifies the \
                                 server's certificate (use true or custom, with \
                                 auth_opt_mysql_sslrootcert)"
                            ),
                        ));
                    }
                },
                _ => {
                    values.insert(spec.name, value);
                }
            }
        }
        let given = &Given { values };

        let backends = backend_list(given.get("backends"))?;
        let uses_mysql = backends.contains(&BackendKind::Mysql);
        for (part, backend, name) in [
            (Part::Http, BackendKind::Http, "http"),
            (Part::Mysql, BackendKind::Mysql, "mysql"),
        ] {
            if !backends.contains(&backend) {
                for key in given.set_in(part) {
                    warnings.push(format!(
                        "auth_opt_{key} is not used: auth_opt_backends does not name {name}"
                    ));
                }
            }
        }
        let superusers = given
            .get("superusers")
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| err("superusers", format!("is not a valid pattern: {e}")))
            })
            .transpose()?;
        let bridge_users = given
            .get("bridge_users")
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| err("bridge_users", format!("is not a valid pattern: {e}")))
            })
            .transpose()?;
        let mysql = if uses_mysql {
            Some(mysql_config(given, &mut warnings)?)
        } else {
            None
        };
        let auth_cache = Duration::from_secs(given.whole::<u64>("auth_cacheseconds")?);

        // `auto` or one of `Format::NAMES` (a unit test holds the table to them).
        let forced = given.choice("password_format")?.and_then(Format::from_name);
        let salt_encoding = match given.choice("hasher_salt_encoding")? {
            // go-auth base64-decodes PBKDF2 salts unless told otherwise.
            None if go_auth => SaltEncoding::Base64,
            Some("base64") => SaltEncoding::Base64,
            _ => SaltEncoding::Literal,
        };
        let salt_position = match given.choice("password_salt_position")? {
            Some("suffix") => SaltPosition::Suffix,
            _ => SaltPosition::Prefix,
        };

        let quiet = given.flag_given("log_quiet")?;
        let log_level = match given.choice("log_level")? {
            Some("error") => log::LevelFilter::Error,
            Some("warning") => log::LevelFilter::Warn,
            Some("debug") => log::LevelFilter::Debug,
            Some(_) => log::LevelFilter::Info,
            None if quiet == Some(true) => log::LevelFilter::Warn,
            None => log::LevelFilter::Info,
        };

        let acl = acl_config(given, &mut warnings, go_auth, uses_mysql)?;
        let validate = given.flag("chat_validate")?;
        let validation = (acl.chat.is_some() && validate)
            .then(|| -> Result<ValidationConfig, ConfigError> {
                Ok(ValidationConfig {
                    max_content_bytes: given.whole::<usize>("chat_max_content_bytes")?,
                    dedup: Duration::from_secs(given.whole::<u64>("chat_dedup_seconds")?),
                })
            })
            .transpose()?;
        let persist = persist_config(given, validation.is_some())?;
        let history = (persist.is_some() && given.flag("history_enabled")?)
            .then(|| -> Result<HistoryConfig, ConfigError> {
                Ok(HistoryConfig {
                    connections: given.whole::<usize>("history_connections")?,
                    in_flight: given.whole::<u32>("history_client_in_flight")?,
                    per_second: given.whole::<u32>("history_client_per_second")?,
                    max_response_bytes: given.whole::<usize>("history_max_response_kb")? * 1024,
                })
            })
            .transpose()?;

        let requests = RequestLimits {
            control: given.whole::<usize>("control_max_request_kb")? * 1024,
            history: given.whole::<usize>("history_max_request_kb")? * 1024,
        };
        let throttle = ThrottleConfig {
            user_failures: given.whole::<u32>("login_throttle_failures")?,
            address_failures: given.whole::<u32>("login_throttle_address_failures")?,
            max: Duration::from_secs(given.whole::<u64>("login_throttle_max_seconds")?),
            budget_percent: given.whole::<u32>("login_throttle_budget_percent")?,
            known_device_lifetime: Duration::from_secs(
                given.whole::<u64>("login_throttle_known_device_days")? * 86_400,
            ),
            known_devices: given.whole::<usize>("login_throttle_known_devices")?,
            ..ThrottleConfig::default()
        };
        let offline = OfflineCaps {
            total: given.whole::<usize>("offline_sessions_max")?,
            per_user: given.whole::<usize>("offline_sessions_per_user")?,
        };
        let session_file = match given.get("session_file") {
            Some("none") => None,
            Some(path) => {
                let path = PathBuf::from(path);
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                if parent.is_some_and(|p| !p.is_dir()) {
                    return Err(err(
                        "session_file",
                        format!("the directory of '{}' does not exist", path.display()),
                    ));
                }
                Some(path)
            }
            None => persist.as_ref().map(|p| p.spool_dir.join("sessions.jsonl")),
        };
        let session_file_given = given.get("session_file").is_some();

        let http = backends
            .contains(&BackendKind::Http)
            .then(|| http_config(given, go_auth, acl.refresh))
            .transpose()?;
        let config = Config {
            backends,
            mysql,
            http,
            auth: AuthConfig {
                superusers,
                bridge_users,
                cache: auth_cache,
                hash: HashSettings {
                    forced,
                    salt_encoding,
                    salt_position,
                },
                throttle,
            },
            acl,
            validation,
            persist,
            history,
            requests,
            log_level,
            offline,
            notes,
            metrics_listen: given.get("metrics_listen").map(str::to_string),
            sys_interval: Duration::from_secs(given.whole::<u64>("sys_interval")?),
            session_file,
            session_file_given,
        };
        Ok((config, warnings))
    }
}

/// `auth_opt_backends`: auth-plug's comma list, asked in its order.
fn backend_list(value: Option<&str>) -> Result<Vec<BackendKind>, ConfigError> {
    let Some(value) = value else {
        return Ok(vec![BackendKind::Mysql]);
    };
    let mut list = Vec::new();
    for name in value.split(',').map(str::trim) {
        let kind = match name {
            "mysql" => BackendKind::Mysql,
            "http" => BackendKind::Http,
            other => {
                return Err(err(
                    "backends",
                    format!(
                        "'{other}' is not supported; chat-auth has the mysql and http backends \
                         (e.g. mysql,http)"
                    ),
                ));
            }
        };
        if list.contains(&kind) {
            return Err(err("backends", format!("'{name}' is named twice")));
        }
        list.push(kind);
    }
    Ok(list)
}

fn mysql_config(given: &Given<'_>, warnings: &mut Vec<String>) -> Result<MysqlConfig, ConfigError> {
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

fn http_config<'a>(
    given: &Given<'a>,
    go_auth: bool,
    acl_cache: Duration,
) -> Result<HttpConfig, ConfigError> {
    let tls = given.flag("http_with_tls")?;
    // auth-plug's http_ip, or go-auth's http_host.
    let (host_option, host) = match (given.get("http_ip"), given.get("http_host")) {
        (Some(ip), _) => ("http_ip", ip),
        (None, Some(host)) => ("http_host", host),
        (None, None) => {
            return Err(err(
                "http_ip",
                "is required with auth_opt_backends http (the service's address; \
                 mosquitto-go-auth's auth_opt_http_host works too)",
            ));
        }
    };
    if host.contains(['/', '?', '#', '@', ' ']) {
        return Err(err(
            host_option,
            format!("'{host}' is not a host name or address"),
        ));
    }
    let port = given
        .whole_given::<u16>("http_port")?
        .unwrap_or(if tls { 443 } else { 80 });
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let uri = |name: &str| -> Result<Option<String>, ConfigError> {
        given
            .get(name)
            .map(|uri| {
                if uri.starts_with('/') && !uri.contains([' ', '#']) {
                    Ok(uri.to_string())
                } else {
                    Err(err(name, format!("'{uri}' is not a path starting with /")))
                }
            })
            .transpose()
    };
    let getuser_uri = uri("http_getuser_uri")?.ok_or_else(|| {
        err(
            "http_getuser_uri",
            "is required with auth_opt_backends http (the path logins are asked at)",
        )
    })?;
    let aclcheck_uri = uri("http_aclcheck_uri")?;
    if aclcheck_uri.is_none() {
        return Err(err(
            "http_aclcheck_uri",
            "is required with auth_opt_backends http (the path ACL checks are asked at; \
             without it the service's users could do nothing)",
        ));
    }
    let params = |name: &str| -> Result<Vec<(String, String)>, ConfigError> {
        given.get(name).map_or(Ok(Vec::new()), |list| {
            list.split(',')
                .map(|pair| match pair.split_once('=') {
                    Some((key, value)) if !key.trim().is_empty() => {
                        Ok((key.trim().to_string(), value.trim().to_string()))
                    }
                    _ => Err(err(
                        name,
                        format!("'{pair}' is not key=value (a list like domain=x,port=1)"),
                    )),
                })
                .collect()
        })
    };
    let params_mode = match given.choice("http_params_mode")? {
        Some("form") => ParamsMode::Form,
        Some(_) => ParamsMode::Json,
        // go-auth sends JSON unless told otherwise; auth-plug sends a form.
        None if go_auth || given.get("http_host").is_some() => ParamsMode::Json,
        None => ParamsMode::Form,
    };
    let response_mode = match given.choice("http_response_mode")? {
        Some("json") => ResponseMode::Json,
        Some("text") => ResponseMode::Text,
        _ => ResponseMode::Status,
    };
    Ok(HttpConfig {
        base_url: format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
        host_header: given.get("http_hostname").map(str::to_string),
        getuser_uri,
        superuser_uri: uri("http_superuser_uri")?,
        aclcheck_uri,
        getuser_params: params("http_getuser_params")?,
        superuser_params: params("http_superuser_params")?,
        aclcheck_params: params("http_aclcheck_params")?,
        timeout: Duration::from_secs(given.whole::<u64>("http_timeout")?),
        params_mode,
        response_mode,
        verify_peer: given.flag("http_verify_peer")?,
        acl_cache,
    })
}

fn acl_config<'a>(
    given: &Given<'a>,
    warnings: &mut Vec<String>,
    go_auth: bool,
    mysql: bool,
) -> Result<AclConfig, ConfigError> {
    if !mysql {
        // The chat model needs MySQL: user ids, groups, and the table messages go to.
        if given.flag_given("chat_enabled")? == Some(true) {
            return Err(err(
                "chat_enabled",
                "needs the mysql backend (chat identities, groups and storage come from \
                 MySQL): add mysql to auth_opt_backends (e.g. mysql,http)",
            ));
        }
        for key in [
            "chat_user_topic",
            "chat_group_topic",
            "groupsquery",
            "aclquery",
        ] {
            if given.get(key).is_some() {
                warnings.push(format!(
                    "auth_opt_{key} is not used: auth_opt_backends does not name mysql"
                ));
            }
        }
        return Ok(AclConfig {
            chat: None,
            groupsquery: None,
            aclquery: None,
            refresh: acl_refresh(given, warnings)?,
            subscribe_level: 1,
        });
    }
    // A mosquitto-go-auth configuration knows no chat model (its tables have no groups):
    // unless it names a chat option, the chat rules are off, as they were under go-auth.
    let chat_named = [
        "chat_enabled",
        "chat_user_topic",
        "chat_group_topic",
        "groupsquery",
    ]
    .iter()
    .any(|key| given.get(key).is_some());
    if go_auth && !chat_named {
        // A warning, not a note: chat messages then pass unvalidated wherever aclquery rows
        // let a client write.
        warnings.push(
            "mosquitto-go-auth options (auth_opt_mysql_*): the chat rules are off, chat \
             messages are neither validated nor stored (auth_opt_chat_enabled true, with a \
             groupsquery, turns them on); aclquery rows and superusers decide"
                .into(),
        );
    }
    let chat_enabled = given.flag_given("chat_enabled")?.unwrap_or(!go_auth);
    let chat = if chat_enabled {
        let user_topic = given.value("chat_user_topic").unwrap_or_default();
        let group_topic = given.value("chat_group_topic").unwrap_or_default();
        let topics = ChatTopics::new(user_topic, group_topic).map_err(|e| {
            let option = if crate::topic::Template::parse(user_topic).is_err() {
                "chat_user_topic"
            } else {
                "chat_group_topic"
            };
            err(option, e)
        })?;
        if topics.inbox.overlaps(&topics.group) {
            return Err(err(
                "chat_group_topic",
                format!(
                    "'{group_topic}' can name the same topics as auth_opt_chat_user_topic \
                     '{user_topic}'; an inbox and a group must be told apart by the topic"
                ),
            ));
        }
        Some(topics)
    } else {
        for key in ["chat_user_topic", "chat_group_topic", "groupsquery"] {
            if given.get(key).is_some() {
                warnings.push(format!(
                    "auth_opt_{key} is not used while auth_opt_chat_enabled is false"
                ));
            }
        }
        None
    };
    let groupsquery = chat
        .as_ref()
        .map(|_| {
            translate(
                "groupsquery",
                given.value("groupsquery").unwrap_or_default(),
                GROUP_BINDINGS,
            )
        })
        .transpose()?;
    let aclquery = given
        .get("aclquery")
        .map(|q| translate("aclquery", q, ACL_BINDINGS))
        .transpose()?;
    let refresh = acl_refresh(given, warnings)?;
    let subscribe_level = match given.choice("acl_subscribe_level")? {
        // go-auth asks aclquery with 4 for a SUBSCRIBE.
        None if go_auth => 4,
        Some("4") => 4,
        _ => 1,
    };
    Ok(AclConfig {
        chat,
        groupsquery,
        aclquery,
        refresh,
        subscribe_level,
    })
}

/// `acl_cacheseconds`: how long loaded rules (and the HTTP service's answers) are used.
fn acl_refresh<'a>(given: &Given<'a>, warnings: &mut Vec<String>) -> Result<Duration, ConfigError> {
    let seconds = match given.whole::<u64>("acl_cacheseconds")? {
        0 => {
            warnings.push(
                "auth_opt_acl_cacheseconds 0: chat-auth never asks MySQL during an ACL check; \
                 rules (and HTTP answers) are used for a second instead"
                    .into(),
            );
            1
        }
        seconds => seconds,
    };
    Ok(Duration::from_secs(seconds))
}

fn persist_config<'a>(
    given: &Given<'a>,
    validated: bool,
) -> Result<Option<StoreConfig>, ConfigError> {
    let enabled = given.flag("persist_enabled")?;
    if !enabled {
        // Storage options without the switch would be a broker that stores nothing and
        // says nothing: stop instead, naming the switch.
        let set = given.set_in(Part::Storage);
        if !set.is_empty() {
            return Err(err(
                "persist_enabled",
                format!(
                    "is not true, but {} {} set: add auth_opt_persist_enabled true to store \
                     chat messages, or remove {}",
                    set.iter()
                        .map(|k| format!("auth_opt_{k}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if set.len() == 1 { "is" } else { "are" },
                    if set.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        return Ok(None);
    }
    if !validated {
        return Err(err(
            "persist_enabled",
            "needs the chat rules and payload validation (auth_opt_chat_enabled and \
             auth_opt_chat_validate true): only validated chat messages are stored",
        ));
    }
    let table = given.value("persist_table").unwrap_or_default();
    let table = quoted_table(table).ok_or_else(|| {
        err(
            "persist_table",
            format!("'{table}' is not a table name (letters, digits, _; optionally db.table)"),
        )
    })?;
    let spool_dir = given.get("persist_spool_dir").ok_or_else(|| {
        err(
            "persist_spool_dir",
            "is required with auth_opt_persist_enabled: a directory the broker may write, where \
             messages wait until MySQL has them",
        )
    })?;
    Ok(Some(StoreConfig {
        table,
        batch_rows: given.whole::<usize>("persist_batch_rows")?,
        flush: Duration::from_millis(given.whole::<u64>("persist_flush_ms")?),
        spool_dir: PathBuf::from(spool_dir),
        spool_max_bytes: given.whole::<u64>("persist_spool_max_mb")? * 1024 * 1024,
        fsync: given.flag("persist_fsync")?,
    }))
}

/// The options as given, read through the table: defaults and ranges come from
/// `options::OPTIONS`, and reading an option that is not there is a bug (a panic in tests).
struct Given<'a> {
    values: HashMap<&'static str, &'a str>,
}

impl<'a> Given<'a> {
    /// The value given (trimmed; empty counts as not given).
    fn get(&self, name: &str) -> Option<&'a str> {
        self.raw(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value given, untrimmed (a password).
    fn raw(&self, name: &str) -> Option<&'a str> {
        self.values.get(options::get(name).name).copied()
    }

    /// The value given, else the table's default.
    fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).or(options::get(name).default)
    }

    /// The options of `part` that were given, sorted.
    fn set_in(&self, part: Part) -> Vec<&'static str> {
        let mut set: Vec<&'static str> = options::OPTIONS
            .iter()
            .filter(|spec| spec.part == part && self.get(spec.name).is_some())
            .map(|spec| spec.name)
            .collect();
        set.sort_unstable();
        set
    }

    fn flag_given(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        self.get(name).map(|v| boolean(name, v)).transpose()
    }

    fn flag(&self, name: &str) -> Result<bool, ConfigError> {
        let value = self.value(name);
        debug_assert!(value.is_some(), "option {name} has no default");
        Ok(value
            .map(|v| boolean(name, v))
            .transpose()?
            .unwrap_or(false))
    }

    fn whole_given<T: TryFrom<u64>>(&self, name: &str) -> Result<Option<T>, ConfigError> {
        let options::Kind::Whole { min, max } = options::get(name).kind else {
            panic!("option {name} is not a number in config::options::OPTIONS");
        };
        self.get(name)
            .map(|v| match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => {
                    T::try_from(n).map_err(|_| err(name, format!("'{v}' is too large")))
                }
                _ => Err(err(
                    name,
                    format!("'{v}' is not a whole number from {min} to {max}"),
                )),
            })
            .transpose()
    }

    /// A number with a default in the table.
    fn whole<T: TryFrom<u64>>(&self, name: &str) -> Result<T, ConfigError> {
        if let Some(n) = self.whole_given(name)? {
            return Ok(n);
        }
        let default = options::get(name)
            .default
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("option {name} has no numeric default"));
        T::try_from(default).map_err(|_| err(name, "default out of range"))
    }

    /// One of the table's words, given or the default.
    fn choice(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        let Some(words) = options::get(name).kind.words() else {
            panic!("option {name} is not a choice in config::options::OPTIONS");
        };
        match self.value(name) {
            Some(v) if !words.contains(&v) => Err(err(
                name,
                format!("'{v}' is not one of {}", words.join(", ")),
            )),
            v => Ok(v),
        }
    }
}

fn translate(option: &str, text: &str, bindings: Bindings) -> Result<Query, ConfigError> {
    query::translate(text, bindings).map_err(|e| err(option, e.0))
}

fn boolean(option: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(option, format!("'{value}' is not true or false"))),
    }
}

/// Levenshtein distance, for suggesting the option a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// A table name as the option gives it: `name` or `database.name`, letters, digits and `_`.
pub fn quoted_table(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |p: &&str| {
        !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    (parts.len() <= 2 && parts.iter().all(valid)).then(|| {
        parts
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(".")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERQUERY: (&str, &str) = (
        "userquery",
        "SELECT password FROM users WHERE username = '%s' LIMIT 1",
    );

    fn parse(extra: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        let mut options = vec![USERQUERY];
        options.extend_from_slice(extra);
        Config::parse(&options)
    }

    #[test]
    fn auth_plug_config_loads_unchanged() {
        let (config, warnings) = parse(&[
            ("backends", "mysql"),
            ("host", "db.example"),
            ("port", "3307"),
            ("dbname", "chat"),
            ("user", "mqtt"),
            ("pass", "p w"),
            (
                "superquery",
                "SELECT COUNT(*) FROM users WHERE username = '%s' AND super = 1",
            ),
            ("superusers", "S*"),
            ("auth_cacheseconds", "30"),
            ("log_quiet", "true"),
            ("http_hostname", "localhost"),
            ("mysql_opt_reconnect", "true"),
        ])
        .unwrap();
        assert_eq!(config.mysql.as_ref().unwrap().db.host, "db.example");
        assert_eq!(config.mysql.as_ref().unwrap().db.port, 3307);
        assert_eq!(
            config.mysql.as_ref().unwrap().db.pass.as_deref(),
            Some("p w")
        );
        assert_eq!(config.auth.cache, Duration::from_secs(30));
        assert_eq!(config.log_level, log::LevelFilter::Warn);
        assert!(config.auth.superusers.unwrap().matches("Sam"));
        assert_eq!(
            config.mysql.as_ref().unwrap().userquery.sql,
            "SELECT password FROM users WHERE username = ? LIMIT 1"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("auth_opt_http_hostname is not used")),
            "{warnings:?}"
        );
    }

    /// A chat system's auth-plug HTTP configuration, verbatim (issue 13).
    #[test]
    fn auth_plugs_http_config_loads_with_auth_plugs_meanings() {
        let (config, warnings) = Config::parse(&[
            ("backends", "http"),
            ("http_ip", "127.0.0.1"),
            ("http_port", "8080"),
            ("http_getuser_uri", "/mosquitto/auth"),
            ("http_superuser_uri", "/mosquitto/superuser"),
            ("http_aclcheck_uri", "/mosquitto/acl"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.backends, [BackendKind::Http]);
        assert!(config.mysql.is_none());
        assert!(config.acl.chat.is_none(), "the chat model needs MySQL");
        assert!(config.validation.is_none() && config.persist.is_none());
        let http = config.http.unwrap();
        assert_eq!(http.base_url, "http://127.0.0.1:8080");
        assert_eq!(http.getuser_uri, "/mosquitto/auth");
        assert_eq!(http.superuser_uri.as_deref(), Some("/mosquitto/superuser"));
        assert_eq!(http.params_mode, ParamsMode::Form);
        assert_eq!(http.response_mode, ResponseMode::Status);
        assert_eq!(http.timeout, Duration::from_secs(2));
        assert!(http.verify_peer);
        assert_eq!(http.acl_cache, Duration::from_secs(60));
        // go-auth's names: JSON, its modes, and a chain after MySQL.
        let (config, _) = parse(&[
            ("backends", "mysql,http"),
            ("http_host", "auth.internal"),
            ("http_with_tls", "true"),
            ("http_getuser_uri", "/user"),
            ("http_aclcheck_uri", "/acl"),
            ("http_response_mode", "json"),
            ("http_timeout", "5"),
            ("http_getuser_params", "domain=chat, realm = a b"),
        ])
        .unwrap();
        assert_eq!(config.backends, [BackendKind::Mysql, BackendKind::Http]);
        assert!(config.acl.chat.is_some(), "MySQL keeps the chat rules");
        let http = config.http.unwrap();
        assert_eq!(http.base_url, "https://auth.internal:443");
        assert_eq!(http.params_mode, ParamsMode::Json);
        assert_eq!(http.response_mode, ResponseMode::Json);
        assert_eq!(http.timeout, Duration::from_secs(5));
        assert_eq!(
            http.getuser_params,
            [
                ("domain".to_string(), "chat".to_string()),
                ("realm".to_string(), "a b".to_string())
            ]
        );
        // MySQL options without the mysql backend are said to do nothing.
        let (_, warnings) = Config::parse(&[
            ("backends", "http"),
            ("http_ip", "::1"),
            ("http_getuser_uri", "/a"),
            ("http_aclcheck_uri", "/b"),
            USERQUERY,
        ])
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("auth_opt_userquery is not used"));
    }

    /// The table's defaults for the throttle and the offline caps are theirs.
    #[test]
    fn table_defaults_match_the_parts_defaults() {
        let (config, _) = parse(&[]).unwrap();
        assert_eq!(config.auth.throttle, ThrottleConfig::default());
        assert_eq!(config.offline, OfflineCaps::default());
    }

    #[test]
    fn defaults_are_bounded() {
        let (config, _) = parse(&[]).unwrap();
        assert_eq!(
            config.mysql.as_ref().unwrap().db.connect_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            config.mysql.as_ref().unwrap().db.query_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(config.auth.cache, Duration::ZERO);
        assert!(config.auth.hash.forced.is_none());
    }

    #[test]
    fn bad_values_name_their_option() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("backends", "mysql,postgres")], "backends"),
            (&[("backends", "postgres")], "backends"),
            (&[("backends", "mysql,mysql")], "backends"),
            (&[("backends", "mysql,http")], "http_ip"),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_aclcheck_uri", "/acl"),
                ],
                "http_getuser_uri",
            ),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_getuser_uri", "/auth"),
                ],
                "http_aclcheck_uri",
            ),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_getuser_uri", "auth"),
                    ("http_aclcheck_uri", "/acl"),
                ],
                "http_getuser_uri",
            ),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_getuser_uri", "/auth"),
                    ("http_aclcheck_uri", "/acl"),
                    ("http_getuser_params", "domain"),
                ],
                "http_getuser_params",
            ),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_getuser_uri", "/auth"),
                    ("http_aclcheck_uri", "/acl"),
                    ("http_timeout", "0"),
                ],
                "http_timeout",
            ),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_getuser_uri", "/auth"),
                    ("http_aclcheck_uri", "/acl"),
                    ("http_response_mode", "xml"),
                ],
                "http_response_mode",
            ),
            (
                &[
                    ("backends", "http"),
                    ("http_ip", "127.0.0.1"),
                    ("http_getuser_uri", "/auth"),
                    ("http_aclcheck_uri", "/acl"),
                    ("chat_enabled", "true"),
                ],
                "chat_enabled",
            ),
            (&[("port", "99999")], "port"),
            (&[("port", "x")], "port"),
            (&[("auth_cacheseconds", "-1")], "auth_cacheseconds"),
            (&[("ssl_enabled", "maybe")], "ssl_enabled"),
            (
                &[("ssl_enabled", "true"), ("ssl_ca", "/nonexistent/ca.pem")],
                "ssl_ca",
            ),
            (&[("password_format", "rot13")], "password_format"),
            (&[("hasher_salt_encoding", "hex")], "hasher_salt_encoding"),
            (
                &[("password_salt_position", "middle")],
                "password_salt_position",
            ),
            (&[("superquery", "SELECT 1 WHERE u = '%c'")], "superquery"),
            (
                &[("userquery", "SELECT pw FROM u WHERE n = '%c'")],
                "userquery",
            ),
            (&[("connect_timeout_ms", "0")], "connect_timeout_ms"),
            (&[("log_level", "loud")], "log_level"),
            (&[("auth_cachesecond", "5")], "auth_cachesecond"),
            (
                &[(
                    "aclquery",
                    "SELECT topic FROM acls WHERE c = '%s' OR u = '%s'",
                )],
                "aclquery",
            ),
            (&[("chat_enabled", "sometimes")], "chat_enabled"),
            (
                &[("chat_user_topic", "/users/+/messages")],
                "chat_user_topic",
            ),
            (
                &[("chat_group_topic", "/groups/messages")],
                "chat_group_topic",
            ),
            (
                &[("chat_group_topic", "/{id}/users/messages")],
                "chat_group_topic",
            ),
            (
                &[("groupsquery", "SELECT g FROM m WHERE u = %d")],
                "groupsquery",
            ),
            (&[("acl_cacheseconds", "many")], "acl_cacheseconds"),
            (&[("acl_subscribe_level", "2")], "acl_subscribe_level"),
            (&[("chat_max_content_bytes", "0")], "chat_max_content_bytes"),
            (&[("chat_dedup_seconds", "-5")], "chat_dedup_seconds"),
            (&[("persist_enabled", "true")], "persist_spool_dir"),
            (
                &[("persist_spool_dir", "/tmp"), ("persist_table", "messages")],
                "persist_enabled",
            ),
            (
                &[("persist_enabled", "false"), ("persist_fsync", "true")],
                "persist_enabled",
            ),
            (
                &[("login_throttle_failures", "-1")],
                "login_throttle_failures",
            ),
            (
                &[("login_throttle_address_failures", "-1")],
                "login_throttle_address_failures",
            ),
            (
                &[("login_throttle_max_seconds", "0")],
                "login_throttle_max_seconds",
            ),
            (
                &[("login_throttle_budget_percent", "0")],
                "login_throttle_budget_percent",
            ),
            (
                &[("login_throttle_known_device_days", "0")],
                "login_throttle_known_device_days",
            ),
            (
                &[("login_throttle_known_devices", "-1")],
                "login_throttle_known_devices",
            ),
            (
                &[("offline_sessions_per_user", "0")],
                "offline_sessions_per_user",
            ),
            (&[("offline_sessions_max", "x")], "offline_sessions_max"),
            (
                &[("session_file", "/nonexistent-dir/sessions.jsonl")],
                "session_file",
            ),
            (
                &[
                    ("persist_enabled", "true"),
                    ("chat_validate", "false"),
                    ("persist_spool_dir", "/tmp"),
                ],
                "persist_enabled",
            ),
            (
                &[
                    ("persist_enabled", "true"),
                    ("persist_spool_dir", "/tmp"),
                    ("persist_table", "messages; DROP TABLE users"),
                ],
                "persist_table",
            ),
            (
                &[
                    ("persist_enabled", "true"),
                    ("persist_spool_dir", "/tmp"),
                    ("persist_batch_rows", "100000"),
                ],
                "persist_batch_rows",
            ),
        ];
        for (extra, option) in cases {
            let e = parse(extra).expect_err(option);
            assert_eq!(&e.option, option, "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("auth_opt_{option} (plugin_opt_{option}): "))
            );
        }
        let e = Config::parse::<&str, &str>(&[]).unwrap_err();
        assert_eq!(e.option, "userquery");
    }

    #[test]
    fn acl_options_and_their_defaults() {
        let (config, warnings) = parse(&[]).unwrap();
        let acl = config.acl;
        let chat = acl.chat.expect("chat rules are on by default");
        assert_eq!(chat.inbox.id_of("/users/7/messages"), Some("7"));
        assert_eq!(chat.group.id_of("/groups/3/messages"), Some("3"));
        assert_eq!(
            Some(acl.groupsquery.unwrap().sql.as_str()),
            options::get("groupsquery").default
        );
        assert!(acl.aclquery.is_none());
        assert_eq!(acl.refresh, Duration::from_secs(60));
        assert_eq!(acl.subscribe_level, 1);
        assert!(warnings.is_empty());

        let (config, warnings) = parse(&[
            ("chat_enabled", "false"),
            ("chat_user_topic", "/u/{id}"),
            (
                "aclquery",
                "SELECT topic FROM acls WHERE (username = '%s') AND (rw >= %d)",
            ),
            ("acl_cacheseconds", "0"),
            ("acl_subscribe_level", "4"),
        ])
        .unwrap();
        let acl = config.acl;
        assert!(acl.chat.is_none() && acl.groupsquery.is_none());
        assert_eq!(
            acl.aclquery.unwrap().sql,
            "SELECT topic FROM acls WHERE (username = ?) AND (rw >= ?)"
        );
        assert_eq!(acl.refresh, Duration::from_secs(1));
        assert_eq!(acl.subscribe_level, 4);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn persistence_is_opt_in_and_validation_on_with_chat() {
        let (config, _) = parse(&[]).unwrap();
        assert!(config.persist.is_none());
        assert_eq!(config.validation.unwrap().max_content_bytes, 65_536);
        let (config, _) = parse(&[
            ("persist_enabled", "true"),
            ("persist_spool_dir", "/var/lib/chat-auth"),
            ("persist_table", "chat.messages"),
            ("persist_spool_max_mb", "2"),
        ])
        .unwrap();
        let store = config.persist.unwrap();
        assert_eq!(store.table, "`chat`.`messages`");
        assert_eq!(store.spool_max_bytes, 2 * 1024 * 1024);
        assert_eq!(store.batch_rows, 500);
        assert!(!store.fsync);
        let (config, _) = parse(&[("chat_enabled", "false")]).unwrap();
        assert!(config.validation.is_none());
    }

    #[test]
    fn chat_history_comes_with_storage() {
        let storage = [
            ("persist_enabled", "true"),
            ("persist_spool_dir", "/var/lib/chat-auth"),
        ];
        assert!(
            parse(&[]).unwrap().0.history.is_none(),
            "no storage, no history"
        );
        let (config, _) = parse(&storage).unwrap();
        assert_eq!(
            config.history,
            Some(HistoryConfig {
                connections: 2,
                in_flight: 4,
                per_second: 10,
                max_response_bytes: 256 * 1024,
            })
        );
        let off = [storage.as_slice(), &[("history_enabled", "false")]].concat();
        assert!(parse(&off).unwrap().0.history.is_none());
        let tuned = [
            storage.as_slice(),
            &[
                ("history_connections", "8"),
                ("history_max_response_kb", "64"),
            ],
        ]
        .concat();
        let history = parse(&tuned).unwrap().0.history.unwrap();
        assert_eq!(
            (history.connections, history.max_response_bytes),
            (8, 65_536)
        );
        for (option, value) in [
            ("history_connections", "0"),
            ("history_client_per_second", "many"),
            ("history_max_response_kb", "1"),
        ] {
            let bad = [storage.as_slice(), &[(option, value)]].concat();
            let error = parse(&bad).unwrap_err().to_string();
            assert!(error.contains(option), "{error}");
        }
        // Without storage, a history option is an error naming the switch.
        let error = parse(&[("history_enabled", "true")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("persist_enabled"), "{error}");
    }

    #[test]
    fn the_sessions_file_goes_to_the_brokers_persistence_location_by_default() {
        let dir = std::env::temp_dir();
        let (mut config, _) = parse(&[]).unwrap();
        config.use_persistence_location(&dir);
        assert_eq!(config.session_file, Some(dir.join(SESSIONS_IN_PERSISTENCE)));
        let (mut config, _) = parse(&[("session_file", "none")]).unwrap();
        config.use_persistence_location(&dir);
        assert_eq!(config.session_file, None, "none is none");
        let (mut config, _) = parse(&[]).unwrap();
        config.use_persistence_location(std::path::Path::new("/nonexistent-dir"));
        assert_eq!(config.session_file, None);
    }

    #[test]
    fn throttle_offline_and_session_file_options() {
        let (config, _) = parse(&[]).unwrap();
        assert_eq!(config.auth.throttle, ThrottleConfig::default());
        assert_eq!(config.offline, OfflineCaps::default());
        assert_eq!(config.session_file, None);
        let (config, _) = parse(&[
            ("login_throttle_failures", "0"),
            ("login_throttle_max_seconds", "5"),
            ("offline_sessions_per_user", "2"),
            ("persist_enabled", "true"),
            ("persist_spool_dir", "/var/lib/chat-auth"),
        ])
        .unwrap();
        assert!(!config.auth.throttle.enabled());
        assert_eq!(config.auth.throttle.max, Duration::from_secs(5));
        let (budget, _) = parse(&[
            ("login_throttle_budget_percent", "5"),
            ("login_throttle_known_device_days", "7"),
            ("login_throttle_known_devices", "0"),
        ])
        .unwrap();
        assert_eq!(budget.auth.throttle.budget_percent, 5);
        assert_eq!(
            budget.auth.throttle.known_device_lifetime,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(budget.auth.throttle.known_devices, 0);
        assert_eq!(config.offline.per_user, 2);
        assert_eq!(
            config.session_file,
            Some(PathBuf::from("/var/lib/chat-auth/sessions.jsonl"))
        );
        let (config, _) = parse(&[
            ("persist_enabled", "true"),
            ("persist_spool_dir", "/var/lib/chat-auth"),
            ("session_file", "none"),
        ])
        .unwrap();
        assert_eq!(config.session_file, None);
    }

    #[test]
    fn mosquitto_go_auth_names_mean_ours() {
        // A go-auth tutorial's configuration, credentials filled in.
        let (config, warnings) = Config::parse(&[
            ("backends", "mysql"),
            ("hasher", "bcrypt"),
            ("hasher_cost", "10"),
            ("log_level", "debug"),
            ("log_dest", "file"),
            ("log_file", "/var/log/mosquitto/mosquitto.log"),
            ("mysql_protocol", "tcp"),
            ("mysql_allow_native_passwords", "true"),
            ("mysql_host", "localhost"),
            ("mysql_port", "3306"),
            ("mysql_dbname", "max_system"),
            ("mysql_user", "max_system"),
            ("mysql_password", "maxsystem@2021"),
            ("mysql_connect_tries", "5"),
            (
                "mysql_userquery",
                "SELECT password_hash FROM test_user WHERE username = ? limit 1",
            ),
            (
                "mysql_superquery",
                "SELECT COUNT(*) FROM test_user WHERE username = ? AND is_admin = 1",
            ),
            (
                "mysql_aclquery",
                "SELECT topic FROM test_acl WHERE test_user_id = (SELECT id FROM test_user \
                 WHERE username = ?) AND (rw >= ?)",
            ),
            ("auth_cache_seconds", "30"),
            ("acl_cache_seconds", "40"),
        ])
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("chat rules are off"), "{warnings:?}");
        assert_eq!(config.mysql.as_ref().unwrap().db.host, "localhost");
        assert_eq!(
            config.mysql.as_ref().unwrap().db.pass.as_deref(),
            Some("maxsystem@2021")
        );
        assert_eq!(config.auth.cache, Duration::from_secs(30));
        assert_eq!(config.acl.refresh, Duration::from_secs(40));
        assert!(config.mysql.as_ref().unwrap().superquery.is_some());
        assert_eq!(config.acl.subscribe_level, 4, "go-auth's SUBSCRIBE level");
        assert!(config.acl.chat.is_none(), "no chat model under go-auth");
        assert_eq!(config.auth.hash.salt_encoding, SaltEncoding::Base64);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert!(
            config
                .notes
                .iter()
                .any(|n| n.contains("auth_opt_hasher_cost"))
        );
        // sslmode custom turns TLS on, with the files go-auth names.
        let e = Config::parse(&[
            ("mysql_userquery", "SELECT p FROM u WHERE n = ?"),
            ("mysql_sslmode", "custom"),
            ("mysql_sslrootcert", "/nonexistent/ca.pem"),
        ])
        .unwrap_err();
        assert_eq!(e.option, "ssl_ca", "{e}");
        assert!(config.mysql.as_ref().unwrap().db.tls.is_none());
        let e = Config::parse(&[
            ("mysql_userquery", "SELECT p FROM u WHERE n = ?"),
            ("mysql_sslmode", "skip-verify"),
        ])
        .unwrap_err();
        assert_eq!(e.option, "mysql_sslmode");
    }

    #[test]
    fn leftover_go_auth_options_keep_chat_auths_meanings() {
        // Options both plugins' configurations may hold do not make a go-auth configuration:
        // only its MySQL backend's names do.
        let (config, _) = parse(&[
            ("hasher", "pbkdf2"),
            ("hasher_iterations", "901"),
            ("auth_cache_seconds", "30"),
            ("log_dest", "file"),
        ])
        .unwrap();
        assert!(config.acl.chat.is_some(), "chat rules stay on");
        assert_eq!(config.acl.subscribe_level, 1);
        assert_eq!(config.auth.hash.salt_encoding, SaltEncoding::Literal);
        assert_eq!(
            config.auth.cache,
            Duration::from_secs(30),
            "the alias still reads"
        );
        assert!(config.notes.iter().any(|n| n.contains("hasher_iterations")));
    }

    #[test]
    fn typo_suggests_the_real_option() {
        let e = parse(&[("auth_cachesecond", "5")]).unwrap_err();
        assert!(e.message.contains("auth_opt_auth_cacheseconds"), "{e}");
    }

    #[test]
    fn hasher_options() {
        let (config, _) = parse(&[
            ("password_format", "sha256"),
            ("hasher_salt_encoding", "base64"),
            ("password_salt_position", "suffix"),
        ])
        .unwrap();
        assert_eq!(
            config.auth.hash.forced,
            Some(Format::Hex(crate::hash::DigestAlgorithm::Sha256))
        );
        assert_eq!(config.auth.hash.salt_encoding, SaltEncoding::Base64);
        assert_eq!(config.auth.hash.salt_position, SaltPosition::Suffix);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("host", "host"), 0);
        assert_eq!(edit_distance("dbname", "dbnme"), 1);
        assert_eq!(edit_distance("userquery", "usrequery"), 2);
    }

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(quoted_table("messages").as_deref(), Some("`messages`"));
        assert_eq!(
            quoted_table("chat.messages").as_deref(),
            Some("`chat`.`messages`")
        );
        for bad in ["", "a b", "m`; DROP TABLE users; --", "a.b.c", "x."] {
            assert!(quoted_table(bad).is_none(), "{bad}");
        }
    }
}
