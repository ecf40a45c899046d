//! The engine's one error type.
//!
//! Every variant reads as a sentence when displayed; corruption always names the file and the byte
//! offset where it was found, so `shoal check` and a failing reader can point at the damage.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What the engine was doing ("write", "fsync", "open", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error (its kind tells ENOSPC, EIO, ... apart).
        #[source]
        source: io::Error,
    },

    /// Bytes on disk are not what the engine wrote.
    #[error("corruption in {} at byte {offset}: {kind}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte position in that file where the damage starts.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },

    /// A file was written by a newer version of shoal; it is refused rather than misread.
    #[error(
        "{} has format version {found}, newer than this build of shoal reads ({supported}); upgrade shoal",
        file.display()
    )]
    UnsupportedVersion {
        /// The file with the unknown version.
        file: PathBuf,
        /// The version found in its header.
        found: u16,
        /// The newest version this build understands.
        supported: u16,
    },

    /// Another handle (in this or another process) holds the log's writer lock.
    #[error("{} is locked by another writer", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// An earlier write or fsync failed, so nothing after it can be assumed durable.
    #[error("the log at {} refuses writes after an earlier I/O failure ({cause}); reopen it to recover", path.display())]
    Poisoned {
        /// The log directory.
        path: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },

    /// The log was sealed (a closed stream shard, for one): it accepts no more appends.
    #[error("the log at {} is sealed and accepts no more records", path.display())]
    Sealed {
        /// The log directory.
        path: PathBuf,
    },

    /// A record is larger than the log accepts.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Size of the offending record's header plus payload.
        size: u64,
        /// The limit in force.
        max: u64,
    },

    /// The requested offset was removed by retention or compaction.
    #[error("offset {requested} is no longer in the log (it starts at {start})")]
    OffsetTrimmed {
        /// The offset asked for.
        requested: u64,
        /// The first offset still stored.
        start: u64,
    },

    /// The named resource does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// "stream", "queue", "topic", "shard", ...
        kind: &'static str,
        /// Its name.
        name: String,
    },

    /// The named resource already exists (with other settings, where that matters).
    #[error("{kind} {name:?} already exists{detail}")]
    AlreadyExists {
        /// "stream", "queue", "topic", ...
        kind: &'static str,
        /// Its name.
        name: String,
        /// What differs, as a phrase starting with a separator, or empty.
        detail: String,
    },

    /// The operation conflicts with the resource's current state.
    #[error("{0}")]
    Conflict(String),

    /// A throughput limit was exceeded (throughput emulation is on for the resource).
    #[error("ProvisionedThroughputExceeded: {0}")]
    Throttled(String),

    /// An argument is outside what the operation accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A queue receipt handle that no receive of this queue made (SQS's
    /// `ReceiptHandleIsInvalid`).
    #[error("ReceiptHandleIsInvalid: {0:?} is not a receipt handle of this queue")]
    InvalidReceiptHandle(String),

    /// The receipt handle is well formed but no longer names a message in flight: it was
    /// deleted, received again since, or its visibility timeout expired (SQS's
    /// `MessageNotInflight` / expired receipt handle).
    #[error("MessageNotInflight: {0}")]
    MessageNotInflight(String),
}

impl Error {
    /// A log's `NotFound` (another process deleted the log under this writer) replaced by
    /// `gone()`, the `NotFound` of the queue or stream the log belongs to; any other error
    /// unchanged.
    pub(crate) fn when_log_gone(self, gone: impl FnOnce() -> Error) -> Self {
        match self {
            Error::NotFound { kind: "log", .. } => gone(),
            e => e,
        }
    }

    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds a corruption error.
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            kind,
        }
    }

    /// True when the error reports damaged data (the CLI maps it to exit code 6).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// The I/O error kind, when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// What exactly is wrong with corrupt bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The file does not start with the expected magic number.
    BadMagic,
    /// A file header's checksum does not match its contents.
    HeaderChecksum,
    /// A record frame's header checksum does not match (its lengths cannot be trusted).
    FrameHeaderChecksum,
    /// A record's checksum does not match its contents.
    Checksum {
        /// Checksum stored in the frame.
        stored: u32,
        /// Checksum computed over the bytes read.
        computed: u32,
    },
    /// A length field is outside the format's bounds.
    BadLength {
        /// The length found.
        length: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A flags field has bits set that the format does not define.
    BadFlags(u8),
    /// A record's offset is not the one its position implies.
    OffsetMismatch {
        /// The offset the record should have.
        expected: u64,
        /// The offset stored in the record.
        found: u64,
    },
    /// A header names a different base offset than its file name.
    BaseMismatch {
        /// The base offset in the file name.
        expected: u64,
        /// The base offset in the header.
        found: u64,
    },
    /// The file ends in the middle of a structure that committed data says is complete.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A record fails validation in the synced (acknowledged) part of the active segment, so it
    /// cannot be a torn tail and is not silently cut off.
    InSyncedRegion {
        /// The synced length recorded in the head file.
        synced_len: u64,
    },
    /// An index entry does not point at the record it names.
    BadIndexEntry,
    /// Metadata failed to decode.
    Metadata(String),
    /// The files of a log disagree with each other.
    Inconsistent(String),
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::BadMagic => {
                write!(f, "the file does not start with shoal's magic number")
            }
            CorruptionKind::HeaderChecksum => {
                write!(f, "the file header's checksum does not match")
            }
            CorruptionKind::FrameHeaderChecksum => {
                write!(f, "a record header's checksum does not match")
            }
            CorruptionKind::Checksum { stored, computed } => write!(
                f,
                "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            CorruptionKind::BadLength { length, max } => {
                write!(f, "length {length} exceeds the maximum {max}")
            }
            CorruptionKind::BadFlags(flags) => write!(f, "undefined flag bits {flags:#04x}"),
            CorruptionKind::OffsetMismatch { expected, found } => {
                write!(f, "record has offset {found} where {expected} was expected")
            }
            CorruptionKind::BaseMismatch { expected, found } => write!(
                f,
                "header names base offset {found} but the file name says {expected}"
            ),
            CorruptionKind::Truncated { needed, available } => write!(
                f,
                "the file ends early ({available} bytes where {needed} are needed)"
            ),
            CorruptionKind::InSyncedRegion { synced_len } => write!(
                f,
                "an invalid record lies inside the synced region (first {synced_len} bytes), so it is not a torn tail"
            ),
            CorruptionKind::BadIndexEntry => {
                write!(f, "an index entry does not point at the record it names")
            }
            CorruptionKind::Metadata(why) => write!(f, "metadata does not decode: {why}"),
            CorruptionKind::Inconsistent(why) => write!(f, "files disagree: {why}"),
        }
    }
}
