//! Replays the fuzz corpora through the same target bodies the fuzzers run
//! (`shoal_engine::fuzzing`), so a regression shows in the normal test suite without
//! cargo-fuzz: every file in `fuzz/corpus/<target>/`, `fuzz/regressions/<target>/` (inputs
//! that found bugs since fixed) and, when present, `fuzz/artifacts/<target>/` (fresh local
//! crashes, not committed). Inputs of open, known bugs wait in `fuzz/artifacts-kept/`, which is
//! not replayed. Structured inputs are decoded as `fuzz_target!` decodes them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use shoal_engine::fuzzing;

/// Runs `run` on every input of `target`; fails naming every input that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs: Vec<PathBuf> = Vec::new();
    for dir in ["corpus", "regressions", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} in {}",
        root.display()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed: {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn record_frame() {
    replay("record_frame", fuzzing::record_frame);
}

#[test]
fn file_header() {
    replay("file_header", fuzzing::file_header);
}

#[test]
fn head() {
    replay("head", fuzzing::head);
}

#[test]
fn index_entries() {
    replay("index_entries", fuzzing::index_entries);
}

#[test]
fn metadata() {
    replay("metadata", fuzzing::metadata);
}

#[test]
fn recovery() {
    replay("recovery", fuzzing::recovery_bytes);
}

#[test]
fn log_model() {
    replay("log_model", fuzzing::log_model_bytes);
}
