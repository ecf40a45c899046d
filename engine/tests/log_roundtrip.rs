//! Round trips: whatever is appended reads back identical, across rolls, reopens and crashes.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report, and test bytes wrap on purpose"
)]

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use shoal_engine::clock::ManualClock;
use shoal_engine::log::{Durability, Entry, Log, LogOptions, LogReader, ReadLimit};
use shoal_engine::storage::{CrashPlan, FsStorage, SharedStorage, SimStorage};

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<(u8, Vec<u8>, Vec<u8>)>),
    Reopen,
    ProcessCrash,
    Roll,
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let record = (
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..20),
        proptest::collection::vec(any::<u8>(), 0..400),
    );
    prop_oneof![
        6 => proptest::collection::vec(record, 1..12).prop_map(Step::Append),
        1 => Just(Step::Reopen),
        1 => Just(Step::ProcessCrash),
        1 => Just(Step::Roll),
        1 => (0u64..5_000).prop_map(Step::Tick),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![Just(Durability::Always), Just(Durability::Never)]
}

type Stored = (u64, u64, u8, Vec<u8>, Vec<u8>);

fn read_everything(log: &Log) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let batch = log.read(next, ReadLimit::records(7)).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.iter().map(|r| {
            (
                r.offset,
                r.timestamp_ms,
                r.kind,
                r.header.to_vec(),
                r.payload.to_vec(),
            )
        }));
        next = batch.next_offset();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of batches, with rolls, reopens and process crashes in between, reads back
    /// exactly as appended: same offsets, timestamps, kinds, headers and payloads; every offset
    /// is reachable by a direct read and by a time seek.
    #[test]
    fn appended_batches_read_back_identical(
        steps in proptest::collection::vec(step(), 1..40),
        segment_bytes_max in 256u64..4096,
        index_interval_bytes in 32u32..1024,
        durability in durability(),
    ) {
        let options = LogOptions {
            segment_bytes_max,
            index_interval_bytes,
            durability,
            segment_age_max: Some(std::time::Duration::from_secs(10)),
            ..LogOptions::default()
        };
        let clock = ManualClock::new(1_000_000);
        let mut storage = SimStorage::new();
        let mut log = Some(open_sim(&storage, &clock, &options));
        let mut model: Vec<Stored> = Vec::new();
        for step in steps {
            let current = log.as_ref().unwrap();
            match step {
                Step::Append(records) => {
                    let entries: Vec<Entry<'_>> = records
                        .iter()
                        .map(|(kind, header, payload)| Entry { kind: *kind, header, payload })
                        .collect();
                    let appended = current.append(&entries).unwrap();
                    prop_assert_eq!(appended.first_offset, model.len() as u64);
                    for (kind, header, payload) in records {
                        model.push((model.len() as u64, appended.timestamp_ms, kind, header, payload));
                    }
                }
                Step::Reopen => {
                    drop(log.take());
                    log = Some(open_sim(&storage, &clock, &options));
                }
                Step::ProcessCrash => {
                    // The process dies without closing; the kernel keeps what was written.
                    let survivor = storage.crash(CrashPlan::ProcessCrash);
                    drop(log.take());
                    storage = survivor;
                    log = Some(open_sim(&storage, &clock, &options));
                }
                Step::Roll => current.roll().unwrap(),
                Step::Tick(ms) => clock.advance(ms),
            }
        }
        let log = log.unwrap();
        prop_assert_eq!(log.next_offset(), model.len() as u64);
        prop_assert_eq!(read_everything(&log), model.clone());
        // Timestamps never go backwards, and each record is found by offset and by time.
        prop_assert!(model.windows(2).all(|w| w[0].1 <= w[1].1));
        for (offset, timestamp, ..) in &model {
            let batch = log.read(*offset, ReadLimit::records(1)).unwrap();
            prop_assert_eq!(batch.iter().next().map(|r| r.offset), Some(*offset));
            let first_at_time = model.iter().find(|m| m.1 >= *timestamp).map(|m| m.0);
            prop_assert_eq!(Some(log.reader().offset_at_time(*timestamp).unwrap()), first_at_time);
        }
        prop_assert_eq!(log.reader().offset_at_time(u64::MAX).unwrap(), model.len() as u64);
    }
}

/// The same on the real filesystem, through memory maps, with a second (lock-free) reader.
#[test]
fn round_trip_on_disk_with_a_separate_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: SharedStorage = Arc::new(FsStorage::new());
    let clock = ManualClock::new(5_000);
    let log = Log::open(
        storage.clone(),
        clock.clone(),
        tmp.path(),
        small_options(Durability::Always),
    )
    .unwrap();
    let reader = LogReader::open(storage, tmp.path()).unwrap();
    append_records(&log, 300, 7);
    assert!(log.segments().unwrap().len() > 5, "expected several rolls");
    assert_holds(&log, 0, 300);
    let mut next = 123;
    let mut seen = Vec::new();
    while next < 300 {
        let batch = reader.read(next, ReadLimit::records(10)).unwrap();
        seen.extend(batch.iter().map(|r| (r.offset, r.payload.to_vec())));
        next = batch.next_offset();
    }
    assert_eq!(seen.len(), 177);
    assert!(seen.iter().all(|(o, p)| *p == payload(*o)));
}

/// `max_bytes` bounds a read, but a single larger record is still returned.
#[test]
fn read_limit_bytes() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let log = open_sim(&storage, &clock, &LogOptions::default());
    let big = vec![7u8; 1000];
    log.append(&[Entry::new(&big), Entry::new(&big), Entry::new(&big)])
        .unwrap();
    let limit = ReadLimit {
        max_records: 10,
        max_bytes: 1500,
    };
    assert_eq!(log.read(0, limit).unwrap().len(), 1);
    let tiny = ReadLimit {
        max_records: 10,
        max_bytes: 1,
    };
    let batch = log.read(1, tiny).unwrap();
    assert_eq!((batch.len(), batch.next_offset()), (1, 2));
    // Reading past the end returns nothing and points back at the same offset.
    let past = log.read(3, limit).unwrap();
    assert_eq!((past.len(), past.next_offset()), (0, 3));
}

/// Oversized records and empty batches are refused and nothing is written.
#[test]
fn invalid_appends_change_nothing() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        max_record_bytes: 100,
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    let before = storage.contents(&segment_file(&sim_dir(), 0)).unwrap();
    let big = vec![0u8; 101];
    let err = log
        .append(&[Entry::new(b"fine"), Entry::new(&big)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            shoal_engine::Error::RecordTooLarge {
                size: 101,
                max: 100
            }
        ),
        "{err}"
    );
    assert!(log.append(&[]).is_err());
    assert_eq!(
        storage.contents(&segment_file(&sim_dir(), 0)).unwrap(),
        before
    );
    assert_eq!(log.next_offset(), 0);
    // The log still works.
    log.append(&[Entry::new(b"fine")]).unwrap();
}

/// Time never runs backwards inside a log, even when the clock does.
#[test]
fn timestamps_are_monotonic_when_the_clock_goes_back() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(10_000);
    let log = open_sim(&storage, &clock, &LogOptions::default());
    let first = log.append(&[Entry::new(b"a")]).unwrap();
    clock.set(5_000);
    let second = log.append(&[Entry::new(b"b")]).unwrap();
    assert_eq!(first.timestamp_ms, 10_000);
    assert_eq!(second.timestamp_ms, 10_000);
    clock.set(20_000);
    assert_eq!(
        log.append(&[Entry::new(b"c")]).unwrap().timestamp_ms,
        20_000
    );
}

/// Segments roll by age as well as by size.
#[test]
fn segments_roll_by_age() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        segment_age_max: Some(std::time::Duration::from_secs(60)),
        ..LogOptions::default()
    };
    let log = open_sim(&storage, &clock, &options);
    log.append(&[Entry::new(b"a")]).unwrap();
    clock.advance(59_999);
    log.append(&[Entry::new(b"b")]).unwrap();
    assert_eq!(log.segments().unwrap(), vec![0]);
    clock.advance(1);
    log.append(&[Entry::new(b"c")]).unwrap();
    assert_eq!(log.segments().unwrap(), vec![0, 2]);
}

/// Two shared writers on one log take turns: each append lands after the other's, and a
/// writer that died holding the lock leaves nothing that was not acknowledged.
#[test]
fn shared_writers_interleave_and_catch_up() {
    use shoal_engine::log::WriterLock;
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let options = LogOptions {
        writer_lock: WriterLock::Shared,
        ..small_options(Durability::Always)
    };
    let a = open_sim(&storage, &clock, &options);
    let b = open_sim(&storage, &clock, &options);
    let mut expected = Vec::new();
    for i in 0..200u64 {
        let (log, name) = if i % 3 == 0 { (&a, "a") } else { (&b, "b") };
        let body = format!("{name}{i}");
        let appended = log.append(&[Entry::new(body.as_bytes())]).unwrap();
        assert_eq!(appended.first_offset, i, "append {i} by {name}");
        expected.push(body.into_bytes());
        if i % 50 == 49 {
            log.roll().unwrap();
        }
    }
    let got: Vec<Vec<u8>> = read_all(&a, 0).into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, expected);
    // An exclusive writer cannot open while shared writers exist... only while one holds the
    // lock; between appends the lock is free.
    let exclusive = LogOptions {
        writer_lock: WriterLock::Exclusive,
        ..options.clone()
    };
    let c = open_sim(&storage, &clock, &exclusive);
    c.append(&[Entry::new(b"c")]).unwrap();
    drop(c);
    // Bytes past the head (a writer killed inside the lock) are cut by the next writer.
    let head_next = a.reader().next_offset().unwrap();
    assert_eq!(head_next, 201);
    let active = *a.segments().unwrap().last().unwrap();
    let path = segment_file(&sim_dir(), active);
    let committed = storage.contents(&path).unwrap().len();
    // A writer that dies inside the lock wrote through its own handle to the same file.
    let dying = shoal_engine::storage::Storage::open(
        &storage,
        &path,
        shoal_engine::storage::OpenMode::ReadWrite,
    )
    .unwrap();
    dying.write_all_at(&[0xAB; 100], committed as u64).unwrap();
    let appended = b.append(&[Entry::new(b"after")]).unwrap();
    assert_eq!(appended.first_offset, 201);
    let bytes = storage.contents(&path).unwrap();
    assert!(bytes.len() < committed + 100);
    let last = read_all(&a, 200);
    assert_eq!(last, vec![(200, b"c".to_vec()), (201, b"after".to_vec())]);
}

/// A sealed log refuses appends from every handle, until unsealed; readers learn where it ends.
#[test]
fn seal_is_seen_by_every_writer_and_reader() {
    use shoal_engine::log::WriterLock;
    let storage = SimStorage::new();
    let clock = ManualClock::new(0);
    let shared = LogOptions {
        writer_lock: WriterLock::Shared,
        ..small_options(Durability::Always)
    };
    let a = open_sim(&storage, &clock, &shared);
    let b = open_sim(&storage, &clock, &shared);
    append_records(&a, 10, 3);
    assert_eq!(a.reader().sealed_at().unwrap(), None);
    assert_eq!(a.seal().unwrap(), 10);
    assert_eq!(a.seal().unwrap(), 10, "sealing twice is harmless");
    let err = b.append(&[Entry::new(b"late")]).unwrap_err();
    assert!(matches!(err, shoal_engine::Error::Sealed { .. }), "{err}");
    assert!(a.append(&[Entry::new(b"late")]).is_err());
    let reader = LogReader::open(Arc::new(storage.clone()), sim_dir()).unwrap();
    assert_eq!(reader.sealed_at().unwrap(), Some(10));
    drop((a, b));
    // The seal survives reopening and a power loss.
    let after = storage.crash(CrashPlan::PowerLoss);
    let c = open_sim(&after, &clock, &small_options(Durability::Always));
    assert!(c.is_sealed());
    assert!(c.append(&[Entry::new(b"late")]).is_err());
    c.unseal().unwrap();
    append_records(&c, 1, 1);
    assert_holds(&c, 0, 11);
}
