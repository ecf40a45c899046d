//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_replay.rs`, which replays every committed corpus file through them in the normal
//! test suite (no cargo-fuzz needed). `fuzz/README.md` says how to run them.
//!
//! Every function panics only on a finding:
//!
//! - a decoder that panics, or accepts bytes it would not have written;
//! - recovery that panics, or a log that returns bytes other than the ones appended at an
//!   offset, or (when no segment byte was damaged) loses a record whose append was
//!   acknowledged, keeps part of a batch, or fails to open;
//! - a log that disagrees with a model of it (a map of offset to record) over appends, reads,
//!   time lookups, reopens, crashes, rolls, retention, compaction, clock steps and I/O failures.
//!
//! The structure-aware targets build their logs with valid checksums and damage them
//! afterwards: a byte-level fuzzer would stop at the first checksum.
#![allow(
    clippy::missing_panics_doc,
    reason = "a panic here is the fuzzer's finding, by design"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::clock::{Clock, ManualClock};
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::{HEAD_LEN, Head};
use crate::codec::index::{self, INDEX_ENTRY_LEN, IndexEntry};
use crate::codec::record::{self, Decoded, FRAME_HEADER_LEN, FrameFields};
use crate::error::Error;
use crate::log::segment;
use crate::log::{
    Durability, Entry, Log, LogOptions, LogReader, ReadBatch, ReadLimit, Record, Retention,
};
use crate::meta;
use crate::storage::{CrashPlan, SharedStorage, SimStorage, Storage};

mod datadir;
mod decoders;
mod segment_file;
mod service;
pub use datadir::{BuildOp, DataDirInput, DirDamage, datadir_recovery, datadir_recovery_bytes};
pub use decoders::{consumer_checkpoint, queue_journal, queue_snapshot};
pub use segment_file::{SegmentFrame, SegmentInput, segment, segment_bytes};
pub use service::{From, SendSpec, ServiceInput, SvcOp, service_model, service_model_bytes};

// ------------------------------------------------------------------------------------------
// Known open bugs (none at the moment: a constant per bug name goes here while one is open).
// ------------------------------------------------------------------------------------------

/// True when the environment variable `SHOAL_FUZZ_SKIP` (names separated by commas) asks the
/// targets to step around the known, open engine bug `bug`, so fuzzing can go on looking for
/// others while it is being fixed. Unset, every check is strict, as in the replay test.
pub fn skip(bug: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("SHOAL_FUZZ_SKIP")
            .map(|names| names.split(',').map(|n| n.trim().to_owned()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|name| name == bug)
}

// ------------------------------------------------------------------------------------------
// Decoders: raw bytes.
// ------------------------------------------------------------------------------------------

/// Record frames: decoding never panics; a frame that decodes re-encodes, from its decoded
/// fields, to exactly the bytes it was decoded from; `decode_len` agrees with `decode`.
pub fn record_frame(data: &[u8]) {
    match record::decode(data) {
        Decoded::Frame(f) => {
            let mut again = Vec::new();
            record::encode_into(
                &mut again,
                &FrameFields {
                    offset: f.offset,
                    timestamp_ms: f.timestamp_ms,
                    kind: f.kind,
                    flags: f.flags,
                    header: f.header,
                    payload: f.payload,
                },
            )
            .expect("a decoded frame re-encodes");
            assert_eq!(
                again.as_slice(),
                data.get(..f.frame_len).expect("frame_len within the input"),
                "decode accepted bytes encode would not have written"
            );
            assert_eq!(record::decode_len(data).ok(), Some(f.frame_len));
            // A frame cut anywhere is incomplete, never a shorter frame.
            for cut in [f.frame_len - 1, FRAME_HEADER_LEN, FRAME_HEADER_LEN - 1] {
                if let Some(prefix) = data.get(..cut.min(f.frame_len - 1)) {
                    assert!(
                        matches!(record::decode(prefix), Decoded::Incomplete { .. }),
                        "a {cut}-byte prefix of a frame is not incomplete"
                    );
                }
            }
        }
        Decoded::Incomplete { needed } => assert!(needed > data.len()),
        Decoded::Corrupt(_) => {}
    }
}

/// Segment and index file headers: never panic; a header that decodes holds the fields at
/// their documented positions and re-encodes to an equal header (to the same bytes when the
/// reserved bytes are zero: decoding ignores them, as `engine/FORMAT.md` documents).
pub fn file_header(data: &[u8]) {
    for kind in [FileKind::Segment, FileKind::Index] {
        let Ok(header) = FileHeader::decode(kind, data) else {
            continue;
        };
        let bytes = data
            .get(..FILE_HEADER_LEN)
            .expect("a decoded header is long enough");
        assert_eq!(header.kind, kind);
        assert_eq!(header.base_offset.to_le_bytes(), bytes[16..24]);
        assert_eq!(header.base_timestamp_ms.to_le_bytes(), bytes[24..32]);
        let encoded = header.encode();
        assert_eq!(FileHeader::decode(kind, &encoded), Ok(header));
        let reserved_zero = bytes[10..16].iter().chain(&bytes[32..60]).all(|b| *b == 0);
        if reserved_zero && bytes[8..10] == crate::codec::FORMAT_VERSION.to_le_bytes() {
            assert_eq!(
                encoded[..],
                bytes[..],
                "header decode accepted foreign bytes"
            );
        }
    }
}

/// The head file: never panics; a head that decodes is consistent (synced <= committed, the
/// active segment's base <= next offset, start <= next offset) and re-encodes equal.
pub fn head(data: &[u8]) {
    let Ok(head) = Head::decode(data) else {
        return;
    };
    assert!(head.synced_len <= head.committed_len);
    assert!(head.active_base <= head.next_offset);
    assert!(head.start_offset <= head.next_offset);
    let encoded = head.encode();
    assert_eq!(Head::decode(&encoded), Ok(head));
    let bytes = data.get(..HEAD_LEN).expect("a decoded head is long enough");
    if bytes[10..16].iter().all(|b| *b == 0)
        && bytes[8..10] == crate::codec::FORMAT_VERSION.to_le_bytes()
    {
        assert_eq!(encoded[..], bytes[..], "head decode accepted foreign bytes");
    }
}

/// Index tables: the first 12 bytes are the bounds (u32 minimum position, u64 maximum), the
/// rest the table. `decode_entries` returns exactly the longest well-ordered, in-bounds prefix
/// of the table; the floor lookups agree with a linear search.
pub fn index_entries(data: &[u8]) {
    let (bounds, body) = data.split_at(data.len().min(12));
    let mut b = [0u8; 12];
    b[..bounds.len()].copy_from_slice(bounds);
    let min = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let max = u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
    let entries = index::decode_entries(body, min, max);
    let mut raw = body.chunks_exact(INDEX_ENTRY_LEN).map(|chunk| {
        IndexEntry::decode(chunk.try_into().expect("chunks_exact yields whole entries"))
    });
    let mut prev: Option<IndexEntry> = None;
    for entry in &entries {
        assert_eq!(
            raw.next().as_ref(),
            Some(entry),
            "not a prefix of the table"
        );
        assert!(entry.position >= min && u64::from(entry.position) < max);
        assert!(prev.is_none_or(|p| p.precedes(entry)));
        prev = Some(*entry);
    }
    // The prefix is the longest one: the next whole entry breaks a rule.
    if let Some(next) = raw.next() {
        let fits = next.position >= min
            && u64::from(next.position) < max
            && prev.is_none_or(|p| p.precedes(&next));
        assert!(!fits, "decode_entries stopped before a valid entry");
    }
    let rel = u32::try_from(max & u64::from(u32::MAX)).expect("masked to 32 bits");
    let by_offset = entries.iter().rev().find(|e| e.rel_offset <= rel);
    assert_eq!(index::floor_by_offset(&entries, rel), by_offset);
    let by_time = entries.iter().rev().find(|e| e.timestamp_ms < max);
    assert_eq!(index::floor_by_time(&entries, max), by_time);
}

/// Metadata frames: never panic, whatever the payload type; a value that decodes re-encodes to
/// a frame that decodes to the same value. (Not to the same bytes: bincode accepts
/// non-minimal varints.)
pub fn metadata(data: &[u8]) {
    let path = Path::new("/fuzz/meta");
    let magic = *b"SHOALSTM";
    let _ = meta::decode::<BTreeMap<String, Vec<Option<u32>>>>(magic, data, path);
    if let Ok(value) = meta::decode::<(String, Vec<u128>, u64, bool)>(magic, data, path) {
        let again = meta::encode(magic, &value).expect("a decoded value re-encodes");
        let back = meta::decode::<(String, Vec<u128>, u64, bool)>(magic, &again, path)
            .expect("a re-encoded value decodes");
        assert_eq!(back, value);
    }
}

// ------------------------------------------------------------------------------------------
// Inputs shared by the structure-aware targets.
// ------------------------------------------------------------------------------------------

/// One generated record. Its payload starts with the offset it is appended at, so a record
/// returned at the wrong offset never passes for the right one.
#[derive(Debug, Clone, Arbitrary)]
pub struct Rec {
    /// Kind tag.
    pub kind: u8,
    /// Header length, modulo 16.
    pub header_len: u8,
    /// Fill byte of the header and the payload.
    pub fill: u8,
    /// Payload length after the 8-byte offset, modulo 512.
    pub len: u16,
}

/// A crash, as [`SimStorage::crash`] simulates it.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum CrashKind {
    /// The process dies; the kernel keeps everything written.
    Process,
    /// Power loss: only fsynced bytes and directory entries survive.
    Power,
    /// Power loss keeping this many unsynced appended bytes of every file.
    PowerKeeping(u16),
    /// Power loss keeping a pseudo-random prefix of every file's unsynced appended bytes.
    PowerTorn(u64),
}

/// An I/O failure armed on the simulated storage.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Fault {
    /// The fsync after this many (modulo 8) successful ones fails with EIO.
    FailSync {
        /// Successful fsyncs before the failure.
        after: u8,
    },
    /// Only this many more bytes fit; writes past that fail with ENOSPC.
    NoSpace {
        /// Bytes left.
        bytes: u16,
    },
    /// The write after this many (modulo 8) successful ones keeps a prefix and fails.
    TearWrite {
        /// Successful writes before the torn one.
        after: u8,
        /// Bytes of it that reach the file.
        keep: u16,
    },
}

/// A record as appended, to compare reads against.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    kind: u8,
    header: Vec<u8>,
    payload: Vec<u8>,
    /// The append's timestamp; unknown for a batch whose append failed.
    timestamp_ms: Option<u64>,
}

impl Rec {
    fn want(&self, offset: u64) -> Want {
        let mut payload = offset.to_le_bytes().to_vec();
        payload.resize(8 + usize::from(self.len % 512), self.fill);
        Want {
            kind: self.kind,
            header: vec![self.fill.rotate_left(3); usize::from(self.header_len % 16)],
            payload,
            timestamp_ms: None,
        }
    }
}

impl Want {
    fn entry(&self) -> Entry<'_> {
        Entry {
            kind: self.kind,
            header: &self.header,
            payload: &self.payload,
        }
    }

    fn check(&self, r: &Record<'_>) {
        let same = r.kind == self.kind
            && r.header == self.header.as_slice()
            && r.payload == self.payload.as_slice()
            && self.timestamp_ms.is_none_or(|ts| ts == r.timestamp_ms);
        assert!(
            same,
            "wrong record at offset {}: read kind {} header {:?} payload {:?} ts {}, appended {self:?}",
            r.offset, r.kind, r.header, r.payload, r.timestamp_ms
        );
    }
}

/// A record as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    offset: u64,
    timestamp_ms: u64,
    kind: u8,
    header: Vec<u8>,
    payload: Vec<u8>,
}

impl Got {
    fn record(&self) -> Record<'_> {
        Record {
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            kind: self.kind,
            header: &self.header,
            payload: &self.payload,
        }
    }
}

const START_MS: u64 = 1_700_000_000_000;
/// Most records in one generated batch.
const MAX_BATCH: usize = 8;

fn dir() -> PathBuf {
    PathBuf::from("/fuzz/log")
}

fn log_options(segment_bytes: u16, index_interval: u8, durability: Durability) -> LogOptions {
    LogOptions {
        // 512..=4096 bytes: a few records per segment, so logs have many segments.
        segment_bytes_max: 512 + u64::from(segment_bytes % 3585),
        segment_age_max: Some(Duration::from_secs(60)),
        index_interval_bytes: 16 + u32::from(index_interval) * 2,
        durability,
        // Taken from a bit the field already had, so that stored inputs keep their layout.
        prefill: segment_bytes & 0x8000 != 0,
        ..LogOptions::default()
    }
}

fn open_log(
    storage: &SimStorage,
    clock: &Arc<ManualClock>,
    options: &LogOptions,
) -> crate::Result<Log> {
    let shared: SharedStorage = Arc::new(storage.clone());
    Log::open(shared, clock.clone(), dir(), options.clone())
}

fn plan(kind: CrashKind) -> CrashPlan {
    match kind {
        CrashKind::Process => CrashPlan::ProcessCrash,
        CrashKind::Power => CrashPlan::PowerLoss,
        CrashKind::PowerKeeping(bytes) => CrashPlan::PowerLossKeeping {
            bytes: u64::from(bytes),
        },
        CrashKind::PowerTorn(seed) => CrashPlan::PowerLossTorn { seed },
    }
}

fn arm(storage: &SimStorage, fault: Fault) {
    match fault {
        Fault::FailSync { after } => storage.fail_sync_after(u64::from(after % 8)),
        Fault::NoSpace { bytes } => storage.set_space_left(Some(u64::from(bytes))),
        Fault::TearWrite { after, keep } => {
            storage.tear_write_after(u64::from(after % 8), usize::from(keep));
        }
    }
}

fn wants(records: &[Rec], first: u64) -> Vec<Want> {
    records
        .iter()
        .take(MAX_BATCH)
        .zip(first..)
        .map(|(r, offset)| r.want(offset))
        .collect()
}

/// Reads every record from `from` to the end, in batches of at most `limit`. Every read must
/// succeed: callers use it only on logs nothing has damaged.
fn read_all(read: impl Fn(u64) -> crate::Result<ReadBatch>, from: u64) -> Vec<Got> {
    let mut out: Vec<Got> = Vec::new();
    let mut next = from;
    for _ in 0..100_000 {
        let batch =
            read(next).unwrap_or_else(|e| panic!("read({next}) of an undamaged log failed: {e}"));
        if batch.is_empty() {
            assert_eq!(batch.next_offset(), next);
            return out;
        }
        for r in batch.iter() {
            assert!(
                r.offset >= next,
                "read({next}) returned offset {}",
                r.offset
            );
            if let Some(prev) = out.last() {
                assert!(r.offset > prev.offset, "offsets out of order");
                assert!(
                    r.timestamp_ms >= prev.timestamp_ms,
                    "timestamps ran backwards at offset {}",
                    r.offset
                );
            }
            out.push(Got {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                kind: r.kind,
                header: r.header.to_vec(),
                payload: r.payload.to_vec(),
            });
        }
        let last = out.last().map_or(next, |g| g.offset + 1);
        assert_eq!(batch.next_offset(), last);
        next = last;
    }
    panic!("reading the log from {from} did not end");
}

/// The read limit of full scans: small batches, so scans cross many batch boundaries.
const SCAN_LIMIT: ReadLimit = ReadLimit {
    max_records: 5,
    max_bytes: 700,
};

// ------------------------------------------------------------------------------------------
// recovery: build a log, crash and damage it, reopen.
// ------------------------------------------------------------------------------------------

/// Damage done to a log's files after writing, before reopening. `file` picks one of the
/// files present (modulo their number): segments, indexes, the head, the lock file.
#[derive(Debug, Clone, Arbitrary)]
pub enum Damage {
    /// XOR a byte (bit rot).
    Flip {
        /// Which file.
        file: u8,
        /// Where (modulo the length).
        at: u32,
        /// XOR mask (0 becomes 1).
        mask: u8,
    },
    /// Cut the file.
    Truncate {
        /// Which file.
        file: u8,
        /// New length (modulo the length + 1).
        len: u32,
    },
    /// Zero a range.
    Zero {
        /// Which file.
        file: u8,
        /// Start (modulo the length).
        at: u32,
        /// Bytes.
        len: u16,
    },
    /// Delete the file.
    Delete {
        /// Which file.
        file: u8,
    },
    /// Append a run of one byte (a repeated byte never forms a valid frame header).
    Fill {
        /// Which file.
        file: u8,
        /// The byte.
        byte: u8,
        /// How many (modulo 4096).
        len: u16,
    },
    /// A misdirected write: copy a range of one file over a position of another.
    Copy {
        /// Source file.
        from: u8,
        /// Source position (modulo its length).
        at: u32,
        /// Bytes (modulo 1024).
        len: u16,
        /// Target file.
        to: u8,
        /// Target position (modulo its length + 1).
        to_at: u32,
    },
}

/// Input of the [`recovery`] target.
#[derive(Debug, Clone, Arbitrary)]
pub struct RecoveryInput {
    /// Segment size: 512 + this modulo 3585 bytes; the top bit also turns on
    /// [`LogOptions::prefill`].
    pub segment_bytes: u16,
    /// Index interval: 16 + 2 * this bytes.
    pub index_interval: u8,
    /// `Durability::Never` instead of `Always`.
    pub never: bool,
    /// Batches appended (at most 48 of at most 8 records).
    pub batches: Vec<Vec<Rec>>,
    /// An I/O failure armed before the appends.
    pub fault: Option<Fault>,
    /// How the writing process ends (`None`: it closes the log).
    pub crash: Option<CrashKind>,
    /// Damage to the files afterwards (at most 8).
    pub damage: Vec<Damage>,
}

/// Applies one damage; returns the path of the file changed.
fn apply_damage(storage: &SimStorage, damage: &Damage) -> Option<PathBuf> {
    let files = storage.files();
    let pick = |n: u8| files.get(usize::from(n) % files.len().max(1)).cloned();
    let contents = |path: &Path| storage.contents(path).unwrap_or_default();
    let wrap = |n: u32, len: usize| usize::try_from(n).unwrap_or(usize::MAX) % len.max(1);
    match damage {
        Damage::Flip { file, at, mask } => {
            let path = pick(*file)?;
            let len = contents(&path).len();
            if len > 0 {
                storage
                    .corrupt(&path, wrap(*at, len), (*mask).max(1))
                    .ok()?;
            }
            Some(path)
        }
        Damage::Truncate { file, len } => {
            let path = pick(*file)?;
            let bytes = contents(&path);
            let cut = usize::try_from(*len).unwrap_or(usize::MAX) % (bytes.len() + 1);
            storage.put_file(&path, &bytes[..cut]);
            Some(path)
        }
        Damage::Zero { file, at, len } => {
            let path = pick(*file)?;
            let mut bytes = contents(&path);
            let start = wrap(*at, bytes.len()).min(bytes.len());
            let end = (start + usize::from(*len)).min(bytes.len());
            bytes[start..end].fill(0);
            storage.put_file(&path, &bytes);
            Some(path)
        }
        Damage::Delete { file } => {
            let path = pick(*file)?;
            storage.remove_file(&path).ok()?;
            Some(path)
        }
        Damage::Fill { file, byte, len } => {
            let path = pick(*file)?;
            let mut bytes = contents(&path);
            bytes.resize(bytes.len() + usize::from(*len % 4096), *byte);
            storage.put_file(&path, &bytes);
            Some(path)
        }
        Damage::Copy {
            from,
            at,
            len,
            to,
            to_at,
        } => {
            let source = contents(&pick(*from)?);
            let start = wrap(*at, source.len()).min(source.len());
            let end = (start + usize::from(*len % 1024)).min(source.len());
            let path = pick(*to)?;
            let mut bytes = contents(&path);
            let pos = usize::try_from(*to_at).unwrap_or(usize::MAX) % (bytes.len() + 1);
            let chunk = &source[start..end];
            if bytes.len() < pos + chunk.len() {
                bytes.resize(pos + chunk.len(), 0);
            }
            bytes[pos..pos + chunk.len()].copy_from_slice(chunk);
            storage.put_file(&path, &bytes);
            Some(path)
        }
    }
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == segment::SEGMENT_EXT)
}

/// Recovery: append valid batches to a log on the simulated storage (optionally with an I/O
/// failure armed), end the process (close, process crash or power loss), damage the files,
/// reopen.
///
/// Always: opening never panics, and a log that opens returns, at every offset it returns,
/// exactly the record appended there. When no segment byte was damaged (damage only to
/// indexes and the head, which are hints, or none): the log opens; every record whose append
/// was acknowledged is there (after a power loss in `Never` mode: everything in sealed
/// segments); no batch is kept in part; reads return exactly the records from 0 to the next
/// offset; and the log accepts and returns a new append.
pub fn recovery(input: RecoveryInput) {
    let durability = if input.never {
        Durability::Never
    } else {
        Durability::Always
    };
    let options = log_options(input.segment_bytes, input.index_interval, durability);
    let clock = ManualClock::new(START_MS);
    let storage = SimStorage::new();
    let log = open_log(&storage, &clock, &options).expect("a fresh log opens");
    let mut appended: BTreeMap<u64, Want> = BTreeMap::new();
    let mut boundaries = BTreeSet::from([0u64]);
    let (mut acked_end, mut written_end) = (0u64, 0u64);
    if let Some(fault) = input.fault {
        arm(&storage, fault);
    }
    for batch in input.batches.iter().take(48) {
        let first = log.next_offset();
        let batch = wants(batch, first);
        if batch.is_empty() {
            continue;
        }
        let entries: Vec<Entry<'_>> = batch.iter().map(Want::entry).collect();
        let end = first + batch.len() as u64;
        let outcome = log.append(&entries);
        written_end = end;
        boundaries.insert(end);
        match outcome {
            Ok(a) => {
                assert_eq!((a.first_offset, a.count), (first, batch.len() as u64));
                acked_end = end;
                for (offset, mut want) in (first..).zip(batch) {
                    want.timestamp_ms = Some(a.timestamp_ms);
                    appended.insert(offset, want);
                }
            }
            Err(_) => {
                // Maybe on disk (written, then its fsync failed), maybe not.
                appended.extend((first..).zip(batch));
                let refused = log.append(&[Entry::new(b"after a failure")]);
                assert!(
                    refused.is_err(),
                    "an append succeeded after an I/O failure, before reopening (DESIGN rule 5)"
                );
                break;
            }
        }
        clock.advance(7);
    }
    storage.clear_faults();
    // What must survive: acknowledged appends; after a power loss in Never mode only what was
    // fsynced, which is everything before the active segment (a segment is synced when sealed).
    let sealed_end = log
        .segments()
        .expect("list segments")
        .last()
        .copied()
        .unwrap_or(0);
    let plan = input.crash.map(plan);
    let must_keep = match (plan, durability) {
        (None | Some(CrashPlan::ProcessCrash), _) | (_, Durability::Always) => acked_end,
        _ => sealed_end.min(acked_end),
    };
    let storage = match plan {
        Some(plan) => storage.crash(plan),
        None => storage,
    };
    drop(log);

    let mut strict = true;
    let head_path = dir().join(segment::HEAD_FILE);
    let mut head_damaged = false;
    for damage in input.damage.iter().take(8) {
        if let Some(path) = apply_damage(&storage, damage) {
            strict &= !is_segment(&path);
            head_damaged |= path == head_path;
        }
    }
    // An undamaged head that says its active segment is synced up to its committed length
    // vouches for every record before its next offset: damage there must be reported, never
    // cut off (DESIGN, on-disk rule 6).
    // (That holds where the head's active segment is missing too: the open refuses when the
    // head says records were committed there.)
    let vouched = storage
        .contents(&head_path)
        .ok()
        .and_then(|bytes| Head::decode(&bytes).ok())
        .filter(|h| !head_damaged && h.synced_len == h.committed_len)
        .map_or(0, |h| h.next_offset);

    let log = match open_log(&storage, &clock, &options) {
        Ok(log) => log,
        Err(e) => {
            assert!(
                !strict,
                "the log does not open, yet no segment byte was damaged: {e}"
            );
            return;
        }
    };
    let next = log.next_offset();
    assert!(
        next >= vouched,
        "recovery cut records the head vouches for as synced: the log ends at {next}, the head \
         says {vouched}"
    );
    if strict {
        assert_eq!(log.start_offset(), 0);
        assert!(
            next >= must_keep,
            "acknowledged records lost: the log ends at {next}, acknowledged up to {must_keep}"
        );
        assert!(
            next <= written_end,
            "the log ends at {next}, past everything written ({written_end})"
        );
        assert!(
            boundaries.contains(&next),
            "part of a batch survived: the log ends at {next}"
        );
        let got = read_all(|from| log.read(from, SCAN_LIMIT), 0);
        let offsets: Vec<u64> = got.iter().map(|g| g.offset).collect();
        assert!(
            offsets.iter().copied().eq(0..next),
            "reads skip or invent offsets: {offsets:?}"
        );
        for g in &got {
            appended
                .get(&g.offset)
                .unwrap_or_else(|| panic!("offset {} was never appended", g.offset))
                .check(&g.record());
        }
    } else {
        sweep(&log, &appended, written_end);
    }

    // A recovered log takes appends at its end and returns them.
    appended.retain(|offset, _| *offset < next);
    let want = Rec {
        kind: 9,
        header_len: 3,
        fill: 0xEE,
        len: 40,
    }
    .want(next);
    match log.append(&[want.entry()]) {
        Ok(a) => {
            assert_eq!(a.first_offset, next);
            match log.read(next, ReadLimit::records(1)) {
                Ok(batch) => match batch.iter().next() {
                    Some(r) => {
                        assert_eq!(r.offset, next);
                        want.check(&r);
                    }
                    None => assert!(!strict, "the record just appended is not readable"),
                },
                Err(e) => assert!(!strict, "the record just appended is not readable: {e}"),
            }
        }
        Err(e) => assert!(!strict, "the recovered log refuses appends: {e}"),
    }
}

/// Reads a damaged log wherever it lets itself be read: every record returned must be the one
/// appended at its offset. Errors are fine (damage is reported, not hidden).
fn sweep(log: &Log, appended: &BTreeMap<u64, Want>, end: u64) {
    let mut from = 0;
    for _ in 0..4096 {
        if from > end {
            return;
        }
        match log.read(from, ReadLimit::records(64)) {
            Ok(batch) if !batch.is_empty() => {
                let mut prev = None;
                for r in batch.iter() {
                    assert!(
                        r.offset >= from,
                        "read({from}) returned offset {}",
                        r.offset
                    );
                    assert!(prev.is_none_or(|p| r.offset > p), "offsets out of order");
                    let want = appended
                        .get(&r.offset)
                        .unwrap_or_else(|| panic!("offset {} was never appended", r.offset));
                    want.check(&r);
                    prev = Some(r.offset);
                }
                from = batch.next_offset().max(from + 1);
            }
            _ => from += 1,
        }
    }
}

// ------------------------------------------------------------------------------------------
// log_model: the log against a model.
// ------------------------------------------------------------------------------------------

/// One step of the [`log_model`] target.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Append a batch (at most 8 records; an empty one is skipped).
    Append(Vec<Rec>),
    /// Read from an offset (modulo three past the end).
    Read {
        /// Through a separate [`LogReader`] (another process's view) instead of the log.
        external: bool,
        /// Start offset.
        from: u16,
        /// Most records (modulo 65; 0 reads nothing).
        max_records: u8,
        /// Most bytes, if limited.
        max_bytes: Option<u16>,
    },
    /// `offset_at_time` for the timestamp of a record (picked modulo their number) plus a
    /// small step, or for the clock plus the step in an empty log.
    OffsetAtTime {
        /// Which record's timestamp.
        pick: u16,
        /// Added to it, in ms.
        delta: i8,
    },
    /// Close and reopen.
    Reopen,
    /// Crash, then reopen.
    Crash(CrashKind),
    /// Seal the active segment.
    Roll,
    /// fsync what was appended (a no-op with `Always`).
    Sync,
    /// Enforce retention.
    Retain {
        /// Most bytes kept: this times 16.
        max_bytes: Option<u16>,
        /// Oldest kept: this times 16 ms.
        max_age: Option<u16>,
    },
    /// Compact a sealed segment (picked modulo their number), keeping the records whose offset
    /// modulo 8 is a set bit of `keep`.
    Compact {
        /// Which sealed segment.
        segment: u8,
        /// Bit mask over offset modulo 8.
        keep: u8,
    },
    /// Move the clock by this times 16 ms (backwards too).
    Clock(i16),
    /// Arm an I/O failure (cleared at the next reopen).
    Fault(Fault),
}

/// Input of the [`log_model`] target.
#[derive(Debug, Clone, Arbitrary)]
pub struct LogModelInput {
    /// `Durability::Never` instead of `Always`.
    pub never: bool,
    /// Segment size: 512 + this modulo 3585 bytes; the top bit also turns on
    /// [`LogOptions::prefill`].
    pub segment_bytes: u16,
    /// Index interval: 16 + 2 * this bytes.
    pub index_interval: u8,
    /// The steps (at most 64).
    pub ops: Vec<Op>,
}

/// What the log must hold.
#[derive(Debug, Default)]
struct Model {
    /// Committed records present in the log (acknowledged, or recovered after a failure).
    known: BTreeMap<u64, Want>,
    /// A failed append's batch: it may or may not be on disk until the next reopen says.
    pending: BTreeMap<u64, Want>,
    /// Every record committed since the storage last crashed: a reader with an old mapping may
    /// still return records compaction or retention removed since.
    ever: BTreeMap<u64, Want>,
    /// First offset kept by retention.
    start: u64,
    /// One past the last committed record (acknowledged end).
    next: u64,
    /// One past the last record any append wrote (or may have).
    written_end: u64,
    /// One past the last record known fsynced.
    durable_end: u64,
    /// Where batches end: a recovered log ends at one of them.
    boundaries: BTreeSet<u64>,
    /// Timestamp of the newest committed record.
    last_ts: u64,
    /// One past the last record a read returned from a failed append's batch.
    seen_end: u64,
}

struct Harness {
    never: bool,
    options: LogOptions,
    clock: Arc<ManualClock>,
    storage: SimStorage,
    log: Option<Log>,
    reader: Option<LogReader>,
    m: Model,
    /// An append or roll failed since the last open: appends must be refused.
    poisoned: bool,
    /// Some operation failed since the last open: reads may fail too.
    degraded: bool,
    /// A fault is armed.
    faults_armed: bool,
    /// Retention failed part way: the start may have moved.
    start_uncertain: bool,
}

impl Harness {
    fn log(&self) -> &Log {
        self.log.as_ref().expect("the harness keeps a log open")
    }

    fn append(&mut self, records: &[Rec]) {
        let first = self.log().next_offset();
        if !self.degraded {
            assert_eq!(first, self.m.next, "the log's next offset");
        }
        let batch = wants(records, first);
        if batch.is_empty() {
            return;
        }
        let end = first + batch.len() as u64;
        let now = self.clock.now_ms();
        let entries: Vec<Entry<'_>> = batch.iter().map(Want::entry).collect();
        match self.log().append(&entries) {
            Ok(a) => {
                assert!(
                    !self.poisoned,
                    "an append succeeded after an I/O failure, before reopening (DESIGN rule 5)"
                );
                assert_eq!((a.first_offset, a.count), (first, batch.len() as u64));
                assert!(a.timestamp_ms >= now, "timestamp behind the clock");
                assert!(a.timestamp_ms >= self.m.last_ts, "timestamps ran backwards");
                for (offset, mut want) in (first..).zip(batch) {
                    want.timestamp_ms = Some(a.timestamp_ms);
                    self.m.ever.insert(offset, want.clone());
                    self.m.known.insert(offset, want);
                }
                self.m.last_ts = a.timestamp_ms;
                self.m.next = end;
                self.m.written_end = end;
                self.m.boundaries.insert(end);
                if !self.never {
                    self.m.durable_end = end;
                }
            }
            Err(_) => {
                if !self.poisoned {
                    self.m.pending.extend((first..).zip(batch));
                    self.m.written_end = self.m.written_end.max(end);
                    self.m.boundaries.insert(end);
                }
                self.poisoned = true;
                self.degraded = true;
            }
        }
    }

    fn read(&mut self, external: bool, from: u16, max_records: u8, max_bytes: Option<u16>) {
        let from = u64::from(from) % (self.m.next + 3);
        let limit = ReadLimit {
            max_records: usize::from(max_records % 65),
            max_bytes: max_bytes.map_or(usize::MAX, usize::from),
        };
        if external && self.reader.is_none() {
            let shared: SharedStorage = Arc::new(self.storage.clone());
            match LogReader::open(shared, dir()) {
                Ok(reader) => self.reader = Some(reader),
                Err(e) => {
                    assert!(self.degraded, "a reader does not open: {e}");
                    return;
                }
            }
        }
        let reader = match &self.reader {
            Some(reader) if external => reader,
            _ => self.log().reader(),
        };
        let result = reader.read(from, limit);
        if !self.degraded {
            assert_eq!(
                reader.next_offset().ok(),
                Some(self.m.next),
                "the reader's next offset"
            );
        }
        let m = &self.m;
        let mut seen_end = m.seen_end;
        let batch = match result {
            Ok(batch) => batch,
            Err(Error::OffsetTrimmed { requested, start }) if from < m.start || self.degraded => {
                assert_eq!(requested, from);
                assert!(start > from);
                return;
            }
            Err(e) => {
                assert!(self.degraded, "read({from}, {limit:?}) failed: {e}");
                return;
            }
        };
        // A separate reader may still hold the mapping of a segment compaction or retention
        // replaced: it may return records since removed, never different ones.
        let stale_ok = external || self.degraded;
        if from < m.start && !stale_ok {
            panic!(
                "read({from}) of a trimmed offset returned {} records",
                batch.len()
            );
        }
        assert!(batch.len() <= limit.max_records);
        let mut bound = from;
        let mut bytes = 0;
        for r in batch.iter() {
            assert!(r.offset >= bound, "offsets out of order or before {from}");
            // A failed append may still have landed and been published (say, the head write
            // reached the disk and then reported EIO): it may be read, and from then on it
            // must stay.
            let want = m
                .known
                .get(&r.offset)
                .or_else(|| {
                    let found = m.pending.get(&r.offset).filter(|_| self.degraded);
                    if found.is_some() {
                        seen_end = seen_end.max(r.offset + 1);
                    }
                    found
                })
                .or_else(|| m.ever.get(&r.offset).filter(|_| stale_ok));
            let want = want.unwrap_or_else(|| {
                panic!(
                    "read({from}) returned offset {}, which is not in the log",
                    r.offset
                )
            });
            want.check(&r);
            if !self.degraded && from >= m.start {
                let skipped = m.known.range(bound..r.offset).next();
                assert!(skipped.is_none(), "read({from}) skipped offset {skipped:?}");
            }
            bound = r.offset + 1;
            bytes += r.header.len() + r.payload.len();
        }
        if batch.len() > 1 {
            assert!(
                bytes <= limit.max_bytes,
                "read returned {bytes} bytes, limit {}",
                limit.max_bytes
            );
        }
        assert_eq!(batch.next_offset(), bound);
        let available = from >= m.start && m.known.range(from..).next().is_some();
        if !self.degraded && limit.max_records > 0 && available {
            assert!(
                !batch.is_empty(),
                "read({from}) returned nothing, but the log holds records there"
            );
        }
        self.m.seen_end = seen_end;
    }

    fn offset_at_time(&self, pick: u16, delta: i8) {
        if self.degraded {
            return;
        }
        let base = match self
            .m
            .known
            .values()
            .nth(usize::from(pick) % self.m.known.len().max(1))
        {
            Some(want) => want
                .timestamp_ms
                .expect("committed records have timestamps"),
            None => self.clock.now_ms(),
        };
        let t = base.saturating_add_signed(i64::from(delta));
        let expected = self
            .m
            .known
            .iter()
            .find(|(_, w)| w.timestamp_ms.is_some_and(|ts| ts >= t))
            .map_or(self.m.next, |(offset, _)| *offset);
        let found = self.log().reader().offset_at_time(t);
        assert_eq!(found.ok(), Some(expected), "offset_at_time({t})");
    }

    fn reopen(&mut self) {
        drop(self.log.take());
        let log = match open_log(&self.storage, &self.clock, &self.options) {
            Ok(log) => log,
            Err(e) => {
                assert!(
                    self.faults_armed,
                    "reopening failed without an injected fault: {e}"
                );
                self.storage.clear_faults();
                open_log(&self.storage, &self.clock, &self.options)
                    .unwrap_or_else(|e| panic!("reopening failed after an I/O failure: {e}"))
            }
        };
        self.after_open(log, false);
    }

    fn crash(&mut self, kind: CrashKind) {
        if self.never {
            // Everything before the active segment was fsynced when its segment was sealed.
            let bases = self.log().segments().expect("list segments");
            let sealed_end = bases.last().copied().unwrap_or(0).min(self.m.next);
            self.m.durable_end = self.m.durable_end.max(sealed_end);
        }
        let plan = plan(kind);
        let after = self.storage.crash(plan);
        drop(self.log.take());
        self.reader = None;
        self.storage = after;
        self.m.ever.clear();
        let log = open_log(&self.storage, &self.clock, &self.options)
            .unwrap_or_else(|e| panic!("the log does not open after {plan:?}: {e}"));
        self.after_open(log, plan != CrashPlan::ProcessCrash);
    }

    /// Checks a reopened log against the model and settles what was uncertain.
    fn after_open(&mut self, log: Log, power_loss: bool) {
        self.storage.clear_faults();
        self.faults_armed = false;
        let m = &mut self.m;
        let next = log.next_offset();
        let start = log.start_offset();
        let mut must_keep = if power_loss { m.durable_end } else { m.next };
        if !(power_loss && self.never) {
            // What readers were shown was published: written, and (`Always`) fsynced.
            must_keep = must_keep.max(m.seen_end);
        }
        assert!(
            next >= must_keep,
            "acknowledged records lost: the log ends at {next}, must keep up to {must_keep}"
        );
        assert!(
            next <= m.written_end,
            "the log ends at {next}, past everything written ({})",
            m.written_end
        );
        assert!(
            m.boundaries.contains(&next),
            "part of a batch survived: the log ends at {next}"
        );
        if self.start_uncertain {
            assert!(start >= m.start && start <= next, "start {start}");
        } else {
            assert_eq!(start, m.start, "the log's start offset");
        }
        let pending = std::mem::take(&mut m.pending);
        m.known
            .extend(pending.into_iter().filter(|(offset, _)| *offset < next));
        m.known
            .retain(|offset, _| *offset >= start && *offset < next);
        m.start = start;
        m.next = next;
        m.written_end = next;
        // Recovery fsyncs the tail it adopts, except a `never` log's in the same boot with
        // nothing cut: that stays as durable as it was (at least; recovery may have synced
        // for a reason the model does not track, such as a head naming an older segment).
        let synced_all = !self.never || power_loss || log.recovery_report().truncated_bytes > 0;
        m.durable_end = if synced_all {
            next
        } else {
            m.durable_end.min(next)
        };
        m.boundaries.retain(|b| *b <= next);
        m.seen_end = 0;
        let got = read_all(|from| log.read(from, SCAN_LIMIT), start);
        let offsets: Vec<u64> = got.iter().map(|g| g.offset).collect();
        let expected: Vec<u64> = m.known.keys().copied().collect();
        assert_eq!(offsets, expected, "the reopened log's offsets");
        for g in &got {
            let want = m.known.get_mut(&g.offset).expect("compared above");
            want.check(&g.record());
            want.timestamp_ms = Some(g.timestamp_ms);
        }
        m.last_ts = got.last().map_or(m.last_ts, |g| g.timestamp_ms);
        m.ever.extend(m.known.iter().map(|(o, w)| (*o, w.clone())));
        self.poisoned = false;
        self.degraded = false;
        self.start_uncertain = false;
        self.log = Some(log);
    }

    fn roll(&mut self) {
        match self.log().roll() {
            Ok(()) => self.m.durable_end = self.m.durable_end.max(self.m.next),
            Err(_) => {
                self.poisoned = true;
                self.degraded = true;
            }
        }
    }

    fn sync(&mut self) {
        match self.log().sync() {
            Ok(()) => self.m.durable_end = self.m.durable_end.max(self.m.next),
            Err(_) => self.degraded = true,
        }
    }

    fn retain(&mut self, max_bytes: Option<u16>, max_age: Option<u16>) {
        let policy = Retention {
            max_bytes: max_bytes.map(|b| u64::from(b) * 16),
            max_age: max_age.map(|ms| Duration::from_millis(u64::from(ms) * 16)),
            below_offset: None,
        };
        // The rule, restated: drop the oldest sealed segments while the log is over its size,
        // or while the segment after them started longer ago than the age limit. (Only on a
        // healthy log: a failed roll may have left a segment without a valid header.)
        let expected = (!self.degraded).then(|| self.retention_expected(&policy));
        match self.log().enforce_retention(&policy) {
            Ok(report) => {
                if let Some((removed, start)) = expected {
                    assert_eq!(
                        report.removed_segments, removed,
                        "segments retention removed"
                    );
                    assert_eq!(report.start_offset, start, "start after retention");
                }
                assert!(report.start_offset >= self.m.start);
                assert!(report.start_offset <= self.m.next);
                self.m.start = report.start_offset;
                let start = self.m.start;
                self.m.known.retain(|offset, _| *offset >= start);
            }
            Err(_) => {
                self.degraded = true;
                self.start_uncertain = true;
            }
        }
    }

    /// The segments `policy` removes and the start offset after it, from the segment files.
    fn retention_expected(&self, policy: &Retention) -> (Vec<u64>, u64) {
        let mut facts = Vec::new();
        for base in self.log().segments().expect("list segments") {
            let bytes = self
                .storage
                .contents(&segment::segment_path(&dir(), base))
                .expect("a listed segment exists");
            let header = FileHeader::decode(FileKind::Segment, &bytes)
                .unwrap_or_else(|e| panic!("segment {base} of a healthy log: {e:?}"));
            facts.push((base, bytes.len() as u64, header.base_timestamp_ms));
        }
        let now = self.clock.now_ms();
        let max_age_ms = policy
            .max_age
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        let mut total: u64 = facts.iter().map(|f| f.1).sum();
        let mut removed = Vec::new();
        for pair in facts.windows(2) {
            let [(base, len, _), (_, _, next_ts)] = pair else {
                break;
            };
            let too_old = max_age_ms.is_some_and(|age| next_ts.saturating_add(age) <= now);
            let too_big = policy.max_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            total -= len;
            removed.push(*base);
        }
        let start = facts.get(removed.len()).map_or(self.m.start, |f| f.0);
        (removed, start)
    }

    fn compact(&mut self, pick: u8, keep: u8) {
        let bases = self.log().segments().expect("list segments");
        let keeps = |offset: u64| keep & (1 << (offset % 8)) != 0;
        let Some(sealed) = bases.len().checked_sub(1).filter(|n| *n > 0) else {
            let active = bases.last().copied().unwrap_or(0);
            assert!(
                self.log().compact_segment(active, |_| true).is_err(),
                "compacting the active segment"
            );
            return;
        };
        let i = usize::from(pick) % sealed;
        let (base, end) = (bases[i], bases[i + 1]);
        // On failure the old segment stands: nothing changes.
        if let Ok(report) = self.log().compact_segment(base, |r| keeps(r.offset)) {
            let present: Vec<u64> = self.m.known.range(base..end).map(|(o, _)| *o).collect();
            if !self.degraded {
                assert_eq!(
                    report.records_kept + report.records_removed,
                    present.len() as u64
                );
            }
            for offset in present.into_iter().filter(|o| !keeps(*o)) {
                self.m.known.remove(&offset);
            }
        }
    }

    fn clock(&self, step: i16) {
        let now = self.clock.now_ms();
        self.clock
            .set(now.saturating_add_signed(i64::from(step) * 16));
    }
}

/// The log against a model (offset -> record): after every step reads return exactly the
/// model's records from the requested offset (honouring the trimmed start, record and byte
/// limits, and compaction's gaps), time lookups agree, appends get the next offsets and
/// timestamps that never run backwards, appends are refused after an I/O failure until the
/// log is reopened, and every reopen keeps what it must: every acknowledged record after a
/// close or a process crash, every fsynced one after a power loss (`Always`: every
/// acknowledged one), never part of a batch, never a record that was not appended.
pub fn log_model(input: LogModelInput) {
    let durability = if input.never {
        Durability::Never
    } else {
        Durability::Always
    };
    let options = log_options(input.segment_bytes, input.index_interval, durability);
    let clock = ManualClock::new(START_MS);
    let storage = SimStorage::new();
    let log = open_log(&storage, &clock, &options).expect("a fresh log opens");
    let mut h = Harness {
        never: input.never,
        options,
        clock,
        storage,
        log: Some(log),
        reader: None,
        m: Model {
            boundaries: BTreeSet::from([0]),
            ..Model::default()
        },
        poisoned: false,
        degraded: false,
        faults_armed: false,
        start_uncertain: false,
    };
    for op in input.ops.iter().take(64) {
        match op {
            Op::Append(records) => h.append(records),
            Op::Read {
                external,
                from,
                max_records,
                max_bytes,
            } => h.read(*external, *from, *max_records, *max_bytes),
            Op::OffsetAtTime { pick, delta } => h.offset_at_time(*pick, *delta),
            Op::Reopen => h.reopen(),
            Op::Crash(kind) => h.crash(*kind),
            Op::Roll => h.roll(),
            Op::Sync => h.sync(),
            Op::Retain { max_bytes, max_age } => h.retain(*max_bytes, *max_age),
            Op::Compact { segment, keep } => h.compact(*segment, *keep),
            Op::Clock(step) => h.clock(*step),
            Op::Fault(fault) => {
                arm(&h.storage, *fault);
                h.faults_armed = true;
            }
        }
    }
    // Whatever happened, a final reopen settles everything.
    h.reopen();
}

// ------------------------------------------------------------------------------------------
// Raw bytes to structured inputs, as libFuzzer's `fuzz_target!` does it.
// ------------------------------------------------------------------------------------------

/// Decodes a structured input from raw bytes exactly as `libfuzzer_sys::fuzz_target!` does
/// (`size_hint` check, then `arbitrary_take_rest`), so a corpus file replays as the fuzzer ran
/// it. `None` for bytes the fuzzer would have skipped.
pub fn decode_input<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    if data.len() < T::size_hint(0).0 {
        return None;
    }
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// [`recovery`] on raw bytes.
pub fn recovery_bytes(data: &[u8]) {
    if let Some(input) = decode_input(data) {
        recovery(input);
    }
}

/// [`log_model`] on raw bytes.
pub fn log_model_bytes(data: &[u8]) {
    if let Some(input) = decode_input(data) {
        log_model(input);
    }
}
