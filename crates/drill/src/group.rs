//! The failover drill on a Sentinel group: the victim is the master the Sentinels name; the
//! failover measured is Sentinel's own. Read-only, like `watch`.
//!
//! Definitions, in the cluster drill's terms:
//! - *suspected*: a Sentinel flags the master `s_down`; *detected*: one flags it `o_down` (the
//!   quorum agreed);
//! - *promoted*: a majority of the Sentinels name another node master, and it says
//!   `role:master`; *serving*: besides, no Sentinel is failing that node over (what the
//!   endpoint needs to trust it);
//! - *rejoined*: the restored victim says it is a replica of the new master with its link up;
//! - *healthy*: a confirmed master, every node up and following it with its link up, every
//!   Sentinel answering and naming it.

use std::time::{Duration, Instant};

use cinnabar_cluster::sentinel::{
    GroupAccess, node_info, quorum_answer, quorum_master, sentinel_view,
};
use cinnabar_cluster::{NodeAddr, SlotRange, Timeouts};

use crate::error::DrillError;
use crate::failover::{DrillPlan, Progress};
use crate::report::{Milestone, NodeRef};
use crate::watch::{Victim, WATCH_TIMEOUTS};

/// How often the Sentinels and nodes are asked.
const POLL: Duration = Duration::from_millis(100);

/// The master and a summary of the healthy group around it; refuses an unhealthy group or a
/// master without an in-sync replica.
///
/// # Errors
/// [`DrillError::NotHealthy`] naming what is wrong, [`DrillError::NoReplica`].
pub(crate) async fn prepare(
    group: &GroupAccess,
    nodes: &[NodeAddr],
) -> Result<DrillPlan, DrillError> {
    let (healthy, summary, master) = look(group, nodes).await;
    let Some(master) = master.filter(|_| healthy) else {
        return Err(DrillError::NotHealthy {
            problems: vec![summary],
        });
    };
    let info = node_info(&master, WATCH_TIMEOUTS, group.credentials.as_ref()).await?;
    let replica_ids: Vec<String> = info
        .replicas
        .iter()
        .filter(|r| r.online())
        .map(|r| r.addr.to_string())
        .collect();
    if replica_ids.is_empty() {
        return Err(DrillError::NoReplica { shard: 0, master });
    }
    Ok(DrillPlan {
        shard: 0,
        victim: Victim {
            // A group's nodes have no ids: the address names them.
            id: master.to_string(),
            addr: master,
            // Every key lives on the master.
            slots: vec![SlotRange {
                start: 0,
                end: 16383,
            }],
            replica_ids,
        },
        before: summary,
    })
}

/// Whether the group is healthy, a one-line summary, and the confirmed master.
async fn look(group: &GroupAccess, nodes: &[NodeAddr]) -> (bool, String, Option<NodeAddr>) {
    let ask = WATCH_TIMEOUTS.connect;
    let credentials = group.credentials.as_ref();
    let named = quorum_master(
        &group.sentinels,
        &group.name,
        ask,
        group.sentinel_credentials.as_ref(),
    )
    .await;
    let (master, votes, answered) = match named {
        Ok(named) => named,
        Err(e) => return (false, e, None),
    };
    let mut problems = Vec::new();
    if votes < group.sentinels.len() || answered < group.sentinels.len() {
        problems.push(format!(
            "{votes} of {} Sentinels name {master} ({answered} answer)",
            group.sentinels.len()
        ));
    }
    let mut in_sync = 0;
    for node in nodes {
        match node_info(node, WATCH_TIMEOUTS, credentials).await {
            Ok(info) if *node == master && info.is_master() => {}
            Ok(info) if *node == master => problems.push(format!("{node} says role:{}", info.role)),
            Ok(info) if info.is_master() => {
                problems.push(format!("{node} also says it is a master"))
            }
            Ok(info) if info.link_up && info.master.as_ref() == Some(&master) => in_sync += 1,
            Ok(_) => problems.push(format!("{node} is not in sync with {master}")),
            Err(e) => problems.push(format!("{node}: {e}")),
        }
    }
    let healthy = problems.is_empty();
    let summary = format!(
        "master {master}, {in_sync}/{} replicas in sync, {votes}/{} Sentinels agree{}",
        nodes.len().saturating_sub(1),
        group.sentinels.len(),
        if healthy {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    );
    (healthy, summary, Some(master))
}

/// Detection and promotion as the Sentinels see them.
pub(crate) async fn watch_promotion(
    group: &GroupAccess,
    nodes: &[NodeAddr],
    victim: &Victim,
    deadline: Instant,
    progress: &mut Progress<'_>,
) {
    let timeouts: Timeouts = WATCH_TIMEOUTS;
    loop {
        for sentinel in &group.sentinels {
            let Ok(view) = sentinel_view(
                sentinel,
                &group.name,
                timeouts,
                group.sentinel_credentials.as_ref(),
            )
            .await
            else {
                continue;
            };
            if view.master == victim.addr {
                if view.flags.iter().any(|f| f == "s_down") {
                    progress.mark(
                        Milestone::Suspected,
                        format!("s_down by Sentinel {sentinel}"),
                    );
                }
                if view.flags.iter().any(|f| f == "o_down") {
                    progress.mark(
                        Milestone::Detected,
                        format!("o_down by Sentinel {sentinel}"),
                    );
                }
            }
        }
        let named = quorum_answer(
            &group.sentinels,
            &group.name,
            timeouts.connect,
            group.sentinel_credentials.as_ref(),
        )
        .await;
        if let Ok(answer) = &named
            && answer.master != victim.addr
            && answer.votes > group.sentinels.len() / 2
            && node_info(&answer.master, timeouts, group.credentials.as_ref())
                .await
                .is_ok_and(|i| i.is_master())
        {
            let master = &answer.master;
            if !progress.reached(Milestone::Promoted) {
                progress.promoted = Some(NodeRef {
                    id: master.to_string(),
                    address: master.to_string(),
                });
                progress.mark(
                    Milestone::Promoted,
                    format!(
                        "{master} is named master by {} Sentinels and says so",
                        answer.votes
                    ),
                );
            }
            // The endpoint trusts the new master once no Sentinel is failing it over.
            if !answer.failing_over {
                let (_, summary, _) = look(group, nodes).await;
                progress.while_down = Some(summary);
                progress.mark(Milestone::Serving, "the endpoint trusts it".into());
                return;
            }
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "the Sentinels did not promote a replica of {} within the failover timeout",
                victim.addr
            ));
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The restored victim follows the new master with its link up.
pub(crate) async fn wait_rejoined(victim: &Victim, deadline: Instant, progress: &mut Progress<'_>) {
    let new = progress.promoted.as_ref().map(|p| p.address.clone());
    loop {
        if let Ok(info) = node_info(&victim.addr, WATCH_TIMEOUTS, None).await
            && !info.is_master()
            && info.link_up
            && info.master.as_ref().map(ToString::to_string) == new
        {
            progress.mark(
                Milestone::Rejoined,
                format!("replica of {}", new.as_deref().unwrap_or("the new master")),
            );
            return;
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "{} did not rejoin as a replica with its link up within the recovery timeout",
                victim.addr
            ));
            return;
        }
        tokio::time::sleep(POLL * 2).await;
    }
}

/// Until the whole group is healthy again.
pub(crate) async fn wait_healthy(
    group: &GroupAccess,
    nodes: &[NodeAddr],
    deadline: Instant,
    progress: &mut Progress<'_>,
) {
    loop {
        let (healthy, summary, _) = look(group, nodes).await;
        if healthy {
            progress.mark(Milestone::Healthy, String::new());
            progress.after = Some((true, summary));
            return;
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "the group was not healthy within the recovery timeout: {summary}"
            ));
            progress.after = Some((false, summary));
            return;
        }
        tokio::time::sleep(POLL * 2).await;
    }
}
