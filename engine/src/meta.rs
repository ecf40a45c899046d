//! Metadata files: small records (a data directory's format, a stream's shard map, ...) kept
//! in their own files and replaced atomically.
//!
//! Every metadata file is a 20-byte frame followed by a bincode (2.0.1, via serde) payload:
//!
//! | Bytes  | Encoding | Field                                          |
//! |--------|----------|------------------------------------------------|
//! | 0..8   | ASCII    | magic, one per kind of file                    |
//! | 8..10  | u16 LE   | format version (1)                             |
//! | 10..12 | zero     | reserved                                       |
//! | 12..16 | u32 LE   | payload length (at most [`MAX_META_LEN`])      |
//! | 16..20 | u32 LE   | masked CRC32 of bytes 0..16 and the payload     |
//! | 20..   | bincode  | payload                                        |
//!
//! The payload is decoded only after its length is bounded and its checksum verified, and
//! bincode itself runs with the same size limit, so no byte sequence makes decoding allocate
//! without bound or panic. Replacing a file: write `<name>.tmp`, fsync it, rename it over the
//! old one, fsync the directory. Serialization lives only here, so the codec can be swapped.

use std::path::{Path, PathBuf};

use byteorder::{ByteOrder, LittleEndian};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{FORMAT_VERSION, crc};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{OpenMode, Storage};

/// Size of the frame before the payload.
pub const META_HEADER_LEN: usize = 20;
/// Largest payload a metadata file may hold (64 MiB: a queue's state snapshot holds one small
/// entry per message in flight, delayed or held back).
pub const MAX_META_LEN: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_limit::<MAX_META_LEN>()
}

/// Encodes `value` in a metadata frame with `magic`.
pub fn encode<T: Serialize>(magic: [u8; 8], value: &T) -> Result<Vec<u8>> {
    let payload = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| Error::InvalidArgument(format!("metadata does not encode: {e}")))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len as usize <= MAX_META_LEN)
        .ok_or_else(|| Error::InvalidArgument("metadata larger than 64 MiB".into()))?;
    let mut out = Vec::with_capacity(META_HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    let mut fixed = [0u8; META_HEADER_LEN - 8];
    LittleEndian::write_u16(&mut fixed[0..2], FORMAT_VERSION);
    LittleEndian::write_u32(&mut fixed[4..8], len);
    out.extend_from_slice(&fixed[..8]);
    let sum = crc::masked2(&out, &payload);
    LittleEndian::write_u32(&mut fixed[8..12], sum);
    out.extend_from_slice(&fixed[8..]);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a metadata frame with `magic`; `file` names it in errors.
pub fn decode<T: DeserializeOwned>(magic: [u8; 8], bytes: &[u8], file: &Path) -> Result<T> {
    let bad = |why: &str| Error::corruption(file, 0, CorruptionKind::Metadata(why.into()));
    let Some(header) = bytes.get(..META_HEADER_LEN) else {
        return Err(bad("shorter than its header"));
    };
    if header[..8] != magic {
        return Err(Error::corruption(file, 0, CorruptionKind::BadMagic));
    }
    // The checksum before the version: every format version keeps this frame, so a damaged
    // version field reads as damage and an intact newer file as newer.
    let len = LittleEndian::read_u32(&header[12..16]) as usize;
    if len > MAX_META_LEN {
        return Err(bad("payload length over the limit"));
    }
    let Some(payload) = bytes.get(META_HEADER_LEN..META_HEADER_LEN + len) else {
        return Err(bad("shorter than its payload length"));
    };
    if LittleEndian::read_u32(&header[16..20]) != crc::masked2(&header[..16], payload) {
        return Err(Error::corruption(
            file,
            16,
            CorruptionKind::Metadata("checksum mismatch".into()),
        ));
    }
    let version = LittleEndian::read_u16(&header[8..10]);
    if version > FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            file: file.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(bad("version 0"));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| bad(&format!("payload does not decode: {e}")))?;
    if used != payload.len() {
        return Err(bad("trailing bytes after the payload"));
    }
    Ok(value)
}

/// Reads and decodes a metadata file. `Ok(None)` when it does not exist.
pub fn read<T: DeserializeOwned>(
    storage: &dyn Storage,
    path: &Path,
    magic: [u8; 8],
) -> Result<Option<T>> {
    let file = match storage.open(path, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len > (META_HEADER_LEN + MAX_META_LEN) as u64 {
        return Err(Error::corruption(
            path,
            0,
            CorruptionKind::BadLength {
                length: len,
                max: (META_HEADER_LEN + MAX_META_LEN) as u64,
            },
        ));
    }
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", path, e))?;
    decode(magic, &bytes, path).map(Some)
}

/// Atomically replaces (or creates) a metadata file: temp file, fsync, rename, directory fsync.
pub fn write<T: Serialize>(
    storage: &dyn Storage,
    path: &Path,
    magic: [u8; 8],
    value: &T,
) -> Result<()> {
    let bytes = encode(magic, value)?;
    write_bytes(storage, path, &bytes)
}

/// The temporary name a metadata file is written under before its rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn write_bytes(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path(path);
    let file = storage
        .open(&temp, OpenMode::CreateOrOpen)
        .map_err(|e| Error::io("create", &temp, e))?;
    let written = file
        .set_len(0)
        .and_then(|()| file.write_all_at(bytes, 0))
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = storage.remove_file(&temp);
        return Err(Error::io("write", &temp, e));
    }
    storage
        .rename(&temp, path)
        .map_err(|e| Error::io("rename", &temp, e))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CrashPlan, SimStorage};

    const MAGIC: [u8; 8] = *b"SHOALTST";

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        values: Vec<u128>,
    }

    fn sample() -> Sample {
        Sample {
            name: "s".into(),
            values: vec![1, u128::MAX],
        }
    }

    #[test]
    fn round_trip_and_every_bit_flip_detected() {
        let bytes = encode(MAGIC, &sample()).unwrap();
        let p = Path::new("/m");
        assert_eq!(decode::<Sample>(MAGIC, &bytes, p).unwrap(), sample());
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode::<Sample>(MAGIC, &bad, p).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(decode::<Sample>(MAGIC, &bytes[..cut], p).is_err());
        }
    }

    #[test]
    fn newer_version_is_refused_as_such() {
        let mut bytes = encode(MAGIC, &sample()).unwrap();
        bytes[8] = 9;
        assert!(
            decode::<Sample>(MAGIC, &bytes, Path::new("/m"))
                .unwrap_err()
                .is_corruption(),
            "a changed version without its checksum redone is damage"
        );
        let sum = crc::masked2(&bytes[..16], &bytes[META_HEADER_LEN..]);
        LittleEndian::write_u32(&mut bytes[16..20], sum);
        assert!(matches!(
            decode::<Sample>(MAGIC, &bytes, Path::new("/m")),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn replacement_is_atomic_across_a_power_loss() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let path = dir.join("meta");
        write(&sim, &path, MAGIC, &sample()).unwrap();
        let newer = Sample {
            name: "newer".into(),
            values: vec![],
        };
        // A crash while the temp file is being written leaves the old version.
        sim.tear_write_after(0, 5);
        assert!(write(&sim, &path, MAGIC, &newer).is_err());
        let after = sim.crash(CrashPlan::PowerLoss);
        assert_eq!(
            read::<Sample>(&after, &path, MAGIC).unwrap(),
            Some(sample())
        );
        write(&sim, &path, MAGIC, &newer).unwrap();
        let after = sim.crash(CrashPlan::PowerLoss);
        assert_eq!(read::<Sample>(&after, &path, MAGIC).unwrap(), Some(newer));
        assert_eq!(
            read::<Sample>(&after, &dir.join("none"), MAGIC).unwrap(),
            None
        );
    }
}
