//! `cinnabar autoscale --dir D --max-masters N …`: the local platform's shard autoscaler. Every
//! `--interval`, it asks each master for `used_memory`, `maxmemory` and
//! `instantaneous_ops_per_sec`, lets the policy (`cinnabar_cluster::autoscale`) decide, and
//! runs any change as an ordinary `cinnabar scale` (same planner, journal and refusals). Each
//! decision to scale, and each change of the reason to stay, is printed (a JSON line with
//! `--json`) and appended to `D/autoscale.jsonl`, with the metric that caused it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cinnabar_cluster::Timeouts;
use cinnabar_cluster::autoscale::{AutoscalePolicy, Decision, ShardLoad, decide};
use cinnabar_local::LocalPlatform;
use clap::Args;

/// The decisions log, inside the cluster's directory.
const LOG: &str = "autoscale.jsonl";

/// Flags of `cinnabar autoscale`.
#[derive(Debug, Args)]
pub(crate) struct AutoscaleArgs {
    /// Directory the cluster was started from
    #[arg(long, value_name = "DIR", default_value = ".cinnabar")]
    dir: PathBuf,
    /// Never more shards than this
    #[arg(long, value_name = "N")]
    max_masters: u16,
    /// Never fewer shards than this
    #[arg(long, value_name = "N", default_value_t = 1)]
    min_masters: u16,
    /// Grow when a master uses this share of its maxmemory, in percent
    #[arg(long, value_name = "PCT", default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    memory_high: u8,
    /// Shrink by one shard when every master uses less than this share (off by default)
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=99))]
    memory_low: Option<u8>,
    /// Grow when the shards serve more than this many operations per second each
    #[arg(long, value_name = "OPS")]
    ops_per_shard: Option<u64>,
    /// No change within this long of the last one
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    cooldown: u64,
    /// Seconds between two looks
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    interval: u64,
    /// Look once, act if needed, and exit (for cron, or to try a policy)
    #[arg(long)]
    once: bool,
    /// Print each decision as a JSON line
    #[arg(long)]
    json: bool,
}

/// Runs the autoscaler until Ctrl-C (or once).
pub(crate) fn run(args: &AutoscaleArgs) -> Result<ExitCode> {
    if args.min_masters > args.max_masters {
        anyhow::bail!(
            "--min-masters {} is above --max-masters {}",
            args.min_masters,
            args.max_masters
        );
    }
    let policy = AutoscalePolicy {
        min_masters: usize::from(args.min_masters),
        max_masters: usize::from(args.max_masters),
        memory_high_percent: args.memory_high,
        memory_low_percent: args.memory_low,
        ops_per_shard: args.ops_per_shard,
        cooldown: Duration::from_secs(args.cooldown),
    };
    if let Some(low) = args.memory_low
        && low >= args.memory_high
    {
        anyhow::bail!(
            "--memory-low {low} must be below --memory-high {}",
            args.memory_high
        );
    }
    crate::runtime()?.block_on(async {
        // The cool-down holds across runs: the last change is in the log.
        let mut last_change: Option<Instant> = last_scaled(&args.dir.join(LOG));
        let mut last_said = String::new();
        loop {
            let platform = LocalPlatform::open(&args.dir)?;
            let loads = loads(&platform).await?;
            let decision = decide(&policy, &loads, last_change.map(|t| t.elapsed()));
            match &decision {
                Decision::Scale { to, because } => {
                    let from = loads.len();
                    say(args, "scale", Some((from, *to)), because)?;
                    let to_u16 = u16::try_from(*to).context("shard count out of range")?;
                    let outcome = crate::operations::scale_masters(&args.dir, to_u16).await?;
                    last_change = Some(Instant::now());
                    let result = if outcome == ExitCode::SUCCESS {
                        format!("scaled from {from} to {to} shards")
                    } else {
                        format!("the scale to {to} shards did not finish (see above)")
                    };
                    say(args, "scaled", Some((from, *to)), &result)?;
                    last_said.clear();
                }
                Decision::Stay { because } => {
                    // Only when the reason changes, so a quiet cluster gives a quiet log.
                    let kind = because.split(':').next().unwrap_or_default().to_owned();
                    if kind != last_said || args.once {
                        say(args, "stay", None, because)?;
                        last_said = kind;
                    }
                }
            }
            if args.once {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(args.interval)) => {}
                () = crate::shutdown_signal() => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}

/// When the log's last completed scale happened, as an instant (`None`: never, or unreadable).
fn last_scaled(path: &std::path::Path) -> Option<Instant> {
    let text = std::fs::read_to_string(path).ok()?;
    let at_ms = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["decision"] == "scaled")
        .filter_map(|entry| entry["at_ms"].as_u64())
        .max()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    let ago = Duration::from_millis(u64::try_from(now_ms).ok()?.saturating_sub(at_ms));
    Instant::now().checked_sub(ago)
}

/// What each master reports now.
async fn loads(platform: &LocalPlatform) -> Result<Vec<ShardLoad>> {
    let observed = crate::operations::observation(platform).await?;
    cinnabar_cluster::autoscale::read_loads(&observed, Timeouts::default(), None)
        .await
        .context("asking the masters for their load")
}

/// Prints one decision and appends it to the log.
fn say(
    args: &AutoscaleArgs,
    what: &str,
    shards: Option<(usize, usize)>,
    because: &str,
) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let line = serde_json::json!({
        "at_ms": now_ms,
        "decision": what,
        "from": shards.map(|s| s.0),
        "to": shards.map(|s| s.1),
        "because": because,
    })
    .to_string();
    if args.json {
        println!("{line}");
    } else {
        match shards {
            Some((from, to)) => println!("{what} {from} -> {to} shards: {because}"),
            None => println!("{what}: {because}"),
        }
    }
    let path = args.dir.join(LOG);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(log, "{line}").with_context(|| format!("writing {}", path.display()))
}
