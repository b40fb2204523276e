//! Failover drills: fail one master of a running Redis Cluster under a verifying workload,
//! measure what clients and the cluster went through, restore the node, and report.
//!
//! This crate speaks only the Redis protocol (through `cinnabar-cluster` and the `redis`
//! client); how a node is killed, paused or restored is the platform's business, behind the
//! [`NodeFaults`] trait (the `cinnabar` binary wires in the local platform's). It never
//! changes cluster topology itself: the failover it measures is Redis Cluster's own.
//!
//! Layout:
//! - [`failover`]: the drill's steps (`prepare`, then `run`), and what each milestone means;
//! - [`group`]: the same drill on a Sentinel group (detection and promotion as the Sentinels
//!   see them, rejoin as the old master's own `INFO replication` says);
//! - [`watch`]: reading the survivors' views (detection, promotion, rejoin), pure predicates;
//! - [`workload`]: the verifying client load, and reading every acknowledged write back;
//! - [`timeline`], [`histogram`]: per-second counts and latency in bounded memory;
//! - [`verdict`]: pass/fail rules, including what counts as Redis's replication window;
//! - [`report`], [`svg`]: the report as text, JSON and an SVG timeline chart;
//! - [`fault`], [`error`]: the platform trait and the errors.

pub mod error;
pub mod failover;
pub mod fault;
pub mod group;
pub mod histogram;
pub mod report;
pub mod svg;
pub mod timeline;
pub mod verdict;
pub mod watch;
pub mod workload;

pub use error::DrillError;
pub use failover::{DrillEvent, DrillOptions, DrillPlan, prepare, run};
pub use fault::{FaultError, FaultKind, NodeFaults};
pub use histogram::LatencyHistogram;
pub use report::{DrillReport, Milestone, ReportFiles};
pub use timeline::Timeline;
pub use verdict::Verdict;
pub use workload::WorkloadOptions;
