//! The [`Executor`] of a real node: netlink for links, addresses, routes
//! and FDB entries; mount/unshare for namespaces; nftables; files; processes.
//! One is made per pass; netlink connections into sandboxes opened while
//! observing a small pass (a batch of commands) are reused by its actions
//! and closed with it. A larger pass (a full one) closes each after reading
//! its namespace: every connection holds a 64 KiB read buffer, and keeping
//! 2,000 of them for a pass was most of an agent's memory.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use berth_core::model::Driver;
use futures::StreamExt;
use rtnetlink::Handle;

use super::action::{Action, EndpointAction};
use super::executor::{Effect, Executor, ObserveRequest};
use super::observed::{EtcFiles, Link, Namespace, Observed, endpoint_mark, network_mark, sandbox_mark};
use super::plan::vxlan::VXLAN_PORT;
use super::report::{ErrorKind, ObjectError};
use crate::dns::DnsServer;
use crate::kernel::{addr6, fdb, link, netns, sysctl};
use crate::model::SandboxSpec;
use crate::nft::{self, Ruleset};
use crate::state::{Detached, Owned, StateDir};
use crate::{etcfiles, exec};

/// Passes that inspect at most this many namespaces keep their connections
/// for their actions; larger ones reopen one for a namespace that needs an action.
const KEEP_HANDLES_MAX: usize = 32;
/// Namespaces a larger pass reads at once.
const INSPECT_AT_ONCE: usize = 4;

pub struct KernelExecutor<'a> {
    pub node: &'a Handle,
    pub state: &'a StateDir,
    pub dns: &'a DnsServer,
    /// Namespace inode each DNS responder socket was bound in.
    pub dns_inodes: &'a mut HashMap<String, u64>,
    /// The ruleset the last successful apply installed.
    pub applied_rules: &'a mut Option<Ruleset>,
    pub underlay: Ipv4Addr,
    /// Where the FDB and neighbour entries it deletes are registered, so
    /// the netlink watcher does not take them for drift.
    pub own_deletions: Option<std::sync::Arc<crate::watch::OwnDeletions>>,
    /// Where interfaces taken out of service are deleted after the pass;
    /// `None`: deleted in the action.
    pub retiring: Option<Arc<Retiring>>,
    handles: HashMap<String, Handle>,
}

/// Sandbox interfaces of departed endpoints being deleted in the background
/// ([`link::retire`] took them out of service in the pass): a disconnect's
/// answer does not wait the ~20 ms of RCU grace periods a veth deletion
/// takes. A later pass that sees one still there starts no second deletion;
/// one the agent did not live to delete is swept by the next pass that
/// inspects its namespace (its `bgone` name says it is berth's).
#[derive(Debug, Default)]
pub struct Retiring(std::sync::Mutex<HashSet<(String, String)>>);

impl Retiring {
    /// Deletes `ifname` in namespace `netns` through `h`, in a task of its
    /// own, unless that deletion already runs.
    fn delete_later(self: &Arc<Self>, netns: &str, ifname: String, h: Handle) {
        let key = (netns.to_string(), ifname);
        if !self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let (netns, ifname) = &key;
            match link::delete(&h, ifname).await {
                Ok(_) => {
                    tracing::info!(netns = %netns, ifname = %ifname, "removed interface of a departed endpoint")
                }
                Err(e) => {
                    tracing::warn!(netns = %netns, ifname = %ifname, error = %e, "could not delete an interface taken out of service; the next pass tries again")
                }
            }
            me.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        });
    }
}

impl<'a> KernelExecutor<'a> {
    pub fn new(
        node: &'a Handle,
        state: &'a StateDir,
        dns: &'a DnsServer,
        dns_inodes: &'a mut HashMap<String, u64>,
        applied_rules: &'a mut Option<Ruleset>,
        underlay: Ipv4Addr,
    ) -> Self {
        Self {
            node,
            state,
            dns,
            dns_inodes,
            applied_rules,
            underlay,
            own_deletions: None,
            retiring: None,
            handles: HashMap::new(),
        }
    }

    async fn handle(&mut self, ns: &str) -> Result<Handle, ObjectError> {
        if let Some(h) = self.handles.get(ns) {
            return Ok(h.clone());
        }
        let h = netns::netlink(Some(ns)).await?;
        self.handles.insert(ns.to_string(), h.clone());
        Ok(h)
    }

    async fn index_of(&self, name: &str, what: &str) -> Result<u32, ObjectError> {
        match link::get(self.node, name).await? {
            Some(l) => Ok(l.index),
            None => Err(ObjectError::new(
                ErrorKind::Blocked,
                format!("{what} {name} does not exist"),
            )),
        }
    }

    /// Links of a namespace with their addresses, as the planner sees them.
    async fn links_of(h: &Handle) -> Result<BTreeMap<String, Link>, ObjectError> {
        let links = link::list(h).await?;
        Self::with_addrs(h, links).await
    }

    /// The node's links (its namespace is the agent's: read one message at a
    /// time, as there is a host veth per sandbox) with their addresses.
    async fn node_links(&self) -> Result<BTreeMap<String, Link>, ObjectError> {
        let links = link::list_here().await?;
        Self::with_addrs(self.node, links).await
    }

    async fn with_addrs(
        h: &Handle,
        links: Vec<link::LinkInfo>,
    ) -> Result<BTreeMap<String, Link>, ObjectError> {
        let mut addrs = link::ipv4_addrs_all(h).await?;
        let mut addrs6 = addr6::ipv6_addrs_all(h).await?;
        Ok(links
            .into_iter()
            .map(|l| {
                let a = addrs.remove(&l.index).unwrap_or_default();
                let a6 = addrs6.remove(&l.index).unwrap_or_default();
                (l.name.clone(), seen(l, a, a6))
            })
            .collect())
    }

    /// The named links of the node namespace that exist (addresses only for bridges).
    async fn links_named(
        &self,
        names: &std::collections::BTreeSet<String>,
    ) -> Result<BTreeMap<String, Link>, ObjectError> {
        // All requests in flight at once on the node's connection (a
        // command's pass names a few links: its host veths, bridges, VXLAN devices).
        let found =
            futures::future::try_join_all(names.iter().map(|name| link::get(self.node, name))).await?;
        // Addresses only for bridges, each read with the kernel filtering by
        // link: an unfiltered dump walks every address of the node (each host
        // veth's too), so a command's pass was O(sandboxes on the node).
        let read = found.into_iter().flatten().map(|l| async move {
            let (a, a6) = if l.kind.as_deref() == Some("bridge") {
                let (a, a6) = tokio::join!(link::ipv4_addrs_here(l.index), addr6::ipv6_addrs_here(l.index));
                (a?, a6?)
            } else {
                (Vec::new(), Vec::new())
            };
            Ok::<_, ObjectError>((l.name.clone(), seen(l, a, a6)))
        });
        Ok(futures::future::try_join_all(read).await?.into_iter().collect())
    }

    /// A namespace's inode, and optionally what is inside (keeping the connection when `keep`).
    async fn namespace(&mut self, name: &str, inspect: bool, keep: bool) -> Option<Namespace> {
        if !inspect {
            return Some(Namespace {
                inode: netns::inode(name)?,
                ..Default::default()
            });
        }
        if !keep {
            return Self::inspect_namespace(name).await;
        }
        let inode = netns::inode(name)?;
        // It may vanish meanwhile: then it is simply not there.
        let h = self.handle(name).await.ok()?;
        Self::read_inside(inode, &h).await
    }

    /// A namespace's inode and what is inside, through a connection of its own.
    async fn inspect_namespace(name: &str) -> Option<Namespace> {
        let inode = netns::inode(name)?;
        let h = netns::netlink(Some(name)).await.ok()?;
        Self::read_inside(inode, &h).await
    }

    async fn read_inside(inode: u64, h: &Handle) -> Option<Namespace> {
        let links = Self::links_of(h).await.ok()?;
        Some(Namespace {
            inode,
            marker: links.get("lo").and_then(|l| l.alias.clone()),
            links,
            default_route: link::default_route(h).await.ok()?,
            default_route6: addr6::default_route6(h).await.ok()?,
            inspected: true,
        })
    }

    async fn sync_peers(
        &self,
        vxlan: &str,
        fdb_want: &std::collections::BTreeSet<fdb::FdbEntry>,
        neigh_want: &std::collections::BTreeSet<fdb::NeighEntry>,
        bridged_want: &std::collections::BTreeSet<[u8; 6]>,
    ) -> Result<(), ObjectError> {
        let vx = self.index_of(vxlan, "vxlan").await?;
        let (have_fdb, have_bridged) = fdb::fdb_read(self.node, vx).await?;
        // Bridge entries first out, last in: no frame goes to a departed
        // endpoint's MAC through the port, none to a new one before its VTEP is known.
        let own = self.own_deletions.as_deref();
        for mac in have_bridged.difference(bridged_want) {
            own.inspect(|o| o.mac(vx, *mac));
            fdb::port_mac_del(self.node, vx, *mac).await?;
        }
        let have_neigh: std::collections::BTreeSet<_> =
            fdb::neigh_list(self.node, vx).await?.into_iter().collect();
        for e in have_fdb.difference(fdb_want) {
            own.inspect(|o| o.mac(vx, e.mac));
            fdb::fdb_del(self.node, vx, *e).await?;
        }
        for e in have_neigh.difference(neigh_want) {
            own.inspect(|o| o.ip(vx, e.ip));
            fdb::neigh_del(self.node, vx, *e).await?;
        }
        for e in fdb_want.difference(&have_fdb) {
            fdb::fdb_add(self.node, vx, *e).await?;
        }
        for e in neigh_want.difference(&have_neigh) {
            fdb::neigh_replace(self.node, vx, *e).await?;
        }
        for mac in bridged_want.difference(&have_bridged) {
            fdb::port_mac_add(self.node, vx, *mac).await?;
        }
        tracing::info!(
            ifname = vxlan,
            fdb = fdb_want.len(),
            neigh = neigh_want.len(),
            "overlay peers programmed"
        );
        Ok(())
    }

    async fn ensure_endpoint(&mut self, e: &EndpointAction) -> Result<(), ObjectError> {
        let master = self.index_of(&e.bridge, "bridge").await?;
        let sb = self.handle(&e.netns).await?;
        let ep = &e.endpoint;
        let host = ep.host_ifname();
        let spec = link::VethSpec {
            host_name: &host,
            master,
            mtu: e.mtu,
            netns: &e.netns,
            peer_name: &ep.ifname,
            peer_mac: ep.mac,
            addr: ep.ip,
            prefix: ep.prefix,
            gateway: e.gateway,
            foreign_netns: e.external,
        };
        if link::ensure_veth_with(self.node, &sb, &spec).await? {
            tracing::info!(netns = %e.netns, ifname = %ep.ifname, ip = %ep.ip, "endpoint realised");
        }
        self.ensure_endpoint6(e, &sb).await?;
        link::set_port_isolated(self.node, &host, e.isolated).await?;
        link::ensure_alias(self.node, &host, &endpoint_mark(&ep.id)).await?;
        Ok(())
    }

    /// The IPv6 side of an endpoint whose veth exists: IPv6 on for the
    /// interface (off otherwise in berth's namespaces), exactly its IPv6
    /// address, and the IPv6 default route when it has one.
    async fn ensure_endpoint6(&self, e: &EndpointAction, sb: &Handle) -> Result<(), ObjectError> {
        let ep = &e.endpoint;
        let Some((ip6, prefix6)) = ep.ip6 else {
            return Ok(());
        };
        let peer = link::get(sb, &ep.ifname).await?.ok_or_else(|| {
            ObjectError::new(
                ErrorKind::Blocked,
                format!("interface {} vanished from netns {}", ep.ifname, e.netns),
            )
        })?;
        if addr6::enable_on(&e.netns, &ep.ifname).await? {
            tracing::info!(netns = %e.netns, ifname = %ep.ifname, "ipv6 on");
        }
        addr6::ensure_only_ipv6(sb, peer.index, Some((ip6, prefix6)), Some(&e.netns), &ep.ifname).await?;
        if let Some(gw6) = e.gateway6
            && addr6::default_route6(sb).await? != Some((gw6, Some(peer.index)))
        {
            addr6::replace_default_route6(sb, gw6, peer.index).await?;
            tracing::info!(netns = %e.netns, ifname = %ep.ifname, ip = %gw6, "set ipv6 default route");
        }
        Ok(())
    }

    fn start_command(&self, s: &SandboxSpec) -> Result<Detached, ObjectError> {
        let target = match &s.netns {
            None => exec::Target {
                netns: None,
                etc_dir: None,
            },
            Some(ns) => exec::Target {
                netns: Some(netns::path(ns)),
                etc_dir: Some(etcfiles::dir(ns)),
            },
        };
        let log_path = self.state.log_file(&s.name);
        let log = std::fs::File::create(&log_path)
            .map_err(|e| ObjectError::io(&format!("creating {}", log_path.display()), &e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ObjectError::io("duplicating the log file", &e))?;
        let mut cmd = exec::command(&target, &s.command, true)
            .map_err(|e| ObjectError::io("preparing the command", &e))?;
        cmd.env(COMMAND_MARK, &s.id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = cmd
            .spawn()
            .map_err(|e| ObjectError::io(&format!("starting {:?}", s.command[0]), &e))?;
        let pid = child.id().unwrap_or(0);
        let start_time = exec::start_time(pid).unwrap_or(0);
        tracing::info!(sandbox = %s.name, pid, command = ?s.command, "started the sandbox's command");
        // Reap it whenever it exits; stopping signals by PID and start time.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(Detached { pid, start_time })
    }
}

/// A link as the planner sees it.
fn seen(l: link::LinkInfo, addrs: Vec<(Ipv4Addr, u8)>, addrs6: Vec<(std::net::Ipv6Addr, u8)>) -> Link {
    Link {
        index: l.index,
        kind: l.kind,
        alias: l.alias,
        master: l.master,
        mtu: l.mtu,
        up: l.up,
        mac: l.mac,
        addrs,
        addrs6,
        peer: l.link,
        vxlan: l.vxlan,
        isolated: l.isolated,
        port_learning: l.port_learning,
    }
}

/// The environment variable that marks a detached command as berth's (its value: the sandbox id).
pub const COMMAND_MARK: &str = "BERTH_SANDBOX_ID";

/// Running processes carrying [`COMMAND_MARK`], by sandbox id (the group
/// leader berth started: its process group id is its PID), with the inode
/// of the network namespace each runs in. Another agent's commands carry
/// the marker too: callers keep only those inside namespaces proven theirs.
fn marked_commands() -> BTreeMap<String, (Detached, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let prefix = format!("{COMMAND_MARK}=");
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Some(id) = env.split(|b| *b == 0).find_map(|v| {
            std::str::from_utf8(v)
                .ok()?
                .strip_prefix(prefix.as_str())
                .map(str::to_string)
        }) else {
            continue;
        };
        let leader = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .is_ok_and(|g| g.as_raw() as u32 == pid);
        let Ok(net) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if let (true, Some(start_time)) = (leader, exec::start_time(pid)) {
            out.insert(id, (Detached { pid, start_time }, net.ino()));
        }
    }
    out
}

fn read(path: std::path::PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Executor for KernelExecutor<'_> {
    async fn observe(&mut self, req: &ObserveRequest) -> Result<Observed, ObjectError> {
        let links = match &req.links {
            None => self.node_links().await?,
            Some(names) => self.links_named(names).await?,
        };
        let mut seen = Observed {
            links,
            ..Default::default()
        };
        for (name, l) in &seen.links {
            if l.kind.as_deref() == Some("bridge")
                && read(format!("/proc/sys/net/ipv4/conf/{name}/route_localnet").into())
                    .is_some_and(|v| v.trim() == "1")
            {
                seen.localnet.insert(name.clone());
            }
        }
        if req.inspect.len() <= KEEP_HANDLES_MAX {
            for name in &req.inspect {
                if let Some(ns) = self.namespace(name, true, true).await {
                    seen.namespaces.insert(name.clone(), ns);
                }
            }
        } else {
            // A full pass: several namespaces at once (each is a thread
            // entering it, a socket and five dumps, mostly waiting on the kernel).
            let found: Vec<(String, Option<Namespace>)> = futures::stream::iter(req.inspect.iter().cloned())
                .map(|name| async move {
                    let ns = Self::inspect_namespace(&name).await;
                    (name, ns)
                })
                .buffer_unordered(INSPECT_AT_ONCE)
                .collect()
                .await;
            for (name, ns) in found {
                if let Some(ns) = ns {
                    seen.namespaces.insert(name, ns);
                }
            }
        }
        for name in req.stat.iter().filter(|n| !req.inspect.contains(*n)) {
            if let Some(ns) = self.namespace(name, false, false).await {
                seen.namespaces.insert(name.clone(), ns);
            }
        }
        if let Some(prefix) = &req.scan_prefix {
            for name in netns::list()?
                .into_iter()
                .filter(|n| n.starts_with(prefix.as_str()))
            {
                if seen.namespaces.get(&name).is_some_and(|n| n.inspected) {
                    continue;
                }
                if let Some(ns) = self.namespace(&name, true, false).await {
                    seen.namespaces.insert(name, ns);
                }
            }
        }
        if req.scan_prefix.is_some() {
            // A command is berth's when it runs inside the namespace berth
            // made for its sandbox (or, in host mode, in the node's own).
            use std::os::unix::fs::MetadataExt;
            let own = std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| m.ino())
                .ok();
            for (id, (d, net)) in marked_commands() {
                let in_ours = seen
                    .namespaces
                    .values()
                    .any(|n| n.inode == net && n.marker.as_deref() == Some(sandbox_mark(&id).as_str()));
                if in_ours || (Some(net) == own && req.host_sandboxes.contains(&id)) {
                    seen.adopted_commands.insert(id, d);
                }
            }
        }
        // One after the other: the kernel serves one dump at a time per
        // netlink socket (a second one in flight fails with EBUSY).
        for vx in &req.vxlans {
            if let Some(l) = seen.links.get(vx) {
                let (f, bridged) = fdb::fdb_read(self.node, l.index).await?;
                let n = fdb::neigh_list(self.node, l.index).await?.into_iter().collect();
                seen.peers.insert(vx.clone(), (f, n));
                seen.bridged.insert(vx.clone(), bridged);
            }
        }
        if req.firewall {
            seen.firewall = Some(nft::observe().await?);
            seen.proxies = crate::proxy::running();
        }
        for ns in &req.etc {
            let dir = etcfiles::dir(ns);
            seen.etc.insert(
                ns.clone(),
                EtcFiles {
                    hosts: read(dir.join("hosts")),
                    resolv: read(dir.join("resolv.conf")),
                },
            );
        }
        for (id, d) in &req.commands {
            seen.commands
                .insert(id.clone(), exec::start_time(d.pid) == Some(d.start_time));
        }
        // In a command's pass, only its sandboxes' (O(its scope)).
        let serving = |id: &String| self.dns.is_serving(id);
        match &req.dns {
            None => seen.dns.extend(
                self.dns_inodes
                    .iter()
                    .filter(|(id, _)| serving(id))
                    .map(|(id, inode)| (id.clone(), *inode)),
            ),
            Some(ids) => seen.dns.extend(ids.iter().filter_map(|id| {
                let inode = self.dns_inodes.get(id)?;
                serving(id).then(|| (id.clone(), *inode))
            })),
        }
        Ok(seen)
    }

    async fn execute(&mut self, action: &Action, owned: &Owned) -> Result<Effect, ObjectError> {
        match action {
            Action::StopCommand { sandbox_id } => {
                if let Some(d) = owned.commands.get(sandbox_id) {
                    exec::stop_group(d.pid, d.start_time, Duration::from_secs(3)).await;
                    tracing::info!(sandbox = %sandbox_id, pid = d.pid, "stopped the sandbox's command");
                }
            }
            Action::StopDns { sandbox_id } => {
                self.dns.stop(sandbox_id);
                self.dns_inodes.remove(sandbox_id);
            }
            Action::RemoveNamespace {
                netns: name,
                sandbox_id,
            } => {
                // An open socket (DNS, a cached connection) would keep the namespace alive.
                self.dns.stop(sandbox_id);
                self.dns_inodes.remove(sandbox_id);
                self.handles.remove(name);
                if netns::delete(name).await? {
                    tracing::info!(netns = %name, "namespace deleted");
                }
                etcfiles::remove(name)
                    .map_err(|e| ObjectError::io(&format!("removing /etc/netns/{name}"), &e))?;
            }
            Action::ForgetNamespace { netns } => {
                tracing::warn!(netns = %netns, "namespace is no longer berth's; forgetting it");
            }
            Action::ForgetExternal { sandbox_id, netns } => {
                tracing::info!(sandbox = %sandbox_id, netns = %netns, "berth's interfaces in the runtime's namespace are gone");
            }
            Action::RemoveSandboxLink { netns, ifname } => {
                let h = self.handle(netns).await?;
                match (link::retire(&h, ifname).await?, &self.retiring) {
                    (None, _) => {}
                    (Some(retired), Some(later)) => {
                        if retired != *ifname {
                            tracing::info!(netns = %netns, ifname = %ifname, now = %retired, "took the interface of a departed endpoint out of service");
                        }
                        later.delete_later(netns, retired, h);
                    }
                    (Some(retired), None) => {
                        link::delete(&h, &retired).await?;
                        tracing::info!(netns = %netns, ifname = %ifname, "removed interface of a departed endpoint");
                    }
                }
            }
            Action::RemoveLink { ifname, kind } => {
                if link::delete(self.node, ifname).await? {
                    tracing::info!(ifname = %ifname, kind = kind.as_str(), "removed link");
                }
            }
            Action::CreateBridge(b) => {
                let net = &b.network;
                let addr = (net.driver == Driver::Bridge).then(|| (net.gateway, net.subnet.prefix_len()));
                let index = link::ensure_bridge(self.node, &net.bridge, b.mtu, addr).await?;
                let addrs6 = crate::reconcile::plan::bridge::bridge_addrs6(net);
                if let Some(&(gw6, _)) = addrs6.first() {
                    if sysctl::set(&format!("net/ipv6/conf/{}/accept_dad", net.bridge), "0")? {
                        tracing::info!(ifname = %net.bridge, ip = %gw6, "dad off for the ipv6 gateway");
                    }
                    // A dual-stack bridge's sandboxes reach out through the
                    // node (masqueraded by `ip6 berth`), as with ip_forward.
                    if sysctl::set("net/ipv6/conf/all/forwarding", "1")? {
                        tracing::info!("enabled ipv6 forwarding");
                    }
                }
                addr6::ensure_only_ipv6(self.node, index, addrs6.first().copied(), None, &net.bridge).await?;
                link::ensure_alias(self.node, &net.bridge, &network_mark(&net.id)).await?;
            }
            Action::EnsureVxlan {
                network,
                mtu,
                vxlan,
                vni,
            } => {
                let master = self.index_of(&network.bridge, "bridge").await?;
                link::ensure_vxlan(self.node, vxlan, *vni, self.underlay, VXLAN_PORT, *mtu, master).await?;
                link::set_port_learning(self.node, vxlan, false).await?;
                link::ensure_alias(self.node, vxlan, &network_mark(&network.id)).await?;
            }
            Action::SyncPeers {
                vxlan,
                fdb,
                neigh,
                bridged,
                ..
            } => self.sync_peers(vxlan, fdb, neigh, bridged).await?,
            Action::ApplyFirewall { rules, localnet } => {
                for b in localnet {
                    if sysctl::set(&format!("net/ipv4/conf/{b}/route_localnet"), "1")? {
                        tracing::info!(ifname = %b, "route_localnet on for published ports");
                    }
                }
                *self.applied_rules = None;
                nft::apply(rules).await?;
                *self.applied_rules = Some(rules.clone());
                tracing::info!(ports = rules.elements().len(), "nftables tables replaced");
                crate::proxy::sync(rules.proxies()).await?;
            }
            Action::UpdatePorts {
                rules,
                add,
                remove,
                localnet,
            } => {
                for b in localnet {
                    if sysctl::set(&format!("net/ipv4/conf/{b}/route_localnet"), "1")? {
                        tracing::info!(ifname = %b, "route_localnet on for published ports");
                    }
                }
                *self.applied_rules = None;
                match nft::update_ports(add, remove).await {
                    Ok(()) => {
                        for e in remove {
                            tracing::info!(port = %e.describe(), "published port withdrawn");
                        }
                        for e in add {
                            tracing::info!(port = %e.describe(), "port published");
                        }
                    }
                    Err(e) => {
                        // An element to delete was gone, or a map: the
                        // whole table then, which is right whatever it held.
                        tracing::warn!(error = %e, "port elements refused; replacing the tables");
                        nft::apply(rules).await?;
                        tracing::info!(ports = rules.elements().len(), "nftables tables replaced");
                    }
                }
                *self.applied_rules = Some(rules.clone());
                crate::proxy::sync(rules.proxies()).await?;
            }
            Action::CreateNamespace {
                sandbox_id,
                netns: name,
            } => {
                let mark = sandbox_mark(sandbox_id);
                self.handles.remove(name);
                if netns::create(name, &mark).await? {
                    tracing::info!(netns = %name, sandbox = %sandbox_id, "created namespace");
                } else {
                    // Berth's by its record but unmarked: mark it.
                    let h = self.handle(name).await?;
                    link::ensure_alias(&h, "lo", &mark).await?;
                }
                let inode = netns::inode(name).ok_or_else(|| {
                    ObjectError::new(ErrorKind::Kernel, format!("namespace {name} vanished"))
                })?;
                return Ok(Effect::Namespace { inode });
            }
            Action::EnsureEndpoint(e) => self.ensure_endpoint(e).await?,
            Action::WriteEtcFiles { netns, hosts, resolv } => {
                etcfiles::ensure(netns, hosts, resolv)
                    .map_err(|e| ObjectError::io(&format!("writing /etc/netns/{netns}"), &e))?;
            }
            Action::ServeDns {
                sandbox_id,
                netns: name,
            } => {
                // A socket from before lives in the namespace it was made in.
                self.dns.stop(sandbox_id);
                self.dns
                    .serve(sandbox_id, name)
                    .await
                    .map_err(|e| ObjectError::new(ErrorKind::Kernel, format!("dns: {e}")))?;
                if let Some(inode) = netns::inode(name) {
                    self.dns_inodes.insert(sandbox_id.clone(), inode);
                }
            }
            Action::StartCommand { sandbox } => return Ok(Effect::Command(self.start_command(sandbox)?)),
        }
        Ok(Effect::None)
    }

    fn applied_rules(&self) -> Option<&Ruleset> {
        self.applied_rules.as_ref()
    }

    fn persist(&mut self, owned: &Owned) -> Result<(), ObjectError> {
        super::persist_to(self.state, owned)
    }
}
