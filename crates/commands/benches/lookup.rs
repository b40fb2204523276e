//! Hot-path costs: command lookup by name (mixed case, hits and misses), full resolution of a
//! subcommand request, key extraction and key hashing.
//!
//! `cargo bench -p cinnabar-commands --bench lookup`

#![allow(missing_docs)]

use std::hint::black_box;

use cinnabar_commands::{key_slot, lookup, resolve};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A realistic mix: common data commands in the cases clients send, plus a miss.
const NAMES: [&[u8]; 16] = [
    b"GET",
    b"set",
    b"HGETALL",
    b"mget",
    b"ZADD",
    b"xreadgroup",
    b"EVALSHA",
    b"Incr",
    b"EXPIRE",
    b"lpush",
    b"GEORADIUSBYMEMBER_RO",
    b"ping",
    b"CLUSTER",
    b"del",
    b"SUBSCRIBE",
    b"NOSUCHCOMMAND",
];

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(NAMES.len() as u64));
    group.bench_function("mixed_16_names", |b| {
        b.iter(|| {
            for name in NAMES {
                black_box(lookup(black_box(name)));
            }
        });
    });
    group.finish();

    let config_get: [&[u8]; 3] = [b"config", b"GET", b"maxmemory"];
    c.bench_function("resolve_config_get", |b| {
        b.iter(|| black_box(resolve(black_box(&config_get))));
    });

    let mset: [&[u8]; 7] = [b"MSET", b"a", b"1", b"b", b"2", b"c", b"3"];
    let command = resolve(&mset).expect("MSET resolves");
    c.bench_function("keys_mset_3", |b| {
        b.iter(|| black_box(command.keys(black_box(&mset)).sum::<usize>()));
    });

    c.bench_function("key_slot_16_bytes", |b| {
        b.iter(|| black_box(key_slot(black_box(b"{user:1000}.name"))));
    });
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
