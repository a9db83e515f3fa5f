//! `berth.v1.SandboxService`. Sandboxes need the node agent; until it exists
//! every call answers UNIMPLEMENTED with a message saying so.
use std::pin::Pin;

use berth_proto::v1 as pb;
use berth_proto::v1::sandbox_service_server::SandboxService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;

pub struct SandboxApi;

fn not_yet() -> Status {
    ApiError::Unimplemented("sandboxes need the node agent, which is not built yet".into()).into()
}

#[tonic::async_trait]
impl SandboxService for SandboxApi {
    async fn create_sandbox(
        &self,
        _r: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::CreateSandboxResponse>, Status> {
        Err(not_yet())
    }
    async fn list_sandboxes(
        &self,
        _r: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        Err(not_yet())
    }
    async fn inspect_sandbox(
        &self,
        _r: Request<pb::InspectSandboxRequest>,
    ) -> Result<Response<pb::InspectSandboxResponse>, Status> {
        Err(not_yet())
    }
    async fn remove_sandbox(
        &self,
        _r: Request<pb::RemoveSandboxRequest>,
    ) -> Result<Response<pb::RemoveSandboxResponse>, Status> {
        Err(not_yet())
    }
    type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;
    async fn exec(&self, _r: Request<pb::ExecRequest>) -> Result<Response<Self::ExecStream>, Status> {
        Err(not_yet())
    }
}
