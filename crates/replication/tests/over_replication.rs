//! The reader on RDBs that come over replication: a file written by `redis-cli --rdb`, and full
//! resynchronisations read straight from a socket (diskless `$EOF:` framing and disk-based
//! `$<length>` framing), after which the command stream must still be readable.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cinnabar_replication::transfer::{TransferLength, read_end_mark, read_transfer_header};
use cinnabar_replication::{Checksum, RdbReader, ReaderOptions};
use cinnabar_testkit::TestServer;
use common::{Value, bytes, connect, fold_keys, read_events, save, server};

fn write_sample(conn: &mut redis::Connection) {
    redis::cmd("SET")
        .arg("s")
        .arg("v".repeat(100))
        .exec(conn)
        .unwrap();
    redis::cmd("RPUSH")
        .arg("l")
        .arg(&["1", "2", "three"])
        .exec(conn)
        .unwrap();
    redis::cmd("ZADD")
        .arg("z")
        .arg(1)
        .arg("m")
        .exec(conn)
        .unwrap();
    redis::cmd("XADD")
        .arg("x")
        .arg("5-5")
        .arg("f")
        .arg("v")
        .exec(conn)
        .unwrap();
    redis::cmd("SET")
        .arg("ttl")
        .arg("t")
        .arg("PXAT")
        .arg(4_102_444_800_000u64)
        .exec(conn)
        .unwrap();
}

fn master_replid(conn: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("replication").query(conn).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("master_replid:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn an_rdb_taken_by_redis_cli_over_replication_reads_like_the_one_save_writes() {
    let server = server();
    let mut conn = connect(&server);
    write_sample(&mut conn);
    let file = server.data_dir().join("from-replication.rdb");
    let status = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(server.port().to_string())
        .arg("--rdb")
        .arg(&file)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    let (events, summary) = read_events(&file, ReaderOptions::default());
    assert!(matches!(summary.checksum, Checksum::Verified(_)));
    assert_eq!(summary.repl_id, Some(master_replid(&mut conn)));
    assert!(summary.repl_offset.is_some());
    let over_replication = fold_keys(&events);

    let (saved_events, _) = read_events(&save(&mut conn), ReaderOptions::default());
    let saved = fold_keys(&saved_events);
    assert_eq!(over_replication.len(), 5);
    // Idle times are seconds since last access, read at two different moments: compare
    // everything else.
    let without_idle = |mut keys: std::collections::BTreeMap<_, common::Key>| {
        for key in keys.values_mut() {
            key.start.idle_seconds = None;
        }
        keys
    };
    let (over_replication, saved) = (without_idle(over_replication), without_idle(saved));
    assert_eq!(over_replication, saved);
    assert_eq!(
        over_replication[&(0, bytes("ttl"))].start.expire_at_ms,
        Some(4_102_444_800_000)
    );
}

/// Sends `PSYNC ? -1` as a replica able to read diskless transfers; returns the input
/// positioned at the transfer header, with the replication id and offset announced.
fn start_full_resync(server: &TestServer) -> (BufReader<TcpStream>, String, i64) {
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    // One command at a time: Redis refuses PSYNC while a reply is still pending.
    writer
        .write_all(b"REPLCONF capa eof capa psync2\r\n")
        .unwrap();
    let mut input = BufReader::new(stream);
    let mut line = String::new();
    input.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");
    line.clear();
    writer.write_all(b"PSYNC ? -1\r\n").unwrap();
    input.read_line(&mut line).unwrap();
    let mut words = line.trim_end().split(' ');
    assert_eq!(words.next(), Some("+FULLRESYNC"), "{line}");
    let replid = words.next().unwrap().to_string();
    let offset = words.next().unwrap().parse().unwrap();
    (input, replid, offset)
}

/// Reads from `input` until `needle` shows up in the command stream, acknowledging `offset`
/// every half second as a replica does (after a diskless transfer the master starts the stream
/// only on an acknowledgement that arrives once it considers the transfer done).
fn command_stream_contains(input: &mut BufReader<TcpStream>, needle: &[u8], offset: i64) -> bool {
    let mut writer = input.get_ref().try_clone().unwrap();
    input
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        writer
            .write_all(format!("REPLCONF ACK {offset}\r\n").as_bytes())
            .unwrap();
        match input.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("replication stream: {e}"),
        }
    }
    true
}

#[test]
fn a_diskless_full_resync_is_read_from_the_socket_and_the_command_stream_follows_it() {
    let server = server();
    let mut conn = connect(&server);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync")
        .arg("yes")
        .exec(&mut conn)
        .unwrap();
    write_sample(&mut conn);

    let (mut input, replid, offset) = start_full_resync(&server);
    let TransferLength::EndMark(mark) = read_transfer_header(&mut input).unwrap() else {
        panic!("a diskless master announces an end mark");
    };
    let mut reader = RdbReader::new(input, ReaderOptions::default());
    let mut events = Vec::new();
    let summary = reader
        .read_all(&mut |event| {
            events.push(event);
            Ok(())
        })
        .unwrap();
    let mut input = reader.into_inner();
    read_end_mark(&mut input, &mark).unwrap();
    assert_eq!(summary.repl_id.as_deref(), Some(replid.as_str()));
    assert_eq!(summary.repl_offset, Some(offset));
    let keys = fold_keys(&events);
    assert_eq!(
        keys[&(0, bytes("l"))].value,
        Value::List(vec![bytes("1"), bytes("2"), bytes("three")])
    );

    redis::cmd("SET")
        .arg("after-sync")
        .arg("1")
        .exec(&mut conn)
        .unwrap();
    assert!(command_stream_contains(&mut input, b"after-sync", offset));
}

#[test]
fn a_disk_based_full_resync_is_exactly_as_long_as_its_header_says() {
    let server = server();
    let mut conn = connect(&server);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync")
        .arg("no")
        .exec(&mut conn)
        .unwrap();
    write_sample(&mut conn);

    let (mut input, replid, offset) = start_full_resync(&server);
    let TransferLength::Sized(len) = read_transfer_header(&mut input).unwrap() else {
        panic!("a disk-based master announces a length");
    };
    let mut reader = RdbReader::new(input, ReaderOptions::default());
    let (events, summary) = {
        let mut events = Vec::new();
        let summary = reader
            .read_all(&mut |event| {
                events.push(event);
                Ok(())
            })
            .unwrap();
        (events, summary)
    };
    assert_eq!(summary.bytes, len);
    assert_eq!(reader.offset(), len);
    assert_eq!(summary.repl_id.as_deref(), Some(replid.as_str()));
    assert_eq!(fold_keys(&events).len(), 5);

    let mut input = reader.into_inner();
    redis::cmd("SET")
        .arg("after-sync")
        .arg("1")
        .exec(&mut conn)
        .unwrap();
    assert!(command_stream_contains(&mut input, b"after-sync", offset));
}
