//! Stream commands: `stream create|list|describe|delete|set`, `put`, `get`, `reshard`.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_engine::DataDir;
use shoal_engine::stream::{
    CreateStream, DurabilityMode, PutRecord, SequenceNumber, ShardIterator, StartPosition, Stream,
    StreamDescription, StreamRecord, parse_hash_key, parse_shard_id, shard_id,
};

use crate::Output;
use crate::util::{emit, invalid, parse_durability, parse_duration, rfc3339_ms, stdin_ready};

/// `shoal stream ...`
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create(CreateArgs),
    /// List streams.
    List,
    /// Describe a stream and its shards.
    Describe {
        /// Stream name.
        name: String,
    },
    /// Delete a stream and every record in it.
    Delete {
        /// Stream name.
        name: String,
    },
    /// Change a stream's settings.
    Set {
        /// Stream name.
        name: String,
        /// How long records are kept (24h to 365d; shorter is allowed locally, with a warning).
        #[arg(long, value_parser = parse_duration)]
        retention: Duration,
    },
}

/// `shoal stream create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Stream name: 1-128 of A-Z a-z 0-9 _ . -
    name: String,
    /// Number of shards.
    #[arg(long)]
    shards: u32,
    /// How long records are kept [default: 24h] (24h to 365d; shorter is allowed locally).
    #[arg(long, value_parser = parse_duration)]
    retention: Option<Duration>,
    /// Largest record, data plus partition key, in bytes [default: 1 MiB; at most 10 MiB].
    #[arg(long, value_name = "BYTES")]
    max_record_size: Option<u32>,
    /// Emulate Kinesis's per-shard throughput limits.
    #[arg(long)]
    enforce_limits: bool,
    /// always (fsync before acknowledging), never, or interval:D (fsync every D).
    #[arg(long, default_value = "always", value_parser = parse_durability)]
    durability: DurabilityMode,
}

const KINESIS_MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

fn warn_short_retention(retention: Duration) {
    if retention < KINESIS_MIN_RETENTION {
        eprintln!(
            "warning: retention {} is below Kinesis's 24-hour minimum; allowed locally for testing",
            humantime::format_duration(retention)
        );
    }
}

fn description_json(d: &StreamDescription) -> serde_json::Value {
    let shards: Vec<serde_json::Value> = d
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard_id": s.shard_id,
                "parent_shard_id": s.parent_shard_id,
                "adjacent_parent_shard_id": s.adjacent_parent_shard_id,
                "hash_key_range": {
                    "starting_hash_key": s.starting_hash_key.to_string(),
                    "ending_hash_key": s.ending_hash_key.to_string(),
                },
                "sequence_number_range": {
                    "starting_sequence_number": s.starting_sequence_number,
                    "ending_sequence_number": s.ending_sequence_number,
                },
                "status": if s.open { "OPEN" } else { "CLOSED" },
            })
        })
        .collect();
    json!({
        "stream_name": d.name,
        "stream_status": d.status,
        "retention_period_hours": d.retention_hours,
        "retention_ms": d.retention_ms,
        "stream_creation_timestamp": rfc3339_ms(d.created_ms),
        "max_record_size_bytes": d.max_record_bytes,
        "enforce_limits": d.enforce_limits,
        "open_shard_count": d.shards.iter().filter(|s| s.open).count(),
        "shards": shards,
    })
}

/// Runs `shoal stream ...`.
pub fn run_stream(dir: &DataDir, output: Output, command: &StreamCommand) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match command {
        StreamCommand::Create(args) => {
            let mut request = CreateStream::new(&args.name, args.shards);
            if let Some(retention) = args.retention {
                request.retention = retention;
            }
            if let Some(bytes) = args.max_record_size {
                request.max_record_bytes = bytes;
            }
            request.enforce_limits = args.enforce_limits;
            request.durability = args.durability;
            let description = dir.create_stream(&request)?;
            warn_short_retention(request.retention);
            print_description(&mut out, output, &description)?;
        }
        StreamCommand::List => {
            for name in dir.list_streams()? {
                match output {
                    Output::Json => emit(&mut out, &json!({ "stream_name": name }).to_string())?,
                    Output::Text => emit(&mut out, &name)?,
                }
            }
        }
        StreamCommand::Describe { name } => {
            print_description(&mut out, output, &dir.describe_stream(name)?)?;
        }
        StreamCommand::Delete { name } => dir.delete_stream(name)?,
        StreamCommand::Set { name, retention } => {
            dir.set_stream_retention(name, *retention)?;
            warn_short_retention(*retention);
        }
    }
    Ok(())
}

fn print_description(
    out: &mut impl Write,
    output: Output,
    d: &StreamDescription,
) -> anyhow::Result<()> {
    match output {
        Output::Json => emit(out, &description_json(d).to_string())?,
        Output::Text => {
            emit(
                out,
                &format!("{}\t{}\tretention {}h", d.name, d.status, d.retention_hours),
            )?;
            for s in &d.shards {
                emit(
                    out,
                    &format!(
                        "{}\t{}\t{}..{}",
                        s.shard_id,
                        if s.open { "OPEN" } else { "CLOSED" },
                        s.starting_hash_key,
                        s.ending_hash_key
                    ),
                )?;
            }
        }
    }
    Ok(())
}

/// `shoal put`
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Stream name.
    stream: String,
    /// The record's data; without it, all of standard input is one record.
    data: Option<String>,
    /// Partition key (1-256 characters). With --lines it defaults to the line number, which
    /// spreads lines over the shards.
    #[arg(long, short = 'k')]
    partition_key: Option<String>,
    /// Route by this decimal hash key instead of the partition key's MD5.
    #[arg(long)]
    explicit_hash_key: Option<String>,
    /// Put each line of standard input as a record (batched).
    #[arg(long, conflicts_with_all = ["data", "json_input"])]
    lines: bool,
    /// Read {"partition_key", "data" | "data_base64", "explicit_hash_key"?} lines from
    /// standard input.
    #[arg(long, conflicts_with_all = ["data", "lines"])]
    json_input: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    partition_key: String,
    data: Option<String>,
    data_base64: Option<String>,
    explicit_hash_key: Option<String>,
}

/// Records waiting to be put together, in two flat buffers (no allocation per record).
struct Pending {
    keys: String,
    key_ends: Vec<usize>,
    data: Vec<u8>,
    data_ends: Vec<usize>,
    hash_keys: Vec<Option<u128>>,
}

/// Most bytes buffered before a batch is put.
const BATCH_BYTES: usize = 4 << 20;

impl Pending {
    fn new() -> Self {
        Pending {
            keys: String::new(),
            key_ends: Vec::new(),
            data: Vec::new(),
            data_ends: Vec::new(),
            hash_keys: Vec::new(),
        }
    }

    fn push(&mut self, key: impl std::fmt::Display, data: &[u8], hash_key: Option<u128>) {
        use std::fmt::Write as _;
        let _ = write!(self.keys, "{key}");
        self.key_ends.push(self.keys.len());
        self.data.extend_from_slice(data);
        self.data_ends.push(self.data.len());
        self.hash_keys.push(hash_key);
    }

    fn full(&self) -> bool {
        self.key_ends.len() >= shoal_engine::stream::MAX_PUT_RECORDS
            || self.keys.len() + self.data.len() >= BATCH_BYTES
    }

    /// Puts the batch and prints one line per acknowledged record, in input order.
    fn flush(
        &mut self,
        stream: &Stream,
        output: Output,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        if self.key_ends.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(self.key_ends.len());
        let (mut key_start, mut data_start) = (0, 0);
        for i in 0..self.key_ends.len() {
            records.push(PutRecord {
                partition_key: &self.keys[key_start..self.key_ends[i]],
                explicit_hash_key: self.hash_keys[i],
                data: &self.data[data_start..self.data_ends[i]],
            });
            key_start = self.key_ends[i];
            data_start = self.data_ends[i];
        }
        let outcome = stream.put_records(&records);
        for result in &outcome.results {
            match output {
                Output::Json => writeln!(
                    out,
                    "{{\"shard_id\":\"{}\",\"sequence_number\":\"{}\"}}",
                    shard_id(result.shard),
                    result.sequence
                )?,
                Output::Text => writeln!(out, "{}\t{}", shard_id(result.shard), result.sequence)?,
            }
        }
        out.flush()?;
        self.keys.clear();
        self.key_ends.clear();
        self.data.clear();
        self.data_ends.clear();
        self.hash_keys.clear();
        match outcome.error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

fn parse_explicit(text: Option<&str>) -> anyhow::Result<Option<u128>> {
    text.map(parse_hash_key).transpose().map_err(Into::into)
}

/// Runs `shoal put`.
pub fn run_put(dir: &DataDir, output: Output, args: &PutArgs) -> anyhow::Result<()> {
    let explicit = parse_explicit(args.explicit_hash_key.as_deref())?;
    if !args.lines && !args.json_input && args.partition_key.is_none() {
        return invalid("--partition-key is required (except with --lines or --json-input)");
    }
    let stream = dir.stream(&args.stream)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut pending = Pending::new();
    if args.lines || args.json_input {
        let mut input = io::BufReader::with_capacity(1 << 20, io::stdin().lock());
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if args.lines {
                match &args.partition_key {
                    Some(key) => pending.push(key, &line, explicit),
                    None => pending.push(number, &line, explicit),
                }
            } else {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let record: JsonRecord = match serde_json::from_slice(&line) {
                    Ok(record) => record,
                    Err(e) => return invalid(format!("line {number}: {e}")),
                };
                let data = match (record.data, record.data_base64) {
                    (Some(text), None) => text.into_bytes(),
                    (None, Some(b64)) => match BASE64.decode(b64.as_bytes()) {
                        Ok(bytes) => bytes,
                        Err(e) => return invalid(format!("line {number}: data_base64: {e}")),
                    },
                    _ => {
                        return invalid(format!(
                            "line {number}: give exactly one of \"data\" and \"data_base64\""
                        ));
                    }
                };
                let hash_key = match record.explicit_hash_key.as_deref() {
                    Some(text) => {
                        Some(parse_hash_key(text).with_context(|| format!("line {number}"))?)
                    }
                    None => explicit,
                };
                pending.push(&record.partition_key, &data, hash_key);
            }
            // Put when the batch is full or stdin has nothing more ready (a slow producer's
            // lines are acknowledged one by one, a fast one's in big batches).
            if pending.full() || (input.buffer().is_empty() && !stdin_ready()) {
                pending.flush(&stream, output, &mut out)?;
            }
        }
    } else {
        let data = match &args.data {
            Some(data) => data.clone().into_bytes(),
            None => {
                let mut data = Vec::new();
                io::stdin().lock().read_to_end(&mut data)?;
                data
            }
        };
        let key = args.partition_key.clone().unwrap_or_default();
        pending.push(&key, &data, explicit);
    }
    pending.flush(&stream, output, &mut out)
}

/// `shoal get`
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Stream name.
    stream: String,
    /// Read only these shards (repeatable); default: the whole stream, parents before children.
    #[arg(long)]
    shard: Vec<String>,
    /// trim-horizon, latest, at:SEQ, after:SEQ, or time:RFC3339 (or time:EPOCH_SECONDS).
    #[arg(long, default_value = "trim-horizon")]
    from: String,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep reading records as they are put (until interrupted).
    #[arg(long)]
    follow: bool,
    /// Print only each record's data bytes, one record per line.
    #[arg(long)]
    raw: bool,
}

fn parse_start(text: &str) -> anyhow::Result<StartPosition> {
    Ok(match text {
        "trim-horizon" | "TRIM_HORIZON" => StartPosition::TrimHorizon,
        "latest" | "LATEST" => StartPosition::Latest,
        _ => {
            if let Some(seq) = text.strip_prefix("at:") {
                StartPosition::AtSequence(SequenceNumber::parse(seq)?)
            } else if let Some(seq) = text.strip_prefix("after:") {
                StartPosition::AfterSequence(SequenceNumber::parse(seq)?)
            } else if let Some(time) = text.strip_prefix("time:") {
                StartPosition::AtTimestamp(parse_time(time)?)
            } else {
                return invalid(format!(
                    "invalid --from {text:?}: use trim-horizon, latest, at:SEQ, after:SEQ or time:RFC3339"
                ));
            }
        }
    })
}

fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        let ms = Duration::try_from_secs_f64(seconds).map_or(u128::MAX, |d| d.as_millis());
        return Ok(u64::try_from(ms).unwrap_or(u64::MAX));
    }
    let time = match humantime::parse_rfc3339_weak(text) {
        Ok(time) => time,
        Err(e) => return invalid(format!("invalid time {text:?}: {e}")),
    };
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

struct Cursor {
    it: ShardIterator,
    parents: Vec<u32>,
    done: bool,
}

/// How long `--follow` sleeps when no shard had anything new.
const FOLLOW_POLL: Duration = Duration::from_millis(20);

/// Runs `shoal get`.
pub fn run_get(dir: &DataDir, output: Output, args: &GetArgs) -> anyhow::Result<()> {
    let start = parse_start(&args.from)?;
    let stream = dir.stream(&args.stream)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    // Which shards, from where: named shards; the shard of an at:/after: sequence number and
    // its descendants; or every shard.
    let mut plan: Vec<(u32, StartPosition)> = Vec::new();
    if !args.shard.is_empty() {
        for id in &args.shard {
            plan.push((parse_shard_id(id)?, start));
        }
    } else if let StartPosition::AtSequence(seq) | StartPosition::AfterSequence(seq) = start {
        plan.push((seq.shard, start));
        let mut i = 0;
        while let Some(&(shard, _)) = plan.get(i) {
            for child in stream.children(shard)? {
                if !plan.iter().any(|(s, _)| *s == child) {
                    plan.push((child, StartPosition::TrimHorizon));
                }
            }
            i += 1;
        }
        plan.sort_by_key(|(s, _)| *s);
    } else {
        for shard in stream.shard_indexes()? {
            plan.push((shard, start));
        }
    }
    let mut cursors: BTreeMap<u32, Cursor> = BTreeMap::new();
    for (shard, position) in plan {
        cursors.insert(
            shard,
            Cursor {
                it: stream.shard_iterator(shard, position)?,
                parents: stream.parents(shard)?,
                done: false,
            },
        );
    }
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    while remaining > 0 {
        let mut progressed = false;
        let shards: Vec<u32> = cursors.keys().copied().collect();
        for shard in shards {
            let ready = {
                let cursor = &cursors[&shard];
                !cursor.done
                    && cursor
                        .parents
                        .iter()
                        .all(|p| cursors.get(p).is_none_or(|c| c.done))
            };
            if !ready {
                continue;
            }
            let limit = usize::try_from(remaining.min(1000)).unwrap_or(1000);
            let cursor = cursors.get_mut(&shard).expect("listed above");
            let got = stream.get_records(&mut cursor.it, limit)?;
            for record in &got.records {
                if args.raw {
                    out.write_all(&record.data)?;
                    out.write_all(b"\n")?;
                } else {
                    emit(&mut out, &record_line(output, record))?;
                }
            }
            remaining -= got.records.len() as u64;
            progressed |= !got.records.is_empty();
            if got.shard_ended {
                let follow_children = args.follow && args.shard.is_empty();
                let children = if follow_children {
                    stream.children(shard)?
                } else {
                    Vec::new()
                };
                // A reshard seals the shard before it publishes the children (or it was cut
                // short and the next one reopens the shard): until they show, look again.
                if !(follow_children && children.is_empty()) {
                    cursor.done = true;
                    progressed = true;
                }
                for child in children {
                    if let std::collections::btree_map::Entry::Vacant(slot) = cursors.entry(child) {
                        slot.insert(Cursor {
                            it: stream.shard_iterator(child, StartPosition::TrimHorizon)?,
                            parents: stream.parents(child)?,
                            done: false,
                        });
                    }
                }
            } else if got.records.is_empty() && !args.follow {
                cursor.done = true;
            }
            if remaining == 0 {
                break;
            }
        }
        out.flush()?;
        if cursors.values().all(|c| c.done) && !args.follow {
            break;
        }
        if !progressed {
            if !args.follow {
                break;
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
    out.flush()?;
    Ok(())
}

/// One record as `get` and `consume` print it.
pub fn record_line(output: Output, record: &StreamRecord) -> String {
    match output {
        Output::Json => json!({
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "partition_key": record.partition_key,
            "arrival_timestamp": rfc3339_ms(record.arrival_timestamp_ms),
            "data": BASE64.encode(&record.data),
        })
        .to_string(),
        Output::Text => format!(
            "{}\t{}\t{}\t{}",
            record.shard_id,
            record.sequence_number,
            record.partition_key,
            String::from_utf8_lossy(&record.data)
        ),
    }
}

/// `shoal reshard`
#[derive(Debug, Args)]
pub struct ReshardArgs {
    /// Stream name.
    stream: String,
    #[command(subcommand)]
    op: ReshardOp,
}

#[derive(Debug, Subcommand)]
enum ReshardOp {
    /// Split an open shard in two.
    Split {
        /// The shard to split.
        shard: String,
        /// First hash key of the second child [default: the middle of the shard's range].
        #[arg(long)]
        at: Option<String>,
    },
    /// Merge two open shards with adjacent hash key ranges.
    Merge {
        /// One shard.
        shard_a: String,
        /// The adjacent shard.
        shard_b: String,
    },
    /// Replace the open shards with N shards of equal ranges.
    Scale {
        /// The new number of open shards.
        #[arg(long)]
        shards: u32,
    },
}

/// Runs `shoal reshard`.
pub fn run_reshard(dir: &DataDir, output: Output, args: &ReshardArgs) -> anyhow::Result<()> {
    let stream = dir.stream(&args.stream)?;
    let created = match &args.op {
        ReshardOp::Split { shard, at } => {
            let at = at.as_deref().map(parse_hash_key).transpose()?;
            stream.split_shard(parse_shard_id(shard)?, at)?
        }
        ReshardOp::Merge { shard_a, shard_b } => {
            stream.merge_shards(parse_shard_id(shard_a)?, parse_shard_id(shard_b)?)?
        }
        ReshardOp::Scale { shards } => stream.scale(*shards)?,
    };
    let ids: Vec<String> = created.into_iter().map(shard_id).collect();
    let mut out = io::stdout().lock();
    match output {
        Output::Json => emit(&mut out, &json!({ "created_shards": ids }).to_string())?,
        Output::Text => {
            for id in ids {
                emit(&mut out, &id)?;
            }
        }
    }
    Ok(())
}
