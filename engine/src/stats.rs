//! `shoal stats`: what each stream, queue and topic holds, and what it takes on disk.
//!
//! Record counts come from the logs' heads (a stream's records are its shards' offsets from
//! the first stored to the next, a topic's its published messages still stored); a queue's
//! are its approximate visible, in-flight and delayed counts, as `GetQueueAttributes` gives
//! them. Disk use is every file under the resource's directory.

use std::path::Path;
use std::sync::Arc;

use crate::DataDir;
use crate::error::{Error, Result};
use crate::log::LogReader;
use crate::log::segment::{self, LogFileName};
use crate::queue::QueueCounts;
use crate::storage::{OpenMode, Storage};

/// Files and bytes under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Files (locks and metadata included).
    pub files: u64,
    /// Their total length.
    pub bytes: u64,
    /// Of those, log segment files.
    pub segments: u64,
}

impl DiskUsage {
    fn add(&mut self, other: DiskUsage) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.segments += other.segments;
    }
}

/// One stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// Its name.
    pub name: String,
    /// Open shards (accepting puts).
    pub open_shards: u64,
    /// Records stored, across every shard (closed ones too).
    pub records: u64,
    /// Its files.
    pub disk: DiskUsage,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Its name.
    pub name: String,
    /// Approximate message counts.
    pub counts: QueueCounts,
    /// Its files.
    pub disk: DiskUsage,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// Its name.
    pub name: String,
    /// Subscriptions.
    pub subscriptions: u64,
    /// Published messages still stored (kept until every subscription has had them).
    pub messages: u64,
    /// Its files.
    pub disk: DiskUsage,
}

/// Everything [`DataDir::stats`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Streams by name.
    pub streams: Vec<StreamStats>,
    /// Queues by name.
    pub queues: Vec<QueueStats>,
    /// Topics by name.
    pub topics: Vec<TopicStats>,
    /// The whole data directory.
    pub total: DiskUsage,
}

impl DataDir {
    /// What each stream, queue and topic holds and takes on disk. Reads heads and metadata,
    /// and opens each queue for its counts; writes nothing a reader would see.
    pub fn stats(&self) -> Result<Stats> {
        let storage = &*self.inner().storage;
        let root = self.root();
        let mut stats = Stats {
            total: disk_usage(storage, root)?,
            ..Stats::default()
        };
        for name in self.list_streams()? {
            let dir = root.join("streams").join(&name);
            let open_shards = self
                .describe_stream(&name)?
                .shards
                .iter()
                .filter(|s| s.open)
                .count() as u64;
            stats.streams.push(StreamStats {
                records: self.records_in_logs_under(&dir.join("shards"))?,
                disk: disk_usage(storage, &dir)?,
                open_shards,
                name,
            });
        }
        for name in self.list_queues("")? {
            let counts = self.queue(&name)?.counts()?;
            stats.queues.push(QueueStats {
                disk: disk_usage(storage, &root.join("queues").join(&name))?,
                counts,
                name,
            });
        }
        for name in self.list_topics()? {
            let dir = root.join("topics").join(&name);
            stats.topics.push(TopicStats {
                subscriptions: self.subscriptions(&name)?.len() as u64,
                messages: self.records_in_logs_under(&dir)?,
                disk: disk_usage(storage, &dir)?,
                name,
            });
        }
        Ok(stats)
    }

    /// Records stored in every log directory directly under `dir` (or `dir` itself).
    fn records_in_logs_under(&self, dir: &Path) -> Result<u64> {
        let storage = &self.inner().storage;
        let mut logs = vec![dir.to_path_buf()];
        if let Ok(names) = storage.list_dir(dir) {
            logs.extend(names.into_iter().map(|n| dir.join(n)));
        }
        let mut records = 0;
        for log in logs {
            if !storage.exists(&log.join(segment::HEAD_FILE)) {
                continue;
            }
            let reader = LogReader::open(Arc::clone(storage), &log)?;
            records += reader.next_offset()?.saturating_sub(reader.start_offset()?);
        }
        Ok(records)
    }
}

/// Every file under `path` (a file or a directory).
fn disk_usage(storage: &dyn Storage, path: &Path) -> Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    match storage.list_dir(path) {
        Ok(names) => {
            for name in names {
                usage.add(disk_usage(storage, &path.join(name))?);
            }
        }
        // Not a directory (or gone): a file, if anything.
        Err(_) => {
            let file = match storage.open(path, OpenMode::Read) {
                Ok(file) => file,
                // Removed meanwhile (retention, compaction).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(usage),
                Err(e) => return Err(Error::io("open", path, e)),
            };
            usage.files = 1;
            usage.bytes = file.len().map_err(|e| Error::io("stat", path, e))?;
            let name = path.file_name().unwrap_or_default();
            usage.segments = u64::from(matches!(
                segment::parse_file_name(name),
                LogFileName::Segment(_)
            ));
        }
    }
    Ok(usage)
}
