//! Queue benchmarks: `cargo bench -p shoal-benches --bench queue` (figures in BENCHMARKS.md;
//! `benches/run-queue-bench.sh` builds the `shoal` binary first so the CLI groups run too).
//!
//! Groups:
//! - `queue_engine`: through the engine API (`DataDir` -> `Queue`), 100-byte messages:
//!   `send` of a batch of 10, and the full cycle `send` 10 + `receive` 10 + `delete` 10, in
//!   `never` and `always` durability, each with the per-operation cross-process lock (any
//!   process may use the queue) and `_exclusive` (the process owns the directory,
//!   `DirOptions::exclusive`); throughput in messages.
//! - `queue_engine_threads`: `always` durability, 8 threads sending at once (batches of 1 and
//!   of 10, shared and exclusive), where group commit lets concurrent sends share an
//!   fdatasync; one iteration is one send per thread.
//! - `queue_cli`: wall time of whole `shoal` processes (start included): `shoal send` of one
//!   message, and `shoal receive --delete` of one, on an empty queue and on one holding
//!   1,000,000 messages (the backlog must not make either slower). Skipped unless
//!   `target/release/shoal` exists (or `SHOAL_BIN` names the binary).
//! - `queue_long_poll`: how long after a send a receiver blocked in `receive` (long polling,
//!   in another thread of the same process, through its own handle) returns it.
//! - `queue_open`: a new `DataDir` + queue handle + `receive` of one message, as each CLI
//!   process does, on queues holding 1,000 and 1,000,000 messages (open cost vs backlog).
//!
//! Set `SHOAL_BENCH_DIR` to put the data directories somewhere other than the temp dir.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_engine::clock::SystemClock;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{Queue, QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::FsStorage;
use shoal_engine::{DataDir, DirOptions};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create the bench directory")
}

/// A new queue. `exclusive`: the data directory is opened as the only user of its queues
/// (`DirOptions::exclusive`, how a server owning the directory runs); otherwise every
/// operation takes the cross-process lock, as the CLI and scripts sharing a directory do.
fn queue(root: &Path, durability: DurabilityMode, exclusive: bool) -> Arc<Queue> {
    let options = DirOptions {
        exclusive,
        ..DirOptions::default()
    };
    let dir = DataDir::open_with_options(
        root,
        Arc::new(FsStorage::new()),
        Arc::new(SystemClock),
        options,
    )
    .expect("open the data directory");
    let attributes = QueueAttributes {
        durability,
        ..QueueAttributes::defaults(false)
    };
    dir.create_queue("bench", &attributes)
        .expect("create the queue");
    dir.queue("bench").expect("open the queue")
}

fn batch() -> Vec<SendMessage> {
    (0..10)
        .map(|i| SendMessage::new(format!("{i:0>100}")))
        .collect()
}

const RECEIVE_10: Receive = Receive {
    max_messages: 10,
    wait: Some(Duration::ZERO),
    visibility_timeout: None,
};

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_engine");
    group.sample_size(20);
    group.throughput(Throughput::Elements(10));
    let messages = batch();
    for (mode, durability, exclusive) in [
        ("never", DurabilityMode::Never, false),
        ("never_exclusive", DurabilityMode::Never, true),
        ("always", DurabilityMode::Always, false),
        ("always_exclusive", DurabilityMode::Always, true),
    ] {
        let tmp = bench_dir();
        let q = queue(tmp.path(), durability, exclusive);
        group.bench_function(BenchmarkId::new("send_10", mode), |b| {
            b.iter(|| q.send_batch(black_box(&messages)).expect("send"));
        });
        drop(q);
        let tmp = bench_dir();
        let q = queue(tmp.path(), durability, exclusive);
        group.bench_function(BenchmarkId::new("send_receive_delete_10", mode), |b| {
            b.iter(|| {
                q.send_batch(&messages).expect("send");
                let got = q.receive(&RECEIVE_10).expect("receive");
                let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
                for r in q.delete_batch(&handles).expect("delete") {
                    r.expect("deleted");
                }
                assert_eq!(got.len(), 10);
            });
        });
    }
    group.finish();
}

fn engine_threads(c: &mut Criterion) {
    const THREADS: usize = 8;
    let mut group = c.benchmark_group("queue_engine_threads");
    group.sample_size(20);
    for (per_send, exclusive) in [(1usize, false), (10, false), (1, true), (10, true)] {
        let tmp = bench_dir();
        let q = queue(tmp.path(), DurabilityMode::Always, exclusive);
        let lock = if exclusive { "_exclusive" } else { "" };
        let messages: Vec<SendMessage> = batch().into_iter().take(per_send).collect();
        group.throughput(Throughput::Elements((THREADS * per_send) as u64));
        group.bench_function(
            BenchmarkId::new("always_8_senders", format!("batch_{per_send}{lock}")),
            |b| {
                b.iter_custom(|iters| {
                    let start = Arc::new(Barrier::new(THREADS + 1));
                    let workers: Vec<_> = (0..THREADS)
                        .map(|_| {
                            let q = Arc::clone(&q);
                            let start = Arc::clone(&start);
                            let messages = messages.clone();
                            std::thread::spawn(move || {
                                start.wait();
                                for _ in 0..iters {
                                    q.send_batch(&messages).expect("send");
                                }
                            })
                        })
                        .collect();
                    start.wait();
                    let began = Instant::now();
                    for w in workers {
                        w.join().expect("sender thread");
                    }
                    began.elapsed()
                });
            },
        );
    }
    group.finish();
}

fn shoal_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SHOAL_BIN") {
        return Some(PathBuf::from(bin));
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/shoal");
    bin.exists().then_some(bin)
}

fn run(bin: &Path, root: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .env("SHOAL_DATA_DIR", root)
        .output()
        .expect("run shoal");
    assert!(out.status.success(), "shoal {args:?}: {out:?}");
}

fn cli(c: &mut Criterion) {
    let Some(bin) = shoal_bin() else {
        eprintln!("queue_cli: skipped (build target/release/shoal or set SHOAL_BIN)");
        return;
    };
    let mut group = c.benchmark_group("queue_cli");
    group.sample_size(50);
    for backlog in [0u64, 1_000_000] {
        let tmp = bench_dir();
        // Filled on first use, so a filter that skips these benches skips the filling too.
        let filled = std::cell::OnceCell::new();
        let fill = || {
            filled.get_or_init(|| {
                let q = queue(tmp.path(), DurabilityMode::Always, false);
                let messages: Vec<SendMessage> = (0..500)
                    .map(|i| SendMessage::new(format!("{i:0>100}")))
                    .collect();
                for _ in 0..backlog / 500 {
                    q.send_batch(&messages).expect("fill the backlog");
                }
            });
        };
        let name = if backlog == 0 { "empty" } else { "backlog_1M" };
        group.bench_function(BenchmarkId::new("send_one", name), |b| {
            fill();
            b.iter(|| run(&bin, tmp.path(), &["send", "bench", "hello"]));
        });
        group.bench_function(BenchmarkId::new("receive_delete_one", name), |b| {
            fill();
            b.iter(|| run(&bin, tmp.path(), &["receive", "bench", "--delete"]));
        });
    }
    group.finish();
}

fn long_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_long_poll");
    group.sample_size(20);
    let tmp = bench_dir();
    let sender = queue(tmp.path(), DurabilityMode::Never, false);
    let receiver = DataDir::open(tmp.path())
        .and_then(|d| d.queue("bench"))
        .expect("open a second handle");
    group.bench_function("send_to_wakeup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let r = Arc::clone(&receiver);
                let waiter = std::thread::spawn(move || {
                    let got = r
                        .receive(&Receive {
                            max_messages: 1,
                            wait: Some(Duration::from_secs(5)),
                            visibility_timeout: None,
                        })
                        .expect("receive");
                    let woke = Instant::now();
                    r.delete(&got[0].receipt_handle).expect("delete");
                    woke
                });
                // Let the receiver block first.
                std::thread::sleep(Duration::from_millis(30));
                let sent = Instant::now();
                sender.send(&SendMessage::new("wake")).expect("send");
                let woke = waiter.join().expect("receiver thread");
                total += woke.duration_since(sent);
            }
            total
        });
    });
    group.finish();
}

/// Opening a queue as a new process does (data directory, queue handle, its state) and
/// receiving one message, on a queue of 1,000 and of 1,000,000 messages (`never`, filled in
/// sends of 10, then closed): opening reads the snapshot and journal tail, so the backlog
/// should not show.
fn open_backlog(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_open");
    group.sample_size(20);
    for backlog in [1_000u64, 1_000_000] {
        let tmp = bench_dir();
        let filled = std::cell::OnceCell::new();
        let name = if backlog < 1_000_000 {
            "backlog_1K"
        } else {
            "backlog_1M"
        };
        group.bench_function(BenchmarkId::new("open_and_receive_one", name), |b| {
            filled.get_or_init(|| {
                let q = queue(tmp.path(), DurabilityMode::Never, false);
                let messages = batch();
                for _ in 0..backlog / 10 {
                    q.send_batch(&messages).expect("fill the backlog");
                }
            });
            b.iter(|| {
                let dir = DataDir::open(tmp.path()).expect("open the data directory");
                let q = dir.queue("bench").expect("open the queue");
                let got = q
                    .receive(&Receive {
                        max_messages: 1,
                        wait: Some(Duration::ZERO),
                        visibility_timeout: Some(Duration::from_secs(3600)),
                    })
                    .expect("receive");
                assert_eq!(got.len(), 1);
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    engine,
    engine_threads,
    cli,
    long_poll,
    open_backlog
);
criterion_main!(benches);
