//! What every system under test offers the workloads.

use anyhow::Result;

/// The two durability levels every workload runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The write is on disk (fsync/fdatasync) before it is acknowledged.
    Fsync,
    /// The write is acknowledged without waiting for a disk flush.
    NoFsync,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Fsync => "fsync",
            Level::NoFsync => "no fsync",
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Level::Fsync => "f",
            Level::NoFsync => "n",
        }
    }
}

/// One client of a queue (one connection, or one handle of an embedded store).
pub trait QueueClient: Send {
    /// Sends the bodies; returns once every one is acknowledged.
    fn send(&mut self, bodies: &[Vec<u8>]) -> Result<()>;
    /// Receives up to `max` messages (no waiting); returns their handles.
    fn receive(&mut self, max: usize) -> Result<Vec<String>>;
    /// Deletes (acknowledges) received messages by handle.
    fn delete(&mut self, handles: &[String]) -> Result<()>;
}

/// One client of an append-only stream with one shard / partition.
pub trait StreamClient: Send {
    /// Appends the records in order; returns once every one is acknowledged.
    fn append(&mut self, records: &[Vec<u8>]) -> Result<()>;
    /// Reads the next records from the start of the stream (the client keeps the position);
    /// returns how many it read, 0 at the end.
    fn read_next(&mut self, max: usize) -> Result<usize>;
}

/// A system under test.
pub trait System: Sync {
    fn name(&self) -> &'static str;
    /// What this system's durability level actually means; `None`: it cannot run at that level.
    fn durability(&self, level: Level) -> Option<&'static str>;
    /// Prepares the level (e.g. reconfigures the server) before a workload at it.
    fn set_level(&self, _level: Level) -> Result<()> {
        Ok(())
    }
    /// A client of queue `name`; `create` for the first client of a workload.
    fn queue(
        &self,
        _level: Level,
        _name: &str,
        _create: bool,
    ) -> Option<Result<Box<dyn QueueClient>>> {
        None
    }
    /// A client of stream `name`; `create` for the first client of a workload.
    fn stream(
        &self,
        _level: Level,
        _name: &str,
        _create: bool,
    ) -> Option<Result<Box<dyn StreamClient>>> {
        None
    }
}
