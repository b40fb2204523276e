//! The online switch at the end of a sync (`spec.syncFrom.switch`): once the sync into this
//! cluster is in sync, every proxy of the old `RedisCluster` moves its clients here together
//! (`cinnabar_switch::switch_all`: prepare, wait for the sync's offsets, commit), then the old
//! cluster's proxies are configured from this cluster and the sync stops.
//!
//! Decisions:
//! - **The new cluster drives it**: the switch is the last step of its sync, it holds the
//!   sync's admin address and the target's masters and password, and its status carries the
//!   report. The old cluster only learns that its proxies serve another cluster (the
//!   [`SERVED_BY_ANNOTATION`] on it, `status.servedBy`), so a proxy pod that starts later is
//!   configured for the cluster its clients now write to. Its running proxies are not
//!   restarted (that would cut their clients' connections; they already serve the new
//!   cluster).
//! - **The sync stops at once after the switch**: writes now reach this cluster directly, and a
//!   sync left running would apply to it whatever still reached the old cluster's nodes
//!   directly, over newer values. It is never started again for the same source (a full
//!   resynchronisation would overwrite newer data): `syncFrom` should be removed once clients
//!   use this cluster's own Service.
//! - **Retry with backoff, and an abandoned switch is reported**: a failed attempt leaves every
//!   proxy on the old cluster (the coordinator aborts them); the next comes 10 s later, each
//!   following one twice as late (at most 5 minutes). After `maxAttempts` the switch is
//!   `Abandoned` (`Failed=True`) until the spec changes. A commit that reached only some
//!   proxies is remembered per pod: the next attempt switches only the others.
//! - **Stale proxies are replaced**: a proxy container that restarts before its pod sees the new
//!   configuration (the kubelet refreshes mounted ConfigMaps lazily) is back on the old nodes;
//!   after the switch every reconcile asks the old proxies for their `/topology` and deletes a
//!   pod that routes to none of this cluster's masters, so its replacement starts here.
//! - **Chains of moves**: proxies of a cluster moved to the old one earlier serve the old nodes
//!   too; they are switched in the same coordinated switch and re-pointed the same way.
//! - Never the proxy's code: the operator links the coordinator only (`cinnabar-switch`: HTTP to
//!   the proxies' and the sync's admin listeners), as the CLI's `cinnabar switch` does.

use std::time::Duration;

use cinnabar_switch::{ProxyAdmin, SwitchError, Target, switch_all};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::crd::{
    ProxySwitchResult, RedisCluster, SwitchPhase, SwitchSpec, SwitchState, SyncPhase, SyncState,
};
use crate::objects::{
    ADMIN_TOKEN_KEY, BuildOptions, SERVED_BY_ANNOTATION, SERVED_PASSWORD_KEY, admin_secret_name,
    build, served_by,
};

/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What to do with the switch in this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The switch's state before this reconcile's attempt (if any).
    pub state: SwitchState,
    /// Whether to attempt the switch now.
    pub attempt: bool,
}

/// Decides whether to attempt the switch now. `previous` is the last recorded state,
/// `generation` the spec's, `in_sync` whether the sync is within its bound.
pub fn plan(
    previous: Option<&SwitchState>,
    spec: &SwitchSpec,
    generation: Option<i64>,
    in_sync: bool,
    now: Timestamp,
) -> Plan {
    let mut state = previous
        .filter(|p| p.cluster == spec.cluster)
        .cloned()
        .unwrap_or_else(|| SwitchState {
            cluster: spec.cluster.clone(),
            ..SwitchState::default()
        });
    let stay = |state| Plan {
        state,
        attempt: false,
    };
    match state.phase {
        SwitchPhase::Switched => return stay(state),
        SwitchPhase::Abandoned if state.abandoned_generation == generation => return stay(state),
        SwitchPhase::Abandoned => {
            // The spec changed since the attempts ran out: a person asks for a new series.
            state = SwitchState {
                cluster: spec.cluster.clone(),
                proxies: state.proxies,
                ..SwitchState::default()
            };
        }
        SwitchPhase::Waiting | SwitchPhase::Retrying => {}
    }
    if !in_sync {
        return stay(state);
    }
    if state.next_attempt.as_ref().is_some_and(|next| next.0 > now) {
        return stay(state);
    }
    Plan {
        state,
        attempt: true,
    }
}

/// Records a failed attempt (`attempts` already counts it): `Retrying` with the next attempt's
/// time, or `Abandoned` once `spec.maxAttempts` are used.
pub fn record_failure(
    state: &mut SwitchState,
    error: String,
    spec: &SwitchSpec,
    generation: Option<i64>,
    now: Timestamp,
    first_retry: Duration,
) {
    state.last_error = Some(error);
    if state.attempts >= spec.max_attempts {
        state.phase = SwitchPhase::Abandoned;
        state.abandoned_generation = generation;
        state.next_attempt = None;
        return;
    }
    state.phase = SwitchPhase::Retrying;
    let doublings = state.attempts.saturating_sub(1).min(16);
    let wait = first_retry.saturating_mul(1 << doublings).min(MAX_RETRY);
    state.next_attempt = SignedDuration::try_from(wait)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .map(Time);
}

/// Everything an attempt needs from the reconcile.
#[derive(Debug)]
pub struct AttemptInput<'a> {
    /// This (the new) cluster's name.
    pub cluster: &'a str,
    /// Its namespace (the old cluster's too).
    pub namespace: &'a str,
    /// Its masters, `host:port`: the proxies' new seeds.
    pub masters: Vec<String>,
    /// Its nodes' password.
    pub password: &'a str,
    /// The sync pod's admin listener (`/offsets`), `host:port`.
    pub sync_admin: Option<String>,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every proxy serves this cluster (or the old cluster already said so).
    Switched {
        /// Per proxy pod.
        proxies: Vec<ProxySwitchResult>,
        /// Clusters whose proxies served the old cluster and moved with it.
        riders: Vec<String>,
        /// First prepare to last commit, milliseconds.
        pause_ms: Option<f64>,
        /// Waiting for the sync's offsets, milliseconds.
        catch_up_ms: Option<f64>,
    },
    /// Nothing switched, or only some proxies (listed as such).
    Failed {
        /// Why.
        error: String,
        /// Per proxy pod, when the coordinator reached them.
        proxies: Vec<ProxySwitchResult>,
    },
}

fn failed(error: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        proxies: Vec::new(),
    }
}

/// `host:port` of `host` (an IPv6 literal bracketed).
fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One attempt: the old cluster's proxy pods, its admin token, then the coordinated switch.
/// `done` lists proxies an earlier, partial attempt switched already.
pub async fn attempt(
    client: &kube::Client,
    input: &AttemptInput<'_>,
    spec: &SwitchSpec,
    done: &[ProxySwitchResult],
) -> Outcome {
    if spec.cluster == input.cluster {
        return failed("syncFrom.switch.cluster names this cluster itself");
    }
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), input.namespace);
    let old = match clusters.get_opt(&spec.cluster).await {
        Ok(Some(old)) => old,
        Ok(None) => {
            return failed(format!(
                "RedisCluster {} does not exist in namespace {}",
                spec.cluster, input.namespace
            ));
        }
        Err(e) => return failed(format!("reading RedisCluster {}: {e}", spec.cluster)),
    };
    match served_by(&old) {
        // An earlier attempt switched them and recorded it, but this cluster's status was not
        // written (the operator stopped in between): nothing to do again.
        Some(by) if by == input.cluster => {
            return Outcome::Switched {
                proxies: done.to_vec(),
                riders: Vec::new(),
                pause_ms: None,
                catch_up_ms: None,
            };
        }
        Some(other) => {
            return failed(format!(
                "the proxies of {} already serve RedisCluster {other}",
                spec.cluster
            ));
        }
        None => {}
    }
    if !old.spec.proxy.enabled {
        return failed(format!("RedisCluster {} runs no proxy", spec.cluster));
    }
    // Proxies of clusters moved to the old one earlier serve its nodes too: they move with it,
    // or they would go on writing to nodes nobody reads any more.
    let riders = match riders_of(client, input.namespace, &spec.cluster).await {
        Ok(riders) => riders,
        Err(e) => return failed(e),
    };
    let mut targets: Vec<(String, String, String)> = Vec::new();
    for cluster in std::iter::once(&old).chain(riders.iter()) {
        let proxies = match proxies_of(client, input.namespace, cluster).await {
            Ok(proxies) => proxies,
            Err(e) => return failed(e),
        };
        for (name, address, token) in proxies {
            if done
                .iter()
                .any(|d| d.switched && d.pod == name && d.address == address)
            {
                continue;
            }
            targets.push((name, address, token));
        }
    }
    if targets.is_empty() && done.iter().all(|d| !d.switched) {
        return failed(format!("RedisCluster {} has no proxy pod", spec.cluster));
    }
    let Some(sync_admin) = input.sync_admin.clone() else {
        return failed("the sync pod has no address yet");
    };
    if input.masters.is_empty() {
        return failed("this cluster has no master serving slots");
    }
    let already: Vec<ProxySwitchResult> = done.iter().filter(|d| d.switched).cloned().collect();
    let rider_names: Vec<String> = riders.iter().map(ResourceExt::name_any).collect();
    if targets.is_empty() {
        return Outcome::Switched {
            proxies: already,
            riders: rider_names,
            pause_ms: None,
            catch_up_ms: None,
        };
    }
    let admins: Vec<ProxyAdmin> = targets
        .iter()
        .map(|(_, address, token)| ProxyAdmin {
            addr: address.clone(),
            token: token.clone(),
        })
        .collect();
    let target = Target {
        cluster: None,
        seeds: input.masters.clone(),
        user: None,
        password: Some(input.password.to_owned()),
        max_pause_ms: u64::from(spec.max_pause_ms),
    };
    let result = |switched: &dyn Fn(&str) -> bool, detail: &dyn Fn(&str) -> String| {
        let mut all = already.clone();
        all.extend(targets.iter().map(|(pod, address, _)| ProxySwitchResult {
            pod: pod.clone(),
            address: address.clone(),
            switched: switched(address),
            detail: detail(address),
        }));
        all
    };
    match switch_all(&admins, &target, &sync_admin).await {
        Ok(report) => Outcome::Switched {
            proxies: result(&|_| true, &|address| {
                report.proxies.get(address).map(summary).unwrap_or_default()
            }),
            riders: rider_names,
            pause_ms: Some(report.hold_ms),
            catch_up_ms: Some(report.catch_up_ms),
        },
        Err(SwitchError::Partial {
            switched,
            failed: left,
            reason,
        }) => Outcome::Failed {
            error: format!(
                "only some proxies switched ({} of {}): {reason}; the sync keeps running and the \
                 next attempt switches the others",
                switched.len(),
                switched.len() + left.len()
            ),
            proxies: result(&|address| switched.iter().any(|s| s == address), &|_| {
                String::new()
            }),
        },
        Err(e) => failed(e.to_string()),
    }
}

/// The `RedisCluster`s whose proxies serve `cluster`'s nodes since an earlier move.
///
/// # Errors
/// The listing failed, as a sentence.
pub async fn riders_of(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<RedisCluster>, String> {
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    let all = clusters
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing the RedisClusters of {namespace}: {e}"))?;
    Ok(all
        .items
        .into_iter()
        .filter(|c| served_by(c).as_deref() == Some(cluster))
        .collect())
}

/// `cluster`'s proxy pods: `(pod, admin address, admin token)`, those being deleted left out.
///
/// # Errors
/// No token, a listing that failed, or a pod without an address yet (it would start from the
/// old configuration and be left behind), as a sentence.
async fn proxies_of(
    client: &kube::Client,
    namespace: &str,
    cluster: &RedisCluster,
) -> Result<Vec<(String, String, String)>, String> {
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_name = admin_secret_name(&name);
    let token = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| format!("reading Secret {secret_name}: {e}"))?
        .and_then(|secret| secret.data)
        .and_then(|d| d.get(ADMIN_TOKEN_KEY).cloned())
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!("Secret {secret_name} has no `{ADMIN_TOKEN_KEY}` (the operator makes it)")
        })?;
    let port = cluster.spec.monitoring.metrics_port;
    proxy_pods(client, namespace, &name)
        .await?
        .into_iter()
        .map(|(pod, ip)| {
            ip.map(|ip| (pod.clone(), join(&ip, port), token.clone()))
                .ok_or_else(|| format!("proxy pod {pod} has no address yet"))
        })
        .collect()
}

/// `cluster`'s proxy pods not being deleted, with their IPs when they have one.
async fn proxy_pods(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<(String, Option<String>)>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector =
        format!("app.kubernetes.io/instance={cluster},app.kubernetes.io/component=proxy");
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing the proxy pods of {cluster}: {e}"))?;
    Ok(listed
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty());
            (p.name_any(), ip)
        })
        .collect())
}

/// After the switch: the proxy pods of `clusters` (the old cluster and those that moved with
/// it) whose `/topology` names none of this cluster's `masters` — a proxy container that
/// restarted before its pod's configuration was refreshed, back on the old nodes — are deleted,
/// so their Deployment replaces them with pods configured for this cluster. A proxy that does
/// not answer, or knows no master yet, is left alone. Returns the pods deleted.
///
/// # Errors
/// A listing or a deletion that failed, as a sentence.
pub async fn replace_stale_proxies(
    client: &kube::Client,
    namespace: &str,
    clusters: &[String],
    masters: &[String],
) -> Result<Vec<String>, String> {
    let mut deleted = Vec::new();
    if masters.is_empty() {
        return Ok(deleted);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let objects: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    for cluster in clusters {
        let Some(object) = objects
            .get_opt(cluster)
            .await
            .map_err(|e| format!("reading RedisCluster {cluster}: {e}"))?
        else {
            continue;
        };
        let port = object.spec.monitoring.metrics_port;
        for (pod, ip) in proxy_pods(client, namespace, cluster).await? {
            let Some(ip) = ip else { continue };
            let Some(serving) = topology_masters(&join(&ip, port)).await else {
                continue;
            };
            if serving.is_empty() || serving.iter().any(|m| masters.contains(m)) {
                continue;
            }
            pods.delete(&pod, &kube::api::DeleteParams::default())
                .await
                .map_err(|e| format!("deleting proxy pod {pod}: {e}"))?;
            deleted.push(pod);
        }
    }
    Ok(deleted)
}

/// The masters a proxy routes to (`GET /topology` on its admin listener); `None` when it does
/// not answer within a second.
async fn topology_masters(admin: &str) -> Option<Vec<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let request =
            format!("GET /topology HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.take(1 << 20).read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if head.split_whitespace().nth(1) != Some("200") {
            return None;
        }
        let topology: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        Some(
            topology["masters"]
                .as_array()?
                .iter()
                .filter_map(|m| m["address"].as_str().map(str::to_owned))
                .collect(),
        )
    };
    tokio::time::timeout(Duration::from_secs(1), get)
        .await
        .ok()
        .flatten()
}

/// One proxy's switch report as one sentence: what its clients saw.
fn summary(report: &serde_json::Value) -> String {
    let number = |key: &str| report[key].as_f64().unwrap_or(0.0);
    format!(
        "held {:.1} ms (drain {:.1} ms); {} blocked clients released, {} subscribers and {} \
         WATCH transactions ended",
        number("hold_ms"),
        number("drain_ms"),
        number("blocked_released"),
        number("subscribers_ended"),
        number("watches_aborted"),
    )
}

/// Makes the old cluster's proxies start on this cluster from now on: this cluster's password
/// in the old cluster's `NAME-auth` (key [`SERVED_PASSWORD_KEY`]), the old cluster's proxy
/// ConfigMap rendered for this cluster, and the [`SERVED_BY_ANNOTATION`] that keeps it so
/// (in that order: the annotation last, so what it announces is in place). Idempotent; does
/// nothing when the annotation is there already.
///
/// The annotation is written only where it is absent or names `replaces` (a cluster moved
/// with the old one names the old one): a cluster whose proxies a later switch moved on to
/// another cluster is left alone, or two operators' reconciles would take them back and forth.
/// Returns whether `old_name`'s proxies are this cluster's to look after (served by it now).
///
/// # Errors
/// The API call that failed, as a sentence.
pub async fn ensure_served(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    old_name: &str,
    replaces: Option<&str>,
    password: &str,
    build_options: &BuildOptions,
) -> Result<bool, String> {
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    let Some(mut old) = clusters
        .get_opt(old_name)
        .await
        .map_err(|e| format!("reading RedisCluster {old_name}: {e}"))?
    else {
        // Deleted since: nothing serves its clients any more, nothing to configure.
        return Ok(false);
    };
    match served_by(&old) {
        Some(by) if by == cluster => return Ok(true),
        Some(by) if Some(by.as_str()) != replaces => return Ok(false),
        _ => {}
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let auth = format!("{old_name}-auth");
    let encoded = serde_json::to_value(ByteString(password.as_bytes().to_vec()))
        .map_err(|e| format!("encoding the password: {e}"))?;
    let patch = json!({"data": {SERVED_PASSWORD_KEY: encoded}});
    secrets
        .patch(&auth, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("writing {SERVED_PASSWORD_KEY} into Secret {auth}: {e}"))?;
    old.annotations_mut()
        .insert(SERVED_BY_ANNOTATION.to_owned(), cluster.to_owned());
    if let Some(proxy) = build(&old, build_options).ok().and_then(|o| o.proxy) {
        let configs: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), namespace);
        let name = proxy.config_map.name_any();
        configs
            .patch(
                &name,
                &PatchParams::apply(crate::reconcile::FIELD_MANAGER).force(),
                &Patch::Apply(&proxy.config_map),
            )
            .await
            .map_err(|e| format!("applying ConfigMap {name}: {e}"))?;
    }
    let patch = json!({"metadata": {"annotations": {SERVED_BY_ANNOTATION: cluster}}});
    clusters
        .patch(old_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("annotating RedisCluster {old_name}: {e}"))?;
    Ok(true)
}

/// The switch's state after the sync's reading: `sync.switch` set, and the phase the sync
/// must show (`Stopped` once switched).
pub fn mark_switched(sync: &mut SyncState) {
    if sync
        .switch
        .as_ref()
        .is_some_and(|s| s.phase == SwitchPhase::Switched)
    {
        sync.phase = SyncPhase::Stopped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SwitchSpec {
        SwitchSpec {
            cluster: "old".into(),
            max_pause_ms: 2000,
            max_attempts: 3,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn it_waits_for_the_sync_then_retries_with_backoff_then_gives_up_until_the_spec_changes() {
        let waiting = plan(None, &spec(), Some(1), false, at(0));
        assert!(!waiting.attempt);
        assert_eq!(waiting.state.phase, SwitchPhase::Waiting);
        let mut state = plan(None, &spec(), Some(1), true, at(0)).state;
        state.attempts = 1;
        record_failure(
            &mut state,
            "no".into(),
            &spec(),
            Some(1),
            at(0),
            Duration::from_secs(10),
        );
        assert_eq!(state.phase, SwitchPhase::Retrying);
        assert_eq!(state.next_attempt, Some(Time(at(10))));
        assert!(!plan(Some(&state), &spec(), Some(1), true, at(5)).attempt);
        assert!(plan(Some(&state), &spec(), Some(1), true, at(10)).attempt);
        state.attempts = 2;
        record_failure(
            &mut state,
            "no".into(),
            &spec(),
            Some(1),
            at(10),
            Duration::from_secs(10),
        );
        assert_eq!(state.next_attempt, Some(Time(at(30))), "twice as late");
        state.attempts = 3;
        record_failure(
            &mut state,
            "still no".into(),
            &spec(),
            Some(1),
            at(30),
            Duration::from_secs(10),
        );
        assert_eq!(state.phase, SwitchPhase::Abandoned);
        assert!(!plan(Some(&state), &spec(), Some(1), true, at(999)).attempt);
        let renewed = plan(Some(&state), &spec(), Some(2), true, at(999));
        assert!(renewed.attempt, "a new generation starts again");
        assert_eq!(renewed.state.attempts, 0);
    }

    #[test]
    fn a_switched_cluster_is_never_switched_again() {
        let state = SwitchState {
            cluster: "old".into(),
            phase: SwitchPhase::Switched,
            ..SwitchState::default()
        };
        assert!(!plan(Some(&state), &spec(), Some(9), true, at(0)).attempt);
        let mut sync = SyncState {
            phase: SyncPhase::Streaming,
            switch: Some(state),
            ..SyncState::default()
        };
        mark_switched(&mut sync);
        assert_eq!(sync.phase, SyncPhase::Stopped);
    }
}
