//! The failover drill, start to end: check, load, fail a master, watch the cluster recover,
//! restore the node, check again, verify every acknowledged write, judge.
//!
//! [`prepare`] refuses everything it can before anything is touched (no such shard, a shard
//! without a replica, an unhealthy cluster, a silent endpoint). [`run`] then owns the victim
//! until it is restored: whatever goes wrong after the fault, it restores the node before it
//! returns. A cluster that does not recover is a failing report, not an error.
//!
//! Definitions the report relies on:
//! - *detected*: some surviving node flags the victim `fail` (a majority of masters agreed);
//!   the first `fail?` is recorded too;
//! - *promoted*: one of the victim's replicas is a master serving every slot of the victim, as
//!   every other shard's master sees it (in a one-shard cluster, as every survivor sees it);
//! - *serving* (healthy while the victim is down): every slot is covered and the check finds no
//!   problem except the victim being unreachable or flagged failed (measured by a full check
//!   every 250 ms with 500 ms timeouts, so against a paused victim it lags by up to a timeout);
//! - *rejoined*: the restored victim calls itself a replica and its replication link is up;
//! - *healthy*: `check` over every node finds nothing wrong.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cinnabar_cluster::{CheckOptions, NodeAddr, check_with};

use crate::error::DrillError;
use crate::fault::{FaultKind, NodeFaults};
use crate::report::{
    Checks, DrillReport, LatencySummary, LostWrite, Milestone, MilestoneAt, NodeRef,
};
use crate::timeline::millis;
use crate::verdict::{Evidence, REPLICATION_WINDOW_BEFORE_FAULT, judge};
use crate::watch::{
    Survivors, Victim, WATCH_TIMEOUTS, opinion, promoted, rejoined, serving_without, victim_state,
};
use crate::workload::{Workload, WorkloadOptions, lost_writes};

/// How often the survivors' views are read while waiting for detection and promotion: the
/// resolution of `time_to_detect_ms` and `time_to_promote_ms`.
const WATCH_POLL: Duration = Duration::from_millis(100);
/// How often the heavier full check runs while waiting for the cluster to serve or heal.
const CHECK_POLL: Duration = Duration::from_millis(250);

/// What a drill does.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Every node of the cluster (any reachable one would do for discovery; all are watched).
    pub seeds: Vec<NodeAddr>,
    /// Which shard's master to fail: shards are numbered from 0 by their first slot.
    pub shard: usize,
    /// Kill or pause.
    pub fault: FaultKind,
    /// The least time the workload runs; the drill runs longer when recovery takes longer.
    pub duration: Duration,
    /// The verifying workload, including the endpoint.
    pub workload: WorkloadOptions,
    /// How long a replica may take to take over (and the cluster to serve every slot again).
    pub failover_timeout: Duration,
    /// How long the restored node may take to rejoin, and the cluster to check healthy.
    pub recovery_timeout: Duration,
    /// Client errors that still pass; `None` reports them without judging.
    pub max_client_errors: Option<u64>,
    /// A Sentinel group (its data nodes are `seeds`) instead of a cluster: the victim is its
    /// master and the failover watched is Sentinel's (see `crate::group`).
    pub group: Option<cinnabar_cluster::sentinel::GroupAccess>,
}

/// What [`prepare`] found: the victim and the healthy cluster around it.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    /// The shard index.
    pub shard: usize,
    /// The master to fail, its slots and its replicas.
    pub victim: Victim,
    /// The check before anything was touched, as the report prints it.
    pub before: String,
}

/// Progress of a drill, for the person watching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillEvent {
    /// A milestone happened.
    Milestone {
        /// Which.
        milestone: Milestone,
        /// Since the workload started.
        at_ms: u64,
        /// Since the fault (`None` for the fault itself).
        since_fault_ms: Option<u64>,
        /// Who saw it, or what it was.
        detail: String,
    },
    /// Anything else worth a line.
    Note(String),
}

impl std::fmt::Display for DrillEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Milestone {
                milestone,
                at_ms,
                since_fault_ms,
                detail,
            } => {
                write!(
                    f,
                    "[{:>6.1} s] {}",
                    *at_ms as f64 / 1000.0,
                    milestone.label()
                )?;
                if let Some(ms) = since_fault_ms {
                    write!(f, " after {ms} ms")?;
                }
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Self::Note(text) => f.write_str(text),
        }
    }
}

/// Checks the cluster and picks the victim; touches nothing.
///
/// # Errors
/// [`DrillError::NotHealthy`], [`DrillError::NoSuchShard`], [`DrillError::NoReplica`],
/// [`DrillError::NoQuorum`], [`DrillError::EndpointUnreachable`], or [`DrillError::Cluster`] when there are no seeds.
pub async fn prepare(options: &DrillOptions) -> Result<DrillPlan, DrillError> {
    if let Some(group) = &options.group {
        let plan = crate::group::prepare(group, &options.seeds).await?;
        ping_endpoint(&options.workload.endpoint).await?;
        return Ok(plan);
    }
    let before = check_with(&options.seeds, &CheckOptions::default()).await?;
    if !before.is_healthy() {
        let mut problems: Vec<String> = before.problems.iter().map(ToString::to_string).collect();
        if problems.is_empty() {
            problems.push(format!(
                "only {} of 16384 slots are served",
                before.slots_covered
            ));
        }
        return Err(DrillError::NotHealthy { problems });
    }
    let mut shards: Vec<_> = before.masters().filter(|m| !m.slots.is_empty()).collect();
    shards.sort_by_key(|m| m.slots.iter().map(|r| r.start).min());
    let master = shards.get(options.shard).ok_or(DrillError::NoSuchShard {
        shard: options.shard,
        shards: shards.len(),
    })?;
    let replica_ids: Vec<String> = before
        .replicas()
        .filter(|r| r.master_id.as_deref() == Some(master.id.as_str()))
        .map(|r| r.id.clone())
        .collect();
    if replica_ids.is_empty() {
        return Err(DrillError::NoReplica {
            shard: options.shard,
            master: master.addr.clone(),
        });
    }
    // Failure detection and the election both need votes from a majority of the masters
    // serving slots; the victim cannot vote.
    let needed = shards.len() / 2 + 1;
    if shards.len() - 1 < needed {
        return Err(DrillError::NoQuorum {
            masters: shards.len(),
            needed,
        });
    }
    ping_endpoint(&options.workload.endpoint).await?;
    Ok(DrillPlan {
        shard: options.shard,
        victim: Victim {
            id: master.id.clone(),
            addr: master.addr.clone(),
            slots: master.slots.clone(),
            replica_ids,
        },
        before: before.to_string(),
    })
}

async fn ping_endpoint(endpoint: &NodeAddr) -> Result<(), DrillError> {
    let unreachable = |reason: String| DrillError::EndpointUnreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    let client =
        redis::Client::open(endpoint.redis_url()).map_err(|e| unreachable(e.to_string()))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let attempt = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer within 5 s".into())),
    }
}

/// What the drill learnt while it ran.
pub(crate) struct Progress<'e> {
    started: Instant,
    fault_at: Option<Duration>,
    milestones: Vec<MilestoneAt>,
    findings: Vec<String>,
    pub(crate) promoted: Option<NodeRef>,
    pub(crate) while_down: Option<String>,
    /// The last check: healthy or not, as the report prints it.
    pub(crate) after: Option<(bool, String)>,
    restored: bool,
    on_event: &'e mut (dyn FnMut(DrillEvent) + Send),
}

impl Progress<'_> {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn reached(&self, milestone: Milestone) -> bool {
        self.milestones.iter().any(|m| m.milestone == milestone)
    }

    /// Records `milestone` now, once.
    pub(crate) fn mark(&mut self, milestone: Milestone, detail: String) {
        if self.reached(milestone) {
            return;
        }
        let at = self.now();
        if milestone == Milestone::Fault {
            self.fault_at = Some(at);
        }
        let at_ms = as_ms(at);
        let since_fault_ms = self
            .fault_at
            .filter(|_| milestone != Milestone::Fault)
            .map(|fault| as_ms(at.saturating_sub(fault)));
        self.milestones.push(MilestoneAt {
            milestone,
            at_ms,
            detail: detail.clone(),
        });
        (self.on_event)(DrillEvent::Milestone {
            milestone,
            at_ms,
            since_fault_ms,
            detail,
        });
    }

    pub(crate) fn finding(&mut self, text: String) {
        (self.on_event)(DrillEvent::Note(format!("finding: {text}")));
        self.findings.push(text);
    }

    fn note(&mut self, text: String) {
        (self.on_event)(DrillEvent::Note(text));
    }

    /// Milliseconds from the fault to `milestone`.
    fn since_fault(&self, milestone: Milestone) -> Option<u64> {
        let fault = self.at(Milestone::Fault)?;
        self.at(milestone).map(|at| at.saturating_sub(fault))
    }

    fn at(&self, milestone: Milestone) -> Option<u64> {
        self.milestones
            .iter()
            .find(|m| m.milestone == milestone)
            .map(|m| m.at_ms)
    }
}

/// Runs the drill planned by [`prepare`], with `faults` doing the failing and restoring.
///
/// # Errors
/// [`DrillError::Fault`] when the platform cannot fail or restore the node,
/// [`DrillError::Workload`] or [`DrillError::Verify`] when the writes cannot be accounted for.
/// Whatever the error, a node this call failed has been given back to the platform to restore.
pub async fn run<F: NodeFaults>(
    plan: &DrillPlan,
    options: &DrillOptions,
    faults: &mut F,
    on_event: &mut (dyn FnMut(DrillEvent) + Send),
) -> Result<DrillReport, DrillError> {
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, as_ms);
    let workload = Workload::start(&options.workload);
    let mut progress = Progress {
        started: workload.started(),
        fault_at: None,
        milestones: Vec::new(),
        findings: Vec::new(),
        promoted: None,
        while_down: None,
        after: None,
        restored: false,
        on_event,
    };
    progress.note(format!(
        "workload: {} connections through {}, {} ops/s (half writes of new keys, half reads of acknowledged ones)",
        options.workload.connections, options.workload.endpoint, options.workload.ops_per_second
    ));
    tokio::time::sleep(lead_in(options.duration)).await;
    if workload.acknowledged() == 0 {
        progress.finding(format!(
            "no write was acknowledged before the fault ({} errors so far)",
            workload.errors()
        ));
    }
    let victim = &plan.victim;
    match options.fault {
        FaultKind::Kill => faults.kill(&victim.addr)?,
        FaultKind::Pause => faults.pause(&victim.addr)?,
    }
    progress.mark(
        Milestone::Fault,
        format!(
            "{} of {} (shard {})",
            options.fault, victim.addr, plan.shard
        ),
    );
    if let Err(e) = recover(plan, options, faults, &mut progress).await {
        if !progress.restored {
            let _ = faults.restore(&victim.addr);
        }
        return Err(e);
    }
    let remaining = options.duration.saturating_sub(progress.now());
    if !remaining.is_zero() {
        progress.note(format!(
            "running out the remaining {:.1} s of the drill",
            remaining.as_secs_f64()
        ));
        tokio::time::sleep(remaining).await;
    }
    let log = workload.stop().await?;
    progress.note(format!(
        "verifying {} acknowledged writes through {}",
        log.writes.len(),
        options.workload.endpoint
    ));
    let lost = lost_writes(&options.workload, &log.writes).await?;
    Ok(build_report(
        plan,
        options,
        progress,
        &log,
        &lost,
        started_unix_ms,
    ))
}

/// From the fault to a healthy cluster: watch detection and promotion, wait for every slot to
/// be served, restore the victim, wait for it to rejoin and for the cluster to check healthy.
async fn recover<F: NodeFaults>(
    plan: &DrillPlan,
    options: &DrillOptions,
    faults: &mut F,
    progress: &mut Progress<'_>,
) -> Result<(), DrillError> {
    let victim = &plan.victim;
    let failover_deadline = Instant::now() + options.failover_timeout;
    if let Some(group) = &options.group {
        crate::group::watch_promotion(group, &options.seeds, victim, failover_deadline, progress)
            .await;
    } else {
        let mut survivors = Survivors::new(&options.seeds, &victim.addr);
        watch_promotion(victim, &mut survivors, failover_deadline, progress).await;
        if progress.reached(Milestone::Promoted) {
            wait_serving(victim, &survivors.addrs(), failover_deadline, progress).await?;
        }
    }

    faults.restore(&victim.addr)?;
    progress.restored = true;
    progress.mark(Milestone::Restored, victim.addr.to_string());
    let recovery_deadline = Instant::now() + options.recovery_timeout;
    match faults
        .wait_restored(&victim.addr, options.recovery_timeout)
        .await
    {
        // Without a takeover the victim comes back as the master it was: nothing to rejoin.
        Ok(()) if progress.reached(Milestone::Promoted) => match &options.group {
            Some(_) => crate::group::wait_rejoined(victim, recovery_deadline, progress).await,
            None => wait_rejoined(victim, recovery_deadline, progress).await,
        },
        Ok(()) => {}
        Err(e) => progress.finding(format!("the victim did not come back: {e}")),
    }
    match &options.group {
        Some(group) => {
            crate::group::wait_healthy(group, &options.seeds, recovery_deadline, progress).await;
            Ok(())
        }
        None => wait_healthy(&options.seeds, recovery_deadline, progress).await,
    }
}

async fn watch_promotion(
    victim: &Victim,
    survivors: &mut Survivors,
    deadline: Instant,
    progress: &mut Progress<'_>,
) {
    loop {
        let views = survivors.views().await;
        for (by, view) in &views {
            let seen = opinion(view, victim);
            // A node may learn `fail` from another's gossip without suspecting first itself.
            if seen.suspected || seen.failed {
                progress.mark(Milestone::Suspected, format!("flagged fail? by {by}"));
            }
            if seen.failed {
                progress.mark(Milestone::Detected, format!("flagged fail by {by}"));
            }
        }
        if let Some(node) = promoted(&views, victim) {
            let address = node.label();
            progress.promoted = Some(NodeRef {
                id: node.id.clone(),
                address: address.clone(),
            });
            progress.mark(
                Milestone::Promoted,
                format!("{address} serves the shard's slots"),
            );
            return;
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "no replica of {} took over its slots within the failover timeout",
                victim.addr
            ));
            return;
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

async fn wait_serving(
    victim: &Victim,
    survivors: &[NodeAddr],
    deadline: Instant,
    progress: &mut Progress<'_>,
) -> Result<(), DrillError> {
    let options = CheckOptions {
        timeouts: WATCH_TIMEOUTS,
        expected_replicas: None,
    };
    loop {
        let report = check_with(survivors, &options).await?;
        if serving_without(&report, victim) {
            progress.while_down = Some(report.to_string());
            progress.mark(Milestone::Serving, String::new());
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "with {} down, the cluster did not serve every slot within the failover timeout: {report}",
                victim.addr
            ));
            progress.while_down = Some(report.to_string());
            return Ok(());
        }
        tokio::time::sleep(CHECK_POLL).await;
    }
}

async fn wait_rejoined(victim: &Victim, deadline: Instant, progress: &mut Progress<'_>) {
    loop {
        if let Some((view, link_up)) = victim_state(&victim.addr).await
            && rejoined(&view, link_up)
        {
            let master = view
                .myself()
                .and_then(|me| me.master_id.as_deref())
                .and_then(|id| view.node(id))
                .map_or_else(|| "its new master".to_owned(), |m| m.label());
            progress.mark(Milestone::Rejoined, format!("replica of {master}"));
            return;
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "{} did not rejoin as a replica with its link up within the recovery timeout",
                victim.addr
            ));
            return;
        }
        tokio::time::sleep(CHECK_POLL).await;
    }
}

async fn wait_healthy(
    seeds: &[NodeAddr],
    deadline: Instant,
    progress: &mut Progress<'_>,
) -> Result<(), DrillError> {
    loop {
        let report = check_with(seeds, &CheckOptions::default()).await?;
        if report.is_healthy() {
            progress.mark(Milestone::Healthy, String::new());
            progress.after = Some((true, report.to_string()));
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.finding(format!(
                "the cluster was not healthy within the recovery timeout: {report}"
            ));
            progress.after = Some((false, report.to_string()));
            return Ok(());
        }
        tokio::time::sleep(CHECK_POLL).await;
    }
}

/// Load before the fault: enough seconds of normal traffic to compare with, without spending
/// the drill on it.
fn lead_in(duration: Duration) -> Duration {
    (duration / 6).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn build_report(
    plan: &DrillPlan,
    options: &DrillOptions,
    progress: Progress<'_>,
    log: &crate::workload::WorkloadLog,
    lost: &[&crate::workload::AckedWrite],
    started_unix_ms: u64,
) -> DrillReport {
    let victim = &plan.victim;
    let fault_ms = progress.at(Milestone::Fault).unwrap_or(0);
    // The failover window: from a second before the fault until the victim rejoined (or, if
    // it never did, the end), for keys of the failed shard only.
    let window_start = fault_ms.saturating_sub(as_ms(REPLICATION_WINDOW_BEFORE_FAULT));
    let window_end = progress
        .at(Milestone::Rejoined)
        .unwrap_or_else(|| as_ms(log.ran_for));
    let lost_keys: Vec<LostWrite> = lost
        .iter()
        .map(|write| {
            let slot = cinnabar_commands::key_slot(write.key.as_bytes());
            let acked_at_ms = as_ms(write.acked_at);
            let in_shard = victim.slots.iter().any(|r| r.contains(slot));
            LostWrite {
                key: write.key.clone(),
                slot,
                acked_at_ms,
                acked_since_fault_ms: i64::try_from(acked_at_ms).unwrap_or(i64::MAX)
                    - i64::try_from(fault_ms).unwrap_or(i64::MAX),
                within_window: in_shard && (window_start..=window_end).contains(&acked_at_ms),
            }
        })
        .collect();
    let within = lost_keys.iter().filter(|l| l.within_window).count() as u64;
    let lost_count = lost_keys.len() as u64;
    let after = progress.after.as_ref();
    let healthy_at_end = after.is_some_and(|(healthy, _)| *healthy);
    let (verdict, verdict_reasons) = judge(&Evidence {
        promoted: progress.reached(Milestone::Promoted),
        rejoined: progress.reached(Milestone::Rejoined),
        healthy_at_end,
        lost_writes: lost_count,
        lost_outside_window: lost_count - within,
        client_errors: log.timeline.errors(),
        max_client_errors: options.max_client_errors,
    });
    let overall = log.timeline.overall_latency();
    let rejoin = progress
        .at(Milestone::Restored)
        .zip(progress.at(Milestone::Rejoined))
        .map(|(restored, rejoined)| rejoined.saturating_sub(restored));
    DrillReport {
        verdict,
        verdict_reasons,
        fault: options.fault,
        shard: plan.shard,
        victim: NodeRef {
            id: victim.id.clone(),
            address: victim.addr.to_string(),
        },
        victim_slots: cinnabar_cluster::slots::format_ranges(&victim.slots),
        promoted: progress.promoted.clone(),
        endpoint: options.workload.endpoint.to_string(),
        connections: options.workload.connections,
        target_ops_per_second: options.workload.ops_per_second,
        started_unix_ms,
        duration_ms: as_ms(log.ran_for),
        fault_at_ms: fault_ms,
        time_to_suspect_ms: progress.since_fault(Milestone::Suspected),
        time_to_detect_ms: progress.since_fault(Milestone::Detected),
        time_to_promote_ms: progress.since_fault(Milestone::Promoted),
        time_to_serve_ms: progress.since_fault(Milestone::Serving),
        time_to_rejoin_ms: rejoin,
        time_to_healthy_ms: progress.since_fault(Milestone::Healthy),
        milestones: progress.milestones.clone(),
        operations: log.timeline.ops(),
        acknowledged_writes: log.writes.len() as u64,
        client_errors: log.timeline.errors(),
        stale_reads: log.timeline.stale_reads(),
        latency: LatencySummary {
            p50_ms: overall.quantile(0.5).map(millis),
            p99_ms: overall.quantile(0.99).map(millis),
            max_ms: (overall.count() > 0).then(|| millis(overall.max())),
        },
        lost_writes: lost_count,
        lost_writes_within_window: within,
        lost_keys,
        healthy_at_end,
        checks: Checks {
            before: plan.before.clone(),
            while_down: progress.while_down.clone(),
            after: after.map_or_else(|| "not checked".to_owned(), |(_, text)| text.clone()),
        },
        findings: progress.findings.clone(),
        seconds: log.timeline.summaries(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_in_is_a_sixth_of_the_drill_within_one_to_five_seconds() {
        assert_eq!(lead_in(Duration::from_secs(12)), Duration::from_secs(2));
        assert_eq!(lead_in(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(lead_in(Duration::from_secs(300)), Duration::from_secs(5));
    }

    #[test]
    fn events_read_as_one_line_each() {
        let event = DrillEvent::Milestone {
            milestone: Milestone::Promoted,
            at_ms: 8_250,
            since_fault_ms: Some(6_250),
            detail: "127.0.0.1:7004 serves the shard's slots".into(),
        };
        assert_eq!(
            event.to_string(),
            "[   8.2 s] replica promoted after 6250 ms: 127.0.0.1:7004 serves the shard's slots"
        );
    }
}
