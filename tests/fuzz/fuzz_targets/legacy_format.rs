//! The legacy message-format converters (`kafka::legacy_format`): up-conversion of a Produce
//! v0-2 partition's message set (magic 0 and 1, plain or gzip/snappy/lz4 wrappers) to one v2
//! batch, and down-conversion of stored v2 batches (plain or compressed) to a Fetch v0-3
//! message set of magic 0 or 1.
//!
//! Input: a flag byte, then for down-conversion the fetch offset (8 bytes), the byte limit
//! (2 bytes, in KiB) and a split point (2 bytes: the stored bytes come as two chunks, as the
//! storage may return them), then the bytes. Flag bit 0: down- rather than up-conversion;
//! bit 1: recompute the checksums first (message CRC-32s for up-conversion, batch CRC-32Cs
//! for down-conversion, as the storage only holds batches that passed validation); bit 2:
//! magic 1 rather than 0 for down-conversion.
//! Property: no panic, no abort, no allocation beyond libFuzzer's `-malloc_limit_mb` (inflated
//! payloads are bounded by `limits::LEGACY_CONVERSION_BYTES_MAX`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringbroker::kafka::legacy_format;
use ringbroker_fuzz::{Input, fix_batch_crcs, fix_message_crcs};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let fix = flags & 2 != 0;
    if flags & 1 == 0 {
        let mut message_set = input.rest().to_vec();
        if fix {
            fix_message_crcs(&mut message_set);
        }
        let _ = legacy_format::up_convert(&message_set);
        return;
    }
    let fetch_offset = input.i64();
    let limit_bytes = usize::from(u16::from_be_bytes([input.byte(), input.byte()])) * 1024;
    let split = usize::from(u16::from_be_bytes([input.byte(), input.byte()]));
    let mut stored = input.rest().to_vec();
    if fix {
        fix_batch_crcs(&mut stored);
    }
    let stored = Bytes::from(stored);
    let split = split.min(stored.len());
    let chunks = if split == 0 {
        vec![stored]
    } else {
        vec![stored.slice(..split), stored.slice(split..)]
    };
    let magic = u8::from(flags & 4 != 0);
    let _ = legacy_format::down_convert(&chunks, magic, fetch_offset, limit_bytes);
});
