//! Backups of Redis to object storage, restore into any shape, and point-in-time recovery.
//!
//! A backup is one RDB per shard, taken over replication (`REPLCONF rdb-only`, so the node
//! forks as it would for a new replica; a healthy replica is preferred, so the master never
//! forks), streamed to the store as it arrives (multipart upload, no local spool) and checked
//! on the way by the engine's RDB reader (CRC-64 included). A SHA-256 of every object goes in
//! the backup's manifest, which is written last: a backup without a manifest is not a backup,
//! so a failed or interrupted one is never listed.
//!
//! The continuous archive ([`archive`]) follows each shard's replication stream and uploads it
//! in segments tagged with offsets and wall-clock times; a restore `--at` a time applies a base
//! backup and then the archived commands up to that time.
//!
//! Restore ([`restore`]) routes every key by slot into the target cluster, whatever its shard
//! count, through the engine's applier (the same code as `cinnabar sync`).
//!
//! Layout under the store's prefix:
//!
//! ```text
//! backups/<name>/shard-<i>.rdb      one per shard, i in slot order
//! backups/<name>/manifest.json      written last
//! archive/<cluster>/<first slot>/<start offset>.seg
//! ```
//!
//! Everything here is blocking: the replication client is, and the store's asynchronous client
//! runs on a small runtime owned by [`Store`].

pub mod archive;
pub mod catalog;
mod error;
pub mod manifest;
pub mod restore;
pub mod snapshot;
pub mod store;
mod transfer;

pub use error::BackupError;
pub use manifest::{Manifest, ShardBackup};
pub use store::{S3Access, Store, StoreOptions};
