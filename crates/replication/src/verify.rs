//! `cinnabar sync verify`: compares every key of a source (a standalone server, a replica, or
//! every master of a Redis Cluster) with a target (any node of a Redis Cluster, or a proxy in
//! front of one): its type, its value and its TTL (within a tolerance), and the key counts.
//!
//! Memory stays bounded whatever the data: keys come from `SCAN` in batches, and a value is
//! never held whole but reduced to a digest read in chunks (ordered types hashed in order,
//! sets and hashes hashed order-independently, as their `SSCAN`/`HSCAN` order is the server's
//! own). It only reads; it must never write to either side.

use std::time::Duration;

use redis::{ConnectionLike, Value};

/// Where to connect, and as whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// ACL user (`None`: the default user).
    pub user: Option<String>,
    /// Password (`None`: no AUTH).
    pub password: Option<String>,
}

impl Endpoint {
    /// An endpoint without credentials.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            ..Self::default()
        }
    }

    /// The client URL for node `addr` with these credentials.
    pub fn url(&self, addr: &str) -> String {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => format!("redis://{user}:{password}@{addr}/"),
            (None, Some(password)) => format!("redis://:{password}@{addr}/"),
            _ => format!("redis://{addr}/"),
        }
    }
}

/// How thorough and how talkative a verification is.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// TTLs that differ by at most this much are equal (the two reads are not simultaneous,
    /// and a sync applies expiries as absolute times).
    pub ttl_tolerance: Duration,
    /// Keys per `SCAN` step, and elements per chunk when a value is read.
    pub batch: usize,
    /// Differences kept in the report (all are counted).
    pub max_reported: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            ttl_tolerance: Duration::from_secs(2),
            batch: 500,
            max_reported: 100,
        }
    }
}

/// One key that differs, or keys the target has beyond the source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The key exists on the source only.
    Missing {
        /// The key.
        key: Vec<u8>,
    },
    /// The key has another type on the target.
    Type {
        /// The key.
        key: Vec<u8>,
        /// Its type on the source.
        source: String,
        /// Its type on the target.
        target: String,
    },
    /// The same type, another value (or another stream group state).
    Value {
        /// The key.
        key: Vec<u8>,
        /// What differs (`length 10 vs 9`, `elements differ`, `group g1 differs` …).
        detail: String,
    },
    /// TTLs that differ by more than the tolerance (`-1`: no TTL).
    Ttl {
        /// The key.
        key: Vec<u8>,
        /// Milliseconds left on the source.
        source_ms: i64,
        /// Milliseconds left on the target.
        target_ms: i64,
    },
    /// The target holds more keys than the source.
    ExtraKeys {
        /// Keys on the source (every master).
        source: u64,
        /// Keys on the target (every master).
        target: u64,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        match self {
            Self::Missing { key } => write!(f, "{}: missing on the target", show(key)),
            Self::Type {
                key,
                source,
                target,
            } => {
                write!(
                    f,
                    "{}: type {source} on the source, {target} on the target",
                    show(key)
                )
            }
            Self::Value { key, detail } => write!(f, "{}: value differs ({detail})", show(key)),
            Self::Ttl {
                key,
                source_ms,
                target_ms,
            } => write!(
                f,
                "{}: TTL {source_ms} ms on the source, {target_ms} ms on the target",
                show(key)
            ),
            Self::ExtraKeys { source, target } => write!(
                f,
                "the target holds {target} keys, the source {source}: {} more",
                target.saturating_sub(*source)
            ),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Source keys compared.
    pub keys_checked: u64,
    /// Differences found (all of them, reported or not).
    pub differences_total: u64,
    /// The first `max_reported` differences.
    pub differences: Vec<Difference>,
}

impl Report {
    /// No difference at all.
    pub fn identical(&self) -> bool {
        self.differences_total == 0
    }

    fn add(&mut self, difference: Difference, max: usize) {
        self.differences_total += 1;
        if self.differences.len() < max {
            self.differences.push(difference);
        }
    }
}

/// Why a verification could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A connection could not be made or a command failed.
    #[error("{side} {addr}: {source}")]
    Redis {
        /// `source` or `target`.
        side: &'static str,
        /// The node.
        addr: String,
        /// What the client library said.
        #[source]
        source: redis::RedisError,
    },
}

/// Compares every key of `source` with `target`; `progress` is called after each batch with
/// the number of keys checked so far.
///
/// # Errors
/// [`VerifyError`] when either side cannot be reached or refuses a read.
pub fn verify(
    source: &Endpoint,
    target: &Endpoint,
    options: &VerifyOptions,
    mut progress: impl FnMut(u64),
) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    let source_masters = masters(source).map_err(|e| redis_error("source", &source.addr, e))?;
    let mut target_conn = open_any(target).map_err(|e| redis_error("target", &target.addr, e))?;
    let mut source_keys = 0u64;
    for master in &source_masters {
        let conn = redis::Client::open(source.url(master))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .map_err(|e| redis_error("source", master, e))?;
        let mut conn = Side::Node(conn);
        source_keys += redis::cmd("DBSIZE")
            .query::<u64>(conn.conn())
            .map_err(|e| redis_error("source", master, e))?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(options.batch)
                .query(conn.conn())
                .map_err(|e| redis_error("source", master, e))?;
            let differences = compare_batch(&mut conn, &mut target_conn, &keys, options).map_err(
                |(side, e)| {
                    let addr = if side == "source" {
                        master
                    } else {
                        &target.addr
                    };
                    redis_error(side, addr, e)
                },
            )?;
            report.keys_checked += keys.len() as u64;
            for difference in differences {
                report.add(difference, options.max_reported);
            }
            progress(report.keys_checked);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    let target_keys =
        target_key_count(target).map_err(|e| redis_error("target", &target.addr, e))?;
    if target_keys > source_keys {
        report.add(
            Difference::ExtraKeys {
                source: source_keys,
                target: target_keys,
            },
            options.max_reported,
        );
    }
    Ok(report)
}

fn redis_error(side: &'static str, addr: &str, source: redis::RedisError) -> VerifyError {
    VerifyError::Redis {
        side,
        addr: addr.to_owned(),
        source,
    }
}

/// The masters to read: every master with slots of a cluster, else the node itself.
pub(crate) fn masters(endpoint: &Endpoint) -> redis::RedisResult<Vec<String>> {
    let mut conn = redis::Client::open(endpoint.url(&endpoint.addr))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    if !cluster_enabled(&mut conn)? {
        return Ok(vec![endpoint.addr.clone()]);
    }
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn)?;
    Ok(nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let flags = fields.get(2)?;
            let has_slots = fields.len() > 8;
            (flags.split(',').any(|f| f == "master") && !flags.contains("fail") && has_slots)
                .then(|| fields[1].split('@').next().unwrap_or_default().to_owned())
        })
        .collect())
}

fn cluster_enabled(conn: &mut redis::Connection) -> redis::RedisResult<bool> {
    let info: String = redis::cmd("INFO").arg("cluster").query(conn)?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// A connection to one side: one node, or a whole cluster (routing each key).
enum Side {
    Node(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

/// `(type, pttl)` per key.
type Kinds = Vec<(String, i64)>;

impl Side {
    fn conn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Self::Node(c) => c,
            Self::Cluster(c) => c.as_mut(),
        }
    }

    /// Sends `command key` for every key in one pipeline (a cluster pipeline splits it per
    /// node) and returns the replies in key order.
    fn each<T: redis::FromRedisValue>(
        &mut self,
        commands: &[&str],
        keys: &[&Vec<u8>],
    ) -> redis::RedisResult<T> {
        // SCAN may return an empty page (Valkey 8 walks a cluster node slot by slot), and an
        // empty pipeline is a client error: nothing to send is no replies.
        if keys.is_empty() || commands.is_empty() {
            return T::from_redis_value(Value::Array(Vec::new())).map_err(Into::into);
        }
        match self {
            Self::Node(c) => {
                let mut pipe = redis::pipe();
                for key in keys {
                    for command in commands {
                        pipe.cmd(command).arg(*key);
                    }
                }
                pipe.query(c)
            }
            Self::Cluster(c) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for key in keys {
                    for command in commands {
                        pipe.cmd(command).arg(*key);
                    }
                }
                pipe.query(c)
            }
        }
    }

    /// `TYPE`, `PTTL` and, for strings, `GET` of every key, in two pipelined round trips:
    /// `(type, pttl, string value)` per key.
    fn basics(&mut self, keys: &[Vec<u8>]) -> redis::RedisResult<Vec<Basics>> {
        let all: Vec<&Vec<u8>> = keys.iter().collect();
        let kinds: Kinds = self.each(&["TYPE", "PTTL"], &all)?;
        let strings: Vec<&Vec<u8>> = keys
            .iter()
            .zip(&kinds)
            .filter(|(_, (kind, _))| kind == "string")
            .map(|(key, _)| key)
            .collect();
        let values: Vec<Option<Vec<u8>>> = if strings.is_empty() {
            Vec::new()
        } else {
            self.each(&["GET"], &strings)?
        };
        let mut values = values.into_iter();
        Ok(kinds
            .into_iter()
            .map(|(kind, ttl)| {
                let value = if kind == "string" {
                    values.next().flatten()
                } else {
                    None
                };
                (kind, ttl, value)
            })
            .collect())
    }
}

/// A connection that reaches every key of `endpoint`: a cluster connection when it answers
/// `CLUSTER SLOTS` (a cluster node, or a Cinnabar proxy, which owns every slot), else a plain
/// one.
fn open_any(endpoint: &Endpoint) -> redis::RedisResult<Side> {
    let mut plain = redis::Client::open(endpoint.url(&endpoint.addr))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    let slots: redis::RedisResult<Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut plain);
    if slots.is_err() {
        return Ok(Side::Node(plain));
    }
    let mut builder = redis::cluster::ClusterClientBuilder::new(vec![endpoint.url(&endpoint.addr)]);
    if let Some(user) = &endpoint.user {
        builder = builder.username(user.clone());
    }
    if let Some(password) = &endpoint.password {
        builder = builder.password(password.clone());
    }
    Ok(Side::Cluster(Box::new(builder.build()?.get_connection()?)))
}

/// Keys on the target: `DBSIZE` summed over its masters (through a proxy, its own sum).
fn target_key_count(endpoint: &Endpoint) -> redis::RedisResult<u64> {
    let mut conn = redis::Client::open(endpoint.url(&endpoint.addr))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    if !cluster_enabled(&mut conn)? {
        return redis::cmd("DBSIZE").query(&mut conn);
    }
    let mut total = 0;
    for master in masters(endpoint)? {
        let mut node = redis::Client::open(endpoint.url(&master))?
            .get_connection_with_timeout(Duration::from_secs(5))?;
        total += redis::cmd("DBSIZE").query::<u64>(&mut node)?;
    }
    Ok(total)
}

type SideResult<T> = Result<T, (&'static str, redis::RedisError)>;

/// A batch of keys on both sides: the differences found. Types, TTLs and strings are read in
/// pipelines; other values one key at a time, in chunks.
fn compare_batch(
    source: &mut Side,
    target: &mut Side,
    keys: &[Vec<u8>],
    options: &VerifyOptions,
) -> SideResult<Vec<Difference>> {
    let a = source.basics(keys).map_err(|e| ("source", e))?;
    let b = target.basics(keys).map_err(|e| ("target", e))?;
    let mut differences = Vec::new();
    for ((key, theirs), ours) in keys.iter().zip(a).zip(b) {
        differences.extend(compare_key(source, target, key, theirs, ours, options)?);
    }
    Ok(differences)
}

/// What one side said of a key in a batch: its type, PTTL, and value when a string.
type Basics = (String, i64, Option<Vec<u8>>);

/// One key on both sides: `None` when they agree.
fn compare_key(
    source: &mut Side,
    target: &mut Side,
    key: &[u8],
    (source_type, source_ms, source_value): Basics,
    (target_type, target_ms, target_value): Basics,
    options: &VerifyOptions,
) -> SideResult<Option<Difference>> {
    if source_type == "none" {
        // Expired or deleted between SCAN and now: nothing to compare.
        return Ok(None);
    }
    if target_type == "none" {
        return Ok(Some(Difference::Missing { key: key.to_vec() }));
    }
    if source_type != target_type {
        return Ok(Some(Difference::Type {
            key: key.to_vec(),
            source: source_type,
            target: target_type,
        }));
    }
    let (a, b) = if source_type == "string" {
        (
            string_digest(source_value.as_deref()),
            string_digest(target_value.as_deref()),
        )
    } else {
        (
            digest(source.conn(), key, &source_type, options.batch).map_err(|e| ("source", e))?,
            digest(target.conn(), key, &target_type, options.batch).map_err(|e| ("target", e))?,
        )
    };
    if let Some(detail) = a.differs_from(&b) {
        return Ok(Some(Difference::Value {
            key: key.to_vec(),
            detail,
        }));
    }
    let tolerance = i64::try_from(options.ttl_tolerance.as_millis()).unwrap_or(i64::MAX);
    let both_persistent = source_ms < 0 && target_ms < 0;
    let close = source_ms >= 0 && target_ms >= 0 && (source_ms - target_ms).abs() <= tolerance;
    if both_persistent || close {
        Ok(None)
    } else {
        Ok(Some(Difference::Ttl {
            key: key.to_vec(),
            source_ms,
            target_ms,
        }))
    }
}

fn string_digest(value: Option<&[u8]>) -> Digest {
    let value = value.unwrap_or_default();
    Digest {
        length: value.len() as u64,
        hash: element_hash(&[value]),
        groups: Vec::new(),
    }
}

/// A value reduced to what two copies must share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Digest {
    length: u64,
    hash: u64,
    /// For streams: each group's name, last-delivered id, pending count and entries read.
    groups: Vec<String>,
}

impl Digest {
    fn differs_from(&self, other: &Self) -> Option<String> {
        if self.length != other.length {
            return Some(format!("length {} vs {}", self.length, other.length));
        }
        if self.hash != other.hash {
            return Some("elements differ".to_owned());
        }
        (self.groups != other.groups).then(|| {
            format!(
                "stream groups differ: {:?} vs {:?}",
                self.groups, other.groups
            )
        })
    }
}

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// One element's hash, its length folded in so `ab`+`c` and `a`+`bc` differ.
fn element_hash(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_START;
    for part in parts {
        hash = fnv(hash, &(part.len() as u64).to_le_bytes());
        hash = fnv(hash, part);
    }
    hash
}

/// Reads `key` (of type `kind`) in chunks of `batch` elements into a [`Digest`].
fn digest(
    conn: &mut dyn ConnectionLike,
    key: &[u8],
    kind: &str,
    batch: usize,
) -> redis::RedisResult<Digest> {
    let mut d = Digest::default();
    let step = batch.max(1) as i64;
    match kind {
        "string" => {
            let value: Vec<u8> = redis::cmd("GET").arg(key).query(conn)?;
            d.length = value.len() as u64;
            d.hash = element_hash(&[&value]);
        }
        "list" => {
            d.length = redis::cmd("LLEN").arg(key).query(conn)?;
            let mut hash = FNV_START;
            let mut start = 0i64;
            while (start as u64) < d.length {
                let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + step - 1)
                    .query(conn)?;
                if items.is_empty() {
                    break;
                }
                for item in &items {
                    hash = fnv(hash, &element_hash(&[item]).to_le_bytes());
                }
                start += step;
            }
            d.hash = hash;
        }
        "zset" => {
            d.length = redis::cmd("ZCARD").arg(key).query(conn)?;
            let mut hash = FNV_START;
            let mut start = 0i64;
            while (start as u64) < d.length {
                let items: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + step - 1)
                    .arg("WITHSCORES")
                    .query(conn)?;
                if items.is_empty() {
                    break;
                }
                for (member, score) in &items {
                    hash = fnv(hash, &element_hash(&[member, score]).to_le_bytes());
                }
                start += step;
            }
            d.hash = hash;
        }
        "set" | "hash" => {
            let (size, scan) = if kind == "set" {
                ("SCARD", "SSCAN")
            } else {
                ("HLEN", "HSCAN")
            };
            d.length = redis::cmd(size).arg(key).query(conn)?;
            // Order-independent: the sum of element hashes (SSCAN/HSCAN order is the server's).
            let mut cursor = 0u64;
            loop {
                let (next, items): (u64, Vec<Vec<u8>>) = redis::cmd(scan)
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(batch)
                    .query(conn)?;
                if kind == "set" {
                    for member in &items {
                        d.hash = d.hash.wrapping_add(element_hash(&[member]));
                    }
                } else {
                    for pair in items.chunks(2) {
                        let value = pair.get(1).map_or(&[][..], Vec::as_slice);
                        d.hash = d.hash.wrapping_add(element_hash(&[&pair[0], value]));
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        "stream" => {
            d.length = redis::cmd("XLEN").arg(key).query(conn)?;
            let mut hash = FNV_START;
            let mut start = "-".to_owned();
            loop {
                let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(batch)
                    .query(conn)?;
                let Some((last, _)) = entries.last() else {
                    break;
                };
                let next = format!("({last}");
                for (id, fields) in &entries {
                    let mut parts: Vec<&[u8]> = vec![id.as_bytes()];
                    parts.extend(fields.iter().map(Vec::as_slice));
                    hash = fnv(hash, &element_hash(&parts).to_le_bytes());
                }
                if entries.len() < batch {
                    break;
                }
                start = next;
            }
            d.hash = hash;
            d.groups = stream_groups(conn, key)?;
        }
        other => {
            // A type the comparison does not know (a module type): its DUMP must match.
            let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(conn)?;
            d.length = dump.len() as u64;
            d.hash = element_hash(&[other.as_bytes(), &dump]);
        }
    }
    Ok(d)
}

/// `name last-delivered-id pending entries-read` per consumer group, in name order.
fn stream_groups(conn: &mut dyn ConnectionLike, key: &[u8]) -> redis::RedisResult<Vec<String>> {
    let groups: Vec<Vec<Value>> = redis::cmd("XINFO").arg("GROUPS").arg(key).query(conn)?;
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let mut fields = std::collections::BTreeMap::new();
        for pair in group.chunks(2) {
            if let [Value::BulkString(name), value] = pair {
                let value = match value {
                    Value::BulkString(v) => String::from_utf8_lossy(v).into_owned(),
                    Value::Int(n) => n.to_string(),
                    Value::Nil => "nil".to_owned(),
                    other => format!("{other:?}"),
                };
                fields.insert(String::from_utf8_lossy(name).into_owned(), value);
            }
        }
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        out.push(format!(
            "{} {} {} {}",
            get("name"),
            get("last-delivered-id"),
            get("pending"),
            get("entries-read")
        ));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_hashes_keep_boundaries() {
        assert_ne!(element_hash(&[b"ab", b"c"]), element_hash(&[b"a", b"bc"]));
    }

    #[test]
    fn digests_name_what_differs() {
        let a = Digest {
            length: 2,
            hash: 7,
            groups: vec![],
        };
        let mut b = a.clone();
        assert_eq!(a.differs_from(&b), None);
        b.length = 3;
        assert_eq!(a.differs_from(&b).as_deref(), Some("length 2 vs 3"));
        b.length = 2;
        b.hash = 8;
        assert_eq!(a.differs_from(&b).as_deref(), Some("elements differ"));
    }
}
