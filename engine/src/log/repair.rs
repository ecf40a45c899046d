//! Repairing a damaged log (`shoal check --repair`).
//!
//! Repair runs inside the writer lock, after opening the log has already recovered the active
//! segment's tail and rewritten the head. It then checks every file and mends what it can:
//!
//! - a damaged index is rebuilt from its segment (written aside, renamed over the old one);
//! - a segment with damaged records keeps every record before the first damaged byte: the
//!   original is first copied, byte for byte and fsynced, into a quarantine directory (never
//!   deleted), then a segment of the intact records replaces it as compaction would. The
//!   offsets from the first lost record to the next segment's base are reported lost. A damaged
//!   active segment is sealed first (the log continues at its next offset, so no offset is ever
//!   given out twice).
//!
//! Nothing that a reader may have mapped is written in place.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::compaction::{push_record, replace_segment};
use super::recovery::{
    create_segment_files, index_entries_for, last_timestamp, missing_active_with_records,
    read_head, write_index,
};
use super::scan::FrameScan;
use super::{Inner, Log, LogOptions, LogReader, check, guard, segment};
use crate::clock::Clock;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::Head;
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};

/// Where repair keeps the originals of the files it replaces or moves aside: a directory
/// (`<data>/lost+found/<time>/`) mirroring the data directory's layout.
#[derive(Debug)]
pub struct Quarantine<'a> {
    storage: &'a dyn Storage,
    data_root: PathBuf,
    dir: PathBuf,
}

impl<'a> Quarantine<'a> {
    /// Originals of files under `data_root` will be kept under `dir`, at the same relative
    /// path. Nothing is created until a file is kept.
    pub fn new(storage: &'a dyn Storage, data_root: &Path, dir: &Path) -> Quarantine<'a> {
        Quarantine {
            storage,
            data_root: data_root.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    /// Where the original of `file` goes, with its directory created and made durable.
    fn place_for(&self, file: &Path) -> Result<PathBuf> {
        let relative = file.strip_prefix(&self.data_root).unwrap_or(file);
        let relative = relative.strip_prefix("/").unwrap_or(relative);
        let mut target = self.dir.join(relative);
        // A file kept twice in one repair keeps both copies.
        let mut n = 1;
        while self.storage.exists(&target) {
            let mut name = self.dir.join(relative).into_os_string();
            name.push(format!(".{n}"));
            target = PathBuf::from(name);
            n += 1;
        }
        let parent = target.parent().unwrap_or(&self.dir).to_path_buf();
        if !self.storage.exists(&parent) {
            self.storage
                .create_dir_all(&parent)
                .map_err(|e| Error::io("create directory", &parent, e))?;
            // Every new directory entry, from the quarantine's up to the data directory.
            let mut dir = parent.parent();
            while let Some(d) = dir {
                self.storage
                    .sync_dir(d)
                    .map_err(|e| Error::io("fsync", d, e))?;
                if d == self.data_root || !d.starts_with(&self.data_root) {
                    break;
                }
                dir = d.parent();
            }
        }
        Ok(target)
    }

    /// Writes `bytes` (the content of `file`) into the quarantine and makes the copy durable.
    pub fn keep_copy(&self, file: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let target = self.place_for(file)?;
        let out = self
            .storage
            .open(&target, OpenMode::CreateOrOpen)
            .map_err(|e| Error::io("create", &target, e))?;
        out.set_len(0)
            .map_err(|e| Error::io("truncate", &target, e))?;
        out.write_all_at(bytes, 0)
            .map_err(|e| Error::io("write", &target, e))?;
        out.sync_data()
            .map_err(|e| Error::io("fsync", &target, e))?;
        self.sync_parent(&target)?;
        Ok(target)
    }

    /// Moves `file` into the quarantine (a rename; both directories fsynced).
    pub fn move_in(&self, file: &Path) -> Result<PathBuf> {
        let target = self.place_for(file)?;
        self.storage
            .rename(file, &target)
            .map_err(|e| Error::io("rename", file, e))?;
        self.sync_parent(&target)?;
        self.sync_parent(file)?;
        Ok(target)
    }

    fn sync_parent(&self, file: &Path) -> Result<()> {
        match file.parent() {
            Some(dir) => self
                .storage
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync", dir, e)),
            None => Ok(()),
        }
    }
}

/// One thing repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The file repaired, moved or replaced.
    pub file: PathBuf,
    /// What was done.
    pub action: RepairAction,
    /// Where the damaged original is kept, if it was kept.
    pub original: Option<PathBuf>,
    /// Offsets of the log that are gone (records the damaged file held from the first damaged
    /// one up to the next segment).
    pub lost: Option<Range<u64>>,
    /// What it means for the data, as a sentence.
    pub detail: String,
}

/// The kinds of repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairAction {
    /// An index rebuilt from its segment.
    IndexRebuilt,
    /// A segment rewritten with the records before its first damage.
    SegmentSalvaged,
    /// A damaged metadata file moved aside (its owner starts over without it).
    MovedAside,
    /// A queue's state reset to what its journal still holds.
    StateReset,
    /// A log whose active segment was gone continues in a new one after its lost offsets.
    SegmentMissing,
}

impl RepairAction {
    /// A short name for output.
    pub fn name(self) -> &'static str {
        match self {
            RepairAction::IndexRebuilt => "index-rebuilt",
            RepairAction::SegmentSalvaged => "segment-salvaged",
            RepairAction::MovedAside => "moved-aside",
            RepairAction::StateReset => "state-reset",
            RepairAction::SegmentMissing => "segment-missing",
        }
    }
}

impl Log {
    /// Checks this log and repairs what can be repaired (see the module docs), keeping every
    /// replaced original in `quarantine`. Problems it cannot mend (a damaged seal) are left for
    /// the caller's next check to report.
    pub fn repair(&self, quarantine: &Quarantine<'_>) -> Result<Vec<Repair>> {
        let _ticket = self.inner.enter()?;
        let inner = &*self.inner;
        let mut found = check::CheckReport::default();
        check::check(&*inner.storage, &inner.dir, &mut found)?;
        let damaged = |found: &check::CheckReport, base: u64| {
            let names = [
                segment::segment_path(&inner.dir, base),
                segment::index_path(&inner.dir, base),
            ];
            found.problems.iter().any(|p| names.contains(&p.file))
        };
        if damaged(&found, inner.active_base()) {
            // Seal it, so that it can be rewritten like any sealed segment.
            self.roll()?;
            found = check::CheckReport::default();
            check::check(&*inner.storage, &inner.dir, &mut found)?;
        }
        let _maintenance = guard(&inner.maintenance);
        let bases = segment::list(&*inner.storage, &inner.dir)?.segments;
        let mut repairs = Vec::new();
        for (i, pair) in bases.windows(2).enumerate() {
            let (base, next_base) = (pair[0], pair[1]);
            let segment_path = segment::segment_path(&inner.dir, base);
            if found.problems.iter().any(|p| p.file == segment_path) {
                let previous = i.checked_sub(1).map(|p| bases[p]);
                let salvaged = salvage(
                    &*inner.storage,
                    &inner.dir,
                    inner.options.index_interval_bytes,
                    Some(&inner.reader),
                    base,
                    Some(next_base),
                    false,
                    previous,
                    quarantine,
                )?;
                let lost = salvaged.lost_from..next_base;
                repairs.push(salvage_repair(segment_path, salvaged, lost));
            } else if damaged(&found, base) {
                repairs.push(rebuild_index(inner, base)?);
            }
        }
        Ok(repairs)
    }
}

/// A segment cut back to the records before its first damage.
struct Salvaged {
    original: PathBuf,
    kept: u64,
    /// The offset after the last record kept (the base when none was).
    lost_from: u64,
}

/// Rewrites segment `base` with the records before its first damage (and below `upper`: the
/// next segment's base, or the first offset never acknowledged), after keeping a copy of the
/// original. With `whole_batches`, records after the last complete batch go too (nothing
/// says they were acknowledged).
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of a log, opened or not"
)]
fn salvage(
    storage: &dyn Storage,
    dir: &Path,
    index_interval: u32,
    reader: Option<&LogReader>,
    base: u64,
    upper: Option<u64>,
    whole_batches: bool,
    previous: Option<u64>,
    quarantine: &Quarantine<'_>,
) -> Result<Salvaged> {
    let path = segment::segment_path(dir, base);
    let old = segment::read_file(storage, &path)?;
    let header = FileHeader::decode(FileKind::Segment, &old)
        .ok()
        .filter(|h| h.base_offset == base);
    let intact_header = header.is_some();
    // A header that is gone takes the time the previous segment ended, so segment times
    // still never run backwards.
    let header = header.unwrap_or(FileHeader {
        kind: FileKind::Segment,
        base_offset: base,
        base_timestamp_ms: previous
            .and_then(|p| last_timestamp(storage, dir, p))
            .unwrap_or(0),
    });
    let mut new = Vec::with_capacity(old.len());
    new.extend_from_slice(&header.encode());
    let mut kept = 0u64;
    let mut lost_from = base;
    // What was kept up to the end of the last complete batch.
    let mut batch_end = (new.len(), kept, lost_from);
    if intact_header {
        for (_, frame) in FrameScan::new(&old, 0, FILE_HEADER_LEN) {
            if frame.offset < lost_from || upper.is_some_and(|u| frame.offset >= u) {
                break;
            }
            push_record(&mut new, &frame)?;
            kept += 1;
            lost_from = frame.offset + 1;
            if frame.ends_batch() {
                batch_end = (new.len(), kept, lost_from);
            }
        }
    }
    if whole_batches {
        new.truncate(batch_end.0);
        (kept, lost_from) = (batch_end.1, batch_end.2);
    }
    let original = quarantine.keep_copy(&path, &old)?;
    replace_segment(storage, dir, index_interval, reader, base, &header, &new)?;
    Ok(Salvaged {
        original,
        kept,
        lost_from,
    })
}

fn salvage_repair(file: PathBuf, salvaged: Salvaged, lost: Range<u64>) -> Repair {
    let detail = if lost.is_empty() {
        format!(
            "kept all {} records; only bytes after the last one were damaged",
            salvaged.kept
        )
    } else {
        format!(
            "kept {} records; offsets {} to {} are lost",
            salvaged.kept,
            lost.start,
            lost.end - 1
        )
    };
    Repair {
        file,
        action: RepairAction::SegmentSalvaged,
        original: Some(salvaged.original),
        lost: Some(lost),
        detail,
    }
}

/// Repairs the log in `dir` when it does not even open because its active segment is damaged
/// where it was already synced: under the writer lock, the active segment is cut back to its
/// intact records (the original kept in `quarantine`) and a new empty segment starts at the
/// head's next offset, so no acknowledged offset is given out again. Afterwards the log opens
/// and [`Log::repair`] sees to the rest.
pub fn repair_unopenable(
    storage: &dyn Storage,
    clock: &dyn Clock,
    dir: &Path,
    options: &LogOptions,
    quarantine: &Quarantine<'_>,
) -> Result<Vec<Repair>> {
    let lock_path = dir.join(segment::LOCK_FILE);
    let _lock = storage
        .lock(&lock_path, true)
        .map_err(|e| Error::io("lock", &lock_path, e))?;
    let head = read_head(storage, dir)?;
    let bases = segment::list(storage, dir)?.segments;
    if let Some(h) = missing_active_with_records(head, &bases) {
        // With no segment left at all, everything from the start is gone.
        let lost_from = if bases.is_empty() {
            h.start_offset
        } else {
            h.active_base
        };
        return continue_past_missing(storage, clock, dir, h, lost_from);
    }
    let Some(&active) = bases.last() else {
        return Ok(Vec::new());
    };
    let previous = bases.len().checked_sub(2).map(|i| bases[i]);
    let salvaged = salvage(
        storage,
        dir,
        options.index_interval_bytes,
        None,
        active,
        // Only what the head says was committed was ever acknowledged; without a head, only
        // whole batches.
        head.map(|h| h.next_offset),
        head.is_none(),
        previous,
        quarantine,
    )?;
    let next = head.map_or(salvaged.lost_from, |h| {
        h.next_offset.max(salvaged.lost_from)
    });
    let last_ms = head.map_or(0, |h| h.last_timestamp_ms);
    let now = clock.now_ms().max(last_ms);
    let path = segment::segment_path(dir, active);
    let (active_base, committed) = if next > active {
        create_segment_files(storage, dir, next, now)?;
        (next, FILE_HEADER_LEN as u64)
    } else {
        // Nothing was kept and nothing came after: the emptied segment stays active.
        (
            active,
            segment::open_sized(storage, &path, OpenMode::Read)?.1,
        )
    };
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync", dir, e))?;
    write_head(
        storage,
        dir,
        &Head {
            active_base,
            committed_len: committed,
            synced_len: committed,
            next_offset: next,
            last_timestamp_ms: last_ms,
            start_offset: head.map_or(bases[0], |h| h.start_offset),
            boot: storage.boot_id(),
        },
    )?;
    let lost = salvaged.lost_from..next;
    Ok(vec![salvage_repair(path, salvaged, lost)])
}

/// The head's active segment is gone with the records it committed (offsets `lost_from` up
/// to the head's next offset): a new empty segment starts at the head's next offset, so none
/// of them is given out again.
fn continue_past_missing(
    storage: &dyn Storage,
    clock: &dyn Clock,
    dir: &Path,
    head: Head,
    lost_from: u64,
) -> Result<Vec<Repair>> {
    let next = head.next_offset;
    let now = clock.now_ms().max(head.last_timestamp_ms);
    create_segment_files(storage, dir, next, now)?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync", dir, e))?;
    let committed = FILE_HEADER_LEN as u64;
    write_head(
        storage,
        dir,
        &Head {
            active_base: next,
            committed_len: committed,
            synced_len: committed,
            boot: storage.boot_id(),
            ..head
        },
    )?;
    Ok(vec![Repair {
        file: segment::segment_path(dir, head.active_base),
        action: RepairAction::SegmentMissing,
        original: None,
        lost: Some(lost_from..next),
        detail: format!(
            "the active segment was gone: offsets {lost_from} to {} are lost; the log continues \
             at {next}",
            next - 1
        ),
    }])
}

/// Writes and fdatasyncs the head (its directory entry is the caller's to make durable).
fn write_head(storage: &dyn Storage, dir: &Path, head: &Head) -> Result<()> {
    let path = dir.join(segment::HEAD_FILE);
    let file = storage
        .open(&path, OpenMode::CreateOrOpen)
        .map_err(|e| Error::io("open", &path, e))?;
    file.write_all_at(&head.encode(), 0)
        .map_err(|e| Error::io("write", &path, e))?;
    file.sync_data().map_err(|e| Error::io("fsync", &path, e))
}

/// Rebuilds the index of the intact sealed segment `base`, writing it aside and renaming it in.
fn rebuild_index(inner: &Inner, base: u64) -> Result<Repair> {
    let storage = &*inner.storage;
    let path = segment::segment_path(&inner.dir, base);
    let index_path = segment::index_path(&inner.dir, base);
    let bytes = segment::read_file(storage, &path)?;
    let header = FileHeader::decode(FileKind::Segment, &bytes)
        .map_err(|e| segment::header_error(&path, e))?;
    let (entries, _) = index_entries_for(&bytes, base, inner.options.index_interval_bytes);
    let temp = segment::compact_path(&index_path);
    write_index(storage, &temp, &header, &entries)?;
    inner.reader.invalidate(base);
    storage
        .rename(&temp, &index_path)
        .map_err(|e| Error::io("rename", &temp, e))?;
    storage
        .sync_dir(&inner.dir)
        .map_err(|e| Error::io("fsync", &inner.dir, e))?;
    inner.reader.invalidate(base);
    Ok(Repair {
        file: index_path,
        action: RepairAction::IndexRebuilt,
        original: None,
        lost: None,
        detail: format!("rebuilt with {} entries from its segment", entries.len()),
    })
}
