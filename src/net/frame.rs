//! Kafka's framing: a 4-byte big-endian signed length, then that many bytes.
//!
//! Owner: used by each connection's reader task. A frame is read into one `Bytes` buffer that
//! the request handlers slice without copying. The buffer grows as bytes arrive (in steps of at
//! most what has arrived so far, and at most `FRAME_READ_STEP_BYTES`) rather than being
//! allocated at the claimed size, so a client that claims a large frame and trickles it, or
//! sends nothing, holds only about what it has sent.
//!
//! Every step of growth is first taken from the shard's request memory
//! (`queued.max.request.bytes`, shared out over the shards) when there is one: reading waits
//! while the shard holds its bound of unanswered request bytes, and the frame gives them back
//! when its `FrameMemory` is dropped, once its response is written.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};
use glommio::sync::{Semaphore, StaticPermit};

/// Largest step by which a frame's buffer grows while its body arrives.
const FRAME_READ_STEP_BYTES: usize = 256 * 1024;

/// First step of a frame's buffer; later steps are as large as what has arrived.
const FRAME_READ_FIRST_STEP_BYTES: usize = 16 * 1024;

/// One shard's budget of request bytes read and not yet answered, in bytes.
pub type RequestMemory = Rc<Semaphore>;

/// The request memory one frame holds; given back when dropped.
#[derive(Default)]
pub struct FrameMemory(Vec<StaticPermit>);

impl std::fmt::Debug for FrameMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameMemory({} steps)", self.0.len())
    }
}

/// Why no frame could be read. Every variant but `Closed` ends the connection with a log line.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames: the normal end.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("connection closed inside a frame ({read} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame (size field included) received.
        read: usize,
        /// Bytes the frame should have had.
        expected: usize,
    },
    /// The size field is negative.
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    /// The size field is zero: not even a request header fits.
    #[error("frame size is zero")]
    Empty,
    /// The size exceeds `socket.request.max.bytes` (or, before SASL authentication,
    /// `sasl.server.max.receive.size`).
    #[error(
        "frame size {size} exceeds {max} (socket.request.max.bytes, or sasl.server.max.receive.size before SASL authentication)"
    )]
    TooLarge {
        /// The claimed size.
        size: i32,
        /// The limit.
        max: u32,
    },
    /// The frame did not arrive whole within `request-read-timeout-ms` of its first byte.
    #[error(
        "request frame not complete within {timeout_ms} ms of its first byte (request-read-timeout-ms)"
    )]
    Stalled {
        /// The bound.
        timeout_ms: u64,
    },
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload (without the size field), with no request-memory bound.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: u32,
) -> Result<Bytes, FrameError> {
    read_frame_within(reader, max_bytes, None, &Cell::new(None))
        .await
        .map(|(frame, _)| frame)
}

/// Reads one frame's payload, taking each step of its buffer from `memory` first. `started`
/// holds the time the frame's first byte arrived until the frame is complete, so the caller can
/// bound how long a frame may take.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: u32,
    memory: Option<&RequestMemory>,
    started: &Cell<Option<Instant>>,
) -> Result<(Bytes, FrameMemory), FrameError> {
    let mut size_field = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = reader.read(&mut size_field[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated {
                    read: filled,
                    expected: 4,
                }
            });
        }
        if filled == 0 {
            started.set(Some(Instant::now()));
        }
        filled += n;
    }
    let size = i32::from_be_bytes(size_field);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    if size == 0 {
        return Err(FrameError::Empty);
    }
    if size as u32 > max_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_bytes,
        });
    }
    let size = size as usize;
    let mut held = FrameMemory::default();
    let mut buf = BytesMut::new();
    while buf.len() < size {
        let want = (size - buf.len())
            .min(buf.len().max(FRAME_READ_FIRST_STEP_BYTES))
            .min(FRAME_READ_STEP_BYTES);
        if let Some(memory) = memory {
            let permit = memory
                .acquire_static_permit(want as u64)
                .await
                .map_err(|err| FrameError::Io(std::io::Error::other(err.to_string())))?;
            held.0.push(permit);
        }
        let start = buf.len();
        buf.resize(start + want, 0);
        let mut at = start;
        while at < start + want {
            let n = reader.read(&mut buf[at..start + want]).await?;
            if n == 0 {
                return Err(FrameError::Truncated {
                    read: 4 + at,
                    expected: 4 + size,
                });
            }
            at += n;
        }
    }
    started.set(None);
    Ok((buf.freeze(), held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reads_consecutive_frames_then_closed() {
        let mut bytes = frame(b"hello");
        bytes.extend(frame(b"world!"));
        let mut cursor = Cursor::new(bytes);
        block_on(async {
            assert_eq!(&read_frame(&mut cursor, 100).await.unwrap()[..], b"hello");
            assert_eq!(&read_frame(&mut cursor, 100).await.unwrap()[..], b"world!");
            assert!(matches!(
                read_frame(&mut cursor, 100).await,
                Err(FrameError::Closed)
            ));
        });
    }

    #[test]
    fn bad_sizes_are_refused_before_reading_the_body() {
        block_on(async {
            let mut negative = Cursor::new((-5i32).to_be_bytes().to_vec());
            assert!(matches!(
                read_frame(&mut negative, 100).await,
                Err(FrameError::NegativeSize(-5))
            ));
            let mut huge = Cursor::new(i32::MAX.to_be_bytes().to_vec());
            assert!(matches!(
                read_frame(&mut huge, 100 << 20).await,
                Err(FrameError::TooLarge { .. })
            ));
            let mut zero = Cursor::new(0i32.to_be_bytes().to_vec());
            assert!(matches!(
                read_frame(&mut zero, 100).await,
                Err(FrameError::Empty)
            ));
        });
    }

    #[test]
    fn truncation_is_reported_in_the_size_and_the_body() {
        block_on(async {
            let mut short_size = Cursor::new(vec![0u8, 0]);
            assert!(matches!(
                read_frame(&mut short_size, 100).await,
                Err(FrameError::Truncated {
                    read: 2,
                    expected: 4
                })
            ));
            let mut bytes = 10i32.to_be_bytes().to_vec();
            bytes.extend_from_slice(b"abc");
            let mut short_body = Cursor::new(bytes);
            assert!(matches!(
                read_frame(&mut short_body, 100).await,
                Err(FrameError::Truncated {
                    read: 7,
                    expected: 14
                })
            ));
        });
    }

    #[test]
    fn a_frame_takes_request_memory_as_it_arrives_and_gives_it_back() {
        let payload = vec![7u8; FRAME_READ_STEP_BYTES * 2];
        let memory: RequestMemory = Rc::new(Semaphore::new(10 * FRAME_READ_STEP_BYTES as u64));
        let started = Cell::new(None);
        glommio::LocalExecutor::default().run(async {
            let mut cursor = Cursor::new(frame(&payload));
            let (got, held) = read_frame_within(&mut cursor, u32::MAX, Some(&memory), &started)
                .await
                .unwrap();
            assert_eq!(got.len(), payload.len());
            assert!(started.get().is_none());
            assert_eq!(
                memory.available(),
                10 * FRAME_READ_STEP_BYTES as u64 - payload.len() as u64
            );
            drop(held);
            assert_eq!(memory.available(), 10 * FRAME_READ_STEP_BYTES as u64);
        });
    }

    #[test]
    fn a_truncated_frame_gives_back_its_memory() {
        // A frame claiming 64 MiB of which 100 bytes arrive, then the peer goes away.
        let mut bytes = (64i32 << 20).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 100]);
        let memory: RequestMemory = Rc::new(Semaphore::new(1 << 30));
        let started = Cell::new(None);
        glommio::LocalExecutor::default().run(async {
            let mut cursor = Cursor::new(bytes);
            let result = read_frame_within(&mut cursor, u32::MAX, Some(&memory), &started).await;
            assert!(matches!(result, Err(FrameError::Truncated { .. })));
            assert!(started.get().is_some());
            // The permits went with the failed read.
            assert_eq!(memory.available(), 1 << 30);
        });
    }

    #[test]
    fn a_large_frame_arrives_whole() {
        let payload: Vec<u8> = (0..(FRAME_READ_STEP_BYTES * 3 + 17))
            .map(|i| i as u8)
            .collect();
        let mut cursor = Cursor::new(frame(&payload));
        let got = block_on(read_frame(&mut cursor, u32::MAX)).unwrap();
        assert_eq!(&got[..], &payload[..]);
    }
}
