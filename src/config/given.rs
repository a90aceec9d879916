//! The options as given, read through the table (`options::OPTIONS`), and the value
//! parsers: flags, whole numbers in their range, choices, queries, table names.

use super::options::{self, Part};
use super::{ConfigError, err};
use crate::query::{self, Bindings, Query};
use std::collections::HashMap;

/// The options as given, read through the table: defaults and ranges come from
/// `options::OPTIONS`, and reading an option that is not there is a bug (a panic in tests).
pub(super) struct Given<'a> {
    pub(super) values: HashMap<&'static str, &'a str>,
}

impl<'a> Given<'a> {
    /// The value given (trimmed; empty counts as not given).
    pub(super) fn get(&self, name: &str) -> Option<&'a str> {
        self.raw(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value given, untrimmed (a password).
    pub(super) fn raw(&self, name: &str) -> Option<&'a str> {
        self.values.get(options::get(name).name).copied()
    }

    /// The value given, else the table's default.
    pub(super) fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).or(options::get(name).default)
    }

    /// The options of `part` that were given, sorted.
    pub(super) fn set_in(&self, part: Part) -> Vec<&'static str> {
        let mut set: Vec<&'static str> = options::OPTIONS
            .iter()
            .filter(|spec| spec.part == part && self.get(spec.name).is_some())
            .map(|spec| spec.name)
            .collect();
        set.sort_unstable();
        set
    }

    pub(super) fn flag_given(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        self.get(name).map(|v| boolean(name, v)).transpose()
    }

    pub(super) fn flag(&self, name: &str) -> Result<bool, ConfigError> {
        let value = self.value(name);
        debug_assert!(value.is_some(), "option {name} has no default");
        Ok(value
            .map(|v| boolean(name, v))
            .transpose()?
            .unwrap_or(false))
    }

    pub(super) fn whole_given<T: TryFrom<u64>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ConfigError> {
        let options::Kind::Whole { min, max } = options::get(name).kind else {
            panic!("option {name} is not a number in config::options::OPTIONS");
        };
        self.get(name)
            .map(|v| match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => {
                    T::try_from(n).map_err(|_| err(name, format!("'{v}' is too large")))
                }
                _ => Err(err(
                    name,
                    format!("'{v}' is not a whole number from {min} to {max}"),
                )),
            })
            .transpose()
    }

    /// A number with a default in the table.
    pub(super) fn whole<T: TryFrom<u64>>(&self, name: &str) -> Result<T, ConfigError> {
        if let Some(n) = self.whole_given(name)? {
            return Ok(n);
        }
        let default = options::get(name)
            .default
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("option {name} has no numeric default"));
        T::try_from(default).map_err(|_| err(name, "default out of range"))
    }

    /// One of the table's words, given or the default.
    pub(super) fn choice(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        let Some(words) = options::get(name).kind.words() else {
            panic!("option {name} is not a choice in config::options::OPTIONS");
        };
        match self.value(name) {
            Some(v) if !words.contains(&v) => Err(err(
                name,
                format!("'{v}' is not one of {}", words.join(", ")),
            )),
            v => Ok(v),
        }
    }
}

pub(super) fn translate(
    option: &str,
    text: &str,
    bindings: Bindings,
) -> Result<Query, ConfigError> {
    query::translate(text, bindings).map_err(|e| err(option, e.0))
}

fn boolean(option: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(option, format!("'{value}' is not true or false"))),
    }
}

/// Levenshtein distance, for suggesting the option a typo meant.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// A table name as the option gives it: `name` or `database.name`, letters, digits and `_`.
pub(super) fn quoted_table(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |p: &&str| {
        !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    (parts.len() <= 2 && parts.iter().all(valid)).then(|| {
        parts
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(".")
    })
}
