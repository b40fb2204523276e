//! How much auditing costs: the time a worker spends in `Auditor::record` (queue accepting,
//! and queue full), the time to build a typical record, and how many records per second the
//! writer thread gets into a file, with plain and with hashed keys.
//!
//! Run: `cargo run --release -p cinnabar-audit --example audit_throughput`. Numbers depend on
//! the machine and on what else runs on it; they are for comparing changes, not promises.

// A benchmark that cannot set itself up should stop with the reason.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cinnabar_audit::{AuditConfig, AuditOutput, AuditRecord, Auditor, MAX_QUEUE_CAPACITY, Outcome};

const RECORDS: usize = 500_000;
/// Records sent one by one, 3 ms apart.
const SPARSE: usize = 300;

fn main() {
    let client: SocketAddr = "10.1.2.3:50123".parse().unwrap();
    let typical = || {
        AuditRecord::command(client, "ops", "CONFIG")
            .with_subcommand("SET")
            .with_keys(["orders:{42}:a", "orders:{42}:b"], 16)
            .with_targets(["10.0.0.1:6379"])
            .with_outcome(Outcome::Ok)
            .with_latency(Duration::from_micros(180))
    };
    let roomy = AuditConfig {
        queue_capacity: NonZeroUsize::new(MAX_QUEUE_CAPACITY).unwrap(),
        ..AuditConfig::default()
    };

    // Building a record: what the proxy pays before calling record().
    let started = Instant::now();
    for _ in 0..RECORDS {
        black_box(typical());
    }
    let build = per_op(started.elapsed(), RECORDS);
    println!("build a typical record:              {build:>7.1} ns");

    // record() alone, with the queue accepting (the writer discards lines).
    let auditor = Auditor::start_with_writer(roomy.clone(), io::sink()).unwrap();
    let accept = time_record_calls(&auditor, &typical);
    println!(
        "record(), queue accepting:           {accept:>7.1} ns   (dropped {})",
        auditor.dropped()
    );

    // record() one at a time, each to an idle writer: the common case in a proxy, where
    // audited commands are rare.
    let mut spent = Duration::ZERO;
    for _ in 0..SPARSE {
        let record = typical();
        let started = Instant::now();
        auditor.record(record);
        spent += started.elapsed();
        std::thread::sleep(Duration::from_millis(3));
    }
    println!(
        "record(), one at a time:             {:>7.1} ns",
        per_op(spent, SPARSE)
    );
    auditor.shutdown();

    // record() when the queue is full: the writer is stuck, every record is dropped.
    let (stuck_tx, stuck_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let tiny = AuditConfig {
        queue_capacity: NonZeroUsize::MIN,
        ..AuditConfig::default()
    };
    let auditor = Auditor::start_with_writer(
        tiny,
        Stuck {
            entered: stuck_tx,
            release: release_rx,
        },
    )
    .unwrap();
    auditor.record(typical());
    stuck_rx.recv().unwrap();
    auditor.record(typical()); // fills the one slot
    let full = time_record_calls(&auditor, &typical);
    println!(
        "record(), queue full (dropped):      {full:>7.1} ns   (dropped {})",
        auditor.dropped()
    );
    drop(release_tx); // lets every write through from now on
    auditor.shutdown();

    // The writer: records per second into a file, from the first record() to the last
    // line flushed.
    let dir = tempfile::tempdir().unwrap();
    for hash_keys in [false, true] {
        let name = format!("audit-{hash_keys}.jsonl");
        let path = dir.path().join(&name);
        let config = AuditConfig {
            output: AuditOutput::File(path.clone()),
            hash_keys,
            ..roomy.clone()
        };
        let auditor = Auditor::start(config).unwrap();
        let records: Vec<AuditRecord> = (0..RECORDS).map(|_| typical()).collect();
        let started = Instant::now();
        for record in records {
            auditor.record(record);
        }
        let stats = auditor.shutdown();
        let elapsed = started.elapsed();
        // The file may have been rotated: count every file of this run.
        let bytes: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(&name))
            .map(|entry| entry.metadata().unwrap().len())
            .sum();
        println!(
            "writer to a file, hash_keys={hash_keys:<5}:   {:>7.0} k records/s   ({} written, {} dropped, {:.0} B/line)",
            stats.written as f64 / elapsed.as_secs_f64() / 1000.0,
            stats.written,
            stats.dropped,
            bytes as f64 / stats.written.max(1) as f64,
        );
    }
}

/// Nanoseconds per `record()` call over `RECORDS` records, timing only the calls: records are
/// built beforehand in chunks small enough to stay in cache, as a freshly built record is.
fn time_record_calls(auditor: &Auditor, build: &dyn Fn() -> AuditRecord) -> f64 {
    const CHUNK: usize = 1000;
    let mut spent = Duration::ZERO;
    for _ in 0..RECORDS / CHUNK {
        let chunk: Vec<AuditRecord> = (0..CHUNK).map(|_| build()).collect();
        let started = Instant::now();
        for record in chunk {
            auditor.record(record);
        }
        spent += started.elapsed();
    }
    per_op(spent, RECORDS)
}

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

/// A writer that blocks until its release channel is closed, to hold the queue full.
struct Stuck {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.entered.send(()).is_ok() {
            let _ = self.release.recv();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
