//! `auth_opt_*` / `plugin_opt_*` options (the broker strips the prefix) into one validated
//! [`Config`]. Every error names the option it is about.

//!
//! `options` is the table of every option; `given` reads the options given through it (the
//! value parsers); `mysql`, `http`, `acl` and `store` build those parts' settings, each part
//! owning its settings type; this file the whole [`Config`].

mod acl;
mod given;
mod http;
mod mysql;
pub mod options;
mod postgres;
mod store;
#[cfg(test)]
mod tests;

use crate::acl::AclConfig;
use crate::auth::AuthConfig;
use crate::backend::BackendKind;
use crate::backend::http::HttpConfig;
use crate::backend::mysql::MysqlConfig;
use crate::backend::postgres::PostgresConfig;
use crate::chat::ValidationConfig;
use crate::envelope::RequestLimits;
use crate::hash::{EmqxPbkdf2, Format, HashSettings, PbkdfAlgorithm, SaltEncoding, SaltPosition};
use crate::history::HistoryConfig;
use crate::limits::LimitsConfig;
use crate::limits::connections::{ConnectionsConfig, Policy};
use crate::limits::rate::RateConfig;
use crate::sessions::OfflineCaps;
use crate::store::StoreConfig;
use crate::throttle::ThrottleConfig;
use given::{Given, edit_distance};
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
    /// Set when `backends` names postgres.
    pub postgres: Option<PostgresConfig>,
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
    /// The chat rate and connections per user.
    pub limits: LimitsConfig,
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
/// And its PostgreSQL backend's: go-auth's meanings too where MySQL is not also asked (a
/// `mysql,postgres` chain names PostgreSQL's options this way, and keeps chat-auth's).
const GO_AUTH_PG_PREFIX: &str = "pg_";

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
        let mut pg_names = false;
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
            pg_names |= key.starts_with(GO_AUTH_PG_PREFIX) && spec.name != "pg_groupsquery";
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
        let uses_postgres = backends.contains(&BackendKind::Postgres);
        let postgres_alone = uses_postgres && !uses_mysql;
        let go_auth_mysql = go_auth;
        go_auth |= pg_names && !uses_mysql;
        for (part, backend, name) in [
            (Part::Http, BackendKind::Http, "http"),
            (Part::Mysql, BackendKind::Mysql, "mysql"),
            (Part::Postgres, BackendKind::Postgres, "postgres"),
        ] {
            if !backends.contains(&backend) {
                for key in given.set_in(part) {
                    // PostgreSQL reads these (auth-plug's names, with postgres alone).
                    let read = uses_postgres && postgres::SHARED.contains(&key)
                        || postgres_alone && postgres::PLAIN_NAMES.iter().any(|(_, p)| *p == key);
                    if !read {
                        warnings.push(format!(
                            "auth_opt_{key} is not used: auth_opt_backends does not name {name}"
                        ));
                    }
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
            Some(mysql::mysql_config(given, &mut warnings)?)
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
        let (forced, salt_position) = match given.get("password_hash_algorithm") {
            Some(text) => {
                let (format, position) = emqx_algorithm(text)?;
                if forced.is_some_and(|f| f != format) {
                    return Err(err(
                        "password_hash_algorithm",
                        "names another format than auth_opt_password_format; give one of them",
                    ));
                }
                (Some(format), position.unwrap_or(salt_position))
            }
            None => (forced, salt_position),
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

        let acl = acl::acl_config(
            given,
            &mut warnings,
            acl::Meanings {
                go_auth,
                go_auth_mysql,
                mysql: uses_mysql,
                rows: uses_mysql || uses_postgres,
            },
        )?;
        let postgres = uses_postgres
            .then(|| postgres::postgres_config(given, postgres_alone, acl.chat.is_some(), pg_names))
            .transpose()?;
        let validate = given.flag("chat_validate")?;
        let validation = (acl.chat.is_some() && validate)
            .then(|| -> Result<ValidationConfig, ConfigError> {
                Ok(ValidationConfig {
                    max_content_bytes: given.whole::<usize>("chat_max_content_bytes")?,
                    dedup: Duration::from_secs(given.whole::<u64>("chat_dedup_seconds")?),
                })
            })
            .transpose()?;
        if !uses_mysql && given.flag("persist_enabled")? {
            return Err(err(
                "persist_enabled",
                "needs the mysql backend: chat messages are stored in MySQL (storage on \
                 PostgreSQL is not there yet); with auth_opt_backends postgres, remove \
                 auth_opt_persist_enabled, or add mysql (e.g. mysql,postgres)",
            ));
        }
        let persist = store::persist_config(given, validation.is_some())?;
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
        let limits = limits_config(given)?;
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
            .then(|| http::http_config(given, go_auth, acl.refresh))
            .transpose()?;
        let config = Config {
            backends,
            mysql,
            http,
            postgres,
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
            limits,
            notes,
            metrics_listen: given.get("metrics_listen").map(str::to_string),
            sys_interval: Duration::from_secs(given.whole::<u64>("sys_interval")?),
            session_file,
            session_file_given,
        };
        Ok((config, warnings))
    }
}

/// `chat_rate`, `chat_burst`, `chat_group_weight`, `max_connections_per_user`,
/// `connection_limit_policy`.
fn limits_config(given: &Given<'_>) -> Result<LimitsConfig, ConfigError> {
    let rate = RateConfig {
        rate: given.whole::<u32>("chat_rate")?,
        burst: given.whole::<u32>("chat_burst")?,
        group_weight: given.whole::<u32>("chat_group_weight")?,
    };
    if !rate.is_off() && rate.group_weight > rate.burst {
        return Err(err(
            "chat_group_weight",
            format!(
                "{} is more than chat_burst {}: no group message could ever be sent",
                rate.group_weight, rate.burst
            ),
        ));
    }
    let policy = match given.choice("connection_limit_policy")? {
        Some("oldest") => Policy::Oldest,
        _ => Policy::Refuse,
    };
    Ok(LimitsConfig {
        rate,
        connections: ConnectionsConfig {
            max: given.whole::<u32>("max_connections_per_user")?,
            policy,
        },
    })
}

/// EMQX's `password_hash_algorithm`: `sha256 suffix`, or as EMQX writes it, `{name = sha256,
/// salt_position = suffix}` or `{name = pbkdf2, mac_fun = sha256, iterations = 4096,
/// dk_length = 32}`: the format it forces, and the salt position when it names one.
fn emqx_algorithm(text: &str) -> Result<(Format, Option<SaltPosition>), ConfigError> {
    let bad = |why: String| err("password_hash_algorithm", why);
    let plain: String = text
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | '"'))
        .collect::<String>()
        .to_ascii_lowercase();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    if plain.contains('=') {
        for item in plain
            .split([',', '\n'])
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let Some((key, value)) = item.split_once('=') else {
                return Err(bad(format!("'{item}' is not key = value")));
            };
            fields.push((key.trim(), value.trim()));
        }
    } else {
        let words: Vec<&str> = plain.split_whitespace().collect();
        match words.as_slice() {
            [name] => fields.push(("name", name)),
            [name, position] => fields.extend([("name", *name), ("salt_position", *position)]),
            _ => {
                return Err(bad(format!(
                    "'{text}' is not an algorithm and a salt position (e.g. sha256 suffix)"
                )));
            }
        }
    }
    let field = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    if let Some((key, _)) = fields.iter().find(|(k, _)| {
        !matches!(
            *k,
            "name" | "salt_position" | "mac_fun" | "iterations" | "dk_length"
        )
    }) {
        return Err(bad(format!(
            "'{key}' is not one of name, salt_position, mac_fun, iterations, dk_length"
        )));
    }
    let name = field("name").ok_or_else(|| bad(format!("'{text}' names no algorithm")))?;
    let format = match name {
        "plain" | "md5" | "sha256" | "sha512" | "bcrypt" => name,
        "sha" => "sha1",
        "pbkdf2" => return Ok((Format::EmqxPbkdf2(emqx_pbkdf2(field, &bad)?), None)),
        other => {
            return Err(bad(format!(
                "'{other}' is not one of plain, md5, sha, sha256, sha512, bcrypt, pbkdf2"
            )));
        }
    };
    let position = match field("salt_position") {
        None => None,
        Some("prefix") | Some("disable") => Some(SaltPosition::Prefix),
        Some("suffix") => Some(SaltPosition::Suffix),
        Some(other) => {
            return Err(bad(format!(
                "salt position '{other}' is not one of prefix, suffix, disable"
            )));
        }
    };
    let format = Format::from_name(format).expect("a format of Format::NAMES");
    Ok((format, position))
}

/// EMQX's `pbkdf2` parameters: `mac_fun` (sha, sha256, sha512 here), `iterations`,
/// `dk_length` (by default the MAC's length), within the work a login may cost.
fn emqx_pbkdf2<'t>(
    field: impl Fn(&str) -> Option<&'t str>,
    bad: &impl Fn(String) -> ConfigError,
) -> Result<EmqxPbkdf2, ConfigError> {
    let mac = match field("mac_fun") {
        Some("sha") => PbkdfAlgorithm::Sha1,
        Some("sha256") => PbkdfAlgorithm::Sha256,
        Some("sha512") => PbkdfAlgorithm::Sha512,
        Some(other) => {
            return Err(bad(format!(
                "pbkdf2's mac_fun '{other}' is not one of sha, sha256, sha512 (the ones \
                 chat-auth reads)"
            )));
        }
        None => return Err(bad("pbkdf2 needs its mac_fun (e.g. sha256)".into())),
    };
    let iterations = field("iterations")
        .ok_or_else(|| bad("pbkdf2 needs its iterations".into()))?
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| bad("pbkdf2's iterations must be a whole number from 1".into()))?;
    let key_len = match field("dk_length") {
        None => mac.block_len(),
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| bad("pbkdf2's dk_length must be 1 to 1024 bytes".into()))?,
    };
    if !mac.affordable(iterations, key_len) {
        return Err(bad(format!(
            "pbkdf2 with {iterations} iterations of {} for {key_len} bytes costs more than a \
             login may on the broker thread (docs/passwords.md, Cost on the broker thread)",
            mac.name()
        )));
    }
    Ok(EmqxPbkdf2 {
        mac,
        iterations,
        key_len,
    })
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
            "postgres" => BackendKind::Postgres,
            other => {
                return Err(err(
                    "backends",
                    format!(
                        "'{other}' is not supported; chat-auth has the mysql, postgres and http \
                         backends (e.g. mysql,http)"
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
