//! Crash tests of the real `shoal` binary: processes SIGKILLed at random moments, then the
//! data directory opened, read back in full and verified with `shoal check`, and the history
//! of what every process was told checked by the Jepsen-style checker (common/checker.rs,
//! whose own tests run in this binary).
//!
//! - `puts_killed`: 4 `shoal put --lines` writers on one 4-shard stream, each fed lines and
//!   SIGKILLed at its own random moment; a printed result line is an acknowledged record
//!   (the i-th line printed is the i-th line fed).
//! - `reshard_killed`: 2 writers on a stream while a `shoal reshard` (scale, split or merge)
//!   is SIGKILLed at a random moment; the stream must stay writable on every hash key.
//!
//! `SHOAL_CLI_CRASH_ROUNDS` (default 20) and `SHOAL_CLI_CRASH_SEED` (default: the time) set
//! the rounds and the seed; every failure names the seed and round.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

#[path = "common/checker.rs"]
mod checker;
mod common;

use checker::{History, StreamRead};
use common::{Dir, Reaped, check, json, lines};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rounds() -> u64 {
    std::env::var("SHOAL_CLI_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn seed(test: &str) -> u64 {
    let seed = std::env::var("SHOAL_CLI_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test}: SHOAL_CLI_CRASH_SEED={seed}");
    seed
}

/// A `shoal put --lines` process fed `count` numbered lines by a thread (about 20 a
/// millisecond), then EOF; `put` acknowledges every 500 lines and at EOF.
struct Putter {
    child: Reaped,
    feeder: JoinHandle<Vec<String>>,
    acks: JoinHandle<Vec<serde_json::Value>>,
    stop: Arc<AtomicBool>,
}

impl Putter {
    fn spawn(dir: &Dir, stream: &str, prefix: String, count: u64) -> Putter {
        Putter::spawn_command(dir, "put", stream, prefix, count)
    }

    /// The same with `shoal send QUEUE --lines`.
    fn spawn_send(dir: &Dir, queue: &str, prefix: String, count: u64) -> Putter {
        Putter::spawn_command(dir, "send", queue, prefix, count)
    }

    fn spawn_command(dir: &Dir, command: &str, target: &str, prefix: String, count: u64) -> Putter {
        let mut child = Reaped(
            dir.cmd(&[command, target, "--lines"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut stdin = child.0.stdin.take().unwrap();
        let stdout = child.0.stdout.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_feeding = Arc::clone(&stop);
        let feeder = std::thread::spawn(move || {
            let mut written = Vec::new();
            'feed: while (written.len() as u64) < count {
                for _ in 0..20 {
                    if stop_feeding.load(Ordering::Relaxed) || written.len() as u64 >= count {
                        break 'feed;
                    }
                    let line = format!("{prefix}n{}", written.len());
                    // A line the pipe took may or may not reach `put`: an invoked write.
                    if stdin.write_all(format!("{line}\n").as_bytes()).is_err() {
                        break 'feed;
                    }
                    written.push(line);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // EOF: `put` puts what it holds, prints, and exits (unless killed first).
            drop(stdin);
            written
        });
        let acks = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|l| json(&l))
                .collect()
        });
        Putter {
            child,
            feeder,
            acks,
            stop,
        }
    }

    /// SIGKILLs the writer and records what it was fed (invoked) and what it printed
    /// (acknowledged) in `history`; returns the number acknowledged.
    fn kill(mut self, target: &str, history: &mut History) -> usize {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.stop.store(true, Ordering::Relaxed);
        let fed = self.feeder.join().unwrap();
        let acks = self.acks.join().unwrap();
        assert!(acks.len() <= fed.len(), "more results than lines");
        for (i, line) in fed.iter().enumerate() {
            let w = history.invoke(target, line, line.as_bytes());
            match acks.get(i) {
                Some(v) if v["shard_id"].is_string() => history.ok_at(
                    w,
                    v["shard_id"].as_str().unwrap(),
                    v["sequence_number"].as_str().unwrap().parse().unwrap(),
                ),
                Some(_) => history.ok(w),
                None => {}
            }
        }
        acks.len()
    }
}

/// Reads the whole stream with `shoal get` as read pass `pass`; returns the record count.
fn read_all(dir: &Dir, stream: &str, pass: u64, history: &mut History, context: &str) -> usize {
    let out = dir.run(&["get", stream]);
    assert!(
        out.status.success(),
        "{context}: get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Keep the previous pass for comparison: sequence numbers are checked pass to pass.
    history.reads.retain(|r| r.pass + 1 >= pass);
    let records = lines(&out);
    for line in &records {
        let v = json(line);
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        history.read(StreamRead {
            stream: stream.to_string(),
            pass,
            shard: v["shard_id"].as_str().unwrap().to_string(),
            sequence: v["sequence_number"].as_str().unwrap().parse().unwrap(),
            id: String::from_utf8_lossy(&data).into_owned(),
            payload: data,
        });
    }
    history.final_read(stream, pass);
    records.len()
}

/// `shoal check` exits 0 and reports nothing.
fn check_clean(dir: &Dir, context: &str) {
    let out = dir.run(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{context}: shoal check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn puts_killed() {
    let seed = seed("puts_killed");
    let mut rng = Rng(seed | 1);
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "4"]);
    let mut history = History::new();
    let started = Instant::now();
    let mut acknowledged = 0;
    let mut records = 0;
    for round in 0..rounds() {
        let context = format!("puts_killed round {round} (SHOAL_CLI_CRASH_SEED={seed})");
        let putters: Vec<(Putter, u64)> = (0..4)
            .map(|w| {
                let count = 20 + rng.below(400);
                let p = Putter::spawn(&dir, "s", format!("r{round}w{w}"), count);
                (p, 10 + rng.below(120))
            })
            .collect();
        // Each writer dies at its own moment.
        let mut putters = putters;
        putters.sort_by_key(|(_, at)| *at);
        let begin = Instant::now();
        for (p, at) in putters {
            let at = Duration::from_millis(at);
            if let Some(wait) = at.checked_sub(begin.elapsed()) {
                std::thread::sleep(wait);
            }
            acknowledged += p.kill("s", &mut history);
        }
        records = read_all(&dir, "s", round, &mut history, &context);
        check_clean(&dir, &context);
        history.assert_valid(&context);
    }
    let stats = history.stats();
    assert!(acknowledged > 0, "no put was ever acknowledged");
    println!(
        "puts_killed: {} rounds of 4 SIGKILLed writers in {:.1?}: {acknowledged} acknowledged ({} unknown) of {} lines, {records} records read back",
        rounds(),
        started.elapsed(),
        stats.unknown,
        history.writes().len()
    );
}

#[test]
fn reshard_killed() {
    let seed = seed("reshard_killed");
    let mut rng = Rng(seed | 1);
    let dir = Dir::new();
    dir.ok(&["stream", "create", "r", "--shards", "2"]);
    let mut history = History::new();
    let started = Instant::now();
    let (mut acknowledged, mut interrupted) = (0, 0);
    for round in 0..rounds() {
        let context = format!("reshard_killed round {round} (SHOAL_CLI_CRASH_SEED={seed})");
        let putters: Vec<Putter> = (0..2)
            .map(|w| Putter::spawn(&dir, "r", format!("r{round}w{w}"), 20 + rng.below(300)))
            .collect();
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        // A reshard of the shards open now, killed at a random moment.
        let description = json(&dir.ok(&["stream", "describe", "r"])[0]);
        let open: Vec<String> = description["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "OPEN")
            .map(|s| s["shard_id"].as_str().unwrap().to_string())
            .collect();
        assert!(!open.is_empty(), "{context}: no open shard");
        let op: Vec<String> = match rng.below(3) {
            0 => vec![
                "scale".into(),
                "--shards".into(),
                (1 + rng.below(4)).to_string(),
            ],
            1 if open.len() < 4 => {
                let shard = &open[rng.below(open.len() as u64) as usize];
                vec!["split".into(), shard.clone()]
            }
            _ if open.len() >= 2 => {
                // Two open shards next to each other in the hash key space.
                let shards = description["shards"].as_array().unwrap();
                let mut ranges: Vec<(u128, String)> = shards
                    .iter()
                    .filter(|s| s["status"] == "OPEN")
                    .map(|s| {
                        (
                            s["hash_key_range"]["starting_hash_key"]
                                .as_str()
                                .unwrap()
                                .parse()
                                .unwrap(),
                            s["shard_id"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                ranges.sort();
                let i = rng.below(ranges.len() as u64 - 1) as usize;
                vec!["merge".into(), ranges[i].1.clone(), ranges[i + 1].1.clone()]
            }
            _ => vec!["scale".into(), "--shards".into(), "3".into()],
        };
        let mut args = vec!["reshard", "r"];
        args.extend(op.iter().map(String::as_str));
        let mut reshard = Reaped(
            dir.cmd(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_micros(rng.below(250_000)));
        let _ = reshard.0.kill();
        let status = reshard.0.wait().unwrap();
        interrupted += u64::from(status.code().is_none());
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        for p in putters {
            acknowledged += p.kill("r", &mut history);
        }
        // Whatever the reshard got to, every hash key has an open shard that takes writes.
        for k in 0..8 {
            let data = format!("r{round}probe{k}");
            let w = history.invoke("r", &data, data.as_bytes());
            let out = dir.run(&[
                "put",
                "r",
                &data,
                "--partition-key",
                "probe",
                "--explicit-hash-key",
                &((u128::MAX / 8) * k).to_string(),
            ]);
            let out = check(out, 0);
            let v = json(&lines(&out)[0]);
            history.ok_at(
                w,
                v["shard_id"].as_str().unwrap(),
                v["sequence_number"].as_str().unwrap().parse().unwrap(),
            );
        }
        read_all(&dir, "r", round, &mut history, &context);
        check_clean(&dir, &context);
        history.assert_valid(&context);
    }
    println!(
        "reshard_killed: {} rounds in {:.1?}: {interrupted} reshards killed before they finished, {acknowledged} puts acknowledged meanwhile, every hash key writable after each",
        rounds(),
        started.elapsed(),
    );
}

/// Issue 6, item 6, from the shell: `shoal get --follow` (a reader process mapping the shard's
/// segments) tails a stream whose retention is 1 second, while `shoal put` writers are
/// SIGKILLed mid-batch (the next one recovers the shard and, opening it, deletes the expired
/// segments under the reader), and `shoal get` processes read the whole stream one after
/// another. The follower must never die, and must print only records that were put, each
/// once, in sequence order, up to the last one acknowledged; every get must succeed with only
/// records that were put, in sequence order.
#[test]
fn follower_survives_retention_and_recovery() {
    let seed = seed("follower_survives_retention_and_recovery");
    let mut rng = Rng(seed | 1);
    let dir = Dir::new();
    dir.ok(&[
        "stream",
        "create",
        "f",
        "--shards",
        "1",
        "--retention",
        "1s",
    ]);
    let mut follower = Reaped(
        dir.cmd(&["get", "f", "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Meanwhile, whole reads from the trim horizon, one process after another: each maps
    // the oldest segments just as retention may remove them.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let readers = {
        let stop = Arc::clone(&stop_reading);
        let data_dir = dir.path();
        std::thread::spawn(move || {
            let mut runs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
                    .args(["get", "f"])
                    .env("SHOAL_DATA_DIR", &data_dir)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                runs.push(out);
            }
            runs
        })
    };
    let mut history = History::new();
    let started = Instant::now();
    let mut round = 0;
    // Segments roll every second (a quarter of the retention, at least 1 s) and expire a
    // second later: a few seconds of writers see several removed under the follower.
    while started.elapsed() < Duration::from_millis(3500) {
        let p = Putter::spawn(&dir, "f", format!("r{round}w0"), 20 + rng.below(600));
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        p.kill("f", &mut history);
        if let Some(status) = follower.0.try_wait().unwrap() {
            panic!("the follower died: {status} (SHOAL_CLI_CRASH_SEED={seed})");
        }
        round += 1;
    }
    // A last writer that finishes: everything it acknowledged must reach the follower.
    let last: String = (0..100).map(|n| format!("lastn{n}\n")).collect();
    let out = check(dir.run_stdin(&["put", "f", "--lines"], last.as_bytes()), 0);
    for (n, line) in lines(&out).iter().enumerate() {
        let id = format!("lastn{n}");
        let w = history.invoke("f", &id, id.as_bytes());
        let v = json(line);
        history.ok_at(
            w,
            v["shard_id"].as_str().unwrap(),
            v["sequence_number"].as_str().unwrap().parse().unwrap(),
        );
    }
    stop_reading.store(true, Ordering::Relaxed);
    let runs = readers.join().unwrap();
    for (pass, out) in runs.iter().enumerate() {
        assert!(
            out.status.success(),
            "a shoal get racing retention failed: {} {} (SHOAL_CLI_CRASH_SEED={seed})",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for line in lines(out) {
            let v = json(&line);
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap())
                .unwrap();
            history.read(StreamRead {
                stream: "f".into(),
                pass: 1 + pass as u64,
                shard: v["shard_id"].as_str().unwrap().to_string(),
                sequence: v["sequence_number"].as_str().unwrap().parse().unwrap(),
                id: String::from_utf8_lossy(&data).into_owned(),
                payload: data,
            });
        }
    }
    let mut printed: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last_data = base64::engine::general_purpose::STANDARD.encode("lastn99");
    while !printed.last().is_some_and(|l| l.contains(&last_data)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(e) => panic!(
                "the follower did not print the last record: {e}, {:?} (SHOAL_CLI_CRASH_SEED={seed})",
                follower.0.try_wait()
            ),
        }
    }
    if let Some(status) = follower.0.try_wait().unwrap() {
        panic!("the follower died: {status} (SHOAL_CLI_CRASH_SEED={seed})");
    }
    let _ = follower.0.kill();
    let _ = follower.0.wait();
    for line in &printed {
        let v = json(line);
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        history.read(StreamRead {
            stream: "f".into(),
            pass: 0,
            shard: v["shard_id"].as_str().unwrap().to_string(),
            sequence: v["sequence_number"].as_str().unwrap().parse().unwrap(),
            id: String::from_utf8_lossy(&data).into_owned(),
            payload: data,
        });
    }
    // Records older than a second may have expired before the follower got to them; the last
    // writer's must all be there.
    let expirable: Vec<usize> = (0..history.writes().len())
        .filter(|&i| !history.writes()[i].id.starts_with("last"))
        .collect();
    for i in expirable {
        history.may_expire(i);
    }
    history.final_read("f", 0);
    let context = format!("follower (SHOAL_CLI_CRASH_SEED={seed})");
    let stats = history.assert_valid(&context);
    let mut seen = std::collections::HashSet::new();
    for r in history.reads.iter().filter(|r| r.pass == 0) {
        assert!(seen.insert(&r.id), "{context}: {:?} printed twice", r.id);
    }
    check_clean(&dir, &context);
    // Retention really deleted segments under the follower.
    let first_segment = std::fs::read_dir(dir.path().join("streams/f/shards/000000000000"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")
                .map(|base| base.parse::<u64>().unwrap())
        })
        .min()
        .unwrap();
    assert!(first_segment > 0, "{context}: retention removed nothing");
    println!(
        "follower_survives_retention_and_recovery: {round} writers SIGKILLed in {:.1?}, {} whole reads racing them; the follower printed {} records, all put, in order, none twice, the last writer's 100 all; {} acknowledged in all; retention removed offsets below {first_segment}",
        started.elapsed(),
        runs.len(),
        printed.len(),
        stats.acknowledged,
    );
}

/// Receives up to 10 messages with `shoal receive --delete` (run to completion), recording
/// the receives and, once it exited 0, their deletes; returns how many it printed.
fn receive_delete(dir: &Dir, queue: &str, history: &mut History) -> usize {
    let invoked = checker::monotonic_ns();
    let out = check(dir.run(&["receive", queue, "--max", "10", "--delete"]), 0);
    let completed = checker::monotonic_ns();
    let call = history.call();
    let got = lines(&out);
    for (position, line) in got.iter().enumerate() {
        let v = json(line);
        let body = v["body"].as_str().unwrap().to_string();
        let receipt = v["receipt_handle"].as_str().unwrap().to_string();
        history.receive(checker::Receive {
            queue: queue.into(),
            id: body.clone(),
            payload: body.clone().into_bytes(),
            receipt: receipt.clone(),
            call,
            position,
            invoked_ns: invoked,
            completed_ns: completed,
            visibility_ns: 30_000_000_000,
            receive_count: u32::try_from(
                v["attributes"]["ApproximateReceiveCount"]
                    .as_str()
                    .map_or(1, |c| c.parse().unwrap()),
            )
            .unwrap(),
        });
        history.delete(checker::Delete {
            queue: queue.into(),
            id: body,
            receipt,
            invoked_ns: invoked,
            completed_ns: Some(completed),
        });
    }
    got.len()
}

/// `shoal compact` of a queue with deleted messages, SIGKILLed at a random moment in each
/// round while a `shoal send --lines` writer is SIGKILLed too; `shoal receive --delete` takes
/// some messages between. After every round `shoal check` is clean and the queue answers; at
/// the end it is drained and the history checked: nothing acknowledged lost, nothing deleted
/// back, nothing received that was not sent, nothing twice.
#[test]
fn compact_killed() {
    let seed = seed("compact_killed");
    let mut rng = Rng(seed | 1);
    let dir = Dir::new();
    dir.ok(&["queue", "create", "q"]);
    let mut history = History::new();
    history.queue("q", checker::QueueSpec::default());
    let started = Instant::now();
    let (mut acknowledged, mut interrupted, mut taken) = (0, 0, 0);
    for round in 0..rounds() {
        let context = format!("compact_killed round {round} (SHOAL_CLI_CRASH_SEED={seed})");
        let sender = Putter::spawn_send(&dir, "q", format!("r{round}m"), 20 + rng.below(200));
        std::thread::sleep(Duration::from_millis(10 + rng.below(60)));
        acknowledged += sender.kill("q", &mut history);
        for _ in 0..rng.below(4) {
            taken += receive_delete(&dir, "q", &mut history);
        }
        let mut compact = Reaped(
            dir.cmd(&["compact", "q"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_micros(rng.below(60_000)));
        let _ = compact.0.kill();
        interrupted += u64::from(compact.0.wait().unwrap().code().is_none());
        check_clean(&dir, &context);
        check(dir.run(&["queue", "attributes", "q"]), 0);
        history.assert_valid(&context);
    }
    loop {
        let n = receive_delete(&dir, "q", &mut history);
        if n == 0 {
            break;
        }
        taken += n;
    }
    history.drained("q");
    check_clean(&dir, "compact_killed");
    let stats = history.assert_valid(&format!("compact_killed (SHOAL_CLI_CRASH_SEED={seed})"));
    println!(
        "compact_killed: {} rounds in {:.1?}: {interrupted} compactions killed before they finished, {acknowledged} sends acknowledged ({} unknown), {taken} received and deleted; history checked",
        rounds(),
        started.elapsed(),
        stats.unknown,
    );
}
