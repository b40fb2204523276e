//! A deterministic workload for counting instructions per parsed command with callgrind.
//!
//! Builds a pipelined buffer of 10,000 `SET key:NNNNNN <64-byte value>` commands (or, with
//! `replies`, 10,000 typical replies) and parses it `ROUNDS` times. Run it twice with
//! different `ROUNDS` and divide the difference in instructions by the extra commands, which
//! cancels the set-up cost:
//!
//! ```text
//! cargo build --release -p cinnabar-resp --example parse_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/parse_instructions requests 1
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/parse_instructions requests 11
//! # instructions per command = (Ir(11) - Ir(1)) / (10 * 10,000)
//! ```
//!
//! The example prints the counted items so the work cannot be optimised away.

use std::hint::black_box;

use cinnabar_resp::{Limits, Parsed, ReplyScanner, Request, RequestParser};

#[path = "../benches/support/workload.rs"]
mod workload;

use workload::{COMMANDS, reply_pipeline, set_pipeline};

fn parse_requests(buf: &[u8], rounds: usize) -> usize {
    let parser = RequestParser::new(Limits::default());
    let mut req = Request::with_capacity(8);
    let mut args = 0;
    for _ in 0..rounds {
        let mut at = 0;
        while let Ok(Parsed::Complete { consumed }) = parser.parse(black_box(&buf[at..]), &mut req)
        {
            args += req.len();
            at += consumed;
        }
    }
    args
}

fn scan_replies(buf: &[u8], rounds: usize) -> usize {
    let mut scanner = ReplyScanner::new(Limits::default());
    let mut replies = 0;
    for _ in 0..rounds {
        let mut at = 0;
        while let Ok(Some(n)) = scanner.scan(black_box(&buf[at..])) {
            replies += 1;
            at += n;
        }
    }
    replies
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "requests".to_owned());
    let rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(100);
    let counted = match mode.as_str() {
        "requests" => parse_requests(&set_pipeline(), rounds),
        "replies" => scan_replies(&reply_pipeline(), rounds),
        other => {
            eprintln!("usage: parse_instructions [requests|replies] [ROUNDS], not {other:?}");
            std::process::exit(2);
        }
    };
    println!("{mode}: {rounds} rounds of {COMMANDS}, {counted} items counted");
}
