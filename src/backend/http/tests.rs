use super::*;

#[test]
fn form_bodies_escape_every_value_and_keep_auth_plugs_order() {
    let extra = vec![("domain".to_string(), "a b&c".to_string())];
    let f = fields("al&ice=", "p@ss w/ord%", "a/+/#", 4, "id&x=1", &extra);
    let (kind, body) = body(ParamsMode::Form, &f);
    assert_eq!(kind, "application/x-www-form-urlencoded");
    assert_eq!(
        body,
        "username=al%26ice%3D&password=p%40ss+w%2Ford%25&topic=a%2F%2B%2F%23&acc=4&\
         clientid=id%26x%3D1&domain=a+b%26c"
    );
}

#[test]
fn json_bodies_are_objects_with_a_numeric_acc() {
    let f = fields("u\"", "p", "", -1, "c", &[]);
    let (kind, body) = body(ParamsMode::Json, &f);
    assert_eq!(kind, "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["username"], "u\"");
    assert_eq!(v["acc"], -1);
    assert_eq!(v["clientid"], "c");
}

#[test]
fn verdicts_by_mode() {
    use ResponseMode::*;
    assert_eq!(verdict(Status, 200, ""), Answer::Allow);
    assert_eq!(verdict(Status, 204, ""), Answer::Allow);
    assert_eq!(verdict(Status, 403, ""), Answer::Refuse);
    assert_eq!(verdict(Status, 302, ""), Answer::Refuse);
    assert!(matches!(verdict(Status, 503, ""), Answer::Error(_)));
    assert_eq!(verdict(Json, 200, r#"{"ok":true}"#), Answer::Allow);
    assert_eq!(
        verdict(Json, 200, r#"{"ok":false,"error":"x"}"#),
        Answer::Refuse
    );
    assert_eq!(verdict(Json, 200, "ok"), Answer::Refuse);
    assert_eq!(verdict(Json, 201, r#"{"ok":true}"#), Answer::Refuse);
    assert_eq!(verdict(Text, 200, "ok\n"), Answer::Allow);
    assert_eq!(verdict(Text, 200, "okay"), Answer::Refuse);
    assert!(matches!(verdict(Text, 500, "ok"), Answer::Error(_)));
}

#[test]
fn pauses_double_up_to_thirty_seconds_and_end_on_success() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    assert_eq!(b.pausing(t0), None);
    assert_eq!(b.failed(t0), Duration::from_secs(1));
    assert!(b.pausing(t0 + Duration::from_millis(999)).is_some());
    assert_eq!(b.pausing(t0 + Duration::from_secs(1)), None);
    let pauses: Vec<u64> = (0..7).map(|_| b.failed(t0).as_secs()).collect();
    assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30]);
    assert!(b.succeeded());
    assert!(!b.succeeded());
    assert_eq!(b.failed(t0), Duration::from_secs(1));
}

#[test]
fn pauses_are_per_user_and_bounded() {
    let t0 = Instant::now();
    let mut pauses = Pauses::new(3);
    assert_eq!(pauses.failed(1, t0), Duration::from_secs(1));
    assert!(pauses.pausing(1, t0).is_some());
    assert_eq!(
        pauses.pausing(2, t0),
        None,
        "another user is asked as usual"
    );
    assert_eq!(pauses.failed(1, t0), Duration::from_secs(2), "doubling");
    assert!(pauses.succeeded(1));
    assert_eq!(pauses.pausing(1, t0), None);
    assert!(!pauses.succeeded(1));
    assert_eq!(
        pauses.failed(1, t0),
        Duration::from_secs(1),
        "from 1 s again"
    );
    // Full: a pause that ended long ago goes first, then the one that ends soonest.
    pauses.failed(2, t0 + Duration::from_secs(25));
    pauses.failed(3, t0 + Duration::from_secs(26));
    let later = t0 + Duration::from_secs(40);
    pauses.failed(4, later);
    assert_eq!(pauses.len(), 3);
    assert_eq!(pauses.pausing(1, t0), None, "ended 39 s before: forgotten");
    pauses.failed(5, later);
    assert_eq!(pauses.len(), 3);
    assert_eq!(
        pauses.pausing(2, t0 + Duration::from_secs(25)),
        None,
        "ended soonest"
    );
    assert!(pauses.pausing(3, t0 + Duration::from_secs(26)).is_some());
    assert!(pauses.pausing(4, later).is_some() && pauses.pausing(5, later).is_some());
}

#[test]
fn the_service_is_left_alone_only_when_unreachable_for_several_users() {
    let t0 = Instant::now();
    let mut breaker = Breaker::default();
    // One user's questions fail, again and again: nobody else is concerned.
    for _ in 0..10 {
        assert_eq!(breaker.unreachable(7, t0), None);
    }
    assert_eq!(breaker.unreachable(8, t0), None);
    // An answer between (a 5xx too) starts the count again.
    assert!(!breaker.answered());
    assert_eq!(breaker.unreachable(9, t0), None);
    assert_eq!(breaker.unreachable(10, t0), None);
    assert_eq!(breaker.pausing(t0), None);
    assert_eq!(breaker.unreachable(11, t0), Some(Duration::from_secs(1)));
    assert!(breaker.pausing(t0).is_some());
    // The first question after the pause fails too: the next pause at once, doubled.
    let after = t0 + Duration::from_secs(1);
    assert_eq!(breaker.pausing(after), None);
    assert_eq!(breaker.unreachable(12, after), Some(Duration::from_secs(2)));
    assert!(breaker.answered(), "it had been left alone");
    assert_eq!(breaker.unreachable(13, after), None);
}

#[test]
fn answers_are_fixed_size_bounded_and_pushed_out_oldest_first() {
    let t0 = Instant::now();
    let keys = Keys::default();
    let key = |n: usize| keys.key(&[b"acl", n.to_string().as_bytes()]);
    // A 64 KiB topic costs what a short one does.
    assert_eq!(
        size_of_val(&keys.key(&[&[b't'; 65_536]])),
        size_of_val(&key(1))
    );
    assert_ne!(key(1), key(2));
    assert_ne!(keys.key(&[b"ab", b"c"]), keys.key(&[b"a", b"bc"]));
    let mut cache = AnswerCache::new(
        Some(Duration::from_secs(10)),
        3 * AnswerCache::ENTRY_BYTES,
        t0,
    );
    assert_eq!(cache.capacity(), 3);
    for n in 0..3 {
        cache.put(key(n), n % 2 == 0, t0);
    }
    assert_eq!(cache.get(&key(0), t0), Some(Cached::Fresh(true)));
    assert_eq!(cache.get(&key(1), t0), Some(Cached::Fresh(false)));
    // Full: the oldest goes, one at a time, never all.
    cache.put(key(3), true, t0 + Duration::from_secs(1));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&key(0), t0), None);
    assert!(cache.get(&key(1), t0).is_some());
    // Put again: it is the newest, so the next to go is key 2.
    cache.put(key(1), true, t0 + Duration::from_secs(2));
    cache.put(key(4), true, t0 + Duration::from_secs(2));
    assert_eq!(cache.get(&key(2), t0), None);
    assert_eq!(cache.get(&key(1), t0), Some(Cached::Fresh(true)));
    // Expired answers are not handed out, and go ahead of their turn.
    assert_eq!(cache.get(&key(3), t0 + Duration::from_secs(11)), None);
    cache.put(key(5), false, t0 + Duration::from_secs(11));
    assert_eq!(cache.len(), 3, "key 3 made room, not key 1 or 4");
    assert!(cache.get(&key(4), t0 + Duration::from_secs(11)).is_some());
    // Many puts of the same keys keep the bookkeeping bounded too.
    for n in 0..10_000 {
        cache.put(key(n % 5), true, t0 + Duration::from_secs(11));
    }
    assert!(cache.order.len() <= 2 * cache.capacity());
    let mut off = AnswerCache::new(Some(Duration::ZERO), 1 << 20, t0);
    off.put(key(1), true, t0);
    assert!(off.is_empty());
}

#[test]
fn acl_answers_are_kept_per_client_user_topic_and_access() {
    let keys = Keys::default();
    let key = |client: &[u8], user: &str, topic: &str, access| {
        acl_key(&keys, client, user, topic, access)
    };
    let alice = key(b"c1", "alice", "t", Access::Read);
    assert_eq!(alice, key(b"c1", "alice", "t", Access::Read));
    for other in [
        key(b"c1", "alice", "t", Access::Write),
        key(b"c2", "alice", "t", Access::Read),
        // Another user taking the client id asks again.
        key(b"c1", "mallory", "t", Access::Read),
        key(b"c1", "alice", "t/x", Access::Read),
        key(b"c1a", "lice", "t", Access::Read),
    ] {
        assert_ne!(alice, other);
    }
}

#[test]
fn a_reload_makes_answers_stale_once_and_keeps_them() {
    let t0 = Instant::now();
    let keys = Keys::default();
    let mut cache = AnswerCache::new(None, 1 << 20, t0);
    let (a, b) = (keys.key(&[b"a"]), keys.key(&[b"b"]));
    cache.put(a, true, t0);
    cache.put(b, false, t0);
    cache.reload();
    let later = t0 + Duration::from_secs(86_400 * 30);
    assert_eq!(
        cache.get(&a, later),
        Some(Cached::Stale(true)),
        "kept, never expires"
    );
    assert_eq!(
        cache.get(&a, later),
        Some(Cached::Fresh(true)),
        "asked again once per reload"
    );
    // The fresh answer replaces it.
    cache.put(b, true, later);
    assert_eq!(cache.get(&b, later), Some(Cached::Fresh(true)));
    cache.reload();
    assert_eq!(cache.get(&b, later), Some(Cached::Stale(true)));
}
