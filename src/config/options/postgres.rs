//! The PostgreSQL backend: mosquitto-go-auth's `pg_*` names (which a `mysql,postgres` chain
//! needs), auth-plug's names (the MySQL ones, read for PostgreSQL when `backends` is
//! `postgres` alone), TLS as libpq's `sslmode`.

use super::*;

const PG: Part = Part::Postgres;

pub(super) const POSTGRES: &[Spec] = &[
    spec(
        "pg_host",
        Text,
        PG,
        "PostgreSQL host name or address, or the directory of its Unix socket (a path \
         starting with `/`, as libpq takes it). With `backends postgres` alone, auth-plug's \
         names are read for PostgreSQL when the `pg_*` one is not given: `host`, `port`, \
         `user`, `pass`, `dbname`, `userquery`, `superquery`, `aclquery`, `groupsquery`.",
    )
    .default("localhost"),
    spec(
        "pg_port",
        Whole {
            min: 1,
            max: 65_535,
        },
        PG,
        "PostgreSQL port (TCP, or the number in the socket's name).",
    )
    .default("5432"),
    spec(
        "pg_user",
        Text,
        PG,
        "PostgreSQL role (give it `SELECT` on the user tables only).",
    )
    .doc("**required** with `postgres`"),
    spec(
        "pg_password",
        Text,
        PG,
        "Its password (scram-sha-256 or md5).",
    ),
    spec("pg_dbname", Text, PG, "Database name.").doc("the role's name"),
    spec(
        "pg_userquery",
        Text,
        PG,
        "As `userquery` (the same columns by name: `salt`, `user_id`, `is_superuser`, \
         `username`), with `$1` for the username (`${username}`, EMQX's, and `'%s'` also \
         work), e.g. `SELECT password_hash, salt, is_superuser FROM mqtt_user WHERE username \
         = ${username} LIMIT 1`. Columns of type text, varchar, bytea, boolean, integer, \
         float or uuid are read; cast others (`::text`). A query PostgreSQL refuses, or a \
         column it cannot read, stops the broker at start naming the option (when the \
         server answers then; else it is logged at the first connection).",
    )
    .doc("**required** with `postgres`"),
    spec(
        "pg_superquery",
        Text,
        PG,
        "As `superquery`, with `$1` for the username: a count or truthy value > 0 for \
         superusers.",
    ),
    spec(
        "pg_aclquery",
        Text,
        PG,
        "As `aclquery`: topic patterns in the first column, `$1` the username and `$2` the \
         access level (1 read and subscribe, 2 write, as go-auth's PostgreSQL backend passes \
         it), e.g. `SELECT topic FROM acls WHERE (username = $1) AND (rw & $2) > 0`.",
    ),
    spec(
        "pg_groupsquery",
        Text,
        PG,
        "As `groupsquery`: the group ids of a user, `$1` the user's `user_id`. When it is not \
         given and PostgreSQL refuses the default at start (no such table), groups are off \
         and the log says so.",
    )
    .default("SELECT group_id FROM group_members WHERE user_id = $1"),
    spec(
        "pg_sslmode",
        Choice(crate::backend::postgres::tls::SslMode::NAMES),
        PG,
        "TLS as libpq's `sslmode`: `disable`, `prefer` (TLS if the server offers it, not \
         verified), `require` (TLS, not verified unless `pg_sslrootcert` is given), \
         `verify-ca` (the chain), `verify-full` (the chain and the host name). No TLS over \
         a Unix socket.",
    )
    .doc("`verify-full` with go-auth's `pg_*` names, `prefer` (libpq's) with auth-plug's"),
    spec(
        "pg_sslrootcert",
        Text,
        PG,
        "CA certificate(s) (PEM) that sign the server's certificate.",
    )
    .doc("system roots"),
    spec(
        "pg_sslcert",
        Text,
        PG,
        "Client certificate (PEM), with `pg_sslkey` (for `cert` lines of pg_hba.conf).",
    ),
    spec(
        "pg_sslkey",
        Text,
        PG,
        "Its private key (PEM); one that is not the certificate's stops the broker.",
    ),
    spec("sslcert", Text, PG, "auth-plug's name for `pg_sslcert`."),
    spec("sslkey", Text, PG, "auth-plug's name for `pg_sslkey`."),
    spec(
        "pg_max_life_time",
        Whole {
            min: 0,
            max: 31_536_000,
        },
        PG,
        "Seconds a PostgreSQL connection is used before it is replaced (0: until it fails).",
    )
    .default("0"),
    spec(
        "pg_connect_tries",
        Noted(
            "chat-auth starts without PostgreSQL and connects in the background until it \
             answers",
        ),
        PG,
        "go-auth's; noted.",
    ),
];
