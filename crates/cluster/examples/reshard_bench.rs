//! Resharding benchmark: `redis-cli --cluster rebalance --cluster-use-empty-masters` against
//! [`SlotMigrator`] on the same data in the same run. Run it through `bench/reshard.sh`.
//!
//! Each round starts a 3-master cluster of test servers on free loopback ports, loads the same
//! keys, adds two empty masters and times only the rebalance; then it checks that every key is
//! still there and every slot has one owner and is stable. A benchmark, never a test.
//!
//! Options: `--keys N` (300000), `--value-size BYTES` (100), `--rounds N` (1: each tool once, in
//! turn), and our engine's `--batch-keys N`, `--pipeline-depth N`, `--slots-per-step N`,
//! `--parallel-steps N`, `--only-ours` (skip redis-cli, to tune those).

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};

use cinnabar_cluster::{
    CheckOptions, MigrateOptions, MigrateProgress, NodeAddr, NodeClient, Role, SLOT_COUNT,
    SlotMigrator, SlotSet, Timeouts, plan_rebalance, wait_healthy,
};
use cinnabar_testkit::cluster::node_addr;
use cinnabar_testkit::{TestCluster, TestServer};

type Failure = Box<dyn Error + Send + Sync>;

struct Settings {
    keys: usize,
    value_size: usize,
    rounds: usize,
    only_ours: bool,
    options: MigrateOptions,
}

fn settings() -> Result<Settings, Failure> {
    let mut settings = Settings {
        keys: 300_000,
        value_size: 100,
        rounds: 1,
        only_ours: false,
        options: MigrateOptions::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--only-ours" {
            settings.only_ours = true;
            continue;
        }
        let value: usize = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--keys" => settings.keys = value,
            "--value-size" => settings.value_size = value,
            "--rounds" => settings.rounds = value.max(1),
            "--batch-keys" => settings.options.batch_keys = value,
            "--pipeline-depth" => settings.options.pipeline_depth = value,
            "--slots-per-step" => settings.options.slots_per_step = value,
            "--parallel-steps" => settings.options.parallel_steps = value,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(settings)
}

/// What one rebalance did.
struct Measured {
    elapsed: Duration,
    slots_moved: usize,
    keys_moved: u64,
}

impl Measured {
    fn keys_per_second(&self) -> f64 {
        self.keys_moved as f64 / self.elapsed.as_secs_f64()
    }
}

/// A 3-master cluster holding the data, and two empty masters that have joined it.
struct StartingPoint {
    cluster: TestCluster,
    empty: Vec<TestServer>,
}

impl StartingPoint {
    fn everyone(&self) -> Vec<NodeAddr> {
        let mut all = self.cluster.seeds();
        all.extend(self.empty.iter().map(node_addr));
        all
    }
}

async fn starting_point(settings: &Settings) -> Result<StartingPoint, Failure> {
    let cluster = TestCluster::start(3, 0).await;
    let loaded = Instant::now();
    load(&cluster.seeds(), settings.keys, settings.value_size).await?;
    eprintln!(
        "  loaded {} keys of {} B in {:.1}s",
        settings.keys,
        settings.value_size,
        loaded.elapsed().as_secs_f64()
    );
    let empty = vec![
        TestServer::start_cluster_node(),
        TestServer::start_cluster_node(),
    ];
    let point = StartingPoint { cluster, empty };
    let seed = point.cluster.seeds()[0].clone();
    for server in &point.empty {
        let port = server.port().to_string();
        query::<()>(&seed, &["CLUSTER", "MEET", "127.0.0.1", &port]).await?;
    }
    wait_joined(&point.everyone()).await?;
    Ok(point)
}

async fn query<T: redis::FromRedisValue>(addr: &NodeAddr, args: &[&str]) -> Result<T, Failure> {
    let mut client = NodeClient::connect(addr, Timeouts::default()).await?;
    Ok(client.query(args).await?)
}

/// Writes `k:<n>` for every n below `count` through a cluster client, in pipelines.
async fn load(seeds: &[NodeAddr], count: usize, value_size: usize) -> Result<(), Failure> {
    let urls: Vec<String> = seeds.iter().map(NodeAddr::redis_url).collect();
    tokio::task::spawn_blocking(move || {
        let client = redis::cluster::ClusterClient::new(urls)?;
        let mut conn = client.get_connection()?;
        let value = vec![b'v'; value_size];
        for start in (0..count).step_by(5000) {
            let mut pipe = redis::cluster::cluster_pipe();
            for n in start..(start + 5000).min(count) {
                pipe.cmd("SET").arg(format!("k:{n}")).arg(&value).ignore();
            }
            pipe.query::<()>(&mut conn)?;
        }
        Ok::<_, Failure>(())
    })
    .await?
}

/// Waits until every node knows every other (no handshake) and reports `cluster_state:ok`.
async fn wait_joined(everyone: &[NodeAddr]) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut settled = true;
        for node in everyone {
            let mut client = NodeClient::connect(node, Timeouts::default()).await?;
            let view = client.cluster_nodes().await?;
            let info = client.cluster_info().await?;
            settled &= view.nodes.len() == everyone.len()
                && view.nodes.iter().all(|n| !n.flags.handshake)
                && info.state == "ok";
        }
        if settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the empty masters did not join within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the end state: the cluster is healthy, every slot has exactly one owner, masters hold
/// all the keys, and the new masters hold their share. Returns the slots and keys they hold.
async fn verify(point: &StartingPoint, settings: &Settings) -> Result<(usize, u64), Failure> {
    let everyone = point.everyone();
    wait_healthy(&everyone, &CheckOptions::default(), Duration::from_secs(30)).await?;
    let mut owned: BTreeMap<NodeAddr, SlotSet> = BTreeMap::new();
    let mut keys_on_masters = 0;
    for node in &everyone {
        let mut client = NodeClient::connect(node, Timeouts::default()).await?;
        let view = client.cluster_nodes().await?;
        let me = view.myself().ok_or("no myself line")?;
        if !me.migrations.is_empty() {
            return Err(format!("{node} still has open slots: {:?}", me.migrations).into());
        }
        if me.role() == Role::Master {
            keys_on_masters += client.db_size().await?;
        }
        owned.insert(node.clone(), SlotSet::from_ranges(&me.slots));
    }
    let total: usize = owned.values().map(SlotSet::len).sum();
    if total != SLOT_COUNT {
        return Err(format!("masters claim {total} slots in all").into());
    }
    if keys_on_masters != settings.keys as u64 {
        return Err(format!(
            "{keys_on_masters} keys on masters, {} loaded",
            settings.keys
        )
        .into());
    }
    let mut slots_new = 0;
    let mut keys_new = 0;
    for server in &point.empty {
        let addr = node_addr(server);
        slots_new += owned[&addr].len();
        keys_new += query::<u64>(&addr, &["DBSIZE"]).await?;
    }
    Ok((slots_new, keys_new))
}

async fn redis_cli_round(settings: &Settings) -> Result<Measured, Failure> {
    let point = starting_point(settings).await?;
    let seed = point.cluster.seeds()[0].to_string();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args([
                "--cluster",
                "rebalance",
                &seed,
                "--cluster-use-empty-masters",
            ])
            .output()
    })
    .await??;
    let elapsed = started.elapsed();
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        return Err(format!("redis-cli failed: {}", tail.join("\n")).into());
    }
    let (slots_moved, keys_moved) = verify(&point, settings).await?;
    Ok(Measured {
        elapsed,
        slots_moved,
        keys_moved,
    })
}

async fn our_round(settings: &Settings) -> Result<Measured, Failure> {
    let point = starting_point(settings).await?;
    let started = Instant::now();
    let migrator = SlotMigrator::connect(&point.cluster.seeds(), settings.options.clone()).await?;
    let targets: Vec<(String, u32)> = migrator.owners().keys().map(|id| (id.clone(), 1)).collect();
    let moves = plan_rebalance(&migrator.owners(), &targets)?;
    let mut last_report = Instant::now();
    migrator
        .run(&moves, &mut |progress| {
            let due = last_report.elapsed() >= Duration::from_secs(1);
            if due || !matches!(progress, MigrateProgress::Moved { .. }) {
                eprintln!("  {progress}");
                last_report = Instant::now();
            }
        })
        .await?;
    let elapsed = started.elapsed();
    let (slots_moved, keys_moved) = verify(&point, settings).await?;
    Ok(Measured {
        elapsed,
        slots_moved,
        keys_moved,
    })
}

fn line(name: &str, measured: &Measured) -> String {
    format!(
        "{name:<34} {:>5} slots, {:>7} keys in {:>6.2}s = {:>8.0} keys/s",
        measured.slots_moved,
        measured.keys_moved,
        measured.elapsed.as_secs_f64(),
        measured.keys_per_second()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let settings = settings()?;
    let o = &settings.options;
    println!(
        "resharding 3 → 5 masters: {} keys of {} B; ours: {} keys per MIGRATE, {} per slot and \
         round, {} slots per step, {} steps at once",
        settings.keys,
        settings.value_size,
        o.batch_keys,
        o.pipeline_depth,
        o.slots_per_step,
        o.parallel_steps
    );
    let (mut cli_times, mut our_times) = (Vec::new(), Vec::new());
    for round in 1..=settings.rounds {
        if !settings.only_ours {
            eprintln!("round {round}: redis-cli --cluster rebalance --cluster-use-empty-masters");
            let cli = redis_cli_round(&settings).await?;
            println!("{}", line("redis-cli --cluster rebalance", &cli));
            cli_times.push(cli.elapsed.as_secs_f64());
        }
        eprintln!("round {round}: cinnabar SlotMigrator");
        let ours = our_round(&settings).await?;
        println!("{}", line("cinnabar plan_rebalance + run", &ours));
        our_times.push(ours.elapsed.as_secs_f64());
    }
    if !cli_times.is_empty() {
        let median = |times: &mut Vec<f64>| {
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let ratio = median(&mut cli_times) / median(&mut our_times);
        println!(
            "speed-up (median redis-cli time / median ours): {ratio:.1}× — target ≥ 2×: {}",
            if ratio >= 2.0 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}
