//! Segment and index files: names, creation, header checks, and the directory listing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::FORMAT_VERSION;
use crate::codec::file_header::{FILE_HEADER_LEN, FileHeader, FileKind, HeaderError};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};

/// Extension of segment files.
pub const SEGMENT_EXT: &str = "log";
/// Extension of index files.
pub const INDEX_EXT: &str = "index";
/// Suffix of files being written by compaction; removed at open if a crash left them.
pub const COMPACT_SUFFIX: &str = "compact";
/// The writer's lock file.
pub const LOCK_FILE: &str = "LOCK";
/// The head (watermark) file.
pub const HEAD_FILE: &str = "head";
/// Present once the log is sealed: it accepts no more appends. Holds the next offset as
/// decimal text.
pub const SEALED_FILE: &str = "SEALED";
/// Width of the zero-padded base offset in file names: a listing sorts in log order.
pub const NAME_DIGITS: usize = 20;

/// `{base:020}.log`.
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:0NAME_DIGITS$}.{SEGMENT_EXT}"))
}

/// `{base:020}.index`.
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:0NAME_DIGITS$}.{INDEX_EXT}"))
}

/// `path` with `.compact` appended.
pub fn compact_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(COMPACT_SUFFIX);
    PathBuf::from(name)
}

/// What a file name in a log directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFileName {
    /// A segment with this base offset.
    Segment(u64),
    /// An index with this base offset.
    Index(u64),
    /// A leftover of an interrupted compaction.
    CompactTemp,
    /// Something else (the lock, the head, foreign files).
    Other,
}

/// Parses a file name in a log directory; the inverse of [`segment_path`] and [`index_path`].
pub fn parse_file_name(name: &OsStr) -> LogFileName {
    let Some(name) = name.to_str() else {
        return LogFileName::Other;
    };
    // Only what `compact_path` makes of a segment or index name: recovery removes these, so a
    // foreign file that merely ends in the same letters must not match.
    if let Some(stem) = name
        .strip_suffix(COMPACT_SUFFIX)
        .and_then(|n| n.strip_suffix('.'))
    {
        return match parse_file_name(OsStr::new(stem)) {
            LogFileName::Segment(_) | LogFileName::Index(_) => LogFileName::CompactTemp,
            _ => LogFileName::Other,
        };
    }
    let Some((stem, ext)) = name.split_once('.') else {
        return LogFileName::Other;
    };
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return LogFileName::Other;
    }
    let Ok(base) = stem.parse::<u64>() else {
        return LogFileName::Other;
    };
    match ext {
        SEGMENT_EXT => LogFileName::Segment(base),
        INDEX_EXT => LogFileName::Index(base),
        _ => LogFileName::Other,
    }
}

/// The files found in a log directory.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Segment base offsets, ascending.
    pub segments: Vec<u64>,
    /// Index base offsets, ascending.
    pub indexes: Vec<u64>,
    /// Compaction leftovers.
    pub temps: Vec<PathBuf>,
}

/// Lists a log directory.
pub fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| Error::io("list", dir, e))?;
    let mut listing = Listing::default();
    for name in names {
        match parse_file_name(&name) {
            LogFileName::Segment(base) => listing.segments.push(base),
            LogFileName::Index(base) => listing.indexes.push(base),
            LogFileName::CompactTemp => listing.temps.push(dir.join(name)),
            LogFileName::Other => {}
        }
    }
    listing.segments.sort_unstable();
    listing.indexes.sort_unstable();
    Ok(listing)
}

/// Maps a header decode failure to the engine error for `path`.
pub fn header_error(path: &Path, err: HeaderError) -> Error {
    match err {
        HeaderError::Version(found) if found > FORMAT_VERSION => Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        },
        HeaderError::Short(len) => Error::corruption(
            path,
            0,
            CorruptionKind::Truncated {
                needed: FILE_HEADER_LEN as u64,
                available: len as u64,
            },
        ),
        HeaderError::BadMagic => Error::corruption(path, 0, CorruptionKind::BadMagic),
        HeaderError::Version(_) | HeaderError::Checksum => {
            Error::corruption(path, 0, CorruptionKind::HeaderChecksum)
        }
    }
}

/// Reads and checks the header of a segment or index file.
pub fn read_header(
    file: &dyn StorageFile,
    path: &Path,
    kind: FileKind,
    base: u64,
) -> Result<FileHeader> {
    let mut buf = [0u8; FILE_HEADER_LEN];
    file.read_exact_at(&mut buf, 0).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            header_error(path, HeaderError::Short(0))
        } else {
            Error::io("read", path, e)
        }
    })?;
    let header = FileHeader::decode(kind, &buf).map_err(|e| header_error(path, e))?;
    if header.base_offset != base {
        return Err(Error::corruption(
            path,
            0,
            CorruptionKind::BaseMismatch {
                expected: base,
                found: header.base_offset,
            },
        ));
    }
    Ok(header)
}

/// Opens a file and reads its length, with both failures named after `path`.
pub fn open_sized(
    storage: &dyn Storage,
    path: &Path,
    mode: OpenMode,
) -> Result<(Arc<dyn StorageFile>, u64)> {
    let file = storage
        .open(path, mode)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    Ok((file, len))
}

/// Reads a whole file (a segment, an index, a seal) into memory.
pub fn read_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_sized(storage, path, OpenMode::Read)?;
    let len = usize::try_from(len)
        .map_err(|_| Error::InvalidArgument(format!("{} is too large to read", path.display())))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}

/// Creates (or resets) a file holding just a header, and fsyncs it. The caller fsyncs the
/// directory.
pub fn create_with_header(
    storage: &dyn Storage,
    path: &Path,
    header: &FileHeader,
) -> Result<Arc<dyn StorageFile>> {
    let file = storage
        .open(path, OpenMode::CreateOrOpen)
        .map_err(|e| Error::io("create", path, e))?;
    file.set_len(0)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write", path, e))?;
    file.sync_data().map_err(|e| Error::io("fsync", path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let dir = Path::new("/x");
        let p = segment_path(dir, 42);
        assert_eq!(p, Path::new("/x/00000000000000000042.log"));
        let name = p.file_name().unwrap();
        assert_eq!(parse_file_name(name), LogFileName::Segment(42));
        let i = index_path(dir, u64::MAX);
        assert_eq!(
            parse_file_name(i.file_name().unwrap()),
            LogFileName::Index(u64::MAX)
        );
        assert!(segment_path(dir, 9) < segment_path(dir, 10));
        let c = compact_path(&p);
        assert_eq!(
            parse_file_name(c.file_name().unwrap()),
            LogFileName::CompactTemp
        );
        assert_eq!(
            parse_file_name(compact_path(&i).file_name().unwrap()),
            LogFileName::CompactTemp
        );
        for other in [
            "LOCK",
            "head",
            "recompact",
            "notes.compact",
            "00000000000000000042.compact",
            "00000000000000000042.logcompact",
            "00000000000000000042.log.compact.compact",
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.txt",
        ] {
            assert_eq!(
                parse_file_name(OsStr::new(other)),
                LogFileName::Other,
                "{other}"
            );
        }
    }
}
