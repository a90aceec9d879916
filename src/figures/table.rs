//! The table: every figure once, in the order of the `$SYS` topics (figures only
//! `getStats` answers placed beside their kin), and the Prometheus families in the order the
//! endpoint serves them.

use super::By::{ChatRefusal, LoginRefusal, PasswordFormat};
use super::Kind::{Counter, Gauge};
use super::Label::{Each as Labelled, Is};
use super::Read::{Each, One};
use super::{Family, FamilyUnit, Figure, Kind, Label, Read, Series, Shape, Stats, Unit};

const fn figure(name: &'static str, kind: Kind, read: Read, help: &'static str) -> Figure {
    Figure {
        name,
        kind,
        unit: Unit::Count,
        read,
        sys: None,
        prometheus: None,
        stats: None,
        help,
    }
}

const fn counter(name: &'static str, read: Read, help: &'static str) -> Figure {
    figure(name, Counter, read, help)
}

const fn gauge(name: &'static str, read: Read, help: &'static str) -> Figure {
    figure(name, Gauge, read, help)
}

impl Figure {
    const fn unit(mut self, unit: Unit) -> Figure {
        self.unit = unit;
        self
    }
    const fn sys(mut self, topic: &'static str) -> Figure {
        self.sys = Some(topic);
        self
    }
    const fn prometheus(
        mut self,
        family: &'static str,
        labels: &'static [(&'static str, Label)],
    ) -> Figure {
        self.prometheus = Some(Series { family, labels });
        self
    }
    const fn stats(self, at: u16, key: &'static str) -> Figure {
        self.stats_as(at, key, Shape::Number)
    }
    const fn stats_as(mut self, at: u16, key: &'static str, shape: Shape) -> Figure {
        self.stats = Some(Stats { at, key, shape });
        self
    }
}

pub const FIGURES: &[Figure] = &[
    // Logins.
    counter(
        "logins.accepted",
        One(|s| Some(s.counters.logins_accepted)),
        "Logins let in.",
    )
    .sys("logins/accepted")
    .prometheus("logins", &[("outcome", Is("accepted"))]),
    counter(
        "logins.throttled",
        One(|s| Some(s.counters.logins_throttled)),
        "Logins refused unchecked by the throttle.",
    )
    .sys("logins/throttled")
    .prometheus("logins", &[("outcome", Is("throttled"))]),
    counter(
        "logins.refused",
        Each(LoginRefusal, |s| {
            s.counters
                .logins_refused
                .iter()
                .map(|(reason, n)| (*reason, *n))
                .collect()
        }),
        "Logins refused, by reason.",
    )
    .sys("logins/refused/{}")
    .prometheus(
        "logins",
        &[("outcome", Is("refused")), ("reason", Labelled)],
    ),
    gauge(
        "logins.cached",
        One(|s| Some(s.logins_cached)),
        "Logins the credential cache holds.",
    )
    .sys("logins/cached")
    .prometheus("logins_cached", &[])
    .stats(20, "cachedLogins"),
    counter(
        "logins.time.count",
        Each(PasswordFormat, |s| {
            s.login_times
                .iter()
                .map(|t| (t.format.as_str(), t.logins))
                .collect()
        }),
        "Logins the cache did not answer, by stored password format.",
    )
    .sys("logins/time/{}/count")
    .stats(21, "loginTimes.{}.logins"),
    counter(
        "logins.time.hash",
        Each(PasswordFormat, |s| {
            s.login_times
                .iter()
                .map(|t| (t.format.as_str(), t.hash_us))
                .collect()
        }),
        "Broker-thread time of those logins checking the password.",
    )
    .unit(Unit::Micros)
    .sys("logins/time/{}/hash-us")
    .prometheus("login", &[("format", Labelled), ("part", Is("hash"))])
    .stats(22, "loginTimes.{}.hashMicros"),
    counter(
        "logins.time.database",
        Each(PasswordFormat, |s| {
            s.login_times
                .iter()
                .map(|t| (t.format.as_str(), t.database_us))
                .collect()
        }),
        "Broker-thread time of those logins reading the user's row.",
    )
    .unit(Unit::Micros)
    .sys("logins/time/{}/database-us")
    .prometheus("login", &[("format", Labelled), ("part", Is("database"))])
    .stats(23, "loginTimes.{}.databaseMicros"),
    // The login throttle (getStats only: reading it walks its tables).
    gauge(
        "throttle.usernames",
        One(|s| s.throttle.as_ref().map(|t| t.usernames)),
        "Usernames with failed logins remembered.",
    )
    .stats(6, "throttledKeys.usernames"),
    gauge(
        "throttle.addresses",
        One(|s| s.throttle.as_ref().map(|t| t.addresses)),
        "Addresses with failed logins remembered.",
    )
    .stats(7, "throttledKeys.addresses"),
    gauge(
        "throttle.known_devices",
        One(|s| s.throttle.as_ref().map(|t| t.known_devices)),
        "Known devices (client ids that logged in as their user) remembered.",
    )
    .stats(8, "throttledKeys.knownDevices"),
    gauge(
        "throttle.bytes",
        One(|s| s.throttle.as_ref().map(|t| t.bytes)),
        "Heap bytes of all throttle state (an estimate).",
    )
    .unit(Unit::Bytes)
    .stats(9, "throttledKeys.bytes"),
    counter(
        "throttle.failed.new_devices",
        One(|s| s.throttle.as_ref().map(|t| t.new_failed_us)),
        "Broker-thread time of failed logins charged to the login budget of new devices.",
    )
    .unit(Unit::Micros)
    .stats(10, "throttledKeys.failedLoginMicros.newDevices"),
    counter(
        "throttle.failed.known_devices",
        One(|s| s.throttle.as_ref().map(|t| t.known_failed_us)),
        "Broker-thread time of failed logins charged to the login budget of known devices.",
    )
    .unit(Unit::Micros)
    .stats(11, "throttledKeys.failedLoginMicros.knownDevices"),
    counter(
        "throttle.refused.budget",
        One(|s| s.throttle.as_ref().map(|t| t.refused_budget)),
        "Logins refused unchecked: the budget for new devices' failed logins was spent.",
    )
    .stats(12, "throttledKeys.refused.budget"),
    counter(
        "throttle.refused.known_budget",
        One(|s| s.throttle.as_ref().map(|t| t.refused_known_budget)),
        "Logins refused unchecked: the budget for known devices failing again was spent.",
    )
    .stats(13, "throttledKeys.refused.knownBudget"),
    counter(
        "throttle.refused.username",
        One(|s| s.throttle.as_ref().map(|t| t.refused_username)),
        "Logins refused unchecked: too many failed logins for the username.",
    )
    .stats(14, "throttledKeys.refused.username"),
    counter(
        "throttle.refused.address",
        One(|s| s.throttle.as_ref().map(|t| t.refused_address)),
        "Logins refused unchecked: too many failed logins from the address.",
    )
    .stats(15, "throttledKeys.refused.address"),
    counter(
        "throttle.refused.device",
        One(|s| s.throttle.as_ref().map(|t| t.refused_device)),
        "Logins refused unchecked: too many failed logins of the client id.",
    )
    .stats(16, "throttledKeys.refused.device"),
    // Authorization.
    counter(
        "acl.allowed",
        One(|s| Some(s.counters.acl_allowed)),
        "ACL checks allowed.",
    )
    .sys("acl/allowed")
    .prometheus("acl_checks", &[("decision", Is("allowed"))]),
    counter(
        "acl.denied",
        One(|s| Some(s.counters.acl_denied)),
        "ACL checks denied.",
    )
    .sys("acl/denied")
    .prometheus("acl_checks", &[("decision", Is("denied"))]),
    // Chat messages.
    counter(
        "chat.accepted",
        One(|s| Some(s.counters.chat_accepted)),
        "Chat messages stamped (and stored, with storage on).",
    )
    .sys("chat/accepted")
    .prometheus("chat_messages", &[("outcome", Is("accepted"))]),
    counter(
        "chat.retransmissions",
        One(|s| Some(s.counters.chat_retransmissions)),
        "Resends of a `clientMsgId` (and QoS 2 resends before PUBREL), given their first stamp.",
    )
    .sys("chat/retransmissions")
    .prometheus("chat_messages", &[("outcome", Is("retransmission"))]),
    counter(
        "chat.relayed",
        One(|s| Some(s.counters.chat_relayed)),
        "Stamped chat messages relayed by a bridge: delivered, stored by the broker they were \
         sent to.",
    )
    .sys("chat/relayed")
    .prometheus("chat_messages", &[("outcome", Is("relayed"))]),
    counter(
        "cluster.commands",
        One(|s| Some(s.counters.cluster_commands)),
        "Cluster commands run here from another broker.",
    )
    .sys("cluster/commands"),
    counter(
        "chat.refused",
        Each(ChatRefusal, |s| {
            s.counters
                .chat_refused
                .iter()
                .map(|(reason, n)| (*reason, *n))
                .collect()
        }),
        "Chat messages refused, by reason.",
    )
    .sys("chat/refused/{}")
    .prometheus(
        "chat_messages",
        &[("outcome", Is("refused")), ("reason", Labelled)],
    )
    .stats(36, "chatRefused.{}"),
    // Per-user limits.
    counter(
        "limits.rate_episodes",
        One(|s| Some(s.limits.rate_episodes)),
        "Episodes of a user sending chat messages over `chat_rate` (each logged once; its \
         refusals are `chat.refused` `rate-limited`).",
    )
    .sys("limits/rate-episodes")
    .prometheus("limit_events", &[("event", Is("rate-episode"))])
    .stats(37, "limits.rateEpisodes"),
    gauge(
        "limits.rate_users",
        One(|s| Some(s.limits.rate_users)),
        "Users whose chat rate bucket is held (they sent lately; a full bucket is forgotten).",
    )
    .stats(38, "limits.rateUsers"),
    counter(
        "limits.connections_ended",
        One(|s| Some(s.limits.connections_ended)),
        "Connections ended because their user logged in once more than \
         `max_connections_per_user` (`connection_limit_policy oldest`; refused logins are \
         `logins.refused` `too-many-connections`).",
    )
    .sys("limits/connections-ended")
    .prometheus("limit_events", &[("event", Is("connection-ended"))])
    .stats(39, "limits.connectionsEnded"),
    gauge(
        "limits.connected_users",
        One(|s| Some(s.limits.connected_users)),
        "Users with a connection, as the connection limit follows them (0 with no limit).",
    )
    .stats(40, "limits.connectedUsers"),
    // Users' rules.
    counter(
        "rules.refreshes",
        One(|s| Some(s.sessions.refreshes)),
        "Background reloads of users' rules.",
    )
    .sys("rules/refreshes")
    .prometheus("rules_refreshes", &[("result", Is("ok"))])
    .stats(18, "refreshes"),
    counter(
        "rules.refresh_failures",
        One(|s| Some(s.sessions.refresh_failures)),
        "Background reloads of users' rules that failed (the rules held stay).",
    )
    .sys("rules/refresh-failures")
    .prometheus("rules_refreshes", &[("result", Is("failed"))])
    .stats(19, "refreshFailures"),
    // Sessions.
    gauge(
        "sessions.online",
        One(|s| Some(s.sessions.online)),
        "The plugin's sessions of connected clients.",
    )
    .sys("sessions/online")
    .prometheus("sessions", &[("state", Is("online"))])
    .stats(2, "onlineSessions"),
    gauge(
        "sessions.offline",
        One(|s| Some(s.sessions.offline)),
        "The plugin's offline sessions (persistent clients away).",
    )
    .sys("sessions/offline")
    .prometheus("sessions", &[("state", Is("offline"))])
    .stats(3, "offlineSessions"),
    gauge(
        "sessions.all",
        One(|s| Some(s.sessions.sessions)),
        "The plugin's sessions, online and offline.",
    )
    .stats(1, "sessions"),
    gauge(
        "sessions.restored",
        One(|s| Some(s.sessions.restored)),
        "Offline sessions from the sessions file no delivery has reached yet.",
    )
    .stats(4, "restoredSessions"),
    gauge(
        "sessions.users_with_rules",
        One(|s| Some(s.sessions.users)),
        "Users whose rules are held (connected users, and recently disconnected ones until \
         their rules are due).",
    )
    .stats(17, "usersWithRules"),
    counter(
        "sessions.unvalidated_refused",
        One(|s| Some(s.sessions.unvalidated_refused)),
        "Deliveries refused because nothing validated them (wills and retained messages on \
         chat topics).",
    )
    .stats(5, "unvalidatedDeliveriesRefused"),
    // MySQL.
    gauge(
        "mysql.up",
        One(|s| Some(u64::from(!s.database_down))),
        "1 while MySQL answers (or is not used), 0 while it is known down; `getStats` says \
         `databaseDown` instead.",
    )
    .sys("mysql/up")
    .prometheus("mysql_up", &[])
    .stats_as(24, "databaseDown", Shape::False),
    // Storage (with storage on).
    counter(
        "storage.rows_stored",
        One(|s| s.storage.as_ref().map(|t| t.rows_written)),
        "Chat messages stored in MySQL.",
    )
    .sys("storage/rows-stored")
    .prometheus("storage_rows", &[("result", Is("stored"))])
    .stats(28, "storage.rowsWritten"),
    counter(
        "storage.rows_rejected",
        One(|s| s.storage.as_ref().map(|t| t.rejected_rows)),
        "Chat messages MySQL refused, set aside.",
    )
    .sys("storage/rows-rejected")
    .prometheus("storage_rows", &[("result", Is("rejected"))])
    .stats(31, "storage.rejectedRows"),
    gauge(
        "storage.spool_bytes",
        One(|s| s.storage.as_ref().map(|t| t.backlog_bytes)),
        "Spooled bytes on disk not yet in MySQL (with what an earlier run left).",
    )
    .unit(Unit::Bytes)
    .sys("storage/spool-bytes")
    .prometheus("spool", &[]),
    gauge(
        "storage.spool_messages",
        One(|s| s.storage.as_ref().map(|t| t.queued)),
        "Spooled messages not yet in MySQL.",
    )
    .sys("storage/spool-messages")
    .prometheus("spool_messages", &[])
    .stats(25, "storage.queuedMessages"),
    gauge(
        "storage.backlog_age",
        One(|s| s.storage.as_ref().map(|t| t.backlog_age_ms)),
        "How old the oldest message the writer has in hand is (0: none).",
    )
    .unit(Unit::Millis)
    .sys("storage/backlog-age-ms")
    .prometheus("storage_backlog_age", &[]),
    gauge(
        "storage.pending_bytes",
        One(|s| s.storage.as_ref().map(|t| t.pending_bytes)),
        "Bytes of the messages spooled in this run not yet in MySQL.",
    )
    .unit(Unit::Bytes)
    .stats(26, "storage.spoolBytes"),
    gauge(
        "storage.spool_full",
        One(|s| s.storage.as_ref().map(|t| u64::from(t.full))),
        "1 while the spool is full (chat messages are refused).",
    )
    .stats_as(27, "storage.spoolFull", Shape::True),
    counter(
        "storage.batches",
        One(|s| s.storage.as_ref().map(|t| t.batches)),
        "Batches the writer committed to MySQL.",
    )
    .stats(29, "storage.batches"),
    counter(
        "storage.failed_attempts",
        One(|s| s.storage.as_ref().map(|t| t.failed_attempts)),
        "Batches the writer tried and failed to write (tried again).",
    )
    .stats(30, "storage.failedAttempts"),
    // Chat history (with chat history on).
    counter(
        "history.pages",
        One(|s| s.history.as_ref().map(|t| t.pages)),
        "Chat history requests answered with a page.",
    )
    .sys("history/pages")
    .prometheus("history_requests", &[("result", Is("answered"))])
    .stats(32, "history.pagesAnswered"),
    counter(
        "history.failed",
        One(|s| s.history.as_ref().map(|t| t.failed)),
        "Chat history requests that failed (MySQL).",
    )
    .sys("history/failed")
    .prometheus("history_requests", &[("result", Is("failed"))])
    .stats(33, "history.pagesFailed"),
    counter(
        "history.query_time",
        One(|s| s.history.as_ref().map(|t| t.query_us)),
        "Time the history threads spent on requests.",
    )
    .unit(Unit::Micros)
    .sys("history/query-us")
    .prometheus("history_query", &[])
    .stats(34, "history.queryMicros"),
    gauge(
        "history.clients_tracked",
        One(|s| s.history.as_ref().map(|t| t.clients_tracked)),
        "Clients the per-client history limits keep track of.",
    )
    .stats(35, "history.clientsTracked"),
];

const fn family(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        unit: None,
        help,
    }
}

const fn family_in(name: &'static str, unit: FamilyUnit, help: &'static str) -> Family {
    Family {
        name,
        unit: Some(unit),
        help,
    }
}

pub const FAMILIES: &[Family] = &[
    family(
        "logins",
        "Logins by outcome (accepted, throttled, refused) and reason",
    ),
    family_in(
        "login",
        FamilyUnit::Seconds,
        "Broker-thread time of logins the cache did not answer, by stored format and part",
    ),
    family("logins_cached", "Logins the credential cache holds"),
    family("acl_checks", "ACL checks by decision"),
    family(
        "chat_messages",
        "Chat messages by outcome (accepted, retransmission, refused) and reason",
    ),
    family(
        "limit_events",
        "Per-user limits reached: rate episodes, connections ended",
    ),
    family(
        "rules_refreshes",
        "Background reloads of users' rules, by result",
    ),
    family("sessions", "The plugin's sessions by state"),
    family("mysql_up", "1 while MySQL answers"),
    family(
        "storage_rows",
        "Chat messages stored in MySQL, or set aside as refused",
    ),
    family_in("spool", FamilyUnit::Bytes, "Spooled bytes not yet in MySQL"),
    family("spool_messages", "Spooled messages not yet in MySQL"),
    family_in(
        "storage_backlog_age",
        FamilyUnit::Seconds,
        "Age of the oldest message the writer has in hand (0: none)",
    ),
    family(
        "history_requests",
        "Chat history requests the history threads ran, by result (answered, failed)",
    ),
    family_in(
        "history_query",
        FamilyUnit::Seconds,
        "Time the history threads spent on requests",
    ),
];
