//! Chat history over MQTT with 100,000 stored messages: pages per second and latency of
//! clients paging through their conversations and inboxes, the broker thread's CPU per
//! request beside the bare and null-plugin brokers receiving the same requests (which they
//! consume unanswered: Mosquitto's own price for a request), MariaDB's CPU per page, and the
//! query plans.

use crate::client;
use crate::traffic::{cpu_seconds, thread_cpu_seconds};
use crate::wire;
use crate::{Bench, user};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const TOPIC: &str = "$CONTROL/chat-history/v1";
const RESPONSE: &str = "$CONTROL/chat-history/v1/response";

/// Stored messages, and the users that read them (each with ten conversation partners).
pub const MESSAGES: u64 = 100_000;
pub const READERS: u64 = 20;

/// 100,000 stamped 100-byte messages: readers 1..=100 with partners 101..=110 both ways,
/// and every fifth message to a group (the users' groups as seeded: 1..200, 201..600).
pub fn seed(bench: &Bench) {
    let started = Instant::now();
    bench.db.root_exec(&format!(
        "USE `{db}`; \
         INSERT INTO messages (message_id, type, from_id, to_id, content, topic, qos, client_id, \
           server_ts, payload) \
         SELECT m.id, m.kind, m.from_id, m.to_id, REPEAT('x', 100), \
           IF(m.kind = 'CHAT', CONCAT('/users/', m.to_id, '/messages'), \
              CONCAT('/groups/', m.to_id, '/messages')), 1, CONCAT('c', m.from_id), m.ts, \
           CONCAT('{{\"type\":\"', m.kind, '\",\"fromId\":', m.from_id, ',\"toId\":', m.to_id, \
             ',\"content\":\"', REPEAT('x', 100), '\",\"id\":\"', m.id, '\",\"ts\":', m.ts, '}}') \
         FROM (SELECT CONCAT('hist-', LPAD(seq, 10, '0')) AS id, \
                 IF(seq % 5 = 0, 'GROUPCHAT', 'CHAT') AS kind, \
                 IF(seq % 5 = 0, 1 + seq % 100, IF(seq % 2 = 0, 1 + seq % 100, 101 + seq % 10)) \
                   AS from_id, \
                 IF(seq % 5 = 0, 1 + seq % 600, IF(seq % 2 = 0, 101 + seq % 10, 1 + seq % 100)) \
                   AS to_id, \
                 1795000000000 + seq AS ts \
               FROM seq_1_to_{MESSAGES}) AS m; \
         ANALYZE TABLE messages",
        db = bench.dbname
    ));
    println!(
        "history: seeded {MESSAGES} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The plans of a page of each kind, as the plugin sends them (`EXPLAIN`).
pub fn explain(bench: &Bench) -> Vec<String> {
    use chat_auth::acl::GroupIds;
    use chat_auth::history::{self, Cursor, Request, Requester, Thread};
    use mysql::prelude::Queryable;
    let groups: GroupIds = ["1", "201", "250", "333", "480"].into_iter().collect();
    let who = Requester {
        user_id: "7",
        groups: &groups,
    };
    let mut lines = Vec::new();
    let mut conn = bench.root();
    for (label, thread, position) in [
        ("CHAT before", Thread::Chat("107".into()), Some(60_000u64)),
        ("GROUPCHAT newest", Thread::Group("201".into()), None),
        ("INBOX after", Thread::Inbox, Some(50_000)),
    ] {
        let cursor = match position {
            Some(_) if label.contains("after") => Cursor::After("x".into()),
            Some(_) => Cursor::Before("x".into()),
            None => Cursor::Newest,
        };
        let request = Request {
            thread,
            cursor,
            limit: 50,
        };
        let plan = history::plan(request, &who).expect("allowed");
        let (sql, values) = history::page_sql(
            "messages",
            &plan,
            position,
            history::TableShape {
                payload: true,
                indexes: true,
            },
        );
        let rows: Vec<mysql::Row> = conn.exec(format!("EXPLAIN {sql}"), values).unwrap();
        for row in rows {
            let text = |name: &str| -> String {
                match row.get_opt::<Option<String>, _>(name) {
                    Some(Ok(Some(v))) => v,
                    _ => "NULL".into(),
                }
            };
            lines.push(format!(
                "EXPLAIN {label}: table {} type {} key {} rows {} extra {}",
                text("table"),
                text("type"),
                text("key"),
                text("rows"),
                text("Extra")
            ));
        }
    }
    lines
}

#[derive(Debug, Default, Clone)]
pub struct HistoryFigures {
    pub requests: usize,
    pub pages: usize,
    pub messages: usize,
    pub errors: usize,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub broker_thread_cpu: f64,
    pub broker_cpu: f64,
    pub db_cpu: f64,
}

impl HistoryFigures {
    pub fn per_request_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.requests.max(1) as f64
    }
}

/// `READERS` clients, each paging for `duration`: a conversation newest first following
/// `before`, then its inbox caught up with `after` from an older message, and again.
/// `answered`: the broker answers (chat-auth); otherwise each request is published at QoS 1
/// and only its PUBACK awaited (the bare and null-plugin brokers consume it).
pub async fn run(
    bench: &Bench,
    port: u16,
    pid: u32,
    answered: bool,
    duration: Duration,
) -> HistoryFigures {
    let (thread0, cpu0, db0) = (thread_cpu_seconds(pid), cpu_seconds(pid), bench.db_cpu());
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (1..=READERS)
        .map(|id| tokio::spawn(reader(port, id, answered, until)))
        .collect();
    let mut figures = HistoryFigures::default();
    let mut latencies = Vec::new();
    for task in tasks {
        let (f, l) = task.await.expect("history reader");
        figures.requests += f.requests;
        figures.pages += f.pages;
        figures.messages += f.messages;
        figures.errors += f.errors;
        latencies.extend(l);
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures.broker_thread_cpu = thread_cpu_seconds(pid) - thread0;
    figures.broker_cpu = cpu_seconds(pid) - cpu0;
    figures.db_cpu = bench.db_cpu() - db0;
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    figures.p50_ms = percentile(0.50);
    figures.p99_ms = percentile(0.99);
    figures
}

async fn reader(port: u16, id: u64, answered: bool, until: Instant) -> (HistoryFigures, Vec<f64>) {
    let u = user(id);
    let mut conn = client::connect(
        port,
        &format!("history-{id}-{}", crate::next_client_number()),
        Some((&u.name, &u.password)),
    )
    .await
    .expect("connect")
    .expect("login accepted");
    let mut figures = HistoryFigures::default();
    let mut latencies = Vec::new();
    let mut before: Option<String> = None;
    let mut after: Option<String> = None;
    let partner = 101 + id % 10;
    let mut packet_id: u16 = 0;
    while Instant::now() < until {
        let command = match (&before, &after) {
            (_, Some(after)) => {
                json!({"command": "getHistory", "type": "INBOX", "after": after, "limit": 50})
            }
            (Some(before), None) => {
                json!({"command": "getHistory", "type": "CHAT", "id": partner, "before": before, "limit": 50})
            }
            (None, None) => {
                json!({"command": "getHistory", "type": "CHAT", "id": partner, "limit": 50})
            }
        };
        let request = json!({ "commands": [command] }).to_string();
        let mut out = Vec::new();
        packet_id = packet_id.wrapping_add(1).max(1);
        let qos = if answered { 0 } else { 1 };
        wire::publish(&mut out, TOPIC, request.as_bytes(), qos, packet_id);
        let sent = Instant::now();
        conn.writer.write_all(&out).await.expect("send");
        figures.requests += 1;
        let mut answer: Option<Vec<u8>> = None;
        let mut acked = false;
        while answer.is_none() && !acked {
            conn.reader
                .packets(|p| {
                    if p.kind == wire::PUBLISH {
                        if let Some((topic, _, _, payload)) = p.publish() {
                            if topic == RESPONSE.as_bytes() {
                                answer = Some(payload.to_vec());
                            }
                        }
                    } else if p.kind == wire::PUBACK {
                        acked = true;
                    }
                })
                .await
                .expect("read");
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        let Some(answer) = answer else {
            continue;
        };
        let value: Value = serde_json::from_slice(&answer).expect("JSON answer");
        let item = &value["responses"][0];
        if item.get("error").is_some() {
            figures.errors += 1;
            before = None;
            after = None;
            continue;
        }
        let messages = item["data"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        figures.pages += 1;
        figures.messages += messages.len();
        let last = messages
            .last()
            .and_then(|m| m["id"].as_str())
            .map(str::to_string);
        let more = item["data"]["more"].as_bool().unwrap_or(false);
        match (&before, &after) {
            // Catching up: on to the next page, or back to the conversation.
            (_, Some(_)) => after = last.filter(|_| more),
            // Ten pages back, then catch up the inbox from an older message.
            _ if figures.pages % 10 == 0 => {
                after = Some(format!(
                    "hist-{:010}",
                    1 + (id * 7_919 + figures.pages as u64) % (crate::history::MESSAGES - 1_000)
                ));
                before = None;
            }
            _ => before = last.filter(|_| more),
        }
    }
    conn.disconnect().await;
    (figures, latencies)
}
