//! Password digests: SHA-256 of what the client sends, compared in constant time with the
//! configured digest.
//!
//! Must never keep a plain-text password (the compile step hashes it and drops it) nor compare
//! digests with an early exit, which would tell an attacker how many leading bytes are right.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest([u8; 32]);

impl Digest {
    /// The digest of `password`.
    pub(crate) fn of(password: &[u8]) -> Digest {
        Digest(Sha256::digest(password).into())
    }

    /// A digest from 64 hexadecimal digits (either case); `None` for anything else.
    pub(crate) fn from_hex(hex: &str) -> Option<Digest> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Digest(bytes))
    }

    /// Whether the two digests are equal, taking the same time whatever their contents.
    pub(crate) fn matches(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

// By hand: even a digest stays out of logs.
impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(<redacted>)")
    }
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf %s password | sha256sum`.
    const PASSWORD_SHA256: &str =
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn the_digest_is_sha256_and_hex_parses_in_either_case() {
        let digest = Digest::of(b"password");
        assert_eq!(Digest::from_hex(PASSWORD_SHA256), Some(digest));
        let upper = PASSWORD_SHA256.to_ascii_uppercase();
        assert_eq!(Digest::from_hex(&upper), Some(digest));
        assert!(digest.matches(&Digest::of(b"password")));
        assert!(!digest.matches(&Digest::of(b"passwore")));
    }

    #[test]
    fn anything_but_64_hex_digits_is_refused() {
        assert_eq!(Digest::from_hex(""), None);
        assert_eq!(Digest::from_hex(&PASSWORD_SHA256[..62]), None);
        assert_eq!(Digest::from_hex(&format!("{PASSWORD_SHA256}00")), None);
        let mut bad = PASSWORD_SHA256.to_owned();
        bad.replace_range(10..11, "g");
        assert_eq!(Digest::from_hex(&bad), None);
        assert_eq!(format!("{:?}", Digest::of(b"x")), "Digest(<redacted>)");
    }
}
