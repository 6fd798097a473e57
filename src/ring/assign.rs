//! The partition table: preference lists walked from the vnodes, then deferred acceptance
//! under bounded load (the rule is in the module docs of `ring`).

use xxhash_rust::xxh3::xxh3_64;

use super::{ROW, RingConfig, member_of, position_of};

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
/// module docs for the rule.
pub(super) fn assign_partitions(
    config: &RingConfig,
    vnodes: &[u64],
    names: &[Box<str>],
    weights: &[u32],
) -> Vec<[u16; ROW]> {
    if weights.len() == 1 {
        // One member owns everything, in every row position: what the general rule gives, in
        // microseconds instead of milliseconds (every node starts as a ring of one).
        return vec![[0; ROW]; 1 << config.partition_bits];
    }
    assign_by_preference(config, vnodes, names, weights)
}

pub(super) fn assign_by_preference(
    config: &RingConfig,
    vnodes: &[u64],
    names: &[Box<str>],
    weights: &[u32],
) -> Vec<[u16; ROW]> {
    let bits = u32::from(config.partition_bits);
    let depth = ROW.min(weights.len());
    let (mut table, starts) = preferences(vnodes, bits, depth);
    if config.load_ppm() == 0 {
        return table;
    }
    let capacity = capacities(config, names, weights, starts.len());
    let owners = deferred_acceptance(config, vnodes, &capacity, &starts);
    for (row, owner) in table.iter_mut().zip(owners) {
        // The owner moves to the front; the members before it move back one place (the last
        // one drops out when the owner was not among the first `depth`).
        let at = row[..depth]
            .iter()
            .position(|&m| m == owner)
            .unwrap_or(depth - 1);
        row.copy_within(..at, 1);
        row[0] = owner;
    }
    table
}

/// Each partition's preference list (the first `depth` distinct members clockwise from its
/// point), and the vnode where each walk began.
pub(super) fn preferences(vnodes: &[u64], bits: u32, depth: usize) -> (Vec<[u16; ROW]>, Vec<u32>) {
    let partitions = 1usize << bits;
    // A partition's walk starts at the first vnode at or after its point: after all vnodes in
    // earlier partitions. Counting them is branch-free, unlike searching.
    let mut starts = vec![0u32; partitions + 1];
    for &v in vnodes {
        starts[(position_of(v) >> (32 - bits)) as usize + 1] += 1;
    }
    for p in 0..partitions {
        starts[p + 1] += starts[p];
    }
    starts.truncate(partitions);
    let mut prefs = vec![[0u16; ROW]; partitions];
    let next = |i: usize| if i + 1 == vnodes.len() { 0 } else { i + 1 };
    // The walk of the previous partition: a partition with no vnode since the previous one's
    // point starts at the same vnode, so it has the same list (most partitions, with fewer
    // vnodes than partitions).
    let mut last: Option<(u32, [u16; ROW])> = None;
    for (pref, start) in prefs.iter_mut().zip(&mut starts) {
        // Past the last vnode the walk wraps to the first; start < vnodes.len() <= 2^28.
        if *start as usize == vnodes.len() {
            *start = 0;
        }
        if let Some((s, row)) = last
            && s == *start
        {
            *pref = row;
            continue;
        }
        let mut i = *start as usize;
        // Entries not found yet hold the first member, so comparing against all of them is a
        // correct repeat check; they also fill the row when there are fewer than ROW members.
        *pref = [member_of(vnodes[i]); ROW];
        let mut k = 1;
        while k < depth {
            i = next(i);
            let m = member_of(vnodes[i]);
            let repeat = pref.iter().fold(false, |r, &f| r | (f == m));
            pref[k] = m;
            k += usize::from(!repeat);
        }
        if depth < ROW {
            pref[depth] = pref[0];
        }
        last = Some((*start, *pref));
    }
    (prefs, starts)
}

/// The owner of every partition under bounded load: the stable assignment found by deferred
/// acceptance (see the module docs).
pub(super) fn deferred_acceptance(
    config: &RingConfig,
    vnodes: &[u64],
    capacity: &[u32],
    starts: &[u32],
) -> Vec<u16> {
    let bits = u32::from(config.partition_bits);
    let partitions = starts.len();
    // Member m holds up to capacity[m] partitions in held[m], as a max-heap of
    // `distance << 32 | partition` once full, so that the farthest is the one to give up.
    let mut held = heaps(vnodes, capacity, starts);
    let mut rank = vec![0u16; partitions];
    // Partitions turned away, to ask their next choice. The order of asking does not change
    // the result, so each partition's chain is followed to its end before the next one asks.
    let mut waiting: Vec<u32> = Vec::new();
    for first in 0..partitions {
        // first < 2^bits <= 2^MAX_PARTITION_BITS.
        let mut next = Some(first as u32);
        while let Some(p) = next.take().or_else(|| waiting.pop()) {
            let r = usize::from(rank[p as usize]);
            let start = starts[p as usize] as usize;
            let asked = if r == 0 {
                Some((member_of(vnodes[start]), position_of(vnodes[start])))
            } else {
                nth_choice(vnodes, start, r)
            };
            let Some((m, position)) = asked else {
                // Unreachable: capacities add up to at least P, so a partition that asked
                // every member found room. Leave it with its first choice rather than loop.
                continue;
            };
            let distance = position.wrapping_sub(partition_point(p as usize, bits));
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
    }
    let mut owner: Vec<u16> = starts
        .iter()
        .map(|&s| member_of(vnodes[s as usize]))
        .collect();
    for (m, heap) in held.iter().enumerate() {
        for &key in heap {
            // m < members <= MAX_MEMBERS = 2^16.
            owner[key as u32 as usize] = m as u16;
        }
    }
    owner
}

/// Empty heaps for `deferred_acceptance`, each with room for its member's first choices (up to
/// its capacity). A heap grows only by what its member takes from others, so together they
/// hold at most `P` entries. Sized by capacity they would add up to about `c * P`: 100 P at
/// `c = 100`, 13 GB at 2^24 partitions, which aborted the process where address space is
/// limited (found by review).
pub(super) fn heaps(vnodes: &[u64], capacity: &[u32], starts: &[u32]) -> Vec<Vec<u64>> {
    let mut first_choices = vec![0u32; capacity.len()];
    for &s in starts {
        first_choices[usize::from(member_of(vnodes[s as usize]))] += 1;
    }
    first_choices
        .iter()
        .zip(capacity)
        .map(|(&f, &c)| Vec::with_capacity(f.min(c) as usize))
        .collect()
}

/// The 32-bit ring position where partition `p` (of `2^bits`) starts.
#[inline]
pub(super) fn partition_point(p: usize, bits: u32) -> u32 {
    // p < 2^bits and bits <= MAX_PARTITION_BITS < 32.
    ((p as u64) << (32 - bits)) as u32
}

/// Member number `rank` (from 0) among the distinct members met walking clockwise from vnode
/// `start`, with the position of the vnode where it is met; `None` past the last member.
pub(super) fn nth_choice(vnodes: &[u64], start: usize, rank: usize) -> Option<(u16, u32)> {
    let mut inline = [0u16; 16];
    let mut spill = Vec::new();
    let mut found = 0usize;
    let mut i = start;
    for _ in 0..vnodes.len() {
        let m = member_of(vnodes[i]);
        let seen = inline[..found.min(16)].contains(&m) || spill.contains(&m);
        if !seen {
            if found == rank {
                return Some((m, position_of(vnodes[i])));
            }
            if found < 16 {
                inline[found] = m;
            } else {
                spill.push(m);
            }
            found += 1;
        }
        i = if i + 1 == vnodes.len() { 0 } else { i + 1 };
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
