//! Durable appends against the disk's own ceiling, measured turn by turn.
//!
//! Issue 2 asks that `always`-mode appends of batches of 500 records come within 1.5x of the
//! bandwidth `dd ... conv=fdatasync` gets in the same run. This disk's speed drifts by 2-3x
//! within minutes, so a dd figure taken before or after a long bench says little about the
//! bench. Here each round runs the two back to back on the same filesystem and the same
//! volume: `dd if=/dev/zero bs=1M count=MIB conv=fdatasync` (the real dd, as a process), then
//! a fresh log in `Durability::Always` taking batches of 500 records of 1 KiB until it holds
//! as many bytes (each batch fdatasynced before the next, as a caller waiting for its
//! acknowledgement sees it). Per round: both rates and their ratio; at the end the median
//! ratio over the rounds.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin append_vs_dd -- [ROUNDS] [MIB]
//! ```
//!
//! `SHOAL_BENCH_DIR` picks the directory (and so the disk); default: the system temp dir,
//! which must not be a tmpfs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use shoal_engine::clock::SystemClock;
use shoal_engine::log::{Durability, Entry, Log, LogOptions};
use shoal_engine::storage::FsStorage;

const RECORD: usize = 1024;
const BATCH: usize = 500;

/// Runs dd writing `mib` MiB to `file` with one fdatasync at the end; MB/s (decimal).
fn dd(file: &Path, mib: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"])
        .stderr(std::process::Stdio::null())
        .status()
        .context("run dd")?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("dd failed: {status}");
    }
    std::fs::remove_file(file)?;
    Ok((mib << 20) as f64 / seconds / 1e6)
}

/// Appends batches of 500 x 1 KiB records to a new always-mode log in `dir` until the
/// segments hold `mib` MiB of frames; MB/s of frames written (decimal).
fn shoal(dir: &Path, mib: u64) -> anyhow::Result<f64> {
    let log = Log::open(
        Arc::new(FsStorage::new()),
        Arc::new(SystemClock),
        dir,
        LogOptions {
            durability: Durability::Always,
            ..LogOptions::default()
        },
    )?;
    let payload = vec![0x5a_u8; RECORD];
    let entries: Vec<Entry<'_>> = (0..BATCH).map(|_| Entry::new(&payload)).collect();
    let frame = (RECORD + shoal_engine::codec::record::FRAME_HEADER_LEN) as u64;
    let batch_bytes = frame * BATCH as u64;
    let batches = (mib << 20).div_ceil(batch_bytes);
    let started = Instant::now();
    for _ in 0..batches {
        log.append(&entries)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    log.close()?;
    std::fs::remove_dir_all(dir)?;
    Ok((batches * batch_bytes) as f64 / seconds / 1e6)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(7), |a| a.parse())?;
    let mib: u64 = args.next().map_or(Ok(256), |a| a.parse())?;
    let base = std::env::var_os("SHOAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::tempdir_in(&base)?;
    println!(
        "append_vs_dd: {rounds} rounds of {mib} MiB in {} ({} cores)",
        tmp.path().display(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("| round | dd conv=fdatasync MB/s | shoal always 1KiB x500 MB/s | dd / shoal |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    let (mut dd_rates, mut shoal_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first, so neither always meets the disk just after the other.
        let (d, s) = if round % 2 == 1 {
            let d = dd(&tmp.path().join("dd.test"), mib)?;
            (d, shoal(&tmp.path().join("log"), mib)?)
        } else {
            let s = shoal(&tmp.path().join("log"), mib)?;
            (dd(&tmp.path().join("dd.test"), mib)?, s)
        };
        println!("| {round} | {d:.0} | {s:.0} | {:.2} |", d / s);
        ratios.push(d / s);
        dd_rates.push(d);
        shoal_rates.push(s);
    }
    let ratio = median(&mut ratios);
    println!(
        "median: dd {:.0} MB/s, shoal {:.0} MB/s, ratio {ratio:.2} (target <= 1.5): {}",
        median(&mut dd_rates),
        median(&mut shoal_rates),
        if ratio <= 1.5 { "met" } else { "missed" }
    );
    Ok(())
}
