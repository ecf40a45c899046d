//! The head file: the writer's published watermark.
//!
//! Each log directory has one `head` file that the writer overwrites in place after every
//! commit. Readers in any process read it to learn how far the active segment is committed, so
//! they never look at bytes a writer has not acknowledged (or that recovery may cut off), and
//! recovery reads it to learn which prefix of the active segment was synced: damage there is
//! reported, never silently truncated. It is a hint, never fsynced on its own: after a power
//! loss it may be older than the data, which only makes recovery scan more.
//!
//! | Bytes  | Encoding | Field                                                    |
//! |--------|----------|----------------------------------------------------------|
//! | 0..8   | ASCII    | magic `SHOALHED`                                         |
//! | 8..10  | u16 LE   | format version (1)                                       |
//! | 10..16 | u48 LE   | boot: the machine's boot when written (0: unknown)       |
//! | 16..24 | u64 LE   | base offset of the active segment                        |
//! | 24..32 | u64 LE   | committed length of the active segment, bytes            |
//! | 32..40 | u64 LE   | synced length of the active segment, bytes               |
//! | 40..48 | u64 LE   | next offset (one past the last committed record)         |
//! | 48..56 | u64 LE   | timestamp of the last committed record                   |
//! | 56..64 | u64 LE   | start offset (the first offset retention has kept)       |
//! | 64..68 | u32 LE   | masked CRC32 of bytes 0..64                              |

use byteorder::{ByteOrder, LittleEndian};

use super::file_header::HeaderError;
use super::{FORMAT_VERSION, crc};

/// Size of the head file.
pub const HEAD_LEN: usize = 68;
/// Magic number of the head file.
pub const HEAD_MAGIC: [u8; 8] = *b"SHOALHED";
/// Where the version starts.
pub const HEAD_VERSION_OFFSET: usize = 8;
/// Where the boot id starts (6 bytes).
pub const BOOT_OFFSET: usize = HEAD_VERSION_OFFSET + 2;
/// The bits of a boot id the head keeps.
pub const BOOT_MASK: u64 = (1 << 48) - 1;
/// Where the active segment's base offset starts.
pub const ACTIVE_BASE_OFFSET: usize = 16;
/// Where the committed length starts.
pub const COMMITTED_LEN_OFFSET: usize = ACTIVE_BASE_OFFSET + 8;
/// Where the synced length starts.
pub const SYNCED_LEN_OFFSET: usize = COMMITTED_LEN_OFFSET + 8;
/// Where the next offset starts.
pub const NEXT_OFFSET_OFFSET: usize = SYNCED_LEN_OFFSET + 8;
/// Where the last timestamp starts.
pub const LAST_TIMESTAMP_OFFSET: usize = NEXT_OFFSET_OFFSET + 8;
/// Where the start offset starts.
pub const START_OFFSET_OFFSET: usize = LAST_TIMESTAMP_OFFSET + 8;
/// Where the checksum starts.
pub const HEAD_CRC_OFFSET: usize = START_OFFSET_OFFSET + 8;

/// The writer's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Base offset of the active segment.
    pub active_base: u64,
    /// Bytes of the active segment that readers may read.
    pub committed_len: u64,
    /// Bytes of the active segment known to be fsynced.
    pub synced_len: u64,
    /// One past the last committed record's offset.
    pub next_offset: u64,
    /// Timestamp of the last committed record (or of the segment's creation).
    pub last_timestamp_ms: u64,
    /// First offset still stored.
    pub start_offset: u64,
    /// The boot of the machine the head was written in ([`crate::storage::Storage::boot_id`],
    /// 48 bits; 0 unknown). Recovery trusts unsynced bytes only within the same boot.
    pub boot: u64,
}

impl Head {
    /// Encodes the head.
    pub fn encode(&self) -> [u8; HEAD_LEN] {
        let mut buf = [0u8; HEAD_LEN];
        buf[..8].copy_from_slice(&HEAD_MAGIC);
        LittleEndian::write_u16(&mut buf[HEAD_VERSION_OFFSET..], FORMAT_VERSION);
        LittleEndian::write_u48(&mut buf[BOOT_OFFSET..], self.boot & BOOT_MASK);
        LittleEndian::write_u64(&mut buf[ACTIVE_BASE_OFFSET..], self.active_base);
        LittleEndian::write_u64(&mut buf[COMMITTED_LEN_OFFSET..], self.committed_len);
        LittleEndian::write_u64(&mut buf[SYNCED_LEN_OFFSET..], self.synced_len);
        LittleEndian::write_u64(&mut buf[NEXT_OFFSET_OFFSET..], self.next_offset);
        LittleEndian::write_u64(&mut buf[LAST_TIMESTAMP_OFFSET..], self.last_timestamp_ms);
        LittleEndian::write_u64(&mut buf[START_OFFSET_OFFSET..], self.start_offset);
        let sum = crc::masked(&buf[..HEAD_CRC_OFFSET]);
        LittleEndian::write_u32(&mut buf[HEAD_CRC_OFFSET..], sum);
        buf
    }

    /// Decodes a head; checks magic, checksum, version (see [`super::file_header`] for why in
    /// that order), and that synced <= committed.
    pub fn decode(buf: &[u8]) -> Result<Head, HeaderError> {
        let Some(buf) = buf.get(..HEAD_LEN) else {
            return Err(HeaderError::Short(buf.len()));
        };
        if buf[..8] != HEAD_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if LittleEndian::read_u32(&buf[HEAD_CRC_OFFSET..]) != crc::masked(&buf[..HEAD_CRC_OFFSET]) {
            return Err(HeaderError::Checksum);
        }
        let version = LittleEndian::read_u16(&buf[HEAD_VERSION_OFFSET..]);
        if version == 0 || version > FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let head = Head {
            active_base: LittleEndian::read_u64(&buf[ACTIVE_BASE_OFFSET..]),
            committed_len: LittleEndian::read_u64(&buf[COMMITTED_LEN_OFFSET..]),
            synced_len: LittleEndian::read_u64(&buf[SYNCED_LEN_OFFSET..]),
            next_offset: LittleEndian::read_u64(&buf[NEXT_OFFSET_OFFSET..]),
            last_timestamp_ms: LittleEndian::read_u64(&buf[LAST_TIMESTAMP_OFFSET..]),
            start_offset: LittleEndian::read_u64(&buf[START_OFFSET_OFFSET..]),
            boot: LittleEndian::read_u48(&buf[BOOT_OFFSET..]),
        };
        if head.synced_len > head.committed_len
            || head.next_offset < head.active_base
            || head.start_offset > head.next_offset
        {
            return Err(HeaderError::Checksum);
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bit_flips() {
        let head = Head {
            active_base: 100,
            committed_len: 5000,
            synced_len: 4000,
            next_offset: 150,
            last_timestamp_ms: 1_700_000_000_000,
            start_offset: 10,
            boot: 0xba5e_ba11_f00d,
        };
        let good = head.encode();
        assert_eq!(Head::decode(&good), Ok(head));
        for bit in 0..HEAD_LEN * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Head::decode(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn inconsistent_fields_are_refused() {
        let head = Head {
            synced_len: 10,
            committed_len: 5,
            ..Head::default()
        };
        assert!(Head::decode(&head.encode()).is_err());
    }
}
