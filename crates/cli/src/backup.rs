//! `cinnabar backup` and `cinnabar restore`: wires `cinnabar-backup` to flags, output and exit
//! codes. A local cluster is named by its directory (`--dir`), anything else by `HOST:PORT`;
//! the store by URL (`s3://bucket/prefix`, `file:///path`), its credentials from the
//! environment (never flags, so they stay out of shell history and `ps`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cinnabar_backup::archive::ArchiveRequest;
use cinnabar_backup::catalog::{self, Retention};
use cinnabar_backup::manifest::{Manifest, parse_time, rfc3339};
use cinnabar_backup::restore::{RestoreRequest, restore};
use cinnabar_backup::snapshot::{BackupRequest, backup};
use cinnabar_backup::{Store, StoreOptions};
use cinnabar_replication::verify::Endpoint;
use clap::{Args, Subcommand};

use crate::drill::parse_duration;
use crate::sync::{read_password, stop_on_signal};

/// Flags of `cinnabar backup`: a subcommand, or a backup to take.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    action: Option<BackupAction>,
    #[command(flatten)]
    take: TakeArgs,
}

/// Where a backup reads from.
#[derive(Debug, Args)]
struct SourceArgs {
    /// The local cluster in this directory (`cinnabar up --dir`)
    #[arg(long, value_name = "DIR", conflicts_with = "from")]
    dir: Option<PathBuf>,
    /// Any node of a Redis Cluster, or a standalone server, HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    from: Option<String>,
    /// ACL user on the source
    #[arg(long, value_name = "USER")]
    from_user: Option<String>,
    /// File holding the source's password (its first line)
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<PathBuf>,
}

/// Flags of a backup.
#[derive(Debug, Args)]
struct TakeArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The store: s3://BUCKET/PREFIX or file:///PATH
    #[arg(long, value_name = "URL", required = true)]
    to: Option<String>,
    /// The backup's name (default CLUSTER-<UTC time>)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["every", "continuous"])]
    name: Option<String>,
    /// The cluster's name in the store (default: the directory's name, or the source address)
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Take a backup this often until Ctrl-C (`1h`, `30m`)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    every: Option<Duration>,
    /// After each backup, delete all but the newest N backups of the cluster (and the archive
    /// segments only they needed)
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
    /// After each backup, delete backups older than D days (the newest is always kept)
    #[arg(long, value_name = "D")]
    keep_days: Option<u64>,
    /// Also write a one-line JSON summary (name, cluster, time, keys, bytes) here; on
    /// Kubernetes, /dev/termination-log, where the operator reads it
    #[arg(long, value_name = "FILE")]
    report_file: Option<PathBuf>,
    /// Archive every shard's command stream continuously (for `restore --at`) until Ctrl-C
    #[arg(long, conflicts_with = "every")]
    continuous: bool,
    /// With --continuous: a segment at least this often (default 1s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "continuous")]
    segment_every: Option<Duration>,
    /// With --continuous: a new base backup this often (default 24h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "continuous")]
    base_every: Option<Duration>,
    /// Print the manifest as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BackupAction {
    /// List the complete backups in a store, oldest first: name, cluster, time, shards, keys,
    /// size. A backup that failed or is still being taken has no manifest and is not listed.
    ///
    /// Examples:
    ///   cinnabar backup list --from s3://backups/redis
    ///   cinnabar backup list --from file:///var/backups/redis --json
    #[command(verbatim_doc_comment)]
    List {
        /// The store: s3://BUCKET/PREFIX or file:///PATH
        #[arg(long, value_name = "URL")]
        from: String,
        /// JSON: the manifests
        #[arg(long)]
        json: bool,
    },
    /// Delete old backups (per cluster; the newest is always kept) and the archive segments
    /// only they needed.
    ///
    /// Examples:
    ///   cinnabar backup prune --from s3://backups/redis --keep 7
    ///   cinnabar backup prune --from s3://backups/redis --keep-days 30 --dry-run
    #[command(verbatim_doc_comment)]
    Prune {
        /// The store: s3://BUCKET/PREFIX or file:///PATH
        #[arg(long, value_name = "URL")]
        from: String,
        /// Keep the newest N backups of each cluster
        #[arg(long, value_name = "N", required_unless_present = "keep_days")]
        keep: Option<usize>,
        /// Keep backups taken within the last D days
        #[arg(long, value_name = "D")]
        keep_days: Option<u64>,
        /// Show what would be deleted
        #[arg(long)]
        dry_run: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `cinnabar restore`.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The store: s3://BUCKET/PREFIX or file:///PATH
    #[arg(long, value_name = "URL")]
    from: String,
    /// This backup (default: the newest)
    #[arg(long, value_name = "NAME")]
    backup: Option<String>,
    /// The state at this time (RFC 3339, e.g. 2026-12-05T17:04:05Z): a base backup plus its
    /// continuous archive up to then
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Only backups of this cluster
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Restore into the local cluster in this directory; created (`cinnabar up --detach`) with
    /// --masters, --replicas and --port when it does not exist
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "to",
        conflicts_with = "to"
    )]
    dir: Option<PathBuf>,
    /// Restore into the Redis Cluster this node belongs to, HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    to: Option<String>,
    /// File holding the target's password (its first line)
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Masters of a cluster created for --dir (any number: keys are routed by slot)
    #[arg(long, value_name = "N", default_value_t = 3)]
    masters: usize,
    /// Replicas per master of a cluster created for --dir
    #[arg(long, value_name = "R", default_value_t = 1)]
    replicas: usize,
    /// Endpoint port of a cluster created for --dir
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Maxmemory per node of a cluster created for --dir (e.g. 1gb)
    #[arg(long, value_name = "BYTES")]
    maxmemory: Option<String>,
    /// Write into a target that already holds keys
    #[arg(long)]
    force: bool,
    /// Also write the JSON report here (on Kubernetes, /dev/termination-log)
    #[arg(long, value_name = "FILE")]
    report_file: Option<PathBuf>,
    /// JSON report
    #[arg(long)]
    json: bool,
}

/// `cinnabar backup …`.
pub(crate) fn run(args: &BackupArgs) -> Result<ExitCode> {
    match &args.action {
        Some(BackupAction::List { from, json }) => list(from, *json),
        Some(BackupAction::Prune {
            from,
            keep,
            keep_days,
            dry_run,
            json,
        }) => {
            let store = open(from)?;
            let retention = Retention {
                keep: *keep,
                keep_days: *keep_days,
            };
            let pruned = catalog::prune(&store, retention, *dry_run)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&pruned)?);
            } else {
                let verb = if *dry_run { "would delete" } else { "deleted" };
                println!(
                    "{verb} {} backup(s) {:?} and {} archive segment(s); kept {}",
                    pruned.deleted.len(),
                    pruned.deleted,
                    pruned.segments_deleted,
                    pruned.kept.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => take(&args.take),
    }
}

fn open(url: &str) -> Result<Store> {
    Ok(Store::open(url, StoreOptions::default())?)
}

fn list(url: &str, json: bool) -> Result<ExitCode> {
    let store = open(url)?;
    let backups = catalog::list(&store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&backups)?);
        return Ok(ExitCode::SUCCESS);
    }
    if backups.is_empty() {
        println!("no backups in {url}");
    }
    for manifest in &backups {
        println!("{}", summary(manifest));
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(manifest: &Manifest) -> String {
    format!(
        "{}  cluster {}  taken {}  {} shard(s)  {} keys  {}  (redis {})",
        manifest.name,
        manifest.cluster,
        rfc3339(manifest.taken_ms()),
        manifest.shards.len(),
        manifest.keys(),
        human_bytes(manifest.bytes()),
        manifest.redis_version
    )
}

fn human_bytes(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The source endpoint and a default cluster name.
fn source(args: &SourceArgs) -> Result<(Endpoint, String)> {
    let password = read_password(&args.from_password_file)?;
    let (addr, name) = match (&args.dir, &args.from) {
        (Some(dir), _) => (crate::migrate::first_node(dir)?, dir_name(dir)),
        (None, Some(from)) => (from.clone(), from.replace([':', '[', ']'], "-")),
        (None, None) => anyhow::bail!("name the source with --dir DIR or --from HOST:PORT"),
    };
    Ok((
        Endpoint {
            addr,
            user: args.from_user.clone(),
            password,
        },
        name,
    ))
}

fn dir_name(dir: &Path) -> String {
    let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .file_name()
        .map(|n| {
            n.to_string_lossy().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "-",
            )
        })
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .unwrap_or_else(|| "cinnabar".to_owned())
}

fn take(args: &TakeArgs) -> Result<ExitCode> {
    let Some(url) = &args.to else {
        anyhow::bail!("name the store with --to URL");
    };
    let (endpoint, default_cluster) = source(&args.source)?;
    let cluster = args.cluster.clone().unwrap_or(default_cluster);
    let store = open(url)?;
    if args.continuous {
        return continuous(&store, endpoint, cluster, args);
    }
    let stop = Arc::new(AtomicBool::new(false));
    if args.every.is_some() {
        stop_on_signal(Arc::clone(&stop))?;
    }
    loop {
        let started = Instant::now();
        let taken = backup(
            &store,
            &BackupRequest {
                source: endpoint.clone(),
                cluster: cluster.clone(),
                name: args.name.clone(),
            },
        )
        .with_context(|| format!("backup of {} to {url}", endpoint.addr));
        let manifest = match (taken, args.every) {
            (Ok(manifest), _) => manifest,
            (Err(error), None) => return Err(error),
            // On a schedule, one failed backup (a node restarting, the store down for a
            // while) must not end the schedule: say so and try at the next tick.
            (Err(error), Some(every)) => {
                eprintln!("error: {error:#}; next attempt in {every:?}");
                if wait_or_stop(&stop, every) {
                    return Ok(ExitCode::SUCCESS);
                }
                continue;
            }
        };
        if args.json {
            println!("{}", serde_json::to_string(&manifest)?);
        } else {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "backup {} complete in {seconds:.1}s: {} shard(s), {} keys, {} ({:.1} MB/s), to {url}",
                manifest.name,
                manifest.shards.len(),
                manifest.keys(),
                human_bytes(manifest.bytes()),
                manifest.bytes() as f64 / 1e6 / seconds.max(1e-3),
            );
            for shard in &manifest.shards {
                println!(
                    "  {}  slots {:?}  from {} ({})  {} keys  offset {}  sha256 {}",
                    shard.object,
                    shard.slots,
                    shard.read_from,
                    shard.read_role,
                    shard.keys,
                    shard.offset,
                    &shard.sha256[..16]
                );
            }
        }
        if let Some(file) = &args.report_file {
            let summary = serde_json::json!({
                "name": manifest.name,
                "cluster": manifest.cluster,
                "taken_at": rfc3339(manifest.taken_ms()),
                "keys": manifest.keys(),
                "bytes": manifest.bytes(),
                "shards": manifest.shards.len(),
            });
            std::fs::write(file, summary.to_string())
                .with_context(|| format!("writing the report to {}", file.display()))?;
        }
        if args.keep.is_some() || args.keep_days.is_some() {
            let pruned = catalog::prune(
                &store,
                Retention {
                    keep: args.keep,
                    keep_days: args.keep_days,
                },
                false,
            )?;
            if !pruned.deleted.is_empty() && !args.json {
                println!("pruned {:?}", pruned.deleted);
            }
        }
        let Some(every) = args.every else {
            return Ok(ExitCode::SUCCESS);
        };
        if wait_or_stop(&stop, every) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Sleeps `every`; true when `stop` was set meanwhile.
fn wait_or_stop(stop: &AtomicBool, every: Duration) -> bool {
    let next = Instant::now() + every;
    while Instant::now() < next {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.load(Ordering::SeqCst)
}

fn continuous(
    store: &Store,
    source: Endpoint,
    cluster: String,
    args: &TakeArgs,
) -> Result<ExitCode> {
    let mut request = ArchiveRequest::new(source, cluster);
    if let Some(every) = args.segment_every {
        request.segment_every = every;
    }
    if let Some(every) = args.base_every {
        request.base_every = Some(every);
    }
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(Arc::clone(&stop))?;
    let json = args.json;
    cinnabar_backup::archive::run(store, &request, &stop, &mut |manifest| {
        if json {
            println!("{}", serde_json::to_string(manifest).unwrap_or_default());
        } else {
            println!(
                "base {}; archiving every shard's writes to {} (Ctrl-C stops)",
                summary(manifest),
                store.url()
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `cinnabar restore …`.
pub(crate) fn run_restore(args: &RestoreArgs) -> Result<ExitCode> {
    let at_ms = args.at.as_deref().map(parse_time).transpose()?;
    let store = open(&args.from)?;
    let request = RestoreRequest {
        backup: args.backup.clone(),
        at_ms,
        cluster: args.cluster.clone(),
        force: args.force,
    };
    // Choose first, so a bad name or time fails before a cluster is created for it.
    let chosen = cinnabar_backup::restore::choose(&store, &request)?;
    let target_addr = match (&args.to, &args.dir) {
        (Some(to), _) => to.clone(),
        (None, Some(dir)) => local_target(dir, args)?,
        (None, None) => anyhow::bail!("name the target with --dir DIR or --to HOST:PORT"),
    };
    let target = Endpoint {
        addr: target_addr,
        user: None,
        password: read_password(&args.to_password_file)?,
    };
    let report = restore(&store, &target, &request)
        .with_context(|| format!("restore of {} into {}", chosen.name, target.addr))?;
    if let Some(file) = &args.report_file {
        let mut summary = serde_json::to_value(&report)?;
        // The shard list can outgrow a termination message (4 KiB); the totals cannot.
        summary.as_object_mut().map(|o| o.remove("shards"));
        std::fs::write(file, summary.to_string())
            .with_context(|| format!("writing the report to {}", file.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let seconds = report.elapsed_ms as f64 / 1000.0;
        println!(
            "restored {} (cluster {}) into {}: {} keys, {} read, {} archived commands, {seconds:.1}s ({:.0} keys/s); data as of {}",
            report.backup,
            report.cluster,
            target.addr,
            report.keys,
            human_bytes(report.bytes),
            report.commands,
            report.keys as f64 / seconds.max(1e-3),
            report.restored_to,
        );
        for shard in &report.shards {
            println!(
                "  {}: {} keys, {} commands, source offset {}{}",
                shard.object,
                shard.keys,
                shard.commands,
                shard.offset,
                shard
                    .last_command_at
                    .as_ref()
                    .map(|t| format!(", last command received {t}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A node of the local cluster in `dir` that takes writes (a group's master), creating the
/// cluster (through `cinnabar up --detach`, the same path as a person's) when the directory
/// holds none.
fn local_target(dir: &Path, args: &RestoreArgs) -> Result<String> {
    // Fails exactly when `first_node` would (no running cluster here), reading the state once.
    if let Ok(node) = crate::migrate::writable_node(dir) {
        return Ok(node);
    }
    let exe = std::env::current_exe().context("cannot find the cinnabar binary")?;
    let mut up = std::process::Command::new(exe);
    up.arg("up")
        .arg("--detach")
        .arg("--dir")
        .arg(dir)
        .arg("--masters")
        .arg(args.masters.to_string())
        .arg("--replicas")
        .arg(args.replicas.to_string());
    if let Some(port) = args.port {
        up.arg("--port").arg(port.to_string());
    }
    if let Some(maxmemory) = &args.maxmemory {
        up.arg("--maxmemory").arg(maxmemory);
    }
    if !args.json {
        println!(
            "creating a {}x{} cluster in {} for the restore ...",
            args.masters,
            args.replicas,
            dir.display()
        );
    }
    let status = up
        .stdout(if args.json {
            std::process::Stdio::null()
        } else {
            std::process::Stdio::inherit()
        })
        .status()
        .context("cannot run cinnabar up")?;
    anyhow::ensure!(
        status.success(),
        "cinnabar up --dir {} failed",
        dir.display()
    );
    crate::migrate::first_node(dir)
}
