//! What the user asked for (`cinnabar up` flags), validated before anything is started.
//!
//! Validation happens here, up front, so an impossible request never leaves half a cluster
//! behind. It must never touch the file system or the network.

use serde::{Deserialize, Serialize};

use crate::error::{LocalError, Result};
use crate::ports::BUS_PORT_OFFSET;

/// Upper bound on masters: far beyond any sensible single-machine cluster, low enough to catch
/// a typo (`--masters 3000`).
pub const MAX_MASTERS: u16 = 100;
/// Upper bound on replicas per master; more adds memory and replication traffic, no safety.
pub const MAX_REPLICAS: u16 = 5;
/// Upper bound on proxy worker threads: one per core is the most that helps; this only catches
/// a typo.
pub const MAX_PROXY_WORKERS: u16 = 64;
/// Proxy workers when not given: one worker serves far more than local development sends, and
/// leaves the machine's other cores to the nodes.
pub const DEFAULT_PROXY_WORKERS: u16 = 1;

/// Upper bound on Sentinels: a quorum needs a majority, so more than a handful only adds
/// gossip; this only catches a typo.
pub const MAX_SENTINELS: u16 = 9;
/// Sentinels when not given: the smallest quorum that survives one lost Sentinel.
pub const DEFAULT_SENTINELS: u16 = 3;
/// The name the Sentinels of a local group monitor it under.
pub const GROUP_NAME: &str = "cinnabar";

/// What kind of Redis deployment the nodes form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// A Redis Cluster: slots over `masters` shards of `1 + replicas` nodes.
    #[default]
    Cluster,
    /// One master, `replicas` replicas and `sentinels` Sentinels (`redis-server --sentinel`)
    /// that fail over by quorum; no slots, every database.
    Sentinel,
}

impl std::str::FromStr for Topology {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "cluster" => Ok(Self::Cluster),
            "sentinel" => Ok(Self::Sentinel),
            other => Err(format!(
                "unknown topology '{other}' (expected cluster or sentinel)"
            )),
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        })
    }
}

/// Upper bound on simulated hosts; only catches a typo.
pub const MAX_HOSTS: u16 = 64;

/// The eviction policies Redis accepts for `maxmemory-policy`.
pub const EVICTION_POLICIES: [&str; 8] = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// The shape and settings of a local cluster.
///
/// Port layout, from `port` (`--port`, default 6380): with the proxy (the default) the proxy
/// listens on `port` and the nodes take the following ports (`port+1` …), so the endpoint a
/// person types is the same whether or not the proxy runs. Without it (`--no-proxy`) the first
/// node listens on `port` and the others follow. Every node also uses its port + 10000 as its
/// cluster bus port; the proxy needs no bus port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSpec {
    /// Number of shards (each with one master).
    pub masters: u16,
    /// Replicas per master.
    pub replicas: u16,
    /// The endpoint's port (`--port`); see the type's docs for the layout. Stored under its
    /// first name, from before the proxy, when it was always the first node's port.
    #[serde(rename = "first_port")]
    pub port: u16,
    /// `maxmemory` per node, as given (`256mb`); `0` means no limit.
    pub maxmemory: String,
    /// `maxmemory-policy`.
    pub maxmemory_policy: String,
    /// `cluster-node-timeout` in ms.
    pub node_timeout_ms: u64,
    /// Whether a proxy in the supervisor is the endpoint. Fixed when the cluster is created,
    /// since it decides the node ports. State files from before the proxy lack it: those
    /// clusters had none (`false`), so they resume on the ports their data was made on.
    #[serde(default)]
    pub proxy: bool,
    /// Proxy worker threads (ignored without the proxy).
    #[serde(default = "default_proxy_workers")]
    pub proxy_workers: u16,
    /// Simulated hosts `h0..` the nodes are spread over (round robin), so the planner's placement
    /// rules (a shard's nodes on different hosts, masters spread) can be exercised on one
    /// machine; 0 means no host labels. Fixed when the cluster is created.
    #[serde(default)]
    pub hosts: u16,
    /// Cluster or Sentinel group; state files from before the Sentinel topology are clusters.
    #[serde(default)]
    pub topology: Topology,
    /// Sentinels of a Sentinel group (their ports follow the data nodes'); unused by a cluster.
    #[serde(default = "default_sentinels")]
    pub sentinels: u16,
}

fn default_proxy_workers() -> u16 {
    DEFAULT_PROXY_WORKERS
}

fn default_sentinels() -> u16 {
    DEFAULT_SENTINELS
}

impl Default for LocalSpec {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas: 1,
            port: 6380,
            maxmemory: "256mb".into(),
            maxmemory_policy: "allkeys-lru".into(),
            node_timeout_ms: crate::config::DEFAULT_NODE_TIMEOUT_MS,
            proxy: true,
            proxy_workers: DEFAULT_PROXY_WORKERS,
            hosts: 0,
            topology: Topology::Cluster,
            sentinels: DEFAULT_SENTINELS,
        }
    }
}

impl LocalSpec {
    /// Total number of data nodes (Sentinels not counted).
    pub fn node_count(&self) -> usize {
        usize::from(self.masters) * (usize::from(self.replicas) + 1)
    }

    /// Whether this is a Sentinel group.
    pub fn is_sentinel(&self) -> bool {
        self.topology == Topology::Sentinel
    }

    /// Client ports of a Sentinel group's Sentinels: right after the data nodes' (none for a
    /// cluster).
    pub fn sentinel_ports(&self) -> impl Iterator<Item = u16> + '_ {
        let first = self.first_node_port() + self.node_count() as u16;
        let count = if self.is_sentinel() {
            self.sentinels
        } else {
            0
        };
        (0..count).map(move |i| first + i)
    }

    /// A majority of the Sentinels: how many must agree that the master is down.
    pub fn quorum(&self) -> usize {
        usize::from(self.sentinels) / 2 + 1
    }

    /// The simulated hosts' labels, `h0..h{hosts-1}` (empty without hosts).
    pub fn host_names(&self) -> Vec<String> {
        (0..self.hosts).map(|h| format!("h{h}")).collect()
    }

    /// The host of the `index`th node at creation: round robin over the hosts.
    pub fn host_of(&self, index: usize) -> Option<String> {
        (self.hosts > 0).then(|| format!("h{}", index % usize::from(self.hosts)))
    }

    /// The proxy's port, when the cluster has a proxy.
    pub fn proxy_port(&self) -> Option<u16> {
        self.proxy.then_some(self.port)
    }

    /// The proxy's admin HTTP listener (`/metrics`, `/healthz`, `/readyz`): the proxy's port +
    /// 10000, as a node's cluster bus port is its client port + 10000 (no node uses it: node
    /// ports start after the proxy's).
    pub fn admin_port(&self) -> Option<u16> {
        self.proxy_port().and_then(|p| p.checked_add(10_000))
    }

    /// Client port of the first node: right after the proxy's, or `port` itself without one.
    pub fn first_node_port(&self) -> u16 {
        self.port + u16::from(self.proxy)
    }

    /// Client ports of all nodes, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        let first = self.first_node_port();
        (0..self.node_count()).map(move |i| first + i as u16)
    }

    /// `127.0.0.1:<port>`: what clients use, the proxy or (without one) the first node.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `maxmemory` in bytes (0 = unlimited).
    ///
    /// # Errors
    /// [`LocalError::InvalidTopology`] when the size does not parse.
    pub fn maxmemory_bytes(&self) -> Result<u64> {
        parse_memory(&self.maxmemory)
    }

    /// Checks every rule that does not need the machine: counts, ports, sizes, policy names.
    ///
    /// # Errors
    /// [`LocalError::InvalidTopology`] naming the rule that is broken and what to do instead.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(LocalError::InvalidTopology(msg));
        if self.masters == 0 {
            return bad(
                "--masters 0: a cluster needs at least one master to hold the 16384 slots".into(),
            );
        }
        if self.masters > MAX_MASTERS {
            return bad(format!(
                "--masters {}: at most {MAX_MASTERS} masters on one machine",
                self.masters
            ));
        }
        if self.replicas > MAX_REPLICAS {
            return bad(format!(
                "--replicas {}: at most {MAX_REPLICAS} replicas per master; more adds memory and \
                 replication load without making one machine any safer",
                self.replicas
            ));
        }
        if self.hosts > MAX_HOSTS {
            return bad(format!(
                "--hosts {}: at most {MAX_HOSTS} simulated hosts",
                self.hosts
            ));
        }
        if self.port < 1024 {
            return bad(format!("--port {}: use a port of 1024 or above", self.port));
        }
        if self.is_sentinel() {
            if self.masters != 1 {
                return bad(format!(
                    "--masters {}: a Sentinel group has exactly one master (use --topology \
                     cluster to shard)",
                    self.masters
                ));
            }
            if self.replicas == 0 {
                return bad(
                    "--replicas 0: a Sentinel group needs a replica to fail over to".into(),
                );
            }
            if !(1..=MAX_SENTINELS).contains(&self.sentinels) {
                return bad(format!(
                    "--sentinels {}: use 1 to {MAX_SENTINELS} (3 or 5 survive the loss of 1 or 2)",
                    self.sentinels
                ));
            }
            if !self.proxy {
                return bad(
                    "--no-proxy: a Sentinel group's endpoint is the proxy (it follows the \
                     master); plain clients would need Sentinel support"
                        .into(),
                );
            }
            if self.hosts > 0 {
                return bad("--hosts: simulated hosts apply to clusters only".into());
            }
        }
        let sentinels = self.sentinel_ports().count() as u32;
        let first = u32::from(self.port) + u32::from(self.proxy);
        let last = first + self.node_count() as u32 + sentinels - 1;
        if last + u32::from(BUS_PORT_OFFSET) > 65_535 {
            let proxy = if self.proxy {
                format!("the proxy port {} and ", self.port)
            } else {
                String::new()
            };
            return bad(format!(
                "--port {}: {proxy}{} nodes need ports {first}-{last} and bus ports {}-{}, past 65535",
                self.port,
                self.node_count(),
                first + 10_000,
                last + 10_000
            ));
        }
        if self.proxy && !(1..=MAX_PROXY_WORKERS).contains(&self.proxy_workers) {
            return bad(format!(
                "--proxy-workers {}: use 1 to {MAX_PROXY_WORKERS} (one per core at most helps)",
                self.proxy_workers
            ));
        }
        if !EVICTION_POLICIES.contains(&self.maxmemory_policy.as_str()) {
            return bad(format!(
                "--maxmemory-policy {}: not a Redis eviction policy; use one of {}",
                self.maxmemory_policy,
                EVICTION_POLICIES.join(", ")
            ));
        }
        self.maxmemory_bytes()?;
        Ok(())
    }

    /// Checks that the nodes of a new cluster can be spread over its hosts: each shard needs
    /// as many different hosts as it has members. Only for creation: a scaled cluster's shape
    /// is the planner's business, and its recorded nodes resume as they are.
    ///
    /// # Errors
    /// [`LocalError::InvalidTopology`] naming the host count that would do.
    pub fn check_hosts(&self) -> Result<()> {
        let bad = |msg: String| Err(LocalError::InvalidTopology(msg));
        if self.hosts > 0 && self.hosts <= self.replicas {
            return bad(format!(
                "--hosts {}: a master and its {} replica{} need {} different hosts; use --hosts {} \
                 or more, or fewer replicas",
                self.hosts,
                self.replicas,
                if self.replicas == 1 { "" } else { "s" },
                self.replicas + 1,
                self.replicas + 1
            ));
        }
        Ok(())
    }

    /// Refuses a total `maxmemory` above 80% of this machine's RAM: Redis must evict, not be
    /// OOM-killed or swap (MISSION T4).
    ///
    /// # Errors
    /// [`LocalError::InvalidTopology`] with the arithmetic.
    pub fn check_fits_memory(&self, machine_bytes: u64) -> Result<()> {
        let per_node = self.maxmemory_bytes()?;
        let total = per_node.saturating_mul(self.node_count() as u64);
        let budget = machine_bytes / 10 * 8;
        if per_node == 0 || total <= budget {
            return Ok(());
        }
        Err(LocalError::InvalidTopology(format!(
            "{} nodes × maxmemory {} = {} exceeds 80% of this machine's {} memory; lower --maxmemory or the node count",
            self.node_count(),
            self.maxmemory,
            human_bytes(total),
            human_bytes(machine_bytes)
        )))
    }
}

/// Parses Redis memory sizes: `1024`, `100k`, `100kb`, `256mb`, `1g`, `1gb` (case-insensitive;
/// `k`=1000, `kb`=1024 as in redis.conf).
///
/// # Errors
/// [`LocalError::InvalidTopology`] when the text is not such a size.
pub fn parse_memory(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| factor != 0)
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            LocalError::InvalidTopology(format!(
                "--maxmemory {text}: not a memory size; write e.g. 256mb, 1gb, or 0 for no limit"
            ))
        })
}

/// `1.5gb`-style rendering for messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["b", "kb", "mb", "gb"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}b")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Total RAM of this machine from `/proc/meminfo`, if readable.
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LocalSpec {
        LocalSpec::default()
    }

    #[test]
    fn default_spec_is_a_proxy_on_6380_in_front_of_six_nodes_on_the_next_ports() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(s.node_count(), 6);
        assert_eq!(s.proxy_port(), Some(6380));
        assert_eq!(s.endpoint(), "127.0.0.1:6380");
        assert_eq!(
            s.ports().collect::<Vec<_>>(),
            vec![6381, 6382, 6383, 6384, 6385, 6386]
        );
    }

    #[test]
    fn without_the_proxy_the_first_node_is_the_endpoint() {
        let s = LocalSpec {
            proxy: false,
            ..spec()
        };
        assert_eq!(s.proxy_port(), None);
        assert_eq!(s.endpoint(), "127.0.0.1:6380");
        assert_eq!(s.ports().next(), Some(6380));
    }

    #[test]
    fn a_state_file_from_before_the_proxy_resumes_without_one_on_its_ports() {
        let stored = r#"{"masters":3,"replicas":1,"first_port":7000,"maxmemory":"256mb",
            "maxmemory_policy":"allkeys-lru","node_timeout_ms":5000}"#;
        let s: LocalSpec = serde_json::from_str(stored).unwrap();
        assert!(!s.proxy);
        assert_eq!(s.ports().next(), Some(7000));
        assert_eq!(s.proxy_workers, DEFAULT_PROXY_WORKERS);
    }

    #[test]
    fn hosts_are_assigned_round_robin_and_absent_by_default() {
        assert_eq!(spec().host_of(0), None);
        assert!(spec().host_names().is_empty());
        let s = LocalSpec { hosts: 3, ..spec() };
        assert_eq!(s.host_names(), vec!["h0", "h1", "h2"]);
        let hosts: Vec<String> = (0..5).filter_map(|i| s.host_of(i)).collect();
        assert_eq!(hosts, vec!["h0", "h1", "h2", "h0", "h1"]);
        let stored = r#"{"masters":3,"replicas":1,"first_port":7000,"maxmemory":"256mb",
            "maxmemory_policy":"allkeys-lru","node_timeout_ms":5000}"#;
        assert_eq!(serde_json::from_str::<LocalSpec>(stored).unwrap().hosts, 0);
    }

    #[test]
    fn fewer_hosts_than_a_shard_has_members_is_refused() {
        let err = LocalSpec { hosts: 1, ..spec() }
            .check_hosts()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--hosts 1: a master and its 1 replica need 2"),
            "{err}"
        );
        LocalSpec { hosts: 2, ..spec() }.check_hosts().unwrap();
        spec().check_hosts().unwrap();
    }

    #[test]
    fn proxy_workers_out_of_range_are_rejected() {
        for workers in [0, MAX_PROXY_WORKERS + 1] {
            let err = LocalSpec {
                proxy_workers: workers,
                ..spec()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("--proxy-workers {workers}")), "{err}");
        }
    }

    #[test]
    fn zero_masters_is_rejected_with_the_reason() {
        let err = LocalSpec {
            masters: 0,
            ..spec()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--masters 0"), "{err}");
    }

    #[test]
    fn too_many_replicas_is_rejected() {
        let err = LocalSpec {
            replicas: 9,
            ..spec()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--replicas 9"), "{err}");
    }

    #[test]
    fn ports_running_past_65535_with_bus_offset_are_rejected() {
        // The proxy on 55529 and 6 nodes from 55530: bus ports end exactly at 65535, which
        // fits; one more port does not. Without the proxy the nodes start one port earlier.
        for (proxy, fits) in [(true, 55_529), (false, 55_530)] {
            LocalSpec {
                port: fits,
                proxy,
                ..spec()
            }
            .validate()
            .unwrap();
            let err = LocalSpec {
                port: fits + 1,
                proxy,
                ..spec()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(err.contains("past 65535"), "{err}");
        }
    }

    #[test]
    fn unknown_eviction_policy_lists_the_valid_ones() {
        let err = LocalSpec {
            maxmemory_policy: "lru".into(),
            ..spec()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("allkeys-lru"), "{err}");
    }

    #[test]
    fn memory_sizes_parse_like_redis_conf() {
        assert_eq!(parse_memory("256mb").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("100k").unwrap(), 100_000);
        assert_eq!(parse_memory("0").unwrap(), 0);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("12tb").is_err());
        assert!(parse_memory("99999999999999999999gb").is_err());
    }

    #[test]
    fn total_maxmemory_beyond_the_machine_is_refused() {
        let s = LocalSpec {
            maxmemory: "8gb".into(),
            ..spec()
        };
        let err = s.check_fits_memory(24 << 30).unwrap_err().to_string();
        assert!(err.contains("6 nodes × maxmemory 8gb = 48.0gb"), "{err}");
        s.check_fits_memory(64 << 30).unwrap();
        LocalSpec {
            maxmemory: "0".into(),
            ..spec()
        }
        .check_fits_memory(1)
        .unwrap();
    }
}

/// Flags given on the command line; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecOverrides {
    /// `--masters`.
    pub masters: Option<u16>,
    /// `--replicas`.
    pub replicas: Option<u16>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--maxmemory`.
    pub maxmemory: Option<String>,
    /// `--maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// `--node-timeout-ms`.
    pub node_timeout_ms: Option<u64>,
    /// `Some(false)` for `--no-proxy`.
    pub proxy: Option<bool>,
    /// `--proxy-workers`.
    pub proxy_workers: Option<u16>,
    /// `--hosts`.
    pub hosts: Option<u16>,
    /// `--topology`.
    pub topology: Option<Topology>,
    /// `--sentinels`.
    pub sentinels: Option<u16>,
}

impl SpecOverrides {
    /// The spec to run: the stored one (a directory that already holds a cluster) or the
    /// defaults, with the given flags applied. Settings may change between runs; the shape
    /// (masters, replicas, ports, with or without the proxy) of an existing cluster may not.
    ///
    /// # Errors
    /// [`LocalError::InvalidTopology`] when a flag contradicts the stored shape, or sets the
    /// proxy's workers of a cluster without a proxy.
    pub fn resolve(&self, stored: Option<&LocalSpec>) -> Result<LocalSpec> {
        let mut spec = stored.cloned().unwrap_or_default();
        if let Some(stored) = stored {
            let mut conflicts: Vec<String> = [
                ("--masters", self.masters, stored.masters),
                ("--replicas", self.replicas, stored.replicas),
                ("--port", self.port, stored.port),
                ("--hosts", self.hosts, stored.hosts),
            ]
            .into_iter()
            .filter_map(|(flag, given, had)| {
                given
                    .filter(|g| *g != had)
                    .map(|g| format!("{flag} {g} (it has {had})"))
            })
            .collect();
            if self.proxy.is_some_and(|p| p != stored.proxy) {
                conflicts.push("--no-proxy (it has a proxy)".into());
            }
            if let Some(topology) = self.topology.filter(|t| *t != stored.topology) {
                conflicts.push(format!(
                    "--topology {topology} (it is a {})",
                    stored.topology
                ));
            }
            if let Some(n) = self.sentinels.filter(|n| *n != stored.sentinels) {
                conflicts.push(format!("--sentinels {n} (it has {})", stored.sentinels));
            }
            if !conflicts.is_empty() {
                let proxy = if stored.proxy {
                    "with a proxy"
                } else {
                    "without a proxy"
                };
                return Err(LocalError::InvalidTopology(format!(
                    "this directory already holds a cluster of {} masters × {} replicas on port {} {proxy}; \
                     cannot reshape it with {}. Use another --dir, or `cinnabar down --purge` first",
                    stored.masters,
                    stored.replicas,
                    stored.port,
                    conflicts.join(", ")
                )));
            }
        }
        if let Some(v) = self.topology {
            spec.topology = v;
            // One master is what a Sentinel group is; --masters can only confirm it.
            if v == Topology::Sentinel && stored.is_none() {
                spec.masters = 1;
                spec.replicas = 2;
            }
        }
        if let Some(v) = self.sentinels {
            spec.sentinels = v;
        }
        if let Some(v) = self.masters {
            spec.masters = v;
        }
        if let Some(v) = self.replicas {
            spec.replicas = v;
        }
        if let Some(v) = self.port {
            spec.port = v;
        }
        if let Some(v) = &self.maxmemory {
            spec.maxmemory.clone_from(v);
        }
        if let Some(v) = &self.maxmemory_policy {
            spec.maxmemory_policy.clone_from(v);
        }
        if let Some(v) = self.node_timeout_ms {
            spec.node_timeout_ms = v;
        }
        if let Some(v) = self.proxy {
            spec.proxy = v;
        }
        if let Some(v) = self.hosts {
            spec.hosts = v;
        }
        if let Some(v) = self.proxy_workers {
            if !spec.proxy {
                return Err(LocalError::InvalidTopology(format!(
                    "--proxy-workers {v}: this cluster runs without a proxy (it was created with \
                     --no-proxy), so there are no proxy workers to set"
                )));
            }
            spec.proxy_workers = v;
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod override_tests {
    use super::*;

    #[test]
    fn flags_apply_over_defaults() {
        let o = SpecOverrides {
            masters: Some(5),
            maxmemory: Some("1gb".into()),
            ..Default::default()
        };
        let spec = o.resolve(None).unwrap();
        assert_eq!(
            (spec.masters, spec.replicas, spec.maxmemory.as_str()),
            (5, 1, "1gb")
        );
    }

    #[test]
    fn a_stored_cluster_keeps_its_shape_and_refuses_a_new_one() {
        let stored = LocalSpec {
            masters: 4,
            ..LocalSpec::default()
        };
        assert_eq!(
            SpecOverrides::default()
                .resolve(Some(&stored))
                .unwrap()
                .masters,
            4
        );
        let settings = SpecOverrides {
            maxmemory_policy: Some("noeviction".into()),
            ..Default::default()
        };
        assert_eq!(
            settings.resolve(Some(&stored)).unwrap().maxmemory_policy,
            "noeviction"
        );
        let err = SpecOverrides {
            masters: Some(3),
            ..Default::default()
        }
        .resolve(Some(&stored))
        .unwrap_err()
        .to_string();
        assert!(err.contains("--masters 3 (it has 4)"), "{err}");
    }

    #[test]
    fn a_resumed_cluster_keeps_its_proxy_choice() {
        let without = LocalSpec {
            proxy: false,
            ..LocalSpec::default()
        };
        let resumed = SpecOverrides::default().resolve(Some(&without)).unwrap();
        assert!(!resumed.proxy, "no flag keeps --no-proxy");
        let err = SpecOverrides {
            proxy_workers: Some(2),
            ..Default::default()
        }
        .resolve(Some(&without))
        .unwrap_err()
        .to_string();
        assert!(err.contains("runs without a proxy"), "{err}");

        let with = LocalSpec::default();
        let err = SpecOverrides {
            proxy: Some(false),
            ..Default::default()
        }
        .resolve(Some(&with))
        .unwrap_err()
        .to_string();
        assert!(err.contains("--no-proxy (it has a proxy)"), "{err}");
        let more_workers = SpecOverrides {
            proxy_workers: Some(2),
            ..Default::default()
        };
        assert_eq!(more_workers.resolve(Some(&with)).unwrap().proxy_workers, 2);
    }
}
