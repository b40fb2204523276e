//! Micro-benchmark of the per-request cost of access control: `resolve` alone, then `resolve` +
//! [`Principal::check`] for a user with every key (the default `readwrite` user) and for a
//! namespace-limited user, on a few request shapes. Prints nanoseconds per request.
//!
//! Run with `cargo run --release -p cinnabar-access --example check_cost`. Numbers are for
//! comparing changes on one machine, not absolute claims; the proxy's own benchmark measures
//! the end-to-end cost the issue budgets (≤ 5% CPU).

use std::hint::black_box;
use std::time::Instant;

use cinnabar_access::{Access, AccessConfig, Principal};

const ROUNDS: u32 = 2_000_000;

/// (label, request) pairs every user below may run.
const REQUESTS: &[(&str, &[&[u8]])] = &[
    ("GET", &[b"GET", b"orders:1"]),
    (
        "MSET x3",
        &[
            b"MSET",
            b"orders:1",
            b"a",
            b"orders:2",
            b"b",
            b"orders:3",
            b"c",
        ],
    ),
    (
        "EVAL 2 keys",
        &[b"EVAL", b"return 1", b"2", b"orders:1", b"orders:2"],
    ),
    ("CLUSTER SLOTS", &[b"CLUSTER", b"SLOTS"]),
    ("PUBLISH", &[b"PUBLISH", b"news.sport", b"m"]),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (open, _) = Access::compile(&AccessConfig::default())?;
    let everyone = open.default_principal().ok_or("no default user")?;
    let config: AccessConfig = toml::from_str(
        r#"
        [[users]]
        name = "app"
        password = "pw"
        role = "app"

        [[roles]]
        name = "app"
        base = "readwrite"
        keys = ["tmp:*", "orders:*"]
        channels = ["news.*"]
        "#,
    )?;
    let (limited, _) = Access::compile(&config)?;
    let namespaced = limited.authenticate(Some(b"app"), b"pw")?;

    println!(
        "{:<14} {:>10} {:>18} {:>18}",
        "request", "resolve", "+ check (all keys)", "+ check (prefixes)"
    );
    for (label, args) in REQUESTS {
        let resolve_only = time(|| {
            black_box(cinnabar_commands::resolve(black_box(*args)).is_ok());
        });
        let with = |principal: &Principal| {
            time(|| {
                let command = cinnabar_commands::resolve(black_box(*args)).expect("resolves");
                black_box(principal.check(command, *args).is_ok());
            })
        };
        println!(
            "{label:<14} {resolve_only:>8.1}ns {:>16.1}ns {:>16.1}ns",
            with(&everyone),
            with(&namespaced)
        );
    }
    Ok(())
}

/// Mean nanoseconds per call of `f` over [`ROUNDS`] calls.
fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..ROUNDS / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
}
