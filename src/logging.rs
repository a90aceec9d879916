//! Routes the `log` crate to a sink the FFI edge installs (the broker's
//! `mosquitto_log_printf`). The core never calls the broker itself, so unit tests link.

use once_cell::sync::OnceCell;

/// Where formatted lines go: level and text, already prefixed with `chat-auth: `.
pub type Sink = fn(log::Level, &str);

static SINK: OnceCell<Sink> = OnceCell::new();
static LOGGER: BrokerLogger = BrokerLogger;

struct BrokerLogger;

impl log::Log for BrokerLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        // `log!` already checked max_level before formatting anything: a disabled level
        // costs one comparison on the message path.
        if let Some(sink) = SINK.get() {
            sink(record.level(), &format!("chat-auth: {}", record.args()));
        }
    }

    fn flush(&self) {}
}

/// Installs `sink` (first call wins) and sets the level; later calls only change the level.
pub fn install(sink: Sink, level: log::LevelFilter) {
    let _ = SINK.set(sink);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// A user-supplied name made safe for one log line: control characters escaped, and
/// cut to 64 characters (a 64 KiB username must not flood the log).
pub fn printable(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("' OR '1'='1"), "\\' OR \\'1\\'=\\'1");
        let long = "x".repeat(70_000);
        assert_eq!(printable(&long).len(), 67);
    }
}
