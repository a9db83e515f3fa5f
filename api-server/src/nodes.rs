//! Nodes: registration by agents, liveness through an etcd lease the agent
//! keeps alive via heartbeats, listing and removal.
//!
//! Two keys per node: `nodes/<name>` is the lasting record (address, agent
//! URL); `alive/<name>` is attached to the lease and vanishes when the agent
//! stops heartbeating, which is what "not ready" means.
use std::net::Ipv4Addr;

use berth_core::names::validate_name;

use crate::error::{ApiError, Result};
use crate::store::records::{NodeRecord, NodeRoute};
use crate::store::{Guard, Op, Read, Store, Write, now_rfc3339};

/// A node as listed: its record and whether its lease is alive.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub record: NodeRecord,
    pub ready: bool,
}

/// A validated registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub address: Ipv4Addr,
    pub agent_url: String,
    pub mtu: u32,
    pub routes: Vec<NodeRoute>,
}

impl Registration {
    pub fn validate(
        name: &str,
        address: &str,
        agent_url: &str,
        mtu: u32,
        routes: &[(String, String)],
    ) -> Result<Self> {
        validate_name("node name", name)?;
        let address = berth_core::net::parse_ip("node address", address)?;
        if !(agent_url.starts_with("http://") || agent_url.starts_with("https://")) {
            return Err(berth_core::Invalid::new(
                "agent url",
                format!("{agent_url:?} must start with http:// or https://"),
            )
            .into());
        }
        berth_core::limits::check_count(
            "routes",
            "routes",
            routes.len(),
            berth_core::limits::MAX_NODE_ROUTES,
        )?;
        let routes = routes
            .iter()
            .map(|(destination, device)| {
                let destination: ipnet::Ipv4Net = destination.parse().map_err(|_| {
                    berth_core::Invalid::new("routes", format!("{destination:?} is not an IPv4 CIDR"))
                })?;
                if device.len() > 15 || !device.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(berth_core::Invalid::new(
                        "routes",
                        format!("{device:?} is not an interface name"),
                    ));
                }
                Ok(NodeRoute {
                    destination: destination.trunc(),
                    device: device.clone(),
                })
            })
            .collect::<std::result::Result<Vec<_>, berth_core::Invalid>>()?;
        Ok(Self {
            name: name.to_string(),
            address,
            agent_url: agent_url.to_string(),
            mtu: if mtu == 0 { 1500 } else { mtu },
            routes,
        })
    }
}

#[derive(Clone)]
pub struct Nodes {
    store: Store,
    ttl_seconds: i64,
}

impl Nodes {
    pub fn new(store: Store, ttl_seconds: u32) -> Self {
        Self {
            store,
            ttl_seconds: i64::from(ttl_seconds.max(2)),
        }
    }

    pub fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds as u32
    }

    /// Records the node and attaches its liveness key to a fresh lease.
    /// A node being removed (`node rm` in progress) cannot register.
    pub async fn register(&self, reg: Registration) -> Result<i64> {
        let keys = &self.store.keys;
        let existing = self.store.get_json::<NodeRecord>(&keys.node(&reg.name)).await?;
        if existing.as_ref().is_some_and(|r| r.value.removing) {
            return Err(ApiError::FailedPrecondition(format!(
                "node {} is being removed; register it again once `node rm` finished",
                reg.name
            )));
        }
        let mut client = self.store.client();
        let lease = client.lease_grant(self.ttl_seconds, None).await?.id();
        let record = NodeRecord {
            name: reg.name.clone(),
            address: reg.address,
            agent_url: reg.agent_url.clone(),
            mtu: reg.mtu,
            registered: now_rfc3339(),
            lease,
            removing: false,
            routes: reg.routes.clone(),
        };
        // Not ready yet: the liveness key comes with the first heartbeat, which
        // the agent sends once it has converged to its desired state, so no
        // command races with that first full sync.
        // Unless `node rm` started meanwhile.
        let unchanged = match &existing {
            Some(r) => Guard::Unchanged(keys.node(&reg.name), r.mod_revision),
            None => Guard::Absent(keys.node(&reg.name)),
        };
        let write = Write::new()
            .when(unchanged)
            .then(Op::put_json(keys.node(&reg.name), &record)?);
        if !self.store.write(write).await?.committed() {
            return Err(ApiError::Aborted(format!(
                "node {} changed while registering; try again",
                reg.name
            )));
        }
        tracing::info!(node = %reg.name, address = %reg.address, lease, "node registered");
        Ok(lease)
    }

    /// Renews the node's lease once, and only the lease of the node's
    /// current registration. NOT_FOUND when the lease lapsed (etcd's "lease
    /// not found"), is not that node's, or the node was removed: the agent
    /// registers again.
    pub async fn heartbeat(&self, name: &str, lease: i64) -> Result<u32> {
        let keys = &self.store.keys;
        let record = self
            .store
            .get_json::<NodeRecord>(&keys.node(name))
            .await?
            .ok_or_else(|| ApiError::not_found("node", name))?;
        if record.value.lease != lease {
            return Err(ApiError::NotFound {
                kind: "lease of node",
                name: format!("{name} (lease {lease} is not its current registration)"),
            });
        }
        let lapsed = |e: etcd_client::Error| {
            if e.to_string().contains("lease not found") {
                ApiError::not_found("lease of node", name)
            } else {
                ApiError::from(e)
            }
        };
        let mut client = self.store.client();
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.map_err(lapsed)?;
        keeper.keep_alive().await.map_err(lapsed)?;
        let ttl = match stream.message().await.map_err(lapsed)? {
            Some(resp) if resp.ttl() > 0 => resp.ttl() as u32,
            _ => return Err(ApiError::not_found("lease of node", name)),
        };
        // Ready while the lease lives and the registration is the same one.
        let write = Write::new()
            .when(Guard::Unchanged(keys.node(name), record.mod_revision))
            .then(Op::put_leased(keys.alive(name), lease.to_string(), lease));
        if !self.store.write(write).await?.committed() {
            return Err(ApiError::not_found("node", name));
        }
        Ok(ttl)
    }

    pub async fn list(&self) -> Result<Vec<NodeStatus>> {
        let keys = &self.store.keys;
        let records: Vec<NodeRecord> = self.store.list_json(&keys.nodes()).await?;
        let alive: std::collections::HashSet<String> = self
            .store
            .list_keys(&keys.alive_all())
            .await?
            .into_iter()
            .map(|k| crate::store::keys::last_segment(&k).to_string())
            .collect();
        let mut out: Vec<NodeStatus> = records
            .into_iter()
            .map(|record| NodeStatus {
                ready: alive.contains(&record.name),
                record,
            })
            .collect();
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        Ok(out)
    }

    pub async fn get(&self, name: &str) -> Result<NodeStatus> {
        let keys = &self.store.keys;
        // Record and liveness in one consistent read.
        let mut reads = self
            .store
            .read_together(vec![Read::Key(keys.node(name)), Read::Key(keys.alive(name))])
            .await?
            .into_iter()
            .map(|entries| entries.into_iter().next());
        let record = reads
            .next()
            .flatten()
            .ok_or_else(|| ApiError::not_found("node", name))?;
        let record: NodeRecord = serde_json::from_slice(&record.value)?;
        let ready = reads.next().flatten().is_some();
        Ok(NodeStatus { record, ready })
    }

    /// Marks the node removing (its removal has started).
    pub async fn mark_removing(&self, name: &str) -> Result<()> {
        let keys = &self.store.keys;
        for _ in 0..crate::ipam::MAX_ATTEMPTS {
            let rec = self
                .store
                .get_json::<NodeRecord>(&keys.node(name))
                .await?
                .ok_or_else(|| ApiError::not_found("node", name))?;
            if rec.value.removing {
                return Ok(());
            }
            let mut marked = rec.value.clone();
            marked.removing = true;
            let write = Write::new()
                .when(Guard::Unchanged(keys.node(name), rec.mod_revision))
                .then(Op::put_json(keys.node(name), &marked)?)
                .then(Op::delete(keys.alive(name)));
            if self.store.write(write).await?.committed() {
                return Ok(());
            }
        }
        Err(ApiError::Aborted(format!("node {name} kept changing; try again")))
    }

    /// Deletes the node's records (see `Sandboxes::remove_node` for the
    /// whole removal).
    pub async fn remove_record(&self, name: &str) -> Result<()> {
        let keys = &self.store.keys;
        let write = Write::new()
            .when(Guard::Present(keys.node(name)))
            .then(Op::delete(keys.node(name)))
            .then(Op::delete(keys.alive(name)));
        if !self.store.write(write).await?.committed() {
            return Err(ApiError::not_found("node", name));
        }
        tracing::info!(node = %name, "node removed");
        Ok(())
    }
}
