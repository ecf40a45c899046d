use std::sync::Arc;

use shoal_engine::clock::ManualClock;
use shoal_engine::log::{Durability, Entry, Log, LogOptions, LogReader, ReadLimit};
use shoal_engine::storage::{FsStorage, SharedStorage};

#[test]
fn append_read_roll_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: SharedStorage = Arc::new(FsStorage::new());
    let clock = ManualClock::new(1_000);
    let options = LogOptions {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let payloads: Vec<Vec<u8>> = (0..500u32).map(|i| format!("record-{i}").into_bytes()).collect();
    {
        let log = Log::open(storage.clone(), clock.clone(), tmp.path(), options.clone()).unwrap();
        for chunk in payloads.chunks(7) {
            let entries: Vec<Entry<'_>> = chunk.iter().map(|p| Entry::new(p)).collect();
            log.append(&entries).unwrap();
            clock.advance(1);
        }
        assert!(log.segments().unwrap().len() > 3);
        let mut got = Vec::new();
        let mut next = 0;
        loop {
            let batch = log.read(next, ReadLimit::records(33)).unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch.iter().map(|r| r.payload.to_vec()));
            next = batch.next_offset();
        }
        assert_eq!(got, payloads);
    }
    let log = Log::open(storage.clone(), clock.clone(), tmp.path(), options).unwrap();
    assert_eq!(log.next_offset(), 500);
    assert_eq!(log.recovery_report().truncated_bytes, 0);
    let reader = LogReader::open(storage, tmp.path()).unwrap();
    let batch = reader.read(250, ReadLimit::records(1)).unwrap();
    assert_eq!(batch.iter().next().unwrap().payload, b"record-250");
    // Time seek: records of chunk k carry timestamp 1000 + k.
    let at = reader.offset_at_time(1_010).unwrap();
    assert_eq!(at, 70);
}
