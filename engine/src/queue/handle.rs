//! An open queue: send, receive, delete, change visibility, purge, dead-letter moves.
//!
//! ```text
//! <data>/queues/<name>/queue.meta   attributes (see super::attributes)
//! <data>/queues/<name>/messages/    message log: one record per message sent
//! <data>/queues/<name>/journal/     state log: one record per state event; its writer
//!                                   lock is the queue lock, held by every state change
//! <data>/queues/<name>/state.snap   snapshot of the state at a journal offset
//! ```
//!
//! A standard send only appends to the message log (the log's own lock orders concurrent
//! senders, and concurrent appends share an fsync); a FIFO send holds that lock from its
//! deduplication check through its append. Everything else takes the queue lock,
//! brings the in-memory [`State`] up to date by applying the journal records other processes
//! appended since, decides, appends its events to the journal as one atomic batch, and
//! applies them. The journal is written without waiting for the fsync, which happens after the
//! queue lock is released, so that concurrent receivers and deleters share one fsync too.
//!
//! A receive on a standard queue does not wait for that fsync at all: its events become
//! durable with the journal's next sync (a delete, a visibility change, a snapshot, a
//! reclaim, a dead-letter move, or the handle being dropped). A power loss can undo it, and
//! the message is then visible again at once with its old receive count: a redelivery,
//! which at-least-once delivery allows, of a message whose consumer went down with the
//! machine. Sends, deletes and visibility changes are durable before they return, and FIFO
//! receives too (FIFO promises no duplicates), so that a message a consumer holds stays in
//! flight. beanstalkd goes further and never logs a reserve; here it saves one of the three
//! fsyncs of a send-receive-delete cycle.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use byteorder::{ByteOrder, LittleEndian};
use sha2::{Digest, Sha256};

use super::attributes::{
    MAX_DELAY, MAX_RECEIVE_WAIT, MAX_VISIBILITY_TIMEOUT, QueueAttributes, QueueInfo, info, load,
    queues_dir,
};
use super::check::{JOURNAL_DIR, MESSAGES_DIR};
use super::message::{
    MessageAttribute, hex, md5_hex, md5_of_message_attributes, validate_attributes, validate_body,
    validate_fifo_id,
};
use super::state::State;
use super::stored::{Event, KIND_MESSAGE, MessageHeader, Origin, encode_payload};
use super::txn::Txn;
use crate::datadir::{DataDir, DirInner};
use crate::durability::DurabilityMode;
use crate::error::{CorruptionKind, Error, Result};
use crate::log::{
    Durability, Entry, Log, LogOptions, LogReader, ReadLimit, Record, Retention, WriterLock,
};
use crate::meta;

/// Most messages one receive returns.
pub const MAX_RECEIVE_MESSAGES: usize = 10;
/// How long a FIFO deduplication id is remembered: 5 minutes.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);
pub use super::message::MAX_FIFO_ID_LEN;

pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"SHOALQSN";
pub(crate) const SNAPSHOT_FILE: &str = "state.snap";
/// A snapshot is written after this many journal records (unless
/// [`crate::DirOptions::queue_maintenance_every`] says otherwise).
const SNAPSHOT_EVERY: u64 = 4096;
/// Most message-log records one receive looks at past the cursor (bounds a receive's work,
/// and a FIFO queue's held-back set, when the front of the queue is all delayed or busy).
pub(crate) const SCAN_LIMIT: usize = 1024;
/// Most held-back messages (FIFO messages passed by the scan while their group was busy) a
/// queue keeps in memory; past it, receives deliver from what is held until groups free up.
pub(crate) const HELD_LIMIT: usize = 100_000;
/// Journal records between two looks for disk space to give back (unless
/// [`crate::DirOptions::queue_maintenance_every`] says otherwise).
const RECLAIM_EVERY: u64 = 1024;
/// Attributes are re-read at most this often by a long-lived handle.
const ATTRIBUTES_TTL: Duration = Duration::from_secs(1);

/// One message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendMessage {
    /// The body: 1 byte up to the queue's maximum (with the attributes), characters SQS
    /// allows only.
    pub body: String,
    /// Up to 10 message attributes.
    pub attributes: Vec<MessageAttribute>,
    /// Delivery delay (standard queues only; default: the queue's).
    pub delay: Option<Duration>,
    /// FIFO message group (required on FIFO queues).
    pub group_id: Option<String>,
    /// FIFO deduplication id (required on FIFO queues without content-based deduplication).
    pub dedup_id: Option<String>,
}

impl SendMessage {
    /// A message with just a body.
    pub fn new(body: impl Into<String>) -> Self {
        SendMessage {
            body: body.into(),
            ..SendMessage::default()
        }
    }
}

/// What a send returns per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id (for a FIFO duplicate, the original's).
    pub message_id: String,
    /// MD5 of the body, hex.
    pub md5_of_body: String,
    /// MD5 of the message attributes as SQS computes it; `None` without attributes.
    pub md5_of_message_attributes: Option<String>,
    /// FIFO sequence number (20 digits).
    pub sequence_number: Option<String>,
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receive {
    /// 1 to 10 messages.
    pub max_messages: usize,
    /// Long-poll wait (0 to 20 s); `None`: the queue's receive wait.
    pub wait: Option<Duration>,
    /// Visibility timeout of the received messages; `None`: the queue's.
    pub visibility_timeout: Option<Duration>,
}

impl Default for Receive {
    fn default() -> Self {
        Receive {
            max_messages: 1,
            wait: None,
            visibility_timeout: None,
        }
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id.
    pub message_id: String,
    /// Names this receive: delete and change visibility with it.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// MD5 of the body, hex.
    pub md5_of_body: String,
    /// MD5 of the message attributes; `None` without attributes.
    pub md5_of_message_attributes: Option<String>,
    /// The message attributes.
    pub message_attributes: Vec<MessageAttribute>,
    /// `ApproximateReceiveCount`, this receive included.
    pub receive_count: u32,
    /// `SentTimestamp`, ms since the epoch.
    pub sent_timestamp: u64,
    /// `ApproximateFirstReceiveTimestamp`, ms since the epoch.
    pub first_receive_timestamp: u64,
    /// `MessageGroupId`.
    pub group_id: Option<String>,
    /// `MessageDeduplicationId` (FIFO).
    pub dedup_id: Option<String>,
    /// `SequenceNumber` (FIFO).
    pub sequence_number: Option<String>,
}

/// Approximate message counts, as `GetQueueAttributes` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// `ApproximateNumberOfMessages`: visible now.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, visibility timeout running.
    pub in_flight: u64,
    /// `ApproximateNumberOfMessagesDelayed`.
    pub delayed: u64,
}

/// A queue's message log as this handle has it.
#[derive(Debug)]
enum Messages {
    /// The normal case: open for appending (and reading).
    Writable(Log),
    /// Its active segment is damaged where it was already synced, so it does not open for
    /// writing: reads work up to the damage, and every write fails naming it until
    /// `shoal check --repair` mends the log and the queue is opened again.
    Damaged {
        reader: LogReader,
        damage: (PathBuf, u64, crate::error::CorruptionKind),
    },
}

/// An open queue. Share it between threads; every process may open the same queue.
#[derive(Debug)]
pub struct Queue {
    pub(super) dir: Arc<DirInner>,
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) incarnation: u64,
    pub(super) attributes: Mutex<(Arc<QueueAttributes>, Instant)>,
    messages: Messages,
    /// The state journal, opened on first use (a standard send never needs it).
    journal: OnceLock<Log>,
    /// `None` until loaded, and after a failed journal write (reload from disk).
    pub(super) state: Mutex<Option<Loaded>>,
    dedup: Mutex<Dedup>,
    pub(super) targets: Mutex<HashMap<String, Arc<Queue>>>,
    /// FIFO: the group served last, so receives take turns between groups.
    pub(super) fifo_turn: Mutex<String>,
    /// A receive left journal events for the journal's next sync to make durable (on an
    /// `Always` queue): dropping the handle syncs them, so that a queue left alone has no
    /// unsynced tail and the next process to open it no recovery to write.
    pub(super) deferred: AtomicBool,
    /// Set when this process deleted the queue: every call fails with `NotFound` from then
    /// on (another process's delete is caught at the logs' locks instead).
    pub(super) deleted: AtomicBool,
}

#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) state: State,
    /// Journal offset the newest snapshot covers (the journal below it may go).
    pub(super) snapshot_at: u64,
    /// Journal offset at which to write the next snapshot.
    pub(super) snapshot_due: u64,
    /// Message-log segments this handle compacted, with the records each kept.
    pub(super) compacted: HashMap<u64, u64>,
}

/// FIFO deduplication ids of the last 5 minutes, built from the message log.
#[derive(Debug, Default)]
struct Dedup {
    /// Message-log offset up to which ids are known; `None` before the first look.
    scanned: Option<u64>,
    ids: HashMap<String, (String, u64, u64)>,
    order: std::collections::VecDeque<(u64, String)>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A new message id: a version 4 UUID. Its random bits come from a generator seeded once per
/// process from the OS (one `getrandom` instead of one per message): splitmix64 is a bijection,
/// so ids of one process never repeat, and 128-bit seeds keep processes apart.
fn message_id() -> String {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    pub(super) fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (a, b) = *SEED.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = splitmix64(a ^ n);
    let low = splitmix64(b.wrapping_add(n));
    let mut bytes = [0u8; 16];
    LittleEndian::write_u64(&mut bytes[..8], high);
    LittleEndian::write_u64(&mut bytes[8..], low);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

pub(super) fn sequence_number(offset: u64) -> String {
    format!("{offset:020}")
}

pub(super) fn not_found(name: &str) -> Error {
    Error::NotFound {
        kind: "queue",
        name: name.to_string(),
    }
}

pub(super) fn corrupt(path: &std::path::Path, offset: u64, e: &Error) -> Error {
    Error::corruption(path, offset, CorruptionKind::Metadata(e.to_string()))
}

fn log_options(dir: &DirInner, attributes: &QueueAttributes, journal: bool) -> LogOptions {
    let durability = match (attributes.durability, journal) {
        // The journal is fsynced by hand after the queue lock is released.
        (DurabilityMode::Always, true) => Durability::Never,
        (mode, _) => mode.log(),
    };
    LogOptions {
        segment_bytes_max: dir.options.queue_segment_bytes.unwrap_or(if journal {
            16 << 20
        } else {
            64 << 20
        }),
        // Segments roll at least four times per retention period so expired messages go soon.
        segment_age_max: Some(Duration::from_millis(
            (ms(attributes.retention) / 4).clamp(1_000, 3_600_000),
        )),
        max_record_bytes: (2 << 20) + (64 << 10),
        durability,
        writer_lock: if dir.options.exclusive {
            WriterLock::Exclusive
        } else {
            WriterLock::Shared
        },
        // Sends and deletes are small and each is fsynced before it returns.
        prefill: attributes.durability == DurabilityMode::Always,
        ..LogOptions::default()
    }
}

/// True when a message came from a queue (a dead-letter move), which a redrive sends it back
/// to; messages delivered from a topic have no queue to go back to.
pub(super) fn is_queue_origin(origin: &Origin) -> bool {
    crate::names::validate_queue_name(&origin.queue).is_ok()
}

/// Opening queues.
impl DataDir {
    /// Opens a queue for sending, receiving and the rest. Calls for one queue return the same
    /// handle while one is alive, so that every thread of the process shares its logs' fsyncs
    /// (group commit) and one in-process lock instead of queueing on the cross-process one.
    /// Without [`crate::DirOptions::exclusive`] the handle is shared only while it is still
    /// the queue on disk (not deleted and made again by another process) and usable (its
    /// logs not failed or damaged); otherwise a fresh one is opened.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        open_queue(self.inner(), name)
    }
}

pub(super) fn open_queue(dir: &Arc<DirInner>, name: &str) -> Result<Arc<Queue>> {
    let cached = |open: &HashMap<String, std::sync::Weak<Queue>>| -> Result<Option<Arc<Queue>>> {
        match open.get(name).and_then(std::sync::Weak::upgrade) {
            Some(queue) if dir.options.exclusive || queue.still_current()? => Ok(Some(queue)),
            _ => Ok(None),
        }
    };
    let mut open = lock(&dir.open_queues);
    if let Some(queue) = cached(&open)? {
        return Ok(queue);
    }
    if !dir.options.exclusive {
        // Opening waits for the logs' cross-process locks, which a thread of this process
        // may hold while it needs this map (a receive moving a message to its dead-letter
        // queue): open without holding it, and keep whichever handle got in first.
        drop(open);
        let fresh = Arc::new(Queue::open(dir, name)?);
        open = lock(&dir.open_queues);
        if let Some(queue) = cached(&open)? {
            return Ok(queue);
        }
        open.retain(|_, q| q.strong_count() > 0);
        open.insert(name.to_string(), Arc::downgrade(&fresh));
        return Ok(fresh);
    }
    let queue = Arc::new(Queue::open(dir, name)?);
    open.retain(|_, q| q.strong_count() > 0);
    open.insert(name.to_string(), Arc::downgrade(&queue));
    Ok(queue)
}

/// Opens one of a queue's logs: `messages`, or with `journal` the state journal.
fn open_log(
    dir: &DirInner,
    path: &std::path::Path,
    attributes: &QueueAttributes,
    journal: bool,
) -> Result<Log> {
    Log::open(
        Arc::clone(&dir.storage),
        Arc::clone(&dir.clock),
        path.join(if journal { JOURNAL_DIR } else { MESSAGES_DIR }),
        log_options(dir, attributes, journal),
    )
}

/// Creates a new queue's two logs (before its attributes are written, which is what makes it
/// exist), so that opening a queue never writes.
pub(super) fn create_logs(dir: &DirInner, name: &str, attributes: &QueueAttributes) -> Result<()> {
    let path = queues_dir(dir).join(name);
    // A leftover of an interrupted create that never got its attributes.
    for sub in [MESSAGES_DIR, JOURNAL_DIR] {
        dir.remove_tree(&path.join(sub))?;
    }
    open_log(dir, &path, attributes, false)?;
    open_log(dir, &path, attributes, true).map(drop)
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A failure changes nothing promised: the events stay unsynced, and whoever opens
        // the queue next recovers the journal's tail. A journal deleted since (its queue
        // deleted, perhaps made again) refuses the sync at its lock, touching nothing.
        if *self.deferred.get_mut()
            && !*self.deleted.get_mut()
            && let Some(journal) = self.journal.get()
        {
            let _ = journal.sync();
        }
    }
}

impl Queue {
    pub(super) fn open(dir: &Arc<DirInner>, name: &str) -> Result<Queue> {
        let meta = load(dir, name)?.ok_or_else(|| not_found(name))?;
        let path = queues_dir(dir).join(name);
        let attributes = meta.attributes.clone();
        let messages = match open_log(dir, &path, &attributes, false) {
            Ok(log) => {
                // Messages past the retention period go even from a queue nobody receives
                // from (the rest of the reclaiming runs as state changes accumulate).
                log.enforce_retention(&Retention {
                    max_age: Some(attributes.retention),
                    ..Retention::default()
                })?;
                Messages::Writable(log)
            }
            Err(Error::Corruption { file, offset, kind }) => Messages::Damaged {
                reader: LogReader::open(Arc::clone(&dir.storage), path.join("messages"))?,
                damage: (file, offset, kind),
            },
            Err(e) => return Err(e),
        };
        Ok(Queue {
            dir: Arc::clone(dir),
            name: name.to_string(),
            incarnation: meta.created_ms,
            path,
            attributes: Mutex::new((Arc::new(attributes), Instant::now())),
            messages,
            journal: OnceLock::new(),
            state: Mutex::new(None),
            dedup: Mutex::new(Dedup::default()),
            targets: Mutex::new(HashMap::new()),
            fifo_turn: Mutex::new(String::new()),
            deferred: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
        })
    }

    /// True while this handle is the queue on disk and its logs take writes: the queue was not
    /// deleted and made again since it was opened, and no I/O failure or damage stopped them.
    fn still_current(&self) -> Result<bool> {
        let Some(meta) = load(&self.dir, &self.name)? else {
            return Err(not_found(&self.name));
        };
        Ok(meta.created_ms == self.incarnation && !self.is_stopped())
    }

    /// True when an I/O failure or damage stopped this handle's logs: a caller that keeps
    /// handles (a topic's deliveries, a queue's dead-letter target) opens the queue again.
    pub(crate) fn is_stopped(&self) -> bool {
        if self.deleted.load(Ordering::Relaxed) {
            return true;
        }
        let failed = |log: Option<&Log>| log.is_some_and(Log::is_poisoned);
        self.messages_damaged() || failed(self.message_log().ok()) || failed(self.journal.get())
    }

    /// The message log, to append to (or compact); fails with the damage when the log's
    /// active segment is too damaged to open for writing.
    pub(super) fn message_log(&self) -> Result<&Log> {
        match &self.messages {
            Messages::Writable(log) => Ok(log),
            Messages::Damaged {
                damage: (file, offset, kind),
                ..
            } => Err(Error::corruption(file, *offset, kind.clone())),
        }
    }

    /// Reads the message log (up to any damage).
    pub(super) fn message_reader(&self) -> &LogReader {
        match &self.messages {
            Messages::Writable(log) => log.reader(),
            Messages::Damaged { reader, .. } => reader,
        }
    }

    /// True when the message log cannot be written (see [`Messages::Damaged`]).
    pub(super) fn messages_damaged(&self) -> bool {
        matches!(self.messages, Messages::Damaged { .. })
    }

    /// The state journal, opened on first use.
    pub(super) fn journal(&self) -> Result<&Log> {
        if let Some(journal) = self.journal.get() {
            return Ok(journal);
        }
        let attributes = self.attributes()?;
        let journal = open_log(&self.dir, &self.path, &attributes, true)?;
        // Another thread may have opened it meanwhile: keep the first (dropping ours).
        Ok(self.journal.get_or_init(|| journal))
    }

    /// A log of this queue found deleted by another process means the queue is gone.
    fn gone(&self, e: Error) -> Error {
        e.when_log_gone(|| not_found(&self.name))
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's attributes (re-read from disk at most once a second).
    pub fn attributes(&self) -> Result<Arc<QueueAttributes>> {
        // Every operation starts here.
        if self.deleted.load(Ordering::Relaxed) {
            return Err(not_found(&self.name));
        }
        let mut cached = lock(&self.attributes);
        if cached.1.elapsed() >= ATTRIBUTES_TTL {
            let meta = load(&self.dir, &self.name)?.ok_or_else(|| not_found(&self.name))?;
            *cached = (Arc::new(meta.attributes), Instant::now());
        }
        Ok(Arc::clone(&cached.0))
    }

    /// The queue's catalog entry, read now.
    pub fn info(&self) -> Result<QueueInfo> {
        let meta = load(&self.dir, &self.name)?.ok_or_else(|| not_found(&self.name))?;
        *lock(&self.attributes) = (Arc::new(meta.attributes.clone()), Instant::now());
        Ok(info(meta))
    }

    // ---- sending ----

    /// Checks a message against the queue's rules; returns its stored header and payload.
    pub(super) fn prepare(
        &self,
        attributes: &QueueAttributes,
        m: &SendMessage,
    ) -> Result<(MessageHeader, Vec<u8>)> {
        validate_body(&m.body)?;
        validate_attributes(&m.attributes)?;
        let size = m.body.len()
            + m.attributes
                .iter()
                .map(MessageAttribute::size)
                .sum::<usize>();
        if size > attributes.max_message_bytes as usize {
            return Err(Error::InvalidArgument(format!(
                "the message is {size} bytes (body and attributes), more than queue {:?} allows ({})",
                self.name, attributes.max_message_bytes
            )));
        }
        let delay = match m.delay {
            Some(_) if attributes.fifo => {
                return Err(Error::InvalidArgument(
                    "a FIFO queue takes no per-message delay (set the queue's delay instead)"
                        .into(),
                ));
            }
            Some(d) if d > MAX_DELAY => {
                return Err(Error::InvalidArgument(format!(
                    "the delay must be at most 15 minutes, not {}s",
                    d.as_secs_f64()
                )));
            }
            Some(d) => d,
            None => attributes.delay,
        };
        let dedup = if attributes.fifo {
            let group = m.group_id.as_deref().ok_or_else(|| {
                Error::InvalidArgument("a FIFO queue needs a message group id (--group-id)".into())
            })?;
            validate_fifo_id("message group id", group)?;
            match (&m.dedup_id, attributes.content_based_deduplication) {
                (Some(id), _) => {
                    validate_fifo_id("deduplication id", id)?;
                    Some(id.clone())
                }
                (None, true) => Some(hex(&Sha256::digest(m.body.as_bytes()))),
                (None, false) => {
                    return Err(Error::InvalidArgument(
                        "a FIFO queue without content-based deduplication needs a deduplication id (--dedup-id)".into(),
                    ));
                }
            }
        } else {
            if m.dedup_id.is_some() {
                return Err(Error::InvalidArgument(
                    "deduplication ids are for FIFO queues only".into(),
                ));
            }
            if let Some(group) = &m.group_id {
                validate_fifo_id("message group id", group)?;
            }
            None
        };
        let (payload, attributes_len) = encode_payload(&m.attributes, m.body.as_bytes());
        let header = MessageHeader {
            id: message_id(),
            sent_ms: 0, // set when appended
            delay_ms: ms(delay),
            group: m.group_id.clone(),
            dedup,
            receive_count: 0,
            first_receive_ms: 0,
            origin: None,
            attributes_len,
        };
        Ok((header, payload))
    }

    /// Sends one message.
    pub fn send(&self, message: &SendMessage) -> Result<Sent> {
        let mut sent = self.send_batch(std::slice::from_ref(message))?;
        sent.pop()
            .ok_or_else(|| Error::InvalidArgument("nothing sent".into()))
    }

    /// Sends messages as one atomic append, in order: every message is checked first, and
    /// nothing is written if one fails. Returns once they are durable under the queue's
    /// durability.
    pub fn send_batch(&self, messages: &[SendMessage]) -> Result<Vec<Sent>> {
        let attributes = self.attributes()?;
        let mut prepared = Vec::with_capacity(messages.len());
        for m in messages {
            prepared.push(self.prepare(&attributes, m)?);
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.dir.clock.now_ms();
        for (header, _) in &mut prepared {
            header.sent_ms = now;
        }
        if attributes.fifo {
            return self.send_fifo(messages, prepared).map_err(|e| self.gone(e));
        }
        let appended = self.append_messages(&prepared).map_err(|e| self.gone(e))?;
        Ok(messages
            .iter()
            .zip(&prepared)
            .enumerate()
            .map(|(i, (m, (header, _)))| Sent {
                message_id: header.id.clone(),
                md5_of_body: md5_hex(m.body.as_bytes()),
                md5_of_message_attributes: md5_of_message_attributes(&m.attributes),
                sequence_number: m
                    .group_id
                    .as_ref()
                    .map(|_| sequence_number(appended + i as u64)),
            })
            .collect())
    }

    pub(super) fn append_messages(&self, prepared: &[(MessageHeader, Vec<u8>)]) -> Result<u64> {
        let headers: Vec<Vec<u8>> = prepared.iter().map(|(h, _)| h.encode()).collect();
        let entries: Vec<Entry<'_>> = headers
            .iter()
            .zip(prepared)
            .map(|(header, (_, payload))| Entry {
                kind: KIND_MESSAGE,
                header,
                payload,
            })
            .collect();
        Ok(self.message_log()?.append(&entries)?.first_offset)
    }

    /// FIFO sends hold the message log's writer lock from the deduplication check through
    /// the append, so the two are one step across processes.
    pub(super) fn send_fifo(
        &self,
        messages: &[SendMessage],
        prepared: Vec<(MessageHeader, Vec<u8>)>,
    ) -> Result<Vec<Sent>> {
        self.message_log()?
            .with_writer_lock(|| self.send_fifo_locked(messages, prepared))
    }

    pub(super) fn send_fifo_locked(
        &self,
        messages: &[SendMessage],
        prepared: Vec<(MessageHeader, Vec<u8>)>,
    ) -> Result<Vec<Sent>> {
        let mut dedup = lock(&self.dedup);
        let now = self.dir.clock.now_ms();
        self.catch_up_dedup(&mut dedup, now)?;
        // Per message: the original (id, offset) of a duplicate, or an index into `fresh`.
        let mut fresh = Vec::new();
        let mut outcome = Vec::with_capacity(prepared.len());
        let mut batch_ids: HashMap<&str, usize> = HashMap::new();
        for (header, payload) in &prepared {
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
            self.append_messages(&fresh)?
        };
        for (i, (header, _)) in fresh.iter().enumerate() {
            let offset = first + i as u64;
            dedup.remember(
                header.dedup.clone().unwrap_or_default(),
                header.id.clone(),
                offset,
                now,
            );
        }
        if !fresh.is_empty() {
            dedup.scanned = Some(first + fresh.len() as u64);
        }
        Ok(messages
            .iter()
            .zip(outcome)
            .map(|(m, o)| {
                let (id, offset) = match o {
                    Ok(i) => (fresh[i].0.id.clone(), first + i as u64),
                    Err(original) => original,
                };
                Sent {
                    message_id: id,
                    md5_of_body: md5_hex(m.body.as_bytes()),
                    md5_of_message_attributes: md5_of_message_attributes(&m.attributes),
                    sequence_number: Some(sequence_number(offset)),
                }
            })
            .collect())
    }

    /// Learns the deduplication ids of messages appended since the last look (by other
    /// processes too), and forgets those older than the window.
    fn catch_up_dedup(&self, dedup: &mut Dedup, now: u64) -> Result<()> {
        let horizon = now.saturating_sub(ms(DEDUP_WINDOW));
        let from = match dedup.scanned {
            Some(from) => from,
            None => self.message_reader().offset_at_time(horizon)?,
        };
        let from = self.each_message(from, |record, header| {
            if let Some(key) = header.dedup
                && header.origin.is_none()
                && record.timestamp_ms > horizon
            {
                dedup.remember(key, header.id, record.offset, record.timestamp_ms);
            }
            ControlFlow::Continue(())
        })?;
        dedup.scanned = Some(from);
        while let Some((at, key)) = dedup.order.front() {
            if *at > horizon {
                break;
            }
            if let MapEntry::Occupied(e) = dedup.ids.entry(key.clone())
                && e.get().2 == *at
            {
                e.remove();
            }
            dedup.order.pop_front();
        }
        Ok(())
    }

    pub(super) fn message_header(&self, record: &Record<'_>) -> Result<MessageHeader> {
        MessageHeader::decode(record.header)
            .map_err(|e| corrupt(&self.path.join("messages"), record.offset, &e))
    }

    // ---- the locked state ----

    /// Runs `f` under the queue lock (the journal's writer lock: every state change holds it)
    /// with the state brought up to date; `f` commits its events through the [`Txn`]. Syncs
    /// the journal after the lock is released when the queue is `Always` durable and
    /// something that must be durable was written, so concurrent operations share the fsync.
    pub(super) fn locked<R>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<R>) -> Result<R> {
        let attributes = self.attributes()?;
        let mut guard = lock(&self.state);
        let (r, wrote) = self
            .journal()?
            .with_writer_lock(|| self.locked_inner(&mut guard, &attributes, f))
            .map_err(|e| self.gone(e))?;
        drop(guard);
        if wrote && attributes.durability == DurabilityMode::Always {
            self.journal()?.sync().map_err(|e| self.gone(e))?;
        }
        Ok(r)
    }

    pub(super) fn locked_inner<R>(
        &self,
        guard: &mut Option<Loaded>,
        attributes: &QueueAttributes,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R>,
    ) -> Result<(R, bool)> {
        {
            if guard.is_none() {
                *guard = Some(self.load_state()?);
            }
            let loaded = guard.as_mut().ok_or_else(|| not_found(&self.name))?;
            let caught_up = match self.catch_up(&mut loaded.state) {
                // Another process snapshotted and removed the journal this state would
                // replay: start again from that snapshot.
                Err(Error::OffsetTrimmed { .. }) => self.load_state().and_then(|fresh| {
                    *loaded = fresh;
                    self.catch_up(&mut loaded.state)
                }),
                other => other,
            };
            let outcome = caught_up.and_then(|()| {
                let mut txn = Txn {
                    queue: self,
                    now: self.dir.clock.now_ms(),
                    attributes,
                    began_at: loaded.state.journal_next,
                    loaded,
                    wrote: false,
                };
                let r = f(&mut txn)?;
                let wrote = txn.wrote;
                txn.maybe_snapshot()?;
                txn.maybe_reclaim()?;
                Ok((r, wrote))
            });
            if outcome.is_err() {
                // What is on disk is the truth: reload it next time.
                *guard = None;
            }
            outcome
        }
    }

    /// Journal records between two automatic snapshots.
    pub(super) fn snapshot_every(&self) -> u64 {
        self.dir
            .options
            .queue_maintenance_every
            .unwrap_or(SNAPSHOT_EVERY)
            .max(1)
    }

    /// Journal records between two automatic looks for disk space to give back.
    pub(super) fn reclaim_every(&self) -> u64 {
        self.dir
            .options
            .queue_maintenance_every
            .unwrap_or(RECLAIM_EVERY)
            .max(1)
    }

    pub(super) fn load_state(&self) -> Result<Loaded> {
        let path = self.path.join(SNAPSHOT_FILE);
        let state: State =
            meta::read(&*self.dir.storage, &path, SNAPSHOT_MAGIC)?.unwrap_or_default();
        Ok(Loaded {
            snapshot_at: state.journal_next,
            snapshot_due: state.journal_next + self.snapshot_every(),
            compacted: HashMap::new(),
            state,
        })
    }

    /// Applies the journal records appended since the state was last brought up to date
    /// (called inside the journal's writer lock, where the writer knows the journal's end).
    pub(super) fn catch_up(&self, state: &mut State) -> Result<()> {
        if self.journal()?.next_offset() == state.journal_next {
            return Ok(());
        }
        loop {
            let batch = self
                .journal()?
                .read(state.journal_next, ReadLimit::default())?;
            if batch.is_empty() {
                // A repaired journal can end in a gap (events lost with a damaged segment):
                // the state is then as far as the journal goes.
                state.journal_next = state.journal_next.max(self.journal()?.next_offset());
                return Ok(());
            }
            for record in batch.iter() {
                let event = Event::decode(record.payload)
                    .map_err(|e| corrupt(&self.path.join("journal"), record.offset, &e))?;
                state.apply(&event);
            }
            state.journal_next = batch.next_offset();
        }
    }

    pub(super) fn target(&self, name: &str) -> Result<Arc<Queue>> {
        let mut targets = lock(&self.targets);
        if let Some(q) = targets.get(name).filter(|q| !q.is_stopped()) {
            return Ok(Arc::clone(q));
        }
        let q = open_queue(&self.dir, name)?;
        targets.insert(name.to_string(), Arc::clone(&q));
        Ok(q)
    }

    /// Copies a message into `target` (a dead-letter move keeps its receive count; a redrive
    /// resets it).
    pub(super) fn copy_to(
        &self,
        target: &Queue,
        offset: u64,
        counts: Option<(u32, u64)>,
    ) -> Result<()> {
        let batch = self.message_reader().read(offset, ReadLimit::records(1))?;
        let Some(record) = batch.iter().next().filter(|r| r.offset == offset) else {
            // Gone (retention): nothing left to move.
            return Ok(());
        };
        let mut header = self.message_header(&record)?;
        header.origin = Some(Origin {
            queue: self.name.clone(),
            incarnation: self.incarnation,
            offset,
        });
        header.delay_ms = 0;
        (header.receive_count, header.first_receive_ms) = counts.unwrap_or((0, 0));
        let header = header.encode();
        target.message_log()?.append(&[Entry {
            kind: KIND_MESSAGE,
            header: &header,
            payload: record.payload,
        }])?;
        Ok(())
    }

    /// True when `target`'s message log holds, from `from` on, the copy of our `offset`.
    pub(super) fn copied(&self, target: &Queue, from: u64, offset: u64) -> Result<bool> {
        let mut found = false;
        target.each_message(from, |_, header| {
            found = header.origin.as_ref().is_some_and(|o| {
                o.queue == self.name && o.incarnation == self.incarnation && o.offset == offset
            });
            if found {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    /// Calls `f` with every message (and its decoded header) of the message log from `from`
    /// (or the first one still stored) to the end, until it breaks; returns the offset after
    /// the last one looked at.
    pub(super) fn each_message(
        &self,
        mut from: u64,
        mut f: impl FnMut(&Record<'_>, MessageHeader) -> ControlFlow<()>,
    ) -> Result<u64> {
        loop {
            let batch = match self.message_reader().read(from, ReadLimit::default()) {
                Err(Error::OffsetTrimmed { start, .. }) => {
                    from = start;
                    continue;
                }
                batch => batch?,
            };
            if batch.is_empty() {
                return Ok(from);
            }
            for record in batch.iter() {
                let header = self.message_header(&record)?;
                if f(&record, header).is_break() {
                    return Ok(record.offset + 1);
                }
            }
            from = batch.next_offset();
        }
    }

    // ---- receiving ----

    /// Receives up to `max_messages` messages, long-polling up to the wait for one to arrive.
    /// Received messages stay invisible to every receiver until their visibility timeout
    /// ends; then they come back with a new receipt handle and a higher receive count. On a
    /// standard queue a power loss right after the receive may give them back at once (its
    /// events are durable with the queue's next sync, see the module docs); on a FIFO queue
    /// the receive is durable before it returns.
    pub fn receive(&self, request: &Receive) -> Result<Vec<ReceivedMessage>> {
        if !(1..=MAX_RECEIVE_MESSAGES).contains(&request.max_messages) {
            return Err(Error::InvalidArgument(format!(
                "receive takes 1 to {MAX_RECEIVE_MESSAGES} messages, not {}",
                request.max_messages
            )));
        }
        if let Some(t) = request.visibility_timeout
            && t > MAX_VISIBILITY_TIMEOUT
        {
            return Err(Error::InvalidArgument(
                "the visibility timeout must be at most 12 hours".into(),
            ));
        }
        let wait = match request.wait {
            Some(w) if w > MAX_RECEIVE_WAIT => {
                return Err(Error::InvalidArgument(
                    "the receive wait must be at most 20 seconds".into(),
                ));
            }
            Some(w) => w,
            None => self.attributes()?.receive_wait,
        };
        if wait.is_zero() {
            return Ok(self.receive_once(request)?.0);
        }
        let until = Instant::now() + wait;
        // Made before the first look, so a send that lands between a look and the wait
        // still wakes the wait.
        let dirs = [self.path.join("messages"), self.path.join("journal")];
        let mut watcher = self
            .dir
            .storage
            .watch(&[&dirs[0], &dirs[1]])
            .map_err(|e| Error::io("watch", &self.path, e))?;
        loop {
            let (messages, next_deadline) = self.receive_once(request)?;
            let now = Instant::now();
            if !messages.is_empty() || now >= until {
                return Ok(messages);
            }
            // Sleep until another process sends or changes the state, a message's delay or
            // visibility timeout ends, or the wait is over.
            let mut sleep = until - now;
            if let Some(deadline) = next_deadline {
                let left = deadline.saturating_sub(self.dir.clock.now_ms());
                sleep = sleep.min(Duration::from_millis(left));
            }
            watcher
                .wait(sleep)
                .map_err(|e| Error::io("watch", &self.path, e))?;
        }
    }

    pub(super) fn receive_once(
        &self,
        request: &Receive,
    ) -> Result<(Vec<ReceivedMessage>, Option<u64>)> {
        self.locked(|txn| {
            txn.finish_moves()?;
            let out = txn.receive(request)?;
            Ok((out, txn.loaded.state.next_deadline()))
        })
    }

    // ---- deleting and visibility ----

    /// Deletes the messages the receipt handles name; one result per handle, in order. As
    /// in SQS, a handle of a message received again since (standard queues) or already
    /// deleted succeeds without effect; a malformed handle is
    /// [`Error::InvalidReceiptHandle`]; on a FIFO queue, a handle whose visibility timeout
    /// has expired is [`Error::MessageNotInflight`].
    pub fn delete_batch(&self, handles: &[&str]) -> Result<Vec<Result<()>>> {
        self.locked(|txn| {
            let mut events = Vec::new();
            let mut results = Vec::with_capacity(handles.len());
            for handle in handles {
                let result = txn.check_delete(handle);
                if let Ok(Some(offset)) = result {
                    events.push(Event::Deleted { offset });
                }
                results.push(result.map(drop));
            }
            txn.commit(&events)?;
            Ok(results)
        })
    }

    /// Deletes one message; see [`Queue::delete_batch`].
    pub fn delete(&self, handle: &str) -> Result<()> {
        self.delete_batch(&[handle])?.pop().unwrap_or(Ok(()))
    }

    /// Changes the visibility timeout of a received message to `timeout` from now (0 makes
    /// it visible now). The total from its first receive may not pass 12 hours.
    pub fn change_visibility(&self, handle: &str, timeout: Duration) -> Result<()> {
        if timeout > MAX_VISIBILITY_TIMEOUT {
            return Err(Error::InvalidArgument(
                "the visibility timeout must be at most 12 hours".into(),
            ));
        }
        self.locked(|txn| {
            let offset = txn.in_flight(handle)?;
            let now = txn.now;
            let slot = txn
                .loaded
                .state
                .slot(offset)
                .ok_or_else(|| Error::MessageNotInflight("the message is not in flight".into()))?;
            let visible_at = now.saturating_add(ms(timeout));
            if visible_at > slot.first_receive_ms.saturating_add(ms(MAX_VISIBILITY_TIMEOUT)) {
                return Err(Error::InvalidArgument(
                    "the total visibility timeout of a message may not pass 12 hours from its first receive".into(),
                ));
            }
            txn.commit(&[Event::Visibility { offset, visible_at }])
        })
    }

    /// Removes every message sent before now; messages sent after it stay.
    pub fn purge(&self) -> Result<()> {
        self.locked(|txn| {
            let below = txn.queue.message_reader().next_offset()?;
            txn.commit(&[Event::Purged { below }])
        })
    }

    /// Approximate counts of visible, in-flight and delayed messages.
    pub fn counts(&self) -> Result<QueueCounts> {
        self.locked(|txn| {
            let now = txn.now;
            let state = &txn.loaded.state;
            let (mut visible, in_flight, mut delayed) = state.counts(now);
            let queue = txn.queue;
            // A move a crash interrupted (the next receive finishes it): the message is
            // visible here until its copy exists in the target.
            for (offset, moving) in state.pending_moves() {
                let target = queue.target(&moving.target)?;
                if !queue.copied(&target, moving.target_from, offset)? {
                    visible += 1;
                }
            }
            let next = queue.message_reader().next_offset()?;
            let start = queue.message_reader().start_offset()?;
            let reader = queue.message_reader();
            // Past the cursor every message is visible except an expired one (older than
            // the retention period) or a delayed one (only the last 15 minutes of sends).
            // (A message sent exactly one retention period ago has expired.)
            let unexpired =
                reader.offset_at_time(now.saturating_sub(ms(txn.attributes.retention)) + 1)?;
            let cursor = state.cursor.max(start).max(unexpired).min(next);
            let mut from = cursor.max(reader.offset_at_time(now.saturating_sub(ms(MAX_DELAY)))?);
            let mut unscanned_delayed = 0;
            while from < next {
                let batch = queue.message_reader().read(from, ReadLimit::default())?;
                if batch.is_empty() {
                    break;
                }
                for record in batch.iter() {
                    let header = queue.message_header(&record)?;
                    if record.timestamp_ms + header.delay_ms > now {
                        unscanned_delayed += 1;
                    }
                }
                from = batch.next_offset();
            }
            visible += (next - cursor).saturating_sub(unscanned_delayed);
            delayed += unscanned_delayed;
            Ok(QueueCounts {
                visible,
                in_flight,
                delayed,
            })
        })
    }

    /// Moves every visible message of this queue (a dead-letter queue) back to the queue it
    /// came from, or to `to`; like SQS's `StartMessageMoveTask`, run to completion. Each
    /// move is exactly-once: a crash midway is finished by the next operation on this queue.
    /// Returns how many messages moved. As SQS, refuses a queue that no queue's redrive
    /// policy names as its dead-letter queue, moving nothing.
    pub fn redrive(&self, to: Option<&str>) -> Result<u64> {
        if super::attributes::dead_letter_sources(&self.dir, &self.name)?.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "queue {:?} is no queue's dead-letter queue (no redrive policy names it)",
                self.name
            )));
        }
        if let Some(to) = to {
            // Fail before anything moves.
            self.target(to)?;
        }
        let mut moved = 0;
        loop {
            let n = self.locked(|txn| {
                txn.finish_moves()?;
                txn.redrive_some(to)
            })?;
            if n == 0 {
                return Ok(moved);
            }
            moved += n;
        }
    }
}

impl Dedup {
    pub(super) fn remember(&mut self, key: String, id: String, offset: u64, at: u64) {
        self.order.push_back((at, key.clone()));
        self.ids.insert(key, (id, offset, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::queue::RedrivePolicy;
    use crate::storage::{CrashPlan, SharedStorage, SimStorage};

    fn setup() -> (DataDir, SimStorage, Arc<ManualClock>) {
        let sim = SimStorage::new();
        let clock = ManualClock::new(1_000_000);
        let storage: SharedStorage = Arc::new(sim.clone());
        let data = DataDir::open_with("/d", storage, clock.clone()).unwrap();
        data.create_queue("dlq", &QueueAttributes::defaults(false))
            .unwrap();
        let attributes = QueueAttributes {
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq".into(),
                max_receives: 1,
            }),
            ..QueueAttributes::defaults(false)
        };
        data.create_queue("work", &attributes).unwrap();
        (data, sim, clock)
    }

    /// Receives "m" once and lets its timeout pass, then journals the start of its move to
    /// the dead-letter queue (and, if `copied`, makes the copy) as a process that dies right
    /// after would have.
    fn interrupted_move(data: &DataDir, clock: &ManualClock, copied: bool) {
        let q = data.queue("work").unwrap();
        q.send(&SendMessage::new("m")).unwrap();
        q.receive(&Receive::default()).unwrap();
        clock.advance(30_000);
        q.locked(|txn| {
            let now = txn.now;
            txn.loaded.state.expire(now);
            let (offset, slot) = txn.loaded.state.ready().next().unwrap();
            let m = slot.scanned(offset);
            let event = txn.move_started(&m, "dlq".into())?;
            txn.commit(&[event])?;
            if copied {
                let dlq = txn.queue.target("dlq")?;
                txn.queue.copy_to(&dlq, offset, Some((1, 0)))?;
            }
            Ok(())
        })
        .unwrap();
    }

    fn drain(q: &Queue) -> Vec<String> {
        let got = q
            .receive(&Receive {
                max_messages: 10,
                wait: Some(Duration::ZERO),
                visibility_timeout: None,
            })
            .unwrap();
        got.into_iter().map(|m| m.body).collect()
    }

    #[test]
    fn compaction_never_drops_a_message_whose_delete_is_not_yet_durable() {
        let (data, sim, clock) = setup();
        data.create_queue("plain", &QueueAttributes::defaults(false))
            .unwrap();
        let q = data.queue("plain").unwrap();
        for i in 0..10 {
            q.send(&SendMessage::new(format!("m{i}"))).unwrap();
        }
        q.message_log().unwrap().roll().unwrap();
        q.send(&SendMessage::new("next")).unwrap();
        let mut handles: Vec<(String, String)> = q
            .receive(&Receive {
                max_messages: 10,
                ..Receive::default()
            })
            .unwrap()
            .into_iter()
            .map(|m| (m.body, m.receipt_handle))
            .collect();
        handles.sort();
        assert_eq!(handles.len(), 10);
        let (deleted, kept) = handles.split_at(5);
        let deleted: Vec<&str> = deleted.iter().map(|(_, h)| h.as_str()).collect();
        q.delete_batch(&deleted).unwrap();
        // m5's delete is journalled and the first segment compacted in the same locked
        // operation, as a delete that reaches the reclaim threshold does; the power fails
        // before that operation's fsync, so the delete was never acknowledged.
        let after = q
            .locked(|txn| {
                let offset = txn.check_delete(&kept[0].1)?.unwrap();
                txn.commit(&[Event::Deleted { offset }])?;
                txn.queue.reclaim(txn.loaded, txn.attributes)?;
                Ok(sim.crash(CrashPlan::PowerLoss))
            })
            .unwrap();
        drop(q);
        // Past the visibility timeout, the queue delivers exactly what it counts: the
        // messages without a durable delete, m5 either with them (its delete lost) or not
        // (its delete made durable before its message left the disk), never counted and
        // missing.
        let clock = ManualClock::new(clock.now_ms() + 60_000);
        let data = DataDir::open_with("/d", Arc::new(after), clock).unwrap();
        let q = data.queue("plain").unwrap();
        let counted = q.counts().unwrap();
        let mut bodies = drain(&q);
        bodies.sort();
        assert_eq!(counted.visible, bodies.len() as u64, "{bodies:?}");
        bodies.retain(|b| b != "m5");
        assert_eq!(bodies, ["m6", "m7", "m8", "m9", "next"]);
        assert_eq!(q.counts().unwrap().in_flight, counted.visible);
    }

    #[test]
    fn a_dead_letter_target_stopped_by_an_fsync_failure_is_opened_again() {
        let (data, sim, _clock) = setup();
        let work = data.queue("work").unwrap();
        let dlq = work.target("dlq").unwrap();
        sim.fail_sync_after(0);
        dlq.send(&SendMessage::new("x")).unwrap_err();
        assert!(dlq.is_stopped());
        let again = work.target("dlq").unwrap();
        assert!(!Arc::ptr_eq(&dlq, &again), "the stopped handle was kept");
        assert!(!again.is_stopped());
        again.send(&SendMessage::new("y")).unwrap();
    }

    #[test]
    fn message_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| message_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
        }
    }

    #[test]
    fn a_move_interrupted_before_its_copy_is_finished_by_the_next_process() {
        let (data, _sim, clock) = setup();
        interrupted_move(&data, &clock, false);
        // Another process: the message is neither delivered from the source nor lost.
        assert!(drain(&data.queue("work").unwrap()).is_empty());
        assert_eq!(drain(&data.queue("dlq").unwrap()), ["m"]);
    }

    #[test]
    fn a_move_interrupted_after_its_copy_is_not_copied_twice() {
        let (data, _sim, clock) = setup();
        interrupted_move(&data, &clock, true);
        let work = data.queue("work").unwrap();
        assert!(drain(&work).is_empty());
        assert!(
            work.locked(|txn| Ok(txn.loaded.state.pending_moves().count() == 0))
                .unwrap()
        );
        assert_eq!(drain(&data.queue("dlq").unwrap()), ["m"]);
        clock.advance(60_000);
        let dlq = data.queue("dlq").unwrap();
        assert_eq!(drain(&dlq), ["m"], "one copy, back after its timeout");
        assert_eq!(dlq.counts().unwrap().in_flight, 1);
    }
}
