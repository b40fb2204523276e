//! Encodings no server on this machine writes any more (Redis 6 and older: ziplists, quicklist
//! version 1, stream listpacks version 1, plain lists/sets/hashes and ASCII-scored sorted sets):
//! values are built byte by byte here, proven valid by a real Redis 7.0 that RESTOREs them, and
//! the reader must read them exactly as that server does.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cinnabar_replication::{RawValue, ReaderOptions, StreamId, crc64};
use common::{Value, bytes, connect, fold_keys, read_events_from, server};

/// A length-encoded number (6, 14 or 32 bits).
fn len(n: usize) -> Vec<u8> {
    if n < 64 {
        vec![n as u8]
    } else if n < 16384 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    }
}

/// A plain RDB string.
fn string(s: &[u8]) -> Vec<u8> {
    let mut v = len(s.len());
    v.extend_from_slice(s);
    v
}

/// An element of a ziplist or listpack: text, or a number to store as an integer.
#[derive(Clone, Copy)]
enum Item<'a> {
    Text(&'a str),
    Int(i64),
}

/// A ziplist of short elements, with every integer width Redis 6 uses for small numbers.
fn ziplist(items: &[Item<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev_len = 0usize;
    let mut tail = 10;
    for item in items {
        let mut entry = vec![prev_len as u8];
        match *item {
            Item::Text(s) => {
                entry.push(s.len() as u8);
                entry.extend_from_slice(s.as_bytes());
            }
            Item::Int(n @ 0..=12) => entry.push(0xf1 + n as u8),
            Item::Int(n) if i8::try_from(n).is_ok() => {
                entry.push(0xfe);
                entry.push(n as i8 as u8);
            }
            Item::Int(n) => {
                entry.push(0xc0);
                entry.extend_from_slice(&(n as i16).to_le_bytes());
            }
        }
        tail = 10 + body.len();
        prev_len = entry.len();
        body.extend_from_slice(&entry);
    }
    let total = 10 + body.len() + 1;
    let mut zl = (total as u32).to_le_bytes().to_vec();
    zl.extend_from_slice(&(tail as u32).to_le_bytes());
    zl.extend_from_slice(&(items.len() as u16).to_le_bytes());
    zl.extend_from_slice(&body);
    zl.push(0xff);
    zl
}

/// A listpack of short elements (7-bit integers and 6-bit-length strings).
fn listpack(items: &[Item<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for item in items {
        let entry = match *item {
            Item::Text(s) => {
                let mut e = vec![0x80 | s.len() as u8];
                e.extend_from_slice(s.as_bytes());
                e
            }
            Item::Int(n) => vec![n as u8],
        };
        body.extend_from_slice(&entry);
        body.push(entry.len() as u8);
    }
    let total = 6 + body.len() + 1;
    let mut lp = (total as u32).to_le_bytes().to_vec();
    lp.extend_from_slice(&(items.len() as u16).to_le_bytes());
    lp.extend_from_slice(&body);
    lp.push(0xff);
    lp
}

fn raw_id(ms: u64, seq: u64) -> Vec<u8> {
    let mut v = ms.to_be_bytes().to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

/// Value bytes (type byte first) of every old encoding, by key name.
fn old_values() -> Vec<(&'static str, Vec<u8>)> {
    use Item::{Int, Text};
    let mut values = Vec::new();

    let mut v = vec![10];
    v.extend(string(&ziplist(&[
        Text("a"),
        Int(5),
        Int(-100),
        Int(1000),
        Text("hello"),
    ])));
    values.push(("list:ziplist", v));

    let mut v = vec![14];
    v.extend(len(2));
    v.extend(string(&ziplist(&[Text("n1-a"), Int(1)])));
    v.extend(string(&ziplist(&[Text("n2-a"), Int(300), Text("n2-c")])));
    values.push(("list:quicklist-v1", v));

    let mut v = vec![12];
    // Sorted by score, as Redis keeps it (it does not re-sort what it loads).
    v.extend(string(&ziplist(&[
        Text("m3"),
        Int(-7),
        Text("m1"),
        Text("1.5"),
        Text("m2"),
        Int(3),
    ])));
    values.push(("zset:ziplist", v));

    let mut v = vec![13];
    v.extend(string(&ziplist(&[
        Text("f1"),
        Text("v1"),
        Text("f2"),
        Int(7),
    ])));
    values.push(("hash:ziplist", v));

    let mut v = vec![3];
    v.extend(len(3));
    v.extend(string(b"bottom"));
    v.push(255); // -inf
    v.extend(string(b"low"));
    v.extend([3, b'2', b'.', b'5']);
    v.extend(string(b"top"));
    v.push(254); // +inf
    values.push(("zset:ascii-scores", v));

    let mut v = vec![1];
    v.extend(len(2));
    v.extend(string(b"x"));
    v.extend(string(b"y"));
    values.push(("list:plain", v));

    let mut v = vec![2];
    v.extend(len(2));
    v.extend(string(b"p"));
    v.extend(string(b"q"));
    values.push(("set:plain", v));

    let mut v = vec![4];
    v.extend(len(1));
    v.extend(string(b"field"));
    v.extend(string(b"value"));
    values.push(("hash:plain", v));

    // Stream version 1: one node with master id 1-1 holding 1-1 {f: v1} (same fields as the
    // master entry) and 1-2 {g: v2}; one group with one pending entry owned by one consumer.
    let node = listpack(&[
        Int(2),
        Int(0),
        Int(1),
        Text("f"),
        Int(0),
        Int(2),
        Int(0),
        Int(0),
        Text("v1"),
        Int(4),
        Int(0),
        Int(0),
        Int(1),
        Int(1),
        Text("g"),
        Text("v2"),
        Int(6),
    ]);
    let mut v = vec![15];
    v.extend(len(1));
    v.extend(string(&raw_id(1, 1)));
    v.extend(string(&node));
    v.extend(len(2)); // length
    v.extend(len(1));
    v.extend(len(2)); // last id 1-2
    v.extend(len(1)); // one group
    v.extend(string(b"grp"));
    v.extend(len(1));
    v.extend(len(1)); // last delivered 1-1
    v.extend(len(1)); // PEL size
    v.extend(raw_id(1, 1));
    v.extend(1_700_000_000_000u64.to_le_bytes());
    v.extend(len(3)); // delivery count
    v.extend(len(1)); // one consumer
    v.extend(string(b"c1"));
    v.extend(1_700_000_000_500u64.to_le_bytes());
    v.extend(len(1));
    v.extend(raw_id(1, 1));
    values.push(("stream:v1", v));
    values
}

/// An RDB of version 9 holding `values` in database 0.
fn rdb_of(values: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut rdb = b"REDIS0009".to_vec();
    rdb.extend([0xfe, 0x00]);
    for (key, value) in values {
        rdb.push(value[0]);
        rdb.extend(string(key.as_bytes()));
        rdb.extend_from_slice(&value[1..]);
    }
    rdb.push(0xff);
    let crc = crc64(&rdb);
    rdb.extend_from_slice(&crc.to_le_bytes());
    rdb
}

#[test]
fn ziplist_era_values_read_exactly_as_redis_restores_them() {
    let values = old_values();
    let server = server();
    let mut conn = connect(&server);
    for (key, value) in &values {
        let payload = RawValue {
            bytes: value.clone(),
            rdb_version: 9,
        }
        .dump_payload();
        redis::cmd("RESTORE")
            .arg(*key)
            .arg(0)
            .arg(payload)
            .exec(&mut conn)
            .unwrap_or_else(|e| panic!("Redis refuses the hand-made {key}: {e}"));
    }

    let rdb = rdb_of(&values);
    let (events, _) = read_events_from(rdb.as_slice(), ReaderOptions::default());
    let keys = fold_keys(&events);
    let read = |name: &str| keys[&(0, bytes(name))].clone();

    // Raw capture gives back exactly the bytes written.
    for (key, value) in &values {
        assert_eq!(read(key).raw.unwrap().bytes, *value, "{key}");
    }

    for name in ["list:ziplist", "list:quicklist-v1", "list:plain"] {
        let expected: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(name)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        assert_eq!(read(name).value, Value::List(expected), "{name}");
    }
    let members: BTreeSet<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg("set:plain")
        .query(&mut conn)
        .unwrap();
    assert_eq!(read("set:plain").value, Value::Set(members));
    for name in ["hash:ziplist", "hash:plain"] {
        let expected: BTreeMap<Vec<u8>, Vec<u8>> =
            redis::cmd("HGETALL").arg(name).query(&mut conn).unwrap();
        assert_eq!(read(name).value, Value::Hash(expected), "{name}");
    }
    for name in ["zset:ziplist", "zset:ascii-scores"] {
        let flat: Vec<String> = redis::cmd("ZRANGE")
            .arg(name)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut conn)
            .unwrap();
        let expected: Vec<(Vec<u8>, f64)> = flat
            .chunks(2)
            .map(|p| (bytes(&p[0]), p[1].parse().unwrap()))
            .collect();
        let Value::ZSet(mut got) = read(name).value else {
            panic!("{name}");
        };
        got.sort_by(|a, b| a.1.total_cmp(&b.1));
        assert_eq!(got, expected, "{name}");
    }

    let Value::Stream(stream) = read("stream:v1").value else {
        panic!("stream:v1");
    };
    let xrange: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("stream:v1")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let got: Vec<(String, Vec<(String, String)>)> = stream
        .entries
        .iter()
        .map(|e| {
            let fields = e
                .fields
                .iter()
                .map(|(f, v)| {
                    (
                        String::from_utf8(f.clone()).unwrap(),
                        String::from_utf8(v.clone()).unwrap(),
                    )
                })
                .collect();
            (e.id.to_string(), fields)
        })
        .collect();
    assert_eq!(got, xrange);
    let meta = stream.meta.unwrap();
    assert_eq!((meta.length, meta.last_id), (2, StreamId { ms: 1, seq: 2 }));
    assert_eq!(meta.first_id, None, "version 1 streams have no first id");
    let group = &stream.groups[0];
    assert_eq!(group.group.name, bytes("grp"));
    assert_eq!(group.group.entries_read, None);
    let xpending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("stream:v1")
        .arg("grp")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut conn)
        .unwrap();
    assert_eq!(xpending.len(), 1);
    assert_eq!(group.pending.len(), 1);
    assert_eq!(group.pending[0].id.to_string(), xpending[0].0);
    assert_eq!(group.pending[0].delivery_count, xpending[0].3);
    assert_eq!(group.pending[0].delivery_time_ms, 1_700_000_000_000);
    assert_eq!(group.consumers.len(), 1);
    assert_eq!(group.consumers[0].0.name, bytes(&xpending[0].1));
    assert_eq!(group.consumers[0].0.seen_time_ms, 1_700_000_000_500);
    assert_eq!(group.consumers[0].0.active_time_ms, None);
    assert_eq!(group.consumers[0].1, vec![StreamId { ms: 1, seq: 1 }]);
}
