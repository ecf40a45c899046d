//! Holds the code's on-disk constants to `engine/FORMAT.md`, in both directions: every
//! constant listed here must be in the document's table with the same value, and every row
//! of the table must be a constant listed here.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeMap;

use shoal_engine::codec::{FORMAT_VERSION, crc, file_header, head, index, record};
use shoal_engine::meta;

const DOC: &str = include_str!("../FORMAT.md");

fn documented() -> BTreeMap<String, String> {
    let table = DOC
        .split("## Constants")
        .nth(1)
        .expect("FORMAT.md has a Constants section");
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|cells| cells.len() >= 3 && cells[1] != "name" && !cells[1].starts_with('-'))
        .map(|cells| (cells[1].to_string(), cells[2].to_string()))
        .collect()
}

fn code() -> BTreeMap<String, String> {
    let ascii = |m: [u8; 8]| String::from_utf8(m.to_vec()).unwrap();
    let n = |v: u64| v.to_string();
    let u = |v: usize| v.to_string();
    [
        ("FORMAT_VERSION", n(FORMAT_VERSION.into())),
        (
            "CRC_MASK",
            format!("{:#010X}", crc::CRC_MASK).replace("0X", "0x"),
        ),
        ("FILE_HEADER_LEN", u(file_header::FILE_HEADER_LEN)),
        ("SEGMENT_MAGIC", ascii(file_header::SEGMENT_MAGIC)),
        ("INDEX_MAGIC", ascii(file_header::INDEX_MAGIC)),
        ("BASE_OFFSET_OFFSET", u(file_header::BASE_OFFSET_OFFSET)),
        (
            "BASE_TIMESTAMP_OFFSET",
            u(file_header::BASE_TIMESTAMP_OFFSET),
        ),
        ("HEADER_CRC_OFFSET", u(file_header::HEADER_CRC_OFFSET)),
        ("FRAME_HEADER_LEN", u(record::FRAME_HEADER_LEN)),
        ("FRAME_CRC_OFFSET", u(record::FRAME_CRC_OFFSET)),
        ("PAYLOAD_LEN_OFFSET", u(record::PAYLOAD_LEN_OFFSET)),
        ("OFFSET_OFFSET", u(record::OFFSET_OFFSET)),
        ("TIMESTAMP_OFFSET", u(record::TIMESTAMP_OFFSET)),
        ("HEADER_LEN_OFFSET", u(record::HEADER_LEN_OFFSET)),
        ("KIND_OFFSET", u(record::KIND_OFFSET)),
        ("FLAGS_OFFSET", u(record::FLAGS_OFFSET)),
        ("FRAME_HEADER_CRC_OFFSET", u(record::HEADER_CRC_OFFSET)),
        ("MAX_PAYLOAD_LEN", n(record::MAX_PAYLOAD_LEN.into())),
        ("FLAG_END_OF_BATCH", n(record::FLAG_END_OF_BATCH.into())),
        ("INDEX_ENTRY_LEN", u(index::INDEX_ENTRY_LEN)),
        ("REL_OFFSET_OFFSET", u(index::REL_OFFSET_OFFSET)),
        ("POSITION_OFFSET", u(index::POSITION_OFFSET)),
        ("ENTRY_TIMESTAMP_OFFSET", u(index::ENTRY_TIMESTAMP_OFFSET)),
        ("HEAD_LEN", u(head::HEAD_LEN)),
        ("HEAD_MAGIC", ascii(head::HEAD_MAGIC)),
        ("ACTIVE_BASE_OFFSET", u(head::ACTIVE_BASE_OFFSET)),
        ("COMMITTED_LEN_OFFSET", u(head::COMMITTED_LEN_OFFSET)),
        ("SYNCED_LEN_OFFSET", u(head::SYNCED_LEN_OFFSET)),
        ("NEXT_OFFSET_OFFSET", u(head::NEXT_OFFSET_OFFSET)),
        ("LAST_TIMESTAMP_OFFSET", u(head::LAST_TIMESTAMP_OFFSET)),
        ("START_OFFSET_OFFSET", u(head::START_OFFSET_OFFSET)),
        ("HEAD_CRC_OFFSET", u(head::HEAD_CRC_OFFSET)),
        ("META_HEADER_LEN", u(meta::META_HEADER_LEN)),
        ("MAX_META_LEN", u(meta::MAX_META_LEN)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn constants_match_the_document_both_ways() {
    assert_eq!(documented(), code());
}

#[test]
fn an_encoded_frame_has_its_fields_where_the_document_says() {
    let mut bytes = Vec::new();
    record::encode_into(
        &mut bytes,
        &record::FrameFields {
            offset: 0x0102_0304_0506_0708,
            timestamp_ms: 0x1112_1314_1516_1718,
            kind: 0x21,
            flags: record::FLAG_END_OF_BATCH,
            header: b"hk",
            payload: b"payload",
        },
    )
    .unwrap();
    assert_eq!(bytes.len(), 32 + 2 + 7);
    assert_eq!(&bytes[4..8], &7u32.to_le_bytes());
    assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&bytes[16..24], &0x1112_1314_1516_1718u64.to_le_bytes());
    assert_eq!(&bytes[24..26], &2u16.to_le_bytes());
    assert_eq!((bytes[26], bytes[27]), (0x21, 1));
    let header_sum = crc32fast::hash(&bytes[4..28]) ^ 0xA282_EAD8;
    assert_eq!(&bytes[28..32], &header_sum.to_le_bytes());
    let frame_sum = crc32fast::hash(&bytes[4..]) ^ 0xA282_EAD8;
    assert_eq!(&bytes[0..4], &frame_sum.to_le_bytes());
    assert_eq!(&bytes[32..34], b"hk");
    assert_eq!(&bytes[34..], b"payload");
}

#[test]
fn an_encoded_file_header_and_head_match_the_document() {
    let header = file_header::FileHeader {
        kind: file_header::FileKind::Segment,
        base_offset: 4711,
        base_timestamp_ms: 99,
    }
    .encode();
    assert_eq!(&header[0..8], b"SHOALSEG");
    assert_eq!(&header[8..10], &1u16.to_le_bytes());
    assert!(header[10..16].iter().all(|b| *b == 0));
    assert_eq!(&header[16..24], &4711u64.to_le_bytes());
    assert_eq!(&header[24..32], &99u64.to_le_bytes());
    assert!(header[32..60].iter().all(|b| *b == 0));
    assert_eq!(
        &header[60..64],
        &(crc32fast::hash(&header[..60]) ^ 0xA282_EAD8).to_le_bytes()
    );
    let h = head::Head {
        active_base: 1,
        committed_len: 2,
        synced_len: 2,
        next_offset: 3,
        last_timestamp_ms: 4,
        start_offset: 0,
    }
    .encode();
    assert_eq!(&h[0..8], b"SHOALHED");
    for (at, value) in [(16, 1u64), (24, 2), (32, 2), (40, 3), (48, 4), (56, 0)] {
        assert_eq!(&h[at..at + 8], &value.to_le_bytes(), "field at {at}");
    }
    assert_eq!(
        &h[64..68],
        &(crc32fast::hash(&h[..64]) ^ 0xA282_EAD8).to_le_bytes()
    );
    let entry = index::IndexEntry {
        rel_offset: 5,
        position: 6,
        timestamp_ms: 7,
    }
    .encode();
    assert_eq!(
        &entry[..],
        &[5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
    );
}
