//! The `cinnabar` binary end to end: up (with its proxy, or without), status, down, supervision
//! and bad input, against real redis-server processes on reserved loopback ports.
//!
//! Port layout under test: `--port P` puts the proxy on P and the nodes on P+1 …; with
//! `--no-proxy` the nodes start at P.

// Test helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use cinnabar_testkit::{Target, Workload};
use serde_json::Value;
use support::*;

#[test]
fn up_detached_serves_a_plain_client_through_the_proxy_reports_it_healthy_and_down_leaves_no_process()
 {
    let c = Cinnabar::new(3, 1);
    let endpoint = c.up_detached(3, 1);
    assert_eq!(endpoint, c.endpoint(), "exactly one endpoint on stdout");

    // A plain client, as `redis-cli -p` without `-c`: keys of every shard through one address.
    let mut conn = plain_connection(&endpoint);
    let keys: Vec<String> = (0..30).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        redis::cmd("SET").arg(key).arg(key).exec(&mut conn).unwrap();
    }
    for key in &keys {
        let got: String = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
        assert_eq!(&got, key);
    }

    c.wait_healthy(Duration::from_secs(20));
    let (_, status) = c.status();
    assert_eq!(status["endpoint"], endpoint.as_str());
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let proxy = &status["proxy"];
    assert_eq!(proxy["address"], endpoint.as_str(), "{proxy:#}");
    assert_eq!(proxy["pid"], supervisor, "the proxy runs in the supervisor");
    assert_eq!(proxy["up"], true, "{proxy:#}");
    assert_eq!(proxy["workers"], 1, "{proxy:#}");
    // The admin listener: the proxy's port + 10000, serving metrics and readiness.
    let admin = status["admin"].as_str().unwrap();
    let proxy_port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(admin, format!("127.0.0.1:{}", proxy_port + 10_000));
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("cinnabar_requests_total{category=\"write\"}"),
        "{metrics}"
    );
    assert!(http_get(admin, "/readyz").starts_with("HTTP/1.1 200"));
    // Everyone is `readwrite` out of the box: FLUSHALL is refused, and the refusal is in the
    // cluster's audit trail (not on `up`'s stdout).
    let refused = redis::cmd("FLUSHALL").exec(&mut conn).unwrap_err();
    assert!(refused.to_string().contains("no permissions"), "{refused}");
    let audit = c.dir().join("audit.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .contains("FLUSHALL")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no audit record in {}",
            audit.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status["slots_covered"], 16384);
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    let masters: Vec<&Value> = nodes.iter().filter(|n| n["role"] == "master").collect();
    let replicas: Vec<&Value> = nodes.iter().filter(|n| n["role"] == "replica").collect();
    assert_eq!((masters.len(), replicas.len()), (3, 3), "{status:#}");
    for node in nodes {
        assert_eq!(node["health"], "ok", "{node:#}");
        assert!(node["pid"].as_u64().is_some(), "{node:#}");
        assert!(node["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    for replica in &replicas {
        let followed = replica["master"].as_str().unwrap();
        assert!(
            masters.iter().any(|m| m["address"] == followed),
            "replica follows a master: {replica:#}"
        );
        assert!(replica["slots"].as_array().unwrap().is_empty());
    }
    // The keys really were spread: every master holds some of them.
    for master in &masters {
        let mut direct = plain_connection(master["address"].as_str().unwrap());
        let held: u64 = redis::cmd("DBSIZE").query(&mut direct).unwrap();
        assert!(held > 0, "no key reached {}", master["address"]);
    }
    let human = c.run(&["status"]);
    assert!(human.status.success());
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("healthy: 6/6 nodes ok, 16384/16384 slots covered"),
        "{human}"
    );
    assert!(
        human.contains(&format!("proxy     {endpoint} up")),
        "{human}"
    );

    let node_pids = pids(&status);
    let down = c.run(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(!alive(supervisor), "supervisor still running after down");
    for pid in node_pids {
        assert!(!alive(pid), "node pid {pid} still running after down");
    }
    assert!(refuses_connections(&endpoint), "the proxy outlived down");
    assert!(
        c.dir().join("nodes").exists(),
        "down without --purge keeps data"
    );
}

#[test]
fn kill_9_of_any_node_is_healed_and_no_acknowledged_write_is_lost() {
    let c = Cinnabar::new(3, 1);
    let endpoint = c.up_detached(3, 1);
    c.wait_healthy(Duration::from_secs(20));
    // Through the endpoint, as a user's plain client would: the proxy rides out the restarts.
    let workload = Workload::start(
        Target::Standalone(endpoint.parse().unwrap()),
        Duration::from_millis(1),
    );
    workload.wait_for_acknowledged(200, Duration::from_secs(20));

    // One master, then one replica: each must come back healthy within 30 s.
    for role in ["master", "replica"] {
        let (_, status) = c.status();
        let victim = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["role"] == role)
            .unwrap()
            .clone();
        let pid = victim["pid"].as_u64().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let before = workload.acknowledged();
        let healed = c.wait_healthy(Duration::from_secs(30));
        let (_, after) = c.status();
        let restarted = after["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["address"] == victim["address"])
            .unwrap();
        assert_ne!(
            restarted["pid"].as_u64().unwrap(),
            pid,
            "a new process serves {}",
            victim["address"]
        );
        assert!(restarted["restarts"].as_u64().unwrap() >= 1);
        eprintln!("{role} {} healed in {healed:?}", victim["address"]);
        workload.wait_for_acknowledged(before + 200, Duration::from_secs(30));
    }
    let log = workload.stop();
    assert!(log.acknowledged.len() >= 600);
    log.assert_nothing_lost();
}

#[test]
fn down_then_up_resumes_the_same_cluster_with_its_data_behind_the_same_endpoint() {
    let c = Cinnabar::new(1, 1);
    let endpoint = c.up_detached(1, 1);
    let mut conn = plain_connection(&endpoint);
    redis::cmd("SET")
        .arg("kept")
        .arg("yes")
        .exec(&mut conn)
        .unwrap();
    drop(conn);
    assert!(c.run(&["down"]).status.success());
    // Default flags: the stored shape, port and proxy are used.
    let out = c.run(&["up", "--detach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("restarting it on its data"),
        "{}",
        stderr(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), endpoint);
    let mut conn = plain_connection(&endpoint);
    let got: String = redis::cmd("GET").arg("kept").query(&mut conn).unwrap();
    assert_eq!(got, "yes");
    for reshape in [&["up", "--masters", "5"][..], &["up", "--no-proxy"]] {
        let out = c.run(reshape);
        assert!(
            !out.status.success(),
            "{reshape:?} reshaped a running cluster"
        );
    }
}

#[test]
fn foreground_up_prints_the_endpoint_and_ctrl_c_stops_every_node() {
    let c = Cinnabar::new(1, 0);
    let mut child = cinnabar()
        .args([
            "up",
            "--masters",
            "1",
            "--replicas",
            "0",
            "--port",
            &c.port().to_string(),
            "--dir",
        ])
        .arg(c.dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), c.endpoint());
    let mut conn = plain_connection(&c.endpoint());
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG", "the printed endpoint serves at once");
    drop(conn);
    let (_, status) = c.status();
    let node_pids = pids(&status);
    assert_eq!(node_pids.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "stdout holds the endpoint line only");
    assert!(!alive(node_pids[0]), "node survived Ctrl-C");
    assert!(refuses_connections(&c.endpoint()), "proxy survived Ctrl-C");
}

#[test]
fn impossible_requests_are_refused_before_anything_is_created() {
    let c = Cinnabar::new(6, 0);
    let port = c.port().to_string();
    for (args, expected) in [
        (vec!["up", "--masters", "0", "--port", &port], "--masters 0"),
        (
            vec!["up", "--replicas", "40", "--port", &port],
            "--replicas 40",
        ),
        (vec!["up", "--port", "65000"], "past 65535"),
        (
            vec!["up", "--maxmemory", "lots", "--port", &port],
            "not a memory size",
        ),
        (
            vec!["up", "--maxmemory-policy", "lru", "--port", &port],
            "allkeys-lru",
        ),
        (
            vec![
                "up",
                "--redis-server",
                "/nonexistent/redis-server",
                "--port",
                &port,
            ],
            "apt-get install redis-server",
        ),
        (
            vec!["up", "--detach", "--masters", "0", "--port", &port],
            "--masters 0",
        ),
        (
            vec!["up", "--proxy-workers", "0", "--port", &port],
            "--proxy-workers 0",
        ),
        (
            vec!["up", "--no-proxy", "--proxy-workers", "2", "--port", &port],
            "cannot be used with",
        ),
    ] {
        let out = c.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        c.assert_nothing_left(&format!("{args:?}"));
    }
}

#[test]
fn a_busy_proxy_or_node_port_is_named_with_its_holder_and_nothing_is_left_behind() {
    let c = Cinnabar::new(1, 0);
    for busy in [c.port(), c.first_node_port()] {
        let listener = TcpListener::bind(("127.0.0.1", busy)).unwrap();
        let out = c.run(&[
            "up",
            "--masters",
            "1",
            "--replicas",
            "0",
            "--port",
            &c.port().to_string(),
        ]);
        drop(listener);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!("port {busy} is already in use")),
            "{err}"
        );
        assert!(
            err.contains(&format!("held by pid {}", std::process::id())),
            "{err}"
        );
        c.assert_nothing_left("a refused up");
    }
}

#[test]
fn a_second_up_on_a_running_directory_is_refused() {
    let c = Cinnabar::new(1, 0);
    c.up_detached(1, 0);
    let out = c.run(&[
        "up",
        "--masters",
        "1",
        "--replicas",
        "0",
        "--port",
        &c.port().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already runs a cluster"),
        "{}",
        stderr(&out)
    );
    assert!(c.status().0, "the running cluster is untouched");
}

#[test]
fn a_node_that_never_starts_is_named_with_its_log_and_nothing_is_left_behind() {
    let c = Cinnabar::new(1, 0);
    // Claims to be Redis, then fails like a broken install would.
    let fake = c.stand_in_server(
        "if [ \"$1\" = --version ]; then echo 'Redis server v=7.0.15 sha=0'; exit 0; fi\n\
         echo 'FATAL: cannot load module' >&2\nexit 1\n",
    );
    let out = c.run(&[
        "up",
        "--masters",
        "1",
        "--replicas",
        "0",
        "--port",
        &c.port().to_string(),
        "--redis-server",
        fake.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "node 127.0.0.1:{} did not become ready",
            c.first_node_port()
        )),
        "{err}"
    );
    assert!(
        err.contains("FATAL: cannot load module"),
        "log tail shown: {err}"
    );
    c.assert_nothing_left("a failed up");
}

#[test]
fn status_and_down_on_an_empty_directory_explain_themselves() {
    let c = Cinnabar::new(1, 0);
    let status = c.run(&["status"]);
    assert!(!status.status.success());
    assert!(
        stderr(&status).contains("no cluster found"),
        "{}",
        stderr(&status)
    );
    let down = c.run(&["down"]);
    assert!(down.status.success(), "down is idempotent");
    assert!(stderr(&down).contains("nothing to stop"));
}

#[test]
fn a_node_that_never_joins_is_named_with_its_log_tail_and_nothing_is_left_behind() {
    let c = Cinnabar::new(2, 0);
    let stray = c.first_node_port() + 1;
    // A loopback port we hold with no listener: the stray node announces it as its cluster bus,
    // so every MEET towards it is refused and it never joins.
    let dead_bus = cinnabar_testkit::reserve_port();
    let real = cinnabar_testkit::server_binary().path.display().to_string();
    let wrapper = c.stand_in_server(&format!(
        "[ \"$1\" = --version ] && exec {real} --version\n\
         if grep -qx 'port {stray}' \"$1\"; then exec {real} \"$1\" --cluster-announce-bus-port {}; fi\n\
         exec {real} \"$1\"\n",
        dead_bus.port()
    ));
    let out = c.run(&[
        "up",
        "--masters",
        "2",
        "--replicas",
        "0",
        "--port",
        &c.port().to_string(),
        "--timeout",
        "3",
        "--redis-server",
        wrapper.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{stray} has not joined")),
        "{err}"
    );
    assert!(
        err.contains(&format!("nodes/{stray}/redis.log ---")),
        "its log tail is shown: {err}"
    );
    c.assert_nothing_left("a failed up");
}

#[test]
fn detach_passes_a_dir_named_like_a_subcommand_through_unchanged() {
    let c = Cinnabar::new(1, 0);
    let in_tmp = |args: &[&str]| {
        cinnabar()
            .current_dir(c.tmp.path())
            .args(args)
            .output()
            .unwrap()
    };
    let port = c.port().to_string();
    let up = in_tmp(&[
        "up",
        "--detach",
        "--dir",
        "up",
        "--masters",
        "1",
        "--replicas",
        "0",
        "--port",
        &port,
    ]);
    let state_written = c.tmp.path().join("up").join("cinnabar.json").exists();
    let down = in_tmp(&["down", "--purge", "--dir", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(state_written, "the supervisor used another directory");
    assert!(down.status.success(), "{}", stderr(&down));
}

#[test]
fn down_never_signals_a_stranger_whose_pid_is_in_a_stale_state_file() {
    let c = Cinnabar::new(1, 0);
    c.up_detached(1, 0);
    assert!(c.run(&["down"]).status.success());
    // A process that merely reused the recorded pids, sitting in the node's own data directory
    // (a shell or `tail -f` would): it must survive `down`.
    let node_dir = c.dir().join("nodes").join(c.first_node_port().to_string());
    let mut stranger = Command::new("sleep")
        .arg("60")
        .current_dir(&node_dir)
        .spawn()
        .unwrap();
    let state_path = c.dir().join("cinnabar.json");
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["supervisor_pid"] = stranger.id().into();
    state["nodes"][0]["pid"] = stranger.id().into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let down = c.run(&["down"]);
    let survived = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(survived, "down signalled a process that was not ours");
}

#[test]
fn no_proxy_exposes_the_first_node_and_a_resumed_up_keeps_that_choice() {
    let c = Cinnabar::without_proxy(1, 0);
    assert_eq!(c.up_detached(1, 0), c.endpoint(), "the first node");
    let (healthy, status) = c.status();
    assert!(healthy, "{status:#}");
    assert_eq!(status["proxy"], Value::Null, "{status:#}");
    assert_eq!(status["nodes"][0]["address"], c.endpoint().as_str());
    let mut conn = cluster_connection(&c.seeds());
    redis::cmd("SET")
        .arg("direct")
        .arg("1")
        .exec(&mut conn)
        .unwrap();
    drop(conn);
    assert!(c.run(&["down"]).status.success());
    let out = c.run(&["up", "--detach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), c.endpoint());
    assert_eq!(c.status().1["proxy"], Value::Null, "still no proxy");
    let mut conn = cluster_connection(&c.seeds());
    let got: String = redis::cmd("GET").arg("direct").query(&mut conn).unwrap();
    assert_eq!(got, "1");
}

#[test]
fn a_proxy_that_stops_answering_makes_status_unhealthy_until_it_answers_again() {
    let c = Cinnabar::new(1, 0);
    let port = c.port().to_string();
    let up = c.run(&[
        "up",
        "--detach",
        "--masters",
        "1",
        "--replicas",
        "0",
        "--port",
        &port,
        "--proxy-workers",
        "2",
    ]);
    assert!(up.status.success(), "{}", stderr(&up));
    c.wait_healthy(Duration::from_secs(20));
    let (_, status) = c.status();
    assert_eq!(
        status["proxy"]["workers"], 2,
        "--proxy-workers reaches the detached supervisor"
    );
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let pid = nix::unistd::Pid::from_raw(supervisor as i32);
    // Freezing the supervisor freezes the proxy's threads: it accepts nothing, answers nothing.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (healthy, status) = c.status();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(!healthy, "healthy with the proxy down: {status:#}");
    assert_eq!(status["proxy"]["up"], false, "{status:#}");
    assert!(
        status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("does not answer PING")),
        "{status:#}"
    );
    c.wait_healthy(Duration::from_secs(20));
}

#[test]
fn a_proxy_that_cannot_listen_fails_up_with_its_reason_and_nothing_is_left_behind() {
    let c = Cinnabar::new(1, 0);
    let real = cinnabar_testkit::server_binary().path.display().to_string();
    let tmp = c.tmp.path().display().to_string();
    // The node's start takes the proxy's port after the port check passed: a plain Redis
    // without SO_REUSEPORT, so the proxy's bind fails.
    let wrapper = c.stand_in_server(&format!(
        "[ \"$1\" = --version ] && exec {real} --version\n\
         {real} --port {} --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
           --dir {tmp} --pidfile {tmp}/squatter.pid --logfile {tmp}/squatter.log\n\
         exec {real} \"$1\"\n",
        c.port()
    ));
    let out = c.run(&[
        "up",
        "--masters",
        "1",
        "--replicas",
        "0",
        "--port",
        &c.port().to_string(),
        "--redis-server",
        wrapper.to_str().unwrap(),
    ]);
    let squatter = std::fs::read_to_string(c.tmp.path().join("squatter.pid")).unwrap_or_default();
    if let Ok(pid) = squatter.trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the proxy on {} did not start", c.endpoint())),
        "{err}"
    );
    assert!(err.contains("cannot listen on"), "{err}");
    c.assert_nothing_left("a failed up");
    assert!(
        refuses_connections(&format!("127.0.0.1:{}", c.first_node_port())),
        "the node outlived the failed up"
    );
}

#[test]
fn proxy_subcommand_with_a_config_file_serves_a_plain_client_and_drains_on_sigterm() {
    let c = Cinnabar::without_proxy(3, 0);
    c.up_detached(3, 0);
    let listen = cinnabar_testkit::reserve_port();
    let overridden = cinnabar_testkit::reserve_port();
    // The file gives the seeds; its listen address is overridden by the flag.
    let config = c.tmp.path().join("cinnabar.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nseeds = [\"{}\"]\nworkers = 2\nretry_window_ms = 2000\n",
            overridden.port(),
            c.endpoint()
        ),
    )
    .unwrap();
    let mut proxy = cinnabar()
        .args([
            "proxy",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", listen.port()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(proxy.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), format!("127.0.0.1:{}", listen.port()));
    let mut conn = plain_connection(&format!("127.0.0.1:{}", listen.port()));
    let keys: Vec<String> = (0..30).map(|i| format!("through:{i}")).collect();
    for k in &keys {
        redis::cmd("SET").arg(k).arg(k).exec(&mut conn).unwrap();
    }
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
    assert_eq!(values, keys);
    // SIGTERM drains: the idle client is closed at once, and the proxy exits cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = proxy.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("draining: no new clients; 1 connected"),
        "{err}"
    );
    assert!(err.contains("drained; stopped"), "{err}");
    assert!(
        redis::cmd("PING").exec(&mut conn).is_err(),
        "the client was closed"
    );
}

#[test]
fn proxy_config_mistakes_are_named_with_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cinnabar.toml");
    for (text, expected) in [
        (
            "seeds = [\"127.0.0.1:7001\"]\nworkerz = 2\n",
            "line 2: unknown key `workerz`",
        ),
        ("workers = 0\n", "line 1: bad value for `workers`"),
        (
            "listen = \"127.0.0.1:0\"\n",
            "no seed: give --seed HOST:PORT",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = cinnabar()
            .args(["proxy", "--config", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(expected), "{text:?}: {err}");
        if !expected.starts_with("no seed") {
            assert!(
                err.contains(&file.display().to_string()),
                "names the file: {err}"
            );
        }
    }
}

#[test]
fn proxy_with_no_reachable_seed_says_so() {
    let nobody = cinnabar_testkit::reserve_port();
    let out = cinnabar()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &format!("127.0.0.1:{}", nobody.port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot learn the cluster topology"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}", nobody.port())),
        "names the seed: {err}"
    );
}

/// A plain HTTP GET; the whole response (status line, headers, body).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
