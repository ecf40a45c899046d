//! Stream benchmarks through the engine API (`DataDir` -> `Stream`).
//!
//! - `stream_put`: `put_records` of 500 records of 100 bytes (spread over the shards by
//!   partition key) into 1 and 4 shards, in `never` and `always` durability.
//! - `stream_get`: `get_records` of 1000 records at a time from one shard holding 200,000.
//!
//! Set `SHOAL_BENCH_DIR` to put the data directory somewhere other than the temp dir.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_engine::DataDir;
use shoal_engine::stream::{CreateStream, DurabilityMode, PutRecord, StartPosition};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create the bench directory")
}

fn put(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_put");
    group.sample_size(20);
    let data = vec![b'x'; 100];
    let keys: Vec<String> = (0..500).map(|i| format!("key-{i}")).collect();
    let records: Vec<PutRecord<'_>> = keys
        .iter()
        .map(|k| PutRecord {
            partition_key: k,
            explicit_hash_key: None,
            data: &data,
        })
        .collect();
    for (mode, durability) in [
        ("never", DurabilityMode::Never),
        ("always", DurabilityMode::Always),
    ] {
        for shards in [1u32, 4] {
            let tmp = bench_dir();
            let dir = DataDir::open(tmp.path()).expect("open the data directory");
            let mut create = CreateStream::new("bench", shards);
            create.durability = durability;
            dir.create_stream(&create).expect("create the stream");
            let stream = dir.stream("bench").expect("open the stream");
            group.throughput(Throughput::Elements(records.len() as u64));
            group.bench_function(BenchmarkId::new(mode, format!("{shards}_shards")), |b| {
                b.iter(|| {
                    let outcome = stream.put_records(black_box(&records));
                    assert!(outcome.error.is_none());
                });
            });
        }
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let tmp = bench_dir();
    let dir = DataDir::open(tmp.path()).expect("open the data directory");
    let mut create = CreateStream::new("bench", 1);
    create.durability = DurabilityMode::Never;
    dir.create_stream(&create).expect("create the stream");
    let stream = dir.stream("bench").expect("open the stream");
    let data = vec![b'x'; 100];
    let records: Vec<PutRecord<'_>> = (0..500)
        .map(|_| PutRecord {
            partition_key: "k",
            explicit_hash_key: None,
            data: &data,
        })
        .collect();
    for _ in 0..400 {
        assert!(stream.put_records(&records).error.is_none());
    }
    let mut group = c.benchmark_group("stream_get");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_records_of_100_bytes", |b| {
        let mut it = stream
            .shard_iterator(0, StartPosition::TrimHorizon)
            .expect("iterator");
        b.iter(|| {
            let got = stream.get_records(&mut it, 1000).expect("get");
            if got.records.is_empty() {
                it = stream
                    .shard_iterator(0, StartPosition::TrimHorizon)
                    .expect("iterator");
            }
            black_box(got.records.len())
        });
    });
    group.finish();
}

criterion_group!(benches, put, get);
criterion_main!(benches);
