//! `segment`: a whole segment file, built from frames with valid checksums, then damaged (bit
//! flips, garbage after the frames, a cut), opened as a log's only segment with no head and no
//! index (what a crash while creating the log's first files, or losing them, leaves).
//!
//! The expectation is computed here from the bytes with nothing but the frame decoder, and
//! compared with what recovery and the reader make of them: with an intact header, recovery
//! keeps exactly the frames with consecutive offsets from the base, up to the last one that
//! ends a batch (nothing vouches for any of it, so everything past is a tail to cut); the
//! file is cut there unless only zeros follow (a prefill, kept for appends to overwrite), the
//! reader returns exactly those records, `check` is clean and the log
//! takes an append. With a damaged header the open fails with a corruption error (a damaged
//! version field included), unless the file is no longer than a header (an interrupted
//! creation, written again).

use std::sync::Arc;

use arbitrary::Arbitrary;

use super::{Got, START_MS, dir};
use crate::clock::ManualClock;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::record::{self, Decoded, FLAG_END_OF_BATCH, FrameFields};
use crate::log::{CheckReport, Durability, Entry, Log, LogOptions, ReadLimit, check, segment};
use crate::storage::{SharedStorage, SimStorage};

/// One frame of a [`SegmentInput`].
#[derive(Debug, Clone, Arbitrary)]
pub struct SegmentFrame {
    /// Skip an offset before this frame (breaks the consecutive run).
    pub skip: bool,
    /// The frame ends a batch.
    pub end_of_batch: bool,
    /// Milliseconds after the previous frame.
    pub step_ms: u8,
    /// Record kind.
    pub kind: u8,
    /// Bytes of `data` that form the record header (modulo 8).
    pub header_len: u8,
    /// Record header and payload.
    pub data: Vec<u8>,
}

/// Input of the [`segment()`] target.
#[derive(Debug, Clone, Arbitrary)]
pub struct SegmentInput {
    /// The segment's base offset.
    pub base: u16,
    /// The frames, in order (at most 64).
    pub frames: Vec<SegmentFrame>,
    /// Raw bytes after the frames.
    pub tail: Vec<u8>,
    /// XOR masks at positions (modulo the file's length; mask 0 becomes 1), at most 4.
    pub flips: Vec<(u16, u8)>,
    /// Bytes cut off the end (modulo the file's length + 1).
    pub cut: Option<u16>,
}

/// The segment file the input describes.
fn build(input: &SegmentInput, base: u64) -> Vec<u8> {
    let mut bytes = FileHeader {
        kind: FileKind::Segment,
        base_offset: base,
        base_timestamp_ms: START_MS,
    }
    .encode()
    .to_vec();
    let (mut offset, mut timestamp_ms) = (base, START_MS);
    for frame in input.frames.iter().take(64) {
        offset += u64::from(frame.skip);
        timestamp_ms += u64::from(frame.step_ms);
        let data = &frame.data[..frame.data.len().min(300)];
        let split = usize::from(frame.header_len % 8).min(data.len());
        record::encode_into(
            &mut bytes,
            &FrameFields {
                offset,
                timestamp_ms,
                kind: frame.kind,
                flags: if frame.end_of_batch {
                    FLAG_END_OF_BATCH
                } else {
                    0
                },
                header: &data[..split],
                payload: &data[split..],
            },
        )
        .expect("small records encode");
        offset += 1;
    }
    bytes.extend_from_slice(&input.tail[..input.tail.len().min(512)]);
    for &(at, mask) in input.flips.iter().take(4) {
        let len = bytes.len();
        bytes[usize::from(at) % len] ^= mask.max(1);
    }
    if let Some(cut) = input.cut {
        let cut = usize::from(cut) % (bytes.len() + 1);
        bytes.truncate(bytes.len() - cut);
    }
    bytes
}

/// What recovery must keep of `bytes`: the records of whole batches with consecutive offsets
/// from `base`, and the file length after the last of them.
fn expected(bytes: &[u8], base: u64) -> (Vec<Got>, usize) {
    let (mut kept, mut position, mut next) = (Vec::new(), FILE_HEADER_LEN, base);
    let mut batch_end = (0, FILE_HEADER_LEN);
    while let Some(Decoded::Frame(f)) = bytes.get(position..).map(record::decode) {
        if f.offset != next {
            break;
        }
        kept.push(Got {
            offset: f.offset,
            timestamp_ms: f.timestamp_ms,
            kind: f.kind,
            header: f.header.to_vec(),
            payload: f.payload.to_vec(),
        });
        next += 1;
        position += f.frame_len;
        if f.ends_batch() {
            batch_end = (kept.len(), position);
        }
    }
    kept.truncate(batch_end.0);
    (kept, batch_end.1)
}

/// The [`segment()`] target (see the module docs).
pub fn segment(input: SegmentInput) {
    let base = u64::from(input.base);
    let bytes = build(&input, base);
    let storage = SimStorage::new();
    let path = segment::segment_path(&dir(), base);
    storage.put_file(&path, &bytes);
    let clock = ManualClock::new(START_MS + 1_000_000);
    let options = LogOptions {
        index_interval_bytes: 64,
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let shared: SharedStorage = Arc::new(storage.clone());
    let opened = Log::open(shared, clock, dir(), options);
    let header_ok =
        FileHeader::decode(FileKind::Segment, &bytes).is_ok_and(|h| h.base_offset == base);
    if !header_ok {
        match opened {
            Ok(log) => {
                assert!(
                    bytes.len() <= FILE_HEADER_LEN,
                    "a segment of {} bytes with a damaged header opened",
                    bytes.len()
                );
                assert_eq!(
                    log.next_offset(),
                    base,
                    "records from a segment with no header"
                );
            }
            Err(e) => {
                assert!(
                    bytes.len() > FILE_HEADER_LEN,
                    "an unfinished header was not written again: {e}"
                );
                // The header's checksum is looked at before its version, so a damaged
                // version field is damage too, never "a newer format" (FORMAT.md,
                // "Versions").
                assert!(e.is_corruption(), "not a typed damage error: {e}");
            }
        }
        return;
    }
    let log = opened.unwrap_or_else(|e| panic!("nothing vouches for any frame, yet: {e}"));
    let (want, end) = expected(&bytes, base);
    assert_eq!(log.next_offset(), base + want.len() as u64, "records kept");
    // Zeros past the last whole batch stay: they read as a prefill (FORMAT.md, "Prefill"),
    // which the next append overwrites. Anything else there is cut.
    let zeros_after = bytes
        .get(end..)
        .is_some_and(|rest| rest.iter().all(|&b| b == 0));
    let kept_len = if zeros_after { bytes.len() } else { end };
    let file_len = storage.contents(&path).expect("the segment").len();
    assert_eq!(
        file_len, kept_len,
        "the segment is cut after the last whole batch, unless only zeros follow it"
    );
    let mut got = Vec::new();
    let mut next = base;
    loop {
        let batch = log
            .read(next, ReadLimit::records(7))
            .unwrap_or_else(|e| panic!("read({next}) of a recovered log: {e}"));
        if batch.is_empty() {
            break;
        }
        for r in batch.iter() {
            got.push(Got {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                kind: r.kind,
                header: r.header.to_vec(),
                payload: r.payload.to_vec(),
            });
        }
        next = batch.next_offset();
        assert!(got.len() <= want.len(), "more records read than kept");
    }
    assert_eq!(got, want, "the records read");
    let mut report = CheckReport::default();
    check(&storage, &dir(), &mut report).expect("check runs");
    assert_eq!(report.problems, vec![], "check after recovery");
    let appended = log
        .append(&[Entry::new(b"after recovery")])
        .expect("a recovered log takes an append");
    assert_eq!(appended.first_offset, next);
    let batch = log
        .read(next, ReadLimit::records(1))
        .expect("read the append");
    let r = batch.iter().next().expect("the appended record");
    assert_eq!((r.offset, r.payload), (next, &b"after recovery"[..]));
}

/// [`segment()`] on raw bytes.
pub fn segment_bytes(data: &[u8]) {
    if let Some(input) = super::decode_input(data) {
        segment(input);
    }
}
