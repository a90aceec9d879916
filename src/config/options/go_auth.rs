//! mosquitto-go-auth's options that change nothing here (noted at start).

use super::*;

pub(super) const GO_AUTH: &[Spec] = &[
    spec(
        "mysql_sslmode",
        Choice(&["disable", "false", "true", "custom"]),
        Mysql,
        "go-auth's: `true`/`custom` is `ssl_enabled true`, `disable`/`false` no TLS \
         (`skip-verify` is refused: the server's certificate is always verified).",
    ),
    spec(
        "hasher",
        Noted("the stored format is detected from each hash (auth_opt_password_format forces one)"),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_cost",
        Noted("it is how go-auth makes hashes; chat-auth-passwd --cost makes bcrypt hashes"),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_iterations",
        Noted("it is how go-auth makes hashes; chat-auth-passwd --iterations makes PBKDF2 hashes"),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_algorithm",
        Noted("it is how go-auth makes hashes; chat-auth-passwd --algorithm"),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_keylen",
        Noted(GO_AUTH_HASHES),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_salt_size",
        Noted(GO_AUTH_HASHES),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_memory",
        Noted(GO_AUTH_HASHES),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "hasher_parallelism",
        Noted(GO_AUTH_HASHES),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "mysql_protocol",
        Noted("chat-auth uses TCP, or the Unix socket of auth_opt_mysql_socket when given"),
        Mysql,
        "go-auth's; noted.",
    ),
    spec(
        "mysql_allow_native_passwords",
        Noted("MySQL's native password authentication is always allowed"),
        Mysql,
        "go-auth's; noted.",
    ),
    spec(
        "mysql_connect_tries",
        Noted("chat-auth starts without MySQL and connects in the background until it answers"),
        Mysql,
        "go-auth's; noted.",
    ),
    spec(
        "mysql_max_life_time",
        Noted("pooled connections are replaced when found dead"),
        Mysql,
        "go-auth's; noted.",
    ),
    spec(
        "log_dest",
        Noted("chat-auth writes to the broker's log (its log_dest decides)"),
        General,
        "go-auth's; noted.",
    ),
    spec(
        "log_file",
        Noted("chat-auth writes to the broker's log (its log_dest decides)"),
        General,
        "go-auth's; noted.",
    ),
];
