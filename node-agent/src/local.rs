//! `berth.v1.LocalService` on the agent's Unix socket (`--local-socket`):
//! how container runtimes on this node (the berth-cni plugin; Docker's
//! driver next) attach their own namespaces to berth networks. The agent
//! checks the namespace, forwards the attachment to the API server
//! (`RegistryService.AttachLocal`, which records it and has this agent
//! realise it, as for any sandbox) and answers once it is realised. Also the
//! task that detaches attachments whose namespace vanished without a DEL.
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth_proto::v1 as pb;
use berth_proto::v1::local_service_server::{LocalService, LocalServiceServer};
use berth_proto::v1::registry_service_client::RegistryServiceClient;
use tokio::net::UnixListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::kernel::netns;
use crate::model::{External, NetworkSpec, SandboxOrigin, check_netns_path};
use crate::reconcile::Reconciler;

pub struct LocalApi {
    pub node: String,
    pub reconciler: Arc<Reconciler>,
    /// To the API server.
    pub channel: Channel,
}

fn origin_of(o: i32) -> Result<SandboxOrigin, Status> {
    match pb::SandboxOrigin::try_from(o) {
        Ok(pb::SandboxOrigin::Cni) => Ok(SandboxOrigin::Cni),
        Ok(pb::SandboxOrigin::Docker) => Ok(SandboxOrigin::Docker),
        _ => Err(Status::invalid_argument(
            "invalid origin: an attachment comes from cni or docker",
        )),
    }
}

fn origin_pb(o: SandboxOrigin) -> i32 {
    let o = match o {
        SandboxOrigin::Berth => pb::SandboxOrigin::Berth,
        SandboxOrigin::Cni => pb::SandboxOrigin::Cni,
        SandboxOrigin::Docker => pb::SandboxOrigin::Docker,
    };
    o as i32
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Checks the identity of an attachment: container id and interface name.
fn check_ids(container_id: &str, ifname: &str) -> Result<(), Status> {
    berth_core::names::validate_container_id("container id", container_id).map_err(invalid)?;
    berth_core::names::validate_ifname("ifname", ifname).map_err(invalid)?;
    Ok(())
}

/// The embedded DNS responder's address, when one of the attachment's
/// networks resolves names.
fn nameservers(networks: &[pb::Network]) -> Vec<String> {
    let resolves = networks
        .iter()
        .filter_map(|n| NetworkSpec::from_proto(n).ok().flatten())
        .any(|n| crate::names::resolves_names(&n));
    if resolves {
        vec![crate::dns::DNS_ADDR.to_string()]
    } else {
        vec![]
    }
}

impl LocalApi {
    fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel.clone())
    }

    async fn detach(
        &self,
        origin: SandboxOrigin,
        container_id: &str,
        ifname: &str,
    ) -> Result<pb::DetachLocalResponse, Status> {
        let r = self
            .registry()
            .detach_local(pb::DetachLocalRequest {
                node: self.node.clone(),
                origin: origin_pb(origin),
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            })
            .await
            .map_err(|s| from_api(s, "detaching"))?;
        Ok(r.into_inner())
    }
}

/// An API server error as the runtime should see it: its code and words,
/// unreachable named as such.
fn from_api(s: Status, what: &str) -> Status {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded => Status::unavailable(format!(
            "{what}: the berth API server cannot be reached: {}",
            s.message()
        )),
        _ => s,
    }
}

#[tonic::async_trait]
impl LocalService for LocalApi {
    #[tracing::instrument(skip_all, fields(node = %self.node, netns = %req.get_ref().netns_path, ifname = %req.get_ref().ifname))]
    async fn attach(
        &self,
        req: Request<pb::LocalAttachRequest>,
    ) -> Result<Response<pb::LocalAttachResponse>, Status> {
        let r = req.into_inner();
        let origin = origin_of(r.origin)?;
        check_ids(&r.container_id, &r.ifname)?;
        check_netns_path(&r.netns_path)
            .map_err(|e| Status::invalid_argument(format!("invalid netns: {}", e.0)))?;
        let inode = netns::verify_net(&r.netns_path)
            .await
            .map_err(|e| Status::invalid_argument(format!("invalid netns: {e}")))?;
        // The same container interface attached to a namespace that is gone
        // (the runtime lost it without a DEL): that one goes first.
        if let Some(old) = self
            .reconciler
            .attachment(origin, &r.container_id, &r.ifname)
            .await
            && let Some(x) = &old.external
            && (x.netns_path != r.netns_path || (x.inode != 0 && x.inode != inode))
        {
            let old_alive = netns::inode(&x.netns_path).is_some_and(|i| x.inode == 0 || i == x.inode);
            if old_alive {
                return Err(Status::already_exists(format!(
                    "container {} already has {} attached in namespace {}; delete that attachment first",
                    r.container_id, r.ifname, x.netns_path
                )));
            }
            tracing::info!(sandbox = %old.name, "replacing an attachment whose namespace is gone");
            self.detach(origin, &r.container_id, &r.ifname).await?;
        }
        let resp = self
            .registry()
            .attach_local(pb::AttachLocalRequest {
                node: self.node.clone(),
                origin: r.origin,
                container_id: r.container_id,
                netns_path: r.netns_path,
                netns_inode: inode,
                ifname: r.ifname,
                network: r.network,
                ip: r.ip,
                ports: r.ports,
                aliases: r.aliases,
            })
            .await
            .map_err(|s| from_api(s, "attaching"))?
            .into_inner();
        let ns = nameservers(&resp.networks);
        Ok(Response::new(pb::LocalAttachResponse {
            sandbox: resp.sandbox,
            networks: resp.networks,
            nameservers: ns,
            search: vec![],
        }))
    }

    #[tracing::instrument(skip_all, fields(node = %self.node, ifname = %req.get_ref().ifname))]
    async fn detach(
        &self,
        req: Request<pb::LocalDetachRequest>,
    ) -> Result<Response<pb::DetachLocalResponse>, Status> {
        let r = req.into_inner();
        let origin = origin_of(r.origin)?;
        check_ids(&r.container_id, &r.ifname)?;
        Ok(Response::new(
            LocalApi::detach(self, origin, &r.container_id, &r.ifname).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(node = %self.node, netns = %req.get_ref().netns_path, ifname = %req.get_ref().ifname))]
    async fn check(
        &self,
        req: Request<pb::LocalCheckRequest>,
    ) -> Result<Response<pb::LocalCheckResponse>, Status> {
        let r = req.into_inner();
        let origin = origin_of(r.origin)?;
        check_ids(&r.container_id, &r.ifname)?;
        let Some(s) = self
            .reconciler
            .attachment(origin, &r.container_id, &r.ifname)
            .await
        else {
            return Err(Status::not_found(format!(
                "container {} has no {} attachment on node {}",
                r.container_id, r.ifname, self.node
            )));
        };
        let x = s.external.as_ref().expect("attachments are external");
        if !r.netns_path.is_empty() && x.netns_path != r.netns_path {
            return Err(Status::failed_precondition(format!(
                "container {} has {} attached in namespace {}, not {}",
                r.container_id, r.ifname, x.netns_path, r.netns_path
            )));
        }
        let diffs = self.reconciler.check(&s.id).await.map_err(Status::from)?;
        if !diffs.is_empty() {
            return Err(Status::failed_precondition(format!(
                "attachment {} of container {}: {}",
                s.name,
                r.container_id,
                diffs.join("; ")
            )));
        }
        Ok(Response::new(pb::LocalCheckResponse { attachment: None }))
    }

    async fn ready(
        &self,
        _req: Request<pb::LocalReadyRequest>,
    ) -> Result<Response<pb::LocalReadyResponse>, Status> {
        let synced = self.reconciler.synced().await;
        let api = self
            .registry()
            .list_local(pb::ListLocalRequest {
                node: self.node.clone(),
                origin: pb::SandboxOrigin::Unspecified as i32,
            })
            .await;
        let (ready, reason) = match (synced, api) {
            (false, _) => (
                false,
                format!(
                    "berth-agent on {} has not received its desired state from the API server yet",
                    self.node
                ),
            ),
            (true, Err(s)) => (
                false,
                format!("the berth API server cannot be reached: {}", s.message()),
            ),
            (true, Ok(_)) => (true, String::new()),
        };
        Ok(Response::new(pb::LocalReadyResponse { ready, reason }))
    }

    #[tracing::instrument(skip_all, fields(node = %self.node))]
    async fn collect(
        &self,
        req: Request<pb::LocalCollectRequest>,
    ) -> Result<Response<pb::LocalCollectResponse>, Status> {
        let r = req.into_inner();
        let origin = origin_of(r.origin)?;
        let keep: std::collections::BTreeSet<(String, String)> =
            r.keep.into_iter().map(|a| (a.container_id, a.ifname)).collect();
        let have = self
            .registry()
            .list_local(pb::ListLocalRequest {
                node: self.node.clone(),
                origin: r.origin,
            })
            .await
            .map_err(|s| from_api(s, "listing attachments"))?
            .into_inner();
        let mut removed = Vec::new();
        for s in have.sandboxes {
            let key = (s.container_id.clone(), s.ifname.clone());
            // The runtime's interface is the first endpoint; GC is per network.
            let network = s.endpoints.first();
            let other_network = !r.network.is_empty()
                && network.is_none_or(|e| e.network_name != r.network && e.network_id != r.network);
            if keep.contains(&key) || other_network {
                continue;
            }
            tracing::info!(sandbox = %s.name, container = %s.container_id, "not among the runtime's attachments; detaching");
            self.detach(origin, &s.container_id, &s.ifname).await?;
            removed.push(pb::Attachment {
                container_id: key.0,
                ifname: key.1,
            });
        }
        Ok(Response::new(pb::LocalCollectResponse { removed }))
    }
}

/// Binds the socket safely: a private name in the same directory, mode 0600,
/// then renamed into place (so it is never reachable with wider permissions);
/// an old socket at the path is replaced, anything else there is refused.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .context("--local-socket needs a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => anyhow::bail!(
            "--local-socket {}: something that is not a socket is there; remove it or choose another path",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving the socket to {}", path.display()))?;
    Ok(listener)
}

/// Serves the local service on `listener` until the task is aborted;
/// connections from anyone but root are dropped (the mode already keeps
/// others out; this holds even if it is changed).
pub async fn serve(listener: UnixListener, api: LocalApi) -> anyhow::Result<()> {
    let incoming = UnixListenerStream::new(listener).filter(|c| match c {
        Ok(s) => match s.peer_cred() {
            Ok(cred) if cred.uid() == 0 => true,
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "refused a local connection from a user other than root"
                );
                false
            }
            Err(_) => false,
        },
        Err(_) => true,
    });
    tonic::transport::Server::builder()
        .add_service(LocalServiceServer::new(api))
        .serve_with_incoming(incoming)
        .await
        .context("local service")
}

/// Detaches, through the API server, the attachments whose runtime's
/// namespace vanished (queued by passes). Runs forever; a failed detach is
/// queued again by the next full pass.
pub async fn detach_vanished(node: String, reconciler: Arc<Reconciler>, channel: Channel) {
    let wake = reconciler.vanished_wake();
    loop {
        wake.notified().await;
        for (id, x) in reconciler.take_vanished() {
            let External {
                origin,
                container_id,
                ifname,
                ..
            } = x;
            let mut client = RegistryServiceClient::new(channel.clone());
            let res = client
                .detach_local(pb::DetachLocalRequest {
                    node: node.clone(),
                    origin: origin_pb(origin),
                    container_id,
                    ifname,
                })
                .await;
            match res {
                Ok(_) => tracing::info!(sandbox = %id, "detached an attachment whose namespace vanished"),
                Err(s) => {
                    tracing::warn!(sandbox = %id, error = %s.message(), "could not detach a vanished attachment; the next full pass tries again")
                }
            }
        }
    }
}
