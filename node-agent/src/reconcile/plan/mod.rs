//! The planner: a pure function from what the node should have
//! ([`Desired`]), what it has ([`Observed`]) and what berth recorded as its
//! own ([`Owned`]) to the [`Action`]s that close the gap, removals first.
//! One module per kind of object; none of them touches the kernel, so all
//! of this is unit-tested without root.
pub(crate) mod bridge;
mod command;
mod dns;
mod endpoint;
mod etc;
mod firewall;
mod namespace;
pub mod vxlan;

use std::collections::BTreeSet;

use berth_core::model::Driver;

use super::action::{Action, ObjectKey, ObjectKind};
use super::observed::Observed;
use crate::model::{Desired, NetworkSpec, SandboxSpec};
use crate::nft::Ruleset;
use crate::state::Owned;

/// Bytes VXLAN adds to a frame over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Which objects a pass looks at: everything (a full pass), or the objects
/// of some sandboxes and networks (a command's pass).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every sandbox.
    pub sandboxes: Option<BTreeSet<String>>,
    /// `None`: every network.
    pub networks: Option<BTreeSet<String>>,
}

impl Scope {
    pub fn full() -> Self {
        Self::default()
    }

    /// One sandbox and the networks it uses (or used).
    pub fn sandbox(id: &str, networks: impl IntoIterator<Item = String>) -> Self {
        Self {
            sandboxes: Some(BTreeSet::from([id.to_string()])),
            networks: Some(networks.into_iter().collect()),
        }
    }

    /// One network's objects (its peers), no sandbox.
    pub fn network(id: &str) -> Self {
        Self {
            sandboxes: Some(BTreeSet::new()),
            networks: Some(BTreeSet::from([id.to_string()])),
        }
    }

    pub fn is_full(&self) -> bool {
        self.sandboxes.is_none() && self.networks.is_none()
    }

    pub fn has_sandbox(&self, id: &str) -> bool {
        self.sandboxes.as_ref().is_none_or(|s| s.contains(id))
    }

    pub fn has_network(&self, id: &str) -> bool {
        self.networks.as_ref().is_none_or(|s| s.contains(id))
    }

    /// The desired sandboxes in scope, in id order: looked up by id for a
    /// command's pass, so it costs O(its scope), not O(the node).
    pub fn sandboxes_of<'a>(&self, d: &'a Desired) -> Vec<&'a SandboxSpec> {
        match &self.sandboxes {
            None => d.sandboxes.values().collect(),
            Some(ids) => ids.iter().filter_map(|id| d.sandboxes.get(id)).collect(),
        }
    }
}

/// An object berth must not touch: it exists and is not provably berth's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: ObjectKey,
    /// The sandboxes that need the object (their requests fail with this).
    pub sandboxes: Vec<String>,
    pub message: String,
}

/// What a pass will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// Sandboxes in a runtime's namespace that is gone or was replaced (its
    /// path now holds another namespace): to be detached through the API
    /// server, which frees their addresses.
    pub vanished: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.conflicts.is_empty()
    }
}

/// Everything the planner reads.
pub struct Inputs<'a> {
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub owned: &'a Owned,
    pub scope: &'a Scope,
    /// The node's underlay MTU (overlay links get 50 bytes less).
    pub underlay_mtu: u32,
    /// The node's underlay address: the local end of every VXLAN tunnel.
    pub local_vtep: std::net::Ipv4Addr,
    /// The node's own resolv.conf (sandboxes without name resolution get it).
    pub node_resolv: &'a str,
    /// The ruleset the last successful apply installed, if this process applied one.
    pub applied_rules: Option<&'a Ruleset>,
    /// Whether `desired` is the whole node's state. Before the first snapshot
    /// it is only what commands brought: then berth's links it does not
    /// mention are kept and the firewall is not rewritten.
    pub complete: bool,
}

/// What the per-kind planners share while a plan is built.
struct Ctx<'a> {
    inp: &'a Inputs<'a>,
    /// Sandboxes with a conflict: nothing of theirs is touched.
    blocked: BTreeSet<String>,
    /// Networks whose bridge or VXLAN name is taken by something foreign.
    blocked_networks: BTreeSet<String>,
    /// Namespaces this plan (re)creates.
    creating_ns: BTreeSet<String>,
    plan: Plan,
}

impl<'a> Ctx<'a> {
    fn desired(&self) -> &'a Desired {
        self.inp.desired
    }

    fn observed(&self) -> &'a Observed {
        self.inp.observed
    }

    /// MTU of a network's links on this node.
    fn mtu_of(&self, net: &NetworkSpec) -> u32 {
        mtu_of(net, self.inp.underlay_mtu)
    }

    /// Desired sandboxes in scope, in id order.
    fn sandboxes_in_scope(&self) -> Vec<&'a SandboxSpec> {
        self.inp.scope.sandboxes_of(self.desired())
    }

    /// Networks with an endpoint on this node that the pass looks at.
    fn active_in_scope(&self) -> Vec<&'a NetworkSpec> {
        let scope = self.inp.scope;
        self.desired()
            .active_networks()
            .into_iter()
            .filter(|n| scope.has_network(&n.id))
            .collect()
    }

    /// Sandboxes on this node with an endpoint on `network_id`.
    fn users_of(&self, network_id: &str) -> Vec<String> {
        self.desired()
            .sandboxes
            .values()
            .filter(|s| s.endpoints.iter().any(|e| e.network_id == network_id))
            .map(|s| s.id.clone())
            .collect()
    }

    fn conflict(&mut self, key: ObjectKey, sandboxes: Vec<String>, message: String) {
        self.blocked.extend(sandboxes.iter().cloned());
        self.plan.conflicts.push(Conflict {
            key,
            sandboxes,
            message,
        });
    }

    fn push(&mut self, a: Action) {
        self.plan.actions.push(a);
    }

    fn is_blocked(&self, s: &SandboxSpec) -> bool {
        self.blocked.contains(&s.id)
    }
}

/// MTU of a network's links on a node with this underlay MTU.
pub fn mtu_of(net: &NetworkSpec, underlay_mtu: u32) -> u32 {
    match (net.mtu, net.driver) {
        (0, Driver::Overlay) => underlay_mtu.saturating_sub(VXLAN_OVERHEAD),
        (0, _) => 1500,
        (m, _) => m,
    }
}

/// Where an action runs in a pass: removals first (what runs inside a
/// namespace before the namespace, ports before bridges), then additions
/// in dependency order.
fn rank(a: &Action) -> u8 {
    match a {
        Action::StopCommand { .. } => 0,
        Action::StopDns { .. } => 1,
        Action::RemoveSandboxLink { .. } => 2,
        Action::RemoveNamespace { .. } | Action::ForgetNamespace { .. } => 3,
        Action::RemoveLink { kind, .. } => match kind {
            ObjectKind::Endpoint => 4,
            ObjectKind::Vxlan => 5,
            _ => 6,
        },
        Action::ForgetExternal { .. } => 7,
        Action::CreateBridge(_) => 10,
        Action::EnsureVxlan { .. } => 11,
        Action::SyncPeers { .. } => 12,
        Action::ApplyFirewall { .. } | Action::UpdatePorts { .. } => 13,
        Action::CreateNamespace { .. } => 14,
        Action::EnsureEndpoint(_) => 15,
        Action::WriteEtcFiles { .. } => 16,
        Action::ServeDns { .. } => 17,
        Action::StartCommand { .. } => 18,
    }
}

/// Plans one pass.
pub fn plan(inp: &Inputs<'_>) -> Plan {
    let mut ctx = Ctx {
        inp,
        blocked: BTreeSet::new(),
        blocked_networks: BTreeSet::new(),
        creating_ns: BTreeSet::new(),
        plan: Plan::default(),
    };
    // Conflicts first: they decide what the other planners leave alone.
    bridge::plan(&mut ctx);
    vxlan::plan(&mut ctx);
    namespace::plan(&mut ctx);
    firewall::plan(&mut ctx);
    endpoint::plan(&mut ctx);
    etc::plan(&mut ctx);
    dns::plan(&mut ctx);
    command::plan(&mut ctx);
    ctx.plan.actions.sort_by_key(rank);
    ctx.plan
}

#[cfg(test)]
pub(crate) mod tests;
