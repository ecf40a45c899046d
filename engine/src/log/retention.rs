//! Retention: deleting whole sealed segments that are too old or past the size budget.
//!
//! Only whole sealed segments are removed, oldest first, and only a prefix of the log (the log
//! stays contiguous). Files are unlinked, never truncated: a reader that has a segment mapped
//! keeps reading it until it lets go.

use std::io;
use std::time::Duration;

use super::{Inner, guard, segment};
use crate::codec::file_header::FileKind;
use crate::error::{Error, Result};
use crate::storage::OpenMode;

/// What to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove a sealed segment once its newest record is older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest sealed segments while the log's segments total more than this.
    pub max_bytes: Option<u64>,
    /// Remove sealed segments whose records are all below this offset (what the owner no
    /// longer needs: a queue's deleted messages, a journal covered by a snapshot).
    pub below_offset: Option<u64>,
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Base offsets of the removed segments.
    pub removed_segments: Vec<u64>,
    /// Segment bytes freed.
    pub bytes_removed: u64,
    /// The first offset still stored afterwards.
    pub start_offset: u64,
}

struct SegmentFacts {
    base: u64,
    len: u64,
    base_timestamp_ms: u64,
}

pub(super) fn enforce(inner: &Inner, policy: &Retention) -> Result<RetentionReport> {
    let _maintenance = guard(&inner.maintenance);
    inner.check_poison()?;
    let active = inner.active_base();
    let storage = &*inner.storage;
    let listing = segment::list(storage, &inner.dir)?;
    let mut facts = Vec::new();
    for base in listing.segments.into_iter().filter(|&b| b <= active) {
        let path = segment::segment_path(&inner.dir, base);
        let (file, len) = segment::open_sized(storage, &path, OpenMode::Read)?;
        let header = segment::read_header(&*file, &path, FileKind::Segment, base)?;
        facts.push(SegmentFacts {
            base,
            len,
            base_timestamp_ms: header.base_timestamp_ms,
        });
    }
    let now = inner.clock.now_ms();
    let mut total: u64 = facts.iter().map(|f| f.len).sum();
    let mut report = RetentionReport::default();
    for pair in facts.windows(2) {
        let [segment, next] = pair else { break };
        // Every record in `segment` is at or before `next`'s base timestamp.
        let too_old = policy.max_age.is_some_and(|age| {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            next.base_timestamp_ms.saturating_add(age_ms) <= now
        });
        let too_big = policy.max_bytes.is_some_and(|max| total > max);
        let unneeded = policy.below_offset.is_some_and(|below| next.base <= below);
        if !too_old && !too_big && !unneeded {
            break;
        }
        total -= segment.len;
        report.removed_segments.push(segment.base);
        report.bytes_removed += segment.len;
    }
    report.start_offset = facts
        .get(report.removed_segments.len())
        .map_or(active, |f| f.base);
    if report.removed_segments.is_empty() {
        return Ok(report);
    }
    for &base in &report.removed_segments {
        // The segment goes first: an index left without its segment is removed at the next
        // open, a segment left without its index would need a rebuild.
        let path = segment::segment_path(&inner.dir, base);
        storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        let index = segment::index_path(&inner.dir, base);
        match storage.remove_file(&index) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &index, e));
            }
            _ => {}
        }
        inner.reader.invalidate(base);
    }
    storage
        .sync_dir(&inner.dir)
        .map_err(|e| Error::io("fsync", &inner.dir, e))?;
    inner.set_start_offset(report.start_offset)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::log::{Entry, Log, LogOptions};
    use crate::storage::SimStorage;

    /// Three sealed segments written a minute apart, then the active one.
    fn log(clock: &Arc<ManualClock>) -> Log {
        let log = Log::open(
            Arc::new(SimStorage::new()),
            clock.clone(),
            "/l",
            LogOptions::default(),
        )
        .unwrap();
        for _ in 0..3 {
            log.append(&[Entry::new(&[1u8; 1000])]).unwrap();
            clock.advance(60_000);
            log.roll().unwrap();
        }
        log
    }

    #[test]
    fn age_uses_the_next_segments_base_timestamp() {
        let clock = ManualClock::new(0);
        let log = log(&clock);
        // Segment 0's records are at or before segment 1's start (t = 60 s).
        let policy = Retention {
            max_age: Some(Duration::from_secs(60)),
            max_bytes: None,
            below_offset: None,
        };
        clock.set(119_999);
        assert!(
            log.enforce_retention(&policy)
                .unwrap()
                .removed_segments
                .is_empty()
        );
        clock.set(120_000);
        let report = log.enforce_retention(&policy).unwrap();
        assert_eq!(report.removed_segments, vec![0]);
        assert_eq!(report.start_offset, 1);
    }

    #[test]
    fn size_removes_the_oldest_first_and_never_the_active_segment() {
        let clock = ManualClock::new(0);
        let log = log(&clock);
        let report = log
            .enforce_retention(&Retention {
                max_age: None,
                max_bytes: Some(2_000),
                below_offset: None,
            })
            .unwrap();
        // Each sealed segment is 64 + 32 + 1000 bytes; the active one holds just its header.
        assert_eq!(report.removed_segments, vec![0, 1]);
        assert_eq!(report.bytes_removed, 2 * 1096);
        let all = log
            .enforce_retention(&Retention {
                max_age: None,
                max_bytes: Some(0),
                below_offset: None,
            })
            .unwrap();
        assert_eq!(all.removed_segments, vec![2]);
        assert_eq!(log.segments().unwrap(), vec![3]);
    }

    #[test]
    fn below_offset_removes_only_segments_entirely_below_it() {
        let clock = ManualClock::new(0);
        let log = log(&clock);
        let below = |offset| Retention {
            below_offset: Some(offset),
            ..Retention::default()
        };
        // Segments 0, 1, 2 hold offsets 0, 1, 2: offset 1 still needs segment 1.
        let report = log.enforce_retention(&below(1)).unwrap();
        assert_eq!(report.removed_segments, vec![0]);
        assert_eq!(report.start_offset, 1);
        // Never the active segment, even when everything is below the offset.
        let report = log.enforce_retention(&below(u64::MAX)).unwrap();
        assert_eq!(report.removed_segments, vec![1, 2]);
        assert_eq!(log.segments().unwrap(), vec![3]);
    }
}
