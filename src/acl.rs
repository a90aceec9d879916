//! The authorization rules, as pure decisions over one client's loaded rules: superusers,
//! then the chat topics, then auth-plug ACL patterns, then deny. No I/O; the callers load
//! the rules (at login, by the refresher) and keep them per client.

use crate::chat::Kind;
use crate::chat::topics::{ChatTopic, ChatTopics};
use crate::query::Query;
use crate::topic::{self, TemplateMatch};
use std::time::Duration;

/// What the broker asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A delivery to this client (checked per message).
    Read,
    /// A PUBLISH from this client.
    Write,
    /// A SUBSCRIBE filter (may hold wildcards and a `$share/` prefix).
    Subscribe,
    Unsubscribe,
}

/// auth-plug ACL patterns by access, as `aclquery` returns them (see `PatternSet` for how
/// they are held).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub subscribe: Vec<String>,
}

/// ACL patterns as a user (or a `%c` client) holds them: each distinct pattern once, with
/// the accesses it grants (a `rw = 3` row is one string, not three).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet(Box<[(Box<str>, u8)]>);

const GRANTS_READ: u8 = 1;
const GRANTS_WRITE: u8 = 2;
const GRANTS_SUBSCRIBE: u8 = 4;

impl PatternSet {
    /// The patterns granting `access` (`Unsubscribe` reads as `Read`; it never gets here).
    pub fn granting(&self, access: Access) -> impl Iterator<Item = &str> {
        let bit = match access {
            Access::Write => GRANTS_WRITE,
            Access::Subscribe => GRANTS_SUBSCRIBE,
            Access::Read | Access::Unsubscribe => GRANTS_READ,
        };
        self.0
            .iter()
            .filter(move |(_, grants)| grants & bit != 0)
            .map(|(pattern, _)| &**pattern)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every pattern once, each passed through `map` (`None` drops it).
    pub fn map(&self, mut map: impl FnMut(&str) -> Option<String>) -> PatternSet {
        PatternSet(
            self.0
                .iter()
                .filter_map(|(pattern, grants)| Some((map(pattern)?.into_boxed_str(), *grants)))
                .collect(),
        )
    }
}

impl From<&Patterns> for PatternSet {
    fn from(patterns: &Patterns) -> PatternSet {
        let mut merged: Vec<(Box<str>, u8)> = Vec::new();
        for (list, bit) in [
            (&patterns.read, GRANTS_READ),
            (&patterns.write, GRANTS_WRITE),
            (&patterns.subscribe, GRANTS_SUBSCRIBE),
        ] {
            for pattern in list {
                match merged.iter_mut().find(|(p, _)| **p == **pattern) {
                    Some((_, grants)) => *grants |= bit,
                    None => merged.push((pattern.as_str().into(), bit)),
                }
            }
        }
        PatternSet(merged.into_boxed_slice())
    }
}

/// A user's group ids, sorted and packed into one allocation (a `u32` count, the `u32` end
/// offset of each id, then the ids' bytes): a `HashSet<String>` cost about 75 bytes per id.
/// Looked up by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupIds(Box<[u8]>);

impl GroupIds {
    pub fn contains(&self, id: &str) -> bool {
        let mut low = 0;
        let mut high = self.len();
        while low < high {
            let middle = (low + high) / 2;
            match self.get(middle).cmp(id.as_bytes()) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.word(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        // Built from `str`s, cut at their own boundaries: always UTF-8.
        (0..self.len()).map(|i| std::str::from_utf8(self.get(i)).unwrap_or_default())
    }

    /// The `index`-th `u32` of the header (0: the count); 0 for an empty set.
    fn word(&self, index: usize) -> usize {
        self.0
            .get(index * 4..index * 4 + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn get(&self, index: usize) -> &[u8] {
        let text = &self.0[4 + 4 * self.len()..];
        let start = if index == 0 { 0 } else { self.word(index) };
        &text[start..self.word(index + 1)]
    }
}

impl<S: AsRef<str>> FromIterator<S> for GroupIds {
    fn from_iter<I: IntoIterator<Item = S>>(ids: I) -> GroupIds {
        let mut ids: Vec<S> = ids.into_iter().collect();
        if ids.is_empty() {
            return GroupIds::default();
        }
        ids.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        ids.dedup_by(|a, b| a.as_ref() == b.as_ref());
        let text_len: usize = ids.iter().map(|id| id.as_ref().len()).sum();
        let mut packed = Vec::with_capacity(4 + 4 * ids.len() + text_len);
        packed.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        let mut end = 0u32;
        for id in &ids {
            // A user's group ids are a few dozen bytes each, never 4 GiB together.
            end = end.saturating_add(id.as_ref().len() as u32);
            packed.extend_from_slice(&end.to_le_bytes());
        }
        for id in &ids {
            packed.extend_from_slice(id.as_ref().as_bytes());
        }
        GroupIds(packed.into_boxed_slice())
    }
}

/// The rules of one user, as loaded from MySQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The chat identity the groups were loaded for.
    pub user_id: String,
    pub groups: GroupIds,
    /// auth-plug ACL rows, not yet expanded (`%u`, `%c` differ per client).
    pub rows: Patterns,
}

/// The rules' options: the chat topics, the queries a user's rules are read with, how long
/// they are used.
#[derive(Debug, Clone)]
pub struct AclConfig {
    /// `None` when `chat_enabled` is false.
    pub chat: Option<ChatTopics>,
    /// The group ids of a user; set whenever the chat rules are on.
    pub groupsquery: Option<Query>,
    pub aclquery: Option<Query>,
    /// How long loaded rules are used before the background refresh (`acl_cacheseconds`).
    pub refresh: Duration,
    /// The `%d` of `aclquery` for a SUBSCRIBE: 1 (the read rows) or 4 (go-auth's meaning).
    pub subscribe_level: u8,
}

/// Everything a decision needs to know about one client.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub superuser: bool,
    /// `None` while the client's rules were never loaded: everything but superuser and
    /// unsubscribe is refused.
    pub groups: Option<&'a GroupIds>,
    pub patterns: &'a PatternSet,
}

/// The decision for one check. `chat` is `None` when the chat rules are disabled; `class`
/// is `topic`'s classification (`chat::topics::classify`), made once by the caller (a
/// subscription's filter is matched against the templates instead).
pub fn allowed(
    chat: Option<&ChatTopics>,
    subject: Subject<'_>,
    access: Access,
    topic: &str,
    class: Option<ChatTopic<'_>>,
    retain: bool,
) -> bool {
    if access == Access::Unsubscribe || subject.superuser {
        return true;
    }
    let Some(groups) = subject.groups else {
        return false;
    };
    if access == Access::Subscribe {
        let Some(filter) = topic::strip_shared(topic).filter(|f| topic::is_valid_filter(f)) else {
            return false;
        };
        if let Some(chat) = chat {
            match chat_subscribe(chat, subject.user_id, groups, filter) {
                ChatVerdict::Allow => return true,
                ChatVerdict::Deny => return false,
                ChatVerdict::NotChat => {}
            }
        }
        return subject
            .patterns
            .granting(Access::Subscribe)
            .any(|pattern| topic::covered_by(filter, pattern));
    }
    match class {
        Some(ChatTopic {
            kind: Kind::Chat,
            id: inbox_owner,
        }) => {
            // Anyone logged in may write to any inbox; only its owner reads it. A retained
            // chat message would replay to every new subscriber forever.
            return match access {
                Access::Write => !retain,
                _ => inbox_owner == subject.user_id,
            };
        }
        Some(ChatTopic {
            kind: Kind::GroupChat,
            id: group,
        }) => return groups.contains(group) && !(access == Access::Write && retain),
        None => {}
    }
    subject
        .patterns
        .granting(access)
        .any(|pattern| topic::matches(pattern, topic))
}

enum ChatVerdict {
    Allow,
    Deny,
    /// The filter cannot match a chat topic, or only allowed ones among others: the other
    /// rules decide.
    NotChat,
}

/// A filter that could match a chat topic the client may not read is refused; one that is
/// exactly an allowed chat topic is allowed; anything else goes on to the patterns.
fn chat_subscribe(
    chat: &ChatTopics,
    user_id: &str,
    groups: &GroupIds,
    filter: &str,
) -> ChatVerdict {
    let inbox = chat.inbox.meet(filter);
    let group = chat.group.meet(filter);
    let inbox_ok = match inbox {
        TemplateMatch::Disjoint => None,
        TemplateMatch::Id(id) => Some(id == user_id),
        TemplateMatch::AnyId => Some(false),
    };
    let group_ok = match group {
        TemplateMatch::Disjoint => None,
        TemplateMatch::Id(id) => Some(groups.contains(id)),
        TemplateMatch::AnyId => Some(false),
    };
    match (inbox_ok, group_ok) {
        (Some(false), _) | (_, Some(false)) => ChatVerdict::Deny,
        (None, None) => ChatVerdict::NotChat,
        // Exactly one's own inbox or a member group: allowed. With wildcards it may also
        // match non-chat topics, which need a pattern.
        _ if !filter.contains(['+', '#']) => ChatVerdict::Allow,
        _ => ChatVerdict::NotChat,
    }
}

/// Expands auth-plug's `%u` (username) and `%c` (client id) in an ACL pattern. `None` when
/// a substituted value holds `+` or `#`: it would turn into a wildcard and widen the
/// pattern, so the row grants nothing to that client.
pub fn expand(pattern: &str, username: &str, client_id: &str) -> Option<String> {
    let uses = |marker: &str, value: &str| pattern.contains(marker) && value.contains(['+', '#']);
    if uses("%u", username) || uses("%c", client_id) {
        return None;
    }
    Some(pattern.replace("%u", username).replace("%c", client_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_sets_hold_each_pattern_once_with_its_accesses() {
        let patterns = Patterns {
            read: vec!["a/#".into(), "b/+".into()],
            write: vec!["a/#".into()],
            subscribe: vec!["a/#".into(), "c".into()],
        };
        let set = PatternSet::from(&patterns);
        assert_eq!(set.0.len(), 3);
        let granting = |access| set.granting(access).collect::<Vec<_>>();
        assert_eq!(granting(Access::Read), ["a/#", "b/+"]);
        assert_eq!(granting(Access::Write), ["a/#"]);
        assert_eq!(granting(Access::Subscribe), ["a/#", "c"]);
        let mapped = set.map(|p| (p != "b/+").then(|| p.replace('a', "x")));
        assert_eq!(mapped.granting(Access::Read).collect::<Vec<_>>(), ["x/#"]);
        assert!(PatternSet::default().is_empty());
    }

    #[test]
    fn group_ids_are_a_sorted_set() {
        let groups: GroupIds = ["10", "7", "", "abc", "7", "1", "100"]
            .into_iter()
            .collect();
        assert_eq!(
            groups.iter().collect::<Vec<_>>(),
            ["", "1", "10", "100", "7", "abc"]
        );
        for id in ["", "1", "10", "100", "7", "abc"] {
            assert!(groups.contains(id), "{id}");
        }
        for id in ["0", "2", "1000", "ab", "abcd", "70"] {
            assert!(!groups.contains(id), "{id}");
        }
        assert!(GroupIds::default().is_empty());
        assert!(!GroupIds::default().contains(""));
    }

    fn chat() -> ChatTopics {
        ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap()
    }

    struct Case {
        groups: GroupIds,
        patterns: PatternSet,
    }

    impl Case {
        fn new(groups: &[&str], patterns: Patterns) -> Case {
            Case {
                groups: groups.iter().map(|g| g.to_string()).collect(),
                patterns: PatternSet::from(&patterns),
            }
        }

        fn subject(&self, user_id: &'static str) -> Subject<'_> {
            Subject {
                user_id,
                superuser: false,
                groups: Some(&self.groups),
                patterns: &self.patterns,
            }
        }
    }

    fn check(s: Subject<'_>, access: Access, topic: &str) -> bool {
        let chat = chat();
        allowed(Some(&chat), s, access, topic, chat.classify(topic), false)
    }

    /// A retained PUBLISH.
    fn check_retained(s: Subject<'_>, topic: &str) -> bool {
        let chat = chat();
        allowed(
            Some(&chat),
            s,
            Access::Write,
            topic,
            chat.classify(topic),
            true,
        )
    }

    #[test]
    fn inbox_rules() {
        let case = Case::new(&[], Patterns::default());
        let alice = case.subject("1");
        assert!(check(alice, Access::Subscribe, "/users/1/messages"));
        assert!(check(alice, Access::Read, "/users/1/messages"));
        assert!(!check(alice, Access::Subscribe, "/users/2/messages"));
        assert!(!check(alice, Access::Read, "/users/2/messages"));
        assert!(check(alice, Access::Write, "/users/2/messages"));
        assert!(check(alice, Access::Write, "/users/1/messages"));
        assert!(!check_retained(alice, "/users/2/messages"));
    }

    #[test]
    fn wildcards_and_shares_cannot_reach_other_inboxes() {
        let case = Case::new(&["10"], Patterns::default());
        let alice = case.subject("1");
        for filter in [
            "#",
            "/users/#",
            "/users/+/messages",
            "+/+/+/+",
            "/+/2/messages",
            "$share/g/users/2/messages",
            "$share/g//users/2/messages",
            "$share/g/#",
            "/groups/+/messages",
            "/groups/#",
            "$share/g",
            "a/#/b",
        ] {
            assert!(!check(alice, Access::Subscribe, filter), "{filter}");
        }
        assert!(check(
            alice,
            Access::Subscribe,
            "$share/g//users/1/messages"
        ));
        assert!(check(alice, Access::Subscribe, "/groups/10/messages"));
        assert!(check(alice, Access::Unsubscribe, "#"));
    }

    #[test]
    fn group_rules() {
        let case = Case::new(&["10"], Patterns::default());
        let member = case.subject("1");
        assert!(check(member, Access::Subscribe, "/groups/10/messages"));
        assert!(check(member, Access::Write, "/groups/10/messages"));
        assert!(check(member, Access::Read, "/groups/10/messages"));
        assert!(!check_retained(member, "/groups/10/messages"));
        for access in [Access::Subscribe, Access::Write, Access::Read] {
            assert!(!check(member, access, "/groups/11/messages"), "{access:?}");
        }
    }

    #[test]
    fn superuser_and_unloaded_rules() {
        let patterns = PatternSet::default();
        let root = Subject {
            user_id: "0",
            superuser: true,
            groups: None,
            patterns: &patterns,
        };
        assert!(check(root, Access::Subscribe, "#"));
        assert!(check(root, Access::Read, "/users/2/messages"));
        let unloaded = Subject {
            superuser: false,
            ..root
        };
        assert!(!check(unloaded, Access::Subscribe, "/users/0/messages"));
        assert!(!check(unloaded, Access::Write, "/users/2/messages"));
        assert!(check(unloaded, Access::Unsubscribe, "/users/0/messages"));
    }

    #[test]
    fn auth_plug_patterns() {
        let patterns = Patterns {
            read: vec!["sensors/#".into(), "clients/c1/in".into()],
            write: vec!["clients/c1/out".into()],
            subscribe: vec!["sensors/#".into(), "clients/c1/in".into()],
        };
        let case = Case::new(&[], patterns);
        let s = case.subject("1");
        assert!(check(s, Access::Read, "sensors/a/b"));
        assert!(check(s, Access::Subscribe, "sensors/+/temp"));
        assert!(check(s, Access::Subscribe, "sensors/#"));
        assert!(!check(s, Access::Subscribe, "#"));
        assert!(!check(s, Access::Subscribe, "+/a"));
        assert!(check(s, Access::Write, "clients/c1/out"));
        assert!(!check(s, Access::Write, "clients/c1/in"));
        assert!(!check(s, Access::Write, "sensors/a"));
        assert!(!check(s, Access::Read, "other"));
        // Chat topics are decided by the chat rules, not by a broad pattern.
        let broad = Case::new(
            &[],
            Patterns {
                read: vec!["#".into()],
                write: vec!["#".into()],
                subscribe: vec!["#".into()],
            },
        );
        let s = broad.subject("1");
        assert!(!check(s, Access::Subscribe, "/users/+/messages"));
        assert!(!check(s, Access::Read, "/users/2/messages"));
        assert!(
            check(s, Access::Subscribe, "/users/1/+"),
            "own inbox level, other topics by pattern"
        );
        assert!(check(s, Access::Read, "anything/else"));
    }

    #[test]
    fn everything_else_is_refused() {
        let case = Case::new(&[], Patterns::default());
        let s = case.subject("1");
        assert!(!check(s, Access::Write, "random/topic"));
        assert!(!check(s, Access::Read, "random/topic"));
        assert!(!check(s, Access::Subscribe, "random/#"));
        assert!(!check(s, Access::Write, "$CONTROL/chat-auth/v1"));
    }

    #[test]
    fn chat_rules_can_be_off() {
        let case = Case::new(&[], Patterns::default());
        let s = case.subject("1");
        assert!(!allowed(
            None,
            s,
            Access::Subscribe,
            "/users/1/messages",
            None,
            false
        ));
    }

    #[test]
    fn expansion_never_widens() {
        assert_eq!(
            expand("users/%u/#", "alice", "c"),
            Some("users/alice/#".into())
        );
        assert_eq!(
            expand("clients/%c", "alice", "a/b"),
            Some("clients/a/b".into())
        );
        assert_eq!(expand("users/%u/#", "#", "c"), None);
        assert_eq!(expand("users/%u", "a+b", "c"), None);
        assert_eq!(expand("clients/%c", "alice", "x/#"), None);
        // A wildcard value only matters where it is substituted.
        assert_eq!(expand("fixed/topic", "#", "+"), Some("fixed/topic".into()));
    }
}
