//! Replays every committed fuzz corpus and artifact file through the same target functions the
//! fuzzers run, so a regression shows in the normal test suite without cargo-fuzz.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::Path;

use shoal_engine::fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in ["corpus", "artifacts", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                run(&std::fs::read(&path).unwrap());
                count += 1;
            }
        }
    }
    count
}

#[test]
fn record_frame() {
    assert!(replay("record_frame", fuzzing::record_frame) > 0);
}

#[test]
fn headers() {
    assert!(replay("headers", fuzzing::headers) > 0);
}

#[test]
fn index_entries() {
    assert!(replay("index_entries", fuzzing::index_entries) > 0);
}

#[test]
fn metadata() {
    assert!(replay("metadata", fuzzing::metadata) > 0);
}

#[test]
fn recovery() {
    assert!(replay("recovery", fuzzing::recovery_bytes) > 0);
}

#[test]
fn log_model() {
    assert!(replay("log_model", fuzzing::log_model_bytes) > 0);
}
