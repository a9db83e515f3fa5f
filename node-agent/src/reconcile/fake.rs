//! An in-memory node for tests: the [`Executor`] of a pretend kernel that
//! does what each action asks, so passes can be run, drift injected and
//! convergence checked without root.
use std::collections::{BTreeMap, BTreeSet};

use super::action::{Action, ObjectKey};
use super::executor::{Effect, Executor, ObserveRequest};
use super::observed::{EtcFiles, Link, Namespace, Observed, endpoint_mark, network_mark, sandbox_mark};
use super::report::{ErrorKind, ObjectError};
use crate::kernel::fdb::{FdbEntry, NeighEntry};
use crate::kernel::link::VxlanParams;
use crate::nft::Ruleset;
use crate::state::{Detached, Owned};

#[derive(Debug)]
pub struct FakeNode {
    pub links: BTreeMap<String, Link>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub peers: BTreeMap<String, (BTreeSet<FdbEntry>, BTreeSet<NeighEntry>)>,
    pub bridged: BTreeMap<String, BTreeSet<[u8; 6]>>,
    pub firewall: Option<crate::nft::Seen>,
    pub proxies: crate::nft::Proxies,
    pub applied: Option<Ruleset>,
    pub localnet: BTreeSet<String>,
    pub etc: BTreeMap<String, EtcFiles>,
    /// PID → (sandbox id, running).
    pub processes: BTreeMap<u32, (String, bool)>,
    pub dns: BTreeMap<String, u64>,
    /// Objects whose next action fails (as the kernel would refuse it).
    pub fail: BTreeSet<ObjectKey>,
    /// Every action executed, in order.
    pub log: Vec<Action>,
    pub persisted: Option<Owned>,
    pub local_vtep: std::net::Ipv4Addr,
    next: u32,
}

impl Default for FakeNode {
    fn default() -> Self {
        Self {
            links: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            peers: BTreeMap::new(),
            bridged: BTreeMap::new(),
            firewall: None,
            proxies: Default::default(),
            applied: None,
            localnet: BTreeSet::new(),
            etc: BTreeMap::new(),
            processes: BTreeMap::new(),
            dns: BTreeMap::new(),
            fail: BTreeSet::new(),
            log: Vec::new(),
            persisted: None,
            local_vtep: std::net::Ipv4Addr::new(192, 168, 205, 10),
            next: 0,
        }
    }
}

impl FakeNode {
    fn next(&mut self) -> u32 {
        self.next += 1;
        self.next + 100
    }

    /// A namespace someone else made (no marker).
    pub fn add_foreign_namespace(&mut self, name: &str) {
        let inode = u64::from(self.next());
        self.namespaces.insert(
            name.into(),
            Namespace {
                inode,
                marker: None,
                links: BTreeMap::from([("lo".to_string(), Link::default())]),
                default_route: None,
                default_route6: None,
                inspected: true,
            },
        );
    }

    /// A link someone else made in the node namespace.
    pub fn add_foreign_link(&mut self, name: &str, kind: &str) {
        let index = self.next();
        self.links.insert(
            name.into(),
            Link {
                index,
                kind: Some(kind.into()),
                up: true,
                mtu: 1500,
                ..Default::default()
            },
        );
    }

    /// Deletes a link as `ip link del` would (a veth takes its peer along).
    pub fn delete_link(&mut self, name: &str) {
        if let Some(l) = self.links.remove(name)
            && l.kind.as_deref() == Some("veth")
        {
            for ns in self.namespaces.values_mut() {
                ns.links.retain(|_, p| p.peer != Some(l.index));
            }
        }
    }
}

impl Executor for FakeNode {
    async fn observe(&mut self, req: &ObserveRequest) -> Result<Observed, ObjectError> {
        let links = match &req.links {
            None => self.links.clone(),
            Some(names) => self
                .links
                .iter()
                .filter(|(n, _)| names.contains(*n))
                .map(|(n, l)| (n.clone(), l.clone()))
                .collect(),
        };
        let mut seen = Observed {
            links,
            localnet: self.localnet.clone(),
            dns: self
                .dns
                .iter()
                .filter(|(id, _)| req.dns.as_ref().is_none_or(|ids| ids.contains(*id)))
                .map(|(id, inode)| (id.clone(), *inode))
                .collect(),
            ..Default::default()
        };
        for (name, ns) in &self.namespaces {
            let scanned = req
                .scan_prefix
                .as_ref()
                .is_some_and(|p| name.starts_with(p.as_str()));
            if req.inspect.contains(name) || scanned {
                seen.namespaces.insert(name.clone(), ns.clone());
            } else if req.stat.contains(name) {
                seen.namespaces.insert(
                    name.clone(),
                    Namespace {
                        inode: ns.inode,
                        ..Default::default()
                    },
                );
            }
        }
        for vx in &req.vxlans {
            if self.links.contains_key(vx) {
                seen.peers
                    .insert(vx.clone(), self.peers.get(vx).cloned().unwrap_or_default());
                seen.bridged
                    .insert(vx.clone(), self.bridged.get(vx).cloned().unwrap_or_default());
            }
        }
        if req.firewall {
            seen.firewall = Some(self.firewall.clone());
            seen.proxies = self.proxies.clone();
        }
        for ns in &req.etc {
            seen.etc
                .insert(ns.clone(), self.etc.get(ns).cloned().unwrap_or_default());
        }
        for (id, d) in &req.commands {
            seen.commands
                .insert(id.clone(), self.processes.get(&d.pid).is_some_and(|p| p.1));
        }
        if req.scan_prefix.is_some() {
            for (pid, (id, running)) in &self.processes {
                let in_ours = self
                    .namespaces
                    .values()
                    .any(|n| n.marker.as_deref() == Some(sandbox_mark(id).as_str()));
                if *running && in_ours {
                    seen.adopted_commands.insert(
                        id.clone(),
                        Detached {
                            pid: *pid,
                            start_time: 1,
                        },
                    );
                }
            }
        }
        Ok(seen)
    }

    async fn execute(&mut self, action: &Action, owned: &Owned) -> Result<Effect, ObjectError> {
        self.log.push(action.clone());
        if self.fail.remove(&action.key()) {
            return Err(ObjectError {
                kind: ErrorKind::Kernel,
                message: "Operation not permitted (os error 1)".into(),
                errno: Some(libc::EPERM),
            });
        }
        match action {
            Action::StopCommand { sandbox_id } => {
                if let Some(d) = owned.commands.get(sandbox_id)
                    && let Some(p) = self.processes.get_mut(&d.pid)
                {
                    p.1 = false;
                }
            }
            Action::StopDns { sandbox_id } => {
                self.dns.remove(sandbox_id);
            }
            Action::RemoveNamespace { netns, .. } => {
                self.namespaces.remove(netns);
                self.etc.remove(netns);
                // The kernel removes the veth pairs of a dead namespace.
                let gone: BTreeSet<u32> = self
                    .links
                    .values()
                    .filter(|l| l.kind.as_deref() == Some("veth"))
                    .filter(|l| {
                        !self
                            .namespaces
                            .values()
                            .any(|n| n.links.values().any(|p| p.peer == Some(l.index)))
                    })
                    .map(|l| l.index)
                    .collect();
                self.links.retain(|_, l| !gone.contains(&l.index));
            }
            Action::ForgetNamespace { .. } | Action::ForgetExternal { .. } => {}
            Action::RemoveSandboxLink { netns, ifname } => {
                let peer = self
                    .namespaces
                    .get_mut(netns)
                    .and_then(|n| n.links.remove(ifname))
                    .and_then(|l| l.peer);
                self.links.retain(|_, l| Some(l.index) != peer);
            }
            Action::RemoveLink { ifname, .. } => self.delete_link(ifname),
            Action::CreateBridge(b) => {
                let index = match self.links.get(&b.network.bridge) {
                    Some(l) => l.index,
                    None => self.next(),
                };
                let addrs = match b.network.driver {
                    berth_core::model::Driver::Bridge => {
                        vec![(b.network.gateway, b.network.subnet.prefix_len())]
                    }
                    _ => vec![],
                };
                self.links.insert(
                    b.network.bridge.clone(),
                    Link {
                        index,
                        kind: Some("bridge".into()),
                        alias: Some(network_mark(&b.network.id)),
                        mtu: b.mtu,
                        up: true,
                        addrs,
                        addrs6: crate::reconcile::plan::bridge::bridge_addrs6(&b.network),
                        ..Default::default()
                    },
                );
            }
            Action::EnsureVxlan {
                network,
                mtu,
                vxlan,
                vni,
            } => {
                let master = self.links.get(&network.bridge).map(|l| l.index).ok_or_else(|| {
                    ObjectError::new(
                        ErrorKind::Blocked,
                        format!("bridge {} does not exist", network.bridge),
                    )
                })?;
                let index = self.next();
                self.links.insert(
                    vxlan.clone(),
                    Link {
                        index,
                        kind: Some("vxlan".into()),
                        alias: Some(network_mark(&network.id)),
                        master: Some(master),
                        mtu: *mtu,
                        up: true,
                        vxlan: Some(VxlanParams {
                            vni: Some(*vni),
                            local: Some(self.local_vtep),
                            port: Some(super::plan::vxlan::VXLAN_PORT),
                            learning: Some(false),
                        }),
                        port_learning: Some(false),
                        ..Default::default()
                    },
                );
            }
            Action::SyncPeers {
                vxlan,
                fdb,
                neigh,
                bridged,
                ..
            } => {
                self.peers.insert(vxlan.clone(), (fdb.clone(), neigh.clone()));
                self.bridged.insert(vxlan.clone(), bridged.clone());
            }
            Action::ApplyFirewall { rules, localnet } => {
                let counts = rules.rule_counts();
                self.firewall = (!counts.is_empty()).then(|| crate::nft::Seen {
                    counts,
                    elements: rules.elements().clone(),
                });
                self.applied = Some(rules.clone());
                self.proxies = rules.proxies().clone();
                self.localnet.extend(localnet.iter().cloned());
            }
            Action::UpdatePorts {
                rules,
                add,
                remove,
                localnet,
            } => {
                let Some(fw) = self.firewall.as_mut() else {
                    return Err(ObjectError::new(ErrorKind::Kernel, "no table for the elements"));
                };
                for e in remove {
                    fw.elements.remove(e);
                }
                fw.elements.extend(add.iter().copied());
                self.applied = Some(rules.clone());
                self.proxies = rules.proxies().clone();
                self.localnet.extend(localnet.iter().cloned());
            }
            Action::CreateNamespace { sandbox_id, netns } => {
                let inode = u64::from(self.next());
                let ns = self.namespaces.entry(netns.clone()).or_insert(Namespace {
                    inode,
                    links: BTreeMap::from([("lo".to_string(), Link::default())]),
                    inspected: true,
                    ..Default::default()
                });
                ns.marker = Some(sandbox_mark(sandbox_id));
                return Ok(Effect::Namespace { inode: ns.inode });
            }
            Action::EnsureEndpoint(e) => {
                let master = self.links.get(&e.bridge).map(|l| l.index).ok_or_else(|| {
                    ObjectError::new(ErrorKind::Blocked, format!("bridge {} does not exist", e.bridge))
                })?;
                if !self.namespaces.contains_key(&e.netns) {
                    return Err(ObjectError::new(ErrorKind::Kernel, "no such namespace"));
                }
                let host_name = e.endpoint.host_ifname();
                self.delete_link(&host_name);
                let (host, peer) = (self.next(), self.next());
                self.links.insert(
                    host_name,
                    Link {
                        index: host,
                        kind: Some("veth".into()),
                        alias: Some(endpoint_mark(&e.endpoint.id)),
                        master: Some(master),
                        mtu: e.mtu,
                        up: true,
                        peer: Some(peer),
                        isolated: Some(e.isolated),
                        ..Default::default()
                    },
                );
                let ns = self.namespaces.get_mut(&e.netns).expect("checked");
                ns.links.insert(
                    e.endpoint.ifname.clone(),
                    Link {
                        index: peer,
                        kind: Some("veth".into()),
                        mtu: e.mtu,
                        up: true,
                        mac: Some(e.endpoint.mac),
                        addrs: vec![(e.endpoint.ip, e.endpoint.prefix)],
                        addrs6: e.endpoint.ip6.into_iter().collect(),
                        peer: Some(host),
                        ..Default::default()
                    },
                );
                if let Some(gw) = e.gateway {
                    ns.default_route = Some((gw, Some(peer)));
                }
                if let Some(gw) = e.gateway6 {
                    ns.default_route6 = Some((gw, Some(peer)));
                }
            }
            Action::WriteEtcFiles { netns, hosts, resolv } => {
                self.etc.insert(
                    netns.clone(),
                    EtcFiles {
                        hosts: Some(hosts.clone()),
                        resolv: Some(resolv.clone()),
                    },
                );
            }
            Action::ServeDns { sandbox_id, netns } => {
                let inode = self.namespaces.get(netns).map(|n| n.inode).unwrap_or_default();
                self.dns.insert(sandbox_id.clone(), inode);
            }
            Action::StartCommand { sandbox } => {
                let pid = self.next();
                self.processes.insert(pid, (sandbox.id.clone(), true));
                return Ok(Effect::Command(Detached { pid, start_time: 1 }));
            }
        }
        Ok(Effect::None)
    }

    fn persist(&mut self, owned: &Owned) -> Result<(), ObjectError> {
        self.persisted = Some(owned.clone());
        Ok(())
    }

    fn applied_rules(&self) -> Option<&Ruleset> {
        self.applied.as_ref()
    }
}
