//! RESP2 and RESP3, the Redis wire protocol: parsing and encoding over byte slices, for the
//! proxy's hot path and for the control plane. No I/O, no async, no `unsafe`.
//!
//! This crate must never panic on any input, never allocate per command once warm, never copy
//! a key or value on the hot path, and never trust a declared length for allocation: every
//! malformed or over-limit input is a typed [`ProtocolError`] whose message a proxy can send
//! back as `-ERR Protocol error: ...`.
//!
//! # Pieces
//!
//! | direction | type / function | allocates | use |
//! |---|---|---|---|
//! | client → proxy | [`RequestParser`], [`Request`], [`Parsed`] | no (after warm-up) | hot path |
//! | backend → proxy | [`ReplyScanner`], [`scan_reply`] | no (after warm-up) | hot path |
//! | backend → proxy | [`error_class`], [`parse_redirect`], [`ReplyType`] | never | hot path |
//! | any | [`encode`] writers | only to grow the output | hot path |
//! | any | [`Value`], [`parse_value`] | per element | control plane, tests |
//!
//! Bounds are configured once in [`Limits`] (512 MiB bulk strings, 1 Mi request arguments,
//! depth 128, 64 KiB inline lines by default).
//!
//! # Parsing requests
//!
//! ```
//! use cinnabar_resp::{Limits, Parsed, Request, RequestParser};
//!
//! let parser = RequestParser::new(Limits::default());
//! let mut req = Request::new(); // one per connection, reused
//! let mut buf: Vec<u8> = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n".to_vec();
//! let mut names = Vec::new();
//! loop {
//!     match parser.parse(&buf, &mut req)? {
//!         Parsed::Complete { consumed } => {
//!             names.push(req.arg(0, &buf).unwrap_or_default().to_vec());
//!             buf.drain(..consumed);
//!         }
//!         Parsed::Skipped { consumed } => { buf.drain(..consumed); }
//!         Parsed::Incomplete => break, // read more, append, parse again
//!     }
//! }
//! assert_eq!(names, [b"GET".to_vec(), b"PING".to_vec()]);
//! # Ok::<(), cinnabar_resp::ProtocolError>(())
//! ```
//!
//! # Scanning replies
//!
//! ```
//! use cinnabar_resp::{ErrorClass, Limits, ReplyScanner, error_class, parse_redirect};
//!
//! let mut scanner = ReplyScanner::new(Limits::default()); // one per backend connection
//! let buf = b"-MOVED 3999 127.0.0.1:6381\r\n+OK\r\n";
//! let n = scanner.scan(buf)?.expect("complete");
//! assert_eq!(error_class(&buf[..n]), Some(ErrorClass::Moved));
//! let redirect = parse_redirect(&buf[..n]).expect("a redirect");
//! assert_eq!((redirect.slot, redirect.addr), (3999, &b"127.0.0.1:6381"[..]));
//! # Ok::<(), cinnabar_resp::ProtocolError>(())
//! ```
//!
//! # Cost
//!
//! Parsing a pipelined `SET key:NNNNNN <64-byte value>` costs **322 instructions per command**
//! (budget: 400) and scanning a typical reply mix 227 per reply, counted by callgrind on the
//! `parse_instructions` example (Rust 1.95, x86-64, release):
//!
//! ```text
//! cargo build --release -p cinnabar-resp --example parse_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/parse_instructions requests 1    # I refs: 17,183,910
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/parse_instructions requests 11   # I refs: 49,384,537
//! # (49,384,537 - 17,183,910) / (10 rounds * 10,000 commands) = 322
//! ```
//!
//! `benches/parse.rs` has the wall-clock benchmarks and the same recipe.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod classify;
pub mod encode;
mod error;
mod inline;
mod lex;
mod limits;
mod request;
mod scan;
mod value;

pub use classify::{
    ErrorClass, Redirect, RedirectKind, ReplyType, error_class, error_code, parse_redirect,
};
pub use encode::Protocol;
pub use error::ProtocolError;
pub use limits::Limits;
pub use request::{Parsed, Request, RequestParser};
pub use scan::{ReplyScanner, scan_reply};
pub use value::{Value, parse_value};
