//! Replies the proxy writes itself: the smart-client `CLUSTER` view (the proxy owns all 16384
//! slots, so cluster-mode client libraries send everything here), `HELLO`, `CLIENT`, and the
//! proxy's own `INFO`. Pure functions into a buffer; they never touch a backend.

use std::net::SocketAddr;

use cinnabar_resp::{Protocol, encode};

/// The version the proxy reports in `HELLO` and `INFO`: the Redis command set it speaks.
pub(crate) const REPORTED_REDIS_VERSION: &str = "7.0.0";

/// A stable 40-hex-digit node id derived from the proxy's address, so every proxy process
/// behind one address reports the same id.
pub(crate) fn node_id(announce: SocketAddr) -> String {
    let text = announce.to_string();
    // FNV-1a, spread over five 32-bit words.
    let mut out = String::with_capacity(40);
    for round in 0u32..5 {
        let mut hash: u32 = 0x811c_9dc5 ^ round.wrapping_mul(0x9e37_79b9);
        for byte in text.bytes() {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
        out.push_str(&format!("{hash:08x}"));
    }
    out
}

/// `CLUSTER SLOTS`: one range, 0-16383, served by the proxy.
pub(crate) fn cluster_slots(out: &mut Vec<u8>, announce: SocketAddr) {
    encode::array_header(out, 1);
    encode::array_header(out, 3);
    encode::integer(out, 0);
    encode::integer(out, 16383);
    encode::array_header(out, 3);
    encode::bulk(out, announce.ip().to_string().as_bytes());
    encode::integer(out, i64::from(announce.port()));
    encode::bulk(out, node_id(announce).as_bytes());
}

/// `CLUSTER SHARDS`: one shard with all slots and the proxy as its only (master) node (maps
/// under RESP3, flat key/value arrays under RESP2, as Redis answers).
pub(crate) fn cluster_shards(out: &mut Vec<u8>, announce: SocketAddr, protocol: Protocol) {
    let ip = announce.ip().to_string();
    encode::array_header(out, 1);
    encode::map_header(out, 2, protocol);
    encode::bulk(out, b"slots");
    encode::array_header(out, 2);
    encode::integer(out, 0);
    encode::integer(out, 16383);
    encode::bulk(out, b"nodes");
    encode::array_header(out, 1);
    encode::map_header(out, 7, protocol);
    for (key, value) in [
        ("id", node_id(announce)),
        ("ip", ip.clone()),
        ("endpoint", ip),
    ] {
        encode::bulk(out, key.as_bytes());
        encode::bulk(out, value.as_bytes());
    }
    encode::bulk(out, b"port");
    encode::integer(out, i64::from(announce.port()));
    encode::bulk(out, b"role");
    encode::bulk(out, b"master");
    encode::bulk(out, b"replication-offset");
    encode::integer(out, 0);
    encode::bulk(out, b"health");
    encode::bulk(out, b"online");
}

/// `CLUSTER NODES`: the proxy alone, `myself,master`, all slots.
pub(crate) fn cluster_nodes(out: &mut Vec<u8>, announce: SocketAddr) {
    let line = format!(
        "{} {}:{}@{} myself,master - 0 0 1 connected 0-16383\n",
        node_id(announce),
        announce.ip(),
        announce.port(),
        u32::from(announce.port()) + 10_000
    );
    encode::bulk(out, line.as_bytes());
}

/// `CLUSTER INFO`: a healthy one-node cluster.
pub(crate) fn cluster_info(out: &mut Vec<u8>) {
    let text = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
                cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
                cluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\n\
                cluster_my_epoch:1\r\n";
    encode::bulk(out, text.as_bytes());
}

/// The `HELLO` reply: a map under RESP3, a flat key/value array under RESP2.
pub(crate) fn hello(out: &mut Vec<u8>, client_id: u64, protocol: Protocol) {
    encode::map_header(out, 7, protocol);
    for (key, value) in [("server", "redis"), ("version", REPORTED_REDIS_VERSION)] {
        encode::bulk(out, key.as_bytes());
        encode::bulk(out, value.as_bytes());
    }
    encode::bulk(out, b"proto");
    encode::integer(out, if protocol == Protocol::Resp3 { 3 } else { 2 });
    encode::bulk(out, b"id");
    encode::integer(out, i64::try_from(client_id).unwrap_or(i64::MAX));
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        encode::bulk(out, key.as_bytes());
        encode::bulk(out, value.as_bytes());
    }
    encode::bulk(out, b"modules");
    encode::array_header(out, 0);
}

/// One `CLIENT INFO` / `CLIENT LIST` line for this connection, as the proxy sees it.
pub(crate) fn client_line(
    id: u64,
    peer: Option<SocketAddr>,
    local: SocketAddr,
    name: &[u8],
    protocol: Protocol,
) -> String {
    let peer = peer.map_or_else(|| "?".to_owned(), |p| p.to_string());
    let resp = if protocol == Protocol::Resp3 { 3 } else { 2 };
    format!(
        "id={id} addr={peer} laddr={local} name={} db=0 resp={resp}\n",
        String::from_utf8_lossy(name)
    )
}

/// `INFO` sections the proxy answers, as bits of a mask.
const SERVER: u8 = 1;
const CLIENTS: u8 = 2;
const STATS: u8 = 4;
const LATENCYSTATS: u8 = 8;
const KEYSPACE: u8 = 16;
const COMMANDSTATS: u8 = 32;
/// What `INFO` with no section shows (as in Redis, without commandstats).
const DEFAULT: u8 = SERVER | CLIENTS | STATS | LATENCYSTATS | KEYSPACE;
const ALL: u8 = DEFAULT | COMMANDSTATS;

/// The sections `INFO` asked for (none named: the default set, which here is all of them;
/// unknown names select nothing, as in Redis).
pub(crate) fn info_sections<'a>(names: impl Iterator<Item = &'a [u8]>) -> u8 {
    let mut mask = 0;
    let mut named = false;
    for name in names {
        named = true;
        let lower = name.to_ascii_lowercase();
        mask |= match lower.as_slice() {
            b"server" => SERVER,
            b"clients" => CLIENTS,
            b"stats" => STATS,
            b"latencystats" => LATENCYSTATS,
            b"keyspace" => KEYSPACE,
            b"commandstats" => COMMANDSTATS,
            b"default" => DEFAULT,
            b"all" | b"everything" => ALL,
            _ => 0,
        };
    }
    if named { mask } else { DEFAULT }
}

/// What `INFO` reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InfoFacts<'a> {
    pub(crate) announce: SocketAddr,
    pub(crate) masters: usize,
    pub(crate) keys: u64,
    pub(crate) expires: u64,
    pub(crate) totals: crate::stats::Totals,
    /// `(name, calls, usec, failed)` per command called, for commandstats.
    pub(crate) commands: &'a [(&'static str, u64, u64, u64)],
    pub(crate) max_clients: usize,
    pub(crate) workers: usize,
}

/// The proxy's `INFO`: its own sections (server, clients, stats, latency) plus the keyspace
/// summed over all masters, limited to the sections in `mask`.
pub(crate) fn info(out: &mut Vec<u8>, facts: &InfoFacts<'_>, mask: u8) {
    use std::fmt::Write as _;
    let t = &facts.totals;
    let mut text = String::with_capacity(1024);
    if mask & SERVER != 0 {
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REPORTED_REDIS_VERSION}\r\nredis_mode:standalone\r\n\
             cinnabar_version:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
             cinnabar_workers:{}\r\nbackend_masters:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            facts.announce.port(),
            t.uptime.as_secs(),
            facts.workers,
            facts.masters,
        );
    }
    if mask & CLIENTS != 0 {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            t.open, facts.max_clients
        );
    }
    if mask & STATS != 0 {
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\ntotal_error_replies:{}\r\ncinnabar_redirects_moved:{}\r\n\
             cinnabar_redirects_ask:{}\r\ncinnabar_retries:{}\r\ncinnabar_topology_refreshes:{}\r\n\r\n",
            t.connections, t.commands, t.rejected, t.errors, t.moved, t.ask, t.retries, t.refreshes
        );
    }
    if mask & COMMANDSTATS != 0 {
        text.push_str("# Commandstats\r\n");
        for (name, calls, usec, failed) in facts.commands {
            let per_call = *usec as f64 / (*calls).max(1) as f64;
            let _ = write!(
                text,
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls=0,failed_calls={failed}\r\n"
            );
        }
        text.push_str("\r\n");
    }
    if mask & LATENCYSTATS != 0 {
        text.push_str("# Latencystats\r\n");
        if let Some([p50, p99, p999]) = t.latency_us {
            let _ = write!(
                text,
                "latency_percentiles_usec_all:p50={p50:.3},p99={p99:.3},p99.9={p999:.3}\r\n"
            );
        }
        text.push_str("\r\n");
    }
    if mask & KEYSPACE != 0 {
        text.push_str("# Keyspace\r\n");
        if facts.keys > 0 {
            let _ = write!(
                text,
                "db0:keys={},expires={},avg_ttl=0\r\n",
                facts.keys, facts.expires
            );
        }
    }
    encode::bulk(out, text.as_bytes());
}

/// Sums `db0:keys=…,expires=…` over `INFO keyspace` replies (bulk strings).
pub(crate) fn sum_keyspace<'a>(replies: impl Iterator<Item = &'a [u8]>) -> (u64, u64) {
    let (mut keys, mut expires) = (0, 0);
    for reply in replies {
        let text = String::from_utf8_lossy(reply);
        for line in text.lines().filter(|l| l.starts_with("db0:")) {
            for field in line.trim_start_matches("db0:").split(',') {
                match field.split_once('=') {
                    Some(("keys", n)) => keys += n.trim().parse::<u64>().unwrap_or(0),
                    Some(("expires", n)) => expires += n.trim().parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    (keys, expires)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn node_id_is_stable_forty_hex_digits() {
        let id = node_id(addr());
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, node_id(addr()));
        assert_ne!(id, node_id("127.0.0.1:7001".parse().unwrap()));
    }

    #[test]
    fn cluster_slots_names_the_proxy_for_every_slot() {
        let mut out = Vec::new();
        cluster_slots(&mut out, addr());
        let expected = format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$40\r\n{}\r\n",
            node_id(addr())
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn replies_are_well_formed_resp() {
        let limits = cinnabar_resp::Limits::default();
        let replies: [Vec<u8>; 8] = [
            written(|o| cluster_slots(o, addr())),
            written(|o| cluster_shards(o, addr(), Protocol::Resp2)),
            written(|o| cluster_shards(o, addr(), Protocol::Resp3)),
            written(|o| cluster_nodes(o, addr())),
            written(cluster_info),
            written(|o| hello(o, 7, Protocol::Resp2)),
            written(|o| hello(o, 7, Protocol::Resp3)),
            written(|o| {
                let facts = InfoFacts {
                    announce: addr(),
                    masters: 3,
                    keys: 10,
                    expires: 2,
                    totals: crate::stats::Totals::default(),
                    commands: &[("get", 2, 30, 0)],
                    max_clients: 10,
                    workers: 1,
                };
                info(o, &facts, ALL);
            }),
        ];
        for out in replies {
            let scanned = cinnabar_resp::scan_reply(&out, &limits).unwrap();
            assert_eq!(
                scanned,
                Some(out.len()),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    fn written(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out);
        out
    }

    #[test]
    fn info_sections_follow_the_names_asked_for() {
        assert_eq!(info_sections(std::iter::empty()), DEFAULT);
        assert_eq!(info_sections([b"everything".as_slice()].into_iter()), ALL);
        assert_eq!(
            info_sections([b"KEYSPACE".as_slice()].into_iter()),
            KEYSPACE
        );
        assert_eq!(
            info_sections([b"clients".as_slice(), b"stats"].into_iter()),
            CLIENTS | STATS
        );
        assert_eq!(info_sections([b"nonsense".as_slice()].into_iter()), 0);
    }

    #[test]
    fn keyspace_lines_are_summed() {
        let a = b"# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\n".as_slice();
        let b = b"# Keyspace\r\n".as_slice();
        let c = b"# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n".as_slice();
        assert_eq!(sum_keyspace([a, b, c].into_iter()), (7, 1));
    }
}
