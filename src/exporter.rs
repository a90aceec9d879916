//! The Prometheus endpoint (`auth_opt_metrics_listen`): the figures of the table with a
//! Prometheus series, in its families ([`figures::FAMILIES`]), encoded by
//! `prometheus-client` (OpenMetrics text: `_total` counters, units in the names, `# HELP` /
//! `# TYPE` lines) and served at `GET /metrics` by a thread of its own. The broker thread
//! only hands it new values (`Exporter::update`, atomics); a slow or hostile scraper can
//! never hold the broker.

use crate::figures::{self, FIGURES, Family as Spec, FamilyUnit, Kind, Label, Snapshot, Unit};
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

/// One family's metric, shared by the broker thread (values) and the server (encoding):
/// labelled series, or the one series of a family without labels; a family in seconds holds
/// fractions.
#[derive(Clone)]
enum Metric {
    Counters(Family<Labels, Counter>),
    SecondsCounters(Family<Labels, CounterF64>),
    Gauges(Family<Labels, Gauge>),
    SecondsGauges(Family<Labels, GaugeF64>),
    Counter(Counter),
    SecondsCounter(CounterF64),
    Gauge(Gauge),
    SecondsGauge(GaugeF64),
}

/// A series of a [`Metric`].
enum Series {
    Counter(Counter),
    SecondsCounter(CounterF64),
    Gauge(Gauge),
    SecondsGauge(GaugeF64),
}

impl Metric {
    fn of(spec: &Spec) -> Metric {
        let seconds = spec.unit == Some(FamilyUnit::Seconds);
        match (spec.labelled(), spec.kind(), seconds) {
            (true, Kind::Counter, false) => Metric::Counters(Family::default()),
            (true, Kind::Counter, true) => Metric::SecondsCounters(Family::default()),
            (true, Kind::Gauge, false) => Metric::Gauges(Family::default()),
            (true, Kind::Gauge, true) => Metric::SecondsGauges(Family::default()),
            (false, Kind::Counter, false) => Metric::Counter(Counter::default()),
            (false, Kind::Counter, true) => Metric::SecondsCounter(CounterF64::default()),
            (false, Kind::Gauge, false) => Metric::Gauge(Gauge::default()),
            (false, Kind::Gauge, true) => Metric::SecondsGauge(GaugeF64::default()),
        }
    }

    fn register(&self, registry: &mut Registry, spec: &Spec) {
        let unit = spec.unit.map(|unit| match unit {
            FamilyUnit::Seconds => prometheus_client::registry::Unit::Seconds,
            FamilyUnit::Bytes => prometheus_client::registry::Unit::Bytes,
        });
        macro_rules! add {
            ($metric:expr) => {
                match unit {
                    Some(unit) => {
                        registry.register_with_unit(spec.name, spec.help, unit, $metric.clone())
                    }
                    None => registry.register(spec.name, spec.help, $metric.clone()),
                }
            };
        }
        match self {
            Metric::Counters(m) => add!(m),
            Metric::SecondsCounters(m) => add!(m),
            Metric::Gauges(m) => add!(m),
            Metric::SecondsGauges(m) => add!(m),
            Metric::Counter(m) => add!(m),
            Metric::SecondsCounter(m) => add!(m),
            Metric::Gauge(m) => add!(m),
            Metric::SecondsGauge(m) => add!(m),
        }
    }

    fn series(&self, labels: &Labels) -> Series {
        match self {
            Metric::Counters(f) => Series::Counter(f.get_or_create(labels).clone()),
            Metric::SecondsCounters(f) => Series::SecondsCounter(f.get_or_create(labels).clone()),
            Metric::Gauges(f) => Series::Gauge(f.get_or_create(labels).clone()),
            Metric::SecondsGauges(f) => Series::SecondsGauge(f.get_or_create(labels).clone()),
            Metric::Counter(m) => Series::Counter(m.clone()),
            Metric::SecondsCounter(m) => Series::SecondsCounter(m.clone()),
            Metric::Gauge(m) => Series::Gauge(m.clone()),
            Metric::SecondsGauge(m) => Series::SecondsGauge(m.clone()),
        }
    }
}

/// The metric of each of [`figures::FAMILIES`], in its order.
#[derive(Clone)]
struct Families(Vec<Metric>);

impl Default for Families {
    fn default() -> Families {
        Families(figures::FAMILIES.iter().map(Metric::of).collect())
    }
}

impl Families {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix(figures::PROMETHEUS_PREFIX);
        for (metric, spec) in self.0.iter().zip(figures::FAMILIES) {
            metric.register(&mut r, spec);
        }
        r
    }
}

/// A value in seconds, from a figure's unit.
fn seconds(value: u64, unit: Unit) -> f64 {
    match unit {
        Unit::Micros => value as f64 / 1e6,
        Unit::Millis => value as f64 / 1000.0,
        Unit::Count | Unit::Bytes => value as f64,
    }
}

/// The endpoint: its server thread, and the broker thread's side of the values.
pub struct Exporter {
    families: Families,
    /// Each figure's family, by its index in [`figures::FAMILIES`].
    family_of: Vec<Option<usize>>,
    /// The last value given for each counter (by family and labels), so the counter grows
    /// by the difference.
    last: HashMap<(usize, Labels), f64>,
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
        let family_of = FIGURES
            .iter()
            .map(|f| {
                let series = f.prometheus?;
                figures::FAMILIES
                    .iter()
                    .position(|family| family.name == series.family)
            })
            .collect();
        Ok(Exporter {
            families,
            family_of,
            last: HashMap::new(),
            stop,
            thread: Some(thread),
            address: bound,
        })
    }

    /// New values, from the broker thread (atomics only: the server never waits on it).
    pub fn update(&mut self, snapshot: &Snapshot) {
        for (figure, family) in FIGURES.iter().zip(&self.family_of) {
            let (Some(series), Some(family)) = (figure.prometheus, *family) else {
                continue;
            };
            let metric = &self.families.0[family];
            for (label, value) in figure.values(snapshot) {
                let labels: Labels = series
                    .labels
                    .iter()
                    .map(|(name, value)| match value {
                        Label::Is(value) => (*name, value.to_string()),
                        Label::Each => (*name, figures::topic_label(label)),
                    })
                    .collect();
                match metric.series(&labels) {
                    Series::Counter(counter) => {
                        let last = self
                            .last
                            .insert((family, labels), value as f64)
                            .unwrap_or(0.0) as u64;
                        counter.inc_by(value.saturating_sub(last));
                    }
                    Series::SecondsCounter(counter) => {
                        let seconds = seconds(value, figure.unit);
                        let last = self.last.insert((family, labels), seconds).unwrap_or(0.0);
                        counter.inc_by((seconds - last).max(0.0));
                    }
                    Series::Gauge(gauge) => {
                        gauge.set(value as i64);
                    }
                    Series::SecondsGauge(gauge) => {
                        gauge.set(seconds(value, figure.unit));
                    }
                }
            }
        }
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
    use crate::figures::{Counters, LoginTime, Storage};

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
        let mut snapshot = Snapshot {
            counters,
            login_times: vec![LoginTime {
                format: "bcrypt".into(),
                logins: 2,
                hash_us: 1_500_000,
                database_us: 200,
            }],
            storage: Some(Storage {
                rows_written: 9,
                ..Default::default()
            }),
            ..Default::default()
        };
        exporter.update(&snapshot);
        snapshot.counters.logins_accepted = 7;
        exporter.update(&snapshot);
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
            exporter.update(&snapshot);
            text.push_str(&format!("## after {name}\n{}", sorted_text(&exporter)));
        }
        let mut exporter = Exporter::start("127.0.0.1:0").unwrap();
        let bare = golden::bare();
        exporter.update(&bare);
        text.push_str(&format!("## bare\n{}", sorted_text(&exporter)));
        golden::check("prometheus.txt", &text);
    }
}
