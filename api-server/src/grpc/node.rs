//! `berth.v1.NodeService` (for people) and `berth.v1.RegistryService` (for agents).
use berth_proto::v1 as pb;
use berth_proto::v1::node_service_server::NodeService;
use berth_proto::v1::registry_service_server::RegistryService;
use tonic::{Request, Response, Status};

use super::convert;
use crate::nodes::{Nodes, Registration};
use crate::sandboxes::Sandboxes;

pub struct NodeApi {
    pub nodes: Nodes,
    pub sandboxes: Sandboxes,
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.nodes.list().await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes.iter().map(convert::node).collect(),
        }))
    }

    async fn version(
        &self,
        _req: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: "berth.v1".to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }))
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let r = req.into_inner();
        self.sandboxes.remove_node(&r.name, r.force).await?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }
}

#[tonic::async_trait]
impl RegistryService for NodeApi {
    #[tracing::instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        let routes: Vec<(String, String)> = r.routes.into_iter().map(|x| (x.destination, x.device)).collect();
        let reg = Registration::validate(&r.name, &r.address, &r.agent_url, r.mtu, &routes)?;
        let lease_id = self.nodes.register(reg).await?;
        Ok(Response::new(pb::RegisterResponse {
            lease_id,
            ttl_seconds: self.nodes.ttl_seconds(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let ttl_seconds = self.nodes.heartbeat(&r.name, r.lease_id).await?;
        Ok(Response::new(pb::HeartbeatResponse { ttl_seconds }))
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node))]
    async fn desired_state(
        &self,
        req: Request<pb::DesiredStateRequest>,
    ) -> Result<Response<pb::NodeState>, Status> {
        let node = &req.get_ref().node;
        self.nodes.get(node).await?;
        let state = self.sandboxes.desired_state(node).await?;
        Ok(Response::new(convert::node_state(&state)))
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node, netns = %req.get_ref().netns_path, ifname = %req.get_ref().ifname))]
    async fn attach_local(
        &self,
        req: Request<pb::AttachLocalRequest>,
    ) -> Result<Response<pb::AttachLocalResponse>, Status> {
        super::local::attach(&self.sandboxes, req.get_ref()).await
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node, ifname = %req.get_ref().ifname))]
    async fn detach_local(
        &self,
        req: Request<pb::DetachLocalRequest>,
    ) -> Result<Response<pb::DetachLocalResponse>, Status> {
        super::local::detach(&self.sandboxes, req.get_ref()).await
    }

    async fn list_local(
        &self,
        req: Request<pb::ListLocalRequest>,
    ) -> Result<Response<pb::ListLocalResponse>, Status> {
        super::local::list(&self.sandboxes, req.get_ref()).await
    }

    #[tracing::instrument(skip_all, fields(node = %req.get_ref().node, network = %req.get_ref().name))]
    async fn ensure_network(
        &self,
        req: Request<pb::EnsureNetworkRequest>,
    ) -> Result<Response<pb::EnsureNetworkResponse>, Status> {
        super::local::ensure_network(&self.sandboxes, req.into_inner()).await
    }
}
