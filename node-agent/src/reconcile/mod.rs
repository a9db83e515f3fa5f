//! Converging this node to its desired state, level-triggered. A pass
//! observes the node, plans per-object actions with a pure function
//! ([`plan::plan`]), executes them through an [`Executor`] (removals first;
//! one failure never stops the rest) and keeps every object's result.
//! Commands queue and are served in batches: the next holder of the pass
//! lock runs one pass scoped to every queued command's sandbox and networks
//! and answers each with its own sandbox's result. The convergence loop
//! ([`crate::converge`]) runs full passes on a period, after failures and
//! when netlink reports that a berth-owned link went away. One lock
//! serialises passes; objects that match are never touched, so a pass does
//! not disturb traffic.
pub mod action;
pub mod desired;
pub mod executor;
pub mod external;
#[cfg(test)]
pub mod fake;
pub mod kernel;
pub mod observed;
pub mod plan;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rtnetlink::Handle;
use tokio::sync::{Mutex, Notify, oneshot};

use self::action::{Action, ObjectKey, ObjectKind};
use self::desired::DesiredStore;
use self::executor::{Effect, Executor, ObserveRequest};
use self::kernel::KernelExecutor;
use self::observed::Observed;
use self::plan::{Inputs, Plan, Scope};
use self::report::{AgentError, ErrorKind, ObjectError, Outcome, Results};
use crate::dns::DnsServer;
use crate::etcfiles;
use crate::kernel::{netns, sysctl};
use crate::model::{Desired, NetworkSpec, PeerSet, SandboxSpec};
use crate::names::NameIndex;
use crate::nft::Ruleset;
use crate::state::{ExternalRecord, Loaded, NsRecord, Owned, StateDir};

/// What the agent publishes about its convergence (`AgentService.Status`).
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The last full pass left no error and nothing is failing since.
    pub converged: bool,
    pub passes: u64,
    pub last_full_pass: Option<SystemTime>,
    /// Revision of the last desired-state snapshot taken.
    pub revision: u64,
    /// EnsureSandbox/RemoveSandbox/SetOverlayPeers commands applied since start.
    pub commands: u64,
    pub sandboxes: u32,
    pub networks: u32,
    pub objects: Results,
}

impl Status {
    pub fn last_error(&self) -> String {
        self.objects
            .iter()
            .filter_map(|(k, o)| o.result.as_ref().err().map(|e| format!("{k}: {}", e.message)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What one pass found and did.
#[derive(Debug, Default)]
pub struct PassReport {
    pub actions: usize,
    /// Failed objects, with the sandboxes they fail.
    pub errors: Vec<(ObjectKey, Vec<String>, ObjectError)>,
    /// Sandboxes whose runtime's namespace is gone (see [`Plan::vanished`]).
    pub vanished: Vec<String>,
}

impl PassReport {
    /// The first failure that concerns `sandbox`, as a command's error.
    pub fn error_for(&self, sandbox: &str) -> Option<AgentError> {
        self.errors
            .iter()
            .find(|(_, s, _)| s.iter().any(|s| s == sandbox))
            .map(|(k, _, e)| AgentError::from_object(k, e))
    }
}

/// A command waiting for the pass that serves it.
#[derive(Debug, Clone)]
enum Command {
    Ensure {
        sandbox: Box<SandboxSpec>,
        networks: Vec<NetworkSpec>,
        peers: Vec<(String, PeerSet)>,
    },
    Remove {
        id: String,
        netns: String,
    },
    Peers {
        network_id: String,
        set: PeerSet,
    },
}

struct Queued {
    cmd: Command,
    reply: oneshot::Sender<Result<(), AgentError>>,
}

/// What a served command's result is about.
enum Target {
    Sandbox(String),
    Removed(String),
    Network(String),
}

/// The first failure of a pass that concerns network `id`'s own objects
/// (bridge, VXLAN device, peer entries), as a `SetOverlayPeers` error.
fn network_error(report: &PassReport, d: &Desired, id: &str) -> Option<AgentError> {
    let n = d.networks.get(id)?;
    let names: Vec<String> = std::iter::once(n.bridge.clone()).chain(n.vxlan_name()).collect();
    report
        .errors
        .iter()
        .find(|(k, _, _)| {
            matches!(k.kind, ObjectKind::Bridge | ObjectKind::Vxlan | ObjectKind::Peers)
                && names.contains(&k.name)
        })
        .map(|(k, _, e)| AgentError::from_object(k, e))
}

struct Inner {
    desired: DesiredStore,
    owned: Owned,
    /// The record as last written to the state file.
    saved: Option<Owned>,
    applied_rules: Option<Ruleset>,
    dns_inodes: HashMap<String, u64>,
    results: Results,
    /// The state file was lost or corrupt: the next full pass rebuilds
    /// berth's record from the markers.
    rebuild: bool,
    passes: u64,
    commands: u64,
    last_full_pass: Option<SystemTime>,
    last_full_ok: bool,
    /// A snapshot of the whole desired state has been taken since start.
    /// Until then the agent knows only what commands told it, so no pass
    /// removes a link it does not know about or rewrites the firewall (a
    /// restarted agent would otherwise cut every other sandbox off).
    synced: bool,
}

pub struct Reconciler {
    node: Handle,
    netns_prefix: String,
    /// This node's underlay address (the local VTEP) and MTU.
    underlay: Ipv4Addr,
    underlay_mtu: u32,
    /// Names each sandbox may resolve, and the responder that answers them.
    names: Arc<NameIndex>,
    dns: DnsServer,
    state: StateDir,
    inner: Mutex<Inner>,
    /// Commands waiting for a pass; the next holder of `inner` serves them all.
    queue: std::sync::Mutex<Vec<Queued>>,
    /// Links the node should have (bridges, VXLAN devices, host veths), for
    /// the netlink watcher.
    wanted_links: Arc<RwLock<BTreeSet<String>>>,
    own_deletions: Arc<crate::watch::OwnDeletions>,
    /// Departed endpoints' interfaces being deleted after their pass.
    retiring: Arc<kernel::Retiring>,
    /// Asks the convergence loop for a full pass soon.
    wake: Arc<Notify>,
    /// Attachments whose runtime's namespace vanished, to detach through
    /// the API server ([`external`]), and the notification that there are some.
    vanished: std::sync::Mutex<BTreeMap<String, crate::model::External>>,
    vanished_wake: Arc<Notify>,
    /// A command's pass changed berth's record: [`Self::keep_state_file`] writes it.
    save_soon: Notify,
}

/// The sandboxes an action's failure fails.
fn failed_sandboxes(a: &Action, d: &Desired) -> Vec<String> {
    if let Some(s) = a.sandbox() {
        return vec![s.to_string()];
    }
    let network = match a {
        Action::CreateBridge(b) => Some(b.network.id.as_str()),
        Action::EnsureVxlan { network, .. } => Some(network.id.as_str()),
        Action::SyncPeers { network_id, .. } => Some(network_id.as_str()),
        _ => None,
    };
    match network {
        Some(n) => d
            .sandboxes
            .values()
            .filter(|s| s.endpoints.iter().any(|e| e.network_id == n))
            .map(|s| s.id.clone())
            .collect(),
        None => vec![],
    }
}

/// Every object the desired state has in `scope`, by key and sandbox.
fn desired_keys(d: &Desired, scope: &Scope) -> Vec<(ObjectKey, Option<String>)> {
    let mut out = Vec::new();
    for n in d.active_networks() {
        if !scope.has_network(&n.id) {
            continue;
        }
        out.push((ObjectKey::new(ObjectKind::Bridge, &n.bridge), None));
        if let Some(vx) = n.vxlan_name() {
            out.push((ObjectKey::new(ObjectKind::Vxlan, &vx), None));
            out.push((ObjectKey::new(ObjectKind::Peers, &vx), None));
        }
    }
    for s in scope.sandboxes_of(d) {
        let id = Some(s.id.clone());
        if let Some(ns) = &s.netns {
            out.push((ObjectKey::new(ObjectKind::Namespace, ns), id.clone()));
            if s.external.is_none() {
                out.push((ObjectKey::new(ObjectKind::EtcFiles, ns), id.clone()));
            }
        }
        for ep in &s.endpoints {
            out.push((ObjectKey::new(ObjectKind::Endpoint, ep.host_ifname()), id.clone()));
        }
        if !s.command.is_empty() {
            out.push((ObjectKey::new(ObjectKind::Command, &s.id), id.clone()));
        }
    }
    out
}

impl Reconciler {
    /// Prepares the node (forwarding on) and loads berth's record of it.
    pub async fn new(
        state_dir: PathBuf,
        netns_prefix: String,
        underlay: Ipv4Addr,
        underlay_mtu: u32,
        dns_upstreams: Vec<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let state = StateDir::new(&state_dir)?;
        if sysctl::set("net.ipv4.ip_forward", "1")? {
            tracing::info!("enabled ip forwarding");
        }
        let node = netns::netlink(None).await?;
        let (owned, rebuild) = match state.load() {
            Loaded::Found(o) => (o, false),
            Loaded::Missing => {
                tracing::info!("no state file; berth's objects are found by their markers");
                (Owned::default(), true)
            }
            Loaded::Corrupt(e) => {
                tracing::error!(error = %e, "state file corrupt (kept as owned.json.corrupt); rebuilding from the markers");
                (Owned::default(), true)
            }
        };
        let names = Arc::new(NameIndex::default());
        let dns = DnsServer::new(names.clone(), dns_upstreams);
        Ok(Self {
            node,
            netns_prefix,
            underlay,
            underlay_mtu,
            names,
            dns,
            state,
            inner: Mutex::new(Inner {
                desired: DesiredStore::default(),
                saved: Some(owned.clone()),
                owned,
                applied_rules: None,
                dns_inodes: HashMap::new(),
                results: Results::new(),
                rebuild,
                passes: 0,
                commands: 0,
                last_full_pass: None,
                last_full_ok: false,
                synced: false,
            }),
            queue: Default::default(),
            wanted_links: Arc::default(),
            own_deletions: Arc::default(),
            retiring: Arc::default(),
            wake: Arc::new(Notify::new()),
            vanished: Default::default(),
            vanished_wake: Arc::new(Notify::new()),
            save_soon: Notify::new(),
        })
    }

    pub fn netns_prefix(&self) -> &str {
        &self.netns_prefix
    }

    /// Links the node should have, kept current for the netlink watcher.
    pub fn wanted_links(&self) -> Arc<RwLock<BTreeSet<String>>> {
        self.wanted_links.clone()
    }

    /// The FDB and neighbour entries passes delete, for the netlink watcher.
    pub fn own_deletions(&self) -> Arc<crate::watch::OwnDeletions> {
        self.own_deletions.clone()
    }

    /// Notified when something asks for a full pass soon.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn status(&self) -> Status {
        let inner = self.inner.lock().await;
        let d = inner.desired.get();
        Status {
            converged: inner.last_full_ok && inner.results.values().all(|o| o.result.is_ok()),
            passes: inner.passes,
            last_full_pass: inner.last_full_pass,
            revision: inner.desired.snapshot_revision(),
            commands: inner.commands,
            sandboxes: d.sandboxes.len() as u32,
            networks: d.active_networks().len() as u32,
            objects: inner.results.clone(),
        }
    }

    /// Realises one sandbox exactly as given (unless a newer generation is held).
    pub async fn ensure_sandbox(
        &self,
        sandbox: SandboxSpec,
        networks: Vec<NetworkSpec>,
        peers: Vec<(String, PeerSet)>,
    ) -> Result<(), AgentError> {
        self.submit(Command::Ensure {
            sandbox: Box::new(sandbox),
            networks,
            peers,
        })
        .await
    }

    /// Tears one sandbox down. `netns` (without prefix) is used when this
    /// agent does not hold the sandbox (e.g. it restarted before a sync).
    pub async fn remove_sandbox(&self, id: &str, netns_name: &str) -> Result<(), AgentError> {
        self.submit(Command::Remove {
            id: id.to_string(),
            netns: netns_name.to_string(),
        })
        .await
    }

    /// Takes a new peer set of an overlay network (unless an equal or newer
    /// one was seen) and programs it when the network is realised here.
    pub async fn set_peers(&self, network_id: &str, set: PeerSet) -> Result<(), AgentError> {
        self.submit(Command::Peers {
            network_id: network_id.to_string(),
            set,
        })
        .await
    }

    /// Queues a command and waits for the pass that serves it. Whoever
    /// holds the pass lock next takes every queued command into one pass
    /// (see [`Self::serve_queued`]), so commands that arrive while a pass
    /// runs share the next one instead of waiting for one pass each.
    async fn submit(&self, cmd: Command) -> Result<(), AgentError> {
        // A batch is served by the task that took it; if that task is
        // dropped mid-pass (its client went away) the others' replies go
        // with it: the command is queued again (commands are idempotent).
        for _ in 0..3 {
            let (tx, mut rx) = oneshot::channel();
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(Queued {
                cmd: cmd.clone(),
                reply: tx,
            });
            {
                let mut inner = self.inner.lock().await;
                self.serve_queued(&mut inner).await;
            }
            // The command was either served by this task just now or by the
            // one that held the lock before (it answers before releasing it).
            match rx.try_recv() {
                Ok(r) => return r,
                Err(_) => tracing::debug!("the pass serving a command was cancelled; queued again"),
            }
        }
        self.wake.notify_one();
        Err(AgentError::Internal(
            "the passes serving this command were cancelled; a full pass follows".into(),
        ))
    }

    /// Serves every queued command with one pass scoped to all their
    /// sandboxes and networks: the desired state takes each command in the
    /// order queued, the pass realises them together (one observation, one
    /// state file write, one firewall apply at most), and each waiter gets
    /// the result for its own sandbox (or network).
    async fn serve_queued(&self, inner: &mut Inner) {
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        let mut sandboxes: BTreeSet<String> = BTreeSet::new();
        let mut nets: BTreeSet<String> = BTreeSet::new();
        let mut before = Vec::new();
        let mut waiting: Vec<(Target, oneshot::Sender<Result<(), AgentError>>)> = Vec::new();
        for Queued { cmd, reply } in batch {
            inner.commands += 1;
            match cmd {
                Command::Ensure {
                    sandbox,
                    networks,
                    peers,
                } => {
                    let id = sandbox.id.clone();
                    let mut used: BTreeSet<String> =
                        sandbox.endpoints.iter().map(|e| e.network_id.clone()).collect();
                    if let Some(old) = inner.desired.get().sandboxes.get(&id) {
                        used.extend(old.endpoints.iter().map(|e| e.network_id.clone()));
                        before.extend(wanted_links_of(inner.desired.get(), old));
                    }
                    if let Err(r) = inner.desired.ensure(*sandbox, networks, peers) {
                        let _ = reply.send(Err(AgentError::Stale(r.to_string())));
                        continue;
                    }
                    let d = inner.desired.get();
                    self.names.update_sandbox(d, &id);
                    for n in &used {
                        self.names.update_peers(d, n);
                    }
                    nets.extend(used);
                    sandboxes.insert(id.clone());
                    waiting.push((Target::Sandbox(id), reply));
                }
                Command::Remove { id, netns } => {
                    let used = self.take_removal(inner, &id, &netns, &mut before).await;
                    nets.extend(used);
                    sandboxes.insert(id.clone());
                    waiting.push((Target::Removed(id), reply));
                }
                Command::Peers { network_id, set } => {
                    if !inner.desired.accept_peers(&network_id, set) {
                        tracing::debug!(network = %network_id, "older overlay peer set ignored");
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    self.names.update_peers(inner.desired.get(), &network_id);
                    nets.insert(network_id.clone());
                    waiting.push((Target::Network(network_id), reply));
                }
            }
        }
        if waiting.is_empty() {
            return;
        }
        let scope = Scope {
            sandboxes: Some(sandboxes),
            networks: Some(nets),
        };
        let report = self.pass(inner, &scope, &before).await;
        crate::metrics::batch(waiting.len());
        if !report.errors.is_empty() {
            // Whatever failed is retried by a full pass soon.
            self.wake.notify_one();
        }
        for (target, reply) in waiting {
            let result = match &target {
                Target::Sandbox(id) | Target::Removed(id) => report.error_for(id),
                Target::Network(id) => network_error(&report, inner.desired.get(), id),
            };
            if let Target::Removed(id) = &target {
                tracing::info!(sandbox = %id, "sandbox removed");
            }
            let _ = reply.send(result.map_or(Ok(()), Err));
        }
        // After the answers, by another task (this one answers its own
        // caller only when it returns), which also compares it with the copy
        // last written: the record is a cache of what the markers prove (a
        // crash before this write is one before any other), and comparing
        // and writing it grows with the node (~3 ms with 2,000 sandboxes).
        self.save_soon.notify_one();
    }

    /// Writes berth's record whenever a command's pass changed it (run
    /// as a task of its own for the agent's life). Commands that arrive
    /// meanwhile share one write.
    pub async fn keep_state_file(self: Arc<Self>) {
        loop {
            self.save_soon.notified().await;
            self.save_now().await;
        }
    }

    /// Writes berth's record if it changed since the last write (also
    /// before the agent exits).
    pub async fn save_now(&self) {
        let mut inner = self.inner.lock().await;
        let Inner { owned, saved, .. } = &mut *inner;
        save_if_changed(|o| self.persist(o), owned, saved);
    }

    fn persist(&self, owned: &Owned) -> Result<(), ObjectError> {
        persist_to(&self.state, owned)
    }

    /// Takes a removal into the desired state; returns the networks the
    /// sandbox used and adds the links it wanted to `before`.
    async fn take_removal(
        &self,
        inner: &mut Inner,
        id: &str,
        netns_name: &str,
        before: &mut Vec<String>,
    ) -> BTreeSet<String> {
        if let Some(old) = inner.desired.get().sandboxes.get(id) {
            before.extend(wanted_links_of(inner.desired.get(), old));
        }
        let spec = inner.desired.remove(id);
        let nets: BTreeSet<String> = spec
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|e| e.network_id.clone()))
            .collect();
        self.names.remove_sandbox(id);
        for n in &nets {
            self.names.update_peers(inner.desired.get(), n);
        }
        // Unknown here but named by the API server: berth's if its marker says
        // so (a runtime's namespace, named by path, never is).
        if spec.is_none() && !netns_name.is_empty() && !crate::model::is_path(netns_name) {
            let ns = format!("{}{netns_name}", self.netns_prefix);
            if !inner.owned.netns.contains_key(&ns) {
                if marked_for(&ns, id).await {
                    inner.owned.netns.insert(
                        ns.clone(),
                        NsRecord {
                            sandbox: id.to_string(),
                            inode: netns::inode(&ns),
                        },
                    );
                } else {
                    // No namespace, only the empty file of a creation that
                    // died before its mount (an agent killed mid-create):
                    // nothing else would ever remove it.
                    match netns::remove_stale_file(&ns) {
                        Ok(true) => {
                            tracing::info!(netns = %ns, sandbox = %id, "removed the file of a namespace whose creation died")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(netns = %ns, error = %e, "could not remove a stale namespace file")
                        }
                    }
                }
            }
        }
        nets
    }

    /// Converges the node to a snapshot of its desired state read at
    /// `revision` (what commands brought after that is kept). Returns the
    /// pass's errors joined, if any.
    pub async fn sync(&self, desired: Desired, revision: u64) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        inner.desired.snapshot(desired, revision);
        self.names.rebuild(inner.desired.get());
        inner.synced = true;
        self.full_pass_locked(&mut inner).await
    }

    /// A full pass over the desired state the agent holds.
    pub async fn full_pass(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        if !inner.synced {
            // Nothing to converge to yet: an empty desired state would sweep the node.
            return Err("no desired state yet (the API server has not answered since start)".into());
        }
        self.full_pass_locked(&mut inner).await
    }

    async fn full_pass_locked(&self, inner: &mut Inner) -> Result<(), String> {
        let started = std::time::Instant::now();
        let report = self.pass(inner, &Scope::full(), &[]).await;
        crate::release_free_memory();
        inner.last_full_pass = Some(SystemTime::now());
        inner.last_full_ok = report.errors.is_empty();
        inner.rebuild = inner.rebuild && !report.errors.is_empty();
        let d = inner.desired.get();
        tracing::info!(
            sandboxes = d.sandboxes.len(),
            actions = report.actions,
            errors = report.errors.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full pass done"
        );
        if report.errors.is_empty() {
            Ok(())
        } else {
            Err(report
                .errors
                .iter()
                .map(|(k, _, e)| format!("{k}: {}", e.message))
                .collect::<Vec<_>>()
                .join("; "))
        }
    }

    /// One pass: observe, plan, execute, record. The callers updated the
    /// name index for what they changed; `before` are the links the scoped
    /// sandboxes wanted before the change.
    async fn pass(&self, inner: &mut Inner, scope: &Scope, before: &[String]) -> PassReport {
        let start = std::time::Instant::now();
        inner.passes += 1;
        let config = PassConfig {
            underlay_mtu: self.underlay_mtu,
            local_vtep: self.underlay,
            scan_prefix: (inner.rebuild && scope.is_full()).then(|| self.netns_prefix.clone()),
            node_resolv: etcfiles::node_resolv_conf(),
            complete: inner.synced,
        };
        let Inner {
            desired,
            owned,
            saved,
            applied_rules,
            dns_inodes,
            results,
            ..
        } = inner;
        let d = desired.get();
        let mut exec = KernelExecutor::new(
            &self.node,
            &self.state,
            &self.dns,
            dns_inodes,
            applied_rules,
            self.underlay,
        );
        exec.own_deletions = Some(self.own_deletions.clone());
        exec.retiring = Some(self.retiring.clone());
        // The watcher's set is updated before the pass (the desired state
        // does not change during it): the links this pass stops wanting
        // leave it before they are deleted, so their deletion is not drift.
        self.publish_wanted(d, scope, before);
        let report = run_pass(&mut exec, d, owned, scope, &config, results).await;
        drop(exec);
        if scope.is_full() {
            save_if_changed(|o| self.persist(o), owned, saved);
        }
        self.note_vanished(d, &report.vanished);
        crate::metrics::pass(scope.is_full(), report.errors.is_empty(), start);
        crate::metrics::objects(results);
        report
    }

    /// Keeps the watcher's set of wanted links current: recomputed by a
    /// full pass; a command's pass swaps its sandboxes' links (`before` →
    /// now) and the networks', in O(its scope).
    fn publish_wanted(&self, d: &Desired, scope: &Scope, before: &[String]) {
        let mut wanted = self.wanted_links.write().unwrap_or_else(|e| e.into_inner());
        let networks = || {
            d.active_networks()
                .into_iter()
                .flat_map(|n| std::iter::once(n.bridge.clone()).chain(n.vxlan_name()))
        };
        if scope.is_full() {
            let mut all: BTreeSet<String> = networks().collect();
            for s in d.sandboxes.values() {
                all.extend(s.endpoints.iter().map(|e| e.host_ifname()));
            }
            *wanted = all;
            return;
        }
        for name in before {
            wanted.remove(name);
        }
        // Bridges `before` named that other sandboxes still use come back here.
        wanted.extend(networks());
        for s in scope.sandboxes_of(d) {
            wanted.extend(wanted_links_of(d, s));
        }
    }

    /// A dry run of a full pass (berth doctor): observes the node as a full
    /// pass would and plans, but executes nothing and changes none of the
    /// agent's state (the executor works on copies). `f` reads the result
    /// while the pass lock is held, so no pass runs meanwhile.
    pub async fn dry_run<T>(
        &self,
        f: impl FnOnce(&Desired, Result<&Observed, &ObjectError>, &Plan, bool) -> T,
    ) -> T {
        let inner = self.inner.lock().await;
        let d = inner.desired.get();
        let mut dns_inodes = inner.dns_inodes.clone();
        let mut applied_rules = inner.applied_rules.clone();
        let mut exec = KernelExecutor::new(
            &self.node,
            &self.state,
            &self.dns,
            &mut dns_inodes,
            &mut applied_rules,
            self.underlay,
        );
        let req = observe_request(d, &inner.owned, &Scope::full(), None);
        let observed = exec.observe(&req).await;
        let plan = match &observed {
            Ok(o) => plan::plan(&Inputs {
                desired: d,
                observed: o,
                owned: &inner.owned,
                scope: &Scope::full(),
                underlay_mtu: self.underlay_mtu,
                local_vtep: self.underlay,
                node_resolv: &etcfiles::node_resolv_conf(),
                applied_rules: exec.applied_rules(),
                complete: inner.synced,
            }),
            Err(_) => Plan::default(),
        };
        drop(exec);
        f(d, observed.as_ref(), &plan, inner.synced)
    }

    /// This node's underlay address and MTU.
    pub fn underlay(&self) -> (Ipv4Addr, u32) {
        (self.underlay, self.underlay_mtu)
    }

    /// Where `berth exec` runs for a namespace name as the API server knows
    /// it (empty = host mode).
    pub fn exec_target(&self, netns_name: &str) -> crate::exec::Target {
        if netns_name.is_empty() {
            return crate::exec::Target {
                netns: None,
                etc_dir: None,
            };
        }
        if crate::model::is_path(netns_name) {
            // A runtime's namespace: its files are the runtime's business.
            return crate::exec::Target {
                netns: Some(netns::path(netns_name)),
                etc_dir: None,
            };
        }
        let ns = format!("{}{netns_name}", self.netns_prefix);
        crate::exec::Target {
            netns: Some(netns::path(&ns)),
            etc_dir: Some(etcfiles::dir(&ns)),
        }
    }
}

/// The links of the node namespace a sandbox needs: its host veths and
/// its networks' bridges and VXLAN devices.
fn wanted_links_of(d: &Desired, s: &SandboxSpec) -> Vec<String> {
    let mut out: Vec<String> = s.endpoints.iter().map(|e| e.host_ifname()).collect();
    for ep in &s.endpoints {
        if let Some(n) = d.networks.get(&ep.network_id) {
            out.push(n.bridge.clone());
            out.extend(n.vxlan_name());
        }
    }
    out
}

/// Whether namespace `ns` carries the marker of sandbox `id`.
async fn marked_for(ns: &str, id: &str) -> bool {
    let Ok(h) = netns::netlink(Some(ns)).await else {
        return false;
    };
    matches!(crate::kernel::link::get(&h, "lo").await, Ok(Some(lo)) if lo.alias.as_deref() == Some(observed::sandbox_mark(id).as_str()))
}

/// The node's facts a pass needs besides the desired state.
#[derive(Debug, Clone)]
pub struct PassConfig {
    pub underlay_mtu: u32,
    pub local_vtep: Ipv4Addr,
    /// Rebuild berth's record from the markers of namespaces with this prefix.
    pub scan_prefix: Option<String>,
    /// The node's resolv.conf, for sandboxes without name resolution.
    pub node_resolv: String,
    /// Whether the desired state is the whole node's (a snapshot was taken);
    /// if not, nothing unknown is removed and the firewall is left alone.
    pub complete: bool,
}

/// What a pass must look at.
pub fn observe_request(
    d: &Desired,
    owned: &Owned,
    scope: &Scope,
    scan_prefix: Option<String>,
) -> ObserveRequest {
    let mut req = ObserveRequest {
        firewall: scope.is_full(),
        scan_prefix,
        dns: scope.sandboxes.clone(),
        ..Default::default()
    };
    if !scope.is_full() {
        // The links this pass may plan for: its sandboxes' host veths, every
        // wanted bridge and VXLAN device (to remove the unwanted ones, berth's
        // record names them).
        let mut links: BTreeSet<String> = owned.bridges.clone();
        for n in d.active_networks() {
            links.insert(n.bridge.clone());
            links.extend(n.vxlan_name());
        }
        for s in scope.sandboxes_of(d) {
            links.extend(s.endpoints.iter().map(|e| e.host_ifname()));
        }
        // berth's interfaces in runtimes' namespaces, to remove the unwanted.
        for (id, rec) in &owned.external {
            if scope.has_sandbox(id) {
                links.extend(rec.links.keys().cloned());
            }
        }
        req.links = Some(links);
    }
    if req.scan_prefix.is_some() {
        // Only a rebuild from the markers adopts host-mode commands.
        req.host_sandboxes = d
            .sandboxes
            .values()
            .filter(|s| s.netns.is_none())
            .map(|s| s.id.clone())
            .collect();
    }
    for s in scope.sandboxes_of(d) {
        if let Some(ns) = &s.netns {
            req.inspect.insert(ns.clone());
            if s.external.is_none() {
                req.etc.insert(ns.clone());
            }
        }
    }
    // Sandboxes with links follow their targets' addresses.
    for s in d.sandboxes.values().filter(|s| !s.links.is_empty()) {
        if let Some(ns) = &s.netns {
            req.etc.insert(ns.clone());
        }
    }
    for (ns, rec) in &owned.netns {
        if scope.has_sandbox(&rec.sandbox) {
            req.stat.insert(ns.clone());
        }
    }
    for (id, cmd) in &owned.commands {
        if scope.has_sandbox(id) {
            req.commands.insert(id.clone(), cmd.clone());
        }
    }
    for n in d.active_networks() {
        if let Some(vx) = n.vxlan_name()
            && scope.has_network(&n.id)
        {
            req.vxlans.insert(vx);
        }
    }
    req
}

/// Writes berth's record to the state file.
pub fn persist_to(state: &StateDir, owned: &Owned) -> Result<(), ObjectError> {
    state
        .save(owned)
        .map_err(|e| ObjectError::io("writing the agent's state file", &e))
}

/// Writes berth's record when it differs from the copy last written.
pub fn save_if_changed(
    persist: impl FnOnce(&Owned) -> Result<(), ObjectError>,
    owned: &Owned,
    saved: &mut Option<Owned>,
) {
    if saved.as_ref() != Some(owned) {
        match persist(owned) {
            Ok(()) => *saved = Some(owned.clone()),
            Err(e) => tracing::error!(error = %e.message, "could not save the agent's state file"),
        }
    }
}

/// Observes, plans and executes one pass through `exec`, updating berth's
/// record (`owned`) and the per-object results. The caller saves the record
/// ([`save_if_changed`]): a command's pass answers first. Records of what
/// is about to be created are saved before it, in the pass.
pub async fn run_pass<E: Executor>(
    exec: &mut E,
    d: &Desired,
    owned: &mut Owned,
    scope: &Scope,
    config: &PassConfig,
    results: &mut Results,
) -> PassReport {
    let mut report = PassReport::default();
    let now = SystemTime::now();
    let started = std::time::Instant::now();
    let req = observe_request(d, owned, scope, config.scan_prefix.clone());
    let mut observed = match exec.observe(&req).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e.message, "could not observe the node");
            let key = ObjectKey::new(ObjectKind::Firewall, "observe");
            report
                .errors
                .push((key, d.sandboxes.keys().cloned().collect(), e));
            return report;
        }
    };
    let observed_at = started.elapsed();
    // Namespaces proven berth's by their marker are recorded (again, after
    // a lost state file) with their current inode.
    for s in scope.sandboxes_of(d) {
        let Some(name) = &s.netns else { continue };
        if let Some(ns) = observed.namespaces.get(name)
            && ns.marker.as_deref() == Some(observed::sandbox_mark(&s.id).as_str())
            && owned
                .netns
                .get(name)
                .is_none_or(|r| r.sandbox != s.id || r.inode != Some(ns.inode))
        {
            owned.netns.insert(
                name.clone(),
                NsRecord {
                    sandbox: s.id.clone(),
                    inode: Some(ns.inode),
                },
            );
        }
    }
    // Commands found by their marker are berth's again.
    for (id, d) in std::mem::take(&mut observed.adopted_commands) {
        if !owned.commands.contains_key(&id) {
            tracing::info!(sandbox = %id, pid = d.pid, "found the sandbox's command by its marker");
            owned.commands.insert(id.clone(), d);
            observed.commands.insert(id, true);
        }
    }
    let plan: Plan = plan::plan(&Inputs {
        desired: d,
        observed: &observed,
        owned,
        scope,
        underlay_mtu: config.underlay_mtu,
        local_vtep: config.local_vtep,
        node_resolv: &config.node_resolv,
        applied_rules: exec.applied_rules(),
        complete: config.complete,
    });
    report.actions = plan.actions.len();
    let planned = started.elapsed();
    let mut failed: Vec<(ObjectKey, Vec<String>, ObjectError)> = Vec::new();
    for c in &plan.conflicts {
        tracing::warn!(object = %c.key, "{}", c.message);
        failed.push((
            c.key.clone(),
            c.sandboxes.clone(),
            ObjectError::new(ErrorKind::Conflict, &c.message),
        ));
    }
    let mut broken: BTreeSet<String> = BTreeSet::new(); // namespaces and bridges that failed
    let mut done_ok: Vec<ObjectKey> = Vec::new();
    for a in &plan.actions {
        if let Action::EnsureEndpoint(e) = a
            && let Some(dep) = [&e.netns, &e.bridge].into_iter().find(|n| broken.contains(*n))
        {
            failed.push((
                a.key(),
                failed_sandboxes(a, d),
                ObjectError::new(ErrorKind::Blocked, format!("{dep} is not realised")),
            ));
            continue;
        }
        // Intent first: a link berth is about to create is recorded as berth's.
        let intent = match a {
            Action::CreateBridge(b) => Some(b.network.bridge.clone()),
            Action::EnsureVxlan { vxlan, .. } => Some(vxlan.clone()),
            _ => None,
        };
        if let Some(name) = intent
            && owned.bridges.insert(name)
            && let Err(e) = exec.persist(owned)
        {
            failed.push((a.key(), failed_sandboxes(a, d), e));
            continue;
        }
        // And an interface about to go into a runtime's namespace.
        if let Action::EnsureEndpoint(e) = a
            && let Some(x) = d.sandboxes.get(&e.sandbox_id).and_then(|s| s.external.as_ref())
            && record_external(owned, &e.sandbox_id, x, &e.endpoint)
            && let Err(err) = exec.persist(owned)
        {
            failed.push((a.key(), failed_sandboxes(a, d), err));
            continue;
        }
        let executed = exec.execute(a, owned).await;
        crate::metrics::action(
            scope.is_full(),
            a.key().kind,
            executed.as_ref().err().map(|e| e.kind),
        );
        match executed {
            Ok(effect) => {
                record_success(a, effect, owned);
                done_ok.push(a.key());
            }
            Err(e) => {
                tracing::warn!(object = %a.key(), error = %e.message, "action failed");
                match a {
                    Action::CreateNamespace { netns, .. } => {
                        broken.insert(netns.clone());
                    }
                    Action::CreateBridge(b) => {
                        broken.insert(b.network.bridge.clone());
                    }
                    Action::StopCommand { sandbox_id } => {
                        owned.commands.remove(sandbox_id);
                    }
                    _ => {}
                }
                failed.push((a.key(), failed_sandboxes(a, d), e));
            }
        }
    }
    tracing::debug!(
        full = scope.is_full(),
        actions = report.actions,
        observed_us = observed_at.as_micros() as u64,
        planned_us = (planned - observed_at).as_micros() as u64,
        executed_us = (started.elapsed() - planned).as_micros() as u64,
        "pass timing"
    );
    // Results: every desired object in scope is ok unless it failed; removed ones are forgotten.
    if scope.is_full() {
        results.clear();
    }
    for a in &plan.actions {
        if a.is_removal() {
            results.remove(&a.key());
        }
    }
    for (key, sandbox) in desired_keys(d, scope) {
        results.insert(
            key,
            Outcome {
                result: Ok(()),
                sandbox,
                at: now,
            },
        );
    }
    if scope.is_full()
        || plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyFirewall { .. } | Action::UpdatePorts { .. }))
    {
        results.insert(
            ObjectKey::new(ObjectKind::Firewall, crate::nft::TABLE),
            Outcome {
                result: Ok(()),
                sandbox: None,
                at: now,
            },
        );
    }
    for (key, sandboxes, e) in &failed {
        results.insert(
            key.clone(),
            Outcome {
                result: Err(e.clone()),
                sandbox: sandboxes.first().cloned(),
                at: now,
            },
        );
    }
    report.errors = failed;
    report.vanished = plan.vanished;
    report
}

/// Records an endpoint of a runtime's namespace as berth's; whether the record changed.
fn record_external(
    owned: &mut Owned,
    sandbox_id: &str,
    x: &crate::model::External,
    ep: &crate::model::EndpointSpec,
) -> bool {
    let rec = owned
        .external
        .entry(sandbox_id.to_string())
        .or_insert_with(|| ExternalRecord {
            netns_path: x.netns_path.clone(),
            inode: x.inode,
            links: Default::default(),
        });
    let fresh = rec.netns_path != x.netns_path || rec.inode != x.inode;
    rec.netns_path.clone_from(&x.netns_path);
    rec.inode = x.inode;
    fresh | (rec.links.insert(ep.host_ifname(), ep.id.clone()).as_deref() != Some(ep.id.as_str()))
}

/// Updates berth's record after an action succeeded.
fn record_success(a: &Action, effect: Effect, owned: &mut Owned) {
    match (a, effect) {
        (Action::CreateNamespace { sandbox_id, netns }, Effect::Namespace { inode }) => {
            owned.netns.insert(
                netns.clone(),
                NsRecord {
                    sandbox: sandbox_id.clone(),
                    inode: Some(inode),
                },
            );
        }
        (Action::StartCommand { sandbox }, Effect::Command(d)) => {
            owned.commands.insert(sandbox.id.clone(), d);
        }
        (Action::RemoveNamespace { netns, .. } | Action::ForgetNamespace { netns }, _) => {
            owned.netns.remove(netns);
        }
        (Action::StopCommand { sandbox_id }, _) => {
            owned.commands.remove(sandbox_id);
        }
        (Action::ForgetExternal { sandbox_id, .. }, _) => {
            owned.external.remove(sandbox_id);
        }
        (Action::RemoveLink { ifname, .. }, _) => {
            owned.bridges.remove(ifname);
        }
        _ => {}
    }
}
