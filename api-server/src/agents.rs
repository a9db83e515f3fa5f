//! Clients for the node agents: one lazily connected channel per agent URL,
//! and the mapping of agent failures to UNAVAILABLE.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ApiError, Result};
use crate::store::records::NodeRecord;

/// How long one agent command may take before the node counts as unavailable.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct Agents {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Agents {
    /// A client for the agent of `node`.
    pub fn client(&self, node: &NodeRecord) -> Result<AgentServiceClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(&node.agent_url) {
            return Ok(AgentServiceClient::new(ch.clone()));
        }
        let ch = Endpoint::from_shared(node.agent_url.clone())
            .map_err(|e| ApiError::Internal(format!("agent url {}: {e}", node.agent_url)))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(AGENT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(node.agent_url.clone(), ch.clone());
        Ok(AgentServiceClient::new(ch))
    }
}

/// The error a failed agent call becomes: the node is unavailable, with the
/// agent's own words.
pub fn unavailable(node: &str, status: tonic::Status) -> ApiError {
    let msg = status.message();
    let detail = if msg.is_empty() {
        status.code().description()
    } else {
        msg
    };
    ApiError::Unavailable(format!("node {node} is unavailable: {detail}"))
}
