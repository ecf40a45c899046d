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
mod keys;
mod limits;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use consumer::{Consumer, ConsumerBatch};
pub use keys::{
    SequenceNumber, hash_partition_key, parse_hash_key, parse_shard_id, shard_id, uniform_ranges,
};

use crate::datadir::{DataDir, DirInner};
use crate::error::{Error, Result};
use crate::log::{Durability, Entry, Log, LogOptions, LogReader, ReadLimit, Retention, WriterLock};
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

/// How a shard log's writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StreamDurability {
    /// fsync before a put is acknowledged (group commit). The default.
    #[default]
    Always,
    /// fsync in the background every this many milliseconds.
    IntervalMs(u64),
    /// Never fsync (a process crash loses nothing, a power loss may).
    Never,
}

impl StreamDurability {
    fn log(self) -> Durability {
        match self {
            StreamDurability::Always => Durability::Always,
            StreamDurability::IntervalMs(ms) => Durability::Interval(Duration::from_millis(ms)),
            StreamDurability::Never => Durability::Never,
        }
    }
}

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
    pub durability: StreamDurability,
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
            durability: StreamDurability::Always,
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
    durability: StreamDurability,
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
    pub durability: StreamDurability,
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
        let _lock = lock_streams(dir)?;
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
        let streams = dir.root.join("streams");
        let names = match dir.storage.list_dir(&streams) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &streams, e)),
        };
        let mut out: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| validate_stream_name(n).is_ok())
            .filter(|n| dir.storage.exists(&streams.join(n).join(META_FILE)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Describes a stream.
    pub fn describe_stream(&self, name: &str) -> Result<StreamDescription> {
        let dir = self.inner();
        describe(dir, &load_meta(dir, name)?)
    }

    /// Deletes a stream and all its records.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        let dir = self.inner();
        let _lock = lock_streams(dir)?;
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
        let _lock = lock_streams(dir)?;
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
    dir.root.join("streams").join(name)
}

fn shard_dir(dir: &DirInner, name: &str, index: u32) -> PathBuf {
    stream_dir(dir, name)
        .join("shards")
        .join(format!("{index:012}"))
}

fn lock_streams(dir: &DirInner) -> Result<Box<dyn crate::storage::LockGuard>> {
    let streams = dir.root.join("streams");
    dir.ensure_dir(&streams)?;
    dir.lock(&streams.join("LOCK"))
}

fn load_meta(dir: &DirInner, name: &str) -> Result<StreamMeta> {
    validate_stream_name(name)?;
    let path = stream_dir(dir, name).join(META_FILE);
    meta::read(&*dir.storage, &path, STREAM_MAGIC)?.ok_or_else(|| Error::NotFound {
        kind: "stream",
        name: name.to_string(),
    })
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
            let reader = LogReader::open(
                Arc::clone(&dir.storage),
                shard_dir(dir, &meta.name, shard.index),
            )?;
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

/// Shards to close, and the shards to create as (parents, first hash key, last hash key).
type ReshardPlan = (Vec<u32>, Vec<(Vec<u32>, u128, u128)>);

/// An open stream: puts, iterators, reads, resharding. Caches shard logs; share it between
/// threads.
#[derive(Debug)]
pub struct Stream {
    dir: Arc<DirInner>,
    name: String,
    meta: RwLock<Arc<StreamMeta>>,
    writers: Mutex<HashMap<u32, Arc<Log>>>,
    readers: Mutex<HashMap<u32, Arc<LogReader>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn meta(&self) -> Arc<StreamMeta> {
        Arc::clone(&self.meta.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reload(&self) -> Result<Arc<StreamMeta>> {
        let meta = Arc::new(load_meta(&self.dir, &self.name)?);
        *self.meta.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&meta);
        Ok(meta)
    }

    /// Describes the stream as of now.
    pub fn describe(&self) -> Result<StreamDescription> {
        let meta = self.reload()?;
        describe(&self.dir, &meta)
    }

    fn writer(&self, meta: &StreamMeta, index: u32) -> Result<Arc<Log>> {
        let mut writers = lock(&self.writers);
        if let Some(log) = writers.get(&index) {
            return Ok(Arc::clone(log));
        }
        let log = Arc::new(open_log(&self.dir, meta, index)?);
        // Retention is enforced by writers, whole segments at a time; readers also skip
        // expired records, so nothing expired is ever returned.
        log.enforce_retention(&Retention {
            max_age: Some(Duration::from_millis(meta.retention_ms)),
            max_bytes: None,
        })?;
        writers.insert(index, Arc::clone(&log));
        Ok(log)
    }

    fn reader(&self, index: u32) -> Result<Arc<LogReader>> {
        let mut readers = lock(&self.readers);
        if let Some(reader) = readers.get(&index) {
            return Ok(Arc::clone(reader));
        }
        let reader = Arc::new(LogReader::open(
            Arc::clone(&self.dir.storage),
            shard_dir(&self.dir, &self.name, index),
        )?);
        readers.insert(index, Arc::clone(&reader));
        Ok(reader)
    }

    /// Checks a record before anything is written.
    pub fn validate(&self, record: &PutRecord<'_>) -> Result<()> {
        let chars = record.partition_key.chars().count();
        if chars == 0 || chars > 256 {
            return Err(Error::InvalidArgument(format!(
                "partition key must be 1 to 256 characters, not {chars}"
            )));
        }
        let size = record.partition_key.len() as u64 + record.data.len() as u64;
        let max = u64::from(self.meta().max_record_bytes);
        if size > max {
            return Err(Error::RecordTooLarge { size, max });
        }
        Ok(())
    }

    /// Puts records: each goes to the open shard owning its hash key; records for one shard
    /// are appended as one atomic batch. At most [`MAX_PUT_RECORDS`] per call. Every record is
    /// validated before anything is written.
    pub fn put_records(&self, records: &[PutRecord<'_>]) -> PutOutcome {
        let mut outcome = PutOutcome {
            results: Vec::new(),
            error: None,
        };
        if records.len() > MAX_PUT_RECORDS {
            outcome.error = Some(Error::InvalidArgument(format!(
                "at most {MAX_PUT_RECORDS} records per put, not {}",
                records.len()
            )));
            return outcome;
        }
        if let Some(e) = records.iter().find_map(|r| self.validate(r).err()) {
            outcome.error = Some(e);
            return outcome;
        }
        let mut results: Vec<Option<PutResult>> = vec![None; records.len()];
        if let Err(e) = self.put_routed(records, &mut results) {
            outcome.error = Some(e);
        }
        outcome.results = results.into_iter().map_while(|r| r).collect();
        if outcome.error.is_none() && outcome.results.len() < records.len() {
            outcome.error = Some(Error::Conflict("records were not all stored".into()));
        }
        outcome
    }

    fn put_routed(
        &self,
        records: &[PutRecord<'_>],
        results: &mut [Option<PutResult>],
    ) -> Result<()> {
        // A shard found sealed means the map changed (or a reshard died halfway): look again,
        // a bounded number of times.
        for attempt in 0..4 {
            let meta = if attempt == 0 {
                self.meta()
            } else {
                self.reload()?
            };
            let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
            for (i, record) in records.iter().enumerate() {
                if results[i].is_some() {
                    continue;
                }
                let hash = record
                    .explicit_hash_key
                    .unwrap_or_else(|| hash_partition_key(record.partition_key));
                let shard = meta.open_shard_for(hash).ok_or_else(|| {
                    Error::Conflict(format!("no open shard owns hash key {hash}"))
                })?;
                groups.entry(shard.index).or_default().push(i);
            }
            if groups.is_empty() {
                return Ok(());
            }
            if meta.enforce_limits {
                self.charge_writes(records, &groups)?;
            }
            // One batch per shard. When each waits for its fsync, the shards' appends run in
            // parallel so the fsyncs overlap instead of queueing one behind the other.
            let append = |shard: u32, indexes: &[usize]| -> Result<u64> {
                let log = self.writer(&meta, shard)?;
                let entries: Vec<Entry<'_>> = indexes
                    .iter()
                    .map(|&i| Entry {
                        kind: KIND_RECORD,
                        header: records[i].partition_key.as_bytes(),
                        payload: records[i].data,
                    })
                    .collect();
                log.append(&entries).map(|appended| appended.first_offset)
            };
            let parallel = groups.len() > 1 && meta.durability == StreamDurability::Always;
            let outcomes: Vec<(u32, Vec<usize>, Result<u64>)> = if !parallel {
                groups
                    .into_iter()
                    .map(|(shard, indexes)| {
                        let outcome = append(shard, &indexes);
                        (shard, indexes, outcome)
                    })
                    .collect()
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = groups
                        .into_iter()
                        .map(|(shard, indexes)| {
                            scope.spawn(move || {
                                let outcome = append(shard, &indexes);
                                (shard, indexes, outcome)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                        })
                        .collect()
                })
            };
            let mut sealed = false;
            let mut failure = None;
            for (shard, indexes, outcome) in outcomes {
                match outcome {
                    Ok(first_offset) => {
                        for (k, &i) in indexes.iter().enumerate() {
                            results[i] = Some(PutResult {
                                shard,
                                sequence: SequenceNumber {
                                    shard,
                                    offset: first_offset + k as u64,
                                },
                            });
                        }
                    }
                    Err(Error::Sealed { .. }) => {
                        lock(&self.writers).remove(&shard);
                        sealed = true;
                    }
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if !sealed {
                return Ok(());
            }
            if attempt >= 1 {
                self.repair_interrupted_reshard()?;
            }
        }
        Err(Error::Conflict(
            "the stream is being resharded; try again".into(),
        ))
    }

    /// Charges every shard's write budget for its group, all or nothing: one shard over its
    /// limit throttles the whole put before anything is written.
    fn charge_writes(
        &self,
        records: &[PutRecord<'_>],
        groups: &BTreeMap<u32, Vec<usize>>,
    ) -> Result<()> {
        let demand = |indexes: &Vec<usize>| limits::Demand::Write {
            records: indexes.len() as u64,
            bytes: indexes
                .iter()
                .map(|&i| (records[i].data.len() + records[i].partition_key.len()) as u64)
                .sum(),
        };
        let mut charged: Vec<(u32, limits::Demand)> = Vec::new();
        for (&shard, indexes) in groups {
            let wanted = demand(indexes);
            let dir = shard_dir(&self.dir, &self.name, shard);
            if let Err(e) = limits::charge(&self.dir, &dir, wanted, false) {
                for (shard, done) in charged {
                    let dir = shard_dir(&self.dir, &self.name, shard);
                    let _ = limits::charge(&self.dir, &dir, done, true);
                }
                return Err(e);
            }
            charged.push((shard, wanted));
        }
        Ok(())
    }

    /// Unseals shards the map says are open: a reshard sealed them and died before writing the
    /// new map, so nothing took their place.
    fn repair_interrupted_reshard(&self) -> Result<()> {
        let _lock = lock_streams(&self.dir)?;
        let meta = self.reload()?;
        for shard in meta.shards.iter().filter(|s| !s.closed) {
            let log = self.writer(&meta, shard.index)?;
            if log.is_sealed() || log.reader().sealed_at()?.is_some() {
                log.unseal()?;
            }
        }
        Ok(())
    }

    /// Indexes of every shard, open and closed, parents before children.
    pub fn shard_indexes(&self) -> Result<Vec<u32>> {
        Ok(self.reload()?.shards.iter().map(|s| s.index).collect())
    }

    /// The shards `index` was made from.
    pub fn parents(&self, index: u32) -> Result<Vec<u32>> {
        Ok(self.meta().shard(index)?.parents.clone())
    }

    /// The shards made from `index`.
    pub fn children(&self, index: u32) -> Result<Vec<u32>> {
        let meta = self.reload()?;
        Ok(meta
            .shards
            .iter()
            .filter(|s| s.parents.contains(&index))
            .map(|s| s.index)
            .collect())
    }

    fn retention_cutoff(&self) -> u64 {
        self.dir
            .clock
            .now_ms()
            .saturating_sub(self.meta().retention_ms)
    }

    /// The first offset of a shard that retention has not expired.
    fn trim_horizon(&self, reader: &LogReader) -> Result<u64> {
        let by_time = reader.offset_at_time(self.retention_cutoff())?;
        Ok(by_time.max(reader.start_offset()?))
    }

    /// An iterator over one shard.
    pub fn shard_iterator(&self, shard: u32, start: StartPosition) -> Result<ShardIterator> {
        let meta = self.reload()?;
        meta.shard(shard)?;
        let reader = self.reader(shard)?;
        let offset = match start {
            StartPosition::TrimHorizon => self.trim_horizon(&reader)?,
            StartPosition::Latest => reader.next_offset()?,
            StartPosition::AtSequence(seq) | StartPosition::AfterSequence(seq) => {
                if seq.shard != shard {
                    return Err(Error::InvalidArgument(format!(
                        "sequence number {} belongs to {}, not {}",
                        seq.encode(),
                        shard_id(seq.shard),
                        shard_id(shard)
                    )));
                }
                let after = matches!(start, StartPosition::AfterSequence(_));
                seq.offset + u64::from(after)
            }
            StartPosition::AtTimestamp(ms) => reader.offset_at_time(ms)?,
        };
        Ok(ShardIterator {
            shard,
            next_offset: offset,
        })
    }

    /// Reads up to `limit` records at the iterator and advances it. Expired records are never
    /// returned: an iterator behind the trim horizon moves up to it.
    pub fn get_records(&self, it: &mut ShardIterator, limit: usize) -> Result<GetRecordsOutput> {
        let reader = self.reader(it.shard)?;
        let enforce = self.meta().enforce_limits;
        let limit_dir = shard_dir(&self.dir, &self.name, it.shard);
        if enforce {
            // Refused when this second's budget is spent; the read itself is charged below.
            limits::charge(&self.dir, &limit_dir, limits::Demand::ReadAdmit, false)?;
        }
        let horizon = self.trim_horizon(&reader)?;
        it.next_offset = it.next_offset.max(horizon);
        let cutoff = self.retention_cutoff();
        let batch = match reader.read(it.next_offset, ReadLimit::records(limit.max(1))) {
            Ok(batch) => batch,
            Err(Error::OffsetTrimmed { start, .. }) => {
                it.next_offset = start;
                reader.read(start, ReadLimit::records(limit.max(1)))?
            }
            Err(e) => return Err(e),
        };
        let id = shard_id(it.shard);
        let mut records = Vec::with_capacity(batch.len());
        for record in batch.iter() {
            if record.timestamp_ms < cutoff || record.kind != KIND_RECORD {
                continue;
            }
            records.push(StreamRecord {
                shard_id: id.clone(),
                sequence_number: SequenceNumber {
                    shard: it.shard,
                    offset: record.offset,
                }
                .encode(),
                partition_key: String::from_utf8_lossy(record.header).into_owned(),
                arrival_timestamp_ms: record.timestamp_ms,
                data: record.payload.to_vec(),
            });
        }
        it.next_offset = batch.next_offset();
        if enforce {
            let bytes = records
                .iter()
                .map(|r| (r.data.len() + r.partition_key.len()) as u64)
                .sum();
            limits::charge(
                &self.dir,
                &limit_dir,
                limits::Demand::ReadCharge { bytes },
                false,
            )?;
        }
        let latest = reader.next_offset()?;
        let behind = match records.last() {
            Some(last) if it.next_offset < latest => self
                .dir
                .clock
                .now_ms()
                .saturating_sub(last.arrival_timestamp_ms),
            _ => 0,
        };
        let shard_ended = match reader.sealed_at()? {
            Some(end) => it.next_offset >= end,
            None => false,
        };
        Ok(GetRecordsOutput {
            records,
            millis_behind_latest: behind,
            shard_ended,
        })
    }

    /// Splits an open shard in two at `at` (the second child's first hash key; default the
    /// middle of its range).
    pub fn split_shard(&self, shard: u32, at: Option<u128>) -> Result<Vec<u32>> {
        self.reshard(|meta| {
            let parent = meta.shard(shard)?.clone();
            if parent.closed {
                return Err(Error::Conflict(format!("{} is closed", shard_id(shard))));
            }
            let at = at.unwrap_or(parent.start_hash + (parent.end_hash - parent.start_hash) / 2 + 1);
            if at <= parent.start_hash || at > parent.end_hash {
                return Err(Error::InvalidArgument(format!(
                    "split point {at} is not inside {}'s range {}..={} (it must be above the first key)",
                    shard_id(shard),
                    parent.start_hash,
                    parent.end_hash
                )));
            }
            Ok((
                vec![shard],
                vec![
                    (vec![shard], parent.start_hash, at - 1),
                    (vec![shard], at, parent.end_hash),
                ],
            ))
        })
    }

    /// Merges two open shards with adjacent hash key ranges into one.
    pub fn merge_shards(&self, shard: u32, adjacent: u32) -> Result<Vec<u32>> {
        self.reshard(|meta| {
            let a = meta.shard(shard)?.clone();
            let b = meta.shard(adjacent)?.clone();
            if a.closed || b.closed {
                return Err(Error::Conflict("both shards must be open to merge".into()));
            }
            let (low, high) = if a.start_hash < b.start_hash {
                (&a, &b)
            } else {
                (&b, &a)
            };
            if low.end_hash.checked_add(1) != Some(high.start_hash) {
                return Err(Error::InvalidArgument(format!(
                    "{} and {} are not adjacent",
                    shard_id(shard),
                    shard_id(adjacent)
                )));
            }
            Ok((
                vec![shard, adjacent],
                vec![(vec![shard, adjacent], low.start_hash, high.end_hash)],
            ))
        })
    }

    /// Replaces every open shard with `count` shards of equal ranges (like UpdateShardCount
    /// with uniform scaling). Each new shard's parents are the old shards its range overlaps.
    pub fn scale(&self, count: u32) -> Result<Vec<u32>> {
        if count == 0 || count > MAX_SHARDS {
            return Err(Error::InvalidArgument(format!(
                "shard count must be from 1 to {MAX_SHARDS}, not {count}"
            )));
        }
        self.reshard(|meta| {
            let open: Vec<&ShardMeta> = meta.shards.iter().filter(|s| !s.closed).collect();
            let children = uniform_ranges(count)
                .into_iter()
                .map(|(start, end)| {
                    let parents = open
                        .iter()
                        .filter(|s| s.start_hash <= end && start <= s.end_hash)
                        .map(|s| s.index)
                        .collect();
                    (parents, start, end)
                })
                .collect();
            Ok((open.iter().map(|s| s.index).collect(), children))
        })
    }

    /// The reshard protocol: under the streams lock, seal the parents (no process can append
    /// to them afterwards), create the children's logs, then write the new map.
    fn reshard(&self, plan: impl FnOnce(&StreamMeta) -> Result<ReshardPlan>) -> Result<Vec<u32>> {
        let _lock = lock_streams(&self.dir)?;
        let mut meta = (*self.reload()?).clone();
        let (parents, children) = plan(&meta)?;
        let open_after =
            meta.shards.iter().filter(|s| !s.closed).count() - parents.len() + children.len();
        if open_after > MAX_SHARDS as usize {
            return Err(Error::InvalidArgument(format!(
                "a stream may have at most {MAX_SHARDS} open shards"
            )));
        }
        for &parent in &parents {
            self.writer(&meta, parent)?.seal()?;
            lock(&self.writers).remove(&parent);
        }
        let now = self.dir.clock.now_ms();
        let mut created = Vec::new();
        for (parent_list, start_hash, end_hash) in children {
            let index = meta.next_shard_index;
            meta.next_shard_index += 1;
            create_shard_log(&self.dir, &meta, index)?;
            meta.shards.push(ShardMeta {
                index,
                parents: parent_list,
                start_hash,
                end_hash,
                closed: false,
                created_ms: now,
            });
            created.push(index);
        }
        for shard in meta
            .shards
            .iter_mut()
            .filter(|s| parents.contains(&s.index))
        {
            shard.closed = true;
        }
        write_meta(&self.dir, &meta)?;
        *self.meta.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(meta);
        Ok(created)
    }
}
