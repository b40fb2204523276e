//! Which cluster a key belongs to, for an endpoint in front of several (`[[clusters]]`): the
//! longest configured prefix the key starts with, else the default cluster. A key's *virtual
//! slot* (see `slotmap`) is its cluster's number above its hash slot.
//!
//! On the hot path for every key: with one cluster it is a length check and the hash slot,
//! with several a few prefix comparisons (longest first, so the first match is the answer).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{ClusterConfig, ProxyConfig};
use crate::slotmap::{MAX_CLUSTERS, virtual_slot};

/// Key prefix → cluster.
#[derive(Debug, Default)]
pub(crate) struct KeyRouter {
    /// Longest prefix first.
    prefixes: Vec<(Box<[u8]>, usize)>,
    default: usize,
    /// A Sentinel group is behind the endpoint: every key is in slot 0, so no request is
    /// ever CROSSSLOT or split, and transactions span any keys (the group owns every slot).
    /// Cleared once, by an online switch to a cluster, while every request is held (so no
    /// request sees both answers); never set again.
    single: AtomicBool,
}

impl KeyRouter {
    /// The router for `config`'s clusters (none: every key in the one cluster).
    ///
    /// # Errors
    /// A sentence naming what is wrong: too many clusters, names used twice, no default
    /// cluster or more than one, a prefix owned twice, a cluster without seeds.
    pub(crate) fn new(config: &ProxyConfig) -> Result<Self, String> {
        let clusters = &config.clusters;
        if let Some(group) = &config.group {
            if !clusters.is_empty() {
                return Err("a group backend and [[clusters]] cannot be combined".into());
            }
            if group.sentinels.is_empty() {
                return Err(format!("group {:?} has no sentinels", group.name));
            }
            return Ok(Self {
                single: AtomicBool::new(true),
                ..Self::default()
            });
        }
        if clusters.is_empty() {
            return Ok(Self::default());
        }
        if clusters.len() > MAX_CLUSTERS {
            return Err(format!(
                "{} [[clusters]] are configured; one endpoint serves at most {MAX_CLUSTERS}",
                clusters.len()
            ));
        }
        let mut prefixes: Vec<(Box<[u8]>, usize)> = Vec::new();
        let mut defaults = Vec::new();
        for (i, cluster) in clusters.iter().enumerate() {
            check(cluster, &clusters[..i])?;
            if cluster.prefixes.is_empty() {
                defaults.push(cluster.name.as_str());
            }
            for prefix in &cluster.prefixes {
                if prefix.is_empty() {
                    return Err(format!(
                        "cluster {:?} has an empty prefix; leave `prefixes` out for the default \
                         cluster",
                        cluster.name
                    ));
                }
                if let Some((_, other)) = prefixes.iter().find(|(p, _)| **p == *prefix.as_bytes()) {
                    return Err(format!(
                        "prefix {prefix:?} is owned by both cluster {:?} and cluster {:?}",
                        clusters[*other].name, cluster.name
                    ));
                }
                prefixes.push((prefix.as_bytes().into(), i));
            }
        }
        let default = match defaults.as_slice() {
            [_] => clusters
                .iter()
                .position(|c| c.prefixes.is_empty())
                .unwrap_or(0),
            [] => {
                return Err(
                    "no default cluster: exactly one of [[clusters]] must have no `prefixes` \
                     (it gets every key no prefix matches)"
                        .into(),
                );
            }
            many => {
                return Err(format!(
                    "{} clusters have no `prefixes` ({}); exactly one may be the default",
                    many.len(),
                    many.join(", ")
                ));
            }
        };
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(Self {
            prefixes,
            default,
            single: AtomicBool::new(false),
        })
    }

    /// The cluster `key` belongs to.
    #[inline]
    pub(crate) fn cluster_of(&self, key: &[u8]) -> usize {
        self.prefixes
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map_or(self.default, |(_, cluster)| *cluster)
    }

    /// Whether every key is in one slot (a Sentinel group behind the endpoint).
    pub(crate) fn is_single(&self) -> bool {
        self.single.load(Ordering::Relaxed)
    }

    /// From now on keys route by hash slot: the group behind the endpoint was switched to a
    /// cluster. Called with every request held; the gate's opening publishes it to workers.
    pub(crate) fn route_by_slot(&self) {
        self.single.store(false, Ordering::Relaxed);
    }

    /// `key`'s virtual slot.
    #[inline]
    pub(crate) fn slot(&self, key: &[u8]) -> u16 {
        if self.is_single() {
            return 0;
        }
        let slot = cinnabar_commands::key_slot(key);
        if self.prefixes.is_empty() {
            return virtual_slot(self.default, slot);
        }
        virtual_slot(self.cluster_of(key), slot)
    }
}

fn check(cluster: &ClusterConfig, before: &[ClusterConfig]) -> Result<(), String> {
    if cluster.name.is_empty() {
        return Err("a [[clusters]] entry has no name".into());
    }
    if before.iter().any(|c| c.name == cluster.name) {
        return Err(format!("two [[clusters]] are named {:?}", cluster.name));
    }
    if cluster.seeds.is_empty() {
        return Err(format!("cluster {:?} has no seeds", cluster.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, prefixes: &[&str]) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            seeds: vec![cinnabar_cluster::NodeAddr::new("127.0.0.1", 7000)],
            credentials: None,
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn router(clusters: Vec<ClusterConfig>) -> Result<KeyRouter, String> {
        let mut config = ProxyConfig::new(([127, 0, 0, 1], 0).into(), Vec::new());
        config.clusters = clusters;
        KeyRouter::new(&config)
    }

    #[test]
    fn the_longest_prefix_wins_and_the_rest_goes_to_the_default() {
        let router = router(vec![
            cluster("main", &[]),
            cluster("orders", &["orders:"]),
            cluster("archive", &["orders:archive:"]),
        ])
        .unwrap();
        assert_eq!(router.cluster_of(b"orders:1"), 1);
        assert_eq!(router.cluster_of(b"orders:archive:1"), 2);
        assert_eq!(router.cluster_of(b"users:1"), 0);
        assert_eq!(
            router.slot(b"orders:1"),
            virtual_slot(1, cinnabar_commands::key_slot(b"orders:1"))
        );
    }

    #[test]
    fn impossible_layouts_are_named() {
        let err = router(vec![cluster("a", &["x"]), cluster("b", &["y"])]).unwrap_err();
        assert!(err.contains("no default cluster"), "{err}");
        let err = router(vec![cluster("a", &[]), cluster("b", &[])]).unwrap_err();
        assert!(err.contains("exactly one may be the default"), "{err}");
        let err = router(vec![
            cluster("a", &[]),
            cluster("b", &["x"]),
            cluster("c", &["x"]),
        ])
        .unwrap_err();
        assert!(err.contains("owned by both"), "{err}");
        let err = router(vec![cluster("a", &[]), cluster("a", &["x"])]).unwrap_err();
        assert!(err.contains("two [[clusters]]"), "{err}");
        let five = (0..5).map(|i| cluster(&format!("c{i}"), &[])).collect();
        assert!(router(five).unwrap_err().contains("at most 4"));
        assert_eq!(
            KeyRouter::default().slot(b"k"),
            cinnabar_commands::key_slot(b"k")
        );
    }
}
