//! Maintenance killed midway: queue compaction and stream retention SIGKILLed at random
//! moments while writers and readers run, with real processes.
//!
//! This binary has its own `main` (harness = false): the parent runs the scenarios and
//! re-executes the binary with `SHOAL_CHILD=<role>` for the children.
//!
//! Each round runs 2 minutes after the one before on the engine's (injected) clock, so
//! visibility timeouts end and retention expires messages and records between rounds without
//! a sleep: a message sent in round r may expire from round r+3 on (retention 5 minutes).
//!
//! - `compact`: a standard queue with 4 KiB segments; per round 2 senders, 2 receivers that
//!   delete about 9 in 10 messages, and a `compact` loop (snapshot, whole-segment removal,
//!   segment rewrites, retention, journal trimming), each SIGKILLed at its own random moment.
//!   After every round the directory opens and checks clean; at the end the queue is drained
//!   and the history checked: nothing acknowledged lost (unless old enough to expire), nothing
//!   deleted comes back, nothing received that was not sent, no receive inside another's
//!   visibility timeout.
//! - `retention`: a 2-shard stream with 5-minute retention; per round 2 writer processes open
//!   the shards (which enforces retention, deleting expired segments) and put records until
//!   SIGKILLed. After every round the whole stream is read and checked: every acknowledged
//!   record there (unless old enough to expire) at its sequence number, nothing else, per-shard
//!   sequence numbers strictly increasing and never reused; the directory checks clean.
//!
//! `SHOAL_MAINT_CRASH_ROUNDS` (default 20) and `SHOAL_MAINT_CRASH_SEED` (default: the time,
//! printed) set the rounds and the seed.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_engine::DataDir;
use shoal_engine::queue::QueueAttributes;
use shoal_engine::stream::{CreateStream, PutRecord, StartPosition};

mod crash_support;

use crash_support::checker::{History, QueueSpec, StreamRead};
use crash_support::{
    Child, Rng, check_clean, child_receive, child_send, drain, env_u64, kill_at, open_dir,
    record_receives, record_sends, seed,
};

/// Engine time between rounds.
const ROUND_SHIFT_MS: u64 = 120_000;
/// Queue and stream retention: a round's writes may expire three rounds later.
const RETENTION: Duration = Duration::from_secs(300);
const VISIBILITY_MS: u64 = 300;

fn shift(round: u64) -> u64 {
    round * ROUND_SHIFT_MS
}

/// The round a test id (`r{ROUND}...`) was written in.
fn round_of(id: &str) -> u64 {
    id[1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Marks every write at least three rounds older than `round` as one retention may take.
fn mark_expirable(history: &mut History, round: u64) {
    let old: Vec<usize> = history
        .writes()
        .iter()
        .enumerate()
        .filter(|(_, w)| round_of(&w.id) + 3 <= round)
        .map(|(i, _)| i)
        .collect();
    for i in old {
        history.may_expire(i);
    }
}

/// `compact DIR QUEUE SHIFT_MS`: compacts the queue over and over until killed, printing
/// `C SEGMENTS_REMOVED SEGMENTS_COMPACTED JOURNAL_SEGMENTS_REMOVED` after each.
fn child_compact(args: &[String]) {
    let data = open_dir(Path::new(&args[0]), args[2].parse().unwrap(), true);
    let queue = data.queue(&args[1]).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        let r = queue.compact().unwrap();
        writeln!(
            out,
            "C {} {} {}",
            r.segments_removed, r.segments_compacted, r.journal_segments_removed
        )
        .unwrap();
        out.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn compact() {
    let rounds = env_u64("SHOAL_MAINT_CRASH_ROUNDS", 20);
    let seed = seed("compact", "SHOAL_MAINT_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.to_str().unwrap().to_string();
    let queue = "jobs";
    open_dir(root, 0, true)
        .create_queue(
            queue,
            &QueueAttributes {
                visibility_timeout: Duration::from_millis(VISIBILITY_MS),
                retention: RETENTION,
                ..QueueAttributes::defaults(false)
            },
        )
        .unwrap();
    let mut history = History::new();
    history.queue(queue, QueueSpec::default());
    let started = Instant::now();
    let (mut acknowledged, mut compactions) = (0, [0u64; 3]);
    for round in 0..rounds {
        let context = format!("compact round {round} (SHOAL_MAINT_CRASH_SEED={seed})");
        let at = shift(round).to_string();
        let mut children = Vec::new();
        for id in 0..2u64 {
            let args = [&dir, queue, &round.to_string(), &id.to_string(), &at, "1"];
            let args: Vec<String> = args.iter().map(ToString::to_string).collect();
            children.push((Child::spawn("send", &args), 30 + rng.below(270)));
        }
        for _ in 0..2 {
            let args = [
                dir.clone(),
                queue.to_string(),
                at.clone(),
                "1".into(),
                VISIBILITY_MS.to_string(),
                "10".into(),
                rng.next().to_string(),
            ];
            children.push((Child::spawn("receive", &args), 30 + rng.below(270)));
        }
        let args = vec![dir.clone(), queue.to_string(), at.clone()];
        children.push((Child::spawn("compact", &args), 10 + rng.below(290)));
        let outputs = kill_at(children);
        for (i, (_, lines)) in outputs.iter().enumerate() {
            match i {
                0 | 1 => {
                    acknowledged += record_sends(&mut history, queue, round, i as u64, lines);
                }
                2 | 3 => record_receives(&mut history, queue, VISIBILITY_MS, lines),
                _ => {
                    for line in lines {
                        let n: Vec<u64> =
                            line[2..].split(' ').map(|x| x.parse().unwrap()).collect();
                        for k in 0..3 {
                            compactions[k] += n[k];
                        }
                    }
                }
            }
        }
        check_clean(root, &context);
        open_dir(root, shift(round), true)
            .queue(queue)
            .unwrap()
            .counts()
            .unwrap();
        history.assert_valid(&context);
    }
    let last = shift(rounds);
    let data = open_dir(root, last, true);
    let left = drain(&data, queue, last, &mut history);
    history.drained(queue);
    mark_expirable(&mut history, rounds);
    check_clean(root, "compact");
    let stats = history.assert_valid(&format!("compact (SHOAL_MAINT_CRASH_SEED={seed})"));
    assert!(
        compactions[0] + compactions[1] > 0,
        "compaction never removed or rewrote a segment"
    );
    println!(
        "compact: {rounds} rounds of 2 senders, 2 receivers and a compaction SIGKILLed in {:.1?}: {acknowledged} sends acknowledged ({} unknown), {} receives, {} message-log segments removed, {} rewritten, {} journal segments removed by compactions that finished; {left} drained at the end; history checked",
        started.elapsed(),
        stats.unknown,
        stats.receives,
        compactions[0],
        compactions[1],
        compactions[2],
    );
}

/// `put DIR STREAM ROUND ID SHIFT_MS`: puts batches of 1-20 records until killed, printing
/// `I FIRST COUNT` before each and `A N SHARD SEQUENCE` for each acknowledged record.
fn child_put(args: &[String]) {
    let data = open_dir(Path::new(&args[0]), args[4].parse().unwrap(), false);
    let stream = data.stream(&args[1]).unwrap();
    let (round, id): (u64, u64) = (args[2].parse().unwrap(), args[3].parse().unwrap());
    let mut rng = Rng::new(round * 131 + id);
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    loop {
        let count = 1 + rng.below(20);
        let keys: Vec<String> = (n..n + count).map(|i| i.to_string()).collect();
        let datas: Vec<String> = (n..n + count)
            .map(|i| format!("r{round}p{id}n{i}"))
            .collect();
        let records: Vec<PutRecord<'_>> = keys
            .iter()
            .zip(&datas)
            .map(|(k, d)| PutRecord {
                partition_key: k,
                explicit_hash_key: None,
                data: d.as_bytes(),
            })
            .collect();
        writeln!(out, "I {n} {count}").unwrap();
        out.flush().unwrap();
        let outcome = stream.put_records(&records);
        for (k, r) in outcome.results.iter().enumerate() {
            writeln!(out, "A {} {} {}", n + k as u64, r.shard, r.sequence).unwrap();
        }
        out.flush().unwrap();
        n += count;
        std::thread::sleep(Duration::from_millis(1 + rng.below(4)));
    }
}

/// Reads the whole stream (every shard from its trim horizon) as read pass `pass`.
fn read_stream(data: &DataDir, name: &str, pass: u64, history: &mut History) -> usize {
    let stream = data.stream(name).unwrap();
    history.reads.retain(|r| r.pass + 1 >= pass);
    let mut count = 0;
    for shard in stream.shard_indexes().unwrap() {
        let mut it = stream
            .shard_iterator(shard, StartPosition::TrimHorizon)
            .unwrap();
        loop {
            let got = stream.get_records(&mut it, 1000).unwrap();
            if got.records.is_empty() {
                break;
            }
            for r in got.records {
                count += 1;
                history.read(StreamRead {
                    stream: name.to_string(),
                    pass,
                    shard: r.shard_id,
                    sequence: r.sequence_number.parse().unwrap(),
                    id: String::from_utf8_lossy(&r.data).into_owned(),
                    payload: r.data,
                });
            }
        }
    }
    history.final_read(name, pass);
    count
}

fn retention() {
    let rounds = env_u64("SHOAL_MAINT_CRASH_ROUNDS", 20);
    let seed = seed("retention", "SHOAL_MAINT_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.to_str().unwrap().to_string();
    let name = "s";
    open_dir(root, 0, false)
        .create_stream(&CreateStream {
            retention: RETENTION,
            ..CreateStream::new(name, 2)
        })
        .unwrap();
    let mut history = History::new();
    let started = Instant::now();
    let (mut acknowledged, mut read) = (0, 0);
    for round in 0..rounds {
        let context = format!("retention round {round} (SHOAL_MAINT_CRASH_SEED={seed})");
        let at = shift(round).to_string();
        let children: Vec<(Child, u64)> = (0..2u64)
            .map(|id| {
                let args = [&dir, name, &round.to_string(), &id.to_string(), &at];
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                // Some killed while opening (and enforcing retention), most while putting.
                (Child::spawn("put", &args), 5 + rng.below(200))
            })
            .collect();
        for (id, (_, lines)) in kill_at(children).into_iter().enumerate() {
            let mut index = std::collections::HashMap::new();
            for line in lines {
                let p: Vec<&str> = line.split(' ').collect();
                match p[0] {
                    "I" => {
                        let (first, count): (u64, u64) =
                            (p[1].parse().unwrap(), p[2].parse().unwrap());
                        for n in first..first + count {
                            let data = format!("r{round}p{id}n{n}");
                            index.insert(n, history.invoke(name, &data, data.as_bytes()));
                        }
                    }
                    _ => {
                        let n: u64 = p[1].parse().unwrap();
                        let shard = shoal_engine::stream::shard_id(p[2].parse().unwrap());
                        history.ok_at(index[&n], &shard, p[3].parse().unwrap());
                        acknowledged += 1;
                    }
                }
            }
        }
        check_clean(root, &context);
        mark_expirable(&mut history, round);
        let data = open_dir(root, shift(round), false);
        read = read_stream(&data, name, round, &mut history);
        history.assert_valid(&context);
    }
    // Retention deleted whole segments: the oldest records are gone from the disk, not just
    // skipped by readers.
    let data = open_dir(root, shift(rounds), false);
    let stream = data.stream(name).unwrap();
    let mut trimmed = 0;
    for shard in stream.shard_indexes().unwrap() {
        let dir = root.join(format!("streams/{name}/shards/{shard:012}"));
        let reader = shoal_engine::log::LogReader::open(
            std::sync::Arc::new(shoal_engine::storage::FsStorage::new()),
            &dir,
        )
        .unwrap();
        trimmed += reader.start_offset().unwrap();
    }
    assert!(trimmed > 0, "retention never deleted a segment");
    println!(
        "retention: {rounds} rounds of 2 stream writers SIGKILLed (retention runs as each opens) in {:.1?}: {acknowledged} puts acknowledged, {read} records readable at the end, {trimmed} records deleted by retention; history checked every round",
        started.elapsed(),
    );
}

fn main() {
    if let Ok(role) = std::env::var("SHOAL_CHILD") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match role.as_str() {
            "send" => child_send(&args),
            "receive" => child_receive(&args),
            "compact" => child_compact(&args),
            "put" => child_put(&args),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    crash_support::run_scenarios(
        "crash_maintenance",
        &[("compact", compact), ("retention", retention)],
    );
}
