//! The local append-only spool: every accepted chat message is written here before the
//! MESSAGE callback returns, and replayed at start until MySQL has it.
//!
//! Files in the spool directory: `segment-<n>.log` (frames: u32 length, u32 CRC-32, the
//! record in a small binary encoding; then zeros up to the size the segment was preallocated
//! to) and `checkpoint` (`<segment> <offset>`: everything before it is in MySQL). Segments
//! wholly before the checkpoint are deleted. What the plugin creates here is private to the
//! broker's user, whatever the umask (Mosquitto sets none): directories 0700, files 0600.
//!
//! A segment is written through a shared memory map, a window at a time: a message costs a
//! copy, not a `write(2)` on the broker thread, and a killed broker loses nothing the copy
//! finished (the page cache holds it either way; `persist_fsync` adds an `msync`).

use super::mapped_file;
use super::{NewRecord, Record};
use memmap2::MmapMut;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, compiler_fence};

const FRAME_HEADER: usize = 8;
/// A frame longer than this is corruption, not a record.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// The mode of the files the plugin creates (chat messages: the broker's user only).
pub const FILE_MODE: u32 = 0o600;
/// The mode of the directories it creates.
pub const DIR_MODE: u32 = 0o700;

/// How much of a segment is mapped at a time: the broker's resident memory grows by at most
/// this, not by the segment.
const WINDOW: u64 = 1024 * 1024;

/// Where a record ends in the spool: committing it moves the checkpoint here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub end: u64,
}

/// An encoded record (see `decode`) read back from the spool, with where it ends and its
/// size in the spool.
pub type Replayed = (Vec<u8>, Position, u64);

/// Counters shared by the broker thread (appends) and the writer (reads, commits).
#[derive(Debug, Default)]
pub struct Usage {
    /// Bytes of records appended in this run and not yet committed to MySQL.
    pub pending_bytes: AtomicU64,
    pub pending_records: AtomicU64,
    /// Bytes of the segments an earlier run left uncommitted (their preallocated size: an
    /// upper bound), until the writer is done with each.
    pub replay_bytes: AtomicU64,
    /// Where the last appended record ends (`pack`): the writer reads up to here. Stored
    /// after the record is copied, so everything before it is whole.
    appended: AtomicU64,
}

impl Usage {
    /// Bytes on disk not yet in MySQL (the spool limit compares this).
    pub fn backlog_bytes(&self) -> u64 {
        self.pending_bytes.load(Ordering::Relaxed) + self.replay_bytes.load(Ordering::Relaxed)
    }

    fn appended(&self) -> Position {
        let packed = self.appended.load(Ordering::Acquire);
        Position {
            segment: packed >> 32,
            end: packed & 0xFFFF_FFFF,
        }
    }

    fn publish(&self, position: Position) {
        // Segments are at most 64 MiB (or one record) and numbered from 1: both fit.
        self.appended
            .store((position.segment << 32) | position.end, Ordering::Release);
    }
}

/// The segment being appended to.
struct Segment {
    file: File,
    /// Bytes preallocated on disk.
    len: u64,
    written: u64,
    window: MmapMut,
    window_start: u64,
}

impl Segment {
    /// With `fsync`, the new file's size and directory entry are on disk before it is used.
    fn create(dir: &Path, id: u64, len: u64, fsync: bool) -> io::Result<Segment> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)?;
        let mapped = mapped_file::preallocate(&file, len)
            .and_then(|()| {
                if fsync {
                    file.sync_all()?;
                    File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .and_then(|()| mapped_file::map_window(&file, 0, WINDOW.min(len) as usize));
        match mapped {
            Ok(window) => Ok(Segment {
                file,
                len,
                written: 0,
                window,
                window_start: 0,
            }),
            Err(e) => {
                // Gone, so the next message tries again (a full disk may have room by then).
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn room(&self) -> u64 {
        self.len - self.written
    }

    /// Copies `frame` (which fits: see `room`) after the last one: body first, header last,
    /// so a broker killed mid-copy leaves a zero length (the end) or a bad CRC, never a
    /// frame that reads as whole.
    fn append(&mut self, frame: &[u8], fsync: bool) -> io::Result<()> {
        let end = self.written + frame.len() as u64;
        if end > self.window_start + self.window.len() as u64 {
            let length = WINDOW.max(frame.len() as u64).min(self.len - self.written);
            self.window = mapped_file::map_window(&self.file, self.written, length as usize)?;
            self.window_start = self.written;
        }
        let at = (self.written - self.window_start) as usize;
        let target = &mut self.window[at..at + frame.len()];
        target[FRAME_HEADER..].copy_from_slice(&frame[FRAME_HEADER..]);
        // The compiler may not move the header's stores before the body's.
        compiler_fence(Ordering::Release);
        target[..FRAME_HEADER].copy_from_slice(&frame[..FRAME_HEADER]);
        if fsync {
            self.window.flush_range(at, frame.len())?;
        }
        self.written = end;
        Ok(())
    }
}

/// The appending side, owned by the broker thread.
pub struct Spool {
    dir: PathBuf,
    fsync: bool,
    segment: u64,
    current: Segment,
    rotate_at: u64,
    /// Reused for every frame: no allocation per message.
    frame: Vec<u8>,
    pub usage: Arc<Usage>,
}

impl Spool {
    /// Opens the spool in `dir` (created if missing); new records go to a fresh segment.
    /// Returns where the writer starts reading: what the last run did not commit is read
    /// back from disk by the writer (`SpoolReader`), never loaded here.
    pub fn open(dir: &Path, fsync: bool, rotate_at: u64) -> io::Result<(Spool, SpoolReader)> {
        // Each directory made here (parents too) is the broker's user's alone.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        let exposed = exposed(dir)?;
        if !exposed.is_empty() {
            log::warn!(
                "spool {}: other local users may read chat messages in {} (the plugin creates \
                 its files 0600 and directories 0700; run chmod o-rwx on these)",
                dir.display(),
                exposed.join(", ")
            );
        }
        let checkpoint = read_checkpoint(dir)?.unwrap_or_else(|| {
            // Torn or emptied by a power cut: replay everything; ids already in MySQL are
            // skipped there, so nothing is stored twice.
            log::warn!(
                "spool {}: the checkpoint is damaged; replaying every segment (messages \
                 already stored are skipped)",
                dir.display()
            );
            Position { segment: 0, end: 0 }
        });
        let mut segments = segment_ids(dir)?;
        segments.sort_unstable();
        let usage = Arc::new(Usage::default());
        let mut replayed = Vec::new();
        for &id in &segments {
            if id < checkpoint.segment {
                fs::remove_file(segment_path(dir, id))?;
                continue;
            }
            let size = fs::metadata(segment_path(dir, id))?.len();
            let start = if id == checkpoint.segment {
                checkpoint.end
            } else {
                0
            };
            let bytes = size.saturating_sub(start);
            usage.replay_bytes.fetch_add(bytes, Ordering::Relaxed);
            replayed.push((id, bytes));
        }
        if !replayed.is_empty() {
            log::info!(
                "replaying {} spool segments that MySQL has not confirmed, from disk in the \
                 background",
                replayed.len()
            );
        }
        let segment = segments
            .last()
            .map_or(checkpoint.segment.max(1), |last| last + 1);
        let current = Segment::create(dir, segment, rotate_at, fsync)?;
        usage.publish(Position { segment, end: 0 });
        let start = match replayed.first() {
            Some(&(first, _)) if first > checkpoint.segment => Position {
                segment: first,
                end: 0,
            },
            Some(_) => checkpoint,
            None => Position { segment, end: 0 },
        };
        let reader = SpoolReader {
            dir: dir.to_path_buf(),
            at: start,
            file: None,
            usage: usage.clone(),
            replayed,
            first_live: segment,
        };
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                fsync,
                segment,
                current,
                rotate_at,
                frame: Vec::with_capacity(4096),
                usage,
            },
            reader,
        ))
    }

    /// Appends one record (with `fsync`, on disk before this returns) and publishes it to
    /// the writer. Returns its end and its size.
    pub fn append(&mut self, record: &NewRecord<'_>) -> io::Result<(Position, u64)> {
        let frame = &mut self.frame;
        frame.clear();
        frame.resize(FRAME_HEADER, 0);
        encode(record, frame);
        let body_len = frame.len() - FRAME_HEADER;
        let crc = crc32fast::hash(&frame[FRAME_HEADER..]);
        frame[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let size = frame.len() as u64;
        if self.current.room() < size {
            // A record bigger than a segment gets a segment of its own size.
            self.current = Segment::create(
                &self.dir,
                self.segment + 1,
                self.rotate_at.max(size),
                self.fsync,
            )?;
            self.segment += 1;
        }
        self.current.append(frame, self.fsync)?;
        self.usage.pending_bytes.fetch_add(size, Ordering::Relaxed);
        self.usage.pending_records.fetch_add(1, Ordering::Relaxed);
        let end = Position {
            segment: self.segment,
            end: self.current.written,
        };
        self.usage.publish(end);
        Ok((end, size))
    }
}

/// The writer's side: reads records back from the segment files, in order, up to what the
/// broker thread published. The backlog stays on disk; memory holds one batch.
pub struct SpoolReader {
    dir: PathBuf,
    /// Where the next record starts.
    at: Position,
    file: Option<File>,
    usage: Arc<Usage>,
    /// Segments of an earlier run not yet committed, with the bytes `replay_bytes` counts.
    replayed: Vec<(u64, u64)>,
    /// The first segment of this run.
    first_live: u64,
}

impl SpoolReader {
    /// The committing side for what this reader reads.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            dir: self.dir.clone(),
            usage: self.usage.clone(),
            last: None,
            replayed: self.replayed.clone(),
            first_live: self.first_live,
        }
    }

    /// Up to `limit` records after the last one read.
    pub fn read(&mut self, limit: usize) -> io::Result<Vec<Replayed>> {
        let mut out = Vec::new();
        while out.len() < limit {
            let appended = self.usage.appended();
            if self.at.segment > appended.segment
                || (self.at.segment == appended.segment && self.at.end >= appended.end)
            {
                break;
            }
            // The segment being appended to is read up to the published end; an earlier
            // one up to its end marker (the preallocated zeros) or its last whole frame.
            let sealed = self.at.segment < appended.segment;
            let step = match self.next_frame(sealed) {
                Ok(Some(record)) => {
                    self.at.end = record.1.end;
                    out.push(record);
                    Ok(())
                }
                Ok(None) if sealed => self.next_segment(appended.segment),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                // What was read is handed out; the error comes back at the next call.
                if out.is_empty() {
                    return Err(e);
                }
                break;
            }
        }
        Ok(out)
    }

    /// Where the next record starts.
    pub fn position(&self) -> Position {
        self.at
    }

    /// Goes back to `position` (after a failure in the writer: what was read and not
    /// committed is read again).
    pub fn rewind(&mut self, position: Position) {
        self.at = position;
        self.file = None;
    }

    fn next_segment(&mut self, last: u64) -> io::Result<()> {
        let next = segment_ids(&self.dir)?
            .into_iter()
            .filter(|id| *id > self.at.segment)
            .min()
            .unwrap_or(last);
        self.at = Position {
            segment: next,
            end: 0,
        };
        self.file = None;
        Ok(())
    }

    /// The frame at `self.at`, checked; `None` at the end of the written part.
    fn next_frame(&mut self, sealed: bool) -> io::Result<Option<Replayed>> {
        use std::os::unix::fs::FileExt;
        let path = segment_path(&self.dir, self.at.segment);
        if self.file.is_none() {
            match File::open(&path) {
                Ok(file) => self.file = Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound && sealed => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let file = self.file.as_ref().expect("opened above");
        let mut header = [0u8; FRAME_HEADER];
        let read = read_at_most(file, &mut header, self.at.end)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        // No record has an empty body: a zero length is the preallocated rest.
        if read < FRAME_HEADER || len == 0 {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let mut body = vec![0u8; len.min(MAX_FRAME)];
        let whole = len <= MAX_FRAME
            && file
                .read_exact_at(&mut body, self.at.end + FRAME_HEADER as u64)
                .is_ok()
            && crc32fast::hash(&body) == crc
            && decode(&body).is_some();
        if !whole {
            log::warn!(
                "spool {}: damaged data from byte {} ignored (a crash during a write)",
                path.display(),
                self.at.end
            );
            return Ok(None);
        }
        let size = (FRAME_HEADER + len) as u64;
        let end = Position {
            segment: self.at.segment,
            end: self.at.end + size,
        };
        Ok(Some((body, end, size)))
    }
}

/// Reads into `buffer` from `offset` until it is full or the file ends; the bytes read.
fn read_at_most(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The committing side, owned by the writer thread.
pub struct Checkpoint {
    dir: PathBuf,
    usage: Arc<Usage>,
    last: Option<Position>,
    replayed: Vec<(u64, u64)>,
    first_live: u64,
}

impl Checkpoint {
    /// Where the last commit ended.
    pub fn last(&self) -> Option<Position> {
        self.last
    }

    /// Whether a record in `segment` was appended in this run (counted in `pending_*`).
    pub fn is_live(&self, segment: u64) -> bool {
        segment >= self.first_live
    }

    /// Records that everything up to `position` is in MySQL (`records` of `bytes`), and
    /// deletes the segments before it. Deleting comes first: it frees space on a full disk,
    /// and is safe before the checkpoint moves (a replay of later segments only meets ids
    /// MySQL already has). The checkpoint is replaced atomically (a new file renamed over
    /// it); when the disk has no room for a new file, it is overwritten in place (one short
    /// write of a fixed length, with a CRC that tells a torn one).
    /// `records` and `bytes` count the records of this run only (`is_live`).
    pub fn commit(&mut self, position: Position, records: u64, bytes: u64) -> io::Result<()> {
        self.usage.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.usage
            .pending_records
            .fetch_sub(records, Ordering::Relaxed);
        let before = self.last.map_or(0, |p| p.segment);
        if position.segment > before {
            for id in segment_ids(&self.dir)? {
                if id < position.segment {
                    let _ = fs::remove_file(segment_path(&self.dir, id));
                }
            }
            let usage = &self.usage;
            self.replayed.retain(|&(id, bytes)| {
                let done = id < position.segment;
                if done {
                    usage.replay_bytes.fetch_sub(bytes, Ordering::Relaxed);
                }
                !done
            });
        }
        self.last = Some(position);
        let line = checkpoint_line(position);
        let path = self.dir.join("checkpoint");
        let temporary = self.dir.join("checkpoint.tmp");
        let replaced =
            write_private(&temporary, line.as_bytes()).and_then(|()| fs::rename(&temporary, &path));
        if replaced.is_err() {
            let _ = fs::remove_file(&temporary);
            // Not truncated: the same number of bytes overwrites the old line, so the disk
            // needs no new block.
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(FILE_MODE)
                .open(&path)?;
            std::io::Write::write_all(&mut file, line.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes `bytes` to a new or emptied file at `path`, mode 0600 (a file an earlier run left
/// there is set to it too: it is renamed over one that must stay private).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    io::Write::write_all(&mut file, bytes)
}

/// `dir` and the entries in it that other local users may read, write or enter (any of the
/// mode's "other" bits), each with its mode: what an earlier version, or an operator, left
/// open. Group bits are allowed (a 0750 directory of the broker's group, as the package
/// makes it).
pub fn exposed(dir: &Path) -> io::Result<Vec<String>> {
    let open = |path: &Path, metadata: &fs::Metadata| {
        let mode = metadata.permissions().mode() & 0o7777;
        (mode & 0o007 != 0 && !metadata.is_symlink())
            .then(|| format!("{} ({mode:04o})", path.display()))
    };
    let mut found: Vec<String> = open(dir, &fs::metadata(dir)?).into_iter().collect();
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(line) = open(&entry.path(), &entry.metadata()?) {
            entries.push(line);
        }
    }
    entries.sort();
    found.extend(entries);
    Ok(found)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("segment-{id:012}.log"))
}

fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `<segment> <end> <crc>`, fixed width, so an overwrite in place replaces every byte.
fn checkpoint_line(position: Position) -> String {
    let numbers = format!("{:020} {:020}", position.segment, position.end);
    format!("{numbers} {:08x}\n", crc32fast::hash(numbers.as_bytes()))
}

/// The checkpoint; `None` when it is damaged (torn, emptied). No file: nothing committed.
fn read_checkpoint(dir: &Path) -> io::Result<Option<Position>> {
    let text = match fs::read_to_string(dir.join("checkpoint")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(Position { segment: 0, end: 0 }));
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(e),
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let number = |text: &str| text.parse::<u64>().ok();
    Ok(match parts[..] {
        [segment, end, crc] => {
            let numbers = format!("{segment} {end}");
            let crc_ok = u32::from_str_radix(crc, 16) == Ok(crc32fast::hash(numbers.as_bytes()));
            match (number(segment), number(end)) {
                (Some(segment), Some(end)) if crc_ok => Some(Position { segment, end }),
                _ => None,
            }
        }
        // Written by earlier versions: `<segment> <end>`.
        [segment, end] => number(segment)
            .zip(number(end))
            .map(|(segment, end)| Position { segment, end }),
        _ => None,
    })
}

/// Records spooled before the payload was kept (read back, never written).
const ENCODING_V1: u8 = 1;
const ENCODING_V2: u8 = 2;

/// The record as a version byte, then each field: strings as u32 length + UTF-8 bytes,
/// `qos` as one byte, `server_ts` as i64, then the payload as a string. Cheaper than JSON
/// on the broker thread. With a payload, `content` is left empty: the writer reads it back
/// from the payload, so a message's text is spooled once.
fn encode(record: &NewRecord<'_>, out: &mut Vec<u8>) {
    out.push(ENCODING_V2);
    let text = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    };
    let content = if record.payload.is_empty() {
        record.content
    } else {
        ""
    };
    for field in [
        record.message_id,
        record.kind,
        record.from_id,
        record.to_id,
        content,
        record.topic,
        record.client_id,
    ] {
        text(out, field);
    }
    out.push(record.qos);
    out.extend_from_slice(&record.server_ts.to_le_bytes());
    text(out, record.payload);
}

/// A record from its spool encoding (this version's, or the one before, which had no
/// payload: a spool left by an upgraded plugin is still written); `None` if it is not one.
pub fn decode(body: &[u8]) -> Option<Record> {
    let (&version, mut rest) = body.split_first()?;
    if version != ENCODING_V1 && version != ENCODING_V2 {
        return None;
    }
    let text = |rest: &mut &[u8]| -> Option<String> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let bytes = rest.get(4..4 + len)?;
        let text = String::from_utf8(bytes.to_vec()).ok();
        *rest = &rest[4 + len..];
        text
    };
    let (message_id, kind, from_id, to_id, content, topic, client_id) = (
        text(&mut rest)?,
        text(&mut rest)?,
        text(&mut rest)?,
        text(&mut rest)?,
        text(&mut rest)?,
        text(&mut rest)?,
        text(&mut rest)?,
    );
    let (&qos, tail) = rest.split_first()?;
    let (server_ts, mut tail) = tail.split_at_checked(8)?;
    let server_ts = i64::from_le_bytes(server_ts.try_into().ok()?);
    let payload = if version == ENCODING_V1 {
        String::new()
    } else {
        text(&mut tail)?
    };
    if !tail.is_empty() {
        return None;
    }
    let content = if payload.is_empty() {
        content
    } else {
        content_of(&payload)?
    };
    Some(Record {
        message_id,
        kind,
        from_id,
        to_id,
        content,
        topic,
        qos,
        client_id,
        server_ts,
        payload,
    })
}

/// The `content` of a validated chat payload (decoded as `chat::payload::accept` read it: the
/// payload has one `content`, a string).
fn content_of(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Content {
        content: String,
    }
    serde_json::from_str::<Content>(payload)
        .ok()
        .map(|c| c.content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn record(n: u32) -> Record {
        Record {
            message_id: format!("m{n}"),
            kind: "CHAT".into(),
            from_id: "1".into(),
            to_id: "2".into(),
            content: format!("hello \"{n}\" ✓"),
            topic: "/users/2/messages".into(),
            qos: 1,
            client_id: "c".into(),
            server_ts: n as i64,
            payload: serde_json::json!({"type": "CHAT", "content": format!("hello \"{n}\" ✓")})
                .to_string(),
        }
    }

    /// The record with another content, in its payload too (as the broker spools them).
    fn with_content(mut record: Record, content: String) -> Record {
        record.payload = serde_json::json!({"type": "CHAT", "content": content}).to_string();
        record.content = content;
        record
    }

    #[test]
    fn records_spooled_before_the_payload_was_kept_are_still_read() {
        let mut v1 = vec![ENCODING_V1];
        for text in ["m1", "CHAT", "1", "2", "hi", "/users/2/messages", "c"] {
            v1.extend_from_slice(&(text.len() as u32).to_le_bytes());
            v1.extend_from_slice(text.as_bytes());
        }
        v1.push(1);
        v1.extend_from_slice(&7i64.to_le_bytes());
        let old = decode(&v1).expect("a version 1 record");
        assert_eq!((old.content.as_str(), old.server_ts), ("hi", 7));
        assert!(old.payload.is_empty());
        let mut v2 = Vec::new();
        encode(&record(3).borrowed(), &mut v2);
        assert_eq!(decode(&v2), Some(record(3)));
        assert_eq!(decode(&v2[..v2.len() - 1]), None, "cut short");
        // A message's text is spooled once (inside the payload), not twice.
        let big = with_content(record(4), "z".repeat(10_000));
        let mut encoded = Vec::new();
        encode(&big.borrowed(), &mut encoded);
        assert!(encoded.len() < 10_200, "{} bytes", encoded.len());
        assert_eq!(decode(&encoded), Some(big));
        v1.push(0);
        assert_eq!(decode(&v1), None, "trailing bytes");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chat-auth-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Everything a reader reads (as the writer would, in batches of 7).
    fn read_all(reader: &mut SpoolReader) -> Vec<Replayed> {
        let mut all = Vec::new();
        loop {
            let batch = reader.read(7).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    fn records(read: &[Replayed]) -> Vec<Record> {
        read.iter().map(|p| decode(&p.0).unwrap()).collect()
    }

    /// Opens the spool again (a restart) and reads back what it replays.
    fn replayed(dir: &Path, rotate_at: u64) -> Vec<Replayed> {
        let (_spool, mut reader) = Spool::open(dir, false, rotate_at).unwrap();
        read_all(&mut reader)
    }

    #[test]
    fn uncommitted_records_come_back_in_order() {
        let dir = temp_dir("replay");
        let (mut spool, mut reader) = Spool::open(&dir, false, 1 << 20).unwrap();
        assert!(read_all(&mut reader).is_empty());
        let mut positions = Vec::new();
        for n in 0..10 {
            positions.push(spool.append(&record(n).borrowed()).unwrap());
        }
        let mut checkpoint = reader.checkpoint();
        let committed: u64 = positions[..4].iter().map(|p| p.1).sum();
        checkpoint.commit(positions[3].0, 4, committed).unwrap();
        assert_eq!(spool.usage.pending_records.load(Ordering::Relaxed), 6);
        drop(spool);
        let records = records(&replayed(&dir, 1 << 20));
        let ids: Vec<&str> = records.iter().map(|r| r.message_id.as_str()).collect();
        assert_eq!(ids, ["m4", "m5", "m6", "m7", "m8", "m9"]);
        assert_eq!(records[0], record(4));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Modes are set, not left to the umask (the broker test runs it under umask 022): the
    /// directories made (parents too), a segment, the checkpoint even over a leftover
    /// temporary file that was world-readable; what an earlier run left open is reported.
    #[test]
    fn what_the_spool_creates_is_private() {
        let top = temp_dir("modes");
        let dir = top.join("made/by/the/plugin");
        let (mut spool, reader) = Spool::open(&dir, false, 1 << 20).unwrap();
        for made in [&top, &top.join("made"), &dir] {
            assert_eq!(mode(made), DIR_MODE, "{}", made.display());
        }
        let segment = segment_path(&dir, spool.segment);
        assert_eq!(mode(&segment), FILE_MODE);
        let leftover = dir.join("checkpoint.tmp");
        fs::write(&leftover, "").unwrap();
        fs::set_permissions(&leftover, fs::Permissions::from_mode(0o666)).unwrap();
        let (position, _) = spool.append(&record(1).borrowed()).unwrap();
        let bytes = spool.usage.pending_bytes.load(Ordering::Relaxed);
        reader.checkpoint().commit(position, 1, bytes).unwrap();
        assert_eq!(mode(&dir.join("checkpoint")), FILE_MODE);
        assert!(exposed(&dir).unwrap().is_empty());
        drop((spool, reader));
        // Left open by an earlier version or an operator: named with their modes. A group
        // may read (the package's 0750 directory of the broker's group).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&segment, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("rejected.jsonl"), "{}\n").unwrap();
        fs::set_permissions(
            dir.join("rejected.jsonl"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        assert_eq!(
            exposed(&dir).unwrap(),
            [
                format!("{} (0755)", dir.display()),
                format!("{} (0644)", segment.display()),
            ]
        );
        fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_damaged_or_empty_checkpoint_replays_everything() {
        let dir = temp_dir("torn-checkpoint");
        let (mut spool, reader) = Spool::open(&dir, false, 1 << 20).unwrap();
        let mut last = None;
        for n in 0..5 {
            last = Some(spool.append(&record(n).borrowed()).unwrap().0);
        }
        let last = last.unwrap();
        let total = spool.usage.pending_bytes.load(Ordering::Relaxed);
        reader.checkpoint().commit(last, 5, total).unwrap();
        drop(spool);
        let text = fs::read_to_string(dir.join("checkpoint")).unwrap();
        // A power cut: the file emptied, or cut short, or a digit changed by a torn write.
        let changed = text.replacen('0', "1", 1);
        for damaged in ["", &text[..10], &changed, "\u{0}\u{0}\u{0}"] {
            fs::write(dir.join("checkpoint"), damaged).unwrap();
            assert_eq!(
                replayed(&dir, 1 << 20).len(),
                5,
                "{damaged:?}: everything replayed"
            );
        }
        // The earlier two-number format is still read.
        fs::write(
            dir.join("checkpoint"),
            format!("{} {}\n", last.segment, last.end),
        )
        .unwrap();
        assert!(replayed(&dir, 1 << 20).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn committed_segments_are_deleted_and_a_torn_tail_is_ignored() {
        let dir = temp_dir("segments");
        let (mut spool, reader) = Spool::open(&dir, true, 200).unwrap();
        let mut last = None;
        for n in 0..20 {
            last = Some(spool.append(&record(n).borrowed()).unwrap());
        }
        assert!(segment_ids(&dir).unwrap().len() > 3);
        let total = spool.usage.pending_bytes.load(Ordering::Relaxed);
        reader
            .checkpoint()
            .commit(last.unwrap().0, 20, total)
            .unwrap();
        assert_eq!(segment_ids(&dir).unwrap().len(), 1);
        assert_eq!(spool.usage.pending_bytes.load(Ordering::Relaxed), 0);
        // A half-written frame after a machine crash, right after the last whole one.
        spool.append(&record(20).borrowed()).unwrap();
        let segment = segment_path(&dir, spool.segment);
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.write_all_at(&[200, 0, 0, 0, 1, 2], spool.current.written)
            .unwrap();
        drop(spool);
        let pending = replayed(&dir, 200);
        assert_eq!(pending.len(), 1);
        assert_eq!(decode(&pending[0].0).unwrap().message_id, "m20");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_copy_cut_before_its_header_is_the_end_and_big_records_get_their_own_segment() {
        let dir = temp_dir("mapped");
        let (mut spool, _) = Spool::open(&dir, true, 300).unwrap();
        let big = with_content(record(1), "x".repeat(1000));
        spool.append(&record(0).borrowed()).unwrap();
        spool.append(&big.borrowed()).unwrap();
        spool.append(&record(2).borrowed()).unwrap();
        // The broker killed in the middle of a copy: the body is there, the header is not.
        let at = spool.current.written;
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, spool.segment))
            .unwrap();
        file.write_all_at(&[0; 8], at).unwrap();
        file.write_all_at(b"\x01half a body", at + 8).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 300, "preallocated");
        drop(spool);
        assert_eq!(records(&replayed(&dir, 300)), [record(0), big, record(2)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_segment_the_disk_cannot_hold_is_an_error_and_leaves_no_file() {
        let dir = temp_dir("no-room");
        fs::create_dir_all(&dir).unwrap();
        // 1 PiB: more than this disk (or than the filesystem allows in one file).
        assert!(Segment::create(&dir, 7, 1 << 50, false).is_err());
        assert!(segment_ids(&dir).unwrap().is_empty());
        // The next attempt starts clean.
        assert!(Segment::create(&dir, 7, 4096, true).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn windows_are_remapped_across_a_segment() {
        let dir = temp_dir("windows");
        // Segments of 4 windows; records that do not divide a window evenly.
        let (mut spool, _) = Spool::open(&dir, false, 4 * WINDOW).unwrap();
        let mut sent = Vec::new();
        for n in 0..40_000 {
            let r = with_content(
                record(n),
                format!("{n:>0width$}", width = (n % 300) as usize),
            );
            spool.append(&r.borrowed()).unwrap();
            sent.push(r);
        }
        assert!(spool.segment > 1, "rotated at least once");
        drop(spool);
        assert_eq!(records(&replayed(&dir, 4 * WINDOW)), sent);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_writer_reads_what_is_published_as_it_comes_across_segments() {
        let dir = temp_dir("live");
        let (mut spool, mut reader) = Spool::open(&dir, false, 200).unwrap();
        let mut sent = Vec::new();
        let mut read = Vec::new();
        for n in 0..30 {
            spool.append(&record(n).borrowed()).unwrap();
            sent.push(record(n));
            if n % 4 == 0 {
                read.extend(reader.read(3).unwrap());
            }
        }
        read.extend(read_all(&mut reader));
        assert!(segment_ids(&dir).unwrap().len() > 5, "many segments");
        assert_eq!(records(&read), sent);
        // Read again from a position (after a failure in the writer).
        reader.rewind(read[9].1);
        assert_eq!(records(&read_all(&mut reader)), sent[10..]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_backlog_from_an_earlier_run_is_counted_until_its_segments_are_done() {
        let dir = temp_dir("backlog");
        let (mut spool, _) = Spool::open(&dir, false, 200).unwrap();
        for n in 0..20 {
            spool.append(&record(n).borrowed()).unwrap();
        }
        drop(spool);
        let (mut spool, mut reader) = Spool::open(&dir, false, 200).unwrap();
        let backlog = spool.usage.replay_bytes.load(Ordering::Relaxed);
        assert!(backlog > 0);
        assert_eq!(spool.usage.backlog_bytes(), backlog);
        spool.append(&record(20).borrowed()).unwrap();
        let read = read_all(&mut reader);
        assert_eq!(records(&read).len(), 21);
        let mut checkpoint = reader.checkpoint();
        let last = read.last().unwrap();
        assert!(checkpoint.is_live(last.1.segment) && !checkpoint.is_live(read[0].1.segment));
        checkpoint.commit(last.1, 1, last.2).unwrap();
        assert_eq!(spool.usage.replay_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(spool.usage.backlog_bytes(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
