//! Compaction: rewriting a sealed segment without the records its owner no longer needs.
//!
//! The kept records are written, with their offsets, timestamps and bytes unchanged, to
//! `{base}.log.compact` and a fresh index to `{base}.index.compact`; both are fsynced; then the
//! old index is unlinked, the new segment renamed over the old one, the new index renamed into
//! place, and the directory fsynced. The old segment is never modified: a reader that has it
//! mapped keeps a valid (older) view. A crash at any step leaves either the old segment or the
//! new one under the segment's name; open removes `.compact` leftovers and rebuilds a missing
//! index.

use std::io;
use std::path::Path;

use super::recovery::{index_entries_for, write_index};
use super::scan::{FrameScan, Stop};
use super::{Inner, LogReader, Record, guard, segment};
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::record::{self, FLAG_END_OF_BATCH, FrameFields};
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};

/// What compaction did to one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The segment's base offset.
    pub base: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Records dropped.
    pub records_removed: u64,
    /// Segment size before.
    pub bytes_before: u64,
    /// Segment size after.
    pub bytes_after: u64,
}

pub(super) fn compact(
    inner: &Inner,
    base: u64,
    mut keep: impl FnMut(&Record<'_>) -> bool,
) -> Result<CompactionReport> {
    let _maintenance = guard(&inner.maintenance);
    inner.check_poison()?;
    if base >= inner.active_base() {
        return Err(Error::InvalidArgument(format!(
            "segment {base} is not sealed; only sealed segments are compacted"
        )));
    }
    let storage = &*inner.storage;
    let path = segment::segment_path(&inner.dir, base);
    let (file, len) = segment::open_sized(storage, &path, OpenMode::Read)?;
    let header = segment::read_header(&*file, &path, FileKind::Segment, base)?;
    let mut old = vec![
        0u8;
        usize::try_from(len)
            .map_err(|_| Error::InvalidArgument("segment too large".into()))?
    ];
    file.read_exact_at(&mut old, 0)
        .map_err(|e| Error::io("read", &path, e))?;

    let mut new = Vec::with_capacity(old.len());
    new.extend_from_slice(&header.encode());
    let mut report = CompactionReport {
        base,
        bytes_before: len,
        ..CompactionReport::default()
    };
    let mut scan = FrameScan::new(&old, 0, FILE_HEADER_LEN);
    for (_, frame) in scan.by_ref() {
        let record = Record {
            offset: frame.offset,
            timestamp_ms: frame.timestamp_ms,
            kind: frame.kind,
            header: frame.header,
            payload: frame.payload,
        };
        if !keep(&record) {
            report.records_removed += 1;
            continue;
        }
        report.records_kept += 1;
        push_record(&mut new, &frame)?;
    }
    match scan.stop() {
        Some(Stop::Corrupt { position, kind }) => {
            return Err(Error::corruption(&path, *position, kind.clone()));
        }
        Some(Stop::Incomplete { position, needed }) => {
            return Err(Error::corruption(
                &path,
                *position,
                crate::error::CorruptionKind::Truncated {
                    needed: *needed,
                    available: len - position,
                },
            ));
        }
        _ => {}
    }
    report.bytes_after = new.len() as u64;
    replace_segment(
        storage,
        &inner.dir,
        inner.options.index_interval_bytes,
        Some(&inner.reader),
        base,
        &header,
        &new,
    )?;
    Ok(report)
}

/// Appends `frame` to `out` as a batch of its own (the batch it came in may be partly gone),
/// with its offset, timestamp, kind, header and payload unchanged.
pub(super) fn push_record(out: &mut Vec<u8>, frame: &record::Frame<'_>) -> Result<()> {
    record::encode_into(
        out,
        &FrameFields {
            offset: frame.offset,
            timestamp_ms: frame.timestamp_ms,
            kind: frame.kind,
            flags: FLAG_END_OF_BATCH,
            header: frame.header,
            payload: frame.payload,
        },
    )
    .map_err(|e| Error::RecordTooLarge {
        size: e.size,
        max: u64::from(record::MAX_PAYLOAD_LEN),
    })
}

/// Replaces the sealed segment `base` with `new` (a whole segment file: `header`, then
/// frames) and a fresh index for it: both written to `.compact` files and fsynced, then renamed
/// over the old ones and the directory fsynced. The old files are never written.
/// `reader`, if the log has one open, forgets its mappings of the old files.
pub(super) fn replace_segment(
    storage: &dyn Storage,
    dir: &Path,
    index_interval: u32,
    reader: Option<&LogReader>,
    base: u64,
    header: &FileHeader,
    new: &[u8],
) -> Result<()> {
    let path = segment::segment_path(dir, base);
    let index_path = segment::index_path(dir, base);
    let (entries, _) = index_entries_for(new, base, index_interval);
    let invalidate = || {
        if let Some(reader) = reader {
            reader.invalidate(base);
        }
    };

    let temp = segment::compact_path(&path);
    let temp_index = segment::compact_path(&index_path);
    let written = (|| {
        let out = storage
            .open(&temp, OpenMode::CreateOrOpen)
            .map_err(|e| Error::io("create", &temp, e))?;
        out.set_len(0)
            .map_err(|e| Error::io("truncate", &temp, e))?;
        out.write_all_at(new, 0)
            .map_err(|e| Error::io("write", &temp, e))?;
        out.sync_data().map_err(|e| Error::io("fsync", &temp, e))?;
        write_index(storage, &temp_index, header, &entries)
    })();
    if let Err(e) = written {
        // Nothing has replaced anything yet: drop the partial copies, the old segment stands.
        for leftover in [&temp, &temp_index] {
            let _ = storage.remove_file(leftover);
        }
        return Err(e);
    }

    // The swap. Index first: a segment briefly without an index is only slower to seek, while
    // an old index beside a new segment would point into the wrong bytes.
    invalidate();
    match storage.remove_file(&index_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::io("remove", &index_path, e));
        }
        _ => {}
    }
    storage
        .rename(&temp, &path)
        .map_err(|e| Error::io("rename", &temp, e))?;
    storage
        .rename(&temp_index, &index_path)
        .map_err(|e| Error::io("rename", &temp_index, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync", dir, e))?;
    invalidate();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::clock::ManualClock;
    use crate::log::{Entry, Log, LogOptions, ReadLimit};
    use crate::storage::SimStorage;

    #[test]
    fn keeping_everything_keeps_every_record_and_the_active_segment_is_refused() {
        let storage = SimStorage::new();
        let log = Log::open(
            Arc::new(storage.clone()),
            ManualClock::new(5),
            "/l",
            LogOptions::default(),
        )
        .unwrap();
        log.append(&[Entry::new(b"a"), Entry::new(b"b")]).unwrap();
        log.roll().unwrap();
        let report = log.compact_segment(0, |_| true).unwrap();
        assert_eq!((report.records_kept, report.records_removed), (2, 0));
        assert_eq!(report.bytes_after, report.bytes_before);
        let batch = log.read(0, ReadLimit::records(10)).unwrap();
        let got: Vec<&[u8]> = batch.iter().map(|r| r.payload).collect();
        assert_eq!(got, vec![&b"a"[..], &b"b"[..]]);
        assert!(
            log.compact_segment(2, |_| true).is_err(),
            "the active segment"
        );
        assert!(log.compact_segment(1, |_| true).is_err(), "not a segment");
    }
}
