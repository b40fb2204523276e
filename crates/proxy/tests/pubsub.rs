//! Pub/sub through the proxy against a real 3-master Redis Cluster, as a client of standalone
//! Redis sees it: PUBLISH counts every subscriber through the proxy and no one else, each
//! subscription gets each message once, a subscriber that leaves is gone from the counts at
//! once, keyspace notifications arrive from every master, PUBSUB introspection is merged over
//! masters, and CLIENT REPLY silences replies per connection.
//!
//! Tests share one cluster and proxy while any of them holds it, and take the `SERIAL` lock:
//! PUBLISH counts, PUBSUB NUMPAT and keyspace notifications are cluster-wide.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_proxy::{ProxyConfig, ProxyHandle};
use cinnabar_testkit::TestCluster;

mod support;
use support::{IO_TIMEOUT, ask, command, connect, exchange, node_connection, read_replies};

struct Shared {
    proxy: ProxyHandle,
    // Declared after the proxy so the proxy stops before its backends do.
    cluster: TestCluster,
}

/// The live fixture, if any test holds it; weak, so the cluster goes with the last test.
static SHARED: tokio::sync::Mutex<Weak<Shared>> = tokio::sync::Mutex::const_new(Weak::new());
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn shared() -> Arc<Shared> {
    let mut slot = SHARED.lock().await;
    if let Some(shared) = slot.upgrade() {
        return shared;
    }
    let cluster = TestCluster::start(3, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    // Not about access control: every client may run everything.
    config.access.default_role = Some("admin".into());
    // Subscribers and publishers land on different workers.
    config.workers = 2;
    let proxy = cinnabar_proxy::start(config).unwrap();
    let shared = Arc::new(Shared { proxy, cluster });
    *slot = Arc::downgrade(&shared);
    shared
}

/// Each master's address with the slot ranges it serves, the owner of slot 0 (the proxy's
/// pub/sub home) first.
async fn masters(cluster: &TestCluster) -> Vec<(NodeAddr, Vec<cinnabar_cluster::SlotRange>)> {
    let report = cluster.check().await;
    let mut masters: Vec<_> = report
        .nodes
        .into_iter()
        .filter(|n| !n.slots.is_empty())
        .map(|n| (n.addr, n.slots))
        .collect();
    masters.sort_by_key(|(_, slots)| !slots.iter().any(|r| r.contains(0)));
    assert_eq!(masters.len(), 3);
    masters
}

/// The first name `prefix:<n>` whose slot `ranges` serve.
fn name_served_by(prefix: &str, ranges: &[cinnabar_cluster::SlotRange]) -> String {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|name| {
            let slot = cinnabar_commands::key_slot(name.as_bytes());
            ranges.iter().any(|r| r.contains(slot))
        })
        .unwrap()
}

/// Waits until no subscription of an earlier test is left on any master: their clients are
/// gone, but the proxy ends their subscriptions as it notices.
fn wait_for_no_subscriptions(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut client = connect(addr);
    while ask(&mut client, &["PUBSUB", "NUMPAT"]) != ":0\r\n"
        || ask(&mut client, &["PUBSUB", "CHANNELS"]) != "*0\r\n"
        || ask(&mut client, &["PUBSUB", "SHARDCHANNELS"]) != "*0\r\n"
    {
        assert!(
            Instant::now() < deadline,
            "subscriptions outlived their clients"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn publish(addr: SocketAddr, channel: &str, message: &str) -> String {
    let mut publisher = connect(addr);
    ask(&mut publisher, &["PUBLISH", channel, message])
}

fn confirmation(kind: &str, name: &str, count: usize) -> String {
    format!(
        "*3\r\n${}\r\n{kind}\r\n${}\r\n{name}\r\n:{count}\r\n",
        kind.len(),
        name.len()
    )
}

fn message(channel: &str, text: &str) -> String {
    format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n{text}\r\n",
        channel.len(),
        text.len()
    )
}

/// What a subscriber received until its PING's answer, sent after a pause long enough for
/// any duplicate from another node to arrive: exactly the messages delivered, each once.
fn received_until_ping(stream: &mut TcpStream) -> Vec<String> {
    const PONG: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&command(&["PING"])).unwrap();
    let mut scanner = cinnabar_resp::ReplyScanner::new(cinnabar_resp::Limits::default());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        match scanner.scan(&buf).unwrap() {
            Some(len) => {
                let reply: Vec<u8> = buf.drain(..len).collect();
                if reply == PONG {
                    assert!(
                        buf.is_empty(),
                        "after PONG: {:?}",
                        String::from_utf8_lossy(&buf)
                    );
                    return got;
                }
                got.push(String::from_utf8(reply).unwrap());
            }
            None => {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "closed after {got:?}");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_counts_every_subscriber_through_the_proxy_and_each_gets_the_message_once() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    wait_for_no_subscriptions(addr);
    let masters = masters(&shared.cluster).await;
    // A channel whose slot is not on the home master: the count must not depend on where
    // the channel's name hashes.
    let channel = name_served_by("count", &masters[1].1);

    let mut first = connect(addr);
    let mut second = connect(addr);
    let mut by_pattern = connect(addr);
    assert_eq!(
        exchange(&mut first, &command(&["SUBSCRIBE", &channel]), 1),
        [confirmation("subscribe", &channel, 1)]
    );
    assert_eq!(
        exchange(&mut second, &command(&["SUBSCRIBE", &channel]), 1),
        [confirmation("subscribe", &channel, 1)]
    );
    assert_eq!(
        exchange(&mut by_pattern, &command(&["PSUBSCRIBE", "count:*"]), 1),
        [confirmation("psubscribe", "count:*", 1)]
    );

    assert_eq!(publish(addr, &channel, "hello"), ":3\r\n");
    assert_eq!(
        received_until_ping(&mut first),
        [message(&channel, "hello")]
    );
    assert_eq!(
        received_until_ping(&mut second),
        [message(&channel, "hello")]
    );
    let pmessage = format!(
        "*4\r\n$8\r\npmessage\r\n$7\r\ncount:*\r\n${}\r\n{channel}\r\n$5\r\nhello\r\n",
        channel.len()
    );
    assert_eq!(received_until_ping(&mut by_pattern), [pmessage]);

    // A sharded channel of another master joins a classic subscription on the same
    // connection, as on standalone Redis.
    let shard = name_served_by("shard", &masters[2].1);
    assert_eq!(
        exchange(&mut first, &command(&["SSUBSCRIBE", &shard]), 1),
        [confirmation("ssubscribe", &shard, 1)]
    );
    assert_eq!(
        ask(&mut connect(addr), &["SPUBLISH", &shard, "s"]),
        ":1\r\n"
    );
    let smessage = format!(
        "*3\r\n$8\r\nsmessage\r\n${}\r\n{shard}\r\n$1\r\ns\r\n",
        shard.len()
    );
    assert_eq!(received_until_ping(&mut first), [smessage]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_leaves_is_no_longer_counted_by_the_next_publish() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    wait_for_no_subscriptions(addr);
    // Each way of leaving, many times: the nodes must have dropped the subscriptions before
    // the client hears the reply that ends them.
    let leaving: [(&[u8], usize, &str); 3] = [
        (
            b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\n",
            2,
            "*3\r\n$12\r\npunsubscribe\r\n$22\r\n__keyspace@0__:leaver*\r\n:0\r\n",
        ),
        (b"RESET\r\n", 1, "+RESET\r\n"),
        (b"QUIT\r\n", 1, "+OK\r\n"),
    ];
    for round in 0..10 {
        for (request, replies, last_reply) in leaving {
            let mut subscriber = connect(addr);
            // A keyspace pattern too, so the subscriptions live on every master.
            subscriber
                .write_all(b"SUBSCRIBE leaver\r\nPSUBSCRIBE __keyspace@0__:leaver*\r\n")
                .unwrap();
            read_replies(&mut subscriber, 2);
            assert_eq!(publish(addr, "leaver", "x"), ":1\r\n");
            assert_eq!(
                received_until_ping(&mut subscriber),
                [message("leaver", "x")]
            );
            subscriber.write_all(request).unwrap();
            let got = read_replies(&mut subscriber, replies);
            assert_eq!(got.last().unwrap(), last_reply, "round {round}");
            let what = String::from_utf8_lossy(request);
            assert_eq!(
                publish(addr, "leaver", "y"),
                ":0\r\n",
                "round {round}, after {what:?}"
            );
            assert_eq!(
                ask(&mut connect(addr), &["PUBSUB", "NUMPAT"]),
                ":0\r\n",
                "round {round}, after {what:?}"
            );
        }
    }

    // A subscriber that just goes away is gone within a moment.
    let mut subscriber = connect(addr);
    subscriber
        .write_all(b"SUBSCRIBE leaver\r\nPSUBSCRIBE __keyspace@0__:leaver*\r\n")
        .unwrap();
    read_replies(&mut subscriber, 2);
    drop(subscriber);
    let deadline = Instant::now() + Duration::from_secs(2);
    while publish(addr, "leaver", "z") != ":0\r\n" {
        assert!(
            Instant::now() < deadline,
            "the subscription outlived its client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while ask(&mut connect(addr), &["PUBSUB", "NUMPAT"]) != ":0\r\n" {
        assert!(
            Instant::now() < deadline,
            "a pattern outlived its client on some master"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets `notify-keyspace-events` on every master directly (the proxy does not carry CONFIG
/// to clients without the admin role in production; here it is about the nodes).
fn notify_keyspace_events(masters: &[(NodeAddr, Vec<cinnabar_cluster::SlotRange>)], flags: &str) {
    for (addr, _) in masters {
        let mut node = node_connection(addr, None);
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(flags)
            .exec(&mut node)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keyspace_notifications_of_every_master_arrive_once() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    wait_for_no_subscriptions(addr);
    let masters = masters(&shared.cluster).await;
    notify_keyspace_events(&masters, "KEA");

    let mut by_pattern = connect(addr);
    let mut by_channel = connect(addr);
    let mut everything = connect(addr);
    // Confirmations count as on standalone Redis, not once per master.
    by_pattern
        .write_all(b"PSUBSCRIBE __keyspace@0__:ks:*\r\nSUBSCRIBE plain\r\n")
        .unwrap();
    assert_eq!(
        read_replies(&mut by_pattern, 2),
        [
            confirmation("psubscribe", "__keyspace@0__:ks:*", 1),
            confirmation("subscribe", "plain", 2)
        ]
    );
    assert_eq!(
        exchange(
            &mut by_channel,
            &command(&["SUBSCRIBE", "__keyevent@0__:set"]),
            1
        ),
        [confirmation("subscribe", "__keyevent@0__:set", 1)]
    );
    assert_eq!(
        exchange(&mut everything, &command(&["PSUBSCRIBE", "*"]), 1),
        [confirmation("psubscribe", "*", 1)]
    );

    let keys: Vec<String> = masters
        .iter()
        .map(|(_, r)| name_served_by("ks", r))
        .collect();
    let mut writer = connect(addr);
    for key in &keys {
        assert_eq!(ask(&mut writer, &["SET", key, "v"]), "+OK\r\n");
    }

    let mut got = received_until_ping(&mut by_pattern);
    got.sort();
    let mut expected: Vec<String> = keys
        .iter()
        .map(|key| {
            let channel = format!("__keyspace@0__:{key}");
            format!(
                "*4\r\n$8\r\npmessage\r\n$19\r\n__keyspace@0__:ks:*\r\n${}\r\n{channel}\r\n$3\r\nset\r\n",
                channel.len()
            )
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);

    let mut got = received_until_ping(&mut by_channel);
    got.sort();
    let mut expected: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                "*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n${}\r\n{key}\r\n",
                key.len()
            )
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);

    // `*` matches notifications, so it lives on every master; an ordinary PUBLISH still
    // arrives once, and counts that subscriber once.
    let notifications = received_until_ping(&mut everything);
    assert_eq!(notifications.len(), 6, "{notifications:?}");
    notify_keyspace_events(&masters, "");
    assert_eq!(publish(addr, "plain", "p"), ":2\r\n");
    assert_eq!(
        received_until_ping(&mut by_pattern),
        [message("plain", "p")]
    );
    assert_eq!(
        received_until_ping(&mut everything),
        ["*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$5\r\nplain\r\n$1\r\np\r\n"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_introspection_is_merged_over_masters() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    wait_for_no_subscriptions(addr);
    let masters = masters(&shared.cluster).await;
    let shard = name_served_by("intro:shard", &masters[1].1);

    let mut a = connect(addr);
    let mut b = connect(addr);
    let mut c = connect(addr);
    a.write_all(b"SUBSCRIBE intro:a intro:b\r\n").unwrap();
    read_replies(&mut a, 2);
    b.write_all(b"SUBSCRIBE intro:a __keyevent@0__:del\r\nPSUBSCRIBE intro:*\r\n")
        .unwrap();
    read_replies(&mut b, 3);
    c.write_all(format!("PSUBSCRIBE __keyspace@0__:*\r\nSSUBSCRIBE {shard}\r\n").as_bytes())
        .unwrap();
    read_replies(&mut c, 2);

    let mut client = connect(addr);
    let mut channels = redis_strings(&ask(&mut client, &["PUBSUB", "CHANNELS"]));
    channels.sort();
    assert_eq!(channels, ["__keyevent@0__:del", "intro:a", "intro:b"]);
    assert_eq!(
        redis_strings(&ask(&mut client, &["PUBSUB", "CHANNELS", "intro:?"])).len(),
        2
    );
    assert_eq!(
        ask(
            &mut client,
            &[
                "PUBSUB",
                "NUMSUB",
                "intro:a",
                "intro:b",
                "__keyevent@0__:del",
                "none"
            ]
        ),
        "*8\r\n$7\r\nintro:a\r\n:2\r\n$7\r\nintro:b\r\n:1\r\n$18\r\n__keyevent@0__:del\r\n:1\r\n$4\r\nnone\r\n:0\r\n"
    );
    assert_eq!(ask(&mut client, &["PUBSUB", "NUMPAT"]), ":2\r\n");
    // Through RESP3 backend connections too (Redis 7.0 answers an array there as well).
    let mut resp3 = connect(addr);
    exchange(&mut resp3, &command(&["HELLO", "3"]), 1);
    assert_eq!(
        ask(&mut resp3, &["PUBSUB", "NUMSUB", "intro:a", "none"]),
        "*4\r\n$7\r\nintro:a\r\n:2\r\n$4\r\nnone\r\n:0\r\n"
    );
    assert_eq!(
        redis_strings(&ask(&mut client, &["PUBSUB", "SHARDCHANNELS"])),
        [shard.as_str()]
    );
    assert_eq!(
        ask(&mut client, &["PUBSUB", "SHARDNUMSUB", &shard]),
        format!("*2\r\n${}\r\n{shard}\r\n:1\r\n", shard.len())
    );
    drop((a, b, c));
}

/// The bulk strings of an array reply.
fn redis_strings(reply: &str) -> Vec<String> {
    let Ok(Some((cinnabar_resp::Value::Array(items), _))) =
        cinnabar_resp::parse_value(reply.as_bytes(), &cinnabar_resp::Limits::default())
    else {
        panic!("not an array: {reply:?}");
    };
    items
        .into_iter()
        .map(|item| match item {
            cinnabar_resp::Value::Bulk(s) => String::from_utf8(s).unwrap(),
            other => panic!("not a bulk string: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_reply_off_on_and_skip_silence_replies_in_order() {
    let shared = shared().await;
    let _serial = SERIAL.lock().await;
    let addr = shared.proxy.local_addr();
    wait_for_no_subscriptions(addr);
    let mut stream = connect(addr);
    // Keys of several masters and a fan-out while replies are off; errors are silenced too.
    stream
        .write_all(
            &[
                command(&["CLIENT", "REPLY", "OFF"]),
                command(&["MSET", "reply:a", "1", "reply:b", "2", "reply:c", "3"]),
                command(&["MGET", "reply:a", "reply:b", "reply:c"]),
                command(&["DBSIZE"]),
                command(&["NOSUCHCOMMAND"]),
                command(&["CLIENT", "REPLY", "SKIP"]),
                command(&["CLIENT", "REPLY", "ON"]),
                command(&["GET", "reply:a"]),
                command(&["CLIENT", "REPLY", "SKIP"]),
                command(&["GET", "reply:b"]),
                command(&["GET", "reply:c"]),
                command(&["CLIENT", "REPLY", "SKIP"]),
                command(&["CLIENT", "REPLY", "SKIP"]),
                command(&["PING"]),
                command(&["CLIENT", "REPLY", "NOPE"]),
                command(&["CLIENT", "REPLY", "OFF"]),
                command(&["RESET"]),
                command(&["ECHO", "end"]),
            ]
            .concat(),
        )
        .unwrap();
    assert_eq!(
        read_replies(&mut stream, 6),
        [
            "+OK\r\n",
            "$1\r\n1\r\n",
            "$1\r\n3\r\n",
            "-ERR syntax error\r\n",
            "+RESET\r\n",
            "$3\r\nend\r\n"
        ]
    );
    // Nothing else follows.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut rest = [0u8; 64];
    match stream.read(&mut rest) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("unexpected: {other:?} {:?}", String::from_utf8_lossy(&rest)),
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}
