//! `cinnabar migrate --dir OLD --to-dir NEW`: moves a local cluster's service to another local
//! cluster while its clients stay connected to OLD's endpoint.
//!
//! Phases: **sync** (the replication engine copies OLD's data into NEW and follows its writes),
//! **in-sync** (waits until every source stream applies within `--max-lag-ms`), **switch**
//! (OLD's supervisor asks its proxy to switch online: hold, drain, catch-up to the source
//! offsets, flip; see `cinnabar_proxy::switch`), **stop** (the sync ends, its checkpoints
//! kept). The report gives the time in each phase, the hold the proxy measured, the latency its
//! clients saw around the switch (from the proxy's own histogram), and the sync's counts.
//!
//! An abandoned switch (NEW could not catch up within `--max-pause-ms`) leaves OLD serving as
//! before, with 0 client errors; rerunning `migrate` resumes the sync from its checkpoints in
//! NEW's directory and tries again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cinnabar_local::StateDir;
use cinnabar_local::control::{self, ControlReply, ControlRequest};
use cinnabar_local::load::LatencyHistogram;
use cinnabar_replication::status::{Phase, SyncStatus};
use cinnabar_replication::sync::{Background, SyncConfig};
use cinnabar_replication::verify::Endpoint;
use clap::Args;
use serde::Serialize;

/// Where the migration's sync keeps its checkpoints, inside NEW's state directory.
const SYNC_STATE: &str = "migration-sync";

/// Flags of `cinnabar migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The cluster whose endpoint clients use now (a `cinnabar up` directory, with a proxy)
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The cluster to move to (a running `cinnabar up` directory; empty, or filled by an
    /// earlier attempt of this migration)
    #[arg(long, value_name = "DIR")]
    to_dir: PathBuf,
    /// The longest clients' requests may be held at the switch; beyond, the switch is
    /// abandoned and OLD keeps serving
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    max_pause_ms: u64,
    /// Switch once every source stream applies within this lag
    #[arg(long, value_name = "MS", default_value_t = 100)]
    max_lag_ms: u64,
    /// Give up if the sync is not within --max-lag-ms after this long
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    sync_timeout: u64,
    /// Say what would be done, and check it can be, without doing it
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// What a migration did.
#[derive(Debug, Serialize)]
struct MigrationReport {
    /// `switched`, `abandoned`, `refused` (the switch), or `planned` (dry run).
    outcome: String,
    reason: Option<String>,
    from_dir: PathBuf,
    to_dir: PathBuf,
    endpoint: String,
    source_masters: Vec<String>,
    target_masters: Vec<String>,
    /// Time in each phase, milliseconds.
    sync_ms: u64,
    switch_ms: u64,
    stop_ms: u64,
    /// The proxy's switch report (hold, drain, catch-up, offsets, connections ended).
    switch: Option<serde_json::Value>,
    /// Latency of the requests the proxy answered from just before to just after the switch
    /// (its histogram's bucket bounds: "at most"), microseconds.
    client_latency_p99_us: Option<u64>,
    client_latency_max_us: Option<u64>,
    client_requests_during_switch: u64,
    /// The sync's counts: keys copied by the full sync, commands (writes) streamed after it.
    keys_copied: u64,
    writes_streamed: u64,
}

/// Runs `cinnabar migrate`.
pub(crate) fn run(args: &MigrateArgs) -> Result<ExitCode> {
    let old = local_cluster(&args.dir)?;
    let new = local_cluster(&args.to_dir)?;
    let admin = old.admin.with_context(|| {
        format!(
            "{} runs without a proxy, so there is no endpoint to switch (migrate moves a proxy's \
             clients)",
            args.dir.display()
        )
    })?;
    if new.is_group {
        bail!(
            "{} is a Sentinel group; migrate moves an endpoint onto a Redis Cluster (a group \
             behind the endpoint can be the source)",
            args.to_dir.display()
        );
    }
    // A group is copied from its master (what the proxy's switch waits on); a cluster from any
    // node (the sync finds the masters).
    let source = match &old.group_master {
        Some(master) => master.clone(),
        None => old
            .serving
            .first()
            .cloned()
            .with_context(|| format!("{} records no node to copy from", args.dir.display()))?,
    };
    if new.nodes.iter().any(|n| old.serving.contains(n)) {
        bail!(
            "{} already serves {}: there is nothing to migrate",
            args.dir.display(),
            args.to_dir.display()
        );
    }
    let target = new
        .nodes
        .first()
        .cloned()
        .with_context(|| format!("{} records no node", args.to_dir.display()))?;
    let state = new.root.join(SYNC_STATE);
    let mut report = MigrationReport {
        outcome: "planned".into(),
        reason: None,
        from_dir: old.root.clone(),
        to_dir: new.root.clone(),
        endpoint: old.endpoint.clone(),
        source_masters: Vec::new(),
        target_masters: Vec::new(),
        sync_ms: 0,
        switch_ms: 0,
        stop_ms: 0,
        switch: None,
        client_latency_p99_us: None,
        client_latency_max_us: None,
        client_requests_during_switch: 0,
        keys_copied: 0,
        writes_streamed: 0,
    };
    if args.dry_run {
        let plan = [
            format!(
                "sync {source} -> {target} (checkpoints in {})",
                state.display()
            ),
            format!(
                "wait until every source stream applies within {} ms",
                args.max_lag_ms
            ),
            format!(
                "switch the endpoint {} to {} (clients held at most {} ms, else abandoned)",
                old.endpoint,
                new.nodes.join(", "),
                args.max_pause_ms
            ),
            "stop the sync".to_owned(),
        ];
        if args.json {
            let mut value = serde_json::to_value(&report)?;
            value["plan"] = serde_json::json!(plan);
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            println!(
                "migrate {} -> {} (dry run):",
                args.dir.display(),
                args.to_dir.display()
            );
            for (i, step) in plan.iter().enumerate() {
                println!("  {}. {step}", i + 1);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Sync.
    let started = Instant::now();
    // Local clusters have no password; only database 0 exists behind a proxy.
    let config = SyncConfig::new(
        Endpoint::new(source.clone()),
        Endpoint::new(target.clone()),
        state.clone(),
    );
    let latest = Arc::new(Mutex::new(SyncStatus::default()));
    let sync = {
        let latest = Arc::clone(&latest);
        Background::start(config, move |status| {
            if let Ok(mut latest) = latest.lock() {
                latest.clone_from(status);
            }
        })
    };
    let finish_sync =
        |sync: Background| -> Result<()> { sync.stop().context("the migration's sync") };
    let served = crate::sync::serve_admin(
        ([127, 0, 0, 1], 0).into(),
        Arc::clone(&latest),
        Arc::clone(sync.live()),
    );
    let offsets_at = match served {
        Ok(at) => at,
        Err(e) => {
            let _ = finish_sync(sync);
            return Err(e);
        }
    };
    let quiet = args.json;
    let deadline = started + Duration::from_secs(args.sync_timeout);
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let mut rates = crate::sync::FullSyncRates::default();
    loop {
        if sync.is_finished() {
            finish_sync(sync)?;
            bail!("the migration's sync ended before it was in sync");
        }
        let status = latest.lock().map(|s| s.clone()).unwrap_or_default();
        let ready = !status.sources.is_empty()
            && status
                .sources
                .iter()
                .all(|s| s.phase == Phase::Streaming && s.lag_ms <= args.max_lag_ms);
        if ready {
            break;
        }
        if Instant::now() >= deadline {
            let _ = finish_sync(sync);
            bail!(
                "the sync was not within {} ms of the source after {} s; nothing was switched \
                 (rerun to resume it)",
                args.max_lag_ms,
                args.sync_timeout
            );
        }
        if !quiet && !status.sources.is_empty() && last_line.elapsed() >= Duration::from_secs(1) {
            eprintln!("sync: {}", crate::sync::status_line(&status, &mut rates));
            last_line = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report.sync_ms = millis(started.elapsed());
    if !quiet {
        eprintln!(
            "in sync after {} ms; switching {} to {}",
            report.sync_ms,
            old.endpoint,
            new.nodes.join(", ")
        );
    }

    // Switch.
    let switching = Instant::now();
    let before = LatencyHistogram::read(admin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    let reply = runtime.block_on(control::send(
        &old.root,
        &ControlRequest::SwitchBackend {
            seeds: new.nodes.clone(),
            dir: Some(new.root.clone()),
            sync: Some(offsets_at.to_string()),
            max_pause_ms: args.max_pause_ms,
        },
    ));
    let after = LatencyHistogram::read(admin);
    report.switch_ms = millis(switching.elapsed());
    if let (Some(before), Some(after)) = (&before, &after) {
        let window = after.minus(before);
        report.client_requests_during_switch = window.count();
        report.client_latency_p99_us = window.quantile(0.99);
        report.client_latency_max_us = window.quantile(1.0);
    }
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => {
            let _ = finish_sync(sync);
            return Err(e).context("asking the supervisor of the old cluster to switch");
        }
    };
    let switch: serde_json::Value = match reply {
        ControlReply::Switch { report } => serde_json::from_str(&report)
            .context("the supervisor's switch report does not parse")?,
        ControlReply::Failed { message, .. } => {
            let _ = finish_sync(sync);
            bail!("the switch was refused: {message}");
        }
        ControlReply::Done { .. } | ControlReply::GroupFailover { .. } => {
            let _ = finish_sync(sync);
            bail!(
                "the supervisor of {} does not know switches (older version?)",
                args.dir.display()
            );
        }
    };
    report.outcome = switch["outcome"].as_str().unwrap_or("unknown").to_owned();
    report.reason = switch["reason"].as_str().map(str::to_owned);
    report.source_masters = strings(&switch["from_masters"]);
    report.target_masters = strings(&switch["to_masters"]);
    report.switch = Some(switch);

    // Stop.
    let stopping = Instant::now();
    let status = latest.lock().map(|s| s.clone()).unwrap_or_default();
    let stopped = finish_sync(sync);
    report.stop_ms = millis(stopping.elapsed());
    report.keys_copied = status.sources.iter().map(|s| s.keys_applied).sum();
    report.writes_streamed = status.sources.iter().map(|s| s.commands_applied).sum();
    if let Err(e) = stopped {
        // After a switch, the sync has nothing left to do: the target had caught up.
        eprintln!("warning: {e:#}");
    }
    print_report(&report, args.json)?;
    Ok(if report.outcome == "switched" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `migrate` needs of one local cluster.
struct LocalCluster {
    root: PathBuf,
    endpoint: String,
    /// The proxy's admin listener, when it has a proxy.
    admin: Option<std::net::SocketAddr>,
    /// Its own nodes, `host:port`.
    nodes: Vec<String>,
    /// What its endpoint serves now: its own nodes, or those of a cluster it was switched to.
    serving: Vec<String>,
    /// A Sentinel group.
    is_group: bool,
    /// A Sentinel group its endpoint still serves: the master the Sentinels name now.
    group_master: Option<String>,
}

/// The node of the local cluster or group in `dir` to write to: a group's master as its
/// Sentinels name it (after a failover the first node may be a replica, which refuses writes),
/// else its first node (any node of a cluster routes by slot).
///
/// # Errors
/// As [`first_node`], and when a group's Sentinels name no confirmed master.
pub(crate) fn writable_node(dir: &Path) -> Result<String> {
    let local = local_cluster(dir)?;
    local
        .group_master
        .or_else(|| local.nodes.first().cloned())
        .with_context(|| format!("{} records no node", dir.display()))
}

/// A node of the running local cluster in `dir`, `host:port` (for reading: the engine finds
/// the others through it).
pub(crate) fn first_node(dir: &Path) -> Result<String> {
    local_cluster(dir)?
        .nodes
        .first()
        .cloned()
        .with_context(|| format!("{} records no node", dir.display()))
}

fn local_cluster(dir: &Path) -> Result<LocalCluster> {
    let state_dir = StateDir::open(dir)
        .with_context(|| format!("{} is not a cinnabar state directory", dir.display()))?;
    let state = state_dir
        .load()
        .with_context(|| format!("reading the state in {}", dir.display()))?
        .with_context(|| {
            format!(
                "{} holds no cluster (run `cinnabar up --dir {0}`)",
                dir.display()
            )
        })?;
    if state.phase != cinnabar_local::Phase::Ready {
        bail!(
            "the cluster in {} is not running (its state says {:?}); start it with `cinnabar up \
             --dir {0}`",
            dir.display(),
            state.phase
        );
    }
    let nodes: Vec<String> = state
        .nodes
        .iter()
        .filter(|n| !n.sentinel)
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let is_group = state.spec.is_sentinel();
    let group_master = if is_group && state.serving.is_none() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        let observed = runtime.block_on(cinnabar_local::group::observe(&state));
        let master = observed.master.with_context(|| {
            format!(
                "the Sentinels of {} name no master that confirms it (see `cinnabar status --dir \
                 {0}`)",
                dir.display()
            )
        })?;
        Some(master.to_string())
    } else {
        None
    };
    let serving = state
        .serving
        .as_ref()
        .map_or_else(|| nodes.clone(), |s| s.seeds.clone());
    Ok(LocalCluster {
        root: state_dir.root().to_path_buf(),
        endpoint: state.endpoint.clone(),
        admin: state
            .spec
            .admin_port()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        nodes,
        serving,
        is_group,
        group_master,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn print_report(report: &MigrationReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let switch = report.switch.as_ref();
    let field = |name: &str| switch.and_then(|s| s[name].as_f64()).unwrap_or(0.0);
    match report.outcome.as_str() {
        "switched" => println!(
            "migrated: {} now serves {} ({})",
            report.endpoint,
            report.to_dir.display(),
            report.target_masters.join(", ")
        ),
        other => println!(
            "not migrated ({other}): {}; {} still serves {}",
            report.reason.as_deref().unwrap_or("no reason given"),
            report.endpoint,
            report.from_dir.display()
        ),
    }
    println!(
        "  phases: sync {} ms, switch {} ms, stop {} ms",
        report.sync_ms, report.switch_ms, report.stop_ms
    );
    println!(
        "  hold: {:.1} ms (drain {:.1} ms, catch-up {:.1} ms)",
        field("hold_ms"),
        field("drain_ms"),
        field("catch_up_ms")
    );
    let us = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("<= {v} us"));
    println!(
        "  clients: {} requests around the switch, p99 {}, max {}",
        report.client_requests_during_switch,
        us(report.client_latency_p99_us),
        us(report.client_latency_max_us)
    );
    if report.outcome == "switched" {
        println!(
            "  data: {} keys copied, {} writes streamed; every write the source acknowledged \
             before the switch was applied to the target (offsets in --json)",
            report.keys_copied, report.writes_streamed
        );
    } else {
        println!(
            "  data: {} keys copied, {} writes streamed so far; the sync's checkpoints are kept \
             for the next attempt",
            report.keys_copied, report.writes_streamed
        );
    }
    if let Some(s) = switch {
        let ended = (
            s["blocked_released"].as_u64().unwrap_or(0),
            s["subscribers_ended"].as_i64().unwrap_or(0),
            s["watches_aborted"].as_i64().unwrap_or(0),
        );
        if ended != (0, 0, 0) {
            println!(
                "  connections: {} blocked commands released (timeout reply), {} subscribers \
                 closed (they resubscribe), {} WATCHes aborted (EXEC returns null)",
                ended.0, ended.1, ended.2
            );
        }
    }
    Ok(())
}
