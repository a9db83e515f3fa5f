//! berth-agent: one per node. Registers the node with the API server, keeps
//! its lease alive, and serves the commands that realise the node's share of
//! the cluster network.
pub mod config;
pub mod converge;
pub mod dns;
pub mod docker;
pub mod doctor;
pub mod etcfiles;
pub mod exec;
pub mod grpc;
pub mod kernel;
pub mod local;
pub mod metrics;
pub mod model;
pub mod names;
pub mod nft;
pub mod proxy;
pub mod reconcile;
pub mod registration;
pub mod state;
pub mod tls;
pub mod tooling;
pub mod watch;

use anyhow::Context;
use berth_proto::v1::agent_service_server::AgentServiceServer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use std::sync::Arc;

use crate::config::Config;
use crate::grpc::AgentApi;
use crate::reconcile::Reconciler;

/// At most two malloc arenas. glibc gives each thread that allocates under
/// contention its own arena (up to 8 per core) and keeps what was freed in
/// it; the agent's short-lived namespace threads (one per `setns`) and
/// bursts of concurrent commands made the agent's resident memory grow
/// with concurrency, not with its sandboxes: 1,000 bulk creates with 16 in
/// flight left node1's agent at 88.7 MiB, at 66.7 MiB with two arenas (debug
/// build, bench `--phases bulk`). Call it first, before any thread exists.
#[allow(unsafe_code)]
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a malloc parameter; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands the pages malloc holds free back to the kernel (`malloc_trim`):
/// a full pass allocates and frees in proportion to the node's sandboxes,
/// and glibc keeps freed pages in the middle of its heaps resident. Called
/// after each full pass; it takes about a millisecond.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Moves the calling thread into the named network namespace. Call before
/// the async runtime starts, so every thread it spawns inherits it.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {path}"))?;
    Ok(())
}

/// Serves the agent API (mutual TLS when `--tls-*` are given; then only
/// API servers may call it) and keeps the node registered until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // First, while the process has few descriptors: libnftables waits on its
    // netlink socket with select(2), which glibc aborts on a descriptor past
    // FD_SETSIZE (1,024), and a node's DNS responders hold two per sandbox.
    // The context made now keeps its low descriptor (nft/run.rs).
    nft::run::warm_up().await;
    let tls = tls::load(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(node = %config.name, addr = %listener.local_addr()?, tls = tls.is_some(), "agent listening");
    berth_core::metrics::start(
        "--metrics-listen",
        &config.metrics_listen,
        metrics::registry(&config.name),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    nft::run::use_library(&config.libnftables);
    // Loaded now, so a missing library is logged at start, not at the first port.
    nft::run::in_process();
    let reconciler = Arc::new(
        Reconciler::new(
            config.state_dir.clone(),
            config.netns_prefix.clone(),
            config.address,
            config.mtu,
            config.dns_upstreams()?,
        )
        .await
        .context("preparing the node")?,
    );
    let channel = registration::api_channel(&config, tls.as_ref().map(|t| t.client()))?;
    let registration = tokio::spawn(registration::keep_registered(
        config.clone(),
        reconciler.clone(),
        channel.clone(),
    ));
    let convergence = tokio::spawn(converge::run(config.clone(), reconciler.clone(), channel.clone()));
    let detacher = tokio::spawn(local::detach_vanished(
        config.name.clone(),
        reconciler.clone(),
        channel.clone(),
    ));
    let local_channel = channel.clone();
    let local = if config.local_socket.as_os_str().is_empty() {
        None
    } else {
        let listener = local::bind(&config.local_socket)?;
        tracing::info!(path = %config.local_socket.display(), "local service listening (mode 0600)");
        let api = local::LocalApi {
            node: config.name.clone(),
            reconciler: reconciler.clone(),
            channel,
        };
        Some(tokio::spawn(async move {
            if let Err(e) = local::serve(listener, api).await {
                tracing::error!(error = %e, "local service ended");
            }
        }))
    };
    let docker = if config.docker_plugin {
        let listener = docker::server::bind(&config.docker_plugin_socket)?;
        let plugin = Arc::new(docker::Plugin::new(
            config.name.clone(),
            local_channel.clone(),
            docker::dockerd::Dockerd::new(&config.docker_host)?,
            reconciler.clone(),
            config.mtu,
            std::time::Duration::from_secs(config.docker_grace),
            config.state_dir.clone(),
        )?);
        tracing::info!(path = %config.docker_plugin_socket.display(), dockerd = %config.docker_host, "docker plugin listening");
        let sweep = tokio::spawn(docker::sweep_forever(
            plugin.clone(),
            std::time::Duration::from_secs(config.resync_period),
        ));
        Some((tokio::spawn(docker::server::serve(listener, plugin)), sweep))
    } else {
        None
    };
    let watcher = {
        let (wanted, own, wake) = (
            reconciler.wanted_links(),
            reconciler.own_deletions(),
            reconciler.wake(),
        );
        let on = config.netlink_watch;
        if !on {
            tracing::warn!("--netlink-watch false: drift is repaired on the period only");
        }
        tokio::spawn(async move {
            if !on {
                return;
            }
            if let Err(e) = watch::run(wanted, own, wake).await {
                tracing::error!(error = %e, "netlink watch ended; drift is repaired on the period only");
            }
        })
    };
    let mut builder = Server::builder().layer(berth_core::metrics::RpcLayer {
        metrics: metrics::METRICS.rpc.clone(),
        known: metrics::known_rpc,
    });
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.server(None))
            .context("TLS configuration")?;
    }
    let (router, health) = tooling::with_tooling(&mut builder).await?;
    let health_task = tokio::spawn(tooling::follow_convergence(health, reconciler.clone()));
    let saver = tokio::spawn(reconciler.clone().keep_state_file());
    let last_save = reconciler.clone();
    let server = router
        .add_service(InterceptedService::new(
            AgentServiceServer::new(AgentApi {
                node: config.name.clone(),
                reconciler,
            })
            .max_decoding_message_size(berth_core::limits::MAX_NODE_STATE_BYTES),
            tls::agent_check(tls.is_some()),
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown_signal(),
        );
    let result = server.await;
    registration.abort();
    convergence.abort();
    detacher.abort();
    if let Some(l) = local {
        l.abort();
        let _ = std::fs::remove_file(&config.local_socket);
    }
    if let Some((server, sweep)) = docker {
        server.abort();
        sweep.abort();
        let _ = std::fs::remove_file(&config.docker_plugin_socket);
    }
    watcher.abort();
    health_task.abort();
    saver.abort();
    last_save.save_now().await;
    result.context("agent server")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
