//! Throughput of the hot-path codecs: parsing a client pipeline of 10,000
//! `SET key:NNNNNN <64-byte value>` commands, and scanning 10,000 typical backend replies.
//!
//! Run with `cargo bench -p cinnabar-resp --bench parse`.
//!
//! # Instruction budget
//!
//! The budget is at most ~400 instructions per parsed command. Wall-clock numbers from this
//! bench vary with the machine; the instruction count does not, so it is measured with
//! callgrind on the `parse_instructions` example, which parses the same buffer `ROUNDS` times.
//! Two runs with different `ROUNDS` cancel the cost of building the buffer:
//!
//! ```text
//! export CARGO_TARGET_DIR=/work/target-resp   # or the default target/
//! cargo build --release -p cinnabar-resp --example parse_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     $CARGO_TARGET_DIR/release/examples/parse_instructions requests 1    # I refs: 17,183,910
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     $CARGO_TARGET_DIR/release/examples/parse_instructions requests 11   # I refs: 49,384,537
//! ```
//!
//! (49,384,537 − 17,183,910) / (10 × 10,000) = **322 instructions per command** (Rust 1.95,
//! x86-64), about 80 per bulk argument plus the `*3` header. The same with `replies` gives
//! (26,889,042 − 4,237,283) / 100,000 = **227 instructions per reply** for the reply mix
//! below.

use std::hint::black_box;

use cinnabar_resp::{Limits, Parsed, ReplyScanner, Request, RequestParser, encode, parse_value};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "support/workload.rs"]
mod workload;

use workload::{COMMANDS, reply_pipeline, set_pipeline};

fn requests(c: &mut Criterion) {
    let buf = set_pipeline();
    let parser = RequestParser::new(Limits::default());
    let mut req = Request::with_capacity(8);
    let mut group = c.benchmark_group("requests");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.bench_function("parse 10k SET pipeline", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Parsed::Complete { consumed }) =
                parser.parse(black_box(&buf[at..]), &mut req)
            {
                at += consumed;
            }
            at
        })
    });
    group.bench_function("encode 10k SET commands", |b| {
        let value = [b'v'; 64];
        let mut out = Vec::with_capacity(buf.len());
        b.iter(|| {
            out.clear();
            for _ in 0..COMMANDS {
                encode::command(&mut out, &[b"SET", b"key:000001", &value]);
            }
            out.len()
        })
    });
    group.finish();
}

fn replies(c: &mut Criterion) {
    let buf = reply_pipeline();
    let mut scanner = ReplyScanner::new(Limits::default());
    let mut group = c.benchmark_group("replies");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.bench_function("scan 10k mixed replies", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some(n)) = scanner.scan(black_box(&buf[at..])) {
                at += n;
            }
            at
        })
    });
    group.bench_function("parse_value 10k mixed replies (control plane)", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some((_, n))) = parse_value(black_box(&buf[at..]), &Limits::default()) {
                at += n;
            }
            at
        })
    });
    group.finish();
}

criterion_group!(benches, requests, replies);
criterion_main!(benches);
