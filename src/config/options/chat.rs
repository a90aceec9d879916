//! Chat messages: validation, storage, history, the largest requests.

use super::*;

pub(super) const CHAT: &[Spec] = &[
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
];
