//! The rules' options: the chat topics, `groupsquery` and `aclquery`, how long rules are
//! used, and go-auth's meanings for them.

use super::given::{Given, translate};
use super::{ConfigError, err};
use crate::acl::AclConfig;
use crate::chat::topics::ChatTopics;
use crate::query::{ACL_BINDINGS, GROUP_BINDINGS};
use std::time::Duration;

/// How the options are read: with go-auth's meanings (its names were given), and which
/// backends hold user rows.
pub(super) struct Meanings {
    pub go_auth: bool,
    /// go-auth's MySQL names: `aclquery`'s `%d` is 4 for a SUBSCRIBE.
    pub go_auth_mysql: bool,
    /// `backends` names mysql (its `groupsquery` and `aclquery` are read here).
    pub mysql: bool,
    /// `backends` names mysql or postgres: a backend of user rows, chat identities, groups.
    pub rows: bool,
}

pub(super) fn acl_config<'a>(
    given: &Given<'a>,
    warnings: &mut Vec<String>,
    meanings: Meanings,
) -> Result<AclConfig, ConfigError> {
    let Meanings {
        go_auth,
        go_auth_mysql,
        mysql,
        rows,
    } = meanings;
    if !rows {
        // The chat model needs user rows: user ids, groups.
        if given.flag_given("chat_enabled")? == Some(true) {
            return Err(err(
                "chat_enabled",
                "needs the mysql or postgres backend (chat identities and groups come from \
                 their tables): add one to auth_opt_backends (e.g. mysql,http)",
            ));
        }
        for key in [
            "chat_user_topic",
            "chat_group_topic",
            "groupsquery",
            "aclquery",
        ] {
            if given.get(key).is_some() {
                warnings.push(format!(
                    "auth_opt_{key} is not used: auth_opt_backends names neither mysql nor \
                     postgres"
                ));
            }
        }
        return Ok(AclConfig {
            chat: None,
            groupsquery: None,
            aclquery: None,
            refresh: acl_refresh(given, warnings)?,
            subscribe_level: 1,
        });
    }
    // A mosquitto-go-auth configuration knows no chat model (its tables have no groups):
    // unless it names a chat option, the chat rules are off, as they were under go-auth.
    let chat_named = [
        "chat_enabled",
        "chat_user_topic",
        "chat_group_topic",
        "groupsquery",
        "pg_groupsquery",
    ]
    .iter()
    .any(|key| given.get(key).is_some());
    if go_auth && !chat_named {
        // A warning, not a note: chat messages then pass unvalidated wherever aclquery rows
        // let a client write.
        warnings.push(
            "mosquitto-go-auth options (auth_opt_mysql_*, auth_opt_pg_*): the chat rules are off, chat \
             messages are neither validated nor stored (auth_opt_chat_enabled true, with a \
             groupsquery, turns them on); aclquery rows and superusers decide"
                .into(),
        );
    }
    let chat_enabled = given.flag_given("chat_enabled")?.unwrap_or(!go_auth);
    let chat = if chat_enabled {
        let user_topic = given.value("chat_user_topic").unwrap_or_default();
        let group_topic = given.value("chat_group_topic").unwrap_or_default();
        let topics = ChatTopics::new(user_topic, group_topic).map_err(|e| {
            let option = if crate::topic::Template::parse(user_topic).is_err() {
                "chat_user_topic"
            } else {
                "chat_group_topic"
            };
            err(option, e)
        })?;
        if topics.inbox.overlaps(&topics.group) {
            return Err(err(
                "chat_group_topic",
                format!(
                    "'{group_topic}' can name the same topics as auth_opt_chat_user_topic \
                     '{user_topic}'; an inbox and a group must be told apart by the topic"
                ),
            ));
        }
        Some(topics)
    } else {
        for key in ["chat_user_topic", "chat_group_topic", "groupsquery"] {
            if given.get(key).is_some() {
                warnings.push(format!(
                    "auth_opt_{key} is not used while auth_opt_chat_enabled is false"
                ));
            }
        }
        None
    };
    let groupsquery = chat
        .as_ref()
        .filter(|_| mysql)
        .map(|_| {
            translate(
                "groupsquery",
                given.value("groupsquery").unwrap_or_default(),
                GROUP_BINDINGS,
            )
        })
        .transpose()?;
    let aclquery = given
        .get("aclquery")
        .filter(|_| mysql)
        .map(|q| translate("aclquery", q, ACL_BINDINGS))
        .transpose()?;
    let refresh = acl_refresh(given, warnings)?;
    let subscribe_level = match given.choice("acl_subscribe_level")? {
        // go-auth asks aclquery with 4 for a SUBSCRIBE.
        None if go_auth_mysql => 4,
        Some("4") => 4,
        _ => 1,
    };
    Ok(AclConfig {
        chat,
        groupsquery,
        aclquery,
        refresh,
        subscribe_level,
    })
}

/// `acl_cacheseconds`: how long loaded rules (and the HTTP service's answers) are used.
pub(super) fn acl_refresh<'a>(
    given: &Given<'a>,
    warnings: &mut Vec<String>,
) -> Result<Duration, ConfigError> {
    let seconds = match given.whole::<u64>("acl_cacheseconds")? {
        0 => {
            warnings.push(
                "auth_opt_acl_cacheseconds 0: chat-auth never asks MySQL during an ACL check; \
                 rules (and HTTP answers) are used for a second instead"
                    .into(),
            );
            1
        }
        seconds => seconds,
    };
    Ok(Duration::from_secs(seconds))
}
