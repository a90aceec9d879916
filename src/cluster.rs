//! Administration across bridged brokers. A `refreshUser` or `kickUser` run here is also
//! published on [`TOPIC`]; the bridges carry it (the bridge sections name the topic, see
//! docs/clustering.md), and every broker that receives it from a bridge (a bridge
//! account's connection, or its own outgoing bridge) runs it too. Each command carries an id:
//! one seen before is not run again (cycles of bridges). A broker that was down catches up
//! by itself: its clients log in again, and every login reads the rules fresh.

use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};

/// The topic commands travel on between brokers. Only bridge accounts (and superusers) may
/// publish or receive it, whatever the ACL rows say.
pub const TOPIC: &str = "chat-auth/cluster/v1";

/// How many command ids are remembered.
const REMEMBERED: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    RefreshUser(String),
    KickUser(String),
}

/// A command as it travels: `{"id": "...", "command": "refreshUser", "username": "alice"}`.
pub fn encode(id: &str, command: &ClusterCommand) -> Vec<u8> {
    let (name, username) = match command {
        ClusterCommand::RefreshUser(u) => ("refreshUser", u),
        ClusterCommand::KickUser(u) => ("kickUser", u),
    };
    json!({"id": id, "command": name, "username": username})
        .to_string()
        .into_bytes()
}

/// The id and command of a message on [`TOPIC`]; `None` for anything else.
pub fn decode(payload: &[u8]) -> Option<(String, ClusterCommand)> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let id = value
        .get("id")?
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 64)?;
    let username = value
        .get("username")?
        .as_str()
        .filter(|u| !u.is_empty())?
        .to_string();
    let command = match value.get("command")?.as_str()? {
        "refreshUser" => ClusterCommand::RefreshUser(username),
        "kickUser" => ClusterCommand::KickUser(username),
        _ => return None,
    };
    Some((id.to_string(), command))
}

/// The ids of the commands seen lately (bounded, oldest forgotten first).
#[derive(Default)]
pub struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    /// Whether `id` is new (and remembers it).
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.ids.insert(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_nothing_else_decodes() {
        for command in [
            ClusterCommand::RefreshUser("alice".into()),
            ClusterCommand::KickUser("o'brien \"x\"".into()),
        ] {
            assert_eq!(
                decode(&encode("abc", &command)),
                Some(("abc".to_string(), command))
            );
        }
        for bad in [
            &b"not json"[..],
            br#"{"id":"1","command":"getStats","username":"a"}"#,
            br#"{"id":"","command":"kickUser","username":"a"}"#,
            br#"{"id":"1","command":"kickUser","username":""}"#,
            br#"{"command":"kickUser","username":"a"}"#,
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_id_runs_once_and_memory_is_bounded() {
        let mut seen = Seen::default();
        assert!(seen.first_time("a"));
        assert!(!seen.first_time("a"));
        for n in 0..REMEMBERED {
            seen.first_time(&n.to_string());
        }
        assert!(seen.ids.len() <= REMEMBERED);
        assert!(seen.first_time("a"), "forgotten after {REMEMBERED} others");
    }
}
