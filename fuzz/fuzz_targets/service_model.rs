#![no_main]

use shoal_engine::fuzzing::{ServiceInput, service_model};

// Typed input: `cargo fuzz fmt service_model FILE` prints a crash as a readable ServiceInput.
libfuzzer_sys::fuzz_target!(|input: ServiceInput| service_model(input));
