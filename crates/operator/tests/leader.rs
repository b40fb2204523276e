//! Leader election against a mock API server: a free Lease is taken, a fresh one held by
//! another replica is left alone, an expired one is taken over, and a lost race is no error.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cinnabar_operator::leader::{LeaderElection, LeaseConfig};
use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

async fn answer(handle: &mut Handle, method: Method, status: u16, body: Value) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.method(), method, "{}", request.uri());
    assert!(
        request.uri().path().ends_with("/namespaces/ops/leases")
            || request.uri().path().ends_with("/leases/cinnabar-operator"),
        "{}",
        request.uri()
    );
    let sent = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    serde_json::from_slice(&sent).unwrap_or(Value::Null)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"})
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "cinnabar-operator", "namespace": "ops", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 2}})
}

fn candidate(me: &str) -> (LeaderElection, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let leases: Api<Lease> = Api::namespaced(Client::new(service, "ops"), "ops");
    let config = LeaseConfig {
        name: "cinnabar-operator".into(),
        identity: me.into(),
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    (LeaderElection::new(leases, config), handle)
}

#[tokio::test]
async fn a_missing_lease_is_created_and_held() {
    let (election, mut handle) = candidate("pod-a");
    let server = tokio::spawn(async move {
        answer(&mut handle, Method::GET, 404, not_found()).await;
        let created = answer(
            &mut handle,
            Method::POST,
            201,
            lease("pod-a", "2026-11-22T10:00:00Z"),
        )
        .await;
        assert_eq!(created["spec"]["holderIdentity"], "pod-a");
    });
    assert!(election.try_lead().await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn a_fresh_lease_of_another_replica_is_left_alone() {
    let (election, mut handle) = candidate("pod-b");
    let fresh = k8s_openapi::jiff::Timestamp::now().to_string();
    let server = tokio::spawn(async move {
        answer(&mut handle, Method::GET, 200, lease("pod-a", &fresh)).await;
    });
    assert!(!election.try_lead().await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_resource_version_and_a_lost_race_is_no_error() {
    let (election, mut handle) = candidate("pod-b");
    let server = tokio::spawn(async move {
        answer(
            &mut handle,
            Method::GET,
            200,
            lease("pod-a", "2020-01-01T00:00:00Z"),
        )
        .await;
        let sent = answer(
            &mut handle,
            Method::PUT,
            200,
            lease("pod-b", "2026-11-22T10:00:00Z"),
        )
        .await;
        assert_eq!(
            sent["metadata"]["resourceVersion"], "7",
            "the write is conditional"
        );
        assert_eq!(sent["spec"]["holderIdentity"], "pod-b");
        assert_eq!(sent["spec"]["leaseTransitions"], 3);
        // Another replica got there first.
        answer(
            &mut handle,
            Method::GET,
            200,
            lease("pod-a", "2020-01-01T00:00:00Z"),
        )
        .await;
        answer(&mut handle, Method::PUT, 409, conflict()).await;
    });
    assert!(election.try_lead().await.unwrap());
    assert!(!election.try_lead().await.unwrap());
    server.await.unwrap();
}
