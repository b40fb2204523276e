//! The planner's slot steps ([`Step::MoveSlots`](crate::plan::Step::MoveSlots),
//! [`Step::CloseSlots`](crate::plan::Step::CloseSlots)) carried out by the migration engine.

use crate::addr::NodeAddr;
use crate::error::ClusterError;
use crate::execute::ExecuteOptions;
use crate::observe::Observed;

/// Moves slots so `targets` hold shares proportional to their weights.
pub(crate) async fn move_slots(
    _targets: &[(NodeAddr, String, u32)],
    _observed: &Observed,
    _options: &ExecuteOptions,
    _on_progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), ClusterError> {
    Err(ClusterError::InvalidTopology(
        "slot moves are not wired to the migration engine yet".into(),
    ))
}

/// Closes open slots.
pub(crate) async fn close_slots(
    _slots: &[u16],
    _observed: &Observed,
    _options: &ExecuteOptions,
    _on_progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), ClusterError> {
    Err(ClusterError::InvalidTopology(
        "closing slots is not wired to the migration engine yet".into(),
    ))
}
