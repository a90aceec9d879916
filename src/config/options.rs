//! Every option, once: its name, mosquitto-go-auth's names for it, what it holds, its default
//! and range, and what it means. The table drives parsing (defaults and ranges), the
//! unknown-option check ("did you mean") and the option reference in docs/options.md, which a
//! unit test keeps equal to `reference()`.

/// What an option holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Text, checked where it is read (a host, a path, a query, a pattern).
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Flag,
    /// A whole number from `min` to `max`.
    Whole { min: u64, max: u64 },
    /// One of these words.
    Choice(&'static [&'static str]),
    /// One of the words another part defines (the hash formats).
    ChoiceOf(fn() -> Vec<&'static str>),
    /// mosquitto-go-auth's, changing nothing here: accepted with one info line saying what
    /// chat-auth does instead.
    Noted(&'static str),
}

/// Which part of the plugin reads an option (warned about when that part is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    General,
    Mysql,
    Http,
    Storage,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    /// Other names read as this option (mosquitto-go-auth's).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub part: Part,
    /// The value when the option is not given, read like a given one; `None`: no value, or
    /// one that depends on other options (then `default_doc` says which).
    pub default: Option<&'static str>,
    /// The default docs/options.md shows, where it is not just `default`.
    pub default_doc: Option<&'static str>,
    pub meaning: &'static str,
}

const fn spec(name: &'static str, kind: Kind, part: Part, meaning: &'static str) -> Spec {
    Spec {
        name,
        aliases: &[],
        kind,
        part,
        default: None,
        default_doc: None,
        meaning,
    }
}

impl Spec {
    const fn default(mut self, value: &'static str) -> Spec {
        self.default = Some(value);
        self
    }
    const fn doc(mut self, text: &'static str) -> Spec {
        self.default_doc = Some(text);
        self
    }
    const fn aliases(mut self, names: &'static [&'static str]) -> Spec {
        self.aliases = names;
        self
    }
}

use Kind::{Choice, ChoiceOf, Flag, Noted, Text, Whole};

impl Kind {
    /// The words a choice takes.
    pub fn words(&self) -> Option<Vec<&'static str>> {
        match self {
            Choice(words) => Some(words.to_vec()),
            ChoiceOf(words) => Some(words()),
            _ => None,
        }
    }
}

/// `auto`, or a format of the hash module.
fn password_formats() -> Vec<&'static str> {
    let mut words = vec!["auto"];
    words.extend(crate::hash::Format::NAMES);
    words
}
use Part::{General, Http, Mysql, Storage};

const DAY: u64 = 86_400;
const GO_AUTH_HASHES: &str = "it is how go-auth makes hashes";

pub const OPTIONS: &[Spec] = &[
    spec(
        "backends",
        Text,
        General,
        "auth-plug's list, asked in order: `mysql`, `http`, `mysql,http` or `http,mysql` (see \
         HTTP backend). Any other name is an error. The MySQL options are needed when it names \
         `mysql`.",
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
    spec(
        "http_ip",
        Text,
        Http,
        "The HTTP auth service's address or host name.",
    )
    .doc("**required** with `http`"),
    spec(
        "http_host",
        Text,
        Http,
        "go-auth's name for `http_ip` (fields then go as JSON).",
    ),
    spec(
        "http_port",
        Whole {
            min: 1,
            max: 65_535,
        },
        Http,
        "Its port.",
    )
    .doc("`80` (`443` with TLS)"),
    spec(
        "http_hostname",
        Text,
        Http,
        "The `Host` header to send, when it is not the address connected to (a virtual host).",
    ),
    spec(
        "http_with_tls",
        Flag,
        Http,
        "`https`: the service's certificate and host name are verified against Mozilla's root \
         certificates (built in, webpki-roots).",
    )
    .default("false"),
    spec(
        "http_verify_peer",
        Flag,
        Http,
        "`false` skips that verification (go-auth's option; only for a test service).",
    )
    .default("true"),
    spec(
        "http_getuser_uri",
        Text,
        Http,
        "Path logins are asked at (`acc` -1).",
    )
    .doc("**required** with `http`"),
    spec(
        "http_superuser_uri",
        Text,
        Http,
        "Path superusers are asked at (`acc` -1); none: the service makes no superusers.",
    ),
    spec(
        "http_aclcheck_uri",
        Text,
        Http,
        "Path ACL checks are asked at (`acc` 1 read, 2 write, 4 subscribe).",
    )
    .doc("**required** with `http`"),
    spec(
        "http_getuser_params",
        Text,
        Http,
        "Extra login fields, `key=value,key2=value2`, sent after auth-plug's, escaped like them.",
    ),
    spec(
        "http_superuser_params",
        Text,
        Http,
        "The same for superuser questions.",
    ),
    spec(
        "http_aclcheck_params",
        Text,
        Http,
        "The same for ACL checks.",
    ),
    spec(
        "http_timeout",
        Whole { min: 1, max: 60 },
        Http,
        "Seconds one request may take in all, connecting included.",
    )
    .default("2"),
    spec(
        "http_params_mode",
        Choice(&["form", "json"]),
        Http,
        "`form` (auth-plug, `application/x-www-form-urlencoded`) or `json` (go-auth).",
    )
    .doc("`form` (`json` with go-auth's names)"),
    spec(
        "http_response_mode",
        Choice(&["status", "json", "text"]),
        Http,
        "`status` (2xx allows), `json` (200 with `{\"ok\": true}`) or `text` (200 with `ok`), \
         as go-auth. A 5xx is an error in every mode.",
    )
    .default("status"),
    spec(
        "auth_cacheseconds",
        Whole { min: 0, max: DAY },
        General,
        "Remember a successful login for N seconds (`0`: off). Keyed by username with an \
         HMAC-SHA256 of the password under a random per-process key (no plaintext, no bare \
         hash). A new password works at once; an old one until N seconds pass. Failures are \
         never cached.",
    )
    .default("0")
    .aliases(&["auth_cache_seconds"]),
    spec(
        "password_format",
        ChoiceOf(password_formats),
        General,
        "`auto` (detected from each stored hash), or force one format.",
    )
    .default("auto"),
    spec(
        "hasher_salt_encoding",
        Choice(&["utf-8", "utf8", "literal", "base64"]),
        General,
        "PBKDF2 salt field: `utf-8` (literal text, auth-plug) or `base64` (go-auth).",
    )
    .doc("`utf-8` (`base64` with go-auth's names)"),
    spec(
        "password_salt_position",
        Choice(&["prefix", "suffix"]),
        General,
        "For hex digests with a `salt` column: `prefix` = digest(salt + password), `suffix` = \
         digest(password + salt).",
    )
    .default("prefix"),
    spec(
        "chat_enabled",
        Flag,
        General,
        "The chat inbox/group rules. `false` leaves only superusers and `aclquery` rows. They \
         need the `mysql` backend.",
    )
    .doc("`true` (`false` with go-auth's names or without `mysql`)"),
    spec(
        "chat_user_topic",
        Text,
        General,
        "Inbox topic template; exactly one level is `{id}`, no wildcards.",
    )
    .default("/users/{id}/messages"),
    spec(
        "chat_group_topic",
        Text,
        General,
        "Group topic template; must not name the same topics as the inbox template.",
    )
    .default("/groups/{id}/messages"),
    spec(
        "groupsquery",
        Text,
        Mysql,
        "Returns the group ids of a user, one per row. `?` / `'%s'` bind the user's `user_id`.",
    )
    .default("SELECT group_id FROM group_members WHERE user_id = ?"),
    spec(
        "aclquery",
        Text,
        Mysql,
        "auth-plug ACL rows: returns topic patterns in its first column. `'%s'`/first `?` bind \
         the username, `%d`/second `?` the access level (see Authorization). Without `%d`, each \
         row grants receiving, publishing and subscribing alike.",
    )
    .aliases(&["mysql_aclquery"]),
    spec(
        "acl_cacheseconds",
        Whole { min: 0, max: DAY },
        General,
        "How long loaded rules are used before a background reload, and how long an answer of \
         the HTTP service is kept (`0` is read as 1 with a warning, since checks never query \
         MySQL).",
    )
    .default("60")
    .aliases(&["acl_cache_seconds"]),
    spec(
        "acl_subscribe_level",
        Choice(&["1", "4"]),
        Mysql,
        "The `%d` of `aclquery` for SUBSCRIBE: `1` (read rows) or `4` (subscribe rows, as in \
         go-auth).",
    )
    .doc("`1` (`4` with go-auth's names)"),
    spec(
        "chat_validate",
        Flag,
        General,
        "Validate and stamp chat payloads (see Chat messages). `false` delivers them as they \
         come (and then storage cannot be enabled).",
    )
    .default("true"),
    spec(
        "chat_max_content_bytes",
        Whole {
            min: 1,
            max: 16 << 20,
        },
        General,
        "Largest `content`, in UTF-8 bytes.",
    )
    .default("65536"),
    spec(
        "chat_dedup_seconds",
        Whole { min: 0, max: DAY },
        General,
        "How long a sender's `clientMsgId` keeps its first stamp (`0`: off). See Stamping.",
    )
    .default("300"),
    spec(
        "persist_enabled",
        Flag,
        General,
        "Store every accepted chat message in MySQL. Needs the chat rules and validation.",
    )
    .default("false"),
    spec(
        "persist_table",
        Text,
        Storage,
        "Table for the rows, `name` or `database.name` (letters, digits, `_`); columns as in \
         `schema.sql`.",
    )
    .default("messages"),
    spec(
        "persist_spool_dir",
        Text,
        Storage,
        "Directory for the spool (created if missing); the broker's user must be able to write \
         it.",
    )
    .doc("**required** with storage"),
    spec(
        "persist_spool_max_mb",
        Whole {
            min: 1,
            max: 1 << 20,
        },
        Storage,
        "Spooled bytes not yet in MySQL at which new chat messages are refused.",
    )
    .default("1024"),
    spec(
        "persist_batch_rows",
        Whole { min: 1, max: 5_000 },
        Storage,
        "Most rows per INSERT.",
    )
    .default("500"),
    spec(
        "persist_flush_ms",
        Whole {
            min: 1,
            max: 60_000,
        },
        Storage,
        "Longest wait to fill a batch, in ms.",
    )
    .default("50"),
    spec(
        "persist_fsync",
        Flag,
        Storage,
        "Flush the spool to disk (`msync`) after each message, so a machine crash loses nothing \
         either.",
    )
    .default("false"),
    spec(
        "history_enabled",
        Flag,
        Storage,
        "Answer chat history requests (`getHistory` on `$CONTROL/chat-history/v1`) from the \
         storage table. See Chat history.",
    )
    .default("true"),
    spec(
        "history_connections",
        Whole { min: 1, max: 32 },
        Storage,
        "History queries run at once, each on its own thread and MySQL connection (never the \
         logins' pool).",
    )
    .default("2"),
    spec(
        "history_client_in_flight",
        Whole { min: 1, max: 100 },
        Storage,
        "History requests of one client not yet answered; more are answered with an error.",
    )
    .default("4"),
    spec(
        "history_client_per_second",
        Whole { min: 1, max: 1_000 },
        Storage,
        "History requests one client may make per second; more are answered with an error.",
    )
    .default("10"),
    spec(
        "history_max_response_kb",
        Whole {
            min: 4,
            max: 65_536,
        },
        Storage,
        "The most KiB of messages in one history answer (the page ends early, `more` true). \
         Keep it under your clients' maximum packet size: the broker drops a bigger answer.",
    )
    .default("256"),
    spec(
        "history_max_request_kb",
        Whole { min: 1, max: 64 },
        Storage,
        "The largest history request, in KiB; a larger one is answered with an error, unread. \
         Any chat user may send them, so the bound is tight: ten `getHistory` commands with \
         64-byte ids and cursors take about 2 KiB.",
    )
    .default("4"),
    spec(
        "control_max_request_kb",
        Whole { min: 1, max: 1_024 },
        General,
        "The largest `$CONTROL/chat-auth/v1` request, in KiB; a larger one is answered with \
         an error, unread. Only superusers send them (answers, `getStats` too, are not \
         bounded by it): 100 `kickUser` commands with 100-byte usernames take about 15 KiB.",
    )
    .default("16"),
    spec(
        "login_throttle_failures",
        Whole { min: 0, max: 1_000 },
        General,
        "Failed logins for one username from devices not seen before (see \
         `login_throttle_known_device_days`) after which such logins are refused unchecked for \
         1 s, doubling at each further failure up to `login_throttle_max_seconds`; the same \
         for one known device's own failures in a row (see Attacks). A device's first retry \
         after its failure is never refused by these blocks. `0` turns all throttling off, \
         the login budget too.",
    )
    .default("20"),
    spec(
        "login_throttle_address_failures",
        Whole {
            min: 0,
            max: 100_000,
        },
        General,
        "The same for one client address, across usernames (`0`: no address limit). A \
         success from the address does not reset it. Loopback addresses are never limited.",
    )
    .default("100"),
    spec(
        "login_throttle_max_seconds",
        Whole { min: 1, max: DAY },
        General,
        "The longest block.",
    )
    .default("60"),
    spec(
        "login_throttle_budget_percent",
        Whole { min: 1, max: 100 },
        General,
        "Share of the broker thread that failed logins from devices not seen before may \
         take: beyond it (one second's worth may be spent at once) such logins are refused \
         unchecked until the share refills; known devices failing twice or more in a row \
         have a second share of the same size. After a failure that cost 5 ms or more, the \
         username and the address wait long enough to get half of it at most. `100`: no \
         budget.",
    )
    .default("20"),
    spec(
        "login_throttle_known_device_days",
        Whole { min: 1, max: 3_650 },
        General,
        "A device (username with its client id) is known for this many days after its last \
         successful login: the budget and the username and address limits never refuse it.",
    )
    .default("30"),
    spec(
        "login_throttle_known_devices",
        Whole {
            min: 0,
            max: 10_000_000,
        },
        General,
        "Known devices remembered at most (8 per username, about 35 bytes each); when full, \
         a new username's device is not remembered until old ones expire. `0`: none.",
    )
    .default("100000"),
    spec(
        "offline_sessions_per_user",
        Whole {
            min: 1,
            max: 100_000,
        },
        General,
        "Offline persistent sessions kept per username; beyond it the user's oldest is \
         forgotten.",
    )
    .default("16"),
    spec(
        "offline_sessions_max",
        Whole {
            min: 0,
            max: 10_000_000,
        },
        General,
        "Offline persistent sessions kept in all; beyond it the oldest is forgotten.",
    )
    .default("100000"),
    spec(
        "session_file",
        Text,
        General,
        "Where persistent sessions are kept across broker restarts; `none` keeps none. Its \
         directory must exist and be writable by the broker.",
    )
    .doc(
        "`sessions.jsonl` in `persist_spool_dir` with storage, else (Mosquitto 2.1) \
         `chat-auth-sessions.jsonl` in the broker's `persistence_location`, else none",
    ),
    spec(
        "metrics_listen",
        Text,
        General,
        "`host:port` for the Prometheus endpoint (`GET /metrics`); a port in use stops the \
         broker.",
    )
    .doc("none (off)"),
    spec(
        "sys_interval",
        Whole { min: 0, max: DAY },
        General,
        "Seconds between the retained `$SYS/broker/chat-auth/...` figures (`0`: none).",
    )
    .default("10"),
    spec(
        "log_level",
        Choice(&["error", "warning", "notice", "info", "debug"]),
        General,
        "Lines go to the broker's log at the matching level; lines below the level are never \
         formatted.",
    )
    .doc("`info` (`warning` with `log_quiet true`)"),
    spec(
        "log_quiet",
        Flag,
        General,
        "auth-plug's option: `true` means `log_level warning`.",
    )
    .default("false"),
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

/// The option a name (ours or an alias) stands for.
pub fn find(name: &str) -> Option<&'static Spec> {
    OPTIONS
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

/// The option `name`, which the code reads: it must be in the table.
pub fn get(name: &str) -> &'static Spec {
    OPTIONS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("option {name} is read but not in config::options::OPTIONS"))
}

/// The option reference of docs/options.md, as a Markdown table (noted go-auth options in one
/// row).
pub fn reference() -> String {
    let mut out = String::from("| option | default | meaning |\n|---|---|---|\n");
    for spec in OPTIONS.iter().filter(|s| !matches!(s.kind, Noted(_))) {
        let aliases = if spec.aliases.is_empty() {
            String::new()
        } else {
            format!(
                " (go-auth: {})",
                spec.aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let default = match (spec.default_doc, spec.default) {
            (Some(doc), _) => doc.to_string(),
            (None, Some(value)) => format!("`{value}`"),
            (None, None) => "none".to_string(),
        };
        let values = match spec.kind {
            Whole { min, max } => format!(" From {min} to {max}."),
            kind => match kind.words() {
                Some(words)
                    if !words
                        .iter()
                        .all(|w| spec.meaning.contains(&format!("`{w}`"))) =>
                {
                    format!(
                        " One of {}.",
                        words
                            .iter()
                            .map(|w| format!("`{w}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                _ => String::new(),
            },
        };
        out.push_str(&format!(
            "| `auth_opt_{}`{aliases} | {default} | {}{values} |\n",
            spec.name, spec.meaning
        ));
    }
    let noted: Vec<String> = OPTIONS
        .iter()
        .filter(|s| matches!(s.kind, Noted(_)))
        .map(|s| format!("`auth_opt_{}`", s.name))
        .collect();
    out.push_str(&format!(
        "| {} | | mosquitto-go-auth's; they change nothing here and are accepted with one info \
         line each saying what chat-auth does instead. |\n",
        noted.join(", ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_are_valid() {
        let mut seen = std::collections::HashSet::new();
        for spec in OPTIONS {
            for name in std::iter::once(&spec.name).chain(spec.aliases) {
                assert!(seen.insert(*name), "{name} twice");
            }
            if let Some(value) = spec.default {
                match spec.kind {
                    Whole { min, max } => {
                        let n: u64 = value.parse().unwrap();
                        assert!((min..=max).contains(&n), "{}", spec.name);
                    }
                    Choice(_) | ChoiceOf(_) => {
                        assert!(spec.kind.words().unwrap().contains(&value), "{}", spec.name)
                    }
                    Flag => assert!(["true", "false"].contains(&value), "{}", spec.name),
                    _ => {}
                }
            }
        }
    }

    /// docs/options.md's reference is this table, between its `options:begin` and
    /// `options:end` markers; `CHAT_AUTH_WRITE_DOCS=1 cargo test --lib docs_options` rewrites
    /// it after a change here.
    #[test]
    fn docs_options_md_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/options.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
        let start = doc.find(begin).expect("options:begin in docs/options.md") + begin.len();
        let stop = doc.find(end).expect("options:end in docs/options.md");
        let table = reference();
        if std::env::var_os("CHAT_AUTH_WRITE_DOCS").is_some() {
            let updated = format!("{}{table}{}", &doc[..start], &doc[stop..]);
            std::fs::write(path, updated).unwrap();
        } else {
            assert_eq!(
                doc[start..stop],
                table,
                "docs/options.md's option reference differs from config::options::OPTIONS; run \
                 CHAT_AUTH_WRITE_DOCS=1 cargo test --lib docs_options"
            );
        }
    }
}
