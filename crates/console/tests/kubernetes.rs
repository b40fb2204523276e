//! Kubernetes mode over HTTP, against kube's mock API server: the list and a page come from
//! the RedisCluster resources, scale is a merge patch of the spec (refused to a viewer and
//! without the CSRF token, audited), and every other action is refused.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cinnabar_console::kubernetes::KubeClusters;
use cinnabar_console::{Console, ConsoleConfig, KubernetesConfig, actions::PortRange};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn cluster(shards: u16) -> Value {
    json!({
        "apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisCluster",
        "metadata": {"name": "orders", "namespace": "team", "generation": 2},
        "spec": {"shards": shards, "replicasPerShard": 1},
        "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True",
            "reason": "AllShardsReady", "message": "ready", "lastTransitionTime": "2026-12-05T10:00:00Z"}],
            "shards": [{"masterPod": "orders-0-0", "replicaPods": ["orders-0-1"], "slots": "0-16383"}]}
    })
}

/// Answers the next API-server request with `body`; returns its method and body.
async fn answer(handle: &mut Handle, body: Value) -> (Method, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    let method = request.method().clone();
    let sent = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    send.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    (method, serde_json::from_slice(&sent).unwrap_or(Value::Null))
}

/// One HTTP request to the console; returns the status, any session cookie and the body.
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: &str,
) -> (u16, Option<String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if let Some(csrf) = csrf {
        head.push_str(&format!("X-CSRF-Token: {csrf}\r\n"));
    }
    stream
        .write_all(format!("{head}\r\n{body}").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| c.split(';').next().unwrap().to_owned());
    (status, cookie, body.to_owned())
}

#[tokio::test]
async fn kubernetes_mode_lists_resources_and_scales_by_a_spec_patch_only() {
    let root = tempfile::tempdir().unwrap();
    // printf %s password | sha256sum
    let digest = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
    std::fs::write(
        root.path().join("users.toml"),
        format!(
            "[[users]]\nname = \"olga\"\nrole = \"operator\"\npassword_sha256 = \"{digest}\"\n\
             [[users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_sha256 = \"{digest}\"\n"
        ),
    )
    .unwrap();
    let config = ConsoleConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        root: root.path().to_owned(),
        users_file: root.path().join("users.toml"),
        audit_file: root.path().join("audit.jsonl"),
        cinnabar: "/nonexistent/cinnabar".into(),
        ports: PortRange {
            first: 7000,
            last: 7999,
        },
        backup_to: None,
        redis_server: None,
        kubernetes: Some(KubernetesConfig::default()),
    };
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kube = KubeClusters::new(kube::Client::new(service, "team"), "team".to_owned());
    let (console, _) = Console::start_with(config, Some(kube)).await.unwrap();
    let addr = console.local_addr();
    let login = |user: &'static str| async move {
        let body = format!("{{\"user\":\"{user}\",\"password\":\"password\"}}");
        let (status, cookie, body) = call(addr, "POST", "/api/v1/login", None, None, &body).await;
        assert_eq!(status, 200, "{body}");
        let csrf = serde_json::from_str::<Value>(&body).unwrap()["csrf"]
            .as_str()
            .unwrap()
            .to_owned();
        (cookie.unwrap(), csrf)
    };
    let (olga, olga_csrf) = login("olga").await;
    let (vic, vic_csrf) = login("vic").await;

    let server = tokio::spawn(async move {
        let list = json!({"apiVersion": "cinnabar.io/v1alpha1", "kind": "RedisClusterList",
            "metadata": {}, "items": [cluster(3)]});
        assert_eq!(answer(&mut handle, list).await.0, Method::GET);
        assert_eq!(answer(&mut handle, cluster(3)).await.0, Method::GET);
        let (method, sent) = answer(&mut handle, cluster(4)).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(sent, json!({"spec": {"shards": 4}}));
    });
    let (status, _, body) = call(addr, "GET", "/api/v1/clusters", Some(&vic), None, "").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["ready"], true);
    let (status, _, page) = call(addr, "GET", "/clusters/orders", Some(&vic), None, "").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("orders-0-0") && !page.contains("id=\"scale\""),
        "{page}"
    );

    let scale = "{\"masters\":4}";
    let path = "/api/v1/clusters/orders/scale";
    let (status, _, _) = call(addr, "POST", path, Some(&vic), Some(&vic_csrf), scale).await;
    assert_eq!(status, 403, "a viewer may not scale");
    let (status, _, _) = call(addr, "POST", path, Some(&olga), None, scale).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, body) = call(addr, "POST", path, Some(&olga), Some(&olga_csrf), scale).await;
    assert_eq!(status, 200, "{body}");
    server.await.unwrap();

    let drill = "/api/v1/clusters/orders/drills";
    let (status, _, _) = call(addr, "POST", drill, Some(&olga), Some(&olga_csrf), "{}").await;
    assert_eq!(status, 400, "only scale is offered on Kubernetes");
    console.stop().await;
    let audit = std::fs::read_to_string(root.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"user\":\"olga\"") && audit.contains("\"subcommand\":\"SCALE\""),
        "{audit}"
    );
}
