//! Multi-process behaviour with real processes and real SIGKILL.
//!
//! This binary has its own `main` (harness = false): run without `SHOAL_CHILD`, it is the parent
//! and runs the scenarios; each scenario re-executes the binary with `SHOAL_CHILD=<role>` to get
//! a child process in that role.
//!
//! - `crash`: a child appends with `Durability::Always` and prints each acknowledged batch; the
//!   parent SIGKILLs it at a random moment, reopens the log and checks that every acknowledged
//!   record is there byte for byte, that nothing else is (no garbage, no half batch), and that the
//!   killed writer's lock is free. `SHOAL_CRASH_ROUNDS` (default 50) and `SHOAL_CRASH_SEED` set
//!   the rounds and the seed; a failure prints the seed.
//! - `tail`: a reader in another process, opened before the writes, sees records committed
//!   after it opened, across segment rolls, without reopening.
//! - `lock`: one writer per log across processes; a waiting writer gets the lock when the
//!   holder lets go.
//! - `sigbus` (issue 6, item 6): a reader process maps and re-reads a log, checking every
//!   byte, while writers are SIGKILLed mid-append (half the time leaving a torn tail on the
//!   active segment) and recovered, and other processes (also
//!   SIGKILLed now and then) run retention and compaction; it must never die of SIGBUS and
//!   its last pass must reach everything acknowledged. `SHOAL_SIGBUS_ROUNDS` (default 20) and
//!   `SHOAL_SIGBUS_SEED` set the rounds and the seed.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report, and test bytes wrap on purpose"
)]

mod crash_support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_engine::Error;
use shoal_engine::clock::SystemClock;
use shoal_engine::log::{
    Durability, Entry, Log, LogOptions, LogReader, ReadLimit, Retention, WriterLock,
};
use shoal_engine::storage::{FsStorage, SharedStorage};

fn storage() -> SharedStorage {
    Arc::new(FsStorage::new())
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 512,
        durability: Durability::Always,
        ..LogOptions::default()
    }
}

fn open(dir: &Path, wait: bool) -> shoal_engine::Result<Log> {
    Log::open(
        storage(),
        Arc::new(SystemClock),
        dir,
        LogOptions {
            wait_for_lock: wait,
            ..options()
        },
    )
}

/// The payload at `offset`: derived from the offset so any wrong byte shows.
fn payload(offset: u64) -> Vec<u8> {
    let len = usize::try_from(offset.wrapping_mul(2_654_435_761) % 700).unwrap_or(0) + 1;
    (0..len)
        .map(|i| (offset as u8).wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

/// The size of the batch that starts at `first`: deterministic, so the parent knows where every
/// batch boundary is.
fn batch_len(first: u64) -> u64 {
    1 + first.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 13
}

fn child_main(role: &str) {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[1]);
    let mut out = std::io::stdout().lock();
    match role {
        "append" => {
            let log = open(&dir, true).expect("child opens the log");
            writeln!(out, "ready {}", log.next_offset()).unwrap();
            out.flush().unwrap();
            loop {
                let first = log.next_offset();
                let bodies: Vec<Vec<u8>> = (first..first + batch_len(first)).map(payload).collect();
                let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
                let appended = log.append(&entries).expect("append");
                // Printed only once the batch is durable: a line read is an acknowledgement.
                writeln!(out, "ack {} {}", appended.first_offset, appended.count).unwrap();
                out.flush().unwrap();
            }
        }
        "shared-append" => {
            let id: u64 = args[2].parse().unwrap();
            let batches: u64 = args[3].parse().unwrap();
            let log = Log::open(
                storage(),
                Arc::new(SystemClock),
                &dir,
                LogOptions {
                    writer_lock: WriterLock::Shared,
                    ..options()
                },
            )
            .expect("shared writer opens the log");
            for seq in 0..batches {
                let n = 1 + (seq + id) % 5;
                let bodies: Vec<String> = (0..n).map(|k| format!("w{id}-{seq}-{k}")).collect();
                let entries: Vec<Entry<'_>> =
                    bodies.iter().map(|b| Entry::new(b.as_bytes())).collect();
                let appended = log.append(&entries).expect("append");
                writeln!(out, "ack {seq} {} {n}", appended.first_offset).unwrap();
                out.flush().unwrap();
            }
        }
        "tail" => {
            let want: u64 = args[2].parse().unwrap();
            let reader = LogReader::open(storage(), &dir).expect("child opens a reader");
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            let mut next = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while next < want {
                assert!(Instant::now() < deadline, "reader saw only {next} records");
                let batch = reader.read(next, ReadLimit::records(100)).expect("read");
                if batch.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                for record in batch.iter() {
                    assert_eq!(record.offset, next);
                    assert_eq!(record.payload, payload(next), "payload at {next}");
                    next += 1;
                }
            }
            writeln!(out, "ok {next}").unwrap();
        }
        "bus-append" => {
            // A shared writer (so the maintainer can work between its batches), killed by
            // the parent at a random moment: the next one recovers the tail.
            let log = open_shared(&dir, Durability::Never);
            writeln!(out, "ready {}", log.recovery_report().truncated_bytes).unwrap();
            out.flush().unwrap();
            loop {
                let first = log.next_offset();
                let bodies: Vec<Vec<u8>> = (first..first + batch_len(first)).map(payload).collect();
                let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
                let appended = log.append(&entries).expect("append");
                writeln!(out, "ack {} {}", appended.first_offset, appended.count).unwrap();
                out.flush().unwrap();
            }
        }
        "bus-maintain" => {
            // Retention (keep about 96 KiB) and compaction (drop every record whose offset
            // is a multiple of 3) over and over, until killed.
            let log = open_shared(&dir, Durability::Always);
            loop {
                let removed = log
                    .enforce_retention(&Retention {
                        max_bytes: Some(96 << 10),
                        ..Retention::default()
                    })
                    .expect("retention");
                let segments = log.segments().expect("segments");
                let mut compacted = 0;
                for &base in segments.iter().rev().skip(1) {
                    match log.compact_segment(base, |r| r.offset % 3 != 0) {
                        Ok(_) => compacted += 1,
                        // Removed by retention meanwhile (another maintainer's, or ours).
                        Err(Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => panic!("compact {base}: {e}"),
                    }
                }
                writeln!(out, "maint {} {compacted}", removed.removed_segments.len()).unwrap();
                out.flush().unwrap();
            }
        }
        "bus-read" => {
            let stop = PathBuf::from(&args[2]);
            let reader = LogReader::open(storage(), &dir).expect("reader opens");
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            let (mut passes, mut verified, mut max_seen) = (0u64, 0u64, 0u64);
            loop {
                // One pass after the stop file appears, so the last one sees everything.
                let last = stop.exists();
                let mut next = 0;
                let mut previous = None;
                loop {
                    let batch = match reader.read(next, ReadLimit::records(64)) {
                        Ok(batch) => batch,
                        Err(Error::OffsetTrimmed { start, .. }) => {
                            next = start;
                            continue;
                        }
                        Err(e) => panic!("read at {next}: {e}"),
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for record in batch.iter() {
                        assert!(
                            previous.is_none_or(|p| record.offset > p),
                            "offset {} after {previous:?}",
                            record.offset
                        );
                        assert_eq!(
                            record.payload,
                            payload(record.offset),
                            "payload at {}",
                            record.offset
                        );
                        previous = Some(record.offset);
                        verified += 1;
                        max_seen = max_seen.max(record.offset);
                    }
                    next = batch.next_offset();
                }
                passes += 1;
                if last {
                    break;
                }
            }
            writeln!(out, "done {passes} {verified} {max_seen}").unwrap();
        }
        "lock" => match open(&dir, false) {
            Ok(_) => writeln!(out, "opened").unwrap(),
            Err(Error::Locked { .. }) => writeln!(out, "locked").unwrap(),
            Err(e) => writeln!(out, "error {e}").unwrap(),
        },
        "lock-wait" => {
            let log = open(&dir, true).expect("open waiting for the lock");
            writeln!(out, "opened {}", log.next_offset()).unwrap();
        }
        other => panic!("unknown child role {other}"),
    }
}

fn open_shared(dir: &Path, durability: Durability) -> Log {
    Log::open(
        storage(),
        Arc::new(SystemClock),
        dir,
        LogOptions {
            segment_bytes_max: 16 << 10,
            writer_lock: WriterLock::Shared,
            durability,
            ..options()
        },
    )
    .expect("shared writer opens the log")
}

fn spawn(role: &str, args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env("SHOAL_CHILD", role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Forwards a child's stdout lines to a channel.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no '{prefix}' line from the child: {e}"));
    assert!(
        line.starts_with(prefix),
        "expected '{prefix}', got '{line}'"
    );
    line
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn crash_rounds() {
    let rounds: u64 = std::env::var("SHOAL_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("SHOAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let dir_arg = dir.to_str().unwrap();
    let mut acknowledged_total = 0u64;
    let mut truncations = 0u64;
    for round in 0..rounds {
        let context = format!("round {round} (SHOAL_CRASH_SEED={seed})");
        let mut child = spawn("append", &[dir_arg]);
        let rx = lines(&mut child);
        // Sometimes kill during open and recovery, usually mid-append.
        let wait_ready = !rng.next().is_multiple_of(5);
        if wait_ready {
            wait_line(&rx, "ready");
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 40_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let mut acked_end = 0u64;
        for line in rx.try_iter() {
            if let Some(rest) = line.strip_prefix("ack ") {
                let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
                let (first, count) = (parts.next().unwrap(), parts.next().unwrap());
                assert_eq!(count, batch_len(first), "{context}");
                acked_end = acked_end.max(first + count);
            }
        }
        // The killed writer's lock is free at once.
        let log = open(&dir, false).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        truncations += u64::from(log.recovery_report().truncated_bytes > 0);
        let next = log.next_offset();
        assert!(
            next >= acked_end,
            "{context}: acknowledged up to {acked_end} but the log ends at {next}"
        );
        // The log ends on a batch boundary: no half batch survived.
        let mut boundary = 0;
        while boundary < next {
            boundary += batch_len(boundary);
        }
        assert_eq!(boundary, next, "{context}: log ends inside a batch");
        // Every record, acknowledged or not, is exactly what was appended at its offset.
        let mut offset = 0;
        while offset < next {
            let batch = log
                .read(offset, ReadLimit::records(1000))
                .unwrap_or_else(|e| panic!("{context}: read at {offset}: {e}"));
            assert!(!batch.is_empty(), "{context}: hole at {offset}");
            for record in batch.iter() {
                assert_eq!(record.offset, offset, "{context}");
                assert_eq!(
                    record.payload,
                    payload(offset),
                    "{context}: payload at {offset}"
                );
                offset += 1;
            }
        }
        acknowledged_total = acked_end;
    }
    println!(
        "crash: {rounds} SIGKILL rounds, {acknowledged_total} records acknowledged and intact, {truncations} torn tails cut"
    );
}

fn tail_in_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = open(&dir, false).unwrap();
    let first: Vec<Vec<u8>> = (0..10).map(payload).collect();
    log.append(&first.iter().map(|b| Entry::new(b)).collect::<Vec<_>>())
        .unwrap();
    let want = 2_000u64;
    let mut child = spawn("tail", &[dir.to_str().unwrap(), &want.to_string()]);
    let rx = lines(&mut child);
    wait_line(&rx, "ready");
    let mut next = 10;
    while next < want {
        let n = (want - next).min(1 + next % 17);
        let bodies: Vec<Vec<u8>> = (next..next + n).map(payload).collect();
        log.append(&bodies.iter().map(|b| Entry::new(b)).collect::<Vec<_>>())
            .unwrap();
        next += n;
    }
    assert!(
        log.segments().unwrap().len() > 5,
        "the reader must follow rolls"
    );
    assert_eq!(wait_line(&rx, "ok"), format!("ok {want}"));
    assert!(child.wait().unwrap().success());
    println!("tail: a reader in another process saw all {want} records committed after it opened");
}

fn one_writer_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let dir_arg = dir.to_str().unwrap();
    let log = open(&dir, false).unwrap();
    log.append(&[Entry::new(b"x")]).unwrap();
    let run = |role: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg(dir_arg)
            .env("SHOAL_CHILD", role)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(run("lock"), "locked");
    // A writer that waits gets the lock as soon as the holder lets go.
    let mut waiter = spawn("lock-wait", &[dir_arg]);
    let rx = lines(&mut waiter);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        rx.try_recv().is_err(),
        "the waiting writer must not open yet"
    );
    drop(log);
    assert_eq!(wait_line(&rx, "opened"), "opened 1");
    assert!(waiter.wait().unwrap().success());
    assert_eq!(run("lock"), "opened");
    println!("lock: one writer per log across processes");
}

/// Four processes append to one log at once with `WriterLock::Shared`; one is SIGKILLed
/// midway. Every acknowledged batch is there once, whole, at the offset it was acknowledged
/// at; each writer's batches are in its order; nothing else is in the log.
fn shared_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let dir_arg = dir.to_str().unwrap();
    let batches = 300u64;
    let mut children: Vec<(u64, Child, mpsc::Receiver<String>)> = (0..4)
        .map(|id| {
            let mut child = spawn(
                "shared-append",
                &[dir_arg, &id.to_string(), &batches.to_string()],
            );
            let rx = lines(&mut child);
            (id, child, rx)
        })
        .collect();
    // Kill writer 3 after it has had some batches acknowledged.
    let mut acks: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); 4];
    let parse = |line: &str| {
        let v: Vec<u64> = line
            .strip_prefix("ack ")
            .unwrap()
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect();
        (v[0], v[1], v[2])
    };
    {
        let (_, victim, rx) = &mut children[3];
        for _ in 0..40 {
            acks[3].push(parse(&wait_line(rx, "ack")));
        }
        victim.kill().unwrap();
        victim.wait().unwrap();
    }
    for (id, child, rx) in &mut children {
        let id = usize::try_from(*id).unwrap();
        if id != 3 {
            assert!(child.wait().unwrap().success(), "writer {id} failed");
        }
        acks[id].extend(rx.iter().map(|l| parse(&l)));
    }
    assert_eq!(acks[0].len() as u64, batches);
    let log = open(&dir, false).unwrap();
    let mut next = 0;
    let mut records: Vec<(u64, String)> = Vec::new();
    loop {
        let batch = log.read(next, ReadLimit::records(1000)).unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch.iter() {
            records.push((r.offset, String::from_utf8(r.payload.to_vec()).unwrap()));
        }
        next = batch.next_offset();
    }
    assert!(
        records.iter().enumerate().all(|(i, (o, _))| *o == i as u64),
        "offsets are contiguous"
    );
    // Acknowledged batches are where they were acknowledged, whole.
    for (id, writer_acks) in acks.iter().enumerate() {
        for &(seq, first, n) in writer_acks {
            for k in 0..n {
                let at = usize::try_from(first + k).unwrap();
                assert_eq!(records[at].1, format!("w{id}-{seq}-{k}"));
            }
        }
    }
    // Nothing else: every record belongs to a whole batch, each batch appears once, and each
    // writer's batches are in order (the killed writer may have one unacknowledged batch).
    let mut last_seq = [None::<u64>; 4];
    let mut i = 0;
    while i < records.len() {
        let (id, seq, k) = {
            let p: Vec<u64> = records[i].1[1..]
                .split('-')
                .map(|x| x.parse().unwrap())
                .collect();
            (usize::try_from(p[0]).unwrap(), p[1], p[2])
        };
        assert_eq!(k, 0, "a batch starts with its first record");
        assert!(
            last_seq[id].is_none_or(|s| seq == s + 1),
            "writer {id} out of order"
        );
        last_seq[id] = Some(seq);
        let n = 1 + (seq + id as u64) % 5;
        for k in 0..n {
            assert_eq!(
                records[i + usize::try_from(k).unwrap()].1,
                format!("w{id}-{seq}-{k}")
            );
        }
        i += usize::try_from(n).unwrap();
    }
    let killed_acked = acks[3].len() as u64;
    let killed_present = last_seq[3].map_or(0, |s| s + 1);
    assert!(killed_present == killed_acked || killed_present == killed_acked + 1);
    println!(
        "shared-writers: 4 processes wrote {} records through one lock, one SIGKILLed after {killed_acked} acknowledged batches",
        records.len()
    );
}

/// A child killed and reaped when dropped, so a failing test leaves nothing running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 6, item 6: a reader process holding mappings of a log's segments, reading it from
/// the start over and over and checking every byte, while other processes remove segments
/// (retention), rewrite them (compaction) and crash mid-append (the next writer's recovery
/// cuts the torn tail of the active segment). The reader must never die of SIGBUS, and must
/// read only correct records, up to everything acknowledged.
fn reader_survives_maintenance() {
    use std::os::unix::process::ExitStatusExt;
    let rounds: u64 = std::env::var("SHOAL_SIGBUS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SHOAL_SIGBUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("sigbus: SHOAL_SIGBUS_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let dir_arg = dir.to_str().unwrap();
    let stop = tmp.path().join("stop");
    // Something to map before the reader starts.
    {
        let log = open_shared(&dir, Durability::Always);
        let mut first = 0;
        while first < 500 {
            let bodies: Vec<Vec<u8>> = (first..first + batch_len(first)).map(payload).collect();
            let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
            first += log.append(&entries).unwrap().count;
        }
    }
    let mut reader = Reaped(spawn("bus-read", &[dir_arg, stop.to_str().unwrap()]));
    let reader_rx = lines(&mut reader.0);
    wait_line(&reader_rx, "ready");
    let start_maintainer = || {
        let mut child = Reaped(spawn("bus-maintain", &[dir_arg]));
        let rx = lines(&mut child.0);
        (child, rx)
    };
    // Kills a maintainer; returns how many segments it removed and compacted.
    let stop_maintainer = |(mut child, rx): (Reaped, mpsc::Receiver<String>)| {
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        rx.iter().fold((0, 0), |(r, c), line| {
            let v: Vec<u64> = line[6..].split(' ').map(|p| p.parse().unwrap()).collect();
            (r + v[0], c + v[1])
        })
    };
    let mut maintainer = start_maintainer();
    let (mut maintenance_kills, mut acked_end, mut removed, mut compacted) = (0, 0u64, 0, 0);
    let (mut truncated, mut cuts) = (0, 0);
    let mut torn: Option<(PathBuf, u64, Vec<u8>)> = None;
    for _ in 0..rounds {
        let mut writer = Reaped(spawn("bus-append", &[dir_arg]));
        let rx = lines(&mut writer.0);
        std::thread::sleep(Duration::from_micros(10_000 + rng.next() % 120_000));
        writer.0.kill().unwrap(); // SIGKILL mid-append: recovery next round
        writer.0.wait().unwrap();
        for line in rx.iter() {
            if let Some(cut) = line.strip_prefix("ready ") {
                truncated += cut.parse::<u64>().unwrap();
                continue;
            }
            let v: Vec<u64> = line[4..].split(' ').map(|p| p.parse().unwrap()).collect();
            acked_end = acked_end.max(v[0] + v[1]);
        }
        if let Some((path, at, garbage)) = torn.take() {
            // Cut by a recovery since (and perhaps written over since)?
            let now = std::fs::read(&path).unwrap_or_default();
            let at = at as usize;
            if now.get(at..at + garbage.len()) != Some(&garbage[..]) {
                cuts += 1;
            }
        }
        if rng.next().is_multiple_of(2) {
            // A torn write, as a crash mid-write leaves it: bytes past the committed end of
            // the active segment (which the reader maps), cut by the next writer's recovery.
            let active = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .max()
                .unwrap();
            let len = 1 + rng.next() % 4000;
            let garbage: Vec<u8> = if rng.next().is_multiple_of(2) {
                vec![0; len as usize]
            } else {
                (0..len).map(|_| rng.next() as u8).collect()
            };
            // The newest segment may be one a killed writer's roll never published, which the
            // next writer removes: then there is nothing to tear this round.
            if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&active) {
                let at = file.metadata().unwrap().len();
                file.write_all(&garbage).unwrap();
                torn = Some((active, at, garbage));
            }
        }
        if rng.next().is_multiple_of(3) {
            // The maintainer dies too, mid-retention or mid-compaction, and another starts.
            let (r, c) = stop_maintainer(std::mem::replace(&mut maintainer, start_maintainer()));
            (removed, compacted) = (removed + r, compacted + c);
            maintenance_kills += 1;
        }
        if let Some(status) = reader.0.try_wait().unwrap() {
            panic!("the reader died: {status} (SHOAL_SIGBUS_SEED={seed})");
        }
    }
    let (r, c) = stop_maintainer(maintainer);
    (removed, compacted) = (removed + r, compacted + c);
    std::fs::write(&stop, b"").unwrap();
    let status = reader.0.wait().unwrap();
    assert_ne!(
        status.signal(),
        Some(7),
        "the reader died of SIGBUS (SHOAL_SIGBUS_SEED={seed})"
    );
    assert!(
        status.success(),
        "the reader failed: {status:?} (SHOAL_SIGBUS_SEED={seed})"
    );
    let done = wait_line(&reader_rx, "done");
    let v: Vec<u64> = done[5..].split(' ').map(|p| p.parse().unwrap()).collect();
    let (passes, verified, max_seen) = (v[0], v[1], v[2]);
    // The last pass read up to everything acknowledged.
    assert!(
        max_seen + 1 >= acked_end,
        "the reader saw up to {max_seen}, {acked_end} acknowledged (SHOAL_SIGBUS_SEED={seed})"
    );
    // Maintenance really ran under the reader: segments were removed and compacted, and
    // recovery cut torn tails.
    assert!(
        removed > 0 && compacted > 0,
        "removed {removed}, compacted {compacted}"
    );
    assert!(cuts > 0, "no recovery cut a torn tail");
    let log = open_shared(&dir, Durability::Always);
    assert!(log.start_offset() > 0, "retention never removed a segment");
    let mut report = shoal_engine::log::CheckReport::default();
    shoal_engine::log::check(&FsStorage::new(), &dir, &mut report).unwrap();
    assert!(report.problems.is_empty(), "check: {:?}", report.problems);
    println!(
        "sigbus: a reader process read {verified} records in {passes} passes, every byte checked, while {rounds} writers were SIGKILLed mid-append and recovered ({cuts} torn tails cut, {truncated} bytes by a new writer), and retention removed {removed} segments and compaction rewrote {compacted} ({maintenance_kills} maintainers SIGKILLed midway); log starts at {}, ends at {acked_end}+",
        log.start_offset()
    );
}

fn main() {
    if let Ok(role) = std::env::var("SHOAL_CHILD") {
        child_main(&role);
        return;
    }
    let scenarios: [(&str, fn()); 5] = [
        ("lock", one_writer_across_processes),
        ("shared-writers", shared_writers),
        ("tail", tail_in_another_process),
        ("crash", crash_rounds),
        ("sigbus", reader_survives_maintenance),
    ];
    crash_support::run_scenarios("multiprocess", &scenarios);
}
