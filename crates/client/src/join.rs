//! Node join and certificate renewal, as a kubelet does TLS bootstrapping: a node-side
//! component presents the bootstrap token once, in a CertificateSigningRequest for
//! `system:node:NAME` (a key pair made here; the private key never leaves the computer), keeps
//! the signed certificate and its key in its data directory, and from then on authenticates
//! with that certificate. It asks for a new one, as itself, when two thirds of the
//! certificate's life have passed.
//!
//! The node's certificate is a client certificate only. A node that serves an endpoint (the
//! agent) asks, as itself, for a separate serving certificate (`kubernetes.io/kubelet-serving`)
//! naming the node alone, and renews it with the other.

use crate::{Client, ClientError, Config};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
const NODE_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// How long to wait for a request to be signed.
const SIGNING_TIMEOUT: Duration = Duration::from_secs(60);
/// Retry period while the server cannot be reached or refuses.
const RETRY: Duration = Duration::from_secs(2);

/// How a node-side component reaches the API server.
#[derive(Debug, Clone)]
pub struct Join {
    /// `https://…` (or `http://…` for a server started with `--insecure-http`).
    pub server: String,
    /// The CA the server's certificate must chain to (required for https).
    pub ca_pem: Option<String>,
    /// The bootstrap token (`node-token`), needed until the first certificate is kept.
    pub bootstrap_token: Option<String>,
    /// Where the node's certificate and key are kept (`node-NAME.crt`, `node-NAME.key`).
    pub pki_dir: PathBuf,
}

/// Keeps a node's certificate valid: obtains the first one if none is kept, then renews.
pub struct Renewal {
    join: Join,
    node: String,
    identity: Arc<pki::Identity>,
    /// The certificate of the node's own endpoint, for nodes that serve one.
    serving: Option<Arc<pki::Identity>>,
    /// The node's own client, authenticated with the current certificate.
    client: Arc<Client>,
    /// When the current certificate expires (None: there is none yet).
    expires: Option<SystemTime>,
}

/// A node's client, the certificate it presents, and what keeps that certificate valid.
pub struct NodeClient {
    pub client: Arc<Client>,
    /// The node's client certificate (None without TLS).
    pub identity: Option<Arc<pki::Identity>>,
    /// What the node's own endpoint presents (asked for with `serves`; None without TLS).
    pub serving: Option<Arc<pki::Identity>>,
    /// To be run for as long as the node runs (None without TLS).
    pub renewal: Option<Renewal>,
}

impl Join {
    /// A client for node `name`. Over https it presents the node's certificate: the one kept
    /// on disk when still valid — so a computer restarting without a server needs nothing
    /// else — or, until [`Renewal::run`] obtains one, none (requests fail with 401 meanwhile).
    /// `serves`: the node serves an endpoint and needs a serving certificate too.
    pub fn node_client(&self, name: &str, serves: bool) -> Result<NodeClient, ClientError> {
        let mut config = Config::new(&self.server, None);
        if !self.server.starts_with("https://") {
            // A development server without TLS: the bootstrap token is sent as a bearer token.
            config.token = self.bootstrap_token.clone();
            let client = Arc::new(Client::new(config));
            return Ok(NodeClient { client, identity: None, serving: None, renewal: None });
        }
        let ca = self.ca_pem.as_deref().ok_or_else(|| {
            ClientError::Usage(format!(
                "{} is https: pass the car's CA with --ca-file (the server writes DATA_DIR/pki/ca.crt)",
                self.server
            ))
        })?;
        let identity = Arc::new(pki::Identity::default());
        let fresh = |(_, expires): &(pki::Issued, SystemTime)| *expires > SystemTime::now() + Duration::from_secs(60);
        let kept = self.kept(&Self::client_file(name)).filter(fresh);
        let serving = serves.then(|| Arc::new(pki::Identity::default()));
        let kept_serving = self.kept(&Self::serving_file(name)).filter(fresh);
        // Both are renewed together: a node missing either asks for both.
        let expires = match (kept, &serving, kept_serving) {
            (Some((issued, expires)), None, _) => {
                identity.replace(&issued).map_err(|e| ClientError::Usage(e.to_string()))?;
                Some(expires)
            }
            (Some((issued, expires)), Some(serving), Some((served, _))) => {
                identity.replace(&issued).map_err(|e| ClientError::Usage(e.to_string()))?;
                serving.replace(&served).map_err(|e| ClientError::Usage(e.to_string()))?;
                Some(expires)
            }
            (Some((issued, _)), Some(_), None) => {
                // The client certificate still authenticates the request for the serving one.
                identity.replace(&issued).map_err(|e| ClientError::Usage(e.to_string()))?;
                Some(SystemTime::now())
            }
            (None, _, _) => None,
        };
        let client = Arc::new(Client::new(config.with_tls(ca, Some(identity.clone()))?));
        let renewal = Renewal {
            join: self.clone(),
            node: name.to_string(),
            identity: identity.clone(),
            serving: serving.clone(),
            client: client.clone(),
            expires,
        };
        Ok(NodeClient { client, identity: Some(identity), serving, renewal: Some(renewal) })
    }

    /// File stems: `node-NAME` (client), `serving-NAME` (the endpoint's).
    fn client_file(node: &str) -> String {
        format!("node-{node}")
    }

    fn serving_file(node: &str) -> String {
        format!("serving-{node}")
    }

    fn paths(&self, stem: &str) -> (PathBuf, PathBuf) {
        (self.pki_dir.join(format!("{stem}.crt")), self.pki_dir.join(format!("{stem}.key")))
    }

    /// The certificate kept as `stem`, with its expiry.
    fn kept(&self, stem: &str) -> Option<(pki::Issued, SystemTime)> {
        let (cert_path, key_path) = self.paths(stem);
        let cert_pem = std::fs::read_to_string(cert_path).ok()?;
        let key_pem = std::fs::read_to_string(key_path).ok()?;
        let expires = pki::not_after(&cert_pem).ok()?;
        Some((pki::Issued { cert_pem, key_pem }, expires))
    }

    fn keep(&self, stem: &str, issued: &pki::Issued) -> Result<(), ClientError> {
        let failed = |e: pki::PkiError| ClientError::Usage(format!("cannot keep the node certificate: {e}"));
        std::fs::create_dir_all(&self.pki_dir)
            .map_err(|e| ClientError::Usage(format!("cannot create {}: {e}", self.pki_dir.display())))?;
        let (cert_path, key_path) = self.paths(stem);
        // The key first: a certificate on disk always has its key beside it.
        pki::write_durably(&key_path, issued.key_pem.as_bytes(), 0o600).map_err(failed)?;
        pki::write_durably(&cert_path, issued.cert_pem.as_bytes(), 0o644).map_err(failed)
    }
}

impl Renewal {
    /// Whether the node has a certificate now.
    pub fn has_certificate(&self) -> bool {
        self.expires.is_some()
    }

    /// Obtains the first certificate (with the bootstrap token) if there is none, then renews
    /// at two thirds of each certificate's life, until `shutdown`.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let wait = match self.expires {
                None => Duration::ZERO,
                Some(expires) => {
                    let left = expires.duration_since(SystemTime::now()).unwrap_or_default();
                    let lifetime = self.lifetime().unwrap_or(left);
                    left.saturating_sub(lifetime / 3)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            match self.renew_once().await {
                Ok(expires) => {
                    tracing::info!(node = %self.node, expires = %api::meta::format_unix(unix(expires)), "node certificate issued");
                    self.expires = Some(expires);
                }
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "cannot obtain a node certificate; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// The current certificate's whole validity period.
    fn lifetime(&self) -> Option<Duration> {
        let (issued, expires) = self.join.kept(&Join::client_file(&self.node))?;
        let not_before = pki::not_before(&issued.cert_pem).ok()?;
        expires.duration_since(not_before).ok()
    }

    /// One request for a certificate: as the node if it has a valid one, else with the
    /// bootstrap token.
    async fn renew_once(&self) -> Result<SystemTime, ClientError> {
        // The kept client certificate decides (not `expires`, which a missing serving
        // certificate brings forward).
        let valid = self.join.kept(&Join::client_file(&self.node)).is_some_and(|(_, e)| e > SystemTime::now());
        let bootstrap;
        let requester: &Client = if valid {
            &self.client
        } else {
            let token = self.join.bootstrap_token.clone().ok_or_else(|| {
                ClientError::Usage(
                    "no valid node certificate and no bootstrap token (--token-file) to ask for one".into(),
                )
            })?;
            let ca = self.join.ca_pem.as_deref().unwrap_or_default();
            bootstrap = Client::new(Config::new(&self.join.server, Some(token)).with_tls(ca, None)?);
            &bootstrap
        };
        let issued = request_certificate(requester, &self.node).await?;
        self.join.keep(&Join::client_file(&self.node), &issued)?;
        self.identity.replace(&issued).map_err(|e| ClientError::Usage(e.to_string()))?;
        self.client.reset_connections();
        if let Some(serving) = &self.serving {
            // As the node itself, with the certificate just kept.
            let served = request_serving_certificate(&self.client, &self.node).await?;
            self.join.keep(&Join::serving_file(&self.node), &served)?;
            serving.replace(&served).map_err(|e| ClientError::Usage(e.to_string()))?;
        }
        pki::not_after(&issued.cert_pem).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Creates a CertificateSigningRequest for the client certificate of `system:node:NODE` and
/// waits until it is signed.
pub async fn request_certificate(client: &Client, node: &str) -> Result<pki::Issued, ClientError> {
    let subject = pki::Subject::user(&format!("system:node:{node}"), &["system:nodes"]);
    request_signed(client, &subject, NODE_SIGNER, &["digital signature", "client auth"]).await
}

/// The same for the serving certificate of the node's endpoint (its name alone).
pub async fn request_serving_certificate(client: &Client, node: &str) -> Result<pki::Issued, ClientError> {
    let subject = pki::Subject {
        dns_names: vec![node.to_string()],
        ..pki::Subject::user(&format!("system:node:{node}"), &["system:nodes"])
    };
    request_signed(client, &subject, SERVING_SIGNER, &["digital signature", "server auth"]).await
}

async fn request_signed(
    client: &Client,
    subject: &pki::Subject,
    signer: &str,
    usages: &[&str],
) -> Result<pki::Issued, ClientError> {
    let (request_pem, key_pem) = pki::new_request(subject).map_err(|e| ClientError::Usage(e.to_string()))?;
    let prefix = if signer == SERVING_SIGNER { "serving-csr" } else { "node-csr" };
    let node = subject.common_name.trim_start_matches("system:node:");
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": format!("{prefix}-{node}-")},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem.as_bytes()),
            "signerName": signer,
            "usages": usages,
        },
    });
    let mut current = client.post(CSRS, &csr).await?;
    let deadline = tokio::time::Instant::now() + SIGNING_TIMEOUT;
    loop {
        if let Some(cert_pem) = signed_certificate(&current)? {
            return Ok(pki::Issued { cert_pem, key_pem });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ClientError::Protocol(format!(
                "certificate request {} was not signed within {} s",
                api::meta::name_of(&current),
                SIGNING_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        current = client.get(&format!("{CSRS}/{}", api::meta::name_of(&current))).await?;
    }
}

/// The certificate of a signed request, None while pending, an error when denied or failed.
fn signed_certificate(csr: &Value) -> Result<Option<String>, ClientError> {
    for condition in csr["status"]["conditions"].as_array().into_iter().flatten() {
        if matches!(condition["type"].as_str(), Some("Denied" | "Failed")) {
            return Err(ClientError::Protocol(format!(
                "certificate request {} {}: {}",
                api::meta::name_of(csr),
                condition["type"].as_str().unwrap_or("").to_lowercase(),
                condition["message"].as_str().unwrap_or("")
            )));
        }
    }
    let Some(encoded) = csr["status"]["certificate"].as_str().filter(|c| !c.is_empty()) else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| ClientError::Protocol(format!("status.certificate is not base64: {e}")))?;
    String::from_utf8(bytes).map(Some).map_err(|_| ClientError::Protocol("status.certificate is not PEM".into()))
}

/// Reads a CA file.
pub fn read_ca(path: &Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("cannot read the CA file {}: {e}", path.display())))
}
