//! `berth.v1.SandboxService`: validates requests and calls [`Sandboxes`];
//! `Exec` relays the owning agent's output stream.
use std::pin::Pin;

use berth_proto::v1 as pb;
use berth_proto::v1::sandbox_service_server::SandboxService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, page};
use crate::error::ApiError;
use crate::page::PageRequest;
use crate::sandboxes::{SandboxSpec, Sandboxes};

pub struct SandboxApi {
    pub sandboxes: Sandboxes,
}

#[tonic::async_trait]
impl SandboxService for SandboxApi {
    #[tracing::instrument(skip_all, fields(sandbox = %req.get_ref().name))]
    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::CreateSandboxResponse>, Status> {
        let spec = SandboxSpec::validate(&convert::sandbox_request(req.into_inner()))?;
        let view = self.sandboxes.create(spec).await?;
        Ok(Response::new(pb::CreateSandboxResponse {
            sandbox: Some(convert::sandbox_view(&view)),
        }))
    }

    async fn list_sandboxes(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let r = req.get_ref();
        let page = PageRequest::validate(r.page_size, &r.page_token)?;
        let listed = self.sandboxes.list_page(&page).await?;
        let (sandboxes, next_page_token) = page::fit(
            listed.items.iter().map(convert::sandbox_view).collect(),
            listed.more,
            |s| &s.id,
        );
        Ok(Response::new(pb::ListSandboxesResponse {
            sandboxes,
            next_page_token,
        }))
    }

    async fn inspect_sandbox(
        &self,
        req: Request<pb::InspectSandboxRequest>,
    ) -> Result<Response<pb::InspectSandboxResponse>, Status> {
        let view = self.sandboxes.find(&req.get_ref().name_or_id).await?;
        Ok(Response::new(pb::InspectSandboxResponse {
            sandbox: Some(convert::sandbox_view(&view)),
        }))
    }

    #[tracing::instrument(skip_all, fields(sandbox = %req.get_ref().name_or_id))]
    async fn remove_sandbox(
        &self,
        req: Request<pb::RemoveSandboxRequest>,
    ) -> Result<Response<pb::RemoveSandboxResponse>, Status> {
        let r = req.into_inner();
        let view = self.sandboxes.remove(&r.name_or_id, r.force).await?;
        Ok(Response::new(pb::RemoveSandboxResponse { id: view.record.id }))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(sandbox = %req.get_ref().sandbox))]
    async fn exec(&self, req: Request<pb::ExecRequest>) -> Result<Response<Self::ExecStream>, Status> {
        // Every exec is logged with who asked (crate::access put it there).
        let caller = crate::access::caller_of(&req);
        let r = req.into_inner();
        tracing::info!(caller = %caller, command = ?r.command, "exec");
        if r.command.is_empty() || r.command[0].is_empty() {
            return Err(Status::invalid_argument(
                "invalid command: give the program to run",
            ));
        }
        berth_core::limits::check_command("command", &r.command).map_err(ApiError::from)?;
        let (node, target) = self.sandboxes.exec_target(&r.sandbox).await?;
        let stream = self.sandboxes.agents().exec(&node, &target, r.command).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}
