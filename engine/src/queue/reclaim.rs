//! Giving disk space back: whole message-log segments nothing needs, segments mostly of
//! deleted messages compacted, journal segments a snapshot covers.

use super::attributes::QueueAttributes;
use super::handle::{Loaded, Queue};
use crate::error::Result;
use crate::log::Retention;

/// What [`Queue::compact`] gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Message-log segments deleted whole.
    pub segments_removed: u64,
    /// Message-log segments rewritten without their deleted messages.
    pub segments_compacted: u64,
    /// Journal segments deleted (covered by a snapshot).
    pub journal_segments_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
}

impl Queue {
    /// Gives back disk space now (it is also done every thousand or so state changes):
    /// message-log segments nothing needs any more are deleted, sealed segments mostly of
    /// deleted messages are rewritten without them, and journal segments a snapshot covers
    /// are deleted.
    pub fn compact(&self) -> Result<ReclaimReport> {
        self.locked(|txn| {
            txn.snapshot_now()?;
            txn.queue.reclaim_report(txn.loaded, txn.attributes)
        })
    }

    pub(super) fn reclaim(&self, loaded: &mut Loaded, attributes: &QueueAttributes) -> Result<()> {
        self.reclaim_report(loaded, attributes).map(drop)
    }

    /// Gives back disk space: message-log segments below everything the state still needs
    /// (deleted, expired or purged messages) or past the retention period are deleted whole;
    /// sealed segments behind the cursor where fewer than half the records are still needed
    /// are rewritten without the rest (readers that have the old file mapped keep it); journal
    /// segments the newest snapshot covers are deleted. Runs under the queue lock.
    pub(super) fn reclaim_report(
        &self,
        loaded: &mut Loaded,
        attributes: &QueueAttributes,
    ) -> Result<ReclaimReport> {
        // The state may include events not yet fsynced (this operation's, or those of
        // operations whose fsync is still to come): make them durable before any message
        // they delete leaves the disk, or a power loss could forget a delete whose message
        // is already gone.
        self.journal()?.sync()?;
        let mut report = ReclaimReport::default();
        let state = &loaded.state;
        let log = self.message_log()?;
        let removed = log.enforce_retention(&Retention {
            max_age: Some(attributes.retention),
            max_bytes: None,
            below_offset: Some(state.low_water()),
        })?;
        report.segments_removed = removed.removed_segments.len() as u64;
        report.bytes_freed = removed.bytes_removed;
        let segments = log.segments()?;
        loaded.compacted.retain(|base, _| segments.contains(base));
        let mut compacted = Vec::new();
        for pair in segments.windows(2) {
            let [base, end] = [pair[0], pair[1]];
            if end > state.cursor {
                break;
            }
            let live = state.live_in(base..end);
            let records = loaded.compacted.get(&base).copied().unwrap_or(end - base);
            if live * 2 < records {
                let done = log.compact_segment(base, |r| state.needs(r.offset))?;
                report.segments_compacted += 1;
                report.bytes_freed += done.bytes_before.saturating_sub(done.bytes_after);
                compacted.push((base, done.records_kept));
            }
        }
        loaded.compacted.extend(compacted);
        let journal = self.journal()?.enforce_retention(&Retention {
            below_offset: Some(loaded.snapshot_at),
            ..Retention::default()
        })?;
        report.journal_segments_removed = journal.removed_segments.len() as u64;
        report.bytes_freed += journal.bytes_removed;
        Ok(report)
    }
}
