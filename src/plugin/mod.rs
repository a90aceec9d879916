//! The plugin assembled from its parts: config, the MySQL pool, the authenticator. The FFI
//! edge owns one `Plugin` and forwards each broker event to it.

use crate::auth::{Authenticator, Identity};
use crate::backend::UserSource;
use crate::backend::http::HttpBackend;
use crate::backend::mysql::MysqlBackend;
use crate::backend::postgres::PgBackend;
use crate::chat::ValidationConfig;
use crate::chat::topics::ChatTopics;
use crate::cluster;
use crate::dedup::Dedup;
use crate::envelope::RequestLimits;
use crate::exporter::Exporter;
use crate::history::{Limits, reader::Reader};
use crate::refresh::Refresher;
use crate::resend::Resends;
use crate::sessions::{ClientFacts, Registry};
use crate::store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A client as the broker identifies it in a callback.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    /// `mosquitto_client_id`; `None` only for clients refused before they had one.
    pub id: Option<&'a [u8]>,
    /// The broker's `struct mosquitto *`, as an address: tells connections apart when a
    /// client id is taken over.
    pub pointer: usize,
    /// The rest, asked of the broker only when needed.
    pub facts: &'a dyn ClientFacts,
}

pub use crate::action::Action;
pub use crate::history::ResponseTo;

/// A backend as the authenticator asks it.
type Source = Arc<dyn UserSource + Send + Sync>;

mod acl;
mod admin;
mod figures;
mod later;
mod limits;
mod login;
mod message;
mod start;
mod tick;

pub struct Plugin {
    auth: Arc<Authenticator<Source>>,
    /// Mosquitto 2.1's delayed logins: the login threads (`None` on 2.0).
    later: Option<later::Later>,
    /// Holds the loop waker's signal back while the broker thread waits on the network (2.1).
    hush: Option<crate::action::Hush>,
    mysql: Option<MysqlBackend>,
    /// The PostgreSQL backend (users and rules; no storage).
    postgres: Option<PgBackend>,
    http: Option<Arc<HttpBackend>>,
    chat: Option<ChatTopics>,
    validation: Option<ValidationConfig>,
    /// The largest control and history requests read (`*_max_request_kb`).
    requests: RequestLimits,
    session_file: Option<PathBuf>,
    /// The longest a client's first check waits for the rules its login asked for
    /// (`rules_wait_ms`): a few milliseconds, the broker thread waits with it.
    rules_wait: Duration,
    /// How often the figures are published under `$SYS/broker/chat-auth/` (`None`: never).
    sys_interval: Option<Duration>,
    /// Touched only by broker callbacks (one thread), so the lock is never contended.
    state: Mutex<State>,
}

struct State {
    registry: Registry,
    refresher: Refresher,
    outbox: Vec<Action>,
    /// Chat message storage, when `persist_enabled`.
    store: Option<Store>,
    /// The stamps of `clientMsgId`s, for retransmissions (`chat_dedup_seconds`).
    dedup: Option<Dedup>,
    /// The stamps of QoS 2 chat messages, for their resends before PUBREL.
    resends: Resends,
    /// The ids chat messages are stamped with.
    message_ids: crate::message_id::MessageIds,
    last_stats_log: Instant,
    last_stats: (u64, u64),
    /// Set at a RELOAD: the broker is re-checking every client it holds (SIGHUP), one
    /// BASIC_AUTH after another, before anything else happens. Ends at the next TICK, ACL
    /// check, MESSAGE or control message (TICK does not fire on 2.0.11 with
    /// `per_listener_settings true`), and after `RECHECK_WINDOW` in any case.
    recheck_window: Option<Instant>,
    /// Logins verified during this reload for clients the plugin holds no session for (an
    /// offline session it forgot): each username and password is hashed once per reload.
    recheck_memo: HashMap<String, Identity>,
    /// Users whose row is read again after a re-check answered from memory, and when.
    user_checks: HashMap<String, Instant>,
    last_session_save: Instant,
    /// When TICK next does its whole work.
    next_full_tick: Instant,
    /// The number of the last sessions-file snapshot taken.
    save_seq: u64,
    /// When the plugin started, until the first TICK (`None` from then on): see
    /// `check_ticks`.
    untick_since: Option<Instant>,
    /// The figures published under `$SYS/broker/chat-auth/`.
    counters: crate::figures::Counters,
    next_sys_publish: Instant,
    /// The Prometheus endpoint (`metrics_listen`), given the figures every second.
    exporter: Option<Exporter>,
    next_export: Instant,
    /// Cluster commands run or sent lately (each runs once per broker).
    cluster_seen: cluster::Seen,
    /// Chat history requests (`history_enabled`, with storage).
    history: Option<History>,
    /// Set when a check's wait for its login's rules ran out: until a rules load comes
    /// back, checks do not wait at all (see `acl_check`).
    rules_late: Option<LateRules>,
    /// Logins the broker holds while a login thread checks them (2.1).
    waiting: crate::delayed::Waiting,
    /// Logins let in whose rules are loading (at most `rules_wait`).
    awaiting_rules: HashMap<Box<[u8]>, later::AwaitingRules>,
    /// Logins let in, until the broker's CONNECT for them (inside the completion).
    completing: HashMap<Box<[u8]>, later::Completing>,
    /// When a login refused because too many wait was last said at warning level.
    logins_full_said: Option<Instant>,
    /// When a login refused for want of an answer in time was last said at warning level.
    logins_overdue_said: Option<Instant>,
    /// The chat rate and connections per user (`crate::limits`).
    limits: crate::limits::Limits,
}

/// An episode of rules loads that do not come back in time.
struct LateRules {
    since: Instant,
    /// Checks answered from the rules held instead of the ones their login asked for.
    answered_from_memory: u64,
}

/// The history reader and the per-client limits in front of it.
struct History {
    reader: Reader,
    limits: Limits,
}

/// How long traffic may flow without a TICK before the plugin says the broker sends none.
const NO_TICK_WARNING: Duration = Duration::from_secs(10);

/// The broker event a handler enters (`Plugin::enter`): each does its own bookkeeping first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// MOSQ_EVT_BASIC_AUTH: a CONNECT's credentials, or a re-check after a SIGHUP.
    BasicAuth,
    /// MOSQ_EVT_CONNECT (Mosquitto 2.1): a client is in.
    Connect,
    /// MOSQ_EVT_ACL_CHECK.
    AclCheck,
    /// MOSQ_EVT_MESSAGE: a PUBLISH after its WRITE check.
    Message,
    /// MOSQ_EVT_CONTROL on `$CONTROL/chat-auth/v1`.
    Control,
    /// MOSQ_EVT_CONTROL on `$CONTROL/chat-history/v1`.
    History,
    /// MOSQ_EVT_TICK.
    Tick,
    /// MOSQ_EVT_DISCONNECT.
    Disconnect,
    /// MOSQ_EVT_RELOAD (SIGHUP).
    Reload,
    /// After a TICK's delayed-login completions (2.1).
    CompletionsDone,
}

/// What to do with a PUBLISH (MOSQ_EVT_MESSAGE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Not a chat topic (or validation off): untouched.
    Pass,
    /// Accepted; deliver this payload (stamped) instead.
    Replace(Vec<u8>),
    /// Refused: not delivered, not stored.
    Deny,
    /// Refused for a limit (the spool is full): not delivered, not stored; Mosquitto 2.1
    /// tells an MQTT 5 sender "quota exceeded" (0x97), 2.0 "not authorized".
    OverQuota,
}

impl Plugin {
    /// `work`, with the loop waker's signal held back where that is needed (see `hush`).
    fn hushed<T>(&self, work: impl FnOnce() -> T) -> T {
        let Some(hush) = &self.hush else {
            return work();
        };
        let (mut work, mut out) = (Some(work), None);
        hush(&mut || out = work.take().map(|work| work()));
        out.expect("hush runs the work")
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere never leaves the registry half-updated in a way that could
        // allow more than before, so the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, taken at the start of a broker event, with the bookkeeping that event
    /// does first. Every handler enters through here once; one that lets go of the lock
    /// meanwhile (to wait on a backend) takes it back with `state()`.
    ///
    /// | event            | no-TICK watch      | re-check window | `registry.event()` |
    /// |------------------|--------------------|-----------------|--------------------|
    /// | BASIC_AUTH       |                    | left open       | yes                |
    /// | CONNECT (2.1)    |                    | left open       | yes                |
    /// | ACL check        | looked at          | ended           |                    |
    /// | MESSAGE          |                    | ended           | yes                |
    /// | control, history |                    | ended           | yes                |
    /// | TICK             | stopped (it comes) | ended           |                    |
    /// | DISCONNECT       |                    | left open       |                    |
    /// | RELOAD           |                    | opened          |                    |
    /// | completions done |                    | left open       |                    |
    ///
    /// Why:
    /// - The re-check window (`recheck_window`): a SIGHUP's RELOAD opens it, and the broker
    ///   then re-checks every client it holds, one BASIC_AUTH after another; a client that
    ///   fails its re-check is disconnected, so neither BASIC_AUTH nor DISCONNECT may end it.
    ///   Anything else the broker does means the re-checks are over (`end_recheck`); TICK
    ///   ends it too, but does not fire on 2.0.11 with `per_listener_settings true`, so the
    ///   ACL checks, messages and control messages end it as well. CONNECT (2.1) and the
    ///   completions of delayed logins (inside a TICK) leave it as they find it.
    /// - `registry.event()` ends what was kept for the ACL check or MESSAGE right after: a
    ///   WRITE check's mark, for its MESSAGE; a client that just left (its DISCONNECT keeps
    ///   it), for its will's check. So an ACL check never calls it; MESSAGE, after its WRITE
    ///   check, calls it before judging the PUBLISH. DISCONNECT, TICK, RELOAD and the
    ///   completions never did.
    /// - The no-TICK watch (`check_ticks`): said once, from the ACL checks (the traffic), when
    ///   no TICK came since the start; the first TICK ends the watch.
    fn enter(&self, event: Entry) -> MutexGuard<'_, State> {
        let mut state = self.state();
        match event {
            Entry::BasicAuth | Entry::Connect => state.registry.event(),
            Entry::AclCheck => {
                Self::end_recheck(&mut state);
                Self::check_ticks(&mut state);
            }
            Entry::Message | Entry::Control | Entry::History => {
                Self::end_recheck(&mut state);
                state.registry.event();
            }
            Entry::Tick => {
                state.untick_since = None;
                Self::end_recheck(&mut state);
            }
            Entry::Reload => {
                state.recheck_window = Some(Instant::now());
                state.recheck_memo.clear();
            }
            Entry::Disconnect | Entry::CompletionsDone => {}
        }
        state
    }

    /// Mosquitto 2.0.11 with `per_listener_settings true` never sends TICK, and without it
    /// nothing the background threads bring back is applied (refreshed rules, control
    /// answers, re-read user rows). Said once, loudly, when traffic flows without a TICK.
    fn check_ticks(state: &mut State) {
        if let Some(since) = state.untick_since {
            if since.elapsed() > NO_TICK_WARNING {
                state.untick_since = None;
                log::error!(
                    "the broker sends no TICK event (Mosquitto 2.0.11 with \
                     per_listener_settings true does not): rules are not refreshed, control \
                     commands and chat history requests get no answer and SIGHUP re-checks \
                     are not confirmed; use \
                     per_listener_settings false, or Mosquitto 2.0.15 or later"
                );
            }
        }
    }

    /// Ends a reload's re-check window (the events that do: see `enter`).
    fn end_recheck(state: &mut State) {
        if state.recheck_window.take().is_some() {
            state.recheck_memo.clear();
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
