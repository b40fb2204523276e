//! `CLUSTER SHARDS` (Redis 7+) parsed from the client's reply value, RESP2 or RESP3.
//!
//! Pure conversion from `redis::Value`; no I/O. Unknown keys are skipped so newer servers
//! (Valkey, Redis 7.2+) parse; missing required keys are errors, never silently defaulted.

use std::borrow::Cow;

use redis::Value;
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::slots::{SLOT_COUNT, SlotRange};
use crate::topology::Role;

const WHAT: &str = "CLUSTER SHARDS";

/// One shard: its slots and the nodes serving them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Slots served by the shard's master.
    pub slots: Vec<SlotRange>,
    /// The master and its replicas.
    pub nodes: Vec<ShardNode>,
}

impl Shard {
    /// The shard's master, if the reply names one.
    pub fn master(&self) -> Option<&ShardNode> {
        self.nodes.iter().find(|n| n.role == Role::Master)
    }
}

/// A node entry of `CLUSTER SHARDS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardNode {
    /// Node id.
    pub id: String,
    /// Plain-text client port, when the node has one.
    pub port: Option<u16>,
    /// TLS client port, when the node has one.
    pub tls_port: Option<u16>,
    /// IP address (empty when unknown).
    pub ip: String,
    /// The endpoint clients should use (ip, hostname or `?`, per `cluster-preferred-endpoint-type`).
    pub endpoint: String,
    /// Announced hostname, when set.
    pub hostname: Option<String>,
    /// Master or replica.
    pub role: Role,
    /// Replication offset.
    pub replication_offset: i64,
    /// Health as the answering node sees it.
    pub health: NodeHealth,
}

/// The `health` field of a `CLUSTER SHARDS` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeHealth {
    /// `online`.
    Online,
    /// `failed`.
    Failed,
    /// `loading` (Redis also says this of a replica that has not replicated anything yet).
    Loading,
    /// Anything else, verbatim.
    Other(String),
}

/// Parses the reply of `CLUSTER SHARDS`.
///
/// Accepts RESP2 (flat arrays of alternating keys and values) and RESP3 (maps), with keys and
/// strings as bulk, simple or verbatim strings.
///
/// # Errors
/// [`ClusterError::Parse`] when the reply is not a list of shards or a shard lacks `slots`,
/// `nodes`, or a node lacks `id`, `role` or any port.
pub fn parse_cluster_shards(reply: &Value) -> Result<Vec<Shard>, ClusterError> {
    let shards = as_list(reply).ok_or_else(|| bad(reply, "expected an array of shards"))?;
    shards.iter().map(parse_shard).collect()
}

fn parse_shard(value: &Value) -> Result<Shard, ClusterError> {
    let entries = as_entries(value).ok_or_else(|| bad(value, "a shard must be a map"))?;
    let mut slots = None;
    let mut nodes = None;
    for (key, val) in entries {
        match key_of(key)?.as_ref() {
            "slots" => slots = Some(parse_slots(val)?),
            "nodes" => {
                let list = as_list(val).ok_or_else(|| bad(val, "`nodes` must be an array"))?;
                nodes = Some(list.iter().map(parse_node).collect::<Result<Vec<_>, _>>()?);
            }
            _ => {}
        }
    }
    Ok(Shard {
        slots: slots.ok_or_else(|| bad(value, "the shard has no `slots`"))?,
        nodes: nodes.ok_or_else(|| bad(value, "the shard has no `nodes`"))?,
    })
}

fn parse_slots(value: &Value) -> Result<Vec<SlotRange>, ClusterError> {
    let bounds = as_list(value).ok_or_else(|| bad(value, "`slots` must be an array"))?;
    if bounds.len() % 2 != 0 {
        return Err(bad(value, "`slots` must hold start,end pairs"));
    }
    bounds
        .chunks(2)
        .map(|pair| {
            let slot = |v: &Value| {
                as_int(v)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&n| usize::from(n) < SLOT_COUNT)
                    .ok_or_else(|| bad(v, "a slot must be 0 to 16383"))
            };
            let range = SlotRange::new(slot(&pair[0])?, slot(&pair[1])?);
            if range.start > range.end {
                return Err(bad(value, "a slot range ends before it starts"));
            }
            Ok(range)
        })
        .collect()
}

fn parse_node(value: &Value) -> Result<ShardNode, ClusterError> {
    let entries = as_entries(value).ok_or_else(|| bad(value, "a node must be a map"))?;
    let mut id = None;
    let mut port = None;
    let mut tls_port = None;
    let mut ip = String::new();
    let mut endpoint = String::new();
    let mut hostname = None;
    let mut role = None;
    let mut offset = 0;
    let mut health = NodeHealth::Other(String::new());
    let port_of = |v: &Value| {
        as_int(v)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| bad(v, "a port must be 0 to 65535"))
    };
    for (key, val) in entries {
        match key_of(key)?.as_ref() {
            "id" => id = Some(text_of(val)?.into_owned()),
            "port" => port = Some(port_of(val)?),
            "tls-port" => tls_port = Some(port_of(val)?),
            "ip" => ip = text_of(val)?.into_owned(),
            "endpoint" => endpoint = text_of(val)?.into_owned(),
            "hostname" => hostname = Some(text_of(val)?.into_owned()).filter(|h| !h.is_empty()),
            "role" => {
                role = Some(match text_of(val)?.as_ref() {
                    "master" => Role::Master,
                    "replica" | "slave" => Role::Replica,
                    other => return Err(bad(val, &format!("unknown role {other:?}"))),
                });
            }
            "replication-offset" => {
                offset = as_int(val).ok_or_else(|| bad(val, "the offset must be a number"))?;
            }
            "health" => {
                health = match text_of(val)?.as_ref() {
                    "online" => NodeHealth::Online,
                    "failed" => NodeHealth::Failed,
                    "loading" => NodeHealth::Loading,
                    other => NodeHealth::Other(other.to_owned()),
                };
            }
            _ => {}
        }
    }
    if port.is_none() && tls_port.is_none() {
        return Err(bad(value, "the node has neither `port` nor `tls-port`"));
    }
    Ok(ShardNode {
        id: id.ok_or_else(|| bad(value, "the node has no `id`"))?,
        port,
        tls_port,
        ip,
        endpoint,
        hostname,
        role: role.ok_or_else(|| bad(value, "the node has no `role`"))?,
        replication_offset: offset,
        health,
    })
}

fn bad(value: &Value, reason: &str) -> ClusterError {
    let mut shown = format!("{value:?}");
    if shown.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    ClusterError::parse(WHAT, shown, reason)
}

/// An array, set or push payload.
fn as_list(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Attribute { data, .. } => as_list(data),
        _ => None,
    }
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array of alternating keys and values.
fn as_entries(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(pairs) => Some(pairs.iter().map(|(k, v)| (k, v)).collect()),
        Value::Array(items) if items.len() % 2 == 0 => {
            Some(items.chunks(2).map(|pair| (&pair[0], &pair[1])).collect())
        }
        Value::Attribute { data, .. } => as_entries(data),
        _ => None,
    }
}

fn text_of(value: &Value) -> Result<Cow<'_, str>, ClusterError> {
    as_text(value).ok_or_else(|| bad(value, "expected a string"))
}

fn key_of(value: &Value) -> Result<Cow<'_, str>, ClusterError> {
    as_text(value).ok_or_else(|| bad(value, "a map key must be a string"))
}

fn as_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes)),
        Value::SimpleString(s) => Some(Cow::Borrowed(s)),
        Value::VerbatimString { text, .. } => Some(Cow::Borrowed(text)),
        Value::Okay => Some(Cow::Borrowed("OK")),
        _ => None,
    }
}

fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => as_text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A node entry as Redis 7.0.15 sent it, as RESP2 alternating key/values.
    fn node_resp2(id: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk(id),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("hostname"),
            bulk(&format!("host-{port}.example")),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(0),
            bulk("health"),
            bulk(health),
        ])
    }

    /// The RESP3 form of the same thing: maps instead of flat arrays.
    fn to_resp3(value: Value) -> Value {
        match value {
            Value::Array(items)
                if items.len() % 2 == 0 && matches!(items.first(), Some(Value::BulkString(_))) =>
            {
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, to_resp3(v)));
                }
                Value::Map(pairs)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(to_resp3).collect()),
            other => other,
        }
    }

    /// Two shards of the 3×1 cluster whose `CLUSTER SHARDS` we captured from Redis 7.0.15.
    fn sample_resp2() -> Value {
        Value::Array(vec![
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![Value::Int(5461), Value::Int(10922)]),
                bulk("nodes"),
                Value::Array(vec![
                    node_resp2(
                        "d96621e03774e7ef92193c8375f151fb79e2dae3",
                        23002,
                        "master",
                        "online",
                    ),
                    node_resp2(
                        "4faaa535b5dbc92b00c8e1a8c8e60074c6572502",
                        23006,
                        "replica",
                        "loading",
                    ),
                ]),
            ]),
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(199),
                    Value::Int(201),
                    Value::Int(5460),
                ]),
                bulk("nodes"),
                Value::Array(vec![node_resp2(
                    "3140664f03eb08b58816b62420c9801d5a8a3225",
                    23001,
                    "master",
                    "online",
                )]),
            ]),
        ])
    }

    #[test]
    fn parses_resp2_and_resp3_replies_alike() {
        let resp2 = parse_cluster_shards(&sample_resp2()).unwrap();
        let resp3 = parse_cluster_shards(&to_resp3(sample_resp2())).unwrap();
        assert_eq!(resp2, resp3);
        assert_eq!(resp2.len(), 2);
        assert_eq!(resp2[0].slots, [SlotRange::new(5461, 10922)]);
        let master = resp2[0].master().unwrap();
        assert_eq!(master.port, Some(23002));
        assert_eq!(master.hostname.as_deref(), Some("host-23002.example"));
        assert_eq!(master.health, NodeHealth::Online);
        assert_eq!(resp2[0].nodes[1].role, Role::Replica);
        assert_eq!(resp2[0].nodes[1].health, NodeHealth::Loading);
        assert_eq!(
            resp2[1].slots,
            [SlotRange::new(0, 199), SlotRange::new(201, 5460)]
        );
    }

    #[test]
    fn an_empty_node_has_no_slots_and_empty_addresses() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("slots"),
            Value::Array(vec![]),
            bulk("nodes"),
            Value::Array(vec![Value::Array(vec![
                bulk("id"),
                bulk("17e028e40e54b88d6ddc36d311715541946ecf5f"),
                bulk("tls-port"),
                Value::Int(23010),
                bulk("ip"),
                bulk(""),
                bulk("endpoint"),
                bulk(""),
                bulk("role"),
                Value::SimpleString("master".into()),
                bulk("replication-offset"),
                Value::Int(0),
                bulk("health"),
                bulk("online"),
                bulk("shard-id"),
                bulk("future field"),
            ])]),
        ])]);
        let shards = parse_cluster_shards(&reply).unwrap();
        let node = &shards[0].nodes[0];
        assert!(shards[0].slots.is_empty());
        assert_eq!((node.port, node.tls_port), (None, Some(23010)));
        assert_eq!(node.ip, "");
    }

    #[test]
    fn malformed_replies_say_what_is_missing() {
        let cases = [
            (bulk("nope"), "expected an array of shards"),
            (
                Value::Array(vec![Value::Array(vec![
                    bulk("nodes"),
                    Value::Array(vec![]),
                ])]),
                "no `slots`",
            ),
            (
                Value::Array(vec![Value::Array(vec![
                    bulk("slots"),
                    Value::Array(vec![Value::Int(1)]),
                    bulk("nodes"),
                    Value::Array(vec![]),
                ])]),
                "start,end pairs",
            ),
            (
                Value::Array(vec![Value::Array(vec![
                    bulk("slots"),
                    Value::Array(vec![]),
                    bulk("nodes"),
                    Value::Array(vec![Value::Array(vec![bulk("id"), bulk("x")])]),
                ])]),
                "neither `port` nor `tls-port`",
            ),
        ];
        for (reply, reason) in cases {
            let err = parse_cluster_shards(&reply).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
            assert!(err.contains("CLUSTER SHARDS"), "{err}");
        }
    }
}
