//! Command tips (`request_policy:all_shards`, `response_policy:agg_sum`,
//! `nondeterministic_output` …), parsed once by the generator into plain enums.
//!
//! Must never parse tip strings at run time: the proxy reads the enums; the raw strings are kept
//! only to answer `COMMAND INFO` byte for byte.

/// Where a cluster client sends a command that has no keys, or whose keys span slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RequestPolicy {
    /// No tip: route by key slot, or to any node when keyless.
    #[default]
    Default,
    /// `request_policy:all_nodes`: every node, masters and replicas.
    AllNodes,
    /// `request_policy:all_shards`: every master.
    AllShards,
    /// `request_policy:multi_shard`: split the keys by slot, one request per shard.
    MultiShard,
    /// `request_policy:special`: needs command-specific handling.
    Special,
}

/// How a cluster client combines the replies of a fanned-out command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResponsePolicy {
    /// No tip: the default for the request policy (arrays concatenated, else one reply).
    #[default]
    Default,
    /// `response_policy:one_succeeded`: the first success; error only if all fail.
    OneSucceeded,
    /// `response_policy:all_succeeded`: a success only if all succeed.
    AllSucceeded,
    /// `response_policy:agg_logical_and`: logical AND of integer replies.
    AggLogicalAnd,
    /// `response_policy:agg_logical_or`: logical OR of integer replies.
    AggLogicalOr,
    /// `response_policy:agg_min`: the minimum of integer replies.
    AggMin,
    /// `response_policy:agg_max`: the maximum of integer replies.
    AggMax,
    /// `response_policy:agg_sum`: the sum of integer replies.
    AggSum,
    /// `response_policy:special`: needs command-specific handling.
    Special,
}

/// All tips of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tips {
    /// The tips exactly as the server lists them.
    pub raw: &'static [&'static str],
    /// The request policy (`request_policy:*`).
    pub request_policy: RequestPolicy,
    /// The response policy (`response_policy:*`).
    pub response_policy: ResponsePolicy,
    /// `nondeterministic_output`: the reply may differ between runs on identical data.
    pub nondeterministic_output: bool,
    /// `nondeterministic_output_order`: the reply is a set whose order may differ.
    pub nondeterministic_output_order: bool,
}

impl Tips {
    /// No tips.
    pub const NONE: Tips = Tips {
        raw: &[],
        request_policy: RequestPolicy::Default,
        response_policy: ResponsePolicy::Default,
        nondeterministic_output: false,
        nondeterministic_output_order: false,
    };

    /// Parses the tips a server reports; `None` when one is unknown (so the generator refuses
    /// to drop it silently).
    pub fn parse(raw: &'static [&'static str]) -> Option<Tips> {
        let mut tips = Tips { raw, ..Tips::NONE };
        for tip in raw {
            if let Some(policy) = tip.strip_prefix("request_policy:") {
                tips.request_policy = match policy {
                    "all_nodes" => RequestPolicy::AllNodes,
                    "all_shards" => RequestPolicy::AllShards,
                    "multi_shard" => RequestPolicy::MultiShard,
                    "special" => RequestPolicy::Special,
                    _ => return None,
                };
            } else if let Some(policy) = tip.strip_prefix("response_policy:") {
                tips.response_policy = match policy {
                    "one_succeeded" => ResponsePolicy::OneSucceeded,
                    "all_succeeded" => ResponsePolicy::AllSucceeded,
                    "agg_logical_and" => ResponsePolicy::AggLogicalAnd,
                    "agg_logical_or" => ResponsePolicy::AggLogicalOr,
                    "agg_min" => ResponsePolicy::AggMin,
                    "agg_max" => ResponsePolicy::AggMax,
                    "agg_sum" => ResponsePolicy::AggSum,
                    "special" => ResponsePolicy::Special,
                    _ => return None,
                };
            } else if *tip == "nondeterministic_output" {
                tips.nondeterministic_output = true;
            } else if *tip == "nondeterministic_output_order" {
                tips.nondeterministic_output_order = true;
            } else {
                return None;
            }
        }
        Some(tips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tip_kind_parses_and_unknown_tips_are_refused() {
        let tips = Tips::parse(&[
            "request_policy:all_shards",
            "response_policy:agg_sum",
            "nondeterministic_output_order",
        ])
        .expect("known tips");
        assert_eq!(tips.request_policy, RequestPolicy::AllShards);
        assert_eq!(tips.response_policy, ResponsePolicy::AggSum);
        assert!(tips.nondeterministic_output_order);
        assert!(!tips.nondeterministic_output);
        assert_eq!(Tips::parse(&["request_policy:sometimes"]), None);
        assert_eq!(Tips::parse(&["surprise"]), None);
        assert_eq!(Tips::parse(&[]), Some(Tips::NONE));
    }
}
