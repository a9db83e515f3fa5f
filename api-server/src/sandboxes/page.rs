//! `ListSandboxes` a page at a time: a range read of the sandbox records by
//! key (id order), then the page's endpoints and networks by key, all at
//! the revision of the first read, in transactions of at most 128 reads.
//! No request reads every record, however many sandboxes there are.
use std::collections::HashMap;

use super::{SandboxView, Sandboxes};
use crate::error::Result;
use crate::page::{Page, PageRequest};
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
        let mut network_ids: Vec<&String> = read.items.iter().flat_map(|(_, r)| &r.value.networks).collect();
        network_ids.sort();
        network_ids.dedup();
        let network_keys: Vec<String> = network_ids.iter().map(|id| keys.network(id)).collect();
        let networks: HashMap<&String, NetworkRecord> = network_ids
            .iter()
            .copied()
            .zip(
                self.store
                    .get_many_json::<NetworkRecord>(&network_keys, read.revision)
                    .await?,
            )
            .filter_map(|(id, n)| Some((id, n?)))
            .collect();
        let endpoint_keys: Vec<String> = read
            .items
            .iter()
            .flat_map(|(_, r)| r.value.networks.iter().map(|n| keys.endpoint(n, &r.value.id)))
            .collect();
        let mut endpoints = self
            .store
            .get_many_json::<EndpointRecord>(&endpoint_keys, read.revision)
            .await?
            .into_iter();
        let mut sandboxes = Vec::with_capacity(read.items.len());
        for (_, versioned) in &read.items {
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
            let view = SandboxView {
                record,
                endpoints: eps,
                generation: versioned.mod_revision as u64,
            };
            sandboxes.push(view);
        }
        Ok(Page {
            items: sandboxes,
            more: read.more,
        })
    }
}
