//! Verifying a log without changing it: every file header, every record's checksum and offset
//! order, every index entry against the record it names, the head and the seal.

use std::path::{Path, PathBuf};

use super::reader::read_head;
use super::scan::{FrameScan, Stop};
use super::segment;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::HEAD_LEN;
use crate::codec::index::{INDEX_ENTRY_LEN, IndexEntry};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage};

/// One problem found by a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte position of the damage in it.
    pub offset: u64,
    /// What is wrong, as a sentence.
    pub kind: String,
}

impl Problem {
    fn new(file: &Path, offset: u64, kind: impl ToString) -> Problem {
        Problem {
            file: file.to_path_buf(),
            offset,
            kind: kind.to_string(),
        }
    }

    /// The problem an engine error describes (`fallback` names the file for other errors).
    pub fn from_error(err: &Error, fallback: &Path) -> Problem {
        match err {
            Error::Corruption { file, offset, kind } => Problem::new(file, *offset, kind),
            Error::UnsupportedVersion { file, .. } => Problem::new(file, 0, err),
            other => Problem::new(fallback, 0, other),
        }
    }
}

/// What a check looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems found, in file order.
    pub problems: Vec<Problem>,
    /// Files read.
    pub files: u64,
    /// Records whose checksum was verified.
    pub records: u64,
}

/// Checks the log in `dir`, reading every byte of it. Changes nothing.
pub fn check(storage: &dyn Storage, dir: &Path, report: &mut CheckReport) -> Result<()> {
    let listing = segment::list(storage, dir)?;
    let head_path = dir.join(segment::HEAD_FILE);
    let head = match storage.open(&head_path, OpenMode::Read) {
        // Shorter than a head: created and never written back before a power loss (the head
        // is never fsynced on its own); recovery treats it as absent and writes it.
        Ok(file) if file.len().is_ok_and(|len| len < HEAD_LEN as u64) => None,
        Ok(file) => match read_head(&*file, &head_path) {
            Ok(head) => Some(head),
            Err(e) => {
                report.problems.push(Problem::from_error(&e, &head_path));
                None
            }
        },
        Err(e) => {
            report.problems.push(Problem::new(
                &head_path,
                0,
                format!("cannot open the head: {e}"),
            ));
            None
        }
    };
    report.files += 1;
    let last = listing.segments.last().copied();
    if let (Some(head), Some(last)) = (head, last)
        && head.active_base > last
    {
        report.problems.push(Problem::new(
            &head_path,
            0,
            CorruptionKind::Inconsistent(format!(
                "the head names segment {} but the last segment is {last}",
                head.active_base
            )),
        ));
    }
    for (i, &base) in listing.segments.iter().enumerate() {
        let next_base = listing.segments.get(i + 1).copied();
        let active = next_base.is_none();
        // A newest segment the head does not name yet is a roll a crash interrupted: recovery
        // writes again a header (of it or of its index) the crash left unfinished.
        let unpublished = active && head.is_some_and(|h| h.active_base < base);
        let path = segment::segment_path(dir, base);
        let bytes = segment::read_file(storage, &path)?;
        report.files += 1;
        if let Err(e) = FileHeader::decode(FileKind::Segment, &bytes)
            .map_err(|e| segment::header_error(&path, e))
            .and_then(|h| {
                if h.base_offset == base {
                    Ok(h)
                } else {
                    Err(Error::corruption(
                        &path,
                        0,
                        CorruptionKind::BaseMismatch {
                            expected: base,
                            found: h.base_offset,
                        },
                    ))
                }
            })
        {
            if !(unpublished && bytes.len() <= FILE_HEADER_LEN) {
                report.problems.push(Problem::from_error(&e, &path));
            }
            continue;
        }
        // The active segment is checked up to what the head says is committed: bytes past it
        // are a tail recovery will judge.
        let end = match head {
            Some(h) if active && h.active_base == base => usize::try_from(h.committed_len)
                .unwrap_or(bytes.len())
                .min(bytes.len()),
            _ => bytes.len(),
        };
        let mut scan = FrameScan::new(&bytes[..end], 0, FILE_HEADER_LEN);
        let mut starts = std::collections::BTreeMap::new();
        for (position, frame) in scan.by_ref() {
            report.records += 1;
            starts.insert(position, (frame.offset, frame.timestamp_ms));
            if frame.offset < base || next_base.is_some_and(|n| frame.offset >= n) {
                report.problems.push(Problem::new(
                    &path,
                    position,
                    CorruptionKind::Inconsistent(format!(
                        "record offset {} is outside the segment's range",
                        frame.offset
                    )),
                ));
            }
        }
        // Zeros after the active segment's last frame are written ahead of the data (a
        // prefill); without a head to say where the data ends, the scan meets them.
        let zeros_from = |position: u64| {
            active
                && bytes
                    .get(usize::try_from(position).unwrap_or(usize::MAX)..end)
                    .is_some_and(|rest| rest.iter().all(|&b| b == 0))
        };
        match scan.stop() {
            Some(Stop::Corrupt { position, .. } | Stop::Incomplete { position, .. })
                if zeros_from(*position) => {}
            Some(Stop::Corrupt { position, kind }) => {
                report.problems.push(Problem::new(&path, *position, kind));
            }
            Some(Stop::Incomplete { position, needed }) => {
                report.problems.push(Problem::new(
                    &path,
                    *position,
                    CorruptionKind::Truncated {
                        needed: *needed,
                        available: end as u64 - position,
                    },
                ));
            }
            _ => {}
        }
        let verified_end = scan.file_position();
        check_index(
            storage,
            dir,
            base,
            &starts,
            verified_end,
            unpublished,
            report,
        )?;
    }
    let seal = dir.join(segment::SEALED_FILE);
    if storage.exists(&seal) {
        report.files += 1;
        let text = segment::read_file(storage, &seal)?;
        let sealed_at = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        match (sealed_at, head) {
            (None, _) => report.problems.push(Problem::new(
                &seal,
                0,
                CorruptionKind::Metadata("the seal does not hold an offset".into()),
            )),
            (Some(at), Some(h)) if at > h.next_offset => report.problems.push(Problem::new(
                &seal,
                0,
                CorruptionKind::Inconsistent(format!(
                    "sealed at {at}, past the last committed offset {}",
                    h.next_offset
                )),
            )),
            _ => {}
        }
    }
    Ok(())
}

/// Every entry of a segment's index, up to where the records were verified, must name a
/// record that starts at its position. The index of an `unpublished` segment may still lack
/// its header.
fn check_index(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    starts: &std::collections::BTreeMap<u64, (u64, u64)>,
    verified_end: u64,
    unpublished: bool,
    report: &mut CheckReport,
) -> Result<()> {
    let path = segment::index_path(dir, base);
    if !storage.exists(&path) {
        // Rebuilt at the next open; not damage.
        return Ok(());
    }
    let bytes = segment::read_file(storage, &path)?;
    report.files += 1;
    match FileHeader::decode(FileKind::Index, &bytes) {
        Err(e) => {
            if !(unpublished && bytes.len() <= FILE_HEADER_LEN) {
                report
                    .problems
                    .push(Problem::from_error(&segment::header_error(&path, e), &path));
            }
            return Ok(());
        }
        Ok(header) if header.base_offset != base => {
            // Another segment's index under this name: its entries are relative to another
            // base, so they are not held to this segment's records.
            report.problems.push(Problem::new(
                &path,
                0,
                CorruptionKind::BaseMismatch {
                    expected: base,
                    found: header.base_offset,
                },
            ));
            return Ok(());
        }
        Ok(_) => {}
    }
    let body = bytes.get(FILE_HEADER_LEN..).unwrap_or_default();
    for (i, chunk) in body.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let Ok(raw) = <&[u8; INDEX_ENTRY_LEN]>::try_from(chunk) else {
            break;
        };
        let entry = IndexEntry::decode(raw);
        if u64::from(entry.position) >= verified_end {
            // Past damage (already reported) or past the committed end: nothing to hold the
            // entry to.
            continue;
        }
        let named = starts.get(&u64::from(entry.position));
        if named != Some(&(base + u64::from(entry.rel_offset), entry.timestamp_ms)) {
            report.problems.push(Problem::new(
                &path,
                (FILE_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64,
                CorruptionKind::BadIndexEntry,
            ));
        }
    }
    Ok(())
}
