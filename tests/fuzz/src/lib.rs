//! Helpers shared by the fuzz targets in `fuzz_targets/`: cutting one input into the parts a
//! target needs, and putting checksums right so that mutations reach the code behind them.
//!
//! Owner: test code only, run by libFuzzer on one thread. A checksum the fuzzer cannot guess
//! would stop nearly every input at the first check; a target that asks for it (a flag bit of
//! its input) recomputes the checksums before the code under test sees the bytes, which is what
//! a client or a disk that writes well-formed but hostile contents would give it.

/// Bytes of a v2 batch header, as in `ringbroker::storage::batch`.
const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the CRC-32C in a v2 batch header; it covers `attributes` (byte 21) to the end.
const BATCH_CRC_AT: usize = 17;
const BATCH_ATTRIBUTES_AT: usize = 21;

/// Reads an input from the front: the target's flag byte, length-prefixed parts, the rest.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    pub fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.bytes.split_first() else {
            return 0;
        };
        self.bytes = rest;
        b
    }

    pub fn i64(&mut self) -> i64 {
        let mut out = [0u8; 8];
        for b in &mut out {
            *b = self.byte();
        }
        i64::from_be_bytes(out)
    }

    /// A part of at most `u16::MAX` bytes, its length in two bytes before it.
    pub fn part(&mut self) -> &'a [u8] {
        let len = u16::from_be_bytes([self.byte(), self.byte()]) as usize;
        let len = len.min(self.bytes.len());
        let (part, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        part
    }

    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Recomputes the CRC-32C of every v2 batch in `bytes`, walking them by their `batchLength`,
/// until one does not fit.
pub fn fix_batch_crcs(bytes: &mut [u8]) {
    let mut at = 0usize;
    while bytes.len() - at >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|l| (at + 12).checked_add(l))
            .filter(|&end| end <= bytes.len() && end >= at + BATCH_HEADER_BYTES)
        else {
            return;
        };
        let crc = crc32c::crc32c(&bytes[at + BATCH_ATTRIBUTES_AT..end]);
        bytes[at + BATCH_CRC_AT..at + BATCH_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// Recomputes the CRC-32 of every legacy (magic 0/1) message in the message set `bytes`
/// (offset i64, size i32, crc u32 over magic to the end), until one does not fit.
pub fn fix_message_crcs(bytes: &mut [u8]) {
    let mut at = 0usize;
    while bytes.len() - at >= 12 + 4 {
        let size = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        let Some(end) = usize::try_from(size)
            .ok()
            .filter(|&s| s >= 5)
            .and_then(|s| (at + 12).checked_add(s))
            .filter(|&end| end <= bytes.len())
        else {
            return;
        };
        let crc = crc32fast::hash(&bytes[at + 16..end]);
        bytes[at + 12..at + 16].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// Recomputes the CRC-32C of every line of a metadata log ("<crc32c, 8 hex> <json>\n").
pub fn fix_metadata_line_crcs(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if body.len() >= 10 && body[8] == b' ' {
            let crc = crc32c::crc32c(&body[9..]);
            out.extend_from_slice(format!("{crc:08x}").as_bytes());
            out.extend_from_slice(&line[8..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}
