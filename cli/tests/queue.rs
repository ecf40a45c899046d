//! End-to-end tests of the queue commands of the `shoal` binary.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Dir, Reaped, check, json, lines};

#[test]
fn queue_lifecycle_and_attribute_rules() {
    let dir = Dir::new();
    let created = json(&dir.ok(&["queue", "create", "jobs"])[0]);
    assert_eq!(created["visibility_timeout_seconds"], 30.0);
    assert_eq!(created["message_retention_period_seconds"], 345_600.0);
    assert_eq!(created["maximum_message_size"], 1_048_576);
    assert_eq!(created["fifo"], false);
    // Same attributes: fine. Different: a conflict.
    dir.ok(&["queue", "create", "jobs"]);
    check(
        dir.run(&["queue", "create", "jobs", "--visibility-timeout", "60s"]),
        7,
    );
    let before = dir.snapshot();
    for bad in [
        &["queue", "create", "q2", "--visibility-timeout", "13h"][..],
        &["queue", "create", "q2", "--delay", "16m"],
        &["queue", "create", "q2", "--retention", "59s"],
        &["queue", "create", "q2", "--retention", "15d"],
        &["queue", "create", "q2", "--max-message-size", "1023"],
        &["queue", "create", "q2", "--receive-wait", "21s"],
        &[
            "queue",
            "create",
            "q2",
            "--dead-letter-queue",
            "jobs",
            "--max-receives",
            "0",
        ],
        &["queue", "create", "q2", "--fifo"],
        &["queue", "create", "bad name"],
    ] {
        let out = check(dir.run(bad), 5);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
    check(
        dir.run(&[
            "queue",
            "create",
            "q2",
            "--dead-letter-queue",
            "nope",
            "--max-receives",
            "3",
        ]),
        3,
    );
    assert_eq!(dir.snapshot(), before, "rejected creates changed nothing");

    dir.ok(&["queue", "create", "jobs-dlq"]);
    dir.ok(&["queue", "create", "events.fifo", "--content-based-dedup"]);
    assert_eq!(
        dir.ok(&["queue", "list", "--prefix", "jobs", "-o", "text"]),
        ["jobs", "jobs-dlq"]
    );
    let set = json(
        &dir.ok(&[
            "queue",
            "set",
            "jobs",
            "--visibility-timeout",
            "2m",
            "--dead-letter-queue",
            "jobs-dlq",
            "--max-receives",
            "5",
        ])[0],
    );
    assert_eq!(set["visibility_timeout_seconds"], 120.0);
    assert_eq!(set["redrive_policy"]["dead_letter_target"], "jobs-dlq");
    assert_eq!(set["redrive_policy"]["max_receive_count"], 5);

    dir.ok(&["send", "jobs", "one"]);
    dir.ok(&["send", "jobs", "later", "--delay", "10m"]);
    let attributes = json(&dir.ok(&["queue", "attributes", "jobs"])[0]);
    assert_eq!(attributes["approximate_number_of_messages"], 1);
    assert_eq!(attributes["approximate_number_of_messages_delayed"], 1);
    assert_eq!(attributes["approximate_number_of_messages_not_visible"], 0);
    assert!(
        attributes["created_timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    dir.ok(&["queue", "purge", "jobs"]);
    dir.ok(&["send", "jobs", "after purge"]);
    assert_eq!(
        dir.ok(&["receive", "jobs", "--max", "10", "--raw"]),
        ["after purge"]
    );
    dir.ok(&["queue", "delete", "jobs"]);
    check(dir.run(&["queue", "attributes", "jobs"]), 3);
    check(dir.run(&["send", "jobs", "x"]), 3);
}

#[test]
fn send_receive_delete_round_trip() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "jobs"]);
    let sent = json(
        &dir.ok(&[
            "send",
            "jobs",
            "hello",
            "--attr",
            "kind=String:greeting",
            "--attr",
            "n=Number:42",
            "--attr",
            "raw=Binary:AAEC",
        ])[0],
    );
    assert_eq!(sent["md5_of_body"], "5d41402abc4b2a76b9719d911017c592");
    let out = check(
        dir.run_stdin(&["send", "jobs", "--lines"], b"a\n\nb\r\nc"),
        0,
    );
    assert_eq!(lines(&out).len(), 3, "one result per non-empty line");

    let got: Vec<_> = dir
        .ok(&["receive", "jobs", "--max", "10"])
        .iter()
        .map(|l| json(l))
        .collect();
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["hello", "a", "b", "c"]);
    let first = &got[0];
    assert_eq!(first["message_id"], sent["message_id"]);
    assert_eq!(
        first["md5_of_message_attributes"],
        sent["md5_of_message_attributes"]
    );
    assert_eq!(first["attributes"]["ApproximateReceiveCount"], "1");
    assert!(
        first["attributes"]["SentTimestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(first["message_attributes"]["n"]["string_value"], "42");
    assert_eq!(first["message_attributes"]["raw"]["binary_value"], "AAEC");
    // Nothing visible: prints nothing, exits 0.
    assert!(dir.ok(&["receive", "jobs"]).is_empty());

    // Delete two by argument and two from stdin.
    let handle = |i: usize| got[i]["receipt_handle"].as_str().unwrap().to_string();
    dir.ok(&["delete", "jobs", &handle(0), &handle(1)]);
    let stdin = format!("{}\n{}\n", handle(2), handle(3));
    check(dir.run_stdin(&["delete", "jobs", "-"], stdin.as_bytes()), 0);
    // A made-up handle is invalid input, a stale one for change-visibility a conflict.
    check(dir.run(&["delete", "jobs", "not-a-handle"]), 5);
    check(
        dir.run(&["change-visibility", "jobs", &handle(0), "--timeout", "0"]),
        7,
    );

    // receive --delete; change-visibility 0 brings a message back now.
    dir.ok(&["send", "jobs", "x"]);
    let m = json(&dir.ok(&["receive", "jobs"])[0]);
    dir.ok(&[
        "change-visibility",
        "jobs",
        m["receipt_handle"].as_str().unwrap(),
        "--timeout",
        "0",
    ]);
    assert_eq!(dir.ok(&["receive", "jobs", "--delete", "--raw"]), ["x"]);
    assert!(
        dir.ok(&["receive", "jobs", "--visibility-timeout", "0"])
            .is_empty()
    );
}

#[test]
fn bad_input_exits_5_and_changes_nothing() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "small", "--max-message-size", "1024"]);
    dir.ok(&["queue", "create", "jobs.fifo"]);
    let before = dir.snapshot();
    let big = "x".repeat(1025);
    for args in [
        &["send", "small", "bad \u{1} char"][..],
        &["send", "small", &big],
        &["send", "small", "x", "--attr", "novalue"],
        &["send", "small", "x", "--attr", "n=Number:abc"],
        &["send", "small", "x", "--attr", "b=Binary:!!"],
        &["send", "small", "x", "--delay", "16m"],
        &["send", "small", "x", "--dedup-id", "d"],
        &["send", "jobs.fifo", "x"],
        &["send", "jobs.fifo", "x", "--group-id", "g"],
        &[
            "send",
            "jobs.fifo",
            "x",
            "--group-id",
            "g",
            "--dedup-id",
            "d",
            "--delay",
            "1s",
        ],
        &["receive", "small", "--max", "11"],
        &["receive", "small", "--wait", "21s"],
    ] {
        check(dir.run(args), 5);
    }
    assert_eq!(dir.snapshot(), before, "rejected commands changed nothing");
}

#[test]
fn fifo_through_the_cli() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "orders.fifo"]);
    let send = |body: &str, group: &str, dedup: &str| {
        json(
            &dir.ok(&[
                "send",
                "orders.fifo",
                body,
                "--group-id",
                group,
                "--dedup-id",
                dedup,
            ])[0],
        )
    };
    let a = send("a1", "a", "1");
    let b = send("b1", "b", "2");
    let dup = send("a1 again", "a", "1");
    assert_eq!(dup["message_id"], a["message_id"]);
    assert!(a["sequence_number"].as_str().unwrap() < b["sequence_number"].as_str().unwrap());
    let got = json(&dir.ok(&["receive", "orders.fifo"])[0]);
    assert_eq!(got["body"], "a1");
    assert_eq!(got["attributes"]["MessageGroupId"], "a");
    assert_eq!(got["attributes"]["MessageDeduplicationId"], "1");
    assert_eq!(got["attributes"]["SequenceNumber"], a["sequence_number"]);
    send("a2", "a", "3");
    // Group a is held while a1 is in flight.
    assert_eq!(
        dir.ok(&["receive", "orders.fifo", "--max", "10", "--raw"]),
        ["b1"]
    );
}

#[test]
fn long_poll_returns_as_soon_as_another_process_sends() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "jobs"]);
    let mut child = Reaped(
        dir.cmd(&["receive", "jobs", "--wait", "20s", "--raw"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Let it start waiting, then send from another process.
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    dir.ok(&["send", "jobs", "wake up"]);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let waited = sent.elapsed();
    assert_eq!(line, "wake up\n");
    // Far sooner than the 20 s wait (the latency itself is measured by the benchmarks).
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn worker_deletes_on_success_and_failures_reach_the_dead_letter_queue() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "dlq"]);
    dir.ok(&[
        "queue",
        "create",
        "work",
        "--dead-letter-queue",
        "dlq",
        "--max-receives",
        "2",
    ]);
    for body in ["good 1", "bad", "good 2"] {
        dir.ok(&["send", "work", body]);
    }
    // Visibility 0: a failed message is visible again at once; its third receive would pass
    // max receives, so it moves to the dead-letter queue. (One command at a time: with
    // visibility 0, a second one would receive a message still being worked on.)
    let out = check(
        dir.run(&[
            "worker",
            "work",
            "--exit-when-empty",
            "--visibility-timeout",
            "0",
            "--concurrency",
            "1",
            "--",
            "grep",
            "-q",
            "good",
        ]),
        0,
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.matches("warning: grep failed").count(),
        2,
        "{stderr}"
    );
    let attributes = json(&dir.ok(&["queue", "attributes", "work"])[0]);
    assert_eq!(attributes["approximate_number_of_messages"], 0);
    assert_eq!(attributes["approximate_number_of_messages_not_visible"], 0);
    let dead = json(&dir.ok(&["receive", "dlq", "--visibility-timeout", "0"])[0]);
    assert_eq!(dead["body"], "bad");
    assert_eq!(dead["attributes"]["ApproximateReceiveCount"], "3");

    let moved = json(&dir.ok(&["redrive", "dlq"])[0]);
    assert_eq!(moved["moved"], 1);
    assert!(dir.ok(&["receive", "dlq"]).is_empty());
    assert_eq!(dir.ok(&["receive", "work", "--raw"]), ["bad"]);
}
