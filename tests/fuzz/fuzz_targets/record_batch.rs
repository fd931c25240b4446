//! The record batch path of a Produce v3+ partition, as the broker runs it on the client's
//! `records`: the connection shard's one-batch check (`produce::batch_for_owner`), the owner's
//! idempotence check on the header (`ProducerStateTable::check_and_reserve`), the validation
//! of every batch (`batch::validate_all`), then what the append and a later recovery do with a
//! valid batch: the base offset and LogAppendTime patches, and the producer state replay
//! (which reads a control batch's marker).
//!
//! Input: a flag byte, then the records. Flag bit 0: recompute the batch CRCs first, so the
//! checks behind the CRC are reached; bits 1-3: the Produce version (3 + n, up to 9).
//! Property: no panic, no abort, no allocation beyond libFuzzer's `-malloc_limit_mb`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringbroker::kafka::produce;
use ringbroker::storage::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use ringbroker::storage::producer_state::{ProducerStateTable, SequenceCheck};
use ringbroker_fuzz::{Input, fix_batch_crcs};

/// The default `max.message.bytes`.
const MAX_MESSAGE_BYTES: u32 = 1_048_588;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let mut records = input.rest().to_vec();
    if flags & 1 != 0 {
        fix_batch_crcs(&mut records);
    }
    let version = 3 + i16::from((flags >> 1) & 0x7).min(6);
    let Ok(Some(records)) = produce::batch_for_owner(version, Some(Bytes::from(records))) else {
        return;
    };
    let Some(header) = BatchHeader::view(&records[..BATCH_HEADER_BYTES.min(records.len())]) else {
        return;
    };
    let mut producers = ProducerStateTable::new();
    let check = producers.check_and_reserve(header, 0);
    let mut offset_count = 0i64;
    let valid = batch::validate_all(&records, MAX_MESSAGE_BYTES, |meta| {
        offset_count += meta.offset_count;
    });
    if check == SequenceCheck::Append {
        match valid {
            Ok(_) => producers.confirm(header, 0, offset_count - 1),
            Err(_) => producers.revert(header),
        }
    }
    if valid.is_err() {
        return;
    }
    let mut stored = records.to_vec();
    batch::patch_base_offset(&mut stored, 1 << 40);
    batch::patch_log_append_time(&mut stored, 1_700_000_000_000);
    let stored_header = BatchHeader::view(&stored).expect("validated above");
    let mut recovered = ProducerStateTable::new();
    recovered.replay(stored_header, &stored);
    let _ = batch::control_marker(&stored);
});
