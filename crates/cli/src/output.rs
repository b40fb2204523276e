//! What a person sees: progress lines, the status table, the `down` summary.
//! Formatting only; no decisions are made here.

use std::fmt::Write as _;
use std::path::Path;

use cinnabar_local::{DownReport, StatusReport, UpEvent};

/// One progress line on stderr.
pub(crate) fn progress(event: &UpEvent<'_>) {
    eprintln!("  {event}");
}

/// The human form of `cinnabar status`.
pub(crate) fn status_table(report: &StatusReport) -> String {
    let mut out = String::new();
    let supervisor = report.supervisor_pid.map_or_else(
        || "no supervisor".to_owned(),
        |p| format!("supervisor pid {p}"),
    );
    let _ = writeln!(out, "endpoint  {}", report.endpoint);
    let _ = writeln!(out, "proxy     {}", proxy_line(report));
    let _ = writeln!(
        out,
        "dir       {} ({}, {}, {})",
        report.dir.display(),
        report.phase,
        report.server,
        supervisor
    );
    if report.topology == "sentinel" {
        group_tables(&mut out, report);
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<8} {:<16} {:<12} {:<12} {:>8} {:>9} {:>8}",
        "ADDRESS", "ROLE", "FOLLOWS", "SLOTS", "HEALTH", "PID", "MEMORY", "RESTARTS"
    );
    for node in &report.nodes {
        let slots = if node.slots.is_empty() {
            "-".to_owned()
        } else {
            node.slots.join(",")
        };
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<16} {:<12} {:<12} {:>8} {:>9} {:>8}",
            node.address,
            node.role,
            node.master.as_deref().unwrap_or("-"),
            slots,
            node.health,
            node.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            node.memory.as_deref().unwrap_or("-"),
            node.restarts
        );
    }
    out.push('\n');
    for problem in &report.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    let _ = writeln!(out, "{}", report.verdict);
    out
}

/// A Sentinel group's nodes (roles, offsets, lag) and its Sentinels (what each names).
fn group_tables(out: &mut String, report: &StatusReport) {
    let dash = || "-".to_owned();
    let _ = writeln!(
        out,
        "\n{:<16} {:<8} {:<16} {:>12} {:>10} {:>8} {:<12} {:>8} {:>8}",
        "ADDRESS", "ROLE", "FOLLOWS", "OFFSET", "LAG BYTES", "LAG S", "HEALTH", "PID", "RESTARTS"
    );
    for node in &report.nodes {
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<16} {:>12} {:>10} {:>8} {:<12} {:>8} {:>8}",
            node.address,
            node.role,
            node.master.as_deref().unwrap_or("-"),
            node.offset.map_or_else(dash, |o| o.to_string()),
            node.lag_bytes.map_or_else(dash, |o| o.to_string()),
            node.lag_seconds.map_or_else(dash, |o| o.to_string()),
            node.health,
            node.pid.map_or_else(dash, |p| p.to_string()),
            node.restarts
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<16} {:<24} {:>8} {:>9} {:>8} {:>8}",
        "SENTINEL", "NAMES MASTER", "FLAGS", "REPLICAS", "SENTINELS", "PID", "RESTARTS"
    );
    for sentinel in &report.sentinels {
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<24} {:>8} {:>9} {:>8} {:>8}",
            sentinel.address,
            sentinel.master.as_deref().unwrap_or("DOWN"),
            if sentinel.flags.is_empty() {
                dash()
            } else {
                sentinel.flags.join(",")
            },
            sentinel.replicas.map_or_else(dash, |n| n.to_string()),
            sentinel
                .other_sentinels
                .map_or_else(dash, |n| (n + 1).to_string()),
            sentinel.pid.map_or_else(dash, |p| p.to_string()),
            sentinel.restarts
        );
    }
    out.push('\n');
    for problem in &report.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    let _ = writeln!(out, "{}", report.verdict);
}

/// `127.0.0.1:6380 up (in supervisor pid 42, 1 worker)`, or why there is none.
fn proxy_line(report: &StatusReport) -> String {
    let Some(proxy) = &report.proxy else {
        return "none (--no-proxy: the endpoint is the first node; use cluster mode, redis-cli -c)"
            .into();
    };
    let workers = match proxy.workers {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    let host = proxy
        .pid
        .map_or_else(String::new, |p| format!("in supervisor pid {p}, "));
    match &proxy.error {
        None => format!("{} up ({host}{workers})", proxy.address),
        Some(error) => format!("{} DOWN: {error} ({host}{workers})", proxy.address),
    }
}

/// The one-paragraph summary `cinnabar down` prints.
pub(crate) fn down_summary(report: &DownReport, dir: &Path) -> String {
    let mut parts = Vec::new();
    if let Some(pid) = report.supervisor_pid {
        parts.push(match &report.proxy_stopped {
            Some(proxy) => {
                format!("stopped supervisor (pid {pid}), its proxy on {proxy} and its nodes")
            }
            None => format!("stopped supervisor (pid {pid}) and its nodes"),
        });
    }
    if !report.orphans_stopped.is_empty() {
        parts.push(format!(
            "stopped {} unsupervised node process(es)",
            report.orphans_stopped.len()
        ));
    }
    if parts.is_empty() {
        parts.push("nothing was running".into());
    }
    if report.purged {
        parts.push(format!("removed all data in {}", dir.display()));
    } else {
        parts.push(format!(
            "data kept in {} (`cinnabar down --purge` removes it)",
            dir.display()
        ));
    }
    parts.join("; ")
}
