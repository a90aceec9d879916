//! Chat traffic: publishers sending chat JSON to inbox or group topics, subscribers
//! counting every copy (lost, duplicated) and its end-to-end latency.

use crate::client::{self, Conn};
use crate::wire;
use crate::{Bench, User};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// One publisher's stream of messages to one topic.
#[derive(Clone)]
pub struct Flow {
    pub sender: User,
    pub topic: String,
    pub kind: &'static str,
    pub to_id: u64,
    pub count: usize,
}

#[derive(Clone)]
pub struct Load {
    pub subscribers: Vec<(User, String)>,
    pub flows: Vec<Flow>,
    /// Copies each message should arrive in (1 for an inbox, the member count for a group).
    pub copies: u16,
    pub qos: u8,
    /// Messages per second per flow; `None` is as fast as the broker takes them.
    pub paced: Option<f64>,
    /// Unacknowledged QoS 1 PUBLISHes a publisher keeps in flight.
    pub window: usize,
    /// Where the publishers log in, when not where the subscribers are (a bridged pair).
    pub publish_port: Option<u16>,
}

#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Broker process CPU seconds (all its threads) over the run.
    pub broker_cpu: f64,
    /// CPU seconds of the broker's main thread (the event loop every callback runs on).
    pub broker_thread_cpu: f64,
    /// This process's CPU seconds (the load generator) over the run.
    pub generator_cpu: f64,
    pub db_cpu: f64,
    /// When the last copy arrived, in ns after the bench's epoch.
    pub last_delivery_ns: u64,
}

impl Figures {
    /// Sums another run of the same load into this one (latencies: the worse of the two).
    pub fn add(&mut self, other: &Figures) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.seconds += other.seconds;
        self.p50_ms = self.p50_ms.max(other.p50_ms);
        self.p99_ms = self.p99_ms.max(other.p99_ms);
        self.broker_cpu += other.broker_cpu;
        self.broker_thread_cpu += other.broker_thread_cpu;
        self.generator_cpu += other.generator_cpu;
        self.db_cpu += other.db_cpu;
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
    }

    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
}

const CONTENT_BYTES: usize = 100;

/// `{"type":..,"fromId":..,"toId":..,"content":"f<flow>s<seq>t<ns>xxx..."}`: 100 bytes of
/// content that carry the flow, the sequence number and the send time.
fn payload(out: &mut Vec<u8>, flow: &Flow, index: usize, seq: usize, sent_ns: u64) {
    use std::io::Write;
    let start = out.len();
    let _ = write!(
        out,
        "{{\"type\":\"{}\",\"fromId\":{},\"toId\":{},\"content\":\"f{index:06}s{seq:09}t{sent_ns:016}",
        flow.kind, flow.sender.id, flow.to_id
    );
    let content_start = out.iter().rposition(|&b| b == b'"').unwrap_or(start) + 1;
    let have = out.len() - content_start;
    out.resize(out.len() + CONTENT_BYTES - have, b'x');
    out.extend_from_slice(b"\"}");
}

/// `(flow, seq, sent_ns)` from a delivered payload (stamped or not).
fn marker(payload: &[u8]) -> Option<(usize, usize, u64)> {
    const KEY: &[u8] = b"\"content\":\"f";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let field = |from: usize, len: usize| -> Option<u64> {
        std::str::from_utf8(payload.get(from..from + len)?)
            .ok()?
            .parse()
            .ok()
    };
    let flow = field(at, 6)? as usize;
    let seq = field(at + 7, 9)? as usize;
    let sent = field(at + 17, 16)?;
    Some((flow, seq, sent))
}

struct Tally {
    counts: Vec<AtomicU16>,
    offsets: Vec<usize>,
    delivered: AtomicU64,
    last_delivery_ns: AtomicU64,
}

pub async fn run(bench: &Bench, port: u16, broker_pid: u32, load: &Load) -> Figures {
    let mut offsets = Vec::with_capacity(load.flows.len());
    let mut total = 0;
    for flow in &load.flows {
        offsets.push(total);
        total += flow.count;
    }
    let tally = Arc::new(Tally {
        counts: (0..total).map(|_| AtomicU16::new(0)).collect(),
        offsets,
        delivered: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
    });
    let epoch = bench.epoch;
    let mut latencies_tasks = Vec::new();
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    for (user, filter) in &load.subscribers {
        let mut conn = login(port, user, "sub").await;
        let granted = conn.subscribe(filter, load.qos).await.expect("SUBSCRIBE");
        assert!(granted < 3, "{} may not subscribe to {filter}", user.name);
        let tally = tally.clone();
        let mut stop = stop_receiver.clone();
        latencies_tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut acks = Vec::new();
            loop {
                let read = conn.reader.packets(|packet| {
                    if packet.kind != wire::PUBLISH {
                        return;
                    }
                    let Some((_, id, qos, body)) = packet.publish() else {
                        return;
                    };
                    if qos == 1 {
                        wire::puback(&mut acks, id);
                    }
                    let now = epoch.elapsed().as_nanos() as u64;
                    if let Some((flow, seq, sent)) = marker(body) {
                        latencies.push(((now.saturating_sub(sent)) / 1000) as u32);
                        if let Some(slot) = tally.offsets.get(flow).map(|o| o + seq) {
                            if let Some(count) = tally.counts.get(slot) {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                        tally.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                    }
                });
                tokio::select! {
                    result = read => if result.is_err() { break },
                    _ = stop.changed() => break,
                }
                if !acks.is_empty() {
                    if conn.writer.write_all(&acks).await.is_err() {
                        break;
                    }
                    acks.clear();
                }
            }
            latencies
        }));
    }
    let mut publishers = Vec::new();
    for flow in &load.flows {
        publishers.push(login(load.publish_port.unwrap_or(port), &flow.sender, "pub").await);
    }
    let thread_before = thread_cpu_seconds(broker_pid);
    let cpu_before = (
        cpu_seconds(broker_pid),
        cpu_seconds(std::process::id()),
        bench.db_cpu(),
    );
    let start_ns = epoch.elapsed().as_nanos() as u64;
    let mut tasks = Vec::new();
    for (index, (conn, flow)) in publishers.into_iter().zip(&load.flows).enumerate() {
        let flow = flow.clone();
        let (qos, paced, window) = (load.qos, load.paced, load.window);
        tasks.push(tokio::spawn(async move {
            publish(conn, &flow, index, qos, paced, window, epoch).await
        }));
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    let expected = total as u64 * load.copies as u64;
    // Wait for every copy, or for deliveries to stop for 3 s.
    let mut seen = 0;
    let mut still_since = Instant::now();
    loop {
        let now = tally.delivered.load(Ordering::Relaxed);
        if now >= expected {
            break;
        }
        if now != seen {
            seen = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_ns = tally.last_delivery_ns.load(Ordering::Relaxed).max(start_ns);
    let seconds = (last_ns - start_ns) as f64 / 1e9;
    let thread_after = thread_cpu_seconds(broker_pid);
    let cpu_after = (
        cpu_seconds(broker_pid),
        cpu_seconds(std::process::id()),
        bench.db_cpu(),
    );
    let _ = stop_sender.send(true);
    let mut latencies = Vec::new();
    for task in latencies_tasks {
        latencies.append(&mut task.await.expect("subscriber task"));
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let at = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[at] as f64 / 1000.0
    };
    let (mut lost, mut duplicated, mut delivered) = (0u64, 0u64, 0u64);
    for count in &tally.counts {
        let c = count.load(Ordering::Relaxed) as u64;
        delivered += c;
        lost += (load.copies as u64).saturating_sub(c);
        duplicated += c.saturating_sub(load.copies as u64);
    }
    let (p50_ms, p99_ms) = (percentile(0.50), percentile(0.99));
    Figures {
        sent: total as u64,
        delivered,
        lost,
        duplicated,
        seconds,
        p50_ms,
        p99_ms,
        broker_cpu: cpu_after.0 - cpu_before.0,
        broker_thread_cpu: thread_after - thread_before,
        generator_cpu: cpu_after.1 - cpu_before.1,
        db_cpu: cpu_after.2 - cpu_before.2,
        last_delivery_ns: last_ns,
    }
}

async fn login(port: u16, user: &User, role: &str) -> Conn {
    let client_id = format!("{role}-{}-{}", user.name, crate::next_client_number());
    match client::connect(port, &client_id, Some((&user.name, &user.password))).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(code)) => panic!("login of {} refused: CONNACK {code}", user.name),
        Err(e) => panic!("login of {} failed: {e}", user.name),
    }
}

async fn publish(
    mut conn: Conn,
    flow: &Flow,
    index: usize,
    qos: u8,
    paced: Option<f64>,
    window: usize,
    epoch: Instant,
) {
    const BURST: usize = 16;
    let mut out = Vec::with_capacity(BURST * 256);
    let mut body = Vec::with_capacity(256);
    let mut seq = 0;
    let mut in_flight = 0usize;
    let mut next_id: u16 = 0;
    let started = Instant::now();
    while seq < flow.count {
        let mut room = if qos == 0 { BURST } else { window - in_flight };
        if let Some(rate) = paced {
            let due = (started.elapsed().as_secs_f64() * rate) as usize + 1;
            let allowed = due.min(flow.count).saturating_sub(seq);
            if allowed == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            room = room.min(allowed);
        }
        out.clear();
        for _ in 0..room.min(flow.count - seq) {
            body.clear();
            payload(
                &mut body,
                flow,
                index,
                seq,
                epoch.elapsed().as_nanos() as u64,
            );
            next_id = next_id.wrapping_add(1).max(1);
            wire::publish(&mut out, &flow.topic, &body, qos, next_id);
            seq += 1;
            if qos == 1 {
                in_flight += 1;
            }
        }
        if !out.is_empty() {
            conn.writer.write_all(&out).await.expect("PUBLISH");
        }
        while qos == 1 && (in_flight >= window || (seq == flow.count && in_flight > 0)) {
            conn.reader
                .packets(|packet| {
                    if packet.kind == wire::PUBACK {
                        in_flight -= 1;
                    }
                })
                .await
                .expect("PUBACK");
        }
    }
    conn.disconnect().await;
}

/// User plus system CPU seconds of a process, all threads.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// User plus system CPU seconds of a process's main thread.
pub fn thread_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/task/{pid}/stat"))
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Checked when the bench binary runs as a test (`cargo test --all-targets`).
pub fn self_check() {
    {
        let flow = Flow {
            sender: User {
                id: 7,
                name: "u7".into(),
                password: "pw".into(),
            },
            topic: "/users/3/messages".into(),
            kind: "CHAT",
            to_id: 3,
            count: 1,
        };
        let mut body = Vec::new();
        payload(&mut body, &flow, 12, 345, 6789);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["content"].as_str().unwrap().len(), CONTENT_BYTES);
        body.truncate(body.len() - 1);
        body.extend_from_slice(b",\"id\":\"x\",\"ts\":1}");
        assert_eq!(marker(&body), Some((12, 345, 6789)));
    }
}
