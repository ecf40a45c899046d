//! SQS-style queues. This first part holds the queue catalog ([`attributes`]: SQS's ranges and
//! defaults, idempotent create) and the message model every queue operation shares
//! ([`message`]: body and attribute rules, the MD5 digests SQS returns). Queue storage (the
//! message log, the visibility journal) builds on them.

pub mod attributes;
pub mod message;
