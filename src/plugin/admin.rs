//! Requests from clients: commands on `$CONTROL/chat-auth/v1` (superusers) and chat history
//! requests on `$CONTROL/chat-history/v1`.

use super::{Action, Client, Entry, Plugin, ResponseTo, State};
use crate::acl::Access;
use crate::control::{self, Command, Reply, Request};
use crate::history;
use crate::logging::printable;
use crate::refresh::Work;
use crate::sessions::Connection;
use std::time::Instant;

impl Plugin {
    /// A `refreshUser` reads the user's row again too (at the next TICK, in the background):
    /// a client whose password or superuser right the row no longer gives logs in again.
    pub(super) fn read_row_again(&self, state: &mut State, username: &str) {
        if self.mysql.is_some() || self.postgres.is_some() {
            state
                .user_checks
                .insert(username.to_string(), Instant::now());
        }
    }

    /// A message on `$CONTROL/chat-auth/v1`. Answers go out at the next TICK.
    pub fn control(&self, client: Client<'_>, payload: &[u8]) {
        let Some(client_id) = client.id else {
            return;
        };
        let client_name = String::from_utf8_lossy(client_id).into_owned();
        let mut state = self.enter(Entry::Control);
        let superuser = state
            .registry
            .is_superuser(Connection::new(client_id, client.pointer));
        if !superuser {
            log::warn!(
                "control command from client '{}' refused: not a superuser",
                printable(&client_name)
            );
        }
        let requests = if superuser {
            control::parse(payload, &client_name, self.requests.control)
        } else {
            Err("not authorised".into())
        };
        let requests = match requests {
            Ok(requests) => requests,
            Err(e) => {
                let reply = Reply::to(&client_name, control::RESPONSE_TOPIC);
                state.outbox.push(control::answer(&reply, Err(e)));
                return;
            }
        };
        let mut jobs = Vec::new();
        for Request { command, reply } in requests {
            if let Ok(Command::RefreshUser { username }) = &command {
                self.read_row_again(&mut state, username);
            }
            let figures = matches!(command, Ok(Command::GetStats)).then(|| self.stats(&state));
            let State {
                registry,
                outbox,
                cluster_seen,
                ..
            } = &mut *state;
            let mut context = control::Context {
                registry,
                jobs: &mut jobs,
                outbox,
                cluster: cluster_seen,
                stats: figures,
            };
            match command {
                Ok(command) => command.apply(&reply, &mut context),
                Err(e) => context.outbox.push(control::answer(&reply, Err(e))),
            }
        }
        for job in jobs {
            state.refresher.submit(Work::Rules(job));
        }
    }

    /// A message on `$CONTROL/chat-history/v1` (the ACL let only chat users write it):
    /// each request is checked here and queued for the reader; answers go out at TICK, to
    /// this client only.
    pub fn history(&self, client: Client<'_>, payload: &[u8], response_to: ResponseTo) {
        let Some(client_id) = client.id else {
            return;
        };
        let client_name = String::from_utf8_lossy(client_id).into_owned();
        let now = Instant::now();
        let mut state = self.enter(Entry::History);
        let mut base = Reply::to(&client_name, history::RESPONSE_TOPIC);
        base.correlation_data = response_to.correlation_data;
        let mut refused_topic = None;
        if let Some(topic) = response_to.topic.filter(|t| t != history::RESPONSE_TOPIC) {
            // The broker checks no ACL for an answer to one client: the plugin does, so an
            // answer never lands on a topic the client could not subscribe to.
            let readable = history::valid_response_topic(&topic)
                && !self.chat.as_ref().is_some_and(|c| c.is_chat(&topic))
                && state.registry.check(
                    Connection::new(client_id, client.pointer),
                    Access::Read,
                    &topic,
                    false,
                    client.facts,
                ) == Ok(true);
            if readable {
                base.topic = topic;
            } else {
                refused_topic = Some(topic);
            }
        }
        let State {
            registry,
            outbox,
            history,
            ..
        } = &mut *state;
        let refuse = |outbox: &mut Vec<Action>, reply: &Reply, why: String| {
            outbox.push(control::answer(reply, Err(why)));
        };
        let Some(history) = history else {
            return refuse(outbox, &base, "chat history is off on this broker".into());
        };
        if let Some(topic) = refused_topic {
            let why = format!(
                "response topic '{}' refused: answers go only to a topic this client may \
                 subscribe to, not a chat topic or another $ topic",
                printable(&topic)
            );
            return refuse(outbox, &base, why);
        }
        let requests = match history::parse(payload, &base, self.requests.history) {
            Ok(requests) => requests,
            Err(why) => return refuse(outbox, &base, why),
        };
        let requester = registry.chat_user(Connection::new(client_id, client.pointer));
        for (request, reply) in requests {
            let plan = request.and_then(|request| {
                let who = requester
                    .as_ref()
                    .ok_or_else(|| "no chat identity: only chat users read history".to_string())?;
                history::plan(request, who)
            });
            let user_id = requester.as_ref().map(|r| r.user_id.to_string());
            let admitted = plan.and_then(|plan| {
                history
                    .limits
                    .admit(client_name.as_bytes(), now)
                    .map(|()| plan)
            });
            match admitted {
                Ok(plan) => {
                    if let Err(reply) = history.reader.submit(history::reader::Job {
                        plan,
                        reply,
                        connection: client.pointer,
                        user_id: user_id.unwrap_or_default(),
                    }) {
                        history.limits.done(client_name.as_bytes());
                        let why = "busy: too many history requests waiting; ask again".into();
                        refuse(outbox, &reply, why);
                    }
                }
                Err(why) => refuse(outbox, &reply, why),
            }
        }
    }

    /// Whether chat history is on (it is what the loop waker is for).
    pub fn serves_history(&self) -> bool {
        self.state().history.is_some()
    }
}
