//! The segment-file append log that streams and queues are stored in.
//!
//! A log is a directory of segment files, each named by the first offset it holds, plus one
//! index per segment, a `head` file holding the writer's published watermark, and a `LOCK`
//! file. Records are appended in batches to the active segment; a batch is framed record by
//! record, written with one `write`, and (in [`Durability::Always`]) fsynced before `append`
//! returns, with concurrent appenders sharing one fsync (group commit). A segment is sealed when
//! it reaches its size or age limit and is never written again.
//!
//! One process writes a log at a time: an [`WriterLock::Exclusive`] handle holds the `LOCK`
//! file for its lifetime, a [`WriterLock::Shared`] one only around each write, catching up with
//! what other processes appended when it takes it. [`Log::seal`] closes a log to every writer.
//!
//! Readers ([`LogReader`]) need no lock: they read the head file to learn how far the active
//! segment is committed and read segments through memory maps, returning borrowed slices.
//! [`check`] verifies a log without changing it.
//!
//! See `engine/FORMAT.md` for the bytes and the recovery procedure.

mod check;
mod compaction;
mod reader;
mod recovery;
mod repair;
mod retention;
mod scan;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

pub use check::{CheckReport, Problem, check};
pub use compaction::CompactionReport;
pub use reader::{LogReader, ReadBatch, ReadLimit, Record};
pub use recovery::RecoveryReport;
pub use repair::{Quarantine, Repair, RepairAction, repair_unopenable};
pub use retention::{Retention, RetentionReport};

use crate::clock::SharedClock;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::Head;
use crate::codec::index::{INDEX_ENTRY_LEN, IndexEntry};
use crate::codec::record::{self, FLAG_END_OF_BATCH, FrameFields, MAX_HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::error::{Error, Result};
use crate::storage::{LockFile, LockGuard, OpenMode, SharedStorage, StorageFile};

/// How far past its data a prefilling log keeps zeros written (see [`LogOptions::prefill`]).
pub const PREFILL_BYTES: u64 = 64 << 10;
/// Batches larger than this do not prefill: they are bound by the disk's bandwidth.
pub const PREFILL_MAX_BATCH: u64 = 16 << 10;
/// In `interval` and `never` modes a writer asks the OS to start writing each chunk of this
/// many bytes of a segment once a batch completes it (`sync_file_range`; nothing waits for
/// it): the roll's fdatasync then finds little left (FORMAT.md, durability modes).
pub const WRITEBACK_CHUNK: u64 = 4 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
const _: () = assert!(
    ZEROS.len() as u64 == PREFILL_BYTES,
    "one write of zeros tops up a prefill"
);

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fdatasync before `append` returns; concurrent appenders share one fsync. The default.
    #[default]
    Always,
    /// Written to the OS before `append` returns (survives a process crash), fsynced by a
    /// background thread at this interval (a power loss may lose up to one interval).
    Interval(Duration),
    /// Written to the OS before `append` returns; fsynced only when a segment is sealed.
    Never,
}

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A segment is sealed once it holds this many bytes (default 64 MiB).
    pub segment_bytes_max: u64,
    /// A segment is sealed once its first record is this old (default 1 hour), so time-based
    /// retention can drop whole segments.
    pub segment_age_max: Option<Duration>,
    /// An index entry is written for the first record of a batch that starts at least this
    /// many bytes after the previous entry (default 4 KiB; at least 1).
    pub index_interval_bytes: u32,
    /// Largest header plus payload of one record (default 16 MiB; at most 64 MiB).
    pub max_record_bytes: u32,
    /// When an append counts as done.
    pub durability: Durability,
    /// Wait for another writer to release the lock instead of failing with
    /// [`Error::Locked`] (default false). Shared writers always wait.
    pub wait_for_lock: bool,
    /// Whether this handle holds the writer lock for its lifetime or only around each write.
    pub writer_lock: WriterLock,
    /// Keep up to [`PREFILL_BYTES`] of zeros written past the data of the active segment, so
    /// that small batches overwrite instead of growing the file (default false). Worth it
    /// where small appends are fsynced one by one (the logs of queues, streams and topics in
    /// `always` mode): on ext4 an fdatasync that grows a file also commits the journal, one
    /// that overwrites does not. Batches over [`PREFILL_MAX_BATCH`] never prefill.
    pub prefill: bool,
}

/// How a writer holds the log's cross-process lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriterLock {
    /// For the handle's lifetime: one writing process at a time, no per-append lock cost.
    #[default]
    Exclusive,
    /// Around each append (and sync, roll, retention, compaction), so several processes can
    /// write one log: on taking the lock the handle catches up with what others appended.
    /// Appends of concurrent threads in one process still share the lock and one fsync.
    Shared,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes_max: 64 << 20,
            segment_age_max: Some(Duration::from_secs(3600)),
            index_interval_bytes: 4096,
            max_record_bytes: 16 << 20,
            durability: Durability::Always,
            wait_for_lock: false,
            writer_lock: WriterLock::Exclusive,
            prefill: false,
        }
    }
}

/// One record to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// A tag for the layer above (stream record, queue message, journal event, ...).
    pub kind: u8,
    /// A small typed header (at most 64 KiB), opaque to the log.
    pub header: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> Entry<'a> {
    /// A record of kind 0 with no header.
    pub fn new(payload: &'a [u8]) -> Self {
        Entry {
            kind: 0,
            header: &[],
            payload,
        }
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record; the rest follow consecutively.
    pub first_offset: u64,
    /// Number of records.
    pub count: u64,
    /// The timestamp every record of the batch carries.
    pub timestamp_ms: u64,
}

/// How far the writer has got: a position in the active segment and the offset after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Watermark {
    base: u64,
    len: u64,
    next_offset: u64,
    last_timestamp_ms: u64,
}

impl Watermark {
    /// Later watermarks have more records, or the same records and a newer segment.
    fn key(&self) -> (u64, u64, u64) {
        (self.next_offset, self.base, self.len)
    }
}

/// The segment being appended to.
#[derive(Debug)]
struct Active {
    base: u64,
    base_timestamp_ms: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    index_path: PathBuf,
    index_file: Arc<dyn StorageFile>,
    /// Bytes written (the next frame's position).
    len: u64,
    /// The file's length as this writer knows it: `len`, or more when zeros were written
    /// past it (see [`Inner::prefill`]). A shared writer may know less than there is (another
    /// process prefilled further): only the prefill's decision reads it, and a roll asks the
    /// file.
    file_len: u64,
    /// Entries in the index file.
    index_entries: u64,
    /// Position of the last index entry (or the header's end).
    last_indexed: u64,
}

#[derive(Debug)]
struct Writer {
    active: Active,
    next_offset: u64,
    last_timestamp_ms: u64,
    frames: Vec<u8>,
    entries: Vec<u8>,
}

impl Writer {
    fn watermark(&self) -> Watermark {
        Watermark {
            base: self.active.base,
            len: self.active.len,
            next_offset: self.next_offset,
            last_timestamp_ms: self.last_timestamp_ms,
        }
    }
}

#[derive(Debug, Default)]
struct SyncState {
    synced: Watermark,
    syncing: bool,
}

#[derive(Debug)]
struct HeadWriter {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    head: Head,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    storage: SharedStorage,
    clock: SharedClock,
    options: LogOptions,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    head: Mutex<HeadWriter>,
    poison: OnceLock<String>,
    /// Serializes retention and compaction with each other.
    maintenance: Mutex<()>,
    reader: LogReader,
    stop: Mutex<bool>,
    stop_signal: Condvar,
    closed: AtomicBool,
    sealed: AtomicBool,
    lock_path: PathBuf,
    lock: Mutex<FileLock>,
    /// The `LOCK` file opened for reading and writing its change count (see
    /// [`Inner::note_change`]).
    changes_file: Arc<dyn StorageFile>,
    /// The change count as of this shared writer's last look at the log's files (none before
    /// its first): while the count stays the same, nobody created or removed the files that
    /// look is for.
    changes_seen: Mutex<Option<u64>>,
}

/// The cross-process writer lock and how many operations of this process are inside it.
#[derive(Debug)]
struct FileLock {
    /// An exclusive writer's lock, held for the handle's lifetime (dropping it releases it).
    #[expect(dead_code, reason = "held for its Drop, never read")]
    guard: Option<Box<dyn LockGuard>>,
    /// A shared writer's lock file, kept open and locked while `held`.
    file: Option<Box<dyn LockFile>>,
    held: bool,
    users: usize,
}

/// Held by an operation inside the writer lock; the last one out releases a shared lock.
struct Ticket<'a>(&'a Inner);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut lock = guard(&self.0.lock);
        lock.users -= 1;
        if lock.users == 0 && lock.held {
            lock.held = false;
            if let Some(file) = &lock.file
                && let Err(e) = file.unlock()
            {
                // Not released: nothing else may write this log until the process exits, so
                // make this handle refuse too rather than pretend.
                self.0.poisoned(Error::io("unlock", &self.0.lock_path, e));
            }
        }
    }
}

/// A log opened for writing (and reading). One writer per log at a time, across processes.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
    recovery: RecoveryReport,
}

fn storage_lock_file(
    storage: &dyn crate::storage::Storage,
    path: &Path,
) -> Result<Box<dyn LockFile>> {
    storage
        .open_lock_file(path)
        .map_err(|e| Error::io("open", path, e))
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The engine never panics while holding these locks; if a caller's thread did, the data
    // they protect is still consistent at every await point, so carry on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, takes the writer lock, and recovers the
    /// active segment's tail.
    pub fn open(
        storage: SharedStorage,
        clock: SharedClock,
        dir: impl Into<PathBuf>,
        options: LogOptions,
    ) -> Result<Log> {
        let dir = dir.into();
        if options.max_record_bytes > MAX_PAYLOAD_LEN {
            return Err(Error::InvalidArgument(format!(
                "max_record_bytes {} exceeds the format's limit of {MAX_PAYLOAD_LEN}",
                options.max_record_bytes
            )));
        }
        if options.index_interval_bytes == 0 {
            // Entries are "at least this many bytes apart": 0 would ask for two at one
            // position, which the writer, recovery and index rebuilds each settled differently.
            return Err(Error::InvalidArgument(
                "index_interval_bytes must be at least 1".into(),
            ));
        }
        if options.segment_bytes_max > u64::from(u32::MAX) / 2 {
            return Err(Error::InvalidArgument(
                "segment_bytes_max must be below 2 GiB".into(),
            ));
        }
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let lock_path = dir.join(segment::LOCK_FILE);
        let head_path = dir.join(segment::HEAD_FILE);
        // Files this open creates get their directory entries synced below.
        let new_entries = !storage.exists(&lock_path) || !storage.exists(&head_path);
        let shared = options.writer_lock == WriterLock::Shared;
        let lock = storage
            .lock(&lock_path, options.wait_for_lock || shared)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => Error::Locked {
                    path: lock_path.clone(),
                },
                _ => Error::io("lock", &lock_path, e),
            })?;
        let opened = recovery::open_for_write(&*storage, &*clock, &dir, &options)?;
        // Every file recovery adopted must keep its name before anything is appended to it or
        // the head names it: the active segment may have been created by a roll that failed
        // before its directory fsync, and recovery may have created, rewritten or removed
        // files. Only when the head already named the active segment (published after the
        // roll's directory fsync) and recovery touched no name is the directory known durable.
        let report = &opened.report;
        let names_durable = opened.head_named_active
            && report.files_created == 0
            && report.removed_files.is_empty()
            && report.indexes_rebuilt.is_empty();
        if !names_durable {
            storage
                .sync_dir(&dir)
                .map_err(|e| Error::io("fsync", &dir, e))?;
        }
        let watermark = opened.writer.watermark();
        let head = Head {
            active_base: watermark.base,
            committed_len: watermark.len,
            synced_len: opened.synced_len,
            next_offset: watermark.next_offset,
            last_timestamp_ms: watermark.last_timestamp_ms,
            start_offset: opened.start_offset,
            boot: storage.boot_id(),
        };
        let head_file = storage
            .open(&head_path, OpenMode::CreateOrOpen)
            .map_err(|e| Error::io("open", &head_path, e))?;
        head_file
            .write_all_at(&head.encode(), 0)
            .map_err(|e| Error::io("write", &head_path, e))?;
        if new_entries {
            // The head is a hint, but its directory entry (and the lock's) should not vanish.
            storage
                .sync_dir(&dir)
                .map_err(|e| Error::io("fsync", &dir, e))?;
        }
        let shared_storage = Arc::clone(&storage);
        let reader = LogReader::open(Arc::clone(&storage), &dir)?;
        let storage_has_seal = storage.exists(&dir.join(segment::SEALED_FILE));
        let changes_file = storage
            .open(&lock_path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        let inner = Arc::new(Inner {
            reader,
            dir,
            storage,
            clock,
            writer: Mutex::new(opened.writer),
            sync: Mutex::new(SyncState {
                // A tail recovery kept unsynced: the next sync must not think it covered.
                synced: if opened.synced_len == watermark.len {
                    watermark
                } else {
                    Watermark {
                        len: opened.synced_len,
                        next_offset: watermark.base,
                        ..watermark
                    }
                },
                syncing: false,
            }),
            synced: Condvar::new(),
            head: Mutex::new(HeadWriter {
                file: head_file,
                path: head_path,
                head,
            }),
            poison: OnceLock::new(),
            maintenance: Mutex::new(()),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            closed: AtomicBool::new(false),
            sealed: AtomicBool::new(storage_has_seal),
            lock: Mutex::new(FileLock {
                // A shared writer lets go once recovery is done, and takes the lock again
                // around each write through a lock file it keeps open.
                guard: (!shared).then_some(lock),
                file: shared
                    .then(|| storage_lock_file(&*shared_storage, &lock_path))
                    .transpose()?,
                held: false,
                users: 0,
            }),
            lock_path,
            changes_file,
            changes_seen: Mutex::new(None),
            options,
        });
        let syncer = match inner.options.durability {
            Durability::Interval(every) => Some(spawn_syncer(Arc::downgrade(&inner), every)),
            Durability::Always | Durability::Never => None,
        };
        Ok(Log {
            inner,
            syncer,
            recovery: opened.report,
        })
    }

    /// Runs `f` inside the writer lock. Appends `f` makes do not take the lock again, and no
    /// other process appends meanwhile, so for a [`WriterLock::Shared`] writer a sequence of
    /// reading, deciding and appending is atomic across processes. On entry the handle has
    /// caught up with what others appended: [`Log::next_offset`] is the log's.
    pub fn with_writer_lock<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let _ticket = self.inner.enter()?;
        f()
    }

    /// What recovery did when this handle opened the log.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    /// The offset the next appended record will get (for a shared writer: as of its last
    /// write; other processes may have appended since).
    pub fn next_offset(&self) -> u64 {
        guard(&self.inner.writer).next_offset
    }

    /// The first offset still stored.
    pub fn start_offset(&self) -> u64 {
        guard(&self.inner.head).head.start_offset
    }

    /// A reader sharing this log's mappings.
    pub fn reader(&self) -> &LogReader {
        &self.inner.reader
    }

    /// Reads committed records from `from` on; see [`LogReader::read`].
    pub fn read(&self, from: u64, limit: ReadLimit) -> Result<ReadBatch> {
        self.inner.reader.read(from, limit)
    }

    /// Appends a batch atomically: after a crash either every record of it is in the log or
    /// none is. Returns once the batch is durable under the log's [`Durability`].
    pub fn append(&self, entries: &[Entry<'_>]) -> Result<Appended> {
        let batch_len = self.inner.validate(entries)?;
        let _ticket = self.inner.enter()?;
        if self.inner.sealed.load(Ordering::SeqCst) {
            return Err(Error::Sealed {
                path: self.inner.dir.clone(),
            });
        }
        let (appended, watermark) = self.inner.write_batch(entries, batch_len)?;
        if self.inner.options.durability == Durability::Always {
            self.inner.wait_synced(watermark)?;
        }
        Ok(appended)
    }

    /// Seals the log: from now on every append, from any process, fails with
    /// [`Error::Sealed`]. Returns the next offset, which is final. Idempotent.
    pub fn seal(&self) -> Result<u64> {
        let _ticket = self.inner.enter()?;
        self.sync_locked()?;
        let next = guard(&self.inner.writer).next_offset;
        if !self.inner.sealed.load(Ordering::SeqCst) {
            self.inner.note_change()?;
            let path = self.inner.dir.join(segment::SEALED_FILE);
            let storage = &*self.inner.storage;
            let write = || -> std::io::Result<()> {
                let file = storage.open(&path, OpenMode::CreateOrOpen)?;
                file.set_len(0)?;
                file.write_all_at(next.to_string().as_bytes(), 0)?;
                file.sync_data()?;
                storage.sync_dir(&self.inner.dir)
            };
            write().map_err(|e| self.inner.poisoned(Error::io("seal", &path, e)))?;
            self.inner.sealed.store(true, Ordering::SeqCst);
        }
        Ok(next)
    }

    /// Undoes [`Log::seal`], for a reshard that was interrupted before it took effect.
    pub fn unseal(&self) -> Result<()> {
        let _ticket = self.inner.enter()?;
        let path = self.inner.dir.join(segment::SEALED_FILE);
        if self.inner.storage.exists(&path) {
            self.inner.note_change()?;
            self.inner
                .storage
                .remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            // Gone for every writer from here, whether or not the removal is durable yet.
            self.inner.sealed.store(false, Ordering::SeqCst);
            self.inner
                .storage
                .sync_dir(&self.inner.dir)
                .map_err(|e| Error::io("fsync", &self.inner.dir, e))?;
        }
        self.inner.sealed.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// True after an I/O failure: the log refuses appends until it is opened again.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poison.get().is_some()
    }

    /// True once the log is sealed (as of this handle's last look).
    pub fn is_sealed(&self) -> bool {
        self.inner.sealed.load(Ordering::SeqCst)
    }

    fn sync_locked(&self) -> Result<()> {
        let target = guard(&self.inner.writer).watermark();
        self.inner.wait_synced(target)
    }

    /// Makes everything appended so far durable (a no-op in `Always` mode, where it already is).
    pub fn sync(&self) -> Result<()> {
        let _ticket = self.inner.enter()?;
        self.sync_locked()
    }

    /// Seals the active segment now and starts a new one (no-op when it is empty).
    pub fn roll(&self) -> Result<()> {
        let _ticket = self.inner.enter()?;
        let mut writer = guard(&self.inner.writer);
        self.inner.check_poison()?;
        if writer.active.len == FILE_HEADER_LEN as u64 {
            return Ok(());
        }
        let now = self.inner.clock.now_ms().max(writer.last_timestamp_ms);
        self.inner.roll(&mut writer, now)
    }

    /// Deletes whole sealed segments that fall outside `policy`.
    pub fn enforce_retention(&self, policy: &Retention) -> Result<RetentionReport> {
        let _ticket = self.inner.enter()?;
        retention::enforce(&self.inner, policy)
    }

    /// Rewrites the sealed segment based at `base` keeping only the records `keep` accepts
    /// (their offsets, timestamps and bytes unchanged): written to a new file, renamed over the
    /// old one, directory fsynced. Readers holding the old file keep a valid mapping.
    pub fn compact_segment(
        &self,
        base: u64,
        keep: impl FnMut(&Record<'_>) -> bool,
    ) -> Result<CompactionReport> {
        let _ticket = self.inner.enter()?;
        compaction::compact(&self.inner, base, keep)
    }

    /// Base offsets of every segment, oldest first (the last one is active).
    pub fn segments(&self) -> Result<Vec<u64>> {
        Ok(segment::list(&*self.inner.storage, &self.inner.dir)?.segments)
    }

    /// Syncs (in `Interval` mode) and releases the lock. Dropping does the same, ignoring errors.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        *guard(&self.inner.stop) = true;
        self.inner.stop_signal.notify_all();
        if let Some(handle) = self.syncer.take() {
            let _ = handle.join();
        }
        if matches!(self.inner.options.durability, Durability::Interval(_))
            && self.inner.poison.get().is_none()
        {
            self.sync()?;
        }
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn spawn_syncer(inner: Weak<Inner>, every: Duration) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("shoal-log-sync".into())
        .spawn(move || {
            loop {
                let Some(inner) = inner.upgrade() else { return };
                {
                    // The stop may have come before this thread first got here (a handle
                    // dropped right after opening, as a CLI command's is): look before
                    // waiting, or the wait would run its whole interval.
                    let stop = guard(&inner.stop);
                    let (stop, _) = inner
                        .stop_signal
                        .wait_timeout_while(stop, every, |stop| !*stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *stop {
                        return;
                    }
                }
                // Nothing written since the last sync: do not even take the lock (for a shared
                // writer that would contend with other processes for nothing).
                let written = guard(&inner.writer).watermark();
                if guard(&inner.sync).synced.key() >= written.key() {
                    continue;
                }
                // A failure poisons the log; appenders see it on their next call.
                let _ = inner.enter().and_then(|_ticket| {
                    let target = guard(&inner.writer).watermark();
                    inner.wait_synced(target)
                });
            }
        })
        .unwrap_or_else(|e| panic!("cannot spawn the log sync thread: {e}"))
}

/// What follows the committed length of an active segment: a shared writer catching up and
/// a reader checking the head ask. A writer's batch starts there with a frame, whose fixed
/// part is never all zeros; a prefill is nothing but zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Past {
    /// The file ends before it: cut by someone, corruption.
    Short,
    /// The file ends there.
    Nothing,
    /// This many zeros (up to a frame's fixed part; fewer where the file ends): a prefill.
    Zeros(u64),
    /// Anything else: frames nothing committed (a batch its writer died before committing,
    /// or records a head older than the data does not cover).
    Data,
}

/// Reads the byte before `committed` and a frame's fixed part after it, as far as the file
/// goes: one call tells what a length query and a read would. (A stat asking for the change
/// time, as `File::metadata` does, also made the next write + fdatasync about 80 µs slower
/// on this machine; see `FsFile::len` and BENCHMARKS.md, "No stat before a write".)
fn past_committed(file: &dyn StorageFile, committed: u64) -> std::io::Result<Past> {
    let mut bytes = [0u8; 1 + record::FRAME_HEADER_LEN];
    let n = file.read_at(&mut bytes, committed.saturating_sub(1))?;
    Ok(match bytes.get(1..n) {
        None => Past::Short,
        Some([]) => Past::Nothing,
        Some(after) if after.iter().all(|&b| b == 0) => Past::Zeros(after.len() as u64),
        Some(_) => Past::Data,
    })
}

/// True when a log's head is missing or does not decode, or when its active segment holds
/// frames past the committed length (zeros written ahead of the data do not count). The head
/// is never fsynced, so after a power loss it can be older than the data: a reader trusting it
/// would not return acknowledged records. Such a log is opened for writing first, whose
/// recovery publishes a head that covers every record.
pub fn head_behind(storage: &dyn crate::storage::Storage, dir: &Path) -> bool {
    let head = storage
        .open(&dir.join(segment::HEAD_FILE), OpenMode::Read)
        .ok()
        .and_then(|file| reader::read_head(&*file, &dir.join(segment::HEAD_FILE)).ok());
    let Some(head) = head else {
        return true;
    };
    let Ok(file) = storage.open(
        &segment::segment_path(dir, head.active_base),
        OpenMode::Read,
    ) else {
        return false;
    };
    // Unreadable counts as behind: recovery then looks.
    past_committed(&*file, head.committed_len).map_or(true, |past| past == Past::Data)
}

impl Inner {
    /// Enters the writer lock: a shared writer takes the cross-process lock if no operation of
    /// this process holds it yet, and catches up with what other processes wrote meanwhile.
    fn enter(&self) -> Result<Ticket<'_>> {
        self.check_poison()?;
        let mut lock = guard(&self.lock);
        if let Some(file) = lock.file.as_ref().filter(|_| !lock.held) {
            file.lock()
                .map_err(|e| Error::io("lock", &self.lock_path, e))?;
            // Another process deleted the log (and may have made a new one in its place):
            // writing on would go to unlinked files, or meet the new log's by name.
            let gone = match file.removed() {
                Ok(removed) => removed.then(|| Error::NotFound {
                    kind: "log",
                    name: self.dir.display().to_string(),
                }),
                Err(e) => Some(Error::io("stat", &self.lock_path, e)),
            };
            if let Some(err) = gone {
                let _ = file.unlock();
                return Err(err);
            }
            if let Err(e) = self.catch_up() {
                let _ = file.unlock();
                return Err(self.poisoned(e));
            }
            lock.held = true;
        }
        lock.users += 1;
        Ok(Ticket(self))
    }

    /// Brings this writer up to the head another process published, and cuts bytes past it: a
    /// writer that died inside the lock may have left a batch it never acknowledged. Looks
    /// for a seal and for a dead roll's segment only when the `LOCK` file's change count moved
    /// since its last look.
    fn catch_up(&self) -> Result<()> {
        let changes = self.changes()?;
        let head_path = self.dir.join(segment::HEAD_FILE);
        let head_file = Arc::clone(&guard(&self.head).file);
        let head = reader::read_head(&*head_file, &head_path)?;
        let mut seen = guard(&self.changes_seen);
        if *seen != Some(changes) {
            let sealed = self.storage.exists(&self.dir.join(segment::SEALED_FILE));
            self.sealed.store(sealed, Ordering::SeqCst);
            self.remove_unpublished_segment(&head)?;
            *seen = Some(changes);
        }
        drop(seen);
        // Nobody published since this handle last did (or looked): the writer state is still
        // right unless a writer died leaving bytes past the head, which the length shows.
        let unchanged = head == guard(&self.head).head;
        let mut writer = guard(&self.writer);
        let w = &mut *writer;
        if head.active_base != w.active.base {
            w.active = recovery::open_active(&*self.storage, &self.dir, head.active_base)?;
        }
        let committed = head.committed_len;
        // Past the committed length there are zeros a writer wrote ahead (see `prefill`), or
        // the batch of a writer that died before committing it, which always starts right at
        // the committed length: the first frame's worth of bytes tells them apart. One read
        // says that and whether the file still reaches the committed length.
        let past = past_committed(&*w.active.file, committed)
            .map_err(|e| Error::io("read", &w.active.path, e))?;
        if past == Past::Short {
            let available = w
                .active
                .file
                .len()
                .map_err(|e| Error::io("stat", &w.active.path, e))?;
            return Err(Error::corruption(
                &w.active.path,
                available,
                crate::error::CorruptionKind::Truncated {
                    needed: committed,
                    available,
                },
            ));
        }
        let leftover = past == Past::Data;
        if leftover {
            w.active
                .file
                .set_len(committed)
                .map_err(|e| Error::io("truncate", &w.active.path, e))?;
        }
        if !unchanged || leftover {
            recovery::trim_index(&mut w.active, committed)?;
        }
        w.active.len = committed;
        // Zeros past the data: this writer's own prefill if nobody else wrote since, else
        // another's, of which it saw only the start.
        w.active.file_len = match past {
            Past::Zeros(_) if unchanged => w.active.file_len.max(committed),
            Past::Zeros(seen) => committed + seen,
            _ => committed,
        };
        w.next_offset = head.next_offset;
        w.last_timestamp_ms = head.last_timestamp_ms;
        let current = w.watermark();
        drop(writer);
        if head.synced_len == head.committed_len {
            self.mark_synced(current);
        }
        guard(&self.head).head = head;
        Ok(())
    }

    /// The change count in the `LOCK` file: how many times a writer created or removed one
    /// of the files a shared writer looks for when it takes the lock (the next segment of a
    /// roll, `SEALED`). 0 for a `LOCK` file without one (a new log's). Only ever compared
    /// for equality, so a count lost to a power loss is harmless: no handle outlives it.
    fn changes(&self) -> Result<u64> {
        let mut bytes = [0u8; 8];
        let read = self
            .changes_file
            .read_at(&mut bytes, 0)
            .map_err(|e| Error::io("read", &self.lock_path, e))?;
        Ok(if read == bytes.len() {
            u64::from_le_bytes(bytes)
        } else {
            0
        })
    }

    /// Moves the change count, inside the writer lock, before this writer creates or removes
    /// a file that shared writers look for only when the count moved: should it die between,
    /// the next writer still looks. This handle, which knows what it changes, need not.
    fn note_change(&self) -> Result<()> {
        let mut seen = guard(&self.changes_seen);
        let count = self.changes()?;
        let next = count.wrapping_add(1);
        self.changes_file
            .write_all_at(&next.to_le_bytes(), 0)
            .map_err(|e| self.poisoned(Error::io("write", &self.lock_path, e)))?;
        if *seen == Some(count) {
            *seen = Some(next);
        }
        Ok(())
    }

    /// Removes a segment (and its index) that a writer created for the head's next offset but
    /// never published: under the writer lock such a file can only be left by a writer that
    /// died in a roll (or whose roll failed) before the head named it. It holds nothing
    /// committed, and the offsets it was created for are about to be appended to the head's
    /// active segment. Left in place, it would sit between those records and the next segment
    /// once a later roll publishes one, and readers (which look for an offset in the segment
    /// with the highest base at or below it) would skip them. A roll only ever creates the
    /// segment named by the next offset, so one `stat` finds it; and since a roll moves the
    /// `LOCK` file's change count before it creates that segment, the writer taking the lock
    /// looks only when the count moved (a `stat` of a name never looked up before costs
    /// a directory search: 4 us a time here, more than the rest of the catch-up).
    fn remove_unpublished_segment(&self, head: &Head) -> Result<()> {
        if head.next_offset <= head.active_base {
            return Ok(());
        }
        let segment = segment::segment_path(&self.dir, head.next_offset);
        if !self.storage.exists(&segment) {
            return Ok(());
        }
        for path in [segment, segment::index_path(&self.dir, head.next_offset)] {
            match self.storage.remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", &path, e));
                }
                _ => {}
            }
        }
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync", &self.dir, e))
    }

    fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(cause) => Err(Error::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records an I/O failure: from now on nothing is assumed written and appends are refused.
    fn poisoned(&self, err: Error) -> Error {
        let _ = self.poison.set(err.to_string());
        err
    }

    fn validate(&self, entries: &[Entry<'_>]) -> Result<u64> {
        if entries.is_empty() {
            return Err(Error::InvalidArgument(
                "a batch needs at least one record".into(),
            ));
        }
        let max = u64::from(self.options.max_record_bytes);
        let mut total = 0u64;
        for entry in entries {
            let size = entry.header.len() as u64 + entry.payload.len() as u64;
            if size > max || entry.header.len() > MAX_HEADER_LEN {
                return Err(Error::RecordTooLarge { size, max });
            }
            total += record::FRAME_HEADER_LEN as u64 + size;
        }
        // Positions in a segment are u32 (the index stores them so).
        if total > u64::from(u32::MAX) / 2 {
            return Err(Error::InvalidArgument(format!(
                "a batch of {total} bytes is too large (limit 2 GiB)"
            )));
        }
        Ok(total)
    }

    /// Encodes and writes one batch; returns where it landed and the watermark to sync to.
    fn write_batch(&self, entries: &[Entry<'_>], batch_len: u64) -> Result<(Appended, Watermark)> {
        let mut guard_ = guard(&self.writer);
        let w = &mut *guard_;
        self.check_poison()?;
        // Timestamps never run backwards within a log, even if the clock does: the index
        // answers time lookups only because of it.
        let now = self.clock.now_ms().max(w.last_timestamp_ms);
        if self.should_roll(w, batch_len, now) {
            self.roll(w, now)?;
        }
        let position = w.active.len;
        if position + batch_len > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(
                "batch does not fit in a segment".into(),
            ));
        }
        w.frames.clear();
        w.entries.clear();
        let first_offset = w.next_offset;
        let last = entries.len() - 1;
        for (i, entry) in entries.iter().enumerate() {
            record::encode_into(
                &mut w.frames,
                &FrameFields {
                    offset: first_offset + i as u64,
                    timestamp_ms: now,
                    kind: entry.kind,
                    flags: if i == last { FLAG_END_OF_BATCH } else { 0 },
                    header: entry.header,
                    payload: entry.payload,
                },
            )
            .map_err(|e| Error::RecordTooLarge {
                size: e.size,
                max: u64::from(self.options.max_record_bytes),
            })?;
        }
        // Index entries go at batch starts only, so every indexed position is a batch boundary
        // recovery may safely cut back to.
        if position - w.active.last_indexed >= u64::from(self.options.index_interval_bytes) {
            let entry = IndexEntry {
                rel_offset: u32::try_from(first_offset - w.active.base)
                    .map_err(|_| Error::InvalidArgument("segment holds too many records".into()))?,
                position: u32::try_from(position)
                    .map_err(|_| Error::InvalidArgument("segment too large".into()))?,
                timestamp_ms: now,
            };
            w.entries.extend_from_slice(&entry.encode());
        }
        w.active
            .file
            .write_all_at(&w.frames, position)
            .map_err(|e| self.poisoned(Error::io("write", &w.active.path, e)))?;
        if !w.entries.is_empty() {
            let at = FILE_HEADER_LEN as u64 + w.active.index_entries * INDEX_ENTRY_LEN as u64;
            w.active
                .index_file
                .write_all_at(&w.entries, at)
                .map_err(|e| self.poisoned(Error::io("write", &w.active.index_path, e)))?;
            w.active.index_entries += 1;
            w.active.last_indexed = position;
        }
        w.active.len += batch_len;
        w.active.file_len = w.active.file_len.max(w.active.len);
        if self.options.prefill && batch_len <= PREFILL_MAX_BATCH {
            self.prefill(&mut w.active)?;
        }
        w.next_offset += entries.len() as u64;
        w.last_timestamp_ms = now;
        let watermark = w.watermark();
        if self.options.durability != Durability::Always {
            self.start_writeback(&w.active, position);
            // Written to the OS is committed in these modes: readers may see it now.
            self.publish(watermark, None)?;
        }
        Ok((
            Appended {
                first_offset,
                count: entries.len() as u64,
                timestamp_ms: now,
            },
            watermark,
        ))
    }

    /// Once fewer than `PREFILL_BYTES / 2` bytes of the file lie past the data, writes zeros up
    /// to `PREFILL_BYTES` past it (never past the segment's size limit, where it rolls), so
    /// that small batches overwrite blocks the file system has already allocated and sized:
    /// on ext4 an fdatasync that grows a file also commits the journal, one that overwrites
    /// does not. The zeros reach the disk with the batch's own fdatasync; they never decode
    /// as a frame (the checksum mask), and readers, recovery and other writers know them
    /// (FORMAT.md, Prefill).
    fn prefill(&self, active: &mut Active) -> Result<()> {
        if active.file_len >= active.len + PREFILL_BYTES / 2 {
            return Ok(());
        }
        let target = (active.len + PREFILL_BYTES).min(self.options.segment_bytes_max);
        if target <= active.file_len {
            return Ok(());
        }
        let zeros = ZEROS
            .get(..usize::try_from(target - active.file_len).unwrap_or(ZEROS.len()))
            .unwrap_or(&ZEROS);
        active
            .file
            .write_all_at(zeros, active.file_len)
            .map_err(|e| self.poisoned(Error::io("write", &active.path, e)))?;
        active.file_len += zeros.len() as u64;
        Ok(())
    }

    /// Starts writeback of the [`WRITEBACK_CHUNK`]s of the active segment that the batch
    /// written at `from` completed. Without it the kernel keeps an unsynced log's data in the
    /// page cache until the roll's fdatasync has to write the whole segment (64 MiB, a stall of
    /// 30-40 ms for the append that rolls, on this machine); with it the disk writes while the
    /// appender goes on and the roll finds little left. Nothing waits for these writes and
    /// nothing counts on them, so an error is ignored: a write that fails shows at the file's
    /// next fdatasync, which poisons the log.
    fn start_writeback(&self, active: &Active, from: u64) {
        let start = from - from % WRITEBACK_CHUNK;
        let end = active.len - active.len % WRITEBACK_CHUNK;
        if end > start {
            let _hint = active.file.start_writeback(start, end - start);
        }
    }

    fn should_roll(&self, w: &Writer, batch_len: u64, now: u64) -> bool {
        let has_records = w.active.len > FILE_HEADER_LEN as u64;
        let full = w.active.len + batch_len > self.options.segment_bytes_max;
        let old = self.options.segment_age_max.is_some_and(|age| {
            now.saturating_sub(w.active.base_timestamp_ms)
                >= u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
        });
        has_records && (full || old)
    }

    /// Seals the active segment and starts the next one at `w.next_offset`.
    fn roll(&self, w: &mut Writer, now: u64) -> Result<()> {
        // 1. A sealed segment is complete and durable in every mode: sync it and its index
        //    before the next segment exists, so recovery never has to look at it again. It
        //    ends at its last frame: the zeros of a prefill go first.
        // The file's real length: another process's prefill may have grown it past what
        // this writer knows (`Active::file_len`).
        let file_len = w
            .active
            .file
            .len()
            .map_err(|e| self.poisoned(Error::io("stat", &w.active.path, e)))?;
        if file_len > w.active.len {
            w.active
                .file
                .set_len(w.active.len)
                .map_err(|e| self.poisoned(Error::io("truncate", &w.active.path, e)))?;
            w.active.file_len = w.active.len;
        }
        w.active
            .file
            .sync_data()
            .map_err(|e| self.poisoned(Error::io("fsync", &w.active.path, e)))?;
        w.active
            .index_file
            .sync_data()
            .map_err(|e| self.poisoned(Error::io("fsync", &w.active.index_path, e)))?;
        let sealed = w.watermark();
        self.mark_synced(sealed);
        // 2. Create the next segment and its index (each fsynced), then fsync the directory so
        //    both names survive a power loss. Other shared writers look for a segment left by a
        //    roll that died here only once the change count moved.
        self.note_change()?;
        let base = w.next_offset;
        let header = FileHeader {
            kind: FileKind::Segment,
            base_offset: base,
            base_timestamp_ms: now,
        };
        let path = segment::segment_path(&self.dir, base);
        let index_path = segment::index_path(&self.dir, base);
        let file = segment::create_with_header(&*self.storage, &path, &header)
            .map_err(|e| self.poisoned(e))?;
        let index_file = segment::create_with_header(
            &*self.storage,
            &index_path,
            &FileHeader {
                kind: FileKind::Index,
                ..header
            },
        )
        .map_err(|e| self.poisoned(e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| self.poisoned(Error::io("fsync", &self.dir, e)))?;
        // 3. Switch, and tell readers: the head now names the new segment.
        w.active = Active {
            base,
            base_timestamp_ms: now,
            path,
            file,
            index_path,
            index_file,
            len: FILE_HEADER_LEN as u64,
            file_len: FILE_HEADER_LEN as u64,
            index_entries: 0,
            last_indexed: FILE_HEADER_LEN as u64,
        };
        w.last_timestamp_ms = now;
        let fresh = w.watermark();
        self.mark_synced(fresh);
        self.publish(fresh, Some(fresh.len))
    }

    fn mark_synced(&self, watermark: Watermark) {
        let mut sync = guard(&self.sync);
        if watermark.key() > sync.synced.key() {
            sync.synced = watermark;
        }
        drop(sync);
        self.synced.notify_all();
    }

    /// Blocks until everything up to `target` is fsynced; one caller syncs for all waiters.
    fn wait_synced(&self, target: Watermark) -> Result<()> {
        let mut sync = guard(&self.sync);
        loop {
            self.check_poison()?;
            if sync.synced.next_offset >= target.next_offset {
                return Ok(());
            }
            if sync.syncing {
                sync = self
                    .synced
                    .wait(sync)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            sync.syncing = true;
            drop(sync);
            let outcome = self.sync_once();
            sync = guard(&self.sync);
            sync.syncing = false;
            if let Ok(done) = outcome
                && done.key() > sync.synced.key()
            {
                sync.synced = done;
            }
            self.synced.notify_all();
            outcome?;
        }
    }

    /// fsyncs the active segment up to what has been written so far, then publishes it.
    fn sync_once(&self) -> Result<Watermark> {
        let (file, path, target) = {
            let w = guard(&self.writer);
            (
                Arc::clone(&w.active.file),
                w.active.path.clone(),
                w.watermark(),
            )
        };
        // Outside the writer lock: appenders keep writing the next group meanwhile, and this
        // one fsync covers every batch written before it started.
        file.sync_data()
            .map_err(|e| self.poisoned(Error::io("fsync", &path, e)))?;
        self.publish(target, Some(target.len))?;
        Ok(target)
    }

    /// Writes the head file if `watermark` is newer than what it holds.
    fn publish(&self, watermark: Watermark, synced_len: Option<u64>) -> Result<()> {
        let mut head = guard(&self.head);
        let current = Watermark {
            base: head.head.active_base,
            len: head.head.committed_len,
            next_offset: head.head.next_offset,
            last_timestamp_ms: head.head.last_timestamp_ms,
        };
        let mut next = head.head;
        if watermark.key() > current.key() {
            next.active_base = watermark.base;
            next.committed_len = watermark.len;
            next.next_offset = watermark.next_offset;
            next.last_timestamp_ms = watermark.last_timestamp_ms;
            if watermark.base != current.base {
                next.synced_len = FILE_HEADER_LEN as u64;
            }
        }
        if let Some(synced) = synced_len
            && watermark.base == next.active_base
        {
            next.synced_len = next.synced_len.max(synced).min(next.committed_len);
        }
        if next != head.head {
            head.file
                .write_all_at(&next.encode(), 0)
                .map_err(|e| self.poisoned(Error::io("write", &head.path, e)))?;
            head.head = next;
        }
        Ok(())
    }

    fn set_start_offset(&self, start: u64) -> Result<()> {
        let mut head = guard(&self.head);
        if head.head.start_offset >= start {
            return Ok(());
        }
        let mut next = head.head;
        next.start_offset = start;
        head.file
            .write_all_at(&next.encode(), 0)
            .map_err(|e| self.poisoned(Error::io("write", &head.path, e)))?;
        head.head = next;
        Ok(())
    }

    fn active_base(&self) -> u64 {
        guard(&self.writer).active.base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_order_by_records_then_segment() {
        let old = Watermark {
            base: 0,
            len: 500,
            next_offset: 10,
            last_timestamp_ms: 0,
        };
        // A roll: no new record, a newer segment with just its header.
        let rolled = Watermark {
            base: 10,
            len: 64,
            ..old
        };
        let appended = Watermark {
            base: 10,
            len: 200,
            next_offset: 11,
            ..old
        };
        assert!(rolled.key() > old.key());
        assert!(appended.key() > rolled.key());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let o = LogOptions::default();
        assert_eq!(o.segment_bytes_max, 64 << 20);
        assert_eq!(o.index_interval_bytes, 4096);
        assert_eq!(o.durability, Durability::Always);
        assert_eq!(o.writer_lock, WriterLock::Exclusive);
        assert!(!o.wait_for_lock);
    }

    #[test]
    fn invalid_options_are_refused_before_touching_storage() {
        let storage = crate::storage::SimStorage::new();
        let too_big = LogOptions {
            max_record_bytes: MAX_PAYLOAD_LEN + 1,
            ..LogOptions::default()
        };
        let clock = crate::clock::ManualClock::new(0);
        assert!(Log::open(Arc::new(storage.clone()), clock.clone(), "/l", too_big).is_err());
        let huge_segments = LogOptions {
            segment_bytes_max: 4 << 30,
            ..LogOptions::default()
        };
        assert!(
            Log::open(
                Arc::new(storage.clone()),
                clock.clone(),
                "/l",
                huge_segments
            )
            .is_err()
        );
        let no_interval = LogOptions {
            index_interval_bytes: 0,
            ..LogOptions::default()
        };
        assert!(matches!(
            Log::open(Arc::new(storage.clone()), clock, "/l", no_interval),
            Err(Error::InvalidArgument(_))
        ));
        assert!(storage.files().is_empty());
    }
}
