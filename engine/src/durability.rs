//! Durability modes as stored in stream and queue metadata.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::log::Durability;

/// How a log's writes (a stream shard's puts, a queue's sends and state changes) are made
/// durable; stored in stream and queue metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DurabilityMode {
    /// fsync before a put is acknowledged (group commit). The default.
    #[default]
    Always,
    /// fsync in the background every this many milliseconds.
    IntervalMs(u64),
    /// Never fsync (a process crash loses nothing, a power loss may).
    Never,
}

impl DurabilityMode {
    /// The log setting it stands for.
    pub(crate) fn log(self) -> Durability {
        match self {
            DurabilityMode::Always => Durability::Always,
            DurabilityMode::IntervalMs(ms) => Durability::Interval(Duration::from_millis(ms)),
            DurabilityMode::Never => Durability::Never,
        }
    }
}
