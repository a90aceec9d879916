//! No row for a message that was not delivered: Mosquitto runs MESSAGE (where chat-auth
//! stamps and spools) before it looks for a QoS 2 message already held under the packet id,
//! and after its message size check. A QoS 2 copy sent again before PUBREL is one delivery
//! and one row; a publish over `message_size_limit` is neither.

use crate::acl::{PASSWORD, assert_chat};
use crate::fixtures::{chat, id_of, login_tagged, stored_ids};
use crate::harness::{eventually, fresh_dir, shared};
use crate::security::{RawConnect, client_id, raw_ack, raw_disconnect, raw_publish, raw_session};
use crate::store::{store_broker, store_db};
use libtest_mimic::Trial;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    let tests: &[(&str, fn())] = &[
        (
            "delivery::a_qos2_resend_before_pubrel_is_one_delivery_and_one_row",
            a_qos2_resend_before_pubrel_is_one_delivery_and_one_row,
        ),
        (
            "delivery::a_publish_over_the_size_limit_leaves_no_row",
            a_publish_over_the_size_limit_leaves_no_row,
        ),
    ];
    crate::trials(tests)
}

const SOON: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(800);
const INBOX: &str = "/users/2/messages";

/// alice's raw MQTT 3.1.1 connection.
fn alice(port: u16, id: &str, clean: bool) -> TcpStream {
    raw_session(
        port,
        RawConnect {
            client_id: id,
            username: "alice",
            password: PASSWORD,
            v5: false,
            clean,
            session_expiry: None,
            will: None,
        },
    )
    .expect("alice logs in")
}

fn pubrel(stream: &mut TcpStream, mid: u16) {
    let [hi, lo] = mid.to_be_bytes();
    stream
        .write_all(&[0x62, 0x02, hi, lo])
        .expect("send PUBREL");
}

fn a_qos2_resend_before_pubrel_is_one_delivery_and_one_row() {
    let db = shared();
    let dbname = store_db(db, "qos2_resend");
    let broker = store_broker(db, &dbname, &fresh_dir("qos2-spool"), "");
    let mut bob = login_tagged(broker.port, "bob", 1);
    assert_eq!(bob.subscribe(INBOX), 1);
    let mut ids = Vec::new();

    // On one connection: PUBLISH, PUBREC, the same PUBLISH again with DUP (as when the
    // PUBREC is late), PUBREC, PUBREL, PUBCOMP.
    let once = chat("CHAT", 1, 2, "sent twice before PUBREL");
    let mut stream = alice(broker.port, &client_id("alice-q2"), true);
    raw_publish(&mut stream, INBOX, &once, 2, 7, false);
    raw_ack(&mut stream, 0x50, 7);
    raw_publish(&mut stream, INBOX, &once, 2, 7, true);
    raw_ack(&mut stream, 0x50, 7);
    pubrel(&mut stream, 7);
    raw_ack(&mut stream, 0x70, 7);
    let got = bob.message_on(INBOX, SOON).expect("the message");
    assert_chat(&got.payload, &once);
    ids.push(id_of(&got.payload));
    assert!(bob.drain(QUIET).is_empty(), "delivered once");
    raw_disconnect(stream);

    // After a reconnect, as MQTT has it: the PUBREC was lost with the connection, the
    // persistent session sends the PUBLISH again on the new one.
    let again = chat("CHAT", 1, 2, "sent again after a reconnect");
    let id = client_id("alice-q2-persistent");
    let mut stream = alice(broker.port, &id, false);
    raw_publish(&mut stream, INBOX, &again, 2, 9, false);
    raw_ack(&mut stream, 0x50, 9);
    raw_disconnect(stream);
    let mut stream = alice(broker.port, &id, false);
    raw_publish(&mut stream, INBOX, &again, 2, 9, true);
    raw_ack(&mut stream, 0x50, 9);
    pubrel(&mut stream, 9);
    raw_ack(&mut stream, 0x70, 9);
    let got = bob.message_on(INBOX, SOON).expect("the message");
    assert_chat(&got.payload, &again);
    ids.push(id_of(&got.payload));
    assert!(bob.drain(QUIET).is_empty(), "delivered once");
    raw_disconnect(stream);

    eventually("two rows", SOON, || stored_ids(db, &dbname).len() >= 2);
    std::thread::sleep(QUIET);
    assert_eq!(
        stored_ids(db, &dbname),
        ids,
        "one row per message, the one delivered"
    );
    assert!(
        !broker.log().contains("Reused message ID"),
        "the broker took each copy for the duplicate it is:\n{}",
        broker.log()
    );
}

fn a_publish_over_the_size_limit_leaves_no_row() {
    let db = shared();
    let dbname = store_db(db, "size_limit");
    let broker = store_broker(
        db,
        &dbname,
        &fresh_dir("size-spool"),
        "message_size_limit 300\n",
    );
    let mut bob = login_tagged(broker.port, "bob", 1);
    assert_eq!(bob.subscribe(INBOX), 1);
    let mut stream = alice(broker.port, &client_id("alice-size"), true);
    // Refused by the broker's size check, which comes before the ACL check and MESSAGE.
    let large = chat("CHAT", 1, 2, &"x".repeat(400));
    for (qos, mid) in [(1, 1), (2, 2)] {
        raw_publish(&mut stream, INBOX, &large, qos, mid, false);
        raw_ack(&mut stream, if qos == 1 { 0x40 } else { 0x50 }, mid);
    }
    eventually("the broker dropped both", SOON, || {
        broker.log().matches("Dropped too large PUBLISH").count() == 2
    });
    let small = chat("CHAT", 1, 2, "small");
    raw_publish(&mut stream, INBOX, &small, 1, 3, false);
    raw_ack(&mut stream, 0x40, 3);
    let got = bob.message_on(INBOX, SOON).expect("the small message");
    assert_chat(&got.payload, &small);
    assert!(bob.drain(QUIET).is_empty(), "nothing else delivered");
    eventually("a row", SOON, || !stored_ids(db, &dbname).is_empty());
    std::thread::sleep(QUIET);
    assert_eq!(stored_ids(db, &dbname), [id_of(&got.payload)]);
}
