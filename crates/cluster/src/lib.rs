//! Redis Cluster control over the Redis protocol: the topology model, cluster creation and
//! health checks, shared by every platform (local processes, Kubernetes).
//!
//! This crate speaks only the Redis protocol to nodes it is given; it never starts, stops or
//! places processes (platforms do), and never waits on a node without a timeout.
//!
//! Layout, in the observe → plan → execute shape the planner grows into:
//! - observe: [`topology`] (`CLUSTER NODES`), [`shards`] (`CLUSTER SHARDS`), [`info`], [`mod@check`];
//! - observe: [`mod@observe`] (every platform node asked directly, ghosts, stale addresses);
//! - plan: [`mod@plan`] (pure: the next step of an operation, and the safety rules), [`placement`]
//!   (pure: who is master, who replicates whom, which slots), [`slots`], [`rebalance`] (pure:
//!   which slots move where so masters hold even or weighted shares);
//! - [`group_plan`] (pure: the next step of an operation on a Sentinel group);
//! - [`sentinel`]: Sentinel-managed groups (who the quorum names master, each node's role);
//! - [`platform`]: what the planner needs from whatever runs the nodes;
//! - execute: [`mod@execute`] (one planned step), [`create`], [`migrate`] (moving slots and their
//!   keys, closing slots left open), over [`client`] connections;
//! - run: [`operate`] (observe → plan → execute until done, with a journal to resume from);
//! - [`addr`], [`error`]: shared vocabulary.

pub mod addr;
pub mod autoscale;
pub mod check;
pub mod client;
pub mod create;
pub mod credentials;
pub mod error;
pub mod execute;
pub mod group_plan;
pub mod info;
pub mod migrate;
mod migrate_steps;
pub mod observe;
pub mod operate;
pub mod placement;
pub mod plan;
pub mod platform;
pub mod rebalance;
pub mod sentinel;
pub mod shards;
pub mod slots;
pub mod topology;

pub use addr::NodeAddr;
pub use check::{
    CheckOptions, CheckReport, NodeReport, OpenSlotState, Problem, check, check_with, wait_healthy,
};
pub use client::{NodeClient, Timeouts};
pub use create::{CreateProgress, CreateSpec, create_cluster, create_cluster_as};
pub use credentials::Credentials;
pub use error::ClusterError;
pub use execute::{ExecuteOptions, Executed, execute};
pub use info::{ClusterInfo, ReplicationInfo};
pub use migrate::{
    MigrateOptions, MigrateProgress, MigrateSummary, SlotMigrator, SlotRepair, StepOutcome,
};
pub use observe::{Ghost, NodeFacts, Observed, ObservedNode, ObservedShard, observe};
pub use operate::{
    Advance, FileJournal, Journal, JournalEntry, MemoryJournal, OperateError, OperateEvent,
    OperateOptions, OperateReport, advance, run_operation,
};
pub use placement::{Layout, NewNode, ShardPlan, plan_layout};
pub use plan::{
    FailoverMode, MAX_FAILOVER_LAG, Next, Operation, PlanContext, Refusal, Remedy, Step,
    check_step, next_step,
};
pub use platform::{Platform, PlatformNode};
pub use rebalance::{SlotMove, apply_moves, plan_rebalance};
pub use shards::{NodeHealth, Shard, ShardNode, parse_cluster_shards};
pub use slots::{SLOT_COUNT, SlotRange, SlotSet};
pub use topology::{
    ClusterNode, LinkState, NodeFlags, Role, SlotMigration, Topology, parse_cluster_nodes,
};
