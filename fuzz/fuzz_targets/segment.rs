#![no_main]

use shoal_engine::fuzzing::{SegmentInput, segment};

// Typed input: `cargo fuzz fmt segment FILE` prints a crash as a readable SegmentInput.
libfuzzer_sys::fuzz_target!(|input: SegmentInput| segment(input));
