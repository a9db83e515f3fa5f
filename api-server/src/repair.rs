//! The control plane's repair loop. One API replica at a time (the holder
//! of an etcd key bound to its lease) finishes or undoes operations that a
//! crash interrupted, on a period and right after it is elected:
//! - `removing` sandboxes: the agent removes them, then the records go;
//! - `creating` sandboxes older than a deadline: realised by the agent and
//!   marked ready, or undone if the agent refuses them;
//! - endpoints marked removing (an interrupted disconnect): finished;
//! - nodes marked removing (an interrupted `node rm`): finished;
//! - ready nodes whose agent reports failing objects or holds a different
//!   number of sandboxes than the node's index (counted by etcd) in two
//!   passes in a row: sent their desired state
//!   (`AgentService.Sync`), so records without kernel objects are realised
//!   again without waiting for the agent's own period;
//! - endpoint, address, port and name keys without an owner: freed, when
//!   two passes in a row saw them unowned and unchanged (no operation in
//!   flight writes them apart from their owner, so this only catches what
//!   older code or a bug left behind);
//! - the node index (`node-sandboxes/<node>/<id>`) against the sandbox
//!   records: a missing index key is written, a stray one deleted.
//!
//! Every action is logged and counted; a pass that acted logs the totals.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{ApiError, Result};
use crate::nodes::Nodes;
use crate::sandboxes::Sandboxes;
use crate::store::records::{EndpointRecord, Phase, SandboxRecord};
use crate::store::{Guard, Op, Store, Versioned, Write};

/// What the loop did since the process started, by kind.
#[derive(Debug, Default)]
pub struct Counters {
    pub passes: AtomicU64,
    pub removals_finished: AtomicU64,
    pub creates_finished: AtomicU64,
    pub creates_undone: AtomicU64,
    pub detaches_finished: AtomicU64,
    pub nodes_removed: AtomicU64,
    pub nodes_resynced: AtomicU64,
    pub orphans_freed: AtomicU64,
    pub index_fixed: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct Repair {
    store: Store,
    sandboxes: Sandboxes,
    nodes: Nodes,
    period: Duration,
    /// Who holds the leadership key (host and PID of this replica).
    replica: String,
    pub counters: Arc<Counters>,
    /// Actions counted when the totals were last logged.
    acted: Arc<AtomicU64>,
    /// Per node, (index count, agent's count) as the last pass saw them.
    differed: Arc<std::sync::Mutex<HashMap<String, (usize, usize)>>>,
}

/// Keys seen unowned in the previous pass, with their mod revision.
type Suspects = HashMap<String, i64>;

fn age(since: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339).ok()?;
    let d = time::OffsetDateTime::now_utc() - t;
    d.try_into().ok()
}

impl Repair {
    pub fn new(store: Store, sandboxes: Sandboxes, nodes: Nodes, period: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Self {
            store,
            sandboxes,
            nodes,
            period,
            replica: format!("{}:{}", host.trim(), std::process::id()),
            counters: Arc::default(),
            acted: Arc::default(),
            differed: Arc::default(),
        }
    }

    /// Counts a repair (`berth_repair_actions_total`) and publishes it as a
    /// `repair` event: a put of the one key `events/repair`, whose every
    /// revision etcd's history keeps until compaction, so `berth events`
    /// on any replica sees it (docs/events.md). Publishing is best effort.
    async fn announce(&self, action: &'static str, subject: &[(&str, &str)]) {
        crate::metrics::repaired(action);
        let mut record: BTreeMap<&str, &str> = subject.iter().copied().collect();
        record.insert("action", action);
        record.insert("replica", &self.replica);
        let Ok(value) = serde_json::to_string(&record) else {
            return;
        };
        if let Err(e) = self
            .store
            .client()
            .put(self.store.keys.repair_event(), value, None)
            .await
        {
            tracing::debug!(error = %e, action, "repair: could not publish the event");
        }
    }

    /// How old a `creating` sandbox must be before the loop takes it over
    /// (its request may still be in flight before that).
    fn create_deadline(&self) -> Duration {
        self.period * 2
    }

    /// Campaigns for leadership and repairs while leader; runs forever.
    pub async fn run(self) {
        loop {
            match self.campaign().await {
                Ok(lease) => {
                    tracing::info!(replica = %self.replica, lease, "repair loop: elected");
                    if let Err(e) = self.lead(lease).await {
                        tracing::warn!(error = %e, "repair loop: leadership lost");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "repair loop: campaign failed"),
            }
            tokio::time::sleep(self.period / 2).await;
        }
    }

    /// Takes the leadership key if nobody holds it; the lease's ID.
    async fn campaign(&self) -> Result<i64> {
        let key = self.store.keys.leader("repair");
        let ttl = (self.period.as_secs() as i64 * 3).max(6);
        let mut client = self.store.client();
        loop {
            let lease = client.lease_grant(ttl, None).await?.id();
            let write = Write::new().when(Guard::Absent(key.clone())).then(Op::put_leased(
                key.clone(),
                self.replica.clone(),
                lease,
            ));
            if self.store.write(write).await?.committed() {
                return Ok(lease);
            }
            let _ = client.lease_revoke(lease).await;
            if let Some(own) = self.own_live_lease(&key).await {
                return Ok(own);
            }
            tokio::time::sleep(self.period / 2).await;
        }
    }

    /// The lease of a leadership key that this very replica still holds:
    /// after etcd restarts, its keep-alive stream breaks but the key and
    /// lease survive (etcd renews leases on restart), and waiting for our
    /// own lease to lapse would stop repairs for a whole TTL.
    async fn own_live_lease(&self, key: &str) -> Option<i64> {
        let mut client = self.store.client();
        let resp = client.get(key, None).await.ok()?;
        let kv = resp.kvs().first()?;
        if kv.value() != self.replica.as_bytes() || kv.lease() == 0 {
            return None;
        }
        let ttl = client.lease_time_to_live(kv.lease(), None).await.ok()?.ttl();
        (ttl > 0).then_some(kv.lease())
    }

    /// Repairs every period while the lease lives.
    async fn lead(&self, lease: i64) -> Result<()> {
        let mut client = self.store.client();
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
        let mut suspects = Suspects::new();
        loop {
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(r) if r.ttl() > 0 => {}
                _ => return Err(ApiError::Unavailable("repair lease lapsed".into())),
            }
            let start = std::time::Instant::now();
            let result = self.pass(&mut suspects).await;
            let m = &crate::metrics::METRICS;
            m.repair_passes.inc();
            m.repair_duration.observe(start.elapsed().as_secs_f64());
            if let Err(e) = result {
                tracing::warn!(error = %e, "repair pass failed");
            }
            tokio::time::sleep(self.period).await;
        }
    }

    /// One pass over the whole state.
    pub async fn pass(&self, suspects: &mut Suspects) -> Result<()> {
        Counters::add(&self.counters.passes);
        let nodes: BTreeMap<String, crate::nodes::NodeStatus> = self
            .nodes
            .list()
            .await?
            .into_iter()
            .map(|n| (n.record.name.clone(), n))
            .collect();
        for n in nodes.values().filter(|n| n.record.removing) {
            match self.sandboxes.remove_node(&n.record.name, true).await {
                Ok(k) => {
                    Counters::add(&self.counters.nodes_removed);
                    self.announce("node_removed", &[("node", &n.record.name)]).await;
                    tracing::info!(node = %n.record.name, sandboxes = k, "repair: finished removing node");
                }
                Err(e) => {
                    tracing::warn!(node = %n.record.name, error = %e, "repair: node removal not finished")
                }
            }
        }
        let (views, _) = self.sandboxes.list_all().await?;
        for view in views {
            let r = &view.record;
            let node = nodes.get(&r.node);
            let name = r.name.clone();
            let node_name = r.node.clone();
            match r.phase {
                Phase::Removing => {
                    let agent = node.filter(|n| n.ready).map(|n| &n.record);
                    if node.is_some() && agent.is_none() {
                        continue; // its agent is down: wait for it
                    }
                    match self.sandboxes.finish_removal_on(agent, view, false).await {
                        Ok(_) => {
                            Counters::add(&self.counters.removals_finished);
                            self.announce("removal_finished", &[("sandbox", &name), ("node", &node_name)])
                                .await;
                            tracing::info!(sandbox = %name, "repair: finished an interrupted removal");
                        }
                        Err(e) => tracing::warn!(sandbox = %name, error = %e, "repair: removal not finished"),
                    }
                }
                Phase::Creating if age(&r.phase_since).is_none_or(|a| a >= self.create_deadline()) => {
                    let Some(node) = node.filter(|n| n.ready) else {
                        continue;
                    };
                    match self.sandboxes.finish_create(&node.record, view).await {
                        Ok(true) => {
                            Counters::add(&self.counters.creates_finished);
                            self.announce("create_finished", &[("sandbox", &name), ("node", &node_name)])
                                .await;
                            tracing::info!(sandbox = %name, "repair: finished an interrupted create");
                        }
                        Ok(false) => {
                            Counters::add(&self.counters.creates_undone);
                            self.announce("create_undone", &[("sandbox", &name), ("node", &node_name)])
                                .await;
                            tracing::info!(sandbox = %name, "repair: undid a create its agent refused");
                        }
                        Err(e) => tracing::warn!(sandbox = %name, error = %e, "repair: create not finished"),
                    }
                }
                Phase::Ready | Phase::Creating => {}
            }
        }
        self.finish_detaches(&nodes).await?;
        self.resync_diverged(&nodes).await;
        self.free_orphans(suspects).await?;
        let c = &self.counters;
        let acted = [
            &c.removals_finished,
            &c.creates_finished,
            &c.creates_undone,
            &c.detaches_finished,
            &c.nodes_removed,
            &c.nodes_resynced,
            &c.orphans_freed,
            &c.index_fixed,
        ]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum::<u64>();
        if acted > self.acted.swap(acted, Ordering::Relaxed) {
            tracing::info!(
                passes = c.passes.load(Ordering::Relaxed),
                removals_finished = c.removals_finished.load(Ordering::Relaxed),
                creates_finished = c.creates_finished.load(Ordering::Relaxed),
                creates_undone = c.creates_undone.load(Ordering::Relaxed),
                detaches_finished = c.detaches_finished.load(Ordering::Relaxed),
                nodes_removed = c.nodes_removed.load(Ordering::Relaxed),
                nodes_resynced = c.nodes_resynced.load(Ordering::Relaxed),
                orphans_freed = c.orphans_freed.load(Ordering::Relaxed),
                index_fixed = c.index_fixed.load(Ordering::Relaxed),
                "repair totals"
            );
        }
        Ok(())
    }

    /// Compares each ready node's observed state (its agent's `Status`) with
    /// the records and pushes the desired state where they differ.
    async fn resync_diverged(&self, nodes: &BTreeMap<String, crate::nodes::NodeStatus>) {
        for n in nodes.values().filter(|n| n.ready && !n.record.removing) {
            let name = &n.record.name;
            let agents = self.sandboxes.agents();
            let status = match tokio::time::timeout(Duration::from_secs(5), agents.status(&n.record)).await {
                Ok(Ok(s)) => s,
                _ => continue, // unreachable: its lease decides
            };
            // The node's index counted by etcd first (no record is read).
            // Creates in flight make the counts differ for a moment, so a
            // difference counts only when the previous pass saw the same
            // one: the whole desired state is read and pushed only then, or
            // when objects fail, not every period of a bulk create.
            let counted = self
                .store
                .count_under(&[self.store.keys.node_sandboxes(name)])
                .await
                .ok()
                .and_then(|c| c.first().copied())
                .map(|c| c as usize);
            let seen = (counted.unwrap_or(usize::MAX), status.sandboxes);
            let before = self
                .differed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), seen);
            if !status.failing && (seen.0 == seen.1 || before != Some(seen)) {
                continue;
            }
            let desired = match self.sandboxes.desired_state(name).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "repair: cannot read the desired state");
                    continue;
                }
            };
            if !status.failing && status.sandboxes == desired.sandboxes.len() {
                continue;
            }
            match agents.sync(&n.record, &desired).await {
                Ok(_) => {
                    Counters::add(&self.counters.nodes_resynced);
                    self.announce("node_resynced", &[("node", name)]).await;
                    tracing::info!(node = %name, "repair: node diverged from its records; sent its desired state");
                }
                Err(s) => tracing::warn!(node = %name, error = %s.message(), "repair: resync failed"),
            }
        }
    }

    /// Endpoints marked removing whose sandbox no longer lists their network.
    async fn finish_detaches(&self, nodes: &BTreeMap<String, crate::nodes::NodeStatus>) -> Result<()> {
        let keys = &self.store.keys;
        let (endpoints, _) = self
            .store
            .list_json_versioned::<EndpointRecord>(&keys.endpoints_all(), None)
            .await?;
        for ep in endpoints.into_iter().filter(|e| e.value.removing) {
            let Some(rec) = self
                .store
                .get_json::<SandboxRecord>(&keys.sandbox(&ep.value.sandbox_id))
                .await?
            else {
                continue; // an orphan: freed below
            };
            if rec.value.phase != Phase::Ready
                || rec.value.networks.contains(&ep.value.network_id)
                || !nodes.get(&rec.value.node).is_some_and(|n| n.ready)
            {
                continue; // part of a removal, or its node is down
            }
            let Some(network) = self.sandboxes.network_record(&ep.value.network_id).await? else {
                continue;
            };
            let mut after = self.sandboxes.view_of(rec.value).await?;
            after.generation = rec.mod_revision as u64;
            match self
                .sandboxes
                .finish_detach(&after, &ep.value, &network, ep.mod_revision)
                .await
            {
                Ok(()) => {
                    Counters::add(&self.counters.detaches_finished);
                    self.announce(
                        "detach_finished",
                        &[
                            ("sandbox", &ep.value.sandbox_name),
                            ("node", &ep.value.node),
                            ("network", &network.name),
                        ],
                    )
                    .await;
                    tracing::info!(sandbox = %ep.value.sandbox_name, network = %network.name, "repair: finished an interrupted disconnect");
                }
                Err(e) => {
                    tracing::warn!(sandbox = %ep.value.sandbox_name, error = %e, "repair: disconnect not finished")
                }
            }
        }
        Ok(())
    }

    /// Reads every sandbox record and fixes the node index against them
    /// (run once at start, before the API serves a node its desired state,
    /// so records written before the index existed are not missed).
    pub async fn fix_node_index_now(&self) -> Result<usize> {
        let (sandboxes, rev) = self
            .store
            .list_json_versioned::<SandboxRecord>(&self.store.keys.sandboxes(), None)
            .await?;
        self.fix_node_index(&sandboxes, rev).await
    }

    /// Makes `node-sandboxes/` match the sandbox records read at `rev`: a
    /// record without its index key gets it, an index key without a record
    /// on that node goes. Both keys are only ever written and deleted in one
    /// transaction, so a difference is never an operation in flight and is
    /// fixed at once, each fix guarded by the revisions read. Returns how
    /// many keys were fixed.
    async fn fix_node_index(&self, sandboxes: &[Versioned<SandboxRecord>], rev: i64) -> Result<usize> {
        let keys = &self.store.keys;
        let index: HashMap<String, (String, i64)> = self
            .store
            .list_strings_versioned(&keys.node_sandboxes_all(), Some(rev))
            .await?
            .into_iter()
            .map(|(k, v, mod_rev)| (k, (v, mod_rev)))
            .collect();
        let records: HashMap<String, (&SandboxRecord, i64)> = sandboxes
            .iter()
            .map(|s| {
                (
                    keys.node_sandbox(&s.value.node, &s.value.id),
                    (&s.value, s.mod_revision),
                )
            })
            .collect();
        let mut writes = Vec::new();
        for (key, (r, mod_rev)) in &records {
            if !index.contains_key(key) {
                tracing::info!(sandbox = %r.name, node = %r.node, "repair: sandbox record without its node index key");
                writes.push((
                    key.clone(),
                    Write::new()
                        .when(Guard::Unchanged(keys.sandbox(&r.id), *mod_rev))
                        .when(Guard::Absent(key.clone()))
                        .then(Op::put(key.clone(), r.id.clone())),
                ));
            }
        }
        let by_id: HashMap<&str, i64> = sandboxes
            .iter()
            .map(|s| (s.value.id.as_str(), s.mod_revision))
            .collect();
        for (key, (_, mod_rev)) in &index {
            if !records.contains_key(key) {
                let id = crate::store::keys::last_segment(key);
                tracing::info!(key = %key, "repair: node index key without its sandbox record");
                writes.push((
                    key.clone(),
                    Write::new()
                        .when(Guard::Unchanged(key.clone(), *mod_rev))
                        .when(Guard::Unchanged(
                            keys.sandbox(id),
                            by_id.get(id).copied().unwrap_or(0),
                        ))
                        .then(Op::delete(key.clone())),
                ));
            }
        }
        let mut fixed = 0;
        for (key, w) in writes {
            if self.store.write(w).await?.committed() {
                fixed += 1;
                Counters::add(&self.counters.index_fixed);
                self.announce("index_fixed", &[("key", &key)]).await;
            }
        }
        Ok(fixed)
    }

    /// Frees endpoint, address, port and name keys that have no owner.
    async fn free_orphans(&self, suspects: &mut Suspects) -> Result<()> {
        let keys = &self.store.keys;
        let (sandboxes, rev) = self
            .store
            .list_json_versioned::<SandboxRecord>(&keys.sandboxes(), None)
            .await?;
        self.fix_node_index(&sandboxes, rev).await?;
        let ids: HashSet<String> = sandboxes.iter().map(|s| s.value.id.clone()).collect();
        let (endpoints, _) = self
            .store
            .list_json_versioned::<EndpointRecord>(&keys.endpoints_all(), Some(rev))
            .await?;
        let owners: HashSet<String> = endpoints
            .iter()
            .filter(|e| ids.contains(&e.value.sandbox_id))
            .map(|e| e.value.id.clone())
            .collect();
        let mut unowned: Vec<(String, i64)> = Vec::new();
        for e in &endpoints {
            if !ids.contains(&e.value.sandbox_id) {
                unowned.push((
                    keys.endpoint(&e.value.network_id, &e.value.sandbox_id),
                    e.mod_revision,
                ));
            }
        }
        for (prefix, owned_by) in [
            (keys.ipam_all(), &owners),
            (keys.ports_all(), &ids),
            (keys.sandbox_names(), &ids),
        ] {
            for (key, owner, mod_rev) in self.store.list_strings_versioned(&prefix, Some(rev)).await? {
                if !owned_by.contains(&owner) {
                    unowned.push((key, mod_rev));
                }
            }
        }
        let mut next = Suspects::new();
        for (key, mod_rev) in unowned {
            if suspects.get(&key) != Some(&mod_rev) {
                next.insert(key, mod_rev);
                continue;
            }
            let write = Write::new()
                .when(Guard::Unchanged(key.clone(), mod_rev))
                .then(Op::delete(key.clone()));
            if self.store.write(write).await?.committed() {
                Counters::add(&self.counters.orphans_freed);
                self.announce("orphan_freed", &[("key", &key)]).await;
                tracing::info!(key = %key, "repair: freed a key without an owner");
            }
        }
        *suspects = next;
        Ok(())
    }
}
