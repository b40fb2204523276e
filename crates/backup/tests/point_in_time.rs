//! The continuous archive and restores to a point in time, against real redis-server clusters
//! and a real S3-compatible server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cinnabar_backup::archive::ArchiveRequest;
use cinnabar_backup::manifest::now_ms;
use cinnabar_backup::restore::{RestoreRequest, restore};
use cinnabar_backup::{BackupError, Store, catalog};
use cinnabar_replication::verify::Endpoint;
use cinnabar_testkit::{S3Server, TestCluster};

mod common;
use common::{Archive, cluster, cluster_connection as conn, file_store, s3_options, seed};

/// How late the archiver may read a write it is sent: a restore to an acknowledgement's time
/// plus this holds the write. A millisecond on a quiet machine; on a loaded CI machine the
/// archiver's thread can wait for a core far longer, so the tests leave a second (and keep the
/// writes that must stay out a second after the chosen time).
const ARCHIVER_LAG_MS: u64 = 1000;

fn get(conn: &mut redis::cluster::ClusterConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

/// Sets the flag when dropped (at the end of a scope, or when a test panics inside it): a
/// failed assertion must end a test's own threads, or the scope would wait for them forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A MULTI/EXEC on the master that owns the keys' slot.
fn transaction(cluster: &TestCluster, pairs: &[(&str, &str)]) {
    for server in cluster.servers() {
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value) in pairs {
            pipe.cmd("SET").arg(*key).arg(*value).ignore();
        }
        if pipe.exec(&mut conn).is_ok() {
            return;
        }
    }
    panic!("no master took the transaction");
}

#[test]
fn restore_at_a_time_has_the_writes_before_it_and_none_after() {
    let s3 = S3Server::start();
    let store = Store::open(&s3.url("pitr"), s3_options(&s3)).unwrap();
    let source = cluster(3, 1);
    let mut writer = conn(&source);
    redis::cmd("SET")
        .arg("before-base")
        .arg("1")
        .exec(&mut writer)
        .unwrap();

    let ticks_stop = AtomicBool::new(false);
    let request = ArchiveRequest::new(Endpoint::new(seed(&source)), "orders");
    let latest = cluster(5, 0);
    std::thread::scope(|scope| {
        let _ticks_stop_on_panic = StopOnDrop(&ticks_stop);
        let (archive, base) = Archive::start(scope, &store, &request);
        let store = &store;
        assert_eq!(base.shards.len(), 3);
        // A write on every shard every 100 ms, as on a busy cluster: a quiet shard's coverage
        // only moves with its 10-second heartbeat, and a restore waits for every shard.
        let ticker = {
            let (ticks_stop, source) = (&ticks_stop, &source);
            scope.spawn(move || {
                let mut conn = conn(source);
                while !ticks_stop.load(Ordering::SeqCst) {
                    // {b}, {c} and {a} hash to the first, second and third third of the slots.
                    for key in ["tick:{b}", "tick:{c}", "tick:{a}"] {
                        redis::cmd("INCR").arg(key).exec(&mut conn).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };

        // Writes before the chosen time, in every shard, a transaction among them.
        for i in 0..300 {
            redis::cmd("SET")
                .arg(format!("early:{i}"))
                .arg(i)
                .exec(&mut writer)
                .unwrap();
        }
        redis::cmd("SET")
            .arg("flag")
            .arg("early")
            .exec(&mut writer)
            .unwrap();
        transaction(&source, &[("{tx}a", "1"), ("{tx}b", "2")]);
        std::thread::sleep(Duration::from_millis(1000));
        let chosen = now_ms();
        std::thread::sleep(Duration::from_millis(1000));
        // Writes after it.
        redis::cmd("SET")
            .arg("flag")
            .arg("late")
            .exec(&mut writer)
            .unwrap();
        redis::cmd("SET")
            .arg("late-only")
            .arg("1")
            .exec(&mut writer)
            .unwrap();
        redis::cmd("DEL").arg("early:7").exec(&mut writer).unwrap();
        let last_write = now_ms();
        // A receive stamp trails the acknowledgement by the archiver's lag, so a restore to
        // the very millisecond of the acknowledgement may miss it (archive.rs says why).
        let restore_to = last_write + ARCHIVER_LAG_MS;

        // RPO: how long until the archive covers the last write (a segment is cut every
        // second; on a loaded CI machine an upload may take a little longer, so poll).
        let covered_by = |t: u64| {
            cinnabar_backup::archive::coverage(store, &base)
                .unwrap()
                .is_some_and(|c| c >= t)
        };
        while !covered_by(last_write) {
            assert!(
                now_ms() < last_write + 5_000,
                "the archive never covered the write"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let rpo_ms = now_ms() - last_write;
        eprintln!("restorable {rpo_ms} ms after the last write");
        assert!(rpo_ms <= 3_000, "RPO {rpo_ms} ms");
        while !covered_by(restore_to) {
            assert!(now_ms() < restore_to + 5_000, "the archive stopped");
            std::thread::sleep(Duration::from_millis(50));
        }
        let report = restore(
            store,
            &Endpoint::new(seed(&latest)),
            &RestoreRequest {
                at_ms: Some(restore_to),
                force: true,
                ..RestoreRequest::default()
            },
        )
        .unwrap();
        assert_eq!(report.backup, base.name);
        let mut latest_conn = conn(&latest);
        assert_eq!(get(&mut latest_conn, "flag").as_deref(), Some("late"));
        assert_eq!(get(&mut latest_conn, "late-only").as_deref(), Some("1"));
        assert_eq!(get(&mut latest_conn, "early:7"), None);

        // A time the archive has not reached yet is refused with how far it reaches.
        let error = restore(
            store,
            &Endpoint::new(seed(&cluster(1, 0))),
            &RestoreRequest {
                at_ms: Some(now_ms() + 60_000),
                ..RestoreRequest::default()
            },
        )
        .unwrap_err();
        assert!(matches!(error, BackupError::Archive(_)), "{error}");
        assert!(error.to_string().contains("reaches only"), "{error}");

        ticks_stop.store(true, Ordering::SeqCst);
        ticker.join().unwrap();
        archive.stop();

        let earlier = cluster(5, 0);
        let started = Instant::now();
        let report = restore(
            store,
            &Endpoint::new(seed(&earlier)),
            &RestoreRequest {
                at_ms: Some(chosen),
                ..RestoreRequest::default()
            },
        )
        .unwrap();
        eprintln!("restore --at: {report:?} in {:?}", started.elapsed());
        let mut earlier_conn = conn(&earlier);
        assert_eq!(get(&mut earlier_conn, "flag").as_deref(), Some("early"));
        assert_eq!(get(&mut earlier_conn, "late-only"), None);
        assert_eq!(get(&mut earlier_conn, "before-base").as_deref(), Some("1"));
        for i in 0..300 {
            assert_eq!(
                get(&mut earlier_conn, &format!("early:{i}")),
                Some(i.to_string()),
                "early:{i}"
            );
        }
        assert_eq!(get(&mut earlier_conn, "{tx}b").as_deref(), Some("2"));
        assert!(report.commands >= 301, "{report:?}");
    });
    // The archive's base is an ordinary, listed backup.
    assert_eq!(catalog::list(&store).unwrap().len(), 1);
}

#[test]
fn the_archive_resumes_when_the_node_it_reads_dies() {
    let (_dir, store) = file_store();
    let mut source = cluster(3, 1);
    let mut request = ArchiveRequest::new(Endpoint::new(seed(&source)), "orders");
    request.segment_every = Duration::from_millis(200);
    std::thread::scope(|scope| {
        let (archive, base) = Archive::start(scope, &store, &request);
        let mut writer = conn(&source);
        for i in 0..200 {
            redis::cmd("SET")
                .arg(format!("before:{i}"))
                .arg(i)
                .exec(&mut writer)
                .unwrap();
        }
        // Kill the replica the archive reads every shard from, one after another.
        for shard in &base.shards {
            let addr: cinnabar_cluster::NodeAddr = shard.read_from.parse().unwrap();
            source.server_by_addr_mut(&addr).unwrap().kill();
        }
        for i in 0..200 {
            redis::cmd("SET")
                .arg(format!("after:{i}"))
                .arg(i)
                .exec(&mut writer)
                .unwrap();
        }
        // A moment after the last acknowledgement, for the replication lag.
        let restore_to = now_ms() + ARCHIVER_LAG_MS;
        // The archive catches up from the masters (PSYNC continues where it stopped).
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = cluster(3, 0);
        loop {
            let attempt = restore(
                &store,
                &Endpoint::new(seed(&target)),
                &RestoreRequest {
                    at_ms: Some(restore_to),
                    force: true,
                    ..RestoreRequest::default()
                },
            );
            match attempt {
                Ok(report) => {
                    assert_eq!(report.backup, base.name, "the same generation went on");
                    break;
                }
                Err(BackupError::Archive(message)) if Instant::now() < deadline => {
                    eprintln!("not yet: {message}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut restored = conn(&target);
        for i in 0..200 {
            assert_eq!(
                get(&mut restored, &format!("before:{i}")),
                Some(i.to_string())
            );
            assert_eq!(
                get(&mut restored, &format!("after:{i}")),
                Some(i.to_string())
            );
        }
        archive.stop();
    });
}

#[test]
fn a_new_base_on_a_schedule_leaves_no_time_that_cannot_be_restored() {
    let (_dir, store) = file_store();
    let source = cluster(3, 0);
    let mut request = ArchiveRequest::new(Endpoint::new(seed(&source)), "orders");
    request.segment_every = Duration::from_millis(100);
    request.base_every = Some(Duration::from_millis(1500));
    // (key, acknowledged at) of writes every 100 ms across two generation changes.
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let mut bases = Vec::new();
    std::thread::scope(|scope| {
        let (archive, base) = Archive::start(scope, &store, &request);
        bases.push(base);
        let mut writer = conn(&source);
        let mut i = 0;
        while bases.len() < 3 {
            let key = format!("tick:{i}");
            redis::cmd("SET")
                .arg(&key)
                .arg(i)
                .exec(&mut writer)
                .unwrap();
            acknowledged.push((key, now_ms()));
            i += 1;
            std::thread::sleep(Duration::from_millis(300));
            if let Ok(base) = archive.bases.try_recv() {
                bases.push(base);
            }
            assert!(i < 100, "the schedule did not start two more generations");
        }
        // Let the last segments reach the store.
        std::thread::sleep(Duration::from_millis(500));
        archive.stop();
    });
    // A generation streams until its successor's base is complete.
    for pair in bases.windows(2) {
        let (older, newer) = (&pair[0], &pair[1]);
        let reached = cinnabar_backup::archive::coverage(&store, older)
            .unwrap()
            .expect("the older generation archived something");
        assert!(
            reached >= newer.taken_ms(),
            "{} covers until {reached}, {} holds data from {}",
            older.name,
            newer.name,
            newer.taken_ms()
        );
    }
    // Any moment restores the writes acknowledged before it and none after. "Before" allows
    // the archive's lag behind the master (a command is stamped when the archive reads it, and
    // reading waits while a segment uploads): the moment is 150 ms after an acknowledgement,
    // the next write 300 ms after it.
    let target = cluster(3, 0);
    let samples = [
        acknowledged.len() / 4,
        acknowledged.len() / 2,
        acknowledged.len() * 3 / 4,
        acknowledged.len() - 2,
    ];
    for sample in samples {
        let (last_key, at) = &acknowledged[sample];
        let mut target_conn = conn(&target);
        for server in target.servers() {
            let mut node = redis::Client::open(server.url())
                .unwrap()
                .get_connection()
                .unwrap();
            redis::cmd("FLUSHALL").exec(&mut node).unwrap();
        }
        restore(
            &store,
            &Endpoint::new(seed(&target)),
            &RestoreRequest {
                at_ms: Some(*at + 150),
                ..RestoreRequest::default()
            },
        )
        .unwrap_or_else(|e| panic!("restore --at the ack of {last_key}: {e}"));
        assert_eq!(get(&mut target_conn, last_key), Some(sample.to_string()));
        let next = format!("tick:{}", sample + 1);
        assert_eq!(get(&mut target_conn, &next), None, "{next} came after");
    }
}

#[test]
fn an_archive_outlives_an_outage_of_its_store_and_the_outage_is_never_restored_silently() {
    let mut s3 = S3Server::start();
    let store = Store::open(&s3.url("outage"), s3_options(&s3)).unwrap();
    let source = cluster(1, 0);
    let mut writer = conn(&source);
    let set = |writer: &mut redis::cluster::ClusterConnection, key: &str| {
        redis::cmd("SET").arg(key).arg("1").exec(writer).unwrap();
    };
    let request = ArchiveRequest::new(Endpoint::new(seed(&source)), "outage");
    std::thread::scope(|scope| {
        let (archive, first) = Archive::start(scope, &store, &request);
        let store = &store;
        set(&mut writer, "before");
        std::thread::sleep(Duration::from_millis(1500));

        // The store goes away while writes go on: uploads fail, the archive keeps trying.
        s3.stop();
        set(&mut writer, "during");
        std::thread::sleep(Duration::from_millis(300));
        let during = now_ms();
        std::thread::sleep(Duration::from_secs(3));
        s3.restart();
        set(&mut writer, "after");
        // A new generation (a fresh base) covers what the outage could not upload.
        let second = archive
            .bases
            .recv_timeout(Duration::from_secs(60))
            .expect("a new base once the store is back")
            .name;
        assert_ne!(second, first.name);
        set(&mut writer, "after-base");
        // A moment after the last write (coverage reaches a write once its segment is cut).
        let restore_to = now_ms() + ARCHIVER_LAG_MS;

        let target = cluster(1, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = restore(
                store,
                &Endpoint::new(seed(&target)),
                &RestoreRequest {
                    at_ms: Some(restore_to),
                    force: true,
                    ..RestoreRequest::default()
                },
            );
            match attempt {
                Ok(_) => break,
                Err(BackupError::Archive(message) | BackupError::NotFound(message))
                    if Instant::now() < deadline =>
                {
                    eprintln!("not yet: {message}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut restored = conn(&target);
        for key in ["before", "during", "after", "after-base"] {
            assert_eq!(get(&mut restored, key).as_deref(), Some("1"), "{key}");
        }
        // A moment inside the outage is refused, never restored without the writes it missed.
        let refused = restore(
            store,
            &Endpoint::new(seed(&cluster(1, 0))),
            &RestoreRequest {
                at_ms: Some(during),
                ..RestoreRequest::default()
            },
        )
        .unwrap_err();
        assert!(matches!(refused, BackupError::Archive(_)), "{refused}");
        assert!(
            refused
                .to_string()
                .contains(&format!("the next base, {second}")),
            "{refused}"
        );
        eprintln!("inside the outage: {refused}");
        archive.stop();
    });
}

#[test]
fn quiet_shards_keep_pace_with_a_written_one() {
    let (_dir, store) = file_store();
    let source = cluster(3, 0);
    let ticks_stop = AtomicBool::new(false);
    let request = ArchiveRequest::new(Endpoint::new(seed(&source)), "pace");
    std::thread::scope(|scope| {
        let _ticks_stop_on_panic = StopOnDrop(&ticks_stop);
        let (archive, base) = Archive::start(scope, &store, &request);
        // Writes on one shard only ({b} hashes to the first third of the slots).
        let ticker = {
            let (ticks_stop, source) = (&ticks_stop, &source);
            scope.spawn(move || {
                let mut conn = conn(source);
                while !ticks_stop.load(Ordering::SeqCst) {
                    redis::cmd("INCR").arg("tick:{b}").exec(&mut conn).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        // Every shard's coverage passes a moment a second from now within a few seconds: the
        // two quiet shards upload with the written one, not only with their 10 s heartbeat.
        let mark = now_ms() + 1000;
        let started = Instant::now();
        while cinnabar_backup::archive::coverage(&store, &base)
            .unwrap()
            .is_none_or(|c| c < mark)
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the quiet shards did not keep pace"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "every shard covered the mark {} ms after it was set",
            started.elapsed().as_millis().saturating_sub(1000)
        );
        ticks_stop.store(true, Ordering::SeqCst);
        ticker.join().unwrap();
        archive.stop();
    });
}
