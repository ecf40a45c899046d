//! Kinesis-style streams through the engine facade.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use shoal_engine::clock::ManualClock;
use shoal_engine::storage::{SharedStorage, SimStorage, Storage};
use shoal_engine::stream::{
    CreateStream, PutRecord, SequenceNumber, StartPosition, Stream, hash_partition_key, shard_id,
};
use shoal_engine::{DataDir, Error};

fn data_dir() -> (DataDir, Arc<ManualClock>, SimStorage) {
    let sim = SimStorage::new();
    let storage: SharedStorage = Arc::new(sim.clone());
    let clock = ManualClock::new(1_700_000_000_000);
    let dir = DataDir::open_with("/data", storage, clock.clone()).unwrap();
    (dir, clock, sim)
}

fn put(stream: &Stream, key: &str, data: &str) -> (String, String) {
    let outcome = stream.put_records(&[PutRecord {
        partition_key: key,
        explicit_hash_key: None,
        data: data.as_bytes(),
    }]);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results[0];
    (r.shard_id(), r.sequence_number())
}

/// Every record of the stream as (shard, key, data), 7 per read so that reads page.
fn read_stream(stream: &Stream) -> Vec<(u32, String, String)> {
    common::read_stream(stream, 7)
}

#[test]
fn create_describe_list_delete() {
    let (dir, _, _) = data_dir();
    let d = dir.create_stream(&CreateStream::new("orders", 4)).unwrap();
    assert_eq!(d.shards.len(), 4);
    assert_eq!(d.shards[0].shard_id, "shardId-000000000000");
    assert_eq!(d.shards[0].starting_hash_key, 0);
    assert_eq!(d.shards[3].ending_hash_key, u128::MAX);
    assert_eq!(d.shards[1].starting_hash_key, 1 << 126);
    assert!(
        d.shards
            .iter()
            .all(|s| s.open && s.parent_shard_id.is_none())
    );
    assert_eq!(d.retention_hours, 24);
    assert!(matches!(
        dir.create_stream(&CreateStream::new("orders", 1)),
        Err(Error::AlreadyExists { .. })
    ));
    dir.create_stream(&CreateStream::new("clicks", 1)).unwrap();
    assert_eq!(dir.list_streams().unwrap(), vec!["clicks", "orders"]);
    dir.delete_stream("orders").unwrap();
    assert_eq!(dir.list_streams().unwrap(), vec!["clicks"]);
    assert!(matches!(
        dir.describe_stream("orders"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        dir.delete_stream("orders"),
        Err(Error::NotFound { .. })
    ));
    // The name is free again.
    dir.create_stream(&CreateStream::new("orders", 2)).unwrap();
    for bad in ["", "..", "a/b", &"x".repeat(129)] {
        assert!(matches!(
            dir.create_stream(&CreateStream::new(bad, 1)),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(dir.create_stream(&CreateStream::new("zero", 0)).is_err());
    dir.set_stream_retention("orders", Duration::from_secs(48 * 3600))
        .unwrap();
    assert_eq!(dir.describe_stream("orders").unwrap().retention_hours, 48);
}

#[test]
fn puts_route_by_md5_and_read_back_with_every_iterator() {
    let (dir, clock, _) = data_dir();
    let d = dir.create_stream(&CreateStream::new("s", 4)).unwrap();
    let stream = dir.stream("s").unwrap();
    let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); 4];
    for i in 0..200 {
        let key = format!("key-{i}");
        let (shard, seq) = put(&stream, &key, &format!("data-{i}"));
        let hash = hash_partition_key(&key);
        let owner = d
            .shards
            .iter()
            .find(|s| s.starting_hash_key <= hash && hash <= s.ending_hash_key)
            .unwrap();
        assert_eq!(shard, owner.shard_id);
        let index = shard[8..].parse::<usize>().unwrap();
        per_shard[index].push(seq);
        clock.advance(10);
    }
    for seqs in &per_shard {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "sequence numbers increase"
        );
        assert!(!seqs.is_empty());
    }
    // An explicit hash key overrides the partition key.
    let outcome = stream.put_records(&[PutRecord {
        partition_key: "whatever",
        explicit_hash_key: Some(u128::MAX),
        data: b"last",
    }]);
    assert_eq!(outcome.results[0].shard_id(), shard_id(3));

    let seqs = &per_shard[1];
    let at = SequenceNumber::parse(&seqs[5]).unwrap();
    let mut it = stream
        .shard_iterator(1, StartPosition::AtSequence(at))
        .unwrap();
    let got = stream.get_records(&mut it, 2).unwrap();
    let got_seqs: Vec<&str> = got
        .records
        .iter()
        .map(|r| r.sequence_number.as_str())
        .collect();
    assert_eq!(got_seqs, vec![seqs[5].as_str(), seqs[6].as_str()]);
    let mut it = stream
        .shard_iterator(1, StartPosition::AfterSequence(at))
        .unwrap();
    assert_eq!(
        stream.get_records(&mut it, 1).unwrap().records[0].sequence_number,
        seqs[6]
    );
    let mut it = stream.shard_iterator(1, StartPosition::Latest).unwrap();
    assert!(stream.get_records(&mut it, 10).unwrap().records.is_empty());
    let key = (0..).map(|i| format!("late-{i}")).find(|k| {
        let h = hash_partition_key(k);
        d.shards[1].starting_hash_key <= h && h <= d.shards[1].ending_hash_key
    });
    let key = key.unwrap();
    put(&stream, &key, "new");
    let got = stream.get_records(&mut it, 10).unwrap();
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].data, b"new");
    assert_eq!(got.records[0].partition_key, key);
    // AT_TIMESTAMP: records arrived every 10 ms from the start.
    let start = 1_700_000_000_000u64;
    let mut it = stream
        .shard_iterator(0, StartPosition::AtTimestamp(start + 1000))
        .unwrap();
    let first = &stream.get_records(&mut it, 1).unwrap().records[0];
    assert!(first.arrival_timestamp_ms >= start + 1000);
    let mut all = stream
        .shard_iterator(0, StartPosition::TrimHorizon)
        .unwrap();
    let everything = stream.get_records(&mut all, 1000).unwrap().records;
    let expected_first = everything
        .iter()
        .find(|r| r.arrival_timestamp_ms >= start + 1000)
        .unwrap();
    assert_eq!(first, expected_first);
    // A sequence number of another shard is refused.
    assert!(matches!(
        stream.shard_iterator(0, StartPosition::AtSequence(at)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_batch_routes_each_record_by_its_own_key() {
    let (dir, _, _) = data_dir();
    let d = dir.create_stream(&CreateStream::new("s", 4)).unwrap();
    let stream = dir.stream("s").unwrap();
    let owner = |hash: u128| {
        let shard = d
            .shards
            .iter()
            .find(|s| s.starting_hash_key <= hash && hash <= s.ending_hash_key)
            .unwrap();
        shard.shard_id.clone()
    };
    // Runs of one key, keys coming back after others, and explicit hash keys inside a run
    // (the put hashes each run of a key once).
    let keys = ["a", "a", "b", "b", "b", "a", "c", "c", "a", "b", "d", "d"];
    let explicit = |i: usize| (i % 5 == 4).then(|| u128::MAX / 12 * i as u128);
    let data: Vec<String> = (0..keys.len()).map(|i| format!("record-{i}")).collect();
    let puts: Vec<PutRecord<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| PutRecord {
            partition_key: key,
            explicit_hash_key: explicit(i),
            data: data[i].as_bytes(),
        })
        .collect();
    let outcome = stream.put_records(&puts);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let shards: Vec<String> = outcome.results.iter().map(|r| r.shard_id()).collect();
    let expected: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| owner(explicit(i).unwrap_or_else(|| hash_partition_key(key))))
        .collect();
    assert_eq!(shards, expected);
    let distinct: std::collections::BTreeSet<&String> = shards.iter().collect();
    assert!(
        distinct.len() >= 3,
        "the keys spread over shards: {shards:?}"
    );
    // Each record reads back from the shard its result named.
    let stored = read_stream(&stream);
    assert_eq!(stored.len(), keys.len());
    for (i, key) in keys.iter().enumerate() {
        let found = stored
            .iter()
            .find(|(_, k, d)| k == key && *d == data[i])
            .unwrap_or_else(|| panic!("record {i} is stored"));
        assert_eq!(shard_id(found.0), shards[i]);
    }
}

#[test]
fn invalid_records_are_refused_and_nothing_is_written() {
    let (dir, _, sim) = data_dir();
    let mut create = CreateStream::new("s", 1);
    create.max_record_bytes = 100;
    dir.create_stream(&create).unwrap();
    let stream = dir.stream("s").unwrap();
    put(&stream, "k", "first");
    let before: Vec<_> = sim
        .files()
        .iter()
        .map(|p| (p.clone(), sim.contents(p).unwrap()))
        .collect();
    let big = vec![b'x'; 99];
    let long_key = "k".repeat(257);
    for records in [
        vec![
            PutRecord {
                partition_key: "ok",
                explicit_hash_key: None,
                data: b"fine",
            },
            PutRecord {
                partition_key: "kk",
                explicit_hash_key: None,
                data: &big,
            },
        ],
        vec![PutRecord {
            partition_key: "",
            explicit_hash_key: None,
            data: b"x",
        }],
        vec![PutRecord {
            partition_key: &long_key,
            explicit_hash_key: None,
            data: b"x",
        }],
    ] {
        let outcome = stream.put_records(&records);
        assert!(outcome.results.is_empty());
        assert!(matches!(
            outcome.error,
            Some(Error::RecordTooLarge { .. } | Error::InvalidArgument(_))
        ));
    }
    let after: Vec<_> = sim
        .files()
        .iter()
        .map(|p| (p.clone(), sim.contents(p).unwrap()))
        .collect();
    assert_eq!(before, after, "a rejected put changes nothing on disk");
    // A 256-character key (multi-byte characters count as one) is fine.
    dir.create_stream(&CreateStream::new("t", 1)).unwrap();
    let key = "é".repeat(256);
    put(&dir.stream("t").unwrap(), &key, "ok");
}

#[test]
fn resharding_keeps_per_key_order_and_reads_parents_first() {
    let (dir, _, _) = data_dir();
    dir.create_stream(&CreateStream::new("s", 2)).unwrap();
    let stream = dir.stream("s").unwrap();
    let keys = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let mut counter = 0;
    let mut put_round = |stream: &Stream| {
        for key in keys {
            put(stream, key, &format!("{key}-{counter}"));
            counter += 1;
        }
    };
    put_round(&stream);
    let children = stream.split_shard(0, None).unwrap();
    assert_eq!(children, vec![2, 3]);
    put_round(&stream);
    let merged = stream.merge_shards(2, 3).unwrap();
    assert_eq!(merged, vec![4]);
    put_round(&stream);
    let scaled = stream.scale(3).unwrap();
    assert_eq!(scaled.len(), 3);
    put_round(&stream);
    let d = stream.describe().unwrap();
    let open: Vec<&str> = d
        .shards
        .iter()
        .filter(|s| s.open)
        .map(|s| s.shard_id.as_str())
        .collect();
    assert_eq!(open.len(), 3);
    let s2 = &d.shards[2];
    assert_eq!(s2.parent_shard_id.as_deref(), Some("shardId-000000000000"));
    let s4 = &d.shards[4];
    assert_eq!(
        (
            s4.parent_shard_id.as_deref(),
            s4.adjacent_parent_shard_id.as_deref()
        ),
        (Some("shardId-000000000002"), Some("shardId-000000000003"))
    );
    assert!(d.shards[0].ending_sequence_number.is_some());
    // Open shards cover the whole key space without overlap.
    let mut ranges: Vec<(u128, u128)> = d
        .shards
        .iter()
        .filter(|s| s.open)
        .map(|s| (s.starting_hash_key, s.ending_hash_key))
        .collect();
    ranges.sort_unstable();
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges.last().unwrap().1, u128::MAX);
    assert!(ranges.windows(2).all(|w| w[0].1 + 1 == w[1].0));
    // Per key, reading shards parents-first gives put order.
    let records = read_stream(&stream);
    assert_eq!(records.len(), 20);
    for key in keys {
        let data: Vec<u32> = records
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, d)| d.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(data.len(), 4);
        assert!(data.windows(2).all(|w| w[0] < w[1]), "{key}: {data:?}");
    }
    // Closed shards refuse writes, stay readable, and end.
    let mut it = stream
        .shard_iterator(0, StartPosition::TrimHorizon)
        .unwrap();
    let got = stream.get_records(&mut it, 100).unwrap();
    assert!(got.shard_ended);
    // Invalid reshards change nothing.
    assert!(matches!(stream.merge_shards(0, 1), Err(Error::Conflict(_))));
    let open_idx: Vec<u32> = d
        .shards
        .iter()
        .filter(|s| s.open)
        .map(|s| s.shard_id[8..].parse().unwrap())
        .collect();
    assert!(matches!(
        stream.merge_shards(open_idx[0], open_idx[2]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        stream.split_shard(open_idx[0], Some(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(stream.describe().unwrap(), d);
}

#[test]
fn an_interrupted_reshard_is_repaired_by_the_next_put() {
    let (dir, clock, sim) = data_dir();
    dir.create_stream(&CreateStream::new("s", 1)).unwrap();
    let stream = dir.stream("s").unwrap();
    put(&stream, "k", "before");
    // A reshard sealed shard 0 and died before writing the new map.
    let log = shoal_engine::log::Log::open(
        Arc::new(sim.clone()),
        clock.clone(),
        "/data/streams/s/shards/000000000000",
        shoal_engine::log::LogOptions {
            writer_lock: shoal_engine::log::WriterLock::Shared,
            ..Default::default()
        },
    )
    .unwrap();
    log.seal().unwrap();
    drop(log);
    let fresh = dir.stream("s").unwrap();
    put(&fresh, "k", "after");
    let data: Vec<String> = read_stream(&fresh).into_iter().map(|(_, _, d)| d).collect();
    assert_eq!(data, vec!["before", "after"]);
}

#[test]
fn retention_expires_records_and_moves_the_trim_horizon() {
    let (dir, clock, _) = data_dir();
    let mut create = CreateStream::new("s", 1);
    create.retention = Duration::from_secs(3600);
    dir.create_stream(&create).unwrap();
    let stream = dir.stream("s").unwrap();
    for i in 0..50 {
        put(&stream, "k", &format!("old-{i}"));
        clock.advance(60_000);
    }
    // 50 minutes have passed: records older than an hour are gone from reads.
    clock.advance(20 * 60_000);
    let data: Vec<String> = read_stream(&stream)
        .into_iter()
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(data.first().map(String::as_str), Some("old-10"));
    assert_eq!(data.len(), 40);
    let mut it = stream
        .shard_iterator(
            0,
            StartPosition::AtSequence(SequenceNumber {
                shard: 0,
                offset: 0,
            }),
        )
        .unwrap();
    let got = stream.get_records(&mut it, 1).unwrap();
    assert_eq!(got.records[0].data, b"old-10");
    clock.advance(2 * 3600 * 1000);
    assert!(read_stream(&stream).is_empty());
    // A new writer deletes the expired segments.
    let writer = dir.stream("s").unwrap();
    put(&writer, "k", "new");
    let data: Vec<String> = read_stream(&writer)
        .into_iter()
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(data, vec!["new"]);
}

#[test]
fn throughput_emulation_throttles_without_writing() {
    let (dir, clock, sim) = data_dir();
    let mut create = CreateStream::new("limited", 1);
    create.enforce_limits = true;
    dir.create_stream(&create).unwrap();
    dir.create_stream(&CreateStream::new("free", 1)).unwrap();
    let limited = dir.stream("limited").unwrap();
    let free = dir.stream("free").unwrap();
    let data = vec![b'x'; 100];
    let batch: Vec<PutRecord<'_>> = (0..500)
        .map(|_| PutRecord {
            partition_key: "k",
            explicit_hash_key: None,
            data: &data,
        })
        .collect();
    // 1000 records per second per shard: two batches of 500 fit, the third does not.
    assert!(limited.put_records(&batch).error.is_none());
    assert!(limited.put_records(&batch).error.is_none());
    let segment = "/data/streams/limited/shards/000000000000/00000000000000000000.log";
    let before = sim.contents(std::path::Path::new(segment)).unwrap();
    let outcome = limited.put_records(&batch[..1]);
    assert!(
        matches!(outcome.error, Some(Error::Throttled(_))),
        "{:?}",
        outcome.error
    );
    assert!(outcome.results.is_empty());
    assert_eq!(
        sim.contents(std::path::Path::new(segment)).unwrap(),
        before,
        "nothing written"
    );
    // Without emulation there is no limit.
    for _ in 0..3 {
        assert!(free.put_records(&batch).error.is_none());
    }
    // The next second has a fresh budget; 1 MiB of bytes is the other limit.
    clock.advance(1000);
    let big = vec![b'y'; 600 << 10];
    let one = [PutRecord {
        partition_key: "k",
        explicit_hash_key: None,
        data: &big,
    }];
    assert!(limited.put_records(&one).error.is_none());
    assert!(matches!(
        limited.put_records(&one).error,
        Some(Error::Throttled(_))
    ));
    // Reads: 2 MiB per second, charged after each read. Store 3 MiB first, a second apart.
    let mib = vec![b'z'; 1000 << 10];
    let one = [PutRecord {
        partition_key: "k",
        explicit_hash_key: None,
        data: &mib,
    }];
    for _ in 0..3 {
        clock.advance(1000);
        assert!(limited.put_records(&one).error.is_none());
    }
    clock.advance(1000);
    let mut it = limited
        .shard_iterator(
            0,
            StartPosition::AtSequence(SequenceNumber {
                shard: 0,
                offset: 1001,
            }),
        )
        .unwrap();
    let mut read_bytes = 0;
    let mut outcome = None;
    for _ in 0..10 {
        match limited.get_records(&mut it, 1) {
            Ok(got) => read_bytes += got.records.iter().map(|r| r.data.len()).sum::<usize>(),
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    assert!(matches!(outcome, Some(Error::Throttled(_))), "{outcome:?}");
    assert!((2 << 20..3 << 20).contains(&read_bytes), "{read_bytes}");
    clock.advance(1000);
    assert!(
        limited.get_records(&mut it, 1).is_ok(),
        "a new second, a new read budget"
    );
}

/// A closed shard is finished for a consumer group (and its children leased) only once the
/// group checkpointed its last record: records a worker read but never checkpointed are
/// read again by the next worker, even when the worker asked for more before it crashed.
#[test]
fn a_closed_shard_is_not_finished_past_records_never_checkpointed() {
    let (data, _clock, _sim) = data_dir();
    data.create_stream(&CreateStream::new("s", 1)).unwrap();
    let stream = data.stream("s").unwrap();
    for i in 0..3 {
        put(&stream, "k", &format!("r{i}"));
    }
    stream.split_shard(0, None).unwrap();

    let mut worker = data.stream("s").unwrap().consumer("app").unwrap();
    worker.rebalance().unwrap();
    let batch = worker.next_batch(10).unwrap().unwrap();
    assert_eq!((batch.shard, batch.records.len()), (0, 3));
    // Asks for more before processing: the closed shard has nothing left, yet nothing of
    // it was checkpointed.
    assert!(worker.next_batch(10).unwrap().is_none());
    drop(worker);

    let mut next = data.stream("s").unwrap().consumer("app").unwrap();
    next.rebalance().unwrap();
    assert_eq!(next.leased(), [0], "the parent again, not its children");
    let again = next.next_batch(10).unwrap().unwrap();
    let data_of = |b: &shoal_engine::stream::ConsumerBatch| -> Vec<String> {
        b.records
            .iter()
            .map(|r| String::from_utf8(r.data.clone()).unwrap())
            .collect()
    };
    assert_eq!(data_of(&again), ["r0", "r1", "r2"]);
    // Checkpointed at its last record, the shard is finished and the children come next.
    let last = again.records.last().unwrap().sequence_number.clone();
    next.checkpoint(0, &last).unwrap();
    assert!(next.next_batch(10).unwrap().is_none());
    next.rebalance().unwrap();
    assert_eq!(next.leased(), [1, 2]);
}

/// A handle kept while another process deletes its stream (and makes a new one of that name)
/// fails with the stream's `NotFound`, whether it had written to the shard before or not, and
/// leaves nothing behind: no record acknowledged into deleted files, no shard directory of
/// the deleted stream made again, nothing added to the new stream.
#[test]
fn a_handle_of_a_deleted_stream_fails_with_not_found() {
    let (dir, clock, sim) = data_dir();
    dir.create_stream(&CreateStream::new("clicks", 1)).unwrap();
    let written = dir.stream("clicks").unwrap();
    put(&written, "k", "a");
    let idle = dir.stream("clicks").unwrap();

    let other = DataDir::open_with("/data", Arc::new(sim.clone()), clock.clone()).unwrap();
    other.delete_stream("clicks").unwrap();
    let not_found = |stream: &Stream| {
        let outcome = stream.put_records(&[PutRecord {
            partition_key: "k",
            explicit_hash_key: None,
            data: b"lost",
        }]);
        assert!(outcome.results.is_empty());
        assert!(
            matches!(&outcome.error, Some(Error::NotFound { kind: "stream", name }) if name == "clicks"),
            "not the stream's NotFound: {:?}",
            outcome.error
        );
    };
    not_found(&written);
    not_found(&idle);
    assert!(
        !sim.exists(std::path::Path::new("/data/streams/clicks")),
        "the deleted stream's directory was made again"
    );

    clock.advance(1);
    other
        .create_stream(&CreateStream::new("clicks", 1))
        .unwrap();
    put(&other.stream("clicks").unwrap(), "k", "b");
    not_found(&written);
    not_found(&idle);
    let fresh = dir.stream("clicks").unwrap();
    let data: Vec<String> = read_stream(&fresh).into_iter().map(|r| r.2).collect();
    assert_eq!(data, ["b"]);
}
