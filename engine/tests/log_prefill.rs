//! Prefill: a log with `LogOptions::prefill` keeps zeros written past its data, so small
//! fsynced appends overwrite instead of growing the file. The zeros are never records, a
//! reopen keeps them, a sealed segment never has them, and a batch a dead writer left in them
//! is cut, never adopted by the writer after it.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::sync::Arc;

use common::*;
use shoal_engine::clock::ManualClock;
use shoal_engine::codec::head::{HEAD_LEN, Head};
use shoal_engine::codec::record::{self, FLAG_END_OF_BATCH, FrameFields};
use shoal_engine::log::{
    CheckReport, Durability, Entry, Log, LogOptions, PREFILL_BYTES, PREFILL_MAX_BATCH, WriterLock,
    check, head_behind,
};
use shoal_engine::storage::{CrashPlan, OpenMode, SimStorage, Storage};

fn prefill_options(durability: Durability) -> LogOptions {
    LogOptions {
        segment_bytes_max: 8 << 20,
        prefill: true,
        ..small_options(durability)
    }
}

/// Options of an `always` log with prefill whose writers share it, a lock per operation.
fn shared_prefill_options() -> LogOptions {
    LogOptions {
        writer_lock: WriterLock::Shared,
        ..prefill_options(Durability::Always)
    }
}

/// A new `always` log with prefill on simulated storage.
fn prefilled_log() -> (SimStorage, Arc<ManualClock>, LogOptions, Log) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = prefill_options(Durability::Always);
    let log = open_sim(&storage, &clock, &options);
    (storage, clock, options, log)
}

fn segment_len(storage: &SimStorage, base: u64) -> u64 {
    storage
        .contents(&segment_file(&sim_dir(), base))
        .unwrap()
        .len() as u64
}

/// Where the data of the active segment ends: the head's committed length.
fn committed(storage: &SimStorage) -> u64 {
    let head = storage.contents(&sim_dir().join("head")).unwrap();
    Head::decode(&head[..HEAD_LEN]).unwrap().committed_len
}

fn assert_zeros_past(storage: &SimStorage, base: u64, from: u64) {
    let bytes = storage.contents(&segment_file(&sim_dir(), base)).unwrap();
    let tail = bytes.get(usize::try_from(from).unwrap()..).unwrap();
    assert!(tail.iter().all(|&b| b == 0), "non-zero bytes past {from}");
}

fn assert_check_clean(storage: &SimStorage) {
    let mut report = CheckReport::default();
    check(storage, &sim_dir(), &mut report).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn small_appends_write_zeros_ahead_and_a_reopen_keeps_them() {
    let (storage, clock, options, log) = prefilled_log();
    append_records(&log, 50, 5);
    let end = committed(&storage);
    let len = segment_len(&storage, 0);
    assert!(
        len >= end + PREFILL_BYTES / 2,
        "file {len} bytes, data {end}"
    );
    assert_zeros_past(&storage, 0, end);
    assert_holds(&log, 0, 50);
    drop(log);
    assert_check_clean(&storage);

    // A reopen (after a crash or not) keeps the zeros and appends over them.
    let storage = storage.crash(CrashPlan::ProcessCrash);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    assert_eq!(segment_len(&storage, 0), len);
    append_records(&log, 50, 5);
    assert_eq!(segment_len(&storage, 0), len, "overwritten, not grown");
    assert_holds(&log, 0, 100);
    drop(log);
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, 100);
    assert_eq!(log.next_offset(), 100);
}

#[test]
fn acknowledged_appends_over_zeros_survive_a_power_loss() {
    let (storage, clock, options, log) = prefilled_log();
    append_records(&log, 30, 3);
    drop(log);
    let storage = storage.crash(CrashPlan::PowerLoss);
    let log = open_sim(&storage, &clock, &options);
    assert_holds(&log, 0, 30);
    assert_eq!(log.next_offset(), 30);
}

#[test]
fn a_roll_seals_the_segment_at_its_last_frame() {
    let (storage, _, _, log) = prefilled_log();
    append_records(&log, 20, 4);
    let end = committed(&storage);
    assert!(segment_len(&storage, 0) > end);
    log.roll().unwrap();
    assert_eq!(
        segment_len(&storage, 0),
        end,
        "sealed with zeros left in it"
    );
    append_records(&log, 20, 4);
    assert_holds(&log, 0, 40);
    drop(log);
    assert_check_clean(&storage);
}

#[test]
fn large_batches_and_logs_without_the_option_write_no_zeros() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let log = open_sim(&storage, &clock, &prefill_options(Durability::Always));
    let big = vec![7u8; usize::try_from(PREFILL_MAX_BATCH).unwrap()];
    log.append(&[Entry::new(&big)]).unwrap();
    assert_eq!(segment_len(&storage, 0), committed(&storage));
    drop(log);

    let storage = SimStorage::new();
    let log = open_sim(&storage, &clock, &small_options(Durability::Always));
    append_records(&log, 10, 2);
    assert_eq!(segment_len(&storage, 0), committed(&storage));
}

/// A frame further on in the zeros (a power loss kept a later page of a torn batch and lost
/// the one before it) is not a prefill: recovery cuts the whole tail. Kept, it would follow
/// the next record appended over the zeros before it, and the next recovery would adopt it.
#[test]
fn zeros_with_a_frame_further_on_are_cut() {
    let (storage, clock, options, log) = prefilled_log();
    append_records(&log, 10, 1);
    let end = committed(&storage);
    drop(log);
    // Record 11 of the torn batch survived; record 10 before it read back as zeros.
    let size = payload(10).len();
    write_at(
        &storage,
        end + 32 + size as u64,
        &frames(&[(11, size)], 1_000),
    );
    let storage = storage.crash(CrashPlan::PowerLossKeeping { bytes: u64::MAX });
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(segment_len(&storage, 0), end);
    assert_eq!(log.next_offset(), 10);
    append_records(&log, 1, 1);
    drop(log);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(
        log.next_offset(),
        11,
        "the torn batch's record 11 was adopted"
    );
    assert_holds(&log, 0, 11);
}

/// Two shared writers take turns. One dies after writing two batches of one record into the
/// zeros past the committed length, before committing them. The next writer must cut them:
/// if it only wrote its own record over the first, the dead writer's second record would
/// follow it with the next offset, and the next recovery would adopt a record nobody was
/// ever told was appended.
#[test]
fn a_dead_writers_uncommitted_batch_in_the_zeros_is_cut() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = shared_prefill_options();
    let survivor = open_sim(&storage, &clock, &options);
    append_records(&survivor, 10, 1);
    let end = committed(&storage);
    assert!(segment_len(&storage, 0) > end);

    // The dead writer's bytes: records 10 and 11, each a batch, the size of the record 10
    // the survivor appends next.
    let size = payload(10).len();
    write_at(&storage, end, &frames(&[(10, size), (11, size)], 1_000));

    append_records(&survivor, 1, 1);
    drop(survivor);
    let storage = storage.crash(CrashPlan::ProcessCrash);
    let log = open_sim(&storage, &clock, &options);
    assert_eq!(
        log.next_offset(),
        11,
        "the dead writer's record 11 was adopted"
    );
    assert_holds(&log, 0, 11);
}

/// A shared writer that rolls seals the segment at its last frame even when another writer's
/// prefill reaches further than its own: a large batch (no prefill) after the other writer's
/// small one leaves this writer knowing less of the file than there is.
#[test]
fn a_shared_writers_roll_cuts_zeros_another_writer_wrote() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = shared_prefill_options();
    let first = open_sim(&storage, &clock, &options);
    let second = open_sim(&storage, &clock, &options);
    second.append(&[Entry::new(b"one")]).unwrap();
    first.append(&[Entry::new(b"two")]).unwrap();
    let big = vec![7u8; usize::try_from(PREFILL_MAX_BATCH).unwrap() + 1];
    second.append(&[Entry::new(&big)]).unwrap();
    let end = committed(&storage);
    assert!(
        segment_len(&storage, 0) > end,
        "the first writer's zeros reach past the batch"
    );

    second.roll().unwrap();
    assert_eq!(
        segment_len(&storage, 0),
        end,
        "zeros left in the sealed segment"
    );
    assert_check_clean(&storage);
    assert_eq!(second.next_offset(), 3);
}

/// A shared writer catching up learns what follows the committed length with one read, not
/// by asking the segment's length too (see `past_committed` in the log): a call less on every
/// lock. It still finds a file cut short of what the head commits, and refuses to write.
#[test]
fn a_shared_writer_catches_up_without_a_stat_and_finds_a_cut_file() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = shared_prefill_options();
    let log = open_sim(&storage, &clock, &options);
    append_records(&log, 1, 1);
    let stats = || {
        storage
            .stats()
            .file_stats
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = stats();
    append_records(&log, 20, 1);
    assert_eq!(stats(), before, "a shared append asked a file's length");

    let end = committed(&storage);
    storage
        .open(&segment_file(&sim_dir(), 0), OpenMode::ReadWrite)
        .unwrap()
        .set_len(end - 1)
        .unwrap();
    let err = log.append(&[Entry::new(b"more")]).unwrap_err();
    match err {
        shoal_engine::Error::Corruption {
            kind: shoal_engine::CorruptionKind::Truncated { needed, available },
            ..
        } => assert_eq!((needed, available), (end, end - 1)),
        other => panic!("expected a truncated segment, got {other:?}"),
    }
}

/// Frames of one-record batches `(offset, payload length)`, as a writer would write them.
fn frames(records: &[(u64, usize)], timestamp_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for &(offset, len) in records {
        let payload = vec![0xEE; len];
        record::encode_into(
            &mut out,
            &FrameFields {
                offset,
                timestamp_ms,
                kind: 0,
                flags: FLAG_END_OF_BATCH,
                header: &[],
                payload: &payload,
            },
        )
        .unwrap();
    }
    out
}

/// Writes into the live file, as another process would (every open handle sees it).
fn write_at(storage: &SimStorage, at: u64, bytes: &[u8]) {
    let file = storage
        .open(&segment_file(&sim_dir(), 0), OpenMode::ReadWrite)
        .unwrap();
    file.write_all_at(bytes, at).unwrap();
}

/// A reader that finds frames past the head's committed length (a head older than the data,
/// after a power loss) has the log recovered first; zeros written ahead are not such frames.
#[test]
fn a_head_is_behind_only_when_frames_follow_what_it_commits() {
    let (storage, _, _, log) = prefilled_log();
    let head_path = sim_dir().join("head");
    append_records(&log, 5, 1);
    assert!(segment_len(&storage, 0) > committed(&storage));
    assert!(!head_behind(&storage, &sim_dir()), "zeros taken for data");
    let old_head = storage.contents(&head_path).unwrap();
    append_records(&log, 5, 1);
    drop(log);
    assert!(!head_behind(&storage, &sim_dir()));

    storage.put_file(&head_path, &old_head);
    assert!(
        head_behind(&storage, &sim_dir()),
        "records past the head missed"
    );
    storage.put_file(&head_path, &[]);
    assert!(head_behind(&storage, &sim_dir()), "a missing head trusted");
}
