//! Migrations end to end, under a workload whose every acknowledged write is recorded with its
//! latency: `cinnabar migrate` moves a 3-master cluster's endpoint to a 5-master cluster with no
//! client error, no lost write and a short pause, and a Sentinel group's endpoint to a cluster; a switch whose target cannot catch up (one of
//! its masters stopped on purpose) is abandoned and the clients stay on the source, again
//! without an error.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cinnabar_replication::sync::{Background, SyncConfig};
use cinnabar_replication::verify::Endpoint;
use support::{Cinnabar, cinnabar, plain_connection};

/// One writer's record: each acknowledged key, and every request's send time and latency.
#[derive(Default)]
struct Written {
    keys: Vec<String>,
    requests: Vec<(Instant, Duration)>,
    errors: Vec<String>,
}

/// `writers` clients writing unique keys through `endpoint` until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Written>>,
}

impl Load {
    fn start(endpoint: &str, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..writers)
            .map(|w| {
                let (endpoint, stop) = (endpoint.to_owned(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut conn = plain_connection(&endpoint);
                    conn.set_read_timeout(Some(Duration::from_secs(15)))
                        .unwrap();
                    let mut written = Written::default();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("load:{w}:{n}");
                        let sent = Instant::now();
                        let reply: redis::RedisResult<()> =
                            redis::cmd("SET").arg(&key).arg(n).query(&mut conn);
                        written.requests.push((sent, sent.elapsed()));
                        match reply {
                            Ok(()) => written.keys.push(key),
                            Err(e) => {
                                written.errors.push(e.to_string());
                                conn = plain_connection(&endpoint);
                            }
                        }
                        n += 1;
                    }
                    written
                })
            })
            .collect();
        Self { stop, threads }
    }

    fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Written::default();
        for thread in self.threads {
            let w = thread.join().unwrap();
            all.keys.extend(w.keys);
            all.requests.extend(w.requests);
            all.errors.extend(w.errors);
        }
        all
    }
}

impl Written {
    /// The latency percentile `q` of the requests sent within `from..to`, and their count.
    fn percentile(&self, q: f64, from: Instant, to: Instant) -> (Duration, usize) {
        let mut within: Vec<Duration> = self
            .requests
            .iter()
            .filter(|(sent, _)| *sent >= from && *sent <= to)
            .map(|(_, took)| *took)
            .collect();
        within.sort();
        if within.is_empty() {
            return (Duration::ZERO, 0);
        }
        let rank = ((within.len() as f64 * q).ceil() as usize).clamp(1, within.len());
        (within[rank - 1], within.len())
    }

    /// Keys acknowledged but missing (or with another value) through `endpoint`.
    fn missing_through(&self, endpoint: &str) -> Vec<String> {
        let mut conn = plain_connection(endpoint);
        let mut missing = Vec::new();
        for chunk in self.keys.chunks(200) {
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(chunk).query(&mut conn).unwrap();
            for (key, value) in chunk.iter().zip(values) {
                let expected = key.rsplit(':').next().unwrap();
                if value.as_deref() != Some(expected) {
                    missing.push(key.clone());
                }
            }
        }
        missing
    }
}

#[test]
fn migrating_3_masters_to_5_under_load_loses_no_write_and_pauses_briefly() {
    let old = Cinnabar::new(3, 0);
    let new = Cinnabar::new(5, 0);
    let endpoint = old.up_detached(3, 0);
    new.up_detached(5, 0);
    {
        let mut conn = plain_connection(&endpoint);
        for i in 0..2000 {
            let _: () = redis::cmd("SET")
                .arg(format!("before:{i}"))
                .arg(i)
                .query(&mut conn)
                .unwrap();
        }
    }
    let load = Load::start(&endpoint, 4);
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let out = cinnabar()
        .args(["migrate", "--json", "--dir"])
        .arg(old.dir())
        .arg("--to-dir")
        .arg(new.dir())
        .output()
        .unwrap();
    let ended = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let written = load.stop();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "migrate --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            support::stderr(&out)
        )
    });
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        support::stderr(&out)
    );
    assert_eq!(report["outcome"], "switched", "{report:#}");
    assert_eq!(report["target_masters"].as_array().unwrap().len(), 5);
    assert!(
        report["keys_copied"].as_u64().unwrap() >= 2000,
        "{report:#}"
    );

    assert!(
        written.errors.is_empty(),
        "client errors: {:?}",
        written.errors
    );
    let missing = written.missing_through(&endpoint);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing after the migration: {:?}",
        missing.len(),
        written.keys.len(),
        &missing[..missing.len().min(10)]
    );
    // The endpoint serves the new cluster: the writes are on its nodes, the old one stopped
    // getting them.
    let mut new_cluster = support::cluster_connection(&new.seeds());
    let last = written.keys.last().unwrap();
    let on_new: Option<String> = redis::cmd("GET").arg(last).query(&mut new_cluster).unwrap();
    assert!(on_new.is_some(), "{last} is not on the new cluster");
    let before: Option<String> = redis::cmd("GET")
        .arg("before:1999")
        .query(&mut new_cluster)
        .unwrap();
    assert_eq!(before.as_deref(), Some("1999"));
    let state = std::fs::read_to_string(old.dir().join("cinnabar.json")).unwrap();
    assert!(state.contains("\"serving\""), "the switch is recorded");

    let (p99, during) = written.percentile(0.99, started, ended);
    let (max, total) = written.percentile(1.0, started, ended + Duration::from_millis(300));
    eprintln!(
        "migration 3 -> 5 masters: {} acknowledged writes, {during} sent during the migration: \
         p99 {p99:?}, max {max:?} (of {total} from its start on); hold {} ms; report {report:#}",
        written.keys.len(),
        report["switch"]["hold_ms"]
    );
    assert!(
        p99 <= Duration::from_millis(100),
        "p99 {p99:?} during the migration"
    );
    assert!(max <= Duration::from_secs(1), "slowest request {max:?}");
    assert!(
        during > 100,
        "the workload kept writing during the migration"
    );
}

#[test]
fn a_sentinel_group_migrates_to_a_cluster_under_load_without_an_error_or_a_lost_write() {
    let old = Cinnabar::with_spare_ports(1, 1, true, 3);
    let port = old.port().to_string();
    let up = old.run(&[
        "up",
        "--detach",
        "--topology",
        "sentinel",
        "--replicas",
        "1",
        "--sentinels",
        "3",
        "--port",
        &port,
    ]);
    assert!(up.status.success(), "{}", support::stderr(&up));
    let endpoint = old.endpoint();
    let new = Cinnabar::new(3, 0);
    new.up_detached(3, 0);
    {
        // Keys of many slots in one request: a group takes it whole.
        let mut conn = plain_connection(&endpoint);
        let _: () = redis::cmd("MSET")
            .arg(&["a", "1", "b", "2", "c", "3"])
            .query(&mut conn)
            .unwrap();
    }
    let load = Load::start(&endpoint, 4);
    std::thread::sleep(Duration::from_millis(300));
    let out = cinnabar()
        .args(["migrate", "--json", "--dir"])
        .arg(old.dir())
        .arg("--to-dir")
        .arg(new.dir())
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let written = load.stop();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "migrate --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            support::stderr(&out)
        )
    });
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        support::stderr(&out)
    );
    assert_eq!(report["outcome"], "switched", "{report:#}");
    assert_eq!(report["source_masters"].as_array().unwrap().len(), 1);
    assert_eq!(report["target_masters"].as_array().unwrap().len(), 3);
    assert!(
        written.errors.is_empty(),
        "client errors: {:?}",
        written.errors
    );
    let missing = written.missing_through(&endpoint);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing: {:?}",
        missing.len(),
        written.keys.len(),
        &missing[..missing.len().min(10)]
    );
    // The endpoint serves the cluster now: keys route by slot, multi-key requests are split.
    let mut conn = plain_connection(&endpoint);
    let values: Vec<String> = redis::cmd("MGET")
        .arg(&["a", "b", "c"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(values, ["1", "2", "3"]);
    let mut cluster = support::cluster_connection(&new.seeds());
    let last = written.keys.last().unwrap();
    let on_new: Option<String> = redis::cmd("GET").arg(last).query(&mut cluster).unwrap();
    assert!(on_new.is_some(), "{last} is not on the cluster");
    let state = std::fs::read_to_string(old.dir().join("cinnabar.json")).unwrap();
    assert!(state.contains("\"serving\""), "the switch is recorded");
    eprintln!(
        "group -> 3-master cluster: {} acknowledged writes; report {report:#}",
        written.keys.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_the_target_cannot_catch_up_with_is_abandoned_and_clients_stay_on_the_source() {
    let (source, target) = tokio::join!(
        cinnabar_testkit::TestCluster::start(2, 0),
        cinnabar_testkit::TestCluster::start(2, 0)
    );
    let config = cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), source.seeds());
    let proxy = cinnabar_proxy::start(config).unwrap();
    let endpoint = proxy.local_addr().to_string();
    let state = tempfile::tempdir().unwrap();
    let sync_config = SyncConfig::new(
        Endpoint::new(source.seeds()[0].to_string()),
        Endpoint::new(target.seeds()[0].to_string()),
        state.path(),
    );
    let sync = Background::start(sync_config, |_| {});
    let live = Arc::clone(sync.live());
    let offsets = cinnabar_replication::admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::default(),
        Arc::clone(&live),
    )
    .unwrap()
    .to_string();
    let load = Load::start(&endpoint, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live.all_streaming(2) {
        assert!(
            Instant::now() < deadline,
            "the sync never streamed: {}",
            live.json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // One target master stops applying: the sync cannot catch up.
    target.servers()[0].pause();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = proxy
        .switch_backend(cinnabar_proxy::SwitchRequest {
            cluster: None,
            seeds: target.seeds(),
            credentials: None,
            catch_up: cinnabar_proxy::CatchUp::Sync(offsets.to_string()),
            max_pause: Duration::from_millis(500),
        })
        .await;
    target.servers()[0].resume();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = tokio::task::spawn_blocking(move || load.stop())
        .await
        .unwrap();
    let _ = tokio::task::spawn_blocking(move || sync.stop()).await;

    assert_eq!(
        report.outcome,
        cinnabar_proxy::switch::Outcome::Abandoned,
        "{report:?}"
    );
    let reason = report.reason.clone().unwrap();
    assert!(
        reason.contains("did not catch up within 500 ms"),
        "{reason}"
    );
    assert!(report.hold_ms < 1000.0, "{report:?}");
    assert!(
        written.errors.is_empty(),
        "client errors: {:?}",
        written.errors
    );
    let mut serving = proxy.masters();
    serving.sort_by_key(|m| m.port);
    let mut masters = source.seeds();
    masters.sort_by_key(|m| m.port);
    assert_eq!(serving, masters, "the proxy still serves the source");
    let missing = written.missing_through(&endpoint);
    assert!(
        missing.is_empty(),
        "lost: {:?}",
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "abandoned switch: hold {} ms, {} writes acknowledged, 0 errors; {reason}",
        report.hold_ms,
        written.keys.len()
    );
}
