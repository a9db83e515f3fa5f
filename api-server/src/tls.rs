//! The API server's side of mutual TLS: its certificate (served on
//! `--listen` and presented to agents), the CAs it trusts, TLS to etcd, and
//! who may call what.
//!
//! Which role may call which RPC is `crate::access` (one layer for every
//! service). This module adds the registry's per-request rule: an agent
//! certificate acts only for its own node name (an agent cannot
//! re-register another node and redirect its commands, nor heartbeat or
//! read another node), and with TLS the agent URL it registers must be
//! `https://`.
use std::path::Path;

use anyhow::{Context, bail};
use berth_core::tls::{Role, Tls, TlsFiles, load_ca, peer_role};
use berth_proto::v1 as pb;
use berth_proto::v1::registry_service_server::RegistryService;
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::config::Config;

/// The API server's loaded TLS material.
#[derive(Clone)]
pub struct ApiTls {
    tls: Tls,
    client_ca: Option<Certificate>,
}

impl ApiTls {
    /// Loads `--tls-*` and `--client-ca`; `None` when TLS is off.
    pub fn load(config: &Config) -> anyhow::Result<Option<ApiTls>> {
        let files = TlsFiles::from_flags(
            config.tls_ca.as_deref(),
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
        )?;
        let Some(files) = files else {
            if config.client_ca.is_some() {
                bail!("--client-ca needs --tls-ca, --tls-cert and --tls-key");
            }
            return Ok(None);
        };
        let tls = files.load()?;
        tls.expect_role(&Role::Api, &files.cert)?;
        let client_ca = match &config.client_ca {
            Some(p) => Some(load_ca("--client-ca", p)?),
            None => None,
        };
        Ok(Some(ApiTls { tls, client_ca }))
    }

    /// The TCP listener's configuration: a client certificate is required.
    pub fn server(&self) -> ServerTlsConfig {
        self.tls.server(self.client_ca.clone())
    }

    /// The configuration for calls to agents.
    pub fn agent_client(&self) -> ClientTlsConfig {
        self.tls.client()
    }
}

/// RegistryService with one more check: an agent certificate acts only for
/// its own node, and registers an `https://` URL.
pub struct RegistryGuard<S> {
    pub inner: S,
}

fn own_node<T>(req: &Request<T>, node: &str) -> Result<bool, Status> {
    match peer_role(req)? {
        None => Ok(false),
        Some(Role::Agent(n)) if n == node => Ok(true),
        Some(role) => Err(Status::permission_denied(format!(
            "the {role} ({}) may not act for node {node}",
            role.uri()
        ))),
    }
}

#[tonic::async_trait]
impl<S: RegistryService> RegistryService for RegistryGuard<S> {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.get_ref();
        if own_node(&req, &r.name)? && !r.agent_url.starts_with("https://") {
            return Err(Status::invalid_argument(format!(
                "invalid agent_url: {:?} must be https:// when the API server uses TLS",
                r.agent_url
            )));
        }
        self.inner.register(req).await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        own_node(&req, &req.get_ref().name)?;
        self.inner.heartbeat(req).await
    }

    async fn desired_state(
        &self,
        req: Request<pb::DesiredStateRequest>,
    ) -> Result<Response<pb::NodeState>, Status> {
        own_node(&req, &req.get_ref().node)?;
        self.inner.desired_state(req).await
    }

    async fn attach_local(
        &self,
        req: Request<pb::AttachLocalRequest>,
    ) -> Result<Response<pb::AttachLocalResponse>, Status> {
        own_node(&req, &req.get_ref().node)?;
        self.inner.attach_local(req).await
    }

    async fn detach_local(
        &self,
        req: Request<pb::DetachLocalRequest>,
    ) -> Result<Response<pb::DetachLocalResponse>, Status> {
        own_node(&req, &req.get_ref().node)?;
        self.inner.detach_local(req).await
    }

    async fn list_local(
        &self,
        req: Request<pb::ListLocalRequest>,
    ) -> Result<Response<pb::ListLocalResponse>, Status> {
        own_node(&req, &req.get_ref().node)?;
        self.inner.list_local(req).await
    }

    async fn ensure_network(
        &self,
        req: Request<pb::EnsureNetworkRequest>,
    ) -> Result<Response<pb::EnsureNetworkResponse>, Status> {
        own_node(&req, &req.get_ref().node)?;
        self.inner.ensure_network(req).await
    }
}

/// TLS options for etcd from `--etcd-ca`, `--etcd-cert`, `--etcd-key`;
/// `None` when none is given.
pub fn etcd_tls(config: &Config) -> anyhow::Result<Option<etcd_client::TlsOptions>> {
    let (ca, cert, key) = (
        config.etcd_ca.as_deref(),
        config.etcd_cert.as_deref(),
        config.etcd_key.as_deref(),
    );
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let Some(ca) = ca else {
        bail!("--etcd-cert and --etcd-key need --etcd-ca (the CA that signed etcd's certificate)");
    };
    let read = |flag: &str, p: &Path| {
        std::fs::read(p).with_context(|| format!("cannot read {flag} {}", p.display()))
    };
    let mut opts = etcd_client::TlsOptions::new().ca_certificate(load_ca("--etcd-ca", ca)?);
    match (cert, key) {
        (Some(cert), Some(key)) => {
            opts = opts.identity(etcd_client::Identity::from_pem(
                read("--etcd-cert", cert)?,
                read("--etcd-key", key)?,
            ));
        }
        (None, None) => {}
        _ => bail!("--etcd-cert and --etcd-key go together"),
    }
    if let Some(plain) = config.etcd_endpoints.iter().find(|e| !e.starts_with("https://")) {
        bail!("--etcd-endpoints {plain:?}: use https:// endpoints with --etcd-ca");
    }
    Ok(Some(opts))
}

/// Connects to etcd, over TLS when `--etcd-ca` is given.
pub async fn connect_store(config: &Config) -> anyhow::Result<crate::store::Store> {
    match etcd_tls(config)? {
        None => Ok(crate::store::Store::connect(&config.etcd_endpoints, &config.etcd_prefix).await?),
        Some(tls) => {
            Ok(crate::store::Store::connect_tls(&config.etcd_endpoints, &config.etcd_prefix, tls).await?)
        }
    }
}
