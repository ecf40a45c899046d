//! Topic benchmarks: `cargo bench -p shoal-benches --bench topic`.
//!
//! Group `topic_publish`: through the engine API, 100-byte messages, a standard topic with 1
//! and with 10 raw queue subscriptions (standard queues): `publish` of one message (append
//! to the topic log, then fan-out to every queue), and `publish_batch` of 10 (one append,
//! one fan-out), with topic and queues in `always` durability (each write fsynced before the
//! publish returns) and in `never`. Throughput in published messages; a publish to 10
//! queues writes 11 logs.
//!
//! Set `SHOAL_BENCH_DIR` to put the data directories somewhere other than the temp dir.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_engine::DataDir;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::QueueAttributes;
use shoal_engine::topic::{
    FilterScope, Protocol, PublishMessage, Subscribe, Topic, TopicAttributes,
};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create the bench directory")
}

fn topic(dir: &DataDir, queues: usize, durability: DurabilityMode) -> Topic {
    dir.create_topic(
        "bench",
        &TopicAttributes {
            durability,
            ..TopicAttributes::defaults(false)
        },
    )
    .expect("create the topic");
    for i in 0..queues {
        let name = format!("q{i}");
        dir.create_queue(
            &name,
            &QueueAttributes {
                durability,
                ..QueueAttributes::defaults(false)
            },
        )
        .expect("create a queue");
        dir.subscribe(
            "bench",
            &Subscribe {
                protocol: Protocol::Queue,
                endpoint: name,
                raw: true,
                filter_policy: None,
                filter_scope: FilterScope::Attributes,
                dead_letter_queue: None,
            },
        )
        .expect("subscribe");
    }
    dir.topic("bench").expect("open the topic")
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_publish");
    group.sample_size(20);
    let one = PublishMessage::new(format!("{:0>100}", 7));
    let ten: Vec<PublishMessage> = (0..10)
        .map(|i| PublishMessage::new(format!("{i:0>100}")))
        .collect();
    for (mode, durability) in [
        ("always", DurabilityMode::Always),
        ("never", DurabilityMode::Never),
    ] {
        for queues in [1usize, 10] {
            let tmp = bench_dir();
            let dir = DataDir::open(tmp.path()).expect("open the data directory");
            let t = topic(&dir, queues, durability);
            group.throughput(Throughput::Elements(1));
            group.bench_function(
                BenchmarkId::new(format!("publish_1_{mode}"), format!("{queues}_queues")),
                |b| b.iter(|| t.publish(black_box(&one)).expect("publish")),
            );
            group.throughput(Throughput::Elements(10));
            group.bench_function(
                BenchmarkId::new(format!("publish_10_{mode}"), format!("{queues}_queues")),
                |b| b.iter(|| t.publish_batch(black_box(&ten)).expect("publish")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
