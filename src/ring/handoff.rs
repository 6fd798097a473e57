//! Hand-offs: what one member gains and loses between two rings.

#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::{Handoff, KeyRange, Ring, Transfer};

impl Ring {
    /// What `local` acquires and relinquishes when ownership goes from `old` to `new`.
    ///
    /// A pure function of the two rings: every member computes its own part, and for members A
    /// and B, `handoff(old, new, A)`'s ranges relinquished to B equal `handoff(old, new, B)`'s
    /// ranges acquired from A. Empty if `local` is on neither ring. Costs time linear in the
    /// two rings' partitions.
    pub fn handoff(old: &Self, new: &Self, local: &str) -> Handoff {
        let old_local = old.member_index(local);
        let new_local = new.member_index(local);
        if old_local.is_none() && new_local.is_none() {
            return Handoff::default();
        }
        // Compare owners partition by partition, on the finer grid when the two tables differ
        // (an empty ring owns nothing anywhere), and gather ranges per peer. This runs after
        // every membership change on every node, so rings on the same grid (the usual case)
        // are compared row by row without copying; walking both rings' arcs instead cost a
        // millisecond at 200 members (five from a ring of one).
        let shift = match (old.is_empty(), new.is_empty()) {
            (false, false) => old.shift.min(new.shift),
            (true, _) => new.shift,
            (false, true) => old.shift,
        };
        let me = (
            old_local.map_or(ABSENT, u32::from),
            new_local.map_or(ABSENT, u32::from),
        );
        let mut acquired: Vec<Vec<KeyRange>> = vec![Vec::new(); old.names.len() + 1];
        let mut relinquished: Vec<Vec<KeyRange>> = vec![Vec::new(); new.names.len() + 1];
        let mut out = (&mut acquired, &mut relinquished);
        match (old.owners_on(shift), new.owners_on(shift)) {
            (None, None) => gather(
                old.partition_owners(),
                new.partition_owners(),
                me,
                shift,
                &mut out,
            ),
            (Some(o), None) => gather(o.into_iter(), new.partition_owners(), me, shift, &mut out),
            (None, Some(n)) => gather(old.partition_owners(), n.into_iter(), me, shift, &mut out),
            (Some(o), Some(n)) => gather(o.into_iter(), n.into_iter(), me, shift, &mut out),
        }
        // Slots follow name order after "no peer", so the transfers come out sorted by peer.
        let collect = |ring: &Self, by_peer: Vec<Vec<KeyRange>>| {
            by_peer
                .into_iter()
                .enumerate()
                .filter(|(_, ranges)| !ranges.is_empty())
                .map(|(i, ranges)| Transfer {
                    // i - 1 < names.len() <= MAX_MEMBERS = 2^16.
                    peer: i.checked_sub(1).map(|m| ring.name(m as u16).to_owned()),
                    ranges,
                })
                .collect()
        };
        Handoff {
            acquired: collect(old, acquired),
            relinquished: collect(new, relinquished),
        }
    }
}

impl Handoff {
    /// Names none of `peers` as a previous owner: what this member acquired from them, it
    /// acquired from nobody. For a `before` ring some of whose members held no ring of their
    /// own, so handed nothing over (`Node::ring_held_before`).
    pub(crate) fn acquired_from_nobody_of(&mut self, peers: &BTreeSet<String>) {
        let mut moved = Vec::new();
        self.acquired.retain_mut(|t| {
            let nobody = t.peer.as_ref().is_none_or(|p| peers.contains(p));
            if nobody {
                moved.append(&mut t.ranges);
            }
            !nobody
        });
        if moved.is_empty() {
            return;
        }
        moved.sort_unstable_by_key(|r| r.start);
        let mut ranges = Vec::with_capacity(moved.len());
        for r in moved {
            push_range(&mut ranges, r);
        }
        self.acquired.insert(0, Transfer { peer: None, ranges });
    }
}

/// A partition with no owner: its ring is empty.
const NONE: u32 = u32::MAX;
/// The local member, when a ring does not hold it: no owner equals it.
const ABSENT: u32 = u32::MAX - 1;

impl Ring {
    /// Each partition's owner, in partition order.
    fn partition_owners(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().map(|row| u32::from(row[0]))
    }

    /// The owners on the grid of partitions `2^(64 - shift)`, when it is not this ring's own
    /// (`None`: read them with `partition_owners`). `shift` is at most this ring's, unless the
    /// ring is empty.
    fn owners_on(&self, shift: u32) -> Option<Vec<u32>> {
        // 64 - shift <= MAX_PARTITION_BITS.
        let partitions = 1usize << (64 - shift);
        if self.is_empty() {
            return Some(vec![NONE; partitions]);
        }
        if self.shift == shift {
            return None;
        }
        let d = self.shift - shift;
        Some(
            (0..partitions)
                .map(|p| u32::from(self.table[p >> d][0]))
                .collect(),
        )
    }
}

/// Walks the two rings' owners (`NONE` where a ring is empty) on one grid of partitions
/// (`hash >> shift`), and appends the ranges `me.0` loses to `out.1` by next owner and those
/// `me.1` gains to `out.0` by previous owner: slot 0 for no owner, slot m + 1 for member m.
fn gather(
    old: impl Iterator<Item = u32>,
    new: impl Iterator<Item = u32>,
    me: (u32, u32),
    shift: u32,
    out: &mut (&mut Vec<Vec<KeyRange>>, &mut Vec<Vec<KeyRange>>),
) {
    // NONE + 1 wraps to slot 0.
    let slot = |m: u32| m.wrapping_add(1) as usize;
    for (p, (was, is)) in old.zip(new).enumerate() {
        let (was_local, is_local) = (was == me.0, is == me.1);
        if was_local == is_local {
            continue;
        }
        // p < 2^MAX_PARTITION_BITS; for the last partition the end wraps to u64::MAX.
        let range = KeyRange {
            start: (p as u64) << shift,
            end: ((p as u64 + 1) << shift).wrapping_sub(1),
        };
        if was_local {
            push_range(&mut out.1[slot(is)], range);
        } else {
            push_range(&mut out.0[slot(was)], range);
        }
    }
}

/// The hand-off computed another way, by walking both rings' arcs: what `Ring::handoff` did
/// before it compared partition tables, kept as the tests' reference.
#[cfg(test)]
impl Ring {
    pub(super) fn handoff_by_arcs(
        old: &Self,
        new: &Self,
        old_local: Option<u16>,
        new_local: Option<u16>,
    ) -> Handoff {
        let mut acquired: BTreeMap<Option<&str>, Vec<KeyRange>> = BTreeMap::new();
        let mut relinquished: BTreeMap<Option<&str>, Vec<KeyRange>> = BTreeMap::new();
        for (range, was, is) in Segments::new(old, new) {
            let was_local = was.is_some() && was == old_local;
            let is_local = is.is_some() && is == new_local;
            if was_local && !is_local {
                let peer = is.map(|m| new.name(m));
                push_range(relinquished.entry(peer).or_default(), range);
            } else if is_local && !was_local {
                let peer = was.map(|m| old.name(m));
                push_range(acquired.entry(peer).or_default(), range);
            }
        }
        let collect = |map: BTreeMap<Option<&str>, Vec<KeyRange>>| {
            map.into_iter()
                .map(|(peer, ranges)| Transfer {
                    peer: peer.map(str::to_owned),
                    ranges,
                })
                .collect()
        };
        Handoff {
            acquired: collect(acquired),
            relinquished: collect(relinquished),
        }
    }
}

/// Elementary ranges of the hash space on which neither ring changes owner, with both owners.
#[cfg(test)]
struct Segments<'a> {
    old: std::iter::Peekable<ArcIter<'a>>,
    new: std::iter::Peekable<ArcIter<'a>>,
    start: Option<u64>,
}

#[cfg(test)]
type ArcIter<'a> = Box<dyn Iterator<Item = (u64, Option<u16>)> + 'a>;

#[cfg(test)]
impl<'a> Segments<'a> {
    fn new(old: &'a Ring, new: &'a Ring) -> Self {
        let ends = |ring: &'a Ring| -> ArcIter<'a> {
            if ring.is_empty() {
                Box::new(std::iter::once((u64::MAX, None)))
            } else {
                Box::new(ring.arcs().map(|(range, m)| (range.end, Some(m))))
            }
        };
        Self {
            old: ends(old).peekable(),
            new: ends(new).peekable(),
            start: Some(0),
        }
    }
}

#[cfg(test)]
impl Iterator for Segments<'_> {
    type Item = (KeyRange, Option<u16>, Option<u16>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.start?;
        let &(old_end, was) = self.old.peek()?;
        let &(new_end, is) = self.new.peek()?;
        let end = old_end.min(new_end);
        if old_end == end {
            self.old.next();
        }
        if new_end == end {
            self.new.next();
        }
        self.start = end.checked_add(1);
        Some((KeyRange { start, end }, was, is))
    }
}

/// Appends `range`, merging it into the last range when they touch.
pub(super) fn push_range(ranges: &mut Vec<KeyRange>, range: KeyRange) {
    if let Some(last) = ranges.last_mut()
        && last.end.checked_add(1) == Some(range.start)
    {
        last.end = range.end;
        return;
    }
    ranges.push(range);
}
