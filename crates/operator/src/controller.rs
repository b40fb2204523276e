//! `cinnabar operator`: leader election, the controller over `RedisCluster`s and what they own,
//! and a small HTTP listener for `/healthz`, `/readyz` and `/metrics`.
//!
//! Only the leader reconciles. A leader that cannot renew its Lease stops (the process exits
//! with an error and Kubernetes restarts it as a follower), because two reconcilers acting on
//! one cluster is the failure leader election exists to prevent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::crd::RedisCluster;
use crate::leader::{LeaderElection, LeaseConfig};
use crate::reconcile::{Context, ReconcileError, reconcile};

/// Settings of the operator process.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Image of the proxy pods (the operator's own image: it holds the `cinnabar` binary).
    pub proxy_image: String,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub http_listen: SocketAddr,
}

/// Counters served on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that failed.
    pub errors: AtomicU64,
    /// Whether this replica leads.
    pub leader: AtomicBool,
}

impl Metrics {
    fn render(&self) -> String {
        format!(
            "# HELP cinnabar_operator_reconciles_total Reconciles run.\n\
             # TYPE cinnabar_operator_reconciles_total counter\n\
             cinnabar_operator_reconciles_total {}\n\
             # HELP cinnabar_operator_reconcile_errors_total Reconciles that failed.\n\
             # TYPE cinnabar_operator_reconcile_errors_total counter\n\
             cinnabar_operator_reconcile_errors_total {}\n\
             # HELP cinnabar_operator_leader Whether this replica leads (1) or waits (0).\n\
             # TYPE cinnabar_operator_leader gauge\n\
             cinnabar_operator_leader {}\n",
            self.reconciles.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            u8::from(self.leader.load(Ordering::Relaxed)),
        )
    }
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No usable Kubernetes configuration, or the API refused us.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// This replica lost its Lease.
    #[error("lost the leader Lease: {0}")]
    LostLease(String),
}

/// Runs the operator until the process is stopped or it loses leadership.
///
/// # Errors
/// See [`OperatorError`].
pub async fn run(options: OperatorOptions) -> Result<(), OperatorError> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let listener = TcpListener::bind(options.http_listen)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: options.http_listen,
            source,
        })?;
    tokio::spawn(serve_http(listener, Arc::clone(&metrics)));

    let election = LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &options.lease_namespace),
        LeaseConfig {
            name: "cinnabar-operator".into(),
            identity: options.identity.clone(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        },
    );
    tracing::info!(identity = %options.identity, "waiting to lead");
    election.wait_to_lead().await?;
    metrics.leader.store(true, Ordering::Relaxed);
    tracing::info!(identity = %options.identity, "leading");

    let (clusters, statefulsets, services, jobs) = match &options.namespace {
        Some(ns) => (
            Api::<RedisCluster>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<Job>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<RedisCluster>::all(client.clone()),
            Api::<StatefulSet>::all(client.clone()),
            Api::<Service>::all(client.clone()),
            Api::<Job>::all(client.clone()),
        ),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        build: crate::objects::BuildOptions {
            proxy_image: options.proxy_image.clone(),
        },
        execute: cinnabar_cluster::ExecuteOptions::default(),
        reporter: Reporter {
            controller: "cinnabar-operator".into(),
            instance: Some(options.identity.clone()),
        },
        sync_metrics: Arc::new(crate::sync::HttpSyncMetrics::default()),
        switch_retry: crate::reconcile::SWITCH_FIRST_RETRY,
    });
    let counting = Arc::clone(&metrics);
    // A RedisCluster's own changes trigger a reconcile only when its spec (generation, which
    // deletion bumps too) or finalizers change. Without this filter every status write (each
    // reconcile writes one; with a sync, a new lag reading every time) triggered the next
    // reconcile at once: on a real API server the operator reconciled several times a second
    // while an operation waited, instead of at its own requeue pace.
    let (reader, writer) = reflector::store();
    let triggers = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            PredicateConfig::default(),
        );
    let controller = Controller::for_stream(triggers, reader)
        .owns(statefulsets, watcher::Config::default())
        .owns(services, watcher::Config::default())
        // Backup and restore Jobs (the CronJob's own Jobs are not owned by the RedisCluster):
        // their end reaches the status at once, not at the next idle requeue.
        .watches(
            jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=cinnabar-operator"),
            |job: Job| {
                let cluster = job.labels().get("app.kubernetes.io/instance")?;
                Some(ObjectRef::new(cluster).within(&job.namespace()?))
            },
        )
        .run(
            move |cluster, ctx| {
                counting.reconciles.fetch_add(1, Ordering::Relaxed);
                reconcile(cluster, ctx)
            },
            {
                let metrics = Arc::clone(&metrics);
                move |_cluster: Arc<RedisCluster>, error: &ReconcileError, _ctx: Arc<Context>| {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "reconcile failed; retrying");
                    Action::requeue(Duration::from_secs(10))
                }
            },
            context,
        )
        .for_each(|_| async {});
    let renewing = async {
        loop {
            tokio::time::sleep(election.config().renew_every).await;
            match election.try_lead().await {
                Ok(true) => {}
                Ok(false) => return OperatorError::LostLease("another replica holds it".into()),
                Err(e) => return OperatorError::LostLease(e.to_string()),
            }
        }
    };
    tokio::select! {
        () = controller => Ok(()),
        lost = renewing => {
            metrics.leader.store(false, Ordering::Relaxed);
            Err(lost)
        }
    }
}

/// `/healthz` (the process answers), `/readyz` (same: followers are ready to take over) and
/// `/metrics`; one request per connection.
async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&head[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/healthz" | "/readyz" => ("200 OK", "ok\n".to_owned()),
                "/metrics" => ("200 OK", metrics.render()),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        reply
    }

    #[tokio::test]
    async fn health_and_metrics_answer_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::default());
        metrics.reconciles.fetch_add(3, Ordering::Relaxed);
        metrics.leader.store(true, Ordering::Relaxed);
        tokio::spawn(serve_http(listener, Arc::clone(&metrics)));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        assert!(get(addr, "/readyz").await.ends_with("ok\n"));
        let scraped = get(addr, "/metrics").await;
        assert!(
            scraped.contains("cinnabar_operator_reconciles_total 3\n"),
            "{scraped}"
        );
        assert!(
            scraped.contains("cinnabar_operator_leader 1\n"),
            "{scraped}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
