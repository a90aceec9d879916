//! `$CONTROL/chat-auth/v1`: administrative commands from superusers, in the style of
//! Mosquitto's dynamic-security plugin. Parsing and answers only; the plugin runs them.
//!
//! Request:  `{"commands":[{"command":"refreshUser","username":"alice","correlationData":"1"}]}`
//! (a single `{"command":...}` object is accepted too).
//! Answer, on `$CONTROL/chat-auth/v1/response` to the requesting client, one per command:
//! `{"responses":[{"command":"refreshUser","correlationData":"1","data":{...}}]}`, or with
//! `"error":"..."` instead of `data`.

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

/// Where and how to answer one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub client_id: String,
    pub command: String,
    pub correlation: Option<Value>,
}

/// One command of a request: what it is (or why it cannot be run) and how to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Result<Command, String>,
    pub reply: Reply,
}

/// Splits a control message into its commands. `Err` when the message is not a command
/// list at all (answered with one error).
pub fn parse(payload: &[u8], client_id: &str) -> Result<Vec<Request>, String> {
    let message: Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let commands: Vec<&Value> = match message.get("commands") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(_) => return Err("\"commands\" must be an array".into()),
        None if message.get("command").is_some() => vec![&message],
        None => return Err("expected {\"commands\":[...]}".into()),
    };
    if commands.len() > MAX_COMMANDS {
        return Err(format!("at most {MAX_COMMANDS} commands per message"));
    }
    Ok(commands
        .into_iter()
        .map(|c| {
            let name = c
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Request {
                command: command(&name, c),
                reply: Reply {
                    client_id: client_id.to_string(),
                    command: name,
                    correlation: c.get("correlationData").cloned(),
                },
            }
        })
        .collect())
}

fn command(name: &str, body: &Value) -> Result<Command, String> {
    let username = || -> Result<String, String> {
        match body.get("username").and_then(Value::as_str) {
            Some(u) if !u.is_empty() => Ok(u.to_string()),
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

/// The answer to one command: `Ok(data)` or `Err(error)`.
pub fn response(reply: &Reply, outcome: Result<Option<Value>, String>) -> Vec<u8> {
    let mut item = Map::new();
    item.insert("command".into(), Value::String(reply.command.clone()));
    if let Some(correlation) = &reply.correlation {
        item.insert("correlationData".into(), correlation.clone());
    }
    match outcome {
        Ok(Some(data)) => {
            item.insert("data".into(), data);
        }
        Ok(None) => {}
        Err(error) => {
            item.insert("error".into(), Value::String(error));
        }
    }
    json!({ "responses": [Value::Object(item)] })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_list_and_a_single_command() {
        let requests = parse(
            br#"{"commands":[{"command":"refreshUser","username":"alice","correlationData":7},
                {"command":"kickUser","username":"bob"},{"command":"getStats"}]}"#,
            "admin-1",
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
        let single = parse(br#"{"command":"getStats"}"#, "a").unwrap();
        assert_eq!(single.len(), 1);
    }

    #[test]
    fn bad_commands_get_their_own_error() {
        let requests = parse(
            br#"{"commands":[{"command":"dropTables"},{"command":"kickUser"},{"x":1}]}"#,
            "a",
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
        assert!(parse(b"not json", "a").is_err());
        assert!(parse(br#"{"commands":{}}"#, "a").is_err());
        assert!(parse(br#"[1,2]"#, "a").is_err());
    }

    #[test]
    fn responses_echo_the_command_and_correlation() {
        let reply = Reply {
            client_id: "a".into(),
            command: "refreshUser".into(),
            correlation: Some(json!("c-1")),
        };
        let ok: Value =
            serde_json::from_slice(&response(&reply, Ok(Some(json!({"clients": 2}))))).unwrap();
        assert_eq!(
            ok,
            json!({"responses":[{"command":"refreshUser","correlationData":"c-1","data":{"clients":2}}]})
        );
        let failed: Value =
            serde_json::from_slice(&response(&reply, Err("database unavailable".into()))).unwrap();
        assert_eq!(failed["responses"][0]["error"], "database unavailable");
    }
}
