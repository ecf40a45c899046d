//! `shoal check`: verify the whole data directory.

use std::io::{self, Write};

use serde_json::json;
use shoal_engine::DataDir;

use crate::Output;
use crate::util::{emit, exit};

/// Runs `shoal check`; returns the exit code (6 when anything is damaged).
pub fn run_check(dir: &DataDir, output: Output) -> anyhow::Result<u8> {
    let report = dir.check()?;
    let mut out = io::stdout().lock();
    for problem in &report.problems {
        let line = match output {
            Output::Json => json!({
                "file": problem.file,
                "offset": problem.offset,
                "kind": problem.kind,
            })
            .to_string(),
            Output::Text => format!(
                "{}\t{}\t{}",
                problem.file.display(),
                problem.offset,
                problem.kind
            ),
        };
        emit(&mut out, &line)?;
    }
    out.flush()?;
    if report.problems.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "error: {} problem(s) in {} files ({} records verified)",
            report.problems.len(),
            report.files,
            report.records
        );
        Ok(exit::CORRUPTION)
    }
}
