//! The Kubernetes operator: `RedisCluster` as a Service.
//!
//! Layout:
//! - [`crd`]: the custom resource's spec and status (the CRD YAML is generated from them);
//! - [`pods`]: Redis pods as the planner's nodes (pure);
//! - [`decide`]: what a reconcile does with Redis: wait, create, which planner operation (pure);
//! - [`status`]: conditions and the per-shard view (pure);
//! - [`leader`]: leader election with a Lease, so two operator replicas never act at once;
//! - [`validate`]: spec checks beyond the schema (pure);
//! - [`objects`]: the Kubernetes objects a cluster owns (pure);
//! - [`group_objects`]: the objects of a `topology: Sentinel` group: data and Sentinel
//!   StatefulSets, the proxy with the group backend, the preStop failover (pure);
//! - [`group`]: a group's reconcile: observe the pods and Sentinels, the planner's group path,
//!   the per-role status;
//! - [`reconcile`]: one reconcile: objects, at most one planner step, the status;
//! - [`autoscale`]: shard autoscaling (`spec.autoscaling.shards`) from the masters' `INFO`;
//! - [`controller`]: `cinnabar operator`: leader election, the controller, health and metrics;
//! - [`platform`]: the planner's platform over the Kubernetes API (pods of a StatefulSet per shard);
//! - [`sync`]: a sync's progress (`spec.syncFrom`) from its pod's metrics, for the status;
//! - [`switch`]: the online switch at the end of a sync (`spec.syncFrom.switch`);
//! - [`backup`]: backups, the continuous archive and restores (`spec.backup`,
//!   `spec.restoreFrom`) as Jobs running the CLI, and their reports read back for the status;
//!
//! Every change to Redis goes through the planner in `cinnabar-cluster`; this crate only turns
//! specs into Kubernetes objects and pods into planner nodes. It never re-implements a Redis
//! decision.

pub mod autoscale;
pub mod backup;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod group;
pub mod group_objects;
pub mod leader;
pub mod objects;
pub mod platform;
pub mod pods;
pub mod reconcile;
pub mod status;
pub mod switch;
pub mod sync;
pub mod validate;

pub use crd::{RedisCluster, RedisClusterSpec, RedisClusterStatus};
