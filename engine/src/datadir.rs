//! The data directory: the one handle through which the CLI (and later the server) reaches
//! every queue, stream and topic.
//!
//! ```text
//! <root>/shoal.format          format version of the directory (metadata file)
//! <root>/LOCK                  held while shoal.format is written
//! <root>/streams/LOCK          serializes stream creation, deletion and resharding
//! <root>/streams/<name>/       one stream (see crate::stream)
//! <root>/queues/<name>/        one queue (see crate::queue)
//! <root>/topics/<name>/        one topic (see crate::topic)
//! ```
//!
//! Opening writes nothing: the first create of a queue, stream or topic makes the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::{SharedClock, SystemClock};
use crate::codec::FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::meta;
use crate::storage::{FsStorage, LockGuard, SharedStorage, Storage};

/// Name of the file recording the data directory's format version.
pub const FORMAT_FILE: &str = "shoal.format";
const FORMAT_MAGIC: [u8; 8] = *b"SHOALDIR";

#[derive(Debug, Serialize, Deserialize)]
struct DirFormat {
    version: u16,
    created_ms: u64,
}

/// An open data directory. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct DataDir {
    inner: Arc<DirInner>,
}

#[derive(Debug)]
pub(crate) struct DirInner {
    pub(crate) root: PathBuf,
    pub(crate) storage: SharedStorage,
    pub(crate) clock: SharedClock,
    pub(crate) options: DirOptions,
    /// The queues this process has open, one handle each (see [`DataDir::queue`]).
    pub(crate) open_queues:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<crate::queue::Queue>>>,
}

/// Settings of an open data directory that are not stored in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirOptions {
    /// Size at which queue logs start a new segment (default: 64 MiB for messages, 16 MiB for
    /// the state journal). Smaller segments let tests and benchmarks see rolls, retention
    /// and compaction without writing gigabytes.
    pub queue_segment_bytes: Option<u64>,
    /// State changes between a queue's automatic snapshots and between its automatic looks
    /// for disk space to give back (default: a snapshot every 4,096, a reclaim every 1,024).
    /// Small values let tests and fuzzers crash a queue in the middle of both.
    pub queue_maintenance_every: Option<u64>,
    /// This process is the only one using the directory's queues (a server that owns the
    /// directory): each queue's logs stay locked while it is open, so operations skip the
    /// per-operation cross-process lock and catch-up, and another process that opens or
    /// deletes the queue gets [`crate::Error::Locked`]. (In either mode one handle per queue
    /// is shared by all callers in the process.)
    pub exclusive: bool,
}

impl DataDir {
    /// Opens the data directory at `root` on the real filesystem. Nothing is written until
    /// something is made in it: a missing directory reads as an empty one, and the first
    /// queue, stream or topic creates it.
    pub fn open(root: impl Into<PathBuf>) -> Result<DataDir> {
        DataDir::open_with(root, Arc::new(FsStorage::new()), Arc::new(SystemClock))
    }

    /// Opens the data directory with the given storage and clock (tests inject both).
    pub fn open_with(
        root: impl Into<PathBuf>,
        storage: SharedStorage,
        clock: SharedClock,
    ) -> Result<DataDir> {
        DataDir::open_with_options(root, storage, clock, DirOptions::default())
    }

    /// Opens the data directory with the given storage, clock and options. Refuses a
    /// directory a newer shoal made.
    pub fn open_with_options(
        root: impl Into<PathBuf>,
        storage: SharedStorage,
        clock: SharedClock,
        options: DirOptions,
    ) -> Result<DataDir> {
        let root = root.into();
        let format_path = root.join(FORMAT_FILE);
        if let Some(format) = meta::read::<DirFormat>(&*storage, &format_path, FORMAT_MAGIC)?
            && format.version > FORMAT_VERSION
        {
            return Err(Error::UnsupportedVersion {
                file: format_path,
                found: format.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(DataDir {
            inner: Arc::new(DirInner {
                root,
                storage,
                clock,
                options,
                open_queues: std::sync::Mutex::default(),
            }),
        })
    }

    /// The directory's path.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Verifies every file of the data directory: headers, every record's checksum, indexes
    /// against the records they name, heads, seals and metadata. Changes nothing.
    pub fn check(&self) -> Result<crate::log::CheckReport> {
        let mut report = crate::log::CheckReport::default();
        let format_path = self.inner.root.join(FORMAT_FILE);
        report.files += 1;
        if let Err(e) = meta::read::<DirFormat>(&*self.inner.storage, &format_path, FORMAT_MAGIC) {
            report
                .problems
                .push(crate::log::Problem::from_error(&e, &format_path));
        }
        crate::stream::check_streams(&self.inner, &mut report)?;
        crate::queue::check_queues(&self.inner, &mut report)?;
        crate::topic::check_topics(&self.inner, &mut report)?;
        Ok(report)
    }

    pub(crate) fn inner(&self) -> &Arc<DirInner> {
        &self.inner
    }
}

impl DirInner {
    /// Takes the lock that orders the creation and deletion of one kind of resource (the
    /// `queues`, `streams` or `topics` directory's `LOCK`) to create one: makes the data
    /// directory, its format file and the kind's directory if missing.
    pub(crate) fn lock_kind_to_create(&self, kind_dir: &Path) -> Result<Box<dyn LockGuard>> {
        self.ensure_format()?;
        self.ensure_dir(kind_dir)?;
        self.lock(&kind_dir.join(crate::log::segment::LOCK_FILE))
    }

    /// Takes the same lock to change or delete a resource that must exist. Without the kind's
    /// directory no resource of the kind was ever made: `missing()`'s error, and nothing is
    /// written (a rejected command changes nothing on disk).
    pub(crate) fn lock_kind(
        &self,
        kind_dir: &Path,
        missing: impl FnOnce() -> Error,
    ) -> Result<Box<dyn LockGuard>> {
        if !self.storage.exists(kind_dir) {
            return Err(missing());
        }
        self.lock(&kind_dir.join(crate::log::segment::LOCK_FILE))
    }

    /// The resources of one kind, sorted: the names in `kind_dir` that `valid` accepts and
    /// that hold a `meta_file` (a resource exists once its metadata does). None when the
    /// kind's directory does not exist.
    pub(crate) fn list_kind(
        &self,
        kind_dir: &Path,
        meta_file: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let names = match self.storage.list_dir(kind_dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", kind_dir, e)),
        };
        let mut out: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| valid(n))
            .filter(|n| self.storage.exists(&kind_dir.join(n).join(meta_file)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Writes the format file if the directory has none yet, under the data directory's own
    /// lock so that processes making their first resources at once write it one at a time.
    fn ensure_format(&self) -> Result<()> {
        let path = self.root.join(FORMAT_FILE);
        if self.storage.exists(&path) {
            return Ok(());
        }
        self.ensure_dir(&self.root)?;
        let _lock = self.lock(&self.root.join(crate::log::segment::LOCK_FILE))?;
        if self.storage.exists(&path) {
            return Ok(());
        }
        meta::write(
            &*self.storage,
            &path,
            FORMAT_MAGIC,
            &DirFormat {
                version: FORMAT_VERSION,
                created_ms: self.clock.now_ms(),
            },
        )
    }

    /// Creates `dir` (and parents) if missing.
    pub(crate) fn ensure_dir(&self, dir: &Path) -> Result<()> {
        self.storage
            .create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))
    }

    /// Takes the exclusive lock file `path`, waiting for other processes.
    pub(crate) fn lock(&self, path: &Path) -> Result<Box<dyn LockGuard>> {
        self.storage
            .lock(path, true)
            .map_err(|e| Error::io("lock", path, e))
    }

    /// Removes `dir` and everything under it (files first, then directories), then syncs its
    /// parent. Readers that still have files of it mapped keep them.
    pub(crate) fn remove_tree(&self, dir: &Path) -> Result<()> {
        if !self.storage.exists(dir) {
            return Ok(());
        }
        remove_tree(&*self.storage, dir)?;
        if let Some(parent) = dir.parent() {
            self.storage
                .sync_dir(parent)
                .map_err(|e| Error::io("fsync", parent, e))?;
        }
        Ok(())
    }
}

fn remove_tree(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let names = match storage.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for name in names {
        let path = dir.join(name);
        match storage.remove_file(&path) {
            Ok(()) => {}
            // A directory (or gone meanwhile): recurse.
            Err(_) => remove_tree(storage, &path)?,
        }
    }
    match storage.remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::SimStorage;

    #[test]
    fn a_newer_data_directory_is_refused() {
        let sim = SimStorage::new();
        let storage: SharedStorage = Arc::new(sim.clone());
        let root = Path::new("/data");
        let data = DataDir::open_with(root, Arc::clone(&storage), ManualClock::new(0)).unwrap();
        assert!(!storage.exists(root), "an open alone made the directory");
        data.create_queue("q", &crate::queue::QueueAttributes::defaults(false))
            .unwrap();
        assert!(storage.exists(&root.join(FORMAT_FILE)));
        let newer = meta::encode(
            FORMAT_MAGIC,
            &DirFormat {
                version: FORMAT_VERSION + 1,
                created_ms: 0,
            },
        )
        .unwrap();
        sim.put_file(&root.join(FORMAT_FILE), &newer);
        let err = DataDir::open_with(root, storage, ManualClock::new(0)).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err}");
        assert!(err.to_string().contains("upgrade shoal"), "{err}");
    }
}
