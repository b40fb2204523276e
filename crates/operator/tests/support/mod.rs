//! An in-memory Kubernetes API server for the reconciler's scenario tests: it stores objects by
//! path and answers get, list (with label selectors), create, server-side apply, merge patch
//! (status included), delete and delete-collection, the way the real one does for what the
//! operator uses. There are no controllers: a test plays the kubelet (it starts real
//! `redis-server` processes and creates the Pod objects that point at them).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// The store, shared by the client's service and the test.
#[derive(Clone, Default)]
pub struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    log: Arc<Mutex<Vec<String>>>,
    next: Arc<Mutex<u64>>,
}

/// `(collection path, name, status subresource)` of a request path.
fn split(path: &str) -> (String, Option<String>, bool) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // api/v1/namespaces/NS/PLURAL[/NAME[/status]] or apis/G/V/namespaces/NS/PLURAL[/NAME[/status]]
    let base = if parts.first() == Some(&"api") { 5 } else { 6 };
    let collection = format!("/{}", parts[..base.min(parts.len())].join("/"));
    let name = parts.get(base).map(|s| (*s).to_owned());
    let status = parts.get(base + 1) == Some(&"status");
    (collection, name, status)
}

fn selector_matches(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        object["metadata"]["labels"][key].as_str() == Some(value)
    })
}

/// Keys of the objects in `collection` that the query's `labelSelector` matches.
fn selected(objects: &BTreeMap<String, Value>, collection: &str, query: &str) -> Vec<String> {
    let selector = decode_query(query, "labelSelector").unwrap_or_default();
    objects
        .iter()
        .filter(|(k, v)| {
            k.rsplit_once('/').map(|(c, _)| c) == Some(collection) && selector_matches(v, &selector)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

fn decode_query(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2f", "/")
                .replace("%3d", "=")
                .replace("%2c", ",")
        })
    })
}

impl FakeApi {
    /// A client talking to this store in namespace `namespace`.
    pub fn client(&self, namespace: &str) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        Client::new(service, namespace)
    }

    /// The object at `path` (`/api/v1/namespaces/ns/pods/name`).
    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    /// Stores `object` at `path` (creating or replacing it), as a controller would.
    pub fn put(&self, path: &str, mut object: Value) {
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(self.uid());
        }
        self.objects.lock().unwrap().insert(path.to_owned(), object);
    }

    /// Removes the object at `path`.
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().remove(path)
    }

    /// Paths of stored objects under `prefix`.
    pub fn paths(&self, prefix: &str) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Every request so far, as `METHOD path`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn uid(&self) -> String {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        format!("uid-{next}")
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.log.lock().unwrap().push(format!("{method} {path}"));
        let (code, reply) = self.answer(&method, &path, &query, &content_type, body);
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap()
    }

    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (u16, Value) {
        let (collection, name, subresource) = split(path);
        let mut objects = self.objects.lock().unwrap();
        match (method.as_str(), name) {
            ("GET", None) => {
                let items: Vec<Value> = selected(&objects, &collection, query)
                    .into_iter()
                    .map(|k| objects[&k].clone())
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", Some(name)) => match objects.get(&format!("{collection}/{name}")) {
                Some(object) => (200, object.clone()),
                None => (404, status(404, "NotFound")),
            },
            ("POST", None) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("unnamed")
                    .to_owned();
                let key = format!("{collection}/{name}");
                if objects.contains_key(&key) && !collection.ends_with("/events") {
                    return (409, status(409, "AlreadyExists"));
                }
                let mut object = body;
                drop(objects);
                object["metadata"]["uid"] = json!(self.uid());
                object["metadata"]["resourceVersion"] = json!("1");
                // Like the API server, a Secret's stringData is stored as base64 data.
                if let Some(strings) = object["stringData"].as_object().cloned() {
                    for (key, value) in strings {
                        object["data"][key] =
                            json!(base64(value.as_str().unwrap_or_default().as_bytes()));
                    }
                }
                self.objects.lock().unwrap().insert(key, object.clone());
                (201, object)
            }
            ("PATCH", Some(name)) => {
                let key = format!("{collection}/{name}");
                let apply = content_type.contains("apply-patch");
                match objects.get_mut(&key) {
                    Some(existing) if subresource => {
                        merge(&mut existing["status"], &body["status"]);
                        (200, existing.clone())
                    }
                    Some(existing) if apply => {
                        let kept_status = existing.get("status").cloned();
                        let uid = existing["metadata"]["uid"].clone();
                        let mut object = body;
                        object["metadata"]["uid"] = uid;
                        if let Some(status) = kept_status {
                            object["status"] = status;
                        }
                        *existing = object.clone();
                        (200, object)
                    }
                    Some(existing) => {
                        merge(existing, &body);
                        (200, existing.clone())
                    }
                    None if apply => {
                        let mut object = body;
                        drop(objects);
                        object["metadata"]["uid"] = json!(self.uid());
                        self.objects.lock().unwrap().insert(key, object.clone());
                        (201, object)
                    }
                    None => (404, status(404, "NotFound")),
                }
            }
            ("PUT", Some(name)) => {
                objects.insert(format!("{collection}/{name}"), body.clone());
                (200, body)
            }
            ("DELETE", Some(name)) => match objects.remove(&format!("{collection}/{name}")) {
                Some(object) => (200, object),
                None => (404, status(404, "NotFound")),
            },
            ("DELETE", None) => {
                let items: Vec<Value> = selected(&objects, &collection, query)
                    .iter()
                    .filter_map(|k| objects.remove(k))
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}),
                )
            }
            _ => (405, status(405, "MethodNotAllowed")),
        }
    }
}

/// A ready Redis pod of cluster `cluster`, shard `shard`, ordinal `ordinal`, whose Redis listens
/// at `ip:port` on Kubernetes node `node`, made from StatefulSet revision `revision`.
pub fn redis_pod(
    cluster: &str,
    shard: u32,
    ordinal: u32,
    ip: &str,
    port: u16,
    node: &str,
    revision: &str,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{cluster}-shard-{shard}-{ordinal}"),
            "namespace": "shop",
            "labels": {
                "app.kubernetes.io/instance": cluster, "app.kubernetes.io/component": "redis",
                "cinnabar.io/shard": shard.to_string(), "controller-revision-hash": revision,
            },
        },
        "spec": {"nodeName": node, "containers": [{"name": "redis", "ports": [{"name": "redis", "containerPort": port}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// The reconciler's context for a scenario test: the fake API's client in namespace `shop`,
/// short timeouts towards the test's real nodes, and `sync_metrics` for the sync pods.
pub fn test_context(
    api: &FakeApi,
    sync_metrics: Arc<dyn cinnabar_operator::sync::SyncMetrics>,
) -> Arc<cinnabar_operator::reconcile::Context> {
    Arc::new(cinnabar_operator::reconcile::Context {
        client: api.client("shop"),
        build: cinnabar_operator::objects::BuildOptions {
            proxy_image: "cinnabar:test".into(),
        },
        execute: cinnabar_cluster::ExecuteOptions {
            timeouts: cinnabar_cluster::Timeouts {
                connect: std::time::Duration::from_millis(500),
                response: std::time::Duration::from_secs(2),
            },
            ..cinnabar_cluster::ExecuteOptions::default()
        },
        reporter: kube::runtime::events::Reporter {
            controller: "cinnabar-operator".into(),
            instance: Some("test".into()),
        },
        sync_metrics,
        switch_retry: std::time::Duration::from_millis(100),
    })
}

/// Sync metrics for tests without a sync: every fetch fails.
pub struct NoMetrics;

impl cinnabar_operator::sync::SyncMetrics for NoMetrics {
    fn fetch<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, Result<String, cinnabar_operator::sync::MetricsError>> {
        Box::pin(async move {
            Err(cinnabar_operator::sync::MetricsError::Status {
                endpoint: format!("{host}:{port}"),
                status_line: "no sync in this test".into(),
            })
        })
    }
}

/// The RedisCluster stored at `path`, as the reconciler receives it.
pub fn resource(api: &FakeApi, path: &str) -> Arc<cinnabar_operator::RedisCluster> {
    Arc::new(serde_json::from_value(api.get(path).expect("the RedisCluster exists")).unwrap())
}
