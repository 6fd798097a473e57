//! The error type of the public API.

use crate::config::ConfigError;

/// Why a call failed. Every variant says what happened to the state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent. Nothing was started.
    #[error("invalid config: {0}")]
    Config(ConfigError),
    /// The key is empty or longer than `limits.max_key_len`. State is unchanged.
    #[error("key of {len} bytes is outside 1..={max}")]
    KeyLength {
        /// Key length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key starts with the reserved `tidings:` prefix. State is unchanged.
    #[error("keys starting with \"tidings:\" are reserved")]
    ReservedKey,
    /// The value is larger than `limits.max_value_len`. State is unchanged.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Value length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would exceed `limits.max_keys_per_node`. State is unchanged.
    #[error("node already holds the maximum of {max} keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// The write would exceed `limits.max_state_bytes_per_node`. State is unchanged.
    #[error("state would grow to {size} bytes, above the limit of {max}")]
    StateTooLarge {
        /// Size after the write.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A ring weight that is not a number from 0.01 to 100 (relative to 1.0; the ring keeps
    /// weights in hundredths, from 1 to [`MAX_WEIGHT`](crate::ring::MAX_WEIGHT)). State is
    /// unchanged.
    #[error("ring weight {weight} is outside 0.01..=100")]
    InvalidWeight {
        /// The weight asked for.
        weight: f64,
    },
    /// The node name is empty or longer than 255 bytes. Nothing was started.
    #[error("node name of {len} bytes is outside 1..=255")]
    NodeName {
        /// Name length in bytes.
        len: usize,
    },
    /// The node has left the cluster (or is shutting down, or a newer incarnation of its name
    /// replaced it); it accepts no more writes.
    #[error("node has left the cluster")]
    Left,
    /// An address given to join through is of a family this node's socket cannot reach (an
    /// IPv6 address for a node bound to IPv4). Nothing was joined.
    #[error("{addr} is of an address family this node's socket cannot reach")]
    Unreachable {
        /// The address refused.
        addr: std::net::SocketAddr,
    },
    /// An address given to join through, or a node's own address given to
    /// [`Node::new`](crate::Node::new), cannot be any peer's: unspecified (`0.0.0.0`, `::`),
    /// port 0, multicast, or the IPv4 broadcast address. Nothing was joined or created.
    #[error("{addr} cannot be a peer's address: {reason}")]
    NotAPeer {
        /// The address refused.
        addr: std::net::SocketAddr,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// A socket or resolver error in the runtime.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

// The inner error is in the message, so it is not also the `source`: error reporters that walk
// the chain (anyhow's) printed it twice (found by an operator's-eye review). The same for the
// runtime's configuration errors.
impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    /// A wrapped configuration error says what is wrong once: in the message, not again as
    /// its source.
    #[test]
    fn a_config_error_is_told_once() {
        let e = super::Error::from(crate::config::ConfigError::ClusterId { len: 0 });
        assert_eq!(
            e.to_string(),
            "invalid config: cluster_id must be 1 to 64 bytes, got 0"
        );
        assert!(e.source().is_none());
    }

    #[test]
    fn errors_are_send_sync_static() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<super::Error>();
        assert::<crate::config::ConfigError>();
    }
}
