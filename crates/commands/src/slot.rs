//! Redis Cluster key hashing: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.
//!
//! Must never allocate or branch on anything but the key bytes: it runs for every key of every
//! request. The CRC table is computed at compile time.

/// The number of hash slots of a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// CRC16/XMODEM lookup table (polynomial 0x1021), built at compile time.
static CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// What a byte `a` followed by a zero byte does to a zero register: `CRC16_TABLE` one byte
/// further on. With it two bytes take two independent lookups (see `crc16`).
static CRC16_TABLE_SHIFTED: [u16; 256] = crc16_table_shifted();

const fn crc16_table_shifted() -> [u16; 256] {
    let table = crc16_table();
    let mut shifted = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let once = table[byte];
        shifted[byte] = (once << 8) ^ table[(once >> 8) as usize];
        byte += 1;
    }
    shifted
}

/// CRC16/XMODEM of `data` (initial value 0, no reflection), the checksum Redis Cluster uses.
///
/// Two bytes per step: the register is 16 bits wide, so after two bytes it depends only on
/// the register xor the two bytes, and by linearity that splits into a lookup for each half.
/// Half the steps of the byte-wise loop and no chain between the two lookups (the proxy
/// hashes every key of every request).
pub fn crc16(data: &[u8]) -> u16 {
    let mut pairs = data.chunks_exact(2);
    let mut crc = 0u16;
    for pair in pairs.by_ref() {
        let v = crc ^ u16::from_be_bytes([pair[0], pair[1]]);
        crc = CRC16_TABLE_SHIFTED[usize::from(v >> 8)] ^ CRC16_TABLE[usize::from(v & 0xff)];
    }
    if let [last] = pairs.remainder() {
        crc = (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ last)];
    }
    crc
}

/// The part of `key` that is hashed: the content between the first `{` and the first `}` after
/// it, when that content is non-empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// The hash slot of `key` (0..16384), honouring hash tags: `{user1}.name` and `{user1}.mail`
/// share a slot.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOT_COUNT - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_the_oracle_values_of_a_real_server() {
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(key_slot(b"{a"), 10276);
        assert_eq!(key_slot(b"}{b}"), 3300);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags_take_the_first_non_empty_braces_only() {
        assert_eq!(hash_tag(b"{user1}.name"), b"user1");
        assert_eq!(key_slot(b"{user1}.name"), key_slot(b"{user1}.mail"));
        assert_eq!(key_slot(b"{user1}.name"), key_slot(b"user1"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"{a"), b"{a");
        assert_eq!(hash_tag(b"}{b}"), b"b");
        assert_eq!(hash_tag(b"a{b}c{d}"), b"b");
    }

    /// Bit-by-bit CRC and a string-search hash tag: slow, obviously right.
    fn reference_slot(key: &[u8]) -> u16 {
        let mut hashed = key;
        if let Some(open) = key.iter().position(|&b| b == b'{')
            && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
            && len != 0
        {
            hashed = &key[open + 1..open + 1 + len];
        }
        let mut crc: u16 = 0;
        for &byte in hashed {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    proptest! {
        #[test]
        fn key_slot_matches_the_reference(key in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), any::<u8>()], 0..40)) {
            prop_assert_eq!(key_slot(&key), reference_slot(&key));
        }
    }
}
