//! What a node should have (its full sync), and removing a node with
//! everything recorded on it.
use std::collections::BTreeMap;

use super::{SandboxView, Sandboxes};
use crate::error::{ApiError, Result};
use crate::ipam;
use crate::overlay::PeerSet;
use crate::store::records::{NetworkRecord, Phase};

/// Everything one node should have, read at one etcd revision.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub node: String,
    /// Every network the sandboxes' endpoints use, in id order.
    pub networks: Vec<NetworkRecord>,
    pub sandboxes: Vec<SandboxView>,
    /// The peer sets of the overlay networks among `networks`.
    pub peers: Vec<PeerSet>,
    pub revision: u64,
}

impl Sandboxes {
    /// Everything `node` should have, for a full sync: its sandboxes that
    /// are being created or are ready, without endpoints being removed,
    /// read through the node's index keys (the cost grows with the node).
    pub async fn desired_state(&self, node: &str) -> Result<NodeState> {
        let (mut views, revision) = self.list_node(node).await?;
        views.retain(|v| v.record.phase != Phase::Removing);
        for v in &mut views {
            v.endpoints.retain(|(e, _)| !e.removing);
        }
        let mut networks: BTreeMap<String, &NetworkRecord> = BTreeMap::new();
        for v in &views {
            for (_, n) in &v.endpoints {
                networks.entry(n.id.clone()).or_insert(n);
            }
        }
        let refs: Vec<&NetworkRecord> = networks.values().copied().collect();
        let peers = self.overlay.peers_for_node(node, &refs).await?;
        Ok(NodeState {
            node: node.to_string(),
            networks: refs.into_iter().cloned().collect(),
            sandboxes: views,
            peers,
            revision: revision.max(0) as u64,
        })
    }

    /// Forgets a node and everything recorded on it: its sandboxes, their
    /// endpoints and addresses, and tells the other nodes. A ready node is
    /// only removed with `force`. One operation with intent: the node is
    /// marked removing first (it cannot register meanwhile), so the repair
    /// loop finishes a removal that was interrupted.
    pub async fn remove_node(&self, name: &str, force: bool) -> Result<usize> {
        let node = self.nodes.get(name).await?;
        if node.ready && !force && !node.record.removing {
            return Err(ApiError::FailedPrecondition(format!(
                "node {name} is ready; stop its agent first or use --force"
            )));
        }
        self.nodes.mark_removing(name).await?;
        let mut touched: BTreeMap<String, NetworkRecord> = BTreeMap::new();
        let mut removed = 0;
        for _ in 0..ipam::MAX_ATTEMPTS {
            let views = self.list(Some(name)).await?;
            if views.is_empty() {
                break;
            }
            for v in &views {
                for (_, n) in &v.endpoints {
                    touched.insert(n.id.clone(), n.clone());
                }
                // Unchanged since read, or read again next round.
                if self.delete_records(v).await? {
                    removed += 1;
                }
            }
        }
        if !self.list(Some(name)).await?.is_empty() {
            return Err(ApiError::Aborted(format!(
                "sandboxes kept appearing on node {name}; the repair loop finishes its removal"
            )));
        }
        self.nodes.remove_record(name).await?;
        let refs: Vec<&NetworkRecord> = touched.values().collect();
        self.overlay.notify(&refs, name).await;
        tracing::info!(node = %name, sandboxes = removed, "node removed with its sandboxes");
        Ok(removed)
    }
}
