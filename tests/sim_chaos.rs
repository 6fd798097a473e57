//! Randomised fault schedules in the simulator: crashes, restarts, pauses, partitions (whole,
//! one-way, streams only), graceful leaves, writes (small, with TTLs, deletions, larger than a
//! datagram), readiness and ring weights, drawn from a seed over a lossy, duplicating, reordering network; then the
//! faults stop and the cluster must settle to one agreed truth.
//!
//! `SIM_SEEDS=n` runs more schedules (`SIM_SEED_SKIP=k` starts k seeds further on, for schedules
//! earlier runs did not try), `SIM_SEED=x` replays one; every failure names its seed
//! and prints the schedule that led to it. `CHAOS_STEPS` (default 40) and `CHAOS_GAP_MS` (the
//! longest pause between steps, default 2,000) make schedules longer or denser, and
//! `CHAOS_NODES` (default 10, at least 5) the cluster larger; `CHAOS_LOSS_PCT` (default 5)
//! sets the loss. Odd seeds
//! run with a keyring (every packet sealed); `CHAOS_KEYRING=0` or `1` forces it off or on.
//! `CHAOS_RING_MIN` (default 1) sets `Config::ring_min_members`, so that rings empty and fill
//! again as the faults take members away.
#![cfg(feature = "sim")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tidings::ring::KeyRange;
use tidings::sim::{NetConfig, Sim, seeds_from_env};
use tidings::{Config, Event, MemberStatus, NodeId};

fn config() -> Config {
    let mut c = Config::default();
    c.gossip_interval = Duration::from_millis(100);
    // Short graces, so that crashed and departed incarnations are dropped within a run.
    c.dead_grace = Duration::from_secs(6);
    c.left_grace = Duration::from_secs(4);
    c.forget_after = Duration::from_secs(30);
    c.tombstone_grace = Duration::from_secs(20);
    c.ring_settle = Duration::from_millis(500);
    c
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proc {
    Up,
    Crashed,
    Left,
}

/// The cluster's agreed truth, if it has settled: every node live everywhere, every node's
/// view of every other's keys equal to that node's own, one ring. `Err` says what differs.
fn settled(sim: &Sim) -> Result<(), String> {
    let n = sim.nodes.len();
    let ids: Vec<&NodeId> = (0..n).map(|i| sim.nodes[i].node.id()).collect();
    for i in 0..n {
        let node = &sim.nodes[i].node;
        let members: BTreeMap<String, (NodeId, MemberStatus)> = node
            .members()
            .map(|m| (m.id.name.clone(), (m.id.clone(), m.status)))
            .collect();
        if members.len() != n {
            return Err(format!(
                "node {i} has {} members: {members:?}",
                members.len()
            ));
        }
        for (j, id) in ids.iter().enumerate() {
            match members.get(&id.name) {
                Some((seen, MemberStatus::Alive)) if seen == *id => {}
                other => return Err(format!("node {i} sees node {j} ({id}) as {other:?}")),
            }
            let ready = node.members().find(|m| m.id == **id).map(|m| m.ready);
            let own_ready = sim.nodes[j]
                .node
                .members()
                .find(|m| m.id == **id)
                .map(|m| m.ready);
            if ready != own_ready {
                return Err(format!(
                    "node {i} sees node {j} ready {ready:?}, not {own_ready:?}"
                ));
            }
            let own: Vec<(&str, &Bytes)> = sim.nodes[j].node.local_state().iter().collect();
            let held: Vec<(&str, &Bytes)> = node
                .node_state(&id.name)
                .map(|s| s.iter().collect())
                .unwrap_or_default();
            if own != held {
                return Err(format!(
                    "node {i} holds {held:?} of node {j}, which has {own:?}"
                ));
            }
        }
        let fp = sim.nodes[0].node.ring().fingerprint();
        if node.ring().fingerprint() != fp || node.ring().num_members() != n {
            return Err(format!("node {i}'s ring differs from node 0's"));
        }
    }
    Ok(())
}

/// What an observer has said about one incarnation of another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Alive,
    Down,
    Left,
    Expired,
}

/// Checks the membership events node `i`'s current incarnation emitted (from index `since`
/// of its log): about each other incarnation, they follow the lifecycle (`Joined` first, `Up`
/// only after `Down`, nothing but `Expired` after `Left`, nothing but `Joined` after
/// `Expired`); none is about an incarnation older than one it already reported for the same
/// name (a restart replaces the old incarnation at once); and each key's values arrive in the
/// order they were written (values are `v{step}`), each once.
fn check_lifecycles(sim: &Sim, i: usize, since: usize) -> Result<(), String> {
    let me = &sim.nodes[i].node.id().name;
    let mut seen: BTreeMap<NodeId, Seen> = BTreeMap::new();
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    // The last value (the step that wrote it) reported for each incarnation's small keys.
    let mut values: BTreeMap<(NodeId, String), u64> = BTreeMap::new();
    for (t, e) in &sim.nodes[i].events[since..] {
        let Some(id) = e.node() else { continue };
        if &id.name == me {
            continue;
        }
        if let Event::Expired(_) = e {
            // Its state is dropped; if it comes back, every key is news again.
            values.retain(|(owner, _), _| owner != id);
        }
        if let Event::KeyUpserted { key, value, .. } = e
            && let Some(step) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.strip_prefix('v')?.parse::<u64>().ok())
            && let Some(last) = values.insert((id.clone(), key.clone()), step)
            && step <= last
        {
            return Err(format!(
                "node {i} at {t:?}: {e:?} after the value of step {last}: out of order"
            ));
        }
        let at = || format!("node {i} at {t:?}: {e:?} (after {:?})", seen.get(id));
        let newest = newest.entry(id.name.clone()).or_insert(id.generation.0);
        if id.generation.0 < *newest && !matches!(e, Event::Expired(_)) {
            return Err(format!("{}: a newer incarnation was reported", at()));
        }
        *newest = (*newest).max(id.generation.0);
        let state = seen.get(id).copied();
        let next = match (e, state) {
            // A burial is lifted when the incarnation itself proves it lives (a partition
            // outlasted `dead_grace`): it is then new to us again.
            (Event::Joined(_), None | Some(Seen::Expired)) => Seen::Alive,
            (_, Some(Seen::Expired)) => return Err(format!("{}: event after Expired", at())),
            (Event::Joined(_), Some(_)) => return Err(format!("{}: joined twice", at())),
            (_, None) => return Err(format!("{}: before Joined", at())),
            (Event::Up(_), Some(Seen::Down)) => Seen::Alive,
            (Event::Down(_), Some(Seen::Alive)) => Seen::Down,
            (Event::Up(_) | Event::Down(_), Some(s)) => {
                return Err(format!("{}: not a change from {s:?}", at()));
            }
            (Event::Left(_), Some(Seen::Alive | Seen::Down)) => Seen::Left,
            (Event::Left(_), Some(s)) => return Err(format!("{}: left from {s:?}", at())),
            (Event::Expired(_), Some(_)) => Seen::Expired,
            (_, Some(s)) => s,
        };
        seen.insert(id.clone(), next);
    }
    Ok(())
}

/// Replays the `Ownership` events node `i`'s current incarnation emitted (from index `since`)
/// as a service would, loading what it acquires and dropping what it relinquishes: it must
/// never acquire a partition it already holds nor relinquish one it does not, and what it ends
/// up holding must be exactly what its ring gives it now. A service that trusts the events must never lose or double a partition.
fn check_ownership(sim: &Sim, i: usize, since: usize) -> Result<(), String> {
    let node = &sim.nodes[i].node;
    let me = node.id().name.clone();
    let bits = node.ring().config().partition_bits;
    let shift = 64 - u32::from(bits);
    let low = u64::MAX >> (64 - shift);
    // Ownership is by partition, so every range is a whole run of partitions.
    let partitions = |ranges: &[KeyRange]| -> Result<Vec<usize>, String> {
        let mut out = Vec::new();
        for r in ranges {
            if r.start & low != 0 || r.end & low != low {
                return Err(format!("node {i}: {r:?} is not a run of whole partitions"));
            }
            out.extend((r.start >> shift) as usize..=(r.end >> shift) as usize);
        }
        Ok(out)
    };
    let mut held = vec![false; 1 << bits];
    for (t, e) in &sim.nodes[i].events[since..] {
        let Event::Ownership(change) = e else {
            continue;
        };
        for transfer in &change.handoff.acquired {
            for p in partitions(&transfer.ranges)? {
                if std::mem::replace(&mut held[p], true) {
                    return Err(format!(
                        "node {i} at {t:?}: acquired partition {p} it held (from {:?})",
                        transfer.peer
                    ));
                }
            }
        }
        for transfer in &change.handoff.relinquished {
            for p in partitions(&transfer.ranges)? {
                if !std::mem::replace(&mut held[p], false) {
                    return Err(format!(
                        "node {i} at {t:?}: relinquished partition {p} it did not hold (to {:?})",
                        transfer.peer
                    ));
                }
            }
        }
    }
    let mut owned = vec![false; 1 << bits];
    for p in partitions(&node.ring().ranges(&me))? {
        owned[p] = true;
    }
    if held != owned {
        let differ = (0..held.len()).filter(|&p| held[p] != owned[p]).count();
        return Err(format!(
            "node {i}: its events leave it holding {} partitions, its ring gives it {} \
             ({differ} differ)",
            held.iter().filter(|&&h| h).count(),
            owned.iter().filter(|&&o| o).count()
        ));
    }
    Ok(())
}

/// A node's keys for a failure message, long values by their length.
fn show(keys: Option<&BTreeMap<String, Bytes>>) -> String {
    let keys = keys
        .into_iter()
        .flatten()
        .map(|(k, v)| match std::str::from_utf8(v) {
            Ok(v) if v.len() <= 16 => format!("{k}={v}"),
            _ => format!("{k}=<{} bytes>", v.len()),
        });
    format!("{{{}}}", keys.collect::<Vec<_>>().join(", "))
}

/// Replays the key events node `i`'s current incarnation emitted (from index `since`) as a
/// service mirroring its peers' state would (`KeyUpserted` sets, `KeyDeleted` removes,
/// `Expired` drops the incarnation): once settled, the mirror must hold exactly each other
/// node's own state under its current incarnation, and nothing of an older one.
fn check_key_mirror(sim: &Sim, i: usize, since: usize) -> Result<(), String> {
    let me = sim.nodes[i].node.id().name.clone();
    let mut mirror: BTreeMap<NodeId, BTreeMap<String, Bytes>> = BTreeMap::new();
    for (_, e) in &sim.nodes[i].events[since..] {
        match e {
            Event::KeyUpserted { node, key, value } => {
                mirror
                    .entry(node.clone())
                    .or_default()
                    .insert(key.clone(), value.clone());
            }
            Event::KeyDeleted { node, key } => {
                mirror.entry(node.clone()).or_default().remove(key);
            }
            Event::Expired(node) => {
                mirror.remove(node);
            }
            _ => {}
        }
    }
    mirror.retain(|id, keys| id.name != me && !keys.is_empty());
    let mut truth: BTreeMap<NodeId, BTreeMap<String, Bytes>> = BTreeMap::new();
    for other in &sim.nodes {
        let own: BTreeMap<String, Bytes> = other
            .node
            .local_state()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        if other.node.id().name != me && !own.is_empty() {
            truth.insert(other.node.id().clone(), own);
        }
    }
    if mirror != truth {
        let ids: BTreeSet<&NodeId> = mirror.keys().chain(truth.keys()).collect();
        let differ: Vec<String> = ids
            .into_iter()
            .filter(|id| mirror.get(*id) != truth.get(*id))
            .map(|id| {
                format!(
                    "{id}: events {}, state {}",
                    show(mirror.get(id)),
                    show(truth.get(id))
                )
            })
            .collect();
        return Err(format!(
            "node {i}'s key events do not add up to the cluster's state: {}",
            differ.join("; ")
        ));
    }
    Ok(())
}

/// Replays the membership events node `i`'s current incarnation emitted (from index `since`)
/// as a service tracking its peers would: once settled, every other node's current
/// incarnation must be alive by them, and every older or departed incarnation expired.
fn check_member_mirror(sim: &Sim, i: usize, since: usize) -> Result<(), String> {
    let me = sim.nodes[i].node.id().name.clone();
    let mut mirror: BTreeMap<NodeId, Seen> = BTreeMap::new();
    for (_, e) in &sim.nodes[i].events[since..] {
        let seen = match e {
            Event::Joined(_) | Event::Up(_) => Seen::Alive,
            Event::Down(_) => Seen::Down,
            Event::Left(_) => Seen::Left,
            Event::Expired(_) => Seen::Expired,
            _ => continue,
        };
        if let Some(id) = e.node().filter(|id| id.name != me) {
            mirror.insert(id.clone(), seen);
        }
    }
    let current: BTreeSet<&NodeId> = sim.nodes.iter().map(|n| n.node.id()).collect();
    for (id, seen) in &mirror {
        let want = if current.contains(id) {
            Seen::Alive
        } else {
            Seen::Expired
        };
        if *seen != want {
            return Err(format!(
                "node {i}'s membership events leave {id} {seen:?}, not {want:?}"
            ));
        }
    }
    match current
        .iter()
        .find(|id| id.name != me && !mirror.contains_key(**id))
    {
        Some(id) => Err(format!("node {i} never reported {id} joining")),
        None => Ok(()),
    }
}

/// `check_lifecycles` for every node's current incarnation.
fn check_all(sim: &Sim, since: &[usize]) -> Result<(), String> {
    since
        .iter()
        .enumerate()
        .try_for_each(|(i, &from)| check_lifecycles(sim, i, from))
}

/// One schedule: about 40 random steps over a minute or so of virtual time, then recovery.
fn run_schedule(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A0_5000);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let net = NetConfig {
        loss: env("CHAOS_LOSS_PCT", 5).min(90) as f64 / 100.0,
        duplicate: 0.02,
        reorder: 0.05,
        ..NetConfig::default()
    };
    // Odd seeds seal every packet: replay windows and nonces then meet the same duplicates,
    // restarts and pauses (`CHAOS_KEYRING=0` or `1` forces one or the other).
    let keyed = env("CHAOS_KEYRING", 2).min(2);
    let mut c = config();
    c.ring_min_members = env("CHAOS_RING_MIN", 1) as usize;
    let sealed = keyed == 1 || (keyed == 2 && seed % 2 == 1);
    let key = |g: u8| [0x5E ^ g; 32];
    if sealed {
        c.keyring = Some(tidings::Keyring::new(key(0)));
    }
    // Sealed runs rotate keys in three steps, each rolled out to every node (and to the
    // config restarts use) before the next: the next key added, made primary, the old one
    // removed. `rotation` counts steps taken.
    let mut rotation: u8 = 0;
    let n = env("CHAOS_NODES", 10).max(5) as usize;
    let mut sim = Sim::new(seed, c, net);
    sim.record_events(true);
    for _ in 0..n {
        sim.add_node();
    }
    sim.join_all_via(&[0, 1]);
    sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
        .unwrap_or_else(|_| panic!("seed {seed}: the cluster did not form"));
    let mut procs = vec![Proc::Up; n];
    let mut paused_until = vec![Duration::ZERO; n];
    let mut log: Vec<String> = Vec::new();
    // Where each node's current incarnation's events begin in its event log.
    let mut since = vec![0usize; n];
    let restart = |sim: &mut Sim, since: &mut [usize], i: usize| {
        since[i] = sim.nodes[i].events.len();
        sim.restart(i);
    };
    let steps = env("CHAOS_STEPS", 40);
    let gap_ms = env("CHAOS_GAP_MS", 2_000);
    for step in 0..steps {
        check_all(&sim, &since)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\nschedule:\n{}", log.join("\n")));
        sim.run_for(Duration::from_millis(rng.random_range(50..gap_ms)));
        let now = sim.elapsed();
        // Nodes that run and are not frozen: the ones a fault or a write can act on.
        let active: Vec<usize> = (0..n)
            .filter(|&i| procs[i] == Proc::Up && paused_until[i] <= now)
            .collect();
        let pick = |rng: &mut StdRng, from: &[usize]| from[rng.random_range(0..from.len())];
        let action = rng.random_range(0..16);
        let entry = match action {
            // Keep at least four nodes active, so that faults do not simply stop the cluster.
            0 if active.len() > 4 => {
                let i = pick(&mut rng, &active);
                sim.crash(i);
                procs[i] = Proc::Crashed;
                format!("crash {i}")
            }
            1 => {
                let down: Vec<usize> = (0..n).filter(|&i| procs[i] != Proc::Up).collect();
                if down.is_empty() {
                    continue;
                }
                let i = pick(&mut rng, &down);
                restart(&mut sim, &mut since, i);
                procs[i] = Proc::Up;
                paused_until[i] = Duration::ZERO;
                format!("restart {i}")
            }
            2 if !active.is_empty() => {
                // A restart so quick that peers still hold the old incarnation as alive.
                let i = pick(&mut rng, &active);
                restart(&mut sim, &mut since, i);
                format!("quick restart {i}")
            }
            3 if active.len() > 4 => {
                let i = pick(&mut rng, &active);
                let d = Duration::from_millis(rng.random_range(300..5_000));
                sim.pause(i, d);
                paused_until[i] = now + d;
                format!("pause {i} for {d:?}")
            }
            4 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for i in 0..n {
                    if rng.random_bool(0.5) { &mut a } else { &mut b }.push(i);
                }
                sim.partition(&a, &b);
                format!("partition {a:?} | {b:?}")
            }
            5 => {
                sim.heal();
                "heal".to_owned()
            }
            6 if active.len() > 4 => {
                let i = pick(&mut rng, &active);
                sim.with_node(i, |node, now| node.leave(now));
                procs[i] = Proc::Left;
                format!("leave {i}")
            }
            7 => {
                // An asymmetric cut: `from` is not heard by `to`, which it still hears.
                let from = rng.random_range(0..n);
                let to = (from + rng.random_range(1..n)) % n;
                sim.cut_one_way(from, to);
                format!("cut {from} -> {to}")
            }
            8 => {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                sim.cut_streams(a, b);
                format!("cut streams {a} <-> {b}")
            }
            9 if !active.is_empty() => {
                let i = pick(&mut rng, &active);
                let ready = rng.random_bool(0.5);
                let weight = [0.5, 1.0, 2.0][rng.random_range(0..3)];
                sim.with_node(i, |node, now| {
                    node.set_ready(now, ready)?;
                    node.set_weight(now, weight)
                })
                .unwrap_or_else(|e| panic!("seed {seed}: ready/weight on {i}: {e}"));
                format!("ready {ready}, weight {weight} on {i}")
            }
            10 if !active.is_empty() => {
                // Larger than any datagram: it can only travel by stream.
                let i = pick(&mut rng, &active);
                let value = vec![step as u8; 3_000];
                sim.with_node(i, |node, now| node.set(now, "big", value))
                    .unwrap_or_else(|e| panic!("seed {seed}: big write on {i}: {e}"));
                format!("write big on {i}")
            }
            11 if sealed => {
                let g = rotation / 3;
                let ring = match rotation % 3 {
                    0 => tidings::Keyring::new(key(g)).with_key(key(g + 1)),
                    1 => tidings::Keyring::new(key(g + 1)).with_key(key(g)),
                    _ => tidings::Keyring::new(key(g + 1)),
                };
                rotation += 1;
                // Rolled out node by node, as a config push goes: nodes a step apart talk.
                let mut order: Vec<usize> = (0..n).collect();
                for k in (1..n).rev() {
                    order.swap(k, rng.random_range(0..=k));
                }
                for i in order {
                    sim.with_node(i, |node, _| {
                        node.set_keyring(Some(ring.clone()), false, false)
                    })
                    .unwrap_or_else(|e| panic!("seed {seed}: keyring on {i}: {e}"));
                    sim.run_for(Duration::from_millis(rng.random_range(0..100)));
                }
                let mut c = sim.config().clone();
                c.keyring = Some(ring);
                sim.set_config(c);
                format!("key rotation step {rotation}")
            }
            _ if !active.is_empty() => {
                let i = pick(&mut rng, &active);
                let key = format!("k{}", rng.random_range(0..6));
                let value = format!("v{step}");
                let what = rng.random_range(0..4);
                sim.with_node(i, |node, now| match what {
                    0 => node.delete(now, &key),
                    1 => node.set_with_ttl(now, &key, value.clone(), Duration::from_secs(2)),
                    _ => node.set(now, &key, value.clone()),
                })
                .unwrap_or_else(|e| panic!("seed {seed}: write on {i}: {e}"));
                format!("write {what} {key}={value} on {i}")
            }
            _ => continue,
        };
        log.push(format!("{:>8.1?} {entry}", sim.elapsed()));
    }
    // Recovery: the network heals, frozen nodes thaw, every node that is not running starts
    // again.
    let thawed = paused_until.iter().max().copied().unwrap_or_default();
    sim.run_for(thawed.saturating_sub(sim.elapsed()));
    sim.heal();
    for (i, p) in procs.iter().enumerate() {
        if *p != Proc::Up {
            restart(&mut sim, &mut since, i);
        }
    }
    log.push(format!("{:>8.1?} heal, restart all", sim.elapsed()));
    // Within `dead_grace` plus `forget_after`-free time: crashed incarnations are replaced by
    // their restarts at once, TTLs are 2 s, and a join retries within seconds.
    if let Err(e) = sim.run_until(Duration::from_secs(60), |s| settled(s).is_ok()) {
        panic!(
            "seed {seed}: not settled 60 s after the faults stopped ({e:?}): {}\nschedule:\n{}",
            settled(&sim).unwrap_err(),
            log.join("\n")
        );
    }
    // And it stays settled: nothing flaps once the faults are over.
    let downs: u64 = (0..n).map(|i| sim.nodes[i].node.stats().downs).sum();
    sim.run_for(Duration::from_secs(20));
    if let Err(e) = settled(&sim) {
        panic!(
            "seed {seed}: settled, then {e}\nschedule:\n{}",
            log.join("\n")
        );
    }
    check_all(&sim, &since)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\nschedule:\n{}", log.join("\n")));
    for (i, &from) in since.iter().enumerate() {
        check_ownership(&sim, i, from)
            .and_then(|()| check_key_mirror(&sim, i, from))
            .and_then(|()| check_member_mirror(&sim, i, from))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\nschedule:\n{}", log.join("\n")));
    }
    // Every restart takes a new generation: no node may have seen a copy of itself past what
    // it sent (and so rebased its state).
    for i in 0..n {
        let s = sim.nodes[i].node.stats();
        assert_eq!(
            (s.identity_conflicts, s.identity_rebases),
            (0, 0),
            "seed {seed}: node {i} saw a copy of itself it never sent\nschedule:\n{}",
            log.join("\n")
        );
        // Every packet here is genuine (duplicates are refused as replays, which is right):
        // none may be taken for a malformed, foreign or forged one, except one sealed under
        // a key removed while it waited (in flight, or at a frozen node).
        let removed_keys = rotation >= 3;
        let refused = [
            s.rx_malformed,
            s.rx_bad_version,
            s.rx_foreign_cluster,
            if removed_keys { 0 } else { s.rx_auth_failed },
            s.rx_plaintext_refused,
            s.rx_oversized,
        ];
        assert_eq!(
            refused,
            [0; 6],
            "seed {seed}: node {i} refused genuine packets\nschedule:\n{}",
            log.join("\n")
        );
    }
    // The network duplicates packets: sealed, the copies are refused as replays (so the
    // keyring was in use); in plaintext nothing is.
    let replayed: u64 = (0..n).map(|i| sim.nodes[i].node.stats().rx_replayed).sum();
    assert_eq!(replayed > 0, sealed, "seed {seed}: {replayed} replays");
    let after: u64 = (0..n).map(|i| sim.nodes[i].node.stats().downs).sum();
    assert_eq!(
        after, downs,
        "seed {seed}: false downs once the faults stopped"
    );
}

#[test]
fn random_fault_schedules_settle_to_one_truth() {
    for seed in seeds_from_env(8) {
        run_schedule(seed);
    }
}
