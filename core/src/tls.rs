//! Mutual TLS between berth's processes: the roles a certificate carries
//! (`spiffe://berth/api`, `spiffe://berth/agent/<node>`, and for people and
//! scripts `spiffe://berth/{admin,operator,viewer}/<name>`, as a URI subject
//! alternative name), loading and checking PEM files at start, tonic client
//! and server configurations, the interceptor that lets a service accept
//! only some roles, and the rule that a plain (non-TLS) listener is only for
//! loopback unless `--insecure`.
//!
//! Every TCP connection is verified against one cluster CA; the role is
//! checked per RPC from the peer's certificate, so a wrong role is
//! `PERMISSION_DENIED` (a certificate the CA did not sign never gets past the
//! handshake). Connections without TLS (the API's Unix socket, checked by
//! peer credentials, or a loopback / `--insecure` listener) carry no
//! certificate.
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// The trust domain of every berth role URI.
pub const ROLE_URI_PREFIX: &str = "spiffe://berth/";

/// How much a client certificate may do in the public API (ordered: each
/// level includes the ones below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read only: list and inspect networks, sandboxes and nodes.
    Viewer,
    /// Networks and sandboxes: create, remove, connect, disconnect; no exec.
    Operator,
    /// Everything, including exec in sandboxes and `node rm`.
    Admin,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Admin, Access::Operator, Access::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Viewer => "viewer",
            Access::Operator => "operator",
            Access::Admin => "admin",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Access::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: admin, operator or viewer"))
    }
}

/// What a certificate lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// An API server: serves the API and commands agents.
    Api,
    /// The agent of one node: registers that node with the API server.
    Agent(String),
    /// A person or program using the API (the CLI), with its access level
    /// (`spiffe://berth/<access>/<name>`).
    Client { name: String, access: Access },
    /// A client certificate made before roles existed
    /// (`spiffe://berth/client/<name>`): all such certificates were
    /// all-powerful and meant for administrators only, so it keeps admin
    /// access (docs/security.md).
    LegacyClient(String),
}

impl Role {
    /// A client role.
    pub fn client(name: &str, access: Access) -> Role {
        Role::Client {
            name: name.to_string(),
            access,
        }
    }

    /// The URI subject alternative name that carries this role.
    pub fn uri(&self) -> String {
        match self {
            Role::Api => format!("{ROLE_URI_PREFIX}api"),
            Role::Agent(node) => format!("{ROLE_URI_PREFIX}agent/{node}"),
            Role::Client { name, access } => format!("{ROLE_URI_PREFIX}{access}/{name}"),
            Role::LegacyClient(name) => format!("{ROLE_URI_PREFIX}client/{name}"),
        }
    }

    /// What this role may do in the public API: `None` for agents (they
    /// may only use the node registry).
    pub fn access(&self) -> Option<Access> {
        match self {
            Role::Api | Role::LegacyClient(_) => Some(Access::Admin),
            Role::Client { access, .. } => Some(*access),
            Role::Agent(_) => None,
        }
    }

    /// The role a URI names, if it is one of berth's.
    pub fn from_uri(uri: &str) -> Option<Role> {
        let rest = uri.strip_prefix(ROLE_URI_PREFIX)?;
        let valid = |s: &str| crate::names::validate_name("name", s).is_ok();
        match rest.split_once('/') {
            None if rest == "api" => Some(Role::Api),
            Some(("agent", node)) if valid(node) => Some(Role::Agent(node.to_string())),
            Some(("client", name)) if valid(name) => Some(Role::LegacyClient(name.to_string())),
            Some((access, name)) if valid(name) => access
                .parse::<Access>()
                .ok()
                .map(|access| Role::client(name, access)),
            _ => None,
        }
    }

    /// The role of a DER certificate: its one `spiffe://berth/…` URI SAN.
    pub fn of_der(der: &[u8]) -> Result<Role, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Cert(format!("not an X.509 certificate: {e}")))?;
        role_of(&cert)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Api => write!(f, "api server"),
            Role::Agent(node) => write!(f, "agent of node {node}"),
            Role::Client { name, access } => write!(f, "{access} {name}"),
            Role::LegacyClient(name) => write!(f, "client {name}"),
        }
    }
}

fn role_of(cert: &X509Certificate<'_>) -> Result<Role, TlsError> {
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Cert(format!("unreadable subjectAltName: {e}")))?;
    let mut roles = Vec::new();
    for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name
            && uri.starts_with(ROLE_URI_PREFIX)
        {
            match Role::from_uri(uri) {
                Some(role) => roles.push(role),
                None => return Err(TlsError::Cert(format!("unknown berth role URI {uri:?}"))),
            }
        }
    }
    match roles.len() {
        1 => Ok(roles.remove(0)),
        0 => Err(TlsError::Cert(format!(
            "no berth role: expected a URI subjectAltName {ROLE_URI_PREFIX}api|agent/NODE|admin/NAME|operator/NAME|viewer/NAME"
        ))),
        _ => Err(TlsError::Cert("more than one berth role URI".to_string())),
    }
}

/// Whether a plain (non-TLS) TCP listener on `addr` is allowed: only on a
/// loopback address, or anywhere with `insecure` (the caller then logs a
/// warning at every start). `flag` names the listen flag in the refusal.
pub fn check_plain_listener(
    binary: &str,
    flag: &str,
    addr: SocketAddr,
    insecure: bool,
) -> Result<(), TlsError> {
    if addr.ip().is_loopback() || insecure {
        return Ok(());
    }
    Err(TlsError::Flags(format!(
        "refusing to serve {flag} {addr} without TLS: anyone who can reach it could control the cluster; \
         give --tls-ca, --tls-cert and --tls-key (see `berth cert` and docs/security.md), \
         listen on a loopback address, or pass --insecure to {binary}"
    )))
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: {reason}", path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Cert(String),
}

/// The three files of one process's TLS set-up, as given by its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (`--tls-ca`).
    pub ca: PathBuf,
    /// This process's certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key`).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files from `--tls-ca`, `--tls-cert` and `--tls-key`: all three or
    /// none (TLS off).
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                ca: ca.to_path_buf(),
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })),
            _ => {
                let missing: Vec<&str> = [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)]
                    .into_iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(f, _)| f)
                    .collect();
                Err(TlsError::Flags(format!(
                    "TLS needs --tls-ca, --tls-cert and --tls-key together; missing {}",
                    missing.join(", ")
                )))
            }
        }
    }

    /// Reads and checks the files: PEM, the certificate signed by the CA and
    /// currently valid, carrying one berth role.
    pub fn load(&self) -> Result<Tls, TlsError> {
        let ca_pem = read("--tls-ca", &self.ca)?;
        let cert_pem = read("--tls-cert", &self.cert)?;
        let key_pem = read("--tls-key", &self.key)?;
        let ca_der = first_cert("--tls-ca", &self.ca, &ca_pem)?;
        let cert_der = first_cert("--tls-cert", &self.cert, &cert_pem)?;
        let key_text = String::from_utf8_lossy(&key_pem);
        if !key_text.contains("-----BEGIN") || !key_text.contains("PRIVATE KEY-----") {
            return Err(TlsError::File {
                flag: "--tls-key",
                path: self.key.clone(),
                reason: "not a PEM private key".to_string(),
            });
        }
        let bad = |flag: &'static str, path: &Path, reason: String| TlsError::File {
            flag,
            path: path.to_path_buf(),
            reason,
        };
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| bad("--tls-ca", &self.ca, format!("not an X.509 certificate: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad("--tls-cert", &self.cert, format!("not an X.509 certificate: {e}")))?;
        if !ca.is_ca() {
            return Err(bad("--tls-ca", &self.ca, "not a CA certificate".to_string()));
        }
        cert.verify_signature(Some(ca.public_key())).map_err(|_| {
            bad(
                "--tls-cert",
                &self.cert,
                format!("not signed by the CA in {}", self.ca.display()),
            )
        })?;
        if !cert.validity().is_valid() {
            return Err(bad(
                "--tls-cert",
                &self.cert,
                format!(
                    "not valid now (valid from {} to {})",
                    cert.validity().not_before,
                    cert.validity().not_after
                ),
            ));
        }
        let role = role_of(&cert).map_err(|e| bad("--tls-cert", &self.cert, e.to_string()))?;
        Ok(Tls {
            ca: Certificate::from_pem(&ca_pem),
            identity: Identity::from_pem(&cert_pem, &key_pem),
            role,
        })
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn first_cert(flag: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<u8>, TlsError> {
    for p in Pem::iter_from_buffer(pem) {
        match p {
            Ok(p) if p.label == "CERTIFICATE" => return Ok(p.contents),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    Err(TlsError::File {
        flag,
        path: path.to_path_buf(),
        reason: "no PEM certificate in the file".to_string(),
    })
}

/// Reads a CA certificate on its own (the CLI's `--tls-ca`, the API's
/// `--client-ca`).
pub fn load_ca(flag: &'static str, path: &Path) -> Result<Certificate, TlsError> {
    let pem = read(flag, path)?;
    let der = first_cert(flag, path, &pem)?;
    let (_, ca) = x509_parser::parse_x509_certificate(&der).map_err(|e| TlsError::File {
        flag,
        path: path.to_path_buf(),
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    if !ca.is_ca() {
        return Err(TlsError::File {
            flag,
            path: path.to_path_buf(),
            reason: "not a CA certificate".to_string(),
        });
    }
    Ok(Certificate::from_pem(pem))
}

/// Reads a certificate and key pair on its own (the CLI's client identity).
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    first_cert("--tls-cert", cert, &cert_pem)?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// A process's loaded TLS material and the role of its own certificate.
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca: Certificate,
    pub identity: Identity,
    pub role: Role,
}

impl Tls {
    /// Checks that this process's certificate carries `want`.
    pub fn expect_role(&self, want: &Role, cert: &Path) -> Result<(), TlsError> {
        if &self.role == want {
            return Ok(());
        }
        Err(TlsError::File {
            flag: "--tls-cert",
            path: cert.to_path_buf(),
            reason: format!(
                "the certificate is for the {} ({}), this process needs one for the {} ({})",
                self.role,
                self.role.uri(),
                want,
                want.uri()
            ),
        })
    }

    /// A server that verifies client certificates against `client_ca` (the
    /// cluster CA unless given). A certificate from another CA fails the
    /// handshake; a client with no certificate completes it and every berth
    /// service then answers UNAUTHENTICATED (the role check needs a
    /// certificate), so the caller learns why instead of seeing a reset.
    pub fn server(&self, client_ca: Option<Certificate>) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(client_ca.unwrap_or_else(|| self.ca.clone()))
            .client_auth_optional(true)
            .timeout(std::time::Duration::from_secs(10))
    }

    /// A client that verifies servers against the cluster CA and presents
    /// this process's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

/// The role of the peer of a request: `None` on a connection without TLS,
/// `UNAUTHENTICATED` when its certificate carries no berth role.
pub fn peer_role<T>(req: &Request<T>) -> Result<Option<Role>, Status> {
    let Some(certs) = req.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Err(Status::unauthenticated("no client certificate"));
    };
    Role::of_der(leaf)
        .map(Some)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))
}

/// An interceptor that admits only peers whose certificate has an allowed
/// role. On a server with TLS (`tls: true`) a request without a certificate
/// is `UNAUTHENTICATED`; without TLS every request passes.
#[derive(Clone)]
pub struct RoleCheck {
    tls: bool,
    service: &'static str,
    allowed: fn(&Role) -> bool,
    wanted: &'static str,
}

impl RoleCheck {
    /// `service` and `wanted` only word the refusal, e.g. "the agent API",
    /// "an api server certificate".
    pub fn new(tls: bool, service: &'static str, wanted: &'static str, allowed: fn(&Role) -> bool) -> Self {
        Self {
            tls,
            service,
            allowed,
            wanted,
        }
    }

    /// Checks one request's peer.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match peer_role(req)? {
            Some(role) if (self.allowed)(&role) => Ok(()),
            Some(role) => Err(Status::permission_denied(format!(
                "{} ({}) may not call {}: it needs {}",
                role,
                role.uri(),
                self.service,
                self.wanted
            ))),
            None if self.tls => Err(Status::unauthenticated(format!(
                "{} needs a client certificate",
                self.service
            ))),
            None => Ok(()),
        }
    }
}

impl tonic::service::Interceptor for RoleCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(&req)?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_uris_round_trip() {
        for role in [
            Role::Api,
            Role::Agent("node1".into()),
            Role::client("alice", Access::Admin),
            Role::client("bob", Access::Operator),
            Role::client("carol", Access::Viewer),
            Role::LegacyClient("dave".into()),
        ] {
            assert_eq!(Role::from_uri(&role.uri()), Some(role));
        }
        for bad in [
            "spiffe://berth/",
            "spiffe://berth/apis",
            "spiffe://berth/agent/",
            "spiffe://berth/agent/a/b",
            "spiffe://berth/client/-x",
            "spiffe://other/api",
            "spiffe://berth/root/x",
            "spiffe://berth/admin/",
            "spiffe://berth/viewer/a/b",
        ] {
            assert_eq!(Role::from_uri(bad), None, "{bad}");
        }
        assert_eq!(
            Role::from_uri("spiffe://berth/viewer/eve"),
            Some(Role::client("eve", Access::Viewer))
        );
        assert_eq!(
            Role::from_uri("spiffe://berth/client/old").unwrap().access(),
            Some(Access::Admin)
        );
        assert_eq!(Role::Agent("n".into()).access(), None);
        assert!(Access::Admin > Access::Operator && Access::Operator > Access::Viewer);
        assert_eq!("operator".parse::<Access>(), Ok(Access::Operator));
        assert!("root".parse::<Access>().is_err());
    }

    #[test]
    fn plain_listeners_only_on_loopback() {
        let ok =
            |a: &str, insecure| check_plain_listener("x", "--listen", a.parse().unwrap(), insecure).is_ok();
        assert!(ok("127.0.0.1:7420", false));
        assert!(ok("127.9.9.9:1", false));
        assert!(ok("[::1]:7420", false));
        assert!(!ok("0.0.0.0:7421", false));
        assert!(!ok("[::]:7421", false));
        assert!(!ok("192.168.205.10:7421", false));
        assert!(ok("0.0.0.0:7421", true));
        let err = check_plain_listener("berth-agent", "--listen", "0.0.0.0:7421".parse().unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.contains("--listen 0.0.0.0:7421 without TLS") && err.contains("--insecure"),
            "{err}"
        );
    }

    #[test]
    fn tls_flags_all_or_none() {
        assert_eq!(TlsFiles::from_flags(None, None, None).unwrap(), None);
        let p = Path::new("/x");
        assert!(TlsFiles::from_flags(Some(p), Some(p), Some(p)).unwrap().is_some());
        let err = TlsFiles::from_flags(Some(p), None, Some(p))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing --tls-cert"), "{err}");
    }

    fn issue(
        dir: &Path,
        name: &str,
        role: Option<&str>,
        issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
    ) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        if let Some(uri) = role {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        let cert = match issuer {
            Some(i) => params.signed_by(&key, i).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        dir.join(name)
    }

    fn ca(dir: &Path, name: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        rcgen::Issuer::new(params, key)
    }

    fn files(dir: &Path, ca: &str, leaf: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join(format!("{ca}.crt")),
            cert: leaf.with_extension("crt"),
            key: leaf.with_extension("key"),
        }
    }

    #[test]
    fn load_checks_signature_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let issuer = ca(d, "ca");
        let _other = ca(d, "other");
        let agent = issue(d, "agent", Some("spiffe://berth/agent/node1"), Some(&issuer));
        let tls = files(d, "ca", &agent).load().unwrap();
        assert_eq!(tls.role, Role::Agent("node1".into()));
        assert!(tls.expect_role(&Role::Agent("node1".into()), &agent).is_ok());
        let err = tls.expect_role(&Role::Api, &agent).unwrap_err().to_string();
        assert!(err.contains("needs one for the api server"), "{err}");

        let err = files(d, "other", &agent).load().unwrap_err().to_string();
        assert!(err.contains("not signed by the CA"), "{err}");

        let norole = issue(d, "norole", None, Some(&issuer));
        let err = files(d, "ca", &norole).load().unwrap_err().to_string();
        assert!(err.contains("no berth role"), "{err}");

        let selfsigned = issue(d, "self", Some("spiffe://berth/api"), None);
        let err = files(d, "self", &selfsigned).load().unwrap_err().to_string();
        assert!(err.contains("not a CA certificate"), "{err}");

        let mut missing = files(d, "ca", &agent);
        missing.key = d.join("nope.key");
        let err = missing.load().unwrap_err().to_string();
        assert!(err.starts_with("cannot read --tls-key"), "{err}");

        let mut garbage = files(d, "ca", &agent);
        garbage.cert = d.join("agent.key");
        let err = garbage.load().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
