//! Reading a log without its lock, from this process or any other.
//!
//! A reader learns from the head file how far the active segment is committed and never looks
//! past that; sealed segments are complete. Segments are read through memory maps and records
//! are handed out as slices borrowed from the map, after their checksums are verified. The map
//! lives as long as the [`ReadBatch`] that borrows it, so retention or compaction unlinking the
//! file meanwhile changes nothing for the reader.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::guard;
use super::scan::{FrameScan, Stop};
use super::segment;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind};
use crate::codec::head::{HEAD_LEN, Head};
use crate::codec::index::{INDEX_ENTRY_LEN, IndexEntry};
use crate::codec::record::{self, Decoded};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{Mapping, OpenMode, SharedStorage, StorageFile};

/// How much one read may return. At least one record is returned when one is available, even if
/// it alone exceeds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Most records to return.
    pub max_records: usize,
    /// Most header plus payload bytes to return.
    pub max_bytes: usize,
}

impl ReadLimit {
    /// Up to `n` records, any size.
    pub fn records(n: usize) -> Self {
        ReadLimit {
            max_records: n,
            max_bytes: usize::MAX,
        }
    }
}

impl Default for ReadLimit {
    fn default() -> Self {
        ReadLimit {
            max_records: 10_000,
            max_bytes: 8 << 20,
        }
    }
}

/// One record, borrowed from a [`ReadBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its offset.
    pub offset: u64,
    /// When it was appended, ms since the epoch.
    pub timestamp_ms: u64,
    /// The kind tag given at append.
    pub kind: u8,
    /// The header given at append.
    pub header: &'a [u8],
    /// The payload given at append.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    timestamp_ms: u64,
    kind: u8,
    header_at: usize,
    header_len: usize,
    payload_len: usize,
}

/// Records read from one segment, borrowing from its memory map.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    map: Option<Mapping>,
    slots: Vec<Slot>,
    next_offset: u64,
}

impl ReadBatch {
    fn empty(next_offset: u64) -> Self {
        ReadBatch {
            map: None,
            slots: Vec::new(),
            next_offset,
        }
    }

    /// The records, in offset order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        let bytes = self.map.as_ref().map_or(&[][..], Mapping::bytes);
        self.slots.iter().map(move |s| {
            let header_end = s.header_at + s.header_len;
            Record {
                offset: s.offset,
                timestamp_ms: s.timestamp_ms,
                kind: s.kind,
                header: bytes.get(s.header_at..header_end).unwrap_or_default(),
                payload: bytes
                    .get(header_end..header_end + s.payload_len)
                    .unwrap_or_default(),
            }
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no record was available.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Where the next read should start: one past the last record returned (or the requested
    /// offset, when nothing was).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
}

/// A segment as the reader sees it.
#[derive(Debug, Default)]
struct View {
    file: Option<Arc<dyn StorageFile>>,
    header: Option<FileHeader>,
    map: Option<Mapping>,
    /// How many bytes of `map` were committed when it was made: all a snapshot is good for.
    mapped_end: u64,
    /// File length of a sealed segment.
    sealed_len: Option<u64>,
    /// A sealed segment's index, memory-mapped (sealed indexes never change in place).
    index: Option<Mapping>,
    /// The active segment's index, read with `pread` and extended as it grows: a writer's
    /// recovery may truncate it, which must never be able to fault a mapping.
    active_index: Option<(Arc<dyn StorageFile>, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy)]
struct Hint {
    offset: u64,
    base: u64,
    position: u64,
}

#[derive(Debug)]
struct State {
    head_file: Arc<dyn StorageFile>,
    head: Head,
    segments: BTreeMap<u64, View>,
    listed_for: (u64, u64),
    hint: Option<Hint>,
    /// The cached head may be out of date in a way reads cannot tell (this process compacted
    /// or removed a segment): re-read it before the next read.
    head_stale: bool,
}

/// Reads a log's committed records; needs no lock. Cheap to share between threads.
#[derive(Debug)]
pub struct LogReader {
    storage: SharedStorage,
    dir: PathBuf,
    state: Mutex<State>,
}

/// How many times a torn read of the head (racing its writer) is retried.
const HEAD_READ_ATTEMPTS: usize = 8;

fn not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

impl LogReader {
    /// Opens the log in `dir` for reading. The log must exist (a writer has opened it once).
    pub fn open(storage: SharedStorage, dir: impl Into<PathBuf>) -> Result<LogReader> {
        let dir = dir.into();
        let head_path = dir.join(segment::HEAD_FILE);
        let head_file = storage
            .open(&head_path, OpenMode::Read)
            .map_err(|e| Error::io("open", &head_path, e))?;
        let mut state = State {
            head: read_head(&*head_file, &head_path)?,
            head_file,
            segments: BTreeMap::new(),
            listed_for: (u64::MAX, u64::MAX),
            hint: None,
            head_stale: false,
        };
        relist(&*storage, &dir, &mut state)?;
        Ok(LogReader {
            storage,
            dir,
            state: Mutex::new(state),
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One past the last committed offset, as of now.
    pub fn next_offset(&self) -> Result<u64> {
        let mut state = guard(&self.state);
        self.refresh(&mut state)?;
        Ok(state.head.next_offset)
    }

    /// The final next offset of a sealed log, or `None` while it accepts appends.
    pub fn sealed_at(&self) -> Result<Option<u64>> {
        let path = self.dir.join(segment::SEALED_FILE);
        let file = match self.storage.open(&path, OpenMode::Read) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let mut buf = vec![0u8; usize::try_from(len.min(32)).unwrap_or(32)];
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        std::str::from_utf8(&buf)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                Error::corruption(
                    &path,
                    0,
                    CorruptionKind::Metadata("the seal does not hold an offset".into()),
                )
            })
    }

    /// The first offset still stored, as of now.
    pub fn start_offset(&self) -> Result<u64> {
        let mut state = guard(&self.state);
        self.refresh(&mut state)?;
        Ok(first_base(&state))
    }

    /// Reads committed records with offsets `>= from`, from one segment, up to `limit`.
    ///
    /// Returns an empty batch when nothing at or after `from` is committed yet, and
    /// [`Error::OffsetTrimmed`] when `from` was removed by retention. A record that fails its
    /// checksum ends the batch before it; a read starting at it returns
    /// [`Error::Corruption`] naming the file and byte position.
    pub fn read(&self, from: u64, limit: ReadLimit) -> Result<ReadBatch> {
        let mut state = guard(&self.state);
        let mut refreshed = false;
        if from >= state.head.next_offset || state.head_stale {
            self.refresh(&mut state)?;
            refreshed = true;
        }
        let mut relisted = false;
        loop {
            let result = self.read_locked(&mut state, from, limit);
            // Below the cached next offset, an empty answer or a damaged-looking segment may
            // only mean the cached head is old: the segment it names as active may have been
            // sealed and compacted since (read up to the old committed length, the shorter
            // file looks truncated), or the records after a compaction gap may all be newer
            // than it. Look again with a fresh head before answering.
            let doubtful = match &result {
                Ok(batch) => batch.is_empty(),
                Err(e) => e.is_corruption(),
            };
            match result {
                // A segment vanished under us (retention in another process): look again.
                Err(e) if not_found(&e) && !relisted => {
                    relisted = true;
                    refreshed = true;
                    self.refresh(&mut state)?;
                    relist(&*self.storage, &self.dir, &mut state)?;
                }
                _ if doubtful && !refreshed => {
                    refreshed = true;
                    self.refresh(&mut state)?;
                }
                other => return other,
            }
        }
    }

    /// The offset of the first committed record with a timestamp `>= timestamp_ms`, or the next
    /// offset when there is none yet.
    pub fn offset_at_time(&self, timestamp_ms: u64) -> Result<u64> {
        let mut state = guard(&self.state);
        self.refresh(&mut state)?;
        let bases: Vec<u64> = state.segments.keys().copied().collect();
        // Segments are in time order (each base timestamp is at or after every record before
        // it): find the last one that starts before the target time.
        let (mut lo, mut hi) = (0, bases.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let base = bases.get(mid).copied().unwrap_or_default();
            if self.header(&mut state, base)?.base_timestamp_ms < timestamp_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for &base in bases.get(lo.saturating_sub(1)..).unwrap_or_default() {
            let (map, limit) = self.mapped(&mut state, base)?;
            let start = self
                .index_floor(&mut state, base, &map, limit, |e| {
                    e.timestamp_ms < timestamp_ms
                })?
                .unwrap_or(FILE_HEADER_LEN as u64);
            let path = segment::segment_path(&self.dir, base);
            let bytes = map.bytes().get(..to_usize(limit)?).unwrap_or_default();
            let mut scan = FrameScan::new(bytes, 0, to_usize(start)?);
            for (_, frame) in scan.by_ref() {
                if frame.timestamp_ms >= timestamp_ms {
                    return Ok(frame.offset);
                }
            }
            if let Some(Stop::Corrupt { position, kind }) = scan.stop() {
                return Err(Error::corruption(path, *position, kind.clone()));
            }
        }
        Ok(state.head.next_offset)
    }

    /// Forgets what this reader knows of the segment based at `base` (after it was compacted or
    /// removed by this process).
    pub(super) fn invalidate(&self, base: u64) {
        let mut state = guard(&self.state);
        state.segments.insert(base, View::default());
        state.hint = None;
        // The segment changed because it is sealed now, which a head cached before the roll
        // would not say.
        state.head_stale = true;
    }

    /// Re-reads the head, and the directory if the active segment or the start moved.
    fn refresh(&self, state: &mut State) -> Result<()> {
        let head_path = self.dir.join(segment::HEAD_FILE);
        state.head = read_head(&*state.head_file, &head_path)?;
        state.head_stale = false;
        if state.listed_for != (state.head.active_base, state.head.start_offset) {
            relist(&*self.storage, &self.dir, state)?;
        }
        Ok(())
    }

    fn read_locked(&self, state: &mut State, from: u64, limit: ReadLimit) -> Result<ReadBatch> {
        if from >= state.head.next_offset {
            return Ok(ReadBatch::empty(from));
        }
        let start = first_base(state).max(state.head.start_offset);
        if from < start {
            return Err(Error::OffsetTrimmed {
                requested: from,
                start,
            });
        }
        let first = state
            .segments
            .range(..=from)
            .next_back()
            .map_or(start, |(base, _)| *base);
        let bases: Vec<u64> = state.segments.range(first..).map(|(b, _)| *b).collect();
        for base in bases {
            let batch = self.read_segment(state, base, from, limit)?;
            if !batch.is_empty() || base == state.head.active_base {
                return Ok(batch);
            }
        }
        Ok(ReadBatch::empty(from))
    }

    fn read_segment(
        &self,
        state: &mut State,
        base: u64,
        from: u64,
        limit: ReadLimit,
    ) -> Result<ReadBatch> {
        let (map, end) = self.mapped(state, base)?;
        let start = match state.hint {
            Some(h) if h.base == base && h.offset == from => h.position,
            _ if from <= base => FILE_HEADER_LEN as u64,
            _ => self
                .index_floor(state, base, &map, end, |e| {
                    base + u64::from(e.rel_offset) <= from
                })?
                .unwrap_or(FILE_HEADER_LEN as u64),
        };
        let bytes = map.bytes().get(..to_usize(end)?).unwrap_or_default();
        let mut scan = FrameScan::new(bytes, 0, to_usize(start)?);
        scan.skip_before(from);
        let mut slots = Vec::new();
        let mut taken_bytes = 0usize;
        let mut resume = None;
        while slots.len() < limit.max_records {
            let position = scan.file_position();
            let Some((_, frame)) = scan.next() else { break };
            if frame.offset < from {
                continue;
            }
            let size = frame.header.len() + frame.payload.len();
            if !slots.is_empty() && taken_bytes + size > limit.max_bytes {
                resume = Some((frame.offset, position));
                break;
            }
            taken_bytes += size;
            slots.push(Slot {
                offset: frame.offset,
                timestamp_ms: frame.timestamp_ms,
                kind: frame.kind,
                header_at: to_usize(position)? + record::FRAME_HEADER_LEN,
                header_len: frame.header.len(),
                payload_len: frame.payload.len(),
            });
        }
        if slots.is_empty() {
            match scan.stop() {
                Some(Stop::Corrupt { position, kind }) => {
                    return Err(Error::corruption(
                        segment::segment_path(&self.dir, base),
                        *position,
                        kind.clone(),
                    ));
                }
                Some(Stop::Incomplete { position, needed }) => {
                    // Committed bytes end inside a frame: the file lost data it had.
                    return Err(Error::corruption(
                        segment::segment_path(&self.dir, base),
                        *position,
                        CorruptionKind::Truncated {
                            needed: *needed,
                            available: end - *position,
                        },
                    ));
                }
                _ => {}
            }
        }
        let next_offset = slots.last().map_or(from, |s| s.offset + 1);
        let position = resume.map_or(scan.file_position(), |(_, p)| p);
        state.hint = Some(Hint {
            offset: resume.map_or(next_offset, |(o, _)| o),
            base,
            position,
        });
        Ok(ReadBatch {
            map: Some(map),
            slots,
            next_offset,
        })
    }

    /// The segment's mapping and how many of its bytes may be read.
    fn mapped(&self, state: &mut State, base: u64) -> Result<(Mapping, u64)> {
        let active = base == state.head.active_base;
        let committed = state.head.committed_len;
        let path = segment::segment_path(&self.dir, base);
        let view = state.segments.entry(base).or_default();
        let file = match &view.file {
            Some(file) => Arc::clone(file),
            None => {
                let file = self
                    .storage
                    .open(&path, OpenMode::Read)
                    .map_err(|e| Error::io("open", &path, e))?;
                view.header = Some(segment::read_header(
                    &*file,
                    &path,
                    FileKind::Segment,
                    base,
                )?);
                view.file = Some(Arc::clone(&file));
                file
            }
        };
        let end = if active {
            committed
        } else if let Some(len) = view.sealed_len {
            len
        } else {
            let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
            view.sealed_len = Some(len);
            // A segment this reader mapped while it was active has grown since: map it anew.
            view.map = None;
            len
        };
        if let Some(map) = &view.map
            && map.len() as u64 >= end
            && (map.sees_later_writes() || end <= view.mapped_end)
        {
            return Ok((map.clone(), end));
        }
        // Map an active segment with room to grow so a tailing reader rarely remaps; bytes past
        // the committed length are never touched.
        let want = if active {
            end.max(1 << 20).next_power_of_two()
        } else {
            end
        };
        let map = file.map(want).map_err(|e| Error::io("map", &path, e))?;
        if (map.len() as u64) < end {
            return Err(Error::corruption(
                &path,
                map.len() as u64,
                CorruptionKind::Truncated {
                    needed: end,
                    available: map.len() as u64,
                },
            ));
        }
        view.map = Some(map.clone());
        view.mapped_end = end;
        Ok((map, end))
    }

    fn header(&self, state: &mut State, base: u64) -> Result<FileHeader> {
        if let Some(header) = state.segments.get(&base).and_then(|v| v.header) {
            return Ok(header);
        }
        self.mapped(state, base)?;
        state
            .segments
            .get(&base)
            .and_then(|v| v.header)
            .ok_or_else(|| Error::InvalidArgument(format!("segment {base} is not known")))
    }

    /// Position of the last index entry satisfying `before` whose record checks out; `None`
    /// to scan from the segment's start.
    fn index_floor(
        &self,
        state: &mut State,
        base: u64,
        map: &Mapping,
        end: u64,
        before: impl Fn(&IndexEntry) -> bool,
    ) -> Result<Option<u64>> {
        let active = base == state.head.active_base;
        let index_path = segment::index_path(&self.dir, base);
        let Some(view) = state.segments.get_mut(&base) else {
            return Ok(None);
        };
        let bytes: &[u8] = if active {
            if view.active_index.is_none() {
                match self.storage.open(&index_path, OpenMode::Read) {
                    Ok(file) => view.active_index = Some((file, Vec::new())),
                    // A missing index just means a longer scan.
                    Err(_) => return Ok(None),
                }
            }
            let Some((file, cached)) = view.active_index.as_mut() else {
                return Ok(None);
            };
            let len = usize::try_from(file.len().map_err(|e| Error::io("stat", &index_path, e))?)
                .unwrap_or(0);
            if len < cached.len() {
                cached.clear();
            }
            if len > cached.len() {
                // Only the entries appended since the last lookup are read.
                let have = cached.len();
                cached.resize(len, 0);
                if file
                    .read_exact_at(&mut cached[have..], have as u64)
                    .is_err()
                {
                    cached.clear();
                }
            }
            cached
        } else {
            if view.index.is_none() {
                view.index = match self.storage.open(&index_path, OpenMode::Read) {
                    Ok(file) => {
                        let len = file.len().map_err(|e| Error::io("stat", &index_path, e))?;
                        Some(
                            file.map(len)
                                .map_err(|e| Error::io("map", &index_path, e))?,
                        )
                    }
                    // A missing index (mid-compaction) just means a longer scan.
                    Err(_) => None,
                };
            }
            match &view.index {
                Some(index) => index.bytes(),
                None => return Ok(None),
            }
        };
        let body = bytes.get(FILE_HEADER_LEN..).unwrap_or_default();
        let count = body.len() / INDEX_ENTRY_LEN;
        let entry_at = |i: usize| {
            body.get(i * INDEX_ENTRY_LEN..(i + 1) * INDEX_ENTRY_LEN)
                .and_then(|b| <&[u8; INDEX_ENTRY_LEN]>::try_from(b).ok())
                .map(IndexEntry::decode)
        };
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry_at(mid).is_some_and(|e| before(&e)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(entry) = lo.checked_sub(1).and_then(entry_at) else {
            return Ok(None);
        };
        // Trust but verify: the entry must point at the record it names, inside the readable
        // part of the segment. A stale entry (an index from before a compaction) or a damaged
        // one falls back to a scan from the start.
        let position = u64::from(entry.position);
        let valid = position >= FILE_HEADER_LEN as u64
            && position < end
            && map
                .bytes()
                .get(to_usize(position)?..to_usize(end)?)
                .is_some_and(|bytes| {
                    matches!(record::decode(bytes), Decoded::Frame(f)
                        if f.offset == base + u64::from(entry.rel_offset))
                });
        Ok(valid.then_some(position))
    }
}

fn relist(storage: &dyn crate::storage::Storage, dir: &Path, state: &mut State) -> Result<()> {
    let listing = segment::list(storage, dir)?;
    let active = state.head.active_base;
    // Segments past the head's active one are being created by a writer that has not
    // published them yet; they hold nothing committed.
    let present: Vec<u64> = listing
        .segments
        .into_iter()
        .filter(|&base| base <= active)
        .collect();
    state
        .segments
        .retain(|base, _| present.binary_search(base).is_ok());
    for base in present {
        state.segments.entry(base).or_default();
    }
    state.listed_for = (active, state.head.start_offset);
    state.hint = None;
    Ok(())
}

fn first_base(state: &State) -> u64 {
    state
        .segments
        .keys()
        .next()
        .copied()
        .unwrap_or(state.head.active_base)
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::InvalidArgument(format!("{n} does not fit in memory")))
}

/// Reads the head, retrying a read that raced the writer's in-place overwrite.
pub(super) fn read_head(file: &dyn StorageFile, path: &Path) -> Result<Head> {
    let mut buf = [0u8; HEAD_LEN];
    let mut last_err = None;
    for _ in 0..HEAD_READ_ATTEMPTS {
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| Error::io("read", path, e))?;
        match Head::decode(&buf) {
            Ok(head) => return Ok(head),
            Err(e) => last_err = Some(e),
        }
        std::thread::yield_now();
    }
    Err(segment::header_error(
        path,
        last_err.unwrap_or(crate::codec::file_header::HeaderError::Checksum),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{SimStorage, Storage};

    #[test]
    fn an_empty_batch_points_back_at_the_request() {
        let batch = ReadBatch::empty(42);
        assert!(batch.is_empty());
        assert_eq!(batch.iter().count(), 0);
        assert_eq!(batch.next_offset(), 42);
    }

    #[test]
    fn the_head_is_read_with_retries_and_damage_is_reported() {
        let sim = SimStorage::new();
        let dir = Path::new("/l");
        sim.create_dir_all(dir).unwrap();
        let path = dir.join(segment::HEAD_FILE);
        let head = Head {
            active_base: 0,
            committed_len: 64,
            synced_len: 64,
            next_offset: 0,
            last_timestamp_ms: 0,
            start_offset: 0,
            boot: 1,
        };
        sim.put_file(&path, &head.encode());
        let file = sim.open(&path, OpenMode::Read).unwrap();
        assert_eq!(read_head(&*file, &path).unwrap(), head);
        sim.corrupt(&path, 20, 1).unwrap();
        let err = read_head(&*file, &path).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }

    #[test]
    fn a_reader_needs_an_existing_log() {
        let sim = SimStorage::new();
        let err = LogReader::open(Arc::new(sim), "/nowhere").unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
    }
}
