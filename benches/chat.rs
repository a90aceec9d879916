//! The broker-thread work of one chat message: validating and stamping the payload, and
//! appending it to the spool (a copy into the memory-mapped segment).
//!
//! `cargo bench --bench chat`

use chat_auth::chat::Kind;
use chat_auth::chat::payload::{Sender, accept};
use chat_auth::message_id::MessageIds;
use chat_auth::store::Record;
use chat_auth::store::spool::Spool;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::atomic::Ordering;

const MAX: usize = 65_536;

fn payload(content: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "CHAT", "fromId": 1017, "toId": 42, "content": content
    }))
    .unwrap()
}

fn validation_and_stamping(c: &mut Criterion) {
    let mut group = c.benchmark_group("chat");
    let short = payload(&"x".repeat(100));
    let escaped = payload(&"quote \" backslash \\ emoji 😀 ".repeat(4));
    let large = payload(&"y".repeat(MAX));
    let forged = serde_json::to_vec(&serde_json::json!({
        "type": "CHAT", "fromId": 7, "toId": 42, "content": "x"
    }))
    .unwrap();
    let user = Sender::User("1017");
    let mut ids = MessageIds::new();
    assert!(accept(Kind::Chat, "42", &short, user, MAX, 0, || ids.next(0)).is_ok());
    assert!(accept(Kind::Chat, "42", &forged, user, MAX, 0, || ids.next(0)).is_err());
    for (name, bytes) in [
        ("accept 100-byte content", &short),
        ("accept 100 bytes with escapes", &escaped),
        ("accept 64 KiB content", &large),
        ("refuse a forged fromId", &forged),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                accept(
                    Kind::Chat,
                    "42",
                    black_box(bytes),
                    user,
                    MAX,
                    1_795_000_000_000,
                    || ids.next(1_795_000_000_000),
                )
            })
        });
    }
    // The costliest shapes of a payload of the largest size accepted (issue 22: a few ms on
    // the broker thread at most, whatever the shape).
    for (name, bytes) in chat_auth::chat::payload::costly_shapes(MAX) {
        let stamp = std::str::from_utf8(&bytes[..80])
            .unwrap()
            .contains("\"ts\"");
        let name = format!(
            "{name}, {} KiB{}",
            bytes.len() / 1024,
            if stamp { ", stamp given" } else { "" }
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                accept(Kind::Chat, "42", black_box(&bytes), user, MAX, 0, || {
                    ids.next(1_795_000_000_000)
                })
            })
        });
    }
    group.bench_function("new message id (UUIDv7)", |b| {
        b.iter(|| ids.next(1_795_000_000_000))
    });
    let dir = std::env::temp_dir().join(format!("chat-auth-bench-spool-{}", std::process::id()));
    let (mut spool, reader) = Spool::open(&dir, false, 64 << 20).unwrap();
    let record = Record {
        message_id: ids.next(1_795_000_000_000).to_string(),
        kind: "CHAT".into(),
        from_id: "1017".into(),
        to_id: "42".into(),
        content: "x".repeat(100),
        topic: "/users/42/messages".into(),
        qos: 1,
        client_id: "phone-1017".into(),
        server_ts: 1_795_000_000_000,
        payload: format!(
            "{{\"type\":\"CHAT\",\"fromId\":1017,\"toId\":42,\"content\":\"{}\",\"id\":\"{}\",\"ts\":1795000000000}}",
            "x".repeat(100),
            ids.next(1_795_000_000_000)
        ),
    };
    // Commits (as the writer would) whenever a segment fills, so the run's gigabytes of
    // appends never hold more than two segments of disk.
    let mut checkpoint = reader.checkpoint();
    let mut segment = 0;
    group.bench_function("spool append (100-byte content)", |b| {
        b.iter(|| {
            let (position, _) = spool.append(black_box(&record.borrowed())).unwrap();
            if position.segment != segment {
                segment = position.segment;
                let pending = spool.usage.pending_bytes.load(Ordering::Relaxed);
                let records = spool.usage.pending_records.load(Ordering::Relaxed);
                checkpoint.commit(position, records, pending).unwrap();
            }
        })
    });
    group.finish();
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, validation_and_stamping);
criterion_main!(benches);
