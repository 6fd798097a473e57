//! Arbitrary bytes into `Node::handle_stream_frame` of a node that knows two peers (plaintext
//! or keyed); see `common/harness.rs` for the input layout and the checks. Run with a raised
//! `-max_len` (run.sh uses 65536): frames are larger than datagrams.
#![no_main]

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::run_raw(data, tidings::Channel::Stream);
});
