//! The storage seam: the only code in the engine that touches files.
//!
//! Everything above this module (the log, queues, streams, metadata) does its I/O through
//! [`Storage`] and [`StorageFile`], so tests can swap the real filesystem ([`FsStorage`]) for a
//! simulated one ([`SimStorage`]) that tears writes, fails the Nth fsync with EIO, runs out of
//! space, and "crashes" by keeping only what was made durable.

use std::ffi::OsString;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

mod fs;
mod sim;

pub use fs::{FsStorage, IoStats};
pub use sim::{CrashPlan, SimStorage};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, reads only.
    Read,
    /// Existing file, reads and writes.
    ReadWrite,
    /// A new file (mode 0600); fails if it exists. The caller fsyncs the directory.
    CreateNew,
    /// Open or create (mode 0600), reads and writes.
    CreateOrOpen,
}

/// A filesystem.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `path` and any missing parents (mode 0700), fsyncing the parent of each directory
    /// it creates.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries in a directory, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically renames `from` over `to`. Not durable until [`Storage::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Unlinks a file. Not durable until [`Storage::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory. Not durable until its parent is synced.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on `path` (created 0600 if missing). With `wait` false,
    /// fails with [`io::ErrorKind::WouldBlock`] when someone else holds it. The lock is released
    /// when the guard drops or the process dies.
    fn lock(&self, path: &Path, wait: bool) -> io::Result<Box<dyn LockGuard>>;
    /// Opens the lock file `path` (created 0600 if missing) to be locked and unlocked many
    /// times without opening it again. Unlike [`Storage::lock`], it does not exclude other
    /// threads of this process that lock the same [`LockFile`]: the caller serializes them.
    fn open_lock_file(&self, path: &Path) -> io::Result<Box<dyn LockFile>>;
    /// True when `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Watches directories for changes to the files in them (written, created, renamed,
    /// removed), so a waiter can sleep until another process writes instead of polling.
    fn watch(&self, dirs: &[&Path]) -> io::Result<Box<dyn Watcher>>;
    /// Names the running boot of the machine (at most 48 bits, 0 when unknown): two equal
    /// non-zero values mean no power loss or kernel crash came in between, so every byte
    /// written then, fsynced or not, still reads back as written.
    fn boot_id(&self) -> u64 {
        0
    }
}

/// Changes in watched directories (see [`Storage::watch`]).
pub trait Watcher: Send + Debug {
    /// Waits until something changed in a watched directory since the watcher was made or
    /// this last returned true, or until `timeout` passed. True when something changed (a
    /// change may be reported that the caller finds irrelevant: look and wait again).
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<bool>;
}

/// An open file.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's emptiness is never asked, only its length"
)]
pub trait StorageFile: Send + Sync + Debug {
    /// Current length in bytes. Asks for nothing else: on Linux 6.13+ a stat that asks for
    /// the change time makes the file's next write costlier (see `FsFile::len`).
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `pos`; [`io::ErrorKind::UnexpectedEof`] when the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Reads from `pos` until `buf` is full or the file ends; returns how many bytes it read
    /// (0 when the file ends at or before `pos`).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`. On error, any prefix may have been written.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    /// Asks the OS to start writing `len` bytes from `pos` to the disk and returns without
    /// waiting for them (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`). A hint: it
    /// makes nothing durable, and storage without such a call may do nothing.
    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()>;
    /// A read-only view of the file's first `len` bytes.
    ///
    /// The view may be longer than the file (a real mapping reserves room to grow into); the
    /// caller must not touch bytes at or past the file's length at the time it reads them. It
    /// may also be shorter than `len` (a simulated snapshot stops at the end of the file). A
    /// real mapping shows later writes; a snapshot ([`Mapping::sees_later_writes`] false)
    /// shows the file as it was when mapped.
    fn map(&self, len: u64) -> io::Result<Mapping>;
}

/// Held while an advisory lock is held.
pub trait LockGuard: Send + Sync + Debug {}

/// A lock file kept open (see [`Storage::open_lock_file`]).
pub trait LockFile: Send + Sync + Debug {
    /// Takes the exclusive lock, waiting for other processes.
    fn lock(&self) -> io::Result<()>;
    /// Releases it.
    fn unlock(&self) -> io::Result<()>;
    /// True once the file's name is gone or names another file: whatever the lock guarded
    /// was deleted (and perhaps made again) since this was opened.
    fn removed(&self) -> io::Result<bool>;
}

/// Bytes backing a [`Mapping`].
pub trait MappedBytes: Send + Sync + Debug {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
}

/// A shared, cheaply cloned, read-only view of a file (a memory map, or a snapshot in tests).
#[derive(Debug, Clone)]
pub struct Mapping {
    bytes: Arc<dyn MappedBytes>,
    live: bool,
}

impl Mapping {
    /// Wraps mapped bytes that show later writes to the file (a memory map).
    pub fn new(bytes: Arc<dyn MappedBytes>) -> Self {
        Mapping { bytes, live: true }
    }

    /// Wraps a copy of the file's bytes, which later writes do not change.
    pub fn snapshot(bytes: Arc<dyn MappedBytes>) -> Self {
        Mapping { bytes, live: false }
    }

    /// Whether writes made to the file after it was mapped show through.
    pub fn sees_later_writes(&self) -> bool {
        self.live
    }

    /// All mapped bytes (see [`StorageFile::map`] for which of them may be touched).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.bytes()
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.bytes.bytes().len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared storage handle.
pub type SharedStorage = Arc<dyn Storage>;
