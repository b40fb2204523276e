//! Backups and restores on Kubernetes (`spec.backup`, `spec.restoreFrom`): the objects that run
//! `cinnabar backup` and `cinnabar restore` from the operator's image, and what their pods report,
//! read back into `status.backup`, `status.restore` and the `BackedUp` / `Restored` conditions.
//!
//! Names for a cluster `NAME`: CronJob `NAME-backup`, Deployment `NAME-backup-continuous` (with
//! `backup.continuous`), Job `NAME-backup-before-scale-in-GENERATION` (before a scale-in removes a
//! shard), Job `NAME-restore`.
//!
//! Decisions:
//! - **The CLI does the work**: the pods run the same `cinnabar backup` / `cinnabar restore` a
//!   person runs locally; the operator links neither the backup crate nor object storage. The
//!   source is the headless Service `NAME-nodes` (any node finds the rest of the cluster), the
//!   password the mounted `NAME-auth` file, as for the sync.
//! - **Credentials never in arguments**: `credentialsSecret` is the pods' `envFrom`, so its keys
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or
//!   `CINNABAR_S3_CREDENTIALS_FILE` pointing elsewhere) become their environment; only the
//!   endpoint and region, which are not secret, are plain `env` values written by the operator.
//! - **The report is the termination message**: `--report-file /dev/termination-log` makes the
//!   CLI write one JSON line (name, time, keys, bytes) where the kubelet copies it into the pod
//!   status; with `FallbackToLogsOnError` a failed pod's message is the end of its log, whose last
//!   line names the error. The operator reads pod statuses only: no exec, no log API, no store
//!   access.
//! - **Job pods never restart in place** (`restartPolicy: Never`): every attempt is a pod of its
//!   own with its own message. A scheduled backup is tried 3 times (`backoffLimit: 2`); one at a
//!   time (`concurrencyPolicy: Forbid`): two backups of one cluster would only compete for the
//!   replicas they read from.
//! - **A restore runs exactly once** (`backoffLimit: 0`, created with a plain create, never
//!   applied): a second attempt after a partial one would meet a non-empty cluster, and writing
//!   over part of a dataset is a decision for a person. The phase in `status.restore` is the
//!   memory: `Running` is written right after the create, and a create that meets an existing
//!   Job (a status write lost) adopts it. Once started, the restore is the cluster's only one:
//!   a `restoreFrom` edited afterwards starts nothing.
//! - **Clients wait for the restore**: the proxy runs 0 replicas from the start until the
//!   restore succeeded, so no client reads a half-restored dataset or writes keys the restore
//!   would then overwrite (or that would make the restore refuse a non-empty target). After a
//!   failed restore the proxy stays down until `restoreFrom` is removed from the spec: serving
//!   part of a dataset is the user's call.
//! - **A backup before a scale-in**: a scale that removes shards starts only after a Job from
//!   the scheduled backup's template succeeded, one per `metadata.generation` (a spec edited
//!   again gets a fresh backup, a failed one is not retried by itself). Shards being drained is
//!   when a mistake costs data; a backup taken just before makes it recoverable.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::crd::{
    BackupRecord, BackupSpec, BackupState, RedisCluster, RestoreFrom, RestorePhase, RestoreState,
};
use crate::objects::{AUTH_PASSWORD_FILE, BuildOptions, PASSWORD_KEY, labels};
use crate::pods::REDIS_PORT;

/// Where the CLI writes its one-line JSON report; the kubelet copies it into the pod status.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Component label of backup Jobs and their pods (scheduled and before a scale-in).
pub const BACKUP_COMPONENT: &str = "backup";
/// Component label of the continuous archive.
pub const CONTINUOUS_COMPONENT: &str = "backup-continuous";
/// Component label of the restore Job and its pod.
pub const RESTORE_COMPONENT: &str = "restore";

/// The CronJob of cluster `cluster`.
pub fn backup_name(cluster: &str) -> String {
    format!("{cluster}-backup")
}

/// The continuous archive's Deployment.
pub fn continuous_name(cluster: &str) -> String {
    format!("{cluster}-backup-continuous")
}

/// The restore Job.
pub fn restore_name(cluster: &str) -> String {
    format!("{cluster}-restore")
}

/// The backup Job a scale-in of spec generation `generation` waits for.
pub fn scale_in_backup_name(cluster: &str, generation: i64) -> String {
    format!("{cluster}-backup-before-scale-in-{generation}")
}

fn source(cluster: &str, namespace: &str) -> String {
    format!("{cluster}-nodes.{namespace}.svc:{REDIS_PORT}")
}

/// Arguments of a one-off backup (after the image's `cinnabar` entry point).
pub fn backup_args(cluster: &str, namespace: &str, spec: &BackupSpec) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "backup".into(),
        "--from".into(),
        source(cluster, namespace),
        "--from-password-file".into(),
        AUTH_PASSWORD_FILE.into(),
        "--to".into(),
        spec.url.clone(),
        "--cluster".into(),
        cluster.into(),
        "--keep".into(),
        spec.keep.to_string(),
    ];
    if let Some(days) = spec.keep_days {
        args.extend(["--keep-days".into(), days.to_string()]);
    }
    args.extend(["--report-file".into(), TERMINATION_LOG.into()]);
    args
}

/// Arguments of the continuous archive.
pub fn continuous_args(cluster: &str, namespace: &str, spec: &BackupSpec) -> Vec<String> {
    vec![
        "backup".into(),
        "--from".into(),
        source(cluster, namespace),
        "--from-password-file".into(),
        AUTH_PASSWORD_FILE.into(),
        "--to".into(),
        spec.url.clone(),
        "--cluster".into(),
        cluster.into(),
        "--continuous".into(),
    ]
}

/// Arguments of the restore.
pub fn restore_args(cluster: &str, namespace: &str, from: &RestoreFrom) -> Vec<String> {
    let mut args: Vec<String> = vec!["restore".into(), "--from".into(), from.url.clone()];
    if let Some(backup) = &from.backup {
        args.extend(["--backup".into(), backup.clone()]);
    }
    if let Some(at) = &from.at {
        args.extend(["--at".into(), at.clone()]);
    }
    if let Some(name) = &from.cluster {
        args.extend(["--cluster".into(), name.clone()]);
    }
    args.extend([
        "--to".into(),
        source(cluster, namespace),
        "--to-password-file".into(),
        AUTH_PASSWORD_FILE.into(),
        "--report-file".into(),
        TERMINATION_LOG.into(),
    ]);
    args
}

/// What a pod needs to reach the store.
struct StoreAccess<'a> {
    credentials_secret: Option<&'a str>,
    endpoint: Option<&'a str>,
    region: Option<&'a str>,
}

impl<'a> From<&'a BackupSpec> for StoreAccess<'a> {
    fn from(spec: &'a BackupSpec) -> Self {
        Self {
            credentials_secret: spec.credentials_secret.as_deref(),
            endpoint: spec.endpoint.as_deref(),
            region: spec.region.as_deref(),
        }
    }
}

impl<'a> From<&'a RestoreFrom> for StoreAccess<'a> {
    fn from(from: &'a RestoreFrom) -> Self {
        Self {
            credentials_secret: from.credentials_secret.as_deref(),
            endpoint: from.endpoint.as_deref(),
            region: from.region.as_deref(),
        }
    }
}

/// The pod spec of every backup and restore pod: one container running the CLI with `args`.
fn pod_spec(
    cluster: &str,
    container: &str,
    args: Vec<String>,
    store: &StoreAccess<'_>,
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
    options: &BuildOptions,
    restart_policy: &str,
) -> Value {
    let mut env = Vec::new();
    if let Some(endpoint) = store.endpoint {
        env.push(json!({"name": "AWS_ENDPOINT_URL", "value": endpoint}));
    }
    if let Some(region) = store.region {
        env.push(json!({"name": "AWS_REGION", "value": region}));
    }
    let env_from: Vec<Value> = store
        .credentials_secret
        .map(|name| json!({"secretRef": {"name": name}}))
        .into_iter()
        .collect();
    json!({
        "restartPolicy": restart_policy,
        "volumes": [
            {"name": "auth", "secret": {"secretName": format!("{cluster}-auth"), "items": [{"key": PASSWORD_KEY, "path": "password"}]}},
        ],
        "containers": [{
            "name": container,
            "image": options.proxy_image,
            "args": args,
            "env": env,
            "envFrom": env_from,
            // Success: the report the CLI wrote; failure: the end of the log (the error).
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": resources.cloned().unwrap_or_default(),
            "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
            "volumeMounts": [
                {"name": "auth", "mountPath": "/etc/cinnabar/auth", "readOnly": true},
            ],
        }],
    })
}

fn meta(cluster: &RedisCluster, name: &str, component: &str) -> Value {
    let owner = cluster
        .controller_owner_ref(&())
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
    json!({
        "name": name,
        "namespace": cluster.namespace().unwrap_or_else(|| "default".to_owned()),
        "labels": labels(&cluster.name_any(), component),
        "ownerReferences": owner.iter().collect::<Vec<_>>(),
    })
}

fn backup_job_spec(cluster: &RedisCluster, spec: &BackupSpec, options: &BuildOptions) -> Value {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".to_owned());
    json!({
        "backoffLimit": 2,
        "template": {
            "metadata": {"labels": labels(&name, BACKUP_COMPONENT)},
            "spec": pod_spec(
                &name,
                "backup",
                backup_args(&name, &namespace, spec),
                &StoreAccess::from(spec),
                spec.resources.as_ref(),
                options,
                "Never",
            ),
        },
    })
}

/// The backup objects of `spec.backup`.
#[derive(Debug, Clone)]
pub struct BackupObjects {
    /// `NAME-backup`.
    pub cron_job: CronJob,
    /// `NAME-backup-continuous`, with `continuous: true`.
    pub continuous: Option<Deployment>,
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, crate::validate::SpecError> {
    serde_json::from_value(value).map_err(|e| crate::validate::SpecError {
        reason: "InternalObject".into(),
        message: format!("a backup object built from the spec does not parse: {e}"),
    })
}

/// The CronJob and, with `continuous`, the archive's Deployment; `None` without `spec.backup`.
///
/// # Errors
/// Only if an object does not parse, which would be a bug.
pub fn backup_objects(
    cluster: &RedisCluster,
    options: &BuildOptions,
) -> Result<Option<BackupObjects>, crate::validate::SpecError> {
    let Some(spec) = &cluster.spec.backup else {
        return Ok(None);
    };
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".to_owned());
    let cron_job = typed(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": meta(cluster, &backup_name(&name), BACKUP_COMPONENT),
        "spec": {
            "schedule": spec.schedule,
            "concurrencyPolicy": "Forbid",
            // A backup missed by more than this (the controller was down) is skipped, not
            // caught up in a burst.
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(&name, BACKUP_COMPONENT)},
                "spec": backup_job_spec(cluster, spec, options),
            },
        },
    }))?;
    let continuous = spec
        .continuous
        .then(|| {
            typed(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": meta(cluster, &continuous_name(&name), CONTINUOUS_COMPONENT),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": CONTINUOUS_COMPONENT}},
                    // Never two archives of one cluster: their segments would interleave.
                    "strategy": {"type": "Recreate"},
                    "template": {
                        "metadata": {"labels": labels(&name, CONTINUOUS_COMPONENT)},
                        "spec": pod_spec(
                            &name,
                            "archive",
                            continuous_args(&name, &namespace, spec),
                            &StoreAccess::from(spec),
                            spec.resources.as_ref(),
                            options,
                            "Always",
                        ),
                    },
                },
            }))
        })
        .transpose()?;
    Ok(Some(BackupObjects {
        cron_job,
        continuous,
    }))
}

/// The one-off backup Job a scale-in of `generation` waits for: the CronJob's template.
///
/// # Errors
/// Only if the object does not parse, which would be a bug.
pub fn scale_in_job(
    cluster: &RedisCluster,
    spec: &BackupSpec,
    generation: i64,
    options: &BuildOptions,
) -> Result<Job, crate::validate::SpecError> {
    let name = cluster.name_any();
    let mut job_spec = backup_job_spec(cluster, spec, options);
    // Kept a day for the record, then garbage-collected; the scale has long started by then.
    job_spec["ttlSecondsAfterFinished"] = json!(86_400);
    typed(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": meta(cluster, &scale_in_backup_name(&name, generation), BACKUP_COMPONENT),
        "spec": job_spec,
    }))
}

/// The restore Job of `spec.restoreFrom`.
///
/// # Errors
/// Only if the object does not parse, which would be a bug.
pub fn restore_job(
    cluster: &RedisCluster,
    from: &RestoreFrom,
    options: &BuildOptions,
) -> Result<Job, crate::validate::SpecError> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".to_owned());
    typed(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": meta(cluster, &restore_name(&name), RESTORE_COMPONENT),
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels(&name, RESTORE_COMPONENT)},
                "spec": pod_spec(
                    &name,
                    "restore",
                    restore_args(&name, &namespace, from),
                    &StoreAccess::from(from),
                    from.resources.as_ref(),
                    options,
                    "Never",
                ),
            },
        },
    }))
}

/// How a Job ended, as far as the operator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Not finished.
    Running,
    /// A pod succeeded.
    Succeeded,
    /// No more attempts: the Job's own reason (`BackoffLimitExceeded`, …).
    Failed(String),
}

/// What `job`'s status says.
pub fn job_outcome(job: &Job) -> JobOutcome {
    let status = job.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if condition("Complete").is_some() || status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobOutcome::Succeeded;
    }
    if let Some(failed) = condition("Failed") {
        let why = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return JobOutcome::Failed(if why.is_empty() {
            "the Job failed".to_owned()
        } else {
            why
        });
    }
    JobOutcome::Running
}

/// When `job` finished (or started, for ordering a Job that did not): RFC 3339 text compares
/// in time order.
fn finished_at(job: &Job) -> String {
    let status = job.status.as_ref();
    status
        .and_then(|s| s.completion_time.as_ref())
        .or_else(|| {
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
        })
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// The pods of Job `job` (the Job controller labels them with its name).
fn pods_of<'a>(job: &'a str, pods: &'a [Pod]) -> impl Iterator<Item = &'a Pod> + 'a {
    pods.iter().filter(move |p| {
        let labels = p.metadata.labels.as_ref();
        labels.is_some_and(|l| {
            l.get("batch.kubernetes.io/job-name").map(String::as_str) == Some(job)
                || l.get("job-name").map(String::as_str) == Some(job)
        })
    })
}

/// The termination message of the Job's pod that ended with `success` (exit 0 or not), newest
/// first.
fn termination_message(job: &str, pods: &[Pod], success: bool) -> Option<String> {
    let mut found: Vec<(String, String)> = pods_of(job, pods)
        .flat_map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .filter(|t| (t.exit_code == 0) == success)
        .map(|t| {
            (
                t.finished_at
                    .as_ref()
                    .map(|f| f.0.to_string())
                    .unwrap_or_default(),
                t.message
                    .clone()
                    .or_else(|| t.reason.clone())
                    .unwrap_or_else(|| format!("exited with code {}", t.exit_code)),
            )
        })
        .collect();
    found.sort();
    found.pop().map(|(_, message)| message)
}

/// The last non-empty line of a failed pod's message (its log's end: the error).
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_owned()
}

/// The report `cinnabar backup --report-file` writes: one JSON object.
pub fn parse_backup_report(message: &str, job: &str) -> Option<BackupRecord> {
    let value: Value = serde_json::from_str(message.trim()).ok()?;
    Some(BackupRecord {
        name: value["name"].as_str()?.to_owned(),
        taken_at: value["taken_at"].as_str().unwrap_or_default().to_owned(),
        bytes: value["bytes"].as_u64().unwrap_or(0),
        keys: value["keys"].as_u64().unwrap_or(0),
        job: job.to_owned(),
    })
}

/// `status.backup` from the backup Jobs and their pods; `previous` keeps the last success once
/// its Job is gone (the history limits delete old Jobs).
pub fn backup_state(
    previous: Option<&BackupState>,
    continuous: bool,
    jobs: &[Job],
    pods: &[Pod],
) -> BackupState {
    let mut state = previous.cloned().unwrap_or_default();
    state.continuous = continuous;
    let mut finished: Vec<(String, &Job, JobOutcome)> = jobs
        .iter()
        .map(|j| (finished_at(j), j, job_outcome(j)))
        .filter(|(_, _, outcome)| *outcome != JobOutcome::Running)
        .collect();
    finished.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.name_any().cmp(&b.1.name_any()))
    });
    if let Some((at, job, _)) = finished
        .iter()
        .rev()
        .find(|(_, _, outcome)| *outcome == JobOutcome::Succeeded)
    {
        let job_name = job.name_any();
        let known = state.last.as_ref().is_some_and(|l| l.job == job_name);
        if !known {
            // A report that cannot be read (the pod already gone) still records the success.
            state.last = Some(
                termination_message(&job_name, pods, true)
                    .and_then(|m| parse_backup_report(&m, &job_name))
                    .unwrap_or_else(|| BackupRecord {
                        name: job_name.clone(),
                        taken_at: at.clone(),
                        job: job_name.clone(),
                        ..BackupRecord::default()
                    }),
            );
        }
    }
    if let Some((_, job, outcome)) = finished.last() {
        let job_name = job.name_any();
        state.last_job = Some(job_name.clone());
        match outcome {
            JobOutcome::Failed(reason) => {
                state.last_job_failed = true;
                let detail = termination_message(&job_name, pods, false)
                    .map(|m| last_line(&m))
                    .unwrap_or_else(|| reason.clone());
                state.last_error = Some(format!("Job {job_name}: {detail}"));
            }
            _ => {
                state.last_job_failed = false;
                state.last_error = None;
            }
        }
    }
    state
}

/// The `BackedUp` condition: `(status, reason, message)`.
pub fn backed_up(state: &BackupState, schedule: &str) -> (bool, &'static str, String) {
    let last = state.last.as_ref().map(|l| {
        format!(
            "backup {} taken at {}: {} keys, {} bytes",
            l.name, l.taken_at, l.keys, l.bytes
        )
    });
    if state.last_job_failed {
        let error = state
            .last_error
            .clone()
            .unwrap_or_else(|| "the newest backup Job failed".to_owned());
        let message = match last {
            Some(last) => format!("{error}; the last good one is {last}"),
            None => format!("{error}; no backup has succeeded yet"),
        };
        return (false, "BackupFailed", message);
    }
    match last {
        Some(last) => (true, "BackupSucceeded", last),
        None => (
            false,
            "NoBackupYet",
            format!("no backup has finished yet (schedule `{schedule}`)"),
        ),
    }
}

/// The archive's pod state into `state`: running, or failing with the end of its log.
pub fn archive_facts(state: &mut BackupState, pods: &[Pod]) {
    let facts = crate::sync::pod_facts(pods);
    state.archive_running = !facts.crash_looping
        && pods.iter().any(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        });
    state.archive_error = facts.crash_looping.then(|| {
        facts
            .last_error
            .unwrap_or_else(|| "the archive pod keeps failing".to_owned())
    });
}

/// The `Archiving` condition (with `backup.continuous`): `(status, reason, message)`.
pub fn archiving(state: &BackupState) -> (bool, &'static str, String) {
    if let Some(error) = &state.archive_error {
        return (
            false,
            "ArchiveFailed",
            format!(
                "the continuous archive keeps failing: {error}; restoreFrom.at cannot reach                  past its last uploaded segment"
            ),
        );
    }
    if state.archive_running {
        (
            true,
            "Archiving",
            "every shard's writes are archived continuously (restoreFrom.at can reach any              moment since the archive's base backup)"
                .to_owned(),
        )
    } else {
        (
            false,
            "ArchiveStarting",
            "the continuous archive's pod is not running yet".to_owned(),
        )
    }
}

/// The restore report: the CLI's `RestoreReport` without its shard list.
pub fn apply_restore_report(state: &mut RestoreState, message: &str) {
    let Ok(value) = serde_json::from_str::<Value>(message.trim()) else {
        return;
    };
    state.backup = value["backup"].as_str().map(str::to_owned);
    state.keys = value["keys"].as_u64();
    state.restored_to = value["restored_to"].as_str().map(str::to_owned);
}

/// The restore's state once its Job is looked at (phase `Running` before).
pub fn restore_progress(state: &RestoreState, job: Option<&Job>, pods: &[Pod]) -> RestoreState {
    let mut next = state.clone();
    let Some(job) = job else {
        next.phase = RestorePhase::Failed;
        next.last_error = Some(format!(
            "the restore Job {} disappeared before it finished; remove restoreFrom to serve \
             clients, or recreate the cluster to restore again",
            state.job
        ));
        return next;
    };
    match job_outcome(job) {
        JobOutcome::Running => {}
        JobOutcome::Succeeded => {
            next.phase = RestorePhase::Succeeded;
            next.last_error = None;
            if let Some(message) = termination_message(&state.job, pods, true) {
                apply_restore_report(&mut next, &message);
            }
        }
        JobOutcome::Failed(reason) => {
            next.phase = RestorePhase::Failed;
            let detail = termination_message(&state.job, pods, false)
                .map(|m| last_line(&m))
                .unwrap_or(reason);
            next.last_error = Some(detail);
        }
    }
    next
}

/// The `Restored` condition: `(status, reason, message)`.
pub fn restored(state: &RestoreState) -> (bool, &'static str, String) {
    match state.phase {
        RestorePhase::Pending => (
            false,
            "RestorePending",
            format!(
                "the restore from {} starts once the cluster serves every slot; the proxy \
                 serves no client until it is done",
                state.url
            ),
        ),
        RestorePhase::Running => (
            false,
            "Restoring",
            format!(
                "Job {} restores from {}; the proxy serves no client until it is done",
                state.job, state.url
            ),
        ),
        RestorePhase::Succeeded => (
            true,
            "RestoreSucceeded",
            format!(
                "restored backup {} ({} keys) to {}",
                state.backup.as_deref().unwrap_or("(unreported)"),
                state.keys.unwrap_or(0),
                state.restored_to.as_deref().unwrap_or("(unreported)")
            ),
        ),
        RestorePhase::Failed => (
            false,
            "RestoreFailed",
            format!(
                "the restore from {} failed: {}; it is not retried (the cluster may hold part \
                 of the data): the proxy stays down until restoreFrom is removed from the spec, \
                 or delete and recreate the cluster to restore again",
                state.url,
                state.last_error.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    }
}

/// Whether the proxy must not serve clients yet: a restore is configured and has not succeeded.
pub fn holds_clients(restore_from: Option<&RestoreFrom>, state: Option<&RestoreState>) -> bool {
    // The state, not the spec, says whether the cluster's one restore is done (a `restoreFrom`
    // edited after the restore started changes nothing).
    restore_from.is_some() && state.is_none_or(|s| s.phase != RestorePhase::Succeeded)
}

/// What a scale-in does about its backup Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleInGate {
    /// No Job yet: create it, then wait.
    Start,
    /// The Job runs.
    Wait(String),
    /// The Job succeeded: the scale-in may start.
    Go,
    /// The Job failed: the scale-in is refused.
    Refused(String),
}

/// The gate for a scale-in from its backup Job `name` (absent or as read).
pub fn scale_in_gate(name: &str, job: Option<&Job>, pods: &[Pod]) -> ScaleInGate {
    let Some(job) = job else {
        return ScaleInGate::Start;
    };
    match job_outcome(job) {
        JobOutcome::Running => ScaleInGate::Wait(format!(
            "waiting for backup Job {name} to finish before shards are removed"
        )),
        JobOutcome::Succeeded => ScaleInGate::Go,
        JobOutcome::Failed(reason) => {
            let detail = termination_message(name, pods, false)
                .map(|m| last_line(&m))
                .unwrap_or(reason);
            ScaleInGate::Refused(format!(
                "the scale-in is refused: the backup taken before removing shards failed (Job \
                 {name}: {detail}); fix the backup settings in spec.backup and edit the spec \
                 again (a new generation takes a new backup), or remove spec.backup to scale \
                 in without one"
            ))
        }
    }
}

/// Labels selecting the Jobs (and their pods) of `component` of `cluster`.
pub fn selector(cluster: &str, component: &str) -> String {
    format!("app.kubernetes.io/instance={cluster},app.kubernetes.io/component={component}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(value: Value) -> Job {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pod(job: &str, exit: i32, message: &str, finished: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-x"), "labels": {"job-name": job}},
            "status": {"containerStatuses": [{
                "name": "backup", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "message": message, "finishedAt": finished}},
            }]},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn done(name: &str, at: &str, ok: bool) -> Job {
        let condition = if ok {
            json!({"type": "Complete", "status": "True"})
        } else {
            json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": at})
        };
        let mut status = json!({"conditions": [condition]});
        if ok {
            status["completionTime"] = json!(at);
            status["succeeded"] = json!(1);
        }
        job(json!({"metadata": {"name": name, "creationTimestamp": at}, "status": status}))
    }

    #[test]
    fn the_newest_success_fills_the_record_and_a_later_failure_turns_the_condition() {
        let report = r#"{"name":"c-20261205T100000Z","cluster":"c","taken_at":"2026-12-05T10:00:00Z","keys":42,"bytes":4096,"shards":3}"#;
        let jobs = [done("c-backup-1", "2026-12-05T10:00:05Z", true)];
        let pods = [pod("c-backup-1", 0, report, "2026-12-05T10:00:05Z")];
        let state = backup_state(None, false, &jobs, &pods);
        let last = state.last.clone().unwrap_or_default();
        assert_eq!(last.name, "c-20261205T100000Z");
        assert_eq!((last.keys, last.bytes), (42, 4096));
        assert_eq!(last.job, "c-backup-1");
        assert!(backed_up(&state, "0 * * * *").0);

        let jobs = [
            done("c-backup-1", "2026-12-05T10:00:05Z", true),
            done("c-backup-2", "2026-12-05T11:00:09Z", false),
        ];
        let pods = [
            pod("c-backup-1", 0, report, "2026-12-05T10:00:05Z"),
            pod(
                "c-backup-2",
                1,
                "starting\nError: the store refused the credentials",
                "2026-12-05T11:00:09Z",
            ),
        ];
        let failed = backup_state(Some(&state), false, &jobs, &pods);
        assert_eq!(failed.last, state.last, "the last good backup is kept");
        let (ok, reason, message) = backed_up(&failed, "0 * * * *");
        assert!(!ok);
        assert_eq!(reason, "BackupFailed");
        assert!(
            message.contains("refused the credentials") && message.contains("c-20261205T100000Z"),
            "{message}"
        );
        // The Jobs go (history limits): the record stays.
        let kept = backup_state(Some(&failed), false, &[], &[]);
        assert_eq!(kept, failed);
    }

    #[test]
    fn a_restore_reads_its_report_and_a_failure_its_error() {
        let state = RestoreState {
            phase: RestorePhase::Running,
            url: "s3://b/p".into(),
            job: "c-restore".into(),
            ..RestoreState::default()
        };
        let running = job(json!({"metadata": {"name": "c-restore"}, "status": {"active": 1}}));
        assert_eq!(restore_progress(&state, Some(&running), &[]), state);
        let report = r#"{"backup":"c-1","cluster":"c","keys":7,"bytes":10,"commands":0,"elapsed_ms":3,"restored_to":"2026-12-05T10:00:00Z"}"#;
        let ok = restore_progress(
            &state,
            Some(&done("c-restore", "2026-12-05T12:00:00Z", true)),
            &[pod("c-restore", 0, report, "2026-12-05T12:00:00Z")],
        );
        assert_eq!(ok.phase, RestorePhase::Succeeded);
        assert_eq!(ok.backup.as_deref(), Some("c-1"));
        assert_eq!(ok.keys, Some(7));
        assert!(restored(&ok).0);
        let failed = restore_progress(
            &state,
            Some(&done("c-restore", "2026-12-05T12:00:00Z", false)),
            &[pod(
                "c-restore",
                1,
                "Error: the target holds 3 keys",
                "2026-12-05T12:00:00Z",
            )],
        );
        assert_eq!(failed.phase, RestorePhase::Failed);
        assert_eq!(
            failed.last_error.as_deref(),
            Some("Error: the target holds 3 keys")
        );
        assert_eq!(restored(&failed).1, "RestoreFailed");
    }

    #[test]
    fn only_a_restore_configured_and_not_done_holds_the_clients() {
        let from: RestoreFrom =
            serde_json::from_value(json!({"url": "s3://b/p"})).unwrap_or_else(|e| panic!("{e}"));
        assert!(!holds_clients(None, None));
        assert!(holds_clients(Some(&from), None));
        let mut state = RestoreState {
            url: "s3://b/p".into(),
            phase: RestorePhase::Succeeded,
            ..RestoreState::default()
        };
        assert!(!holds_clients(Some(&from), Some(&state)));
        state.phase = RestorePhase::Failed;
        assert!(holds_clients(Some(&from), Some(&state)));
    }

    #[test]
    fn the_arguments_carry_no_secret_and_name_the_cluster() {
        let spec: BackupSpec = serde_json::from_value(
            json!({"url": "s3://b/p", "keepDays": 14, "credentialsSecret": "s3"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let args = backup_args("c", "shop", &spec).join(" ");
        assert_eq!(
            args,
            "backup --from c-nodes.shop.svc:6379 --from-password-file /etc/cinnabar/auth/password \
             --to s3://b/p --cluster c --keep 7 --keep-days 14 --report-file /dev/termination-log"
        );
        assert_eq!(spec.schedule, "0 * * * *");
    }
}
