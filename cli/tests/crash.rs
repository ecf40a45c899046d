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
    acks: JoinHandle<Vec<(String, u128)>>,
    stop: Arc<AtomicBool>,
}

impl Putter {
    fn spawn(dir: &Dir, stream: &str, prefix: String, count: u64) -> Putter {
        let mut child = Reaped(
            dir.cmd(&["put", stream, "--lines"])
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
                .map(|l| {
                    let v = json(&l);
                    (
                        v["shard_id"].as_str().unwrap().to_string(),
                        v["sequence_number"].as_str().unwrap().parse().unwrap(),
                    )
                })
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
    fn kill(mut self, stream: &str, history: &mut History) -> usize {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.stop.store(true, Ordering::Relaxed);
        let fed = self.feeder.join().unwrap();
        let acks = self.acks.join().unwrap();
        assert!(acks.len() <= fed.len(), "more results than lines");
        for (i, line) in fed.iter().enumerate() {
            let w = history.invoke(stream, line, line.as_bytes());
            if let Some((shard, sequence)) = acks.get(i) {
                history.ok_at(w, shard, *sequence);
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
