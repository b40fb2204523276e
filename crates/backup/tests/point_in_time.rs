//! The continuous archive and restores to a point in time, against real redis-server clusters
//! and a real S3-compatible server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cinnabar_backup::archive::{ArchiveRequest, run};
use cinnabar_backup::manifest::now_ms;
use cinnabar_backup::restore::{RestoreRequest, restore};
use cinnabar_backup::{BackupError, Store, StoreOptions, catalog};
use cinnabar_replication::verify::Endpoint;
use cinnabar_testkit::{S3Server, TestCluster};

mod common;
use common::{cluster, cluster_connection as conn, s3_options, seed};

fn get(conn: &mut redis::cluster::ClusterConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
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

    let stop = AtomicBool::new(false);
    let request = ArchiveRequest::new(Endpoint::new(seed(&source)), "orders");
    std::thread::scope(|scope| {
        let (base_tx, base_rx) = mpsc::channel();
        let (store, request, stop) = (&store, &request, &stop);
        let archiver = scope.spawn(move || {
            run(store, request, stop, &mut |manifest| {
                let _ = base_tx.send(manifest.clone());
            })
        });
        let base = base_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a base backup");
        assert_eq!(base.shards.len(), 3);

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
        std::thread::sleep(Duration::from_millis(300));
        let chosen = now_ms();
        std::thread::sleep(Duration::from_millis(300));
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

        // RPO: a write is restorable about a second after it was acknowledged.
        std::thread::sleep(Duration::from_millis(1300));
        let latest = cluster(5, 0);
        let report = restore(
            store,
            &Endpoint::new(seed(&latest)),
            &RestoreRequest {
                at_ms: Some(last_write),
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

        stop.store(true, Ordering::SeqCst);
        archiver.join().unwrap().unwrap();

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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("file://{}", dir.path().display()),
        StoreOptions::default(),
    )
    .unwrap();
    let mut source = cluster(3, 1);
    let stop = AtomicBool::new(false);
    let mut request = ArchiveRequest::new(Endpoint::new(seed(&source)), "orders");
    request.segment_every = Duration::from_millis(200);
    let (base_tx, base_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let (store_ref, request, stop) = (&store, &request, &stop);
        let archiver = scope.spawn(move || {
            run(store_ref, request, stop, &mut |manifest| {
                let _ = base_tx.send(manifest.clone());
            })
        });
        let base = base_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a base backup");
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
        let last_write = now_ms();
        // The archive catches up from the masters (PSYNC continues where it stopped).
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = cluster(3, 0);
        loop {
            let attempt = restore(
                store_ref,
                &Endpoint::new(seed(&target)),
                &RestoreRequest {
                    at_ms: Some(last_write),
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
        stop.store(true, Ordering::SeqCst);
        archiver.join().unwrap().unwrap();
    });
}
