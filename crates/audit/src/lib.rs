//! The proxy's audit trail: high-risk commands, denied commands and failed authentications
//! written as JSON lines, to standard output or to a file rotated by size. The caller (the
//! proxy) decides what to audit and fills an [`AuditRecord`]; this crate formats and writes it
//! on a thread of its own.
//!
//! It must never block or slow a client: [`Auditor::record`] only puts the record on a bounded
//! queue and, when the queue is full, drops it and counts it. It must never write a password.
//! It has no async runtime and no other cinnabar crate as a dependency.
//!
//! # Use
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use cinnabar_audit::{AuditConfig, AuditOutput, AuditRecord, Auditor, Outcome};
//!
//! # fn main() -> Result<(), cinnabar_audit::AuditError> {
//! // Once, at start-up: the `[audit]` section of the proxy's TOML file.
//! let config: AuditConfig = AuditConfig {
//!     output: AuditOutput::File("/var/log/cinnabar/audit.jsonl".into()),
//!     ..AuditConfig::default()
//! };
//! let auditor = Auditor::start(config)?; // clone it into every worker
//!
//! // In a worker, only for a command the caller decided to audit:
//! let client = "10.1.2.3:50123".parse().unwrap();
//! let started = Instant::now();
//! if auditor.is_enabled() {
//!     auditor.record(
//!         AuditRecord::command(client, "alice", "FLUSHALL")
//!             .with_outcome(Outcome::Denied)
//!             .with_error("NOPERM this user has no permissions to run the 'flushall' command")
//!             .with_latency(started.elapsed()),
//!     );
//! }
//! // A failed AUTH: there is no parameter a password could go into.
//! auditor.record(AuditRecord::auth_failure(client, "alice"));
//!
//! // At exit (or when the last clone is dropped): write what is queued, flush, stop.
//! let stats = auditor.shutdown();
//! # let _ = stats; Ok(()) }
//! ```
//!
//! A record with keys: `.with_keys(key_slices, auditor.max_keys())` counts every key and
//! copies at most `max_keys` of them. Node addresses go in `.with_targets(addrs)` (anything
//! `Display`). Records are cheap to build (a few small allocations) and are meant to be built
//! only for audited commands, so the common path pays nothing.
//!
//! # The line
//!
//! One JSON object per line, UTF-8, every field always present, in this order:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `time` | string | UTC, RFC 3339 with milliseconds: `2024-02-29T23:59:59.999Z` |
//! | `client` | string | the client's address, `10.1.2.3:50123` or `[::1]:50123` |
//! | `user` | string | the proxy user (for `auth_failed`: the name tried) |
//! | `command` | string | the command name, upper case |
//! | `subcommand` | string or null | e.g. `SET` for `CONFIG SET`, upper case |
//! | `key_count` | integer | the exact number of keys of the command |
//! | `keys` | array of strings | the first `max_keys` keys (see below) |
//! | `targets` | array of strings | backend nodes the command went to |
//! | `outcome` | string | `ok`, `error`, `denied` or `auth_failed` |
//! | `error` | string or null | the error sent to the client |
//! | `latency_us` | integer | microseconds from request to reply |
//!
//! ```json
//! {"time":"2024-02-29T23:59:59.999Z","client":"10.1.2.3:50123","user":"alice","command":"FLUSHALL","subcommand":null,"key_count":0,"keys":[],"targets":[],"outcome":"denied","error":"NOPERM this user has no permissions to run the 'flushall' command","latency_us":12}
//! ```
//!
//! Keys: a UTF-8 key is written as itself; a key that is not UTF-8, or that starts with
//! `hex:` or `sha256:`, as `hex:` and its bytes in hex; with `hash_keys = true`, every key as
//! `sha256:` and 16 hex digits of SHA-256(salt ‖ key), so no byte of a key is written. The
//! salt is `key_salt`, or a random one drawn once per process (stable across
//! [`Auditor::reconfigure`] and new auditors in the process, different after a restart).
//!
//! # Passwords
//!
//! A record never contains a password, and callers must keep it so: never pass the arguments
//! of `AUTH` or `HELLO … AUTH`, command values, or a reply; only names of commands, keys and
//! nodes, and the error text sent to the client. [`AuditRecord::auth_failure`] takes only an
//! address and a user name. As a second line of defence, records whose command is `AUTH` or
//! `HELLO` are written without keys or subcommand whatever they hold. `key_salt` never appears
//! in `Debug` or serialized output of [`AuditConfig`].
//!
//! # The writer
//!
//! One thread (`audit-writer`) takes records off a queue of `queue_capacity` records, formats
//! them into a batch and writes the batch as soon as the queue is momentarily empty (or the
//! batch reaches 64 KiB). It polls the queue, sleeping 1 ms after activity and up to 16 ms
//! when idle, instead of blocking on it: a blocked receiver would make each `record` call pay
//! a system call to wake it (about 2 µs measured), and the caller is a proxy worker. So a
//! record reaches the output within about 16 ms. A writer with nothing to write for a second
//! blocks on the queue (audited commands are rare, and polling would wake it ~60 times a
//! second for nothing); the record that ends the quiet pays the one wake-up. A disabled writer
//! (no output, so no records) blocks on the queue at once and never wakes by itself. A
//! file is rotated before a line would take it past `max_file_bytes` (`audit.jsonl` →
//! `audit.jsonl.1` … `.keep_files`, the oldest deleted); a file moved or deleted from outside
//! (logrotate) is noticed before the next batch and opened again at its path. An I/O error is
//! logged (via `tracing`, once per failure streak) and its records counted in
//! [`Auditor::write_errors`]; the writer keeps going and never panics.
//!
//! Counters ([`Auditor::stats`]): `written` + `dropped` + `write_errors` accounts for every
//! record given to `record` while enabled, once the queue is drained. Only records racing with
//! a shutdown on another handle can be lost uncounted.
//!
//! # Lifecycle
//!
//! - [`Auditor::start`] opens the output and starts the thread; [`Auditor`] is `Clone`
//!   (an `Arc`), `Send` and `Sync`.
//! - [`Auditor::reconfigure`] applies a new `[audit]` section in place, in order with the
//!   records around it; a file is reopened only if its path changed. Chosen over replacing the
//!   auditor so that two writers never share (and rotate) one file.
//! - [`Auditor::flush`] waits until everything queued so far is written (tests, admin).
//! - [`Auditor::shutdown`], or the drop of the last handle, writes everything queued, flushes
//!   and joins the thread.
//! - [`Auditor::start_with_writer`] sends the lines to any `io::Write` instead.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auditor;
mod config;
mod error;
mod keys;
mod line;
mod output;
mod record;
mod timestamp;
mod writer;

pub use auditor::{AuditStats, Auditor};
pub use config::{AuditConfig, AuditOutput, MAX_QUEUE_CAPACITY};
pub use error::AuditError;
pub use record::{AuditRecord, Outcome};
pub use timestamp::rfc3339_millis;
