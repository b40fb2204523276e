//! Hash slot ranges and sets: how slot ownership is written, compared and split.
//!
//! Pure arithmetic over the 16384 slots; no I/O. Never hash keys here (that is
//! `cinnabar-commands`' job).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// An inclusive range of hash slots, displayed as Redis prints it: `0-5460`, or `100` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
}

impl SlotRange {
    /// The range `start..=end`.
    pub fn new(start: u16, end: u16) -> Self {
        Self { start, end }
    }

    /// A range holding one slot.
    pub fn single(slot: u16) -> Self {
        Self::new(slot, slot)
    }

    /// How many slots the range holds.
    pub fn len(&self) -> usize {
        usize::from(self.end) - usize::from(self.start) + 1
    }

    /// Always false: a range holds at least one slot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `slot` is in the range.
    pub fn contains(&self, slot: u16) -> bool {
        (self.start..=self.end).contains(&slot)
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for SlotRange {
    type Err = ClusterError;

    /// Parses `a-b` or `a`; both ends must be below 16384 and `a <= b`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let slot = |t: &str| {
            t.parse::<u16>()
                .ok()
                .filter(|&n| usize::from(n) < SLOT_COUNT)
                .ok_or_else(|| ClusterError::parse("slot range", s, "slots are 0 to 16383"))
        };
        let range = match s.split_once('-') {
            Some((a, b)) => Self::new(slot(a)?, slot(b)?),
            None => Self::single(slot(s)?),
        };
        if range.start > range.end {
            return Err(ClusterError::parse(
                "slot range",
                s,
                "the range ends before it starts",
            ));
        }
        Ok(range)
    }
}

/// Writes ranges as Redis would list them: `0-99 200 300-400`.
pub fn format_ranges(ranges: &[SlotRange]) -> String {
    let parts: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    parts.join(" ")
}

/// Total number of slots in `ranges` (overlaps counted twice).
pub fn count_slots(ranges: &[SlotRange]) -> usize {
    ranges.iter().map(SlotRange::len).sum()
}

/// A set of hash slots, as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet {
    bits: Box<[u64; SLOT_COUNT / 64]>,
}

impl fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotSet[{}]", format_ranges(&self.ranges()))
    }
}

impl Default for SlotSet {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotSet {
    /// The empty set.
    pub fn new() -> Self {
        Self {
            bits: Box::new([0; SLOT_COUNT / 64]),
        }
    }

    /// The set of all slots in `ranges`.
    pub fn from_ranges<'a>(ranges: impl IntoIterator<Item = &'a SlotRange>) -> Self {
        let mut set = Self::new();
        for range in ranges {
            set.insert_range(*range);
        }
        set
    }

    /// Adds one slot.
    pub fn insert(&mut self, slot: u16) {
        let i = usize::from(slot);
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// Adds every slot of `range`.
    pub fn insert_range(&mut self, range: SlotRange) {
        for slot in range.start..=range.end {
            self.insert(slot);
        }
    }

    /// Removes one slot.
    pub fn remove(&mut self, slot: u16) {
        let i = usize::from(slot);
        self.bits[i / 64] &= !(1 << (i % 64));
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: u16) -> bool {
        let i = usize::from(slot);
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Number of slots in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no slot.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// Adds every slot of `other`.
    pub fn union_with(&mut self, other: &Self) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
    }

    /// Keeps only the slots that are also in `other`.
    pub fn intersect_with(&mut self, other: &Self) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a &= b;
        }
    }

    /// The slots not in the set.
    pub fn complement(&self) -> Self {
        let mut out = self.clone();
        for w in out.bits.iter_mut() {
            *w = !*w;
        }
        out
    }

    /// The set as sorted, maximal contiguous ranges.
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut out = Vec::new();
        let mut open: Option<usize> = None;
        let mut slot = 0usize;
        let range = |from: usize, to: usize| {
            // Both bounds are below SLOT_COUNT (16384), so they fit u16.
            SlotRange::new(
                u16::try_from(from).unwrap_or(u16::MAX),
                u16::try_from(to).unwrap_or(u16::MAX),
            )
        };
        while slot < SLOT_COUNT {
            // Whole words that cannot start or end a range are skipped: planners call this on
            // every observation, and most words are all-zero or all-one.
            let word = self.bits[slot / 64];
            if slot.is_multiple_of(64)
                && ((word == 0 && open.is_none()) || (word == u64::MAX && open.is_some()))
            {
                slot += 64;
                continue;
            }
            let set = word & (1 << (slot % 64)) != 0;
            match (set, open) {
                (true, None) => open = Some(slot),
                (false, Some(start)) => {
                    out.push(range(start, slot - 1));
                    open = None;
                }
                _ => {}
            }
            slot += 1;
        }
        if let Some(start) = open {
            out.push(range(start, SLOT_COUNT - 1));
        }
        out
    }
}

/// The highest slot number, 16383.
pub fn last_slot() -> u16 {
    // SLOT_COUNT is a compile-time constant that fits u16 once 1 is taken off.
    u16::try_from(SLOT_COUNT - 1).unwrap_or(u16::MAX)
}

/// Splits the 16384 slots into `masters` contiguous ranges of near-equal size, in order.
///
/// The split is the one `redis-cli --cluster create` makes (each boundary rounded to the
/// nearest slot), so clusters we create look like the ones operators already know.
///
/// # Errors
/// [`ClusterError::InvalidTopology`] for 0 masters or more masters than slots.
pub fn even_split(masters: usize) -> Result<Vec<SlotRange>, ClusterError> {
    if masters == 0 || masters > SLOT_COUNT {
        return Err(ClusterError::InvalidTopology(format!(
            "cannot split 16384 slots among {masters} masters: use 1 to 16384 masters"
        )));
    }
    let mut ranges = Vec::with_capacity(masters);
    let mut first = 0usize;
    for i in 0..masters {
        // round((i + 1) * 16384 / masters) - 1, in integers (round half up).
        let boundary = (2 * (i + 1) * SLOT_COUNT + masters) / (2 * masters);
        let mut last = boundary.saturating_sub(1);
        if i == masters - 1 {
            last = SLOT_COUNT - 1;
        }
        last = last.max(first);
        ranges.push(SlotRange::new(to_slot(first), to_slot(last)));
        first = last + 1;
    }
    Ok(ranges)
}

/// A slot index already known to be below 16384 as `u16`.
fn to_slot(i: usize) -> u16 {
    u16::try_from(i.min(SLOT_COUNT - 1)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_matches_redis_cli() {
        let three: Vec<String> = even_split(3)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(three, ["0-5460", "5461-10922", "10923-16383"]);
        let one = even_split(1).unwrap();
        assert_eq!(one, [SlotRange::new(0, 16383)]);
        let all = even_split(16384).unwrap();
        assert_eq!(all.len(), 16384);
        assert!(all.iter().all(|r| r.len() == 1));
    }

    #[test]
    fn even_split_covers_every_slot_exactly_once() {
        for masters in [1, 2, 3, 5, 7, 10, 64, 100, 1000, 16383] {
            let ranges = even_split(masters).unwrap();
            assert_eq!(ranges.len(), masters);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[masters - 1].end, 16383);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end + 1, pair[1].start);
            }
            let (min, max) = ranges.iter().fold((usize::MAX, 0), |(lo, hi), r| {
                (lo.min(r.len()), hi.max(r.len()))
            });
            assert!(max - min <= 1, "{masters}: sizes {min}..{max}");
        }
        assert!(even_split(0).is_err());
    }

    #[test]
    fn slot_ranges_parse_and_display_like_redis() {
        assert_eq!(
            "0-5460".parse::<SlotRange>().unwrap(),
            SlotRange::new(0, 5460)
        );
        assert_eq!("100".parse::<SlotRange>().unwrap().to_string(), "100");
        assert!("16384".parse::<SlotRange>().is_err());
        assert!("5-4".parse::<SlotRange>().is_err());
    }

    #[test]
    fn slot_sets_compress_to_ranges() {
        let mut set = SlotSet::from_ranges(&[SlotRange::new(0, 99), SlotRange::new(16380, 16383)]);
        set.insert(200);
        assert_eq!(format_ranges(&set.ranges()), "0-99 200 16380-16383");
        assert_eq!(set.len(), 105);
        assert_eq!(
            format_ranges(&set.complement().ranges()),
            "100-199 201-16379"
        );
        assert!(SlotSet::new().is_empty());
    }

    proptest::proptest! {
        /// Ranges (which skip whole words) list exactly the slots in the set, maximal and sorted.
        #[test]
        fn ranges_list_exactly_the_set(slots in proptest::collection::btree_set(0u16..16384, 0..400),
                                       runs in proptest::collection::vec((0u16..16384, 0u16..300), 0..4)) {
            let mut set = SlotSet::new();
            let mut expected = std::collections::BTreeSet::new();
            for s in &slots {
                set.insert(*s);
                expected.insert(*s);
            }
            for (start, len) in runs {
                let end = start.saturating_add(len).min(16383);
                set.insert_range(SlotRange::new(start, end));
                expected.extend(start..=end);
            }
            let ranges = set.ranges();
            let listed: std::collections::BTreeSet<u16> =
                ranges.iter().flat_map(|r| r.start..=r.end).collect();
            proptest::prop_assert_eq!(listed, expected);
            for pair in ranges.windows(2) {
                proptest::prop_assert!(pair[0].end + 1 < pair[1].start);
            }
        }
    }
}
