//! Opening a log for writing: clean up after interrupted maintenance, then recover the active
//! segment's tail.
//!
//! Only the active segment can have a torn tail: a segment is synced before it is sealed. Its
//! recovery reads the index, checks the last entries against the records they point at, and
//! scans from the last good one (a batch boundary at most one index interval, plus whatever was
//! unsynced, before the end), so the cost of opening is proportional to that tail and not to the
//! size of the log. The scan keeps every complete batch (a batch is complete when its last
//! record, flagged end-of-batch, is intact) and cuts the file after the last one. Damage inside
//! the part the head file says was synced is not a torn tail: it is reported as corruption
//! instead of being cut off, because those records were acknowledged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::scan::{FrameScan, Stop};
use super::segment::{self, Listing};
use super::{Active, Durability, LogOptions, Writer};
use crate::clock::Clock;
use crate::codec::FORMAT_VERSION;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind, HeaderError};
use crate::codec::head::{BOOT_MASK, HEAD_LEN, Head};
use crate::codec::index::{self, INDEX_ENTRY_LEN, IndexEntry};
use crate::codec::record::{self, Decoded};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};

/// The file header's length as the index stores positions.
const HEADER_LEN_U32: u32 = 64;
const _: () = assert!(HEADER_LEN_U32 as usize == FILE_HEADER_LEN);

/// What recovery found and did when a log was opened for writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The active segment.
    pub segment: PathBuf,
    /// Position the tail scan started at.
    pub scanned_from: u64,
    /// Bytes the tail scan read.
    pub scanned_bytes: u64,
    /// Bytes cut off the end of the active segment (a torn or unfinished batch).
    pub truncated_bytes: u64,
    /// Index entries written for records the index did not cover.
    pub index_entries_rebuilt: u64,
    /// Indexes of sealed segments rebuilt because they were missing.
    pub indexes_rebuilt: Vec<u64>,
    /// Leftover files removed (interrupted compaction, orphaned indexes).
    pub removed_files: Vec<PathBuf>,
    /// Files recovery created or wrote a header into again (a new log's first segment, the
    /// header of a segment an interrupted roll left unfinished, a missing index).
    pub files_created: u64,
}

/// A log ready for appending.
#[derive(Debug)]
pub(super) struct Opened {
    pub writer: Writer,
    pub start_offset: u64,
    pub report: RecoveryReport,
    /// The head named the segment recovery made active: a roll publishes a segment only after
    /// fsyncing the directory, so its name is durable already.
    pub head_named_active: bool,
    /// Bytes of the active segment known to be fsynced: all of them, unless an `interval` or
    /// `never` log kept an unsynced tail as it was (see `recover_active`).
    pub synced_len: u64,
}

pub(super) fn open_for_write(
    storage: &dyn Storage,
    clock: &dyn Clock,
    dir: &Path,
    options: &LogOptions,
) -> Result<Opened> {
    let mut report = RecoveryReport::default();
    // First: a head of a newer format refuses the open before anything is changed.
    let head = read_head(storage, dir)?;
    let mut listing = segment::list(storage, dir)?;
    // A head naming a newer segment than exists: a roll fsyncs the directory before the head
    // names its segment, so no crash or power loss loses that name; the file was removed. If
    // the head says records were committed to it, they are gone: damage to report, never to
    // paper over by appending their offsets again. An empty one is only a name: the segment
    // before it (sealed, so fsynced whole up to that name's base) becomes the active one again.
    if let Some(h) = missing_active_with_records(head, &listing.segments) {
        return Err(Error::corruption(
            segment::segment_path(dir, h.active_base),
            0,
            CorruptionKind::Inconsistent(format!(
                "the active segment is missing, and the head says it held offsets {} to {}",
                h.active_base,
                h.next_offset - 1
            )),
        ));
    }
    remove_leftovers(storage, dir, &listing, &mut report)?;
    let created = listing.segments.is_empty();
    if created {
        let now = clock.now_ms();
        create_segment_files(storage, dir, 0, now)?;
        report.files_created += 2;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
        listing.segments.push(0);
        listing.indexes.push(0);
    }
    let Some((&active_base, sealed)) = listing.segments.split_last() else {
        return Err(Error::corruption(
            dir,
            0,
            CorruptionKind::Inconsistent("no segment after creating one".into()),
        ));
    };
    for &base in sealed {
        if listing.indexes.binary_search(&base).is_err() {
            rebuild_index(storage, dir, base, options.index_interval_bytes)?;
            report.indexes_rebuilt.push(base);
        }
    }
    if !report.indexes_rebuilt.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
    }
    // What a segment header recovery has to write again may take as its base timestamp.
    let earliest_base_ts = || {
        let previous = sealed
            .last()
            .and_then(|&base| last_timestamp(storage, dir, base));
        clock
            .now_ms()
            .max(head.map_or(0, |h| h.last_timestamp_ms))
            .max(previous.unwrap_or(0))
    };
    let missing = head.filter(|h| h.active_base > active_base);
    let (writer, synced_len) = recover_active(
        storage,
        dir,
        active_base,
        head,
        earliest_base_ts,
        options,
        &mut report,
    )?;
    if let Some(h) = missing
        && writer.watermark().next_offset < h.active_base
    {
        return Err(Error::corruption(
            segment::segment_path(dir, active_base),
            0,
            CorruptionKind::Inconsistent(format!(
                "sealed before segment {} was created, it ends at offset {} instead",
                h.active_base,
                writer.watermark().next_offset
            )),
        ));
    }
    let start_offset = listing.segments.first().copied().unwrap_or(active_base);
    Ok(Opened {
        writer,
        start_offset,
        report,
        head_named_active: head.is_some_and(|h| h.active_base == active_base),
        synced_len,
    })
}

/// The head, when the active segment it names no longer exists although the head says
/// records were committed to it (see `open_for_write`).
pub(super) fn missing_active_with_records(head: Option<Head>, segments: &[u64]) -> Option<Head> {
    head.filter(|h| {
        segments.last().is_none_or(|&last| h.active_base > last) && h.next_offset > h.active_base
    })
}

/// Removes compaction temporaries and indexes whose segment is gone (retention removes the
/// segment first).
fn remove_leftovers(
    storage: &dyn Storage,
    dir: &Path,
    listing: &Listing,
    report: &mut RecoveryReport,
) -> Result<()> {
    let orphans = listing
        .indexes
        .iter()
        .filter(|base| listing.segments.binary_search(base).is_err())
        .map(|&base| segment::index_path(dir, base));
    for path in listing.temps.iter().cloned().chain(orphans) {
        storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        report.removed_files.push(path);
    }
    if !report.removed_files.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
    }
    Ok(())
}

/// Creates a segment and its index, each holding just its header and fsynced. The caller
/// fsyncs the directory.
pub(super) fn create_segment_files(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    now: u64,
) -> Result<(Arc<dyn StorageFile>, Arc<dyn StorageFile>)> {
    let header = FileHeader {
        kind: FileKind::Segment,
        base_offset: base,
        base_timestamp_ms: now,
    };
    let file = segment::create_with_header(storage, &segment::segment_path(dir, base), &header)?;
    let index = segment::create_with_header(
        storage,
        &segment::index_path(dir, base),
        &FileHeader {
            kind: FileKind::Index,
            ..header
        },
    )?;
    Ok((file, index))
}

/// The head file, if it exists and decodes. A damaged head only makes recovery more cautious,
/// but one written by a newer format version (its checksum holds, so it is not damage) is
/// refused: the open would overwrite it.
pub(super) fn read_head(storage: &dyn Storage, dir: &Path) -> Result<Option<Head>> {
    let path = dir.join(segment::HEAD_FILE);
    let Ok(file) = storage.open(&path, OpenMode::Read) else {
        return Ok(None);
    };
    let mut buf = [0u8; HEAD_LEN];
    if file.read_exact_at(&mut buf, 0).is_err() {
        return Ok(None);
    }
    match Head::decode(&buf) {
        Ok(head) => Ok(Some(head)),
        // Decoding checks the checksum before the version: this head is intact.
        Err(HeaderError::Version(found)) if found > FORMAT_VERSION => {
            Err(Error::UnsupportedVersion {
                file: path,
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(_) => Ok(None),
    }
}

fn read_all(file: &dyn StorageFile, path: &Path, from: u64, to: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(to.saturating_sub(from))
        .map_err(|_| Error::InvalidArgument(format!("{} is too large to read", path.display())))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, from)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// The offset and timestamp of a valid frame at `position`, if there is one.
fn frame_at(file: &dyn StorageFile, position: u64, file_len: u64) -> Option<(u64, u64)> {
    let mut fixed = [0u8; record::FRAME_HEADER_LEN];
    file.read_exact_at(&mut fixed, position).ok()?;
    let total = record::decode_len(&fixed).ok()?;
    if position + total as u64 > file_len {
        return None;
    }
    let mut frame = vec![0u8; total];
    file.read_exact_at(&mut frame, position).ok()?;
    match record::decode(&frame) {
        Decoded::Frame(f) => Some((f.offset, f.timestamp_ms)),
        _ => None,
    }
}

/// Recovers the active segment's tail and returns the writer positioned after its last complete
/// batch, and how much of the segment is known to be fsynced.
fn recover_active(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    head: Option<Head>,
    base_ts: impl FnOnce() -> u64,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<(Writer, u64)> {
    let path = segment::segment_path(dir, base);
    let index_path = segment::index_path(dir, base);
    report.segment.clone_from(&path);
    let (file, file_len) = segment::open_sized(storage, &path, OpenMode::ReadWrite)?;
    let header_len = FILE_HEADER_LEN as u64;

    // What the head says was synced in this segment. A head naming an older segment means the
    // crash came right after a roll, before the head moved: nothing here is known synced yet.
    // A head naming a newer, empty segment that no longer exists (see `open_for_write`): this
    // segment was sealed, hence fsynced, before that one was created; it becomes the active
    // one again.
    let synced_len = match head {
        Some(h) if h.active_base == base => h.synced_len,
        // Sealed and fsynced whole: a bad frame in it is damage, never a tail to cut.
        Some(h) if h.active_base > base => file_len,
        // No head, or one naming another segment: nothing here is known to be synced.
        _ => 0,
    };
    if file_len < synced_len {
        return Err(Error::corruption(
            &path,
            file_len,
            CorruptionKind::Truncated {
                needed: synced_len,
                available: file_len,
            },
        ));
    }

    // A segment no longer than its header holds no record. If its header does not check out
    // and the head does not vouch for it, the process died while creating it: write it again.
    // Its base timestamp must not be before any record of the segment before it (age retention
    // drops that one once this one's base timestamp is old enough) and no record will be
    // before it: now, or later if the clock stepped back.
    let header = match segment::read_header(&*file, &path, FileKind::Segment, base) {
        Ok(header) => header,
        Err(_) if file_len <= header_len && synced_len <= header_len => {
            let header = FileHeader {
                kind: FileKind::Segment,
                base_offset: base,
                base_timestamp_ms: base_ts(),
            };
            segment::create_with_header(storage, &path, &header)?;
            report.files_created += 1;
            header
        }
        Err(e) => return Err(e),
    };
    let file_len = file_len.max(header_len);

    // Index: keep the well-formed prefix, then drop entries from the end until one points at
    // the record it names.
    let (index_file, index_len) =
        segment::open_sized(storage, &index_path, OpenMode::CreateOrOpen)?;
    let mut entries = match segment::read_header(&*index_file, &index_path, FileKind::Index, base) {
        Ok(_) => {
            let body = read_all(&*index_file, &index_path, header_len, index_len)?;
            index::decode_entries(&body, HEADER_LEN_U32, file_len)
        }
        Err(_) => {
            // A missing or damaged index header: the index is only a hint, start it afresh.
            report.files_created += 1;
            segment::create_with_header(
                storage,
                &index_path,
                &FileHeader {
                    kind: FileKind::Index,
                    ..header
                },
            )?;
            Vec::new()
        }
    };
    let on_disk = entries.clone();
    // Past the synced length, a frame an index entry names proves the bytes before it only if
    // the machine has not gone down since they were written: a power loss may keep a later
    // page of the file and lose an earlier one, and a scan starting past that hole would
    // never see it. In another boot than the head's (or with no head, or an old one that
    // does not say), the scan starts no later than the synced length.
    let same_boot = head.is_some_and(|h| h.boot != 0 && h.boot == storage.boot_id() & BOOT_MASK);
    let trusted_end = if same_boot { file_len } else { synced_len };
    let mut scan_from = (header_len, base, header.base_timestamp_ms);
    while let Some(last) = entries.last() {
        let position = u64::from(last.position);
        let offset = base + u64::from(last.rel_offset);
        if position <= trusted_end
            && frame_at(&*file, position, file_len) == Some((offset, last.timestamp_ms))
        {
            scan_from = (position, offset, last.timestamp_ms);
            break;
        }
        entries.pop();
    }
    let (start, start_offset, start_ts) = scan_from;
    let mut rebuilt = 0;

    // Scan the tail. Every position the scan starts from is a batch boundary.
    let tail = read_all(&*file, &path, start, file_len)?;
    let mut scan = FrameScan::new(&tail, start, 0).contiguous_from(start_offset);
    let mut valid_end = start;
    let mut next_offset = start_offset;
    let mut last_ts = start_ts.max(header.base_timestamp_ms);
    let mut last_indexed = entries.last().map_or(header_len, |e| u64::from(e.position));
    let mut batch_start = true;
    let mut pending: Vec<IndexEntry> = Vec::new();
    for (position, frame) in scan.by_ref() {
        if batch_start
            && position > last_indexed
            && position - last_indexed >= u64::from(options.index_interval_bytes)
        {
            pending.push(IndexEntry {
                rel_offset: u32::try_from(frame.offset - base).unwrap_or(u32::MAX),
                position: u32::try_from(position).unwrap_or(u32::MAX),
                timestamp_ms: frame.timestamp_ms,
            });
            last_indexed = position;
        }
        batch_start = frame.ends_batch();
        if frame.ends_batch() {
            valid_end = position + frame.frame_len as u64;
            next_offset = frame.offset + 1;
            last_ts = last_ts.max(frame.timestamp_ms);
            rebuilt += pending.len();
            entries.append(&mut pending);
        }
    }
    // The entry the scan started from may name the first frame of a batch that did not
    // complete: its position is the valid end, where the next batch will go. An entry names
    // a record that is kept, or goes.
    entries.retain(|e| u64::from(e.position) < valid_end);
    if valid_end < synced_len {
        let at = match scan.stop() {
            Some(Stop::Corrupt { position, .. } | Stop::Incomplete { position, .. }) => *position,
            _ => valid_end,
        };
        return Err(Error::corruption(
            &path,
            at,
            CorruptionKind::InSyncedRegion { synced_len },
        ));
    }
    // Zeros after the last batch are a prefill (see `Inner::prefill`): they stay, so the next
    // appends overwrite them. Anything else there goes, zeros included: a batch torn by a
    // power loss may have lost a page in the middle and kept the ones after it, and those
    // frames must never follow what is appended next.
    let zeros_after = tail
        .get(usize::try_from(valid_end - start).unwrap_or(usize::MAX)..)
        .is_some_and(|rest| rest.iter().all(|&b| b == 0));
    let cut = valid_end < file_len && !zeros_after;
    report.scanned_from = start;
    report.scanned_bytes = file_len - start;
    report.truncated_bytes = if cut { file_len - valid_end } else { 0 };
    report.index_entries_rebuilt = rebuilt as u64;

    if cut {
        // Only bytes past the committed length go: no reader has been told they exist.
        file.set_len(valid_end)
            .map_err(|e| Error::io("truncate", &path, e))?;
    }
    // Adopt what survived as durable, so the head can say all of it is synced. When the head
    // already vouched for every byte and nothing was cut, there is nothing to sync (and a
    // reopen, which every CLI command is, pays no fdatasync). Kept zeros need no sync: lost,
    // they leave a shorter file, which the next append extends.
    //
    // An `interval` or `never` log whose head names this segment, written in this boot, with
    // nothing cut, keeps its unsynced tail as it is: the head goes on saying how much was
    // synced, and the writer's next fsync (its interval's, a roll's, an explicit sync) covers
    // the rest. Syncing here would make every process that opens it (each CLI command) pay
    // the fdatasync that mode was chosen to avoid.
    let keep_unsynced = options.durability != Durability::Always
        && same_boot
        && head.is_some_and(|h| h.active_base == base)
        && !cut;
    let synced_len = if valid_end == synced_len && !cut {
        valid_end
    } else if keep_unsynced {
        // At most the valid end: a shorter valid end failed the open above.
        synced_len
    } else {
        file.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
        valid_end
    };

    // Compare contents, not counts: the walk back may have dropped entries the scan then
    // replaced with as many different ones.
    let same = entries
        .iter()
        .zip(&on_disk)
        .take_while(|(a, b)| a == b)
        .count();
    let entries_changed = same != entries.len()
        || same != on_disk.len()
        || index_len != header_len + (on_disk.len() * INDEX_ENTRY_LEN) as u64;
    if entries_changed {
        let mut bytes = Vec::with_capacity((entries.len() - same) * INDEX_ENTRY_LEN);
        for entry in entries.get(same..).unwrap_or_default() {
            bytes.extend_from_slice(&entry.encode());
        }
        let at = header_len + (same * INDEX_ENTRY_LEN) as u64;
        index_file
            .write_all_at(&bytes, at)
            .map_err(|e| Error::io("write", &index_path, e))?;
        index_file
            .set_len(header_len + (entries.len() * INDEX_ENTRY_LEN) as u64)
            .map_err(|e| Error::io("truncate", &index_path, e))?;
        index_file
            .sync_data()
            .map_err(|e| Error::io("fsync", &index_path, e))?;
    }

    let writer = Writer {
        active: Active {
            base,
            base_timestamp_ms: header.base_timestamp_ms,
            path,
            file,
            index_path,
            index_file,
            len: valid_end,
            file_len: if cut { valid_end } else { file_len },
            index_entries: entries.len() as u64,
            last_indexed: entries.last().map_or(header_len, |e| u64::from(e.position)),
        },
        next_offset,
        last_timestamp_ms: last_ts,
        frames: Vec::new(),
        entries: Vec::new(),
    };
    Ok((writer, synced_len))
}

/// The timestamp of the last record of the sealed segment `base`, read from its last index
/// entry that checks out (or its start) to its end; `None` if it cannot be read.
pub(super) fn last_timestamp(storage: &dyn Storage, dir: &Path, base: u64) -> Option<u64> {
    let path = segment::segment_path(dir, base);
    let (file, len) = segment::open_sized(storage, &path, OpenMode::Read).ok()?;
    let header = segment::read_header(&*file, &path, FileKind::Segment, base).ok()?;
    let mut from = FILE_HEADER_LEN as u64;
    let index_path = segment::index_path(dir, base);
    if let Ok((index, index_len)) = segment::open_sized(storage, &index_path, OpenMode::Read)
        && let Ok(body) = read_all(&*index, &index_path, FILE_HEADER_LEN as u64, index_len)
    {
        let entries = index::decode_entries(&body, HEADER_LEN_U32, len);
        if let Some(entry) = entries.iter().rev().find(|e| {
            frame_at(&*file, u64::from(e.position), len)
                == Some((base + u64::from(e.rel_offset), e.timestamp_ms))
        }) {
            from = u64::from(entry.position);
        }
    }
    let tail = read_all(&*file, &path, from, len).ok()?;
    let last = FrameScan::new(&tail, from, 0)
        .map(|(_, frame)| frame.timestamp_ms)
        .max();
    Some(last.unwrap_or(0).max(header.base_timestamp_ms))
}

/// Index entries for a whole segment held in `bytes`: one at the first batch start at least
/// `interval` bytes past the previous entry.
pub(super) fn index_entries_for(
    bytes: &[u8],
    base: u64,
    interval: u32,
) -> (Vec<IndexEntry>, Option<Stop>) {
    let mut scan = FrameScan::new(bytes, 0, FILE_HEADER_LEN);
    let mut entries = Vec::new();
    let mut last_indexed = FILE_HEADER_LEN as u64;
    let mut batch_start = true;
    for (position, frame) in scan.by_ref() {
        if batch_start
            && position - last_indexed >= u64::from(interval)
            && let (Ok(rel_offset), Ok(pos)) =
                (u32::try_from(frame.offset - base), u32::try_from(position))
        {
            entries.push(IndexEntry {
                rel_offset,
                position: pos,
                timestamp_ms: frame.timestamp_ms,
            });
            last_indexed = position;
        }
        batch_start = frame.ends_batch();
    }
    let stop = scan.stop().cloned().filter(|s| *s != Stop::End);
    (entries, stop)
}

/// Writes a fresh index for the sealed segment `base` (the caller fsyncs the directory).
pub(super) fn rebuild_index(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    interval: u32,
) -> Result<()> {
    let path = segment::segment_path(dir, base);
    let (file, len) = segment::open_sized(storage, &path, OpenMode::Read)?;
    let header = segment::read_header(&*file, &path, FileKind::Segment, base)?;
    let bytes = read_all(&*file, &path, 0, len)?;
    let (entries, stop) = index_entries_for(&bytes, base, interval);
    if let Some(Stop::Corrupt { position, kind }) = stop {
        return Err(Error::corruption(&path, position, kind));
    }
    write_index(storage, &segment::index_path(dir, base), &header, &entries)
}

/// Writes an index file with `entries` and fsyncs it.
pub(super) fn write_index(
    storage: &dyn Storage,
    path: &Path,
    segment_header: &FileHeader,
    entries: &[IndexEntry],
) -> Result<()> {
    let header = FileHeader {
        kind: FileKind::Index,
        ..*segment_header
    };
    let mut bytes = Vec::with_capacity(FILE_HEADER_LEN + entries.len() * INDEX_ENTRY_LEN);
    bytes.extend_from_slice(&header.encode());
    for entry in entries {
        bytes.extend_from_slice(&entry.encode());
    }
    let file = storage
        .open(path, OpenMode::CreateOrOpen)
        .map_err(|e| Error::io("create", path, e))?;
    file.set_len(0)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write", path, e))?;
    file.sync_data().map_err(|e| Error::io("fsync", path, e))
}

/// Opens a segment another writer made active, trusting its published head (see
/// `Inner::catch_up`). Lengths and index bookkeeping are set by the caller and [`trim_index`].
pub(super) fn open_active(storage: &dyn Storage, dir: &Path, base: u64) -> Result<Active> {
    let path = segment::segment_path(dir, base);
    let index_path = segment::index_path(dir, base);
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", &path, e))?;
    let header = segment::read_header(&*file, &path, FileKind::Segment, base)?;
    let (index_file, index_len) = segment::open_sized(storage, &index_path, OpenMode::ReadWrite)?;
    Ok(Active {
        base,
        base_timestamp_ms: header.base_timestamp_ms,
        path,
        file,
        index_path,
        index_file,
        len: FILE_HEADER_LEN as u64,
        file_len: FILE_HEADER_LEN as u64,
        index_entries: index_len.saturating_sub(FILE_HEADER_LEN as u64) / INDEX_ENTRY_LEN as u64,
        last_indexed: FILE_HEADER_LEN as u64,
    })
}

/// Drops index entries at or past `committed` (written by a writer that died before its batch
/// was committed) and a torn partial entry, and sets `last_indexed`.
pub(super) fn trim_index(active: &mut Active, committed: u64) -> Result<()> {
    let header_len = FILE_HEADER_LEN as u64;
    let entry_len = INDEX_ENTRY_LEN as u64;
    let on_disk = active
        .index_file
        .len()
        .map_err(|e| Error::io("stat", &active.index_path, e))?;
    let mut count = on_disk.saturating_sub(header_len) / entry_len;
    active.last_indexed = header_len;
    while count > 0 {
        let mut raw = [0u8; INDEX_ENTRY_LEN];
        active
            .index_file
            .read_exact_at(&mut raw, header_len + (count - 1) * entry_len)
            .map_err(|e| Error::io("read", &active.index_path, e))?;
        let position = u64::from(IndexEntry::decode(&raw).position);
        if position < committed {
            active.last_indexed = position;
            break;
        }
        count -= 1;
    }
    let want = header_len + count * entry_len;
    if on_disk != want {
        active
            .index_file
            .set_len(want)
            .map_err(|e| Error::io("truncate", &active.index_path, e))?;
    }
    active.index_entries = count;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::record::{FLAG_END_OF_BATCH, FrameFields, encode_into};

    /// A segment image: header, then batches of the given sizes with 100-byte payloads.
    fn segment(base: u64, batches: &[usize]) -> Vec<u8> {
        let mut bytes = FileHeader {
            kind: FileKind::Segment,
            base_offset: base,
            base_timestamp_ms: 0,
        }
        .encode()
        .to_vec();
        let mut offset = base;
        for &n in batches {
            for i in 0..n {
                let fields = FrameFields {
                    offset,
                    timestamp_ms: offset,
                    kind: 0,
                    flags: if i + 1 == n { FLAG_END_OF_BATCH } else { 0 },
                    header: b"",
                    payload: &[7u8; 100],
                };
                encode_into(&mut bytes, &fields).unwrap();
                offset += 1;
            }
        }
        bytes
    }

    #[test]
    fn index_entries_sit_at_batch_starts_an_interval_apart() {
        // Frames are 132 bytes; batches of 3 records are 396 bytes.
        let bytes = segment(10, &[3, 3, 3, 3, 3]);
        let (entries, stop) = index_entries_for(&bytes, 10, 500);
        assert_eq!(stop, None);
        let positions: Vec<u32> = entries.iter().map(|e| e.position).collect();
        // Batch starts: 64, 460, 856, 1252, 1648; an entry once 500 bytes have passed.
        assert_eq!(positions, vec![856, 1648]);
        assert_eq!(entries[0].rel_offset, 6);
        assert_eq!(entries[0].timestamp_ms, 16);
    }

    #[test]
    fn index_entries_report_where_damage_stops_the_scan() {
        let mut bytes = segment(0, &[2, 2]);
        let at = FILE_HEADER_LEN + 132 + 40;
        bytes[at] ^= 1;
        let (_, stop) = index_entries_for(&bytes, 0, 1);
        assert!(
            matches!(stop, Some(Stop::Corrupt { position: 196, .. })),
            "{stop:?}"
        );
    }

    #[test]
    fn trim_index_drops_entries_past_the_committed_length() {
        let storage = crate::storage::SimStorage::new();
        let dir = Path::new("/l");
        storage.create_dir_all(dir).unwrap();
        let (file, index_file) = create_segment_files(&storage, dir, 0, 0).unwrap();
        let mut body = Vec::new();
        for (rel, position) in [(1u32, 100u32), (5, 900), (9, 1700)] {
            body.extend_from_slice(
                &IndexEntry {
                    rel_offset: rel,
                    position,
                    timestamp_ms: 0,
                }
                .encode(),
            );
        }
        body.extend_from_slice(&[0xAB; 7]); // a torn entry
        index_file.write_all_at(&body, 64).unwrap();
        let mut active = open_active(&storage, dir, 0).unwrap();
        assert_eq!(active.index_entries, 3);
        trim_index(&mut active, 1000).unwrap();
        assert_eq!((active.index_entries, active.last_indexed), (2, 900));
        assert_eq!(index_file.len().unwrap(), 64 + 32);
        trim_index(&mut active, 50).unwrap();
        assert_eq!((active.index_entries, active.last_indexed), (0, 64));
        drop(file);
    }
}
