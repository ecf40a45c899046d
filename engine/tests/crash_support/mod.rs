//! What the engine's crash tests share: child processes that are always killed and reaped,
//! sender and receiver roles that print what they did for the history, a clock shifted per
//! round, and the Jepsen-style checker (cli/tests/common/checker.rs, one copy for both crates).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: each crash test binary uses a part; a panic is the failure report"
)]

#[path = "../../../cli/tests/common/checker.rs"]
pub mod checker;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_engine::clock::{Clock, SystemClock};
use shoal_engine::queue::{Receive, SendMessage};
use shoal_engine::storage::FsStorage;
use shoal_engine::{DataDir, DirOptions};

use checker::{Delete, History, Receive as Received, monotonic_ns};

/// A xorshift generator: the same seed, the same rounds.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `var` as a number, else `default`.
pub fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed from `var`, else the time; printed so a failure can be replayed.
pub fn seed(test: &str, var: &str) -> u64 {
    let seed = env_u64(
        var,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!("{test}: {var}={seed}");
    seed
}

/// The system clock moved forward by a fixed amount: each round of a test runs this many
/// minutes later than the one before, so retention and visibility rules fire between rounds
/// without sleeping, while time still flows within a round.
#[derive(Debug)]
pub struct Shifted(pub u64);

impl Clock for Shifted {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.0
    }
}

/// The checker's time on the clock `Shifted(shift_ms)`: monotonic nanoseconds plus the shift.
pub fn now_ns(shift_ms: u64) -> u64 {
    monotonic_ns() + shift_ms * 1_000_000
}

/// Opens the data directory with the shifted clock; `small` gives queues 4 KiB segments so a
/// few hundred messages make compaction and retention work on many segments.
pub fn open_dir(root: &Path, shift_ms: u64, small: bool) -> DataDir {
    DataDir::open_with_options(
        root,
        Arc::new(FsStorage::new()),
        Arc::new(Shifted(shift_ms)),
        DirOptions {
            queue_segment_bytes: small.then_some(4096),
            ..DirOptions::default()
        },
    )
    .unwrap()
}

/// A child process (this test binary in a role) whose stdout lines are collected; dropped, it
/// is SIGKILLed and reaped, so a failing test leaves nothing running.
pub struct Child {
    child: std::process::Child,
    lines: Option<JoinHandle<Vec<String>>>,
}

impl Child {
    pub fn spawn(role: &str, args: &[String]) -> Child {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("SHOAL_CHILD", role)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        Child {
            child,
            lines: Some(lines),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs it (if it still runs) and returns its exit status and every line it printed.
    pub fn kill(mut self) -> (ExitStatus, Vec<String>) {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        let lines = self.lines.take().unwrap().join().unwrap();
        (status, lines)
    }

    /// Waits for it to exit by itself.
    pub fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        let lines = self.lines.take().unwrap().join().unwrap();
        (status, lines)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills each child at its moment (milliseconds from now), in time order; returns each one's
/// exit status and lines, in the order given.
pub fn kill_at(children: Vec<(Child, u64)>) -> Vec<(ExitStatus, Vec<String>)> {
    let begin = Instant::now();
    let mut order: Vec<(usize, Child, u64)> = children
        .into_iter()
        .enumerate()
        .map(|(i, (c, at))| (i, c, at))
        .collect();
    order.sort_by_key(|(_, _, at)| *at);
    let mut out: Vec<Option<(ExitStatus, Vec<String>)>> = (0..order.len()).map(|_| None).collect();
    for (i, child, at) in order {
        if let Some(wait) = Duration::from_millis(at).checked_sub(begin.elapsed()) {
            std::thread::sleep(wait);
        }
        out[i] = Some(child.kill());
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// The body of message `n` of sender `id` in `round`.
pub fn body(round: u64, id: u64, n: u64) -> String {
    format!("r{round}s{id}n{n}")
}

/// Sender `id`'s FIFO group of its message `n`: three groups per sender, kept across rounds.
pub fn group(id: u64, n: u64) -> String {
    format!("s{id}g{}", n % 3)
}

/// A message's place in its group's send order.
pub fn order(round: u64, n: u64) -> u64 {
    round * 1_000_000 + n
}

/// `send DIR QUEUE ROUND ID SHIFT_MS SMALL`: sends batches of 1-6 messages, a few ms apart,
/// until killed,
/// printing `I FIRST COUNT` before each batch and `A FIRST COUNT` once it is acknowledged.
pub fn child_send(args: &[String]) {
    let [dir, queue, round, id, shift, small] = args else {
        panic!("send: bad arguments {args:?}")
    };
    let (round, id): (u64, u64) = (round.parse().unwrap(), id.parse().unwrap());
    let data = open_dir(Path::new(dir), shift.parse().unwrap(), small == "1");
    let q = data.queue(queue).unwrap();
    let fifo = queue.ends_with(".fifo");
    let mut rng = Rng::new(round * 1009 + id);
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    loop {
        let count = 1 + rng.below(6);
        let batch: Vec<SendMessage> = (n..n + count)
            .map(|i| SendMessage {
                body: body(round, id, i),
                group_id: fifo.then(|| group(id, i)),
                dedup_id: fifo.then(|| body(round, id, i)),
                ..SendMessage::default()
            })
            .collect();
        writeln!(out, "I {n} {count}").unwrap();
        out.flush().unwrap();
        if q.send_batch(&batch).is_ok() {
            writeln!(out, "A {n} {count}").unwrap();
            out.flush().unwrap();
        }
        n += count;
        // Paced, so the receivers keep up and a round stays small.
        std::thread::sleep(Duration::from_millis(2 + rng.below(15)));
    }
}

/// Records a sender's lines: every message of an `I` batch invoked, of an `A` batch
/// acknowledged. Returns the number acknowledged.
pub fn record_sends(
    history: &mut History,
    queue: &str,
    round: u64,
    id: u64,
    lines: &[String],
) -> usize {
    let fifo = queue.ends_with(".fifo");
    let mut index = HashMap::new();
    let mut acked = 0;
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let (first, count): (u64, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        for n in first..first + count {
            let b = body(round, id, n);
            match parts[0] {
                "I" => {
                    let g = fifo.then(|| group(id, n));
                    let w = history.invoke_in_group(
                        queue,
                        &b,
                        b.as_bytes(),
                        g.as_deref(),
                        order(round, n),
                    );
                    index.insert(n, w);
                }
                "A" => {
                    history.ok(index[&n]);
                    acked += 1;
                }
                other => panic!("sender line {other}"),
            }
        }
    }
    acked
}

/// `receive DIR QUEUE SHIFT_MS SMALL VISIBILITY_MS KEEP_PERCENT SEED`: receives batches of up
/// to 10 with that visibility timeout until killed, printing `R CALL POSITION BODY RECEIPT
/// COUNT T0 T1` per message (T0 and T1 around the call, checker time), then deletes all but
/// about KEEP_PERCENT of them, printing `X BODY RECEIPT T0` for each before the call and
/// `D BODY T1` for each acknowledged.
pub fn child_receive(args: &[String]) {
    let [dir, queue, shift, small, visibility, keep, seed] = args else {
        panic!("receive: bad arguments {args:?}")
    };
    let shift: u64 = shift.parse().unwrap();
    let data = open_dir(Path::new(dir), shift, small == "1");
    let q = data.queue(queue).unwrap();
    let visibility = Duration::from_millis(visibility.parse().unwrap());
    let keep: u64 = keep.parse().unwrap();
    let mut rng = Rng::new(seed.parse().unwrap());
    let mut out = std::io::stdout().lock();
    for call in 1.. {
        let t0 = now_ns(shift);
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::from_millis(50)),
                visibility_timeout: Some(visibility),
            })
            .unwrap();
        let t1 = now_ns(shift);
        for (position, m) in got.iter().enumerate() {
            writeln!(
                out,
                "R {call} {position} {} {} {} {t0} {t1}",
                m.body, m.receipt_handle, m.receive_count
            )
            .unwrap();
        }
        out.flush().unwrap();
        let doomed: Vec<_> = got.iter().filter(|_| rng.below(100) >= keep).collect();
        if doomed.is_empty() {
            continue;
        }
        let handles: Vec<&str> = doomed.iter().map(|m| m.receipt_handle.as_str()).collect();
        let t0 = now_ns(shift);
        for m in &doomed {
            writeln!(out, "X {} {} {t0}", m.body, m.receipt_handle).unwrap();
        }
        out.flush().unwrap();
        let results = q.delete_batch(&handles).unwrap();
        let t1 = now_ns(shift);
        for (m, r) in doomed.iter().zip(results) {
            if r.is_ok() {
                writeln!(out, "D {} {t1}", m.body).unwrap();
            }
        }
        out.flush().unwrap();
    }
}

/// Records a receiver's lines (receives from `queue` with `visibility_ms`).
pub fn record_receives(history: &mut History, queue: &str, visibility_ms: u64, lines: &[String]) {
    let mut calls: HashMap<u64, u64> = HashMap::new();
    let mut invoked: HashMap<String, usize> = HashMap::new();
    for line in lines {
        let p: Vec<&str> = line.split(' ').collect();
        match p[0] {
            "R" => {
                let local: u64 = p[1].parse().unwrap();
                let call = *calls.entry(local).or_insert_with(|| history.call());
                history.receive(Received {
                    queue: queue.to_string(),
                    id: p[3].to_string(),
                    payload: p[3].as_bytes().to_vec(),
                    receipt: p[4].to_string(),
                    call,
                    position: p[2].parse().unwrap(),
                    invoked_ns: p[6].parse().unwrap(),
                    completed_ns: p[7].parse().unwrap(),
                    visibility_ns: visibility_ms * 1_000_000,
                    receive_count: p[5].parse().unwrap(),
                });
            }
            "X" => {
                invoked.insert(p[1].to_string(), history.deletes.len());
                history.delete(Delete {
                    queue: queue.to_string(),
                    id: p[1].to_string(),
                    receipt: p[2].to_string(),
                    invoked_ns: p[3].parse().unwrap(),
                    completed_ns: None,
                });
            }
            "D" => history.deletes[invoked[p[1]]].completed_ns = Some(p[2].parse().unwrap()),
            other => panic!("receiver line {other}"),
        }
    }
}

/// Receives and deletes everything in `queue` (messages in flight come back when their
/// visibility timeout ends), recording it all; returns the number of messages taken.
pub fn drain(data: &DataDir, queue: &str, shift_ms: u64, history: &mut History) -> usize {
    let q = data.queue(queue).unwrap();
    let visibility = Duration::from_secs(3600);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut taken = 0;
    loop {
        let t0 = now_ns(shift_ms);
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::from_millis(100)),
                visibility_timeout: Some(visibility),
            })
            .unwrap();
        let t1 = now_ns(shift_ms);
        if got.is_empty() {
            let c = q.counts().unwrap();
            if c.visible + c.in_flight + c.delayed == 0 {
                return taken;
            }
            assert!(Instant::now() < deadline, "{queue} does not drain: {c:?}");
            continue;
        }
        let call = history.call();
        for (position, m) in got.iter().enumerate() {
            history.receive(Received {
                queue: queue.to_string(),
                id: m.body.clone(),
                payload: m.body.as_bytes().to_vec(),
                receipt: m.receipt_handle.clone(),
                call,
                position,
                invoked_ns: t0,
                completed_ns: t1,
                visibility_ns: visibility.as_nanos() as u64,
                receive_count: m.receive_count,
            });
        }
        let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
        let d0 = now_ns(shift_ms);
        let results = q.delete_batch(&handles).unwrap();
        let d1 = now_ns(shift_ms);
        for (m, r) in got.iter().zip(results) {
            r.unwrap();
            history.delete(Delete {
                queue: queue.to_string(),
                id: m.body.clone(),
                receipt: m.receipt_handle.clone(),
                invoked_ns: d0,
                completed_ns: Some(d1),
            });
        }
        taken += got.len();
    }
}

/// The data directory opens and verifies clean (what `shoal check` runs).
pub fn check_clean(root: &Path, context: &str) {
    let data = DataDir::open(root).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    let report = data
        .check()
        .unwrap_or_else(|e| panic!("{context}: check: {e}"));
    assert!(
        report.problems.is_empty(),
        "{context}: check found {:?}",
        report.problems
    );
}

/// Runs the scenarios a test binary's `main` names (those whose name contains a filter given
/// on the command line, or all), then prints the summary line cargo's output shows.
pub fn run_scenarios(binary: &str, scenarios: &[(&str, fn())]) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut passed = 0;
    for (name, scenario) in scenarios {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            scenario();
            passed += 1;
        }
    }
    println!("{binary}: {passed} passed, 0 failed");
}
