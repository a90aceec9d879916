//! The plugin's work on the broker thread for its hot operations, without a broker, for
//! `scripts/instructions` to count under callgrind (instructions are repeatable where time is
//! not). One thread, no MySQL, no background thread: the same input gives the same count.
//!
//!   hotpath SCENARIO ITERATIONS
//!
//! Scenarios: `inbox` (WRITE check, validation and stamping, the sender's chat rate, spool
//! append, READ check of one inbox message), `fanout` (the READ check of one group
//! delivery), `acl` (a known client's READ check of its own inbox), `warm-login` (a reconnect
//! answered by the credential cache, rules held), `first-login` (a `PASSWORD()` hash checked,
//! rules loaded), `history` (a chat history request read, checked and counted, and its
//! 50-message answer wrapped at TICK). Setup is the same for every count, so
//! `scripts/instructions` subtracts a run of 0 iterations.

use chat_auth::acl::{Access, Patterns, RuleSet};
use chat_auth::action::Reply;
use chat_auth::auth::{Authenticator, Decision, Identity};
use chat_auth::chat::Kind;
use chat_auth::chat::payload::{self, Sender};
use chat_auth::chat::topics::ChatTopics;
use chat_auth::envelope;
use chat_auth::hash::HashSettings;
use chat_auth::history::{self, StoredMessage};
use chat_auth::sessions::Connection;
use chat_auth::sessions::{LoginKind, NoFacts, OfflineCaps, Registry};
use chat_auth::store::NewRecord;
use chat_auth::store::spool::Spool;
use chat_auth::throttle::ThrottleConfig;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CLIENTS: usize = 2_000;

#[path = "../tests/support/fixed_users.rs"]
mod fixed_users;
use fixed_users::Users;

fn rules(n: usize) -> RuleSet {
    RuleSet {
        user_id: n.to_string(),
        // Five groups, like the benchmark's users: group g has members g, g+1, ...
        groups: (0..5).map(|g| ((n + g) % 600).to_string()).collect(),
        rows: Patterns {
            read: vec!["devices/%u/#".into()],
            write: vec!["devices/%u/#".into()],
            subscribe: vec!["devices/%u/#".into()],
        },
    }
}

fn loaded_registry() -> Registry {
    let chat = ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap();
    let mut registry = Registry::new(Some(chat), Duration::from_secs(600), OfflineCaps::default());
    let now = Instant::now();
    for n in 1..=CLIENTS {
        let identity = Identity {
            username: format!("u{n}"),
            user_id: n.to_string(),
            superuser: false,
            proof: None,
            backend: Default::default(),
            relay: false,
        };
        connect(&mut registry, n, &identity, now);
    }
    registry
}

/// Client `c{n}` (at address `n`) logs in as `identity`; the rules the login asks for
/// (user `n`'s) arrive as the background thread's would, and are applied.
fn connect(registry: &mut Registry, n: usize, identity: &Identity, now: Instant) -> usize {
    registry.login(
        Connection::new(format!("c{n}").as_bytes(), n),
        LoginKind::Connect {
            persistent: false,
            cached: false,
        },
        identity,
        now,
    );
    registry.apply_urgent(now, |job| {
        Ok(rules(
            job.username.trim_start_matches('u').parse().unwrap_or(0),
        ))
    })
}

/// Client ids and group topics made before counting: the counted work is the plugin's.
struct Names {
    client_ids: Vec<Vec<u8>>,
    group_topics: Vec<String>,
    inbox_topics: Vec<String>,
}

impl Names {
    fn new() -> Names {
        Names {
            client_ids: (0..=2 * CLIENTS)
                .map(|n| format!("c{n}").into_bytes())
                .collect(),
            group_topics: (0..600).map(|g| format!("/groups/{g}/messages")).collect(),
            inbox_topics: (0..=CLIENTS)
                .map(|n| format!("/users/{n}/messages"))
                .collect(),
        }
    }
}

fn check(registry: &mut Registry, names: &Names, n: usize, access: Access, topic: &str) -> bool {
    registry
        .check(
            Connection::new(&names.client_ids[n], n),
            access,
            black_box(topic),
            false,
            &NoFacts,
        )
        .expect("rules loaded at login")
}

const HISTORY_REQUEST: &[u8] = br#"{"commands":[{"command":"getHistory","type":"INBOX","after":"019abd1e-6f0a-7c3e-9b1d-2f4e5a6b7c8d","limit":50,"correlationData":"c-1"}]}"#;

/// A page of 50 stamped 100-byte messages, as the reader thread hands it over.
fn page_of_50() -> Box<serde_json::value::RawValue> {
    let rows: Vec<StoredMessage> = (0..50)
        .map(|n| {
            let id = format!("019abd1e-6f0a-7c3e-9b1d-2f4e5a6b7{n:03}");
            let payload = serde_json::json!({
                "type": "CHAT", "fromId": 42, "toId": 17, "content": "x".repeat(100),
                "id": id, "ts": 1_795_000_000_000_i64 + n
            });
            StoredMessage {
                message_id: id,
                kind: "CHAT".into(),
                from_id: "42".into(),
                to_id: "17".into(),
                content: "x".repeat(100),
                server_ts: 1_795_000_000_000 + n,
                payload: Some(payload.to_string()),
            }
        })
        .collect();
    serde_json::value::to_raw_value(&history::page(&rows, 50, 1 << 20)).unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "inbox".into());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let mut registry = loaded_registry();
    let names = Names::new();
    let auth = Authenticator::new(
        vec![Users],
        HashSettings::default(),
        None,
        Duration::from_secs(600),
        ThrottleConfig::default(),
    );
    let dir = std::env::temp_dir().join(format!("chat-auth-hotpath-{}", std::process::id()));
    let (mut spool, reader) = Spool::open(&dir, false, 64 << 20).unwrap();
    let mut checkpoint = reader.checkpoint();
    let now = Instant::now();
    let payload = serde_json::to_vec(&serde_json::json!({
        "type": "CHAT", "fromId": 17, "toId": 42, "content": "x".repeat(100)
    }))
    .unwrap();
    // The cache holds every user once, as after a first storm.
    if scenario == "warm-login" {
        for n in 1..=CLIENTS {
            let name = format!("u{n}");
            auth.login(Some(name.as_bytes()), Some(b"secret"), b"c", None, now);
        }
    }
    let reply_base = Reply::to("c17", history::RESPONSE_TOPIC);
    let mut limits = history::Limits::new(4, u32::MAX);
    let history_page = page_of_50();
    let mut rates = chat_auth::limits::Limits::new(Default::default(), false);
    let mut accepted = 0usize;
    let mut ids = chat_auth::message_id::MessageIds::seeded(1);
    for i in 0..iterations {
        let n = i % CLIENTS + 1;
        match scenario.as_str() {
            "inbox" => {
                accepted += usize::from(check(
                    &mut registry,
                    &names,
                    17,
                    Access::Write,
                    "/users/42/messages",
                ));
                registry.event();
                let stamped = payload::accept(
                    Kind::Chat,
                    "42",
                    black_box(&payload),
                    Sender::User("17"),
                    65_536,
                    1_795_000_000_000,
                    || ids.next(1_795_000_000_000),
                )
                .unwrap();
                // The sender's chat rate (the defaults), a message every 200 ms: let through.
                let now_ms = 1_795_000_000_000 + i as i64 * 200;
                rates.chat(Sender::User("17"), Kind::Chat, now_ms).unwrap();
                let record = NewRecord::from_stamped(&stamped, "/users/42/messages", 1, "c17");
                let (position, _) = spool.append(&record).unwrap();
                accepted += usize::from(check(
                    &mut registry,
                    &names,
                    42,
                    Access::Read,
                    "/users/42/messages",
                ));
                if i % 1000 == 999 {
                    // As the writer does, so the spool stays small.
                    let usage = &spool.usage;
                    let bytes = usage
                        .pending_bytes
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let records = usage
                        .pending_records
                        .load(std::sync::atomic::Ordering::Relaxed);
                    checkpoint.commit(position, records, bytes).unwrap();
                }
            }
            "fanout" => {
                let topic = &names.group_topics[n % 600];
                accepted += usize::from(check(&mut registry, &names, n, Access::Read, topic));
            }
            "acl" => {
                // A known client's READ check of its own inbox: the figure issue 26 bounds.
                accepted += usize::from(check(
                    &mut registry,
                    &names,
                    n,
                    Access::Read,
                    &names.inbox_topics[n],
                ));
            }
            "warm-login" | "first-login" => {
                // A first login is a user whose rules are not held yet.
                let n = if scenario == "first-login" {
                    n + CLIENTS
                } else {
                    n
                };
                let name = format!("u{n}");
                let decision = auth.login(Some(name.as_bytes()), Some(b"secret"), b"c", None, now);
                let Decision::Allow(identity) = decision else {
                    panic!("{name} refused");
                };
                accepted += connect(&mut registry, n, &identity, now);
            }
            "history" => {
                // What the broker thread does for one request: read it, check it against the
                // rules in memory, count it; and at TICK, wrap the page the reader made.
                let commands =
                    history::parse(black_box(HISTORY_REQUEST), &reply_base, 4096).unwrap();
                for (request, reply) in commands {
                    let who = registry
                        .chat_user(Connection::new(b"c17", 17))
                        .expect("rules loaded");
                    let plan = history::plan(request.unwrap(), &who).unwrap();
                    limits.admit(b"c17", now).unwrap();
                    accepted += black_box(plan).branches.len();
                    limits.done(b"c17");
                    accepted += envelope::response(&reply, Ok(Some(&*history_page))).len();
                }
            }
            other => panic!("unknown scenario {other}"),
        }
    }
    black_box(accepted);
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
}
