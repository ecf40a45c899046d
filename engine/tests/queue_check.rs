//! `DataDir::check` on queues: a healthy queue (rolled, compacted, snapshotted, its journal
//! trimmed) reports nothing; one flipped bit in the message log, the journal, the attributes or
//! the snapshot is reported in exactly that file; and checking changes nothing.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_engine::log::Problem;
use shoal_engine::queue::{QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::SimStorage;
use shoal_engine::{DataDir, DirOptions};

const QUEUE: &str = "/data/queues/jobs";
const FIRST_SEGMENT: &str = "00000000000000000000.log";
/// A byte inside the first record of a segment (past the 64-byte file header and the frame's
/// 32-byte fixed part).
const IN_FIRST_RECORD: usize = 64 + 32 + 2;

struct Env {
    sim: SimStorage,
    data: DataDir,
}

/// A queue with small segments that has seen enough traffic for rolled and compacted message
/// segments, a snapshot and a trimmed journal; one message stays in flight.
fn busy_queue() -> Env {
    let common::Env { sim, data, .. } = common::env_with(DirOptions {
        queue_segment_bytes: Some(16 << 10),
        ..DirOptions::default()
    });
    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let q = data.queue("jobs").unwrap();
    // 10 messages per round: a Scanned and 10 Received events, then 10 Deleted ones (one
    // message of the first round stays in flight, pinning its segment).
    for round in 0..250 {
        let batch: Vec<SendMessage> = (0..10)
            .map(|i| SendMessage::new(format!("message {round}-{i} {:0>60}", 0)))
            .collect();
        q.send_batch(&batch).unwrap();
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: Some(Duration::from_secs(3600)),
            })
            .unwrap();
        assert_eq!(got.len(), 10);
        let skip = usize::from(round == 0);
        let handles: Vec<&str> = got[skip..]
            .iter()
            .map(|m| m.receipt_handle.as_str())
            .collect();
        for r in q.delete_batch(&handles).unwrap() {
            r.unwrap();
        }
    }
    let freed = q.compact().unwrap();
    assert!(freed.bytes_freed > 0, "{freed:?}");
    assert!(freed.journal_segments_removed > 0, "{freed:?}");
    Env { sim, data }
}

fn contents(sim: &SimStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    sim.files()
        .into_iter()
        .map(|f| {
            let bytes = sim.contents(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

fn problems(env: &Env) -> Vec<Problem> {
    let before = contents(&env.sim);
    let report = env.data.check().unwrap();
    assert_eq!(contents(&env.sim), before, "check changes nothing");
    report.problems
}

/// The file with the lowest base offset in a queue's log.
fn first_segment(sim: &SimStorage, log: &str) -> PathBuf {
    let dir = Path::new(QUEUE).join(log);
    sim.files()
        .into_iter()
        .filter(|f| f.parent() == Some(&dir) && f.extension().is_some_and(|e| e == "log"))
        .min()
        .unwrap()
}

/// Flips a byte, expects exactly one problem, in `file`, then flips it back.
fn flip_and_expect(env: &Env, file: &Path, pos: usize, offset: u64) {
    env.sim.corrupt(file, pos, 0x10).unwrap();
    let found = problems(env);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].file, file, "{found:#?}");
    assert_eq!(found[0].offset, offset, "{found:#?}");
    env.sim.corrupt(file, pos, 0x10).unwrap();
    assert_eq!(problems(env), [], "healthy again");
}

#[test]
fn a_healthy_busy_queue_reports_nothing() {
    let env = busy_queue();
    let files = env.sim.files();
    assert!(files.iter().any(|f| f.ends_with("state.snap")));
    assert_ne!(
        first_segment(&env.sim, "journal").file_name().unwrap(),
        FIRST_SEGMENT,
        "the journal was trimmed"
    );
    let report = env.data.check().unwrap();
    assert_eq!(report.problems, []);
    assert!(report.records > 100, "{report:?}");
    // Opening and reading the queue again agrees.
    let q = env.data.queue("jobs").unwrap();
    assert_eq!(q.counts().unwrap().in_flight, 1);
    assert_eq!(problems(&env), []);
}

#[test]
fn a_flipped_bit_in_the_message_log_is_reported_in_that_segment() {
    let env = busy_queue();
    let segment = first_segment(&env.sim, "messages");
    flip_and_expect(&env, &segment, IN_FIRST_RECORD, 64);
    // The active segment too.
    let active = env
        .sim
        .files()
        .into_iter()
        .filter(|f| f.starts_with(Path::new(QUEUE).join("messages")))
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    assert_ne!(active, segment);
    flip_and_expect(&env, &active, IN_FIRST_RECORD, 64);
}

#[test]
fn a_flipped_bit_in_the_journal_is_reported_in_that_segment() {
    let env = busy_queue();
    let segment = first_segment(&env.sim, "journal");
    flip_and_expect(&env, &segment, IN_FIRST_RECORD, 64);
}

#[test]
fn a_flipped_bit_in_the_attributes_is_reported() {
    let env = busy_queue();
    // A metadata checksum mismatch is reported at the checksum (byte 16).
    flip_and_expect(&env, &Path::new(QUEUE).join("queue.meta"), 30, 16);
}

#[test]
fn a_flipped_bit_in_the_snapshot_is_reported() {
    let env = busy_queue();
    let snap = Path::new(QUEUE).join("state.snap");
    let len = env.sim.contents(&snap).unwrap().len();
    flip_and_expect(&env, &snap, len - 1, 16);
}

#[test]
fn a_small_healthy_queue_reports_nothing() {
    let common::Env { sim, data, .. } = common::env();
    for name in ["jobs", "empty", "orders.fifo"] {
        data.create_queue(name, &QueueAttributes::defaults(name.ends_with(".fifo")))
            .unwrap();
    }
    let q = data.queue("jobs").unwrap();
    q.send(&SendMessage::new("hello")).unwrap();
    let got = q.receive(&Receive::default()).unwrap();
    q.delete(&got[0].receipt_handle).unwrap();
    let fifo = data.queue("orders.fifo").unwrap();
    fifo.send(&SendMessage {
        group_id: Some("g".into()),
        dedup_id: Some("d".into()),
        ..SendMessage::new("first")
    })
    .unwrap();
    let env = Env { sim, data };
    assert_eq!(problems(&env), []);
    // Every queue's files were read: attributes and two logs (head and segment each), and
    // the directory's format file.
    let per_queue = 1 + 2 * 2;
    let report = env.data.check().unwrap();
    assert!(report.files > 3 * per_queue, "{report:?}");
}
