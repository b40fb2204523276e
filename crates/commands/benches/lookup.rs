//! Hot-path costs: command lookup by name (mixed case, hits and misses), full resolution of a
//! subcommand request, key extraction and key hashing — with arguments as `&[&[u8]]` and, the
//! proxy's shape, as ranges into a read buffer (`*_ranges`).
//!
//! `cargo bench -p cinnabar-commands --bench lookup`

#![allow(missing_docs)]

use std::hint::black_box;
use std::ops::Range;

use cinnabar_commands::{Args, key_slot, lookup, resolve};
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

/// Arguments as ranges into one buffer, as the proxy's request parser keeps them.
struct Ranged {
    buf: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl Ranged {
    fn encode(args: &[&[u8]]) -> Ranged {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        let mut ranges = Vec::new();
        for arg in args {
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            ranges.push(buf.len()..buf.len() + arg.len());
            buf.extend_from_slice(arg);
            buf.extend_from_slice(b"\r\n");
        }
        Ranged { buf, ranges }
    }
}

impl Args for Ranged {
    fn len(&self) -> usize {
        self.ranges.len()
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        self.buf.get(self.ranges.get(index)?.clone())
    }
}

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

    let mset_slot: [&[u8]; 7] = [b"MSET", b"{u}a", b"1", b"{u}b", b"2", b"{u}c", b"3"];
    c.bench_function("slot_mset_3", |b| {
        b.iter(|| black_box(command.slot(black_box(&mset_slot))));
    });

    let config_get = Ranged::encode(&config_get);
    c.bench_function("resolve_config_get_ranges", |b| {
        b.iter(|| black_box(resolve(black_box(&config_get))));
    });

    let mset = Ranged::encode(&mset);
    c.bench_function("keys_mset_3_ranges", |b| {
        b.iter(|| black_box(command.keys(black_box(&mset)).sum::<usize>()));
    });

    let mset_slot = Ranged::encode(&mset_slot);
    c.bench_function("slot_mset_3_ranges", |b| {
        b.iter(|| black_box(command.slot(black_box(&mset_slot))));
    });
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
