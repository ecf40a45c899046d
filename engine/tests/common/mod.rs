//! Helpers shared by the log integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_engine::clock::ManualClock;
use shoal_engine::log::{Durability, Entry, Log, LogOptions, ReadLimit};
use shoal_engine::storage::{SharedStorage, SimStorage};

/// The log directory used on simulated storage.
pub fn sim_dir() -> PathBuf {
    PathBuf::from("/data/log")
}

/// Small segments and a dense index, so a few kilobytes exercise rolls and index lookups.
pub fn small_options(durability: Durability) -> LogOptions {
    LogOptions {
        segment_bytes_max: 2048,
        index_interval_bytes: 128,
        durability,
        ..LogOptions::default()
    }
}

/// The payload a test writes at `offset`: its length and bytes derive from the offset, so any
/// misplaced or damaged byte is noticed.
#[allow(clippy::cast_possible_truncation, reason = "the bytes wrap on purpose")]
pub fn payload(offset: u64) -> Vec<u8> {
    let len = usize::try_from((offset * 7919) % 97).unwrap() + 1;
    (0..len)
        .map(|i| (offset as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// Appends `count` records as batches of `batch` records, payloads from [`payload`].
pub fn append_records(log: &Log, count: u64, batch: u64) {
    let mut next = log.next_offset();
    let end = next + count;
    while next < end {
        let n = batch.min(end - next);
        let bodies: Vec<Vec<u8>> = (next..next + n).map(payload).collect();
        let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
        let appended = log.append(&entries).unwrap();
        assert_eq!(appended.first_offset, next);
        next += n;
    }
}

/// Every committed record from `from` on, as (offset, payload).
pub fn read_all(log: &Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = log.read(next, ReadLimit::records(64)).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.iter().map(|r| (r.offset, r.payload.to_vec())));
        next = batch.next_offset();
    }
}

/// Checks that the log holds exactly offsets `from..to` with their [`payload`]s.
pub fn assert_holds(log: &Log, from: u64, to: u64) {
    let got = read_all(log, from);
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (from..to).collect::<Vec<_>>(), "offsets");
    for (offset, bytes) in got {
        assert_eq!(bytes, payload(offset), "payload at {offset}");
    }
}

/// Opens the log at [`sim_dir`] on `storage`.
pub fn open_sim(storage: &SimStorage, clock: &Arc<ManualClock>, options: &LogOptions) -> Log {
    try_open_sim(storage, clock, options).unwrap()
}

/// Opens the log at [`sim_dir`] on `storage`, returning the error.
pub fn try_open_sim(
    storage: &SimStorage,
    clock: &Arc<ManualClock>,
    options: &LogOptions,
) -> shoal_engine::Result<Log> {
    let shared: SharedStorage = Arc::new(storage.clone());
    Log::open(shared, clock.clone(), sim_dir(), options.clone())
}

/// Path of the segment based at `base` in `dir`.
pub fn segment_file(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The manual clock's start in the data-directory tests (November 2023).
pub const T0: u64 = 1_700_000_000_000;

/// A data directory at `/data` on simulated storage, timed by a manual clock.
pub struct Env {
    /// The storage, to crash, corrupt or inspect.
    pub sim: SimStorage,
    /// The clock every timestamp comes from.
    pub clock: Arc<ManualClock>,
    /// The directory.
    pub data: shoal_engine::DataDir,
}

/// An empty [`Env`] with default options, its clock at [`T0`].
pub fn env() -> Env {
    env_with(shoal_engine::DirOptions::default())
}

/// An empty [`Env`] opened with `options`, its clock at [`T0`].
pub fn env_with(options: shoal_engine::DirOptions) -> Env {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let storage: SharedStorage = Arc::new(sim.clone());
    let data =
        shoal_engine::DataDir::open_with_options("/data", storage, clock.clone(), options).unwrap();
    Env { sim, clock, data }
}

/// fsyncs of files `sim` has made so far.
pub fn file_syncs(sim: &SimStorage) -> u64 {
    sim.stats()
        .file_syncs
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A power-loss sweep over fsyncs: for each `n` below `syncs`, `run(n)` builds a fresh
/// directory, arms `fail_sync_after(n)` on its storage, runs the workload and returns the
/// storage and what the workload was told; `check` then gets each crash image of it (a clean
/// power loss, one that keeps a seeded part of the unsynced bytes, the process dying) with a
/// label for its messages.
pub fn fail_every_fsync<T>(
    syncs: u64,
    mut run: impl FnMut(u64) -> (SimStorage, T),
    mut check: impl FnMut(&SimStorage, &T, &str),
) {
    use shoal_engine::storage::CrashPlan;
    for n in 0..syncs {
        let (sim, told) = run(n);
        for plan in [
            CrashPlan::PowerLoss,
            CrashPlan::PowerLossTorn { seed: n + 1 },
            CrashPlan::ProcessCrash,
        ] {
            check(
                &sim.crash(plan),
                &told,
                &format!("fsync {n} failed, then {plan:?}"),
            );
        }
    }
}

/// A torn-write sweep: for n = 0, 1, ... `run(n)` builds a fresh directory, arms
/// `tear_write_after(n, 7)` on its storage, runs the workload and returns the storage and
/// what the workload was told; `check` then gets each crash image of `plans`. Ends after the
/// first run whose tear never fired (the workload has fewer writes; some steps absorb a
/// failed write, so the workload's own outcome cannot tell); returns that `n`.
pub fn tear_every_write<T>(
    plans: &[shoal_engine::storage::CrashPlan],
    mut run: impl FnMut(u64) -> (SimStorage, T),
    mut check: impl FnMut(&SimStorage, &T, &str),
) -> u64 {
    let mut n = 0;
    loop {
        let (sim, told) = run(n);
        let past_the_end = sim.fault_pending();
        for plan in plans {
            check(
                &sim.crash(*plan),
                &told,
                &format!("write {n} torn, then {plan:?}"),
            );
        }
        if past_the_end {
            return n;
        }
        n += 1;
    }
}

/// A receive of up to `max` messages that does not wait, with the queue's visibility timeout.
pub fn no_wait(max: usize) -> shoal_engine::queue::Receive {
    shoal_engine::queue::Receive {
        max_messages: max,
        wait: Some(std::time::Duration::ZERO),
        visibility_timeout: None,
    }
}

/// Receives (10 at a time) and deletes everything in queue `name`; the bodies, in the order
/// received.
pub fn drain_queue(data: &shoal_engine::DataDir, name: &str) -> Vec<String> {
    let q = data.queue(name).unwrap();
    let mut bodies = Vec::new();
    loop {
        let got = q.receive(&no_wait(10)).unwrap();
        if got.is_empty() {
            return bodies;
        }
        let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
        for result in q.delete_batch(&handles).unwrap() {
            result.unwrap();
        }
        bodies.extend(got.into_iter().map(|m| m.body));
    }
}

/// A subscription delivering to queue `queue` of the same directory, filtered by `policy`
/// (on message attributes), raw or in the SNS envelope.
pub fn subscribe_queue(
    queue: &str,
    policy: Option<&str>,
    raw: bool,
) -> shoal_engine::topic::Subscribe {
    shoal_engine::topic::Subscribe {
        protocol: shoal_engine::topic::Protocol::Queue,
        endpoint: queue.into(),
        raw,
        filter_policy: policy.map(str::to_string),
        filter_scope: shoal_engine::topic::FilterScope::Attributes,
        dead_letter_queue: None,
    }
}

/// Every record of `stream` as (shard, partition key, data), shard by shard in index order
/// (parents before children), read `page` records per call.
pub fn read_stream(
    stream: &shoal_engine::stream::Stream,
    page: usize,
) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for shard in stream.shard_indexes().unwrap() {
        let mut it = stream
            .shard_iterator(shard, shoal_engine::stream::StartPosition::TrimHorizon)
            .unwrap();
        loop {
            let got = stream.get_records(&mut it, page).unwrap();
            if got.records.is_empty() {
                break;
            }
            for r in got.records {
                out.push((shard, r.partition_key, String::from_utf8(r.data).unwrap()));
            }
        }
    }
    out
}
