//! The gRPC channel to the API server: parsing `--api` and connecting over a
//! Unix socket, plain HTTP/2, or HTTP/2 with (mutual) TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Where the API server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// An `http://host:port` URL.
    Http(String),
    /// An `https://host:port` URL (TLS; `host:port` with `--tls-ca` too).
    Https(String),
}

/// The TLS flags: the CA that signed the API server's certificate, and the
/// client certificate to present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl TlsArgs {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn client_config(&self, addr: &str) -> Result<ClientTlsConfig> {
        let Some(ca) = &self.ca else {
            bail!("--api {addr} uses TLS: give --tls-ca (the cluster CA) and --tls-cert/--tls-key");
        };
        let mut cfg = ClientTlsConfig::new().ca_certificate(berth_core::tls::load_ca("--tls-ca", ca)?);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => cfg = cfg.identity(berth_core::tls::load_identity(cert, key)?),
            (None, None) => {}
            _ => bail!("--tls-cert and --tls-key go together"),
        }
        if let Some(name) = &self.server_name {
            cfg = cfg.domain_name(name.clone());
        }
        Ok(cfg)
    }
}

/// How long to wait for a TCP connection to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses `unix:///path`, `unix:/path`, `unix:relative/path`, a bare path
/// (`/path`, `./path`), `http://host:port`, `https://host:port`,
/// `tcp://host:port` or `host:port`.
pub fn parse_api_addr(addr: &str) -> Result<ApiAddr> {
    let invalid = |why: &str| anyhow!("invalid API address '{addr}': {why}");
    if let Some(rest) = addr.strip_prefix("unix:") {
        let path = match rest.strip_prefix("//") {
            Some(abs) if abs.starts_with('/') => abs,
            Some(_) => return Err(invalid("expected unix:///absolute/path or unix:path")),
            None => rest,
        };
        if path.is_empty() {
            return Err(invalid("empty socket path"));
        }
        return Ok(ApiAddr::Unix(PathBuf::from(path)));
    }
    if addr.starts_with('/') || addr.starts_with("./") || addr.starts_with("../") {
        return Ok(ApiAddr::Unix(PathBuf::from(addr)));
    }
    let mut https = false;
    let host_port = if let Some(rest) = addr.strip_prefix("http://") {
        rest
    } else if let Some(rest) = addr.strip_prefix("https://") {
        https = true;
        rest
    } else if let Some(rest) = addr.strip_prefix("tcp://") {
        rest
    } else if addr.contains("://") {
        return Err(invalid(
            "unknown scheme; use unix://, http://, https:// or HOST:PORT",
        ));
    } else {
        addr
    };
    let host_port = host_port.strip_suffix('/').unwrap_or(host_port);
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return Err(invalid("expected HOST:PORT"));
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(invalid("write an IPv6 host in brackets, e.g. [::1]:PORT"));
    }
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(invalid(&format!("'{port}' is not a port number")));
    }
    if https {
        return Ok(ApiAddr::Https(format!("https://{host}:{port}")));
    }
    Ok(ApiAddr::Http(format!("http://{host}:{port}")))
}

/// Connects to the API server at `addr` (as given by `--api`). A TCP
/// address without a scheme uses TLS when a TLS flag is given; `http://`
/// with TLS flags is refused rather than silently sent in the clear. The
/// Unix socket has no TLS: the flags do not apply to it.
pub async fn connect(addr: &str, tls: &TlsArgs) -> Result<Channel> {
    let mut parsed = parse_api_addr(addr)?;
    if let ApiAddr::Http(url) = &parsed
        && tls.any()
    {
        if addr.starts_with("http://") {
            bail!("--api {addr} is plain http but TLS flags are given; use https://");
        }
        parsed = ApiAddr::Https(url.replacen("http://", "https://", 1));
    }
    let unreachable =
        |err: &dyn std::error::Error| anyhow!("cannot reach the API server at {addr}: {}", error_reason(err));
    match parsed {
        ApiAddr::Unix(path) => {
            // The URI is required by the API but unused: the connector ignores it.
            Endpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| unreachable(&e))
        }
        ApiAddr::Http(url) | ApiAddr::Https(url) => {
            let mut endpoint = match Endpoint::from_shared(url.clone()) {
                Ok(endpoint) => endpoint,
                Err(e) => bail!("invalid API address '{addr}': {}", error_reason(&e)),
            };
            if url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls.client_config(addr)?)
                    .map_err(|e| anyhow!("TLS configuration: {}", error_reason(&e)))?;
            }
            endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .connect()
                .await
                .map_err(|e| unreachable(&e))
        }
    }
}

/// The useful part of an error chain, on one line: tonic's outer
/// "transport error" says nothing, the io error underneath does.
pub fn error_reason(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if msg != "transport error" && !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(p: &str) -> ApiAddr {
        ApiAddr::Unix(PathBuf::from(p))
    }
    fn http(u: &str) -> ApiAddr {
        ApiAddr::Http(u.to_string())
    }

    #[test]
    fn unix_forms() {
        assert_eq!(
            parse_api_addr("unix:///run/berth/api.sock").unwrap(),
            unix("/run/berth/api.sock")
        );
        assert_eq!(parse_api_addr("unix:/tmp/a.sock").unwrap(), unix("/tmp/a.sock"));
        assert_eq!(parse_api_addr("unix:rel/a.sock").unwrap(), unix("rel/a.sock"));
        assert_eq!(parse_api_addr("/tmp/b.sock").unwrap(), unix("/tmp/b.sock"));
        assert_eq!(parse_api_addr("./b.sock").unwrap(), unix("./b.sock"));
    }

    #[test]
    fn http_forms() {
        assert_eq!(
            parse_api_addr("http://127.0.0.1:7000").unwrap(),
            http("http://127.0.0.1:7000")
        );
        assert_eq!(
            parse_api_addr("http://api.example:7000/").unwrap(),
            http("http://api.example:7000")
        );
        assert_eq!(
            parse_api_addr("127.0.0.1:7000").unwrap(),
            http("http://127.0.0.1:7000")
        );
        assert_eq!(
            parse_api_addr("localhost:50051").unwrap(),
            http("http://localhost:50051")
        );
        assert_eq!(parse_api_addr("[::1]:7000").unwrap(), http("http://[::1]:7000"));
        assert_eq!(
            parse_api_addr("tcp://10.0.0.1:7000").unwrap(),
            http("http://10.0.0.1:7000")
        );
        assert_eq!(
            parse_api_addr("https://berth-api:7420/").unwrap(),
            ApiAddr::Https("https://berth-api:7420".to_string())
        );
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "",
            "unix:",
            "unix://",
            "unix://host/path",
            "localhost",
            "localhost:",
            ":7000",
            "localhost:http",
            "localhost:0",
            "localhost:70000",
            "::1:7000",
            "https://example",
            "ftp://example:21",
        ] {
            let err = parse_api_addr(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid API address '{bad}'")),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn missing_socket_is_reported_on_one_line() {
        let dir = std::env::temp_dir().join(format!("berth-cli-test-{}", std::process::id()));
        let sock = dir.join("nope.sock");
        let addr = format!("unix://{}", sock.display());
        let err = connect(&addr, &TlsArgs::default()).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot reach the API server at {addr}: ")),
            "{err}"
        );
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[tokio::test]
    async fn tls_flags_and_schemes_must_agree() {
        let tls = TlsArgs {
            ca: Some(PathBuf::from("/nonexistent/ca.crt")),
            ..Default::default()
        };
        let err = connect("http://127.0.0.1:7", &tls).await.unwrap_err().to_string();
        assert!(err.contains("plain http but TLS flags are given"), "{err}");
        // host:port with a TLS flag means https: the CA is read first.
        let err = connect("127.0.0.1:7", &tls).await.unwrap_err().to_string();
        assert!(err.contains("cannot read --tls-ca /nonexistent/ca.crt"), "{err}");
        let err = connect("https://127.0.0.1:7", &TlsArgs::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("give --tls-ca"), "{err}");
    }
}
