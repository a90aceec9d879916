//! Logins and the rules: the credential cache, how passwords are read, the chat topics, `groupsquery` and `aclquery`.

use super::*;

pub(super) const LOGINS: &[Spec] = &[
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
        "password_hash_algorithm",
        Text,
        General,
        "EMQX's `password_hash_algorithm`, for its user table: the algorithm, then the salt \
         position, e.g. `sha256 suffix` (or as EMQX writes it, `{name = sha256, \
         salt_position = suffix}`). `plain`, `md5`, `sha` (SHA-1), `sha256`, `sha512` force \
         that `password_format` with the `salt` column at `prefix` (EMQX's default) or \
         `suffix` (`disable`: return no `salt` column); `bcrypt` forces bcrypt; `{name = \
         pbkdf2, mac_fun = sha256, iterations = 4096, dk_length = 32}` reads EMQX's PBKDF2 \
         keys (hex, the `salt` column as salt; `mac_fun` `sha`, `sha256` or `sha512`; \
         `dk_length` by default the MAC's length).",
    ),
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
         MySQL). A login the credential cache answers keeps rules younger than this; one whose \
         password is checked reads them again.",
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
];
