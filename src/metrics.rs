//! The figures as `$SYS/broker/chat-auth/...` topics, published every `sys_interval`: every
//! figure of the table with a `$SYS` topic, in the table's order. Named in the style of
//! Mosquitto's own `$SYS` topics.

use crate::figures::{FIGURES, Figure, Snapshot, fill, topic_label};

/// The prefix of every topic.
pub const PREFIX: &str = crate::figures::SYS_PREFIX;

/// Every topic (under `PREFIX`) with its value, in the table's order; the figures of one
/// label set that follow each other go label by label (a format's count, hash and database
/// times together).
pub fn topics(snapshot: &Snapshot) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let published: Vec<(&Figure, &str)> = FIGURES
        .iter()
        .filter_map(|f| f.sys.map(|topic| (f, topic)))
        .collect();
    let mut rest = published.as_slice();
    while let Some(((first, _), _)) = rest.split_first() {
        let by = first.by();
        let run = match by {
            Some(by) => rest.iter().take_while(|(f, _)| f.by() == Some(by)).count(),
            None => 1,
        };
        let (group, after) = rest.split_at(run);
        rest = after;
        let values: Vec<Vec<(&str, u64)>> = group.iter().map(|(f, _)| f.values(snapshot)).collect();
        let labels = values.first().map_or(0, Vec::len);
        for i in 0..labels {
            for ((_, topic), values) in group.iter().zip(&values) {
                let Some(&(label, value)) = values.get(i) else {
                    continue;
                };
                out.push((
                    format!("{PREFIX}{}", fill(topic, &topic_label(label))),
                    value.to_string(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::{Counters, History, LoginTime, Storage};

    #[test]
    fn topics_are_named_and_counted() {
        let mut counters = Counters {
            logins_accepted: 3,
            acl_allowed: 10,
            ..Default::default()
        };
        counters.login_refused("wrong-password");
        counters.login_refused("wrong-password");
        counters.chat_refused("from-id-mismatch");
        let snapshot = Snapshot {
            counters,
            login_times: vec![LoginTime {
                format: "bcrypt".into(),
                logins: 2,
                hash_us: 120_000,
                database_us: 300,
            }],
            storage: Some(Storage {
                rows_written: 7,
                ..Default::default()
            }),
            history: Some(History {
                pages: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let topics = topics(&snapshot);
        let get = |name: &str| {
            topics
                .iter()
                .find(|(t, _)| t == &format!("{PREFIX}{name}"))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("logins/accepted"), Some("3"));
        assert_eq!(get("logins/refused/wrong-password"), Some("2"));
        assert_eq!(get("chat/refused/from-id-mismatch"), Some("1"));
        assert_eq!(get("logins/time/bcrypt/hash-us"), Some("120000"));
        assert_eq!(get("mysql/up"), Some("1"));
        assert_eq!(get("storage/rows-stored"), Some("7"));
        assert_eq!(get("history/pages"), Some("4"));
        assert!(topics.iter().all(|(t, _)| t.starts_with(PREFIX)));
    }

    /// The topics and values of known snapshots, as kept in `tests/figures/sys.txt`.
    #[test]
    fn golden_sys_topics() {
        use crate::figures::golden;
        let mut text = String::new();
        for (name, snapshot) in [
            ("full", golden::full()),
            ("later", golden::later()),
            ("bare", golden::bare()),
        ] {
            text.push_str(&format!("# {name}\n"));
            for (topic, value) in topics(&snapshot) {
                text.push_str(&format!("{topic} {value}\n"));
            }
        }
        golden::check("sys.txt", &text);
    }
}
