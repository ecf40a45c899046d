//! Creating, changing and deleting queues, streams, topics and subscriptions across a power
//! loss at every fsync: the N-th fsync of an administration workload fails (for every N it
//! reaches), the machine loses power (unsynced bytes gone, or a seeded part kept) or the
//! process dies, and another process opens the directory. Whatever N was, the directory
//! opens, an acknowledged creation is there and an acknowledged deletion is not (unless a
//! later step made the name again), everything listed opens and takes a write and a read,
//! `check` finds nothing, and every name can then be deleted and made again: an
//! interrupted step never leaves a half-made or half-deleted name in the way.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{T0, fail_every_fsync, file_syncs, subscribe_queue, tear_every_write};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_engine::clock::ManualClock;
use shoal_engine::queue::{QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::{CrashPlan, SharedStorage, SimStorage};
use shoal_engine::stream::{CreateStream, PutRecord};
use shoal_engine::topic::{PublishMessage, TopicAttributes};
use shoal_engine::{DataDir, Error};

fn open(sim: &SimStorage, clock: &Arc<ManualClock>) -> shoal_engine::Result<DataDir> {
    let storage: SharedStorage = Arc::new(sim.clone());
    DataDir::open_with("/data", storage, clock.clone())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Queue,
    Stream,
    Topic,
}

/// What the workload was told about each name: `Some(true)` made, `Some(false)` deleted,
/// `None` uncertain (a step on it failed).
#[derive(Default)]
struct Acked(BTreeMap<(Kind, &'static str), Option<bool>>);

impl Acked {
    fn step<T>(
        &mut self,
        kind: Kind,
        name: &'static str,
        exists_after: bool,
        result: shoal_engine::Result<T>,
    ) -> shoal_engine::Result<T> {
        let entry = self.0.entry((kind, name)).or_insert(None);
        *entry = match &result {
            Ok(_) => Some(exists_after),
            Err(_) => None,
        };
        result
    }
}

/// Runs until the first error (an injected fault) or the end.
fn workload(data: &DataDir, acked: &mut Acked) -> shoal_engine::Result<()> {
    let q = QueueAttributes::defaults(false);
    acked.step(Kind::Queue, "q", true, data.create_queue("q", &q))?;
    acked.step(
        Kind::Queue,
        "f.fifo",
        true,
        data.create_queue("f.fifo", &QueueAttributes::defaults(true)),
    )?;
    acked.step(
        Kind::Stream,
        "s",
        true,
        data.create_stream(&CreateStream::new("s", 2)),
    )?;
    acked.step(
        Kind::Topic,
        "t",
        true,
        data.create_topic("t", &TopicAttributes::defaults(false)),
    )?;
    let sub = data.subscribe("t", &subscribe_queue("q", None, true))?;
    data.queue("q")?.send(&SendMessage::new("one"))?;
    let published = data.topic("t")?.publish(&PublishMessage::new("two"))?;
    if !published.warnings.is_empty() {
        // The publish is acknowledged, its delivery to `q` failed (left pending).
        return Err(Error::InvalidArgument(published.warnings.join("; ")));
    }
    let longer = QueueAttributes {
        visibility_timeout: Duration::from_secs(90),
        ..q.clone()
    };
    data.set_queue_attributes("q", &longer)?;
    data.set_stream_retention("s", Duration::from_secs(48 * 3600))?;
    acked.step(Kind::Queue, "f.fifo", false, data.delete_queue("f.fifo"))?;
    data.unsubscribe(&sub.id)?;
    acked.step(Kind::Stream, "s", false, data.delete_stream("s"))?;
    acked.step(Kind::Topic, "t", false, data.delete_topic("t"))?;
    acked.step(Kind::Queue, "q", false, data.delete_queue("q"))?;
    acked.step(Kind::Queue, "q", true, data.create_queue("q", &q))?;
    acked.step(
        Kind::Stream,
        "s",
        true,
        data.create_stream(&CreateStream::new("s", 1)),
    )?;
    data.queue("q")?.send(&SendMessage::new("three"))?;
    Ok(())
}

fn exists(data: &DataDir, kind: Kind, name: &str) -> bool {
    match kind {
        Kind::Queue => data.list_queues("").unwrap().iter().any(|n| n == name),
        Kind::Stream => data.list_streams().unwrap().iter().any(|n| n == name),
        Kind::Topic => data.list_topics().unwrap().iter().any(|n| n == name),
    }
}

/// Writes to and reads from `name`.
fn exercise(data: &DataDir, kind: Kind, name: &str, case: &str) {
    match kind {
        Kind::Queue => {
            let q = data
                .queue(name)
                .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
            let fifo = name.ends_with(".fifo");
            let m = SendMessage {
                group_id: fifo.then(|| "g".to_string()),
                dedup_id: fifo.then(|| "after".to_string()),
                ..SendMessage::new("after")
            };
            q.send(&m).unwrap();
            q.receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: None,
            })
            .unwrap();
        }
        Kind::Stream => {
            let s = data
                .stream(name)
                .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
            let outcome = s.put_records(&[PutRecord {
                partition_key: "k",
                explicit_hash_key: None,
                data: b"after",
            }]);
            assert!(outcome.error.is_none(), "{case}: {:?}", outcome.error);
        }
        Kind::Topic => {
            let t = data
                .topic(name)
                .unwrap_or_else(|e| panic!("{case}: {name}: {e}"));
            let published = t.publish(&PublishMessage::new("after")).unwrap();
            assert!(published.warnings.is_empty(), "{case}: {published:?}");
        }
    }
}

fn verify(after: &SimStorage, clock: &Arc<ManualClock>, acked: &Acked, case: &str) {
    let data = open(after, clock).unwrap_or_else(|e| panic!("{case}: the directory: {e}"));
    for (&(kind, name), state) in &acked.0 {
        if let Some(made) = *state {
            assert_eq!(exists(&data, kind, name), made, "{case}: {kind:?} {name}");
        }
    }
    let listed: Vec<(Kind, String)> = data
        .list_queues("")
        .unwrap()
        .into_iter()
        .map(|n| (Kind::Queue, n))
        .chain(
            data.list_streams()
                .unwrap()
                .into_iter()
                .map(|n| (Kind::Stream, n)),
        )
        .chain(
            data.list_topics()
                .unwrap()
                .into_iter()
                .map(|n| (Kind::Topic, n)),
        )
        .collect();
    for (kind, name) in &listed {
        exercise(&data, *kind, name, case);
    }
    let report = data.check().unwrap();
    assert!(report.problems.is_empty(), "{case}: {:?}", report.problems);
    // Nothing half-made or half-deleted is in the way.
    for &(kind, name) in acked.0.keys() {
        let deleted = match kind {
            Kind::Queue => data.delete_queue(name),
            Kind::Stream => data.delete_stream(name),
            Kind::Topic => data.delete_topic(name),
        };
        match deleted {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("{case}: deleting {kind:?} {name}: {e}"),
        }
        let made = match kind {
            Kind::Queue => data
                .create_queue(name, &QueueAttributes::defaults(name.ends_with(".fifo")))
                .map(drop),
            Kind::Stream => data.create_stream(&CreateStream::new(name, 1)).map(drop),
            Kind::Topic => data
                .create_topic(name, &TopicAttributes::defaults(false))
                .map(drop),
        };
        made.unwrap_or_else(|e| panic!("{case}: making {kind:?} {name} again: {e}"));
        exercise(&data, kind, name, case);
    }
}

#[test]
fn every_fsync_of_an_administration_workload_can_fail_into_a_power_loss() {
    let mut before = 0;
    let (sim, (clock, acked, failed)) = run(|sim| before = file_syncs(sim));
    assert!(!failed, "the workload fails without a fault");
    let syncs = file_syncs(&sim) - before;
    assert!(syncs > 20, "the workload fsyncs {syncs} times");
    verify(&sim.crash(CrashPlan::PowerLoss), &clock, &acked, "no fault");

    // A few fsyncs fail without failing a step: a topic handle saves its delivery cursor
    // when dropped, and a cursor that lags only makes the next delivery look further back.
    fail_every_fsync(
        syncs,
        |n| run(|sim| sim.fail_sync_after(n)),
        |after, (clock, acked, _), case| verify(after, clock, acked, case),
    );
}

/// A fresh directory, `arm` called on its storage, then the workload until it fails: the
/// storage and (clock, what the workload was told, whether a step failed).
fn run(arm: impl FnOnce(&SimStorage)) -> (SimStorage, (Arc<ManualClock>, Acked, bool)) {
    let sim = SimStorage::new();
    let clock = ManualClock::new(T0);
    let data = open(&sim, &clock).unwrap();
    arm(&sim);
    let mut acked = Acked::default();
    let failed = workload(&data, &mut acked).is_err();
    drop(data);
    (sim, (clock, acked, failed))
}

/// The same promises when a write is torn instead (7 bytes of it reach the file, then the
/// write fails), at every write of the workload in turn.
#[test]
fn every_write_of_an_administration_workload_can_be_torn() {
    let writes = tear_every_write(
        &[CrashPlan::PowerLoss, CrashPlan::ProcessCrash],
        |n| run(|sim| sim.tear_write_after(n, 7)),
        |after, (clock, acked, _), case| verify(after, clock, acked, case),
    );
    assert!(writes > 20, "the workload writes {writes} times");
}
