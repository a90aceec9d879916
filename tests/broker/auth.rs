//! Authentication through the real broker: every password format, auth-plug configs,
//! hostile input, and MySQL down, restarted or hung.

use crate::acl::USERQUERY;
use crate::fixtures::chat_broker;
use crate::harness::{
    Broker, DB_PASS, DB_USER, MariaDb, Outcome, connect, connect_v5, eventually, raw_connect,
    shared,
};
use libtest_mimic::Trial;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "auth::every_format_through_the_broker",
            every_format_through_the_broker,
        ),
        ("auth::salt_and_format_options", salt_and_format_options),
        (
            "auth::auth_plug_config_works_unchanged",
            auth_plug_config_works_unchanged,
        ),
        (
            "auth::config_errors_stop_the_broker",
            config_errors_stop_the_broker,
        ),
        (
            "auth::hostile_input_never_lets_anyone_in",
            hostile_input_never_lets_anyone_in,
        ),
        (
            "auth::mqtt5_client_sees_not_authorized",
            mqtt5_client_sees_not_authorized,
        ),
        ("auth::unix_socket_connection", unix_socket_connection),
        ("auth::tls_to_mysql", tls_to_mysql),
        (
            "auth::tls_with_mariadbs_certificate_recipe",
            tls_with_mariadbs_certificate_recipe,
        ),
        ("auth::example_configs_work", example_configs_work),
        ("auth::credential_cache", credential_cache),
        (
            "auth::mosquitto_go_auth_config_works",
            mosquitto_go_auth_config_works,
        ),
        ("auth::passwd_tool_hashes_log_in", passwd_tool_hashes_log_in),
        ("auth::mysql_down_at_start", mysql_down_at_start),
        ("auth::mysql_restarted_mid_run", mysql_restarted_mid_run),
        (
            "auth::hung_mysql_costs_at_most_the_timeout",
            hung_mysql_costs_at_most_the_timeout,
        ),
    ];
    crate::trials(tests)
}

/// A raw CONNECT's username and password, either possibly absent.
type Credentials<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Unique database names: tests run in parallel on the shared server.
fn db_name(test: &str) -> String {
    format!("{test}_{}", std::process::id())
}

fn sql_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Inserts a user whose hash column is the SQL expression `hash_sql`.
fn add_user(db: &MariaDb, dbname: &str, username: &str, hash_sql: &str, salt: Option<&str>) {
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.users (username, password_hash, salt) VALUES ({}, {hash_sql}, {})",
        sql_quote(username),
        salt.map_or("NULL".to_string(), sql_quote)
    ));
}

/// `mosquitto_passwd -b` output for one user: the stored hash.
fn mosquitto_passwd(extra: &[&str], password: &str) -> String {
    let file = crate::harness::fresh_dir("passwd").join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(extra)
        .arg("-c")
        .arg("-b")
        .arg(&file)
        .arg("user")
        .arg(password)
        .status()
        .expect("run mosquitto_passwd (package mosquitto)");
    assert!(status.success());
    let line = std::fs::read_to_string(&file).unwrap();
    line.trim()
        .strip_prefix("user:")
        .expect("user:hash")
        .to_string()
}

fn assert_login(port: u16, user: &str, password: &str, wrong: &str) {
    assert_eq!(
        connect(port, user, password),
        Outcome::Accepted,
        "{user} right password"
    );
    assert_eq!(
        connect(port, user, wrong),
        Outcome::Refused(5),
        "{user} wrong password"
    );
}

fn every_format_through_the_broker() {
    let db = shared();
    let name = db.database(&db_name("formats"));
    // (username, hash column as SQL, salt, password). Made by the real producers: MariaDB's
    // own functions here, mosquitto_passwd below, recorded vectors with their commands.
    let rows: &[(&str, String, Option<&str>, &str)] = &[
        (
            "mysql_password",
            "PASSWORD('p@ss w0rd')".into(),
            None,
            "p@ss w0rd",
        ),
        (
            "mysql_old",
            "OLD_PASSWORD('oldpass')".into(),
            None,
            "oldpass",
        ),
        ("md5", "MD5('md5-pass')".into(), None, "md5-pass"),
        (
            "md5_upper",
            "UPPER(MD5('md5-pass'))".into(),
            None,
            "md5-pass",
        ),
        ("sha1", "SHA1('sha1-pass')".into(), None, "sha1-pass"),
        ("sha224", "SHA2('sha2-pass', 224)".into(), None, "sha2-pass"),
        ("sha256", "SHA2('sha2-pass', 256)".into(), None, "sha2-pass"),
        ("sha384", "SHA2('sha2-pass', 384)".into(), None, "sha2-pass"),
        ("sha512", "SHA2('sha2-pass', 512)".into(), None, "sha2-pass"),
        (
            "sha256_salted",
            "SHA2(CONCAT('s4lt', 'salted-pass'), 256)".into(),
            Some("s4lt"),
            "salted-pass",
        ),
        (
            "utf8_user_é",
            "SHA2('pässwörd✓', 256)".into(),
            None,
            "pässwörd✓",
        ),
        (
            "mosquitto7",
            sql_quote(&mosquitto_passwd(&[], "mosq-pass")),
            None,
            "mosq-pass",
        ),
        (
            "mosquitto6",
            sql_quote(&mosquitto_passwd(&["-H", "sha512"], "mosq-pass")),
            None,
            "mosq-pass",
        ),
        // python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac(
        //   'sha256',b'secret',b'XJWTUtSDSMKtwqkZ',901,24)).decode())"   (auth-plug np style)
        (
            "authplug",
            "'PBKDF2$sha256$901$XJWTUtSDSMKtwqkZ$4BFBbpRRlpzGyoiwYxTJjn2Vq6vbm1ky'".into(),
            None,
            "secret",
        ),
        // python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac(
        //   'sha256',b'l\xc3\xa8tmein','seasalt'.encode(),260000)).decode())"   (Django)
        (
            "django",
            "'pbkdf2_sha256$260000$seasalt$YlZ2Vggtqdc61YjArZuoApoBh9JNGYoDRBUGu6tcJQo='".into(),
            None,
            "lètmein",
        ),
        // PHP manual, password_verify(): password_hash("rasmuslerdorf", PASSWORD_DEFAULT)
        (
            "php_bcrypt",
            "'$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a'".into(),
            None,
            "rasmuslerdorf",
        ),
        // python3 -c "import bcrypt; print(bcrypt.hashpw(b'secret',
        //   b'\$2b\$06\$abcdefghijklmnopqrstuu'))"   (Debian python3-bcrypt)
        (
            "py_bcrypt",
            "'$2b$06$abcdefghijklmnopqrstuuxLa0AkDDSrQ9VwNnETzOsObiucpMYgC'".into(),
            None,
            "secret",
        ),
        // python3 -c "import argon2; print(argon2.PasswordHasher(time_cost=2,
        //   memory_cost=1024, parallelism=1).hash('secret'))"   (Debian python3-argon2)
        (
            "argon2id",
            "'$argon2id$v=19$m=1024,t=2,p=1$Yg9nl6NLaWZeJm6mD/4EwA$HjD2XdriDtJBL5NzP/rI9w'".into(),
            None,
            "secret",
        ),
    ];
    for (user, hash_sql, salt, _) in rows {
        add_user(db, &name, user, hash_sql, *salt);
    }
    add_user(
        db,
        &name,
        "unknown_format",
        "'{SSHA}c2VjcmV0c2VjcmV0'",
        None,
    );
    add_user(db, &name, "null_hash", "NULL", None);
    add_user(db, &name, "empty_hash", "''", None);
    add_user(db, &name, "plain_text", "'secret'", None);

    let broker = chat_broker(db, &name, "");
    for (user, _, _, password) in rows {
        assert_login(broker.port, user, password, &format!("{password}x"));
    }
    // The salted row is refused without its salt prefix semantics: the bare digest differs.
    assert_eq!(
        connect(broker.port, "sha256_salted", "s4ltsalted-pass"),
        Outcome::Refused(5)
    );
    // Plain text is never guessed; rows with no usable hash refuse everyone.
    for (user, password) in [
        ("plain_text", "secret"),
        ("unknown_format", "secret"),
        ("null_hash", ""),
        ("null_hash", "x"),
        ("empty_hash", "x"),
        ("no_such_user", "secret"),
    ] {
        assert_eq!(
            connect(broker.port, user, password),
            Outcome::Refused(5),
            "{user}"
        );
    }
    let log = broker.log();
    assert!(
        log.contains("login refused for user 'unknown_format': unrecognised password hash format"),
        "{log}"
    );
    assert!(
        !log.contains("c2VjcmV0c2VjcmV0"),
        "the stored hash reached the log"
    );
    assert!(!log.contains("lètmein"), "a password reached the log");
}

fn salt_and_format_options() {
    let db = shared();
    let name = db.database(&db_name("options"));
    add_user(
        db,
        &name,
        "suffix",
        "SHA2(CONCAT('pw-suffix', 'NaCl'), 512)",
        Some("NaCl"),
    );
    add_user(
        db,
        &name,
        "prefix",
        "SHA2(CONCAT('NaCl', 'pw-prefix'), 512)",
        Some("NaCl"),
    );
    // go-auth: python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac(
    //   'sha512',b'secret',base64.b64decode('c2FsdHlzYWx0'),1000,32)).decode())"
    add_user(
        db,
        &name,
        "goauth",
        "'PBKDF2$sha512$1000$c2FsdHlzYWx0$bPM86XHmloZrmDxX4Lp4XgasTZcBGszSJTEQahAitDY='",
        None,
    );
    add_user(db, &name, "plain", "'pl@in text'", None);
    let base = format!("{}{USERQUERY}", db.plugin_options(&name));

    let suffix = Broker::start(&format!(
        "{base}auth_opt_password_salt_position suffix\nauth_opt_hasher_salt_encoding base64\n"
    ));
    assert_login(suffix.port, "suffix", "pw-suffix", "pw-suffiX");
    assert_eq!(
        connect(suffix.port, "prefix", "pw-prefix"),
        Outcome::Refused(5)
    );
    assert_login(suffix.port, "goauth", "secret", "secret2");
    drop(suffix);

    let default = Broker::start(&base);
    assert_login(default.port, "prefix", "pw-prefix", "pw-prefiX");
    assert_eq!(
        connect(default.port, "suffix", "pw-suffix"),
        Outcome::Refused(5)
    );
    // Without base64 salt decoding the go-auth row uses a different salt: refused.
    assert_eq!(
        connect(default.port, "goauth", "secret"),
        Outcome::Refused(5)
    );
    drop(default);

    let plain = Broker::start(&format!("{base}auth_opt_password_format plain\n"));
    assert_login(plain.port, "plain", "pl@in text", "pl@in tex");
    // A forced format does not fall back to detection.
    assert_eq!(
        connect(plain.port, "prefix", "pw-prefix"),
        Outcome::Refused(5)
    );
}

fn auth_plug_config_works_unchanged() {
    let db = shared();
    let name = db.database(&db_name("authplug"));
    let hash = "'PBKDF2$sha256$901$XJWTUtSDSMKtwqkZ$4BFBbpRRlpzGyoiwYxTJjn2Vq6vbm1ky'";
    for user in ["alice", "Sam", "root_by_query", "o'brien"] {
        add_user(db, &name, user, hash, None);
    }
    db.root_exec(&format!(
        "UPDATE `{name}`.users SET is_superuser = 1 WHERE username = 'root_by_query'"
    ));
    // Lines as an auth-plug user has them (auth_opt_ prefix, '%s' queries, a superusers
    // glob, options of other backends), plus a debug level to see superuser decisions.
    let broker = Broker::start(&format!(
        "auth_opt_backends mysql\n{}\
         auth_opt_userquery SELECT password_hash FROM users WHERE username = '%s' LIMIT 1\n\
         auth_opt_superquery SELECT COUNT(*) FROM users WHERE username = '%s' AND is_superuser = 1\n\
         auth_opt_superusers S*\n\
         auth_opt_acl_cacheseconds 300\n\
         auth_opt_http_hostname localhost\n\
         auth_opt_mysql_opt_reconnect true\n\
         auth_opt_log_level debug\n",
        db.plugin_options(&name)
    ));
    for user in ["alice", "Sam", "root_by_query", "o'brien"] {
        assert_login(broker.port, user, "secret", "secreT");
    }
    let log = broker.log();
    for line in [
        "auth_opt_http_hostname is not used: auth_opt_backends does not name http",
        "auth_opt_mysql_opt_reconnect is not used by chat-auth",
        // auth-plug's query does not show the stored name: the glob is not applied (a
        // case-insensitive table would let `sam` in as `Sam`), and the log says what to add.
        "login accepted for user 'Sam' (user id 'Sam')",
        "user 'Sam' matches auth_opt_superusers, which is not applied",
        "login accepted for user 'root_by_query' (user id 'root_by_query', superuser)",
        "login accepted for user 'alice' (user id 'alice')",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
}

fn config_errors_stop_the_broker() {
    let db = shared();
    let base = db.plugin_options("unused");
    let userquery = "auth_opt_userquery SELECT password_hash FROM users WHERE username = '%s'\n";
    let cases: &[(String, &str)] = &[
        (
            base.clone(),
            "auth_opt_userquery (plugin_opt_userquery): is required",
        ),
        (
            format!("{base}auth_opt_userquery SELECT pw FROM users WHERE username = '%c'\n"),
            "auth_opt_userquery (plugin_opt_userquery): has '%c'",
        ),
        (
            format!("{base}{userquery}auth_opt_backends mysql,redis\n"),
            "auth_opt_backends (plugin_opt_backends): 'redis' is not supported",
        ),
        (
            format!("{base}{userquery}auth_opt_backends mysql,http\n"),
            "auth_opt_http_ip (plugin_opt_http_ip): is required with auth_opt_backends http",
        ),
        (
            format!("{base}{userquery}auth_opt_port 70000\n"),
            "auth_opt_port (plugin_opt_port): '70000'",
        ),
        (
            format!("{base}{userquery}auth_opt_password_format rot13\n"),
            "auth_opt_password_format (plugin_opt_password_format): 'rot13'",
        ),
        (
            format!(
                "{base}{userquery}auth_opt_ssl_enabled true\nauth_opt_ssl_ca /nonexistent.pem\n"
            ),
            "auth_opt_ssl_ca (plugin_opt_ssl_ca): file '/nonexistent.pem' does not exist",
        ),
        (
            format!("{base}{userquery}auth_opt_auth_cachesecond 5\n"),
            "did you mean auth_opt_auth_cacheseconds?",
        ),
    ];
    for (options, expected) in cases {
        match Broker::try_start(options, "") {
            Ok(mut broker) => panic!(
                "broker started (running: {}) with bad options:\n{options}",
                broker.is_running()
            ),
            Err(failure) => {
                assert_ne!(failure.exit_code, Some(0));
                assert!(
                    failure.log.contains(expected),
                    "{expected:?} not in\n{}",
                    failure.log
                );
            }
        }
    }
}

fn hostile_input_never_lets_anyone_in() {
    let db = shared();
    let name = db.database(&db_name("hostile"));
    add_user(db, &name, "alice", "PASSWORD('secret')", None);
    add_user(db, &name, "%s%d%c", "PASSWORD('secret')", None);
    // Many failures for alice in a row: the throttle (tested on its own) would refuse her
    // right password below.
    let options = format!(
        "{}auth_opt_userquery SELECT password_hash FROM users WHERE username = '%s'\n\
         auth_opt_login_throttle_failures 0\n",
        db.plugin_options(&name)
    );
    let mut broker = Broker::start(&options);
    let port = broker.port;
    let long = vec![b'a'; 65_535];
    let refused: &[Credentials] = &[
        (Some(b"' OR '1'='1"), Some(b"' OR '1'='1")),
        (Some(b"alice' -- "), Some(b"x")),
        (Some(b"alice"), Some(b"' OR '1'='1")),
        (Some(b"alice\\"), Some(b"secret")),
        (Some(b"%s"), Some(b"secret")),
        (Some(b"%s%d%c"), Some(b"wrong")),
        (Some(b"alice"), Some(b"\xff\xfe\x00secret")),
        (Some(b"alice"), Some(b"secret\xff")),
        (Some(b"alice"), None),
        (Some(b"alice"), Some(b"")),
        (Some(&long), Some(b"secret")),
        (Some(b"alice"), Some(&long)),
    ];
    for (user, password) in refused {
        let outcome = raw_connect(port, *user, *password);
        // Refused with a CONNACK by the plugin: never accepted, never a crash.
        assert!(
            matches!(outcome, Outcome::Refused(5)),
            "{:?}/{:?}: {outcome:?}",
            user.map(|u| String::from_utf8_lossy(&u[..u.len().min(20)]).into_owned()),
            password.map(|p| p.len())
        );
        assert!(broker.is_running(), "broker died:\n{}", broker.log());
    }
    // A password without a username breaks MQTT 3.1.1: the broker itself drops it.
    assert_ne!(raw_connect(port, None, Some(b"secret")), Outcome::Accepted);
    assert!(broker.is_running());
    // A username with printf sequences is just a name.
    assert_eq!(connect(port, "%s%d%c", "secret"), Outcome::Accepted);
    assert_eq!(connect(port, "alice", "secret"), Outcome::Accepted);
    assert_eq!(
        db.root_column(&format!("SELECT COUNT(*) FROM `{name}`.users"))[0],
        "2",
        "the table is intact"
    );
    drop(broker);

    // A NULL username defers to the broker: allow_anonymous true lets it in, as without
    // the plugin.
    let anonymous = Broker::try_start(&options, "allow_anonymous true").expect("start");
    assert_eq!(raw_connect(anonymous.port, None, None), Outcome::Accepted);
    assert_eq!(
        connect(anonymous.port, "alice", "wrong"),
        Outcome::Refused(5)
    );
}

fn mqtt5_client_sees_not_authorized() {
    let db = shared();
    let name = db.database(&db_name("mqtt5"));
    add_user(db, &name, "alice", "SHA2('secret', 256)", None);
    let broker = chat_broker(db, &name, "");
    assert_eq!(
        connect_v5(broker.port, "alice", "secret"),
        Outcome::Accepted
    );
    assert_eq!(
        connect_v5(broker.port, "alice", "wrong"),
        Outcome::Refused(0x87)
    );
}

fn unix_socket_connection() {
    let db = shared();
    let name = db.database(&db_name("socket"));
    add_user(db, &name, "alice", "MD5('secret')", None);
    // A TCP port nobody listens on: only the socket can make this work.
    let options = format!(
        "{}auth_opt_host 127.0.0.1\nauth_opt_port {}\n{USERQUERY}",
        db.socket_options(&name),
        crate::harness::free_port()
    );
    let broker = Broker::start(&options);
    assert_login(broker.port, "alice", "secret", "Secret");
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &str) {
    let status = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args}");
}

/// A CA, a server certificate for 127.0.0.1, a client certificate, and an unrelated CA.
pub(crate) fn make_certificates() -> std::path::PathBuf {
    let dir = crate::harness::fresh_dir("tls");
    for ca in ["ca", "other-ca"] {
        openssl(
            &dir,
            &format!(
                "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={ca} -keyout {ca}.key -out {ca}.pem"
            ),
        );
    }
    // Extensions make v3 certificates (v1 ones: tls_with_mariadbs_certificate_recipe).
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for name in ["server", "client"] {
        openssl(
            &dir,
            &format!(
                "req -newkey rsa:2048 -nodes -subj /CN={name} -keyout {name}.key -out {name}.csr"
            ),
        );
        openssl(
            &dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                 -out {name}.pem -extfile {name}.ext"
            ),
        );
    }
    dir
}

fn tls_to_mysql() {
    let certs = make_certificates();
    let path = |f: &str| certs.join(f).display().to_string();
    let db = MariaDb::start_new_with(
        "tls",
        &[
            format!("--ssl-ca={}", path("ca.pem")),
            format!("--ssl-cert={}", path("server.pem")),
            format!("--ssl-key={}", path("server.key")),
        ],
    );
    let name = db.database("chat");
    add_user(&db, &name, "alice", "PASSWORD('secret')", None);
    // The plugin's user may only connect over TLS; a second one needs a client certificate.
    db.root_exec(&format!(
        "ALTER USER '{u}'@'%' REQUIRE SSL; ALTER USER '{u}'@'localhost' REQUIRE SSL; \
         CREATE USER 'x509'@'%' IDENTIFIED BY 'x509-pw' REQUIRE X509; \
         CREATE USER 'x509'@'localhost' IDENTIFIED BY 'x509-pw' REQUIRE X509; \
         GRANT SELECT ON `{name}`.* TO 'x509'@'%'; \
         GRANT SELECT ON `{name}`.* TO 'x509'@'localhost'",
        u = crate::harness::DB_USER
    ));
    let base = format!("{}{USERQUERY}", db.plugin_options(&name));

    let tls = Broker::start(&format!(
        "{base}auth_opt_ssl_enabled true\nauth_opt_ssl_ca {}\n",
        path("ca.pem")
    ));
    assert_login(tls.port, "alice", "secret", "wrong");
    drop(tls);

    // Without TLS the server refuses the plugin's user: logins are refused, not allowed.
    let plain = Broker::start(&base);
    assert_eq!(connect(plain.port, "alice", "secret"), Outcome::Refused(5));
    drop(plain);

    // A server certificate from another CA fails verification.
    let wrong_ca = Broker::start(&format!(
        "{base}auth_opt_ssl_enabled true\nauth_opt_ssl_ca {}\n",
        path("other-ca.pem")
    ));
    assert_eq!(
        connect(wrong_ca.port, "alice", "secret"),
        Outcome::Refused(5)
    );
    drop(wrong_ca);

    // A client certificate for a REQUIRE X509 user.
    let x509 = format!(
        "auth_opt_host 127.0.0.1\nauth_opt_port {}\nauth_opt_dbname {name}\n\
         auth_opt_user x509\nauth_opt_pass x509-pw\n{USERQUERY}\
         auth_opt_ssl_enabled true\nauth_opt_ssl_ca {}\n",
        db.port,
        path("ca.pem")
    );
    let with_cert = Broker::start(&format!(
        "{x509}auth_opt_ssl_cert {}\nauth_opt_ssl_key {}\n",
        path("client.pem"),
        path("client.key")
    ));
    assert_login(with_cert.port, "alice", "secret", "wrong");
    drop(with_cert);
    let without_cert = Broker::start(&x509);
    assert_eq!(
        connect(without_cert.port, "alice", "secret"),
        Outcome::Refused(5)
    );
}

/// MariaDB's documented certificate recipe ("Certificate Creation with OpenSSL"), run as
/// written on Debian 12's OpenSSL 3.0, with `-subj` for the questions it asks: X.509 v1
/// server and client certificates, which libmysqlclient (auth-plug) accepts and rustls
/// refused. Also the CA as a directory (`ssl_capath`, hashed by `openssl rehash`).
fn tls_with_mariadbs_certificate_recipe() {
    let dir = crate::harness::fresh_dir("mariadb-recipe");
    let recipe = "set -e
        openssl genrsa 2048 > ca-key.pem
        openssl req -new -x509 -nodes -days 365000 -key ca-key.pem -out ca-cert.pem \
            -subj '/CN=MariaDB admin CA'
        openssl req -newkey rsa:2048 -days 365000 -nodes -keyout server-key.pem \
            -out server-req.pem -subj '/CN=localhost'
        openssl rsa -in server-key.pem -out server-key.pem
        openssl x509 -req -in server-req.pem -days 365000 -CA ca-cert.pem -CAkey ca-key.pem \
            -set_serial 01 -out server-cert.pem
        openssl req -newkey rsa:2048 -days 365000 -nodes -keyout client-key.pem \
            -out client-req.pem -subj '/CN=chat-auth'
        openssl rsa -in client-key.pem -out client-key.pem
        openssl x509 -req -in client-req.pem -days 365000 -CA ca-cert.pem -CAkey ca-key.pem \
            -set_serial 01 -out client-cert.pem
        openssl verify -CAfile ca-cert.pem server-cert.pem client-cert.pem
        mkdir capath other
        cp ca-cert.pem capath/
        openssl rehash capath
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other -keyout other/k.pem \
            -out other/other-ca.pem";
    let status = Command::new("sh")
        .arg("-c")
        .arg(recipe)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the recipe");
    assert!(status.success(), "MariaDB's recipe failed");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "client-cert.pem"])
        .current_dir(&dir)
        .output()
        .expect("openssl x509");
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"),
        "the recipe makes v1 certificates"
    );
    let path = |f: &str| dir.join(f).display().to_string();
    let db = MariaDb::start_new_with(
        "tls-recipe",
        &[
            format!("--ssl-ca={}", path("ca-cert.pem")),
            format!("--ssl-cert={}", path("server-cert.pem")),
            format!("--ssl-key={}", path("server-key.pem")),
        ],
    );
    let name = db.database("chat");
    add_user(&db, &name, "alice", "PASSWORD('secret')", None);
    db.root_exec(&format!(
        "CREATE USER 'x509'@'%' IDENTIFIED BY 'x509-pw' REQUIRE X509; \
         CREATE USER 'x509'@'localhost' IDENTIFIED BY 'x509-pw' REQUIRE X509; \
         GRANT SELECT ON `{name}`.* TO 'x509'@'%'; \
         GRANT SELECT ON `{name}`.* TO 'x509'@'localhost'"
    ));
    // The host name is the server certificate's CN (a v1 certificate has no SAN).
    let base = format!(
        "auth_opt_host localhost\nauth_opt_port {}\nauth_opt_dbname {name}\n\
         auth_opt_user x509\nauth_opt_pass x509-pw\n{USERQUERY}auth_opt_ssl_enabled true\n\
         auth_opt_ssl_cert {}\nauth_opt_ssl_key {}\n",
        db.port,
        path("client-cert.pem"),
        path("client-key.pem")
    );
    let with_ca = Broker::start(&format!(
        "{base}auth_opt_ssl_ca {}\nauth_opt_ssl_cipher DHE-RSA-AES256-SHA\n",
        path("ca-cert.pem")
    ));
    assert_login(with_ca.port, "alice", "secret", "wrong");
    assert!(
        with_ca
            .log()
            .contains("auth_opt_ssl_cipher 'DHE-RSA-AES256-SHA' is not applied"),
        "{}",
        with_ca.log()
    );
    drop(with_ca);
    let with_capath = Broker::start(&format!("{base}auth_opt_ssl_capath {}\n", path("capath")));
    assert_login(with_capath.port, "alice", "secret", "wrong");
    drop(with_capath);
    // Verification stays on: a directory of another CA is refused, and so are logins.
    let wrong = Broker::start(&format!("{base}auth_opt_ssl_capath {}\n", path("other")));
    assert_eq!(connect(wrong.port, "alice", "secret"), Outcome::Refused(5));
    drop(wrong);
    // A key that is not the certificate's stops the broker, naming the option.
    let failure = Broker::try_start(
        &format!(
            "auth_opt_host localhost\nauth_opt_port {}\n{USERQUERY}auth_opt_ssl_enabled true\n\
             auth_opt_ssl_cert {}\nauth_opt_ssl_key {}\n",
            db.port,
            path("client-cert.pem"),
            path("server-key.pem")
        ),
        "",
    )
    .map(|_| ())
    .expect_err("a mismatched key");
    assert!(
        failure
            .log
            .contains("auth_opt_ssl_key (plugin_opt_ssl_key): "),
        "{}",
        failure.log
    );
}

/// The shipped example configs, with only the machine-specific lines rewritten: the
/// listener port, the plugin path, and where the database is.
fn example_configs_work() {
    let db = shared();
    let name = db.database(&db_name("examples"));
    add_user(db, &name, "alice", "PASSWORD('secret')", None);
    add_user(db, &name, "Sam", "MD5('secret')", None);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for example in ["chat.conf", "auth-plug.conf"] {
        let text = std::fs::read_to_string(repo.join("mosquitto-conf").join(example)).unwrap();
        let port = crate::harness::free_port();
        let conf: String = text
            .lines()
            .map(|line| {
                let key = line.split_whitespace().next().unwrap_or("");
                let option = key
                    .strip_prefix("auth_opt_")
                    .or_else(|| key.strip_prefix("plugin_opt_"));
                let replaced = match (key, option) {
                    ("listener", _) => format!("listener {port} 127.0.0.1"),
                    ("auth_plugin" | "plugin", _) => {
                        format!("{key} {}", crate::harness::plugin_path().display())
                    }
                    (_, Some("host")) => format!("{key} 127.0.0.1"),
                    (_, Some("port")) => format!("{key} {}", db.port),
                    (_, Some("dbname")) => format!("{key} {name}"),
                    (_, Some("user")) => format!("{key} {}", crate::harness::DB_USER),
                    (_, Some("pass")) => format!("{key} {}", crate::harness::DB_PASS),
                    (_, Some("persist_spool_dir")) => {
                        format!("{key} {}", crate::harness::fresh_dir("spool").display())
                    }
                    _ => line.to_string(),
                };
                replaced + "\n"
            })
            .collect();
        let broker = Broker::run(&conf, port)
            .unwrap_or_else(|f| panic!("{example} did not start:\n{}", f.log));
        assert_login(broker.port, "alice", "secret", "wrong");
        assert_login(broker.port, "Sam", "secret", "wrong");
    }
}

fn credential_cache() {
    let db = shared();
    let name = db.database(&db_name("cache"));
    add_user(db, &name, "alice", "SHA2('old', 256)", None);
    let broker = chat_broker(db, &name, "auth_opt_auth_cacheseconds 3\n");
    assert_eq!(connect(broker.port, "alice", "old"), Outcome::Accepted);
    let changed = Instant::now();
    db.root_exec(&format!(
        "UPDATE `{name}`.users SET password_hash = SHA2('new', 256) WHERE username = 'alice'"
    ));
    // The old password is answered from the cache until the cache time has passed...
    assert_eq!(connect(broker.port, "alice", "old"), Outcome::Accepted);
    assert!(
        changed.elapsed() < Duration::from_secs(3),
        "test too slow to prove caching"
    );
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(changed.elapsed()) + Duration::from_millis(300),
    );
    assert_eq!(connect(broker.port, "alice", "old"), Outcome::Refused(5));
    assert_eq!(connect(broker.port, "alice", "new"), Outcome::Accepted);
    // ...and a login with the new password replaces the cached one at once.
    db.root_exec(&format!(
        "UPDATE `{name}`.users SET password_hash = SHA2('newer', 256) WHERE username = 'alice'"
    ));
    assert_eq!(connect(broker.port, "alice", "newer"), Outcome::Accepted);
    assert_eq!(connect(broker.port, "alice", "new"), Outcome::Refused(5));
}

fn passwd_tool_hashes_log_in() {
    let db = shared();
    let name = db.database(&db_name("tool"));
    let tool = env!("CARGO_BIN_EXE_chat-auth-passwd");
    let formats: &[&[&str]] = &[
        &[],
        &[
            "--format",
            "pbkdf2",
            "--algorithm",
            "sha256",
            "--iterations",
            "901",
        ],
        &["--format", "mosquitto", "--iterations", "101"],
        &["--format", "django", "--iterations", "1000"],
        &["--format", "bcrypt", "--cost", "4"],
        &["--format", "argon2id"],
    ];
    for (i, args) in formats.iter().enumerate() {
        let out = Command::new(tool)
            .args(*args)
            .arg(format!("tool-pw-{i}"))
            .output()
            .expect("run chat-auth-passwd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8(out.stdout).unwrap();
        if args.is_empty() {
            assert!(hash.starts_with("PBKDF2$sha512$20000$"), "default: {hash}");
        }
        add_user(
            db,
            &name,
            &format!("tool{i}"),
            &sql_quote(hash.trim()),
            None,
        );
    }
    let broker = chat_broker(db, &name, "");
    for i in 0..formats.len() {
        assert_login(
            broker.port,
            &format!("tool{i}"),
            &format!("tool-pw-{i}"),
            "nope",
        );
    }
}

/// A private server for the tests that stop it.
fn private_server(name: &str) -> (MariaDb, String) {
    let db = MariaDb::start_new(name);
    let dbname = db.database("chat");
    add_user(&db, &dbname, "alice", "PASSWORD('secret')", None);
    (db, dbname)
}

fn mysql_down_at_start() {
    let (db, dbname) = private_server("down-at-start");
    db.stop();
    let broker = chat_broker(&db, &dbname, "");
    // Refused with a CONNACK (not a dropped socket), and quickly.
    let start = Instant::now();
    assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Refused(5));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    db.start();
    eventually("login after MySQL came up", Duration::from_secs(10), || {
        connect(broker.port, "alice", "secret") == Outcome::Accepted
    });
    // The prober's lines reach the log at the broker thread's next tick.
    eventually(
        "the outage and the recovery logged",
        Duration::from_secs(5),
        || {
            let log = broker.log();
            log.contains("MySQL unreachable") && log.contains("MySQL answers again")
        },
    );
}

fn mysql_restarted_mid_run() {
    let (db, dbname) = private_server("restart");
    let broker = chat_broker(&db, &dbname, "");
    assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Accepted);
    db.stop();
    assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Refused(5));
    assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Refused(5));
    db.start();
    eventually("login after MySQL restart", Duration::from_secs(10), || {
        connect(broker.port, "alice", "secret") == Outcome::Accepted
    });
    assert_eq!(connect(broker.port, "alice", "wrong"), Outcome::Refused(5));
}

fn hung_mysql_costs_at_most_the_timeout() {
    let (db, dbname) = private_server("hung");
    let broker = chat_broker(
        &db,
        &dbname,
        "auth_opt_connect_timeout_ms 1000\nauth_opt_query_timeout_ms 1000\n",
    );
    assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Accepted);
    db.pause();
    // The first login after the hang waits for the timeout (ping + query, bounded); later
    // ones are refused at once, while the prober waits in the background.
    let start = Instant::now();
    assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Refused(5));
    let first = start.elapsed();
    assert!(
        first < Duration::from_millis(4_500),
        "first login took {first:?}"
    );
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(connect(broker.port, "alice", "secret"), Outcome::Refused(5));
    }
    // Waiting for the timeout each would take 5 s; a loaded CI machine needs some slack.
    let five = start.elapsed();
    assert!(
        five < Duration::from_millis(2_500),
        "five logins took {five:?}"
    );
    db.resume();
    eventually("login after MySQL resumed", Duration::from_secs(10), || {
        connect(broker.port, "alice", "secret") == Outcome::Accepted
    });
}

/// A mosquitto-go-auth tutorial's MySQL configuration, word for word but for the host,
/// port and credentials: go-auth's option names, a bcrypt user, `superquery` and an
/// `aclquery` with `?` and go-auth's access levels (1 read, 2 write, 4 subscribe, summed).
fn mosquitto_go_auth_config_works() {
    let db = shared();
    let name = db_name("goauth");
    let hash = |password: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_chat-auth-passwd"))
            .args(["--format", "bcrypt", "--cost", "10", password])
            .output()
            .expect("run chat-auth-passwd");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    db.root_exec(&format!(
        "CREATE DATABASE `{name}`; USE `{name}`;
         CREATE TABLE test_user (id INT PRIMARY KEY AUTO_INCREMENT, username VARCHAR(100),
           password_hash VARCHAR(200), is_admin BOOLEAN);
         CREATE TABLE test_acl (id INT PRIMARY KEY AUTO_INCREMENT, test_user_id INT,
           topic VARCHAR(200), rw INT);
         INSERT INTO test_user (id, username, password_hash, is_admin) VALUES
           (1, 'test', '{}', 0), (2, 'admin', '{}', 1);
         INSERT INTO test_acl (test_user_id, topic, rw) VALUES
           (1, 'test/topic/1', 1), (1, 'test/topic/2', 2), (1, 'test/sub/#', 5);
         GRANT SELECT ON `{name}`.* TO '{DB_USER}'@'%';
         GRANT SELECT ON `{name}`.* TO '{DB_USER}'@'localhost'",
        hash("test-pw"),
        hash("admin-pw"),
    ));
    let conf = format!(
        "auth_opt_backends mysql\n\
         auth_opt_hasher bcrypt\n\
         auth_opt_hasher_cost 10\n\
         auth_opt_log_level debug\n\
         auth_opt_log_dest file\n\
         auth_opt_log_file /var/log/mosquitto/mosquitto.log\n\
         auth_opt_mysql_protocol tcp\n\
         auth_opt_mysql_allow_native_passwords true\n\
         auth_opt_mysql_host 127.0.0.1\n\
         auth_opt_mysql_port {port}\n\
         auth_opt_mysql_dbname {name}\n\
         auth_opt_mysql_user {DB_USER}\n\
         auth_opt_mysql_password {DB_PASS}\n\
         auth_opt_mysql_connect_tries 5\n\
         auth_opt_mysql_userquery SELECT password_hash FROM test_user WHERE username = ? limit 1\n\
         auth_opt_mysql_superquery SELECT COUNT(*) FROM test_user WHERE username = ? AND is_admin = 1\n\
         auth_opt_mysql_aclquery SELECT topic FROM test_acl WHERE test_user_id = (SELECT id FROM test_user WHERE username = ?) AND (rw >= ?)\n",
        port = db.port,
    );
    let broker = Broker::start(&conf);
    let mut test = crate::mqtt::Mqtt::connect(broker.port, "goauth-test", "test", "test-pw");
    // rw 5 = read + subscribe; rw 1 (read only) is no subscribe row for go-auth.
    assert_eq!(test.subscribe("test/sub/a"), 1);
    assert_eq!(test.subscribe("test/topic/1"), 0x87);
    assert!(crate::mqtt::accepted(test.publish(
        "test/topic/2",
        "x",
        false
    )));
    assert_eq!(test.publish("test/topic/1", "x", false), 0x87);
    let mut admin = crate::mqtt::Mqtt::connect(broker.port, "goauth-admin", "admin", "admin-pw");
    assert_eq!(admin.subscribe("#"), 1);
    assert_eq!(connect(broker.port, "test", "wrong"), Outcome::Refused(5));
    let log = broker.log();
    assert!(
        log.contains("auth_opt_hasher_cost (mosquitto-go-auth) changes nothing"),
        "{log}"
    );
    assert!(!log.contains("is not a chat-auth option"), "{log}");
}
