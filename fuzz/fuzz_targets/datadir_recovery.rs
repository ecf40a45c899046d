#![no_main]

use shoal_engine::fuzzing::{DataDirInput, datadir_recovery};

// Typed input: `cargo fuzz fmt datadir_recovery FILE` prints a crash as a readable DataDirInput.
libfuzzer_sys::fuzz_target!(|input: DataDirInput| datadir_recovery(input));
