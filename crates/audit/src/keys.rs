//! How a key is written in an audit line: as itself, as hex when it is not plain text, or as a
//! salted hash when `hash_keys` is on. With hashing on, no byte of a key is ever written.
//!
//! The forms cannot be confused: a value starting with `hex:` is always hex and one starting
//! with `sha256:` is always a hash, because a key that merely looks like either is written as
//! hex too.
//!
//! A hash is `sha256:` and the first 16 hex digits (64 bits) of SHA-256(salt ‖ key), with the
//! salt's UTF-8 bytes directly followed by the key's bytes. An operator holding the salt finds
//! the records of a key with
//! `printf '%s%s' "$SALT" "$KEY" | sha256sum | cut -c1-16`.
//! This hides key names from readers of the log who lack the salt; it does not protect short,
//! guessable keys from someone who has it.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

const HEX_PREFIX: &str = "hex:";
const HASH_PREFIX: &str = "sha256:";
/// 8 bytes = 16 hex digits: enough to tell keys apart in a log, short enough to read.
const HASH_BYTES: usize = 8;

/// Computes the hashed form of keys with one salt.
#[derive(Clone)]
pub(crate) struct KeyHasher {
    salt: Arc<[u8]>,
}

impl KeyHasher {
    /// A hasher with the configured salt, or with the process's random salt when there is
    /// none. The random salt is drawn once per process, not per auditor, so a reconfigured or
    /// restarted auditor keeps hashing a key the same way.
    pub(crate) fn new(salt: Option<&str>) -> Self {
        static PROCESS_SALT: OnceLock<[u8; 32]> = OnceLock::new();
        let salt: Arc<[u8]> = match salt {
            Some(salt) => salt.as_bytes().into(),
            None => PROCESS_SALT.get_or_init(rand::random).as_slice().into(),
        };
        Self { salt }
    }

    /// `sha256:` and 16 hex digits.
    pub(crate) fn hash(&self, key: &[u8]) -> String {
        let digest = Sha256::new()
            .chain_update(&self.salt)
            .chain_update(key)
            .finalize();
        let mut text = String::with_capacity(HASH_PREFIX.len() + 2 * HASH_BYTES);
        text.push_str(HASH_PREFIX);
        push_hex(&mut text, &digest[..HASH_BYTES]);
        text
    }
}

/// The salt is a secret: `Debug` shows only that there is one.
impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher { salt: <redacted> }")
    }
}

/// The unhashed form: the key itself when it is UTF-8 and does not start like one of the
/// tagged forms, else `hex:` and its bytes in lower-case hex.
pub(crate) fn plain(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with(HEX_PREFIX) && !text.starts_with(HASH_PREFIX) => {
            text.to_owned()
        }
        _ => {
            let mut text = String::with_capacity(HEX_PREFIX.len() + 2 * key.len());
            text.push_str(HEX_PREFIX);
            push_hex(&mut text, key);
            text
        }
    }
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_the_documented_prefix_of_salted_sha256() {
        // printf '%s%s' pepper user:1 | sha256sum
        let hasher = KeyHasher::new(Some("pepper"));
        let expected = {
            let digest = Sha256::digest(b"pepperuser:1");
            let mut text = String::from("sha256:");
            push_hex(&mut text, &digest[..8]);
            text
        };
        assert_eq!(hasher.hash(b"user:1"), expected);
        assert_eq!(expected.len(), "sha256:".len() + 16);
    }

    #[test]
    fn hashes_are_stable_within_a_process_and_depend_on_the_salt() {
        let a = KeyHasher::new(None).hash(b"orders:42");
        let b = KeyHasher::new(None).hash(b"orders:42");
        assert_eq!(a, b, "the random salt is per process, not per hasher");
        assert_ne!(a, KeyHasher::new(Some("x")).hash(b"orders:42"));
        assert_ne!(a, KeyHasher::new(None).hash(b"orders:43"));
    }

    #[test]
    fn plain_keys_are_written_as_is_unless_they_could_be_mistaken() {
        assert_eq!(plain(b"orders:42"), "orders:42");
        assert_eq!(plain("clé".as_bytes()), "clé");
        assert_eq!(plain(b"\xff\x00a"), "hex:ff0061");
        assert_eq!(plain(b"hex:41"), "hex:6865783a3431");
        assert_eq!(plain(b"sha256:00"), "hex:7368613235363a3030");
        assert_eq!(plain(b""), "");
    }

    #[test]
    fn debug_never_shows_the_salt() {
        let hasher = KeyHasher::new(Some("s3cret"));
        assert!(!format!("{hasher:?}").contains("s3cret"));
    }
}
