//! Fault injection through the storage seam (DESIGN rules 5 and 7): after an I/O failure
//! nothing is assumed written and the log refuses appends until reopened; retention and
//! compaction never modify a file a reader has mapped.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report, and test bytes wrap on purpose"
)]

mod common;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal_engine::Error;
use shoal_engine::clock::ManualClock;
use shoal_engine::log::{Durability, Entry, Log, LogOptions, LogReader, ReadLimit, Retention};
use shoal_engine::storage::{CrashPlan, FsStorage, SharedStorage, SimStorage, Storage};

fn batch(from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n).map(payload).collect()
}

fn append_bodies(log: &Log, bodies: &[Vec<u8>]) -> shoal_engine::Result<u64> {
    let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
    log.append(&entries).map(|a| a.first_offset)
}

#[test]
fn a_failed_fsync_poisons_the_log_until_reopened() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 30, 3);
    storage.fail_sync_after(0);
    let err = append_bodies(&log, &batch(30, 3)).unwrap_err();
    assert!(matches!(&err, Error::Io { op: "fsync", .. }), "{err}");
    // Every later append is refused, even though the next fsync would work.
    for _ in 0..3 {
        let err = append_bodies(&log, &batch(30, 1)).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    }
    assert!(matches!(log.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(log.roll(), Err(Error::Poisoned { .. })));
    // The failed batch was never acknowledged; readers were never told about it.
    assert_eq!(read_all(&log, 0).len(), 30);
    // After a power loss and reopen: every acknowledged record, nothing of the failed range.
    let after = storage.crash(CrashPlan::PowerLoss);
    drop(log);
    let log = open_sim(&after, &clock, &options);
    assert_holds(&log, 0, 30);
    append_records(&log, 5, 5);
    assert_holds(&log, 0, 35);
}

#[test]
fn a_failed_fsync_during_a_roll_poisons_too() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Never);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 1);
    storage.fail_sync_after(0);
    assert!(matches!(log.roll(), Err(Error::Io { op: "fsync", .. })));
    assert!(matches!(
        append_bodies(&log, &batch(10, 1)),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn enospc_during_append_is_a_clear_error_and_leaves_nothing_partial() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 20, 4);
    storage.set_space_left(Some(100));
    let big: Vec<Vec<u8>> = vec![vec![1u8; 90]; 3];
    let err = append_bodies(&log, &big).unwrap_err();
    assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull), "{err}");
    assert!(err.to_string().starts_with("cannot write "), "{err}");
    assert!(matches!(
        append_bodies(&log, &batch(20, 1)),
        Err(Error::Poisoned { .. })
    ));
    drop(log);
    storage.clear_faults();
    for plan in [CrashPlan::ProcessCrash, CrashPlan::PowerLoss] {
        let log = open_sim(&storage.crash(plan), &clock, &options);
        assert_holds(&log, 0, 20);
        assert!(log.recovery_report().truncated_bytes > 0 || plan == CrashPlan::PowerLoss);
    }
}

#[test]
fn a_torn_write_is_cut_at_reopen() {
    for keep in [0usize, 1, 31, 32, 33, 100] {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let options = small_options(Durability::Never);
        let log = open_sim(&storage, &clock, &options);
        append_records(&log, 12, 3);
        storage.tear_write_after(0, keep);
        assert!(append_bodies(&log, &batch(12, 3)).is_err());
        assert!(matches!(
            append_bodies(&log, &batch(12, 1)),
            Err(Error::Poisoned { .. })
        ));
        drop(log);
        let log = open_sim(&storage.crash(CrashPlan::ProcessCrash), &clock, &options);
        assert_holds(&log, 0, 12);
    }
}

#[test]
fn a_write_torn_at_every_512_byte_boundary_keeps_nothing_of_its_batch() {
    // One batch of 20 records, about 8 KiB written with one write: torn after each multiple
    // of 512 bytes (a sector), then a process crash (the torn bytes in the page cache) or a
    // power loss (only what was synced before). The acknowledged records stay, nothing of
    // the torn batch does, and the log takes appends again.
    let options = LogOptions {
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let big = |offset: u64| vec![offset as u8; 380 + (offset as usize % 7)];
    let bodies: Vec<Vec<u8>> = (10..30).map(big).collect();
    let batch_len: usize = bodies.iter().map(|b| b.len() + 32).sum();
    assert!(batch_len > 8000, "{batch_len}");
    let mut tears = 0;
    for keep in (0..batch_len).step_by(512) {
        for plan in [CrashPlan::ProcessCrash, CrashPlan::PowerLoss] {
            let storage = SimStorage::new();
            let clock = ManualClock::new(0);
            let log = open_sim(&storage, &clock, &options);
            append_records(&log, 10, 3);
            storage.tear_write_after(0, keep);
            assert!(append_bodies(&log, &bodies).is_err(), "keep {keep}");
            drop(log);
            let log = open_sim(&storage.crash(plan), &clock, &options);
            assert_eq!(log.next_offset(), 10, "keep {keep}, {plan:?}");
            assert_holds(&log, 0, 10);
            assert_eq!(append_bodies(&log, &bodies[..2]).unwrap(), 10);
            tears += 1;
        }
    }
    assert_eq!(tears, 2 * batch_len.div_ceil(512));
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_appenders() {
    /// Simulated storage whose fsync takes 2 ms, like a slow disk.
    #[derive(Debug, Clone)]
    struct SlowSync(SimStorage);
    #[derive(Debug)]
    struct SlowFile(Arc<dyn shoal_engine::storage::StorageFile>);
    impl shoal_engine::storage::StorageFile for SlowFile {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
            self.0.read_exact_at(buf, pos)
        }
        fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            self.0.read_at(buf, pos)
        }
        fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
            self.0.start_writeback(pos, len)
        }
        fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
            self.0.write_all_at(buf, pos)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            std::thread::sleep(Duration::from_millis(2));
            self.0.sync_data()
        }
        fn map(&self, len: u64) -> io::Result<shoal_engine::storage::Mapping> {
            self.0.map(len)
        }
    }
    impl Storage for SlowSync {
        fn create_dir_all(&self, path: &std::path::Path) -> io::Result<()> {
            self.0.create_dir_all(path)
        }
        fn list_dir(&self, path: &std::path::Path) -> io::Result<Vec<std::ffi::OsString>> {
            self.0.list_dir(path)
        }
        fn open(
            &self,
            path: &std::path::Path,
            mode: shoal_engine::storage::OpenMode,
        ) -> io::Result<Arc<dyn shoal_engine::storage::StorageFile>> {
            Ok(Arc::new(SlowFile(self.0.open(path, mode)?)))
        }
        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove_file(&self, path: &std::path::Path) -> io::Result<()> {
            self.0.remove_file(path)
        }
        fn remove_dir(&self, path: &std::path::Path) -> io::Result<()> {
            self.0.remove_dir(path)
        }
        fn sync_dir(&self, path: &std::path::Path) -> io::Result<()> {
            self.0.sync_dir(path)
        }
        fn lock(
            &self,
            path: &std::path::Path,
            wait: bool,
        ) -> io::Result<Box<dyn shoal_engine::storage::LockGuard>> {
            self.0.lock(path, wait)
        }
        fn open_lock_file(
            &self,
            path: &std::path::Path,
        ) -> io::Result<Box<dyn shoal_engine::storage::LockFile>> {
            self.0.open_lock_file(path)
        }
        fn exists(&self, path: &std::path::Path) -> bool {
            self.0.exists(path)
        }
        fn watch(
            &self,
            dirs: &[&std::path::Path],
        ) -> io::Result<Box<dyn shoal_engine::storage::Watcher>> {
            self.0.watch(dirs)
        }
    }

    let sim = SimStorage::new();
    let storage: SharedStorage = Arc::new(SlowSync(sim.clone()));
    let clock = ManualClock::new(0);
    let options = LogOptions {
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let log = Arc::new(Log::open(storage, clock, sim_dir(), options).unwrap());
    let syncs_before = sim
        .stats()
        .file_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    let threads = 8;
    let per_thread = 25;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let log = Arc::clone(&log);
            scope.spawn(move || {
                for i in 0..per_thread {
                    let body = format!("{t}-{i}");
                    log.append(&[Entry::new(body.as_bytes())]).unwrap();
                }
            });
        }
    });
    let syncs = sim
        .stats()
        .file_syncs
        .load(std::sync::atomic::Ordering::Relaxed)
        - syncs_before;
    let appends = (threads * per_thread) as u64;
    assert_eq!(log.next_offset(), appends);
    // Without group commit every append would cost its own fsync.
    assert!(
        syncs * 2 <= appends,
        "{syncs} fsyncs for {appends} concurrent appends"
    );
    // And every acknowledged append is durable.
    drop(log);
    let after = sim.crash(CrashPlan::PowerLoss);
    let log = open_sim(&after, &ManualClock::new(0), &LogOptions::default());
    assert_eq!(log.next_offset(), appends);
}

#[test]
fn interval_mode_syncs_in_the_background_and_on_close() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        durability: Durability::Interval(Duration::from_millis(5)),
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 10);
    // The background thread makes it durable without anyone asking (bounded wait, no timing
    // assertion: the check is that it happens at all).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let survivor = storage.crash(CrashPlan::PowerLoss);
        if open_sim(&survivor, &clock, &options).next_offset() == 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "interval sync never happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    append_records(&log, 5, 5);
    log.close().unwrap();
    let log = open_sim(&storage.crash(CrashPlan::PowerLoss), &clock, &options);
    assert_holds(&log, 0, 15);
}

/// Closing an `interval` log stops its sync thread at once, even when the close comes
/// before the thread first waits (a handle dropped right after opening, as a CLI command's
/// is): the thread used to miss that stop and sleep out its whole interval, so a `shoal send`
/// to a queue synced every 5 s took 5 s to exit. Bounded wait, no timing assertion beyond
/// "not the hour".
#[test]
fn closing_an_interval_log_right_after_opening_does_not_wait_out_the_interval() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let options = LogOptions {
            durability: Durability::Interval(Duration::from_secs(3600)),
            ..LogOptions::default()
        };
        for _ in 0..20 {
            let log = open_sim(&storage, &clock, &options);
            append_records(&log, 1, 1);
            log.close().unwrap();
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("closing waited for the sync interval");
}

#[test]
fn never_mode_survives_a_process_crash_but_not_necessarily_power_loss() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        durability: Durability::Never,
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 2);
    let crashed = storage.crash(CrashPlan::ProcessCrash);
    let lost = storage.crash(CrashPlan::PowerLoss);
    drop(log);
    assert_holds(&open_sim(&crashed, &clock, &options), 0, 10);
    // Nothing was fsynced: the records are gone, but the log still opens cleanly.
    assert_holds(&open_sim(&lost, &clock, &options), 0, 0);
}

/// A log that does not fsync each batch asks the OS to start writing each completed chunk of
/// `WRITEBACK_CHUNK` bytes right away, once, so a roll's fdatasync finds little left. An
/// `always` log, fsyncing every batch, never asks.
#[test]
fn unsynced_logs_start_writeback_of_each_completed_chunk() {
    use shoal_engine::log::WRITEBACK_CHUNK;
    use std::sync::atomic::Ordering;
    let chunk = usize::try_from(WRITEBACK_CHUNK).unwrap();
    let record = vec![7u8; 100 << 10];
    let batches = (3 * chunk + chunk / 2) / record.len();
    for durability in [Durability::Never, Durability::Always] {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let options = LogOptions {
            durability,
            ..LogOptions::default()
        };
        let log = open_sim(&storage, &clock, &options);
        for _ in 0..batches {
            log.append(&[Entry::new(&record)]).unwrap();
        }
        let hinted = storage.stats().writeback_bytes.load(Ordering::Relaxed);
        if durability == Durability::Never {
            assert_eq!(
                hinted,
                3 * WRITEBACK_CHUNK,
                "each of the three whole chunks, once"
            );
        } else {
            assert_eq!(hinted, 0);
        }
    }
}

#[test]
fn retention_by_age_and_size_deletes_whole_sealed_segments() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000_000);
    let options = LogOptions {
        segment_bytes_max: 1024,
        ..small_options(Durability::Always)
    };
    let log = open_sim(&storage, &clock, &options);
    for _ in 0..10 {
        append_records(&log, 20, 4);
        clock.advance(60_000);
    }
    let segments = log.segments().unwrap();
    assert!(segments.len() > 10);
    // Nothing is an hour old yet.
    let hour = Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
        below_offset: None,
    };
    assert!(
        log.enforce_retention(&hour)
            .unwrap()
            .removed_segments
            .is_empty()
    );
    // Keep five minutes: records appended in the first five rounds go, as whole segments.
    let five_minutes = Retention {
        max_age: Some(Duration::from_secs(300)),
        max_bytes: None,
        below_offset: None,
    };
    let report = log.enforce_retention(&five_minutes).unwrap();
    assert!(!report.removed_segments.is_empty());
    let start = report.start_offset;
    assert_eq!(log.start_offset(), start);
    assert_eq!(log.segments().unwrap()[0], start);
    assert!(
        start <= 120,
        "records younger than five minutes were removed: {start}"
    );
    assert!(start >= 60, "too little removed: {start}");
    assert_holds(&log, start, 200);
    assert!(matches!(
        log.read(0, ReadLimit::records(1)),
        Err(Error::OffsetTrimmed { requested: 0, start: s }) if s == start
    ));
    // Size: keep at most ~3 KiB. The active segment is never removed.
    let report = log
        .enforce_retention(&Retention {
            max_age: None,
            max_bytes: Some(3 * 1024),
            below_offset: None,
        })
        .unwrap();
    let remaining = log.segments().unwrap();
    assert!(remaining.len() <= 4, "{remaining:?}");
    assert_eq!(remaining[0], report.start_offset);
    let everything = Retention {
        max_age: None,
        max_bytes: Some(0),
        below_offset: None,
    };
    log.enforce_retention(&everything).unwrap();
    assert_eq!(log.segments().unwrap().len(), 1);
    // A reopened log and a fresh reader agree on the new start.
    let start = log.start_offset();
    drop(log);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.start_offset(), start);
    assert_holds(&log, start, 200);
}

#[test]
fn compaction_and_retention_leave_mapped_readers_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: SharedStorage = Arc::new(FsStorage::new());
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = Log::open(storage.clone(), clock.clone(), tmp.path(), options).unwrap();
    append_records(&log, 100, 5);
    let segments = log.segments().unwrap();
    let (first, second) = (segments[0], segments[1]);
    // A reader holds records of the first segment, borrowed from its memory map.
    let held = log.read(first, ReadLimit::records(1000)).unwrap();
    let held_copy: Vec<(u64, Vec<u8>)> = held
        .iter()
        .map(|r| (r.offset, r.payload.to_vec()))
        .collect();
    assert_eq!(held_copy.len() as u64, second - first);
    // Compaction drops the odd offsets of that segment.
    let report = log.compact_segment(first, |r| r.offset % 2 == 0).unwrap();
    assert_eq!(report.records_kept + report.records_removed, second - first);
    assert!(report.bytes_after < report.bytes_before);
    // The held batch still reads the old bytes, unchanged.
    let still: Vec<(u64, Vec<u8>)> = held
        .iter()
        .map(|r| (r.offset, r.payload.to_vec()))
        .collect();
    assert_eq!(still, held_copy);
    // New reads see the compacted segment: gaps skipped, offsets preserved.
    let fresh: Vec<u64> = read_all(&log, first)
        .iter()
        .map(|(o, _)| *o)
        .take_while(|o| *o < second)
        .collect();
    assert_eq!(
        fresh,
        (first..second).filter(|o| o % 2 == 0).collect::<Vec<_>>()
    );
    for (offset, bytes) in read_all(&log, 0) {
        assert_eq!(bytes, payload(offset));
    }
    // Reading an offset compaction removed returns the next one kept.
    let batch = log.read(first + 1, ReadLimit::records(1)).unwrap();
    assert_eq!(batch.iter().next().unwrap().offset, first + 2);
    // Retention now unlinks the segment; the held mapping is still fine.
    let held2 = log.read(first, ReadLimit::records(1000)).unwrap();
    log.enforce_retention(&Retention {
        max_age: None,
        max_bytes: Some(0),
        below_offset: None,
    })
    .unwrap();
    assert!(held2.iter().all(|r| r.payload == payload(r.offset)));
    assert_eq!(
        still,
        held.iter()
            .map(|r| (r.offset, r.payload.to_vec()))
            .collect::<Vec<_>>()
    );
    // No compaction leftovers; reopen is clean.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".compact")), "{names:?}");
    drop(log);
    let log = Log::open(
        storage,
        clock,
        tmp.path(),
        small_options(Durability::Always),
    )
    .unwrap();
    assert!(log.recovery_report().removed_files.is_empty());
    assert_eq!(log.next_offset(), 100);
}

#[test]
fn enospc_during_compaction_leaves_the_old_segment_intact() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 100, 5);
    let first = log.segments().unwrap()[0];
    let path = segment_file(&sim_dir(), first);
    let before = storage.contents(&path).unwrap();
    storage.set_space_left(Some(200));
    let err = log
        .compact_segment(first, |r| r.offset % 3 == 0)
        .unwrap_err();
    assert_eq!(err.io_kind(), Some(io::ErrorKind::StorageFull), "{err}");
    storage.clear_faults();
    assert_eq!(storage.contents(&path).unwrap(), before);
    assert!(
        !storage
            .files()
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".compact")),
        "temporary files left behind"
    );
    assert_holds(&log, 0, 100);
    // Compaction is not a write to the active segment: appends still work.
    append_records(&log, 1, 1);
}

#[test]
fn a_crash_in_the_middle_of_compaction_recovers_either_version() {
    // Crash images after each step of the swap, taken by replaying it by hand.
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 100, 5);
    let first = log.segments().unwrap()[0];
    drop(log);
    let path = segment_file(&sim_dir(), first);
    let index = sim_dir().join(format!("{first:020}.index"));
    // 1. Only the temporary copy exists.
    let temp = sim_dir().join(format!("{first:020}.log.compact"));
    storage.put_file(&temp, b"partial");
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.recovery_report().removed_files, vec![temp.clone()]);
    assert_holds(&log, 0, 100);
    drop(log);
    // 2. The old index is gone, the segment not yet replaced.
    storage.remove_file(&index).unwrap();
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.recovery_report().indexes_rebuilt, vec![first]);
    assert_holds(&log, 0, 100);
    assert!(storage.exists(&path));
}

/// Regression (`fuzz/regressions/log_model/stale-head-after-compaction`): a reader whose cached
/// head still names a segment as active after it was sealed and compacted read it up to the old
/// committed length, past the end of the compacted file, and reported corruption.
#[test]
fn a_read_after_a_roll_and_compaction_does_not_trust_a_stale_head() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = LogOptions {
        segment_bytes_max: 1024,
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    let body = [7u8; 300];
    log.append(&[Entry::new(&body), Entry::new(&body), Entry::new(&body)])
        .unwrap();
    // The reader caches a head saying segment 0 is active, committed up to offset 3.
    assert_eq!(log.read(0, ReadLimit::records(1)).unwrap().len(), 1);
    log.append(&[Entry::new(&body)]).unwrap(); // rolls: segment 3 is active
    assert_eq!(log.segments().unwrap(), vec![0, 3]);
    log.compact_segment(0, |r| r.offset != 0).unwrap();
    let offsets: Vec<u64> = log
        .read(1, ReadLimit::records(10))
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![1, 2]);

    // The same through a reader of "another process": its head is refreshed by nothing this
    // log does, and it opens the compacted file only after the compaction.
    let storage = SimStorage::new();
    let log = open_sim(&storage, &clock, &options);
    log.append(&[Entry::new(&body), Entry::new(&body), Entry::new(&body)])
        .unwrap();
    let reader = LogReader::open(Arc::new(storage.clone()), sim_dir()).unwrap();
    assert_eq!(reader.next_offset().unwrap(), 3);
    log.append(&[Entry::new(&body)]).unwrap();
    log.compact_segment(0, |r| r.offset != 0).unwrap();
    let offsets: Vec<u64> = reader
        .read(1, ReadLimit::records(10))
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![1, 2]);
    assert_eq!(reader.read(3, ReadLimit::records(10)).unwrap().len(), 1);
}

/// Regression (`fuzz/regressions/log_model/empty-read-in-compaction-gap`): a read from an
/// offset compaction removed, with nothing kept up to the end of what the reader last saw,
/// answered empty from its cached head forever, never seeing records appended since.
#[test]
fn a_poller_in_a_compaction_gap_sees_new_records() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let log = open_sim(&storage, &clock, &LogOptions::default());
    log.append(&[Entry::new(b"a"), Entry::new(b"b"), Entry::new(b"c")])
        .unwrap();
    log.roll().unwrap();
    log.compact_segment(0, |r| r.offset == 0).unwrap();
    let reader = LogReader::open(Arc::new(storage.clone()), sim_dir()).unwrap();
    for r in [log.reader(), &reader] {
        let batch = r.read(1, ReadLimit::records(10)).unwrap();
        assert!(batch.is_empty());
        assert_eq!(batch.next_offset(), 1);
    }
    log.append(&[Entry::new(b"d"), Entry::new(b"e")]).unwrap();
    for r in [log.reader(), &reader] {
        let offsets: Vec<u64> = r
            .read(1, ReadLimit::records(10))
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, vec![3, 4]);
    }
}

/// Regression (`fuzz/regressions/log_model/unsynced-segment-after-failed-roll`): a roll that
/// failed after creating the next segment left its directory entry unsynced; the next open
/// adopted that segment without fsyncing the directory, so a record acknowledged into it was
/// lost in a power loss.
#[test]
fn a_segment_left_by_a_failed_roll_is_made_durable_before_appends_into_it() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = LogOptions {
        segment_bytes_max: 1024,
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    let body = [7u8; 300];
    log.append(&[Entry::new(&body), Entry::new(&body), Entry::new(&body)])
        .unwrap();
    // The roll's fourth fsync (the new index) fails: segment 3 exists, the directory is not
    // fsynced.
    storage.fail_sync_after(3);
    assert!(log.append(&[Entry::new(&body)]).is_err());
    drop(log);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.segments().unwrap(), vec![0, 3]);
    let acked = log.append(&[Entry::new(b"acknowledged")]).unwrap();
    assert_eq!(acked.first_offset, 3);
    drop(log);
    let log = open_sim(&storage.crash(CrashPlan::PowerLoss), &clock, &options);
    assert_eq!(log.next_offset(), 4, "the acknowledged record survives");
    let batch = log.read(3, ReadLimit::records(1)).unwrap();
    assert_eq!(batch.iter().next().unwrap().payload, b"acknowledged");
}

/// A head naming an empty segment that is gone (a roll made it the active one, nothing was
/// appended): only a name was lost, and the log opens from the segments that exist, the one
/// before it (sealed, so fsynced whole) active again. (With records committed to it, the
/// open refuses: `repair::a_missing_active_segment_is_reported_and_its_offsets_never_reused`.)
#[test]
fn a_head_naming_a_missing_empty_segment_opens_from_the_segments_that_exist() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 40, 4);
    log.roll().unwrap();
    let segments = log.segments().unwrap();
    let last = *segments.last().unwrap();
    assert_eq!(
        last, 40,
        "the roll made an empty segment at the next offset"
    );
    drop(log);
    storage
        .remove_file(&segment_file(&sim_dir(), last))
        .unwrap();
    storage
        .remove_file(&sim_dir().join(format!("{last:020}.index")))
        .unwrap();
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, last);
    append_records(&log, 5, 5);
    assert_holds(&log, 0, last + 5);
    drop(log);
    let log = open_sim(&storage.crash(CrashPlan::PowerLoss), &clock, &options);
    assert_holds(&log, 0, last + 5);
}

/// Shared writers: one that dies in a roll after creating the next segment, before publishing
/// the head, must not leave the others appending those offsets to the old segment with an
/// empty segment file above them (which made readers skip the records once a later roll
/// published a newer segment).
#[test]
fn a_shared_writer_that_dies_mid_roll_leaves_a_consistent_log() {
    use shoal_engine::log::WriterLock;
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = LogOptions {
        writer_lock: WriterLock::Shared,
        ..small_options(Durability::Always)
    };
    let first = open_sim(&storage, &clock, &options);
    let second = open_sim(&storage, &clock, &options);
    append_records(&first, 3, 3);
    // The first writer's roll creates segment 3 (fsyncs: old segment, old index, new segment)
    // and fails creating its index: as if it died there, before the head names segment 3.
    storage.fail_sync_after(3);
    assert!(first.roll().is_err());
    assert!(storage.exists(&segment_file(&sim_dir(), 3)));
    drop(first);
    // The other writer carries on at offset 3, then rolls.
    assert_eq!(append_bodies(&second, &batch(3, 2)).unwrap(), 3);
    second.roll().unwrap();
    assert_eq!(append_bodies(&second, &batch(5, 1)).unwrap(), 5);
    assert_holds(&second, 0, 6);
    let reader = LogReader::open(Arc::new(storage.clone()), sim_dir()).unwrap();
    let offsets: Vec<u64> = reader
        .read(3, ReadLimit::records(10))
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![3, 4]);
    drop(second);
    for plan in [CrashPlan::ProcessCrash, CrashPlan::PowerLoss] {
        let log = open_sim(&storage.crash(plan), &clock, &options);
        assert_holds(&log, 0, 6);
    }
}

/// Taking the lock, a shared writer looks for a seal and for a segment left by a dead roll
/// (a stat of a path each: a directory search for a name never looked up before) only when
/// the `LOCK` file's change count moved, which a roll, a seal and an unseal do first; never
/// after an ordinary append. The dead roll itself: the test above.
#[test]
fn a_shared_writer_looks_for_new_files_only_after_a_roll_or_a_seal() {
    use shoal_engine::log::WriterLock;
    use std::sync::atomic::Ordering::Relaxed;
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = LogOptions {
        writer_lock: WriterLock::Shared,
        durability: Durability::Never,
        ..LogOptions::default()
    };
    let first = open_sim(&storage, &clock, &options);
    let second = open_sim(&storage, &clock, &options);
    let lookups = || storage.stats().path_lookups.load(Relaxed);
    // Each handle's first lock looks.
    let before = lookups();
    append_bodies(&first, &batch(0, 1)).unwrap();
    append_bodies(&second, &batch(1, 1)).unwrap();
    assert!(lookups() > before);
    let before = lookups();
    for i in 2..20 {
        let writer = if i % 2 == 0 { &first } else { &second };
        assert_eq!(append_bodies(writer, &batch(i, 1)).unwrap(), i);
    }
    assert_eq!(lookups(), before, "appends taking turns look for no file");
    first.roll().unwrap();
    let before = lookups();
    assert_eq!(append_bodies(&second, &batch(20, 1)).unwrap(), 20);
    assert!(lookups() > before, "the other writer looks after a roll");
    let before = lookups();
    assert_eq!(append_bodies(&second, &batch(21, 1)).unwrap(), 21);
    assert_eq!(append_bodies(&first, &batch(22, 1)).unwrap(), 22);
    assert_eq!(lookups(), before, "and then no more");
    assert_eq!(first.seal().unwrap(), 23);
    let err = append_bodies(&second, &batch(23, 1)).unwrap_err();
    assert!(matches!(err, Error::Sealed { .. }), "{err}");
    first.unseal().unwrap();
    assert_eq!(append_bodies(&second, &batch(23, 1)).unwrap(), 23);
    assert_holds(&second, 0, 24);
}

#[test]
fn with_writer_lock_makes_read_decide_append_atomic_across_shared_writers() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        writer_lock: shoal_engine::log::WriterLock::Shared,
        durability: Durability::Never,
        ..LogOptions::default()
    };
    let open = || {
        Arc::new(
            Log::open(
                Arc::new(storage.clone()),
                clock.clone(),
                sim_dir(),
                options.clone(),
            )
            .unwrap(),
        )
    };
    let (a, b) = (open(), open());
    let inside = Arc::new(std::sync::Barrier::new(2));
    let holder = {
        let (a, inside) = (Arc::clone(&a), Arc::clone(&inside));
        std::thread::spawn(move || {
            a.with_writer_lock(|| {
                let expected = a.next_offset();
                inside.wait();
                // The other writer tries to append now; it must wait for us.
                std::thread::sleep(Duration::from_millis(50));
                let got = a.append(&[Entry::new(b"mine")])?;
                assert_eq!(got.first_offset, expected, "nobody appended in between");
                Ok(())
            })
            .unwrap();
        })
    };
    inside.wait();
    let theirs = b.append(&[Entry::new(b"theirs")]).unwrap();
    holder.join().unwrap();
    assert_eq!(
        theirs.first_offset, 1,
        "the other append came after the locked section"
    );
}

#[test]
fn reopening_a_clean_log_syncs_no_file_but_a_recovered_tail_is_synced() {
    use std::sync::atomic::Ordering::Relaxed;
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 2);
    drop(log);
    // The head vouches for every byte: nothing to adopt, nothing to sync.
    let before = storage.stats().file_syncs.load(Relaxed);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(storage.stats().file_syncs.load(Relaxed), before);
    assert_eq!(log.next_offset(), 10);
    drop(log);
    // A torn tail past the head: cut, and what survives is synced before the head says so.
    let file = segment_file(&sim_dir(), 0);
    let mut bytes = storage.contents(&file).unwrap();
    bytes.extend_from_slice(&[7; 100]);
    storage.put_file(&file, &bytes);
    let before = storage.stats().file_syncs.load(Relaxed);
    let log = open_sim(&storage, &clock, &options);
    assert!(storage.stats().file_syncs.load(Relaxed) > before);
    assert!(log.recovery_report().truncated_bytes == 100);
    assert_holds(&log, 0, 10);
}

#[test]
fn reopening_a_clean_log_does_not_fsync_its_directory_but_an_unpublished_roll_does() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let open = || open_sim(&storage, &clock, &options);
    let log = open();
    log.append(&[Entry::new(b"one")]).unwrap();
    drop(log);
    let before = storage
        .stats()
        .dir_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    let log = open();
    let after = storage
        .stats()
        .dir_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        after, before,
        "the head named the active segment: its name is durable"
    );
    // A segment the head does not name (a roll that never published) gets the fsync.
    log.append(&[Entry::new(b"two")]).unwrap();
    drop(log);
    let base = 2;
    let header = shoal_engine::codec::file_header::FileHeader {
        kind: shoal_engine::codec::file_header::FileKind::Segment,
        base_offset: base,
        base_timestamp_ms: 0,
    };
    storage.put_file(&segment_file(&sim_dir(), base), &header.encode());
    let before = storage
        .stats()
        .dir_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    let log = open();
    let after = storage
        .stats()
        .dir_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(after > before, "the adopted segment's name is made durable");
    assert_eq!(log.append(&[Entry::new(b"three")]).unwrap().first_offset, 2);
}
