//! What the controller quorum reads from peers and from its own disk (`cluster`): a peer frame
//! on the controller listener (`transport::decode_frame`, which checks size, cluster id and
//! sender before `wire::decode`), and the scan of `raft.log` at start (`raft_log::scan`).
//!
//! Input: a selector byte, then the bytes. Selector bit 0 clear: a peer frame body; a message
//! that decodes must encode back to bytes that decode to the same message. Bit 0 set: a log
//! file image; the scan must stay within the bytes and stop with a reason whenever it stops
//! short. Property: no panic, no abort, no allocation beyond libFuzzer's `-malloc_limit_mb`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbroker::cluster::{raft_log, transport, wire};
use uuid::Uuid;

const CLUSTER: Uuid = Uuid::from_u128(0x5eed);

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        // Half the inputs get the right cluster id and addressing, so the message codec is
        // reached rather than stopping at the frame header.
        let mut body = bytes.to_vec();
        if selector & 2 != 0 && body.len() >= 32 {
            body[..16].copy_from_slice(CLUSTER.as_bytes());
            body[16..24].copy_from_slice(&2u64.to_be_bytes());
            body[24..32].copy_from_slice(&1u64.to_be_bytes());
        }
        if let Ok(message) = transport::decode_frame(&body, CLUSTER, 1, &[1, 2, 3]) {
            let mut again = Vec::new();
            wire::encode(&message, &mut again);
            assert_eq!(wire::decode(&again).expect("re-encoded message decodes"), message);
        }
    } else {
        let found = raft_log::scan(bytes);
        assert!(found.valid_bytes <= bytes.len());
        assert!(found.valid_bytes == bytes.len() || found.stopped.is_some());
    }
});
