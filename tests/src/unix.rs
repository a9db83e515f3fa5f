//! A gRPC channel to berth-api's Unix socket, for tests that call the API
//! directly from the root namespace.
use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// A lazily connected channel over the Unix socket at `path`; the URL only
/// names the `:authority` (berth-api ignores it).
pub fn unix_channel(path: PathBuf) -> Channel {
    Endpoint::from_static("http://berth-api.sock")
        .timeout(std::time::Duration::from_secs(30))
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}
