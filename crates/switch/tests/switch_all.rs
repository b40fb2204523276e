//! Two real proxies in front of one real cluster, a real sync into a second cluster, and
//! clients writing through both proxies: the coordinated switch moves both proxies together
//! with no client error and every acknowledged write on the new cluster; a proxy that cannot
//! prepare leaves every proxy on the source.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cinnabar_replication::sync::{Background, SyncConfig};
use cinnabar_replication::verify::Endpoint;
use cinnabar_switch::{ProxyAdmin, SwitchError, Target, switch_all};
use cinnabar_testkit::TestCluster;

fn proxy(cluster: &TestCluster) -> cinnabar_proxy::ProxyHandle {
    let mut config =
        cinnabar_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin_token = Some("t0ken".into());
    cinnabar_proxy::start(config).unwrap()
}

fn admin(proxy: &cinnabar_proxy::ProxyHandle) -> ProxyAdmin {
    ProxyAdmin {
        addr: proxy.admin_addr().unwrap().to_string(),
        token: "t0ken".into(),
    }
}

/// A client writing unique keys through `endpoint` until `stop`; its acknowledged keys and
/// errors.
fn writer(
    endpoint: String,
    tag: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://{endpoint}/")).unwrap();
        let mut conn = client.get_connection().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (mut acked, mut errors) = (Vec::new(), Vec::new());
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{tag}:{n}");
            match redis::cmd("SET").arg(&key).arg(n).query::<()>(&mut conn) {
                Ok(()) => acked.push(key),
                Err(e) => errors.push(e.to_string()),
            }
            n += 1;
        }
        (acked, errors)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_proxy_switches_together_with_no_client_error_and_no_lost_write() {
    let (source, target) = tokio::join!(TestCluster::start(2, 0), TestCluster::start(3, 0));
    let (a, b) = (proxy(&source), proxy(&source));
    let state = tempfile::tempdir().unwrap();
    let config = SyncConfig::new(
        Endpoint::new(source.seeds()[0].to_string()),
        Endpoint::new(target.seeds()[0].to_string()),
        state.path(),
    );
    let sync = Background::start(config, |_| {});
    let live = Arc::clone(sync.live());
    let offsets = cinnabar_replication::admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::default(),
        Arc::clone(&live),
    )
    .unwrap()
    .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        writer(a.local_addr().to_string(), "a", Arc::clone(&stop)),
        writer(b.local_addr().to_string(), "b", Arc::clone(&stop)),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live.all_streaming(2) {
        assert!(
            Instant::now() < deadline,
            "the sync never streamed: {}",
            live.json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let request = Target {
        cluster: None,
        seeds: target.seeds().iter().map(ToString::to_string).collect(),
        user: None,
        password: None,
        max_pause_ms: 2000,
    };
    // A proxy that cannot prepare (a wrong token here) leaves every proxy on the source.
    let mut wrong = admin(&b);
    wrong.token = "nope".into();
    let refused = switch_all(&[admin(&a), wrong], &request, &offsets).await;
    assert!(
        matches!(refused, Err(SwitchError::NotPrepared { .. })),
        "{refused:?}"
    );
    let mut serving = a.masters();
    serving.sort_by_key(|m| m.port);
    assert_eq!(serving.len(), 2, "a still serves the source");

    let report = switch_all(&[admin(&a), admin(&b)], &request, &offsets)
        .await
        .unwrap();
    assert_eq!(report.proxies.len(), 2);
    assert_eq!(report.barrier_offsets.len(), 2);
    assert_eq!(a.masters().len(), 3);
    assert_eq!(b.masters().len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in writers {
        let (acked, errors) = tokio::task::spawn_blocking(move || w.join().unwrap())
            .await
            .unwrap();
        assert!(errors.is_empty(), "client errors: {errors:?}");
        all.extend(acked);
    }
    let _ = tokio::task::spawn_blocking(move || sync.stop()).await;
    // Every acknowledged write is on the new cluster (read straight from its nodes).
    let urls: Vec<String> = target
        .seeds()
        .iter()
        .map(|s| format!("redis://{s}/"))
        .collect();
    let mut cluster = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    let mut missing = 0;
    for key in &all {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut cluster).unwrap();
        missing += usize::from(value.is_none());
    }
    assert_eq!(missing, 0, "of {} acknowledged writes", all.len());
    eprintln!(
        "coordinated switch of 2 proxies: hold {:.1} ms (catch-up {:.1} ms), {} writes, 0 errors",
        report.hold_ms,
        report.catch_up_ms,
        all.len()
    );
}
