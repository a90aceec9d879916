//! The chat topics: which topic is an inbox and which a group, and whose. A topic is
//! classified once per ACL check and once per message, and the classification passed on.

use super::Kind;
use crate::topic::{Template, covered_by};

/// The chat topic templates (`auth_opt_chat_user_topic`, `auth_opt_chat_group_topic`).
#[derive(Debug, Clone)]
pub struct ChatTopics {
    pub inbox: Template,
    pub group: Template,
}

/// A chat topic, classified: an inbox (`Kind::Chat`, `id` its owner's user id) or a group
/// (`Kind::GroupChat`, `id` the group's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatTopic<'t> {
    pub kind: Kind,
    pub id: &'t str,
}

impl ChatTopics {
    pub fn new(inbox: &str, group: &str) -> Result<ChatTopics, String> {
        Ok(ChatTopics {
            inbox: Template::parse(inbox)?,
            group: Template::parse(group)?,
        })
    }

    /// What `topic` is: an inbox, a group, or (`None`) no chat topic.
    #[inline]
    pub fn classify<'t>(&self, topic: &'t str) -> Option<ChatTopic<'t>> {
        if let Some(id) = self.inbox.id_of(topic) {
            return Some(ChatTopic {
                kind: Kind::Chat,
                id,
            });
        }
        self.group.id_of(topic).map(|id| ChatTopic {
            kind: Kind::GroupChat,
            id,
        })
    }

    /// Whether `topic` is an inbox or a group topic.
    pub fn is_chat(&self, topic: &str) -> bool {
        self.classify(topic).is_some()
    }

    /// Whether every topic `filter` can match is a chat topic (a bridge's subscription
    /// such as `/users/+/messages`).
    pub fn covers(&self, filter: &str) -> bool {
        [&self.inbox, &self.group]
            .iter()
            .any(|template| covered_by(filter, &template.pattern()))
    }
}

/// The classification of `topic`, `None` also when the chat rules are off (`chat`).
#[inline]
pub fn classify<'t>(chat: Option<&ChatTopics>, topic: &'t str) -> Option<ChatTopic<'t>> {
    chat.and_then(|chat| chat.classify(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inboxes_come_first_then_groups() {
        let chat = ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap();
        assert_eq!(
            chat.classify("/users/42/messages"),
            Some(ChatTopic {
                kind: Kind::Chat,
                id: "42"
            })
        );
        assert_eq!(
            chat.classify("/groups/g-7/messages"),
            Some(ChatTopic {
                kind: Kind::GroupChat,
                id: "g-7"
            })
        );
        for other in ["/users/42", "/users//messages", "/groups/1/messages/x", "a"] {
            assert_eq!(chat.classify(other), None, "{other}");
            assert!(!chat.is_chat(other), "{other}");
        }
        // Templates that name the same topics: the inbox wins, as the ACL always decided.
        let both = ChatTopics::new("/chat/{id}", "/chat/{id}").unwrap();
        assert_eq!(both.classify("/chat/5").map(|c| c.kind), Some(Kind::Chat));
        assert_eq!(classify(None, "/users/42/messages"), None);
        assert_eq!(
            classify(Some(&chat), "/users/42/messages").map(|c| c.id),
            Some("42")
        );
    }
}
