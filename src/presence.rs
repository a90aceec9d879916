//! Presence (issue 27, part 3), the pure core only: NOT wired into the plugin yet (no option,
//! no event calls it). Who is shown online, with the offline delay that keeps a reconnecting
//! phone from flapping; the retained messages to publish; who may publish or subscribe on a
//! presence topic. Time (milliseconds) is passed in.
//!
//! The plugin's side would be: `came` when `Limits::connected` says a user's first connection
//! was let in, `left` when `Limits::disconnected` names a user whose last one ended (a
//! persistent session left offline is offline), `due` at TICK, the `Publish`es queued as
//! retained broker publishes for TICK (`Action::Retain`, on the broker thread), `shown` at
//! shutdown (saved beside the sessions file) and `offline_at_start` for those at the next start.

use crate::topic::{Template, TemplateMatch};
use std::collections::{HashMap, HashSet};

/// `presence_topic` and `presence_offline_delay`.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// `/users/{id}/presence` by default.
    pub topic: Template,
    /// How long after a user's last connection ended they are shown offline (a reconnect
    /// within it shows nothing).
    pub offline_delay_ms: i64,
}

/// A retained message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Who is shown online, and who is leaving.
pub struct Presence {
    config: PresenceConfig,
    /// Users last published online.
    shown: HashSet<Box<str>>,
    /// Users whose last connection ended, and when they are to be shown offline.
    leaving: HashMap<Box<str>, i64>,
}

/// `{"userId":..,"online":..,"ts":..}`: a user id of digits as a number (as chat messages'
/// `fromId`), any other as a string.
pub fn payload(user_id: &str, online: bool, ts_ms: i64) -> Vec<u8> {
    let id = match user_id.parse::<u64>() {
        Ok(n) if n.to_string() == user_id => serde_json::Value::from(n),
        _ => serde_json::Value::from(user_id),
    };
    serde_json::json!({ "userId": id, "online": online, "ts": ts_ms })
        .to_string()
        .into_bytes()
}

impl Presence {
    pub fn new(config: PresenceConfig) -> Presence {
        Presence {
            config,
            shown: HashSet::new(),
            leaving: HashMap::new(),
        }
    }

    fn publish(&self, user: &str, online: bool, now_ms: i64) -> Publish {
        Publish {
            topic: self.config.topic.render(user),
            payload: payload(user, online, now_ms),
        }
    }

    /// A user's first connection was let in: shown online, unless they were leaving (a
    /// reconnect within the delay shows nothing) or are shown already.
    pub fn came(&mut self, user: &str, now_ms: i64) -> Option<Publish> {
        if self.leaving.remove(user).is_some() {
            return None;
        }
        if !self.shown.insert(user.into()) {
            return None;
        }
        Some(self.publish(user, true, now_ms))
    }

    /// A user's last connection ended: shown offline after the delay (`due`).
    pub fn left(&mut self, user: &str, now_ms: i64) {
        if self.shown.contains(user) {
            self.leaving
                .insert(user.into(), now_ms + self.config.offline_delay_ms);
        }
    }

    /// The users whose delay is over, shown offline now.
    pub fn due(&mut self, now_ms: i64) -> Vec<Publish> {
        if self.leaving.is_empty() {
            return Vec::new();
        }
        let mut gone: Vec<Box<str>> = self
            .leaving
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(user, _)| user.clone())
            .collect();
        gone.sort();
        gone.into_iter()
            .map(|user| {
                self.leaving.remove(&user);
                self.shown.remove(&user);
                self.publish(&user, false, now_ms)
            })
            .collect()
    }

    /// Users shown online now (leaving ones included): to be shown offline at the next start.
    pub fn shown(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.shown.iter().map(|u| &**u).collect();
        all.sort_unstable();
        all
    }

    /// At start: the users shown online when the broker stopped (or crashed), shown offline.
    pub fn offline_at_start<'u>(
        &self,
        users: impl IntoIterator<Item = &'u str>,
        now_ms: i64,
    ) -> Vec<Publish> {
        users
            .into_iter()
            .map(|user| self.publish(user, false, now_ms))
            .collect()
    }

    /// Whether a client may publish on `topic` (a PUBLISH or a will): never on a presence
    /// topic, whoever it is (only the plugin publishes there, and a bridge account for another
    /// broker's state, which is for the caller to allow).
    pub fn is_presence_topic(&self, topic: &str) -> bool {
        self.config.topic.id_of(topic).is_some()
    }

    /// Whether `viewer` may subscribe to `filter`, when it meets presence topics (`None`:
    /// it does not). A wildcard over the users is for superusers and bridge accounts only
    /// (`trusted`); one user's presence for that user, users sharing a group with them, and
    /// their contacts (`sees`).
    pub fn may_subscribe(
        &self,
        filter: &str,
        viewer: &str,
        trusted: bool,
        sees: impl Fn(&str) -> bool,
    ) -> Option<bool> {
        match self.config.topic.meet(filter) {
            TemplateMatch::Disjoint => None,
            TemplateMatch::AnyId => Some(trusted),
            TemplateMatch::Id(id) => Some(trusted || id == viewer || sees(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(delay: i64) -> Presence {
        Presence::new(PresenceConfig {
            topic: Template::parse("/users/{id}/presence").unwrap(),
            offline_delay_ms: delay,
        })
    }

    fn online_of(publish: &Publish) -> (String, bool) {
        let value: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
        (publish.topic.clone(), value["online"].as_bool().unwrap())
    }

    #[test]
    fn online_at_the_first_connection_offline_after_the_delay() {
        let mut p = presence(5_000);
        let on = p.came("17", 1_000).expect("online");
        assert_eq!(online_of(&on), ("/users/17/presence".into(), true));
        assert_eq!(
            on.payload,
            br#"{"userId":17,"online":true,"ts":1000}"#.to_vec()
        );
        p.left("17", 2_000);
        assert!(p.due(6_999).is_empty());
        let off = p.due(7_000);
        assert_eq!(off.len(), 1);
        assert_eq!(online_of(&off[0]), ("/users/17/presence".into(), false));
        assert!(p.shown().is_empty());
    }

    #[test]
    fn a_reconnect_within_the_delay_shows_nothing() {
        let mut p = presence(5_000);
        p.came("17", 0);
        p.left("17", 1_000);
        assert_eq!(p.came("17", 3_000), None);
        assert!(p.due(100_000).is_empty(), "still online");
        assert_eq!(p.shown(), vec!["17"]);
    }

    #[test]
    fn a_restart_shows_offline_who_was_shown_online() {
        let mut p = presence(0);
        p.came("1", 0);
        p.came("2", 0);
        let saved: Vec<String> = p.shown().iter().map(|u| u.to_string()).collect();
        let fresh = presence(0);
        let offline = fresh.offline_at_start(saved.iter().map(String::as_str), 9);
        assert_eq!(offline.len(), 2);
        assert!(offline.iter().all(|o| !online_of(o).1));
    }

    #[test]
    fn ids_that_are_not_numbers_stay_strings() {
        assert_eq!(
            payload("alice", false, 1),
            br#"{"userId":"alice","online":false,"ts":1}"#.to_vec()
        );
        assert_eq!(
            payload("007", true, 1),
            br#"{"userId":"007","online":true,"ts":1}"#.to_vec()
        );
    }

    #[test]
    fn who_may_subscribe() {
        let p = presence(0);
        let contacts = |id: &str| id == "2";
        assert_eq!(
            p.may_subscribe("/users/1/presence", "1", false, contacts),
            Some(true)
        );
        assert_eq!(
            p.may_subscribe("/users/2/presence", "1", false, contacts),
            Some(true)
        );
        assert_eq!(
            p.may_subscribe("/users/3/presence", "1", false, contacts),
            Some(false)
        );
        assert_eq!(
            p.may_subscribe("/users/+/presence", "1", false, contacts),
            Some(false)
        );
        assert_eq!(
            p.may_subscribe("/users/#", "1", false, contacts),
            Some(false)
        );
        assert_eq!(p.may_subscribe("#", "1", false, contacts), Some(false));
        assert_eq!(
            p.may_subscribe("/users/+/presence", "1", true, contacts),
            Some(true)
        );
        assert_eq!(
            p.may_subscribe("/users/1/messages", "1", false, contacts),
            None
        );
        assert!(p.is_presence_topic("/users/9/presence"));
        assert!(!p.is_presence_topic("/users/9/messages"));
    }
}
