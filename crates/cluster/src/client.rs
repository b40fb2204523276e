//! One control connection to one node, with typed cluster commands and bounded waits.
//!
//! Every call here is bounded by [`Timeouts`]: a dead, firewalled or SIGSTOPped node costs at
//! most one timeout, never a hang. It must never retry on its own; callers decide what a
//! failure means (a report entry during `check`, an error during `create`).

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, Value,
};

use crate::addr::NodeAddr;
use crate::credentials::Credentials;
use crate::error::ClusterError;
use crate::info::{ClusterInfo, InfoFields, ReplicationInfo};
use crate::shards::{Shard, parse_cluster_shards};
use crate::slots::SlotRange;
use crate::topology::{Topology, parse_cluster_nodes};

/// How long to wait for a node. Control-plane commands are tiny, so a node that takes longer
/// than this is treated as unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus connection set-up.
    pub connect: Duration,
    /// Each command's reply.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
        }
    }
}

/// A connection to one node. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct NodeClient {
    addr: NodeAddr,
    conn: MultiplexedConnection,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// [`ClusterError::Unreachable`] when the node does not accept and set up a connection
    /// within `timeouts.connect` (plus one response timeout for the client's hand-shake).
    pub async fn connect(addr: &NodeAddr, timeouts: Timeouts) -> Result<Self, ClusterError> {
        Self::connect_as(addr, timeouts, None).await
    }

    /// Connects to `addr` and authenticates with `credentials` (when given) as part of the
    /// connection set-up.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); a refused login is [`ClusterError::Unreachable`] too,
    /// with the server's reason (never the password).
    pub async fn connect_as(
        addr: &NodeAddr,
        timeouts: Timeouts,
        credentials: Option<&Credentials>,
    ) -> Result<Self, ClusterError> {
        let unreachable = |source: RedisError| ClusterError::Unreachable {
            addr: addr.clone(),
            source,
        };
        let mut info = addr
            .redis_url()
            .into_connection_info()
            .map_err(unreachable)?;
        if let Some(credentials) = credentials {
            let mut settings = info
                .redis_settings()
                .clone()
                .set_password(&credentials.password);
            if let Some(user) = &credentials.user {
                settings = settings.set_username(user);
            }
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(unreachable)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response));
        // The outer bound also covers the set-up commands the client sends after connecting,
        // which a paused server accepts at the TCP level but never answers.
        let bound = timeouts.connect + timeouts.response;
        let conn = tokio::time::timeout(
            bound,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| unreachable(timed_out(bound)))?
        .map_err(unreachable)?;
        Ok(Self {
            addr: addr.clone(),
            conn,
        })
    }

    /// The address this client connected to.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Sends `args` as one command and converts the reply.
    ///
    /// # Errors
    /// [`ClusterError::Unreachable`] on I/O failures and timeouts, [`ClusterError::NotClusterEnabled`]
    /// when the node runs without cluster support, [`ClusterError::Command`] for any other
    /// error reply or an unexpected reply type.
    pub async fn query<T: FromRedisValue>(&mut self, args: &[&str]) -> Result<T, ClusterError> {
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut self.conn)
            .await
            .map_err(|e| self.classify(args, e))
    }

    /// Sends `pipeline` in one write and returns each command's own result, so one error
    /// reply does not hide the others' results. `what` names the batch in errors.
    ///
    /// # Errors
    /// As [`query`](Self::query) for the pipeline as a whole (I/O failures, timeouts).
    pub(crate) async fn pipeline(
        &mut self,
        pipeline: &mut redis::Pipeline,
        what: &str,
    ) -> Result<Vec<redis::RedisResult<Value>>, ClusterError> {
        pipeline.ignore_errors();
        pipeline
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.classify(&[what], e))
    }

    /// `error`, an error reply to `command`, as a [`ClusterError`] naming this node.
    pub(crate) fn refusal(&self, command: &str, error: RedisError) -> ClusterError {
        self.classify(&[command], error)
    }

    fn classify(&self, args: &[&str], error: RedisError) -> ClusterError {
        if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            return ClusterError::Unreachable {
                addr: self.addr.clone(),
                source: error,
            };
        }
        let message = match error.kind() {
            ErrorKind::Server(_) | ErrorKind::Extension => format!(
                "{} {}",
                error.code().unwrap_or("ERR"),
                error.detail().unwrap_or_default()
            )
            .trim()
            .to_owned(),
            _ => error.to_string(),
        };
        if message.contains("cluster support disabled") {
            return ClusterError::NotClusterEnabled {
                addr: self.addr.clone(),
            };
        }
        ClusterError::Command {
            addr: self.addr.clone(),
            command: args.join(" "),
            message,
        }
    }

    /// `CLUSTER NODES`, with the node's own host filled in when it has met nobody yet.
    ///
    /// # Errors
    /// As [`query`](Self::query), plus [`ClusterError::Parse`] for a malformed reply.
    pub async fn cluster_nodes(&mut self) -> Result<Topology, ClusterError> {
        let text: String = self.query(&["CLUSTER", "NODES"]).await?;
        let mut topology = parse_cluster_nodes(&text)?;
        let host = self.addr.host.clone();
        topology.fill_myself_host(&host);
        Ok(topology)
    }

    /// `CLUSTER SHARDS` (Redis 7+).
    ///
    /// # Errors
    /// As [`query`](Self::query), plus [`ClusterError::Parse`] for a malformed reply.
    pub async fn cluster_shards(&mut self) -> Result<Vec<Shard>, ClusterError> {
        let reply: Value = self.query(&["CLUSTER", "SHARDS"]).await?;
        parse_cluster_shards(&reply)
    }

    /// `CLUSTER INFO`.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn cluster_info(&mut self) -> Result<ClusterInfo, ClusterError> {
        let text: String = self.query(&["CLUSTER", "INFO"]).await?;
        Ok(ClusterInfo::parse(&text))
    }

    /// `INFO <section>` as key/value fields.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn info(&mut self, section: &str) -> Result<InfoFields, ClusterError> {
        let text: String = self.query(&["INFO", section]).await?;
        Ok(InfoFields::parse(&text))
    }

    /// `INFO replication`, typed.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn replication_info(&mut self) -> Result<ReplicationInfo, ClusterError> {
        let text: String = self.query(&["INFO", "replication"]).await?;
        Ok(ReplicationInfo::parse(&text))
    }

    /// `CLUSTER MYID`.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn my_id(&mut self) -> Result<String, ClusterError> {
        self.query(&["CLUSTER", "MYID"]).await
    }

    /// `DBSIZE`.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn db_size(&mut self) -> Result<u64, ClusterError> {
        self.query(&["DBSIZE"]).await
    }

    /// `CLUSTER ADDSLOTSRANGE a b [c d …]` (Redis 7+).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn add_slots(&mut self, ranges: &[SlotRange]) -> Result<(), ClusterError> {
        let bounds: Vec<String> = ranges
            .iter()
            .flat_map(|r| [r.start.to_string(), r.end.to_string()])
            .collect();
        let mut args = vec!["CLUSTER", "ADDSLOTSRANGE"];
        args.extend(bounds.iter().map(String::as_str));
        self.query::<()>(&args).await
    }

    /// `CLUSTER SET-CONFIG-EPOCH epoch` (only accepted by a node that knows no other node).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn set_config_epoch(&mut self, epoch: u64) -> Result<(), ClusterError> {
        let epoch = epoch.to_string();
        self.query::<()>(&["CLUSTER", "SET-CONFIG-EPOCH", &epoch])
            .await
    }

    /// `CLUSTER MEET ip port bus-port`. Redis only accepts an IP here, so resolve first
    /// (see [`resolve_ip`]).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn meet(&mut self, ip: IpAddr, port: u16, bus_port: u16) -> Result<(), ClusterError> {
        let (ip, port, bus) = (ip.to_string(), port.to_string(), bus_port.to_string());
        self.query::<()>(&["CLUSTER", "MEET", &ip, &port, &bus])
            .await
    }

    /// `CLUSTER REPLICATE master-id`.
    ///
    /// # Errors
    /// As [`query`](Self::query); `ERR Unknown node` while the node has not learnt the master yet.
    pub async fn replicate(&mut self, master_id: &str) -> Result<(), ClusterError> {
        self.query::<()>(&["CLUSTER", "REPLICATE", master_id]).await
    }
}

/// Resolves `addr.host` to an IP address (`CLUSTER MEET` takes no host names).
///
/// # Errors
/// [`ClusterError::Unreachable`] when the name does not resolve within `timeout`.
pub async fn resolve_ip(addr: &NodeAddr, timeout: Duration) -> Result<IpAddr, ClusterError> {
    if let Ok(ip) = addr.host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let unreachable = |source: std::io::Error| ClusterError::Unreachable {
        addr: addr.clone(),
        source: source.into(),
    };
    let found = tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((addr.host.as_str(), addr.port)),
    )
    .await
    .map_err(|_| unreachable(io_timed_out(timeout)))?
    .map_err(unreachable)?
    .map(|socket| socket.ip())
    .collect::<Vec<_>>();
    // Prefer IPv4: Redis binds it by default, and nodes announce what they were met on.
    found
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(|| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolves to no address", addr.host),
            ))
        })
}

fn io_timed_out(after: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {} ms", after.as_millis()),
    )
}

fn timed_out(after: Duration) -> RedisError {
    io_timed_out(after).into()
}
