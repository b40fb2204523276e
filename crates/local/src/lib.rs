//! The local platform: real `redis-server` processes on this machine, formed into a Redis
//! Cluster and supervised so a crashed node restarts on its own data and rejoins, with the
//! proxy (`cinnabar-proxy`, run inside the supervisor) as the one endpoint clients use.
//!
//! This crate provides and removes nodes; all Redis Cluster logic (meet, slots, replicas,
//! checks) comes from `cinnabar-cluster`, and all data-plane logic from `cinnabar-proxy`. It
//! must never re-implement either.
//!
//! Layout of a state directory (default `.cinnabar`):
//! ```text
//! .cinnabar/
//!   cinnabar.json        state: spec, endpoint, phase, pids (see `state`)
//!   cinnabar.lock        flock held by the live supervisor
//!   supervisor.log       a detached supervisor's output
//!   control.sock         the live supervisor's control socket (see `control`)
//!   operation.json       the operation in progress, if any (`cinnabar scale`, `failover`, …)
//!   nodes/<port>/        one data dir per node: redis.conf, nodes.conf, appendonlydir/, redis.log
//!                        (and `restart-hold` while a drill keeps a killed node down; see `faults`)
//! ```

pub mod binary;
pub mod config;
pub mod control;
pub mod error;
pub mod faults;
pub mod group;
pub mod load;
pub mod ops;
pub mod platform;
pub mod ports;
pub mod probe;
pub mod process;
pub mod spec;
pub mod state;
pub mod supervisor;

pub use binary::{Flavor, ServerBinary};
pub use config::NodeConfig;
pub use error::{LocalError, Result};
pub use ops::{DownReport, NodeStatus, ProxyStatus, SentinelStatus, StatusReport, down, status};
pub use platform::LocalPlatform;
pub use process::NodeProcess;
pub use spec::{LocalSpec, SpecOverrides};
pub use state::{Phase, StateDir};
pub use supervisor::{Supervisor, UpEvent, UpOptions};
