//! `datadir_recovery`: a whole data directory (a stream with a consumer group, a standard and
//! a FIFO queue with a dead-letter queue, a topic with a queue subscription) written through the
//! engine on the simulated storage, crashed, then damaged file by file: the recovery target's
//! damage on any file, and metadata files replaced by frames with a correct checksum around
//! patched or arbitrary payloads (so the bincode decoders and everything that trusts their
//! values are reached), or files planted where the directory layout expects them. Opening
//! the directory, and opening, reading, writing and checking every stream, queue and topic
//! it lists, never panics: every failure is a typed [`Error`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;

use super::{CrashKind, Damage, START_MS, apply_damage, plan};
use crate::clock::ManualClock;
use crate::queue::{QueueAttributes, Receive, RedrivePolicy, SendMessage};
use crate::storage::{SharedStorage, SimStorage};
use crate::stream::{CreateStream, PutRecord, StartPosition};
use crate::topic::handle::PublishMessage;
use crate::topic::{FilterScope, Protocol, Subscribe, TopicAttributes};
use crate::{DataDir, DirOptions, meta};

const ROOT: &str = "/data";

/// One step writing the directory before the crash.
#[derive(Debug, Clone, Arbitrary)]
pub enum BuildOp {
    /// Put a record (key modulo 8, data length modulo 64).
    Put(u8, u8),
    /// Split an open shard (picked modulo their number) in the middle.
    Split(u8),
    /// Send this many (modulo 4, at least 1) messages.
    Send {
        /// To the FIFO queue.
        fifo: bool,
        /// How many.
        n: u8,
    },
    /// Receive up to 3 messages with a 1 s visibility timeout, deleting them when `delete`.
    Receive {
        /// From the FIFO queue.
        fifo: bool,
        /// Delete what was received.
        delete: bool,
    },
    /// Compact the queue (writes its snapshot).
    Compact {
        /// The FIFO queue.
        fifo: bool,
    },
    /// A consumer of group `app` reads a batch and checkpoints it.
    Consume,
    /// Publish to the topic (body length modulo 64).
    Publish(u8),
    /// Deliver the topic to its subscriptions (writes cursors).
    Deliver,
    /// Move the clock by this many ms.
    Advance(u16),
}

/// Damage to the files of the directory.
#[derive(Debug, Clone, Arbitrary)]
pub enum DirDamage {
    /// The recovery target's damage, on any file of the directory.
    File(Damage),
    /// A metadata file (picked modulo their number) with these bytes written over its payload
    /// at a position (modulo its length + 1), then framed again with a correct checksum.
    Patch {
        /// Which metadata file.
        file: u8,
        /// Where in the payload.
        at: u16,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A metadata file (picked modulo their number) holding a frame with a correct checksum
    /// around these payload bytes.
    Replace {
        /// Which metadata file.
        file: u8,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A file planted at a path the layout knows (picked modulo their number), holding these
    /// bytes, framed as metadata of the path's kind when `framed`.
    Plant {
        /// Which path.
        path: u8,
        /// The bytes.
        bytes: Vec<u8>,
        /// Framed as metadata with a correct checksum.
        framed: bool,
    },
}

/// Input of the [`datadir_recovery`] target.
#[derive(Debug, Clone, Arbitrary)]
pub struct DataDirInput {
    /// Steps writing the directory (at most 32).
    pub build: Vec<BuildOp>,
    /// How the writing process ends (`None`: it closes everything).
    pub crash: Option<CrashKind>,
    /// Damage afterwards (at most 8).
    pub damage: Vec<DirDamage>,
}

/// The metadata magic of a file, by its name.
fn magic_of(path: &Path) -> Option<[u8; 8]> {
    let name = path.file_name()?.to_str()?;
    let ext = path.extension().and_then(|e| e.to_str());
    Some(match (name, ext) {
        ("shoal.format", _) => *b"SHOALDIR",
        ("stream.meta", _) => *b"SHOALSTM",
        ("queue.meta", _) => *b"SHOALQUE",
        ("state.snap", _) => *b"SHOALQSN",
        ("topic.meta", _) => *b"SHOALTOP",
        ("subscriptions.meta", _) => *b"SHOALSUB",
        (_, Some("cursor")) => *b"SHOALCUR",
        (_, Some("checkpoint")) => *b"SHOALCKP",
        _ => return None,
    })
}

/// Paths the layout knows, where a file may be planted.
fn plant_paths() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    [
        "shoal.format",
        "streams/s/stream.meta",
        "streams/s/shards/000000000007/head",
        "streams/s/shards/000000000000/SEALED",
        "streams/s/consumers/app/000000000000.checkpoint",
        "streams/s/consumers/app/000000000005.checkpoint",
        "streams/x/stream.meta",
        "queues/q/state.snap",
        "queues/f.fifo/state.snap",
        "queues/n/queue.meta",
        "queues/q/journal/00000000000000000000.log",
        "topics/t/cursors/0.cursor",
        "topics/u/topic.meta",
        "topics/t/subscriptions.meta",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect()
}

fn build(data: &DataDir, clock: &ManualClock, ops: &[BuildOp]) {
    let stream = data.stream("s").ok();
    let queues = [data.queue("q").ok(), data.queue("f.fifo").ok()];
    let topic = data.topic("t").ok();
    let mut consumer = data.stream("s").ok().and_then(|s| s.consumer("app").ok());
    for (n, op) in ops.iter().take(32).enumerate() {
        match op {
            BuildOp::Put(key, len) => {
                if let Some(s) = &stream {
                    let body = vec![b'p'; usize::from(len % 64)];
                    let _ = s.put_records(&[PutRecord {
                        partition_key: &format!("k{}", key % 8),
                        explicit_hash_key: None,
                        data: &body,
                    }]);
                }
            }
            BuildOp::Split(pick) => {
                if let Some(s) = &stream
                    && let Ok(desc) = s.describe()
                {
                    let open: Vec<u32> = desc
                        .shards
                        .iter()
                        .filter(|d| d.open)
                        .filter_map(|d| crate::stream::parse_shard_id(&d.shard_id).ok())
                        .collect();
                    if let Some(shard) = open.get(usize::from(*pick) % open.len().max(1)) {
                        let _ = s.split_shard(*shard, None);
                    }
                }
            }
            BuildOp::Send { fifo, n: count } => {
                if let Some(q) = &queues[usize::from(*fifo)] {
                    let messages: Vec<SendMessage> = (0..1 + count % 4)
                        .map(|i| {
                            let mut m = SendMessage::new(format!("m{n}-{i}"));
                            if *fifo {
                                m.group_id = Some(format!("g{}", i % 2));
                                m.dedup_id = Some(format!("d{n}-{i}"));
                            }
                            m
                        })
                        .collect();
                    let _ = q.send_batch(&messages);
                }
            }
            BuildOp::Receive { fifo, delete } => {
                if let Some(q) = &queues[usize::from(*fifo)]
                    && let Ok(got) = q.receive(&Receive {
                        max_messages: 3,
                        wait: Some(Duration::ZERO),
                        visibility_timeout: Some(Duration::from_secs(1)),
                    })
                    && *delete
                {
                    for m in got {
                        let _ = q.delete(&m.receipt_handle);
                    }
                }
            }
            BuildOp::Compact { fifo } => {
                if let Some(q) = &queues[usize::from(*fifo)] {
                    let _ = q.compact();
                }
            }
            BuildOp::Consume => {
                if let Some(c) = &mut consumer
                    && c.rebalance().is_ok()
                    && let Ok(Some(batch)) = c.next_batch(5)
                    && let Some(last) = batch.records.last()
                {
                    let seq = last.sequence_number.clone();
                    let _ = c.checkpoint(batch.shard, &seq);
                }
            }
            BuildOp::Publish(len) => {
                if let Some(t) = &topic {
                    let body = "b".repeat(1 + usize::from(len % 64));
                    let _ = t.publish(&PublishMessage::new(body));
                }
            }
            BuildOp::Deliver => {
                if let Some(t) = &topic {
                    let _ = t.deliver();
                }
            }
            BuildOp::Advance(ms) => clock.advance(u64::from(*ms)),
        }
    }
}

/// Replaces the payload of the metadata file at `path` and frames it again.
fn reframe(storage: &SimStorage, path: &Path, payload: &[u8]) {
    if let Some(magic) = magic_of(path) {
        storage.put_file(path, &super::decoders::frame(magic, payload));
    }
}

fn damage(storage: &SimStorage, d: &DirDamage) {
    let metas: Vec<PathBuf> = storage
        .files()
        .into_iter()
        .filter(|p| magic_of(p).is_some())
        .collect();
    let pick = |n: u8| metas.get(usize::from(n) % metas.len().max(1)).cloned();
    match d {
        DirDamage::File(damage) => {
            let _ = apply_damage(storage, damage);
        }
        DirDamage::Patch { file, at, bytes } => {
            let Some(path) = pick(*file) else { return };
            let old = storage.contents(&path).unwrap_or_default();
            let mut payload = old
                .get(meta::META_HEADER_LEN..)
                .unwrap_or_default()
                .to_vec();
            let at = usize::from(*at) % (payload.len() + 1);
            let bytes = &bytes[..bytes.len().min(64)];
            if payload.len() < at + bytes.len() {
                payload.resize(at + bytes.len(), 0);
            }
            payload[at..at + bytes.len()].copy_from_slice(bytes);
            reframe(storage, &path, &payload);
        }
        DirDamage::Replace { file, payload } => {
            if let Some(path) = pick(*file) {
                reframe(storage, &path, &payload[..payload.len().min(4096)]);
            }
        }
        DirDamage::Plant {
            path,
            bytes,
            framed,
        } => {
            let paths = plant_paths();
            let path = &paths[usize::from(*path) % paths.len()];
            let bytes = &bytes[..bytes.len().min(4096)];
            if let Some(parent) = path.parent() {
                let _ = crate::storage::Storage::create_dir_all(storage, parent);
            }
            match magic_of(path) {
                Some(magic) if *framed => {
                    storage.put_file(path, &super::decoders::frame(magic, bytes));
                }
                _ => storage.put_file(path, bytes),
            }
        }
    }
}

/// Opens, reads, writes and checks everything the directory lists. Failures are fine; a
/// panic is the finding. With `strict` (nothing was damaged) every step must succeed.
fn use_everything(data: &DataDir, strict: bool) {
    let ok = |what: &str, r: crate::Result<()>| {
        if let Err(e) = r {
            assert!(!strict, "{what} failed in an undamaged directory: {e}");
        }
    };
    let listed = |what: &str, r: crate::Result<Vec<String>>| {
        r.unwrap_or_else(|e| {
            assert!(!strict, "{what} failed in an undamaged directory: {e}");
            Vec::new()
        })
    };
    for name in listed("list_streams", data.list_streams()) {
        ok("stream", use_stream(data, &name));
    }
    for name in listed("list_queues", data.list_queues("")) {
        ok("queue", use_queue(data, &name));
    }
    for name in listed("list_topics", data.list_topics()) {
        ok("topic", use_topic(data, &name));
    }
    match data.check() {
        Ok(report) => assert!(
            !strict || report.problems.is_empty(),
            "check of an undamaged directory: {:?}",
            report.problems
        ),
        Err(e) => assert!(!strict, "check failed: {e}"),
    }
}

fn use_stream(data: &DataDir, name: &str) -> crate::Result<()> {
    data.describe_stream(name)?;
    let stream = data.stream(name)?;
    for shard in stream.shard_indexes()? {
        let mut it = stream.shard_iterator(shard, StartPosition::TrimHorizon)?;
        for _ in 0..64 {
            if stream.get_records(&mut it, 16)?.records.is_empty() {
                break;
            }
        }
        stream.parents(shard)?;
        stream.children(shard)?;
    }
    let put = stream.put_records(&[PutRecord {
        partition_key: "after",
        explicit_hash_key: None,
        data: b"after recovery",
    }]);
    if let Some(e) = put.error {
        return Err(e);
    }
    let mut consumer = data.stream(name)?.consumer("app")?;
    consumer.rebalance()?;
    for _ in 0..16 {
        match consumer.next_batch(8)? {
            Some(batch) => {
                if let Some(last) = batch.records.last() {
                    let seq = last.sequence_number.clone();
                    consumer.checkpoint(batch.shard, &seq)?;
                }
            }
            None => break,
        }
    }
    consumer.caught_up().map(drop)
}

fn use_queue(data: &DataDir, name: &str) -> crate::Result<()> {
    data.queue_info(name)?;
    let queue = data.queue(name)?;
    queue.counts()?;
    for _ in 0..8 {
        let got = queue.receive(&Receive {
            max_messages: 10,
            wait: Some(Duration::ZERO),
            visibility_timeout: Some(Duration::from_secs(5)),
        })?;
        if got.is_empty() {
            break;
        }
        for m in &got {
            queue.change_visibility(&m.receipt_handle, Duration::from_secs(1))?;
            queue.delete(&m.receipt_handle)?;
        }
    }
    let mut m = SendMessage::new("after recovery");
    if queue.attributes()?.fifo {
        m.group_id = Some("g".into());
        m.dedup_id = Some("after".into());
    }
    queue.send(&m)?;
    queue.compact().map(drop)
}

fn use_topic(data: &DataDir, name: &str) -> crate::Result<()> {
    data.topic_info(name)?;
    data.subscriptions(name)?;
    let topic = data.topic(name)?;
    let end = topic.end_offset()?;
    topic.read(0, 64)?;
    topic.read(end.saturating_sub(1), 8)?;
    topic.statuses()?;
    let mut m = PublishMessage::new("after recovery");
    if topic.attributes().fifo {
        m.group_id = Some("g".into());
        m.dedup_id = Some("after".into());
    }
    topic.publish(&m)?;
    topic.deliver().map(drop)
}

/// See the module documentation.
pub fn datadir_recovery(input: DataDirInput) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(START_MS);
    let options = DirOptions {
        queue_segment_bytes: Some(1024),
        queue_maintenance_every: Some(4),
        exclusive: false,
    };
    let open = |storage: &SimStorage| {
        let shared: SharedStorage = Arc::new(storage.clone());
        DataDir::open_with_options(ROOT, shared, clock.clone(), options.clone())
    };
    let data = open(&storage).expect("a fresh data directory opens");
    data.create_stream(&CreateStream::new("s", 2))
        .expect("create the stream");
    data.create_queue("dlq", &QueueAttributes::defaults(false))
        .expect("create the dead-letter queue");
    let mut q = QueueAttributes::defaults(false);
    q.redrive = Some(RedrivePolicy {
        dead_letter_queue: "dlq".into(),
        max_receives: 2,
    });
    data.create_queue("q", &q).expect("create the queue");
    data.create_queue("f.fifo", &QueueAttributes::defaults(true))
        .expect("create the FIFO queue");
    data.create_topic("t", &TopicAttributes::defaults(false))
        .expect("create the topic");
    data.subscribe(
        "t",
        &Subscribe {
            protocol: Protocol::Queue,
            endpoint: "q".into(),
            raw: true,
            filter_policy: None,
            filter_scope: FilterScope::Attributes,
            dead_letter_queue: None,
        },
    )
    .expect("subscribe the queue");
    build(&data, &clock, &input.build);
    drop(data);
    let storage = match input.crash {
        Some(kind) => storage.crash(plan(kind)),
        None => storage,
    };
    let damage_list: Vec<&DirDamage> = input.damage.iter().take(8).collect();
    for d in &damage_list {
        damage(&storage, d);
    }
    let strict = damage_list.is_empty();
    let data = match open(&storage) {
        Ok(data) => data,
        Err(e) => {
            assert!(!strict, "an undamaged data directory does not open: {e}");
            return;
        }
    };
    use_everything(&data, strict);
    drop(data);
    // And once more, after everything above wrote what it could.
    if let Ok(data) = open(&storage) {
        use_everything(&data, strict);
    }
}

/// [`datadir_recovery`] on raw bytes.
pub fn datadir_recovery_bytes(data: &[u8]) {
    if let Some(input) = super::decode_input(data) {
        datadir_recovery(input);
    }
}
