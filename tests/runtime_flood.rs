//! A flood of hostile datagrams at one node of a running 5-node cluster (encrypted): junk,
//! truncated envelopes, another cluster's packets, forged sealed packets and plaintext. The
//! cluster keeps converging, nothing panics, memory stays bounded and the counters show the
//! drops.

mod runtime_common;

use std::net::UdpSocket;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use runtime_common::{config, wait_membership};
use tidings::Keyring;
use tidings::runtime::{self, Handle};

const BURST: usize = 200_000;

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn encrypted_cluster(n: usize) -> Vec<Handle> {
    let keyed = |name: &str, seeds: &[std::net::SocketAddr]| {
        let mut c = config(name, seeds);
        c.protocol.cluster_id = "flood".into();
        c.protocol.keyring = Some(Keyring::new([42; 32]));
        c
    };
    let first = runtime::start(keyed("f-0", &[])).await.unwrap();
    let seed = first.id().addr;
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(
            runtime::start(keyed(&format!("f-{i}"), &[seed]))
                .await
                .unwrap(),
        );
    }
    for h in &nodes {
        wait_membership(h, Duration::from_secs(10), |m| m.num_live() == n).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_datagrams_is_dropped_counted_and_survived() {
    let nodes = encrypted_cluster(5).await;
    let target = nodes[0].id().addr;
    let rss_before = rss_bytes();

    // The flood: a bounded burst from a plain socket, paced in batches so the test measures
    // the node, not the kernel's receive buffer.
    let sender = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0xF100D);
        let header = |cluster: &[u8]| {
            let mut h = vec![0x7D, 0x15, 0x01, cluster.len() as u8];
            h.extend_from_slice(cluster);
            h
        };
        for i in 0..BURST {
            let len = rng.random_range(0..1400);
            let mut body = vec![0u8; len];
            rng.fill(&mut body[..]);
            let packet = match i % 5 {
                // Junk.
                0 => body,
                // A valid envelope, truncated right after the header or inside the body.
                1 => {
                    let mut p = header(b"flood");
                    p.push(1);
                    p.extend_from_slice(&body[..len.min(7)]);
                    p
                }
                // Another cluster.
                2 => {
                    let mut p = header(b"someone-else");
                    p.push(1);
                    p.extend_from_slice(&body);
                    p
                }
                // Forged: claims to be sealed, random key id, nonce and ciphertext.
                3 => {
                    let mut p = header(b"flood");
                    p.push(0xA5);
                    p.extend_from_slice(&body);
                    p.resize(p.len().max(6 + 5 + 44 + 10), 0);
                    p
                }
                // Plaintext at a node that requires encryption.
                _ => {
                    let mut p = header(b"flood");
                    p.push(1);
                    p.extend_from_slice(&[0x93, 0x01, 0x02, 0x90]);
                    p
                }
            };
            let _ = sock.send_to(&packet, target);
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });

    // While the flood runs, the cluster keeps gossiping: a write reaches everyone.
    nodes[3]
        .set("during-flood", "still-converging")
        .await
        .unwrap();
    for h in &nodes {
        let arrived = tokio::time::timeout(Duration::from_secs(15), async {
            while h.get("f-3", "during-flood").await.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(arrived.is_ok(), "{} never got the write", h.id());
    }
    tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();

    // Everyone is still up and sees everyone.
    for h in &nodes {
        wait_membership(h, Duration::from_secs(10), |m| m.num_live() == 5).await;
    }
    let s = nodes[0].stats().await.core;
    let dropped = s.rx_malformed + s.rx_foreign_cluster + s.rx_auth_failed + s.rx_plaintext_refused;
    assert!(s.rx_malformed > 0, "{s:?}");
    assert!(s.rx_foreign_cluster > 0, "{s:?}");
    assert!(s.rx_auth_failed > 0, "{s:?}");
    assert!(s.rx_plaintext_refused > 0, "{s:?}");
    // Most of the burst reached the node and was counted (the kernel may drop some).
    assert!(
        dropped as usize > BURST / 2,
        "only {dropped} of {BURST} counted: {s:?}"
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "flood: {BURST} sent, {dropped} counted (malformed {}, foreign {}, auth {}, plaintext {}), rss +{} KiB",
        s.rx_malformed,
        s.rx_foreign_cluster,
        s.rx_auth_failed,
        s.rx_plaintext_refused,
        grown / 1024
    );
    assert!(
        grown < 64 << 20,
        "resident memory grew by {grown} bytes during the flood"
    );
    for h in nodes {
        h.shutdown().await;
    }
}
