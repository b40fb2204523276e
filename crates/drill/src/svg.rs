//! The drill's timeline chart as a self-contained SVG a browser opens: throughput, errors and
//! latency per second over time, with the fault and each recovery milestone marked.
//!
//! Written by hand (no chart library): three panels sharing one time axis, latency on a log
//! scale (a failover turns sub-millisecond requests into seconds-long ones; a linear scale would
//! flatten everything else), the span from fault to healthy shaded. It must only ever emit
//! well-formed XML: every piece of text goes through [`escape`].

use std::fmt::Write as _;

use crate::report::{DrillReport, Milestone};
use crate::timeline::SecondSummary;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 700.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
/// Rows for marker labels above the panels, so labels of close milestones do not overlap.
const LABEL_ROWS: usize = 7;
const LABEL_TOP: f64 = 66.0;
const LABEL_ROW_HEIGHT: f64 = 12.5;
/// Rough width of one character of an 11 px label, to keep labels apart.
const LABEL_CHAR_WIDTH: f64 = 6.2;

/// Picks one latency figure of a second.
type LatencyOf = fn(&SecondSummary) -> Option<f64>;

/// A horizontal band of the chart.
#[derive(Debug, Clone, Copy)]
struct Panel {
    top: f64,
    height: f64,
}

impl Panel {
    fn bottom(self) -> f64 {
        self.top + self.height
    }
}

const THROUGHPUT: Panel = Panel {
    top: 155.0,
    height: 140.0,
};
const ERRORS: Panel = Panel {
    top: 325.0,
    height: 90.0,
};
const LATENCY: Panel = Panel {
    top: 445.0,
    height: 180.0,
};

/// Colours of the milestone markers, in [`Milestone`] order of importance.
fn marker_colour(milestone: Milestone) -> &'static str {
    match milestone {
        Milestone::Fault => "#d62728",
        Milestone::Suspected => "#ff9896",
        Milestone::Detected => "#ff7f0e",
        Milestone::Promoted => "#2ca02c",
        Milestone::Serving => "#17becf",
        Milestone::Restored => "#1f77b4",
        Milestone::Rejoined => "#9467bd",
        Milestone::Healthy => "#7f7f7f",
    }
}

/// Renders the chart of `report`.
pub fn timeline_svg(report: &DrillReport) -> String {
    let seconds = report.seconds.len().max(1) as f64;
    let span = seconds.max(report.duration_ms as f64 / 1000.0);
    let chart = Chart { span };
    let mut svg = String::with_capacity(32 * 1024);
    let _ = chart.write(report, &mut svg);
    svg
}

struct Chart {
    /// Seconds covered by the time axis.
    span: f64,
}

impl Chart {
    fn x(&self, seconds: f64) -> f64 {
        LEFT + seconds / self.span * PLOT_WIDTH
    }

    fn write(&self, report: &DrillReport, svg: &mut String) -> std::fmt::Result {
        writeln!(
            svg,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<title>{}</title>
<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#,
            escape(&title(report))
        )?;
        writeln!(
            svg,
            r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
            escape(&title(report))
        )?;
        writeln!(
            svg,
            r##"<text x="{LEFT}" y="44" fill="#333">{}</text>"##,
            escape(&subtitle(report))
        )?;
        self.write_degraded_span(report, svg)?;
        self.write_time_grid(svg)?;
        // Markers before the data, so lines and legends are drawn over them.
        self.write_markers(report, svg)?;
        self.write_throughput(&report.seconds, svg)?;
        self.write_errors(&report.seconds, svg)?;
        self.write_latency(&report.seconds, svg)?;
        writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">seconds since the workload started</text>"#,
            LEFT + PLOT_WIDTH / 2.0,
            LATENCY.bottom() + 36.0
        )?;
        writeln!(
            svg,
            r##"<text x="{LEFT}" y="{}" font-size="11" fill="#555">Each request is counted in the second it started; the shaded span runs from the fault to the cluster being healthy again.</text>"##,
            HEIGHT - 12.0
        )?;
        writeln!(svg, "</svg>")
    }

    /// Light shading from the fault to healthy (or to the end, if it never got there).
    fn write_degraded_span(&self, report: &DrillReport, svg: &mut String) -> std::fmt::Result {
        let Some(fault) = report.at(Milestone::Fault) else {
            return Ok(());
        };
        let end = report
            .at(Milestone::Healthy)
            .map_or(self.span, |ms| ms as f64 / 1000.0);
        let (x0, x1) = (self.x(fault as f64 / 1000.0), self.x(end));
        writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{:.1}" fill="#d62728" fill-opacity="0.07"/>"##,
            THROUGHPUT.top,
            (x1 - x0).max(0.0),
            LATENCY.bottom() - THROUGHPUT.top
        )
    }

    /// Vertical grid lines and second labels under the last panel.
    fn write_time_grid(&self, svg: &mut String) -> std::fmt::Result {
        let step = nice_step(self.span, 12.0);
        let mut t = 0.0;
        while t <= self.span + 1e-9 {
            let x = self.x(t);
            for panel in [THROUGHPUT, ERRORS, LATENCY] {
                writeln!(
                    svg,
                    r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#eee"/>"##,
                    panel.top,
                    panel.bottom()
                )?;
            }
            writeln!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                LATENCY.bottom() + 16.0,
                trim_number(t)
            )?;
            t += step;
        }
        Ok(())
    }

    fn write_axes(&self, panel: Panel, label: &str, svg: &mut String) -> std::fmt::Result {
        writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{}" width="{PLOT_WIDTH}" height="{}" fill="none" stroke="#999"/>"##,
            panel.top, panel.height
        )?;
        let middle = panel.top + panel.height / 2.0;
        writeln!(
            svg,
            r#"<text x="22" y="{middle:.1}" text-anchor="middle" transform="rotate(-90 22 {middle:.1})">{}</text>"#,
            escape(label)
        )
    }

    /// Ticks on a linear axis from 0 to `max`.
    fn write_linear_ticks(&self, panel: Panel, max: f64, svg: &mut String) -> std::fmt::Result {
        let step = nice_step(max, 4.0);
        let mut value = 0.0;
        while value <= max + 1e-9 {
            let y = panel.bottom() - value / max * panel.height;
            writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + PLOT_WIDTH,
                LEFT - 6.0,
                y + 4.0,
                trim_number(value)
            )?;
            value += step;
        }
        Ok(())
    }

    fn write_throughput(&self, rows: &[SecondSummary], svg: &mut String) -> std::fmt::Result {
        let peak = rows.iter().map(|r| r.ops).max().unwrap_or(0) as f64;
        let max = axis_max(peak);
        self.write_axes(THROUGHPUT, "operations / s", svg)?;
        self.write_linear_ticks(THROUGHPUT, max, svg)?;
        let points: Vec<Option<f64>> = rows.iter().map(|r| Some(r.ops as f64)).collect();
        let path = self.path(&points, |v| {
            THROUGHPUT.bottom() - v / max * THROUGHPUT.height
        });
        writeln!(
            svg,
            r##"<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##
        )?;
        legend(
            svg,
            THROUGHPUT,
            &[("#1f77b4", "operations finished, by second started")],
        )
    }

    fn write_errors(&self, rows: &[SecondSummary], svg: &mut String) -> std::fmt::Result {
        let peak = rows
            .iter()
            .map(|r| r.errors + r.stale_reads)
            .max()
            .unwrap_or(0) as f64;
        let max = axis_max(peak.max(4.0));
        self.write_axes(ERRORS, "errors / s", svg)?;
        self.write_linear_ticks(ERRORS, max, svg)?;
        let bar = (PLOT_WIDTH / self.span * 0.8).max(1.0);
        for row in rows {
            let x = self.x(row.second as f64 + 0.5) - bar / 2.0;
            let mut base = ERRORS.bottom();
            for (count, colour) in [(row.errors, "#d62728"), (row.stale_reads, "#8c564b")] {
                if count == 0 {
                    continue;
                }
                let height = count as f64 / max * ERRORS.height;
                base -= height;
                writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{base:.1}" width="{bar:.1}" height="{height:.1}" fill="{colour}"/>"#
                )?;
            }
        }
        legend(
            svg,
            ERRORS,
            &[("#d62728", "failed requests"), ("#8c564b", "stale reads")],
        )
    }

    fn write_latency(&self, rows: &[SecondSummary], svg: &mut String) -> std::fmt::Result {
        let worst = rows.iter().filter_map(|r| r.max_ms).fold(1.0_f64, f64::max);
        // Decades from 0.1 ms up to the one holding the slowest request.
        let (low, high) = (-1.0_f64, worst.log10().ceil().max(1.0));
        let y = |ms: f64| {
            let exponent = ms.max(0.1).log10().clamp(low, high);
            LATENCY.bottom() - (exponent - low) / (high - low) * LATENCY.height
        };
        self.write_axes(LATENCY, "latency, ms (log scale)", svg)?;
        let mut exponent = low;
        while exponent <= high + 1e-9 {
            let value = 10f64.powf(exponent);
            let at = y(value);
            writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{at:.1}" x2="{}" y2="{at:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + PLOT_WIDTH,
                LEFT - 6.0,
                at + 4.0,
                trim_number(value)
            )?;
            exponent += 1.0;
        }
        let series: [(&str, LatencyOf, &str); 3] = [
            ("#2ca02c", |r| r.p50_ms, "p50"),
            ("#ff7f0e", |r| r.p99_ms, "p99"),
            ("#9467bd", |r| r.max_ms, "max"),
        ];
        for (colour, value, _) in &series {
            let points: Vec<Option<f64>> = rows.iter().map(value).collect();
            let path = self.path(&points, y);
            writeln!(
                svg,
                r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#
            )?;
        }
        let entries: Vec<(&str, &str)> = series.iter().map(|(c, _, name)| (*c, *name)).collect();
        legend(svg, LATENCY, &entries)
    }

    /// A path through one point per second (at the middle of the second), broken where a
    /// second has no value.
    fn path(&self, values: &[Option<f64>], y: impl Fn(f64) -> f64) -> String {
        let mut d = String::new();
        let mut drawing = false;
        for (second, value) in values.iter().enumerate() {
            match value {
                Some(v) => {
                    let command = if drawing { 'L' } else { 'M' };
                    let _ = write!(
                        d,
                        "{command}{:.1},{:.1} ",
                        self.x(second as f64 + 0.5),
                        y(*v)
                    );
                    drawing = true;
                }
                None => drawing = false,
            }
        }
        if d.is_empty() {
            // An empty `d` is valid but some viewers warn; a move to the origin draws nothing.
            d.push_str(&format!("M{LEFT},{}", LATENCY.bottom()));
        }
        d.trim_end().to_owned()
    }

    /// A dashed vertical line per milestone across all panels, labelled above them. A label goes
    /// right of its line, else left of it, in the first row where it overlaps no earlier label,
    /// so milestones a few milliseconds apart stay legible.
    fn write_markers(&self, report: &DrillReport, svg: &mut String) -> std::fmt::Result {
        let mut rows: Vec<Vec<(f64, f64)>> = vec![Vec::new(); LABEL_ROWS];
        for m in &report.milestones {
            let x = self.x(m.at_ms as f64 / 1000.0);
            let colour = marker_colour(m.milestone);
            let text = format!("{} {:.1} s", m.milestone.label(), m.at_ms as f64 / 1000.0);
            let width = text.chars().count() as f64 * LABEL_CHAR_WIDTH;
            let (row, right_side) = place_label(&rows, x, width);
            let span = if right_side {
                (x, x + 5.0 + width)
            } else {
                (x - 5.0 - width, x)
            };
            if let Some(taken) = rows.get_mut(row) {
                taken.push(span);
            }
            let label_y = LABEL_TOP + row as f64 * LABEL_ROW_HEIGHT;
            let (text_x, anchor) = if right_side {
                (x + 5.0, "start")
            } else {
                (x - 5.0, "end")
            };
            writeln!(
                svg,
                r#"<g class="marker" data-milestone="{}"><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5,3"/><circle cx="{x:.1}" cy="{:.1}" r="3" fill="{colour}"/><text x="{text_x:.1}" y="{label_y:.1}" fill="{colour}" font-size="11" text-anchor="{anchor}">{}</text></g>"#,
                serde_json::to_value(m.milestone)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                label_y - 4.0,
                LATENCY.bottom(),
                label_y - 4.0,
                escape(&text)
            )?;
        }
        Ok(())
    }
}

/// The row and side (`true` = right of the line) for a label of `width` at `x`, given the spans
/// already taken in each row: the first free spot, right before left; when none is free, the
/// emptiest row.
fn place_label(rows: &[Vec<(f64, f64)>], x: f64, width: f64) -> (usize, bool) {
    let right = (x, x + 5.0 + width);
    let left = (x - 5.0 - width, x);
    let fits_right = right.1 <= WIDTH - 4.0;
    let fits_left = left.0 >= 4.0;
    let free = |row: &[(f64, f64)], (start, end): (f64, f64)| {
        row.iter()
            .all(|(s, e)| end + 4.0 <= *s || start >= *e + 4.0)
    };
    for (index, row) in rows.iter().enumerate() {
        if fits_right && free(row, right) {
            return (index, true);
        }
        if fits_left && free(row, left) {
            return (index, false);
        }
    }
    let emptiest = rows
        .iter()
        .enumerate()
        .min_by_key(|(_, row)| row.len())
        .map_or(0, |(index, _)| index);
    (emptiest, fits_right)
}

/// A legend in the top right corner of `panel`.
fn legend(svg: &mut String, panel: Panel, entries: &[(&str, &str)]) -> std::fmt::Result {
    let widths: Vec<f64> = entries
        .iter()
        .map(|(_, name)| name.chars().count() as f64 * 6.5 + 26.0)
        .collect();
    let total: f64 = widths.iter().sum();
    let mut x = LEFT + PLOT_WIDTH - 10.0;
    let y = panel.top + 14.0;
    // A white box keeps marker lines from running through the legend's text.
    writeln!(
        svg,
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="16" fill="white" fill-opacity="0.9"/>"#,
        x - total - 4.0,
        y - 12.0,
        total + 8.0
    )?;
    // Right to left, so the legend hugs the panel's right edge whatever the label lengths.
    for (colour, name) in entries.iter().rev() {
        x -= name.chars().count() as f64 * 6.5 + 26.0;
        writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            y - 4.0,
            x + 16.0,
            y - 4.0,
            x + 20.0,
            y,
            escape(name)
        )?;
    }
    Ok(())
}

fn title(report: &DrillReport) -> String {
    format!(
        "Failover drill: {} of shard {} master {} — {}",
        report.fault, report.shard, report.victim.address, report.verdict
    )
}

fn subtitle(report: &DrillReport) -> String {
    let secs = |ms: Option<u64>| {
        ms.map_or_else(
            || "never".to_owned(),
            |ms| format!("{:.1} s", ms as f64 / 1000.0),
        )
    };
    format!(
        "detect {} · promote {} · healthy {} · client errors {} · lost writes {} of {}",
        secs(report.time_to_detect_ms),
        secs(report.time_to_promote_ms),
        secs(report.time_to_healthy_ms),
        report.client_errors,
        report.lost_writes,
        report.acknowledged_writes
    )
}

/// The top of a linear axis: a little above `peak`, on a round number.
fn axis_max(peak: f64) -> f64 {
    let peak = peak.max(1.0);
    let step = nice_step(peak, 5.0);
    (peak * 1.1 / step).ceil() * step
}

/// A round step (1, 2 or 5 × 10^k) that cuts `range` into at most `parts` pieces.
fn nice_step(range: f64, parts: f64) -> f64 {
    let raw = (range / parts).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// `5` rather than `5.0`, `0.1` rather than `0.10000000000000002`.
fn trim_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Escapes text for XML or HTML content and quoted attribute values: this chart's labels, and
/// every value the console's pages show. A quote is `&#39;`, which XML and every HTML version
/// read (`&apos;` is not HTML 4).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind;
    use crate::report::{Checks, LatencySummary, MilestoneAt, NodeRef};
    use crate::verdict::Verdict;

    fn row(second: u64, ops: u64, errors: u64, max_ms: Option<f64>) -> SecondSummary {
        SecondSummary {
            second,
            ops,
            errors,
            stale_reads: 0,
            p50_ms: max_ms.map(|m| m / 10.0),
            p99_ms: max_ms.map(|m| m / 2.0),
            max_ms,
            error_samples: Vec::new(),
        }
    }

    fn sample_report() -> DrillReport {
        let at = |milestone, at_ms| MilestoneAt {
            milestone,
            at_ms,
            detail: String::new(),
        };
        DrillReport {
            verdict: Verdict::Pass,
            verdict_reasons: vec!["ok".into()],
            fault: FaultKind::Kill,
            shard: 0,
            victim: NodeRef {
                id: "a".into(),
                address: "127.0.0.1:7001".into(),
            },
            victim_slots: "0-5460".into(),
            promoted: None,
            endpoint: "127.0.0.1:7000".into(),
            connections: 4,
            target_ops_per_second: 1000,
            started_unix_ms: 0,
            duration_ms: 6_000,
            fault_at_ms: 2_000,
            time_to_suspect_ms: Some(2_000),
            time_to_detect_ms: Some(2_500),
            time_to_promote_ms: Some(3_000),
            time_to_serve_ms: None,
            time_to_rejoin_ms: None,
            time_to_healthy_ms: None,
            milestones: vec![
                at(Milestone::Fault, 2_000),
                at(Milestone::Detected, 4_500),
                at(Milestone::Promoted, 5_000),
            ],
            operations: 10,
            acknowledged_writes: 5,
            client_errors: 3,
            stale_reads: 0,
            latency: LatencySummary {
                p50_ms: Some(0.3),
                p99_ms: Some(2.0),
                max_ms: Some(6_000.0),
            },
            lost_writes: 0,
            lost_writes_within_window: 0,
            lost_keys: Vec::new(),
            healthy_at_end: true,
            checks: Checks {
                before: "ok".into(),
                while_down: None,
                after: "ok <&> \"quoted\"".into(),
            },
            findings: Vec::new(),
            seconds: vec![
                row(0, 1000, 0, Some(2.0)),
                row(1, 990, 0, Some(3.0)),
                row(2, 200, 3, Some(5_800.0)),
                row(3, 0, 0, None),
                row(4, 0, 0, None),
                row(5, 1000, 0, Some(2.5)),
            ],
        }
    }

    /// A minimal well-formedness check: every tag closes in order, attributes are quoted, and
    /// no raw `<` or `&` sits in text.
    fn assert_well_formed(xml: &str) {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("an XML declaration");
        let mut open: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            assert!(!text.contains('>'), "stray '>' in text {text:?}");
            check_entities(text);
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().expect("a tag name");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "bad tag name {name:?}"
            );
            let attributes = &tag[name.len()..];
            assert_eq!(
                attributes.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            assert!(!attributes.contains('<'), "raw '<' in <{tag}>");
            check_entities(attributes);
            if !self_closing {
                open.push(name.to_owned());
            }
        }
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
        assert!(open.is_empty(), "never closed: {open:?}");
    }

    fn check_entities(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#39;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "raw '&' in {text:?}"
            );
        }
    }

    #[test]
    fn the_chart_is_well_formed_xml_with_every_part_a_reader_needs() {
        let svg = timeline_svg(&sample_report());
        assert_well_formed(&svg);
        for expected in [
            "operations / s",
            "errors / s",
            "latency, ms (log scale)",
            "seconds since the workload started",
            "data-milestone=\"fault\"",
            "data-milestone=\"detected\"",
            "data-milestone=\"promoted\"",
            "fault 2.0 s",
            "replica promoted 5.0 s",
        ] {
            assert!(svg.contains(expected), "missing {expected:?}");
        }
    }

    #[test]
    fn labels_of_close_milestones_go_to_different_rows() {
        let mut report = sample_report();
        report.milestones = [
            Milestone::Fault,
            Milestone::Promoted,
            Milestone::Serving,
            Milestone::Restored,
        ]
        .into_iter()
        .map(|milestone| MilestoneAt {
            milestone,
            at_ms: 5_000,
            detail: String::new(),
        })
        .collect();
        let svg = timeline_svg(&report);
        let mut label_rows: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains("class=\"marker\""))
            .filter_map(|l| {
                l.split("<text")
                    .nth(1)?
                    .split("y=\"")
                    .nth(1)?
                    .split('"')
                    .next()
            })
            .collect();
        label_rows.sort_unstable();
        label_rows.dedup();
        assert_eq!(label_rows.len(), 4, "{label_rows:?}");
    }

    #[test]
    fn eight_milestones_within_two_seconds_get_labels_that_do_not_overlap() {
        let chart = Chart { span: 31.0 };
        let mut rows: Vec<Vec<(f64, f64)>> = vec![Vec::new(); LABEL_ROWS];
        let mut placed = Vec::new();
        for (at, label) in [
            (5.0, "fault 5.0 s"),
            (11.3, "fail? seen 11.3 s"),
            (12.3, "fail (detected) 12.3 s"),
            (13.0, "replica promoted 13.0 s"),
            (13.0, "all slots served 13.0 s"),
            (13.0, "victim restored 13.0 s"),
            (13.1, "rejoined as replica 13.1 s"),
            (13.4, "healthy 13.4 s"),
        ] {
            let x = chart.x(at);
            let width = label.len() as f64 * LABEL_CHAR_WIDTH;
            let (row, right) = place_label(&rows, x, width);
            let span = if right {
                (x, x + 5.0 + width)
            } else {
                (x - 5.0 - width, x)
            };
            rows[row].push(span);
            placed.push((row, span));
        }
        for (i, (row_a, a)) in placed.iter().enumerate() {
            for (row_b, b) in &placed[i + 1..] {
                let apart = a.1 <= b.0 || b.1 <= a.0;
                assert!(
                    row_a != row_b || apart,
                    "{a:?} and {b:?} overlap in row {row_a}"
                );
            }
        }
    }

    #[test]
    fn seconds_without_requests_break_the_latency_line() {
        let chart = Chart { span: 4.0 };
        let path = chart.path(&[Some(1.0), None, Some(2.0), Some(3.0)], |v| v);
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert_eq!(path.matches('L').count(), 1, "{path}");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn text_from_the_cluster_is_escaped() {
        let mut report = sample_report();
        report.victim.address = "<node & \"co\">".into();
        let svg = timeline_svg(&report);
        assert_well_formed(&svg);
        assert!(svg.contains("&lt;node &amp; &quot;co&quot;&gt;"));
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_step(10.0, 4.0), 5.0);
        assert_eq!(nice_step(1000.0, 4.0), 500.0);
        assert_eq!(nice_step(12.0, 12.0), 1.0);
        assert_eq!(nice_step(30.0, 12.0), 5.0);
        assert_eq!(axis_max(1000.0), 1200.0);
        assert_eq!(trim_number(0.1), "0.1");
        assert_eq!(trim_number(5.0), "5");
    }
}
