//! Joining through DNS against a real DNS server on loopback whose records change during the
//! test: a node finds a peer that appears behind the name later.
//!
//! The server is a tiny UDP responder written here (A records for one name, TTL 1 s; empty
//! answers for other types, no answer at all for one silent name, NXDOMAIN for other names):
//! enough for hickory's resolver, with no extra dependency. Peers behind one name share a port
//! and differ by address, as pods behind a headless service do; on Linux all of 127.0.0.0/8 is
//! loopback, so 127.0.0.2 and 127.0.0.3 play two pods.

mod runtime_common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_common::{config, init_tracing, wait_membership, wait_stats};
use tidings::runtime;
use tokio::net::UdpSocket;

const NAME: &str = "peers.tidings.test";
/// A name the server never answers: every query for it is dropped.
const SILENT: &str = "silent.tidings.test";

/// A DNS server answering `NAME` with the addresses in `records`.
struct Dns {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Ipv4Addr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    async fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&records);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let ips = shared.lock().unwrap().clone();
                if let Some(reply) = answer(&buf[..n], &ips) {
                    let _ = sock.send_to(&reply, from).await;
                }
            }
        });
        Self {
            addr,
            records,
            task,
        }
    }

    fn set(&self, ips: &[Ipv4Addr]) {
        *self.records.lock().unwrap() = ips.to_vec();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the response to one query, or `None` if it is not a parseable query.
fn answer(q: &[u8], ips: &[Ipv4Addr]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // QNAME: labels up to the zero byte.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    if labels.join(".") == SILENT {
        return None;
    }
    let ours = labels.join(".") == NAME;
    let answers: &[Ipv4Addr] = if ours && qtype == 1 { ips } else { &[] };
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&q[0..2]); // id
    let rd = q[2] & 0x01;
    r.push(0x84 | rd); // QR, AA, RD copied
    r.push(if ours { 0x80 } else { 0x83 }); // RA; NOERROR or NXDOMAIN
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    for ip in answers {
        r.extend_from_slice(&[0xc0, 0x0c]); // pointer to the question's name
        r.extend_from_slice(&1u16.to_be_bytes()); // A
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_a_dns_name_is_found_after_the_record_changes() {
    init_tracing();
    let dns = Dns::start().await;
    let a_ip = Ipv4Addr::new(127, 0, 0, 2);
    let c_ip = Ipv4Addr::new(127, 0, 0, 3);

    // Pod a: alone, listed in DNS.
    let mut a = config("a", &[]);
    a.bind = SocketAddr::from((a_ip, 0));
    let a = runtime::start(a).await.unwrap();
    let port = a.local_addr().port();
    dns.set(&[a_ip]);

    // Node b finds a through the name.
    let mut b = config("b", &[]);
    b.dns = Some(format!("{NAME}:{port}"));
    b.dns_servers = Some(vec![dns.addr]);
    b.dns_refresh = Duration::from_millis(300);
    let b = runtime::start(b).await.unwrap();
    for h in [&a, &b] {
        wait_membership(h, Duration::from_secs(5), |m| m.num_live() == 2).await;
    }

    // Pod c starts on the same port at another address, knowing nobody; then the record
    // changes to list it. b's next resolution finds it and pulls it in.
    let mut c = config("c", &[]);
    c.bind = SocketAddr::from((c_ip, port));
    let c = runtime::start(c).await.unwrap();
    dns.set(&[a_ip, c_ip]);
    for h in [&a, &b, &c] {
        wait_membership(h, Duration::from_secs(5), |m| m.num_live() == 3).await;
    }
    let s = b.stats().await;
    assert!(s.dns_resolutions >= 2, "{s:?}");

    // The record empties (every pod behind the service restarting): an answer with no
    // address counts as a failure, which keeps the addresses last resolved.
    let failures = s.dns_failures;
    dns.set(&[]);
    wait_stats(&b, Duration::from_secs(5), |s| s.dns_failures > failures).await;

    // A name that does not resolve is retried, counted, and does not stop the node.
    let mut d = config("d", &[a.id().addr]);
    d.seeds.push(format!("missing.tidings.test:{port}"));
    d.dns_servers = Some(vec![dns.addr]);
    let d = runtime::start(d).await.unwrap();
    wait_membership(&d, Duration::from_secs(5), |m| m.num_live() == 4).await;
    // Retried 1 s after the first failure (then 2 s, 4 s, ...), each failure counted.
    wait_stats(&d, Duration::from_secs(10), |s| s.dns_failures >= 2).await;
    for h in [a, b, c, d] {
        h.kill().await;
    }
}

/// While a name fails to resolve it is retried sooner than `dns_refresh`: after 1 s, then
/// doubling, but never less often than every `dns_refresh` (as documented: "1 s, doubling up
/// to this"). With `dns_refresh` = 4 s the passes come at 0, 1, 3, 7, 11, 15, 19, 23 s; an
/// uncapped backoff (0, 1, 3, 7, 15, 31 s) leaves a name that comes back unresolved for
/// minutes. Paused clock: the resolver's sleeps are exact; the responder answers at once on
/// loopback.
#[tokio::test(start_paused = true)]
async fn failing_resolutions_are_retried_at_least_every_dns_refresh() {
    let dns = Dns::start().await;
    // No record: every pass is a failure.
    dns.set(&[]);
    let mut b = config("b", &[]);
    b.dns = Some(format!("{NAME}:7946"));
    b.dns_servers = Some(vec![dns.addr]);
    b.dns_refresh = Duration::from_secs(4);
    let b = runtime::start(b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(23_500)).await;
    let s = b.stats().await;
    assert!(
        s.dns_failures >= 7,
        "retries backed off past dns_refresh: {} failed passes in 23.5 s",
        s.dns_failures
    );
    assert!(s.dns_failures <= 8, "{}", s.dns_failures);
    b.kill().await;
}

/// A name whose server never answers does not hold up the others: names are resolved at once,
/// and the seeds of each sent as soon as it answers, not after the silent name's lookup gives
/// up (4 s at a custom server, 15 s with hickory's defaults). Listed first, the silent name delayed the
/// join by that long when names were resolved one after another. Paused clock: the join
/// through the answering name must come within a second of virtual time.
#[tokio::test(start_paused = true)]
async fn a_name_that_never_answers_does_not_delay_the_others() {
    let dns = Dns::start().await;
    let a = runtime::start(config("a", &[])).await.unwrap();
    let port = a.local_addr().port();
    dns.set(&[Ipv4Addr::LOCALHOST]);
    let mut b = config("b", &[]);
    b.seeds = vec![format!("{SILENT}:{port}")];
    b.dns = Some(format!("{NAME}:{port}"));
    b.dns_servers = Some(vec![dns.addr]);
    let b = runtime::start(b).await.unwrap();
    wait_membership(&b, Duration::from_secs(1), |m| m.num_live() == 2).await;
    assert_eq!(
        b.stats().await.dns_failures,
        0,
        "the silent name is still asked"
    );
    // It does fail in the end, and is counted.
    wait_stats(&b, Duration::from_secs(60), |s| s.dns_failures >= 1).await;
    for h in [a, b] {
        h.kill().await;
    }
}

/// A custom DNS server that never answers fails a lookup within a few seconds, not the 15 s of
/// hickory's defaults (5 s a try, three tries): the seeds' first pass, and
/// with it the node's first ring when it waits for seeds, is not held up that long. Paused
/// clock: the lookup's timeouts are exact.
#[tokio::test(start_paused = true)]
async fn a_silent_custom_dns_server_fails_a_lookup_within_five_seconds() {
    let dns = Dns::start().await;
    let mut b = config("b", &[]);
    b.dns = Some(format!("{SILENT}:7946"));
    b.dns_servers = Some(vec![dns.addr]);
    let b = runtime::start(b).await.unwrap();
    // Panics unless the failure is counted within 5 s of virtual time.
    wait_stats(&b, Duration::from_secs(5), |s| s.dns_failures >= 1).await;
    b.kill().await;
}
