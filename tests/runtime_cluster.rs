//! Real nodes on 127.0.0.1 (ports chosen by the OS): forming a cluster, spreading state,
//! detecting a killed node, graceful leave, restart, state over TCP, subscriptions.

mod runtime_common;

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runtime_common::{
    INTERVAL, cluster, cluster_with, config, init_tracing, is_upsert, wait_event, wait_membership,
    wait_stats, wait_status,
};
use tidings::ring::{Ring, RingConfig};
use tidings::runtime::{self, EventFilter, Lagged};
use tidings::{Error, Event, MemberStatus};

const SECS_5: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_form_a_cluster_and_share_state() {
    init_tracing();
    let nodes = cluster("c", 20).await;
    let mut subs: Vec<_> = nodes
        .iter()
        .map(|h| h.subscribe_with(EventFilter::key_prefix("svc/")))
        .collect();
    for h in &nodes {
        h.set("svc/addr", h.id().addr.to_string()).await.unwrap();
    }
    for (h, sub) in nodes.iter().zip(&mut subs) {
        let mut seen = BTreeSet::new();
        while seen.len() < nodes.len() {
            let e = wait_event(sub, SECS_5, |e| matches!(e, Event::KeyUpserted { .. })).await;
            seen.insert(e.node().unwrap().name.clone());
        }
        // The local view answers reads.
        let other = &nodes[(nodes.len() - 1) / 2];
        let v = h.get(&other.id().name, "svc/addr").await.unwrap();
        assert_eq!(v, other.id().addr.to_string().as_bytes());
    }
    let m = nodes[7].membership();
    assert_eq!(m.num_live(), 20);
    assert_eq!(m.ready().count(), 20);
    for h in nodes {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_marked_down_everywhere() {
    init_tracing();
    let nodes = cluster("k", 4).await;
    let mut sub = nodes[0].subscribe_with(EventFilter::membership());
    nodes[3].kill().await;
    assert!(!nodes[3].is_running());
    for h in &nodes[..3] {
        wait_status(h, "k-3", MemberStatus::Down, SECS_5).await;
    }
    // A kill announces nothing: the first news of k-3 is that it went down, not that it left.
    let e = wait_event(&mut sub, SECS_5, |e| {
        e.node().is_some_and(|n| n.name == "k-3")
    })
    .await;
    assert!(matches!(e, Event::Down(_)), "got {e:?}");
    assert!(matches!(nodes[3].set("x", "y").await, Err(Error::Left)));
    for h in &nodes[..3] {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_as_left() {
    init_tracing();
    let nodes = cluster("l", 4).await;
    let mut sub = nodes[0].subscribe_with(EventFilter::membership());
    let outcome = nodes[2].leave().await.unwrap();
    assert!(outcome.confirmed >= 1, "{outcome:?}");
    within(SECS_5, nodes[2].stopped(), "stopped after leaving").await;
    for h in [&nodes[0], &nodes[1], &nodes[3]] {
        wait_status(h, "l-2", MemberStatus::Left, SECS_5).await;
    }
    let e = wait_event(&mut sub, SECS_5, |e| {
        e.node().is_some_and(|n| n.name == "l-2")
    })
    .await;
    assert!(matches!(e, Event::Left(_)), "got {e:?}");
    // Leaving again reports the same outcome; writes are refused.
    assert_eq!(nodes[2].leave().await.unwrap(), outcome);
    assert!(matches!(nodes[2].set("x", "y").await, Err(Error::Left)));
    for h in nodes {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_a_new_generation() {
    init_tracing();
    let nodes = cluster("r", 3).await;
    let old = nodes[2].id().clone();
    let mut sub = nodes[0].subscribe_with(EventFilter::membership());
    nodes[2].kill().await;
    let mut c = config("r-2", &[nodes[0].id().addr]);
    c.generation = Some(old.generation.0 + 1);
    let restarted = runtime::start(c).await.unwrap();
    let e = wait_event(
        &mut sub,
        SECS_5,
        |e| matches!(e, Event::Joined(n) if n.name == "r-2"),
    )
    .await;
    assert_eq!(e.node().unwrap().generation.0, old.generation.0 + 1);
    for h in [&nodes[0], &nodes[1]] {
        let m = wait_membership(h, SECS_5, |m| {
            m.member("r-2").is_some_and(|x| {
                x.id.generation > old.generation && x.status == MemberStatus::Alive
            })
        })
        .await;
        assert_eq!(m.members.iter().filter(|x| x.id.name == "r-2").count(), 1);
    }
    wait_membership(&restarted, SECS_5, |m| m.num_live() == 3).await;
    for h in [&nodes[0], &nodes[1], &restarted] {
        h.kill().await;
    }
}

/// A second process started under a running node's name, with a higher generation, replaces
/// it: the old one learns so, reports it and stops, and the cluster keeps the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaced_under_its_name_stands_down_and_stops() {
    init_tracing();
    let nodes = cluster("s", 3).await;
    let old = nodes[2].id().clone();
    let mut sub = nodes[2].subscribe_with(EventFilter::membership());
    let mut c = config("s-2", &[nodes[0].id().addr]);
    c.generation = Some(old.generation.0 + 1);
    // Before: the old process owns a share of the keys, once its ring holds all three.
    wait_membership(&nodes[2], SECS_5, |m| m.ring.num_members() == 3).await;
    let keys: Vec<[u8; 4]> = (0..300u32).map(u32::to_le_bytes).collect();
    assert!(keys.iter().any(|k| nodes[2].is_local_owner(k)));
    let newer = runtime::start(c).await.unwrap();
    let e = wait_event(&mut sub, SECS_5, |e| matches!(e, Event::Superseded(_))).await;
    assert_eq!(e.node(), Some(newer.id()));
    // After: it owns nothing, though its last ring still names "s-2" (now the newer one's).
    wait_membership(&nodes[2], SECS_5, |m| m.superseded_by.is_some()).await;
    assert_eq!(
        nodes[2].membership().superseded_by.as_ref(),
        Some(newer.id())
    );
    assert!(nodes[2].membership().ring.contains("s-2"));
    assert!(keys.iter().all(|k| !nodes[2].is_local_owner(k)));
    tokio::time::timeout(SECS_5, nodes[2].stopped())
        .await
        .expect("the replaced node stops");
    assert!(!nodes[2].is_running());
    assert_eq!(nodes[2].stats().await.core.superseded, 1);
    for h in [&nodes[0], &nodes[1], &newer] {
        wait_membership(h, SECS_5, |m| {
            m.num_live() == 3
                && m.member("s-2").is_some_and(|x| {
                    x.id.generation == newer.id().generation && x.status == MemberStatus::Alive
                })
        })
        .await;
    }
    for h in [&nodes[0], &nodes[1], &newer] {
        h.kill().await;
    }
}

/// A keyed node restarted under the same name, generation and seed (a misuse, but one a
/// fixed `generation` in a deployment makes easy) seals with a salt from the operating system,
/// so its packets are new: before, it repeated its previous process's nonces (a nonce reuse
/// under the key) and its peer dropped its join as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_node_restarted_as_the_same_incarnation_seals_with_new_nonces() {
    init_tracing();
    let keyed = |c: &mut runtime::RuntimeConfig| {
        c.protocol.keyring = Some(tidings::Keyring::new([21; 32]));
        c.generation = Some(7);
        c.rng_seed = Some(99);
    };
    let nodes = cluster_with("r", 2, keyed).await;
    let seed = nodes[0].id().addr;
    nodes[1].kill().await;
    let replayed = nodes[0].stats().await.core.rx_replayed;
    let mut c = config("r-1", &[seed]);
    keyed(&mut c);
    let again = runtime::start(c).await.unwrap();
    assert_eq!(again.id().generation.0, 7);
    // It hears from r-0: r-0 accepted its join and answered.
    wait_membership(&again, SECS_5, |m| {
        m.status("r-0") == Some(MemberStatus::Alive)
    })
    .await;
    assert_eq!(nodes[0].stats().await.core.rx_replayed, replayed);
    again.kill().await;
    nodes[0].kill().await;
}

/// A plain subscription gets the events of what happens after it was made, never those of a
/// command whose reply came before it (it got them when it arrived while that command's
/// events were being delivered: 950 of 2,000 tries, before 2026-12-04).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gets_nothing_from_before_it_was_made() {
    init_tracing();
    let nodes = cluster("b", 1).await;
    let h = &nodes[0];
    for i in 0..300 {
        h.set("k", format!("before-{i}")).await.unwrap();
        let mut sub = h.subscribe_with(EventFilter::key_prefix("k"));
        h.set("k", format!("after-{i}")).await.unwrap();
        let e = wait_event(&mut sub, SECS_5, |e| e.key() == Some("k")).await;
        let Event::KeyUpserted { value, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(value.as_ref(), format!("after-{i}").as_bytes(), "try {i}");
    }
    h.kill().await;
}

/// A subscription that asks for the current state, made just before a leave, ends with
/// `LeaveCompleted`. (The race a review found, a replayed subscription taken in with the
/// leave's own batch losing that batch's `LeaveCompleted`, 4 of 50 tries before 2026-12-04,
/// is not reproduced deterministically here: the driver usually takes the subscription in
/// before the leave arrives. This checks the path around it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_subscription_still_hears_the_leave_complete() {
    init_tracing();
    for i in 0..10 {
        let h = runtime::start(config(&format!("lv-{i}"), &[]))
            .await
            .unwrap();
        let mut sub = h.subscribe_with(EventFilter::all().with_current_state());
        h.leave().await.unwrap();
        let mut events = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(SECS_5, sub.recv()).await {
            events.push(e.unwrap());
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::LeaveCompleted { .. })),
            "try {i}: {events:?}"
        );
    }
}

/// Right after `start`, before the driver task ever ran (a current-thread runtime), the
/// membership snapshot already holds this node.
#[tokio::test]
async fn the_membership_holds_this_node_right_after_start() {
    let h = runtime::start(config("early", &[])).await.unwrap();
    let m = h.membership();
    assert_eq!(
        m.member("early").map(|x| x.status),
        Some(MemberStatus::Alive)
    );
    assert_eq!(m.num_live(), 1);
    h.kill().await;
}

/// `shutdown` and `kill` return once the sockets are closed: the address can be bound again
/// at once (by a restart, say), even when the node held a large state that takes a while to
/// free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_address_can_be_bound_again_at_once() {
    for round in 0..6 {
        let h = runtime::start(config(&format!("rb{round}"), &[]))
            .await
            .unwrap();
        for k in 0..5_000 {
            h.set(format!("key-{k:05}"), vec![7u8; 16]).await.unwrap();
        }
        let addr = h.local_addr();
        if round % 2 == 0 {
            h.shutdown().await;
        } else {
            h.kill().await;
        }
        std::net::UdpSocket::bind(addr).expect("the UDP address is free");
        std::net::TcpListener::bind(addr).expect("the TCP address is free");
    }
}

/// A leave cut short by a kill answers its caller, and every later call the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_cut_short_by_a_kill_answers_every_call_alike() {
    let nodes = cluster("lk", 2).await;
    nodes[1].kill().await;
    // n0 now waits for a confirmation that cannot come (its peer is gone, not yet down).
    let leaving = {
        let h = nodes[0].clone();
        tokio::spawn(async move { h.leave().await })
    };
    tokio::task::yield_now().await;
    nodes[0].kill().await;
    let first = within(SECS_5, leaving, "the leave cut short by kill")
        .await
        .unwrap();
    let again = within(SECS_5, nodes[0].leave(), "a leave after kill").await;
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_larger_than_a_datagram_arrives_over_tcp() {
    init_tracing();
    let nodes = cluster("t", 3).await;
    let mut subs: Vec<_> = nodes[1..].iter().map(|h| h.subscribe()).collect();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    nodes[0].set("blob", big.clone()).await.unwrap();
    for sub in &mut subs {
        let e = wait_event(sub, SECS_5, |e| is_upsert(e, "t-0", "blob")).await;
        let Event::KeyUpserted { value, .. } = e else {
            unreachable!()
        };
        assert_eq!(value.as_ref(), &big[..]);
    }
    let s0 = nodes[0].stats().await;
    assert!(s0.core.tx_frames > 0, "{s0:?}");
    assert!(s0.core.max_datagram <= 1400, "{s0:?}");
    let mut tcp_in = 0;
    for h in &nodes {
        tcp_in += h.stats().await.tcp_connections_in;
    }
    assert!(tcp_in > 0);
    for h in nodes {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_sees_the_keys_it_asked_for_from_the_next_command_on() {
    init_tracing();
    let nodes = cluster("f", 2).await;
    // With no subscriber the core emits no key events; each subscription widens them before
    // the node handles anything else, so a write right after subscribing is seen.
    nodes[0].set("svc/before", "0").await.unwrap();
    let mut svc = nodes[1].subscribe_with(EventFilter::key_prefix("svc/"));
    nodes[0].set("svc/x", "1").await.unwrap();
    let e = wait_event(&mut svc, SECS_5, |e| e.key() == Some("svc/x")).await;
    assert!(is_upsert(&e, "f-0", "svc/x"));
    let mut local = nodes[0].subscribe_with(EventFilter::key_prefix("cfg/"));
    nodes[0].set("cfg/y", "2").await.unwrap();
    let e = local.recv().await.unwrap().unwrap();
    assert!(is_upsert(&e, "f-0", "cfg/y"));
    // A key nobody subscribed to is applied all the same: versions apply in order, so once
    // the later "svc/z" is seen, "other" is held.
    nodes[0].set("other", "3").await.unwrap();
    nodes[0].set("svc/z", "4").await.unwrap();
    wait_event(&mut svc, SECS_5, |e| e.key() == Some("svc/z")).await;
    assert_eq!(
        nodes[1].get("f-0", "other").await.as_deref(),
        Some(&b"3"[..])
    );
    for h in nodes {
        h.kill().await;
    }
}

/// `Handle::values` gives every live member's value of a key, sorted by name, once gossip
/// brought it; a member without the key is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_list_every_members_value_of_a_key() {
    init_tracing();
    let nodes = cluster("v", 3).await;
    let mut seen = nodes[1].subscribe_with(EventFilter::key_prefix("http"));
    nodes[2].set("http", "addr-2").await.unwrap();
    nodes[0].set("http", "addr-0").await.unwrap();
    nodes[1].set("other", "x").await.unwrap();
    for _ in 0..2 {
        wait_event(&mut seen, SECS_5, |e| e.key() == Some("http")).await;
    }
    let got: Vec<(String, Bytes)> = nodes[1]
        .values("http")
        .await
        .into_iter()
        .map(|(id, v)| (id.name, v))
        .collect();
    let want = vec![
        ("v-0".to_owned(), Bytes::from("addr-0")),
        ("v-2".to_owned(), Bytes::from("addr-2")),
    ];
    assert_eq!(got, want);
    for h in &nodes {
        h.kill().await;
    }
    assert!(nodes[1].values("http").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_told_it_lagged() {
    init_tracing();
    let mut c = config("s-0", &[]);
    c.subscriber_buffer = 4;
    let h = runtime::start(c).await.unwrap();
    let mut idle = h.subscribe_with(EventFilter::key_prefix("k"));
    let mut other = h.subscribe_with(EventFilter::key_prefix("other/"));
    for i in 0..20 {
        h.set(format!("k{i}"), "v").await.unwrap();
    }
    // The stuck subscriber did not stop the node.
    h.set("other/x", "1").await.unwrap();
    assert!(is_upsert(
        &other.recv().await.unwrap().unwrap(),
        "s-0",
        "other/x"
    ));
    for i in 0..4 {
        let e = idle.recv().await.unwrap().unwrap();
        assert_eq!(e.key(), Some(format!("k{i}").as_str()));
    }
    assert_eq!(idle.recv().await.unwrap(), Err(Lagged(16)));
    h.set("k-after", "v").await.unwrap();
    assert_eq!(idle.recv().await.unwrap().unwrap().key(), Some("k-after"));
    assert_eq!(h.stats().await.subscriber_lagged, 16);
    h.shutdown().await;
    // Subscriptions end with the node.
    assert!(idle.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_leaves_and_stops() {
    init_tracing();
    let mut nodes = cluster("d", 3).await;
    let dropped = nodes.pop().unwrap();
    let mut events = dropped.subscribe();
    let clone = dropped.clone();
    drop(dropped);
    drop(clone);
    for h in &nodes {
        wait_status(h, "d-2", MemberStatus::Left, SECS_5).await;
    }
    // Its subscription ends once every task of the node has stopped.
    let ended =
        tokio::time::timeout(SECS_5, async { while events.recv().await.is_some() {} }).await;
    assert!(ended.is_ok());
    for h in nodes {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_delete_and_readiness_spread() {
    init_tracing();
    let nodes = cluster("e", 3).await;
    let mut sub = nodes[2].subscribe();
    nodes[0]
        .set_with_ttl("lease", "x", INTERVAL * 3)
        .await
        .unwrap();
    nodes[0].set("gone", "x").await.unwrap();
    nodes[0].delete("gone").await.unwrap();
    nodes[1].mark_ready(false).await.unwrap();
    wait_event(
        &mut sub,
        SECS_5,
        |e| matches!(e, Event::KeyDeleted { node, key } if node.name == "e-0" && key == "lease"),
    )
    .await;
    wait_membership(&nodes[2], SECS_5, |m| {
        m.ready().count() == 2 && m.member("e-1").is_some_and(|x| !x.ready)
    })
    .await;
    assert!(nodes[2].get("e-0", "gone").await.is_none());
    assert!(nodes[2].node_state("e-0").await.is_some());
    for h in nodes {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_nodes_form_a_cluster() {
    init_tracing();
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let mut a = config("v6-a", &[]);
    a.bind = "[::1]:0".parse().unwrap();
    let a = runtime::start(a).await.unwrap();
    let mut b = config("v6-b", &[a.id().addr]);
    b.bind = "[::1]:0".parse().unwrap();
    let b = runtime::start(b).await.unwrap();
    for h in [&a, &b] {
        wait_membership(h, SECS_5, |m| m.num_live() == 2).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_agree_and_move_when_an_owner_dies() {
    init_tracing();
    let nodes = cluster("o", 4).await;
    let agreed = |n: usize| move |m: &Arc<runtime::Membership>| m.ring.num_members() == n;
    for h in &nodes {
        wait_membership(h, SECS_5, agreed(4)).await;
    }
    let fp = nodes[0].membership().ring.fingerprint();
    let owner = nodes[0].owner("user/42").unwrap();
    for h in &nodes {
        assert_eq!(h.membership().ring.fingerprint(), fp);
        assert_eq!(h.owner("user/42").as_deref(), Some(owner.as_str()));
        assert_eq!(h.owners("user/42", 2).len(), 2);
    }
    let victim = nodes.iter().find(|h| h.id().name == owner).unwrap();
    let mut sub = nodes
        .iter()
        .find(|h| h.id().name != owner)
        .unwrap()
        .subscribe_with(EventFilter::membership());
    victim.kill().await;
    let survivors: Vec<_> = nodes.iter().filter(|h| h.id().name != owner).collect();
    for h in &survivors {
        wait_membership(h, SECS_5, agreed(3)).await;
    }
    let new_owner = survivors[0].owner("user/42").unwrap();
    assert_ne!(new_owner, owner);
    let fp = survivors[0].membership().ring.fingerprint();
    for h in &survivors {
        assert_eq!(h.owner("user/42").as_deref(), Some(new_owner.as_str()));
        assert_eq!(h.membership().ring.fingerprint(), fp, "{}", h.id().name);
    }
    wait_event(&mut sub, SECS_5, |e| matches!(e, Event::Ownership(_))).await;
    for h in survivors {
        h.kill().await;
    }
}

/// A change that leaves a node's ownership as it was brings it no `Ownership` event, but its
/// membership snapshot must still carry the new ring, or `owner` there would keep naming a
/// dead member while the other nodes name its successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_snapshot_follows_a_ring_change_that_moves_nothing_to_it() {
    init_tracing();
    // One vnode a member and no load bound: a member's partitions pass to the next member on
    // the ring, and the others' hand-off is empty.
    let mut ring = RingConfig::default();
    ring.vnodes = NonZeroU32::MIN;
    ring.partition_bits = 4;
    ring.bounded_load = None;
    let n = 5;
    let names: Vec<String> = (0..n).map(|i| format!("q-{i}")).collect();
    let full = Ring::new(ring.clone(), names.iter().map(|s| s.as_str())).unwrap();
    let without = |v: &str| {
        Ring::new(
            ring.clone(),
            names.iter().filter(|s| *s != v).map(|s| s.as_str()),
        )
        .unwrap()
    };
    // A victim some survivor gains nothing from (the test is about that survivor).
    let victim = names
        .iter()
        .find(|v| {
            let after = without(v);
            names
                .iter()
                .any(|s| s != *v && Ring::handoff(&full, &after, s).is_empty())
        })
        .expect("some change leaves some survivor's ownership unchanged")
        .clone();
    let expected = without(&victim).fingerprint();

    let config = ring.clone();
    let nodes = cluster_with("q", n, move |c| c.protocol.ring = Some(config.clone())).await;
    for h in &nodes {
        wait_membership(h, SECS_5, |m| m.ring.num_members() == n).await;
        assert_eq!(h.membership().ring.fingerprint(), full.fingerprint());
    }
    let (dead, survivors): (Vec<_>, Vec<_>) = nodes.iter().partition(|h| h.id().name == victim);
    let mut before = Vec::new();
    for h in &survivors {
        before.push(h.stats().await);
    }
    dead[0].kill().await;
    for h in &survivors {
        let m = wait_membership(h, SECS_5, |m| !m.ring.contains(&victim)).await;
        assert_eq!(m.ring.fingerprint(), expected, "{}", h.id().name);
    }
    // Every survivor counts the rebuild; only those whose ownership moved got an event.
    let after_kill = without(&victim);
    for (h, b) in survivors.iter().zip(&before) {
        let s = h.stats().await;
        let name = &h.id().name;
        assert!(s.ring_rebuilds > b.ring_rebuilds, "{name}");
        let moved = !Ring::handoff(&full, &after_kill, name).is_empty();
        assert_eq!(s.ownership_changes > b.ownership_changes, moved, "{name}");
    }
    for key in ["a", "user/42", "k:7"] {
        let owner = survivors[0].owner(key);
        assert_ne!(owner.as_deref(), Some(victim.as_str()));
        for h in &survivors {
            assert_eq!(h.owner(key), owner, "{key} at {}", h.id().name);
        }
    }
    for h in survivors {
        h.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_with_current_state_sees_the_whole_cluster_then_changes() {
    init_tracing();
    let nodes = cluster("r", 4).await;
    nodes[1].set("svc/a", "1").await.unwrap();
    nodes[2].set("svc/b", "2").await.unwrap();
    nodes[2].set("other", "x").await.unwrap();
    nodes[3].mark_ready(false).await.unwrap();
    for h in &nodes {
        wait_membership(h, SECS_5, |m| m.ready().count() == 3).await;
        for (node, key) in [("r-1", "svc/a"), ("r-2", "svc/b")] {
            let found = tokio::time::timeout(SECS_5, async {
                while h.get(node, key).await.is_none() {
                    tokio::time::sleep(INTERVAL).await;
                }
            })
            .await;
            assert!(found.is_ok(), "{} never got {node}/{key}", h.id());
        }
    }
    // Subscribed long after everything happened: the replay alone describes the cluster.
    let filter = EventFilter::membership()
        .with_key_prefix("svc/")
        .with_current_state();
    let mut sub = nodes[0].subscribe_with(filter);
    let mut joined = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    let mut keys = BTreeSet::new();
    while joined.len() < 3 || keys.len() < 2 || not_ready.is_empty() {
        let ev = tokio::time::timeout(SECS_5, sub.recv())
            .await
            .expect("replay incomplete")
            .expect("node stopped")
            .expect("lagged");
        match ev {
            Event::Joined(id) => assert!(joined.insert(id.name), "joined twice"),
            Event::ReadyChanged { node, ready: false } => {
                not_ready.insert(node.name);
            }
            Event::KeyUpserted { node, key, .. } => {
                assert!(key.starts_with("svc/"), "the filter applies to the replay");
                assert!(keys.insert((node.name, key)), "key replayed twice");
            }
            _ => {}
        }
    }
    assert_eq!(
        joined,
        BTreeSet::from(["r-1".into(), "r-2".into(), "r-3".into()])
    );
    assert_eq!(not_ready, BTreeSet::from(["r-3".to_string()]));
    // Then changes, not a second copy of the state.
    nodes[1].set("svc/a", "changed").await.unwrap();
    let ev = wait_event(&mut sub, SECS_5, |e| matches!(e, Event::KeyUpserted { .. })).await;
    match ev {
        Event::KeyUpserted { node, key, value } => {
            assert_eq!((node.name.as_str(), key.as_str()), ("r-1", "svc/a"));
            assert_eq!(&value[..], b"changed");
        }
        other => panic!("unexpected {other:?}"),
    }
    for h in nodes {
        h.shutdown().await;
    }
}

/// Calls and subscriptions made while a node stops all return, whether they reach the driver
/// before it stops, while it is being dropped, or after. Losing a call makes a caller hang,
/// which the time limit (a hang detector, not a timing goal) turns into a failure. The
/// narrowest race, a command queued after the dropped driver drained its channel (CI once hung
/// on it, about 1 run in 90 of the leave test), is too rare to hit here on purpose; the unit
/// test in `runtime::handle` builds that state directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_a_stop_all_return() {
    init_tracing();
    for round in 0..30 {
        let h = runtime::start(config(&format!("s-{round}"), &[]))
            .await
            .unwrap();
        let mut callers = tokio::task::JoinSet::new();
        for i in 0..3 {
            let h = h.clone();
            callers.spawn(async move {
                let mut k = 0u64;
                while h.set(format!("k{i}-{k}"), "v").await.is_ok() {
                    k += 1;
                }
                // Reads of a stopped node answer too (nothing, as it holds no view).
                assert_eq!(h.get(&h.id().name, "k0-0").await, None);
            });
        }
        let h2 = h.clone();
        callers.spawn(async move {
            // Subscribe until the node has stopped; the last subscription must end.
            let mut sub = h2.subscribe();
            while h2.is_running() {
                sub = h2.subscribe();
                tokio::task::yield_now().await;
            }
            while sub.recv().await.is_some() {}
        });
        let h3 = h.clone();
        callers.spawn(async move {
            let _ = h3.leave().await;
        });
        // What the leave test does: the moment the node says it stopped, call it again.
        let h4 = h.clone();
        callers.spawn(async move {
            h4.stopped().await;
            assert!(matches!(h4.set("late", "v").await, Err(Error::Left)));
            assert!(h4.leave().await.is_ok());
        });
        h.leave().await.unwrap();
        // A caller's failed assertion is a panic in its task: raise it here.
        let all = async {
            while let Some(done) = callers.join_next().await {
                if let Err(e) = done {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("a call made while the node stopped never returned");
        within(SECS_5, h.stopped(), "stopped").await;
    }
}

/// Waits for `f`, failing the test with `what` if it takes longer than `limit` (a hang
/// detector, not a timing goal: a hang would otherwise run into CI's limit unnamed).
async fn within<T>(limit: Duration, f: impl Future<Output = T>, what: &str) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

/// A write's answer comes once its snapshot is published: `membership()` right after
/// `mark_ready` shows it, and a subscription made next starts after its event (found by
/// review: the answer came first, so about one read in ten saw the old readiness, and the
/// subscription made next never got the change either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_read_after_a_write_shows_it() {
    let h = runtime::start(config("solo", &[])).await.unwrap();
    let me = h.id().name.clone();
    for i in 0..2_000 {
        let want = i % 2 == 0;
        h.mark_ready(want).await.unwrap();
        let m = h.membership();
        assert_eq!(
            m.member(&me).map(|s| s.ready),
            Some(want),
            "round {i}: the snapshot after the answer"
        );
    }
    h.kill().await;
}

/// Encryption turned on in a running plaintext cluster through the handle, in the three
/// steps of design.md section 8, then the key rotated: every step keeps every member live,
/// writes keep spreading, and at the end a plaintext node is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_turns_on_and_rotates_in_a_running_cluster() {
    init_tracing();
    let nodes = cluster("kr", 3).await;
    let old = tidings::Keyring::new([5; 32]);
    // Rotation: the new key added everywhere, then primary everywhere, then the old removed.
    let added = old.clone().with_key([6; 32]);
    let primary = added.clone().with_primary([6; 32]);
    let new = primary.clone().without_key(&[5; 32]).unwrap();
    // Sending plaintext while refusing it is refused, and changes nothing.
    let refused = nodes[0].set_keyring(Some(old.clone()), true, false).await;
    assert!(
        matches!(
            refused,
            Err(Error::Config(
                tidings::ConfigError::PlaintextSentNotAccepted
            ))
        ),
        "{refused:?}"
    );
    let steps = [
        (Some(old.clone()), true, true),
        (Some(old.clone()), false, true),
        (Some(old), false, false),
        (Some(added), false, false),
        (Some(primary), false, false),
        (Some(new), false, false),
    ];
    for (step, (ring, send_plain, accept_plain)) in steps.into_iter().enumerate() {
        for h in &nodes {
            h.set_keyring(ring.clone(), send_plain, accept_plain)
                .await
                .unwrap();
        }
        nodes[0].set("step", step.to_string()).await.unwrap();
        for h in &nodes {
            let got = tokio::time::timeout(SECS_5, async {
                while h.get("kr-0", "step").await.as_deref() != Some(step.to_string().as_bytes()) {
                    tokio::time::sleep(INTERVAL).await;
                }
            })
            .await;
            assert!(got.is_ok(), "step {step}: {} never got the write", h.id());
            assert_eq!(h.membership().live().count(), 3, "step {step}");
        }
    }
    // Each step works with the one before it, so no packet was refused on the way.
    for h in &nodes {
        let s = h.stats().await.core;
        assert_eq!(
            (s.rx_auth_failed, s.rx_plaintext_refused),
            (0, 0),
            "{}",
            h.id()
        );
    }
    // A plaintext stranger under the same cluster id is refused now.
    let stranger = runtime::start(config("kr-x", &[nodes[0].id().addr]))
        .await
        .unwrap();
    wait_stats(&nodes[0], SECS_5, |s| s.core.rx_plaintext_refused > 0).await;
    assert_eq!(stranger.membership().live().count(), 1);
    assert!(nodes[0].membership().status("kr-x").is_none());
    stranger.kill().await;
    for h in nodes {
        h.kill().await;
    }
}

/// A subscription with the current state, taken in with the batch of a write: the replay
/// (the state after the batch) already holds the write, so the batch's own event is not
/// delivered again. Deterministic: the subscription is handed over before the write's
/// command, and the driver, idle, takes subscriptions in before it handles the command.
#[tokio::test]
async fn a_replay_taken_in_with_a_write_does_not_deliver_the_write_twice() {
    init_tracing();
    let h = runtime::start(config("dup", &[])).await.unwrap();
    // The driver has run and waits for input (a subscription made before its first turn is
    // served by the start's own flush, before any write).
    h.set("warmup", "w").await.unwrap();
    let mut sub = h.subscribe_with(EventFilter::all().with_current_state());
    h.set("k", "v").await.unwrap();
    // A marker: every event of the first batch is queued before it.
    h.set("marker", "m").await.unwrap();
    let mut k_upserts = 0;
    let mut events = Vec::new();
    loop {
        let e = tokio::time::timeout(SECS_5, sub.recv())
            .await
            .expect("the marker arrives")
            .expect("node running")
            .expect("no lag");
        if is_upsert(&e, "dup", "k") {
            k_upserts += 1;
        }
        let done = is_upsert(&e, "dup", "marker");
        events.push(e);
        if done {
            break;
        }
    }
    assert_eq!(k_upserts, 1, "the write delivered twice: {events:?}");
    h.kill().await;
}

/// The deterministic form of `a_leave_cut_short_by_a_kill_answers_every_call_alike`: on a
/// current-thread runtime the leave's command is queued before the kill's, so the driver
/// stops with a leave waiter. That waiter is told `confirmed: 0`, and so is every later
/// `leave` (the outcome is kept for them): not `Err(Left)`. On two worker threads the
/// leave often arrives after the kill, and the old test then passes without this path.
#[tokio::test]
async fn a_leave_cut_short_by_a_kill_is_answered_alike_before_and_after() {
    let nodes = cluster("lkd", 2).await;
    nodes[1].kill().await;
    // n0 now waits for a confirmation that cannot come (its peer is gone, not yet down).
    let leaving = {
        let h = nodes[0].clone();
        tokio::spawn(async move { h.leave().await })
    };
    // The spawned task runs and queues its command before this one goes on.
    tokio::task::yield_now().await;
    nodes[0].kill().await;
    let first = within(SECS_5, leaving, "the leave cut short by kill")
        .await
        .unwrap();
    assert_eq!(
        first.as_ref().ok().map(|o| o.confirmed),
        Some(0),
        "{first:?}"
    );
    let again = within(SECS_5, nodes[0].leave(), "a leave after kill").await;
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
}

/// Two nodes started apart (no seeds) become one cluster once one joins through the other
/// at run time, and state flows; an address of a family the socket cannot reach is refused
/// with a typed error, nothing joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_apart_join_at_run_time() {
    let a = runtime::start(config("apart-a", &[])).await.unwrap();
    let b = runtime::start(config("apart-b", &[])).await.unwrap();
    assert_eq!(a.membership().num_live(), 1);
    b.set("k", "v").await.unwrap();
    let v6: std::net::SocketAddr = "[fd00::1]:7946".parse().unwrap();
    assert!(matches!(
        a.join([v6]).await,
        Err(Error::Unreachable { addr }) if addr == v6
    ));
    let mut sub = a.subscribe();
    a.join([b.id().addr, a.id().addr]).await.unwrap();
    for h in [&a, &b] {
        wait_membership(h, SECS_5, |m| m.num_live() == 2).await;
    }
    wait_event(&mut sub, SECS_5, |e| is_upsert(e, "apart-b", "k")).await;
    a.shutdown().await;
    b.shutdown().await;
}
