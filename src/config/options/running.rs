//! The failed-login throttle, the offline sessions and the sessions file, the figures, the log.

use super::*;

pub(super) const RUNNING: &[Spec] = &[
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
];
