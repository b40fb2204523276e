//! `cinnabar`: Redis Cluster as a Service. This binary only parses flags and wires the crates
//! together; every behaviour lives in a library crate where it can be tested.

// The doc comments of flags are clap's help text, read by people in a terminal: `<dir>` and
// `[[clusters]]` there are not HTML or links.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod autoscale;
mod backup;
mod console;
mod detach;
mod drill;
mod kubernetes;
mod migrate;
mod operations;
mod output;
mod switch;
mod sync;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cinnabar_local::{SpecOverrides, Supervisor, UpOptions};
use clap::{Args, Parser, Subcommand};

/// Redis Cluster as a Service: real Redis Cluster, one endpoint, self-healing.
///
/// Start a local cluster with `cinnabar up`, look at it with `cinnabar status`, stop it with
/// `cinnabar down`. Everything a cluster needs lives in one directory (default `.cinnabar`),
/// so any later `cinnabar` invocation from the same place finds it.
#[derive(Debug, Parser)]
#[command(
    name = "cinnabar",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local Redis Cluster (3 masters, 3 replicas by default) and print its endpoint.
    ///
    /// The endpoint is a proxy on 127.0.0.1:--port that any plain Redis client can use: it routes
    /// each command to the node owning its key. Nodes are real redis-server (or valkey-server)
    /// processes on the consecutive loopback ports after it (--port+1 ...); each cluster bus port
    /// is its client port + 10000. With --no-proxy there is no proxy: the first node listens on
    /// --port and clients must speak cluster mode (redis-cli -c). Data (AOF, everysec) lives in
    /// --dir, so `cinnabar up` on a stopped directory resumes the same cluster with its data (and
    /// its proxy choice). In the foreground it supervises until Ctrl-C, restarting any node that
    /// dies; with --detach it returns once the proxy answers and a background supervisor keeps
    /// watch.
    ///
    /// Examples:
    ///   cinnabar up                         # proxy on 127.0.0.1:6380, 3 masters + 3 replicas on 6381-6386
    ///   cinnabar up --detach --masters 6    # 6 shards, in the background
    ///   redis-cli -p 6380 set foo bar       # use it: any key, a plain client
    ///   cinnabar up --no-proxy              # nodes on 6380-6385; use redis-cli -c -p 6380
    ///   cinnabar up --hosts 3               # nodes on simulated hosts h0-h2, shards spread
    #[command(verbatim_doc_comment)]
    Up(UpArgs),
    /// Show the endpoint, the proxy, every node (role, slots, health, pid, memory) and a verdict.
    ///
    /// Exits 0 when healthy (every node ok, all slots covered, the proxy answering PING), 1
    /// otherwise. `--json` prints a stable document for scripts: top-level "endpoint", "proxy"
    /// ("address", "pid" (the supervisor's), "workers", "up", "error"; null with --no-proxy) and
    /// "nodes" (each with "address", "role", "master", "slots", "pid", "health", "host" (the
    /// simulated host with `up --hosts`, else null)); fields are added over time, never renamed.
    Status(StatusArgs),
    /// Stop every process started from a directory (data is kept unless --purge).
    Down(DownArgs),
    /// Run the proxy: one standalone-looking Redis endpoint in front of a Redis Cluster.
    ///
    /// Plain Redis clients connect to --listen; the proxy routes each command by hash slot,
    /// follows MOVED/ASK, retries TRYAGAIN/CLUSTERDOWN within --retry-window-ms (so failovers
    /// stay invisible), and splits MGET/MSET/DEL/EXISTS/UNLINK/TOUCH across slots. Runs until
    /// Ctrl-C. Settings come from the defaults, then --config FILE (TOML; every key is shown in
    /// examples/cinnabar.toml), then the flags.
    ///
    /// Examples:
    ///   cinnabar up --no-proxy              # a cluster with its first node on 6380
    ///   cinnabar proxy --listen 127.0.0.1:7000 --seed 127.0.0.1:6380
    ///   redis-cli -p 7000 set foo bar
    ///   cinnabar proxy --config cinnabar.toml --workers 2
    #[command(verbatim_doc_comment)]
    Proxy(ProxyArgs),
    #[command(flatten)]
    Operation(operations::OperationCommand),
    /// Grow (or shrink) a local cluster's shards by themselves, on memory and load.
    ///
    /// Every --interval it reads each master's used_memory against its maxmemory (and, with
    /// --ops-per-shard, its operations per second), and when a master passes --memory-high it
    /// scales out to the number of shards that holds the data below the mark, through the same
    /// planner as `cinnabar scale`, never beyond --max-masters and never within --cooldown of
    /// the last change. Shrinking is off unless --memory-low is given. Decisions go to stdout
    /// and to DIR/autoscale.jsonl with the metric that caused them.
    ///
    /// Examples:
    ///   cinnabar up --detach --masters 3 --maxmemory 256mb
    ///   cinnabar autoscale --max-masters 5                  # watch until Ctrl-C
    ///   cinnabar autoscale --max-masters 5 --once --json    # one look, for cron or a try
    #[command(verbatim_doc_comment)]
    Autoscale(autoscale::AutoscaleArgs),
    /// Operations drills against a running cluster (`drill failover`).
    Drill(drill::DrillArgs),
    /// Move data in: follow a sync's progress, or compare a source with a target.
    Sync(Box<sync::SyncArgs>),
    /// Move a local cluster's service to another local cluster, online: sync, then switch the
    /// endpoint while its clients stay connected.
    ///
    /// Copies --dir's data into --to-dir and follows its writes (`cinnabar sync`), waits until
    /// the copy is within --max-lag-ms, then has --dir's proxy hold new requests, wait until
    /// --to-dir applied every write acknowledged so far, and route to --to-dir from then on
    /// (its endpoint, address and password unchanged). If that takes longer than
    /// --max-pause-ms the switch is abandoned and --dir keeps serving; rerun to try again (the
    /// sync resumes from its checkpoints). Reports the time in each phase, the hold, the
    /// latency clients saw around the switch, and what was copied.
    ///
    /// Examples:
    ///   cinnabar up --detach --dir old                       # clients use 127.0.0.1:6380
    ///   cinnabar up --detach --dir new --port 7380 --masters 5
    ///   cinnabar migrate --dir old --to-dir new --dry-run
    ///   cinnabar migrate --dir old --to-dir new             # 127.0.0.1:6380 now serves new
    #[command(verbatim_doc_comment)]
    Migrate(migrate::MigrateArgs),
    /// Back up a cluster to object storage: one RDB per shard, taken over replication from a
    /// healthy replica (the master does not fork), streamed to the store and checksummed, with
    /// a manifest written last (a failed backup is never listed). `--continuous` also archives
    /// every shard's writes, in segments every second, for `restore --at`.
    ///
    /// The store is s3://BUCKET/PREFIX (AWS or any S3-compatible server: AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or CINNABAR_S3_CREDENTIALS_FILE) or
    /// file:///PATH.
    ///
    /// Examples:
    ///   cinnabar backup --dir .cinnabar --to s3://backups/redis
    ///   cinnabar backup --from 10.0.0.5:6379 --from-password-file pw --to file:///var/backups/redis
    ///   cinnabar backup --dir .cinnabar --to s3://backups/redis --every 1h --keep 24
    ///   cinnabar backup --dir .cinnabar --to s3://backups/redis --continuous
    ///   cinnabar backup list --from s3://backups/redis
    ///   cinnabar backup prune --from s3://backups/redis --keep-days 7
    #[command(verbatim_doc_comment)]
    Backup(Box<backup::BackupArgs>),
    /// Restore a backup into a cluster of any shape (keys routed by slot), optionally to a
    /// point in time (a base backup plus its continuous archive). Checks first that the target
    /// serves every slot, is empty (or --force), and has the memory; reports keys, bytes, time
    /// and the exact point restored to.
    ///
    /// Examples:
    ///   cinnabar restore --from s3://backups/redis --dir restored --port 7380 --masters 5
    ///   cinnabar restore --from s3://backups/redis --backup orders-20261205T170405.123Z --to 10.0.0.9:6379
    ///   cinnabar restore --from s3://backups/redis --at 2026-12-05T17:04:05Z --dir pitr --port 7390
    #[command(verbatim_doc_comment)]
    Restore(Box<backup::RestoreArgs>),
    /// Switch every proxy of an endpoint to another cluster at once, online, on any platform.
    ///
    /// Each proxy (its admin listener, with `admin_token_file` set) holds its clients, drains,
    /// and reports its source offsets; once the running sync (--sync, its --admin-listen) has
    /// applied the highest of them, every proxy flips. If any proxy cannot hold, or the target
    /// is late, every proxy goes on with the source (exit 1). Exit 3 means only some proxies
    /// switched: keep the sync running and switch the others.
    ///
    /// Example:
    ///   cinnabar switch --proxy-admin 10.0.0.5:17000 --proxy-admin 10.0.0.6:17000 \
    ///     --token-file admin-token --to 10.0.1.1:6379 --sync 10.0.0.9:9100
    #[command(verbatim_doc_comment)]
    Switch(switch::SwitchArgs),
    /// Serve the web console and its JSON API over the local clusters under --root.
    ///
    /// Each subdirectory of --root is one cluster (`cinnabar up --dir ROOT/NAME`). The console
    /// lists them (topology, shape, health, memory, ops/s), shows one (nodes, roles, slots,
    /// lag, a live load chart), creates new ones and runs scale, failover, failover drills and
    /// backups, each as the same `cinnabar` subcommand a person would type, in the background
    /// with its progress on the page. Users log in with the proxy's users file format; roles
    /// viewer (read), operator (act) and admin (also delete). Every action is audited. The API
    /// is documented in docs/console.md.
    ///
    /// On the first start without a users file it creates ROOT/console-users.toml with an
    /// `admin` user and prints the password once.
    ///
    /// Examples:
    ///   mkdir -p clusters
    ///   cinnabar console --listen 127.0.0.1:8080 --root clusters   # then open the printed URL
    #[command(verbatim_doc_comment)]
    Console(console::ConsoleArgs),
    /// Print the RedisCluster CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    Crd,
    /// Run the Kubernetes operator (in a pod; see deploy/helm/cinnabar).
    ///
    /// Reconciles every RedisCluster through the same planner as the local commands. Only the
    /// replica holding the `cinnabar-operator` Lease acts; the others wait. Serves /healthz,
    /// /readyz and /metrics on --http-listen.
    Operator(kubernetes::OperatorArgs),
    /// Internal: the background supervisor started by `up --detach`.
    #[command(name = "__supervise", hide = true)]
    Supervise(UpArgs),
}

/// Flags of `cinnabar up`.
#[derive(Debug, Clone, Args)]
struct UpArgs {
    /// What the nodes form: `cluster` (Redis Cluster, slots over shards) or `sentinel` (one
    /// master, its replicas and a Sentinel quorum that fails over; any database, transactions
    /// across any keys). Fixed when created [default: cluster]
    #[arg(long, value_name = "KIND")]
    topology: Option<cinnabar_local::spec::Topology>,
    /// Number of shards, each with one master [default: 3; a Sentinel group has 1]
    #[arg(long, value_name = "N")]
    masters: Option<u16>,
    /// Replicas per master [default: 1; 2 for a Sentinel group]
    #[arg(long, value_name = "N")]
    replicas: Option<u16>,
    /// Sentinels of a Sentinel group (a majority is the quorum); their ports follow the
    /// nodes' [default: 3]
    #[arg(long, value_name = "N")]
    sentinels: Option<u16>,
    /// The endpoint's port: the proxy listens here and the nodes take the following ports (with
    /// --no-proxy the first node listens here) [default: 6380]
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// No proxy: expose the nodes directly (endpoint = first node, cluster-mode clients only).
    /// Fixed when the cluster is created; a resumed `up` keeps the choice
    #[arg(long, conflicts_with = "proxy_workers")]
    no_proxy: bool,
    /// Proxy worker threads; one serves far more than local development needs [default: 1]
    #[arg(long, value_name = "N")]
    proxy_workers: Option<u16>,
    /// Directory holding the cluster's state and data
    #[arg(long, value_name = "DIR", default_value = ".cinnabar")]
    dir: PathBuf,
    /// Return once the cluster is ready and its endpoint answers; a background supervisor keeps
    /// it running
    #[arg(long)]
    detach: bool,
    /// Memory limit per node, so Redis evicts instead of being OOM-killed (0 = none) [default: 256mb]
    #[arg(long, value_name = "SIZE")]
    maxmemory: Option<String>,
    /// What Redis evicts when a node reaches --maxmemory [default: allkeys-lru]
    #[arg(long, value_name = "POLICY")]
    maxmemory_policy: Option<String>,
    /// cluster-node-timeout: how long a node may be unreachable before failover [default: 5000]
    #[arg(long, value_name = "MS")]
    node_timeout_ms: Option<u64>,
    /// Spread the nodes over N simulated hosts h0..h{N-1} (round robin) so shards are placed as
    /// on N machines: a master and its replicas on different hosts, masters spread. Fixed when
    /// the cluster is created [default: 0, no hosts]
    #[arg(long, value_name = "N")]
    hosts: Option<u16>,
    /// redis-server or valkey-server binary to run [default: first found on PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// How long the cluster may take to form before `up` gives up and cleans up
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
}

impl UpArgs {
    /// The same flags as command-line arguments (without `--detach`), for the background
    /// supervisor. Rebuilt from the parsed values, so no user value is ever mistaken for a flag.
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--dir".into(), self.dir.clone().into()];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(name.into());
                args.push(value.into());
            }
        };
        flag("--topology", self.topology.map(|v| v.to_string()));
        flag("--sentinels", self.sentinels.map(|v| v.to_string()));
        flag("--masters", self.masters.map(|v| v.to_string()));
        flag("--replicas", self.replicas.map(|v| v.to_string()));
        flag("--port", self.port.map(|v| v.to_string()));
        flag("--maxmemory", self.maxmemory.clone());
        flag("--maxmemory-policy", self.maxmemory_policy.clone());
        flag(
            "--node-timeout-ms",
            self.node_timeout_ms.map(|v| v.to_string()),
        );
        flag("--timeout", Some(self.timeout.to_string()));
        flag("--proxy-workers", self.proxy_workers.map(|v| v.to_string()));
        flag("--hosts", self.hosts.map(|v| v.to_string()));
        if self.no_proxy {
            args.push("--no-proxy".into());
        }
        if let Some(path) = &self.redis_server {
            args.push("--redis-server".into());
            args.push(path.clone().into());
        }
        args
    }

    fn options(&self) -> UpOptions {
        UpOptions {
            spec: SpecOverrides {
                masters: self.masters,
                replicas: self.replicas,
                port: self.port,
                maxmemory: self.maxmemory.clone(),
                maxmemory_policy: self.maxmemory_policy.clone(),
                node_timeout_ms: self.node_timeout_ms,
                proxy: self.no_proxy.then_some(false),
                proxy_workers: self.proxy_workers,
                hosts: self.hosts,
                topology: self.topology,
                sentinels: self.sentinels,
            },
            dir: self.dir.clone(),
            redis_server: self.redis_server.clone(),
            form_timeout: Duration::from_secs(self.timeout),
        }
    }
}

/// Flags of `cinnabar status`.
#[derive(Debug, Args)]
struct StatusArgs {
    /// Directory the cluster was started from
    #[arg(long, value_name = "DIR", default_value = ".cinnabar")]
    dir: PathBuf,
    /// Print the report as JSON (a stable contract for scripts)
    #[arg(long)]
    json: bool,
}

/// Where `cinnabar proxy` listens when neither a flag nor its file says.
const DEFAULT_PROXY_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

/// Flags of `cinnabar proxy`. Each is optional so a flag not given leaves the file's value.
#[derive(Debug, Args)]
struct ProxyArgs {
    /// Settings file (TOML); flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:7000]
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// A node of the backend cluster (repeat for more; one reachable seed is enough). Required
    /// unless the file has `seeds`; given here, it replaces the file's list
    #[arg(long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<cinnabar_cluster::NodeAddr>,
    /// Front a Sentinel-managed master/replicas group instead of a cluster: a Sentinel of it
    /// (repeat for more; the master most of them name wins); needs --group
    #[arg(long = "sentinel", value_name = "HOST:PORT", requires = "group")]
    sentinels: Vec<cinnabar_cluster::NodeAddr>,
    /// The group's name, as its Sentinels monitor it
    #[arg(long, value_name = "NAME", requires = "sentinels")]
    group: Option<String>,
    /// Worker threads, each with its own listener and backend connections [default: 1]
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// How long transient cluster errors are retried before a client sees them [default: 10000]
    #[arg(long, value_name = "MS")]
    retry_window_ms: Option<u64>,
    /// Where read-only commands go: master, prefer-replica or replica-only [default: master]
    #[arg(long, value_name = "POLICY")]
    read_from: Option<cinnabar_proxy::ReadFrom>,
    /// Admin HTTP listener (/metrics, /healthz, /readyz, /topology, /config); unauthenticated,
    /// so keep it on loopback or a private network [default: none]
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<std::net::SocketAddr>,
    /// On SIGTERM or Ctrl-C, how long clients may take to get their replies before they are
    /// cut off [default: 30000]
    #[arg(long, value_name = "MS")]
    drain_timeout_ms: Option<u64>,
}

impl ProxyArgs {
    /// Defaults, then the file, then the flags.
    fn config(&self) -> Result<cinnabar_proxy::ProxyConfig> {
        let mut config = cinnabar_proxy::ProxyConfig::new(DEFAULT_PROXY_LISTEN, Vec::new());
        if let Some(path) = &self.config {
            cinnabar_proxy::file::ProxyFile::read(path)?.apply_to(&mut config);
            config.config_file = Some(path.clone());
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if !self.seeds.is_empty() {
            config.seeds.clone_from(&self.seeds);
        }
        if let Some(name) = &self.group {
            config.group = Some(cinnabar_proxy::GroupConfig {
                name: name.clone(),
                sentinels: self.sentinels.clone(),
                sentinel_credentials: None,
            });
        }
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        if let Some(ms) = self.retry_window_ms {
            config.retry_window = Duration::from_millis(ms);
        }
        if let Some(policy) = self.read_from {
            config.read_from = policy;
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = Some(admin);
        }
        if let Some(ms) = self.drain_timeout_ms {
            config.drain_timeout = Duration::from_millis(ms);
        }
        if !config.clusters.is_empty() && !self.seeds.is_empty() {
            bail!(
                "--seed names one cluster, but the --config file has [[clusters]]: give each \
                 cluster's seeds there"
            );
        }
        if config.group.is_some() && (!config.seeds.is_empty() || !config.clusters.is_empty()) {
            bail!(
                "a Sentinel group (--group/--sentinel or [group]) replaces seeds and [[clusters]]"
            );
        }
        if config.seeds.is_empty() && config.clusters.is_empty() && config.group.is_none() {
            bail!(
                "no seed: give --seed HOST:PORT (a node of the cluster), or `seeds` (or \
                 [[clusters]]) in a --config file"
            );
        }
        Ok(config)
    }
}

/// Flags of `cinnabar down`.
#[derive(Debug, Args)]
struct DownArgs {
    /// Directory the cluster was started from
    #[arg(long, value_name = "DIR", default_value = ".cinnabar")]
    dir: PathBuf,
    /// Also delete all data (AOF, RDB, node configs) and the directory's state
    #[arg(long)]
    purge: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // rustls refuses to guess when two crypto providers are linked (kube's ring, object_store's
    // aws-lc-rs): without a process default, the first TLS client built with the default
    // provider panics. The proxy names its provider itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = match cli.command {
        Command::Up(args) if args.detach => detach::up_detached(&args).map(|()| ExitCode::SUCCESS),
        Command::Up(args) => supervise(&args, true).map(|()| ExitCode::SUCCESS),
        Command::Supervise(args) => supervise(&args, false).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => status(&args),
        Command::Down(args) => down(&args).map(|()| ExitCode::SUCCESS),
        Command::Proxy(args) => proxy(&args).map(|()| ExitCode::SUCCESS),
        Command::Operation(command) => operations::run(&command),
        Command::Drill(args) => drill::run(&args),
        Command::Sync(args) => sync::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Backup(args) => backup::run(&args),
        Command::Restore(args) => backup::run_restore(&args),
        Command::Switch(args) => switch::run(&args),
        Command::Autoscale(args) => autoscale::run(&args),
        Command::Console(args) => console::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Crd => kubernetes::crd().map(|()| ExitCode::SUCCESS),
        Command::Operator(args) => kubernetes::operator(&args).map(|()| ExitCode::SUCCESS),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Logs go to stderr (a detached supervisor's stderr is its log file); `RUST_LOG` overrides.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Brings the cluster up and supervises it until Ctrl-C / SIGTERM. `print_endpoint` puts the
/// endpoint alone on stdout (the foreground contract); the detached supervisor only logs it.
fn supervise(args: &UpArgs, print_endpoint: bool) -> Result<()> {
    runtime()?.block_on(async {
        let supervisor = Supervisor::up(&args.options(), &mut |event| output::progress(&event))
            .await
            .with_context(|| format!("starting the cluster in {}", args.dir.display()))?;
        if print_endpoint {
            println!("{}", supervisor.endpoint());
            eprintln!(
                "supervising; press Ctrl-C to stop (data stays in {})",
                args.dir.display()
            );
        }
        supervisor
            .run_until(shutdown_signal())
            .await
            .context("supervising the cluster")?;
        eprintln!("stopped; data kept in {}", args.dir.display());
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM; SIGHUP is ignored so a closed terminal does not stop a
/// detached supervisor.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with `cinnabar down`");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = int.recv() => return,
            _ = term.recv() => return,
            _ = hup.recv() => tracing::info!("ignoring SIGHUP"),
        }
    }
}

fn status(args: &StatusArgs) -> Result<ExitCode> {
    let report = runtime()?.block_on(cinnabar_local::status(&args.dir))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", output::status_table(&report));
    }
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn proxy(args: &ProxyArgs) -> Result<()> {
    let config = args.config()?;
    let handle = cinnabar_proxy::start(config).context("starting the proxy")?;
    println!("{}", handle.local_addr());
    eprintln!(
        "proxy serving on {}; press Ctrl-C to stop",
        handle.local_addr()
    );
    runtime()?.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut interrupt), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return shutdown_signal().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = interrupt.recv() => return,
                // SIGHUP: users, roles and audit settings from the file again, nobody dropped.
                _ = hangup.recv() => match handle.reload_from_file() {
                    Ok(warnings) => {
                        eprintln!("reloaded users, roles and audit settings");
                        for warning in warnings {
                            eprintln!("warning: {warning}");
                        }
                    }
                    Err(e) => eprintln!("reload refused, the previous settings stay: {e}"),
                },
            }
        }
    });
    eprintln!(
        "draining: no new clients; {} connected client(s) get their replies, then close",
        handle.open_clients()
    );
    let cut_off = handle.drain();
    if cut_off > 0 {
        eprintln!("drain timeout: {cut_off} client(s) were still connected and were closed");
    } else {
        eprintln!("drained; stopped");
    }
    Ok(())
}

fn down(args: &DownArgs) -> Result<()> {
    match cinnabar_local::down(&args.dir, args.purge) {
        Ok(report) => {
            eprintln!("{}", output::down_summary(&report, &args.dir));
            Ok(())
        }
        // Stopping what is not running is not a failure: scripts can call `down` unconditionally.
        Err(cinnabar_local::LocalError::NotRunning { dir }) => {
            eprintln!("nothing to stop: no cluster in {}", dir.display());
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
