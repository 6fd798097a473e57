//! Helpers shared by the `runtime_*` tests: real nodes on 127.0.0.1 with OS-chosen ports, and
//! waits on events and membership with a timeout (never a fixed sleep).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tidings::runtime::{self, Handle, Membership, RuntimeConfig, RuntimeStats, Subscription};
use tidings::{Event, MemberStatus};

/// Gossip interval of test nodes: short, so tests are quick, but long enough that two
/// busy cores do not make phi convict a live peer.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// A test node's configuration: bound to 127.0.0.1:0, short timeouts.
pub fn config(name: &str, seeds: &[SocketAddr]) -> RuntimeConfig {
    let mut c = RuntimeConfig::lan(name);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.seeds = seeds.iter().map(ToString::to_string).collect();
    c.protocol.gossip_interval = INTERVAL;
    c.protocol.leave_timeout = Duration::from_secs(2);
    c.tcp_idle_timeout = Duration::from_secs(2);
    c.protocol.ring_settle = Duration::from_millis(200);
    c
}

/// Starts `n` nodes named `prefix-0`... : the first alone, the others seeded with it. Waits
/// until every node sees all `n` live.
pub async fn cluster(prefix: &str, n: usize) -> Vec<Handle> {
    cluster_with(prefix, n, |_| {}).await
}

/// As [`cluster`], with `tweak` applied to every node's configuration.
pub async fn cluster_with(
    prefix: &str,
    n: usize,
    tweak: impl Fn(&mut RuntimeConfig),
) -> Vec<Handle> {
    let start = |name: String, seeds: &[SocketAddr]| {
        let mut c = config(&name, seeds);
        tweak(&mut c);
        runtime::start(c)
    };
    let first = start(format!("{prefix}-0"), &[]).await.unwrap();
    let seed = first.id().addr;
    let mut nodes = vec![first];
    for i in 1..n {
        let h = start(format!("{prefix}-{i}"), &[seed]).await.unwrap();
        nodes.push(h);
    }
    for h in &nodes {
        wait_membership(h, Duration::from_secs(8), |m| m.num_live() == n).await;
    }
    nodes
}

/// Waits until `h`'s membership satisfies `pred`; panics with the last snapshot after
/// `timeout`.
pub async fn wait_membership(
    h: &Handle,
    timeout: Duration,
    pred: impl FnMut(&Arc<Membership>) -> bool,
) -> Arc<Membership> {
    let mut rx = h.watch_membership();
    match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
        Ok(Ok(m)) => Arc::clone(&m),
        Ok(Err(_)) => panic!("{}: node stopped while waiting", h.id().name),
        Err(_) => panic!(
            "{}: timed out after {timeout:?}; membership: {:#?}",
            h.id().name,
            h.membership().members
        ),
    }
}

/// Waits until `pred` holds for the node's stats; panics with the last ones after `timeout`.
pub async fn wait_stats(
    h: &Handle,
    timeout: Duration,
    pred: impl Fn(&RuntimeStats) -> bool,
) -> RuntimeStats {
    let found = tokio::time::timeout(timeout, async {
        loop {
            let s = h.stats().await;
            if pred(&s) {
                return s;
            }
            // Stats are counters, not events: poll them, at a short period.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match found {
        Ok(s) => s,
        Err(_) => panic!("{}: stats never matched: {:?}", h.id(), h.stats().await),
    }
}

/// Waits until `name` has `status` in `h`'s view.
pub async fn wait_status(h: &Handle, name: &str, status: MemberStatus, timeout: Duration) {
    wait_membership(h, timeout, |m| m.status(name) == Some(status)).await;
}

/// Reads events until one satisfies `pred`; panics after `timeout`. Lag reports are skipped.
pub async fn wait_event(
    sub: &mut Subscription,
    timeout: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(timeout, async {
        loop {
            match sub.recv().await {
                Some(Ok(e)) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("subscription ended"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no matching event within {timeout:?}"))
}

/// Whether `e` is `KeyUpserted` of `key` by node `node`.
pub fn is_upsert(e: &Event, node: &str, key: &str) -> bool {
    matches!(e, Event::KeyUpserted { node: n, key: k, .. } if n.name == node && k == key)
}

/// Installs a tracing subscriber once, filtered by `RUST_LOG` (quiet by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
