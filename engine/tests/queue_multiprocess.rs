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
//! - `crash`: a producer sending with `always` durability and a consumer are SIGKILLed at
//!   random moments; every acknowledged send is later received, and the killed consumer's
//!   undeleted messages come back after their visibility timeout.
//!
//! `SHOAL_QUEUE_MESSAGES` (default 100000) sets the message count of the first two.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{QueueAttributes, Receive, SendMessage};

const PRODUCERS: u64 = 4;
const CONSUMERS: u64 = 4;
const GROUPS: u64 = 20;

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

fn kill(child: &mut Child) {
    // SIGKILL: no destructor, no flush, no unlock.
    child.kill().unwrap();
    child.wait().unwrap();
}

fn crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    create(
        tmp.path(),
        "crash",
        QueueAttributes {
            visibility_timeout: Duration::from_secs(1),
            ..QueueAttributes::defaults(false)
        },
    );
    let rounds: u64 = std::env::var("SHOAL_QUEUE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed = now_ns() as u64;
    let mut rng = seed;
    let mut acknowledged = BTreeMap::new();
    let mut next = 0u64;
    let never = tmp.path().join("never");
    let never = never.to_str().unwrap();
    for round in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut producer = spawn("produce", &[dir, "crash", &next.to_string(), "1000000"]);
        // A consumer that receives and never deletes, killed too: its messages come back.
        let mut consumer = spawn("consume", &[dir, "crash", never, "nodelete"]);
        let stdout = producer.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.parse::<u64>().ok())
                .last()
        });
        std::thread::sleep(Duration::from_millis(20 + rng % 200));
        kill(&mut producer);
        kill(&mut consumer);
        let last = reader.join().unwrap();
        if let Some(last) = last {
            for n in next..=last {
                acknowledged.insert(n, round);
            }
            next = last + 1;
        }
        // Bodies past the last acknowledged one may or may not be stored; start the next
        // round past anything the killed producer might have written.
        next += 1_000_000;
    }
    // After the killed consumer's visibility timeouts every acknowledged message is there.
    std::thread::sleep(Duration::from_millis(1100));
    let done = tmp.path().join("done");
    std::fs::write(&done, b"").unwrap();
    let received = collect(spawn("consume", &[dir, "crash", done.to_str().unwrap()]));
    let got: HashSet<u64> = received.iter().map(|r| r.body).collect();
    for n in acknowledged.keys() {
        assert!(
            got.contains(n),
            "acknowledged message {n} lost (seed {seed})"
        );
    }
    println!(
        "crash: {rounds} SIGKILL rounds of a producer and a consumer, {} acknowledged messages all received",
        acknowledged.len()
    );
}

fn main() {
    if let Ok(role) = std::env::var("SHOAL_CHILD") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match role.as_str() {
            "produce" => child_produce(&args),
            "consume" => child_consume(&args),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let scenarios: [(&str, fn()); 3] = [("standard", standard), ("fifo", fifo), ("crash", crash)];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut passed = 0;
    for (name, scenario) in scenarios {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            scenario();
            passed += 1;
        }
    }
    println!("queue_multiprocess: {passed} passed, 0 failed");
}
