//! Segment log benchmarks.
//!
//! - `codec`: framing one record (encode with both checksums) and decoding it back.
//! - `append`: `Log::append` of 100-byte and 1 KiB records in batches of 1 and 500, for each
//!   durability mode (`always` fsyncs every append; `interval` every 10 ms; `never` not at all).
//! - `read`: sequential reads of a 256 MiB log of 1 KiB records through the memory maps.
//! - `seek`: reading one record at a random offset (index lookup plus a short scan).
//! - `open`: opening a log for writing, which recovers only the active segment's tail, for
//!   logs of 64 MiB and 640 MiB (the time must not grow with the size).
//!
//! The log lives in `SHOAL_BENCH_DIR` if set, else in the temp directory. Compare `append`
//! in `always` mode with the disk's own `dd conv=fdatasync` bandwidth: see
//! `benches/run-log-bench.sh`, which measures both in one run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_engine::clock::SystemClock;
use shoal_engine::codec::record::{self, Decoded, FrameFields};
use shoal_engine::log::{Durability, Entry, Log, LogOptions, ReadLimit};
use shoal_engine::storage::FsStorage;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create the bench directory")
}

fn open(dir: &std::path::Path, durability: Durability) -> Log {
    Log::open(
        Arc::new(FsStorage::new()),
        Arc::new(SystemClock),
        dir,
        LogOptions {
            durability,
            ..LogOptions::default()
        },
    )
    .expect("open the log")
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for size in [100usize, 1024] {
        let payload = vec![7u8; size];
        let fields = FrameFields {
            offset: 42,
            timestamp_ms: 1_700_000_000_000,
            kind: 1,
            flags: record::FLAG_END_OF_BATCH,
            header: b"partition-key",
            payload: &payload,
        };
        let mut buf = Vec::with_capacity(2048);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("encode", size), |b| {
            b.iter(|| {
                buf.clear();
                record::encode_into(&mut buf, black_box(&fields)).expect("encode");
                buf.len()
            });
        });
        buf.clear();
        record::encode_into(&mut buf, &fields).expect("encode");
        group.bench_function(BenchmarkId::new("decode", size), |b| {
            b.iter(|| match record::decode(black_box(&buf)) {
                Decoded::Frame(f) => f.payload.len(),
                _ => unreachable!("a valid frame"),
            });
        });
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    let modes = [
        ("always", Durability::Always),
        (
            "interval_10ms",
            Durability::Interval(Duration::from_millis(10)),
        ),
        ("never", Durability::Never),
    ];
    for (mode, durability) in modes {
        for size in [100usize, 1024] {
            for batch in [1usize, 500] {
                let tmp = bench_dir();
                let log = open(tmp.path(), durability);
                let payload = vec![0x5au8; size];
                let entries: Vec<Entry<'_>> = (0..batch).map(|_| Entry::new(&payload)).collect();
                group.throughput(Throughput::Elements(batch as u64));
                let id = BenchmarkId::new(mode, format!("{size}B_x{batch}"));
                group.bench_function(id, |b| {
                    b.iter(|| log.append(black_box(&entries)).expect("append"));
                });
            }
        }
    }
    group.finish();
}

/// A log of `bytes` of 1 KiB records, in batches of 500, never mode.
fn filled(bytes: u64) -> (tempfile::TempDir, Log, u64) {
    let tmp = bench_dir();
    let log = open(tmp.path(), Durability::Never);
    let payload = vec![0xa5u8; 1024];
    let entries: Vec<Entry<'_>> = (0..500).map(|_| Entry::new(&payload)).collect();
    let mut written = 0;
    while written < bytes {
        log.append(&entries).expect("fill");
        written += 500 * 1024;
    }
    log.sync().expect("sync");
    let records = log.next_offset();
    (tmp, log, records)
}

fn read(c: &mut Criterion) {
    let (_tmp, log, records) = filled(256 << 20);
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(records * 1024));
    group.sample_size(10);
    group.bench_function("sequential_256MiB_1KiB_records", |b| {
        b.iter(|| {
            let mut next = 0;
            let mut sum = 0u64;
            while next < records {
                let batch = log.read(next, ReadLimit::records(4096)).expect("read");
                for record in batch.iter() {
                    // Touch the bytes: the map is only as fast as the reads through it.
                    sum += u64::from(record.payload[record.payload.len() - 1]);
                }
                next = batch.next_offset();
            }
            sum
        });
    });
    group.finish();
    let mut group = c.benchmark_group("seek");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    group.bench_function("one_record_at_a_random_offset", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let batch = log.read(x % records, ReadLimit::records(1)).expect("read");
            batch.len()
        });
    });
    group.finish();
}

fn open_time(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    for mib in [64u64, 640] {
        let (tmp, log, _) = filled(mib << 20);
        drop(log);
        group.bench_function(
            BenchmarkId::new("recover_and_open", format!("{mib}MiB")),
            |b| {
                b.iter(|| open(tmp.path(), Durability::Always).next_offset());
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec, append, read, open_time);
criterion_main!(benches);
