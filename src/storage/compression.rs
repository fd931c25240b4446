//! The record codecs of v2 batches (the low three bits of a batch's attributes), for the parts
//! of storage that must look inside a compressed batch: the log cleaner, which inflates a
//! batch to filter its records and deflates the survivors again with the batch's own codec, and
//! the produce-side key check of compacted topics.
//!
//! Owner: pure functions, used on the shard that owns the partition. Inflation is bounded by
//! the caller's byte bound, so a small batch cannot grow memory without limit (a zip bomb is
//! answered `TooLarge`, never allocated).

use std::io::{Read, Write};

/// A v2 batch's codec, by its attribute code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    /// Raw snappy, or the xerial framing Java clients write (both are read; a batch is
    /// rewritten in the framing it came in).
    Snappy = 2,
    /// The lz4 frame format.
    Lz4 = 3,
    Zstd = 4,
}

/// Why records could not be inflated or deflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unknown compression type id {0}")]
    Unknown(i16),
    #[error("compressed records inflate past {0} bytes")]
    TooLarge(usize),
    #[error("invalid {codec:?} data: {reason}")]
    Invalid { codec: Codec, reason: String },
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Xerial framing: magic, version 1, compatible version 1, then (length, block) pairs.
const XERIAL_HEADER_BYTES: usize = 16;
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

impl Codec {
    /// The codec named by a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Codec, CodecError> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(CodecError::Unknown(other)),
        }
    }
}

/// Whether snappy data is in the xerial framing.
pub fn is_xerial(data: &[u8]) -> bool {
    data.len() >= XERIAL_HEADER_BYTES && &data[..8] == XERIAL_MAGIC
}

/// Inflates `data` (a compressed batch's records section), at most `bound` bytes.
pub fn decompress(codec: Codec, data: &[u8], bound: usize) -> Result<Vec<u8>, CodecError> {
    let invalid = |reason: String| CodecError::Invalid { codec, reason };
    // Grows with what the data inflates to, never reserving the bound up front (a bound of
    // tens of MiB reserved per batch would cost more than the inflating).
    let bounded = |reader: &mut dyn Read| -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity((data.len() * 4).min(bound));
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = reader
                .read(&mut chunk)
                .map_err(|e| invalid(e.to_string()))?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > bound {
                return Err(CodecError::TooLarge(bound));
            }
            out.extend_from_slice(&chunk[..n]);
        }
    };
    match codec {
        Codec::None => {
            if data.len() > bound {
                return Err(CodecError::TooLarge(bound));
            }
            Ok(data.to_vec())
        }
        Codec::Gzip => bounded(&mut flate2::read::MultiGzDecoder::new(data)),
        Codec::Lz4 => bounded(&mut lz4_flex::frame::FrameDecoder::new(data)),
        Codec::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::new(data).map_err(|e| invalid(e.to_string()))?;
            bounded(&mut decoder)
        }
        Codec::Snappy => {
            let mut out = Vec::new();
            if is_xerial(data) {
                let mut at = XERIAL_HEADER_BYTES;
                while at < data.len() {
                    let len = data
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                        .ok_or_else(|| invalid("block length truncated".to_string()))?;
                    at += 4;
                    let block = data
                        .get(at..at.saturating_add(len))
                        .ok_or_else(|| invalid("block truncated".to_string()))?;
                    at += len;
                    snappy_block(block, &mut out, bound)?;
                }
            } else {
                snappy_block(data, &mut out, bound)?;
            }
            Ok(out)
        }
    }
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, bound: usize) -> Result<(), CodecError> {
    let invalid = |e: snap::Error| CodecError::Invalid {
        codec: Codec::Snappy,
        reason: e.to_string(),
    };
    let len = snap::raw::decompress_len(block).map_err(invalid)?;
    if out.len() + len > bound {
        return Err(CodecError::TooLarge(bound));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(invalid)?;
    Ok(())
}

/// Deflates `data` with `codec`; `xerial` picks snappy's framing.
pub fn compress(codec: Codec, data: &[u8], xerial: bool) -> Result<Vec<u8>, CodecError> {
    let failed = |reason: String| CodecError::Invalid { codec, reason };
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2 + 64),
                flate2::Compression::default(),
            );
            encoder.write_all(data).map_err(|e| failed(e.to_string()))?;
            encoder.finish().map_err(|e| failed(e.to_string()))
        }
        Codec::Snappy if xerial => {
            let mut out = Vec::with_capacity(data.len() / 2 + XERIAL_HEADER_BYTES);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK_BYTES) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| failed(e.to_string()))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Codec::Snappy => snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(|e| failed(e.to_string())),
        Codec::Lz4 => {
            // Kafka's lz4 framing: 64 KiB independent blocks.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(data).map_err(|e| failed(e.to_string()))?;
            encoder.finish().map_err(|e| failed(e.to_string()))
        }
        Codec::Zstd => zstd::stream::encode_all(data, 3).map_err(|e| failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_inflation_is_bounded() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            for xerial in [false, true] {
                let packed = compress(codec, &data, xerial).unwrap();
                assert_eq!(codec == Codec::Snappy && xerial, is_xerial(&packed));
                assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data);
                assert_eq!(
                    decompress(codec, &packed, data.len() - 1),
                    Err(CodecError::TooLarge(data.len() - 1)),
                    "{codec:?}"
                );
            }
        }
        assert!(decompress(Codec::Gzip, b"not gzip", 100).is_err());
        assert!(matches!(
            Codec::from_attributes(5),
            Err(CodecError::Unknown(5))
        ));
    }
}
