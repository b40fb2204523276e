//! `cinnabar drill failover` end to end against a cluster started with `cinnabar up --detach`:
//! a killed or paused master is failed over, restored as a replica, and the report says so in
//! text, JSON and SVG; impossible drills are refused before anything is touched.

// Test helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Cinnabar, stderr};

/// The role `status --json` gives the node at `address`.
fn role_of(c: &Cinnabar, address: &str) -> String {
    let (_, status) = c.status();
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in {status:#}"))["role"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Checks what every drill report must hold, and that the roles swapped; returns the JSON.
fn assert_failed_over(c: &Cinnabar, report: &Value) {
    assert!(report["lost_writes"].is_u64(), "{report:#}");
    assert!(report["client_errors"].is_u64(), "{report:#}");
    assert!(
        report["time_to_promote_ms"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["time_to_detect_ms"].as_u64().unwrap()
            <= report["time_to_promote_ms"].as_u64().unwrap(),
        "detected before promoted: {report:#}"
    );
    assert!(
        report["acknowledged_writes"].as_u64().unwrap() > 100,
        "{report:#}"
    );
    assert_eq!(
        report["lost_writes"], report["lost_writes_within_window"],
        "a loss outside Redis's replication window: {report:#}"
    );
    assert_eq!(report["healthy_at_end"], true, "{report:#}");
    let promoted = report["promoted"]["address"].as_str().unwrap();
    let victim = report["victim"]["address"].as_str().unwrap();
    assert_eq!(
        role_of(c, promoted),
        "master",
        "the promoted replica leads now"
    );
    assert_eq!(
        role_of(c, victim),
        "replica",
        "the old master rejoined as a replica"
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn kill_9_of_a_master_fails_over_rejoins_and_reports_in_text_json_and_svg() {
    let c = Cinnabar::new(3, 1);
    c.up_detached(3, 1);
    c.wait_healthy(Duration::from_secs(20));
    let dir = c.tmp.path().join("drill-report");
    let out = c.run(&[
        "drill",
        "failover",
        "--kill",
        "--duration",
        "12s",
        "--report",
        dir.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for file in ["report.txt", "report.json", "timeline.svg"] {
        assert!(dir.join(file).is_file(), "no {file}");
    }
    assert!(text.starts_with("Failover drill: kill -9"), "{text}");
    assert!(text.contains("Verdict: PASS"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.join("report.txt")).unwrap(),
        text
    );
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["fault"], "kill");
    assert_failed_over(&c, &report);
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    for milestone in [
        "fault", "detected", "promoted", "restored", "rejoined", "healthy",
    ] {
        assert!(
            svg.contains(&format!("data-milestone=\"{milestone}\"")),
            "no {milestone} marker"
        );
    }
}

#[test]
fn a_paused_master_is_failed_over_and_resumes_as_a_replica() {
    let c = Cinnabar::new(3, 1);
    c.up_detached(3, 1);
    c.wait_healthy(Duration::from_secs(20));
    let out = c.run(&[
        "drill",
        "failover",
        "--pause",
        "--shard",
        "1",
        "--duration",
        "10s",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fault"], "pause");
    assert_eq!(report["shard"], 1);
    assert_failed_over(&c, &report);
}

#[test]
fn impossible_drills_are_refused_before_anything_is_touched() {
    let nothing = tempfile::tempdir().unwrap();
    let out = support::cinnabar()
        .args(["drill", "failover", "--dir"])
        .arg(nothing.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no cluster found"),
        "{}",
        stderr(&out)
    );

    // Two shards: losing one master leaves no majority to elect a replica.
    let c = Cinnabar::new(2, 1);
    c.up_detached(2, 1);
    c.wait_healthy(Duration::from_secs(20));
    let (_, before) = c.status();
    let out = c.run(&["drill", "failover", "--shard", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no shard 3: the cluster has 2 shard(s)"),
        "{}",
        stderr(&out)
    );
    let out = c.run(&["drill", "failover", "--duration", "5s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("majority of the 2 masters serving slots (2)"),
        "{}",
        stderr(&out)
    );
    assert_untouched(&c, &before);

    let c = Cinnabar::new(1, 0);
    c.up_detached(1, 0);
    let (_, before) = c.status();
    let out = c.run(&["drill", "failover", "--duration", "5s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no replica: failing it over would lose the shard"),
        "{}",
        stderr(&out)
    );
    assert_untouched(&c, &before);
}

/// The cluster is as healthy as before, with the same processes.
fn assert_untouched(c: &Cinnabar, before: &Value) {
    let (healthy, after) = c.status();
    assert!(healthy, "{after:#}");
    assert_eq!(
        support::pids(before),
        support::pids(&after),
        "a node was touched"
    );
}
