//! A small client of the Kubernetes API as Axle serves it, for Axle's own processes (agents, the
//! ECU gateway, `axle up`, the CLI). It reads kubeconfigs, sends JSON requests, maps error
//! replies back to their `Status`, resolves `apiVersion`/`kind` to paths through discovery,
//! applies manifests with server-side apply, and follows watches.
//!
//! It is deliberately small: kubectl and the official client libraries are what users bring;
//! this crate only serves what Axle's components need.

pub mod events;
pub mod join;
mod registry;
pub mod table;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may wait for its reply (headers, and the body of a whole reply).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server keeps a watch open before the client watches again.
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` error.
    #[error("{message} ({code} {reason})")]
    Api { code: u16, reason: String, message: String },
    #[error("cannot reach the API server at {server}: {cause}")]
    Connect { server: String, cause: String },
    #[error("invalid reply from the API server: {0}")]
    Protocol(String),
    #[error("kubeconfig {path}: {cause}")]
    Kubeconfig { path: String, cause: String },
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: String,
    pub token: Option<String>,
    pub namespace: String,
    /// TLS for an `https` server: the CA its certificate must chain to, and the client
    /// certificate presented if any (see [`Config::with_tls`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Config {
    /// A configuration for `server` (http or https) with a bearer token, and no TLS settings.
    pub fn new(server: &str, token: Option<String>) -> Config {
        Config { server: server.trim_end_matches('/').to_string(), token, namespace: "default".into(), tls: None }
    }

    /// Trusts only `ca_pem` for the server's certificate and presents `identity` (replaceable
    /// while in use, for renewal).
    pub fn with_tls(mut self, ca_pem: &str, identity: Option<Arc<pki::Identity>>) -> Result<Config, ClientError> {
        let tls = pki::client_config(ca_pem, identity).map_err(|e| ClientError::Usage(e.to_string()))?;
        self.tls = Some(Arc::new(tls));
        Ok(self)
    }

    /// Reads the current context of a kubeconfig (server, CA, client certificate or bearer
    /// token, namespace).
    pub fn from_kubeconfig(path: &Path) -> Result<Config, ClientError> {
        let error = |cause: String| ClientError::Kubeconfig { path: path.display().to_string(), cause };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| error(e.to_string()))?;
        let current = doc["current-context"].as_str().unwrap_or("");
        let find = |list: &str, name: &str| -> Value {
            doc[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| name.is_empty() || e["name"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let context = find("contexts", current);
        let cluster = find("clusters", context["context"]["cluster"].as_str().unwrap_or(""));
        let user = find("users", context["context"]["user"].as_str().unwrap_or(""));
        let server = cluster["cluster"]["server"]
            .as_str()
            .ok_or_else(|| error("no cluster server in the current context".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Inline `*-data` (base64) or a file named beside the kubeconfig, as kubectl reads them.
        let material = |entry: &Value, field: &str| -> Result<Option<String>, ClientError> {
            if let Some(data) = entry[format!("{field}-data")].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| error(format!("{field}-data is not base64: {e}")))?;
                return String::from_utf8(bytes).map(Some).map_err(|_| error(format!("{field}-data is not PEM")));
            }
            match entry[field].as_str() {
                Some(file) => std::fs::read_to_string(base.join(file))
                    .map(Some)
                    .map_err(|e| error(format!("{field} {file}: {e}"))),
                None => Ok(None),
            }
        };
        let ca = material(&cluster["cluster"], "certificate-authority")?;
        let cert = material(&user["user"], "client-certificate")?;
        let key = material(&user["user"], "client-key")?;
        let mut config = Config::new(server, user["user"]["token"].as_str().map(String::from));
        config.namespace = context["context"]["namespace"].as_str().unwrap_or("default").to_string();
        if let Some(ca) = ca {
            let identity = match (cert, key) {
                (Some(cert_pem), Some(key_pem)) => {
                    Some(pki::Identity::new(&pki::Issued { cert_pem, key_pem }).map_err(|e| error(e.to_string()))?)
                }
                _ => None,
            };
            config = config.with_tls(&ca, identity).map_err(|e| error(e.to_string()))?;
        }
        Ok(config)
    }
}

type Http = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An API client; cheap to clone and share.
pub struct Client {
    config: Config,
    /// Replaced (with its pool) when the client certificate changes: the server learns who a
    /// connection is at its handshake, so connections made before keep the old identity.
    http: std::sync::RwLock<Http>,
    /// apiVersion/kind → (plural, namespaced), from discovery.
    kinds: Mutex<HashMap<(String, String), (String, bool)>>,
}

impl Client {
    pub fn new(config: Config) -> Client {
        let http = std::sync::RwLock::new(Client::connections(&config));
        Client { config, http, kinds: Mutex::new(HashMap::new()) }
    }

    /// Closes the idle connections: requests from now on connect anew (with the client
    /// certificate then current). Requests and watches under way finish on their connection.
    pub fn reset_connections(&self) {
        if let Ok(mut http) = self.http.write() {
            *http = Client::connections(&self.config);
        }
    }

    fn connections(config: &Config) -> Http {
        // A car's links fail silently (a cable, a switch, a sleeping ECU gateway): connects give
        // up, dead connections are found by TCP keepalive, and no request waits forever.
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(10)));
        connector.set_keepalive_interval(Some(Duration::from_secs(5)));
        connector.set_keepalive_retries(Some(3));
        connector.set_nodelay(true);
        // http:// stays plain; https:// needs the TLS settings (checked when sending).
        connector.enforce_http(false);
        let mut tls = config.tls.as_deref().cloned().unwrap_or_else(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
                .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        });
        // A session cache of its own: a resumed session would carry the identity of the
        // handshake it came from, not the certificate presented now. A client talks to one
        // server: room for its 8 TLS 1.3 tickets, not rustls's default of 32 servers.
        tls.resumption = rustls::client::Resumption::in_memory_sessions(8);
        // Over TLS the server and the client agree on HTTP/2 (ALPN): every request and watch of
        // a client shares one connection instead of one connection (with its TLS state and
        // buffers at both ends) each. Plain http:// stays HTTP/1.1. A link that dies silently is
        // found by the TCP keepalive above, for both.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sends a request; returns the body of a 2xx reply, or the server's Status as an error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        self.request_accepting(method, path, "application/json", content_type, body).await
    }

    /// Like [`Client::request`], asking for the reply in `accept` (e.g. a Table).
    pub async fn request_accepting(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let response = self.send(method, path, accept, content_type, body).await?;
        let status = response.status();
        let bytes = tokio::time::timeout(REPLY_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| {
                ClientError::Protocol(format!("the reply's body did not arrive within {} s", REPLY_TIMEOUT.as_secs()))
            })?
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(status_error(status, &bytes))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let content_type = body.as_ref().map(|_| ("Content-Type", content_type));
        self.send_with_headers(method, path, &[("Accept", accept)], content_type, body).await
    }

    /// Sends a request with extra headers; returns the reply whatever its status.
    async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<(&str, &str)>,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let uri = format!("{}{path}", self.config.server);
        if self.config.server.starts_with("https://") && self.config.tls.is_none() {
            return Err(ClientError::Connect {
                server: self.config.server.clone(),
                cause: "https needs the server's CA (certificate-authority in the kubeconfig, or --ca-file)".into(),
            });
        }
        let mut builder = Request::builder().method(method).uri(&uri);
        for (name, value) in headers.iter().chain(content_type.iter()) {
            builder = builder.header(*name, *value);
        }
        if let Some(token) = &self.config.token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Usage(format!("bad request {uri}: {e}")))?;
        let server = || self.config.server.clone();
        let http = match self.http.read() {
            Ok(http) => http.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        match tokio::time::timeout(REPLY_TIMEOUT, http.request(request)).await {
            Ok(reply) => reply.map_err(|e| ClientError::Connect { server: server(), cause: error_chain(&e) }),
            Err(_) => Err(ClientError::Connect {
                server: server(),
                cause: format!("no reply within {} s", REPLY_TIMEOUT.as_secs()),
            }),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        json(&self.request(Method::GET, path, "application/json", None).await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        json(&self.request(Method::POST, path, "application/json", Some(body.to_string().into_bytes())).await?)
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        json(&self.request(Method::PUT, path, "application/json", Some(body.to_string().into_bytes())).await?)
    }

    /// A JSON merge patch.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ClientError> {
        self.patch(path, "application/merge-patch+json", patch).await
    }

    /// A strategic merge patch (built-in kinds: lists such as `status.conditions` merge by key).
    pub async fn strategic_patch(&self, path: &str, patch: &Value) -> Result<Value, ClientError> {
        self.patch(path, "application/strategic-merge-patch+json", patch).await
    }

    async fn patch(&self, path: &str, content_type: &str, patch: &Value) -> Result<Value, ClientError> {
        json(&self.request(Method::PATCH, path, content_type, Some(patch.to_string().into_bytes())).await?)
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        json(&self.request(Method::DELETE, path, "application/json", None).await?)
    }

    /// The collection path of `apiVersion`/`kind` in `namespace` (discovery, cached).
    pub async fn collection_path(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<String, ClientError> {
        let (plural, namespaced) = self.resolve(api_version, kind).await?;
        let base =
            if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
        Ok(match (namespaced, namespace) {
            (true, Some(ns)) => format!("{base}/namespaces/{ns}/{plural}"),
            (true, None) => format!("{base}/namespaces/{}/{plural}", self.config.namespace),
            (false, _) => format!("{base}/{plural}"),
        })
    }

    async fn resolve(&self, api_version: &str, kind: &str) -> Result<(String, bool), ClientError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.kinds.lock().ok().and_then(|k| k.get(&key).cloned()) {
            return Ok(found);
        }
        let path =
            if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
        let list = self.get(&path).await.map_err(|e| match e {
            ClientError::Api { code: 404, .. } => {
                ClientError::Usage(format!("the server does not serve {api_version}"))
            }
            other => other,
        })?;
        let mut found = None;
        if let Ok(mut kinds) = self.kinds.lock() {
            for r in list["resources"].as_array().into_iter().flatten() {
                let (Some(name), Some(k)) = (r["name"].as_str(), r["kind"].as_str()) else { continue };
                if name.contains('/') {
                    continue;
                }
                let entry = (name.to_string(), r["namespaced"].as_bool().unwrap_or(false));
                if k == kind {
                    found = Some(entry.clone());
                }
                kinds.insert((api_version.to_string(), k.to_string()), entry);
            }
        }
        found.ok_or_else(|| ClientError::Usage(format!("no matches for kind {kind:?} in version {api_version:?}")))
    }

    /// The `meta.k8s.io/v1 Table` of a collection or object path, as `kubectl get` prints it.
    pub async fn get_table(&self, path: &str) -> Result<Value, ClientError> {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        json(&self.request_accepting(Method::GET, path, accept, "application/json", None).await?)
    }

    /// Resolves a resource name as users type it (`pods`, `po`, `pod`, `deploy`,
    /// `deployments.apps`, a CRD's plural) through discovery: (path prefix, plural, namespaced).
    pub async fn resolve_resource(&self, name: &str) -> Result<(String, String, bool), ClientError> {
        let wanted = name.to_lowercase();
        let (wanted, group_hint) = match wanted.split_once('.') {
            Some((plural, group)) => (plural.to_string(), Some(group.to_string())),
            None => (wanted, None),
        };
        let mut prefixes = vec!["/api/v1".to_string()];
        let groups = self.get("/apis").await?;
        for g in groups["groups"].as_array().into_iter().flatten() {
            if let Some(gv) = g["preferredVersion"]["groupVersion"].as_str() {
                prefixes.push(format!("/apis/{gv}"));
            }
        }
        for prefix in prefixes {
            if let Some(hint) = &group_hint {
                if !prefix.starts_with(&format!("/apis/{hint}/")) {
                    continue;
                }
            }
            let Ok(list) = self.get(&prefix).await else { continue };
            for r in list["resources"].as_array().into_iter().flatten() {
                let plural = r["name"].as_str().unwrap_or("");
                if plural.contains('/') {
                    continue;
                }
                let short =
                    r["shortNames"].as_array().into_iter().flatten().any(|s| s.as_str() == Some(wanted.as_str()));
                let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
                if plural == wanted || r["singularName"] == wanted.as_str() || kind == wanted || short {
                    return Ok((prefix, plural.to_string(), r["namespaced"].as_bool().unwrap_or(false)));
                }
            }
        }
        Err(ClientError::Usage(format!("the server doesn't have a resource type {name:?}")))
    }

    /// Server-side apply of one manifest; creates or updates it. Returns the stored object.
    pub async fn apply(&self, obj: &Value, field_manager: &str) -> Result<Value, ClientError> {
        let api_version =
            obj["apiVersion"].as_str().ok_or_else(|| ClientError::Usage("manifest has no apiVersion".into()))?;
        let kind = obj["kind"].as_str().ok_or_else(|| ClientError::Usage("manifest has no kind".into()))?;
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| ClientError::Usage(format!("{kind} has no metadata.name")))?;
        let collection = self.collection_path(api_version, kind, obj["metadata"]["namespace"].as_str()).await?;
        let path = format!("{collection}/{name}?fieldManager={field_manager}&force=true");
        json(
            &self
                .request(Method::PATCH, &path, "application/apply-patch+yaml", Some(obj.to_string().into_bytes()))
                .await?,
        )
    }

    /// Starts a watch on a collection path (`?watch=true` is added) from `resource_version`.
    pub async fn watch(&self, collection: &str, resource_version: &str) -> Result<Watch, ClientError> {
        let sep = if collection.contains('?') { '&' } else { '?' };
        // The server ends the watch after a while; the caller lists and watches again. Together
        // with keepalive this bounds how long a watch over a dead link can look alive.
        let path = format!(
            "{collection}{sep}watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds={}",
            WATCH_TIMEOUT.as_secs()
        );
        let response = self.send(Method::GET, &path, "application/json", "application/json", None).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes =
                response.into_body().collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?.to_bytes();
            return Err(status_error(status, &bytes));
        }
        Ok(Watch { body: response.into_body(), buffer: Vec::new() })
    }
}

/// Parses manifests from YAML (multi-document) or JSON text; skips empty documents and
/// expands `kind: List`.
pub fn parse_manifests(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document).map_err(|e| e.to_string())?;
        match value {
            Value::Null => {}
            v if v["kind"] == "List" => out.extend(v["items"].as_array().cloned().unwrap_or_default()),
            v => out.push(v),
        }
    }
    Ok(out)
}

/// One watch stream.
pub struct Watch {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event (`{"type", "object"}`), or None when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Value, ClientError>> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(e.to_string())));
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => return Some(Err(ClientError::Protocol(e.to_string()))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

fn json(bytes: &[u8]) -> Result<Value, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("reply is not JSON: {e}")))
}

fn status_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let parsed: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    ClientError::Api {
        code: status.as_u16(),
        reason: parsed["reason"].as_str().unwrap_or(status.canonical_reason().unwrap_or("")).to_string(),
        message: parsed["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_manifests_splits_documents_and_lists() {
        let text = "a: 1\n---\n---\nkind: List\nitems:\n- b: 2\n- c: 3\n";
        let docs = parse_manifests(text).expect("parses");
        assert_eq!(docs.len(), 3);
        assert!(parse_manifests("a: [").is_err());
    }

    #[test]
    fn kubeconfig_current_context_is_read() {
        let dir = std::env::temp_dir().join(format!("axle-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("kubeconfig");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1/\nusers:\n- name: u\n  user:\n    token: t0k\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: car\ncurrent-context: x\n").expect("write");
        let config = Config::from_kubeconfig(&path).expect("reads");
        assert_eq!(config.server, "http://127.0.0.1:1");
        assert_eq!(config.token.as_deref(), Some("t0k"));
        assert_eq!(config.namespace, "car");
        let _ = std::fs::remove_dir_all(dir);
    }
}
