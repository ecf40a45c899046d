//! Queue attributes with SQS's ranges and defaults, and the queue catalog: create (idempotent
//! for identical attributes, a conflict otherwise), list, get, set, delete.
//!
//! ```text
//! <data>/queues/LOCK               serializes create, set and delete
//! <data>/queues/<name>/queue.meta  the attributes (metadata file, replaced atomically)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::datadir::{DataDir, DirInner};
use crate::durability::DurabilityMode;
use crate::error::{Error, Result};
use crate::meta;
use crate::names::validate_queue_name;
use crate::storage::LockGuard;

use super::check::{JOURNAL_DIR, MESSAGES_DIR};

pub(crate) const QUEUE_MAGIC: [u8; 8] = *b"SHOALQUE";
pub(crate) const META_FILE: &str = "queue.meta";

/// Longest visibility timeout: 12 hours.
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Longest delivery delay: 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Shortest retention: 60 seconds.
pub const MIN_RETENTION: Duration = Duration::from_secs(60);
/// Longest retention: 14 days.
pub const MAX_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// Smallest maximum message size: 1 KiB.
pub const MIN_MESSAGE_BYTES: u32 = 1024;
/// Largest maximum message size (and the default): 1 MiB.
pub const MAX_MESSAGE_BYTES: u32 = 1 << 20;
/// Longest long-poll wait: 20 seconds.
pub const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// Highest `maxReceiveCount` of a redrive policy.
pub const MAX_RECEIVES: u32 = 1000;

/// Where messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    /// The dead-letter queue (same data directory, same type).
    pub dead_letter_queue: String,
    /// Receives after which a message moves (1-1000).
    pub max_receives: u32,
}

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAttributes {
    /// A FIFO queue (its name ends in `.fifo`).
    pub fifo: bool,
    /// FIFO only: deduplicate by the SHA-256 of the body when no deduplication id is given.
    pub content_based_deduplication: bool,
    /// How long a received message stays invisible (0 s to 12 h; default 30 s).
    pub visibility_timeout: Duration,
    /// How long a new message stays invisible (0 to 15 min; default 0).
    pub delay: Duration,
    /// How long a message is kept (60 s to 14 days; default 4 days).
    pub retention: Duration,
    /// Largest message, body plus attributes (1 KiB to 1 MiB; default 1 MiB).
    pub max_message_bytes: u32,
    /// Default long-poll wait of a receive (0 to 20 s; default 0).
    pub receive_wait: Duration,
    /// Dead-letter redrive.
    pub redrive: Option<RedrivePolicy>,
    /// When a send, receive or delete counts as done (shoal's own setting; default `Always`:
    /// fsynced before the call returns, concurrent calls sharing one fsync).
    pub durability: DurabilityMode,
}

impl QueueAttributes {
    /// SQS's defaults for a standard queue, or a FIFO queue when `fifo`.
    pub fn defaults(fifo: bool) -> Self {
        QueueAttributes {
            fifo,
            content_based_deduplication: false,
            visibility_timeout: Duration::from_secs(30),
            delay: Duration::ZERO,
            retention: Duration::from_secs(4 * 24 * 3600),
            max_message_bytes: MAX_MESSAGE_BYTES,
            receive_wait: Duration::ZERO,
            redrive: None,
            durability: DurabilityMode::Always,
        }
    }

    /// Checks every attribute against SQS's ranges, and the name against the type.
    pub fn validate(&self, name: &str) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.fifo != name.ends_with(".fifo") {
            return bad(format!(
                "queue {name:?}: a FIFO queue's name ends in .fifo, and only a FIFO queue's does"
            ));
        }
        if self.content_based_deduplication && !self.fifo {
            return bad("content-based deduplication is for FIFO queues only".into());
        }
        let range = |what: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                bad(format!(
                    "{what} must be from {} to {}, not {}",
                    humanize(min),
                    humanize(max),
                    humanize(value)
                ))
            } else {
                Ok(())
            }
        };
        range(
            "the visibility timeout",
            self.visibility_timeout,
            Duration::ZERO,
            MAX_VISIBILITY_TIMEOUT,
        )?;
        range("the delay", self.delay, Duration::ZERO, MAX_DELAY)?;
        range(
            "the retention period",
            self.retention,
            MIN_RETENTION,
            MAX_RETENTION,
        )?;
        range(
            "the receive wait",
            self.receive_wait,
            Duration::ZERO,
            MAX_RECEIVE_WAIT,
        )?;
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return bad(format!(
                "the maximum message size must be from {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES} bytes, not {}",
                self.max_message_bytes
            ));
        }
        if let Some(redrive) = &self.redrive {
            if !(1..=MAX_RECEIVES).contains(&redrive.max_receives) {
                return bad(format!(
                    "max receives must be from 1 to {MAX_RECEIVES}, not {}",
                    redrive.max_receives
                ));
            }
            validate_queue_name(&redrive.dead_letter_queue)?;
            if redrive.dead_letter_queue == name {
                return bad("a queue cannot be its own dead-letter queue".into());
            }
        }
        Ok(())
    }
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A queue's stored description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct QueueMeta {
    pub(super) name: String,
    pub(super) attributes: QueueAttributes,
    pub(super) created_ms: u64,
    pub(super) modified_ms: u64,
}

/// A queue as `attributes` shows it (message counts come with the queue storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub attributes: QueueAttributes,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Last change of the attributes, ms since the epoch.
    pub modified_ms: u64,
}

pub(super) fn queues_dir(dir: &DirInner) -> PathBuf {
    dir.root.join("queues")
}

fn meta_path(dir: &DirInner, name: &str) -> PathBuf {
    queues_dir(dir).join(name).join(META_FILE)
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        kind: "queue",
        name: name.to_string(),
    }
}

/// How long deleting a queue waits for other processes' writers to let go of its logs: a
/// writer in the default shared mode holds a log's lock for one operation (a compaction of
/// a full segment takes the longest, well under this); one that still holds it after this
/// long owns the queue (`DirOptions::exclusive`).
const DELETE_PATIENCE: Duration = Duration::from_secs(2);

/// Takes the writer locks of the queue's two logs (those that exist), retrying while another
/// process holds one, up to [`DELETE_PATIENCE`]; then [`Error::Locked`].
fn lock_writers(dir: &DirInner, queue_dir: &std::path::Path) -> Result<Vec<Box<dyn LockGuard>>> {
    let mut held = Vec::new();
    for sub in [MESSAGES_DIR, JOURNAL_DIR] {
        let path = queue_dir.join(sub).join(crate::log::segment::LOCK_FILE);
        if !dir.storage.exists(&path) {
            continue;
        }
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match dir.storage.lock(&path, false) {
                Ok(guard) => {
                    held.push(guard);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if started.elapsed() >= DELETE_PATIENCE {
                        return Err(Error::Locked { path });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::io("lock", &path, e)),
            }
        }
    }
    Ok(held)
}

pub(super) fn load(dir: &DirInner, name: &str) -> Result<Option<QueueMeta>> {
    validate_queue_name(name)?;
    meta::read(&*dir.storage, &meta_path(dir, name), QUEUE_MAGIC)
}

fn list(dir: &DirInner, prefix: &str) -> Result<Vec<String>> {
    dir.list_kind(&queues_dir(dir), META_FILE, |n| {
        n.starts_with(prefix) && validate_queue_name(n).is_ok()
    })
}

/// The queues whose redrive policy names `dlq`.
pub(super) fn dead_letter_sources(dir: &DirInner, dlq: &str) -> Result<Vec<String>> {
    let mut sources = Vec::new();
    for name in list(dir, "")? {
        // Deleted meanwhile: not a source.
        let Some(meta) = load(dir, &name)? else {
            continue;
        };
        if meta
            .attributes
            .redrive
            .as_ref()
            .is_some_and(|r| r.dead_letter_queue == dlq)
        {
            sources.push(name);
        }
    }
    Ok(sources)
}

pub(super) fn info(meta: QueueMeta) -> QueueInfo {
    QueueInfo {
        name: meta.name,
        attributes: meta.attributes,
        created_ms: meta.created_ms,
        modified_ms: meta.modified_ms,
    }
}

/// Checks that a redrive target exists and has the same type.
fn check_redrive(dir: &DirInner, attributes: &QueueAttributes) -> Result<()> {
    let Some(redrive) = &attributes.redrive else {
        return Ok(());
    };
    let target = load(dir, &redrive.dead_letter_queue)?.ok_or_else(|| Error::NotFound {
        kind: "dead-letter queue",
        name: redrive.dead_letter_queue.clone(),
    })?;
    if target.attributes.fifo != attributes.fifo {
        return Err(Error::InvalidArgument(
            "a FIFO queue's dead-letter queue must be FIFO, and a standard queue's standard".into(),
        ));
    }
    Ok(())
}

/// Queue catalog operations.
impl DataDir {
    /// Creates a queue. Creating one that exists with the same attributes succeeds (as SQS's
    /// CreateQueue does) and returns it; with different attributes it is
    /// [`Error::AlreadyExists`].
    pub fn create_queue(&self, name: &str, attributes: &QueueAttributes) -> Result<QueueInfo> {
        validate_queue_name(name)?;
        attributes.validate(name)?;
        let dir = self.inner();
        let _lock = dir.lock_kind_to_create(&queues_dir(dir))?;
        if let Some(existing) = load(dir, name)? {
            if existing.attributes == *attributes {
                return Ok(info(existing));
            }
            return Err(Error::AlreadyExists {
                kind: "queue",
                name: name.to_string(),
                detail: " with different attributes".into(),
            });
        }
        check_redrive(dir, attributes)?;
        dir.ensure_dir(&queues_dir(dir).join(name))?;
        super::handle::create_logs(dir, name, attributes)?;
        let now = dir.clock.now_ms();
        let meta = QueueMeta {
            name: name.to_string(),
            attributes: attributes.clone(),
            created_ms: now,
            modified_ms: now,
        };
        meta::write(&*dir.storage, &meta_path(dir, name), QUEUE_MAGIC, &meta)?;
        Ok(info(meta))
    }

    /// Queue names starting with `prefix`, sorted.
    pub fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        list(self.inner(), prefix)
    }

    /// The queues whose redrive policy names `dlq` as their dead-letter queue, sorted (SQS's
    /// `ListDeadLetterSourceQueues`).
    pub fn dead_letter_source_queues(&self, dlq: &str) -> Result<Vec<String>> {
        let dir = self.inner();
        if load(dir, dlq)?.is_none() {
            return Err(not_found(dlq));
        }
        dead_letter_sources(dir, dlq)
    }

    /// A queue's attributes.
    pub fn queue_info(&self, name: &str) -> Result<QueueInfo> {
        load(self.inner(), name)?
            .map(info)
            .ok_or_else(|| Error::NotFound {
                kind: "queue",
                name: name.to_string(),
            })
    }

    /// Replaces a queue's attributes (its type cannot change).
    pub fn set_queue_attributes(
        &self,
        name: &str,
        attributes: &QueueAttributes,
    ) -> Result<QueueInfo> {
        attributes.validate(name)?;
        let dir = self.inner();
        let _lock = dir.lock_kind(&queues_dir(dir), || not_found(name))?;
        let mut meta = load(dir, name)?.ok_or_else(|| not_found(name))?;
        check_redrive(dir, attributes)?;
        meta.attributes = attributes.clone();
        meta.modified_ms = dir.clock.now_ms();
        meta::write(&*dir.storage, &meta_path(dir, name), QUEUE_MAGIC, &meta)?;
        Ok(info(meta))
    }

    /// Deletes a queue and everything in it. Handles of it fail with [`Error::NotFound`]
    /// from then on. Fails with [`Error::Locked`], changing nothing, while another process
    /// owns the queue (opened it with [`crate::DirOptions::exclusive`]).
    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let dir = self.inner();
        let _lock = dir.lock_kind(&queues_dir(dir), || not_found(name))?;
        if load(dir, name)?.is_none() {
            return Err(not_found(name));
        }
        let path = meta_path(dir, name);
        let queue_dir = queues_dir(dir).join(name);
        let open_queues = || {
            dir.open_queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let own = open_queues().get(name).and_then(std::sync::Weak::upgrade);
        // No other writer may be inside the queue's logs while they go, nor hold them open: a
        // process that owns the queue (`DirOptions::exclusive`) would go on acknowledging
        // sends into deleted files. An exclusive handle of this process holds the locks
        // itself, and stops below.
        let _writers = if dir.options.exclusive && own.is_some() {
            Vec::new()
        } else {
            lock_writers(dir, &queue_dir)?
        };
        // A handle kept open here fails from now on, and is not handed out for a queue made
        // again later.
        open_queues().remove(name);
        if let Some(queue) = own {
            queue
                .deleted
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // The attributes go first: from then on the queue does not exist, whatever is left.
        dir.storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        dir.storage
            .sync_dir(&queue_dir)
            .map_err(|e| Error::io("fsync", &queue_dir, e))?;
        dir.remove_tree(&queue_dir)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::{SharedStorage, SimStorage};

    fn data_dir() -> (DataDir, Arc<ManualClock>) {
        let storage: SharedStorage = Arc::new(SimStorage::new());
        let clock = ManualClock::new(1_000);
        (
            DataDir::open_with("/d", storage, clock.clone()).unwrap(),
            clock,
        )
    }

    #[test]
    fn defaults_are_sqs_defaults() {
        let a = QueueAttributes::defaults(false);
        assert_eq!(a.visibility_timeout, Duration::from_secs(30));
        assert_eq!(a.delay, Duration::ZERO);
        assert_eq!(a.retention, Duration::from_secs(345_600));
        assert_eq!(a.max_message_bytes, 1_048_576);
        assert_eq!(a.receive_wait, Duration::ZERO);
        a.validate("jobs").unwrap();
        QueueAttributes::defaults(true)
            .validate("jobs.fifo")
            .unwrap();
    }

    #[test]
    fn ranges_are_enforced() {
        let base = QueueAttributes::defaults(false);
        let cases = [
            QueueAttributes {
                visibility_timeout: Duration::from_secs(12 * 3600 + 1),
                ..base.clone()
            },
            QueueAttributes {
                delay: Duration::from_secs(901),
                ..base.clone()
            },
            QueueAttributes {
                retention: Duration::from_secs(59),
                ..base.clone()
            },
            QueueAttributes {
                retention: Duration::from_secs(14 * 86400 + 1),
                ..base.clone()
            },
            QueueAttributes {
                max_message_bytes: 1023,
                ..base.clone()
            },
            QueueAttributes {
                max_message_bytes: (1 << 20) + 1,
                ..base.clone()
            },
            QueueAttributes {
                receive_wait: Duration::from_secs(21),
                ..base.clone()
            },
            QueueAttributes {
                content_based_deduplication: true,
                ..base.clone()
            },
            QueueAttributes {
                fifo: true,
                ..base.clone()
            },
            QueueAttributes {
                redrive: Some(RedrivePolicy {
                    dead_letter_queue: "dlq".into(),
                    max_receives: 0,
                }),
                ..base.clone()
            },
            QueueAttributes {
                redrive: Some(RedrivePolicy {
                    dead_letter_queue: "dlq".into(),
                    max_receives: 1001,
                }),
                ..base.clone()
            },
        ];
        for case in cases {
            assert!(case.validate("jobs").is_err(), "{case:?}");
        }
        // The limits themselves are allowed.
        let edges = QueueAttributes {
            visibility_timeout: MAX_VISIBILITY_TIMEOUT,
            delay: MAX_DELAY,
            retention: MIN_RETENTION,
            max_message_bytes: MIN_MESSAGE_BYTES,
            receive_wait: MAX_RECEIVE_WAIT,
            ..base
        };
        edges.validate("jobs").unwrap();
        assert!(
            QueueAttributes::defaults(false)
                .validate("jobs.fifo")
                .is_err()
        );
    }

    #[test]
    fn create_is_idempotent_and_conflicts_on_different_attributes() {
        let (dir, clock) = data_dir();
        let attrs = QueueAttributes::defaults(false);
        let first = dir.create_queue("jobs", &attrs).unwrap();
        clock.advance(5_000);
        let again = dir.create_queue("jobs", &attrs).unwrap();
        assert_eq!(
            first, again,
            "same attributes: the existing queue, unchanged"
        );
        let longer = QueueAttributes {
            visibility_timeout: Duration::from_secs(60),
            ..attrs
        };
        assert!(matches!(
            dir.create_queue("jobs", &longer),
            Err(Error::AlreadyExists { .. })
        ));
        let set = dir.set_queue_attributes("jobs", &longer).unwrap();
        assert_eq!(set.created_ms, 1_000);
        assert_eq!(set.modified_ms, 6_000);
        assert_eq!(
            dir.queue_info("jobs")
                .unwrap()
                .attributes
                .visibility_timeout,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn redrive_needs_an_existing_queue_of_the_same_type() {
        let (dir, _) = data_dir();
        let with_dlq = |dlq: &str, fifo: bool| QueueAttributes {
            redrive: Some(RedrivePolicy {
                dead_letter_queue: dlq.into(),
                max_receives: 3,
            }),
            ..QueueAttributes::defaults(fifo)
        };
        assert!(matches!(
            dir.create_queue("jobs", &with_dlq("dlq", false)),
            Err(Error::NotFound { .. })
        ));
        dir.create_queue("dlq", &QueueAttributes::defaults(false))
            .unwrap();
        dir.create_queue("jobs", &with_dlq("dlq", false)).unwrap();
        assert!(
            dir.create_queue("orders.fifo", &with_dlq("dlq", true))
                .is_err()
        );
        assert!(dir.create_queue("self", &with_dlq("self", false)).is_err());
    }

    #[test]
    fn list_with_prefix_and_delete() {
        let (dir, _) = data_dir();
        for name in ["orders", "orders-dlq", "jobs", "events.fifo"] {
            dir.create_queue(name, &QueueAttributes::defaults(name.ends_with(".fifo")))
                .unwrap();
        }
        assert_eq!(
            dir.list_queues("").unwrap(),
            vec!["events.fifo", "jobs", "orders", "orders-dlq"]
        );
        assert_eq!(
            dir.list_queues("orders").unwrap(),
            vec!["orders", "orders-dlq"]
        );
        dir.delete_queue("orders").unwrap();
        assert_eq!(dir.list_queues("orders").unwrap(), vec!["orders-dlq"]);
        assert!(matches!(
            dir.delete_queue("orders"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            dir.queue_info("orders"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            dir.queue_info("../x"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
