#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_engine::fuzzing::consumer_checkpoint(data));
