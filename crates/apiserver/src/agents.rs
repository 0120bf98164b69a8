//! Requests to node agents: the server reaches an agent at its Node's InternalIP and the port
//! published in `daemonEndpoints.kubeletEndpoint` (logs, usage summaries), as it would a kubelet.
//! With TLS on, both ends authenticate: the agent's certificate must be the CA's certificate of
//! that node (its name is the node's), and the server presents its own client certificate.

use crate::State;
use api::ApiError;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection to an agent, plain or TLS.
pub trait AgentIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AgentIo for T {}
pub type AgentStream = Box<dyn AgentIo>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's agent endpoint: (address, port), if it publishes one.
pub fn endpoint(node: &Value) -> Option<(String, u16)> {
    let address = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("127.0.0.1")
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
    Some((address, u16::try_from(port).ok().filter(|p| *p != 0)?))
}

/// Sends `GET path` to the node's agent; the stream is positioned after the request.
pub async fn request(state: &State, node: &Value, path: &str) -> Result<AgentStream, ApiError> {
    request_with(state, node, path, &[]).await
}

/// [`request`] with more headers (an upgrade's: then as HTTP/1.1).
pub async fn request_with(
    state: &State,
    node: &Value,
    path: &str,
    headers: &[(&str, String)],
) -> Result<AgentStream, ApiError> {
    let name = api::meta::name_of(node);
    let (address, port) = endpoint(node)
        .ok_or_else(|| ApiError::bad_request(format!("the agent of node {name:?} publishes no endpoint")))?;
    let unreachable = |e: std::io::Error| {
        ApiError::unavailable(format!("cannot reach the agent of node {name:?} at {address}:{port}: {e}"))
    };
    let connect = TcpStream::connect((address.as_str(), port));
    let late = || ApiError::unavailable(format!("the agent of node {name:?} did not answer in time"));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| late())?.map_err(unreachable)?;
    let mut stream: AgentStream = match &state.security {
        None => Box::new(tcp),
        Some(security) => {
            let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| ApiError::bad_request(format!("node name {name:?} cannot name a TLS server: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(security.agent_tls.clone());
            let handshake = connector.connect(server_name, tcp);
            Box::new(tokio::time::timeout(CONNECT_TIMEOUT, handshake).await.map_err(|_| late())?.map_err(unreachable)?)
        }
    };
    let version = if headers.is_empty() { "1.0" } else { "1.1" };
    let mut request = format!("GET {path} HTTP/{version}\r\nHost: {address}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(unreachable)?;
    Ok(stream)
}

/// The most an agent's answer may spend on its status line and headers, and how long.
const MAX_HEAD: usize = 64 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads an agent's answer up to its body: (status line, the body bytes read so far). An agent
/// that sends endless or slow headers is cut off.
pub async fn read_head(stream: &mut AgentStream, node_name: &str) -> Result<(String, Vec<u8>), ApiError> {
    let (head, body) = read_whole_head(stream, node_name).await?;
    Ok((head.lines().next().unwrap_or("").to_string(), body))
}

/// Like [`read_head`], with the whole head (status line and headers).
pub async fn read_whole_head(stream: &mut AgentStream, node_name: &str) -> Result<(String, Vec<u8>), ApiError> {
    let failed = |what: String| ApiError::unavailable(format!("the agent of node {node_name:?} {what}"));
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let body_start = loop {
        if head.len() > MAX_HEAD {
            return Err(failed(format!("sent more than {MAX_HEAD} bytes of headers")));
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| failed(format!("sent no complete headers within {} s", HEAD_TIMEOUT.as_secs())))?;
        let n = read.map_err(|e| failed(format!("failed the request: {e}")))?;
        if n == 0 {
            return Err(failed("closed the request".into()));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let body = head.split_off(body_start);
    Ok((String::from_utf8_lossy(&head).into_owned(), body))
}

/// An agent's refusal (its answer was not the one asked for) as the error to pass on: the
/// reason it gives, a line of text, what arrives of it in a moment and at most 64 KiB.
pub async fn refusal(mut stream: AgentStream, first: Vec<u8>) -> ApiError {
    let mut reason = first;
    let mut rest = (&mut stream).take(64 << 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), rest.read_to_end(&mut reason)).await;
    ApiError::bad_request(String::from_utf8_lossy(&reason).trim().to_string())
}

/// The most an agent's whole answer (metrics, a usage summary) may hold.
const MAX_ANSWER: u64 = 16 << 20;

/// `GET path` on the node's agent, whole, within `timeout` and [`MAX_ANSWER`]: its body when it
/// answered 200.
pub async fn get(state: &State, node: &Value, path: &str, timeout: Duration) -> Result<Vec<u8>, ApiError> {
    let name = api::meta::name_of(node).to_string();
    let exchange = async {
        let mut stream = request(state, node, path).await?;
        let (status_line, mut body) = read_head(&mut stream, &name).await?;
        let left = MAX_ANSWER.saturating_sub(body.len() as u64);
        (&mut stream)
            .take(left + 1)
            .read_to_end(&mut body)
            .await
            .map_err(|e| ApiError::unavailable(format!("the agent of node {name:?} failed the request: {e}")))?;
        if body.len() as u64 > MAX_ANSWER {
            return Err(ApiError::unavailable(format!(
                "the agent of node {name:?} answered more than {MAX_ANSWER} bytes"
            )));
        }
        if !status_line.contains(" 200 ") {
            return Err(ApiError::unavailable(format!(
                "the agent of node {name:?} answered {status_line}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ApiError::unavailable(format!("the agent of node {name:?} did not answer in time")))?
}

/// `GET path` on the node's agent, whole: its JSON answer.
pub async fn get_json(state: &State, node: &Value, path: &str, timeout: Duration) -> Result<Value, ApiError> {
    let body = get(state, node, path, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::unavailable(format!("the agent of node {:?} sent invalid JSON: {e}", api::meta::name_of(node)))
    })
}
