//! Durable appends against the disk's own ceiling, measured turn by turn.
//!
//! Issue 2 asks that `always`-mode appends of batches of 500 records come within 1.5x of the
//! bandwidth `dd ... conv=fdatasync` gets in the same run. This disk's speed drifts by 2-3x
//! within minutes, so a dd figure taken before or after a long bench says little about the
//! bench. Here each round runs the two back to back on the same filesystem and the same
//! volume: `dd if=/dev/zero bs=1M count=MIB conv=fdatasync` (the real dd, as a process), then
//! a fresh log in `Durability::Always` taking batches of 500 records of 1 KiB until it holds
//! as many bytes (each batch fdatasynced before the next, as a caller waiting for its
//! acknowledgement sees it), once by one appender and once by WRITERS threads sharing the log
//! (each still waits for its own batch's fdatasync; their batches share fsyncs by group
//! commit, and one thread writes while another's fsync runs). Per round: the rates and the
//! ratios; at the end the median ratios over the rounds.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin append_vs_dd -- [ROUNDS] [MIB] [WRITERS]
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

/// Appends batches of 500 x 1 KiB records to a new always-mode log in `dir` from `writers`
/// threads until the segments hold `mib` MiB of frames; MB/s of frames written (decimal).
fn shoal(dir: &Path, mib: u64, writers: u64) -> anyhow::Result<f64> {
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
    let per_writer = (mib << 20).div_ceil(batch_bytes).div_ceil(writers);
    let batches = per_writer * writers;
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    for _ in 0..per_writer {
                        log.append(&entries)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("an appender panicked"))??;
        }
        Ok(())
    })?;
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
    let writers: u64 = args.next().map_or(Ok(4), |a| a.parse())?;
    let base = std::env::var_os("SHOAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::tempdir_in(&base)?;
    println!(
        "append_vs_dd: {rounds} rounds of {mib} MiB in {} ({} cores)",
        tmp.path().display(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "| round | dd conv=fdatasync MB/s | shoal always 1KiB x500, 1 writer MB/s | dd / shoal | \
         {writers} writers MB/s | dd / shoal |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut single, mut concurrent) = (Vec::new(), Vec::new());
    let (mut dd_rates, mut single_rates, mut concurrent_rates) =
        (Vec::new(), Vec::new(), Vec::new());
    let log_dir = tmp.path().join("log");
    for round in 1..=rounds {
        // Alternate which goes first, so neither always meets the disk just after the other.
        let (d, one, many) = if round % 2 == 1 {
            let d = dd(&tmp.path().join("dd.test"), mib)?;
            let one = shoal(&log_dir, mib, 1)?;
            (d, one, shoal(&log_dir, mib, writers)?)
        } else {
            let many = shoal(&log_dir, mib, writers)?;
            let one = shoal(&log_dir, mib, 1)?;
            (dd(&tmp.path().join("dd.test"), mib)?, one, many)
        };
        println!(
            "| {round} | {d:.0} | {one:.0} | {:.2} | {many:.0} | {:.2} |",
            d / one,
            d / many
        );
        single.push(d / one);
        concurrent.push(d / many);
        dd_rates.push(d);
        single_rates.push(one);
        concurrent_rates.push(many);
    }
    let verdict = |ratio: f64| if ratio <= 1.5 { "met" } else { "missed" };
    let (one, many) = (median(&mut single), median(&mut concurrent));
    println!(
        "median: dd {:.0} MB/s; shoal, 1 writer {:.0} MB/s, ratio {one:.2} (target <= 1.5): {}; \
         {writers} writers {:.0} MB/s, ratio {many:.2}: {}",
        median(&mut dd_rates),
        median(&mut single_rates),
        verdict(one),
        median(&mut concurrent_rates),
        verdict(many),
    );
    Ok(())
}
