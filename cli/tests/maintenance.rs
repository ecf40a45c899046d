//! The maintenance commands: `shoal check` finds damage in a queue's files, `shoal check
//! --repair` mends it, and `shoal compact` reports what it gave back per queue.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{Dir, check, json, lines};

#[test]
fn check_names_a_flipped_bit_in_a_queue_message_segment() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "jobs"]);
    for i in 0..5 {
        dir.ok(&["send", "jobs", &format!("message {i}")]);
    }
    let received = dir.ok(&["receive", "jobs"]);
    let handle = json(&received[0])["receipt_handle"]
        .as_str()
        .unwrap()
        .to_string();
    dir.ok(&["delete", "jobs", &handle]);
    let clean = check(dir.run(&["check"]), 0);
    assert!(clean.stdout.is_empty());

    // One bit inside the second message's record.
    let segment = dir
        .path()
        .join("queues/jobs/messages/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len =
        32 + usize::from(u16::from_le_bytes(
            bytes[64 + 24..64 + 26].try_into().unwrap(),
        )) + u32::from_le_bytes(bytes[64 + 4..64 + 8].try_into().unwrap()) as usize;
    let position = 64 + first_len;
    bytes[position + 40] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();

    let before = dir.snapshot();
    let out = check(dir.run(&["check"]), 6);
    let problems = lines(&out);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = json(&problems[0]);
    assert_eq!(problem["file"], segment.to_str().unwrap());
    assert_eq!(problem["offset"], position as u64);
    assert!(
        problem["kind"].as_str().unwrap().contains("checksum"),
        "{problem}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: 1 problem"), "{stderr}");
    assert_eq!(dir.snapshot(), before, "check changes nothing");

    // Text output: file, byte, what.
    let out = check(dir.run(&["-o", "text", "check"]), 6);
    let text = lines(&out);
    assert_eq!(text.len(), 1);
    assert!(
        text[0].starts_with(&format!("{}\t{position}\t", segment.display())),
        "{text:?}"
    );

    // Put the bit back: healthy again.
    bytes[position + 40] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    check(dir.run(&["check"]), 0);
}

#[test]
fn check_names_damaged_queue_attributes() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "jobs"]);
    let meta = dir.path().join("queues/jobs/queue.meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&meta, &bytes).unwrap();
    let out = check(dir.run(&["check"]), 6);
    let problems = lines(&out);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(json(&problems[0])["file"], meta.to_str().unwrap());
}

const KEYS: [&str; 5] = [
    "queue",
    "segments_removed",
    "segments_compacted",
    "journal_segments_removed",
    "bytes_freed",
];

#[test]
fn compact_reports_per_queue_and_a_second_run_frees_nothing() {
    let dir = Dir::new();
    // No queues: nothing to do, nothing printed.
    assert!(dir.ok(&["compact"]).is_empty());

    dir.ok(&["queue", "create", "a"]);
    dir.ok(&[
        "queue",
        "create",
        "b.fifo",
        "--fifo",
        "--content-based-dedup",
    ]);
    let input: String = (0..50).map(|i| format!("line {i}\n")).collect();
    check(
        dir.run_stdin(&["send", "a", "--lines"], input.as_bytes()),
        0,
    );
    for _ in 0..3 {
        let got = dir.ok(&["receive", "a", "--max", "10", "--delete"]);
        assert_eq!(got.len(), 10);
    }

    let all = dir.ok(&["compact"]);
    assert_eq!(all.len(), 2, "{all:?}");
    for (line, name) in all.iter().zip(["a", "b.fifo"]) {
        let v = json(line);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, KEYS, "{line}");
        assert_eq!(v["queue"], name);
        for key in &KEYS[1..] {
            assert!(v[key].is_u64(), "{line}");
        }
    }
    // Everything there was to give back is gone: a second run frees nothing.
    let again = dir.ok(&["compact", "a"]);
    assert_eq!(again.len(), 1);
    let v = json(&again[0]);
    assert_eq!(v["queue"], "a");
    assert_eq!(v["bytes_freed"], 0, "{v}");
    assert_eq!(v["segments_removed"], 0, "{v}");
    assert_eq!(v["segments_compacted"], 0, "{v}");
    assert_eq!(v["journal_segments_removed"], 0, "{v}");

    // The queue is as it was: 20 messages left, and the data directory checks clean.
    let left = dir.ok(&["queue", "attributes", "a"]);
    assert_eq!(
        json(&left[0])["approximate_number_of_messages"],
        20,
        "{left:?}"
    );
    check(dir.run(&["check"]), 0);

    // Text: name and the four numbers, tab-separated.
    let text = dir.ok(&["-o", "text", "compact", "b.fifo"]);
    assert_eq!(text, ["b.fifo\t0\t0\t0\t0"]);
}

#[test]
fn compact_of_a_missing_queue_is_not_found_and_of_a_bad_name_invalid() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "a"]);
    let out = check(dir.run(&["compact", "missing"]), 3);
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("missing"),
        "{stderr}"
    );
    check(dir.run(&["compact", "../a"]), 5);
}

#[test]
fn check_repair_keeps_the_intact_records_names_the_lost_ones_and_keeps_the_original() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "orders", "--shards", "1"]);
    let input: String = (0..10).map(|i| format!("record {i}\n")).collect();
    check(
        dir.run_stdin(&["put", "orders", "--lines", "-k", "k"], input.as_bytes()),
        0,
    );
    // A bit inside the seventh record of the shard's only (active) segment.
    let segment = dir
        .path()
        .join("streams/orders/shards/000000000000/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let mut position = 64;
    for _ in 0..6 {
        let len =
            32 + usize::from(u16::from_le_bytes(
                bytes[position + 24..position + 26].try_into().unwrap(),
            )) + u32::from_le_bytes(bytes[position + 4..position + 8].try_into().unwrap()) as usize;
        position += len;
    }
    bytes[position + 33] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let damaged = bytes.clone();
    check(dir.run(&["check"]), 6);

    let out = check(dir.run(&["check", "--repair"]), 6);
    let printed: Vec<serde_json::Value> = lines(&out).iter().map(|l| json(l)).collect();
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert_eq!(printed[0]["file"], segment.to_str().unwrap());
    assert_eq!(printed[0]["offset"], position as u64);
    let repair = &printed[1];
    assert_eq!(repair["repaired"], segment.to_str().unwrap());
    assert_eq!(repair["action"], "segment-salvaged");
    assert_eq!(repair["lost_offsets"], serde_json::json!([6, 10]));
    let original = repair["original"].as_str().unwrap();
    assert!(
        original.starts_with(dir.path().join("lost+found").to_str().unwrap()),
        "{original}"
    );
    assert_eq!(std::fs::read(original).unwrap(), damaged);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: 1 problem(s) found, 1 repair(s) made, 4 offset(s) lost"),
        "{stderr}"
    );

    // Healthy now; the first six records read back and new ones follow them.
    check(dir.run(&["check"]), 0);
    check(dir.run(&["check", "--repair"]), 0);
    dir.ok(&["put", "orders", "record 10", "-k", "k"]);
    let data: Vec<String> = dir
        .ok(&["get", "orders"])
        .iter()
        .map(|l| json(l)["data"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = [0, 1, 2, 3, 4, 5, 10]
        .iter()
        .map(|i| base64_of(&format!("record {i}")))
        .collect();
    assert_eq!(data, expected);
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn a_queue_with_a_damaged_message_delivers_what_came_before_and_refuses_the_rest_until_repaired() {
    let dir = Dir::new();
    dir.ok(&["queue", "create", "jobs"]);
    dir.ok(&["send", "jobs", "first"]);
    dir.ok(&["send", "jobs", "second"]);
    // A bit in the second message, inside what the log has already synced: the log no longer
    // opens for writing.
    let segment = dir
        .path()
        .join("queues/jobs/messages/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    // The segment may end in zeros written ahead of the data (a prefill): flip a byte of the
    // last message, not of those.
    let last = bytes.iter().rposition(|&b| b != 0).unwrap() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let got = dir.ok(&["receive", "jobs", "--max", "10", "--delete"]);
    assert_eq!(got.len(), 1);
    assert_eq!(json(&got[0])["body"], "first");
    for args in [&["receive", "jobs"][..], &["send", "jobs", "third"]] {
        let out = check(dir.run(args), 6);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: corruption in {}", segment.display())),
            "{args:?}: {stderr}"
        );
    }

    let out = check(dir.run(&["check", "--repair"]), 6);
    assert!(
        lines(&out)
            .iter()
            .any(|l| json(l)["lost_offsets"] == serde_json::json!([1, 2])),
        "{:?}",
        lines(&out)
    );
    check(dir.run(&["check"]), 0);
    dir.ok(&["send", "jobs", "third"]);
    let got = dir.ok(&["receive", "jobs", "--max", "10"]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(json(&got[0])["body"], "third");
}

#[test]
fn stats_prints_a_line_per_resource_then_the_total() {
    let dir = Dir::new();
    dir.ok(&["stream", "create", "clicks", "--shards", "2"]);
    let input: String = (0..25).map(|i| format!("click {i}\n")).collect();
    check(
        dir.run_stdin(&["put", "clicks", "--lines"], input.as_bytes()),
        0,
    );
    dir.ok(&["queue", "create", "jobs"]);
    dir.ok(&["send", "jobs", "one"]);
    dir.ok(&["topic", "create", "news"]);
    let lines: Vec<serde_json::Value> = dir.ok(&["stats"]).iter().map(|l| json(l)).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["stream"], "clicks");
    assert_eq!(lines[0]["records"], 25);
    assert_eq!(lines[0]["open_shards"], 2);
    assert_eq!(lines[1]["queue"], "jobs");
    assert_eq!(lines[1]["visible"], 1);
    assert_eq!(lines[2]["topic"], "news");
    assert_eq!(lines[2]["subscriptions"], 0);
    let parts: u64 = lines[..3]
        .iter()
        .map(|l| l["disk"]["bytes"].as_u64().unwrap())
        .sum();
    let total = lines[3]["total"]["bytes"].as_u64().unwrap();
    assert!(
        total > parts,
        "{total} <= {parts}: the total also counts shoal.format and locks"
    );
    let on_disk: u64 = dir.snapshot().values().map(|b| b.len() as u64).sum();
    assert_eq!(total, on_disk);
}
