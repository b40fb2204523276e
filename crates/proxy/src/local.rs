//! Replies the proxy writes itself: the smart-client `CLUSTER` view (the proxy owns all 16384
//! slots, so cluster-mode client libraries send everything here), `HELLO` and `CLIENT` (`INFO`
//! has a module of its own, `crate::info`). Pure functions into a buffer; they never touch a backend.

use std::net::SocketAddr;

use cinnabar_resp::{Protocol, encode};

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

/// The `HELLO` reply (`version`: the lowest among the backends, see `crate::info`): a map under RESP3, a flat key/value array under RESP2.
pub(crate) fn hello(out: &mut Vec<u8>, client_id: u64, version: &str, protocol: Protocol) {
    encode::map_header(out, 7, protocol);
    for (key, value) in [("server", "redis"), ("version", version)] {
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
        let replies: [Vec<u8>; 7] = [
            written(|o| cluster_slots(o, addr())),
            written(|o| cluster_shards(o, addr(), Protocol::Resp2)),
            written(|o| cluster_shards(o, addr(), Protocol::Resp3)),
            written(|o| cluster_nodes(o, addr())),
            written(cluster_info),
            written(|o| hello(o, 7, "7.0.0", Protocol::Resp2)),
            written(|o| hello(o, 7, "7.0.0", Protocol::Resp3)),
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
}
