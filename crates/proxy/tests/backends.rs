//! How the proxy talks to its backends: RESP3 clients get RESP3 replies (their own backend
//! connections), reads follow the read policy to replicas, backend credentials are used on
//! every kind of connection and never shown, and a node that stops answering costs its
//! requests a timely error instead of a hang.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cinnabar_cluster::{Credentials, NodeAddr};
use cinnabar_proxy::{ProxyConfig, ReadFrom};
use cinnabar_testkit::TestCluster;
use cinnabar_testkit::cluster::node_addr;

mod support;
use support::{command, connect, exchange, node_connection};

fn config(cluster: &TestCluster) -> ProxyConfig {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    // Not about access control: every client may run everything (FLUSHALL, KEYS, CONFIG …).
    config.access.default_role = Some("admin".into());
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn resp3_clients_get_resp3_replies_while_resp2_clients_keep_resp2() {
    let cluster = TestCluster::start(2, 0).await;
    let proxy = cinnabar_proxy::start(config(&cluster)).unwrap();
    let mut resp2 = connect(proxy.local_addr());
    let mut resp3 = connect(proxy.local_addr());

    let hello = exchange(&mut resp3, &command(&["HELLO", "3"]), 1);
    assert!(hello[0].starts_with("%7\r\n"), "{hello:?}");
    assert!(hello[0].contains("$5\r\nproto\r\n:3\r\n"), "{hello:?}");

    // Same commands, both protocols, on one worker: each gets its own reply types.
    let mut script = command(&["HSET", "h{x}", "f", "v"]);
    script.extend(command(&["HGETALL", "h{x}"]));
    script.extend(command(&["GET", "missing{x}"]));
    script.extend(command(&["MGET", "h{x}", "missing{y}", "also-missing"]));
    script.extend(command(&["CLIENT", "GETNAME"]));
    script.extend(command(&["BLPOP", "empty-list", "0.05"]));
    script.extend(command(&["ZADD", "z", "1.5", "m"]));
    script.extend(command(&["ZSCORE", "z", "m"]));
    let got3 = exchange(&mut resp3, &script, 8);
    let got2 = exchange(&mut resp2, &script, 8);
    assert_eq!(got3[1], "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    assert_eq!(got2[1], "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    assert_eq!(got3[2], "_\r\n");
    assert_eq!(got2[2], "$-1\r\n");
    // MGET answers nil for a key of another type; split across slots, nils stay RESP3 nils.
    assert_eq!(got3[3], "*3\r\n_\r\n_\r\n_\r\n");
    assert_eq!(got2[3], "*3\r\n$-1\r\n$-1\r\n$-1\r\n");
    assert_eq!(got3[4], "_\r\n");
    assert_eq!(got2[4], "$-1\r\n");
    assert_eq!(
        got3[5], "_\r\n",
        "a timed-out BLPOP on a private connection"
    );
    assert_eq!(got2[5], "*-1\r\n");
    assert_eq!(
        got3[7], ",1.5\r\n",
        "RESP3 doubles come from a RESP3 backend connection"
    );
    assert_eq!(got2[7], "$3\r\n1.5\r\n");

    // Split commands merge RESP3 parts; nulls stay RESP3 nulls.
    let mut split = command(&["SET", "k1", "a"]);
    split.extend(command(&["MGET", "k1", "nope-1", "nope-2"]));
    let got = exchange(&mut resp3, &split, 2);
    assert_eq!(got[1], "*3\r\n$1\r\na\r\n_\r\n_\r\n");

    // HELLO 2 and RESET both return to RESP2.
    let mut back = command(&["HELLO", "2"]);
    back.extend(command(&["HGETALL", "h{x}"]));
    back.extend(command(&["HELLO", "3"]));
    back.extend(command(&["RESET"]));
    back.extend(command(&["HGETALL", "h{x}"]));
    let got = exchange(&mut resp3, &back, 5);
    assert!(got[0].starts_with("*14\r\n"), "{got:?}");
    assert_eq!(got[1], "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    assert_eq!(got[3], "+RESET\r\n");
    assert_eq!(got[4], "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");

    // A RESP3 subscriber gets its messages as RESP3 push data.
    let mut subscriber = connect(proxy.local_addr());
    let mut subscribe = command(&["HELLO", "3"]);
    subscribe.extend(command(&["SUBSCRIBE", "news"]));
    let got = exchange(&mut subscriber, &subscribe, 2);
    assert_eq!(got[1], ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    let got = exchange(&mut resp2, &command(&["PUBLISH", "news", "hi"]), 1);
    assert_eq!(got[0], ":1\r\n");
    let got = exchange(&mut subscriber, b"", 1);
    assert_eq!(got[0], ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");

    // A version that does not exist is refused and changes nothing.
    let got = exchange(&mut resp2, &command(&["HELLO", "4"]), 1);
    assert!(got[0].starts_with("-NOPROTO"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_go_to_replicas_only_when_the_read_policy_says_so() {
    let mut cluster = TestCluster::start(1, 1).await;
    let (master, replica) = {
        let mut roles = cluster.servers().iter().map(|s| {
            let mut conn = node_connection(&node_addr(s), None);
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).unwrap();
            let is_master = matches!(&role[0], redis::Value::BulkString(r) if r == b"master");
            (is_master, node_addr(s))
        });
        let (a, b) = (roles.next().unwrap(), roles.next().unwrap());
        if a.0 { (a.1, b.1) } else { (b.1, a.1) }
    };
    let get_calls = |addr: &NodeAddr| -> u64 {
        let mut conn = node_connection(addr, None);
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };

    let mut prefer = config(&cluster);
    prefer.read_from = ReadFrom::PreferReplica;
    let prefer = cinnabar_proxy::start(prefer).unwrap();
    let mut client = connect(prefer.local_addr());
    let got = exchange(&mut client, &command(&["SET", "k", "v"]), 1);
    assert_eq!(got[0], "+OK\r\n", "writes go to the master");
    let mut wait = node_connection(&master, None);
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut wait)
        .unwrap();
    assert_eq!(acked, 1);

    // WAIT counts replicas that acknowledged this client's writes, over every master.
    let mut waits = command(&["SET", "w", "1"]);
    waits.extend(command(&["WAIT", "1", "5000"]));
    waits.extend(command(&["WAIT", "2", "100"]));
    waits.extend(command(&["WAIT", "1", "0"]));
    let started = Instant::now();
    let got = exchange(&mut client, &waits, 4);
    assert_eq!(got[1..], [":1\r\n", ":1\r\n", ":1\r\n"], "{got:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "WAIT 2 100 waited"
    );

    // CONFIG SET (admin only) reaches every node, the replica included.
    let got = exchange(
        &mut client,
        &command(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]),
        1,
    );
    assert_eq!(got[0], "+OK\r\n");
    for node in [&master, &replica] {
        let mut conn = node_connection(node, None);
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(&mut conn)
            .unwrap();
        assert_eq!(policy[1], "volatile-lru", "{node}");
    }
    let got = exchange(
        &mut client,
        &command(&["CONFIG", "SET", "no-such-parameter", "1"]),
        1,
    );
    assert!(
        got[0].starts_with("-ERR cinnabar: applied on 0 of 2 nodes; refused by"),
        "{got:?}"
    );
    assert!(
        got[0].contains(&master.to_string()) && got[0].contains(&replica.to_string()),
        "{got:?}"
    );

    // CONFIG GET reports per node where the nodes disagree, once where they agree.
    let mut conn = node_connection(&replica, None);
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut conn)
        .unwrap();
    let got = exchange(
        &mut client,
        &command(&["CONFIG", "GET", "maxmemory-policy"]),
        1,
    );
    let expected = format!("{master}=volatile-lru {replica}=allkeys-lru");
    assert!(got[0].contains(&expected), "{got:?}");
    let got = exchange(&mut client, &command(&["CONFIG", "GET", "appendonly"]), 1);
    assert!(
        got[0].ends_with("$10\r\nappendonly\r\n$3\r\nyes\r\n")
            || got[0].ends_with("$10\r\nappendonly\r\n$2\r\nno\r\n"),
        "{got:?}"
    );

    let (master_before, replica_before) = (get_calls(&master), get_calls(&replica));
    let mut gets = Vec::new();
    for _ in 0..20 {
        gets.extend(command(&["GET", "k"]));
    }
    let got = exchange(&mut client, &gets, 20);
    assert!(got.iter().all(|r| r == "$1\r\nv\r\n"), "{got:?}");
    assert_eq!(
        get_calls(&replica) - replica_before,
        20,
        "reads went to the replica"
    );
    assert_eq!(
        get_calls(&master),
        master_before,
        "the master served no read"
    );

    // The default policy reads from the master.
    let plain = cinnabar_proxy::start(config(&cluster)).unwrap();
    let mut plain_client = connect(plain.local_addr());
    let got = exchange(&mut plain_client, &command(&["GET", "k"]), 1);
    assert_eq!(got[0], "$1\r\nv\r\n");
    assert_eq!(get_calls(&master), master_before + 1);

    // Without its replica, prefer-replica falls back to the master; replica-only says why not.
    let mut only = config(&cluster);
    only.read_from = ReadFrom::ReplicaOnly;
    only.retry_window = Duration::from_millis(300);
    let only = cinnabar_proxy::start(only).unwrap();
    let mut only_client = connect(only.local_addr());
    assert_eq!(
        exchange(&mut only_client, &command(&["GET", "k"]), 1)[0],
        "$1\r\nv\r\n"
    );
    cluster.server_by_addr_mut(&replica).unwrap().kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fallback = loop {
        let got = exchange(&mut client, &command(&["GET", "k"]), 1);
        if got[0] == "$1\r\nv\r\n" || Instant::now() > deadline {
            break got;
        }
    };
    assert_eq!(
        fallback[0], "$1\r\nv\r\n",
        "prefer-replica fell back to the master"
    );
    let mut refused = String::new();
    for _ in 0..50 {
        refused = exchange(&mut only_client, &command(&["GET", "k"]), 1).remove(0);
        if refused.contains("replica") {
            break;
        }
    }
    assert!(
        refused.starts_with("-ERR") && refused.contains("replica"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_credentials_are_used_everywhere_and_never_shown() {
    const SECRET: &str = "s3cret-backend-pass";
    let cluster = TestCluster::start(2, 0).await;
    for server in cluster.servers() {
        let mut conn = node_connection(&node_addr(server), None);
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(SECRET)
            .exec(&mut conn)
            .unwrap();
    }

    let refused = cinnabar_proxy::start(config(&cluster)).unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("auth"),
        "{refused}"
    );

    let mut with_password = config(&cluster);
    with_password.backend_credentials = Some(Credentials {
        user: None,
        password: SECRET.into(),
    });
    assert!(!format!("{with_password:?}").contains(SECRET));
    let proxy = cinnabar_proxy::start(with_password).unwrap();
    let mut client = connect(proxy.local_addr());
    let mut script = Vec::new();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        script.extend(command(&["SET", k, v]));
    }
    script.extend(command(&["MGET", "a", "b", "c", "d"]));
    script.extend(command(&["BLPOP", "nothing", "0.05"]));
    script.extend(command(&["HELLO", "3"]));
    script.extend(command(&["GET", "a"]));
    script.extend(command(&["CLIENT", "INFO"]));
    script.extend(command(&["INFO"]));
    script.extend(command(&["AUTH", "guess"]));
    let got = exchange(&mut client, &script, 11);
    assert_eq!(got[4], "*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n4\r\n");
    assert_eq!(
        got[5], "*-1\r\n",
        "the private blocking connection logged in"
    );
    assert_eq!(got[7], "$1\r\n1\r\n", "the RESP3 connection logged in");
    for reply in &got {
        assert!(!reply.contains(SECRET), "the password leaked: {reply}");
    }

    // CONFIG GET never shows the backend's secrets; SCRIPT EXISTS asks every master.
    let mut admin = command(&["CONFIG", "GET", "requirepass"]);
    admin.extend(command(&["CONFIG", "GET", "maxmemory-policy"]));
    admin.extend(command(&["SCRIPT", "LOAD", "return 1"]));
    let got = exchange(&mut client, &admin, 3);
    assert!(got[0] == "*0\r\n" || got[0] == "%0\r\n", "{got:?}");
    assert!(got[1].contains("maxmemory-policy"), "{got:?}");
    let sha = got[2].lines().nth(1).unwrap().to_owned();
    let got = exchange(
        &mut client,
        &command(&["SCRIPT", "EXISTS", &sha, "0000"]),
        1,
    );
    assert_eq!(got[0], "*2\r\n:1\r\n:0\r\n");

    // Pub/sub connections log in too.
    let mut subscriber = connect(proxy.local_addr());
    let got = exchange(&mut subscriber, &command(&["SUBSCRIBE", "news"]), 1);
    assert!(got[0].contains("subscribe"), "{got:?}");
    let got = exchange(&mut client, &command(&["PUBLISH", "news", "hi"]), 1);
    assert_eq!(got[0], ":1\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_stops_answering_costs_its_requests_an_error_not_a_hang() {
    let cluster = TestCluster::start(2, 0).await;
    let mut config = config(&cluster);
    config.backend_read_timeout = Duration::from_millis(400);
    config.retry_window = Duration::from_millis(600);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let mut client = connect(proxy.local_addr());
    // One key on each master.
    let topology = {
        let mut conn = node_connection(&cluster.seeds()[0], None);
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn).unwrap();
        cinnabar_cluster::parse_cluster_nodes(&text).unwrap()
    };
    let owner = |key: &str| {
        let slot = cinnabar_commands::key_slot(key.as_bytes());
        topology
            .nodes
            .iter()
            .find(|n| n.slots.iter().any(|r| r.contains(slot)))
            .and_then(|n| n.addr.as_ref())
            .unwrap()
            .port
    };
    let mut keys: Vec<(&str, u16)> = ["k0", "k1", "k2", "k3", "k4", "k5"]
        .into_iter()
        .map(|k| (k, owner(k)))
        .collect();
    keys.dedup_by_key(|(_, port)| *port);
    let paused_port = keys[0].1;
    let (paused_key, live_key) = (
        keys[0].0,
        keys.iter().find(|(_, p)| *p != paused_port).unwrap().0,
    );
    exchange(&mut client, &command(&["SET", paused_key, "x"]), 1);
    exchange(&mut client, &command(&["SET", live_key, "y"]), 1);

    let paused = cluster
        .servers()
        .iter()
        .find(|s| s.port() == paused_port)
        .unwrap();
    paused.pause();
    let started = Instant::now();
    let got = exchange(&mut client, &command(&["GET", paused_key]), 1);
    let waited = started.elapsed();
    let mut other = connect(proxy.local_addr());
    let live = exchange(&mut other, &command(&["GET", live_key]), 1);
    paused.resume();
    assert!(got[0].starts_with("-"), "{got:?}");
    assert!(
        waited < Duration::from_secs(5),
        "the error took {waited:?}: {got:?}"
    );
    assert_eq!(live[0], "$1\r\ny\r\n", "the other master kept serving");
    // Once the node answers again, so does the proxy.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = exchange(&mut client, &command(&["GET", paused_key]), 1);
        if got[0] == "$1\r\nx\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_guards_a_transaction_on_a_connection_of_its_own() {
    let cluster = TestCluster::start(2, 0).await;
    let proxy = cinnabar_proxy::start(config(&cluster)).unwrap();
    let mut client = connect(proxy.local_addr());
    let mut other = connect(proxy.local_addr());

    // Nobody touches the watched key: the transaction runs.
    let mut script = command(&["SET", "{acct}:balance", "10"]);
    script.extend(command(&["WATCH", "{acct}:balance"]));
    script.extend(command(&["GET", "{acct}:balance"]));
    script.extend(command(&["MULTI"]));
    script.extend(command(&["INCRBY", "{acct}:balance", "5"]));
    script.extend(command(&["SET", "{acct}:log", "+5"]));
    script.extend(command(&["EXEC"]));
    let got = exchange(&mut client, &script, 7);
    assert_eq!(got[1], "+OK\r\n");
    assert_eq!(got[6], "*2\r\n:15\r\n+OK\r\n", "{got:?}");

    // Another client changes it between WATCH and EXEC: the transaction does not run.
    exchange(&mut client, &command(&["WATCH", "{acct}:balance"]), 1);
    exchange(&mut other, &command(&["SET", "{acct}:balance", "100"]), 1);
    let mut tx = command(&["MULTI"]);
    tx.extend(command(&["INCRBY", "{acct}:balance", "5"]));
    tx.extend(command(&["EXEC"]));
    tx.extend(command(&["GET", "{acct}:balance"]));
    let got = exchange(&mut client, &tx, 4);
    assert_eq!(got[2], "*-1\r\n", "{got:?}");
    assert_eq!(got[3], "$3\r\n100\r\n");

    // UNWATCH and DISCARD forget the keys; the next transaction runs.
    let mut forget = command(&["WATCH", "{acct}:balance"]);
    forget.extend(command(&["UNWATCH"]));
    forget.extend(command(&["SET", "{acct}:balance", "1"]));
    forget.extend(command(&["MULTI"]));
    forget.extend(command(&["INCR", "{acct}:balance"]));
    forget.extend(command(&["EXEC"]));
    let got = exchange(&mut client, &forget, 6);
    assert_eq!(got[1], "+OK\r\n");
    assert_eq!(got[5], "*1\r\n:2\r\n", "{got:?}");

    // Watched keys and the transaction share one slot, else the offending command fails.
    let mut cross = command(&["WATCH", "a", "b"]);
    cross.extend(command(&["WATCH", "{acct}:balance"]));
    cross.extend(command(&["WATCH", "{other}:x"]));
    cross.extend(command(&["MULTI"]));
    cross.extend(command(&["SET", "{other}:x", "1"]));
    cross.extend(command(&["EXEC"]));
    cross.extend(command(&["MULTI"]));
    cross.extend(command(&["WATCH", "{acct}:balance"]));
    cross.extend(command(&["DISCARD"]));
    let got = exchange(&mut client, &cross, 9);
    assert!(got[0].starts_with("-CROSSSLOT"), "{got:?}");
    assert_eq!(got[1], "+OK\r\n");
    assert!(got[2].starts_with("-CROSSSLOT"), "{got:?}");
    assert!(got[4].starts_with("-CROSSSLOT"), "{got:?}");
    assert!(got[5].starts_with("-EXECABORT"), "{got:?}");
    assert_eq!(got[7], "-ERR WATCH inside MULTI is not allowed\r\n");
    assert_eq!(got[8], "+OK\r\n");

    // A WATCH whose connection died makes EXEC report that the transaction did not run.
    let mut lost = connect(proxy.local_addr());
    exchange(&mut lost, &command(&["WATCH", "{acct}:balance"]), 1);
    // Kill every client connection on every node (the proxy's included).
    let mut killed = 0;
    for node in cluster.seeds() {
        let mut conn = node_connection(&node, None);
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut conn)
            .unwrap();
        killed += n;
    }
    assert!(killed > 0);
    let mut tx = command(&["MULTI"]);
    tx.extend(command(&["INCR", "{acct}:balance"]));
    tx.extend(command(&["EXEC"]));
    let got = exchange(&mut lost, &tx, 3);
    assert_eq!(got[2], "*-1\r\n", "{got:?}");
    let got = exchange(&mut client, &command(&["GET", "{acct}:balance"]), 1);
    assert_eq!(got[0], "$1\r\n2\r\n", "the doomed transaction did not run");
}

#[tokio::test(flavor = "multi_thread")]
async fn several_backend_connections_per_node_keep_each_clients_order() {
    let cluster = TestCluster::start(1, 0).await;
    let mut settings = config(&cluster);
    settings.backend_connections = 3;
    let proxy = cinnabar_proxy::start(settings).unwrap();
    let mut clients: Vec<TcpStream> = (0..6).map(|_| connect(proxy.local_addr())).collect();
    // Each client pipelines a read-after-write chain on one key: any reordering shows.
    for (c, client) in clients.iter_mut().enumerate() {
        let key = format!("chain:{c}");
        let mut script = command(&["DEL", &key]);
        for i in 0..200 {
            script.extend(command(&["INCR", &key]));
            if i % 50 == 0 {
                script.extend(command(&["GET", &key]));
            }
        }
        client.write_all(&script).unwrap();
    }
    for (c, client) in clients.iter_mut().enumerate() {
        let got = exchange(client, b"", 1 + 200 + 4);
        let mut expected = vec![got[0].clone()];
        for i in 0..200 {
            expected.push(format!(":{}\r\n", i + 1));
            if i % 50 == 0 {
                let n = (i + 1).to_string();
                expected.push(format!("${}\r\n{n}\r\n", n.len()));
            }
        }
        assert_eq!(got, expected, "client {c}");
    }
    // A client's lane is its CLIENT ID modulo the connection count: the node sees one
    // connection per lane in use (plus this test's own).
    let mut lanes = std::collections::HashSet::new();
    for client in &mut clients {
        let id = exchange(client, &command(&["CLIENT", "ID"]), 1).remove(0);
        let id: u64 = id.trim_start_matches(':').trim().parse().unwrap();
        lanes.insert(id % 3);
    }
    let mut node = node_connection(&cluster.seeds()[0], None);
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(&mut node)
        .unwrap();
    // (A topology refresh may hold one more connection for a moment.)
    let connections = list.lines().count();
    assert!(
        (lanes.len() + 1..=lanes.len() + 2).contains(&connections),
        "{} lanes in use: {list}",
        lanes.len()
    );
}
