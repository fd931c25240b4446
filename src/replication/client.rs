//! A Kafka protocol client connection from this broker to another one, for the requests a
//! follower sends its leader (Fetch, OffsetForLeaderEpoch, ListOffsets).
//!
//! Owner: the task that opened it (a follower fetcher on one shard); one request at a time,
//! so responses need no matching beyond the correlation id check. Awaits socket I/O under the
//! bounds given: `connect` within the connect timeout, every `call` within its own deadline.
//!
//! The codec is the `kafka-protocol` crate's (the same the protocol front decodes with), not
//! the front's `kafka/` module, which is above this layer. A response frame longer than
//! `REPLICA_RESPONSE_BYTES_MAX` or one that does not decode closes the connection with an
//! error naming the problem: the peer is another broker, but its bytes are still input.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::limits::REPLICA_RESPONSE_BYTES_MAX;

/// Why a call to another broker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made or broke.
    #[error("connection to broker at {addr}: {source}")]
    Io {
        /// The peer.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No answer within the deadline.
    #[error("broker at {addr} did not answer within {ms} ms")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// The deadline.
        ms: u64,
    },
    /// The answer could not be used.
    #[error("broker at {addr} sent a response that cannot be read: {why}")]
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        why: String,
    },
}

/// One connection. See the module documentation.
#[derive(Debug)]
pub struct BrokerClient {
    addr: SocketAddr,
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
}

impl BrokerClient {
    /// Connects to `addr` within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        client_id: String,
        timeout: Duration,
    ) -> Result<BrokerClient, ClientError> {
        let connecting = glommio::timer::timeout(timeout, async {
            TcpStream::connect(addr)
                .await
                .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e.to_string())))
        });
        let stream = match connecting.await {
            Ok(stream) => stream,
            Err(glommio::GlommioError::TimedOut(_)) => {
                return Err(ClientError::Timeout {
                    addr,
                    ms: timeout.as_millis() as u64,
                });
            }
            Err(err) => {
                return Err(ClientError::Io {
                    addr,
                    source: std::io::Error::other(err.to_string()),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(BrokerClient {
            addr,
            stream,
            client_id: StrBytes::from_string(client_id),
            next_correlation_id: 1,
        })
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `body` as version `version` of its API and waits for the answer, at most
    /// `deadline`. A failed call leaves the connection unusable: drop it and connect again.
    pub async fn call<R: Request>(
        &mut self,
        body: &R,
        version: i16,
        deadline: Duration,
    ) -> Result<R::Response, ClientError> {
        let addr = self.addr;
        let protocol = |why: String| ClientError::Protocol { addr, why };
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::with_capacity(256);
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(|e| protocol(format!("cannot encode the request header: {e}")))?;
        body.encode(&mut frame, version)
            .map_err(|e| protocol(format!("cannot encode the request: {e}")))?;
        let length = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let mut size = [0u8; 4];
            self.stream.read_exact(&mut size).await?;
            let size = u32::from_be_bytes(size) as usize;
            if size > REPLICA_RESPONSE_BYTES_MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response of {size} bytes is past {REPLICA_RESPONSE_BYTES_MAX}"),
                ));
            }
            let mut payload = vec![0u8; size];
            self.stream.read_exact(&mut payload).await?;
            Ok(Bytes::from(payload))
        };
        let payload = match glommio::timer::timeout(deadline, async {
            exchange.await.map_err(glommio::GlommioError::IoError)
        })
        .await
        {
            Ok(payload) => payload,
            Err(glommio::GlommioError::TimedOut(_)) => {
                return Err(ClientError::Timeout {
                    addr,
                    ms: deadline.as_millis() as u64,
                });
            }
            Err(glommio::GlommioError::IoError(source)) => {
                return Err(ClientError::Io { addr, source });
            }
            Err(other) => {
                return Err(ClientError::Io {
                    addr,
                    source: std::io::Error::other(other.to_string()),
                });
            }
        };
        let mut payload = payload;
        let header = ResponseHeader::decode(
            &mut payload,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| protocol(format!("bad response header: {e}")))?;
        if header.correlation_id != correlation_id {
            return Err(protocol(format!(
                "correlation id {} answers no request (expected {correlation_id})",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut payload, version)
            .map_err(|e| protocol(format!("bad response body: {e}")))
    }
}
