use super::*;
use crate::acl::{Access, Patterns};
use crate::auth::Identity;
use crate::cluster;

const REFRESH: Duration = Duration::from_secs(60);
const CONNECT: LoginKind = LoginKind::Connect {
    persistent: false,
    cached: false,
};
const PERSISTENT: LoginKind = LoginKind::Connect {
    persistent: true,
    cached: false,
};

fn registry_with(caps: OfflineCaps) -> Registry {
    let chat = ChatTopics::new("/users/{id}/messages", "/groups/{id}/messages").unwrap();
    Registry::new(Some(chat), REFRESH, caps)
}

fn registry() -> Registry {
    registry_with(OfflineCaps {
        total: 3,
        per_user: 3,
    })
}

fn identity(username: &str, user_id: &str) -> Identity {
    Identity {
        username: username.into(),
        user_id: user_id.into(),
        superuser: false,
        proof: None,
        backend: Default::default(),
        relay: false,
    }
}

fn rules(user_id: &str, groups: &[&str]) -> RuleSet {
    RuleSet {
        user_id: user_id.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        rows: Patterns::default(),
    }
}

fn no_load() -> Result<RuleSet, BackendError> {
    panic!("rules should have been reused")
}

/// A context the broker restored from its persistence file (no address).
struct Restored(&'static str);

impl ClientFacts for Restored {
    fn address(&self) -> Option<String> {
        None
    }
    fn username(&self) -> Option<String> {
        Some(self.0.into())
    }
    fn clean_session(&self) -> bool {
        false
    }
    fn has_certificate(&self) -> bool {
        false
    }
}

/// A live connection; `Live(true)` presented a TLS certificate.
struct Live(bool);

impl ClientFacts for Live {
    fn address(&self) -> Option<String> {
        Some("127.0.0.1".into())
    }
    fn username(&self) -> Option<String> {
        Some("cert-user".into())
    }
    fn clean_session(&self) -> bool {
        false
    }
    fn has_certificate(&self) -> bool {
        self.0
    }
}

impl Registry {
    fn ok(&mut self, id: &[u8], pointer: usize, access: Access, topic: &str) -> bool {
        self.check(Connection::new(id, pointer), access, topic, false, &NoFacts)
            .expect("not waiting for rules")
    }

    fn decided(
        &mut self,
        id: &[u8],
        pointer: usize,
        access: Access,
        topic: &str,
        retain: bool,
        facts: &dyn ClientFacts,
    ) -> bool {
        self.check(Connection::new(id, pointer), access, topic, retain, facts)
            .expect("not waiting for rules")
    }

    /// A login whose first rules load (a user's first login) is done now with `load`, as
    /// the background thread would before the client's first check; a warm login's load
    /// waits for `deliver_urgent`. `Err`: the load failed (the login stands).
    fn login_loaded(
        &mut self,
        id: &[u8],
        pointer: usize,
        kind: LoginKind,
        identity: &Identity,
        now: Instant,
        load: impl FnOnce() -> Result<RuleSet, BackendError>,
    ) -> Result<(), BackendError> {
        let pending = self.urgent_jobs();
        let held = self
            .users
            .get(identity.username.as_str())
            .is_some_and(|e| *e.rules.user_id == *identity.user_id);
        self.login(Connection::new(id, pointer), kind, identity, now);
        let mut jobs = self.urgent_jobs();
        self.urgent = pending;
        if held {
            self.urgent.append(&mut jobs);
            return Ok(());
        }
        let Some(job) = jobs.pop() else {
            return Ok(());
        };
        let result = load();
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.apply(Loaded { job, result }, now);
        outcome
    }

    /// Applies the loads logins asked for, as the background threads would.
    fn deliver_urgent(&mut self, rules: RuleSet) {
        self.apply_urgent(Instant::now(), |_| Ok(rules.clone()));
    }
}

#[test]
fn checks_are_per_client_and_rules_load_at_every_connect() {
    let mut reg = registry();
    let now = Instant::now();
    let alice = identity("alice", "1");
    reg.login_loaded(b"phone", 10, CONNECT, &alice, now, || {
        Ok(rules("1", &["7"]))
    })
    .unwrap();
    // A second client of the user is let in at once; its first check waits for the
    // rules its login asked for: a group granted in between counts for it, and for the
    // first client too (the rules are the user's).
    reg.login_loaded(b"laptop", 11, CONNECT, &alice, now, no_load)
        .unwrap();
    assert_eq!(
        reg.check(
            Connection::new(b"laptop", 11),
            Access::Write,
            "/groups/8/messages",
            false,
            &NoFacts
        ),
        Err(Pending::Rules)
    );
    assert!(
        reg.ok(b"phone", 10, Access::Write, "/groups/7/messages"),
        "not waiting"
    );
    reg.deliver_urgent(rules("1", &["7", "8"]));
    assert_eq!(reg.stats().users, 1);
    assert!(reg.ok(b"phone", 10, Access::Subscribe, "/users/1/messages"));
    assert!(reg.ok(b"laptop", 11, Access::Write, "/groups/7/messages"));
    assert!(reg.ok(b"phone", 10, Access::Write, "/groups/8/messages"));
    assert!(!reg.ok(b"laptop", 11, Access::Read, "/users/2/messages"));
    // A stale pointer (the connection whose id was taken over) gets nothing.
    assert!(!reg.ok(b"phone", 99, Access::Read, "/users/1/messages"));
    assert!(!reg.ok(b"stranger", 12, Access::Read, "/users/1/messages"));
}

#[test]
fn bridge_accounts_relay_the_chat_topics_and_alone_carry_cluster_commands() {
    let mut reg = registry();
    let now = Instant::now();
    let bridge = Identity {
        relay: true,
        ..identity("bridge-b", "bridge-b")
    };
    reg.login_loaded(b"br", 1, CONNECT, &bridge, now, || {
        Ok(rules("bridge-b", &[]))
    })
    .unwrap();
    let mut everything = rules("2", &[]);
    everything.rows.read = vec!["#".into()];
    everything.rows.write = vec!["#".into()];
    everything.rows.subscribe = vec!["#".into()];
    reg.login_loaded(b"bob", 2, CONNECT, &identity("bob", "2"), now, || {
        Ok(everything)
    })
    .unwrap();
    for (access, topic) in [
        (Access::Subscribe, "/users/+/messages"),
        (Access::Subscribe, "/groups/+/messages"),
        (Access::Subscribe, "/users/7/messages"),
        (Access::Write, "/users/7/messages"),
        (Access::Read, "/groups/3/messages"),
        (Access::Subscribe, cluster::TOPIC),
        (Access::Write, cluster::TOPIC),
    ] {
        assert!(reg.ok(b"br", 1, access, topic), "{access:?} {topic}");
    }
    for (access, topic) in [
        (Access::Subscribe, "/users/#"),
        (Access::Subscribe, "#"),
        (Access::Write, "elsewhere"),
    ] {
        assert!(!reg.ok(b"br", 1, access, topic), "{access:?} {topic}");
    }
    assert_eq!(
        reg.author(Connection::new(b"br", 1), &NoFacts),
        Author::Relay
    );
    // A `#` row grants bob everything but the cluster topic, his will included.
    assert!(reg.ok(b"bob", 2, Access::Write, "elsewhere"));
    assert!(!reg.ok(b"bob", 2, Access::Write, cluster::TOPIC));
    assert!(!reg.ok(b"bob", 2, Access::Read, cluster::TOPIC));
    assert_eq!(
        reg.author(Connection::new(b"bob", 2), &NoFacts),
        Author::User("2")
    );
    reg.disconnect(Connection::new(b"bob", 2), true);
    assert!(
        !reg.ok(b"bob", 2, Access::Write, cluster::TOPIC),
        "bob's will"
    );
    // The service's users are never bridge accounts, whatever the identity says.
    let service_user = Identity {
        relay: true,
        backend: BackendKind::Http,
        ..identity("bridge-h", "bridge-h")
    };
    reg.login(Connection::new(b"h", 3), CONNECT, &service_user, now);
    assert_eq!(
        reg.author(Connection::new(b"h", 3), &NoFacts),
        Author::Unknown
    );
    assert!(!reg.ok(b"h", 3, Access::Subscribe, "/users/+/messages"));
    assert!(!reg.ok(b"h", 3, Access::Write, cluster::TOPIC));
    // Nor are their sessions ended by a MySQL row that is not there.
    assert!(reg.user_checked("bridge-h", None).is_empty());
    assert_eq!(
        reg.author(Connection::new(b"h", 3), &NoFacts),
        Author::Unknown
    );
    // A client id without a session is this broker's own bridge only when its context has
    // no peer address; an anonymous client or one another plugin let in has one.
    assert_eq!(
        reg.author(Connection::new(b"nobody", 9), &NoFacts),
        Author::OwnBridge
    );
    assert_eq!(
        reg.author(Connection::new(b"nobody", 9), &Live(false)),
        Author::Unknown
    );
    assert_eq!(reg.stats().online, 2);
}

#[test]
fn a_will_before_the_first_check_waits_for_the_logins_rules() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login(
        Connection::new(b"d", 4),
        CONNECT,
        &identity("dave", "4"),
        now,
    );
    reg.disconnect(Connection::new(b"d", 4), true);
    let will = |reg: &mut Registry| {
        reg.check(
            Connection::new(b"d", 4),
            Access::Write,
            "status/dave",
            false,
            &NoFacts,
        )
    };
    assert_eq!(will(&mut reg), Err(Pending::Rules));
    assert_eq!(
        will(&mut reg),
        Err(Pending::Rules),
        "asked again, still the will"
    );
    // A user row read again meanwhile (after a SIGHUP) does not end the wait.
    assert!(reg.user_checked("someone-else", None).is_empty());
    let job = reg.urgent_jobs().pop().expect("a load was asked for");
    let mut loaded = rules("4", &[]);
    loaded.rows.write = vec!["status/%u".into()];
    reg.apply(
        Loaded {
            job,
            result: Ok(loaded),
        },
        now,
    );
    assert_eq!(
        will(&mut reg),
        Ok(true),
        "judged by the rows the login loaded"
    );
    assert_eq!(
        will(&mut reg),
        Ok(false),
        "only the will right after the DISCONNECT"
    );
}

#[test]
fn a_first_login_waits_for_its_rules_and_a_failed_load_grants_no_group() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login(
        Connection::new(b"c", 1),
        CONNECT,
        &identity("bob", "2"),
        now,
    );
    assert_eq!(
        reg.check(
            Connection::new(b"c", 1),
            Access::Read,
            "/users/2/messages",
            false,
            &NoFacts
        ),
        Err(Pending::Rules),
        "the first check waits for the load the login asked for"
    );
    let job = reg.urgent_jobs().pop().expect("a load was asked for");
    reg.apply(
        Loaded {
            job,
            result: Err(BackendError::Unavailable("down".into())),
        },
        now,
    );
    assert!(
        reg.ok(b"c", 1, Access::Read, "/users/2/messages"),
        "own inbox"
    );
    assert!(!reg.ok(b"c", 1, Access::Read, "/groups/7/messages"));
    assert!(!reg.ok(b"c", 1, Access::Read, "/users/3/messages"));
}

#[test]
fn clean_disconnect_empties_the_state_once_rules_are_due() {
    let mut reg = registry();
    let now = Instant::now();
    for i in 0..1000u32 {
        let user = format!("u{i}");
        reg.login_loaded(
            format!("c{i}").as_bytes(),
            i as usize + 1,
            CONNECT,
            &identity(&user, &i.to_string()),
            now,
            || Ok(rules(&i.to_string(), &[])),
        )
        .unwrap();
    }
    assert_eq!(reg.stats().sessions, 1000);
    for i in 0..1000u32 {
        reg.disconnect(
            Connection::new(format!("c{i}").as_bytes(), i as usize + 1),
            true,
        );
    }
    assert_eq!(reg.stats().sessions, 0);
    assert_eq!(reg.stats().users, 1000, "kept until due");
    assert!(reg.due_jobs(now + REFRESH).is_empty());
    assert_eq!(reg.stats().users, 0);
    assert!(reg.due.is_empty());
}

#[test]
fn offline_sessions_only_receive() {
    let mut reg = registry();
    let now = Instant::now();
    let alice = identity("alice", "1");
    reg.login_loaded(b"alice-phone", 5, PERSISTENT, &alice, now, || {
        Ok(rules("1", &["7"]))
    })
    .unwrap();
    reg.disconnect(Connection::new(b"alice-phone", 5), false);
    assert_eq!(reg.stats().offline, 1);
    // Messages queued while offline are still judged by the rules...
    assert!(reg.ok(b"alice-phone", 5, Access::Read, "/users/1/messages"));
    // ...but nothing is written in its name (a delayed will, say).
    reg.event();
    assert!(!reg.ok(b"alice-phone", 5, Access::Write, "/users/2/messages"));
    assert!(!reg.ok(b"alice-phone", 5, Access::Write, "status/alice"));
    assert_eq!(reg.stats().offline, 1);
    // A SUBSCRIBE comes from a live connection at a dead session's address: forgotten.
    assert!(!reg.ok(b"alice-phone", 5, Access::Subscribe, "/users/1/messages"));
    assert_eq!(reg.stats().offline, 0);
    assert!(!reg.ok(b"alice-phone", 5, Access::Read, "/users/1/messages"));
}

#[test]
fn the_will_right_after_a_disconnect_is_judged_once_and_never_on_chat_topics() {
    let mut reg = registry();
    let now = Instant::now();
    let mut loaded = rules("1", &["7"]);
    loaded.rows.write = vec!["status/%u".into()];
    for (id, pointer, kind) in [(b"clean", 5, CONNECT), (b"keeps", 6, PERSISTENT)] {
        reg.login_loaded(id, pointer, kind, &identity("alice", "1"), now, || {
            Ok(loaded.clone())
        })
        .unwrap();
        reg.disconnect(Connection::new(id, pointer), false);
        assert!(!reg.ok(id, pointer, Access::Write, "/users/2/messages"));
        reg.disconnect(Connection::new(id, pointer), false);
        reg.login_loaded(id, pointer, kind, &identity("alice", "1"), now, || {
            Ok(loaded.clone())
        })
        .unwrap();
        reg.disconnect(Connection::new(id, pointer), false);
        // The will waits for the rules this login asked for.
        assert_eq!(
            reg.check(
                Connection::new(id, pointer),
                Access::Write,
                "status/alice",
                false,
                &NoFacts
            ),
            Err(Pending::Rules)
        );
        reg.deliver_urgent(loaded.clone());
        assert!(reg.ok(id, pointer, Access::Write, "status/alice"));
        assert!(
            !reg.ok(id, pointer, Access::Write, "status/alice"),
            "only the one check right after the DISCONNECT"
        );
    }
    reg.login_loaded(b"x", 9, CONNECT, &identity("alice", "1"), now, || {
        Ok(loaded.clone())
    })
    .unwrap();
    reg.disconnect(Connection::new(b"x", 9), true);
    reg.event();
    assert!(
        !reg.ok(b"x", 9, Access::Write, "status/alice"),
        "not after another event"
    );
}

#[test]
fn offline_rules_refresh_only_when_a_delivery_finds_them_due() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(b"p", 5, PERSISTENT, &identity("alice", "1"), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    reg.disconnect(Connection::new(b"p", 5), false);
    // A session the broker may have discarded costs MySQL nothing on a timer.
    assert!(reg.due_jobs(now + REFRESH).is_empty());
    assert!(reg.due_jobs(now + 10 * REFRESH).is_empty());
    // A delivery proves it alive: its rules are refreshed once.
    assert!(reg.ok(b"p", 5, Access::Read, "/users/1/messages"));
    assert!(reg.ok(b"p", 5, Access::Read, "/users/1/messages"));
    let jobs = reg.due_jobs(now + 10 * REFRESH);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].username, "alice");
}

#[test]
fn reconnecting_makes_a_persistent_session_online_again() {
    let mut reg = registry();
    let now = Instant::now();
    let alice = identity("alice", "1");
    reg.login_loaded(b"p", 5, PERSISTENT, &alice, now, || Ok(rules("1", &[])))
        .unwrap();
    reg.disconnect(Connection::new(b"p", 5), false);
    // A recheck (SIGHUP) of the offline session keeps it offline, without a load.
    reg.login_loaded(b"p", 5, LoginKind::Recheck, &alice, now, no_load)
        .unwrap();
    assert_eq!((reg.stats().online, reg.stats().offline), (0, 1));
    // A CONNECT is a new connection, even at a reused address.
    reg.login_loaded(b"p", 5, PERSISTENT, &alice, now, no_load)
        .unwrap();
    reg.deliver_urgent(rules("1", &[]));
    assert_eq!((reg.stats().online, reg.stats().offline), (1, 0));
    assert!(reg.ok(b"p", 5, Access::Write, "/users/2/messages"));
}

#[test]
fn a_clean_session_flag_never_keeps_a_session() {
    let mut reg = registry();
    let now = Instant::now();
    // Logged in with a clean session: even a DISCONNECT saying otherwise ends it.
    reg.login_loaded(b"c", 5, CONNECT, &identity("alice", "1"), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    reg.disconnect(Connection::new(b"c", 5), false);
    assert_eq!(reg.stats().sessions, 0);
}

#[test]
fn offline_sessions_are_capped_per_user_then_overall() {
    let mut reg = registry_with(OfflineCaps {
        total: 4,
        per_user: 2,
    });
    let now = Instant::now();
    // One account with many client ids pushes out only its own sessions.
    for i in 0..5usize {
        let id = format!("m{i}");
        reg.login_loaded(
            id.as_bytes(),
            100 + i,
            PERSISTENT,
            &identity("mallory", "9"),
            now,
            || Ok(rules("9", &[])),
        )
        .unwrap();
        reg.disconnect(Connection::new(id.as_bytes(), 100 + i), false);
        reg.deliver_urgent(rules("9", &[]));
    }
    assert_eq!(reg.stats().offline, 2);
    assert!(!reg.ok(b"m2", 102, Access::Read, "/users/9/messages"));
    assert!(reg.ok(b"m4", 104, Access::Read, "/users/9/messages"));
    for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
        let id = format!("{user}-phone");
        reg.login_loaded(
            id.as_bytes(),
            200 + i,
            PERSISTENT,
            &identity(user, user),
            now,
            || Ok(rules(user, &[])),
        )
        .unwrap();
        reg.disconnect(Connection::new(id.as_bytes(), 200 + i), false);
    }
    // Over the total of 4: the oldest overall (mallory's m3) went first.
    assert_eq!(reg.stats().offline, 4);
    assert!(!reg.ok(b"m3", 103, Access::Read, "/users/9/messages"));
    assert!(reg.ok(b"a-phone", 200, Access::Read, "/users/a/messages"));
}

#[test]
fn take_over_keeps_the_newcomer() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(
        b"shared-id",
        1,
        CONNECT,
        &identity("alice", "1"),
        now,
        || Ok(rules("1", &[])),
    )
    .unwrap();
    reg.login_loaded(b"shared-id", 2, CONNECT, &identity("bob", "2"), now, || {
        Ok(rules("2", &[]))
    })
    .unwrap();
    // The old connection's DISCONNECT arrives after the newcomer's login.
    reg.disconnect(Connection::new(b"shared-id", 1), true);
    assert!(reg.ok(b"shared-id", 2, Access::Read, "/users/2/messages"));
    assert!(!reg.ok(b"shared-id", 1, Access::Read, "/users/1/messages"));
    assert_eq!(reg.stats().sessions, 1);
}

#[test]
fn a_refused_or_deferred_login_ends_a_dead_session_at_its_address() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(b"id", 7, PERSISTENT, &identity("alice", "1"), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    // A live session of the id at another address stays.
    reg.refused(Connection::new(b"id", 8));
    assert_eq!(reg.stats().sessions, 1);
    reg.disconnect(Connection::new(b"id", 7), false);
    // An anonymous client at the reused address of the offline session.
    reg.refused(Connection::new(b"id", 7));
    assert_eq!(reg.stats().sessions, 0);
}

#[test]
fn wills_and_retained_messages_on_chat_topics_never_reach_anyone() {
    let mut reg = registry();
    let now = Instant::now();
    let root = Identity {
        superuser: true,
        ..identity("root", "0")
    };
    reg.login_loaded(b"root", 1, CONNECT, &root, now, no_load)
        .unwrap();
    reg.login_loaded(b"bob", 2, CONNECT, &identity("bob", "2"), now, || {
        Ok(rules("2", &[]))
    })
    .unwrap();
    reg.login_loaded(b"eve", 3, CONNECT, &identity("eve", "3"), now, || {
        Ok(rules("3", &[]))
    })
    .unwrap();
    // A PUBLISH: WRITE, then MESSAGE (`event`), then the deliveries.
    assert!(reg.ok(b"eve", 3, Access::Write, "/users/2/messages"));
    reg.event();
    assert!(reg.ok(b"bob", 2, Access::Read, "/users/2/messages"));
    assert!(reg.ok(b"root", 1, Access::Read, "/users/2/messages"));
    // A will of a still-online session (a take-over by a certificate client, or the
    // broker shutting down): WRITE, then straight to the deliveries.
    assert!(reg.ok(b"eve", 3, Access::Write, "/users/2/messages"));
    assert!(!reg.ok(b"bob", 2, Access::Read, "/users/2/messages"));
    assert!(!reg.ok(b"root", 1, Access::Read, "/users/2/messages"));
    assert_eq!(reg.stats().unvalidated_refused, 2);
    // Other topics and later events are not affected.
    assert!(reg.ok(b"root", 1, Access::Read, "status/eve"));
    reg.event();
    assert!(reg.ok(b"bob", 2, Access::Read, "/users/2/messages"));
    // A retained chat message (from before the plugin) is never delivered.
    assert!(!reg.decided(b"bob", 2, Access::Read, "/users/2/messages", true, &NoFacts));
    assert!(!reg.decided(
        b"root",
        1,
        Access::Read,
        "/users/2/messages",
        true,
        &NoFacts
    ));
    assert!(reg.decided(b"root", 1, Access::Read, "status/x", true, &NoFacts));
}

#[test]
fn restored_sessions_bind_to_the_restored_context_only() {
    let mut reg = registry();
    let now = Instant::now();
    let jobs = reg.restore(
        vec![
            SavedSession {
                client_id: "alice-phone".into(),
                username: "alice".into(),
                user_id: "1".into(),
                superuser: false,
                backend: Default::default(),
                relay: false,
            },
            SavedSession {
                client_id: "alice-tablet".into(),
                username: "alice".into(),
                user_id: "1".into(),
                superuser: false,
                backend: Default::default(),
                relay: false,
            },
        ],
        now,
    );
    assert_eq!(jobs.len(), 1, "one load per user");
    assert_eq!(reg.stats().restored, 2);
    // Before the rules arrive: the identity (its inbox), no group.
    assert!(!reg.decided(
        b"alice-phone",
        50,
        Access::Read,
        "/users/1/messages",
        false,
        &Live(false)
    ));
    assert!(!reg.decided(
        b"alice-phone",
        50,
        Access::Read,
        "/users/1/messages",
        false,
        &Restored("mallory")
    ));
    // Its first check waits for the restore's load, as a login's first check does...
    assert_eq!(
        reg.check(
            Connection::new(b"alice-phone", 50),
            Access::Read,
            "/users/1/messages",
            false,
            &Restored("alice")
        ),
        Err(Pending::Rules)
    );
    // ...and, when it does not come in time, is decided by the identity (its inbox).
    reg.stop_waiting(Connection::new(b"alice-phone", 50));
    assert!(reg.decided(
        b"alice-phone",
        50,
        Access::Read,
        "/users/1/messages",
        false,
        &Restored("alice")
    ));
    assert_eq!(reg.stats().restored, 1);
    reg.apply(
        Loaded {
            job: jobs[0].clone(),
            result: Ok(rules("1", &["7"])),
        },
        now,
    );
    assert!(reg.ok(b"alice-phone", 50, Access::Read, "/groups/7/messages"));
    // Only deliveries: a live client reaching an unbound session gets nothing.
    assert!(!reg.decided(
        b"alice-tablet",
        51,
        Access::Subscribe,
        "/users/1/messages",
        false,
        &Live(false)
    ));
    let saved = reg.persistent_sessions(true).unwrap();
    assert_eq!(saved.len(), 2);
}

#[test]
fn certificate_clients_log_in_again_when_they_resume_a_session() {
    let mut reg = registry();
    let now = Instant::now();
    let inbox = "/users/5/messages";
    let cert = identity("cert-user", "5");
    let check = |reg: &mut Registry, pointer, access, facts: &dyn ClientFacts| {
        reg.check(
            Connection::new(b"cam", pointer),
            access,
            inbox,
            false,
            facts,
        )
    };
    assert_eq!(
        check(&mut reg, 10, Access::Subscribe, &Live(true)),
        Err(Pending::CertificateLogin)
    );
    reg.login_loaded(b"cam", 10, PERSISTENT, &cert, now, || Ok(rules("5", &[])))
        .unwrap();
    assert_eq!(
        check(&mut reg, 10, Access::Subscribe, &Live(true)),
        Ok(true)
    );
    reg.disconnect(Connection::new(b"cam", 10), false);
    // The offline session's own deliveries and wills (no certificate once disconnected).
    assert_eq!(check(&mut reg, 10, Access::Read, &NoFacts), Ok(true));
    assert_eq!(check(&mut reg, 10, Access::Write, &NoFacts), Ok(false));
    // Back at another address, or at the same one: logged in again, not refused.
    assert_eq!(
        check(&mut reg, 20, Access::Subscribe, &Live(true)),
        Err(Pending::CertificateLogin)
    );
    assert_eq!(
        check(&mut reg, 10, Access::Write, &Live(true)),
        Err(Pending::CertificateLogin)
    );
    // Without a certificate, an unbound address gets nothing.
    assert_eq!(
        check(&mut reg, 20, Access::Subscribe, &Live(false)),
        Ok(false)
    );
    reg.login_loaded(b"cam", 20, PERSISTENT, &cert, now, no_load)
        .unwrap();
    reg.deliver_urgent(rules("5", &[]));
    assert_eq!(check(&mut reg, 20, Access::Write, &Live(true)), Ok(true));
    assert_eq!(reg.stats().offline, 0);

    // A refused certificate connection is not looked up again, until it comes back.
    reg.certificate_refused(Connection::new(b"other", 30));
    let other = |reg: &mut Registry| {
        reg.check(
            Connection::new(b"other", 30),
            Access::Subscribe,
            inbox,
            false,
            &Live(true),
        )
    };
    assert_eq!(other(&mut reg), Ok(false));
    reg.disconnect(Connection::new(b"other", 30), true);
    assert_eq!(other(&mut reg), Err(Pending::CertificateLogin));
}

fn alice_again() -> Identity {
    Identity {
        proof: Some(Proof {
            password: [1; 16],
            stored_hash: [1; 8],
        }),
        ..identity("alice", "1")
    }
}

#[test]
fn a_superuser_no_longer_one_in_its_row_logs_in_again() {
    let mut reg = registry();
    let root = Identity {
        superuser: true,
        ..alice_again()
    };
    reg.login_loaded(b"r", 1, CONNECT, &root, Instant::now(), no_load)
        .unwrap();
    let valid = |_: &Proof| true;
    assert!(reg.user_checked("alice", Some((&valid, true))).is_empty());
    assert_eq!(
        reg.user_checked("alice", Some((&valid, false))),
        [Box::from(&b"r"[..])]
    );
    assert!(!reg.is_superuser(Connection::new(b"r", 1)));
}

#[test]
fn a_changed_password_or_a_removed_user_ends_sessions() {
    let mut reg = registry();
    let now = Instant::now();
    let proof = |n: u8| Proof {
        password: [n; 16],
        stored_hash: [n; 8],
    };
    let mut alice = identity("alice", "1");
    alice.proof = Some(proof(1));
    reg.login_loaded(b"a1", 1, CONNECT, &alice, now, || Ok(rules("1", &[])))
        .unwrap();
    alice.proof = Some(proof(2));
    reg.login_loaded(b"a2", 2, PERSISTENT, &alice, now, || Ok(rules("1", &[])))
        .unwrap();
    reg.disconnect(Connection::new(b"a2", 2), false);
    let valid = |p: &Proof| p.stored_hash == [1; 8];
    let kicked = reg.user_checked("alice", Some((&valid, false)));
    assert!(kicked.is_empty(), "the offline one ends without a kick");
    assert_eq!(reg.stats().sessions, 1);
    // Made a superuser since: the client logs in again to be one.
    assert_eq!(reg.user_checked("alice", Some((&valid, true))).len(), 1);
    reg.login_loaded(b"a1", 1, CONNECT, &alice_again(), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    let kicked = reg.user_checked("alice", None);
    assert_eq!(kicked, vec![Box::<[u8]>::from(&b"a1"[..])]);
    assert_eq!(reg.stats().sessions, 0);
}

#[test]
fn an_offline_only_user_is_forgotten_once_its_last_session_goes() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(b"p", 5, PERSISTENT, &identity("alice", "1"), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    reg.disconnect(Connection::new(b"p", 5), false);
    // Due while only offline: no refresh, and out of the due queue.
    assert!(reg.due_jobs(now + REFRESH).is_empty());
    // A SUBSCRIBE at its place ends the session.
    assert!(!reg.ok(b"p", 5, Access::Subscribe, "/users/1/messages"));
    assert_eq!(reg.stats().users, 1);
    reg.due_jobs(now + 3 * REFRESH);
    assert_eq!(reg.stats().users, 0, "forgotten");
}

#[test]
fn a_refresh_for_an_earlier_identity_ends_without_blocking_the_next() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(b"a", 1, CONNECT, &identity("alice", "1"), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    let old = reg.due_jobs(now + REFRESH);
    assert_eq!(old.len(), 1);
    // The user's row now says another id; a new login loads for it.
    reg.login_loaded(b"b", 2, CONNECT, &identity("alice", "9"), now, || {
        Ok(rules("9", &[]))
    })
    .unwrap();
    let gone = reg.apply(
        Loaded {
            job: old[0].clone(),
            result: Ok(rules("1", &["7"])),
        },
        now + REFRESH,
    );
    assert_eq!(gone, Applied::Gone);
    assert_eq!(reg.due_jobs(now + 3 * REFRESH).len(), 1, "refreshed again");
}

#[test]
fn refresh_swaps_rules_and_failure_keeps_them() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(b"c", 1, CONNECT, &identity("alice", "1"), now, || {
        Ok(rules("1", &["7"]))
    })
    .unwrap();
    let jobs = reg.due_jobs(now + REFRESH);
    assert_eq!(jobs.len(), 1);
    assert!(reg.due_jobs(now + REFRESH).is_empty(), "one job in flight");
    let failed = reg.apply(
        Loaded {
            job: jobs[0].clone(),
            result: Err(BackendError::Unavailable("down".into())),
        },
        now + REFRESH,
    );
    assert!(matches!(failed, Applied::Failed(_)));
    assert!(reg.ok(b"c", 1, Access::Write, "/groups/7/messages"));
    let retry = reg.due_jobs(now + REFRESH + RETRY_AFTER_FAILURE);
    assert_eq!(retry.len(), 1);
    let applied = reg.apply(
        Loaded {
            job: retry[0].clone(),
            result: Ok(rules("1", &["8"])),
        },
        now + REFRESH + RETRY_AFTER_FAILURE,
    );
    assert_eq!(applied, Applied::Refreshed { clients: 1 });
    assert!(!reg.ok(b"c", 1, Access::Write, "/groups/7/messages"));
    assert!(reg.ok(b"c", 1, Access::Write, "/groups/8/messages"));
    assert_eq!(reg.stats().refresh_failures, 1);
}

#[test]
fn patterns_are_expanded_per_client_and_follow_refreshes() {
    let mut reg = registry();
    let now = Instant::now();
    let mut loaded = rules("1", &[]);
    loaded.rows.write = vec!["devices/%c/out".into(), "users/%u/#".into()];
    let load = || Ok(loaded.clone());
    reg.login_loaded(b"dev1", 1, CONNECT, &identity("alice", "1"), now, load)
        .unwrap();
    reg.login_loaded(b"dev2", 2, CONNECT, &identity("alice", "1"), now, load)
        .unwrap();
    reg.deliver_urgent(loaded.clone());
    assert!(reg.ok(b"dev1", 1, Access::Write, "devices/dev1/out"));
    assert!(!reg.ok(b"dev1", 1, Access::Write, "devices/dev2/out"));
    assert!(reg.ok(b"dev2", 2, Access::Write, "devices/dev2/out"));
    assert!(reg.ok(b"dev2", 2, Access::Write, "users/alice/x"));
    let job = reg.refresh_user("alice", None).pop().unwrap();
    reg.apply(
        Loaded {
            job,
            result: Ok(rules("1", &[])),
        },
        now,
    );
    assert!(!reg.ok(b"dev1", 1, Access::Write, "devices/dev1/out"));
}

#[test]
fn kick_and_refresh_reach_every_spelling_of_a_name() {
    let mut reg = registry();
    let now = Instant::now();
    let load = || Ok(rules("503", &[]));
    for (client, spelling) in [(&b"phone"[..], "Steve"), (b"desk", "steve"), (b"x", "bob")] {
        reg.login_loaded(client, 1, CONNECT, &identity(spelling, "503"), now, load)
            .unwrap();
    }
    assert_eq!(reg.other_spellings("steve"), [Box::from(&b"phone"[..])]);
    let jobs = reg.refresh_user("steve", Some(Reply::to("admin", "r")));
    let asked: Vec<_> = jobs
        .iter()
        .map(|job| (job.username.as_str(), job.reply.is_some()))
        .collect();
    assert_eq!(asked, [("steve", true), ("Steve", false)]);
}

#[test]
fn superusers_need_no_rules() {
    let mut reg = registry();
    let root = Identity {
        superuser: true,
        ..identity("root", "0")
    };
    reg.login_loaded(b"admin", 1, CONNECT, &root, Instant::now(), no_load)
        .unwrap();
    assert!(reg.ok(b"admin", 1, Access::Subscribe, "#"));
    assert!(reg.is_superuser(Connection::new(b"admin", 1)));
    assert_eq!(reg.stats().users, 0);
}

#[test]
fn reload_refreshes_connected_users_and_forgets_the_rest() {
    let mut reg = registry();
    let now = Instant::now();
    reg.login_loaded(b"a", 1, CONNECT, &identity("alice", "1"), now, || {
        Ok(rules("1", &[]))
    })
    .unwrap();
    reg.login_loaded(b"b", 2, CONNECT, &identity("bob", "2"), now, || {
        Ok(rules("2", &[]))
    })
    .unwrap();
    reg.disconnect(Connection::new(b"b", 2), true);
    let jobs = reg.refresh_all();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].username, "alice");
    assert_eq!(reg.stats().users, 1);
    assert!(reg.refresh_user("bob", None).is_empty());
}

const CACHED: LoginKind = LoginKind::Connect {
    persistent: false,
    cached: true,
};

#[test]
fn a_cached_login_keeps_rules_younger_than_the_refresh_period_and_nothing_else() {
    let mut reg = registry();
    let now = Instant::now();
    let alice = identity("alice", "1");
    reg.login_loaded(b"phone", 10, CONNECT, &alice, now, || {
        Ok(rules("1", &["7"]))
    })
    .unwrap();
    reg.disconnect(Connection::new(b"phone", 10), true);
    // A reconnect the credential cache answered, within the period: no load, no wait.
    reg.login(
        Connection::new(b"phone", 11),
        CACHED,
        &alice,
        now + REFRESH / 2,
    );
    assert!(reg.urgent_jobs().is_empty(), "the held rules are kept");
    assert!(reg.ok(b"phone", 11, Access::Write, "/groups/7/messages"));
    // A login whose password was checked always loads them.
    reg.login(
        Connection::new(b"laptop", 12),
        CONNECT,
        &alice,
        now + REFRESH / 2,
    );
    assert_eq!(reg.urgent_jobs().len(), 1);
    // Past the period, a cached login loads them too (and its check waits).
    let late = now + REFRESH + Duration::from_secs(1);
    reg.login(Connection::new(b"phone", 13), CACHED, &alice, late);
    let jobs = reg.urgent_jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        reg.check(
            Connection::new(b"phone", 13),
            Access::Write,
            "/groups/7/messages",
            false,
            &NoFacts
        ),
        Err(Pending::Rules)
    );
    for job in jobs {
        reg.apply(
            Loaded {
                job,
                result: Ok(rules("1", &["8"])),
            },
            late,
        );
    }
    assert!(reg.ok(b"phone", 13, Access::Write, "/groups/8/messages"));
    // Fresh again: kept by the next cached login.
    reg.login(Connection::new(b"phone", 14), CACHED, &alice, late);
    assert!(reg.urgent_jobs().is_empty());

    // Whatever may have changed the rules makes the next cached login load them.
    type Invalidate = fn(&mut Registry, Instant);
    let invalidations: [(&str, Invalidate); 4] = [
        ("refreshUser", |reg, _| {
            reg.refresh_user("alice", None);
        }),
        ("kickUser", |reg, _| reg.forget_rules_time("ALICE")),
        ("SIGHUP", |reg, _| {
            reg.refresh_all();
        }),
        ("a failed load", |reg, now| {
            let job = reg.refresh_user("alice", None).pop().expect("a job");
            reg.apply(
                Loaded {
                    job,
                    result: Err(BackendError::Unavailable("down".into())),
                },
                now,
            );
        }),
    ];
    for (pointer, (what, invalidate)) in invalidations.into_iter().enumerate() {
        let pointer = 100 + 2 * pointer;
        let at = Instant::now();
        // Fresh rules first.
        reg.login(Connection::new(b"phone", pointer), CONNECT, &alice, at);
        reg.deliver_urgent(rules("1", &["7"]));
        invalidate(&mut reg, at);
        reg.login(Connection::new(b"phone", pointer + 1), CACHED, &alice, at);
        assert_eq!(
            reg.urgent_jobs().len(),
            1,
            "after {what}, the rules load again"
        );
    }
}

#[test]
fn rules_a_login_thread_read_never_undo_a_refresh_asked_for_after() {
    let now = Instant::now();
    let alice = identity("alice", "1");
    for refresh_first in [true, false] {
        let mut reg = registry();
        reg.login_loaded(b"phone", 10, CONNECT, &alice, now, || {
            Ok(rules("1", &["7"]))
        })
        .unwrap();
        // A delayed login of another device: its ticket is taken before its thread reads
        // the rules (group 7 still), then a refreshUser is asked for (group 8 now).
        let read = reg.reserve_ticket();
        let refresh = reg.refresh_user("alice", None).pop().expect("a refresh");
        let refreshed = |reg: &mut Registry, job: Job| {
            reg.apply(
                Loaded {
                    job,
                    result: Ok(rules("1", &["8"])),
                },
                now,
            )
        };
        let mut refresh = Some(refresh);
        if refresh_first {
            refreshed(&mut reg, refresh.take().unwrap());
        }
        // The CONNECT binds the delayed login with what its thread read.
        reg.login(Connection::new(b"tablet", 11), CONNECT, &alice, now);
        let job = reg.urgent_jobs().pop().expect("the login's load");
        reg.apply_preloaded(job, rules("1", &["7"]), read, now);
        if let Some(job) = refresh {
            // The refresh finishes after the CONNECT: still applied.
            refreshed(&mut reg, job);
        }
        assert!(
            reg.ok(b"tablet", 11, Access::Write, "/groups/8/messages"),
            "refresh first: {refresh_first}"
        );
        assert!(!reg.ok(b"phone", 10, Access::Write, "/groups/7/messages"));
    }
}
