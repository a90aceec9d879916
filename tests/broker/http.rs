//! The HTTP backend against a real HTTP service: auth-plug's protocol served by a small
//! standard-library HTTP/1.1 server started here (keep-alive, form or JSON bodies), behind
//! auth-plug's configuration verbatim; the service down and slow; `mysql,http` chains.

use crate::acl::{NOT_AUTHORIZED, PASSWORD, USERQUERY, chat_db};
use crate::harness::{Broker, MariaDb, Outcome, connect, eventually};
use crate::mqtt::{Mqtt, accepted};
use libtest_mimic::Trial;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "http::auth_plugs_http_config_verbatim",
            auth_plugs_http_config_verbatim,
        ),
        (
            "http::service_down_or_slow_is_bounded",
            service_down_or_slow_is_bounded,
        ),
        ("http::mysql_then_http_chain", mysql_then_http_chain),
        (
            "http::wills_and_sighup_ask_the_service",
            wills_and_sighup_ask_the_service,
        ),
        (
            "http::one_users_failures_refuse_nobody_else",
            one_users_failures_refuse_nobody_else,
        ),
        (
            "http::sighup_asks_the_service_in_the_background",
            sighup_asks_the_service_in_the_background,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(600);

/// How the service answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Normal,
    /// 503 to everything.
    Failing,
    /// Answers after this long.
    Slow(Duration),
}

/// One request as the service read it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    host: String,
    fields: HashMap<String, String>,
}

struct ServiceState {
    users: HashMap<String, String>,
    superusers: HashSet<String>,
    /// (username, topic, acc) allowed.
    acl: HashSet<(String, String, String)>,
    behaviour: Behaviour,
    /// Users every question about is answered 503 (in `Normal`).
    failing: HashSet<String>,
    /// How long each answer takes (in `Normal`).
    latency: Duration,
    seen: Vec<Seen>,
}

/// auth-plug's HTTP protocol: POST `/auth`, `/superuser`, `/acl` with form (or JSON) fields;
/// 200 allows, 403 refuses.
struct AuthService {
    port: u16,
    state: Arc<Mutex<ServiceState>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl AuthService {
    fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTP service");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ServiceState {
            users: HashMap::new(),
            superusers: HashSet::new(),
            acl: HashSet::new(),
            behaviour: Behaviour::Normal,
            failing: HashSet::new(),
            latency: Duration::ZERO,
            seen: Vec::new(),
        }));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, st) = (state.clone(), connections.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        AuthService {
            port,
            state,
            connections,
            stop,
        }
    }

    fn user(&self, name: &str, password: &str) -> &Self {
        let mut state = self.state.lock().unwrap();
        state.users.insert(name.into(), password.into());
        self
    }

    fn superuser(&self, name: &str) -> &Self {
        self.state.lock().unwrap().superusers.insert(name.into());
        self
    }

    fn allow(&self, user: &str, topic: &str, acc: u8) -> &Self {
        self.state
            .lock()
            .unwrap()
            .acl
            .insert((user.into(), topic.into(), acc.to_string()));
        self
    }

    fn behave(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
    }

    /// Every question about `user` is answered 503 from now on.
    fn fail_for(&self, user: &str) {
        self.state.lock().unwrap().failing.insert(user.into());
    }

    /// Each answer takes this long (questions are answered at once).
    fn answer_after(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn forget(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    /// auth-plug's configuration for this service, verbatim but for the port.
    fn auth_plug_options(&self) -> String {
        format!(
            "auth_opt_backends http\nauth_opt_http_ip 127.0.0.1\nauth_opt_http_port {}\n\
             auth_opt_http_getuser_uri /mosquitto/auth\n\
             auth_opt_http_superuser_uri /mosquitto/superuser\n\
             auth_opt_http_aclcheck_uri /mosquitto/acl\n",
            self.port
        )
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One kept-alive connection: requests until the client closes it.
fn serve(stream: TcpStream, state: &Mutex<ServiceState>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let json = headers
            .get("content-type")
            .is_some_and(|t| t.contains("json"));
        let fields = if json {
            let value: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
            value
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), text)
                })
                .collect()
        } else {
            form_fields(&body)
        };
        let status = {
            let mut s = state.lock().unwrap();
            s.seen.push(Seen {
                path: path.clone(),
                host: headers.get("host").cloned().unwrap_or_default(),
                fields: fields.clone(),
            });
            let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
            match s.behaviour {
                Behaviour::Failing => 503,
                Behaviour::Slow(delay) => {
                    drop(s);
                    std::thread::sleep(delay);
                    200
                }
                Behaviour::Normal if !s.latency.is_zero() => {
                    let latency = s.latency;
                    drop(s);
                    std::thread::sleep(latency);
                    s = state.lock().unwrap();
                    normal(&s, &path, &field)
                }
                Behaviour::Normal => normal(&s, &path, &field),
            }
        };
        let reason = if status == 200 { "OK" } else { "No" };
        if writer
            .write_all(
                format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            )
            .is_err()
        {
            return;
        }
    }
}

/// The answer of a service that works: 503 for a failing user, else 200 or 403 by its rules.
fn normal(s: &ServiceState, path: &str, field: &dyn Fn(&str) -> String) -> u16 {
    if s.failing.contains(&field("username")) {
        return 503;
    }
    let allowed = match path {
        "/mosquitto/auth" => s.users.get(&field("username")) == Some(&field("password")),
        "/mosquitto/superuser" => s.superusers.contains(&field("username")),
        "/mosquitto/acl" => s
            .acl
            .contains(&(field("username"), field("topic"), field("acc"))),
        _ => false,
    };
    if allowed { 200 } else { 403 }
}

/// `application/x-www-form-urlencoded`, decoded.
fn form_fields(body: &str) -> HashMap<String, String> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn count(seen: &[Seen], path: &str, acc: &str) -> usize {
    seen.iter()
        .filter(|s| s.path == path && s.fields.get("acc").map(String::as_str) == Some(acc))
        .count()
}

/// A chat system's auth-plug HTTP configuration, verbatim: logins, superusers and every
/// topic decided by the service, with auth-plug's fields and `acc` values, every value
/// escaped, answers cached, connections kept alive.
fn auth_plugs_http_config_verbatim() {
    let service = AuthService::start();
    service
        .user("alice", "pw&acc=4")
        .user("sensor", "x")
        .user("admin", "root pw")
        .superuser("admin")
        .allow("alice", "sensors/#", 4)
        .allow("alice", "sensors/temp", 1)
        .allow("sensor", "sensors/temp", 2);
    let broker = Broker::start(&service.auth_plug_options());
    let log = broker.log();
    assert!(
        log.contains("started: backends http (HTTP http://127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("chat topics off (they need the mysql or postgres backend"),
        "{log}"
    );

    // A client id that tries to add a field of its own is sent escaped, as it is.
    let hostile_id = "alice&acc=-1&username=admin";
    let mut alice = Mqtt::connect(broker.port, hostile_id, "alice", "pw&acc=4");
    let login = service
        .seen()
        .into_iter()
        .find(|s| s.path == "/mosquitto/auth")
        .expect("the login was asked of the service");
    assert_eq!(login.fields["username"], "alice");
    assert_eq!(login.fields["password"], "pw&acc=4");
    assert_eq!(login.fields["clientid"], hostile_id);
    assert_eq!(login.fields["acc"], "-1");
    assert_eq!(login.fields["topic"], "");
    assert!(login.host.starts_with("127.0.0.1"), "{login:?}");

    assert!(matches!(
        connect(broker.port, "alice", "wrong"),
        Outcome::Refused(_)
    ));
    assert!(matches!(
        connect(broker.port, "mallory", "pw&acc=4"),
        Outcome::Refused(_)
    ));

    assert_eq!(alice.subscribe("sensors/#"), 1);
    assert_eq!(alice.subscribe("secret/#"), NOT_AUTHORIZED);
    let mut sensor = Mqtt::connect(broker.port, "sensor-1", "sensor", "x");
    service.forget();
    for n in 0..30 {
        assert!(accepted(sensor.publish(
            "sensors/temp",
            format!("{n}"),
            false
        )));
    }
    let got = alice.drain(QUIET);
    assert_eq!(got.len(), 30, "{got:?}");
    let seen = service.seen();
    assert_eq!(
        count(&seen, "/mosquitto/acl", "2"),
        1,
        "one WRITE question for 30 PUBLISHes: {seen:?}"
    );
    assert_eq!(
        count(&seen, "/mosquitto/acl", "1"),
        1,
        "one READ question for 30 deliveries: {seen:?}"
    );
    let read = seen
        .iter()
        .find(|s| s.fields.get("acc").map(String::as_str) == Some("1"))
        .unwrap();
    assert_eq!(read.fields["clientid"], hostile_id);
    assert_eq!(read.fields["topic"], "sensors/temp");
    // A topic the service refuses, for the publisher.
    assert!(!accepted(sensor.publish("sensors/humidity", "1", false)));

    // Superusers are asked of the service; theirs is every topic, unasked.
    let mut admin = Mqtt::connect(broker.port, "admin-1", "admin", "root pw");
    service.forget();
    assert_eq!(admin.subscribe("#"), 1);
    assert!(accepted(admin.publish("anything/at/all", "x", false)));
    assert_eq!(count(&service.seen(), "/mosquitto/acl", "4"), 0);
    assert!(
        service.connections.load(Ordering::SeqCst) <= 3,
        "connections are kept alive: {}",
        service.connections.load(Ordering::SeqCst)
    );
    drop(alice);
}

/// The service failing (5xx) or hanging: logins are refused with a CONNACK within the
/// timeout, the broker keeps serving, and after a failure the user is left alone for a
/// pause; a service that cannot be reached for three users in a row is left alone for
/// everyone, instead of costing every login a timeout.
fn service_down_or_slow_is_bounded() {
    let service = AuthService::start();
    service.user("alice", "pw").allow("alice", "a/b", 4);
    for user in ["bob", "carol", "erin"] {
        service.user(user, "pw");
    }
    let broker = Broker::start(&format!(
        "{}auth_opt_http_timeout 1\n",
        service.auth_plug_options()
    ));
    service.behave(Behaviour::Failing);
    assert!(
        matches!(connect(broker.port, "alice", "pw"), Outcome::Refused(_)),
        "503 refuses with a CONNACK"
    );
    // Within the pause nothing is asked.
    let asked = service.seen().len();
    assert!(matches!(
        connect(broker.port, "alice", "pw"),
        Outcome::Refused(_)
    ));
    assert_eq!(service.seen().len(), asked, "asked during the pause");
    service.behave(Behaviour::Normal);
    eventually("the service is asked again after its pause", SOON, || {
        matches!(connect(broker.port, "alice", "pw"), Outcome::Accepted)
    });

    service.behave(Behaviour::Slow(Duration::from_secs(10)));
    let started = Instant::now();
    assert!(matches!(
        connect(broker.port, "alice", "pw2"),
        Outcome::Refused(_)
    ));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a hanging service costs one timeout: {took:?}"
    );
    let started = Instant::now();
    assert!(matches!(
        connect(broker.port, "alice", "pw3"),
        Outcome::Refused(_)
    ));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the next login during the pause is not held: {:?}",
        started.elapsed()
    );
    // That pause is alice's: the next users are still asked, each paying the timeout, until
    // the service could not be reached for three users in a row; then it is left alone for
    // everyone.
    for user in ["bob", "carol"] {
        let started = Instant::now();
        assert!(matches!(
            connect(broker.port, user, "pw"),
            Outcome::Refused(_)
        ));
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{user} was asked: {:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    assert!(matches!(
        connect(broker.port, "erin", "pw"),
        Outcome::Refused(_)
    ));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "unreachable for three users: left alone for everyone: {:?}",
        started.elapsed()
    );
    service.behave(Behaviour::Normal);
    eventually("the service is asked again after its pause", SOON, || {
        matches!(connect(broker.port, "erin", "pw"), Outcome::Accepted)
    });
    let log = broker.log();
    assert!(log.contains("HTTP auth service"), "{log}");
}

/// auth-plug's backend list: MySQL first, then the service. The first backend that knows
/// the user decides the login and answers its ACL checks; chat topics keep the chat rules
/// (the service's users have no chat identity); a backend that is down never lets the next
/// one answer for its users.
fn mysql_then_http_chain() {
    let db = MariaDb::start_new("http_chain");
    let dbname = chat_db(&db, "chain");
    db.root_exec(&format!(
        "INSERT INTO `{dbname}`.acls (username, topic, rw) VALUES ('alice', 'status/alice', 3)"
    ));
    let service = AuthService::start();
    service
        .user("carol", PASSWORD)
        .user("erin", "http pw")
        .user("alice", "http-only password")
        .allow("erin", "status/alice", 4)
        .allow("erin", "status/alice", 1)
        .allow("erin", "status/erin", 2)
        .allow("alice", "status/http", 4);
    let options = format!(
        "{}{USERQUERY}auth_opt_aclquery SELECT topic FROM acls WHERE username = ? AND rw >= ?\n\
         auth_opt_backends mysql,http\nauth_opt_http_ip 127.0.0.1\nauth_opt_http_port {}\n\
         auth_opt_http_getuser_uri /mosquitto/auth\nauth_opt_http_aclcheck_uri /mosquitto/acl\n\
         auth_opt_http_hostname chat.example\n\
         auth_opt_connect_timeout_ms 500\nauth_opt_query_timeout_ms 500\n",
        db.plugin_options(&dbname),
        service.port
    );
    let broker = Broker::start(&options);

    // alice is MySQL's: decided there, never asked of the service, not even her password
    // the service would take.
    let mut alice = Mqtt::connect(broker.port, "alice-1", "alice", PASSWORD);
    assert!(matches!(
        connect(broker.port, "alice", "http-only password"),
        Outcome::Refused(_)
    ));
    // carol is in MySQL too: MySQL decides.
    let _carol = Mqtt::connect(broker.port, "carol-1", "carol", PASSWORD);
    assert_eq!(alice.subscribe("status/alice"), 1, "her aclquery row");
    assert_eq!(
        alice.subscribe("status/http"),
        NOT_AUTHORIZED,
        "not the service's"
    );
    assert_eq!(alice.subscribe("/users/1/messages"), 1, "chat rules");
    assert!(
        service
            .seen()
            .iter()
            .all(|s| s.fields.get("username").map(String::as_str) != Some("alice")),
        "{:?}",
        service.seen()
    );

    // erin is the service's: it decides her topics; the chat topics are not hers.
    let mut erin = Mqtt::connect(broker.port, "erin-1", "erin", "http pw");
    let hosts: HashSet<String> = service.seen().into_iter().map(|s| s.host).collect();
    assert_eq!(
        hosts,
        HashSet::from(["chat.example".to_string()]),
        "http_hostname is the Host header"
    );
    assert_eq!(erin.subscribe("status/alice"), 1);
    assert_eq!(erin.subscribe("status/bob"), NOT_AUTHORIZED);
    assert_eq!(erin.subscribe("/users/1/messages"), NOT_AUTHORIZED);
    assert_eq!(erin.subscribe("/groups/10/messages"), NOT_AUTHORIZED);
    let forged = json!({"type": "CHAT", "fromId": 1, "toId": 1, "content": "hi"}).to_string();
    assert!(!accepted(erin.publish("/users/1/messages", forged, false)));
    assert!(accepted(erin.publish("status/erin", "online", false)));
    assert!(
        alice.message(QUIET).is_none(),
        "nothing forged reached alice"
    );
    assert!(accepted(alice.publish("status/alice", "here", false)));
    let got = erin
        .message_on("status/alice", SOON)
        .expect("delivered to erin");
    assert_eq!(got.payload, b"here");

    // MySQL down: the service does not answer for anyone meanwhile.
    db.pause();
    let refused = connect(broker.port, "erin", "http pw");
    db.resume();
    assert!(matches!(refused, Outcome::Refused(_)), "{refused:?}");
    eventually("MySQL answers again", Duration::from_secs(15), || {
        matches!(connect(broker.port, "erin", "http pw"), Outcome::Accepted)
    });
    drop(db);
}

/// A will of the service's user is a PUBLISH the service decides (`acc` 2), and a SIGHUP
/// re-checks the service's users with the service, in the background: a password it no
/// longer takes ends the connection.
fn wills_and_sighup_ask_the_service() {
    let service = AuthService::start();
    service
        .user("watcher", "w")
        .user("device", "d")
        .allow("watcher", "status/#", 4)
        .allow("watcher", "status/device", 1)
        .allow("watcher", "status/secret", 1)
        .allow("device", "status/device", 2)
        .allow("device", "nothing", 4);
    let broker = Broker::start(&service.auth_plug_options());
    let mut watcher = Mqtt::connect(broker.port, "watcher-1", "watcher", "w");
    assert_eq!(watcher.subscribe("status/#"), 1);
    /// Kills the client even when the test fails midway.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let will = |topic: &str| {
        service.forget();
        let child = std::process::Command::new("mosquitto_sub")
            .args(["-p", &broker.port.to_string(), "-h", "127.0.0.1"])
            .args(["-i", "device-1", "-u", "device", "-P", "d", "-t", "nothing"])
            .args(["--will-topic", topic, "--will-payload", "gone"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run mosquitto_sub");
        let child = Killed(child);
        eventually("the device logs in", SOON, || {
            service
                .seen()
                .iter()
                .any(|s| s.path == "/mosquitto/auth" && s.fields["clientid"] == "device-1")
        });
        // Its SUBSCRIBE follows the CONNACK (answered from the cache the second time).
        std::thread::sleep(Duration::from_millis(500));
        // Killed: the connection is lost and the broker sends the will.
        drop(child);
    };
    will("status/device");
    let got = watcher
        .message_on("status/device", SOON)
        .unwrap_or_else(|| panic!("the will: {:?}\n{}", service.seen(), broker.log()));
    assert_eq!(got.payload, b"gone");
    will("status/secret");
    assert!(
        watcher.message(QUIET).is_none(),
        "a will the service refuses is not sent"
    );
    assert!(
        service
            .seen()
            .iter()
            .any(|s| s.fields["clientid"] == "device-1"
                && s.fields["topic"] == "status/secret"
                && s.fields["acc"] == "2"),
        "{:?}",
        service.seen()
    );

    // The service stops taking watcher's password; SIGHUP asks it again (in the
    // background), and asks again the answers it had at their next use (the operator may
    // have changed the service's rules), serving them meanwhile.
    service.user("watcher", "changed");
    broker.signal(libc::SIGHUP);
    assert!(
        watcher.closed_within(SOON),
        "a re-check the service refuses ends the connection"
    );
    service.forget();
    let mut device = Mqtt::connect(broker.port, "device-1", "device", "d");
    assert_eq!(device.subscribe("nothing"), 1);
    eventually(
        "the answer kept is asked again after the reload",
        SOON,
        || count(&service.seen(), "/mosquitto/acl", "4") == 1,
    );
    std::thread::sleep(QUIET);
    assert_eq!(
        count(&service.seen(), "/mosquitto/acl", "4"),
        1,
        "once: {:?}",
        service.seen()
    );
}

/// One user whose questions the service answers 503 is left alone for a while; every other
/// user's logins and ACL checks are asked as usual meanwhile (before, one 5xx paused the
/// service for everybody, up to 30 s).
fn one_users_failures_refuse_nobody_else() {
    let service = AuthService::start();
    service
        .user("alice", "pw")
        .user("mallory", "pw")
        .user("eve", "pw")
        .allow("alice", "a/1", 4)
        .allow("alice", "a/2", 4)
        .allow("eve", "e/1", 4);
    let broker = Broker::start(&service.auth_plug_options());
    let mut eve = Mqtt::connect(broker.port, "eve-1", "eve", "pw");
    service.fail_for("mallory");
    service.fail_for("eve");
    // mallory's login fails (503): refused, and not asked again for a while.
    assert!(matches!(
        connect(broker.port, "mallory", "pw"),
        Outcome::Refused(_)
    ));
    // At once, alice is asked as usual: her login, then her ACL checks.
    let mut alice = Mqtt::connect(broker.port, "alice-1", "alice", "pw");
    assert_eq!(alice.subscribe("a/1"), 1);
    // eve's ACL question fails: refused; alice's next question is still asked.
    assert_eq!(eve.subscribe("e/1"), NOT_AUTHORIZED);
    assert_eq!(alice.subscribe("a/2"), 1);
    assert_eq!(
        alice.subscribe("a/3"),
        NOT_AUTHORIZED,
        "the service's answer"
    );
    let mallorys = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| s.fields.get("username").map(String::as_str) == Some("mallory"))
            .count()
    };
    assert_eq!(mallorys(&service.seen()), 1);
    assert!(matches!(
        connect(broker.port, "mallory", "pw"),
        Outcome::Refused(_)
    ));
    assert_eq!(
        mallorys(&service.seen()),
        1,
        "mallory is not asked about during her pause"
    );
    let log = broker.log();
    assert!(log.contains("not asked about user 'mallory'"), "{log}");
    assert!(!log.contains("for anyone"), "{log}");
}

/// A SIGHUP with many of the service's users connected, the service taking 100 ms an
/// answer: the broker's re-checks of them (a login and a superuser question each) and their
/// next ACL checks are answered from what the backend kept, and everything is asked again
/// on its background thread; a probe's round trips stay short (asked on the broker thread,
/// as before, the re-checks alone would hold it 40 x 200 ms = 8 s).
fn sighup_asks_the_service_in_the_background() {
    const USERS: usize = 40;
    let service = AuthService::start();
    service
        .user("probe", "pw")
        .allow("probe", "probe/t", 4)
        .allow("probe", "probe/t", 2)
        .allow("probe", "probe/t", 1);
    for n in 0..USERS {
        let user = format!("u{n}");
        service.user(&user, "pw").allow(&user, "t", 4);
    }
    let broker = Broker::start(&service.auth_plug_options());
    let mut clients: Vec<Mqtt> = (0..USERS)
        .map(|n| {
            let mut client = Mqtt::connect(broker.port, &format!("c{n}"), &format!("u{n}"), "pw");
            assert_eq!(client.subscribe("t"), 1);
            client
        })
        .collect();
    let mut probe = Mqtt::connect(broker.port, "probe-1", "probe", "pw");
    assert_eq!(probe.subscribe("probe/t"), 1);
    assert!(accepted(probe.publish("probe/t", "warm", false)));
    assert!(probe.message_on("probe/t", SOON).is_some());
    service.answer_after(Duration::from_millis(100));
    service.forget();
    let mut worst = Duration::ZERO;
    let sighup = Instant::now();
    broker.signal(libc::SIGHUP);
    let mut n = 0;
    while sighup.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        assert!(accepted(probe.publish("probe/t", format!("{n}"), false)));
        assert!(
            probe.message_on("probe/t", SOON).is_some(),
            "round trip {n}"
        );
        worst = worst.max(sent.elapsed());
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("SIGHUP with {USERS} HTTP clients: {n} probe round trips, worst {worst:?}");
    assert!(worst < Duration::from_secs(1), "worst round trip {worst:?}");
    // Everyone was re-checked, in the background, and stays.
    eventually("every login asked again", Duration::from_secs(15), || {
        service
            .seen()
            .iter()
            .filter(|s| s.path == "/mosquitto/auth")
            .count()
            > USERS
    });
    for client in &mut clients {
        assert_eq!(client.subscribe("t"), 1, "{} stays", client.client_id);
    }
}
