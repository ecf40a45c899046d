//! SQS-style queues, standard and FIFO, on two segment logs per queue.
//!
//! - [`attributes`]: the queue catalog with SQS's ranges and defaults (idempotent create).
//! - [`message`]: what a body and its attributes may hold, and the MD5 digests SQS returns.
//! - [`handle`]: an open [`Queue`]: send, receive (long polling), delete, change visibility,
//!   purge, dead-letter moves and redrive.
//! - [`state`]: the in-memory state (in flight, delayed, held back) rebuilt from a snapshot and
//!   the journal's tail, so opening a queue costs time proportional to that, not to its backlog.
//! - [`stored`]: how messages, journal events and receipt handles are encoded.
//! - `check`: verifying every queue's files for `shoal check`.

pub mod attributes;
mod check;
mod deliver;
pub mod handle;
pub mod message;
pub mod reclaim;
mod repair;
pub mod state;
pub mod stored;
mod txn;

pub use attributes::{QueueAttributes, QueueInfo, RedrivePolicy};
pub(crate) use check::check_queues;
pub use handle::{Queue, QueueCounts, Receive, ReceivedMessage, SendMessage, Sent};
pub use message::{AttributeValue, MessageAttribute};
pub use reclaim::ReclaimReport;
pub(crate) use repair::repair_state;
