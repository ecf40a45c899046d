//! `DataDir::stats`: records, message counts and subscriptions per resource, and the files
//! they take, counted against the simulated storage's own view.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::path::Path;

use shoal_engine::queue::{QueueAttributes, QueueCounts, SendMessage};
use shoal_engine::stream::{CreateStream, PutRecord};
use shoal_engine::topic::{PublishMessage, TopicAttributes};

fn bytes_under(sim: &shoal_engine::storage::SimStorage, dir: &str) -> (u64, u64) {
    let files: Vec<_> = sim
        .files()
        .into_iter()
        .filter(|f| f.starts_with(dir))
        .collect();
    let bytes = files
        .iter()
        .map(|f| sim.contents(Path::new(f)).unwrap().len() as u64)
        .sum();
    (files.len() as u64, bytes)
}

#[test]
fn stats_count_what_each_resource_holds_and_its_files() {
    let common::Env { sim, data, .. } = common::env();
    assert_eq!(data.stats().unwrap().streams, []);

    data.create_stream(&CreateStream::new("clicks", 2)).unwrap();
    let stream = data.stream("clicks").unwrap();
    for n in 0..10 {
        let key = format!("key {n}");
        let outcome = stream.put_records(&[PutRecord {
            partition_key: &key,
            explicit_hash_key: None,
            data: b"x",
        }]);
        assert!(outcome.error.is_none());
    }
    stream.split_shard(0, None).unwrap();

    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let jobs = data.queue("jobs").unwrap();
    for body in ["a", "b", "c"] {
        jobs.send(&SendMessage::new(body)).unwrap();
    }
    let got = jobs.receive(&common::no_wait(1)).unwrap();
    assert_eq!(got.len(), 1);

    data.create_topic("news", &TopicAttributes::defaults(false))
        .unwrap();
    for queue in ["jobs", "other"] {
        if queue == "other" {
            data.create_queue(queue, &QueueAttributes::defaults(false))
                .unwrap();
        }
        data.subscribe("news", &common::subscribe_queue(queue, None, true))
            .unwrap();
    }
    let topic = data.topic("news").unwrap();
    for n in 0..4 {
        topic
            .publish(&PublishMessage::new(format!("item {n}")))
            .unwrap();
    }

    let stats = data.stats().unwrap();
    assert_eq!(stats.streams.len(), 1);
    let clicks = &stats.streams[0];
    assert_eq!(
        (clicks.name.as_str(), clicks.open_shards, clicks.records),
        ("clicks", 3, 10),
        "the split closed one of two shards and opened two"
    );
    let queues: Vec<(&str, QueueCounts)> = stats
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.counts))
        .collect();
    let counts = |visible, in_flight| QueueCounts {
        visible,
        in_flight,
        delayed: 0,
    };
    assert_eq!(
        queues,
        [("jobs", counts(2 + 4, 1)), ("other", counts(4, 0))],
        "three sent, one received, four published to both"
    );
    assert_eq!(stats.topics.len(), 1);
    assert_eq!(
        (stats.topics[0].subscriptions, stats.topics[0].messages),
        (2, 4)
    );

    for (disk, dir) in [
        (clicks.disk, "/data/streams/clicks/"),
        (stats.queues[0].disk, "/data/queues/jobs/"),
        (stats.topics[0].disk, "/data/topics/news/"),
        (stats.total, "/data/"),
    ] {
        assert_eq!((disk.files, disk.bytes), bytes_under(&sim, dir), "{dir}");
        assert!(
            disk.segments >= 1 && disk.segments < disk.files,
            "{dir}: {disk:?}"
        );
    }
    assert_eq!(clicks.disk.segments, 4, "one segment per shard log");
}
