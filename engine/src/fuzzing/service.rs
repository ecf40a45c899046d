//! `service_model`: one data directory on the simulated storage and a manual clock, driven by
//! random operations on a stream (puts, iterators, splits, merges) and on a standard and a FIFO
//! queue (sends, receives, deletes, visibility changes, purges), with clock steps, reopens,
//! process crashes and power losses (torn tails after an injected I/O failure) and bit flips,
//! against a small in-memory model of Kinesis and SQS semantics.
//!
//! The model is exact where the semantics are deterministic (every queue and stream is
//! `Always` durable, so a crash between operations loses nothing). An operation that fails
//! because of an injected I/O failure is followed by a crash and a reopen, and what it may
//! have done becomes uncertain in the model ("fuzzy" messages, pending stream batches, a
//! reshard that may or may not have happened) until the engine shows which. After a bit flip
//! the model only demands that nothing wrong is returned: every message received is one that
//! was sent, every record read at a sequence number is one put there, errors are typed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;

use super::{CrashKind, Fault, START_MS, arm, plan};
use crate::clock::{Clock, ManualClock};
use crate::error::Error;
use crate::queue::{Queue, QueueAttributes, Receive, ReceivedMessage, SendMessage};
use crate::storage::{CrashPlan, SharedStorage, SimStorage};
use crate::stream::{
    CreateStream, PutRecord, SequenceNumber, ShardIterator, StartPosition, Stream,
    hash_partition_key, shard_id,
};
use crate::{DataDir, DirOptions};

const ROOT: &str = "/data";
const STREAM: &str = "s";
const STD: &str = "std";
const FIFO: &str = "jobs.fifo";
const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
const DEDUP_WINDOW_MS: u64 = 300_000;

/// Where a `get` starts.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum From {
    /// The oldest record.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// At the offset picked modulo the shard's length + 2.
    At(u8),
    /// After the offset picked modulo the shard's length + 2.
    After(u8),
    /// At the timestamp of the record picked (modulo their number), plus a step in ms.
    Time(u8, i8),
}

/// One message of a send.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct SendSpec {
    /// FIFO message group (modulo 3).
    pub group: u8,
    /// FIFO deduplication id (modulo 6).
    pub dedup: u8,
    /// Standard queue: per-message delay, this modulo 4 times 10 s.
    pub delay: Option<u8>,
}

/// One step of the [`service_model`] target.
#[derive(Debug, Clone, Arbitrary)]
pub enum SvcOp {
    /// `put_records` of up to 4 records.
    Put(Vec<(u8, Option<u16>)>),
    /// An iterator on a shard (picked modulo their number), read to its end.
    Get {
        /// Which shard.
        shard: u8,
        /// Where from.
        from: From,
        /// Records per `get_records` (modulo 8, at least 1).
        limit: u8,
    },
    /// Every shard read in full, parents first, and the shard map compared.
    ReadAll,
    /// Split a shard (picked modulo their number) at 1/256ths of its range, or in the middle.
    Split {
        /// Which shard.
        shard: u8,
        /// Where.
        at: Option<u8>,
    },
    /// Merge two shards (picked modulo their number).
    Merge(u8, u8),
    /// Send up to 4 messages as one batch to the FIFO queue or the standard one.
    Send {
        /// FIFO queue.
        fifo: bool,
        /// The messages.
        msgs: Vec<SendSpec>,
    },
    /// Receive up to 1 + this modulo 10 messages.
    Receive {
        /// FIFO queue.
        fifo: bool,
        /// Most messages.
        max: u8,
        /// Visibility timeout: this modulo 16 times 5 s (else the queue's 30 s).
        timeout: Option<u8>,
    },
    /// Delete a received message (picked modulo their number) by its newest or an older handle.
    Delete {
        /// FIFO queue.
        fifo: bool,
        /// Which message.
        pick: u8,
        /// Use the handle of an earlier receive.
        stale: bool,
    },
    /// Change the visibility timeout of a received message to this modulo 64 times 5 s.
    Visibility {
        /// FIFO queue.
        fifo: bool,
        /// Which message.
        pick: u8,
        /// Use the handle of an earlier receive.
        stale: bool,
        /// Timeout.
        timeout: u8,
    },
    /// Purge a queue.
    Purge {
        /// FIFO queue.
        fifo: bool,
    },
    /// Move the clock forward by this times 10 ms (up to about 11 minutes).
    Advance(u16),
    /// Close everything and open the data directory again.
    Reopen,
    /// Crash, then reopen.
    Crash(CrashKind),
    /// Arm an I/O failure; the operation it fails is followed by this crash and a reopen.
    Fault(Fault, CrashKind),
    /// XOR a byte of a file (picked modulo their number) at a position (modulo its length).
    BitFlip {
        /// Which file.
        file: u8,
        /// Where.
        at: u32,
        /// Mask (0 becomes 1).
        mask: u8,
    },
}

/// Input of the [`service_model`] target.
#[derive(Debug, Clone, Arbitrary)]
pub struct ServiceInput {
    /// Shards of the stream at creation: 1 + this modulo 3.
    pub shards: u8,
    /// Queue log segments of 1 KiB, and a snapshot and a reclaim every 4 state changes,
    /// instead of the defaults (rolls, snapshots, compaction and their crashes).
    pub small_segments: bool,
    /// The FIFO queue's delay: this modulo 3 times 10 s.
    pub fifo_delay: u8,
    /// The steps (at most 48).
    pub ops: Vec<SvcOp>,
}

// ------------------------------------------------------------------------------------------
// The model.
// ------------------------------------------------------------------------------------------

/// A record's partition key and data.
type KeyData = (String, Vec<u8>);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MShard {
    index: u32,
    parents: Vec<u32>,
    start: u128,
    end: u128,
    closed: bool,
    /// (partition key, data, arrival ms), at offsets 0.. .
    records: Vec<(String, Vec<u8>, u64)>,
}

#[derive(Debug, Clone, Default)]
struct SModel {
    shards: Vec<MShard>,
    next_index: u32,
    /// A failed put's batch per shard: on disk or not, until a reopen shows which.
    pending: BTreeMap<u32, Vec<(String, Vec<u8>)>>,
    /// A failed reshard's map: in force or not, until a reopen shows which.
    pending_map: Option<(Vec<MShard>, u32)>,
    /// Every record ever put (or maybe put) at each position, for checks after damage.
    history: HashMap<(u32, u64), Vec<KeyData>>,
    /// Records of puts that failed after damage: put somewhere or nowhere.
    loose: std::collections::HashSet<KeyData>,
}

impl SModel {
    fn shard(&self, index: u32) -> Option<&MShard> {
        self.shards.iter().find(|s| s.index == index)
    }

    fn route(&self, hash: u128) -> Option<u32> {
        self.shards
            .iter()
            .find(|s| !s.closed && s.start <= hash && hash <= s.end)
            .map(|s| s.index)
    }
}

#[derive(Debug, Clone)]
struct QMsg {
    body: String,
    /// Unknown for a message whose send failed.
    id: Option<String>,
    group: Option<String>,
    visible_at: u64,
    receive_count: u32,
    first_receive_ms: u64,
    /// Receipt handles, oldest first.
    handles: Vec<String>,
    deleted: bool,
    /// Its send was acknowledged (it exists).
    send_certain: bool,
    /// Uncertain: it may not exist, may be in flight or not, may be deleted or not, its
    /// receive count is unknown. A receive that returns it makes it certain again.
    fuzzy: bool,
    /// Received from the standard queue since the last reopen: that receive is durable only
    /// with the journal's next sync, which a failing fsync may keep from happening, so a
    /// power loss after a fault may undo it (the message comes back visible).
    receive_unsynced: bool,
}

impl QMsg {
    fn visible(&self, now: u64) -> bool {
        !self.deleted && self.visible_at <= now
    }
}

#[derive(Debug, Default)]
struct QModel {
    fifo: bool,
    delay_ms: u64,
    msgs: Vec<QMsg>,
    by_body: HashMap<String, usize>,
    /// FIFO: each deduplication id's fresh sends (send time, message index), newest last.
    dedup: HashMap<String, Vec<(u64, usize)>>,
    /// FIFO: the newest sequence number of a fresh send.
    last_seq: Option<u64>,
    /// FIFO: sequence numbers of messages whose send is certain.
    seqs: HashMap<usize, u64>,
}

/// What a send did with one message, in the model.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// A new message.
    New(usize),
    /// A duplicate of this acknowledged one.
    Dup(usize),
    /// A new message, or a duplicate of one whose send failed.
    MaybeDup(usize),
}

impl QModel {
    fn fuzzy_group(&self, group: &str) -> bool {
        self.msgs
            .iter()
            .any(|m| m.fuzzy && m.group.as_deref() == Some(group))
    }

    /// A FIFO group is busy while one of its messages is in flight.
    fn busy(&self, group: &str, now: u64) -> bool {
        self.msgs.iter().any(|m| {
            !m.fuzzy
                && !m.deleted
                && m.group.as_deref() == Some(group)
                && m.receive_count > 0
                && m.visible_at > now
        })
    }
}

struct Svc {
    storage: SimStorage,
    clock: Arc<ManualClock>,
    options: DirOptions,
    data: Option<DataDir>,
    stream: Option<Stream>,
    std: Option<Arc<Queue>>,
    fifo: Option<Arc<Queue>>,
    s: SModel,
    q: [QModel; 2],
    faults_armed: bool,
    then: CrashKind,
    damaged: bool,
    counter: u64,
}

fn is_fault_error(e: &Error) -> bool {
    !matches!(
        e,
        Error::InvalidArgument(_)
            | Error::InvalidReceiptHandle(_)
            | Error::MessageNotInflight(_)
            | Error::NotFound { .. }
            | Error::AlreadyExists { .. }
    )
}

impl Svc {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn queue(&self, fifo: bool) -> Option<&Arc<Queue>> {
        if fifo {
            self.fifo.as_ref()
        } else {
            self.std.as_ref()
        }
    }

    /// Opens the data directory and every handle. False when the directory does not open
    /// (only after damage).
    fn open(&mut self) -> bool {
        self.stream = None;
        self.std = None;
        self.fifo = None;
        self.data = None;
        let shared: SharedStorage = Arc::new(self.storage.clone());
        let data = match DataDir::open_with_options(
            ROOT,
            shared,
            self.clock.clone(),
            self.options.clone(),
        ) {
            Ok(data) => data,
            Err(e) => {
                assert!(self.damaged, "the data directory does not open: {e}");
                return false;
            }
        };
        let strict = !self.damaged;
        let must = |what: &str, e: &Error| {
            assert!(!strict, "{what} does not open: {e}");
        };
        match data.stream(STREAM) {
            Ok(s) => self.stream = Some(s),
            Err(e) => must("the stream", &e),
        }
        match data.queue(STD) {
            Ok(q) => self.std = Some(q),
            Err(e) => must("the standard queue", &e),
        }
        match data.queue(FIFO) {
            Ok(q) => self.fifo = Some(q),
            Err(e) => must("the FIFO queue", &e),
        }
        self.data = Some(data);
        true
    }

    /// Drops every handle, crashes the storage as `kind` says, reopens, and settles what the
    /// model left uncertain. False when the directory no longer opens.
    fn crash(&mut self, kind: Option<CrashKind>) -> bool {
        // Dropping the queue handles syncs what standard-queue receives left unsynced, unless
        // an armed fault fails that fsync (or failed the one that was to cover them).
        let synced = !self.faults_armed;
        self.stream = None;
        self.std = None;
        self.fifo = None;
        self.data = None;
        self.storage.clear_faults();
        self.faults_armed = false;
        let plan = kind.map_or(CrashPlan::ProcessCrash, plan);
        let power_loss = plan != CrashPlan::ProcessCrash;
        for m in &mut self.q[0].msgs {
            if m.receive_unsynced && power_loss && !synced {
                m.fuzzy = true;
            }
            m.receive_unsynced = false;
        }
        self.storage = self.storage.crash(plan);
        if !self.open() {
            return false;
        }
        self.settle();
        true
    }

    /// After a reopen: a failed put's batch is there whole or not at all; a failed reshard
    /// happened or not.
    fn settle(&mut self) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        if let Some((map, next)) = self.s.pending_map.take() {
            let desc = stream.describe();
            if !self.damaged {
                let desc = desc.unwrap_or_else(|e| panic!("describe after a failed reshard: {e}"));
                let shown = described(&desc);
                if shown == summary(&map) {
                    let records: HashMap<u32, Vec<(String, Vec<u8>, u64)>> = self
                        .s
                        .shards
                        .iter()
                        .map(|s| (s.index, s.records.clone()))
                        .collect();
                    self.s.shards = map;
                    for shard in &mut self.s.shards {
                        shard.records = records.get(&shard.index).cloned().unwrap_or_default();
                    }
                    self.s.next_index = next;
                } else {
                    assert_eq!(
                        shown,
                        summary(&self.s.shards),
                        "after a failed reshard the map is neither the old one nor the new one"
                    );
                }
            }
        }
        let pending = std::mem::take(&mut self.s.pending);
        for (index, batch) in pending {
            let Some(len) = self.s.shard(index).map(|s| s.records.len() as u64) else {
                continue;
            };
            let mut it = ShardIterator {
                shard: index,
                next_offset: len,
            };
            let got = stream.get_records(&mut it, 100);
            if self.damaged {
                continue;
            }
            let got = got.unwrap_or_else(|e| panic!("reading a shard after a crash: {e}"));
            let found: Vec<(String, Vec<u8>)> = got
                .records
                .iter()
                .map(|r| (r.partition_key.clone(), r.data.clone()))
                .collect();
            if found.is_empty() {
                continue;
            }
            assert_eq!(
                found,
                batch,
                "a failed put's batch in {} survived in part or changed",
                shard_id(index)
            );
            let shard = self
                .s
                .shards
                .iter_mut()
                .find(|s| s.index == index)
                .expect("looked up above");
            for r in &got.records {
                shard.records.push((
                    r.partition_key.clone(),
                    r.data.clone(),
                    r.arrival_timestamp_ms,
                ));
            }
        }
    }

    /// An operation failed: with an armed fault that is expected (crash and reopen, the
    /// caller made the model uncertain); otherwise it is a finding unless damaged.
    fn failed(&mut self, what: &str, e: &Error) -> bool {
        if self.damaged {
            return true;
        }
        assert!(
            self.faults_armed && is_fault_error(e),
            "{what} failed without an injected fault: {e}"
        );
        let then = self.then;
        self.crash(Some(then))
    }

    // ---- streams ----

    fn put(&mut self, specs: &[(u8, Option<u16>)]) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let specs: Vec<(String, Option<u128>, Vec<u8>)> = specs
            .iter()
            .take(4)
            .map(|(key, explicit)| {
                self.counter += 1;
                let data = format!("r{}-{}", self.counter, "x".repeat(usize::from(*key % 40)));
                (
                    format!("k{}", key % 16),
                    explicit.map(|h| u128::from(h) << 112),
                    data.into_bytes(),
                )
            })
            .collect();
        if specs.is_empty() {
            return;
        }
        let records: Vec<PutRecord<'_>> = specs
            .iter()
            .map(|(key, explicit, data)| PutRecord {
                partition_key: key,
                explicit_hash_key: *explicit,
                data,
            })
            .collect();
        let now = self.now();
        let outcome = stream.put_records(&records);
        // Where each record goes, and at which offset.
        let mut expected = Vec::new();
        let mut added: BTreeMap<u32, u64> = BTreeMap::new();
        for (key, explicit, _) in &specs {
            let hash = explicit.unwrap_or_else(|| hash_partition_key(key));
            let shard = self.s.route(hash);
            let offset = shard.map(|shard| {
                let base = self.s.shard(shard).map_or(0, |s| s.records.len() as u64);
                let n = added.entry(shard).or_default();
                *n += 1;
                base + *n - 1
            });
            expected.push(shard.zip(offset));
        }
        for (((key, _, data), want), got) in specs.iter().zip(&expected).zip(
            outcome
                .results
                .iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        ) {
            if let Some(got) = got {
                let at = (got.shard, got.sequence.offset);
                self.s
                    .history
                    .entry(at)
                    .or_default()
                    .push((key.clone(), data.clone()));
                if !self.damaged {
                    assert_eq!(
                        Some(at),
                        *want,
                        "put {key}: went to {} at {}",
                        got.shard,
                        got.sequence.offset
                    );
                    assert_eq!(got.sequence.shard, got.shard);
                }
            } else if self.damaged {
                // Where it went, if anywhere, is unknown once the model stopped following.
                self.s.loose.insert((key.clone(), data.clone()));
            } else if let Some(at) = want {
                self.s
                    .history
                    .entry(*at)
                    .or_default()
                    .push((key.clone(), data.clone()));
            }
        }
        if self.damaged {
            return;
        }
        // A shard batch with one acknowledged record is there whole.
        let acked_shards: Vec<u32> = outcome.results.iter().map(|r| r.shard).collect();
        for ((key, _, data), want) in specs.iter().zip(&expected) {
            let Some((shard, _)) = want else {
                panic!("no open shard for {key} in the model");
            };
            if acked_shards.contains(shard) {
                let s = self
                    .s
                    .shards
                    .iter_mut()
                    .find(|s| s.index == *shard)
                    .expect("routed to it");
                s.records.push((key.clone(), data.clone(), now));
            } else {
                self.s
                    .pending
                    .entry(*shard)
                    .or_default()
                    .push((key.clone(), data.clone()));
            }
        }
        if let Some(e) = outcome.error {
            self.failed("put", &e);
        } else {
            assert!(self.s.pending.is_empty(), "a put was not all acknowledged");
        }
    }

    fn get(&mut self, shard: u8, from: From, limit: u8) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let all: Vec<u32> = self.s.shards.iter().map(|s| s.index).collect();
        let index = if all.is_empty() {
            u32::from(shard)
        } else {
            all[usize::from(shard) % all.len()]
        };
        let model = self.s.shard(index).cloned();
        let len = model.as_ref().map_or(0, |s| s.records.len() as u64);
        let (start, expect_from) = match from {
            From::TrimHorizon => (StartPosition::TrimHorizon, 0),
            From::Latest => (StartPosition::Latest, len),
            From::At(pick) => {
                let offset = u64::from(pick) % (len + 2);
                (
                    StartPosition::AtSequence(SequenceNumber {
                        shard: index,
                        offset,
                    }),
                    offset,
                )
            }
            From::After(pick) => {
                let offset = u64::from(pick) % (len + 2);
                (
                    StartPosition::AfterSequence(SequenceNumber {
                        shard: index,
                        offset,
                    }),
                    offset + 1,
                )
            }
            From::Time(pick, delta) => {
                let base = model
                    .as_ref()
                    .and_then(|s| s.records.get(usize::from(pick) % s.records.len().max(1)))
                    .map_or(self.now(), |r| r.2);
                let t = base.saturating_add_signed(i64::from(delta));
                let first = model
                    .as_ref()
                    .and_then(|s| s.records.iter().position(|r| r.2 >= t))
                    .map_or(len, |p| p as u64);
                (StartPosition::AtTimestamp(t), first)
            }
        };
        let mut it = match stream.shard_iterator(index, start) {
            Ok(it) => it,
            Err(e) => {
                self.failed("shard_iterator", &e);
                return;
            }
        };
        if !self.damaged {
            assert_eq!(it.next_offset, expect_from, "iterator {from:?} on {index}");
        }
        let limit = usize::from(limit % 8).max(1);
        let mut got = Vec::new();
        let mut ended = false;
        for _ in 0..200 {
            match stream.get_records(&mut it, limit) {
                Ok(out) => {
                    assert!(out.records.len() <= limit, "more records than the limit");
                    ended = out.shard_ended;
                    if out.records.is_empty() {
                        break;
                    }
                    got.extend(out.records);
                }
                Err(e) => {
                    self.failed("get_records", &e);
                    return;
                }
            }
        }
        self.check_records(index, &got);
        if self.damaged {
            return;
        }
        let model = model.expect("a shard of the model");
        let want: Vec<(u64, &str, &[u8], u64)> = model
            .records
            .iter()
            .enumerate()
            .skip(usize::try_from(expect_from).unwrap_or(usize::MAX))
            .map(|(o, (k, d, ts))| (o as u64, k.as_str(), d.as_slice(), *ts))
            .collect();
        let seen: Vec<(u64, &str, &[u8], u64)> = got
            .iter()
            .map(|r| {
                let seq = SequenceNumber::parse(&r.sequence_number).expect("a sequence number");
                (
                    seq.offset,
                    r.partition_key.as_str(),
                    r.data.as_slice(),
                    r.arrival_timestamp_ms,
                )
            })
            .collect();
        assert_eq!(
            seen,
            want,
            "records of {} from {expect_from}",
            shard_id(index)
        );
        assert_eq!(ended, model.closed, "shard_ended of {}", shard_id(index));
    }

    /// Records read are the ones put at their sequence numbers (in any mode), in order.
    fn check_records(&self, index: u32, got: &[crate::stream::StreamRecord]) {
        let mut prev = None;
        for r in got {
            assert_eq!(r.shard_id, shard_id(index));
            let seq = SequenceNumber::parse(&r.sequence_number).expect("a sequence number");
            assert_eq!(seq.shard, index);
            assert!(prev.is_none_or(|p| seq.offset > p), "offsets out of order");
            prev = Some(seq.offset);
            let ever = self.s.history.get(&(index, seq.offset));
            let known = ever
                .is_some_and(|e| e.iter().any(|(k, d)| *k == r.partition_key && *d == r.data))
                || self
                    .s
                    .loose
                    .contains(&(r.partition_key.clone(), r.data.clone()));
            assert!(
                known,
                "{} at {} returned a record never put there: {:?} {:?}",
                shard_id(index),
                seq.offset,
                r.partition_key,
                String::from_utf8_lossy(&r.data)
            );
        }
    }

    fn read_all(&mut self) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let indexes = match stream.shard_indexes() {
            Ok(i) => i,
            Err(e) => {
                self.failed("shard_indexes", &e);
                return;
            }
        };
        if !self.damaged {
            let want: Vec<u32> = self.s.shards.iter().map(|s| s.index).collect();
            assert_eq!(indexes, want, "shard indexes");
            for (pos, shard) in self.s.shards.iter().enumerate() {
                for parent in &shard.parents {
                    let at = indexes.iter().position(|i| i == parent);
                    assert!(at.is_some_and(|at| at < pos), "a parent after its child");
                }
            }
            // A closed shard whose head is behind its data (after a power loss) is recovered
            // before it is read, so describe may fsync, and an armed fault may fail it.
            let desc = match stream.describe() {
                Ok(desc) => desc,
                Err(e) => {
                    self.failed("describe", &e);
                    return;
                }
            };
            assert_eq!(described(&desc), summary(&self.s.shards), "the shard map");
        }
        for index in indexes {
            let mut it = ShardIterator {
                shard: index,
                next_offset: 0,
            };
            let mut got = Vec::new();
            for _ in 0..100 {
                match stream.get_records(&mut it, 50) {
                    Ok(out) if out.records.is_empty() => break,
                    Ok(out) => got.extend(out.records),
                    Err(e) => {
                        self.failed("get_records", &e);
                        return;
                    }
                }
            }
            self.check_records(index, &got);
            if !self.damaged {
                let want = self.s.shard(index).map_or(0, |s| s.records.len());
                assert_eq!(got.len(), want, "records in {}", shard_id(index));
            }
        }
    }

    fn reshard(&mut self, split: Option<Option<u8>>, merge: (u8, u8)) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let all: Vec<u32> = self.s.shards.iter().map(|s| s.index).collect();
        if all.is_empty() {
            return;
        }
        let pick = |n: u8| all[usize::from(n) % all.len()];
        let next = self.s.next_index;
        let mut map = self.s.shards.clone();
        // The model's verdict: Ok(new shards), or the error kind.
        let (result, verdict): (_, Result<Vec<MShard>, &str>) = match split {
            Some(at) => {
                let index = pick(merge.0);
                let p = self.s.shard(index).expect("picked from the model").clone();
                let point = match at {
                    Some(k) => p.start + (p.end - p.start) / 256 * u128::from(k),
                    None => p.start + (p.end - p.start) / 2 + 1,
                };
                let verdict = if p.closed {
                    Err("conflict")
                } else if point <= p.start || point > p.end {
                    Err("invalid")
                } else {
                    Ok(vec![
                        child(next, vec![index], p.start, point - 1),
                        child(next + 1, vec![index], point, p.end),
                    ])
                };
                let at = at.map(|_| point);
                (stream.split_shard(index, at), verdict)
            }
            None => {
                let (a, b) = (pick(merge.0), pick(merge.1));
                let (sa, sb) = (
                    self.s.shard(a).expect("model").clone(),
                    self.s.shard(b).expect("model").clone(),
                );
                let (low, high) = if sa.start < sb.start {
                    (&sa, &sb)
                } else {
                    (&sb, &sa)
                };
                let verdict = if sa.closed || sb.closed {
                    Err("conflict")
                } else if low.end.checked_add(1) != Some(high.start) {
                    Err("invalid")
                } else {
                    Ok(vec![child(next, vec![a, b], low.start, high.end)])
                };
                (stream.merge_shards(a, b), verdict)
            }
        };
        if let Ok(children) = &verdict {
            let parents = children[0].parents.clone();
            for s in &mut map {
                if parents.contains(&s.index) {
                    s.closed = true;
                }
            }
            map.extend(children.iter().cloned());
        }
        let new_next = next
            + verdict
                .as_ref()
                .map_or(0, |c| u32::try_from(c.len()).unwrap_or(0));
        match (result, verdict) {
            (Ok(created), Ok(children)) => {
                if self.damaged {
                    return;
                }
                let want: Vec<u32> = children.iter().map(|c| c.index).collect();
                assert_eq!(created, want, "children of a reshard");
                self.s.shards = map;
                self.s.next_index = new_next;
            }
            (Ok(created), Err(why)) => {
                assert!(
                    self.damaged,
                    "a reshard the model refuses ({why}) made {created:?}"
                );
            }
            (Err(e), Err(why)) if !self.damaged => {
                let same = match why {
                    "conflict" => matches!(e, Error::Conflict(_)),
                    _ => matches!(e, Error::InvalidArgument(_)),
                };
                if !same {
                    self.failed("a refused reshard", &e);
                }
            }
            (Err(e), Ok(_)) => {
                if !self.damaged {
                    self.s.pending_map = Some((map, new_next));
                }
                self.failed("reshard", &e);
            }
            (Err(_), Err(_)) => {}
        }
    }

    // ---- queues ----

    fn send(&mut self, fifo: bool, specs: &[SendSpec]) {
        let Some(queue) = self.queue(fifo).cloned() else {
            return;
        };
        let now = self.now();
        let messages: Vec<SendMessage> = specs
            .iter()
            .take(4)
            .map(|spec| {
                self.counter += 1;
                let mut m = SendMessage::new(format!("b{}", self.counter));
                if fifo {
                    m.group_id = Some(format!("g{}", spec.group % 3));
                    m.dedup_id = Some(format!("d{}", spec.dedup % 6));
                } else {
                    m.delay = spec
                        .delay
                        .map(|d| Duration::from_secs(u64::from(d % 4) * 10));
                }
                m
            })
            .collect();
        if messages.is_empty() {
            return;
        }
        let result = queue.send_batch(&messages);
        let damaged = self.damaged;
        let q = &mut self.q[usize::from(fifo)];
        let mut batch: HashMap<String, Sent> = HashMap::new();
        let mut outcome = Vec::new();
        for m in &messages {
            let delay = m.delay.map_or(q.delay_ms, ms);
            let dedup = m.dedup_id.clone();
            // The fresh send this one duplicates, if any: in this batch, or within the window.
            let prior = dedup.as_ref().and_then(|d| {
                batch.get(d).copied().or_else(|| {
                    q.dedup
                        .get(d)
                        .and_then(|sends| sends.last())
                        .filter(|(at, _)| now - at < DEDUP_WINDOW_MS)
                        .map(|(_, i)| {
                            if q.msgs[*i].send_certain {
                                Sent::Dup(*i)
                            } else {
                                Sent::MaybeDup(*i)
                            }
                        })
                })
            });
            let in_batch = dedup.as_ref().is_some_and(|d| batch.contains_key(d));
            let sent = match prior {
                Some(Sent::Dup(i) | Sent::New(i)) => Sent::Dup(i),
                Some(Sent::MaybeDup(i)) if in_batch => Sent::MaybeDup(i),
                _ => {
                    let i = q.msgs.len();
                    q.msgs.push(QMsg {
                        body: m.body.clone(),
                        id: None,
                        group: m.group_id.clone(),
                        visible_at: now + delay,
                        receive_count: 0,
                        first_receive_ms: 0,
                        handles: Vec::new(),
                        deleted: false,
                        fuzzy: true,
                        send_certain: false,
                        receive_unsynced: false,
                    });
                    q.by_body.insert(m.body.clone(), i);
                    let sent = if prior.is_some() {
                        Sent::MaybeDup(i)
                    } else {
                        Sent::New(i)
                    };
                    if let Some(d) = &dedup {
                        batch.insert(d.clone(), sent);
                        q.dedup.entry(d.clone()).or_default().push((now, i));
                    }
                    sent
                }
            };
            outcome.push(sent);
        }
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                self.failed("send", &e);
                return;
            }
        };
        if damaged {
            return;
        }
        assert_eq!(sent.len(), messages.len());
        for (s, outcome) in sent.iter().zip(outcome) {
            let seq: Option<u64> = s
                .sequence_number
                .as_deref()
                .map(|n| n.parse().expect("digits"));
            assert_eq!(seq.is_some(), fifo, "a sequence number on FIFO sends only");
            match outcome {
                Sent::New(i) => {
                    let m = &mut q.msgs[i];
                    m.fuzzy = false;
                    m.send_certain = true;
                    match &m.id {
                        Some(id) => assert_eq!(*id, s.message_id, "one message, two ids"),
                        None => m.id = Some(s.message_id.clone()),
                    }
                    if let Some(seq) = seq {
                        if q.seqs.contains_key(&i) {
                            assert_eq!(q.seqs[&i], seq, "one message, two sequence numbers");
                        } else {
                            assert!(
                                q.last_seq.is_none_or(|last| seq > last),
                                "sequence number {seq} not after {:?}",
                                q.last_seq
                            );
                            q.last_seq = Some(seq);
                            q.seqs.insert(i, seq);
                        }
                    }
                }
                Sent::Dup(i) => {
                    let m = &q.msgs[i];
                    assert_eq!(
                        m.id.as_ref(),
                        Some(&s.message_id),
                        "a duplicate's message id"
                    );
                    if let (Some(seq), Some(want)) = (seq, q.seqs.get(&i)) {
                        assert_eq!(seq, *want, "a duplicate's sequence number");
                    }
                }
                // New, or a duplicate of a send that failed: stays uncertain.
                Sent::MaybeDup(_) => {}
            }
        }
    }

    fn receive(&mut self, fifo: bool, max: u8, timeout: Option<u8>) {
        let Some(queue) = self.queue(fifo).cloned() else {
            return;
        };
        let max = 1 + usize::from(max % 10);
        let timeout_ms = timeout.map_or(30_000, |t| u64::from(t % 16) * 5_000);
        let now = self.now();
        let result = queue.receive(&Receive {
            max_messages: max,
            wait: Some(Duration::ZERO),
            visibility_timeout: timeout.map(|_| Duration::from_millis(timeout_ms)),
        });
        let got = match result {
            Ok(got) => got,
            Err(e) => {
                if !self.damaged {
                    // Any visible message may now be in flight.
                    for m in &mut self.q[usize::from(fifo)].msgs {
                        if m.visible(now) || m.fuzzy {
                            m.fuzzy = true;
                        }
                    }
                }
                self.failed("receive", &e);
                return;
            }
        };
        let damaged = self.damaged;
        let q = &mut self.q[usize::from(fifo)];
        let mut idx = Vec::new();
        for r in &got {
            let i = *q
                .by_body
                .get(&r.body)
                .unwrap_or_else(|| panic!("received a message never sent: {:?}", r.body));
            let m = &q.msgs[i];
            if let Some(id) = &m.id {
                assert_eq!(*id, r.message_id, "message id of {:?}", r.body);
            }
            assert_eq!(r.group_id, m.group, "group of {:?}", r.body);
            assert!(!idx.contains(&i), "one message twice in a receive");
            idx.push(i);
        }
        if damaged {
            return;
        }
        for (r, &i) in got.iter().zip(&idx) {
            check_received(q, i, r, now);
        }
        if fifo {
            check_fifo_receive(q, &idx, now);
        } else {
            // The oldest visible messages, in order.
            assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {idx:?}");
            let certain: Vec<usize> = idx.iter().copied().filter(|i| !q.msgs[*i].fuzzy).collect();
            let visible: Vec<usize> = (0..q.msgs.len())
                .filter(|i| !q.msgs[*i].fuzzy && q.msgs[*i].visible(now))
                .collect();
            assert_eq!(
                certain,
                visible[..certain.len().min(visible.len())],
                "not the oldest visible messages"
            );
            if idx.len() < max {
                assert_eq!(certain.len(), visible.len(), "visible messages left behind");
            }
        }
        for (r, &i) in got.iter().zip(&idx) {
            let m = &mut q.msgs[i];
            m.fuzzy = false;
            m.deleted = false;
            m.id = Some(r.message_id.clone());
            m.receive_count = r.receive_count;
            m.first_receive_ms = r.first_receive_timestamp;
            m.visible_at = now + timeout_ms;
            m.handles.push(r.receipt_handle.clone());
            m.receive_unsynced = !fifo;
        }
    }

    /// A received message and the handle to use: (index, handle, is it the newest).
    fn pick_handle(&self, fifo: bool, pick: u8, stale: bool) -> Option<(usize, String, bool)> {
        let q = &self.q[usize::from(fifo)];
        let with: Vec<usize> = (0..q.msgs.len())
            .filter(|i| !q.msgs[*i].handles.is_empty())
            .collect();
        let i = *with.get(usize::from(pick) % with.len().max(1))?;
        let handles = &q.msgs[i].handles;
        let h = if stale && handles.len() > 1 {
            handles.len() - 2
        } else {
            handles.len() - 1
        };
        Some((i, handles[h].clone(), h + 1 == handles.len()))
    }

    fn delete(&mut self, fifo: bool, pick: u8, stale: bool) {
        let Some(queue) = self.queue(fifo).cloned() else {
            return;
        };
        let Some((i, handle, newest)) = self.pick_handle(fifo, pick, stale) else {
            return;
        };
        let now = self.now();
        let result = queue.delete(&handle);
        if self.damaged {
            return;
        }
        let m = &mut self.q[usize::from(fifo)].msgs[i];
        if m.fuzzy {
            if let Err(e) = &result
                && !matches!(e, Error::MessageNotInflight(_))
            {
                self.failed("delete", e);
            }
            return;
        }
        let in_flight = newest && !m.deleted && m.visible_at > now;
        match result {
            Ok(()) if fifo => {
                assert!(
                    in_flight,
                    "a FIFO delete of a message not in flight succeeded"
                );
                m.deleted = true;
            }
            Ok(()) => {
                if newest {
                    m.deleted = true;
                }
            }
            Err(Error::MessageNotInflight(_)) if fifo && !in_flight => {}
            Err(e) => {
                m.fuzzy = true;
                self.failed("delete", &e);
            }
        }
    }

    fn visibility(&mut self, fifo: bool, pick: u8, stale: bool, timeout: u8) {
        let Some(queue) = self.queue(fifo).cloned() else {
            return;
        };
        let Some((i, handle, newest)) = self.pick_handle(fifo, pick, stale) else {
            return;
        };
        let now = self.now();
        let timeout_ms = u64::from(timeout % 64) * 5_000;
        let result = queue.change_visibility(&handle, Duration::from_millis(timeout_ms));
        if self.damaged {
            return;
        }
        let m = &mut self.q[usize::from(fifo)].msgs[i];
        if m.fuzzy {
            if let Err(e) = &result
                && is_fault_error(e)
            {
                self.failed("change_visibility", e);
            }
            return;
        }
        let in_flight = newest && !m.deleted && m.visible_at > now;
        let too_long = now + timeout_ms > m.first_receive_ms + MAX_VISIBILITY_MS;
        match result {
            Ok(()) => {
                assert!(
                    in_flight,
                    "changed the visibility of a message not in flight"
                );
                assert!(
                    !too_long,
                    "a visibility past 12 hours from the first receive"
                );
                m.visible_at = now + timeout_ms;
            }
            Err(Error::MessageNotInflight(_)) if !in_flight => {}
            Err(Error::InvalidArgument(_)) if in_flight && too_long => {}
            Err(e) => {
                m.fuzzy = true;
                self.failed("change_visibility", &e);
            }
        }
    }

    fn purge(&mut self, fifo: bool) {
        let Some(queue) = self.queue(fifo).cloned() else {
            return;
        };
        let result = queue.purge();
        if self.damaged {
            return;
        }
        let q = &mut self.q[usize::from(fifo)];
        match result {
            Ok(()) => {
                for m in &mut q.msgs {
                    m.deleted = true;
                    m.fuzzy = false;
                }
            }
            Err(e) => {
                for m in &mut q.msgs {
                    if !m.deleted {
                        m.fuzzy = true;
                    }
                }
                self.failed("purge", &e);
            }
        }
    }

    fn bit_flip(&mut self, file: u8, at: u32, mask: u8) {
        let files: Vec<_> = self
            .storage
            .files()
            .into_iter()
            .filter(|p| self.storage.contents(p).is_ok_and(|c| !c.is_empty()))
            .collect();
        let Some(path) = files.get(usize::from(file) % files.len().max(1)).cloned() else {
            return;
        };
        let len = self.storage.contents(&path).map_or(0, |c| c.len());
        let pos = usize::try_from(at).unwrap_or(usize::MAX) % len.max(1);
        if self.storage.corrupt(&path, pos, mask.max(1)).is_ok() {
            self.damaged = true;
        }
    }

    /// Long after every delay and timeout: every message not deleted is received (and
    /// then deleted), each exactly as the model has it.
    fn drain(&mut self) {
        if self.damaged {
            return;
        }
        self.clock.advance(13 * 3600 * 1000);
        for fifo in [false, true] {
            let Some(queue) = self.queue(fifo).cloned() else {
                return;
            };
            for _ in 0..200 {
                let before: Vec<usize> = self.q[usize::from(fifo)]
                    .msgs
                    .iter()
                    .map(|m| m.handles.len())
                    .collect();
                self.receive(fifo, 9, None);
                let q = &mut self.q[usize::from(fifo)];
                let received: Vec<usize> = (0..before.len())
                    .filter(|i| q.msgs[*i].handles.len() > before[*i])
                    .collect();
                if received.is_empty() {
                    break;
                }
                for i in received {
                    let m = &mut q.msgs[i];
                    let handle = m.handles.last().expect("just received").clone();
                    queue
                        .delete(&handle)
                        .unwrap_or_else(|e| panic!("deleting {:?} while draining: {e}", m.body));
                    m.deleted = true;
                }
            }
            let left: Vec<&str> = self.q[usize::from(fifo)]
                .msgs
                .iter()
                .filter(|m| !m.deleted && !m.fuzzy)
                .map(|m| m.body.as_str())
                .collect();
            assert!(left.is_empty(), "messages never received: {left:?}");
            // What the queue counts is what it delivers: nothing is left.
            let counts = queue
                .counts()
                .unwrap_or_else(|e| panic!("counting a drained queue: {e}"));
            assert_eq!(
                (counts.visible, counts.in_flight, counts.delayed),
                (0, 0, 0),
                "a drained queue still counts messages"
            );
        }
    }

    /// The whole directory verifies: without damage, with no problem found.
    fn check(&self) {
        let Some(data) = &self.data else {
            return;
        };
        let report = data.check();
        if self.damaged {
            return;
        }
        let report = report.unwrap_or_else(|e| panic!("check failed: {e}"));
        assert!(
            report.problems.is_empty(),
            "check of an undamaged directory: {:?}",
            report.problems
        );
    }
}

/// Checks one received message of a certain state against the model (not fuzzy ones).
fn check_received(q: &QModel, i: usize, r: &ReceivedMessage, now: u64) {
    let m = &q.msgs[i];
    if m.fuzzy {
        return;
    }
    assert!(!m.deleted, "received a deleted message: {:?}", m.body);
    assert!(
        m.visible_at <= now,
        "received a message invisible until {} at {now}: {:?}",
        m.visible_at,
        m.body
    );
    assert_eq!(
        r.receive_count,
        m.receive_count + 1,
        "receive count of {:?}",
        m.body
    );
    let first = if m.first_receive_ms == 0 {
        now
    } else {
        m.first_receive_ms
    };
    assert_eq!(
        r.first_receive_timestamp, first,
        "first receive of {:?}",
        m.body
    );
}

/// FIFO: per group, what is received is the start of the group's messages, from groups with
/// nothing in flight. (How many is not checked: a message the scan passed while it was
/// delayed holds its whole group until its delay ends; every message is received in the end,
/// which the final drain checks.)
fn check_fifo_receive(q: &QModel, idx: &[usize], now: u64) {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in idx {
        let g = q.msgs[i].group.clone().expect("FIFO messages have groups");
        groups.entry(g).or_default().push(i);
    }
    for (g, got) in &groups {
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "group {g} out of order"
        );
        if q.fuzzy_group(g) {
            for &i in got {
                let m = &q.msgs[i];
                assert!(m.fuzzy || !m.deleted, "received a deleted message of {g}");
            }
            continue;
        }
        assert!(
            !q.busy(g, now),
            "received from group {g}, which has a message in flight"
        );
        let pending: Vec<usize> = (0..q.msgs.len())
            .filter(|i| q.msgs[*i].group.as_deref() == Some(g.as_str()) && !q.msgs[*i].deleted)
            .collect();
        assert_eq!(
            *got,
            pending[..got.len().min(pending.len())],
            "group {g}: not the first of its messages"
        );
    }
}

fn child(index: u32, parents: Vec<u32>, start: u128, end: u128) -> MShard {
    MShard {
        index,
        parents,
        start,
        end,
        closed: false,
        records: Vec::new(),
    }
}

type MapSummary = Vec<(String, Option<String>, Option<String>, u128, u128, bool)>;

fn summary(shards: &[MShard]) -> MapSummary {
    shards
        .iter()
        .map(|s| {
            (
                shard_id(s.index),
                s.parents.first().map(|p| shard_id(*p)),
                s.parents.get(1).map(|p| shard_id(*p)),
                s.start,
                s.end,
                !s.closed,
            )
        })
        .collect()
}

fn described(desc: &crate::stream::StreamDescription) -> MapSummary {
    desc.shards
        .iter()
        .map(|s| {
            (
                s.shard_id.clone(),
                s.parent_shard_id.clone(),
                s.adjacent_parent_shard_id.clone(),
                s.starting_hash_key,
                s.ending_hash_key,
                s.open,
            )
        })
        .collect()
}

/// The engine against the model; see the module documentation.
pub fn service_model(input: ServiceInput) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(START_MS);
    let options = DirOptions {
        queue_segment_bytes: input.small_segments.then_some(1024),
        queue_maintenance_every: input.small_segments.then_some(4),
        exclusive: false,
    };
    let shared: SharedStorage = Arc::new(storage.clone());
    let data = DataDir::open_with_options(ROOT, shared, clock.clone(), options.clone())
        .expect("a fresh data directory opens");
    let shard_count = 1 + u32::from(input.shards % 3);
    data.create_stream(&CreateStream::new(STREAM, shard_count))
        .expect("create the stream");
    data.create_queue(STD, &QueueAttributes::defaults(false))
        .expect("create the standard queue");
    let fifo_delay = Duration::from_secs(u64::from(input.fifo_delay % 3) * 10);
    let mut fifo_attributes = QueueAttributes::defaults(true);
    fifo_attributes.delay = fifo_delay;
    data.create_queue(FIFO, &fifo_attributes)
        .expect("create the FIFO queue");
    drop(data);
    let shards = crate::stream::uniform_ranges(shard_count)
        .into_iter()
        .zip(0..)
        .map(|((start, end), index)| child(index, Vec::new(), start, end))
        .collect();
    let mut h = Svc {
        storage,
        clock,
        options,
        data: None,
        stream: None,
        std: None,
        fifo: None,
        s: SModel {
            shards,
            next_index: shard_count,
            ..SModel::default()
        },
        q: [
            QModel::default(),
            QModel {
                fifo: true,
                delay_ms: ms(fifo_delay),
                ..QModel::default()
            },
        ],
        faults_armed: false,
        then: CrashKind::Process,
        damaged: false,
        counter: 0,
    };
    assert!(h.q[1].fifo);
    assert!(h.open());
    for op in input.ops.iter().take(48) {
        match op {
            SvcOp::Put(specs) => h.put(specs),
            SvcOp::Get { shard, from, limit } => h.get(*shard, *from, *limit),
            SvcOp::ReadAll => h.read_all(),
            SvcOp::Split { shard, at } => h.reshard(Some(*at), (*shard, 0)),
            SvcOp::Merge(a, b) => h.reshard(None, (*a, *b)),
            SvcOp::Send { fifo, msgs } => h.send(*fifo, msgs),
            SvcOp::Receive { fifo, max, timeout } => h.receive(*fifo, *max, *timeout),
            SvcOp::Delete { fifo, pick, stale } => h.delete(*fifo, *pick, *stale),
            SvcOp::Visibility {
                fifo,
                pick,
                stale,
                timeout,
            } => h.visibility(*fifo, *pick, *stale, *timeout),
            SvcOp::Purge { fifo } => h.purge(*fifo),
            SvcOp::Advance(step) => h.clock.advance(u64::from(*step) * 10),
            SvcOp::Reopen => {
                if !h.crash(None) {
                    return;
                }
            }
            SvcOp::Crash(kind) => {
                if !h.crash(Some(*kind)) {
                    return;
                }
            }
            SvcOp::Fault(fault, then) => {
                arm(&h.storage, *fault);
                h.faults_armed = true;
                h.then = *then;
            }
            SvcOp::BitFlip { file, at, mask } => {
                h.bit_flip(*file, *at, *mask);
                if !h.crash(None) {
                    return;
                }
            }
        }
        if h.data.is_none() {
            return;
        }
    }
    // Settle everything: a reopen, every shard read in full, every visible message received.
    if !h.crash(None) {
        return;
    }
    h.read_all();
    h.drain();
    h.check();
}

/// [`service_model`] on raw bytes.
pub fn service_model_bytes(data: &[u8]) {
    if let Some(input) = super::decode_input(data) {
        service_model(input);
    }
}
