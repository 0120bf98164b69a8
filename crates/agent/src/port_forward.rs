//! `kubectl port-forward` on the agent, as the kubelet serves it: `GET /portForward/{namespace}/
//! {pod}` upgraded to SPDY/3.1 (`portforward.k8s.io`), or to a WebSocket that carries the same
//! SPDY bytes (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and newer). For every
//! connection the client opens two streams with the same `requestid` and a `port`: `error`
//! (what went wrong, as text) and `data` (the connection's bytes). Each is connected to the
//! port on the pod's own `localhost`, in the pod's network namespace.

use crate::spdy::{self, Event, Writer};
use crate::stats::Stats;
use futures_util::{SinkExt as _, StreamExt as _};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Answers a port-forward request on `stream`: a refusal, or the session until the client ends it.
pub async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    namespace: &str,
    pod: &str,
    header: &(dyn Fn(&str) -> Option<String> + Sync),
    stats: &Stats,
) -> std::io::Result<()> {
    let Some(pid) = stats.any_running_pid(namespace, pod) else {
        let why = format!("pod {pod:?} has no running container on this node to forward to\n");
        return crate::endpoint::reply(&mut stream, "400 Bad Request", "text/plain", &why).await;
    };
    let upgrade = header("upgrade").unwrap_or_default().to_ascii_lowercase();
    let offered = header("sec-websocket-protocol").unwrap_or_default();
    let label = format!("{namespace}/{pod}");
    if upgrade == "spdy/3.1" {
        stream.write_all(crate::exec::switching_to_spdy(PROTOCOL).as_bytes()).await?;
        let (read, write) = tokio::io::split(stream);
        return run(read, write, pid, label).await;
    }
    let key = header("sec-websocket-key");
    let (true, true, Some(key)) =
        (upgrade == "websocket", offered.split(',').any(|p| p.trim() == TUNNEL_PROTOCOL), key)
    else {
        let why = format!("port forwarding takes a SPDY/3.1 upgrade or a WebSocket with {TUNNEL_PROTOCOL}\n");
        return crate::endpoint::reply(&mut stream, "400 Bad Request", "text/plain", &why).await;
    };
    stream.write_all(crate::exec::switching_to_websocket(&key, TUNNEL_PROTOCOL).as_bytes()).await?;
    let socket = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    // The WebSocket's binary messages are a byte stream of SPDY: bridge it to a pipe.
    let (near, far) = tokio::io::duplex(64 * 1024);
    let (mut far_read, mut far_write) = tokio::io::split(far);
    let (mut sink, mut messages) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            match message {
                Message::Binary(bytes) if far_write.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = far_write.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = far_read.read(&mut buf).await {
            if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(crate::exec::normal_close()).await;
    });
    let (read, write) = tokio::io::split(near);
    run(read, write, pid, label).await
}

/// The streams of one connection as they are opened: its error stream, its data stream.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

async fn run<R, W>(read: R, write: W, pid: i32, pod: String) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, writer) = spdy::session(read, write);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Bytes the client sends on a data stream, to that connection's socket.
    let mut inbound: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    while let Some(event) = reader.next().await? {
        match event {
            Event::Opened { stream, headers } => {
                writer.reply(stream).await?;
                let request = headers.get("requestid").cloned().unwrap_or_default();
                let pair = pairs.entry(request.clone()).or_default();
                let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
                match headers.get("streamtype").map(String::as_str) {
                    Some("error") => pair.error = Some(stream),
                    Some("data") => (pair.data, pair.port) = (Some(stream), port),
                    _ => writer.reset(stream).await?,
                }
                if let (Some(error), Some(data)) = (pair.error, pair.data) {
                    let port = pair.port;
                    pairs.remove(&request);
                    let (tx, rx) = mpsc::channel(16);
                    inbound.insert(data, tx);
                    tokio::spawn(forward(writer.clone(), error, data, pid, port, rx, pod.clone()));
                }
            }
            Event::Data { stream, data, fin } => {
                if let Some(tx) = inbound.get(&stream) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        inbound.remove(&stream);
                    }
                }
                if fin {
                    inbound.remove(&stream);
                }
            }
            Event::Reset { stream } => {
                inbound.remove(&stream);
            }
        }
    }
    let _ = writer.go_away().await;
    Ok(())
}

/// One forwarded connection: the pod's port, both ways, until either side ends.
async fn forward(
    writer: Writer,
    error: u32,
    data: u32,
    pid: i32,
    port: Option<u16>,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    pod: String,
) {
    let connected = match port {
        Some(port) => runtime::connect_in_network_of(pid, port).await.map_err(|e| (port, e.to_string())),
        None => Err((0, "the port is missing or not a number".to_string())),
    };
    let socket = match connected {
        Ok(socket) => socket,
        Err((port, why)) => {
            let message = format!("error forwarding port {port} to pod {pod}: failed to connect to localhost:{port} inside the pod: {why}");
            let _ = writer.data(error, message.as_bytes(), true).await;
            let _ = writer.data(data, &[], true).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = socket.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(bytes) = inbound.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n @ 1..) = from_pod.read(&mut buf).await {
        if writer.data(data, &buf[..n], false).await.is_err() {
            break;
        }
    }
    let _ = writer.data(data, &[], true).await;
    let _ = writer.data(error, &[], true).await;
    upstream.abort();
}
