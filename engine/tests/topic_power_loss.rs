//! A topic's fan-out (standard, and FIFO to FIFO queues) across a power loss at every fsync of a workload: the N-th fsync fails
//! (for every N the workload reaches), the machine loses power (unsynced bytes gone, or a
//! seeded part of them kept) or the process dies, and another process opens the directory,
//! delivers what is pending and drains the subscribed queues. Whatever N was, every
//! acknowledged publish reaches each subscribed queue exactly once (but for messages a
//! consumer deleted there), a publish that was not acknowledged reaches both queues or
//! neither, nothing else arrives, and `check` finds nothing.
//!
//! The workload publishes in batches, delivers, consumes part of one queue and gives topic
//! segments back, with 1 KiB queue segments and queue maintenance every 4 state changes.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{T0, drain_queue, fail_every_fsync, file_syncs, subscribe_queue, tear_every_write};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_engine::clock::{Clock, ManualClock};
use shoal_engine::queue::{QueueAttributes, Receive};
use shoal_engine::storage::{CrashPlan, SharedStorage, SimStorage};
use shoal_engine::topic::{PublishMessage, TopicAttributes};
use shoal_engine::{DataDir, DirOptions, Error};

/// The topic and its two queues: standard, or FIFO.
#[derive(Clone, Copy)]
struct Fan {
    fifo: bool,
    topic: &'static str,
    a: &'static str,
    b: &'static str,
}

const STANDARD: Fan = Fan {
    fifo: false,
    topic: "t",
    a: "a",
    b: "b",
};

const FIFO: Fan = Fan {
    fifo: true,
    topic: "t.fifo",
    a: "a.fifo",
    b: "b.fifo",
};

fn open(sim: &SimStorage, clock: &Arc<ManualClock>) -> DataDir {
    let storage: SharedStorage = Arc::new(sim.clone());
    let options = DirOptions {
        queue_segment_bytes: Some(1024),
        queue_maintenance_every: Some(4),
        ..DirOptions::default()
    };
    DataDir::open_with_options("/data", storage, clock.clone(), options).unwrap()
}

/// A directory with the topic delivering raw messages to its two queues.
fn fresh(f: Fan) -> (SimStorage, Arc<ManualClock>) {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let data = open(&sim, &clock);
    data.create_topic(f.topic, &TopicAttributes::defaults(f.fifo))
        .unwrap();
    for queue in [f.a, f.b] {
        data.create_queue(queue, &QueueAttributes::defaults(f.fifo))
            .unwrap();
        data.subscribe(f.topic, &subscribe_queue(queue, None, true))
            .unwrap();
    }
    (sim, clock)
}

/// What the workload was told.
#[derive(Default)]
struct Acked {
    attempted: BTreeSet<String>,
    published: BTreeSet<String>,
    /// Bodies a consumer of `a` tried to delete there (a failed delete may have worked).
    delete_attempted: BTreeSet<String>,
    /// Bodies a consumer of `a` deleted there, acknowledged.
    deleted: BTreeSet<String>,
}

/// Delivers to every subscription; a delivery that failed (to be retried later) is an error.
fn deliver(f: Fan, data: &DataDir) -> shoal_engine::Result<u64> {
    let mut delivered = 0;
    for report in data.topic(f.topic)?.deliver()? {
        if report.error.is_some() || report.failed > 0 {
            return Err(Error::InvalidArgument(format!(
                "delivery failed: {report:?}"
            )));
        }
        delivered += report.delivered;
    }
    Ok(delivered)
}

/// Runs until the first error (an injected fault) or the end.
/// Publishes, deliveries and the consumer's steps go through each of `dirs` in turn
/// (processes sharing the topic and its queues).
fn workload(f: Fan, dirs: &[&DataDir], acked: &mut Acked) -> shoal_engine::Result<()> {
    let mut step = 0;
    let mut next = || {
        step += 1;
        dirs[step % dirs.len()]
    };
    for round in 0..6 {
        let batch: Vec<PublishMessage> = (0..5)
            .map(|i| {
                let body = format!("p{round}-{i}");
                PublishMessage {
                    group_id: f.fifo.then(|| "g".to_string()),
                    dedup_id: f.fifo.then(|| body.clone()),
                    ..PublishMessage::new(body)
                }
            })
            .collect();
        acked.attempted.extend(batch.iter().map(|m| m.body.clone()));
        next().topic(f.topic)?.publish_batch(&batch)?;
        acked.published.extend(batch.into_iter().map(|m| m.body));
        deliver(f, next())?;
        let a = next().queue(f.a)?;
        let got = a.receive(&Receive {
            max_messages: 3,
            wait: Some(Duration::ZERO),
            visibility_timeout: None,
        })?;
        acked
            .delete_attempted
            .extend(got.iter().map(|m| m.body.clone()));
        let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
        for (m, result) in got.iter().zip(a.delete_batch(&handles)?) {
            result?;
            acked.deleted.insert(m.body.clone());
        }
        if round % 3 == 2 {
            next().topic(f.topic)?.reclaim()?;
        }
    }
    Ok(())
}

fn verify(f: Fan, after: &SimStorage, clock: &ManualClock, acked: &Acked, case: &str) {
    let clock = ManualClock::new(clock.now_ms() + 24 * 3600 * 1000);
    let data = open(after, &clock);
    while deliver(f, &data).unwrap_or_else(|e| panic!("{case}: delivering: {e}")) > 0 {}
    let mut got: BTreeMap<&str, BTreeMap<String, u32>> = BTreeMap::new();
    for queue in [f.a, f.b] {
        let arrived = got.entry(queue).or_default();
        let bodies = drain_queue(&data, queue);
        if f.fifo {
            // One group: the order published.
            let mut sorted = bodies.clone();
            sorted.sort_by_key(|b| {
                let (round, i) = b[1..].split_once('-').unwrap();
                (round.parse::<u32>().unwrap(), i.parse::<u32>().unwrap())
            });
            assert_eq!(bodies, sorted, "{case}: {queue} out of order");
        }
        for body in bodies {
            *arrived.entry(body).or_default() += 1;
        }
    }
    let (a, b) = (&got[f.a], &got[f.b]);
    for (queue, arrived) in &got {
        for (body, times) in arrived {
            assert!(acked.attempted.contains(body), "{case}: {body} in {queue}");
            assert_eq!(*times, 1, "{case}: {body} arrived {times} times in {queue}");
        }
    }
    for body in &acked.published {
        assert!(b.contains_key(body), "{case}: {body} never reached b");
        if !acked.delete_attempted.contains(body) {
            assert!(a.contains_key(body), "{case}: {body} never reached a");
        }
    }
    for body in &acked.deleted {
        assert!(!a.contains_key(body), "{case}: {body} came back to a");
    }
    for body in acked.attempted.difference(&acked.published) {
        assert!(
            b.contains_key(body) == a.contains_key(body) || acked.delete_attempted.contains(body),
            "{case}: the unacknowledged {body} reached one queue only"
        );
    }
    let report = data.check().unwrap();
    assert!(report.problems.is_empty(), "{case}: {:?}", report.problems);
}

#[test]
fn every_fsync_of_a_fan_out_workload_can_fail_into_a_power_loss() {
    sweep(STANDARD, 1);
}

#[test]
fn every_fsync_of_a_fifo_fan_out_workload_can_fail_into_a_power_loss() {
    sweep(FIFO, 1);
}

/// Two processes take turns publishing, delivering and consuming.
#[test]
fn every_fsync_of_a_two_process_fan_out_workload_can_fail_into_a_power_loss() {
    sweep(STANDARD, 2);
}

/// `processes` data-directory handles on the one storage, each standing for a process.
fn sweep(f: Fan, processes: usize) {
    let mut before = 0;
    let (sim, (clock, acked, failed)) = run(f, processes, |sim| before = file_syncs(sim));
    assert!(!failed, "the workload fails without a fault");
    let syncs = file_syncs(&sim) - before;
    assert!(syncs > 50, "the workload fsyncs {syncs} times");
    assert!(!acked.deleted.is_empty(), "the workload consumes");
    verify(
        f,
        &sim.crash(CrashPlan::PowerLoss),
        &clock,
        &acked,
        "no fault",
    );

    fail_every_fsync(
        syncs,
        |n| run(f, processes, |sim| sim.fail_sync_after(n)),
        |after, (clock, acked, _), case| verify(f, after, clock, acked, case),
    );
}

/// A fresh topic and queues, `processes` handles on its storage, `arm` called on the
/// storage, then the workload until it fails: the storage and (clock, what the workload was
/// told, whether a step failed). A publish is acknowledged once it is in the topic: a failure of the delivery that
/// follows it is a warning, and the message stays pending, so the workload may go on past
/// the fault.
fn run(
    f: Fan,
    processes: usize,
    arm: impl FnOnce(&SimStorage),
) -> (SimStorage, (Arc<ManualClock>, Acked, bool)) {
    let (sim, clock) = fresh(f);
    let dirs: Vec<DataDir> = (0..processes).map(|_| open(&sim, &clock)).collect();
    arm(&sim);
    let mut acked = Acked::default();
    let failed = workload(f, &dirs.iter().collect::<Vec<_>>(), &mut acked).is_err();
    drop(dirs);
    (sim, (clock, acked, failed))
}

/// The same promises when a write is torn instead (7 bytes of it reach the file, then the
/// write fails), at every write of the workload in turn.
#[test]
fn every_write_of_a_fan_out_workload_can_be_torn() {
    let writes = tear_every_write(
        &[CrashPlan::PowerLoss, CrashPlan::ProcessCrash],
        |n| run(STANDARD, 1, |sim| sim.tear_write_after(n, 7)),
        |after, (clock, acked, _), case| verify(STANDARD, after, clock, acked, case),
    );
    assert!(writes > 50, "the workload writes {writes} times");
}
