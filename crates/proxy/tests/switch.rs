//! The online backend switch against real clusters: clients stay connected and their next
//! requests reach the new cluster; what cannot move (a blocked BLPOP, a subscriber, a WATCH)
//! ends the way a client library recovers from; checks that fail before the hold refuse with
//! nobody held; the admin listener's switch needs its token. The catch-up against a running
//! sync is tested end to end in the cli crate (`cinnabar migrate`).

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cinnabar_proxy::switch::Outcome;
use cinnabar_proxy::{CatchUp, ProxyConfig, SwitchRequest};
use cinnabar_testkit::TestCluster;

mod support;
use support::{ask, connect, node_connection, read_replies};

fn unchecked(target: &TestCluster) -> SwitchRequest {
    SwitchRequest {
        cluster: None,
        seeds: target.seeds(),
        credentials: None,
        catch_up: CatchUp::Unchecked,
        max_pause: Duration::from_secs(2),
    }
}

/// Which of `cluster`'s masters holds `key` (asked of the nodes themselves).
fn holds(cluster: &TestCluster, key: &str) -> bool {
    cluster.seeds().iter().any(|node| {
        let mut conn = node_connection(node, None);
        let _: redis::RedisResult<()> = redis::cmd("READONLY").query(&mut conn);
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut conn)
            .is_ok_and(|n| n == 1)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn connected_clients_go_on_with_the_new_cluster_and_what_cannot_move_ends_recoverably() {
    let (old, new) = tokio::join!(TestCluster::start(2, 0), TestCluster::start(3, 0));
    let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let addr = proxy.local_addr();

    let mut plain = connect(addr);
    assert_eq!(ask(&mut plain, &["SET", "before", "1"]), "+OK\r\n");
    // A WATCH taken on the old cluster, a client blocked there, a subscriber.
    let mut watcher = connect(addr);
    assert_eq!(ask(&mut watcher, &["WATCH", "w"]), "+OK\r\n");
    let mut blocked = connect(addr);
    blocked
        .write_all(&support::command(&["BLPOP", "queue", "0"]))
        .unwrap();
    // A second one on another key: released in the same pipelined round, whatever its node.
    let mut also_blocked = connect(addr);
    also_blocked
        .write_all(&support::command(&["BRPOP", "other", "0"]))
        .unwrap();
    let mut subscriber = connect(addr);
    assert!(ask(&mut subscriber, &["SUBSCRIBE", "news"]).contains("subscribe"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let report = proxy.switch_backend(unchecked(&new)).await;
    assert_eq!(report.outcome, Outcome::Switched, "{report:?}");
    assert_eq!(report.to_masters.len(), 3);
    assert_eq!(report.blocked_released, 2, "{report:?}");
    assert_eq!(report.subscribers_ended, 1, "{report:?}");
    assert_eq!(report.watches_aborted, 1, "{report:?}");
    assert!(report.hold_ms < 1000.0, "{report:?}");

    // The same connection writes to the new cluster now.
    assert_eq!(ask(&mut plain, &["SET", "after", "1"]), "+OK\r\n");
    assert!(holds(&new, "after") && !holds(&old, "after"));
    assert_eq!(
        ask(&mut plain, &["EXISTS", "before"]),
        ":0\r\n",
        "no sync here"
    );
    // The blocked client got the timeout reply (a nil), as CLIENT UNBLOCK gives.
    assert_eq!(support::read_replies(&mut blocked, 1)[0], "*-1\r\n");
    assert_eq!(support::read_replies(&mut also_blocked, 1)[0], "*-1\r\n");
    assert_eq!(ask(&mut blocked, &["RPUSH", "queue", "x"]), ":1\r\n");
    assert!(holds(&new, "queue"));
    // The WATCH was on the old cluster: EXEC says the transaction did not run.
    assert_eq!(ask(&mut watcher, &["MULTI"]), "+OK\r\n");
    assert_eq!(ask(&mut watcher, &["SET", "w", "1"]), "+QUEUED\r\n");
    assert_eq!(ask(&mut watcher, &["EXEC"]), "*-1\r\n");
    assert!(!holds(&new, "w") && !holds(&old, "w"));
    // A new WATCH works on the new cluster.
    assert_eq!(ask(&mut watcher, &["WATCH", "w"]), "+OK\r\n");
    assert_eq!(ask(&mut watcher, &["MULTI"]), "+OK\r\n");
    assert_eq!(ask(&mut watcher, &["SET", "w", "2"]), "+QUEUED\r\n");
    assert_eq!(ask(&mut watcher, &["EXEC"]), "*1\r\n+OK\r\n");
    // The subscriber's connection was closed; a new one subscribes on the new cluster.
    let mut rest = Vec::new();
    let _ = subscriber.read_to_end(&mut rest);
    let mut subscriber = connect(addr);
    assert!(ask(&mut subscriber, &["SUBSCRIBE", "news"]).contains("subscribe"));
    assert_eq!(ask(&mut plain, &["PUBLISH", "news", "hi"]), ":1\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_sent_during_the_hold_wait_and_then_reach_the_new_cluster() {
    let (old, new) = tokio::join!(TestCluster::start(1, 0), TestCluster::start(1, 0));
    let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let addr = proxy.local_addr();
    // A writer hammering through the switch: every reply is OK, each key lands on exactly
    // one side, and the writes after the switch are all on the new cluster.
    let writer = std::thread::spawn(move || {
        let mut conn = connect(addr);
        let started = Instant::now();
        let mut n = 0u64;
        let mut slowest = Duration::ZERO;
        while started.elapsed() < Duration::from_millis(1500) {
            let sent = Instant::now();
            let reply = ask(&mut conn, &["SET", &format!("k{n}"), "v"]);
            slowest = slowest.max(sent.elapsed());
            assert_eq!(reply, "+OK\r\n", "write {n}");
            n += 1;
        }
        (n, slowest)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = proxy.switch_backend(unchecked(&new)).await;
    assert_eq!(report.outcome, Outcome::Switched, "{report:?}");
    let (written, slowest) = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let on = |cluster: &TestCluster| -> u64 {
        let mut conn = node_connection(&cluster.seeds()[0], None);
        redis::cmd("DBSIZE").query(&mut conn).unwrap()
    };
    assert_eq!(on(&old) + on(&new), written, "every write landed once");
    assert!(on(&old) > 0 && on(&new) > 0);
    // Not a timing target (that is the migration test's and the report's): a held write must
    // come back, not hang until a client timeout.
    assert!(
        slowest < Duration::from_secs(5),
        "slowest write {slowest:?}, hold {} ms",
        report.hold_ms
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_cannot_serve_is_refused_before_anyone_waits() {
    let (old, new) = tokio::join!(TestCluster::start(1, 0), TestCluster::start(2, 0));
    let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
    let proxy = cinnabar_proxy::start(config).unwrap();

    // Nothing listens there.
    let mut request = unchecked(&new);
    request.seeds = vec!["127.0.0.1:1".parse().unwrap()];
    let report = proxy.switch_backend(request).await;
    assert_eq!(report.outcome, Outcome::Refused);
    assert!(report.reason.unwrap().contains("does not answer"));
    assert_eq!(report.hold_ms, 0.0);

    // The same cluster as the one served.
    let report = proxy.switch_backend(unchecked(&old)).await;
    assert_eq!(report.outcome, Outcome::Refused);
    assert!(report.reason.unwrap().contains("same cluster"));

    // A target missing slots: one master gives its slots up.
    let mut conn = node_connection(&new.seeds()[1], None);
    let _: () = redis::cmd("CLUSTER")
        .arg("FLUSHSLOTS")
        .query(&mut conn)
        .unwrap();
    // Asked alone: the others' view of its slots is not updated by FLUSHSLOTS.
    let mut request = unchecked(&new);
    request.seeds = vec![new.seeds()[1].clone()];
    let report = proxy.switch_backend(request).await;
    assert_eq!(report.outcome, Outcome::Refused);
    let reason = report.reason.unwrap();
    assert!(reason.contains("of 16384 slots"), "{reason}");

    // A sync that does not answer.
    let mut request = unchecked(&old);
    request.seeds = new.seeds();
    request.catch_up = CatchUp::Sync("127.0.0.1:1".into());
    let report = proxy.switch_backend(request).await;
    assert_eq!(report.outcome, Outcome::Refused);

    // Still serving the old cluster.
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    assert!(holds(&old, "k"));
}

/// A stand-in for a sync's `/offsets` that reports `offset` for every given master: a sync
/// that never catches up (real syncs are tested in the cli crate).
fn lagging_sync(masters: Vec<String>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            let sources: Vec<String> = masters
                .iter()
                .map(|m| format!("{{\"address\":\"{m}\",\"phase\":\"streaming\",\"offset\":0}}"))
                .collect();
            let body = format!("{{\"sources\":[{}]}}", sources.join(","));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_does_not_catch_up_is_abandoned_and_clients_stay_on_the_source() {
    // Replicas make the masters keep a replication offset (a sync is a replica too).
    let (old, new) = tokio::join!(TestCluster::start(2, 1), TestCluster::start(2, 0));
    let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    let masters = proxy.masters().iter().map(ToString::to_string).collect();
    let sync = lagging_sync(masters);
    // A request cut off before the hold, and more of it (still not all) during the hold, with
    // other clients' whole requests held too: a session that may not parse must keep its
    // partial parse, not leave it in the worker's shared one, where whichever held client
    // parses first when the hold ends would resume it.
    let mut cut = connect(proxy.local_addr());
    cut.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\ncut").unwrap();
    let mut others: Vec<TcpStream> = (0..5).map(|_| connect(proxy.local_addr())).collect();

    let (report, ()) = tokio::join!(
        proxy.switch_backend(SwitchRequest {
            cluster: None,
            seeds: new.seeds(),
            credentials: None,
            catch_up: CatchUp::Sync(sync.to_string()),
            max_pause: Duration::from_millis(300),
        }),
        async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            cut.write_all(b"1\r\n$").unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            for (i, other) in others.iter_mut().enumerate() {
                let key = format!("other{i}");
                other
                    .write_all(&support::command(&["SET", &key, "v"]))
                    .unwrap();
            }
        }
    );
    assert_eq!(report.outcome, Outcome::Abandoned, "{report:?}");
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("did not catch up within 300 ms"),
        "{reason}"
    );
    assert!(report.hold_ms >= 300.0 && report.hold_ms < 1000.0);
    assert_eq!(report.sources.len(), 2);
    assert!(report.sources.iter().any(|s| s.barrier_offset > 0));
    // Clients go on, on the source.
    assert_eq!(ask(&mut client, &["SET", "k2", "v"]), "+OK\r\n");
    assert!(holds(&old, "k2") && !holds(&new, "k2"));
    for other in &mut others {
        assert_eq!(read_replies(other, 1), ["+OK\r\n"]);
    }
    cut.write_all(b"1\r\nv\r\n").unwrap();
    assert_eq!(read_replies(&mut cut, 1), ["+OK\r\n"]);
    assert_eq!(ask(&mut cut, &["GET", "cut1"]), "$1\r\nv\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_switch_needs_the_token() {
    let (old, new) = tokio::join!(TestCluster::start(1, 0), TestCluster::start(1, 0));
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin_token = Some("s3cret".into());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let admin = proxy.admin_addr().unwrap();
    let post = |token: Option<&str>, body: &str| -> (u16, String) {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "POST /backend/switch HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        (
            response[9..12].parse().unwrap(),
            response.split_once("\r\n\r\n").unwrap().1.to_owned(),
        )
    };
    let body = format!("{{\"seeds\":[\"{}\"],\"unchecked\":true}}", new.seeds()[0]);
    assert_eq!(post(None, &body).0, 401);
    assert_eq!(post(Some("wrong"), &body).0, 401);
    let (status, text) = post(Some("s3cret"), "{\"seeds\":[]}");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("exactly one of"), "{text}");
    let (status, text) = post(Some("s3cret"), &body);
    assert_eq!(status, 200, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["outcome"], "switched");
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    assert!(holds(&new, "k"));
}

#[tokio::test(flavor = "multi_thread")]
async fn several_proxies_switch_together_in_two_phases_and_an_uncommitted_hold_ends_by_itself() {
    let (old, new) = tokio::join!(TestCluster::start(2, 1), TestCluster::start(2, 0));
    let start = || {
        let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
        cinnabar_proxy::start(config).unwrap()
    };
    let (a, b) = (start(), start());
    let (mut to_a, mut to_b) = (connect(a.local_addr()), connect(b.local_addr()));
    assert_eq!(ask(&mut to_a, &["SET", "x", "1"]), "+OK\r\n");

    // Prepared but never committed: the hold ends by itself after max_pause.
    let mut request = unchecked(&new);
    request.max_pause = Duration::from_millis(300);
    let prepared = a.switch_prepare(request.clone()).await.unwrap();
    assert_eq!(prepared.sources.len(), 2);
    assert!(
        a.switch_prepare(request.clone()).await.is_err(),
        "one at a time"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = a.switch_commit(prepared.id).await;
    assert_eq!(late.outcome, Outcome::Refused, "{late:?}");
    assert_eq!(ask(&mut to_a, &["SET", "y", "1"]), "+OK\r\n");
    assert!(holds(&old, "y"));

    // Both proxies hold; the coordinator would wait for the target to reach the highest
    // offset either reported; then both flip.
    request.max_pause = Duration::from_secs(5);
    let (pa, pb) = tokio::join!(a.switch_prepare(request.clone()), b.switch_prepare(request));
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    let highest = |master: &str| {
        pa.sources
            .iter()
            .chain(&pb.sources)
            .filter(|s| s.master == master)
            .map(|s| s.barrier_offset)
            .max()
            .unwrap()
    };
    assert!(highest(&pa.sources[0].master) >= pa.sources[0].barrier_offset);
    // A request sent now waits for the commit.
    let waiting = std::thread::spawn(move || ask(&mut to_b, &["SET", "held", "1"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "held until the commit");
    let (ra, rb) = tokio::join!(a.switch_commit(pa.id), b.switch_commit(pb.id));
    assert_eq!(ra.outcome, Outcome::Switched, "{ra:?}");
    assert_eq!(rb.outcome, Outcome::Switched, "{rb:?}");
    assert_eq!(waiting.join().unwrap(), "+OK\r\n");
    assert!(holds(&new, "held") && !holds(&old, "held"));
    assert_eq!(ask(&mut to_a, &["SET", "z", "1"]), "+OK\r\n");
    assert!(holds(&new, "z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_user_without_client_id_still_gets_its_blocking_replies() {
    let (old, new) = tokio::join!(TestCluster::start(1, 0), TestCluster::start(1, 0));
    for node in old.seeds().iter().chain(&new.seeds()) {
        let mut conn = node_connection(node, None);
        let _: () = redis::cmd("ACL")
            .arg(
                &[
                    "SETUSER", "svc", "on", ">pw", "~*", "&*", "+@all", "-client",
                ][..],
            )
            .query(&mut conn)
            .unwrap();
    }
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), old.seeds());
    config.backend_credentials = Some(cinnabar_cluster::Credentials {
        user: Some("svc".into()),
        password: "pw".into(),
    });
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["RPUSH", "q", "x"]), ":1\r\n");
    // CLIENT ID is refused on the blocking command's connection: the element still arrives.
    assert_eq!(
        ask(&mut client, &["BLPOP", "q", "1"]),
        "*2\r\n$1\r\nq\r\n$1\r\nx\r\n"
    );
    // Such a client cannot be released, so a switch waits for it and gives up within its bound
    // rather than leave it blocked on the old cluster.
    let mut blocked = connect(proxy.local_addr());
    blocked
        .write_all(&support::command(&["BLPOP", "q", "0"]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut request = unchecked(&new);
    request.credentials = Some(cinnabar_cluster::Credentials {
        user: Some("svc".into()),
        password: "pw".into(),
    });
    request.max_pause = Duration::from_millis(300);
    let report = proxy.switch_backend(request).await;
    assert_eq!(report.outcome, Outcome::Abandoned, "{report:?}");
    assert_eq!(ask(&mut client, &["RPUSH", "q", "y"]), ":1\r\n");
    assert_eq!(
        support::read_replies(&mut blocked, 1)[0],
        "*2\r\n$1\r\nq\r\n$1\r\ny\r\n",
        "the blocked client stayed on the cluster it waits on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_group_switches_to_a_cluster_and_keys_route_by_slot_from_then_on() {
    let group = tokio::task::block_in_place(|| cinnabar_testkit::TestGroup::start(1, 3));
    let cluster = TestCluster::start(3, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
    config.group = Some(cinnabar_proxy::GroupConfig {
        name: cinnabar_testkit::group::GROUP_NAME.into(),
        sentinels: group.sentinel_addrs(),
        sentinel_credentials: None,
    });
    let proxy = cinnabar_proxy::start(config).unwrap();
    let addr = proxy.local_addr();

    // In front of the group: keys in any slots go together, other databases exist.
    let mut plain = connect(addr);
    assert_eq!(ask(&mut plain, &["MSET", "a", "1", "b", "2"]), "+OK\r\n");
    let mut other_db = connect(addr);
    assert_eq!(ask(&mut other_db, &["SELECT", "2"]), "+OK\r\n");
    assert_eq!(ask(&mut other_db, &["SET", "x", "1"]), "+OK\r\n");
    let mut queued = connect(addr);
    assert_eq!(ask(&mut queued, &["MULTI"]), "+OK\r\n");
    assert_eq!(ask(&mut queued, &["SET", "a", "3"]), "+QUEUED\r\n");
    assert_eq!(ask(&mut queued, &["SET", "b", "4"]), "+QUEUED\r\n");

    let report = proxy.switch_backend(unchecked(&cluster)).await;
    assert_eq!(report.outcome, Outcome::Switched, "{report:?}");
    assert_eq!(report.from_masters, vec![group.master().to_string()]);
    assert_eq!(report.to_masters.len(), 3);
    assert_eq!(report.databases_ended, 1, "{report:?}");

    // The same connection now writes to the cluster, its keys split by slot.
    assert_eq!(
        ask(&mut plain, &["MSET", "k1", "1", "k2", "2", "k3", "3"]),
        "+OK\r\n"
    );
    assert!(["k1", "k2", "k3"].iter().all(|k| holds(&cluster, k)));
    assert_eq!(
        ask(&mut plain, &["MGET", "k1", "k2", "k3"]),
        "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n"
    );
    // A connection in database 2 is told why and closed: the cluster has no database 2.
    let reply = ask(&mut other_db, &["GET", "x"]);
    assert!(reply.contains("only database 0"), "{reply}");
    let mut rest = Vec::new();
    let _ = other_db.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the connection was closed");
    // A transaction queued for the group did not run.
    let reply = ask(&mut queued, &["EXEC"]);
    assert!(reply.starts_with("-EXECABORT"), "{reply}");
    assert!(!holds(&cluster, "a"));
    // A new client asks for another database and is refused in so many words.
    let mut again = connect(addr);
    assert_eq!(
        ask(&mut again, &["SELECT", "2"]),
        "-ERR DB index is out of range\r\n"
    );
    // Cross-slot requests that cannot be split are refused like a cluster's.
    let reply = ask(&mut again, &["RENAME", "k1", "k2"]);
    assert!(reply.starts_with("-CROSSSLOT"), "{reply}");
}
