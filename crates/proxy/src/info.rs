//! The proxy's `INFO`: the sections of Redis 7.0, in Redis's order, each filled from what the
//! proxy knows itself (server, clients, stats, replication, CPU, latency, commands) or merged
//! from every master's own `INFO` (the backend version, memory, persistence, keyspace).
//!
//! Client libraries and tools read `INFO` at connect (`redis_version`, `arch_bits`,
//! `cluster_enabled`, `role`) and poll it (`blocked_clients`), so every field Redis 7.0 puts in
//! `server`, `clients` and `replication` is here, with values that describe the endpoint the
//! client talks to: a standalone-looking master. Pure functions into a buffer; never on the
//! keyed hot path (INFO is an administration command).

use std::fmt::Write as _;
use std::net::SocketAddr;

use cinnabar_resp::encode;

/// The version reported when no backend has told its own yet.
pub(crate) const FALLBACK_REDIS_VERSION: &str = "7.0.0";

/// `INFO` sections, as bits of a mask, in the order Redis 7.0 writes them.
const SERVER: u16 = 1;
const CLIENTS: u16 = 1 << 1;
const MEMORY: u16 = 1 << 2;
const PERSISTENCE: u16 = 1 << 3;
const STATS: u16 = 1 << 4;
const REPLICATION: u16 = 1 << 5;
const CPU: u16 = 1 << 6;
const MODULES: u16 = 1 << 7;
const COMMANDSTATS: u16 = 1 << 8;
const ERRORSTATS: u16 = 1 << 9;
const LATENCYSTATS: u16 = 1 << 10;
const CLUSTER: u16 = 1 << 11;
const KEYSPACE: u16 = 1 << 12;
/// What `INFO` and `INFO default` show: all but the per-command sections, as in Redis.
const DEFAULT: u16 = SERVER
    | CLIENTS
    | MEMORY
    | PERSISTENCE
    | STATS
    | REPLICATION
    | CPU
    | MODULES
    | ERRORSTATS
    | CLUSTER
    | KEYSPACE;
/// `INFO all` and `INFO everything` (the proxy has no module sections to add).
const ALL: u16 = DEFAULT | COMMANDSTATS | LATENCYSTATS;

/// What the proxy asks every master for, to merge into its own reply.
pub(crate) const BACKEND_REQUEST: [&[u8]; 5] =
    [b"INFO", b"server", b"memory", b"persistence", b"keyspace"];

/// The sections `INFO` asked for: none named means the default set; names are
/// case-insensitive, may repeat and come in any order (the reply keeps Redis's order); unknown
/// names select nothing, so `INFO nosuch` is an empty string, as in Redis.
pub(crate) fn sections<'a>(names: impl Iterator<Item = &'a [u8]>) -> u16 {
    let mut mask = 0;
    let mut named = false;
    for name in names {
        named = true;
        let lower = name.to_ascii_lowercase();
        mask |= match lower.as_slice() {
            b"server" => SERVER,
            b"clients" => CLIENTS,
            b"memory" => MEMORY,
            b"persistence" => PERSISTENCE,
            b"stats" => STATS,
            b"replication" => REPLICATION,
            b"cpu" => CPU,
            b"modules" => MODULES,
            b"commandstats" => COMMANDSTATS,
            b"errorstats" => ERRORSTATS,
            b"latencystats" => LATENCYSTATS,
            b"cluster" => CLUSTER,
            b"keyspace" => KEYSPACE,
            b"default" => DEFAULT,
            b"all" | b"everything" => ALL,
            _ => 0,
        };
    }
    if named { mask } else { DEFAULT }
}

/// What the proxy itself knows for `INFO`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProxyFacts<'a> {
    pub(crate) announce: SocketAddr,
    pub(crate) masters: usize,
    pub(crate) totals: crate::stats::Totals,
    /// `(name, calls, usec, failed)` per command called, for commandstats.
    pub(crate) commands: &'a [(&'static str, u64, u64, u64)],
    pub(crate) max_clients: usize,
    pub(crate) workers: usize,
    pub(crate) config_file: Option<&'a std::path::Path>,
}

/// One master's `INFO` reply, split into sections of `(field, value)` lines.
#[derive(Debug, Default)]
pub(crate) struct BackendInfo {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl BackendInfo {
    /// Parses the text of an `INFO` reply (a bulk or RESP3 verbatim string's payload).
    pub(crate) fn parse(text: &[u8]) -> Self {
        let text = String::from_utf8_lossy(text);
        let text = text.strip_prefix("txt:").unwrap_or(&text);
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("# ") {
                sections.push((name.trim().to_ascii_lowercase(), Vec::new()));
            } else if let (Some((field, value)), Some((_, fields))) =
                (line.split_once(':'), sections.last_mut())
            {
                fields.push((field.to_owned(), value.trim_end().to_owned()));
            }
        }
        Self { sections }
    }

    fn section(&self, name: &str) -> &[(String, String)] {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, fields)| fields.as_slice())
    }

    fn field(&self, section: &str, field: &str) -> Option<&str> {
        self.section(section)
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_str())
    }
}

/// The lowest `redis_version` among the masters' replies (compared numerically, part by
/// part), or `None` when none said.
pub(crate) fn lowest_version(backends: &[BackendInfo]) -> Option<String> {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    backends
        .iter()
        .filter_map(|b| b.field("server", "redis_version"))
        .min_by_key(|v| parse(v))
        .map(str::to_owned)
}

/// Writes the proxy's `INFO` reply (a bulk string) for the sections in `mask`.
pub(crate) fn write(
    out: &mut Vec<u8>,
    facts: &ProxyFacts<'_>,
    backends: &[BackendInfo],
    mask: u16,
) {
    let mut text = String::with_capacity(4096);
    let t = &facts.totals;
    let version = lowest_version(backends);
    let version = version.as_deref().unwrap_or(FALLBACK_REDIS_VERSION);
    let mut section = |bit: u16, title: &str, body: &dyn Fn(&mut String)| {
        if mask & bit != 0 {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = write!(text, "# {title}\r\n");
            body(&mut text);
        }
    };
    section(SERVER, "Server", &|s| server(s, facts, version));
    section(CLIENTS, "Clients", &|s| {
        let _ = write!(
            s,
            "connected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\n\
             client_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\n\
             blocked_clients:{}\r\ntracking_clients:0\r\nclients_in_timeout_table:0\r\n",
            t.open, facts.max_clients, t.blocked
        );
    });
    section(MEMORY, "Memory", &|s| {
        merged(s, backends, "memory", Rule::Sum)
    });
    section(PERSISTENCE, "Persistence", &|s| {
        merged(s, backends, "persistence", Rule::Max);
    });
    section(STATS, "Stats", &|s| {
        let _ = write!(
            s,
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\ntotal_error_replies:{}\r\ncinnabar_redirects_moved:{}\r\n\
             cinnabar_redirects_ask:{}\r\ncinnabar_retries:{}\r\ncinnabar_topology_refreshes:{}\r\n\
             cinnabar_direct_replies:{}\r\n",
            t.connections,
            t.commands,
            t.rejected,
            t.errors,
            t.moved,
            t.ask,
            t.retries,
            t.refreshes,
            t.direct_replies
        );
    });
    section(REPLICATION, "Replication", &|s| {
        // The endpoint is where clients write: a master with no replicas of its own.
        let _ = write!(
            s,
            "role:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n\
             master_replid:{}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n\
             master_repl_offset:0\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\n\
             repl_backlog_size:0\r\nrepl_backlog_first_byte_offset:0\r\nrepl_backlog_histlen:0\r\n",
            crate::local::node_id(facts.announce)
        );
    });
    section(CPU, "CPU", &|s| {
        let (user, system) = own_cpu_seconds();
        let _ = write!(
            s,
            "used_cpu_sys:{system:.6}\r\nused_cpu_user:{user:.6}\r\n\
             used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n"
        );
    });
    section(MODULES, "Modules", &|_| {});
    section(COMMANDSTATS, "Commandstats", &|s| {
        for (name, calls, usec, failed) in facts.commands {
            let per_call = *usec as f64 / (*calls).max(1) as f64;
            let _ = write!(
                s,
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls=0,failed_calls={failed}\r\n"
            );
        }
    });
    section(ERRORSTATS, "Errorstats", &|_| {});
    section(LATENCYSTATS, "Latencystats", &|s| {
        if let Some([p50, p99, p999]) = t.latency_us {
            let _ = write!(
                s,
                "latency_percentiles_usec_all:p50={p50:.3},p99={p99:.3},p99.9={p999:.3}\r\n"
            );
        }
    });
    // Standalone, like `redis_mode`: cluster-mode clients still get the proxy's own
    // `CLUSTER SLOTS/SHARDS/NODES`, where it owns every slot.
    section(CLUSTER, "Cluster", &|s| s.push_str("cluster_enabled:0\r\n"));
    section(KEYSPACE, "Keyspace", &|s| {
        let (keys, expires) = sum_keyspace(backends);
        if keys > 0 {
            let _ = write!(s, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
    });
    encode::bulk(out, text.as_bytes());
}

/// The `server` section: every field Redis 7.0 has, describing the proxy process, with the
/// lowest backend version (a client must not assume features some node lacks).
fn server(s: &mut String, facts: &ProxyFacts<'_>, version: &str) {
    let uptime = facts.totals.uptime.as_secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let executable = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let config_file = facts
        .config_file
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let _ = write!(
        s,
        "redis_version:{version}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\n\
         redis_build_id:0\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\n\
         monotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:epoll\r\n\
         atomicvar_api:c11-builtin\r\ngcc_version:0.0.0\r\nprocess_id:{}\r\n\
         process_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\n\
         uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\n\
         lru_clock:{}\r\nexecutable:{executable}\r\nconfig_file:{config_file}\r\n\
         io_threads_active:0\r\ncinnabar_version:{}\r\ncinnabar_workers:{}\r\n\
         backend_masters:{}\r\n",
        os_line(),
        usize::BITS,
        std::process::id(),
        run_id(),
        facts.announce.port(),
        now.as_micros(),
        uptime / 86_400,
        now.as_secs() & ((1 << 24) - 1),
        env!("CARGO_PKG_VERSION"),
        facts.workers,
        facts.masters,
    );
}

/// `Linux 6.1.0 x86_64`, as Redis prints `uname` (kernel name, release, machine).
fn os_line() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let name = read("/proc/sys/kernel/ostype");
    let name = if name.is_empty() {
        std::env::consts::OS.to_owned()
    } else {
        name
    };
    format!(
        "{name} {} {}",
        read("/proc/sys/kernel/osrelease"),
        std::env::consts::ARCH
    )
}

/// A 40-hex-digit id for this process's run, fixed for its lifetime (Redis makes a random one
/// at start; the pid and start time make ours unique enough across restarts).
fn run_id() -> &'static str {
    static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_ID.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let seed = format!("{}:{started}", std::process::id());
        let mut id = String::with_capacity(40);
        for round in 0u64..3 {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for byte in seed.bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            let _ = write!(id, "{hash:016x}");
        }
        id.truncate(40);
        id
    })
}

/// This process's user and system CPU time in seconds (Linux `/proc/self/stat`; zero
/// elsewhere).
fn own_cpu_seconds() -> (f64, f64) {
    // Clock ticks per second: 100 on every Linux architecture Redis supports.
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its `)`).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name and state.
    (ticks(11) / TICKS, ticks(12) / TICKS)
}

/// How a numeric field of a backend section becomes the proxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Added up (memory: the cluster's total).
    Sum,
    /// The largest (persistence: a flag such as `loading` or `rdb_bgsave_in_progress` is set
    /// when any master's is).
    Max,
}

/// A backend section merged over every master: integer fields by `rule` (`rdb_last_save_time`
/// always the oldest, since that is when everything was last saved), `*_human` sizes written
/// again from the merged byte count, and any other field the first master's value unless a
/// master reports something other than `ok` there (a failed save anywhere shows).
fn merged(s: &mut String, backends: &[BackendInfo], name: &str, rule: Rule) {
    let Some(first) = backends.first() else {
        return;
    };
    let mut merged: Vec<(String, String)> = Vec::new();
    for (field, value) in first.section(name) {
        let values = backends.iter().filter_map(|b| b.field(name, field));
        let integers: Option<Vec<i64>> = values.clone().map(|v| v.parse().ok()).collect();
        let value = match integers {
            Some(n) if field == "rdb_last_save_time" => {
                n.iter().min().copied().unwrap_or(0).to_string()
            }
            Some(n) if rule == Rule::Sum => n.iter().sum::<i64>().to_string(),
            Some(n) => n.iter().max().copied().unwrap_or(0).to_string(),
            None => values
                .clone()
                .find(|v| *v != "ok" && value == "ok")
                .unwrap_or(value)
                .to_owned(),
        };
        merged.push((field.clone(), value));
    }
    for (field, value) in &merged {
        let human = field
            .strip_suffix("_human")
            .and_then(|base| merged.iter().find(|(f, _)| f == base))
            .and_then(|(_, bytes)| bytes.parse::<u64>().ok());
        let value = human.map_or_else(|| value.clone(), bytes_to_human);
        let _ = write!(s, "{field}:{value}\r\n");
    }
}

/// A byte count as Redis writes it in `*_human` fields (`1023B`, `1.50K`, `2.00M` …).
fn bytes_to_human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// Sums `db0:keys=…,expires=…` over the masters' keyspace sections.
fn sum_keyspace(backends: &[BackendInfo]) -> (u64, u64) {
    let (mut keys, mut expires) = (0, 0);
    for db0 in backends.iter().filter_map(|b| b.field("keyspace", "db0")) {
        for pair in db0.split(',') {
            match pair.split_once('=') {
                Some(("keys", n)) => keys += n.parse::<u64>().unwrap_or(0),
                Some(("expires", n)) => expires += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (keys, expires)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(text: &str) -> BackendInfo {
        BackendInfo::parse(text.replace('\n', "\r\n").as_bytes())
    }

    #[test]
    fn sections_follow_redis_rules() {
        let mask = |names: &[&str]| sections(names.iter().map(|n| n.as_bytes()));
        assert_eq!(mask(&[]), DEFAULT);
        assert_eq!(mask(&["default"]), DEFAULT);
        assert_eq!(mask(&["all"]), ALL);
        assert_eq!(mask(&["EVERYTHING"]), ALL);
        assert_eq!(mask(&["nosuch"]), 0);
        assert_eq!(mask(&["keyspace", "Server", "nosuch"]), KEYSPACE | SERVER);
        assert_eq!(DEFAULT & (COMMANDSTATS | LATENCYSTATS), 0);
    }

    #[test]
    fn the_lowest_backend_version_wins_numerically() {
        let a = backend("# Server\nredis_version:7.2.4\n");
        let b = backend("# Server\nredis_version:7.0.15\n");
        let c = backend("# Server\nredis_version:7.0.9\n");
        assert_eq!(lowest_version(&[a, b, c]).as_deref(), Some("7.0.9"));
        assert_eq!(lowest_version(&[]), None);
    }

    #[test]
    fn memory_is_summed_and_human_sizes_follow() {
        let a = backend(
            "# Memory\nused_memory:1048576\nused_memory_human:1.00M\nmem_allocator:jemalloc-5.3.0\n",
        );
        let b = backend(
            "# Memory\nused_memory:1048576\nused_memory_human:1.00M\nmem_allocator:jemalloc-5.3.0\n",
        );
        let mut s = String::new();
        merged(&mut s, &[a, b], "memory", Rule::Sum);
        assert_eq!(
            s,
            "used_memory:2097152\r\nused_memory_human:2.00M\r\nmem_allocator:jemalloc-5.3.0\r\n"
        );
    }

    #[test]
    fn persistence_shows_any_master_loading_or_failing() {
        let a = backend(
            "# Persistence\nloading:0\nrdb_last_save_time:200\nrdb_last_bgsave_status:ok\n",
        );
        let b = backend(
            "# Persistence\nloading:1\nrdb_last_save_time:100\nrdb_last_bgsave_status:err\n",
        );
        let mut s = String::new();
        merged(&mut s, &[a, b], "persistence", Rule::Max);
        assert_eq!(
            s,
            "loading:1\r\nrdb_last_save_time:100\r\nrdb_last_bgsave_status:err\r\n"
        );
    }

    #[test]
    fn keyspace_sums_every_master() {
        let a = backend("# Keyspace\ndb0:keys=3,expires=1,avg_ttl=0\n");
        let b = backend("# Keyspace\ndb0:keys=4,expires=0,avg_ttl=0\n");
        assert_eq!(sum_keyspace(&[a, b]), (7, 1));
    }

    #[test]
    fn human_sizes_match_redis() {
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(1536), "1.50K");
        assert_eq!(bytes_to_human(3 * 1024 * 1024 * 1024), "3.00G");
    }
}
