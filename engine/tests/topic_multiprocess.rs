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
//! The whole history (each publish invoked and acknowledged, as a send to each of the 10
//! queues; each queue drained at the end, receives with their times and deletes) goes
//! through the Jepsen-style checker (cli/tests/common/checker.rs): nothing acknowledged lost
//! in any queue, nothing in a queue that was not published, nothing twice; after every
//! round the data directory opens and checks clean.
//!
//! `SHOAL_TOPIC_CRASH_ROUNDS` (default 20) and `SHOAL_TOPIC_CRASH_SEED` (default: the time,
//! printed) set the rounds and the seed.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::QueueAttributes;
use shoal_engine::topic::{FilterScope, Protocol, PublishMessage, Subscribe, TopicAttributes};

const QUEUES: usize = 10;

mod crash_support;

use crash_support::checker::{History, QueueSpec};
use crash_support::{Child, Rng, check_clean, drain, env_u64, kill_at, seed};

/// `publish DIR FIRST`: publishes `FIRST, FIRST+1, ...` one by one, printing `I N` before each
/// publish and `N` once it returned.
fn child_publish(args: &[String]) {
    let data = DataDir::open(&args[0]).unwrap();
    let topic = data.topic("t").unwrap();
    let first: u64 = args[1].parse().unwrap();
    let mut out = std::io::stdout().lock();
    for n in first.. {
        writeln!(out, "I {n}").unwrap();
        out.flush().unwrap();
        topic.publish(&PublishMessage::new(n.to_string())).unwrap();
        writeln!(out, "{n}").unwrap();
        out.flush().unwrap();
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
    let rounds = env_u64("SHOAL_TOPIC_CRASH_ROUNDS", 20);
    let seed = seed("crash", "SHOAL_TOPIC_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let mut history = History::new();
    let queues: Vec<String> = (0..QUEUES).map(|i| format!("q{i}")).collect();
    for q in &queues {
        history.queue(q, QueueSpec::default());
    }
    let mut acknowledged = BTreeMap::new();
    for round in 0..rounds {
        // Two publishers at once, each with its own numbers, each killed at its own moment.
        let children: Vec<(Child, u64)> = (0..2)
            .map(|p| {
                let first = ((round * 2 + p) * 1_000_000).to_string();
                let child = Child::spawn("publish", &[dir.to_string(), first]);
                (child, 30 + rng.below(250))
            })
            .collect();
        for (_, lines) in kill_at(children) {
            let mut invoked = BTreeMap::new();
            for line in lines {
                if let Some(n) = line.strip_prefix("I ") {
                    let n: u64 = n.parse().unwrap();
                    let writes: Vec<usize> = queues
                        .iter()
                        .map(|q| history.invoke(q, &n.to_string(), n.to_string().as_bytes()))
                        .collect();
                    invoked.insert(n, writes);
                } else {
                    let n: u64 = line.parse().unwrap();
                    for &w in &invoked[&n] {
                        history.ok(w);
                    }
                    acknowledged.insert(n, round);
                }
            }
        }
        check_clean(
            root,
            &format!("crash round {round} (SHOAL_TOPIC_CRASH_SEED={seed})"),
        );
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
    for q in &queues {
        drain(&data, q, 0, &mut history);
        history.drained(q);
        let got: Vec<u64> = history
            .receives
            .iter()
            .filter(|r| &r.queue == q)
            .map(|r| r.id.parse().unwrap())
            .collect();
        let set: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(
            set.len(),
            got.len(),
            "{q}: a message delivered twice (seed {seed})"
        );
        assert_eq!(
            set, published,
            "{q}: not every published message (seed {seed})"
        );
        completed += 1;
    }
    check_clean(root, "crash");
    history.assert_valid(&format!("crash (SHOAL_TOPIC_CRASH_SEED={seed})"));
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
    crash_support::run_scenarios("topic_multiprocess", &[("crash", crash)]);
}
