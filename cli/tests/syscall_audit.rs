//! Syscall audit: runs the real `shoal` binary under `strace` and checks the durability rules
//! against what the kernel was actually asked to do:
//!
//! - every line printed on stdout (an acknowledgement) comes after an fsync of every segment
//!   (`*.log`) write made before it;
//! - every file or directory created in the data directory, and every rename target, is
//!   followed by an fsync of its parent directory.
//!
//! Lock files (`LOCK`, `*.lock`, `*.lease`) hold no data and the throughput counters are
//! emulation state; both are exempt. Skipped, with a message, where strace is missing.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        }
        out.insert(path);
    }
    out
}

fn exempt(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "LOCK" || name.ends_with(".lock") || name.ends_with(".lease") || name == "throughput"
}

/// One completed system call: its name, its arguments text and its result.
struct Call {
    name: String,
    args: String,
    result: i64,
}

/// Parses strace output, joining calls that another thread interrupted
/// (`<unfinished ...>` / `<... resumed>`); calls appear in completion order.
fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<String, (String, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            if let Some((name, args)) = start.split_once('(') {
                pending.insert(pid.to_string(), (name.to_string(), args.to_string()));
            }
            continue;
        }
        let (name, args, tail) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, after)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((_, first_args)) = pending.remove(pid) else {
                continue;
            };
            let Some((more, tail)) = split_result(after) else {
                continue;
            };
            (
                name.to_string(),
                format!("{first_args}{more}"),
                tail.to_string(),
            )
        } else {
            let Some((name, after)) = rest.split_once('(') else {
                continue;
            };
            let Some((args, tail)) = split_result(after) else {
                continue;
            };
            (name.to_string(), args.to_string(), tail.to_string())
        };
        let result = tail
            .split_whitespace()
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or(-1);
        calls.push(Call { name, args, result });
    }
    calls
}

/// Splits `args) = result` (strace pads before the `=`) into the arguments and the result.
fn split_result(after: &str) -> Option<(&str, &str)> {
    let eq = after.rfind(" = ")?;
    let args = after[..eq].trim_end().strip_suffix(')')?;
    Some((args, &after[eq + 3..]))
}

/// The path strace's `-y` prints for a descriptor argument: `5</a/b>`.
fn fd_path(args: &str) -> Option<PathBuf> {
    let start = args.find('<')? + 1;
    let end = start + args[start..].find('>')?;
    Some(PathBuf::from(&args[start..end]))
}

/// The first quoted string of the arguments.
fn quoted(args: &str, nth: usize) -> Option<PathBuf> {
    args.split('"').nth(1 + 2 * nth).map(PathBuf::from)
}

/// Runs `shoal` with `args` under strace and checks the rules; returns the number of
/// acknowledgements checked.
fn audit(data: &Path, args: &[&str], stdin: &[u8]) -> usize {
    audit_with(data, args, stdin, 0, None)
}

/// [`audit`] of a command expected to exit with `code`.
fn audit_exiting(data: &Path, args: &[&str], stdin: &[u8], code: i32) -> usize {
    audit_with(data, args, stdin, code, None)
}

/// [`audit`] of a receive from a standard queue, whose journal writes (`deferred`) may be
/// unsynced when it prints: they become durable with the journal's next sync.
fn audit_receive(data: &Path, args: &[&str], deferred: &Path) -> usize {
    audit_with(data, args, b"", 0, Some(deferred))
}

fn audit_with(
    data: &Path,
    args: &[&str],
    stdin: &[u8],
    code: i32,
    deferred: Option<&Path>,
) -> usize {
    let trace_file = data.with_extension("trace");
    let before = files_under(data);
    let mut child = Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "64", "-o"])
        .arg(&trace_file)
        .args([
            "-e",
            "trace=openat,pwrite64,write,fdatasync,fsync,rename,renameat,renameat2,mkdir,mkdirat",
        ])
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("SHOAL_DATA_DIR", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = files_under(data);
    let trace = std::fs::read_to_string(&trace_file).unwrap();
    let inside = |p: &Path| p.starts_with(data) || p == data;

    let mut dirty: BTreeSet<PathBuf> = BTreeSet::new();
    let mut created: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut dir_syncs: Vec<(PathBuf, usize)> = Vec::new();
    let mut acks = 0;
    for (t, call) in parse(&trace).into_iter().enumerate() {
        if call.result < 0 {
            continue;
        }
        match call.name.as_str() {
            "pwrite64" => {
                if let Some(path) = fd_path(&call.args)
                    && path.extension().is_some_and(|e| e == "log")
                {
                    dirty.insert(path);
                }
            }
            "fdatasync" | "fsync" => {
                if let Some(path) = fd_path(&call.args) {
                    dirty.remove(&path);
                    dir_syncs.push((path, t));
                }
            }
            "write" if call.args.starts_with("1<") || call.args.starts_with("1,") => {
                assert!(
                    dirty
                        .iter()
                        .all(|p| deferred.is_some_and(|d| p.starts_with(d))),
                    "{args:?}: printed {:?} while {dirty:?} had unsynced writes",
                    call.args
                );
                acks += 1;
            }
            "openat" if call.args.contains("O_CREAT") => {
                if let Some(path) = quoted(&call.args, 0)
                    && inside(&path)
                    && !before.contains(&path)
                {
                    created.entry(path).or_insert(t);
                }
            }
            "mkdir" | "mkdirat" => {
                if let Some(path) = quoted(&call.args, 0)
                    && inside(&path)
                {
                    created.entry(path).or_insert(t);
                }
            }
            "rename" | "renameat" | "renameat2" => {
                if let Some(to) = quoted(&call.args, 1)
                    && inside(&to)
                {
                    created.insert(to, t);
                }
            }
            _ => {}
        }
    }
    for (path, t) in &created {
        // Temporary files renamed away need no sync of their own; the rename target does.
        if exempt(path) || !after.contains(path) {
            continue;
        }
        let parent = path.parent().unwrap();
        assert!(
            dir_syncs.iter().any(|(dir, at)| dir == parent && at > t),
            "{args:?}: {} was created or renamed in place, and {} was never fsynced after",
            path.display(),
            parent.display()
        );
    }
    acks
}

#[test]
fn acknowledgements_follow_fsyncs_and_new_names_follow_directory_fsyncs() {
    if !strace_available() {
        eprintln!("syscall audit skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    audit(&data, &["stream", "create", "s", "--shards", "2"], b"");
    assert_eq!(audit(&data, &["put", "s", "one", "-k", "k"], b""), 1);
    let lines: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    assert!(audit(&data, &["put", "s", "--lines"], lines.as_bytes()) >= 4);
    audit(
        &data,
        &["reshard", "s", "split", "shardId-000000000000"],
        b"",
    );
    assert!(audit(&data, &["put", "s", "--lines"], lines.as_bytes()) >= 4);
    audit(&data, &["reshard", "s", "scale", "--shards", "3"], b"");
    audit(&data, &["stream", "set", "s", "--retention", "48h"], b"");
    audit(
        &data,
        &["consume", "s", "--group", "g", "--limit", "50"],
        b"",
    );
    audit(
        &data,
        &[
            "stream",
            "create",
            "limited",
            "--shards",
            "1",
            "--enforce-limits",
        ],
        b"",
    );
    assert_eq!(audit(&data, &["put", "limited", "x", "-k", "k"], b""), 1);
}

/// Runs `shoal` with `args` and returns the receipt handles it printed (JSON lines).
fn handles(data: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env("SHOAL_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["receipt_handle"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn queue_acknowledgements_follow_fsyncs_and_new_names_follow_directory_fsyncs() {
    if !strace_available() {
        eprintln!("syscall audit skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    audit(&data, &["queue", "create", "dlq"], b"");
    audit(
        &data,
        &[
            "queue",
            "create",
            "jobs",
            "--dead-letter-queue",
            "dlq",
            "--max-receives",
            "1",
        ],
        b"",
    );
    assert_eq!(audit(&data, &["send", "jobs", "one"], b""), 1);
    let lines: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    assert!(audit(&data, &["send", "jobs", "--lines"], lines.as_bytes()) >= 1);
    // A receive from a standard queue prints before its state change is durable (a power
    // loss may deliver the message again); everything else it wrote is.
    let journal = data.join("queues/jobs/journal");
    assert_eq!(
        audit_receive(
            &data,
            &[
                "receive",
                "jobs",
                "--max",
                "10",
                "--visibility-timeout",
                "0"
            ],
            &journal
        ),
        1
    );
    // Receive count 1 = max receives: these move to the dead-letter queue.
    audit_receive(&data, &["receive", "jobs", "--max", "10"], &journal);
    let got = handles(&data, &["receive", "jobs", "--max", "10"]);
    let mut args = vec!["delete", "jobs"];
    args.extend(got.iter().map(String::as_str));
    audit(&data, &args, b"");
    audit(&data, &["redrive", "dlq"], b"");
    audit(&data, &["queue", "purge", "jobs"], b"");
    audit(&data, &["queue", "create", "orders.fifo"], b"");
    assert_eq!(
        audit(
            &data,
            &[
                "send",
                "orders.fifo",
                "x",
                "--group-id",
                "g",
                "--dedup-id",
                "1"
            ],
            b""
        ),
        1
    );
    // A FIFO receive prints only after its state change is durable.
    assert_eq!(audit(&data, &["receive", "orders.fifo"], b""), 1);
}

#[test]
fn a_long_poll_sleeps_in_the_kernel_instead_of_polling() {
    if !strace_available() {
        eprintln!("syscall audit skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    audit(&data, &["queue", "create", "idle"], b"");
    let summary = tmp.path().join("summary");
    let status = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .args(["receive", "idle", "--wait", "1s"])
        .env("SHOAL_DATA_DIR", &data)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&summary).unwrap();
    // Columns: % time, seconds, usecs/call, calls, [errors], syscall (or "total").
    let calls = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| l.split_whitespace().nth(3).and_then(|c| c.parse().ok()))
            .unwrap_or(0)
    };
    let total = calls("total");
    assert_eq!(calls("clock_nanosleep"), 0, "{text}");
    assert!(calls("poll") + calls("ppoll") >= 1, "{text}");
    // A whole process start, open and one wait: a poller would make hundreds more.
    assert!(
        total < 400,
        "{total} system calls for one idle second:\n{text}"
    );
}

#[test]
fn topic_fan_out_and_repair_follow_the_same_rules() {
    if !strace_available() {
        eprintln!("syscall audit skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    audit(&data, &["queue", "create", "a"], b"");
    audit(&data, &["queue", "create", "b"], b"");
    audit(&data, &["topic", "create", "t"], b"");
    audit(&data, &["topic", "subscribe", "t", "--queue", "a"], b"");
    audit(
        &data,
        &["topic", "subscribe", "t", "--queue", "b", "--raw"],
        b"",
    );
    assert_eq!(audit(&data, &["publish", "t", "hello"], b""), 1);
    audit(&data, &["topic", "deliver", "t"], b"");

    // A damaged stream segment: the repair copies the original into lost+found and renames
    // a salvaged segment over it, each name made durable.
    audit(&data, &["stream", "create", "s", "--shards", "1"], b"");
    let lines: String = (0..20).map(|i| format!("record {i}\n")).collect();
    audit(&data, &["put", "s", "--lines", "-k", "k"], lines.as_bytes());
    let segment = data.join("streams/s/shards/000000000000/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    // In the records, not in the zeros written ahead of them (a prefill).
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let at = end / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    audit_exiting(&data, &["check", "--repair"], b"", 6);
    audit(&data, &["check"], b"");
}
