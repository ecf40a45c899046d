//! Kinesis-style streams: a set of shards over the 128-bit hash key space, each shard one
//! [`Log`].
//!
//! ```text
//! <data>/streams/LOCK                  serializes create, delete, reshard, set-retention
//! <data>/streams/<name>/stream.meta    the shard map (metadata file, replaced atomically)
//! <data>/streams/<name>/shards/<index:012>/   one log per shard
//! ```
//!
//! A stream exists once its `stream.meta` exists: creation makes the shard logs first and
//! writes the map last, deletion removes the map first.
//!
//! Resharding closes parent shards by sealing their logs (under the log lock, so no process
//! can append to a parent once its children exist), creates the children, then writes the new
//! map. A reshard interrupted between the seal and the map leaves an open shard sealed; the
//! next writer that meets it repairs the stream by unsealing it. Shard indexes only grow, so
//! reading shards in index order reads every parent before its children.

mod consumer;
mod handle;
mod keys;
mod limits;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use consumer::{Consumer, ConsumerBatch};
#[cfg(feature = "fuzzing")]
pub(crate) use consumer::{decode_checkpoint, encode_checkpoint};
pub use handle::Stream;
pub use keys::{
    SequenceNumber, hash_partition_key, parse_hash_key, parse_shard_id, shard_id, uniform_ranges,
};

use crate::datadir::{DataDir, DirInner};
pub use crate::durability::DurabilityMode;
use crate::error::{Error, Result};
use crate::log::{Log, LogOptions, LogReader, WriterLock};
use crate::meta;
use crate::names::validate_stream_name;

const STREAM_MAGIC: [u8; 8] = *b"SHOALSTM";
const META_FILE: &str = "stream.meta";
/// Record kind of stream records in a shard log.
const KIND_RECORD: u8 = 1;

/// Kinesis's default retention: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Kinesis's longest retention: 365 days.
pub const MAX_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default largest record (data plus partition key): 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1 << 20;
/// Largest record a stream can be created to accept: 10 MiB.
pub const MAX_MAX_RECORD_BYTES: u32 = 10 << 20;
/// Most records in one PutRecords call.
pub const MAX_PUT_RECORDS: usize = 500;
/// Most shards a stream may have open.
pub const MAX_SHARDS: u32 = 10_000;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStream {
    /// Stream name (1-128 of `[A-Za-z0-9_.-]`).
    pub name: String,
    /// Number of shards (1 to [`MAX_SHARDS`]).
    pub shard_count: u32,
    /// How long records are kept (1 second to 365 days; Kinesis's minimum is 24 hours).
    pub retention: Duration,
    /// Largest record, data plus partition key (up to 10 MiB).
    pub max_record_bytes: u32,
    /// Emulate Kinesis's per-shard throughput limits.
    pub enforce_limits: bool,
    /// Durability of puts.
    pub durability: DurabilityMode,
}

impl CreateStream {
    /// Defaults for everything but the name and shard count.
    pub fn new(name: impl Into<String>, shard_count: u32) -> Self {
        CreateStream {
            name: name.into(),
            shard_count,
            retention: DEFAULT_RETENTION,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            enforce_limits: false,
            durability: DurabilityMode::Always,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShardMeta {
    index: u32,
    /// Parent shards (one after a split, two after a merge, any after a scale).
    parents: Vec<u32>,
    start_hash: u128,
    end_hash: u128,
    closed: bool,
    created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamMeta {
    name: String,
    created_ms: u64,
    retention_ms: u64,
    max_record_bytes: u32,
    enforce_limits: bool,
    durability: DurabilityMode,
    shards: Vec<ShardMeta>,
    next_shard_index: u32,
}

impl StreamMeta {
    fn shard(&self, index: u32) -> Result<&ShardMeta> {
        self.shards
            .iter()
            .find(|s| s.index == index)
            .ok_or_else(|| Error::NotFound {
                kind: "shard",
                name: shard_id(index),
            })
    }

    fn open_shard_for(&self, hash: u128) -> Option<&ShardMeta> {
        self.shards
            .iter()
            .find(|s| !s.closed && s.start_hash <= hash && hash <= s.end_hash)
    }

    /// The open shard owning every hash key, if there is one.
    fn only_open_shard(&self) -> Option<&ShardMeta> {
        let mut open = self.shards.iter().filter(|s| !s.closed);
        match (open.next(), open.next()) {
            (Some(s), None) if s.start_hash == 0 && s.end_hash == u128::MAX => Some(s),
            _ => None,
        }
    }
}

/// One shard, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDescription {
    /// `shardId-000000000000` style id.
    pub shard_id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent_shard_id: Option<String>,
    /// The second shard it was merged from.
    pub adjacent_parent_shard_id: Option<String>,
    /// First hash key it owns.
    pub starting_hash_key: u128,
    /// Last hash key it owns.
    pub ending_hash_key: u128,
    /// Sequence number of its first possible record.
    pub starting_sequence_number: String,
    /// Sequence number of its last record, once closed.
    pub ending_sequence_number: Option<String>,
    /// False once resharding closed it.
    pub open: bool,
}

/// A stream, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// Name.
    pub name: String,
    /// Always "ACTIVE": every operation completes before it returns.
    pub status: &'static str,
    /// Retention in hours (rounded down; see `retention_ms`).
    pub retention_hours: u64,
    /// Retention in milliseconds.
    pub retention_ms: u64,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Largest record accepted.
    pub max_record_bytes: u32,
    /// Whether throughput limits are emulated.
    pub enforce_limits: bool,
    /// Durability of puts.
    pub durability: DurabilityMode,
    /// Every shard, open and closed, in index order.
    pub shards: Vec<ShardDescription>,
}

/// One record to put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutRecord<'a> {
    /// Partition key: 1 to 256 Unicode characters.
    pub partition_key: &'a str,
    /// Routes by this hash key instead of the partition key's hash.
    pub explicit_hash_key: Option<u128>,
    /// The data.
    pub data: &'a [u8],
}

/// Where a put record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// The shard's index.
    pub shard: u32,
    /// The record's sequence number.
    pub sequence: SequenceNumber,
}

impl PutResult {
    /// The shard's id, `shardId-000000000000` style.
    pub fn shard_id(&self) -> String {
        shard_id(self.shard)
    }

    /// The sequence number's decimal form.
    pub fn sequence_number(&self) -> String {
        self.sequence.encode()
    }
}

/// The outcome of a batch put: the acknowledged prefix of the input, then the error that
/// stopped the rest (records after it may or may not be stored).
#[derive(Debug)]
pub struct PutOutcome {
    /// Results for the first `results.len()` records, in input order; all durable.
    pub results: Vec<PutResult>,
    /// Why the rest were not acknowledged.
    pub error: Option<Error>,
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record kept.
    TrimHorizon,
    /// Just after the newest record at the time the iterator is made.
    Latest,
    /// At this record.
    AtSequence(SequenceNumber),
    /// Just after this record.
    AfterSequence(SequenceNumber),
    /// At the first record that arrived at or after this time (ms since the epoch).
    AtTimestamp(u64),
}

/// A position in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardIterator {
    /// The shard's index.
    pub shard: u32,
    /// The next offset to read.
    pub next_offset: u64,
}

/// A record read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its shard.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// Its partition key.
    pub partition_key: String,
    /// When it was put, ms since the epoch.
    pub arrival_timestamp_ms: u64,
    /// Its data.
    pub data: Vec<u8>,
}

/// What one `get_records` call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecordsOutput {
    /// Records, in sequence order.
    pub records: Vec<StreamRecord>,
    /// How far behind the shard's newest record the iterator is.
    pub millis_behind_latest: u64,
    /// The shard is closed and every record of it has been read.
    pub shard_ended: bool,
}

/// Stream operations on a data directory.
impl DataDir {
    /// Creates a stream. Fails with [`Error::AlreadyExists`] if the name is taken.
    pub fn create_stream(&self, request: &CreateStream) -> Result<StreamDescription> {
        validate_stream_name(&request.name)?;
        if request.shard_count == 0 || request.shard_count > MAX_SHARDS {
            return Err(Error::InvalidArgument(format!(
                "shard count must be from 1 to {MAX_SHARDS}, not {}",
                request.shard_count
            )));
        }
        let retention_ms = retention_ms(request.retention)?;
        if request.max_record_bytes == 0 || request.max_record_bytes > MAX_MAX_RECORD_BYTES {
            return Err(Error::InvalidArgument(format!(
                "maximum record size must be from 1 to {MAX_MAX_RECORD_BYTES} bytes"
            )));
        }
        let dir = self.inner();
        let _lock = dir.lock_kind_to_create(&streams_dir(dir))?;
        let stream_dir = stream_dir(dir, &request.name);
        if meta::read::<StreamMeta>(&*dir.storage, &stream_dir.join(META_FILE), STREAM_MAGIC)?
            .is_some()
        {
            return Err(Error::AlreadyExists {
                kind: "stream",
                name: request.name.clone(),
                detail: String::new(),
            });
        }
        // Leftovers of a creation that died before writing the map.
        dir.remove_tree(&stream_dir)?;
        let now = dir.clock.now_ms();
        let shards: Vec<ShardMeta> = uniform_ranges(request.shard_count)
            .into_iter()
            .zip(0..)
            .map(|((start_hash, end_hash), index)| ShardMeta {
                index,
                parents: Vec::new(),
                start_hash,
                end_hash,
                closed: false,
                created_ms: now,
            })
            .collect();
        let meta = StreamMeta {
            name: request.name.clone(),
            created_ms: now,
            retention_ms,
            max_record_bytes: request.max_record_bytes,
            enforce_limits: request.enforce_limits,
            durability: request.durability,
            next_shard_index: request.shard_count,
            shards,
        };
        for shard in &meta.shards {
            create_shard_log(dir, &meta, shard.index)?;
        }
        write_meta(dir, &meta)?;
        describe(dir, &meta)
    }

    /// Names of every stream, sorted.
    pub fn list_streams(&self) -> Result<Vec<String>> {
        let dir = self.inner();
        dir.list_kind(&streams_dir(dir), META_FILE, |n| {
            validate_stream_name(n).is_ok()
        })
    }

    /// Describes a stream.
    pub fn describe_stream(&self, name: &str) -> Result<StreamDescription> {
        let dir = self.inner();
        describe(dir, &load_meta(dir, name)?)
    }

    /// Deletes a stream and all its records.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        let dir = self.inner();
        let _lock = lock_streams(dir, name)?;
        load_meta(dir, name)?;
        let stream_dir = stream_dir(dir, name);
        // The map goes first: from then on the stream does not exist, whatever is left.
        let meta_path = stream_dir.join(META_FILE);
        dir.storage
            .remove_file(&meta_path)
            .map_err(|e| Error::io("remove", &meta_path, e))?;
        dir.storage
            .sync_dir(&stream_dir)
            .map_err(|e| Error::io("fsync", &stream_dir, e))?;
        dir.remove_tree(&stream_dir)
    }

    /// Changes a stream's retention.
    pub fn set_stream_retention(&self, name: &str, retention: Duration) -> Result<()> {
        let retention_ms = retention_ms(retention)?;
        let dir = self.inner();
        let _lock = lock_streams(dir, name)?;
        let mut meta = load_meta(dir, name)?;
        meta.retention_ms = retention_ms;
        write_meta(dir, &meta)
    }

    /// A handle for putting to and reading from a stream.
    pub fn stream(&self, name: &str) -> Result<Stream> {
        let dir = self.inner();
        let meta = load_meta(dir, name)?;
        Ok(Stream {
            dir: Arc::clone(dir),
            name: name.to_string(),
            meta: RwLock::new(Arc::new(meta)),
            writers: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
        })
    }
}

/// Checks every stream: its map, each shard's log, each consumer checkpoint (see
/// [`crate::log::check`]). Changes nothing.
pub(crate) fn check_streams(dir: &DirInner, report: &mut crate::log::CheckReport) -> Result<()> {
    use crate::log::Problem;
    let streams = streams_dir(dir);
    let names = match dir.storage.list_dir(&streams) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", &streams, e)),
    };
    let mut names: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| validate_stream_name(n).is_ok())
        .collect();
    names.sort();
    for name in names {
        let meta_path = stream_dir(dir, &name).join(META_FILE);
        if !dir.storage.exists(&meta_path) {
            continue; // a creation that never finished: not a stream
        }
        report.files += 1;
        let shards: Vec<u32> =
            match meta::read::<StreamMeta>(&*dir.storage, &meta_path, STREAM_MAGIC) {
                Ok(Some(meta)) => meta.shards.iter().map(|s| s.index).collect(),
                Ok(None) => continue,
                Err(e) => {
                    report.problems.push(Problem::from_error(&e, &meta_path));
                    // Without the map, still check every shard log there is.
                    let shards_dir = stream_dir(dir, &name).join("shards");
                    let mut found: Vec<u32> = dir
                        .storage
                        .list_dir(&shards_dir)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|n| n.to_str().and_then(|n| n.parse().ok()))
                        .collect();
                    found.sort_unstable();
                    found
                }
            };
        for index in shards {
            let log_dir = shard_dir(dir, &name, index);
            if !dir
                .storage
                .exists(&log_dir.join(crate::log::segment::HEAD_FILE))
            {
                report.problems.push(Problem {
                    file: log_dir,
                    offset: 0,
                    kind: format!("the log of {} is missing", shard_id(index)),
                });
                continue;
            }
            crate::log::check(&*dir.storage, &log_dir, report)?;
        }
        let consumers = stream_dir(dir, &name).join("consumers");
        for group in dir.storage.list_dir(&consumers).unwrap_or_default() {
            let group_dir = consumers.join(group);
            for file in dir.storage.list_dir(&group_dir).unwrap_or_default() {
                let path = group_dir.join(file);
                if path.extension().is_some_and(|e| e == "checkpoint") {
                    report.files += 1;
                    if let Err(e) = meta::read::<consumer::Checkpoint>(
                        &*dir.storage,
                        &path,
                        consumer::CHECKPOINT_MAGIC,
                    ) {
                        report.problems.push(Problem::from_error(&e, &path));
                    }
                }
            }
        }
    }
    Ok(())
}

fn retention_ms(retention: Duration) -> Result<u64> {
    if retention < Duration::from_secs(1) || retention > MAX_RETENTION {
        return Err(Error::InvalidArgument(format!(
            "retention must be from 1 second to 365 days, not {}s",
            retention.as_secs()
        )));
    }
    u64::try_from(retention.as_millis())
        .map_err(|_| Error::InvalidArgument("retention too long".into()))
}

fn stream_dir(dir: &DirInner, name: &str) -> PathBuf {
    streams_dir(dir).join(name)
}

fn shard_dir(dir: &DirInner, name: &str, index: u32) -> PathBuf {
    stream_dir(dir, name)
        .join("shards")
        .join(format!("{index:012}"))
}

fn streams_dir(dir: &DirInner) -> PathBuf {
    dir.root.join("streams")
}

/// The streams lock, for a change to stream `name`: [`Error::NotFound`], writing nothing,
/// where no stream was ever made.
fn lock_streams(dir: &DirInner, name: &str) -> Result<Box<dyn crate::storage::LockGuard>> {
    dir.lock_kind(&streams_dir(dir), || not_found(name))
}

fn load_meta(dir: &DirInner, name: &str) -> Result<StreamMeta> {
    validate_stream_name(name)?;
    let path = stream_dir(dir, name).join(META_FILE);
    meta::read(&*dir.storage, &path, STREAM_MAGIC)?.ok_or_else(|| not_found(name))
}

/// The error for a stream that does not exist (or no longer does).
fn not_found(name: &str) -> Error {
    Error::NotFound {
        kind: "stream",
        name: name.to_string(),
    }
}

fn write_meta(dir: &DirInner, meta: &StreamMeta) -> Result<()> {
    let path = stream_dir(dir, &meta.name).join(META_FILE);
    meta::write(&*dir.storage, &path, STREAM_MAGIC, meta)
}

fn log_options(meta: &StreamMeta) -> LogOptions {
    // Segments roll at least four times per retention period so expired data goes soon.
    let age = Duration::from_millis((meta.retention_ms / 4).clamp(1_000, 3_600_000));
    LogOptions {
        segment_age_max: Some(age),
        // Data plus partition key (the record header) are bounded together.
        max_record_bytes: meta.max_record_bytes,
        durability: meta.durability.log(),
        writer_lock: WriterLock::Shared,
        // Single-record puts are small, and each is fsynced before it returns.
        prefill: meta.durability == DurabilityMode::Always,
        ..LogOptions::default()
    }
}

fn open_log(dir: &DirInner, meta: &StreamMeta, index: u32) -> Result<Log> {
    Log::open(
        Arc::clone(&dir.storage),
        Arc::clone(&dir.clock),
        shard_dir(dir, &meta.name, index),
        log_options(meta),
    )
}

/// Opens a reader of a shard. The head is never fsynced, so after a power loss it may be
/// missing, torn, or older than the data it describes, until a writer opens the log again.
/// A reader trusting such a head would not return acknowledged records (of a closed shard,
/// never). So when the head does not cover the whole active segment file, the log is first
/// opened for writing (which waits for a writer appending meanwhile, and whose recovery
/// publishes a head that covers every record), as the next put would.
fn open_reader(dir: &DirInner, meta: &StreamMeta, index: u32) -> Result<LogReader> {
    let path = shard_dir(dir, &meta.name, index);
    if crate::log::head_behind(&*dir.storage, &path) {
        drop(open_log(dir, meta, index)?);
    }
    LogReader::open(Arc::clone(&dir.storage), &path)
}

fn create_shard_log(dir: &DirInner, meta: &StreamMeta, index: u32) -> Result<()> {
    let path = shard_dir(dir, &meta.name, index);
    // A leftover of an interrupted reshard that never made it into the map.
    dir.remove_tree(&path)?;
    open_log(dir, meta, index).map(drop)
}

fn describe(dir: &DirInner, meta: &StreamMeta) -> Result<StreamDescription> {
    let mut shards = Vec::with_capacity(meta.shards.len());
    for shard in &meta.shards {
        let ending = if shard.closed {
            let reader = open_reader(dir, meta, shard.index)?;
            let end = reader.sealed_at()?.unwrap_or(reader.next_offset()?);
            Some(
                SequenceNumber {
                    shard: shard.index,
                    offset: end.saturating_sub(1),
                }
                .encode(),
            )
        } else {
            None
        };
        shards.push(ShardDescription {
            shard_id: shard_id(shard.index),
            parent_shard_id: shard.parents.first().map(|p| shard_id(*p)),
            adjacent_parent_shard_id: shard.parents.get(1).map(|p| shard_id(*p)),
            starting_hash_key: shard.start_hash,
            ending_hash_key: shard.end_hash,
            starting_sequence_number: SequenceNumber {
                shard: shard.index,
                offset: 0,
            }
            .encode(),
            ending_sequence_number: ending,
            open: !shard.closed,
        });
    }
    Ok(StreamDescription {
        name: meta.name.clone(),
        status: "ACTIVE",
        retention_hours: meta.retention_ms / 3_600_000,
        retention_ms: meta.retention_ms,
        created_ms: meta.created_ms,
        max_record_bytes: meta.max_record_bytes,
        enforce_limits: meta.enforce_limits,
        durability: meta.durability,
        shards,
    })
}
