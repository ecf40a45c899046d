//! Masked CRC32.
//!
//! Stored checksums are `crc32(bytes) ^ CRC_MASK`. The crc32 of an all-zero region is not
//! itself zero, but a stored zero would still match some zero-filled region of the right length;
//! XORing with a constant makes a zero-filled (preallocated, never written) tail fail validation
//! for every length, which `record::tests::zero_filled_tail_never_decodes` checks.

/// Constant XORed into every stored checksum.
pub const CRC_MASK: u32 = 0xA282_EAD8;

/// `crc32(bytes) ^ CRC_MASK`.
pub fn masked(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ CRC_MASK
}

/// Masked CRC32 over two byte ranges, as if they were contiguous.
pub fn masked2(first: &[u8], second: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(first);
    hasher.update(second);
    hasher.finalize() ^ CRC_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_never_match_a_zero_checksum() {
        for len in 0..4096 {
            assert_ne!(masked(&vec![0u8; len]), 0, "len {len}");
        }
    }

    #[test]
    fn masked2_equals_masked_of_concatenation() {
        let a = b"hello ";
        let b = b"world";
        assert_eq!(masked2(a, b), masked(b"hello world"));
    }
}
