//! A disabled audit trail costs an idle proxy nothing: its writer thread sleeps until a
//! control message comes, instead of polling. In a file of its own so that no other test's
//! writer thread runs in this process.

mod support;

use cinnabar_audit::{AuditConfig, AuditOutput, AuditRecord, Auditor};
use std::fs;
use std::time::Duration;
use support::writer_switches;

#[test]
fn a_disabled_writer_does_not_wake_by_itself_and_wakes_for_a_reconfiguration() {
    let auditor = Auditor::start(AuditConfig {
        enabled: false,
        ..AuditConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(50));
    let before = writer_switches();
    std::thread::sleep(Duration::from_millis(500));
    let idle = writer_switches() - before;
    // A polling writer sleeps 16 ms at a time: about 30 switches in 500 ms.
    assert!(idle <= 2, "the disabled writer woke {idle} times in 500 ms");

    // Control messages still reach it, and a flush is answered.
    auditor.flush().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("audit.jsonl");
    auditor
        .reconfigure(&AuditConfig {
            output: AuditOutput::File(path.clone()),
            ..AuditConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let client = "192.0.2.7:41000".parse().unwrap_or_else(|e| panic!("{e}"));
    auditor.record(AuditRecord::command(client, "someone", "FLUSHDB"));
    auditor.flush().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auditor.written(), 1);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("FLUSHDB"), "{text}");
}
