//! Converging this node to its desired state. Small commands (ensure or
//! remove one sandbox) and full syncs go through one lock, so the kernel is
//! changed by one pass at a time. Every step is idempotent: objects that
//! already match are left alone, so a restarted agent does not disturb
//! traffic. A full sync also removes what berth owns but no longer wants
//! (mark and sweep), before reporting the node converged.
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rtnetlink::Handle;
use tokio::sync::Mutex;

use crate::etcfiles;
use crate::exec;
use crate::kernel::{self, link, netns, sysctl};
use crate::model::{Desired, HOST_VETH_PREFIX, NetworkSpec, SandboxSpec};
use crate::nft::{self, BridgeRules};
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
    applied_nft: Option<String>,
    status: SyncStatus,
}

pub struct Reconciler {
    node: Handle,
    netns_prefix: String,
    state: StateDir,
    inner: Mutex<Inner>,
}

impl Reconciler {
    /// Prepares the node (forwarding on) and loads what earlier runs created.
    pub async fn new(state_dir: PathBuf, netns_prefix: String) -> Result<Self> {
        let state = StateDir::new(&state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
        if sysctl::set("net.ipv4.ip_forward", "1")? {
            tracing::info!("enabled ip forwarding");
        }
        let node = netns::netlink(None).await?;
        let owned = state.load();
        Ok(Self {
            node,
            netns_prefix,
            state,
            inner: Mutex::new(Inner {
                desired: Desired::default(),
                owned,
                bridges: HashMap::new(),
                applied_nft: None,
                status: SyncStatus::default(),
            }),
        })
    }

    pub fn netns_prefix(&self) -> &str {
        &self.netns_prefix
    }

    pub async fn status(&self) -> SyncStatus {
        self.inner.lock().await.status.clone()
    }

    /// Realises one sandbox exactly as given.
    pub async fn ensure_sandbox(&self, sandbox: SandboxSpec, networks: Vec<NetworkSpec>) -> Result<()> {
        let mut inner = self.inner.lock().await;
        for n in networks {
            inner.desired.networks.insert(n.id.clone(), n);
        }
        inner
            .desired
            .sandboxes
            .insert(sandbox.id.clone(), sandbox.clone());
        let res = self.realise(&mut inner, &sandbox).await;
        // Endpoints dropped by this command may leave a bridge unused.
        let swept = self.sweep_networks(&mut inner).await;
        self.save(&inner);
        res.and(swept)
    }

    /// Tears one sandbox down. `netns` (without prefix) is used when this
    /// agent does not know the sandbox (e.g. it restarted before a sync).
    pub async fn remove_sandbox(&self, id: &str, netns_name: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let spec = inner.desired.sandboxes.remove(id);
        let ns = match &spec {
            Some(s) => s.netns.clone(),
            None if netns_name.is_empty() => None,
            None => Some(format!("{}{netns_name}", self.netns_prefix)),
        };
        self.stop_command(&mut inner, id).await;
        if let Some(ns) = &ns {
            self.remove_netns(&mut inner, ns).await?;
        }
        if let Some(s) = &spec {
            for ep in &s.endpoints {
                // Usually gone with the namespace already; this catches leftovers.
                if link::delete(&self.node, &ep.host_ifname()).await? {
                    tracing::info!(ifname = %ep.host_ifname(), "removed leftover host veth");
                }
            }
        }
        let res = self.sweep_networks(&mut inner).await;
        self.save(&inner);
        tracing::info!(sandbox = %id, "sandbox removed");
        res
    }

    /// Converges the node to exactly `desired`.
    pub async fn sync(&self, desired: Desired) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.desired = desired;
        inner.bridges.clear();
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
        let active = inner.desired.active_networks().len() as u32;
        inner.status = SyncStatus {
            converged: errors.is_empty(),
            last_error: errors.join("; "),
            sandboxes: inner.desired.sandboxes.len() as u32,
            networks: active,
        };
        self.save(&inner);
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

    fn save(&self, inner: &Inner) {
        if let Err(e) = self.state.save(&inner.owned) {
            tracing::error!(error = %e, "could not save the agent's state file");
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
            for (i, (ep, (net, master))) in s.endpoints.iter().zip(&masters).enumerate() {
                let host = ep.host_ifname();
                let spec = link::VethSpec {
                    host_name: &host,
                    master: *master,
                    mtu: net.mtu,
                    netns: ns,
                    peer_name: &ep.ifname,
                    peer_mac: ep.mac,
                    addr: ep.ip,
                    prefix: ep.prefix,
                    gateway: (i == 0).then_some(net.gateway),
                };
                if link::ensure_veth_with(&self.node, &sb, &spec).await? {
                    tracing::info!(netns = %ns, ifname = %ep.ifname, ip = %ep.ip, "endpoint realised");
                }
                link::set_port_isolated(&self.node, &host, !net.icc).await?;
            }
            let own: Vec<Ipv4Addr> = s.endpoints.iter().map(|e| e.ip).collect();
            etcfiles::ensure(
                ns,
                &etcfiles::hosts(&s.name, &own, &[]),
                &etcfiles::node_resolv_conf(),
            )
            .map_err(io(format!("writing /etc/netns/{ns}")))?;
        }
        self.ensure_command(inner, s).await
    }

    async fn ensure_network(&self, inner: &mut Inner, net: &NetworkSpec) -> Result<u32> {
        if let Some((spec, index)) = inner.bridges.get(&net.bridge)
            && spec == net
        {
            return Ok(*index);
        }
        let index = link::ensure_bridge(
            &self.node,
            &net.bridge,
            net.mtu,
            Some((net.gateway, net.subnet.prefix_len())),
        )
        .await?;
        if inner.owned.bridges.insert(net.bridge.clone()) {
            tracing::info!(network = %net.name, ifname = %net.bridge, "bridge created");
            self.save(inner);
        }
        inner.bridges.insert(net.bridge.clone(), (net.clone(), index));
        Ok(index)
    }

    /// Rewrites berth's nftables table when the realised bridges changed.
    async fn apply_rules(&self, inner: &mut Inner) -> Result<()> {
        let rules: Vec<BridgeRules> = inner
            .desired
            .active_networks()
            .into_iter()
            .map(|n| BridgeRules {
                bridge: n.bridge.clone(),
                subnet: n.subnet,
                masquerade: n.masquerade,
            })
            .collect();
        let batch = nft::render(&rules);
        if inner.applied_nft.as_deref() == Some(batch.as_str()) {
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
            .map(|n| n.bridge.clone())
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
