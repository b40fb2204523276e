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

/// `CRC16_TABLE` one, two and three bytes further on: what a byte followed by that many zero
/// bytes does to a zero register. With them four bytes take four independent lookups (see
/// `crc16`).
static CRC16_TABLES_AHEAD: [[u16; 256]; 3] = crc16_tables_ahead();

const fn crc16_tables_ahead() -> [[u16; 256]; 3] {
    let table = crc16_table();
    let mut ahead = [[0u16; 256]; 3];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = table[byte];
        let mut k = 0;
        while k < 3 {
            // One more zero byte through the register.
            crc = (crc << 8) ^ table[(crc >> 8) as usize];
            ahead[k][byte] = crc;
            k += 1;
        }
        byte += 1;
    }
    ahead
}

/// CRC16/XMODEM of `data` (initial value 0, no reflection), the checksum Redis Cluster uses.
///
/// Four bytes per step: the register is 16 bits wide, so after four bytes it depends only on
/// those bytes with the register xored into the first two, and by linearity that splits into
/// one lookup per byte, none waiting for another. A quarter of the steps of the byte-wise loop
/// (the proxy hashes every key of every request; keys are mostly 10 to 40 bytes).
pub fn crc16(data: &[u8]) -> u16 {
    let [one, two, three] = &CRC16_TABLES_AHEAD;
    let mut quads = data.chunks_exact(4);
    let mut crc = 0u16;
    for quad in quads.by_ref() {
        let v = u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]) ^ (u32::from(crc) << 16);
        let [a, b, c, d] = v.to_be_bytes();
        crc = three[usize::from(a)]
            ^ two[usize::from(b)]
            ^ one[usize::from(c)]
            ^ CRC16_TABLE[usize::from(d)];
    }
    for &byte in quads.remainder() {
        crc = (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)];
    }
    crc
}

/// The part of `key` that is hashed: the content between the first `{` and the first `}` after
/// it, when that content is non-empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find_byte(key, b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = find_byte(rest, b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// The position of the first `needle` in `haystack`, eight bytes at a time: most keys have no
/// `{`, so the whole key is searched, and a byte loop cost four instructions a byte.
fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    let len = haystack.len();
    if len < 8 {
        return haystack.iter().position(|&b| b == needle);
    }
    let mut at = 0;
    while at + 8 <= len {
        if let Some(i) = first_in_word(&haystack[at..at + 8], needle, 0) {
            return Some(at + i);
        }
        at += 8;
    }
    if at == len {
        return None;
    }
    // The last one to seven bytes: the last eight of the key, skipping those already searched.
    let tail = len - 8;
    first_in_word(&haystack[tail..], needle, at - tail).map(|i| tail + i)
}

/// The first of the eight bytes of `word` from `skip` on that equals `needle`.
fn first_in_word(word: &[u8], needle: u8, skip: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(word);
    let x = u64::from_le_bytes(bytes) ^ (ONES * u64::from(needle));
    // The lowest set high bit marks the first zero byte of x exactly (a borrow can only mark
    // bytes above a real zero). Bytes below `skip` are left out.
    let zero = x.wrapping_sub(ONES) & !x & HIGHS & (u64::MAX << (8 * skip));
    (zero != 0).then(|| (zero.trailing_zeros() / 8) as usize)
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
        reference_slot_of_bytes(hashed)
    }

    /// Bit-by-bit CRC of all of `hashed`, modulo the slot count.
    fn reference_slot_of_bytes(hashed: &[u8]) -> u16 {
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
        fn find_byte_finds_the_first_occurrence(
            hay in proptest::collection::vec(prop_oneof![Just(b'{'), Just(0u8), Just(0x80u8),
                any::<u8>()], 0..40),
            needle in prop_oneof![Just(b'{'), Just(b'}'), any::<u8>()]) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
        }

        #[test]
        fn crc16_matches_the_bitwise_reference(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(crc16(&data) % 16384, reference_slot_of_bytes(&data));
        }

        #[test]
        fn key_slot_matches_the_reference(key in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), any::<u8>()], 0..40)) {
            prop_assert_eq!(key_slot(&key), reference_slot(&key));
        }
    }
}
