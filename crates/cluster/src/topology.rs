//! The cluster as one node sees it: `CLUSTER NODES` parsed into typed nodes, flags and slots.
//!
//! Pure parsing and queries over one node's view; no I/O. A view is an opinion, never the truth:
//! comparing views across nodes is the job of `check` and `create`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::addr::{NodeAddr, split_host_port};
use crate::error::ClusterError;
use crate::slots::SlotRange;

/// Whether a node serves slots or copies a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves slots (or could: a master may own none).
    Master,
    /// Replicates a master.
    Replica,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Master => "master",
            Self::Replica => "replica",
        })
    }
}

/// The flags field of a `CLUSTER NODES` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFlags {
    /// `myself`: the line describes the node that answered.
    pub myself: bool,
    /// `master`.
    pub master: bool,
    /// `slave`.
    pub replica: bool,
    /// `fail?`: the viewer cannot reach the node (PFAIL), not yet agreed by a majority.
    pub pfail: bool,
    /// `fail`: a majority of masters agreed the node is down.
    pub fail: bool,
    /// `handshake`: met but not yet confirmed; the id is a placeholder.
    pub handshake: bool,
    /// `noaddr`: the viewer does not know the node's address.
    pub noaddr: bool,
    /// `nofailover`: a replica that will never start a failover.
    pub nofailover: bool,
    /// Flags this parser does not know, kept verbatim.
    pub other: Vec<String>,
}

impl NodeFlags {
    /// Parses a comma-separated flags field (`myself,master`, `slave,fail?`, `noflags`).
    pub fn parse(field: &str) -> Self {
        let mut flags = Self::default();
        for flag in field.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "myself" => flags.myself = true,
                "master" => flags.master = true,
                "slave" => flags.replica = true,
                "fail?" => flags.pfail = true,
                "fail" => flags.fail = true,
                "handshake" => flags.handshake = true,
                "noaddr" => flags.noaddr = true,
                "nofailover" => flags.nofailover = true,
                "noflags" => {}
                other => flags.other.push(other.to_owned()),
            }
        }
        flags
    }

    /// The flags as Redis spells them, in Redis's order.
    pub fn names(&self) -> Vec<String> {
        let known = [
            (self.myself, "myself"),
            (self.master, "master"),
            (self.replica, "slave"),
            (self.pfail, "fail?"),
            (self.fail, "fail"),
            (self.handshake, "handshake"),
            (self.noaddr, "noaddr"),
            (self.nofailover, "nofailover"),
        ];
        known
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| (*name).to_owned())
            .chain(self.other.iter().cloned())
            .collect()
    }

    /// Whether the viewer thinks the node is down (`fail` or `fail?`).
    pub fn is_failing(&self) -> bool {
        self.fail || self.pfail
    }
}

/// Whether the viewer's cluster-bus link to the node is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// `connected`.
    Connected,
    /// `disconnected`.
    Disconnected,
}

/// A slot that is being moved, as marked in `CLUSTER NODES` (`[slot->-id]`, `[slot-<-id]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SlotMigration {
    /// This node is sending `slot` to node `to`.
    Migrating {
        /// The slot.
        slot: u16,
        /// Destination node id.
        to: String,
    },
    /// This node is receiving `slot` from node `from`.
    Importing {
        /// The slot.
        slot: u16,
        /// Source node id.
        from: String,
    },
}

impl SlotMigration {
    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        match self {
            Self::Migrating { slot, .. } | Self::Importing { slot, .. } => *slot,
        }
    }
}

/// One line of `CLUSTER NODES`: a node as the viewer knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The 40-character node id.
    pub id: String,
    /// The client address, or `None` when the viewer has none (`:0@0`, `noaddr`).
    ///
    /// The host is empty on the `myself` line of a node that has never met another node;
    /// the client layer fills it in with the address it connected to.
    pub addr: Option<NodeAddr>,
    /// The cluster bus port, when printed.
    pub bus_port: Option<u16>,
    /// The announced hostname (`cluster-announce-hostname`), when set.
    pub hostname: Option<String>,
    /// Flags.
    pub flags: NodeFlags,
    /// The master's id, for replicas.
    pub master_id: Option<String>,
    /// When the viewer sent its last unanswered ping (ms since the epoch; 0 when none pending).
    pub ping_sent_ms: u64,
    /// When the viewer last received a pong (ms since the epoch).
    pub pong_recv_ms: u64,
    /// The node's configuration epoch as the viewer knows it.
    pub config_epoch: u64,
    /// The viewer's bus link to the node.
    pub link: LinkState,
    /// Slots the viewer believes the node serves.
    pub slots: Vec<SlotRange>,
    /// Open slots; only printed on the `myself` line.
    pub migrations: Vec<SlotMigration>,
}

impl ClusterNode {
    /// Master or replica: from the flags, else from whether the node follows a master.
    ///
    /// Nodes in handshake carry neither flag; they are reported as masters without slots,
    /// which is how Redis treats them until the handshake completes.
    pub fn role(&self) -> Role {
        if self.flags.replica || (!self.flags.master && self.master_id.is_some()) {
            Role::Replica
        } else {
            Role::Master
        }
    }

    /// A short way to name the node in messages: its address, else its id.
    pub fn label(&self) -> String {
        match &self.addr {
            Some(addr) if !addr.host.is_empty() => addr.to_string(),
            _ => short_id(&self.id).to_owned(),
        }
    }
}

/// The first 8 characters of a node id, for messages.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// One node's view of the whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Every node the viewer knows, in the order it printed them.
    pub nodes: Vec<ClusterNode>,
}

/// Slot ownership as one node sees it: `(master id, its slots)` sorted by id, masters with
/// slots only. Two nodes agree on slot ownership exactly when their signatures are equal.
pub type SlotSignature = Vec<(String, Vec<SlotRange>)>;

impl Topology {
    /// The node that produced this view.
    pub fn myself(&self) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.flags.myself)
    }

    /// The node with id `id`.
    pub fn node(&self, id: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node with client address `addr`.
    pub fn node_by_addr(&self, addr: &NodeAddr) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.addr.as_ref() == Some(addr))
    }

    /// Masters, in view order.
    pub fn masters(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.role() == Role::Master)
    }

    /// Replicas following `master_id`, in view order.
    pub fn replicas_of<'a>(&'a self, master_id: &'a str) -> impl Iterator<Item = &'a ClusterNode> {
        self.nodes
            .iter()
            .filter(move |n| n.role() == Role::Replica && n.master_id.as_deref() == Some(master_id))
    }

    /// The node this view says serves `slot`.
    pub fn owner_of(&self, slot: u16) -> Option<&ClusterNode> {
        self.nodes
            .iter()
            .find(|n| n.slots.iter().any(|r| r.contains(slot)))
    }

    /// This view's slot ownership, comparable across nodes (see [`SlotSignature`]).
    pub fn slot_signature(&self) -> SlotSignature {
        let mut by_id: BTreeMap<&str, Vec<SlotRange>> = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| !n.slots.is_empty()) {
            let mut slots = node.slots.clone();
            slots.sort_unstable();
            by_id.insert(&node.id, slots);
        }
        by_id
            .into_iter()
            .map(|(id, slots)| (id.to_owned(), slots))
            .collect()
    }

    /// Gives the `myself` line the host we reached the node at, when Redis printed none.
    pub fn fill_myself_host(&mut self, host: &str) {
        for node in self.nodes.iter_mut().filter(|n| n.flags.myself) {
            if let Some(addr) = node.addr.as_mut().filter(|a| a.host.is_empty()) {
                host.clone_into(&mut addr.host);
            }
        }
    }
}

/// Parses the text of `CLUSTER NODES` (Redis 3 to 7 formats, Valkey alike).
///
/// Accepts `ip:port@cport[,hostname[,aux=value…]]` and the older `ip:port`, IPv6 without
/// brackets (split on the last colon before `@`), `:0@0` for unknown addresses, any flags, and
/// slot fields `N`, `A-B`, `[N->-id]` (migrating) and `[N-<-id]` (importing).
///
/// # Errors
/// [`ClusterError::Parse`] naming the first malformed line and what is wrong with it.
pub fn parse_cluster_nodes(text: &str) -> Result<Topology, ClusterError> {
    let nodes = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topology { nodes })
}

fn parse_line(line: &str) -> Result<ClusterNode, ClusterError> {
    let bad = |reason: String| ClusterError::parse("CLUSTER NODES", line, reason);
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return Err(bad(format!(
            "expected at least 8 fields, got {}",
            fields.len()
        )));
    }
    let number = |i: usize, name: &str| {
        fields[i]
            .parse::<u64>()
            .map_err(|_| bad(format!("{name} {:?} is not a number", fields[i])))
    };
    let id = fields[0];
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("node id {id:?} is not hexadecimal")));
    }
    let (addr, bus_port, hostname) = parse_address(fields[1]).map_err(bad)?;
    let master_id = match fields[3] {
        "-" => None,
        m => Some(m.to_owned()),
    };
    let link = match fields[7] {
        "connected" => LinkState::Connected,
        "disconnected" => LinkState::Disconnected,
        other => return Err(bad(format!("unknown link state {other:?}"))),
    };
    let mut slots = Vec::new();
    let mut migrations = Vec::new();
    for field in &fields[8..] {
        if let Some(marker) = field.strip_prefix('[') {
            migrations.push(parse_migration(marker).map_err(bad)?);
        } else {
            slots.push(
                field
                    .parse::<SlotRange>()
                    .map_err(|_| bad(format!("bad slot field {field:?}")))?,
            );
        }
    }
    Ok(ClusterNode {
        id: id.to_owned(),
        addr,
        bus_port,
        hostname,
        flags: NodeFlags::parse(fields[2]),
        master_id,
        ping_sent_ms: number(4, "ping-sent")?,
        pong_recv_ms: number(5, "pong-recv")?,
        config_epoch: number(6, "config-epoch")?,
        link,
        slots,
        migrations,
    })
}

type ParsedAddress = (Option<NodeAddr>, Option<u16>, Option<String>);

/// `ip:port@cport[,hostname[,aux…]]` → (address, bus port, hostname).
fn parse_address(field: &str) -> Result<ParsedAddress, String> {
    let (endpoint, extras) = field.split_once(',').unwrap_or((field, ""));
    // Redis 7.2+ may append `key=value` auxiliary fields after the hostname; only the first
    // extra is the hostname, and an empty one means "none announced".
    let hostname = extras
        .split(',')
        .next()
        .filter(|h| !h.is_empty() && !h.contains('='))
        .map(str::to_owned);
    let (host_port, bus) = match endpoint.split_once('@') {
        Some((hp, bus)) => (hp, Some(bus)),
        None => (endpoint, None),
    };
    let (host, port) =
        split_host_port(host_port).map_err(|_| format!("address {field:?} has no port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port in {field:?} is not a number"))?;
    let bus_port = match bus {
        Some(b) => Some(
            b.parse::<u16>()
                .map_err(|_| format!("bus port in {field:?} is not a number"))?,
        )
        .filter(|&p| p != 0),
        None => None,
    };
    let addr = (port != 0).then(|| NodeAddr::new(host, port));
    Ok((addr, bus_port, hostname))
}

/// `N->-id]` or `N-<-id]` (the leading `[` already removed).
fn parse_migration(marker: &str) -> Result<SlotMigration, String> {
    let inner = marker
        .strip_suffix(']')
        .ok_or_else(|| format!("open-slot marker [{marker} lacks ']'"))?;
    let slot = |s: &str| {
        s.parse::<SlotRange>()
            .ok()
            .filter(|r| r.start == r.end)
            .map(|r| r.start)
            .ok_or_else(|| format!("bad slot in open-slot marker [{marker}"))
    };
    if let Some((s, to)) = inner.split_once("->-") {
        Ok(SlotMigration::Migrating {
            slot: slot(s)?,
            to: to.to_owned(),
        })
    } else if let Some((s, from)) = inner.split_once("-<-") {
        Ok(SlotMigration::Importing {
            slot: slot(s)?,
            from: from.to_owned(),
        })
    } else {
        Err(format!("unknown open-slot marker [{marker}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CLUSTER NODES` from node 23001 of a 3×1 cluster made by redis-cli on Redis 7.0.15 with
    /// `cluster-announce-hostname` set.
    const REDIS7_WITH_HOSTNAMES: &str = "\
d96621e03774e7ef92193c8375f151fb79e2dae3 127.0.0.1:23002@33002,host-23002.example master - 0 1795319334409 2 connected 5461-10922
7073aa9dc5ee39c26de09db6347b42fb890208ad 127.0.0.1:23003@33003,host-23003.example master - 0 1795319334409 3 connected 10923-16383
681ae19f7c92d9086c85bbc9de3e8609709435c0 127.0.0.1:23004@33004,host-23004.example slave 7073aa9dc5ee39c26de09db6347b42fb890208ad 0 1795319335011 3 connected
3078ef80f52003b0f41fa2941a4a2779b8497a96 127.0.0.1:23005@33005,host-23005.example slave 3140664f03eb08b58816b62420c9801d5a8a3225 0 1795319334108 1 connected
4faaa535b5dbc92b00c8e1a8c8e60074c6572502 127.0.0.1:23006@33006,host-23006.example slave d96621e03774e7ef92193c8375f151fb79e2dae3 0 1795319334108 2 connected
3140664f03eb08b58816b62420c9801d5a8a3225 127.0.0.1:23001@33001,host-23001.example myself,master - 0 1795319334000 1 connected 0-5460
";

    /// The same cluster after `SETSLOT 100 MIGRATING`, `DELSLOTS 200`, a `MEET` to a port with
    /// no server (stuck handshake) and SIGSTOP of 23003 until its replica took over.
    const REDIS7_TROUBLED: &str = "\
d96621e03774e7ef92193c8375f151fb79e2dae3 127.0.0.1:23002@33002,host-23002.example master - 0 1795319351000 2 connected 5461-10922
3c4a65f454fd35b742f3d6aed9abe35eae3f7e87 127.0.0.1:23999@33999 handshake - 0 0 0 disconnected
7073aa9dc5ee39c26de09db6347b42fb890208ad 127.0.0.1:23003@33003,host-23003.example master,fail - 1795319346063 1795319345059 3 disconnected
681ae19f7c92d9086c85bbc9de3e8609709435c0 127.0.0.1:23004@33004,host-23004.example master - 0 1795319351086 7 connected 10923-16383
3078ef80f52003b0f41fa2941a4a2779b8497a96 127.0.0.1:23005@33005,host-23005.example slave 3140664f03eb08b58816b62420c9801d5a8a3225 0 1795319351086 1 connected
4faaa535b5dbc92b00c8e1a8c8e60074c6572502 127.0.0.1:23006@33006,host-23006.example slave d96621e03774e7ef92193c8375f151fb79e2dae3 0 1795319351086 2 connected
3140664f03eb08b58816b62420c9801d5a8a3225 127.0.0.1:23001@33001,host-23001.example myself,master - 0 1795319350000 1 connected 0-199 201-5460 [100->-d96621e03774e7ef92193c8375f151fb79e2dae3]
";

    /// A fresh cluster-enabled Redis 7.0.15 node that has met nobody: no host, epoch 0.
    const REDIS7_EMPTY_NODE: &str =
        "17e028e40e54b88d6ddc36d311715541946ecf5f :23010@33010 myself,master - 0 0 0 connected\n";

    #[test]
    fn parses_a_healthy_redis7_view_with_hostnames() {
        let topo = parse_cluster_nodes(REDIS7_WITH_HOSTNAMES).unwrap();
        assert_eq!(topo.nodes.len(), 6);
        let me = topo.myself().unwrap();
        assert_eq!(me.id, "3140664f03eb08b58816b62420c9801d5a8a3225");
        assert_eq!(me.addr, Some(NodeAddr::new("127.0.0.1", 23001)));
        assert_eq!(me.bus_port, Some(33001));
        assert_eq!(me.hostname.as_deref(), Some("host-23001.example"));
        assert_eq!(me.role(), Role::Master);
        assert_eq!(me.slots, [SlotRange::new(0, 5460)]);
        assert_eq!(me.flags.names(), ["myself", "master"]);
        assert_eq!(topo.masters().count(), 3);
        let replicas: Vec<_> = topo.replicas_of(&me.id).map(ClusterNode::label).collect();
        assert_eq!(replicas, ["127.0.0.1:23005"]);
        assert_eq!(topo.owner_of(16383).unwrap().label(), "127.0.0.1:23003");
        let r = topo
            .node("681ae19f7c92d9086c85bbc9de3e8609709435c0")
            .unwrap();
        assert_eq!(r.role(), Role::Replica);
        assert_eq!(r.config_epoch, 3);
        assert_eq!(r.pong_recv_ms, 1_795_319_335_011);
        assert_eq!(topo.slot_signature().len(), 3);
    }

    #[test]
    fn parses_failures_handshakes_and_open_slots() {
        let topo = parse_cluster_nodes(REDIS7_TROUBLED).unwrap();
        let handshake = topo
            .node("3c4a65f454fd35b742f3d6aed9abe35eae3f7e87")
            .unwrap();
        assert!(handshake.flags.handshake);
        assert_eq!(handshake.hostname, None);
        assert_eq!(handshake.link, LinkState::Disconnected);
        let failed = topo
            .node("7073aa9dc5ee39c26de09db6347b42fb890208ad")
            .unwrap();
        assert!(failed.flags.fail && failed.flags.is_failing());
        assert!(failed.slots.is_empty());
        assert_eq!(failed.ping_sent_ms, 1_795_319_346_063);
        let me = topo.myself().unwrap();
        assert_eq!(
            me.slots,
            [SlotRange::new(0, 199), SlotRange::new(201, 5460)]
        );
        assert_eq!(
            me.migrations,
            [SlotMigration::Migrating {
                slot: 100,
                to: "d96621e03774e7ef92193c8375f151fb79e2dae3".into()
            }]
        );
        assert!(topo.owner_of(200).is_none());
    }

    #[test]
    fn a_node_that_met_nobody_has_no_host_until_filled_in() {
        let mut topo = parse_cluster_nodes(REDIS7_EMPTY_NODE).unwrap();
        assert_eq!(topo.myself().unwrap().addr, Some(NodeAddr::new("", 23010)));
        topo.fill_myself_host("127.0.0.1");
        assert_eq!(topo.myself().unwrap().label(), "127.0.0.1:23010");
    }

    #[test]
    fn parses_hand_written_edge_cases() {
        let text = "\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :0@0 master,noaddr - 1318428930 1318428931 0 disconnected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 ::1:30002@40002 slave,fail?,nofailover e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238316232 2 connected
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 10.0.0.7:6379@16379,,shard-id=abc master - 0 0 5 connected 7 [8-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1] 9-10
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 10.0.0.8:6379 noflags - 0 0 0 connected
";
        let topo = parse_cluster_nodes(text).unwrap();
        let noaddr = &topo.nodes[0];
        assert!(noaddr.flags.noaddr);
        assert_eq!((noaddr.addr.clone(), noaddr.bus_port), (None, None));
        assert_eq!(noaddr.label(), "e7d1eecc");
        let v6 = &topo.nodes[1];
        assert_eq!(v6.addr, Some(NodeAddr::new("::1", 30002)));
        assert_eq!(v6.addr.as_ref().unwrap().to_string(), "[::1]:30002");
        assert!(v6.flags.pfail && v6.flags.nofailover && v6.flags.replica);
        assert_eq!(v6.flags.names(), ["slave", "fail?", "nofailover"]);
        let aux = &topo.nodes[2];
        assert_eq!(aux.hostname, None);
        assert_eq!(aux.slots, [SlotRange::single(7), SlotRange::new(9, 10)]);
        assert_eq!(
            aux.migrations[0],
            SlotMigration::Importing {
                slot: 8,
                from: "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1".into()
            }
        );
        let old = &topo.nodes[3];
        assert_eq!(old.bus_port, None);
        assert!(old.flags.names().is_empty());
        assert_eq!(old.role(), Role::Master);
    }

    #[test]
    fn malformed_lines_are_named_with_the_reason() {
        for (line, reason) in [
            ("abc 127.0.0.1:7000@17000 master -", "at least 8 fields"),
            (
                "xyz 127.0.0.1:7000@17000 master - 0 0 0 connected",
                "not hexadecimal",
            ),
            ("abc 127.0.0.1@17000 master - 0 0 0 connected", "no port"),
            ("abc 1.2.3.4:7000@1 master - x 0 0 connected", "ping-sent"),
            ("abc 1.2.3.4:7000@1 master - 0 0 0 linked", "link state"),
            (
                "abc 1.2.3.4:7000@1 master - 0 0 0 connected 16384",
                "slot field",
            ),
            (
                "abc 1.2.3.4:7000@1 master - 0 0 0 connected [5~x]",
                "marker",
            ),
        ] {
            let err = parse_cluster_nodes(line).unwrap_err().to_string();
            assert!(err.contains(reason), "{line}: {err}");
            assert!(err.contains("CLUSTER NODES"), "{err}");
        }
    }
}
