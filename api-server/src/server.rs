//! Wires the services together and serves them on TCP (mutual TLS when
//! configured; plain only on loopback or with `--insecure`) and a Unix
//! socket (plain; mode 0660 and peer credentials), with gRPC health
//! (following etcd) and reflection (see `tooling`), every call checked by
//! `access`.
use std::time::Duration;

use anyhow::Context;
use berth_proto::v1::diagnostics_service_server::DiagnosticsServiceServer;
use berth_proto::v1::event_service_server::EventServiceServer;
use berth_proto::v1::network_service_server::NetworkServiceServer;
use berth_proto::v1::node_service_server::NodeServiceServer;
use berth_proto::v1::registry_service_server::RegistryServiceServer;
use berth_proto::v1::sandbox_service_server::SandboxServiceServer;
use futures::TryStreamExt;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::access::{AccessLayer, UnixPolicy};
use crate::agents::Agents;
use crate::config::Config;
use crate::grpc::doctor::DiagnosticsApi;
use crate::grpc::network::NetworkApi;
use crate::grpc::node::NodeApi;
use crate::grpc::sandbox::SandboxApi;
use crate::networks::Networks;
use crate::nodes::Nodes;
use crate::sandboxes::{ReservedPorts, Sandboxes};
use crate::tls::{ApiTls, RegistryGuard};
use crate::tooling::{API_SERVICES, ApiHealth};
use crate::unix_authority::FixAuthority;

/// Connects to etcd, ensures the built-in networks and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let tcp = config.tcp()?;
    let tls = ApiTls::load(&config)?;
    for warning in config.check_plain(tls.is_some())? {
        tracing::warn!("{warning}");
    }
    crate::metrics::registry_started(&config.metrics_listen).await?;
    let unix_policy = UnixPolicy {
        uid: nix::unistd::geteuid().as_raw(),
        gid: socket_group(&config.socket_group)?,
    };
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
    .with_reserved_ports(ReservedPorts::new(&config.reserved_ports, tcp.map(|a| a.port())))
    .with_ephemeral_ports(config.ephemeral_ports);
    let health = ApiHealth::new().await;
    tokio::spawn(health.clone().follow_etcd(store.clone()));
    let repair = crate::repair::Repair::new(
        store.clone(),
        sandboxes.clone(),
        nodes.clone(),
        Duration::from_secs(config.repair_period),
    );
    // Records written before the node index existed get their index keys
    // before any node is served its desired state from the index.
    match repair.fix_node_index_now().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(keys = n, "node index brought up to date"),
        Err(e) => tracing::warn!(error = %e, "cannot check the node index now; the repair loop does"),
    }
    let repair_task = tokio::spawn(repair.run());
    let clock = std::sync::Arc::new(crate::events::clock::Clock::new(crate::events::clock::CAPACITY));
    let clock_task = {
        let (clock, store) = (clock.clone(), store.clone());
        tokio::spawn(async move { clock.run(store).await })
    };
    // `tls`: the router serves TCP with TLS, so every call must carry a
    // certificate with the right role; the Unix socket's router has none.
    // The access layer checks every call on both (crate::access).
    let router = |tls: Option<&ApiTls>| -> anyhow::Result<Router<_>> {
        let (reflection_v1, reflection_v1alpha) = crate::tooling::reflection(&API_SERVICES)?;
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls.server()).context("TLS configuration")?;
        }
        Ok(builder
            .layer(berth_core::metrics::RpcLayer {
                metrics: crate::metrics::METRICS.rpc.clone(),
                known: crate::metrics::known_rpc,
            })
            .layer(AccessLayer { unix: unix_policy })
            .add_service(health.service())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(NetworkServiceServer::new(NetworkApi {
                networks: networks.clone(),
                sandboxes: sandboxes.clone(),
            }))
            .add_service(SandboxServiceServer::new(SandboxApi {
                sandboxes: sandboxes.clone(),
            }))
            .add_service(EventServiceServer::new(crate::events::EventApi {
                store: store.clone(),
                clock: clock.clone(),
            }))
            .add_service(DiagnosticsServiceServer::new(DiagnosticsApi {
                sandboxes: sandboxes.clone(),
                networks: networks.clone(),
                nodes: nodes.clone(),
            }))
            .add_service(NodeServiceServer::new(NodeApi {
                nodes: nodes.clone(),
                sandboxes: sandboxes.clone(),
            }))
            .add_service(RegistryServiceServer::new(RegistryGuard {
                inner: NodeApi {
                    nodes: nodes.clone(),
                    sandboxes: sandboxes.clone(),
                },
            })))
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
        // Created 0660 (umask 0117 around bind), so it is never open to
        // others, not even between bind and chmod; then given its group.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.with_context(|| format!("binding {}", path.display()))?;
        set_mode(path, 0o660)?;
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(unix_policy.gid)))
            .with_context(|| format!("chgrp {} {}", unix_policy.gid, path.display()))?;
        tracing::info!(path = %path.display(), gid = unix_policy.gid, "listening on unix socket");
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
    clock_task.abort();
    if let Some(path) = config.unix() {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The GID of `--socket-group` (a name or a number); empty: this process's group.
fn socket_group(group: &str) -> anyhow::Result<u32> {
    if group.is_empty() {
        return Ok(nix::unistd::getegid().as_raw());
    }
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => anyhow::bail!("--socket-group {group:?}: no such group"),
        Err(e) => anyhow::bail!("--socket-group {group:?}: {e}"),
    }
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
