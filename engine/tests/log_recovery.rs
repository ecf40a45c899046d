//! Recovery: a torn or damaged tail is cut back to the last complete batch; damage anywhere
//! else is a typed error naming the file and byte, never a panic and never wrong data.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report, and test bytes wrap on purpose"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use shoal_engine::clock::{Clock, ManualClock, SystemClock};
use shoal_engine::codec::file_header::{FileHeader, FileKind};
use shoal_engine::log::{
    CheckReport, Durability, Entry, Log, LogOptions, LogReader, ReadLimit, check,
};
use shoal_engine::storage::{CrashPlan, FsStorage, SharedStorage, SimStorage, Storage};
use shoal_engine::{CorruptionKind, Error};

/// A log with 40 synced records and then one unsynced batch of three (offsets 40..43) at the
/// end of the active segment, as a process crash leaves it. Returns where the batch's last
/// record starts and ends.
fn log_with_unsynced_tail() -> (SimStorage, Arc<ManualClock>, LogOptions, u64, u64) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = LogOptions {
        segment_bytes_max: 1 << 20,
        ..small_options(Durability::Never)
    };
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 40, 4);
    log.sync().unwrap();
    append_records(&log, 3, 3);
    let end = storage
        .contents(&segment_file(&sim_dir(), 0))
        .unwrap()
        .len() as u64;
    let last_start = end - (32 + payload(42).len() as u64);
    drop(log);
    (
        storage.crash(CrashPlan::ProcessCrash),
        clock,
        options,
        last_start,
        end,
    )
}

#[test]
fn truncating_the_tail_at_every_byte_of_the_last_record() {
    let (storage, clock, options, last_start, end) = log_with_unsynced_tail();
    let path = segment_file(&sim_dir(), 0);
    let full = storage.contents(&path).unwrap();
    let batch_start = last_start - 2 * 32 - (payload(40).len() + payload(41).len()) as u64;
    for cut in last_start..=end {
        let copy = storage.crash(CrashPlan::ProcessCrash);
        copy.put_file(&path, &full[..usize::try_from(cut).unwrap()]);
        let log = open_sim(&copy, &clock, &options);
        if cut == end {
            assert_holds(&log, 0, 43);
            assert_eq!(log.recovery_report().truncated_bytes, 0);
        } else {
            // The batch is incomplete: all three of its records go, the rest stays.
            assert_holds(&log, 0, 40);
            assert_eq!(
                log.recovery_report().truncated_bytes,
                cut - batch_start,
                "cut {cut}"
            );
            assert_eq!(copy.contents(&path).unwrap().len() as u64, batch_start);
        }
        // The log keeps working after recovery.
        append_records(&log, 1, 1);
        assert_eq!(log.next_offset(), if cut == end { 44 } else { 41 });
    }
}

#[test]
fn corrupting_the_tail_at_every_byte_of_the_last_record() {
    let (storage, clock, options, last_start, end) = log_with_unsynced_tail();
    let path = segment_file(&sim_dir(), 0);
    for pos in last_start..end {
        for mask in [0x01, 0x80, 0xff] {
            let copy = storage.crash(CrashPlan::ProcessCrash);
            copy.corrupt(&path, usize::try_from(pos).unwrap(), mask)
                .unwrap();
            let log = open_sim(&copy, &clock, &options);
            assert_holds(&log, 0, 40);
            assert!(log.recovery_report().truncated_bytes > 0);
        }
    }
}

/// Zeros after the last batch (a prefill, or a file extended and never written) are never
/// read as records; recovery keeps them, and the next appends overwrite them.
#[test]
fn a_zero_filled_tail_is_kept_and_never_read_as_records() {
    let (storage, clock, options, _, end) = log_with_unsynced_tail();
    let path = segment_file(&sim_dir(), 0);
    let mut bytes = storage.contents(&path).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 8192));
    storage.put_file(&path, &bytes);
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, 43);
    assert_eq!(log.next_offset(), 43);
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    assert_eq!(storage.contents(&path).unwrap().len() as u64, end + 8192);
    append_records(&log, 5, 5);
    drop(log);
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, 48);
}

#[test]
fn damage_inside_the_synced_region_is_reported_not_truncated() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 5);
    drop(log);
    let path = segment_file(&sim_dir(), 0);
    let len = storage.contents(&path).unwrap().len();
    // Flip a byte in the last, acknowledged record.
    storage.corrupt(&path, len - 3, 0x10).unwrap();
    let before = storage.contents(&path).unwrap();
    let err = try_open_sim(&storage, &clock, &options).unwrap_err();
    match &err {
        Error::Corruption {
            file,
            offset,
            kind: CorruptionKind::InSyncedRegion { .. },
        } => {
            assert_eq!(file, &path);
            assert!(*offset < len as u64);
        }
        other => panic!("expected corruption in the synced region, got {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
    // Nothing was cut.
    assert_eq!(storage.contents(&path).unwrap(), before);
}

#[test]
fn a_checksum_mismatch_in_a_sealed_segment_is_a_typed_error_and_earlier_records_stay_readable() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let log = open_sim(&storage, &clock, &small_options(Durability::Always));
    append_records(&log, 200, 3);
    let segments = log.segments().unwrap();
    assert!(segments.len() > 3);
    // Damage the 5th record of the second segment.
    let base = segments[1];
    let path = segment_file(&sim_dir(), base);
    let bytes = storage.contents(&path).unwrap();
    let mut position = 64usize;
    for _ in 0..4 {
        let payload_len = u32::from_le_bytes(bytes[position + 4..position + 8].try_into().unwrap());
        position += 32 + usize::try_from(payload_len).unwrap();
    }
    storage.corrupt(&path, position + 40, 0x04).unwrap();
    // A fresh reader (no cached mapping) sees the damage.
    let reader = LogReader::open(Arc::new(storage.clone()), sim_dir()).unwrap();
    let batch = reader.read(base, ReadLimit::records(100)).unwrap();
    let offsets: Vec<u64> = batch.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (base..base + 4).collect::<Vec<_>>());
    assert!(batch.iter().all(|r| r.payload == payload(r.offset)));
    let err = reader.read(base + 4, ReadLimit::records(100)).unwrap_err();
    match err {
        Error::Corruption {
            file,
            offset,
            kind: CorruptionKind::Checksum { .. },
        } => {
            assert_eq!(file, path);
            assert_eq!(offset, position as u64);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    // Records after the damaged one, in the same segment, are not silently skipped either;
    // other segments stay readable.
    let next = segments[2];
    let batch = reader.read(next, ReadLimit::records(3)).unwrap();
    assert_eq!(batch.iter().next().unwrap().payload, payload(next));
    // Reopening for write does not look at sealed segments, so it succeeds.
    drop(log);
    open_sim(&storage, &clock, &small_options(Durability::Always));
}

#[test]
fn power_loss_keeps_every_acknowledged_batch_in_always_mode() {
    for keep in [0u64, 1, 31, 32, 100, 511, 512, 1024, 1536, 4096] {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let options = small_options(Durability::Always);
        let log = open_sim(&storage, &clock, &options);
        append_records(&log, 150, 4);
        // Now a batch is written but its fsync fails: not acknowledged.
        storage.fail_sync_after(0);
        let bodies: Vec<Vec<u8>> = (150..154).map(payload).collect();
        let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
        assert!(log.append(&entries).is_err());
        // Power fails with some of the unsynced bytes on disk (torn at 512-byte boundaries and
        // elsewhere).
        let after = storage.crash(CrashPlan::PowerLossKeeping { bytes: keep });
        drop(log);
        let log = open_sim(&after, &clock, &options);
        let next = log.next_offset();
        assert!(next == 150 || next == 154, "keep {keep}: next {next}");
        assert_holds(&log, 0, next);
    }
}

/// An `interval` or `never` log reopened with an unsynced tail (its writer gone, the machine
/// still up) leaves the tail unsynced: the open fsyncs nothing, as those modes ask, and its
/// sync state does not count the tail as synced, so an explicit sync afterwards still
/// fsyncs it.
#[test]
fn reopening_an_unsynced_tail_leaves_it_unsynced_until_a_sync() {
    use std::time::Duration;
    for durability in [
        Durability::Never,
        Durability::Interval(Duration::from_secs(3600)),
    ] {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let never = LogOptions {
            durability: Durability::Never,
            ..LogOptions::default()
        };
        let log = open_sim(&storage, &clock, &never);
        append_records(&log, 10, 2);
        log.sync().unwrap();
        append_records(&log, 10, 2);
        drop(log);
        let syncs = file_syncs(&storage);
        let options = LogOptions {
            durability,
            ..LogOptions::default()
        };
        let log = open_sim(&storage, &clock, &options);
        assert_eq!(
            file_syncs(&storage),
            syncs,
            "{durability:?}: the open synced"
        );
        assert_holds(&log, 0, 20);
        let lost = open_sim(&storage.crash(CrashPlan::PowerLoss), &clock, &options);
        assert_eq!(lost.next_offset(), 10, "{durability:?}");
        assert_holds(&lost, 0, 10);
        log.sync().unwrap();
        let kept = open_sim(&storage.crash(CrashPlan::PowerLoss), &clock, &options);
        assert_eq!(kept.next_offset(), 20, "{durability:?}");
        assert_holds(&kept, 0, 20);
    }
}

/// A process crash leaves unsynced bytes in the page cache, readable but not on disk: the
/// reopen adopts them, and a power loss after it keeps them only where the reopen said so.
#[test]
fn after_a_process_crash_a_power_loss_keeps_what_the_reopen_made_durable() {
    use std::time::Duration;
    for durability in [
        Durability::Always,
        Durability::Never,
        Durability::Interval(Duration::from_secs(3600)),
    ] {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let options = LogOptions {
            segment_bytes_max: 1 << 20,
            ..small_options(durability)
        };
        let never = LogOptions {
            durability: Durability::Never,
            ..options.clone()
        };
        // 30 records in one segment, the last 10 written after the last fsync.
        let log = open_sim(&storage, &clock, &never);
        append_records(&log, 20, 2);
        log.sync().unwrap();
        append_records(&log, 10, 2);
        let killed = storage.crash(CrashPlan::ProcessCrash);
        drop(log);
        let log = open_sim(&killed, &clock, &options);
        assert_holds(&log, 0, 30);
        // Acknowledged in `always` mode: durable whatever the mode was before.
        append_records(&log, 4, 2);
        let lost = open_sim(&killed.crash(CrashPlan::PowerLoss), &clock, &options);
        // `always`: the append's fsync covers the adopted tail; otherwise nothing since the
        // last fsync before the crash was synced.
        let end = if durability == Durability::Always {
            34
        } else {
            20
        };
        assert_eq!(lost.next_offset(), end, "{durability:?}");
        assert_holds(&lost, 0, end);
        log.sync().unwrap();
        let kept = open_sim(&killed.crash(CrashPlan::PowerLoss), &clock, &options);
        assert_eq!(kept.next_offset(), 34, "{durability:?}: after a sync");
        assert_holds(&kept, 0, 34);
    }
}

#[test]
fn power_loss_with_random_tears_never_loses_acknowledged_records() {
    for seed in 1..60u64 {
        let storage = SimStorage::new();
        let clock = ManualClock::new(0);
        let options = small_options(Durability::Always);
        let log = open_sim(&storage, &clock, &options);
        append_records(&log, 20 + seed * 3, 1 + seed % 5);
        let acknowledged = log.next_offset();
        drop(log);
        let log = open_sim(
            &storage.crash(CrashPlan::PowerLossTorn { seed }),
            &clock,
            &options,
        );
        assert_holds(&log, 0, acknowledged);
    }
}

#[test]
fn an_interrupted_roll_or_creation_recovers() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Never);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 100, 5);
    let segments = log.segments().unwrap();
    let active = *segments.last().unwrap();
    drop(log);
    // A crash while creating the next segment: the file exists but is shorter than a header,
    // and the head still names the previous segment. That is no damage, for `check` either.
    let next = segment_file(&sim_dir(), 100);
    let next_index = sim_dir().join(format!("{:020}.index", 100));
    let check_clean = || {
        let mut report = CheckReport::default();
        check(&storage, &sim_dir(), &mut report).unwrap();
        assert_eq!(report.problems, vec![]);
    };
    storage.put_file(&next, &[]);
    check_clean();
    storage.put_file(&next, &[0u8; 10]);
    check_clean();
    // Or after writing the segment's header, while creating its index.
    let header = FileHeader {
        kind: FileKind::Segment,
        base_offset: 100,
        base_timestamp_ms: clock.now_ms(),
    };
    storage.put_file(&next, &header.encode());
    storage.put_file(&next_index, &[0u8; 7]);
    check_clean();
    // Past its header, the same damage is damage.
    storage.put_file(&next_index, &[0u8; 65]);
    let mut report = CheckReport::default();
    check(&storage, &sim_dir(), &mut report).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, next_index);
    storage.put_file(&next_index, &[]);
    storage.put_file(&next, &[0u8; 10]);
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, 100);
    assert_eq!(log.segments().unwrap().last(), Some(&100));
    append_records(&log, 5, 5);
    assert_holds(&log, 0, 105);
    assert!(active < 100);
}

#[test]
fn a_missing_sealed_index_is_rebuilt_and_a_damaged_one_is_only_a_hint() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 200, 2);
    let segments = log.segments().unwrap();
    drop(log);
    let index = sim_dir().join(format!("{:020}.index", segments[1]));
    let original = storage.contents(&index).unwrap();
    assert!(original.len() > 64 + 16, "index has entries");
    // Damage every entry: lookups must still find the right records.
    for pos in 64..original.len() {
        storage.corrupt(&index, pos, 0x5a).unwrap();
    }
    let log = open_sim(&storage, &clock, &options);
    for offset in segments[1]..segments[2] {
        let batch = log.read(offset, ReadLimit::records(1)).unwrap();
        assert_eq!(batch.iter().next().unwrap().payload, payload(offset));
    }
    drop(log);
    storage.remove_file(&index).unwrap();
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.recovery_report().indexes_rebuilt, vec![segments[1]]);
    assert_eq!(storage.contents(&index).unwrap(), original);
    assert_holds(&log, 0, 200);
}

/// Opening a log of more than 1 GiB reads only its tail: the bytes read through the file layer
/// are the same as for a log ten times smaller.
#[test]
fn opening_a_one_gib_log_reads_only_its_tail() {
    fn build(dir: &std::path::Path, bytes: u64) {
        let log = Log::open(
            Arc::new(FsStorage::new()),
            Arc::new(SystemClock),
            dir,
            LogOptions {
                durability: Durability::Never,
                ..LogOptions::default()
            },
        )
        .unwrap();
        let record = vec![0xabu8; 256 << 10];
        let batch: Vec<Entry<'_>> = (0..4).map(|_| Entry::new(&record)).collect();
        let mut written = 0;
        while written < bytes {
            log.append(&batch).unwrap();
            written += 4 * record.len() as u64;
        }
    }
    fn bytes_read_to_open(dir: &std::path::Path) -> (u64, u64) {
        let storage = FsStorage::new();
        let shared: SharedStorage = Arc::new(storage.clone());
        let log = Log::open(shared, Arc::new(SystemClock), dir, LogOptions::default()).unwrap();
        let read = storage.stats().bytes_read.load(Ordering::Relaxed);
        (read, log.next_offset())
    }
    let big = tempfile::tempdir().unwrap();
    let small = tempfile::tempdir().unwrap();
    build(big.path(), 1 << 30);
    build(small.path(), (1 << 30) / 10);
    let (big_read, big_records) = bytes_read_to_open(big.path());
    let (small_read, small_records) = bytes_read_to_open(small.path());
    assert_eq!(big_records, 4096);
    assert!(small_records < 500);
    // The tail scan reads at most one batch (1 MiB) plus the index of the active segment.
    assert!(big_read < 2 << 20, "opening 1 GiB read {big_read} bytes");
    assert!(
        big_read <= small_read * 2,
        "1 GiB log read {big_read} bytes, the 10x smaller one {small_read}"
    );
}

/// Every file a log creates survives a power loss right after `open` returns: each creation
/// is followed by an fsync of the directory, also when the segments already existed and only
/// the head and lock files are new.
#[test]
fn every_file_of_a_log_survives_power_loss_after_open() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let log = open_sim(&storage, &clock, &small_options(Durability::Always));
    append_records(&log, 10, 5);
    drop(log);
    for name in ["head", "LOCK"] {
        storage.remove_file(&sim_dir().join(name)).unwrap();
    }
    storage.sync_dir(&sim_dir()).unwrap();
    let log = open_sim(&storage, &clock, &small_options(Durability::Always));
    let live = storage.files();
    let after = storage.crash(CrashPlan::PowerLoss);
    assert_eq!(after.files(), live);
    let names: Vec<String> = live
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "LOCK",
        "head",
        "00000000000000000000.log",
        "00000000000000000000.index",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    drop(log);
}

/// Recovery kept an index entry pointing at the first frame of a torn batch (complete itself,
/// the batch not), at what became the end of the segment, and did not rewrite the index
/// because the number of entries had not changed: the entry then named the next batch
/// appended there with the torn batch's timestamp.
#[test]
fn an_index_entry_at_a_torn_batch_is_dropped() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = LogOptions {
        index_interval_bytes: 1,
        ..small_options(Durability::Never)
    };
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 2, 2); // at byte 64: no entry
    log.sync().unwrap();
    let torn_at = storage
        .contents(&segment_file(&sim_dir(), 0))
        .unwrap()
        .len();
    append_records(&log, 3, 3); // an entry at `torn_at`
    drop(log);
    // Power loss keeping the batch's first frame whole and a few bytes of the second; the
    // index keeps its (never fsynced) entry.
    let first_frame = 32 + payload(2).len() as u64;
    let after = storage.crash(CrashPlan::PowerLossKeeping {
        bytes: first_frame + 5,
    });
    clock.advance(5_000);
    let log = open_sim(&after, &clock, &options);
    assert_eq!(log.next_offset(), 2);
    assert_eq!(log.recovery_report().truncated_bytes, first_frame + 5);
    let segment = after.contents(&segment_file(&sim_dir(), 0)).unwrap();
    assert_eq!(segment.len(), torn_at);
    let index = after
        .contents(&sim_dir().join(format!("{:020}.index", 0)))
        .unwrap();
    assert_eq!(
        index.len(),
        64,
        "no entry at or past the end of the segment"
    );
    // The next batch lands where the torn one started, at a later time.
    append_records(&log, 3, 3);
    drop(log);
    let mut report = CheckReport::default();
    check(&after, &sim_dir(), &mut report).unwrap();
    assert_eq!(report.problems, vec![]);
}

/// A segment whose creation was interrupted gets its header written again at open. Its base
/// timestamp was the head's last timestamp, or 0 without a head: the sealed segment before it
/// then looked a half-century old to age retention, which deleted its fresh records.
#[test]
fn a_rewritten_segment_header_never_makes_fresh_records_look_old() {
    use shoal_engine::log::Retention;
    use std::time::Duration;
    let hour = Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
        below_offset: None,
    };
    // Without a head, at the same time as the records.
    let storage = SimStorage::new();
    let clock = ManualClock::new(10_000_000);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 5, 5);
    drop(log);
    storage.put_file(&segment_file(&sim_dir(), 5), &[0u8; 10]);
    storage.remove_file(&sim_dir().join("head")).unwrap();
    clock.advance(1_000);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.segments().unwrap(), vec![0, 5]);
    let report = log.enforce_retention(&hour).unwrap();
    assert!(report.removed_segments.is_empty(), "{report:?}");
    assert_holds(&log, 0, 5);
    drop(log);

    // Without a head, with the clock stepped back since the records were written: the new
    // segment still starts no earlier than the records before it, so time lookups find them.
    let storage = SimStorage::new();
    let clock = ManualClock::new(10_000_000);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 5, 5);
    drop(log);
    storage.put_file(&segment_file(&sim_dir(), 5), &[0u8; 10]);
    storage.remove_file(&sim_dir().join("head")).unwrap();
    clock.set(5_000);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.reader().offset_at_time(6_000).unwrap(), 0);
    assert_eq!(log.reader().offset_at_time(10_000_000).unwrap(), 0);
    assert_eq!(log.reader().offset_at_time(10_000_001).unwrap(), 5);
    append_records(&log, 1, 1);
    let batch = log.read(5, ReadLimit::records(1)).unwrap();
    assert!(batch.iter().next().unwrap().timestamp_ms >= 10_000_000);
}

/// A head written by a newer format version (its checksum holds: not damage) refuses the open
/// with a typed error, and is left as it is; it used to be taken for a damaged head and
/// overwritten. A damaged head is still only a hint.
#[test]
fn a_head_of_a_newer_format_version_is_refused_not_overwritten() {
    use shoal_engine::codec::crc;
    use shoal_engine::codec::head::{HEAD_CRC_OFFSET, HEAD_VERSION_OFFSET};
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 5);
    drop(log);
    let head = sim_dir().join("head");
    let mut bytes = storage.contents(&head).unwrap();
    bytes[HEAD_VERSION_OFFSET..HEAD_VERSION_OFFSET + 2].copy_from_slice(&2u16.to_le_bytes());
    let sum = crc::masked(&bytes[..HEAD_CRC_OFFSET]);
    bytes[HEAD_CRC_OFFSET..HEAD_CRC_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
    storage.put_file(&head, &bytes);
    let err = try_open_sim(&storage, &clock, &options).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedVersion { file, found: 2, .. } if *file == head),
        "{err}"
    );
    assert_eq!(storage.contents(&head).unwrap(), bytes);
    // The same version bytes without a matching checksum are damage: a hint, ignored.
    bytes[HEAD_CRC_OFFSET] ^= 1;
    storage.put_file(&head, &bytes);
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, 10);
}

/// Open removes compaction temporaries (`{base}.log.compact`, `{base}.index.compact`) and
/// nothing else: a foreign file whose name merely ends in `compact` used to be deleted too.
#[test]
fn open_removes_only_real_compaction_temporaries() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = small_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 10, 5);
    drop(log);
    let temp = sim_dir().join(format!("{:020}.log.compact", 0));
    storage.put_file(&temp, b"partial");
    let foreign: Vec<_> = ["recompact", "notes.compact", "00000000000000000000.compact"]
        .iter()
        .map(|n| sim_dir().join(n))
        .collect();
    for path in &foreign {
        storage.put_file(path, b"not ours");
    }
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.recovery_report().removed_files, vec![temp.clone()]);
    assert!(!storage.exists(&temp));
    for path in &foreign {
        assert_eq!(storage.contents(path).unwrap(), b"not ours");
    }
    assert_holds(&log, 0, 10);
}

/// `check` holds an index's header to its file name, as it does a segment's: an index of
/// another segment under this segment's name is reported.
#[test]
fn check_reports_an_index_whose_base_offset_is_not_its_name() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1);
    let options = LogOptions {
        index_interval_bytes: 1 << 20,
        ..small_options(Durability::Always)
    };
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 100, 5);
    let segments = log.segments().unwrap();
    drop(log);
    let (a, b) = (segments[0], segments[1]);
    let index = |base: u64| sim_dir().join(format!("{base:020}.index"));
    let mut report = CheckReport::default();
    check(&storage, &sim_dir(), &mut report).unwrap();
    assert_eq!(report.problems, vec![]);
    let other = storage.contents(&index(a)).unwrap();
    assert_eq!(other.len(), 64, "header only");
    storage.put_file(&index(b), &other);
    let mut report = CheckReport::default();
    check(&storage, &sim_dir(), &mut report).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, index(b));
    assert_eq!(report.problems[0].offset, 0);
}

/// A power loss may keep a later page of the unsynced tail and lose an earlier one. In the
/// next boot, recovery does not take an index entry past the synced length as proof of the
/// bytes before it: it scans from the synced length, finds the hole and cuts the log there,
/// instead of starting past the hole and keeping records that read back as damage.
#[test]
fn after_a_power_loss_a_hole_in_the_unsynced_tail_is_found_and_cut() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = LogOptions {
        segment_bytes_max: 1 << 20,
        ..small_options(Durability::Never)
    };
    let path = segment_file(&sim_dir(), 0);
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 40, 4);
    log.sync().unwrap();
    let synced = storage.contents(&path).unwrap().len();
    append_records(&log, 60, 4);
    drop(log);
    let end = storage.contents(&path).unwrap().len();

    // Every unsynced byte survives but 64 in the middle of the tail, on a later boot.
    let after = storage.crash(CrashPlan::PowerLossKeeping { bytes: u64::MAX });
    let mut bytes = after.contents(&path).unwrap();
    assert_eq!(bytes.len(), end);
    let hole = synced + (end - synced) / 3;
    bytes[hole..hole + 64].fill(0);
    after.put_file(&path, &bytes);

    let log = open_sim(&after, &clock, &options);
    let next = log.next_offset();
    assert!((40..100).contains(&next), "kept up to {next}");
    assert_holds(&log, 0, next);
    let report = log.recovery_report();
    assert!(
        report.scanned_from <= synced as u64,
        "scan started at {} past the synced length {synced}",
        report.scanned_from
    );
    assert!(
        after.contents(&path).unwrap().len() <= hole,
        "cut at the hole"
    );
    drop(log);
    let mut checked = CheckReport::default();
    check(&after, &sim_dir(), &mut checked).unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
}
