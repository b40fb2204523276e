//! Sentinel-managed groups (one master, its replicas, a quorum of Sentinels) over the Redis
//! protocol: which master the Sentinels name, and what a node says about its own role and its
//! replicas. Read-only; the proxy's group backend and the local platform's sentinel topology
//! both decide from these answers, never from a node's word alone (a restarted old master
//! says `role:master` too until Sentinel turns it into a replica).

use std::time::Duration;

use crate::addr::NodeAddr;
use crate::client::{NodeClient, Timeouts};
use crate::credentials::Credentials;
use crate::error::ClusterError;
use crate::info::InfoFields;

/// One `slaveN:` line of a master's `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLink {
    /// Where the replica listens (as it announced itself).
    pub addr: NodeAddr,
    /// `online` once the initial sync is done (`wait_bgsave`, `send_bulk` before).
    pub state: String,
    /// The replication offset the replica acknowledged.
    pub offset: u64,
    /// Seconds since its last acknowledgement.
    pub lag: u64,
}

impl ReplicaLink {
    /// Whether it can serve reads and be promoted: its initial sync is done.
    pub fn online(&self) -> bool {
        self.state == "online"
    }
}

/// A node's own view of its replication, from `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNodeInfo {
    /// `master` or `slave`.
    pub role: String,
    /// `master_repl_offset` (on a replica: how far it has applied its master's stream).
    pub offset: u64,
    /// On a replica: `master_link_status:up`.
    pub link_up: bool,
    /// On a replica: the master it follows.
    pub master: Option<NodeAddr>,
    /// On a master: its replicas.
    pub replicas: Vec<ReplicaLink>,
}

impl GroupNodeInfo {
    /// Reads `INFO replication` text.
    pub fn parse(text: &str) -> Self {
        let fields = InfoFields::parse(text);
        let master = match (fields.get("master_host"), fields.get("master_port")) {
            (Some(host), Some(port)) => port.parse().ok().map(|p| NodeAddr::new(host, p)),
            _ => None,
        };
        let replicas = text
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains(":ip="))
            .filter_map(|l| parse_replica_line(l.split_once(':')?.1))
            .collect();
        Self {
            role: fields.get("role").unwrap_or("unknown").to_owned(),
            offset: fields.get_u64("master_repl_offset").unwrap_or(0),
            link_up: fields.get("master_link_status") == Some("up"),
            master,
            replicas,
        }
    }

    /// Whether the node says it is a master.
    pub fn is_master(&self) -> bool {
        self.role == "master"
    }
}

/// `ip=127.0.0.1,port=7001,state=online,offset=123,lag=0`.
fn parse_replica_line(value: &str) -> Option<ReplicaLink> {
    let field = |name: &str| {
        value
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    Some(ReplicaLink {
        addr: NodeAddr::new(field("ip")?, field("port")?.parse().ok()?),
        state: field("state").unwrap_or("unknown").to_owned(),
        offset: field("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
        lag: field("lag").and_then(|o| o.parse().ok()).unwrap_or(0),
    })
}

/// Asks `node` for its `INFO replication`.
///
/// # Errors
/// As [`NodeClient::query`], after connecting within `timeouts`.
pub async fn node_info(
    node: &NodeAddr,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<GroupNodeInfo, ClusterError> {
    let mut client = NodeClient::connect_as(node, timeouts, credentials).await?;
    let text: String = client.query(&["INFO", "replication"]).await?;
    Ok(GroupNodeInfo::parse(&text))
}

/// What one Sentinel answers to `SENTINEL get-master-addr-by-name name` (`None`: it does not
/// know the group).
///
/// # Errors
/// As [`NodeClient::query`].
pub async fn sentinel_master(
    sentinel: &NodeAddr,
    name: &str,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<Option<NodeAddr>, ClusterError> {
    let mut client = NodeClient::connect_as(sentinel, timeouts, credentials).await?;
    let reply: Option<(String, u16)> = client
        .query(&["SENTINEL", "get-master-addr-by-name", name])
        .await?;
    Ok(reply.map(|(host, port)| NodeAddr::new(host, port)))
}

/// What the Sentinels say the master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumAnswer {
    /// The master named with the newest configuration epoch.
    pub master: NodeAddr,
    /// That epoch: every failover a majority of Sentinels authorised raises it, so an answer
    /// with a lower one is out of date.
    pub epoch: u64,
    /// Sentinels naming that master.
    pub votes: usize,
    /// Sentinels that answered.
    pub answered: usize,
    /// Some answering Sentinel flags that very master `o_down` or is failing it over: it is
    /// on its way out, whatever it says about itself. (Once the replica is promoted, the
    /// Sentinels name the replica, which is not the one failing.)
    pub failing_over: bool,
}

/// The master named by the Sentinels that know the newest configuration epoch (among them,
/// the one most name; ties: the first Sentinel's). Not simply the majority: right after a
/// failover only the leader may know it yet (the others learn within seconds), and a majority
/// still naming the old master, which a resumed old master confirms, would send writes there.
/// Sentinels are asked all at once, each within `timeout`, so a stopped one delays the answer
/// by at most that, however many are stopped.
///
/// # Errors
/// A sentence naming every Sentinel and why none named a master.
pub async fn quorum_answer(
    sentinels: &[NodeAddr],
    name: &str,
    timeout: Duration,
    credentials: Option<&Credentials>,
) -> Result<QuorumAnswer, String> {
    let timeouts = Timeouts {
        connect: timeout,
        response: timeout,
    };
    let mut asks = tokio::task::JoinSet::new();
    for (i, sentinel) in sentinels.iter().enumerate() {
        let (sentinel, name, credentials) =
            (sentinel.clone(), name.to_owned(), credentials.cloned());
        asks.spawn(async move {
            let answer = sentinel_view(&sentinel, &name, timeouts, credentials.as_ref()).await;
            (i, answer)
        });
    }
    let mut answers: Vec<(usize, Result<SentinelView, ClusterError>)> = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    // In the Sentinels' order, so ties go to the first one.
    answers.sort_by_key(|(i, _)| *i);
    let mut views = Vec::new();
    let mut failures = Vec::new();
    for (i, answer) in answers {
        match answer {
            Ok(view) => views.push(view),
            Err(e) => failures.push(format!("{}: {e}", sentinels[i])),
        }
    }
    let Some(epoch) = views.iter().map(|v| v.epoch).max() else {
        return Err(format!(
            "no Sentinel named the master of {name:?} ({})",
            failures.join("; ")
        ));
    };
    let mut tally: Vec<(NodeAddr, usize)> = Vec::new();
    for view in views.iter().filter(|v| v.epoch == epoch) {
        match tally.iter_mut().find(|(m, _)| *m == view.master) {
            Some((_, n)) => *n += 1,
            None => tally.push((view.master.clone(), 1)),
        }
    }
    // `max_by_key` keeps the last of equals: walk backwards so the first Sentinel's wins.
    let master = tally
        .into_iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|(master, _)| master)
        .unwrap_or_else(|| views[0].master.clone());
    let failing_over = views.iter().any(|v| v.failing.as_ref() == Some(&master));
    Ok(QuorumAnswer {
        failing_over,
        votes: views.iter().filter(|v| v.master == master).count(),
        answered: views.len(),
        master,
        epoch,
    })
}

/// [`quorum_answer`] as (master, Sentinels naming it, Sentinels answering).
///
/// # Errors
/// As [`quorum_answer`].
pub async fn quorum_master(
    sentinels: &[NodeAddr],
    name: &str,
    timeout: Duration,
    credentials: Option<&Credentials>,
) -> Result<(NodeAddr, usize, usize), String> {
    let answer = quorum_answer(sentinels, name, timeout, credentials).await?;
    Ok((answer.master, answer.votes, answer.answered))
}

/// One Sentinel's view of the group (`SENTINEL MASTER name`), for status and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    /// The Sentinel.
    pub sentinel: NodeAddr,
    /// The master it names.
    pub master: NodeAddr,
    /// Its flags for the master (`master`, `s_down`, `o_down`, `failover_in_progress` …).
    pub flags: Vec<String>,
    /// Replicas it knows.
    pub replicas: usize,
    /// Other Sentinels it knows.
    pub other_sentinels: usize,
    /// The quorum it was configured with.
    pub quorum: usize,
    /// Its configuration epoch for the group (raised by every failover).
    pub epoch: u64,
    /// The master it flags `o_down` or is failing over, if any (the address in its master
    /// entry, which stays the old master's until the failover ends, while `master` is the
    /// promoted replica from the promotion on).
    pub failing: Option<NodeAddr>,
}

/// What `sentinel` says about group `name`.
///
/// # Errors
/// As [`NodeClient::query`]; [`ClusterError::Command`] when its answer lacks the master.
pub async fn sentinel_view(
    sentinel: &NodeAddr,
    name: &str,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<SentinelView, ClusterError> {
    let mut client = NodeClient::connect_as(sentinel, timeouts, credentials).await?;
    let flat: Vec<String> = client.query(&["SENTINEL", "MASTER", name]).await?;
    let field = |key: &str| {
        flat.chunks(2)
            .find(|kv| kv.first().is_some_and(|k| k == key))
            .and_then(|kv| kv.get(1))
            .map(String::as_str)
    };
    let number = |key: &str| field(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    // `SENTINEL MASTER` keeps the old master's address until the failover ends, while its
    // epoch is already the new one; `get-master-addr-by-name` names the promoted replica as
    // soon as it is promoted. The address comes from the latter so the pair agrees.
    let current: Option<(String, u16)> = client
        .query(&["SENTINEL", "get-master-addr-by-name", name])
        .await?;
    let entry = field("ip")
        .zip(field("port").and_then(|p| p.parse().ok()))
        .map(|(ip, port)| NodeAddr::new(ip, port));
    let flags: Vec<String> = field("flags")
        .unwrap_or_default()
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    let failing = entry.clone().filter(|_| {
        flags
            .iter()
            .any(|f| f == "o_down" || f == "failover_in_progress")
    });
    let master = current
        .map(|(host, port)| NodeAddr::new(host, port))
        .or(entry)
        .ok_or_else(|| ClusterError::Command {
            addr: sentinel.clone(),
            command: format!("SENTINEL MASTER {name}"),
            message: "the reply names no master".into(),
        })?;
    Ok(SentinelView {
        sentinel: sentinel.clone(),
        master,
        flags,
        failing,
        replicas: number("num-slaves"),
        other_sentinels: number("num-other-sentinels"),
        quorum: number("quorum"),
        epoch: field("config-epoch")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

/// Waits until every Sentinel of `group` knows `replicas` replicas and every other Sentinel,
/// they all name one master, and that node says `role:master`.
///
/// # Errors
/// A sentence with each Sentinel's last view after `timeout`.
pub async fn wait_group_ready(
    group: &GroupAccess,
    replicas: usize,
    timeout: Duration,
) -> Result<NodeAddr, String> {
    let deadline = std::time::Instant::now() + timeout;
    let ask = Duration::from_secs(1);
    let timeouts = Timeouts {
        connect: ask,
        response: ask,
    };
    let others = group.sentinels.len().saturating_sub(1);
    loop {
        let mut views = Vec::new();
        for sentinel in &group.sentinels {
            views.push(
                sentinel_view(
                    sentinel,
                    &group.name,
                    timeouts,
                    group.sentinel_credentials.as_ref(),
                )
                .await,
            );
        }
        let agreed = views.iter().all(|v| {
            v.as_ref()
                .is_ok_and(|v| v.replicas == replicas && v.other_sentinels == others)
        });
        let master = views
            .first()
            .and_then(|v| v.as_ref().ok())
            .map(|v| v.master.clone());
        if let Some(master) = master.filter(|_| agreed)
            && views
                .iter()
                .all(|v| v.as_ref().is_ok_and(|v| v.master == master))
            && node_info(&master, timeouts, group.credentials.as_ref())
                .await
                .is_ok_and(|i| i.is_master())
        {
            return Ok(master);
        }
        if std::time::Instant::now() >= deadline {
            let seen: Vec<String> = views
                .iter()
                .zip(&group.sentinels)
                .map(|(v, s)| match v {
                    Ok(v) => format!(
                        "{s}: master {}, {} replicas, {} other sentinels",
                        v.master, v.replicas, v.other_sentinels
                    ),
                    Err(e) => format!("{s}: {e}"),
                })
                .collect();
            return Err(format!(
                "after {timeout:?} the Sentinels do not agree on the whole group ({replicas} \
                 replicas, {others} other sentinels each): {}",
                seen.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A group as the control plane reaches it.
#[derive(Debug, Clone)]
pub struct GroupAccess {
    /// The name the Sentinels monitor it under.
    pub name: String,
    /// Its Sentinels.
    pub sentinels: Vec<NodeAddr>,
    /// How to log in to the Sentinels.
    pub sentinel_credentials: Option<Credentials>,
    /// How to log in to the data nodes.
    pub credentials: Option<Credentials>,
}

/// Why a planned failover of a group did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// No Sentinel named a master.
    #[error("{0}")]
    NoMaster(String),
    /// The master or a replica could not be asked.
    #[error(transparent)]
    Node(#[from] ClusterError),
    /// The named master does not say it is one: the group is mid-failover already.
    #[error("{0} is named master by the Sentinels but says role:{1}; a failover is under way")]
    NotMaster(NodeAddr, String),
    /// No replica could take over.
    #[error("no replica of {0} is online")]
    NoReplica(NodeAddr),
    /// A replica did not reach the master's offset in time (writes are still arriving, or
    /// its link is slow): failing over now could lose them.
    #[error("replica {replica} is at offset {offset}, the master at {needed}, after {waited:?}")]
    Behind {
        /// The replica.
        replica: NodeAddr,
        /// Its offset.
        offset: u64,
        /// The master's.
        needed: u64,
        /// How long it was waited for.
        waited: Duration,
    },
    /// Every Sentinel refused `SENTINEL FAILOVER`.
    #[error("SENTINEL FAILOVER refused: {0}")]
    Refused(String),
    /// The Sentinels did not name a new, confirmed master in time.
    #[error("no new master confirmed {0:?} after SENTINEL FAILOVER (Sentinels name {1})")]
    NotPromoted(Duration, String),
}

/// What a planned failover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverDone {
    /// The master before.
    pub from: NodeAddr,
    /// The master now (it says `role:master` and most Sentinels name it).
    pub to: NodeAddr,
    /// The old master's offset every replica had reached before the failover started.
    pub offset: u64,
}

/// A planned failover of `group`: waits until every online replica has applied everything
/// the master has (the caller stops writes first: the proxy holds its clients' requests),
/// asks a Sentinel for `SENTINEL FAILOVER`, and waits, within `timeout`, until most Sentinels
/// name another master that says `role:master`. Sentinel itself neither pauses the old
/// master nor waits for the replica; that is why the catch-up is checked here.
///
/// # Errors
/// [`SentinelError`] naming what stopped it; before `SENTINEL FAILOVER` nothing changed.
pub async fn planned_failover(
    group: &GroupAccess,
    timeout: Duration,
) -> Result<FailoverDone, SentinelError> {
    let started = std::time::Instant::now();
    let ask = Duration::from_secs(1);
    let timeouts = Timeouts {
        connect: ask,
        response: ask,
    };
    let credentials = group.credentials.as_ref();
    let sentinel_credentials = group.sentinel_credentials.as_ref();
    let (from, _, _) = quorum_master(&group.sentinels, &group.name, ask, sentinel_credentials)
        .await
        .map_err(SentinelError::NoMaster)?;
    let master = node_info(&from, timeouts, credentials).await?;
    if !master.is_master() {
        return Err(SentinelError::NotMaster(from, master.role));
    }
    let replicas: Vec<NodeAddr> = master
        .replicas
        .iter()
        .filter(|r| r.online())
        .map(|r| r.addr.clone())
        .collect();
    if replicas.is_empty() {
        return Err(SentinelError::NoReplica(from));
    }
    let needed = node_info(&from, timeouts, credentials).await?.offset;
    for replica in &replicas {
        loop {
            let offset = node_info(replica, timeouts, credentials).await?.offset;
            if offset >= needed {
                break;
            }
            if started.elapsed() >= timeout {
                return Err(SentinelError::Behind {
                    replica: replica.clone(),
                    offset,
                    needed,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut refusals = Vec::new();
    let mut asked = false;
    for sentinel in &group.sentinels {
        let reply = async {
            let mut client =
                NodeClient::connect_as(sentinel, timeouts, sentinel_credentials).await?;
            client
                .query::<String>(&["SENTINEL", "FAILOVER", &group.name])
                .await
        };
        match reply.await {
            Ok(_) => {
                asked = true;
                break;
            }
            Err(e) => refusals.push(format!("{sentinel}: {e}")),
        }
    }
    if !asked {
        return Err(SentinelError::Refused(refusals.join("; ")));
    }
    let promoted_by = started + timeout.max(Duration::from_secs(5));
    loop {
        // Done when the promoted replica is named with the newest epoch and says so: what
        // the proxy trusts too.
        let named = quorum_answer(&group.sentinels, &group.name, ask, sentinel_credentials).await;
        if let Ok(answer) = &named
            && answer.master != from
            && !answer.failing_over
            && answer.votes > group.sentinels.len() / 2
            && node_info(&answer.master, timeouts, credentials)
                .await
                .is_ok_and(|i| i.is_master())
        {
            return Ok(FailoverDone {
                from,
                to: answer.master.clone(),
                offset: needed,
            });
        }
        if std::time::Instant::now() >= promoted_by {
            let named = match named {
                Ok(answer) => format!(
                    "{} ({} of {}{})",
                    answer.master,
                    answer.votes,
                    answer.answered,
                    if answer.failing_over {
                        ", failover still in progress"
                    } else {
                        ""
                    }
                ),
                Err(e) => e,
            };
            return Err(SentinelError::NotPromoted(started.elapsed(), named));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How Sentinels watch a group: what `SENTINEL MONITOR` and `SENTINEL SET` are given when a
/// platform forms the group at run time (the local platform writes the same into each
/// Sentinel's file instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// The group's name.
    pub name: String,
    /// Sentinels that must agree the master is down before a failover starts.
    pub quorum: usize,
    /// `down-after-milliseconds`.
    pub down_after_ms: u64,
    /// `failover-timeout`.
    pub failover_timeout_ms: u64,
    /// The data nodes' password (`auth-pass`), when they require one.
    pub auth_pass: Option<String>,
}

/// Has `sentinel` monitor the group at `master`: `SENTINEL MONITOR`, then `SENTINEL SET` of
/// the timeouts, `parallel-syncs 1` (one replica at a time resyncs with a new master, so the
/// others keep serving reads) and the password. A Sentinel that monitors the group already at
/// `master` is only given the settings again.
///
/// # Errors
/// As [`NodeClient::query`]; [`ClusterError::Command`] when it monitors the group at another
/// master.
pub async fn monitor(
    sentinel: &NodeAddr,
    master: &NodeAddr,
    settings: &MonitorSettings,
    timeouts: Timeouts,
    sentinel_credentials: Option<&Credentials>,
) -> Result<(), ClusterError> {
    let mut client = NodeClient::connect_as(sentinel, timeouts, sentinel_credentials).await?;
    let name = settings.name.as_str();
    let port = master.port.to_string();
    let quorum = settings.quorum.to_string();
    let added = client
        .query::<String>(&["SENTINEL", "MONITOR", name, &master.host, &port, &quorum])
        .await;
    if let Err(e) = added {
        let known: Option<(String, u16)> = client
            .query(&["SENTINEL", "get-master-addr-by-name", name])
            .await?;
        match known {
            Some((host, p)) if NodeAddr::new(host.as_str(), p) == *master => {}
            _ => return Err(e),
        }
    }
    let down_after = settings.down_after_ms.to_string();
    let failover_timeout = settings.failover_timeout_ms.to_string();
    let mut set = vec![
        "SENTINEL",
        "SET",
        name,
        "down-after-milliseconds",
        &down_after,
        "failover-timeout",
        &failover_timeout,
        "parallel-syncs",
        "1",
    ];
    if let Some(password) = &settings.auth_pass {
        set.extend(["auth-pass", password.as_str()]);
    }
    client.query::<String>(&set).await?;
    Ok(())
}

/// `SENTINEL RESET name` on `sentinel`: it forgets the group's replicas and the other
/// Sentinels (keeping the master) and finds the live ones again, from the master's `INFO` and
/// the Sentinels' hello messages, within seconds.
///
/// # Errors
/// As [`NodeClient::query`].
pub async fn reset(
    sentinel: &NodeAddr,
    name: &str,
    timeouts: Timeouts,
    sentinel_credentials: Option<&Credentials>,
) -> Result<(), ClusterError> {
    let mut client = NodeClient::connect_as(sentinel, timeouts, sentinel_credentials).await?;
    client.query::<i64>(&["SENTINEL", "RESET", name]).await?;
    Ok(())
}

/// `REPLICAOF master` on `node` (not persisted: a platform whose configuration files are
/// read-only relies on the Sentinels, or on asking them at start, after a restart).
///
/// # Errors
/// As [`NodeClient::query`].
pub async fn follow(
    node: &NodeAddr,
    master: &NodeAddr,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<(), ClusterError> {
    let mut client = NodeClient::connect_as(node, timeouts, credentials).await?;
    let port = master.port.to_string();
    client
        .query::<String>(&["REPLICAOF", &master.host, &port])
        .await?;
    Ok(())
}

/// A planned failover for a platform that cannot hold its clients' requests in the proxy
/// (Kubernetes, where the proxies run apart from the operator): the master's writes are
/// paused (`CLIENT PAUSE WRITE`, at most `timeout`) so the replicas catch up and nothing is
/// acknowledged that the promoted replica lacks, then [`planned_failover`], then the old
/// master is made a replica of the new one at once (Sentinel would only demote it seconds
/// later), so the writes that waited on it fail with `-READONLY` (not run, and retried by the
/// proxy on the new master) instead of running on a master nobody reads any more. The pause
/// is lifted in every case.
///
/// # Errors
/// As [`planned_failover`].
pub async fn paused_failover(
    group: &GroupAccess,
    timeout: Duration,
) -> Result<FailoverDone, SentinelError> {
    let ask = Duration::from_secs(1);
    let timeouts = Timeouts {
        connect: ask,
        response: ask,
    };
    let credentials = group.credentials.as_ref();
    let (from, _, _) = quorum_master(
        &group.sentinels,
        &group.name,
        ask,
        group.sentinel_credentials.as_ref(),
    )
    .await
    .map_err(SentinelError::NoMaster)?;
    let mut client = NodeClient::connect_as(&from, timeouts, credentials).await?;
    let pause_ms = (timeout.as_millis() + 1000).to_string();
    client
        .query::<String>(&["CLIENT", "PAUSE", &pause_ms, "WRITE"])
        .await?;
    let result = planned_failover(group, timeout).await;
    if let Ok(done) = &result {
        // Best effort: Sentinel demotes it anyway once it looks again.
        let _ = follow(&done.from, &done.to, timeouts, credentials).await;
    }
    let _ = client.query::<String>(&["CLIENT", "UNPAUSE"]).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masters_replication_section_lists_its_replicas() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=560,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=3\r\n\
            master_repl_offset:560\r\n";
        let info = GroupNodeInfo::parse(text);
        assert!(info.is_master());
        assert_eq!(info.offset, 560);
        assert_eq!(info.replicas.len(), 2);
        assert_eq!(info.replicas[0].addr, NodeAddr::new("127.0.0.1", 7001));
        assert!(info.replicas[0].online());
        assert!(!info.replicas[1].online());
        assert_eq!(info.replicas[1].lag, 3);
    }

    #[test]
    fn a_replicas_replication_section_names_its_master() {
        let text = "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\n\
            master_link_status:up\r\nmaster_repl_offset:99\r\n";
        let info = GroupNodeInfo::parse(text);
        assert!(!info.is_master());
        assert!(info.link_up);
        assert_eq!(info.master, Some(NodeAddr::new("127.0.0.1", 7000)));
        assert_eq!(info.offset, 99);
    }
}
