//! What chat-auth replaces: a separate client subscribed to every chat topic that inserts
//! each message it receives as one row (autocommit) before reading the next, as a paho
//! `on_message` callback does.

use crate::wire;
use mysql::prelude::Queryable;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Persister {
    stop: Arc<AtomicBool>,
    pub rows: Arc<AtomicU64>,
    thread: Option<JoinHandle<(Option<Instant>, Option<Instant>)>>,
}

pub struct PersisterFigures {
    pub rows: u64,
    /// From the first row to the last.
    pub seconds: f64,
}

impl Persister {
    /// Subscribes (QoS `qos`) before returning, so no message of the load is missed for
    /// lack of a subscription.
    pub fn start(port: u16, db: mysql::Opts, table: &str, qos: u8) -> Persister {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("persister connect");
        stream.set_nodelay(true).unwrap();
        let mut out = Vec::new();
        wire::connect(&mut out, "old-persister", None, true);
        wire::subscribe(&mut out, 1, "/users/+/messages", qos);
        wire::subscribe(&mut out, 2, "/groups/+/messages", qos);
        stream.write_all(&out).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let (mut start, mut end) = (0, 0);
        let mut subacks = 0;
        while subacks < 2 {
            let n = stream.read(&mut buf[end..]).expect("persister handshake");
            assert!(n > 0, "broker closed the persister");
            end += n;
            while let Ok(Some((packet, used))) = wire::parse(&buf[start..end]) {
                if packet.kind == wire::SUBACK {
                    subacks += 1;
                }
                start += used;
            }
        }
        let mut conn = mysql::Conn::new(db).expect("persister MySQL connection");
        let insert = format!(
            "INSERT INTO {table} (message_id, type, from_id, to_id, content, topic, qos, \
             client_id, server_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let rows = Arc::new(AtomicU64::new(0));
        let (stop_flag, row_count) = (stop.clone(), rows.clone());
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            let statement = conn.prep(&insert).expect("prepare the insert");
            let (mut first, mut last) = (None, None);
            let mut next_row = 0u64;
            loop {
                // Every whole packet in the buffer, one row (one commit) each.
                while let Ok(Some((packet, used))) = wire::parse(&buf[start..end]) {
                    if packet.kind == wire::PUBLISH {
                        let (topic, id, qos, body) = packet.publish().expect("PUBLISH");
                        let message: serde_json::Value =
                            serde_json::from_slice(body).unwrap_or_default();
                        next_row += 1;
                        let text =
                            |key: &str| message[key].to_string().trim_matches('"').to_string();
                        let result = conn.exec_drop(
                            &statement,
                            (
                                format!("old-{next_row}"),
                                message["type"].as_str().unwrap_or("CHAT"),
                                text("fromId"),
                                text("toId"),
                                message["content"].as_str().unwrap_or(""),
                                String::from_utf8_lossy(topic).to_string(),
                                qos,
                                "old-persister",
                                0i64,
                            ),
                        );
                        if result.is_ok() {
                            let now = Instant::now();
                            first.get_or_insert(now);
                            last = Some(now);
                            row_count.fetch_add(1, Ordering::Relaxed);
                        }
                        if qos == 1 {
                            let mut ack = Vec::with_capacity(4);
                            wire::puback(&mut ack, id);
                            let _ = stream.write_all(&ack);
                        }
                    }
                    start += used;
                }
                if stop_flag.load(Ordering::Relaxed) {
                    return (first, last);
                }
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                match stream.read(&mut buf[end..]) {
                    Ok(0) => return (first, last),
                    Ok(n) => end += n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return (first, last),
                }
            }
        });
        Persister {
            stop,
            rows,
            thread: Some(thread),
        }
    }

    /// Waits until no row has been written for `idle`, then stops.
    pub fn finish(mut self, idle: Duration) -> PersisterFigures {
        let mut seen = self.rows.load(Ordering::Relaxed);
        let mut still_since = Instant::now();
        while still_since.elapsed() < idle {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.rows.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                still_since = Instant::now();
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        let (first, last) = self.thread.take().unwrap().join().expect("persister");
        PersisterFigures {
            rows: self.rows.load(Ordering::Relaxed),
            seconds: match (first, last) {
                (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-3),
                _ => f64::NAN,
            },
        }
    }
}
