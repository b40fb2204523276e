//! When a cluster should grow or shrink by itself: a pure policy from what each master reports
//! (memory used against `maxmemory`, operations per second) to a number of shards. The policy
//! decides *when* and *to how many*; the planner (`operate`) still decides *how*, so an
//! autoscaled change is an ordinary scale, journaled and resumable like a person's.
//!
//! The rules, in the order they are applied:
//! - **Memory high-water mark** (always on): when any master uses at least `memory_high_percent`
//!   of its `maxmemory`, grow to the number of shards that holds all the data below the mark
//!   once slots are spread evenly (`ceil(total used / (maxmemory × mark))`), and at least one
//!   more than now (a hot shard over a cool average still needs relief).
//! - **Operations per shard** (optional): grow to `ceil(total ops/s / ops_per_shard)`.
//! - **Memory low-water mark** (optional, off by default, as shrinking moves data for a saving):
//!   when every master is below it, shrink by one shard, and only if the data then still fits
//!   below the high-water mark (so a shrink never triggers the next grow).
//! - Always within `min_masters..=max_masters`, and nothing within `cooldown` of the last change
//!   (5 minutes by default, as the seed team's proxy autoscaler waits).

use std::time::Duration;

use crate::{ClusterError, Credentials, NodeClient, Observed, Timeouts};

/// What the autoscaler aims for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscalePolicy {
    /// Never fewer shards.
    pub min_masters: usize,
    /// Never more shards.
    pub max_masters: usize,
    /// Grow when any master uses at least this share of its `maxmemory`, in percent (1–100).
    pub memory_high_percent: u8,
    /// Shrink when every master uses less than this, in percent; `None`: never shrink.
    pub memory_low_percent: Option<u8>,
    /// Grow when the shards together serve more than this many operations per second each.
    pub ops_per_shard: Option<u64>,
    /// No decision within this long of the last change.
    pub cooldown: Duration,
}

impl Default for AutoscalePolicy {
    fn default() -> Self {
        Self {
            min_masters: 1,
            max_masters: 16,
            memory_high_percent: 80,
            memory_low_percent: None,
            ops_per_shard: None,
            cooldown: Duration::from_secs(300),
        }
    }
}

/// What one master reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLoad {
    /// The master, `host:port`.
    pub master: String,
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes (0: unlimited).
    pub maxmemory: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
}

/// What every master serving slots reports now (`INFO memory` and `INFO stats`); a master
/// with no slots (a spare) is not a shard the policy counts.
///
/// # Errors
/// A master that does not answer: no decision is made on part of the cluster.
pub async fn read_loads(
    observed: &Observed,
    timeouts: Timeouts,
    credentials: Option<&Credentials>,
) -> Result<Vec<ShardLoad>, ClusterError> {
    let mut loads = Vec::new();
    for shard in observed.shards().into_iter().filter(|s| s.slot_count() > 0) {
        let mut client = NodeClient::connect_as(&shard.master, timeouts, credentials).await?;
        let memory = client.info("memory").await?;
        let stats = client.info("stats").await?;
        loads.push(ShardLoad {
            master: shard.master.to_string(),
            used_memory: memory.get_u64("used_memory").unwrap_or(0),
            maxmemory: memory.get_u64("maxmemory").unwrap_or(0),
            ops_per_sec: stats.get_u64("instantaneous_ops_per_sec").unwrap_or(0),
        });
    }
    Ok(loads)
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Scale to `to` shards, because of `because` (the metric and its value).
    Scale {
        /// Shards wanted.
        to: usize,
        /// The metric that decided it, for events and status.
        because: String,
    },
    /// Nothing to do, with the reason.
    Stay {
        /// Why not (within the marks, at a bound, cooling down, nothing measurable).
        because: String,
    },
}

/// The decision for `shards` (one entry per master) under `policy`, `since_change` after the
/// last change (`None`: none known).
pub fn decide(
    policy: &AutoscalePolicy,
    shards: &[ShardLoad],
    since_change: Option<Duration>,
) -> Decision {
    let stay = |because: String| Decision::Stay { because };
    let current = shards.len();
    if current == 0 {
        return stay("no master reported".into());
    }
    if let Some(since) = since_change
        && since < policy.cooldown
    {
        return stay(format!(
            "cooling down: the last change was {} s ago, the cool-down is {} s",
            since.as_secs(),
            policy.cooldown.as_secs()
        ));
    }
    let high = f64::from(policy.memory_high_percent.clamp(1, 100)) / 100.0;
    let limited: Vec<&ShardLoad> = shards.iter().filter(|s| s.maxmemory > 0).collect();
    let total_used: u64 = shards.iter().map(|s| s.used_memory).sum();
    let usage = |s: &ShardLoad| s.used_memory as f64 / s.maxmemory as f64;
    let hottest = limited
        .iter()
        .copied()
        .max_by(|a, b| usage(a).total_cmp(&usage(b)));
    // Shards that hold all the data below the mark, slots spread evenly.
    let per_shard_limit = limited.iter().map(|s| s.maxmemory).min().unwrap_or(0) as f64 * high;
    let fit = |used: u64| -> usize {
        if per_shard_limit <= 0.0 {
            0
        } else {
            (used as f64 / per_shard_limit).ceil() as usize
        }
    };
    let mut wanted = current;
    let mut reasons = Vec::new();
    if let Some(hot) = hottest
        && usage(hot) >= high
    {
        let by_memory = fit(total_used).max(current + 1);
        wanted = wanted.max(by_memory);
        reasons.push(format!(
            "memory: {} uses {:.0}% of maxmemory (high-water mark {}%), {} bytes in all",
            hot.master,
            usage(hot) * 100.0,
            policy.memory_high_percent,
            total_used
        ));
    }
    let total_ops: u64 = shards.iter().map(|s| s.ops_per_sec).sum();
    if let Some(limit) = policy.ops_per_shard.filter(|l| *l > 0) {
        let by_ops = total_ops.div_ceil(limit) as usize;
        if by_ops > current {
            wanted = wanted.max(by_ops);
            reasons.push(format!(
                "ops: {total_ops} ops/s over {current} shards (at most {limit} per shard)"
            ));
        }
    }
    if wanted > current {
        let to = wanted.min(policy.max_masters);
        if to <= current {
            return stay(format!(
                "at the maximum of {} shards, though {}",
                policy.max_masters,
                reasons.join("; ")
            ));
        }
        return Decision::Scale {
            to,
            because: reasons.join("; "),
        };
    }
    if let Some(low) = policy.memory_low_percent {
        let low = f64::from(low) / 100.0;
        let all_cool = !limited.is_empty() && limited.iter().all(|s| usage(s) < low);
        let ops_fit = policy
            .ops_per_shard
            .is_none_or(|limit| total_ops.div_ceil(limit.max(1)) < current as u64);
        if all_cool && ops_fit && current > policy.min_masters && fit(total_used) < current {
            return Decision::Scale {
                to: current - 1,
                because: format!(
                    "memory: every master below the low-water mark of {}% ({} bytes in all fit \
                     {} shards below the high-water mark)",
                    (low * 100.0).round(),
                    total_used,
                    current - 1
                ),
            };
        }
    }
    if current < policy.min_masters {
        return Decision::Scale {
            to: policy.min_masters,
            because: format!("fewer than the minimum of {} shards", policy.min_masters),
        };
    }
    if limited.is_empty() && policy.ops_per_shard.is_none() {
        return stay("no master has a maxmemory, so memory use cannot be judged".into());
    }
    stay(match hottest {
        Some(hot) => format!(
            "within the marks: the fullest master ({}) uses {:.0}% of maxmemory",
            hot.master,
            usage(hot) * 100.0
        ),
        None => format!("within the marks: {total_ops} ops/s over {current} shards"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn shards(used_mib: &[u64]) -> Vec<ShardLoad> {
        used_mib
            .iter()
            .enumerate()
            .map(|(i, used)| ShardLoad {
                master: format!("10.0.0.{i}:6379"),
                used_memory: used * MIB,
                maxmemory: 100 * MIB,
                ops_per_sec: 1000,
            })
            .collect()
    }

    fn policy() -> AutoscalePolicy {
        AutoscalePolicy {
            max_masters: 5,
            ..AutoscalePolicy::default()
        }
    }

    #[test]
    fn past_the_mark_it_grows_to_what_holds_the_data_and_no_more() {
        // 3 × 85 MiB = 255 MiB; 80 MiB per shard holds it in 4.
        let decision = decide(&policy(), &shards(&[85, 85, 85]), None);
        assert!(
            matches!(decision, Decision::Scale { to: 4, .. }),
            "{decision:?}"
        );
        // One hot shard over a cool average: one more shard.
        let decision = decide(&policy(), &shards(&[90, 10, 10]), None);
        assert!(
            matches!(decision, Decision::Scale { to: 4, .. }),
            "{decision:?}"
        );
        // Far past the mark: capped by the maximum.
        let decision = decide(&policy(), &shards(&[99, 99, 99, 99]), None);
        assert!(
            matches!(decision, Decision::Scale { to: 5, .. }),
            "{decision:?}"
        );
        let decision = decide(&policy(), &shards(&[99, 99, 99, 99, 99]), None);
        assert!(
            matches!(&decision, Decision::Stay { because } if because.contains("maximum")),
            "{decision:?}"
        );
    }

    #[test]
    fn below_the_mark_or_cooling_down_it_stays() {
        let decision = decide(&policy(), &shards(&[70, 60, 79]), None);
        assert!(matches!(decision, Decision::Stay { .. }), "{decision:?}");
        let decision = decide(
            &policy(),
            &shards(&[95, 95, 95]),
            Some(Duration::from_secs(60)),
        );
        assert!(
            matches!(&decision, Decision::Stay { because } if because.contains("cooling down")),
            "{decision:?}"
        );
        let decision = decide(
            &policy(),
            &shards(&[95, 95, 95]),
            Some(Duration::from_secs(301)),
        );
        assert!(matches!(decision, Decision::Scale { .. }), "{decision:?}");
    }

    #[test]
    fn operations_and_the_low_water_mark_count_when_asked_for() {
        let mut busy = shards(&[10, 10]);
        busy.iter_mut().for_each(|s| s.ops_per_sec = 30_000);
        let with_ops = AutoscalePolicy {
            ops_per_shard: Some(20_000),
            ..policy()
        };
        let decision = decide(&with_ops, &busy, None);
        assert!(
            matches!(decision, Decision::Scale { to: 3, .. }),
            "{decision:?}"
        );
        // Shrinking is off unless a low-water mark is set.
        assert!(matches!(
            decide(&policy(), &shards(&[5, 5, 5]), None),
            Decision::Stay { .. }
        ));
        let shrinking = AutoscalePolicy {
            memory_low_percent: Some(30),
            ..policy()
        };
        let decision = decide(&shrinking, &shards(&[5, 5, 5]), None);
        assert!(
            matches!(decision, Decision::Scale { to: 2, .. }),
            "{decision:?}"
        );
        // Not when the data would not fit below the high-water mark afterwards: 165 MiB
        // needs more than 2 × 80 MiB.
        let eager = AutoscalePolicy {
            memory_low_percent: Some(60),
            ..policy()
        };
        let decision = decide(&eager, &shards(&[55, 55, 55]), None);
        assert!(matches!(decision, Decision::Stay { .. }), "{decision:?}");
        // Never below the minimum.
        let at_min = AutoscalePolicy {
            min_masters: 3,
            ..shrinking
        };
        assert!(matches!(
            decide(&at_min, &shards(&[5, 5, 5]), None),
            Decision::Stay { .. }
        ));
    }
}
