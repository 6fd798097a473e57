//! Binding the gossip port: one UDP socket and one TCP listener on the same port number.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

/// Attempts at finding a port free for both UDP and TCP when the configured port is 0.
const PORT_ATTEMPTS: usize = 32;
/// Backlog of the TCP listener.
const LISTEN_BACKLOG: i32 = 128;

/// The bound pair.
pub(crate) struct Bound {
    pub(crate) udp: UdpSocket,
    pub(crate) tcp: TcpListener,
    pub(crate) local_addr: SocketAddr,
}

/// Binds UDP and TCP on `bind`. With port 0, the operating system picks a UDP port and the
/// listener takes the same number, retrying if TCP has it in use.
///
/// Address reuse: the TCP listener sets `SO_REUSEADDR`, so a restarted node rebinds while old
/// connections linger in `TIME_WAIT`. The UDP socket does not: UDP has no `TIME_WAIT`, and on
/// Linux `SO_REUSEADDR` would let a second process bind the same UDP port and silently take
/// part of this node's datagrams (the kernel may even hand the same ephemeral port to two such
/// sockets).
pub(crate) fn bind(bind: SocketAddr, recv_buffer: usize, send_buffer: usize) -> io::Result<Bound> {
    let attempts = if bind.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let udp = udp_socket(bind, recv_buffer, send_buffer)?;
        let local_addr = udp.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "UDP socket has no IP address")
        })?;
        match tcp_listener(local_addr) {
            Ok(tcp) => {
                let udp = UdpSocket::from_std(udp.into())?;
                let tcp = TcpListener::from_std(tcp.into())?;
                return Ok(Bound {
                    udp,
                    tcp,
                    local_addr,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && bind.port() == 0 => {
                debug!(%local_addr, "TCP port in use; trying another UDP port");
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

fn udp_socket(bind: SocketAddr, recv_buffer: usize, send_buffer: usize) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        // `[::]` accepts IPv4 too (as v4-mapped addresses); see `to_socket` / `canonical`.
        socket.set_only_v6(false)?;
    }
    if recv_buffer > 0 {
        socket.set_recv_buffer_size(recv_buffer)?;
    }
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(socket)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// An address as this node's peers know it (the core's rule, which its seeds follow too).
pub(crate) use crate::node::canonical;

/// The destination to pass to a socket of the given family: an IPv6 socket reaches IPv4 peers
/// through IPv4-mapped addresses.
pub(crate) fn to_socket(addr: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if socket_is_v6 => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => addr,
    }
}

/// Datagrams handled per wake-up before the outputs are flushed, so a burst costs one flush.
pub(crate) const RECV_BATCH: usize = 64;
/// Receive buffer: any UDP payload fits.
pub(crate) const RECV_BUF: usize = 65_536;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn binds_udp_and_tcp_on_one_port_v4_and_v6() {
        let b = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        assert_ne!(b.local_addr.port(), 0);
        assert_eq!(b.tcp.local_addr().unwrap(), b.local_addr);
        if let Ok(b6) = bind("[::1]:0".parse().unwrap(), 0, 0) {
            assert_eq!(b6.tcp.local_addr().unwrap().port(), b6.local_addr.port());
        }
    }

    /// Without `SO_REUSEADDR` on the UDP socket no second process can bind the port and
    /// take part of the node's datagrams (the TCP listener sets it, which is safe for TCP).
    #[tokio::test]
    async fn a_second_socket_cannot_bind_the_nodes_udp_port() {
        let b = bind("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap();
        let second = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        second.set_reuse_address(true).unwrap();
        let err = second.bind(&b.local_addr.into()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// Only IPv4-mapped addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
    /// IPv4 sender) become IPv4, port kept; every other IPv6 address stays as it is, the
    /// loopback `::1` and the deprecated IPv4-compatible `::a.b.c.d` included (which
    /// `Ipv6Addr::to_ipv4` would turn into 0.0.0.1 and a.b.c.d).
    #[test]
    fn canonical_turns_only_ipv4_mapped_addresses_into_ipv4() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(canonical(a("[::ffff:10.1.2.3]:7946")), a("10.1.2.3:7946"));
        assert_eq!(canonical(a("[::ffff:127.0.0.1]:1")), a("127.0.0.1:1"));
        for kept in [
            "10.1.2.3:7946",
            "[::1]:7946",
            "[::10.1.2.3]:7946",
            "[2001:db8::1]:7946",
            "[::]:7946",
        ] {
            assert_eq!(canonical(a(kept)), a(kept));
        }
    }

    /// Bound to `[::]`, the UDP socket and the TCP listener take IPv4 peers too (dual stack),
    /// and an IPv4 sender, seen as IPv4-mapped, is known by its plain IPv4 address. Skipped
    /// where the host has no IPv6.
    #[tokio::test(start_paused = true)]
    async fn a_socket_bound_to_the_ipv6_wildcard_takes_ipv4_peers_too() {
        let Ok(b) = bind("[::]:0".parse().unwrap(), 0, 0) else {
            return;
        };
        let port = b.local_addr.port();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"x", v4).unwrap();
        let mut buf = [0u8; 8];
        // Loopback queues the datagram before `send_to` returns: no wait, and a socket that
        // never gets it fails at once in paused time.
        let (n, from) = tokio::time::timeout(Duration::from_secs(60), b.udp.recv_from(&mut buf))
            .await
            .expect("an IPv4 datagram reaches a socket bound to [::]")
            .unwrap();
        assert_eq!(&buf[..n], b"x");
        assert!(from.is_ipv6(), "{from}");
        assert_eq!(canonical(from), sender.local_addr().unwrap());
        let _conn = std::net::TcpStream::connect(v4).expect("IPv4 connection to [::]");
        let (_, peer) = b.tcp.accept().await.unwrap();
        assert_eq!(canonical(peer).ip(), v4.ip());
    }

    /// The buffer sizes asked for are set, and 0 leaves the system's defaults (larger than
    /// the few kilobytes asked for here).
    #[tokio::test]
    async fn the_buffer_sizes_asked_for_are_set_and_zero_keeps_the_defaults() {
        let sizes = |b: &Bound| {
            let s = socket2::SockRef::from(&b.udp);
            (s.recv_buffer_size().unwrap(), s.send_buffer_size().unwrap())
        };
        let asked = sizes(&bind("127.0.0.1:0".parse().unwrap(), 4096, 8192).unwrap());
        let default = sizes(&bind("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap());
        assert!(asked.0 < asked.1, "receive and send set apart: {asked:?}");
        assert!(asked.0 < default.0, "{asked:?} {default:?}");
        assert!(asked.1 < default.1, "{asked:?} {default:?}");
    }

    /// `SO_REUSEADDR` on the listener: the port binds again while a connection the node
    /// closed lingers in `TIME_WAIT` (a restart on a fixed port). The node closes first, so the
    /// `TIME_WAIT` is on its side.
    #[tokio::test]
    async fn the_port_binds_again_while_a_closed_connection_lingers() {
        use std::io::Read;
        let b = bind("127.0.0.1:0".parse().unwrap(), 0, 0).unwrap();
        let addr = b.local_addr;
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = b.tcp.accept().await.unwrap();
        drop(accepted);
        // The node's FIN arrives: the client reads the end and closes its side in turn.
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        drop(client);
        drop(b);
        let again = bind(addr, 0, 0).expect("the port binds again");
        assert_eq!(again.local_addr, addr);
    }

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "10.1.2.3:7946".parse().unwrap();
        let mapped = to_socket(v4, true);
        assert!(mapped.is_ipv6());
        assert_eq!(canonical(mapped), v4);
        assert_eq!(to_socket(v4, false), v4);
    }
}
