//! `kubectl exec` on the agent, as the kubelet serves it: `GET /exec/{namespace}/{pod}/{container}
//! ?command=…&stdin=1&stdout=1&stderr=1&tty=1`, upgraded to a WebSocket speaking the
//! `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol, or to SPDY/3.1 with
//! `v4.channel.k8s.io` (kubectl 1.29 and older; a stream per channel). The API server passes
//! the client's upgrade through. Every message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the
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

/// The subprotocols served over WebSocket, preferred first, and the one over SPDY.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const SPDY_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long a SPDY client has to open the streams it asked for.
const STREAMS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the request asked for.
pub struct ExecRequest<'a> {
    pub key: ContainerKey,
    /// `kubectl attach` (to the container's own process) rather than `exec` (a new one).
    pub attach: bool,
    /// `command`, `stdin`, `stdout`, `stderr`, `tty` as the query gave them (repeated commands).
    pub query: Vec<(String, String)>,
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// Answers an exec request on `stream`: a refusal, or the upgraded session until the process ends.
pub async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    request: ExecRequest<'_>,
    stats: &Stats,
) -> std::io::Result<()> {
    let flag = |name: &str| request.query.iter().any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true"));
    let streams = Streams { stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty") };
    let argv: Vec<String> = request.query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let upgrade = (request.header)("upgrade").unwrap_or_default().to_ascii_lowercase();
    let offers = |header: &str, wanted: &str| {
        (request.header)(header).unwrap_or_default().split(',').any(|offered| offered.trim() == wanted)
    };
    let protocol = match upgrade.as_str() {
        "websocket" => PROTOCOLS.iter().copied().find(|p| offers("sec-websocket-protocol", p)),
        // SPDY (kubectl 1.29 and older): v4 of the channel protocol, in streams of its own.
        "spdy/3.1" => Some(SPDY_PROTOCOL).filter(|p| offers("x-stream-protocol-version", p)),
        _ => None,
    };
    let refusal = if !matches!(upgrade.as_str(), "websocket" | "spdy/3.1") {
        Some("Upgrade request required")
    } else if protocol.is_none() {
        Some("none of the offered protocols is served (v5.channel.k8s.io, v4.channel.k8s.io)")
    } else if argv.is_empty() && !request.attach {
        Some("you must specify at least one command for the container")
    } else if request.attach && streams.tty {
        Some("attaching to a terminal is not served: the container's process has none")
    } else if !(streams.stdin || streams.stdout || streams.stderr) {
        Some("you must specify at least 1 of stdin, stdout, stderr")
    } else {
        None
    };
    let target = match request.attach {
        true => stats.attach_target(&request.key).map(Target::Attach),
        false => stats.exec_target(&request.key).map(Target::Exec),
    };
    let no_stdin = matches!(&target, Some(Target::Attach(t)) if streams.stdin && t.stdin.is_none());
    let refusal =
        refusal.or(no_stdin.then_some("the container keeps no standard input to attach to (give it `stdin: true`)"));
    let (Some(protocol), None, Some(target)) = (protocol, refusal, target) else {
        let why = refusal.map(String::from).unwrap_or_else(|| {
            format!("container {:?} of pod {:?} is not running on this node", request.key.container, request.key.pod)
        });
        return crate::endpoint::reply(&mut stream, "400 Bad Request", "text/plain", &format!("{why}\n")).await;
    };
    tracing::info!(pod = %format!("{}/{}", request.key.namespace, request.key.pod), container = %request.key.container, command = ?argv, tty = streams.tty, protocol, "exec");
    if upgrade == "spdy/3.1" {
        stream.write_all(switching_to_spdy(protocol).as_bytes()).await?;
        return run_spdy(stream, target, &argv, streams).await;
    }
    let key = (request.header)("sec-websocket-key").unwrap_or_default();
    stream.write_all(switching_to_websocket(&key, protocol).as_bytes()).await?;
    let socket = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    run(socket, target, &argv, streams).await
}

/// What a session reaches: a new process in the container, or its own process.
pub enum Target {
    Exec(runtime::ExecTarget),
    Attach(runtime::AttachTarget),
}

/// A session's other end: the process when it is one of its own.
struct Source {
    process: Option<ExecSession>,
}

/// The output of a session by channel (ends once all of it came).
type Output = mpsc::Receiver<(u8, Vec<u8>)>;
type Input = Box<dyn AsyncWrite + Send + Sync + Unpin>;

impl Source {
    /// Opens the session's other end: it, its output and its input.
    fn open(
        target: Target,
        argv: &[String],
        streams: Streams,
    ) -> Result<(Source, Output, Option<Input>), runtime::RuntimeError> {
        let (tx, output) = mpsc::channel::<(u8, Vec<u8>)>(16);
        match target {
            Target::Exec(target) => {
                let mut session = ExecSession::start(&target, argv, streams)?;
                for (channel, reader) in [(STDOUT, session.stdout.take()), (STDERR, session.stderr.take())] {
                    if let Some(mut reader) = reader {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 32 * 1024];
                            // A terminal's reader ends in EIO once the process side is closed.
                            while let Ok(n) = reader.read(&mut buf).await {
                                if n == 0 || tx.send((channel, buf[..n].to_vec())).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                }
                let stdin = session.stdin.take();
                Ok((Source { process: Some(session) }, output, stdin))
            }
            Target::Attach(target) => {
                let mut lines = target.output.subscribe();
                tokio::spawn(async move {
                    loop {
                        let (stderr, line) = match lines.recv().await {
                            Ok(line) => line,
                            // A slow client misses lines rather than holding the container up.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        };
                        let wanted = if stderr { streams.stderr } else { streams.stdout };
                        let channel = if stderr { STDERR } else { STDOUT };
                        if wanted && tx.send((channel, line)).await.is_err() {
                            return;
                        }
                    }
                });
                // The container's stdin is shared by every attached client: a pipe per client
                // feeds it, and a client closing its side leaves the container's open.
                let stdin = target.stdin.filter(|_| streams.stdin).map(|shared| {
                    let (near, mut far) = tokio::io::duplex(16 * 1024);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = far.read(&mut buf).await {
                            let mut stdin = shared.lock().await;
                            if stdin.write_all(&buf[..n]).await.is_err() || stdin.flush().await.is_err() {
                                return;
                            }
                        }
                    });
                    Box::new(near) as Input
                });
                Ok((Source { process: None }, output, stdin))
            }
        }
    }

    /// The process's end; an attached session ends with the container's output instead.
    async fn wait(&mut self) -> runtime::Exit {
        match &mut self.process {
            Some(process) => process.wait().await,
            None => runtime::Exit { code: 0, signal: None, oom_killed: false },
        }
    }

    fn resize(&self, columns: u16, rows: u16) {
        if let Some(process) = &self.process {
            process.resize(columns, rows);
        }
    }
}

/// The `Status` of the error channel once the process ended.
fn outcome(exit: runtime::Exit, argv: &[String]) -> Value {
    match exit.code {
        0 => json!({"metadata": {}, "status": "Success"}),
        code => failure(
            &format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
            "NonZeroExitCode",
            Some(code),
        ),
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    socket: WebSocketStream<S>,
    target: Target,
    argv: &[String],
    streams: Streams,
) -> std::io::Result<()> {
    let (mut sink, mut incoming) = socket.split();
    let (mut session, mut output, mut stdin) = match Source::open(target, argv, streams) {
        Ok(opened) => opened,
        Err(e) => {
            let status = failure(&format!("{e}"), "InternalError", None);
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            let _ = sink.send(normal_close()).await;
            return Ok(());
        }
    };
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
            next = output.recv(), if output_open => match next {
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
            let _ = sink.send(frame(ERROR, outcome(exit, argv).to_string().as_bytes())).await;
            // A close with status 1000: clients read it as the end of every stream.
            let _ = sink.send(normal_close()).await;
            return Ok(());
        }
    }
}

/// The same session over SPDY: the client opens a stream per channel (`streamtype` header:
/// error, stdin, stdout, stderr, resize), the server waits for all it asked for, then runs.
async fn run_spdy<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    target: Target,
    argv: &[String],
    streams: Streams,
) -> std::io::Result<()> {
    let (read, write) = tokio::io::split(stream);
    let (mut reader, writer) = crate::spdy::session(read, write);
    let wanted = [
        ("error", true),
        ("stdin", streams.stdin),
        ("stdout", streams.stdout),
        ("stderr", streams.stderr && !streams.tty),
        ("resize", streams.tty),
    ];
    let mut ids: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    while ids.len() < wanted.iter().filter(|(_, w)| *w).count() {
        match tokio::time::timeout(STREAMS_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(crate::spdy::Event::Opened { stream, headers }))) => {
                writer.reply(stream).await?;
                if let Some(kind) = headers.get("streamtype") {
                    ids.insert(kind.clone(), stream);
                }
            }
            Ok(Ok(Some(_))) => {}
            // The client went away, or never opened its streams.
            _ => return Ok(()),
        }
    }
    let error_stream = ids.get("error").copied().unwrap_or(0);
    let (mut session, mut output, mut stdin) = match Source::open(target, argv, streams) {
        Ok(opened) => opened,
        Err(e) => {
            let status = failure(&format!("{e}"), "InternalError", None);
            writer.data(error_stream, status.to_string().as_bytes(), true).await?;
            return writer.go_away().await;
        }
    };
    let (stdin_stream, resize_stream) = (ids.get("stdin").copied(), ids.get("resize").copied());
    let mut exit = None;
    let mut output_open = true;
    loop {
        tokio::select! {
            event = reader.next() => match event {
                Ok(Some(crate::spdy::Event::Data { stream, data, fin })) if Some(stream) == stdin_stream => {
                    let mut input = vec![STDIN];
                    input.extend_from_slice(&data);
                    handle_input(&input, &mut stdin, &session).await;
                    if fin {
                        handle_input(&[CLOSE, STDIN], &mut stdin, &session).await;
                    }
                }
                Ok(Some(crate::spdy::Event::Data { stream, data, .. })) if Some(stream) == resize_stream => {
                    // One or more JSON sizes, one after another.
                    for size in serde_json::Deserializer::from_slice(&data).into_iter::<Value>().map_while(Result::ok) {
                        let mut input = vec![RESIZE];
                        input.extend_from_slice(size.to_string().as_bytes());
                        handle_input(&input, &mut stdin, &session).await;
                    }
                }
                Ok(Some(_)) => {}
                // The client went away: the process goes too (kill on drop).
                Ok(None) | Err(_) => return Ok(()),
            },
            next = output.recv(), if output_open => match next {
                Some((channel, data)) => {
                    let name = if channel == STDOUT { "stdout" } else { "stderr" };
                    if let Some(id) = ids.get(name) {
                        writer.data(*id, &data, false).await?;
                    }
                }
                None => output_open = false,
            },
            ended = session.wait(), if exit.is_none() => exit = Some(ended),
        }
        if let (Some(exit), false) = (exit, output_open) {
            for name in ["stdout", "stderr"] {
                if let Some(id) = ids.get(name) {
                    writer.data(*id, &[], true).await?;
                }
            }
            writer.data(error_stream, outcome(exit, argv).to_string().as_bytes(), true).await?;
            return writer.go_away().await;
        }
    }
}

/// One message from the client: stdin bytes, a resize, or (v5) the close of stdin.
async fn handle_input(data: &[u8], stdin: &mut Option<Input>, session: &Source) {
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

/// The answer that upgrades a request to a WebSocket speaking `protocol`, its accept key
/// derived from the client's `Sec-WebSocket-Key` (RFC 6455).
pub fn switching_to_websocket(key: &str, protocol: &str) -> String {
    use base64::Engine as _;
    let digest =
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{WEBSOCKET_GUID}").as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
}

/// The answer that upgrades a request to SPDY/3.1 carrying `protocol`.
pub fn switching_to_spdy(protocol: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\n\r\n"
    )
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
