//! MQTT topic and filter algebra for ACL decisions: matching, `$share/` prefixes, whether
//! one filter is covered by a pattern, and where a filter meets a chat topic template.
//! Pure functions over `&str`, no allocation on the matching paths.

/// The filter with any `$share/<group>/` prefix removed; `None` for a malformed share
/// (no group name or nothing after it), which the caller refuses.
pub fn strip_shared(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        None => Some(filter),
        Some(rest) => {
            let (group, inner) = rest.split_once('/')?;
            (!group.is_empty() && !inner.is_empty() && !group.contains(['+', '#'])).then_some(inner)
        }
    }
}

/// Whether `filter` is a well-formed MQTT filter: `#` only as the whole last level, `+` only
/// as a whole level, not empty.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if (level.contains('#') && (level != "#" || !last)) || (level.contains('+') && level != "+")
        {
            return false;
        }
    }
    true
}

/// Whether a concrete `topic` matches `filter`, as the broker decides delivery. Wildcards
/// at the first level do not match topics starting with `$` (MQTT 4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `filter` can match is also matched by `pattern` (both may hold
/// wildcards): what a wildcard SUBSCRIBE needs from an ACL pattern. String equality is
/// not enough (`a/+` is covered by `a/#`) and neither is `matches` (`a/#` is not covered
/// by `a/+`).
pub fn covered_by(filter: &str, pattern: &str) -> bool {
    if pattern.starts_with(['+', '#']) && !filter.starts_with(['+', '#']) && filter.starts_with('$')
    {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut pattern_levels = pattern.split('/');
    loop {
        match (filter_levels.next(), pattern_levels.next()) {
            // `#` in the pattern covers whatever remains, including nothing.
            (_, Some("#")) => return true,
            // `#` in the filter reaches any depth: only a `#` pattern covers it.
            (Some("#"), _) => return false,
            (Some("+"), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(_), Some("+")) => {}
            (Some(f), Some(p)) if f == p => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Where a filter meets a topic template with one `{id}` level (`/users/{id}/messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateMatch<'a> {
    /// The filter matches no topic of the template.
    Disjoint,
    /// It matches exactly the template's topic with this id.
    Id(&'a str),
    /// It matches the template's topics for more than one id (wildcard at the id level or
    /// above it).
    AnyId,
}

/// A topic template split at its `{id}` level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    before: Vec<String>,
    after: Vec<String>,
    /// The levels before `{id}` joined, with the `/` that follows them (`/users/`), and the
    /// levels after it with the `/` before them (`/messages`): `id_of` compares these,
    /// since it runs for every check and every chat message.
    prefix: String,
    suffix: String,
}

impl Template {
    /// Parses a template such as `/users/{id}/messages`: exactly one level is `{id}`, the
    /// others are literal (no wildcards).
    pub fn parse(text: &str) -> Result<Template, String> {
        let levels: Vec<&str> = text.split('/').collect();
        let id_levels: Vec<usize> = levels
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == "{id}")
            .map(|(i, _)| i)
            .collect();
        let [id_level] = id_levels[..] else {
            return Err(format!(
                "'{text}' must have exactly one level that is {{id}}, e.g. /users/{{id}}/messages"
            ));
        };
        if levels
            .iter()
            .any(|l| l.contains(['+', '#']) || (l.contains('{') && *l != "{id}"))
        {
            return Err(format!(
                "'{text}' may not contain +, # or other {{...}} levels"
            ));
        }
        let before: Vec<String> = levels[..id_level].iter().map(|l| l.to_string()).collect();
        let after: Vec<String> = levels[id_level + 1..]
            .iter()
            .map(|l| l.to_string())
            .collect();
        let prefix = before.iter().map(|l| format!("{l}/")).collect();
        let suffix = after.iter().map(|l| format!("/{l}")).collect();
        Ok(Template {
            before,
            after,
            prefix,
            suffix,
        })
    }

    /// The template as a subscription pattern: `{id}` as `+` (`/users/+/messages`).
    pub fn pattern(&self) -> String {
        format!("{}+{}", self.prefix, self.suffix)
    }

    /// The topic of this template for `id` (`/users/17/presence`).
    pub fn render(&self, id: &str) -> String {
        format!("{}{id}{}", self.prefix, self.suffix)
    }

    /// The id of a concrete topic of this template, if it is one: the topic is the prefix,
    /// one non-empty level, and the suffix.
    pub fn id_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let id = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    /// Whether some topic is named by both templates.
    pub fn overlaps(&self, other: &Template) -> bool {
        let levels = |t: &Template| -> Vec<Option<String>> {
            let mut all: Vec<Option<String>> = t.before.iter().cloned().map(Some).collect();
            all.push(None);
            all.extend(t.after.iter().cloned().map(Some));
            all
        };
        let (mine, theirs) = (levels(self), levels(other));
        mine.len() == theirs.len()
            && mine.iter().zip(&theirs).all(|pair| match pair {
                (Some(a), Some(b)) => a == b,
                (None, Some(literal)) | (Some(literal), None) => !literal.is_empty(),
                (None, None) => true,
            })
    }

    /// Where `filter` meets this template's topics.
    pub fn meet<'f>(&self, filter: &'f str) -> TemplateMatch<'f> {
        let mut levels = filter.split('/');
        // Wildcards at the first level never match a topic starting with `$`.
        let dollar_first = self.before.first().is_some_and(|l| l.starts_with('$'));
        for (index, expected) in self.before.iter().enumerate() {
            match levels.next() {
                Some("#" | "+") if index == 0 && dollar_first => return TemplateMatch::Disjoint,
                Some("#") => return TemplateMatch::AnyId,
                Some("+") => {}
                Some(level) if level == expected => {}
                _ => return TemplateMatch::Disjoint,
            }
        }
        let id = match levels.next() {
            Some("#") => return TemplateMatch::AnyId,
            Some("+") => None,
            Some("") | None => return TemplateMatch::Disjoint,
            Some(id) => Some(id),
        };
        if !rest_meets(levels, &self.after) {
            return TemplateMatch::Disjoint;
        }
        id.map_or(TemplateMatch::AnyId, TemplateMatch::Id)
    }
}

/// Whether the filter's remaining `levels` match the template's literal `rest`.
fn rest_meets<'f>(mut levels: impl Iterator<Item = &'f str>, rest: &[String]) -> bool {
    for expected in rest {
        match levels.next() {
            Some("#") => return true,
            Some("+") => {}
            Some(level) if level == expected => {}
            _ => return false,
        }
    }
    // A longer filter still matches only through a trailing `#` (which also matches zero levels).
    matches!(levels.next(), None | Some("#"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_is_stripped() {
        assert_eq!(strip_shared("$share/g/a/b"), Some("a/b"));
        assert_eq!(
            strip_shared("$share/g//users/1/messages"),
            Some("/users/1/messages")
        );
        assert_eq!(strip_shared("a/b"), Some("a/b"));
        assert_eq!(strip_shared("$share/g"), None);
        assert_eq!(strip_shared("$share//a"), None);
        assert_eq!(strip_shared("$share/g/"), None);
        assert_eq!(strip_shared("$share/+/a"), None);
    }

    #[test]
    fn filter_validity() {
        for ok in [
            "a",
            "#",
            "+",
            "a/+/b",
            "a/#",
            "/",
            "+/+",
            "/users/1/messages",
        ] {
            assert!(is_valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/a"] {
            assert!(!is_valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching_follows_mqtt() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/x", true),
            ("+", "/x", false),
            ("/users/+/messages", "/users/7/messages", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/c", false),
            ("a", "a/b", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter} ~ {topic}");
        }
    }

    #[test]
    fn coverage_is_containment_not_equality() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/#", true),
            ("a/b/c", "a/+/c", true),
            ("a/+/c", "a/+/c", true),
            ("a", "a/#", true),
            ("a/#", "a/#", true),
            ("a/#", "a/+", false),
            ("a/+", "a/b", false),
            ("#", "a/#", false),
            ("+/b", "a/b", false),
            ("a/b/c", "a/+", false),
            ("a/b", "#", true),
            ("$SYS/x", "#", false),
            ("$SYS/x", "$SYS/#", true),
            ("users/alice/#", "users/alice/#", true),
            ("users/alice/x/#", "users/+/#", true),
        ];
        for (filter, pattern, expected) in cases {
            assert_eq!(
                covered_by(filter, pattern),
                expected,
                "{filter} in {pattern}"
            );
        }
    }

    #[test]
    fn coverage_agrees_with_matching_on_concrete_topics() {
        // A concrete topic is covered by a pattern exactly when the pattern matches it.
        let topics = ["a", "a/b", "a/b/c", "/x", "x/", "$SYS/x"];
        let patterns = ["#", "a/#", "a/+", "+/+", "+", "a/b", "$SYS/#", "+/b/#"];
        for topic in topics {
            for pattern in patterns {
                assert_eq!(
                    covered_by(topic, pattern),
                    matches(pattern, topic),
                    "{topic} / {pattern}"
                );
            }
        }
    }

    #[test]
    fn template_parsing() {
        assert!(Template::parse("/users/{id}/messages").is_ok());
        assert!(Template::parse("{id}").is_ok());
        assert!(Template::parse("/users/messages").is_err());
        assert!(Template::parse("/users/{id}/{id}").is_err());
        assert!(Template::parse("/users/{id}/+").is_err());
        assert!(Template::parse("/users/{user}/messages").is_err());
    }

    #[test]
    fn template_overlap() {
        let t = |s| Template::parse(s).unwrap();
        assert!(!t("/users/{id}/messages").overlaps(&t("/groups/{id}/messages")));
        assert!(t("/users/{id}/messages").overlaps(&t("/{id}/users/messages")));
        assert!(t("/a/{id}").overlaps(&t("/a/{id}")));
        assert!(!t("/a/{id}").overlaps(&t("/a/{id}/b")));
        // An id is never empty, so it cannot stand where the other has an empty level.
        assert!(!t("/{id}").overlaps(&t("{id}/")));
    }

    #[test]
    fn template_ids_of_topics() {
        let t = Template::parse("/users/{id}/messages").unwrap();
        assert_eq!(t.id_of("/users/42/messages"), Some("42"));
        assert_eq!(t.id_of("/users/alice/messages"), Some("alice"));
        assert_eq!(t.id_of("/users//messages"), None);
        assert_eq!(t.id_of("/users/42/messages/x"), None);
        assert_eq!(t.id_of("/users/42"), None);
        assert_eq!(t.id_of("users/42/messages"), None);
    }

    #[test]
    fn filters_meeting_a_template() {
        use TemplateMatch::*;
        let t = Template::parse("/users/{id}/messages").unwrap();
        let cases = [
            ("/users/7/messages", Id("7")),
            ("/users/+/messages", AnyId),
            ("/users/#", AnyId),
            ("#", AnyId),
            ("+/+/+/+", AnyId),
            ("+/users/+/#", AnyId),
            ("/+/7/messages", Id("7")),
            ("/users/7/#", Id("7")),
            ("/users/7/+", Id("7")),
            ("/+/+/messages", AnyId),
            ("/users/7/messages/x", Disjoint),
            ("/users/7/messages/#", Id("7")),
            ("/users/7", Disjoint),
            ("/groups/7/messages", Disjoint),
            ("+/+/+", Disjoint),
            ("+", Disjoint),
            ("users/7/messages", Disjoint),
            ("/users//messages", Disjoint),
        ];
        for (filter, expected) in cases {
            assert_eq!(t.meet(filter), expected, "{filter}");
        }
    }

    #[test]
    fn template_meets_agree_with_matching() {
        // Property: over topics for two ids, Disjoint = no hits, Id(x) = exactly x,
        // AnyId = both ids.
        let t = Template::parse("/users/{id}/messages").unwrap();
        let filters = [
            "/users/7/messages",
            "/users/+/messages",
            "#",
            "/users/#",
            "+/+/+/+",
            "/+/7/+",
            "/users/7/#",
            "/groups/#",
            "/users/7",
            "/+/+/messages",
            "+/users/8/#",
        ];
        for filter in filters {
            let hits: Vec<&str> = ["7", "8"]
                .into_iter()
                .filter(|id| matches(filter, &format!("/users/{id}/messages")))
                .collect();
            let expected = match hits.as_slice() {
                [] => TemplateMatch::Disjoint,
                [one] => TemplateMatch::Id(one),
                _ => TemplateMatch::AnyId,
            };
            assert_eq!(t.meet(filter), expected, "{filter}");
        }
    }
}
