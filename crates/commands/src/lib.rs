//! Cinnabar's command table: every command and subcommand of Redis 7.0 and Valkey 8.0 with its
//! arity, flags, ACL categories, tips (fan-out policies), key specifications, docs and the
//! servers that have it, plus key extraction and Redis Cluster key hashing.
//!
//! The table is generated from the servers' own `COMMAND INFO` / `COMMAND DOCS` into `static`
//! data (`src/generated/`): with `redis-server` 7.0 and `valkey-server` 8.0 on `PATH`, run
//! `cargo run -p cinnabar-commands --example generate_table`. Entries the two servers describe
//! identically appear once; entries they describe differently appear once per server
//! ([`lookup_for`], [`resolve_for`]). `tests/drift.rs` compares the table with live servers,
//! with `COMMAND GETKEYS` as the oracle for key positions and `CLUSTER KEYSLOT` for slots.
//!
//! This crate must never parse, allocate or lock on the hot path: [`lookup`] (~8 ns),
//! [`resolve`], [`Command::keys`], [`Command::slot`] and [`key_slot`] work on borrowed bytes,
//! registers and stack buffers only.
//!
//! Requests are read through the [`Args`] trait (a length and the argument at an index), so
//! the caller keeps its own storage: a `&[&[u8]]`, an array, a `Vec<Vec<u8>>`, or a parser's
//! argument ranges into its read buffer — no `Vec<&[u8]>` has to be built per request. See
//! [`Args`] for implementing it over ranges.
//!
//! ```
//! use cinnabar_commands::{key_slot, resolve};
//!
//! let args: [&[u8]; 5] = [b"MSET", b"{u1}.a", b"1", b"{u1}.b", b"2"];
//! let command = resolve(&args)?;
//! assert!(command.is_write());
//! let keys: Vec<usize> = command.keys(&args).collect();
//! assert_eq!(keys, [1, 3]);
//! assert_eq!(key_slot(args[1]), key_slot(args[3]));
//! # Ok::<(), cinnabar_commands::CommandError>(())
//! ```

mod args;
mod docs;
mod error;
mod flags;
mod generated;
mod keys;
mod lookup;
mod server;
mod slot;
mod table;
mod tips;

pub use args::Args;
pub use docs::{Arg, ArgType, Docs, Group};
pub use error::{CommandError, Quoted};
pub use flags::{AclCategories, ArgFlags, CommandFlags, DocFlags, KeySpecFlags, Servers};
pub use keys::{FlaggedKeyIter, KeyIter};
pub use lookup::{commands, lookup, lookup_for, resolve, resolve_for, top_level_index};
pub use server::Server;
pub use slot::{SLOT_COUNT, crc16, hash_tag, key_slot};
pub use table::{BeginSearch, Command, FindKeys, KeyProc, KeySpec};
pub use tips::{RequestPolicy, ResponsePolicy, Tips};
