//! Node identity and the small numeric newtypes that travel on the wire.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Incarnation number of a node process. Grows on every restart (by default it is the start time
/// in milliseconds since the Unix epoch), so a restarted process is a new incarnation whose state
/// replaces the old one's and is never merged with it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

/// Version of one entry in a node's key-value state. Each node numbers its own writes 1, 2, 3...;
/// versions of different nodes are unrelated.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

/// A node's heartbeat counter, bumped once per gossip interval by the node itself.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Heartbeat(pub u64);

/// The identity of one incarnation of a node: its name, its generation and the address peers
/// send gossip to.
///
/// Two processes with the same name are the same logical member; the one with the higher
/// generation wins. The address is where its UDP socket and TCP listener can be reached (the
/// advertised address, which may differ from the bind address behind NAT).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Stable member name, e.g. a Kubernetes pod name. At most 255 bytes.
    pub name: String,
    /// Incarnation; higher replaces lower.
    pub generation: Generation,
    /// Advertised gossip address (UDP and TCP on the same port).
    pub addr: SocketAddr,
}

impl NodeId {
    /// Builds an identity.
    pub fn new(name: impl Into<String>, generation: u64, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            generation: Generation(generation),
            addr,
        }
    }

    /// The compact wire reference for this identity (see [`Tag`]).
    pub(crate) fn tag(&self) -> Tag {
        Tag::of(&self.name, self.generation)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.name, self.generation.0, self.addr)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.generation.0)
    }
}

/// A 64-bit reference to a node incarnation, used in digests instead of the full identity.
///
/// `tag = xxh3_64(name ‖ 0xFF ‖ generation as u64 little-endian)`. A digest entry costs about
/// 15 bytes instead of repeating a name and an address; the full [`NodeId`] travels once, in the
/// first delta a peer receives for that node. 0xFF cannot occur in UTF-8, so no two
/// (name, generation) pairs hash the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Tag(pub(crate) u64);

impl Tag {
    pub(crate) fn of(name: &str, generation: Generation) -> Self {
        let mut buf = Vec::with_capacity(name.len() + 9);
        buf.extend_from_slice(name.as_bytes());
        buf.push(0xFF);
        buf.extend_from_slice(&generation.0.to_le_bytes());
        Self(xxhash_rust::xxh3::xxh3_64(&buf))
    }
}

// On the wire a NodeId is the array [name, generation, ip bytes (4 or 16), port]: 10 bytes of
// address instead of the 13+ of serde's externally tagged `SocketAddr` enum.
impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ip: &[u8] = match &self.addr.ip() {
            IpAddr::V4(v4) => &v4.octets(),
            IpAddr::V6(v6) => &v6.octets(),
        };
        let ip = bytes::Bytes::copy_from_slice(ip);
        (&self.name, self.generation.0, ip, self.addr.port()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, generation, ip, port): (String, u64, bytes::Bytes, u16) =
            Deserialize::deserialize(deserializer)?;
        if name.len() > MAX_NAME_LEN {
            return Err(D::Error::custom("node name too long"));
        }
        let ip = match ip.len() {
            4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(&ip);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&ip);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(D::Error::custom("bad address length")),
        };
        Ok(Self {
            name,
            generation: Generation(generation),
            addr: SocketAddr::new(ip, port),
        })
    }
}

/// Longest node name accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_TAG: u64 = 12_232_231_978_762_699_765;

    #[test]
    fn tag_is_pinned() {
        // Golden value: a change here changes the wire format.
        assert_eq!(Tag::of("a", Generation(1)).0, Tag::of("a", Generation(1)).0);
        assert_ne!(Tag::of("a", Generation(1)), Tag::of("a", Generation(2)));
        assert_ne!(Tag::of("a", Generation(1)), Tag::of("b", Generation(1)));
        assert_eq!(Tag::of("node-1", Generation(42)).0, GOLDEN_TAG);
    }

    #[test]
    fn node_id_round_trips_v4_and_v6() {
        for addr in ["10.1.2.3:7946", "[fe80::1]:7946"] {
            let id = NodeId::new("n", 9, addr.parse().unwrap());
            let bytes = rmp_serde::to_vec(&id).unwrap();
            let back: NodeId = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, id);
        }
        let id = NodeId::new(
            "node-1",
            1_700_000_000_000,
            "10.1.2.3:7946".parse().unwrap(),
        );
        // name 7 + generation 9 + ip 6 + port 3 + array header 1
        assert_eq!(rmp_serde::to_vec(&id).unwrap().len(), 26);
    }
}
