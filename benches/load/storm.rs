//! Connect storms (CONNECT, CONNACK, DISCONNECT per user, a fixed number at a time) and
//! the broker's memory with many clients connected.

use crate::User;
use crate::client::{self, Conn};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct StormFigures {
    pub connects: usize,
    pub refused: usize,
    pub seconds: f64,
    /// CPU seconds of the broker process (all its threads), of its main thread, of
    /// MariaDB (set by the caller, which knows it) and of this load generator.
    pub broker_cpu: f64,
    pub broker_thread_cpu: f64,
    pub db_cpu: f64,
    pub client_cpu: f64,
}

impl StormFigures {
    /// Sums another storm into this one.
    pub fn add(&mut self, other: &StormFigures) {
        self.connects += other.connects;
        self.refused += other.refused;
        self.seconds += other.seconds;
        self.broker_cpu += other.broker_cpu;
        self.broker_thread_cpu += other.broker_thread_cpu;
        self.db_cpu += other.db_cpu;
        self.client_cpu += other.client_cpu;
    }

    pub fn rate(&self) -> f64 {
        self.connects as f64 / self.seconds
    }
}

/// Every user logs in once, `concurrency` at a time, and leaves.
pub async fn storm(port: u16, broker_pid: u32, users: &[User], concurrency: usize) -> StormFigures {
    storm_with(port, broker_pid, users, concurrency, None).await
}

/// As `storm`, each client subscribing to `filter` (`{id}`: the user's id) after its CONNACK
/// and leaving at its SUBACK, as a chat client does: its first ACL check is part of the
/// figure (with the plugin, the rules its login asked for). A refused SUBSCRIBE counts as a
/// refused login.
pub async fn storm_subscribing(
    port: u16,
    broker_pid: u32,
    users: &[User],
    concurrency: usize,
    filter: &'static str,
) -> StormFigures {
    storm_with(port, broker_pid, users, concurrency, Some(filter)).await
}

async fn storm_with(
    port: u16,
    broker_pid: u32,
    users: &[User],
    concurrency: usize,
    filter: Option<&'static str>,
) -> StormFigures {
    let cpu_before = crate::traffic::cpu_seconds(broker_pid);
    let thread_before = crate::traffic::thread_cpu_seconds(broker_pid);
    let client_before = crate::traffic::cpu_seconds(std::process::id());
    let start = Instant::now();
    let accepted = each_user(users, concurrency, move |user| async move {
        match connect(port, &user).await {
            Some(mut conn) => {
                let granted = match filter {
                    Some(filter) => {
                        let filter = filter.replace("{id}", &user.id.to_string());
                        matches!(conn.subscribe(&filter, 1).await, Ok(qos) if qos < 0x80)
                    }
                    None => true,
                };
                conn.disconnect().await;
                granted
            }
            None => false,
        }
    })
    .await;
    let refused = accepted.iter().filter(|ok| !**ok).count();
    StormFigures {
        connects: users.len() - refused,
        refused,
        seconds: start.elapsed().as_secs_f64(),
        broker_cpu: crate::traffic::cpu_seconds(broker_pid) - cpu_before,
        broker_thread_cpu: crate::traffic::thread_cpu_seconds(broker_pid) - thread_before,
        db_cpu: 0.0,
        client_cpu: crate::traffic::cpu_seconds(std::process::id()) - client_before,
    }
}

/// Runs `action` for every user, `concurrency` at a time; the results in no set order.
async fn each_user<T, F, Fut>(users: &[User], concurrency: usize, action: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(User) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let users = Arc::new(users.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (users, next, action) = (users.clone(), next.clone(), action.clone());
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(user) = users.get(i) else { break };
                results.push(action(user.clone()).await);
            }
            results
        }));
    }
    let mut results = Vec::with_capacity(users.len());
    for worker in workers {
        results.extend(worker.await.expect("load worker"));
    }
    results
}

async fn connect(port: u16, user: &User) -> Option<Conn> {
    let client_id = format!("storm-{}-{}", user.name, crate::next_client_number());
    match client::connect(port, &client_id, Some((&user.name, &user.password))).await {
        Ok(Ok(conn)) => Some(conn),
        _ => None,
    }
}

#[derive(Debug, Clone, Default)]
pub struct MemoryFigures {
    pub clients: usize,
    pub rss_before_kib: u64,
    /// With the first half of the clients connected.
    pub rss_half_kib: u64,
    pub rss_after_kib: u64,
}

impl MemoryFigures {
    /// The growth per client from half to all of them: fixed costs that arrive with the
    /// first clients (database connections, buffers) are not counted per client.
    pub fn per_client_bytes(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_half_kib as f64) * 1024.0
            / (self.clients - self.clients / 2) as f64
    }
}

/// Connects every user and keeps them connected while the broker's RSS is read, at half
/// and at all of them.
pub async fn memory(port: u16, broker_pid: u32, users: &[User]) -> MemoryFigures {
    let rss_before_kib = rss_kib(broker_pid);
    let half = users.len() / 2;
    let mut connected = connect_all(port, &users[..half]).await;
    settle().await;
    let rss_half_kib = rss_kib(broker_pid);
    connected.extend(connect_all(port, &users[half..]).await);
    settle().await;
    let figures = MemoryFigures {
        clients: connected.len(),
        rss_before_kib,
        rss_half_kib,
        rss_after_kib: rss_kib(broker_pid),
    };
    for conn in connected {
        conn.disconnect().await;
    }
    figures
}

/// Lets the broker settle (the plugin's background work lands within a tick).
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
}

async fn connect_all(port: u16, users: &[User]) -> Vec<Conn> {
    each_user(users, 50, move |user| async move {
        connect(port, &user).await.expect("memory-test login")
    })
    .await
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
