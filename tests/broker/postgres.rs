//! The PostgreSQL backend through the real broker, against a private PostgreSQL server
//! (Debian's `postgresql-15`, `initdb` under target/tmp): auth-plug's and go-auth's
//! configurations verbatim, superusers, ACL rows with `$2`, chat groups from a PostgreSQL
//! table, outages, a `mysql,postgres` chain, TLS with a client certificate and EMQX's table.

use crate::acl::{assert_chat, chat_db};
use crate::fixtures::chat;
use crate::harness::{Broker, Outcome, PG_PASS, PG_USER, Postgres, connect, eventually, shared};
use crate::mqtt::{Mqtt, accepted};
use libtest_mimic::Trial;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        ("postgres::auth_plugs_config", auth_plugs_config),
        ("postgres::go_auths_config", go_auths_config),
        (
            "postgres::wrong_query_stops_the_broker",
            wrong_query_stops_the_broker,
        ),
        (
            "postgres::storage_is_refused_without_mysql",
            storage_is_refused_without_mysql,
        ),
        (
            "postgres::chat_groups_from_postgres",
            chat_groups_from_postgres,
        ),
        ("postgres::outages", outages),
        (
            "postgres::refresh_and_sighup_reread_postgres",
            refresh_and_sighup_reread_postgres,
        ),
        ("postgres::chain_mysql_postgres", chain_mysql_postgres),
        ("postgres::emqx_table", emqx_table),
        (
            "postgres::tls_verify_full_with_a_client_certificate",
            tls_verify_full_with_a_client_certificate,
        ),
    ];
    crate::trials(tests)
}

const PASSWORD: &str = "s3cret pw";
/// SUBACK / PUBACK reason code "not authorized".
const NOT_AUTHORIZED: u8 = 0x87;
const SOON: Duration = Duration::from_secs(5);

/// auth-plug's PBKDF2 of `PASSWORD` (salt `ap-salt-1234`, 901 rounds, 24 bytes), made with
/// Python: `hashlib.pbkdf2_hmac('sha256', pw, b'ap-salt-1234', 901, 24)`, base64.
const AUTH_PLUG_HASH: &str = "PBKDF2$sha256$901$ap-salt-1234$nMBFp7G20CLeREl2gU6Iemz5+nHv0efn";
/// auth-plug's PBKDF2 of `another pw` (as `AUTH_PLUG_HASH`): a password changed in the table.
const ANOTHER_PASSWORDS_HASH: &str =
    "PBKDF2$sha256$901$ap-salt-1234$cPR8h3naVJFEoDfH5pjTaDPd/dOwFcbl";
/// go-auth's PBKDF2 of `PASSWORD`: the salt is base64 (bytes 0..16), as go-auth decodes it;
/// `hashlib.pbkdf2_hmac('sha512', pw, bytes(range(16)), 1000, 64)`, base64.
const GO_AUTH_HASH: &str = "PBKDF2$sha512$1000$AAECAwQFBgcICQoLDA0ODw==$SU17BT6eAifOhc0BDneporBVMk3IJpPRGu2V9mlgxcHig3sIjY//HEj3UUgsI0ixNURwPWslm/Hl1vKGkPESjQ==";

/// auth-plug's PostgreSQL tables (its README's), with rows.
fn auth_plug_schema() -> String {
    format!(
        "CREATE TABLE account (id SERIAL, username TEXT NOT NULL, pw TEXT, \
           super smallint DEFAULT 0 NOT NULL, PRIMARY KEY (id));
         CREATE TABLE acls (id SERIAL, username TEXT NOT NULL, topic TEXT NOT NULL, \
           rw INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (id));
         INSERT INTO account (username, pw, super) VALUES
           ('alice', '{AUTH_PLUG_HASH}', 0), ('root', '{AUTH_PLUG_HASH}', 1),
           ('nohash', NULL, 0);
         INSERT INTO acls (username, topic, rw) VALUES
           ('alice', 'sensors/%u/#', 1), ('alice', 'cmd/%c', 2), ('alice', 'both/#', 3);"
    )
}

/// auth-plug's PostgreSQL configuration, verbatim but for the server's address.
fn auth_plug_options(pg: &Postgres, dbname: &str) -> String {
    format!(
        "auth_opt_backends postgres\n\
         auth_opt_host 127.0.0.1\n\
         auth_opt_port {}\n\
         auth_opt_dbname {dbname}\n\
         auth_opt_user {PG_USER}\n\
         auth_opt_pass {PG_PASS}\n\
         auth_opt_userquery SELECT pw FROM account WHERE username = $1 limit 1\n\
         auth_opt_superquery SELECT COUNT(*) FROM account WHERE username = $1 AND super = 1\n\
         auth_opt_aclquery SELECT topic FROM acls WHERE (username = $1) AND (rw & $2) > 0\n",
        pg.port
    )
}

/// Rules and rows change in PostgreSQL: `refreshUser` brings the new ACL rows to a connected
/// client, and a SIGHUP re-check disconnects a client whose password changed, as for MySQL.
fn refresh_and_sighup_reread_postgres() {
    let pg = Postgres::start_new("pg-refresh");
    let dbname = pg.database("refresh", &auth_plug_schema());
    let broker = Broker::start(&auth_plug_options(&pg, &dbname));
    let mut alice = Mqtt::connect(broker.port, "dev/1", "alice", PASSWORD);
    assert_eq!(alice.subscribe("extra/+"), NOT_AUTHORIZED);
    pg.exec(
        &dbname,
        "INSERT INTO acls (username, topic, rw) VALUES ('alice', 'extra/#', 1);",
    );
    let mut root = Mqtt::connect(broker.port, "root-1", "root", PASSWORD);
    assert_eq!(root.subscribe("$CONTROL/chat-auth/v1/response"), 1);
    let refreshed = crate::acl::control(
        &mut root,
        serde_json::json!({"command": "refreshUser", "username": "alice"}),
    );
    assert_eq!(refreshed["data"]["clients"], 1, "{refreshed}");
    // The rules load in the background and apply at a TICK.
    eventually("alice's new ACL row", SOON, || {
        alice.subscribe("extra/+") == 1
    });
    // A SIGHUP re-checks every client; alice's row now holds another password.
    pg.exec(
        &dbname,
        &format!("UPDATE account SET pw = '{ANOTHER_PASSWORDS_HASH}' WHERE username = 'alice';"),
    );
    broker.signal(libc::SIGHUP);
    assert!(
        alice.closed_within(Duration::from_secs(10)),
        "alice kept her connection after her password changed"
    );
    // root's row did not change: still connected, still a superuser.
    assert_eq!(root.subscribe("#"), 1);
    assert_eq!(
        connect(broker.port, "alice", "another pw"),
        Outcome::Accepted
    );
    // Refusals last: a failed login throttles the next ones for a moment.
    assert_eq!(connect(broker.port, "alice", PASSWORD), Outcome::Refused(5));
}

fn auth_plugs_config() {
    let pg = Postgres::start_new("pg-authplug");
    let dbname = pg.database("authplug", &auth_plug_schema());
    let broker = Broker::start(&auth_plug_options(&pg, &dbname));
    let log = broker.log();
    assert!(
        log.contains("started: backends postgres (PostgreSQL 127.0.0.1:"),
        "{log}"
    );
    // auth-plug's meaning: the chat rules are on; storage is MySQL's, and off here.
    assert!(log.contains("chat storage and history off"), "{log}");
    // No group_members table: the default groups query is set aside, said once.
    assert!(
        log.contains("auth_opt_pg_groupsquery is not given and its default is refused"),
        "{log}"
    );
    assert_eq!(connect(broker.port, "alice", PASSWORD), Outcome::Accepted);
    let mut alice = Mqtt::connect(broker.port, "dev/1", "alice", PASSWORD);
    // rw 1 (bit 1, $2 = 1): read and subscribe only.
    assert_eq!(alice.subscribe("sensors/alice/+"), 1);
    assert_eq!(alice.subscribe("sensors/bob/#"), NOT_AUTHORIZED);
    assert_eq!(alice.publish("sensors/alice/t", "1", false), NOT_AUTHORIZED);
    // rw 2 ($2 = 2): write; %c is the client id.
    assert!(accepted(alice.publish("cmd/dev/1", "go", false)));
    assert_eq!(alice.publish("cmd/dev/2", "go", false), NOT_AUTHORIZED);
    assert_eq!(alice.subscribe("cmd/dev/1"), NOT_AUTHORIZED);
    // rw 3: both.
    assert_eq!(alice.subscribe("both/+"), 1);
    assert!(accepted(alice.publish("both/x", "1", false)));
    assert_eq!(
        alice
            .message_on("both/x", SOON)
            .expect("own message")
            .payload,
        b"1"
    );
    // Her inbox (the chat rules, with the username as her identity); no one else's.
    assert_eq!(alice.subscribe("/users/alice/messages"), 1);
    assert_eq!(alice.subscribe("/users/root/messages"), NOT_AUTHORIZED);

    // The superquery's superuser goes everywhere.
    let mut root = Mqtt::connect(broker.port, "root-1", "root", PASSWORD);
    assert_eq!(root.subscribe("#"), 1);
    assert!(accepted(root.publish("anything/at/all", "x", false)));

    // Refusals last: a failed login throttles the next ones for a moment.
    assert!(matches!(
        connect(broker.port, "alice", "wrong"),
        Outcome::Refused(4 | 5)
    ));
    assert!(matches!(
        connect(broker.port, "nobody", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
    assert!(matches!(
        connect(broker.port, "nohash", ""),
        Outcome::Refused(4 | 5)
    ));
    // A name that is SQL is only ever a bound value.
    assert!(matches!(
        connect(broker.port, "x' OR '1'='1", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
}

/// go-auth's PostgreSQL tables (its README's test schema), with rows.
fn go_auth_schema() -> String {
    format!(
        "CREATE TABLE test_user (id bigserial primary key, username character varying(100) \
           not null, password_hash character varying(200) not null, is_admin boolean not null);
         CREATE TABLE test_acl (id bigserial primary key, test_user_id bigint not null \
           references test_user on delete cascade, topic character varying(200) not null, \
           rw int not null);
         INSERT INTO test_user (username, password_hash, is_admin) VALUES
           ('test', '{GO_AUTH_HASH}', false), ('admin', '{GO_AUTH_HASH}', true);
         INSERT INTO test_acl (test_user_id, topic, rw) VALUES
           (1, 'test/topic/1', 1), (1, 'test/topic/2', 2), (1, 'both/#', 3);"
    )
}

fn go_auths_config() {
    let pg = Postgres::start_new("pg-goauth");
    let dbname = pg.database("goauth", &go_auth_schema());
    let broker = Broker::start(&format!(
        "auth_opt_backends postgres\n\
         auth_opt_hasher pbkdf2\n\
         {}\
         auth_opt_pg_userquery select password_hash from test_user where username = $1 limit 1\n\
         auth_opt_pg_superquery select count(*) from test_user where username = $1 and is_admin = true\n\
         auth_opt_pg_aclquery SELECT test_acl.topic FROM test_acl, test_user WHERE \
         test_user.username = $1 AND test_acl.test_user_id = test_user.id AND \
         (rw = $2 or rw = 3)\n\
         auth_opt_pg_connect_tries 3\n\
         auth_opt_pg_max_life_time 60\n",
        pg.pg_options(&dbname)
    ));
    let log = broker.log();
    // go-auth's meanings: no chat model, its rows and superusers decide.
    assert!(log.contains("chat topics off"), "{log}");
    assert!(log.contains("ACL rows from pg_aclquery"), "{log}");
    assert!(log.contains("auth_opt_pg_connect_tries (mosquitto-go-auth) changes nothing"));
    let mut test = Mqtt::connect(broker.port, "test-1", "test", PASSWORD);
    assert_eq!(test.subscribe("test/topic/1"), 1);
    assert_eq!(test.publish("test/topic/1", "x", false), NOT_AUTHORIZED);
    assert!(accepted(test.publish("test/topic/2", "x", false)));
    assert_eq!(test.subscribe("test/topic/2"), NOT_AUTHORIZED);
    assert_eq!(test.subscribe("both/+"), 1);
    assert!(accepted(test.publish("both/x", "1", false)));
    assert_eq!(test.subscribe("other/topic"), NOT_AUTHORIZED);
    let mut admin = Mqtt::connect(broker.port, "admin-1", "admin", PASSWORD);
    assert_eq!(admin.subscribe("#"), 1);
    assert!(accepted(admin.publish("other/topic", "x", false)));
    assert!(matches!(
        connect(broker.port, "test", "nope"),
        Outcome::Refused(4 | 5)
    ));
}

/// A query PostgreSQL refuses (a column that does not exist) stops the broker at start,
/// naming the option; so does a column chat-auth cannot read.
fn wrong_query_stops_the_broker() {
    let pg = Postgres::start_new("pg-wrongquery");
    let dbname = pg.database("wrong", &auth_plug_schema());
    for (query, named) in [
        (
            "auth_opt_aclquery SELECT topik FROM acls WHERE username = $1 AND (rw & $2) > 0",
            "auth_opt_aclquery (plugin_opt_aclquery) is refused by PostgreSQL",
        ),
        (
            "auth_opt_superquery SELECT 1.5::numeric FROM account WHERE username = $1",
            "which chat-auth does not read",
        ),
    ] {
        let options = format!("{}{query}\n", auth_plug_options(&pg, &dbname));
        let started = Instant::now();
        let failure = Broker::try_start(&options, "")
            .err()
            .expect("the broker must not start");
        assert!(failure.log.contains(named), "{}", failure.log);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

fn storage_is_refused_without_mysql() {
    let pg = Postgres::start_new("pg-nostorage");
    let dbname = pg.database("nostorage", &auth_plug_schema());
    let spool = crate::harness::fresh_dir("pg-spool");
    let failure = Broker::try_start(
        &format!(
            "{}auth_opt_persist_enabled true\nauth_opt_persist_spool_dir {}\n",
            auth_plug_options(&pg, &dbname),
            spool.display()
        ),
        "",
    )
    .err()
    .expect("storage without MySQL must not start");
    assert!(
        failure.log.contains(
            "auth_opt_persist_enabled (plugin_opt_persist_enabled): needs the mysql backend"
        ),
        "{}",
        failure.log
    );
}

/// SHA-256 of `PASSWORD` in hex, as `hashlib.sha256(pw).hexdigest()` makes it.
const SHA256_HEX: &str = "8e9db16991b49296e67dbf42c2eff4a2c45578812a58e00131a0f70a26e4d3f2";

/// The chat model's tables in PostgreSQL: users with ids, groups and their members.
fn chat_schema(first_id: u32) -> String {
    let (a, b, c) = (first_id, first_id + 1, first_id + 2);
    format!(
        "CREATE TABLE users (id integer PRIMARY KEY, username text NOT NULL UNIQUE, \
           password_hash text, salt text, is_superuser boolean NOT NULL DEFAULT false);
         CREATE TABLE group_members (group_id integer NOT NULL, user_id integer NOT NULL);
         INSERT INTO users (id, username, password_hash, is_superuser) VALUES
           ({a}, 'pia', '{SHA256_HEX}', false), ({b}, 'paul', '{SHA256_HEX}', false),
           ({c}, 'pete', '{SHA256_HEX}', false), ({}, 'padmin', '{SHA256_HEX}', true);
         INSERT INTO group_members (group_id, user_id) VALUES (50, {a}), (50, {b});",
        first_id + 3
    )
}

const CHAT_USERQUERY: &str = "auth_opt_pg_userquery SELECT password_hash, salt, id AS user_id, \
     is_superuser, username FROM users WHERE username = $1 LIMIT 1\n";

/// Chat identities and groups from PostgreSQL: inboxes by `user_id`, group membership from
/// `pg_groupsquery`, chat messages validated and stamped (storage off).
fn chat_groups_from_postgres() {
    let pg = Postgres::start_new("pg-groups");
    let dbname = pg.database("groups", &chat_schema(1));
    let broker = Broker::start(&format!(
        "auth_opt_backends postgres\n{}{CHAT_USERQUERY}auth_opt_chat_enabled true\n\
         auth_opt_pg_groupsquery SELECT group_id FROM group_members WHERE user_id = $1\n",
        pg.pg_options(&dbname)
    ));
    let mut pia = Mqtt::connect(broker.port, "pia-1", "pia", PASSWORD);
    let mut paul = Mqtt::connect(broker.port, "paul-1", "paul", PASSWORD);
    let mut pete = Mqtt::connect(broker.port, "pete-1", "pete", PASSWORD);
    assert_eq!(pia.subscribe("/users/1/messages"), 1);
    assert_eq!(paul.subscribe("/users/2/messages"), 1);
    assert_eq!(pia.subscribe("/users/2/messages"), NOT_AUTHORIZED);
    let group = "/groups/50/messages";
    assert_eq!(pia.subscribe(group), 1);
    assert_eq!(paul.subscribe(group), 1);
    assert_eq!(pete.subscribe(group), NOT_AUTHORIZED);
    assert_eq!(
        pete.publish(group, chat("GROUPCHAT", 3, 50, "let me in"), false),
        NOT_AUTHORIZED
    );
    // A chat message to paul's inbox is validated and stamped.
    let text = chat("CHAT", 1, 2, "hello paul");
    assert!(accepted(pia.publish(
        "/users/2/messages",
        text.clone(),
        false
    )));
    let got = paul
        .message_on("/users/2/messages", SOON)
        .expect("paul's message");
    assert_chat(&got.payload, &text);
    // A fromId that is not hers is refused.
    assert_eq!(
        pia.publish("/users/2/messages", chat("CHAT", 2, 2, "forged"), false),
        NOT_AUTHORIZED
    );
    let text = chat("GROUPCHAT", 2, 50, "team");
    assert!(accepted(paul.publish(group, text.clone(), false)));
    assert_chat(
        &pia.message_on(group, SOON).expect("group message").payload,
        &text,
    );
    // The is_superuser column.
    let mut padmin = Mqtt::connect(broker.port, "padmin-1", "padmin", PASSWORD);
    assert_eq!(padmin.subscribe("#"), 1);
}

/// Down at start, restarted, paused: logins are refused with a CONNACK in bounded time and
/// accepted again once the server answers, with no broker restart.
fn outages() {
    let pg = Postgres::start_new("pg-outages");
    let dbname = pg.database("outages", &chat_schema(1));
    pg.stop();
    let options = format!(
        "auth_opt_backends postgres\n{}{CHAT_USERQUERY}auth_opt_chat_enabled false\n\
         auth_opt_connect_timeout_ms 500\nauth_opt_query_timeout_ms 500\n",
        pg.pg_options(&dbname)
    );
    // Down at start: the broker starts, logins are refused.
    let broker = Broker::start(&options);
    assert!(
        broker.log().contains("PostgreSQL unreachable"),
        "{}",
        broker.log()
    );
    let refused_soon = |what: &str| {
        let started = Instant::now();
        let outcome = connect(broker.port, "pia", PASSWORD);
        assert!(
            matches!(outcome, Outcome::Refused(_)),
            "{what}: {outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: refused after {:?}",
            started.elapsed()
        );
    };
    refused_soon("down at start");
    pg.start();
    eventually(
        "a login once PostgreSQL is up",
        Duration::from_secs(15),
        || connect(broker.port, "pia", PASSWORD) == Outcome::Accepted,
    );
    // Restarted (fast shutdown, as an operator's restart): the pooled connections die with
    // it and are replaced.
    pg.stop();
    pg.start();
    eventually("a login after the restart", Duration::from_secs(15), || {
        connect(broker.port, "pia", PASSWORD) == Outcome::Accepted
    });
    // Paused (SIGSTOP of every backend): refused within the timeouts, then back.
    pg.pause();
    refused_soon("paused");
    refused_soon("paused, breaker open");
    pg.resume();
    eventually("a login after the pause", Duration::from_secs(20), || {
        connect(broker.port, "pia", PASSWORD) == Outcome::Accepted
    });
    let log = broker.log();
    assert!(log.contains("PostgreSQL answers again"), "{log}");
}

/// `mysql,postgres`: each user is decided by the backend that has them, with that
/// backend's chat identity, groups and rows.
fn chain_mysql_postgres() {
    let db = shared();
    let mysql_db = chat_db(db, "pgchain");
    let pg = Postgres::start_new("pg-chain");
    // PostgreSQL's users have ids 100.. and group 50.
    let pg_db = pg.database(
        "chain",
        &format!(
            "{}\nCREATE TABLE acls (username text, topic text, rw integer);\n\
             INSERT INTO acls VALUES ('pia', 'pg/only/#', 3);",
            chat_schema(100)
        ),
    );
    let broker = Broker::start(&format!(
        "auth_opt_backends mysql,postgres\n{}{}\n{}{CHAT_USERQUERY}\
         auth_opt_pg_groupsquery SELECT group_id FROM group_members WHERE user_id = $1\n\
         auth_opt_pg_aclquery SELECT topic FROM acls WHERE username = $1 AND (rw & $2) > 0\n",
        db.plugin_options(&mysql_db),
        crate::acl::USERQUERY.trim_end(),
        pg.pg_options(&pg_db)
    ));
    let log = broker.log();
    assert!(log.contains("started: backends mysql,postgres"), "{log}");
    // alice is MySQL's (user 1, group 10); pia is PostgreSQL's (user 100, group 50).
    let mut alice = Mqtt::connect(broker.port, "alice-1", "alice", PASSWORD);
    let mut pia = Mqtt::connect(broker.port, "pia-1", "pia", PASSWORD);
    assert_eq!(alice.subscribe("/users/1/messages"), 1);
    assert_eq!(alice.subscribe("/groups/10/messages"), 1);
    assert_eq!(alice.subscribe("/groups/50/messages"), NOT_AUTHORIZED);
    assert_eq!(alice.subscribe("pg/only/x"), NOT_AUTHORIZED);
    assert_eq!(pia.subscribe("/users/100/messages"), 1);
    assert_eq!(pia.subscribe("/users/1/messages"), NOT_AUTHORIZED);
    assert_eq!(pia.subscribe("/groups/50/messages"), 1);
    assert_eq!(pia.subscribe("/groups/10/messages"), NOT_AUTHORIZED);
    assert_eq!(pia.subscribe("pg/only/x"), 1);
    // A chat message from PostgreSQL's pia to MySQL's alice.
    let text = chat("CHAT", 100, 1, "across backends");
    assert!(accepted(pia.publish(
        "/users/1/messages",
        text.clone(),
        false
    )));
    assert_chat(
        &alice
            .message_on("/users/1/messages", SOON)
            .expect("alice's message")
            .payload,
        &text,
    );
    // Neither backend knows carl.
    assert!(matches!(
        connect(broker.port, "carl", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, and a certificate it signs for `cn` (`name.crt`, `name.key`), as PostgreSQL's
/// documentation makes them ("Creating Certificates"): a root with `v3_ca`, leaves signed
/// by it.
fn ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-text",
            "-out",
            &format!("{name}.csr"),
            "-keyout",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}.chat-auth.test"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-text",
            "-days",
            "3650",
            "-extfile",
            "/etc/ssl/openssl.cnf",
            "-extensions",
            "v3_ca",
            "-signkey",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

fn leaf(dir: &std::path::Path, name: &str, cn: &str, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-text",
            "-out",
            &format!("{name}.csr"),
            "-keyout",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-text",
            "-days",
            "365",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// sslmode verify-full with a client certificate: the server takes the role's certificate
/// (`cert` in pg_hba.conf, no password) and only TLS; a server whose certificate another CA
/// signed is refused.
fn tls_verify_full_with_a_client_certificate() {
    let mut pg = Postgres::create("pg-tls");
    let certs = pg.dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    ca(&certs, "root");
    ca(&certs, "other");
    // The host name the plugin connects to is the server certificate's CN.
    leaf(&certs, "server", "localhost", "root");
    leaf(&certs, "client", PG_USER, "root");
    crate::harness::chown_to_pg(&certs);
    std::fs::set_permissions(
        certs.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    pg.hba_first(&format!(
        "hostssl all {PG_USER} 127.0.0.1/32 cert\n\
         hostssl all {PG_USER} ::1/128 cert\n\
         hostnossl all {PG_USER} all reject"
    ));
    pg.set_settings(&[
        "ssl=on".into(),
        format!("ssl_cert_file={}", certs.join("server.crt").display()),
        format!("ssl_key_file={}", certs.join("server.key").display()),
        format!("ssl_ca_file={}", certs.join("root.crt").display()),
    ]);
    pg.start();
    pg.exec("postgres", &format!("CREATE ROLE {PG_USER} LOGIN"));
    let dbname = pg.database("tls", &chat_schema(1));
    let options = |root: &str| {
        format!(
            "auth_opt_backends postgres\nauth_opt_pg_host localhost\nauth_opt_pg_port {}\n\
             auth_opt_pg_dbname {dbname}\nauth_opt_pg_user {PG_USER}\n\
             auth_opt_pg_sslmode verify-full\nauth_opt_pg_sslrootcert {}\n\
             auth_opt_pg_sslcert {}\nauth_opt_pg_sslkey {}\n{CHAT_USERQUERY}\
             auth_opt_chat_enabled false\n",
            pg.port,
            certs.join(root).display(),
            certs.join("client.crt").display(),
            certs.join("client.key").display(),
        )
    };
    let broker = Broker::start(&options("root.crt"));
    assert!(
        broker.log().contains("sslmode verify-full"),
        "{}",
        broker.log()
    );
    assert_eq!(connect(broker.port, "pia", PASSWORD), Outcome::Accepted);
    let mut pia = Mqtt::connect(broker.port, "pia-1", "pia", PASSWORD);
    assert_eq!(
        pia.subscribe("/users/1/messages"),
        NOT_AUTHORIZED,
        "chat rules off"
    );
    drop(broker);
    // The server's certificate is not one the configured CA signed: never connected.
    let broker = Broker::start(&options("other.crt"));
    assert!(
        broker.log().contains("PostgreSQL unreachable"),
        "{}",
        broker.log()
    );
    assert!(matches!(
        connect(broker.port, "pia", PASSWORD),
        Outcome::Refused(_)
    ));
}

/// EMQX's `pbkdf2` key of `PASSWORD` (salt `pbkdf2-salt`, 4096 rounds of HMAC-SHA-256, 32
/// bytes), in hex: `hashlib.pbkdf2_hmac('sha256', pw, b'pbkdf2-salt', 4096, 32).hex()`.
const EMQX_PBKDF2_SHA256: &str = "d7d9df33515d13bb08f2215476dade33b5ed29784f9c50e07996e6dc8d012413";
/// SHA-256 of `PASSWORD` followed by the salt `emqx-salt`, in hex:
/// `hashlib.sha256(pw + b'emqx-salt').hexdigest()` (EMQX's `sha256`, salt suffix).
const EMQX_SHA256_SUFFIX: &str = "6c1f096e3615b83caa7b254058cf4bfa30a901d9480e568003d209e65c7bb420";
/// bcrypt of `PASSWORD`, made by Python's `bcrypt` module (`bcrypt.hashpw(pw,
/// bcrypt.gensalt(6))`).
const BCRYPT: &str = "$2b$06$o7y6RkRzEAFS/6mkl0AOTumtD3rrX00WvolXUuzdBYYCBwq7.ZP9a";

/// EMQX's documented table and query (`${username}`), its `password_hash_algorithm`:
/// salted SHA-256 rows under `sha256 suffix`, bcrypt rows under `bcrypt`.
fn emqx_table() {
    let pg = Postgres::start_new("pg-emqx");
    let dbname = pg.database(
        "emqx",
        &format!(
            "CREATE TABLE mqtt_user (id serial PRIMARY KEY, username text NOT NULL UNIQUE, \
               password_hash text NOT NULL, salt text NOT NULL, is_superuser boolean \
               DEFAULT false, created timestamptz DEFAULT NOW());
             INSERT INTO mqtt_user (username, password_hash, salt, is_superuser) VALUES
               ('emma', '{EMQX_SHA256_SUFFIX}', 'emqx-salt', false),
               ('eboss', '{EMQX_SHA256_SUFFIX}', 'emqx-salt', true),
               ('bea', '{BCRYPT}', '', false),
               ('pia', '{EMQX_PBKDF2_SHA256}', 'pbkdf2-salt', false);"
        ),
    );
    let options = |algorithm: &str| {
        format!(
            "auth_opt_backends postgres\n{}\
             auth_opt_pg_userquery SELECT password_hash, salt, is_superuser FROM mqtt_user \
             WHERE username = ${{username}} LIMIT 1\n\
             auth_opt_chat_enabled false\n\
             auth_opt_password_hash_algorithm {algorithm}\n",
            pg.pg_options(&dbname)
        )
    };
    let broker = Broker::start(&options("{name = sha256, salt_position = suffix}"));
    assert_eq!(connect(broker.port, "emma", PASSWORD), Outcome::Accepted);
    let mut boss = Mqtt::connect(broker.port, "eboss-1", "eboss", PASSWORD);
    assert_eq!(boss.subscribe("#"), 1, "is_superuser");
    // One algorithm per configuration, as in EMQX: the bcrypt row is not SHA-256.
    assert!(matches!(
        connect(broker.port, "bea", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
    drop(broker);
    let broker = Broker::start(&options("bcrypt"));
    assert_eq!(connect(broker.port, "bea", PASSWORD), Outcome::Accepted);
    assert!(matches!(
        connect(broker.port, "emma", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
    drop(broker);
    // EMQX's pbkdf2, its rounds in the configuration as EMQX has them.
    let broker = Broker::start(&options(
        "{name = pbkdf2, mac_fun = sha256, iterations = 4096, dk_length = 32}",
    ));
    assert_eq!(connect(broker.port, "pia", PASSWORD), Outcome::Accepted);
    assert!(matches!(
        connect(broker.port, "pia", "s3cret pq"),
        Outcome::Refused(4 | 5)
    ));
    assert!(matches!(
        connect(broker.port, "emma", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
    drop(broker);
    // Other rounds make another key: refused.
    let broker = Broker::start(&options(
        "{name = pbkdf2, mac_fun = sha256, iterations = 4095, dk_length = 32}",
    ));
    assert!(matches!(
        connect(broker.port, "pia", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
    drop(broker);
    // The salt at the other end is another hash: refused.
    let broker = Broker::start(&options("sha256 prefix"));
    assert!(matches!(
        connect(broker.port, "emma", PASSWORD),
        Outcome::Refused(4 | 5)
    ));
    drop(broker);
    // Without it, each stored hash's format is detected: both rows, with the salt suffix.
    let broker = Broker::start(&format!(
        "auth_opt_backends postgres\n{}\
         auth_opt_pg_userquery SELECT password_hash, salt, is_superuser FROM mqtt_user \
         WHERE username = ${{username}} LIMIT 1\n\
         auth_opt_chat_enabled false\nauth_opt_password_salt_position suffix\n",
        pg.pg_options(&dbname)
    ));
    assert_eq!(connect(broker.port, "emma", PASSWORD), Outcome::Accepted);
    assert_eq!(connect(broker.port, "bea", PASSWORD), Outcome::Accepted);
}
