//! Wires the services together and serves them on TCP (mutual TLS when
//! configured) and a Unix socket (plain; guarded by file permissions), with
//! gRPC health (following etcd) and reflection (see `tooling`).
use std::time::Duration;

use anyhow::Context;
use berth_proto::v1::network_service_server::NetworkServiceServer;
use berth_proto::v1::node_service_server::NodeServiceServer;
use berth_proto::v1::registry_service_server::RegistryServiceServer;
use berth_proto::v1::sandbox_service_server::SandboxServiceServer;
use futures::TryStreamExt;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::agents::Agents;
use crate::config::Config;
use crate::grpc::network::NetworkApi;
use crate::grpc::node::NodeApi;
use crate::grpc::sandbox::SandboxApi;
use crate::networks::Networks;
use crate::nodes::Nodes;
use crate::sandboxes::{ReservedPorts, Sandboxes};
use crate::tls::{ApiTls, RegistryGuard, public_check, registry_check};
use crate::tooling::{API_SERVICES, ApiHealth};
use crate::unix_authority::FixAuthority;

/// Connects to etcd, ensures the built-in networks and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let tcp = config.tcp()?;
    let tls = ApiTls::load(&config)?;
    let store = crate::tls::connect_store(&config)
        .await
        .context("connecting to etcd")?;
    let networks = Networks::new(store.clone());
    let mut delay = Duration::from_millis(200);
    loop {
        match networks.ensure_builtins().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ensure built-in networks yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    let nodes = Nodes::new(store.clone(), config.node_ttl);
    let sandboxes = Sandboxes::new(
        store.clone(),
        networks.clone(),
        nodes.clone(),
        Agents::new(tls.as_ref().map(ApiTls::agent_client)),
    )
    .with_reserved_ports(ReservedPorts::new(&config.reserved_ports, tcp.map(|a| a.port())));
    let health = ApiHealth::new().await;
    tokio::spawn(health.clone().follow_etcd(store.clone()));
    let repair = crate::repair::Repair::new(
        store.clone(),
        sandboxes.clone(),
        nodes.clone(),
        Duration::from_secs(config.repair_period),
    );
    let repair_task = tokio::spawn(repair.run());
    // `tls`: the router serves TCP with TLS, so every call must carry a
    // certificate with the right role; the Unix socket's router has none.
    let router = |tls: Option<&ApiTls>| -> anyhow::Result<Router> {
        let (reflection_v1, reflection_v1alpha) = crate::tooling::reflection(&API_SERVICES)?;
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls.server()).context("TLS configuration")?;
        }
        let (public, registry) = (public_check(tls.is_some()), registry_check(tls.is_some()));
        Ok(builder
            .add_service(health.service())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(NetworkServiceServer::with_interceptor(
                NetworkApi {
                    networks: networks.clone(),
                    sandboxes: sandboxes.clone(),
                },
                public.clone(),
            ))
            .add_service(SandboxServiceServer::with_interceptor(
                SandboxApi {
                    sandboxes: sandboxes.clone(),
                },
                public.clone(),
            ))
            .add_service(NodeServiceServer::with_interceptor(
                NodeApi {
                    nodes: nodes.clone(),
                    sandboxes: sandboxes.clone(),
                },
                public,
            ))
            .add_service(RegistryServiceServer::with_interceptor(
                RegistryGuard {
                    inner: NodeApi {
                        nodes: nodes.clone(),
                        sandboxes: sandboxes.clone(),
                    },
                },
                registry,
            )))
    };

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening on tcp");
        let r = router(tls.as_ref())?;
        servers.spawn(async move { r.serve_with_incoming(TcpListenerStream::new(listener)).await });
    }
    if let Some(path) = config.unix() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // A socket left by a previous run would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        set_mode(path, 0o660)?;
        tracing::info!(path = %path.display(), "listening on unix socket");
        let r = router(None)?;
        // Clients that send the socket path as :authority work too.
        let incoming = UnixListenerStream::new(listener).map_ok(FixAuthority::new);
        servers.spawn(async move { r.serve_with_incoming(incoming).await });
    }
    if servers.is_empty() {
        anyhow::bail!("nothing to listen on: both --listen and --socket are empty");
    }
    tokio::select! {
        _ = &mut shutdown => tracing::info!("shutting down"),
        Some(res) = servers.join_next() => {
            res??;
        }
    }
    repair_task.abort();
    if let Some(path) = config.unix() {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn set_mode(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
