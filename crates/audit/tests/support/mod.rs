//! What the audit writer's process-level tests share: reading how often its thread woke.

use std::fs;

/// The context switches of every thread named `audit-writer` in this process, summed.
pub(crate) fn writer_switches() -> u64 {
    let mut total = 0;
    for task in fs::read_dir("/proc/self/task").unwrap_or_else(|e| panic!("{e}")) {
        let dir = task.unwrap_or_else(|e| panic!("{e}")).path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "audit-writer" {
            continue;
        }
        let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}
