//! `shoal check [--repair]`: verify (and mend) the whole data directory.

use std::io::{self, Write};

use clap::Args;
use serde_json::json;
use shoal_engine::DataDir;
use shoal_engine::log::{Problem, Repair};

use crate::Output;
use crate::util::{emit, exit};

/// Arguments of `shoal check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also repair: rebuild damaged indexes, cut torn tails, rewrite a damaged segment with
    /// the records before its damage (the original is kept under lost+found/ in the data
    /// directory, never deleted), move damaged checkpoints and cursors aside. Prints one line
    /// per repair, naming the offsets lost; exits 6 when anything was damaged (run
    /// `shoal check` again to confirm the repair).
    #[arg(long)]
    pub repair: bool,
}

fn problem_line(problem: &Problem, output: Output, unrepaired: bool) -> String {
    match output {
        Output::Json => {
            let mut line = json!({
                "file": problem.file,
                "offset": problem.offset,
                "kind": problem.kind,
            });
            if unrepaired {
                line["unrepaired"] = json!(true);
            }
            line.to_string()
        }
        Output::Text => format!(
            "{}{}\t{}\t{}",
            if unrepaired { "unrepaired\t" } else { "" },
            problem.file.display(),
            problem.offset,
            problem.kind
        ),
    }
}

fn repair_line(repair: &Repair, output: Output) -> String {
    match output {
        Output::Json => json!({
            "repaired": repair.file,
            "action": repair.action.name(),
            "original": repair.original,
            "lost_offsets": repair.lost.as_ref().map(|r| [r.start, r.end]),
            "detail": repair.detail,
        })
        .to_string(),
        Output::Text => format!(
            "repaired\t{}\t{}\t{}",
            repair.file.display(),
            repair.action.name(),
            repair.detail
        ),
    }
}

/// Runs `shoal check`; returns the exit code (6 when anything is damaged).
pub fn run_check(dir: &DataDir, args: &CheckArgs, output: Output) -> anyhow::Result<u8> {
    let mut out = io::stdout().lock();
    if !args.repair {
        let report = dir.check()?;
        for problem in &report.problems {
            emit(&mut out, &problem_line(problem, output, false))?;
        }
        out.flush()?;
        if report.problems.is_empty() {
            return Ok(0);
        }
        eprintln!(
            "error: {} problem(s) in {} files ({} records verified)",
            report.problems.len(),
            report.files,
            report.records
        );
        return Ok(exit::CORRUPTION);
    }
    let report = dir.repair()?;
    for problem in &report.found.problems {
        emit(&mut out, &problem_line(problem, output, false))?;
    }
    for repair in &report.repairs {
        emit(&mut out, &repair_line(repair, output))?;
    }
    for problem in &report.after.problems {
        emit(&mut out, &problem_line(problem, output, true))?;
    }
    out.flush()?;
    if report.found.problems.is_empty() {
        return Ok(0);
    }
    let lost: u64 = report
        .repairs
        .iter()
        .filter_map(|r| r.lost.as_ref())
        .map(|r| r.end - r.start)
        .sum();
    let kept = report
        .quarantine
        .as_ref()
        .map(|q| format!("; damaged originals kept in {}", q.display()))
        .unwrap_or_default();
    eprintln!(
        "error: {} problem(s) found, {} repair(s) made, {} offset(s) lost, {} problem(s) left{kept}",
        report.found.problems.len(),
        report.repairs.len(),
        lost,
        report.after.problems.len(),
    );
    Ok(exit::CORRUPTION)
}
