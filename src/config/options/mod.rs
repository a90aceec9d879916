//! Every option, once: its name, mosquitto-go-auth's names for it, what it holds, its default
//! and range, and what it means. The table drives parsing (defaults and ranges), the
//! unknown-option check ("did you mean") and the option reference in docs/options.md, which a
//! unit test keeps equal to `reference()`.

mod backends;
mod chat;
mod go_auth;
mod http;
mod limits;
mod logins;
mod postgres;
mod running;

/// What an option holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Text, checked where it is read (a host, a path, a query, a pattern).
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Flag,
    /// A whole number from `min` to `max`.
    Whole { min: u64, max: u64 },
    /// One of these words.
    Choice(&'static [&'static str]),
    /// One of the words another part defines (the hash formats).
    ChoiceOf(fn() -> Vec<&'static str>),
    /// mosquitto-go-auth's, changing nothing here: accepted with one info line saying what
    /// chat-auth does instead.
    Noted(&'static str),
}

/// Which part of the plugin reads an option (warned about when that part is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    General,
    Mysql,
    Postgres,
    Http,
    Storage,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    /// Other names read as this option (mosquitto-go-auth's).
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub part: Part,
    /// The value when the option is not given, read like a given one; `None`: no value, or
    /// one that depends on other options (then `default_doc` says which).
    pub default: Option<&'static str>,
    /// The default docs/options.md shows, where it is not just `default`.
    pub default_doc: Option<&'static str>,
    pub meaning: &'static str,
}

const fn spec(name: &'static str, kind: Kind, part: Part, meaning: &'static str) -> Spec {
    Spec {
        name,
        aliases: &[],
        kind,
        part,
        default: None,
        default_doc: None,
        meaning,
    }
}

impl Spec {
    const fn default(mut self, value: &'static str) -> Spec {
        self.default = Some(value);
        self
    }
    const fn doc(mut self, text: &'static str) -> Spec {
        self.default_doc = Some(text);
        self
    }
    const fn aliases(mut self, names: &'static [&'static str]) -> Spec {
        self.aliases = names;
        self
    }
}

use Kind::{Choice, ChoiceOf, Flag, Noted, Text, Whole};

impl Kind {
    /// The words a choice takes.
    pub fn words(&self) -> Option<Vec<&'static str>> {
        match self {
            Choice(words) => Some(words.to_vec()),
            ChoiceOf(words) => Some(words()),
            _ => None,
        }
    }
}

/// `auto`, or a format of the hash module.
fn password_formats() -> Vec<&'static str> {
    let mut words = vec!["auto"];
    words.extend(crate::hash::Format::NAMES);
    words
}
use Part::{General, Http, Mysql, Storage};

const DAY: u64 = 86_400;
const GO_AUTH_HASHES: &str = "it is how go-auth makes hashes";

/// Every option, in the order docs/options.md lists them: one table, written by section in
/// the files beside this one.
pub const OPTIONS: &[Spec] = &join::<COUNT>(SECTIONS);

const SECTIONS: &[&[Spec]] = &[
    backends::BACKENDS,
    postgres::POSTGRES,
    http::HTTP,
    logins::LOGINS,
    chat::CHAT,
    limits::LIMITS,
    running::RUNNING,
    go_auth::GO_AUTH,
];

const COUNT: usize = {
    let mut count = 0;
    let mut i = 0;
    while i < SECTIONS.len() {
        count += SECTIONS[i].len();
        i += 1;
    }
    count
};

/// The sections one after another.
const fn join<const N: usize>(sections: &[&[Spec]]) -> [Spec; N] {
    let mut table = [sections[0][0]; N];
    let mut n = 0;
    let mut i = 0;
    while i < sections.len() {
        let mut j = 0;
        while j < sections[i].len() {
            table[n] = sections[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    table
}

/// The option a name (ours or an alias) stands for.
pub fn find(name: &str) -> Option<&'static Spec> {
    OPTIONS
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

/// The option `name`, which the code reads: it must be in the table.
pub fn get(name: &str) -> &'static Spec {
    OPTIONS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("option {name} is read but not in config::options::OPTIONS"))
}

/// The option reference of docs/options.md, as a Markdown table (noted go-auth options in one
/// row).
pub fn reference() -> String {
    let mut out = String::from("| option | default | meaning |\n|---|---|---|\n");
    for spec in OPTIONS.iter().filter(|s| !matches!(s.kind, Noted(_))) {
        let aliases = if spec.aliases.is_empty() {
            String::new()
        } else {
            format!(
                " (go-auth: {})",
                spec.aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let default = match (spec.default_doc, spec.default) {
            (Some(doc), _) => doc.to_string(),
            (None, Some(value)) => format!("`{value}`"),
            (None, None) => "none".to_string(),
        };
        let values = match spec.kind {
            Whole { min, max } => format!(" From {min} to {max}."),
            kind => match kind.words() {
                Some(words)
                    if !words
                        .iter()
                        .all(|w| spec.meaning.contains(&format!("`{w}`"))) =>
                {
                    format!(
                        " One of {}.",
                        words
                            .iter()
                            .map(|w| format!("`{w}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                _ => String::new(),
            },
        };
        out.push_str(&format!(
            "| `auth_opt_{}`{aliases} | {default} | {}{values} |\n",
            spec.name, spec.meaning
        ));
    }
    let noted: Vec<String> = OPTIONS
        .iter()
        .filter(|s| matches!(s.kind, Noted(_)))
        .map(|s| format!("`auth_opt_{}`", s.name))
        .collect();
    out.push_str(&format!(
        "| {} | | mosquitto-go-auth's; they change nothing here and are accepted with one info \
         line each saying what chat-auth does instead. |\n",
        noted.join(", ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_are_valid() {
        let mut seen = std::collections::HashSet::new();
        for spec in OPTIONS {
            for name in std::iter::once(&spec.name).chain(spec.aliases) {
                assert!(seen.insert(*name), "{name} twice");
            }
            if let Some(value) = spec.default {
                match spec.kind {
                    Whole { min, max } => {
                        let n: u64 = value.parse().unwrap();
                        assert!((min..=max).contains(&n), "{}", spec.name);
                    }
                    Choice(_) | ChoiceOf(_) => {
                        assert!(spec.kind.words().unwrap().contains(&value), "{}", spec.name)
                    }
                    Flag => assert!(["true", "false"].contains(&value), "{}", spec.name),
                    _ => {}
                }
            }
        }
    }

    /// docs/options.md's reference is this table, between its `options:begin` and
    /// `options:end` markers; `CHAT_AUTH_WRITE_DOCS=1 cargo test --lib docs_options` rewrites
    /// it after a change here.
    #[test]
    fn docs_options_md_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/options.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
        let start = doc.find(begin).expect("options:begin in docs/options.md") + begin.len();
        let stop = doc.find(end).expect("options:end in docs/options.md");
        let table = reference();
        if std::env::var_os("CHAT_AUTH_WRITE_DOCS").is_some() {
            let updated = format!("{}{table}{}", &doc[..start], &doc[stop..]);
            std::fs::write(path, updated).unwrap();
        } else {
            assert_eq!(
                doc[start..stop],
                table,
                "docs/options.md's option reference differs from config::options::OPTIONS; run \
                 CHAT_AUTH_WRITE_DOCS=1 cargo test --lib docs_options"
            );
        }
    }
}
