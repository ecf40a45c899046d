//! `shoal consume`: a worker of a consumer group.

use std::io::{self, BufWriter, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use shoal_engine::DataDir;
use shoal_engine::stream::StreamRecord;

use crate::Output;
use crate::stream::record_line;
use crate::util::emit;

/// `shoal consume`
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Stream name.
    stream: String,
    /// Consumer group (application) name; workers of one group share the shards.
    #[arg(long)]
    group: String,
    /// Stop after processing this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep running as records arrive (without it, stop once the group has caught up).
    #[arg(long)]
    follow: bool,
    /// Give up (exit 1, record not checkpointed) after the command fails this many times on
    /// one record.
    #[arg(long, default_value = "10")]
    max_attempts: u32,
    /// Run this command per record, data on its stdin (env: SHOAL_STREAM, SHOAL_SHARD_ID,
    /// SHOAL_SEQUENCE_NUMBER, SHOAL_PARTITION_KEY); the record is checkpointed once it exits 0.
    /// Without a command, records are printed as `shoal get` prints them.
    #[arg(last = true)]
    command: Vec<String>,
}

const IDLE_POLL: Duration = Duration::from_millis(20);
const REBALANCE_EVERY: Duration = Duration::from_millis(100);

/// Runs `shoal consume`.
pub fn run_consume(dir: &DataDir, output: Output, args: &ConsumeArgs) -> anyhow::Result<()> {
    // SIGINT and SIGTERM stop the worker cleanly: the record in hand is finished and
    // checkpointed, then it exits 0, so a stopped worker's records are never processed twice.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut consumer = dir.stream(&args.stream)?.consumer(&args.group)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    let mut last_rebalance: Option<Instant> = None;
    while remaining > 0 && !stop.load(Ordering::SeqCst) {
        if last_rebalance.is_none_or(|t| t.elapsed() >= REBALANCE_EVERY) {
            consumer.rebalance()?;
            last_rebalance = Some(Instant::now());
        }
        let limit = usize::try_from(remaining.min(500)).unwrap_or(500);
        let Some(batch) = consumer.next_batch(limit)? else {
            if !args.follow && consumer.caught_up()? {
                break;
            }
            std::thread::sleep(IDLE_POLL);
            last_rebalance = None;
            continue;
        };
        if args.command.is_empty() {
            for record in &batch.records {
                emit(&mut out, &record_line(output, record))?;
            }
            // Printed (and flushed) before checkpointed: a crash in between repeats, never loses.
            out.flush()?;
            if let Some(last) = batch.records.last() {
                consumer.checkpoint(batch.shard, &last.sequence_number)?;
            }
        } else {
            let mut done = 0;
            for record in &batch.records {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                run_command(&args.command, &args.stream, record, args.max_attempts)?;
                consumer.checkpoint(batch.shard, &record.sequence_number)?;
                done += 1;
            }
            remaining -= done;
            continue;
        }
        remaining -= batch.records.len() as u64;
    }
    out.flush()?;
    Ok(())
}

/// Runs the command on one record until it succeeds, backing off between attempts.
fn run_command(
    command: &[String],
    stream: &str,
    record: &StreamRecord,
    max_attempts: u32,
) -> anyhow::Result<()> {
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=max_attempts {
        let mut child = Command::new(program)
            .args(args)
            .env("SHOAL_STREAM", stream)
            .env("SHOAL_SHARD_ID", &record.shard_id)
            .env("SHOAL_SEQUENCE_NUMBER", &record.sequence_number)
            .env("SHOAL_PARTITION_KEY", &record.partition_key)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(&record.data);
        }
        let status = child.wait()?;
        if status.success() {
            return Ok(());
        }
        if attempt < max_attempts {
            eprintln!(
                "warning: {program} failed ({status}) on {} {}; retrying in {}",
                record.shard_id,
                record.sequence_number,
                humantime::format_duration(backoff)
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    anyhow::bail!(
        "{program} failed {max_attempts} times on {} record {}; it stays unprocessed for the group",
        record.shard_id,
        record.sequence_number
    )
}
