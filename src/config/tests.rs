use super::given::quoted_table;
use super::*;
use crate::backend::http::{ParamsMode, ResponseMode};

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
    assert_eq!(config.limits, LimitsConfig::default());
}

#[test]
fn limits_options() {
    let (config, _) = parse(&[
        ("chat_rate", "0"),
        ("chat_group_weight", "50"),
        ("max_connections_per_user", "3"),
        ("connection_limit_policy", "oldest"),
    ])
    .unwrap();
    assert!(config.limits.rate.is_off());
    assert_eq!(
        config.limits.connections,
        ConnectionsConfig {
            max: 3,
            policy: Policy::Oldest
        }
    );
    for (options, named) in [
        (&[("chat_group_weight", "21")][..], "chat_group_weight"),
        (&[("chat_burst", "0")][..], "chat_burst"),
        (
            &[("connection_limit_policy", "newest")][..],
            "connection_limit_policy",
        ),
        (
            &[("max_connections_per_user", "-1")][..],
            "max_connections_per_user",
        ),
    ] {
        assert_eq!(parse(options).unwrap_err().option, named, "{options:?}");
    }
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
        (&[("backends", "mysql,redis")], "backends"),
        (&[("backends", "postgres,http,postgres")], "backends"),
        (&[("backends", "postgres")], "pg_user"),
        // go-auth's PostgreSQL names are all read: a typo is one.
        (&[("pg_usrquery", "SELECT 1")], "pg_usrquery"),
        (
            &[
                ("backends", "postgres"),
                ("user", "u"),
                ("pg_sslmode", "allow"),
            ],
            "pg_sslmode",
        ),
        (
            &[
                ("backends", "postgres"),
                ("user", "u"),
                ("persist_enabled", "true"),
                ("persist_spool_dir", "/tmp"),
            ],
            "persist_enabled",
        ),
        (
            &[
                ("backends", "postgres"),
                ("user", "u"),
                ("pg_aclquery", "SELECT topic FROM acls WHERE username = $3"),
            ],
            "pg_aclquery",
        ),
        (
            &[
                ("backends", "postgres"),
                ("user", "u"),
                ("pg_sslcert", "/nonexistent.crt"),
            ],
            "pg_sslcert",
        ),
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

/// auth-plug's PostgreSQL configuration: its MySQL-style names mean PostgreSQL when
/// `backends` is `postgres` alone, and libpq's sslmode `prefer`.
#[test]
fn auth_plugs_postgres_config_reads_its_plain_names() {
    let (config, warnings) = Config::parse(&[
        ("backends", "postgres"),
        ("host", "db.example"),
        ("port", "5433"),
        ("user", "mqtt"),
        ("pass", "p w"),
        ("dbname", "chat"),
        (
            "userquery",
            "SELECT pw FROM account WHERE username = $1 limit 1",
        ),
        (
            "superquery",
            "SELECT COUNT(*) FROM account WHERE username = $1 AND super = 1",
        ),
        (
            "aclquery",
            "SELECT topic FROM acls WHERE (username = $1) AND (rw & $2) > 0",
        ),
        ("connect_timeout_ms", "500"),
    ])
    .unwrap();
    assert!(config.mysql.is_none());
    let pg = config.postgres.as_ref().unwrap();
    assert_eq!(
        (pg.db.host.as_str(), pg.db.port, pg.db.user.as_str()),
        ("db.example", 5433, "mqtt")
    );
    assert_eq!(pg.db.pass.as_deref(), Some("p w"));
    assert_eq!(pg.db.dbname.as_deref(), Some("chat"));
    assert_eq!(pg.db.connect_timeout, Duration::from_millis(500));
    assert_eq!(
        pg.db.tls.mode,
        crate::backend::postgres::tls::SslMode::Prefer
    );
    assert_eq!(
        pg.aclquery.as_ref().unwrap().params,
        [crate::query::Param::Username, crate::query::Param::Access]
    );
    assert!(pg.superquery.is_some());
    // The chat rules are on (auth-plug's meaning), their groups from the default query.
    assert!(config.acl.chat.is_some() && pg.groupsquery_defaulted);
    assert!(config.persist.is_none());
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// go-auth's PostgreSQL names: its meanings (chat rules off, verify-full), and in a
/// `mysql,postgres` chain the pg_* names are PostgreSQL's while the plain ones stay MySQL's.
#[test]
fn go_auths_postgres_names_and_a_chain() {
    let (config, _) = Config::parse(&[
        ("backends", "postgres"),
        ("pg_host", "/run/postgresql"),
        ("pg_user", "go"),
        ("pg_password", "secret"),
        (
            "pg_userquery",
            "SELECT password_hash FROM test_user WHERE username = $1 limit 1",
        ),
        ("pg_connect_tries", "5"),
        ("pg_max_life_time", "60"),
    ])
    .unwrap();
    let pg = config.postgres.as_ref().unwrap();
    assert_eq!(pg.db.port, 5432);
    assert_eq!(
        pg.db.tls.mode,
        crate::backend::postgres::tls::SslMode::VerifyFull
    );
    assert_eq!(pg.db.max_life, Some(Duration::from_secs(60)));
    assert!(config.acl.chat.is_none() && pg.groupsquery.is_none());
    assert!(config.notes.iter().any(|n| n.contains("pg_connect_tries")));

    let (config, warnings) = Config::parse(&[
        ("backends", "mysql,postgres"),
        USERQUERY,
        ("host", "mysql.example"),
        ("pg_host", "pg.example"),
        ("pg_user", "go"),
        ("pg_userquery", "SELECT pw FROM account WHERE username = $1"),
        (
            "pg_groupsquery",
            "SELECT group_id FROM members WHERE user_id = $1",
        ),
    ])
    .unwrap();
    assert_eq!(config.backends, [BackendKind::Mysql, BackendKind::Postgres]);
    assert_eq!(config.mysql.as_ref().unwrap().db.host, "mysql.example");
    let pg = config.postgres.as_ref().unwrap();
    assert_eq!(pg.db.host, "pg.example");
    assert!(config.acl.chat.is_some() && !pg.groupsquery_defaulted);
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// EMQX's `password_hash_algorithm`, in both its spellings.
#[test]
fn emqx_password_hash_algorithm() {
    use crate::hash::{Format, SaltPosition};
    for text in ["sha256 suffix", "{name = sha256, salt_position = suffix}"] {
        let (config, _) = parse(&[("password_hash_algorithm", text)]).unwrap();
        assert_eq!(
            config.auth.hash.forced,
            Format::from_name("sha256"),
            "{text}"
        );
        assert_eq!(
            config.auth.hash.salt_position,
            SaltPosition::Suffix,
            "{text}"
        );
    }
    let (config, _) = parse(&[("password_hash_algorithm", "sha")]).unwrap();
    assert_eq!(config.auth.hash.forced, Format::from_name("sha1"));
    assert_eq!(config.auth.hash.salt_position, SaltPosition::Prefix);
    let (config, _) = parse(&[("password_hash_algorithm", "bcrypt")]).unwrap();
    assert_eq!(config.auth.hash.forced, Format::from_name("bcrypt"));
    // EMQX's pbkdf2, with its parameters (dk_length defaults to the MAC's length).
    use crate::hash::{EmqxPbkdf2, PbkdfAlgorithm};
    for (text, key_len) in [
        (
            "{name = pbkdf2, mac_fun = sha256, iterations = 4096, dk_length = 32}",
            32,
        ),
        (
            "{name = \"pbkdf2\", mac_fun = \"sha512\", iterations = 1000}",
            64,
        ),
    ] {
        let (config, _) = parse(&[("password_hash_algorithm", text)]).unwrap();
        let mac = if key_len == 32 {
            PbkdfAlgorithm::Sha256
        } else {
            PbkdfAlgorithm::Sha512
        };
        let iterations = if key_len == 32 { 4096 } else { 1000 };
        assert_eq!(
            config.auth.hash.forced,
            Some(Format::EmqxPbkdf2(EmqxPbkdf2 {
                mac,
                iterations,
                key_len
            })),
            "{text}"
        );
    }
    for bad in [
        "pbkdf2",
        "{name = pbkdf2, mac_fun = md4, iterations = 4096}",
        "{name = pbkdf2, mac_fun = sha256}",
        "{name = pbkdf2, mac_fun = sha256, iterations = 0}",
        "{name = pbkdf2, mac_fun = sha256, iterations = 100000000}",
        "{name = pbkdf2, mac_fun = sha256, iterations = 10, dk_length = 0}",
        "{name = sha256, salt_position = suffix, rounds = 3}",
        "rot13",
        "sha256 middle",
        "sha256 suffix extra",
    ] {
        let e = parse(&[("password_hash_algorithm", bad)]).unwrap_err();
        assert_eq!(e.option, "password_hash_algorithm", "{bad}");
    }
    let e = parse(&[
        ("password_hash_algorithm", "sha256"),
        ("password_format", "md5"),
    ])
    .unwrap_err();
    assert_eq!(e.option, "password_hash_algorithm");
}
