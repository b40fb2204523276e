//! An enabled audit trail with nothing to write stops polling after a second of quiet, and the
//! next record still reaches the output at once. In a file of its own so that no other test's
//! writer thread runs in this process.

mod support;

use cinnabar_audit::{AuditConfig, AuditOutput, AuditRecord, Auditor};
use std::fs;
use std::time::{Duration, Instant};
use support::writer_switches;

#[test]
fn a_quiet_writer_stops_waking_and_the_next_record_is_written_at_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.jsonl");
    let auditor = Auditor::start(AuditConfig {
        output: AuditOutput::File(path.clone()),
        ..AuditConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let client = "192.0.2.7:41000".parse().unwrap_or_else(|e| panic!("{e}"));
    auditor.record(AuditRecord::command(client, "someone", "FLUSHDB"));

    // Polling: some 60 wake-ups a second while the quiet lasts less than a second.
    let before = writer_switches();
    std::thread::sleep(Duration::from_millis(500));
    let polling = writer_switches() - before;
    assert!(
        polling >= 10,
        "the writer woke only {polling} times in its first 500 ms"
    );

    // Then it blocks.
    std::thread::sleep(Duration::from_millis(1000));
    let before = writer_switches();
    std::thread::sleep(Duration::from_millis(500));
    let quiet = writer_switches() - before;
    assert!(quiet <= 2, "the quiet writer woke {quiet} times in 500 ms");

    // A record wakes it, without a flush asking for it.
    auditor.record(AuditRecord::command(client, "someone", "CONFIG|SET"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while auditor.written() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        auditor.written(),
        2,
        "the record after the quiet was not written"
    );
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("CONFIG|SET"), "{text}");
}
