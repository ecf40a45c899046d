//! Replays the fuzz corpora through the same target bodies the fuzzers run
//! (`shoal_engine::fuzzing`), so a regression shows in the normal test suite without
//! cargo-fuzz: every file in `fuzz/corpus/<target>/`, `fuzz/regressions/<target>/` (inputs
//! that found bugs since fixed) and, when present, `fuzz/artifacts/<target>/` (fresh local
//! crashes, not committed). Inputs of open, known bugs wait in `fuzz/artifacts-kept/`, which is
//! not replayed. Structured inputs are decoded as `fuzz_target!` decodes them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use shoal_engine::fuzzing;

/// Runs `run` on every input of `target`; fails naming every input that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs: Vec<PathBuf> = Vec::new();
    for dir in ["corpus", "regressions", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} in {}",
        root.display()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed: {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn record_frame() {
    replay("record_frame", fuzzing::record_frame);
}

#[test]
fn file_header() {
    replay("file_header", fuzzing::file_header);
}

#[test]
fn head() {
    replay("head", fuzzing::head);
}

#[test]
fn index_entries() {
    replay("index_entries", fuzzing::index_entries);
}

#[test]
fn metadata() {
    replay("metadata", fuzzing::metadata);
}

#[test]
fn segment() {
    replay("segment", fuzzing::segment_bytes);
}

#[test]
fn recovery() {
    replay("recovery", fuzzing::recovery_bytes);
}

#[test]
fn log_model() {
    replay("log_model", fuzzing::log_model_bytes);
}

#[test]
fn queue_journal() {
    replay("queue_journal", fuzzing::queue_journal);
}

#[test]
fn queue_snapshot() {
    replay("queue_snapshot", fuzzing::queue_snapshot);
}

#[test]
fn consumer_checkpoint() {
    replay("consumer_checkpoint", fuzzing::consumer_checkpoint);
}

#[test]
fn datadir_recovery() {
    replay("datadir_recovery", fuzzing::datadir_recovery_bytes);
}

#[test]
fn service_model() {
    replay("service_model", fuzzing::service_model_bytes);
}

// ------------------------------------------------------------------------------------------
// Engine bugs the fuzz targets found, as plain tests (their inputs are in fuzz/regressions/).
// ------------------------------------------------------------------------------------------

/// A data directory at `/data` on `sim`.
fn open_data(
    sim: &shoal_engine::storage::SimStorage,
    clock: &std::sync::Arc<shoal_engine::clock::ManualClock>,
) -> shoal_engine::DataDir {
    let storage: shoal_engine::storage::SharedStorage = std::sync::Arc::new(sim.clone());
    shoal_engine::DataDir::open_with("/data", storage, clock.clone()).unwrap()
}

/// `service_model` (regressions/service_model/stale-head-after-power-loss): a log's head is
/// never fsynced, so after a power loss it may be older than the records it describes, or
/// empty. Stream readers trusted it: a shard nobody put to since returned none of its
/// acknowledged records (a closed parent shard, never), or failed on an empty head.
#[test]
fn stream_shards_read_every_acknowledged_record_after_a_power_loss() {
    use shoal_engine::clock::ManualClock;
    use shoal_engine::storage::{CrashPlan, SimStorage};
    use shoal_engine::stream::{CreateStream, PutRecord, StartPosition};

    let clock = ManualClock::new(1_700_000_000_000);
    let open = |sim: &SimStorage| open_data(sim, &clock);
    let sim = SimStorage::new();
    let data = open(&sim);
    data.create_stream(&CreateStream::new("s", 1)).unwrap();
    data.create_stream(&CreateStream::new("empty", 1)).unwrap();
    drop(data);
    // Everything written so far reaches the disk (the kernel's writeback, in time).
    sim.sync_all();
    let stream = open(&sim).stream("s").unwrap();
    let put = stream.put_records(&[PutRecord {
        partition_key: "k",
        explicit_hash_key: None,
        data: b"acknowledged",
    }]);
    assert!(put.error.is_none(), "{:?}", put.error);
    assert_eq!(stream.split_shard(0, None).unwrap(), [1, 2]);
    drop(stream);

    let sim = sim.crash(CrashPlan::PowerLoss);
    let data = open(&sim);
    let stream = data.stream("s").unwrap();
    let mut it = stream
        .shard_iterator(0, StartPosition::TrimHorizon)
        .unwrap();
    let got = stream.get_records(&mut it, 10).unwrap();
    let read: Vec<&[u8]> = got.records.iter().map(|r| r.data.as_slice()).collect();
    assert_eq!(
        read,
        [b"acknowledged".as_slice()],
        "the closed parent's record"
    );
    assert!(got.shard_ended);
    let empty = data.stream("empty").unwrap();
    let mut it = empty.shard_iterator(0, StartPosition::TrimHorizon).unwrap();
    assert!(empty.get_records(&mut it, 10).unwrap().records.is_empty());
}

/// `service_model` (regressions/service_model/shard-ended-after-interrupted-reshard): a
/// reshard that sealed a parent and died before writing the new map leaves the shard open in
/// the map (the next put unseals it), but `get_records` reported it ended, so a consumer
/// would have checkpointed it as finished and never read what is put to it afterwards.
#[test]
fn an_interrupted_reshard_does_not_end_the_shard() {
    use shoal_engine::DataDir;
    use shoal_engine::clock::ManualClock;
    use shoal_engine::storage::{CrashPlan, SimStorage};
    use shoal_engine::stream::{CreateStream, PutRecord, StartPosition};

    let clock = ManualClock::new(1_700_000_000_000);
    let open = |sim: &SimStorage| open_data(sim, &clock);
    let put = |data: &DataDir, body: &[u8]| {
        let outcome = data.stream("s").unwrap().put_records(&[PutRecord {
            partition_key: "k",
            explicit_hash_key: None,
            data: body,
        }]);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
    };
    let sim = SimStorage::new();
    let data = open(&sim);
    data.create_stream(&CreateStream::new("s", 1)).unwrap();
    put(&data, b"one");
    drop(data);
    // What a reshard that died after sealing the parent leaves: its seal, the old map.
    sim.put_file(
        std::path::Path::new("/data/streams/s/shards/000000000000/SEALED"),
        b"1",
    );
    let sim = sim.crash(CrashPlan::ProcessCrash);
    let data = open(&sim);
    let stream = data.stream("s").unwrap();
    let mut it = stream
        .shard_iterator(0, StartPosition::TrimHorizon)
        .unwrap();
    let got = stream.get_records(&mut it, 10).unwrap();
    assert_eq!(got.records.len(), 1);
    assert!(!got.shard_ended, "an open shard reported ended");
    put(&data, b"two");
    let got = stream.get_records(&mut it, 10).unwrap();
    let read: Vec<&[u8]> = got.records.iter().map(|r| r.data.as_slice()).collect();
    assert_eq!(read, [b"two".as_slice()]);
    assert!(!got.shard_ended);
}

/// `recovery` (regressions/recovery/sealed-segment-cut-before-missing-active): when the head
/// names an active segment that is missing, the segment before it becomes the active one
/// again; it was sealed and fsynced whole, yet recovery treated it as an unsynced tail and
/// silently cut its damaged end (down to no records at all). Now that is reported.
#[test]
fn a_sealed_segment_before_a_missing_one_is_not_cut() {
    use std::sync::Arc;

    use shoal_engine::clock::ManualClock;
    use shoal_engine::log::{Entry, Log, LogOptions};
    use shoal_engine::storage::{SharedStorage, SimStorage, Storage};

    let sim = SimStorage::new();
    let clock = ManualClock::new(1_700_000_000_000);
    let dir = std::path::Path::new("/log");
    let options = LogOptions {
        segment_bytes_max: 512,
        ..LogOptions::default()
    };
    let open = || {
        let storage: SharedStorage = Arc::new(sim.clone());
        Log::open(storage, clock.clone(), dir, options.clone())
    };
    let log = open().unwrap();
    while log.segments().unwrap().len() < 3 {
        log.append(&[Entry::new(&[7u8; 100])]).unwrap();
    }
    let segments = log.segments().unwrap();
    drop(log);
    let (sealed, active) = (segments[1], segments[2]);
    sim.remove_file(&dir.join(format!("{active:020}.log")))
        .unwrap();
    let path = dir.join(format!("{sealed:020}.log"));
    let bytes = sim.contents(&path).unwrap();
    sim.put_file(&path, &bytes[..bytes.len() - 5]);
    let err = open().expect_err("a sealed segment's lost records were cut silently");
    assert!(err.is_corruption(), "{err}");
    // Nothing was cut meanwhile: the damage is still there to see (and repair).
    assert_eq!(sim.contents(&path).unwrap().len(), bytes.len() - 5);
}

/// `queue_snapshot` (regressions/queue_snapshot/expire-loops-on-inconsistent-snapshot): a
/// snapshot whose `waiting` index names a slot under another deadline than the slot's made
/// `State::expire` loop forever.
#[test]
fn an_inconsistent_snapshot_does_not_hang_expire() {
    let data = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/queue_snapshot/expire-loops-on-inconsistent-snapshot"),
    )
    .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        fuzzing::queue_snapshot(&data);
        let _ = done.send(());
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_secs(20))
            .is_ok(),
        "expire did not end"
    );
}

/// `service_model`: a receive from the standard queue is made durable by the journal's next
/// sync; when that sync fails (a delete of another message, here) and the power goes, the
/// receive may be undone, so the model must not hold the message in flight as certain.
#[test]
fn the_service_model_allows_a_receive_undone_by_a_power_loss() {
    use fuzzing::{CrashKind, Fault, SendSpec, ServiceInput, SvcOp};
    let spec = SendSpec {
        group: 0,
        dedup: 0,
        delay: None,
    };
    for then in [
        CrashKind::Power,
        CrashKind::PowerKeeping(3),
        CrashKind::Process,
    ] {
        fuzzing::service_model(ServiceInput {
            shards: 0,
            small_segments: false,
            fifo_delay: 0,
            ops: vec![
                SvcOp::Send {
                    fifo: false,
                    msgs: vec![spec, spec],
                },
                SvcOp::Receive {
                    fifo: false,
                    max: 1,
                    timeout: None,
                },
                SvcOp::Fault(Fault::FailSync { after: 0 }, then),
                SvcOp::Delete {
                    fifo: false,
                    pick: 0,
                    stale: false,
                },
                SvcOp::Receive {
                    fifo: false,
                    max: 1,
                    timeout: None,
                },
            ],
        });
    }
}
