//! Consumer groups: the local equivalent of the Kinesis Client Library.
//!
//! ```text
//! <stream>/consumers/<group>/<shard:012>.checkpoint   where the group is in a shard (metadata file)
//! <stream>/consumers/<group>/<shard:012>.lease        held (flock) by the worker reading that shard
//! <stream>/consumers/<group>/workers/<id>.lock         held by each live worker
//! ```
//!
//! A worker leases shards by taking their lease file's OS lock, so a worker that dies loses
//! its leases that instant and another takes them over from the last checkpoint. A shard is
//! leased only once every parent is finished (checkpointed to its end), which keeps each
//! partition key in order across reshards. Each worker takes at most its fair share of the
//! shards that can be read now (counted over the live workers), and gives back the surplus
//! when more workers join.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ShardIterator, StartPosition, Stream, StreamRecord};
use crate::error::{Error, Result};
use crate::meta;
use crate::names::validate_stream_name;
use crate::storage::LockGuard;

pub(super) const CHECKPOINT_MAGIC: [u8; 8] = *b"SHOALCKP";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    /// The next offset to process.
    next_offset: u64,
    /// The shard is closed and every record of it was processed.
    ended: bool,
}

/// Decodes a checkpoint file's bytes as a consumer does, for the fuzz targets: (next offset,
/// ended).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_checkpoint(bytes: &[u8], path: &std::path::Path) -> Result<(u64, bool)> {
    meta::decode::<Checkpoint>(CHECKPOINT_MAGIC, bytes, path).map(|c| (c.next_offset, c.ended))
}

/// Encodes a checkpoint file as a consumer writes it, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn encode_checkpoint(next_offset: u64, ended: bool) -> Result<Vec<u8>> {
    meta::encode(CHECKPOINT_MAGIC, &Checkpoint { next_offset, ended })
}

struct Lease {
    _guard: Box<dyn LockGuard>,
    it: ShardIterator,
    /// One past the last record handed out from this shard.
    handed_out: u64,
    /// One past the last record checkpointed (by this worker, or before it took the lease).
    checkpointed: u64,
}

/// Records read from one leased shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerBatch {
    /// The shard.
    pub shard: u32,
    /// The records, in order. Checkpoint each (or the last) once processed.
    pub records: Vec<StreamRecord>,
}

/// One worker of a consumer group.
pub struct Consumer {
    stream: Stream,
    group_dir: PathBuf,
    _registration: Box<dyn LockGuard>,
    leases: BTreeMap<u32, Lease>,
    cursor: u32,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_dir", &self.group_dir)
            .field("leases", &self.leases.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// Joins consumer group `group` (1-128 of `[A-Za-z0-9_.-]`) as a new worker.
    pub fn consumer(self, group: &str) -> Result<Consumer> {
        validate_stream_name(group).map_err(|_| {
            Error::InvalidArgument(format!("invalid consumer group name {group:?}"))
        })?;
        let group_dir = super::stream_dir(&self.dir, &self.name)
            .join("consumers")
            .join(group);
        let workers = group_dir.join("workers");
        self.dir.ensure_dir(&workers)?;
        // A worker id unique among live and dead workers of this machine.
        let id = format!("{}-{}", std::process::id(), self.dir.clock.now_ms());
        let registration = self
            .dir
            .storage
            .lock(&workers.join(format!("{id}.lock")), false)
            .map_err(|e| Error::io("lock", &workers, e))?;
        Ok(Consumer {
            stream: self,
            group_dir,
            _registration: registration,
            leases: BTreeMap::new(),
            cursor: 0,
        })
    }
}

impl Consumer {
    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Shards this worker holds, in index order.
    pub fn leased(&self) -> Vec<u32> {
        self.leases.keys().copied().collect()
    }

    fn checkpoint_path(&self, shard: u32) -> PathBuf {
        self.group_dir.join(format!("{shard:012}.checkpoint"))
    }

    fn read_checkpoint(&self, shard: u32) -> Result<Option<Checkpoint>> {
        meta::read(
            &*self.stream.dir.storage,
            &self.checkpoint_path(shard),
            CHECKPOINT_MAGIC,
        )
    }

    fn finished(&self, shard: u32) -> Result<bool> {
        Ok(self.read_checkpoint(shard)?.is_some_and(|c| c.ended))
    }

    /// Live workers of the group, this one included; removes registrations of dead ones.
    fn live_workers(&self) -> Result<usize> {
        let storage = &*self.stream.dir.storage;
        let dir = self.group_dir.join("workers");
        let names = storage
            .list_dir(&dir)
            .map_err(|e| Error::io("list", &dir, e))?;
        let mut live = 0;
        for name in names {
            let path = dir.join(&name);
            if path.extension().is_none_or(|e| e != "lock") {
                continue;
            }
            // Nobody holds it: that worker is gone. Ours is held through another descriptor,
            // so taking it here fails and it counts as live.
            match storage.lock(&path, false) {
                Ok(_dead) => {
                    let _ = storage.remove_file(&path);
                }
                Err(_) => live += 1,
            }
        }
        Ok(live.max(1))
    }

    /// Takes and gives back leases: drops finished shards, takes shards whose parents are all
    /// finished up to this worker's fair share, and releases the surplus.
    pub fn rebalance(&mut self) -> Result<()> {
        let meta = self.stream.reload()?;
        let mut eligible = Vec::new();
        for shard in &meta.shards {
            if self.finished(shard.index)? {
                self.leases.remove(&shard.index);
                continue;
            }
            let mut parents_done = true;
            for parent in &shard.parents {
                parents_done &= self.finished(*parent)?;
            }
            if parents_done {
                eligible.push(shard.index);
            }
        }
        let workers = self.live_workers()?;
        let share = eligible.len().div_ceil(workers).max(1);
        while self.leases.len() > share {
            // Give back the newest shards; others pick them up from our checkpoints.
            let Some((&last, _)) = self.leases.iter().next_back() else {
                break;
            };
            self.leases.remove(&last);
        }
        for shard in eligible {
            if self.leases.len() >= share {
                break;
            }
            if self.leases.contains_key(&shard) {
                continue;
            }
            let path = self.group_dir.join(format!("{shard:012}.lease"));
            let Ok(guard) = self.stream.dir.storage.lock(&path, false) else {
                continue;
            };
            // Read the checkpoint only now that the lease is ours: the last holder may have
            // written it just before letting go.
            let it = match self.read_checkpoint(shard)? {
                Some(c) if c.ended => continue,
                Some(c) => ShardIterator {
                    shard,
                    next_offset: c.next_offset,
                },
                None => self
                    .stream
                    .shard_iterator(shard, StartPosition::TrimHorizon)?,
            };
            self.leases.insert(
                shard,
                Lease {
                    _guard: guard,
                    it,
                    handed_out: it.next_offset,
                    checkpointed: it.next_offset,
                },
            );
        }
        Ok(())
    }

    /// Reads up to `limit` records from the next leased shard that has any (round robin).
    /// A leased shard found closed and fully processed is checkpointed as finished and
    /// released. `None` when no leased shard has records now.
    pub fn next_batch(&mut self, limit: usize) -> Result<Option<ConsumerBatch>> {
        let shards: Vec<u32> = self
            .leases
            .range(self.cursor..)
            .chain(self.leases.range(..self.cursor))
            .map(|(s, _)| *s)
            .collect();
        for shard in shards {
            let Some(lease) = self.leases.get_mut(&shard) else {
                continue;
            };
            let mut it = lease.it;
            let got = self.stream.get_records(&mut it, limit)?;
            if got.records.is_empty() {
                // Finished only once everything handed out is checkpointed: records read
                // and never checkpointed go to the next worker again, as the ended
                // checkpoint would skip them.
                if got.shard_ended && lease.checkpointed >= lease.handed_out {
                    self.write_checkpoint(
                        shard,
                        Checkpoint {
                            next_offset: it.next_offset,
                            ended: true,
                        },
                    )?;
                    self.leases.remove(&shard);
                }
                continue;
            }
            if let Some(lease) = self.leases.get_mut(&shard) {
                lease.it = it;
                lease.handed_out = it.next_offset;
            }
            self.cursor = shard + 1;
            return Ok(Some(ConsumerBatch {
                shard,
                records: got.records,
            }));
        }
        Ok(None)
    }

    /// Records that everything in `shard` up to and including the record with
    /// `sequence_number` is processed.
    pub fn checkpoint(&mut self, shard: u32, sequence_number: &str) -> Result<()> {
        let seq = super::SequenceNumber::parse(sequence_number)?;
        if seq.shard != shard || !self.leases.contains_key(&shard) {
            return Err(Error::Conflict(format!(
                "this worker does not hold the lease of {}",
                super::shard_id(shard)
            )));
        }
        self.write_checkpoint(
            shard,
            Checkpoint {
                next_offset: seq.offset + 1,
                ended: false,
            },
        )?;
        if let Some(lease) = self.leases.get_mut(&shard) {
            lease.checkpointed = lease.checkpointed.max(seq.offset + 1);
        }
        Ok(())
    }

    fn write_checkpoint(&self, shard: u32, checkpoint: Checkpoint) -> Result<()> {
        meta::write(
            &*self.stream.dir.storage,
            &self.checkpoint_path(shard),
            CHECKPOINT_MAGIC,
            &checkpoint,
        )
    }

    /// True when every shard is finished or checkpointed up to its newest record (whoever
    /// holds it): a worker without `--follow` stops then.
    pub fn caught_up(&self) -> Result<bool> {
        let meta = self.stream.reload()?;
        for shard in &meta.shards {
            let checkpoint = self.read_checkpoint(shard.index)?;
            if checkpoint.is_some_and(|c| c.ended) {
                continue;
            }
            let reader = self.stream.reader(shard.index)?;
            let next = checkpoint
                .map_or_else(|| self.stream.trim_horizon(&reader), |c| Ok(c.next_offset))?;
            let end = reader.next_offset()?;
            if next < end {
                return Ok(false);
            }
            // A closed shard with nothing left still has to be marked finished (by its
            // lease holder) before its children can start.
            if shard.closed {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
