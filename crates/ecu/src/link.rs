//! A DoIP connection over TCP, both ends: framing from the byte stream and writing messages.

use diag::doip::{self, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest DoIP payload either side accepts (and the entity announces as maxDataSize).
pub const MAX_PAYLOAD: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(#[from] diag::DiagError),
}

/// One DoIP TCP connection.
pub struct Link {
    stream: TcpStream,
    buffer: Vec<u8>,
    version: u8,
    /// Bytes written and read, headers included (for the efficiency figure).
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Link {
    pub fn new(stream: TcpStream) -> Link {
        let _ = stream.set_nodelay(true);
        Link { stream, buffer: Vec::with_capacity(8192), version: doip::VERSION_2012, bytes_sent: 0, bytes_received: 0 }
    }

    pub async fn send(&mut self, message: &Message) -> Result<(), LinkError> {
        let bytes = message.encode(self.version);
        self.bytes_sent += bytes.len() as u64;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    /// The next message; errors of the peer's framing are answered by the caller.
    pub async fn receive(&mut self) -> Result<Message, LinkError> {
        loop {
            match doip::decode(&self.buffer, MAX_PAYLOAD) {
                Ok(Some((message, used))) => {
                    if self.buffer[0] != doip::VERSION_DEFAULT {
                        // Answer in the version the peer speaks.
                        self.version = self.buffer[0];
                    }
                    self.buffer.drain(..used);
                    return Ok(message);
                }
                Ok(None) => {}
                Err(e) => {
                    // Skip the bad header so a caller that only NACKs can go on.
                    let skip = doip::HEADER_LEN.min(self.buffer.len());
                    if !e.closes_connection() {
                        if let Ok(Some(header)) = doip::decode_header(&self.buffer, u32::MAX) {
                            let whole = doip::HEADER_LEN + header.length as usize;
                            if self.buffer.len() >= whole {
                                self.buffer.drain(..whole);
                                return Err(e.into());
                            }
                        }
                    }
                    self.buffer.drain(..skip);
                    return Err(e.into());
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            self.bytes_received += n as u64;
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
