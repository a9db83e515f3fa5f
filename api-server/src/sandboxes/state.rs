//! What a node should have (its full sync), and removing a node with
//! everything recorded on it.
use std::collections::BTreeMap;

use berth_proto::v1 as pb;

use super::{SandboxView, Sandboxes};
use crate::error::{ApiError, Result};
use crate::grpc::convert;
use crate::store::records::NetworkRecord;

impl Sandboxes {
    /// Everything `node` should have, for a full sync.
    pub async fn desired_state(&self, node: &str) -> Result<pb::NodeState> {
        let (views, revision) = self.list_at(Some(node)).await?;
        let mut networks: BTreeMap<String, &NetworkRecord> = BTreeMap::new();
        for v in &views {
            for (_, n) in &v.endpoints {
                networks.entry(n.id.clone()).or_insert(n);
            }
        }
        let refs: Vec<&NetworkRecord> = networks.values().copied().collect();
        let peers = self.overlay.peers_for_node(node, &refs).await?;
        Ok(pb::NodeState {
            node: node.to_string(),
            networks: refs.iter().map(|n| convert::network(n)).collect(),
            sandboxes: views.iter().map(SandboxView::to_proto).collect(),
            peers,
            revision: revision.max(0) as u64,
        })
    }

    /// Forgets a node and everything recorded on it: its sandboxes, their
    /// endpoints and addresses, and tells the other nodes. A ready node is
    /// only removed with `force`.
    pub async fn remove_node(&self, name: &str, force: bool) -> Result<usize> {
        let node = self.nodes.get(name).await?;
        if node.ready && !force {
            return Err(ApiError::FailedPrecondition(format!(
                "node {name} is ready; stop its agent first or use --force"
            )));
        }
        let views = self.list(Some(name)).await?;
        let mut touched: BTreeMap<String, NetworkRecord> = BTreeMap::new();
        for v in &views {
            self.delete_records(v).await?;
            for (_, n) in &v.endpoints {
                touched.insert(n.id.clone(), n.clone());
            }
        }
        self.nodes.remove_record(name).await?;
        let refs: Vec<&NetworkRecord> = touched.values().collect();
        self.overlay.notify(&refs, name).await;
        tracing::info!(node = %name, sandboxes = views.len(), "node removed with its sandboxes");
        Ok(views.len())
    }
}
