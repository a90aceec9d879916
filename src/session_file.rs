//! The sessions file: the persistent sessions the plugin judges, kept across a broker
//! restart so that the sessions Mosquitto restores from its own persistence file keep
//! receiving what they are entitled to. One JSON object per line; written whole to a
//! temporary file, synced and renamed over the old one, so a power cut leaves either the
//! old file or the new one. A file that cannot be read is reported and ignored: the broker
//! still starts, and those clients get their rules at their next login. The file is 0600.

use crate::sessions::SavedSession;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Sessions in a file at most (the registry keeps at most this many offline ones anyway).
const MAX_LINES: usize = 1_000_000;

/// The newest snapshot written: saves run on more than one background thread, and an
/// older snapshot must neither overwrite a newer one nor share its temporary file.
static NEWEST_SAVED: Mutex<u64> = Mutex::new(0);

/// Writes snapshot number `seq` (numbered in the order they were taken); an older one than
/// what is on disk already is skipped.
pub fn save(path: &Path, sessions: &[SavedSession], seq: u64) -> Result<(), String> {
    let mut newest = NEWEST_SAVED.lock().unwrap_or_else(|e| e.into_inner());
    if seq < *newest {
        return Ok(());
    }
    write(path, sessions)?;
    *newest = seq;
    Ok(())
}

fn write(path: &Path, sessions: &[SavedSession]) -> Result<(), String> {
    let mut text = Vec::with_capacity(sessions.len() * 80);
    for session in sessions {
        serde_json::to_writer(&mut text, session).map_err(|e| e.to_string())?;
        text.push(b'\n');
    }
    let temporary = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        // Private whatever the umask: it names every persistent session's user. Set on the
        // file too, since one an earlier run left behind keeps its mode when opened.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("cannot write {}: {e}", path.display())
    })
}

/// The saved sessions and the number of lines that could not be read. A missing file is
/// no sessions.
pub fn load(path: &Path) -> Result<(Vec<SavedSession>, usize), String> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut sessions = Vec::new();
    let mut unreadable = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if sessions.len() >= MAX_LINES {
            unreadable += 1;
            continue;
        }
        match serde_json::from_slice::<SavedSession>(line) {
            Ok(session) => sessions.push(session),
            Err(_) => unreadable += 1,
        }
    }
    Ok((sessions, unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "chat-auth-session-file-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn session(client_id: &str) -> SavedSession {
        SavedSession {
            client_id: client_id.into(),
            username: "alice".into(),
            user_id: "17".into(),
            superuser: false,
            backend: Default::default(),
            relay: false,
        }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = dir();
        let path = dir.join("sessions.jsonl");
        assert_eq!(load(&path).unwrap(), (vec![], 0), "no file yet");
        save(&path, &[session("a"), session("b\n\"x")], 1).unwrap();
        save(&path, &[session("c")], 2).unwrap();
        assert_eq!(load(&path).unwrap(), (vec![session("c")], 0));
        // An older snapshot that finishes later is not written over the newer one.
        save(&path, &[session("old")], 1).unwrap();
        assert_eq!(load(&path).unwrap(), (vec![session("c")], 0));
        assert!(!path.with_extension("tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_file_is_private_whatever_was_there() {
        let dir = dir();
        let path = dir.join("sessions.jsonl");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        write(&path, &[session("a")]).unwrap();
        assert_eq!(mode(&path), 0o600);
        // A temporary file a crash left behind, world-readable: renamed over the file, it
        // would make it so.
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, b"").unwrap();
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o666)).unwrap();
        write(&path, &[session("b")]).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load(&path).unwrap(), (vec![session("b")], 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_file_keeps_what_it_can() {
        let dir = dir();
        let path = dir.join("sessions.jsonl");
        write(&path, &[session("a"), session("b")]).unwrap();
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        assert_eq!(load(&path).unwrap(), (vec![session("a")], 1));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(load(&path).unwrap(), (vec![], 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_place_is_an_error() {
        let err = write(Path::new("/nonexistent-dir/x/sessions"), &[session("a")]).unwrap_err();
        assert!(err.contains("/nonexistent-dir/x/sessions"), "{err}");
    }
}
