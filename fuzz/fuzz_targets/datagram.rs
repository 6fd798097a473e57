//! Arbitrary bytes into `Node::handle_datagram` of a node that knows two peers (plaintext or
//! keyed); see `common/harness.rs` for the input layout and the checks.
#![no_main]

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_raw(data, tidings::Channel::Datagram);
});
