//! One client's durable queue cycle, one message at a time: send, receive, delete, each
//! waiting for the one before, as the comparison harness's one-client queue workload does.
//! Reports cycles per second and the mean time of each of the three calls:
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin queue_cycle -- [CYCLES] [exclusive]
//! ```
//!
//! `CYCLES` (default 1,500) of a 100-byte message, on a standard queue in `always` durability
//! in a temporary directory, opened shared (the default: every call takes the queue's
//! cross-process lock) or, with `exclusive`, with `DirOptions::exclusive`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_engine::clock::SystemClock;
use shoal_engine::queue::{QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::FsStorage;
use shoal_engine::{DataDir, DirOptions};

fn main() -> shoal_engine::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cycles: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_500);
    let exclusive = args.get(1).is_some_and(|a| a == "exclusive");
    let tmp = tempfile::tempdir().map_err(|e| shoal_engine::Error::io("create", "tmp", e))?;
    let data = DataDir::open_with_options(
        tmp.path(),
        Arc::new(FsStorage::new()),
        Arc::new(SystemClock),
        DirOptions {
            exclusive,
            ..DirOptions::default()
        },
    )?;
    data.create_queue("cycle", &QueueAttributes::defaults(false))?;
    let queue = data.queue("cycle")?;
    let receive = Receive {
        max_messages: 1,
        wait: Some(Duration::ZERO),
        visibility_timeout: None,
    };
    let message = SendMessage::new("x".repeat(100));
    let mut spent = [Duration::ZERO; 3];
    let began = Instant::now();
    for _ in 0..cycles {
        let t0 = Instant::now();
        queue.send(&message)?;
        let t1 = Instant::now();
        let got = queue.receive(&receive)?;
        let t2 = Instant::now();
        for m in &got {
            queue.delete(&m.receipt_handle)?;
        }
        assert_eq!(got.len(), 1, "the message just sent is received");
        spent[0] += t1 - t0;
        spent[1] += t2 - t1;
        spent[2] += t2.elapsed();
    }
    let elapsed = began.elapsed();
    println!(
        "{cycles} cycles ({}) in {elapsed:.2?}: {:.0} cycles/s; mean send {:.0?}, receive {:.0?}, delete {:.0?}",
        if exclusive { "exclusive" } else { "shared" },
        f64::from(cycles) / elapsed.as_secs_f64(),
        spent[0] / cycles,
        spent[1] / cycles,
        spent[2] / cycles,
    );
    Ok(())
}
