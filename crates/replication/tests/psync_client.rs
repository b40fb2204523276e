//! The replication client against real servers: full resynchronisations (disk-based and
//! diskless, from a master and from a replica), the command stream with exact offsets,
//! continuing from a checkpoint, a checkpoint too old for the backlog, acknowledgements that
//! `WAIT` counts, and the errors an operator must be able to read.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cinnabar_replication::checkpoint::{Checkpoint, CheckpointStore};
use cinnabar_replication::client::{
    Auth, ClientOptions, CommandSink, Flow, FullSyncReason, ItemKind, ReplicationClient,
    ReplicationError, Stage, Start, StreamItem,
};
use cinnabar_replication::{Event, SinkError, ValueKind};
use cinnabar_testkit::{ServerOptions, TestServer};
use common::{Value, bytes, connect, fold_keys};

/// One delivered item, owned.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    offset: u64,
    db: u64,
    in_transaction: bool,
    /// The command's arguments; `SELECT n`, `MULTI` and `EXEC` are recorded as such.
    args: Vec<String>,
}

impl Recorded {
    fn is(&self, args: &[&str]) -> bool {
        self.args
            .iter()
            .map(String::as_str)
            .eq(args.iter().copied())
    }
}

/// Records every item and stops when `done(items, offset)` says so, after an item or on an
/// idle tick; fails the test after 4 s.
struct Recorder<F> {
    items: Vec<Recorded>,
    done: F,
    deadline: Instant,
}

fn recorder<F: FnMut(&[Recorded], u64) -> bool>(done: F) -> Recorder<F> {
    Recorder {
        items: Vec::new(),
        done,
        deadline: Instant::now() + Duration::from_secs(4),
    }
}

impl<F: FnMut(&[Recorded], u64) -> bool> CommandSink for Recorder<F> {
    fn item(&mut self, item: &StreamItem<'_>) -> Result<Flow, SinkError> {
        let text = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
        let args = match item.kind {
            ItemKind::Command(args) => args.iter().map(text).collect(),
            ItemKind::SelectDb { db } => vec!["SELECT".to_owned(), db.to_string()],
            ItemKind::Multi => vec!["MULTI".to_owned()],
            ItemKind::Exec => vec!["EXEC".to_owned()],
        };
        self.items.push(Recorded {
            offset: item.offset,
            db: item.db,
            in_transaction: item.in_transaction,
            args,
        });
        Ok(if (self.done)(&self.items, item.offset) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    fn idle(&mut self, offset: u64) -> Result<Flow, SinkError> {
        if Instant::now() > self.deadline {
            return Err(format!(
                "gave up waiting at offset {offset} after {} items: {:?}",
                self.items.len(),
                self.items.last()
            )
            .into());
        }
        Ok(if (self.done)(&self.items, offset) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

fn info_field(conn: &mut redis::Connection, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg("replication").query(conn).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {info}"))
        .trim()
        .to_owned()
}

fn master_offset(conn: &mut redis::Connection) -> u64 {
    info_field(conn, "master_repl_offset").parse().unwrap()
}

/// Waits until the server lists `n` replicas (ours included or gone).
fn wait_for_replicas(conn: &mut redis::Connection, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while info_field(conn, "connected_slaves").parse::<u64>().unwrap() != n {
        assert!(
            Instant::now() < deadline,
            "the server never listed {n} replicas"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn server_with(extra: &[(&str, &str)]) -> TestServer {
    TestServer::start_with(ServerOptions {
        extra: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ServerOptions::default()
    })
}

/// A full or partial start against `server`, with the RDB's events.
fn start(
    server: &TestServer,
    resume_from: Option<&Checkpoint>,
) -> (ReplicationClient, Start, Vec<Event>) {
    let connected = ReplicationClient::connect(
        &server.addr().to_string(),
        &Auth::none(),
        ClientOptions::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let (client, start) = connected
        .psync(resume_from, &mut |event| {
            events.push(event);
            Ok(())
        })
        .unwrap();
    (client, start, events)
}

fn set(conn: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET").arg(key).arg(value).exec(conn).unwrap();
}

/// Everything read after `start` must be a command of the stream.
fn assert_offsets_strictly_increase(items: &[Recorded], start: u64) {
    let mut previous = start;
    for item in items {
        assert!(item.offset > previous, "{item:?} after offset {previous}");
        previous = item.offset;
    }
}

#[test]
fn a_full_sync_then_the_command_stream_with_offsets_up_to_the_masters() {
    let server = server_with(&[("repl-diskless-sync", "no")]);
    let mut conn = connect(&server);
    set(&mut conn, "s", "string");
    redis::cmd("RPUSH")
        .arg("l")
        .arg(&["a", "b"])
        .exec(&mut conn)
        .unwrap();
    redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("SADD")
        .arg("set")
        .arg("m")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("ZADD")
        .arg("z")
        .arg(2.5)
        .arg("m")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("XADD")
        .arg("x")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .exec(&mut conn)
        .unwrap();

    let (mut client, start, events) = start(&server, None);
    let Start::Full {
        replid,
        offset,
        reason,
        rdb,
    } = &start
    else {
        panic!("a first sync is full: {start:?}");
    };
    assert_eq!(*reason, FullSyncReason::NoCheckpoint);
    assert_eq!(replid, &info_field(&mut conn, "master_replid"));
    assert_eq!(rdb.repl_offset, Some(*offset as i64));
    let keys = fold_keys(&events);
    let kinds: BTreeMap<_, _> = keys
        .iter()
        .map(|((_, key), k)| (String::from_utf8(key.clone()).unwrap(), k.start.kind))
        .collect();
    assert_eq!(kinds["s"], ValueKind::String);
    assert_eq!(kinds["l"], ValueKind::List);
    assert_eq!(kinds["h"], ValueKind::Hash);
    assert_eq!(kinds["set"], ValueKind::Set);
    assert_eq!(kinds["z"], ValueKind::ZSet);
    assert_eq!(kinds["x"], ValueKind::Stream);
    assert_eq!(
        keys[&(0, bytes("l"))].value,
        Value::List(vec![bytes("a"), bytes("b")])
    );

    // Writes during streaming: plain, in another database, and in a transaction.
    for i in 0..20 {
        set(&mut conn, &format!("k{i}"), &i.to_string());
    }
    redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .cmd("INCR")
        .arg("n")
        .exec(&mut conn)
        .unwrap();
    redis::cmd("SELECT").arg(2).exec(&mut conn).unwrap();
    set(&mut conn, "in-db-2", "yes");
    let mut sink = recorder(|items, _| {
        items
            .last()
            .is_some_and(|i| i.is(&["SET", "in-db-2", "yes"]))
    });
    client.stream(&mut sink).unwrap();
    let items = sink.items;
    assert_offsets_strictly_increase(&items, *offset);
    let sets: Vec<_> = items
        .iter()
        .filter(|i| i.args[0] == "SET" && i.args[1].starts_with('k'))
        .map(|i| (i.db, i.args[1].clone(), i.args[2].clone()))
        .collect();
    let expected: Vec<_> = (0..20)
        .map(|i| (0, format!("k{i}"), i.to_string()))
        .collect();
    assert_eq!(sets, expected);
    let multi = items.iter().position(|i| i.is(&["MULTI"])).unwrap();
    assert!(items[multi + 1].is(&["INCR", "n"]) && items[multi + 1].in_transaction);
    assert!(items[multi + 2].is(&["INCR", "n"]) && items[multi + 2].in_transaction);
    assert!(items[multi + 3].is(&["EXEC"]) && !items[multi + 3].in_transaction);
    let last = items.last().unwrap();
    assert_eq!(last.db, 2);
    assert!(items[items.len() - 2].is(&["SELECT", "2"]));

    // Once writes stop, the client has consumed exactly what the master has written.
    let mut sink = recorder(|_, offset| offset == master_offset(&mut conn));
    let end = client.stream(&mut sink).unwrap();
    assert_eq!(end, client.offset());
    assert_eq!(client.offset(), master_offset(&mut conn));
}

#[test]
fn a_checkpoint_continues_the_stream_without_losing_or_repeating_a_command() {
    let server = TestServer::start();
    let mut conn = connect(&server);
    let mut db3 = redis::Client::open(format!("{}3", server.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let state = server.data_dir().join("replication-state");
    let store = CheckpointStore::open(&state, "source-a").unwrap();
    assert_eq!(store.load().unwrap(), None);

    let (mut client, first_start, _) = start(&server, None);
    for i in 0..100 {
        redis::cmd("RPUSH")
            .arg("list")
            .arg(i)
            .exec(&mut db3)
            .unwrap();
    }
    let pushes = |items: &[Recorded]| items.iter().filter(|i| i.args[0] == "RPUSH").count();
    let mut sink = recorder(|items, _| pushes(items) == 40);
    client.stream(&mut sink).unwrap();
    let applied = client.position();
    assert_eq!(applied.offset, sink.items.last().unwrap().offset);
    assert_eq!(applied.db, 3);
    assert_eq!(applied.replid, first_start.replid());
    store.store(&applied).unwrap();
    let mut seen: Vec<String> = sink
        .items
        .iter()
        .filter(|i| i.args[0] == "RPUSH")
        .map(|i| i.args[2].clone())
        .collect();
    drop(client);
    wait_for_replicas(&mut conn, 0);

    for i in 100..160 {
        redis::cmd("RPUSH")
            .arg("list")
            .arg(i)
            .exec(&mut db3)
            .unwrap();
    }
    let checkpoint = store.load().unwrap().unwrap();
    assert_eq!(checkpoint, applied);
    let (mut client, start, events) = start(&server, Some(&checkpoint));
    assert_eq!(
        start,
        Start::Continue {
            replid: checkpoint.replid.clone(),
            offset: checkpoint.offset,
            replid_changed: false,
        }
    );
    assert!(events.is_empty(), "no RDB on a partial resync");
    let mut sink = recorder(|items, _| pushes(items) == 120);
    client.stream(&mut sink).unwrap();
    assert_offsets_strictly_increase(&sink.items, checkpoint.offset);
    // The source does not repeat SELECT on a continue: the checkpoint's database carries on.
    assert!(sink.items.iter().all(|i| i.db == 3));
    seen.extend(
        sink.items
            .iter()
            .filter(|i| i.args[0] == "RPUSH")
            .map(|i| i.args[2].clone()),
    );
    let expected: Vec<String> = (0..160).map(|i: i32| i.to_string()).collect();
    assert_eq!(seen, expected);
    let mut sink = recorder(|_, offset| offset == master_offset(&mut conn));
    client.stream(&mut sink).unwrap();
}

#[test]
fn a_checkpoint_older_than_the_backlog_gets_a_full_resync_that_says_why() {
    let server = server_with(&[("repl-backlog-size", "16kb")]);
    let mut conn = connect(&server);
    let (mut client, _, _) = start(&server, None);
    set(&mut conn, "before", "1");
    let mut sink = recorder(|items, _| items.iter().any(|i| i.is(&["SET", "before", "1"])));
    client.stream(&mut sink).unwrap();
    let checkpoint = client.position();
    drop(client);
    wait_for_replicas(&mut conn, 0);

    // Far more than the backlog holds.
    let value = "v".repeat(1024);
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("SET").arg(format!("big{i}")).arg(&value).ignore();
    }
    pipe.exec(&mut conn).unwrap();

    let (mut client, start, events) = start(&server, Some(&checkpoint));
    let Start::Full { reason, offset, .. } = &start else {
        panic!("the backlog no longer holds the checkpoint: {start:?}");
    };
    assert_eq!(
        *reason,
        FullSyncReason::CheckpointRefused {
            asked: checkpoint.clone()
        }
    );
    assert!(*offset > checkpoint.offset + 300 * 1024);
    assert_eq!(fold_keys(&events).len(), 301);
    let mut sink = recorder(|_, offset| offset == master_offset(&mut conn));
    client.stream(&mut sink).unwrap();
}

/// Makes `replica` follow `master` and waits until the link is up.
fn follow(replica: &TestServer, master: &TestServer) {
    let mut on_replica = connect(replica);
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .exec(&mut on_replica)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    while info_field(&mut on_replica, "master_link_status") != "up" {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_replica_can_be_the_source_and_its_stream_continues_in_the_masters_database() {
    let master = TestServer::start();
    let replica = TestServer::start();
    let mut on_master = redis::Client::open(format!("{}5", master.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut on_replica = connect(&replica);
    // Following first: a master selects the database anew after each full resynchronisation.
    follow(&replica, &master);
    set(&mut on_master, "before", "1");
    let written = master_offset(&mut on_master);
    let deadline = Instant::now() + Duration::from_secs(3);
    while master_offset(&mut on_replica) < written {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(10));
    }

    let (mut client, start, events) = start(&replica, None);
    assert!(start.is_full());
    // A replica serves its master's history under the master's replication id.
    assert_eq!(start.replid(), info_field(&mut on_master, "master_replid"));
    assert!(fold_keys(&events).contains_key(&(5, bytes("before"))));
    // The master already selected database 5 for its stream, so no SELECT precedes this
    // write: the client knows the database from the RDB's repl-stream-db.
    set(&mut on_master, "after", "2");
    let mut sink = recorder(|items, _| items.iter().any(|i| i.is(&["SET", "after", "2"])));
    client.stream(&mut sink).unwrap();
    let after = sink.items.last().unwrap();
    assert_eq!(after.db, 5, "{:?}", sink.items);
    let mut sink = recorder(|_, offset| offset == master_offset(&mut on_replica));
    client.stream(&mut sink).unwrap();
}

#[test]
fn credentials_and_permissions_are_refused_with_errors_naming_the_source() {
    let server = server_with(&[("requirepass", "secret")]);
    let addr = server.addr().to_string();
    let options = ClientOptions::default;

    let error = ReplicationClient::connect(&addr, &Auth::password("wrong"), options()).unwrap_err();
    assert!(
        matches!(&error, ReplicationError::AuthRefused { reply, .. } if reply.starts_with("WRONGPASS")),
        "{error:?}"
    );
    assert!(error.to_string().contains(&addr), "{error}");
    assert!(!error.is_transient());

    let error = ReplicationClient::connect(&addr, &Auth::none(), options()).unwrap_err();
    assert!(
        matches!(error, ReplicationError::AuthRequired { .. }),
        "{error:?}"
    );

    // An ACL user that may not PSYNC.
    let mut conn = redis::Client::open(format!("redis://:secret@{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("ACL")
        .arg(&[
            "SETUSER", "nosync", "on", ">pw", "~*", "+@all", "-psync", "-sync",
        ])
        .exec(&mut conn)
        .unwrap();
    let connected =
        ReplicationClient::connect(&addr, &Auth::user("nosync", "pw"), options()).unwrap();
    let error = connected
        .psync(None, &mut |_: Event| Ok(()))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&error, ReplicationError::Refused { command: "PSYNC", reply, .. } if reply.starts_with("NOPERM")),
        "{error:?}"
    );

    // Nothing listening.
    let port = cinnabar_testkit::reserve_port();
    let nowhere = format!("127.0.0.1:{}", port.port());
    let error = ReplicationClient::connect(&nowhere, &Auth::none(), options()).unwrap_err();
    assert!(
        matches!(error, ReplicationError::Connect { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&nowhere), "{error}");
    assert!(error.is_transient());
}

#[test]
fn a_diskless_master_starts_the_stream_after_the_first_ack() {
    let server = server_with(&[
        ("repl-diskless-sync", "yes"),
        ("repl-diskless-sync-delay", "0"),
    ]);
    let mut conn = connect(&server);
    set(&mut conn, "before", "1");
    redis::cmd("HSET")
        .arg("h")
        .arg(&["a", "1", "b", "2"])
        .exec(&mut conn)
        .unwrap();
    let (mut client, start, events) = start(&server, None);
    let Start::Full { rdb, .. } = &start else {
        panic!("{start:?}");
    };
    assert!(rdb.bytes > 0);
    assert_eq!(fold_keys(&events).len(), 2);
    set(&mut conn, "after", "2");
    let mut sink = recorder(|items, _| items.iter().any(|i| i.is(&["SET", "after", "2"])));
    client.stream(&mut sink).unwrap();
    assert_offsets_strictly_increase(&sink.items, start.offset());
    let mut sink = recorder(|_, offset| offset == master_offset(&mut conn));
    client.stream(&mut sink).unwrap();
}

#[test]
fn wait_counts_the_client_once_the_caller_reports_the_write_applied() {
    let server = TestServer::start();
    let mut conn = connect(&server);
    let (mut client, _, _) = start(&server, None);
    let applied = client.applied_offset();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = {
        let received = Arc::clone(&received);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = recorder(|_, offset| {
                received.store(offset, Ordering::SeqCst);
                stop.load(Ordering::SeqCst)
            });
            sink.deadline = Instant::now() + Duration::from_secs(10);
            client.stream(&mut sink).unwrap();
            client
        })
    };
    set(&mut conn, "k", "v");
    let written = master_offset(&mut conn);
    let deadline = Instant::now() + Duration::from_secs(3);
    while received.load(Ordering::SeqCst) < written {
        assert!(Instant::now() < deadline, "the write never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Received but not applied: the client must not claim it.
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(300).query(&mut conn).unwrap();
    assert_eq!(acked, 0);
    applied.advance_to(written);
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query(&mut conn)
        .unwrap();
    assert_eq!(acked, 1);

    stop.store(true, Ordering::SeqCst);
    let mut client = streaming.join().unwrap();
    // WAIT made the master send REPLCONF GETACK into the stream: counted, never delivered.
    let mut sink = recorder(|_, offset| offset == master_offset(&mut conn));
    client.stream(&mut sink).unwrap();
    assert!(sink.items.is_empty(), "{:?}", sink.items);
}

#[test]
fn after_a_failover_the_promoted_replica_continues_under_its_new_replication_id() {
    let master = TestServer::start();
    let replica = TestServer::start();
    follow(&replica, &master);
    let mut on_master = connect(&master);
    let mut on_replica = connect(&replica);
    let (mut client, first, _) = start(&master, None);
    for i in 0..10 {
        set(&mut on_master, &format!("k{i}"), "before");
    }
    let mut sink = recorder(|items, _| items.iter().any(|i| i.is(&["SET", "k9", "before"])));
    client.stream(&mut sink).unwrap();
    let checkpoint = client.position();
    drop(client);
    // The replica must hold everything up to the checkpoint before it is promoted.
    let deadline = Instant::now() + Duration::from_secs(3);
    while master_offset(&mut on_replica) < checkpoint.offset {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(10));
    }
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut on_replica)
        .unwrap();
    let promoted_replid = info_field(&mut on_replica, "master_replid");
    assert_ne!(promoted_replid, first.replid());

    let (mut client, start, events) = start(&replica, Some(&checkpoint));
    assert_eq!(
        start,
        Start::Continue {
            replid: promoted_replid,
            offset: checkpoint.offset,
            replid_changed: true,
        }
    );
    assert!(events.is_empty());
    set(&mut on_replica, "k0", "after");
    let mut sink = recorder(|items, _| items.iter().any(|i| i.is(&["SET", "k0", "after"])));
    client.stream(&mut sink).unwrap();
    assert_offsets_strictly_increase(&sink.items, checkpoint.offset);
    let mut sink = recorder(|_, offset| offset == master_offset(&mut on_replica));
    client.stream(&mut sink).unwrap();
    assert_eq!(client.replid(), start.replid());
}

#[test]
fn a_source_that_dies_mid_rdb_is_a_disconnection_in_the_rdb_stage() {
    let mut server = server_with(&[("repl-diskless-sync", "no"), ("rdbcompression", "no")]);
    let mut conn = connect(&server);
    // About 20 MB of RDB, far more than the socket buffers hold.
    let value = "x".repeat(400);
    for batch in 0..10 {
        let mut pipe = redis::pipe();
        for i in 0..5000 {
            pipe.cmd("SET")
                .arg(format!("k{batch}-{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.exec(&mut conn).unwrap();
    }
    let connected = ReplicationClient::connect(
        &server.addr().to_string(),
        &Auth::none(),
        ClientOptions::default(),
    )
    .unwrap();
    let mut killed = false;
    let error = connected
        .psync(None, &mut |event: Event| {
            if matches!(event, Event::KeyStart(_)) && !killed {
                server.kill();
                killed = true;
            }
            Ok(())
        })
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            error,
            ReplicationError::Disconnected {
                stage: Stage::Rdb,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
}
