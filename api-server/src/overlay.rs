//! Overlay peer programming: which remote endpoints each node hosting an
//! overlay network must know (for its FDB, neighbour entries and names), and
//! pushing that to those nodes in parallel. Each set carries the etcd
//! revision it was read at, so an agent drops a set older than one it has.
//! A node that misses an update catches up at its next full sync.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use berth_core::model::Driver;

use crate::agents::Agents;
use crate::error::Result;
use crate::store::Store;
use crate::store::records::{EndpointRecord, NetworkRecord, NodeRecord};

#[derive(Clone)]
pub struct Overlay {
    store: Store,
    agents: Agents,
}

/// A remote endpoint of an overlay network, as a node programs it (FDB,
/// neighbour entry, name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: Ipv4Addr,
    /// Its IPv6 on a dual-stack overlay.
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: String,
    /// Underlay address of the node hosting it.
    pub vtep: Ipv4Addr,
    pub node: String,
    pub sandbox_name: String,
    pub aliases: Vec<String>,
}

/// Everything one node must know of one overlay network's other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSet {
    pub network_id: String,
    pub peers: Vec<Peer>,
    /// Every remote node hosting the network.
    pub vteps: BTreeSet<Ipv4Addr>,
    /// The etcd revision the set was read at (an older set never
    /// overwrites a newer one on the agent).
    pub revision: u64,
}

/// The peer set of `network` as seen from `node`: every endpoint elsewhere.
pub fn peers_for(
    node: &str,
    network_id: &str,
    members: &[EndpointRecord],
    nodes: &HashMap<String, NodeRecord>,
    revision: i64,
) -> PeerSet {
    let mut vteps = BTreeSet::new();
    let peers = members
        .iter()
        .filter(|e| e.node != node)
        .filter_map(|e| {
            let vtep = nodes.get(&e.node)?.address;
            vteps.insert(vtep);
            Some(Peer {
                ip: e.ip?,
                ip6: e.ip6,
                mac: e.mac.clone(),
                vtep,
                node: e.node.clone(),
                sandbox_name: e.sandbox_name.clone(),
                aliases: e.aliases.clone(),
            })
        })
        .collect();
    PeerSet {
        network_id: network_id.to_string(),
        peers,
        vteps,
        revision: revision.max(0) as u64,
    }
}

impl Overlay {
    pub fn new(store: Store, agents: Agents) -> Self {
        Self { store, agents }
    }

    /// The nodes by name (their records only: a peer set needs addresses,
    /// not liveness) and each network's wanted endpoints (not being
    /// removed) with the revision read at: all reads at once, each a
    /// chunked range as every list is.
    async fn read_members(
        &self,
        networks: &[&&NetworkRecord],
    ) -> Result<(HashMap<String, NodeRecord>, Vec<(Vec<EndpointRecord>, i64)>)> {
        let keys = &self.store.keys;
        let members = networks.iter().map(|n| async move {
            let (mut m, rev): (Vec<EndpointRecord>, i64) =
                self.store.list_json_rev(&keys.endpoints(&n.id)).await?;
            m.retain(|e| !e.removing);
            Ok::<_, crate::error::ApiError>((m, rev))
        });
        let nodes_key = keys.nodes();
        let (nodes, members) = tokio::join!(
            self.store.list_json::<NodeRecord>(&nodes_key),
            futures::future::try_join_all(members)
        );
        let nodes = nodes?.into_iter().map(|n| (n.name.clone(), n)).collect();
        Ok((nodes, members?))
    }

    /// Peer sets `node` needs for the overlay networks among `networks`.
    pub async fn peers_for_node(&self, node: &str, networks: &[&NetworkRecord]) -> Result<Vec<PeerSet>> {
        let overlays: Vec<&&NetworkRecord> =
            networks.iter().filter(|n| n.driver == Driver::Overlay).collect();
        if overlays.is_empty() {
            return Ok(Vec::new());
        }
        let (nodes, members) = self.read_members(&overlays).await?;
        Ok(overlays
            .iter()
            .zip(&members)
            .map(|(n, (m, rev))| peers_for(node, &n.id, m, &nodes, *rev))
            .collect())
    }

    /// Tells every node hosting one of `networks` (except `except`) its new
    /// peer set, all nodes at once, and waits for them. Failures are logged:
    /// those nodes converge at their next full sync.
    pub async fn notify(&self, networks: &[&NetworkRecord], except: &str) {
        let overlays: Vec<&&NetworkRecord> =
            networks.iter().filter(|n| n.driver == Driver::Overlay).collect();
        if overlays.is_empty() {
            return;
        }
        let (nodes, members) = match self.read_members(&overlays).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read nodes and overlay members to program peers");
                return;
            }
        };
        let mut by_node: BTreeMap<String, Vec<PeerSet>> = BTreeMap::new();
        for (n, (members, rev)) in overlays.iter().zip(&members) {
            let hosting: BTreeSet<&str> = members.iter().map(|e| e.node.as_str()).collect();
            for node in hosting.into_iter().filter(|h| *h != except) {
                by_node
                    .entry(node.to_string())
                    .or_default()
                    .push(peers_for(node, &n.id, members, &nodes, *rev));
            }
        }
        let calls = by_node.into_iter().filter_map(|(node, sets)| {
            let record = nodes.get(&node)?.clone();
            let agents = self.agents.clone();
            Some(async move {
                for set in sets {
                    if let Err(s) = agents.set_overlay_peers(&record, &set).await {
                        tracing::warn!(node = %record.name, error = %s.message(), "overlay peer update failed; the node catches up at its next sync");
                    }
                }
            })
        });
        futures::future::join_all(calls).await;
    }
}
