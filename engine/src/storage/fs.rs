//! The real filesystem.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{LockFile, LockGuard, MappedBytes, Mapping, OpenMode, Storage, StorageFile, Watcher};

/// Counters of what went through the file layer: tests use them to show that opening a large
/// log reads only its tail.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Bytes read with `read_exact_at` and `read_at`.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// fdatasync calls on files.
    pub file_syncs: AtomicU64,
    /// fsync calls on directories.
    pub dir_syncs: AtomicU64,
}

/// 48 bits of the kernel's boot id (a random UUID per boot), never 0 (which means unknown).
fn boot_hash(id: &str) -> u64 {
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    if hex.len() < 12 {
        return 0;
    }
    u64::from_str_radix(&hex, 16).map_or(0, |id| id.max(1))
}

/// `std::fs` plus `memmap2`.
#[derive(Debug, Default, Clone)]
pub struct FsStorage {
    stats: Arc<IoStats>,
}

impl FsStorage {
    /// A new handle with zeroed counters.
    pub fn new() -> Self {
        FsStorage::default()
    }

    /// The counters.
    pub fn stats(&self) -> &IoStats {
        &self.stats
    }
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.create_dir_all(parent)?;
        }
        match DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            // Another process created it first: fine, it did the parent fsync.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
            Err(e) => return Err(e),
        }
        // A new directory entry is durable only once its parent is synced.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        self.stats.dir_syncs.fetch_add(1, Ordering::Relaxed);
        fsync_dir(parent.unwrap_or_else(|| Path::new(".")))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true).mode(0o600);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true);
            }
            OpenMode::CreateOrOpen => {
                options.write(true).create(true);
            }
        }
        let file = options.open(path)?;
        Ok(Arc::new(FsFile {
            file,
            stats: Arc::clone(&self.stats),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.stats.dir_syncs.fetch_add(1, Ordering::Relaxed);
        fsync_dir(path)
    }

    fn lock(&self, path: &Path, wait: bool) -> io::Result<Box<dyn LockGuard>> {
        let file = open_lock_file(path)?;
        if wait {
            file.lock()?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(Box::new(FileLock(file)))
    }

    fn open_lock_file(&self, path: &Path) -> io::Result<Box<dyn LockFile>> {
        Ok(Box::new(FsLockFile(open_lock_file(path)?)))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn boot_id(&self) -> u64 {
        static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *BOOT.get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id").map_or(0, |id| boot_hash(&id))
        })
    }

    fn watch(&self, dirs: &[&Path]) -> io::Result<Box<dyn Watcher>> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        for dir in dirs {
            inotify::add_watch(
                &fd,
                *dir,
                WatchFlags::MODIFY
                    | WatchFlags::CREATE
                    | WatchFlags::MOVED_TO
                    | WatchFlags::DELETE
                    | WatchFlags::CLOSE_WRITE,
            )?;
        }
        Ok(Box::new(Inotify(fd)))
    }
}

/// An inotify instance watching some directories.
#[derive(Debug)]
struct Inotify(std::os::fd::OwnedFd);

impl Watcher for Inotify {
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<bool> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let timeout = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let ready = match poll(&mut fds, Some(&timeout)) {
            Ok(n) => n > 0,
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => return Err(e.into()),
        };
        if ready {
            // Drain what is queued: one wake-up per wait, however many changes.
            let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
            let mut events = rustix::fs::inotify::Reader::new(&self.0, &mut buf);
            loop {
                match events.next() {
                    Ok(_) => {}
                    Err(rustix::io::Errno::WOULDBLOCK) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(ready)
    }
}

/// Opens (creating, 0600) a lock file.
fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// A lock file kept open; `flock` on it and off again.
#[derive(Debug)]
struct FsLockFile(File);

impl LockFile for FsLockFile {
    fn lock(&self) -> io::Result<()> {
        self.0.lock()
    }

    fn unlock(&self) -> io::Result<()> {
        self.0.unlock()
    }

    fn removed(&self) -> io::Result<bool> {
        // A name unlinked or renamed over leaves this inode with no link.
        Ok(self.0.metadata()?.nlink() == 0)
    }
}

/// Holds an OS advisory lock; closing the file releases it.
#[derive(Debug)]
struct FileLock(#[allow(dead_code)] File);

impl LockGuard for FileLock {}

#[derive(Debug)]
struct FsFile {
    file: File,
    stats: Arc<IoStats>,
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        // The size alone. Asking for the change or modification time too (`File::metadata`
        // does) marks them as seen on a kernel with multigrain timestamps (Linux 6.13+), and
        // the file's next write must then update them: here that made each write + fdatasync
        // after such a stat about 80 µs slower (BENCHMARKS.md, "No stat before a write").
        let statx = rustix::fs::statx(
            &self.file,
            c"",
            rustix::fs::AtFlags::EMPTY_PATH,
            rustix::fs::StatxFlags::SIZE,
        )?;
        Ok(statx.stx_size)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.stats
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.file.read_exact_at(buf, pos)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut done = 0;
        while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
            match self.file.read_at(rest, pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.stats
            .bytes_read
            .fetch_add(done as u64, Ordering::Relaxed);
        Ok(done)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.stats
            .bytes_written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.file.write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.stats.file_syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data()
    }

    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(pos), Ok(len)) = (libc::off64_t::try_from(pos), libc::off64_t::try_from(len))
        else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: a system call on a descriptor `self.file` keeps open for its duration; it
        // touches no memory of this process.
        #[expect(
            unsafe_code,
            reason = "sync_file_range has no wrapper in std or rustix"
        )]
        let rc = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), pos, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("mapping too large"))?;
        if len == 0 {
            return Ok(Mapping::new(Arc::new(EmptyMap)));
        }
        // SAFETY: memmap2 hands out `&[u8]` over pages another process could change. shoal's
        // on-disk rules make that sound in practice: a segment's bytes below its committed
        // length are never rewritten in place (sealed segments are immutable; compaction and
        // retention replace or unlink whole files, which leaves existing mappings intact), and
        // readers touch only bytes below the committed length they read from the head file,
        // which recovery never cuts. The mapping may extend past the end of the file so an
        // active segment need not be remapped as it grows; bytes past the end are never
        // touched (touching them would raise SIGBUS, the worst outcome if a foreign process
        // truncated the file anyway).
        #[expect(
            unsafe_code,
            reason = "the only memory map in the engine; see SAFETY above"
        )]
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file)? };
        Ok(Mapping::new(Arc::new(FsMap(map))))
    }
}

#[derive(Debug)]
struct FsMap(memmap2::Mmap);

impl MappedBytes for FsMap {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug)]
struct EmptyMap;

impl MappedBytes for EmptyMap {
    fn bytes(&self) -> &[u8] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_boot_id_is_48_bits_of_the_kernels_and_stays_put() {
        assert_eq!(
            boot_hash("4a1f0c2e-9b3d-4e5f-8a7b-6c5d4e3f2a1b\n"),
            0x4a1f_0c2e_9b3d
        );
        assert_eq!(boot_hash(""), 0);
        assert_eq!(boot_hash("00000000-0000"), 1);
        let storage = FsStorage::new();
        let id = storage.boot_id();
        assert_ne!(
            id, 0,
            "/proc/sys/kernel/random/boot_id is readable on Linux"
        );
        assert!(id < 1 << 48);
        assert_eq!(FsStorage::new().boot_id(), id);
    }

    #[test]
    fn files_are_0600_and_dirs_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::new();
        let dir = tmp.path().join("a/b");
        storage.create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        storage.open(&file, OpenMode::CreateNew).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn map_past_end_sees_later_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::new();
        let path = tmp.path().join("f");
        let file = storage.open(&path, OpenMode::CreateNew).unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        let map = file.map(1 << 20).unwrap();
        assert_eq!(&map.bytes()[..3], b"abc");
        file.write_all_at(b"def", 3).unwrap();
        assert_eq!(&map.bytes()[..6], b"abcdef");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FsStorage::new();
        let path = tmp.path().join("LOCK");
        let guard = storage.lock(&path, false).unwrap();
        let err = storage.lock(&path, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(guard);
        storage.lock(&path, false).unwrap();
    }
}
