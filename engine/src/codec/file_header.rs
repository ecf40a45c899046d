//! The 64-byte header at the start of every segment and index file.
//!
//! | Bytes  | Encoding | Field                                             |
//! |--------|----------|---------------------------------------------------|
//! | 0..8   | ASCII    | magic: `SHOALSEG` (segment) or `SHOALIDX` (index) |
//! | 8..10  | u16 LE   | format version (1)                                |
//! | 10..16 | zero     | reserved                                          |
//! | 16..24 | u64 LE   | base offset: the first offset the segment may hold|
//! | 24..32 | u64 LE   | base timestamp, ms since the epoch                |
//! | 32..60 | zero     | reserved                                          |
//! | 60..64 | u32 LE   | masked CRC32 of bytes 0..60                       |

use byteorder::{ByteOrder, LittleEndian};

use super::{FORMAT_VERSION, crc};

/// Size of a file header.
pub const FILE_HEADER_LEN: usize = 64;
/// Where the magic number starts.
pub const MAGIC_OFFSET: usize = 0;
/// Length of the magic number.
pub const MAGIC_LEN: usize = 8;
/// Where the version starts.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC_LEN;
/// Where the base offset starts.
pub const BASE_OFFSET_OFFSET: usize = 16;
/// Where the base timestamp starts.
pub const BASE_TIMESTAMP_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
/// Where the checksum starts.
pub const HEADER_CRC_OFFSET: usize = FILE_HEADER_LEN - 4;

/// Magic number of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHOALSEG";
/// Magic number of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"SHOALIDX";

/// Which kind of file a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A segment (`.log`) file.
    Segment,
    /// An index (`.index`) file.
    Index,
}

impl FileKind {
    /// The magic number for this kind.
    pub fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Segment => SEGMENT_MAGIC,
            FileKind::Index => INDEX_MAGIC,
        }
    }
}

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Segment or index.
    pub kind: FileKind,
    /// First offset the segment may hold (the file is named after it).
    pub base_offset: u64,
    /// Timestamp of the segment's creation: no earlier segment holds a later record, no record
    /// in this one is earlier.
    pub base_timestamp_ms: u64,
}

/// Why a header did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`FILE_HEADER_LEN`] bytes.
    Short(usize),
    /// Wrong magic number.
    BadMagic,
    /// A version this build does not know (0, or newer than [`FORMAT_VERSION`]).
    Version(u16),
    /// Checksum mismatch.
    Checksum,
}

impl FileHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut buf = [0u8; FILE_HEADER_LEN];
        buf[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN].copy_from_slice(&self.kind.magic());
        LittleEndian::write_u16(&mut buf[VERSION_OFFSET..], FORMAT_VERSION);
        LittleEndian::write_u64(&mut buf[BASE_OFFSET_OFFSET..], self.base_offset);
        LittleEndian::write_u64(&mut buf[BASE_TIMESTAMP_OFFSET..], self.base_timestamp_ms);
        let sum = crc::masked(&buf[..HEADER_CRC_OFFSET]);
        LittleEndian::write_u32(&mut buf[HEADER_CRC_OFFSET..], sum);
        buf
    }

    /// Decodes a header of the given kind. Checks magic, then the checksum (every format
    /// version keeps the magic, the version and this checksum where they are, so a damaged
    /// version field reads as damage), then the version (an intact header of a newer format
    /// is reported as newer, not as damaged).
    pub fn decode(kind: FileKind, buf: &[u8]) -> Result<FileHeader, HeaderError> {
        let Some(buf) = buf.get(..FILE_HEADER_LEN) else {
            return Err(HeaderError::Short(buf.len()));
        };
        if buf[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN] != kind.magic() {
            return Err(HeaderError::BadMagic);
        }
        let stored = LittleEndian::read_u32(&buf[HEADER_CRC_OFFSET..]);
        if stored != crc::masked(&buf[..HEADER_CRC_OFFSET]) {
            return Err(HeaderError::Checksum);
        }
        let version = LittleEndian::read_u16(&buf[VERSION_OFFSET..]);
        if version == 0 || version > FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        Ok(FileHeader {
            kind,
            base_offset: LittleEndian::read_u64(&buf[BASE_OFFSET_OFFSET..]),
            base_timestamp_ms: LittleEndian::read_u64(&buf[BASE_TIMESTAMP_OFFSET..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = FileHeader {
            kind: FileKind::Segment,
            base_offset: 42,
            base_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(FileHeader::decode(FileKind::Segment, &h.encode()), Ok(h));
    }

    #[test]
    fn kinds_do_not_mix() {
        let h = FileHeader {
            kind: FileKind::Index,
            base_offset: 0,
            base_timestamp_ms: 0,
        };
        assert_eq!(
            FileHeader::decode(FileKind::Segment, &h.encode()),
            Err(HeaderError::BadMagic)
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let h = FileHeader {
            kind: FileKind::Segment,
            base_offset: 7,
            base_timestamp_ms: 99,
        };
        let good = h.encode();
        for bit in 0..FILE_HEADER_LEN * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                FileHeader::decode(FileKind::Segment, &bad).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut buf = FileHeader {
            kind: FileKind::Segment,
            base_offset: 0,
            base_timestamp_ms: 0,
        }
        .encode();
        LittleEndian::write_u16(&mut buf[VERSION_OFFSET..], FORMAT_VERSION + 1);
        // Without its checksum redone, that is one damaged field...
        assert_eq!(
            FileHeader::decode(FileKind::Segment, &buf),
            Err(HeaderError::Checksum)
        );
        // ...with it, an intact header of a newer format.
        let sum = crc::masked(&buf[..HEADER_CRC_OFFSET]);
        LittleEndian::write_u32(&mut buf[HEADER_CRC_OFFSET..], sum);
        assert_eq!(
            FileHeader::decode(FileKind::Segment, &buf),
            Err(HeaderError::Version(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn short_and_zero_input() {
        assert_eq!(
            FileHeader::decode(FileKind::Index, &[0; 10]),
            Err(HeaderError::Short(10))
        );
        assert_eq!(
            FileHeader::decode(FileKind::Index, &[0; FILE_HEADER_LEN]),
            Err(HeaderError::BadMagic)
        );
    }
}
