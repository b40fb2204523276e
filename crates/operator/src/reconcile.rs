//! One reconcile of a `RedisCluster`: objects applied, then at most one change to Redis, then
//! the status. Runs under the controller in [`crate::controller`].
//!
//! Order, each reconcile:
//! 1. deletion: finalizer work (PVCs deleted when `persistence.retention` says so), then the
//!    finalizer is removed and Kubernetes garbage-collects the owned objects;
//! 2. the finalizer is added if missing;
//! 3. `spec.paused`: the status says so and nothing else happens;
//! 4. the spec is validated; an invalid one is a `Degraded` condition and nothing changes;
//! 5. owned objects are applied (server-side apply, one field manager). A StatefulSet the
//!    planner has not shrunk yet keeps its current size, and StatefulSets of shards beyond the
//!    spec are left alone: only the planner removes pods that may hold data;
//! 6. the pods are observed and [`decide`] picks what to do: wait, form the cluster, or take
//!    **one** planner step ([`advance`]), whose journal is kept in the status so an operator
//!    restart resumes it;
//! 7. with `spec.syncFrom`, the sync's objects are applied (its pod scaled to 0 until the
//!    cluster has served every slot once: a sync into a cluster that is still forming would only
//!    fail and restart) and its progress read from the pod's metrics (at the pod's IP) into
//!    `status.sync` and the `Synced` condition; without it, the objects of a sync the status
//!    still reports are deleted (the state volume too: its checkpoints belong to that sync);
//!
//! With `topology: Sentinel`, steps 6 and 7 are the group's instead ([`crate::group`]): the
//! data pods and Sentinels are observed and at most one step of the planner's group path is
//! taken; a spec whose topology differs from the one built is refused at step 4.
//!
//! 8. the status is written and the next reconcile scheduled: soon while something is under
//!    way, every 30 s when idle (a periodic health check), at least every 10 s while a sync is
//!    configured, so its lag in the status stays fresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cinnabar_cluster::{
    Advance, CreateSpec, Credentials, ExecuteOptions, JournalEntry, MemoryJournal, NewNode,
    Observed, OperateError, OperateOptions, Operation, Platform, advance, create_cluster_as,
    observe,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{
    BackupState, OperationStatus, RedisCluster, RedisClusterStatus, RestorePhase, RestoreState,
    Retention, SyncPhase, SyncState,
};
use crate::decide::{Decision, decide};
use crate::objects::{
    ADMIN_TOKEN_KEY, BuildOptions, Objects, PASSWORD_KEY, SyncObjects, admin_secret_name, build,
    labels, sync_name, sync_state_claim_name,
};
use crate::platform::{KubePlatform, redis_selector};
use crate::pods::RedisPod;
use crate::status::{StatusInput, build_status};
use crate::sync::{SyncMetrics, SyncReading, metrics_address, pod_facts, sync_state};
use crate::validate::{topology_change, validate};

/// The finalizer that lets the operator clean up volumes before the object goes.
pub const FINALIZER: &str = "cinnabar.io/cleanup";
/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "cinnabar-operator";

/// What every reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Object settings (the proxy image).
    pub build: BuildOptions,
    /// How planner steps talk to Redis.
    pub execute: ExecuteOptions,
    /// Who the events say they come from.
    pub reporter: Reporter,
    /// Where sync pods' metrics are read ([`crate::sync::HttpSyncMetrics`] outside tests).
    pub sync_metrics: Arc<dyn SyncMetrics>,
    /// The wait after a failed online switch before the next attempt (doubling each time);
    /// [`SWITCH_FIRST_RETRY`] outside tests.
    pub switch_retry: Duration,
}

/// The wait after a first failed online switch.
pub const SWITCH_FIRST_RETRY: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Why a reconcile failed; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client error.
        source: kube::Error,
    },
    /// Talking to Redis or the platform failed.
    #[error(transparent)]
    Cluster(#[from] cinnabar_cluster::ClusterError),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let what = what.into();
    move |source| ReconcileError::Api { what, source }
}

/// Reconciles one `RedisCluster`.
///
/// # Errors
/// API failures; the controller retries.
pub async fn reconcile(
    cluster: Arc<RedisCluster>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // The reconcile's state machine holds every API call, planner step and Redis observation
    // it may wait on: tens of kilobytes in a debug build, enough to overflow a 2 MiB test
    // thread's stack. On the heap it costs one allocation per reconcile.
    Box::pin(reconcile_once(cluster, ctx)).await
}

async fn reconcile_once(
    cluster: Arc<RedisCluster>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = cluster.namespace().unwrap_or_else(|| "default".to_owned());
    let name = cluster.name_any();
    let clusters: Api<RedisCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = cluster.object_ref(&());
    // Every event is also one structured log line: the log alone tells what was decided.
    let event = |type_: EventType, reason: &str, note: String| {
        log_event(&namespace, &name, &type_, reason, &note);
        Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        }
    };

    // The controller hands in its watch cache's copy, which can predate this operator's own
    // last status write: a reconcile triggered by a pod event right after the previous one
    // wrote its journal then saw the journal from before, and ran the same step again (seen
    // on a real API server: a pod restarted twice in a rolling restart). The journal in the
    // status is the operation's memory, so it is read fresh from the API server.
    let Some(cluster) = clusters
        .get_opt(&name)
        .await
        .map_err(api(format!("reading {name}")))?
        .map(Arc::new)
    else {
        return Ok(Action::await_change());
    };
    if cluster.meta().deletion_timestamp.is_some() {
        finalize(&cluster, &ctx.client, &namespace).await?;
        return Ok(Action::await_change());
    }
    if !cluster.finalizers().iter().any(|f| f == FINALIZER) {
        // A merge patch replaces the whole list: keep the finalizers other controllers own.
        let mut finalizers = cluster.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        let patch = json!({"metadata": {"finalizers": finalizers}});
        clusters
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api(format!("adding the finalizer to {name}")))?;
    }

    let previous = cluster.status.clone();
    let mut input = StatusInput {
        generation: cluster.meta().generation,
        paused: cluster.spec.paused,
        operation: previous.as_ref().and_then(|s| s.operation.clone()),
        // Kept as it is while paused or invalid: a sync the status forgot would never be
        // cleaned up once `syncFrom` goes.
        sync: previous.as_ref().and_then(|s| s.sync.clone()).map(|sync| {
            let bound = cluster
                .spec
                .sync_from
                .as_ref()
                .map_or(5, |f| f.max_lag_seconds);
            (sync, bound)
        }),
        served_by: crate::objects::served_by(&cluster),
        autoscaling: previous.as_ref().and_then(|s| s.autoscaling.clone()),
        // Kept while paused or invalid, like the sync: the objects of a backup the status
        // forgot would never be deleted once `backup` goes.
        backup: previous.as_ref().and_then(|s| s.backup.clone()).map(|b| {
            let schedule = cluster
                .spec
                .backup
                .as_ref()
                .map(|b| b.schedule.clone())
                .unwrap_or_default();
            (b, schedule)
        }),
        restore: previous.as_ref().and_then(|s| s.restore.clone()),
        topology: previous.as_ref().and_then(|s| s.topology),
        ..StatusInput::default()
    };
    if cluster.spec.paused {
        write_status(&clusters, &name, &input, previous.as_ref()).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    if let Err(invalid) =
        validate(&cluster.spec).and_then(|()| topology_change(&cluster.spec, previous.as_ref()))
    {
        input.degraded = Some((invalid.reason.clone(), invalid.message.clone()));
        let _ = recorder
            .publish(
                &event(EventType::Warning, &invalid.reason, invalid.message.clone()),
                &reference,
            )
            .await;
        write_status(&clusters, &name, &input, previous.as_ref()).await?;
        return Ok(Action::await_change());
    }

    let mut objects = match build(&cluster, &ctx.build) {
        Ok(objects) => objects,
        Err(invalid) => {
            input.degraded = Some((invalid.reason.clone(), invalid.message.clone()));
            write_status(&clusters, &name, &input, previous.as_ref()).await?;
            return Ok(Action::await_change());
        }
    };
    // The password first: the pods the StatefulSets start read it from the Secret; the
    // proxies' admin token likewise before their Deployment.
    let password = ensure_password(&ctx.client, &namespace, &cluster).await?;
    let own_password = password.clone();
    if cluster.spec.proxy.enabled {
        ensure_admin_token(&ctx.client, &namespace, &cluster).await?;
    }
    let sync_objects = objects.sync.take();
    let backup_objects = objects.backup.take();
    if crate::backup::holds_clients(
        cluster.spec.restore_from.as_ref(),
        previous.as_ref().and_then(|s| s.restore.as_ref()),
    ) && let Some(spec) = objects
        .proxy
        .as_mut()
        .and_then(|p| p.deployment.spec.as_mut())
    {
        // No client before the restore is done (see `crate::backup`).
        spec.replicas = Some(0);
    }
    let revisions = apply(&ctx.client, &namespace, objects).await?;
    input.topology = Some(cluster.spec.topology);
    if cluster.spec.topology == crate::crd::Topology::Sentinel {
        let next = reconcile_group(
            &ctx, &cluster, &namespace, password, &revisions, &recorder, &reference, &mut input,
        )
        .await?;
        write_status(&clusters, &name, &input, previous.as_ref()).await?;
        return Ok(Action::requeue(next));
    }

    let mut execute = ctx.execute.clone();
    execute.credentials = Some(Credentials {
        user: None,
        password,
    });

    let mut platform = KubePlatform::new(
        ctx.client.clone(),
        &namespace,
        &name,
        cluster.spec.shards,
        cluster.spec.replicas_per_shard,
    );
    let pods: Vec<RedisPod> = platform.pods().await?;
    // One listing serves both the pods and the planner's nodes.
    let nodes = platform.nodes_of(&pods);
    let observed: Observed = observe(&nodes, execute.timeouts, execute.credentials.as_ref()).await;
    let journal: Option<JournalEntry> = input
        .operation
        .as_ref()
        .filter(|o| !o.journal.is_empty())
        .and_then(|o| serde_json::from_str(&o.journal).ok());
    input.pods = &pods;
    input.observed = Some(&observed);
    let mut switch_soon = false;
    let (sync, sync_admin) = reconcile_sync(
        &ctx,
        &cluster,
        &namespace,
        sync_objects,
        observed.covered_slots().len() == cinnabar_cluster::SLOT_COUNT,
        previous.as_ref().and_then(|s| s.sync.as_ref()),
    )
    .await?;
    input.sync = sync;
    let all_slots_served = observed.covered_slots().len() == cinnabar_cluster::SLOT_COUNT;
    input.backup = reconcile_backup(
        &ctx.client,
        &cluster,
        &namespace,
        backup_objects,
        previous.as_ref().and_then(|s| s.backup.as_ref()),
    )
    .await?;
    input.restore = reconcile_restore(
        ctx.as_ref(),
        &cluster,
        &namespace,
        all_slots_served,
        previous.as_ref().and_then(|s| s.restore.as_ref()),
        &recorder,
        &reference,
    )
    .await?;
    if let Some((sync, max_lag)) = input.sync.as_mut()
        && let Some(switch) = cluster
            .spec
            .sync_from
            .as_ref()
            .and_then(|f| f.switch.as_ref())
    {
        let masters: Vec<String> = observed
            .shards()
            .into_iter()
            .filter(|s| s.slot_count() > 0)
            .map(|s| s.master.to_string())
            .collect();
        let attempt = crate::switch::AttemptInput {
            cluster: &name,
            namespace: &namespace,
            masters,
            password: &own_password,
            sync_admin,
        };
        switch_soon = drive_switch(
            &ctx, &cluster, switch, sync, *max_lag, &attempt, &recorder, &reference,
        )
        .await;
    }

    let next = match decide(
        &cluster.spec,
        &pods,
        &observed,
        journal.as_ref(),
        &revisions,
    ) {
        Decision::WaitForPods { reason } => {
            tracing::info!(%namespace, cluster = %name, decision = "wait-for-pods", %reason);
            input.progressing = Some(("PodsStarting".into(), reason));
            Duration::from_secs(5)
        }
        Decision::Create { nodes } => {
            let spec = CreateSpec {
                nodes: nodes.into_iter().map(|n| NewNode::new(n.addr)).collect(),
                replicas_per_master: usize::from(cluster.spec.replicas_per_shard),
                timeout: Duration::from_secs(120),
            };
            let mut log = Vec::new();
            match create_cluster_as(&spec, execute.credentials.as_ref(), &mut |p| {
                log.push(p.to_string())
            })
            .await
            {
                Ok(_) => {
                    let _ = recorder
                        .publish(
                            &event(EventType::Normal, "Created", log.join("; ")),
                            &reference,
                        )
                        .await;
                    input.progressing = Some(("Created".into(), "the cluster formed".into()));
                }
                Err(e) => {
                    input.degraded = Some(("CreateFailed".into(), e.to_string()));
                    let _ = recorder
                        .publish(
                            &event(EventType::Warning, "CreateFailed", e.to_string()),
                            &reference,
                        )
                        .await;
                }
            }
            Duration::from_secs(2)
        }
        Decision::Operate(operation) => {
            let gate = if journal.is_none()
                && is_scale_in(&operation, &observed)
                && cluster.spec.backup.is_some()
            {
                backup_before_scale_in(&ctx, &cluster, &namespace, &recorder, &reference).await?
            } else {
                crate::backup::ScaleInGate::Go
            };
            match gate {
                crate::backup::ScaleInGate::Go => {
                    let (delay, status) = step(
                        operation,
                        journal,
                        &mut platform,
                        &execute,
                        &recorder,
                        &reference,
                        &mut input,
                    )
                    .await;
                    input.operation = status;
                    delay
                }
                crate::backup::ScaleInGate::Start | crate::backup::ScaleInGate::Wait(_) => {
                    let job = crate::backup::scale_in_backup_name(
                        &name,
                        cluster.meta().generation.unwrap_or(0),
                    );
                    input.progressing = Some((
                        "WaitingForBackup".into(),
                        format!("waiting for backup Job {job} to finish before shards are removed"),
                    ));
                    Duration::from_secs(5)
                }
                crate::backup::ScaleInGate::Refused(message) => {
                    input.degraded = Some(("ScaleInBackupFailed".into(), message));
                    Duration::from_secs(30)
                }
            }
        }
        Decision::Settle { reason } => {
            tracing::info!(%namespace, cluster = %name, decision = "settle", %reason);
            // An operation under way stays journaled: it continues once the node is back.
            input.progressing = Some(("Settling".into(), reason));
            Duration::from_secs(2)
        }
        Decision::Idle => {
            input.operation = None;
            match cluster
                .spec
                .autoscaling
                .as_ref()
                .and_then(|a| a.shards.as_ref())
            {
                Some(policy) => {
                    autoscale(
                        &clusters, &cluster, policy, &observed, &execute, &mut input, &recorder,
                        &reference,
                    )
                    .await?;
                    // The masters' numbers are looked at more often than the health check's.
                    Duration::from_secs(15)
                }
                None => Duration::from_secs(30),
            }
        }
    };
    let next = if switch_soon {
        next.min(Duration::from_secs(1))
    } else if input.sync.is_some() {
        next.min(Duration::from_secs(10))
    } else {
        next
    };
    // Backup Jobs are not watched (a CronJob owns them): their outcome is looked at this often.
    let next = if input.backup.is_some() {
        next.min(Duration::from_secs(30))
    } else {
        next
    };
    let next = match &input.restore {
        Some(restore) if matches!(restore.phase, RestorePhase::Pending | RestorePhase::Running) => {
            if input.progressing.is_none() {
                let (_, _, message) = crate::backup::restored(restore);
                input.progressing = Some(("Restoring".into(), message));
            }
            next.min(Duration::from_secs(5))
        }
        // Just restored: the proxy, held at 0 replicas until now, is applied right away (the
        // status write alone may not trigger a reconcile).
        Some(restore)
            if restore.phase == RestorePhase::Succeeded
                && previous
                    .as_ref()
                    .and_then(|s| s.restore.as_ref())
                    .is_none_or(|p| p.phase != RestorePhase::Succeeded) =>
        {
            next.min(Duration::from_secs(1))
        }
        _ => next,
    };
    write_status(&clusters, &name, &input, previous.as_ref()).await?;
    Ok(Action::requeue(next))
}

/// A Sentinel group's part of the reconcile (see [`crate::group`]): observe, decide, at most
/// one planner step, the per-role status into `input`; returns when to look again.
#[allow(clippy::too_many_arguments)]
async fn reconcile_group(
    ctx: &Context,
    cluster: &RedisCluster,
    namespace: &str,
    password: String,
    revisions: &BTreeMap<u32, String>,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    input: &mut StatusInput<'_>,
) -> Result<Duration, ReconcileError> {
    use crate::group::{GroupContext, GroupDecision, decide_group, group_status};
    let name = cluster.name_any();
    let credentials = Credentials {
        user: None,
        password,
    };
    let mut platform = KubePlatform::group(
        ctx.client.clone(),
        namespace,
        &name,
        cluster.spec.replicas_per_shard,
    );
    let pods = platform.pods().await?;
    let sentinels = crate::group::sentinel_pods(&ctx.client, namespace, &name).await?;
    let sight = crate::group::observe_group(
        &name,
        &pods,
        &sentinels,
        ctx.execute.timeouts,
        Some(&credentials),
    )
    .await;
    let journal: Option<cinnabar_cluster::group_plan::GroupOperation> = input
        .operation
        .as_ref()
        .filter(|o| !o.journal.is_empty())
        .and_then(|o| serde_json::from_str(&o.journal).ok());
    let decision = decide_group(
        &cluster.spec,
        &pods,
        &sentinels,
        &sight.observed,
        journal.as_ref(),
        revisions.get(&0).map(String::as_str),
    );
    let (healthy, view) = group_status(&name, &pods, &sight);
    input.group = Some((healthy, view));
    let next = match decision {
        GroupDecision::WaitForPods { reason } => {
            input.progressing = Some(("PodsStarting".into(), reason));
            Duration::from_secs(5)
        }
        GroupDecision::Settle { reason } => {
            input.progressing = Some(("Settling".into(), reason));
            Duration::from_secs(2)
        }
        GroupDecision::Operate(operation) => {
            let group = GroupContext {
                name: &name,
                sentinels: cluster.spec.sentinels,
                sentinel_addrs: sight
                    .observed
                    .sentinel_members
                    .iter()
                    .map(|s| s.addr.clone())
                    .collect(),
                credentials,
                timeouts: ctx.execute.timeouts,
                recorder,
                reference,
            };
            let (next, status) =
                crate::group::run_step(&group, operation, &sight, &mut platform, input).await;
            input.operation = status;
            next
        }
        GroupDecision::Idle => {
            input.operation = None;
            // Not healthy with nothing to do: a replica resyncing, a Sentinel finding the
            // others again. Looked at again soon, so Ready follows within seconds.
            let pending = crate::group::pending_sentinels(&sentinels);
            if healthy {
                Duration::from_secs(30)
            } else if !pending.is_empty() {
                input.progressing = Some((
                    "PodsStarting".into(),
                    format!("pods not ready: {}", pending.join(", ")),
                ));
                Duration::from_secs(5)
            } else {
                input.progressing = Some((
                    "Settling".into(),
                    "the group is settling (a replica syncing, Sentinels finding each other)"
                        .into(),
                ));
                Duration::from_secs(2)
            }
        }
    };
    Ok(next)
}

/// The sync of `spec.syncFrom`: its objects applied and its progress read, or, once `syncFrom`
/// is gone, the objects of the sync `previous` reports deleted. Returns the status to report
/// (with `maxLagSeconds`).
async fn reconcile_sync(
    ctx: &Context,
    cluster: &RedisCluster,
    namespace: &str,
    objects: Option<SyncObjects>,
    all_slots_served: bool,
    previous: Option<&SyncState>,
) -> Result<(Option<(SyncState, u32)>, Option<String>), ReconcileError> {
    let name = cluster.name_any();
    let (Some(from), Some(mut objects)) = (cluster.spec.sync_from.as_ref(), objects) else {
        if previous.is_some() {
            delete_sync(&ctx.client, namespace, &name).await?;
        }
        return Ok((None, None));
    };
    // After the online switch the sync stays stopped: the clients write here now, and a sync
    // started again would copy the old cluster's stale data over theirs.
    if let Some(previous) = previous.filter(|p| {
        p.source == from.address
            && p.switch
                .as_ref()
                .is_some_and(|s| s.phase == crate::crd::SwitchPhase::Switched)
    }) {
        if previous.phase != SyncPhase::Stopped {
            delete_sync(&ctx.client, namespace, &name).await?;
        }
        let mut stopped = previous.clone();
        stopped.phase = SyncPhase::Stopped;
        stopped.lag_bytes = None;
        stopped.lag_seconds = None;
        return Ok((Some((stopped, from.max_lag_seconds)), None));
    }
    // Once started, a sync keeps running whatever the cluster does: it retries on its own, and
    // stopping it would only make it copy more later.
    let started = all_slots_served
        || previous.is_some_and(|p| p.phase != SyncPhase::Pending || p.observed_at.is_some());
    if !started && let Some(spec) = objects.deployment.spec.as_mut() {
        spec.replicas = Some(0);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(claim) = objects.state_claim {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
        let claim_name = claim.name_any();
        claims
            .patch(&claim_name, &params, &Patch::Apply(&claim))
            .await
            .map_err(api(format!("applying {claim_name}")))?;
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let object_name = sync_name(&name);
    deployments
        .patch(&object_name, &params, &Patch::Apply(&objects.deployment))
        .await
        .map_err(api(format!("applying Deployment {object_name}")))?;
    services
        .patch(&object_name, &params, &Patch::Apply(&objects.service))
        .await
        .map_err(api(format!("applying Service {object_name}")))?;

    let mut reading = SyncReading {
        source: from.address.clone(),
        started,
        now: Some(Time(jiff_now())),
        ..SyncReading::default()
    };
    let mut admin = None;
    if started {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let selector =
            format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=sync");
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api(format!("listing the sync pods of {name}")))?;
        reading.pod = pod_facts(&listed.items);
        admin = metrics_address(&listed.items).map(|ip| {
            let port = cluster.spec.monitoring.metrics_port;
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        });
        reading.metrics = Some(match metrics_address(&listed.items) {
            Some(ip) => ctx
                .sync_metrics
                .fetch(&ip, cluster.spec.monitoring.metrics_port)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no pod of Deployment {object_name} has an address yet"
            )),
        });
    }
    Ok((
        Some((sync_state(&reading, previous), from.max_lag_seconds)),
        admin,
    ))
}

/// Whether `operation` removes shards: a scale to fewer masters than serve slots now.
fn is_scale_in(operation: &Operation, observed: &Observed) -> bool {
    let serving = observed
        .shards()
        .into_iter()
        .filter(|s| s.slot_count() > 0)
        .count();
    matches!(operation, Operation::Scale { masters, .. } if *masters < serving)
}

/// The backup Job a scale-in waits for: created when missing, then read.
async fn backup_before_scale_in(
    ctx: &Context,
    cluster: &RedisCluster,
    namespace: &str,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<crate::backup::ScaleInGate, ReconcileError> {
    use crate::backup::{ScaleInGate, scale_in_backup_name, scale_in_gate, scale_in_job};
    let Some(spec) = &cluster.spec.backup else {
        return Ok(ScaleInGate::Go);
    };
    let name = cluster.name_any();
    let generation = cluster.meta().generation.unwrap_or(0);
    let job_name = scale_in_backup_name(&name, generation);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job = jobs
        .get_opt(&job_name)
        .await
        .map_err(api(format!("reading Job {job_name}")))?;
    let pods = match &job {
        Some(_) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            pods.list(&ListParams::default().labels(&format!("job-name={job_name}")))
                .await
                .map_err(api(format!("listing the pods of Job {job_name}")))?
                .items
        }
        None => Vec::new(),
    };
    let gate = scale_in_gate(&job_name, job.as_ref(), &pods);
    let publish = |type_: EventType, reason: &str, note: String| {
        log_event(namespace, &name, &type_, reason, &note);
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Backup".to_owned(),
            secondary: None,
        };
        async move {
            let _ = recorder.publish(&event, reference).await;
        }
    };
    if gate == ScaleInGate::Start {
        let job = match scale_in_job(cluster, spec, generation, &ctx.build) {
            Ok(job) => job,
            Err(invalid) => return Ok(ScaleInGate::Refused(invalid.message)),
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            // Created by a reconcile whose status write was lost: the same Job.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(api(format!("creating Job {job_name}"))(e)),
        }
        publish(
            EventType::Normal,
            "BackupBeforeScaleIn",
            format!("Job {job_name} backs the cluster up before shards are removed"),
        )
        .await;
    }
    if let ScaleInGate::Refused(message) = &gate {
        publish(EventType::Warning, "ScaleInRefused", message.clone()).await;
    }
    Ok(gate)
}

/// `spec.backup`: the CronJob and the continuous archive applied (the archive deleted once
/// turned off), and the backup Jobs read into `status.backup`; without it, the objects of the
/// backups the status still reports are deleted.
async fn reconcile_backup(
    client: &Client,
    cluster: &RedisCluster,
    namespace: &str,
    objects: Option<crate::backup::BackupObjects>,
    previous: Option<&BackupState>,
) -> Result<Option<(BackupState, String)>, ReconcileError> {
    use crate::backup::{
        BACKUP_COMPONENT, CONTINUOUS_COMPONENT, backup_name, backup_state, continuous_name,
        selector,
    };
    let name = cluster.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let (Some(spec), Some(objects)) = (cluster.spec.backup.as_ref(), objects) else {
        if previous.is_some() {
            let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
            let background = DeleteParams::background();
            gone(
                cron_jobs
                    .delete(&backup_name(&name), &background)
                    .await
                    .map(drop),
                format!("deleting CronJob {}", backup_name(&name)),
            )?;
            gone(
                deployments
                    .delete(&continuous_name(&name), &background)
                    .await
                    .map(drop),
                format!("deleting Deployment {}", continuous_name(&name)),
            )?;
            // The Jobs taken before scale-ins; the CronJob's own go with it.
            jobs.delete_collection(
                &background,
                &ListParams::default().labels(&selector(&name, BACKUP_COMPONENT)),
            )
            .await
            .map_err(api(format!("deleting the backup Jobs of {name}")))?;
        }
        return Ok(None);
    };
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    cron_jobs
        .patch(
            &backup_name(&name),
            &params,
            &Patch::Apply(&objects.cron_job),
        )
        .await
        .map_err(api(format!("applying CronJob {}", backup_name(&name))))?;
    match &objects.continuous {
        Some(deployment) => {
            deployments
                .patch(&continuous_name(&name), &params, &Patch::Apply(deployment))
                .await
                .map_err(api(format!(
                    "applying Deployment {}",
                    continuous_name(&name)
                )))?;
        }
        None if previous.is_some_and(|p| p.continuous) => gone(
            deployments
                .delete(&continuous_name(&name), &DeleteParams::background())
                .await
                .map(drop),
            format!("deleting Deployment {}", continuous_name(&name)),
        )?,
        None => {}
    }
    let listed = jobs
        .list(&ListParams::default().labels(&selector(&name, BACKUP_COMPONENT)))
        .await
        .map_err(api(format!("listing the backup Jobs of {name}")))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let job_pods = pods
        .list(&ListParams::default().labels(&selector(&name, BACKUP_COMPONENT)))
        .await
        .map_err(api(format!("listing the backup pods of {name}")))?;
    let mut state = backup_state(
        previous,
        objects.continuous.is_some(),
        &listed.items,
        &job_pods.items,
    );
    if state.continuous {
        let archive_pods = pods
            .list(&ListParams::default().labels(&selector(&name, CONTINUOUS_COMPONENT)))
            .await
            .map_err(api(format!("listing the archive pods of {name}")))?;
        crate::backup::archive_facts(&mut state, &archive_pods.items);
    } else {
        state.archive_running = false;
        state.archive_error = None;
    }
    Ok(Some((state, spec.schedule.clone())))
}

/// `spec.restoreFrom`: the restore Job created once the cluster serves every slot, exactly
/// once, and followed into `status.restore`.
async fn reconcile_restore(
    ctx: &Context,
    cluster: &RedisCluster,
    namespace: &str,
    all_slots_served: bool,
    previous: Option<&RestoreState>,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<Option<RestoreState>, ReconcileError> {
    use crate::backup::{RESTORE_COMPONENT, restore_job, restore_name, restore_progress, selector};
    let Some(from) = &cluster.spec.restore_from else {
        return Ok(None);
    };
    let name = cluster.name_any();
    let job_name = restore_name(&name);
    // A cluster is restored once: `restoreFrom` is read until the restore starts; a change
    // afterwards (another store, another time) starts nothing, since the cluster already holds
    // what the first restore wrote. To restore again, make a new cluster.
    let mut state = match previous {
        Some(p) if p.phase != RestorePhase::Pending => p.clone(),
        _ => RestoreState {
            url: from.url.clone(),
            job: job_name.clone(),
            ..RestoreState::default()
        },
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let publish = |type_: EventType, reason: &str, note: String| {
        log_event(namespace, &name, &type_, reason, &note);
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Restore".to_owned(),
            secondary: None,
        };
        async move {
            let _ = recorder.publish(&event, reference).await;
        }
    };
    match state.phase {
        RestorePhase::Succeeded | RestorePhase::Failed => {}
        RestorePhase::Pending if !all_slots_served => {}
        RestorePhase::Pending => {
            let job = match restore_job(cluster, from, &ctx.build) {
                Ok(job) => job,
                Err(invalid) => {
                    state.phase = RestorePhase::Failed;
                    state.last_error = Some(invalid.message);
                    return Ok(Some(state));
                }
            };
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    publish(
                        EventType::Normal,
                        "RestoreStarted",
                        format!("Job {job_name} restores from {}", from.url),
                    )
                    .await;
                }
                // Created by a reconcile whose status write was lost: adopted, never made twice.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(api(format!("creating Job {job_name}"))(e)),
            }
            state.phase = RestorePhase::Running;
            state.job = job_name;
        }
        RestorePhase::Running => {
            let job = jobs
                .get_opt(&state.job)
                .await
                .map_err(api(format!("reading Job {}", state.job)))?;
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            let listed = pods
                .list(&ListParams::default().labels(&selector(&name, RESTORE_COMPONENT)))
                .await
                .map_err(api(format!("listing the restore pods of {name}")))?;
            let next = restore_progress(&state, job.as_ref(), &listed.items);
            match next.phase {
                RestorePhase::Succeeded => {
                    let (_, _, message) = crate::backup::restored(&next);
                    publish(EventType::Normal, "Restored", message).await;
                }
                RestorePhase::Failed => {
                    let (_, _, message) = crate::backup::restored(&next);
                    publish(EventType::Warning, "RestoreFailed", message).await;
                }
                _ => {}
            }
            state = next;
        }
    }
    Ok(Some(state))
}

/// A delete whose object is already gone is done.
fn gone(result: Result<(), kube::Error>, what: String) -> Result<(), ReconcileError> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(api(what)),
    }
}

/// Shard autoscaling (see [`crate::autoscale`]): the masters' `INFO`, the policy's decision, and
/// for a scale the new `spec.shards` (the next reconcile scales through the planner), an event
/// and `status.autoscaling`. A master that does not answer postpones the decision.
#[allow(clippy::too_many_arguments)]
async fn autoscale(
    clusters: &Api<RedisCluster>,
    cluster: &RedisCluster,
    policy: &crate::crd::ShardAutoscaling,
    observed: &Observed,
    execute: &ExecuteOptions,
    input: &mut StatusInput<'_>,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(), ReconcileError> {
    use cinnabar_cluster::autoscale::Decision as Autoscale;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let mut state = input.autoscaling.clone().unwrap_or_default();
    let loads = match cinnabar_cluster::autoscale::read_loads(
        observed,
        execute.timeouts,
        execute.credentials.as_ref(),
    )
    .await
    {
        Ok(loads) => loads,
        Err(e) => {
            state.last_evaluation = format!("no decision: a master did not report its load: {e}");
            input.autoscaling = Some(state);
            return Ok(());
        }
    };
    let now = jiff_now();
    match crate::autoscale::evaluate(policy, &loads, input.autoscaling.as_ref(), now) {
        Autoscale::Scale { to, because } => {
            let from = loads.len();
            let patch = json!({"spec": {"shards": to}});
            clusters
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api(format!("setting the shards of {name} to {to}")))?;
            let reason = if to > from {
                "AutoscaleOut"
            } else {
                "AutoscaleIn"
            };
            let note = format!("{from} -> {to} shards: {because}");
            log_event(&namespace, &name, &EventType::Normal, reason, &note);
            let event = Event {
                type_: EventType::Normal,
                reason: reason.to_owned(),
                note: Some(note),
                action: "Autoscale".to_owned(),
                secondary: None,
            };
            let _ = recorder.publish(&event, reference).await;
            input.autoscaling = Some(crate::autoscale::scaled(from, to, &because, now));
        }
        Autoscale::Stay { because } => {
            tracing::debug!(%namespace, cluster = %name, decision = "autoscale-stay", %because);
            state.last_evaluation = because;
            input.autoscaling = Some(state);
        }
    }
    Ok(())
}

/// The online switch of `syncFrom.switch` (see [`crate::switch`]): at most one attempt per
/// reconcile, its result in `sync.switch`, an event for every attempt's outcome. Never fails
/// the reconcile: what went wrong is the switch's state. The sync must have been in sync at
/// the previous reconcile too (`InSync=True` in the stored status): two readings in a row, and
/// a status that shows `InSync` before `Switched` (on a real control plane the switch came in
/// the very reconcile that first saw the sync in sync, so `InSync=True` was never written).
/// Returns whether to look again within a second (in sync now, the switch due next).
#[allow(clippy::too_many_arguments)]
async fn drive_switch(
    ctx: &Context,
    cluster: &RedisCluster,
    spec: &crate::crd::SwitchSpec,
    sync: &mut SyncState,
    max_lag: u32,
    input: &crate::switch::AttemptInput<'_>,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> bool {
    use crate::crd::SwitchPhase;
    let now = jiff_now();
    let generation = cluster.meta().generation;
    let in_sync_now = crate::sync::synced(sync, max_lag).0;
    let was_in_sync = cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == crate::status::types::IN_SYNC && c.status == "True")
    });
    let plan = crate::switch::plan(
        sync.switch.as_ref(),
        spec,
        generation,
        in_sync_now && was_in_sync,
        now,
    );
    let soon = in_sync_now && !was_in_sync && !plan.attempt;
    let mut state = plan.state;
    let publish = |type_: EventType, reason: &str, note: String| {
        log_event(input.namespace, input.cluster, &type_, reason, &note);
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Switch".to_owned(),
            secondary: None,
        };
        async move {
            let _ = recorder.publish(&event, reference).await;
        }
    };
    if plan.attempt {
        state.attempts += 1;
        state.last_attempt = Some(Time(now));
        let done = state.proxies.clone();
        match crate::switch::attempt(&ctx.client, input, spec, &done).await {
            crate::switch::Outcome::Switched {
                proxies,
                riders,
                pause_ms,
                catch_up_ms,
            } => {
                state.phase = SwitchPhase::Switched;
                state.also_moved = riders;
                state.switched_at = Some(Time(jiff_now()));
                state.next_attempt = None;
                state.last_error = None;
                state.proxies = proxies;
                state.pause_ms = pause_ms.or(state.pause_ms);
                state.catch_up_ms = catch_up_ms.or(state.catch_up_ms);
                publish(
                    EventType::Normal,
                    "Switched",
                    format!(
                        "every proxy of {} serves this cluster (attempt {}, clients held {:.0} ms, \
                         {:.0} ms of it waiting for the sync); the sync stops",
                        spec.cluster,
                        state.attempts,
                        state.pause_ms.unwrap_or(0.0),
                        state.catch_up_ms.unwrap_or(0.0)
                    ),
                )
                .await;
            }
            crate::switch::Outcome::Failed { error, proxies } => {
                if !proxies.is_empty() {
                    state.proxies = proxies;
                }
                crate::switch::record_failure(
                    &mut state,
                    error.clone(),
                    spec,
                    generation,
                    now,
                    ctx.switch_retry,
                );
                let (reason, note) = if state.phase == SwitchPhase::Abandoned {
                    (
                        "SwitchAbandoned",
                        format!(
                            "attempt {} of {} failed, the switch is abandoned: {error}",
                            state.attempts, spec.max_attempts
                        ),
                    )
                } else {
                    (
                        "SwitchFailed",
                        format!(
                            "attempt {} of {} failed, retrying later: {error}",
                            state.attempts, spec.max_attempts
                        ),
                    )
                };
                publish(EventType::Warning, reason, note).await;
            }
        }
    }
    if state.phase == SwitchPhase::Switched {
        // The old cluster's proxies (and those that moved with them) start on this cluster from
        // now on (idempotent; retried on every reconcile until it holds).
        let mut ours: Vec<String> = Vec::new();
        let mut served = true;
        let candidates = std::iter::once((spec.cluster.clone(), None))
            .chain(
                state
                    .also_moved
                    .iter()
                    .map(|rider| (rider.clone(), Some(spec.cluster.as_str()))),
            )
            .collect::<Vec<_>>();
        for (index, (old, replaces)) in candidates.iter().enumerate() {
            match crate::switch::ensure_served(
                &ctx.client,
                input.namespace,
                input.cluster,
                old,
                *replaces,
                input.password,
                &ctx.build,
            )
            .await
            {
                Ok(true) => ours.push(old.clone()),
                // Moved on by a later switch (or deleted): not ours to look after any more, nor
                // are those that moved with it.
                Ok(false) if index == 0 => break,
                Ok(false) => {}
                Err(error) => {
                    served = false;
                    publish(
                        EventType::Warning,
                        "ServedByNotRecorded",
                        format!(
                            "{old}'s proxies serve this cluster, but their configuration is not \
                             updated yet (a proxy restarted now would come back on {old}): \
                             {error}"
                        ),
                    )
                    .await;
                }
            }
        }
        let moved = ours;
        // A proxy container that restarted before its pod saw the new configuration is back on
        // the old nodes: its pod is replaced (the new one reads the new configuration).
        if served {
            match crate::switch::replace_stale_proxies(
                &ctx.client,
                input.namespace,
                &moved,
                &input.masters,
            )
            .await
            {
                Ok(deleted) => {
                    for pod in deleted {
                        publish(
                            EventType::Warning,
                            "StaleProxyReplaced",
                            format!(
                                "proxy pod {pod} served the old cluster's nodes again after the \
                                 switch (restarted before its configuration was refreshed): \
                                 deleted, its replacement starts on this cluster"
                            ),
                        )
                        .await;
                    }
                }
                Err(error) => {
                    tracing::warn!(cluster = input.cluster, %error, "checking the old proxies");
                }
            }
        }
        if sync.phase != SyncPhase::Stopped
            && let Err(error) = delete_sync(&ctx.client, input.namespace, input.cluster).await
        {
            tracing::warn!(cluster = input.cluster, %error, "stopping the sync after the switch");
        }
    }
    let soon = soon && state.phase == SwitchPhase::Waiting;
    sync.switch = Some(state);
    crate::switch::mark_switched(sync);
    soon
}

/// Deletes the sync's Deployment, Service and state volume; those already gone are fine.
async fn delete_sync(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<(), ReconcileError> {
    let gone = |result: Result<(), kube::Error>, what: String| match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(api(what)),
    };
    let object_name = sync_name(cluster);
    let params = DeleteParams::background();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    gone(
        deployments.delete(&object_name, &params).await.map(drop),
        format!("deleting Deployment {object_name}"),
    )?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    gone(
        services.delete(&object_name, &params).await.map(drop),
        format!("deleting Service {object_name}"),
    )?;
    let claim_name = sync_state_claim_name(cluster);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    gone(
        claims.delete(&claim_name, &params).await.map(drop),
        format!("deleting PersistentVolumeClaim {claim_name}"),
    )?;
    Ok(())
}

/// Takes one planner step of `operation`; returns when to look again and the operation's status
/// (`None` once done).
async fn step<P: Platform + Send>(
    operation: Operation,
    journal: Option<JournalEntry>,
    platform: &mut P,
    execute: &ExecuteOptions,
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    input: &mut StatusInput<'_>,
) -> (Duration, Option<OperationStatus>) {
    let mut entry = journal.unwrap_or(JournalEntry {
        operation,
        step: None,
        steps_done: 0,
        started_ms: 0,
    });
    let options = OperateOptions {
        execute: execute.clone(),
        ..OperateOptions::default()
    };
    let mut lines = Vec::new();
    let result = advance(
        &mut entry,
        platform,
        &mut MemoryJournal::default(),
        &options,
        &mut |e| lines.push(e.to_string()),
    )
    .await;
    let status = |entry: &JournalEntry, step: String| {
        Some(OperationStatus {
            name: entry.operation.name().to_owned(),
            step,
            steps_done: u32::try_from(entry.steps_done).unwrap_or(u32::MAX),
            journal: serde_json::to_string(entry).unwrap_or_default(),
        })
    };
    let publish = |type_: EventType, reason: &'static str, note: String| {
        publish_operation_event(recorder, reference, type_, reason, note)
    };
    match result {
        Ok(Advance::Stepped { step }) => {
            publish(
                EventType::Normal,
                "OperationStep",
                format!("{}: {step}", entry.operation),
            )
            .await;
            input.progressing = Some(("Operating".into(), format!("{}: {step}", entry.operation)));
            (Duration::from_secs(1), status(&entry, step.to_string()))
        }
        Ok(Advance::Waiting { reason }) => {
            tracing::info!(
                namespace = reference.namespace.as_deref().unwrap_or_default(),
                cluster = reference.name.as_deref().unwrap_or_default(),
                operation = %entry.operation,
                %reason,
                "operation waits"
            );
            input.progressing = Some(("Waiting".into(), reason.clone()));
            (
                Duration::from_secs(2),
                status(&entry, format!("waiting: {reason}")),
            )
        }
        Ok(Advance::Failed { step, error }) => {
            publish(EventType::Warning, "StepFailed", format!("{step}: {error}")).await;
            input.progressing = Some(("StepFailed".into(), format!("{step}: {error}")));
            (
                Duration::from_secs(5),
                status(&entry, format!("failed, will retry: {step}")),
            )
        }
        Ok(Advance::Done { unresolved }) => {
            publish(
                EventType::Normal,
                "OperationDone",
                entry.operation.to_string(),
            )
            .await;
            if !unresolved.is_empty() {
                input.degraded = Some(("Unresolved".into(), unresolved.join("; ")));
            }
            (Duration::from_secs(1), None)
        }
        Ok(Advance::Planned { .. }) | Ok(_) => (Duration::from_secs(1), None),
        Err(OperateError::Refused(refusal)) => refused(refusal, input, publish).await,
        Err(e) => {
            publish(EventType::Warning, "OperationFailed", e.to_string()).await;
            input.degraded = Some(("OperationFailed".into(), e.to_string()));
            (Duration::from_secs(15), status(&entry, e.to_string()))
        }
    }
}

/// A refused operation. What a heal fixes (a node down, a ghost, unserved slots) is mostly a
/// transient state on Kubernetes (a pod Ready before its Redis listens, a node meeting the
/// cluster again): the operation is dropped, the next reconcile (2 s) waits for the node or
/// heals, then plans the spec's operation again from what the cluster is. Only a request that
/// cannot be met needs a person (`Degraded`), worded for the spec, never a local command.
async fn refused<F, Fut>(
    refusal: cinnabar_cluster::Refusal,
    input: &mut StatusInput<'_>,
    publish: F,
) -> (Duration, Option<OperationStatus>)
where
    F: Fn(EventType, &'static str, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use cinnabar_cluster::Remedy;
    let what = match refusal.remedy {
        Remedy::Heal | Remedy::HealAfterFailover => {
            let message = format!(
                "{} refused for now: {}; the operator waits for the node or heals the cluster, \
                 then goes on",
                refusal.operation, refusal.reason
            );
            publish(EventType::Normal, "OperationPostponed", message.clone()).await;
            input.progressing = Some(("Waiting".into(), message));
            return (Duration::from_secs(2), None);
        }
        Remedy::AddReplica => {
            "set replicasPerShard to at least 1 (a shard without a replica cannot fail over)"
        }
        Remedy::Delete => "delete the RedisCluster instead",
        Remedy::None => "",
    };
    let message = if what.is_empty() {
        refusal.to_string()
    } else {
        format!("{} refused: {}; {what}", refusal.operation, refusal.reason)
    };
    publish(EventType::Warning, "OperationRefused", message.clone()).await;
    input.degraded = Some(("OperationRefused".into(), message));
    (Duration::from_secs(30), None)
}

/// Applies every owned object; returns each shard's StatefulSet update revision.
async fn apply(
    client: &Client,
    namespace: &str,
    objects: Objects,
) -> Result<BTreeMap<u32, String>, ReconcileError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    macro_rules! apply_one {
        ($kind:ty, $object:expr) => {{
            let object = $object;
            let name = object.name_any();
            let kind_api: Api<$kind> = Api::namespaced(client.clone(), namespace);
            kind_api
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .map_err(api(format!("applying {name}")))?
        }};
    }
    apply_one!(k8s_openapi::api::core::v1::ConfigMap, objects.config_map);
    apply_one!(
        k8s_openapi::api::core::v1::Service,
        objects.headless_service
    );
    apply_one!(k8s_openapi::api::core::v1::Service, objects.client_service);
    if let Some(service) = objects.sentinel_service {
        apply_one!(k8s_openapi::api::core::v1::Service, service);
    }
    for service in objects.node_port_services {
        apply_one!(k8s_openapi::api::core::v1::Service, service);
    }
    for pdb in objects.pdbs {
        apply_one!(k8s_openapi::api::policy::v1::PodDisruptionBudget, pdb);
    }
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let mut revisions = BTreeMap::new();
    for (shard, mut set) in objects.statefulsets.into_iter().enumerate() {
        // Sentinels hold no data: their StatefulSet takes the spec's size (the planner's heal
        // resets the Sentinels that still count a removed one).
        let holds_data = set
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/component"))
            .is_none_or(|c| c != "sentinel");
        // Only the planner shrinks a StatefulSet (after the pods hold nothing).
        if holds_data
            && let Some(current) = sets
                .get_opt(&set.name_any())
                .await
                .map_err(api(format!("reading {}", set.name_any())))?
                .and_then(|s| s.spec.and_then(|spec| spec.replicas))
            && let Some(spec) = set.spec.as_mut()
            && spec.replicas.is_some_and(|wanted| wanted < current)
        {
            spec.replicas = Some(current);
        }
        let applied = apply_one!(StatefulSet, set);
        if let Some(revision) = applied.status.and_then(|s| s.update_revision) {
            revisions.insert(u32::try_from(shard).unwrap_or(u32::MAX), revision);
        }
    }
    if let Some(monitor) = objects.service_monitor {
        // A Prometheus Operator type: applied as a dynamic object, and only when asked for.
        let gvk = kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
        let resource = kube::api::ApiResource::from_gvk(&gvk);
        let monitors: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &resource);
        let name = monitor["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        monitors
            .patch(&name, &params, &Patch::Apply(&monitor))
            .await
            .map_err(api(format!("applying ServiceMonitor {name}")))?;
    }
    if let Some(proxy) = objects.proxy {
        apply_one!(k8s_openapi::api::core::v1::ConfigMap, proxy.config_map);
        apply_one!(k8s_openapi::api::apps::v1::Deployment, proxy.deployment);
        apply_one!(k8s_openapi::api::core::v1::Service, proxy.service);
        apply_one!(k8s_openapi::api::policy::v1::PodDisruptionBudget, proxy.pdb);
        if let Some(hpa) = proxy.hpa {
            apply_one!(
                k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
                hpa
            );
        }
    }
    Ok(revisions)
}

/// The nodes' password: read from `NAME-auth`, or made (random, 32 characters) and stored there
/// on first use. Never applied, so a reconcile can never replace it.
async fn ensure_password(
    client: &Client,
    namespace: &str,
    cluster: &RedisCluster,
) -> Result<String, ReconcileError> {
    let name = format!("{}-auth", cluster.name_any());
    ensure_random_secret(client, namespace, cluster, &name, PASSWORD_KEY, "redis").await
}

/// The proxies' admin token (their `admin_token_file`: what an online switch of their backend
/// must present), in `NAME-admin`, made on first use like the password. A Secret of its own, so
/// the Redis pods, which mount the password, never see it.
async fn ensure_admin_token(
    client: &Client,
    namespace: &str,
    cluster: &RedisCluster,
) -> Result<String, ReconcileError> {
    let name = admin_secret_name(&cluster.name_any());
    ensure_random_secret(client, namespace, cluster, &name, ADMIN_TOKEN_KEY, "proxy").await
}

/// The value of `key` in Secret `name`, or a new random one (32 characters) stored there.
async fn ensure_random_secret(
    client: &Client,
    namespace: &str,
    cluster: &RedisCluster,
    name: &str,
    key: &str,
    component: &str,
) -> Result<String, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = secrets
        .get_opt(name)
        .await
        .map_err(api(format!("reading Secret {name}")))?
        && let Some(value) = secret.data.as_ref().and_then(|d| d.get(key))
    {
        return Ok(String::from_utf8_lossy(&value.0).into_owned());
    }
    let value: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(&cluster.name_any(), component)),
            owner_references: cluster.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        string_data: Some([(key.to_owned(), value.clone())].into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(api(format!("creating Secret {name}")))?;
    Ok(value)
}

/// Deletion: PVCs go when the retention says so; then the finalizer is removed.
async fn finalize(
    cluster: &RedisCluster,
    client: &Client,
    namespace: &str,
) -> Result<(), ReconcileError> {
    let name = cluster.name_any();
    if cluster.spec.persistence.retention == Retention::Delete {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        claims
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&redis_selector(&name)),
            )
            .await
            .map_err(api(format!("deleting the volumes of {name}")))?;
    }
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    let remaining: Vec<String> = cluster
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": remaining}});
    clusters
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api(format!("removing the finalizer of {name}")))?;
    Ok(())
}

async fn write_status(
    clusters: &Api<RedisCluster>,
    name: &str,
    input: &StatusInput<'_>,
    previous: Option<&RedisClusterStatus>,
) -> Result<(), ReconcileError> {
    let now = Time(jiff_now());
    let status = build_status(input, previous, &now);
    let mut status = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    // A merge patch keeps fields it does not mention: whatever the previous status had and
    // this one does not (a finished operation, a sync's cleared error) is removed explicitly.
    let before = previous
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or_else(|| json!({}));
    null_removed(&before, &mut status);
    for field in ["operation", "sync", "backup", "restore", "group"] {
        if status.get(field).is_none() {
            status[field] = serde_json::Value::Null;
        }
    }
    let patch = json!({"status": status});
    clusters
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api(format!("writing the status of {name}")))?;
    Ok(())
}

/// An event about an operation's progress (`action: Operate`), logged too. A failure to
/// publish is ignored: events are for people, the status and the journal are the record.
pub(crate) async fn publish_operation_event(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    log_event(
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name.as_deref().unwrap_or_default(),
        &type_,
        reason,
        &note,
    );
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Operate".to_owned(),
        secondary: None,
    };
    let _ = recorder.publish(&event, reference).await;
}

/// One log line per event (warnings at warn level).
pub(crate) fn log_event(
    namespace: &str,
    cluster: &str,
    type_: &EventType,
    reason: &str,
    note: &str,
) {
    if matches!(type_, EventType::Warning) {
        tracing::warn!(%namespace, %cluster, %reason, %note, "event");
    } else {
        tracing::info!(%namespace, %cluster, %reason, %note, "event");
    }
}

/// Sets to `null` (for a JSON merge patch: delete) every field of `before` that `after` lacks,
/// in nested objects too. Arrays are replaced whole by a merge patch and are left as they are.
fn null_removed(before: &serde_json::Value, after: &mut serde_json::Value) {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object_mut()) else {
        return;
    };
    for (key, old) in before {
        match after.get_mut(key) {
            Some(new) => null_removed(old, new),
            None => {
                after.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cinnabar_cluster::{Refusal, Remedy};

    fn refusal(remedy: Remedy) -> Refusal {
        Refusal {
            operation: "scale".into(),
            reason: "10.0.0.7:6379 is down (connection refused); the cluster must be healed first"
                .into(),
            remedy,
        }
    }

    #[tokio::test]
    async fn a_refusal_a_heal_fixes_is_waited_out_and_none_tells_a_person_to_run_a_command() {
        let events = std::sync::Mutex::new(Vec::new());
        let publish = |type_: EventType, reason: &'static str, note: String| {
            events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((matches!(type_, EventType::Warning), reason, note));
            async {}
        };
        let mut input = StatusInput::default();
        let (delay, operation) = refused(refusal(Remedy::Heal), &mut input, &publish).await;
        assert_eq!(delay, Duration::from_secs(2), "looked at again soon");
        assert_eq!(operation, None, "planned again from the cluster as it is");
        assert_eq!(input.degraded, None, "no person is needed");
        let (reason, message) = input.progressing.clone().unwrap_or_default();
        assert_eq!(reason, "Waiting");
        assert!(message.contains("the operator waits"), "{message}");

        let mut input = StatusInput::default();
        refused(refusal(Remedy::Delete), &mut input, &publish).await;
        let (reason, message) = input.degraded.clone().unwrap_or_default();
        assert_eq!(reason, "OperationRefused");
        assert!(message.contains("delete the RedisCluster"), "{message}");
        let events = events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(events.len(), 2);
        assert!(
            !events[0].0 && events[1].0,
            "only the real refusal is a warning"
        );
        for (_, _, note) in &events {
            assert!(!note.contains("cinnabar "), "a local command: {note}");
        }
    }
}
