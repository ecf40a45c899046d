//! Optional emulation of Kinesis's per-shard throughput limits (`--enforce-limits`): writes
//! up to 1 MiB or 1000 records per second, reads up to 2 MiB per second.
//!
//! Each shard keeps its usage in the current one-second window in a small file,
//! `<shard>/throughput`, read and rewritten under the lock `<shard>/throughput.lock`, so every
//! process putting to or reading from the shard draws on the same budget. The counters are an
//! emulation, not data: they are not fsynced, and a lost update only loosens the limit.

use std::path::{Path, PathBuf};

use byteorder::{ByteOrder, LittleEndian};

use crate::datadir::DirInner;
use crate::error::{Error, Result};
use crate::storage::OpenMode;

/// Write bytes per shard per second.
pub const WRITE_BYTES_PER_SEC: u64 = 1 << 20;
/// Write records per shard per second.
pub const WRITE_RECORDS_PER_SEC: u64 = 1000;
/// Read bytes per shard per second.
pub const READ_BYTES_PER_SEC: u64 = 2 << 20;

const STATE_LEN: usize = 32;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    window_s: u64,
    write_bytes: u64,
    write_records: u64,
    read_bytes: u64,
}

impl Usage {
    fn decode(buf: &[u8; STATE_LEN]) -> Usage {
        Usage {
            window_s: LittleEndian::read_u64(&buf[0..8]),
            write_bytes: LittleEndian::read_u64(&buf[8..16]),
            write_records: LittleEndian::read_u64(&buf[16..24]),
            read_bytes: LittleEndian::read_u64(&buf[24..32]),
        }
    }

    fn encode(&self) -> [u8; STATE_LEN] {
        let mut buf = [0u8; STATE_LEN];
        LittleEndian::write_u64(&mut buf[0..8], self.window_s);
        LittleEndian::write_u64(&mut buf[8..16], self.write_bytes);
        LittleEndian::write_u64(&mut buf[16..24], self.write_records);
        LittleEndian::write_u64(&mut buf[24..32], self.read_bytes);
        buf
    }
}

/// What an operation wants to use.
#[derive(Debug, Clone, Copy)]
pub(super) enum Demand {
    /// A put of this many records and bytes.
    Write {
        /// Records.
        records: u64,
        /// Data plus partition key bytes.
        bytes: u64,
    },
    /// May a read start? Refused once this second's read budget is spent.
    ReadAdmit,
    /// A read returned this many bytes: charged after the fact, as Kinesis does, never refused.
    ReadCharge {
        /// Bytes returned.
        bytes: u64,
    },
}

/// Charges `demand` to the shard in `shard_dir`, or fails with [`Error::Throttled`] and
/// charges nothing. `undo` reverses an earlier successful write charge.
pub(super) fn charge(dir: &DirInner, shard_dir: &Path, demand: Demand, undo: bool) -> Result<()> {
    let _lock = dir.lock(&shard_dir.join("throughput.lock"))?;
    let path: PathBuf = shard_dir.join("throughput");
    let file = dir
        .storage
        .open(&path, OpenMode::CreateOrOpen)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut buf = [0u8; STATE_LEN];
    let mut usage = match file.read_exact_at(&mut buf, 0) {
        Ok(()) => Usage::decode(&buf),
        Err(_) => Usage::default(),
    };
    let window_s = dir.clock.now_ms() / 1000;
    if usage.window_s != window_s {
        usage = Usage {
            window_s,
            ..Usage::default()
        };
    }
    match demand {
        Demand::Write { records, bytes } if undo => {
            usage.write_records = usage.write_records.saturating_sub(records);
            usage.write_bytes = usage.write_bytes.saturating_sub(bytes);
        }
        Demand::Write { records, bytes } => {
            if usage.write_records + records > WRITE_RECORDS_PER_SEC
                || usage.write_bytes + bytes > WRITE_BYTES_PER_SEC
            {
                return Err(Error::Throttled(format!(
                    "rate exceeded for shard {} ({} records and {} bytes already written this second; the limit is {WRITE_RECORDS_PER_SEC} records or {WRITE_BYTES_PER_SEC} bytes)",
                    shard_name(shard_dir),
                    usage.write_records,
                    usage.write_bytes
                )));
            }
            usage.write_records += records;
            usage.write_bytes += bytes;
        }
        Demand::ReadAdmit => {
            if usage.read_bytes >= READ_BYTES_PER_SEC {
                return Err(Error::Throttled(format!(
                    "read rate exceeded for shard {} (the limit is {READ_BYTES_PER_SEC} bytes per second)",
                    shard_name(shard_dir)
                )));
            }
            return Ok(());
        }
        Demand::ReadCharge { bytes } => usage.read_bytes += bytes,
    }
    file.write_all_at(&usage.encode(), 0)
        .map_err(|e| Error::io("write", &path, e))
}

fn shard_name(shard_dir: &Path) -> String {
    shard_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u32>().ok())
        .map_or_else(|| shard_dir.display().to_string(), super::shard_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips() {
        let usage = Usage {
            window_s: 1_700_000_000,
            write_bytes: 5,
            write_records: 6,
            read_bytes: 7,
        };
        assert_eq!(Usage::decode(&usage.encode()), usage);
    }
}
