//! `check --repair` in the engine: [`Log::repair`] and [`DataDir::repair`] mend indexes and
//! damaged segments, keep every original, report exactly the offsets lost, and never give an
//! offset out twice afterwards.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{append_records, payload, read_all, segment_file, sim_dir, small_options};
use shoal_engine::clock::ManualClock;
use shoal_engine::codec::file_header::FILE_HEADER_LEN;
use shoal_engine::codec::record::{self, Decoded};
use shoal_engine::log::{self, Durability, Quarantine, RepairAction};
use shoal_engine::queue::{QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::{CrashPlan, SimStorage, Storage};
use shoal_engine::stream::{CreateStream, PutRecord, StartPosition};

/// (file position, offset) of every frame of a segment file.
fn frames(sim: &SimStorage, file: &Path) -> Vec<(usize, u64)> {
    let bytes = sim.contents(file).unwrap();
    let mut out = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while let Decoded::Frame(frame) = record::decode(&bytes[at..]) {
        out.push((at, frame.offset));
        at += frame.frame_len;
    }
    out
}

fn check_clean(sim: &SimStorage, dir: &Path) -> Vec<log::Problem> {
    let mut report = log::CheckReport::default();
    log::check(sim, dir, &mut report).unwrap();
    report.problems
}

fn offsets(log: &log::Log) -> Vec<u64> {
    read_all(log, 0).into_iter().map(|(o, _)| o).collect()
}

#[test]
fn a_damaged_sealed_segment_keeps_its_intact_records_and_its_original() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let log = common::open_sim(&sim, &clock, &small_options(Durability::Always));
    append_records(&log, 120, 3);
    let bases = log.segments().unwrap();
    assert!(bases.len() >= 4, "{bases:?}");
    let (base, next_base) = (bases[1], bases[2]);
    let file = segment_file(&sim_dir(), base);
    let in_file = frames(&sim, &file);
    // Damage the payload of the segment's third record.
    let (position, first_lost) = in_file[2];
    sim.corrupt(&file, position + 40, 0x10).unwrap();
    let damaged = sim.contents(&file).unwrap();
    assert!(!check_clean(&sim, &sim_dir()).is_empty());

    let quarantine = Quarantine::new(&sim, Path::new("/data"), Path::new("/data/lost+found/1"));
    let repairs = log.repair(&quarantine).unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:#?}");
    let repair = &repairs[0];
    assert_eq!(repair.action, RepairAction::SegmentSalvaged);
    assert_eq!(repair.file, file);
    assert_eq!(repair.lost, Some(first_lost..next_base));
    let kept = repair.original.clone().unwrap();
    assert_eq!(
        kept,
        PathBuf::from("/data/lost+found/1/log").join(file.file_name().unwrap())
    );
    assert_eq!(
        sim.contents(&kept).unwrap(),
        damaged,
        "the original, byte for byte"
    );
    assert!(check_clean(&sim, &sim_dir()).is_empty());

    let expected: Vec<u64> = (0..120)
        .filter(|o| !(first_lost..next_base).contains(o))
        .collect();
    assert_eq!(offsets(&log), expected);
    for (offset, bytes) in read_all(&log, 0) {
        assert_eq!(bytes, payload(offset));
    }
    // Appends go on from where the log was, after a reopen too.
    append_records(&log, 3, 3);
    drop(log);
    let log = common::open_sim(&sim, &clock, &small_options(Durability::Always));
    assert_eq!(log.next_offset(), 123);
    assert_eq!(offsets(&log).last(), Some(&122));
    // Nothing left to repair.
    assert!(log.repair(&quarantine).unwrap().is_empty());
}

#[test]
fn a_damaged_active_segment_is_sealed_first_and_its_offsets_are_never_reused() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = log::LogOptions {
        durability: Durability::Always,
        ..log::LogOptions::default()
    };
    let log = common::open_sim(&sim, &clock, &options);
    append_records(&log, 10, 2);
    let file = segment_file(&sim_dir(), 0);
    let (position, _) = frames(&sim, &file)[5];
    sim.corrupt(&file, position + 30, 0x01).unwrap();

    let quarantine = Quarantine::new(&sim, Path::new("/data"), Path::new("/data/lost+found/1"));
    let repairs = log.repair(&quarantine).unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:#?}");
    assert_eq!(repairs[0].lost, Some(5..10));
    assert_eq!(offsets(&log), vec![0, 1, 2, 3, 4]);
    let appended = log.append(&[log::Entry::new(b"after")]).unwrap();
    assert_eq!(
        appended.first_offset, 10,
        "offsets 5..10 are not given out again"
    );
    assert!(check_clean(&sim, &sim_dir()).is_empty());
}

#[test]
fn a_damaged_index_is_rebuilt_without_losing_anything() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let log = common::open_sim(&sim, &clock, &small_options(Durability::Always));
    append_records(&log, 60, 1);
    let base = log.segments().unwrap()[0];
    let index = sim_dir().join(format!("{base:020}.index"));
    let len = sim.contents(&index).unwrap().len();
    assert!(len > FILE_HEADER_LEN, "the index has entries");
    // The first entry's position.
    sim.corrupt(&index, FILE_HEADER_LEN + 4, 0x40).unwrap();
    assert!(!check_clean(&sim, &sim_dir()).is_empty());

    let quarantine = Quarantine::new(&sim, Path::new("/data"), Path::new("/data/lost+found/1"));
    let repairs = log.repair(&quarantine).unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:#?}");
    assert_eq!(repairs[0].action, RepairAction::IndexRebuilt);
    assert_eq!(repairs[0].lost, None);
    assert!(check_clean(&sim, &sim_dir()).is_empty());
    assert_eq!(offsets(&log), (0..60).collect::<Vec<_>>());
}

#[test]
fn a_stream_keeps_what_is_intact_and_its_sequence_numbers_keep_rising() {
    let common::Env {
        sim,
        clock,
        data: dir,
    } = common::env();
    let stream = dir.create_stream(&CreateStream::new("orders", 1)).unwrap();
    let stream = dir.stream(&stream.name).unwrap();
    let put = |n: usize| {
        let data = format!("record {n}");
        let outcome = stream.put_records(&[PutRecord {
            partition_key: "k",
            explicit_hash_key: None,
            data: data.as_bytes(),
        }]);
        assert!(outcome.error.is_none());
        outcome.results[0].sequence_number()
    };
    // Three segments (they roll by age).
    let mut sequences = Vec::new();
    for n in 0..15 {
        sequences.push(put(n));
        if n % 5 == 4 {
            clock.advance(2 * 3600 * 1000);
        }
    }
    let shard_dir = PathBuf::from("/data/streams/orders/shards/000000000000");
    let bases = log::segment::list(&sim, &shard_dir).unwrap().segments;
    assert!(bases.len() >= 3, "{bases:?}");
    let middle = segment_file(&shard_dir, bases[1]);
    let (position, _) = frames(&sim, &middle)[1];
    sim.corrupt(&middle, position + 20, 0x08).unwrap();
    assert!(!dir.check().unwrap().problems.is_empty());

    let report = dir.repair().unwrap();
    assert_eq!(report.found.problems.len(), 1, "{:#?}", report.found);
    assert!(report.after.problems.is_empty(), "{:#?}", report.after);
    assert_eq!(report.repairs.len(), 1, "{:#?}", report.repairs);
    let lost = report.repairs[0].lost.clone().unwrap();
    assert_eq!(lost, bases[1] + 1..bases[2]);
    let quarantine = report.quarantine.unwrap();
    assert!(quarantine.starts_with("/data/lost+found"));
    assert!(
        sim.contents(
            &quarantine
                .join("streams/orders/shards/000000000000")
                .join(middle.file_name().unwrap())
        )
        .is_ok()
    );

    let mut it = stream
        .shard_iterator(0, StartPosition::TrimHorizon)
        .unwrap();
    let mut read = Vec::new();
    for _ in 0..10 {
        let got = stream.get_records(&mut it, 100).unwrap();
        read.extend(
            got.records
                .iter()
                .map(|r| String::from_utf8(r.data.clone()).unwrap()),
        );
    }
    let expected: Vec<String> = (0..15)
        .filter(|n| !lost.contains(&(*n as u64)))
        .map(|n| format!("record {n}"))
        .collect();
    assert_eq!(read, expected);
    let next = put(15);
    assert!(
        sequences
            .iter()
            .all(|s| s.parse::<u128>().unwrap() < next.parse::<u128>().unwrap()),
        "{next} after {sequences:?}"
    );
}

#[test]
fn a_queue_drops_only_the_lost_messages_and_a_damaged_snapshot_is_rebuilt() {
    let common::Env { sim, data: dir, .. } = common::env_with(shoal_engine::DirOptions {
        queue_segment_bytes: Some(1024),
        ..shoal_engine::DirOptions::default()
    });
    dir.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let queue = dir.queue("jobs").unwrap();
    for n in 0..40 {
        queue
            .send(&SendMessage::new(format!("message {n:02}")))
            .unwrap();
    }
    drop(queue);
    let messages = PathBuf::from("/data/queues/jobs/messages");
    let bases = log::segment::list(&sim, &messages).unwrap().segments;
    assert!(bases.len() >= 3, "{bases:?}");
    let file = segment_file(&messages, bases[1]);
    let (position, first_lost) = frames(&sim, &file)[0];
    sim.corrupt(&file, position + 24, 0x02).unwrap();
    // And a snapshot that is not one.
    sim.put_file(
        Path::new("/data/queues/jobs/state.snap"),
        b"not a snapshot at all",
    );

    let report = dir.repair().unwrap();
    assert!(report.after.problems.is_empty(), "{:#?}", report.after);
    let actions: Vec<RepairAction> = report.repairs.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [RepairAction::SegmentSalvaged, RepairAction::MovedAside],
        "{:#?}",
        report.repairs
    );
    assert_eq!(report.repairs[0].lost, Some(first_lost..bases[2]));

    let queue = dir.queue("jobs").unwrap();
    let mut got = Vec::new();
    loop {
        let received = queue
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: None,
            })
            .unwrap();
        if received.is_empty() {
            break;
        }
        for m in received {
            got.push(m.body.clone());
            queue.delete(&m.receipt_handle).unwrap();
        }
    }
    got.sort();
    let expected: Vec<String> = (0..40u64)
        .filter(|n| !(first_lost..bases[2]).contains(n))
        .map(|n| format!("message {n:02}"))
        .collect();
    assert_eq!(got, expected);
    assert!(dir.check().unwrap().problems.is_empty());
}

#[test]
fn a_log_too_damaged_to_open_is_mended_without_opening_it() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = log::LogOptions {
        durability: Durability::Always,
        ..log::LogOptions::default()
    };
    let log = common::open_sim(&sim, &clock, &options);
    append_records(&log, 10, 2);
    drop(log);
    let file = segment_file(&sim_dir(), 0);
    let (position, _) = frames(&sim, &file)[5];
    sim.corrupt(&file, position + 30, 0x01).unwrap();
    // Damage where the head says the log was synced is not a torn tail: opening refuses.
    let err = common::try_open_sim(&sim, &clock, &options).unwrap_err();
    assert!(err.is_corruption(), "{err}");

    let quarantine = Quarantine::new(&sim, Path::new("/data"), Path::new("/data/lost+found/1"));
    let repairs = log::repair_unopenable(&sim, &*clock, &sim_dir(), &options, &quarantine).unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:#?}");
    assert_eq!(repairs[0].lost, Some(5..10));
    assert!(sim.contents(repairs[0].original.as_ref().unwrap()).is_ok());
    let log = common::open_sim(&sim, &clock, &options);
    assert_eq!(offsets(&log), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        log.next_offset(),
        10,
        "offsets 5..10 are not given out again"
    );
    assert!(check_clean(&sim, &sim_dir()).is_empty());
    assert!(log.repair(&quarantine).unwrap().is_empty());
}

/// A head naming an active segment that is gone, after records were committed to it: opening
/// refuses (no crash loses a segment's name, so this is damage), check reports it, and repair
/// starts a new segment after the lost offsets, reporting exactly them.
#[test]
fn a_missing_active_segment_is_reported_and_its_offsets_never_reused() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let options = small_options(Durability::Always);
    let log = common::open_sim(&sim, &clock, &options);
    append_records(&log, 40, 4);
    let segments = log.segments().unwrap();
    let active = *segments.last().unwrap();
    let next = log.next_offset();
    assert!(segments.len() >= 2 && active < next);
    drop(log);
    let missing = segment_file(&sim_dir(), active);
    sim.remove_file(&missing).unwrap();

    let err = common::try_open_sim(&sim, &clock, &options).unwrap_err();
    match &err {
        shoal_engine::Error::Corruption { file, .. } => assert_eq!(file, &missing),
        other => panic!("expected corruption naming the missing segment, got {other}"),
    }
    assert!(
        check_clean(&sim, &sim_dir())
            .iter()
            .any(|p| p.kind.contains("the head names segment")),
        "check reports it"
    );

    let quarantine = Quarantine::new(&sim, Path::new("/data"), Path::new("/data/lost+found/1"));
    let repairs = log::repair_unopenable(&sim, &*clock, &sim_dir(), &options, &quarantine).unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:#?}");
    assert_eq!(repairs[0].action, RepairAction::SegmentMissing);
    assert_eq!(repairs[0].file, missing);
    assert_eq!(repairs[0].lost, Some(active..next));
    let log = common::open_sim(&sim, &clock, &options);
    assert_eq!(offsets(&log), (0..active).collect::<Vec<_>>());
    let appended = log.append(&[log::Entry::new(b"after")]).unwrap();
    assert_eq!(
        appended.first_offset, next,
        "lost offsets are not given out again"
    );
    assert!(check_clean(&sim, &sim_dir()).is_empty());
    drop(log);
    let log = common::open_sim(&sim.crash(CrashPlan::PowerLoss), &clock, &options);
    assert_eq!(log.next_offset(), next + 1);
}
