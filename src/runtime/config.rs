//! [`RuntimeConfig`]: what the tokio runtime needs on top of the protocol [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::udp::canonical;
use crate::config::{Config, ConfigError, MAX_DURATION};
use crate::error::Error;
use crate::id::MAX_NAME_LEN;
use crate::node::{not_a_peer, not_a_peer_ip};

/// Parameters of a node run by [`start`](super::start). Start from [`RuntimeConfig::lan`] or
/// [`RuntimeConfig::wan`], then change fields:
///
/// ```
/// let mut config = tidings::runtime::RuntimeConfig::lan("node-1");
/// config.bind = "127.0.0.1:0".parse().unwrap();
/// config.seeds = vec!["10.0.0.2:7946".into()];
/// config.validate().unwrap();
/// ```
///
/// [`start`](super::start) calls [`RuntimeConfig::validate`], so an invalid configuration never
/// runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Stable member name, e.g. a pod name. 1 to 255 bytes. No default.
    pub name: String,
    /// Incarnation number. Default: `None`, meaning the start time in milliseconds since the
    /// Unix epoch, so that a restarted process is a new incarnation.
    ///
    /// Set it explicitly only if the clock cannot be trusted to move forward across restarts;
    /// a restart should use a higher value than the previous run. One that reuses the value
    /// is repaired when peers still hold the previous run (the node rebases its state past
    /// it: `Stats::identity_rebases`), not when they already expired it (they keep the new
    /// run out until its heartbeat passes the old one's); design.md 4.2.
    pub generation: Option<u64>,
    /// Address the UDP socket and the TCP listener bind to (same port for both). Default:
    /// `0.0.0.0:7946`. Port 0 lets the operating system choose a port free for both.
    pub bind: SocketAddr,
    /// Address peers send gossip to, when it differs from `bind` (containers, NAT). Default:
    /// `None`, meaning the bound address, which then must not be unspecified (`0.0.0.0`, `::`).
    /// A port of 0 here means the bound port. An address no peer can have (unspecified,
    /// multicast, `255.255.255.255`), given here or taken from `bind`, is refused by
    /// validation.
    pub advertise: Option<SocketAddr>,
    /// Seed peers as `host:port` strings (IP literals or names). Names are resolved with DNS at
    /// start and every `dns_refresh`. An address no peer can have (unspecified, port 0,
    /// multicast, `255.255.255.255`) is refused by validation, and left out of DNS answers.
    /// Default: none; with no seed and no `dns`, the node forms a cluster of one until someone
    /// joins it.
    pub seeds: Vec<String>,
    /// A DNS name (`name:port`) whose A/AAAA records list the peers, e.g. a Kubernetes headless
    /// service. Re-resolved every `dns_refresh`, so peers added later are found. A failed
    /// lookup, or an answer with no address (a headless service with no ready pod), keeps the
    /// addresses last resolved for the name and is retried sooner (`dns_failures` counts it).
    /// Default: none.
    pub dns: Option<String>,
    /// How often seed names and `dns` are resolved again. Default: 30 s (LAN), 60 s (WAN).
    ///
    /// Shorter finds new peers behind a name sooner, at the cost of more DNS queries. While a
    /// resolution fails or finds no peer, it is retried sooner (1 s, doubling up to this).
    pub dns_refresh: Duration,
    /// Name servers (IP and port) to resolve names with. Default: `None`, meaning the system
    /// configuration (`/etc/resolv.conf` on Unix: name servers, search domains, ndots,
    /// timeouts), or `127.0.0.1:53` if it cannot be read. Custom servers get 2 s a try and
    /// two tries: a silent one fails a lookup in 4 s.
    pub dns_servers: Option<Vec<SocketAddr>>,
    /// Receive buffer of the UDP socket in bytes (`SO_RCVBUF`). Default: 4 MiB. 0 keeps the
    /// operating system's default.
    ///
    /// A larger buffer absorbs bursts (many peers answering at once) without drops; Linux caps
    /// it at `net.core.rmem_max` (often 208 KiB) unless that sysctl is raised.
    pub udp_recv_buffer: usize,
    /// Send buffer of the UDP socket in bytes (`SO_SNDBUF`). Default: 1 MiB. 0 keeps the
    /// operating system's default. Linux caps it at `net.core.wmem_max`.
    pub udp_send_buffer: usize,
    /// Longest wait for an outgoing TCP connection to be established. Default: 2 s (LAN),
    /// 5 s (WAN).
    ///
    /// Shorter gives up sooner on unreachable seeds (the core retries them with backoff);
    /// too short fails on slow links.
    pub tcp_connect_timeout: Duration,
    /// Longest time to receive one whole frame once its first byte arrived. Default: 5 s (LAN),
    /// 15 s (WAN). A peer slower than this is disconnected; this bounds how long a slow or
    /// hostile peer can hold a connection slot and a partly filled buffer.
    pub tcp_read_timeout: Duration,
    /// Longest time to write one whole frame. Default: 5 s (LAN), 15 s (WAN).
    pub tcp_write_timeout: Duration,
    /// A TCP connection with no frame read or written for this long is closed. Default: 10 s
    /// (LAN), 60 s (WAN). Longer reuses connections across exchanges; shorter frees slots.
    pub tcp_idle_timeout: Duration,
    /// Most TCP connections open at once, inbound and outbound together. Default: 64.
    /// Allowed: 1 to 65,536.
    ///
    /// When fewer than an eighth of the slots are free, the connections idle longest (at least
    /// 1 s) are closed to make room. An outbound connection waits up to `tcp_connect_timeout`
    /// for a slot; an inbound one finding none is closed at once. Both are counted, and the
    /// core retries later. Each connection holds at most a partly read frame and two queued
    /// ones (`protocol.max_frame_size` each), and frames read but not yet handled hold at
    /// most four more in all, so this bounds the memory held by streams. With a keyring,
    /// addresses that are neither a member's advertised address nor a seed hold at most
    /// 64 KiB per connection and two of the largest frames in all (design.md 8); without
    /// one, anyone can be a member: keep strangers off the port.
    pub max_connections: usize,
    /// Most inbound TCP connections open at once from one IP address. Default: 16. Allowed: 1
    /// to 65,536; above `max_connections` it limits nothing. Loopback addresses are not
    /// limited (a local cluster has every peer on one). An IPv6 address outside the /64 of
    /// every known member (this node included) and seed counts under its /64 prefix, one
    /// host's usual share; within such a /64 (the cluster's own LAN or subnet), per address.
    ///
    /// A peer opens one connection at a time to each node, so this only matters when many
    /// nodes share an address (host networking, NAT). It keeps one address, a stranger's
    /// included, from taking every slot; a connection over the limit is closed at once and
    /// counted as refused.
    pub max_connections_per_ip: usize,
    /// Events buffered per subscriber before it is told it lagged. Default: 1,024. Allowed: 1
    /// to 16,777,216.
    ///
    /// A slow subscriber never slows gossip: events that do not fit are dropped for it and
    /// reported as [`Lagged`](super::Lagged).
    pub subscriber_buffer: usize,
    /// Seed of the node's random choices (peer selection). Default: `None`, meaning a hash of
    /// the name, generation and address, so each incarnation differs.
    pub rng_seed: Option<u64>,
    /// The gossip protocol's parameters (interval, fanout, detector, limits).
    pub protocol: Config,
}

impl RuntimeConfig {
    /// Preset for a data-centre network, with [`Config::lan`] as the protocol.
    pub fn lan(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            generation: None,
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            advertise: None,
            seeds: Vec::new(),
            dns: None,
            dns_refresh: Duration::from_secs(30),
            dns_servers: None,
            udp_recv_buffer: 4 << 20,
            udp_send_buffer: 1 << 20,
            tcp_connect_timeout: Duration::from_secs(2),
            tcp_read_timeout: Duration::from_secs(5),
            tcp_write_timeout: Duration::from_secs(5),
            tcp_idle_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_connections_per_ip: 16,
            subscriber_buffer: 1024,
            rng_seed: None,
            protocol: Config::lan(),
        }
    }

    /// Preset for links across regions, with [`Config::wan`] as the protocol and longer
    /// timeouts.
    pub fn wan(name: impl Into<String>) -> Self {
        Self {
            dns_refresh: Duration::from_secs(60),
            tcp_connect_timeout: Duration::from_secs(5),
            tcp_read_timeout: Duration::from_secs(15),
            tcp_write_timeout: Duration::from_secs(15),
            tcp_idle_timeout: Duration::from_secs(60),
            protocol: Config::wan(),
            ..Self::lan(name)
        }
    }

    /// Checks every rule, the protocol's included. [`start`](super::start) calls it.
    pub fn validate(&self) -> Result<(), RuntimeConfigError> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(RuntimeConfigError::Name {
                len: self.name.len(),
            });
        }
        self.protocol.validate()?;
        // Only the IP: an advertised port of 0 means the bound one, and binding port 0 takes
        // any free port, so the port peers are told is never 0.
        let advertise = self.advertise.unwrap_or(self.bind);
        if let Some(reason) = not_a_peer_ip(advertise.ip()) {
            return Err(match self.advertise {
                None if advertise.ip().to_canonical().is_unspecified() => {
                    RuntimeConfigError::AdvertiseUnspecified { bind: self.bind }
                }
                _ => RuntimeConfigError::AdvertiseNotAPeer { advertise, reason },
            });
        }
        let reach = Reach::of(self.bind);
        let unreachable = |ip: IpAddr| !reach.reaches(ip);
        if let Some(a) = self.advertise
            && unreachable(a.ip())
        {
            return Err(RuntimeConfigError::AdvertiseFamily {
                bind: self.bind,
                advertise: a,
            });
        }
        // Port 0 is refused by `split_host_port` already (as `Seed` or `Dns`).
        let refuse = |seed: &String, host: &str, port: u16| {
            let reason = not_a_peer(SocketAddr::new(host.parse().ok()?, port))?;
            Some(RuntimeConfigError::SeedNotAPeer {
                seed: seed.clone(),
                reason,
            })
        };
        for seed in &self.seeds {
            let (host, port) =
                split_host_port(seed).map_err(|reason| RuntimeConfigError::Seed {
                    seed: seed.clone(),
                    reason,
                })?;
            if let Some(e) = refuse(seed, host, port) {
                return Err(e);
            }
            if host.parse::<IpAddr>().is_ok_and(unreachable) {
                return Err(RuntimeConfigError::Seed {
                    seed: seed.clone(),
                    reason: reach.mismatch(),
                });
            }
        }
        if let Some(dns) = &self.dns {
            let (host, port) = split_host_port(dns).map_err(|reason| RuntimeConfigError::Dns {
                name: dns.clone(),
                reason,
            })?;
            if let Some(e) = refuse(dns, host, port) {
                return Err(e);
            }
            if host.parse::<IpAddr>().is_ok_and(unreachable) {
                return Err(RuntimeConfigError::Dns {
                    name: dns.clone(),
                    reason: reach.mismatch(),
                });
            }
        }
        if matches!(&self.dns_servers, Some(s) if s.is_empty()) {
            return Err(RuntimeConfigError::Zero("dns_servers"));
        }
        let positive = [
            (self.dns_refresh, "dns_refresh"),
            (self.tcp_connect_timeout, "tcp_connect_timeout"),
            (self.tcp_read_timeout, "tcp_read_timeout"),
            (self.tcp_write_timeout, "tcp_write_timeout"),
            (self.tcp_idle_timeout, "tcp_idle_timeout"),
        ];
        for (d, field) in positive {
            if d.is_zero() {
                return Err(RuntimeConfigError::Zero(field));
            }
            if d > MAX_DURATION {
                return Err(RuntimeConfigError::TooLong {
                    field,
                    max: MAX_DURATION,
                });
            }
        }
        // The socket options take a C int: larger sizes wrapped (4 GiB became 0, and Linux
        // then gave the smallest buffer).
        for (n, field) in [
            (self.udp_recv_buffer, "udp_recv_buffer"),
            (self.udp_send_buffer, "udp_send_buffer"),
        ] {
            if n > MAX_SOCKET_BUFFER {
                return Err(RuntimeConfigError::TooLarge {
                    field,
                    max: MAX_SOCKET_BUFFER,
                });
            }
        }
        let counts = [
            (self.max_connections, "max_connections", MAX_CONNECTIONS),
            (
                self.max_connections_per_ip,
                "max_connections_per_ip",
                MAX_CONNECTIONS,
            ),
            (
                self.subscriber_buffer,
                "subscriber_buffer",
                MAX_SUBSCRIBER_BUFFER,
            ),
        ];
        for (n, field, max) in counts {
            if n == 0 {
                return Err(RuntimeConfigError::Zero(field));
            }
            // tokio's semaphores and channels panic above about `usize::MAX / 8`.
            if n > max {
                return Err(RuntimeConfigError::TooLarge { field, max });
            }
        }
        Ok(())
    }
}

// The inner error is in the message, not also the `source` (see `crate::Error`'s `From`).
impl From<ConfigError> for RuntimeConfigError {
    fn from(e: ConfigError) -> Self {
        Self::Protocol(e)
    }
}

/// A [`RuntimeConfig`] rule was broken. Nothing was started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeConfigError {
    /// The node name is empty or longer than 255 bytes.
    #[error("node name must be 1 to 255 bytes, got {len}")]
    Name {
        /// Its length in bytes.
        len: usize,
    },
    /// The protocol configuration is invalid.
    #[error("invalid protocol config: {0}")]
    Protocol(ConfigError),
    /// Neither `advertise` nor `bind` gives an address peers can reach.
    #[error("bind address {bind} is unspecified; set `advertise` to an address peers can reach")]
    AdvertiseUnspecified {
        /// The bind address.
        bind: SocketAddr,
    },
    /// The address peers would be told to reach this node at (`advertise`, or `bind` when
    /// `advertise` is unset and `bind` is not unspecified) cannot be any peer's: an
    /// unspecified IP given as `advertise`, a multicast address or `255.255.255.255`
    /// (IPv4-mapped ones alike). Its port may be 0, meaning the bound port.
    #[error(
        "advertised address {advertise} cannot be a peer's address: {reason}; set `advertise` \
         to an address peers can reach"
    )]
    AdvertiseNotAPeer {
        /// The address refused (`advertise`, or `bind` when `advertise` is unset).
        advertise: SocketAddr,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// `advertise` is of an address family the socket bound to `bind` cannot use: IPv6 with
    /// an IPv4 `bind`, or IPv4 with a specific IPv6 one (only `[::]` takes both).
    #[error("advertise address {advertise} is of another address family than bind address {bind}")]
    AdvertiseFamily {
        /// The bind address.
        bind: SocketAddr,
        /// The advertised address.
        advertise: SocketAddr,
    },
    /// A seed is not `host:port`, or is an address of a family `bind` cannot reach.
    #[error("seed {seed:?}: {reason}")]
    Seed {
        /// The seed as given.
        seed: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A seed, or `dns` given as an IP address, cannot be any peer's address: unspecified
    /// (`0.0.0.0`, `::`), multicast, or the IPv4 broadcast address (port 0 is refused as
    /// [`Seed`](Self::Seed) or [`Dns`](Self::Dns)). None names a peer: multicast and
    /// broadcast reach many hosts or none, and an unspecified address means "this host" on
    /// Linux at most (write `127.0.0.1` for a peer on the same host).
    #[error("seed or dns {seed:?} cannot be a peer's address: {reason}")]
    SeedNotAPeer {
        /// The seed (or `dns`) as given.
        seed: String,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// The DNS name is not `name:port`, or is an address of a family `bind` cannot reach.
    #[error("dns {name:?}: {reason}")]
    Dns {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A field that must be positive (or non-empty) is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// A count is above its maximum (`max_connections` and `max_connections_per_ip`: 65,536;
    /// `subscriber_buffer`: 16,777,216 events; `udp_recv_buffer` and `udp_send_buffer`:
    /// 2^31 - 1 bytes).
    #[error("{field} is above the maximum of {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The largest accepted.
        max: usize,
    },
    /// A duration is longer than [`MAX_DURATION`](crate::MAX_DURATION) (365 days).
    #[error("{field} is longer than {max:?}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The longest accepted.
        max: Duration,
    },
}

/// Largest `udp_recv_buffer` and `udp_send_buffer` accepted: what `setsockopt` takes.
const MAX_SOCKET_BUFFER: usize = i32::MAX as usize;
/// Largest `max_connections` accepted.
const MAX_CONNECTIONS: usize = 1 << 16;
/// Largest `subscriber_buffer` accepted, in events.
const MAX_SUBSCRIBER_BUFFER: usize = 1 << 24;

/// The conventional gossip port of tidings.
pub const DEFAULT_PORT: u16 = 7946;

/// Splits `host:port` (`[v6]:port` for IPv6 literals) into its parts.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("missing :port")?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or("unbalanced [")?,
        None if host.contains(':') => return Err("IPv6 literals need brackets: [addr]:port"),
        None => host,
    };
    if host.is_empty() {
        return Err("empty host");
    }
    let port: u16 = port.parse().map_err(|_| "port is not a number 0-65535")?;
    if port == 0 {
        return Err("port 0");
    }
    Ok((host, port))
}

/// Which addresses a socket bound to an address can exchange datagrams with. An IPv6 socket
/// bound to `[::]` is dual-stack (`udp` turns `IPV6_V6ONLY` off); bound to a specific IPv6
/// address it reaches only IPv6 (Linux refuses IPv4 destinations with ENETUNREACH), and to an
/// IPv4-mapped one only IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    V4,
    V6,
    Both,
}

impl Reach {
    pub(crate) fn of(bind: SocketAddr) -> Self {
        match bind.ip() {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(ip) if ip.is_unspecified() => Self::Both,
            IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 counting as IPv4) is reachable.
    pub(crate) fn reaches(self, ip: IpAddr) -> bool {
        match self {
            Self::V4 => ip.to_canonical().is_ipv4(),
            Self::V6 => ip.to_canonical().is_ipv6(),
            Self::Both => true,
        }
    }

    /// Why an address is not reachable, for a validation error.
    fn mismatch(self) -> &'static str {
        match self {
            Self::V6 => "an IPv4 address, and `bind` is a specific IPv6 address (IPv6 only)",
            _ => "an IPv6 address, and `bind` is IPv4",
        }
    }
}

/// Which addresses this node takes as seeds: one rule for [`Handle::join`](super::Handle::join),
/// the configured IP literals and DNS answers. A seed is in canonical form (IPv4-mapped as
/// IPv4: peers bound to IPv4 send only to that), can be a peer's address (`not_a_peer`), is of
/// a family the socket reaches, and is none of this node's own addresses.
#[derive(Clone, Debug)]
pub(crate) struct SeedFilter {
    /// Which addresses the socket reaches.
    pub(crate) reach: Reach,
    /// This node's own addresses (advertised and bound), canonical.
    pub(crate) own: Vec<SocketAddr>,
}

impl SeedFilter {
    /// The filter of a node whose socket is bound to `bound` and which advertises `advertise`.
    pub(crate) fn new(bound: SocketAddr, advertise: SocketAddr) -> Self {
        Self {
            reach: Reach::of(bound),
            own: vec![canonical(advertise), canonical(bound)],
        }
    }

    /// `addr` as a seed (canonical); `None` if it is this node's own address, which is
    /// skipped rather than refused (a seed list shared by every node holds each of them).
    ///
    /// # Errors
    ///
    /// [`Error::NotAPeer`] for an address no peer can have, then [`Error::Unreachable`] for
    /// one of a family the socket cannot reach; each names the address in canonical form.
    pub(crate) fn check(&self, addr: SocketAddr) -> Result<Option<SocketAddr>, Error> {
        let addr = canonical(addr);
        if let Some(reason) = not_a_peer(addr) {
            return Err(Error::NotAPeer { addr, reason });
        }
        if !self.reach.reaches(addr.ip()) {
            return Err(Error::Unreachable { addr });
        }
        Ok((!self.own.contains(&addr)).then_some(addr))
    }

    /// The seeds among `addrs`, sorted, each once: the others are left out.
    pub(crate) fn seeds(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
        let mut seeds: Vec<SocketAddr> = addrs
            .into_iter()
            .filter_map(|a| self.check(a).ok().flatten())
            .collect();
        seeds.sort();
        seeds.dedup();
        seeds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration error at start says what is wrong once, however deep: in the
    /// message, not again as a source (anyhow printed it twice).
    #[test]
    fn a_start_config_error_is_told_once() {
        use std::error::Error as _;
        let inner = ConfigError::ClusterId { len: 0 };
        let e = super::super::StartError::from(RuntimeConfigError::from(inner));
        assert_eq!(
            e.to_string(),
            "invalid runtime config: invalid protocol config: cluster_id must be 1 to 64 \
             bytes, got 0"
        );
        assert!(e.source().is_none());
    }

    #[test]
    fn presets_are_valid_once_reachable() {
        let mut c = RuntimeConfig::lan("a");
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::AdvertiseUnspecified { bind: c.bind })
        );
        c.advertise = Some("10.0.0.1:0".parse().unwrap());
        c.validate().unwrap();
        let mut w = RuntimeConfig::wan("a");
        w.bind = "127.0.0.1:0".parse().unwrap();
        w.validate().unwrap();
    }

    #[test]
    fn bad_fields_give_specific_errors() {
        let mut c = RuntimeConfig::lan("");
        c.bind = "127.0.0.1:0".parse().unwrap();
        assert_eq!(c.validate(), Err(RuntimeConfigError::Name { len: 0 }));
        c.name = "a".into();
        c.seeds = vec!["nohost".into()];
        assert!(matches!(c.validate(), Err(RuntimeConfigError::Seed { .. })));
        // An IPv4 socket reaches no IPv6 seed (an IPv4-mapped one is IPv4).
        c.seeds = vec!["[::1]:7946".into(), "svc.ns:7946".into()];
        assert!(matches!(c.validate(), Err(RuntimeConfigError::Seed { .. })));
        c.seeds = vec!["[::ffff:10.0.0.2]:7946".into(), "svc.ns:7946".into()];
        c.validate().unwrap();
        // `[::]` takes both families; a specific IPv6 address only IPv6 (found by review:
        // `[::1]` was let through with an IPv4 seed, and no datagram ever got out).
        c.bind = "[::]:0".parse().unwrap();
        c.advertise = Some("[::1]:0".parse().unwrap());
        c.seeds = vec!["[::1]:7946".into(), "10.0.0.2:7946".into()];
        c.validate().unwrap();
        c.advertise = None;
        c.bind = "[::1]:0".parse().unwrap();
        assert!(matches!(c.validate(), Err(RuntimeConfigError::Seed { .. })));
        c.seeds = vec!["[::1]:7946".into()];
        c.validate().unwrap();
        c.advertise = Some("10.0.0.1:7946".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(RuntimeConfigError::AdvertiseFamily { .. })
        ));
        c.advertise = None;
        c.bind = "0.0.0.0:0".parse().unwrap();
        c.advertise = Some("[fd00::1]:0".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(RuntimeConfigError::AdvertiseFamily { .. })
        ));
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.advertise = None;
        c.seeds = vec![];
        c.dns = Some("[fd00::2]:7946".into());
        assert!(matches!(c.validate(), Err(RuntimeConfigError::Dns { .. })));
        c.dns = None;
        c.udp_recv_buffer = 1 << 32;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::TooLarge {
                field: "udp_recv_buffer",
                max: MAX_SOCKET_BUFFER
            })
        );
        c.udp_recv_buffer = MAX_SOCKET_BUFFER;
        c.validate().unwrap();
        c.dns = Some("svc:notaport".into());
        assert!(matches!(c.validate(), Err(RuntimeConfigError::Dns { .. })));
        c.dns = None;
        c.max_connections = 0;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::Zero("max_connections"))
        );
        c.max_connections = 1;
        c.validate().unwrap();
        c.max_connections_per_ip = MAX_CONNECTIONS + 1;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::TooLarge {
                field: "max_connections_per_ip",
                max: MAX_CONNECTIONS
            })
        );
        c.max_connections_per_ip = 0;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::Zero("max_connections_per_ip"))
        );
        c.max_connections_per_ip = 1;
        c.validate().unwrap();
        c.protocol.fanout = 0;
        assert!(matches!(c.validate(), Err(RuntimeConfigError::Protocol(_))));
    }

    #[test]
    fn durations_and_counts_past_their_maximum_are_refused() {
        let mut c = RuntimeConfig::lan("a");
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.tcp_idle_timeout = MAX_DURATION;
        assert_eq!(c.validate(), Ok(()));
        c.tcp_idle_timeout = Duration::MAX;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::TooLong {
                field: "tcp_idle_timeout",
                max: MAX_DURATION
            })
        );
        c.tcp_idle_timeout = Duration::from_secs(5);
        c.max_connections = usize::MAX;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::TooLarge {
                field: "max_connections",
                max: MAX_CONNECTIONS
            })
        );
        c.max_connections = 64;
        c.subscriber_buffer = usize::MAX;
        assert!(matches!(
            c.validate(),
            Err(RuntimeConfigError::TooLarge {
                field: "subscriber_buffer",
                ..
            })
        ));
        c.subscriber_buffer = 1024;
        c.protocol.leave_timeout = Duration::MAX;
        assert!(matches!(
            c.validate(),
            Err(RuntimeConfigError::Protocol(ConfigError::TooLong {
                field: "leave_timeout",
                ..
            }))
        ));
    }

    /// A seed (or `dns`) that no peer can have is refused with its own error, whatever the
    /// family of `bind`: gossip sent there reaches no single node. Port 0 stays a `Seed`
    /// error (it is refused while parsing).
    #[test]
    fn seeds_that_cannot_be_a_peer_are_refused() {
        let mut c = RuntimeConfig::lan("a");
        for bind in ["127.0.0.1:0", "[::]:0"] {
            c.bind = bind.parse().unwrap();
            c.advertise = Some("127.0.0.1:0".parse().unwrap());
            for seed in [
                "0.0.0.0:7946",
                "[::]:7946",
                "[::ffff:0.0.0.0]:7946",
                "224.0.0.1:7946",
                "[ff02::1]:7946",
                "255.255.255.255:7946",
            ] {
                c.seeds = vec!["10.0.0.2:7946".into(), seed.into()];
                assert!(
                    matches!(
                        c.validate(),
                        Err(RuntimeConfigError::SeedNotAPeer { seed: s, .. }) if s == seed
                    ),
                    "seed {seed} with bind {bind}: {:?}",
                    c.validate()
                );
                c.seeds = vec![];
                c.dns = Some(seed.into());
                assert!(
                    matches!(c.validate(), Err(RuntimeConfigError::SeedNotAPeer { .. })),
                    "dns {seed} with bind {bind}: {:?}",
                    c.validate()
                );
                c.dns = None;
            }
            c.seeds = vec!["10.0.0.2:0".into()];
            assert!(matches!(c.validate(), Err(RuntimeConfigError::Seed { .. })));
            c.seeds = vec!["10.0.0.255:7946".into(), "239.x.test:7946".into()];
            c.validate().unwrap();
            c.seeds = vec![];
        }
        let e = RuntimeConfigError::SeedNotAPeer {
            seed: "0.0.0.0:7946".into(),
            reason: "it is unspecified (0.0.0.0 or ::); a peer on this host is 127.0.0.1 or ::1",
        };
        assert_eq!(
            e.to_string(),
            "seed or dns \"0.0.0.0:7946\" cannot be a peer's address: it is unspecified (0.0.0.0 or ::); a peer on this host is 127.0.0.1 or ::1"
        );
    }

    /// An advertised address no peer can have is refused, given as `advertise` or taken from
    /// `bind`: unspecified, multicast, broadcast (IPv4-mapped ones alike), whatever its port.
    /// Before, only an unspecified IP was refused (and not an IPv4-mapped one, nor with an
    /// error naming `advertise`), and the node told its peers to reach it at a multicast or
    /// broadcast address. Port 0 stays valid (the bound port), and so do `0.0.0.0` and port 0
    /// as `bind` with an `advertise` set.
    #[test]
    fn an_advertise_address_no_peer_can_have_is_refused() {
        let mut c = RuntimeConfig::lan("a");
        for bind in ["0.0.0.0:0", "[::]:0", "127.0.0.1:7946"] {
            c.bind = bind.parse().unwrap();
            for advertise in [
                "0.0.0.0:7946",
                "[::]:7946",
                "[::ffff:0.0.0.0]:7946",
                "224.0.0.1:7946",
                "224.0.0.1:0",
                "[ff02::1]:7946",
                "[::ffff:239.1.1.1]:0",
                "255.255.255.255:7946",
            ] {
                let a: SocketAddr = advertise.parse().unwrap();
                c.advertise = Some(a);
                assert!(
                    matches!(
                        c.validate(),
                        Err(RuntimeConfigError::AdvertiseNotAPeer { advertise, .. })
                            if advertise == a
                    ),
                    "advertise {a} with bind {bind}: {:?}",
                    c.validate()
                );
            }
            c.advertise = Some("10.0.0.255:0".parse().unwrap());
            c.validate().unwrap();
        }
        c.advertise = None;
        for bind in ["224.0.0.1:7946", "[ff02::1]:0", "255.255.255.255:0"] {
            c.bind = bind.parse().unwrap();
            assert!(
                matches!(
                    c.validate(),
                    Err(RuntimeConfigError::AdvertiseNotAPeer { advertise, .. })
                        if advertise == c.bind
                ),
                "bind {bind}: {:?}",
                c.validate()
            );
        }
        c.bind = "[::ffff:0.0.0.0]:0".parse().unwrap();
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::AdvertiseUnspecified { bind: c.bind })
        );
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.validate().unwrap();
        let e = RuntimeConfigError::AdvertiseNotAPeer {
            advertise: "224.0.0.1:7946".parse().unwrap(),
            reason: "it is a multicast address",
        };
        assert_eq!(
            e.to_string(),
            "advertised address 224.0.0.1:7946 cannot be a peer's address: it is a multicast \
             address; set `advertise` to an address peers can reach"
        );
    }

    #[test]
    fn host_port_splits() {
        assert_eq!(split_host_port("a.b:1"), Ok(("a.b", 1)));
        assert_eq!(split_host_port("[::1]:2"), Ok(("::1", 2)));
        assert!(split_host_port("::1:2").is_err());
        assert!(split_host_port(":2").is_err());
        assert!(split_host_port("a:0").is_err());
    }

    /// The zero and empty values no other test covers are refused before anything starts:
    /// an empty `dns_servers` (a resolver with no server never resolves), a zero
    /// `dns_refresh` (the resolver would query in a tight loop) and a zero
    /// `subscriber_buffer` (tokio panics making a channel of capacity 0, at the first
    /// `subscribe`).
    #[test]
    fn empty_dns_servers_and_zero_refresh_or_buffer_are_refused() {
        let mut c = RuntimeConfig::lan("a");
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.validate().unwrap();
        c.dns_servers = Some(Vec::new());
        assert_eq!(c.validate(), Err(RuntimeConfigError::Zero("dns_servers")));
        c.dns_servers = Some(vec!["127.0.0.1:53".parse().unwrap()]);
        c.validate().unwrap();
        c.dns_refresh = Duration::ZERO;
        assert_eq!(c.validate(), Err(RuntimeConfigError::Zero("dns_refresh")));
        c.dns_refresh = Duration::from_secs(30);
        c.subscriber_buffer = 0;
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::Zero("subscriber_buffer"))
        );
        c.subscriber_buffer = 1;
        c.validate().unwrap();
    }

    /// Names of 1 to 255 bytes are valid, as documented (`MAX_NAME_LEN`); 256 is not.
    #[test]
    fn a_name_of_255_bytes_is_valid_and_256_is_not() {
        let mut c = RuntimeConfig::lan("x".repeat(MAX_NAME_LEN));
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.validate().unwrap();
        c.name = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            c.validate(),
            Err(RuntimeConfigError::Name {
                len: MAX_NAME_LEN + 1
            })
        );
        c.name = "x".into();
        c.validate().unwrap();
    }
}
