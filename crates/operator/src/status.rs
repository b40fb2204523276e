//! The `RedisCluster` status: conditions with machine-readable reasons and a per-shard view,
//! computed from what one reconcile saw and did.
//!
//! Pure. Conditions keep their `lastTransitionTime` while their status stays the same, so
//! watchers (and `kubectl wait --for=condition=Ready`) see real transitions only.

use std::collections::BTreeMap;

use cinnabar_cluster::slots::format_ranges;
use cinnabar_cluster::{NodeAddr, Observed, SLOT_COUNT};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    AutoscalingState, BackupState, GroupStatus, OperationStatus, RedisClusterStatus, RestoreState,
    ShardStatus, SwitchPhase, SyncPhase, SyncState, Topology,
};
use crate::pods::RedisPod;

/// Condition types the operator sets.
pub mod types {
    /// Every shard serves, every node healthy, nothing in progress.
    pub const READY: &str = "Ready";
    /// Pods are being created or an operation is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a person: an invalid spec, a refused or failing operation.
    pub const DEGRADED: &str = "Degraded";
    /// Every one of the 16384 slots has a master.
    pub const SLOTS_COVERED: &str = "SlotsCovered";
    /// `spec.paused` is set.
    pub const PAUSED: &str = "ReconciliationPaused";
    /// With `spec.syncFrom`: every source stream applies the command stream, within the lag
    /// bound. Absent without a sync.
    pub const SYNCED: &str = "Synced";
    /// With `spec.syncFrom.switch`: the sync runs (copying or streaming).
    pub const SYNCING: &str = "Syncing";
    /// With `spec.syncFrom.switch`: the sync is within its lag bound, so the switch may start
    /// (the same test as `Synced`, under the migration's name).
    pub const IN_SYNC: &str = "InSync";
    /// With `spec.syncFrom.switch`: every proxy of the old cluster serves this one.
    pub const SWITCHED: &str = "Switched";
    /// With `spec.syncFrom.switch`: the migration needs a person (the switch was abandoned
    /// after its attempts, or the sync stopped on an error).
    pub const FAILED: &str = "Failed";
    /// With `spec.backup`: the newest finished backup Job succeeded. Absent without backups.
    pub const BACKED_UP: &str = "BackedUp";
    /// With `spec.backup.continuous`: the archive's pod runs. Absent without it.
    pub const ARCHIVING: &str = "Archiving";
    /// With `spec.restoreFrom`: the restore Job succeeded. Absent without a restore.
    pub const RESTORED: &str = "Restored";
}

/// What one reconcile learnt, as input for the status.
#[derive(Debug, Clone, Default)]
pub struct StatusInput<'a> {
    /// `metadata.generation` of the object reconciled.
    pub generation: Option<i64>,
    /// The Redis pods.
    pub pods: &'a [RedisPod],
    /// The observation of the cluster, when one was made.
    pub observed: Option<&'a Observed>,
    /// Why the cluster is not done yet (`(reason, message)`), when it is progressing.
    pub progressing: Option<(String, String)>,
    /// Why a person is needed (`(reason, message)`), when degraded.
    pub degraded: Option<(String, String)>,
    /// `spec.paused`.
    pub paused: bool,
    /// The operation under way.
    pub operation: Option<OperationStatus>,
    /// The sync and `spec.syncFrom.maxLagSeconds`, with `spec.syncFrom`.
    pub sync: Option<(SyncState, u32)>,
    /// The cluster whose nodes this cluster's proxies serve after a switch.
    pub served_by: Option<String>,
    /// The shard autoscaler's last decision.
    pub autoscaling: Option<AutoscalingState>,
    /// Backups and `spec.backup.schedule`, with `spec.backup`.
    pub backup: Option<(BackupState, String)>,
    /// The restore, with `spec.restoreFrom`.
    pub restore: Option<RestoreState>,
    /// The topology the objects were built for (kept from the previous status until built).
    pub topology: Option<Topology>,
    /// With `topology: Sentinel`: whether the group is healthy, and its view by role.
    pub group: Option<(bool, GroupStatus)>,
}

/// Builds the status, keeping transition times of unchanged conditions from `previous`.
pub fn build_status(
    input: &StatusInput<'_>,
    previous: Option<&RedisClusterStatus>,
    now: &Time,
) -> RedisClusterStatus {
    let covered = input.observed.map(|o| o.covered_slots().len());
    let healthy = input.observed.is_some_and(|o| {
        o.unreachable().is_empty()
            && o.ghosts().is_empty()
            && o.open_slots().is_empty()
            && o.members().all(|(_, f)| f.cluster_ok && f.link_up)
    });
    let serving = match &input.group {
        // A group has no slots: it serves when it is healthy.
        Some((group_healthy, _)) => *group_healthy,
        None => covered == Some(SLOT_COUNT) && healthy,
    };
    let ready = !input.paused && input.progressing.is_none() && input.degraded.is_none() && serving;
    let mut conditions = Vec::new();
    let mut set = |type_: &str, status: bool, reason: &str, message: String| {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: input.generation,
            last_transition_time: now.clone(),
        });
    };
    let (reason, message) = if ready && input.group.is_some() {
        (
            "GroupHealthy",
            "the Sentinels agree on a master that serves, and every replica follows it".to_owned(),
        )
    } else if ready {
        (
            "ClusterHealthy",
            "every shard serves and every node is healthy".to_owned(),
        )
    } else if input.paused {
        ("Paused", "reconciliation is paused".to_owned())
    } else if let Some((reason, message)) = &input.degraded {
        (reason.as_str(), message.clone())
    } else if let Some((reason, message)) = &input.progressing {
        (reason.as_str(), message.clone())
    } else {
        (
            "NotHealthy",
            "the cluster has problems; heal is planned".to_owned(),
        )
    };
    set(types::READY, ready, reason, message);
    match &input.progressing {
        Some((reason, message)) => set(types::PROGRESSING, true, reason, message.clone()),
        None => set(
            types::PROGRESSING,
            false,
            "Idle",
            "nothing in progress".to_owned(),
        ),
    }
    match &input.degraded {
        Some((reason, message)) => set(types::DEGRADED, true, reason, message.clone()),
        None => set(
            types::DEGRADED,
            false,
            "AsExpected",
            "no problem needs a person".to_owned(),
        ),
    }
    match covered {
        // A group has no slots: the condition is left out.
        _ if input.group.is_some() || input.topology == Some(Topology::Sentinel) => {}
        Some(n) if n == SLOT_COUNT => set(
            types::SLOTS_COVERED,
            true,
            "AllSlotsServed",
            format!("all {SLOT_COUNT} slots have a master"),
        ),
        Some(n) => set(
            types::SLOTS_COVERED,
            false,
            "SlotsUnserved",
            format!("{} of {SLOT_COUNT} slots have no master", SLOT_COUNT - n),
        ),
        None => set(
            types::SLOTS_COVERED,
            false,
            "NotObserved",
            "the cluster has not been observed yet".to_owned(),
        ),
    }
    set(
        types::PAUSED,
        input.paused,
        if input.paused {
            "SpecPaused"
        } else {
            "Reconciling"
        },
        if input.paused {
            "spec.paused is true: the operator changes nothing".to_owned()
        } else {
            "the operator reconciles this cluster".to_owned()
        },
    );
    if let Some((sync, max_lag_seconds)) = &input.sync {
        let (status, reason, message) = crate::sync::synced(sync, *max_lag_seconds);
        set(types::SYNCED, status, reason, message.clone());
        if let Some(switch) = &sync.switch {
            let (syncing, syncing_reason) = match sync.phase {
                SyncPhase::Copying => (true, "Copying"),
                SyncPhase::Streaming => (true, "Streaming"),
                SyncPhase::Pending => (false, "SyncPending"),
                SyncPhase::Failed => (false, "SyncFailed"),
                SyncPhase::Stopped => (false, "SyncStopped"),
            };
            let syncing_message = if sync.phase == SyncPhase::Stopped {
                format!(
                    "the sync from {} was stopped after the switch: clients write here",
                    sync.source
                )
            } else {
                message.clone()
            };
            set(types::SYNCING, syncing, syncing_reason, syncing_message);
            set(types::IN_SYNC, status, reason, message);
            let (switched, switched_reason, switched_message) = switch_condition(switch);
            set(types::SWITCHED, switched, switched_reason, switched_message);
            let failed = if switch.phase == SwitchPhase::Abandoned {
                Some((
                    "SwitchAbandoned",
                    format!(
                        "the switch of {}'s proxies was abandoned after {} attempts: {}; \
                         they serve {} as before; edit the spec to try again",
                        switch.cluster,
                        switch.attempts,
                        switch.last_error.as_deref().unwrap_or("no reason recorded"),
                        switch.cluster
                    ),
                ))
            } else if sync.phase == SyncPhase::Failed {
                Some((
                    "SyncFailed",
                    sync.last_error
                        .clone()
                        .unwrap_or_else(|| "the sync pod keeps failing".to_owned()),
                ))
            } else {
                None
            };
            match failed {
                Some((reason, message)) => set(types::FAILED, true, reason, message),
                None => set(
                    types::FAILED,
                    false,
                    "AsExpected",
                    "the migration needs no person".to_owned(),
                ),
            }
        }
    }
    if let Some((backup, schedule)) = &input.backup {
        let (status, reason, message) = crate::backup::backed_up(backup, schedule);
        set(types::BACKED_UP, status, reason, message);
        if backup.continuous {
            let (status, reason, message) = crate::backup::archiving(backup);
            set(types::ARCHIVING, status, reason, message);
        }
    }
    if let Some(restore) = &input.restore {
        let (status, reason, message) = crate::backup::restored(restore);
        set(types::RESTORED, status, reason, message);
    }
    if let Some(previous) = previous {
        for condition in &mut conditions {
            if let Some(old) = previous
                .conditions
                .iter()
                .find(|c| c.type_ == condition.type_ && c.status == condition.status)
            {
                condition.last_transition_time = old.last_transition_time.clone();
            }
        }
    }
    RedisClusterStatus {
        observed_generation: input.generation,
        conditions,
        shards: input
            .observed
            .map(|o| shard_view(o, input.pods))
            .unwrap_or_else(|| previous.map(|p| p.shards.clone()).unwrap_or_default()),
        operation: input.operation.clone(),
        sync: input.sync.as_ref().map(|(sync, _)| sync.clone()),
        served_by: input.served_by.clone(),
        autoscaling: input.autoscaling.clone(),
        backup: input.backup.as_ref().map(|(backup, _)| backup.clone()),
        restore: input.restore.clone(),
        topology: input.topology,
        group: match &input.group {
            Some((_, group)) => Some(group.clone()),
            // Kept while it was not observed (paused, invalid spec).
            None => previous.and_then(|p| p.group.clone()),
        },
    }
}

/// The `Switched` condition: `(status, reason, message)`.
fn switch_condition(switch: &crate::crd::SwitchState) -> (bool, &'static str, String) {
    let when = |t: &Option<Time>| {
        t.as_ref()
            .map_or_else(|| "an unknown time".to_owned(), |t| t.0.to_string())
    };
    match switch.phase {
        SwitchPhase::Waiting => (
            false,
            "WaitingForSync",
            format!(
                "{}'s proxies switch here once the sync is in sync",
                switch.cluster
            ),
        ),
        SwitchPhase::Retrying => (
            false,
            "Retrying",
            format!(
                "attempt {} failed: {}; every proxy goes on with {}; next attempt at {}",
                switch.attempts,
                switch.last_error.as_deref().unwrap_or("no reason recorded"),
                switch.cluster,
                when(&switch.next_attempt)
            ),
        ),
        SwitchPhase::Switched => (
            true,
            "ProxiesSwitched",
            format!(
                "{} proxies of {} serve this cluster since {} (clients held at most {:.0} ms)",
                switch.proxies.iter().filter(|p| p.switched).count(),
                switch.cluster,
                when(&switch.switched_at),
                switch.pause_ms.unwrap_or(0.0)
            ),
        ),
        SwitchPhase::Abandoned => (
            false,
            "Abandoned",
            format!(
                "abandoned after {} attempts: {}",
                switch.attempts,
                switch.last_error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    }
}

/// One entry per shard serving slots: pods by name, slot ranges, worst replica lag.
fn shard_view(observed: &Observed, pods: &[RedisPod]) -> Vec<ShardStatus> {
    let names: BTreeMap<&NodeAddr, &str> = pods
        .iter()
        .filter_map(|p| p.node.as_ref().map(|n| (&n.addr, p.name.as_str())))
        .collect();
    let name = |addr: &NodeAddr| {
        names
            .get(addr)
            .map_or_else(|| addr.to_string(), |n| (*n).to_owned())
    };
    let offset = |addr: &NodeAddr| {
        observed
            .node(addr)
            .and_then(|n| n.facts())
            .map(|f| f.offset)
    };
    observed
        .shards()
        .into_iter()
        .filter(|s| s.slot_count() > 0)
        .map(|s| {
            let master_offset = offset(&s.master);
            ShardStatus {
                master_pod: name(&s.master),
                replica_pods: s.replicas.iter().map(name).collect(),
                slots: format_ranges(&s.slots),
                replication_lag_bytes: master_offset.and_then(|m| {
                    s.replicas
                        .iter()
                        .filter_map(|r| offset(r).map(|o| m.saturating_sub(o)))
                        .max()
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        serde_json::from_value(serde_json::json!(s)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn condition<'a>(status: &'a RedisClusterStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_}"))
    }

    #[test]
    fn a_degraded_spec_is_not_ready_and_says_why() {
        let input = StatusInput {
            generation: Some(4),
            degraded: Some(("OwnedDirective".into(), "redisConfig sets `port`".into())),
            ..StatusInput::default()
        };
        let status = build_status(&input, None, &time("2026-11-22T10:00:00Z"));
        assert_eq!(status.observed_generation, Some(4));
        let ready = condition(&status, types::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "OwnedDirective")
        );
        assert_eq!(condition(&status, types::DEGRADED).status, "True");
        assert_eq!(
            condition(&status, types::SLOTS_COVERED).reason,
            "NotObserved"
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let paused = StatusInput {
            paused: true,
            ..StatusInput::default()
        };
        let first = build_status(&paused, None, &time("2026-11-22T10:00:00Z"));
        let again = build_status(&paused, Some(&first), &time("2026-11-22T10:05:00Z"));
        let t = |s: &RedisClusterStatus| condition(s, types::PAUSED).last_transition_time.clone();
        assert_eq!(t(&again), t(&first));
        let resumed = build_status(
            &StatusInput::default(),
            Some(&again),
            &time("2026-11-22T10:06:00Z"),
        );
        assert_eq!(t(&resumed), time("2026-11-22T10:06:00Z"));
        assert_eq!(condition(&resumed, types::PAUSED).status, "False");
    }
}
