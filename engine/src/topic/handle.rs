//! An open topic: publish, and deliver to subscriptions from their cursors.
//!
//! A published message is one record of the topic log: kind [`KIND_PUBLISHED`], a bincode
//! [`StoredHeader`] (id, subject, FIFO group and deduplication ids, length of the attributes)
//! as the record header, the bincode attributes followed by the body as the payload; the
//! record's timestamp is the publish time.
//!
//! Each subscription has a cursor (a metadata file): the topic offset delivered up to, and
//! for a queue subscription the queue's message-log end when the cursor was written. One
//! process at a time delivers a subscription: it holds the subscription's lock file. A queue
//! delivery first asks the queue which topic offsets already arrived since that recorded end
//! ([`Queue::delivered_since`]), skips them, and appends the rest with their offsets as their
//! origin, so whatever a crash interrupted is completed without duplicates. Cursors of queue
//! subscriptions are therefore written only now and then (every [`SAVE_EVERY`] messages or
//! [`SAVE_INTERVAL`]); a lagging cursor only makes that first look longer.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::endpoint::{self, Outgoing};
use super::filter::FilterPolicy;
use super::{
    MAX_MESSAGE_BYTES, MAX_SUBJECT_LEN, Protocol, Subscription, TopicAttributes, TopicMeta, load,
    load_subscriptions, not_found, topics_dir,
};
use crate::datadir::{DataDir, DirInner};
use crate::error::{CorruptionKind, Error, Result};
use crate::log::{Entry, Log, LogOptions, ReadLimit, Record, Retention, WriterLock};
use crate::meta;
use crate::queue::message::{hex, validate_attributes, validate_body, validate_fifo_id};
use crate::queue::stored::{decode, encode};
use crate::queue::{AttributeValue, MessageAttribute, Queue, SendMessage};
use crate::storage::Watcher;

/// Record kind of a published message in the topic log.
pub const KIND_PUBLISHED: u8 = 1;
pub use crate::queue::handle::DEDUP_WINDOW;
pub use crate::queue::message::MAX_FIFO_ID_LEN;
/// A queue subscription's cursor is written at least every this many topic offsets...
pub const SAVE_EVERY: u64 = 256;
/// ... or this often.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) const CURSORS_DIR: &str = "cursors";
const CURSOR_MAGIC: [u8; 8] = *b"SHOALCUR";
const MAX_HEADER: usize = 64 << 10;
const MAX_ATTRIBUTES: usize = 1 << 20;
/// Publishes of one handle between two looks for topic-log segments every subscription is past.
const RECLAIM_EVERY: u64 = 1024;
/// Most messages one queue append carries.
const QUEUE_CHUNK: usize = 100;

/// The record header of a published message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeader {
    /// Message id (a UUID).
    pub id: String,
    /// Subject.
    pub subject: Option<String>,
    /// FIFO message group.
    pub group: Option<String>,
    /// FIFO deduplication id (given, or the SHA-256 of the body).
    pub dedup: Option<String>,
    /// Length of the encoded attributes at the start of the payload.
    pub attributes_len: u32,
}

/// A published message read back from the topic log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic offset.
    pub offset: u64,
    /// Publish time, ms since the epoch.
    pub timestamp_ms: u64,
    /// The header.
    pub header: StoredHeader,
    /// Attributes.
    pub attributes: Vec<MessageAttribute>,
    /// Body.
    pub body: String,
}

/// Decodes a topic-log record; malformed bytes are an error, never a panic.
pub fn decode_record(record: &Record<'_>) -> Result<StoredMessage> {
    if record.kind != KIND_PUBLISHED {
        return Err(Error::InvalidArgument(format!(
            "record kind {} is not a published message",
            record.kind
        )));
    }
    let header: StoredHeader = decode::<_, MAX_HEADER>(record.header, "message header")?;
    let (attributes, body) = record
        .payload
        .split_at_checked(header.attributes_len as usize)
        .ok_or_else(|| Error::InvalidArgument("payload shorter than its header".into()))?;
    let attributes = if attributes.is_empty() {
        Vec::new()
    } else {
        decode::<_, MAX_ATTRIBUTES>(attributes, "message attributes")?
    };
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| Error::InvalidArgument("the body is not UTF-8".into()))?;
    Ok(StoredMessage {
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        header,
        attributes,
        body,
    })
}

/// One message to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishMessage {
    /// The message: 1 byte to 256 KiB with the attributes.
    pub body: String,
    /// Subject (1-100 characters, no control characters).
    pub subject: Option<String>,
    /// Up to 10 message attributes (`String.Array` values are JSON arrays).
    pub attributes: Vec<MessageAttribute>,
    /// FIFO message group (required on FIFO topics).
    pub group_id: Option<String>,
    /// FIFO deduplication id (required on FIFO topics without content-based deduplication).
    pub dedup_id: Option<String>,
}

impl PublishMessage {
    /// A message with just a body.
    pub fn new(body: impl Into<String>) -> Self {
        PublishMessage {
            body: body.into(),
            ..PublishMessage::default()
        }
    }
}

/// What a publish returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message id (for a FIFO duplicate, the original's).
    pub message_id: String,
    /// FIFO: the sequence number (20 digits, the topic offset).
    pub sequence_number: Option<String>,
    /// The topic offset.
    pub offset: u64,
    /// Deliveries that did not happen now (they stay pending for `deliver`), one line each.
    pub warnings: Vec<String>,
}

/// How HTTP and command deliveries are retried: `attempts` in all, waiting `min_delay`
/// after the first failure, doubling up to `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Wait after the first failure.
    pub min_delay: Duration,
    /// Longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts over about 3.5 s (0.5 s, 1 s, 2 s between them): SNS's default HTTP policy
    /// in spirit (a few immediate-ish retries, then backoff), short enough for a terminal.
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.min_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What one delivery round did for one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The subscription ARN.
    pub subscription_arn: String,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages given up on and not dead-lettered (counted in the cursor, reported).
    pub failed: u64,
    /// Messages given up on and sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// The last failure, if delivery stopped or gave up on a message.
    pub error: Option<String>,
    /// True when messages are still waiting (a retry is due later, or another process is
    /// delivering this subscription).
    pub pending: bool,
}

/// A subscription with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionStatus {
    /// The subscription.
    pub subscription: Subscription,
    /// Topic offsets not yet looked at for it (an upper bound of what it still gets).
    pub pending: u64,
    /// Messages given up on without a dead-letter queue, ever.
    pub failed: u64,
    /// Messages sent to its dead-letter queue, ever.
    pub dead_lettered: u64,
    /// Failed attempts on the message at its cursor.
    pub attempts: u32,
    /// The last failure.
    pub last_failure: Option<String>,
}

/// A subscription's delivery cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// Topic offset delivered up to (the next one to look at).
    offset: u64,
    /// Queue subscriptions: the queue's message-log end when this cursor was current.
    queue_mark: Option<u64>,
    /// Failed attempts on the message at `offset`.
    attempts: u32,
    /// Earliest time of the next attempt, ms (publishes do not retry before it).
    next_attempt_ms: u64,
    failed: u64,
    dead_lettered: u64,
    last_failure: Option<String>,
}

/// This process's view of a cursor: the newest state and what was last written.
#[derive(Debug)]
struct Memo {
    cursor: Cursor,
    /// What this process last wrote (or read) as the cursor file.
    saved: Option<Cursor>,
    saved_at: Instant,
}

/// FIFO deduplication ids of the last 5 minutes, built from the topic log.
#[derive(Debug, Default)]
struct Dedup {
    scanned: Option<u64>,
    ids: HashMap<String, (String, u64, u64)>,
    order: VecDeque<(u64, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// After a publish: queue and file deliveries fully; HTTP and commands one attempt if due,
    /// and only if no other process is delivering the subscription.
    Publish,
    /// Everything pending now, retrying with backoff (sleeping between attempts).
    Drain,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn cursor_path(topic_dir: &Path, id: &str) -> PathBuf {
    topic_dir.join(CURSORS_DIR).join(format!("{id}.cursor"))
}

fn cursor_lock_path(topic_dir: &Path, id: &str) -> PathBuf {
    topic_dir.join(CURSORS_DIR).join(format!("{id}.lock"))
}

pub(super) fn open_log(dir: &DirInner, path: &Path, attributes: &TopicAttributes) -> Result<Log> {
    Log::open(
        Arc::clone(&dir.storage),
        Arc::clone(&dir.clock),
        path.join("messages"),
        LogOptions {
            max_record_bytes: (1 << 20) + (64 << 10),
            durability: attributes.durability.log(),
            writer_lock: WriterLock::Shared,
            // A publish is small, and fsynced before it returns.
            prefill: attributes.durability == crate::durability::DurabilityMode::Always,
            ..LogOptions::default()
        },
    )
}

/// Writes a new subscription's cursor at the topic's end (and, for a queue, the queue's).
pub(super) fn start_cursor(data: &DataDir, meta: &TopicMeta, sub: &Subscription) -> Result<()> {
    let dir = data.inner();
    let topic_dir = topics_dir(dir).join(&meta.name);
    let reader = crate::log::LogReader::open(Arc::clone(&dir.storage), topic_dir.join("messages"))?;
    let queue_mark = match sub.protocol {
        Protocol::Queue => Some(data.queue(&sub.endpoint)?.message_log_end()?),
        _ => None,
    };
    let cursor = Cursor {
        offset: reader.next_offset()?,
        queue_mark,
        ..Cursor::default()
    };
    meta::write(
        &*dir.storage,
        &cursor_path(&topic_dir, &sub.id),
        CURSOR_MAGIC,
        &cursor,
    )
}

/// Reads a cursor file, for `shoal check`.
pub(super) fn check_cursor(storage: &dyn crate::storage::Storage, path: &Path) -> Result<()> {
    meta::read::<Cursor>(storage, path, CURSOR_MAGIC).map(drop)
}

pub(super) fn remove_cursor(dir: &DirInner, topic: &str, id: &str) -> Result<()> {
    let topic_dir = topics_dir(dir).join(topic);
    for path in [
        cursor_path(&topic_dir, id),
        cursor_lock_path(&topic_dir, id),
    ] {
        match dir.storage.remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &path, e));
            }
            _ => {}
        }
    }
    let cursors = topic_dir.join(CURSORS_DIR);
    dir.storage
        .sync_dir(&cursors)
        .map_err(|e| Error::io("fsync", &cursors, e))
}

/// Opening topics.
impl DataDir {
    /// Opens a topic to publish to and deliver from.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        Topic::open(self, name)
    }
}

/// An open topic. Share it between threads; every process may open the same topic.
#[derive(Debug)]
pub struct Topic {
    data: DataDir,
    name: String,
    path: PathBuf,
    source: String,
    incarnation: u64,
    attributes: TopicAttributes,
    log: Log,
    retry: RetryPolicy,
    dedup: Mutex<Dedup>,
    memos: Mutex<HashMap<String, Memo>>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    policies: Mutex<HashMap<(String, String), Arc<FilterPolicy>>>,
    /// Publishes by this handle, to look for log segments to remove every [`RECLAIM_EVERY`].
    publishes: AtomicU64,
}

impl Topic {
    fn open(data: &DataDir, name: &str) -> Result<Topic> {
        let dir = data.inner();
        let meta = load(dir, name)?.ok_or_else(|| not_found(name))?;
        let path = topics_dir(dir).join(name);
        let log = open_log(dir, &path, &meta.attributes)?;
        Ok(Topic {
            data: data.clone(),
            name: name.to_string(),
            source: format!("topic:{name}"),
            incarnation: meta.created_ms,
            attributes: meta.attributes,
            path,
            log,
            retry: RetryPolicy::default(),
            dedup: Mutex::new(Dedup::default()),
            memos: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            policies: Mutex::new(HashMap::new()),
            publishes: AtomicU64::new(0),
        })
    }

    /// Sets how HTTP and command deliveries are retried (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            attempts: retry.attempts.max(1),
            ..retry
        };
        self
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's settings.
    pub fn attributes(&self) -> &TopicAttributes {
        &self.attributes
    }

    fn dir(&self) -> &DirInner {
        self.data.inner()
    }

    /// The topic log's next offset, as of now.
    pub fn end_offset(&self) -> Result<u64> {
        self.log.reader().next_offset()
    }

    /// Reads published messages from `from` on (at most `max`), for inspection and tests.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<StoredMessage>> {
        let batch = self.log.read(from, ReadLimit::records(max))?;
        batch.iter().map(|r| decode_record(&r)).collect()
    }

    /// Watches the topic log, to sleep until something is published (`deliver --follow`).
    pub fn watch(&self) -> Result<Box<dyn Watcher>> {
        let messages = self.path.join("messages");
        self.dir()
            .storage
            .watch(&[&messages])
            .map_err(|e| Error::io("watch", &messages, e))
    }

    // ---- publishing ----

    fn prepare(&self, m: &PublishMessage) -> Result<(StoredHeader, Vec<u8>)> {
        validate_body(&m.body)?;
        validate_attributes(&m.attributes)?;
        for a in &m.attributes {
            if a.data_type == "String.Array"
                && let AttributeValue::String(text) = &a.value
                && !matches!(serde_json::from_str(text), Ok(serde_json::Value::Array(_)))
            {
                return Err(Error::InvalidArgument(format!(
                    "message attribute {:?}: a String.Array value must be a JSON array",
                    a.name
                )));
            }
        }
        let size = m.body.len()
            + m.attributes
                .iter()
                .map(MessageAttribute::size)
                .sum::<usize>();
        if size > MAX_MESSAGE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the message is {size} bytes (body and attributes), more than a topic takes ({MAX_MESSAGE_BYTES})"
            )));
        }
        if let Some(subject) = &m.subject
            && (subject.is_empty()
                || subject.chars().count() > MAX_SUBJECT_LEN
                || subject.chars().any(char::is_control))
        {
            return Err(Error::InvalidArgument(format!(
                "the subject must be 1 to {MAX_SUBJECT_LEN} characters without line breaks or control characters"
            )));
        }
        let dedup = if self.attributes.fifo {
            let group = m.group_id.as_deref().ok_or_else(|| {
                Error::InvalidArgument("a FIFO topic needs a message group id (--group-id)".into())
            })?;
            validate_fifo_id("message group id", group)?;
            match (&m.dedup_id, self.attributes.content_based_deduplication) {
                (Some(id), _) => {
                    validate_fifo_id("deduplication id", id)?;
                    Some(id.clone())
                }
                (None, true) => Some(hex(&Sha256::digest(m.body.as_bytes()))),
                (None, false) => {
                    return Err(Error::InvalidArgument(
                        "a FIFO topic without content-based deduplication needs a deduplication id (--dedup-id)".into(),
                    ));
                }
            }
        } else {
            if m.dedup_id.is_some() {
                return Err(Error::InvalidArgument(
                    "deduplication ids are for FIFO topics only".into(),
                ));
            }
            if m.group_id.is_some() {
                return Err(Error::InvalidArgument(
                    "message group ids are for FIFO topics only".into(),
                ));
            }
            None
        };
        let mut payload = if m.attributes.is_empty() {
            Vec::new()
        } else {
            encode(&m.attributes)
        };
        let attributes_len = u32::try_from(payload.len())
            .map_err(|_| Error::InvalidArgument("attributes too large".into()))?;
        payload.extend_from_slice(m.body.as_bytes());
        let header = StoredHeader {
            id: uuid::Uuid::new_v4().to_string(),
            subject: m.subject.clone(),
            group: m.group_id.clone(),
            dedup,
            attributes_len,
        };
        Ok((header, payload))
    }

    /// Publishes one message: durable in the topic log before it returns, then delivered to
    /// every subscription whose filter policy it passes (deliveries that cannot happen now
    /// stay pending and are listed in [`Published::warnings`]).
    pub fn publish(&self, message: &PublishMessage) -> Result<Published> {
        let mut published = self.publish_batch(std::slice::from_ref(message))?;
        published
            .pop()
            .ok_or_else(|| Error::InvalidArgument("nothing published".into()))
    }

    /// Publishes messages as one atomic append, in order (every message is checked first;
    /// nothing is written if one fails), then fans them out once.
    pub fn publish_batch(&self, messages: &[PublishMessage]) -> Result<Vec<Published>> {
        let mut prepared = Vec::with_capacity(messages.len());
        for m in messages {
            prepared.push(self.prepare(m)?);
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let mut published = if self.attributes.fifo {
            self.log.with_writer_lock(|| self.append_fifo(&prepared))?
        } else {
            let first = self.append(&prepared)?;
            prepared
                .iter()
                .zip(first..)
                .map(|((h, _), offset)| Published {
                    message_id: h.id.clone(),
                    sequence_number: None,
                    offset,
                    warnings: Vec::new(),
                })
                .collect()
        };
        let warnings = self.fan_out(Mode::Publish)?.into_iter().filter_map(|r| {
            let error = r.error?;
            Some(format!("{}: {error}", r.subscription_arn))
        });
        if let Some(last) = published.last_mut() {
            last.warnings.extend(warnings);
        }
        if self.publishes.fetch_add(1, Ordering::Relaxed) % RECLAIM_EVERY == RECLAIM_EVERY - 1 {
            self.reclaim()?;
        }
        Ok(published)
    }

    fn append(&self, prepared: &[(StoredHeader, Vec<u8>)]) -> Result<u64> {
        let headers: Vec<Vec<u8>> = prepared.iter().map(|(h, _)| encode(h)).collect();
        let entries: Vec<Entry<'_>> = headers
            .iter()
            .zip(prepared)
            .map(|(header, (_, payload))| Entry {
                kind: KIND_PUBLISHED,
                header,
                payload,
            })
            .collect();
        Ok(self.log.append(&entries)?.first_offset)
    }

    /// Inside the log's writer lock: drops duplicates of the last 5 minutes, appends the rest.
    fn append_fifo(&self, prepared: &[(StoredHeader, Vec<u8>)]) -> Result<Vec<Published>> {
        let mut dedup = lock(&self.dedup);
        let now = self.dir().clock.now_ms();
        self.catch_up_dedup(&mut dedup, now)?;
        let mut fresh: Vec<(StoredHeader, Vec<u8>)> = Vec::new();
        // Per message: Ok(index into fresh) or Err((id, offset)) of an earlier duplicate.
        let mut outcome = Vec::with_capacity(prepared.len());
        let mut batch_ids: HashMap<&str, usize> = HashMap::new();
        for (header, payload) in prepared {
            let key = header.dedup.as_deref().unwrap_or_default();
            if let Some((id, offset, _)) = dedup.ids.get(key) {
                outcome.push(Err((id.clone(), *offset)));
            } else if let Some(&i) = batch_ids.get(key) {
                outcome.push(Ok(i));
            } else {
                batch_ids.insert(key, fresh.len());
                outcome.push(Ok(fresh.len()));
                fresh.push((header.clone(), payload.clone()));
            }
        }
        let first = if fresh.is_empty() {
            0
        } else {
            self.append(&fresh)?
        };
        for (i, (header, _)) in fresh.iter().enumerate() {
            let offset = first + i as u64;
            let key = header.dedup.clone().unwrap_or_default();
            dedup
                .ids
                .insert(key.clone(), (header.id.clone(), offset, now));
            dedup.order.push_back((now, key));
        }
        if !fresh.is_empty() {
            dedup.scanned = Some(first + fresh.len() as u64);
        }
        Ok(outcome
            .into_iter()
            .map(|o| {
                let (id, offset) = match o {
                    Ok(i) => (
                        fresh.get(i).map(|(h, _)| h.id.clone()).unwrap_or_default(),
                        first + i as u64,
                    ),
                    Err(original) => original,
                };
                Published {
                    message_id: id,
                    sequence_number: Some(format!("{offset:020}")),
                    offset,
                    warnings: Vec::new(),
                }
            })
            .collect())
    }

    /// Brings the deduplication ids up to the log's end (others may have published) and
    /// forgets ids older than the window.
    fn catch_up_dedup(&self, dedup: &mut Dedup, now: u64) -> Result<()> {
        let since = now.saturating_sub(DEDUP_WINDOW.as_millis().try_into().unwrap_or(u64::MAX));
        let mut from = match dedup.scanned {
            Some(offset) => offset,
            None => self.log.reader().offset_at_time(since)?,
        };
        loop {
            let batch = match self.log.read(from, ReadLimit::default()) {
                Err(Error::OffsetTrimmed { start, .. }) => {
                    from = start;
                    continue;
                }
                batch => batch?,
            };
            if batch.is_empty() {
                break;
            }
            for record in batch.iter() {
                let header: StoredHeader = decode::<_, MAX_HEADER>(record.header, "message header")
                    .map_err(|e| self.corrupt(record.offset, &e))?;
                if let Some(key) = header.dedup
                    && record.timestamp_ms >= since
                {
                    dedup
                        .ids
                        .insert(key.clone(), (header.id, record.offset, record.timestamp_ms));
                    dedup.order.push_back((record.timestamp_ms, key));
                }
            }
            from = batch.next_offset();
        }
        dedup.scanned = Some(from);
        while let Some((at, key)) = dedup.order.front() {
            if *at >= since {
                break;
            }
            if dedup.ids.get(key).is_some_and(|(_, _, t)| t == at) {
                dedup.ids.remove(key);
            }
            dedup.order.pop_front();
        }
        Ok(())
    }

    fn corrupt(&self, offset: u64, e: &Error) -> Error {
        Error::corruption(
            self.path.join("messages"),
            offset,
            CorruptionKind::Metadata(e.to_string()),
        )
    }

    // ---- delivering ----

    /// Delivers everything pending to every subscription now: HTTP and command deliveries
    /// are retried by the topic's [`RetryPolicy`] (sleeping between attempts), then go to the
    /// dead-letter queue or are counted as failed. Returns one report per subscription.
    pub fn deliver(&self) -> Result<Vec<DeliveryReport>> {
        let reports = self.fan_out(Mode::Drain)?;
        self.reclaim()?;
        Ok(reports)
    }

    /// Removes the topic log's sealed segments that every subscription's written cursor is
    /// past (and, on a FIFO topic, older than the deduplication window). Returns the bytes
    /// freed.
    pub fn reclaim(&self) -> Result<u64> {
        let mut below = self.end_offset()?;
        for sub in load_subscriptions(self.dir(), &self.name)? {
            let path = cursor_path(&self.path, &sub.id);
            if let Some(cursor) = meta::read::<Cursor>(&*self.dir().storage, &path, CURSOR_MAGIC)? {
                below = below.min(cursor.offset);
            }
        }
        if self.attributes.fifo {
            let window = u64::try_from(DEDUP_WINDOW.as_millis()).unwrap_or(u64::MAX);
            let since = self.dir().clock.now_ms().saturating_sub(window);
            below = below.min(self.log.reader().offset_at_time(since)?);
        }
        Ok(self
            .log
            .enforce_retention(&Retention {
                below_offset: Some(below),
                ..Retention::default()
            })?
            .bytes_removed)
    }

    /// Delivers to every subscription, each in its own thread when there are several, so
    /// that their writes and fsyncs (one per queue) overlap instead of adding up.
    fn fan_out(&self, mode: Mode) -> Result<Vec<DeliveryReport>> {
        let subscriptions = load_subscriptions(self.dir(), &self.name)?;
        let one = |sub: &Subscription| {
            let mut report = DeliveryReport {
                subscription_arn: sub.arn(),
                ..DeliveryReport::default()
            };
            if let Err(e) = self.deliver_subscription(sub, mode, &mut report) {
                report.error = Some(e.to_string());
                report.pending = true;
            }
            report
        };
        if subscriptions.len() < 2 {
            return Ok(subscriptions.iter().map(one).collect());
        }
        Ok(std::thread::scope(|scope| {
            let handles: Vec<_> = subscriptions
                .iter()
                .map(|sub| (sub, scope.spawn(move || one(sub))))
                .collect();
            handles
                .into_iter()
                .map(|(sub, handle)| {
                    handle.join().unwrap_or_else(|_| DeliveryReport {
                        subscription_arn: sub.arn(),
                        error: Some("the delivery thread panicked".into()),
                        pending: true,
                        ..DeliveryReport::default()
                    })
                })
                .collect()
        }))
    }

    fn deliver_subscription(
        &self,
        sub: &Subscription,
        mode: Mode,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let lock_path = cursor_lock_path(&self.path, &sub.id);
        let wait = sub.protocol == Protocol::Queue || mode == Mode::Drain;
        let _guard = match self.dir().storage.lock(&lock_path, wait) {
            Ok(guard) => guard,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Another process is delivering it and will see this message too, or leave
                // it pending for the next publish or `deliver`.
                report.pending = true;
                return Ok(());
            }
            Err(e) => return Err(Error::io("lock", &lock_path, e)),
        };
        let mut cursor = self.current_cursor(sub)?;
        let result = match sub.protocol {
            Protocol::Queue => self.deliver_queue(sub, &mut cursor, report),
            _ => self.deliver_remote(sub, &mut cursor, mode, report),
        };
        // Remote deliveries save their cursor after every message themselves; this is for
        // queue subscriptions (now and then) and a drain's end.
        let force = mode == Mode::Drain || sub.protocol != Protocol::Queue;
        let saved = self.remember(sub, cursor, force);
        result.and(saved)
    }

    /// The cursor to deliver from: this process's if it is at least as far as the file's.
    fn current_cursor(&self, sub: &Subscription) -> Result<Cursor> {
        let path = cursor_path(&self.path, &sub.id);
        let saved = meta::read::<Cursor>(&*self.dir().storage, &path, CURSOR_MAGIC)?;
        let memos = lock(&self.memos);
        let mine = memos.get(&sub.id).map(|m| m.cursor.clone());
        Ok(match (mine, saved) {
            (Some(mine), Some(saved)) if saved.offset > mine.offset => saved,
            (Some(mine), _) => mine,
            (None, Some(saved)) => saved,
            // Written at subscribe; gone only if it was unsubscribed meanwhile.
            (None, None) => Cursor {
                offset: self.end_offset()?,
                ..Cursor::default()
            },
        })
    }

    fn remember(&self, sub: &Subscription, cursor: Cursor, force: bool) -> Result<()> {
        let mut memos = lock(&self.memos);
        let memo = memos.entry(sub.id.clone()).or_insert_with(|| Memo {
            cursor: Cursor::default(),
            saved: None,
            saved_at: Instant::now(),
        });
        let saved_offset = memo.saved.as_ref().map_or(0, |c| c.offset);
        let due = force
            || cursor.offset >= saved_offset + SAVE_EVERY
            || memo.saved_at.elapsed() >= SAVE_INTERVAL;
        if due && memo.saved.as_ref() != Some(&cursor) {
            self.write_cursor(sub, &cursor)?;
            memo.saved = Some(cursor.clone());
            memo.saved_at = Instant::now();
        }
        memo.cursor = cursor;
        Ok(())
    }

    /// Writes the cursor now (remote deliveries: after every message or attempt).
    fn save_cursor(&self, sub: &Subscription, cursor: &Cursor) -> Result<()> {
        self.write_cursor(sub, cursor)?;
        let mut memos = lock(&self.memos);
        let memo = memos.entry(sub.id.clone()).or_insert_with(|| Memo {
            cursor: cursor.clone(),
            saved: None,
            saved_at: Instant::now(),
        });
        memo.saved = Some(cursor.clone());
        memo.saved_at = Instant::now();
        Ok(())
    }

    fn write_cursor(&self, sub: &Subscription, cursor: &Cursor) -> Result<()> {
        meta::write(
            &*self.dir().storage,
            &cursor_path(&self.path, &sub.id),
            CURSOR_MAGIC,
            cursor,
        )
    }

    fn policy(&self, sub: &Subscription) -> Result<Option<Arc<FilterPolicy>>> {
        let Some(text) = &sub.filter_policy else {
            return Ok(None);
        };
        let key = (sub.id.clone(), text.clone());
        let mut policies = lock(&self.policies);
        if let Some(p) = policies.get(&key) {
            return Ok(Some(Arc::clone(p)));
        }
        let parsed = Arc::new(FilterPolicy::parse(text, sub.filter_scope)?);
        policies.insert(key, Arc::clone(&parsed));
        Ok(Some(parsed))
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        let mut queues = lock(&self.queues);
        // A handle an I/O failure stopped is opened again (its logs refuse writes until then).
        if let Some(q) = queues.get(name).filter(|q| !q.is_stopped()) {
            return Ok(Arc::clone(q));
        }
        let q = self.data.queue(name)?;
        queues.insert(name.to_string(), Arc::clone(&q));
        Ok(q)
    }

    fn outgoing<'a>(&'a self, sub_arn: &'a str, m: &'a StoredMessage) -> Outgoing<'a> {
        Outgoing {
            topic: &self.name,
            subscription_arn: sub_arn,
            message_id: &m.header.id,
            subject: m.header.subject.as_deref(),
            body: &m.body,
            attributes: &m.attributes,
            timestamp_ms: m.timestamp_ms,
            sequence_number: self.attributes.fifo.then(|| format!("{:020}", m.offset)),
        }
    }

    /// The queue message a subscription gets for a published message.
    fn queue_message(
        &self,
        sub: &Subscription,
        m: &StoredMessage,
        fifo_queue: bool,
    ) -> SendMessage {
        let arn = sub.arn();
        let out = self.outgoing(&arn, m);
        let (body, attributes) = if sub.raw {
            (m.body.clone(), m.attributes.clone())
        } else {
            (out.envelope().to_string(), Vec::new())
        };
        SendMessage {
            body,
            attributes,
            delay: None,
            group_id: if fifo_queue {
                m.header.group.clone()
            } else {
                None
            },
            dedup_id: if fifo_queue {
                m.header.dedup.clone()
            } else {
                None
            },
        }
    }

    /// Reads the next batch from `cursor`; an offset removed meanwhile moves it to the start.
    fn next_batch(&self, cursor: &mut Cursor, max: usize) -> Result<Vec<StoredMessage>> {
        loop {
            match self.log.read(
                cursor.offset,
                ReadLimit {
                    max_records: max,
                    max_bytes: 4 << 20,
                },
            ) {
                Err(Error::OffsetTrimmed { start, .. }) => cursor.offset = start,
                Err(e) => return Err(e),
                Ok(batch) => {
                    return batch
                        .iter()
                        .map(|r| decode_record(&r).map_err(|e| self.corrupt(r.offset, &e)))
                        .collect();
                }
            }
        }
    }

    fn matches(&self, sub: &Subscription, m: &StoredMessage) -> Result<bool> {
        Ok(self
            .policy(sub)?
            .is_none_or(|p| p.matches(&m.attributes, &m.body)))
    }

    fn deliver_queue(
        &self,
        sub: &Subscription,
        cursor: &mut Cursor,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let queue = self.queue(&sub.endpoint)?;
        let fifo_queue = queue.attributes()?.fifo;
        let end = queue.message_log_end()?;
        // A mark past the end: the queue was deleted and made again; look at all of it.
        let mark = cursor.queue_mark.unwrap_or(end);
        let mark = if mark > end { 0 } else { mark };
        let already = queue.delivered_since(mark, &self.source, self.incarnation)?;
        loop {
            let batch = self.next_batch(cursor, 1024)?;
            let Some(last) = batch.last() else {
                break;
            };
            let next = last.offset + 1;
            let mut out = Vec::new();
            for m in &batch {
                if !already.contains(&m.offset) && self.matches(sub, m)? {
                    out.push((self.queue_message(sub, m, fifo_queue), m.offset));
                }
            }
            if !out.is_empty() {
                self.push_to_queue(&queue, sub, &out, cursor, report)?;
                cursor.queue_mark = Some(queue.message_log_end()?);
            }
            cursor.offset = next;
        }
        if cursor.queue_mark.is_none() {
            cursor.queue_mark = Some(end);
        }
        Ok(())
    }

    fn push_to_queue(
        &self,
        queue: &Queue,
        sub: &Subscription,
        messages: &[(SendMessage, u64)],
        cursor: &mut Cursor,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        for chunk in messages.chunks(QUEUE_CHUNK) {
            match queue.deliver(chunk, &self.source, self.incarnation) {
                Ok(sent) => report.delivered += sent.len() as u64,
                // One message the queue refuses (too large for it, say): find it, one by
                // one, and give up on it alone.
                Err(Error::InvalidArgument(_)) => {
                    for one in chunk {
                        match queue.deliver(
                            std::slice::from_ref(one),
                            &self.source,
                            self.incarnation,
                        ) {
                            Ok(_) => report.delivered += 1,
                            Err(Error::InvalidArgument(why)) => {
                                self.give_up(sub, &one.0, one.1, &why, cursor, report);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A message that will not be delivered: to the dead-letter queue, else counted and
    /// reported.
    fn give_up(
        &self,
        sub: &Subscription,
        message: &SendMessage,
        offset: u64,
        why: &str,
        cursor: &mut Cursor,
        report: &mut DeliveryReport,
    ) {
        let failure = format!("topic offset {offset}: {why}");
        if let Some(dlq) = &sub.dead_letter_queue {
            let moved = self.queue(dlq).and_then(|q| {
                let fifo = q.attributes()?.fifo;
                let mut m = message.clone();
                if !fifo {
                    m.group_id = None;
                    m.dedup_id = None;
                }
                q.deliver(
                    &[(m, offset)],
                    &format!("{}#{}", self.source, sub.id),
                    self.incarnation,
                )
            });
            match moved {
                Ok(_) => {
                    cursor.dead_lettered += 1;
                    report.dead_lettered += 1;
                    cursor.last_failure =
                        Some(format!("{failure} (sent to dead-letter queue {dlq})"));
                    report.error = cursor.last_failure.clone();
                    return;
                }
                Err(e) => {
                    cursor.failed += 1;
                    report.failed += 1;
                    cursor.last_failure = Some(format!(
                        "{failure}; the dead-letter queue {dlq} refused it too: {e}"
                    ));
                    report.error = cursor.last_failure.clone();
                    return;
                }
            }
        }
        cursor.failed += 1;
        report.failed += 1;
        cursor.last_failure = Some(format!("{failure} (given up, no dead-letter queue)"));
        report.error = cursor.last_failure.clone();
    }

    fn deliver_remote(
        &self,
        sub: &Subscription,
        cursor: &mut Cursor,
        mode: Mode,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let arn = sub.arn();
        if mode == Mode::Publish && cursor.next_attempt_ms > self.dir().clock.now_ms() {
            report.pending = true;
            return Ok(());
        }
        loop {
            let batch = self.next_batch(cursor, 256)?;
            if batch.is_empty() {
                return Ok(());
            }
            if sub.protocol == Protocol::File {
                // Lines for every matching message of the batch, one write and one fsync.
                let mut lines = Vec::new();
                let mut first_match = None;
                for (i, m) in batch.iter().enumerate() {
                    if self.matches(sub, m)? {
                        first_match.get_or_insert(i);
                        lines.push(endpoint::file_line(&self.outgoing(&arn, m), sub.raw));
                    }
                }
                let next = batch.last().map_or(cursor.offset, |m| m.offset + 1);
                let Some(first_match) = first_match else {
                    cursor.offset = next;
                    continue;
                };
                match endpoint::append_lines(&sub.endpoint, &lines) {
                    Ok(()) => {
                        report.delivered += lines.len() as u64;
                        cursor.offset = next;
                        cursor.attempts = 0;
                        cursor.next_attempt_ms = 0;
                        self.save_cursor(sub, cursor)?;
                    }
                    Err(e) => {
                        // The attempt counts against the first message the batch delivers.
                        let failed = batch.get(first_match..=first_match).unwrap_or_default();
                        if !self.attempt_failed(sub, failed, &e, cursor, mode, report)? {
                            return Ok(());
                        }
                    }
                }
                continue;
            }
            for m in &batch {
                if !self.matches(sub, m)? {
                    cursor.offset = m.offset + 1;
                    continue;
                }
                loop {
                    let out = self.outgoing(&arn, m);
                    let result = match sub.protocol {
                        Protocol::Http => endpoint::post(&sub.endpoint, &out, sub.raw),
                        Protocol::Exec => endpoint::exec(&sub.endpoint, &out, sub.raw),
                        Protocol::File => endpoint::append_lines(
                            &sub.endpoint,
                            &[endpoint::file_line(&out, sub.raw)],
                        ),
                        Protocol::Queue => Ok(()),
                    };
                    match result {
                        Ok(()) => {
                            report.delivered += 1;
                            cursor.offset = m.offset + 1;
                            cursor.attempts = 0;
                            cursor.next_attempt_ms = 0;
                            self.save_cursor(sub, cursor)?;
                            break;
                        }
                        Err(e) => {
                            if !self.attempt_failed(
                                sub,
                                std::slice::from_ref(m),
                                &e,
                                cursor,
                                mode,
                                report,
                            )? {
                                return Ok(());
                            }
                            if cursor.offset > m.offset {
                                break; // given up on
                            }
                        }
                    }
                }
            }
        }
    }

    /// Records a failed attempt on `batch[0]`. Returns whether to go on delivering now: true
    /// after a wait (drain) or when the message was given up on; false when the retry is
    /// left for later (publish).
    fn attempt_failed(
        &self,
        sub: &Subscription,
        batch: &[StoredMessage],
        why: &str,
        cursor: &mut Cursor,
        mode: Mode,
        report: &mut DeliveryReport,
    ) -> Result<bool> {
        let Some(m) = batch.first() else {
            return Ok(false);
        };
        cursor.attempts += 1;
        cursor.last_failure = Some(format!(
            "attempt {} on topic offset {}: {why}",
            cursor.attempts, m.offset
        ));
        report.error = cursor.last_failure.clone();
        if cursor.attempts >= self.retry.attempts {
            let arn = sub.arn();
            let out = self.outgoing(&arn, m);
            let message = SendMessage {
                body: out.delivered_body(sub.raw),
                attributes: if sub.raw {
                    m.attributes.clone()
                } else {
                    Vec::new()
                },
                delay: None,
                group_id: m.header.group.clone(),
                dedup_id: m.header.dedup.clone(),
            };
            let attempts = cursor.attempts;
            self.give_up(
                sub,
                &message,
                m.offset,
                &format!("{attempts} attempts failed, the last: {why}"),
                cursor,
                report,
            );
            cursor.offset = m.offset + 1;
            cursor.attempts = 0;
            cursor.next_attempt_ms = 0;
            self.save_cursor(sub, cursor)?;
            return Ok(true);
        }
        let delay = self.retry.delay(cursor.attempts);
        cursor.next_attempt_ms = self
            .dir()
            .clock
            .now_ms()
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.save_cursor(sub, cursor)?;
        match mode {
            Mode::Publish => {
                report.pending = true;
                Ok(false)
            }
            Mode::Drain => {
                std::thread::sleep(delay);
                Ok(true)
            }
        }
    }

    /// Every subscription with its delivery state.
    pub fn statuses(&self) -> Result<Vec<SubscriptionStatus>> {
        let end = self.end_offset()?;
        load_subscriptions(self.dir(), &self.name)?
            .into_iter()
            .map(|sub| {
                let cursor = self.current_cursor(&sub)?;
                Ok(SubscriptionStatus {
                    pending: end.saturating_sub(cursor.offset),
                    failed: cursor.failed,
                    dead_lettered: cursor.dead_lettered,
                    attempts: cursor.attempts,
                    last_failure: cursor.last_failure,
                    subscription: sub,
                })
            })
            .collect()
    }
}

impl Drop for Topic {
    /// Writes the queue cursors this handle advanced since their last write, so the next
    /// process starts its exactly-once look from close by. Best effort: a crash instead
    /// only makes that look longer.
    fn drop(&mut self) {
        let Ok(subscriptions) = load_subscriptions(self.dir(), &self.name) else {
            return;
        };
        let memos = std::mem::take(&mut *lock(&self.memos));
        for sub in subscriptions {
            if let Some(memo) = memos.get(&sub.id)
                && memo.cursor.offset > memo.saved.as_ref().map_or(0, |c| c.offset)
            {
                let lock_path = cursor_lock_path(&self.path, &sub.id);
                // Only while nobody else delivers it: their cursor may be newer.
                if let Ok(_guard) = self.dir().storage.lock(&lock_path, false) {
                    let newer = meta::read::<Cursor>(
                        &*self.dir().storage,
                        &cursor_path(&self.path, &sub.id),
                        CURSOR_MAGIC,
                    )
                    .ok()
                    .flatten()
                    .is_some_and(|saved| saved.offset > memo.cursor.offset);
                    if !newer {
                        let _ = self.write_cursor(&sub, &memo.cursor);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let p = RetryPolicy {
            attempts: 5,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let delays: Vec<u128> = (1..=4).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
    }
}
