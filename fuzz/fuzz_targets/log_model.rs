#![no_main]

use shoal_engine::fuzzing::{LogModelInput, log_model};

// Typed input: `cargo fuzz fmt log_model FILE` prints a crash as a readable LogModelInput.
libfuzzer_sys::fuzz_target!(|input: LogModelInput| log_model(input));
