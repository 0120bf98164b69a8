//! The agent's HTTP endpoint, on the node's address; its port is published in the Node's
//! `daemonEndpoints.kubeletEndpoint`, where the API server (and Prometheus) find it:
//! - `GET /containerLogs/{namespace}/{pod}/{container}`: container logs (see [`crate::logs`]);
//! - `GET /metrics`: Prometheus exposition of the node's and containers' usage;
//! - `GET /stats/summary`: the kubelet Summary API subset behind `kubectl top`.
//!
//! It speaks minimal HTTP/1.0: one request per connection, the body ends with the connection.
//! (Authentication of the channel comes with TLS on the API.)

use crate::stats::Stats;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    data_dir: PathBuf,
    stats: Arc<Stats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let data_dir = data_dir.clone();
                let stats = stats.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, data_dir, &stats, shutdown).await {
                        tracing::debug!(error = %e, "agent endpoint request ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    data_dir: PathBuf,
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
    let accept = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("accept")).map(|(_, v)| v.trim()))
        .unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            crate::logs::container_logs(&mut stream, &data_dir, [namespace, pod, container], &query, shutdown).await
        }
        ["metrics"] => {
            let (content_type, body) = stats.metrics(accept);
            reply(&mut stream, "200 OK", content_type, &body).await
        }
        ["stats", "summary"] => reply(&mut stream, "200 OK", "application/json", &stats.summary().to_string()).await,
        _ => reply(&mut stream, "404 Not Found", "text/plain", "no such endpoint\n").await,
    }
}

pub async fn reply(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}
