//! The connections of each user on this broker, in the order they logged in: for
//! `max_connections_per_user`, and for presence (a user's first connection, and the end of
//! the last one). Pure: keyed by the broker's client id and connection address as the
//! callbacks give them.
//!
//! A take-over of a client id replaces the connection that held it (whoever's it was): the
//! broker ends that one, and its DISCONNECT, which comes later with the old address, finds
//! nothing to end.

use std::collections::HashMap;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// `connection_limit_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// A login beyond the limit is refused.
    #[default]
    Refuse,
    /// A login beyond the limit is let in and the user's oldest connection disconnected.
    Oldest,
}

/// `max_connections_per_user` and `connection_limit_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionsConfig {
    /// 0: no limit.
    pub max: u32,
    pub policy: Policy,
}

/// What a login of a user gets (`Connections::admit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Over the limit, refused; the user holds `held` connections.
    Refuse {
        held: usize,
    },
    /// Over the limit: let in, and the user's oldest connection (this client id) is to be
    /// disconnected.
    AdmitEnding(Box<[u8]>),
}

#[derive(Debug)]
struct Connection {
    client_id: Box<[u8]>,
    pointer: usize,
}

#[derive(Default)]
pub struct Connections {
    config: ConnectionsConfig,
    /// Each user's connections, oldest first.
    by_user: Map<Box<str>, Vec<Connection>>,
    /// Whose each client id is, and at which connection.
    by_client: Map<Box<[u8]>, (usize, Box<str>)>,
}

impl Connections {
    pub fn new(config: ConnectionsConfig) -> Connections {
        Connections {
            config,
            ..Default::default()
        }
    }

    /// Whether logins are limited at all.
    pub fn limits(&self) -> bool {
        self.config.max > 0
    }

    /// The user's connections, the one holding `client_id` left out (a take-over).
    fn held_besides(&self, user: &str, client_id: &[u8]) -> usize {
        self.by_user.get(user).map_or(0, |list| {
            list.iter().filter(|c| *c.client_id != *client_id).count()
        })
    }

    /// What a login of `user` as `client_id` gets (nothing is recorded: `connected` does).
    pub fn admit(&self, user: &str, client_id: &[u8]) -> Admission {
        let max = self.config.max as usize;
        if max == 0 {
            return Admission::Admit;
        }
        let held = self.held_besides(user, client_id);
        if held < max {
            return Admission::Admit;
        }
        match self.config.policy {
            Policy::Refuse => Admission::Refuse { held },
            Policy::Oldest => {
                let oldest = self.by_user[user]
                    .iter()
                    .find(|c| *c.client_id != *client_id)
                    .expect("held > 0");
                Admission::AdmitEnding(oldest.client_id.clone())
            }
        }
    }

    /// A login let in. `true` when it is the user's first connection (the user comes
    /// online).
    pub fn connected(&mut self, user: &str, client_id: &[u8], pointer: usize) -> bool {
        // A take-over: the connection that held the id ends (its user may go offline, but
        // a take-over by the same user keeps them online).
        let was_online = self.by_user.contains_key(user);
        let taken = self.by_client.get(client_id).map(|(p, _)| *p);
        if let Some(old_pointer) = taken {
            self.remove(client_id, old_pointer);
        }
        let list = match self.by_user.get_mut(user) {
            Some(list) => list,
            None => self.by_user.entry(user.into()).or_default(),
        };
        let first = !was_online;
        list.push(Connection {
            client_id: client_id.into(),
            pointer,
        });
        self.by_client
            .insert(client_id.into(), (pointer, user.into()));
        first
    }

    /// A connection ended (DISCONNECT, or disconnected for the limit). The user whose last
    /// connection it was (they go offline).
    pub fn disconnected(&mut self, client_id: &[u8], pointer: usize) -> Option<Box<str>> {
        self.remove(client_id, pointer)
    }

    /// The connection `client_id` at `pointer` forgotten; its user when it was their last.
    fn remove(&mut self, client_id: &[u8], pointer: usize) -> Option<Box<str>> {
        match self.by_client.get(client_id) {
            Some((held, _)) if *held == pointer => {}
            _ => return None,
        }
        let (_, user) = self.by_client.remove(client_id).expect("checked");
        let list = self.by_user.get_mut(&user)?;
        list.retain(|c| !(*c.client_id == *client_id && c.pointer == pointer));
        if list.is_empty() {
            self.by_user.remove(&user);
            return Some(user);
        }
        None
    }

    /// The client id of the connection to end for the limit, forgotten now (its DISCONNECT
    /// finds nothing): `None` if it is gone already.
    pub fn ending(&mut self, client_id: &[u8]) -> Option<usize> {
        let pointer = self.by_client.get(client_id).map(|(p, _)| *p)?;
        self.remove(client_id, pointer);
        Some(pointer)
    }

    /// Connections of `user` held.
    pub fn of_user(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, Vec::len)
    }

    /// Users with a connection.
    pub fn users(&self) -> usize {
        self.by_user.len()
    }

    /// Whether `user` has a connection.
    pub fn is_online(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(max: u32, policy: Policy) -> Connections {
        Connections::new(ConnectionsConfig { max, policy })
    }

    #[test]
    fn refuse_beyond_the_limit() {
        let mut c = limited(2, Policy::Refuse);
        assert!(c.connected("1", b"a", 10));
        assert_eq!(c.admit("1", b"b"), Admission::Admit);
        assert!(!c.connected("1", b"b", 11));
        assert_eq!(c.admit("1", b"c"), Admission::Refuse { held: 2 });
        // Another user is not concerned.
        assert_eq!(c.admit("2", b"d"), Admission::Admit);
        // One gone: room again.
        assert_eq!(c.disconnected(b"a", 10), None);
        assert_eq!(c.admit("1", b"c"), Admission::Admit);
    }

    #[test]
    fn a_take_over_does_not_count_twice() {
        let mut c = limited(1, Policy::Refuse);
        c.connected("1", b"phone", 10);
        assert_eq!(c.admit("1", b"phone"), Admission::Admit);
        assert!(!c.connected("1", b"phone", 20), "still online");
        assert_eq!(c.of_user("1"), 1);
        // The old connection's DISCONNECT comes after: it ends nothing.
        assert_eq!(c.disconnected(b"phone", 10), None);
        assert_eq!(c.of_user("1"), 1);
        assert_eq!(c.disconnected(b"phone", 20), Some("1".into()));
        assert_eq!(c.users(), 0);
    }

    #[test]
    fn a_take_over_by_another_user_ends_the_first_users_connection() {
        let mut c = limited(0, Policy::Refuse);
        c.connected("1", b"x", 10);
        assert!(c.connected("2", b"x", 20));
        assert!(!c.is_online("1"));
        assert_eq!(c.disconnected(b"x", 10), None);
        assert!(c.is_online("2"));
    }

    #[test]
    fn oldest_names_the_oldest_other_connection() {
        let mut c = limited(2, Policy::Oldest);
        c.connected("1", b"a", 10);
        c.connected("1", b"b", 11);
        assert_eq!(c.admit("1", b"c"), Admission::AdmitEnding((*b"a").into()));
        assert_eq!(c.ending(b"a"), Some(10));
        c.connected("1", b"c", 12);
        assert_eq!(c.of_user("1"), 2);
        // Its DISCONNECT, when the kick comes through, ends nothing more.
        assert_eq!(c.disconnected(b"a", 10), None);
        assert_eq!(c.admit("1", b"d"), Admission::AdmitEnding((*b"b").into()));
        // A take-over of the oldest id is no new connection.
        assert_eq!(c.admit("1", b"b"), Admission::Admit);
    }

    #[test]
    fn no_limit_admits_all_and_still_tracks() {
        let mut c = limited(0, Policy::Refuse);
        for n in 0..100usize {
            assert_eq!(c.admit("1", n.to_string().as_bytes()), Admission::Admit);
            c.connected("1", n.to_string().as_bytes(), n);
        }
        assert_eq!(c.of_user("1"), 100);
        for n in 0..99usize {
            assert_eq!(c.disconnected(n.to_string().as_bytes(), n), None);
        }
        assert_eq!(c.disconnected(b"99", 99), Some("1".into()));
    }
}
