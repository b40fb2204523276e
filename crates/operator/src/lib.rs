//! The Kubernetes operator: `RedisCluster` as a Service.
//!
//! Layout:
//! - [`crd`]: the custom resource's spec and status (the CRD YAML is generated from them);
//!
//! Every change to Redis goes through the planner in `cinnabar-cluster`; this crate only turns
//! specs into Kubernetes objects and pods into planner nodes. It never re-implements a Redis
//! decision.

pub mod crd;

pub use crd::{RedisCluster, RedisClusterSpec, RedisClusterStatus};
