//! Bad input, case by case: every rejected command prints one line starting `error:`, exits
//! with the documented code (2 usage, 3 not found, 5 invalid input, 6 corruption) and leaves
//! the data directory byte for byte as it was. Also: what the data directory's files and
//! directories may be read by, and a directory written by a newer shoal.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Dir, json};

const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const INVALID: i32 = 5;
const CORRUPTION: i32 = 6;

/// A data directory with one of everything, and a receipt handle of the standard queue.
fn populated() -> (Dir, String) {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "q"]);
    dir.ok(&["queue", "create", "f.fifo"]);
    dir.ok(&["stream", "create", "s", "--shards", "2"]);
    dir.ok(&["topic", "create", "t"]);
    dir.ok(&["topic", "subscribe", "t", "--queue", "q"]);
    dir.ok(&["send", "q", "one"]);
    dir.ok(&["send", "q", "two"]);
    dir.ok(&["put", "s", "record", "-k", "k"]);
    dir.ok(&["publish", "t", "news"]);
    let received = dir.ok(&["receive", "q"]);
    let handle = json(&received[0])["receipt_handle"]
        .as_str()
        .unwrap()
        .to_string();
    (dir, handle)
}

struct Case {
    args: Vec<String>,
    stdin: Vec<u8>,
    code: i32,
    says: &'static str,
}

fn case(args: &[&str], code: i32, says: &'static str) -> Case {
    Case {
        args: args.iter().map(ToString::to_string).collect(),
        stdin: Vec::new(),
        code,
        says,
    }
}

fn with_stdin(args: &[&str], stdin: &[u8], code: i32, says: &'static str) -> Case {
    Case {
        stdin: stdin.to_vec(),
        ..case(args, code, says)
    }
}

fn run_cases(dir: &Dir, cases: &[Case]) {
    let before = dir.snapshot();
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = dir.run_stdin(&args, &c.stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown = if stderr.len() > 300 {
            &stderr[..300]
        } else {
            &stderr
        };
        assert_eq!(
            out.status.code(),
            Some(c.code),
            "{:?}: stderr {shown}",
            &args[..args.len().min(6)]
        );
        assert!(
            stderr.starts_with("error: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
            "{:?}: not one error line: {shown:?}",
            &args[..args.len().min(6)]
        );
        assert!(
            stderr.contains(c.says),
            "{:?}: {shown:?} does not say {:?}",
            &args[..args.len().min(6)],
            c.says
        );
        assert!(out.stdout.is_empty(), "{args:?}: printed something");
        assert!(
            dir.snapshot() == before,
            "{:?} changed the data directory",
            &args[..args.len().min(6)]
        );
    }
}

#[test]
fn bad_names_are_refused_before_any_path_is_built() {
    let (dir, _) = populated();
    let long_queue = "q".repeat(81);
    let long_stream = "s".repeat(129);
    let mut cases = Vec::new();
    // (A NUL cannot reach a name through argv; the engine's name tests cover it.)
    for name in ["..", "../q", "a/b", "", "a b", "é", long_queue.as_str()] {
        cases.push(case(
            &["queue", "create", name],
            INVALID,
            "invalid queue name",
        ));
        cases.push(case(&["send", name, "hi"], INVALID, "invalid queue name"));
        cases.push(case(&["receive", name], INVALID, "invalid queue name"));
        if name != long_queue {
            cases.push(case(
                &["topic", "create", name],
                INVALID,
                "invalid topic name",
            ));
        }
    }
    // SNS allows topic names of up to 256 characters.
    let long_topic = "t".repeat(257);
    cases.push(case(
        &["topic", "create", &long_topic],
        INVALID,
        "invalid topic name",
    ));
    for name in ["..", "a/b", "", "a*b", long_stream.as_str()] {
        cases.push(case(
            &["stream", "create", name, "--shards", "1"],
            INVALID,
            "invalid stream name",
        ));
        cases.push(case(
            &["put", name, "x", "-k", "k"],
            INVALID,
            "invalid stream name",
        ));
    }
    cases.extend([
        case(&["queue", "create", "plain", "--fifo"], INVALID, ".fifo"),
        case(&["send", "missing", "hi"], NOT_FOUND, "does not exist"),
        case(&["get", "missing"], NOT_FOUND, "does not exist"),
        case(&["publish", "missing", "hi"], NOT_FOUND, "does not exist"),
    ]);
    run_cases(&dir, &cases);
}

#[test]
fn bad_bodies_are_refused() {
    let (dir, _) = populated();
    let too_big = "a".repeat(1_048_577);
    let big_record = vec![b'a'; 1_048_577];
    run_cases(
        &dir,
        &[
            case(&["send", "q", ""], INVALID, "empty"),
            with_stdin(&["send", "q"], too_big.as_bytes(), INVALID, "1048576"),
            with_stdin(&["send", "q"], b"caf\xc3", INVALID, "UTF-8"),
            case(&["send", "q", "bell\u{7}"], INVALID, "does not allow"),
            with_stdin(&["send", "q"], b"nul\0", INVALID, "does not allow"),
            case(&["send", "q", "\u{fffe}"], INVALID, "does not allow"),
            case(&["publish", "t", ""], INVALID, "empty"),
            with_stdin(&["put", "s", "-k", "k"], &big_record, INVALID, "1048576"),
            case(&["put", "s", "x", "-k", ""], INVALID, "partition key"),
        ],
    );
}

#[test]
fn malformed_arguments_are_refused() {
    let (dir, handle) = populated();
    let cases = [
        // q is no queue's dead-letter queue: SQS refuses such a move task.
        case(&["redrive", "q"], INVALID, "dead-letter queue"),
        case(
            &["redrive", "q", "--to", "f.fifo"],
            INVALID,
            "dead-letter queue",
        ),
        case(
            &["send", "q", "hi", "--attr", "nope"],
            INVALID,
            "NAME=TYPE:VALUE",
        ),
        case(
            &["send", "q", "hi", "--attr", "n=Number:abc"],
            INVALID,
            "not a number",
        ),
        case(
            &["send", "q", "hi", "--attr", "n=Color:red"],
            INVALID,
            "type",
        ),
        case(
            &["send", "q", "hi", "--attr", "AWS.x=String:v"],
            INVALID,
            "AWS.",
        ),
        case(
            &["send", "q", "hi", "--delay", "16m"],
            INVALID,
            "15 minutes",
        ),
        case(
            &["send", "q", "hi", "--delay", "soon"],
            INVALID,
            "invalid duration",
        ),
        case(&["send", "f.fifo", "hi"], INVALID, "group id"),
        case(&["receive", "q", "--max", "11"], INVALID, "1 to 10"),
        case(&["receive", "q", "--max", "0"], INVALID, "1 to 10"),
        case(&["receive", "q", "--wait", "21s"], INVALID, "20"),
        case(
            &["receive", "q", "--visibility-timeout=-5"],
            INVALID,
            "invalid value",
        ),
        case(
            &["delete", "q", "garbage"],
            INVALID,
            "ReceiptHandleIsInvalid",
        ),
        case(
            &["change-visibility", "q", "garbage", "--timeout", "10s"],
            INVALID,
            "ReceiptHandleIsInvalid",
        ),
        case(
            &["change-visibility", "q", &handle, "--timeout", "13h"],
            INVALID,
            "12 hours",
        ),
        case(
            &["queue", "create", "v", "--visibility-timeout", "1x"],
            INVALID,
            "1x",
        ),
        case(
            &["put", "s", "x", "-k", "k", "--explicit-hash-key", "abc"],
            INVALID,
            "hash key",
        ),
        case(
            &[
                "put",
                "s",
                "x",
                "-k",
                "k",
                "--explicit-hash-key",
                "340282366920938463463374607431768211456",
            ],
            INVALID,
            "2^128-1",
        ),
        case(&["get", "s", "--from", "sequence:xyz"], INVALID, "sequence"),
        case(
            &[
                "topic",
                "subscribe",
                "t",
                "--queue",
                "q",
                "--filter-policy",
                "{bad",
            ],
            INVALID,
            "filter policy",
        ),
        case(
            &[
                "topic",
                "subscribe",
                "t",
                "--queue",
                "q",
                "--filter-policy",
                r#"{"a":[{"numeric":["<"]}]}"#,
            ],
            INVALID,
            "filter policy",
        ),
        case(&["receive"], USAGE, "required"),
        case(&["frobnicate"], USAGE, "unrecognized subcommand"),
    ];
    run_cases(&dir, &cases);
}

fn modes(path: &Path, out: &mut Vec<(String, u32, bool)>) {
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let mode = meta.permissions().mode() & 0o777;
        out.push((entry.path().display().to_string(), mode, meta.is_dir()));
        if meta.is_dir() {
            modes(&entry.path(), out);
        }
    }
}

#[test]
fn the_data_directory_is_private_to_its_owner() {
    let (dir, _) = populated();
    dir.ok(&["consume", "s", "--group", "g", "--limit", "1"]);
    let mut found = Vec::new();
    let root = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(root, 0o700);
    modes(&dir.path(), &mut found);
    assert!(found.len() > 40, "{} files", found.len());
    for (path, mode, is_dir) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path}: {mode:o}");
    }
}

#[test]
fn a_directory_written_by_a_newer_shoal_is_refused() {
    let (dir, _) = populated();
    let format = dir.path().join("shoal.format");
    let mut bytes = std::fs::read(&format).unwrap();
    // The version follows the 8-byte magic; a newer shoal writes the checksum for it
    // (bytes 16..20: the frame's first 16 bytes and the payload).
    bytes[8] = bytes[8].wrapping_add(1);
    let sum = shoal_engine::codec::crc::masked2(&bytes[..16], &bytes[20..]);
    bytes[16..20].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&format, &bytes).unwrap();
    run_cases(
        &dir,
        &[
            case(&["send", "q", "hi"], CORRUPTION, "newer"),
            case(&["queue", "list"], CORRUPTION, "newer"),
            case(&["check"], CORRUPTION, "newer"),
        ],
    );
}

/// Every path under `root`, directories included (none when `root` does not exist).
fn paths_under(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push(path.clone());
            if path.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// Commands about a queue, stream, topic or subscription that does not exist, each of which
/// must leave the data directory as it found it: not even making a directory.
fn not_found_cases() -> Vec<Case> {
    vec![
        case(&["send", "q", "x"], NOT_FOUND, "does not exist"),
        case(&["receive", "q"], NOT_FOUND, "does not exist"),
        case(&["queue", "attributes", "q"], NOT_FOUND, "does not exist"),
        case(
            &["queue", "set", "q", "--delay", "5"],
            NOT_FOUND,
            "does not exist",
        ),
        case(&["queue", "purge", "q"], NOT_FOUND, "does not exist"),
        case(&["queue", "delete", "q"], NOT_FOUND, "does not exist"),
        case(&["put", "s", "x", "-k", "k"], NOT_FOUND, "does not exist"),
        case(&["get", "s"], NOT_FOUND, "does not exist"),
        case(&["stream", "describe", "s"], NOT_FOUND, "does not exist"),
        case(&["stream", "delete", "s"], NOT_FOUND, "does not exist"),
        case(&["publish", "t", "x"], NOT_FOUND, "does not exist"),
        case(
            &["topic", "subscribe", "t", "--queue", "q"],
            NOT_FOUND,
            "does not exist",
        ),
        case(&["topic", "delete", "t"], NOT_FOUND, "does not exist"),
        case(
            &["topic", "unsubscribe", "abc"],
            NOT_FOUND,
            "does not exist",
        ),
    ]
}

#[test]
fn commands_on_a_missing_data_directory_create_nothing() {
    let dir = Dir::new();
    for c in not_found_cases() {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = dir.run_stdin(&args, &c.stdin);
        assert_eq!(out.status.code(), Some(c.code), "{args:?}");
        assert!(!dir.path().exists(), "{args:?} made the data directory");
    }
    for args in [
        &["queue", "list"][..],
        &["stream", "list"],
        &["topic", "list"],
        &["stats"],
        &["check"],
        &["compact"],
    ] {
        dir.ok(args);
        assert!(!dir.path().exists(), "{args:?} made the data directory");
    }
    // The first resource makes it.
    dir.ok(&["queue", "create", "q"]);
    assert!(dir.path().join("shoal.format").is_file());
}

#[test]
fn a_rejected_command_makes_no_directory_for_a_kind_never_used() {
    // Only a queue was ever made: no stream or topic directory exists yet.
    let dir = Dir::new();
    dir.ok(&["queue", "create", "other"]);
    let before = paths_under(&dir.path());
    for c in not_found_cases() {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = dir.run_stdin(&args, &c.stdin);
        assert_eq!(out.status.code(), Some(c.code), "{args:?}");
        assert_eq!(
            paths_under(&dir.path()),
            before,
            "{args:?} changed the data directory"
        );
    }
    run_cases(&dir, &not_found_cases());
}
