//! `shoal compact [NAME]`: give a queue's disk space back now, instead of at its next few
//! thousand state changes.

use std::io::{self, Write};

use clap::Args;
use serde_json::json;
use shoal_engine::{DataDir, Error};

use crate::Output;
use crate::util::emit;

/// `shoal compact`
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The queue to compact [default: every queue].
    name: Option<String>,
}

/// Runs `shoal compact`: one line per queue, printed once that queue is done.
pub fn run_compact(dir: &DataDir, output: Output, args: &CompactArgs) -> anyhow::Result<()> {
    let every = args.name.is_none();
    let names = match &args.name {
        Some(name) => vec![name.clone()],
        None => dir.list_queues("")?,
    };
    let mut out = io::stdout().lock();
    for name in names {
        let queue = match dir.queue(&name) {
            // Deleted since the listing: nothing left to compact.
            Err(Error::NotFound { .. }) if every => continue,
            queue => queue?,
        };
        let r = queue.compact()?;
        let line = match output {
            Output::Json => json!({
                "queue": name,
                "segments_removed": r.segments_removed,
                "segments_compacted": r.segments_compacted,
                "journal_segments_removed": r.journal_segments_removed,
                "bytes_freed": r.bytes_freed,
            })
            .to_string(),
            Output::Text => format!(
                "{name}\t{}\t{}\t{}\t{}",
                r.segments_removed, r.segments_compacted, r.journal_segments_removed, r.bytes_freed
            ),
        };
        emit(&mut out, &line)?;
        out.flush()?;
    }
    Ok(())
}
