//! SQS-style queues. This first part holds the message model every queue operation shares:
//! body and attribute validation with SQS's rules and the MD5 digests SQS returns. Queue
//! storage (the message log, the visibility journal) builds on it.

pub mod message;
