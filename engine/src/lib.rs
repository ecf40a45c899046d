//! shoal's storage engine.
//!
//! shoal keeps SQS-style queues, SNS-style topics and Kinesis-style streams durably in one local
//! data directory. This crate holds all of its logic; the `shoal` CLI is a thin front end.
//!
//! Callers (the CLI, later an AWS-compatible server) use one handle, [`DataDir`], with typed
//! requests and [`Error`]s: [`DataDir::create_stream`], [`DataDir::stream`] (puts, iterators,
//! resharding, consumer groups), [`DataDir::create_queue`], [`DataDir::queue`] (SQS-style
//! [`queue`]s: send, receive, delete, visibility, dead letters), [`DataDir::check`]. SNS-style
//! [`topic`]s fan published messages out to queues (exactly once), HTTP endpoints, commands and
//! files ([`DataDir::create_topic`], [`DataDir::subscribe`], [`DataDir::topic`]).
//!
//! The foundation is [`log`]: a segment-file append log with CRC-framed records, sparse offset
//! and time indexes, memory-mapped readers, group commit, crash recovery that cuts only a torn
//! tail, and retention and compaction that never rewrite a file a reader may have mapped.
//! Kinesis-style [`stream`]s are shards of logs. All file I/O goes through [`storage`], so
//! tests can inject torn writes, failed fsyncs and full disks, and all time comes from a
//! [`clock::Clock`]. The bytes on disk are documented in `engine/FORMAT.md`.
//!
//! ```
//! use shoal_engine::DataDir;
//! use shoal_engine::stream::{CreateStream, PutRecord, StartPosition};
//!
//! # fn main() -> shoal_engine::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let data = DataDir::open(dir.path())?;
//! data.create_stream(&CreateStream::new("clicks", 2))?;
//! let stream = data.stream("clicks")?;
//! let put = stream.put_records(&[PutRecord { partition_key: "user-1", explicit_hash_key: None, data: b"/home" }]);
//! let shard = put.results[0].shard;
//! let mut it = stream.shard_iterator(shard, StartPosition::TrimHorizon)?;
//! assert_eq!(stream.get_records(&mut it, 10)?.records[0].data, b"/home");
//! # Ok(())
//! # }
//! ```
//!
//! The log on its own:
//!
//! ```
//! use std::sync::Arc;
//! use shoal_engine::clock::SystemClock;
//! use shoal_engine::log::{Entry, Log, LogOptions, ReadLimit};
//! use shoal_engine::storage::FsStorage;
//!
//! # fn main() -> shoal_engine::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(Arc::new(FsStorage::new()), Arc::new(SystemClock), dir.path(), LogOptions::default())?;
//! let appended = log.append(&[Entry::new(b"hello"), Entry::new(b"world")])?;
//! assert_eq!(appended.first_offset, 0);
//! let batch = log.read(0, ReadLimit::records(10))?;
//! let payloads: Vec<&[u8]> = batch.iter().map(|r| r.payload).collect();
//! assert_eq!(payloads, [&b"hello"[..], &b"world"[..]]);
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod codec;
pub mod datadir;
pub mod durability;
pub mod error;
/// Fuzz target bodies (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod log;
pub mod meta;
pub mod names;
pub mod queue;
pub mod repair;
pub mod stats;
pub mod storage;
pub mod stream;
pub mod topic;

pub use datadir::{DataDir, DirOptions};
pub use error::{CorruptionKind, Error, Result};
pub use repair::RepairReport;
