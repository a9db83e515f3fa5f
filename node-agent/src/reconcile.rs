//! Converging this node to its desired state. Small commands (ensure or
//! remove one sandbox) and full syncs go through one lock, so the kernel is
//! changed by one pass at a time. Every step is idempotent: objects that
//! already match are left alone, so a restarted agent does not disturb
//! traffic. A full sync also removes what berth owns but no longer wants
//! (mark and sweep), before reporting the node converged.
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtnetlink::Handle;
use tokio::sync::Mutex;

use crate::etcfiles;
use crate::exec;
use crate::kernel::{self, link, netns, sysctl};
use berth_core::model::{DEFAULT_BRIDGE, Driver};

use crate::dns::DnsServer;
use crate::names::NameIndex;

use crate::kernel::fdb::{self, FdbEntry, NeighEntry};
use crate::model::{Desired, HOST_VETH_PREFIX, NetworkSpec, PeerSet, SandboxSpec};
use crate::nft::{self, BridgeRules, PortRule};
use crate::state::{Detached, Owned, StateDir};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("{0}")]
    Spec(String),
}

pub type Result<T, E = ReconcileError> = std::result::Result<T, E>;

/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds to a frame over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Keeps in a full-sync snapshot what commands changed after it was taken.
fn merge_newer(inner: &Inner, snapshot: &mut Desired, since: u64) {
    for id in inner.tombstones.keys() {
        snapshot.sandboxes.remove(id);
    }
    for (id, &epoch) in &inner.touched {
        if epoch <= since {
            continue;
        }
        if let Some(s) = inner.desired.sandboxes.get(id) {
            for ep in &s.endpoints {
                if let Some(n) = inner.desired.networks.get(&ep.network_id) {
                    snapshot.networks.entry(n.id.clone()).or_insert_with(|| n.clone());
                }
            }
            snapshot.sandboxes.insert(id.clone(), s.clone());
        }
    }
    for (id, set) in &inner.desired.peers {
        if snapshot
            .peers
            .get(id)
            .is_none_or(|have| have.revision < set.revision)
        {
            snapshot.peers.insert(id.clone(), set.clone());
        }
    }
}

/// Stores `set` as the peer set of `network_id` unless the one held is newer.
fn accept_peers(inner: &mut Inner, network_id: &str, set: PeerSet) -> bool {
    if inner
        .desired
        .peers
        .get(network_id)
        .is_some_and(|have| have.revision > set.revision)
    {
        return false;
    }
    inner.desired.peers.insert(network_id.to_string(), set);
    true
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReconcileError {
    let op = op.into();
    move |source| ReconcileError::Io { op, source }
}

/// The last full sync's outcome, for `Status`.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    pub converged: bool,
    pub last_error: String,
    pub sandboxes: u32,
    pub networks: u32,
}

struct Inner {
    desired: Desired,
    owned: Owned,
    /// Bridges realised since the last full sync, with the spec they match.
    bridges: HashMap<String, (NetworkSpec, u32)>,
    /// VXLAN device index of each overlay network realised here.
    vxlans: HashMap<String, u32>,
    applied_nft: Option<nft::Ruleset>,
    status: SyncStatus,
    /// Counts applied commands; `touched` says when each sandbox was last
    /// ensured, so a full sync fetched before that does not undo it.
    epoch: u64,
    touched: HashMap<String, u64>,
    /// Ids of removed sandboxes (ids are never reused): a full sync whose
    /// snapshot predates the removal must not bring them back.
    tombstones: HashMap<String, Instant>,
    /// The record as last written to the state file.
    saved: Option<Owned>,
}

impl Inner {
    /// Nothing desired yet; `owned` is what earlier runs recorded.
    fn new(owned: Owned) -> Self {
        Self {
            desired: Desired::default(),
            owned,
            bridges: HashMap::new(),
            vxlans: HashMap::new(),
            applied_nft: None,
            status: SyncStatus::default(),
            epoch: 0,
            touched: HashMap::new(),
            tombstones: HashMap::new(),
            saved: None,
        }
    }
}

/// How long a removed sandbox id is remembered.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

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
}

impl Reconciler {
    /// Prepares the node (forwarding on) and loads what earlier runs created.
    pub async fn new(
        state_dir: PathBuf,
        netns_prefix: String,
        underlay: Ipv4Addr,
        underlay_mtu: u32,
        dns_upstreams: Vec<SocketAddr>,
    ) -> Result<Self> {
        let state = StateDir::new(&state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
        if sysctl::set("net.ipv4.ip_forward", "1")? {
            tracing::info!("enabled ip forwarding");
        }
        let node = netns::netlink(None).await?;
        let owned = state.load();
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
            inner: Mutex::new(Inner::new(owned)),
        })
    }

    pub fn netns_prefix(&self) -> &str {
        &self.netns_prefix
    }

    pub async fn status(&self) -> SyncStatus {
        self.inner.lock().await.status.clone()
    }

    /// Realises one sandbox exactly as given.
    pub async fn ensure_sandbox(
        &self,
        sandbox: SandboxSpec,
        networks: Vec<NetworkSpec>,
        peers: Vec<(String, PeerSet)>,
    ) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.epoch += 1;
        let epoch = inner.epoch;
        inner.touched.insert(sandbox.id.clone(), epoch);
        inner.tombstones.remove(&sandbox.id);
        for n in networks {
            inner.desired.networks.insert(n.id.clone(), n);
        }
        for (id, set) in peers {
            accept_peers(&mut inner, &id, set);
        }
        inner
            .desired
            .sandboxes
            .insert(sandbox.id.clone(), sandbox.clone());
        self.names.rebuild(&inner.desired);
        let res = self.realise(&mut inner, &sandbox).await;
        self.refresh_links(&inner);
        // Endpoints dropped by this command may leave a bridge unused.
        let swept = self.sweep_networks(&mut inner).await;
        self.save(&mut inner);
        res.and(swept)
    }

    /// Tears one sandbox down. `netns` (without prefix) is used when this
    /// agent does not know the sandbox (e.g. it restarted before a sync).
    pub async fn remove_sandbox(&self, id: &str, netns_name: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.epoch += 1;
        inner.touched.remove(id);
        inner.tombstones.retain(|_, t| t.elapsed() < TOMBSTONE_TTL);
        inner.tombstones.insert(id.to_string(), Instant::now());
        let spec = inner.desired.sandboxes.remove(id);
        let ns = match &spec {
            Some(s) => s.netns.clone(),
            None if netns_name.is_empty() => None,
            None => Some(format!("{}{netns_name}", self.netns_prefix)),
        };
        self.stop_command(&mut inner, id).await;
        // An open DNS socket would keep the namespace (and its veths) alive.
        self.dns.stop(id);
        if let Some(ns) = &ns {
            self.remove_netns(&mut inner, ns).await?;
        }
        self.names.rebuild(&inner.desired);
        self.refresh_links(&inner);
        if let Some(s) = &spec {
            // The kernel removes the namespace's veth pairs asynchronously;
            // deleting the host ends here would wait for that (~30 ms) under
            // the lock. Check later, off the request path, and delete what is
            // left (names are unique per endpoint, so nothing else is hit).
            let node = self.node.clone();
            let leftovers: Vec<String> = s.endpoints.iter().map(|e| e.host_ifname()).collect();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                for name in leftovers {
                    if let Ok(true) = link::delete(&node, &name).await {
                        tracing::info!(ifname = %name, "removed leftover host veth");
                    }
                }
            });
        }
        let res = self.sweep_networks(&mut inner).await;
        self.save(&mut inner);
        tracing::info!(sandbox = %id, "sandbox removed");
        res
    }

    /// Takes a new peer set of an overlay network (unless an equal or newer
    /// one was seen) and programs it when the network is realised here.
    pub async fn set_peers(&self, network_id: &str, set: PeerSet) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if !accept_peers(&mut inner, network_id, set) {
            tracing::debug!(network = %network_id, "older overlay peer set ignored");
            return Ok(());
        }
        self.names.rebuild(&inner.desired);
        if let Some(&vx) = inner.vxlans.get(network_id) {
            self.program_peers(&inner, network_id, vx).await?;
        }
        Ok(())
    }

    /// The command counter, to pass to [`Reconciler::sync`] for a state
    /// fetched after this call.
    pub async fn epoch(&self) -> u64 {
        self.inner.lock().await.epoch
    }

    /// Converges the node to exactly `desired`, a snapshot taken after
    /// [`Reconciler::epoch`] returned `since`: what commands changed after
    /// that (sandboxes ensured or removed, newer peer sets) is kept.
    pub async fn sync(&self, mut desired: Desired, since: u64) -> Result<()> {
        let mut inner = self.inner.lock().await;
        merge_newer(&inner, &mut desired, since);
        inner.desired = desired;
        inner.bridges.clear();
        inner.vxlans.clear();
        self.names.rebuild(&inner.desired);
        let mut errors = Vec::new();
        let sandboxes: Vec<SandboxSpec> = inner.desired.sandboxes.values().cloned().collect();
        for s in &sandboxes {
            if let Err(e) = self.realise(&mut inner, s).await {
                tracing::error!(sandbox = %s.name, error = %e, "could not realise sandbox");
                errors.push(format!("sandbox {}: {e}", s.name));
            }
        }
        if let Err(e) = self.sweep(&mut inner).await {
            errors.push(format!("sweep: {e}"));
        }
        self.refresh_links(&inner);
        let active = inner.desired.active_networks().len() as u32;
        inner.status = SyncStatus {
            converged: errors.is_empty(),
            last_error: errors.join("; "),
            sandboxes: inner.desired.sandboxes.len() as u32,
            networks: active,
        };
        self.save(&mut inner);
        tracing::info!(
            sandboxes = sandboxes.len(),
            networks = active,
            converged = errors.is_empty(),
            "full sync done"
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ReconcileError::Spec(errors.join("; ")))
        }
    }

    /// Writes the state file when the record changed since the last write.
    fn save(&self, inner: &mut Inner) {
        if inner.saved.as_ref() == Some(&inner.owned) {
            return;
        }
        match self.state.save(&inner.owned) {
            Ok(()) => inner.saved = Some(inner.owned.clone()),
            Err(e) => tracing::error!(error = %e, "could not save the agent's state file"),
        }
    }

    async fn realise(&self, inner: &mut Inner, s: &SandboxSpec) -> Result<()> {
        let mut masters = Vec::with_capacity(s.endpoints.len());
        for ep in &s.endpoints {
            let net = inner
                .desired
                .networks
                .get(&ep.network_id)
                .cloned()
                .ok_or_else(|| {
                    ReconcileError::Spec(format!("endpoint {} names an unknown network", ep.id))
                })?;
            let index = self.ensure_network(inner, &net).await?;
            masters.push((net, index));
        }
        self.apply_rules(inner).await?;
        if let Some(ns) = &s.netns {
            if netns::create(ns).await? {
                tracing::info!(netns = %ns, sandbox = %s.name, "created namespace");
            }
            if inner.owned.netns.insert(ns.clone(), s.id.clone()).is_none() {
                self.save(inner);
            }
            // Interfaces of endpoints that are no longer wanted.
            let sb = netns::netlink(Some(ns)).await?;
            let wanted: BTreeSet<&str> = s.endpoints.iter().map(|e| e.ifname.as_str()).collect();
            for l in link::list(&sb).await? {
                if l.name.starts_with("eth")
                    && !wanted.contains(l.name.as_str())
                    && link::delete(&sb, &l.name).await?
                {
                    tracing::info!(netns = %ns, ifname = %l.name, "removed interface of a departed endpoint");
                }
            }
            for (ep, (net, master)) in s.endpoints.iter().zip(&masters) {
                let host = ep.host_ifname();
                let spec = link::VethSpec {
                    host_name: &host,
                    master: *master,
                    mtu: self.mtu_of(net),
                    netns: ns,
                    peer_name: &ep.ifname,
                    peer_mac: ep.mac,
                    addr: ep.ip,
                    prefix: ep.prefix,
                    gateway: ep.default_route.then_some(net.gateway),
                };
                if link::ensure_veth_with(&self.node, &sb, &spec).await? {
                    tracing::info!(netns = %ns, ifname = %ep.ifname, ip = %ep.ip, "endpoint realised");
                }
                link::set_port_isolated(&self.node, &host, !net.icc).await?;
            }
            self.write_etc(inner, s, ns)?;
            if self.names.serves(&s.id) {
                self.dns
                    .serve(&s.id, ns)
                    .await
                    .map_err(|e| ReconcileError::Spec(format!("dns: {e}")))?;
            } else {
                self.dns.stop(&s.id);
            }
        }
        self.ensure_command(inner, s).await
    }

    /// The sandbox's hosts file (itself, its links) and resolv.conf (the
    /// embedded DNS responder where it resolves names, else the node's).
    fn write_etc(&self, inner: &Inner, s: &SandboxSpec, ns: &str) -> Result<()> {
        let own: Vec<Ipv4Addr> = s.endpoints.iter().map(|e| e.ip).collect();
        let mut extra = Vec::new();
        for (name, alias) in &s.links {
            // Legacy links point at the target's address on the default bridge.
            let target = inner
                .desired
                .sandboxes
                .values()
                .find(|t| &t.name == name)
                .and_then(|t| {
                    t.endpoints.iter().find(|e| {
                        inner
                            .desired
                            .networks
                            .get(&e.network_id)
                            .is_some_and(|n| n.name == DEFAULT_BRIDGE.0)
                    })
                });
            if let Some(ep) = target {
                let names = if alias.is_empty() || alias == name {
                    vec![name.clone()]
                } else {
                    vec![alias.clone(), name.clone()]
                };
                extra.push((ep.ip, names));
            }
        }
        let resolv = if self.names.serves(&s.id) {
            format!("nameserver {}\nsearch .\noptions ndots:0\n", crate::dns::DNS_ADDR)
        } else {
            etcfiles::node_resolv_conf()
        };
        etcfiles::ensure(ns, &etcfiles::hosts(&s.name, &own, &extra), &resolv)
            .map_err(io(format!("writing /etc/netns/{ns}")))
    }

    /// Rewrites the hosts files of local sandboxes with links (their targets
    /// may have come, gone or moved).
    fn refresh_links(&self, inner: &Inner) {
        for s in inner.desired.sandboxes.values().filter(|s| !s.links.is_empty()) {
            if let Some(ns) = &s.netns
                && let Err(e) = self.write_etc(inner, s, ns)
            {
                tracing::warn!(sandbox = %s.name, error = %e, "could not refresh the hosts file");
            }
        }
    }

    async fn ensure_network(&self, inner: &mut Inner, net: &NetworkSpec) -> Result<u32> {
        if let Some((spec, index)) = inner.bridges.get(&net.bridge)
            && spec == net
        {
            return Ok(*index);
        }
        let mtu = self.mtu_of(net);
        // An overlay's bridge has no address: the overlay subnet never enters
        // the node's routing table, so overlays may overlap each other.
        let addr = (net.driver == Driver::Bridge).then(|| (net.gateway, net.subnet.prefix_len()));
        let index = link::ensure_bridge(&self.node, &net.bridge, mtu, addr).await?;
        if inner.owned.bridges.insert(net.bridge.clone()) {
            tracing::info!(network = %net.name, ifname = %net.bridge, "bridge created");
            self.save(inner);
        }
        if let (Some(vni), Some(vx_name)) = (net.vni, net.vxlan_name()) {
            let vx =
                link::ensure_vxlan(&self.node, &vx_name, vni, self.underlay, VXLAN_PORT, mtu, index).await?;
            if inner.owned.bridges.insert(vx_name.clone()) {
                tracing::info!(network = %net.name, ifname = %vx_name, vni, "vxlan created");
                self.save(inner);
            }
            inner.vxlans.insert(net.id.clone(), vx);
            self.program_peers(inner, &net.id, vx).await?;
        }
        inner.bridges.insert(net.bridge.clone(), (net.clone(), index));
        Ok(index)
    }

    /// MTU of a network's links on this node.
    fn mtu_of(&self, net: &NetworkSpec) -> u32 {
        match (net.mtu, net.driver) {
            (0, Driver::Overlay) => self.underlay_mtu.saturating_sub(VXLAN_OVERHEAD),
            (0, _) => 1500,
            (m, _) => m,
        }
    }

    /// Makes the VXLAN device's FDB and neighbour entries exactly those of
    /// the network's current peer set: stale entries go, missing ones come.
    async fn program_peers(&self, inner: &Inner, network_id: &str, vx: u32) -> Result<()> {
        let set = inner.desired.peers.get(network_id).cloned().unwrap_or_default();
        let want_fdb: BTreeSet<FdbEntry> = set
            .peers
            .iter()
            .map(|p| FdbEntry {
                mac: p.mac,
                dst: p.vtep,
            })
            .chain(set.vteps.iter().map(|v| FdbEntry {
                mac: fdb::ZERO_MAC,
                dst: *v,
            }))
            .collect();
        let want_neigh: BTreeSet<NeighEntry> = set
            .peers
            .iter()
            .map(|p| NeighEntry { ip: p.ip, mac: p.mac })
            .collect();
        let have_fdb: BTreeSet<FdbEntry> = fdb::fdb_list(&self.node, vx).await?.into_iter().collect();
        let have_neigh: BTreeSet<NeighEntry> = fdb::neigh_list(&self.node, vx).await?.into_iter().collect();
        for e in have_fdb.difference(&want_fdb) {
            fdb::fdb_del(&self.node, vx, *e).await?;
        }
        for e in have_neigh.difference(&want_neigh) {
            fdb::neigh_del(&self.node, vx, *e).await?;
        }
        for e in want_fdb.difference(&have_fdb) {
            fdb::fdb_add(&self.node, vx, *e).await?;
        }
        for e in want_neigh.difference(&have_neigh) {
            fdb::neigh_replace(&self.node, vx, *e).await?;
        }
        let changed = want_fdb != have_fdb || want_neigh != have_neigh;
        if changed {
            tracing::info!(network = %network_id, peers = set.peers.len(), vteps = set.vteps.len(), revision = set.revision, "overlay peers programmed");
        }
        Ok(())
    }

    /// Rewrites berth's nftables table when the realised bridges changed.
    async fn apply_rules(&self, inner: &mut Inner) -> Result<()> {
        let rules: Vec<BridgeRules> = inner
            .desired
            .active_networks()
            .into_iter()
            .filter(|n| n.driver == Driver::Bridge)
            .map(|n| BridgeRules {
                bridge: n.bridge.clone(),
                subnet: n.subnet,
                masquerade: n.masquerade,
            })
            .collect();
        let mut ports = Vec::new();
        for s in inner.desired.sandboxes.values().filter(|s| !s.ports.is_empty()) {
            let Some(ep) = s.primary() else { continue };
            let Some(net) = inner.desired.networks.get(&ep.network_id) else {
                continue;
            };
            for m in &s.ports {
                ports.push(PortRule {
                    mapping: *m,
                    target: ep.ip,
                    bridge: net.bridge.clone(),
                });
            }
        }
        // 127.0.0.1 may only be routed out of a bridge with route_localnet.
        let localnet: BTreeSet<&str> = ports.iter().map(|p| p.bridge.as_str()).collect();
        for b in &localnet {
            if sysctl::set(&format!("net/ipv4/conf/{b}/route_localnet"), "1")? {
                tracing::info!(ifname = %b, "route_localnet on for published ports");
            }
        }
        let batch = nft::render(&rules, &ports);
        if inner.applied_nft.as_ref() == Some(&batch) {
            return Ok(());
        }
        nft::apply(&batch).await?;
        tracing::info!(bridges = rules.len(), "nftables rules applied");
        inner.applied_nft = Some(batch);
        Ok(())
    }

    /// Removes bridges that no endpoint on this node uses any more, and
    /// updates the rules to match.
    async fn sweep_networks(&self, inner: &mut Inner) -> Result<()> {
        let active: BTreeSet<String> = inner
            .desired
            .active_networks()
            .iter()
            .flat_map(|n| std::iter::once(n.bridge.clone()).chain(n.vxlan_name()))
            .collect();
        let stale: Vec<String> = inner
            .owned
            .bridges
            .iter()
            .filter(|b| !active.contains(*b))
            .cloned()
            .collect();
        self.apply_rules(inner).await?;
        for b in stale {
            if link::delete(&self.node, &b).await? {
                tracing::info!(ifname = %b, "bridge removed");
            }
            inner.owned.bridges.remove(&b);
            inner.bridges.remove(&b);
        }
        inner.desired.networks.retain(|_, n| active.contains(&n.bridge));
        let kept: BTreeSet<String> = inner.desired.networks.keys().cloned().collect();
        inner.vxlans.retain(|id, _| kept.contains(id));
        Ok(())
    }

    /// Full-sync sweep: namespaces, commands and host veths berth owns but
    /// the desired state does not mention.
    async fn sweep(&self, inner: &mut Inner) -> Result<()> {
        let wanted_ns: BTreeSet<String> = inner
            .desired
            .sandboxes
            .values()
            .filter_map(|s| s.netns.clone())
            .collect();
        let stale_ns: Vec<(String, String)> = inner
            .owned
            .netns
            .iter()
            .filter(|(ns, _)| !wanted_ns.contains(*ns))
            .map(|(ns, id)| (ns.clone(), id.clone()))
            .collect();
        for id in self.dns.serving() {
            if !inner.desired.sandboxes.contains_key(&id) {
                self.dns.stop(&id);
            }
        }
        for (ns, id) in stale_ns {
            self.stop_command(inner, &id).await;
            self.remove_netns(inner, &ns).await?;
        }
        let stale_cmds: Vec<String> = inner
            .owned
            .commands
            .keys()
            .filter(|id| !inner.desired.sandboxes.contains_key(*id))
            .cloned()
            .collect();
        for id in stale_cmds {
            self.stop_command(inner, &id).await;
        }
        let wanted_veths: BTreeSet<String> = inner
            .desired
            .sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().map(|e| e.host_ifname()))
            .collect();
        for l in link::list(&self.node).await? {
            if l.name.starts_with(HOST_VETH_PREFIX)
                && l.kind.as_deref() == Some("veth")
                && !wanted_veths.contains(&l.name)
                && link::delete(&self.node, &l.name).await?
            {
                tracing::info!(ifname = %l.name, "removed stale host veth");
            }
        }
        self.sweep_networks(inner).await
    }

    async fn remove_netns(&self, inner: &mut Inner, ns: &str) -> Result<()> {
        if netns::delete(ns).await? {
            tracing::info!(netns = %ns, "namespace deleted");
        }
        etcfiles::remove(ns).map_err(io(format!("removing /etc/netns/{ns}")))?;
        inner.owned.netns.remove(ns);
        Ok(())
    }

    /// Starts the sandbox's detached command unless it is already running.
    async fn ensure_command(&self, inner: &mut Inner, s: &SandboxSpec) -> Result<()> {
        if s.command.is_empty() {
            return Ok(());
        }
        if let Some(d) = inner.owned.commands.get(&s.id)
            && exec::start_time(d.pid) == Some(d.start_time)
        {
            return Ok(());
        }
        let target = self.target(s.netns.as_deref());
        let log_path = self.state.log_file(&s.name);
        let log = std::fs::File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicating the log file"))?;
        let mut cmd = exec::command(&target, &s.command, true).map_err(io("preparing the command"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let mut child = cmd.spawn().map_err(io(format!("starting {:?}", s.command[0])))?;
        let pid = child.id().unwrap_or(0);
        let start_time = exec::start_time(pid).unwrap_or(0);
        tracing::info!(sandbox = %s.name, pid, command = ?s.command, "started the sandbox's command");
        // Reap it whenever it exits; stop_command signals by PID.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        inner
            .owned
            .commands
            .insert(s.id.clone(), Detached { pid, start_time });
        self.save(inner);
        Ok(())
    }

    async fn stop_command(&self, inner: &mut Inner, sandbox_id: &str) {
        if let Some(d) = inner.owned.commands.remove(sandbox_id) {
            exec::stop_group(d.pid, d.start_time, Duration::from_secs(3)).await;
            tracing::info!(sandbox = %sandbox_id, pid = d.pid, "stopped the sandbox's command");
        }
    }

    /// Where `berth exec` runs for a namespace name as the API server knows
    /// it (empty = host mode).
    pub fn exec_target(&self, netns_name: &str) -> exec::Target {
        if netns_name.is_empty() {
            return self.target(None);
        }
        self.target(Some(&format!("{}{netns_name}", self.netns_prefix)))
    }

    fn target(&self, ns: Option<&str>) -> exec::Target {
        match ns {
            None => exec::Target {
                netns: None,
                etc_dir: None,
            },
            Some(ns) => exec::Target {
                netns: Some(netns::path(ns)),
                etc_dir: Some(etcfiles::dir(ns)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, PeerSet};

    fn sandbox(id: &str) -> SandboxSpec {
        SandboxSpec {
            id: id.into(),
            name: id.into(),
            mode: Mode::None,
            netns: Some(id.into()),
            endpoints: vec![],
            command: vec![],
            ports: vec![],
            links: vec![],
        }
    }

    fn inner() -> Inner {
        Inner::new(Owned::default())
    }

    #[test]
    fn a_stale_snapshot_does_not_undo_newer_commands() {
        let mut i = inner();
        // Ensured at epoch 5, after a snapshot taken at epoch 3.
        i.desired.sandboxes.insert("new".into(), sandbox("new"));
        i.touched.insert("new".into(), 5);
        // Ensured at epoch 2, before it: the snapshot decides.
        i.desired.sandboxes.insert("old".into(), sandbox("old"));
        i.touched.insert("old".into(), 2);
        // Removed after the snapshot was read.
        i.tombstones.insert("gone".into(), Instant::now());
        i.desired.peers.insert(
            "ov".into(),
            PeerSet {
                revision: 9,
                ..Default::default()
            },
        );

        let mut snap = Desired::default();
        snap.sandboxes.insert("gone".into(), sandbox("gone"));
        snap.sandboxes.insert("kept".into(), sandbox("kept"));
        snap.peers.insert(
            "ov".into(),
            PeerSet {
                revision: 7,
                ..Default::default()
            },
        );
        merge_newer(&i, &mut snap, 3);
        let ids: Vec<&str> = snap.sandboxes.keys().map(String::as_str).collect();
        assert_eq!(
            ids,
            ["kept", "new"],
            "old is not in the snapshot, so it goes; gone stays gone"
        );
        assert_eq!(snap.peers["ov"].revision, 9, "the newer peer set wins");
    }
}
