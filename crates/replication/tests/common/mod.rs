//! Shared by the integration tests: a real server, SAVE, and the reader's events folded back
//! into whole values so they can be compared with what the server says.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::path::PathBuf;

use cinnabar_replication::{
    Event, KeyStart, PendingEntry, RawValue, RdbReader, ReadSummary, ReaderOptions, StreamConsumer,
    StreamEntry, StreamGroup, StreamId, StreamMeta,
};
use cinnabar_testkit::{ServerOptions, TestServer};

/// A standalone server that compresses its RDB strings (the default, made explicit).
pub fn server() -> TestServer {
    TestServer::start_with(ServerOptions {
        extra: vec![("rdbcompression".into(), "yes".into())],
        ..ServerOptions::default()
    })
}

pub fn connect(server: &TestServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Runs SAVE (waiting out a background save a replica may have started) and returns the path
/// of the RDB it wrote.
pub fn save(conn: &mut redis::Connection) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match redis::cmd("SAVE").exec(conn) {
            Ok(()) => break,
            Err(e)
                if e.to_string().contains("in progress")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("SAVE: {e}"),
        }
    }
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(conn)
        .unwrap();
    let file: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dbfilename")
        .query(conn)
        .unwrap();
    PathBuf::from(&dir[1]).join(&file[1])
}

/// Every event of the RDB at `path`.
pub fn read_events(path: &PathBuf, options: ReaderOptions) -> (Vec<Event>, ReadSummary) {
    let input = BufReader::new(std::fs::File::open(path).unwrap());
    read_events_from(input, options)
}

pub fn read_events_from(
    input: impl std::io::BufRead,
    options: ReaderOptions,
) -> (Vec<Event>, ReadSummary) {
    let mut events = Vec::new();
    let summary = RdbReader::new(input, options)
        .read_all(&mut |event| {
            events.push(event);
            Ok(())
        })
        .unwrap();
    (events, summary)
}

/// A consumer group with its pending entries and consumers, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub group: StreamGroup,
    pub pending: Vec<PendingEntry>,
    pub consumers: Vec<(StreamConsumer, Vec<StreamId>)>,
}

/// A stream, as read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    pub entries: Vec<StreamEntry>,
    pub meta: Option<StreamMeta>,
    pub groups: Vec<Group>,
}

/// A value folded back from its pieces.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Stream(Stream),
}

/// One key as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub start: KeyStart,
    pub value: Value,
    pub raw: Option<RawValue>,
}

/// Folds events into keys by (db, key); panics on any event out of place.
pub fn fold_keys(events: &[Event]) -> BTreeMap<(u64, Vec<u8>), Key> {
    let mut keys = BTreeMap::new();
    let mut current: Option<Key> = None;
    for event in events {
        match event {
            Event::KeyStart(start) => {
                assert!(current.is_none(), "KeyStart inside a key");
                let value = match start.kind {
                    cinnabar_replication::ValueKind::String => Value::String(Vec::new()),
                    cinnabar_replication::ValueKind::List => Value::List(Vec::new()),
                    cinnabar_replication::ValueKind::Set => Value::Set(BTreeSet::new()),
                    cinnabar_replication::ValueKind::ZSet => Value::ZSet(Vec::new()),
                    cinnabar_replication::ValueKind::Hash => Value::Hash(BTreeMap::new()),
                    _ => Value::Stream(Stream::default()),
                };
                current = Some(Key {
                    start: start.clone(),
                    value,
                    raw: None,
                });
            }
            Event::KeyEnd { raw } => {
                let mut key = current.take().expect("KeyEnd outside a key");
                key.raw = raw.clone();
                keys.insert((key.start.db, key.start.key.clone()), key);
            }
            piece => {
                let Some(key) = current.as_mut() else {
                    continue;
                };
                match (&mut key.value, piece) {
                    (Value::String(s), Event::StringChunk(c)) => s.extend_from_slice(c),
                    (Value::List(l), Event::ListItems(items)) => l.extend(items.iter().cloned()),
                    (Value::Set(s), Event::SetMembers(items)) => s.extend(items.iter().cloned()),
                    (Value::ZSet(z), Event::ZSetEntries(items)) => {
                        z.extend(items.iter().map(|e| (e.member.clone(), e.score)))
                    }
                    (Value::Hash(h), Event::HashFields(items)) => {
                        h.extend(items.iter().map(|f| (f.field.clone(), f.value.clone())))
                    }
                    (Value::Stream(s), Event::StreamEntries(items)) => {
                        s.entries.extend(items.iter().cloned())
                    }
                    (Value::Stream(s), Event::StreamMeta(meta)) => s.meta = Some(meta.clone()),
                    (Value::Stream(s), Event::StreamGroup(group)) => s.groups.push(Group {
                        group: group.clone(),
                        pending: Vec::new(),
                        consumers: Vec::new(),
                    }),
                    (Value::Stream(s), Event::StreamPending { group, entries }) => {
                        let last = s.groups.last_mut().expect("pending before its group");
                        assert_eq!(&last.group.name, group);
                        last.pending.extend(entries.iter().copied());
                    }
                    (Value::Stream(s), Event::StreamConsumer(consumer)) => {
                        let last = s.groups.last_mut().expect("consumer before its group");
                        assert_eq!(last.group.name, consumer.group);
                        last.consumers.push((consumer.clone(), Vec::new()));
                    }
                    (
                        Value::Stream(s),
                        Event::StreamConsumerPending {
                            group,
                            consumer,
                            ids,
                        },
                    ) => {
                        let last = s.groups.last_mut().expect("consumer PEL before its group");
                        assert_eq!(&last.group.name, group);
                        let (owner, owned) =
                            last.consumers.last_mut().expect("PEL before its consumer");
                        assert_eq!(&owner.name, consumer);
                        owned.extend(ids.iter().copied());
                    }
                    (value, piece) => panic!("{piece:?} inside a value of kind {value:?}"),
                }
            }
        }
    }
    assert!(current.is_none(), "RDB ended inside a key");
    keys
}

pub fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}
