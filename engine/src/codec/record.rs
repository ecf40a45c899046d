//! Record frames: how each record is laid out in a segment.
//!
//! | Bytes          | Encoding | Field                                                  |
//! |----------------|----------|--------------------------------------------------------|
//! | 0..4           | u32 LE   | frame checksum: masked CRC32 of bytes 4..end           |
//! | 4..8           | u32 LE   | payload length (at most [`MAX_PAYLOAD_LEN`])           |
//! | 8..16          | u64 LE   | offset                                                 |
//! | 16..24         | u64 LE   | timestamp, ms since the epoch                          |
//! | 24..26         | u16 LE   | header length                                          |
//! | 26             | u8       | kind (chosen by the layer above: stream, queue, ...)   |
//! | 27             | u8       | flags: bit 0 = last record of its batch; others zero   |
//! | 28..32         | u32 LE   | header checksum: masked CRC32 of bytes 4..28           |
//! | 32..32+h       | bytes    | record header (h = header length)                      |
//! | 32+h..32+h+p   | bytes    | payload (p = payload length)                           |
//!
//! The header checksum lets a reader trust the two lengths before it looks past byte 32, so a
//! torn or flipped length is reported as damage instead of sending the reader off to a bogus
//! position or a huge read. The frame checksum covers everything after itself, the header
//! checksum included.

use byteorder::{ByteOrder, LittleEndian};

use super::crc;
use crate::error::CorruptionKind;

/// Fixed part of every frame.
pub const FRAME_HEADER_LEN: usize = 32;
/// Where the frame checksum starts.
pub const FRAME_CRC_OFFSET: usize = 0;
/// Where the payload length starts.
pub const PAYLOAD_LEN_OFFSET: usize = FRAME_CRC_OFFSET + 4;
/// Where the offset starts.
pub const OFFSET_OFFSET: usize = PAYLOAD_LEN_OFFSET + 4;
/// Where the timestamp starts.
pub const TIMESTAMP_OFFSET: usize = OFFSET_OFFSET + 8;
/// Where the header length starts.
pub const HEADER_LEN_OFFSET: usize = TIMESTAMP_OFFSET + 8;
/// Where the kind byte is.
pub const KIND_OFFSET: usize = HEADER_LEN_OFFSET + 2;
/// Where the flags byte is.
pub const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
/// Where the header checksum starts.
pub const HEADER_CRC_OFFSET: usize = FLAGS_OFFSET + 1;

/// Largest payload the format can hold (64 MiB). Logs set lower limits of their own.
pub const MAX_PAYLOAD_LEN: u32 = 64 << 20;
/// Largest record header (the field is a u16).
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;
/// Flag: this record is the last of the batch it was appended in.
pub const FLAG_END_OF_BATCH: u8 = 0b0000_0001;
/// Every flag bit the format defines.
pub const KNOWN_FLAGS: u8 = FLAG_END_OF_BATCH;

/// A decoded frame borrowing its header and payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's offset.
    pub offset: u64,
    /// When it was appended, ms since the epoch.
    pub timestamp_ms: u64,
    /// Record kind, chosen by the layer above.
    pub kind: u8,
    /// Frame flags ([`FLAG_END_OF_BATCH`]).
    pub flags: u8,
    /// The small typed header.
    pub header: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
    /// Bytes the whole frame occupies.
    pub frame_len: usize,
}

impl Frame<'_> {
    /// True when this record ends its batch.
    pub fn ends_batch(&self) -> bool {
        self.flags & FLAG_END_OF_BATCH != 0
    }
}

/// The outcome of decoding a frame at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, checksummed frame.
    Frame(Frame<'a>),
    /// The buffer ends before the frame does; `needed` is the whole frame's length when the
    /// header could be validated, else [`FRAME_HEADER_LEN`].
    Incomplete {
        /// Total bytes the frame needs.
        needed: usize,
    },
    /// The bytes are not a valid frame.
    Corrupt(CorruptionKind),
}

/// Total length of a frame with the given header and payload sizes.
pub fn frame_len(header_len: usize, payload_len: usize) -> usize {
    FRAME_HEADER_LEN + header_len + payload_len
}

/// The fields of a frame to encode.
#[derive(Debug, Clone, Copy)]
pub struct FrameFields<'a> {
    /// Record offset.
    pub offset: u64,
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: u64,
    /// Record kind.
    pub kind: u8,
    /// Flags ([`FLAG_END_OF_BATCH`]).
    pub flags: u8,
    /// Record header, at most [`MAX_HEADER_LEN`] bytes.
    pub header: &'a [u8],
    /// Payload, at most [`MAX_PAYLOAD_LEN`] bytes.
    pub payload: &'a [u8],
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Header plus payload bytes.
    pub size: u64,
}

/// Appends the encoded frame to `out`.
pub fn encode_into(out: &mut Vec<u8>, f: &FrameFields<'_>) -> Result<(), TooLarge> {
    let too_large = TooLarge {
        size: (f.header.len() as u64).saturating_add(f.payload.len() as u64),
    };
    let header_len = u16::try_from(f.header.len()).map_err(|_| too_large)?;
    let payload_len = u32::try_from(f.payload.len())
        .ok()
        .filter(|len| *len <= MAX_PAYLOAD_LEN)
        .ok_or(too_large)?;
    let start = out.len();
    let mut fixed = [0u8; FRAME_HEADER_LEN];
    LittleEndian::write_u32(&mut fixed[PAYLOAD_LEN_OFFSET..], payload_len);
    LittleEndian::write_u64(&mut fixed[OFFSET_OFFSET..], f.offset);
    LittleEndian::write_u64(&mut fixed[TIMESTAMP_OFFSET..], f.timestamp_ms);
    LittleEndian::write_u16(&mut fixed[HEADER_LEN_OFFSET..], header_len);
    fixed[KIND_OFFSET] = f.kind;
    fixed[FLAGS_OFFSET] = f.flags;
    let header_sum = crc::masked(&fixed[PAYLOAD_LEN_OFFSET..HEADER_CRC_OFFSET]);
    LittleEndian::write_u32(&mut fixed[HEADER_CRC_OFFSET..], header_sum);
    out.extend_from_slice(&fixed);
    out.extend_from_slice(f.header);
    out.extend_from_slice(f.payload);
    let sum = crc::masked(&out[start + PAYLOAD_LEN_OFFSET..]);
    LittleEndian::write_u32(&mut out[start + FRAME_CRC_OFFSET..], sum);
    Ok(())
}

/// Validates the fixed 32-byte part of a frame and returns the whole frame's length.
///
/// `Incomplete` only when `buf` is shorter than [`FRAME_HEADER_LEN`].
pub fn decode_len(buf: &[u8]) -> Result<usize, Decoded<'static>> {
    let Some(fixed) = buf.get(..FRAME_HEADER_LEN) else {
        return Err(Decoded::Incomplete {
            needed: FRAME_HEADER_LEN,
        });
    };
    let stored = LittleEndian::read_u32(&fixed[HEADER_CRC_OFFSET..]);
    if stored != crc::masked(&fixed[PAYLOAD_LEN_OFFSET..HEADER_CRC_OFFSET]) {
        return Err(Decoded::Corrupt(CorruptionKind::FrameHeaderChecksum));
    }
    let payload_len = LittleEndian::read_u32(&fixed[PAYLOAD_LEN_OFFSET..]);
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(Decoded::Corrupt(CorruptionKind::BadLength {
            length: u64::from(payload_len),
            max: u64::from(MAX_PAYLOAD_LEN),
        }));
    }
    let flags = fixed[FLAGS_OFFSET];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Decoded::Corrupt(CorruptionKind::BadFlags(flags)));
    }
    let header_len = LittleEndian::read_u16(&fixed[HEADER_LEN_OFFSET..]);
    // Both lengths are bounded above (u16, 64 MiB), so this cannot overflow.
    Ok(frame_len(
        usize::from(header_len),
        usize::try_from(payload_len).unwrap_or(usize::MAX),
    ))
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let total = match decode_len(buf) {
        Ok(total) => total,
        Err(outcome) => return outcome,
    };
    let Some(frame) = buf.get(..total) else {
        return Decoded::Incomplete { needed: total };
    };
    let stored = LittleEndian::read_u32(&frame[FRAME_CRC_OFFSET..]);
    let computed = crc::masked(&frame[PAYLOAD_LEN_OFFSET..]);
    if stored != computed {
        return Decoded::Corrupt(CorruptionKind::Checksum { stored, computed });
    }
    let header_len = usize::from(LittleEndian::read_u16(&frame[HEADER_LEN_OFFSET..]));
    let (header, payload) = frame[FRAME_HEADER_LEN..].split_at(header_len);
    Decoded::Frame(Frame {
        offset: LittleEndian::read_u64(&frame[OFFSET_OFFSET..]),
        timestamp_ms: LittleEndian::read_u64(&frame[TIMESTAMP_OFFSET..]),
        kind: frame[KIND_OFFSET],
        flags: frame[FLAGS_OFFSET],
        header,
        payload,
        frame_len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: &FrameFields<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, f).unwrap();
        out
    }

    fn sample() -> FrameFields<'static> {
        FrameFields {
            offset: 12,
            timestamp_ms: 1_700_000_000_123,
            kind: 3,
            flags: FLAG_END_OF_BATCH,
            header: b"key",
            payload: b"hello, world",
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample());
        assert_eq!(bytes.len(), frame_len(3, 12));
        let Decoded::Frame(f) = decode(&bytes) else {
            panic!("did not decode")
        };
        assert_eq!(
            (
                f.offset,
                f.timestamp_ms,
                f.kind,
                f.header,
                f.payload,
                f.frame_len
            ),
            (
                12,
                1_700_000_000_123,
                3,
                &b"key"[..],
                &b"hello, world"[..],
                bytes.len()
            )
        );
        assert!(f.ends_batch());
    }

    #[test]
    fn empty_header_and_payload() {
        let bytes = encode(&FrameFields {
            header: b"",
            payload: b"",
            ..sample()
        });
        assert_eq!(bytes.len(), FRAME_HEADER_LEN);
        assert!(matches!(decode(&bytes), Decoded::Frame(f) if f.payload.is_empty()));
    }

    #[test]
    fn zero_filled_tail_never_decodes() {
        for len in 0..4096 {
            let zeros = vec![0u8; len];
            assert!(
                !matches!(decode(&zeros), Decoded::Frame(_)),
                "{len} zero bytes decoded as a frame"
            );
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Decoded::Incomplete { .. }),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = encode(&sample());
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&bad), Decoded::Frame(_)),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn oversized_lengths_are_rejected_before_reading_on() {
        let mut fixed = [0u8; FRAME_HEADER_LEN];
        LittleEndian::write_u32(&mut fixed[PAYLOAD_LEN_OFFSET..], u32::MAX);
        let sum = crc::masked(&fixed[PAYLOAD_LEN_OFFSET..HEADER_CRC_OFFSET]);
        LittleEndian::write_u32(&mut fixed[HEADER_CRC_OFFSET..], sum);
        assert!(matches!(
            decode(&fixed),
            Decoded::Corrupt(CorruptionKind::BadLength { .. })
        ));
    }

    #[test]
    fn too_large_payload_is_refused_at_encode() {
        let big = vec![0u8; MAX_PAYLOAD_LEN as usize + 1];
        let mut out = Vec::new();
        let err = encode_into(
            &mut out,
            &FrameFields {
                payload: &big,
                ..sample()
            },
        );
        assert!(err.is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut bytes = encode(&sample());
        let len = bytes.len();
        bytes.extend_from_slice(&[0xff; 10]);
        assert!(matches!(decode(&bytes), Decoded::Frame(f) if f.frame_len == len));
    }
}
