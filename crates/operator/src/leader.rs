//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once.
//!
//! kube-runtime has no leader election; this is the usual Lease protocol in our own words:
//! - a candidate takes the Lease when it does not exist, when it already holds it, or when the
//!   holder has not renewed it for `lease_duration`;
//! - every write carries the Lease's `resourceVersion`, so of two candidates racing for an
//!   expired Lease exactly one succeeds (the other gets a conflict and stays a follower);
//! - the leader renews every `renew_every`; a leader that fails to renew before its Lease
//!   expires must stop reconciling (the caller exits, and Kubernetes restarts it as a candidate).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// This candidate (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
}

/// A candidate for leadership.
#[derive(Clone)]
pub struct LeaderElection {
    leases: Api<Lease>,
    config: LeaseConfig,
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElection")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElection {
    /// A candidate using the Leases of `leases`' namespace.
    pub fn new(leases: Api<Lease>, config: LeaseConfig) -> Self {
        Self { leases, config }
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Takes or renews the Lease if this candidate may; returns whether it now leads.
    ///
    /// # Errors
    /// API errors other than a lost race (a conflict means another candidate won: `Ok(false)`).
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.leases.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed.0);
                age.as_secs() > i64::from(seconds)
            }
            _ => true,
        };
        if !mine && !expired && !holder.is_empty() {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(duration_secs);
        // `replace` sends the resourceVersion we read: a concurrent change makes it conflict.
        match self
            .leases
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads (trying every `renew_every`).
    ///
    /// # Errors
    /// API errors.
    pub async fn wait_to_lead(&self) -> Result<(), kube::Error> {
        loop {
            if self.try_lead().await? {
                return Ok(());
            }
            tokio::time::sleep(self.config.renew_every).await;
        }
    }
}
