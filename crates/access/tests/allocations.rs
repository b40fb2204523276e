//! Proof that allowing a request allocates nothing: every allocation in this process is
//! counted while a namespace-limited user's requests (single keys, multi-key commands,
//! `numkeys` commands, glob patterns, channels, subcommands) are resolved and checked.
//!
//! Its own test binary, without libtest's harness (`harness = false` in `Cargo.toml`): it
//! installs a counting global allocator, which counts every thread of the process. Under
//! libtest the test runs on a spawned thread while the harness's main thread waits for its
//! result, and whatever that thread sets up once (its first blocking wait's per-thread state,
//! most likely) can land inside the measured window on a busy machine: CI once saw 4
//! allocations that were never freed, and two busy loops reproduced it 1 time in 30. With no
//! harness, the process has one thread while it measures (0 in 60 under the same load).

#![allow(clippy::unwrap_used)]

use std::alloc::System;

use cinnabar_access::{Access, AccessConfig, Principal};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests the user may run, as the proxy would hold them (borrowed slices).
const ALLOWED: &[&[&[u8]]] = &[
    &[b"GET", b"orders:1"],
    &[b"SET", b"orders:1", b"v", b"EX", b"10"],
    &[b"MSET", b"orders:1", b"a", b"orders:2", b"b"],
    &[b"MGET", b"orders:1", b"orders:2", b"orders:3"],
    &[b"EVAL", b"return 1", b"2", b"orders:1", b"orders:2", b"arg"],
    &[
        b"SORT",
        b"orders:1",
        b"LIMIT",
        b"0",
        b"5",
        b"STORE",
        b"orders:x",
    ],
    &[b"XREAD", b"COUNT", b"2", b"STREAMS", b"orders:s", b"0"],
    &[b"HSET", b"user:[7]:x", b"f", b"v"],
    &[b"PUBLISH", b"news.sport", b"m"],
    &[b"SUBSCRIBE", b"news.a", b"news.b"],
    &[b"PSUBSCRIBE", b"news.*"],
    &[b"SPUBLISH", b"news.x", b"m"],
    &[b"CLUSTER", b"SLOTS"],
    &[b"CLIENT", b"SETNAME", b"app"],
    &[b"PING"],
];

fn principal() -> Principal {
    let config: AccessConfig = toml::from_str(
        r#"
        [[users]]
        name = "app"
        password = "pw"
        role = "app"

        [[roles]]
        name = "app"
        base = "readwrite"
        keys = ["orders:*", "user:\\[[0-9]\\]:*"]
        channels = ["news.*"]
        "#,
    )
    .unwrap();
    let (access, _) = Access::compile(&config).unwrap();
    access.authenticate(Some(b"app"), b"pw").unwrap()
}

/// Resolves and checks every allowed request `rounds` times.
fn run(principal: &Principal, rounds: usize) {
    for _ in 0..rounds {
        for args in ALLOWED {
            let command = cinnabar_commands::resolve(*args).unwrap();
            let verdict = principal.check(command, *args);
            assert!(verdict.is_ok(), "{verdict:?}");
        }
    }
}

/// Runs the one test, honouring what `cargo test` passes on to libtest: `--list` lists it;
/// name filters (substrings, or the whole name with `--exact`) and `--skip` select it as
/// libtest would; `--ignored` (only ignored tests) filters it out, as it is not ignored. Other
/// flags are accepted and have nothing to change for one test.
fn main() {
    const NAME: &str = "allowing_a_request_allocates_nothing";
    // libtest's flags that take a value: the value is not a name filter.
    const WITH_VALUE: &[&str] = &[
        "--test-threads",
        "--skip",
        "--logfile",
        "--format",
        "--color",
        "--shuffle-seed",
        "-Z",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--skip" {
            skips.extend(iter.next());
        } else if WITH_VALUE.contains(&arg.as_str()) {
            iter.next();
        } else if !arg.starts_with('-') {
            filters.push(arg.as_str());
        }
    }
    let exact = args.iter().any(|arg| arg == "--exact");
    let matches = |pattern: &str| {
        if exact {
            pattern == NAME
        } else {
            NAME.contains(pattern)
        }
    };
    let selected = (filters.is_empty() || filters.iter().any(|f| matches(f)))
        && !skips.iter().any(|s| matches(s))
        && !args.iter().any(|arg| arg == "--ignored");
    if args.iter().any(|arg| arg == "--list") {
        if selected {
            println!("{NAME}: test");
        }
        return;
    }
    let (passed, filtered_out) = if selected {
        allowing_a_request_allocates_nothing();
        println!("test {NAME} ... ok");
        (1, 0)
    } else {
        (0, 1)
    };
    println!(
        "\ntest result: ok. {passed} passed; 0 failed; 0 ignored; {filtered_out} filtered out"
    );
}

fn allowing_a_request_allocates_nothing() {
    let principal = principal();
    run(&principal, 10); // warm-up: the command table's numbering is built on first use

    // The instrument itself: one deliberate allocation must be seen.
    let check = Region::new(GLOBAL);
    drop(std::hint::black_box(Vec::<u8>::with_capacity(64)));
    assert!(
        check.change().allocations >= 1,
        "the counting allocator is not counting"
    );

    let region = Region::new(GLOBAL);
    run(&principal, 1000);
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{} requests allowed: {change:?}",
        1000 * ALLOWED.len()
    );

    // A refusal does allocate (it copies the refused key), which the instrument must see.
    let region = Region::new(GLOBAL);
    let args: [&[u8]; 2] = [b"GET", b"users:1"];
    let denied = principal.check(cinnabar_commands::resolve(&args).unwrap(), &args);
    assert!(denied.is_err());
    assert!(region.change().allocations >= 1);
}
