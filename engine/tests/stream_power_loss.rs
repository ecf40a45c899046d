//! A stream and a consumer group across a power loss at every fsync of a workload: the
//! N-th fsync fails (for every N the workload reaches), the machine loses power (unsynced
//! bytes gone, or a seeded part of them kept) or the process dies, and another process
//! opens the directory. Whatever N was: every acknowledged record is in the stream exactly
//! once, each partition key's records read back (parents before children) in the order they
//! were put, and nothing unknown is there; the consumer group resumes from its acknowledged
//! checkpoints, never handing out again what a checkpoint covered, and between what it had
//! checkpointed and what it hands out now every acknowledged record is processed, each key
//! in order; `check` finds nothing.
//!
//! The workload puts batches over four partition keys, consumes and checkpoints as it goes,
//! splits a shard and merges two.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{T0, fail_every_fsync, file_syncs, read_stream, tear_every_write};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_engine::DataDir;
use shoal_engine::clock::{Clock, ManualClock};
use shoal_engine::storage::{CrashPlan, SharedStorage, SimStorage};
use shoal_engine::stream::{Consumer, CreateStream, PutRecord};

const KEYS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

fn open(sim: &SimStorage, clock: &Arc<ManualClock>) -> DataDir {
    let storage: SharedStorage = Arc::new(sim.clone());
    DataDir::open_with("/data", storage, clock.clone()).unwrap()
}

fn fresh() -> (SimStorage, Arc<ManualClock>) {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    open(&sim, &clock)
        .create_stream(&CreateStream::new("s", 2))
        .unwrap();
    (sim, clock)
}

/// (key, data) of record `i` of round `round`.
fn record(round: usize, i: usize) -> (&'static str, String) {
    (KEYS[i % KEYS.len()], format!("r{round:02}-{i}"))
}

/// What the workload was told.
#[derive(Default)]
struct Acked {
    attempted: BTreeSet<String>,
    /// Records whose put was acknowledged.
    put: BTreeSet<String>,
    /// Records a checkpoint covered, acknowledged.
    checkpointed: BTreeSet<String>,
}

/// Hands out what the consumer has now; the data handed out. Checkpoints every batch, or
/// when `lazy` every other one (a worker that processes asynchronously and checkpoints
/// now and then asks for more before checkpointing what it has).
/// `pending`: per shard, what this worker handed out and has not checkpointed yet.
fn consume(
    consumer: &mut Consumer,
    lazy: bool,
    pending: &mut BTreeMap<u32, Vec<String>>,
    mut on_checkpoint: impl FnMut(&[String]),
) -> shoal_engine::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut batches = 0;
    consumer.rebalance()?;
    let mut idle = 0;
    while idle < 2 {
        let Some(batch) = consumer.next_batch(4)? else {
            consumer.rebalance()?;
            idle += 1;
            continue;
        };
        idle = 0;
        batches += 1;
        let data: Vec<String> = batch
            .records
            .iter()
            .map(|r| String::from_utf8(r.data.clone()).unwrap())
            .collect();
        out.extend(data.iter().cloned());
        pending.entry(batch.shard).or_default().extend(data);
        if !lazy || batches % 2 == 0 {
            let last = batch.records.last().unwrap();
            consumer.checkpoint(batch.shard, &last.sequence_number)?;
            on_checkpoint(&pending.remove(&batch.shard).unwrap_or_default());
        }
    }
    Ok(out)
}

/// Runs until the first error (an injected fault) or the end.
/// Puts and reshards go through each of `dirs` in turn (processes sharing the stream); the
/// consumer works in the first.
fn workload(dirs: &[&DataDir], acked: &mut Acked) -> shoal_engine::Result<()> {
    let streams = dirs
        .iter()
        .map(|d| d.stream("s"))
        .collect::<shoal_engine::Result<Vec<_>>>()?;
    let mut consumer = dirs[0].stream("s")?.consumer("app")?;
    let mut pending = BTreeMap::new();
    for round in 0..8 {
        let records: Vec<(&str, String)> = (0..6).map(|i| record(round, i)).collect();
        acked
            .attempted
            .extend(records.iter().map(|(_, d)| d.clone()));
        let puts: Vec<PutRecord<'_>> = records
            .iter()
            .map(|(key, d)| PutRecord {
                partition_key: key,
                explicit_hash_key: None,
                data: d.as_bytes(),
            })
            .collect();
        let stream = &streams[round % streams.len()];
        let outcome = stream.put_records(&puts);
        acked.put.extend(
            records
                .iter()
                .take(outcome.results.len())
                .map(|(_, d)| d.clone()),
        );
        if let Some(e) = outcome.error {
            return Err(e);
        }
        if round % 2 == 1 {
            consume(&mut consumer, true, &mut pending, |done| {
                acked.checkpointed.extend(done.iter().cloned());
            })?;
        }
        if round == 2 {
            stream.split_shard(0, None)?;
        }
        if round == 5 {
            // Shard 0 split into 2 (lower half) and 3 (upper half), which borders shard 1.
            stream.merge_shards(3, 1)?;
        }
    }
    Ok(())
}

/// Each key's records in `order` come in the order they were put.
fn in_key_order(order: &[String], case: &str) {
    let mut last: BTreeMap<usize, &str> = BTreeMap::new();
    for d in order {
        let i: usize = d.rsplit_once('-').unwrap().1.parse().unwrap();
        if let Some(before) = last.insert(i % KEYS.len(), d) {
            assert!(before < d.as_str(), "{case}: {d} after {before}");
        }
    }
}

fn verify(after: &SimStorage, clock: &ManualClock, acked: &Acked, case: &str) {
    let clock = ManualClock::new(clock.now_ms() + 1000);
    let data = open(after, &clock);
    let stream = data.stream("s").unwrap();
    let all: Vec<String> = read_stream(&stream, 100)
        .into_iter()
        .map(|(_, _, data)| data)
        .collect();
    let mut seen = BTreeSet::new();
    for d in &all {
        assert!(acked.attempted.contains(d), "{case}: {d} never put");
        assert!(seen.insert(d), "{case}: {d} stored twice");
    }
    for d in &acked.put {
        assert!(seen.contains(d), "{case}: acknowledged {d} lost");
    }
    in_key_order(&all, case);

    let mut consumer = data.stream("s").unwrap().consumer("app").unwrap();
    let resumed = consume(&mut consumer, false, &mut BTreeMap::new(), |_| {}).unwrap();
    for d in &resumed {
        assert!(
            !acked.checkpointed.contains(d),
            "{case}: {d} handed out again after its checkpoint was acknowledged"
        );
    }
    in_key_order(&resumed, &format!("{case}, resumed"));
    let processed: BTreeSet<&String> = acked.checkpointed.iter().chain(&resumed).collect();
    for d in &all {
        assert!(processed.contains(d), "{case}: {d} never handed out");
    }
    drop(consumer);
    let report = data.check().unwrap();
    assert!(report.problems.is_empty(), "{case}: {:?}", report.problems);
}

#[test]
fn every_fsync_of_a_stream_workload_can_fail_into_a_power_loss() {
    sweep(1);
}

/// Two processes take turns putting and resharding.
#[test]
fn every_fsync_of_a_two_process_stream_workload_can_fail_into_a_power_loss() {
    sweep(2);
}

/// `processes` data-directory handles on the one storage, each standing for a process.
fn sweep(processes: usize) {
    let mut before = 0;
    let (sim, (clock, acked, failed)) = run(processes, |sim| before = file_syncs(sim));
    assert!(!failed, "the workload fails without a fault");
    let syncs = file_syncs(&sim) - before;
    assert!(syncs > 30, "the workload fsyncs {syncs} times");
    assert!(!acked.checkpointed.is_empty(), "the workload consumes");
    verify(&sim.crash(CrashPlan::PowerLoss), &clock, &acked, "no fault");

    fail_every_fsync(
        syncs,
        |n| {
            let (sim, told) = run(processes, |sim| sim.fail_sync_after(n));
            assert!(told.2, "fsync {n} of {syncs} was never made");
            (sim, told)
        },
        |after, (clock, acked, _), case| verify(after, clock, acked, case),
    );
}

/// A fresh stream, `processes` handles on its storage, `arm` called on the storage, then the
/// workload until it fails: the storage and (clock, what the workload was told, whether a
/// step failed).
fn run(
    processes: usize,
    arm: impl FnOnce(&SimStorage),
) -> (SimStorage, (Arc<ManualClock>, Acked, bool)) {
    let (sim, clock) = fresh();
    let dirs: Vec<DataDir> = (0..processes).map(|_| open(&sim, &clock)).collect();
    arm(&sim);
    let mut acked = Acked::default();
    let failed = workload(&dirs.iter().collect::<Vec<_>>(), &mut acked).is_err();
    drop(dirs);
    (sim, (clock, acked, failed))
}

/// The same promises when a write is torn instead (7 bytes of it reach the file, then the
/// write fails), at every write of the workload in turn.
#[test]
fn every_write_of_a_stream_workload_can_be_torn() {
    let writes = tear_every_write(
        &[CrashPlan::PowerLoss, CrashPlan::ProcessCrash],
        |n| run(1, |sim| sim.tear_write_after(n, 7)),
        |after, (clock, acked, _), case| verify(after, clock, acked, case),
    );
    assert!(writes > 50, "the workload writes {writes} times");
}
