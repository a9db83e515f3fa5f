//! The plugin socket: HTTP/1.1 POSTs from dockerd, routed by path to the
//! IPAM and network driver handlers; errors as `{"Err": …}` (network
//! driver) or `{"Error": …}` (IPAM), unknown paths 404 (not implemented).
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::UnixListener;

use super::protocol::CONTENT_TYPE;
use super::{Plugin, PluginError, driver, ipam};

/// Binds the plugin socket (mode 0660, root's group: dockerd runs as root);
/// an old socket at the path is replaced, anything else is refused.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .context("--docker-plugin-socket needs a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).with_context(|| format!("removing the old {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "--docker-plugin-socket {}: something that is not a socket is there",
            path.display()
        ),
        Err(_) => {}
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, plugin: Arc<Plugin>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "docker plugin socket accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let cred = stream.peer_cred().ok();
        if cred.map(|c| c.uid()) != Some(0) {
            tracing::warn!("refused a docker plugin connection from a user other than root");
            continue;
        }
        // dockerd's pid: its container namespaces are reached through
        // /proc/PID/root (dockerd may have a mount namespace of its own).
        let peer = cred.and_then(|c| c.pid()).unwrap_or(0);
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let plugin = plugin.clone();
                async move { Ok::<_, Infallible>(answer(plugin, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "docker plugin connection ended");
            }
        });
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, PluginError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| PluginError(format!("berth: bad request: {e}")))
}

async fn answer(plugin: Arc<Plugin>, req: Request<Incoming>, peer: i32) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, &json!({"Err": e.to_string()})),
    };
    let b = &body[..];
    let p = &plugin;
    let ipam_call = path.starts_with("/IpamDriver.");
    let result: Option<Result<Value, PluginError>> = match path.as_str() {
        "/Plugin.Activate" => Some(Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]}))),
        "/IpamDriver.GetCapabilities" => Some(Ok(ipam::capabilities())),
        "/IpamDriver.GetDefaultAddressSpaces" => Some(Ok(ipam::address_spaces())),
        "/IpamDriver.RequestPool" => Some(async { p.request_pool(parse(b)?).await }.await),
        "/IpamDriver.ReleasePool" => Some(async { p.release_pool(parse(b)?).await }.await),
        "/IpamDriver.RequestAddress" => Some(async { p.request_address(parse(b)?).await }.await),
        "/IpamDriver.ReleaseAddress" => Some(async { p.release_address(parse(b)?).await }.await),
        "/NetworkDriver.GetCapabilities" => Some(Ok(driver::capabilities())),
        "/NetworkDriver.CreateNetwork" => Some(async { p.create_network(parse(b)?).await }.await),
        "/NetworkDriver.DeleteNetwork" => Some(async { p.delete_network(parse(b)?).await }.await),
        "/NetworkDriver.CreateEndpoint" => Some(async { p.create_endpoint(parse(b)?).await }.await),
        "/NetworkDriver.DeleteEndpoint" => Some(async { p.delete_endpoint(parse(b)?).await }.await),
        "/NetworkDriver.EndpointOperInfo" => Some(Ok(json!({"Value": {}}))),
        "/NetworkDriver.Join" => Some(async { p.join(parse(b)?, peer).await }.await),
        "/NetworkDriver.Leave" => Some(async { p.leave(parse(b)?).await }.await),
        "/NetworkDriver.ProgramExternalConnectivity"
        | "/NetworkDriver.RevokeExternalConnectivity"
        | "/NetworkDriver.DiscoverNew"
        | "/NetworkDriver.DiscoverDelete" => Some(Ok(json!({}))),
        _ => None,
    };
    match result {
        None => reply(
            StatusCode::NOT_FOUND,
            &json!({"Err": format!("{path} is not implemented")}),
        ),
        Some(Ok(v)) => {
            tracing::debug!(%path, "docker plugin call");
            reply(StatusCode::OK, &v)
        }
        Some(Err(e)) => {
            tracing::warn!(%path, error = %e.0, "docker plugin call refused");
            let key = if ipam_call { "Error" } else { "Err" };
            reply(StatusCode::OK, &json!({key: e.0}))
        }
    }
}
