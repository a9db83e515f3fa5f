//! Clients for the node agents: one lazily connected channel per agent URL
//! (mutual TLS for `https://` URLs), and the mapping of agent failures to
//! UNAVAILABLE.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{ApiError, Result};
use crate::store::records::NodeRecord;

/// How long one agent command may take before the node counts as unavailable.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub fn client(&self, node: &NodeRecord) -> Result<AgentServiceClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(&node.agent_url) {
            return Ok(AgentServiceClient::new(ch.clone()));
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
        Ok(AgentServiceClient::new(ch))
    }
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
