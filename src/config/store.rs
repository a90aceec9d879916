//! The storage options (`persist_*`): off, or on with a table and a spool.

use super::given::{Given, quoted_table};
use super::options::Part;
use super::{ConfigError, err};
use crate::store::StoreConfig;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn persist_config<'a>(
    given: &Given<'a>,
    validated: bool,
) -> Result<Option<StoreConfig>, ConfigError> {
    let enabled = given.flag("persist_enabled")?;
    if !enabled {
        // Storage options without the switch would be a broker that stores nothing and
        // says nothing: stop instead, naming the switch.
        let set = given.set_in(Part::Storage);
        if !set.is_empty() {
            return Err(err(
                "persist_enabled",
                format!(
                    "is not true, but {} {} set: add auth_opt_persist_enabled true to store \
                     chat messages, or remove {}",
                    set.iter()
                        .map(|k| format!("auth_opt_{k}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if set.len() == 1 { "is" } else { "are" },
                    if set.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        return Ok(None);
    }
    if !validated {
        return Err(err(
            "persist_enabled",
            "needs the chat rules and payload validation (auth_opt_chat_enabled and \
             auth_opt_chat_validate true): only validated chat messages are stored",
        ));
    }
    let table = given.value("persist_table").unwrap_or_default();
    let table = quoted_table(table).ok_or_else(|| {
        err(
            "persist_table",
            format!("'{table}' is not a table name (letters, digits, _; optionally db.table)"),
        )
    })?;
    let spool_dir = given.get("persist_spool_dir").ok_or_else(|| {
        err(
            "persist_spool_dir",
            "is required with auth_opt_persist_enabled: a directory the broker may write, where \
             messages wait until MySQL has them",
        )
    })?;
    Ok(Some(StoreConfig {
        table,
        batch_rows: given.whole::<usize>("persist_batch_rows")?,
        flush: Duration::from_millis(given.whole::<u64>("persist_flush_ms")?),
        spool_dir: PathBuf::from(spool_dir),
        spool_max_bytes: given.whole::<u64>("persist_spool_max_mb")? * 1024 * 1024,
        fsync: given.flag("persist_fsync")?,
    }))
}
