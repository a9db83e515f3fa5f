//! `berth.v1.AgentService`: the commands the API server sends this node.
//! Kernel work arrives with the node-agent issue; until then only `Status`
//! answers and the rest say UNIMPLEMENTED.
use std::pin::Pin;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_service_server::AgentService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct AgentApi {
    pub node: String,
}

fn not_yet() -> Status {
    Status::unimplemented("this agent does not realise networks yet")
}

type Reply = Result<Response<pb::AgentReply>, Status>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn ensure_network(&self, _r: Request<pb::EnsureNetworkRequest>) -> Reply {
        Err(not_yet())
    }
    async fn remove_network(&self, _r: Request<pb::RemoveAgentNetworkRequest>) -> Reply {
        Err(not_yet())
    }
    async fn ensure_sandbox(&self, _r: Request<pb::EnsureSandboxRequest>) -> Reply {
        Err(not_yet())
    }
    async fn remove_sandbox(&self, _r: Request<pb::RemoveAgentSandboxRequest>) -> Reply {
        Err(not_yet())
    }
    async fn ensure_endpoint(&self, _r: Request<pb::EnsureEndpointRequest>) -> Reply {
        Err(not_yet())
    }
    async fn remove_endpoint(&self, _r: Request<pb::RemoveEndpointRequest>) -> Reply {
        Err(not_yet())
    }
    async fn set_overlay_peers(&self, _r: Request<pb::OverlayPeers>) -> Reply {
        Err(not_yet())
    }
    async fn sync(&self, _r: Request<pb::NodeState>) -> Reply {
        Err(not_yet())
    }
    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            node: self.node.clone(),
            converged: false,
            ..Default::default()
        }))
    }
    type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;
    async fn exec(
        &self,
        _r: Request<pb::AgentExecRequest>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(not_yet())
    }
}
