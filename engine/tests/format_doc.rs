//! Holds `engine/FORMAT.md` to the code, so neither can drift silently:
//!
//! - the document's Constants and Defaults tables must list exactly the constants and defaults
//!   named here, with the code's values (a row missing, extra, duplicated or wrong fails);
//! - every byte table (`| Bytes | Encoding | Field |`) must be contiguous from byte 0, give
//!   each integer field the width of its encoding, and place each field where the code's
//!   offset constant says;
//! - encoded structures, and the files a real log writes, have their fields at the documented
//!   byte positions (written here as literals, as the document states them).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use shoal_engine::clock::ManualClock;
use shoal_engine::codec::file_header::{self, FileHeader, FileKind, HeaderError};
use shoal_engine::codec::record::{self, Decoded, FrameFields};
use shoal_engine::codec::{FORMAT_VERSION, crc, head, index};
use shoal_engine::log::{Durability, Entry, Log, LogOptions, ReadLimit, segment};
use shoal_engine::queue::stored::{self, Event, MessageHeader, Origin};
use shoal_engine::queue::{
    AttributeValue, MessageAttribute, QueueAttributes, Receive, SendMessage,
};
use shoal_engine::storage::FsStorage;
use shoal_engine::{CorruptionKind, DataDir, Error, datadir, meta};

const DOC: &str = include_str!("../FORMAT.md");

// ---------------------------------------------------------------------------------------------
// Reading the document

/// The body of the `## title` section (up to the next `## ` heading).
fn section(title: &str) -> &'static str {
    let heading = format!("## {title}\n");
    let start = DOC
        .find(&heading)
        .unwrap_or_else(|| panic!("FORMAT.md has no section {heading:?}"))
        + heading.len();
    let rest = &DOC[start..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// Rows of the first table in `body` whose header's first cell is `first_header`: the cells,
/// trimmed, without the header and separator rows.
fn table(body: &str, first_header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in body.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            if inside {
                break;
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        if !inside {
            inside = cells.first().is_some_and(|c| c == first_header);
            continue;
        }
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        rows.push(cells);
    }
    assert!(
        !rows.is_empty(),
        "no table headed {first_header:?} in the section"
    );
    rows
}

/// A `| name | value | ... |` table as a map, refusing duplicate names.
fn name_value_table(title: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for row in table(section(title), "name") {
        let name = row[0].trim_matches('`').to_string();
        let value = row[1].trim_matches('`').to_string();
        assert!(
            map.insert(name.clone(), value).is_none(),
            "{title}: {name} is listed twice"
        );
    }
    map
}

fn ascii(magic: [u8; 8]) -> String {
    String::from_utf8(magic.to_vec()).unwrap()
}

fn hex(v: u64, width: usize) -> String {
    format!("0x{v:0width$X}")
}

// ---------------------------------------------------------------------------------------------
// Constants and defaults, both ways

fn code_constants() -> BTreeMap<String, String> {
    use file_header as fh;
    let u = |v: usize| v.to_string();
    [
        ("codec::FORMAT_VERSION", FORMAT_VERSION.to_string()),
        ("codec::crc::CRC_MASK", hex(crc::CRC_MASK.into(), 8)),
        (
            "codec::file_header::FILE_HEADER_LEN",
            u(fh::FILE_HEADER_LEN),
        ),
        ("codec::file_header::MAGIC_OFFSET", u(fh::MAGIC_OFFSET)),
        ("codec::file_header::MAGIC_LEN", u(fh::MAGIC_LEN)),
        ("codec::file_header::VERSION_OFFSET", u(fh::VERSION_OFFSET)),
        (
            "codec::file_header::BASE_OFFSET_OFFSET",
            u(fh::BASE_OFFSET_OFFSET),
        ),
        (
            "codec::file_header::BASE_TIMESTAMP_OFFSET",
            u(fh::BASE_TIMESTAMP_OFFSET),
        ),
        (
            "codec::file_header::HEADER_CRC_OFFSET",
            u(fh::HEADER_CRC_OFFSET),
        ),
        (
            "codec::file_header::SEGMENT_MAGIC",
            ascii(fh::SEGMENT_MAGIC),
        ),
        ("codec::file_header::INDEX_MAGIC", ascii(fh::INDEX_MAGIC)),
        (
            "codec::record::FRAME_HEADER_LEN",
            u(record::FRAME_HEADER_LEN),
        ),
        (
            "codec::record::FRAME_CRC_OFFSET",
            u(record::FRAME_CRC_OFFSET),
        ),
        (
            "codec::record::PAYLOAD_LEN_OFFSET",
            u(record::PAYLOAD_LEN_OFFSET),
        ),
        ("codec::record::OFFSET_OFFSET", u(record::OFFSET_OFFSET)),
        (
            "codec::record::TIMESTAMP_OFFSET",
            u(record::TIMESTAMP_OFFSET),
        ),
        (
            "codec::record::HEADER_LEN_OFFSET",
            u(record::HEADER_LEN_OFFSET),
        ),
        ("codec::record::KIND_OFFSET", u(record::KIND_OFFSET)),
        ("codec::record::FLAGS_OFFSET", u(record::FLAGS_OFFSET)),
        (
            "codec::record::HEADER_CRC_OFFSET",
            u(record::HEADER_CRC_OFFSET),
        ),
        (
            "codec::record::MAX_PAYLOAD_LEN",
            record::MAX_PAYLOAD_LEN.to_string(),
        ),
        ("codec::record::MAX_HEADER_LEN", u(record::MAX_HEADER_LEN)),
        (
            "codec::record::FLAG_END_OF_BATCH",
            hex(record::FLAG_END_OF_BATCH.into(), 2),
        ),
        (
            "codec::record::KNOWN_FLAGS",
            hex(record::KNOWN_FLAGS.into(), 2),
        ),
        ("codec::index::INDEX_ENTRY_LEN", u(index::INDEX_ENTRY_LEN)),
        (
            "codec::index::REL_OFFSET_OFFSET",
            u(index::REL_OFFSET_OFFSET),
        ),
        ("codec::index::POSITION_OFFSET", u(index::POSITION_OFFSET)),
        (
            "codec::index::ENTRY_TIMESTAMP_OFFSET",
            u(index::ENTRY_TIMESTAMP_OFFSET),
        ),
        ("codec::head::HEAD_LEN", u(head::HEAD_LEN)),
        ("codec::head::HEAD_MAGIC", ascii(head::HEAD_MAGIC)),
        (
            "codec::head::HEAD_VERSION_OFFSET",
            u(head::HEAD_VERSION_OFFSET),
        ),
        ("codec::head::BOOT_OFFSET", u(head::BOOT_OFFSET)),
        (
            "codec::head::ACTIVE_BASE_OFFSET",
            u(head::ACTIVE_BASE_OFFSET),
        ),
        (
            "codec::head::COMMITTED_LEN_OFFSET",
            u(head::COMMITTED_LEN_OFFSET),
        ),
        ("codec::head::SYNCED_LEN_OFFSET", u(head::SYNCED_LEN_OFFSET)),
        (
            "codec::head::NEXT_OFFSET_OFFSET",
            u(head::NEXT_OFFSET_OFFSET),
        ),
        (
            "codec::head::LAST_TIMESTAMP_OFFSET",
            u(head::LAST_TIMESTAMP_OFFSET),
        ),
        (
            "codec::head::START_OFFSET_OFFSET",
            u(head::START_OFFSET_OFFSET),
        ),
        ("codec::head::HEAD_CRC_OFFSET", u(head::HEAD_CRC_OFFSET)),
        ("meta::META_HEADER_LEN", u(meta::META_HEADER_LEN)),
        ("meta::MAX_META_LEN", u(meta::MAX_META_LEN)),
        ("log::segment::NAME_DIGITS", u(segment::NAME_DIGITS)),
        ("log::segment::SEGMENT_EXT", segment::SEGMENT_EXT.into()),
        ("log::segment::INDEX_EXT", segment::INDEX_EXT.into()),
        (
            "log::segment::COMPACT_SUFFIX",
            segment::COMPACT_SUFFIX.into(),
        ),
        ("log::segment::HEAD_FILE", segment::HEAD_FILE.into()),
        ("log::segment::LOCK_FILE", segment::LOCK_FILE.into()),
        ("log::segment::SEALED_FILE", segment::SEALED_FILE.into()),
        ("datadir::FORMAT_FILE", datadir::FORMAT_FILE.into()),
        (
            "log::PREFILL_BYTES",
            shoal_engine::log::PREFILL_BYTES.to_string(),
        ),
        (
            "log::PREFILL_MAX_BATCH",
            shoal_engine::log::PREFILL_MAX_BATCH.to_string(),
        ),
        (
            "queue::stored::KIND_MESSAGE",
            stored::KIND_MESSAGE.to_string(),
        ),
        ("queue::stored::KIND_EVENT", stored::KIND_EVENT.to_string()),
        (
            "queue::stored::RECEIPT_VERSION",
            stored::RECEIPT_VERSION.to_string(),
        ),
        ("queue::stored::RECEIPT_LEN", u(stored::RECEIPT_LEN)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn code_defaults() -> BTreeMap<String, String> {
    let o = LogOptions::default();
    let age_ms = o.segment_age_max.map(|d| d.as_millis().to_string());
    [
        ("segment_bytes_max", o.segment_bytes_max.to_string()),
        (
            "segment_age_max_ms",
            age_ms.unwrap_or_else(|| "none".into()),
        ),
        ("index_interval_bytes", o.index_interval_bytes.to_string()),
        ("max_record_bytes", o.max_record_bytes.to_string()),
        ("durability", format!("{:?}", o.durability)),
        ("writer_lock", format!("{:?}", o.writer_lock)),
        ("wait_for_lock", o.wait_for_lock.to_string()),
        ("prefill", o.prefill.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn constants_match_the_document_both_ways() {
    assert_eq!(name_value_table("Constants"), code_constants());
}

#[test]
fn defaults_match_the_document_both_ways() {
    assert_eq!(name_value_table("Defaults"), code_defaults());
}

#[test]
fn the_prose_states_the_mask_and_the_zero_run_checksum() {
    let mask = hex(crc::CRC_MASK.into(), 8);
    assert!(DOC.contains(&format!("`CRC_MASK = {mask}`")), "mask {mask}");
    let zero_fixed_part =
        crc::masked(&[0u8; record::HEADER_CRC_OFFSET - record::PAYLOAD_LEN_OFFSET]);
    assert_ne!(zero_fixed_part, 0);
    let documented = format!("`{}`", hex(zero_fixed_part.into(), 8));
    assert!(DOC.contains(&documented), "zero-run checksum {documented}");
}

// ---------------------------------------------------------------------------------------------
// Byte tables

#[derive(Debug)]
struct Field {
    start: usize,
    end: usize,
    encoding: String,
    name: String,
    text: String,
}

/// The numeric rows of the section's byte table, in order, up to the first row with a symbolic
/// or open-ended range. Asserts they are contiguous from 0 and that integer widths match.
fn byte_table(title: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut at = 0;
    for row in table(section(title), "Bytes") {
        let (range, encoding, text) = (&row[0], &row[1], &row[2]);
        let bounds: Option<(usize, usize)> = match range.split_once("..") {
            Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
            None => range.parse().ok().map(|a: usize| (a, a + 1)),
        };
        let Some((start, end)) = bounds else { break };
        assert_eq!(start, at, "{title}: {range} does not follow byte {at}");
        assert!(end > start, "{title}: empty range {range}");
        let width = match encoding.as_str() {
            "u8" => Some(1),
            "u16" => Some(2),
            "u32" => Some(4),
            "u64" => Some(8),
            _ => None,
        };
        if let Some(width) = width {
            assert_eq!(end - start, width, "{title}: {range} is not a {encoding}");
        }
        let name = text.split(':').next().unwrap().trim().to_string();
        fields.push(Field {
            start,
            end,
            encoding: encoding.clone(),
            name,
            text: text.clone(),
        });
        at = end;
    }
    fields
}

fn field<'a>(fields: &'a [Field], name: &str) -> &'a Field {
    fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no field {name:?} in {fields:?}"))
}

/// Asserts the fixed part ends at `len` and each `(name, offset, width)` is where it says.
fn assert_layout(title: &str, len: usize, expected: &[(&str, usize, usize)]) -> Vec<Field> {
    let fields = byte_table(title);
    assert_eq!(fields.last().unwrap().end, len, "{title}: fixed length");
    for &(name, offset, width) in expected {
        let f = field(&fields, name);
        assert_eq!(
            (f.start, f.end),
            (offset, offset + width),
            "{title}: {name}"
        );
    }
    fields
}

#[test]
fn file_header_table_matches_the_code() {
    use file_header as fh;
    let fields = assert_layout(
        "File header",
        fh::FILE_HEADER_LEN,
        &[
            ("magic", fh::MAGIC_OFFSET, fh::MAGIC_LEN),
            ("format version", fh::VERSION_OFFSET, 2),
            ("base offset", fh::BASE_OFFSET_OFFSET, 8),
            ("base timestamp", fh::BASE_TIMESTAMP_OFFSET, 8),
            (
                &format!("masked CRC32 of bytes 0..{}", fh::HEADER_CRC_OFFSET),
                fh::HEADER_CRC_OFFSET,
                4,
            ),
        ],
    );
    let magic = field(&fields, "magic");
    for m in [fh::SEGMENT_MAGIC, fh::INDEX_MAGIC] {
        assert!(magic.text.contains(&format!("`{}`", ascii(m))), "{m:?}");
    }
    // Everything not a field is reserved zero.
    for f in &fields {
        assert!(
            f.encoding != "zero" || f.name == "reserved",
            "{f:?} is zero but not reserved"
        );
    }
}

#[test]
fn record_frame_table_matches_the_code() {
    let fields = assert_layout(
        "Record frame",
        record::FRAME_HEADER_LEN,
        &[
            ("frame checksum", record::FRAME_CRC_OFFSET, 4),
            ("payload length p", record::PAYLOAD_LEN_OFFSET, 4),
            ("offset", record::OFFSET_OFFSET, 8),
            ("timestamp", record::TIMESTAMP_OFFSET, 8),
            ("header length h", record::HEADER_LEN_OFFSET, 2),
            ("kind", record::KIND_OFFSET, 1),
            ("flags", record::FLAGS_OFFSET, 1),
            ("header checksum", record::HEADER_CRC_OFFSET, 4),
        ],
    );
    let covers = |name: &str, range: String| {
        let f = field(&fields, name);
        assert!(
            f.text.contains(&range),
            "{name} should cover {range}: {}",
            f.text
        );
    };
    covers(
        "frame checksum",
        format!(
            "bytes {}..{}+h+p",
            record::PAYLOAD_LEN_OFFSET,
            record::FRAME_HEADER_LEN
        ),
    );
    covers(
        "header checksum",
        format!(
            "bytes {}..{}",
            record::PAYLOAD_LEN_OFFSET,
            record::HEADER_CRC_OFFSET
        ),
    );
}

#[test]
fn index_entry_table_matches_the_code() {
    assert_layout(
        "Index",
        index::INDEX_ENTRY_LEN,
        &[
            ("relative offset", index::REL_OFFSET_OFFSET, 4),
            ("position", index::POSITION_OFFSET, 4),
            ("timestamp", index::ENTRY_TIMESTAMP_OFFSET, 8),
        ],
    );
}

#[test]
fn receipt_handle_table_matches_the_code() {
    let fields = assert_layout(
        "Queues",
        stored::RECEIPT_LEN,
        &[
            ("version", 0, 1),
            ("incarnation", 1, 8),
            ("offset", 9, 8),
            ("receive count", 17, 4),
            ("masked CRC32 of bytes 0..21", 21, 4),
        ],
    );
    assert!(
        field(&fields, "version")
            .text
            .contains(&format!("({})", stored::RECEIPT_VERSION))
    );
}

#[test]
fn head_table_matches_the_code() {
    assert_layout(
        "Head file",
        head::HEAD_LEN,
        &[
            (&format!("magic `{}`", ascii(head::HEAD_MAGIC)), 0, 8),
            ("format version", head::HEAD_VERSION_OFFSET, 2),
            ("boot", head::BOOT_OFFSET, 6),
            ("active base", head::ACTIVE_BASE_OFFSET, 8),
            ("committed length", head::COMMITTED_LEN_OFFSET, 8),
            ("synced length", head::SYNCED_LEN_OFFSET, 8),
            ("next offset", head::NEXT_OFFSET_OFFSET, 8),
            ("last timestamp", head::LAST_TIMESTAMP_OFFSET, 8),
            ("start offset", head::START_OFFSET_OFFSET, 8),
            (
                &format!("masked CRC32 of bytes 0..{}", head::HEAD_CRC_OFFSET),
                head::HEAD_CRC_OFFSET,
                4,
            ),
        ],
    );
    assert!(
        section("Head file").starts_with(&format!("\n`head` is {} bytes", head::HEAD_LEN)),
        "the head section states its length"
    );
}

#[test]
fn metadata_and_throughput_tables_are_contiguous() {
    assert_layout(
        "Metadata files",
        meta::META_HEADER_LEN,
        &[
            ("magic", 0, 8),
            ("format version", 8, 2),
            ("payload length", 12, 4),
            ("masked CRC32 of bytes 0..16 followed by the payload", 16, 4),
        ],
    );
    assert_layout("Throughput counters", 32, &[]);
}

// ---------------------------------------------------------------------------------------------
// Encoded structures at the documented positions

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn an_encoded_frame_has_its_fields_where_the_document_says() {
    let mut bytes = Vec::new();
    record::encode_into(
        &mut bytes,
        &FrameFields {
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
    assert_eq!(le32(&bytes, 4), 7);
    assert_eq!(le64(&bytes, 8), 0x0102_0304_0506_0708);
    assert_eq!(le64(&bytes, 16), 0x1112_1314_1516_1718);
    assert_eq!(&bytes[24..26], &2u16.to_le_bytes());
    assert_eq!((bytes[26], bytes[27]), (0x21, 0x01));
    assert_eq!(
        le32(&bytes, 28),
        crc32fast::hash(&bytes[4..28]) ^ 0xA282_EAD8
    );
    assert_eq!(le32(&bytes, 0), crc32fast::hash(&bytes[4..]) ^ 0xA282_EAD8);
    assert_eq!(&bytes[32..34], b"hk");
    assert_eq!(&bytes[34..], b"payload");
}

#[test]
fn zero_fill_unknown_flags_and_long_payloads_do_not_decode() {
    // A zero-filled tail fails the header checksum of its fixed part.
    assert_eq!(
        record::decode(&[0u8; 32]),
        Decoded::Corrupt(CorruptionKind::FrameHeaderChecksum)
    );
    for len in 0..300 {
        assert!(!matches!(
            record::decode(&vec![0u8; len]),
            Decoded::Frame(_)
        ));
    }
    // A fixed part whose header checksum holds but whose flags or length do not.
    let fixed = |payload_len: u32, flags: u8| {
        let mut b = [0u8; 32];
        b[4..8].copy_from_slice(&payload_len.to_le_bytes());
        b[27] = flags;
        let sum = crc::masked(&b[4..28]);
        b[28..32].copy_from_slice(&sum.to_le_bytes());
        b
    };
    assert_eq!(
        record::decode(&fixed(0, 0x02)),
        Decoded::Corrupt(CorruptionKind::BadFlags(0x02))
    );
    assert!(matches!(
        record::decode(&fixed(64 << 20, 0)),
        Decoded::Incomplete { needed } if needed == 32 + (64 << 20)
    ));
    assert!(matches!(
        record::decode(&fixed((64 << 20) + 1, 0)),
        Decoded::Corrupt(CorruptionKind::BadLength { .. })
    ));
}

#[test]
fn file_header_head_and_index_entry_encode_as_documented() {
    let header = FileHeader {
        kind: FileKind::Segment,
        base_offset: 4711,
        base_timestamp_ms: 99,
    }
    .encode();
    assert_eq!(&header[0..8], b"SHOALSEG");
    assert_eq!(&header[8..10], &1u16.to_le_bytes());
    assert!(header[10..16].iter().all(|b| *b == 0));
    assert_eq!(le64(&header, 16), 4711);
    assert_eq!(le64(&header, 24), 99);
    assert!(header[32..60].iter().all(|b| *b == 0));
    assert_eq!(
        le32(&header, 60),
        crc32fast::hash(&header[..60]) ^ 0xA282_EAD8
    );
    let index_header = FileHeader {
        kind: FileKind::Index,
        base_offset: 4711,
        base_timestamp_ms: 99,
    }
    .encode();
    assert_eq!(&index_header[0..8], b"SHOALIDX");

    let h = head::Head {
        active_base: 1,
        committed_len: 2,
        synced_len: 2,
        next_offset: 3,
        last_timestamp_ms: 4,
        start_offset: 0,
        boot: 0x0605_0403_0201,
    }
    .encode();
    assert_eq!(h.len(), 68);
    assert_eq!(&h[0..8], b"SHOALHED");
    assert_eq!(&h[8..10], &1u16.to_le_bytes());
    assert_eq!(&h[10..16], &[1, 2, 3, 4, 5, 6]);
    for (at, value) in [(16, 1u64), (24, 2), (32, 2), (40, 3), (48, 4), (56, 0)] {
        assert_eq!(le64(&h, at), value, "head field at {at}");
    }
    assert_eq!(le32(&h, 64), crc32fast::hash(&h[..64]) ^ 0xA282_EAD8);

    let entry = index::IndexEntry {
        rel_offset: 5,
        position: 6,
        timestamp_ms: 7,
    }
    .encode();
    assert_eq!(entry, [5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn inconsistent_heads_do_not_decode() {
    let good = head::Head {
        active_base: 10,
        committed_len: 500,
        synced_len: 400,
        next_offset: 20,
        last_timestamp_ms: 1,
        start_offset: 5,
        boot: 7,
    };
    assert_eq!(head::Head::decode(&good.encode()), Ok(good));
    for bad in [
        head::Head {
            synced_len: 501,
            ..good
        },
        head::Head {
            next_offset: 9,
            start_offset: 0,
            ..good
        },
        head::Head {
            start_offset: 21,
            ..good
        },
    ] {
        assert!(head::Head::decode(&bad.encode()).is_err(), "{bad:?}");
    }
}

/// Sets the version field of an encoded file header or head (checksum of the bytes before
/// it, at `crc_at`) or metadata frame (`crc_at` 16: bytes 0..16 and the payload), then its
/// checksum as a newer shoal writing it would: every version keeps that frame in place.
fn with_version(bytes: &mut [u8], version: u16, crc_at: usize) {
    bytes[8..10].copy_from_slice(&version.to_le_bytes());
    let sum = if crc_at == 16 {
        crc::masked2(&bytes[..16], &bytes[20..])
    } else {
        crc::masked(&bytes[..crc_at])
    };
    bytes[crc_at..crc_at + 4].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn an_intact_newer_version_is_refused_as_newer_and_a_damaged_version_is_damage() {
    let newer = FORMAT_VERSION + 1;
    let header = FileHeader {
        kind: FileKind::Segment,
        base_offset: 0,
        base_timestamp_ms: 0,
    }
    .encode();
    let h = head::Head::default().encode();
    let m = meta::encode(*b"SHOALTST", &7u32).unwrap();

    let mut newer_header = header;
    with_version(&mut newer_header, newer, file_header::HEADER_CRC_OFFSET);
    assert_eq!(
        FileHeader::decode(FileKind::Segment, &newer_header),
        Err(HeaderError::Version(newer))
    );
    let mut newer_head = h;
    with_version(&mut newer_head, newer, head::HEAD_CRC_OFFSET);
    assert_eq!(
        head::Head::decode(&newer_head),
        Err(HeaderError::Version(newer))
    );
    let mut newer_meta = m.clone();
    with_version(&mut newer_meta, newer, 16);
    let err = meta::decode::<u32>(*b"SHOALTST", &newer_meta, Path::new("x")).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found, .. } if found == newer),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade shoal"), "{err}");

    // The same version with the checksum left as it was: a flipped bit, not a newer shoal.
    for bit in 0..16 {
        let flipped = 1u16 << bit;
        let mut damaged = header;
        damaged[8..10].copy_from_slice(&(FORMAT_VERSION ^ flipped).to_le_bytes());
        assert_eq!(
            FileHeader::decode(FileKind::Segment, &damaged),
            Err(HeaderError::Checksum)
        );
        let mut damaged = h;
        damaged[8..10].copy_from_slice(&(FORMAT_VERSION ^ flipped).to_le_bytes());
        assert_eq!(head::Head::decode(&damaged), Err(HeaderError::Checksum));
        let mut damaged = m.clone();
        damaged[8..10].copy_from_slice(&(FORMAT_VERSION ^ flipped).to_le_bytes());
        let err = meta::decode::<u32>(*b"SHOALTST", &damaged, Path::new("x")).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }
}

#[test]
fn a_metadata_frame_has_its_fields_where_the_document_says() {
    let m = meta::encode(*b"SHOALTST", &("queue", 42u64)).unwrap();
    assert_eq!(&m[0..8], b"SHOALTST");
    assert_eq!(&m[8..10], &1u16.to_le_bytes());
    assert_eq!(&m[10..12], &[0, 0]);
    let len = le32(&m, 12) as usize;
    assert_eq!(m.len(), 20 + len);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&m[..16]);
    hasher.update(&m[20..]);
    assert_eq!(le32(&m, 16), hasher.finalize() ^ 0xA282_EAD8);
    let back: (String, u64) = meta::decode(*b"SHOALTST", &m, Path::new("x")).unwrap();
    assert_eq!(back, ("queue".to_string(), 42));
}

// ---------------------------------------------------------------------------------------------
// Files written by a real log

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `(position, offset, timestamp, flags)` of every frame after the header, up to the end of
/// the file or to zeros that run to it (a prefill).
fn frames(segment: &[u8]) -> Vec<(usize, u64, u64, u8)> {
    let mut out = Vec::new();
    let mut at = 64;
    while at < segment.len() && segment[at..].iter().any(|&b| b != 0) {
        let frame_len = 32
            + usize::from(u16::from_le_bytes([segment[at + 24], segment[at + 25]]))
            + le32(segment, at + 4) as usize;
        out.push((
            at,
            le64(segment, at + 8),
            le64(segment, at + 16),
            segment[at + 27],
        ));
        at += frame_len;
    }
    assert!(
        at <= segment.len(),
        "the last frame runs past the end of the file"
    );
    out
}

fn open(dir: &Path, clock: &Arc<ManualClock>, options: &LogOptions) -> shoal_engine::Result<Log> {
    Log::open(
        Arc::new(FsStorage::new()),
        clock.clone(),
        dir,
        options.clone(),
    )
}

#[test]
fn a_log_writes_the_documented_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = ManualClock::new(1_000);
    let options = LogOptions {
        index_interval_bytes: 1,
        ..LogOptions::default()
    };
    let log = open(dir, &clock, &options).unwrap();
    log.append(&[Entry::new(b"a"), Entry::new(b"bb"), Entry::new(b"ccc")])
        .unwrap();
    clock.advance(1_000);
    log.append(&[Entry::new(b"dd"), Entry::new(b"e")]).unwrap();
    assert_eq!(
        names(dir),
        [
            "00000000000000000000.index",
            "00000000000000000000.log",
            "LOCK",
            "head"
        ]
    );

    // The segment: header, then frames back to back; one timestamp per batch, the
    // end-of-batch flag on each batch's last record only.
    let seg = std::fs::read(dir.join("00000000000000000000.log")).unwrap();
    assert_eq!(&seg[0..8], b"SHOALSEG");
    assert_eq!(le64(&seg, 16), 0);
    assert_eq!(le64(&seg, 24), 1_000);
    let got = frames(&seg);
    let summary: Vec<(u64, u64, u8)> = got.iter().map(|&(_, o, t, f)| (o, t, f)).collect();
    assert_eq!(
        summary,
        [
            (0, 1_000, 0),
            (1, 1_000, 0),
            (2, 1_000, 1),
            (3, 2_000, 0),
            (4, 2_000, 1)
        ]
    );

    // The index: entries only at batch starts. With a 1-byte interval, every batch but the
    // one at byte 64 (the header's end counts as the previous entry) gets one.
    let idx = std::fs::read(dir.join("00000000000000000000.index")).unwrap();
    assert_eq!(&idx[0..8], b"SHOALIDX");
    assert_eq!(
        &idx[16..32],
        &seg[16..32],
        "the index repeats base offset and time"
    );
    assert_eq!(idx.len(), 64 + 16);
    let second_batch = got[3].0;
    assert_eq!(le32(&idx, 64), 3);
    assert_eq!(le32(&idx, 68) as usize, second_batch);
    assert_eq!(le64(&idx, 72), 2_000);

    // The head (always durability): committed = synced = the segment's length.
    let h = std::fs::read(dir.join("head")).unwrap();
    assert_eq!(h.len(), 68);
    assert_eq!(&h[0..8], b"SHOALHED");
    let len = seg.len() as u64;
    assert_eq!(
        [16, 24, 32, 40, 48, 56].map(|at| le64(&h, at)),
        [0, len, len, 5, 2_000, 0]
    );

    // A roll: the new segment is named by the next offset and starts at the roll's time; the
    // head names it with nothing committed past its header.
    clock.advance(1_000);
    log.roll().unwrap();
    assert!(names(dir).contains(&"00000000000000000005.log".to_string()));
    assert!(names(dir).contains(&"00000000000000000005.index".to_string()));
    let next = std::fs::read(dir.join("00000000000000000005.log")).unwrap();
    assert_eq!(next.len(), 64);
    assert_eq!((le64(&next, 16), le64(&next, 24)), (5, 3_000));
    let h = std::fs::read(dir.join("head")).unwrap();
    assert_eq!(
        [16, 24, 32, 40, 48].map(|at| le64(&h, at)),
        [5, 64, 64, 5, 3_000]
    );
    assert_eq!(
        std::fs::read(dir.join("00000000000000000000.log")).unwrap(),
        seg,
        "a sealed segment is not written again"
    );
}

#[test]
fn recovery_keeps_complete_batches_and_refuses_damage_in_the_synced_region() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = ManualClock::new(1_000);
    let options = LogOptions::default();
    let log = open(dir, &clock, &options).unwrap();
    log.append(&[Entry::new(b"one"), Entry::new(b"two")])
        .unwrap();
    drop(log);
    let path = dir.join("00000000000000000000.log");
    let synced = std::fs::read(&path).unwrap();

    // Past the synced length: an intact record of an unfinished batch, then half a frame.
    let mut tail = Vec::new();
    for (offset, flags) in [(2, 0), (3, record::FLAG_END_OF_BATCH)] {
        record::encode_into(
            &mut tail,
            &FrameFields {
                offset,
                timestamp_ms: 1_000,
                kind: 0,
                flags,
                header: b"",
                payload: b"torn",
            },
        )
        .unwrap();
    }
    let torn = tail.len() - 10;
    let mut image = synced.clone();
    image.extend_from_slice(&tail[..torn]);
    std::fs::write(&path, &image).unwrap();
    let log = open(dir, &clock, &options).unwrap();
    assert_eq!(log.recovery_report().truncated_bytes, torn as u64);
    assert_eq!(log.next_offset(), 2);
    let batch = log.read(0, ReadLimit::records(10)).unwrap();
    assert_eq!(batch.len(), 2);
    drop(log);
    assert_eq!(std::fs::read(&path).unwrap(), synced);

    // Inside the synced length: not a torn tail. The open fails and nothing is cut.
    let second = 64 + 32 + 3;
    let mut image = synced.clone();
    image[second + 32] ^= 0x40;
    std::fs::write(&path, &image).unwrap();
    let err = open(dir, &clock, &options).unwrap_err();
    match &err {
        Error::Corruption { offset, kind, .. } => {
            assert_eq!(*offset, second as u64, "{err}");
            assert_eq!(
                *kind,
                CorruptionKind::InSyncedRegion {
                    synced_len: synced.len() as u64
                }
            );
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), image);
}

#[test]
fn never_durability_commits_before_it_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = ManualClock::new(1_000);
    let options = LogOptions {
        durability: Durability::Never,
        ..LogOptions::default()
    };
    let log = open(dir, &clock, &options).unwrap();
    log.append(&[Entry::new(b"x")]).unwrap();
    let h = std::fs::read(dir.join("head")).unwrap();
    assert_eq!((le64(&h, 24), le64(&h, 32)), (64 + 33, 64));
    log.sync().unwrap();
    let h = std::fs::read(dir.join("head")).unwrap();
    assert_eq!((le64(&h, 24), le64(&h, 32)), (64 + 33, 64 + 33));
}

// ---------------------------------------------------------------------------------------------
// Files written by a real queue

#[test]
fn queue_events_and_headers_encode_as_documented() {
    // The variant index first, then the fields; integers below 251 in one byte, larger ones
    // behind a 251 (u16), 252 (u32) or 253 (u64) marker.
    assert_eq!(Event::Deleted { offset: 5 }.encode(), [2, 5]);
    assert_eq!(Event::Purged { below: 300 }.encode(), [4, 0xFB, 0x2C, 0x01]);
    assert_eq!(
        Event::Visibility {
            offset: 1,
            visible_at: 70_000
        }
        .encode(),
        [3, 1, 0xFC, 0x70, 0x11, 0x01, 0x00]
    );
    assert_eq!(Event::MoveDone { offset: 0 }.encode(), [6, 0]);
    assert_eq!(
        Event::MoveStarted {
            offset: 1,
            target: "q".into(),
            target_from: 2,
            receive_count: 3,
            first_receive_ms: 4,
        }
        .encode(),
        [5, 1, 1, b'q', 2, 3, 4]
    );
    // A message header: its fields in the documented order.
    let header = MessageHeader {
        id: "id".into(),
        sent_ms: 1,
        delay_ms: 2,
        group: Some("g".into()),
        dedup: None,
        receive_count: 3,
        first_receive_ms: 4,
        origin: Some(Origin {
            queue: "o".into(),
            incarnation: 5,
            offset: 6,
        }),
        attributes_len: 7,
    };
    assert_eq!(
        header.encode(),
        [
            2, b'i', b'd', 1, 2, 1, 1, b'g', 0, 3, 4, 1, 1, b'o', 5, 6, 7
        ]
    );
    // A payload: the attribute list (absent when empty), then the body.
    let attribute = MessageAttribute {
        name: "n".into(),
        data_type: "Binary".into(),
        value: AttributeValue::Binary(vec![9]),
    };
    let (payload, len) = stored::encode_payload(std::slice::from_ref(&attribute), b"body");
    let mut expected = vec![1, 1, b'n', 6];
    expected.extend_from_slice(b"Binary");
    expected.extend_from_slice(&[1, 1, 9]);
    assert_eq!(len as usize, expected.len());
    expected.extend_from_slice(b"body");
    assert_eq!(payload, expected);
    assert_eq!(stored::encode_payload(&[], b"body"), (b"body".to_vec(), 0));
}

/// `(kind, header, payload)` of every frame of a segment.
fn records(segment: &[u8]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    frames(segment)
        .into_iter()
        .map(|(at, ..)| {
            let h = usize::from(u16::from_le_bytes([segment[at + 24], segment[at + 25]]));
            let p = le32(segment, at + 4) as usize;
            (
                segment[at + 26],
                segment[at + 32..at + 32 + h].to_vec(),
                segment[at + 32 + h..at + 32 + h + p].to_vec(),
            )
        })
        .collect()
}

#[test]
fn a_queue_writes_the_documented_files() {
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    data.create_queue("jobs", &QueueAttributes::defaults(false))
        .unwrap();
    let created_ms = data.queue_info("jobs").unwrap().created_ms;
    let q = data.queue("jobs").unwrap();
    let sent = q
        .send(&SendMessage {
            attributes: vec![MessageAttribute {
                name: "n".into(),
                data_type: "String".into(),
                value: AttributeValue::String("v".into()),
            }],
            ..SendMessage::new("hello")
        })
        .unwrap();
    let got = q.receive(&Receive::default()).unwrap();
    q.delete(&got[0].receipt_handle).unwrap();
    q.compact().unwrap();
    let dir = tmp.path().join("queues/jobs");
    assert_eq!(
        names(&dir),
        ["journal", "messages", "queue.meta", "state.snap"]
    );

    // queue.meta: name first, the incarnation after the attributes.
    let m = std::fs::read(dir.join("queue.meta")).unwrap();
    assert_eq!(&m[0..8], b"SHOALQUE");
    assert_eq!(&m[20..25], b"\x04jobs");

    // The message: kind 1, its header, then attributes and body split by attributes_len.
    let seg = std::fs::read(dir.join("messages/00000000000000000000.log")).unwrap();
    let messages = records(&seg);
    assert_eq!(messages.len(), 1);
    let (kind, header, payload) = &messages[0];
    assert_eq!(*kind, stored::KIND_MESSAGE);
    assert_eq!(header[0], 36, "the id's length, then the id");
    assert_eq!(&header[1..37], sent.message_id.as_bytes());
    let header = MessageHeader::decode(header).unwrap();
    let split = header.attributes_len as usize;
    assert_eq!(&payload[split..], b"hello");
    assert_eq!(payload[0], 1, "one attribute");

    // The journal: the receive (scan, then the receive), then the delete; kind 2, no header.
    let seg = std::fs::read(dir.join("journal/00000000000000000000.log")).unwrap();
    let events = records(&seg);
    let summary: Vec<(u8, usize, u8)> = events
        .iter()
        .map(|(kind, header, payload)| (*kind, header.len(), payload[0]))
        .collect();
    assert_eq!(summary, [(2, 0, 0), (2, 0, 1), (2, 0, 2)]);
    assert_eq!(events[2].2, [2, 0], "Deleted {{ offset: 0 }}");

    // The receipt handle: 25 bytes of URL-safe base64 without padding.
    let handle = &got[0].receipt_handle;
    assert_eq!(handle.len(), 34);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(handle)
        .unwrap();
    assert_eq!(bytes.len(), 25);
    assert_eq!(bytes[0], 1);
    assert_eq!(le64(&bytes, 1), created_ms);
    assert_eq!(le64(&bytes, 9), 0);
    assert_eq!(le32(&bytes, 17), 1);
    assert_eq!(
        le32(&bytes, 21),
        crc32fast::hash(&bytes[..21]) ^ 0xA282_EAD8
    );

    // The snapshot: cursor 1, nothing purged, every journal record applied, nothing tracked.
    let snap = std::fs::read(dir.join("state.snap")).unwrap();
    assert_eq!(&snap[0..8], b"SHOALQSN");
    assert_eq!(&snap[20..], [1, 0, 3, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn a_topic_writes_the_documented_files() {
    use shoal_engine::topic::{
        FilterScope, Protocol, PublishMessage, Subscribe, TopicAttributes, handle::KIND_PUBLISHED,
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    data.create_queue("sub", &QueueAttributes::defaults(false))
        .unwrap();
    data.create_topic("news", &TopicAttributes::defaults(false))
        .unwrap();
    let subscription = data
        .subscribe(
            "news",
            &Subscribe {
                protocol: Protocol::Queue,
                endpoint: "sub".into(),
                raw: true,
                filter_policy: None,
                filter_scope: FilterScope::Attributes,
                dead_letter_queue: None,
            },
        )
        .unwrap();
    let topic = data.topic("news").unwrap();
    topic
        .publish(&PublishMessage {
            subject: Some("s".into()),
            ..PublishMessage::new("hello")
        })
        .unwrap();
    drop(topic);
    let dir = tmp.path().join("topics/news");
    assert_eq!(
        names(&dir),
        ["cursors", "messages", "subscriptions.meta", "topic.meta"]
    );
    let magic = |path: &Path| std::fs::read(path).unwrap()[0..8].to_vec();
    assert_eq!(magic(&dir.join("topic.meta")), b"SHOALTOP");
    assert_eq!(magic(&dir.join("subscriptions.meta")), b"SHOALSUB");
    let cursor = dir.join(format!("cursors/{}.cursor", subscription.id));
    assert_eq!(magic(&cursor), b"SHOALCUR");
    // topic.meta: the name first.
    assert_eq!(
        &std::fs::read(dir.join("topic.meta")).unwrap()[20..25],
        b"\x04news"
    );
    // The published message: kind 1; header = id, subject, group, dedup, attributes_len.
    let seg = std::fs::read(dir.join("messages/00000000000000000000.log")).unwrap();
    let published = records(&seg);
    assert_eq!(published.len(), 1);
    let (kind, header, payload) = &published[0];
    assert_eq!(*kind, KIND_PUBLISHED);
    assert_eq!(header[0], 36, "the id's length, then the id");
    assert_eq!(&header[37..40], [1, 1, b's'], "Some(subject)");
    assert_eq!(
        &header[40..],
        [0, 0, 0],
        "no group, no dedup, attributes_len 0"
    );
    assert_eq!(payload.as_slice(), b"hello");
    // The queue copy names its origin: "topic:news", the topic's incarnation, offset 0.
    let q = data.queue("sub").unwrap();
    let incarnation = data.topic_info("news").unwrap().created_ms;
    let found = q.delivered_since(0, "topic:news", incarnation).unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), [0]);
}
