//! The proxy's counters, and their Prometheus text rendering.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer; the admin listener reads every
//! worker's counters at scrape time and adds them up. A single-writer counter needs no atomic
//! read-modify-write: `add` is a relaxed load and a relaxed store (plain moves on x86 and ARM),
//! so the hot path never takes a lock, never contends on a cache line with another worker, and
//! never pays for a `lock`-prefixed instruction. Readers may see a value a few increments old,
//! which is what a scrape means anyway.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cinnabar_commands::{AclCategories, Command};

/// A counter with one writer (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this.
    pub(crate) fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed);
        self.0.store(value.wrapping_add(n), Ordering::Relaxed);
    }

    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What kind of work a command is, for request and error counts: the first of the command's ACL
/// categories in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Admin,
    Pubsub,
    Scripting,
    Transaction,
    Connection,
    Write,
    Read,
    Other,
}

impl Category {
    const ALL: [Self; 8] = [
        Self::Admin,
        Self::Pubsub,
        Self::Scripting,
        Self::Transaction,
        Self::Connection,
        Self::Write,
        Self::Read,
        Self::Other,
    ];

    pub(crate) fn of(command: &Command) -> Self {
        let categories = command.acl_categories();
        let has = |c: AclCategories| categories.intersects(c);
        if has(AclCategories::of(&[
            AclCategories::ADMIN,
            AclCategories::DANGEROUS,
        ])) {
            Self::Admin
        } else if has(AclCategories::PUBSUB) {
            Self::Pubsub
        } else if has(AclCategories::SCRIPTING) {
            Self::Scripting
        } else if has(AclCategories::TRANSACTION) {
            Self::Transaction
        } else if has(AclCategories::CONNECTION) {
            Self::Connection
        } else if has(AclCategories::WRITE) {
            Self::Write
        } else if has(AclCategories::READ) {
            Self::Read
        } else {
            Self::Other
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Pubsub => "pubsub",
            Self::Scripting => "scripting",
            Self::Transaction => "transaction",
            Self::Connection => "connection",
            Self::Write => "write",
            Self::Read => "read",
            Self::Other => "other",
        }
    }
}

/// Upper bounds of the latency histogram, in microseconds (Prometheus `le`), roughly ×2 apart
/// from 50 µs to 10 s: fine where a healthy proxy lives, coarse where only outages go.
const LATENCY_BOUNDS_US: [u64; 18] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600,
    819_200, 1_638_400, 5_000_000, 10_000_000,
];

const LAST_BOUND_US: u64 = LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1];

/// Request latency (first byte parsed → reply queued for the client).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Per bucket (not cumulative; made cumulative when rendered), plus one for +Inf.
    buckets: [Counter; LATENCY_BOUNDS_US.len() + 1],
    sum_us: Counter,
}

impl Histogram {
    /// Counts one request that took `us` microseconds.
    pub(crate) fn observe_us(&self, us: u64) {
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket].inc();
        self.sum_us.add(us);
    }
}

/// One worker's counters (its only writer is that worker).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub(crate) requests: [Counter; Category::ALL.len()],
    pub(crate) errors: [Counter; Category::ALL.len()],
    pub(crate) latency: Histogram,
    pub(crate) clients_accepted: Counter,
    pub(crate) clients_closed: Counter,
    /// Clients that started, and stopped, waiting in a blocking command or WAIT: the
    /// difference is `blocked_clients` (two monotonic counters keep the single-writer rule).
    pub(crate) blocked_started: Counter,
    pub(crate) blocked_ended: Counter,
    pub(crate) clients_rejected: Counter,
    /// EXECs of relaxed transactions over several slots (not atomic across them).
    pub(crate) relaxed_transactions: Counter,
    pub(crate) protocol_errors: Counter,
    pub(crate) moved: Counter,
    pub(crate) ask: Counter,
    pub(crate) tryagain: Counter,
    pub(crate) clusterdown: Counter,
    pub(crate) retries: Counter,
    /// Replies a backend connection wrote straight to an unpipelined client (see
    /// `Ticket::direct`), in all or in part.
    pub(crate) direct_replies: Counter,
    pub(crate) backend_connects: Counter,
    pub(crate) backend_connect_failures: Counter,
    pub(crate) backend_disconnects: Counter,
    pub(crate) login_failures: Counter,
    pub(crate) denied: Counter,
    pub(crate) tls_failures: Counter,
    /// Calls, microseconds and error replies per command (`INFO commandstats`).
    pub(crate) commands: CommandStats,
    /// Requests and error replies per user. Sessions count locally and add their counts here
    /// about once a second (and when they end), so the lock is taken rarely and never
    /// contended on the hot path.
    pub(crate) users: std::sync::Mutex<std::collections::HashMap<String, [u64; 2]>>,
}

/// Per-command counters, indexed like the command table's top-level entries (a subcommand
/// counts for its container, as `cmdstat_client` in Redis counts every CLIENT subcommand).
#[derive(Debug)]
pub(crate) struct CommandStats(Box<[[Counter; 3]]>);

impl Default for CommandStats {
    fn default() -> Self {
        Self(
            (0..cinnabar_commands::commands().len())
                .map(|_| Default::default())
                .collect(),
        )
    }
}

impl CommandStats {
    /// The table index counts are kept under for `command` (`u16::MAX`: none).
    pub(crate) fn index_of(command: &cinnabar_commands::Command) -> u16 {
        cinnabar_commands::top_level_index(command)
            .or_else(|| {
                cinnabar_commands::lookup(command.command_name().as_bytes())
                    .and_then(cinnabar_commands::top_level_index)
            })
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(u16::MAX)
    }

    /// Counts one call of command `index` that took `us` microseconds.
    pub(crate) fn call(&self, index: u16, us: u64, failed: bool) {
        if let Some([calls, usec, failures]) = self.0.get(usize::from(index)) {
            calls.inc();
            usec.add(us);
            if failed {
                failures.inc();
            }
        }
    }
}

impl WorkerStats {
    /// Adds a session's counts for `user` (requests, errors).
    pub(crate) fn add_user(&self, user: &str, requests: u64, errors: u64) {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(counts) = users.get_mut(user) {
            counts[0] += requests;
            counts[1] += errors;
        } else {
            users.insert(user.to_owned(), [requests, errors]);
        }
    }
}

impl WorkerStats {
    /// Counts one request of `category`, and its error when the reply is one.
    pub(crate) fn request(&self, category: Category, error: bool) {
        let i = category as usize;
        self.requests[i].inc();
        if error {
            self.errors[i].inc();
        }
    }
}

/// Counters of the control thread (its only writer).
#[derive(Debug, Default)]
pub struct ControlStats {
    pub(crate) refreshes: Counter,
    pub(crate) refresh_failures: Counter,
    pub(crate) topology_changes: Counter,
}

/// Every counter of one proxy: what `/metrics` renders.
#[derive(Debug)]
pub struct Stats {
    pub(crate) workers: Vec<Arc<WorkerStats>>,
    pub(crate) control: Arc<ControlStats>,
    /// When the proxy started (`uptime_in_seconds`).
    pub(crate) started: std::time::Instant,
    /// The audit trail, whose own counters are reported too.
    pub(crate) audit: Option<cinnabar_audit::Auditor>,
    /// Requests slower than `slowlog_slower_than`, for `SLOWLOG`.
    pub(crate) slowlog: crate::slowlog::SlowLog,
    /// Logged-in connections per user, for `max_connections_per_user` (changed only at login
    /// and close).
    pub(crate) user_connections: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The lowest `redis_version` among the masters, as the last `INFO` learned it (what
    /// `HELLO` reports; `None` until an `INFO` ran).
    pub(crate) backend_version: std::sync::Mutex<Option<String>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            workers: Vec::new(),
            control: Arc::default(),
            started: std::time::Instant::now(),
            audit: None,
            slowlog: crate::slowlog::SlowLog::default(),
            user_connections: std::sync::Mutex::default(),
            backend_version: std::sync::Mutex::default(),
        }
    }
}

/// Totals over all workers, for `INFO`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub(crate) commands: u64,
    pub(crate) errors: u64,
    pub(crate) connections: u64,
    pub(crate) rejected: u64,
    pub(crate) open: u64,
    /// Clients waiting in a blocking command or WAIT now.
    pub(crate) blocked: u64,
    pub(crate) moved: u64,
    pub(crate) ask: u64,
    pub(crate) retries: u64,
    pub(crate) direct_replies: u64,
    pub(crate) refreshes: u64,
    pub(crate) uptime: Duration,
    /// Request latency percentiles (p50, p99, p99.9) in µs: the upper bound of the histogram
    /// bucket holding each, so "at most" (the largest bound, 10 s, meaning "10 s or more").
    pub(crate) latency_us: Option<[u64; 3]>,
}

/// Facts that are read, not counted, at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Masters in the routing table.
    pub masters: usize,
    /// Slots with an owner (16384 when the cluster is fully covered).
    pub slots_covered: usize,
    /// The routing table's version.
    pub topology_version: u64,
    /// Per cluster behind the endpoint (one, `default`, unless `[[clusters]]`).
    pub clusters: Vec<ClusterGauges>,
}

/// What the routing table says about one cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterGauges {
    /// Its name.
    pub name: String,
    /// Its masters.
    pub masters: usize,
    /// Its hash slots with a master.
    pub slots_covered: usize,
    /// Online switches of this cluster so far.
    pub switches: u64,
}

impl Stats {
    /// Totals over all workers (what `INFO` reports).
    pub(crate) fn totals(&self) -> Totals {
        let sum = |f: &dyn Fn(&WorkerStats) -> u64| self.workers.iter().map(|w| f(w)).sum::<u64>();
        let mut buckets = [0u64; LATENCY_BOUNDS_US.len() + 1];
        for w in &self.workers {
            for (total, counter) in buckets.iter_mut().zip(&w.latency.buckets) {
                *total += counter.get();
            }
        }
        let count: u64 = buckets.iter().sum();
        let quantile = |q: f64| {
            let rank = (q * count as f64).ceil() as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank.max(1) {
                    return LATENCY_BOUNDS_US.get(i).copied().unwrap_or(LAST_BOUND_US);
                }
            }
            LAST_BOUND_US
        };
        let accepted = sum(&|w| w.clients_accepted.get());
        Totals {
            commands: sum(&|w| w.requests.iter().map(Counter::get).sum()),
            errors: sum(&|w| w.errors.iter().map(Counter::get).sum()),
            connections: accepted,
            rejected: sum(&|w| w.clients_rejected.get()),
            open: accepted.saturating_sub(sum(&|w| w.clients_closed.get())),
            blocked: sum(&|w| w.blocked_started.get())
                .saturating_sub(sum(&|w| w.blocked_ended.get())),
            moved: sum(&|w| w.moved.get()),
            ask: sum(&|w| w.ask.get()),
            retries: sum(&|w| w.retries.get()),
            direct_replies: sum(&|w| w.direct_replies.get()),
            refreshes: self.control.refreshes.get(),
            uptime: self.started.elapsed(),
            latency_us: (count > 0).then(|| [quantile(0.5), quantile(0.99), quantile(0.999)]),
        }
    }

    /// `(name, calls, usec, failed)` for every command called at least once, over all workers.
    pub(crate) fn command_totals(&self) -> Vec<(&'static str, u64, u64, u64)> {
        cinnabar_commands::commands()
            .iter()
            .enumerate()
            .filter_map(|(i, command)| {
                let mut totals = [0u64; 3];
                for worker in &self.workers {
                    if let Some(counters) = worker.commands.0.get(i) {
                        for (total, counter) in totals.iter_mut().zip(counters) {
                            *total += counter.get();
                        }
                    }
                }
                (totals[0] > 0).then_some((command.name(), totals[0], totals[1], totals[2]))
            })
            .collect()
    }

    /// Takes one of `user`'s `limit` connection places for a connection that holds `held`
    /// (given back when it is another user's). False, changing nothing, when none is free.
    pub(crate) fn take_user_place(&self, user: &str, limit: usize, held: Option<&str>) -> bool {
        if held == Some(user) {
            return true;
        }
        let mut places = self
            .user_connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = places.get(user).copied().unwrap_or(0);
        if taken >= limit {
            return false;
        }
        places.insert(user.to_owned(), taken + 1);
        if let Some(held) = held {
            Self::give_back(&mut places, held);
        }
        true
    }

    /// Gives back the place `user` held.
    pub(crate) fn give_user_place(&self, user: &str) {
        let mut places = self
            .user_connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::give_back(&mut places, user);
    }

    fn give_back(places: &mut std::collections::HashMap<String, usize>, user: &str) {
        if let Some(taken) = places.get_mut(user) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                places.remove(user);
            }
        }
    }

    /// Client connections open now, across all workers.
    pub fn open_clients(&self) -> usize {
        let accepted: u64 = self.workers.iter().map(|w| w.clients_accepted.get()).sum();
        let closed: u64 = self.workers.iter().map(|w| w.clients_closed.get()).sum();
        usize::try_from(accepted.saturating_sub(closed)).unwrap_or(usize::MAX)
    }

    /// Renders every counter in the Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let sum = |f: &dyn Fn(&WorkerStats) -> u64| self.workers.iter().map(|w| f(w)).sum::<u64>();

        metric(
            &mut out,
            "cinnabar_requests_total",
            "counter",
            "Requests answered, by command category.",
        );
        for c in Category::ALL {
            let v = sum(&|w| w.requests[c as usize].get());
            let _ = writeln!(
                out,
                "cinnabar_requests_total{{category=\"{}\"}} {v}",
                c.label()
            );
        }
        metric(
            &mut out,
            "cinnabar_request_errors_total",
            "counter",
            "Requests answered with an error reply, by command category.",
        );
        for c in Category::ALL {
            let v = sum(&|w| w.errors[c as usize].get());
            let _ = writeln!(
                out,
                "cinnabar_request_errors_total{{category=\"{}\"}} {v}",
                c.label()
            );
        }

        metric(
            &mut out,
            "cinnabar_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its reply being queued for the client.",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += sum(&|w| w.latency.buckets[i].get());
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "cinnabar_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += sum(&|w| w.latency.buckets[LATENCY_BOUNDS_US.len()].get());
        let _ = writeln!(
            out,
            "cinnabar_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let seconds = sum(&|w| w.latency.sum_us.get()) as f64 / 1e6;
        let _ = writeln!(out, "cinnabar_request_duration_seconds_sum {seconds}");
        let _ = writeln!(out, "cinnabar_request_duration_seconds_count {cumulative}");

        let accepted = sum(&|w| w.clients_accepted.get());
        let closed = sum(&|w| w.clients_closed.get());
        metric(
            &mut out,
            "cinnabar_client_connections",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(
            out,
            "cinnabar_client_connections {}",
            accepted.saturating_sub(closed)
        );
        for (name, help, value) in [
            (
                "cinnabar_client_connections_total",
                "Client connections accepted.",
                accepted,
            ),
            (
                "cinnabar_client_connections_rejected_total",
                "Client connections refused (limits, draining).",
                sum(&|w| w.clients_rejected.get()),
            ),
            (
                "cinnabar_relaxed_transactions_total",
                "EXECs of relaxed transactions spanning several slots (not atomic across them).",
                sum(&|w| w.relaxed_transactions.get()),
            ),
            (
                "cinnabar_client_protocol_errors_total",
                "Client connections closed for malformed protocol.",
                sum(&|w| w.protocol_errors.get()),
            ),
            (
                "cinnabar_backend_connects_total",
                "Backend connections established.",
                sum(&|w| w.backend_connects.get()),
            ),
            (
                "cinnabar_backend_connect_failures_total",
                "Backend connection attempts that failed.",
                sum(&|w| w.backend_connect_failures.get()),
            ),
            (
                "cinnabar_backend_disconnects_total",
                "Backend connections lost after being established.",
                sum(&|w| w.backend_disconnects.get()),
            ),
            (
                "cinnabar_retries_total",
                "Requests re-sent after a transient cluster error or a lost backend.",
                sum(&|w| w.retries.get()),
            ),
            (
                "cinnabar_topology_refreshes_total",
                "Topology refreshes attempted.",
                self.control.refreshes.get(),
            ),
            (
                "cinnabar_topology_refresh_failures_total",
                "Topology refreshes that reached no node.",
                self.control.refresh_failures.get(),
            ),
            (
                "cinnabar_topology_changes_total",
                "Refreshes that changed the routing table.",
                self.control.topology_changes.get(),
            ),
        ] {
            metric(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let audit = self
            .audit
            .as_ref()
            .map(cinnabar_audit::Auditor::stats)
            .unwrap_or_default();
        for (name, help, value) in [
            (
                "cinnabar_login_failures_total",
                "AUTH and HELLO AUTH attempts refused.",
                sum(&|w| w.login_failures.get()),
            ),
            (
                "cinnabar_tls_handshake_failures_total",
                "Client TLS handshakes that failed or timed out.",
                sum(&|w| w.tls_failures.get()),
            ),
            (
                "cinnabar_denied_total",
                "Commands refused by a role's permissions or the guards.",
                sum(&|w| w.denied.get()),
            ),
            (
                "cinnabar_audit_records_total",
                "Audit records written.",
                audit.written,
            ),
            (
                "cinnabar_audit_dropped_total",
                "Audit records dropped because the queue was full.",
                audit.dropped,
            ),
            (
                "cinnabar_audit_write_errors_total",
                "Audit records lost to write errors.",
                audit.write_errors,
            ),
        ] {
            metric(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        let mut users: std::collections::BTreeMap<String, [u64; 2]> =
            std::collections::BTreeMap::new();
        for worker in &self.workers {
            let counts = worker
                .users
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (user, [requests, errors]) in counts.iter() {
                let total = users.entry(user.clone()).or_default();
                total[0] += requests;
                total[1] += errors;
            }
        }
        metric(
            &mut out,
            "cinnabar_user_requests_total",
            "counter",
            "Requests answered, by user (updated about once a second per connection).",
        );
        for (user, [requests, _]) in &users {
            let _ = writeln!(
                out,
                "cinnabar_user_requests_total{{user=\"{}\"}} {requests}",
                label(user)
            );
        }
        metric(
            &mut out,
            "cinnabar_user_request_errors_total",
            "counter",
            "Requests answered with an error reply, by user.",
        );
        for (user, [_, errors]) in &users {
            let _ = writeln!(
                out,
                "cinnabar_user_request_errors_total{{user=\"{}\"}} {errors}",
                label(user)
            );
        }
        metric(
            &mut out,
            "cinnabar_backend_connections",
            "gauge",
            "Backend connections open now.",
        );
        let connects = sum(&|w| w.backend_connects.get());
        let lost = sum(&|w| w.backend_disconnects.get());
        let _ = writeln!(
            out,
            "cinnabar_backend_connections {}",
            connects.saturating_sub(lost)
        );
        metric(
            &mut out,
            "cinnabar_redirects_total",
            "counter",
            "Cluster redirects and transient errors followed inside the proxy, by kind.",
        );
        for (kind, value) in [
            ("moved", sum(&|w| w.moved.get())),
            ("ask", sum(&|w| w.ask.get())),
            ("tryagain", sum(&|w| w.tryagain.get())),
            ("clusterdown", sum(&|w| w.clusterdown.get())),
        ] {
            let _ = writeln!(out, "cinnabar_redirects_total{{kind=\"{kind}\"}} {value}");
        }
        for (name, help, value) in [
            (
                "cinnabar_backend_masters",
                "Masters in the routing table.",
                gauges.masters as u64,
            ),
            (
                "cinnabar_slots_covered",
                "Hash slots with a master (16384 when the cluster is fully served).",
                gauges.slots_covered as u64,
            ),
            (
                "cinnabar_topology_version",
                "Version of the routing table in use.",
                gauges.topology_version,
            ),
            (
                "cinnabar_workers",
                "Worker threads.",
                self.workers.len() as u64,
            ),
        ] {
            metric(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        for (name, help, value) in [
            (
                "cinnabar_cluster_masters",
                "Masters of each cluster behind the endpoint.",
                (|c: &ClusterGauges| c.masters as u64) as fn(&ClusterGauges) -> u64,
            ),
            (
                "cinnabar_cluster_slots_covered",
                "Hash slots with a master, per cluster behind the endpoint.",
                |c: &ClusterGauges| c.slots_covered as u64,
            ),
            (
                "cinnabar_cluster_switches",
                "Online backend switches of each cluster behind the endpoint.",
                |c: &ClusterGauges| c.switches,
            ),
        ] {
            metric(&mut out, name, "gauge", help);
            for cluster in &gauges.clusters {
                let _ = writeln!(
                    out,
                    "{name}{{cluster=\"{}\"}} {}",
                    label(&cluster.name),
                    value(cluster)
                );
            }
        }
        out
    }
}

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_across_workers_and_render_as_prometheus_text() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.request(Category::Read, false);
        a.request(Category::Read, true);
        b.request(Category::Write, false);
        a.latency.observe_us(30);
        b.latency.observe_us(150);
        b.latency.observe_us(60_000_000);
        a.moved.inc();
        let stats = Stats {
            workers: vec![a, b],
            ..Stats::default()
        };
        let text = stats.render(Gauges {
            masters: 3,
            slots_covered: 16384,
            topology_version: 7,
            clusters: vec![ClusterGauges {
                name: "orders".into(),
                masters: 3,
                slots_covered: 16384,
                switches: 1,
            }],
        });
        for line in [
            "cinnabar_requests_total{category=\"read\"} 2",
            "cinnabar_requests_total{category=\"write\"} 1",
            "cinnabar_request_errors_total{category=\"read\"} 1",
            "cinnabar_request_duration_seconds_bucket{le=\"0.00005\"} 1",
            "cinnabar_request_duration_seconds_bucket{le=\"0.0002\"} 2",
            "cinnabar_request_duration_seconds_bucket{le=\"10\"} 2",
            "cinnabar_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "cinnabar_request_duration_seconds_count 3",
            "cinnabar_redirects_total{kind=\"moved\"} 1",
            "cinnabar_slots_covered 16384",
            "cinnabar_cluster_masters{cluster=\"orders\"} 3",
            "cinnabar_cluster_switches{cluster=\"orders\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        let totals = stats.totals();
        assert_eq!((totals.commands, totals.errors, totals.moved), (3, 1, 1));
        assert_eq!(totals.latency_us, Some([200, 10_000_000, 10_000_000]));
        // Every sample line names a metric announced by HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{line}"
            );
        }
    }

    #[test]
    fn categories_follow_the_command_table() {
        let category = |name: &str| {
            let args: Vec<&[u8]> = name.split(' ').map(str::as_bytes).collect();
            Category::of(cinnabar_commands::resolve(&args).unwrap())
        };
        assert_eq!(category("get k"), Category::Read);
        assert_eq!(category("set k v"), Category::Write);
        assert_eq!(category("flushall"), Category::Admin);
        assert_eq!(category("publish c m"), Category::Pubsub);
        assert_eq!(category("eval s 0"), Category::Scripting);
        assert_eq!(category("multi"), Category::Transaction);
        assert_eq!(category("ping"), Category::Connection);
    }
}
