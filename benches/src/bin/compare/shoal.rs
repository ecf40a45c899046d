//! shoal through its engine API (the `DataDir` facade), as an application embedding it would.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use shoal_engine::clock::SystemClock;
use shoal_engine::durability::DurabilityMode;
use shoal_engine::queue::{Queue, QueueAttributes, Receive, SendMessage};
use shoal_engine::storage::FsStorage;
use shoal_engine::stream::{CreateStream, PutRecord, ShardIterator, StartPosition, Stream};
use shoal_engine::{DataDir, DirOptions};

use crate::api::{Level, QueueClient, StreamClient, System};

pub struct Shoal {
    dir: DataDir,
    exclusive: bool,
}

impl Shoal {
    /// `exclusive`: the process owns the directory (`DirOptions::exclusive`, as a server
    /// would), so operations skip the cross-process lock; otherwise the default, where any
    /// number of processes (CLI, scripts) may share the queues.
    pub fn open(root: &Path, exclusive: bool) -> Result<Self> {
        let options = DirOptions {
            exclusive,
            ..DirOptions::default()
        };
        let dir = DataDir::open_with_options(
            root,
            Arc::new(FsStorage::new()),
            Arc::new(SystemClock),
            options,
        )?;
        Ok(Shoal { dir, exclusive })
    }
}

fn mode(level: Level) -> DurabilityMode {
    match level {
        Level::Fsync => DurabilityMode::Always,
        Level::NoFsync => DurabilityMode::Never,
    }
}

pub const FSYNC_NOTE: &str = "durability `always` (the default): fdatasync before the call returns; concurrent writers share one (group commit)";
pub const NOFSYNC_NOTE: &str = "durability `never`: written to the OS before the call returns (survives a crash of the process, not of the machine); no fsync";

impl System for Shoal {
    fn name(&self) -> &'static str {
        if self.exclusive {
            "shoal (engine API, exclusive)"
        } else {
            crate::SHOAL
        }
    }

    fn durability(&self, level: Level) -> Option<&'static str> {
        Some(match level {
            Level::Fsync => FSYNC_NOTE,
            Level::NoFsync => NOFSYNC_NOTE,
        })
    }

    fn queue(
        &self,
        level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn QueueClient>>> {
        Some((|| {
            if create {
                let attributes = QueueAttributes {
                    durability: mode(level),
                    ..QueueAttributes::defaults(false)
                };
                self.dir.create_queue(name, &attributes)?;
            }
            let queue = self.dir.queue(name)?;
            Ok(Box::new(ShoalQueue { queue }) as Box<dyn QueueClient>)
        })())
    }

    fn stream(
        &self,
        level: Level,
        name: &str,
        create: bool,
    ) -> Option<Result<Box<dyn StreamClient>>> {
        Some((|| {
            if create {
                let mut request = CreateStream::new(name, 1);
                request.durability = mode(level);
                self.dir.create_stream(&request)?;
            }
            let stream = self.dir.stream(name)?;
            let it = stream.shard_iterator(0, StartPosition::TrimHorizon)?;
            Ok(Box::new(ShoalStream { stream, it }) as Box<dyn StreamClient>)
        })())
    }
}

struct ShoalQueue {
    queue: Arc<Queue>,
}

impl QueueClient for ShoalQueue {
    fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()> {
        let batch: Vec<SendMessage> = bodies
            .iter()
            .map(|b| SendMessage::new(String::from_utf8_lossy(b).into_owned()))
            .collect();
        self.queue.send_batch(&batch)?;
        Ok(())
    }

    fn receive(&mut self, max: usize) -> Result<Vec<String>> {
        let got = self.queue.receive(&Receive {
            max_messages: max,
            wait: Some(Duration::ZERO),
            visibility_timeout: None,
        })?;
        Ok(got.into_iter().map(|m| m.receipt_handle).collect())
    }

    fn delete(&mut self, handles: &[String]) -> Result<()> {
        let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
        for result in self.queue.delete_batch(&handles)? {
            result?;
        }
        Ok(())
    }
}

struct ShoalStream {
    stream: Stream,
    it: ShardIterator,
}

impl StreamClient for ShoalStream {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()> {
        let puts: Vec<PutRecord<'_>> = records
            .iter()
            .map(|data| PutRecord {
                partition_key: "k",
                explicit_hash_key: None,
                data,
            })
            .collect();
        let outcome = self.stream.put_records(&puts);
        match outcome.error {
            Some(e) => Err(anyhow!(e)),
            None => Ok(()),
        }
    }

    fn read_next(&mut self, max: usize) -> Result<usize> {
        Ok(self.stream.get_records(&mut self.it, max)?.records.len())
    }
}
