//! Kafka's framing: a 4-byte big-endian signed length, then that many bytes.
//!
//! Owner: used by each connection's reader task. A frame is read into one `Bytes` buffer that
//! the request handlers slice without copying. The buffer grows as bytes arrive rather than
//! being allocated at the claimed size, so a client that claims a large frame and sends
//! nothing costs no memory.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

/// Read granularity while a frame's body arrives.
const FRAME_READ_STEP_BYTES: usize = 256 * 1024;

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
    /// The size exceeds `socket.request.max.bytes`.
    #[error("frame size {size} exceeds socket.request.max.bytes ({max})")]
    TooLarge {
        /// The claimed size.
        size: i32,
        /// The limit.
        max: u32,
    },
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame's payload (without the size field).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: u32,
) -> Result<Bytes, FrameError> {
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
    let mut buf = BytesMut::with_capacity(size.min(FRAME_READ_STEP_BYTES));
    while buf.len() < size {
        let want = (size - buf.len()).min(FRAME_READ_STEP_BYTES);
        let start = buf.len();
        buf.resize(start + want, 0);
        let n = reader.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(FrameError::Truncated {
                read: 4 + buf.len(),
                expected: 4 + size,
            });
        }
    }
    Ok(buf.freeze())
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
    fn a_large_frame_arrives_whole() {
        let payload: Vec<u8> = (0..(FRAME_READ_STEP_BYTES * 3 + 17))
            .map(|i| i as u8)
            .collect();
        let mut cursor = Cursor::new(frame(&payload));
        let got = block_on(read_frame(&mut cursor, u32::MAX)).unwrap();
        assert_eq!(&got[..], &payload[..]);
    }
}
