//! `RegistryService.AttachLocal/DetachLocal/ListLocal`: a node's agent
//! attaching container runtimes' namespaces on its own node (the caller's
//! node name is checked against its certificate by the registry guard).
use berth_proto::v1 as pb;
use tonic::{Response, Status};

use super::convert;
use crate::sandboxes::Sandboxes;
use crate::sandboxes::local::{AttachRequest, external_origin, validate_ids};

pub async fn attach(
    sandboxes: &Sandboxes,
    r: &pb::AttachLocalRequest,
) -> Result<Response<pb::AttachLocalResponse>, Status> {
    let req = AttachRequest::validate(r)?;
    let (view, existing) = sandboxes.attach_local(req).await?;
    Ok(Response::new(pb::AttachLocalResponse {
        networks: view.endpoints.iter().map(|(_, n)| convert::network(n)).collect(),
        sandbox: Some(view.to_proto()),
        existing,
    }))
}

pub async fn detach(
    sandboxes: &Sandboxes,
    r: &pb::DetachLocalRequest,
) -> Result<Response<pb::DetachLocalResponse>, Status> {
    let origin = external_origin(r.origin)?;
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
        _ => Some(external_origin(r.origin)?),
    };
    let views = sandboxes.list_local(&r.node, origin).await?;
    Ok(Response::new(pb::ListLocalResponse {
        sandboxes: views.iter().map(|v| v.to_proto()).collect(),
    }))
}
