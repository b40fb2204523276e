//! `cinnabar sync status` and `cinnabar sync verify` as a user runs them, against real
//! redis-server processes.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use cinnabar_testkit::TestServer;

mod support;
use support::{cinnabar, stderr};

fn connection(server: &TestServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn set(server: &TestServer, key: &str, value: &str) {
    let mut conn = connection(server);
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec(&mut conn)
        .unwrap();
}

#[test]
fn verify_exits_0_on_identical_data_and_names_each_difference_otherwise() {
    let (source, target) = (TestServer::start(), TestServer::start());
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        set(&source, key, value);
        set(&target, key, value);
    }
    let verify = || {
        cinnabar()
            .args(["sync", "verify", "--from"])
            .arg(source.addr().to_string())
            .arg("--to")
            .arg(target.addr().to_string())
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("3 keys compared, 0 difference(s): identical"),
        "{text}"
    );

    set(&source, "only-here", "x");
    set(&target, "b", "changed");
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("only-here: missing on the target"), "{text}");
    assert!(text.contains("b: value differs"), "{text}");
    assert!(text.contains("2 difference(s): NOT identical"), "{text}");
}

#[test]
fn status_without_a_running_sync_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = cinnabar()
        .args(["sync", "status", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no sync status in"), "{err}");
}

/// Polls `cinnabar sync status --json` until `ready` holds for it.
fn wait_status(
    state: &std::path::Path,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cinnabar()
            .args(["sync", "status", "--json", "--state"])
            .arg(state)
            .output()
            .unwrap();
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if ready(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sync never became {what}: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn caught_up(status: &serde_json::Value) -> bool {
    let sources = status["sources"].as_array().cloned().unwrap_or_default();
    !sources.is_empty()
        && sources
            .iter()
            .all(|s| s["phase"] == "streaming" && s["lag_bytes"] == 0)
}

fn start_sync(source: &TestServer, target: &str, state: &std::path::Path) -> std::process::Child {
    start_sync_with(source, target, state, &[])
}

fn start_sync_with(
    source: &TestServer,
    target: &str,
    state: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    cinnabar()
        .args(["sync", "--from"])
        .arg(source.addr().to_string())
        .args(["--to", target, "--state"])
        .arg(state)
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `GET /metrics` from the sync's admin listener.
fn metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// Sends `signal` to a running sync.
fn signal(sync: &std::process::Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(sync.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

fn verify_clean(source: &TestServer, target: &str) {
    let out = cinnabar()
        .args(["sync", "verify", "--from"])
        .arg(source.addr().to_string())
        .args(["--to", target])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_copies_every_type_follows_writes_and_continues_after_kill_9() {
    let source = TestServer::start();
    let cluster = cinnabar_testkit::TestCluster::start(3, 0).await;
    let target = cluster.servers()[0].addr().to_string();
    let state = tempfile::tempdir().unwrap();
    let mut conn = connection(&source);
    let q = |conn: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.exec(conn).unwrap();
    };
    for i in 0..500 {
        q(&mut conn, &["SET", &format!("s:{i}"), &i.to_string()]);
    }
    q(&mut conn, &["SET", "ttl", "x", "EX", "600"]);
    q(&mut conn, &["RPUSH", "list", "a", "b", "c"]);
    q(&mut conn, &["SADD", "set", "a", "b"]);
    q(&mut conn, &["HSET", "hash", "f", "v"]);
    q(&mut conn, &["ZADD", "zset", "1", "a", "2", "b"]);
    q(&mut conn, &["XADD", "stream", "1-1", "f", "v"]);
    q(&mut conn, &["XGROUP", "CREATE", "stream", "g", "0"]);

    let mut sync = start_sync(&source, &target, state.path());
    // Writes while the full sync runs and after it.
    for i in 0..300 {
        q(&mut conn, &["SET", &format!("live:{i}"), &i.to_string()]);
        q(
            &mut conn,
            &["HSET", "live:hash", &format!("f{i}"), &i.to_string()],
        );
    }
    let status = wait_status(state.path(), "caught up", caught_up);
    assert_eq!(status["sources"][0]["last_start"], "full", "{status}");
    verify_clean(&source, &target);

    // kill -9 while streaming, more writes, then a restart continues from the checkpoint.
    signal(&sync, nix::sys::signal::Signal::SIGKILL);
    sync.wait().unwrap();
    for i in 0..200 {
        q(&mut conn, &["SET", &format!("after:{i}"), &i.to_string()]);
    }
    q(&mut conn, &["DEL", "s:1"]);
    let admin = cinnabar_testkit::reserve_port();
    let admin = format!("127.0.0.1:{}", admin.port());
    let mut sync = start_sync_with(&source, &target, state.path(), &["--admin-listen", &admin]);
    let status = wait_status(state.path(), "caught up again", |s| {
        caught_up(s) && s["pid"] == serde_json::json!(sync.id())
    });
    assert_eq!(status["sources"][0]["last_start"], "continue", "{status}");
    verify_clean(&source, &target);
    let text = metrics(&admin);
    let series = format!("cinnabar_sync_streaming{{source=\"{}\"}} 1", source.addr());
    assert!(text.contains(&series), "{text}");
    assert!(text.contains("cinnabar_sync_lag_bytes"), "{text}");

    // SIGTERM: a clean stop, exit 0.
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    let exit = sync.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_source_syncs_every_master_into_another_cluster() {
    let source = cinnabar_testkit::TestCluster::start(3, 1).await;
    let target = cinnabar_testkit::TestCluster::start(3, 0).await;
    let target_addr = target.servers()[0].addr().to_string();
    let urls: Vec<String> = source.servers().iter().map(TestServer::url).collect();
    let mut writer = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..600 {
        redis::cmd("SET")
            .arg(format!("c:{i}"))
            .arg(i)
            .exec(&mut writer)
            .unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    // Any node names the cluster: every master gets a stream of its own.
    let seed = &source.servers()[0];
    let mut sync = start_sync(seed, &target_addr, state.path());
    for i in 0..300 {
        redis::cmd("INCR")
            .arg(format!("n:{i}"))
            .exec(&mut writer)
            .unwrap();
    }
    let status = wait_status(state.path(), "caught up", caught_up);
    assert_eq!(status["sources"].as_array().unwrap().len(), 3, "{status}");
    verify_clean(seed, &target_addr);
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    assert!(sync.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_during_the_full_sync_starts_it_again_and_ends_identical() {
    let source = TestServer::start();
    let cluster = cinnabar_testkit::TestCluster::start(3, 0).await;
    let target = cluster.servers()[0].addr().to_string();
    let state = tempfile::tempdir().unwrap();
    let mut conn = connection(&source);
    // Enough keys that the full sync is still running when it is killed.
    let value = "v".repeat(100);
    for batch in 0..100 {
        let mut mset = redis::cmd("MSET");
        for i in 0..1000 {
            mset.arg(format!("full:{batch}:{i}")).arg(&value);
        }
        mset.exec(&mut conn).unwrap();
    }
    let mut sync = start_sync(&source, &target, state.path());
    wait_status(state.path(), "copying", |s| {
        s["sources"][0]["phase"] == "full" && s["sources"][0]["keys_applied"].as_u64() > Some(0)
    });
    signal(&sync, nix::sys::signal::Signal::SIGKILL);
    sync.wait().unwrap();
    redis::cmd("SET")
        .arg("late")
        .arg("1")
        .exec(&mut conn)
        .unwrap();
    // No checkpoint was stored mid-copy: the restart takes a full sync again.
    let mut sync = start_sync(&source, &target, state.path());
    let status = wait_status(state.path(), "caught up", |s| {
        caught_up(s) && s["pid"] == serde_json::json!(sync.id())
    });
    assert_eq!(status["sources"][0]["last_start"], "full", "{status}");
    verify_clean(&source, &target);
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    assert!(sync.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_as_the_source_into_a_cinnabar_endpoint() {
    let master = TestServer::start();
    let replica = TestServer::start();
    let mut to_master = connection(&master);
    let mut to_replica = connection(&replica);
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .exec(&mut to_replica)
        .unwrap();
    for i in 0..200 {
        redis::cmd("SET")
            .arg(format!("r:{i}"))
            .arg(i)
            .exec(&mut to_master)
            .unwrap();
    }
    redis::cmd("HSET")
        .arg("r:hash")
        .arg("f")
        .arg("v")
        .exec(&mut to_master)
        .unwrap();
    let cluster = cinnabar_testkit::TestCluster::start(3, 0).await;
    let config = cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let endpoint = proxy.local_addr().to_string();
    let state = tempfile::tempdir().unwrap();
    let mut sync = start_sync(&replica, &endpoint, state.path());
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("later:{i}"))
            .arg(i)
            .exec(&mut to_master)
            .unwrap();
    }
    // Caught up with the replica once the replica has caught up with its master.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: u64 = redis::cmd("DBSIZE").query(&mut to_replica).unwrap();
        if n == 301 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    wait_status(state.path(), "caught up", caught_up);
    verify_clean(&replica, &endpoint);
    verify_clean(&master, &endpoint);
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    assert!(sync.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_the_source_no_longer_holds_means_a_full_resync_said_plainly() {
    let source = TestServer::start();
    let cluster = cinnabar_testkit::TestCluster::start(3, 0).await;
    let target = cluster.servers()[0].addr().to_string();
    let state = tempfile::tempdir().unwrap();
    let mut conn = connection(&source);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-backlog-size")
        .arg("16384")
        .exec(&mut conn)
        .unwrap();
    set(&source, "first", "1");
    let mut sync = start_sync(&source, &target, state.path());
    wait_status(state.path(), "caught up", caught_up);
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    assert!(sync.wait().unwrap().success());
    // Far more than the backlog holds while no sync runs.
    let value = "x".repeat(1000);
    for i in 0..200 {
        set(&source, &format!("gap:{i}"), &value);
    }
    let mut sync = start_sync(&source, &target, state.path());
    let status = wait_status(state.path(), "caught up again", |s| {
        caught_up(s) && s["pid"] == serde_json::json!(sync.id())
    });
    assert_eq!(status["sources"][0]["last_start"], "full", "{status}");
    let warning = status["sources"][0]["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("no longer held offset"), "{status}");
    verify_clean(&source, &target);
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    assert!(sync.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_evicts_keys_during_the_full_sync_stops_it_with_a_clear_error() {
    let source = TestServer::start();
    let cluster = cinnabar_testkit::TestCluster::start(3, 0).await;
    let target = cluster.servers()[0].addr().to_string();
    for server in cluster.servers() {
        let mut node = connection(server);
        for (name, value) in [("maxmemory", "3mb"), ("maxmemory-policy", "allkeys-lru")] {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .exec(&mut node)
                .unwrap();
        }
    }
    // One hash of about 5 MB: more than one 3 MB master holds, less than the three together.
    let mut conn = connection(&source);
    let value = "h".repeat(100);
    for batch in 0..40 {
        let mut hset = redis::cmd("HSET");
        hset.arg("big");
        for i in 0..1000 {
            hset.arg(format!("f{batch}:{i}")).arg(&value);
        }
        hset.exec(&mut conn).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let out = cinnabar()
        .args(["sync", "--from"])
        .arg(source.addr().to_string())
        .args(["--to", &target, "--state"])
        .arg(state.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("evicted") && err.contains("maxmemory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickle_of_source_writes_reaches_the_target_within_a_second() {
    // A source that writes a little but often is never silent long enough for the sync to
    // notice idleness: its writes must still reach the target promptly, not when a buffer fills.
    let source = TestServer::start();
    let cluster = cinnabar_testkit::TestCluster::start(1, 0).await;
    let target_server = &cluster.servers()[0];
    let target = target_server.addr().to_string();
    let state = tempfile::tempdir().unwrap();
    set(&source, "warm", "up");
    let mut sync = start_sync(&source, &target, state.path());
    wait_status(state.path(), "caught up", caught_up);

    let mut src = connection(&source);
    let mut dst = connection(target_server);
    let pace = std::time::Duration::from_millis(5);
    for i in 0..200 {
        redis::cmd("SET")
            .arg(format!("trickle:{i}"))
            .arg(i)
            .exec(&mut src)
            .unwrap();
        std::thread::sleep(pace);
    }
    // A probe among the trickle: how long until the target has it?
    redis::cmd("SET")
        .arg("probe")
        .arg("1")
        .exec(&mut src)
        .unwrap();
    let written = std::time::Instant::now();
    let mut i = 200;
    let delay = loop {
        let there: bool = redis::cmd("EXISTS").arg("probe").query(&mut dst).unwrap();
        if there {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < std::time::Duration::from_secs(10),
            "the probe never reached the target"
        );
        redis::cmd("SET")
            .arg(format!("trickle:{i}"))
            .arg(i)
            .exec(&mut src)
            .unwrap();
        i += 1;
        std::thread::sleep(pace);
    };
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    sync.wait().unwrap();
    assert!(
        delay < std::time::Duration::from_secs(1),
        "a write under a steady trickle took {delay:?} to reach the target"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_node_restarted_while_streaming_is_reconnected_not_fatal() {
    // What a rolling restart of the target cluster does to the sync: a node closes the
    // connection and comes back. The sync keeps running and ends identical.
    let source = TestServer::start();
    let mut cluster = cinnabar_testkit::TestCluster::start(3, 0).await;
    let target = cluster.servers()[0].addr().to_string();
    let state = tempfile::tempdir().unwrap();
    set(&source, "before", "1");
    let mut sync = start_sync(&source, &target, state.path());
    wait_status(state.path(), "caught up", caught_up);
    let mut src = connection(&source);
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("a:{i}"))
            .arg(i)
            .exec(&mut src)
            .unwrap();
    }
    cluster.server_mut(1).restart();
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("b:{i}"))
            .arg(i)
            .exec(&mut src)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    wait_status(state.path(), "caught up after the restart", caught_up);
    assert!(
        sync.try_wait().unwrap().is_none(),
        "the sync stopped when a target node restarted"
    );
    verify_clean(&source, &target);
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    sync.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_cluster_directory_is_a_target() {
    let source = TestServer::start();
    set(&source, "from-dir", "yes");
    let cluster = support::Cinnabar::new(2, 0);
    let endpoint = cluster.up_detached(2, 0);
    let state = tempfile::tempdir().unwrap();
    let mut sync = cinnabar()
        .args(["sync", "--from"])
        .arg(source.addr().to_string())
        .arg("--to-dir")
        .arg(cluster.dir())
        .arg("--state")
        .arg(state.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_status(state.path(), "caught up", caught_up);
    let mut through = support::plain_connection(&endpoint);
    let value: Option<String> = redis::cmd("GET")
        .arg("from-dir")
        .query(&mut through)
        .unwrap();
    signal(&sync, nix::sys::signal::Signal::SIGTERM);
    sync.wait().unwrap();
    assert_eq!(value.as_deref(), Some("yes"));
    // A directory with no cluster is named.
    let out = cinnabar()
        .args(["sync", "--from", "127.0.0.1:1", "--to-dir"])
        .arg(state.path().join("nothing"))
        .arg("--state")
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nothing"), "{}", stderr(&out));
}
