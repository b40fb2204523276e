//! The planner's slot steps ([`Step::MoveSlots`](crate::plan::Step::MoveSlots),
//! [`Step::CloseSlots`](crate::plan::Step::CloseSlots)) carried out by the migration engine
//! ([`SlotMigrator`]), with the engine's progress lines passed on.

use crate::addr::NodeAddr;
use crate::error::ClusterError;
use crate::execute::ExecuteOptions;
use crate::migrate::{MigrateOptions, SlotMigrator};
use crate::observe::Observed;
use crate::rebalance::plan_rebalance;

/// Connects the engine through the masters the planner observed (any of them can tell it the
/// whole cluster).
async fn migrator(
    observed: &Observed,
    options: &ExecuteOptions,
) -> Result<SlotMigrator, ClusterError> {
    let seeds: Vec<NodeAddr> = observed
        .shards()
        .into_iter()
        .filter(|s| observed.node(&s.master).is_some_and(|n| n.is_reachable()))
        .map(|s| s.master)
        .collect();
    let migrate = MigrateOptions {
        timeouts: options.timeouts,
        credentials: options.credentials.clone(),
        ..MigrateOptions::default()
    };
    SlotMigrator::connect(&seeds, migrate).await
}

/// Moves slots so `targets` hold shares proportional to their weights: the fewest moves
/// ([`plan_rebalance`]), run in parallel where sources and targets differ.
pub(crate) async fn move_slots(
    targets: &[(NodeAddr, String, u32)],
    observed: &Observed,
    options: &ExecuteOptions,
    on_progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), ClusterError> {
    let migrator = migrator(observed, options).await?;
    let weights: Vec<(String, u32)> = targets
        .iter()
        .map(|(_, id, weight)| (id.clone(), *weight))
        .collect();
    let moves = plan_rebalance(&migrator.owners(), &weights)?;
    if moves.is_empty() {
        return Ok(());
    }
    migrator
        .run(&moves, &mut |progress| on_progress(progress.to_string()))
        .await?;
    Ok(())
}

/// Closes open slots (every one the masters report, which includes `slots`).
pub(crate) async fn close_slots(
    _slots: &[u16],
    observed: &Observed,
    options: &ExecuteOptions,
    on_progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), ClusterError> {
    let migrator = migrator(observed, options).await?;
    for repair in migrator.repair_open_slots().await? {
        on_progress(repair.to_string());
    }
    Ok(())
}
