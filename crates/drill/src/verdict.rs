//! The verdict: did the cluster survive the failure the way Redis Cluster promises?
//!
//! Decisions (a pure function, so they are tested and stated once):
//! - **fail** when no replica took over, the failed node did not come back as a replica, the
//!   cluster is not healthy at the end, an acknowledged write was lost outside the failover
//!   window (below), or client errors exceed a tolerance the caller set;
//! - **pass within the replication window** when everything recovered and every lost write is
//!   inside the failover window: its key belongs to the failed shard and it was acknowledged
//!   from one second before the fault until the failed node rejoined. Redis replicates
//!   asynchronously: a master acknowledges a write before its replica has it, and a master
//!   frozen by a pause may still acknowledge requests queued on its sockets when it resumes,
//!   before it learns it was replaced. Those losses are Redis's documented behaviour, so they
//!   are counted and named rather than hidden or treated as our bug;
//! - **pass** when everything recovered and nothing was lost.
//!
//! Client-visible errors are reported apart and decide the verdict only against a tolerance the
//! caller chose: how many errors a failover may cost is the application's call, not ours.

use std::time::Duration;

use serde::Serialize;

/// How early before the fault a lost write may have been acknowledged and still count as lost
/// to asynchronous replication. Replicas on a healthy link are milliseconds behind; a second is
/// generous, and anything older means replication was broken, not merely asynchronous.
pub const REPLICATION_WINDOW_BEFORE_FAULT: Duration = Duration::from_secs(1);

/// The drill's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Recovered, nothing lost (and client errors within the tolerance, if one was set).
    Pass,
    /// Recovered; some acknowledged writes were lost, all inside the failover window.
    PassWithinReplicationWindow,
    /// Something the cluster promises did not happen.
    Fail,
}

impl Verdict {
    /// Whether the drill passed (exit code 0).
    pub fn passed(self) -> bool {
        !matches!(self, Self::Fail)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::PassWithinReplicationWindow => {
                "PASS (writes lost within Redis's asynchronous replication window)"
            }
            Self::Fail => "FAIL",
        })
    }
}

/// What the verdict is judged on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    /// A replica of the failed shard took over its slots.
    pub promoted: bool,
    /// The failed node came back as a replica.
    pub rejoined: bool,
    /// The final check found nothing wrong.
    pub healthy_at_end: bool,
    /// Acknowledged writes missing or changed at the end.
    pub lost_writes: u64,
    /// Of those, how many fall outside the failover window.
    pub lost_outside_window: u64,
    /// Failed client requests.
    pub client_errors: u64,
    /// The most client errors that still pass; `None` = errors are reported, never judged.
    pub max_client_errors: Option<u64>,
}

/// The verdict and the reasons for it, one sentence each.
pub fn judge(evidence: &Evidence) -> (Verdict, Vec<String>) {
    let mut failures = Vec::new();
    if !evidence.promoted {
        failures.push("no replica took over the failed master's slots".to_owned());
    }
    if !evidence.rejoined {
        failures.push("the failed node did not rejoin as a replica".to_owned());
    }
    if !evidence.healthy_at_end {
        failures.push("the cluster was not healthy at the end".to_owned());
    }
    if evidence.lost_outside_window > 0 {
        failures.push(format!(
            "{} acknowledged write(s) were lost outside the failover window",
            evidence.lost_outside_window
        ));
    }
    if let Some(max) = evidence.max_client_errors
        && evidence.client_errors > max
    {
        failures.push(format!(
            "{} client-visible error(s), more than the {max} tolerated",
            evidence.client_errors
        ));
    }
    if !failures.is_empty() {
        return (Verdict::Fail, failures);
    }
    let recovered =
        "a replica took over, the failed node rejoined as a replica and the cluster is healthy";
    if evidence.lost_writes == 0 {
        return (
            Verdict::Pass,
            vec![
                recovered.to_owned(),
                "no acknowledged write was lost".to_owned(),
            ],
        );
    }
    (
        Verdict::PassWithinReplicationWindow,
        vec![
            recovered.to_owned(),
            format!(
                "{} acknowledged write(s) were lost, all to the failed shard within the failover \
                 window: Redis's asynchronous replication window",
                evidence.lost_writes
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovered() -> Evidence {
        Evidence {
            promoted: true,
            rejoined: true,
            healthy_at_end: true,
            ..Evidence::default()
        }
    }

    #[test]
    fn a_clean_recovery_passes() {
        let (verdict, reasons) = judge(&recovered());
        assert_eq!(verdict, Verdict::Pass);
        assert!(reasons.iter().any(|r| r.contains("no acknowledged write")));
    }

    #[test]
    fn losses_inside_the_window_pass_but_are_named() {
        let (verdict, reasons) = judge(&Evidence {
            lost_writes: 3,
            ..recovered()
        });
        assert_eq!(verdict, Verdict::PassWithinReplicationWindow);
        assert!(verdict.passed());
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("3 acknowledged write(s)"))
        );
    }

    #[test]
    fn a_loss_outside_the_window_fails() {
        let (verdict, reasons) = judge(&Evidence {
            lost_writes: 3,
            lost_outside_window: 1,
            ..recovered()
        });
        assert_eq!(verdict, Verdict::Fail);
        assert!(
            reasons[0].contains("outside the failover window"),
            "{reasons:?}"
        );
    }

    #[test]
    fn no_takeover_or_no_rejoin_or_an_unhealthy_end_fails_with_each_reason() {
        let (verdict, reasons) = judge(&Evidence::default());
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
    }

    #[test]
    fn client_errors_only_fail_against_a_chosen_tolerance() {
        let noisy = Evidence {
            client_errors: 5,
            ..recovered()
        };
        assert_eq!(judge(&noisy).0, Verdict::Pass, "reported, not judged");
        let tolerant = Evidence {
            max_client_errors: Some(5),
            ..noisy
        };
        assert_eq!(judge(&tolerant).0, Verdict::Pass);
        let strict = Evidence {
            max_client_errors: Some(0),
            ..noisy
        };
        assert_eq!(judge(&strict).0, Verdict::Fail);
    }
}
