//! Simulator tests: every scenario at small scale, determinism, and the membership lifecycle.
//!
//! Each test runs over seeds (`SIM_SEEDS=n` for more, `SIM_SEED=x` to replay one); every
//! assertion message names its seed.
#![cfg(feature = "sim")]

use std::time::Duration;

use bytes::Bytes;

use tidings::sim::{NetConfig, Scenario, ScenarioOptions, Sim, run_scenario, seeds_from_env};
use tidings::{Config, Event, MemberStatus, NodeId};

fn config() -> Config {
    let mut c = Config::default();
    c.gossip_interval = Duration::from_millis(100);
    c
}

fn opts(nodes: usize, seed: u64) -> ScenarioOptions {
    let mut o = ScenarioOptions::new(nodes, seed);
    o.config = config();
    o.limit = Duration::from_secs(120);
    o.warmup = Duration::from_secs(10);
    o
}

/// The `Ownership` events node `i` recorded, in order.
fn ownership_events(sim: &Sim, i: usize) -> Vec<tidings::OwnershipChange> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Ownership(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// The nodes node `i` recorded `Down` events for, other than those named in `except`.
fn convicted_except<'a>(sim: &'a Sim, i: usize, except: &[&str]) -> Vec<&'a str> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Down(id) if !except.contains(&id.name.as_str()) => Some(id.name.as_str()),
            _ => None,
        })
        .collect()
}

/// `n` nodes joining through nodes 0 and 1, the last (returned with the simulator) with
/// `config()` changed by `change`, the others with `config()` itself.
fn joining_with_one_configured(
    seed: u64,
    n: usize,
    change: impl FnOnce(&mut Config),
) -> (Sim, usize) {
    let mut sim = Sim::new(seed, config(), NetConfig::default());
    for _ in 0..n - 1 {
        sim.add_node();
    }
    let mut c = config();
    change(&mut c);
    sim.set_config(c);
    let last = sim.add_node();
    sim.join_all_via(&[0, 1]);
    (sim, last)
}

fn cluster(n: usize, seed: u64, net: NetConfig) -> Sim {
    cluster_configured(n, seed, config(), net)
}

/// `n` nodes on `config()`, each joined through node 0, recording events from the start, after
/// 10 virtual seconds.
fn formed_recording_events(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(seed, config(), NetConfig::default());
    sim.record_events(true);
    for i in 0..n {
        sim.add_node();
        sim.join(i, &[0]);
    }
    sim.run_for(Duration::from_secs(10));
    sim
}

/// `cluster` with every node on `config`.
fn cluster_configured(n: usize, seed: u64, config: Config, net: NetConfig) -> Sim {
    let mut sim = Sim::new(seed, config, net);
    for _ in 0..n {
        sim.add_node();
    }
    sim.join_all_via(&[0, 1]);
    sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
        .unwrap_or_else(|_| panic!("seed {seed}: cluster of {n} did not form"));
    sim
}

/// The distinct datagrams node `from` sends, as an eavesdropper on the network captures them,
/// until `enough` are held or `within` of virtual time has passed. The network is looked at
/// every 0.1 ms, under the least latency (0.2 ms), so that no datagram is delivered unseen:
/// looked at every 20 ms, a schedule whose sends and deliveries all fell between two looks
/// spun for good (seed skip 3,000 in one test, 4,000 in another).
fn capture(sim: &mut Sim, from: usize, enough: usize, within: Duration) -> Vec<(usize, Bytes)> {
    let mut captured: Vec<(usize, Bytes)> = Vec::new();
    let give_up = sim.now() + within;
    while captured.len() < enough && sim.now() < give_up {
        for d in sim.datagrams_in_flight_from(from) {
            if !captured.contains(&d) {
                captured.push(d);
            }
        }
        sim.run_for(Duration::from_micros(100));
    }
    captured
}

#[test]
fn every_scenario_converges_at_small_scale() {
    for seed in seeds_from_env(2) {
        for scenario in Scenario::ALL {
            let r = run_scenario(scenario, &opts(24, seed)).unwrap();
            assert!(
                r.converged,
                "seed {seed}: {scenario} did not converge\n{}",
                r.table()
            );
            assert!(
                r.max_datagram <= 1400,
                "seed {seed}: {scenario} datagram {}",
                r.max_datagram
            );
            assert_eq!(
                r.false_downs,
                0,
                "seed {seed}: {scenario} false downs\n{}",
                r.table()
            );
            // Churn's rounds count from the last restart, not across the minute of restarts
            // (that read about 60 s on every run).
            if scenario == Scenario::Churn {
                assert!(
                    r.virtual_ms < 10_000,
                    "seed {seed}: churn took {} ms",
                    r.virtual_ms
                );
            }
            // A cold start joins over streams: the stream message rate is measured.
            if scenario == Scenario::ColdStart {
                assert!(r.frames_per_node_per_s > 0.0, "seed {seed}\n{}", r.table());
            }
        }
    }
}

/// `false_downs` exempts the incarnations a scenario took down on purpose, not their names:
/// in churn, a restarted node's live new incarnation marked down is a false down. A detector
/// set far too eager on a lossy network marks nearly everyone down; exempting the 4 restarted
/// names capped the count at 36 of 40.
#[test]
fn churn_counts_false_downs_of_restarted_nodes_new_incarnations() {
    let mut o = opts(40, 1);
    o.config.phi_threshold = 1.5;
    o.loss = 0.3;
    let r = run_scenario(Scenario::Churn, &o).unwrap();
    assert!(r.false_downs > 36, "{}", r.table());
}

#[test]
fn same_seed_gives_the_same_trace_and_another_seed_does_not() {
    let a = run_scenario(Scenario::Churn, &opts(16, 7)).unwrap();
    let b = run_scenario(Scenario::Churn, &opts(16, 7)).unwrap();
    let c = run_scenario(Scenario::Churn, &opts(16, 8)).unwrap();
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.summary_line(), b.summary_line());
    assert_ne!(a.trace, c.trace);
}

/// Runs 120 nodes (enough for windows to go to several cores) through a cold start at 10 %
/// loss, a crash, a pause and a write, and returns what can tell two runs apart.
fn eventful_run(seed: u64, parallel: bool) -> (u64, tidings::sim::NetStats, Vec<usize>) {
    let net = NetConfig {
        loss: 0.1,
        duplicate: 0.02,
        reorder: 0.02,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, config(), net);
    sim.set_parallel(parallel);
    let n = 120;
    for _ in 0..n {
        sim.add_node();
    }
    sim.join_all_via(&[0, 1, 2]);
    sim.run_for(Duration::from_secs(3));
    sim.crash(5);
    sim.pause(6, Duration::from_millis(700));
    sim.set(7, "k", "v");
    sim.run_for(Duration::from_secs(3));
    let live = (0..n).map(|i| sim.nodes[i].node.num_live()).collect();
    (sim.trace_hash(), sim.net_stats(), live)
}

#[test]
fn parallel_windows_give_the_same_run_as_one_core() {
    for seed in seeds_from_env(1) {
        let one = eventful_run(seed, false);
        let many = eventful_run(seed, true);
        assert_eq!(one, many, "seed {seed}");
        assert!(
            one.1.lost > 0 && one.1.datagrams > 10_000,
            "seed {seed}: {:?}",
            one.1
        );
    }
}

#[test]
fn update_reaches_everyone_in_few_rounds() {
    for seed in seeds_from_env(4) {
        let r = run_scenario(Scenario::Update, &opts(64, seed)).unwrap();
        // ceil(log2 64) + 3
        assert!(
            r.converged && r.rounds <= 9,
            "seed {seed}: {} rounds",
            r.rounds
        );
    }
}

#[test]
fn crashed_node_is_detected_by_all_within_fifteen_intervals() {
    for seed in seeds_from_env(3) {
        let mut o = opts(32, seed);
        o.loss = 0.05;
        let r = run_scenario(Scenario::Crash, &o).unwrap();
        assert!(r.converged, "seed {seed}");
        let (_, max) = r.detection_ms.expect("detected");
        assert!(max <= 1500, "seed {seed}: detection max {max} ms");
        assert_eq!(r.false_downs, 0, "seed {seed}");
    }
}

/// A pause longer than 128 intervals (14 s at 100 ms): the paused node catches up on
/// heartbeats many seconds old. It must not pass them on as fresh one-byte beats, which
/// peers holding newer values read as up to 128 beats ahead of the truth (every node then
/// convicted about ten live peers), and must not learn the pause as an age: afterwards it
/// detects a crash as fast as the others.
#[test]
fn a_long_pause_moves_nobody_else_and_the_paused_node_still_detects_in_time() {
    for seed in seeds_from_env(2) {
        let n = 12;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(10));
        sim.record_events(true);
        sim.pause(3, Duration::from_secs(14));
        sim.run_for(Duration::from_secs(30));
        let paused = sim.nodes[3].node.id().name.clone();
        for i in 0..n {
            let others_down: Vec<String> = sim.nodes[i]
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Down(id) if id.name != paused => Some(id.name.clone()),
                    _ => None,
                })
                .collect();
            assert!(
                others_down.is_empty(),
                "seed {seed}: node {i} convicted {others_down:?}"
            );
        }
        assert!(sim.all_see_live(n), "seed {seed}");
        // Then a crash: the node that paused detects it about when the others do.
        sim.record_events(true);
        let victim = 7;
        let name = sim.nodes[victim].node.id().name.clone();
        sim.crash(victim);
        let t = sim.now();
        sim.run_for(Duration::from_secs(10));
        let detect = |i: usize| {
            sim.nodes[i]
                .events
                .iter()
                .find(|(_, e)| matches!(e, Event::Down(id) if id.name == name))
                .map(|(at, _)| *at - t)
                .unwrap_or_else(|| panic!("seed {seed}: node {i} never convicted the crashed node"))
        };
        let slowest_other = (0..n)
            .filter(|&i| i != 3 && i != victim)
            .map(detect)
            .max()
            .unwrap_or_default();
        assert!(
            detect(3) <= slowest_other + Duration::from_millis(300),
            "seed {seed}: the paused node took {:?}, the others at most {slowest_other:?}",
            detect(3)
        );
    }
}

#[test]
fn paused_node_goes_down_then_up_and_nothing_else_moves() {
    for seed in seeds_from_env(2) {
        let n = 12;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.record_events(true);
        sim.run_for(Duration::from_secs(10));
        sim.pause(3, Duration::from_secs(2));
        sim.run_for(Duration::from_secs(6));
        let paused = sim.nodes[3].node.id().clone();
        for i in sim.running().filter(|&i| i != 3) {
            let evs: Vec<&Event> = sim.nodes[i].events.iter().map(|(_, e)| e).collect();
            let about: Vec<&&Event> = evs
                .iter()
                .filter(|e| matches!(e, Event::Down(_) | Event::Up(_)))
                .collect();
            assert_eq!(
                about,
                vec![&&Event::Down(paused.clone()), &&Event::Up(paused.clone())],
                "seed {seed}: node {i} saw {about:?}"
            );
        }
        // Only the paused node skipped learning the ages of the heartbeats it caught up on.
        for i in sim.running() {
            let skipped = sim.nodes[i].node.stats().ages_not_learned;
            assert_eq!(
                skipped > 0,
                i == 3,
                "seed {seed}: node {i} skipped {skipped}"
            );
        }
        // The paused node itself forgave its own silence: it convicted nobody.
        assert!(
            sim.nodes[3]
                .events
                .iter()
                .all(|(_, e)| !matches!(e, Event::Down(_))),
            "seed {seed}"
        );
        assert!(sim.all_see_live(n), "seed {seed}");
    }
}

#[test]
fn a_node_running_late_learns_no_ages_until_it_is_punctual_again() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.record_events(true);
        sim.run_for(Duration::from_secs(5));
        // Its next round comes 1.5 to 2.5 intervals late: an overloaded node, not a paused one
        // (3 intervals).
        sim.pause(2, Duration::from_millis(250));
        sim.run_for(Duration::from_secs(5));
        for i in sim.running() {
            let stats = sim.nodes[i].node.stats();
            assert_eq!(stats.pauses_detected, 0, "seed {seed}: node {i}");
            assert_eq!(
                stats.ages_not_learned > 0,
                i == 2,
                "seed {seed}: node {i} skipped {}",
                stats.ages_not_learned
            );
            // Health recovered with the next punctual rounds.
            assert_eq!(stats.local_health, 0, "seed {seed}: node {i}");
        }
        for i in sim.running() {
            assert!(
                sim.nodes[i]
                    .events
                    .iter()
                    .all(|(_, e)| !matches!(e, Event::Down(_))),
                "seed {seed}: node {i}"
            );
        }
    }
}

#[test]
fn graceful_leave_is_seen_as_left_not_down() {
    for seed in seeds_from_env(3) {
        let n = 10;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.record_events(true);
        sim.with_node(4, |node, now| node.leave(now));
        sim.run_for(Duration::from_secs(3));
        assert!(
            sim.nodes[4].node.has_left(),
            "seed {seed}: leave did not complete"
        );
        let left = sim.nodes[4].node.id().clone();
        for i in (0..n).filter(|&i| i != 4) {
            assert_eq!(
                sim.nodes[i].node.status(&left.name),
                Some(MemberStatus::Left),
                "seed {seed}: node {i}"
            );
            assert!(
                sim.nodes[i]
                    .events
                    .iter()
                    .all(|(_, e)| *e != Event::Down(left.clone())),
                "seed {seed}: node {i} saw the leaver as down"
            );
            assert_eq!(sim.nodes[i].node.num_live(), n - 1);
        }
        // A completed leave makes the node quiet.
        assert_eq!(sim.nodes[4].node.poll_timeout(), None);
    }
}

#[test]
fn restart_replaces_the_old_generation_at_once() {
    for seed in seeds_from_env(3) {
        let n = 10;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.set(5, "old-only", "x");
        sim.run_for(Duration::from_secs(2));
        let old = sim.nodes[5].node.id().clone();
        sim.restart(5);
        let new = sim.nodes[5].node.id().clone();
        assert!(new.generation > old.generation);
        // Replaced well before a crash could be detected.
        let took = sim
            .run_until(Duration::from_secs(10), |s| {
                (0..n).all(|i| {
                    s.nodes[i]
                        .node
                        .node_state(&new.name)
                        .map(|st| st.id().clone())
                        == Some(new.clone())
                })
            })
            .unwrap_or_else(|_| panic!("seed {seed}: new generation not everywhere"));
        assert!(
            took < Duration::from_millis(800),
            "seed {seed}: took {took:?}"
        );
        for i in 0..n {
            assert_eq!(
                sim.nodes[i].node.get(&new.name, "old-only"),
                None,
                "seed {seed}"
            );
            assert_eq!(
                sim.nodes[i].node.status(&new.name),
                Some(MemberStatus::Alive)
            );
        }
    }
}

/// A restart that reused its generation, through 5 % loss: the node rebases its state past
/// the previous run's copy, and every peer ends with exactly the new run's keys (before, they
/// kept the previous run's and refused the new run's writes until it expired everywhere).
#[test]
fn a_restart_reusing_its_generation_replaces_the_previous_runs_keys_everywhere() {
    for seed in seeds_from_env(2) {
        let n = 30;
        let net = NetConfig {
            loss: 0.05,
            ..NetConfig::default()
        };
        let mut sim = cluster(n, seed, net);
        for k in 0..40 {
            sim.set(5, &format!("old{k}"), "x");
        }
        sim.run_for(Duration::from_secs(3));
        sim.crash(5);
        sim.run_for(Duration::from_secs(1));
        let id = sim.nodes[5].node.id().clone();
        sim.restart_reusing_generation(5);
        assert_eq!(sim.nodes[5].node.id(), &id);
        for k in 0..5 {
            sim.set(5, &format!("new{k}"), "y");
        }
        let holds_new_run = |s: &Sim| {
            let own: Vec<(&str, &Bytes)> = s.nodes[5].node.local_state().iter().collect();
            (0..n).filter(|&i| i != 5).all(|i| {
                s.nodes[i].node.status(&id.name) == Some(MemberStatus::Alive)
                    && s.nodes[i]
                        .node
                        .node_state(&id.name)
                        .is_some_and(|st| st.iter().collect::<Vec<_>>() == own)
            })
        };
        sim.run_until(Duration::from_secs(20), holds_new_run)
            .unwrap_or_else(|_| panic!("seed {seed}: peers kept the previous run's keys"));
        // Later writes arrive as usual, and one rebase did it.
        sim.set(5, "later", "z");
        sim.run_until(Duration::from_secs(10), holds_new_run)
            .unwrap_or_else(|_| panic!("seed {seed}: a write after the rebase did not arrive"));
        assert_eq!(sim.nodes[5].node.stats().identity_rebases, 1, "seed {seed}");
        assert_eq!(sim.nodes[5].node.local_state().iter().count(), 6);
    }
}

#[test]
fn no_ghost_state_after_churn() {
    for seed in seeds_from_env(2) {
        let n = 20;
        let mut sim = cluster(n, seed, NetConfig::default());
        for i in 0..n {
            sim.set(i, "gen-key", &format!("{i}"));
        }
        for round in 0..3 {
            for i in (0..n).filter(|i| i % 4 == round) {
                sim.restart(i);
                sim.run_for(Duration::from_millis(300));
            }
        }
        sim.run_for(Duration::from_secs(5));
        let current: Vec<_> = (0..n).map(|i| sim.nodes[i].node.id().clone()).collect();
        for i in 0..n {
            for id in &current {
                let st = sim.nodes[i].node.node_state(&id.name).expect("known");
                assert_eq!(
                    st.id(),
                    id,
                    "seed {seed}: node {i} holds an old incarnation"
                );
            }
            // Every member is a current incarnation: nothing of an old one is left.
            assert_eq!(sim.nodes[i].node.num_members(), n, "seed {seed}: node {i}");
            // Restarts are new generations: no node took another's copy of it for its own.
            assert_eq!(
                sim.nodes[i].node.stats().identity_conflicts,
                0,
                "seed {seed}: node {i}"
            );
        }
    }
}

/// Eight nodes, formed, that bury a dead node after 3 s, except node 6, which keeps a dead
/// node's state for a minute: it goes on gossiping the dead incarnation long after the others
/// buried it.
fn eight_nodes_one_with_a_long_memory(seed: u64) -> Sim {
    let mut c = config();
    c.dead_grace = Duration::from_secs(3);
    let mut sim = Sim::new(seed, c.clone(), NetConfig::default());
    for i in 0..8 {
        let mut ci = c.clone();
        if i == 6 {
            ci.dead_grace = Duration::from_secs(60);
        }
        sim.set_config(ci);
        sim.add_node();
    }
    sim.join_all_via(&[0]);
    sim.run_until(Duration::from_secs(30), |s| s.all_see_live(8))
        .unwrap();
    sim
}

#[test]
fn expired_nodes_do_not_come_back_from_stale_gossip() {
    for seed in seeds_from_env(3) {
        let mut sim = eight_nodes_one_with_a_long_memory(seed);
        let victim = sim.nodes[7].node.id().clone();
        // One node keeps a stale copy: it is cut off while the others expire the victim.
        sim.isolate(6);
        sim.crash(7);
        sim.record_events(true);
        sim.run_for(Duration::from_secs(8));
        for i in 0..6 {
            assert_eq!(
                sim.nodes[i].node.status(&victim.name),
                None,
                "seed {seed}: node {i}"
            );
        }
        assert!(
            sim.nodes[6].node.status(&victim.name).is_some(),
            "seed {seed}: node 6 holds no stale copy to gossip"
        );
        // Node 6 gossips the dead incarnation when it comes back; nobody takes it in.
        sim.heal();
        sim.run_for(Duration::from_secs(5));
        assert_kept_out(&sim, &victim, seed);
    }
}

/// Nodes 0 to 5 hold nothing of `victim` and never took it back in since events were
/// recorded.
fn assert_kept_out(sim: &Sim, victim: &NodeId, seed: u64) {
    for i in 0..6 {
        assert_eq!(
            sim.nodes[i].node.status(&victim.name),
            None,
            "seed {seed}: node {i}"
        );
        assert!(
            sim.nodes[i]
                .events
                .iter()
                .all(|(_, e)| *e != Event::Joined(victim.clone())),
            "seed {seed}: node {i} re-admitted the expired incarnation"
        );
    }
}

#[test]
fn a_replayed_datagram_does_not_bring_back_an_expired_node() {
    for seed in seeds_from_env(3) {
        let mut sim = eight_nodes_one_with_a_long_memory(seed);
        let victim = sim.nodes[7].node.id().clone();
        // Capture datagrams the victim sends while alive, as an eavesdropper could.
        let captured = capture(&mut sim, 7, 3, Duration::from_secs(10));
        assert!(
            captured.len() >= 3,
            "seed {seed}: node 7 sent too little to capture"
        );
        sim.crash(7);
        sim.record_events(true);
        sim.run_for(Duration::from_secs(8));
        for i in 0..6 {
            assert_eq!(
                sim.nodes[i].node.status(&victim.name),
                None,
                "seed {seed}: node {i} buried the victim"
            );
        }
        assert_eq!(
            sim.nodes[6].node.status(&victim.name),
            Some(MemberStatus::Down),
            "seed {seed}: node 6 keeps it"
        );
        // Every captured datagram replayed to every node, as from the victim's address.
        for i in 0..6 {
            for (_, payload) in &captured {
                sim.with_node(i, |node, now| {
                    node.handle_datagram(now, victim.addr, payload);
                });
            }
        }
        // Node 6 still gossips the victim: had a replay lifted a burial, it would be taken in.
        sim.run_for(Duration::from_secs(5));
        assert_kept_out(&sim, &victim, seed);
    }
}

#[test]
fn events_about_one_node_come_in_order() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = Sim::new(
            seed,
            config(),
            NetConfig {
                loss: 0.1,
                ..NetConfig::default()
            },
        );
        sim.record_events(true);
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_for(Duration::from_secs(5));
        for v in 0..20 {
            sim.set(2, "counter", &v.to_string());
            sim.run_for(Duration::from_millis(30));
        }
        sim.run_for(Duration::from_secs(5));
        let name = sim.nodes[2].node.id().name.clone();
        for i in 0..n {
            let seen: Vec<u32> = sim.nodes[i]
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::KeyUpserted { node, key, value }
                        if node.name == name && key == "counter" =>
                    {
                        std::str::from_utf8(value).ok()?.parse().ok()
                    }
                    _ => None,
                })
                .collect();
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: node {i} saw {seen:?}"
            );
            assert_eq!(seen.last(), Some(&19), "seed {seed}: node {i}");
            let joined_first = sim.nodes[i]
                .events
                .iter()
                .find(|(_, e)| e.node().is_some_and(|id| id.name == name))
                .map(|(_, e)| matches!(e, Event::Joined(_)) || i == 2);
            assert_eq!(joined_first, Some(true), "seed {seed}: node {i}");
        }
    }
}

#[test]
fn nodes_started_together_spread_their_anti_entropy_exchanges() {
    for seed in seeds_from_env(2) {
        let mut c = config();
        c.anti_entropy_interval = Duration::from_secs(10);
        let n = 16;
        let mut sim = Sim::new(seed, c, NetConfig::default());
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        // The joins' exchanges are over after a second; in an idle cluster whose state fits
        // datagrams, every later stream exchange is anti-entropy.
        sim.run_for(Duration::from_secs(2));
        let mut synced: Vec<u64> = (0..n)
            .map(|i| sim.nodes[i].node.stats().stream_syncs)
            .collect();
        let mut first: Vec<Option<u64>> = vec![None; n];
        for step in 20..=160u64 {
            for (i, f) in first.iter_mut().enumerate() {
                let now = sim.nodes[i].node.stats().stream_syncs;
                if now > synced[i] && f.is_none() {
                    *f = Some(step * 100);
                }
                synced[i] = now;
            }
            sim.run_for(Duration::from_millis(100));
        }
        let first: Vec<u64> = first
            .into_iter()
            .map(|f| f.unwrap_or_else(|| panic!("seed {seed}: a node ran no anti-entropy")))
            .collect();
        let (lo, hi) = (first.iter().min().copied(), first.iter().max().copied());
        // Within [0.5, 1.5) intervals of the start, and not all at once: started together with
        // a fixed interval, all 16 would fall within one round of 10 s.
        assert!(
            lo >= Some(5_000) && hi <= Some(15_100),
            "seed {seed}: {first:?}"
        );
        assert!(
            hi.zip(lo).is_some_and(|(h, l)| h - l >= 3_000),
            "seed {seed}: {first:?}"
        );
    }
}

#[test]
fn deleted_key_never_reappears_even_at_a_peer_absent_during_the_delete() {
    for seed in seeds_from_env(4) {
        let mut c = config();
        c.tombstone_grace = Duration::from_secs(2);
        c.anti_entropy_interval = Duration::from_secs(3);
        let n = 6;
        let mut sim = Sim::new(
            seed,
            c,
            NetConfig {
                loss: 0.05,
                ..NetConfig::default()
            },
        );
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
            .unwrap();
        sim.set(1, "doomed", "v");
        sim.set(1, "kept", "v");
        sim.run_for(Duration::from_secs(2));
        let owner = sim.nodes[1].node.id().name.clone();
        assert!((0..n).all(|i| sim.nodes[i].node.get(&owner, "doomed").is_some()));
        // Node 5 is away while the key is deleted and its tombstone purged everywhere else.
        sim.isolate(5);
        sim.with_node(1, |node, now| node.delete(now, "doomed"))
            .unwrap();
        sim.set(1, "after", "v");
        sim.run_for(Duration::from_secs(6));
        assert!(
            sim.nodes[1].node.local_state().gc_version().0 > 0,
            "seed {seed}: no GC"
        );
        sim.heal();
        let mut reappeared = false;
        for _ in 0..100 {
            sim.run_for(Duration::from_millis(100));
            reappeared |= (0..5).any(|i| sim.nodes[i].node.get(&owner, "doomed").is_some());
        }
        assert!(!reappeared, "seed {seed}: the deleted key came back");
        assert_eq!(
            sim.nodes[5].node.get(&owner, "doomed"),
            None,
            "seed {seed}: node 5 kept it"
        );
        assert!(
            sim.nodes[5].node.get(&owner, "kept").is_some(),
            "seed {seed}"
        );
        assert!(
            sim.nodes[5].node.get(&owner, "after").is_some(),
            "seed {seed}"
        );
    }
}

/// Two peers away while a key is deleted and its tombstone purged, with state larger than a
/// datagram: on heal, one of them takes a reset cut at the datagram budget, then the other's
/// older copy must not fill in what lies below the reset's gc (found by review: for 4 of 40
/// seeds, 6, 9, 26 and 32 among them, the deleted key came back for good).
#[test]
fn a_deleted_key_stays_deleted_when_two_peers_absent_during_the_delete_come_back() {
    let seeds = match std::env::var("SIM_SEED") {
        Ok(_) => seeds_from_env(0),
        Err(_) => vec![6, 9, 26, 32],
    };
    for seed in seeds {
        let mut c = config();
        c.tombstone_grace = Duration::from_secs(2);
        let n = 6;
        let mut sim = Sim::new(seed, c, NetConfig::default());
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
            .unwrap();
        // Three 600-byte values: a reset of node 1 does not fit one datagram.
        let pad = "p".repeat(600);
        for k in 0..3 {
            sim.set(1, &format!("pad{k:02}"), &pad);
        }
        sim.set(1, "doomed", "v");
        sim.run_for(Duration::from_secs(3));
        let owner = sim.nodes[1].node.id().name.clone();
        assert!((0..n).all(|i| sim.nodes[i].node.get(&owner, "doomed").is_some()));
        sim.partition(&[0, 1, 2, 3], &[4, 5]);
        sim.with_node(1, |node, now| node.delete(now, "doomed"))
            .unwrap();
        sim.set(1, "after", "v");
        sim.run_for(Duration::from_secs(6));
        assert!(
            sim.nodes[1].node.local_state().gc_version().0 > 0,
            "seed {seed}: no GC"
        );
        sim.heal();
        sim.run_for(Duration::from_secs(20));
        let holders: Vec<usize> = (0..n)
            .filter(|&i| sim.nodes[i].node.get(&owner, "doomed").is_some())
            .collect();
        assert!(holders.is_empty(), "seed {seed}: held again by {holders:?}");
        assert!(
            (0..n).all(|i| sim.nodes[i].node.get(&owner, "after").is_some()),
            "seed {seed}"
        );
    }
}

/// A newcomer takes a cut reset from the only copy that purged a tombstone the owner never
/// purged (it wrote the key again within its grace), then that copy crashes: the owner's
/// own deltas, cut below the copy's gc, must still bring the newcomer up to date (found by
/// review: refused every round, it stayed behind for good). Streams between the newcomer and
/// node 2 cut, so that the reset comes cut to datagrams (before 2026-12-07, frames of 8 KiB
/// cut it; a whole state now fits a frame).
#[test]
fn a_newcomer_cut_below_a_purged_gc_catches_up_from_the_owner() {
    for seed in [1u64, 2, 3] {
        let mut c = config();
        c.tombstone_grace = Duration::from_secs(2);
        c.limits.max_value_len = 4 << 10;
        c.limits.max_keys_per_node = 64;
        c.limits.max_state_bytes_per_node = 32 << 10;
        c.max_frame_size = c.limits.frame_for_whole_state();
        let mut sim = Sim::new(seed, c, NetConfig::default());
        for _ in 0..3 {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(3))
            .unwrap();
        // Owner (1): 20 values of 1,500 bytes, more than a frame; then k.
        let pad = "p".repeat(1500);
        for k in 0..20 {
            sim.set(1, &format!("pad{k:02}"), &pad);
        }
        sim.set(1, "k", "v");
        let owner = sim.nodes[1].node.id().name.clone();
        let same = |s: &Sim, i: usize| {
            s.nodes[i]
                .node
                .node_state(&owner)
                .map(|st| st.max_version())
                == Some(s.nodes[1].node.local_state().max_version())
        };
        sim.run_until(Duration::from_secs(30), |s| same(s, 0) && same(s, 2))
            .unwrap();
        sim.with_node(1, |n, now| n.delete(now, "k")).unwrap();
        sim.run_until(Duration::from_secs(30), |s| same(s, 0) && same(s, 2))
            .unwrap();
        assert!(
            sim.nodes[2]
                .node
                .node_state(&owner)
                .unwrap()
                .get("k")
                .is_none()
        );
        // Node 2 goes away holding the tombstone; the owner writes k again within its grace.
        sim.isolate(2);
        sim.set(1, "k", "w");
        sim.run_for(Duration::from_secs(4));
        let g = sim.nodes[2].node.node_state(&owner).unwrap().gc_version().0;
        let og = sim.nodes[1].node.local_state().gc_version().0;
        assert!(g > og, "seed {seed}: copy gc {g}, owner gc {og}");
        // A new node joins through node 2 alone, takes its cut reset of the owner, then
        // node 2 crashes.
        let r = sim.add_node();
        sim.heal();
        sim.partition(&[2, r], &[0, 1]);
        // Only datagrams between them, so that the reset comes cut (a whole state fits a
        // stream frame).
        sim.cut_streams(2, r);
        sim.join(r, &[2]);
        sim.run_until(Duration::from_secs(10), |s| {
            s.nodes[r]
                .node
                .node_state(&owner)
                .is_some_and(|st| st.gc_version().0 == g)
        })
        .unwrap();
        let st = sim.nodes[r].node.node_state(&owner).unwrap();
        assert!(st.max_version().0 < g, "seed {seed}: the reset was not cut");
        sim.crash(2);
        sim.heal();
        let res = sim.run_until(Duration::from_secs(60), |s| {
            s.nodes[r]
                .node
                .node_state(&owner)
                .map(|st| st.max_version())
                == Some(s.nodes[1].node.local_state().max_version())
        });
        let st = sim.nodes[r].node.node_state(&owner).unwrap();
        let stats = sim.nodes[r].node.stats();
        assert!(
            res.is_ok(),
            "seed {seed}: after 60 s with the owner live, r holds (max {}, gc {}) of max {}; deltas_ignored {}",
            st.max_version().0,
            st.gc_version().0,
            sim.nodes[1].node.local_state().max_version().0,
            stats.deltas_ignored
        );
    }
}

/// An eavesdropper captures the owner's sealed delta carrying `k`; `k` is then deleted and
/// purged everywhere; a newcomer takes a cut reset of the owner (gc above the delete) and the
/// captured packet is replayed to it, its replay window for the owner still empty. The old
/// delta names the owner as its sender, but its heartbeat is older than the one the newcomer
/// holds: it is not taken (found by review: a first version of the owner exemption took it,
/// and `k` was alive again at the newcomer for good). The reset is cut to datagrams (the
/// newcomer's stream to node 2 is cut): since 2026-12-07 a whole state fits a stream frame,
/// where before the test cut it at an 8 KiB frame.
#[cfg(feature = "fuzzing")]
#[test]
fn a_replayed_owner_delta_does_not_bring_back_a_purged_key_at_a_newcomer() {
    use tidings::Keyring;
    use tidings::fuzzing::{Message, WireCodec, tag_of};
    const KEY: [u8; 32] = [9; 32];
    for seed in [1u64, 2, 3] {
        let mut c = Config::default();
        c.gossip_interval = Duration::from_millis(100);
        c.keyring = Some(Keyring::new(KEY));
        c.tombstone_grace = Duration::from_secs(2);
        c.limits.max_value_len = 4 << 10;
        c.limits.max_keys_per_node = 64;
        c.limits.max_state_bytes_per_node = 32 << 10;
        c.max_frame_size = c.limits.frame_for_whole_state();
        let cluster = c.cluster_id.clone();
        let mut sim = Sim::new(seed, c, NetConfig::default());
        for _ in 0..3 {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(3))
            .unwrap();
        let owner = sim.nodes[1].node.id().name.clone();
        let otag = tag_of(&owner, sim.nodes[1].node.id().generation.0);
        let synced = |s: &Sim| {
            [0, 2].iter().all(|&i| {
                s.nodes[i]
                    .node
                    .node_state(&owner)
                    .map(|st| st.max_version())
                    == Some(s.nodes[1].node.local_state().max_version())
            })
        };
        let pad = "p".repeat(1500);
        for k in 0..2 {
            // Each fits a datagram: the newcomer's cut reset comes in datagram pieces.
            sim.set(1, &format!("a{k}"), &"a".repeat(600));
        }
        sim.run_until(Duration::from_secs(30), synced).unwrap();
        // What the newcomer is to hold of the owner before k (the interval key and the a's).
        let before_k = sim.nodes[1].node.local_state().max_version().0;
        // k and ten small keys in one go; capture the owner's delta carrying them.
        sim.set(1, "k", "live");
        for t in 0..4 {
            sim.set(1, &format!("t{t}"), &"x".repeat(250));
        }
        let codec = WireCodec::new(&cluster, Some(&Keyring::new(KEY)), false, true);
        let mut captured = Vec::new();
        for (_, payload) in capture(&mut sim, 1, usize::MAX, Duration::from_millis(500)) {
            let (Ok(Message::Ack { delta, .. }) | Ok(Message::SynAck { delta, .. })) =
                codec.decode(&payload)
            else {
                continue;
            };
            for d in delta {
                if d.tag == otag && !d.reset && d.entries.iter().any(|e| e.key == "k") {
                    captured.push((payload.clone(), d.from_version, d.max_version, d.gc_version));
                }
            }
        }
        assert!(!captured.is_empty(), "seed {seed}: nothing captured");
        sim.run_until(Duration::from_secs(30), synced).unwrap();
        // More large values after k, then k deleted; every copy (and the owner) purges it.
        for k in 0..12 {
            sim.set(1, &format!("b{k:02}"), &pad);
        }
        sim.with_node(1, |n, now| n.delete(now, "k")).unwrap();
        sim.run_until(Duration::from_secs(30), synced).unwrap();
        sim.run_for(Duration::from_secs(5));
        let g = sim.nodes[1].node.local_state().gc_version().0;
        let g2 = sim.nodes[2].node.node_state(&owner).unwrap().gc_version().0;
        assert!(g > 0 && g2 == g, "seed {seed}: gc owner {g}, node 2 {g2}");
        // A newcomer joins through node 2 while it cannot hear the owner (nor node 0).
        let r = sim.add_node();
        sim.partition(&[r], &[0, 1]);
        // Only datagrams from node 2, so that the reset comes cut (a whole state fits a
        // stream frame).
        sim.cut_streams(2, r);
        sim.join(r, &[2]);
        sim.run_until(Duration::from_secs(10), |s| {
            s.nodes[r]
                .node
                .node_state(&owner)
                .is_some_and(|st| st.max_version().0 >= before_k)
        })
        .unwrap();
        let st = sim.nodes[r].node.node_state(&owner).unwrap();
        let (c, rg) = (st.max_version().0, st.gc_version().0);
        let usable: Vec<_> = captured
            .iter()
            .filter(|(_, f, m, _)| *f <= c && c < *m)
            .collect();
        assert!(
            c < rg,
            "seed {seed}: the newcomer's reset was not cut ({c}, {rg})"
        );
        assert!(
            !usable.is_empty(),
            "seed {seed}: inconclusive, no captured delta spans {c}"
        );
        // The eavesdropper replays the owner's old packet to the newcomer.
        let from = sim.nodes[1].addr;
        let (payload, ..) = usable[0].clone();
        sim.with_node(r, |n, now| n.handle_datagram(now, from, &payload));
        assert_eq!(
            sim.nodes[r].node.get(&owner, "k"),
            None,
            "seed {seed}: taken"
        );
        sim.heal();
        let res = sim.run_until(Duration::from_secs(60), |s| {
            s.nodes[r]
                .node
                .node_state(&owner)
                .map(|st| st.max_version())
                == Some(s.nodes[1].node.local_state().max_version())
        });
        assert!(res.is_ok(), "seed {seed}: r did not catch up");
        assert_eq!(sim.nodes[1].node.get(&owner, "k"), None);
        assert_eq!(
            sim.nodes[r].node.get(&owner, "k"),
            None,
            "seed {seed}: k, deleted and purged, is alive again at the newcomer (owner at max {})",
            sim.nodes[1].node.local_state().max_version().0
        );
    }
}

#[test]
fn partition_heals_and_every_write_arrives() {
    for seed in seeds_from_env(2) {
        let r = run_scenario(Scenario::Partition, &opts(16, seed)).unwrap();
        assert!(r.converged, "seed {seed}\n{}", r.table());
        assert_eq!(r.false_downs, 0, "seed {seed}");
    }
}

/// The `pause` scenario's freeze is `ScenarioOptions::pause`: frozen 8 s instead of 2, the node
/// is still marked down and back up by every other node, the measured phase lasts the freeze
/// at least, and no live node is convicted; frozen for two intervals, it is marked down by
/// nobody and the run does not converge.
#[test]
fn the_pause_scenario_freezes_its_node_for_the_pause_given() {
    for seed in seeds_from_env(2) {
        let mut o = opts(24, seed);
        o.pause = Duration::from_secs(8);
        let r = run_scenario(Scenario::Pause, &o).unwrap();
        assert!(r.converged, "seed {seed}\n{}", r.table());
        assert!(r.virtual_ms >= 8_000, "seed {seed}\n{}", r.table());
        assert_eq!(r.false_downs, 0, "seed {seed}\n{}", r.table());
        let seen = |r: &tidings::sim::Report| {
            r.notes
                .iter()
                .find(|(k, _)| k == "paused node: downs/ups seen")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(seen(&r).as_deref(), Some("23/23"), "seed {seed}");
        o.pause = Duration::from_millis(200);
        o.limit = Duration::from_secs(20);
        let r = run_scenario(Scenario::Pause, &o).unwrap();
        assert!(!r.converged, "seed {seed}\n{}", r.table());
        assert_eq!(seen(&r).as_deref(), Some("0/0"), "seed {seed}");
    }
}

/// The `partition` scenario's split is `ScenarioOptions::split`: the writes made during the
/// split reach the other half only after the heal, so the oldest copy lasts about the split,
/// half a second or a minute, and either way the cluster converges after the heal.
#[test]
fn the_partition_scenario_splits_for_the_split_given() {
    for seed in seeds_from_env(2) {
        let run = |split| {
            let mut o = opts(16, seed);
            o.split = split;
            run_scenario(Scenario::Partition, &o).unwrap()
        };
        let (short, long) = (
            run(Duration::from_millis(500)),
            run(Duration::from_secs(60)),
        );
        for r in [&short, &long] {
            assert!(r.converged, "seed {seed}\n{}", r.table());
            assert_eq!(r.false_downs, 0, "seed {seed}\n{}", r.table());
        }
        let (short_max, long_max) = (short.staleness_ms.2, long.staleness_ms.2);
        assert!(
            (500..5_000).contains(&short_max) && (60_000..65_000).contains(&long_max),
            "seed {seed}: oldest copy {short_max} ms after a 0.5-s split, {long_max} ms after 60 s"
        );
    }
}

/// The `churn` scenario restarts `churn_fraction` of the nodes (rounded down, at least one)
/// over `churn_over`; all at once (a zero window) converges too.
#[test]
fn the_churn_scenario_restarts_the_share_given_over_the_window_given() {
    for seed in seeds_from_env(2) {
        let mut o = opts(24, seed);
        o.churn_fraction = 0.25;
        o.churn_over = Duration::ZERO;
        let r = run_scenario(Scenario::Churn, &o).unwrap();
        assert!(r.converged, "seed {seed}\n{}", r.table());
        assert_eq!(r.false_downs, 0, "seed {seed}\n{}", r.table());
        let restarted = r.notes.iter().find(|(k, _)| k == "restarted nodes");
        assert_eq!(restarted.map(|(_, v)| v.as_str()), Some("6"), "seed {seed}");
    }
}

#[test]
fn foreign_cluster_traffic_is_dropped_and_counted() {
    let mut sim = Sim::new(1, config(), NetConfig::default());
    let a = sim.add_node();
    let mut other = config();
    other.cluster_id = "other".into();
    sim.set_config(other);
    let b = sim.add_node();
    sim.join(b, &[a]);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.nodes[a].node.num_members(), 1);
    assert_eq!(sim.nodes[b].node.num_members(), 1);
    assert!(sim.nodes[a].node.stats().rx_foreign_cluster > 0);
}

/// Mixed limits (`Limits` docs, design.md 10): a node with a lower `max_value_len` refuses,
/// whole, every delta carrying a peer's larger value, counts each refusal, and stores nothing
/// over its limit; it learns nothing of that peer's state past the refused change (a small
/// key written after it stays unknown there) yet still sees the peer live, and the nodes
/// with the usual limits hold both keys.
#[test]
fn a_node_with_lower_limits_refuses_a_larger_value_whole_and_keeps_the_peer_live() {
    for seed in seeds_from_env(2) {
        let (mut sim, strict) = joining_with_one_configured(seed, 4, |c| {
            c.limits.max_value_len = 1_000;
        });
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(4))
            .unwrap_or_else(|_| panic!("seed {seed}: the cluster did not form"));
        let big = "x".repeat(2_000);
        sim.set(0, "big", &big);
        sim.set(0, "small", "v");
        let owner = sim.nodes[0].node.id().name.clone();
        sim.run_until(Duration::from_secs(10), |s| {
            (1..3).all(|i| s.nodes[i].node.get(&owner, "small").is_some())
        })
        .unwrap_or_else(|_| panic!("seed {seed}: the usual nodes did not learn both keys"));
        let rejected = sim.nodes[strict].node.stats().deltas_rejected;
        assert!(rejected > 0, "seed {seed}: no refusal counted");
        sim.run_for(Duration::from_secs(5));
        let n = &sim.nodes[strict].node;
        assert!(
            n.stats().deltas_rejected > rejected,
            "seed {seed}: the refused delta is offered again, and refused again"
        );
        assert_eq!(n.get(&owner, "big"), None, "seed {seed}");
        assert_eq!(
            n.get(&owner, "small"),
            None,
            "seed {seed}: learned past the refusal"
        );
        assert!(
            sim.all_see_live(4),
            "seed {seed}: liveness does not depend on the refused state"
        );
        for i in 1..3 {
            let held = sim.nodes[i].node.get(&owner, "big").map(|v| v.len());
            assert_eq!(held, Some(2_000), "seed {seed}: node {i}");
        }
    }
}

#[test]
fn ring_fingerprints_agree_and_handoffs_mirror_each_other() {
    for seed in seeds_from_env(2) {
        let n = 12;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(3));
        let fp = sim.nodes[0].node.ring().fingerprint();
        for i in 0..n {
            assert_eq!(
                sim.nodes[i].node.ring().fingerprint(),
                fp,
                "seed {seed}: node {i}"
            );
            assert_eq!(sim.nodes[i].node.ring().num_members(), n);
        }
        // Every node computes the same owner for any key.
        for k in 0..200u32 {
            let key = k.to_le_bytes();
            let owner = sim.nodes[0].node.owner(&key).map(str::to_owned);
            for i in 1..n {
                assert_eq!(sim.nodes[i].node.owner(&key).map(str::to_owned), owner);
            }
        }
        // A node leaves: the ranges it relinquishes are exactly what the others acquire.
        sim.record_events(true);
        let leaver = sim.nodes[5].node.id().name.clone();
        let leaver_share: u128 = sim.nodes[0]
            .node
            .ring()
            .ranges(&leaver)
            .iter()
            .map(|r| r.len())
            .sum();
        assert!(leaver_share > 0, "seed {seed}");
        sim.with_node(5, |node, now| node.leave(now));
        sim.run_for(Duration::from_secs(5));
        let changes: Vec<(String, tidings::OwnershipChange)> = (0..n)
            .flat_map(|i| {
                let name = sim.nodes[i].node.id().name.clone();
                sim.nodes[i]
                    .events
                    .iter()
                    .filter_map(move |(_, e)| match e {
                        Event::Ownership(c) => Some((name.clone(), c.clone())),
                        _ => None,
                    })
            })
            .collect();
        let fp = sim.nodes[0].node.ring().fingerprint();
        for i in (0..n).filter(|&i| i != 5) {
            assert_eq!(
                sim.nodes[i].node.ring().fingerprint(),
                fp,
                "seed {seed}: node {i}"
            );
            assert!(!sim.nodes[i].node.ring().contains(&leaver));
        }
        // The leaver handed everything over at once, in one event, and owns nothing.
        let leavers: Vec<&tidings::OwnershipChange> = changes
            .iter()
            .filter(|(name, _)| *name == leaver)
            .map(|(_, c)| c)
            .collect();
        assert_eq!(
            leavers.len(),
            1,
            "seed {seed}: the leaver's ownership events"
        );
        let given = &leavers[0].handoff;
        assert!(given.acquired.is_empty(), "seed {seed}");
        assert_eq!(
            given
                .relinquished
                .iter()
                .map(|t| t.num_hashes())
                .sum::<u128>(),
            leaver_share,
            "seed {seed}"
        );
        for k in 0..200u32 {
            assert!(
                !sim.nodes[5].node.is_local_owner(&k.to_le_bytes()),
                "seed {seed}"
            );
        }
        let mut acquired_from_leaver = 0u128;
        for (name, c) in &changes {
            if *name == leaver {
                continue;
            }
            // Mirror images: what each survivor acquired is what the leaver gave it.
            let gave = given
                .relinquished_to(name)
                .map(|t| t.ranges.clone())
                .unwrap_or_default();
            let got = c.handoff.acquired_from(&leaver).map(|t| t.ranges.clone());
            assert_eq!(got, Some(gave), "seed {seed}: {name}");
            assert!(
                c.handoff.relinquished.is_empty(),
                "seed {seed}: {name} relinquished"
            );
            let t = c
                .handoff
                .acquired_from(&leaver)
                .expect("acquired from the leaver");
            acquired_from_leaver += t.num_hashes();
        }
        // The survivors together acquired exactly the leaver's share of the hash space.
        assert_eq!(acquired_from_leaver, leaver_share, "seed {seed}");
    }
}

/// A node joins a couple of seconds after the others built their first rings: sooner than the
/// age margin (`4.5 × ring_settle` plus two rounds after they started) by which a first ring
/// guesses which peers held one. What each relinquishes to it is what it says it acquired from
/// each: peers gossip their rings' fingerprints (`tidings:ring`) and it reads the ring they
/// held. Before 2026-12-07 (seventh session) it went by the guess, counted none of them, and
/// acquired every range from nobody (design.md, section 6, had it as a known limit).
#[test]
fn a_node_joining_soon_after_the_others_formed_mirrors_what_they_relinquished() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_until(Duration::from_secs(10), |s| {
            (0..n).all(|i| s.nodes[i].node.ring().num_members() == n)
        })
        .expect("first rings");
        let c = config();
        assert!(
            sim.elapsed() + Duration::from_millis(500)
                < c.ring_settle * 9 / 2 + c.gossip_interval * 2,
            "seed {seed}: formed at {:?}, past the age margin",
            sim.elapsed()
        );
        sim.record_events(true);
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(8));
        let mine = ownership_events(&sim, j);
        assert_eq!(mine.len(), 1, "seed {seed}: the joiner's events {mine:?}");
        assert!(
            mine[0].handoff.acquired.iter().all(|t| t.peer.is_some()),
            "seed {seed}: acquired from nobody"
        );
        assert_owners_mirror_the_joiner(&sim, 0..n, j, &format!("seed {seed}"));
    }
}

/// A node joining a settled cluster owns nothing until its first ring (a settle after it
/// starts), then gets one event naming what it acquired and from whom: the mirror image of what
/// the others relinquished to it. (It used to start with a ring of itself alone and claim
/// every key for that long.)
#[test]
fn a_joining_node_owns_nothing_until_its_first_ring_then_acquires_from_the_owners() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        // Long enough for the cluster's own first rings (at most 4.5 x `ring_settle` after
        // start): only peers that old are named as previous owners.
        sim.run_for(Duration::from_secs(6));
        sim.record_events(true);
        let joiner = sim.add_node();
        sim.join(joiner, &[0]);
        sim.run_for(Duration::from_millis(300));
        let keys: Vec<[u8; 4]> = (0..500u32).map(u32::to_le_bytes).collect();
        assert!(
            keys.iter()
                .all(|k| !sim.nodes[joiner].node.is_local_owner(k)),
            "seed {seed}: the joiner claimed keys before its first ring"
        );
        sim.run_for(Duration::from_secs(6));
        let name = sim.nodes[joiner].node.id().name.clone();
        let owned = keys
            .iter()
            .filter(|k| sim.nodes[joiner].node.is_local_owner(*k))
            .count();
        assert!(
            owned > 0 && owned < keys.len() / 2,
            "seed {seed}: owns {owned}"
        );
        let ownership = |i: usize| ownership_events(&sim, i);
        let mine = ownership(joiner);
        assert_eq!(mine.len(), 1, "seed {seed}: the joiner's ownership events");
        let got = &mine[0].handoff;
        assert!(got.relinquished.is_empty(), "seed {seed}");
        assert!(
            got.acquired.iter().all(|t| t.peer.is_some()),
            "seed {seed}: acquired from nobody"
        );
        for i in 0..n {
            let other = sim.nodes[i].node.id().name.clone();
            let gave: Vec<_> = ownership(i)
                .iter()
                .filter_map(|c| c.handoff.relinquished_to(&name).map(|t| t.ranges.clone()))
                .collect();
            let took = got.acquired_from(&other).map(|t| t.ranges.clone());
            match took {
                Some(r) => assert_eq!(gave, vec![r], "seed {seed}: {other}"),
                None => assert!(gave.is_empty(), "seed {seed}: {other}"),
            }
        }
    }
}

#[test]
fn a_weight_reaches_every_ring_and_a_bad_one_is_refused() {
    for seed in seeds_from_env(1) {
        let n = 6;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(3));
        let heavy = sim.nodes[2].node.id().name.clone();
        let weight_of = |sim: &Sim, i: usize| {
            sim.nodes[i]
                .node
                .ring()
                .members()
                .find(|(name, _)| *name == heavy)
                .map(|(_, w)| w)
        };
        let share = |sim: &Sim| {
            let shares = sim.nodes[0].node.ring().shares();
            shares
                .iter()
                .find(|(name, _)| *name == heavy)
                .map_or(0.0, |s| s.1)
        };
        assert_eq!(weight_of(&sim, 0), Some(100), "seed {seed}");
        let before = share(&sim);
        for bad in [0.0, -1.0, 0.004, 100.5, f64::NAN, f64::INFINITY] {
            let r = sim.with_node(2, |node, now| node.set_weight(now, bad));
            assert!(
                matches!(r, Err(tidings::Error::InvalidWeight { .. })),
                "seed {seed}: {bad} gave {r:?}"
            );
        }
        let version = |sim: &Sim| {
            sim.nodes[2]
                .node
                .node_state(&heavy)
                .map(|s| s.max_version())
        };
        let unchanged = version(&sim);
        sim.run_for(Duration::from_secs(3));
        assert_eq!(version(&sim), unchanged, "seed {seed}");
        assert_eq!(weight_of(&sim, 0), Some(100), "seed {seed}");

        sim.with_node(2, |node, now| node.set_weight(now, 3.0))
            .expect("a valid weight");
        sim.run_for(Duration::from_secs(4));
        for i in 0..n {
            assert_eq!(weight_of(&sim, i), Some(300), "seed {seed}: node {i}");
        }
        // Three shares of eight, against one of six before (bounded load keeps it near).
        let after = share(&sim);
        assert!(
            before < 0.25 && after > 0.3,
            "seed {seed}: {before} -> {after}"
        );
    }
}

/// Durations up to `MAX_DURATION` (every timer adds or multiplies them), the largest fanout
/// and the largest frame run; longer or larger ones are refused with a typed error instead of
/// overflowing (`Duration::MAX`, `usize::MAX` fanout or frame size panicked).
#[test]
fn durations_and_sizes_up_to_the_maximum_run_and_beyond_are_refused() {
    type Field = fn(&mut Config) -> &mut Duration;
    let fields: [(&str, Field); 9] = [
        ("gossip_interval", |c| &mut c.gossip_interval),
        ("anti_entropy_interval", |c| &mut c.anti_entropy_interval),
        ("detector_min_std", |c| {
            c.detector_min_std.get_or_insert(Duration::ZERO)
        }),
        ("dead_grace", |c| &mut c.dead_grace),
        ("left_grace", |c| &mut c.left_grace),
        ("forget_after", |c| &mut c.forget_after),
        ("tombstone_grace", |c| &mut c.tombstone_grace),
        ("leave_timeout", |c| &mut c.leave_timeout),
        ("ring_settle", |c| &mut c.ring_settle),
    ];
    for (name, field) in fields {
        let mut c = config();
        *field(&mut c) = Duration::MAX;
        assert!(
            matches!(c.validate(), Err(tidings::ConfigError::TooLong { field, .. }) if field == name),
            "{name}: {:?}",
            c.validate()
        );
        *field(&mut c) = tidings::MAX_DURATION;
        if name == "gossip_interval" {
            // `dead_grace` must cover four intervals, `left_grace` the leave and four more.
            c.gossip_interval = tidings::MAX_DURATION / 8;
            c.dead_grace = tidings::MAX_DURATION;
            c.left_grace = tidings::MAX_DURATION;
        }
        if name == "detector_min_std" {
            // At most `dead_grace`.
            c.dead_grace = tidings::MAX_DURATION;
        }
        if name == "leave_timeout" {
            // `left_grace`, at most the maximum, must cover it and four intervals.
            c.leave_timeout = tidings::MAX_DURATION - c.gossip_interval * 4;
            c.left_grace = tidings::MAX_DURATION;
        }
        assert_eq!(c.validate(), Ok(()), "{name}");
        run_through_faults(c, name);
    }
    let mut c = config();
    c.fanout = 1024;
    c.max_frame_size = 1 << 30;
    assert_eq!(c.validate(), Ok(()));
    run_through_faults(c, "fanout and frame size");
}

/// Four nodes: a write with an endless TTL, one with a short one, a crash, a leave, and a
/// minute for the graces; nothing may panic, and the endless TTL does not expire.
fn run_through_faults(c: Config, name: &str) {
    let mut sim = Sim::new(1, c, NetConfig::default());
    for _ in 0..4 {
        sim.add_node();
    }
    sim.join_all_via(&[0]);
    sim.run_for(Duration::from_secs(5));
    sim.with_node(0, |node, now| {
        node.set_with_ttl(now, "k", "v", Duration::MAX)
    })
    .expect("an endless TTL is accepted");
    sim.with_node(1, |node, now| {
        node.set_with_ttl(now, "t", "v", Duration::from_secs(1))
    })
    .expect("a TTL");
    sim.crash(2);
    sim.with_node(3, |node, now| node.leave(now));
    sim.run_for(Duration::from_secs(60));
    let me = sim.nodes[0].node.id().name.clone();
    let own = sim.nodes[0].node.node_state(&me).expect("own state");
    assert!(own.get("k").is_some(), "{name}: the endless TTL expired");
}

#[test]
fn a_sealed_packet_is_accepted_once() {
    use tidings::Keyring;
    for seed in seeds_from_env(2) {
        let mut c = config();
        c.keyring = Some(Keyring::new([4u8; 32]));
        let n = 6;
        // The network delivers a tenth of the datagrams twice: each second copy is a replay.
        let net = NetConfig {
            duplicate: 0.1,
            ..NetConfig::default()
        };
        let mut sim = Sim::new(seed, c, net);
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
            .unwrap();
        sim.with_node(1, |node, now| node.set(now, "k", "v").unwrap());
        sim.run_until(Duration::from_secs(10), |s| {
            (0..n).all(|i| {
                s.nodes[i]
                    .node
                    .get(&s.nodes[1].node.id().name, "k")
                    .is_some()
            })
        })
        .unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        let dropped: u64 = (0..n).map(|i| sim.nodes[i].node.stats().rx_replayed).sum();
        assert!(
            dropped > 0,
            "seed {seed}: duplicates are dropped as replays"
        );
        // An eavesdropper captures what node 1 sends, waits until it was delivered, then sends
        // each packet again to the node it was for: every copy is dropped, nothing answers.
        let captured = capture(&mut sim, 1, 10, Duration::from_secs(10));
        assert!(
            captured.len() >= 10,
            "seed {seed}: node 1 sent too little to capture"
        );
        sim.run_for(Duration::from_millis(100));
        let from = sim.nodes[1].node.id().addr;
        for (to, payload) in &captured {
            sim.with_node(*to, |node, now| {
                let before = node.stats();
                node.handle_datagram(now, from, payload);
                let after = node.stats();
                assert_eq!(after.rx_replayed, before.rx_replayed + 1, "seed {seed}");
                assert_eq!(
                    after.tx_datagrams, before.tx_datagrams,
                    "seed {seed}: answered"
                );
                assert_eq!(after.heartbeats_learned, before.heartbeats_learned);
                assert_eq!(after.entries_applied, before.entries_applied);
            });
        }
        // The same packets sent as stream frames, from an address of the eavesdropper's: a
        // sealed packet says which channel it was sealed for, so each is a replay there too.
        // (Before, each channel had its own window and a captured datagram Syn was answered
        // as a frame, with as much state as a frame holds.)
        let stranger: std::net::SocketAddr = "10.99.0.1:4000".parse().unwrap();
        for (to, payload) in &captured {
            sim.with_node(*to, |node, now| {
                let before = node.stats();
                assert!(
                    !node.handle_stream_frame(now, stranger, payload),
                    "seed {seed}"
                );
                let after = node.stats();
                assert_eq!(after.rx_replayed, before.rx_replayed + 1, "seed {seed}");
                assert_eq!(after.tx_frames, before.tx_frames, "seed {seed}: answered");
                assert_eq!(after.tx_datagrams, before.tx_datagrams, "seed {seed}");
                assert_eq!(after.heartbeats_learned, before.heartbeats_learned);
            });
        }
        // The cluster goes on as before.
        sim.run_for(Duration::from_secs(3));
        assert!(sim.all_see_live(n), "seed {seed}");
    }
}

#[test]
fn encrypted_cluster_converges_rejects_strangers_and_rotates_keys() {
    use tidings::Keyring;
    let k1 = [1u8; 32];
    let k2 = [2u8; 32];
    let mut c = config();
    c.keyring = Some(Keyring::new(k1));
    let n = 6;
    let mut sim = Sim::new(3, c.clone(), NetConfig::default());
    for _ in 0..n {
        sim.add_node();
    }
    // A stranger with another key and one without any key try to join.
    let mut other = c.clone();
    other.keyring = Some(Keyring::new([7u8; 32]));
    sim.set_config(other);
    let stranger = sim.add_node();
    let mut plain = c.clone();
    plain.keyring = None;
    sim.set_config(plain);
    let plaintext = sim.add_node();
    for i in 0..sim.nodes.len() {
        sim.join(i, &[0]);
    }
    sim.run_for(Duration::from_secs(5));
    for i in 0..n {
        assert_eq!(sim.nodes[i].node.num_live(), n, "node {i}");
    }
    assert_eq!(sim.nodes[stranger].node.num_members(), 1);
    assert_eq!(sim.nodes[plaintext].node.num_members(), 1);
    let s0 = sim.nodes[0].node.stats();
    assert!(
        s0.rx_auth_failed > 0 && s0.rx_plaintext_refused > 0,
        "{s0:?}"
    );
    sim.crash(stranger);
    sim.crash(plaintext);
    // Rotation: add k2 everywhere, make it primary everywhere, remove k1; no node drops out.
    let steps = [
        Keyring::new(k1).with_key(k2),
        Keyring::new(k2).with_key(k1),
        Keyring::new(k2),
    ];
    for ring in steps {
        for i in 0..n {
            sim.with_node(i, |node, _| {
                node.set_keyring(Some(ring.clone()), false, false)
                    .expect("a valid keyring setting")
            });
            sim.run_for(Duration::from_millis(50));
        }
        sim.run_for(Duration::from_secs(3));
        for i in 0..n {
            assert_eq!(
                sim.nodes[i].node.num_live(),
                n,
                "node {i} after a rotation step"
            );
        }
    }
    sim.set(2, "after-rotation", "v");
    sim.run_for(Duration::from_secs(2));
    let name = sim.nodes[2].node.id().name.clone();
    assert!((0..n).all(|i| sim.nodes[i].node.get(&name, "after-rotation").is_some()));
}

#[test]
fn under_sustained_writes_on_every_node_no_node_starves() {
    for seed in seeds_from_env(2) {
        let n = 30;
        let mut sim = cluster(n, seed, NetConfig::default());
        // Every node rewrites 4 keys of 300 bytes every interval: far more than a datagram
        // carries per exchange, so deltas are cut short all the time.
        let mut round = 0u32;
        let mut worst = vec![0u32; n];
        for _ in 0..200 {
            round += 1;
            for i in 0..n {
                for k in 0..4 {
                    let v = format!("{round:06}{}", "x".repeat(294));
                    sim.set(i, &format!("k{k}"), &v);
                }
            }
            sim.run_for(Duration::from_millis(100));
            if round < 50 {
                continue;
            }
            // How many rounds behind is the freshest value each observer holds of each writer?
            for (w, worst_w) in worst.iter_mut().enumerate() {
                let name = sim.nodes[w].node.id().name.clone();
                for o in 0..n {
                    let seen: u32 = sim.nodes[o]
                        .node
                        .get(&name, "k0")
                        .and_then(|v| std::str::from_utf8(&v[..6]).ok()?.parse().ok())
                        .unwrap_or(0);
                    *worst_w = (*worst_w).max(round - seen);
                }
            }
        }
        // Every writer's updates keep reaching every observer: none falls ever further behind.
        let max = *worst.iter().max().unwrap();
        assert!(
            max < 20,
            "seed {seed}: some writer fell {max} rounds behind: {worst:?}"
        );
    }
}

/// Issue 2 (c) at scale: a cluster of 1,000 nodes, some holding values close to the budget,
/// never sends a datagram over 1,400 bytes while it forms, and everyone gets everything (the
/// values too large for a datagram by stream).
#[test]
fn a_thousand_nodes_never_send_a_datagram_over_the_budget() {
    let seed = seeds_from_env(1)[0];
    let n = 1000;
    let mut c = config();
    // A slower interval keeps the test quick; digest and delta sizes do not depend on it.
    c.gossip_interval = Duration::from_secs(1);
    c.ring = None;
    let mut sim = Sim::new(seed, c.clone(), NetConfig::default());
    for _ in 0..n {
        sim.add_node();
    }
    for i in 0..10 {
        let near = "v".repeat(1_300 + i * 10);
        sim.set(i * 97, "near-budget", &near);
        sim.set(i * 97 + 1, "over-budget", &"w".repeat(2_000));
    }
    sim.join_all_via(&[0, 1, 2]);
    sim.run_until(Duration::from_secs(120), |s| {
        s.all_see_live(n)
            && (0..10).all(|i| {
                s.nodes.iter().all(|o| {
                    o.node
                        .get(&format!("n{}", i * 97 + 1), "over-budget")
                        .is_some()
                })
            })
    })
    .unwrap_or_else(|_| panic!("seed {seed}: 1,000 nodes did not converge"));
    let largest = sim.net_stats().max_datagram;
    assert!(
        largest <= c.max_datagram_size,
        "seed {seed}: a datagram of {largest} bytes"
    );
    // The largest datagrams come close to the budget: the test exercises the limit.
    assert!(
        largest > c.max_datagram_size - 100,
        "seed {seed}: {largest}"
    );
    // Everything every node sent read as well formed: positions past 127 take two varint
    // bytes, and none was taken for a malformed part.
    for o in &sim.nodes {
        let s = o.node.stats();
        assert_eq!((s.rx_malformed, s.digests_malformed), (0, 0), "seed {seed}");
    }
}

#[test]
fn a_node_told_which_key_events_to_emit_emits_only_those_and_still_applies_all() {
    for seed in seeds_from_env(2) {
        let n = 5;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.nodes[2]
            .node
            .set_key_events(tidings::KeyEvents::Prefixes(vec!["svc/".into()]));
        sim.nodes[3].node.set_key_events(tidings::KeyEvents::None);
        sim.record_events(true);
        sim.set(0, "svc/a", "1");
        sim.set(0, "other", "2");
        let name = sim.nodes[0].node.id().name.clone();
        sim.run_until(Duration::from_secs(10), |s| {
            s.running()
                .all(|i| s.nodes[i].node.get(&name, "other").is_some())
        })
        .unwrap_or_else(|_| panic!("seed {seed}: the keys did not spread"));
        let keys = |i: usize| -> Vec<String> {
            sim.nodes[i]
                .events
                .iter()
                .filter_map(|(_, e)| e.key().map(str::to_owned))
                .collect()
        };
        assert_eq!(keys(1), vec!["svc/a", "other"], "seed {seed}");
        assert_eq!(keys(2), vec!["svc/a"], "seed {seed}");
        assert!(keys(3).is_empty(), "seed {seed}");
        for i in [2, 3] {
            assert!(
                sim.nodes[i].node.get(&name, "svc/a").is_some()
                    && sim.nodes[i].node.get(&name, "other").is_some(),
                "seed {seed}: node {i} applied everything"
            );
        }
    }
}

#[test]
fn a_large_write_goes_over_the_stream_and_a_lost_exchange_is_retried_at_once() {
    let seeds = seeds_from_env(6);
    let mut lost = 0;
    for &seed in &seeds {
        let mut sim = cluster(3, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(5));
        // Node 2 cannot reach node 0 over TCP; node 1 reaches both.
        sim.cut_streams(0, 2);
        // 80 KB on one node: about 60 datagram deltas, or one stream exchange.
        let value = "v".repeat(100);
        for k in 0..800 {
            sim.set(2, &format!("k{k:03}"), &value);
        }
        let writer = sim.nodes[2].node.id().name.clone();
        // Within 10 intervals: datagrams alone took 6 s (60 rounds), and waiting out a lost
        // exchange 3 s (`DATA_SYNC_TIMEOUT`) more.
        let t = sim.run_until(Duration::from_secs(1), |s| {
            (0..2).all(|i| s.nodes[i].node.get(&writer, "k799").is_some())
        });
        assert!(
            t.is_ok(),
            "seed {seed}: the write did not reach both peers in 1 s"
        );
        lost += sim.nodes[2].node.stats().stream_syncs_lost;
    }
    if seeds.len() > 1 {
        assert!(
            lost > 0,
            "seeds {seeds:?}: no stream exchange was lost to the cut"
        );
    }
}

/// A node frozen while its name is restarted elsewhere (a paused VM replaced by a new one, a
/// wedged pod rescheduled) wakes up as a stale copy of a member that has moved on. It must
/// learn that it was replaced and stand down, not go on owning the keys its successor owns;
/// peers keep the newer incarnation throughout.
#[test]
fn a_replaced_node_that_wakes_up_stands_down() {
    for seed in seeds_from_env(3) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.record_events(true);
        let old = 3;
        let old_id = sim.nodes[old].node.id().clone();
        let name = old_id.name.clone();
        sim.pause(old, Duration::from_secs(20));
        let new = sim.add_replacement(old);
        let new_id = sim.nodes[new].node.id().clone();
        assert!(new_id.generation > old_id.generation, "seed {seed}");
        let peers: Vec<usize> = (0..n).filter(|&j| j != old).collect();
        let holds_new = |s: &Sim, j: usize| {
            s.nodes[j]
                .node
                .node_state(&name)
                .map(|st| st.id().generation)
                == Some(new_id.generation)
        };
        sim.run_until(Duration::from_secs(10), |s| {
            peers.iter().all(|&j| holds_new(s, j)) && s.nodes[new].node.num_live() == n
        })
        .unwrap_or_else(|_| panic!("seed {seed}: the replacement was not taken up"));
        // The old process wakes when its pause ends and gossips again.
        sim.run_until(Duration::from_secs(30), |s| {
            s.nodes[old].node.superseded_by().is_some()
        })
        .unwrap_or_else(|_| panic!("seed {seed}: the replaced process never stood down"));
        assert_eq!(
            sim.nodes[old].node.superseded_by(),
            Some(&new_id),
            "seed {seed}"
        );
        assert_eq!(sim.nodes[old].node.stats().superseded, 1, "seed {seed}");
        let sent = |s: &Sim| {
            let st = s.nodes[old].node.stats();
            st.tx_datagrams + st.tx_frames
        };
        let sent_then = sent(&sim);
        sim.run_for(Duration::from_secs(10));
        assert_eq!(sent(&sim), sent_then, "seed {seed}: it kept sending");
        assert_eq!(sim.nodes[old].node.poll_timeout(), None, "seed {seed}");
        let keys: Vec<[u8; 4]> = (0..2_000u32).map(u32::to_le_bytes).collect();
        assert!(
            !keys.iter().any(|k| sim.nodes[old].node.is_local_owner(k)),
            "seed {seed}: the stale process still owns keys"
        );
        assert!(
            keys.iter().any(|k| sim.nodes[new].node.is_local_owner(k)),
            "seed {seed}: its successor owns nothing"
        );
        // The event came once, last.
        let events = &sim.nodes[old].events;
        let superseded: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| matches!(e, Event::Superseded(_)))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(superseded, vec![events.len() - 1], "seed {seed}");
        assert_eq!(
            events[events.len() - 1].1,
            Event::Superseded(new_id.clone()),
            "seed {seed}"
        );
        // Peers kept the newer incarnation alive, and never took the old one back.
        for &j in &peers {
            assert!(holds_new(&sim, j), "seed {seed}: node {j}");
            assert_eq!(
                sim.nodes[j].node.status(&name),
                Some(MemberStatus::Alive),
                "seed {seed}: node {j}"
            );
            assert!(
                !sim.nodes[j].events.iter().any(|(_, e)| matches!(
                    e,
                    Event::Down(id) | Event::Expired(id) if id == &new_id
                )),
                "seed {seed}: node {j} lost the replacement"
            );
        }
    }
}

/// A window digest's cover tells the receiver that the sender holds no node in that tag range
/// but those it lists, so every node the sender knows inside the cover must be listed: a
/// covered node left out reads as unknown to the sender, and the receiver answers with that
/// node's whole state. Checked on every node's round just after a node joined a formed
/// 500-node cluster: memberships differ for a moment, so digests go by tag, and a round has
/// more fresh heartbeats to offer than a datagram holds. (Before 2026-12-04 entries that did
/// not fit were still counted as listed, and the cover spanned them.)
#[cfg(feature = "fuzzing")]
#[test]
fn a_window_digest_lists_every_node_its_cover_spans() {
    use std::collections::BTreeSet;
    use tidings::fuzzing::{Message, WireCodec, tag_of};

    let n = 500;
    let mut sim = cluster(n, 1, NetConfig::default());
    let newcomer = sim.add_node();
    sim.join(newcomer, &[0]);
    sim.run_for(Duration::from_millis(150));
    let n = n + 1;
    let codec = WireCodec::new(&config().cluster_id, None, true, true);
    let interval = config().gossip_interval;
    let (mut windows, mut covered) = (0, 0);
    for i in 0..n {
        // This node's timers up to its next round, run at once and read straight away: its
        // membership is the one the digests were built from. (The simulation is not run
        // further.)
        let (known, sent) = sim.with_node(i, |node, now| {
            let mut sent = Vec::new();
            while let Some(t) = node.poll_timeout().filter(|&t| t <= now + interval) {
                node.handle_timeout(t.max(now));
                sent.extend(std::iter::from_fn(|| node.poll_transmit()));
                if !sent.is_empty() {
                    break;
                }
            }
            let known: Vec<u64> = node
                .members()
                .map(|m| tag_of(&m.id.name, m.id.generation.0))
                .collect();
            (known, sent)
        });
        for t in sent {
            let Ok(Message::Syn { digest, .. }) = codec.decode(&t.payload) else {
                continue;
            };
            let Some((start, end)) = digest.cover else {
                continue;
            };
            if digest.indexed || (start, end) == (0, u64::MAX) {
                continue;
            }
            windows += 1;
            let listed: BTreeSet<u64> = digest.entries.iter().map(|e| e.tag).collect();
            let in_cover = |t: u64| {
                if start <= end {
                    (start..=end).contains(&t)
                } else {
                    t >= start || t <= end
                }
            };
            for &t in known.iter().filter(|&&t| in_cover(t)) {
                covered += 1;
                assert!(
                    listed.contains(&t),
                    "node {i}: {t:#x} is covered ({start:#x}..={end:#x}) but not listed"
                );
            }
        }
    }
    assert!(windows >= 100, "only {windows} window digests");
    assert!(
        covered >= windows,
        "{covered} covered nodes in {windows} digests"
    );
}

/// A peer that missed a delete whose tombstone has since been purged catches up through a
/// reset. Its keys that were never deleted must not be reported deleted on the way: a reset
/// cut to a datagram's worth would replace the copy with its first entries, so the keys
/// beyond the cut went missing (and were heard deleted) until the rest arrived.
#[test]
fn a_peer_catching_up_through_a_reset_hears_only_the_real_deletes() {
    catch_up_through_a_reset(false);
}

/// The same with the stream transport cut (a firewall that lets only UDP through): the reset
/// then comes in datagram-sized pieces, and the peer still catches up.
#[test]
fn a_peer_catching_up_through_a_reset_without_streams_gets_it_in_pieces() {
    catch_up_through_a_reset(true);
}

fn catch_up_through_a_reset(no_streams: bool) {
    for seed in seeds_from_env(3) {
        let mut c = config();
        c.tombstone_grace = Duration::from_secs(2);
        let n = 4;
        let mut sim = Sim::new(seed, c, NetConfig::default());
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
            .unwrap();
        // Node 1's state: a deleted key first, then 600-byte values: more than a datagram.
        sim.set(1, "doomed", "v");
        let pad = "p".repeat(600);
        for k in 0..4 {
            sim.set(1, &format!("pad{k:02}"), &pad);
        }
        let owner = sim.nodes[1].node.id().clone();
        let whole = |s: &Sim, i: usize| {
            s.nodes[i]
                .node
                .node_state(&owner.name)
                .map(|st| st.max_version())
                == Some(s.nodes[1].node.local_state().max_version())
        };
        sim.run_until(Duration::from_secs(30), |s| (0..n).all(|i| whole(s, i)))
            .unwrap();
        // Node 3 is away while the key is deleted and its tombstone purged everywhere else.
        sim.isolate(3);
        sim.with_node(1, |node, now| node.delete(now, "doomed"))
            .unwrap();
        sim.set(1, "after", "v");
        sim.run_for(Duration::from_secs(6));
        assert!(
            sim.nodes[1].node.local_state().gc_version().0 > 0,
            "seed {seed}: no GC"
        );
        sim.nodes[3].events.clear();
        sim.record_events(true);
        sim.heal();
        if no_streams {
            for j in 0..3 {
                sim.cut_streams(3, j);
            }
        }
        sim.run_until(Duration::from_secs(30), |s| whole(s, 3))
            .unwrap_or_else(|e| panic!("seed {seed}: node 3 never caught up: {e:?}"));
        let deleted: Vec<&str> = sim.nodes[3]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::KeyDeleted { node, key } if *node == owner => Some(key.as_str()),
                _ => None,
            })
            .collect();
        if no_streams {
            // Pieces leave the keys beyond each cut missing for a while (design.md 5).
            assert!(deleted.contains(&"doomed"), "seed {seed}: {deleted:?}");
        } else {
            assert_eq!(deleted, ["doomed"], "seed {seed}");
        }
        assert!(
            sim.nodes[3].node.get(&owner.name, "pad03").is_some(),
            "seed {seed}"
        );
        assert!(
            sim.nodes[3].node.get(&owner.name, "doomed").is_none(),
            "seed {seed}"
        );
    }
}

/// `n` nodes joined through `via` and formed, that bury a peer 5 s after marking it down and
/// keep the burial 300 s: a 40-s partition buries each side, and the burial still holds when
/// it heals.
fn formed_with_short_dead_grace(n: usize, seed: u64, via: &[usize]) -> Sim {
    let mut c = config();
    c.dead_grace = Duration::from_secs(5);
    c.forget_after = Duration::from_secs(300);
    let mut sim = Sim::new(seed, c, NetConfig::default());
    for _ in 0..n {
        sim.add_node();
    }
    sim.join_all_via(via);
    sim.run_until(Duration::from_secs(60), |s| s.all_see_live(n))
        .unwrap();
    sim
}

/// A partition that outlives `dead_grace`: each side buries the other. After the heal only the
/// nodes the other side contacts directly (its seeds) heard from it; the rest learn of it
/// through gossip, which must bring it back as soon as its heartbeat shows it went on beating,
/// not after `forget_after` (found by review: with the default graces the cluster stayed
/// split for 570 s after the heal).
#[test]
fn a_partition_longer_than_dead_grace_heals_without_waiting_for_forget_after() {
    for seed in seeds_from_env(3) {
        let n = 6;
        let mut sim = formed_with_short_dead_grace(n, seed, &[0]);
        sim.partition(&[0, 1, 2], &[3, 4, 5]);
        // Long enough to bury the other side, and past `BURIAL_LIFT_BEATS` (25.6 s at 100 ms).
        sim.run_for(Duration::from_secs(40));
        assert!(
            (0..n)
                .all(|i| sim.nodes[i].node.num_live() == 3
                    && sim.nodes[i].node.members().count() == 3),
            "seed {seed}: the halves did not bury each other"
        );
        sim.heal();
        let healed = sim.run_until(Duration::from_secs(20), |s| s.all_see_live(n));
        let live: Vec<usize> = (0..n).map(|i| sim.nodes[i].node.num_live()).collect();
        assert!(
            healed.is_ok(),
            "seed {seed}: still split 20 s after the heal: {live:?}"
        );
    }
}

/// The same partition, and a node of one half dies shortly before the heal: its half still
/// holds it (down) at a heartbeat far past the one the other half buried it at. That must not
/// bring it back there as a live ghost (found by review: `Joined`, then `Down` a second later,
/// and ring ownership meanwhile), while its live half-mates come back.
#[test]
fn a_node_dead_across_a_healed_partition_does_not_come_back_as_a_ghost() {
    for seed in seeds_from_env(3) {
        for before_heal in [Duration::from_millis(300), Duration::from_secs(3)] {
            let n = 6;
            let mut sim = formed_with_short_dead_grace(n, seed, &[0]);
            sim.partition(&[0, 1, 2], &[3, 4, 5]);
            sim.run_for(Duration::from_secs(40));
            let dead = sim.nodes[4].node.id().clone();
            sim.crash(4);
            sim.run_for(before_heal);
            for i in 0..n {
                sim.nodes[i].events.clear();
            }
            sim.record_events(true);
            sim.heal();
            sim.run_until(Duration::from_secs(20), |s| {
                (0..3).all(|i| s.nodes[i].node.num_live() == 5)
            })
            .unwrap_or_else(|e| panic!("seed {seed}, {before_heal:?}: no heal: {e:?}"));
            sim.run_for(Duration::from_secs(10));
            for i in 0..3 {
                let ghost: Vec<&Event> = sim.nodes[i]
                    .events
                    .iter()
                    .map(|(_, e)| e)
                    .filter(|e| matches!(e, Event::Joined(id) if *id == dead))
                    .collect();
                assert!(
                    ghost.is_empty(),
                    "seed {seed}, crash {before_heal:?} before the heal: node {i} took the dead node back: {ghost:?}"
                );
            }
        }
    }
}

/// Nodes that start together: every node's first ring holds the others, so no node owned
/// anything before another arrived. Each first `Ownership` event acquires from nobody, and no
/// node relinquishes to another (found by review: each was told it acquired a share from every
/// other node, which had relinquished nothing).
#[test]
fn nodes_starting_together_acquire_from_nobody() {
    for seed in seeds_from_env(3) {
        let n = 4;
        let mut sim = Sim::new(seed, config(), NetConfig::default());
        sim.record_events(true);
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0]);
        sim.run_for(Duration::from_secs(8));
        for i in 0..n {
            let changes = ownership_events(&sim, i);
            assert!(
                !changes.is_empty(),
                "seed {seed}: node {i} never owned anything"
            );
            for c in changes {
                assert!(
                    c.handoff.relinquished.is_empty(),
                    "seed {seed}: node {i} relinquished {:?}",
                    c.handoff.relinquished
                );
                assert!(
                    c.handoff.acquired.iter().all(|t| t.peer.is_none()),
                    "seed {seed}: node {i} named a previous owner: {:?}",
                    c.handoff
                        .acquired
                        .iter()
                        .map(|t| &t.peer)
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

/// The half that holds a node dying just before the heal was itself split first: its two
/// parts hold the dead node at different heartbeats, both far past the other half's burial.
/// Hearing the staler first, then the fresher, must not read as the dead node beating again
/// (found by review: it came back as a ghost on the other half).
#[test]
fn a_node_dead_in_a_split_half_does_not_come_back_as_a_ghost() {
    for seed in seeds_from_env(2) {
        for (split_before, crash_before) in [(3_000, 1_000), (5_000, 3_000)] {
            let n = 30;
            let mut sim = formed_with_short_dead_grace(n, seed, &[0, n - 1]);
            let a: Vec<usize> = (0..15).collect();
            let b: Vec<usize> = (15..30).collect();
            sim.partition(&a, &b);
            sim.run_for(Duration::from_millis(40_000 - split_before));
            sim.partition(&b[..8], &b[8..]);
            sim.run_for(Duration::from_millis(split_before - crash_before));
            let dead = sim.nodes[25].node.id().clone();
            sim.crash(25);
            sim.run_for(Duration::from_millis(crash_before));
            for i in 0..n {
                sim.nodes[i].events.clear();
            }
            sim.record_events(true);
            sim.heal();
            sim.run_for(Duration::from_secs(20));
            for &i in &a {
                assert!(
                    !sim.nodes[i]
                        .events
                        .iter()
                        .any(|(_, e)| matches!(e, Event::Joined(id) if *id == dead)),
                    "seed {seed}, split {split_before} ms, crash {crash_before} ms before the heal: node {i} took the dead node back"
                );
                assert_eq!(sim.nodes[i].node.num_live(), n - 1, "seed {seed}: node {i}");
            }
        }
    }
}

/// Two nodes join a settled cluster together: each one's first `Ownership` event names, range
/// for range, what each old member relinquished to it, and nothing from nobody (found by
/// review: ranges the ring without it gave the other joiner were acquired from nobody).
#[test]
fn nodes_joining_together_mirror_what_the_owners_relinquished() {
    for seed in seeds_from_env(2) {
        let n = 10;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        sim.record_events(true);
        let joiners = [sim.add_node(), sim.add_node()];
        for j in joiners {
            sim.join(j, &[0]);
        }
        sim.run_for(Duration::from_secs(10));
        for j in joiners {
            let name = sim.nodes[j].node.id().name.clone();
            let mine = ownership_events(&sim, j);
            let first = &mine.first().expect("an ownership event").handoff;
            assert!(
                first.acquired.iter().all(|t| t.peer.is_some()),
                "seed {seed}: {name} acquired from nobody"
            );
            for p in 0..n {
                let peer = sim.nodes[p].node.id().name.clone();
                let gave: Vec<tidings::ring::KeyRange> = ownership_events(&sim, p)
                    .iter()
                    .filter_map(|c| c.handoff.relinquished_to(&name))
                    .flat_map(|t| t.ranges.iter().copied())
                    .collect();
                let took = first
                    .acquired_from(&peer)
                    .map(|t| t.ranges.clone())
                    .unwrap_or_default();
                assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
            }
        }
    }
}

/// Nodes cut off for 128 to 256 heartbeats, one alone and two five seconds apart, come back
/// without anyone convicting anyone: what they hold is that far behind, and a heartbeat sent
/// as its low byte read as up to 128 ahead at the receiver, which then ignored the real
/// heartbeats until they caught up (found by review: 540 to 702 false downs of 756 pairs,
/// 648 in this test before the fix). And one alone for 25 s, about 256 behind.
#[test]
fn nodes_cut_off_for_a_few_hundred_beats_come_back_without_false_downs() {
    for seed in seeds_from_env(1) {
        for (first, second) in [(16, None), (20, Some(5)), (25, None)] {
            let n = 30;
            let mut sim = cluster(n, seed, NetConfig::default());
            sim.run_for(Duration::from_secs(20));
            let cut = [n - 2, n - 1];
            sim.isolate(cut[0]);
            if let Some(gap) = second {
                sim.run_for(Duration::from_secs(gap));
                sim.isolate(cut[1]);
                sim.run_for(Duration::from_secs(first - gap));
            } else {
                sim.run_for(Duration::from_secs(first));
            }
            sim.record_events(true);
            for i in 0..n {
                sim.nodes[i].events.clear();
            }
            sim.heal();
            sim.run_for(Duration::from_secs(15));
            let cut_names: Vec<String> = cut
                .iter()
                .map(|&i| sim.nodes[i].node.id().name.clone())
                .collect();
            for i in 0..n - 2 {
                let names: Vec<&str> = cut_names.iter().map(String::as_str).collect();
                let wrong = convicted_except(&sim, i, &names);
                assert!(
                    wrong.is_empty(),
                    "seed {seed}, cut {first} s: node {i} convicted {wrong:?}"
                );
                assert_eq!(
                    sim.nodes[i].node.stats().identity_conflicts,
                    0,
                    "seed {seed}"
                );
            }
            assert!(sim.all_see_live(n), "seed {seed}, cut {first} s");
        }
    }
}

/// A peer that crashes while another node is frozen for 30-40 s stays down everywhere: the
/// frozen node's queue holds the crashed peer's last beats, and read against where the peer's
/// schedule would be by now they came out 256 higher, a heartbeat it never sent, which the
/// frozen node passed on and every node took as the peer back up (found by review, in a
/// version of the catch-up reading that never shipped).
#[test]
fn a_peer_that_crashes_while_a_node_is_frozen_stays_down() {
    for seed in seeds_from_env(1) {
        for (pause_s, crash_after_s) in [(40, 3), (30, 0)] {
            let n = 30;
            let mut sim = cluster(n, seed, NetConfig::default());
            sim.run_for(Duration::from_secs(10));
            sim.record_events(true);
            let (frozen, victim) = (5, 7);
            sim.pause(frozen, Duration::from_secs(pause_s));
            sim.run_for(Duration::from_secs(crash_after_s));
            sim.crash(victim);
            sim.run_for(Duration::from_secs(pause_s - crash_after_s + 17));
            let name = sim.nodes[victim].node.id().name.clone();
            for i in (0..n).filter(|&i| i != victim) {
                let back = sim.nodes[i].events.iter().any(
                    |(_, e)| matches!(e, Event::Up(id) | Event::Joined(id) if id.name == name),
                );
                assert!(
                    !back,
                    "seed {seed}, frozen {pause_s} s: node {i} saw the crashed node back"
                );
                assert_eq!(
                    sim.nodes[i].node.status(&name),
                    Some(MemberStatus::Down),
                    "seed {seed}, frozen {pause_s} s: node {i}"
                );
            }
        }
    }
}

/// A datagram 22 s late (5 % of them) reaching a node just after its catch-up window from a
/// 13-25 s pause: its beats, 130 to 256 heartbeats old, read 256 too high, and the lead check
/// measured from when the node last learned the peer's heartbeat (before the pause) let them
/// through; the node then passed the value on in full entries, peers heard their own heartbeat
/// from the future and convicted a live one (found by review: 155 identity conflicts after a
/// 13-s pause, a false down after 20 s). Nodes that were not frozen refuse such beats.
#[test]
fn very_late_datagrams_after_a_pause_teach_no_heartbeat_from_the_future() {
    for seed in seeds_from_env(1) {
        for pause_ms in [13_000, 20_000, 25_000] {
            let n = 30;
            let net = NetConfig {
                reorder: 0.05,
                reorder_delay: Duration::from_secs(22),
                ..NetConfig::default()
            };
            let mut sim = cluster(n, seed, net);
            sim.run_for(Duration::from_secs(10));
            sim.record_events(true);
            let frozen = 5;
            sim.pause(frozen, Duration::from_millis(pause_ms));
            sim.run_for(Duration::from_millis(pause_ms) + Duration::from_secs(15));
            let name = sim.nodes[frozen].node.id().name.clone();
            for i in 0..n {
                let wrong = convicted_except(&sim, i, &[name.as_str()]);
                assert!(
                    wrong.is_empty(),
                    "seed {seed}, frozen {pause_ms} ms: node {i} convicted {wrong:?}"
                );
                assert_eq!(
                    sim.nodes[i].node.stats().identity_conflicts,
                    0,
                    "seed {seed}, frozen {pause_ms} ms: node {i}"
                );
            }
        }
    }
}

/// A peer that comes back from a pause of its own while an observer is frozen is not convicted
/// by that observer after it resumes: the observer brings the peer up from the oldest packet
/// in its queue, and had its schedule restart from that stale arrival (38 beats late), so once
/// its catch-up window closed every fresh beat of the peer passed the schedule and was refused
/// (found by review of the schedule check: 8 false downs in 36 timings of this kind).
#[test]
fn a_peer_back_up_while_an_observer_is_frozen_is_not_convicted_by_it() {
    for seed in seeds_from_env(6) {
        let n = 30;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(10));
        sim.record_events(true);
        let (observer, peer) = (5, 7);
        sim.pause(peer, Duration::from_secs(6));
        sim.run_for(Duration::from_secs(2));
        sim.pause(observer, Duration::from_secs(8));
        sim.run_for(Duration::from_secs(8));
        for i in 0..n {
            sim.nodes[i].events.clear();
        }
        sim.run_for(Duration::from_secs(15));
        let name = sim.nodes[peer].node.id().name.clone();
        for i in 0..n {
            let downs = sim.nodes[i]
                .events
                .iter()
                .filter(|(_, e)| matches!(e, Event::Down(id) if id.name == name))
                .count();
            assert_eq!(downs, 0, "seed {seed}: node {i} convicted the live peer");
        }
        assert!(sim.all_see_live(n), "seed {seed}");
    }
}

/// A node whose table is full (`max_nodes`) does not ask for the nodes it would refuse, so it
/// does not pull a stream sync for them every round (found by review: 65 stream syncs in 99
/// rounds, against 14 for the other 39 nodes together), and still gets updates of the nodes
/// it holds.
#[test]
fn a_node_with_a_full_table_does_not_pull_streams_every_round() {
    for seed in seeds_from_env(1) {
        let n = 40;
        let (mut sim, capped) = joining_with_one_configured(seed, n, |c| c.limits.max_nodes = 30);
        sim.run_for(Duration::from_secs(20));
        assert_eq!(sim.nodes[capped].node.num_members(), 30, "seed {seed}");
        let syncs = |sim: &Sim| sim.nodes[capped].node.stats().stream_syncs;
        let before = syncs(&sim);
        sim.run_for(Duration::from_secs(10));
        let pulled = syncs(&sim) - before;
        // Anti-entropy (every 30 s on average) and the odd state sync, not one a round.
        assert!(
            pulled <= 5,
            "seed {seed}: {pulled} stream syncs in 100 rounds"
        );
        let held: Vec<usize> = (0..n - 1)
            .filter(|&i| {
                let name = sim.nodes[i].node.id().name.clone();
                sim.nodes[capped].node.status(&name).is_some()
            })
            .collect();
        let w = held[3];
        sim.set(w, "x", "1");
        let name = sim.nodes[w].node.id().name.clone();
        sim.run_until(Duration::from_secs(5), |s| {
            s.nodes[capped].node.get(&name, "x").is_some()
        })
        .unwrap_or_else(|_| panic!("seed {seed}: the full node missed an update"));
    }
}

/// With `ring_ready_only`, what each node acquired from a named peer, over all its
/// `Ownership` events, is what that peer relinquished to it, range for range.
fn assert_handoffs_mirror(sim: &Sim, seed: u64, what: &str) {
    let n = sim.nodes.len();
    for j in 0..n {
        let name = sim.nodes[j].node.id().name.clone();
        for p in (0..n).filter(|&p| p != j) {
            let peer = sim.nodes[p].node.id().name.clone();
            let mut gave: Vec<tidings::ring::KeyRange> = ownership_events(sim, p)
                .iter()
                .filter_map(|c| c.handoff.relinquished_to(&name))
                .flat_map(|t| t.ranges.iter().copied())
                .collect();
            let mut took: Vec<tidings::ring::KeyRange> = ownership_events(sim, j)
                .iter()
                .filter_map(|c| c.handoff.acquired_from(&peer))
                .flat_map(|t| t.ranges.iter().copied())
                .collect();
            gave.sort_unstable_by_key(|r| (r.start, r.end));
            took.sort_unstable_by_key(|r| (r.start, r.end));
            assert_eq!(gave, took, "seed {seed}, {what}: {peer} to {name}");
        }
    }
}

/// With `ring_ready_only`, nodes of different ages that turn ready together owned nothing
/// before: none is told it acquired from another (found by review: the youngest named the
/// older ones, which relinquished nothing, having never held a ring). One that turns ready
/// long after the others acquires from them, as they relinquish to it.
#[test]
fn nodes_turning_ready_together_acquire_from_nobody_and_a_late_one_from_the_owners() {
    for seed in seeds_from_env(2) {
        let mut c = config();
        c.ring_ready_only = true;
        c.initially_ready = false;
        let mut sim = Sim::new(seed, c, NetConfig::default());
        sim.record_events(true);
        sim.add_node();
        sim.add_node();
        sim.join_all_via(&[0]);
        sim.run_for(Duration::from_secs(10));
        for _ in 0..2 {
            let young = sim.add_node();
            sim.join(young, &[0]);
        }
        sim.run_until(Duration::from_secs(30), |s| s.all_see_live(4))
            .unwrap_or_else(|_| panic!("seed {seed}: no membership"));
        sim.run_for(Duration::from_secs(1));
        // Three turn ready at once; node 3 stays out.
        for i in 0..3 {
            sim.with_node(i, |n, now| n.set_ready(now, true)).unwrap();
        }
        sim.run_for(Duration::from_secs(10));
        let fp = sim.nodes[0].node.ring().fingerprint();
        for i in 0..4 {
            assert_eq!(sim.nodes[i].node.ring().fingerprint(), fp, "seed {seed}");
            assert_eq!(sim.nodes[i].node.ring().num_members(), 3, "seed {seed}");
        }
        for i in 0..3 {
            for ch in ownership_events(&sim, i) {
                assert!(
                    ch.handoff.acquired.iter().all(|t| t.peer.is_none()),
                    "seed {seed}: node {i} named a previous owner: {:?}",
                    ch.handoff
                        .acquired
                        .iter()
                        .map(|t| &t.peer)
                        .collect::<Vec<_>>()
                );
            }
        }
        assert_handoffs_mirror(&sim, seed, "turning ready together");
        // Long after, the fourth turns ready: it acquires what the three give up.
        sim.with_node(3, |n, now| n.set_ready(now, true)).unwrap();
        sim.run_for(Duration::from_secs(10));
        let late = ownership_events(&sim, 3);
        assert!(
            late.iter()
                .flat_map(|c| c.handoff.acquired.iter())
                .all(|t| t.peer.is_some()),
            "seed {seed}: the late node acquired from nobody"
        );
        assert!(!late.is_empty(), "seed {seed}: the late node owns nothing");
        assert_handoffs_mirror(&sim, seed, "one turning ready late");
    }
}

/// Staleness is measured from when each node got each write, not sampled: the last node to
/// get the update waited about as long as the run took (found by review: sampled once an
/// interval from the write, the maximum fell short of the run, and `load` reported 0/0/0).
#[test]
fn staleness_ends_with_the_last_node_to_get_the_write() {
    for seed in seeds_from_env(2) {
        for scenario in [Scenario::Update, Scenario::Load] {
            let r = run_scenario(scenario, &opts(24, seed)).unwrap();
            assert!(r.converged, "seed {seed}: {scenario}");
            let (p50, p99, max) = r.staleness_ms;
            let interval = config().gossip_interval.as_millis() as u64;
            assert!(
                p50 > 0 && p50 <= p99 && p99 <= max,
                "seed {seed}: {scenario}: {:?}",
                r.staleness_ms
            );
            // Convergence is checked every quarter interval, and counted in whole rounds.
            assert!(
                max <= r.virtual_ms && max + interval >= r.virtual_ms,
                "seed {seed}: {scenario}: max {max} ms, run {} ms",
                r.virtual_ms
            );
        }
    }
}

/// An interval of a minute or more, set on the default configuration: the detector's samples
/// once stopped at 65.5 s (16-bit milliseconds), so with every peak age at that cap the spread
/// vanished, and the floor on it stayed the preset's 200 ms: live nodes were convicted 1,471
/// times here (found by review). With the cap gone, the 200-ms floor still let a heartbeat
/// relayed a round late convict (26 times); the floor now follows the interval. None is.
#[test]
fn a_minute_long_interval_convicts_no_live_node() {
    for seed in seeds_from_env(1) {
        for secs in [60, 120] {
            let mut c = Config::default();
            c.gossip_interval = Duration::from_secs(secs);
            c.dead_grace = Duration::from_secs(20 * 60);
            c.left_grace = Duration::from_secs(20 * 60);
            c.forget_after = Duration::from_secs(60 * 60);
            let mut sim = Sim::new(seed, c, NetConfig::default());
            let n = 12;
            for _ in 0..n {
                sim.add_node();
            }
            sim.join_all_via(&[0]);
            sim.run_until(Duration::from_secs(40 * secs), |s| s.all_see_live(n))
                .unwrap_or_else(|e| panic!("seed {seed}, {secs} s: {e:?}"));
            sim.run_for(Duration::from_secs(200 * secs));
            let downs: u64 = sim.nodes.iter().map(|s| s.node.stats().downs).sum();
            assert_eq!(downs, 0, "seed {seed}, {secs}-s interval");
            assert!(sim.all_see_live(n), "seed {seed}, {secs}-s interval");
        }
    }
}

/// A node at ten times the others' gossip interval joins a small formed cluster (a node on
/// `Config::wan()` among `lan()` ones, or the first step of a rolling change of the
/// interval), then every other member is restarted at that interval, one every 3 s after
/// 0.5 s down. No observer marks a live node down, and the members' rings change once for the
/// join, not again. Before 2026-12-08 observers dated a peer's heartbeats at their own pace
/// and judged a new one by a prior in their own intervals: a peer beating every second, seen
/// at 100 ms, looked 0.9 s staler at each beat, and was convicted and brought back up at
/// every seed (12 false downs in 4 runs of this join, 36 in 4 of the rolling change; design.md
/// 4.1). Nodes now gossip their interval (`tidings:interval`) and are judged at their pace.
#[test]
fn a_slower_node_joining_or_rolled_in_is_judged_at_its_own_pace() {
    for seed in seeds_from_env(2) {
        let n = 4;
        let mut sim = formed_recording_events(n, seed);
        let mut slow = config();
        slow.gossip_interval = Duration::from_secs(1);
        sim.set_config(slow);
        let seen: Vec<usize> = (0..n).map(|i| ownership_events(&sim, i).len()).collect();
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(30));
        for p in 0..=n {
            let downs = convicted_except(&sim, p, &[]);
            assert!(downs.is_empty(), "seed {seed}: n{p} convicted {downs:?}");
        }
        for (p, &seen) in seen.iter().enumerate() {
            let changes = ownership_events(&sim, p).len() - seen;
            assert_eq!(
                changes, 1,
                "seed {seed}: n{p}'s ring changed {changes} times"
            );
        }

        // The rest of the rollout: a `Down` of a stopped process is true; of a running one,
        // false.
        for i in 0..n {
            sim.crash(i);
            sim.run_for(Duration::from_millis(500));
            sim.restart(i);
            sim.run_for(Duration::from_millis(2500));
        }
        sim.run_for(Duration::from_secs(30));
        let running: Vec<NodeId> = sim.nodes.iter().map(|s| s.node.id().clone()).collect();
        for (p, s) in sim.nodes.iter().enumerate() {
            let false_downs: Vec<&NodeId> = s
                .events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Down(id) if running.contains(id) => Some(id),
                    _ => None,
                })
                .collect();
            assert!(
                false_downs.is_empty(),
                "seed {seed}: n{p} convicted running {false_downs:?}"
            );
        }
        assert!(sim.all_see_live(n + 1), "seed {seed}");
    }
}

/// A connection needs both directions: with only 0 -> 1 cut, a stream from 1 to 0 is refused
/// to 1 and never reaches 0 (it did, and 0 was told its reply was refused instead).
#[test]
fn a_one_way_cut_refuses_streams_both_ways() {
    let mut sim = Sim::new(1, config(), NetConfig::default());
    for _ in 0..2 {
        sim.add_node();
    }
    sim.cut_one_way(0, 1);
    sim.join(1, &[0]);
    sim.run_for(Duration::from_millis(500));
    let (s0, s1) = (sim.nodes[0].node.stats(), sim.nodes[1].node.stats());
    assert!(s1.tx_frames >= 1, "1 tried its join over a stream");
    assert_eq!(s0.rx_frames, 0, "a frame crossed the one-way cut");
    assert!(
        sim.net_stats().cut >= 1,
        "the refused stream is not counted as cut"
    );
}

/// `pause` leaves a crashed node crashed: it sends nothing until restarted.
#[test]
fn pausing_a_crashed_node_does_not_bring_it_back() {
    let mut sim = cluster(3, 1, NetConfig::default());
    sim.crash(2);
    let sent = sim.nodes[2].node.stats().tx_datagrams;
    sim.pause(2, Duration::from_millis(100));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.nodes[2].process, tidings::sim::Process::Crashed);
    assert_eq!(sim.nodes[2].node.stats().tx_datagrams, sent);
}

/// A paused node's socket buffers `paused_buffer` datagrams whatever frames wait too; the
/// datagrams past it are counted as overflowed.
#[test]
fn a_paused_nodes_buffer_counts_datagrams_only_and_overflow_is_counted() {
    let net = NetConfig {
        paused_buffer: 4,
        ..NetConfig::default()
    };
    let mut sim = cluster(4, 1, net);
    sim.pause(3, Duration::from_secs(3));
    sim.run_for(Duration::from_secs(4));
    let stats = sim.net_stats();
    assert!(stats.overflowed > 0, "{stats:?}");
}

/// A seed list that gains one unknown address (a DNS answer with a pod that has not joined
/// yet) starts one stream exchange, with it, not one with every seed (found by review: each
/// node synced fully with all N seeds, N² connections across the cluster).
#[test]
fn a_new_seed_gets_one_exchange_not_every_seed() {
    let n = 6;
    let mut sim = cluster(n, 1, NetConfig::default());
    let newcomer = sim.add_node();
    sim.run_for(Duration::from_secs(1));
    let mut seeds: Vec<_> = (0..n).map(|i| sim.nodes[i].addr).collect();
    let before = sim.nodes[0].node.stats().stream_syncs;
    seeds.push(sim.nodes[newcomer].addr);
    sim.with_node(0, |node, _| node.set_seeds(seeds.clone()));
    sim.run_for(Duration::from_millis(150));
    assert_eq!(sim.nodes[0].node.stats().stream_syncs - before, 1);
    // The newcomer, never joined itself, was reached and is a member now.
    sim.run_until(Duration::from_secs(10), |s| s.all_see_live(n + 1))
        .expect("the new seed joined through the exchange");
}

/// A joining node exchanges state with every seed at once and once more a second later (the
/// backoff's retry, scheduled while it was alone, still goes to all seeds: by then they know
/// more of the cluster, which is what forms a 1,000-node cold start in 11 rounds instead of
/// 20), then no more.
#[test]
fn a_joiner_syncs_with_every_seed_twice_then_gossips() {
    let mut sim = cluster(5, 1, NetConfig::default());
    let j = sim.add_node();
    sim.join(j, &[0, 1, 2]);
    sim.run_for(Duration::from_millis(500));
    let first = sim.nodes[j].node.stats().stream_syncs;
    assert_eq!(first, 3);
    sim.run_for(Duration::from_millis(700));
    assert_eq!(sim.nodes[j].node.stats().stream_syncs, 6);
    sim.run_for(Duration::from_secs(10));
    let later = sim.nodes[j].node.stats().stream_syncs;
    assert!(
        later <= 7,
        "{later} stream exchanges (one may be anti-entropy)"
    );
}

/// A node frozen for about 256 heartbeats (24-26 s at a 100-ms interval) convicts no live
/// peer when it resumes, and every peer sees it up within a few intervals. Every copy it holds
/// is that far behind, and a beat (a heartbeat's low byte, read against the copy held) then
/// read as slightly behind, or a whole 256 too low, so the node learned nothing from beats in
/// its catch-up window, or learned values it dated 25.6 s too old, and convicted a peer as the
/// window closed (1 to 2 false downs in 8 of 30 such runs before the fix). The peers, holding
/// it down at a copy as old, read its beats the same way and saw it up only when it wrote to
/// them itself (up to 1.1 s here, 1.6 s on other seeds; 0.2-0.4 s since a node that sees a
/// peer come up names it by its whole heartbeat for a while).
#[test]
fn a_node_frozen_for_about_256_beats_convicts_no_live_peer_and_is_soon_seen_up() {
    for seed in seeds_from_env(1) {
        for pause_ms in [24_100, 24_500, 25_000, 25_200, 25_500] {
            let n = 30;
            let mut sim = cluster(n, seed, NetConfig::default());
            sim.run_for(Duration::from_secs(10));
            sim.record_events(true);
            let frozen = 5;
            sim.pause(frozen, Duration::from_millis(pause_ms));
            let resumed = sim.now() + Duration::from_millis(pause_ms);
            sim.run_for(Duration::from_millis(pause_ms) + Duration::from_secs(10));
            let name = sim.nodes[frozen].node.id().name.clone();
            for i in 0..n {
                let wrong = convicted_except(&sim, i, &[name.as_str()]);
                assert!(
                    wrong.is_empty(),
                    "seed {seed}, frozen {pause_ms} ms: node {i} convicted {wrong:?}"
                );
                if i == frozen {
                    continue;
                }
                let up = sim.nodes[i]
                    .events
                    .iter()
                    .find(|(_, e)| matches!(e, Event::Up(id) if id.name == name))
                    .map(|(at, _)| at.saturating_duration_since(resumed));
                assert!(
                    up.is_some_and(|d| d <= Duration::from_millis(500)),
                    "seed {seed}, frozen {pause_ms} ms: node {i} saw it up after {up:?}"
                );
            }
            // Nobody hears its own heartbeat from the future (a beat read 256 too high).
            let conflicts: u64 = (0..n)
                .map(|i| sim.nodes[i].node.stats().identity_conflicts)
                .sum();
            assert_eq!(conflicts, 0, "seed {seed}, frozen {pause_ms} ms");
            assert!(sim.all_see_live(n), "seed {seed}, frozen {pause_ms} ms");
        }
    }
}

/// The report's figures are what they say: rounds are the measured time in whole intervals
/// rounded up, the byte total is the sum of its datagram and stream parts, and every rate is
/// over the measured phase (a phase's datagram rate is about the idle one, not the phase's
/// bytes spread over the whole run since boot).
#[test]
fn report_figures_are_rounds_rounded_up_and_rates_over_the_phase() {
    for seed in seeds_from_env(1) {
        let interval = config().gossip_interval.as_millis() as u64;
        let idle = run_scenario(Scenario::Idle, &opts(24, seed)).unwrap();
        let mut not_whole = 0;
        for scenario in Scenario::ALL {
            let r = run_scenario(scenario, &opts(24, seed)).unwrap();
            assert!(r.converged, "seed {seed}: {scenario}");
            let t = r.virtual_ms;
            if scenario != Scenario::Idle {
                assert!(
                    r.rounds * interval >= t && r.rounds.saturating_sub(1) * interval <= t,
                    "seed {seed}: {scenario}: {} rounds for {t} ms",
                    r.rounds
                );
                if !t.is_multiple_of(interval) {
                    not_whole += 1;
                }
            }
            assert!(
                r.bytes_per_node_per_s
                    .abs_diff(r.datagram_bytes_per_node_per_s + r.stream_bytes_per_node_per_s)
                    <= 1,
                "seed {seed}: {scenario}\n{}",
                r.table()
            );
            if scenario != Scenario::ColdStart {
                assert!(
                    r.datagrams_per_node_per_s >= idle.datagrams_per_node_per_s / 2.0,
                    "seed {seed}: {scenario}: {:.1} datagrams/node/s, idle {:.1}\n{}",
                    r.datagrams_per_node_per_s,
                    idle.datagrams_per_node_per_s,
                    r.table()
                );
            }
        }
        assert!(
            not_whole > 0,
            "seed {seed}: no run tells rounding up from down"
        );
    }
}

/// `idle` measures its own window: ten seconds and sixty give about the same rate (the
/// setup's joins, full-state streams included, are not in it).
#[test]
fn idle_rates_do_not_depend_on_the_window_length() {
    for seed in seeds_from_env(1) {
        let run = |secs| {
            let mut o = opts(24, seed);
            o.idle_for = Duration::from_secs(secs);
            run_scenario(Scenario::Idle, &o).unwrap()
        };
        let (short, long) = (run(10), run(60));
        let ratio = short.bytes_per_node_per_s as f64 / long.bytes_per_node_per_s as f64;
        assert!(
            (0.85..1.15).contains(&ratio),
            "seed {seed}: {} B/s over 10 s, {} B/s over 60 s",
            short.bytes_per_node_per_s,
            long.bytes_per_node_per_s
        );
    }
}

/// Staleness is timed per node: a write reaches some nodes before others, so the median
/// is below the largest (a key whose arrival went unrecorded would read the whole phase for
/// every node); crash detection likewise has a median below its largest.
#[test]
fn staleness_and_detection_are_per_node_distributions() {
    for seed in seeds_from_env(2) {
        for scenario in [Scenario::Update, Scenario::Load, Scenario::Partition] {
            let r = run_scenario(scenario, &opts(24, seed)).unwrap();
            let (p50, _, max) = r.staleness_ms;
            assert!(p50 < max, "seed {seed}: {scenario}: {:?}", r.staleness_ms);
        }
        let r = run_scenario(Scenario::Crash, &opts(24, seed)).unwrap();
        let (med, max) = r.detection_ms.expect("detected");
        assert!(
            0 < med && med < max,
            "seed {seed}: detection {med}/{max} ms"
        );
    }
}

/// `Report::rounds` is "gossip intervals the measured phase took (rounded up)" in `idle` too:
/// 250 ms of 100-ms rounds is 3. (Found by review: `idle` rounded down, and read 2.)
#[test]
fn idle_rounds_are_rounded_up_like_every_other_scenario() {
    let mut o = opts(8, 1);
    o.idle_for = Duration::from_millis(250);
    let r = run_scenario(Scenario::Idle, &o).unwrap();
    assert_eq!((r.virtual_ms, r.rounds), (250, 3), "{}", r.table());
}

/// As `a_joining_node_owns_nothing_until_its_first_ring_then_acquires_from_the_owners`, but
/// some member left gracefully a few seconds before the join (its Left state is still
/// gossiped for `left_grace`). The joiner hears of that leave in its join exchange; it must
/// still wait the settle for its first ring, as the old owners do before they add it (found
/// by review: a first version of the prompt drop of leavers built the joiner's ring within a
/// round, and for about a second two nodes owned the same keys).
#[test]
fn a_joiner_after_a_recent_leave_owns_nothing_until_its_first_ring() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(6));
        sim.with_node(7, |node, now| node.leave(now));
        sim.run_for(Duration::from_secs(5));
        let joiner = sim.add_node();
        sim.join(joiner, &[0]);
        sim.run_for(Duration::from_millis(400));
        let keys: Vec<[u8; 4]> = (0..500u32).map(u32::to_le_bytes).collect();
        let claimed = keys
            .iter()
            .filter(|k| sim.nodes[joiner].node.is_local_owner(*k))
            .count();
        let doubly = keys
            .iter()
            .filter(|k| {
                sim.nodes[joiner].node.is_local_owner(*k)
                    && (0..7).any(|i| sim.nodes[i].node.is_local_owner(*k))
            })
            .count();
        assert_eq!(
            (claimed, doubly),
            (0, 0),
            "seed {seed}: 400 ms after joining, the joiner claims {claimed} keys, {doubly} of them owned by another node too"
        );
    }
}

/// A crash is settled (the ring keeps the downed node for `ring_settle` after it is marked
/// down, so a flap makes one change), even when another member leaves gracefully meanwhile:
/// the leaver is dropped at once, the downed node only after the settle (found by review: a
/// first version rebuilt from the live members and took the downed node out with it).
#[test]
fn a_crash_still_waits_the_settle_when_another_member_leaves() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(6));
        let crashed = sim.nodes[6].node.id().name.clone();
        sim.crash(6);
        sim.run_until(Duration::from_secs(30), |s| {
            s.nodes[0].node.status(&crashed) == Some(MemberStatus::Down)
        })
        .expect("marked down");
        sim.with_node(7, |node, now| node.leave(now));
        sim.run_for(Duration::from_millis(500));
        assert!(
            sim.nodes[0].node.ring().contains(&crashed),
            "seed {seed}: the node marked down 500 ms ago is already out of the ring"
        );
    }
}

/// As `nodes_joining_together_mirror_what_the_owners_relinquished`, but a member left
/// gracefully a few seconds before, and the two join half a second apart: hand-offs stay
/// mirror images (found by review: with joiners' first rings built early on hearing the leave,
/// the first joiner took ranges it later gave to the second, whose first ring did not count
/// it as a previous owner).
#[test]
fn nodes_joining_after_a_recent_leave_mirror_what_was_relinquished() {
    for seed in seeds_from_env(2) {
        let n = 10;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        sim.with_node(n - 1, |node, now| node.leave(now));
        sim.run_for(Duration::from_secs(5));
        sim.record_events(true);
        let a = sim.add_node();
        sim.join(a, &[0]);
        sim.run_for(Duration::from_millis(500));
        let b = sim.add_node();
        sim.join(b, &[0]);
        sim.run_for(Duration::from_secs(10));
        let all: Vec<usize> = (0..n - 1).chain([a, b]).collect();
        for &j in &[a, b] {
            let name = sim.nodes[j].node.id().name.clone();
            for &p in all.iter().filter(|&&p| p != j) {
                let peer = sim.nodes[p].node.id().name.clone();
                let mut gave: Vec<tidings::ring::KeyRange> = ownership_events(&sim, p)
                    .iter()
                    .filter_map(|c| c.handoff.relinquished_to(&name))
                    .flat_map(|t| t.ranges.iter().copied())
                    .collect();
                let mut took: Vec<tidings::ring::KeyRange> = ownership_events(&sim, j)
                    .iter()
                    .filter_map(|c| c.handoff.acquired_from(&peer))
                    .flat_map(|t| t.ranges.iter().copied())
                    .collect();
                gave.sort_by_key(|r| format!("{r:?}"));
                took.sort_by_key(|r| format!("{r:?}"));
                assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
            }
        }
    }
}

/// Sorted, merged ranges: the hashes they cover, however they were cut.
fn merged(mut ranges: Vec<tidings::ring::KeyRange>) -> Vec<tidings::ring::KeyRange> {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut out: Vec<tidings::ring::KeyRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end.checked_add(1) == Some(r.start) => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// What node `p` relinquished to node `j` and what `j` says it acquired from `p`, over all
/// their `Ownership` events, as merged ranges (`merged`).
fn gave_and_took(
    sim: &Sim,
    p: usize,
    j: usize,
) -> (Vec<tidings::ring::KeyRange>, Vec<tidings::ring::KeyRange>) {
    let name = sim.nodes[j].node.id().name.clone();
    let peer = sim.nodes[p].node.id().name.clone();
    let gave = ownership_events(sim, p)
        .iter()
        .filter_map(|c| c.handoff.relinquished_to(&name))
        .flat_map(|t| t.ranges.iter().copied())
        .collect();
    let took = ownership_events(sim, j)
        .iter()
        .filter_map(|c| c.handoff.acquired_from(&peer))
        .flat_map(|t| t.ranges.iter().copied())
        .collect();
    (merged(gave), merged(took))
}

/// Asserts that what each of `owners` relinquished to node `j` is what `j` says it acquired
/// from it (`gave_and_took`), and that more than one of them relinquished anything (so the
/// mirror is not met by a ring that changed nothing). `what` names the run in failures.
fn assert_owners_mirror_the_joiner(
    sim: &Sim,
    owners: impl IntoIterator<Item = usize>,
    j: usize,
    what: &str,
) {
    let name = sim.nodes[j].node.id().name.clone();
    let mut givers = 0;
    for p in owners {
        let peer = sim.nodes[p].node.id().name.clone();
        let (gave, took) = gave_and_took(sim, p, j);
        givers += usize::from(!gave.is_empty());
        assert_eq!(gave, took, "{what}: {peer} to {name}");
    }
    assert!(givers > 1, "{what}: {givers} owners relinquished to {name}");
}

/// A node joins while a crashed member, already marked down by every owner, still waits out
/// `ring_settle` in their rings: the owners' one rebuild takes the crashed member out and the
/// joiner in. The joiner learns the crashed member from its seed as alive (liveness is each
/// node's own verdict), but it never hears it beat, so its rings leave it out: its first ring
/// is the owners' ring, and half a second after the last owner's rebuild every key has a live
/// owner. Before 2026-12-07 (second session) the joiner's first ring held the crashed member
/// until its own detector convicted it about two seconds later, and meanwhile the keys the
/// owners relinquished to it that the crashed member held in its ring had no live owner
/// anywhere (seed 1592590336: 1.6 s; 14 keys of 1000 in seeds 1 to 6). Found on review of the
/// hand-off. And what each owner relinquishes to the joiner is what the joiner says it
/// acquired from it: the owners' previous ring held the crashed member, which the joiner reads
/// from their gossiped ring fingerprints (`tidings:ring`) and the crashed member's own; before
/// 2026-12-07 (seventh session) it named as previous owners the members of a ring without the
/// crashed member, so the ranges the crashed member held were said to come from others. See
/// `a_node_joining_after_a_crash_settled_mirrors_what_the_owners_relinquished` for the usual
/// case, a join after the owners' rings dropped it.
#[test]
fn a_node_joining_while_a_crash_settles_builds_the_ring_the_owners_build() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        let crashed = sim.nodes[n - 1].node.id().name.clone();
        sim.crash(n - 1);
        sim.run_until(Duration::from_secs(30), |s| {
            (0..n - 1).all(|i| s.nodes[i].node.status(&crashed) == Some(MemberStatus::Down))
        })
        .expect("marked down");
        sim.record_events(true);
        let j = sim.add_node();
        sim.join(j, &[0]);
        // Half a second after every owner's ring settled, each key has a live owner.
        let joiner = sim.nodes[j].node.id().name.clone();
        sim.run_until(Duration::from_secs(10), |s| {
            (0..n - 1).all(|i| s.nodes[i].node.ring().contains(&joiner))
        })
        .expect("settled");
        sim.run_for(Duration::from_millis(500));
        let live: Vec<usize> = (0..n - 1).chain([j]).collect();
        let orphans = (0..1000u32)
            .map(u32::to_le_bytes)
            .filter(|k| !live.iter().any(|&i| sim.nodes[i].node.is_local_owner(k)))
            .count();
        sim.run_for(Duration::from_secs(10));
        let mine = ownership_events(&sim, j);
        assert_eq!(
            orphans, 0,
            "seed {seed}: keys of 1000 with no live owner once settled"
        );
        let owners = ownership_events(&sim, 0);
        let fingerprints: Vec<String> = mine.iter().map(|c| c.fingerprint.to_string()).collect();
        assert_eq!(
            fingerprints,
            [owners
                .last()
                .expect("an owner's event")
                .fingerprint
                .to_string()],
            "seed {seed}: the joiner's rings, against the owners' ring"
        );
        let name = sim.nodes[j].node.id().name.clone();
        for p in 0..n - 1 {
            let peer = sim.nodes[p].node.id().name.clone();
            let (gave, took) = gave_and_took(&sim, p, j);
            assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
        }
    }
}

/// A node joins after a crashed member was marked down and the owners' rings dropped it, while
/// its seed still holds its state (until `dead_grace`): the joiner, introduced to it as alive,
/// never hears it beat and leaves it out of its rings, so its first ring is the owners', every
/// key has a live owner at once, and what each owner relinquishes is what the joiner says it
/// acquired from it. Before 2026-12-07 (second session) the joiner's rings held the crashed
/// member until its own detector convicted it.
#[test]
fn a_node_joining_after_a_crash_settled_mirrors_what_the_owners_relinquished() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        let crashed = sim.nodes[n - 1].node.id().name.clone();
        sim.crash(n - 1);
        sim.run_until(Duration::from_secs(30), |s| {
            (0..n - 1).all(|i| !s.nodes[i].node.ring().contains(&crashed))
        })
        .expect("dropped from the owners' rings");
        sim.record_events(true);
        let j = sim.add_node();
        sim.join(j, &[0]);
        let joiner = sim.nodes[j].node.id().name.clone();
        sim.run_until(Duration::from_secs(10), |s| {
            (0..n - 1).all(|i| s.nodes[i].node.ring().contains(&joiner))
                && s.nodes[j].node.ring().contains(&joiner)
        })
        .expect("settled");
        let live: Vec<usize> = (0..n - 1).chain([j]).collect();
        let orphans = (0..1000u32)
            .map(u32::to_le_bytes)
            .filter(|k| !live.iter().any(|&i| sim.nodes[i].node.is_local_owner(k)))
            .count();
        assert_eq!(orphans, 0, "seed {seed}: keys of 1000 with no live owner");
        sim.run_for(Duration::from_secs(10));
        let name = sim.nodes[j].node.id().name.clone();
        for p in 0..n - 1 {
            let peer = sim.nodes[p].node.id().name.clone();
            let (gave, took) = gave_and_took(&sim, p, j);
            assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
        }
        let mine = ownership_events(&sim, j);
        let owners = ownership_events(&sim, 0);
        assert_eq!(
            mine.iter().map(|c| c.fingerprint).collect::<Vec<_>>(),
            [owners.last().expect("an owner's event").fingerprint],
            "seed {seed}: the joiner's rings, against the owners' ring"
        );
    }
}

/// A node joins just as a member's new weight spreads: the owners' one rebuild takes both
/// changes, from their ring with the old weight; what each relinquishes to the joiner should
/// be what the joiner says it acquired from it. It is not: the joiner's `before` ring (the
/// older members, `rebuild_ring`) is built with the weights it knows now, not the ones the
/// owners' rings held. Every node ends on the same ring with one event each, but the joiner
/// says it acquired 6.0e17 hashes from the member tripled (n3), which relinquished 1.4e17 to
/// it, and less than they gave from each of the seven others (seed 1; totals agree). Found on
/// review of the hand-off; the heartbeat rule's known limit (design.md, section 6) does not
/// cover it. A fix needs the weights (or the ring) the older members held before this change,
/// which the joiner cannot read from the state it is sent: a member's weight key keeps only
/// its latest value.
#[test]
#[ignore = "a joiner's first ring names previous owners from the current weights: see the doc comment"]
fn a_node_joining_while_a_weight_changes_mirrors_what_the_owners_relinquished() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        sim.record_events(true);
        sim.with_node(3, |node, now| node.set_weight(now, 3.0))
            .expect("valid weight");
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(10));
        let name = sim.nodes[j].node.id().name.clone();
        for p in 0..n {
            let peer = sim.nodes[p].node.id().name.clone();
            let (gave, took) = gave_and_took(&sim, p, j);
            assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
        }
    }
}

/// A node joins just as a member leaves gracefully: the owners drop the leaver within a round,
/// then take the joiner in at the settle; what each relinquishes to the joiner is what the
/// joiner says it acquired from it.
#[test]
fn a_node_joining_as_a_member_leaves_mirrors_what_the_owners_relinquished() {
    for seed in seeds_from_env(2) {
        let n = 8;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        sim.record_events(true);
        sim.with_node(n - 1, |node, now| node.leave(now));
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(10));
        let name = sim.nodes[j].node.id().name.clone();
        let mine = ownership_events(&sim, j);
        assert!(
            mine.iter().any(|c| !c.handoff.acquired.is_empty()),
            "seed {seed}: the joiner acquired nothing"
        );
        for p in 0..n - 1 {
            let peer = sim.nodes[p].node.id().name.clone();
            let (gave, took) = gave_and_took(&sim, p, j);
            assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
        }
    }
}

/// A node joins just as a member restarts under its name (a new incarnation, quick enough that
/// no ring drops the name): the owners' rings hold the name throughout, and what each of them
/// relinquishes to the joiner is what the joiner says it acquired from it. The restarted member
/// gossips no ring fingerprints until its new process builds its first ring, so the holders
/// alone are not the owners' ring; the holders with it are, and what the name owned there the
/// new process never held: the joiner acquires that from nobody. Before 2026-12-07 (seventh
/// session) the joiner acquired everything from nobody (joining 2.5 s after the cluster formed:
/// the age guess counted no one) or split it by a ring without the restarted member (8 s after).
/// Found by the review of the gossiped fingerprints.
#[test]
fn a_node_joining_as_a_member_restarts_mirrors_what_the_owners_relinquished() {
    for seed in seeds_from_env(2) {
        for formed_ms in [2_500, 8_000] {
            let n = 6;
            let mut sim = Sim::new(seed, config(), NetConfig::default());
            sim.record_events(true);
            for _ in 0..n {
                sim.add_node();
            }
            sim.join_all_via(&[0]);
            sim.run_for(Duration::from_millis(formed_ms));
            sim.restart(3);
            let j = sim.add_node();
            sim.join(j, &[0]);
            sim.run_for(Duration::from_secs(15));
            let what = format!("seed {seed}, formed {formed_ms} ms");
            assert_owners_mirror_the_joiner(&sim, [0, 1, 2, 4, 5], j, &what);
        }
    }
}

/// A node joining a cluster larger than a settle's worth of gossip rounds reaches: its first
/// ring should hold every live member, so that it emits one ownership event, on the ring the
/// owners build. Members enter a ring only once heard beating (`Peer::heard_beating`), and
/// a joiner hears a member's fresh beats only as digests carrying them reach it.
#[test]
fn a_node_joining_a_large_cluster_builds_the_owners_ring_at_once() {
    for seed in seeds_from_env(2) {
        let n = 100;
        let mut sim = Sim::new(seed, Config::default(), NetConfig::default());
        for _ in 0..n {
            sim.add_node();
        }
        sim.join_all_via(&[0, 1]);
        sim.run_until(Duration::from_secs(60), |s| s.all_see_live(n))
            .unwrap_or_else(|_| panic!("seed {seed}: cluster of {n} did not form"));
        sim.run_for(Duration::from_secs(10));
        sim.record_events(true);
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(15));
        let mine = ownership_events(&sim, j);
        let owners = ownership_events(&sim, 0);
        assert_eq!(
            mine.iter()
                .map(|c| (c.fingerprint, c.members))
                .collect::<Vec<_>>(),
            [owners
                .last()
                .map(|c| (c.fingerprint, c.members))
                .expect("an owner's event")],
            "seed {seed}: the joiner's rings, against the owners' ring"
        );
    }
}

/// Bytes every running node has sent, the node restarted included (its old run counted in
/// `retired`).
fn bytes_sent(sim: &Sim, retired: u64) -> u64 {
    let s = sim.nodes.iter().map(|n| n.node.stats());
    retired
        + s.map(|s| s.tx_datagram_bytes + s.tx_frame_bytes)
            .sum::<u64>()
}

/// One restart changes every node's membership fingerprint. Digests to a peer go by position
/// only while the peer's last fingerprint is ours, so each pair went by tag (four times the
/// bytes a Syn) until one of the two happened to write to the other, about N / (2 × Syns a
/// round) rounds: at 100 nodes 4 MB more in the 12 s after, at 200 nodes 19 MB (found by
/// review). Now a peer that had our previous fingerprint is read as having followed once the
/// change has spread: 3 to 8 s after the restart the cluster sends what it sent before.
#[test]
fn a_restart_makes_no_lasting_burst_of_digests_by_tag() {
    for seed in seeds_from_env(2) {
        let n = 100;
        let mut sim = cluster(n, seed, NetConfig::default());
        sim.record_events(true);
        sim.run_for(Duration::from_secs(20));
        let before = bytes_sent(&sim, 0);
        sim.run_for(Duration::from_secs(5));
        let idle = bytes_sent(&sim, 0) - before;
        let v = n / 2;
        let s = sim.nodes[v].node.stats();
        let retired = s.tx_datagram_bytes + s.tx_frame_bytes;
        sim.restart(v);
        sim.run_for(Duration::from_secs(3));
        assert!(
            sim.all_see_live(n) && sim.all_see_status(v, MemberStatus::Alive),
            "seed {seed}: the restart is not seen everywhere in 3 s"
        );
        let from = bytes_sent(&sim, retired);
        sim.run_for(Duration::from_secs(5));
        let after = bytes_sent(&sim, retired) - from;
        assert!(
            after * 100 <= idle * 110,
            "seed {seed}: {after} bytes 3 to 8 s after a restart, {idle} in 5 idle s before"
        );
        let downs = sim.nodes.iter().flat_map(|n| &n.events);
        let downs = downs.filter(|(_, e)| matches!(e, Event::Down(_))).count();
        assert_eq!(downs, 0, "seed {seed}");
    }
}

/// With `ring_min_members` at 3 of 5, only the side of a split that holds 3 members owns
/// keys: the other side's rings empty (what it held it relinquishes to nobody), and after the
/// heal every ring is the whole cluster's again. At the default (no minimum) both sides own
/// every key, which is what the minimum is for.
#[test]
fn below_ring_min_members_a_side_of_a_split_owns_nothing() {
    for seed in seeds_from_env(3) {
        for min in [1, 3] {
            let n = 5;
            let mut c = config();
            c.ring_min_members = min;
            let mut sim = cluster_configured(n, seed, c, NetConfig::default());
            sim.record_events(true);
            // Past the first rings' longest wait (4 settles and the jitter).
            sim.run_for(Duration::from_secs(6));
            let members = |sim: &Sim| -> Vec<usize> {
                (0..n)
                    .map(|i| sim.nodes[i].node.ring().num_members())
                    .collect()
            };
            assert_eq!(members(&sim), vec![n; n], "seed {seed}, min {min}");
            let before = ownership_events(&sim, 0).len();
            sim.partition(&[0, 1], &[2, 3, 4]);
            // Detection (about a second at 100 ms) and the settles after it.
            sim.run_for(Duration::from_secs(15));
            let small = if min == 3 { 0 } else { 2 };
            assert_eq!(
                members(&sim),
                vec![small, small, 3, 3, 3],
                "seed {seed}, min {min}"
            );
            // Keys with an owner on each side of the split.
            let both = (0..1000u64)
                .filter(|k| {
                    let key = k.to_be_bytes();
                    sim.nodes[0].node.ring().owner(&key).is_some()
                        && sim.nodes[4].node.ring().owner(&key).is_some()
                })
                .count();
            assert_eq!(
                both,
                if min == 3 { 0 } else { 1000 },
                "seed {seed}, min {min}"
            );
            if min == 3 {
                // Node 0 gave up all it held, to nobody, and acquired nothing.
                let split = &ownership_events(&sim, 0)[before..];
                assert_eq!(split.len(), 1, "seed {seed}: {split:?}");
                let h = &split[0].handoff;
                assert!(h.acquired.is_empty(), "seed {seed}: {h:?}");
                assert_eq!(h.relinquished.len(), 1, "seed {seed}: {h:?}");
                assert_eq!(h.relinquished[0].peer, None, "seed {seed}");
                assert_eq!(split[0].members, 0, "seed {seed}");
            }
            let split_events: Vec<usize> =
                (0..n).map(|i| ownership_events(&sim, i).len()).collect();
            sim.heal();
            sim.run_until(Duration::from_secs(30), |s| s.all_see_live(n))
                .unwrap_or_else(|_| panic!("seed {seed}, min {min}: still split"));
            sim.run_for(Duration::from_secs(6));
            assert_eq!(members(&sim), vec![n; n], "seed {seed}, min {min}");
            let fp = sim.nodes[0].node.ring().fingerprint();
            assert!(
                (1..n).all(|i| sim.nodes[i].node.ring().fingerprint() == fp),
                "seed {seed}, min {min}: rings differ after the heal"
            );
            if min == 3 {
                // The small side's rings were empty: what each acquires at the heal it names
                // as coming from the big side's members, as they relinquish it (read from the
                // rings they gossip; before 2026-12-07, seventh session, from nobody).
                let since = |i: usize| ownership_events(&sim, i).split_off(split_events[i]);
                for j in [0, 1] {
                    let name = sim.nodes[j].node.id().name.clone();
                    let took = since(j);
                    assert!(
                        took.iter()
                            .flat_map(|c| &c.handoff.acquired)
                            .all(|t| t.peer.is_some()),
                        "seed {seed}: node {j} acquired from nobody at the heal"
                    );
                    for p in 2..n {
                        let peer = sim.nodes[p].node.id().name.clone();
                        let gave: Vec<_> = since(p)
                            .iter()
                            .filter_map(|c| c.handoff.relinquished_to(&name))
                            .flat_map(|t| t.ranges.iter().copied())
                            .collect();
                        let got: Vec<_> = took
                            .iter()
                            .filter_map(|c| c.handoff.acquired_from(&peer))
                            .flat_map(|t| t.ranges.iter().copied())
                            .collect();
                        assert!(
                            !got.is_empty(),
                            "seed {seed}: {name} took nothing from {peer}"
                        );
                        assert_eq!(merged(gave), merged(got), "seed {seed}: {peer} to {name}");
                    }
                }
            }
        }
    }
}

/// With `ring_min_members`, the last node to join stops hearing the others while they still
/// hear it (a one-way cut for 3 s): its ring empties (it relinquishes all to nobody) and the
/// others' rings never drop it. When it hears them again its ring is theirs, unchanged, and
/// nobody relinquishes anything to it, so it acquires from nobody. Found by review of the
/// gossiped ring fingerprints (2026-12-07): it read each peer's ring as "the one before
/// its current one", the ring before it first joined, and said it acquired its whole share
/// again from the peers, which gave nothing (4 of 4 pairs broken in seeds 1 to 5 of a
/// throwaway test; the build before acquired from nobody).
#[test]
fn a_node_that_stopped_hearing_its_peers_under_ring_min_members_acquires_from_nobody() {
    for seed in seeds_from_env(2) {
        let mut c = config();
        c.ring_min_members = 3;
        let mut sim = cluster_configured(4, seed, c, NetConfig::default());
        sim.record_events(true);
        sim.run_for(Duration::from_secs(8));
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(8));
        let marks: Vec<usize> = (0..=j).map(|i| ownership_events(&sim, i).len()).collect();
        for p in 0..j {
            sim.cut_one_way(p, j);
        }
        sim.run_for(Duration::from_secs(3));
        sim.heal();
        sim.run_for(Duration::from_secs(10));
        let fp = sim.nodes[0].node.ring().fingerprint();
        for i in 0..=j {
            assert_eq!(sim.nodes[i].node.ring().fingerprint(), fp, "seed {seed}");
            assert_eq!(sim.nodes[i].node.ring().num_members(), 5, "seed {seed}");
        }
        let mine = ownership_events(&sim, j).split_off(marks[j]);
        assert_eq!(
            mine.len(),
            2,
            "seed {seed}: emptied and filled again: {mine:?}"
        );
        assert_eq!(mine[0].members, 0, "seed {seed}");
        for (p, &mark) in marks.iter().enumerate().take(j) {
            assert_eq!(
                ownership_events(&sim, p).len(),
                mark,
                "seed {seed}: node {p}'s ring changed"
            );
            let (gave, took) = gave_and_took(&sim, p, j);
            assert_eq!(gave, took, "seed {seed}: node {p} to the cut node");
        }
        assert!(
            mine[1].handoff.acquired.iter().all(|t| t.peer.is_none()),
            "seed {seed}: {:?}",
            mine[1].handoff
        );
    }
}

/// Honest traffic is never limited once a cluster has formed: the anti-amplification rule
/// (an answer to a datagram from a source not known as its sender's is cut to three times
/// its size) bites only on a newcomer's first datagrams, before its state arrives. (Measured
/// when it came: 68 to 116 limited answers per formation of 30 nodes, nearly all on the two
/// seeds, none after; cold-start, churn, partition and update rounds over 8 seeds of 100
/// nodes as before, within a quarter round.)
#[test]
fn a_formed_cluster_limits_no_answer() {
    let n = 30;
    for seed in seeds_from_env(2) {
        let mut sim = cluster(n, seed, NetConfig::default());
        let limited = |sim: &Sim| -> u64 {
            (0..n)
                .map(|i| sim.nodes[i].node.stats().replies_limited)
                .sum()
        };
        let formed = limited(&sim);
        sim.run_for(Duration::from_secs(30));
        assert_eq!(limited(&sim), formed, "seed {seed}");
        assert!(sim.all_see_live(n), "seed {seed}");
    }
}

/// A member crashes as a node joins, with the default config's detection (about two seconds
/// at 200 ms gossip): the owners' rebuild for the joiner comes before they convict the crashed
/// member, so they take the joiner in with it (their rings go from the ring with the crashed
/// member to that ring with the joiner too), while the joiner, which never hears it beat,
/// builds its first ring without it. The joiner's `before` ring is then the owners' previous
/// ring, crashed member included, which each owner gossips as its previous or current ring,
/// and what each owner relinquishes to the joiner is what the joiner says it acquired from it.
/// Found by review of a6269d4, which made the try with the peers outside the new ring strict
/// (each owner's ring just before the joiner came in), so it no longer matched the owners that
/// had taken the joiner in, and the joiner fell back to the age guess, a ring without the
/// crashed member: every owner's mirror broke (15 of the 30 seeds from 1592590336, among them
/// 1592590337 and 1592590338 of the default four; 9a3f979, which tried that candidate at
/// either ring, mirrored in all 30).
#[test]
fn a_member_crashing_as_a_node_joins_mirrors_what_the_owners_relinquished() {
    for seed in seeds_from_env(4) {
        let n = 4;
        let mut sim = cluster_configured(n, seed, Config::default(), NetConfig::default());
        sim.run_for(Duration::from_secs(8));
        sim.record_events(true);
        sim.crash(n - 1);
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(15));
        let name = sim.nodes[j].node.id().name.clone();
        for p in 0..n - 1 {
            let peer = sim.nodes[p].node.id().name.clone();
            let (gave, took) = gave_and_took(&sim, p, j);
            assert_eq!(gave, took, "seed {seed}: {peer} to {name}");
        }
    }
}

/// A member restarts under its name (a new incarnation), quickly enough that no ring drops
/// the name: the owners' rings never change, so none of them relinquishes anything, and the
/// new process's first event says it acquired its whole share from nobody (its old process
/// held it and is gone). Restarted after the owners dropped it, it is a join like any other:
/// what each owner relinquishes to it is what it says it acquired from that owner. Before
/// 2026-12-07 (eighth session) the quick restart's first event named as previous owners the
/// members that would own its share in a ring without it, which relinquished nothing.
#[test]
fn a_member_restarting_quickly_acquires_its_share_from_nobody() {
    for seed in seeds_from_env(2) {
        for (r, down_first) in [(3, false), (5, false), (3, true), (5, true)] {
            let n = 6;
            let mut sim = Sim::new(seed, config(), NetConfig::default());
            sim.record_events(true);
            for _ in 0..n {
                sim.add_node();
            }
            // Five form the cluster, then the sixth joins: every owner's previous ring is
            // then the five's, not an empty one.
            for i in 0..n - 1 {
                sim.join(i, &[0]);
            }
            sim.run_for(Duration::from_secs(10));
            sim.join(n - 1, &[0]);
            sim.run_for(Duration::from_secs(10));
            if down_first {
                sim.crash(r);
                sim.run_for(Duration::from_secs(8));
            }
            let seen: Vec<usize> = (0..n).map(|i| ownership_events(&sim, i).len()).collect();
            sim.restart(r);
            sim.run_for(Duration::from_secs(10));
            let since = |i: usize| ownership_events(&sim, i).split_off(seen[i]);
            let mine = since(r);
            let name = sim.nodes[r].node.id().name.clone();
            let what = format!("seed {seed}, restarting n{r}, down first {down_first}");
            assert_eq!(mine.len(), 1, "{what}: the new process's events {mine:?}");
            let first = &mine[0];
            assert!(
                !first.handoff.acquired.is_empty(),
                "{what}: acquired nothing"
            );
            assert!(
                first.handoff.relinquished.is_empty(),
                "{what}: relinquished"
            );
            for p in (0..n).filter(|&p| p != r) {
                let peer = sim.nodes[p].node.id().name.clone();
                let theirs = since(p);
                assert_eq!(
                    theirs.last().map_or(first.fingerprint, |c| c.fingerprint),
                    first.fingerprint,
                    "{what}: {peer}'s ring"
                );
                let gave: Vec<_> = theirs
                    .iter()
                    .filter_map(|c| c.handoff.relinquished_to(&name))
                    .flat_map(|t| t.ranges.iter().copied())
                    .collect();
                let took: Vec<_> = first
                    .handoff
                    .acquired_from(&peer)
                    .map(|t| t.ranges.clone())
                    .unwrap_or_default();
                assert_eq!(gave, took, "{what}: {peer} to {name}");
                if !down_first {
                    assert!(theirs.is_empty(), "{what}: {peer}'s ring changed");
                }
            }
            if !down_first {
                assert!(
                    first.handoff.acquired.iter().all(|t| t.peer.is_none()),
                    "{what}: acquired from {:?}",
                    first.handoff.acquired
                );
            }
        }
    }
}

/// A node joins a formed cluster at five times the others' gossip interval and a longer
/// `ring_settle` (a rolling change of both, say), so its first ring comes seconds after the
/// owners took it into theirs: counted in the owners' beats, their rings are older than the
/// joiner has been beating, as after a quick restart. The joiner's first event names them,
/// mirroring what they relinquished to it; a member then restarted at the joiner's interval
/// is still a quick restart. Before 2026-12-08 the joiner was told it acquired its share from
/// nobody (every seed; design.md 6 had it as a known limit it had not produced): the restart
/// rule compared ages in two nodes' beats, and now also asks that each peer took its ring
/// before the joiner first heard of it, in that peer's own beats
/// (`Node::held_since_before_start`).
#[test]
fn a_slower_joiner_whose_first_ring_comes_late_acquires_from_the_owners() {
    for seed in seeds_from_env(2) {
        let n = 5;
        let mut sim = formed_recording_events(n, seed);
        let mut slow = config();
        slow.gossip_interval = Duration::from_millis(500);
        slow.ring_settle = Duration::from_secs(3);
        sim.set_config(slow);
        let j = sim.add_node();
        sim.join(j, &[0]);
        sim.run_for(Duration::from_secs(10));
        let mine = ownership_events(&sim, j);
        assert_eq!(mine.len(), 1, "seed {seed}: the joiner's events {mine:?}");
        assert_owners_mirror_the_joiner(&sim, 0..n, j, &format!("seed {seed}"));

        // A member restarted at the joiner's interval: the rings all held its name well
        // before, so nobody relinquishes anything and it acquires its share from nobody.
        let r = 2;
        let seen: Vec<usize> = (0..=n).map(|i| ownership_events(&sim, i).len()).collect();
        sim.restart(r);
        sim.run_for(Duration::from_secs(10));
        let since = |i: usize| ownership_events(&sim, i).split_off(seen[i]);
        let first = since(r);
        assert_eq!(
            first.len(),
            1,
            "seed {seed}: the restart's events {first:?}"
        );
        assert!(
            !first[0].handoff.acquired.is_empty()
                && first[0].handoff.acquired.iter().all(|t| t.peer.is_none()),
            "seed {seed}: the restart acquired {:?}",
            first[0].handoff.acquired
        );
        for p in (0..=n).filter(|&p| p != r) {
            assert!(since(p).is_empty(), "seed {seed}: n{p}'s ring changed");
        }
    }
}

/// A joiner crashes after its peers took it into their rings (each relinquished its part of
/// the joiner's share to it) but before its own first ring, and restarts under its name a
/// moment later, before any ring dropped it: the peers' rings held the name since before the
/// new process started, as after a quick restart, but no process of the name ever took what
/// they relinquished, so the new process's first event names them, mirroring it. Found on
/// review of the quick-restart rule (2026-12-07): it took every such restart for one of a
/// process that held its share, and said the share came from nobody; it now takes that only
/// when the previous process gossiped the ring it took (`Node::held_since_before_start`).
#[test]
fn a_joiner_restarting_before_its_first_ring_acquires_from_those_that_relinquished_to_it() {
    joiner_restarting_before_its_first_ring(false);
}

/// The same with a restart that reused its generation (same identity, so gossip brings the
/// previous run as peers' copies of this very node, not as an older incarnation, and its
/// ring key is never checked): such a restart counts its age with its rebase's lead, so it
/// is taken for a join. Found on the second review of the quick-restart rule: counting the
/// age without the lead (96ca849, reverted) made this joiner say it acquired its share from
/// nobody, though the previous run never took what the peers relinquished to it.
#[test]
fn a_joiner_restarting_with_its_generation_before_its_first_ring_acquires_from_the_peers() {
    joiner_restarting_before_its_first_ring(true);
}

fn joiner_restarting_before_its_first_ring(reuse: bool) {
    let mut exercised = 0;
    for seed in seeds_from_env(2) {
        let n = 5;
        let mut sim = Sim::new(seed, config(), NetConfig::default());
        sim.record_events(true);
        for i in 0..n - 1 {
            sim.add_node();
            sim.join(i, &[0]);
        }
        sim.run_for(Duration::from_secs(10));
        let j = sim.add_node();
        sim.join(j, &[0]);
        let name = sim.nodes[j].node.id().name.clone();
        let gave_to = |sim: &Sim, p: usize| -> Vec<_> {
            ownership_events(sim, p)
                .iter()
                .filter_map(|c| c.handoff.relinquished_to(&name))
                .flat_map(|t| t.ranges.iter().copied())
                .collect()
        };
        let what = format!("seed {seed}");
        // Crashed as soon as a peer has relinquished to it; the others take it in before
        // they notice, and before the new process starts.
        sim.run_until(Duration::from_secs(5), |s| {
            (0..n - 1).any(|p| !gave_to(s, p).is_empty())
        })
        .unwrap_or_else(|_| panic!("{what}: the peers never took the joiner in"));
        if !ownership_events(&sim, j).is_empty() {
            // Its first ring came first (the rings' jitter): not the case under test.
            continue;
        }
        exercised += 1;
        sim.crash(j);
        sim.run_for(Duration::from_millis(1500));
        for p in 0..n - 1 {
            assert!(
                !gave_to(&sim, p).is_empty(),
                "{what}: n{p} relinquished nothing"
            );
        }
        if reuse {
            sim.restart_reusing_generation(j);
        } else {
            sim.restart(j);
        }
        sim.run_for(Duration::from_secs(10));
        let mine = ownership_events(&sim, j);
        assert_eq!(mine.len(), 1, "{what}: the new process's events {mine:?}");
        for p in 0..n - 1 {
            let peer = sim.nodes[p].node.id().name.clone();
            let took: Vec<_> = mine[0]
                .handoff
                .acquired_from(&peer)
                .map(|t| t.ranges.clone())
                .unwrap_or_default();
            assert_eq!(gave_to(&sim, p), took, "{what}: {peer} to {name}");
        }
    }
    assert!(
        exercised > 0,
        "no seed crashed the joiner before its first ring"
    );
}
