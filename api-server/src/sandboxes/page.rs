//! `ListSandboxes` a page at a time: a range read of the sandbox records by
//! key (id order), then the page's endpoints and networks by key, all at
//! the revision of the first read, in transactions of at most 128 reads.
//! No request reads every record, however many sandboxes there are. A
//! node's sandboxes are read the same way through its index keys
//! (`node-sandboxes/<node>/<id>`).
use std::collections::HashMap;

use super::{SandboxView, Sandboxes};
use crate::error::Result;
use crate::page::{Page, PageRequest};
use crate::store::Versioned;
use crate::store::records::{EndpointRecord, NetworkRecord, SandboxRecord};

impl Sandboxes {
    /// One page of sandboxes (in id order) with their endpoints, and
    /// whether more follow.
    pub async fn list_page(&self, page: &PageRequest) -> Result<Page<SandboxView>> {
        let keys = &self.store.keys;
        let read = self
            .store
            .page_json::<SandboxRecord>(&keys.sandboxes(), &page.after, page.size)
            .await?;
        let sandboxes = self
            .views_at(read.items.into_iter().map(|(_, v)| v).collect(), read.revision)
            .await?;
        Ok(Page {
            items: sandboxes,
            more: read.more,
        })
    }

    /// Views of `records` (read at `revision`): their endpoints and
    /// networks read by key at that revision, in transactions of at most
    /// 128 reads, each network once.
    pub(super) async fn views_at(
        &self,
        records: Vec<Versioned<SandboxRecord>>,
        revision: i64,
    ) -> Result<Vec<SandboxView>> {
        let keys = &self.store.keys;
        let mut network_ids: Vec<&String> = records.iter().flat_map(|r| &r.value.networks).collect();
        network_ids.sort();
        network_ids.dedup();
        let network_keys: Vec<String> = network_ids.iter().map(|id| keys.network(id)).collect();
        let networks: HashMap<&String, NetworkRecord> = network_ids
            .iter()
            .copied()
            .zip(
                self.store
                    .get_many_json::<NetworkRecord>(&network_keys, revision)
                    .await?,
            )
            .filter_map(|(id, n)| Some((id, n?)))
            .collect();
        let endpoint_keys: Vec<String> = records
            .iter()
            .flat_map(|r| r.value.networks.iter().map(|n| keys.endpoint(n, &r.value.id)))
            .collect();
        let mut endpoints = self
            .store
            .get_many_json::<EndpointRecord>(&endpoint_keys, revision)
            .await?
            .into_iter();
        let mut out = Vec::with_capacity(records.len());
        for versioned in &records {
            let record = versioned.value.clone();
            // One endpoint read per network of the record, in that order.
            let eps = record
                .networks
                .iter()
                .filter_map(|nid| {
                    let ep = endpoints.next().flatten();
                    Some((ep?, networks.get(nid)?.clone()))
                })
                .collect();
            out.push(SandboxView {
                record,
                endpoints: eps,
                generation: versioned.mod_revision as u64,
            });
        }
        Ok(out)
    }

    /// Every sandbox on `node` with its endpoints, read at one revision
    /// (returned) through the node's index keys: the cost grows with the
    /// node's sandboxes, not the cluster's. In name order.
    pub async fn list_node(&self, node: &str) -> Result<(Vec<SandboxView>, i64)> {
        let keys = &self.store.keys;
        let (index, revision) = self.store.list_keys_rev(&keys.node_sandboxes(node)).await?;
        let record_keys: Vec<String> = index
            .iter()
            .map(|k| keys.sandbox(crate::store::keys::last_segment(k)))
            .collect();
        let records: Vec<Versioned<SandboxRecord>> = self
            .store
            .get_many_versioned::<SandboxRecord>(&record_keys, revision)
            .await?
            .into_iter()
            .flatten()
            // An index key without its record, or of another node, is the
            // repair loop's to fix; it is never a sandbox of this node.
            .filter(|r| r.value.node == node)
            .collect();
        let mut views = self.views_at(records, revision).await?;
        views.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok((views, revision))
    }
}
