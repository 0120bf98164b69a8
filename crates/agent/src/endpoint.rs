//! The agent's HTTP endpoint, on the node's address; its port is published in the Node's
//! `daemonEndpoints.kubeletEndpoint`, where the API server (and Prometheus) find it:
//! - `GET /containerLogs/{namespace}/{pod}/{container}`: container logs (see [`crate::logs`]);
//! - `GET /metrics`: Prometheus exposition of the node's and containers' usage;
//! - `GET /stats/summary`: the kubelet Summary API subset behind `kubectl top`;
//! - `GET /exec/{namespace}/{pod}/{container}`: `kubectl exec`, upgraded to a WebSocket (see
//!   [`crate::exec`]);
//! - `GET /portForward/{namespace}/{pod}`: `kubectl port-forward`, upgraded to SPDY (see
//!   [`crate::port_forward`]).
//!
//! It speaks minimal HTTP/1.0: one request per connection, the body ends with the connection.
//! With TLS (the API server has TLS on), the endpoint presents the node's certificate and
//! serves only clients whose certificate the car's CA issued to `system:masters` (the API
//! server itself, administrators, a Prometheus given an admin certificate).

use crate::stats::{ContainerKey, Stats};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The group whose members may use the endpoint.
const ALLOWED_GROUP: &str = "system:masters";

/// Serves until `shutdown` fires; over TLS with `tls`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    log_dir: PathBuf,
    stats: Arc<Stats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let log_dir = log_dir.clone();
                let stats = stats.clone();
                let shutdown = shutdown.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let result = match acceptor {
                        None => handle(stream, log_dir, &stats, shutdown).await,
                        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(mut stream)) => {
                                let allowed = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .and_then(|cert| pki::certificate_subject(cert).ok())
                                    .is_some_and(|subject| subject.organizations.iter().any(|g| g == ALLOWED_GROUP));
                                if allowed {
                                    handle(stream, log_dir, &stats, shutdown).await
                                } else {
                                    let refused = "this endpoint serves the API server only\n";
                                    let _ = reply(&mut stream, "403 Forbidden", "text/plain", refused).await;
                                    stream.shutdown().await
                                }
                            }
                            Ok(Err(e)) => Err(e),
                            Err(_) => Ok(()),
                        },
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "agent endpoint request ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(
    mut stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    log_dir: PathBuf,
    stats: &Stats,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
            .map(String::from)
    };
    let accept = header("accept").unwrap_or_default();
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let query: HashMap<&str, &str> = raw_query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answered = match parts.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            crate::logs::container_logs(&mut stream, &log_dir, [namespace, pod, container], &query, shutdown).await
        }
        [kind @ ("exec" | "attach"), namespace, pod, container] => {
            let key = ContainerKey {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                container: container.to_string(),
            };
            let query = form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect();
            let request = crate::exec::ExecRequest { key, attach: *kind == "attach", query, header: &header };
            // The upgraded stream is the session's: it closes it itself.
            return crate::exec::serve(stream, request, stats).await;
        }
        ["portForward", namespace, pod] => {
            // The upgraded stream is the session's: it closes it itself.
            return crate::port_forward::serve(stream, namespace, pod, &header, stats).await;
        }
        ["metrics"] => {
            let (content_type, body) = stats.metrics(&accept);
            reply(&mut stream, "200 OK", content_type, &body).await
        }
        ["stats", "summary"] => reply(&mut stream, "200 OK", "application/json", &stats.summary().to_string()).await,
        _ => reply(&mut stream, "404 Not Found", "text/plain", "no such endpoint\n").await,
    };
    // The body ends with the connection; over TLS that takes a close_notify.
    answered?;
    stream.shutdown().await
}

pub async fn reply(
    stream: &mut (impl AsyncWrite + Unpin),
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!("HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}
