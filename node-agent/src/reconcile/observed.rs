//! What a pass saw on the node before planning: plain data, filled by the
//! kernel executor (or by the fake in tests). Nothing here is trusted from
//! an earlier pass: every field is read again.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::kernel::fdb::{FdbEntry, NeighEntry};
use crate::kernel::link::VxlanParams;

/// The marker berth puts in `IFLA_IFALIAS` of every link it creates.
pub const MARK: &str = "berth:";

/// The marker of a network's bridge and VXLAN device.
pub fn network_mark(network_id: &str) -> String {
    format!("{MARK}net:{network_id}")
}

/// The marker of an endpoint's host veth.
pub fn endpoint_mark(endpoint_id: &str) -> String {
    format!("{MARK}ep:{endpoint_id}")
}

/// The marker on `lo` of a sandbox namespace berth made.
pub fn sandbox_mark(sandbox_id: &str) -> String {
    format!("{MARK}sb:{sandbox_id}")
}

/// The sandbox id in a namespace marker.
pub fn sandbox_of_mark(mark: &str) -> Option<&str> {
    mark.strip_prefix(MARK)?.strip_prefix("sb:")
}

/// A link as seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub kind: Option<String>,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub mtu: u32,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Global IPv6 addresses (link-local ones are the kernel's, not listed).
    pub addrs6: Vec<(std::net::Ipv6Addr, u8)>,
    /// For a veth: the peer's ifindex in the peer's namespace.
    pub peer: Option<u32>,
    pub vxlan: Option<VxlanParams>,
    pub isolated: Option<bool>,
    /// Bridge port flag `learning`, for bridge ports.
    pub port_learning: Option<bool>,
}

impl Link {
    pub fn marked(&self) -> bool {
        self.alias.as_deref().is_some_and(|a| a.starts_with(MARK))
    }
}

/// A named network namespace that exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u64,
    /// `lo`'s alias (berth's marker), when the namespace's links were read.
    pub marker: Option<String>,
    /// Links inside, by name; empty when not read (namespaces not desired).
    pub links: BTreeMap<String, Link>,
    pub default_route: Option<(Ipv4Addr, Option<u32>)>,
    pub default_route6: Option<(std::net::Ipv6Addr, Option<u32>)>,
    /// Whether `links`, `marker` and `default_route` were read.
    pub inspected: bool,
}

/// The two files of `/etc/netns/NAME/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: Option<String>,
    pub resolv: Option<String>,
}

/// The node as one pass saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Links of the node namespace, by name.
    pub links: BTreeMap<String, Link>,
    /// Namespaces in scope that exist, by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// FDB and neighbour entries of VXLAN devices in scope, by device name.
    pub peers: BTreeMap<String, (BTreeSet<FdbEntry>, BTreeSet<NeighEntry>)>,
    /// MACs the overlay bridge forwards to each VXLAN device in scope (static or learned).
    pub bridged: BTreeMap<String, BTreeSet<[u8; 6]>>,
    /// berth's tables (`None`: no `ip berth`), when read.
    pub firewall: Option<Option<crate::nft::Seen>>,
    /// The `[::1]` proxies running, when the tables are read.
    pub proxies: crate::nft::Proxies,
    /// Bridges whose `route_localnet` is on.
    pub localnet: BTreeSet<String>,
    /// `/etc/netns` files of namespaces in scope.
    pub etc: BTreeMap<String, EtcFiles>,
    /// Sandboxes whose detached command berth started (and whether it still runs).
    pub commands: BTreeMap<String, bool>,
    /// Sandboxes answered by the DNS responder, with the namespace inode it listens in.
    pub dns: BTreeMap<String, u64>,
    /// Running commands found by their marker (the `BERTH_SANDBOX_ID`
    /// environment variable berth starts them with) while rebuilding a lost record.
    pub adopted_commands: BTreeMap<String, crate::state::Detached>,
}
