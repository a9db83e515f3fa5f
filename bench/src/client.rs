//! gRPC channels from the bench process (root namespace): to berth-api over
//! its Unix socket, and to an agent over TCP from inside a lab namespace (the
//! socket is made on a thread that entered the namespace; the process itself
//! never leaves the root namespace).
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use berth_agent::kernel::netns;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A channel to berth-api's Unix socket (one HTTP/2 connection).
pub async fn unix_channel(path: &Path) -> Result<Channel> {
    let path = path.to_path_buf();
    let ch = Endpoint::from_static("http://[::]:50051")
        .timeout(Duration::from_secs(120))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(ch)
}

/// A channel to `addr` made from inside namespace `ns` (e.g. an agent's
/// gRPC address on the lab's underlay, seen from the control namespace),
/// with mutual TLS when `tls` is given (the lab's default).
pub async fn netns_channel(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel> {
    let ns = ns.to_string();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let ch = endpoint
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let ns = ns.clone();
            async move {
                let stream = netns::run_in(&ns, move || {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                })
                .await
                .map_err(std::io::Error::other)??;
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
            }
        }))
        .await?;
    Ok(ch)
}
