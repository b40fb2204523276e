//! Backups and restores against real redis-server clusters and a real S3-compatible server
//! (`s3s-fs`), and the same against `file://`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cinnabar_backup::restore::{RestoreRequest, restore};
use cinnabar_backup::snapshot::{BackupRequest, backup};
use cinnabar_backup::{BackupError, Store, StoreOptions, catalog};
use cinnabar_replication::verify::{Difference, Endpoint, VerifyOptions, verify};
use cinnabar_testkit::{S3Server, Target, TestCluster, TestGroup, Workload};

mod common;
use common::{cluster, cluster_connection, connection, file_store, s3_options, seed};

/// Keys of every type, some with TTLs, one list too big to be restored in one piece.
fn write_fixture(cluster: &TestCluster) -> Vec<String> {
    let mut conn = cluster_connection(cluster);
    let mut keys = Vec::new();
    for i in 0..400 {
        let key = format!("fixture:str:{i}");
        redis::cmd("SET")
            .arg(&key)
            .arg(format!("value-{i}"))
            .exec(&mut conn)
            .unwrap();
        if i % 3 == 0 {
            redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(3_600_000)
                .exec(&mut conn)
                .unwrap();
        }
        keys.push(key);
        let key = format!("fixture:hash:{i}");
        redis::cmd("HSET")
            .arg(&key)
            .arg("a")
            .arg(i)
            .arg("b")
            .arg("x")
            .exec(&mut conn)
            .unwrap();
        keys.push(key);
        let key = format!("fixture:list:{i}");
        redis::cmd("RPUSH")
            .arg(&key)
            .arg(1)
            .arg(2)
            .arg(i)
            .exec(&mut conn)
            .unwrap();
        keys.push(key);
        let key = format!("fixture:set:{i}");
        redis::cmd("SADD")
            .arg(&key)
            .arg("m")
            .arg(i)
            .exec(&mut conn)
            .unwrap();
        keys.push(key);
        let key = format!("fixture:zset:{i}");
        redis::cmd("ZADD")
            .arg(&key)
            .arg(1.5)
            .arg("a")
            .arg(i)
            .arg("b")
            .exec(&mut conn)
            .unwrap();
        keys.push(key);
    }
    redis::cmd("XADD")
        .arg("fixture:stream")
        .arg("*")
        .arg("f")
        .arg("v")
        .exec(&mut conn)
        .unwrap();
    keys.push("fixture:stream".to_owned());
    let big: Vec<String> = (0..60_000).map(|i| format!("element-{i}")).collect();
    for chunk in big.chunks(5_000) {
        redis::cmd("RPUSH")
            .arg("fixture:biglist")
            .arg(chunk)
            .exec(&mut conn)
            .unwrap();
    }
    keys.push("fixture:biglist".to_owned());
    keys
}

/// `count` string keys of `size` bytes through one node (a pipeline of SETs: a one-master
/// cluster owns every slot).
fn fill(conn: &mut redis::Connection, count: usize, size: usize) {
    let value = "v".repeat(size);
    for batch in 0..count.div_ceil(1000) {
        let mut pipe = redis::pipe();
        for j in 0..1000.min(count - batch * 1000) {
            pipe.cmd("SET")
                .arg(format!("k{batch}:{j}"))
                .arg(&value)
                .ignore();
        }
        pipe.exec(conn).unwrap();
    }
}

fn s3_store(server: &S3Server, prefix: &str) -> Store {
    Store::open(&server.url(prefix), s3_options(server)).unwrap()
}

/// Every key of `restored` equals the same key on `source`; every fixture key was restored;
/// returns the restored key count.
fn assert_restored_subset(restored: &TestCluster, source: &TestCluster, fixture: &[String]) -> u64 {
    let report = verify(
        &Endpoint::new(seed(restored)),
        &Endpoint::new(seed(source)),
        &VerifyOptions::default(),
        |_| {},
    )
    .unwrap();
    let real: Vec<&Difference> = report
        .differences
        .iter()
        .filter(|d| !matches!(d, Difference::ExtraKeys { .. }))
        .collect();
    assert!(
        real.is_empty(),
        "restored keys differ from the source: {real:?}"
    );
    let mut conn = cluster_connection(restored);
    for key in fixture {
        let exists: u64 = redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap();
        assert_eq!(exists, 1, "{key} was not restored");
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg("fixture:str:0")
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 3_500_000, "the TTL was restored: {ttl}");
    report.keys_checked
}

#[test]
fn a_backup_of_three_masters_taken_under_writes_restores_into_five() {
    let s3 = S3Server::start();
    let source = cluster(3, 1);
    let fixture = write_fixture(&source);
    let workload = Workload::start(Target::Cluster(source.seeds()), Duration::from_millis(1));
    workload.wait_for_acknowledged(200, Duration::from_secs(20));
    let store = s3_store(&s3, "prod/redis");
    let manifest = backup(
        &store,
        &BackupRequest {
            source: Endpoint::new(seed(&source)),
            cluster: "orders".to_owned(),
            name: None,
        },
    )
    .unwrap();
    let log = workload.stop();
    assert!(
        log.failed == 0,
        "the backup disturbed clients: {:?}",
        log.errors
    );
    assert_eq!(manifest.shards.len(), 3);
    assert!(
        manifest.shards.iter().all(|s| s.read_role == "replica"),
        "every RDB came from a replica: {manifest:?}"
    );
    assert!(
        manifest.keys() >= fixture.len() as u64 + 200,
        "{}",
        manifest.keys()
    );
    assert_eq!(catalog::list(&store).unwrap(), vec![manifest.clone()]);

    let target = cluster(5, 0);
    let report = restore(
        &store,
        &Endpoint::new(seed(&target)),
        &RestoreRequest::default(),
    )
    .unwrap();
    assert_eq!(report.backup, manifest.name);
    assert_eq!(report.keys, manifest.keys());
    let restored = assert_restored_subset(&target, &source, &fixture);
    assert_eq!(restored, manifest.keys());

    // A second restore into the same cluster is refused: it is not empty any more.
    let error = restore(
        &store,
        &Endpoint::new(seed(&target)),
        &RestoreRequest::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, BackupError::TargetNotEmpty { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("--force"), "{error}");
}

#[test]
fn a_file_store_works_the_same_and_a_corrupted_object_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = Store::open(&url, StoreOptions::default()).unwrap();
    let source = cluster(3, 0);
    let fixture = write_fixture(&source);
    let manifest = backup(
        &store,
        &BackupRequest {
            source: Endpoint::new(seed(&source)),
            cluster: "orders".to_owned(),
            name: Some("nightly".to_owned()),
        },
    )
    .unwrap();
    assert!(manifest.shards.iter().all(|s| s.read_role == "master"));
    // The same name again is refused.
    let again = backup(
        &store,
        &BackupRequest {
            source: Endpoint::new(seed(&source)),
            cluster: "orders".to_owned(),
            name: Some("nightly".to_owned()),
        },
    )
    .unwrap_err();
    assert!(again.to_string().contains("exists already"), "{again}");

    let target = cluster(2, 0);
    restore(
        &store,
        &Endpoint::new(seed(&target)),
        &RestoreRequest::default(),
    )
    .unwrap();
    assert_eq!(
        assert_restored_subset(&target, &source, &fixture),
        fixture.len() as u64
    );

    // Flip one byte near the end of a shard's RDB (inside the data, before the CRC).
    let path = dir.path().join("backups/nightly/shard-1.rdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let fresh = cluster(2, 0);
    let error = restore(
        &store,
        &Endpoint::new(seed(&fresh)),
        &RestoreRequest::default(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("shard-1.rdb"),
        "the error names the object: {error}"
    );
}

#[test]
fn store_faults_are_clear_and_leave_no_listed_backup() {
    let mut s3 = S3Server::start();
    // Wrong credentials.
    let mut options = s3_options(&s3);
    options.s3.as_mut().unwrap().secret_access_key = "wrong".to_owned();
    let error = Store::open(&s3.url("x"), options).unwrap_err();
    assert!(error.to_string().contains("credentials"), "{error}");
    assert!(
        !error.to_string().contains("wrong"),
        "no secret in errors: {error}"
    );
    // A bucket that does not exist.
    let error = Store::open("s3://nope/x", s3_options(&s3)).unwrap_err();
    assert!(
        error.to_string().contains("bucket does not exist"),
        "{error}"
    );
    // The store stops in the middle of the upload: the backup fails, nothing is listed.
    let source = cluster(1, 0);
    let mut conn = connection(&seed(&source));
    fill(&mut conn, 40_000, 1024);
    let store = Store::open(
        &s3.url("faults"),
        StoreOptions {
            part_size: 5 * 1024 * 1024,
            ..s3_options(&s3)
        },
    )
    .unwrap();
    std::thread::scope(|scope| {
        let taking = scope.spawn(|| {
            backup(
                &store,
                &BackupRequest {
                    source: Endpoint::new(seed(&source)),
                    cluster: "faults".to_owned(),
                    name: Some("cut".to_owned()),
                },
            )
        });
        std::thread::sleep(Duration::from_millis(150));
        s3.stop();
        let error = taking.join().unwrap().unwrap_err();
        assert!(matches!(error, BackupError::Store { .. }), "{error}");
    });
    s3.restart();
    assert!(
        catalog::list(&store).unwrap().is_empty(),
        "a failed backup is not listed"
    );
    // An unreachable store.
    s3.stop();
    let error = Store::open(&s3.url("x"), s3_options(&s3)).unwrap_err();
    assert!(error.to_string().contains("unreachable"), "{error}");
}

#[test]
fn a_restore_target_too_small_is_refused_before_writing() {
    let (_dir, store) = file_store();
    let source = cluster(1, 0);
    let mut conn = connection(&seed(&source));
    fill(&mut conn, 20_000, 4096);
    backup(
        &store,
        &BackupRequest {
            source: Endpoint::new(seed(&source)),
            cluster: "big".to_owned(),
            name: None,
        },
    )
    .unwrap();
    let target = cluster(1, 0);
    let mut target_conn = connection(&seed(&target));
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("20mb")
        .exec(&mut target_conn)
        .unwrap();
    let error = restore(
        &store,
        &Endpoint::new(seed(&target)),
        &RestoreRequest::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("maxmemory"), "{error}");
    let keys: u64 = redis::cmd("DBSIZE").query(&mut target_conn).unwrap();
    assert_eq!(keys, 0, "nothing was written");
}

/// A Sentinel group (or any master with replicas) is read from a replica whose link is up,
/// whichever of its nodes the backup is pointed at, so the master never forks; the manifest
/// says which node was read and names the master. The backup restores into a cluster.
#[test]
fn a_group_is_read_from_its_replica_whichever_node_is_named_and_restores_into_a_cluster() {
    let (_dir, store) = file_store();
    let group = TestGroup::start(1, 1);
    let master = group.master().to_string();
    let replica = group
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .find(|addr| *addr != master)
        .unwrap();
    let mut conn = connection(&master);
    fill(&mut conn, 2_000, 16);
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5_000)
        .query(&mut conn)
        .unwrap();
    assert_eq!(acked, 1, "the replica did not catch up");

    for (named, name) in [(&master, "from-master"), (&replica, "from-replica")] {
        let manifest = backup(
            &store,
            &BackupRequest {
                source: Endpoint::new(named.clone()),
                cluster: "sessions".to_owned(),
                name: Some(name.to_owned()),
            },
        )
        .unwrap();
        let shard = &manifest.shards[0];
        assert_eq!(
            (
                shard.master.as_str(),
                shard.read_from.as_str(),
                shard.read_role.as_str()
            ),
            (master.as_str(), replica.as_str(), "replica"),
            "named {named}: {manifest:?}"
        );
        assert_eq!(manifest.keys(), 2_000, "named {named}");
    }

    let target = cluster(3, 0);
    let report = restore(
        &store,
        &Endpoint::new(seed(&target)),
        &RestoreRequest {
            backup: Some("from-replica".to_owned()),
            ..RestoreRequest::default()
        },
    )
    .unwrap();
    assert_eq!(report.keys, 2_000);
    let mut target_conn = cluster_connection(&target);
    let value: String = redis::cmd("GET")
        .arg("k1:999")
        .query(&mut target_conn)
        .unwrap();
    assert_eq!(value, "v".repeat(16));
}
