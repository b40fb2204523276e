//! `cinnabar autoscale` on a real local cluster: data past the memory high-water mark of a
//! 3-shard cluster grows it by exactly the shards needed, with a workload writing through the
//! proxy seeing no error; the cool-down holds across runs; the maximum is never passed.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use cinnabar_testkit::{Target, Workload};
use support::{Cinnabar, plain_connection};

/// Fills through the endpoint until every master uses at least `percent` of its maxmemory.
fn fill(endpoint: &str, cluster: &Cinnabar, percent: u64, from: &mut u64) {
    let mut conn = plain_connection(endpoint);
    let value = "v".repeat(2048);
    loop {
        let mut pipe = redis::pipe();
        for i in *from..*from + 200 {
            pipe.cmd("SET")
                .arg(format!("fill:{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
        *from += 200;
        let (_, status) = cluster.status();
        let masters: Vec<String> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "master")
            .map(|n| n["address"].as_str().unwrap().to_owned())
            .collect();
        let usage = masters
            .iter()
            .map(|m| {
                let mut node = plain_connection(m);
                let info: String = redis::cmd("INFO").arg("memory").query(&mut node).unwrap();
                let field = |name: &str| -> u64 {
                    info.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}:")))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap()
                };
                field("used_memory") * 100 / field("maxmemory")
            })
            .min()
            .unwrap();
        if usage >= percent {
            return;
        }
        assert!(*from < 200_000, "the cluster never filled to {percent}%");
    }
}

fn autoscale(cluster: &Cinnabar, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["autoscale", "--max-masters", "5", "--once", "--json"];
    args.extend_from_slice(extra);
    let out = cluster.run(&args);
    assert!(out.status.success(), "{}", support::stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn masters(cluster: &Cinnabar) -> usize {
    let (_, status) = cluster.status();
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "master")
        .count()
}

#[test]
fn memory_past_the_mark_grows_the_cluster_by_what_is_needed_and_the_cooldown_holds() {
    let cluster = Cinnabar::with_spare_ports(3, 0, true, 4);
    let endpoint = cluster.up_detached_with(3, 0, &["--maxmemory", "8mb"]);
    let mut next = 0;
    // Below the mark: nothing happens.
    let said = autoscale(&cluster, &[]);
    assert_eq!(said[0]["decision"], "stay", "{said:?}");

    fill(&endpoint, &cluster, 82, &mut next);
    let workload = Workload::start(
        Target::Standalone(endpoint.parse().unwrap()),
        Duration::from_millis(2),
    );
    let said = autoscale(&cluster, &[]);
    let decision = &said[0];
    assert_eq!(decision["decision"], "scale", "{said:?}");
    assert_eq!(decision["from"], 3);
    assert_eq!(
        decision["to"], 4,
        "3 × 82% of 8 MiB fits 4 shards below 80%: {said:?}"
    );
    assert!(decision["because"].as_str().unwrap().contains("maxmemory"));
    assert_eq!(said.last().unwrap()["decision"], "scaled", "{said:?}");
    assert_eq!(masters(&cluster), 4);

    // Past the mark again at once: the cool-down (from the log, across runs) holds.
    fill(&endpoint, &cluster, 82, &mut next);
    let said = autoscale(&cluster, &[]);
    assert_eq!(said[0]["decision"], "stay", "{said:?}");
    assert!(
        said[0]["because"]
            .as_str()
            .unwrap()
            .contains("cooling down")
    );
    assert_eq!(masters(&cluster), 4);

    // Without a cool-down it grows again, and never beyond the maximum.
    let said = autoscale(&cluster, &["--cooldown", "0"]);
    assert_eq!(said[0]["to"], 5, "{said:?}");
    assert_eq!(masters(&cluster), 5);
    fill(&endpoint, &cluster, 82, &mut next);
    let said = autoscale(&cluster, &["--cooldown", "0"]);
    assert_eq!(said[0]["decision"], "stay", "{said:?}");
    assert!(said[0]["because"].as_str().unwrap().contains("maximum"));

    let log = workload.stop();
    assert_eq!(log.failed, 0, "client errors: {:?}", log.errors);
    assert!(log.lost_writes().unwrap().is_empty());
    let logged = std::fs::read_to_string(cluster.dir().join("autoscale.jsonl")).unwrap();
    assert_eq!(
        logged.lines().filter(|l| l.contains("\"scaled\"")).count(),
        2
    );
}
