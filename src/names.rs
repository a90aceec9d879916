//! How usernames compare in the users tables operators have: most use MariaDB's default
//! collations, case-insensitive and pad-space (`Steve` and `steve ` find `steve`'s row).
//! What must not split by spelling (the login throttle, `kickUser`/`refreshUser`) keys a
//! name by its folded form; on a case-sensitive table that joins namesakes, which costs
//! them a shared throttle or a reconnect, never a right.

use std::borrow::Cow;

/// `name` without trailing spaces, lower-cased (borrowed when it already is).
pub fn folded(name: &str) -> Cow<'_, str> {
    let name = name.trim_end_matches(' ');
    if name.chars().any(char::is_uppercase) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Whether two usernames name one row under such a collation.
pub fn same_name(a: &str, b: &str) -> bool {
    a == b || folded(a) == folded(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_name_fold_together() {
        assert!(same_name("steve", "Steve") && same_name("steve ", "STEVE"));
        assert!(same_name("élodie", "Élodie") && !same_name("steve", "steven"));
        assert!(matches!(folded("bob"), Cow::Borrowed("bob")));
        assert_eq!(folded("Bob  "), "bob");
    }
}
