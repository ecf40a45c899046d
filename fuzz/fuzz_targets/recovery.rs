#![no_main]

use shoal_engine::fuzzing::{RecoveryInput, recovery};

// Typed input: `cargo fuzz fmt recovery FILE` prints a crash as a readable RecoveryInput.
libfuzzer_sys::fuzz_target!(|input: RecoveryInput| recovery(input));
