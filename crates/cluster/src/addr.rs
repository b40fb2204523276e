//! Node addresses: `host:port` as users type them and as Redis prints them.
//!
//! An address is only a way to reach a node; node identity is the 40-character node id. Never
//! resolve names here: this module is pure, resolution happens where connections are made.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ClusterError;

/// Where a node's client port listens. Displayed and serialised as `host:port`
/// (`[v6]:port` for IPv6 hosts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name, IPv4 or IPv6 address (without brackets).
    pub host: String,
    /// Client port (the cluster bus port is normally this + 10000).
    pub port: u16,
}

impl NodeAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// `redis://host:port/` for the `redis` crate.
    pub fn redis_url(&self) -> String {
        format!("redis://{self}/")
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for NodeAddr {
    type Err = ClusterError;

    /// Accepts `host:port`, `[v6]:port` and Redis's unbracketed `v6:port` (split on the last
    /// colon, as Redis does).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ClusterError::parse("node address", s, reason);
        let (host, port) = split_host_port(s).map_err(bad)?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port 0 is not a listening port"));
        }
        Ok(Self::new(host, port))
    }
}

/// Splits `host:port`, `[v6]:port` or Redis's unbracketed `v6:port` (on the last colon, as
/// Redis does) into the host (without brackets) and the port text.
///
/// Only splits: the host may be empty and the port is not parsed, because callers differ on
/// what they accept (`CLUSTER NODES` prints `:0` for a node without an address).
///
/// # Errors
/// What is missing, as a phrase: `expected [ipv6]:port` or `expected host:port`.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:").ok_or("expected [ipv6]:port")
    } else {
        s.rsplit_once(':').ok_or("expected host:port")
    }
}

impl Serialize for NodeAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_display_and_parse() {
        for (text, host, port) in [
            ("127.0.0.1:7000", "127.0.0.1", 7000),
            ("redis-0.redis.ns.svc:6379", "redis-0.redis.ns.svc", 6379),
            ("[::1]:6379", "::1", 6379),
        ] {
            let addr: NodeAddr = text.parse().expect(text);
            assert_eq!(addr, NodeAddr::new(host, port));
            assert_eq!(addr.to_string(), text);
        }
    }

    #[test]
    fn redis_style_ipv6_splits_on_the_last_colon() {
        let addr: NodeAddr = "fe80::1:6379".parse().unwrap();
        assert_eq!(addr, NodeAddr::new("fe80::1", 6379));
    }

    #[test]
    fn host_and_port_split_without_judging_them() {
        assert_eq!(split_host_port("h:7000"), Ok(("h", "7000")));
        assert_eq!(split_host_port("[::1]:7000"), Ok(("::1", "7000")));
        assert_eq!(split_host_port("fe80::1:7000"), Ok(("fe80::1", "7000")));
        assert_eq!(split_host_port(":0"), Ok(("", "0")));
        assert_eq!(split_host_port("h"), Err("expected host:port"));
        assert_eq!(split_host_port("[::1]7000"), Err("expected [ipv6]:port"));
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for (text, reason) in [
            ("localhost", "expected host:port"),
            (":7000", "the host is empty"),
            ("h:70000", "the port is not a number"),
            ("h:0", "port 0"),
        ] {
            let err = text.parse::<NodeAddr>().unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
    }
}
