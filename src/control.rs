//! `$CONTROL/chat-auth/v1`: administrative commands from superusers, in the style of
//! Mosquitto's dynamic-security plugin. Parsing and answers only; the plugin runs them.
//!
//! Request:  `{"commands":[{"command":"refreshUser","username":"alice","correlationData":"1"}]}`
//! (a single `{"command":...}` object is accepted too).
//! Answer, on `$CONTROL/chat-auth/v1/response` to the requesting client, one per command:
//! `{"responses":[{"command":"refreshUser","correlationData":"1","data":{...}}]}`, or with
//! `"error":"..."` instead of `data`.
//!
//! Each command runs here ([`Command::apply`]) against the parts the plugin lends it
//! ([`Context`]); the plugin only checks who asks and starts the rules loads asked for.

use crate::action::Action;
use crate::cluster::{self, ClusterCommand};
use crate::envelope::{Body, Bounds, commands};
use crate::figures::{self, FIGURES, Figure, Snapshot, Storage};
use crate::logging::printable;
use crate::sessions::{Job, Registry};
use serde_json::{Map, Value, json};

pub const TOPIC: &str = "$CONTROL/chat-auth/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/chat-auth/v1/response";

/// More commands than this in one message are refused as a whole.
const MAX_COMMANDS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Reload the user's groups and ACL rows now.
    RefreshUser { username: String },
    /// Disconnect every client of the user.
    KickUser { username: String },
    /// Session and refresh counters.
    GetStats,
}

pub use crate::action::Reply;

/// One command of a request: what it is (or why it cannot be run) and how to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Result<Command, String>,
    pub reply: Reply,
}

/// Splits a control message into its commands. `Err` when the message is not a command
/// list at all, or larger than `max_bytes` (`control_max_request_kb`; not read at all):
/// answered with one error.
pub fn parse(payload: &[u8], client_id: &str, max_bytes: usize) -> Result<Vec<Request>, String> {
    let base = Reply::to(client_id, RESPONSE_TOPIC);
    let bounds = Bounds {
        commands: MAX_COMMANDS,
        bytes: max_bytes,
        option: "auth_opt_control_max_request_kb",
        members: &["username"],
    };
    Ok(commands(payload, &base, &bounds)?
        .into_iter()
        .map(|(body, reply)| Request {
            command: body.and_then(|body| command(&reply.command, &body)),
            reply,
        })
        .collect())
}

fn command(name: &str, body: &Body<'_>) -> Result<Command, String> {
    let username = || -> Result<String, String> {
        match body.text("username") {
            Some(u) if !u.is_empty() => Ok(u.into_owned()),
            _ => Err("\"username\" (a non-empty string) is required".into()),
        }
    };
    match name {
        "refreshUser" => Ok(Command::RefreshUser {
            username: username()?,
        }),
        "kickUser" => Ok(Command::KickUser {
            username: username()?,
        }),
        "getStats" => Ok(Command::GetStats),
        "" => Err("\"command\" (a string) is required".into()),
        other => Err(format!("unknown command '{other}'")),
    }
}

/// What running a command needs from the rest of the plugin.
pub struct Context<'a> {
    pub registry: &'a mut Registry,
    /// Rules loads to start (a `refreshUser`; answered when its result is applied).
    pub jobs: &'a mut Vec<Job>,
    pub outbox: &'a mut Vec<Action>,
    /// Cluster commands sent or run lately.
    pub cluster: &'a mut cluster::Seen,
    /// The figures for `getStats` (gathered by the plugin, which holds them).
    pub stats: Option<Value>,
}

impl Command {
    /// Runs the command and answers it (a `refreshUser` with clients to refresh is answered
    /// when their rules are applied). `refreshUser` and `kickUser` are also sent to the other
    /// brokers of a cluster (`cluster::TOPIC`).
    pub fn apply(self, reply: &Reply, context: &mut Context<'_>) {
        match self {
            Command::RefreshUser { username } => {
                log::info!("control: refreshUser '{}'", printable(&username));
                context.tell_cluster(ClusterCommand::RefreshUser(username.clone()));
                let jobs = context
                    .registry
                    .refresh_user(&username, Some(reply.clone()));
                if jobs.is_empty() {
                    context
                        .outbox
                        .push(answer(reply, Ok(Some(json!({ "clients": 0 })))));
                }
                context.jobs.extend(jobs);
            }
            Command::KickUser { username } => {
                log::info!("control: kickUser '{}'", printable(&username));
                context.tell_cluster(ClusterCommand::KickUser(username.clone()));
                context.kick(username);
                context.outbox.push(answer(reply, Ok(None)));
            }
            Command::GetStats => {
                let stats = context.stats.take().unwrap_or(Value::Null);
                context.outbox.push(answer(reply, Ok(Some(stats))));
            }
        }
    }
}

impl Context<'_> {
    /// A command another broker ran (already checked to come from a bridge, and new).
    pub fn run_from_cluster(&mut self, command: ClusterCommand) {
        match command {
            ClusterCommand::RefreshUser(username) => {
                log::info!("cluster: refreshUser '{}'", printable(&username));
                let jobs = self.registry.refresh_user(&username, None);
                self.jobs.extend(jobs);
            }
            ClusterCommand::KickUser(username) => {
                log::info!("cluster: kickUser '{}'", printable(&username));
                self.kick(username);
            }
        }
    }

    /// Every client of the user: the broker kicks the name's exact spelling (clients the
    /// plugin holds no session for too), the plugin the other spellings it let in.
    fn kick(&mut self, username: String) {
        // The kicked clients' reconnects load the rules again, even those the credential
        // cache answers.
        self.registry.forget_rules_time(&username);
        let others = self.registry.other_spellings(&username);
        self.outbox.push(Action::KickUser(username));
        self.outbox
            .extend(others.into_iter().map(|id| Action::KickClient(id.into())));
    }

    /// Sends a command run here to the other brokers (through the bridges that carry
    /// `cluster::TOPIC`; without bridges nobody receives it).
    fn tell_cluster(&mut self, command: ClusterCommand) {
        let id = uuid::Uuid::now_v7().to_string();
        self.cluster.first_time(&id);
        self.outbox.push(Action::Broadcast {
            topic: cluster::TOPIC.into(),
            payload: cluster::encode(&id, &command),
        });
    }
}

/// `getStats`' answer: every figure of the table with a `getStats` key, in the keys'
/// order (`Stats::at`), from a snapshot with the throttle's figures read.
pub fn stats(snapshot: &Snapshot) -> Value {
    stats_under(snapshot, "")
}

/// `getStats`' `storage` object (also logged now and then).
pub fn storage_stats(storage: &Storage) -> Value {
    let snapshot = Snapshot {
        storage: Some(storage.clone()),
        ..Default::default()
    };
    let mut data = stats_under(&snapshot, "storage.");
    data["storage"].take()
}

/// The keys of `getStats` that start with `prefix`.
fn stats_under(snapshot: &Snapshot, prefix: &str) -> Value {
    let mut keyed: Vec<(&Figure, figures::Stats)> = FIGURES
        .iter()
        .filter_map(|f| f.stats.map(|k| (f, k)))
        .filter(|(_, k)| k.key.starts_with(prefix))
        .collect();
    keyed.sort_by_key(|(_, k)| k.at);
    let mut data = Map::new();
    for (figure, stats) in keyed {
        if figure.by().is_some() {
            // Counted by label: an object of the labels, empty while there are none.
            let parent: Vec<&str> = stats.key.split('.').take_while(|k| *k != "{}").collect();
            place(&mut data, &parent, "", None);
        }
        for (label, value) in figure.values(snapshot) {
            let path: Vec<&str> = stats.key.split('.').collect();
            place(&mut data, &path, label, Some(stats.shape.json(value)));
        }
    }
    Value::Object(data)
}

/// `value` at `path` (its `{}` standing for `label`), the objects on the way made where
/// missing; without a value, just the objects.
fn place(data: &mut Map<String, Value>, path: &[&str], label: &str, value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut object = data;
    for key in parents {
        let entry = object
            .entry(figures::fill(key, label))
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = entry else {
            unreachable!("figures: a getStats key inside a number");
        };
        object = inner;
    }
    let key = figures::fill(last, label);
    match value {
        Some(value) => {
            object.insert(key, value);
        }
        None => {
            object
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
}

pub use crate::envelope::{answer, response};

#[cfg(test)]
mod tests {
    use super::*;

    /// `control_max_request_kb`'s default.
    const LIMIT: usize = 16 * 1024;

    #[test]
    fn parses_a_command_list_and_a_single_command() {
        let requests = parse(
            br#"{"commands":[{"command":"refreshUser","username":"alice","correlationData":7},
                {"command":"kickUser","username":"bob"},{"command":"getStats"}]}"#,
            "admin-1",
            LIMIT,
        )
        .unwrap();
        assert_eq!(
            requests[0].command,
            Ok(Command::RefreshUser {
                username: "alice".into()
            })
        );
        assert_eq!(requests[0].reply.correlation, Some(json!(7)));
        assert_eq!(requests[0].reply.client_id, "admin-1");
        assert_eq!(
            requests[1].command,
            Ok(Command::KickUser {
                username: "bob".into()
            })
        );
        assert_eq!(requests[2].command, Ok(Command::GetStats));
        let single = parse(br#"{"command":"getStats"}"#, "a", LIMIT).unwrap();
        assert_eq!(single.len(), 1);
    }

    #[test]
    fn bad_commands_get_their_own_error() {
        let requests = parse(
            br#"{"commands":[{"command":"dropTables"},{"command":"kickUser"},{"x":1}]}"#,
            "a",
            LIMIT,
        )
        .unwrap();
        assert!(
            requests[0]
                .command
                .as_ref()
                .unwrap_err()
                .contains("unknown")
        );
        assert!(
            requests[1]
                .command
                .as_ref()
                .unwrap_err()
                .contains("username")
        );
        assert!(requests[2].command.is_err());
        assert!(parse(b"not json", "a", LIMIT).is_err());
        assert!(parse(br#"{"commands":{}}"#, "a", LIMIT).is_err());
        assert!(parse(br#"[1,2]"#, "a", LIMIT).is_err());
        let huge = format!(
            r#"{{"command":"kickUser","username":"{}"}}"#,
            "u".repeat(LIMIT)
        );
        let refused = parse(huge.as_bytes(), "a", LIMIT).unwrap_err();
        assert!(
            refused
                .contains("refused unread: at most 16384 bytes (auth_opt_control_max_request_kb)"),
            "{refused}"
        );
    }

    #[test]
    fn responses_echo_the_command_and_correlation() {
        let reply = Reply {
            command: "refreshUser".into(),
            correlation: Some(json!("c-1")),
            ..Reply::to("a", RESPONSE_TOPIC)
        };
        let ok: Value =
            serde_json::from_slice(&response(&reply, Ok(Some(json!({"clients": 2}))))).unwrap();
        assert_eq!(
            ok,
            json!({"responses":[{"command":"refreshUser","correlationData":"c-1","data":{"clients":2}}]})
        );
        let failed: Value = serde_json::from_slice(&response::<Value>(
            &reply,
            Err("database unavailable".into()),
        ))
        .unwrap();
        assert_eq!(failed["responses"][0]["error"], "database unavailable");
    }

    #[test]
    fn commands_run_here_answer_and_reach_the_cluster() {
        let mut registry = Registry::new(
            None,
            std::time::Duration::from_secs(60),
            crate::sessions::OfflineCaps::default(),
        );
        let (mut jobs, mut outbox, mut seen) = (Vec::new(), Vec::new(), cluster::Seen::default());
        let reply = Reply {
            command: "kickUser".into(),
            ..Reply::to("admin-1", RESPONSE_TOPIC)
        };
        let mut context = Context {
            registry: &mut registry,
            jobs: &mut jobs,
            outbox: &mut outbox,
            cluster: &mut seen,
            stats: Some(json!({"sessions": 0})),
        };
        Command::KickUser {
            username: "bob".into(),
        }
        .apply(&reply, &mut context);
        Command::RefreshUser {
            username: "nobody".into(),
        }
        .apply(&reply, &mut context);
        Command::GetStats.apply(&reply, &mut context);
        assert!(jobs.is_empty(), "nobody has no clients to refresh");
        let kinds: Vec<&str> = outbox
            .iter()
            .map(|a| match a {
                Action::Broadcast { .. } => "broadcast",
                Action::KickUser(_) => "kick",
                Action::Publish { .. } => "answer",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "broadcast",
                "kick",
                "answer",
                "broadcast",
                "answer",
                "answer"
            ]
        );
        let Action::Broadcast { payload, .. } = &outbox[0] else {
            unreachable!()
        };
        let (id, command) = cluster::decode(payload).unwrap();
        assert_eq!(command, ClusterCommand::KickUser("bob".into()));
        assert!(
            !seen.first_time(&id),
            "its own command is not run again here"
        );
    }

    /// `getStats`' answer for known snapshots, as kept in `tests/figures/stats.json`.
    #[test]
    fn golden_get_stats() {
        use crate::figures::golden;
        let mut text = String::new();
        for (name, snapshot) in [("full", golden::full()), ("bare", golden::bare())] {
            let data = serde_json::to_string_pretty(&stats(&snapshot)).unwrap();
            text.push_str(&format!("// {name}\n{data}\n"));
        }
        golden::check("stats.json", &text);
    }
}
