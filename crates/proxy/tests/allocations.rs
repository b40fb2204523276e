//! Proof that the proxy's hot path allocates nothing per request after warm-up: every
//! allocation in this process is counted while 117,000 requests (GET, SET, MSET, MGET and EXISTS
//! split across the masters, and MULTI/EXEC transactions) go through the proxy.
//!
//! Its own test binary, because it installs a counting global allocator. The client loop
//! allocates nothing (fixed buffers), the cluster's nodes are other processes, and the proxy's
//! periodic topology refresh is pushed out of the measured window, so what is counted is the
//! proxy's request path.

#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cinnabar_proxy::ProxyConfig;
use cinnabar_testkit::TestCluster;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Sends `request` and reads exactly `reply_len` bytes back, allocating nothing.
fn round_trip(stream: &mut TcpStream, request: &[u8], reply_len: usize, buf: &mut [u8]) {
    stream.write_all(request).unwrap();
    let mut got = 0;
    while got < reply_len {
        let n = stream.read(&mut buf[got..]).unwrap();
        assert!(n > 0, "proxy closed the connection");
        got += n;
    }
    assert_eq!(
        got,
        reply_len,
        "unexpected reply bytes: {:?}",
        String::from_utf8_lossy(&buf[..got])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_path_allocates_nothing_per_request_after_warm_up() {
    let cluster = TestCluster::start(3, 0).await;
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.refresh_interval = Duration::from_secs(3600);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let addr = proxy.local_addr();

    let report = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        // 50 SETs then 50 GETs over keys of every slot range; replies have fixed sizes.
        let mut sets = Vec::new();
        let mut gets = Vec::new();
        for i in 0..50 {
            let key = format!("alloc:{i:03}");
            sets.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n$9\r\n{key}\r\n$1\r\nv\r\n").as_bytes(),
            );
            gets.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n$9\r\n{key}\r\n").as_bytes());
        }
        let one_get = b"*2\r\n$3\r\nGET\r\n$9\r\nalloc:007\r\n".to_vec();
        // 10-key MSET, MGET and EXISTS over keys of every slot range: split per key, merged.
        let mut mset = b"*21\r\n$4\r\nMSET\r\n".to_vec();
        let mut mget = b"*11\r\n$4\r\nMGET\r\n".to_vec();
        let mut exists = b"*11\r\n$6\r\nEXISTS\r\n".to_vec();
        let transaction = b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$3\r\n{t}\r\n$1\r\nv\r\n\
            *3\r\n$3\r\nSET\r\n$4\r\n{t}n\r\n$1\r\nv\r\n*1\r\n$4\r\nEXEC\r\n";
        for i in 0..10 {
            let key = format!("alloc:{:03}", i * 5);
            mset.extend_from_slice(format!("$9\r\n{key}\r\n$1\r\nv\r\n").as_bytes());
            mget.extend_from_slice(format!("$9\r\n{key}\r\n").as_bytes());
            exists.extend_from_slice(format!("$9\r\n{key}\r\n").as_bytes());
        }
        let mut buf = vec![0u8; 65536];
        let mut run = |rounds: usize| {
            for _ in 0..rounds {
                round_trip(&mut stream, &sets, 50 * 5, &mut buf);
                round_trip(&mut stream, &gets, 50 * 7, &mut buf);
                for _ in 0..10 {
                    round_trip(&mut stream, &one_get, 7, &mut buf);
                }
                round_trip(&mut stream, &mset, 5, &mut buf);
                round_trip(&mut stream, &mget, 5 + 10 * 7, &mut buf);
                round_trip(&mut stream, &exists, 5, &mut buf);
                // A transaction, as client libraries wrap pipelines: MULTI, two SETs, EXEC.
                round_trip(&mut stream, transaction, 37, &mut buf);
            }
        };
        run(300); // warm-up: buffers, tickets and queues reach their working size
        // The instrument itself: one deliberate allocation must be seen.
        let check = Region::new(GLOBAL);
        drop(std::hint::black_box(Vec::<u8>::with_capacity(64)));
        assert!(
            check.change().allocations >= 1,
            "the counting allocator is not counting"
        );
        let region = Region::new(GLOBAL);
        let rounds = 1000; // 117 requests each (three of them split in ten)
        run(rounds);
        (region.change(), rounds * 117)
    })
    .await
    .unwrap();
    let (stats, requests) = report;
    eprintln!(
        "{requests} requests through the proxy: {} allocations, {} reallocations, {} bytes allocated",
        stats.allocations, stats.reallocations, stats.bytes_allocated
    );
    // A handful of one-off allocations (a timer wheel slot, a lazily grown queue) is not per
    // request; one allocation per thousand requests would be a leak on the hot path.
    assert!(
        stats.allocations + stats.reallocations < requests / 1000,
        "{} allocations and {} reallocations for {requests} requests",
        stats.allocations,
        stats.reallocations
    );
}
