//! End-to-end tests of the topic commands of the `shoal` binary: lifecycle and invalid
//! input, fan-out to queues through filter policies, FIFO, and HTTP (a server on 127.0.0.1
//! that fails the first attempts), command and file subscribers.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{Dir, check, json};

fn receive_all(dir: &Dir, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = dir.ok(&["receive", queue, "--max", "10", "--delete", "--raw"]);
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[test]
fn topic_lifecycle_and_invalid_input() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "q"]);
    let created = json(&dir.ok(&["topic", "create", "alerts"])[0]);
    assert_eq!(created["arn"], "arn:aws:sns:local:000000000000:alerts");
    assert_eq!(created["fifo"], false);
    dir.ok(&["topic", "create", "alerts"]);
    check(
        dir.run(&["topic", "create", "alerts", "--durability", "never"]),
        7,
    );
    let before = dir.snapshot();
    for bad in [
        &["topic", "create", "bad name"][..],
        &["topic", "create", "x", "--fifo"],
        &["topic", "create", "x", "--content-based-dedup"],
        &[
            "topic",
            "subscribe",
            "alerts",
            "--queue",
            "q",
            "--filter-policy",
            "{\"a\": \"x\"}",
        ],
        &[
            "topic",
            "subscribe",
            "alerts",
            "--queue",
            "q",
            "--filter-policy",
            "not json",
        ],
        &[
            "topic",
            "subscribe",
            "alerts",
            "--queue",
            "q",
            "--filter-policy",
            r#"{"a": [{"numeric": [">", 5, "<", 1]}]}"#,
        ],
        &[
            "topic",
            "subscribe",
            "alerts",
            "--queue",
            "q",
            "--filter-policy",
            r#"{"a": {"b": ["x"]}}"#,
        ],
        &[
            "topic",
            "subscribe",
            "alerts",
            "--http",
            "https://example.com/",
        ],
        &["publish", "alerts", ""],
        &["publish", "alerts", "x", "--group-id", "g"],
        &["publish", "alerts", "x", "--attr", "n=Number:abc"],
        &["publish", "alerts", "x", "--attr", "broken"],
    ] {
        let out = check(dir.run(bad), 5);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.lines().count() == 1,
            "{bad:?}: {stderr}"
        );
    }
    check(
        dir.run(&["topic", "subscribe", "alerts", "--queue", "missing"]),
        3,
    );
    check(dir.run(&["topic", "subscribe", "nope", "--queue", "q"]), 3);
    check(dir.run(&["publish", "nope", "x"]), 3);
    check(dir.run(&["topic", "unsubscribe", "nope"]), 3);
    check(dir.run(&["topic", "subscribe", "alerts"]), 2);
    assert_eq!(dir.snapshot(), before, "rejected commands changed nothing");

    let sub = json(&dir.ok(&["topic", "subscribe", "alerts", "--queue", "q"])[0]);
    let arn = sub["subscription_arn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:sns:local:000000000000:alerts:"));
    let subs = dir.ok(&["topic", "subscriptions", "alerts"]);
    assert_eq!(subs.len(), 1);
    assert_eq!(json(&subs[0])["protocol"], "queue");
    assert_eq!(dir.ok(&["topic", "list", "-o", "text"]), ["alerts"]);
    dir.ok(&["topic", "unsubscribe", &arn]);
    assert!(dir.ok(&["topic", "subscriptions", "alerts"]).is_empty());
    dir.ok(&["topic", "delete", "alerts"]);
    assert!(dir.ok(&["topic", "list"]).is_empty());
    check(dir.run(&["topic", "delete", "alerts"]), 3);
}

#[test]
fn publish_fans_out_to_queues_through_filter_policies() {
    let dir = Dir::new();
    for q in ["all", "errors", "eu"] {
        dir.ok(&["queue", "create", q]);
    }
    dir.ok(&["topic", "create", "events"]);
    dir.ok(&["topic", "subscribe", "events", "--queue", "all"]);
    dir.ok(&[
        "topic",
        "subscribe",
        "events",
        "--queue",
        "errors",
        "--raw",
        "--filter-policy",
        r#"{"level": ["error", {"prefix": "crit"}]}"#,
    ]);
    dir.ok(&[
        "topic",
        "subscribe",
        "events",
        "--queue",
        "eu",
        "--raw",
        "--filter-scope",
        "body",
        "--filter-policy",
        r#"{"where": {"region": [{"prefix": "eu-"}]}}"#,
    ]);
    let publish = |message: &str, level: &str| {
        let out = dir.ok(&[
            "publish",
            "events",
            message,
            "--attr",
            &format!("level=String:{level}"),
        ]);
        assert_eq!(out.len(), 1);
        assert!(json(&out[0])["message_id"].is_string());
        assert!(json(&out[0]).get("sequence_number").is_none());
    };
    publish(r#"{"where":{"region":"eu-west-1"},"n":1}"#, "error");
    publish(r#"{"where":{"region":"us-east-1"},"n":2}"#, "info");
    publish(r#"{"where":{"region":"eu-north-1"},"n":3}"#, "critical");
    publish("plain text", "error");
    // Stdin is the message when none is given.
    let out = dir.run_stdin(
        &["publish", "events", "--attr", "level=String:debug"],
        b"from stdin",
    );
    check(out, 0);
    let all: Vec<String> = receive_all(&dir, "all")
        .iter()
        .map(|b| json(b)["Message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 5);
    assert_eq!(all[4], "from stdin");
    assert_eq!(
        receive_all(&dir, "errors"),
        [
            r#"{"where":{"region":"eu-west-1"},"n":1}"#,
            r#"{"where":{"region":"eu-north-1"},"n":3}"#,
            "plain text"
        ]
    );
    assert_eq!(
        receive_all(&dir, "eu"),
        [
            r#"{"where":{"region":"eu-west-1"},"n":1}"#,
            r#"{"where":{"region":"eu-north-1"},"n":3}"#
        ]
    );
}

#[test]
fn fifo_topic_keeps_group_order_and_deduplicates() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "out.fifo"]);
    dir.ok(&["topic", "create", "orders.fifo", "--content-based-dedup"]);
    dir.ok(&[
        "topic",
        "subscribe",
        "orders.fifo",
        "--queue",
        "out.fifo",
        "--raw",
    ]);
    check(dir.run(&["publish", "orders.fifo", "x"]), 5);
    let mut seqs = Vec::new();
    for i in 0..6 {
        let group = format!("g{}", i % 2);
        let out = json(
            &dir.ok(&[
                "publish",
                "orders.fifo",
                &format!("{group}-{i}"),
                "--group-id",
                &group,
            ])[0],
        );
        seqs.push(out["sequence_number"].as_str().unwrap().to_string());
    }
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted, "sequence numbers grow");
    let first = json(&dir.ok(&["publish", "orders.fifo", "g0-0", "--group-id", "g0"])[0]);
    assert_eq!(
        first["sequence_number"].as_str().unwrap(),
        seqs[0],
        "duplicate"
    );
    let got = receive_all(&dir, "out.fifo");
    let g0: Vec<&String> = got.iter().filter(|b| b.starts_with("g0")).collect();
    let g1: Vec<&String> = got.iter().filter(|b| b.starts_with("g1")).collect();
    assert_eq!(g0, ["g0-0", "g0-2", "g0-4"]);
    assert_eq!(g1, ["g1-1", "g1-3", "g1-5"]);
}

/// Requests a test server saw: head and body of each.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

/// A minimal HTTP server: answers 500 to the first `failures` requests, then 200; records
/// each request's head and body.
fn serve(failures: usize) -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            log.lock()
                .unwrap()
                .push((head, String::from_utf8(body).unwrap()));
            let status = if n < failures { "500 Oops" } else { "200 OK" };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (url, seen)
}

#[test]
fn http_subscriber_that_fails_first_then_succeeds() {
    let dir = Dir::new();
    let (url, seen) = serve(3);
    dir.ok(&["topic", "create", "hooks"]);
    let sub = json(&dir.ok(&["topic", "subscribe", "hooks", "--http", &url])[0]);
    let arn = sub["subscription_arn"].as_str().unwrap().to_string();
    // The publish is acknowledged; its one delivery attempt fails and stays pending.
    let out = check(dir.run(&["publish", "hooks", "ping", "--subject", "s1"]), 0);
    let message_id = json(std::str::from_utf8(&out.stdout).unwrap().trim())["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("500"),
        "{out:?}"
    );
    let status = json(&dir.ok(&["topic", "subscriptions", "hooks"])[0]);
    assert_eq!(status["pending"], 1);
    assert_eq!(status["attempts"], 1);
    // The dispatcher retries with backoff: two more failures, then success.
    let lines = dir.ok(&[
        "topic",
        "deliver",
        "hooks",
        "--attempts",
        "5",
        "--min-delay",
        "10ms",
    ]);
    assert_eq!(json(&lines[0])["delivered"], 1, "{lines:?}");
    let status = json(&dir.ok(&["topic", "subscriptions", "hooks"])[0]);
    assert_eq!(
        (status["pending"].as_u64(), status["failed"].as_u64()),
        (Some(0), Some(0))
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    let (head, body) = &seen[3];
    assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("x-amz-sns-message-type: Notification"),
        "{head}"
    );
    assert!(
        head.contains(&format!("x-amz-sns-message-id: {message_id}")),
        "{head}"
    );
    assert!(
        head.contains("x-amz-sns-topic-arn: arn:aws:sns:local:000000000000:hooks"),
        "{head}"
    );
    assert!(
        head.contains(&format!("x-amz-sns-subscription-arn: {arn}")),
        "{head}"
    );
    let envelope = json(body);
    assert_eq!(envelope["Message"], "ping");
    assert_eq!(envelope["Subject"], "s1");
    assert_eq!(envelope["MessageId"], message_id.as_str());
}

#[test]
fn http_deliveries_that_keep_failing_go_to_the_dead_letter_queue() {
    let dir = Dir::new();
    let (url, seen) = serve(usize::MAX);
    dir.ok(&["queue", "create", "dlq"]);
    dir.ok(&["topic", "create", "hooks"]);
    dir.ok(&[
        "topic",
        "subscribe",
        "hooks",
        "--http",
        &url,
        "--raw",
        "--dead-letter-queue",
        "dlq",
    ]);
    dir.ok(&["publish", "hooks", "lost?"]);
    let out = check(
        dir.run(&["topic", "deliver", "--attempts", "3", "--min-delay", "5ms"]),
        0,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dead-letter"),
        "{out:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(receive_all(&dir, "dlq"), ["lost?"]);
    let status = json(&dir.ok(&["topic", "subscriptions", "hooks"])[0]);
    assert_eq!(status["dead_lettered"], 1);
    assert_eq!(status["pending"], 0);
}

#[test]
fn exec_and_file_subscribers() {
    let dir = Dir::new();
    let outbox = dir.tmp.path().join("outbox.jsonl");
    let ran = dir.tmp.path().join("ran.txt");
    dir.ok(&["topic", "create", "jobs"]);
    dir.ok(&[
        "topic",
        "subscribe",
        "jobs",
        "--file",
        outbox.to_str().unwrap(),
    ]);
    dir.ok(&[
        "topic",
        "subscribe",
        "jobs",
        "--raw",
        "--exec",
        &format!(
            "cat >> '{}'; echo \" $SHOAL_TOPIC\" >> '{}'",
            ran.display(),
            ran.display()
        ),
    ]);
    // A command that fails is retried and then reported (no dead-letter queue): counted.
    dir.ok(&["topic", "subscribe", "jobs", "--exec", "exit 1"]);
    let out = check(dir.run(&["publish", "jobs", "a"]), 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
    // The failing command's retry is not due yet: this publish leaves it be.
    let out = check(dir.run(&["publish", "jobs", "b"]), 0);
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "a jobs\nb jobs\n");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&outbox)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["Message"], "b");
    assert_eq!(lines[1]["TopicArn"], "arn:aws:sns:local:000000000000:jobs");
    dir.ok(&["topic", "deliver", "--attempts", "2", "--min-delay", "1ms"]);
    let statuses: Vec<serde_json::Value> = dir
        .ok(&["topic", "subscriptions", "jobs"])
        .iter()
        .map(|l| json(l))
        .collect();
    assert_eq!(statuses[2]["failed"], 2);
    assert!(
        statuses[2]["last_failure"]
            .as_str()
            .unwrap()
            .contains("no dead-letter queue")
    );
    assert_eq!(statuses[0]["failed"], 0);
    // Nothing delivered twice.
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "a jobs\nb jobs\n");
}

#[test]
fn deliver_follow_is_the_dispatcher() {
    let dir = Dir::new();
    let (url, seen) = serve(1);
    dir.ok(&["topic", "create", "hooks"]);
    dir.ok(&["topic", "subscribe", "hooks", "--http", &url, "--raw"]);
    let _dispatcher = common::Reaped(
        dir.cmd(&["topic", "deliver", "--follow", "--min-delay", "10ms"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The publish's own attempt fails (the server's first answer is 500); the dispatcher,
    // woken by the publish, delivers it.
    dir.ok(&["publish", "hooks", "wake up"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "not delivered");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].1, "wake up");
    assert!(seen[1].0.contains("x-amz-sns-rawdelivery: true"));
}
