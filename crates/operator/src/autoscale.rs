//! Shard autoscaling on Kubernetes (`spec.autoscaling.shards`): when a reconcile finds the
//! cluster idle and healthy, it reads every master's `INFO memory` and `INFO stats` and lets
//! the policy of `cinnabar_cluster::autoscale` (the same as `cinnabar autoscale` on the local
//! platform) decide; a decision becomes a new `spec.shards`, which the next reconcile turns into
//! an ordinary scale through the planner.
//!
//! Decisions:
//! - **The decision writes `spec.shards`**, as the HorizontalPodAutoscaler writes a
//!   Deployment's replicas: the change is visible where people look (`kubectl get`), bumps the
//!   generation like a person's edit, and goes through exactly the path a person's scale takes
//!   (journaled, resumable). With autoscaling on, `shards` is the starting size.
//! - **Only when idle**: an operation under way (a person's scale, a rolling restart, a heal) is
//!   never interrupted or stacked; the masters' numbers mean little while slots move.
//! - **The cool-down counts from the last decision recorded in the status**
//!   (`status.autoscaling.lastScaleTime`), so an operator restart or failover does not reset it.
//! - The policy is never repeated here: this module maps the spec to an `AutoscalePolicy` and
//!   reads the masters with `cinnabar_cluster::autoscale::read_loads`, nothing more.

use std::time::Duration;

use cinnabar_cluster::autoscale::{AutoscalePolicy, Decision, ShardLoad, decide};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{AutoscalingState, ShardAutoscaling};

/// The policy `spec` asks for.
pub fn policy(spec: &ShardAutoscaling) -> AutoscalePolicy {
    AutoscalePolicy {
        min_masters: usize::from(spec.min.max(1)),
        max_masters: usize::from(spec.max.max(spec.min).max(1)),
        memory_high_percent: spec.memory_high_percent,
        memory_low_percent: spec.memory_low_percent,
        ops_per_shard: spec.ops_per_shard,
        cooldown: Duration::from_secs(u64::from(spec.cooldown_seconds)),
    }
}

/// The policy's decision for `loads`, with the cool-down counted from `previous`'s last scale.
pub fn evaluate(
    spec: &ShardAutoscaling,
    loads: &[ShardLoad],
    previous: Option<&AutoscalingState>,
    now: Timestamp,
) -> Decision {
    // The status keeps the decision's time in whole seconds (a Kubernetes `Time`), so the
    // decision may have come up to a second after what it says: count from a second later,
    // or the cool-down could end early (seen in a test: 3.8 s of a 4 s cool-down).
    let since = previous.and_then(|p| p.last_scale_time.as_ref()).map(|t| {
        let elapsed = now.duration_since(t.0);
        Duration::try_from(elapsed)
            .unwrap_or(Duration::ZERO)
            .saturating_sub(Duration::from_secs(1))
    });
    decide(&policy(spec), loads, since)
}

/// The status after a decision to scale from `from` to `to` shards because of `because`.
pub fn scaled(from: usize, to: usize, because: &str, now: Timestamp) -> AutoscalingState {
    AutoscalingState {
        last_scale_time: Some(Time(now)),
        last_scale: Some(format!("{from} -> {to} shards")),
        reason: Some(because.to_owned()),
        last_evaluation: format!("scale {from} -> {to}: {because}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn spec() -> ShardAutoscaling {
        ShardAutoscaling {
            min: 3,
            max: 5,
            memory_high_percent: 80,
            ops_per_shard: None,
            memory_low_percent: None,
            cooldown_seconds: 300,
        }
    }

    fn load(used_mib: u64) -> ShardLoad {
        ShardLoad {
            master: "10.0.0.1:6379".into(),
            used_memory: used_mib * MIB,
            maxmemory: 100 * MIB,
            ops_per_sec: 0,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_cool_down_counts_from_the_decision_in_the_status() {
        let hot = [load(90), load(85), load(85)];
        let Decision::Scale { to, because } = evaluate(&spec(), &hot, None, at(0)) else {
            panic!("past the mark it grows");
        };
        assert_eq!(to, 4);
        let state = scaled(3, to, &because, at(0));
        let hot4 = [load(90), load(85), load(85), load(85)];
        assert!(matches!(
            evaluate(&spec(), &hot4, Some(&state), at(299)),
            Decision::Stay { .. }
        ));
        // The recorded time is whole seconds: the cool-down counts from a second after it.
        assert!(matches!(
            evaluate(&spec(), &hot4, Some(&state), at(300)),
            Decision::Stay { .. }
        ));
        assert!(matches!(
            evaluate(&spec(), &hot4, Some(&state), at(301)),
            Decision::Scale { to: 5, .. }
        ));
    }
}
