//! A topic's fan-out under real SIGKILL.
//!
//! This binary has its own `main` (harness = false): the parent runs the scenario and
//! re-executes the binary with `SHOAL_CHILD=publish` for the publishers.
//!
//! `crash`: a topic with 10 queue subscriptions; in each round two publisher processes
//! publish numbered messages one by one (printing each number once `publish` returned, that
//! is once the message is durable and fanned out) and are SIGKILLed at random moments, most
//! often in the middle of a fan-out. Then a `deliver` completes what the kills interrupted,
//! and every queue must hold every message of the topic log (so every acknowledged one)
//! exactly once.
//!
//! `SHOAL_TOPIC_CRASH_ROUNDS` (default 8) sets the number of rounds.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{QueueAttributes, Receive};
use shoal_engine::topic::{FilterScope, Protocol, PublishMessage, Subscribe, TopicAttributes};

const QUEUES: usize = 10;

fn spawn(role: &str, args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("SHOAL_CHILD", role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// `publish DIR FIRST`: publishes `FIRST, FIRST+1, ...` one by one, printing each number once
/// its publish returned.
fn child_publish(args: &[String]) {
    let data = DataDir::open(&args[0]).unwrap();
    let topic = data.topic("t").unwrap();
    let first: u64 = args[1].parse().unwrap();
    let mut out = std::io::stdout().lock();
    for n in first.. {
        topic.publish(&PublishMessage::new(n.to_string())).unwrap();
        writeln!(out, "{n}").unwrap();
        out.flush().unwrap();
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn kill(child: &mut Child) {
    // SIGKILL: no destructor, no flush, no unlock.
    child.kill().unwrap();
    child.wait().unwrap();
}

fn drain(data: &DataDir, queue: &str) -> Vec<u64> {
    let q = data.queue(queue).unwrap();
    let mut out = Vec::new();
    loop {
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: Some(Duration::from_secs(3600)),
            })
            .unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.iter().map(|m| m.body.parse::<u64>().unwrap()));
    }
}

fn crash() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.to_str().unwrap();
    let data = DataDir::open(root).unwrap();
    data.create_topic("t", &TopicAttributes::defaults(false))
        .unwrap();
    for i in 0..QUEUES {
        let name = format!("q{i}");
        data.create_queue(
            &name,
            &QueueAttributes {
                // A process crash loses nothing written; this only makes rounds faster.
                durability: DurabilityMode::Never,
                ..QueueAttributes::defaults(false)
            },
        )
        .unwrap();
        data.subscribe(
            "t",
            &Subscribe {
                protocol: Protocol::Queue,
                endpoint: name,
                raw: true,
                filter_policy: None,
                filter_scope: FilterScope::Attributes,
                dead_letter_queue: None,
            },
        )
        .unwrap();
    }
    let rounds: u64 = std::env::var("SHOAL_TOPIC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = now_ns() as u64;
    let mut rng = seed | 1;
    let mut acknowledged = BTreeMap::new();
    for round in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Two publishers at once, each with its own numbers.
        let mut children: Vec<Child> = (0..2)
            .map(|p| {
                spawn(
                    "publish",
                    &[dir, &((round * 2 + p) * 1_000_000).to_string()],
                )
            })
            .collect();
        let readers: Vec<_> = children
            .iter_mut()
            .map(|c| {
                let stdout = c.stdout.take().unwrap();
                std::thread::spawn(move || {
                    BufReader::new(stdout)
                        .lines()
                        .map_while(Result::ok)
                        .filter_map(|l| l.parse::<u64>().ok())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + rng % 250));
        for c in &mut children {
            kill(c);
        }
        for r in readers {
            for n in r.join().unwrap() {
                acknowledged.insert(n, round);
            }
        }
    }
    // What the kills interrupted is completed by a deliver (here in this process, as
    // `shoal topic deliver` would).
    let topic = DataDir::open(root).unwrap().topic("t").unwrap();
    for report in topic.deliver().unwrap() {
        assert_eq!(report.error, None, "{report:?}");
    }
    let mut published = BTreeSet::new();
    let mut from = 0;
    loop {
        let batch = topic.read(from, 10_000).unwrap();
        let Some(last) = batch.last() else { break };
        from = last.offset + 1;
        for m in &batch {
            assert!(
                published.insert(m.body.parse::<u64>().unwrap()),
                "published twice"
            );
        }
    }
    for n in acknowledged.keys() {
        assert!(
            published.contains(n),
            "acknowledged message {n} not in the topic log (seed {seed})"
        );
    }
    let mut completed = 0;
    for i in 0..QUEUES {
        let got = drain(&data, &format!("q{i}"));
        let set: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(
            set.len(),
            got.len(),
            "q{i}: a message delivered twice (seed {seed})"
        );
        assert_eq!(
            set, published,
            "q{i}: not every published message (seed {seed})"
        );
        completed += 1;
    }
    println!(
        "crash: {rounds} rounds of 2 publishers SIGKILLed during fan-out to {QUEUES} queues; {} acknowledged, {} in the topic log, each in all {completed} queues exactly once",
        acknowledged.len(),
        published.len()
    );
}

fn main() {
    if let Ok(role) = std::env::var("SHOAL_CHILD") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match role.as_str() {
            "publish" => child_publish(&args),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut passed = 0;
    if filter.is_empty() || filter.iter().any(|f| "crash".contains(f.as_str())) {
        crash();
        passed += 1;
    }
    println!("topic_multiprocess: {passed} passed, 0 failed");
}
