//! The server side of SPDY/3.1, the stream multiplexing kubectl and client-go use for
//! `port-forward` (and kubectl 1.29 and older for `exec`), directly or tunneled in a WebSocket.
//!
//! No maintained Rust crate speaks SPDY, and only a small part is needed: the client opens
//! every stream (SYN_STREAM, headers naming what the stream is for), the server replies
//! (SYN_REPLY) and both send DATA until FIN. Header blocks are zlib-compressed with the
//! SPDY/3 dictionary (`spdy3.dict`), one compression context per direction for the whole
//! session. Flow control is not enforced, as in moby/spdystream that the clients use: the
//! server grants window updates for what it receives and sends without waiting.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Mutex;

/// The SPDY/3 header compression dictionary (from the SPDY/3 specification).
const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");
const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
/// The largest frame taken: header blocks and data of these streams are small.
const MAX_FRAME: usize = 1 << 20;

/// What the client did.
#[derive(Debug)]
pub enum Event {
    /// A new stream, with its headers (lower-case names).
    Opened {
        stream: u32,
        headers: HashMap<String, String>,
    },
    Data {
        stream: u32,
        data: Vec<u8>,
        fin: bool,
    },
    Reset {
        stream: u32,
    },
}

/// Reads the client's frames.
pub struct Reader<R> {
    io: R,
    inflate: Decompress,
    writer: Writer,
}

/// Writes frames; cheap to clone, shared by every stream's task.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Mutex<WriterState>>,
}

struct WriterState {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    deflate: Compress,
}

pub fn session<R: AsyncRead + Unpin, W: AsyncWrite + Send + Unpin + 'static>(read: R, write: W) -> (Reader<R>, Writer) {
    let mut deflate = Compress::new(Compression::default(), true);
    // A fresh compressor takes a dictionary before its first byte; it cannot fail then.
    let _ = deflate.set_dictionary(DICTIONARY);
    let writer = Writer { inner: Arc::new(Mutex::new(WriterState { io: Box::new(write), deflate })) };
    (Reader { io: read, inflate: Decompress::new(true), writer: writer.clone() }, writer)
}

fn invalid(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// The next thing the client did; None when it closed the connection. Pings are answered
    /// and window updates granted here.
    pub async fn next(&mut self) -> std::io::Result<Option<Event>> {
        loop {
            let mut head = [0u8; 8];
            match self.io.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            let flags = head[4];
            let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            if length > MAX_FRAME {
                return Err(invalid(format!("a SPDY frame of {length} bytes")));
            }
            let mut body = vec![0u8; length];
            self.io.read_exact(&mut body).await?;
            if head[0] & 0x80 == 0 {
                let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
                if !body.is_empty() {
                    self.writer.window_update(stream, body.len() as u32).await?;
                }
                return Ok(Some(Event::Data { stream, data: body, fin: flags & FLAG_FIN != 0 }));
            }
            let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
            if version != VERSION {
                return Err(invalid(format!("SPDY version {version}")));
            }
            let id = |b: &[u8]| b.get(..4).map(|x| u32::from_be_bytes([x[0] & 0x7f, x[1], x[2], x[3]]));
            match u16::from_be_bytes([head[2], head[3]]) {
                SYN_STREAM => {
                    let stream = id(&body).ok_or_else(|| invalid("short SYN_STREAM"))?;
                    let block = body.get(10..).ok_or_else(|| invalid("short SYN_STREAM"))?;
                    let headers = self.headers(block)?;
                    return Ok(Some(Event::Opened { stream, headers }));
                }
                RST_STREAM => {
                    let stream = id(&body).ok_or_else(|| invalid("short RST_STREAM"))?;
                    return Ok(Some(Event::Reset { stream }));
                }
                PING => self.writer.control(PING, 0, &body).await?,
                GOAWAY => return Ok(None),
                // Settings and window updates: nothing to keep (flow control is not enforced).
                SETTINGS | WINDOW_UPDATE => {}
                _ => {}
            }
        }
    }

    /// A header block: decompressed with the session's context, then its name/value pairs.
    fn headers(&mut self, block: &[u8]) -> std::io::Result<HashMap<String, String>> {
        let mut out = Vec::with_capacity(block.len() * 4);
        let mut input = block;
        loop {
            out.reserve(4096);
            let (before, produced) = (self.inflate.total_in(), out.len());
            match self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| invalid(e.to_string()))?;
                }
                Err(e) => return Err(invalid(format!("a SPDY header block does not decompress: {e}"))),
            }
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used.min(input.len())..];
            let stalled = used == 0 && out.len() == produced;
            if (input.is_empty() && out.len() < out.capacity()) || stalled {
                break;
            }
            if out.len() > MAX_FRAME {
                return Err(invalid("a SPDY header block too large"));
            }
        }
        let mut pairs = HashMap::new();
        let mut rest = out.as_slice();
        let count = take_u32(&mut rest).ok_or_else(|| invalid("short SPDY header block"))?;
        for _ in 0..count {
            let (Some(name), Some(value)) = (take_bytes(&mut rest), take_bytes(&mut rest)) else {
                return Err(invalid("short SPDY header block"));
            };
            pairs.insert(
                String::from_utf8_lossy(&name).to_ascii_lowercase(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
        Ok(pairs)
    }
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let value = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    *rest = &rest[4..];
    Some(value)
}

/// A length-prefixed string of a name/value block.
fn take_bytes(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let len = take_u32(rest)? as usize;
    let value = rest.get(..len)?.to_vec();
    *rest = &rest[len..];
    Some(value)
}

impl Writer {
    async fn control(&self, kind: u16, flags: u8, body: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(body);
        let mut state = self.inner.lock().await;
        state.io.write_all(&frame).await?;
        state.io.flush().await
    }

    /// Accepts a stream the client opened (headers: none needed).
    pub async fn reply(&self, stream: u32) -> std::io::Result<()> {
        let block = {
            let mut state = self.inner.lock().await;
            let mut out = Vec::with_capacity(64);
            // An empty name/value block.
            state
                .deflate
                .compress_vec(&0u32.to_be_bytes(), &mut out, FlushCompress::Sync)
                .map_err(|e| invalid(e.to_string()))?;
            out
        };
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&block);
        self.control(SYN_REPLY, 0, &body).await
    }

    /// Sends `data` on a stream; `fin` closes the server's side of it.
    pub async fn data(&self, stream: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let mut state = self.inner.lock().await;
        let mut chunks = data.chunks(16 * 1024).peekable();
        if data.is_empty() {
            let flags = if fin { FLAG_FIN } else { 0 };
            let mut frame = stream.to_be_bytes().to_vec();
            frame.push(flags);
            frame.extend_from_slice(&[0, 0, 0]);
            state.io.write_all(&frame).await?;
        }
        while let Some(chunk) = chunks.next() {
            let flags = if fin && chunks.peek().is_none() { FLAG_FIN } else { 0 };
            let mut frame = Vec::with_capacity(8 + chunk.len());
            frame.extend_from_slice(&stream.to_be_bytes());
            frame.push(flags);
            frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
            frame.extend_from_slice(chunk);
            state.io.write_all(&frame).await?;
        }
        state.io.flush().await
    }

    /// Ends a stream abnormally (the client opened one the server cannot serve).
    pub async fn reset(&self, stream: u32) -> std::io::Result<()> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&1u32.to_be_bytes()); // PROTOCOL_ERROR
        self.control(RST_STREAM, 0, &body).await
    }

    async fn window_update(&self, stream: u32, delta: u32) -> std::io::Result<()> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&delta.to_be_bytes());
        self.control(WINDOW_UPDATE, 0, &body).await?;
        // The session window too (SPDY/3.1: stream 0).
        let mut session = 0u32.to_be_bytes().to_vec();
        session.extend_from_slice(&delta.to_be_bytes());
        self.control(WINDOW_UPDATE, 0, &session).await
    }

    /// Ends the session.
    pub async fn go_away(&self) -> std::io::Result<()> {
        self.control(GOAWAY, 0, &[0u8; 8]).await?;
        self.inner.lock().await.io.shutdown().await
    }
}
