//! Queues used by many real processes at once, and killed with real SIGKILL.
//!
//! This binary has its own `main` (harness = false): the parent runs the scenarios, each of
//! which re-executes the binary with `SHOAL_CHILD=<role>` for its child processes.
//!
//! - `standard`: 4 producer and 4 consumer processes move 100,000 messages through one
//!   standard queue: every message is received and deleted, none twice (the visibility
//!   timeout is longer than the run, so none may come back).
//! - `fifo`: the same on a FIFO queue with 20 message groups (each producer owns 5): within
//!   each group the messages are received in the order sent, none twice.
//! - `crash-standard` and `crash-fifo`: in each round 4 sender and 4 receiver processes work
//!   one queue (a 300 ms visibility timeout, a dead-letter queue after 2 receives; receivers
//!   delete about 3 in 4 messages and leave the rest to come back) and each is SIGKILLed at
//!   its own random moment. After every round the directory opens and checks clean; at the
//!   end the queue and its dead-letter queue are drained, and the whole history (every send
//!   invoked and acknowledged, every receive with its times, every acknowledged delete) goes
//!   through the checker (cli/tests/common/checker.rs): no acknowledged send lost, nothing
//!   received that was not sent, no receive inside another's visibility timeout, none after
//!   an acknowledged delete, FIFO order per group, no message in both queue and DLQ.
//!
//! - `owner`: a child process owns a queue (`DirOptions::exclusive`, as a server opens its
//!   directory); deleting the queue from the parent fails with `Locked` and changes nothing,
//!   and goes through once the owner is SIGKILLed.
//!
//! `SHOAL_QUEUE_MESSAGES` (default 100000) sets the message count of the first two;
//! `SHOAL_CRASH_KEEP=1` keeps the crash tests' data directories for a post-mortem;
//! `SHOAL_QUEUE_CRASH_ROUNDS` (default 20) and `SHOAL_QUEUE_CRASH_SEED` (default: the time,
//! printed) the crash rounds and seed.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{QueueAttributes, Receive, RedrivePolicy, SendMessage};

mod crash_support;

use crash_support::checker::{History, QueueSpec};
use crash_support::{
    Child as Reaped, Rng, check_clean, child_receive, child_send, drain, env_u64, kill_at,
    record_receives, record_sends, seed,
};

const PRODUCERS: u64 = 4;
const CONSUMERS: u64 = 4;
const GROUPS: u64 = 20;
const CRASH_SENDERS: u64 = 4;
const CRASH_RECEIVERS: u64 = 4;
const CRASH_VISIBILITY_MS: u64 = 300;
const CRASH_MAX_RECEIVES: u32 = 2;

fn messages() -> u64 {
    std::env::var("SHOAL_QUEUE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn spawn(role: &str, args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("SHOAL_CHILD", role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The FIFO group of message `n` of the producer whose first message is `first`: each
/// producer owns `GROUPS / PRODUCERS` groups, so each group has one sender and one order.
fn group_of(n: u64, first: u64) -> u64 {
    let per_producer = GROUPS / PRODUCERS;
    let producer = first / (messages() / PRODUCERS);
    producer * per_producer + n % per_producer
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `produce DIR QUEUE FIRST COUNT`: sends bodies `FIRST..FIRST+COUNT` in batches of 10 (on a
/// FIFO queue, message `n` goes to group [`group_of`]), printing each acknowledged batch's last
/// number.
fn child_produce(args: &[String]) {
    let data = DataDir::open(&args[0]).unwrap();
    let queue = data.queue(&args[1]).unwrap();
    let first: u64 = args[2].parse().unwrap();
    let count: u64 = args[3].parse().unwrap();
    let fifo = args[1].ends_with(".fifo");
    let mut out = std::io::stdout().lock();
    let mut n = first;
    while n < first + count {
        let end = (n + 10).min(first + count);
        let batch: Vec<SendMessage> = (n..end)
            .map(|i| SendMessage {
                body: i.to_string(),
                group_id: fifo.then(|| format!("g{}", group_of(i, first))),
                dedup_id: fifo.then(|| i.to_string()),
                ..SendMessage::default()
            })
            .collect();
        queue.send_batch(&batch).unwrap();
        writeln!(out, "{}", end - 1).unwrap();
        out.flush().unwrap();
        n = end;
    }
}

/// `consume DIR QUEUE DONE_FILE [NODELETE]`: receives batches of 10 and deletes them, printing
/// `BODY RECEIVE_COUNT TIME_NS` per message (after receiving, before deleting), until the
/// queue is empty and `DONE_FILE` exists.
fn child_consume(args: &[String]) {
    let data = DataDir::open(&args[0]).unwrap();
    let queue = data.queue(&args[1]).unwrap();
    let done = Path::new(&args[2]);
    let delete = args.get(3).is_none_or(|a| a != "nodelete");
    let mut out = std::io::stdout().lock();
    loop {
        let finished = done.exists();
        let got = queue
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::from_millis(200)),
                visibility_timeout: None,
            })
            .unwrap();
        if got.is_empty() {
            if finished {
                return;
            }
            continue;
        }
        let at = now_ns();
        for m in &got {
            writeln!(out, "{} {} {at}", m.body, m.receive_count).unwrap();
        }
        out.flush().unwrap();
        if delete {
            let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
            for r in queue.delete_batch(&handles).unwrap() {
                r.unwrap();
            }
        }
    }
}

struct Received {
    body: u64,
    receive_count: u32,
    at: u128,
}

fn collect(child: Child) -> Vec<Received> {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "consumer failed: {:?}",
        output.status
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            Received {
                body: parts.next().unwrap().parse().unwrap(),
                receive_count: parts.next().unwrap().parse().unwrap(),
                at: parts.next().unwrap().parse().unwrap(),
            }
        })
        .collect()
}

/// Runs producers and consumers on `queue` and returns everything the consumers received.
fn run_many(root: &Path, queue: &str) -> Vec<Received> {
    let total = messages();
    let dir = root.to_str().unwrap();
    let done = root.join(format!("{queue}.done"));
    let done = done.to_str().unwrap();
    let started = Instant::now();
    let consumers: Vec<Child> = (0..CONSUMERS)
        .map(|_| spawn("consume", &[dir, queue, done]))
        .collect();
    let per = total / PRODUCERS;
    let producers: Vec<Child> = (0..PRODUCERS)
        .map(|p| {
            let first = (p * per).to_string();
            let count = if p == PRODUCERS - 1 {
                total - p * per
            } else {
                per
            };
            spawn("produce", &[dir, queue, &first, &count.to_string()])
        })
        .collect();
    for p in producers {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "producer failed");
    }
    std::fs::write(done, b"").unwrap();
    let received: Vec<Received> = consumers.into_iter().flat_map(collect).collect();
    println!(
        "{queue}: {total} messages through {PRODUCERS} producers and {CONSUMERS} consumers in {:.1?}",
        started.elapsed()
    );
    received
}

fn create(root: &Path, name: &str, attributes: QueueAttributes) {
    DataDir::open(root)
        .unwrap()
        .create_queue(name, &attributes)
        .unwrap();
}

fn standard() {
    let tmp = tempfile::tempdir().unwrap();
    create(
        tmp.path(),
        "jobs",
        QueueAttributes {
            visibility_timeout: Duration::from_secs(600),
            durability: DurabilityMode::Never,
            ..QueueAttributes::defaults(false)
        },
    );
    let received = run_many(tmp.path(), "jobs");
    let mut seen = HashSet::new();
    for r in &received {
        assert_eq!(r.receive_count, 1, "message {} came back", r.body);
        assert!(seen.insert(r.body), "message {} received twice", r.body);
    }
    assert_eq!(seen.len() as u64, messages(), "every message received");
    let queue = DataDir::open(tmp.path()).unwrap().queue("jobs").unwrap();
    let counts = queue.counts().unwrap();
    assert_eq!((counts.visible, counts.in_flight), (0, 0), "all deleted");
}

fn fifo() {
    let tmp = tempfile::tempdir().unwrap();
    create(
        tmp.path(),
        "jobs.fifo",
        QueueAttributes {
            visibility_timeout: Duration::from_secs(600),
            durability: DurabilityMode::Never,
            ..QueueAttributes::defaults(true)
        },
    );
    let mut received = run_many(tmp.path(), "jobs.fifo");
    received.sort_by_key(|r| r.at);
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut seen = HashSet::new();
    for r in &received {
        assert!(seen.insert(r.body), "message {} received twice", r.body);
        let per = messages() / PRODUCERS;
        let first = (r.body / per).min(PRODUCERS - 1) * per;
        let group = group_of(r.body, first);
        if let Some(previous) = last.insert(group, r.body) {
            assert!(
                previous < r.body,
                "group {group}: {} received after {previous}",
                r.body
            );
        }
    }
    assert_eq!(seen.len() as u64, messages(), "every message received");
}

/// `crash-standard` and `crash-fifo`: see the module doc.
fn crash(fifo: bool) {
    let (queue, dlq) = if fifo {
        ("crash.fifo", "crash-dlq.fifo")
    } else {
        ("crash", "crash-dlq")
    };
    let test = format!("crash-{}", if fifo { "fifo" } else { "standard" });
    let rounds = env_u64("SHOAL_QUEUE_CRASH_ROUNDS", 20);
    let seed = seed(&test, "SHOAL_QUEUE_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let mut root = tmp.path().to_path_buf();
    let _tmp = if std::env::var_os("SHOAL_CRASH_KEEP").is_some() {
        root = tmp.keep();
        println!("{test}: data directory {} kept", root.display());
        None
    } else {
        Some(tmp)
    };
    let root = root.as_path();
    let dir = root.to_str().unwrap().to_string();
    let data = DataDir::open(root).unwrap();
    data.create_queue(dlq, &QueueAttributes::defaults(fifo))
        .unwrap();
    data.create_queue(
        queue,
        &QueueAttributes {
            visibility_timeout: Duration::from_millis(CRASH_VISIBILITY_MS),
            redrive: Some(RedrivePolicy {
                dead_letter_queue: dlq.to_string(),
                max_receives: CRASH_MAX_RECEIVES,
            }),
            ..QueueAttributes::defaults(fifo)
        },
    )
    .unwrap();
    let mut history = History::new();
    history.queue(
        queue,
        QueueSpec {
            fifo,
            dead_letter: Some((dlq.to_string(), CRASH_MAX_RECEIVES)),
        },
    );
    history.queue(
        dlq,
        QueueSpec {
            fifo,
            dead_letter: None,
        },
    );
    let started = Instant::now();
    let mut acknowledged = 0;
    for round in 0..rounds {
        let context = format!("{test} round {round} (SHOAL_QUEUE_CRASH_SEED={seed})");
        let mut children = Vec::new();
        for id in 0..CRASH_SENDERS {
            let args = [&dir, queue, &round.to_string(), &id.to_string(), "0", "0"];
            let args: Vec<String> = args.iter().map(ToString::to_string).collect();
            children.push((Reaped::spawn("send", &args), 20 + rng.below(230)));
        }
        for _ in 0..CRASH_RECEIVERS {
            // Most receives are deleted; the rest come back after the visibility timeout
            // (in this round or a later one) and, received too often, go to the DLQ.
            let args = [
                dir.clone(),
                queue.to_string(),
                "0".into(),
                "0".into(),
                CRASH_VISIBILITY_MS.to_string(),
                "25".into(),
                rng.next().to_string(),
            ];
            children.push((Reaped::spawn("receive", &args), 20 + rng.below(230)));
        }
        let outputs = kill_at(children);
        for (i, (_, lines)) in outputs.iter().enumerate() {
            let i = i as u64;
            if i < CRASH_SENDERS {
                acknowledged += record_sends(&mut history, queue, round, i, lines);
            } else {
                record_receives(&mut history, queue, CRASH_VISIBILITY_MS, lines);
            }
        }
        // The directory opens, verifies clean, and both queues answer.
        check_clean(root, &context);
        let data = DataDir::open(root).unwrap();
        data.queue(queue).unwrap().counts().unwrap();
        data.queue(dlq).unwrap().counts().unwrap();
        history.assert_valid(&context);
    }
    // Everything left, in the queue (messages in flight come back) and then its DLQ.
    let data = DataDir::open(root).unwrap();
    let rounds_took = started.elapsed();
    let left = drain(&data, queue, 0, &mut history);
    let dead = drain(&data, dlq, 0, &mut history);
    history.drained(queue);
    history.drained(dlq);
    check_clean(root, &test);
    let stats = history.assert_valid(&format!("{test} (SHOAL_QUEUE_CRASH_SEED={seed})"));
    let mut receives: HashMap<&str, usize> = HashMap::new();
    for r in history.receives.iter().filter(|r| r.queue == queue) {
        *receives.entry(&r.id).or_default() += 1;
    }
    let again = receives.values().filter(|&&n| n > 1).count();
    assert!(acknowledged > 0, "{test}: nothing acknowledged");
    assert!(dead > 0, "{test}: nothing reached the dead-letter queue");
    assert!(
        again > 0,
        "{test}: no message came back after its visibility timeout"
    );
    println!(
        "{test}: {rounds} rounds of {CRASH_SENDERS} senders and {CRASH_RECEIVERS} receivers SIGKILLed in {rounds_took:.1?}, drained and checked in {:.1?}: {acknowledged} sends acknowledged ({} unknown), {} receives, {again} messages received again after their visibility timeout, {dead} dead-lettered, {left} drained at the end; history checked",
        started.elapsed() - rounds_took,
        stats.unknown,
        stats.receives,
    );
}

/// Child: owns queue `args[1]` of directory `args[0]` (`DirOptions::exclusive`, as a server
/// would), sends one message, says `ready`, and holds the queue open until its stdin closes.
fn child_own(args: &[String]) {
    let options = shoal_engine::DirOptions {
        exclusive: true,
        ..shoal_engine::DirOptions::default()
    };
    let dir = DataDir::open_with_options(
        &args[0],
        std::sync::Arc::new(shoal_engine::storage::FsStorage::new()),
        std::sync::Arc::new(shoal_engine::clock::SystemClock),
        options,
    )
    .unwrap();
    let queue = dir.queue(&args[1]).unwrap();
    queue.send(&SendMessage::new("held")).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(queue);
}

/// A queue owned by a running process is not deleted from under it: the delete fails with
/// `Locked` and changes nothing. Once the owner is SIGKILLed its locks go with it, and the
/// delete goes through.
fn owner() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    create(root, "owned", QueueAttributes::defaults(false));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("SHOAL_CHILD", "own")
        .args([root.to_str().unwrap(), "owned"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready, "ready\n", "the owner did not start");

    let dir = DataDir::open(root).unwrap();
    let refused = dir.delete_queue("owned");
    assert!(
        matches!(refused, Err(shoal_engine::Error::Locked { .. })),
        "deleting an owned queue: {refused:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let counts = dir.queue("owned").unwrap().counts().unwrap();
    assert_eq!(
        counts.visible, 1,
        "the queue and the owner's message are intact"
    );
    dir.delete_queue("owned").unwrap();
    assert!(matches!(
        dir.queue("owned"),
        Err(shoal_engine::Error::NotFound { .. })
    ));
    println!("owner: a delete refused while the owner ran, done once it was SIGKILLed");
}

fn main() {
    if let Ok(role) = std::env::var("SHOAL_CHILD") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match role.as_str() {
            "produce" => child_produce(&args),
            "consume" => child_consume(&args),
            "send" => child_send(&args),
            "receive" => child_receive(&args),
            "own" => child_own(&args),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    crash_support::run_scenarios(
        "queue_multiprocess",
        &[
            ("standard", standard),
            ("fifo", fifo),
            ("crash-standard", || crash(false)),
            ("crash-fifo", || crash(true)),
            ("owner", owner),
        ],
    );
}
