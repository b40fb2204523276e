//! The drill report: one value, written three ways into a directory: `report.txt` for a person,
//! `report.json` for scripts, `timeline.svg` for a browser.
//!
//! The JSON is a contract for scripts: fields are added, never renamed. Times are milliseconds:
//! `*_at_ms` count from the workload's start, `time_to_*_ms` from the fault (except
//! `time_to_rejoin_ms`, from the restore). A milestone that never happened is `null`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::DrillError;
use crate::fault::FaultKind;
use crate::timeline::SecondSummary;
use crate::verdict::Verdict;

/// File names inside the report directory.
pub const TEXT_FILE: &str = "report.txt";
/// See [`TEXT_FILE`].
pub const JSON_FILE: &str = "report.json";
/// See [`TEXT_FILE`].
pub const SVG_FILE: &str = "timeline.svg";

/// A point of the failover the drill watches for, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    /// The fault was injected.
    Fault,
    /// A surviving node first flagged the victim `fail?`.
    Suspected,
    /// A surviving node first flagged the victim `fail`: the cluster detected the failure.
    Detected,
    /// A replica serves the victim's slots, as the other masters see it.
    Promoted,
    /// The cluster serves every slot again with the victim still down.
    Serving,
    /// The victim was restored (restarted or resumed).
    Restored,
    /// The victim is back as a replica with its replication link up.
    Rejoined,
    /// The whole cluster, victim included, checks healthy.
    Healthy,
}

impl Milestone {
    /// A short label for charts and tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fault => "fault",
            Self::Suspected => "fail? seen",
            Self::Detected => "fail (detected)",
            Self::Promoted => "replica promoted",
            Self::Serving => "all slots served",
            Self::Restored => "victim restored",
            Self::Rejoined => "rejoined as replica",
            Self::Healthy => "healthy",
        }
    }
}

/// When a milestone happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MilestoneAt {
    /// Which.
    pub milestone: Milestone,
    /// Since the workload started.
    pub at_ms: u64,
    /// Who saw it or what it was, when that says something (`by 127.0.0.1:6382`).
    pub detail: String,
}

/// A node named in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRef {
    /// Node id.
    pub id: String,
    /// `host:port`.
    pub address: String,
}

/// One acknowledged write that was missing or changed at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    /// The key.
    pub key: String,
    /// Its hash slot.
    pub slot: u16,
    /// When it was acknowledged, since the workload started.
    pub acked_at_ms: u64,
    /// The same, relative to the fault (negative: before it).
    pub acked_since_fault_ms: i64,
    /// Whether it falls inside the failover window (see `verdict`).
    pub within_window: bool,
}

/// Overall client latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest request, ms.
    pub max_ms: Option<f64>,
}

/// What `check` said at each stage, as its one-line summary plus problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// Before the fault.
    pub before: String,
    /// The first check that found the cluster serving with the victim down.
    pub while_down: Option<String>,
    /// The last check.
    pub after: String,
}

/// Everything a drill found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillReport {
    /// The conclusion.
    pub verdict: Verdict,
    /// Why, one sentence each.
    pub verdict_reasons: Vec<String>,
    /// What was done to the master.
    pub fault: FaultKind,
    /// The shard failed (0 = the master owning slot 0, then by first slot).
    pub shard: usize,
    /// Its master, the victim.
    pub victim: NodeRef,
    /// The victim's slots, e.g. `0-5460`.
    pub victim_slots: String,
    /// The replica that took over.
    pub promoted: Option<NodeRef>,
    /// The endpoint the workload used.
    pub endpoint: String,
    /// Workload connections.
    pub connections: usize,
    /// Target operations per second.
    pub target_ops_per_second: u32,
    /// Start of the drill, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// From workload start to stop.
    pub duration_ms: u64,
    /// When the fault was injected, since the workload started.
    pub fault_at_ms: u64,
    /// Fault → first `fail?` flag.
    pub time_to_suspect_ms: Option<u64>,
    /// Fault → first `fail` flag: the cluster agreed the master is down.
    pub time_to_detect_ms: Option<u64>,
    /// Fault → a replica serves the slots, as the other masters see it.
    pub time_to_promote_ms: Option<u64>,
    /// Fault → every slot served again with the victim still down.
    pub time_to_serve_ms: Option<u64>,
    /// Restore → the victim is a replica with its link up.
    pub time_to_rejoin_ms: Option<u64>,
    /// Fault → the whole cluster checks healthy again.
    pub time_to_healthy_ms: Option<u64>,
    /// Each milestone that happened, in order.
    pub milestones: Vec<MilestoneAt>,
    /// Operations finished.
    pub operations: u64,
    /// Writes acknowledged (and verified at the end).
    pub acknowledged_writes: u64,
    /// Failed requests: error replies, timeouts, failed connections.
    pub client_errors: u64,
    /// Reads that found an acknowledged write missing or changed.
    pub stale_reads: u64,
    /// Latency over the whole run.
    pub latency: LatencySummary,
    /// Acknowledged writes missing or changed at the end.
    pub lost_writes: u64,
    /// Of those, inside the failover window.
    pub lost_writes_within_window: u64,
    /// Every lost write, in acknowledgement order.
    pub lost_keys: Vec<LostWrite>,
    /// The final check found nothing wrong.
    pub healthy_at_end: bool,
    /// What `check` said along the way.
    pub checks: Checks,
    /// Things that went wrong during the drill, one sentence each.
    pub findings: Vec<String>,
    /// Second by second.
    pub seconds: Vec<SecondSummary>,
}

/// Where [`DrillReport::write_to`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.txt`.
    pub text: PathBuf,
    /// `report.json`.
    pub json: PathBuf,
    /// `timeline.svg`.
    pub svg: PathBuf,
}

impl DrillReport {
    /// When `milestone` happened, since the workload started.
    pub fn at(&self, milestone: Milestone) -> Option<u64> {
        self.milestones
            .iter()
            .find(|m| m.milestone == milestone)
            .map(|m| m.at_ms)
    }

    /// The report as JSON.
    ///
    /// # Errors
    /// Never in practice (every field serialises); kept typed for the caller.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Writes `report.txt`, `report.json` and `timeline.svg` into `dir` (created if needed).
    ///
    /// # Errors
    /// [`DrillError::Write`] naming the file that could not be written.
    pub fn write_to(&self, dir: &Path) -> Result<ReportFiles, DrillError> {
        let failed = |path: &Path, source: std::io::Error| DrillError::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
        let files = ReportFiles {
            text: dir.join(TEXT_FILE),
            json: dir.join(JSON_FILE),
            svg: dir.join(SVG_FILE),
        };
        let json = self
            .to_json()
            .map_err(|e| failed(&files.json, std::io::Error::other(e)))?;
        std::fs::write(&files.text, self.to_text()).map_err(|e| failed(&files.text, e))?;
        std::fs::write(&files.json, json).map_err(|e| failed(&files.json, e))?;
        std::fs::write(&files.svg, crate::svg::timeline_svg(self))
            .map_err(|e| failed(&files.svg, e))?;
        Ok(files)
    }

    /// The report for a person at a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "Failover drill: {} of the master of shard {} ({}, slots {})",
            self.fault, self.shard, self.victim.address, self.victim_slots
        )?;
        writeln!(out, "Verdict: {}", self.verdict)?;
        for reason in &self.verdict_reasons {
            writeln!(out, "  - {reason}")?;
        }
        writeln!(out)?;
        writeln!(out, "Failover (times after the fault):")?;
        let rows = [
            ("time to suspect (fail?)", self.time_to_suspect_ms),
            ("time to detect (fail)", self.time_to_detect_ms),
            ("time to promote", self.time_to_promote_ms),
            ("time to serve all slots", self.time_to_serve_ms),
            ("time to healthy", self.time_to_healthy_ms),
        ];
        for (name, value) in rows {
            writeln!(out, "  {name:<26} {}", ms_or_never(value))?;
        }
        writeln!(
            out,
            "  {:<26} {} (after the restore)",
            "time to rejoin",
            ms_or_never(self.time_to_rejoin_ms)
        )?;
        if let Some(promoted) = &self.promoted {
            writeln!(out, "  new master of the shard    {}", promoted.address)?;
        }
        writeln!(out)?;
        writeln!(out, "Milestones (since the workload started):")?;
        for m in &self.milestones {
            let detail = if m.detail.is_empty() {
                String::new()
            } else {
                format!("  {}", m.detail)
            };
            writeln!(
                out,
                "  {:>7.1} s  {:<20}{detail}",
                m.at_ms as f64 / 1000.0,
                m.milestone.label()
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "Clients: {} connections through {}, target {} ops/s, {:.1} s",
            self.connections,
            self.endpoint,
            self.target_ops_per_second,
            self.duration_ms as f64 / 1000.0
        )?;
        writeln!(
            out,
            "  operations {}, acknowledged writes {}",
            self.operations, self.acknowledged_writes
        )?;
        writeln!(out, "  client-visible errors {}", self.client_errors)?;
        writeln!(out, "  stale reads {}", self.stale_reads)?;
        writeln!(
            out,
            "  latency p50 {} ms, p99 {} ms, max {} ms",
            fmt_ms(self.latency.p50_ms),
            fmt_ms(self.latency.p99_ms),
            fmt_ms(self.latency.max_ms)
        )?;
        writeln!(
            out,
            "  acknowledged writes lost {} of {} ({} within the failover window)",
            self.lost_writes, self.acknowledged_writes, self.lost_writes_within_window
        )?;
        for lost in self.lost_keys.iter().take(20) {
            writeln!(
                out,
                "    {} (slot {}, acknowledged {:+} ms from the fault{})",
                lost.key,
                lost.slot,
                lost.acked_since_fault_ms,
                if lost.within_window {
                    ""
                } else {
                    ", OUTSIDE the window"
                }
            )?;
        }
        if self.lost_keys.len() > 20 {
            writeln!(
                out,
                "    … {} more in report.json",
                self.lost_keys.len() - 20
            )?;
        }
        writeln!(out)?;
        self.write_seconds(out)?;
        writeln!(out)?;
        writeln!(out, "Checks:")?;
        writeln!(out, "  before:     {}", indent(&self.checks.before))?;
        if let Some(down) = &self.checks.while_down {
            writeln!(out, "  while down: {}", indent(down))?;
        }
        writeln!(out, "  after:      {}", indent(&self.checks.after))?;
        if !self.findings.is_empty() {
            writeln!(out)?;
            writeln!(out, "Findings:")?;
            for finding in &self.findings {
                writeln!(out, "  - {finding}")?;
            }
        }
        Ok(())
    }

    fn write_seconds(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "Per second (operations filed under the second they started):"
        )?;
        writeln!(
            out,
            "  {:>4} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  events",
            "s", "ops", "errors", "stale", "p50 ms", "p99 ms", "max ms"
        )?;
        for row in &self.seconds {
            let events: Vec<&str> = self
                .milestones
                .iter()
                .filter(|m| m.at_ms / 1000 == row.second)
                .map(|m| m.milestone.label())
                .collect();
            writeln!(
                out,
                "  {:>4} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}  {}",
                row.second,
                row.ops,
                row.errors,
                row.stale_reads,
                fmt_ms(row.p50_ms),
                fmt_ms(row.p99_ms),
                fmt_ms(row.max_ms),
                events.join(", ")
            )?;
            for sample in &row.error_samples {
                writeln!(out, "         ! {sample}")?;
            }
        }
        Ok(())
    }
}

fn ms_or_never(value: Option<u64>) -> String {
    value.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms"))
}

fn fmt_ms(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}"),
        Some(ms) if ms < 100.0 => format!("{ms:.1}"),
        Some(ms) => format!("{ms:.0}"),
    }
}

/// Continuation lines of a multi-line check summary, aligned under its first line.
fn indent(text: &str) -> String {
    text.replace('\n', "\n              ")
}
