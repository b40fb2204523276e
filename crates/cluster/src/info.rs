//! `INFO` and `CLUSTER INFO` text parsed into the few typed fields the control plane reads.
//!
//! Pure parsing; no I/O. Missing fields stay `None` rather than guessed, because servers differ
//! (Redis 6/7, Valkey) in what they print.

use std::collections::BTreeMap;

use serde::Serialize;

/// `key:value` lines of an `INFO`-style reply (section headers and blank lines skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoFields(BTreeMap<String, String>);

impl InfoFields {
    /// Parses `INFO` or `CLUSTER INFO` text.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key` as an unsigned number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// The fields of `CLUSTER INFO` that decide whether a node is part of a working cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterInfo {
    /// `cluster_state`: `ok` or `fail`.
    pub state: String,
    /// `cluster_slots_assigned`.
    pub slots_assigned: u64,
    /// `cluster_known_nodes` (the node itself included).
    pub known_nodes: u64,
    /// `cluster_current_epoch`.
    pub current_epoch: u64,
    /// `cluster_my_epoch`.
    pub my_epoch: u64,
}

impl ClusterInfo {
    /// Reads the fields from `CLUSTER INFO` text; absent numbers read as 0.
    pub fn parse(text: &str) -> Self {
        let f = InfoFields::parse(text);
        Self {
            state: f.get("cluster_state").unwrap_or("unknown").to_owned(),
            slots_assigned: f.get_u64("cluster_slots_assigned").unwrap_or(0),
            known_nodes: f.get_u64("cluster_known_nodes").unwrap_or(0),
            current_epoch: f.get_u64("cluster_current_epoch").unwrap_or(0),
            my_epoch: f.get_u64("cluster_my_epoch").unwrap_or(0),
        }
    }

    /// Whether the node says the cluster serves all its slots (`cluster_state:ok`).
    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }
}

/// The fields of `INFO replication` the control plane reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationInfo {
    /// `role`: `master` or `slave`.
    pub role: String,
    /// For replicas, `master_link_status:up`.
    pub master_link_up: Option<bool>,
    /// For replicas, `master_host:master_port`.
    pub master_host: Option<String>,
    /// For replicas, the master's port.
    pub master_port: Option<u16>,
    /// For masters, `connected_slaves`.
    pub connected_replicas: Option<u64>,
    /// `master_repl_offset`.
    pub repl_offset: Option<u64>,
}

impl ReplicationInfo {
    /// Reads the fields from `INFO replication` text.
    pub fn parse(text: &str) -> Self {
        let f = InfoFields::parse(text);
        Self {
            role: f.get("role").unwrap_or("unknown").to_owned(),
            master_link_up: f.get("master_link_status").map(|s| s == "up"),
            master_host: f.get("master_host").map(str::to_owned),
            master_port: f.get("master_port").and_then(|p| p.parse().ok()),
            connected_replicas: f.get_u64("connected_slaves"),
            repl_offset: f.get_u64("master_repl_offset"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cluster_info_of_a_fresh_node() {
        let text = "cluster_state:fail\r\ncluster_slots_assigned:0\r\ncluster_slots_ok:0\r\n\
                    cluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:0\r\n\
                    cluster_my_epoch:0\r\n";
        let info = ClusterInfo::parse(text);
        assert!(!info.is_ok());
        assert_eq!((info.known_nodes, info.slots_assigned), (1, 0));
    }

    #[test]
    fn reads_replication_info_of_a_replica_and_a_master() {
        let replica = ReplicationInfo::parse(
            "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:23001\r\n\
             master_link_status:up\r\nmaster_repl_offset:28\r\n",
        );
        assert_eq!(replica.role, "slave");
        assert_eq!(replica.master_link_up, Some(true));
        assert_eq!(replica.master_port, Some(23001));
        let master = ReplicationInfo::parse(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
             slave0:ip=127.0.0.1,port=23005,state=online,offset=28,lag=1\r\n",
        );
        assert_eq!(master.master_link_up, None);
        assert_eq!(master.connected_replicas, Some(1));
    }
}
