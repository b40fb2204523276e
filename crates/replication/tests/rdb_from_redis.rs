//! The reader against RDBs written by a real `redis-server`: every type in both its compact and
//! its big encoding, TTLs, a stream with groups and pending entries, a function library, DUMP
//! payloads rebuilt from captured bytes, and big values read in bounded batches.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use cinnabar_replication::{Checksum, Event, ReaderOptions, StreamId, ValueKind, ValuePieces};
use common::{Key, Value, bytes, connect, fold_keys, read_events, save, server};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

fn key<'a>(keys: &'a BTreeMap<(u64, Vec<u8>), Key>, name: &str) -> &'a Key {
    keys.get(&(0, bytes(name)))
        .unwrap_or_else(|| panic!("key {name} not in the RDB"))
}

/// Writes one key of every type and encoding; returns the stream's delivery time window.
fn write_every_type(conn: &mut redis::Connection) -> (u64, u64) {
    let run = |conn: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.exec(conn).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    };
    run(conn, &["SET", "str:small", "hello"]);
    run(conn, &["SET", "str:int", "12345"]);
    run(conn, &["SET", "str:negative", "-7"]);
    run(conn, &["SET", "str:int16", "-30000"]);
    run(conn, &["SET", "str:int32", "2000000000"]);
    run(conn, &["SET", "str:beyond-int32", "1234567890123"]);
    run(conn, &["SET", "str:empty", ""]);
    run(
        conn,
        &["SET", "str:lzf", &"compress me please ".repeat(200)],
    );

    run(
        conn,
        &["RPUSH", "list:small", "a", "1", "-2", "bb", "70000"],
    );
    let big_list: Vec<String> = (0..5000).map(|i| format!("item-{i}")).collect();
    redis::cmd("RPUSH")
        .arg("list:big")
        .arg(&big_list)
        .exec(conn)
        .unwrap();

    run(conn, &["SADD", "set:ints", "1", "2", "3", "-5", "100000"]);
    run(conn, &["SADD", "set:strings", "x", "y", "zz"]);
    let big_set: Vec<String> = (0..1000).map(|i| (i * 7).to_string()).collect();
    redis::cmd("SADD")
        .arg("set:big")
        .arg(&big_set)
        .exec(conn)
        .unwrap();

    run(
        conn,
        &[
            "ZADD",
            "zset:small",
            "1.5",
            "a",
            "-2",
            "b",
            "inf",
            "c",
            "3",
            "d",
        ],
    );
    let mut zadd = redis::cmd("ZADD");
    zadd.arg("zset:big");
    for i in 0..300 {
        zadd.arg(f64::from(i) / 4.0 - 10.0)
            .arg(format!("member-{i}"));
    }
    zadd.exec(conn).unwrap();

    run(
        conn,
        &["HSET", "hash:small", "f1", "v1", "f2", "2", "num", "-12"],
    );
    let mut hset = redis::cmd("HSET");
    hset.arg("hash:big");
    for i in 0..700 {
        hset.arg(format!("field-{i}")).arg(format!("value-{i}"));
    }
    hset.exec(conn).unwrap();
    run(conn, &["HSET", "hash:long-value", "f", &"v".repeat(100)]);

    let future = now_ms() + 3_600_000;
    run(
        conn,
        &["SET", "ttl:string", "v", "PXAT", &future.to_string()],
    );
    run(conn, &["RPUSH", "ttl:list", "x"]);
    run(conn, &["PEXPIREAT", "ttl:list", &(future + 1).to_string()]);

    run(conn, &["XADD", "stream", "1-1", "a", "1", "b", "2"]);
    run(conn, &["XADD", "stream", "1-2", "a", "3", "b", "4"]);
    run(conn, &["XADD", "stream", "1-3", "c", "5"]);
    run(conn, &["XADD", "stream", "2-1", "a", "6", "b", "7"]);
    run(conn, &["XDEL", "stream", "1-2"]);
    run(conn, &["XGROUP", "CREATE", "stream", "g1", "0"]);
    run(conn, &["XGROUP", "CREATE", "stream", "g2", "$"]);
    let before = now_ms();
    run(
        conn,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "alice",
            "COUNT",
            "2",
            "STREAMS",
            "stream",
            ">",
        ],
    );
    run(
        conn,
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "bob",
            "COUNT",
            "1",
            "STREAMS",
            "stream",
            ">",
        ],
    );
    let after = now_ms();
    run(conn, &["XGROUP", "CREATECONSUMER", "stream", "g2", "carol"]);

    run(
        conn,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=mylib\nredis.register_function('myfunc', function(keys, args) return 1 end)",
        ],
    );
    run(conn, &["SELECT", "1"]);
    run(conn, &["SET", "in-db-1", "one"]);
    run(conn, &["SELECT", "0"]);
    (before, after)
}

#[test]
fn every_type_and_encoding_saved_by_redis_reads_back_with_its_values_ttls_and_stream_groups() {
    let server = server();
    let mut conn = connect(&server);
    let (before, after) = write_every_type(&mut conn);
    let rdb = save(&mut conn);
    let (events, summary) = read_events(&rdb, ReaderOptions::default());
    let keys = fold_keys(&events);

    assert!(matches!(summary.checksum, Checksum::Verified(_)));
    assert!(matches!(
        events.first(),
        Some(Event::Header { version: 9..=11 })
    ));
    assert!(matches!(events.last(), Some(Event::End { .. })));
    assert!(
        events
            .iter()
            // Valkey names its version field `valkey-ver`.
            .any(|e| matches!(e, Event::Aux { key, .. } if key == b"redis-ver" || key == b"valkey-ver"))
    );
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(
        keys.keys().filter(|(db, _)| *db == 0).count() as u64,
        dbsize
    );

    // Strings, whatever their encoding, read back as the server returns them.
    for name in [
        "str:small",
        "str:int",
        "str:negative",
        "str:int16",
        "str:int32",
        "str:beyond-int32",
        "str:empty",
        "str:lzf",
    ] {
        let expected: Vec<u8> = redis::cmd("GET").arg(name).query(&mut conn).unwrap();
        assert_eq!(key(&keys, name).value, Value::String(expected), "{name}");
    }
    assert_eq!(
        keys[&(1, bytes("in-db-1"))].value,
        Value::String(bytes("one"))
    );

    for name in ["list:small", "list:big", "ttl:list"] {
        let expected: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(name)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        assert_eq!(key(&keys, name).value, Value::List(expected), "{name}");
    }
    for name in ["set:ints", "set:strings", "set:big"] {
        let expected: BTreeSet<Vec<u8>> =
            redis::cmd("SMEMBERS").arg(name).query(&mut conn).unwrap();
        assert_eq!(key(&keys, name).value, Value::Set(expected), "{name}");
    }
    for name in ["zset:small", "zset:big"] {
        let flat: Vec<String> = redis::cmd("ZRANGE")
            .arg(name)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut conn)
            .unwrap();
        let expected: Vec<(Vec<u8>, f64)> = flat
            .chunks(2)
            .map(|pair| (bytes(&pair[0]), pair[1].parse().unwrap()))
            .collect();
        let Value::ZSet(mut got) = key(&keys, name).value.clone() else {
            panic!("{name} is not a sorted set");
        };
        got.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        assert_eq!(got, expected, "{name}");
    }
    for name in ["hash:small", "hash:big", "hash:long-value"] {
        let expected: BTreeMap<Vec<u8>, Vec<u8>> =
            redis::cmd("HGETALL").arg(name).query(&mut conn).unwrap();
        assert_eq!(key(&keys, name).value, Value::Hash(expected), "{name}");
    }

    // Both the compact and the big encoding of every type were exercised.
    let types: BTreeMap<&str, u8> = [
        "str:small",
        "list:small",
        "list:big",
        "set:ints",
        "set:strings",
        "set:big",
        "zset:small",
        "zset:big",
        "hash:small",
        "hash:big",
        "stream",
    ]
    .into_iter()
    .map(|name| (name, key(&keys, name).start.rdb_type))
    .collect();
    let version_7_0 = summary.version == 10;
    if version_7_0 {
        let expected: BTreeMap<&str, u8> = [
            ("str:small", 0),
            ("list:small", 18),
            ("list:big", 18),
            ("set:ints", 11),
            ("set:strings", 2),
            ("set:big", 2),
            ("zset:small", 17),
            ("zset:big", 5),
            ("hash:small", 16),
            ("hash:big", 4),
            ("stream", 19),
        ]
        .into_iter()
        .collect();
        assert_eq!(types, expected);
    }
    assert_eq!(key(&keys, "list:small").start.kind, ValueKind::List);

    // TTLs are absolute milliseconds, exactly as written.
    let pexpiretime = |conn: &mut redis::Connection, name: &str| -> i64 {
        redis::cmd("PEXPIRETIME").arg(name).query(conn).unwrap()
    };
    for name in ["ttl:string", "ttl:list"] {
        assert_eq!(
            key(&keys, name).start.expire_at_ms,
            Some(pexpiretime(&mut conn, name)),
            "{name}"
        );
    }
    assert_eq!(key(&keys, "str:small").start.expire_at_ms, None);

    // The stream: live entries only, its bookkeeping, groups, PEL and consumers.
    let Value::Stream(stream) = &key(&keys, "stream").value else {
        panic!("stream is not a stream");
    };
    let entry_ids: Vec<StreamId> = stream.entries.iter().map(|e| e.id).collect();
    assert_eq!(entry_ids, vec![id(1, 1), id(1, 3), id(2, 1)]);
    assert_eq!(
        stream.entries[0].fields,
        vec![(bytes("a"), bytes("1")), (bytes("b"), bytes("2"))]
    );
    assert_eq!(stream.entries[1].fields, vec![(bytes("c"), bytes("5"))]);
    assert_eq!(
        stream.entries[2].fields,
        vec![(bytes("a"), bytes("6")), (bytes("b"), bytes("7"))]
    );
    let meta = stream.meta.clone().expect("stream bookkeeping");
    assert_eq!(meta.length, 3);
    assert_eq!(meta.last_id, id(2, 1));
    assert_eq!(meta.first_id, Some(id(1, 1)));
    assert_eq!(meta.max_deleted_id, Some(id(1, 2)));
    assert_eq!(meta.entries_added, Some(4));

    assert_eq!(stream.groups.len(), 2);
    let g1 = &stream.groups[0];
    assert_eq!(g1.group.name, bytes("g1"));
    assert_eq!(g1.group.last_id, id(2, 1));
    let pending_ids: Vec<StreamId> = g1.pending.iter().map(|p| p.id).collect();
    assert_eq!(pending_ids, vec![id(1, 1), id(1, 3), id(2, 1)]);
    for pending in &g1.pending {
        assert_eq!(pending.delivery_count, 1);
        assert!((before..=after).contains(&pending.delivery_time_ms));
    }
    let consumers: Vec<(Vec<u8>, Vec<StreamId>)> = g1
        .consumers
        .iter()
        .map(|(c, ids)| (c.name.clone(), ids.clone()))
        .collect();
    assert_eq!(
        consumers,
        vec![
            (bytes("alice"), vec![id(1, 1), id(1, 3)]),
            (bytes("bob"), vec![id(2, 1)])
        ]
    );
    let xpending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("stream")
        .arg("g1")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut conn)
        .unwrap();
    let owners: Vec<(String, String)> = xpending.into_iter().map(|(i, c, _, _)| (i, c)).collect();
    assert_eq!(
        owners,
        vec![
            ("1-1".to_string(), "alice".to_string()),
            ("1-3".to_string(), "alice".to_string()),
            ("2-1".to_string(), "bob".to_string())
        ]
    );
    let g2 = &stream.groups[1];
    assert_eq!(g2.group.name, bytes("g2"));
    assert_eq!(g2.group.last_id, id(2, 1));
    assert!(g2.pending.is_empty());
    assert_eq!(g2.consumers.len(), 1);
    assert_eq!(g2.consumers[0].0.name, bytes("carol"));
    assert!(g2.consumers[0].1.is_empty());

    // The function library, verbatim.
    let functions: Vec<&Vec<u8>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Function { code } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(functions.len(), 1);
    assert!(functions[0].starts_with(b"#!lua name=mylib\n"));
    assert!(
        functions[0]
            .windows(b"register_function('myfunc'".len())
            .any(|w| w == b"register_function('myfunc'")
    );
}

#[test]
fn captured_raw_bytes_of_a_small_value_make_the_same_payload_as_dump() {
    let server = server();
    let mut conn = connect(&server);
    write_every_type(&mut conn);
    let rdb = save(&mut conn);
    let (events, summary) = read_events(&rdb, ReaderOptions::default());
    let keys = fold_keys(&events);

    let mut compared = 0;
    for ((db, name), key) in &keys {
        if *db != 0 {
            continue;
        }
        let raw = key.raw.as_ref().unwrap_or_else(|| {
            panic!(
                "{} is small and must be captured",
                String::from_utf8_lossy(name)
            )
        });
        assert_eq!(u32::from(raw.rdb_version), summary.version);
        let dump: Vec<u8> = redis::cmd("DUMP").arg(name).query(&mut conn).unwrap();
        assert_eq!(
            raw.dump_payload(),
            dump,
            "DUMP of {}",
            String::from_utf8_lossy(name)
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} keys compared");

    // And the server takes the payload back.
    let payload = key(&keys, "stream").raw.as_ref().unwrap().dump_payload();
    redis::cmd("RESTORE")
        .arg("stream:copy")
        .arg(0)
        .arg(payload)
        .exec(&mut conn)
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("stream:copy")
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 3);
}

#[test]
fn a_captured_value_is_reported_by_its_key_end_alone_when_pieces_are_only_for_uncaptured_values() {
    let server = server();
    let mut conn = connect(&server);
    write_every_type(&mut conn);
    // A string too big to capture, and incompressible (its encoded form outgrows the limit).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..10_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    redis::cmd("SET")
        .arg("str:noise")
        .arg(&noise)
        .exec(&mut conn)
        .unwrap();
    let rdb = save(&mut conn);
    let options = ReaderOptions {
        raw_capture_limit: 4096,
        value_pieces: ValuePieces::OnlyUncaptured,
        ..ReaderOptions::default()
    };
    let (events, _) = read_events(&rdb, options);
    let keys = fold_keys(&events);
    // A captured string (LZF-compressed here) is skipped, not decompressed into pieces.
    let lzf = key(&keys, "str:lzf");
    assert!(lzf.raw.is_some());
    assert_eq!(lzf.value, Value::String(Vec::new()));
    assert!(key(&keys, "str:small").raw.is_some());
    let big = key(&keys, "str:noise");
    assert!(big.raw.is_none());
    assert_eq!(
        big.value,
        Value::String(noise),
        "every piece of an uncaptured string"
    );
    let small = key(&keys, "hash:small");
    assert!(small.raw.is_some());
    assert_eq!(
        small.value,
        Value::Hash(BTreeMap::new()),
        "no pieces for a captured value"
    );
    let big = key(&keys, "hash:big");
    assert!(big.raw.is_none());
    let Value::Hash(fields) = &big.value else {
        panic!("hash:big is not a hash");
    };
    assert_eq!(
        fields.len(),
        700,
        "every piece of an uncaptured value, none lost while held"
    );
    let Value::List(items) = &key(&keys, "list:big").value else {
        panic!("list:big is not a list");
    };
    assert_eq!(items.len(), 5000);
    assert_eq!(items[0], bytes("item-0"));
    assert_eq!(items[4999], bytes("item-4999"));
}

#[test]
fn a_big_list_and_big_strings_arrive_in_batches_no_larger_than_the_limits() {
    const ITEMS: usize = 200_000;
    const MAX_ITEMS: usize = 500;
    const MAX_BYTES: usize = 4096;
    let server = server();
    let mut conn = connect(&server);
    for start in (0..ITEMS).step_by(10_000) {
        let chunk: Vec<String> = (start..start + 10_000)
            .map(|i| format!("element:{i}"))
            .collect();
        redis::cmd("RPUSH")
            .arg("big:list")
            .arg(&chunk)
            .exec(&mut conn)
            .unwrap();
    }
    // Compressible (LZF back-references across the 8 KiB window) and incompressible strings.
    let compressible: String = (0..400_000).map(|i| format!("{:07},", i % 5000)).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let incompressible: Vec<u8> = (0..3_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    redis::cmd("SET")
        .arg("big:compressible")
        .arg(&compressible)
        .exec(&mut conn)
        .unwrap();
    redis::cmd("SET")
        .arg("big:random")
        .arg(&incompressible)
        .exec(&mut conn)
        .unwrap();
    let rdb = save(&mut conn);

    let options = ReaderOptions {
        batch_max_items: MAX_ITEMS,
        batch_max_bytes: MAX_BYTES,
        raw_capture_limit: 64 * 1024,
        value_pieces: ValuePieces::Always,
    };
    let (events, _) = read_events(&rdb, options);
    for event in &events {
        assert!(
            event.element_count() <= MAX_ITEMS,
            "{} elements",
            event.element_count()
        );
        let held = match event {
            Event::StringChunk(chunk) => chunk.len(),
            Event::ListItems(items) => items.iter().map(Vec::len).sum(),
            _ => 0,
        };
        assert!(held <= MAX_BYTES, "an event holds {held} bytes");
    }
    let keys = fold_keys(&events);
    let list = key(&keys, "big:list");
    assert!(list.raw.is_none(), "a big value is not captured");
    let Value::List(items) = &list.value else {
        panic!("big:list is not a list");
    };
    assert_eq!(items.len(), ITEMS);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, item)| *item == format!("element:{i}").into_bytes())
    );
    assert_eq!(
        key(&keys, "big:compressible").value,
        Value::String(compressible.into_bytes())
    );
    assert_eq!(
        key(&keys, "big:random").value,
        Value::String(incompressible)
    );
}

#[test]
fn lfu_frequency_and_lru_idle_time_are_reported_with_their_key() {
    let server = server();
    let mut conn = connect(&server);
    let config = |conn: &mut redis::Connection, policy: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .exec(conn)
            .unwrap();
    };

    config(&mut conn, "allkeys-lfu");
    redis::cmd("SET")
        .arg("hot")
        .arg("v")
        .exec(&mut conn)
        .unwrap();
    for _ in 0..50 {
        let _: Vec<u8> = redis::cmd("GET").arg("hot").query(&mut conn).unwrap();
    }
    let freq: u8 = redis::cmd("OBJECT")
        .arg("FREQ")
        .arg("hot")
        .query(&mut conn)
        .unwrap();
    let (events, _) = read_events(&save(&mut conn), ReaderOptions::default());
    let start = key(&fold_keys(&events), "hot").start.clone();
    assert_eq!(start.lfu_freq, Some(freq));
    assert_eq!(start.idle_seconds, None);

    // A key written under LRU (an older key's clock field still holds LFU data).
    config(&mut conn, "allkeys-lru");
    redis::cmd("SET")
        .arg("warm")
        .arg("v")
        .exec(&mut conn)
        .unwrap();
    let (events, _) = read_events(&save(&mut conn), ReaderOptions::default());
    let start = key(&fold_keys(&events), "warm").start.clone();
    assert_eq!(start.lfu_freq, None);
    assert!(start.idle_seconds.is_some_and(|idle| idle < 60));
}
