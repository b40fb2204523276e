//! The Kubernetes objects of a `topology: Sentinel` resource: one master with its replicas and
//! a Sentinel quorum, the proxy in front with the backend kind "group". Pure, like
//! [`crate::objects`], whose pieces (pod template, volumes, proxy) it reuses; it never decides
//! which pod is master (the planner does, see [`crate::group`]).
//!
//! Names for a resource `NAME`: StatefulSet and PodDisruptionBudget `NAME-redis` (the data
//! pods, headless Service `NAME-nodes`), StatefulSet and PodDisruptionBudget `NAME-sentinel`
//! (headless Service `NAME-sentinels`), ConfigMap `NAME-config` (`redis.conf` and
//! `sentinel.conf`), the proxy's objects and the password Secret as for a cluster.
//!
//! Decisions:
//! - **Sentinels are a StatefulSet of their own, not a sidecar of each Redis pod.** The quorum
//!   must outlive the loss of a Redis pod: with sidecars, deleting the master's pod (a drain,
//!   an eviction, a restart) also removes a Sentinel exactly when a failover needs a majority,
//!   and a rolling restart of Redis would restart the Sentinels with it. Apart, the number of
//!   Sentinels (odd, ≥ 3) does not depend on the number of replicas, a group of 1 + 1 still
//!   has 3 voters, and Sentinels can be restarted without touching data. Host anti-affinity is
//!   required among Sentinels (per `placement.hostSpread`) and preferred against the data
//!   pods, so one lost machine takes at most one voter and, where possible, no voter with it.
//! - **Sentinels are updated by Kubernetes** (`RollingUpdate`): their readiness probe passes
//!   only once the Sentinel monitors the group, which the operator arranges (the planner's
//!   `Monitor` step) for a replaced one, so the StatefulSet controller replaces one voter at a
//!   time and waits until it votes again. The data pods use `OnDelete`, as for a cluster: the
//!   planner restarts them, replicas first, the master after a verified `SENTINEL FAILOVER`.
//! - **A data pod starts as a replica of the master the Sentinels name** (asked at start, by
//!   the container's own script), and as a plain master only when no Sentinel answers (the
//!   first start, before the group is formed). A replaced pod has a new IP that no Sentinel
//!   knows, so nobody else would tell it; the configuration file is a read-only ConfigMap, so
//!   nothing stale survives a restart either (`replicaof` is never persisted).
//! - Every address a node or Sentinel announces is its pod IP (`replica-announce-ip`,
//!   `sentinel announce-ip`): Sentinel and the proxy track nodes by address, and cluster DNS
//!   names are not what Redis replication reports.
//! - **Passwords**: the data nodes require the password in `NAME-auth`, and so do the Sentinels
//!   (`requirepass`, `sentinel sentinel-pass` among themselves, `auth-pass` for the nodes, set
//!   by the operator with `SENTINEL SET`): a Sentinel can reconfigure the group, so it is not
//!   left open.

use serde_json::{Value, json};

use crate::crd::{RedisCluster, RedisClusterSpec};
use crate::objects::{
    BuildOptions, Objects, PASSWORD_KEY, PRESTOP_FAILOVER_SECONDS, fingerprint, labels,
    proxy_front, redis_conf, selector, spread_rule, statefulset, typed,
};
use crate::pods::{REDIS_PORT, SHARD_LABEL};
use crate::validate::{SpecError, image_version, validate};
use kube::{Resource, ResourceExt};

/// Seconds the `preStop` hook of an old master waits after the handover, so proxies (which
/// confirm the master every second) stop sending to it before it stops.
pub const DRAIN_SECONDS: u32 = 2;
/// The port Sentinels listen on.
pub const SENTINEL_PORT: u16 = 26379;
/// Milliseconds a master may be unreachable before a Sentinel flags it down: like the
/// cluster's node timeout, so a crashed container the kubelet restarts within seconds is not
/// failed over for nothing.
pub const DOWN_AFTER_MS: u64 = 5000;
/// `failover-timeout`: a failed attempt is retried by another Sentinel after twice this.
pub const FAILOVER_TIMEOUT_MS: u64 = 30_000;

/// The Sentinels' addresses as the pods reach them: each Sentinel pod's stable DNS name
/// (`NAME-sentinel-I.NAME-sentinels.NS.svc:26379`), which follows the pod to its new IP.
pub fn sentinel_addresses(name: &str, namespace: &str, sentinels: u16) -> Vec<String> {
    (0..sentinels)
        .map(|i| format!("{name}-sentinel-{i}.{name}-sentinels.{namespace}.svc:{SENTINEL_PORT}"))
        .collect()
}

/// The proxy's `[group]` table: the group `name` as the Sentinels monitor it, every Sentinel,
/// and the Sentinels' password (the nodes' one, `password_file`).
pub fn proxy_group_section(
    name: &str,
    namespace: &str,
    sentinels: u16,
    password_file: &str,
) -> String {
    let quoted: Vec<String> = sentinel_addresses(name, namespace, sentinels)
        .into_iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "\n# A Sentinel group: the master is the one the Sentinels name, confirmed every second.\n\
         [group]\n\
         name = \"{name}\"\n\
         sentinels = [{}]\n\
         sentinel_password_file = \"{password_file}\"\n",
        quoted.join(", ")
    )
}

/// The base `sentinel.conf` (the start script adds the pod's address and the password to a
/// writable copy; Sentinel keeps its state in that copy).
pub fn sentinel_conf() -> String {
    [
        "# Generated by cinnabar-operator; each Sentinel copies it once and keeps its state there.",
        &format!("port {SENTINEL_PORT}"),
        "bind 0.0.0.0",
        "protected-mode no",
        "dir /sentinel",
        // Every address here is a pod IP.
        "sentinel resolve-hostnames no",
    ]
    .join("\n")
        + "\n"
}

/// Shell lines that set `master` to `HOST PORT` as the first answering Sentinel names it
/// (empty when none answers). `cli` is `redis-cli` or `valkey-cli`, with `REDISCLI_AUTH` set.
fn ask_sentinels(cli: &str, group: &str, sentinels: &[String]) -> String {
    format!(
        r#"master=
for a in {list}; do
  reply=$({cli} -h "${{a%:*}}" -p "${{a##*:}}" --raw sentinel get-master-addr-by-name {group} 2>/dev/null) || continue
  set -- $reply
  if [ $# -eq 2 ] && [ "$2" -gt 0 ] 2>/dev/null; then master="$1 $2"; break; fi
done"#,
        list = sentinels.join(" ")
    )
}

/// The data container's start: ask the Sentinels which master to follow (see the module docs).
pub fn redis_start(binary: &str, cli: &str, group: &str, sentinels: &[String]) -> String {
    format!(
        r#"[ -n "$REDIS_PASSWORD" ] && export REDISCLI_AUTH="$REDIS_PASSWORD"
{ask}
follow=
if [ -n "$master" ]; then
  set -- $master
  if [ "$1:$2" != "$POD_IP:{REDIS_PORT}" ]; then follow="--replicaof $1 $2"; echo "cinnabar: the Sentinels name $1:$2 master: starting as its replica"; fi
else
  echo "cinnabar: no Sentinel names a master of {group} yet: starting on my own until the operator forms the group"
fi
exec {binary} /etc/cinnabar/redis.conf --replica-announce-ip "$POD_IP" --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" $follow"#,
        ask = ask_sentinels(cli, group, sentinels),
    )
}

/// The `preStop` hook of a data container listening on `port` (`sh -c` this; `POD_IP` and
/// `REDIS_PASSWORD` in its environment): when this node is the master the
/// Sentinels name and has an online replica, pause writes (`CLIENT PAUSE WRITE`, so nothing
/// is acknowledged that the replicas lack), `WAIT` for a replica to acknowledge everything,
/// ask a Sentinel for `SENTINEL FAILOVER`, and once the Sentinels name a new master that says
/// `role:master`, become its replica at once (the writes that waited here then fail with
/// `-READONLY`, which the proxy retries on the new master, instead of running on a master
/// nobody reads), wait [`DRAIN_SECONDS`] for the proxies to follow; all within `budget_seconds`, then exit 1 with the pause lifted. Anything else
/// stops at once. As for a cluster node, it returns only once no AOF rewrite runs (Redis
/// refuses SIGTERM while it writes its first AOF).
///
/// Why: the Sentinels would notice a stopped master only after `down-after-milliseconds` and
/// an election, seconds during which writes fail, and writes the master acknowledged but had
/// not yet sent could be lost.
pub fn prestop_script(
    cli: &str,
    port: u16,
    group: &str,
    sentinels: &[String],
    budget_seconds: u32,
) -> String {
    let common = crate::objects::prestop_common(cli, port, budget_seconds);
    let pause_ms = budget_seconds * 1000;
    format!(
        r#"{common}# The writes that waited here were answered -READONLY (the proxy retries them on the new
# master); until the proxies follow the Sentinels (they check every second) a write may still
# arrive, and one in flight when Redis stops could not be retried: wait for them first.
drain() {{ say "waiting {DRAIN_SECONDS} s for the proxies to follow the new master; stopping"; sleep {DRAIN_SECONDS}; finish 0; }}
role() {{ {cli} -p {port} role 2>/dev/null | head -n 1 | tr -d "$CR"; }}
[ "$(role)" = master ] || {{ say "a replica: nothing to hand over"; finish 0; }}
{ask}
set -- $master
[ "$1:$2" = "$POD_IP:{port}" ] || {{ say "the Sentinels name ${{1:-no master}}, not this pod: nothing to hand over"; finish 0; }}
online=0
info=$({cli} -p {port} info replication 2>/dev/null)
while IFS=: read -r k v; do
  case $k in slave[0-9]*) case $v in *state=online*) online=$((online + 1));; esac;; esac
done <<EOF
$info
EOF
[ "$online" -gt 0 ] || {{ say "no online replica: stopping as the master"; finish 0; }}
{cli} -p {port} client pause {pause_ms} write >/dev/null
say "writes paused; replicas acknowledging everything: $({cli} -p {port} wait 1 2000)"
asked=
for a in {list}; do
  out=$({cli} -h "${{a%:*}}" -p "${{a##*:}}" sentinel failover {group} 2>&1)
  case $out in OK*) asked=$a; break;; esac
  say "Sentinel $a: $out"
done
if [ -z "$asked" ]; then
  {cli} -p {port} client unpause >/dev/null
  say "no Sentinel accepted SENTINEL FAILOVER: stopping as the master"
  finish 1
fi
say "SENTINEL FAILOVER accepted by $asked"
while [ "$ticks" -gt 0 ]; do
  sleep 0.2; ticks=$((ticks - 1))
  if [ "$(role)" = slave ]; then {cli} -p {port} client unpause >/dev/null; say "now a replica"; drain; fi
  reply=$({cli} -h "${{asked%:*}}" -p "${{asked##*:}}" --raw sentinel get-master-addr-by-name {group} 2>/dev/null)
  set -- $reply
  if [ $# -eq 2 ] && [ "$1:$2" != "$POD_IP:{port}" ] && [ "$({cli} -h "$1" -p "$2" role 2>/dev/null | head -n 1 | tr -d "$CR")" = master ]; then
    {cli} -p {port} replicaof "$1" "$2" >/dev/null
    {cli} -p {port} client unpause >/dev/null
    say "$1:$2 promoted; now its replica"
    drain
  fi
done
{cli} -p {port} client unpause >/dev/null
say "still the master after {budget_seconds} s: stopping anyway (the Sentinels fail over on their own)"
finish 1
"#,
        ask = ask_sentinels(cli, group, sentinels),
        list = sentinels.join(" "),
    )
}

/// The Sentinel container's start: a writable copy of `sentinel.conf` made once per pod, with
/// the pod's address and the password.
pub fn sentinel_start(binary: &str) -> String {
    format!(
        r#"conf=/sentinel/sentinel.conf
if [ ! -s "$conf" ]; then
  cp /etc/cinnabar/sentinel.conf "$conf.new"
  printf 'sentinel announce-ip %s\nrequirepass "%s"\nsentinel sentinel-pass "%s"\n' "$POD_IP" "$REDIS_PASSWORD" "$REDIS_PASSWORD" >> "$conf.new"
  mv "$conf.new" "$conf"
fi
exec {binary} "$conf" --sentinel"#
    )
}

/// Builds every object of a Sentinel group (after [`validate`]).
///
/// # Errors
/// The spec is invalid ([`SpecError`]).
pub fn build_group(cluster: &RedisCluster, options: &BuildOptions) -> Result<Objects, SpecError> {
    let spec = &cluster.spec;
    validate(spec)?;
    let (server, _) = image_version(&spec.image)?;
    let (binary, cli) = if server == "valkey" {
        ("valkey-server", "valkey-cli")
    } else {
        ("redis-server", "redis-cli")
    };
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
    let sentinels = sentinel_addresses(&name, &namespace, spec.sentinels);

    let config_map = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(&format!("{name}-config"), "redis"),
        "data": {"redis.conf": redis_conf(spec), "sentinel.conf": sentinel_conf()},
    }))?;
    let headless = |service: &str, component: &str, port_name: &str, port: u16| {
        typed(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(service, component),
            "spec": {
                "clusterIP": "None",
                // A pod asks the Sentinels (and is asked) before anyone is ready.
                "publishNotReadyAddresses": true,
                "selector": selector(&name, component),
                "ports": [{"name": port_name, "port": port, "targetPort": port_name}],
            },
        }))
    };
    let headless_service = headless(&format!("{name}-nodes"), "redis", "redis", REDIS_PORT)?;
    let sentinel_service = headless(
        &format!("{name}-sentinels"),
        "sentinel",
        "sentinel",
        SENTINEL_PORT,
    )?;
    // Without the proxy, clients need Sentinel support: the Service leads them to the
    // Sentinels, never to a data pod that may be a replica.
    let client_service = if spec.proxy.enabled {
        json!({"selector": selector(&name, "proxy"), "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}]})
    } else {
        json!({"selector": selector(&name, "sentinel"), "ports": [{"name": "sentinel", "port": SENTINEL_PORT, "targetPort": "sentinel"}]})
    };
    let client_service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&name, if spec.proxy.enabled { "proxy" } else { "sentinel" }),
        "spec": client_service,
    }))?;

    let set_name = format!("{name}-redis");
    let mut pod_labels = labels(&name, "redis");
    // The group is the resource's one shard: the pods read as the planner's nodes like a
    // cluster's (see `crate::pods`).
    pod_labels.insert(SHARD_LABEL.to_owned(), "0".to_owned());
    let redis_selector = json!({
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "redis",
        SHARD_LABEL: "0",
    });
    let mut redis_set = statefulset(
        &name,
        spec,
        server,
        0,
        1 + u32::from(spec.replicas_per_shard),
        meta(&set_name, "redis"),
        &pod_labels,
        &redis_selector,
    );
    let container = &mut redis_set["spec"]["template"]["spec"]["containers"][0];
    container["command"] = json!(["sh", "-c", redis_start(binary, cli, &name, &sentinels)]);
    container["ports"] = json!([{"name": "redis", "containerPort": REDIS_PORT}]);
    container["lifecycle"] = json!({"preStop": {"exec": {"command": ["sh", "-c", prestop_script(cli, REDIS_PORT, &name, &sentinels, PRESTOP_FAILOVER_SECONDS)]}}});
    let redis_set = typed(redis_set)?;
    let sentinel_set = typed(sentinel_statefulset(
        &name,
        spec,
        binary,
        cli,
        meta(&format!("{name}-sentinel"), "sentinel"),
    ))?;
    let pdb = |pdb_name: &str, component: &str, match_labels: Value| {
        typed(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(pdb_name, component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": match_labels}},
        }))
    };
    let pdbs = vec![
        pdb(&set_name, "redis", redis_selector)?,
        pdb(
            &format!("{name}-sentinel"),
            "sentinel",
            selector(&name, "sentinel"),
        )?,
    ];
    let (proxy, service_monitor) = proxy_front(cluster, &name, &namespace, spec, options, &meta)?;
    Ok(Objects {
        config_map,
        headless_service,
        client_service,
        // Index 0 is the data pods' (the reconciler reads its revision as shard 0's).
        statefulsets: vec![redis_set, sentinel_set],
        pdbs,
        node_port_services: Vec::new(),
        proxy,
        service_monitor,
        sync: None,
        backup: None,
        sentinel_service: Some(sentinel_service),
    })
}

fn sentinel_statefulset(
    name: &str,
    spec: &RedisClusterSpec,
    binary: &str,
    cli: &str,
    metadata: Value,
) -> Value {
    let placement = &spec.placement;
    let own = selector(name, "sentinel");
    let (host_required, host_preferred) =
        spread_rule(placement.host_spread, "kubernetes.io/hostname", &own);
    let (zone_required, zone_preferred) =
        spread_rule(placement.zone_spread, "topology.kubernetes.io/zone", &own);
    let mut preferred: Vec<Value> = host_preferred.into_iter().chain(zone_preferred).collect();
    // Where possible, a machine that holds a data pod holds no voter.
    preferred.push(json!({"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": selector(name, "redis")}, "topologyKey": "kubernetes.io/hostname"}}));
    let required: Vec<Value> = host_required.into_iter().chain(zone_required).collect();
    let mut anti = json!({"preferredDuringSchedulingIgnoredDuringExecution": preferred});
    if !required.is_empty() {
        anti["requiredDuringSchedulingIgnoredDuringExecution"] = json!(required);
    }
    let ready = format!(
        "export REDISCLI_AUTH=\"$REDIS_PASSWORD\"; [ \"$({cli} -p {SENTINEL_PORT} --raw sentinel get-master-addr-by-name {name} | sed -n 2p)\" -gt 0 ]"
    );
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": format!("{name}-sentinels"),
            "replicas": spec.sentinels,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": own},
            "template": {
                "metadata": {
                    "labels": labels(name, "sentinel"),
                    "annotations": {"cinnabar.io/config-fingerprint": fingerprint(&sentinel_conf())},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "affinity": {"podAntiAffinity": anti},
                    "tolerations": placement.tolerations,
                    "nodeSelector": placement.node_selector,
                    "volumes": [
                        {"name": "config", "configMap": {"name": format!("{name}-config")}},
                        {"name": "sentinel", "emptyDir": {}},
                    ],
                    "containers": [{
                        "name": "sentinel",
                        "image": spec.image,
                        "command": ["sh", "-c", sentinel_start(binary)],
                        "env": [
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{name}-auth"), "key": PASSWORD_KEY}}},
                        ],
                        "ports": [{"name": "sentinel", "containerPort": SENTINEL_PORT}],
                        // Ready once it monitors the group: a replaced Sentinel counts (and the
                        // StatefulSet's rolling update goes on) only after the operator has it
                        // monitor the master again.
                        "readinessProbe": {
                            "exec": {"command": ["sh", "-c", ready]},
                            "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2,
                        },
                        "livenessProbe": {
                            "tcpSocket": {"port": "sentinel"},
                            "initialDelaySeconds": 30, "periodSeconds": 10, "failureThreshold": 6,
                        },
                        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/cinnabar"},
                            {"name": "sentinel", "mountPath": "/sentinel"},
                        ],
                    }],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sentinel_is_named_by_its_pods_stable_dns_name() {
        assert_eq!(
            sentinel_addresses("orders", "shop", 3),
            [
                "orders-sentinel-0.orders-sentinels.shop.svc:26379",
                "orders-sentinel-1.orders-sentinels.shop.svc:26379",
                "orders-sentinel-2.orders-sentinels.shop.svc:26379",
            ]
        );
        let section = proxy_group_section("orders", "shop", 3, "/etc/cinnabar/auth/password");
        assert!(
            section.contains("[group]\nname = \"orders\"\n"),
            "{section}"
        );
        assert!(
            section.contains("sentinel_password_file = \"/etc/cinnabar/auth/password\""),
            "{section}"
        );
    }
}
