//! Walking the frames of a segment held in memory (a mapping, or a tail read for recovery).

use crate::codec::record::{self, Decoded, Frame};
use crate::error::CorruptionKind;

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The bytes ended exactly at a frame boundary.
    End,
    /// The bytes ended inside a frame that starts at `position`.
    Incomplete {
        /// File position of the partial frame.
        position: u64,
        /// Bytes that frame needs.
        needed: u64,
    },
    /// The frame at `position` is invalid.
    Corrupt {
        /// File position of the bad frame.
        position: u64,
        /// What is wrong with it.
        kind: CorruptionKind,
    },
}

/// Iterates over frames in `bytes`, which hold the file from position `origin` on.
///
/// Besides checksums it checks that offsets strictly increase, and, when `expect_next` is set,
/// that each record's offset is exactly one more than the last (true in an active segment,
/// where compaction never reaches).
#[derive(Debug)]
pub struct FrameScan<'a> {
    bytes: &'a [u8],
    origin: u64,
    cursor: usize,
    next_offset: Option<u64>,
    contiguous: bool,
    stop: Option<Stop>,
}

impl<'a> FrameScan<'a> {
    /// Starts at `start` (a position relative to `bytes`).
    pub fn new(bytes: &'a [u8], origin: u64, start: usize) -> Self {
        FrameScan {
            bytes,
            origin,
            cursor: start,
            next_offset: None,
            contiguous: false,
            stop: None,
        }
    }

    /// Requires the first record to have offset `offset` and every later one the next.
    pub fn contiguous_from(mut self, offset: u64) -> Self {
        self.next_offset = Some(offset);
        self.contiguous = true;
        self
    }

    /// File position of the next frame.
    pub fn file_position(&self) -> u64 {
        self.origin + self.cursor as u64
    }

    /// Skips frames whose offset is below `target`, checking only their fixed 32 bytes (the
    /// header checksum guards the lengths): records that will not be returned need not have
    /// their payload checksummed. Stops before the first frame at or past `target`, or before
    /// anything that does not validate, which the next call to `next` then reports.
    pub fn skip_before(&mut self, target: u64) {
        while self.stop.is_none() {
            let rest = self.bytes.get(self.cursor..).unwrap_or_default();
            let Ok(len) = record::decode_len(rest) else {
                return;
            };
            let Some(offset) = rest
                .get(record::OFFSET_OFFSET..record::OFFSET_OFFSET + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
            else {
                return;
            };
            let in_order = self.next_offset.is_none_or(|n| offset >= n);
            if offset >= target || !in_order || rest.len() < len {
                return;
            }
            self.next_offset = offset.checked_add(1);
            self.cursor += len;
        }
    }

    /// Why the scan ended (`None` while it is still going).
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }
}

impl<'a> Iterator for FrameScan<'a> {
    /// A frame and its file position.
    type Item = (u64, Frame<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() {
            return None;
        }
        let position = self.file_position();
        let rest = self.bytes.get(self.cursor..).unwrap_or_default();
        if rest.is_empty() {
            self.stop = Some(Stop::End);
            return None;
        }
        match record::decode(rest) {
            Decoded::Frame(frame) => {
                let order_ok = match self.next_offset {
                    Some(expected) if self.contiguous => frame.offset == expected,
                    Some(expected) => frame.offset >= expected,
                    None => true,
                };
                if !order_ok {
                    self.stop = Some(Stop::Corrupt {
                        position,
                        kind: CorruptionKind::OffsetMismatch {
                            expected: self.next_offset.unwrap_or_default(),
                            found: frame.offset,
                        },
                    });
                    return None;
                }
                self.next_offset = frame.offset.checked_add(1);
                self.cursor += frame.frame_len;
                Some((position, frame))
            }
            Decoded::Incomplete { needed } => {
                self.stop = Some(Stop::Incomplete {
                    position,
                    needed: needed as u64,
                });
                None
            }
            Decoded::Corrupt(kind) => {
                self.stop = Some(Stop::Corrupt { position, kind });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::record::{FLAG_END_OF_BATCH, FrameFields, encode_into};

    fn frames(offsets: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &offset in offsets {
            encode_into(
                &mut out,
                &FrameFields {
                    offset,
                    timestamp_ms: 1,
                    kind: 0,
                    flags: FLAG_END_OF_BATCH,
                    header: b"",
                    payload: b"abc",
                },
            )
            .unwrap();
        }
        out
    }

    #[test]
    fn scans_to_the_end() {
        let bytes = frames(&[5, 6, 7]);
        let mut scan = FrameScan::new(&bytes, 100, 0).contiguous_from(5);
        let got: Vec<_> = scan.by_ref().map(|(pos, f)| (pos, f.offset)).collect();
        assert_eq!(got, vec![(100, 5), (135, 6), (170, 7)]);
        assert_eq!(scan.stop(), Some(&Stop::End));
    }

    #[test]
    fn gap_in_contiguous_scan_is_corruption() {
        let bytes = frames(&[5, 7]);
        let mut scan = FrameScan::new(&bytes, 0, 0).contiguous_from(5);
        assert_eq!(scan.by_ref().count(), 1);
        assert!(matches!(
            scan.stop(),
            Some(Stop::Corrupt { position: 35, .. })
        ));
        // Sealed, compacted segments may have gaps, but never go backwards.
        assert_eq!(FrameScan::new(&bytes, 0, 0).count(), 2);
        let back = frames(&[7, 5]);
        let mut scan = FrameScan::new(&back, 0, 0);
        assert_eq!(scan.by_ref().count(), 1);
        assert!(matches!(scan.stop(), Some(Stop::Corrupt { .. })));
    }

    #[test]
    fn skip_before_stops_at_the_target_or_at_damage() {
        let bytes = frames(&[5, 6, 7, 8]);
        let mut scan = FrameScan::new(&bytes, 0, 0);
        scan.skip_before(7);
        assert_eq!(scan.next().map(|(_, f)| f.offset), Some(7));
        // A payload flip in a skipped frame is not looked at; a header flip stops the skip
        // and is then reported.
        let mut damaged = bytes.clone();
        damaged[35 + 33] ^= 1; // payload of offset 6
        let mut scan = FrameScan::new(&damaged, 0, 0);
        scan.skip_before(8);
        assert_eq!(scan.next().map(|(_, f)| f.offset), Some(8));
        let mut damaged = bytes.clone();
        damaged[35 + 10] ^= 1; // header of offset 6
        let mut scan = FrameScan::new(&damaged, 0, 0);
        scan.skip_before(8);
        assert!(scan.next().is_none());
        assert!(matches!(
            scan.stop(),
            Some(Stop::Corrupt { position: 35, .. })
        ));
    }

    #[test]
    fn torn_tail_is_incomplete() {
        let bytes = frames(&[0, 1]);
        let mut scan = FrameScan::new(&bytes[..68], 0, 0);
        assert_eq!(scan.by_ref().count(), 1);
        assert_eq!(
            scan.stop(),
            Some(&Stop::Incomplete {
                position: 35,
                needed: 35
            })
        );
    }
}
