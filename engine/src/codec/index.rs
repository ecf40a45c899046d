//! Index entries: the sparse offset index and time index of a segment, in one table.
//!
//! An index file is a [`FileHeader`](super::file_header::FileHeader) of kind `SHOALIDX`
//! followed by 16-byte entries:
//!
//! | Bytes  | Encoding | Field                                                 |
//! |--------|----------|-------------------------------------------------------|
//! | 0..4   | u32 LE   | offset relative to the segment's base offset          |
//! | 4..8   | u32 LE   | byte position of that record in the segment file      |
//! | 8..16  | u64 LE   | the record's timestamp, ms since the epoch            |
//!
//! Entries are strictly increasing in offset and position and non-decreasing in timestamp (the
//! log never lets time run backwards), so one table answers both "where is offset N" and "where
//! is the first record at or after time T". Entries are hints: every lookup checks the record it
//! lands on, so a stale or damaged entry costs a longer scan, never a wrong answer.

use byteorder::{ByteOrder, LittleEndian};

/// Size of one entry.
pub const INDEX_ENTRY_LEN: usize = 16;
/// Where the relative offset starts.
pub const REL_OFFSET_OFFSET: usize = 0;
/// Where the position starts.
pub const POSITION_OFFSET: usize = REL_OFFSET_OFFSET + 4;
/// Where the timestamp starts.
pub const ENTRY_TIMESTAMP_OFFSET: usize = POSITION_OFFSET + 4;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Record offset minus the segment's base offset.
    pub rel_offset: u32,
    /// Byte position of the record's frame in the segment file.
    pub position: u32,
    /// The record's timestamp.
    pub timestamp_ms: u64,
}

impl IndexEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut buf = [0u8; INDEX_ENTRY_LEN];
        LittleEndian::write_u32(&mut buf[REL_OFFSET_OFFSET..], self.rel_offset);
        LittleEndian::write_u32(&mut buf[POSITION_OFFSET..], self.position);
        LittleEndian::write_u64(&mut buf[ENTRY_TIMESTAMP_OFFSET..], self.timestamp_ms);
        buf
    }

    /// Decodes one entry from exactly [`INDEX_ENTRY_LEN`] bytes.
    pub fn decode(buf: &[u8; INDEX_ENTRY_LEN]) -> IndexEntry {
        IndexEntry {
            rel_offset: LittleEndian::read_u32(&buf[REL_OFFSET_OFFSET..]),
            position: LittleEndian::read_u32(&buf[POSITION_OFFSET..]),
            timestamp_ms: LittleEndian::read_u64(&buf[ENTRY_TIMESTAMP_OFFSET..]),
        }
    }

    /// True when `next` may follow `self` in an index.
    pub fn precedes(&self, next: &IndexEntry) -> bool {
        next.rel_offset > self.rel_offset
            && next.position > self.position
            && next.timestamp_ms >= self.timestamp_ms
    }
}

/// Decodes the entries in `body` (the bytes after the file header), keeping the longest prefix
/// that is well ordered, starts past `min_position` and whose positions are below `max_position`.
/// A torn last entry (fewer than 16 bytes) is dropped.
pub fn decode_entries(body: &[u8], min_position: u32, max_position: u64) -> Vec<IndexEntry> {
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(body.len() / INDEX_ENTRY_LEN);
    for chunk in body.chunks_exact(INDEX_ENTRY_LEN) {
        let Ok(raw) = <&[u8; INDEX_ENTRY_LEN]>::try_from(chunk) else {
            break;
        };
        let entry = IndexEntry::decode(raw);
        let ordered = entries.last().is_none_or(|prev| prev.precedes(&entry));
        if !ordered || entry.position < min_position || u64::from(entry.position) >= max_position {
            break;
        }
        entries.push(entry);
    }
    entries
}

/// The last entry whose relative offset is at most `rel_offset`.
pub fn floor_by_offset(entries: &[IndexEntry], rel_offset: u32) -> Option<&IndexEntry> {
    let idx = entries.partition_point(|e| e.rel_offset <= rel_offset);
    idx.checked_sub(1).and_then(|i| entries.get(i))
}

/// The last entry whose timestamp is strictly before `timestamp_ms`: a scan for the first record
/// at or after that time can start there.
pub fn floor_by_time(entries: &[IndexEntry], timestamp_ms: u64) -> Option<&IndexEntry> {
    let idx = entries.partition_point(|e| e.timestamp_ms < timestamp_ms);
    idx.checked_sub(1).and_then(|i| entries.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32, ts: u64) -> IndexEntry {
        IndexEntry {
            rel_offset: rel,
            position: pos,
            timestamp_ms: ts,
        }
    }

    #[test]
    fn round_trip() {
        let e = entry(7, 4096, 1_700_000_000_000);
        assert_eq!(IndexEntry::decode(&e.encode()), e);
    }

    #[test]
    fn decode_stops_at_disorder_torn_tail_and_bounds() {
        let mut body = Vec::new();
        for e in [entry(1, 100, 5), entry(5, 200, 5), entry(9, 300, 6)] {
            body.extend_from_slice(&e.encode());
        }
        body.extend_from_slice(&entry(3, 400, 7).encode()); // out of order
        assert_eq!(decode_entries(&body, 64, u64::MAX).len(), 3);
        assert_eq!(decode_entries(&body[..40], 64, u64::MAX).len(), 2); // torn
        assert_eq!(decode_entries(&body, 64, 300).len(), 2); // past the file
        assert_eq!(decode_entries(&body, 150, u64::MAX).len(), 0); // inside the header
        assert!(decode_entries(&[0u8; 64], 64, u64::MAX).is_empty());
    }

    #[test]
    fn floors() {
        let entries = [entry(0, 64, 10), entry(10, 500, 20), entry(20, 900, 20)];
        assert_eq!(floor_by_offset(&entries, 0).map(|e| e.position), Some(64));
        assert_eq!(floor_by_offset(&entries, 15).map(|e| e.position), Some(500));
        assert_eq!(floor_by_offset(&entries, 99).map(|e| e.position), Some(900));
        assert_eq!(floor_by_time(&entries, 10), None);
        assert_eq!(floor_by_time(&entries, 15).map(|e| e.position), Some(64));
        // Two entries share timestamp 20: the scan must start before both.
        assert_eq!(floor_by_time(&entries, 20).map(|e| e.position), Some(64));
        assert_eq!(floor_by_time(&entries, 21).map(|e| e.position), Some(900));
    }
}
