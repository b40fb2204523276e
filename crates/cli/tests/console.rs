//! `cinnabar console` end to end, against real clusters it creates with `cinnabar up`: the JSON
//! API (logins, roles, CSRF, create, read, failover, backup, restore, refusals, delete, audit),
//! and the whole console in a real browser (`crates/console/browser/console.test.mjs`: Debian's chromium
//! driven by playwright-core).
//!
//! The browser test needs `/usr/bin/chromium` (Debian's `chromium`) and `playwright-core` in
//! `crates/console/browser/node_modules`; `bash .ci/setup` installs both. When either is
//! missing the test FAILS with the install command; set `CINNABAR_SKIP_BROWSER=1` to skip it
//! instead (it prints a skip note and passes). `CINNABAR_SCREENSHOTS=DIR` saves the main pages
//! as PNG (how docs/images/console-*.png are made).

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cinnabar_testkit::{PortBlock, PortReservation, reserve_port, reserve_port_block};
use serde_json::{Value, json};

/// `printf %s … | sha256sum` of each test user's password.
const USERS: &[(&str, &str, &str)] = &[
    ("ann", "admin", "ann-password"),
    ("olga", "operator", "olga-password"),
    ("vic", "viewer", "vic-password"),
];

/// Ports a console may give its clusters: a 3x1 cluster (7 ports) and its growth room (8),
/// then a restored 3x0 copy (4) with its own room (8).
const CLUSTER_PORTS: u16 = 30;

/// A console on a reserved loopback port over a temporary root; on drop it stops and every
/// cluster under the root is purged.
struct Console {
    child: Child,
    root: tempfile::TempDir,
    addr: String,
    _listen: PortReservation,
    _ports: PortBlock,
}

impl Console {
    fn start() -> Console {
        let root = tempfile::Builder::new()
            .prefix("cinnabar-console-")
            .tempdir()
            .unwrap();
        let users: String = USERS
            .iter()
            .map(|(name, role, password)| {
                format!(
                    "[[users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_sha256 = \"{}\"\n\n",
                    sha256_hex(password)
                )
            })
            .collect();
        std::fs::write(root.path().join("console-users.toml"), users).unwrap();
        let listen = reserve_port();
        let ports = reserve_port_block(CLUSTER_PORTS);
        let mut child = support::cinnabar()
            .args(["console", "--root"])
            .arg(root.path())
            .args([
                "--listen",
                &format!("127.0.0.1:{}", listen.port()),
                "--ports",
                &format!("{}-{}", ports.first(), ports.first() + CLUSTER_PORTS - 1),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        assert!(!addr.is_empty(), "the console printed no address");
        Console {
            child,
            root,
            addr,
            _listen: listen,
            _ports: ports,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One HTTP/1.1 request; returns the status, the `Set-Cookie` value (if any) and the body.
    fn call(
        &self,
        method: &str,
        path: &str,
        session: Option<&Session>,
        body: Option<&Value>,
    ) -> Reply {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(support::TEST_TIMEOUT))
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(session) = session {
            head.push_str(&format!("Cookie: {}\r\n", session.cookie));
            if let Some(csrf) = &session.csrf {
                head.push_str(&format!("X-CSRF-Token: {csrf}\r\n"));
            }
        }
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"\r\n").unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .map(|c| c.split(';').next().unwrap().to_owned());
        Reply {
            status,
            cookie,
            json: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    fn login(&self, user: &str) -> Session {
        let password = USERS.iter().find(|u| u.0 == user).unwrap().2;
        let reply = self.call(
            "POST",
            "/api/v1/login",
            None,
            Some(&json!({"user": user, "password": password})),
        );
        assert_eq!(reply.status, 200, "{user} logs in: {}", reply.json);
        Session {
            cookie: reply.cookie.unwrap(),
            csrf: Some(reply.json["csrf"].as_str().unwrap().to_owned()),
        }
    }

    /// Polls job `id` until it ends; returns it.
    fn wait_job(&self, session: &Session, id: &Value, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self
                .call("GET", &format!("/api/v1/jobs/{id}"), Some(session), None)
                .json;
            if job["state"] != "running" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} still running: {job}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.root.path().join("console-audit.jsonl")).unwrap_or_default()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        for entry in std::fs::read_dir(self.root.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().join("cinnabar.json").exists() {
                let _ = support::cinnabar()
                    .args(["down", "--purge", "--dir"])
                    .arg(entry.path())
                    .output();
            }
        }
    }
}

struct Session {
    cookie: String,
    csrf: Option<String>,
}

struct Reply {
    status: u16,
    cookie: Option<String>,
    json: Value,
}

fn sha256_hex(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn the_api_operates_real_clusters_and_refuses_what_a_role_or_csrf_forbids() {
    let console = Console::start();
    assert_eq!(
        console.call("GET", "/api/v1/clusters", None, None).status,
        401
    );
    let wrong = console.call(
        "POST",
        "/api/v1/login",
        None,
        Some(&json!({"user": "ann", "password": "nope"})),
    );
    assert_eq!(wrong.status, 403);
    assert!(wrong.cookie.is_none());

    let viewer = console.login("vic");
    let admin = console.login("ann");
    let create = json!({"name": "api", "masters": 3, "replicas": 1, "maxmemory": "32mb"});
    let refused = console.call("POST", "/api/v1/clusters", Some(&viewer), Some(&create));
    assert_eq!(refused.status, 403, "{}", refused.json);
    let no_csrf = Session {
        cookie: admin.cookie.clone(),
        csrf: None,
    };
    let refused = console.call("POST", "/api/v1/clusters", Some(&no_csrf), Some(&create));
    assert_eq!(refused.status, 403, "{}", refused.json);
    assert!(refused.json["error"].as_str().unwrap().contains("CSRF"));
    // The CLI's own validation answers at once, before anything runs.
    let invalid = console.call(
        "POST",
        "/api/v1/clusters",
        Some(&admin),
        Some(&json!({"name": "api", "masters": 0})),
    );
    assert_eq!(invalid.status, 400, "{}", invalid.json);

    let started = console.call("POST", "/api/v1/clusters", Some(&admin), Some(&create));
    assert_eq!(started.status, 202, "{}", started.json);
    let busy = console.call("POST", "/api/v1/clusters", Some(&admin), Some(&create));
    assert_eq!(busy.status, 409, "{}", busy.json);
    let job = console.wait_job(&admin, &started.json["job"], Duration::from_secs(90));
    assert_eq!(job["state"], "succeeded", "{job}");

    let list = console
        .call("GET", "/api/v1/clusters", Some(&viewer), None)
        .json;
    assert_eq!(list[0]["name"], "api");
    assert_eq!(list[0]["masters"], 3);
    assert_eq!(list[0]["healthy"], true, "{list}");
    let detail = console
        .call("GET", "/api/v1/clusters/api", Some(&viewer), None)
        .json;
    assert_eq!(detail["status"]["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(detail["status"]["slots_covered"], 16384);
    let metrics = console
        .call("GET", "/api/v1/clusters/api/metrics", Some(&viewer), None)
        .json;
    assert_eq!(metrics["masters"].as_array().unwrap().len(), 3, "{metrics}");
    assert_eq!(metrics["maxmemory"], 3 * 32 * 1024 * 1024);

    // The endpoint refuses FLUSHALL to its (readwrite) clients; the console shows the refusal.
    let endpoint = detail["endpoint"].as_str().unwrap().to_owned();
    let mut client = TcpStream::connect(&endpoint).unwrap();
    client
        .set_read_timeout(Some(support::TEST_TIMEOUT))
        .unwrap();
    client.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").unwrap();
    let mut answer = [0u8; 256];
    let n = client.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"-"), "FLUSHALL is refused");
    // The second metrics reading reports the proxy's latency since the first.
    client.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let n = client.read(&mut answer).unwrap();
    assert_eq!(&answer[..n], b"+PONG\r\n");
    let metrics = console
        .call("GET", "/api/v1/clusters/api/metrics", Some(&viewer), None)
        .json;
    assert!(metrics["requests"].as_u64().unwrap() >= 1, "{metrics}");
    assert!(metrics["latency_p99_us"].as_u64().unwrap() > 0, "{metrics}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refusals = console
            .call("GET", "/api/v1/clusters/api/refusals", Some(&viewer), None)
            .json;
        if refusals[0]["command"] == "FLUSHALL" {
            assert_eq!(refusals[0]["outcome"], "denied");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no FLUSHALL refusal shown: {refusals}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A planned failover of shard 1: its replica becomes the master, the cluster stays healthy.
    let shard_master = |detail: &Value, slot: &str| {
        detail["status"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| {
                n["role"] == "master" && n["slots"][0].as_str().unwrap_or("").starts_with(slot)
            })
            .map(|n| n["address"].as_str().unwrap().to_owned())
    };
    let before = shard_master(&detail, "5461");
    let failover = console.call(
        "POST",
        "/api/v1/clusters/api/failover",
        Some(&admin),
        Some(&json!({"shard": 1})),
    );
    assert_eq!(failover.status, 202, "{}", failover.json);
    let job = console.wait_job(&admin, &failover.json["job"], Duration::from_secs(60));
    assert_eq!(job["state"], "succeeded", "{job}");
    let after = console
        .call("GET", "/api/v1/clusters/api", Some(&viewer), None)
        .json;
    assert!(before.is_some());
    assert_ne!(shard_master(&after, "5461"), before, "{after}");

    // Back up now, list it, and restore it into a new cluster of another shape.
    let backup = console.call("POST", "/api/v1/clusters/api/backups", Some(&admin), None);
    assert_eq!(backup.status, 202, "{}", backup.json);
    let job = console.wait_job(&admin, &backup.json["job"], Duration::from_secs(90));
    assert_eq!(job["state"], "succeeded", "{job}");
    let backups = console
        .call("GET", "/api/v1/clusters/api/backups", Some(&viewer), None)
        .json;
    assert_eq!(backups.as_array().unwrap().len(), 1, "{backups}");
    let restore = json!({"name": "copy", "masters": 3, "replicas": 0, "maxmemory": "32mb"});
    let refused = console.call(
        "POST",
        "/api/v1/clusters/api/restore",
        Some(&viewer),
        Some(&restore),
    );
    assert_eq!(refused.status, 403);
    let restored = console.call(
        "POST",
        "/api/v1/clusters/api/restore",
        Some(&admin),
        Some(&restore),
    );
    assert_eq!(restored.status, 202, "{}", restored.json);
    let job = console.wait_job(&admin, &restored.json["job"], Duration::from_secs(120));
    assert_eq!(job["state"], "succeeded", "{job}");
    let copy = console
        .call("GET", "/api/v1/clusters/copy", Some(&viewer), None)
        .json;
    assert_eq!(copy["healthy"], true, "{copy}");
    assert_eq!(copy["masters"], 3);

    let page = console.call("DELETE", "/api/v1/clusters/api", Some(&viewer), None);
    assert_eq!(page.status, 403);
    let deleted = console.call("DELETE", "/api/v1/clusters/api", Some(&admin), None);
    assert_eq!(deleted.status, 202, "{}", deleted.json);
    let job = console.wait_job(&admin, &deleted.json["job"], Duration::from_secs(60));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(!console.root.path().join("api").exists());
    assert_eq!(
        console
            .call("GET", "/api/v1/clusters/api", Some(&admin), None)
            .status,
        404
    );

    // A job's end is audited as it is reaped, and the audit writer flushes on its own thread:
    // the last records may land a moment after the job reads as done.
    let needles = [
        "\"subcommand\":\"BACKUP-END\"",
        "\"subcommand\":\"RESTORE-END\"",
        "\"subcommand\":\"CREATE\"",
        "\"subcommand\":\"CREATE-END\"",
        "\"subcommand\":\"DELETE-END\"",
        "\"outcome\":\"denied\"",
        "\"outcome\":\"auth_failed\"",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut audit = console.audit();
    while needles.iter().any(|n| !audit.contains(n)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        audit = console.audit();
    }
    for needle in needles {
        assert!(
            audit.contains(needle),
            "{needle} missing from the audit trail:\n{audit}"
        );
    }
    assert!(
        !audit.contains("password"),
        "no password in the audit trail"
    );
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/browser")
}

#[test]
fn the_console_works_in_a_real_browser() {
    const SKIP_VAR: &str = "CINNABAR_SKIP_BROWSER";
    if std::env::var(SKIP_VAR).is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("SKIPPED the_console_works_in_a_real_browser: {SKIP_VAR} is set");
        return;
    }
    let chromium = Path::new("/usr/bin/chromium");
    let playwright = browser_dir().join("node_modules/playwright-core");
    for (what, path) in [
        ("chromium", chromium),
        ("playwright-core", playwright.as_path()),
    ] {
        assert!(
            path.exists(),
            "{what} is missing ({}): install it with `bash .ci/setup` (apt-get chromium; npm ci \
             in crates/console/browser), or set {SKIP_VAR}=1 to skip the browser test",
            path.display()
        );
    }
    let console = Console::start();
    let mut node = Command::new("node");
    node.arg(browser_dir().join("console.test.mjs"))
        .env("CONSOLE_URL", console.url())
        .env("CLUSTER", "shop")
        .env("OPERATOR_USER", "olga")
        .env("OPERATOR_PASSWORD", "olga-password")
        .env("VIEWER_USER", "vic")
        .env("VIEWER_PASSWORD", "vic-password");
    if let Some(dir) = std::env::var_os("CINNABAR_SCREENSHOTS") {
        node.env("SCREENSHOTS", dir);
    }
    let started = Instant::now();
    let out = node.output().unwrap();
    eprintln!(
        "{}{}(browser test: {:.1} s)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the browser scenario failed (see above)"
    );
    let audit = console.audit();
    assert!(audit.contains("\"subcommand\":\"DRILL-END\""), "{audit}");
}
