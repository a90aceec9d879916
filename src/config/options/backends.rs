//! The backends, the MySQL server and its user queries, the superuser and bridge globs, TLS to MySQL, the pool.

use super::*;

pub(super) const BACKENDS: &[Spec] = &[
    spec(
        "backends",
        Text,
        General,
        "auth-plug's list, asked in order: `mysql`, `http`, `postgres`, or several, e.g. \
         `mysql,http`, `mysql,postgres`, `postgres,http` (see HTTP backend, PostgreSQL \
         backend). Any other name is an error. The MySQL options are needed when it names \
         `mysql`, `pg_user` and `pg_userquery` when it names `postgres`.",
    )
    .default("mysql"),
    spec("host", Text, Mysql, "MySQL host name or address.")
        .default("localhost")
        .aliases(&["mysql_host"]),
    spec(
        "port",
        Whole {
            min: 1,
            max: 65_535,
        },
        Mysql,
        "MySQL TCP port.",
    )
    .default("3306")
    .aliases(&["mysql_port"]),
    spec(
        "socket",
        Text,
        Mysql,
        "Unix socket path; when set, used instead of host/port.",
    )
    .aliases(&["mysql_socket"]),
    spec("dbname", Text, Mysql, "Database name.").aliases(&["mysql_dbname"]),
    spec(
        "user",
        Text,
        Mysql,
        "MySQL user (give it `SELECT` on the user table only).",
    )
    .aliases(&["mysql_user"]),
    spec("pass", Text, Mysql, "MySQL password.").aliases(&["mysql_password"]),
    spec(
        "userquery",
        Text,
        Mysql,
        "Returns the stored hash in its first column; optional columns by name: `salt`, \
         `user_id` (the chat identity; the username when the column is absent, a refusal \
         when it is NULL), `is_superuser` (truthy = superuser), `username` (the name as \
         stored: a login must spell it byte for byte, and the `superusers`/`bridge_users` \
         globs apply only with it; see Account names). No row, NULL or empty hash: refused.",
    )
    .doc("**required** with `mysql`")
    .aliases(&["mysql_userquery"]),
    spec(
        "superquery",
        Text,
        Mysql,
        "Returns a count (or truthy value) > 0 for superusers, e.g. `SELECT COUNT(*) FROM users \
         WHERE username = '%s' AND is_superuser = 1`. An error means \"not a superuser\".",
    )
    .aliases(&["mysql_superquery"]),
    spec(
        "cert_userquery",
        Text,
        Mysql,
        "The row of a user who logged in by a TLS certificate (the username the broker took \
         from it), with the same columns as `userquery` but the hash unused.",
    )
    .doc("`userquery`"),
    spec(
        "superusers",
        Text,
        General,
        "fnmatch glob of superuser names, e.g. `S*` (`*`, `?`, `[...]`). With the `mysql` \
         backend it applies only to a name the user row shows as stored (the `username` \
         column of `userquery`): without that column it is not applied, and the log says so \
         once (see Account names).",
    ),
    spec(
        "bridge_users",
        Text,
        General,
        "fnmatch glob of the accounts other brokers bridge in with (`remote_username` of their \
         bridge sections), e.g. `bridge-*`. They log in like any user and may publish and \
         subscribe on the chat topics (subscriptions such as `/users/+/messages`) and on \
         `chat-auth/cluster/v1`; a chat message they bring with its stamp is delivered as it \
         is and not stored again (see Scaling out). Like `superusers`, it applies only to a \
         name the user row shows as stored (`username` column).",
    ),
    spec(
        "ssl_enabled",
        Flag,
        Mysql,
        "Connect to MySQL over TLS, with OpenSSL as libmysqlclient does (X.509 v1 \
         certificates, as MariaDB's own recipe makes them, work). The server's certificate \
         chain and host name are always verified (a v1 certificate has no SAN: its CN is the \
         host name). go-auth's `mysql_sslmode true`/`custom` sets it.",
    )
    .default("false"),
    spec(
        "ssl_ca",
        Text,
        Mysql,
        "CA certificate(s) (PEM) to trust, with `ssl_enabled`.",
    )
    .doc("system roots")
    .aliases(&["mysql_sslrootcert"]),
    spec(
        "ssl_capath",
        Text,
        Mysql,
        "A directory of CA certificates (PEM files, e.g. hashed by `openssl rehash`), trusted \
         with `ssl_ca`.",
    ),
    spec(
        "ssl_cert",
        Text,
        Mysql,
        "Client certificate (PEM), with `ssl_key` and `ssl_enabled`.",
    )
    .aliases(&["mysql_sslcert"]),
    spec(
        "ssl_key",
        Text,
        Mysql,
        "Its private key (PEM); a key that is not the certificate's stops the broker.",
    )
    .aliases(&["mysql_sslkey"]),
    spec(
        "ssl_cipher",
        Text,
        Mysql,
        "Accepted with a warning and **not applied**: the connector (the mysql crate's OpenSSL \
         one) takes no cipher list, so OpenSSL's defaults are used (TLS 1.2+, the system's \
         security level); restrict ciphers on the server.",
    ),
    spec(
        "connect_timeout_ms",
        Whole {
            min: 10,
            max: 60_000,
        },
        Mysql,
        "TCP connect timeout to MySQL.",
    )
    .default("2000"),
    spec(
        "query_timeout_ms",
        Whole {
            min: 10,
            max: 60_000,
        },
        Mysql,
        "Read/write timeout of each MySQL round trip.",
    )
    .default("2000"),
    spec(
        "rules_wait_ms",
        Whole { min: 0, max: 2000 },
        Mysql,
        "The longest a client's first check after its login waits, on the broker thread, for \
         the rules (groups, `aclquery` rows) that login asked MySQL for. A healthy server has \
         answered before the client's first SUBSCRIBE. Once one wait runs out, no check waits \
         at all until a rules load comes back: checks answer from the rules held (the user's \
         last known ones; a first login has only its own inbox), said once per episode.",
    )
    .default("20"),
    spec(
        "pool_size",
        Whole { min: 1, max: 64 },
        Mysql,
        "Most MySQL connections of the pool logins, rules and storage use (chat history has its \
         own, `history_connections`).",
    )
    .default("4"),
];
