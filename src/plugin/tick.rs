//! TICK: background results applied on the broker thread (rules, user rows read again, the
//! sessions file, history pages, delayed logins), due work started, broker calls handed back.

use super::{Action, Entry, Plugin, State, figures};
use crate::control;
use crate::envelope;
use crate::logging::printable;
use crate::refresh::{Done, Work};
use crate::sessions::Applied;
use crate::sessions::Connection;
use serde_json::json;
use std::time::{Duration, Instant};

impl Plugin {
    /// The main loop's tick: applies background results (rules, user rows read again,
    /// the sessions file), starts due work, and hands back the broker calls to make.
    pub fn tick(&self) -> Vec<Action> {
        let now = Instant::now();
        let mut state = self.enter(Entry::Tick);
        // History answers at every tick (the reader woke the loop for them: one atomic load
        // when there are none).
        Self::hand_over_history(&mut state);
        self.hand_over_logins(&mut state, now);
        // Under load the broker ticks once per loop pass, about once per message: the
        // background work is looked at every TICK_PERIOD only (broker calls go out at once).
        if now < state.next_full_tick {
            return std::mem::take(&mut state.outbox);
        }
        state.next_full_tick = now + TICK_PERIOD;
        self.auth.tick(now);
        if let Some(interval) = self.sys_interval {
            if now >= state.next_sys_publish {
                state.next_sys_publish = now + interval;
                self.publish_sys(&mut state);
            }
        }
        if state.exporter.is_some() && now >= state.next_export {
            state.next_export = now + EXPORT_PERIOD;
            let snapshot = self.snapshot(&state, figures::Throttle::Skip);
            if let Some(exporter) = &mut state.exporter {
                exporter.update(&snapshot);
            }
        }
        if let Some(http) = &self.http {
            // Logins (and superusers) the service refused when asked again after a reload.
            let kicks = http.take_kicks();
            state.outbox.extend(kicks);
        }
        let ready: Vec<Done> = state.refresher.ready().collect();
        for done in ready {
            self.apply_done(&mut state, done, now);
        }
        let State {
            registry,
            refresher,
            outbox,
            store,
            last_stats_log,
            last_stats,
            user_checks,
            last_session_save,
            save_seq,
            ..
        } = &mut *state;
        for job in registry.due_jobs(now) {
            refresher.submit(Work::Rules(job));
        }
        if !user_checks.is_empty() {
            user_checks.retain(|username, at| {
                if *at > now {
                    return true;
                }
                refresher.submit(Work::CheckUser(username.clone()));
                false
            });
        }
        if let Some(path) = &self.session_file {
            if now.duration_since(*last_session_save) >= SESSION_SAVE_INTERVAL {
                *last_session_save = now;
                if let Some(sessions) = registry.persistent_sessions(false) {
                    *save_seq += 1;
                    refresher.submit(Work::SaveSessions {
                        path: path.clone(),
                        sessions,
                        seq: *save_seq,
                    });
                }
            }
        }
        if let Some(store) = store {
            if now.duration_since(*last_stats_log) >= STATS_LOG_INTERVAL {
                let storage = figures::storage(store);
                let figures = (storage.rows_written, storage.failed_attempts);
                if figures != *last_stats || storage.queued > 0 {
                    log::info!("chat storage: {}", control::storage_stats(&storage));
                }
                *last_stats = figures;
                *last_stats_log = now;
            }
        }
        std::mem::take(outbox)
    }

    /// Applies one background result on the broker thread.
    pub(super) fn apply_done(&self, state: &mut State, done: Done, now: Instant) {
        match done {
            Done::Rules(loaded) => {
                if loaded.result.is_ok() {
                    Self::rules_flow(state, now);
                }
                let reply = loaded.job.reply.clone();
                let applied = state.registry.apply(*loaded, now);
                if let Some(reply) = reply {
                    let outcome = match applied {
                        Applied::Refreshed { clients } => Ok(Some(json!({ "clients": clients }))),
                        Applied::Gone => Ok(Some(json!({ "clients": 0 }))),
                        Applied::Failed(e) => Err(e),
                    };
                    state.outbox.push(control::answer(&reply, outcome));
                }
            }
            Done::UserChecked { username, result } => {
                let ended = match result {
                    Ok(Some(row)) => state.registry.user_checked(
                        &username,
                        Some((
                            &|proof: &crate::auth::Proof| self.auth.still_valid(proof, &row.hash),
                            self.auth.superuser_now(&username, &row),
                        )),
                    ),
                    Ok(None) => state.registry.user_checked(&username, None),
                    Err(e) => {
                        // Verified at its login, so kept; read again once MySQL answers.
                        log::debug!(
                            "re-reading the row of user '{}' failed ({e}); retried",
                            printable(&username)
                        );
                        state.user_checks.insert(username, now + USER_CHECK_RETRY);
                        Vec::new()
                    }
                };
                state
                    .outbox
                    .extend(ended.into_iter().map(|id| Action::KickClient(id.into())));
            }
            Done::Saved { path, result } => match result {
                Ok(count) => log::debug!("{count} sessions saved to {}", path.display()),
                Err(e) => {
                    log::warn!("sessions file not saved: {e}; tried again");
                    state.registry.mark_dirty();
                }
            },
        }
    }

    /// The history pages the reader made since the last tick, to their clients.
    fn hand_over_history(state: &mut State) {
        let State {
            history: Some(history),
            outbox,
            registry,
            ..
        } = state
        else {
            return;
        };
        if !history.reader.has_answers() {
            return;
        }
        for answer in history.reader.ready() {
            history.limits.done(answer.reply.client_id.as_bytes());
            // The connection that asked, still there as the same user: a client id another
            // connection took over meanwhile (at the asker's freed address, even) does not
            // get the page.
            let asker = registry.chat_user(Connection::new(
                answer.reply.client_id.as_bytes(),
                answer.connection,
            ));
            if asker.is_none_or(|who| who.user_id != answer.user_id) {
                continue;
            }
            outbox.push(envelope::answer_with(
                &answer.reply,
                answer.outcome.map(Some),
            ));
        }
    }
}

/// How often TICK looks at background results, due refreshes and the sessions file.
const TICK_PERIOD: Duration = Duration::from_millis(10);

/// How often the Prometheus endpoint is given new figures.
const EXPORT_PERIOD: Duration = Duration::from_secs(1);

/// How often the sessions file is written when sessions changed (and at shutdown).
const SESSION_SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// How often the storage figures are logged (when they changed).
const STATS_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How soon a user row that could not be read again is tried once more.
const USER_CHECK_RETRY: Duration = Duration::from_secs(5);
