//! The backups in a store: listing (complete backups only: those with a manifest) and pruning
//! by count or age.

use serde::Serialize;

use crate::error::BackupError;
use crate::manifest::{Manifest, now_ms};
use crate::store::Store;

/// Every complete backup under the store's prefix, oldest first (by the time its data holds).
/// A folder without a readable manifest is skipped: a backup that failed or is still running.
///
/// # Errors
/// [`BackupError::Store`].
pub fn list(store: &Store) -> Result<Vec<Manifest>, BackupError> {
    let mut manifests = Vec::new();
    for name in store.folders("backups")? {
        let path = format!("backups/{name}/manifest.json");
        if let Some(bytes) = store.get(&path)?
            && let Ok(manifest) = Manifest::parse(&path, &bytes)
        {
            manifests.push(manifest);
        }
    }
    manifests.sort_by(|a, b| a.taken_ms().cmp(&b.taken_ms()).then(a.name.cmp(&b.name)));
    Ok(manifests)
}

/// The backup named `name`.
///
/// # Errors
/// [`BackupError::NotFound`], [`BackupError::Format`], [`BackupError::Store`].
pub fn get(store: &Store, name: &str) -> Result<Manifest, BackupError> {
    let path = format!("backups/{name}/manifest.json");
    match store.get(&path)? {
        Some(bytes) => Manifest::parse(&path, &bytes),
        None => Err(BackupError::NotFound(format!(
            "no complete backup named {name} in {} (cinnabar backup list shows them)",
            store.url()
        ))),
    }
}

/// Which backups a prune keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Keep the newest N (of each cluster).
    pub keep: Option<usize>,
    /// Keep those taken within the last D days.
    pub keep_days: Option<u64>,
}

/// What a prune did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pruned {
    /// Backups deleted, by name.
    pub deleted: Vec<String>,
    /// Backups kept, by name.
    pub kept: Vec<String>,
    /// Archive segments deleted (older than every kept backup of their cluster).
    pub segments_deleted: usize,
}

/// Deletes the backups `retention` does not keep, per cluster (a backup is kept when either
/// rule keeps it; the newest backup of a cluster is always kept), and the archive segments no
/// kept backup needs. A backup's manifest goes first, so a prune cut short never leaves a
/// listed backup with missing objects.
///
/// # Errors
/// [`BackupError::Invalid`] without a rule, [`BackupError::Store`].
pub fn prune(store: &Store, retention: Retention, dry_run: bool) -> Result<Pruned, BackupError> {
    if retention.keep.is_none() && retention.keep_days.is_none() {
        return Err(BackupError::Invalid(
            "prune needs --keep N or --keep-days D".to_owned(),
        ));
    }
    let all = list(store)?;
    let mut clusters: Vec<&str> = all.iter().map(|m| m.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let cutoff_ms = retention
        .keep_days
        .map(|days| now_ms().saturating_sub(days.saturating_mul(86_400_000)));
    let mut pruned = Pruned {
        deleted: Vec::new(),
        kept: Vec::new(),
        segments_deleted: 0,
    };
    for cluster in clusters {
        let backups: Vec<&Manifest> = all.iter().filter(|m| m.cluster == cluster).collect();
        let newest_first = backups.iter().rev().enumerate();
        let mut kept: Vec<&Manifest> = Vec::new();
        for (rank, manifest) in newest_first {
            let by_count = retention.keep.is_some_and(|n| rank < n.max(1));
            let by_age = cutoff_ms.is_some_and(|cutoff| manifest.taken_ms() >= cutoff);
            if rank == 0 || by_count || by_age {
                kept.push(manifest);
                pruned.kept.push(manifest.name.clone());
            } else {
                pruned.deleted.push(manifest.name.clone());
                if !dry_run {
                    delete_backup(store, manifest)?;
                }
            }
        }
        pruned.segments_deleted += crate::archive::prune_segments(store, cluster, &kept, dry_run)?;
    }
    Ok(pruned)
}

fn delete_backup(store: &Store, manifest: &Manifest) -> Result<(), BackupError> {
    let folder = format!("backups/{}", manifest.name);
    store.delete(&format!("{folder}/manifest.json"))?;
    for (path, _) in store.list(&folder)? {
        store.delete(&path)?;
    }
    Ok(())
}
