//! The `redis.conf` we generate for each node: one place that decides how a local node runs.
//!
//! Decisions recorded here (change them here only):
//! - `appendonly yes` + `appendfsync everysec`: a killed process loses nothing it acknowledged
//!   (the AOF buffer is written to the OS before replies go out); a machine crash loses ≤ 1 s.
//! - `cluster-node-timeout` defaults to 5000 ms: a dead master is failed over in ~5–7 s, while
//!   the supervisor restarts a crashed process well within that, so a crash does not cause a
//!   needless failover (which could drop writes not yet replicated).
//! - `repl-diskless-sync-delay 0`: Redis waits 5 s by default hoping more replicas join one
//!   transfer; with a replica or two per shard that wait only delays healing after a restart.
//! - Nodes bind loopback only; they are reached through the endpoint we print.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Default `cluster-node-timeout` in milliseconds (see module docs).
pub const DEFAULT_NODE_TIMEOUT_MS: u64 = 5_000;

/// What a Sentinel watches: one master group, by name (see [`NodeConfig::sentinel`]).
///
/// Decisions: `down-after-milliseconds` 5000 like the cluster's node timeout (a crashed master
/// the supervisor restarts within a second is not failed over); `failover-timeout` 30 s (a
/// failed attempt is retried by another Sentinel after twice that at most, Redis's rule);
/// `resolve-hostnames no`: every address here is an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelMonitor {
    /// The group's name (`sentinel monitor NAME …`, and what clients ask about).
    pub name: String,
    /// The master when the Sentinel first starts; it follows failovers on its own afterwards.
    pub master_host: String,
    /// Its port.
    pub master_port: u16,
    /// Sentinels that must agree the master is down before a failover starts.
    pub quorum: usize,
    /// `down-after-milliseconds`.
    pub down_after_ms: u64,
    /// `failover-timeout`.
    pub failover_timeout_ms: u64,
    /// The password of the group's nodes (`auth-pass`), when they require one.
    pub auth_pass: Option<String>,
}

impl SentinelMonitor {
    /// Watches `name` with master `host:port`, the quorum and the production timeouts.
    pub fn new(name: &str, host: &str, port: u16, quorum: usize) -> Self {
        Self {
            name: name.to_owned(),
            master_host: host.to_owned(),
            master_port: port,
            quorum,
            down_after_ms: DEFAULT_NODE_TIMEOUT_MS,
            failover_timeout_ms: 30_000,
            auth_pass: None,
        }
    }
}

/// Everything that varies between generated node configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Client port; the bus port is this + 10000.
    pub port: u16,
    /// The node's own data directory (AOF, RDB, nodes.conf live here).
    pub dir: PathBuf,
    /// `maxmemory` as Redis accepts it (`256mb`), or `None` for no limit.
    pub maxmemory: Option<String>,
    /// `maxmemory-policy`, e.g. `allkeys-lru`.
    pub maxmemory_policy: String,
    /// Whether this node is a Redis Cluster node.
    pub cluster: bool,
    /// `cluster-node-timeout` in milliseconds.
    pub node_timeout_ms: u64,
    /// Extra `directive value` lines appended verbatim (tests use this).
    pub extra: Vec<(String, String)>,
    /// Run as a Sentinel watching this group instead of as a data node (`--sentinel`); only
    /// `port`, `dir` and `extra` apply then.
    pub sentinel: Option<SentinelMonitor>,
    /// The file is written only when missing: Redis keeps it current itself (`CONFIG
    /// REWRITE`). A Sentinel records what it learnt there, and Sentinel rewrites a group
    /// node's `replicaof` there when it fails over, so a restart keeps the role the group
    /// gave the node rather than the one it was created with.
    pub keep_file: bool,
}

impl NodeConfig {
    /// A cluster node on `port` storing its data in `dir`, with production defaults.
    pub fn cluster_node(port: u16, dir: PathBuf) -> Self {
        Self {
            port,
            dir,
            maxmemory: Some("256mb".into()),
            maxmemory_policy: "allkeys-lru".into(),
            cluster: true,
            node_timeout_ms: DEFAULT_NODE_TIMEOUT_MS,
            extra: Vec::new(),
            sentinel: None,
            keep_file: false,
        }
    }

    /// A plain data node (master or replica of a Sentinel group) on `port`.
    pub fn group_node(port: u16, dir: PathBuf) -> Self {
        Self {
            cluster: false,
            keep_file: true,
            ..Self::cluster_node(port, dir)
        }
    }

    /// A Sentinel on `port` watching `monitor`.
    pub fn sentinel(port: u16, dir: PathBuf, monitor: SentinelMonitor) -> Self {
        Self {
            cluster: false,
            maxmemory: None,
            sentinel: Some(monitor),
            keep_file: true,
            ..Self::cluster_node(port, dir)
        }
    }

    /// Where the generated configuration file lives.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    /// Where the node's log goes.
    pub fn log_path(&self) -> PathBuf {
        log_path(&self.dir)
    }

    /// Renders the configuration file text.
    pub fn render(&self) -> String {
        if let Some(monitor) = &self.sentinel {
            return self.render_sentinel(monitor);
        }
        let mut out = String::new();
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(out, "{k} {v}");
        };
        line(
            "# Generated by cinnabar; edits are overwritten on the next start.",
            "",
        );
        line("port", &self.port.to_string());
        line("bind", "127.0.0.1");
        line("protected-mode", "yes");
        line("daemonize", "no");
        line("dir", &quote(&self.dir.display().to_string()));
        // The process's stdout goes to `redis.log` (see `process`), so early start-up errors
        // land in the same file as everything else.
        line("logfile", "\"\"");
        line("appendonly", "yes");
        line("appendfsync", "everysec");
        line("appendfilename", "\"appendonly.aof\"");
        line("repl-diskless-sync-delay", "0");
        if let Some(max) = &self.maxmemory {
            line("maxmemory", max);
        }
        line("maxmemory-policy", &self.maxmemory_policy);
        if self.cluster {
            line("cluster-enabled", "yes");
            line("cluster-config-file", "nodes.conf");
            line("cluster-node-timeout", &self.node_timeout_ms.to_string());
            // A replica that lost its master for a while may still be the best we have.
            line("cluster-replica-validity-factor", "0");
        }
        for (k, v) in &self.extra {
            line(k, v);
        }
        out
    }
}

impl NodeConfig {
    /// A Sentinel's file. Sentinel rewrites it with what it learns (replicas, other
    /// Sentinels, the current master, the epoch), so it is written only once (see `process`).
    fn render_sentinel(&self, monitor: &SentinelMonitor) -> String {
        let name = &monitor.name;
        let mut out = String::new();
        let mut line = |text: String| {
            let _ = writeln!(out, "{text}");
        };
        line("# Generated by cinnabar once; Sentinel keeps its state here afterwards.".into());
        line(format!("port {}", self.port));
        line("bind 127.0.0.1".into());
        line("daemonize no".into());
        line(format!("dir {}", quote(&self.dir.display().to_string())));
        line("logfile \"\"".into());
        line("sentinel resolve-hostnames no".into());
        line(format!(
            "sentinel monitor {name} {} {} {}",
            monitor.master_host, monitor.master_port, monitor.quorum
        ));
        line(format!(
            "sentinel down-after-milliseconds {name} {}",
            monitor.down_after_ms
        ));
        line(format!(
            "sentinel failover-timeout {name} {}",
            monitor.failover_timeout_ms
        ));
        // One replica at a time resyncs with the new master, so the others keep serving reads.
        line(format!("sentinel parallel-syncs {name} 1"));
        if let Some(password) = &monitor.auth_pass {
            line(format!("sentinel auth-pass {name} {}", quote(password)));
        }
        for (k, v) in &self.extra {
            line(format!("{k} {v}"));
        }
        out
    }
}

/// The log file of the node whose data directory is `dir`.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

/// Quotes a path for redis.conf (double quotes, backslash-escaped).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_node_config_has_the_production_settings() {
        let mut cfg = NodeConfig::cluster_node(7000, PathBuf::from("/data/n 1"));
        cfg.maxmemory = Some("1gb".into());
        cfg.maxmemory_policy = "volatile-lru".into();
        let text = cfg.render();
        for expected in [
            "port 7000",
            "cluster-enabled yes",
            "appendonly yes",
            "appendfsync everysec",
            "maxmemory 1gb",
            "maxmemory-policy volatile-lru",
            "cluster-node-timeout 5000",
            "dir \"/data/n 1\"",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected:?} in\n{text}"
            );
        }
    }
}
