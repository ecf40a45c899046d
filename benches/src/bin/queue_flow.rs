//! Pushes messages through one queue (send, receive, delete, in batches of 10) and reports the
//! throughput and the queue's disk use against its live data, sampled as it goes:
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin queue_flow -- [MESSAGES] [KEEP_EVERY] [DIR]
//! ```
//!
//! `MESSAGES` (default 1,000,000) of 100 bytes go through; every `KEEP_EVERY`-th (default
//! 10,000; 0 keeps none) is received and never deleted, staying in flight and pinning the
//! segment it is in, so that only compaction can give those segments back. The queue runs
//! in `never` durability with the directory opened exclusively (`DirOptions::exclusive`), in
//! `DIR` (default: a temporary directory).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_engine::clock::SystemClock;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::FsStorage;
use shoal_engine::{DataDir, DirOptions};

fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                bytes_under(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn main() -> shoal_engine::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let keep_every: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let tmp = tempfile::tempdir().map_err(|e| shoal_engine::Error::io("create", "tmp", e))?;
    let root = args
        .get(2)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let options = DirOptions {
        exclusive: true,
        ..DirOptions::default()
    };
    let data = DataDir::open_with_options(
        &root,
        Arc::new(FsStorage::new()),
        Arc::new(SystemClock),
        options,
    )?;
    let attributes = QueueAttributes {
        durability: DurabilityMode::Never,
        ..QueueAttributes::defaults(false)
    };
    data.create_queue("flow", &attributes)?;
    let queue = data.queue("flow")?;
    let queue_dir = root.join("queues").join("flow");
    let receive = Receive {
        max_messages: 10,
        wait: Some(Duration::ZERO),
        visibility_timeout: Some(Duration::from_secs(12 * 3600)),
    };
    let started = Instant::now();
    let (mut sent, mut kept, mut peak) = (0u64, 0u64, 0u64);
    println!("messages\tkept\tdisk_bytes\telapsed_s");
    while sent < total {
        let batch: Vec<SendMessage> = (sent..(sent + 10).min(total))
            .map(|i| SendMessage::new(format!("{i:0>100}")))
            .collect();
        sent += batch.len() as u64;
        queue.send_batch(&batch)?;
        let got = queue.receive(&receive)?;
        let mut handles = Vec::with_capacity(got.len());
        for m in &got {
            let n: u64 = m.body.trim_start_matches('0').parse().unwrap_or(0);
            if keep_every > 0 && n.is_multiple_of(keep_every) {
                kept += 1;
            } else {
                handles.push(m.receipt_handle.as_str());
            }
        }
        for result in queue.delete_batch(&handles)? {
            result?;
        }
        if sent.is_multiple_of((total / 20).max(10)) || sent == total {
            let disk = bytes_under(&queue_dir);
            peak = peak.max(disk);
            println!(
                "{sent}\t{kept}\t{disk}\t{:.2}",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed();
    queue.compact()?;
    let disk = bytes_under(&queue_dir);
    // A stored message: 100-byte body plus about 130 bytes of id, header and framing.
    let live = kept * 230;
    println!(
        "{total} messages sent, received and deleted in {:.2} s ({:.0} messages/s); {kept} kept in flight",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "disk after compact: {disk} bytes (peak sampled {peak}); live data about {live} bytes; 2 x live + one 64 MiB segment = {}",
        2 * live + (64 << 20)
    );
    Ok(())
}
