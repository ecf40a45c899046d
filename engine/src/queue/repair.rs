//! Repairing a queue's state for `shoal check --repair`, once its logs are repaired: a damaged
//! snapshot is moved aside, and a snapshot that no longer meets the journal (the journal was
//! trimmed past it, or the snapshot is gone) is replaced by one starting where the journal
//! starts. Either way the queue opens again; what the lost journal events did (receives,
//! deletes) is forgotten, so those messages may be delivered again, as SQS's at-least-once
//! delivery allows.

use std::path::Path;
use std::sync::Arc;

use super::handle::{SNAPSHOT_FILE, SNAPSHOT_MAGIC};
use super::state::State;
use crate::datadir::DirInner;
use crate::error::{Error, Result};
use crate::log::{Log, LogOptions, Quarantine, Repair, RepairAction, segment};
use crate::meta;

/// Repairs the state of the queue in `queue_dir` inside the queue lock (the journal's writer
/// lock); appends what it did to `out`.
pub(crate) fn repair_state(
    dir: &DirInner,
    queue_dir: &Path,
    quarantine: &Quarantine<'_>,
    out: &mut Vec<Repair>,
) -> Result<()> {
    let storage = &*dir.storage;
    let journal_dir = queue_dir.join(super::check::JOURNAL_DIR);
    if !storage.exists(&journal_dir.join(segment::HEAD_FILE)) {
        return Ok(());
    }
    let journal = Log::open(
        Arc::clone(&dir.storage),
        Arc::clone(&dir.clock),
        &journal_dir,
        LogOptions {
            wait_for_lock: true,
            ..LogOptions::default()
        },
    )?;
    let snapshot = queue_dir.join(SNAPSHOT_FILE);
    let state = match meta::read::<State>(storage, &snapshot, SNAPSHOT_MAGIC) {
        Ok(state) => state,
        Err(Error::Corruption { .. }) => {
            let original = quarantine.move_in(&snapshot)?;
            out.push(Repair {
                file: snapshot.clone(),
                action: RepairAction::MovedAside,
                original: Some(original),
                lost: None,
                detail: "the queue's state snapshot was damaged; the state is rebuilt from the \
                         journal"
                    .into(),
            });
            None
        }
        Err(e) => return Err(e),
    };
    let start = journal.start_offset();
    let covered = state.as_ref().map_or(0, |s| s.journal_next);
    if start > covered {
        let mut fresh = state.unwrap_or_default();
        fresh.journal_next = start;
        meta::write(storage, &snapshot, SNAPSHOT_MAGIC, &fresh)?;
        out.push(Repair {
            file: snapshot,
            action: RepairAction::StateReset,
            original: None,
            lost: Some(covered..start),
            detail: format!(
                "journal events {covered} to {} are gone; the messages they received or deleted \
                 may be delivered again",
                start - 1
            ),
        });
    }
    journal.close()
}
