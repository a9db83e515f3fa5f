//! `RegistryService.AttachLocal/DetachLocal/ListLocal`: a node's agent
//! attaching container runtimes' namespaces on its own node (the caller's
//! node name is checked against its certificate by the registry guard).
use berth_proto::v1 as pb;
use tonic::{Response, Status};

use super::convert;
use crate::sandboxes::local::{AttachInput, AttachRequest, external_origin, validate_ids};
use crate::sandboxes::{PortRequest, Sandboxes};
use crate::store::records::SandboxOrigin;

/// A runtime front's origin; `None` for berth's own or an unknown value.
fn origin(o: i32) -> Option<SandboxOrigin> {
    match pb::SandboxOrigin::try_from(o) {
        Ok(pb::SandboxOrigin::Cni) => Some(SandboxOrigin::Cni),
        Ok(pb::SandboxOrigin::Docker) => Some(SandboxOrigin::Docker),
        _ => None,
    }
}

pub async fn attach(
    sandboxes: &Sandboxes,
    r: &pb::AttachLocalRequest,
) -> Result<Response<pb::AttachLocalResponse>, Status> {
    let input = AttachInput {
        node: r.node.clone(),
        origin: origin(r.origin),
        container_id: r.container_id.clone(),
        netns_path: r.netns_path.clone(),
        netns_inode: r.netns_inode,
        ifname: r.ifname.clone(),
        network: r.network.clone(),
        ip: r.ip.clone(),
        ports: r
            .ports
            .iter()
            .map(|p| PortRequest {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: pb::PortProtocol::name_of(p.protocol),
            })
            .collect(),
        aliases: r.aliases.clone(),
    };
    let req = AttachRequest::validate(&input)?;
    let (view, existing) = sandboxes.attach_local(req).await?;
    Ok(Response::new(pb::AttachLocalResponse {
        networks: convert::sandbox_networks(&view),
        sandbox: Some(convert::sandbox_view(&view)),
        existing,
    }))
}

pub async fn detach(
    sandboxes: &Sandboxes,
    r: &pb::DetachLocalRequest,
) -> Result<Response<pb::DetachLocalResponse>, Status> {
    let origin = external_origin(origin(r.origin))?;
    validate_ids(&r.node, &r.container_id, &r.ifname)?;
    let id = sandboxes
        .detach_local(&r.node, origin, &r.container_id, &r.ifname)
        .await?;
    Ok(Response::new(pb::DetachLocalResponse {
        found: id.is_some(),
        sandbox_id: id.unwrap_or_default(),
    }))
}

pub async fn list(
    sandboxes: &Sandboxes,
    r: &pb::ListLocalRequest,
) -> Result<Response<pb::ListLocalResponse>, Status> {
    let origin = match pb::SandboxOrigin::try_from(r.origin) {
        Ok(pb::SandboxOrigin::Unspecified) => None,
        _ => Some(external_origin(origin(r.origin))?),
    };
    let views = sandboxes.list_local(&r.node, origin).await?;
    Ok(Response::new(pb::ListLocalResponse {
        sandboxes: views.iter().map(convert::sandbox_view).collect(),
    }))
}

pub async fn ensure_network(
    sandboxes: &Sandboxes,
    r: pb::EnsureNetworkRequest,
) -> Result<Response<pb::EnsureNetworkResponse>, Status> {
    berth_core::names::validate_name("node", &r.node).map_err(crate::error::ApiError::from)?;
    let driver = convert::driver_from_proto(r.driver).map_err(crate::error::ApiError::from)?;
    let spec = crate::networks::NetworkSpec::validate(
        &r.name,
        driver,
        &r.subnet,
        &r.gateway,
        r.options.into_iter().collect(),
        r.labels.into_iter().collect(),
    )?;
    let (net, created) = sandboxes.networks().ensure(spec).await?;
    if created {
        tracing::info!(network = %net.name, node = %r.node, "created a network for a runtime front");
    }
    Ok(Response::new(pb::EnsureNetworkResponse {
        network: Some(convert::network(&net)),
        created,
    }))
}
