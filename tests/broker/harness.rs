//! Real parts for the broker tests: private MariaDB servers, a `mosquitto` running the
//! freshly built plugin, and MQTT clients. Every process is started on free ports with
//! its own data directory, and stopped by `Drop` (and by the kernel if the test run dies).

use mysql::prelude::Queryable;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DB_USER: &str = "chatauth";
pub const DB_PASS: &str = "chatauth-test-pw";

const RUN_DIR_PREFIX: &str = "broker-tests-";

/// A directory for this run's files, under `target/` (ignored by git). Directories left by
/// earlier runs whose process is gone (a failed or killed run keeps its files for a look)
/// are removed first, so repeated runs do not fill the disk.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(RUN_DIR_PREFIX));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = parent.join(format!("{RUN_DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test run directory");
        dir
    })
}

/// Removes this run's directory; call it after every server is stopped, when the run passed.
pub fn remove_run_dir() {
    let _ = std::fs::remove_dir_all(run_dir());
}

/// A fresh subdirectory of the run directory.
pub fn fresh_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = run_dir().join(format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn require(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return path;
        }
    }
    panic!("{program} is not installed: run scripts/setup (the README's test command does)");
}

/// Spawns `command` so the kernel kills it if the test process dies without cleaning up.
/// PR_SET_PDEATHSIG follows the spawning *thread*, not the process: a server shared by
/// several tests must be spawned from the main thread (see `start_shared`).
fn spawn(command: &mut Command) -> Child {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"))
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL.
fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, libc::SIGCONT);
    signal(child, libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Retries `ready` until it returns true; panics after `limit`.
pub fn eventually(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private MariaDB: own data directory, socket and port.
pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    /// Behind a lock so the shared server (a static) can be stopped at the end of the run.
    child: Mutex<Option<Child>>,
    /// Extra `mariadbd` arguments (TLS files, for instance).
    extra_args: Vec<String>,
}

impl MariaDb {
    /// A data directory made once per run by `mariadb-install-db`, copied for each server.
    fn template() -> &'static Path {
        static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
        TEMPLATE.get_or_init(|| {
            let data = run_dir().join("mariadb-template");
            let status = Command::new(require("mariadb-install-db"))
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                ])
                .arg(format!("--datadir={}", data.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run mariadb-install-db");
            assert!(status.success(), "mariadb-install-db failed");
            data
        })
    }

    /// Prepares a server's data directory on a free port without starting it.
    pub fn create(name: &str) -> MariaDb {
        let dir = fresh_dir(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(Self::template())
            .arg(dir.join("data"))
            .status()
            .expect("copy the MariaDB template");
        assert!(status.success());
        MariaDb {
            port: free_port(),
            dir,
            child: Mutex::new(None),
            extra_args: Vec::new(),
        }
    }

    /// Creates and starts a server, with the plugin's database user.
    pub fn start_new(name: &str) -> MariaDb {
        MariaDb::start_new_with(name, &[])
    }

    /// As `start_new`, with extra `mariadbd` arguments.
    pub fn start_new_with(name: &str, extra_args: &[String]) -> MariaDb {
        let mut db = MariaDb::create(name);
        db.extra_args = extra_args.to_vec();
        db.start();
        db.root_exec(&format!(
            "CREATE USER '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASS}'; \
             CREATE USER '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASS}'"
        ));
        db
    }

    pub fn start(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "already running");
        let d = &self.dir;
        let child = spawn(
            Command::new(require("mariadbd"))
                .arg("--no-defaults")
                .arg("--user=root")
                .arg(format!("--datadir={}", d.join("data").display()))
                .arg(format!("--port={}", self.port))
                .arg(format!("--socket={}", d.join("mysqld.sock").display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--log-error={}", d.join("error.log").display()))
                .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
                .arg("--innodb-buffer-pool-size=32M")
                .args(&self.extra_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        *slot = Some(child);
        drop(slot);
        let port = self.port;
        eventually("MariaDB", Duration::from_secs(30), || {
            root_conn(port).is_ok()
        });
    }

    /// The server's process id (for the CPU figures of `benches/load`, which shares this file).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// Clean shutdown (SIGTERM), as an operator's restart does.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            stop_child(&mut child, Duration::from_secs(30));
        }
    }

    /// Freezes the server: connections are accepted by the kernel but never answered.
    /// SIGSTOP, and waits until the server is stopped: the signal is sent at once, but a
    /// multi-threaded server stops a little later (a query sent meanwhile is still answered).
    pub fn pause(&self) {
        let pid = {
            let child = self.child.lock().unwrap();
            let child = child.as_ref().expect("running");
            signal(child, libc::SIGSTOP);
            child.id()
        };
        // Every thread's "pid (comm) state ...": the state follows the closing parenthesis.
        let stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                tasks.flatten().all(|task| {
                    std::fs::read_to_string(task.path().join("stat")).is_ok_and(|text| {
                        text.rsplit_once(')')
                            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                    })
                })
            })
        };
        let since = std::time::Instant::now();
        while !stopped() && since.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn resume(&self) {
        signal(
            self.child.lock().unwrap().as_ref().expect("running"),
            libc::SIGCONT,
        );
    }

    /// Runs one or more statements; an error in any of them fails the test (a plain
    /// `query_drop` would drop errors of the statements after the first).
    pub fn root_exec(&self, sql: &str) {
        let run = || -> mysql::Result<()> {
            let mut conn = root_conn(self.port)?;
            let mut result = conn.query_iter(sql)?;
            while let Some(set) = result.iter() {
                for row in set {
                    row?;
                }
            }
            Ok(())
        };
        run().unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// First column of every row, as text.
    pub fn root_column(&self, sql: &str) -> Vec<String> {
        root_conn(self.port)
            .and_then(|mut c| c.query::<Option<String>, _>(sql))
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    /// Every row of a statement with `params` bound, each as column name -> text.
    pub fn root_rows(
        &self,
        sql: &str,
        params: Vec<mysql::Value>,
    ) -> Vec<std::collections::HashMap<String, String>> {
        let rows: Vec<mysql::Row> = root_conn(self.port)
            .and_then(|mut c| c.exec(sql, params))
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
        rows.into_iter()
            .map(|row| {
                let columns = row.columns();
                (0..row.len())
                    .map(|i| {
                        let text = match row.as_ref(i) {
                            Some(mysql::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                            Some(mysql::Value::NULL) | None => String::new(),
                            Some(other) => other.as_sql(true),
                        };
                        (columns[i].name_str().into_owned(), text)
                    })
                    .collect()
            })
            .collect()
    }

    /// A new database with the bundled schema, readable by the plugin's user.
    pub fn database(&self, name: &str) -> String {
        let schema = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto-conf/schema.sql"),
        )
        .expect("read mosquitto-conf/schema.sql");
        self.root_exec(&format!(
            "CREATE DATABASE `{name}`; USE `{name}`; {schema} \
             GRANT SELECT ON `{name}`.* TO '{DB_USER}'@'%'; \
             GRANT SELECT ON `{name}`.* TO '{DB_USER}'@'localhost'"
        ));
        name.to_string()
    }

    /// The plugin options that reach `dbname` through this server's Unix socket.
    pub fn socket_options(&self, dbname: &str) -> String {
        format!(
            "auth_opt_socket {}\nauth_opt_dbname {dbname}\nauth_opt_user {DB_USER}\n\
             auth_opt_pass {DB_PASS}\n",
            self.dir.join("mysqld.sock").display()
        )
    }

    /// The plugin options that reach `dbname` on this server as the plugin's user. The chat
    /// rate is off (many tests send hundreds of messages as one user); the tests of the
    /// limits (`limits.rs`) turn it on again with a later line (later options win).
    pub fn plugin_options(&self, dbname: &str) -> String {
        format!(
            "auth_opt_host 127.0.0.1\nauth_opt_port {}\nauth_opt_dbname {dbname}\n\
             auth_opt_user {DB_USER}\nauth_opt_pass {DB_PASS}\nauth_opt_chat_rate 0\n",
            self.port
        )
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

fn root_conn(port: u16) -> mysql::Result<mysql::Conn> {
    mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(port)
            .user(Some("root"))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(2)))
            .read_timeout(Some(Duration::from_secs(30))),
    )
}

/// The plugin built by this `cargo test` run.
pub fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps directory");
    let path = deps.join("libchat_auth.so");
    assert!(path.is_file(), "plugin not built at {}", path.display());
    path
}

/// The broker the tests run: Debian's `mosquitto`, or the one `CHAT_AUTH_MOSQUITTO` names
/// (`scripts/mosquitto-versions` makes 2.0.21 and 2.1 under target/), with `CHAT_AUTH_MOSQUITTO_LIBS` on
/// its library path.
pub fn mosquitto_command() -> Command {
    let program = std::env::var_os("CHAT_AUTH_MOSQUITTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| require("mosquitto"));
    let mut command = Command::new(program);
    if let Some(libs) = std::env::var_os("CHAT_AUTH_MOSQUITTO_LIBS") {
        command.env("LD_LIBRARY_PATH", libs);
    }
    command
}

/// The first line of `mosquitto -h` of the broker the tests run ("mosquitto version 2.0.11").
#[allow(dead_code)]
pub fn mosquitto_version() -> String {
    mosquitto_command()
        .arg("-h")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// A `mosquitto` with the plugin, on a free port, logging everything to a file.
pub struct Broker {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

#[derive(Debug)]
pub struct StartFailure {
    pub exit_code: Option<i32>,
    pub log: String,
}

impl Broker {
    /// `plugin_lines` follow the `plugin` line (options, usually).
    pub fn start(plugin_lines: &str) -> Broker {
        Broker::try_start(plugin_lines, "").unwrap_or_else(|f| {
            panic!(
                "mosquitto did not start (exit {:?}):\n{}",
                f.exit_code, f.log
            )
        })
    }

    /// `broker_lines` go before the plugin (e.g. `allow_anonymous true`).
    pub fn try_start(plugin_lines: &str, broker_lines: &str) -> Result<Broker, StartFailure> {
        let port = free_port();
        let conf = format!(
            "log_type all\nper_listener_settings false\n\
             listener {port} 127.0.0.1\n{anonymous}{broker_lines}\nplugin {plugin}\n{plugin_lines}\n",
            anonymous = if broker_lines.contains("allow_anonymous") {
                ""
            } else {
                "allow_anonymous false\n"
            },
            plugin = plugin_path().display(),
        );
        Broker::run(&conf, port)
    }

    /// Runs a complete configuration whose listener is `port`.
    pub fn run(conf: &str, port: u16) -> Result<Broker, StartFailure> {
        Broker::run_with_env(conf, port, &[])
    }

    /// As `run`, with extra environment variables for the broker (test-only faults).
    pub fn run_with_env(
        conf: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Result<Broker, StartFailure> {
        // As root the broker would switch to `mosquitto`, unless the configuration names a user.
        let root = unsafe { libc::geteuid() } == 0;
        let names_user = conf.lines().any(|line| line.starts_with("user "));
        let conf = format!(
            "{}log_dest stderr\n{conf}",
            if root && !names_user {
                "user root\n"
            } else {
                ""
            }
        );
        let dir = fresh_dir("mosquitto");
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let log_file = std::fs::File::create(&log).expect("create the broker log");
        let mut child = spawn(
            mosquitto_command()
                .arg("-c")
                .arg(&conf_path)
                .envs(env.iter().copied())
                .stdout(log_file.try_clone().expect("dup log"))
                .stderr(log_file),
        );
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartFailure {
                    exit_code: status.code(),
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Broker { port, child, log });
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure {
                    exit_code: None,
                    log: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the broker dies without any cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `sig` (e.g. SIGHUP for a reload) to the broker.
    pub fn signal(&self, sig: libc::c_int) {
        signal(&self.child, sig);
    }

    /// For the CPU and memory figures of `benches/load`, which shares this file.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// What a CONNECT came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// CONNACK with this return / reason code.
    Refused(u8),
    /// No CONNACK: the socket closed or errored.
    Dropped(String),
}

/// MQTT 3.1.1 CONNECT with rumqttc.
pub fn connect(port: u16, username: &str, password: &str) -> Outcome {
    use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet};
    let mut options = MqttOptions::new(client_id(), "127.0.0.1", port);
    options.set_credentials(username, password);
    options.set_keep_alive(Duration::from_secs(10));
    let (_client, mut connection) = Client::new(options, 10);
    match connection.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => match ack.code {
            ConnectReturnCode::Success => Outcome::Accepted,
            code => Outcome::Refused(v4_return_code(code)),
        },
        Ok(Err(ConnectionError::ConnectionRefused(code))) => Outcome::Refused(v4_return_code(code)),
        Ok(Ok(other)) => Outcome::Dropped(format!("unexpected first event {other:?}")),
        Ok(Err(e)) => Outcome::Dropped(e.to_string()),
        Err(e) => Outcome::Dropped(format!("no answer: {e:?}")),
    }
}

/// The wire value of a 3.1.1 CONNACK return code.
fn v4_return_code(code: rumqttc::ConnectReturnCode) -> u8 {
    use rumqttc::ConnectReturnCode as C;
    match code {
        C::Success => 0,
        C::RefusedProtocolVersion => 1,
        C::BadClientId => 2,
        C::ServiceUnavailable => 3,
        C::BadUserNamePassword => 4,
        C::NotAuthorized => 5,
    }
}

/// MQTT 5 CONNECT with rumqttc: the reason code of the CONNACK.
pub fn connect_v5(port: u16, username: &str, password: &str) -> Outcome {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
    use rumqttc::v5::{Client, ConnectionError, Event, MqttOptions};
    let mut options = MqttOptions::new(client_id(), "127.0.0.1", port);
    options.set_credentials(username, password);
    let (_client, mut connection) = Client::new(options, 10);
    match connection.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => match ack.code {
            ConnectReturnCode::Success => Outcome::Accepted,
            code => Outcome::Refused(v5_reason_code(code)),
        },
        Ok(Err(ConnectionError::ConnectionRefused(code))) => Outcome::Refused(v5_reason_code(code)),
        Ok(Ok(other)) => Outcome::Dropped(format!("unexpected first event {other:?}")),
        Ok(Err(e)) => Outcome::Dropped(e.to_string()),
        Err(e) => Outcome::Dropped(format!("no answer: {e:?}")),
    }
}

/// The wire value of a v5 CONNACK reason (rumqttc's enum discriminants are not).
fn v5_reason_code(code: rumqttc::v5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    match code {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        _ => 0xFF,
    }
}

fn client_id() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A hand-built MQTT 3.1.1 CONNECT, for what no client library will send: passwords that
/// are not UTF-8, 64 KiB fields, a password without a username.
pub fn raw_connect(port: u16, username: Option<&[u8]>, password: Option<&[u8]>) -> Outcome {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut body = Vec::new();
    field(&mut body, b"MQTT");
    body.push(4);
    let flags = 0x02 | username.map_or(0, |_| 0x80) | password.map_or(0, |_| 0x40);
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    field(&mut body, client_id().as_bytes());
    if let Some(u) = username {
        field(&mut body, u);
    }
    if let Some(p) = password {
        field(&mut body, p);
    }
    let mut packet = vec![0x10];
    let mut remaining = body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return Outcome::Dropped(e.to_string()),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    if let Err(e) = stream.write_all(&packet) {
        return Outcome::Dropped(e.to_string());
    }
    let mut ack = [0u8; 4];
    match stream.read_exact(&mut ack) {
        Ok(()) if ack[0] == 0x20 && ack[3] == 0 => Outcome::Accepted,
        Ok(()) if ack[0] == 0x20 => Outcome::Refused(ack[3]),
        Ok(()) => Outcome::Dropped(format!("not a CONNACK: {ack:?}")),
        Err(e) => Outcome::Dropped(e.to_string()),
    }
}

/// The one MariaDB most tests share (each test in its own database).
static SHARED: OnceLock<MariaDb> = OnceLock::new();

/// Starts the shared server; `main` calls it on its own thread, which outlives every test
/// (a test thread that spawned it would take it down when the thread ends).
pub fn start_shared() {
    SHARED.get_or_init(|| MariaDb::start_new("shared-mariadb"));
}

pub fn shared() -> &'static MariaDb {
    SHARED
        .get()
        .expect("main starts the shared MariaDB before the tests")
}

/// Stops the shared server if it was started: statics are never dropped, so `main` calls this.
pub fn stop_shared() {
    if let Some(db) = SHARED.get() {
        db.stop();
    }
}

/// The plugin's PostgreSQL role and its password (scram-sha-256 over TCP).
pub const PG_USER: &str = "chatauth";
pub const PG_PASS: &str = "chatauth-pg-pw";

/// A program of Debian's PostgreSQL server (`postgresql-15`, found in its version's `bin`).
fn pg_program(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("{name} of the PostgreSQL server is not installed: run scripts/setup")
    })
}

/// The account the server runs as: PostgreSQL refuses to run as root, so as root the
/// `postgres` account the package made (its uid and gid), else ourselves.
fn pg_account() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("the postgres account (made by the postgresql package: run scripts/setup)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn as_pg_account(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = pg_account() {
        command.uid(uid).gid(gid);
    }
    command
}

pub fn chown_to_pg(path: &Path) {
    if let Some((uid, gid)) = pg_account() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", path.display());
    }
}

/// A private PostgreSQL server: its own data directory (copied from one `initdb` per run),
/// its Unix socket in that directory and a free TCP port on 127.0.0.1, run in a process
/// group of its own so `pause` freezes every backend, stopped by `Drop`.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    child: Mutex<Option<Child>>,
    /// Extra `-c name=value` settings (TLS).
    settings: Vec<String>,
}

impl Postgres {
    fn template() -> &'static Path {
        static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
        TEMPLATE.get_or_init(|| {
            let dir = run_dir().join("pg-template");
            std::fs::create_dir_all(&dir).unwrap();
            chown_to_pg(&dir);
            let data = dir.join("data");
            let output = as_pg_account(
                Command::new(pg_program("initdb"))
                    .arg("-D")
                    .arg(&data)
                    .args([
                        "-U",
                        "postgres",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "--no-sync",
                    ]),
            )
            .output()
            .expect("run initdb");
            assert!(
                output.status.success(),
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            data
        })
    }

    /// Prepares a server's data directory on a free port without starting it.
    pub fn create(name: &str) -> Postgres {
        let dir = fresh_dir(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(Self::template())
            .arg(dir.join("data"))
            .status()
            .expect("copy the PostgreSQL template");
        assert!(status.success());
        chown_to_pg(&dir);
        Postgres {
            port: free_port(),
            dir,
            child: Mutex::new(None),
            settings: Vec::new(),
        }
    }

    /// Creates and starts a server with the plugin's role.
    pub fn start_new(name: &str) -> Postgres {
        Postgres::start_new_with(name, &[])
    }

    /// As `start_new`, with extra `-c` settings (`ssl=on`, ...).
    pub fn start_new_with(name: &str, settings: &[String]) -> Postgres {
        let mut pg = Postgres::create(name);
        pg.settings = settings.to_vec();
        pg.start();
        pg.exec(
            "postgres",
            &format!("CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASS}'"),
        );
        pg
    }

    /// Extra `-c` settings for the next `start`.
    pub fn set_settings(&mut self, settings: &[String]) {
        self.settings = settings.to_vec();
    }

    /// Puts `lines` first in `pg_hba.conf` (read at start).
    pub fn hba_first(&self, lines: &str) {
        let path = self.dir.join("data/pg_hba.conf");
        let old = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{lines}\n{old}")).unwrap();
    }

    pub fn start(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "already running");
        let log = std::fs::File::create(self.dir.join("postgres.log")).unwrap();
        let mut command = Command::new(pg_program("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=40"]);
        for setting in &self.settings {
            command.arg("-c").arg(setting);
        }
        as_pg_account(&mut command)
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group: `pause` stops the postmaster and every backend.
        // SAFETY: setpgid is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        *slot = Some(spawn(&mut command));
        drop(slot);
        eventually("PostgreSQL", Duration::from_secs(30), || {
            self.try_psql("postgres", "SELECT 1", true).is_ok()
        });
    }

    fn group(&self, sig: libc::c_int) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-(child.id() as libc::pid_t), sig) };
        }
    }

    /// Fast shutdown (SIGINT: clients are disconnected), as an operator's restart does.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            // SAFETY: kill(2) on our own child's process group and the child.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGCONT);
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Freezes the server and every backend: connections are accepted by the kernel but
    /// never answered.
    pub fn pause(&self) {
        self.group(libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn resume(&self) {
        self.group(libc::SIGCONT);
    }

    fn try_psql(&self, db: &str, sql: &str, quiet: bool) -> Result<String, String> {
        let mut command = Command::new(pg_program("psql"));
        command
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .map_err(|e| e.to_string())?;
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else if quiet {
            Err(String::new())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Runs SQL (one or more statements) as the superuser; an error fails the test.
    pub fn exec(&self, db: &str, sql: &str) {
        self.try_psql(db, sql, false)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// The first column of every row, as text.
    #[allow(dead_code)]
    pub fn column(&self, db: &str, sql: &str) -> Vec<String> {
        self.try_psql(db, sql, false)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A new database made by `schema` (run in it), readable by the plugin's role.
    pub fn database(&self, name: &str, schema: &str) -> String {
        self.exec("postgres", &format!("CREATE DATABASE {name}"));
        self.exec(
            name,
            &format!("{schema}\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO {PG_USER};"),
        );
        name.to_string()
    }

    /// go-auth's options that reach `dbname` over TCP, without TLS.
    pub fn pg_options(&self, dbname: &str) -> String {
        format!(
            "auth_opt_pg_host 127.0.0.1\nauth_opt_pg_port {}\nauth_opt_pg_dbname {dbname}\n\
             auth_opt_pg_user {PG_USER}\nauth_opt_pg_password {PG_PASS}\n\
             auth_opt_pg_sslmode disable\n",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
