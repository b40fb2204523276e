//! Backups and restores (`spec.backup`, `spec.restoreFrom`) against the in-memory API server:
//! the objects that appear and go, the status read back from Jobs and their pods' termination
//! messages (the test plays the Job controller and the kubelet), the restore run once after
//! every slot is served, and a scale-in waiting for its backup. Real `redis-server` processes
//! stand in for the Redis pods.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use cinnabar_operator::RedisCluster;
use cinnabar_operator::reconcile::{Context, reconcile};
use cinnabar_testkit::{ServerOptions, TestServer};
use serde_json::{Value, json};
use support::{FakeApi, redis_pod};

const CLUSTER: &str = "/apis/cinnabar.io/v1alpha1/namespaces/shop/redisclusters/c";
const CRON_JOB: &str = "/apis/batch/v1/namespaces/shop/cronjobs/c-backup";
const CONTINUOUS: &str = "/apis/apps/v1/namespaces/shop/deployments/c-backup-continuous";
const PROXY: &str = "/apis/apps/v1/namespaces/shop/deployments/c-proxy";
const JOBS: &str = "/apis/batch/v1/namespaces/shop/jobs";
const RESTORE_JOB: &str = "/apis/batch/v1/namespaces/shop/jobs/c-restore";

fn context(api: &FakeApi) -> Arc<Context> {
    support::test_context(api, Arc::new(support::NoMetrics))
}

fn store_cluster(api: &FakeApi, spec: Value) {
    api.put(
        CLUSTER,
        json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
               "metadata": {"name": "c", "namespace": "shop", "uid": "rc-uid", "generation": 1},
               "spec": spec}),
    );
}

/// Changes the spec as a user would: `edit` on it, and a new generation.
fn edit_spec(api: &FakeApi, edit: impl FnOnce(&mut Value)) {
    let mut stored = api.get(CLUSTER).unwrap();
    edit(&mut stored["spec"]);
    let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    stored["metadata"]["generation"] = json!(generation);
    api.put(CLUSTER, stored);
}

fn cluster(api: &FakeApi) -> Arc<RedisCluster> {
    support::resource(api, CLUSTER)
}

fn status(api: &FakeApi) -> Value {
    api.get(CLUSTER).unwrap()["status"].clone()
}

/// `(status, reason, message, lastTransitionTime)` of condition `type_`, if set.
fn condition(api: &FakeApi, type_: &str) -> Option<(String, String, String, String)> {
    let found = status(api)["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    let text = |key: &str| found[key].as_str().unwrap_or_default().to_owned();
    Some((
        text("status"),
        text("reason"),
        text("message"),
        text("lastTransitionTime"),
    ))
}

fn password(api: &FakeApi) -> String {
    api.get("/api/v1/namespaces/shop/secrets/c-auth").unwrap()["stringData"]["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Plays the kubelet: one real server per Redis pod, with the operator's password.
fn start_pods(api: &FakeApi, shards: u32, per_shard: u32) -> Vec<TestServer> {
    let password = password(api);
    let options = ServerOptions {
        cluster: true,
        extra: vec![
            ("requirepass".into(), password.clone()),
            ("masterauth".into(), password),
        ],
        ..ServerOptions::default()
    };
    let servers = TestServer::start_many((shards * per_shard) as usize, &options);
    for shard in 0..shards {
        for ordinal in 0..per_shard {
            let server = &servers[(shard * per_shard + ordinal) as usize];
            let pod = redis_pod(
                "c",
                shard,
                ordinal,
                "127.0.0.1",
                server.port(),
                &format!("worker-{ordinal}"),
                "rev-1",
            );
            api.put(
                &format!("/api/v1/namespaces/shop/pods/c-shard-{shard}-{ordinal}"),
                pod,
            );
        }
    }
    servers
}

/// Reconciles until Ready with `shards` shards.
async fn reconcile_until_ready(api: &FakeApi, ctx: &Arc<Context>, shards: usize, rounds: usize) {
    for _ in 0..rounds {
        reconcile(cluster(api), Arc::clone(ctx)).await.unwrap();
        let ready = condition(api, "Ready").is_some_and(|c| c.0 == "True");
        if ready && status(api)["shards"].as_array().map(Vec::len) == Some(shards) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not ready after {rounds} reconciles: {:#}", status(api));
}

/// Plays the Job controller and the kubelet: Job `name` finished (`ok` or failed) at `at`,
/// its pod terminated with `message` as its termination message.
fn finish_job(api: &FakeApi, name: &str, component: &str, ok: bool, at: &str, message: &str) {
    let path = format!("{JOBS}/{name}");
    let mut job = api.get(&path).unwrap_or_else(|| {
        // A Job the CronJob controller made from the template.
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": "shop", "creationTimestamp": at,
                            "labels": {"app.kubernetes.io/instance": "c", "app.kubernetes.io/component": component}}})
    });
    job["status"] = if ok {
        json!({"succeeded": 1, "completionTime": at,
               "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": at}]})
    } else {
        json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True",
               "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
               "lastTransitionTime": at}]})
    };
    api.put(&path, job);
    api.put(
        &format!("/api/v1/namespaces/shop/pods/{name}-x7k2p"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": format!("{name}-x7k2p"), "namespace": "shop",
                            "labels": {"app.kubernetes.io/instance": "c", "app.kubernetes.io/component": component,
                                       "job-name": name, "batch.kubernetes.io/job-name": name}},
               "status": {"phase": if ok { "Succeeded" } else { "Failed" }, "containerStatuses": [{
                   "name": component, "image": "cinnabar:test", "imageID": "", "ready": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": if ok { 0 } else { 1 }, "message": message,
                                            "finishedAt": at}}}]}}),
    );
}

fn report(name: &str, at: &str, keys: u64, bytes: u64) -> String {
    json!({"name": name, "cluster": "c", "taken_at": at, "keys": keys, "bytes": bytes, "shards": 1})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_objects_follow_the_spec_and_job_reports_fill_the_status() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(
        &api,
        json!({"shards": 1, "backup": {"url": "s3://backups/redis", "credentialsSecret": "s3-creds",
               "endpoint": "http://127.0.0.1:9000", "region": "eu-west-1", "keepDays": 10,
               "continuous": true}}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();

    // The CronJob: the CLI from the operator's image, the credentials from the Secret only.
    let cron = api.get(CRON_JOB).expect("the CronJob is applied");
    assert_eq!(cron["spec"]["schedule"], "0 * * * *", "hourly by default");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "cinnabar:test");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args.join(" "),
        "backup --from c-nodes.shop.svc:6379 --from-password-file /etc/cinnabar/auth/password \
         --to s3://backups/redis --cluster c --keep 7 --keep-days 10 --report-file /dev/termination-log"
    );
    assert_eq!(
        container["envFrom"],
        json!([{"secretRef": {"name": "s3-creds"}}])
    );
    assert_eq!(
        container["env"],
        json!([{"name": "AWS_ENDPOINT_URL", "value": "http://127.0.0.1:9000"},
               {"name": "AWS_REGION", "value": "eu-west-1"}])
    );
    let archive = api.get(CONTINUOUS).expect("the continuous archive runs");
    let archive_args = archive["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(archive_args.contains("--continuous"), "{archive_args}");
    let (state, reason, _, _) = condition(&api, "BackedUp").unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("False", "NoBackupYet"));
    assert!(
        condition(&api, "Restored").is_none(),
        "no restore configured"
    );
    assert_eq!(condition(&api, "Archiving").unwrap().1, "ArchiveStarting");

    // The archive's pod runs, then keeps failing: the Archiving condition follows it.
    let archive_pod = "/api/v1/namespaces/shop/pods/c-backup-continuous-5d9f-abcde";
    let put_archive_pod = |state: Value| {
        api.put(
            archive_pod,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "c-backup-continuous-5d9f-abcde", "namespace": "shop",
                                "labels": {"app.kubernetes.io/instance": "c", "app.kubernetes.io/component": "backup-continuous"}},
                   "status": {"containerStatuses": [{"name": "archive", "image": "cinnabar:test", "imageID": "",
                              "ready": true, "restartCount": 0, "state": state}]}}),
        );
    };
    put_archive_pod(json!({"running": {}}));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(condition(&api, "Archiving").unwrap().0, "True");
    put_archive_pod(json!({"terminated": {"exitCode": 1,
        "message": "archiving\nerror: the bucket backups does not exist"}}));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let (state, reason, message, _) = condition(&api, "Archiving").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("False", "ArchiveFailed")
    );
    assert!(
        message.contains("bucket backups does not exist"),
        "{message}"
    );
    assert!(!status(&api)["backup"]["archiveError"].is_null());
    api.remove(archive_pod);

    // Continuous off: its Deployment goes, the CronJob stays.
    edit_spec(&api, |spec| spec["backup"]["continuous"] = json!(false));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert!(api.get(CONTINUOUS).is_none());
    assert!(api.get(CRON_JOB).is_some());
    assert!(condition(&api, "Archiving").is_none());
    assert!(status(&api)["backup"]["archiveError"].is_null());

    // A scheduled backup succeeds: its report becomes status.backup.last.
    finish_job(
        &api,
        "c-backup-29410560",
        "backup",
        true,
        "2026-12-05T10:00:07Z",
        &report("c-20261205T100000Z", "2026-12-05T10:00:00Z", 1500, 65536),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let last = status(&api)["backup"]["last"].clone();
    assert_eq!(
        last,
        json!({"name": "c-20261205T100000Z", "takenAt": "2026-12-05T10:00:00Z",
               "bytes": 65536, "keys": 1500, "job": "c-backup-29410560"})
    );
    let (state, reason, message, since) = condition(&api, "BackedUp").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "BackupSucceeded")
    );
    assert!(message.contains("c-20261205T100000Z"), "{message}");

    // Nothing new: the condition does not transition again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(condition(&api, "BackedUp").unwrap().3, since);

    // The next one fails: False with the error from the pod's log; the last good one is kept.
    finish_job(
        &api,
        "c-backup-29410620",
        "backup",
        false,
        "2026-12-05T11:00:09Z",
        "backup of c-nodes.shop.svc:6379 to s3://backups/redis\nError: the store refused the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or CINNABAR_S3_CREDENTIALS_FILE)\n",
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let (state, reason, message, failed_since) = condition(&api, "BackedUp").unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("False", "BackupFailed"));
    assert!(
        message.contains("refused the credentials") && message.contains("c-20261205T100000Z"),
        "{message}"
    );
    assert_ne!(failed_since, since, "a real transition");
    assert_eq!(status(&api)["backup"]["last"], last);
    assert_eq!(status(&api)["backup"]["lastJobFailed"], true);

    // spec.backup removed: the CronJob and the backup Jobs go, and the status forgets them.
    edit_spec(&api, |spec| {
        spec.as_object_mut().unwrap().remove("backup");
    });
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert!(api.get(CRON_JOB).is_none());
    assert!(
        api.paths(&format!("{JOBS}/")).is_empty(),
        "{:?}",
        api.paths(JOBS)
    );
    assert!(status(&api)["backup"].is_null(), "{:#}", status(&api));
    assert!(condition(&api, "BackedUp").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_runs_once_after_every_slot_is_served_and_holds_the_clients_until_done() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(
        &api,
        json!({"shards": 2, "replicasPerShard": 0,
               "restoreFrom": {"url": "s3://backups/redis", "credentialsSecret": "s3-creds",
                               "at": "2026-12-05T10:30:00Z"}}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        api.get(PROXY).unwrap()["spec"]["replicas"],
        0,
        "no client before the restore"
    );
    assert!(api.get(RESTORE_JOB).is_none());
    assert_eq!(status(&api)["restore"]["phase"], "Pending");
    let (state, reason, _, _) = condition(&api, "Restored").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("False", "RestorePending")
    );

    let _servers = start_pods(&api, 2, 1);
    // Reconcile until the Job appears: it must not before the status reported every slot.
    let mut created = false;
    for _ in 0..20 {
        let covered_before = condition(&api, "SlotsCovered").is_some_and(|c| c.0 == "True");
        reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
        if api.get(RESTORE_JOB).is_some() {
            let covered_now = condition(&api, "SlotsCovered").is_some_and(|c| c.0 == "True");
            assert!(
                covered_before || covered_now,
                "the restore started before every slot was served"
            );
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(created, "no restore Job: {:#}", status(&api));
    let job = api.get(RESTORE_JOB).unwrap();
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("\"--at\",\"2026-12-05T10:30:00Z\"")
            && args.contains("\"--to\",\"c-nodes.shop.svc:6379\"")
            && args.contains("\"--to-password-file\""),
        "{args}"
    );
    assert_eq!(job["spec"]["backoffLimit"], 0, "one attempt");
    assert_eq!(status(&api)["restore"]["phase"], "Running");

    // More reconciles, and a status write that was lost: still one Job, adopted.
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let mut stored = api.get(CLUSTER).unwrap();
    stored["status"]["restore"]["phase"] = json!("Pending");
    api.put(CLUSTER, stored);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(status(&api)["restore"]["phase"], "Running");
    assert_eq!(api.paths(&format!("{JOBS}/")), [RESTORE_JOB]);
    assert_eq!(
        api.get(PROXY).unwrap()["spec"]["replicas"],
        0,
        "still no client while restoring"
    );

    finish_job(
        &api,
        "c-restore",
        "restore",
        true,
        "2026-12-05T12:00:00Z",
        r#"{"backup":"c-20261205T100000Z","cluster":"c","keys":1500,"bytes":65536,"commands":42,"elapsed_ms":900,"restored_to":"2026-12-05T10:30:00Z"}"#,
    );
    let action = reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let restore = status(&api)["restore"].clone();
    assert_eq!(restore["phase"], "Succeeded", "{restore:#}");
    // The proxy is applied again at once (a status write triggers no reconcile by itself).
    assert_eq!(
        format!("{action:?}"),
        format!(
            "{:?}",
            kube::runtime::controller::Action::requeue(Duration::from_secs(1))
        )
    );
    assert_eq!(restore["backup"], "c-20261205T100000Z");
    assert_eq!(restore["keys"], 1500);
    assert_eq!(restore["restoredTo"], "2026-12-05T10:30:00Z");
    let (state, reason, _, _) = condition(&api, "Restored").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "RestoreSucceeded")
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(
        api.get(PROXY).unwrap()["spec"]["replicas"],
        2,
        "clients are served once restored"
    );

    // The Job is cleaned up by someone, and the spec names another store: never run again.
    api.remove(RESTORE_JOB);
    edit_spec(&api, |spec| {
        spec["restoreFrom"]["url"] = json!("s3://other/redis");
    });
    for _ in 0..3 {
        reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    }
    assert!(api.get(RESTORE_JOB).is_none());
    assert_eq!(status(&api)["restore"]["phase"], "Succeeded");
    assert_eq!(status(&api)["restore"]["url"], "s3://backups/redis");
    assert_eq!(api.get(PROXY).unwrap()["spec"]["replicas"], 2);
    let creates = api
        .log()
        .iter()
        .filter(|l| l.as_str() == format!("POST {JOBS}"))
        .count();
    assert_eq!(
        creates, 2,
        "one create, one adopted after the lost status write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_is_not_retried_and_keeps_the_clients_away() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(
        &api,
        json!({"shards": 1, "restoreFrom": {"url": "s3://backups/redis", "backup": "c-1"}}),
    );
    // A restore already running (an earlier reconcile created the Job); it fails.
    let mut stored = api.get(CLUSTER).unwrap();
    stored["status"] =
        json!({"restore": {"phase": "Running", "url": "s3://backups/redis", "job": "c-restore"}});
    api.put(CLUSTER, stored);
    finish_job(
        &api,
        "c-restore",
        "restore",
        false,
        "2026-12-05T12:00:00Z",
        "restore of c-1 into c-nodes.shop.svc:6379\nError: the target is not empty: 3 keys (use --force to write into it)",
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let restore = status(&api)["restore"].clone();
    assert_eq!(restore["phase"], "Failed", "{restore:#}");
    let (state, reason, message, _) = condition(&api, "Restored").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("False", "RestoreFailed")
    );
    assert!(message.contains("not empty"), "{message}");
    assert!(
        !message.contains("cinnabar "),
        "no local command: {message}"
    );
    api.remove(RESTORE_JOB);
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert!(api.get(RESTORE_JOB).is_none(), "not retried");
    assert_eq!(api.get(PROXY).unwrap()["spec"]["replicas"], 0);

    // The user gives up on the restore: clients are served.
    edit_spec(&api, |spec| {
        spec.as_object_mut().unwrap().remove("restoreFrom");
    });
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert_eq!(api.get(PROXY).unwrap()["spec"]["replicas"], 2);
    assert!(status(&api)["restore"].is_null());
    assert!(condition(&api, "Restored").is_none());
}

/// The StatefulSet controller for a scale-in: pods beyond a StatefulSet's replica count, or of a
/// deleted StatefulSet, are stopped and their Pod objects removed.
fn statefulset_controller(
    api: FakeApi,
    servers: Vec<TestServer>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let mut servers: std::collections::BTreeMap<String, TestServer> = servers
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("c-shard-{}-{}", i / 2, i % 2), s))
        .collect();
    std::thread::spawn(move || {
        let mut removed = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let names: Vec<String> = servers.keys().cloned().collect();
            for pod in names {
                let (shard, ordinal) = pod.trim_start_matches("c-shard-").split_once('-').unwrap();
                let set = api.get(&format!(
                    "/apis/apps/v1/namespaces/shop/statefulsets/c-shard-{shard}"
                ));
                let wanted = set
                    .and_then(|s| s["spec"]["replicas"].as_u64())
                    .unwrap_or(0);
                if ordinal.parse::<u64>().unwrap() >= wanted {
                    api.remove(&format!("/api/v1/namespaces/shop/pods/{pod}"));
                    drop(servers.remove(&pod));
                    removed.push(pod);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        removed
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_in_waits_for_its_backup_and_is_refused_when_it_fails() {
    let api = FakeApi::default();
    let ctx = context(&api);
    store_cluster(
        &api,
        json!({"shards": 3, "replicasPerShard": 1,
               "backup": {"url": "s3://backups/redis", "credentialsSecret": "s3-creds"}}),
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let servers = start_pods(&api, 3, 2);
    reconcile_until_ready(&api, &ctx, 3, 10).await;

    // Fewer shards: a backup Job first, and no planner step while it runs.
    edit_spec(&api, |spec| spec["shards"] = json!(2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let controller = statefulset_controller(api.clone(), servers, Arc::clone(&stop));
    for _ in 0..3 {
        reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    }
    let job_path = format!("{JOBS}/c-backup-before-scale-in-2");
    let job = api
        .get(&job_path)
        .expect("a backup Job before the scale-in");
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("\"backup\"") && args.contains("s3://backups/redis"),
        "{args}"
    );
    let (state, reason, message, _) = condition(&api, "Progressing").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "WaitingForBackup")
    );
    assert!(message.contains("c-backup-before-scale-in-2"), "{message}");
    assert!(
        !message.contains("cinnabar "),
        "no local command: {message}"
    );
    assert!(
        status(&api)["operation"].is_null(),
        "the scale has not started"
    );
    assert_eq!(status(&api)["shards"].as_array().unwrap().len(), 3);

    // It fails: the scale-in is refused, with the reason, and nothing moved.
    finish_job(
        &api,
        "c-backup-before-scale-in-2",
        "backup",
        false,
        "2026-12-05T12:00:00Z",
        "Error: bucket backups does not exist",
    );
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    let (state, reason, message, _) = condition(&api, "Degraded").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "ScaleInBackupFailed")
    );
    assert!(
        message.contains("refused") && message.contains("bucket backups does not exist"),
        "{message}"
    );
    assert!(
        !message.contains("cinnabar "),
        "no local command: {message}"
    );
    assert!(status(&api)["operation"].is_null());
    assert_eq!(
        status(&api)["backup"]["lastJobFailed"],
        true,
        "it counts as a backup"
    );

    // The user fixes the store and edits the spec: a new backup, and once it succeeds the
    // scale-in runs to the end.
    edit_spec(&api, |spec| spec["backup"]["region"] = json!("eu-west-1"));
    reconcile(cluster(&api), Arc::clone(&ctx)).await.unwrap();
    assert!(
        api.get(&format!("{JOBS}/c-backup-before-scale-in-3"))
            .is_some()
    );
    assert!(status(&api)["operation"].is_null());
    finish_job(
        &api,
        "c-backup-before-scale-in-3",
        "backup",
        true,
        "2026-12-05T12:05:00Z",
        &report("c-20261205T120455Z", "2026-12-05T12:04:55Z", 10, 2048),
    );
    reconcile_until_ready(&api, &ctx, 2, 80).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut removed = controller.join().unwrap();
    removed.sort();
    assert_eq!(removed, ["c-shard-2-0", "c-shard-2-1"]);
    assert_eq!(status(&api)["backup"]["last"]["name"], "c-20261205T120455Z");
    assert_eq!(condition(&api, "BackedUp").unwrap().0, "True");
}
