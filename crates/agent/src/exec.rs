//! `kubectl exec` on the agent, as the kubelet serves it: `GET /exec/{namespace}/{pod}/{container}
//! ?command=…&stdin=1&stdout=1&stderr=1&tty=1`, upgraded to a WebSocket speaking the
//! `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol (the API server passes the client's
//! upgrade through). Every message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the
//! outcome (a `Status`: success, or `NonZeroExitCode` with the code, which kubectl exits with),
//! 4 terminal resize (`{"Width":…,"Height":…}`), and in v5 255 to close a channel (the client
//! closes stdin so).

use crate::stats::{ContainerKey, Stats};
use futures_util::{SinkExt as _, StreamExt as _};
use runtime::{ExecSession, Streams};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The subprotocols served, preferred first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the request asked for.
pub struct ExecRequest<'a> {
    pub key: ContainerKey,
    /// `command`, `stdin`, `stdout`, `stderr`, `tty` as the query gave them (repeated commands).
    pub query: Vec<(String, String)>,
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// Answers an exec request on `stream`: a refusal, or the upgraded session until the process ends.
pub async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: ExecRequest<'_>,
    stats: &Stats,
) -> std::io::Result<()> {
    let flag = |name: &str| request.query.iter().any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true"));
    let streams = Streams { stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty") };
    let argv: Vec<String> = request.query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let upgrade = (request.header)("upgrade").unwrap_or_default().to_ascii_lowercase();
    let offered = (request.header)("sec-websocket-protocol").unwrap_or_default();
    let protocol = PROTOCOLS.iter().find(|p| offered.split(',').any(|o| o.trim() == **p));
    let refusal = if upgrade != "websocket" {
        Some(if upgrade.starts_with("spdy") {
            "SPDY streams are not served by this agent: use kubectl 1.30 or newer, which speaks WebSocket"
        } else {
            "Upgrade request required"
        })
    } else if protocol.is_none() {
        Some("none of the offered subprotocols is served (v5.channel.k8s.io, v4.channel.k8s.io)")
    } else if argv.is_empty() {
        Some("you must specify at least one command for the container")
    } else if !(streams.stdin || streams.stdout || streams.stderr) {
        Some("you must specify at least 1 of stdin, stdout, stderr")
    } else {
        None
    };
    let target = stats.exec_target(&request.key);
    let (Some(protocol), None, Some(target), Some(key)) =
        (protocol, refusal, &target, (request.header)("sec-websocket-key"))
    else {
        let why = refusal.map(String::from).unwrap_or_else(|| {
            format!("container {:?} of pod {:?} is not running on this node", request.key.container, request.key.pod)
        });
        return crate::endpoint::reply(&mut stream, "400 Bad Request", "text/plain", &format!("{why}\n")).await;
    };
    let accept = accept_key(&key);
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let socket = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    tracing::info!(pod = %format!("{}/{}", request.key.namespace, request.key.pod), container = %request.key.container, command = ?argv, tty = streams.tty, "exec");
    run(socket, target, &argv, streams).await
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    socket: WebSocketStream<S>,
    target: &runtime::ExecTarget,
    argv: &[String],
    streams: Streams,
) -> std::io::Result<()> {
    let (mut sink, mut incoming) = socket.split();
    let mut session = match ExecSession::start(target, argv, streams) {
        Ok(session) => session,
        Err(e) => {
            let status = failure(&format!("{e}"), "InternalError", None);
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            let _ = sink.send(normal_close()).await;
            return Ok(());
        }
    };
    // Output of the process, by channel, to the one writer of the socket.
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    for (channel, output) in [(STDOUT, session.stdout.take()), (STDERR, session.stderr.take())] {
        if let Some(mut output) = output {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                // A terminal's reader ends in EIO once the process side is closed.
                while let Ok(n) = output.read(&mut buf).await {
                    if n == 0 || tx.send((channel, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    drop(tx);
    let mut stdin = session.stdin.take();
    let mut exit = None;
    let mut output_open = true;
    loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) => handle_input(&data, &mut stdin, &session).await,
                Some(Ok(Message::Text(text))) => handle_input(text.as_bytes(), &mut stdin, &session).await,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went away: the process goes too (kill on drop).
                    return Ok(());
                }
                Some(Ok(_)) => {}
            },
            output = rx.recv(), if output_open => match output {
                Some((channel, data)) => {
                    if sink.send(frame(channel, &data)).await.is_err() {
                        return Ok(());
                    }
                }
                None => output_open = false,
            },
            ended = session.wait(), if exit.is_none() => exit = Some(ended),
        }
        if let (Some(exit), false) = (exit, output_open) {
            let status = match exit.code {
                0 => json!({"metadata": {}, "status": "Success"}),
                code => failure(
                    &format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
                    "NonZeroExitCode",
                    Some(code),
                ),
            };
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            // A close with status 1000: clients read it as the end of every stream.
            let _ = sink.send(normal_close()).await;
            return Ok(());
        }
    }
}

/// One message from the client: stdin bytes, a resize, or (v5) the close of stdin.
async fn handle_input(
    data: &[u8],
    stdin: &mut Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
    session: &ExecSession,
) {
    let Some((&channel, payload)) = data.split_first() else { return };
    match channel {
        STDIN => {
            if let Some(writer) = stdin.as_mut() {
                if writer.write_all(payload).await.is_err() || writer.flush().await.is_err() {
                    *stdin = None;
                }
            }
        }
        RESIZE => {
            if let Ok(size) = serde_json::from_slice::<Value>(payload) {
                let dimension = |k: &str| size[k].as_u64().and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
                session.resize(dimension("Width"), dimension("Height"));
            }
        }
        CLOSE if payload.first() == Some(&STDIN) => {
            if let Some(mut writer) = stdin.take() {
                let _ = writer.shutdown().await;
            }
        }
        _ => {}
    }
}

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key` (RFC 6455).
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let digest =
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{WEBSOCKET_GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

pub fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// The `Status` kubectl reads from the error channel when the command did not succeed.
fn failure(message: &str, reason: &str, code: Option<i32>) -> Value {
    let mut status = json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason});
    if let Some(code) = code {
        status["details"] = json!({"causes": [{"reason": "ExitCode", "message": code.to_string()}]});
    }
    status
}
