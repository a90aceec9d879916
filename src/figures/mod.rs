//! Every figure (counter or gauge), once: its name, what it counts, where it is published
//! (the `$SYS` topic, the Prometheus series, the `getStats` key) and how its value is read
//! from one [`Snapshot`]. The table ([`FIGURES`], with the Prometheus [`FAMILIES`]) drives
//! the three outputs, `$SYS` (`metrics`), the Prometheus endpoint (`exporter`) and `getStats`
//! (`control`), and the reference in docs/figures.md, which a unit test keeps equal to
//! [`reference()`]. Pure: the plugin gathers the snapshot from its parts.

use std::collections::BTreeMap;

mod table;

pub use table::{FAMILIES, FIGURES};

/// The prefix of every `$SYS` topic.
pub const SYS_PREFIX: &str = "$SYS/broker/chat-auth/";

/// The prefix of every Prometheus metric name.
pub const PROMETHEUS_PREFIX: &str = "chatauth";

/// A figure of the table.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Its name in the table (docs/figures.md).
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// How its value is read from a snapshot.
    pub read: Read,
    /// Its topic under [`SYS_PREFIX`]; `{}` stands for the label.
    pub sys: Option<&'static str>,
    /// Its series in a Prometheus family.
    pub prometheus: Option<Series>,
    /// Its place in `getStats`' answer.
    pub stats: Option<Stats>,
    /// What it counts (docs/figures.md).
    pub help: &'static str,
}

/// A counter only goes up (until the broker restarts); a gauge is a level now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// What one of a value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things (logins, messages, ...); for a gauge of 0 and 1, whether something holds.
    Count,
    Bytes,
    /// Microseconds (seconds in Prometheus).
    Micros,
    /// Milliseconds (seconds in Prometheus).
    Millis,
}

/// How a figure's value is read.
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// One value; `None` while the part that holds it is off (storage, history).
    One(fn(&Snapshot) -> Option<u64>),
    /// A value per label of the set, in the set's order; no label, no value.
    Each(By, fn(&Snapshot) -> Vec<(&str, u64)>),
}

/// A label set: what a figure read with [`Read::Each`] is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Why logins were refused.
    LoginRefusal,
    /// Why chat messages were refused.
    ChatRefusal,
    /// The stored password formats of the logins the cache did not answer.
    PasswordFormat,
}

impl By {
    pub const ALL: [By; 3] = [By::LoginRefusal, By::ChatRefusal, By::PasswordFormat];

    /// The label's name (in docs, and as a Prometheus label).
    pub fn name(self) -> &'static str {
        match self {
            By::LoginRefusal | By::ChatRefusal => "reason",
            By::PasswordFormat => "format",
        }
    }

    /// What the labels are (docs/figures.md).
    pub fn help(self) -> &'static str {
        match self {
            By::LoginRefusal => {
                "why a login was refused: `wrong-password`, `unknown-user`, `no-password`, \
                 `no-stored-hash`, `unusable-hash`, `database`, `no-client-id`, \
                 `other-spelling`, `null-user-id`, `timeout` (a delayed login not checked in \
                 time), `too-many-connections` (`max_connections_per_user`); only the reasons \
                 that happened"
            }
            By::ChatRefusal => {
                "why a chat message was refused: `from-id-mismatch`, `to-id-mismatch`, \
                 `wrong-type`, `not-json`, `not-object`, `bad-id`, `content`, `too-large`, \
                 `too-many-members`, `unknown-client`, `rate-limited` (over `chat_rate`), \
                 `spool-full`, `spool-error`; only the reasons that happened"
            }
            By::PasswordFormat => {
                "the stored password format, as `getStats` names it (`bcrypt`, `pbkdf2`, ...; \
                 `unrecognised`), and `rules` for loading rules at every login; in `$SYS` \
                 and Prometheus with `/`, `+`, `#`, space and `$` written `_`"
            }
        }
    }
}

/// A figure's series in a Prometheus family.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// A [`FAMILIES`] name.
    pub family: &'static str,
    /// The series' labels, in order.
    pub labels: &'static [(&'static str, Label)],
}

/// A Prometheus label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// This one.
    Is(&'static str),
    /// The figure's label ([`Read::Each`]).
    Each,
}

/// A Prometheus metric family: one name, `# HELP` and `# TYPE`, a series per figure (and
/// label) in it.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The name after [`PROMETHEUS_PREFIX`], before the unit and `_total`.
    pub name: &'static str,
    /// The unit its name carries (and `# UNIT`); seconds make its values fractional.
    pub unit: Option<FamilyUnit>,
    /// Its `# HELP` line.
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyUnit {
    Seconds,
    Bytes,
}

/// A figure's place in `getStats`' answer.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Where it comes in the answer: the keys are answered in this order (each object
    /// where its first key comes).
    pub at: u16,
    /// Its key; `a.b` is `b` in the object `a`, `{}` stands for the label.
    pub key: &'static str,
    pub shape: Shape,
}

/// How a value is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Number,
    /// `true` when the value is not 0.
    True,
    /// `true` when the value is 0.
    False,
}

impl Shape {
    pub fn json(self, value: u64) -> serde_json::Value {
        match self {
            Shape::Number => value.into(),
            Shape::True => (value != 0).into(),
            Shape::False => (value == 0).into(),
        }
    }
}

impl Figure {
    /// The figure's values in `snapshot`: one (with the label `""`), or one per label.
    pub fn values<'s>(&self, snapshot: &'s Snapshot) -> Vec<(&'s str, u64)> {
        match self.read {
            Read::One(read) => read(snapshot).map(|v| ("", v)).into_iter().collect(),
            Read::Each(_, read) => read(snapshot),
        }
    }

    /// The label set it is counted by.
    pub fn by(&self) -> Option<By> {
        match self.read {
            Read::One(_) => None,
            Read::Each(by, _) => Some(by),
        }
    }
}

/// A label as it is written in a topic level and a Prometheus label value.
pub fn topic_label(label: &str) -> String {
    label.replace(['/', '+', '#', ' ', '$'], "_")
}

/// `template` with the label for its `{}`.
pub fn fill(template: &str, label: &str) -> String {
    template.replacen("{}", label, 1)
}

/// A family of [`FAMILIES`] by name.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

impl Family {
    /// The figures with a series in it.
    pub fn figures(&self) -> impl Iterator<Item = &'static Figure> + '_ {
        FIGURES
            .iter()
            .filter(|f| f.prometheus.is_some_and(|s| s.family == self.name))
    }

    /// Counter or gauge, as its figures are.
    pub fn kind(&self) -> Kind {
        self.figures().next().map_or(Kind::Gauge, |f| f.kind)
    }

    /// Whether its series have labels (a family of one series without has none).
    pub fn labelled(&self) -> bool {
        self.figures()
            .any(|f| f.prometheus.is_some_and(|s| !s.labels.is_empty()))
    }

    /// Its name as scraped (a counter's samples add `_total`).
    pub fn full_name(&self) -> String {
        let unit = match self.unit {
            Some(FamilyUnit::Seconds) => "_seconds",
            Some(FamilyUnit::Bytes) => "_bytes",
            None => "",
        };
        format!("{PROMETHEUS_PREFIX}_{}{unit}", self.name)
    }
}

/// The counters the broker thread bumps (plain integers: only that thread touches them);
/// they only go up (until the broker restarts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub logins_accepted: u64,
    pub logins_throttled: u64,
    /// By reason (`wrong-password`, `unknown-user`, ...).
    pub logins_refused: BTreeMap<&'static str, u64>,
    pub acl_allowed: u64,
    pub acl_denied: u64,
    pub chat_accepted: u64,
    /// By reason (`from-id-mismatch`, `not-json`, `spool-full`, ...).
    pub chat_refused: BTreeMap<&'static str, u64>,
    pub chat_retransmissions: u64,
    /// Stamped chat messages relayed by a bridge: delivered, stored by the broker they
    /// were sent to.
    pub chat_relayed: u64,
    /// Cluster commands run here from another broker.
    pub cluster_commands: u64,
}

impl Counters {
    pub fn login_refused(&mut self, reason: &'static str) {
        *self.logins_refused.entry(reason).or_default() += 1;
    }

    pub fn chat_refused(&mut self, reason: &'static str) {
        *self.chat_refused.entry(reason).or_default() += 1;
    }
}

/// Every figure at one moment: the broker thread's counters and what the other parts hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: Counters,
    pub sessions: Sessions,
    /// The throttle's state; read for `getStats` only (it walks the throttle's tables).
    pub throttle: Option<Throttle>,
    /// Logins the credential cache holds.
    pub logins_cached: u64,
    /// Logins the cache did not answer, by stored format (as the authenticator names it),
    /// in the formats' order.
    pub login_times: Vec<LoginTime>,
    /// MySQL is known down (never with MySQL off).
    pub database_down: bool,
    /// With storage on.
    pub storage: Option<Storage>,
    /// With chat history on.
    pub history: Option<History>,
    /// The per-user limits' figures.
    pub limits: Limits,
}

/// The per-user limits' figures (`chat_rate`, `max_connections_per_user`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Episodes of a user sending over `chat_rate` (their first refusal each).
    pub rate_episodes: u64,
    /// Users holding a rate bucket (sent lately).
    pub rate_users: u64,
    /// Connections ended for `max_connections_per_user` (`connection_limit_policy oldest`).
    pub connections_ended: u64,
    /// Users with a connection, where connections are followed (a limit on).
    pub connected_users: u64,
}

/// The sessions registry's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sessions {
    pub sessions: u64,
    pub online: u64,
    pub offline: u64,
    /// Offline sessions from the sessions file no delivery has reached yet.
    pub restored: u64,
    /// Users whose rules are held.
    pub users: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
    /// Deliveries refused because nothing validated them (wills, retained chat messages).
    pub unvalidated_refused: u64,
}

/// The login throttle's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub usernames: u64,
    pub addresses: u64,
    pub known_devices: u64,
    /// Estimated heap bytes of the whole throttle state.
    pub bytes: u64,
    /// Broker-thread time charged to the login budgets (failed logins), in microseconds.
    pub new_failed_us: u64,
    pub known_failed_us: u64,
    /// Logins refused unchecked, by why.
    pub refused_budget: u64,
    pub refused_known_budget: u64,
    pub refused_username: u64,
    pub refused_address: u64,
    pub refused_device: u64,
}

/// Broker-thread time of the logins of one stored format the cache did not answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoginTime {
    pub format: String,
    pub logins: u64,
    pub hash_us: u64,
    pub database_us: u64,
}

/// Storage's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Messages spooled, not yet in MySQL.
    pub queued: u64,
    /// Bytes of the records appended in this run and not yet in MySQL.
    pub pending_bytes: u64,
    /// Bytes on disk not yet in MySQL (with what an earlier run left).
    pub backlog_bytes: u64,
    pub full: bool,
    pub rows_written: u64,
    pub batches: u64,
    pub failed_attempts: u64,
    pub rejected_rows: u64,
    /// Milliseconds since the oldest message not yet in MySQL was stamped (0: none).
    pub backlog_age_ms: u64,
}

/// Chat history's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    pub pages: u64,
    pub failed: u64,
    pub query_us: u64,
    pub clients_tracked: u64,
}

/// The reference in docs/figures.md: every figure, the label sets, the Prometheus families.
pub fn reference() -> String {
    let mut out = String::from(
        "| figure | kind | `$SYS/broker/chat-auth/...` | Prometheus | `getStats` | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    let code = |text: String| {
        if text.is_empty() {
            text
        } else {
            format!("`{text}`")
        }
    };
    for figure in FIGURES {
        let placeholder = figure
            .by()
            .map_or(String::new(), |by| format!("<{}>", by.name()));
        let kind = match figure.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let unit = match figure.unit {
            Unit::Count => "",
            Unit::Bytes => ", bytes",
            Unit::Micros => ", µs",
            Unit::Millis => ", ms",
        };
        let sys = code(figure.sys.map_or(String::new(), |t| fill(t, &placeholder)));
        let prometheus = figure.prometheus.map_or(String::new(), |series| {
            let family = family(series.family).map_or(series.family.to_string(), |f| {
                let total = if f.kind() == Kind::Counter {
                    "_total"
                } else {
                    ""
                };
                format!("{}{total}", f.full_name())
            });
            let labels: Vec<String> = series
                .labels
                .iter()
                .map(|(name, value)| match value {
                    Label::Is(value) => format!("{name}=\"{value}\""),
                    Label::Each => name.to_string(),
                })
                .collect();
            if labels.is_empty() {
                code(family)
            } else {
                code(format!("{family}{{{}}}", labels.join(",")))
            }
        });
        let stats = figure.stats.map_or(String::new(), |stats| {
            let key = code(fill(stats.key, &placeholder));
            match stats.shape {
                Shape::Number => key,
                Shape::True => format!("{key} (`true` for 1)"),
                Shape::False => format!("{key} (`true` for 0)"),
            }
        });
        out.push_str(&format!(
            "| `{}` | {kind}{unit} | {sys} | {prometheus} | {stats} | {} |\n",
            figure.name, figure.help
        ));
    }
    out.push_str("\n| label | of | values |\n|---|---|---|\n");
    for by in By::ALL {
        let of: Vec<String> = FIGURES
            .iter()
            .filter(|f| f.by() == Some(by))
            .map(|f| format!("`{}`", f.name))
            .collect();
        out.push_str(&format!(
            "| `<{}>` | {} | {} |\n",
            by.name(),
            of.join(", "),
            by.help()
        ));
    }
    out.push_str("\n| Prometheus family | type | `# HELP` |\n|---|---|---|\n");
    for family in FAMILIES {
        let kind = match family.kind() {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} |\n",
            family.full_name(),
            family.help
        ));
    }
    out
}

/// Known snapshots and the outputs made from them, kept under `tests/figures/`.
#[cfg(test)]
pub(crate) mod golden {
    use super::*;

    /// Everything on, every value distinct and non-zero.
    pub(crate) fn full() -> Snapshot {
        let mut counters = Counters {
            logins_accepted: 101,
            logins_throttled: 102,
            acl_allowed: 103,
            acl_denied: 104,
            chat_accepted: 105,
            chat_retransmissions: 106,
            chat_relayed: 107,
            cluster_commands: 108,
            ..Default::default()
        };
        counters.logins_refused.insert("wrong-password", 111);
        counters.logins_refused.insert("unknown-user", 112);
        counters.logins_refused.insert("timeout", 113);
        counters.chat_refused.insert("not-json", 121);
        counters.chat_refused.insert("from-id-mismatch", 122);
        counters.chat_refused.insert("spool-full", 123);
        counters.chat_refused.insert("rate-limited", 124);
        Snapshot {
            counters,
            sessions: Sessions {
                sessions: 201,
                online: 202,
                offline: 203,
                restored: 204,
                users: 205,
                refreshes: 206,
                refresh_failures: 207,
                unvalidated_refused: 208,
            },
            throttle: Some(Throttle {
                usernames: 301,
                addresses: 302,
                known_devices: 303,
                bytes: 304,
                new_failed_us: 305,
                known_failed_us: 306,
                refused_budget: 307,
                refused_known_budget: 308,
                refused_username: 309,
                refused_address: 310,
                refused_device: 311,
            }),
            logins_cached: 401,
            login_times: vec![
                LoginTime {
                    format: "bcrypt".into(),
                    logins: 411,
                    hash_us: 1_412_000,
                    database_us: 413,
                },
                LoginTime {
                    format: "pbkdf2 sha/256".into(),
                    logins: 421,
                    hash_us: 422,
                    database_us: 2_423_500,
                },
                LoginTime {
                    format: "rules".into(),
                    logins: 431,
                    hash_us: 0,
                    database_us: 433,
                },
            ],
            database_down: false,
            storage: Some(Storage {
                queued: 501,
                pending_bytes: 502,
                backlog_bytes: 503,
                full: true,
                rows_written: 504,
                batches: 505,
                failed_attempts: 506,
                rejected_rows: 507,
                backlog_age_ms: 1_508,
            }),
            history: Some(History {
                pages: 601,
                failed: 602,
                query_us: 3_603_000,
                clients_tracked: 604,
            }),
            limits: Limits {
                rate_episodes: 701,
                rate_users: 702,
                connections_ended: 703,
                connected_users: 704,
            },
        }
    }

    /// `full` a while later: counters grown (one smaller, as after a restart of a part),
    /// a new refusal reason and password format, gauges changed.
    pub(crate) fn later() -> Snapshot {
        let mut s = full();
        s.counters.logins_accepted += 50;
        s.counters.acl_denied -= 4;
        s.counters.logins_refused.insert("database", 114);
        *s.counters.chat_refused.get_mut("not-json").unwrap() += 9;
        s.sessions.online = 2;
        s.sessions.refreshes += 10;
        s.logins_cached = 7;
        s.login_times[0].hash_us += 500_000;
        s.login_times[1].database_us -= 1_000;
        s.login_times.insert(
            1,
            LoginTime {
                format: "md5".into(),
                logins: 441,
                hash_us: 442,
                database_us: 443,
            },
        );
        let storage = s.storage.as_mut().unwrap();
        storage.rows_written += 1_000;
        storage.backlog_bytes = 0;
        storage.backlog_age_ms = 0;
        let history = s.history.as_mut().unwrap();
        history.pages += 1;
        history.query_us += 250_000;
        s
    }

    /// Storage and history off, MySQL down, nothing counted yet.
    pub(crate) fn bare() -> Snapshot {
        Snapshot {
            throttle: Some(Throttle::default()),
            database_down: true,
            ..Default::default()
        }
    }

    /// `tests/figures/<name>` holds `text`; `CHAT_AUTH_WRITE_GOLDEN=1 cargo test --lib
    /// golden` writes it instead (after a change to the figures that is meant).
    pub(crate) fn check(name: &str, text: &str) {
        let path = format!("{}/tests/figures/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("CHAT_AUTH_WRITE_GOLDEN").is_some() {
            std::fs::write(&path, text).unwrap();
            return;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        if kept == text {
            return;
        }
        let line = kept
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(kept.lines().count().min(text.lines().count()));
        panic!(
            "tests/figures/{name} differs from what is made now (a published figure changed?) \
             from line {}:\n  kept: {:?}\n  now:  {:?}\nif the change is meant: \
             CHAT_AUTH_WRITE_GOLDEN=1 cargo test --lib golden",
            line + 1,
            kept.lines().nth(line),
            text.lines().nth(line),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Each name, topic, series and `getStats` key (and place) once.
    #[test]
    fn every_figure_is_named_and_published_once() {
        let mut names = HashSet::new();
        let mut topics = HashSet::new();
        let mut series = HashSet::new();
        let mut keys = HashSet::new();
        let mut places = HashSet::new();
        for f in FIGURES {
            assert!(names.insert(f.name), "{} twice", f.name);
            assert!(
                f.sys.is_some() || f.prometheus.is_some() || f.stats.is_some(),
                "{} is published nowhere",
                f.name
            );
            if let Some(topic) = f.sys {
                assert!(topics.insert(topic), "{topic} twice");
            }
            if let Some(s) = f.prometheus {
                assert!(
                    series.insert(format!("{} {:?}", s.family, s.labels)),
                    "{}",
                    f.name
                );
            }
            if let Some(s) = f.stats {
                assert!(keys.insert(s.key), "{} twice", s.key);
                assert!(places.insert(s.at), "getStats place {} twice", s.at);
            }
        }
    }

    /// A figure counted by label has the label's place in each of its names; one that is
    /// not has none.
    #[test]
    fn labels_are_placed_where_a_figure_has_them() {
        for f in FIGURES {
            let each = f.by().is_some();
            for template in [f.sys, f.stats.map(|s| s.key)].into_iter().flatten() {
                assert_eq!(
                    template.matches("{}").count(),
                    usize::from(each),
                    "{}",
                    f.name
                );
            }
            if let Some(s) = f.prometheus {
                let labelled = s.labels.iter().filter(|(_, v)| *v == Label::Each).count();
                assert_eq!(labelled, usize::from(each), "{}", f.name);
            }
        }
    }

    /// The figures of one label set read the same labels (so `$SYS` can go label by label).
    #[test]
    fn the_figures_of_a_label_set_read_the_same_labels() {
        let snapshot = golden::later();
        for by in By::ALL {
            let labels: Vec<Vec<&str>> = FIGURES
                .iter()
                .filter(|f| f.by() == Some(by))
                .map(|f| f.values(&snapshot).into_iter().map(|(l, _)| l).collect())
                .collect();
            assert!(!labels.is_empty() && !labels[0].is_empty(), "{by:?}");
            assert!(labels.iter().all(|l| *l == labels[0]), "{by:?}: {labels:?}");
        }
    }

    /// Every family has figures, of one kind, with values its unit fits; a family without
    /// labels has one figure.
    #[test]
    fn families_hold_figures_that_fit() {
        for f in FIGURES {
            if let Some(s) = f.prometheus {
                assert!(
                    family(s.family).is_some(),
                    "{}: no family {}",
                    f.name,
                    s.family
                );
            }
        }
        for family in FAMILIES {
            let figures: Vec<&Figure> = family.figures().collect();
            assert!(!figures.is_empty(), "{} has no figures", family.name);
            assert!(family.labelled() || figures.len() == 1, "{}", family.name);
            for f in figures {
                assert_eq!(f.kind, family.kind(), "{} in {}", f.name, family.name);
                let fits = match family.unit {
                    Some(FamilyUnit::Seconds) => matches!(f.unit, Unit::Micros | Unit::Millis),
                    Some(FamilyUnit::Bytes) => f.unit == Unit::Bytes,
                    None => matches!(f.unit, Unit::Count | Unit::Bytes),
                };
                assert!(fits, "{} ({:?}) in {}", f.name, f.unit, family.name);
            }
        }
    }

    /// `$SYS` and Prometheus never need the throttle's figures (a snapshot for them does
    /// not read it).
    #[test]
    fn only_get_stats_reads_the_throttle() {
        let with = golden::full();
        let without = Snapshot {
            throttle: None,
            ..golden::full()
        };
        for f in FIGURES
            .iter()
            .filter(|f| f.sys.is_some() || f.prometheus.is_some())
        {
            assert_eq!(f.values(&with), f.values(&without), "{}", f.name);
        }
    }

    /// docs/figures.md's reference is this table, between its `figures:begin` and
    /// `figures:end` markers; `CHAT_AUTH_WRITE_DOCS=1 cargo test --lib docs_figures`
    /// rewrites it after a change here.
    #[test]
    fn docs_figures_md_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/figures.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- figures:begin -->\n", "<!-- figures:end -->");
        let start = doc.find(begin).expect("figures:begin in docs/figures.md") + begin.len();
        let stop = doc.find(end).expect("figures:end in docs/figures.md");
        let table = reference();
        if std::env::var_os("CHAT_AUTH_WRITE_DOCS").is_some() {
            let updated = format!("{}{table}{}", &doc[..start], &doc[stop..]);
            std::fs::write(path, updated).unwrap();
        } else {
            assert_eq!(
                doc[start..stop],
                table,
                "docs/figures.md's reference differs from figures::FIGURES; run \
                 CHAT_AUTH_WRITE_DOCS=1 cargo test --lib docs_figures"
            );
        }
    }
}
