//! Seed resolution: `host:port` seeds and the `dns` name, resolved with hickory at start and
//! every `dns_refresh` (all names of a pass at once), handed to the driver (which calls
//! `Node::set_seeds`) whenever an answer changes them.
//!
//! Name servers: the ones in `RuntimeConfig::dns_servers` if set; otherwise the system
//! configuration (hickory's `system-config`: `/etc/resolv.conf` with its search domains and
//! `ndots`, which Kubernetes short service names rely on); if that cannot be read,
//! `127.0.0.1:53`, with a warning.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, warn};

use super::config::{Reach, SeedFilter, split_host_port};
use super::stats::{Counters, bump};
use crate::node::not_a_peer;

/// First retry delay after a failed resolution (or one that found no peer); doubles up to
/// `dns_refresh`.
const RETRY_MIN: Duration = Duration::from_secs(1);

/// The seeds of a node, split into what needs DNS and what does not.
pub(crate) struct Seeds {
    /// IP-literal seeds.
    pub(crate) literal: Vec<SocketAddr>,
    /// `(host, port)` of seeds given by name, and of the `dns` name.
    pub(crate) names: Vec<(String, u16)>,
}

impl Seeds {
    /// Splits the configured seeds and dns name. They were validated by `RuntimeConfig`.
    pub(crate) fn parse(seeds: &[String], dns: Option<&str>) -> Self {
        let mut literal = Vec::new();
        let mut names = Vec::new();
        for s in seeds.iter().map(String::as_str).chain(dns) {
            let Ok((host, port)) = split_host_port(s) else {
                continue;
            };
            match host.parse::<IpAddr>() {
                Ok(ip) => literal.push(SocketAddr::new(ip, port)),
                Err(_) => names.push((host.to_owned(), port)),
            }
        }
        Self { literal, names }
    }
}

/// Resolves the names every `refresh` (sooner while failing or finding nobody) and sends the
/// whole seed set to the driver whenever it changes. Runs until the driver drops `tx`.
pub(crate) struct SeedResolver {
    pub(crate) seeds: Seeds,
    /// Which addresses are seeds; only the family its socket reaches is asked for.
    pub(crate) filter: SeedFilter,
    pub(crate) servers: Option<Vec<SocketAddr>>,
    pub(crate) refresh: Duration,
    pub(crate) counters: Arc<Counters>,
}

/// What passes carry over: each name's last good addresses, and the seed set last sent.
#[derive(Default)]
struct Known {
    addrs: BTreeMap<(String, u16), Vec<SocketAddr>>,
    sent: Option<Vec<SocketAddr>>,
}

impl SeedResolver {
    pub(crate) async fn run(self, tx: mpsc::Sender<Vec<SocketAddr>>) {
        let mut known = Known::default();
        let mut retry = Retry::default();
        loop {
            // A new resolver every pass: the system configuration is read again (a
            // resolv.conf missing or empty at start, or changed since, is picked up), and
            // nothing is cached across passes (the point is to see records change).
            let resolver = build_resolver(self.servers.as_deref(), self.filter.reach);
            let Some(failed) = self.pass(resolver.as_ref(), &mut known, &tx).await else {
                return;
            };
            let nobody = known.sent.as_ref().is_none_or(Vec::is_empty);
            tokio::time::sleep(retry.next(failed || nobody, self.refresh)).await;
        }
    }

    /// Resolves every name at once and sends the seed set each time an answer changes it, so
    /// a name whose server never answers (a lookup waits out its timeouts: 4 s at custom
    /// servers, the system configuration's otherwise) holds up no other; the set is sent at
    /// least once, on the first pass. Returns whether
    /// some name failed, or `None` once the driver is gone. Without a resolver (`None`: it
    /// could not be built) every name fails.
    async fn pass(
        &self,
        resolver: Option<&TokioResolver>,
        known: &mut Known,
        tx: &mpsc::Sender<Vec<SocketAddr>>,
    ) -> Option<bool> {
        let mut failed = false;
        if let Some(resolver) = resolver {
            let mut lookups = JoinSet::new();
            for (host, port) in &self.seeds.names {
                let (resolver, host, port, reach) =
                    (resolver.clone(), host.clone(), *port, self.filter.reach);
                // In the node's span, as the pass itself: the lookup's logs name the node.
                lookups.spawn(
                    async move {
                        let answer = resolve(&resolver, &host, port, reach).await;
                        (host, port, answer)
                    }
                    .in_current_span(),
                );
            }
            while let Some(done) = lookups.join_next().await {
                let Ok((host, port, answer)) = done else {
                    // The lookup's task panicked: a failure like any other.
                    bump(&self.counters.dns_failures);
                    failed = true;
                    continue;
                };
                match answer {
                    Ok(addrs) => {
                        bump(&self.counters.dns_resolutions);
                        debug!(%host, ?addrs, "resolved");
                        known.addrs.insert((host, port), addrs);
                    }
                    // Keep the last good answer for this name: a DNS outage must not empty
                    // the seeds.
                    Err(why) => {
                        bump(&self.counters.dns_failures);
                        failed = true;
                        why.warn(&host);
                    }
                }
                self.send_if_changed(known, tx).await?;
            }
        } else {
            // Counted per name, as a failed lookup is: before, this pass was only logged and
            // `dns_failures` stayed still while no name was ever resolved.
            for _ in &self.seeds.names {
                bump(&self.counters.dns_failures);
                failed = true;
            }
        }
        self.send_if_changed(known, tx).await?;
        Some(failed)
    }

    /// Sends the seed set (literal seeds and every name's last good addresses: canonical,
    /// reachable, able to be a peer, not this node; sorted, each once) unless it is the one
    /// sent last. `None` once the driver is gone.
    async fn send_if_changed(
        &self,
        known: &mut Known,
        tx: &mpsc::Sender<Vec<SocketAddr>>,
    ) -> Option<()> {
        let all = self.filter.seeds(
            self.seeds
                .literal
                .iter()
                .chain(known.addrs.values().flatten())
                .copied(),
        );
        if known.sent.as_ref() != Some(&all) {
            info!(seeds = ?all, "seed addresses changed");
            tx.send(all.clone()).await.ok()?;
            known.sent = Some(all);
        }
        Some(())
    }
}

/// Why a name gave no address this node can use.
#[derive(Debug)]
enum Unresolved {
    /// The lookup failed: no such name, no answer in time, a server error.
    Failed(hickory_resolver::net::NetError),
    /// The name has no address at all.
    NoAddress,
    /// Every address of the name is one no peer can have (`not_a_peer`: DNS filters answer
    /// `0.0.0.0` for the names they block). Before, such an answer counted as resolved and
    /// left the seeds empty, so the node sat alone without a word (found by review).
    NotAPeer(Vec<IpAddr>),
    /// The name has addresses, but only of the family this node's socket cannot reach (only
    /// that family is asked for: see `build_resolver`).
    OtherFamily {
        /// The family the socket reaches.
        reach: Reach,
        /// The name's addresses of the other family.
        found: Vec<IpAddr>,
    },
}

impl Unresolved {
    /// Logs why `host` gave no seed.
    fn warn(&self, host: &str) {
        match self {
            Self::Failed(e) => warn!(%host, error = %e, "DNS resolution failed"),
            Self::NoAddress => warn!(%host, "DNS answer without an address"),
            Self::NotAPeer(found) => warn!(
                %host,
                ?found,
                "the name resolves only to addresses no peer can have (unspecified, multicast \
                 or broadcast; a DNS filter blocking a name answers 0.0.0.0)"
            ),
            Self::OtherFamily {
                reach: Reach::V6,
                found,
            } => warn!(
                %host,
                ?found,
                "the name has no IPv6 address (AAAA record), only IPv4 ones, and this node's \
                 socket reaches only IPv6 (`bind` is a specific IPv6 address): bind [::] to \
                 reach both families, or give the name AAAA records"
            ),
            Self::OtherFamily { found, .. } => warn!(
                %host,
                ?found,
                "the name has no IPv4 address (A record), only IPv6 ones, and this node's \
                 socket reaches only IPv4 (`bind` is IPv4): bind [::] to reach both \
                 families, or give the name A records"
            ),
        }
    }
}

/// The addresses of `host` this node can reach, with `port`. Finding none of its family, asks
/// for the other one, so that the warning can say the name resolves, only not to an address
/// this node can reach: an operator otherwise reads "no records" for a name that resolves
/// everywhere else.
async fn resolve(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
    reach: Reach,
) -> Result<Vec<SocketAddr>, Unresolved> {
    match resolver.lookup_ip(host).await {
        Ok(lookup) => {
            let all: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            let addrs: Vec<SocketAddr> = all
                .iter()
                .map(|a| super::udp::canonical(*a))
                .filter(|a| not_a_peer(*a).is_none())
                .collect();
            if !addrs.is_empty() {
                return Ok(addrs);
            }
            if !all.is_empty() {
                return Err(Unresolved::NotAPeer(
                    all.iter().map(SocketAddr::ip).collect(),
                ));
            }
        }
        // The name exists and has no address of the family asked.
        Err(e) if e.is_no_records_found() && !e.is_nx_domain() => {}
        Err(e) => return Err(Unresolved::Failed(e)),
    }
    let other = match reach {
        Reach::V4 => resolver.ipv6_lookup(host).await,
        Reach::V6 => resolver.ipv4_lookup(host).await,
        Reach::Both => return Err(Unresolved::NoAddress),
    };
    let found: Vec<IpAddr> = other
        .map(|l| {
            l.answers()
                .iter()
                .filter_map(|r| r.data.ip_addr())
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        Err(Unresolved::NoAddress)
    } else {
        Err(Unresolved::OtherFamily { reach, found })
    }
}

/// When the next resolution pass runs: `refresh` after a good one; after a failed one (or one
/// that found no peer) `RETRY_MIN`, doubling with each failure in a row, never past `refresh`.
/// A good pass starts the doubling again: a name that fails again after hours of good answers
/// is retried after a second, not after the longest delay of its last bad spell.
#[derive(Debug)]
struct Retry {
    delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { delay: RETRY_MIN }
    }
}

impl Retry {
    /// The wait after a pass that `failed` or not.
    fn next(&mut self, failed: bool, refresh: Duration) -> Duration {
        if failed {
            let wait = self.delay.min(refresh);
            self.delay = (self.delay * 2).min(refresh);
            wait
        } else {
            self.delay = RETRY_MIN;
            refresh
        }
    }
}

fn build_resolver(servers: Option<&[SocketAddr]>, reach: Reach) -> Option<TokioResolver> {
    let mut builder = match servers {
        Some(servers) => custom(servers),
        None => match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read the system DNS configuration; using 127.0.0.1:53");
                custom(&[SocketAddr::from(([127, 0, 0, 1], 53))])
            }
        },
    };
    builder.options_mut().ip_strategy = match reach {
        Reach::Both => LookupIpStrategy::Ipv4AndIpv6,
        Reach::V4 => LookupIpStrategy::Ipv4Only,
        Reach::V6 => LookupIpStrategy::Ipv6Only,
    };
    builder
        .build()
        .map_err(|e| warn!(error = %e, "cannot build the DNS resolver; names stay unresolved"))
        .ok()
}

fn custom(servers: &[SocketAddr]) -> hickory_resolver::ResolverBuilder<TokioRuntimeProvider> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    );
    // hickory's defaults (5 s a try, three tries) made a silent server fail a lookup after
    // 15 s, holding the first seed set (and a first ring waiting for it) that long: the
    // resolver tries again within seconds anyway (`Retry`). The system configuration keeps
    // its own `timeout` and `attempts` (resolv.conf's `options`).
    let opts = builder.options_mut();
    opts.timeout = CUSTOM_SERVER_TIMEOUT;
    opts.attempts = CUSTOM_SERVER_RETRIES;
    builder
}

/// How long a custom DNS server (`RuntimeConfig::dns_servers`) has to answer one try.
const CUSTOM_SERVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries after the first before a lookup at custom DNS servers fails (`ResolverOpts::attempts`):
/// a silent server fails a lookup after 4 s.
const CUSTOM_SERVER_RETRIES: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// IP literals (IPv6 in brackets) need no DNS; names, from the seeds and the `dns` name
    /// alike, do.
    #[test]
    fn seeds_split_into_ip_literals_and_names() {
        let seeds = ["10.0.0.1:7946", "[::1]:7000", "seed.example:7946"].map(String::from);
        let s = Seeds::parse(&seeds, Some("svc.example:8000"));
        assert_eq!(s.literal, [addr("10.0.0.1:7946"), addr("[::1]:7000")]);
        assert_eq!(
            s.names,
            [
                ("seed.example".to_owned(), 7946),
                ("svc.example".to_owned(), 8000)
            ]
        );
    }

    /// The seed set handed to the driver: IPv4-mapped addresses as IPv4, only addresses the
    /// socket reaches and a peer can have (a name can resolve to 0.0.0.0: DNS filters answer
    /// it for names they block), never the node's own, each once, sorted; and sent again only
    /// when it changes, not every pass.
    #[tokio::test(start_paused = true)]
    async fn the_seed_set_is_canonical_reachable_not_own_and_sent_once() {
        let resolver = SeedResolver {
            seeds: Seeds {
                literal: vec![
                    addr("10.0.0.3:7946"),
                    addr("[::ffff:10.0.0.2]:7946"),
                    addr("10.0.0.1:7946"),
                    addr("[2001:db8::1]:7946"),
                    addr("10.0.0.3:7946"),
                    addr("0.0.0.0:7946"),
                    addr("255.255.255.255:7946"),
                    addr("224.0.0.1:7946"),
                ],
                names: Vec::new(),
            },
            filter: SeedFilter {
                own: vec![addr("10.0.0.1:7946")],
                reach: Reach::V4,
            },
            servers: Some(vec![addr("127.0.0.1:9")]),
            refresh: secs(1),
            counters: Arc::new(Counters::default()),
        };
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(resolver.run(tx));
        let first = rx.recv().await.unwrap();
        assert_eq!(first, [addr("10.0.0.2:7946"), addr("10.0.0.3:7946")]);
        // Ten more passes, nothing new.
        tokio::time::sleep(secs(10)).await;
        assert!(rx.try_recv().is_err(), "an unchanged set is not sent again");
        task.abort();
    }

    /// What the loopback DNS server answers, and what it was asked.
    #[derive(Default)]
    struct Zone {
        /// The addresses of every name; `None`: NXDOMAIN.
        ips: Option<Vec<IpAddr>>,
        /// The query types asked (1: A, 28: AAAA).
        asked: std::collections::BTreeSet<u16>,
    }

    /// A DNS answer to the query `q`, noting its type in `zone`: the zone's addresses of that
    /// type (A: IPv4, AAAA: IPv6) for whatever name it asks, or NXDOMAIN if `ips` is `None`.
    fn dns_answer(q: &[u8], zone: &mut Zone) -> Option<Vec<u8>> {
        // QNAME: labels up to the zero byte; then QTYPE and QCLASS.
        let mut end = 12;
        while *q.get(end)? != 0 {
            end += 1 + usize::from(q[end]);
        }
        let question = q.get(12..end + 5)?;
        let qtype = u16::from_be_bytes([q[end + 1], q[end + 2]]);
        zone.asked.insert(qtype);
        let rdata: Vec<Vec<u8>> = zone
            .ips
            .iter()
            .flatten()
            .filter_map(|ip| match (qtype, ip) {
                (1, IpAddr::V4(v4)) => Some(v4.octets().to_vec()),
                (28, IpAddr::V6(v6)) => Some(v6.octets().to_vec()),
                _ => None,
            })
            .collect();
        let mut r = vec![
            q[0],
            q[1],
            0x84 | (q[2] & 1),
            if zone.ips.is_some() { 0x80 } else { 0x83 },
        ];
        for count in [1, rdata.len() as u16, 0, 0] {
            r.extend_from_slice(&count.to_be_bytes());
        }
        r.extend_from_slice(question);
        for data in rdata {
            // Name (a pointer to the question's), the type asked, IN, TTL 1 s, length, data.
            r.extend_from_slice(&[0xc0, 0x0c]);
            r.extend_from_slice(&qtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0, 1]);
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(&data);
        }
        Some(r)
    }

    type SharedZone = Arc<std::sync::Mutex<Zone>>;

    /// A DNS server on IPv4 loopback answering from `zone` (see `dns_answer`).
    async fn serve_dns(zone: &SharedZone) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::clone(zone);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let answer = dns_answer(&buf[..n], &mut zone.lock().unwrap());
                if let Some(r) = answer {
                    let _ = sock.send_to(&r, from).await;
                }
            }
        });
        (addr, task)
    }

    /// A resolver of one name, for a node at 10.0.0.1:7946 reaching `reach`, through a
    /// loopback DNS server answering `ips`; both run until this is dropped.
    struct NameResolution {
        zone: SharedZone,
        counters: Arc<Counters>,
        /// The seed sets sent to the driver.
        rx: mpsc::Receiver<Vec<SocketAddr>>,
        tasks: [tokio::task::JoinHandle<()>; 2],
    }

    impl NameResolution {
        async fn start(ips: &[&str], reach: Reach, refresh: Duration) -> Self {
            let zone = SharedZone::default();
            zone.lock().unwrap().ips = Some(ips.iter().map(|ip| ip.parse().unwrap()).collect());
            let (server, dns) = serve_dns(&zone).await;
            let counters = Arc::new(Counters::default());
            let resolver = SeedResolver {
                seeds: Seeds {
                    literal: Vec::new(),
                    names: vec![("seeds.tidings.test".to_owned(), 7946)],
                },
                filter: SeedFilter {
                    own: vec![addr("10.0.0.1:7946")],
                    reach,
                },
                servers: Some(vec![server]),
                refresh,
                counters: Arc::clone(&counters),
            };
            let (tx, rx) = mpsc::channel(4);
            let task = tokio::spawn(resolver.run(tx));
            Self {
                zone,
                counters,
                rx,
                tasks: [task, dns],
            }
        }
    }

    impl Drop for NameResolution {
        fn drop(&mut self) {
            self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
    }

    /// A name that stops resolving keeps the addresses it last had: failed passes are
    /// counted and retried, and the seed set is not sent again (a DNS outage must not empty
    /// it).
    #[tokio::test(start_paused = true)]
    async fn a_name_that_stops_resolving_keeps_its_last_addresses() {
        let mut dns = NameResolution::start(&["10.0.0.2"], Reach::V4, secs(1)).await;
        assert_eq!(dns.rx.recv().await.unwrap(), [addr("10.0.0.2:7946")]);
        dns.zone.lock().unwrap().ips = None;
        let failures = || {
            dns.counters
                .dns_failures
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        tokio::time::timeout(secs(60), async {
            while failures() < 2 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("failed passes counted");
        assert!(dns.rx.try_recv().is_err(), "the seed set did not change");
    }

    /// A pass that finds no peer (the name lists only this node, as for the first pod of a
    /// service) is retried like a failure, after 1, 2, 4 s, not after `refresh`.
    #[tokio::test(start_paused = true)]
    async fn a_pass_that_finds_only_this_node_is_retried_soon() {
        let mut dns = NameResolution::start(&["10.0.0.1"], Reach::V4, secs(60)).await;
        assert_eq!(dns.rx.recv().await.unwrap(), []);
        // Passes at 0, 1, 3 and 7 s.
        tokio::time::sleep(secs(10)).await;
        let passes = dns
            .counters
            .dns_resolutions
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(passes >= 3, "{passes} passes in 10 s");
    }

    /// Only the address family the socket reaches is asked for: an IPv6-only node asks AAAA
    /// records and its seeds are the name's IPv6 addresses (asking A, it would find no seed
    /// at all, its IPv4 ones being unreachable); an IPv4 node asks A and gets only the IPv4
    /// one; a dual-stack node asks both and gets all. The server answers each type with its
    /// own records only, as a real one does.
    #[tokio::test(start_paused = true)]
    async fn a_name_is_asked_for_the_address_family_the_socket_reaches() {
        let ips = ["10.0.0.2", "fd00::2", "fd00::3"];
        let [v4, v6a, v6b] = ["10.0.0.2:7946", "[fd00::2]:7946", "[fd00::3]:7946"].map(addr);
        let (a, aaaa) = (1, 28);
        for (reach, asked, seeds) in [
            (Reach::V6, vec![aaaa], vec![v6a, v6b]),
            (Reach::V4, vec![a], vec![v4]),
            (Reach::Both, vec![a, aaaa], vec![v4, v6a, v6b]),
        ] {
            let mut dns = NameResolution::start(&ips, reach, secs(60)).await;
            assert_eq!(dns.rx.recv().await.unwrap(), seeds, "seeds with {reach:?}");
            let types: Vec<u16> = dns.zone.lock().unwrap().asked.iter().copied().collect();
            assert_eq!(types, asked, "query types with {reach:?}");
        }
    }

    /// A pass without a resolver (it could not be built) counts each name as a failed
    /// resolution, as a failed lookup is (before, it was only logged: `dns_failures` stayed
    /// still while no name was ever resolved), and still sends the literal seeds.
    #[tokio::test(start_paused = true)]
    async fn a_pass_without_a_resolver_counts_every_name_failed() {
        let counters = Arc::new(Counters::default());
        let resolver = SeedResolver {
            seeds: Seeds {
                literal: vec![addr("10.0.0.2:7946")],
                names: vec![("a.test".to_owned(), 7946), ("b.test".to_owned(), 7946)],
            },
            filter: SeedFilter {
                own: Vec::new(),
                reach: Reach::V4,
            },
            servers: None,
            refresh: secs(30),
            counters: Arc::clone(&counters),
        };
        let (tx, mut rx) = mpsc::channel(4);
        let mut known = Known::default();
        assert_eq!(resolver.pass(None, &mut known, &tx).await, Some(true));
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(count(&counters.dns_failures), 2);
        assert_eq!(count(&counters.dns_resolutions), 0);
        assert_eq!(rx.try_recv().unwrap(), [addr("10.0.0.2:7946")]);
    }

    /// A name with addresses only of the family this node's socket cannot reach is told
    /// apart from a name with no address and from a failed lookup, with the addresses it
    /// has, so that the warning can say why (before, an IPv6-only node logged "DNS
    /// resolution failed: no records found" for a name with A records only).
    #[tokio::test(start_paused = true)]
    async fn a_name_with_addresses_only_of_the_other_family_is_told_apart() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (reach, ips, other) in [
            (
                Reach::V6,
                Some(vec!["10.0.0.2"]),
                Some(vec![ip("10.0.0.2")]),
            ),
            (Reach::V4, Some(vec!["fd00::2"]), Some(vec![ip("fd00::2")])),
            (Reach::V6, Some(vec![]), None),
            (Reach::Both, Some(vec![]), None),
            (Reach::V6, None, None),
        ] {
            let zone = SharedZone::default();
            let nxdomain = ips.is_none();
            zone.lock().unwrap().ips = ips.map(|ips| ips.iter().map(|s| ip(s)).collect());
            let (server, dns) = serve_dns(&zone).await;
            let resolver = build_resolver(Some(&[server]), reach).unwrap();
            let r = resolve(&resolver, "seeds.tidings.test", 7946, reach).await;
            dns.abort();
            match (r, other) {
                (Err(Unresolved::OtherFamily { reach: r, found }), Some(want)) => {
                    assert_eq!((r, found), (reach, want));
                }
                (Err(Unresolved::NoAddress), None) if !nxdomain => {}
                (Err(Unresolved::Failed(e)), None) if nxdomain => assert!(e.is_nx_domain()),
                (r, other) => panic!("{reach:?}, other family {other:?}: {r:?}"),
            }
        }
    }

    /// A name whose only address is one no peer can have (a DNS filter blocking it answers
    /// 0.0.0.0) is an unresolved name, warned about and counted as a failure, not a
    /// resolution that leaves the seeds empty in silence (found by review); a good address
    /// beside it is kept.
    #[tokio::test(start_paused = true)]
    async fn a_name_answered_with_only_addresses_no_peer_can_have_is_unresolved() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (ips, want) in [
            (vec!["0.0.0.0"], Err(vec![ip("0.0.0.0")])),
            (vec!["0.0.0.0", "10.0.0.2"], Ok(vec![addr("10.0.0.2:7946")])),
        ] {
            let zone = SharedZone::default();
            zone.lock().unwrap().ips = Some(ips.iter().map(|s| ip(s)).collect());
            let (server, dns) = serve_dns(&zone).await;
            let resolver = build_resolver(Some(&[server]), Reach::V4).unwrap();
            let r = resolve(&resolver, "seeds.tidings.test", 7946, Reach::V4).await;
            dns.abort();
            match (r, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(Unresolved::NotAPeer(found)), Err(want)) => assert_eq!(found, want),
                (r, want) => panic!("{ips:?}: {r:?}, want {want:?}"),
            }
        }
    }

    /// Failures back off 1, 2, 4 s up to `refresh`; a good pass waits `refresh` and starts the
    /// backoff again from 1 s (left at its longest, a name that breaks again after a good
    /// spell stayed unresolved for a whole `refresh`).
    #[test]
    fn retries_double_up_to_refresh_and_start_over_after_a_good_pass() {
        let refresh = secs(30);
        let mut r = Retry::default();
        let waits: Vec<u64> = [true, true, true, true, true, true, true]
            .into_iter()
            .map(|failed| r.next(failed, refresh).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(r.next(false, refresh), refresh);
        assert_eq!(r.next(false, refresh), refresh);
        let again: Vec<u64> = (0..3).map(|_| r.next(true, refresh).as_secs()).collect();
        assert_eq!(again, [1, 2, 4]);
        // A refresh shorter than the first retry caps it too.
        let mut r = Retry::default();
        assert_eq!(
            r.next(true, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(
            r.next(true, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }
}
