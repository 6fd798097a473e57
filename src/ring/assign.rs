//! The partition table: preference lists walked outward from each partition's point, then
//! deferred acceptance under bounded load (the rule is in the module docs of `ring`).
//!
//! A rebuild after a membership change patches the previous ring's preference rows around the
//! vnodes that came or went instead of walking every partition again: a change moves a
//! partition's first `ROW` members only if one of the changed vnodes lies nearer to its point
//! than the last of them (`patch`).

use xxhash_rust::xxh3::xxh3_64;

use super::{ROW, RingConfig, Vnodes};

/// Rank recorded for a partition whose owner lies past its row's `ROW` members: its row no
/// longer holds its whole preference row, so a rebuild walks it again.
pub(super) const BEYOND: u8 = u8::MAX;

/// What a rebuild takes from the previous ring to patch its preference rows.
pub(super) struct Previous<'a> {
    /// The previous table: owner first, then the rest of the preference row.
    pub table: &'a [[u16; ROW]],
    /// Where the owner stood in each preference row (`BEYOND` past it); empty when the load
    /// was unbounded (every owner its partition's first choice).
    pub ranks: &'a [u8],
    /// The previous ring's member count.
    pub members: usize,
    /// New index of each previous member; `None` for one that left (or changed weight).
    pub renumber: &'a [Option<u16>],
    /// Ring positions of the vnodes that came or went.
    pub changed: Vec<u32>,
}

/// The assignment: the table (one row per partition, owner first) and where each owner stood
/// in its preference row (empty when the load is unbounded: every owner is then the first
/// choice; under bounded load one byte per partition, zeros included).
pub(super) struct Assignment {
    pub table: Vec<[u16; ROW]>,
    pub ranks: Vec<u8>,
}

/// Capacity of each member in partitions (see the module docs), or `P` when the load is
/// unbounded.
pub(super) fn capacities(
    config: &RingConfig,
    names: &[Box<str>],
    weights: &[u32],
    partitions: usize,
) -> Vec<u32> {
    let ppm = u128::from(config.load_ppm());
    // partitions <= 2^MAX_PARTITION_BITS, so it and every capacity fit u32.
    let p = partitions as u128;
    if ppm == 0 {
        return vec![partitions as u32; weights.len()];
    }
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    // Bounds: ppm <= 10^8 < 2^27, P <= 2^24, w <= 10^4 < 2^14 and W < 2^30, so every term
    // below stays under 2^98.
    let scale = (total * 1_000_000) << 32;
    names
        .iter()
        .zip(weights)
        .map(|(name, &w)| {
            let w = u128::from(w);
            let fair = (p * w).div_ceil(total);
            // floor(c * P * w / W + u), u = the name hash's low 32 bits as a fraction of 2^32:
            // a member's rounding no longer flips at the same N as everyone else's.
            let u = u128::from(xxh3_64(name.as_bytes()) as u32);
            let dithered = (((ppm * p * w) << 32) + u * total * 1_000_000) / scale;
            u32::try_from(dithered.max(fair).min(p)).unwrap_or(u32::MAX)
        })
        .collect()
}

/// The partition table for `vnodes` (distinct, in ring order, not empty) and `weights`: see the
/// module docs for the rule. With `previous`, its preference rows are patched instead of
/// walked again; the result is the same.
pub(super) fn assign_partitions(
    config: &RingConfig,
    vnodes: &Vnodes,
    names: &[Box<str>],
    weights: &[u32],
    previous: Option<Previous<'_>>,
) -> Assignment {
    if weights.len() == 1 {
        // One member owns everything, in every row position: what the general rule gives, in
        // microseconds instead of milliseconds (every node starts as a ring of one).
        return Assignment {
            table: vec![[0; ROW]; 1 << config.partition_bits],
            ranks: Vec::new(),
        };
    }
    assign_by_preference(config, vnodes, names, weights, previous)
}

pub(super) fn assign_by_preference(
    config: &RingConfig,
    vnodes: &Vnodes,
    names: &[Box<str>],
    weights: &[u32],
    previous: Option<Previous<'_>>,
) -> Assignment {
    let bits = u32::from(config.partition_bits);
    let depth = ROW.min(weights.len());
    let starts = starts(vnodes, bits);
    let patched = previous.and_then(|previous| patched(vnodes, bits, &starts, depth, previous));
    let mut table = patched.unwrap_or_else(|| preferences(vnodes, bits, &starts, depth));
    if config.load_ppm() == 0 {
        return Assignment {
            table,
            ranks: Vec::new(),
        };
    }
    let capacity = capacities(config, names, weights, starts.len());
    let owner_ranks = deferred_acceptance(vnodes, bits, &capacity, &starts, &table, depth);
    let mut ranks = vec![0u8; table.len()];
    for (p, (row, &r)) in table.iter_mut().zip(&owner_ranks).enumerate() {
        let r = usize::from(r);
        if r == 0 {
            continue;
        }
        // The owner moves to the front; the members before it move back one place (the last
        // one drops out when the owner was not among the first `depth`).
        let owner = if r < depth {
            row[r]
        } else {
            match nth_choice(vnodes, walk(vnodes, &starts, p, bits), r) {
                Some((m, _)) => m,
                // Unreachable: a partition's rank names a member it asked.
                None => continue,
            }
        };
        let at = r.min(depth - 1);
        row.copy_within(..at, 1);
        row[0] = owner;
        // r < depth <= ROW here, or BEYOND.
        ranks[p] = if r < depth { r as u8 } else { BEYOND };
    }
    Assignment { table, ranks }
}

/// For each partition, the first vnode at or after its point (wrapping to 0).
pub(super) fn starts(vnodes: &Vnodes, bits: u32) -> Vec<u32> {
    let partitions = 1usize << bits;
    // Counting the vnodes in each partition and summing them up is branch-free, unlike
    // searching or merging.
    let mut starts = vec![0u32; partitions];
    for &position in &vnodes.positions {
        starts[(position >> (32 - bits)) as usize] += 1;
    }
    let mut before = 0u32;
    for start in &mut starts {
        let here = *start;
        *start = before;
        before += here;
    }
    // Past the last vnode the walk wraps to the first; vnodes.len() <= MAX_VNODES = 2^28.
    for start in starts.iter_mut().rev() {
        if *start as usize != vnodes.len() {
            break;
        }
        *start = 0;
    }
    starts
}

/// The vnodes in order of distance from a point, either direction, nearest first (ties go
/// clockwise), each with its distance.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outward {
    /// Nearest vnode not taken yet clockwise (at or after the point).
    right: usize,
    /// Nearest vnode not taken yet counter-clockwise (before the point).
    left: usize,
    /// Vnodes not taken yet.
    remaining: usize,
    point: u32,
}

impl Outward {
    /// The walk from `point`, whose first vnode clockwise is `start`, over `len > 0` vnodes.
    #[inline]
    pub(super) fn new(len: usize, start: usize, point: u32) -> Self {
        Self {
            right: start,
            left: if start == 0 { len - 1 } else { start - 1 },
            remaining: len,
            point,
        }
    }

    /// The vnodes taken so far: an arc around the point.
    pub(super) fn taken(&self, len: usize) -> impl Iterator<Item = usize> {
        let first = if self.left + 1 == len {
            0
        } else {
            self.left + 1
        };
        (0..len - self.remaining).map(move |k| (first + k) % len)
    }

    /// The next vnode's index and distance from the point, or `None` once all are taken.
    #[inline]
    pub(super) fn next(
        &mut self,
        positions: impl Fn(usize) -> u32,
        len: usize,
    ) -> Option<(usize, u32)> {
        let mut unused = u32::MAX;
        self.next_keeping(positions, len, &mut unused)
    }

    /// `next`, also lowering `slack` to how far clockwise the point could move and have this
    /// step take the same vnode. A vnode taken clockwise still would be (it only comes
    /// nearer); one taken counter-clockwise, at distance `left` against `right` clockwise,
    /// while `2 * moved < right - left`.
    #[inline]
    fn next_keeping(
        &mut self,
        positions: impl Fn(usize) -> u32,
        len: usize,
        slack: &mut u32,
    ) -> Option<(usize, u32)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let right = positions(self.right).wrapping_sub(self.point);
        let left = self.point.wrapping_sub(positions(self.left));
        if right <= left {
            let i = self.right;
            self.right = if i + 1 == len { 0 } else { i + 1 };
            Some((i, right))
        } else {
            *slack = (*slack).min((right - left - 1) / 2);
            let i = self.left;
            self.left = if i == 0 { len - 1 } else { i - 1 };
            Some((i, left))
        }
    }
}

/// The walk from partition `p`'s point over `vnodes`.
#[inline]
fn walk(vnodes: &Vnodes, starts: &[u32], p: usize, bits: u32) -> Outward {
    Outward::new(vnodes.len(), starts[p] as usize, partition_point(p, bits))
}

/// The first `depth` distinct members of a walk (the rest of the row repeats the first), and
/// the distance of the last of them.
#[inline]
pub(super) fn row_of(vnodes: &Vnodes, walk: Outward, depth: usize) -> ([u16; ROW], u32) {
    let (row, reach, _) = row_and_slack(vnodes, walk, depth);
    (row, reach)
}

/// `row_of`, and how far clockwise the walk's point could move with the same row: while it
/// stays at or before the first vnode clockwise, and every step of the walk takes the same
/// vnode.
#[inline]
fn row_and_slack(vnodes: &Vnodes, mut walk: Outward, depth: usize) -> ([u16; ROW], u32, u32) {
    let len = vnodes.len();
    let at = |i: usize| vnodes.positions[i];
    let mut slack = at(walk.right).wrapping_sub(walk.point);
    // A walk meets every member, and depth <= members.
    let Some((i, mut reach)) = walk.next_keeping(at, len, &mut slack) else {
        return ([0; ROW], 0, 0);
    };
    // Entries not found yet hold the first member, so comparing against all of them is a
    // correct repeat check; they also fill the row when there are fewer than ROW members.
    let mut row = [vnodes.members[i]; ROW];
    let mut k = 1;
    while k < depth {
        let Some((i, d)) = walk.next_keeping(at, len, &mut slack) else {
            break;
        };
        let m = vnodes.members[i];
        let repeat = row.iter().fold(false, |r, &f| r | (f == m));
        row[k] = m;
        k += usize::from(!repeat);
        reach = d;
    }
    (row, reach, slack)
}

/// Every partition's preference row: the first `depth` distinct members walking outward from
/// its point.
pub(super) fn preferences(
    vnodes: &Vnodes,
    bits: u32,
    starts: &[u32],
    depth: usize,
) -> Vec<[u16; ROW]> {
    let partitions = starts.len();
    let mut prefs = Vec::with_capacity(partitions);
    // Points closer together than the vnodes share rows: one walk serves every point up to
    // its slack (most of them when there are fewer vnodes than partitions).
    let shift = 32 - bits;
    while prefs.len() < partitions {
        let p = prefs.len();
        let (row, _, slack) = row_and_slack(vnodes, walk(vnodes, starts, p, bits), depth);
        let same = ((slack >> shift) as usize).min(partitions - 1 - p);
        prefs.resize(p + 1 + same, row);
    }
    prefs
}

/// The preference rows patched from `previous`, or `None` where walking them all is simpler
/// (a change of depth, or changes that reach around the ring).
pub(super) fn patched(
    vnodes: &Vnodes,
    bits: u32,
    starts: &[u32],
    depth: usize,
    previous: Previous<'_>,
) -> Option<Vec<[u16; ROW]>> {
    let partitions = starts.len();
    // Each changed vnode walks again the rows within reach of its neighbours, about 5 gaps
    // between vnodes and at least a row or two: past one changed vnode in 8, or one in 2
    // partitions, walking every row costs less.
    let changed = previous.changed.len();
    let many = changed.saturating_mul(8) > vnodes.len() || changed.saturating_mul(2) > partitions;
    if depth != ROW || previous.members < ROW || previous.table.len() != partitions || many {
        return None;
    }
    // Members that left are renumbered to 0 here; the patch below overwrites every row that
    // held one. A full table of 2^16 entries keeps the hot loop free of bounds checks.
    let mut renumber = vec![0u16; 1 << 16];
    for (new, old) in renumber.iter_mut().zip(previous.renumber) {
        *new = old.unwrap_or(0);
    }
    let mut prefs: Vec<[u16; ROW]> = previous
        .table
        .iter()
        .map(|row| row.map(|m| renumber[usize::from(m)]))
        .collect();
    for (p, &rank) in previous.ranks.iter().enumerate() {
        if rank == 0 {
            continue;
        }
        if rank == BEYOND {
            prefs[p] = row_of(vnodes, walk(vnodes, starts, p, bits), depth).0;
            continue;
        }
        // The owner came first; put it back where it stood.
        let pref = &mut prefs[p];
        let owner = pref[0];
        let rank = usize::from(rank).min(ROW - 1);
        pref.copy_within(1..=rank, 0);
        pref[rank] = owner;
    }
    let half = 1u32 << 31;
    let mask = partitions - 1;
    for &y in &previous.changed {
        // Partition q's row can hold the changed vnode only if it lies nearer to q's point
        // than the last member of q's row. Walking away from y, the first partition whose row
        // ends nearer than y does not hold it, and neither does any further out: its row's
        // members stay nearer to every point further out than y does.
        let first = (y >> (32 - bits)) as usize;
        // Clockwise from the first point after y, then counter-clockwise from the last at or
        // before it.
        for (mut q, clockwise) in [((first + 1) & mask, true), (first, false)] {
            loop {
                let point = partition_point(q, bits);
                let distance = if clockwise {
                    point.wrapping_sub(y)
                } else {
                    y.wrapping_sub(point)
                };
                if distance >= half {
                    return None;
                }
                let (row, reach) = row_of(vnodes, walk(vnodes, starts, q, bits), depth);
                prefs[q] = row;
                if reach < distance {
                    break;
                }
                q = if clockwise { q + 1 } else { q.wrapping_sub(1) } & mask;
            }
        }
    }
    Some(prefs)
}

/// Where each partition's owner stands in its preference list (from 0) under bounded load: the
/// stable assignment found by deferred acceptance (see the module docs).
pub(super) fn deferred_acceptance(
    vnodes: &Vnodes,
    bits: u32,
    capacity: &[u32],
    starts: &[u32],
    prefs: &[[u16; ROW]],
    depth: usize,
) -> Vec<u16> {
    let partitions = starts.len();
    // The order of asking does not change the result, so every partition asks its first
    // choice at once, and those turned away then ask on.
    let mut held = first_round(vnodes, bits, starts, prefs, capacity.len());
    let mut rank = vec![0u16; partitions];
    let mut waiting: Vec<u32> = Vec::new();
    for (m, heap) in held.iter_mut().enumerate() {
        let cap = capacity[m] as usize;
        if heap.len() > cap {
            // Keep the `cap` nearest; the rest ask their second choice.
            heap.select_nth_unstable(cap);
            for &key in &heap[cap..] {
                let p = key as u32;
                rank[p as usize] = 1;
                waiting.push(p);
            }
            heap.truncate(cap);
        }
        if heap.len() == cap {
            heapify(heap);
        }
    }
    // Member m holds up to capacity[m] partitions in held[m] as `distance << 32 | partition`,
    // a max-heap once full, so that the farthest is the one to give up.
    while let Some(p) = waiting.pop() {
        let r = usize::from(rank[p as usize]);
        let walk = walk(vnodes, starts, p as usize, bits);
        let asked = if r < depth {
            let m = prefs[p as usize][r];
            distance_to(vnodes, walk, m).map(|d| (m, d))
        } else {
            nth_choice(vnodes, walk, r)
        };
        let Some((m, distance)) = asked else {
            // Unreachable: capacities add up to at least P, so a partition that asked every
            // member found room. Leave it with its first choice rather than loop.
            continue;
        };
        let key = u64::from(distance) << 32 | u64::from(p);
        let m = usize::from(m);
        let cap = capacity[m] as usize;
        let heap = &mut held[m];
        if heap.len() < cap {
            heap.push(key);
            if heap.len() == cap {
                heapify(heap);
            }
        } else if heap.first().is_some_and(|&top| key < top) {
            let out = heap[0] as u32;
            heap[0] = key;
            sift_down(heap, 0);
            rank[out as usize] += 1;
            waiting.push(out);
        } else {
            rank[p as usize] += 1;
            waiting.push(p);
        }
    }
    // A partition's rank counts the members that turned it away: it stays with the last one
    // it asked.
    rank
}

/// Every partition asking its first choice: each member's askers as `distance << 32 |
/// partition`. Together they hold `P` entries, whatever the capacities (sized by capacity
/// they would add up to about `c * P`: 100 P at `c = 100`, 13 GB at 2^24 partitions, which
/// aborted the process where address space is limited; found by review).
pub(super) fn first_round(
    vnodes: &Vnodes,
    bits: u32,
    starts: &[u32],
    prefs: &[[u16; ROW]],
    members: usize,
) -> Vec<Vec<u64>> {
    let mut counts = vec![0u32; members];
    for row in prefs {
        counts[usize::from(row[0])] += 1;
    }
    let mut held: Vec<Vec<u64>> = counts
        .iter()
        .map(|&n| Vec::with_capacity(n as usize))
        .collect();
    let len = vnodes.len();
    for (p, (row, &start)) in prefs.iter().zip(starts).enumerate() {
        // The first choice's vnode is the nearer of the two around the point (ties clockwise).
        let point = partition_point(p, bits);
        let before = if start == 0 {
            len - 1
        } else {
            start as usize - 1
        };
        let right = vnodes.positions[start as usize].wrapping_sub(point);
        let left = point.wrapping_sub(vnodes.positions[before]);
        let distance = right.min(left);
        held[usize::from(row[0])].push(u64::from(distance) << 32 | p as u64);
    }
    held
}

/// The 32-bit ring position where partition `p` (of `2^bits`) starts.
#[inline]
pub(super) fn partition_point(p: usize, bits: u32) -> u32 {
    // p < 2^bits and bits <= MAX_PARTITION_BITS < 32.
    ((p as u64) << (32 - bits)) as u32
}

/// The distance from a walk's point to member `m`'s nearest vnode; `None` if `m` has none.
fn distance_to(vnodes: &Vnodes, mut walk: Outward, m: u16) -> Option<u32> {
    let len = vnodes.len();
    while let Some((i, d)) = walk.next(|i| vnodes.positions[i], len) {
        if vnodes.members[i] == m {
            return Some(d);
        }
    }
    None
}

/// Member number `rank` (from 0) among the distinct members a walk meets, with its distance;
/// `None` past the last member.
pub(super) fn nth_choice(vnodes: &Vnodes, mut walk: Outward, rank: usize) -> Option<(u16, u32)> {
    let len = vnodes.len();
    let mut inline = [0u16; 16];
    let mut spill = Vec::new();
    let mut found = 0usize;
    while let Some((i, d)) = walk.next(|i| vnodes.positions[i], len) {
        let m = vnodes.members[i];
        let seen = inline[..found.min(16)].contains(&m) || spill.contains(&m);
        if !seen {
            if found == rank {
                return Some((m, d));
            }
            if found < 16 {
                inline[found] = m;
            } else {
                spill.push(m);
            }
            found += 1;
        }
    }
    None
}

/// Makes `heap` a max-heap.
pub(super) fn heapify(heap: &mut [u64]) {
    for i in (0..heap.len() / 2).rev() {
        sift_down(heap, i);
    }
}

/// Restores the max-heap order below `i`.
pub(super) fn sift_down(heap: &mut [u64], mut i: usize) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut top = i;
        if l < heap.len() && heap[l] > heap[top] {
            top = l;
        }
        if r < heap.len() && heap[r] > heap[top] {
            top = r;
        }
        if top == i {
            return;
        }
        heap.swap(i, top);
        i = top;
    }
}
