//! Through the proxy, clients and tools see Redis (issue "the gaps real clients found"): INFO as
//! complete as Redis 7.0's, `*-N` skipped, handler arity in Redis's words, SCRIPT/FUNCTION KILL
//! on every master, administration commands per node, ACL answered from the proxy's users,
//! WATCH ordering, and relaxed cross-slot transactions. Where Redis's own answer is the
//! specification, the same bytes go to a standalone `redis-server` and to the proxy (in front
//! of a real 3-master cluster) and the replies are compared.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cinnabar_proxy::{ProxyConfig, ProxyHandle, Transactions};
use cinnabar_testkit::{TestCluster, TestServer};

mod support;
use support::{ask, command, connect, exchange, node_connection};

/// A 3-master cluster and a proxy in front of it whose clients are `admin` (FLUSHALL, CONFIG,
/// BGSAVE … allowed), with `transactions` as given.
async fn proxy_with(transactions: Transactions) -> (TestCluster, ProxyHandle) {
    let cluster = TestCluster::start(3, 0).await;
    let proxy = start_proxy(&cluster, transactions, Some("admin"));
    (cluster, proxy)
}

fn start_proxy(
    cluster: &TestCluster,
    transactions: Transactions,
    role: Option<&str>,
) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.access.default_role = role.map(str::to_owned);
    config.transactions = transactions;
    cinnabar_proxy::start(config).unwrap()
}

/// The `# Section` headers of an INFO reply, in order.
fn headers(info: &str) -> Vec<String> {
    info.lines()
        .filter(|l| l.starts_with("# "))
        .map(str::to_owned)
        .collect()
}

/// The field names of an INFO reply.
fn fields(info: &str) -> BTreeSet<String> {
    info.lines()
        .filter_map(|l| l.split_once(':').map(|(f, _)| f.to_owned()))
        .filter(|f| !f.starts_with('$'))
        .collect()
}

/// One field's value in an INFO reply.
fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(&format!("{name}:"))
            .map(|v| v.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn info_carries_every_redis_server_and_clients_field_and_selects_sections_as_redis_does() {
    let (cluster, proxy) = proxy_with(Transactions::Strict).await;
    let redis = TestServer::start();
    let mut direct = connect(redis.addr());
    let mut through = connect(proxy.local_addr());
    for section in ["server", "clients", "replication", "cluster"] {
        let want = fields(&ask(&mut direct, &["INFO", section]));
        let got = fields(&ask(&mut through, &["INFO", section]));
        // Fields Redis 7.0 does not have (Redis 7.2 and Valkey 8 add them; the tests may run
        // on valkey-server): the proxy speaks for Redis 7.0 and does not claim them.
        let newer_than_7_0 = [
            "availability_zone",
            "listener0",
            "server_mode",
            "server_name",
            "valkey_version",
            "pubsub_clients",
            "watching_clients",
            "total_watched_keys",
            "total_blocking_keys",
            "total_blocking_keys_on_nokey",
            "replicas_waiting_psync",
        ];
        let missing: Vec<&String> = want
            .difference(&got)
            .filter(|f| !newer_than_7_0.contains(&f.as_str()))
            .collect();
        assert!(missing.is_empty(), "INFO {section} lacks {missing:?}");
    }
    let server = ask(&mut through, &["INFO", "server"]);
    let node = cluster.servers()[0].addr();
    let node_version = field(
        &ask(&mut connect(node), &["INFO", "server"]),
        "redis_version",
    );
    assert_eq!(field(&server, "redis_version"), node_version);
    assert_eq!(field(&server, "redis_mode").as_deref(), Some("standalone"));
    assert_eq!(field(&server, "arch_bits").as_deref(), Some("64"));
    assert_eq!(
        field(&server, "tcp_port"),
        Some(proxy.local_addr().port().to_string())
    );
    assert_eq!(
        field(&ask(&mut through, &["INFO", "replication"]), "role").as_deref(),
        Some("master")
    );
    // Section selection: the same headers, in the same order, as Redis for each form.
    for args in [
        &["INFO"][..],
        &["INFO", "default"],
        &["INFO", "all"],
        &["INFO", "everything"],
        &["INFO", "keyspace", "SERVER", "nosuch", "clients"],
        &["INFO", "all", "default"],
        &["INFO", "commandstats", "latencystats"],
    ] {
        assert_eq!(
            headers(&ask(&mut through, args)),
            headers(&ask(&mut direct, args)),
            "{args:?}"
        );
    }
    // An unknown section alone is an empty string, as in Redis.
    assert_eq!(ask(&mut through, &["INFO", "nosuch"]), "$0\r\n\r\n");
    assert_eq!(ask(&mut direct, &["INFO", "nosuch"]), "$0\r\n\r\n");
    // HELLO reports the same version once INFO has learned it.
    let hello = ask(&mut through, &["HELLO", "2"]);
    assert!(hello.contains(node_version.as_deref().unwrap()), "{hello}");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_clients_counts_clients_waiting_in_blocking_commands() {
    let (_cluster, proxy) = proxy_with(Transactions::Strict).await;
    let addr = proxy.local_addr();
    let mut observer = connect(addr);
    let blocked = |observer: &mut TcpStream| {
        field(&ask(observer, &["INFO", "clients"]), "blocked_clients").unwrap()
    };
    assert_eq!(blocked(&mut observer), "0");
    let mut waiter = connect(addr);
    waiter
        .write_all(&command(&["BLPOP", "blocked:list", "0"]))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked(&mut observer) != "1" {
        assert!(Instant::now() < deadline, "blocked_clients never became 1");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ask(&mut observer, &["RPUSH", "blocked:list", "x"]),
        ":1\r\n"
    );
    assert_eq!(
        support::read_replies(&mut waiter, 1),
        ["*2\r\n$12\r\nblocked:list\r\n$1\r\nx\r\n"]
    );
    assert_eq!(blocked(&mut observer), "0");
}

/// The replies of the proxy and of a standalone Redis to the same bytes.
fn both(proxy: SocketAddr, redis: SocketAddr, request: &[u8], replies: usize) -> [Vec<String>; 2] {
    [proxy, redis].map(|addr| exchange(&mut connect(addr), request, replies))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_negative_multibulk_length_is_skipped_and_the_connection_goes_on() {
    let (_cluster, proxy) = proxy_with(Transactions::Strict).await;
    let redis = TestServer::start();
    let request = b"*-10\r\n*1\r\n$4\r\nPING\r\n*-1\r\nPING\r\n";
    let [through, direct] = both(proxy.local_addr(), redis.addr(), request, 2);
    assert_eq!(through, ["+PONG\r\n", "+PONG\r\n"]);
    assert_eq!(through, direct);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_the_proxy_answers_itself_check_arity_in_redis_words() {
    let (_cluster, proxy) = proxy_with(Transactions::Strict).await;
    let redis = TestServer::start();
    for args in [
        &["PING", "a", "b"][..],
        &["PING", "a", "b", "c"],
        &["PING", "x"],
        &["ECHO"],
        &["ECHO", "a", "b"],
        &["SELECT", "0", "1"],
        &["CLIENT", "ID", "x"],
        &["CLIENT", "GETNAME", "x"],
        &["CLIENT", "SETNAME"],
        &["CLIENT", "LIST", "x"],
        &["CLIENT", "LIST", "TYPE", "bogus"],
        &["CLIENT", "LIST", "ID", "x"],
        &["CLIENT", "INFO", "x"],
        &["SLOWLOG", "GET", "1", "2"],
        &["SLOWLOG", "LEN", "x"],
        &["SLOWLOG", "RESET", "x"],
        &["ASKING", "x"],
        &["READONLY", "x"],
        &["READWRITE", "x"],
        &["RESET", "x"],
        &["AUTH", "a", "b", "c"],
        &["HELLO", "3", "x"],
        &["CLUSTER", "KEYSLOT"],
        &["CLUSTER", "SLOTS", "x"],
        &["RANDOMKEY", "x"],
        &["LASTSAVE", "x"],
        &["ACL", "WHOAMI", "x"],
        &["MEMORY", "USAGE"],
        &["SCRIPT", "KILL", "x"],
    ] {
        let [through, direct] = both(proxy.local_addr(), redis.addr(), &command(args), 1);
        assert_eq!(through, direct, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn script_kill_reaches_every_master_and_the_busy_node_serves_again() {
    let (cluster, proxy) = proxy_with(Transactions::Strict).await;
    let addr = proxy.local_addr();
    for server in cluster.servers() {
        let mut node = connect(server.addr());
        assert_eq!(
            ask(&mut node, &["CONFIG", "SET", "lua-time-limit", "100"]),
            "+OK\r\n"
        );
    }
    let mut control = connect(addr);
    // Nothing running: NOTBUSY, as from Redis.
    assert_eq!(
        ask(&mut control, &["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
    assert_eq!(
        ask(&mut control, &["FUNCTION", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
    let mut busy = connect(addr);
    busy.write_all(&command(&["EVAL", "while true do end", "1", "{busy}k"]))
        .unwrap();
    // The kill waits for the script to pass the busy threshold, then stops it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ask(&mut control, &["SCRIPT", "KILL"]);
        if reply == "+OK\r\n" {
            break;
        }
        assert!(
            reply.starts_with("-NOTBUSY") && Instant::now() < deadline,
            "{reply}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = support::read_replies(&mut busy, 1).remove(0);
    assert!(killed.contains("Script killed by user"), "{killed}");
    // The node serves again, through the proxy, for everyone.
    let mut later = connect(addr);
    assert_eq!(ask(&mut later, &["SET", "{busy}k", "v"]), "+OK\r\n");
    assert_eq!(ask(&mut busy, &["GET", "{busy}k"]), "$1\r\nv\r\n");
    assert_eq!(
        ask(&mut control, &["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn randomkey_returns_keys_of_every_master() {
    let (cluster, proxy) = proxy_with(Transactions::Strict).await;
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["RANDOMKEY"]), "$-1\r\n");
    for i in 0..30 {
        ask(&mut client, &["SET", &format!("rk:{i}"), "v"]);
    }
    // Keep one key per master: every one of them must come back.
    let mut kept = BTreeSet::new();
    for server in cluster.servers() {
        let mut node = node_connection(&cinnabar_testkit::cluster::node_addr(server), None);
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("rk:*").query(&mut node).unwrap();
        keys.sort();
        kept.insert(keys[0].clone());
        for key in &keys[1..] {
            ask(&mut client, &["DEL", key]);
        }
    }
    assert_eq!(kept.len(), 3);
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let reply = ask(&mut client, &["RANDOMKEY"]);
        seen.insert(reply.lines().nth(1).unwrap().to_owned());
        if seen.len() == kept.len() {
            break;
        }
    }
    assert_eq!(seen, kept);
}

#[tokio::test(flavor = "multi_thread")]
async fn administration_commands_reach_every_node() {
    let (_cluster, proxy) = proxy_with(Transactions::Strict).await;
    let mut admin = connect(proxy.local_addr());
    assert_eq!(ask(&mut admin, &["SET", "mem:k", "value"]), "+OK\r\n");
    let usage = ask(&mut admin, &["MEMORY", "USAGE", "mem:k"]);
    assert!(usage.starts_with(':'), "{usage}");
    let lastsave = ask(&mut admin, &["LASTSAVE"]);
    assert!(lastsave.starts_with(':'), "{lastsave}");
    let bgsave = ask(&mut admin, &["BGSAVE", "SCHEDULE"]);
    assert!(bgsave.starts_with("+Background saving"), "{bgsave}");
    assert_eq!(
        ask(&mut admin, &["CLIENT", "PAUSE", "50", "WRITE"]),
        "+OK\r\n"
    );
    assert_eq!(ask(&mut admin, &["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert_eq!(ask(&mut admin, &["MODULE", "LIST"]), "*0\r\n");
    assert_eq!(ask(&mut admin, &["LATENCY", "RESET"]), ":0\r\n");
    // Per node: every node's name next to its own reply when they differ.
    let stats = ask(&mut admin, &["MEMORY", "STATS"]);
    assert!(stats.starts_with("*6\r\n"), "{stats}");
    assert!(!stats.starts_with('-'), "{stats}");
    // The proxy's own slow log by default; the nodes' on request, named per node.
    assert_eq!(
        ask(
            &mut admin,
            &["CONFIG", "SET", "slowlog-log-slower-than", "0"]
        ),
        "+OK\r\n"
    );
    ask(&mut admin, &["GET", "mem:k"]);
    let nodes = ask(&mut admin, &["SLOWLOG", "GET", "1", "NODES"]);
    assert!(nodes.starts_with("*6\r\n"), "{nodes}");
    for server in _cluster.servers() {
        assert!(nodes.contains(&server.addr().to_string()), "{nodes}");
    }
    assert_eq!(
        ask(
            &mut admin,
            &["CONFIG", "SET", "slowlog-log-slower-than", "10000"]
        ),
        "+OK\r\n"
    );
    let doctor = ask(&mut admin, &["MEMORY", "DOCTOR"]);
    assert!(!doctor.starts_with('-'), "{doctor}");
    // Not an admin: refused by the proxy's guard, as before.
    let user = start_proxy(&_cluster, Transactions::Strict, None);
    let refused = ask(&mut connect(user.local_addr()), &["BGSAVE"]);
    assert!(refused.starts_with("-NOPERM"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_answers_from_the_proxy_users_and_roles() {
    let cluster = TestCluster::start(3, 0).await;
    let proxy = start_proxy(&cluster, Transactions::Strict, None);
    let mut client = connect(proxy.local_addr());
    assert_eq!(ask(&mut client, &["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    // The rest of ACL is for admins; an admin proxy answers from its own users.
    let admin_proxy = start_proxy(&cluster, Transactions::Strict, Some("admin"));
    let mut admin = connect(admin_proxy.local_addr());
    assert_eq!(
        ask(&mut admin, &["ACL", "USERS"]),
        "*1\r\n$7\r\ndefault\r\n"
    );
    let list = ask(&mut admin, &["ACL", "LIST"]);
    assert!(list.contains("user default on ~* &* +@all"), "{list}");
    let user = ask(&mut admin, &["ACL", "GETUSER", "default"]);
    assert!(user.contains("flags") && user.contains("+@all"), "{user}");
    assert_eq!(ask(&mut admin, &["ACL", "GETUSER", "nobody"]), "$-1\r\n");
    assert_eq!(
        ask(&mut admin, &["ACL", "DRYRUN", "default", "GET", "k"]),
        "+OK\r\n"
    );
    let cat = ask(&mut admin, &["ACL", "CAT"]);
    assert!(cat.contains("keyspace"), "{cat}");
    for args in [&["ACL", "SETUSER", "bob"][..], &["ACL", "DELUSER", "bob"]] {
        let refusal = ask(&mut admin, args);
        assert!(refusal.contains("cinnabar.toml"), "{refusal}");
    }
    // The rest of ACL stays an admin's.
    let refused = ask(&mut client, &["ACL", "USERS"]);
    assert!(refused.starts_with("-NOPERM"), "{refused}");
    let dry = ask(&mut admin, &["ACL", "DRYRUN", "nobody", "GET", "k"]);
    assert_eq!(dry, "-ERR User 'nobody' not found\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn between_watch_and_exec_the_clients_own_writes_and_flushall_fail_exec_as_in_redis() {
    let (_cluster, proxy) = proxy_with(Transactions::Strict).await;
    let redis = TestServer::start();
    let own_write = [
        command(&["SET", "w:k", "1"]),
        command(&["WATCH", "w:k"]),
        command(&["SET", "w:k", "2"]),
        command(&["MULTI"]),
        command(&["SET", "w:k", "3"]),
        command(&["EXEC"]),
        command(&["GET", "w:k"]),
    ]
    .concat();
    let flush = [
        command(&["SET", "w:k", "1"]),
        command(&["WATCH", "w:k"]),
        command(&["FLUSHALL"]),
        command(&["MULTI"]),
        command(&["SET", "w:k", "3"]),
        command(&["EXEC"]),
        command(&["EXISTS", "w:k"]),
    ]
    .concat();
    // Pipelined in one write, many times: the WATCH must never lose the race with the write.
    for _ in 0..20 {
        for request in [&own_write, &flush] {
            let [through, direct] = both(proxy.local_addr(), redis.addr(), request, 7);
            assert_eq!(through, direct);
            assert_eq!(through[5], "*-1\r\n");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relaxed_transactions_run_each_command_on_its_owner_and_strict_ones_are_refused() {
    let (cluster, relaxed) = proxy_with(Transactions::Relaxed).await;
    let strict = start_proxy(&cluster, Transactions::Strict, Some("admin"));
    // `tx:a` and `tx:b` live on different masters' slots (15495 and 2879 … whatever they
    // are, different slots is what matters; CROSSSLOT from the strict proxy proves it).
    let request = [
        command(&["MULTI"]),
        command(&["SET", "tx:a", "1"]),
        command(&["SET", "tx:b", "2"]),
        command(&["INCR", "tx:a"]),
        command(&["LPUSH", "tx:b", "x"]),
        command(&["GET", "tx:b"]),
        command(&["EXEC"]),
    ]
    .concat();
    let replies = exchange(&mut connect(relaxed.local_addr()), &request, 7);
    assert_eq!(
        replies[..6],
        [
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n"
        ]
    );
    assert_eq!(
        replies[6],
        "*5\r\n+OK\r\n+OK\r\n:2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$1\r\n2\r\n"
    );
    assert!(
        relaxed
            .metrics()
            .contains("cinnabar_relaxed_transactions_total 1"),
        "the relaxed EXEC is counted"
    );
    let replies = exchange(&mut connect(strict.local_addr()), &request, 7);
    assert_eq!(
        replies[2],
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        replies[6],
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    // One slot stays atomic (one MULTI … EXEC on its master) in relaxed mode too.
    let one_slot = [
        command(&["MULTI"]),
        command(&["SET", "{tx}a", "1"]),
        command(&["INCR", "{tx}a"]),
        command(&["EXEC"]),
    ]
    .concat();
    let replies = exchange(&mut connect(relaxed.local_addr()), &one_slot, 4);
    assert_eq!(replies[3], "*2\r\n+OK\r\n:2\r\n");
    assert!(
        relaxed
            .metrics()
            .contains("cinnabar_relaxed_transactions_total 1")
    );
}
