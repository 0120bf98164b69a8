//! Axle's Kubernetes-compatible API server.
//!
//! It serves the wire behaviour that `kubectl`, the official client libraries and dashboards
//! rely on (see `shared/design/k8s-api.md`): discovery and OpenAPI, CRUD with optimistic
//! concurrency, list with selectors and paging, watch with resume and bookmarks, the four patch
//! types, tables for `kubectl get`, finalizers and cascading deletion, and custom resources
//! served as soon as their CRD is stored.
//!
//! Objects are handled as JSON (`serde_json::Value`) on one generic path; per-kind rules come
//! from the `api` crate, persistence and change events from the `store` crate. This crate owns
//! HTTP: it is the only one that knows about requests and responses.

mod admission;
mod agents;
mod aggregation;
mod apply;
mod authn;
mod authz;
mod bootstrap;
mod certificates;
mod discovery;
mod http;
mod lifecycle;
mod metrics;
mod objects;
mod protobuf;
mod registry;
mod resource_metrics;
mod restriction;
mod routes;
mod schemas;
mod streams;
mod uploads;
mod volatile;
mod watch;

pub use certificates::SecurityConfig;

use anyhow::Context as _;
use api::rbac::User;
use api::Registry;
use http::{error_reply, Query, Reply};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use routes::Route;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

/// How the server is started. These names are a contract with tools outside this repository.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: store::Options,
    /// Metrics of the process's other parts (controllers, OTLP exporter), shown on `/metrics`.
    pub metrics: Vec<std::sync::Arc<dyn telemetry::exposition::Registers>>,
    /// TLS, authentication and authorization; None serves plain HTTP to anyone, as an
    /// administrator (`--insecure-http`, for development only).
    pub security: Option<SecurityConfig>,
}

/// Shared state of all request handlers.
pub(crate) struct State {
    pub store: Store,
    registry: RwLock<Registry>,
    pub shutdown: signal::Receiver<bool>,
    pub server_address: String,
    /// The registry's content store (`DATA_DIR/content`).
    pub content: images::ContentStore,
    pub data_dir: PathBuf,
    pub metrics: metrics::Metrics,
    /// None when serving plain HTTP without authentication.
    pub security: Option<certificates::Security>,
    /// What writers may change beyond what they may write (node restriction, campaigns).
    pub policy: restriction::Policy,
}

impl State {
    pub fn registry(&self) -> Registry {
        self.registry.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Rebuilds the registry from the stored CRDs (after any CRD change, and at start).
    pub fn refresh_registry(&self) -> Result<(), store::StoreError> {
        let crds = self.store.list(lifecycle::CRD_PREFIX, None, 0, &|_| true)?;
        let registry = Registry::with_crds(crds.items.iter());
        if let Ok(mut slot) = self.registry.write() {
            *slot = registry;
        }
        Ok(())
    }
}

/// A running API server.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub kubeconfig: PathBuf,
    stop: signal::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    state: Arc<State>,
}

impl RunningServer {
    /// The server's metrics exposition, read when called (for the OTLP exporter).
    pub fn metrics_source(&self) -> telemetry::export::MetricsSource {
        let state = self.state.clone();
        Box::new(move || state.metrics.render(&state, "text/plain").1)
    }

    /// The bearer token the server's update controller authenticates with (its own identity,
    /// the only one that moves a campaign's phase); None without authentication.
    pub fn update_controller_token(&self) -> Option<String> {
        self.state.security.as_ref().map(|s| s.update_controller_token.clone())
    }

    /// Stops accepting connections, ends open watches cleanly, waits for in-flight requests
    /// (at most a few seconds) and closes the store cleanly.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        if let Err(e) = self.state.store.close().await {
            tracing::warn!(error = %e, "cannot close the store cleanly; its log is replayed at the next start");
        }
    }
}

/// The store's options with the key that seals Secrets.
fn store_options(config: &Config) -> anyhow::Result<store::Options> {
    let mut options = config.store.clone();
    options.sealing =
        Some(store::Sealing { key: ensure_secrets_key(&config.data_dir)?, prefixes: vec![SECRETS_PREFIX.to_string()] });
    Ok(options)
}

/// Rebuilds a damaged store from what still reads back of it, keeping the damaged files aside
/// (`axle server --recover`); run before [`start`].
pub fn recover_store(config: &Config) -> anyhow::Result<store::Recovery> {
    let store_path = config.data_dir.join(store::FILE_NAME);
    store::recover(&store_path, &store_options(config)?)
        .with_context(|| format!("cannot recover the store {}", store_path.display()))
}

/// Opens the store, binds the listener and serves until shut down. Returns once the API answers.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let store_path = config.data_dir.join(store::FILE_NAME);
    // Older formats step by step; each leaves its source as it was, for an older Axle.
    let legacy_store = config.data_dir.join(store::LEGACY_FILE_NAME);
    let v3_store = config.data_dir.join(store::V3_FILE_NAME);
    store::migrate_legacy(&legacy_store, &v3_store)
        .with_context(|| format!("cannot migrate the store {}", legacy_store.display()))?;
    store::migrate_v3(&v3_store, &store_path)
        .with_context(|| format!("cannot migrate the store {}", v3_store.display()))?;
    let store = Store::open(&store_path, store_options(&config)?).map_err(|e| {
        let hint = match e.is_damage() {
            true => "; `axle server --recover` rebuilds it from what still reads back, keeping the damaged files aside",
            false => "",
        };
        anyhow::anyhow!("cannot open the store {}: {e}{hint}", store_path.display())
    })?;
    let content_dir = config.data_dir.join("content");
    let content = images::ContentStore::open(&content_dir)
        .with_context(|| format!("cannot open the content store {}", content_dir.display()))?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    // The bootstrap token agents and the ECU gateway present, created once.
    let ttl = config.security.as_ref().and_then(|s| s.bootstrap_token_ttl);
    bootstrap::ensure_token(&config.data_dir, ttl)?;
    let prepared = match &config.security {
        Some(security) => Some(certificates::prepare(&config.data_dir, security, local_addr)?),
        None => {
            tracing::warn!("serving plain HTTP without authentication (--insecure-http): anyone who reaches {local_addr} controls the car");
            None
        }
    };
    let (server_tls, admin, security) = match prepared {
        Some(p) => (Some(p.server_tls), Some(p.admin), Some(p.security)),
        None => (None, None, None),
    };
    let (stop, shutdown) = signal::channel(false);
    let state = Arc::new(State {
        store,
        registry: RwLock::new(Registry::builtin()),
        shutdown: shutdown.clone(),
        server_address: local_addr.to_string(),
        content,
        data_dir: config.data_dir.clone(),
        metrics: metrics::Metrics::new(&config.metrics),
        policy: restriction::Policy::new(
            config.security.as_ref().map(|s| s.protected_node_label_prefixes.as_slice()).unwrap_or_default(),
            security.is_some(),
        ),
        security,
    });
    state.refresh_registry().context("cannot read the stored CRDs")?;
    // Serve first: the API answers while the first-start chores below run.
    let task =
        tokio::spawn(accept_loop(listener, state.clone(), server_tls.map(tokio_rustls::TlsAcceptor::from), shutdown));
    lifecycle::ensure_system_namespaces(&state).await.context("cannot create the system namespaces")?;
    authz::ensure_default_roles(&state).await.context("cannot create the default roles")?;
    // The kubeconfig is written last: a client that finds it finds the namespaces too.
    let kubeconfig = config.data_dir.join("admin.kubeconfig");
    let host = if local_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], local_addr.port()))
    } else {
        local_addr
    };
    let ca_pem = state.security.as_ref().map(|s| s.authority.cert_pem().to_string());
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let text = certificates::kubeconfig(&format!("{scheme}://{host}"), ca_pem.as_deref(), admin.as_ref(), "admin");
    write_private(&kubeconfig, text.as_bytes())?;
    let content_gc = state.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = content_gc.content.collect_garbage() {
            tracing::warn!(error = %e, "cannot garbage-collect the content store");
        }
    });
    tokio::spawn(lifecycle::run(state.clone()));
    tokio::spawn(lifecycle::expire_old_objects(state.clone()));
    Ok(RunningServer { local_addr, kubeconfig, stop, task, state })
}

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections at once, and this many from one address: a flood of idle
/// connections is refused before it can exhaust the process's file descriptors.
const MAX_CONNECTIONS: usize = 512;
const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
/// Beyond the cap, this many more for addresses holding fewer than `LIGHT_CLIENT`.
const RESERVED_FOR_LIGHT_CLIENTS: usize = 64;
const LIGHT_CLIENT: usize = 4;
/// A request's headers must arrive within this (also an idle HTTP/1 connection's next request).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// An HTTP/2 peer that answers no ping within this is gone.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);

/// Open connections, overall and by client address.
#[derive(Default)]
struct Connections {
    by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One admitted connection; leaving frees its place.
struct Admitted {
    connections: Arc<Connections>,
    address: std::net::IpAddr,
}

impl Connections {
    /// A place for a connection from `address`, or why there is none.
    fn admit(self: &Arc<Self>, address: std::net::IpAddr) -> Result<Admitted, &'static str> {
        let mut open = self.by_address.lock().map_err(|_| "the connection table is poisoned")?;
        let total: usize = open.values().sum();
        // A client with hardly any connection (kubectl, an agent) still gets in while others
        // flood: a reserve beyond the cap is kept for addresses holding fewer than a few.
        let light = open.get(&address).copied().unwrap_or(0) < LIGHT_CLIENT;
        if total >= MAX_CONNECTIONS && !(light && total < MAX_CONNECTIONS + RESERVED_FOR_LIGHT_CLIENTS) {
            return Err("too many connections");
        }
        let from_address = open.entry(address).or_default();
        if *from_address >= MAX_CONNECTIONS_PER_ADDRESS {
            return Err("too many connections from this address");
        }
        *from_address += 1;
        Ok(Admitted { connections: self.clone(), address })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.by_address.lock() {
            if let Some(count) = open.get_mut(&self.address) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&self.address);
                }
            }
        }
    }
}

/// Logs a repeated warning at most once a second, with how many were left out.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn warn(&mut self, what: &str, error: &dyn std::fmt::Display) {
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %error, suppressed = self.suppressed, "{what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: signal::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Connections::default());
    let mut warnings = Throttled { last: None, suppressed: 0 };
    // After a failed accept (out of file descriptors, most likely) wait before the next, longer
    // each time: retrying at once only spins.
    let mut backoff = Duration::ZERO;
    loop {
        if !backoff.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
            }
        }
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, address) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        warnings.warn("accept failed; backing off", &e);
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        continue;
                    }
                };
                backoff = Duration::ZERO;
                let admitted = match connections.admit(address.ip()) {
                    Ok(admitted) => admitted,
                    Err(why) => {
                        warnings.warn("connection refused", &format!("{why} ({})", address.ip()));
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let tls = tls.clone();
                let graceful_watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                    builder
                        .http2()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(HTTP2_KEEPALIVE)
                        .keep_alive_timeout(HTTP2_KEEPALIVE);
                    let result = match tls {
                        None => {
                            let service = request_service(state, None);
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                            graceful_watcher.watch(conn).await
                        }
                        Some(acceptor) => {
                            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let peer = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|cert| pki::certificate_subject(cert).ok())
                                .map(Arc::new);
                            let service = request_service(state, peer);
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                            graceful_watcher.watch(conn).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(3)) => tracing::warn!("connections still open at shutdown; closing them"),
    }
}

/// The service of one connection; `peer` is the subject of its verified client certificate.
fn request_service(
    state: Arc<State>,
    peer: Option<Arc<pki::Subject>>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Reply,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Reply, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let state = state.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(dispatch(state, peer, req).await) }
    })
}

async fn dispatch(
    state: Arc<State>,
    peer: Option<Arc<pki::Subject>>,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Reply {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let route = routes::parse(&path);
    let counted = match &route {
        Route::Resource(target) => Some(metrics::RequestLabels {
            verb: metrics::verb(&method, target.name.is_some(), query.flag("watch")),
            group: target.group.clone(),
            resource: target.plural.clone(),
            subresource: target.subresource.clone().unwrap_or_default(),
            code: String::new(),
        }),
        _ => None,
    };
    let reply = match admit_caller(&state, peer.as_deref(), &req, &route, &path, &query) {
        Ok(user) => {
            req.extensions_mut().insert(user);
            serve(state.clone(), req, route, query).await
        }
        Err(denied) => error_reply(&denied),
    };
    if let Some(mut labels) = counted {
        labels.code = reply.status().as_u16().to_string();
        state.metrics.observe(labels, started.elapsed().as_secs_f64());
    }
    tracing::debug!(%method, %path, status = reply.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    if method == hyper::Method::HEAD {
        // A reply to HEAD has the headers of the GET reply and no body: HTTP/1.1 drops a body
        // by itself, HTTP/2 would send it and the client fails the stream.
        let (parts, _) = reply.into_parts();
        return Reply::from_parts(parts, http::Body::Full(None));
    }
    reply
}

/// Authenticates and authorizes a request: the user it comes from, or 401/403.
fn admit_caller(
    state: &State,
    peer: Option<&pki::Subject>,
    req: &hyper::Request<hyper::body::Incoming>,
    route: &Route,
    path: &str,
    query: &Query,
) -> Result<User, api::ApiError> {
    let Some(security) = &state.security else {
        return Ok(User::new("system:admin", [api::rbac::MASTERS]));
    };
    let user = authn::authenticate(state, &security.tokens, peer, req.headers())?;
    if user.in_group(api::rbac::UNAUTHENTICATED) && !authz::is_public(path) {
        return Err(api::ApiError::unauthorized());
    }
    let user = authz::impersonate(state, user, req.headers())?;
    let attributes = authz::attributes(route, req.method(), path, query);
    authz::authorize(state, &user, &attributes).map_err(api::ApiError::forbidden)?;
    Ok(user)
}

async fn serve(state: Arc<State>, req: hyper::Request<hyper::body::Incoming>, route: Route, query: Query) -> Reply {
    match route {
        Route::Metrics => {
            let accept = req.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let (content_type, body) = state.metrics.render(&state, accept);
            http::bytes_reply(200, content_type, body)
        }
        Route::Version => discovery::version(),
        Route::Health if req.uri().path().starts_with("/readyz") => match state.store.health() {
            Ok(()) => http::bytes_reply(200, "text/plain", "ok"),
            // Serving (reads, watches, heartbeats), but not writing: not ready.
            Err(why) => http::bytes_reply(503, "text/plain", format!("[-]store failed: {why}")),
        },
        Route::Health => http::bytes_reply(200, "text/plain", "ok"),
        Route::CoreVersions => discovery::core_versions(&state),
        Route::Groups => discovery::groups(&state),
        Route::Group(group) => discovery::group(&state, &group),
        Route::ResourceList { group, version } => discovery::resources(&state, &group, &version),
        Route::OpenApiV2 => http::bytes_reply(200, "application/octet-stream", ""),
        Route::OpenApiV3Index => discovery::openapi_index(&state),
        Route::OpenApiV3 { path } => discovery::openapi_document(&state, &path),
        Route::Resource(target) if target.group == resource_metrics::GROUP => {
            resource_metrics::handle(&state, req.method(), &target, &query).await
        }
        Route::Resource(target) => objects::handle(state.clone(), req, target, query).await,
        Route::Registry(rest) => registry::handle(&state, req, &rest).await,
        Route::NotFound => error_reply(&api::ApiError::no_route()),
    }
}

pub use bootstrap::JOIN_APPROVED;

/// Decodes a request body as the API does (JSON, YAML, a protobuf envelope), for fuzzing and
/// tools: the object, or the Status a client would get.
pub fn decode_body(bytes: &[u8], content_type: Option<&str>) -> Result<serde_json::Value, api::ApiError> {
    http::decode_object(bytes, content_type)
}

/// Replaces the bootstrap token of the server whose data directory is `data_dir` (valid for
/// `ttl`, or until rotated again); returns the new token.
pub fn rotate_node_token(data_dir: &Path, ttl: Option<Duration>) -> anyhow::Result<String> {
    bootstrap::rotate(data_dir, ttl)
}

/// Secrets are stored encrypted with the key in `DATA_DIR/secrets.key` (mode 0600).
const SECRETS_PREFIX: &str = "core/secrets/";

/// The key Secrets are sealed with in the store, created once.
fn ensure_secrets_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    ensure_key(&data_dir.join("secrets.key"), "Secrets cannot be read")
}

/// A 32-byte random key kept in a file readable by its owner only, created once; `loss` says
/// what a damaged key file costs.
pub(crate) fn ensure_key(path: &Path, loss: &str) -> anyhow::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key; {loss}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = store::Sealing::new_key();
            write_private(path, &key)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A kubeconfig for `user` in `groups` with a client certificate from the CA in
/// `DATA_DIR/pki`, for the server named in `DATA_DIR/admin.kubeconfig`.
pub fn user_kubeconfig(data_dir: &Path, user: &str, groups: &[&str], validity: Duration) -> anyhow::Result<String> {
    let pki_dir = data_dir.join("pki");
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {} (is {} a server's data directory?)", path.display(), data_dir.display())
        })
    };
    let authority = pki::Authority::from_pem(&read(pki_dir.join("ca.crt"))?, &read(pki_dir.join("ca.key"))?)?;
    let admin = read(data_dir.join("admin.kubeconfig"))?;
    let server =
        admin.lines().find_map(|l| l.trim().strip_prefix("server: ")).context("admin.kubeconfig names no server")?;
    let issued = authority.issue(&pki::Subject::user(user, groups), pki::Usage::Client, validity)?;
    Ok(certificates::kubeconfig(server, Some(authority.cert_pem()), Some(&issued), user))
}

/// Writes a file readable by its owner only, atomically and durably (the name too: nothing
/// written after this may outlive the file).
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    Ok(pki::write_durably(path, contents, 0o600)?)
}
