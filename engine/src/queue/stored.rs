//! How a queue's messages and state changes are stored in its two logs, and the receipt
//! handles that name one receive of one message.
//!
//! A message is one record of the queue's message log: kind [`KIND_MESSAGE`], a bincode
//! [`MessageHeader`] as the record header (what receiving needs without touching the body:
//! id, group, delay, ...) and as payload the bincode-encoded attributes followed by the body's
//! bytes. State changes are records of the journal log, each one bincode [`Event`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byteorder::{ByteOrder, LittleEndian};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::message::MessageAttribute;
use crate::codec::crc;
use crate::error::{Error, Result};

/// Record kind of a message in the message log.
pub const KIND_MESSAGE: u8 = 1;
/// Record kind of a state event in the journal log.
pub const KIND_EVENT: u8 = 2;

/// Largest encoded message header or journal event (group and dedup ids are at most 128
/// characters; a scan event is split long before this).
const MAX_SMALL: usize = 1 << 20;
/// Largest encoded attribute list (bounded by the 1 MiB message limit).
const MAX_ATTRIBUTES_LEN: usize = 2 << 20;

/// Bincode (standard configuration) of a record header or payload; shared with topics.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

/// Decodes what [`encode`] wrote, at most `LIMIT` bytes of it, all of `bytes` or an error
/// (never a panic); shared with topics.
pub(crate) fn decode<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
    what: &str,
) -> Result<T> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok(_) => Err(Error::InvalidArgument(format!("{what}: trailing bytes"))),
        Err(e) => Err(Error::InvalidArgument(format!("{what}: {e}"))),
    }
}

/// Where a message moved by a dead-letter or redrive move came from, so a move interrupted by
/// a crash is finished exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The queue it was moved out of, or what else delivered it (a topic names itself in a
    /// form that is not a queue name, such as `topic:NAME`).
    pub queue: String,
    /// That queue's incarnation (creation time), so a recreated queue is a different one.
    pub incarnation: u64,
    /// Its offset in that queue's message log.
    pub offset: u64,
}

/// The record header of a stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageHeader {
    /// The message id (a UUID), kept across dead-letter and redrive moves.
    pub id: String,
    /// When it was first sent, ms since the epoch (kept across moves, so retention counts
    /// from the first send as SQS's does).
    pub sent_ms: u64,
    /// Delivery delay from the record's timestamp, ms.
    pub delay_ms: u64,
    /// FIFO message group.
    pub group: Option<String>,
    /// FIFO deduplication id (given, or the SHA-256 of the body).
    pub dedup: Option<String>,
    /// Receives before a move (kept by dead-letter moves, as SQS keeps the count).
    pub receive_count: u32,
    /// First receive before a move, ms since the epoch (0: never received).
    pub first_receive_ms: u64,
    /// Set on messages moved here from another queue.
    pub origin: Option<Origin>,
    /// Length of the encoded attributes at the start of the payload.
    pub attributes_len: u32,
}

impl MessageHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a header; malformed bytes are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode::<_, MAX_SMALL>(bytes, "message header")
    }
}

/// Encodes a message payload: attributes, then the body.
pub fn encode_payload(attributes: &[MessageAttribute], body: &[u8]) -> (Vec<u8>, u32) {
    let mut payload = if attributes.is_empty() {
        Vec::new()
    } else {
        encode(&attributes)
    };
    let attributes_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    payload.extend_from_slice(body);
    (payload, attributes_len)
}

/// Splits a message payload into its attributes and body.
pub fn decode_payload<'a>(
    header: &MessageHeader,
    payload: &'a [u8],
) -> Result<(Vec<MessageAttribute>, &'a [u8])> {
    let split = header.attributes_len as usize;
    let (attributes, body) = payload
        .split_at_checked(split)
        .ok_or_else(|| Error::InvalidArgument("message payload shorter than its header".into()))?;
    let attributes = if attributes.is_empty() {
        Vec::new()
    } else {
        decode::<_, MAX_ATTRIBUTES_LEN>(attributes, "message attributes")?
    };
    Ok((attributes, body))
}

/// A message the scan of the message log left waiting (delayed) or held back (FIFO group
/// busy), with what the state needs of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scanned {
    /// Offset in the message log.
    pub offset: u64,
    /// When it first became (or becomes) visible, ms.
    pub visible_at: u64,
    /// First sent, ms.
    pub sent_ms: u64,
    /// FIFO group.
    pub group: Option<String>,
    /// Receives so far (carried over by moves).
    pub receive_count: u32,
    /// First receive (carried over by moves), ms; 0 if never.
    pub first_receive_ms: u64,
}

/// One state change of a queue, appended to its journal under the queue lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The scan of never-received messages moved its cursor to `cursor`; the listed messages
    /// it passed were neither received nor dropped, and wait in the state.
    Scanned {
        /// The new cursor (next never-scanned offset).
        cursor: u64,
        /// Passed messages, now tracked by the state.
        kept: Vec<Scanned>,
    },
    /// A message was received: in flight until `visible_at`.
    Received {
        /// What is known of it.
        message: Scanned,
        /// End of its visibility timeout, ms.
        visible_at: u64,
    },
    /// A message was deleted (by a receipt handle, or it expired).
    Deleted {
        /// Its offset.
        offset: u64,
    },
    /// A message's visibility timeout was changed.
    Visibility {
        /// Its offset.
        offset: u64,
        /// The new end of the timeout, ms.
        visible_at: u64,
    },
    /// Every message below this offset was purged.
    Purged {
        /// The message log's next offset when the purge ran.
        below: u64,
    },
    /// A message is being moved to another queue: from now it is no longer delivered here.
    /// `target_from` is the target's message log next offset before the copy, where a
    /// recovery looks for the copy.
    MoveStarted {
        /// The message's offset here.
        offset: u64,
        /// Destination queue.
        target: String,
        /// Where in the destination's message log its copy can be found from.
        target_from: u64,
        /// Its receive count (a dead-letter move keeps it).
        receive_count: u32,
        /// Its first receive, ms (0: never).
        first_receive_ms: u64,
    },
    /// The move of a message finished: its copy is durable in the destination.
    MoveDone {
        /// The message's offset here.
        offset: u64,
    },
}

impl Event {
    /// Encodes the event.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes an event.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode::<_, MAX_SMALL>(bytes, "queue journal event")
    }
}

/// Version byte of a receipt handle.
pub const RECEIPT_VERSION: u8 = 1;
/// Bytes of a receipt handle before its base64 encoding: version, incarnation, offset,
/// receive count, checksum.
pub const RECEIPT_LEN: usize = 1 + 8 + 8 + 4 + 4;

/// What a receipt handle names: one receive of one message of one queue incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The queue's incarnation (creation time).
    pub incarnation: u64,
    /// The message's offset.
    pub offset: u64,
    /// Which receive of it (its receive count then): a later receive makes this one stale.
    pub receive_count: u32,
}

impl Receipt {
    /// The handle's text: URL-safe base64 of the fields and a checksum.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; RECEIPT_LEN];
        bytes[0] = RECEIPT_VERSION;
        LittleEndian::write_u64(&mut bytes[1..9], self.incarnation);
        LittleEndian::write_u64(&mut bytes[9..17], self.offset);
        LittleEndian::write_u32(&mut bytes[17..21], self.receive_count);
        let sum = crc::masked(&bytes[..21]);
        LittleEndian::write_u32(&mut bytes[21..25], sum);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a handle; anything not made by [`Receipt::encode`] is
    /// [`Error::InvalidReceiptHandle`].
    pub fn decode(handle: &str) -> Result<Receipt> {
        let invalid = || Error::InvalidReceiptHandle(handle.chars().take(100).collect());
        let bytes = URL_SAFE_NO_PAD.decode(handle).map_err(|_| invalid())?;
        if bytes.len() != RECEIPT_LEN
            || bytes[0] != RECEIPT_VERSION
            || LittleEndian::read_u32(&bytes[21..25]) != crc::masked(&bytes[..21])
        {
            return Err(invalid());
        }
        Ok(Receipt {
            incarnation: LittleEndian::read_u64(&bytes[1..9]),
            offset: LittleEndian::read_u64(&bytes[9..17]),
            receive_count: LittleEndian::read_u32(&bytes[17..21]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::message::AttributeValue;

    #[test]
    fn receipts_round_trip_and_reject_anything_else() {
        let receipt = Receipt {
            incarnation: 1_700_000_000_000,
            offset: 42,
            receive_count: 3,
        };
        let text = receipt.encode();
        assert_eq!(Receipt::decode(&text).unwrap(), receipt);
        // Every single-character change is caught by the checksum or the decoder.
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                matches!(
                    Receipt::decode(&changed),
                    Err(Error::InvalidReceiptHandle(_))
                ),
                "{changed}"
            );
        }
        for bad in ["", "x", "!!!!", &text[..text.len() - 1]] {
            assert!(Receipt::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_round_trips_with_and_without_attributes() {
        let attributes = vec![MessageAttribute {
            name: "n".into(),
            data_type: "Number".into(),
            value: AttributeValue::String("7".into()),
        }];
        for attrs in [Vec::new(), attributes] {
            let (payload, attributes_len) = encode_payload(&attrs, b"body");
            let header = MessageHeader {
                id: "id".into(),
                sent_ms: 1,
                delay_ms: 0,
                group: None,
                dedup: None,
                receive_count: 0,
                first_receive_ms: 0,
                origin: None,
                attributes_len,
            };
            let decoded = MessageHeader::decode(&header.encode()).unwrap();
            assert_eq!(decoded, header);
            let (a, body) = decode_payload(&decoded, &payload).unwrap();
            assert_eq!((a, body), (attrs, &b"body"[..]));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[][..], &[0xff; 7], &[3, 200, 200, 200, 200, 200]] {
            assert!(Event::decode(bytes).is_err());
            assert!(MessageHeader::decode(bytes).is_err());
        }
    }
}
