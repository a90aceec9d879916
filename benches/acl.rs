//! Time per ACL decision on the broker thread's path: the registry behind its mutex, as
//! `Plugin::acl_check` takes it, with 10,000 clients loaded.
//!
//! `cargo bench --bench acl`

use chat_auth::acl::{Access, Patterns, RuleSet};
use chat_auth::auth::Identity;
use chat_auth::chat::topics::ChatTopics;
use chat_auth::sessions::Connection;
use chat_auth::sessions::{LoginKind, NoFacts, OfflineCaps, Registry};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLIENTS: usize = 10_000;

fn loaded_registry() -> Mutex<Registry> {
    let chat = ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap();
    let mut registry = Registry::new(Some(chat), Duration::from_secs(60), OfflineCaps::default());
    let now = Instant::now();
    for n in 0..CLIENTS {
        let identity = Identity {
            username: format!("user{n}"),
            user_id: n.to_string(),
            superuser: false,
            proof: None,
            backend: Default::default(),
            relay: false,
        };
        let rules = RuleSet {
            user_id: n.to_string(),
            // Twenty groups each, like an active chat user.
            groups: (0..20).map(|g| (n % 500 + g * 500).to_string()).collect(),
            rows: Patterns {
                read: vec!["sensors/%u/#".into(), "fleet/+/status".into()],
                write: vec!["devices/%c/out".into(), "fleet/%u/status".into()],
                subscribe: vec!["sensors/%u/#".into(), "fleet/+/status".into()],
            },
        };
        registry.login(
            Connection::new(format!("client-{n}").as_bytes(), n + 1),
            LoginKind::Connect {
                persistent: false,
                cached: false,
            },
            &identity,
            now,
        );
        registry.apply_urgent(now, |_| Ok(rules.clone()));
    }
    Mutex::new(registry)
}

fn acl_checks(c: &mut Criterion) {
    let registry = loaded_registry();
    let id = b"client-4242".as_slice();
    let pointer = 4243;
    let check = |access, topic: &str| {
        registry
            .lock()
            .unwrap()
            .check(
                Connection::new(black_box(id), pointer),
                access,
                black_box(topic),
                false,
                &NoFacts,
            )
            .expect("rules loaded at login")
    };
    // The first check of a client expands its patterns once; steady state follows.
    assert!(check(Access::Read, "/users/4242/messages"));
    let own_group = (4242 % 500).to_string();
    let group_topic = format!("/groups/{own_group}/messages");
    assert!(check(Access::Write, &group_topic));
    assert!(!check(Access::Subscribe, "/users/+/messages"));
    assert!(check(Access::Write, "devices/client-4242/out"));

    let mut group = c.benchmark_group("acl_check");
    group.bench_function("inbox READ (own)", |b| {
        b.iter(|| check(Access::Read, "/users/4242/messages"))
    });
    group.bench_function("group WRITE (member)", |b| {
        b.iter(|| check(Access::Write, &group_topic))
    });
    group.bench_function("wildcard SUBSCRIBE /users/+/messages (refused)", |b| {
        b.iter(|| check(Access::Subscribe, "/users/+/messages"))
    });
    group.bench_function("SUBSCRIBE sensors/user4242/+ (aclquery row)", |b| {
        b.iter(|| check(Access::Subscribe, "sensors/user4242/+"))
    });
    group.bench_function("WRITE devices/client-4242/out (aclquery %c row)", |b| {
        b.iter(|| check(Access::Write, "devices/client-4242/out"))
    });
    group.bench_function("READ of a topic nothing allows", |b| {
        b.iter(|| check(Access::Read, "other/topic/entirely"))
    });
    group.finish();
}

criterion_group!(benches, acl_checks);
criterion_main!(benches);
