//! Hash keys, shard ids and sequence numbers.
//!
//! A record's partition key is hashed with MD5 to a 128-bit integer (the digest read big-endian),
//! exactly as Kinesis does; each open shard owns a contiguous range of that space.
//!
//! A sequence number is the decimal form of `2^126 + shard_index * 2^64 + offset`: strictly
//! increasing within a shard (offsets are), unique within a stream (shard indexes are), of
//! constant length (38 or 39 digits, no leading zero, as Kinesis's pattern requires), and turned
//! back into a shard and a log offset with one parse.

use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// The hash key a partition key maps to.
#[expect(
    clippy::big_endian_bytes,
    reason = "Kinesis defines the hash key as the MD5 digest read as a big-endian integer"
)]
pub fn hash_partition_key(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// Splits the hash key space into `n` contiguous ranges of equal size (the last ones one key
/// larger where 2^128 does not divide evenly), as `(start, end)` inclusive.
pub fn uniform_ranges(n: u32) -> Vec<(u128, u128)> {
    if n <= 1 {
        return vec![(0, u128::MAX)];
    }
    let n = u128::from(n);
    // 2^128 = q * n + r, computed without 2^128 itself (q + 1 cannot overflow for n >= 2).
    let (mut q, mut r) = (u128::MAX / n, u128::MAX % n + 1);
    if r == n {
        q += 1;
        r = 0;
    }
    let start = |i: u128| i * q + i.saturating_sub(n - r).min(r);
    (0..n)
        .map(|i| {
            let end = if i + 1 == n {
                u128::MAX
            } else {
                start(i + 1) - 1
            };
            (start(i), end)
        })
        .collect()
}

/// `shardId-000000000042`.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// The index in a shard id (`shardId-000000000042`, or a bare number).
pub fn parse_shard_id(id: &str) -> Result<u32> {
    let digits = id.strip_prefix("shardId-").unwrap_or(id);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidArgument(format!(
            "invalid shard id {id:?} (expected shardId-NNNNNNNNNNNN)"
        )));
    }
    digits
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("shard id {id:?} is out of range")))
}

const SEQUENCE_BASE: u128 = 1 << 126;

/// A decoded sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SequenceNumber {
    /// The shard's index.
    pub shard: u32,
    /// The record's offset in the shard's log.
    pub offset: u64,
}

impl SequenceNumber {
    /// The number itself.
    pub fn value(&self) -> u128 {
        SEQUENCE_BASE + (u128::from(self.shard) << 64) + u128::from(self.offset)
    }

    /// The decimal string form.
    pub fn encode(&self) -> String {
        self.value().to_string()
    }

    /// Parses the decimal string form.
    pub fn parse(text: &str) -> Result<SequenceNumber> {
        let invalid = || Error::InvalidArgument(format!("invalid sequence number {text:?}"));
        if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let value: u128 = text.parse().map_err(|_| invalid())?;
        let rest = value.checked_sub(SEQUENCE_BASE).ok_or_else(invalid)?;
        let shard = u32::try_from(rest >> 64).map_err(|_| invalid())?;
        let offset = u64::try_from(rest & u128::from(u64::MAX)).map_err(|_| invalid())?;
        Ok(SequenceNumber { shard, offset })
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// Parses a decimal hash key (`--explicit-hash-key`).
pub fn parse_hash_key(text: &str) -> Result<u128> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidArgument(format!(
            "invalid hash key {text:?}: expected a decimal integer from 0 to 2^128-1"
        )));
    }
    text.parse()
        .map_err(|_| Error::InvalidArgument(format!("hash key {text:?} is larger than 2^128-1")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hash_matches_kinesis() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            hash_partition_key(""),
            0xd41d8cd98f00b204e9800998ecf8427e_u128
        );
        assert_eq!(
            hash_partition_key("a"),
            0x0cc175b9c0f1b6a831c399e269772661_u128
        );
    }

    #[test]
    fn uniform_ranges_cover_the_space_without_gaps() {
        for n in [1u32, 2, 3, 4, 7, 8, 10, 500] {
            let ranges = uniform_ranges(n);
            assert_eq!(ranges.len(), n as usize);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges.last().unwrap().1, u128::MAX);
            for w in ranges.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "n={n}");
            }
            let sizes: Vec<u128> = ranges.iter().map(|(s, e)| e - s).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "n={n}");
        }
        // As Kinesis has it for two shards.
        assert_eq!(uniform_ranges(2)[1].0, 1 << 127);
    }

    #[test]
    fn sequence_numbers_round_trip_and_order() {
        let a = SequenceNumber {
            shard: 0,
            offset: 0,
        };
        let b = SequenceNumber {
            shard: 0,
            offset: 1,
        };
        let c = SequenceNumber {
            shard: 3,
            offset: u64::MAX,
        };
        for s in [a, b, c] {
            assert_eq!(SequenceNumber::parse(&s.encode()).unwrap(), s);
        }
        assert!(a.encode() < b.encode());
        assert_eq!(a.encode().len(), b.encode().len());
        for bad in [
            "",
            "0",
            "012",
            "12a",
            "1",
            &u128::MAX.to_string(),
            "999999999999999999999999999999999999999999",
        ] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shard_ids() {
        assert_eq!(shard_id(42), "shardId-000000000042");
        assert_eq!(parse_shard_id("shardId-000000000042").unwrap(), 42);
        assert_eq!(parse_shard_id("7").unwrap(), 7);
        for bad in [
            "",
            "shardId-",
            "shardId-x",
            "shard-1",
            "shardId-0000000000001",
        ] {
            assert!(parse_shard_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_keys() {
        assert_eq!(parse_hash_key("0").unwrap(), 0);
        assert_eq!(parse_hash_key(&u128::MAX.to_string()).unwrap(), u128::MAX);
        assert!(parse_hash_key("340282366920938463463374607431768211456").is_err());
        assert!(parse_hash_key("-1").is_err());
        assert!(parse_hash_key("").is_err());
    }
}
