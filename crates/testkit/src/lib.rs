//! Dev-only test kit: real `redis-server` processes on free loopback ports, clusters formed by
//! `cinnabar-cluster`, faults (SIGKILL, SIGSTOP/SIGCONT) and workloads that remember every
//! acknowledged write so a test can prove none was lost.
//!
//! Never mocks Redis. Everything it starts is stopped and deleted on drop, even when a test
//! panics, and a panicking test prints the server logs it needs to be understood.

pub mod cluster;
pub mod group;
pub mod platform;
pub mod ports;
pub mod s3;
pub mod server;
pub mod workload;

pub use cluster::TestCluster;
pub use group::TestGroup;
pub use platform::TestPlatform;
pub use ports::{PortBlock, PortReservation, reserve_node_port, reserve_port, reserve_port_block};
pub use s3::S3Server;
pub use server::{ServerOptions, TestServer, server_binary};
pub use workload::{Target, Workload, WorkloadLog};
