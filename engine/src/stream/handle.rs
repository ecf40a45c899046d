//! An open stream: puts, iterators and reads, resharding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use super::{
    DurabilityMode, GetRecordsOutput, KIND_RECORD, MAX_PUT_RECORDS, MAX_SHARDS, PutOutcome,
    PutRecord, PutResult, SequenceNumber, ShardIterator, ShardMeta, StartPosition,
    StreamDescription, StreamMeta, StreamRecord, create_shard_log, describe, hash_partition_key,
    limits, load_meta, lock_streams, not_found, open_log, shard_dir, shard_id, uniform_ranges,
    write_meta,
};
use crate::datadir::DirInner;
use crate::error::{Error, Result};
use crate::log::{Entry, Log, LogReader, ReadLimit, Retention};

/// Shards to close, and the shards to create as (parents, first hash key, last hash key).
type ReshardPlan = (Vec<u32>, Vec<(Vec<u32>, u128, u128)>);

/// An open stream: puts, iterators, reads, resharding. Caches shard logs; share it between
/// threads.
#[derive(Debug)]
pub struct Stream {
    pub(super) dir: Arc<DirInner>,
    pub(super) name: String,
    pub(super) meta: RwLock<Arc<StreamMeta>>,
    pub(super) writers: Mutex<HashMap<u32, Arc<Log>>>,
    pub(super) readers: Mutex<HashMap<u32, Arc<LogReader>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn meta(&self) -> Arc<StreamMeta> {
        Arc::clone(&self.meta.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn reload(&self) -> Result<Arc<StreamMeta>> {
        let meta = Arc::new(load_meta(&self.dir, &self.name)?);
        *self.meta.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&meta);
        Ok(meta)
    }

    /// Describes the stream as of now.
    pub fn describe(&self) -> Result<StreamDescription> {
        let meta = self.reload()?;
        describe(&self.dir, &meta)
    }

    fn writer(&self, meta: &StreamMeta, index: u32) -> Result<Arc<Log>> {
        let mut writers = lock(&self.writers);
        if let Some(log) = writers.get(&index) {
            return Ok(Arc::clone(log));
        }
        // Opening a log makes whatever of it is missing: first make sure the stream is still
        // the one this handle knows, not deleted by another process (nor made again since).
        if load_meta(&self.dir, &self.name)?.created_ms != meta.created_ms {
            return Err(not_found(&self.name));
        }
        let log = Arc::new(open_log(&self.dir, meta, index)?);
        // Retention is enforced by writers, whole segments at a time; readers also skip
        // expired records, so nothing expired is ever returned.
        log.enforce_retention(&Retention {
            max_age: Some(Duration::from_millis(meta.retention_ms)),
            max_bytes: None,
            below_offset: None,
        })?;
        writers.insert(index, Arc::clone(&log));
        Ok(log)
    }

    /// A shard log found deleted by another process means the stream is gone.
    fn gone(&self, e: Error) -> Error {
        e.when_log_gone(|| not_found(&self.name))
    }

    pub(super) fn reader(&self, index: u32) -> Result<Arc<LogReader>> {
        let mut readers = lock(&self.readers);
        if let Some(reader) = readers.get(&index) {
            return Ok(Arc::clone(reader));
        }
        let reader = Arc::new(super::open_reader(&self.dir, &self.meta(), index)?);
        readers.insert(index, Arc::clone(&reader));
        Ok(reader)
    }

    /// Checks a record before anything is written.
    pub fn validate(&self, record: &PutRecord<'_>) -> Result<()> {
        check_record(record, self.meta().max_record_bytes)
    }

    /// Puts records: each goes to the open shard owning its hash key; records for one shard
    /// are appended as one atomic batch. At most [`MAX_PUT_RECORDS`] per call. Every record is
    /// validated before anything is written.
    pub fn put_records(&self, records: &[PutRecord<'_>]) -> PutOutcome {
        let mut outcome = PutOutcome {
            results: Vec::new(),
            error: None,
        };
        if records.len() > MAX_PUT_RECORDS {
            outcome.error = Some(Error::InvalidArgument(format!(
                "at most {MAX_PUT_RECORDS} records per put, not {}",
                records.len()
            )));
            return outcome;
        }
        let max_record_bytes = self.meta().max_record_bytes;
        if let Some(e) = records
            .iter()
            .find_map(|r| check_record(r, max_record_bytes).err())
        {
            outcome.error = Some(e);
            return outcome;
        }
        let mut results: Vec<Option<PutResult>> = vec![None; records.len()];
        if let Err(e) = self.put_routed(records, &mut results) {
            outcome.error = Some(self.gone(e));
        }
        outcome.results = results.into_iter().map_while(|r| r).collect();
        if outcome.error.is_none() && outcome.results.len() < records.len() {
            outcome.error = Some(Error::Conflict("records were not all stored".into()));
        }
        outcome
    }

    fn put_routed(
        &self,
        records: &[PutRecord<'_>],
        results: &mut [Option<PutResult>],
    ) -> Result<()> {
        // A shard found sealed means the map changed (or a reshard died halfway): look again,
        // a bounded number of times.
        for attempt in 0..4 {
            let meta = if attempt == 0 {
                self.meta()
            } else {
                self.reload()?
            };
            let groups = group_by_shard(&meta, records, results)?;
            if groups.is_empty() {
                return Ok(());
            }
            if meta.enforce_limits {
                self.charge_writes(records, &groups)?;
            }
            // One batch per shard. When each waits for its fsync, the shards' appends run in
            // parallel so the fsyncs overlap instead of queueing one behind the other.
            let append = |shard: u32, indexes: &[usize]| -> Result<u64> {
                let log = self.writer(&meta, shard)?;
                let entries: Vec<Entry<'_>> = indexes
                    .iter()
                    .map(|&i| Entry {
                        kind: KIND_RECORD,
                        header: records[i].partition_key.as_bytes(),
                        payload: records[i].data,
                    })
                    .collect();
                log.append(&entries).map(|appended| appended.first_offset)
            };
            let parallel = groups.len() > 1 && meta.durability == DurabilityMode::Always;
            let outcomes: Vec<(u32, Vec<usize>, Result<u64>)> = if !parallel {
                groups
                    .into_iter()
                    .map(|(shard, indexes)| {
                        let outcome = append(shard, &indexes);
                        (shard, indexes, outcome)
                    })
                    .collect()
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = groups
                        .into_iter()
                        .map(|(shard, indexes)| {
                            scope.spawn(move || {
                                let outcome = append(shard, &indexes);
                                (shard, indexes, outcome)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                        })
                        .collect()
                })
            };
            let mut sealed = false;
            let mut failure = None;
            for (shard, indexes, outcome) in outcomes {
                match outcome {
                    Ok(first_offset) => {
                        for (k, &i) in indexes.iter().enumerate() {
                            results[i] = Some(PutResult {
                                shard,
                                sequence: SequenceNumber {
                                    shard,
                                    offset: first_offset + k as u64,
                                },
                            });
                        }
                    }
                    Err(Error::Sealed { .. }) => {
                        lock(&self.writers).remove(&shard);
                        sealed = true;
                    }
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if !sealed {
                return Ok(());
            }
            if attempt >= 1 {
                self.repair_interrupted_reshard()?;
            }
        }
        Err(Error::Conflict(
            "the stream is being resharded; try again".into(),
        ))
    }

    /// Charges every shard's write budget for its group, all or nothing: one shard over its
    /// limit throttles the whole put before anything is written.
    fn charge_writes(
        &self,
        records: &[PutRecord<'_>],
        groups: &BTreeMap<u32, Vec<usize>>,
    ) -> Result<()> {
        let demand = |indexes: &Vec<usize>| limits::Demand::Write {
            records: indexes.len() as u64,
            bytes: indexes
                .iter()
                .map(|&i| (records[i].data.len() + records[i].partition_key.len()) as u64)
                .sum(),
        };
        let mut charged: Vec<(u32, limits::Demand)> = Vec::new();
        for (&shard, indexes) in groups {
            let wanted = demand(indexes);
            let dir = shard_dir(&self.dir, &self.name, shard);
            if let Err(e) = limits::charge(&self.dir, &dir, wanted, false) {
                for (shard, done) in charged {
                    let dir = shard_dir(&self.dir, &self.name, shard);
                    let _ = limits::charge(&self.dir, &dir, done, true);
                }
                return Err(e);
            }
            charged.push((shard, wanted));
        }
        Ok(())
    }

    /// Unseals shards the map says are open: a reshard sealed them and died before writing the
    /// new map, so nothing took their place.
    fn repair_interrupted_reshard(&self) -> Result<()> {
        let _lock = lock_streams(&self.dir, &self.name)?;
        let meta = self.reload()?;
        for shard in meta.shards.iter().filter(|s| !s.closed) {
            let log = self.writer(&meta, shard.index)?;
            if log.is_sealed() || log.reader().sealed_at()?.is_some() {
                log.unseal()?;
            }
        }
        Ok(())
    }

    /// Indexes of every shard, open and closed, parents before children.
    pub fn shard_indexes(&self) -> Result<Vec<u32>> {
        Ok(self.reload()?.shards.iter().map(|s| s.index).collect())
    }

    /// The shards `index` was made from.
    pub fn parents(&self, index: u32) -> Result<Vec<u32>> {
        Ok(self.meta().shard(index)?.parents.clone())
    }

    /// The shards made from `index`.
    pub fn children(&self, index: u32) -> Result<Vec<u32>> {
        let meta = self.reload()?;
        Ok(meta
            .shards
            .iter()
            .filter(|s| s.parents.contains(&index))
            .map(|s| s.index)
            .collect())
    }

    fn retention_cutoff(&self) -> u64 {
        self.dir
            .clock
            .now_ms()
            .saturating_sub(self.meta().retention_ms)
    }

    /// The first offset of a shard that retention has not expired.
    pub(super) fn trim_horizon(&self, reader: &LogReader) -> Result<u64> {
        let by_time = reader.offset_at_time(self.retention_cutoff())?;
        Ok(by_time.max(reader.start_offset()?))
    }

    /// An iterator over one shard.
    pub fn shard_iterator(&self, shard: u32, start: StartPosition) -> Result<ShardIterator> {
        let meta = self.reload()?;
        meta.shard(shard)?;
        let reader = self.reader(shard)?;
        let offset = match start {
            StartPosition::TrimHorizon => self.trim_horizon(&reader)?,
            StartPosition::Latest => reader.next_offset()?,
            StartPosition::AtSequence(seq) | StartPosition::AfterSequence(seq) => {
                if seq.shard != shard {
                    return Err(Error::InvalidArgument(format!(
                        "sequence number {} belongs to {}, not {}",
                        seq.encode(),
                        shard_id(seq.shard),
                        shard_id(shard)
                    )));
                }
                let after = matches!(start, StartPosition::AfterSequence(_));
                seq.offset + u64::from(after)
            }
            StartPosition::AtTimestamp(ms) => reader.offset_at_time(ms)?,
        };
        Ok(ShardIterator {
            shard,
            next_offset: offset,
        })
    }

    /// Reads up to `limit` records at the iterator and advances it. Expired records are never
    /// returned: an iterator behind the trim horizon moves up to it.
    pub fn get_records(&self, it: &mut ShardIterator, limit: usize) -> Result<GetRecordsOutput> {
        let reader = self.reader(it.shard)?;
        let enforce = self.meta().enforce_limits;
        let limit_dir = shard_dir(&self.dir, &self.name, it.shard);
        if enforce {
            // Refused when this second's budget is spent; the read itself is charged below.
            limits::charge(&self.dir, &limit_dir, limits::Demand::ReadAdmit, false)?;
        }
        let horizon = self.trim_horizon(&reader)?;
        it.next_offset = it.next_offset.max(horizon);
        let cutoff = self.retention_cutoff();
        let batch = match reader.read(it.next_offset, ReadLimit::records(limit.max(1))) {
            Ok(batch) => batch,
            Err(Error::OffsetTrimmed { start, .. }) => {
                it.next_offset = start;
                reader.read(start, ReadLimit::records(limit.max(1)))?
            }
            Err(e) => return Err(e),
        };
        let id = shard_id(it.shard);
        let mut records = Vec::with_capacity(batch.len());
        for record in batch.iter() {
            if record.timestamp_ms < cutoff || record.kind != KIND_RECORD {
                continue;
            }
            records.push(StreamRecord {
                shard_id: id.clone(),
                sequence_number: SequenceNumber {
                    shard: it.shard,
                    offset: record.offset,
                }
                .encode(),
                partition_key: String::from_utf8_lossy(record.header).into_owned(),
                arrival_timestamp_ms: record.timestamp_ms,
                data: record.payload.to_vec(),
            });
        }
        it.next_offset = batch.next_offset();
        if enforce {
            let bytes = records
                .iter()
                .map(|r| (r.data.len() + r.partition_key.len()) as u64)
                .sum();
            limits::charge(
                &self.dir,
                &limit_dir,
                limits::Demand::ReadCharge { bytes },
                false,
            )?;
        }
        let latest = reader.next_offset()?;
        let behind = match records.last() {
            Some(last) if it.next_offset < latest => self
                .dir
                .clock
                .now_ms()
                .saturating_sub(last.arrival_timestamp_ms),
            _ => 0,
        };
        let shard_ended = match reader.sealed_at()? {
            // Sealed by a reshard that died before writing the map that closes the shard
            // (the next put undoes it) is not ended: ask the map.
            Some(end) if it.next_offset >= end => {
                self.reload()?.shard(it.shard).is_ok_and(|s| s.closed)
            }
            _ => false,
        };
        Ok(GetRecordsOutput {
            records,
            millis_behind_latest: behind,
            shard_ended,
        })
    }

    /// Splits an open shard in two at `at` (the second child's first hash key; default the
    /// middle of its range).
    pub fn split_shard(&self, shard: u32, at: Option<u128>) -> Result<Vec<u32>> {
        self.reshard(|meta| {
            let parent = meta.shard(shard)?.clone();
            if parent.closed {
                return Err(Error::Conflict(format!("{} is closed", shard_id(shard))));
            }
            let at = at.unwrap_or(parent.start_hash + (parent.end_hash - parent.start_hash) / 2 + 1);
            if at <= parent.start_hash || at > parent.end_hash {
                return Err(Error::InvalidArgument(format!(
                    "split point {at} is not inside {}'s range {}..={} (it must be above the first key)",
                    shard_id(shard),
                    parent.start_hash,
                    parent.end_hash
                )));
            }
            Ok((
                vec![shard],
                vec![
                    (vec![shard], parent.start_hash, at - 1),
                    (vec![shard], at, parent.end_hash),
                ],
            ))
        })
    }

    /// Merges two open shards with adjacent hash key ranges into one.
    pub fn merge_shards(&self, shard: u32, adjacent: u32) -> Result<Vec<u32>> {
        self.reshard(|meta| {
            let a = meta.shard(shard)?.clone();
            let b = meta.shard(adjacent)?.clone();
            if a.closed || b.closed {
                return Err(Error::Conflict("both shards must be open to merge".into()));
            }
            let (low, high) = if a.start_hash < b.start_hash {
                (&a, &b)
            } else {
                (&b, &a)
            };
            if low.end_hash.checked_add(1) != Some(high.start_hash) {
                return Err(Error::InvalidArgument(format!(
                    "{} and {} are not adjacent",
                    shard_id(shard),
                    shard_id(adjacent)
                )));
            }
            Ok((
                vec![shard, adjacent],
                vec![(vec![shard, adjacent], low.start_hash, high.end_hash)],
            ))
        })
    }

    /// Replaces every open shard with `count` shards of equal ranges (like UpdateShardCount
    /// with uniform scaling). Each new shard's parents are the old shards its range overlaps.
    pub fn scale(&self, count: u32) -> Result<Vec<u32>> {
        if count == 0 || count > MAX_SHARDS {
            return Err(Error::InvalidArgument(format!(
                "shard count must be from 1 to {MAX_SHARDS}, not {count}"
            )));
        }
        self.reshard(|meta| {
            let open: Vec<&ShardMeta> = meta.shards.iter().filter(|s| !s.closed).collect();
            let children = uniform_ranges(count)
                .into_iter()
                .map(|(start, end)| {
                    let parents = open
                        .iter()
                        .filter(|s| s.start_hash <= end && start <= s.end_hash)
                        .map(|s| s.index)
                        .collect();
                    (parents, start, end)
                })
                .collect();
            Ok((open.iter().map(|s| s.index).collect(), children))
        })
    }

    /// The reshard protocol: under the streams lock, seal the parents (no process can append
    /// to them afterwards), create the children's logs, then write the new map.
    fn reshard(&self, plan: impl FnOnce(&StreamMeta) -> Result<ReshardPlan>) -> Result<Vec<u32>> {
        let _lock = lock_streams(&self.dir, &self.name)?;
        let mut meta = (*self.reload()?).clone();
        let (parents, children) = plan(&meta)?;
        let open_after =
            meta.shards.iter().filter(|s| !s.closed).count() - parents.len() + children.len();
        if open_after > MAX_SHARDS as usize {
            return Err(Error::InvalidArgument(format!(
                "a stream may have at most {MAX_SHARDS} open shards"
            )));
        }
        for &parent in &parents {
            self.writer(&meta, parent)?.seal()?;
            lock(&self.writers).remove(&parent);
        }
        let now = self.dir.clock.now_ms();
        let mut created = Vec::new();
        for (parent_list, start_hash, end_hash) in children {
            let index = meta.next_shard_index;
            meta.next_shard_index += 1;
            create_shard_log(&self.dir, &meta, index)?;
            meta.shards.push(ShardMeta {
                index,
                parents: parent_list,
                start_hash,
                end_hash,
                closed: false,
                created_ms: now,
            });
            created.push(index);
        }
        for shard in meta
            .shards
            .iter_mut()
            .filter(|s| parents.contains(&s.index))
        {
            shard.closed = true;
        }
        write_meta(&self.dir, &meta)?;
        *self.meta.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(meta);
        Ok(created)
    }
}

/// Checks a record's partition key and size against the stream's largest record.
fn check_record(record: &PutRecord<'_>, max_record_bytes: u32) -> Result<()> {
    let chars = record.partition_key.chars().count();
    if chars == 0 || chars > 256 {
        return Err(Error::InvalidArgument(format!(
            "partition key must be 1 to 256 characters, not {chars}"
        )));
    }
    let size = record.partition_key.len() as u64 + record.data.len() as u64;
    let max = u64::from(max_record_bytes);
    if size > max {
        return Err(Error::RecordTooLarge { size, max });
    }
    Ok(())
}

/// The records not yet stored (`results[i]` still `None`), grouped by the open shard owning
/// each one's hash key.
fn group_by_shard(
    meta: &StreamMeta,
    records: &[PutRecord<'_>],
    results: &[Option<PutResult>],
) -> Result<BTreeMap<u32, Vec<usize>>> {
    // With one open shard owning every hash key, no key needs hashing.
    let only = meta.only_open_shard().map(|s| s.index);
    // Puts often repeat a key record after record: hash each run of one key once.
    let mut last: Option<(&str, u128)> = None;
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, record) in records.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        let shard = match only {
            Some(index) => index,
            None => {
                let hash = match (record.explicit_hash_key, last) {
                    (Some(hash), _) => hash,
                    (None, Some((key, hash))) if key == record.partition_key => hash,
                    (None, _) => {
                        let hash = hash_partition_key(record.partition_key);
                        last = Some((record.partition_key, hash));
                        hash
                    }
                };
                let owner = meta.open_shard_for(hash).ok_or_else(|| {
                    Error::Conflict(format!("no open shard owns hash key {hash}"))
                })?;
                owner.index
            }
        };
        groups.entry(shard).or_default().push(i);
    }
    Ok(groups)
}
