//! The car's public-key infrastructure: one certificate authority per car (created by the API
//! server at first start), the certificates it issues (the server's serving certificate, client
//! certificates of users and nodes, certificates signed from a node's signing request), the
//! identity a certificate names (Kubernetes' convention: CN = user, O = groups), and the rustls
//! configurations of every TLS end in Axle.
//!
//! Keys are ECDSA P-256 (small certificates, fast handshakes on a car's CPUs); the crypto
//! provider is `ring`, for both certificate generation and TLS.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a PEM certificate or key: {0}")]
    Pem(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid certificate signing request: {0}")]
    Request(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.display().to_string(), source }
}

/// Who a certificate names, and for what it may be used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    /// The user (`CN`).
    pub common_name: String,
    /// The groups (`O`, one per group).
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (subject alternative names) a serving certificate answers for.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
}

impl Subject {
    pub fn user(name: &str, groups: &[&str]) -> Subject {
        Subject {
            common_name: name.to_string(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            ..Subject::default()
        }
    }

    fn distinguished_name(&self) -> Result<DistinguishedName, PkiError> {
        // rcgen keeps one value per attribute type; the organization OID spelled as a custom
        // type is a second slot, so a certificate names at most two groups.
        const ORGANIZATION: [u64; 4] = [2, 5, 4, 10];
        let mut dn = DistinguishedName::new();
        let mut slots = [DnType::OrganizationName, DnType::CustomDnType(ORGANIZATION.to_vec())].into_iter();
        for group in &self.organizations {
            let slot = slots.next().ok_or_else(|| {
                PkiError::Certificate(format!(
                    "a certificate names at most {MAX_GROUPS} groups, not {}",
                    self.organizations.len()
                ))
            })?;
            dn.push(slot, group.as_str());
        }
        dn.push(DnType::CommonName, self.common_name.as_str());
        Ok(dn)
    }

    fn alt_names(&self) -> Result<Vec<SanType>, PkiError> {
        let mut names = Vec::new();
        for dns in &self.dns_names {
            let name = dns.clone().try_into().map_err(|e| PkiError::Request(format!("DNS name {dns:?}: {e}")))?;
            names.push(SanType::DnsName(name));
        }
        names.extend(self.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        Ok(names)
    }
}

/// How many groups (`O`) a certificate can name.
pub const MAX_GROUPS: usize = 2;

/// What a certificate is for: its extended key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    /// A node's certificate: a client of the API and the server of its own endpoint.
    ClientAndServer,
}

impl Usage {
    fn extended(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::ClientAndServer => vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth],
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The certificate authority: its certificate and its signing key.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// Reads `dir/ca.crt` and `dir/ca.key`, or creates them (the key readable by its owner
    /// only) when neither exists.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Authority, PkiError> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io_error(&key_path))?;
            return Authority::from_pem(&cert_pem, &key_pem);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = Subject::user(name, &[]).distinguished_name()?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365 * 30);
        let cert = params.self_signed(&key)?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        // The certificate first: a key without its certificate would be recreated at next start.
        write_durably(&cert_path, cert.pem().as_bytes(), 0o644)?;
        write_durably(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(Authority { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Authority { cert_pem: cert_pem.to_string(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new key pair and its certificate for `subject`, valid from now (less a minute of clock
    /// skew) for `validity`.
    pub fn issue(&self, subject: &Subject, usage: Usage, validity: Duration) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let params = leaf_params(subject, usage, validity)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a PKCS#10 request (its signature checked) as `subject`, which the caller has
    /// decided the requester may have; the request's own names are not trusted.
    pub fn sign_request(
        &self,
        request_pem: &str,
        subject: &Subject,
        usage: Usage,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let request =
            CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| PkiError::Request(e.to_string()))?;
        let signed = CertificateSigningRequestParams {
            params: leaf_params(subject, usage, validity)?,
            public_key: request.public_key,
        };
        Ok(signed.signed_by(&self.issuer)?.pem())
    }
}

fn leaf_params(subject: &Subject, usage: Usage, validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.distinguished_name()?;
    params.subject_alt_names = subject.alt_names()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usage.extended();
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::try_from(validity).map_err(|e| PkiError::Certificate(e.to_string()))?;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    Ok(params)
}

fn random_serial() -> Result<[u8; 16], PkiError> {
    // A positive 127-bit serial: unique per certificate, as RFC 5280 asks.
    use ring::rand::SecureRandom as _;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Certificate("the system's random source failed".into()))?;
    serial[0] &= 0x7f;
    Ok(serial)
}

/// A signing request for `subject` with a new key pair: (request PEM, key PEM).
pub fn new_request(subject: &Subject) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.distinguished_name()?;
    params.subject_alt_names = subject.alt_names()?;
    let request = params.serialize_request(&key)?;
    Ok((request.pem()?, key.serialize_pem()))
}

/// The subject a signing request asks for (its signature checked).
pub fn request_subject(request_pem: &str) -> Result<Subject, PkiError> {
    let request =
        CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| PkiError::Request(e.to_string()))?;
    let mut subject = Subject::default();
    for (kind, value) in request.params.distinguished_name.iter() {
        let text = match value {
            rcgen::DnValue::Utf8String(s) => s.clone(),
            rcgen::DnValue::PrintableString(s) => s.to_string(),
            other => return Err(PkiError::Request(format!("unsupported name encoding {other:?}"))),
        };
        match kind {
            DnType::CommonName => subject.common_name = text,
            DnType::OrganizationName => subject.organizations.push(text),
            DnType::CustomDnType(oid) if *oid == [2, 5, 4, 10] => subject.organizations.push(text),
            _ => {}
        }
    }
    for name in &request.params.subject_alt_names {
        match name {
            SanType::DnsName(dns) => subject.dns_names.push(dns.to_string()),
            SanType::IpAddress(ip) => subject.ip_addresses.push(*ip),
            other => return Err(PkiError::Request(format!("unsupported subject alternative name {other:?}"))),
        }
    }
    Ok(subject)
}

/// The user and groups a certificate (DER) names.
pub fn certificate_subject(der: &[u8]) -> Result<Subject, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().find_map(|a| a.as_str().ok().map(String::from));
    let organizations = subject.iter_organization().filter_map(|a| a.as_str().ok().map(String::from)).collect();
    Ok(Subject { common_name: common_name.unwrap_or_default(), organizations, ..Subject::default() })
}

/// When a certificate (PEM, the first in the text) stops being valid.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, PkiError> {
    validity(cert_pem).map(|(_, not_after)| not_after)
}

/// When a certificate (PEM, the first in the text) starts being valid.
pub fn not_before(cert_pem: &str) -> Result<SystemTime, PkiError> {
    validity(cert_pem).map(|(not_before, _)| not_before)
}

fn validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), PkiError> {
    let der = first_certificate(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let time = |seconds: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    Ok((time(cert.validity().not_before.timestamp()), time(cert.validity().not_after.timestamp())))
}

fn first_certificate(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))
}

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no certificate".into()));
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, PkiError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        store.add(cert).map_err(|e| PkiError::Certificate(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a TLS server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Verified against the CA when presented; clients may also authenticate otherwise
    /// (bearer tokens), or not at all (and get 401).
    Optional,
    /// Every client must present one the CA issued.
    Required,
}

/// The configuration of a TLS server presenting `identity`, verifying client certificates
/// against `ca_pem` (validity period included: an expired certificate fails the handshake).
pub fn server_config(
    ca_pem: &str,
    identity: &Issued,
    clients: ClientCertificates,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider());
    let verifier = match clients {
        ClientCertificates::Optional => verifier.allow_unauthenticated(),
        ClientCertificates::Required => verifier,
    }
    .build()
    .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(&identity.cert_pem)?, private_key(&identity.key_pem)?)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate a TLS end presents (as a client, or as a server of its own endpoint);
/// replaceable while in use (renewal): new connections take the current one.
#[derive(Debug, Default)]
pub struct Identity {
    current: RwLock<Option<Arc<rustls::sign::CertifiedKey>>>,
}

impl Identity {
    pub fn new(identity: &Issued) -> Result<Arc<Identity>, PkiError> {
        let this = Arc::new(Identity::default());
        this.replace(identity)?;
        Ok(this)
    }

    pub fn replace(&self, identity: &Issued) -> Result<(), PkiError> {
        let key = provider()
            .key_provider
            .load_private_key(private_key(&identity.key_pem)?)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let certified = Arc::new(rustls::sign::CertifiedKey::new(certificates(&identity.cert_pem)?, key));
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(certified);
        }
        Ok(())
    }
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn has_certs(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl rustls::server::ResolvesServerCert for Identity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// The configuration of a node's own TLS endpoint: it presents `identity` and accepts only
/// clients with a certificate from the CA (who they are is for the caller to check).
pub fn endpoint_server_config(ca_pem: &str, identity: Arc<Identity>) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| tls(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    Ok(Arc::new(config))
}

/// The configuration of a TLS client trusting only `ca_pem`, presenting `identity` if any.
pub fn client_config(ca_pem: &str, identity: Option<Arc<Identity>>) -> Result<rustls::ClientConfig, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    })
}

/// Writes a file atomically and durably (temp file, fsync, rename, fsync of the directory)
/// with the given mode.
pub fn write_durably(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).and_then(|_| file.sync_all()).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_client_certificate_names_user_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::load_or_create(dir.path(), "test-ca").expect("ca");
        let issued = ca
            .issue(&Subject::user("alice", &["axle:viewers", "team-a"]), Usage::Client, Duration::from_secs(3600))
            .expect("issue");
        let der = first_certificate(&issued.cert_pem).expect("pem");
        let subject = certificate_subject(&der).expect("subject");
        assert_eq!(subject.common_name, "alice");
        assert_eq!(subject.organizations, ["axle:viewers", "team-a"]);
        let expires = not_after(&issued.cert_pem).expect("not after");
        let left = expires.duration_since(SystemTime::now()).expect("in the future");
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600), "{left:?}");
    }

    #[test]
    fn authority_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Authority::load_or_create(dir.path(), "test-ca").expect("ca");
        let again = Authority::load_or_create(dir.path(), "test-ca").expect("ca");
        assert_eq!(first.cert_pem(), again.cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn request_is_signed_as_the_subject_the_signer_chose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::load_or_create(dir.path(), "test-ca").expect("ca");
        let asked =
            Subject { dns_names: vec!["hpc-1".into()], ..Subject::user("system:node:hpc-1", &["system:nodes"]) };
        let (request, _key) = new_request(&asked).expect("request");
        assert_eq!(request_subject(&request).expect("parsed"), asked);
        let granted = Subject::user("system:node:hpc-1", &["system:nodes"]);
        let cert =
            ca.sign_request(&request, &granted, Usage::ClientAndServer, Duration::from_secs(60)).expect("signed");
        let subject = certificate_subject(&first_certificate(&cert).expect("pem")).expect("subject");
        assert_eq!(subject.common_name, "system:node:hpc-1");
        assert_eq!(subject.organizations, ["system:nodes"]);
    }

    #[test]
    fn tampered_request_is_refused() {
        let (request, _) = new_request(&Subject::user("system:node:a", &["system:nodes"])).expect("request");
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(request.as_bytes()).expect("der");
        let mut bytes = der.as_ref().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let tampered = rcgen::CertificateSigningRequestParams::from_der(&bytes.into());
        assert!(tampered.is_err());
    }
}
