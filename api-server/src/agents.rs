//! The agent client edge: one lazily connected channel per agent URL
//! (mutual TLS for `https://` URLs), one typed call per agent command
//! (domain values in, proto messages built here and in `grpc::convert`),
//! and the mapping of agent failures to API errors.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_service_client::AgentServiceClient;
use tonic::Status;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{ApiError, Result};
use crate::grpc::convert;
use crate::overlay::PeerSet;
use crate::sandboxes::{ExecTarget, NodeState, SandboxView};
use crate::store::records::NodeRecord;

/// How long one agent command may take before the node counts as unavailable.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `berth doctor` waits for one agent.
pub const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
pub struct Agents {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The API server's CA and certificate, for `https://` agent URLs.
    tls: Option<ClientTlsConfig>,
}

impl Agents {
    /// Clients that use `tls` for agents registered with `https://` URLs.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// A client for the agent of `node`.
    fn client(&self, node: &NodeRecord) -> Result<AgentServiceClient<Channel>, Status> {
        self.channel(node)
            .map(AgentServiceClient::new)
            .map_err(Status::from)
    }

    /// EnsureSandbox: the sandbox as `view` has it, with its networks and
    /// the peer sets of its overlays.
    pub async fn ensure_sandbox(
        &self,
        node: &NodeRecord,
        view: &SandboxView,
        peers: &[PeerSet],
    ) -> Result<(), Status> {
        self.client(node)?
            .ensure_sandbox(pb::EnsureSandboxRequest {
                sandbox: Some(convert::sandbox_view(view)),
                networks: convert::sandbox_networks(view),
                peers: peers.iter().map(convert::peer_set).collect(),
            })
            .await?;
        Ok(())
    }

    /// RemoveSandbox of the record `view` has, at its generation.
    pub async fn remove_sandbox(&self, node: &NodeRecord, view: &SandboxView) -> Result<(), Status> {
        self.client(node)?
            .remove_sandbox(pb::RemoveAgentSandboxRequest {
                sandbox_id: view.record.id.clone(),
                netns: view.record.netns.clone().unwrap_or_default(),
                generation: view.generation,
            })
            .await?;
        Ok(())
    }

    /// SetOverlayPeers.
    pub async fn set_overlay_peers(&self, node: &NodeRecord, set: &PeerSet) -> Result<(), Status> {
        self.client(node)?
            .set_overlay_peers(convert::peer_set(set))
            .await?;
        Ok(())
    }

    /// Sync: the node converges to exactly `state`.
    pub async fn sync(&self, node: &NodeRecord, state: &NodeState) -> Result<(), Status> {
        self.client(node)?.sync(convert::node_state(state)).await?;
        Ok(())
    }

    /// Status, as far as the repair loop needs it.
    pub async fn status(&self, node: &NodeRecord) -> Result<AgentStatus, Status> {
        let s = self
            .client(node)?
            .status(pb::StatusRequest {})
            .await?
            .into_inner();
        Ok(AgentStatus {
            sandboxes: s.sandboxes as usize,
            failing: s.objects.iter().any(|o| !o.ok),
        })
    }

    /// Diagnose (berth doctor): read-only; a short deadline, so one stuck
    /// agent does not hold up a report on every node.
    pub async fn diagnose(
        &self,
        node: &NodeRecord,
        paths: Vec<pb::PathQuestion>,
    ) -> Result<pb::DiagnoseResponse, ApiError> {
        let mut req = tonic::Request::new(pb::DiagnoseRequest { paths });
        req.set_timeout(DIAGNOSE_TIMEOUT);
        let mut client = self.client(node).map_err(|s| agent_error(&node.name, s))?;
        match client.diagnose(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(agent_error(&node.name, s)),
        }
    }

    /// Exec: runs `command` where `target` says and streams its output
    /// (the gRPC edge relays the stream as it is). An agent that cannot be
    /// reached is UNAVAILABLE naming the node; what the agent refused
    /// (a missing program, a bad namespace) keeps the agent's own status.
    pub async fn exec(
        &self,
        node: &NodeRecord,
        target: &ExecTarget,
        command: Vec<String>,
    ) -> Result<tonic::Streaming<pb::ExecOutput>, Status> {
        let stream = self
            .client(node)?
            .exec(pb::AgentExecRequest {
                netns: target.netns.clone(),
                command,
                sandbox_name: target.sandbox_name.clone(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                    Status::from(agent_error(&node.name, s))
                }
                _ => s,
            })?;
        Ok(stream.into_inner())
    }

    fn channel(&self, node: &NodeRecord) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(&node.agent_url) {
            return Ok(ch.clone());
        }
        let mut endpoint = Endpoint::from_shared(node.agent_url.clone())
            .map_err(|e| ApiError::Internal(format!("agent url {}: {e}", node.agent_url)))?;
        if node.agent_url.starts_with("https://") {
            let Some(tls) = &self.tls else {
                return Err(ApiError::Unavailable(format!(
                    "node {} is unavailable: its agent uses TLS ({}) and this API server has no --tls-ca/--tls-cert/--tls-key",
                    node.name, node.agent_url
                )));
            };
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| ApiError::Internal(format!("agent url {}: {e}", node.agent_url)))?;
        }
        let ch = endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(AGENT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(node.agent_url.clone(), ch.clone());
        Ok(ch)
    }
}

/// What an agent's `Status` says, as far as the repair loop needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStatus {
    /// Sandboxes the agent holds.
    pub sandboxes: usize,
    /// Some object failed its last pass.
    pub failing: bool,
}

/// The error a failed agent call becomes, by what the agent said: it could
/// not be reached (UNAVAILABLE, "node X is unavailable"), or it refused
/// (the agent's code and words, naming the node: a conflict or a kernel
/// refusal is FAILED_PRECONDITION, a kernel failure INTERNAL, a stale
/// command ABORTED).
pub fn agent_error(node: &str, status: tonic::Status) -> ApiError {
    use tonic::Code;
    let msg = status.message();
    let detail = if msg.is_empty() {
        status.code().description()
    } else {
        msg
    };
    match status.code() {
        Code::FailedPrecondition => ApiError::FailedPrecondition(format!("node {node}: {detail}")),
        Code::Aborted => ApiError::Aborted(format!("node {node}: {detail}")),
        Code::Internal | Code::InvalidArgument => ApiError::Node {
            code: Code::Internal,
            message: format!("node {node}: {detail}"),
        },
        Code::PermissionDenied | Code::Unauthenticated => ApiError::Unavailable(format!(
            "node {node} is unavailable: its agent refused this API server: {detail}"
        )),
        _ => ApiError::Unavailable(format!("node {node} is unavailable: {detail}")),
    }
}
