//! A real Sentinel-managed group for one test: a master, its replicas (`replicaof`) and a
//! quorum of Sentinels (`redis-server --sentinel`), each a [`TestServer`].
//!
//! Ready means every Sentinel sees every replica and every other Sentinel, so a failover a
//! test provokes is decided by the whole quorum, not by whoever happened to be discovered.

use std::time::{Duration, Instant};

use cinnabar_cluster::NodeAddr;
use cinnabar_local::config::SentinelMonitor;

use crate::cluster::node_addr;
use crate::server::{ServerOptions, TestServer};

/// The name every test group is monitored under.
pub const GROUP_NAME: &str = "cinnabar";

/// Upper bound for the Sentinels to discover each other and the replicas.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running group. `nodes[0]` was started as the master (Sentinel may have promoted another
/// since: ask [`TestGroup::master`]).
#[derive(Debug)]
pub struct TestGroup {
    /// The data nodes.
    pub nodes: Vec<TestServer>,
    /// The Sentinels.
    pub sentinels: Vec<TestServer>,
}

impl TestGroup {
    /// A master with `replicas` replicas watched by `sentinels` Sentinels (quorum: a
    /// majority), with a 1 s `down-after-milliseconds` so tests fail over quickly.
    ///
    /// # Panics
    /// When a server does not start or the Sentinels do not see the whole group in time.
    pub fn start(replicas: usize, sentinels: usize) -> Self {
        // As the local platform's groups of two or more replicas: a master that no replica
        // reaches refuses writes, so an old master cut off by a partition acknowledges none
        // that its demotion would drop.
        let guarded = |mut extra: Vec<(String, String)>| {
            if replicas >= 2 {
                extra.push(("min-replicas-to-write".into(), "1".into()));
                extra.push(("min-replicas-max-lag".into(), "10".into()));
            }
            extra
        };
        let master = TestServer::start_with(ServerOptions {
            extra: guarded(Vec::new()),
            ..ServerOptions::default()
        });
        let replica_options = ServerOptions {
            extra: guarded(vec![(
                "replicaof".into(),
                format!("127.0.0.1 {}", master.port()),
            )]),
            ..ServerOptions::default()
        };
        let mut nodes = vec![master];
        nodes.extend(TestServer::start_many(replicas, &replica_options));
        let mut monitor =
            SentinelMonitor::new(GROUP_NAME, "127.0.0.1", nodes[0].port(), sentinels / 2 + 1);
        monitor.down_after_ms = 1000;
        // A split vote (every Sentinel starting the election in the same millisecond and
        // voting for itself, seen in CI) is retried after twice this: at 10 s the group had no
        // master for 21 s, past the proxies' 10 s retry window. At 3 s a retry comes within it.
        monitor.failover_timeout_ms = 3_000;
        let sentinel_options = ServerOptions {
            sentinel: Some(monitor),
            ..ServerOptions::default()
        };
        let sentinels = TestServer::start_many(sentinels, &sentinel_options);
        let group = Self { nodes, sentinels };
        group.wait_discovered(replicas);
        group
    }

    /// The Sentinels' addresses.
    pub fn sentinel_addrs(&self) -> Vec<NodeAddr> {
        self.sentinels.iter().map(node_addr).collect()
    }

    /// The master the first answering Sentinel names.
    ///
    /// # Panics
    /// When no Sentinel answers.
    pub fn master(&self) -> NodeAddr {
        self.sentinels
            .iter()
            .find_map(|s| sentinel_master(s).ok())
            .expect("no Sentinel names a master")
    }

    /// The data node at `addr`.
    pub fn node_mut(&mut self, addr: &NodeAddr) -> Option<&mut TestServer> {
        self.nodes.iter_mut().find(|s| node_addr(s) == *addr)
    }

    /// Waits until every Sentinel names a master other than `old` and that node says
    /// `role:master`; returns it.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_new_master(&self, old: &NodeAddr, timeout: Duration) -> NodeAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let named: Vec<Option<NodeAddr>> = self
                .sentinels
                .iter()
                .map(|s| sentinel_master(s).ok())
                .collect();
            if let Some(Some(first)) = named.first()
                && first != old
                && named.iter().all(|n| n.as_ref() == Some(first))
                && role(first).as_deref() == Some("master")
            {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no new master after {timeout:?}: Sentinels name {named:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until some Sentinel (the failover's leader knows first) names a master other
    /// than `old` that says `role:master`; returns it. The others may still name `old`.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_first_new_master(&self, old: &NodeAddr, timeout: Duration) -> NodeAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let named = self
                .sentinels
                .iter()
                .filter_map(|s| sentinel_master(s).ok())
                .find(|m| m != old && role(m).as_deref() == Some("master"));
            if let Some(new) = named {
                return new;
            }
            assert!(
                Instant::now() < deadline,
                "no Sentinel named a new master after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_discovered(&self, replicas: usize) {
        let others = self.sentinels.len() - 1;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let views: Vec<(usize, usize)> = self
                .sentinels
                .iter()
                .map(|s| {
                    let master = sentinel_fields(s, &["SENTINEL", "MASTER", GROUP_NAME]);
                    let field = |name: &str| {
                        master
                            .as_ref()
                            .ok()
                            .and_then(|m| m.iter().find(|(k, _)| k == name))
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(0)
                    };
                    (field("num-slaves"), field("num-other-sentinels"))
                })
                .collect();
            if views.iter().all(|v| *v == (replicas, others)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Sentinels did not discover the group (replicas, other sentinels): {views:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What `sentinel` answers to `SENTINEL get-master-addr-by-name`.
fn sentinel_master(sentinel: &TestServer) -> redis::RedisResult<NodeAddr> {
    let mut conn = redis::Client::open(sentinel.url())?.get_connection()?;
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(GROUP_NAME)
        .query(&mut conn)?;
    Ok(NodeAddr::new(&host, port))
}

/// A flat field/value reply as pairs.
fn sentinel_fields(
    sentinel: &TestServer,
    args: &[&str],
) -> redis::RedisResult<Vec<(String, String)>> {
    let mut conn = redis::Client::open(sentinel.url())?.get_connection()?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let flat: Vec<String> = cmd.query(&mut conn)?;
    Ok(flat
        .chunks(2)
        .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
        .collect())
}

/// The `role:` line of a node's `INFO replication`, if it answers.
pub fn role(addr: &NodeAddr) -> Option<String> {
    let mut conn = redis::Client::open(addr.redis_url())
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn)
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .map(|r| r.trim().to_owned())
}
