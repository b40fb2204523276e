//! CRC-64/Jones exactly as Redis computes it (reflected, polynomial 0xad93d23594c935a9, initial
//! value 0, no final xor): the checksum that ends an RDB file and a DUMP payload.
//!
//! It must never allocate; the lookup table is built at compile time.

/// The Jones polynomial with its bits reversed, because Redis feeds bytes least-significant bit
/// first.
const REFLECTED_POLYNOMIAL: u64 = 0x95ac_9329_ac4b_c9b5;

const TABLE: [u64; 256] = build_table();

const fn build_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ REFLECTED_POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// A running CRC-64 over bytes fed in any number of pieces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc64(u64);

impl Crc64 {
    /// A CRC over no bytes yet.
    pub fn new() -> Self {
        Self(0)
    }

    /// Feeds `bytes` into the CRC.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        for &byte in bytes {
            crc = TABLE[((crc ^ u64::from(byte)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    /// The CRC of every byte fed so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// The CRC-64 of `bytes` in one call.
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut crc = Crc64::new();
    crc.update(bytes);
    crc.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_check_value_redis_tests_itself_with() {
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn pieces_give_the_same_crc_as_one_call() {
        let mut crc = Crc64::new();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.value(), crc64(b"123456789"));
    }
}
