//! The Grafana dashboard and the Prometheus alert rules in `dashboards/` load as they are and
//! name only metrics the proxy exports: the dashboard JSON has the structure Grafana needs to
//! import it, the rule file parses strictly into the fields Prometheus reads, every PromQL
//! expression in both passes a light syntax check, and every `cinnabar_*` metric they mention is
//! in `Stats::render` (or announced below as pending).
//!
//! `promtool check rules dashboards/cinnabar-alerts.yml` checks the rules more deeply when promtool
//! is installed; this test does not need it.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use cinnabar_proxy::stats::{Gauges, Stats};
use serde::Deserialize;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../../dashboards/cinnabar-proxy.json");
const ALERTS: &str = include_str!("../../../dashboards/cinnabar-alerts.yml");

/// Metrics announced but not yet exported: the dashboard and the alerts may already use them, and
/// nothing else outside `Stats::render` is accepted. The test fails when a name here starts being
/// exported (remove it then) or is no longer used anywhere (remove it too), so this list always
/// says exactly what is pending.
const PENDING: &[&str] = &[];

/// Alerts issue 4 asks for; the file may have more.
const REQUIRED_ALERTS: &[&str] = &[
    "CinnabarProxyDown",
    "CinnabarHighErrorRatio",
    "CinnabarHighP99Latency",
    "CinnabarBackendUnreachable",
    "CinnabarSlotsNotCovered",
    "CinnabarAuditDrops",
];

/// Labels every alert keeps (the rules aggregate `by (job, instance)`), so the only ones its
/// annotations may name.
const ALERT_LABELS: &[&str] = &["job", "instance"];

/// The data source every panel and query variable must use: the dashboard's own variable, so
/// the dashboard imports into any Grafana without editing.
const DATASOURCE_UID: &str = "${datasource}";

/// The filter every metric selector in the dashboard carries.
const INSTANCE_FILTER: &str = "instance=~\"$instance\"";

// ---------------------------------------------------------------------------------------------
// What the proxy exports.

/// Metric families of `Stats::render` (name → Prometheus type), from its `# TYPE` lines.
fn exported_families() -> BTreeMap<String, String> {
    let text = Stats::default().render(Gauges::default());
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap().to_owned();
            let kind = words.next().unwrap().to_owned();
            assert!(
                families.insert(name.clone(), kind).is_none(),
                "{name} has two TYPE lines"
            );
        }
    }
    assert!(!families.is_empty(), "Stats::render printed no TYPE line");
    families
}

/// Whether a series name belongs to an exported family: the family itself, or a histogram's
/// (or summary's) `_bucket`, `_sum`, `_count` series.
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|family| {
            families
                .get(family)
                .is_some_and(|kind| kind == "histogram" || kind == "summary")
        })
    })
}

#[test]
fn exported_families_cover_every_rendered_sample() {
    let families = exported_families();
    let text = Stats::default().render(Gauges::default());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            is_exported(name, &families),
            "sample {name} has no TYPE line"
        );
    }
    assert!(is_exported(
        "cinnabar_request_duration_seconds_bucket",
        &families
    ));
    assert!(!is_exported("cinnabar_requests_total_count", &families));
}

// ---------------------------------------------------------------------------------------------
// A light look at PromQL.

/// `expr` with every string literal emptied (so label values such as `job=~"cinnabar.*"` are not
/// taken for metric names), after checking it is non-empty, its strings end and its brackets
/// balance.
fn promql_code(expr: &str) -> Result<String, String> {
    if expr.trim().is_empty() {
        return Err("empty expression".to_owned());
    }
    let mut code = String::with_capacity(expr.len());
    let mut open: Vec<char> = Vec::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                code.push(c);
                let mut closed = false;
                while let Some(s) = chars.next() {
                    if s == '\\' && c != '`' {
                        chars.next();
                    } else if s == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("unterminated string starting with {c}"));
                }
                code.push(c);
                continue;
            }
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(expected) {
                    return Err(format!("unbalanced {c}"));
                }
            }
            '#' => return Err("a comment inside an expression".to_owned()),
            _ => {}
        }
        code.push(c);
    }
    if let Some(c) = open.pop() {
        return Err(format!("{c} never closed"));
    }
    Ok(code)
}

/// Every `cinnabar_*` identifier in `code` (strings already emptied), in order.
fn cinnabar_metrics(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut word = String::new();
            while let Some(&w) = chars.peek() {
                if w.is_ascii_alphanumeric() || w == '_' || w == ':' {
                    word.push(w);
                    chars.next();
                } else {
                    break;
                }
            }
            if word.starts_with("cinnabar_") {
                names.push(word);
            }
        } else if c.is_ascii_digit() {
            // A number or a duration (`5m`): its letters are no identifier.
            while chars
                .peek()
                .is_some_and(|w| w.is_ascii_alphanumeric() || *w == '.')
            {
                chars.next();
            }
        } else {
            chars.next();
        }
    }
    names
}

#[test]
fn the_promql_helpers_catch_what_they_should() {
    let code =
        promql_code(r#"sum(rate(cinnabar_requsts_total{job=~"cinnabar_x.*"}[5m])) > 0"#).unwrap();
    assert_eq!(cinnabar_metrics(&code), ["cinnabar_requsts_total"]);
    assert!(!is_exported("cinnabar_requsts_total", &exported_families()));
    assert!(promql_code("sum(rate(x[5m])").is_err());
    assert!(promql_code("x{a=\"b}").is_err());
    assert!(promql_code("rate(x[5m)]").is_err());
    assert!(promql_code("  ").is_err());
}

/// Where each metric is used, for the report.
#[derive(Default)]
struct Uses(BTreeMap<String, BTreeSet<String>>);

impl Uses {
    fn add(&mut self, code: &str, place: &str) {
        for name in cinnabar_metrics(code) {
            self.0.entry(name).or_default().insert(place.to_owned());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard.

fn str_field<'a>(v: &'a Value, key: &str, place: &str) -> &'a str {
    let s = v
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{place}: `{key}` must be a string"));
    assert!(!s.trim().is_empty(), "{place}: `{key}` is empty");
    s
}

fn uint_field(v: &Value, key: &str, place: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{place}: `{key}` must be a non-negative integer"))
}

fn datasource_uid<'a>(v: &'a Value, place: &str) -> &'a str {
    let ds = v
        .get("datasource")
        .unwrap_or_else(|| panic!("{place}: no datasource"));
    assert_eq!(
        ds.get("type").and_then(Value::as_str),
        Some("prometheus"),
        "{place}: the datasource must be of type prometheus"
    );
    str_field(ds, "uid", place)
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in panels {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(all_panels(nested));
        }
    }
    out
}

/// Checks the dashboard's structure; returns the metrics its queries use.
fn check_dashboard(dashboard: &Value) -> Uses {
    let mut uses = Uses::default();
    let title = str_field(dashboard, "title", "dashboard");
    let uid = str_field(dashboard, "uid", "dashboard");
    assert!(uid.len() <= 40, "a Grafana uid has at most 40 characters");
    assert!(
        dashboard.get("id").is_none_or(Value::is_null),
        "`id` must be null so that an import creates the dashboard"
    );
    let schema = uint_field(dashboard, "schemaVersion", "dashboard");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}: expected what current Grafana writes"
    );

    // Variables: the data source, and the proxies to show.
    let vars = dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    let ds = var("datasource");
    assert_eq!(str_field(ds, "type", "$datasource"), "datasource");
    assert_eq!(str_field(ds, "query", "$datasource"), "prometheus");
    let instance = var("instance");
    assert_eq!(str_field(instance, "type", "$instance"), "query");
    assert_eq!(datasource_uid(instance, "$instance"), DATASOURCE_UID);
    let query = match instance.get("query") {
        Some(Value::String(q)) => q.as_str(),
        Some(q) => str_field(q, "query", "$instance query"),
        None => panic!("$instance has no query"),
    };
    for q in [query, str_field(instance, "definition", "$instance")] {
        let code = promql_code(q).unwrap_or_else(|e| panic!("$instance query {q:?}: {e}"));
        assert!(!cinnabar_metrics(&code).is_empty(), "$instance query {q:?}");
        uses.add(&code, "dashboard variable $instance");
    }

    let panels = dashboard
        .get("panels")
        .and_then(Value::as_array)
        .expect("panels must be an array");
    assert!(!panels.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    let mut queries = 0;
    for panel in all_panels(panels) {
        let id = uint_field(panel, "id", "panel");
        let kind = str_field(panel, "type", &format!("panel {id}"));
        let title = str_field(panel, "title", &format!("panel {id}"));
        let place = format!("panel {id} {title:?}");
        assert!(ids.insert(id), "{place}: id {id} is used twice");
        assert!(titles.insert(title), "{place}: two panels have this title");
        assert!(
            [
                "row",
                "timeseries",
                "stat",
                "gauge",
                "bargauge",
                "table",
                "heatmap"
            ]
            .contains(&kind),
            "{place}: unexpected panel type {kind}"
        );
        let grid = panel
            .get("gridPos")
            .unwrap_or_else(|| panic!("{place}: no gridPos"));
        let (h, w) = (uint_field(grid, "h", &place), uint_field(grid, "w", &place));
        let (x, y) = (uint_field(grid, "x", &place), uint_field(grid, "y", &place));
        assert!(h >= 1 && w >= 1 && x + w <= 24, "{place}: gridPos {grid}");
        for (bx, by, bw, bh, other) in &boxes {
            let overlap = x < bx + bw && *bx < x + w && y < by + bh && *by < y + h;
            assert!(!overlap, "{place} overlaps {other}");
        }
        boxes.push((x, y, w, h, place.clone()));
        if kind == "row" {
            assert!(
                panel.get("targets").is_none(),
                "{place}: a row has no queries"
            );
            continue;
        }
        assert_eq!(datasource_uid(panel, &place), DATASOURCE_UID, "{place}");
        let targets = panel
            .get("targets")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{place}: targets must be an array"));
        assert!(!targets.is_empty(), "{place}: no queries");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let ref_id = str_field(target, "refId", &place);
            assert!(ref_ids.insert(ref_id), "{place}: refId {ref_id} twice");
            let at = format!("{place} query {ref_id}");
            if target.get("datasource").is_some() {
                assert_eq!(datasource_uid(target, &at), DATASOURCE_UID, "{at}");
            }
            let expr = str_field(target, "expr", &at);
            let code = promql_code(expr).unwrap_or_else(|e| panic!("{at}: {e}: {expr}"));
            let metrics = cinnabar_metrics(&code);
            assert!(!metrics.is_empty(), "{at} names no cinnabar metric: {expr}");
            // Every selector is filtered by the instance variable, or the picker would lie.
            assert_eq!(
                expr.matches(INSTANCE_FILTER).count(),
                metrics.len(),
                "{at}: every metric selector needs {{{INSTANCE_FILTER}}}: {expr}"
            );
            uses.add(&code, &format!("dashboard {at}"));
            queries += 1;
        }
    }
    eprintln!(
        "dashboard {title:?}: {} panels, {queries} queries",
        ids.len()
    );
    uses
}

// ---------------------------------------------------------------------------------------------
// The alert rules: what Prometheus reads, and nothing else.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    /// Evaluation interval of the group (Prometheus' global one when absent).
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_duration: String,
    labels: AlertLabels,
    annotations: Annotations,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertLabels {
    severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    /// Clients are failing now.
    Critical,
    /// Degraded, or about to fail.
    Warning,
    /// Worth knowing, no action needed.
    Info,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Annotations {
    summary: String,
    description: String,
    #[serde(default)]
    runbook_url: Option<String>,
}

/// A Prometheus duration (`90s`, `1h30m`, `500ms`) in milliseconds: units from largest to
/// smallest, each at most once.
fn duration_ms(text: &str) -> Result<u64, String> {
    // (unit, milliseconds, rank): ranks give the order units must come in; `ms` is tried
    // before `m`.
    const UNITS: [(&str, u64, u8); 7] = [
        ("y", 365 * 86_400_000, 0),
        ("w", 7 * 86_400_000, 1),
        ("d", 86_400_000, 2),
        ("h", 3_600_000, 3),
        ("ms", 1, 6),
        ("m", 60_000, 4),
        ("s", 1_000, 5),
    ];
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut rest = text;
    let mut total = 0u64;
    let mut last_rank = None;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("{text:?}: expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|e| format!("{text:?}: {e}"))?;
        rest = &rest[digits..];
        let (unit, ms, rank) = UNITS
            .iter()
            .find(|(u, _, _)| rest.starts_with(u))
            .ok_or_else(|| format!("{text:?}: expected a unit (y w d h m s ms)"))?;
        if last_rank.is_some_and(|last| *rank <= last) {
            return Err(format!("{text:?}: units out of order"));
        }
        last_rank = Some(*rank);
        rest = &rest[unit.len()..];
        total += number * ms;
    }
    Ok(total)
}

#[test]
fn durations_parse_like_prometheus() {
    assert_eq!(duration_ms("5m"), Ok(300_000));
    assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
    assert_eq!(duration_ms("1m500ms"), Ok(60_500));
    for bad in ["", "5", "m", "5 m", "30s1m", "1m1m", "5min", "-1m"] {
        assert!(duration_ms(bad).is_err(), "{bad:?} should not parse");
    }
}

/// `$labels.X` names in an annotation template, after checking its `{{ }}` balance.
fn template_labels(text: &str, place: &str) -> Vec<String> {
    assert_eq!(
        text.matches("{{").count(),
        text.matches("}}").count(),
        "{place}: unbalanced {{{{ }}}} in {text:?}"
    );
    text.split("$labels.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn parse_rules(text: &str) -> Result<RuleFile, serde_saphyr::Error> {
    serde_saphyr::from_str(text)
}

#[test]
fn the_rule_parser_is_strict() {
    let good = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        \
                for: 1m\n        labels: {severity: critical}\n        annotations: {summary: s, description: d}\n";
    assert!(parse_rules(good).is_ok());
    for (from, to) in [
        ("severity: critical", "severty: critical"),
        ("severity: critical", "severity: urgent"),
        ("for: 1m", "fro: 1m"),
        ("summary: s, ", ""),
        ("name: g", "name: g\n    limit: 1"),
        ("name: g", "name: g\n    name: h"),
    ] {
        let bad = good.replacen(from, to, 1);
        assert!(parse_rules(&bad).is_err(), "accepted: {bad}");
    }
}

/// Checks the rule file; returns the metrics its expressions use.
fn check_alerts(file: &RuleFile) -> Uses {
    let mut uses = Uses::default();
    assert!(!file.groups.is_empty(), "no rule groups");
    let mut groups = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    let mut severities = BTreeMap::new();
    for group in &file.groups {
        assert!(!group.name.trim().is_empty(), "a group without a name");
        assert!(groups.insert(&group.name), "group {} twice", group.name);
        if let Some(interval) = &group.interval {
            let ms = duration_ms(interval).unwrap_or_else(|e| panic!("group {}: {e}", group.name));
            assert!(ms > 0, "group {}: zero interval", group.name);
        }
        assert!(!group.rules.is_empty(), "group {} has no rules", group.name);
        for rule in &group.rules {
            let name = &rule.alert;
            assert!(
                name.starts_with("Cinnabar") && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "alert {name:?}: names are CinnabarCamelCase"
            );
            assert!(alerts.insert(name.as_str()), "alert {name} twice");
            let ms = duration_ms(&rule.for_duration).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                ms > 0,
                "{name}: `for` must wait a little, or one bad scrape pages"
            );
            let code = promql_code(&rule.expr).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !code.contains('$'),
                "{name}: a Grafana variable in a rule: {}",
                rule.expr
            );
            uses.add(&code, &format!("alert {name}"));
            let a = &rule.annotations;
            assert!(!a.summary.trim().is_empty(), "{name}: empty summary");
            assert!(
                a.description.trim().len() > a.summary.trim().len(),
                "{name}: the description should explain more than the summary"
            );
            if let Some(url) = &a.runbook_url {
                assert!(url.starts_with("https://"), "{name}: runbook_url {url:?}");
            }
            for text in [&a.summary, &a.description] {
                for label in template_labels(text, name) {
                    assert!(
                        ALERT_LABELS.contains(&label.as_str()),
                        "{name}: annotation uses $labels.{label}, which the alert does not keep"
                    );
                }
            }
            *severities.entry(rule.labels.severity).or_insert(0) += 1;
        }
    }
    for required in REQUIRED_ALERTS {
        assert!(alerts.contains(required), "alert {required} is missing");
    }
    assert!(
        severities.contains_key(&Severity::Critical),
        "no critical alert: nothing would page"
    );
    eprintln!(
        "alerts: {} rules in {} groups, by severity {severities:?}",
        alerts.len(),
        groups.len()
    );
    uses
}

// ---------------------------------------------------------------------------------------------
// Together.

#[test]
fn dashboard_and_alerts_are_well_formed_and_use_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let rules = parse_rules(ALERTS).unwrap_or_else(|e| panic!("alert rules: {e}"));
    let mut uses = check_dashboard(&dashboard);
    for (name, places) in check_alerts(&rules).0 {
        uses.0.entry(name).or_default().extend(places);
    }

    let families = exported_families();
    let mut unknown = Vec::new();
    for (name, places) in &uses.0 {
        if !is_exported(name, &families) && !PENDING.contains(&name.as_str()) {
            unknown.push(format!("{name}, used by:"));
            for place in places {
                unknown.push(format!("    {place}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the proxy does not export (a typo, or add them to PENDING if announced):\n{}\n\
         exported: {:?}",
        unknown.join("\n"),
        families.keys().collect::<Vec<_>>()
    );
    for name in PENDING {
        assert!(
            !is_exported(name, &families),
            "{name} is exported now: remove it from PENDING"
        );
        assert!(
            uses.0.contains_key(*name),
            "{name} is in PENDING but nothing uses it: remove it from PENDING"
        );
        eprintln!(
            "pending (announced, not yet exported): {name}, used by {:?}",
            uses.0[*name]
        );
    }
    // Not a failure (a new metric may land before its panel), but worth seeing.
    let unused: Vec<_> = families
        .keys()
        .filter(|family| !uses.0.keys().any(|used| used.starts_with(family.as_str())))
        .collect();
    if !unused.is_empty() {
        eprintln!("exported but used by neither file: {unused:?}");
    }
}
