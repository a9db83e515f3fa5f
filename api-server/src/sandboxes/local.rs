//! Attachments of container runtimes' namespaces (the runtime fronts: CNI,
//! Docker), asked for by the agent of the node they are on
//! (`RegistryService.AttachLocal/DetachLocal/ListLocal`). Each is a sandbox
//! of that origin, created and removed by exactly the flow of
//! `SandboxService.CreateSandbox/RemoveSandbox` (recorded `creating`,
//! realised by the agent, `ready`; marked `removing`, removed by the agent,
//! deleted), named after the container (`cni-<12 of its id>[-<ifname>]`),
//! idempotent for the same container interface and namespace.
use berth_core::names::{external_sandbox_names, validate_container_id, validate_ifname, validate_name};

use super::{PortRequest, SandboxRequest, SandboxSpec, SandboxView, Sandboxes};
use crate::error::{ApiError, Result};
use crate::store::records::{ExternalRef, Phase, SandboxOrigin};

/// An `AttachLocal` as it arrived (the gRPC edge builds it).
#[derive(Debug, Clone, Default)]
pub struct AttachInput {
    pub node: String,
    /// `None`: the request named no runtime front (refused).
    pub origin: Option<SandboxOrigin>,
    pub container_id: String,
    pub netns_path: String,
    pub netns_inode: u64,
    pub ifname: String,
    pub network: String,
    pub ip: String,
    pub ports: Vec<PortRequest>,
    pub aliases: Vec<String>,
}

/// A validated `AttachLocal`.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub node: String,
    pub origin: SandboxOrigin,
    pub external: ExternalRef,
    /// The sandbox request it comes to (name left for [`Sandboxes::attach_local`]).
    pub spec: SandboxSpec,
}

/// The origin of a runtime front's request: cni or docker.
pub fn external_origin(o: Option<SandboxOrigin>) -> Result<SandboxOrigin> {
    match o {
        Some(o) if o.is_external() => Ok(o),
        _ => Err(berth_core::Invalid::new("origin", "an attachment comes from cni or docker").into()),
    }
}

/// Checks the identity of an attachment: node, container id, interface.
pub fn validate_ids(node: &str, container_id: &str, ifname: &str) -> Result<()> {
    validate_name("node", node)?;
    validate_container_id("container id", container_id)?;
    validate_ifname("ifname", ifname)?;
    Ok(())
}

impl AttachRequest {
    pub fn validate(r: &AttachInput) -> Result<Self> {
        let origin = external_origin(r.origin)?;
        validate_ids(&r.node, &r.container_id, &r.ifname)?;
        // Docker's endpoints have no namespace berth sees: dockerd moves the
        // interface berth hands it into the container's (docs/docker.md).
        let docker_handoff = origin == SandboxOrigin::Docker && r.netns_path.is_empty();
        if !docker_handoff && !r.netns_path.starts_with('/')
            || r.netns_path.len() > 4096
            || r.netns_path.split('/').any(|c| c == "..")
        {
            return Err(
                berth_core::Invalid::new("netns path", "must be an absolute path without '..'").into(),
            );
        }
        if r.network.is_empty() {
            return Err(berth_core::Invalid::new("network", "name the berth network to attach to").into());
        }
        // The same checks as a sandbox create (ports, address, aliases, limits).
        let mut spec = SandboxSpec::validate(&SandboxRequest {
            name: "attachment".into(),
            node: r.node.clone(),
            network: r.network.clone(),
            ip: r.ip.clone(),
            ip6: String::new(),
            aliases: r.aliases.clone(),
            links: vec![],
            ports: r.ports.clone(),
            command: vec![],
        })?;
        let external = ExternalRef {
            container_id: r.container_id.clone(),
            netns_path: r.netns_path.clone(),
            netns_inode: r.netns_inode,
            ifname: r.ifname.clone(),
        };
        spec.external = Some((origin, external.clone()));
        Ok(Self {
            node: r.node.clone(),
            origin,
            external,
            spec,
        })
    }
}

/// The interface of an overlay attachment on the node's gateway bridge
/// (outbound traffic and published ports): `<ifname>gw`, within the
/// kernel's 15 bytes, so it never takes a name the runtime numbers (eth1, …).
pub fn gateway_ifname(ifname: &str) -> String {
    let keep: String = ifname.chars().take(13).collect();
    format!("{keep}gw")
}

/// What the candidate names of an attachment came to.
enum Found {
    /// Recorded as this sandbox.
    Existing(Box<SandboxView>),
    /// Not recorded; this name is free for it.
    Free(String),
}

impl Sandboxes {
    /// The attachment of a container interface on `node`, or the name to create it under.
    async fn find_attachment(
        &self,
        node: &str,
        origin: SandboxOrigin,
        container_id: &str,
        ifname: &str,
    ) -> Result<Found> {
        let names = external_sandbox_names(origin.as_str(), container_id, ifname);
        let mut free = None;
        for name in &names {
            let view = match self.find(name).await {
                Ok(v) => v,
                Err(ApiError::NotFound { .. }) => {
                    free.get_or_insert_with(|| name.clone());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let r = &view.record;
            let ours = r.origin == origin
                && r.node == node
                && r.external
                    .as_ref()
                    .is_some_and(|x| x.container_id == container_id && x.ifname == ifname);
            if ours {
                return Ok(Found::Existing(Box::new(view)));
            }
        }
        free.map(Found::Free).ok_or_else(|| {
            ApiError::AlreadyExists(format!(
                "the sandbox names for container {container_id} ({}) are all taken by other sandboxes",
                names.join(", ")
            ))
        })
    }

    /// Attaches a runtime's namespace; returns the sandbox and whether it
    /// was attached already (same container interface, same namespace).
    pub async fn attach_local(&self, req: AttachRequest) -> Result<(SandboxView, bool)> {
        let x = &req.external;
        match self
            .find_attachment(&req.node, req.origin, &x.container_id, &x.ifname)
            .await?
        {
            Found::Existing(view) => {
                let have = view.record.external.as_ref().expect("matched on it");
                let same_ns = have.netns_path == x.netns_path
                    && (have.netns_inode == 0 || x.netns_inode == 0 || have.netns_inode == x.netns_inode);
                if !same_ns {
                    return Err(ApiError::AlreadyExists(format!(
                        "container {} already has {} attached on node {} in namespace {} (sandbox {}); detach it first",
                        x.container_id, x.ifname, req.node, have.netns_path, view.record.name
                    )));
                }
                match view.record.phase {
                    Phase::Ready => Ok((*view, true)),
                    Phase::Creating => Err(ApiError::Aborted(format!(
                        "sandbox {} of container {} is being attached; try again",
                        view.record.name, x.container_id
                    ))),
                    Phase::Removing => Err(ApiError::Aborted(format!(
                        "sandbox {} of container {} is being detached; try again shortly",
                        view.record.name, x.container_id
                    ))),
                }
            }
            Found::Free(name) => {
                let network = self.networks.find(&req.spec.network).await?;
                if !network.driver.has_ipam() {
                    return Err(berth_core::Invalid::new(
                        "network",
                        format!(
                            "{} is a {} network: a runtime's namespace attaches to a bridge or overlay network",
                            network.name, network.driver
                        ),
                    )
                    .into());
                }
                let spec = SandboxSpec { name, ..req.spec };
                tracing::info!(sandbox = %spec.name, node = %req.node, network = %network.name, "attaching a runtime's namespace");
                Ok((self.create(spec).await?, false))
            }
        }
    }

    /// Detaches a container interface on `node`; `None` when there was no
    /// such attachment (not an error: runtimes delete twice).
    pub async fn detach_local(
        &self,
        node: &str,
        origin: SandboxOrigin,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<String>> {
        let Found::Existing(view) = self.find_attachment(node, origin, container_id, ifname).await? else {
            return Ok(None);
        };
        match self.remove(&view.record.id, false).await {
            Ok(v) => Ok(Some(v.record.id)),
            // Someone else (the repair loop, another DEL) finished it meanwhile.
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The attachments on `node`, of one origin or (`None`) of every runtime front.
    pub async fn list_local(&self, node: &str, origin: Option<SandboxOrigin>) -> Result<Vec<SandboxView>> {
        validate_name("node", node)?;
        let mut views = self.list(Some(node)).await?;
        views.retain(|v| {
            v.record.origin.is_external()
                && v.record.external.is_some()
                && origin.is_none_or(|o| o == v.record.origin)
        });
        Ok(views)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AttachInput {
        AttachInput {
            node: "node1".into(),
            origin: Some(SandboxOrigin::Cni),
            container_id: "0123456789abcdef".into(),
            netns_path: "/run/netns/netns-1".into(),
            netns_inode: 7,
            ifname: "eth0".into(),
            network: "demo".into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        let ok = AttachRequest::validate(&req()).unwrap();
        assert_eq!(ok.origin, SandboxOrigin::Cni);
        assert!(ok.spec.external.is_some());
        let bad = |f: fn(&mut AttachInput)| {
            let mut r = req();
            f(&mut r);
            AttachRequest::validate(&r).unwrap_err().to_string()
        };
        assert!(bad(|r| r.origin = Some(SandboxOrigin::Berth)).contains("origin"));
        assert!(bad(|r| r.origin = None).contains("origin"));
        assert!(bad(|r| r.container_id = "a b".into()).contains("container id"));
        assert!(bad(|r| r.ifname = "e*".into()).contains("ifname"));
        assert!(bad(|r| r.netns_path = "netns-1".into()).contains("netns path"));
        assert!(bad(|r| r.netns_path = "/run/../etc".into()).contains("netns path"));
        assert!(bad(|r| r.network = String::new()).contains("network"));
        assert!(bad(|r| r.ip = "10.0.0".into()).contains("ip"));
        assert_eq!(gateway_ifname("eth0"), "eth0gw");
        assert_eq!(gateway_ifname("abcdefghijklmno").len(), 15);
    }
}
