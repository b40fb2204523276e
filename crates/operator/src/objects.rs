//! The Kubernetes objects a `RedisCluster` owns, built from its spec: pure functions, applied by
//! the reconciler with server-side apply.
//!
//! Names for a cluster `NAME`: StatefulSet and PodDisruptionBudget `NAME-shard-I` per shard,
//! headless Service `NAME-nodes`, client Service `NAME`, ConfigMap `NAME-config`, password
//! Secret `NAME-auth` (created once by the reconciler, never by apply, so it is never rotated
//! behind anyone's back), proxy Deployment/Service/PDB/HPA/ConfigMap `NAME-proxy`, NodePort
//! Services `NAME-shard-I-J`; with `spec.syncFrom`, the sync's Deployment and Service
//! `NAME-sync` and its state PVC `NAME-sync-state`; with `spec.backup`, the CronJob `NAME-backup`
//! and, with `backup.continuous`, the Deployment `NAME-backup-continuous` (see [`crate::backup`]).
//! With `topology: Sentinel` the Redis objects are a group's instead (see
//! [`crate::group_objects`]).
//!
//! Decisions:
//! - **Identity**: `nodes.conf` lives on the data volume; each node announces its pod IP and its
//!   stable DNS name (`POD.NAME-nodes.NS.svc`, `cluster-announce-hostname`), while clients are
//!   sent IPs (`cluster-preferred-endpoint-type ip`): every client can use an IP, not every
//!   client resolves cluster DNS names.
//! - **Restarts belong to the operator**: StatefulSets use `OnDelete`, so an image or config
//!   change only changes the template; the planner restarts pods, replicas first, masters after
//!   a verified failover. `podManagementPolicy: Parallel` lets all pods of a new shard start at
//!   once (they only form a shard when the planner says so).
//! - **No master stops before its role moves**: whoever deletes a Redis pod, its `preStop` hook
//!   ([`prestop_script`]) fails the master over to a healthy replica first; the grace period
//!   is sized for that plus a clean shutdown. The planner's own restarts fail over before
//!   deleting, so for them the hook finds a replica and returns at once.
//! - **Readiness never depends on cluster state**: a pod must be ready (in DNS, in endpoints) to
//!   be met. Readiness is `PING`; liveness a TCP check with generous thresholds.
//! - **Password**: every node requires the password in `NAME-auth` (`requirepass`,
//!   `masterauth`); only the proxy and the operator read it. Clients authenticate to the proxy.
//! - **NodePort exposure** uses fixed node ports: `nodePortBase + 2 × (16 × shard + ordinal)` for
//!   clients and the next one for the bus (at most 16 pods per shard), announced with the node's
//!   IP, so redirects work from outside the Kubernetes cluster.
//! - **The sync** (`spec.syncFrom`) is `cinnabar sync` from the proxy's image, in a Deployment of
//!   one pod with the `Recreate` strategy: two syncs must never apply the same stream or share
//!   the state volume. Its target is the headless Service, as for the proxy's seeds (any node
//!   finds the rest of the cluster). Passwords are files from mounted Secrets (the cluster's own
//!   `NAME-auth`, the source's `passwordSecret`), never arguments or environment values. The
//!   state directory (checkpoints) is a PVC when the cluster's data is on volumes, so a restarted
//!   or rescheduled sync pod continues with `PSYNC` from its checkpoint instead of copying
//!   everything again; with `persistence.size` unset it is an `emptyDir`, like the data it
//!   describes (a checkpoint must not outlive the data it says the target holds). The container's
//!   termination message falls back to its log, so the error a sync stopped on reaches the pod
//!   status and from there `status.sync.lastError`. The metrics port is the cluster's
//!   `monitoring.metricsPort`, served by `--admin-listen` and exposed by the `NAME-sync` Service
//!   for Prometheus; the operator reads it at the sync pod's IP for `status.sync`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::crd::{
    ExposureMode, Fsync, RedisCluster, RedisClusterSpec, Retention, Spread, Topology,
};
use crate::pods::{REDIS_PORT, SHARD_LABEL};
use crate::validate::{SpecError, image_version, quantity_bytes, validate};

/// First node port used by `exposure.mode: NodePort`.
pub const NODE_PORT_BASE: i32 = 31000;
/// The Secret key holding the Redis password.
pub const PASSWORD_KEY: &str = "password";
/// The key of the proxies' admin token in `NAME-admin` (see [`admin_secret_name`]).
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Where the proxy reads its admin token: `POST /backend/switch` on its admin listener needs it.
pub const ADMIN_TOKEN_FILE: &str = "/etc/cinnabar/admin/token";

/// On a `RedisCluster` whose proxies were switched online to another cluster
/// (`syncFrom.switch` on that one): that cluster's name. Its proxies are then configured from
/// the cluster they serve, so a restarted proxy comes back on it.
pub const SERVED_BY_ANNOTATION: &str = "cinnabar.io/served-by";
/// The key, in the switched cluster's own `NAME-auth`, of the password of the cluster its
/// proxies serve: its proxies mount the whole Secret, so a new key reaches new proxy pods
/// without a change to their template (which would restart every proxy and cut its clients).
pub const SERVED_PASSWORD_KEY: &str = "served-password";

/// The cluster whose nodes `cluster`'s proxies serve: its own, or the one named by
/// [`SERVED_BY_ANNOTATION`].
pub fn served_by(cluster: &RedisCluster) -> Option<String> {
    cluster
        .annotations()
        .get(SERVED_BY_ANNOTATION)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// The Secret holding the proxies' admin token (made by the operator on first use).
pub fn admin_secret_name(cluster: &str) -> String {
    format!("{cluster}-admin")
}
/// The cluster bus port.
pub const BUS_PORT: u16 = 16379;
/// Where the sync keeps its checkpoints and status, inside its pod.
pub const SYNC_STATE_DIR: &str = "/state";
/// Size of the sync's state volume: checkpoints and a status file, a few kilobytes; 1Gi is the
/// smallest size most storage classes provision anyway.
pub const SYNC_STATE_SIZE: &str = "1Gi";
/// The file holding the source's password, inside the sync pod.
pub const SYNC_SOURCE_PASSWORD_FILE: &str = "/etc/cinnabar/source/password";
/// The file holding the cluster's password, inside the proxy and sync pods.
pub const AUTH_PASSWORD_FILE: &str = "/etc/cinnabar/auth/password";
/// How long a Redis pod's `preStop` hook may spend handing its master role to a replica.
pub const PRESTOP_FAILOVER_SECONDS: u32 = 20;
/// Time left for Redis itself after the hook: the AOF flushed, `nodes.conf` saved.
pub const SHUTDOWN_SECONDS: u32 = 60;

/// The start of every preStop script: `say`, the password for `redis-cli`, and `finish`, which
/// exits only once no AOF rewrite runs (Redis refuses SIGTERM while it writes its first AOF),
/// within `budget_seconds` (the `ticks` the rest of the script counts down too).
pub(crate) fn prestop_common(cli: &str, port: u16, budget_seconds: u32) -> String {
    let ticks = budget_seconds * 5;
    format!(
        r#"say() {{ echo "cinnabar preStop: $*"; }}
[ -n "$REDIS_PASSWORD" ] && export REDISCLI_AUTH="$REDIS_PASSWORD"
CR=$(printf '\r')
ticks={ticks}
aof_busy() {{
  info=$({cli} -p {port} info persistence 2>/dev/null) || return 1
  while IFS=: read -r k v; do
    v=${{v%"$CR"}}
    case $k in aof_rewrite_in_progress|aof_rewrite_scheduled) [ "$v" = 1 ] && return 0;; esac
  done <<EOF
$info
EOF
  return 1
}}
finish() {{
  if aof_busy; then
    say "waiting for the AOF rewrite (Redis refuses SIGTERM while it writes its first AOF)"
    while [ "$ticks" -gt 0 ] && aof_busy; do sleep 0.2; ticks=$((ticks - 1)); done
  fi
  exit "$1"
}}
"#
    )
}

/// The `preStop` hook of a Redis container (`sh -c` this): when the node is a master that owns
/// slots and has a healthy replica, `CLUSTER FAILOVER` on that replica, then wait until this
/// node reports itself a replica, within `budget_seconds`; otherwise return at once. Uses only
/// `sh` built-ins, `sleep` and `cli` (`redis-cli` or `valkey-cli`), which every Redis and Valkey
/// image has. `port` is the node's own port on `127.0.0.1`.
///
/// Why: a Redis pod can be deleted by anyone (a drain, an eviction, `kubectl delete pod`), not
/// only by the operator's planner, which fails over before it restarts a master. A master that
/// simply stops costs clients the cluster's failure detection (`cluster-node-timeout`) plus an
/// election; a manual failover first lets the replica catch up with the paused master, so no
/// acknowledged write is lost and the pause lasts only as long as the switch.
///
/// The replica chosen is a connected, non-failing replica of this node whose own link to it is
/// up, with the highest replication offset. An attempt that does not complete (a replica that
/// cannot catch up within Redis's 5 s manual-failover limit) is retried until the budget ends;
/// then the hook exits 1 (the kubelet records a `FailedPreStopHook` event with its output) and
/// Redis stops as a master, leaving the cluster to fail over on its own.
///
/// Whatever the role, the hook returns only once no AOF rewrite is running (within the same
/// budget): Redis refuses SIGTERM while it writes its first AOF, which a replica does after
/// every resynchronisation, and would then wait for the SIGKILL at the end of the grace period
/// (seen on a real control plane: a replica deleted a few seconds after the rolling restart
/// that resynchronised it logged `Writing initial AOF, can't exit`).
pub fn prestop_script(cli: &str, port: u16, budget_seconds: u32) -> String {
    let common = prestop_common(cli, port, budget_seconds);
    format!(
        r#"{common}nodes=$({cli} -p {port} cluster nodes) || {{ say "cannot read CLUSTER NODES; stopping"; exit 0; }}
myid=; myflags=; myslots=
while read -r id addr flags master ping pong epoch link rest; do
  case ",$flags," in *,myself,*) myid=$id; myflags=$flags; myslots=$rest;; esac
done <<EOF
$nodes
EOF
case ",$myflags," in *,master,*) ;; *) say "a replica: nothing to hand over"; finish 0;; esac
[ -n "$myslots" ] || {{ say "a master without slots: nothing to hand over"; finish 0; }}
while [ "$ticks" -gt 0 ]; do
  best=; bestoff=-1
  while read -r id addr flags master ping pong epoch link rest; do
    [ "$master" = "$myid" ] && [ "$link" = connected ] || continue
    case ",$flags," in *,fail*|*,noaddr,*|*,handshake,*) continue;; esac
    hp=${{addr%%@*}}; h=${{hp%:*}}; p=${{hp##*:}}
    info=$({cli} -h "$h" -p "$p" info replication 2>/dev/null) || continue
    up=; off=0
    while IFS=: read -r k v; do
      v=${{v%"$CR"}}
      case $k in master_link_status) up=$v;; slave_repl_offset) off=$v;; esac
    done <<EOF
$info
EOF
    if [ "$up" = up ] && [ "$off" -gt "$bestoff" ]; then best="$h $p"; bestoff=$off; fi
  done <<EOF
$nodes
EOF
  [ -n "$best" ] || {{ say "no healthy replica: stopping as a master"; finish 0; }}
  set -- $best
  say "CLUSTER FAILOVER on replica $1:$2 (offset $bestoff): $({cli} -h "$1" -p "$2" cluster failover 2>&1)"
  n=30
  while [ "$n" -gt 0 ] && [ "$ticks" -gt 0 ]; do
    sleep 0.2; n=$((n - 1)); ticks=$((ticks - 1))
    case "$({cli} -p {port} role 2>/dev/null)" in slave*) say "now a replica of $1:$2; stopping"; finish 0;; esac
  done
  nodes=$({cli} -p {port} cluster nodes) || break
done
say "still a master after {budget_seconds} s: stopping anyway (the cluster fails over on its own)"
finish 1
"#
    )
}

/// The user id of the `cinnabar` image, whose group the state volume is given.
const IMAGE_UID: i64 = 10001;

/// Settings that come from the operator, not the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The operator's own image (it holds the `cinnabar` binary the proxy runs).
    pub proxy_image: String,
}

/// The proxy's objects.
#[derive(Debug, Clone)]
pub struct ProxyObjects {
    /// `cinnabar.toml`.
    pub config_map: ConfigMap,
    /// The proxy pods.
    pub deployment: Deployment,
    /// `NAME-proxy`, with the metrics port.
    pub service: Service,
    /// `maxUnavailable: 1`.
    pub pdb: PodDisruptionBudget,
    /// When autoscaling.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// The sync's objects (`spec.syncFrom`).
#[derive(Debug, Clone)]
pub struct SyncObjects {
    /// `NAME-sync`: one `cinnabar sync` pod.
    pub deployment: Deployment,
    /// `NAME-sync`: the metrics port.
    pub service: Service,
    /// `NAME-sync-state`, when the cluster's data is on volumes.
    pub state_claim: Option<PersistentVolumeClaim>,
}

/// Everything a `RedisCluster` owns (but the password Secret, see the module docs).
#[derive(Debug, Clone)]
pub struct Objects {
    /// `redis.conf`.
    pub config_map: ConfigMap,
    /// `NAME-nodes`.
    pub headless_service: Service,
    /// `NAME`: what clients use.
    pub client_service: Service,
    /// One per shard, index = shard.
    pub statefulsets: Vec<StatefulSet>,
    /// One per shard.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// One per pod with `exposure.mode: NodePort`.
    pub node_port_services: Vec<Service>,
    /// The proxy, when enabled.
    pub proxy: Option<ProxyObjects>,
    /// A `monitoring.coreos.com/v1` ServiceMonitor, when asked for.
    pub service_monitor: Option<Value>,
    /// The sync, with `spec.syncFrom`.
    pub sync: Option<SyncObjects>,
    /// The scheduled backup and the continuous archive, with `spec.backup`.
    pub backup: Option<crate::backup::BackupObjects>,
    /// With `topology: Sentinel`: the Sentinels' headless Service `NAME-sentinels`.
    pub sentinel_service: Option<Service>,
}

/// Labels every object of `cluster` carries, plus the component.
pub fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "cinnabar"),
        ("app.kubernetes.io/instance", cluster),
        ("app.kubernetes.io/managed-by", "cinnabar-operator"),
        ("app.kubernetes.io/component", component),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub(crate) fn selector(cluster: &str, component: &str) -> Value {
    json!({"app.kubernetes.io/instance": cluster, "app.kubernetes.io/component": component})
}

pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> Result<T, SpecError> {
    serde_json::from_value(value).map_err(|e| SpecError {
        reason: "InternalObject".into(),
        message: format!("an object built from the spec does not parse: {e}"),
    })
}

/// `maxmemory` in bytes: the percentage (default 80) of the memory limit; `None` without a
/// limit or with 0%.
pub fn maxmemory_bytes(spec: &RedisClusterSpec) -> Option<u64> {
    let percent = u64::from(spec.maxmemory_percent.unwrap_or(80));
    let limit = spec
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .and_then(|q| quantity_bytes(&q.0))?;
    (percent > 0).then(|| limit / 100 * percent + limit % 100 * percent / 100)
}

/// The `redis.conf` every node starts from (announce settings come from the start command).
pub fn redis_conf(spec: &RedisClusterSpec) -> String {
    let mut lines = vec![
        "# Generated by cinnabar-operator from the RedisCluster spec; edits are overwritten."
            .to_owned(),
        format!("port {REDIS_PORT}"),
        "bind 0.0.0.0".into(),
        "protected-mode no".into(),
        "dir /data".into(),
    ];
    match spec.topology {
        Topology::Cluster => lines.extend([
            "cluster-enabled yes".into(),
            "cluster-config-file /data/nodes.conf".into(),
            "cluster-node-timeout 5000".into(),
            // A replica that lost its master for a while may still be the best copy there is.
            "cluster-replica-validity-factor 0".into(),
            "cluster-preferred-endpoint-type ip".into(),
            "cluster-allow-replica-migration yes".into(),
        ]),
        // A master cut off from every replica stops taking writes after 10 s, so an old
        // master on the wrong side of a partition cannot acknowledge much that the promoted
        // replica never sees (with one replica this would stop writes whenever it restarts).
        Topology::Sentinel if spec.replicas_per_shard >= 2 => lines.extend([
            "min-replicas-to-write 1".to_owned(),
            "min-replicas-max-lag 10".to_owned(),
        ]),
        Topology::Sentinel => {}
    }
    lines.extend([
        // Redis waits 5 s by default hoping more replicas join one fork; here every transfer
        // is one replica (or one backup, which reads its RDB over replication) at a time.
        "repl-diskless-sync-delay 0".into(),
        format!("maxmemory-policy {}", spec.maxmemory_policy),
    ]);
    if let Some(bytes) = maxmemory_bytes(spec) {
        lines.push(format!("maxmemory {bytes}"));
    }
    match spec.persistence.aof {
        Some(fsync) => {
            lines.push("appendonly yes".into());
            let policy = match fsync {
                Fsync::Always => "always",
                Fsync::Everysec => "everysec",
                Fsync::No => "no",
            };
            lines.push(format!("appendfsync {policy}"));
        }
        None => lines.push("appendonly no".into()),
    }
    if spec.persistence.rdb_save.trim().is_empty() {
        lines.push("save \"\"".into());
    } else {
        lines.push(format!("save \"{}\"", spec.persistence.rdb_save.trim()));
    }
    for (key, value) in &spec.redis_config {
        lines.push(format!("{key} {value}"));
    }
    lines.join("\n") + "\n"
}

/// A stable fingerprint of generated configuration (64-bit FNV-1a, hex): put on pod templates,
/// so a configuration change is a new StatefulSet revision (and a rolling restart through the
/// planner) or a new proxy rollout. Stable across operator builds, unlike `DefaultHasher`.
pub fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The proxy's `cinnabar.toml`; `served_by` is the cluster whose nodes it serves after an online
/// switch (see [`SERVED_BY_ANNOTATION`]).
pub fn proxy_toml(
    cluster: &str,
    namespace: &str,
    spec: &RedisClusterSpec,
    served_by: Option<&str>,
) -> String {
    let (backend, password_file, note) = match served_by {
        Some(other) => (
            other,
            format!("/etc/cinnabar/auth/{SERVED_PASSWORD_KEY}"),
            format!(
                "# Switched online to RedisCluster {other}: its nodes and password (in {cluster}-auth).\n"
            ),
        ),
        None => (cluster, AUTH_PASSWORD_FILE.to_owned(), String::new()),
    };
    let seeds = match spec.topology {
        Topology::Cluster => {
            format!("seeds = [\"{backend}-nodes.{namespace}.svc:{REDIS_PORT}\"]\n")
        }
        // The `[group]` table at the end names the Sentinels instead.
        Topology::Sentinel => String::new(),
    };
    let mut text = format!(
        "# Generated by cinnabar-operator from the RedisCluster spec; edits are overwritten.\n\
         listen = \"0.0.0.0:{REDIS_PORT}\"\n\
         {note}\
         {seeds}\
         admin_listen = \"0.0.0.0:{}\"\n\
         drain_timeout_ms = {}\n\
         backend_password_file = \"{password_file}\"\n\
         # An online switch of the backend (cinnabar switch) presents this token.\n\
         admin_token_file = \"{ADMIN_TOKEN_FILE}\"\n\
         # The proxy starts with the cluster still forming: not ready until it serves.\n\
         wait_for_cluster = true\n",
        spec.monitoring.metrics_port,
        u64::from(spec.proxy.drain_seconds) * 1000,
    );
    if spec.proxy.users_secret.is_some() || !spec.proxy.extra_denied_commands.is_empty() {
        text.push_str("\n[access]\n");
        if spec.proxy.users_secret.is_some() {
            text.push_str("users_file = \"/etc/cinnabar/users/users.toml\"\n");
        }
        if !spec.proxy.extra_denied_commands.is_empty() {
            // Clients without a user of their own get `readwrite` minus the extra commands.
            let quoted: Vec<String> = spec
                .proxy
                .extra_denied_commands
                .iter()
                .map(|c| format!("\"{}\"", c.replace(['"', '\\'], "")))
                .collect();
            text.push_str("default_role = \"guarded\"\n\n[[access.roles]]\nname = \"guarded\"\nbase = \"readwrite\"\n");
            text.push_str(&format!("deny = [{}]\n", quoted.join(", ")));
        }
    }
    if spec.topology == Topology::Sentinel {
        text.push_str(&crate::group_objects::proxy_group_section(
            backend,
            namespace,
            spec.sentinels,
            &password_file,
        ));
    }
    text
}

pub(crate) fn spread_rule(
    spread: Spread,
    topology_key: &str,
    match_labels: &Value,
) -> (Option<Value>, Option<Value>) {
    let term = json!({"labelSelector": {"matchLabels": match_labels}, "topologyKey": topology_key});
    match spread {
        Spread::Required => (Some(term), None),
        Spread::Preferred => (None, Some(json!({"weight": 100, "podAffinityTerm": term}))),
        Spread::Disabled => (None, None),
    }
}

/// Builds every owned object (after [`validate`]).
///
/// # Errors
/// The spec is invalid ([`SpecError`]).
pub fn build(cluster: &RedisCluster, options: &BuildOptions) -> Result<Objects, SpecError> {
    let spec = &cluster.spec;
    validate(spec)?;
    if spec.topology == Topology::Sentinel {
        return crate::group_objects::build_group(cluster, options);
    }
    let (server, _) = image_version(&spec.image)?;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".to_owned());
    let owner = cluster
        .controller_owner_ref(&())
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
    let meta = |object_name: &str, component: &str| {
        json!({
            "name": object_name,
            "namespace": namespace,
            "labels": labels(&name, component),
            "ownerReferences": owner.iter().collect::<Vec<_>>(),
        })
    };
    let redis_labels = selector(&name, "redis");

    let config_map = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(&format!("{name}-config"), "redis"),
        "data": {"redis.conf": redis_conf(spec)},
    }))?;
    let headless_service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&format!("{name}-nodes"), "redis"),
        "spec": {
            "clusterIP": "None",
            // Nodes must find each other before they are ready.
            "publishNotReadyAddresses": true,
            "selector": redis_labels,
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis"},
                {"name": "bus", "port": BUS_PORT, "targetPort": "bus"},
            ],
        },
    }))?;
    let client_component = if spec.proxy.enabled { "proxy" } else { "redis" };
    let client_service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&name, client_component),
        "spec": {
            "selector": selector(&name, client_component),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }))?;

    let per_shard = 1 + u32::from(spec.replicas_per_shard);
    let mut statefulsets = Vec::new();
    let mut pdbs = Vec::new();
    let mut node_port_services = Vec::new();
    for shard in 0..u32::from(spec.shards) {
        let set_name = format!("{name}-shard-{shard}");
        let mut pod_labels = labels(&name, "redis");
        pod_labels.insert(SHARD_LABEL.to_owned(), shard.to_string());
        let shard_selector = json!({
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "redis",
            SHARD_LABEL: shard.to_string(),
        });
        statefulsets.push(typed(statefulset(
            &name,
            spec,
            server,
            shard,
            per_shard,
            meta(&set_name, "redis"),
            &pod_labels,
            &shard_selector,
        ))?);
        pdbs.push(typed(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(&set_name, "redis"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": shard_selector}},
        }))?);
        if spec.exposure.mode == ExposureMode::NodePort {
            for ordinal in 0..per_shard {
                let pod = format!("{set_name}-{ordinal}");
                let (client, bus) = node_ports(shard, ordinal);
                node_port_services.push(typed(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": meta(&pod, "redis"),
                    "spec": {
                        "type": "NodePort",
                        "externalTrafficPolicy": "Local",
                        "selector": {"statefulset.kubernetes.io/pod-name": pod},
                        "ports": [
                            {"name": "redis", "port": client, "targetPort": "redis", "nodePort": client},
                            {"name": "bus", "port": bus, "targetPort": "bus", "nodePort": bus},
                        ],
                    },
                }))?);
            }
        }
    }

    let (proxy, service_monitor) = proxy_front(cluster, &name, &namespace, spec, options, &meta)?;
    let sync = spec
        .sync_from
        .as_ref()
        .map(|_| sync_objects(&name, &namespace, spec, options, &meta))
        .transpose()?;
    let backup = crate::backup::backup_objects(cluster, options)?;
    Ok(Objects {
        config_map,
        headless_service,
        client_service,
        statefulsets,
        pdbs,
        node_port_services,
        proxy,
        service_monitor,
        sync,
        backup,
        sentinel_service: None,
    })
}

/// The sync's name (Deployment and Service) for cluster `cluster`.
pub fn sync_name(cluster: &str) -> String {
    format!("{cluster}-sync")
}

/// The sync's state claim for cluster `cluster`.
pub fn sync_state_claim_name(cluster: &str) -> String {
    format!("{cluster}-sync-state")
}

/// The arguments of the sync container (after the image's `cinnabar` entry point): no secret in
/// them, only the files that hold them.
pub fn sync_args(cluster: &str, namespace: &str, spec: &RedisClusterSpec) -> Vec<String> {
    let Some(from) = &spec.sync_from else {
        return Vec::new();
    };
    let mut args: Vec<String> = vec![
        "sync".into(),
        "--from".into(),
        from.address.clone(),
        "--to".into(),
        format!("{cluster}-nodes.{namespace}.svc:{REDIS_PORT}"),
        "--to-password-file".into(),
        AUTH_PASSWORD_FILE.into(),
        "--state".into(),
        SYNC_STATE_DIR.into(),
        "--admin-listen".into(),
        format!("0.0.0.0:{}", spec.monitoring.metrics_port),
    ];
    if let Some(user) = &from.user {
        args.extend(["--from-user".into(), user.clone()]);
    }
    if from.password_secret.is_some() {
        args.extend([
            "--from-password-file".into(),
            SYNC_SOURCE_PASSWORD_FILE.into(),
        ]);
    }
    if from.allow_flush {
        args.push("--allow-flush".into());
    }
    for db in &from.merge_dbs {
        args.extend(["--merge-db".into(), db.to_string()]);
    }
    for db in &from.skip_dbs {
        args.extend(["--skip-db".into(), db.to_string()]);
    }
    args
}

fn sync_objects(
    name: &str,
    namespace: &str,
    spec: &RedisClusterSpec,
    options: &BuildOptions,
    meta: &dyn Fn(&str, &str) -> Value,
) -> Result<SyncObjects, SpecError> {
    let sync_name = sync_name(name);
    let claim_name = sync_state_claim_name(name);
    let metrics_port = spec.monitoring.metrics_port;
    let from = spec.sync_from.as_ref();
    let state_claim = spec
        .persistence
        .size
        .as_ref()
        .map(|_| {
            let mut claim = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": meta(&claim_name, "sync"),
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": SYNC_STATE_SIZE}},
                },
            });
            if let Some(class) = &spec.persistence.storage_class {
                claim["spec"]["storageClassName"] = json!(class);
            }
            typed(claim)
        })
        .transpose()?;
    let state_volume = if state_claim.is_some() {
        json!({"name": "state", "persistentVolumeClaim": {"claimName": claim_name}})
    } else {
        json!({"name": "state", "emptyDir": {}})
    };
    let mut volumes = vec![
        state_volume,
        json!({"name": "auth", "secret": {"secretName": format!("{name}-auth"), "items": [{"key": PASSWORD_KEY, "path": "password"}]}}),
    ];
    let mut mounts = vec![
        json!({"name": "state", "mountPath": SYNC_STATE_DIR}),
        json!({"name": "auth", "mountPath": "/etc/cinnabar/auth", "readOnly": true}),
    ];
    if let Some(secret) = from.and_then(|f| f.password_secret.as_ref()) {
        volumes.push(json!({"name": "source-auth", "secret": {"secretName": secret.name, "items": [{"key": secret.key, "path": "password"}]}}));
        mounts.push(
            json!({"name": "source-auth", "mountPath": "/etc/cinnabar/source", "readOnly": true}),
        );
    }
    let mut pod_annotations = json!({});
    if spec.monitoring.scrape_annotations {
        pod_annotations = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": metrics_port.to_string(),
            "prometheus.io/path": "/metrics",
        });
    }
    let deployment = typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&sync_name, "sync"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector(name, "sync")},
            // Never two syncs at once: they would apply one stream twice and share the volume.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels(name, "sync"), "annotations": pod_annotations},
                "spec": {
                    // The volume's group is the image user's, so a non-root sync can write it.
                    "securityContext": {"fsGroup": IMAGE_UID},
                    // On SIGTERM the sync stores its last checkpoint, then exits.
                    "terminationGracePeriodSeconds": 30,
                    "volumes": volumes,
                    "containers": [{
                        "name": "sync",
                        "image": options.proxy_image,
                        "args": sync_args(name, namespace, spec),
                        "ports": [{"name": "metrics", "containerPort": metrics_port}],
                        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 5},
                        // The error a sync stopped on is the last thing it logs.
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "resources": from.and_then(|f| f.resources.clone()).unwrap_or_default(),
                        "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                        "volumeMounts": mounts,
                    }],
                },
            },
        },
    }))?;
    let service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&sync_name, "sync"),
        "spec": {
            "selector": selector(name, "sync"),
            "ports": [{"name": "metrics", "port": metrics_port, "targetPort": "metrics"}],
        },
    }))?;
    Ok(SyncObjects {
        deployment,
        service,
        state_claim,
    })
}

/// The client and bus node ports of pod `ordinal` of `shard` (see the module docs).
pub fn node_ports(shard: u32, ordinal: u32) -> (i32, i32) {
    let index = i32::try_from(shard * 16 + ordinal).unwrap_or(i32::MAX / 4);
    let client = NODE_PORT_BASE + 2 * index;
    (client, client + 1)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn statefulset(
    name: &str,
    spec: &RedisClusterSpec,
    server: &str,
    shard: u32,
    per_shard: u32,
    metadata: Value,
    pod_labels: &BTreeMap<String, String>,
    shard_selector: &Value,
) -> Value {
    let placement = &spec.placement;
    let (host_required, host_preferred) = spread_rule(
        placement.host_spread,
        "kubernetes.io/hostname",
        shard_selector,
    );
    let (zone_required, zone_preferred) = spread_rule(
        placement.zone_spread,
        "topology.kubernetes.io/zone",
        shard_selector,
    );
    let mut affinity = serde_json::to_value(placement.affinity.clone().unwrap_or_default())
        .unwrap_or_else(|_| json!({}));
    let anti = affinity
        .as_object_mut()
        .map(|a| {
            a.entry("podAntiAffinity")
                .or_insert_with(|| json!({}))
                .clone()
        })
        .unwrap_or_else(|| json!({}));
    let mut required: Vec<Value> = anti
        .get("requiredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut preferred: Vec<Value> = anti
        .get("preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    required.extend(host_required.into_iter().chain(zone_required));
    preferred.extend(host_preferred.into_iter().chain(zone_preferred));
    if let Some(object) = affinity.as_object_mut() {
        let mut anti = json!({});
        if !required.is_empty() {
            anti["requiredDuringSchedulingIgnoredDuringExecution"] = json!(required);
        }
        if !preferred.is_empty() {
            anti["preferredDuringSchedulingIgnoredDuringExecution"] = json!(preferred);
        }
        object.insert("podAntiAffinity".into(), anti);
    }
    let host_network = spec.exposure.mode == ExposureMode::HostNetwork;
    let announce_ip = match spec.exposure.mode {
        ExposureMode::InCluster => "$POD_IP",
        ExposureMode::HostNetwork | ExposureMode::NodePort => "$HOST_IP",
    };
    let (client_port, bus_port) = node_ports(shard, 0);
    let announce_ports = if spec.exposure.mode == ExposureMode::NodePort {
        // Ordinal from the pod name; the ports follow `node_ports`.
        format!(
            " --cluster-announce-port $(({client_port} + 2 * ${{POD_NAME##*-}})) \
             --cluster-announce-bus-port $(({bus_port} + 2 * ${{POD_NAME##*-}}))"
        )
    } else {
        String::new()
    };
    let binary = if server == "valkey" {
        "valkey-server"
    } else {
        "redis-server"
    };
    let cli = if server == "valkey" {
        "valkey-cli"
    } else {
        "redis-cli"
    };
    let start = format!(
        "exec {binary} /etc/cinnabar/redis.conf --cluster-announce-ip {announce_ip} \
         --cluster-announce-hostname \"$POD_NAME.{name}-nodes.$NAMESPACE.svc\"{announce_ports} \
         --requirepass \"$REDIS_PASSWORD\" --masterauth \"$REDIS_PASSWORD\""
    );
    let env_from_field = |var: &str, path: &str| json!({"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let data_volume = match &spec.persistence.size {
        Some(_) => None,
        None => Some(json!({"name": "data", "emptyDir": {}})),
    };
    let mut volumes =
        vec![json!({"name": "config", "configMap": {"name": format!("{name}-config")}})];
    volumes.extend(data_volume);
    let claim_templates: Vec<Value> = spec
        .persistence
        .size
        .iter()
        .map(|size| {
            let mut claim = json!({
                "metadata": {"name": "data", "labels": selector(name, "redis")},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}},
                },
            });
            if let Some(class) = &spec.persistence.storage_class {
                claim["spec"]["storageClassName"] = json!(class);
            }
            claim
        })
        .collect();
    let retention = match spec.persistence.retention {
        Retention::Retain => "Retain",
        Retention::Delete => "Delete",
    };
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": format!("{name}-nodes"),
            "replicas": per_shard,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Delete"},
            "selector": {"matchLabels": shard_selector},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"cinnabar.io/config-fingerprint": fingerprint(&redis_conf(spec))},
                },
                "spec": {
                    "hostNetwork": host_network,
                    "dnsPolicy": if host_network { "ClusterFirstWithHostNet" } else { "ClusterFirst" },
                    // The preStop failover, then a clean shutdown (AOF flushed, nodes.conf
                    // saved). A deletion with a shorter grace period cuts the hook short: see
                    // docs/kubernetes.md.
                    "terminationGracePeriodSeconds": PRESTOP_FAILOVER_SECONDS + SHUTDOWN_SECONDS,
                    "affinity": affinity,
                    "tolerations": placement.tolerations,
                    "nodeSelector": placement.node_selector,
                    "topologySpreadConstraints": placement.topology_spread_constraints,
                    "volumes": volumes,
                    "containers": [{
                        "name": "redis",
                        "image": spec.image,
                        "command": ["sh", "-c", start],
                        "env": [
                            env_from_field("POD_NAME", "metadata.name"),
                            env_from_field("NAMESPACE", "metadata.namespace"),
                            env_from_field("POD_IP", "status.podIP"),
                            env_from_field("HOST_IP", "status.hostIP"),
                            {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{name}-auth"), "key": PASSWORD_KEY}}},
                        ],
                        "ports": [
                            {"name": "redis", "containerPort": REDIS_PORT},
                            {"name": "bus", "containerPort": BUS_PORT},
                        ],
                        "readinessProbe": {
                            "exec": {"command": ["sh", "-c", format!("REDISCLI_AUTH=\"$REDIS_PASSWORD\" {cli} -p {REDIS_PORT} ping | grep -q PONG")]},
                            "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3,
                        },
                        "livenessProbe": {
                            "tcpSocket": {"port": "redis"},
                            "initialDelaySeconds": 30, "periodSeconds": 10, "failureThreshold": 6,
                        },
                        // Any deletion of a master pod hands its role over first.
                        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", prestop_script(cli, REDIS_PORT, PRESTOP_FAILOVER_SECONDS)]}}},
                        "resources": spec.resources.clone().unwrap_or_default(),
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "config", "mountPath": "/etc/cinnabar"},
                        ],
                    }],
                },
            },
            "volumeClaimTemplates": claim_templates,
        },
    })
}

/// The proxy in front of either topology, when enabled, and its ServiceMonitor when asked for.
pub(crate) fn proxy_front(
    cluster: &RedisCluster,
    name: &str,
    namespace: &str,
    spec: &RedisClusterSpec,
    options: &BuildOptions,
    meta: &dyn Fn(&str, &str) -> Value,
) -> Result<(Option<ProxyObjects>, Option<Value>), SpecError> {
    let proxy = spec
        .proxy
        .enabled
        .then(|| {
            proxy_objects(
                name,
                namespace,
                spec,
                served_by(cluster).as_deref(),
                options,
                meta,
            )
        })
        .transpose()?;
    let service_monitor = (spec.monitoring.service_monitor && spec.proxy.enabled).then(|| {
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": meta(&format!("{name}-proxy"), "proxy"),
            "spec": {
                "selector": {"matchLabels": selector(name, "proxy")},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
        })
    });
    Ok((proxy, service_monitor))
}

pub(crate) fn proxy_objects(
    name: &str,
    namespace: &str,
    spec: &RedisClusterSpec,
    served_by: Option<&str>,
    options: &BuildOptions,
    meta: &dyn Fn(&str, &str) -> Value,
) -> Result<ProxyObjects, SpecError> {
    let proxy_name = format!("{name}-proxy");
    let metrics_port = spec.monitoring.metrics_port;
    let toml = proxy_toml(name, namespace, spec, served_by);
    let config_map = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(&proxy_name, "proxy"),
        "data": {"cinnabar.toml": toml},
    }))?;
    let mut pod_annotations = json!({});
    if spec.monitoring.scrape_annotations {
        pod_annotations = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": metrics_port.to_string(),
            "prometheus.io/path": "/metrics",
        });
    }
    // The fingerprint ignores an online switch: the running proxies already serve the other
    // cluster, and a rollout would only cut their clients' connections. A proxy that starts
    // later reads the switched configuration.
    pod_annotations["cinnabar.io/config-fingerprint"] =
        json!(fingerprint(&proxy_toml(name, namespace, spec, None)));
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": proxy_name}}),
        json!({"name": "auth", "secret": {"secretName": format!("{name}-auth")}}),
        json!({"name": "admin", "secret": {"secretName": admin_secret_name(name), "items": [{"key": ADMIN_TOKEN_KEY, "path": "token"}]}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": "/etc/cinnabar", "readOnly": true}),
        json!({"name": "auth", "mountPath": "/etc/cinnabar/auth", "readOnly": true}),
        json!({"name": "admin", "mountPath": "/etc/cinnabar/admin", "readOnly": true}),
    ];
    if let Some(secret) = &spec.proxy.users_secret {
        volumes.push(json!({"name": "users", "secret": {"secretName": secret}}));
        mounts.push(json!({"name": "users", "mountPath": "/etc/cinnabar/users", "readOnly": true}));
    }
    let replicas = spec
        .proxy
        .autoscaling
        .as_ref()
        .map_or(spec.proxy.replicas, |a| {
            a.min_replicas.max(spec.proxy.replicas.min(a.max_replicas))
        });
    let deployment = typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&proxy_name, "proxy"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(name, "proxy")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(name, "proxy"), "annotations": pod_annotations},
                "spec": {
                    // The drain (every accepted request answered) plus the preStop pause.
                    "terminationGracePeriodSeconds": i64::from(spec.proxy.drain_seconds) + 10,
                    "volumes": volumes,
                    "containers": [{
                        "name": "proxy",
                        "image": options.proxy_image,
                        "args": ["proxy", "--config", "/etc/cinnabar/cinnabar.toml"],
                        "ports": [
                            {"name": "redis", "containerPort": REDIS_PORT},
                            {"name": "metrics", "containerPort": metrics_port},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 2, "failureThreshold": 2},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10, "failureThreshold": 3},
                        // Endpoints drop the pod first; only then does SIGTERM start the drain.
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "resources": spec.proxy.resources.clone().unwrap_or_default(),
                        "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                        "volumeMounts": mounts,
                    }],
                },
            },
        },
    }))?;
    let service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&proxy_name, "proxy"),
        "spec": {
            "selector": selector(name, "proxy"),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis"},
                {"name": "metrics", "port": metrics_port, "targetPort": "metrics"},
            ],
        },
    }))?;
    let pdb = typed(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": meta(&proxy_name, "proxy"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name, "proxy")}},
    }))?;
    let hpa = spec
        .proxy
        .autoscaling
        .as_ref()
        .map(|auto| {
            typed(json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": meta(&proxy_name, "proxy"),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": proxy_name},
                    "minReplicas": auto.min_replicas,
                    "maxReplicas": auto.max_replicas,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": auto.target_cpu_percent}}}],
                    "behavior": {
                        "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
                        "scaleDown": {"stabilizationWindowSeconds": 300},
                    },
                },
            }))
        })
        .transpose()?;
    Ok(ProxyObjects {
        config_map,
        deployment,
        service,
        pdb,
        hpa,
    })
}
