//! The server's side of the car's PKI: the CA and the serving certificate at start, the
//! certificates the server issues (its admin kubeconfig, its client identity towards agents),
//! node certificates signed from CertificateSigningRequests, and ServiceAccount tokens from
//! TokenRequests.

use crate::authn::Tokens;
use api::rbac::{User, BOOTSTRAPPERS, MASTERS, NODES, NODE_USER_PREFIX};
use api::ApiError;
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The signer whose requests the server approves and signs by itself (node certificates).
pub const NODE_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of node endpoints' serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Lifetime of the serving certificate, the admin's and the server's client certificate.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The identity the server presents to agents (their endpoint accepts `system:masters`).
const AGENT_CLIENT_USER: &str = "axle:apiserver-agent-client";

/// How the server secures its API.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Extra names and addresses for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// A Kubernetes static token file (`--token-auth-file`).
    pub token_file: Option<std::path::PathBuf>,
    /// Longest lifetime of a node certificate (nodes renew at two thirds of it).
    pub node_cert_validity: Duration,
    /// The audiences ServiceAccount tokens must be meant for to be accepted by the API
    /// (`--api-audiences`; empty: the token issuer, as upstream).
    pub api_audiences: Vec<String>,
    /// Node label prefixes only administrators set, beyond the defaults
    /// (`--protected-node-label-prefix`).
    pub protected_node_label_prefixes: Vec<String>,
    /// How long a bootstrap token is valid from its creation (None: until rotated).
    pub bootstrap_token_ttl: Option<Duration>,
}

/// The security state the request handlers share.
pub struct Security {
    pub authority: pki::Authority,
    pub tokens: Tokens,
    pub node_cert_validity: Duration,
    /// TLS towards agents: their certificates checked against the CA, the server's own
    /// client certificate presented.
    pub agent_tls: Arc<rustls::ClientConfig>,
    /// The names and addresses the server's certificate names: no node may be called so.
    pub server_names: Vec<String>,
    /// The bearer token of the update controller's identity (`restriction::UPDATE_CONTROLLER_USER`),
    /// made at start and held in memory only.
    pub update_controller_token: String,
}

/// What `start` needs to serve TLS and write the admin kubeconfig.
pub struct Prepared {
    pub security: Security,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub admin: pki::Issued,
}

/// Loads or creates the CA (`DATA_DIR/pki/`), issues this start's serving certificate and
/// client identities, and reads the token sources.
pub fn prepare(data_dir: &Path, config: &SecurityConfig, listen: SocketAddr) -> anyhow::Result<Prepared> {
    use anyhow::Context as _;
    let pki_dir = data_dir.join("pki");
    let authority = pki::Authority::load_or_create(&pki_dir, "axle-ca").context("cannot set up the car's CA")?;
    let serving_subject = pki::Subject {
        dns_names: dns_names(config),
        ip_addresses: ip_addresses(listen, config),
        ..pki::Subject::user("axle-apiserver", &[])
    };
    let serving = authority.issue(&serving_subject, pki::Usage::Server, SERVER_CERT_VALIDITY)?;
    let server_tls = pki::server_config(authority.cert_pem(), &serving, pki::ClientCertificates::Optional)?;
    let admin = authority.issue(&pki::Subject::user("admin", &[MASTERS]), pki::Usage::Client, SERVER_CERT_VALIDITY)?;
    let agent_client = authority.issue(
        &pki::Subject::user(AGENT_CLIENT_USER, &[MASTERS]),
        pki::Usage::Client,
        SERVER_CERT_VALIDITY,
    )?;
    let agent_tls = Arc::new(pki::client_config(authority.cert_pem(), Some(pki::Identity::new(&agent_client)?))?);
    let static_tokens = match &config.token_file {
        Some(path) => crate::authn::read_token_file(path)?,
        None => Default::default(),
    };
    let service_account_key =
        crate::ensure_key(&pki_dir.join("service-account.key"), "ServiceAccount tokens cannot be checked")?;
    let mut static_tokens = static_tokens;
    let update_controller_token = random_token();
    static_tokens
        .insert(update_controller_token.clone(), User::new(crate::restriction::UPDATE_CONTROLLER_USER, [MASTERS]));
    let tokens = Tokens::new(static_tokens, data_dir, &service_account_key, config.api_audiences.clone());
    let server_names = serving_subject
        .dns_names
        .iter()
        .cloned()
        .chain(serving_subject.ip_addresses.iter().map(|ip| ip.to_string()))
        .collect();
    let security = Security {
        authority,
        tokens,
        server_names,
        node_cert_validity: config.node_cert_validity,
        agent_tls,
        update_controller_token,
    };
    Ok(Prepared { security, server_tls, admin })
}

/// A bearer token of 244 random bits.
fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn dns_names(config: &SecurityConfig) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_string());
    }
    names.extend(config.tls_sans.iter().filter(|s| s.parse::<IpAddr>().is_err()).cloned());
    names.retain(|n| !n.is_empty());
    names.dedup();
    names
}

/// The addresses clients may reach the server at: the listen address, or every address of the
/// machine when it listens on all of them, plus loopback and `--tls-san` addresses.
fn ip_addresses(listen: SocketAddr, config: &SecurityConfig) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
    if listen.ip().is_unspecified() {
        addresses.extend(interface_addresses());
    } else {
        addresses.push(listen.ip());
    }
    addresses.extend(config.tls_sans.iter().filter_map(|s| s.parse::<IpAddr>().ok()));
    let mut unique = Vec::new();
    for address in addresses {
        if !unique.contains(&address) {
            unique.push(address);
        }
    }
    unique
}

fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and then free.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let address = unsafe { (*entry).ifa_addr };
        if !address.is_null() {
            // SAFETY: the family tells which sockaddr type the pointer holds.
            match unsafe { i32::from((*address).sa_family) } {
                libc::AF_INET => {
                    let v4 = unsafe { &*(address as *const libc::sockaddr_in) };
                    found.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                }
                libc::AF_INET6 => {
                    let v6 = unsafe { &*(address as *const libc::sockaddr_in6) };
                    found.push(IpAddr::from(v6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        // SAFETY: as above.
        entry = unsafe { (*entry).ifa_next };
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// The kubeconfig of a client: the server, the CA, and a client certificate or a token.
pub fn kubeconfig(server: &str, ca_pem: Option<&str>, client: Option<&pki::Issued>, user: &str) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let authority = ca_pem.map(|ca| format!("    certificate-authority-data: {}\n", b64(ca))).unwrap_or_default();
    let credentials = match client {
        Some(issued) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&issued.cert_pem),
            b64(&issued.key_pem)
        ),
        None => "    {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: axle\n  cluster:\n    server: {server}\n{authority}\
         users:\n- name: {user}\n  user:\n{credentials}contexts:\n- name: axle\n  context:\n    \
         cluster: axle\n    user: {user}\n    namespace: default\ncurrent-context: axle\n"
    )
}

/// What signing a request at its creation gave.
pub struct Signed {
    /// The request's status: approved with its certificate.
    pub status: Value,
    /// A registered node that joined again with the bootstrap token: its approval is used up.
    pub rejoined: Option<String>,
}

/// The status a CertificateSigningRequest gets at creation, for the two node signers (other
/// requests stay pending):
/// - `kube-apiserver-client-kubelet`: a node's client certificate, for the bootstrap token
///   (within `bootstrap::may_join`), the node renewing its own, or an administrator;
/// - `kubelet-serving`: the serving certificate of a node's endpoint, naming the node alone,
///   for the node itself or an administrator.
pub fn sign_at_creation(
    state: &crate::State,
    security: &Security,
    user: &User,
    csr: &mut Value,
) -> Result<Option<Signed>, ApiError> {
    let name = api::meta::name_of(csr).to_string();
    let invalid = |why: String| {
        ApiError::invalid(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &name,
            vec![api::Cause::invalid("spec.request", &Value::Null, why)],
        )
    };
    // What the requester is, recorded as Kubernetes does (server-owned fields).
    csr["spec"]["username"] = json!(user.name);
    csr["spec"]["groups"] = json!(user.groups);
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("").to_string();
    let serving = match signer.as_str() {
        NODE_SIGNER => false,
        SERVING_SIGNER => true,
        _ => return Ok(None),
    };
    let request_pem = csr["spec"]["request"]
        .as_str()
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| invalid("must be a base64-encoded PEM certificate request".into()))?;
    let asked = pki::request_subject(&request_pem).map_err(|e| invalid(e.to_string()))?;
    let node = asked
        .common_name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| api::meta::dns_subdomain_error(n).is_none() && asked.organizations == [NODES])
        .ok_or_else(|| invalid(format!("the {signer} signer signs only CN=system:node:NAME, O=system:nodes")))?;
    let itself = user.name == asked.common_name && user.in_group(NODES);
    let mut rejoined = None;
    if !(itself || user.in_group(MASTERS)) {
        if serving || !user.in_group(BOOTSTRAPPERS) {
            let who = if serving { "the node itself" } else { "the bootstrap token or the node itself" };
            return Err(ApiError::forbidden(format!(
                "user {:?} may not request a {signer} certificate for node {node:?}: only {who} may",
                user.name
            )));
        }
        crate::bootstrap::may_join(state, &security.server_names, node)?;
        rejoined = Some(node.to_string());
    }
    let asked_seconds = csr["spec"]["expirationSeconds"].as_u64().map(Duration::from_secs);
    let validity = asked_seconds.map_or(security.node_cert_validity, |s| s.min(security.node_cert_validity));
    // Whatever names the request asks for: a client certificate names none, a serving one the
    // node alone (the server reaches agents by node name).
    let (dns_names, usage) =
        if serving { (vec![node.to_string()], pki::Usage::Server) } else { (Vec::new(), pki::Usage::Client) };
    let granted = pki::Subject { dns_names, ..pki::Subject::user(&asked.common_name, &[NODES]) };
    let cert =
        security.authority.sign_request(&request_pem, &granted, usage, validity).map_err(|e| invalid(e.to_string()))?;
    let now = api::meta::now_rfc3339();
    let status = json!({
        "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": "Auto approving node certificate", "lastUpdateTime": now, "lastTransitionTime": now}],
        "certificate": base64::engine::general_purpose::STANDARD.encode(cert.as_bytes()),
    });
    // Only a join of a registered node (approved) uses an approval up.
    let rejoined = rejoined.filter(|n| state.store.get(&store::key("core/nodes", "", n)).ok().flatten().is_some());
    Ok(Some(Signed { status, rejoined }))
}

/// `serviceaccounts/NAME/token` (TokenRequest): a token for the ServiceAccount.
pub fn token_request(security: &Security, account: &Value, request: &Value) -> Result<Value, ApiError> {
    let namespace = api::meta::namespace_of(account);
    let name = api::meta::name_of(account);
    let mut audiences: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    if audiences.is_empty() {
        audiences = security.tokens.api_audiences().to_vec();
    }
    let seconds = request["spec"]["expirationSeconds"].as_i64();
    let (token, expires) = security.tokens.issue_service_account_token(
        namespace,
        name,
        api::meta::uid_of(account),
        &audiences,
        seconds,
    )?;
    let expires = api::meta::format_unix(expires);
    let mut spec = request["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    spec["audiences"] = json!(audiences);
    Ok(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": api::meta::now_rfc3339()},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}
