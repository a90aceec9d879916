-- chat-auth schema (MariaDB 10.5+ / MySQL 8). Safe to run on an existing database:
-- every statement is CREATE ... IF NOT EXISTS.
--
-- Usernames compare byte for byte (utf8mb4_bin), as auth-plug's `username = '%s'` did on
-- a binary column: 'Alice' and 'alice' are different users.

CREATE TABLE IF NOT EXISTS users (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username       VARCHAR(255) NOT NULL,
    -- Any format chat-auth reads: PBKDF2$..., $7$..., $2y$..., *HEX (PASSWORD()), hex digests...
    password_hash  VARCHAR(512) NULL,
    -- Only for salted hex digests (MD5/SHA1/SHA2 of salt + password).
    salt           VARBINARY(255) NULL,
    is_superuser   TINYINT(1) NOT NULL DEFAULT 0,
    created_at     TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE KEY users_username (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- "groups" is a reserved word in MySQL 8, hence chat_groups.
CREATE TABLE IF NOT EXISTS chat_groups (
    id    BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name  VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS group_members (
    group_id  BIGINT UNSIGNED NOT NULL,
    user_id   BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (group_id, user_id),
    KEY group_members_user (user_id),
    CONSTRAINT group_members_group FOREIGN KEY (group_id) REFERENCES chat_groups (id) ON DELETE CASCADE,
    CONSTRAINT group_members_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB;

-- auth-plug's ACL table: topic patterns with %u (username), %c (client id), + and #;
-- rw: 1 read, 2 write, 3 read and write (4 subscribe with acl_subscribe_level 4).
CREATE TABLE IF NOT EXISTS acls (
    id        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username  VARCHAR(255) NOT NULL,
    topic     VARCHAR(1024) NOT NULL,
    rw        TINYINT UNSIGNED NOT NULL DEFAULT 1,
    KEY acls_username (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Chat messages written by the plugin. message_id is unique, so a replay never doubles a row.
CREATE TABLE IF NOT EXISTS messages (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_id  VARCHAR(64) CHARACTER SET ascii NOT NULL,
    type        ENUM('CHAT', 'GROUPCHAT') NOT NULL,
    -- Ids compare byte for byte, as topics do ('Bob' is not 'bob').
    from_id     VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    to_id       VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    content     MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    topic       VARCHAR(1024) NOT NULL,
    qos         TINYINT UNSIGNED NOT NULL,
    client_id   VARCHAR(256) NOT NULL,
    server_ts   BIGINT NOT NULL COMMENT 'server time, ms since the Unix epoch',
    -- The message exactly as it was delivered (chat history answers with it).
    payload     MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    UNIQUE KEY messages_message_id (message_id),
    KEY messages_conversation (to_id, id),
    -- Chat history: a group's messages or an inbox (type, to_id, then id: InnoDB appends the
    -- primary key), and one direction of a conversation (from_id, type, to_id, id; from_id
    -- first, so it never competes for a group's pages).
    KEY messages_history_to (type, to_id),
    KEY messages_history_pair (from_id, type, to_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
