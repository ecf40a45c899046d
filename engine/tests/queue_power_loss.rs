//! A queue's promises across a power loss at every fsync of a workload: the workload runs on
//! the simulated storage with its N-th fsync failing (for every N it reaches), the machine
//! loses power (unsynced bytes gone, or a seeded part of them kept), and another process
//! opens the directory. Whatever N was, every message whose send was acknowledged and that
//! nobody tried to delete is delivered exactly once (from the queue or, moved, from its dead-letter
//! queue), no message whose delete was acknowledged comes back, the queues count exactly
//! what they deliver, and `check` finds nothing. On FIFO queues, each group also comes out
//! in the order it was sent.
//!
//! The workload sends, receives, deletes (fresh messages and ones from earlier rounds, in
//! sealed segments by then), makes messages visible again and lets visibility
//! timeouts pass so that messages move to the dead-letter queue, with 1 KiB segments and a
//! snapshot and a reclaim every 4 state changes, so that rolls, snapshots, compaction and
//! dead-letter moves all meet a failing fsync somewhere in the sweep.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{T0, drain_queue, fail_every_fsync, file_syncs, no_wait, tear_every_write};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_engine::clock::{Clock, ManualClock};
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{Queue, QueueAttributes, ReceivedMessage, RedrivePolicy, SendMessage};
use shoal_engine::storage::{CrashPlan, SharedStorage, SimStorage};
use shoal_engine::{DataDir, DirOptions, Error};

fn options() -> DirOptions {
    DirOptions {
        queue_segment_bytes: Some(1024),
        queue_maintenance_every: Some(4),
        ..DirOptions::default()
    }
}

fn open(sim: &SimStorage, clock: &Arc<ManualClock>) -> DataDir {
    let storage: SharedStorage = Arc::new(sim.clone());
    DataDir::open_with_options("/data", storage, clock.clone(), options()).unwrap()
}

/// What the workload was told.
#[derive(Default)]
struct Acked {
    /// Every body a send was attempted with.
    attempted: BTreeSet<String>,
    /// Bodies whose send returned success.
    sent: BTreeSet<String>,
    /// Bodies a delete was attempted for (one that failed may have taken effect or not).
    delete_attempted: BTreeSet<String>,
    /// Bodies whose delete (by their newest receipt handle) returned success.
    deleted: BTreeSet<String>,
    /// A redrive moved messages back from the dead-letter queue.
    redriven: bool,
}

/// The two queues of a run: standard, or FIFO.
#[derive(Clone, Copy)]
struct Names {
    fifo: bool,
    work: &'static str,
    dlq: &'static str,
    /// Both queues in `never` durability (no fsync: only a process crash is survived).
    never: bool,
}

const STANDARD: Names = Names {
    fifo: false,
    work: "work",
    dlq: "dlq",
    never: false,
};

const FIFO: Names = Names {
    fifo: true,
    work: "work.fifo",
    dlq: "dlq.fifo",
    never: false,
};

const NEVER: Names = Names {
    never: true,
    ..STANDARD
};

/// A fresh directory with the work queue (dead letters to the other after 3 receives) and
/// its dead-letter queue.
fn fresh(q: Names) -> (SimStorage, Arc<ManualClock>) {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let data = open(&sim, &clock);
    let defaults = QueueAttributes {
        durability: if q.never {
            DurabilityMode::Never
        } else {
            DurabilityMode::Always
        },
        ..QueueAttributes::defaults(q.fifo)
    };
    data.create_queue(q.dlq, &defaults).unwrap();
    let work = QueueAttributes {
        redrive: Some(RedrivePolicy {
            dead_letter_queue: q.dlq.into(),
            max_receives: 3,
        }),
        ..defaults
    };
    data.create_queue(q.work, &work).unwrap();
    (sim, clock)
}

/// Message `i` of round `round`; on a FIFO queue in one of three groups, deduplicated by
/// its body.
fn message(q: Names, round: usize, i: usize) -> SendMessage {
    let body = format!("r{round}-m{i}");
    SendMessage {
        group_id: q.fifo.then(|| format!("g{}", i % 3)),
        dedup_id: q.fifo.then(|| body.clone()),
        ..SendMessage::new(body)
    }
}

/// Runs until the first error (an injected fault) or the end.
/// Each step goes through the next of `dirs` in turn: with two, every step alternates
/// between two processes sharing the queues (their cross-process locks and catch-up).
fn workload(
    q: Names,
    dirs: &[&DataDir],
    clock: &ManualClock,
    acked: &mut Acked,
) -> shoal_engine::Result<()> {
    let mut step = 0;
    let mut next = || -> shoal_engine::Result<Arc<shoal_engine::queue::Queue>> {
        step += 1;
        dirs[step % dirs.len()].queue(q.work)
    };
    let receive = no_wait(10);
    let mut kept: Vec<(String, String, u64)> = Vec::new();
    for round in 0..12 {
        // One message kept in flight by an earlier round (in a sealed segment by now), so
        // that a delete can make compaction drop a message in the operation that deletes it.
        if !kept.is_empty() {
            let (body, handle, until) = kept.remove(0);
            acked.delete_attempted.insert(body.clone());
            match next()?.delete(&handle) {
                // Once its visibility timeout has passed, the message may have been received
                // or moved to the dead-letter queue since: the delete then succeeds without
                // effect (standard) or is refused (FIFO).
                Ok(()) if clock.now_ms() < until => {
                    acked.deleted.insert(body);
                }
                Ok(()) => {}
                Err(Error::MessageNotInflight(_)) if q.fifo && clock.now_ms() >= until => {}
                Err(e) => return Err(e),
            }
        }
        let batch: Vec<SendMessage> = (0..5).map(|i| message(q, round, i)).collect();
        acked.attempted.extend(batch.iter().map(|m| m.body.clone()));
        next()?.send_batch(&batch)?;
        acked.sent.extend(batch.into_iter().map(|m| m.body));
        let got = next()?.receive(&receive)?;
        // Delete the first two, give the third back at once, keep the rest in flight.
        let deleting: Vec<&str> = got
            .iter()
            .take(2)
            .map(|m| m.receipt_handle.as_str())
            .collect();
        acked
            .delete_attempted
            .extend(got.iter().take(2).map(|m| m.body.clone()));
        let results = next()?.delete_batch(&deleting)?;
        for (m, result) in got.iter().zip(results) {
            if result.is_ok() {
                acked.deleted.insert(m.body.clone());
            }
        }
        if let Some(m) = got.get(2) {
            next()?.change_visibility(&m.receipt_handle, Duration::ZERO)?;
        }
        // A message received again has a new receipt handle: the old one deletes nothing.
        kept.retain(|(body, _, _)| got.iter().all(|m| m.body != *body));
        let until = clock.now_ms() + 30_000;
        kept.extend(
            got.iter()
                .skip(3)
                .map(|m| (m.body.clone(), m.receipt_handle.clone(), until)),
        );
        if round % 2 == 1 {
            // Past the visibility timeout: what was kept in flight is received again, and
            // after its third receive moved to the dead-letter queue.
            clock.advance(31_000);
        }
    }
    // Everything in the dead-letter queue goes back (SQS's StartMessageMoveTask), and is
    // received once more there.
    if !q.fifo {
        // (On a FIFO queue a redrive puts old messages behind newer ones of their group.)
        let moved = dirs[0].queue(q.dlq)?.redrive(None)?;
        acked.redriven |= moved > 0;
        next()?.receive(&receive)?;
    }
    Ok(())
}

/// Opens what the crash left a day later and holds it to the promises.
fn verify(q: Names, after: &SimStorage, clock: &ManualClock, acked: &Acked, case: &str) {
    let clock = ManualClock::new(clock.now_ms() + 24 * 3600 * 1000);
    let data = open(after, &clock);
    let counted: u64 = [q.work, q.dlq]
        .iter()
        .map(|queue| {
            let counts = data.queue(queue).unwrap().counts().unwrap();
            assert_eq!(
                (counts.in_flight, counts.delayed),
                (0, 0),
                "{case}: {queue}"
            );
            counts.visible
        })
        .sum();
    let mut delivered: BTreeMap<String, u32> = BTreeMap::new();
    // Until both are empty: draining one queue finishes the moves a crash interrupted in
    // it, which may put messages into the other.
    loop {
        let mut any = false;
        for queue in [q.work, q.dlq] {
            let bodies = drain_queue(&data, queue);
            if q.fifo {
                in_group_order(&bodies, &format!("{case}: {queue}"));
            }
            any |= !bodies.is_empty();
            for body in bodies {
                *delivered.entry(body).or_default() += 1;
            }
        }
        if !any {
            break;
        }
    }
    let total: u32 = delivered.values().sum();
    assert_eq!(
        counted,
        u64::from(total),
        "{case}: counted against delivered"
    );
    for (body, times) in &delivered {
        assert!(acked.attempted.contains(body), "{case}: {body} never sent");
        assert_eq!(*times, 1, "{case}: {body} delivered {times} times");
        assert!(
            !acked.deleted.contains(body),
            "{case}: {body} came back after its delete was acknowledged"
        );
    }
    for body in acked.sent.difference(&acked.delete_attempted) {
        assert!(delivered.contains_key(body), "{case}: {body} was lost");
    }
    for queue in [q.work, q.dlq] {
        let counts = data.queue(queue).unwrap().counts().unwrap();
        assert_eq!(
            (counts.visible, counts.in_flight, counts.delayed),
            (0, 0, 0),
            "{case}: {queue} drained"
        );
    }
    let report = data.check().unwrap();
    assert!(report.problems.is_empty(), "{case}: {:?}", report.problems);
}

/// Within each FIFO group, messages come out in the order they were sent.
fn in_group_order(bodies: &[String], case: &str) {
    let mut last: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for body in bodies {
        let (round, i) = body
            .strip_prefix('r')
            .and_then(|b| b.split_once("-m"))
            .map(|(r, i)| (r.parse().unwrap(), i.parse().unwrap()))
            .unwrap();
        let group = i % 3;
        if let Some(before) = last.insert(group, (round, i)) {
            assert!(
                before < (round, i),
                "{case}: group {group} out of order at {body}"
            );
        }
    }
}

#[test]
fn every_fsync_of_a_standard_queue_workload_can_fail_into_a_power_loss() {
    sweep(STANDARD, 1);
}

#[test]
fn every_fsync_of_a_fifo_queue_workload_can_fail_into_a_power_loss() {
    sweep(FIFO, 1);
}

/// Two processes take turns with every step (what a shell pipeline of `shoal send`,
/// `receive` and `delete` commands does).
#[test]
fn every_fsync_of_a_two_process_queue_workload_can_fail_into_a_power_loss() {
    sweep(STANDARD, 2);
}

/// `processes` data-directory handles on the one storage, each standing for a process.
fn sweep(q: Names, processes: usize) {
    // The workload without faults, crashed at its end, and how many fsyncs it makes.
    let mut before = 0;
    let (sim, (clock, acked, failed)) = run(q, processes, |sim| before = file_syncs(sim));
    assert!(!failed, "the workload fails without a fault");
    let syncs = file_syncs(&sim) - before;
    assert!(syncs > 50, "the workload fsyncs {syncs} times");
    assert!(!acked.deleted.is_empty(), "the workload deletes");
    assert!(acked.redriven || q.fifo, "the workload redrives");
    verify(
        q,
        &sim.crash(CrashPlan::PowerLoss),
        &clock,
        &acked,
        "no fault",
    );

    fail_every_fsync(
        syncs,
        |n| {
            let (sim, told) = run(q, processes, |sim| sim.fail_sync_after(n));
            assert!(told.2, "fsync {n} of {syncs} was never made");
            (sim, told)
        },
        |after, (clock, acked, _), case| verify(q, after, clock, acked, case),
    );
}

/// Fresh queues, `processes` handles on their storage, `arm` called on the storage, then the
/// workload until it fails: the storage and (clock, what the workload was told, whether a
/// step failed).
fn run(
    q: Names,
    processes: usize,
    arm: impl FnOnce(&SimStorage),
) -> (SimStorage, (Arc<ManualClock>, Acked, bool)) {
    let (sim, clock) = fresh(q);
    let dirs: Vec<DataDir> = (0..processes).map(|_| open(&sim, &clock)).collect();
    arm(&sim);
    let mut acked = Acked::default();
    let failed = workload(q, &dirs.iter().collect::<Vec<_>>(), &clock, &mut acked).is_err();
    drop(dirs);
    (sim, (clock, acked, failed))
}

/// The same promises when a write is torn instead (7 bytes of it reach the file, then the
/// write fails), at every write of the workload in turn; in `never` durability, after a
/// process crash only (nothing was fsynced for a power loss to keep).
#[test]
fn every_write_of_a_queue_workload_can_be_torn() {
    tear_sweep(STANDARD, &[CrashPlan::PowerLoss, CrashPlan::ProcessCrash]);
}

#[test]
fn every_write_of_a_never_durable_queue_workload_can_be_torn() {
    tear_sweep(NEVER, &[CrashPlan::ProcessCrash]);
}

fn tear_sweep(q: Names, plans: &[CrashPlan]) {
    let writes = tear_every_write(
        plans,
        |n| run(q, 1, |sim| sim.tear_write_after(n, 7)),
        |after, (clock, acked, _), case| verify(q, after, clock, acked, case),
    );
    assert!(writes > 100, "the workload writes {writes} times");
}

/// What a receive of up to 10 messages gets (no wait) from queue `name` of `data`: the
/// bodies and their receive counts.
fn received(data: &DataDir, name: &str) -> Vec<(String, u32)> {
    let got = data.queue(name).unwrap().receive(&no_wait(10)).unwrap();
    got.into_iter().map(|m| (m.body, m.receive_count)).collect()
}

/// A standard queue's receive is made durable by the journal's next sync, not before it
/// returns: a power loss right after it gives the message back at once with its receive count
/// as before (a redelivery, as at-least-once delivery allows; its consumer went down with the
/// machine), a process crash keeps it, and a delete after it, or closing the queue, makes it
/// durable. A FIFO receive is durable before it returns.
#[test]
fn a_standard_receive_is_made_durable_by_the_next_sync_and_a_fifo_receive_before_it_returns() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let storage: SharedStorage = Arc::new(sim.clone());
    let data = DataDir::open_with("/data", storage, clock.clone()).unwrap();
    let reopen = |plan| {
        let storage: SharedStorage = Arc::new(sim.crash(plan));
        DataDir::open_with("/data", storage, clock.clone()).unwrap()
    };
    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let jobs = data.queue("jobs").unwrap();
    jobs.send(&SendMessage::new("a")).unwrap();
    jobs.send(&SendMessage::new("b")).unwrap();

    let before = file_syncs(&sim);
    assert_eq!(receive_one(&jobs).body, "a");
    assert_eq!(
        file_syncs(&sim),
        before,
        "a standard receive waits for no fsync"
    );
    assert_eq!(
        received(&reopen(CrashPlan::PowerLoss), "jobs"),
        [("a".to_string(), 1), ("b".to_string(), 1)],
        "after a power loss"
    );
    assert_eq!(
        received(&reopen(CrashPlan::ProcessCrash), "jobs"),
        [("b".to_string(), 1)],
        "after a process crash"
    );

    // Deleting another message syncs the journal, and with it the receive of "a".
    let b = receive_one(&jobs);
    assert_eq!(b.body, "b");
    jobs.delete(&b.receipt_handle).unwrap();
    let after = reopen(CrashPlan::PowerLoss);
    assert_eq!(received(&after, "jobs"), []);
    clock.advance(30_000);
    assert_eq!(
        received(&after, "jobs"),
        [("a".to_string(), 2)],
        "once its visibility timeout has passed"
    );

    data.create_queue("jobs.fifo", &QueueAttributes::defaults(true))
        .unwrap();
    let orders = data.queue("jobs.fifo").unwrap();
    orders
        .send(&SendMessage {
            body: "x".into(),
            group_id: Some("g".into()),
            dedup_id: Some("1".into()),
            ..SendMessage::default()
        })
        .unwrap();
    let before = file_syncs(&sim);
    assert_eq!(receive_one(&orders).body, "x");
    assert!(file_syncs(&sim) > before, "a FIFO receive is fsynced");
    assert_eq!(
        received(&reopen(CrashPlan::PowerLoss), "jobs.fifo"),
        [],
        "a FIFO message received before a power loss stays in flight"
    );

    // Closing the directory syncs what receives left unsynced.
    data.create_queue("idle", &QueueAttributes::defaults(false))
        .unwrap();
    let idle = data.queue("idle").unwrap();
    idle.send(&SendMessage::new("z")).unwrap();
    assert_eq!(receive_one(&idle).body, "z");
    let before = file_syncs(&sim);
    drop((idle, jobs, orders, data));
    assert_eq!(file_syncs(&sim), before + 1, "one fsync, of the journal");
    assert_eq!(received(&reopen(CrashPlan::PowerLoss), "idle"), []);
}

fn receive_one(q: &Queue) -> ReceivedMessage {
    let mut got = q.receive(&no_wait(1)).unwrap();
    assert_eq!(got.len(), 1);
    got.pop().unwrap()
}

/// A handle whose queue another process deleted and made again since leaves the new queue
/// alone when it is dropped: what its receives left unsynced went with the old queue.
#[test]
fn dropping_a_handle_of_a_queue_made_again_syncs_nothing() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let open = || {
        let storage: SharedStorage = Arc::new(sim.clone());
        DataDir::open_with("/data", storage, clock.clone()).unwrap()
    };
    let (first, second) = (open(), open());
    first
        .create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let old = first.queue("jobs").unwrap();
    old.send(&SendMessage::new("a")).unwrap();
    assert_eq!(receive_one(&old).body, "a");

    second.delete_queue("jobs").unwrap();
    clock.advance(1);
    second
        .create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    second
        .queue("jobs")
        .unwrap()
        .send(&SendMessage::new("b"))
        .unwrap();
    let before = file_syncs(&sim);
    drop((old, first));
    assert_eq!(file_syncs(&sim), before);
    assert_eq!(received(&second, "jobs"), [("b".to_string(), 1)]);
}
