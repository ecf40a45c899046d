//! Pure byte-level encoding and decoding of every on-disk structure. No I/O happens here, so the
//! fuzz targets and Miri can drive these functions directly.
//!
//! Every decoder is total: any byte sequence yields a value or a typed error, never a panic, and
//! no length read from disk is trusted before it is bounded and checksummed.
//! The layouts are documented byte by byte in `engine/FORMAT.md`; `tests/format_doc.rs` holds
//! the constants below to that document.

pub mod crc;
pub mod file_header;
pub mod head;
pub mod index;
pub mod record;

/// The on-disk format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
