//! The PostgreSQL backend through the real broker, against a private PostgreSQL server
//! (Debian's `postgresql-15`, `initdb` under target/tmp): auth-plug's and go-auth's
//! configurations verbatim, superusers, ACL rows with `$2`, chat groups from a PostgreSQL
//! table, outages, a `mysql,postgres` chain, TLS with a client certificate and EMQX's table.

use crate::harness::{Broker, Outcome, PG_PASS, PG_USER, Postgres, connect};
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
