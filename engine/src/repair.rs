//! `shoal check --repair`: check the data directory, mend what can be mended, check again.
//!
//! Each damaged log is opened as its writer (which recovers a torn tail and rewrites its head)
//! and repaired by [`Log::repair`]: indexes rebuilt, damaged segments cut back to their intact
//! records. Damaged consumer checkpoints and topic cursors are moved aside (their owner starts
//! again from the start of the stream or of its subscription: duplicates, never loss). A queue
//! whose snapshot is damaged or no longer meets its journal gets a state rebuilt from what the
//! journal holds. Every original replaced or moved is kept under `lost+found/<time>/` in the
//! data directory, at its relative path; nothing is deleted. Damaged metadata that cannot be
//! rebuilt (the catalog of a queue, stream or topic, the format file) is left as it is and
//! shows up again in the second check.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::DataDir;
use crate::error::{Error, Result};
use crate::log::segment::{self, LogFileName};
use crate::log::{self, CheckReport, Log, LogOptions, Problem, Quarantine, Repair, RepairAction};

/// Where the originals of repaired files are kept, under the data directory.
pub const LOST_AND_FOUND: &str = "lost+found";

/// What [`DataDir::repair`] found, did, and found afterwards.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// The check before repairing.
    pub found: CheckReport,
    /// What was repaired, in order.
    pub repairs: Vec<Repair>,
    /// The check after repairing: what could not be repaired.
    pub after: CheckReport,
    /// The directory holding the originals, when any was kept.
    pub quarantine: Option<PathBuf>,
}

/// What repairing a problem takes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// Open the log in this directory and repair it.
    Log(PathBuf),
    /// Move this file aside; its owner does without it.
    MoveAside(PathBuf),
    /// Bring the state of the queue in this directory back in line with its journal.
    QueueState(PathBuf),
}

fn targets(root: &Path, problem: &Problem) -> Vec<Target> {
    let file = &problem.file;
    let mut out = Vec::new();
    let name = file.file_name().unwrap_or_default();
    let parent = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let is_log_file = matches!(
        segment::parse_file_name(name),
        LogFileName::Segment(_) | LogFileName::Index(_) | LogFileName::CompactTemp
    ) || name == OsStr::new(segment::HEAD_FILE);
    if is_log_file {
        out.push(Target::Log(parent));
    } else if file
        .extension()
        .is_some_and(|e| e == "checkpoint" || e == "cursor")
    {
        out.push(Target::MoveAside(file.clone()));
    }
    // Anything in a queue may leave its state out of line with its journal.
    if let Ok(relative) = file.strip_prefix(root.join("queues"))
        && let Some(queue) = relative.components().next()
    {
        out.push(Target::QueueState(root.join("queues").join(queue)));
    }
    out
}

impl DataDir {
    /// Checks the data directory, repairs what can be repaired (see the module docs) and
    /// checks again. Takes each log's writer lock while repairing it, waiting for writers in
    /// other processes.
    pub fn repair(&self) -> Result<RepairReport> {
        let found = self.check()?;
        if found.problems.is_empty() {
            return Ok(RepairReport {
                after: found.clone(),
                found,
                ..RepairReport::default()
            });
        }
        let inner = self.inner();
        let storage = &*inner.storage;
        let root = self.root();
        let keep_dir = unused_dir(storage, &root.join(LOST_AND_FOUND), inner.clock.now_ms());
        let quarantine = Quarantine::new(storage, root, &keep_dir);
        let todo: BTreeSet<Target> = found
            .problems
            .iter()
            .flat_map(|p| targets(root, p))
            .collect();
        let mut repairs = Vec::new();
        // Logs first, then files moved aside, then queue states (the enum's order).
        for target in todo {
            match target {
                Target::Log(dir) => repairs.extend(repair_log(self, &dir, &quarantine)?),
                Target::MoveAside(file) => {
                    if storage.exists(&file) {
                        let original = quarantine.move_in(&file)?;
                        repairs.push(Repair {
                            file,
                            action: RepairAction::MovedAside,
                            original: Some(original),
                            lost: None,
                            detail: "its reader starts again from the beginning and may see \
                                     records it saw before"
                                .into(),
                        });
                    }
                }
                Target::QueueState(dir) => {
                    crate::queue::repair_state(inner, &dir, &quarantine, &mut repairs)?;
                }
            }
        }
        let kept = repairs.iter().any(|r| r.original.is_some());
        Ok(RepairReport {
            found,
            repairs,
            after: self.check()?,
            quarantine: kept.then_some(keep_dir),
        })
    }
}

/// Opens the log in `dir` as its writer and repairs it; a log whose active segment is too
/// damaged to open is first mended without opening it. A log that still does not open is left
/// for the second check to report.
fn repair_log(data: &DataDir, dir: &Path, quarantine: &Quarantine<'_>) -> Result<Vec<Repair>> {
    let inner = data.inner();
    let options = LogOptions {
        wait_for_lock: true,
        ..LogOptions::default()
    };
    let open = || {
        Log::open(
            Arc::clone(&inner.storage),
            Arc::clone(&inner.clock),
            dir,
            options.clone(),
        )
    };
    let mut repairs = Vec::new();
    let log = match open() {
        Ok(log) => log,
        Err(Error::Corruption { file, .. }) if file.parent() == Some(dir) => {
            repairs.extend(log::repair_unopenable(
                &*inner.storage,
                &*inner.clock,
                dir,
                &options,
                quarantine,
            )?);
            match open() {
                Ok(log) => log,
                Err(_) => return Ok(repairs),
            }
        }
        Err(_) => return Ok(repairs),
    };
    repairs.extend(log.repair(quarantine)?);
    log.close()?;
    Ok(repairs)
}

/// `parent/<now_ms>`, or with a `-N` suffix if an earlier repair used that name.
fn unused_dir(storage: &dyn crate::storage::Storage, parent: &Path, now_ms: u64) -> PathBuf {
    let mut dir = parent.join(now_ms.to_string());
    let mut n = 1;
    while storage.exists(&dir) {
        dir = parent.join(format!("{now_ms}-{n}"));
        n += 1;
    }
    dir
}
