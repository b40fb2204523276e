//! Inputs the reader must refuse, each with the right typed error: a real RDB with a wrong
//! checksum or cut anywhere, module data (crafted bytes: no module is installed here), unknown
//! type bytes and unsupported versions.

#![allow(clippy::unwrap_used)]

mod common;

use cinnabar_replication::{Checksum, RdbError, RdbReader, ReaderOptions, crc64};
use common::{connect, save, server};

fn read(bytes: &[u8]) -> Result<cinnabar_replication::ReadSummary, RdbError> {
    RdbReader::new(bytes, ReaderOptions::default()).read_all(&mut |_| Ok(()))
}

/// A small real RDB with a few types, LZF strings and a stream.
fn real_rdb() -> Vec<u8> {
    let server = server();
    let mut conn = connect(&server);
    for (i, value) in ["plain", "42", &"lzf lzf lzf ".repeat(50)]
        .iter()
        .enumerate()
    {
        redis::cmd("SET")
            .arg(format!("s{i}"))
            .arg(*value)
            .exec(&mut conn)
            .unwrap();
    }
    redis::cmd("RPUSH")
        .arg("l")
        .arg(&["a", "b", "7"])
        .exec(&mut conn)
        .unwrap();
    redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("XADD")
        .arg("x")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("x")
        .arg("g")
        .arg("0")
        .exec(&mut conn)
        .unwrap();
    std::fs::read(save(&mut conn)).unwrap()
}

#[test]
fn a_wrong_checksum_is_reported_with_both_values() {
    let mut rdb = real_rdb();
    let good = read(&rdb).unwrap();
    let Checksum::Verified(computed) = good.checksum else {
        panic!("Redis writes a checksum by default");
    };
    let last = rdb.len() - 1;
    rdb[last] ^= 0x01;
    match read(&rdb) {
        Err(RdbError::BadChecksum {
            expected,
            computed: c,
        }) => {
            assert_eq!(c, computed);
            assert_eq!(expected, computed ^ (1 << 56));
        }
        other => panic!("expected a bad checksum, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_inside_a_value_is_caught_by_the_checksum_or_as_corruption() {
    let rdb = real_rdb();
    // The body of the LZF-compressed string: corrupting it must never pass unnoticed.
    let at = rdb
        .windows(3)
        .position(|w| w == b"lzf")
        .unwrap_or(rdb.len() / 2);
    for offset in [at, rdb.len() / 2, rdb.len() - 12] {
        let mut bad = rdb.clone();
        bad[offset] ^= 0x20;
        assert!(read(&bad).is_err(), "flip at {offset} went unnoticed");
    }
}

#[test]
fn an_rdb_cut_anywhere_is_truncated_at_exactly_the_cut() {
    let rdb = real_rdb();
    for cut in 9..rdb.len() {
        match read(&rdb[..cut]) {
            Err(RdbError::Truncated { offset }) => assert_eq!(offset, cut as u64),
            other => panic!("cut at {cut} of {}: {other:?}", rdb.len()),
        }
    }
    for cut in 0..9 {
        assert!(
            matches!(read(&rdb[..cut]), Err(RdbError::BadMagic)),
            "cut at {cut}"
        );
    }
}

/// A module type id: nine name characters of 6 bits each, then a 10-bit encoding version.
fn module_id(name: &str, encoding_version: u64) -> u64 {
    const CHARSET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let id = name
        .chars()
        .fold(0u64, |id, c| (id << 6) | CHARSET.find(c).unwrap() as u64);
    (id << 10) | encoding_version
}

/// The RDB header and one key of `type_byte` named `k`, then a 64-bit length (`0x81` + 8 bytes
/// big-endian) holding `id`.
fn module_value(type_byte: u8, id: u64) -> Vec<u8> {
    let mut rdb = b"REDIS0010".to_vec();
    rdb.extend_from_slice(&[type_byte, 0x01, b'k', 0x81]);
    rdb.extend_from_slice(&id.to_be_bytes());
    rdb
}

#[test]
fn a_module_value_is_refused_naming_the_module_type() {
    let id = module_id("ReJSON-RL", 3);
    for type_byte in [6, 7] {
        match read(&module_value(type_byte, id)) {
            Err(RdbError::ModuleType {
                name,
                encoding_version,
                id: got,
                offset,
            }) => {
                assert_eq!(name, "ReJSON-RL");
                assert_eq!(encoding_version, 3);
                assert_eq!(got, id);
                assert_eq!(offset, 12, "the module id follows the key");
            }
            other => panic!("type {type_byte}: {other:?}"),
        }
    }
    let message = read(&module_value(7, id)).unwrap_err().to_string();
    assert!(message.contains("ReJSON-RL"), "{message}");
}

#[test]
fn module_auxiliary_data_is_refused_naming_the_module_type() {
    let mut rdb = b"REDIS0010".to_vec();
    rdb.extend_from_slice(&[0xf7, 0x81]);
    rdb.extend_from_slice(&module_id("graphdata", 1).to_be_bytes());
    match read(&rdb) {
        Err(RdbError::ModuleType { name, offset, .. }) => {
            assert_eq!(name, "graphdata");
            assert_eq!(offset, 9);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_type_byte_is_named_with_its_offset() {
    let mut rdb = b"REDIS0011".to_vec();
    rdb.extend_from_slice(&[0xfe, 0x00, 0x42]);
    match read(&rdb) {
        Err(RdbError::UnknownType { byte, offset }) => {
            assert_eq!(byte, 0x42);
            assert_eq!(offset, 11);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn versions_outside_9_to_11_and_foreign_files_are_refused() {
    for version in ["0008", "0012", "0080"] {
        let rdb = format!("REDIS{version}");
        assert!(
            matches!(
                read(rdb.as_bytes()),
                Err(RdbError::UnsupportedVersion { .. })
            ),
            "{version}"
        );
    }
    assert!(matches!(read(b"RDBX00010"), Err(RdbError::BadMagic)));
}

#[test]
fn a_minimal_hand_made_rdb_without_checksum_reads_as_absent_checksum() {
    let mut rdb = b"REDIS0009".to_vec();
    rdb.push(0xff);
    rdb.extend_from_slice(&[0; 8]);
    assert_eq!(read(&rdb).unwrap().checksum, Checksum::Absent);
    let mut checked = b"REDIS0009".to_vec();
    checked.push(0xff);
    let crc = crc64(&checked);
    checked.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(read(&checked).unwrap().checksum, Checksum::Verified(crc));
}

/// Every event and the outcome of reading `input` with small limits.
fn read_all_small(
    input: impl std::io::BufRead,
) -> (Vec<cinnabar_replication::Event>, Result<String, String>) {
    let options = ReaderOptions {
        batch_max_items: 3,
        batch_max_bytes: 16,
        raw_capture_limit: 64,
        value_pieces: cinnabar_replication::ValuePieces::Always,
    };
    let mut events = Vec::new();
    let outcome = RdbReader::new(input, options)
        .read_all(&mut |event| {
            events.push(event);
            Ok(())
        })
        .map(|summary| format!("{summary:?}"))
        .map_err(|e| e.to_string());
    (events, outcome)
}

#[test]
fn random_corruptions_never_panic_and_read_the_same_one_byte_at_a_time() {
    let rdb = real_rdb();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut bad = rdb.clone();
        for _ in 0..1 + next() % 4 {
            let at = 9 + (next() as usize) % (bad.len() - 9);
            bad[at] = next() as u8;
        }
        let whole = read_all_small(bad.as_slice());
        let trickled = read_all_small(std::io::BufReader::with_capacity(1, bad.as_slice()));
        assert_eq!(whole, trickled);
        for event in &whole.0 {
            assert!(event.element_count() <= 3);
        }
    }
}
