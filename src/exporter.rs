//! The Prometheus endpoint (`auth_opt_metrics_listen`): the same figures as the `$SYS`
//! topics, encoded by `prometheus-client` (OpenMetrics text: `_total` counters, units in the
//! names, `# HELP` / `# TYPE` lines) and served at `GET /metrics` by a thread of its own.
//! The broker thread only hands it new values (`Exporter::update`, atomics); a slow or
//! hostile scraper can never hold the broker.

use crate::metrics::{Counters, Gauges};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Labels = Vec<(&'static str, String)>;
type CounterF64 = Counter<f64, AtomicU64>;
type GaugeF64 = Gauge<f64, AtomicU64>;

/// The metric families, shared by the broker thread (values) and the server (encoding).
#[derive(Clone, Default)]
struct Families {
    logins: Family<Labels, Counter>,
    login_seconds: Family<Labels, CounterF64>,
    logins_cached: Gauge,
    acl_checks: Family<Labels, Counter>,
    chat_messages: Family<Labels, Counter>,
    rules_refreshes: Family<Labels, Counter>,
    sessions: Family<Labels, Gauge>,
    mysql_up: Gauge,
    rows: Family<Labels, Counter>,
    spool_bytes: Gauge,
    spool_messages: Gauge,
    backlog_age: GaugeF64,
    history_requests: Family<Labels, Counter>,
    history_seconds: CounterF64,
}

impl Families {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("chatauth");
        r.register(
            "logins",
            "Logins by outcome (accepted, throttled, refused) and reason",
            self.logins.clone(),
        );
        r.register_with_unit(
            "login",
            "Broker-thread time of logins the cache did not answer, by stored format and part",
            prometheus_client::registry::Unit::Seconds,
            self.login_seconds.clone(),
        );
        r.register(
            "logins_cached",
            "Logins the credential cache holds",
            self.logins_cached.clone(),
        );
        r.register(
            "acl_checks",
            "ACL checks by decision",
            self.acl_checks.clone(),
        );
        r.register(
            "chat_messages",
            "Chat messages by outcome (accepted, retransmission, refused) and reason",
            self.chat_messages.clone(),
        );
        r.register(
            "rules_refreshes",
            "Background reloads of users' rules, by result",
            self.rules_refreshes.clone(),
        );
        r.register(
            "sessions",
            "The plugin's sessions by state",
            self.sessions.clone(),
        );
        r.register("mysql_up", "1 while MySQL answers", self.mysql_up.clone());
        r.register(
            "storage_rows",
            "Chat messages stored in MySQL, or set aside as refused",
            self.rows.clone(),
        );
        r.register_with_unit(
            "spool",
            "Spooled bytes not yet in MySQL",
            prometheus_client::registry::Unit::Bytes,
            self.spool_bytes.clone(),
        );
        r.register(
            "spool_messages",
            "Spooled messages not yet in MySQL",
            self.spool_messages.clone(),
        );
        r.register_with_unit(
            "storage_backlog_age",
            "Age of the oldest message the writer has in hand (0: none)",
            prometheus_client::registry::Unit::Seconds,
            self.backlog_age.clone(),
        );
        r.register(
            "history_requests",
            "Chat history requests the history threads ran, by result (answered, failed)",
            self.history_requests.clone(),
        );
        r.register_with_unit(
            "history_query",
            "Time the history threads spent on requests",
            prometheus_client::registry::Unit::Seconds,
            self.history_seconds.clone(),
        );
        r
    }
}

/// The endpoint: its server thread, and the broker thread's side of the values.
pub struct Exporter {
    families: Families,
    /// The last value given for each counter, so the counter grows by the difference.
    last: HashMap<String, f64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub address: SocketAddr,
}

impl Exporter {
    /// Listens on `address` now: a port in use is an error for the caller to name.
    pub fn start(address: &str) -> Result<Exporter, String> {
        let listener = TcpListener::bind(address).map_err(|e| e.to_string())?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let families = Families::default();
        let registry = families.registry();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("chat-auth-metrics".into())
                .spawn(move || serve(&listener, &registry, &stop))
                .map_err(|e| format!("cannot start the metrics thread: {e}"))?
        };
        Ok(Exporter {
            families,
            last: HashMap::new(),
            stop,
            thread: Some(thread),
            address: bound,
        })
    }

    /// New values, from the broker thread (atomics only: the server never waits on it).
    pub fn update(&mut self, counters: &Counters, gauges: &Gauges) {
        let labels = |pairs: &[(&'static str, &str)]| -> Labels {
            pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
        };
        let mut grow = |key: String, counter: &Counter, value: u64| {
            let last = self.last.insert(key, value as f64).unwrap_or(0.0) as u64;
            counter.inc_by(value.saturating_sub(last));
        };
        let f = &self.families;
        grow(
            "logins accepted".into(),
            &f.logins.get_or_create(&labels(&[("outcome", "accepted")])),
            counters.logins_accepted,
        );
        grow(
            "logins throttled".into(),
            &f.logins.get_or_create(&labels(&[("outcome", "throttled")])),
            counters.logins_throttled,
        );
        for (reason, n) in &counters.logins_refused {
            grow(
                format!("logins refused {reason}"),
                &f.logins
                    .get_or_create(&labels(&[("outcome", "refused"), ("reason", reason)])),
                *n,
            );
        }
        grow(
            "acl allowed".into(),
            &f.acl_checks
                .get_or_create(&labels(&[("decision", "allowed")])),
            counters.acl_allowed,
        );
        grow(
            "acl denied".into(),
            &f.acl_checks
                .get_or_create(&labels(&[("decision", "denied")])),
            counters.acl_denied,
        );
        grow(
            "chat accepted".into(),
            &f.chat_messages
                .get_or_create(&labels(&[("outcome", "accepted")])),
            counters.chat_accepted,
        );
        grow(
            "chat retransmission".into(),
            &f.chat_messages
                .get_or_create(&labels(&[("outcome", "retransmission")])),
            counters.chat_retransmissions,
        );
        grow(
            "chat relayed".into(),
            &f.chat_messages
                .get_or_create(&labels(&[("outcome", "relayed")])),
            counters.chat_relayed,
        );
        for (reason, n) in &counters.chat_refused {
            grow(
                format!("chat refused {reason}"),
                &f.chat_messages
                    .get_or_create(&labels(&[("outcome", "refused"), ("reason", reason)])),
                *n,
            );
        }
        grow(
            "refreshes ok".into(),
            &f.rules_refreshes
                .get_or_create(&labels(&[("result", "ok")])),
            gauges.rules_refreshes,
        );
        grow(
            "refreshes failed".into(),
            &f.rules_refreshes
                .get_or_create(&labels(&[("result", "failed")])),
            gauges.rules_refresh_failures,
        );
        if let Some(storage) = &gauges.storage {
            grow(
                "rows stored".into(),
                &f.rows.get_or_create(&labels(&[("result", "stored")])),
                storage.rows_stored,
            );
            grow(
                "rows rejected".into(),
                &f.rows.get_or_create(&labels(&[("result", "rejected")])),
                storage.rows_rejected,
            );
            f.spool_bytes.set(storage.spool_bytes as i64);
            f.spool_messages.set(storage.spool_messages as i64);
            f.backlog_age.set(storage.backlog_age_ms as f64 / 1000.0);
        }
        if let Some(history) = &gauges.history {
            for (result, n) in [("answered", history.pages), ("failed", history.failed)] {
                grow(
                    format!("history {result}"),
                    &f.history_requests
                        .get_or_create(&labels(&[("result", result)])),
                    n,
                );
            }
            let seconds = history.query_us as f64 / 1e6;
            let last = self
                .last
                .insert("history seconds".into(), seconds)
                .unwrap_or(0.0);
            f.history_seconds.inc_by((seconds - last).max(0.0));
        }
        for (format, _, hash_us, db_us) in &gauges.login_times {
            for (part, micros) in [("hash", hash_us), ("database", db_us)] {
                let counter = f
                    .login_seconds
                    .get_or_create(&labels(&[("format", format), ("part", part)]));
                let seconds = *micros as f64 / 1e6;
                let key = format!("login {format} {part}");
                let last = self.last.insert(key, seconds).unwrap_or(0.0);
                counter.inc_by((seconds - last).max(0.0));
            }
        }
        f.logins_cached.set(gauges.logins_cached as i64);
        f.sessions
            .get_or_create(&labels(&[("state", "online")]))
            .set(gauges.sessions_online as i64);
        f.sessions
            .get_or_create(&labels(&[("state", "offline")]))
            .set(gauges.sessions_offline as i64);
        f.mysql_up.set(i64::from(gauges.mysql_up));
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers scrapes one at a time, each bounded by timeouts, until told to stop.
fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, registry);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// How long one scrape may take in all (a client trickling its request bytes is cut off):
/// it bounds how long other scrapers wait and how long the broker's shutdown waits.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(2);

/// The time left before `deadline`, as an I/O timeout; an error once it has passed.
fn time_left(deadline: Instant) -> std::io::Result<Option<Duration>> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(Some(left)),
        _ => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    stream.set_nonblocking(false)?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        stream.set_read_timeout(time_left(deadline)?)?;
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let request = String::from_utf8_lossy(&head);
    let (status, content_type, body) =
        if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
            let mut body = String::new();
            encode(&mut body, registry).map_err(|_| std::io::ErrorKind::Other)?;
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        } else {
            ("404 Not Found", "text/plain", "GET /metrics\n".to_string())
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.set_write_timeout(time_left(deadline)?)?;
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StorageGauges;

    fn scrape(address: SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn the_figures_are_served_as_openmetrics_and_counters_only_grow() {
        let mut exporter = Exporter::start("127.0.0.1:0").unwrap();
        let mut counters = Counters {
            logins_accepted: 5,
            ..Default::default()
        };
        counters.login_refused("wrong-password");
        let gauges = Gauges {
            mysql_up: true,
            login_times: vec![("bcrypt".into(), 2, 1_500_000, 200)],
            storage: Some(StorageGauges {
                rows_stored: 9,
                ..Default::default()
            }),
            ..Default::default()
        };
        exporter.update(&counters, &gauges);
        counters.logins_accepted = 7;
        exporter.update(&counters, &gauges);
        let text = scrape(exporter.address);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        for line in [
            "# TYPE chatauth_logins counter",
            "chatauth_logins_total{outcome=\"accepted\"} 7",
            "chatauth_logins_total{outcome=\"refused\",reason=\"wrong-password\"} 1",
            "# UNIT chatauth_login_seconds seconds",
            "chatauth_login_seconds_total{format=\"bcrypt\",part=\"hash\"} 1.5",
            "chatauth_storage_rows_total{result=\"stored\"} 9",
            "chatauth_mysql_up 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let mut stream = TcpStream::connect(exporter.address).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }

    /// A client sending its request a byte at a time, for 10 s unless cut off.
    fn trickle(address: SocketAddr) -> std::thread::JoinHandle<()> {
        let mut stream = TcpStream::connect(address).unwrap();
        std::thread::spawn(move || {
            for _ in 0..20 {
                if stream.write_all(b"G").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    }

    #[test]
    fn a_trickling_client_holds_neither_other_scrapes_nor_shutdown() {
        let exporter = Exporter::start("127.0.0.1:0").unwrap();
        let slow = trickle(exporter.address);
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let text = scrape(exporter.address);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        // The deadline is 2 s; the trickler alone would take 10 s.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let slow_again = trickle(exporter.address);
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        drop(exporter);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        slow.join().unwrap();
        slow_again.join().unwrap();
    }

    #[test]
    fn a_port_in_use_is_an_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        assert!(Exporter::start(&address).is_err());
    }

    /// The OpenMetrics text with the samples of each family in order (the encoder gives a
    /// family's series in no set order).
    fn sorted_text(exporter: &Exporter) -> String {
        let mut body = String::new();
        encode(&mut body, &exporter.families.registry()).unwrap();
        let mut out = String::new();
        let mut samples: Vec<&str> = Vec::new();
        for line in body.lines() {
            if line.starts_with('#') {
                samples.sort_unstable();
                for sample in samples.drain(..) {
                    out.push_str(sample);
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            } else {
                samples.push(line);
            }
        }
        assert!(samples.is_empty(), "the text ends with # EOF");
        out
    }

    /// What the endpoint serves for known snapshots (one given after the other, and one
    /// alone), as kept in `tests/figures/prometheus.txt`.
    #[test]
    fn golden_prometheus_text() {
        use crate::figures::golden;
        let mut text = String::new();
        let mut exporter = Exporter::start("127.0.0.1:0").unwrap();
        for (name, snapshot) in [("full", golden::full()), ("later", golden::later())] {
            exporter.update(&snapshot.counters, &Gauges::of(&snapshot));
            text.push_str(&format!("## after {name}\n{}", sorted_text(&exporter)));
        }
        let mut exporter = Exporter::start("127.0.0.1:0").unwrap();
        let bare = golden::bare();
        exporter.update(&bare.counters, &Gauges::of(&bare));
        text.push_str(&format!("## bare\n{}", sorted_text(&exporter)));
        golden::check("prometheus.txt", &text);
    }
}
