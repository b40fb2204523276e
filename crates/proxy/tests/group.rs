//! The proxy in front of a Sentinel-managed group (backend kind "group"), against real
//! redis-server and Sentinel processes: no slots (any database, transactions across any keys),
//! the master learnt from the Sentinels and confirmed by the node, failovers held within the
//! retry window.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_cluster::sentinel::{GroupAccess, planned_failover};
use cinnabar_proxy::{GroupConfig, ProxyConfig, ProxyHandle};
use cinnabar_testkit::group::GROUP_NAME;
use cinnabar_testkit::{Target, TestGroup, Workload, WorkloadLog};

fn group_proxy(group: &TestGroup) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.group = Some(GroupConfig {
        name: GROUP_NAME.into(),
        sentinels: group.sentinel_addrs(),
        sentinel_credentials: None,
    });
    config.access.default_role = Some("admin".into());
    config.retry_window = Duration::from_secs(10);
    cinnabar_proxy::start(config).unwrap()
}

fn client(proxy: &ProxyHandle) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{}/", proxy.local_addr())).unwrap();
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    conn
}

fn endpoint(proxy: &ProxyHandle) -> NodeAddr {
    NodeAddr::new("127.0.0.1", proxy.local_addr().port())
}

fn node(addr: &NodeAddr, db: u8) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/{db}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A workload writing through the proxy (a write every millisecond), once 300 of its writes are
/// acknowledged: a failover then happens under load.
fn running_workload(proxy: &ProxyHandle) -> Workload {
    let workload = Workload::start(
        Target::Standalone(endpoint(proxy)),
        Duration::from_millis(1),
    );
    workload.wait_for_acknowledged(300, Duration::from_secs(20));
    workload
}

/// Waits until 300 more writes are acknowledged than now: the proxy serves again.
fn wait_for_more_writes(workload: &Workload, timeout: Duration) {
    let before = workload.acknowledged();
    workload.wait_for_acknowledged(before + 300, timeout);
}

/// The one request on the wire to a failed master may or may not have run: the proxy must not
/// silently re-run it, so it is the only error a client may see.
fn assert_at_most_one_error(log: &WorkloadLog) {
    assert!(
        log.failed <= 1,
        "failover leaked {} errors: {:?}",
        log.failed,
        log.errors
    );
}

#[test]
fn any_database_and_transactions_across_keys_reach_the_master() {
    let group = TestGroup::start(1, 3);
    let proxy = group_proxy(&group);
    let mut conn = client(&proxy);

    // Keys in different hash slots: a cluster endpoint would refuse or split these.
    let () = redis::cmd("SELECT").arg(3).query(&mut conn).unwrap();
    let () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut conn)
        .unwrap();
    let (n, a): (i64, String) = redis::pipe()
        .atomic()
        .incr("a", 10)
        .get("b")
        .query(&mut conn)
        .unwrap();
    assert_eq!((n, a.as_str()), (11, "2"));
    let moved: i64 = redis::cmd("RENAME")
        .arg("b")
        .arg("c")
        .query::<String>(&mut conn)
        .map(|_| 1)
        .unwrap();
    assert_eq!(moved, 1);
    let lua: i64 = redis::cmd("EVAL")
        .arg("return redis.call('INCR', KEYS[1]) + redis.call('INCR', KEYS[2])")
        .arg(2)
        .arg("x")
        .arg("y")
        .query(&mut conn)
        .unwrap();
    assert_eq!(lua, 2);
    let size: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(size, 4);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "c", "x", "y"]);
    let (cursor, mut scanned): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(100)
        .query(&mut conn)
        .unwrap();
    scanned.sort();
    assert_eq!((cursor, scanned), (0, keys.clone()));

    // WATCH … EXEC across keys, in the selected database.
    let () = redis::cmd("WATCH")
        .arg("a")
        .arg("c")
        .query(&mut conn)
        .unwrap();
    let done: Option<(String,)> = redis::pipe()
        .atomic()
        .set("d", "watched")
        .query(&mut conn)
        .unwrap();
    assert!(done.is_some());

    // The data is in database 3 of the master, and database 0 is untouched.
    let master = group.master();
    let mut db3 = node(&master, 3);
    let c: String = redis::cmd("GET").arg("c").query(&mut db3).unwrap();
    let d: String = redis::cmd("GET").arg("d").query(&mut db3).unwrap();
    assert_eq!((c.as_str(), d.as_str()), ("2", "watched"));
    let db0_size: i64 = redis::cmd("DBSIZE").query(&mut node(&master, 0)).unwrap();
    assert_eq!(db0_size, 0);

    // MOVE between databases runs on the master (a cluster endpoint refuses it).
    let moved: i64 = redis::cmd("MOVE").arg("x").arg(4).query(&mut conn).unwrap();
    assert_eq!(moved, 1);
    let gone: Option<String> = redis::cmd("GET").arg("x").query(&mut conn).unwrap();
    assert_eq!(gone, None);
    let x: String = redis::cmd("GET")
        .arg("x")
        .query(&mut node(&master, 4))
        .unwrap();
    assert_eq!(x, "1");

    // Another client is still in database 0; out-of-range databases are refused.
    let mut other = client(&proxy);
    let missing: Option<String> = redis::cmd("GET").arg("c").query(&mut other).unwrap();
    assert_eq!(missing, None);
    let err = redis::cmd("SELECT")
        .arg(16)
        .query::<()>(&mut other)
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn replica_reads_follow_the_read_policy_and_writes_stay_on_the_master() {
    let group = TestGroup::start(1, 3);
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.group = Some(GroupConfig {
        name: GROUP_NAME.into(),
        sentinels: group.sentinel_addrs(),
        sentinel_credentials: None,
    });
    config.read_from = cinnabar_proxy::ReadFrom::ReplicaOnly;
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut conn = client(&proxy);
    let () = redis::cmd("SET")
        .arg("r")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let replica = group
        .nodes
        .iter()
        .map(cinnabar_testkit::cluster::node_addr)
        .find(|a| *a != group.master())
        .unwrap();
    // Replication is asynchronous: the read is retried until the replica has the write.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got: Option<String> = redis::cmd("GET").arg("r").query(&mut conn).unwrap();
        if got.as_deref() == Some("v") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never served the write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node(&replica, 0))
        .unwrap();
    assert!(stats.contains("cmdstat_get:"), "{stats}");
}

#[test]
fn a_killed_master_is_invisible_when_sentinel_promotes_within_the_retry_window() {
    let mut group = TestGroup::start(2, 3);
    let proxy = group_proxy(&group);
    let workload = running_workload(&proxy);

    let victim = group.master();
    let killed_at = Instant::now();
    group.node_mut(&victim).unwrap().kill();
    let before = workload.acknowledged();
    let promoted = group.wait_new_master(&victim, Duration::from_secs(30));
    let promotion = killed_at.elapsed();
    workload.wait_for_acknowledged(before + 300, Duration::from_secs(30));
    let log = workload.stop();
    // Counted, not asserted to be zero: Redis replicates asynchronously, so the dead master
    // may have acknowledged writes its replicas never got. Bounded by what one second of
    // writes can be (replicas acknowledge at least every second).
    let lost = log.lost_writes().unwrap().len();
    eprintln!(
        "promotion of {promoted} took {promotion:?}; client-visible failures: {} ({:?}); \
         acknowledged: {}; lost by the failover: {lost}; longest write: {:?}",
        log.failed,
        log.errors,
        log.acknowledged.len(),
        log.longest_write
    );
    assert_at_most_one_error(&log);
    assert!(promotion < Duration::from_secs(10), "{promotion:?}");
    assert!(lost <= 2000, "{lost} acknowledged writes lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_failover_behind_a_hold_loses_nothing_and_shows_no_error() {
    let group = tokio::task::block_in_place(|| TestGroup::start(2, 3));
    let proxy = group_proxy(&group);
    let workload = running_workload(&proxy);

    let access = GroupAccess {
        name: GROUP_NAME.into(),
        sentinels: group.sentinel_addrs(),
        sentinel_credentials: None,
        credentials: None,
    };
    let hold = proxy.hold_requests(Duration::from_secs(2)).await.unwrap();
    let done = planned_failover(&access, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(proxy.topology_changed(Duration::from_secs(2)).await);
    assert_eq!(proxy.masters(), vec![done.to.clone()]);
    let held = hold.release();
    eprintln!(
        "planned failover {} -> {} at offset {}; requests held {held:?}",
        done.from, done.to, done.offset
    );

    wait_for_more_writes(&workload, Duration::from_secs(20));
    let log = workload.stop();
    assert_eq!(log.failed, 0, "errors: {:?}", log.errors);
    log.assert_nothing_lost();
    // Sentinel turns the old master into a replica on its own time (seconds later); until
    // then it still says role:master, and the proxy never went back to it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cinnabar_testkit::group::role(&done.from).as_deref() != Some("slave") {
        assert!(
            Instant::now() < deadline,
            "the old master never became a replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_paused_old_master_gets_no_write_once_a_new_master_is_elected() {
    let mut group = TestGroup::start(2, 3);
    let proxy = group_proxy(&group);
    let workload = running_workload(&proxy);

    // SIGSTOP: the old master keeps its sockets, answers nothing, and comes back later
    // still saying role:master until Sentinel demotes it.
    let old = group.master();
    group.node_mut(&old).unwrap().pause();
    let new = group.wait_new_master(&old, Duration::from_secs(30));
    wait_for_more_writes(&workload, Duration::from_secs(30));
    group.node_mut(&old).unwrap().resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cinnabar_testkit::group::role(&old).as_deref() != Some("slave") {
        assert!(
            Instant::now() < deadline,
            "the old master was never demoted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_more_writes(&workload, Duration::from_secs(30));
    let log = workload.stop();
    eprintln!(
        "paused {old}, new master {new}; failures: {} ({:?}); acknowledged: {}",
        log.failed,
        log.errors,
        log.acknowledged.len()
    );
    // A write acknowledged by the old master after the election would be gone now that it
    // resynced from the new one.
    log.assert_nothing_lost();
    assert_at_most_one_error(&log);
}

#[test]
fn the_guards_and_the_audit_trail_apply_in_front_of_a_group() {
    let group = TestGroup::start(1, 3);
    let tmp = tempfile::tempdir().unwrap();
    let audit_file = tmp.path().join("audit.jsonl");
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.group = Some(GroupConfig {
        name: GROUP_NAME.into(),
        sentinels: group.sentinel_addrs(),
        sentinel_credentials: None,
    });
    config.audit.output = cinnabar_proxy::AuditOutput::File(audit_file.clone());
    // No users: everyone is `readwrite`, and the guards refuse the dangerous commands.
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut conn = client(&proxy);
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    for guarded in [&["FLUSHALL"][..], &["SWAPDB", "0", "1"], &["KEYS", "*"]] {
        let mut cmd = redis::cmd(guarded[0]);
        for arg in &guarded[1..] {
            cmd.arg(*arg);
        }
        let err = cmd.query::<redis::Value>(&mut conn).unwrap_err();
        assert!(
            err.to_string().contains("no permissions"),
            "{guarded:?}: {err}"
        );
    }
    // The refusals are audited.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
        if text.contains("\"FLUSHALL\"") && text.contains("\"SWAPDB\"") {
            break;
        }
        assert!(Instant::now() < deadline, "audit trail: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_old_master_resumed_while_most_sentinels_still_name_it_gets_no_write() {
    let mut group = TestGroup::start(2, 3);
    let proxy = group_proxy(&group);
    let workload = running_workload(&proxy);
    let old = group.master();
    group.node_mut(&old).unwrap().pause();
    // Resumed the moment the failover's leader names the new master: the other Sentinels
    // still name the old one, which answers `role:master` again (what a drill's restore, or a
    // healed partition, does).
    let new = group.wait_first_new_master(&old, Duration::from_secs(30));
    group.node_mut(&old).unwrap().resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cinnabar_testkit::group::role(&old).as_deref() != Some("slave") {
        assert!(
            Instant::now() < deadline,
            "the old master was never demoted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_more_writes(&workload, Duration::from_secs(30));
    let log = workload.stop();
    let lost = log.lost_writes().unwrap();
    eprintln!(
        "paused {old}, resumed when one Sentinel named {new}; failures: {} ({:?}); lost: {lost:?}",
        log.failed, log.errors
    );
    // The one write on the wire when the master froze may run when it resumes, before it
    // notices its replicas are gone: Redis's own window, which no endpoint can close. Any write
    // the proxy routed to the old master after the election would be lost as well, so more
    // than one lost write means the proxy trusted the old master again (before the epoch
    // check it lost 15 here).
    assert!(
        lost.len() <= 1,
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    assert_at_most_one_error(&log);
}
