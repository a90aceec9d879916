//! The users' rules as held: loads asked for (at login, on the timer, by SIGHUP or
//! `refreshUser`), their results applied in ticket order, and the rows expanded per user or
//! per client.

use super::{Applied, HeldRules, Job, Loaded, RETRY_AFTER_FAILURE, Registry, UserEntry};
use crate::acl::{self, PatternSet, RuleSet};
use crate::action::Reply;
use crate::backend::BackendError;
use crate::logging::printable;
use crate::names::same_name;
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Instant;

impl Registry {
    /// The rules loads logins asked for, to start now (ahead of other work).
    pub fn urgent_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.urgent)
    }

    /// Applies the loads logins asked for with results from `load` rather than the
    /// background threads (benchmarks and tests without MySQL). Returns how many.
    pub fn apply_urgent(
        &mut self,
        now: Instant,
        mut load: impl FnMut(&Job) -> Result<RuleSet, BackendError>,
    ) -> usize {
        let jobs = self.urgent_jobs();
        let count = jobs.len();
        for job in jobs {
            let result = load(&job);
            self.apply(Loaded { job, result }, now);
        }
        count
    }

    /// A ticket for a load made outside the registry (a delayed login's rules, read on its
    /// login thread), taken before the load is asked for: see `apply_preloaded`.
    pub fn reserve_ticket(&mut self) -> u64 {
        self.take_ticket()
    }

    /// The rules a login thread read for a login now bound (`job`, its urgent load),
    /// asked for after the registry ticket `read` was taken. They count as that ticket's
    /// load: a load asked for later (a `refreshUser` between the read and the CONNECT) is
    /// newer, so rules it brought first are kept, and its result, coming later, still
    /// applies. The job itself is over (the client's checks do not wait for it).
    pub fn apply_preloaded(&mut self, job: Job, rules: RuleSet, read: u64, now: Instant) {
        let Some(entry) = self.users.get_mut(job.username.as_str()) else {
            return;
        };
        if *entry.rules.user_id != *job.user_id {
            return;
        }
        entry.settled = entry.settled.max(job.ticket);
        if read < entry.installed {
            return;
        }
        self.refreshes += 1;
        self.install(&job.username, rules, now, read);
    }

    fn take_ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    pub(super) fn job(
        &mut self,
        username: &str,
        user_id: &str,
        reply: Option<Reply>,
        urgent: bool,
    ) -> Job {
        Job {
            username: username.to_string(),
            user_id: user_id.to_string(),
            reply,
            ticket: self.take_ticket(),
            urgent,
        }
    }

    /// The tick: rules whose time has come get refresh jobs while the user has an online
    /// client; users without clients are forgotten; refreshes wanted by deliveries to offline
    /// sessions are added.
    pub fn due_jobs(&mut self, now: Instant) -> Vec<Job> {
        self.event();
        self.clock = now;
        let mut jobs = std::mem::take(&mut self.wanted);
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, username))) = self.due.pop() else {
                break;
            };
            let Some(entry) = self.users.get_mut(&username) else {
                continue;
            };
            if entry.next_due != at {
                continue; // superseded by a later load
            }
            if entry.clients == 0 {
                self.users.remove(&username);
                continue;
            }
            if entry.online > 0 && !entry.in_flight {
                entry.in_flight = true;
                let user_id = entry.rules.user_id.to_string();
                jobs.push(self.job(&username, &user_id, None, false));
            }
        }
        jobs
    }

    /// SIGHUP: reload the rules of every user with an online client; forget users without
    /// clients.
    pub fn refresh_all(&mut self) -> Vec<Job> {
        self.event();
        self.users.retain(|_, entry| entry.clients > 0);
        for entry in self.users.values_mut() {
            entry.loaded = None;
        }
        let due: Vec<(String, String)> = self
            .users
            .iter_mut()
            .filter(|(_, entry)| !entry.in_flight && entry.online > 0)
            .map(|(username, entry)| {
                entry.in_flight = true;
                (username.to_string(), entry.rules.user_id.to_string())
            })
            .collect();
        due.into_iter()
            .map(|(username, user_id)| self.job(&username, &user_id, None, false))
            .collect()
    }

    /// `refreshUser`: a job for each spelling of the name that has clients (`same_name`;
    /// the one spelled as asked first, with `reply`); none when no client is known.
    pub fn refresh_user(&mut self, username: &str, reply: Option<Reply>) -> Vec<Job> {
        self.event();
        let mut names: Vec<Arc<str>> = self
            .users
            .iter()
            .filter(|(name, entry)| entry.clients > 0 && same_name(name, username))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_by_key(|name| **name != *username);
        let mut reply = reply;
        names
            .into_iter()
            .filter_map(|name| {
                let entry = self.users.get_mut(&name)?;
                entry.in_flight = true;
                entry.loaded = None;
                let user_id = entry.rules.user_id.to_string();
                Some(self.job(&name, &user_id, reply.take(), false))
            })
            .collect()
    }

    /// `kickUser`: the rules held for the name (every spelling) are not kept by a cached
    /// login that follows; its reconnects load them again.
    pub fn forget_rules_time(&mut self, username: &str) {
        for (name, entry) in self.users.iter_mut() {
            if same_name(name, username) {
                entry.loaded = None;
            }
        }
    }

    /// Applies a refresher result. A failure keeps the last known rules.
    pub fn apply(&mut self, loaded: Loaded, now: Instant) -> Applied {
        let Loaded { job, result } = loaded;
        let Some(entry) = self.users.get_mut(job.username.as_str()) else {
            return Applied::Gone;
        };
        if *entry.rules.user_id != *job.user_id {
            // Loaded for the user's earlier identity: dropped, but the refresh it was is over.
            if !job.urgent {
                entry.in_flight = false;
            }
            return Applied::Gone;
        }
        if !job.urgent {
            entry.in_flight = false;
        }
        entry.settled = entry.settled.max(job.ticket);
        if job.ticket < entry.installed {
            // Finished after a newer load: its rules are older than those held.
            return Applied::Refreshed {
                clients: entry.clients as usize,
            };
        }
        match result {
            Ok(rules) => {
                self.refreshes += 1;
                self.install(&job.username, rules, now, job.ticket);
                let clients = self
                    .users
                    .get(job.username.as_str())
                    .map_or(0, |e| e.clients as usize);
                Applied::Refreshed { clients }
            }
            Err(e) => {
                self.refresh_failures += 1;
                entry.loaded = None;
                log::warn!(
                    "refreshing the rules of user '{}' failed ({e}); keeping the last known rules",
                    printable(&job.username)
                );
                let retry = now + self.refresh.min(RETRY_AFTER_FAILURE);
                entry.next_due = retry;
                let key = self
                    .users
                    .get_key_value(job.username.as_str())
                    .map(|(key, _)| key.clone())
                    .unwrap_or_else(|| Arc::from(job.username.as_str()));
                self.due.push(Reverse((retry, key)));
                Applied::Failed(e.to_string())
            }
        }
    }

    /// Holds `rules`, loaded by the job numbered `ticket`, for the user.
    pub(super) fn install(&mut self, username: &str, rules: RuleSet, now: Instant, ticket: u64) {
        let next_due = now + self.refresh;
        let (rules, per_client) = normalize(rules, username);
        let key = match self.users.get_key_value(username) {
            Some((key, _)) => key.clone(),
            None => Arc::from(username),
        };
        match self.users.get_mut(&key) {
            Some(entry) => {
                if entry.rules != rules {
                    entry.rules = rules;
                    entry.per_client = per_client;
                    entry.generation = take_generation(&mut self.next_generation);
                }
                entry.next_due = next_due;
                entry.loaded = (ticket != 0).then_some(now);
                entry.installed = entry.installed.max(ticket);
                entry.settled = entry.settled.max(ticket);
            }
            None => {
                self.users.insert(
                    key.clone(),
                    UserEntry {
                        rules,
                        per_client,
                        generation: take_generation(&mut self.next_generation),
                        clients: 0,
                        online: 0,
                        next_due,
                        in_flight: false,
                        installed: ticket,
                        settled: ticket,
                        loaded: (ticket != 0).then_some(now),
                    },
                );
            }
        }
        // Rules held until their load arrives (ticket 0: a first login's or a restored
        // session's identity) get their due time when that load's result is applied.
        if ticket != 0 {
            self.due.push(Reverse((next_due, key)));
        }
    }
}

/// The next rules generation; wraps after 4 billion changes, skipping 0 (a client's
/// "not yet expanded").
fn take_generation(next: &mut u32) -> u32 {
    let generation = *next;
    *next = next.wrapping_add(1).max(1);
    generation
}

/// Rules as a user entry holds them: without `%c`, the rows are expanded for the user now
/// (`%u` is the same for all their clients). `true` when clients must expand them.
fn normalize(rules: RuleSet, username: &str) -> (HeldRules, bool) {
    let rows = PatternSet::from(&rules.rows);
    let per_client = [&rules.rows.read, &rules.rows.write, &rules.rows.subscribe]
        .into_iter()
        .flatten()
        .any(|pattern| pattern.contains("%c"));
    let rows = if per_client {
        rows
    } else {
        expand_all(&rows, username, "")
    };
    let held = HeldRules {
        user_id: rules.user_id.into_boxed_str(),
        groups: rules.groups,
        rows,
    };
    (held, per_client)
}

/// One client's patterns: `%u`/`%c` substituted; a row that would widen is dropped.
pub(super) fn expand_all(rows: &PatternSet, username: &str, client_id: &str) -> PatternSet {
    rows.map(|pattern| acl::expand(pattern, username, client_id))
}
