//! Heap allocations of validating and stamping one chat message, counted by a global
//! allocator: an accepted message of the usual shape allocates its stamped payload and
//! nothing else (issue 26). The message id is made before, as the broker's `new_id` would.

use chat_auth::chat::Kind;
use chat_auth::chat::payload::{Sender, accept};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by accepting `payload` (from user 17, on user 42's inbox or group 42).
fn allocations(kind: Kind, payload: &str) -> usize {
    let id =
        chat_auth::message_id::MessageId::parse("019abd1e-6f0a-7c3e-9b1d-2f4e5a6b7c8d").unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let stamped = accept(
        kind,
        "42",
        payload.as_bytes(),
        Sender::User("17"),
        65_536,
        1_795_000_000_000,
        move || id,
    );
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(stamped.is_ok(), "{payload}: {stamped:?}");
    drop(stamped);
    after - before
}

#[test]
fn an_accepted_message_allocates_only_its_stamped_payload() {
    // One test in this file: the count is the whole process's.
    let content = "x".repeat(100);
    let usual = format!(r#"{{"type":"CHAT","fromId":17,"toId":42,"content":"{content}"}}"#);
    assert_eq!(allocations(Kind::Chat, &usual), 1, "{usual}");
    let spaced = format!(
        " {{ \"toId\" : \"42\", \"type\":\"GROUPCHAT\",\n\"fromId\":\"17\", \"content\":\"{content}\" }}\n"
    );
    assert_eq!(allocations(Kind::GroupChat, &spaced), 1, "{spaced}");
    let extras = format!(
        r#"{{"type":"CHAT","fromId":17,"toId":42,"content":"{content}","sentAt":1795000000000,"attachments":["https://example.org/a.png"],"size":{{"w":640,"h":480}},"reply":null,"e1":1,"e2":2,"e3":3,"e4":4,"e5":5,"e6":6,"e7":7,"e8":8,"e9":9,"e10":10,"e11":11,"e12":12}}"#
    );
    assert_eq!(allocations(Kind::Chat, &extras), 1, "{extras}");
    // (A value nested two deep or more, `[[1]]`, costs serde_json one allocation more
    // while it skips it: the stack of the arrays and objects it is in.)
    // The sender's own id is handed over as a `String`: that one allocation more.
    let with_id = format!(
        r#"{{"type":"CHAT","fromId":17,"toId":42,"content":"{content}","clientMsgId":"c-1"}}"#
    );
    assert_eq!(allocations(Kind::Chat, &with_id), 2, "{with_id}");
}
