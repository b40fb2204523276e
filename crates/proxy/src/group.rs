//! The backend kind "group": a master/replicas set managed by Sentinel, fronted like a
//! cluster of one shard that owns every slot (see `SlotMap::group`), so sessions, tickets,
//! retries and the read policy are the cluster's own code paths.
//!
//! Must never route a write to a node that has not said `role:master` in the last check: the
//! table names a master only when the Sentinels that know the newest configuration epoch name
//! it and the node itself confirms; otherwise the table has no master and requests wait within
//! the retry window. The epoch matters: right after a failover most Sentinels may still name
//! the old master, and an old master that was paused (not dead) resumes saying `role:master`
//! until Sentinel demotes it; the epoch of a confirmed master is remembered, and answers from
//! Sentinels behind it are not trusted. Nor is a master any Sentinel flags `o_down` or is
//! failing over: until the replica is promoted the Sentinels still name the old master, which
//! may be back and answering, and a write it took then would be dropped. From the promotion
//! on, the failover's leader names the promoted replica with the new epoch, and it is trusted
//! once it says `role:master`. A write that still reaches a node demoted between two
//! checks gets `-READONLY` (it did not run), which the worker retries like `TRYAGAIN`. Runs on
//! the control thread only.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use cinnabar_cluster::sentinel::{node_info, quorum_answer};
use cinnabar_cluster::{Credentials, NodeAddr, Timeouts};
use cinnabar_resp::encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::GroupConfig;
use crate::refresh::{Freshness, Upstream};
use crate::slotmap::SlotMap;

/// How often a group's master is confirmed: the seed's HAProxy check runs every second.
pub(crate) const ROLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The Sentinel events after which the master may have changed: a failover finished, or a
/// node went down or came back (a replica to stop or start reading from).
const EVENTS: [&[u8]; 5] = [
    b"+switch-master",
    b"+sdown",
    b"-sdown",
    b"+odown",
    b"+failover-end",
];

/// A fresh table for `group`: the master most Sentinels name, if it says `role:master`, with
/// its online replicas; no master when it does not (yet) confirm.
///
/// # Errors
/// A sentence when no Sentinel names a master (the current table is then kept, as for a
/// cluster no node of which answers).
pub(crate) async fn fetch(
    group: &GroupConfig,
    upstream: &Upstream,
    timeout: Duration,
    version: u64,
) -> Result<SlotMap, String> {
    let answer = quorum_answer(
        &group.sentinels,
        &group.name,
        timeout,
        group.sentinel_credentials.as_ref(),
    )
    .await?;
    let (named, votes, answered, epoch) =
        (answer.master, answer.votes, answer.answered, answer.epoch);
    if answer.failing_over {
        tracing::warn!(node = %named, epoch, answered, "a Sentinel flags the master o_down or is failing it over; holding requests");
        return Ok(unconfirmed(upstream, version));
    }
    let confirmed_epoch = upstream.group_epoch.load(Ordering::SeqCst);
    if epoch < confirmed_epoch {
        tracing::warn!(node = %named, epoch, confirmed_epoch, answered, "the answering Sentinels are behind a failover already seen; holding requests");
        return Ok(unconfirmed(upstream, version));
    }
    let timeouts = Timeouts {
        connect: timeout,
        response: timeout,
    };
    let credentials = upstream.credentials.as_deref();
    let (master, replicas) = match node_info(&named, timeouts, credentials).await {
        Ok(info) if info.is_master() => {
            upstream.group_epoch.fetch_max(epoch, Ordering::SeqCst);
            let replicas = info
                .replicas
                .into_iter()
                .filter(|r| r.online())
                .map(|r| r.addr)
                .collect();
            (Some(named), replicas)
        }
        Ok(info) => {
            tracing::warn!(node = %named, role = %info.role, votes, answered, "the Sentinels' master does not say role:master; holding requests");
            (None, Vec::new())
        }
        Err(e) => {
            tracing::warn!(node = %named, error = %e, votes, answered, "the Sentinels' master does not answer; holding requests");
            (None, Vec::new())
        }
    };
    Ok(SlotMap::group(master, replicas, version).named(
        &upstream.name,
        upstream.credentials.clone(),
        upstream.epoch,
    ))
}

/// A table with no master: requests wait.
fn unconfirmed(upstream: &Upstream, version: u64) -> SlotMap {
    SlotMap::group(None, Vec::new(), version).named(
        &upstream.name,
        upstream.credentials.clone(),
        upstream.epoch,
    )
}

/// Follows every Sentinel's events for as long as the control thread runs: each one asks for
/// a refresh at once, so a failover is picked up when it happens rather than at the next
/// role check. A Sentinel that cannot be reached is tried again every second.
pub(crate) fn watch_sentinels(group: &GroupConfig, freshness: &Arc<Freshness>) {
    for sentinel in &group.sentinels {
        let (sentinel, freshness) = (sentinel.clone(), Arc::clone(freshness));
        let credentials = group.sentinel_credentials.clone();
        tokio::spawn(async move {
            loop {
                let why = follow(&sentinel, credentials.as_ref(), &freshness).await;
                tracing::debug!(%sentinel, error = %why, "sentinel events lost; reconnecting");
                tokio::time::sleep(ROLE_CHECK_INTERVAL).await;
            }
        });
    }
}

/// One subscription to `sentinel`'s events, until the connection fails.
async fn follow(
    sentinel: &NodeAddr,
    credentials: Option<&Credentials>,
    freshness: &Freshness,
) -> String {
    let connect = TcpStream::connect((sentinel.host.as_str(), sentinel.port));
    let mut stream = match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return "connect timed out".into(),
    };
    let mut request = Vec::new();
    if let Some(credentials) = credentials {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend(credentials.auth_args());
        encode::command(&mut request, &args);
    }
    let mut subscribe: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    subscribe.extend(EVENTS);
    encode::command(&mut request, &subscribe);
    if let Err(e) = stream.write_all(&request).await {
        return e.to_string();
    }
    // The replies are not decoded: the subscription confirmations name the channels too, so
    // only a `message` push counts; a spurious refresh would cost one check, nothing more.
    let mut buf = vec![0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return "closed by the sentinel".into(),
            Ok(n) => {
                let chunk = &buf[..n];
                if chunk.windows(9).any(|w| w == b"\r\nmessage") {
                    freshness.ask();
                }
                if chunk.starts_with(b"-") {
                    return String::from_utf8_lossy(chunk).trim().to_owned();
                }
            }
            Err(e) => return e.to_string(),
        }
    }
}
