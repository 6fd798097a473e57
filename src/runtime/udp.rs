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

/// An address as this node's peers know it: IPv4-mapped IPv6 addresses (from a dual-stack
/// socket) become plain IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

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

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "10.1.2.3:7946".parse().unwrap();
        let mapped = to_socket(v4, true);
        assert!(mapped.is_ipv6());
        assert_eq!(canonical(mapped), v4);
        assert_eq!(to_socket(v4, false), v4);
    }
}
