//! Durable queue cycles, one message at a time: each client sends, receives, deletes, each
//! call waiting for the one before, as the comparison harness's queue workload does. Reports
//! cycles per second, fdatasyncs per cycle (group commit shares them), the mean time of each of
//! the three calls and the cycle's p50, p99 and longest:
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin queue_cycle -- [CYCLES] [exclusive] [never] [--clients N]
//! ```
//!
//! `CYCLES` (default 1,500) per client of a 100-byte message, on a standard queue in `always`
//! durability (`never` with `never`: no fsync, which leaves the cost of the calls themselves)
//! in a temporary directory, opened shared (the default: every call takes the
//! queue's cross-process lock) or, with `exclusive`, with `DirOptions::exclusive`. `N`
//! clients (default 1) are threads sharing one `DataDir`, as the harness's 8-client run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal_engine::clock::SystemClock;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{Queue, QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::FsStorage;
use shoal_engine::{DataDir, DirOptions, Error, Result};

fn main() -> Result<()> {
    let mut cycles: u32 = 1_500;
    let mut exclusive = false;
    let mut durability = DurabilityMode::Always;
    let mut clients: u32 = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "exclusive" => exclusive = true,
            "never" => durability = DurabilityMode::Never,
            "--clients" => {
                clients = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Error::InvalidArgument("--clients takes a number".into()))?;
            }
            n => {
                cycles = n
                    .parse()
                    .map_err(|_| Error::InvalidArgument(format!("not a cycle count: {n}")))?;
            }
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| Error::io("create", "tmp", e))?;
    let storage = FsStorage::new();
    let data = DataDir::open_with_options(
        tmp.path(),
        Arc::new(storage.clone()),
        Arc::new(SystemClock),
        DirOptions {
            exclusive,
            ..DirOptions::default()
        },
    )?;
    let attributes = QueueAttributes {
        durability,
        ..QueueAttributes::defaults(false)
    };
    data.create_queue("cycle", &attributes)?;
    let queue = data.queue("cycle")?;
    let syncs_before = storage.stats().file_syncs.load(Ordering::Relaxed);
    let began = Instant::now();
    let spent = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| s.spawn(|| run(&queue, cycles)))
            .collect();
        let mut total = [Duration::ZERO; 3];
        let mut cycle_times = Vec::new();
        for worker in workers {
            let (spent, times) = worker.join().expect("a client thread panicked")?;
            for (sum, one) in total.iter_mut().zip(spent) {
                *sum += one;
            }
            cycle_times.extend(times);
        }
        Ok::<_, Error>((total, cycle_times))
    })?;
    let (spent, mut cycle_times) = spent;
    cycle_times.sort_unstable();
    let quantile = |per_mille: usize| {
        let at = cycle_times.len().saturating_sub(1) * per_mille / 1000;
        cycle_times.get(at).copied().unwrap_or_default()
    };
    let elapsed = began.elapsed();
    let syncs = storage.stats().file_syncs.load(Ordering::Relaxed) - syncs_before;
    let calls = cycles * clients;
    println!(
        "{calls} cycles ({}, {clients} client{}) in {elapsed:.2?}: {:.0} cycles/s, {:.2} fdatasyncs per cycle; mean send {:.0?}, receive {:.0?}, delete {:.0?}; cycle p50 {:.0?}, p99 {:.0?}, max {:.0?}",
        if exclusive { "exclusive" } else { "shared" },
        if clients == 1 { "" } else { "s" },
        f64::from(calls) / elapsed.as_secs_f64(),
        syncs as f64 / f64::from(calls),
        spent[0] / calls,
        spent[1] / calls,
        spent[2] / calls,
        quantile(500),
        quantile(990),
        quantile(1000),
    );
    Ok(())
}

/// One client's `cycles` cycles; the time spent in send, receive (until one arrives) and
/// delete, and each cycle's time.
fn run(queue: &Queue, cycles: u32) -> Result<([Duration; 3], Vec<Duration>)> {
    let receive = Receive {
        max_messages: 1,
        wait: Some(Duration::ZERO),
        visibility_timeout: None,
    };
    let message = SendMessage::new("x".repeat(100));
    let mut spent = [Duration::ZERO; 3];
    let mut times = Vec::with_capacity(cycles as usize);
    for _ in 0..cycles {
        let t0 = Instant::now();
        queue.send(&message)?;
        let t1 = Instant::now();
        // With other clients a message may be taken by one of them first; one is ours.
        let got = loop {
            let got = queue.receive(&receive)?;
            if !got.is_empty() {
                break got;
            }
        };
        let t2 = Instant::now();
        for m in &got {
            queue.delete(&m.receipt_handle)?;
        }
        spent[0] += t1 - t0;
        spent[1] += t2 - t1;
        spent[2] += t2.elapsed();
        times.push(t0.elapsed());
    }
    Ok((spent, times))
}
