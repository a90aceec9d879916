//! The spool's edge with the OS: a segment file preallocated on disk and written through a
//! shared memory map (a store per message instead of a `write(2)`; the page cache keeps
//! what was stored when the broker dies, exactly as it keeps what was written).

use memmap2::{MmapMut, MmapOptions};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Reserves `len` bytes of disk for `file`. A sparse hole is not enough: a store into a
/// mapped hole that finds the disk full kills the process with SIGBUS instead of
/// returning an error, so the blocks are taken here, where a full disk is an `Err`.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: posix_fallocate(3) on a descriptor `file` keeps open; no memory is passed.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// A writable shared map of `len` bytes of `file` from `offset`.
pub(crate) fn map_window(file: &File, offset: u64, len: usize) -> io::Result<MmapMut> {
    // SAFETY: mapping is unsafe because the slice would change under us if the file were
    // truncated or written by someone else. A spool segment is created by the spool
    // (`create_new`), preallocated beyond `offset + len` first, and written only through
    // this map by the broker thread; the writer thread and replay never write it, and
    // deleting a committed segment unlinks it (a mapping outlives an unlink).
    unsafe { MmapOptions::new().offset(offset).len(len).map_mut(file) }
}
