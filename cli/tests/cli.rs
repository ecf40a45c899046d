//! End-to-end tests of the `shoal` binary, each in its own data directory.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{Dir, Reaped, check, json, lines};

#[test]
fn data_dir_resolution_follows_the_contract() {
    let shoal = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.env_remove("SHOAL_DATA_DIR").env_remove("XDG_DATA_HOME");
        cmd
    };
    let text = |out: Output| String::from_utf8(out.stdout).unwrap();
    let out = shoal()
        .args(["data-dir", "-o", "text"])
        .env("HOME", "/home/u")
        .output()
        .unwrap();
    assert_eq!(text(out), "/home/u/.local/share/shoal\n");
    let out = shoal()
        .args(["data-dir", "-o", "text"])
        .env("HOME", "/home/u")
        .env("XDG_DATA_HOME", "/xdg")
        .output()
        .unwrap();
    assert_eq!(text(out), "/xdg/shoal\n");
    let out = shoal()
        .args(["data-dir"])
        .env("SHOAL_DATA_DIR", "/env dir")
        .output()
        .unwrap();
    assert_eq!(text(out), "{\"data_dir\":\"/env dir\"}\n");
    let out = shoal()
        .args(["--data-dir", "/flag", "data-dir", "-o", "text"])
        .env("SHOAL_DATA_DIR", "/env")
        .output()
        .unwrap();
    assert_eq!(text(out), "/flag\n");
}

#[test]
fn usage_errors_exit_2_and_bad_values_5_with_one_line_on_stderr() {
    let dir = Dir::new();
    let retention = [
        "stream",
        "create",
        "s",
        "--shards",
        "1",
        "--retention",
        "soon",
    ];
    for (args, code) in [
        (&["no-such-command"][..], 2),
        (&["stream", "create", "s"], 2),
        (&retention, 5),
    ] {
        let out = check(dir.run(args), code);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("error:"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn stream_round_trip() {
    let dir = Dir::new();
    let created = json(&dir.ok(&["stream", "create", "orders", "--shards", "3"])[0]);
    assert_eq!(created["stream_name"], "orders");
    assert_eq!(created["shards"].as_array().unwrap().len(), 3);
    assert_eq!(
        dir.ok(&["stream", "list"]),
        vec![r#"{"stream_name":"orders"}"#]
    );

    let put = json(&dir.ok(&["put", "orders", "hello world", "--partition-key", "user-1"])[0]);
    let first_seq = put["sequence_number"].as_str().unwrap().to_string();
    assert!(put["shard_id"].as_str().unwrap().starts_with("shardId-"));

    let input: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    let acks = lines(&check(
        dir.run_stdin(&["put", "orders", "--lines"], input.as_bytes()),
        0,
    ));
    assert_eq!(acks.len(), 1000);

    let json_input = concat!(
        r#"{"partition_key":"k1","data":"plain text"}"#,
        "\n",
        r#"{"partition_key":"k2","data_base64":"AAEC/w=="}"#,
        "\n"
    );
    let acks = lines(&check(
        dir.run_stdin(&["put", "orders", "--json-input"], json_input.as_bytes()),
        0,
    ));
    assert_eq!(acks.len(), 2);
    let binary_seq = json(&acks[1])["sequence_number"]
        .as_str()
        .unwrap()
        .to_string();

    let records: Vec<serde_json::Value> =
        dir.ok(&["get", "orders"]).iter().map(|l| json(l)).collect();
    assert_eq!(records.len(), 1003);
    let mut datas: Vec<String> = records
        .iter()
        .map(|r| r["data"].as_str().unwrap().to_string())
        .collect();
    datas.sort();
    assert!(datas.contains(&"aGVsbG8gd29ybGQ=".to_string()));
    let binary = records
        .iter()
        .find(|r| r["sequence_number"] == binary_seq.as_str())
        .unwrap();
    assert_eq!(binary["data"], "AAEC/w==");
    assert_eq!(binary["partition_key"], "k2");
    assert!(binary["arrival_timestamp"].as_str().unwrap().ends_with('Z'));

    // Iterators and limits.
    let at = dir.ok(&[
        "get",
        "orders",
        "--from",
        &format!("at:{first_seq}"),
        "--limit",
        "1",
    ]);
    assert_eq!(json(&at[0])["data"], "aGVsbG8gd29ybGQ=");
    assert_eq!(dir.ok(&["get", "orders", "--limit", "10"]).len(), 10);
    assert!(dir.ok(&["get", "orders", "--from", "latest"]).is_empty());
    assert_eq!(
        dir.ok(&["get", "orders", "--from", "time:2000-01-01T00:00:00Z"])
            .len(),
        1003
    );
    assert!(
        dir.ok(&["get", "orders", "--from", "time:2999-01-01T00:00:00Z"])
            .is_empty()
    );
    let per_shard: usize = (0..3)
        .map(|i| {
            dir.ok(&[
                "get",
                "orders",
                "--shard",
                &format!("shardId-00000000000{i}"),
            ])
            .len()
        })
        .sum();
    assert_eq!(per_shard, 1003);
    let raw = check(
        dir.run(&[
            "get",
            "orders",
            "--from",
            &format!("at:{first_seq}"),
            "--limit",
            "1",
            "--raw",
        ]),
        0,
    );
    assert_eq!(raw.stdout, b"hello world\n");

    // All of stdin is one record when there is no DATA argument.
    let out = check(
        dir.run_stdin(&["put", "orders", "-k", "blob"], b"multi\nline\n"),
        0,
    );
    let seq = json(&lines(&out)[0])["sequence_number"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = check(
        dir.run(&[
            "get",
            "orders",
            "--from",
            &format!("at:{seq}"),
            "--limit",
            "1",
            "--raw",
        ]),
        0,
    );
    assert_eq!(raw.stdout, b"multi\nline\n\n");

    dir.ok(&["stream", "delete", "orders"]);
    assert!(dir.ok(&["stream", "list"]).is_empty());
    check(dir.run(&["get", "orders"]), 3);
}

#[test]
fn rejected_commands_change_nothing_on_disk() {
    let dir = Dir::new();
    dir.ok(&[
        "stream",
        "create",
        "s",
        "--shards",
        "2",
        "--max-record-size",
        "1024",
    ]);
    dir.ok(&["put", "s", "first", "-k", "k"]);
    let before = dir.snapshot();
    let big = "x".repeat(1100);
    let long_key = "k".repeat(257);
    let cases: Vec<(Vec<&str>, &[u8], i32)> = vec![
        (vec!["put", "s", &big, "-k", "k"], b"", 5),
        (vec!["put", "s", "data", "-k", &long_key], b"", 5),
        (vec!["put", "s", "data", "-k", ""], b"", 5),
        (vec!["put", "s", "data"], b"", 5),
        (
            vec!["put", "s", "data", "-k", "k", "--explicit-hash-key=-1"],
            b"",
            5,
        ),
        (
            vec![
                "put",
                "s",
                "data",
                "-k",
                "k",
                "--explicit-hash-key",
                "340282366920938463463374607431768211456",
            ],
            b"",
            5,
        ),
        (vec!["put", "s", "--json-input"], b"{not json}\n", 5),
        (
            vec!["put", "s", "--json-input"],
            br#"{"partition_key":"k","data_base64":"!!"}"#,
            5,
        ),
        (
            vec!["put", "s", "--json-input"],
            br#"{"partition_key":"k"}"#,
            5,
        ),
        (vec!["put", "nope", "data", "-k", "k"], b"", 3),
        (vec!["get", "s", "--from", "at:12"], b"", 5),
        (vec!["get", "s", "--from", "sometime"], b"", 5),
        (vec!["get", "s", "--shard", "shardId-x"], b"", 5),
        (vec!["get", "s", "--shard", "shardId-000000000009"], b"", 3),
        (vec!["stream", "create", "s", "--shards", "1"], b"", 7),
        (vec!["stream", "create", "../evil", "--shards", "1"], b"", 5),
        (vec!["stream", "create", "a b", "--shards", "1"], b"", 5),
        (vec!["stream", "create", "t", "--shards", "0"], b"", 5),
        (
            vec![
                "stream",
                "create",
                "t",
                "--shards",
                "1",
                "--max-record-size",
                "20000000",
            ],
            b"",
            5,
        ),
        (
            vec![
                "reshard",
                "s",
                "merge",
                "shardId-000000000000",
                "shardId-000000000005",
            ],
            b"",
            3,
        ),
        (
            vec!["reshard", "s", "split", "shardId-000000000000", "--at", "0"],
            b"",
            5,
        ),
        (vec!["stream", "delete", "nope"], b"", 3),
    ];
    for (args, stdin, code) in cases {
        let out = dir.run_stdin(&args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error:") && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            dir.snapshot(),
            before,
            "{args:?} changed the data directory"
        );
    }
}

#[test]
fn follow_wakes_up_for_puts_from_another_process() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "2"]);
    let mut follower = Reaped(
        dir.cmd(&["get", "s", "--follow", "--raw"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = follower.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    for i in 0..5 {
        let data = format!("event-{i}");
        dir.ok(&["put", "s", &data, "-k", &format!("key-{i}")]);
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, data);
    }
    // It follows into children after a split.
    dir.ok(&["reshard", "s", "split", "shardId-000000000000"]);
    dir.ok(&["reshard", "s", "split", "shardId-000000000001"]);
    dir.ok(&["put", "s", "after-split", "-k", "key-1"]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "after-split"
    );
    drop(follower);
}

#[test]
fn puts_from_several_processes_survive_concurrent_reshards() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "2"]);
    let producers = 3;
    let per_producer = 1500;
    let mut children = Vec::new();
    for p in 0..producers {
        let input: String = (0..per_producer)
            .map(|i| {
                format!(
                    "{{\"partition_key\":\"key-{}\",\"data\":\"{p}-{i}\"}}\n",
                    i % 7
                )
            })
            .collect();
        let mut child = dir
            .cmd(&["put", "s", "--json-input"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Feed slowly so the puts span the reshards.
        std::thread::spawn(move || {
            for chunk in input.as_bytes().chunks(2000) {
                stdin.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        children.push(child);
    }
    dir.ok(&["reshard", "s", "split", "shardId-000000000000"]);
    dir.ok(&[
        "reshard",
        "s",
        "merge",
        "shardId-000000000002",
        "shardId-000000000003",
    ]);
    dir.ok(&["reshard", "s", "scale", "--shards", "3"]);
    dir.ok(&["reshard", "s", "split", "shardId-000000000006"]);
    let mut acked: HashMap<String, (String, String)> = HashMap::new();
    for child in children {
        let out = check(child.wait_with_output().unwrap(), 0);
        let acks = lines(&out);
        assert_eq!(acks.len(), per_producer);
        for ack in acks {
            let v = json(&ack);
            let seq = v["sequence_number"].as_str().unwrap().to_string();
            let shard = v["shard_id"].as_str().unwrap().to_string();
            assert!(
                acked.insert(seq.clone(), (shard, seq)).is_none(),
                "duplicate sequence number"
            );
        }
    }
    let records: Vec<serde_json::Value> = dir.ok(&["get", "s"]).iter().map(|l| json(l)).collect();
    assert_eq!(
        records.len(),
        producers * per_producer,
        "every put is stored exactly once"
    );
    for r in &records {
        let seq = r["sequence_number"].as_str().unwrap();
        let (shard, _) = acked
            .get(seq)
            .expect("nothing stored that was not acknowledged");
        assert_eq!(r["shard_id"].as_str().unwrap(), shard);
    }
    // Per producer and key, reading parents before children gives put order.
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    for r in &records {
        let data = r["data"].as_str().unwrap();
        let text = String::from_utf8(base64_decode(data)).unwrap();
        let (producer, i) = text.split_once('-').unwrap();
        let i: u64 = i.parse().unwrap();
        let key = (
            producer.to_string(),
            r["partition_key"].as_str().unwrap().to_string(),
        );
        if let Some(prev) = last.insert(key.clone(), i) {
            assert!(prev < i, "{key:?}: {prev} read before {i}");
        }
    }
    let described = json(&dir.ok(&["stream", "describe", "s"])[0]);
    assert_eq!(described["open_shard_count"], 4);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn sequence_numbers(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| json(l)["sequence_number"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn consumer_group_workers_share_shards_exactly_once_and_keep_key_order() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "6"]);
    let first: String = (0..1500)
        .map(|i| {
            format!(
                "{{\"partition_key\":\"key-{}\",\"data\":\"a-{i}\"}}\n",
                i % 11
            )
        })
        .collect();
    let mut acks = lines(&check(
        dir.run_stdin(&["put", "s", "--json-input"], first.as_bytes()),
        0,
    ));
    // Two reshards: children hold later records of the same keys; 8 open shards at the end.
    dir.ok(&["reshard", "s", "split", "shardId-000000000000"]);
    dir.ok(&["reshard", "s", "split", "shardId-000000000001"]);
    let second: String = (0..1500)
        .map(|i| {
            format!(
                "{{\"partition_key\":\"key-{}\",\"data\":\"b-{i}\"}}\n",
                i % 11
            )
        })
        .collect();
    acks.extend(lines(&check(
        dir.run_stdin(&["put", "s", "--json-input"], second.as_bytes()),
        0,
    )));
    assert_eq!(
        json(&dir.ok(&["stream", "describe", "s"])[0])["open_shard_count"],
        8
    );
    // Three workers, started together; each stops once the group has caught up.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            dir.cmd(&["consume", "s", "--group", "app"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Drain every worker's output at once: a worker blocked on a full pipe would hold its
    // leases and keep the others from catching up.
    let readers: Vec<_> = workers
        .into_iter()
        .map(|w| std::thread::spawn(move || lines(&check(w.wait_with_output().unwrap(), 0))))
        .collect();
    let mut delivered: Vec<String> = Vec::new();
    let mut per_worker = Vec::new();
    for reader in readers {
        let out = reader.join().unwrap();
        per_worker.push(out.len());
        delivered.extend(out);
    }
    let mut seqs = sequence_numbers(&delivered);
    seqs.sort();
    let mut expected = sequence_numbers(&acks);
    expected.sort();
    assert_eq!(
        seqs, expected,
        "every record exactly once across the workers {per_worker:?}"
    );
    // A second run of the group finds nothing left.
    assert!(dir.ok(&["consume", "s", "--group", "app"]).is_empty());
    // One worker alone: per key, parents' records come before their children's.
    let single = dir.ok(&["consume", "s", "--group", "ordered"]);
    assert_eq!(single.len(), 3000);
    let mut last: HashMap<String, (bool, u64)> = HashMap::new();
    for line in &single {
        let v = json(line);
        let text = String::from_utf8(base64_decode(v["data"].as_str().unwrap())).unwrap();
        let (round, i) = text.split_once('-').unwrap();
        let now = (round == "b", i.parse::<u64>().unwrap());
        if let Some(prev) = last.insert(v["partition_key"].as_str().unwrap().to_string(), now) {
            assert!(prev < now, "{text} after {prev:?}");
        }
    }
    // --limit stops after that many, and the next worker continues from the checkpoint.
    assert_eq!(
        dir.ok(&["consume", "s", "--group", "limited", "--limit", "7"])
            .len(),
        7
    );
    assert_eq!(dir.ok(&["consume", "s", "--group", "limited"]).len(), 2993);
}

#[test]
fn a_sigkilled_worker_loses_nothing_and_its_shards_move_on() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "8"]);
    let input: String = (0..240).map(|i| format!("r{i}\n")).collect();
    check(dir.run_stdin(&["put", "s", "--lines"], input.as_bytes()), 0);
    let out_dir = dir.tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let spawn_worker = |n: usize| {
        let file = out_dir.join(format!("worker-{n}"));
        let script = format!("cat >> '{}'; echo >> '{}'", file.display(), file.display());
        dir.cmd(&[
            "consume", "s", "--group", "app", "--follow", "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
    };
    let mut workers: Vec<Reaped> = (0..3).map(|n| Reaped(spawn_worker(n))).collect();
    let delivered = |out_dir: &Path| -> Vec<String> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(out_dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            // A killed worker's script may still run `echo` with no record on its stdin
            // (the worker died before writing it): an empty line, not a delivery.
            all.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
        all
    };
    // Kill one worker once the group is under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered(&out_dir).len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "workers made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    workers[0].0.kill().unwrap(); // SIGKILL
    workers[0].0.wait().unwrap();
    loop {
        let mut unique = delivered(&out_dir);
        unique.sort();
        unique.dedup();
        if unique.len() == 240 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 240 records delivered after the kill",
            unique.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(workers);
    let all = delivered(&out_dir);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    let expected: std::collections::BTreeSet<String> = (0..240).map(|i| format!("r{i}")).collect();
    assert_eq!(
        unique
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    // Redelivery is bounded by what was in flight: at most one record per shard the killed
    // worker held (plus any the last two were running when they were stopped).
    assert!(
        all.len() <= 240 + 8 + 2,
        "{} deliveries for 240 records",
        all.len()
    );
}

#[test]
fn enforced_limits_throttle_with_exit_4() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "1", "--enforce-limits"]);
    // 1000 records per second per shard: 2500 lines cannot all fit unless the run spans
    // more than two second boundaries.
    let input: String = (0..2500).map(|i| format!("{i}\n")).collect();
    let out = dir.run_stdin(&["put", "s", "--lines", "-k", "one-key"], input.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.starts_with("error: ProvisionedThroughputExceeded"),
        "{stderr}"
    );
    let acked = lines(&out).len();
    assert!((1000..2500).contains(&acked), "{acked} acknowledged");
    assert_eq!(acked % 500, 0, "a throttled batch writes nothing");
    // Exactly the acknowledged records are stored.
    assert_eq!(dir.ok(&["get", "s"]).len(), acked);
}

#[test]
fn check_finds_flipped_bits_and_names_the_file_and_byte() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "1"]);
    let input: String = (0..300).map(|i| format!("record number {i}\n")).collect();
    check(
        dir.run_stdin(&["put", "s", "--lines", "-k", "k"], input.as_bytes()),
        0,
    );
    // A second batch, far enough along to get an index entry.
    check(
        dir.run_stdin(&["put", "s", "--lines", "-k", "k"], input.as_bytes()),
        0,
    );
    dir.ok(&["consume", "s", "--group", "g", "--limit", "10"]);
    // A clean directory: nothing printed, exit 0.
    let clean = check(dir.run(&["check"]), 0);
    assert!(clean.stdout.is_empty());

    // Flip one byte inside the 100th record's payload.
    let segment = dir
        .path()
        .join("streams/s/shards/000000000000/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let mut position = 64usize;
    for _ in 0..99 {
        let payload = u32::from_le_bytes(bytes[position + 4..position + 8].try_into().unwrap());
        let header = u16::from_le_bytes(bytes[position + 24..position + 26].try_into().unwrap());
        position += 32 + usize::from(header) + payload as usize;
    }
    bytes[position + 36] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let before = dir.snapshot();
    let out = check(dir.run(&["check"]), 6);
    let problems = lines(&out);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = json(&problems[0]);
    assert_eq!(problem["file"], segment.to_str().unwrap());
    assert_eq!(problem["offset"], position as u64);
    assert!(problem["kind"].as_str().unwrap().contains("checksum"));
    assert_eq!(dir.snapshot(), before, "check changes nothing");
    // A reader meets the damage with exit 6 naming the file and byte; what is before it reads.
    let out = dir.run(&["get", "s"]);
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("00000000000000000000.log") && stderr.contains(&format!("byte {position}")),
        "{stderr}"
    );
    assert_eq!(
        lines(&out).len(),
        99,
        "the records before the damage were printed"
    );
    std::fs::write(&segment, {
        bytes[position + 36] ^= 0x20;
        &bytes
    })
    .unwrap();
    check(dir.run(&["check"]), 0);

    // A damaged index entry and a damaged stream map are reported too.
    let index = segment.with_extension("index");
    let mut entries = std::fs::read(&index).unwrap();
    assert!(entries.len() > 64, "the index has entries");
    entries[64 + 4] ^= 0x01;
    std::fs::write(&index, &entries).unwrap();
    let meta = dir.path().join("streams/s/stream.meta");
    let mut map = std::fs::read(&meta).unwrap();
    let last = map.len() - 1;
    map[last] ^= 0x01;
    std::fs::write(&meta, &map).unwrap();
    let out = check(dir.run(&["check"]), 6);
    let files: Vec<String> = lines(&out)
        .iter()
        .map(|l| json(l)["file"].as_str().unwrap().to_string())
        .collect();
    assert!(
        files.contains(&index.to_str().unwrap().to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&meta.to_str().unwrap().to_string()),
        "{files:?}"
    );
}

#[test]
fn a_worker_stopped_by_sigterm_checkpoints_first_so_nothing_repeats() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "3"]);
    let input: String = (0..150).map(|i| format!("r{i}\n")).collect();
    check(dir.run_stdin(&["put", "s", "--lines"], input.as_bytes()), 0);
    let out = dir.tmp.path().join("out");
    let script = format!("cat >> '{0}'; echo >> '{0}'", out.display());
    let delivered = || -> Vec<String> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    // Stop a following worker three times midway with SIGTERM, restarting it each time.
    for round in 1..=3 {
        let worker = dir
            .cmd(&[
                "consume", "s", "--group", "g", "--follow", "--", "sh", "-c", &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut worker = Reaped(worker);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while delivered().len() < round * 30 {
            assert!(
                std::time::Instant::now() < deadline,
                "no progress in round {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = Command::new("kill")
            .args(["-TERM", &worker.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = worker.0.wait().unwrap();
        assert!(exit.success(), "a SIGTERM stop is clean: {exit}");
    }
    // A last worker finishes the rest.
    dir.ok(&["consume", "s", "--group", "g", "--", "sh", "-c", &script]);
    let mut all = delivered();
    assert_eq!(all.len(), 150, "each record exactly once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 150);
}

#[test]
fn put_lines_acknowledges_a_slow_producers_lines_as_they_come() {
    use std::io::{BufRead, BufReader, Write};
    let dir = Dir::new();
    dir.ok(&["stream", "create", "s", "--shards", "1"]);
    let mut child = dir
        .cmd(&["put", "s", "--lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Each line is acknowledged while the producer still holds stdin open.
    for n in 0..3 {
        writeln!(stdin, "line {n}").unwrap();
        stdin.flush().unwrap();
        let ack = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("line {n} was not acknowledged"));
        assert!(json(&ack)["sequence_number"].is_string(), "{ack}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(dir.ok(&["get", "s"]).len(), 3);
}
