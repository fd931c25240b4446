//! The metadata store's recovery (`metadata::store`): the snapshot parse and the replay of the
//! metadata log over it, which `MetadataStore::open` runs on the files of the data directory
//! before the broker listens. The replayed image is then serialised, as the next snapshot
//! does (`MetadataStore::snapshot` relies on images always serialising).
//!
//! Input: a flag byte, a length-prefixed snapshot (2 bytes of length), then the log's bytes.
//! Flag bit 0: recompute every log line's CRC-32C first, so the JSON and the replay behind the
//! CRC are reached; bit 1: start from the snapshot instead of the empty image.
//! Property: no panic, no abort, no allocation beyond libFuzzer's `-malloc_limit_mb`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringbroker::metadata::image::MetadataImage;
use ringbroker::metadata::store;
use ringbroker_fuzz::{Input, fix_metadata_line_crcs};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let snapshot = input.part();
    let mut image = if flags & 2 != 0 {
        match store::parse_snapshot(snapshot) {
            Ok(image) => image,
            Err(_) => return,
        }
    } else {
        MetadataImage::empty()
    };
    let log = if flags & 1 != 0 {
        fix_metadata_line_crcs(input.rest())
    } else {
        input.rest().to_vec()
    };
    let replayed = store::replay_log(&mut image, &log);
    assert!(replayed.good_len <= log.len());
    serde_json::to_vec(&image).expect("MetadataStore::snapshot expects images to serialise");
});
