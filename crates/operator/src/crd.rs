//! The `RedisCluster` custom resource (`cinnabar.io/v1alpha1`): what users write, and the status
//! the operator reports. The CRD YAML in `deploy/crds/` is generated from these types
//! (`cinnabar crd`), never written by hand.
//!
//! Decisions:
//! - Field names are camelCase, as Kubernetes users expect; every optional section has defaults
//!   that give a small, safe cluster (3 shards × 1 replica, AOF everysec, host spread required).
//! - Rules the API server can check are CEL rules on the schema (shards ≥ 1, a memory limit when
//!   maxmemory is derived from it, autoscaling bounds); the rest is checked by
//!   [`crate::validate`] and reported as a `Degraded` condition, with nothing changed.
//! - The operation in progress (the planner's journal) lives in the status, so an operator that
//!   restarts resumes it.
//! - **Moving data in** is `spec.syncFrom` on the cluster itself, not a separate `RedisMigration`
//!   resource: a sync has exactly one target (this cluster), its objects share the cluster's
//!   owner, labels, password and lifetime, and the next step, the proxy switching its backend
//!   from the source to this cluster, needs the sync's progress next to the proxy's own spec
//!   and status. The progress is `status.sync` (phase, lag, and per source stream the applied
//!   offset, which the switch compares with the offset the source had at its barrier) and the
//!   `Synced` condition. Removing `syncFrom` ends the sync and deletes its objects. Changing
//!   `address` starts a sync from the new source (its status starts from nothing; the stored
//!   checkpoint names the old source's replication id, so the new source answers with a full
//!   resynchronisation, never a wrong continuation).
//! - `syncFrom.address` is checked twice: by a CEL rule (the API server refuses anything but
//!   `HOST:PORT` or `[IPV6]:PORT`) and by [`crate::validate`] (the port's range too), which
//!   guards objects written before the rule existed.
//! - **Backups** are `spec.backup` and `spec.restoreFrom` on the cluster too, for the same
//!   reasons: they read and fill this cluster only, with its password, and a scale-in must wait
//!   for a backup of exactly this cluster. Their state is `status.backup` / `status.restore`
//!   and the `BackedUp` / `Restored` conditions (see [`crate::backup`]).
//! - **Sentinel groups** are `topology: Sentinel` on the same kind, not a sibling kind: the
//!   image, resources, persistence, placement, proxy, monitoring and pause work the same, and
//!   the proxy in front speaks the same protocol whatever the backend. The group is the one
//!   "shard" of the spec (`shards: 1`, `replicasPerShard` its replicas) plus `sentinels`. The
//!   topology is fixed at creation (a CEL transition rule, and the operator refuses a spec
//!   whose topology differs from `status.topology`): the data would have to move, which is
//!   `syncFrom` into a new resource.

// The `KubeSchema` derive makes a private copy of each struct it validates, which the lint
// mistakes for an unreachable `pub` item.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Redis Cluster (shards × replicas) with an optional proxy in front, managed by Cinnabar.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cinnabar.io",
    version = "v1alpha1",
    kind = "RedisCluster",
    namespaced,
    status = "RedisClusterStatus",
    shortname = "redisc",
    category = "cinnabar",
    printcolumn = r#"{"name":"Topology","type":"string","priority":1,"jsonPath":".spec.topology"}"#,
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".spec.shards"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicasPerShard"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Slots","type":"string","jsonPath":".status.conditions[?(@.type==\"SlotsCovered\")].status"}"#,
    printcolumn = r#"{"name":"Operation","type":"string","jsonPath":".status.operation.name"}"#,
    printcolumn = r#"{"name":"Sync","type":"string","priority":1,"jsonPath":".status.sync.phase"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"string","priority":1,"jsonPath":".status.backup.last.takenAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxmemoryPercent) || self.maxmemoryPercent == 0 || (has(self.resources) && has(self.resources.limits) && 'memory' in self.resources.limits)").message("maxmemory is derived from the memory limit: set resources.limits.memory, or maxmemoryPercent: 0 for no maxmemory"))]
#[x_kube(validation = Rule::new("(has(self.topology) ? self.topology : 'Cluster') == (has(oldSelf.topology) ? oldSelf.topology : 'Cluster')").message("topology cannot change once created: create another RedisCluster and move the data with syncFrom"))]
#[x_kube(validation = Rule::new("!has(self.topology) || self.topology != 'Sentinel' || self.shards == 1").message("topology Sentinel is one master with its replicas: shards must be 1 (replicasPerShard counts the replicas)"))]
pub struct RedisClusterSpec {
    /// `Cluster` (Redis Cluster, the default) or `Sentinel` (one master, `replicasPerShard`
    /// replicas and `sentinels` Sentinels; `shards` must be 1). Fixed at creation.
    #[serde(default, skip_serializing_if = "Topology::is_cluster")]
    pub topology: Topology,
    /// With `topology: Sentinel`: how many Sentinels watch the group (odd, at least 3, so a
    /// majority survives the loss of one); their quorum is a majority.
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 3, max = 9))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("sentinels must be odd: an even count adds no tolerance to the loss of a Sentinel"))]
    pub sentinels: u16,
    /// Number of shards (masters); at least 1.
    #[x_kube(validation = Rule::new("self >= 1").message("a cluster needs at least one shard"))]
    #[schemars(range(min = 1, max = 1000))]
    pub shards: u16,
    /// Replicas per shard; 0 means no failover.
    #[serde(default = "default_replicas")]
    #[schemars(range(max = 5))]
    pub replicas_per_shard: u16,
    /// Server image: official `redis` 7.x or `valkey/valkey` 8.x.
    #[serde(default = "default_image")]
    pub image: String,
    /// CPU and memory for each Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `maxmemory` as a percentage of the memory limit (default 80); 0 sets no `maxmemory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 95))]
    pub maxmemory_percent: Option<u8>,
    /// `maxmemory-policy` (default `allkeys-lru`).
    #[serde(default = "default_policy")]
    pub maxmemory_policy: String,
    /// Extra `redis.conf` directives (name → value). Directives the operator owns (`port`,
    /// `cluster-*`, `dir`, `appendonly`, …) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redis_config: BTreeMap<String, String>,
    /// Durability and volumes.
    #[serde(default)]
    pub persistence: Persistence,
    /// Where pods may run.
    #[serde(default)]
    pub placement: Placement,
    /// How clients reach the nodes.
    #[serde(default)]
    pub exposure: Exposure,
    /// The Cinnabar proxy in front of the cluster.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// Prometheus integration.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Stop reconciling (for manual work); the status says so.
    #[serde(default)]
    pub paused: bool,
    /// Copy the data of another Redis (standalone, replica or any node of a Redis Cluster) into
    /// this cluster and keep following its writes (`cinnabar sync` in a pod of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_from: Option<SyncFrom>,
    /// Let the operator change the cluster's size from what the masters report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ClusterAutoscaling>,
    /// Backups to object storage on a schedule (`cinnabar backup` in a CronJob), optionally a
    /// continuous archive for point-in-time restores, and a backup before every scale-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Fill this new cluster from a backup once it serves every slot (`cinnabar restore` in a
    /// Job, run once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
}

/// Backups of the cluster (`spec.backup`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.url.startsWith('s3://')").message("backup.url must be s3://BUCKET/PREFIX (the backup pods have no other storage)"))]
pub struct BackupSpec {
    /// The store: `s3://BUCKET/PREFIX` (AWS or any S3-compatible server). `file://` is the
    /// local platform's: a backup pod's filesystem is read-only and outlives no pod.
    pub url: String,
    /// When to back up, in cron syntax (default `0 * * * *`, hourly).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// A Secret whose keys become the backup pods' environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`, …): credentials never appear in
    /// arguments or in the objects the operator writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The S3 endpoint (`AWS_ENDPOINT_URL`) of an S3-compatible server; AWS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The S3 region (`AWS_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Backups kept after each backup (default 7); older ones are deleted.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep: u32,
    /// Also delete backups older than this many days (the newest is always kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub keep_days: Option<u32>,
    /// Archive every shard's command stream continuously (a `cinnabar backup --continuous`
    /// Deployment), so a restore can reach any moment (`restoreFrom.at`).
    #[serde(default)]
    pub continuous: bool,
    /// CPU and memory for the backup containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_schedule() -> String {
    "0 * * * *".to_owned()
}

fn default_keep() -> u32 {
    7
}

/// The backup a new cluster starts from (`spec.restoreFrom`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.url.startsWith('s3://')").message("restoreFrom.url must be s3://BUCKET/PREFIX (the restore pod has no other storage)"))]
#[x_kube(validation = Rule::new("!has(self.backup) || !has(self.at)").message("restoreFrom: set backup or at, not both"))]
pub struct RestoreFrom {
    /// The store: `s3://BUCKET/PREFIX`.
    pub url: String,
    /// A Secret whose keys become the restore pod's environment (as `backup.credentialsSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The S3 endpoint (`AWS_ENDPOINT_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The S3 region (`AWS_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// This backup (default: the newest in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The state at this time (RFC 3339, `2026-12-05T17:04:05Z`): a base backup plus its
    /// continuous archive up to then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Only backups of this cluster name in the store (for a store shared by clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// CPU and memory for the restore container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Autoscaling of the cluster itself (the proxy's is `proxy.autoscaling`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAutoscaling {
    /// The number of shards, from the masters' memory use and load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardAutoscaling>,
}

/// Shard autoscaling: the operator reads every master's `INFO` when the cluster is idle and,
/// when the policy says so, changes `spec.shards` itself; the change is then an ordinary scale
/// through the planner. The policy is `cinnabar_cluster::autoscale`, the same as `cinnabar
/// autoscale` on the local platform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("autoscaling.shards.min must not exceed max"))]
#[x_kube(validation = Rule::new("!has(self.memoryLowPercent) || self.memoryLowPercent < self.memoryHighPercent").message("autoscaling.shards.memoryLowPercent must be below memoryHighPercent"))]
pub struct ShardAutoscaling {
    /// Fewest shards.
    #[schemars(range(min = 1, max = 1000))]
    pub min: u16,
    /// Most shards.
    #[schemars(range(min = 1, max = 1000))]
    pub max: u16,
    /// Grow when any master uses at least this percentage of its `maxmemory` (default 80);
    /// needs a `maxmemory` (a memory limit with `maxmemoryPercent` above 0).
    #[serde(default = "default_memory_high")]
    #[schemars(range(min = 1, max = 100))]
    pub memory_high_percent: u8,
    /// Grow when the masters together serve more than this many operations per second per
    /// shard (`instantaneous_ops_per_sec`); not used when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ops_per_shard: Option<u64>,
    /// Shrink by one shard when every master uses less than this percentage of its
    /// `maxmemory` (and the data still fits below the high-water mark); unset (the default)
    /// never shrinks, since shrinking moves data for a saving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub memory_low_percent: Option<u8>,
    /// No decision within this many seconds of the last change (default 300).
    #[serde(default = "default_cooldown")]
    #[schemars(range(max = 86400))]
    pub cooldown_seconds: u32,
}

fn default_memory_high() -> u8 {
    80
}

fn default_cooldown() -> u32 {
    300
}

/// A Secret key holding a password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    /// The Secret, in the cluster's namespace.
    pub name: String,
    /// The key whose value is the password (its first line is used).
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// The source of a sync (see `cinnabar sync`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(r"self.address.matches('^([^:\\s\\[\\]]+|\\[[0-9a-fA-F:.]+\\]):[0-9]{1,5}$')").message("syncFrom.address must be HOST:PORT, such as redis.legacy.svc:6379 or [fd00::5]:6379"))]
pub struct SyncFrom {
    /// The source, `HOST:PORT`: a standalone server, a replica, or any node of a Redis Cluster
    /// (one replication stream per master then).
    pub address: String,
    /// ACL user on the source; the default user when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The source's password, mounted into the sync pod as a file (never an argument or an
    /// environment value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKey>,
    /// Let a source `FLUSHALL`/`FLUSHDB` flush this cluster; without it a flush stops the sync
    /// (phase `Failed`), since it would lose data.
    #[serde(default)]
    pub allow_flush: bool,
    /// Source databases other than 0 to merge into this cluster's only database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_dbs: Vec<u64>,
    /// Source databases whose keys and commands are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_dbs: Vec<u64>,
    /// The `Synced` condition is true while every source stream applies its command stream and
    /// is at most this many seconds behind (default 5).
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 1, max = 3600))]
    pub max_lag_seconds: u32,
    /// CPU and memory for the sync container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Once in sync, move the clients of another `RedisCluster` (the one this sync reads from)
    /// to this cluster online: its proxies switch their backend here, then the sync stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchSpec>,
}

fn default_max_lag() -> u32 {
    5
}

/// The online switch at the end of a sync (`syncFrom.switch`): every proxy of `cluster` holds
/// its clients, the sync catches up with what they acknowledged, and all flip to this cluster
/// together; the sync then stops, since writes now come here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchSpec {
    /// The `RedisCluster` in this namespace whose proxies move to this cluster: the one
    /// `syncFrom.address` points at. It keeps its Service, so its clients stay connected;
    /// its proxies are configured from this cluster from then on (`status.servedBy` on it).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63").message("syncFrom.switch.cluster must be the name of a RedisCluster in this namespace"))]
    pub cluster: String,
    /// The longest the proxies hold their clients while the sync catches up, in milliseconds
    /// (default 2000); a switch that would take longer is abandoned and retried, with the
    /// clients going on with the old cluster meanwhile.
    #[serde(default = "default_max_pause_ms")]
    #[schemars(range(min = 100, max = 30000))]
    pub max_pause_ms: u32,
    /// Attempts before the switch is abandoned (default 5). The first retry comes 10 s after a
    /// failure, each next one twice as late (at most 5 minutes). An abandoned switch is the
    /// `Failed` condition; any change to the spec starts the attempts again.
    #[serde(default = "default_switch_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
}

fn default_max_pause_ms() -> u32 {
    2000
}

fn default_switch_attempts() -> u32 {
    5
}

/// What kind of Redis deployment a `RedisCluster` is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Topology {
    /// Redis Cluster: `shards` masters with their replicas, slots spread over them.
    #[default]
    Cluster,
    /// One master with its replicas, failed over by a Sentinel quorum (no slots: every
    /// database and multi-key command works).
    Sentinel,
}

impl Topology {
    /// The default (so it is left out of serialized specs).
    pub fn is_cluster(&self) -> bool {
        *self == Self::Cluster
    }
}

fn default_sentinels() -> u16 {
    3
}

fn default_replicas() -> u16 {
    1
}

fn default_image() -> String {
    "redis:7.2".to_owned()
}

fn default_policy() -> String {
    "allkeys-lru".to_owned()
}

/// AOF fsync policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Fsync {
    /// `appendfsync always`.
    Always,
    /// `appendfsync everysec`: at most a second of writes lost on a crash.
    #[default]
    Everysec,
    /// `appendfsync no`: the OS decides.
    No,
}

/// What happens to volumes when the cluster is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Retention {
    /// Keep the PVCs (the data can be re-attached by a new cluster of the same name).
    #[default]
    Retain,
    /// Delete the PVCs with the cluster.
    Delete,
}

/// Durability and volumes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// Append-only file; `None` turns AOF off.
    #[serde(default = "default_aof")]
    pub aof: Option<Fsync>,
    /// RDB snapshot schedule in `save` syntax (`"3600 1 300 100"`); empty turns RDB off.
    #[serde(default)]
    pub rdb_save: String,
    /// Volume size per node (a Kubernetes quantity); `None` keeps data on an `emptyDir`.
    #[serde(default = "default_volume", skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// What happens to the volumes when the `RedisCluster` is deleted.
    #[serde(default)]
    pub retention: Retention,
}

fn default_aof() -> Option<Fsync> {
    Some(Fsync::Everysec)
}

fn default_volume() -> Option<String> {
    Some("1Gi".to_owned())
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            aof: default_aof(),
            rdb_save: String::new(),
            size: default_volume(),
            storage_class: None,
            retention: Retention::default(),
        }
    }
}

/// How strictly a spread rule applies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Spread {
    /// Never violated: a pod stays pending rather than break it.
    Required,
    /// Followed when the scheduler can.
    Preferred,
    /// Not applied.
    Disabled,
}

/// Where pods may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Members of one shard on different Kubernetes nodes (default `Required`).
    #[serde(default = "required")]
    pub host_spread: Spread,
    /// Members of one shard in different zones (default `Preferred`).
    #[serde(default = "preferred")]
    pub zone_spread: Spread,
    /// Extra affinity, merged with the spread rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations for every Redis pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node selector for every Redis pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Extra topology spread constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

fn required() -> Spread {
    Spread::Required
}

fn preferred() -> Spread {
    Spread::Preferred
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            host_spread: Spread::Required,
            zone_spread: Spread::Preferred,
            affinity: None,
            tolerations: Vec::new(),
            node_selector: BTreeMap::new(),
            topology_spread_constraints: Vec::new(),
        }
    }
}

/// How clients reach the nodes (and how nodes announce themselves in redirects).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ExposureMode {
    /// Pod addresses inside the cluster, through a headless Service that publishes not-ready
    /// addresses (nodes must find each other before they are ready).
    #[default]
    InCluster,
    /// Pods on the host network: node addresses are host addresses.
    HostNetwork,
    /// One NodePort Service per pod; nodes announce `node address:node port`, so redirects work
    /// from outside the Kubernetes cluster.
    NodePort,
}

/// How clients reach the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The mode.
    #[serde(default)]
    pub mode: ExposureMode,
}

/// Horizontal autoscaling of the proxy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// Fewest proxy pods.
    #[schemars(range(min = 1))]
    pub min_replicas: u16,
    /// Most proxy pods.
    #[schemars(range(min = 1))]
    pub max_replicas: u16,
    /// Average CPU utilisation to aim for, in percent of the request.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 10, max = 95))]
    pub target_cpu_percent: u8,
}

fn default_target_cpu() -> u8 {
    70
}

/// The Cinnabar proxy in front of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Run the proxy (default true). Without it clients must speak cluster mode.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Proxy pods when not autoscaled.
    #[serde(default = "default_proxy_replicas")]
    pub replicas: u16,
    /// Autoscaling; when set, `replicas` is only the starting point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Secret holding the proxy's users and roles (key `access.toml`: the `[access]` section of
    /// `cinnabar.toml`). Without it every client is the built-in `readwrite` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_secret: Option<String>,
    /// Commands refused to non-admin roles beyond the built-in deny list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_denied_commands: Vec<String>,
    /// Seconds a stopping proxy keeps serving what it accepted (preStop drain).
    #[serde(default = "default_drain")]
    pub drain_seconds: u32,
    /// CPU and memory for each proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn yes() -> bool {
    true
}

fn default_proxy_replicas() -> u16 {
    2
}

fn default_drain() -> u32 {
    20
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: default_proxy_replicas(),
            autoscaling: None,
            users_secret: None,
            extra_denied_commands: Vec::new(),
            drain_seconds: default_drain(),
            resources: None,
        }
    }
}

/// Prometheus integration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// `prometheus.io/scrape` annotations on the proxy and exporter pods (default true).
    #[serde(default = "yes")]
    pub scrape_annotations: bool,
    /// Create a `ServiceMonitor` (needs the Prometheus Operator's CRD).
    #[serde(default)]
    pub service_monitor: bool,
    /// Port of the proxy's admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
}

fn default_metrics_port() -> u16 {
    9121
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            scrape_annotations: true,
            service_monitor: false,
            metrics_port: default_metrics_port(),
        }
    }
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisClusterStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `SlotsCovered`, `ReconciliationPaused`, each with a
    /// machine-readable reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per shard, in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardStatus>,
    /// The operation under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
    /// The sync from `spec.syncFrom`, while one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncState>,
    /// The `RedisCluster` whose nodes this cluster's proxies serve since an online switch
    /// (`syncFrom.switch` on that cluster); absent while they serve this cluster's own nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// Shard autoscaling (`spec.autoscaling.shards`): the last decision, kept for the cool-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingState>,
    /// Backups (`spec.backup`): the last successful one and the newest Job's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupState>,
    /// The restore of `spec.restoreFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreState>,
    /// The topology the objects were built for; a spec naming another one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// With `topology: Sentinel`: the group by role, as the nodes and Sentinels report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupStatus>,
}

/// A Sentinel group as observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// The name the Sentinels monitor it under (the resource's name).
    pub name: String,
    /// The pod the Sentinels name master, when it says `role:master`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_pod: Option<String>,
    /// Its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Its replication offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_offset: Option<u64>,
    /// Every other data pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<GroupReplicaStatus>,
    /// Every Sentinel pod and its view.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sentinels: Vec<GroupSentinelStatus>,
    /// The quorum's view in one sentence (`3/3 Sentinels name 10.0.0.5:6379, quorum 2`).
    #[serde(default)]
    pub quorum: String,
}

/// A data pod that is not the master.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupReplicaStatus {
    /// The pod.
    pub pod: String,
    /// Its address, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `replica`, `master` (one the Sentinels do not name: it is made a replica) or
    /// `unreachable`.
    pub role: String,
    /// The master it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// Its link to the master is up.
    #[serde(default)]
    pub link_up: bool,
    /// Its replication offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// How far behind the master, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Seconds since its last acknowledgement, as the master sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
}

/// A Sentinel pod and what it says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupSentinelStatus {
    /// The pod.
    pub pod: String,
    /// Its address, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// It answered and monitors the group.
    pub up: bool,
    /// The master it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Its flags for the master (`master`, `s_down`, `o_down`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Its configuration epoch (raised by every failover).
    #[serde(default)]
    pub epoch: u64,
    /// Replicas it knows.
    #[serde(default)]
    pub known_replicas: u32,
    /// Other Sentinels it knows.
    #[serde(default)]
    pub known_sentinels: u32,
    /// Why it does not count (unreachable, does not monitor the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One backup, as its pod reported it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The backup's name in the store (what `restoreFrom.backup` takes).
    pub name: String,
    /// When its snapshot was taken (RFC 3339).
    pub taken_at: String,
    /// RDB bytes stored.
    #[serde(default)]
    pub bytes: u64,
    /// Keys stored.
    #[serde(default)]
    pub keys: u64,
    /// The Job that took it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job: String,
}

/// Backups as the operator last saw them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupState {
    /// The last backup that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<BackupRecord>,
    /// The newest finished backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// Whether that Job failed.
    #[serde(default)]
    pub last_job_failed: bool,
    /// Why it failed (the end of its pod's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the continuous archive Deployment runs (so it is deleted once turned off).
    #[serde(default)]
    pub continuous: bool,
    /// Whether the archive's pod runs (with `continuous`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archive_running: bool,
    /// Why the archive's pod keeps failing (the end of its log), while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_error: Option<String>,
}

/// Where a restore is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RestorePhase {
    /// Waiting for the cluster to serve every slot.
    #[default]
    Pending,
    /// The restore Job runs.
    Running,
    /// The data is in; the proxy serves clients.
    Succeeded,
    /// The Job failed; it is not run again (the cluster may hold part of the data).
    Failed,
}

/// The restore of `spec.restoreFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreState {
    /// Where it is.
    pub phase: RestorePhase,
    /// The store it restores from.
    pub url: String,
    /// The Job (`NAME-restore`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job: String,
    /// The backup restored (from the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Keys written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// The point restored to (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_to: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What the shard autoscaler last did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingState {
    /// When the last scale was decided: the cool-down counts from here, across operator
    /// restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Shards before and after the last scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale: Option<String>,
    /// The metric that caused it, with its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the last evaluation found (why nothing changed, when nothing did).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_evaluation: String,
}

/// Where a sync is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SyncPhase {
    /// Not started yet (waiting for this cluster to serve every slot, for the sync pod, or for
    /// its first report), or its metrics cannot be read now (the last numbers are kept).
    #[default]
    Pending,
    /// Connecting to the source or applying its snapshot (a full resynchronisation).
    Copying,
    /// Every source stream applies the source's command stream.
    Streaming,
    /// The sync stopped on an error it will not retry (the pod keeps restarting); `lastError`
    /// says why.
    Failed,
    /// Stopped by the operator after the online switch (`syncFrom.switch`): the clients write
    /// to this cluster now, so nothing is left to copy.
    Stopped,
}

/// A sync's progress, read from the sync pod's metrics by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// The source, as in `spec.syncFrom.address`.
    pub source: String,
    /// Where the sync is.
    pub phase: SyncPhase,
    /// Largest lag among the source streams, in bytes (source offset minus applied offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Largest lag among the source streams, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Keys of the full sync applied, all streams together.
    #[serde(default)]
    pub keys_applied: u64,
    /// Commands of the stream applied, all streams together.
    #[serde(default)]
    pub commands_applied: u64,
    /// One entry per source stream (one per master of a Redis Cluster source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<SyncStreamState>,
    /// When the sync pod's metrics were last read; a switch must not trust older numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// The last error the sync stopped on, or why its metrics could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The online switch of `syncFrom.switch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchState>,
}

/// Where an online switch is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum SwitchPhase {
    /// Waiting for the sync to be in sync (`InSync`).
    #[default]
    Waiting,
    /// An attempt failed (every proxy went on with the old cluster); `nextAttempt` says when
    /// the next one comes.
    Retrying,
    /// Every proxy of the old cluster serves this cluster; the sync was stopped.
    Switched,
    /// `maxAttempts` attempts failed; nothing more is tried until the spec changes.
    Abandoned,
}

/// The online switch: its attempts and, once done, its report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchState {
    /// The `RedisCluster` whose proxies move (`syncFrom.switch.cluster`).
    pub cluster: String,
    /// Where the switch is.
    pub phase: SwitchPhase,
    /// Attempts made (failed ones and the one that succeeded).
    #[serde(default)]
    pub attempts: u32,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<Time>,
    /// When the next attempt may start (after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Time>,
    /// When every proxy served this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<Time>,
    /// The longest any client was held (first prepare to last commit), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<f64>,
    /// The part of the pause spent waiting for the sync to apply the proxies' last writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_ms: Option<f64>,
    /// Per proxy pod, the result of the last attempt that reached it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<ProxySwitchResult>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Other `RedisCluster`s whose proxies served the old cluster (an earlier move) and were
    /// switched here with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_moved: Vec<String>,
    /// The `metadata.generation` whose attempts were used up (`Abandoned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned_generation: Option<i64>,
}

/// One proxy pod in a switch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySwitchResult {
    /// The proxy pod.
    pub pod: String,
    /// Its admin listener, `host:port`.
    pub address: String,
    /// Whether it serves this cluster now.
    pub switched: bool,
    /// Its own report (held clients, drained requests, connections ended), or why it did not
    /// switch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One source stream of a sync.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStreamState {
    /// The source master, `host:port`.
    pub source: String,
    /// Whether it applies the command stream (false while connecting or copying).
    pub streaming: bool,
    /// The source replication offset applied to this cluster and acknowledged by it: the
    /// number a backend switch compares with the source's offset at its barrier.
    pub offset: u64,
    /// Bytes received from the source and not yet applied.
    pub lag_bytes: u64,
    /// Seconds since this cluster last had everything received from the source.
    pub lag_seconds: f64,
}

/// One shard as observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Pod serving as master.
    pub master_pod: String,
    /// Pods replicating it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_pods: Vec<String>,
    /// Slot ranges as Redis prints them (`0-5460`).
    pub slots: String,
    /// Largest replication lag among its replicas, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_bytes: Option<u64>,
}

/// The operation under way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// `create`, `scale`, `rolling-update`, `heal`, …
    pub name: String,
    /// The step under way or last done, as one sentence.
    #[serde(default)]
    pub step: String,
    /// Steps done so far.
    #[serde(default)]
    pub steps_done: u32,
    /// The planner's journal (JSON), so a restarted operator resumes the operation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub journal: String,
}

/// The CRD as YAML, exactly as checked in under `deploy/crds/` (a test fails on drift).
///
/// # Errors
/// Only if the YAML writer fails, which would be a bug.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let body = serde_saphyr::to_string(&RedisCluster::crd())?;
    Ok(format!(
        "# Generated from crates/operator/src/crd.rs by `cinnabar crd`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_crd_carries_the_cel_rules_and_printer_columns() {
        let crd = serde_json::to_string(&RedisCluster::crd()).unwrap_or_default();
        assert!(crd.contains("a cluster needs at least one shard"), "{crd}");
        assert!(crd.contains("resources.limits.memory"), "{crd}");
        assert!(
            crd.contains("minReplicas must not exceed maxReplicas"),
            "{crd}"
        );
        assert!(crd.contains(r#""name":"Ready""#), "{crd}");
        assert!(crd.contains("syncFrom.address must be HOST:PORT"), "{crd}");
        assert!(crd.contains("topology cannot change once created"), "{crd}");
        assert!(crd.contains("sentinels must be odd"), "{crd}");
        assert!(crd.contains("shards must be 1"), "{crd}");
    }

    #[test]
    fn a_minimal_spec_gets_the_safe_defaults() {
        let spec: RedisClusterSpec = serde_json::from_value(serde_json::json!({"shards": 3}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.replicas_per_shard, 1);
        assert_eq!(spec.persistence.aof, Some(Fsync::Everysec));
        assert_eq!(spec.placement.host_spread, Spread::Required);
        assert!(spec.proxy.enabled);
        assert!(!spec.paused);
    }
}
