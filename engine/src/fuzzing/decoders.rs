//! Decoder targets of the queue's journal events, message headers and state snapshot, and of
//! the stream consumer checkpoint.
//!
//! Each takes raw bytes. The first byte chooses how the rest is used: as the whole file or
//! record (so checksums and frames are fuzzed too), or as a bincode payload that the target
//! frames with a correct checksum itself (so the fuzzer reaches the payload decoder without
//! having to forge checksums).

use std::path::Path;

use crate::meta;
use crate::queue::handle::SNAPSHOT_MAGIC;
use crate::queue::state::State;
use crate::queue::stored::{Event, MessageHeader, decode_payload};

/// A metadata frame around `payload`, exactly as [`meta::encode`] writes one, with any payload.
pub(super) fn frame(magic: [u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(meta::META_HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&crate::codec::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    let sum = crate::codec::crc::masked2(&out, payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The file bytes a decoder target works on: `data[1..]` itself when the first byte is even,
/// else `data[1..]` as the payload of a correct metadata frame with `magic`.
fn file_bytes(magic: [u8; 8], data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => frame(magic, rest),
        Some((_, rest)) => rest.to_vec(),
        None => Vec::new(),
    }
}

/// Queries every read-only view of a state, as receives, counts and reclaiming do: whatever
/// a snapshot or a journal held, none of them may panic.
fn exercise(state: &mut State, now: u64) {
    let _ = state.counts(now);
    state.expire(now);
    let _ = state.counts(now);
    let ready: Vec<u64> = state.ready().map(|(o, _)| o).take(64).collect();
    for group in state.ready_groups_from("").into_iter().take(16) {
        let _ = state.group_busy(&group);
        let _ = state.group_has_ready(&group);
        let _ = state.ready_in_group(&group).take(16).count();
    }
    for offset in ready {
        let _ = state.slot(offset).map(|s| s.scanned(offset));
        let _ = state.is_waiting(offset);
        let _ = state.needs(offset);
    }
    let low = state.low_water();
    let _ = state.live_in(low..low.saturating_add(1 << 20));
    let _ = state.next_deadline();
    let _ = state.pending_moves().take(64).count();
    let _ = (state.len(), state.is_empty(), state.ready_len());
}

/// Queue journal records: the payload of a journal record is one bincode `Event`, the header
/// of a message record a bincode `MessageHeader` followed in the payload by its attributes.
/// First byte: 0 mod 3, one event; 1 mod 3, a message header, then the rest as its payload;
/// 2 mod 3, a journal: events of one length byte each, applied in turn to a state that is
/// queried after each. Never panics or over-allocates; what decodes re-encodes to bytes that
/// decode equal; applying any sequence of events keeps the state's queries panic-free.
pub fn queue_journal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(event) = Event::decode(rest) {
                let again = event.encode();
                assert_eq!(Event::decode(&again).ok(), Some(event.clone()));
                let mut state = State::default();
                state.apply(&event);
                exercise(&mut state, u64::from(mode) << 32);
            }
        }
        1 => {
            let split = rest.first().map_or(0, |n| usize::from(*n)).min(rest.len());
            let (header, payload) = rest.split_at(split);
            let header = header.get(1..).unwrap_or_default();
            if let Ok(h) = MessageHeader::decode(header) {
                assert_eq!(MessageHeader::decode(&h.encode()).ok(), Some(h.clone()));
                // (An encoded empty list where the engine writes no bytes decodes too: lenient,
                // and harmless.)
                if let Ok((attributes, body)) = decode_payload(&h, payload) {
                    assert!(h.attributes_len > 0 || attributes.is_empty());
                    assert_eq!(body.len() + h.attributes_len as usize, payload.len());
                }
            }
        }
        _ => {
            let mut state = State::default();
            let mut rest = rest;
            let mut now = 0u64;
            while let Some((&len, tail)) = rest.split_first() {
                let (record, tail) = tail.split_at(usize::from(len).min(tail.len()));
                rest = tail;
                if let Ok(event) = Event::decode(record) {
                    state.apply(&event);
                }
                now = now.wrapping_add(u64::from(len) * 997);
                exercise(&mut state, now);
            }
            // A journal replayed into a snapshot and back is the same state.
            let snap = meta::encode(SNAPSHOT_MAGIC, &state).expect("a state encodes");
            let back: State = meta::decode(SNAPSHOT_MAGIC, &snap, Path::new("/fuzz/state.snap"))
                .expect("a snapshot written decodes");
            assert_eq!(back, state);
        }
    }
}

/// Queue state snapshots (`state.snap`, magic `SHOALQSN`, a bincode `State`): never panic or
/// over-allocate; a snapshot that decodes re-encodes to one that decodes equal; the state
/// it holds can be queried, expired and have events applied without panicking, however
/// inconsistent its stored indexes are.
pub fn queue_snapshot(data: &[u8]) {
    let bytes = file_bytes(SNAPSHOT_MAGIC, data);
    let path = Path::new("/fuzz/state.snap");
    let Ok(mut state) = meta::decode::<State>(SNAPSHOT_MAGIC, &bytes, path) else {
        return;
    };
    let again = meta::encode(SNAPSHOT_MAGIC, &state).expect("a decoded state re-encodes");
    let back: State = meta::decode(SNAPSHOT_MAGIC, &again, path).expect("re-encoded decodes");
    assert_eq!(back, state);
    let now = state.next_deadline().unwrap_or(0);
    exercise(&mut state, now);
    let tracked: Vec<u64> = state
        .ready()
        .map(|(o, _)| o)
        .chain(state.pending_moves().map(|(o, _)| o))
        .take(8)
        .collect();
    for offset in tracked {
        state.apply(&Event::Visibility {
            offset,
            visible_at: now.saturating_add(1),
        });
        state.apply(&Event::Deleted { offset });
        state.apply(&Event::MoveDone { offset });
    }
    state.apply(&Event::Purged {
        below: state.cursor.saturating_add(1),
    });
    exercise(&mut state, u64::MAX);
}

/// Stream consumer checkpoints (`<shard>.checkpoint`, magic `SHOALCKP`): never panic or
/// over-allocate; a checkpoint that decodes re-encodes to one that decodes equal, and to the
/// same bytes when it was given as a frame the engine could have written (bincode accepts
/// non-minimal integers, so only a re-encoded frame is compared byte for byte).
pub fn consumer_checkpoint(data: &[u8]) {
    let bytes = file_bytes(*b"SHOALCKP", data);
    let path = Path::new("/fuzz/000000000000.checkpoint");
    let Ok((next, ended)) = crate::stream::decode_checkpoint(&bytes, path) else {
        return;
    };
    let again = crate::stream::encode_checkpoint(next, ended).expect("a checkpoint encodes");
    assert_eq!(
        crate::stream::decode_checkpoint(&again, path).ok(),
        Some((next, ended))
    );
    let twice = crate::stream::encode_checkpoint(next, ended).expect("a checkpoint encodes");
    assert_eq!(again, twice, "encoding is deterministic");
}
