//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_replay.rs`, which replays every committed corpus and artifact file through them
//! in the normal test suite (no cargo-fuzz needed).
//!
//! Every function panics only on a finding: a decoder that panics or accepts bytes it would
//! not have written, recovery that panics, or a read that returns bytes other than the ones
//! appended at that offset.
#![allow(
    clippy::missing_panics_doc,
    reason = "a panic here is the fuzzer's finding, by design"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};

use crate::clock::ManualClock;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::Head;
use crate::codec::index;
use crate::codec::record::{self, Decoded, FrameFields};
use crate::log::{Durability, Entry, Log, LogOptions, ReadLimit, Retention};
use crate::meta;
use crate::storage::{CrashPlan, SharedStorage, SimStorage};

/// Record frames: decoding never panics, and a frame that decodes re-encodes to the same bytes.
pub fn record_frame(data: &[u8]) {
    if let Decoded::Frame(f) = record::decode(data) {
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
            &data[..f.frame_len],
            "decode accepted foreign bytes"
        );
    }
}

/// File headers of both kinds and the head file: never panic; what decodes re-encodes equal.
pub fn headers(data: &[u8]) {
    for kind in [FileKind::Segment, FileKind::Index] {
        if let Ok(header) = FileHeader::decode(kind, data) {
            assert_eq!(&header.encode()[..], &data[..FILE_HEADER_LEN]);
        }
    }
    if let Ok(head) = Head::decode(data) {
        assert_eq!(&head.encode()[..], &data[..crate::codec::head::HEAD_LEN]);
    }
}

/// Index tables: the decoded prefix is well ordered and inside the given bounds; lookups on it
/// never panic.
pub fn index_entries(data: &[u8]) {
    let (bounds, body) = data.split_at(data.len().min(12));
    let mut b = [0u8; 12];
    b[..bounds.len()].copy_from_slice(bounds);
    let min = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let max = u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
    let entries = index::decode_entries(body, min, max);
    for pair in entries.windows(2) {
        assert!(pair[0].precedes(&pair[1]));
    }
    assert!(
        entries
            .iter()
            .all(|e| e.position >= min && u64::from(e.position) < max)
    );
    let _ = index::floor_by_offset(&entries, min);
    let _ = index::floor_by_time(&entries, max);
}

/// Metadata frames: never panic, whatever the payload type.
pub fn metadata(data: &[u8]) {
    let path = Path::new("/fuzz/meta");
    let magic = *b"SHOALSTM";
    let _ = meta::decode::<(String, Vec<u128>, u64, bool)>(magic, data, path);
    let _ = meta::decode::<BTreeMap<String, Vec<Option<u32>>>>(magic, data, path);
    // A frame that decodes as a string re-encodes to the same bytes.
    if let Ok(text) = meta::decode::<String>(magic, data, path) {
        let again = meta::encode(magic, &text).expect("re-encode");
        assert_eq!(again.as_slice(), &data[..again.len()]);
    }
}

/// Damage done to a log's files between writing and reopening.
#[derive(Debug, Clone, Arbitrary)]
pub enum Damage {
    /// Flip bits at a position of the n-th file.
    Flip {
        /// Which file (modulo the count).
        file: u8,
        /// Where (modulo the length).
        at: u32,
        /// XOR mask (0 becomes 1).
        mask: u8,
    },
    /// Cut the n-th file to a length.
    Truncate {
        /// Which file.
        file: u8,
        /// New length (modulo the length + 1).
        len: u32,
    },
    /// Zero a range of the n-th file.
    Zero {
        /// Which file.
        file: u8,
        /// Start (modulo the length).
        at: u32,
        /// Bytes.
        len: u16,
    },
    /// Delete the n-th file.
    Delete {
        /// Which file.
        file: u8,
    },
    /// Append garbage to the n-th file.
    Extend {
        /// Which file.
        file: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// One step of the model test.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Append a batch (payload lengths and a fill byte keep inputs small).
    Append(Vec<(u8, u16)>),
    /// Read from a position (modulo one past the end) up to a count.
    Read(u16, u8),
    /// Close and reopen.
    Reopen,
    /// A crash, then reopen.
    Crash(CrashKind),
    /// Seal the active segment and start a new one.
    Roll,
    /// Keep at most this many KiB.
    Retain(u8),
    /// Time passes.
    Advance(u16),
    /// The next fsync fails.
    FailSync,
}

/// Which crash.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum CrashKind {
    /// The process dies; the kernel keeps everything written.
    Process,
    /// Power loss: only fsynced bytes survive.
    Power,
    /// Power loss keeping a torn prefix of unsynced bytes.
    Torn(u64),
}

/// Input of the recovery target.
#[derive(Debug, Clone, Arbitrary)]
pub struct RecoveryInput {
    /// Batches appended before the damage: (fill byte, payload length) per record.
    pub batches: Vec<Vec<(u8, u16)>>,
    /// Bytes per segment, scaled.
    pub segment_kib: u8,
    /// What happens to the files.
    pub damage: Vec<Damage>,
}

fn payload(fill: u8, len: u16) -> Vec<u8> {
    vec![fill; usize::from(len % 2048)]
}

fn options(segment_kib: u8, durability: Durability) -> LogOptions {
    LogOptions {
        segment_bytes_max: 512 + u64::from(segment_kib) * 64,
        index_interval_bytes: 128,
        durability,
        ..LogOptions::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/fuzz/log")
}

fn open(
    storage: &SimStorage,
    clock: &Arc<ManualClock>,
    options: &LogOptions,
) -> crate::Result<Log> {
    let shared: SharedStorage = Arc::new(storage.clone());
    Log::open(shared, clock.clone(), dir(), options.clone())
}

/// Reads everything the log returns from offset 0, asserting each record equals what was
/// appended at its offset. Stops at the first error (damage is allowed to be reported).
fn check_reads(log: &Log, appended: &BTreeMap<u64, Vec<u8>>) -> usize {
    let mut next = log.start_offset();
    let mut seen = 0;
    for _ in 0..10_000 {
        let Ok(batch) = log.read(next, ReadLimit::records(64)) else {
            return seen;
        };
        if batch.is_empty() {
            return seen;
        }
        for r in batch.iter() {
            let expected = appended
                .get(&r.offset)
                .unwrap_or_else(|| panic!("offset {} was never appended", r.offset));
            assert_eq!(
                r.payload,
                expected.as_slice(),
                "wrong bytes at offset {}",
                r.offset
            );
            seen += 1;
        }
        next = batch.next_offset();
    }
    seen
}

/// Recovery: build a log, damage its files, reopen. Opening never panics; a log that opens
/// returns only bytes that were appended at each offset.
pub fn recovery(input: &RecoveryInput) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(1_000);
    let opts = options(input.segment_kib, Durability::Always);
    let mut appended = BTreeMap::new();
    {
        let log = open(&storage, &clock, &opts).expect("a fresh log opens");
        for batch in input.batches.iter().take(64) {
            if batch.is_empty() {
                continue;
            }
            let bodies: Vec<Vec<u8>> = batch
                .iter()
                .take(32)
                .map(|(f, l)| payload(*f, *l))
                .collect();
            let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
            let first = log.append(&entries).expect("append").first_offset;
            for (i, body) in bodies.into_iter().enumerate() {
                appended.insert(first + i as u64, body);
            }
            clock.advance(7);
        }
    }
    for damage in input.damage.iter().take(8) {
        let files = storage.files();
        if files.is_empty() {
            break;
        }
        let pick = |n: u8| files[usize::from(n) % files.len()].clone();
        match damage {
            Damage::Flip { file, at, mask } => {
                let path = pick(*file);
                let len = storage.contents(&path).map_or(0, |c| c.len());
                if len > 0 {
                    let _ = storage.corrupt(&path, *at as usize % len, (*mask).max(1));
                }
            }
            Damage::Truncate { file, len } => {
                let path = pick(*file);
                let bytes = storage.contents(&path).unwrap_or_default();
                let cut = *len as usize % (bytes.len() + 1);
                storage.put_file(&path, &bytes[..cut]);
            }
            Damage::Zero { file, at, len } => {
                let path = pick(*file);
                let mut bytes = storage.contents(&path).unwrap_or_default();
                if !bytes.is_empty() {
                    let start = *at as usize % bytes.len();
                    let end = (start + usize::from(*len)).min(bytes.len());
                    bytes[start..end].fill(0);
                    storage.put_file(&path, &bytes);
                }
            }
            Damage::Delete { file } => {
                let _ = crate::storage::Storage::remove_file(&storage, &pick(*file));
            }
            Damage::Extend { file, bytes } => {
                let path = pick(*file);
                let mut content = storage.contents(&path).unwrap_or_default();
                content.extend(bytes.iter().take(4096));
                storage.put_file(&path, &content);
            }
        }
    }
    if let Ok(log) = open(&storage, &clock, &opts) {
        check_reads(&log, &appended);
        // A recovered log accepts appends (unless damage left it refusing them).
        let _ = log.append(&[Entry::new(b"after")]);
    }
}

/// The log against a model (offset -> payload): reads agree, acknowledged appends survive
/// every crash that keeps fsynced data, and nothing is returned that was not appended.
pub fn log_model(ops: &[Op], durability_always: bool) {
    let durability = if durability_always {
        Durability::Always
    } else {
        Durability::Never
    };
    let opts = options(8, durability);
    let clock = ManualClock::new(1_000);
    let mut storage = SimStorage::new();
    let mut log = Some(open(&storage, &clock, &opts).expect("a fresh log opens"));
    // Every record ever appended (acknowledged or not) and the acknowledged end.
    let mut appended: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut durable_end = 0u64;
    for op in ops.iter().take(64) {
        let Some(current) = log.as_ref() else { break };
        match op {
            Op::Append(batch) if !batch.is_empty() => {
                let bodies: Vec<Vec<u8>> = batch
                    .iter()
                    .take(16)
                    .map(|(f, l)| payload(*f, *l))
                    .collect();
                let entries: Vec<Entry<'_>> = bodies.iter().map(|b| Entry::new(b)).collect();
                let first = current.next_offset();
                let outcome = current.append(&entries);
                for (i, body) in bodies.into_iter().enumerate() {
                    appended.insert(first + i as u64, body);
                }
                if let Ok(a) = outcome {
                    assert_eq!(a.first_offset, first);
                    if durability_always {
                        durability_end(&mut durable_end, a.first_offset + a.count);
                    }
                }
            }
            Op::Append(_) => {}
            Op::Read(from, count) => {
                let end = current.next_offset();
                let from = u64::from(*from) % (end + 1);
                if let Ok(batch) =
                    current.read(from, ReadLimit::records(usize::from(*count).max(1)))
                {
                    for r in batch.iter() {
                        assert!(r.offset >= from);
                        assert_eq!(Some(&r.payload.to_vec()), appended.get(&r.offset));
                    }
                }
            }
            Op::Reopen => {
                drop(log.take());
                log = open(&storage, &clock, &opts).ok();
            }
            Op::Crash(kind) => {
                let plan = match kind {
                    CrashKind::Process => CrashPlan::ProcessCrash,
                    CrashKind::Power => CrashPlan::PowerLoss,
                    CrashKind::Torn(seed) => CrashPlan::PowerLossTorn { seed: *seed },
                };
                let after = storage.crash(plan);
                drop(log.take());
                storage = after;
                let reopened = open(&storage, &clock, &opts).expect("a crashed log reopens");
                let next = reopened.next_offset();
                assert!(
                    next >= durable_end.max(reopened.start_offset()),
                    "acknowledged records lost"
                );
                // Whatever survived beyond is a prefix of what was appended; forget the rest.
                appended.retain(|offset, _| *offset < next);
                log = Some(reopened);
            }
            Op::Roll => {
                let _ = current.roll();
            }
            Op::Retain(kib) => {
                let _ = current.enforce_retention(&Retention {
                    max_age: None,
                    max_bytes: Some(u64::from(*kib) * 1024),
                });
            }
            Op::Advance(ms) => clock.advance(u64::from(*ms)),
            Op::FailSync => storage.fail_sync_after(0),
        }
    }
    storage.clear_faults();
    drop(log.take());
    let log = open(&storage, &clock, &opts).expect("the log reopens at the end");
    let seen = check_reads(&log, &appended);
    let start = log.start_offset();
    assert_eq!(
        seen as u64,
        log.next_offset() - start,
        "reads cover the log"
    );
}

fn durability_end(end: &mut u64, new_end: u64) {
    *end = (*end).max(new_end);
}

/// Runs the structure-aware targets on raw bytes (what libFuzzer and the replay test hold).
pub fn recovery_bytes(data: &[u8]) {
    if let Ok(input) = RecoveryInput::arbitrary(&mut Unstructured::new(data)) {
        recovery(&input);
    }
}

/// See [`recovery_bytes`].
pub fn log_model_bytes(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(always) = bool::arbitrary(&mut u) else {
        return;
    };
    if let Ok(ops) = Vec::<Op>::arbitrary(&mut u) {
        log_model(&ops, always);
    }
}
