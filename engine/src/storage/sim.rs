//! A simulated filesystem for fault-injection tests.
//!
//! Fault model (after redb's crash backend and TigerBeetle's storage simulator): every file has a
//! *live* image (what reads see) and a *durable* image (what survives power loss), and the
//! directory namespace likewise has a live and a durable version. `sync_data` copies a file's
//! live image to its durable one; `sync_dir` does the same for a directory's entries, so a file
//! created or renamed without a directory fsync vanishes in a power loss. On top of that a test
//! can make the Nth fsync fail with EIO (nothing becomes durable), cap the space so writes fail
//! with ENOSPC after writing what fits, tear the Nth write (a prefix is written, then EIO), flip
//! bits, and [`SimStorage::crash`] into a new storage holding what a process crash or a power
//! loss would leave, optionally with a torn prefix of each file's unsynced appended bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{LockFile, LockGuard, MappedBytes, Mapping, OpenMode, Storage, StorageFile, Watcher};

/// What a crash leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPlan {
    /// The process dies, the kernel survives: everything written stays readable, synced or
    /// not, and what was not synced stays as vulnerable to a later power loss as before.
    ProcessCrash,
    /// Power loss: only fsynced bytes and fsynced directory entries survive.
    PowerLoss,
    /// Power loss in which each file keeps up to `bytes` of the bytes written since its last
    /// fsync, from the first one that changed (a torn write of that length), appended or
    /// overwritten in place.
    PowerLossKeeping {
        /// How many unsynced bytes survive per file.
        bytes: u64,
    },
    /// Power loss in which each file keeps a pseudo-random prefix of its unsynced bytes.
    PowerLossTorn {
        /// Seed of the prefix lengths.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

type InodeRef = Arc<Mutex<Inode>>;

#[derive(Debug, Default)]
struct Faults {
    /// Fail the fsync when this many more have succeeded.
    syncs_before_failure: Option<u64>,
    /// Bytes that may still be added across all files.
    space_left: Option<u64>,
    /// Tear the write when this many more have succeeded, keeping this many bytes.
    tear: Option<(u64, usize)>,
}

#[derive(Debug, Default)]
struct State {
    /// Counts writes, creations, renames and removals, for watchers.
    changes: u64,
    live: BTreeMap<PathBuf, InodeRef>,
    durable: BTreeMap<PathBuf, InodeRef>,
    dirs_live: BTreeSet<PathBuf>,
    dirs_durable: BTreeSet<PathBuf>,
    /// Locked files: a lock, as `flock`'s, belongs to the file, not to its name.
    locks: Vec<InodeRef>,
    faults: Faults,
    /// Counts the power losses this filesystem's image has been through.
    boots: u64,
}

/// Counters of simulated I/O.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Bytes read with `read_exact_at` and `read_at`.
    pub bytes_read: AtomicU64,
    /// Length queries of files (`len`: a stat).
    pub file_stats: AtomicU64,
    /// Existence checks by name (`exists`: a stat of a path, which for a name the kernel
    /// has not looked up before means searching the directory).
    pub path_lookups: AtomicU64,
    /// Bytes whose writeback was asked to start (`start_writeback`; it changes nothing here:
    /// what is not fsynced is as lost in a crash as before).
    pub writeback_bytes: AtomicU64,
    /// Successful file fsyncs.
    pub file_syncs: AtomicU64,
    /// Directory fsyncs.
    pub dir_syncs: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    unlocked: Condvar,
    /// Signalled (with `state`) on every change a watcher would see.
    changed: Condvar,
    stats: SimStats,
}

/// The simulated filesystem. Clones share one filesystem.
#[derive(Clone, Default)]
pub struct SimStorage {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock already failed; keep going for its report.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl SimStorage {
    /// An empty filesystem.
    pub fn new() -> Self {
        SimStorage::default()
    }

    /// Locks the file `inode` (named `path` when it was opened).
    fn lock_inode(
        &self,
        path: &Path,
        inode: InodeRef,
        wait: bool,
    ) -> io::Result<Box<dyn LockGuard>> {
        let mut state = self.state();
        while state.locks.iter().any(|held| Arc::ptr_eq(held, &inode)) {
            if !wait {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            state = self
                .shared
                .unlocked
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.locks.push(Arc::clone(&inode));
        Ok(Box::new(SimLock {
            storage: self.clone(),
            path: path.to_path_buf(),
            inode,
        }))
    }

    /// Records a change for watchers (call with the state locked).
    fn changed(&self, state: &mut State) {
        state.changes += 1;
        self.shared.changed.notify_all();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Makes everything written so far durable, every file and every directory entry, as
    /// `sync(2)` or the kernel's own writeback in time would; counts no fsync and injects no
    /// fault.
    pub fn sync_all(&self) {
        let mut state = self.state();
        for inode in state.live.values() {
            let mut inode = lock(inode);
            inode.durable = inode.live.clone();
        }
        state.durable = state.live.clone();
        state.dirs_durable = state.dirs_live.clone();
    }

    /// Counters.
    pub fn stats(&self) -> &SimStats {
        &self.shared.stats
    }

    /// The fsync after `n` more successful ones fails with EIO (0: the next one).
    pub fn fail_sync_after(&self, n: u64) {
        self.state().faults.syncs_before_failure = Some(n);
    }

    /// From now on only `bytes` more bytes fit; a write past that writes what fits and fails
    /// with ENOSPC.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.state().faults.space_left = bytes;
    }

    /// The write after `n` more successful ones writes only its first `keep` bytes and fails
    /// with EIO.
    pub fn tear_write_after(&self, n: u64, keep: usize) {
        self.state().faults.tear = Some((n, keep));
    }

    /// True while a fault armed by [`SimStorage::fail_sync_after`] or
    /// [`SimStorage::tear_write_after`] has not fired yet (a sweep that arms one per step knows
    /// it went past the workload's last write or fsync).
    pub fn fault_pending(&self) -> bool {
        let faults = &self.state().faults;
        faults.syncs_before_failure.is_some() || faults.tear.is_some()
    }

    /// Clears every pending fault.
    pub fn clear_faults(&self) {
        self.state().faults = Faults::default();
    }

    /// Flips bits at `pos` (XOR with `mask`) in both images of a file: bit rot on the medium.
    pub fn corrupt(&self, path: &Path, pos: usize, mask: u8) -> io::Result<()> {
        let inode = self.inode(path)?;
        let mut inode = lock(&inode);
        let inode = &mut *inode;
        for image in [&mut inode.live, &mut inode.durable] {
            if let Some(byte) = image.get_mut(pos) {
                *byte ^= mask;
            }
        }
        Ok(())
    }

    /// A file's live contents.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inode = self.inode(path)?;
        let bytes = lock(&inode).live.clone();
        Ok(bytes)
    }

    /// Replaces a file's contents in both images (a test fixture writer).
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.state();
        let inode = Arc::new(Mutex::new(Inode {
            live: bytes.to_vec(),
            durable: bytes.to_vec(),
        }));
        state.live.insert(path.to_path_buf(), Arc::clone(&inode));
        state.durable.insert(path.to_path_buf(), inode);
    }

    /// Every live file path, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state().live.keys().cloned().collect()
    }

    fn inode(&self, path: &Path) -> io::Result<InodeRef> {
        self.state()
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }

    /// What the disk holds after a crash, as a new filesystem (locks are gone: their holders
    /// died). This storage stays usable, but the two no longer share anything.
    ///
    /// After a process crash the kernel still holds every write, so reads see all of them, but
    /// what was not fsynced is no more durable than before: a power loss of the returned
    /// storage loses it. A power loss keeps the durable images (and, if the plan says so, a
    /// torn prefix of what was written since), which are then all on disk.
    pub fn crash(&self, plan: CrashPlan) -> SimStorage {
        let state = self.state();
        let after = SimStorage::new();
        let mut new_state = after.state();
        if plan == CrashPlan::ProcessCrash {
            // The same files under the same live and durable names: an inode that has both
            // kinds of name stays one inode.
            let mut copies: HashMap<*const Mutex<Inode>, InodeRef> = HashMap::new();
            let mut copy = |inode: &InodeRef| {
                let copy = copies.entry(Arc::as_ptr(inode)).or_insert_with(|| {
                    let old = lock(inode);
                    Arc::new(Mutex::new(Inode {
                        live: old.live.clone(),
                        durable: old.durable.clone(),
                    }))
                });
                Arc::clone(copy)
            };
            new_state.live = (state.live.iter())
                .map(|(path, inode)| (path.clone(), copy(inode)))
                .collect();
            new_state.durable = (state.durable.iter())
                .map(|(path, inode)| (path.clone(), copy(inode)))
                .collect();
            new_state.dirs_live = state.dirs_live.clone();
            new_state.dirs_durable = state.dirs_durable.clone();
            new_state.boots = state.boots;
        } else {
            let mut rng = match plan {
                CrashPlan::PowerLossTorn { seed } => seed | 1,
                _ => 1,
            };
            for (path, inode) in &state.durable {
                let inode = lock(inode);
                let bytes = match plan {
                    CrashPlan::PowerLossKeeping { bytes } => torn(&inode, bytes),
                    CrashPlan::PowerLossTorn { .. } => {
                        // xorshift64: deterministic per seed, no dependency.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let extra = inode.live.len().saturating_sub(first_change(&inode)) as u64;
                        torn(&inode, rng % (extra + 1))
                    }
                    _ => inode.durable.clone(),
                };
                let file = Arc::new(Mutex::new(Inode {
                    live: bytes.clone(),
                    durable: bytes,
                }));
                new_state.durable.insert(path.clone(), Arc::clone(&file));
                new_state.live.insert(path.clone(), file);
            }
            new_state.dirs_live = state.dirs_durable.clone();
            new_state.dirs_durable = state.dirs_durable.clone();
            new_state.boots = state.boots + 1;
        }
        drop(new_state);
        after
    }
}

/// Where the live bytes first differ from the durable ones (or where the shorter ends).
fn first_change(inode: &Inode) -> usize {
    let (live, durable) = (&inode.live, &inode.durable);
    live.iter()
        .zip(durable)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| live.len().min(durable.len()))
}

/// The durable image with up to `keep` bytes of what was written since it, from the first
/// changed byte on: appended bytes, or bytes overwritten in place (a file's prefilled zeros),
/// each of which then reads back new up to that point and old after it.
fn torn(inode: &Inode, keep: u64) -> Vec<u8> {
    let (live, durable) = (&inode.live, &inode.durable);
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let end = first_change(inode).saturating_add(keep).min(live.len());
    let mut bytes = live.get(..end).unwrap_or(live).to_vec();
    bytes.extend_from_slice(durable.get(end..).unwrap_or_default());
    bytes
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let mut current = PathBuf::new();
        for part in path.components() {
            current.push(part);
            if state.dirs_live.insert(current.clone()) {
                // Created here: sync its parent, as the real implementation does.
                state.dirs_durable.insert(current.clone());
                self.shared.stats.dir_syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let state = self.state();
        if !state.dirs_live.contains(path) {
            return Err(not_found(path));
        }
        let files = state
            .live
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(ToOwned::to_owned));
        let dirs = state
            .dirs_live
            .iter()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(ToOwned::to_owned));
        Ok(files.chain(dirs).collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state();
        if !state.dirs_live.contains(&parent_of(path)) {
            return Err(not_found(path));
        }
        let existing = state.live.get(path).cloned();
        let inode = match (mode, existing) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (_, Some(inode)) => inode,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew | OpenMode::CreateOrOpen, None) => {
                let inode = InodeRef::default();
                state.live.insert(path.to_path_buf(), Arc::clone(&inode));
                self.changed(&mut state);
                inode
            }
        };
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        let inode = state.live.remove(from).ok_or_else(|| not_found(from))?;
        state.live.insert(to.to_path_buf(), inode);
        self.changed(&mut state);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.live.remove(path).ok_or_else(|| not_found(path))?;
        self.changed(&mut state);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let has_children = state.live.keys().any(|p| p.parent() == Some(path))
            || state.dirs_live.iter().any(|p| p.parent() == Some(path));
        if has_children {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{} is not empty", path.display()),
            ));
        }
        if !state.dirs_live.remove(path) {
            return Err(not_found(path));
        }
        state.dirs_durable.remove(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        let state = &mut *state;
        state.durable.retain(|p, _| p.parent() != Some(path));
        for (p, inode) in &state.live {
            if p.parent() == Some(path) {
                state.durable.insert(p.clone(), Arc::clone(inode));
            }
        }
        self.shared.stats.dir_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn lock(&self, path: &Path, wait: bool) -> io::Result<Box<dyn LockGuard>> {
        let inode = Arc::clone(self.state().live.entry(path.to_path_buf()).or_default());
        self.lock_inode(path, inode, wait)
    }

    fn open_lock_file(&self, path: &Path) -> io::Result<Box<dyn LockFile>> {
        let mut state = self.state();
        let inode = Arc::clone(state.live.entry(path.to_path_buf()).or_default());
        Ok(Box::new(SimLockFile {
            storage: self.clone(),
            path: path.to_path_buf(),
            inode,
            held: Mutex::new(None),
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        self.stats().path_lookups.fetch_add(1, Ordering::Relaxed);
        let state = self.state();
        state.live.contains_key(path) || state.dirs_live.contains(path)
    }

    fn boot_id(&self) -> u64 {
        // Never 0 (unknown): a fresh filesystem is boot 1, each power loss starts another.
        self.state().boots + 1
    }

    fn watch(&self, _dirs: &[&Path]) -> io::Result<Box<dyn Watcher>> {
        // Any change anywhere wakes it: callers look and wait again.
        let seen = self.state().changes;
        Ok(Box::new(SimWatcher {
            storage: self.clone(),
            seen,
        }))
    }
}

/// Wakes on any change to the simulated filesystem.
struct SimWatcher {
    storage: SimStorage,
    seen: u64,
}

impl fmt::Debug for SimWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimWatcher(seen {})", self.seen)
    }
}

impl Watcher for SimWatcher {
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.storage.state();
        while state.changes == self.seen {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            state = self
                .storage
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        self.seen = state.changes;
        Ok(true)
    }
}

/// A lock file kept open: each `lock` takes the simulated lock, `unlock` lets it go.
struct SimLockFile {
    storage: SimStorage,
    path: PathBuf,
    /// The file the name had when it was opened.
    inode: InodeRef,
    held: Mutex<Option<Box<dyn LockGuard>>>,
}

impl fmt::Debug for SimLockFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimLockFile({})", self.path.display())
    }
}

impl LockFile for SimLockFile {
    fn lock(&self) -> io::Result<()> {
        // The file opened, whatever its name has come to mean since.
        let guard = self
            .storage
            .lock_inode(&self.path, Arc::clone(&self.inode), true)?;
        *lock(&self.held) = Some(guard);
        Ok(())
    }

    fn unlock(&self) -> io::Result<()> {
        lock(&self.held).take();
        Ok(())
    }

    fn removed(&self) -> io::Result<bool> {
        let state = self.storage.state();
        Ok(!state
            .live
            .get(&self.path)
            .is_some_and(|inode| Arc::ptr_eq(inode, &self.inode)))
    }
}

struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    inode: InodeRef,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimLock({})", self.path.display())
    }
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.storage
            .state()
            .locks
            .retain(|held| !Arc::ptr_eq(held, &self.inode));
        self.storage.shared.unlocked.notify_all();
    }
}

struct SimFile {
    storage: SimStorage,
    inode: InodeRef,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").finish_non_exhaustive()
    }
}

fn to_usize(pos: u64) -> io::Result<usize> {
    usize::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.storage
            .stats()
            .file_stats
            .fetch_add(1, Ordering::Relaxed);
        Ok(lock(&self.inode).live.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let pos = to_usize(pos)?;
        let inode = lock(&self.inode);
        let src = pos
            .checked_add(buf.len())
            .and_then(|end| inode.live.get(pos..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        self.storage
            .stats()
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn start_writeback(&self, _pos: u64, len: u64) -> io::Result<()> {
        self.storage
            .stats()
            .writeback_bytes
            .fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let pos = to_usize(pos)?;
        let inode = lock(&self.inode);
        let src = inode.live.get(pos..).unwrap_or_default();
        let n = src.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(src.get(..n).unwrap_or_default());
        self.storage
            .stats()
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.check_writable()?;
        let pos = to_usize(pos)?;
        let mut keep = buf.len();
        let mut failure = None;
        // Lock order everywhere: filesystem state, then inode.
        let mut state = self.storage.state();
        if let Some((countdown, tear_keep)) = state.faults.tear.as_mut() {
            if *countdown == 0 {
                keep = keep.min(*tear_keep);
                failure = Some(io::Error::other("simulated torn write (EIO)"));
                state.faults.tear = None;
            } else {
                *countdown -= 1;
            }
        }
        let mut inode = lock(&self.inode);
        let old_len = inode.live.len();
        if let Some(left) = state.faults.space_left.as_mut() {
            let growth = (pos + keep).saturating_sub(old_len) as u64;
            if growth <= *left {
                *left -= growth;
            } else {
                let fits = usize::try_from(*left).unwrap_or(usize::MAX);
                *left = 0;
                keep = (old_len + fits).saturating_sub(pos).min(keep);
                failure = Some(io::Error::from(io::ErrorKind::StorageFull));
            }
        }
        let end = pos + keep;
        if inode.live.len() < end {
            inode.live.resize(end, 0);
        }
        inode.live[pos..end].copy_from_slice(&buf[..keep]);
        drop(inode);
        self.storage.changed(&mut state);
        failure.map_or(Ok(()), Err)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let len = to_usize(len)?;
        lock(&self.inode).live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut state = self.storage.state();
            if let Some(countdown) = state.faults.syncs_before_failure.as_mut() {
                if *countdown == 0 {
                    state.faults.syncs_before_failure = None;
                    return Err(io::Error::other("simulated fsync failure (EIO)"));
                }
                *countdown -= 1;
            }
        }
        let mut inode = lock(&self.inode);
        inode.durable = inode.live.clone();
        self.storage
            .stats()
            .file_syncs
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        let inode = lock(&self.inode);
        let end = to_usize(len)?.min(inode.live.len());
        Ok(Mapping::snapshot(Arc::new(Snapshot(
            inode.live[..end].to_vec(),
        ))))
    }
}

#[derive(Debug)]
struct Snapshot(Vec<u8>);

impl MappedBytes for Snapshot {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SimStorage, PathBuf) {
        let sim = SimStorage::new();
        let dir = PathBuf::from("/d");
        sim.create_dir_all(&dir).unwrap();
        (sim, dir)
    }

    #[test]
    fn power_loss_keeps_only_synced_bytes_and_entries() {
        let (sim, dir) = setup();
        let a = dir.join("a");
        let f = sim.open(&a, OpenMode::CreateNew).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b" and not", 7).unwrap();
        // The file itself was never made durable by a directory fsync.
        assert!(sim.crash(CrashPlan::PowerLoss).files().is_empty());
        sim.sync_dir(&dir).unwrap();
        let after = sim.crash(CrashPlan::PowerLoss);
        assert_eq!(after.contents(&a).unwrap(), b"durable");
        let kill = sim.crash(CrashPlan::ProcessCrash);
        assert_eq!(kill.contents(&a).unwrap(), b"durable and not");
        let torn = sim.crash(CrashPlan::PowerLossKeeping { bytes: 3 });
        assert_eq!(torn.contents(&a).unwrap(), b"durable an");
    }

    #[test]
    fn a_process_crash_makes_nothing_durable() {
        let (sim, dir) = setup();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        let f = sim.open(&a, OpenMode::CreateNew).unwrap();
        f.write_all_at(b"synced", 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(&dir).unwrap();
        f.write_all_at(b" and not", 6).unwrap();
        // A rename not yet made durable: power loss brings back the old name.
        sim.rename(&a, &b).unwrap();
        sim.open(&c, OpenMode::CreateNew).unwrap();
        let kill = sim.crash(CrashPlan::ProcessCrash);
        assert_eq!(kill.files(), vec![b.clone(), c.clone()]);
        assert_eq!(kill.contents(&b).unwrap(), b"synced and not");
        let lost = kill.crash(CrashPlan::PowerLoss);
        assert_eq!(lost.files(), vec![a.clone()]);
        assert_eq!(lost.contents(&a).unwrap(), b"synced");
        // Still one file under both names: an fsync through the new name covers the old.
        kill.open(&b, OpenMode::ReadWrite)
            .unwrap()
            .sync_data()
            .unwrap();
        let after = kill.crash(CrashPlan::PowerLoss);
        assert_eq!(after.contents(&a).unwrap(), b"synced and not");
        kill.sync_all();
        let after = kill.crash(CrashPlan::PowerLoss);
        assert_eq!(after.files(), vec![b.clone(), c]);
        assert_eq!(after.contents(&b).unwrap(), b"synced and not");
    }

    #[test]
    fn an_unsynced_overwrite_tears_like_an_append() {
        let (sim, dir) = setup();
        let a = dir.join("a");
        let f = sim.open(&a, OpenMode::CreateNew).unwrap();
        sim.sync_dir(&dir).unwrap();
        f.write_all_at(&[0; 12], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"data", 2).unwrap();
        let torn = sim.crash(CrashPlan::PowerLossKeeping { bytes: 3 });
        assert_eq!(torn.contents(&a).unwrap(), b"\0\0dat\0\0\0\0\0\0\0");
        let lost = sim.crash(CrashPlan::PowerLoss);
        assert_eq!(lost.contents(&a).unwrap(), [0; 12]);
        let kept = sim.crash(CrashPlan::PowerLossKeeping { bytes: u64::MAX });
        assert_eq!(kept.contents(&a).unwrap(), b"\0\0data\0\0\0\0\0\0");
    }

    #[test]
    fn failed_sync_makes_nothing_durable() {
        let (sim, dir) = setup();
        let a = dir.join("a");
        let f = sim.open(&a, OpenMode::CreateNew).unwrap();
        sim.sync_dir(&dir).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        sim.fail_sync_after(0);
        assert!(f.sync_data().is_err());
        assert_eq!(sim.crash(CrashPlan::PowerLoss).contents(&a).unwrap(), b"");
        f.sync_data().unwrap();
        assert_eq!(sim.crash(CrashPlan::PowerLoss).contents(&a).unwrap(), b"x");
    }

    #[test]
    fn enospc_writes_what_fits() {
        let (sim, dir) = setup();
        let f = sim.open(&dir.join("a"), OpenMode::CreateNew).unwrap();
        sim.set_space_left(Some(4));
        let err = f.write_all_at(b"abcdef", 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 4);
        // Overwriting in place needs no new space.
        f.write_all_at(b"xy", 0).unwrap();
    }

    #[test]
    fn torn_write_keeps_a_prefix() {
        let (sim, dir) = setup();
        let f = sim.open(&dir.join("a"), OpenMode::CreateNew).unwrap();
        sim.tear_write_after(1, 2);
        f.write_all_at(b"one", 0).unwrap();
        assert!(f.write_all_at(b"two", 3).is_err());
        assert_eq!(sim.contents(&dir.join("a")).unwrap(), b"onetw");
    }

    #[test]
    fn rename_is_durable_after_dir_sync() {
        let (sim, dir) = setup();
        let (a, b) = (dir.join("a"), dir.join("b"));
        sim.open(&a, OpenMode::CreateNew).unwrap();
        sim.sync_dir(&dir).unwrap();
        sim.rename(&a, &b).unwrap();
        assert_eq!(sim.crash(CrashPlan::PowerLoss).files(), vec![a.clone()]);
        sim.sync_dir(&dir).unwrap();
        assert_eq!(sim.crash(CrashPlan::PowerLoss).files(), vec![b]);
    }
}
