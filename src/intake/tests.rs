//! The chat pipeline against a real spool in a temporary directory: what is delivered,
//! what is spooled (read back as the writer reads it), and why a message is refused.

use super::*;
use crate::chat::Kind;
use crate::store::Record;
use crate::store::spool::{self, SpoolReader};
use std::path::PathBuf;
use std::time::Duration;

const NOW: i64 = 1_780_000_000_000;

/// A spool of its own per test, removed when the test ends.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("chat-auth-intake-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pipeline's state: a spool (`max_bytes` not yet in MySQL at most), the stamps kept.
struct Pipeline {
    validation: ValidationConfig,
    resends: Resends,
    dedup: Dedup,
    spooler: Spooler,
    reader: SpoolReader,
    ids: MessageIds,
    _scratch: Scratch,
}

impl Pipeline {
    fn new(name: &str, max_bytes: u64) -> Pipeline {
        let scratch = Scratch::new(name);
        let (spooler, reader) = Spooler::open(&scratch.dir, false, max_bytes).unwrap();
        Pipeline {
            validation: ValidationConfig {
                max_content_bytes: 1_000,
                dedup: Duration::from_secs(60),
            },
            resends: Resends::new(30_000, 16, 1_000),
            dedup: Dedup::new(60_000, 16, 1_000),
            spooler,
            reader,
            ids: MessageIds::seeded(1),
            _scratch: scratch,
        }
    }

    fn judge(&mut self, publish: &ChatPublish<'_>, now_ms: i64) -> Result<Verdict, ChatRefusal> {
        let mut intake = Intake {
            validation: &self.validation,
            resends: &mut self.resends,
            dedup: Some(&mut self.dedup),
            spooler: Some(&mut self.spooler),
            ids: &mut self.ids,
        };
        judge(&mut intake, publish, now_ms)
    }

    /// What the writer would read from the spool now.
    fn spooled(&mut self) -> Vec<Record> {
        let mut records = Vec::new();
        loop {
            let batch = self.reader.read(16).unwrap();
            if batch.is_empty() {
                return records;
            }
            records.extend(batch.iter().map(|item| spool::decode(&item.0).unwrap()));
        }
    }
}

/// Alice (user 7) writing to user 9's inbox.
fn to_inbox<'a>(payload: &'a [u8], author: Author<'a>, qos: u8) -> ChatPublish<'a> {
    ChatPublish {
        topic: "/users/9/messages",
        chat: ChatTopic {
            kind: Kind::Chat,
            id: "9",
        },
        payload,
        qos,
        client_id: b"alice-phone",
        author,
    }
}

const HELLO: &[u8] = br#"{"type":"CHAT","fromId":"7","toId":"9","content":"hello"}"#;

fn delivered(verdict: &Verdict) -> serde_json::Value {
    match verdict {
        Verdict::Accepted(payload) | Verdict::Retransmission(payload) => {
            serde_json::from_slice(payload).unwrap()
        }
        Verdict::Relayed => panic!("relayed: delivered as it came"),
    }
}

#[test]
fn an_accepted_message_is_stamped_and_spooled_as_delivered() {
    let mut pipeline = Pipeline::new("accepted", 1 << 20);
    let verdict = pipeline
        .judge(&to_inbox(HELLO, Author::User("7"), 1), NOW)
        .unwrap();
    assert!(matches!(verdict, Verdict::Accepted(_)));
    let message = delivered(&verdict);
    assert_eq!(message["content"], "hello");
    assert_eq!(message["ts"], NOW);
    let id = message["id"].as_str().unwrap().to_string();
    let stored = pipeline.spooled();
    assert_eq!(stored.len(), 1);
    let row = &stored[0];
    assert_eq!(
        (
            row.message_id.as_str(),
            row.kind.as_str(),
            row.from_id.as_str(),
            row.to_id.as_str(),
            row.content.as_str(),
            row.topic.as_str(),
            row.qos,
            row.client_id.as_str(),
            row.server_ts
        ),
        (
            id.as_str(),
            "CHAT",
            "7",
            "9",
            "hello",
            "/users/9/messages",
            1,
            "alice-phone",
            NOW
        )
    );
    let Verdict::Accepted(payload) = &verdict else {
        unreachable!()
    };
    assert_eq!(row.payload.as_bytes(), payload.as_slice());
}

#[test]
fn refused_messages_are_not_spooled() {
    let mut pipeline = Pipeline::new("refused", 1 << 20);
    let refusal = pipeline
        .judge(&to_inbox(HELLO, Author::Unknown, 1), NOW)
        .unwrap_err();
    assert!(matches!(refusal, ChatRefusal::UnknownClient));
    assert_eq!(refusal.name(), "unknown-client");
    // Alice may not write as user 8.
    let refusal = pipeline
        .judge(&to_inbox(HELLO, Author::User("8"), 1), NOW)
        .unwrap_err();
    assert!(matches!(
        refusal,
        ChatRefusal::Invalid(Invalid::FromIdMismatch)
    ));
    assert_eq!(refusal.name(), "from-id-mismatch");
    assert!(!refusal.is_limit());
    let to_other = br#"{"type":"CHAT","fromId":"7","toId":"10","content":"x"}"#;
    let refusal = pipeline
        .judge(&to_inbox(to_other, Author::User("7"), 1), NOW)
        .unwrap_err();
    assert_eq!(refusal.name(), "to-id-mismatch");
    assert!(pipeline.spooled().is_empty());
}

#[test]
fn the_same_client_msg_id_and_bytes_get_the_first_stamp_and_no_second_row() {
    let mut pipeline = Pipeline::new("dedup", 1 << 20);
    let payload = br#"{"type":"CHAT","fromId":"7","toId":"9","content":"hi","clientMsgId":"c1"}"#;
    let first = pipeline
        .judge(&to_inbox(payload, Author::User("7"), 1), NOW)
        .unwrap();
    let again = pipeline
        .judge(&to_inbox(payload, Author::User("7"), 1), NOW + 5_000)
        .unwrap();
    assert!(matches!(again, Verdict::Retransmission(_)));
    assert_eq!(delivered(&first), delivered(&again));
    // The same id with other bytes is another message.
    let other = br#"{"type":"CHAT","fromId":"7","toId":"9","content":"hi!","clientMsgId":"c1"}"#;
    let third = pipeline
        .judge(&to_inbox(other, Author::User("7"), 1), NOW + 6_000)
        .unwrap();
    assert!(matches!(third, Verdict::Accepted(_)));
    assert_ne!(delivered(&third)["id"], delivered(&first)["id"]);
    assert_eq!(pipeline.spooled().len(), 2);
}

#[test]
fn a_qos2_resend_before_pubrel_keeps_its_stamp() {
    let mut pipeline = Pipeline::new("resend", 1 << 20);
    let first = pipeline
        .judge(&to_inbox(HELLO, Author::User("7"), 2), NOW)
        .unwrap();
    let resent = pipeline
        .judge(&to_inbox(HELLO, Author::User("7"), 2), NOW + 1_000)
        .unwrap();
    assert!(matches!(resent, Verdict::Retransmission(_)));
    assert_eq!(delivered(&first), delivered(&resent));
    // At QoS 1 the same bytes are a new message (no resends to recognise there).
    let qos1 = pipeline
        .judge(&to_inbox(HELLO, Author::User("7"), 1), NOW + 2_000)
        .unwrap();
    assert!(matches!(qos1, Verdict::Accepted(_)));
    assert_eq!(pipeline.spooled().len(), 2);
}

#[test]
fn a_bridged_copy_stamped_elsewhere_is_relayed_and_not_stored_again() {
    let mut pipeline = Pipeline::new("relayed", 1 << 20);
    let stamped = br#"{"type":"CHAT","fromId":"7","toId":"9","content":"x","id":"0190-a","ts":1}"#;
    for author in [Author::Relay, Author::OwnBridge] {
        let verdict = pipeline.judge(&to_inbox(stamped, author, 1), NOW).unwrap();
        assert_eq!(verdict, Verdict::Relayed);
    }
    assert!(pipeline.spooled().is_empty());
    // A superuser keeps the stamp it brings, and the message is stored here.
    let verdict = pipeline
        .judge(&to_inbox(stamped, Author::Superuser, 1), NOW)
        .unwrap();
    assert_eq!(delivered(&verdict)["id"], "0190-a");
    assert_eq!(pipeline.spooled()[0].server_ts, 1);
    // A bridge's unstamped message is stamped and stored by the broker that receives it.
    let verdict = pipeline
        .judge(&to_inbox(HELLO, Author::Relay, 1), NOW)
        .unwrap();
    assert!(matches!(verdict, Verdict::Accepted(_)));
    assert_eq!(pipeline.spooled().len(), 1);
}

#[test]
fn a_full_spool_is_a_limit_and_its_refusal_is_not_remembered() {
    // One record fits: the second finds the spool holding its bound.
    let mut pipeline = Pipeline::new("full", 1);
    pipeline
        .judge(&to_inbox(HELLO, Author::User("7"), 1), NOW)
        .unwrap();
    let payload = br#"{"type":"CHAT","fromId":"7","toId":"9","content":"hi","clientMsgId":"c2"}"#;
    let refusal = pipeline
        .judge(&to_inbox(payload, Author::User("7"), 2), NOW)
        .unwrap_err();
    assert!(matches!(refusal, ChatRefusal::SpoolFull));
    assert!(refusal.is_limit());
    assert_eq!(refusal.name(), "spool-full");
    // Neither the clientMsgId nor the QoS 2 resend kept a stamp for what was refused.
    assert!(pipeline.dedup.get("7", "c2", payload, NOW).is_none());
    assert!(
        pipeline
            .resends
            .get(b"alice-phone", b"/users/9/messages", payload, NOW)
            .is_none()
    );
    assert_eq!(pipeline.spooled().len(), 1);
}

#[test]
fn without_storage_messages_are_stamped_all_the_same() {
    let validation = ValidationConfig {
        max_content_bytes: 1_000,
        dedup: Duration::ZERO,
    };
    let mut resends = Resends::new(30_000, 16, 1_000);
    let mut ids = MessageIds::seeded(2);
    let mut intake = Intake {
        validation: &validation,
        resends: &mut resends,
        dedup: None,
        spooler: None,
        ids: &mut ids,
    };
    let verdict = judge(&mut intake, &to_inbox(HELLO, Author::User("7"), 0), NOW).unwrap();
    assert_eq!(delivered(&verdict)["ts"], NOW);
}
