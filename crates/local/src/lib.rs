//! The local platform: real `redis-server` processes on this machine, formed into a Redis
//! Cluster and supervised so a crashed node restarts on its own data and rejoins.
//!
//! This crate provides and removes nodes; all Redis Cluster logic (meet, slots, replicas,
//! checks) comes from `cinnabar-cluster`. It must never re-implement that logic.

pub mod binary;
pub mod config;
pub mod error;
pub mod ports;
pub mod process;

pub use binary::{Flavor, ServerBinary};
pub use config::NodeConfig;
pub use error::{LocalError, Result};
pub use process::NodeProcess;
