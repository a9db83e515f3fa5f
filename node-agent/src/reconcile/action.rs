//! What a reconcile pass may do: one [`Action`] per kernel object, each
//! naming the [`ObjectKey`] whose result it decides.
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use crate::kernel::fdb::{FdbEntry, NeighEntry};
use crate::model::{EndpointSpec, NetworkSpec, SandboxSpec};
use crate::nft::{PortElem, Ruleset};

/// The kinds of object the agent realises, in the order a pass adds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Bridge,
    Vxlan,
    Peers,
    Firewall,
    Namespace,
    Endpoint,
    EtcFiles,
    Dns,
    Command,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Bridge => "bridge",
            ObjectKind::Vxlan => "vxlan",
            ObjectKind::Peers => "peers",
            ObjectKind::Firewall => "firewall",
            ObjectKind::Namespace => "namespace",
            ObjectKind::Endpoint => "endpoint",
            ObjectKind::EtcFiles => "etc-files",
            ObjectKind::Dns => "dns",
            ObjectKind::Command => "command",
        }
    }
}

/// One object on the node: its kind and its name there (a link or
/// namespace name, a sandbox id for commands and DNS, `berth` for the table).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// A network's bridge as this node realises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAction {
    pub network: NetworkSpec,
    pub mtu: u32,
}

/// One endpoint's veth pair, with what it plugs into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAction {
    pub sandbox_id: String,
    pub netns: String,
    pub endpoint: EndpointSpec,
    pub bridge: String,
    pub mtu: u32,
    pub isolated: bool,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 default route (dual-stack bridge networks, on the endpoint
    /// that has the IPv4 one).
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// The namespace is a runtime's: a link there that holds the peer's
    /// name is never deleted (a conflict instead).
    pub external: bool,
}

/// A change to one object. Removals come first in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the sandbox's detached command (it is not wanted any more).
    StopCommand {
        sandbox_id: String,
    },
    /// Stop answering DNS inside the sandbox.
    StopDns {
        sandbox_id: String,
    },
    /// Delete a berth-owned namespace and its `/etc/netns` files.
    RemoveNamespace {
        netns: String,
        /// The sandbox berth made it for (to stop what runs inside).
        sandbox_id: String,
    },
    /// Drop berth's record of a namespace whose name now holds something
    /// that is not berth's (nothing in the kernel is touched).
    ForgetNamespace {
        netns: String,
    },
    /// Drop berth's record of its interfaces in a runtime's namespace (they
    /// were removed; the namespace itself is never touched).
    ForgetExternal {
        sandbox_id: String,
        netns: String,
    },
    /// Delete a link inside a sandbox namespace (an endpoint that left).
    RemoveSandboxLink {
        netns: String,
        ifname: String,
    },
    /// Delete a berth-owned link in the node namespace (bridge, VXLAN, host veth).
    RemoveLink {
        ifname: String,
        kind: ObjectKind,
    },
    CreateBridge(BridgeAction),
    EnsureVxlan {
        network: NetworkSpec,
        mtu: u32,
        vxlan: String,
        vni: u32,
    },
    /// Make the VXLAN device's FDB and neighbour entries exactly these.
    SyncPeers {
        network_id: String,
        vxlan: String,
        fdb: BTreeSet<FdbEntry>,
        neigh: BTreeSet<NeighEntry>,
        /// Remote MACs the bridge sends to the VXLAN port (static entries).
        bridged: BTreeSet<[u8; 6]>,
    },
    /// Replace berth's nftables table; turn `route_localnet` on for these bridges.
    ApplyFirewall {
        rules: Ruleset,
        localnet: BTreeSet<String>,
    },
    /// The table's structure is `rules`' already: publish `add` and
    /// withdraw `remove` as map elements (the whole `rules` applied if
    /// that is refused), converge the `[::1]` proxies, turn
    /// `route_localnet` on for these bridges.
    UpdatePorts {
        rules: Ruleset,
        add: Vec<PortElem>,
        remove: Vec<PortElem>,
        localnet: BTreeSet<String>,
    },
    CreateNamespace {
        sandbox_id: String,
        netns: String,
    },
    EnsureEndpoint(EndpointAction),
    WriteEtcFiles {
        netns: String,
        hosts: String,
        resolv: String,
    },
    ServeDns {
        sandbox_id: String,
        netns: String,
    },
    StartCommand {
        sandbox: SandboxSpec,
    },
}

impl Action {
    /// The object whose result this action decides.
    pub fn key(&self) -> ObjectKey {
        use ObjectKind as K;
        match self {
            Action::StopCommand { sandbox_id }
            | Action::StartCommand {
                sandbox: SandboxSpec { id: sandbox_id, .. },
            } => ObjectKey::new(K::Command, sandbox_id),
            Action::StopDns { sandbox_id } | Action::ServeDns { sandbox_id, .. } => {
                ObjectKey::new(K::Dns, sandbox_id)
            }
            Action::RemoveNamespace { netns, .. }
            | Action::CreateNamespace { netns, .. }
            | Action::ForgetNamespace { netns }
            | Action::ForgetExternal { netns, .. } => ObjectKey::new(K::Namespace, netns),
            Action::RemoveSandboxLink { netns, ifname } => {
                ObjectKey::new(K::Endpoint, format!("{netns}/{ifname}"))
            }
            Action::RemoveLink { ifname, kind } => ObjectKey::new(*kind, ifname),
            Action::CreateBridge(b) => ObjectKey::new(K::Bridge, &b.network.bridge),
            Action::EnsureVxlan { vxlan, .. } => ObjectKey::new(K::Vxlan, vxlan),
            Action::SyncPeers { vxlan, .. } => ObjectKey::new(K::Peers, vxlan),
            Action::ApplyFirewall { .. } | Action::UpdatePorts { .. } => {
                ObjectKey::new(K::Firewall, crate::nft::TABLE)
            }
            Action::EnsureEndpoint(e) => ObjectKey::new(K::Endpoint, e.endpoint.host_ifname()),
            Action::WriteEtcFiles { netns, .. } => ObjectKey::new(K::EtcFiles, netns),
        }
    }

    /// Removals run before additions.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Action::StopCommand { .. }
                | Action::StopDns { .. }
                | Action::RemoveNamespace { .. }
                | Action::ForgetNamespace { .. }
                | Action::ForgetExternal { .. }
                | Action::RemoveSandboxLink { .. }
                | Action::RemoveLink { .. }
        )
    }

    /// The sandbox whose request this action serves, if any (a failure is
    /// reported to the command that asked for that sandbox).
    pub fn sandbox(&self) -> Option<&str> {
        match self {
            Action::StopCommand { sandbox_id }
            | Action::StopDns { sandbox_id }
            | Action::RemoveNamespace { sandbox_id, .. }
            | Action::ForgetExternal { sandbox_id, .. }
            | Action::CreateNamespace { sandbox_id, .. }
            | Action::ServeDns { sandbox_id, .. } => Some(sandbox_id),
            Action::EnsureEndpoint(e) => Some(&e.sandbox_id),
            Action::StartCommand { sandbox } => Some(&sandbox.id),
            _ => None,
        }
    }
}
