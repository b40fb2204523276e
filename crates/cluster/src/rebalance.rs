//! Rebalance planning: which slots to move so that chosen masters hold shares of their slots in
//! proportion to their weights, with as few moves as possible.
//!
//! Pure: no I/O, no clock, no randomness. It must never produce a plan that leaves a slot with
//! no owner or with two, and never moves a slot of a master that was not listed.
//!
//! How shares are computed: the slots owned by the listed masters form the pool; each master's
//! quota is `pool × weight / total weight`, rounded down, and the slots left over by rounding go
//! to the largest remainders, ties to the masters that already hold more (so fewer slots move),
//! then by id. A master's surplus over its quota is given away from the top of its slot list, so
//! each donor gives contiguous runs and ranges stay tidy; receivers are filled in id order.
//! Weight 0 drains a master completely, which is how a shard is emptied before removal.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::ClusterError;
use crate::slots::{SLOT_COUNT, SlotSet};
use crate::topology::short_id;

/// One hash slot to move from one master to another (masters named by node id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// The master that owns it now.
    pub from: String,
    /// The master that will own it.
    pub to: String,
}

impl fmt::Display for SlotMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slot {} {} → {}",
            self.slot,
            short_id(&self.from),
            short_id(&self.to)
        )
    }
}

/// Plans the moves that give each master in `targets` its weighted share of the slots those
/// masters own together (see the module docs for the rounding).
///
/// `owners` is slot ownership as observed (master id → slots); masters it does not list own
/// nothing (a new, empty master). Masters in `owners` but not in `targets` keep their slots and
/// receive nothing. Weight 0 drains a master. Moves are grouped by donor and ascending by slot
/// within each run.
///
/// # Returns
/// Exactly `Σ max(0, owned − quota)` moves, none from a master to itself.
///
/// # Errors
/// [`ClusterError::InvalidTopology`] when a target is listed twice, a slot has two owners in
/// `owners`, or every weight is 0 while the listed masters own slots.
pub fn plan_rebalance(
    owners: &BTreeMap<String, SlotSet>,
    targets: &[(String, u32)],
) -> Result<Vec<SlotMove>, ClusterError> {
    check_single_owners(owners)?;
    let mut weights: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, weight) in targets {
        if weights.insert(id, u64::from(*weight)).is_some() {
            return Err(ClusterError::InvalidTopology(format!(
                "master {id} is listed twice in the rebalance targets"
            )));
        }
    }
    let empty = SlotSet::new();
    let held: BTreeMap<&str, Vec<u16>> = weights
        .keys()
        .map(|&id| (id, slots_of(owners.get(id).unwrap_or(&empty))))
        .collect();
    let quotas = quotas(&weights, &held)?;

    let mut moves = Vec::new();
    let mut receivers = quotas
        .iter()
        .map(|(&id, &quota)| (id, quota.saturating_sub(held[id].len())))
        .filter(|(_, deficit)| *deficit > 0)
        .collect::<Vec<_>>()
        .into_iter();
    let mut current = receivers.next();
    for (&donor, slots) in &held {
        let surplus = slots.len().saturating_sub(quotas[donor]);
        for &slot in &slots[slots.len() - surplus..] {
            // Surpluses and deficits add up to the same number, so a receiver is always there.
            let Some((receiver, deficit)) = current.as_mut() else {
                break;
            };
            moves.push(SlotMove {
                slot,
                from: donor.to_owned(),
                to: (*receiver).to_owned(),
            });
            *deficit -= 1;
            if *deficit == 0 {
                current = receivers.next();
            }
        }
    }
    Ok(moves)
}

/// Every master's quota of the pool (the slots the weighted masters hold together).
fn quotas<'a>(
    weights: &BTreeMap<&'a str, u64>,
    held: &BTreeMap<&'a str, Vec<u16>>,
) -> Result<BTreeMap<&'a str, usize>, ClusterError> {
    let pool: usize = held.values().map(Vec::len).sum();
    let total_weight: u64 = weights.values().sum();
    if total_weight == 0 {
        if pool == 0 {
            return Ok(weights.keys().map(|&id| (id, 0)).collect());
        }
        return Err(ClusterError::InvalidTopology(format!(
            "every rebalance target has weight 0, so the {pool} slots they own have nowhere to go"
        )));
    }
    // The pool is at most 16384 and weights are u32, so these products fit u64 easily.
    let pool_u64 = pool as u64;
    let mut quotas: BTreeMap<&str, usize> = BTreeMap::new();
    let mut remainders: Vec<(u64, usize, &str)> = Vec::new();
    for (&id, &weight) in weights {
        let share = pool_u64 * weight;
        quotas.insert(
            id,
            usize::try_from(share / total_weight).unwrap_or(SLOT_COUNT),
        );
        remainders.push((share % total_weight, held[id].len(), id));
    }
    let given: usize = quotas.values().sum();
    // Largest remainder first; among equals, the master holding more keeps its slot.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    for (_, _, id) in remainders.iter().take(pool - given) {
        if let Some(quota) = quotas.get_mut(id) {
            *quota += 1;
        }
    }
    Ok(quotas)
}

fn slots_of(set: &SlotSet) -> Vec<u16> {
    set.ranges().iter().flat_map(|r| r.start..=r.end).collect()
}

fn check_single_owners(owners: &BTreeMap<String, SlotSet>) -> Result<(), ClusterError> {
    let mut seen = SlotSet::new();
    for (id, slots) in owners {
        let mut overlap = seen.clone();
        overlap.intersect_with(slots);
        if let Some(first) = overlap.ranges().first() {
            return Err(ClusterError::InvalidTopology(format!(
                "slot {} is owned by two masters (one of them {id}); resolve that before rebalancing",
                first.start
            )));
        }
        seen.union_with(slots);
    }
    Ok(())
}

/// Ownership after applying `moves` to `owners` (for checks and dry runs).
///
/// # Errors
/// [`ClusterError::InvalidTopology`] when a move's source does not own its slot at that point.
pub fn apply_moves(
    owners: &BTreeMap<String, SlotSet>,
    moves: &[SlotMove],
) -> Result<BTreeMap<String, SlotSet>, ClusterError> {
    let mut after = owners.clone();
    for mv in moves {
        let source = after
            .get_mut(&mv.from)
            .filter(|slots| slots.contains(mv.slot))
            .ok_or_else(|| {
                ClusterError::InvalidTopology(format!(
                    "slot {} cannot move from {}, which does not own it",
                    mv.slot, mv.from
                ))
            })?;
        source.remove(mv.slot);
        after.entry(mv.to.clone()).or_default().insert(mv.slot);
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{SlotRange, even_split, format_ranges};
    use proptest::prelude::*;

    fn id(n: usize) -> String {
        format!("{n:040x}")
    }

    fn even_owners(masters: usize) -> BTreeMap<String, SlotSet> {
        even_split(masters)
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, r)| (id(i), SlotSet::from_ranges(&[*r])))
            .collect()
    }

    fn counts(owners: &BTreeMap<String, SlotSet>) -> Vec<usize> {
        owners.values().map(SlotSet::len).collect()
    }

    #[test]
    fn adding_two_empty_masters_to_three_moves_two_fifths_in_contiguous_runs() {
        let owners = even_owners(3);
        let targets: Vec<(String, u32)> = (0..5).map(|i| (id(i), 1)).collect();
        let moves = plan_rebalance(&owners, &targets).unwrap();
        assert_eq!(moves.len(), 16384 - 3 * 3277);
        let after = apply_moves(&owners, &moves).unwrap();
        let mut sizes = counts(&after);
        sizes.sort_unstable();
        assert_eq!(sizes, [3276, 3277, 3277, 3277, 3277]);
        // Donors keep the bottom of their range and give away its top.
        assert_eq!(format_ranges(&after[&id(0)].ranges()), "0-3276");
        assert_eq!(after[&id(3)].ranges().len(), 2);
        assert!(moves.iter().all(|m| m.from != m.to));
    }

    #[test]
    fn weight_zero_drains_a_master_and_unlisted_masters_keep_their_slots() {
        let owners = even_owners(4);
        let targets = vec![(id(0), 1), (id(1), 1), (id(2), 0)];
        let moves = plan_rebalance(&owners, &targets).unwrap();
        let after = apply_moves(&owners, &moves).unwrap();
        assert!(after[&id(2)].is_empty());
        assert_eq!(after[&id(3)], owners[&id(3)]);
        assert_eq!(after[&id(0)].len() + after[&id(1)].len(), 3 * 4096);
        assert_eq!(moves.len(), 4096);
    }

    #[test]
    fn a_balanced_cluster_needs_no_move_and_bad_inputs_are_refused() {
        let owners = even_owners(3);
        let targets: Vec<(String, u32)> = (0..3).map(|i| (id(i), 1)).collect();
        assert!(plan_rebalance(&owners, &targets).unwrap().is_empty());
        assert!(plan_rebalance(&owners, &[(id(0), 0), (id(1), 0)]).is_err());
        assert!(plan_rebalance(&owners, &[(id(0), 1), (id(0), 2)]).is_err());
        let mut twice = owners.clone();
        twice.insert(id(9), SlotSet::from_ranges(&[SlotRange::single(7)]));
        let err = plan_rebalance(&twice, &targets).unwrap_err().to_string();
        assert!(err.contains("slot 7 is owned by two masters"), "{err}");
    }

    #[test]
    fn weights_split_in_proportion() {
        let owners = even_owners(2);
        let moves = plan_rebalance(&owners, &[(id(0), 3), (id(1), 1)]).unwrap();
        let after = apply_moves(&owners, &moves).unwrap();
        assert_eq!(counts(&after), [12288, 4096]);
    }

    /// Random ownership of all 16384 slots among up to 6 masters (some with none).
    fn arbitrary_owners() -> impl Strategy<Value = (BTreeMap<String, SlotSet>, usize)> {
        (1usize..7, proptest::collection::vec(0usize..6, 1..40)).prop_map(|(masters, cuts)| {
            // Split the slot space at random cut points and hand the pieces round-robin-ish.
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c * 2731 % SLOT_COUNT).collect();
            bounds.push(0);
            bounds.push(SLOT_COUNT);
            bounds.sort_unstable();
            bounds.dedup();
            let mut owners: BTreeMap<String, SlotSet> = BTreeMap::new();
            for (piece, pair) in bounds.windows(2).enumerate() {
                let owner = cuts[piece % cuts.len()] % masters;
                let range = SlotRange::new(pair[0] as u16, (pair[1] - 1) as u16);
                owners.entry(id(owner)).or_default().insert_range(range);
            }
            (owners, masters)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn plans_keep_one_owner_per_slot_balance_and_move_only_the_surplus(
            (owners, masters) in arbitrary_owners(),
            extra in 0usize..3,
            drained in proptest::collection::vec(any::<bool>(), 9),
        ) {
            let all = masters + extra;
            let mut targets: Vec<(String, u32)> = (0..all)
                .map(|i| (id(i), u32::from(!drained[i])))
                .collect();
            if targets.iter().all(|(_, w)| *w == 0) {
                targets[0].1 = 1;
            }
            let moves = plan_rebalance(&owners, &targets).unwrap();
            let after = apply_moves(&owners, &moves).unwrap();

            let mut union = SlotSet::new();
            let mut total = 0;
            for slots in after.values() {
                total += slots.len();
                union.union_with(slots);
            }
            prop_assert_eq!(total, SLOT_COUNT);
            prop_assert_eq!(union.len(), SLOT_COUNT);

            let kept: Vec<usize> = targets
                .iter()
                .filter(|(_, w)| *w > 0)
                .map(|(id, _)| after.get(id).map_or(0, SlotSet::len))
                .collect();
            let (lo, hi) = (kept.iter().min().copied(), kept.iter().max().copied());
            prop_assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 1, "counts {:?}", kept);
            for (id, weight) in &targets {
                if *weight == 0 {
                    prop_assert!(after.get(id).is_none_or(SlotSet::is_empty));
                }
            }
            prop_assert!(moves.iter().all(|m| m.from != m.to));

            let surplus: usize = targets
                .iter()
                .map(|(id, _)| {
                    let before = owners.get(id).map_or(0, SlotSet::len);
                    let now = after.get(id).map_or(0, SlotSet::len);
                    before.saturating_sub(now)
                })
                .sum();
            prop_assert_eq!(moves.len(), surplus);
            // Minimal: with equal weights, no plan can move fewer than the excess over the
            // largest allowed share (ceil of the average).
            let weighted = kept.len();
            let ceil = SLOT_COUNT.div_ceil(weighted);
            let floor = SLOT_COUNT / weighted;
            let lower_bound: usize = targets
                .iter()
                .map(|(id, w)| {
                    let before = owners.get(id).map_or(0, SlotSet::len);
                    if *w == 0 { before } else { before.saturating_sub(ceil) }
                })
                .sum();
            prop_assert!(moves.len() >= lower_bound);
            // Among masters owning more than the floor, at most `SLOT_COUNT % weighted` may keep
            // one extra slot; the plan keeps exactly that many where it can.
            let extra_slots = SLOT_COUNT - floor * weighted;
            let exact: usize = targets
                .iter()
                .map(|(id, w)| {
                    let before = owners.get(id).map_or(0, SlotSet::len);
                    if *w == 0 { before } else { before.saturating_sub(floor) }
                })
                .sum();
            let can_keep = targets
                .iter()
                .filter(|(id, w)| *w > 0 && owners.get(id).map_or(0, SlotSet::len) > floor)
                .count()
                .min(extra_slots);
            prop_assert_eq!(moves.len(), exact - can_keep);
        }
    }
}
