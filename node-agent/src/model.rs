//! The agent's domain types: what one node should have, parsed from the
//! proto messages the API server sends (which stay at the gRPC edge).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use berth_core::model::{Driver, VXLAN_PREFIX};
use berth_core::names::validate_ifname;
use berth_core::options::NetworkOptions;
use berth_core::ports::PortMapping;
use berth_proto::v1 as pb;
use ipnet::{Ipv4Net, Ipv6Net};

/// A bridge or overlay network as realised on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// 0 = the driver's default (1500 for bridges, underlay MTU − 50 for overlays).
    pub mtu: u32,
    pub icc: bool,
    /// Masquerade outbound traffic (never for an internal network).
    pub masquerade: bool,
    /// `--internal`: nothing is forwarded into or out of the bridge.
    pub internal: bool,
    /// VXLAN network identifier of an overlay network.
    pub vni: Option<u32>,
    /// Dual stack: the IPv6 subnet and gateway (on the bridge).
    pub v6: Option<(Ipv6Net, Ipv6Addr)>,
}

impl NetworkSpec {
    /// The VXLAN device of an overlay network on each node.
    pub fn vxlan_name(&self) -> Option<String> {
        self.vni.map(|v| format!("{VXLAN_PREFIX}{v}"))
    }
}

/// One interface of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub id: String,
    pub network_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Its IPv6 address and prefix on a dual-stack network.
    pub ip6: Option<(Ipv6Addr, u8)>,
    pub mac: [u8; 6],
    /// The sandbox's default route goes via this endpoint's network gateway.
    pub default_route: bool,
    /// Network-scoped aliases (names other sandboxes on the network resolve).
    pub aliases: Vec<String>,
}

impl EndpointSpec {
    /// The host end of the endpoint's veth pair: `bv` + 12 hex of its id,
    /// the prefix by which the agent recognises veths it owns.
    pub fn host_ifname(&self) -> String {
        host_ifname(&self.id)
    }
}

/// Prefix of every host-side veth berth creates.
pub use berth_core::model::HOST_VETH_PREFIX;

/// Prefix of a sandbox interface taken out of service and waiting to be
/// deleted (`bgone<ifindex>`, see `kernel::link::retire`): in berth's own
/// namespaces such a link is always berth's to delete.
pub const RETIRED_PREFIX: &str = "bgone";

pub fn host_ifname(endpoint_id: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", &endpoint_id[..endpoint_id.len().min(12)])
}

pub use berth_core::model::{SandboxMode, SandboxOrigin};

/// A sandbox whose network namespace is a container runtime's (CNI,
/// Docker): berth never creates, marks, renames or deletes it; only its own
/// interfaces inside, and it watches that the namespace stays the one
/// attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub origin: SandboxOrigin,
    pub container_id: String,
    /// The namespace's path on this node (also the sandbox's `netns`).
    pub netns_path: String,
    /// Its inode when attached (0: not known).
    pub inode: u64,
    /// The interface the runtime asked for.
    pub ifname: String,
}

/// Whether `netns` names a namespace by path (a runtime's), not by a name
/// under `/run/netns` that berth chose.
pub fn is_path(netns: &str) -> bool {
    netns.starts_with('/')
}

/// Checks a runtime's namespace path: absolute, no `..`, no NUL, at most 4096 bytes.
pub fn check_netns_path(p: &str) -> Result<(), BadSpec> {
    if !is_path(p) || p.len() > 4096 || p.contains('\0') || p.split('/').any(|c| c == "..") {
        return Err(BadSpec(format!(
            "netns path {:?} must be an absolute path without '..'",
            p.chars().take(128).collect::<String>()
        )));
    }
    Ok(())
}

/// A sandbox on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub id: String,
    pub name: String,
    pub mode: SandboxMode,
    /// The network namespace name on this node (with the agent's prefix);
    /// `None` in host mode.
    pub netns: Option<String>,
    /// In attach order: the first one carries the default route.
    pub endpoints: Vec<EndpointSpec>,
    pub command: Vec<String>,
    pub ports: Vec<PortMapping>,
    /// Legacy links: (sandbox name, alias).
    pub links: Vec<(String, String)>,
    /// The etcd revision of the record this spec realises: an older spec
    /// never replaces a newer one.
    pub generation: u64,
    /// Set when the namespace is a runtime's (then `netns` is its path).
    pub external: Option<External>,
}

impl SandboxSpec {
    /// The endpoint carrying the default route (published ports go there).
    pub fn primary(&self) -> Option<&EndpointSpec> {
        self.endpoints.iter().find(|e| e.default_route)
    }
}

/// A remote endpoint of an overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
    pub sandbox_name: String,
    pub aliases: Vec<String>,
}

/// Everything one node must know about the rest of an overlay network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    pub revision: u64,
    pub peers: Vec<Peer>,
    pub vteps: BTreeSet<Ipv4Addr>,
}

impl PeerSet {
    pub fn from_proto(p: &pb::OverlayPeers) -> Result<(String, Self), BadSpec> {
        let mut peers = Vec::new();
        for peer in &p.peers {
            let ip: Ipv4Addr = peer
                .ip
                .parse()
                .map_err(|_| BadSpec(format!("peer ip {:?}", peer.ip)))?;
            let vtep: Ipv4Addr = peer
                .vtep
                .parse()
                .map_err(|_| BadSpec(format!("peer vtep {:?}", peer.vtep)))?;
            let ip6 = match peer.ip6.as_str() {
                "" => None,
                s => Some(s.parse().map_err(|_| BadSpec(format!("peer ip6 {s:?}")))?),
            };
            peers.push(Peer {
                ip,
                ip6,
                mac: parse_mac(&peer.mac).unwrap_or_else(|| berth_core::net::mac_from_ip(ip)),
                vtep,
                sandbox_name: peer.sandbox_name.clone(),
                aliases: peer.aliases.clone(),
            });
        }
        let vteps = p
            .vteps
            .iter()
            .map(|v| v.parse().map_err(|_| BadSpec(format!("vtep {v:?}"))))
            .collect::<Result<_, _>>()?;
        Ok((
            p.network_id.clone(),
            Self {
                revision: p.revision,
                peers,
                vteps,
            },
        ))
    }
}

/// Everything this node should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub networks: BTreeMap<String, NetworkSpec>,
    pub sandboxes: BTreeMap<String, SandboxSpec>,
    /// Overlay network id → its remote endpoints.
    pub peers: BTreeMap<String, PeerSet>,
    /// Every network in `networks` has an endpoint here: set by the
    /// agent's `DesiredStore`, which drops the others after every change,
    /// so [`Desired::active_networks`] need not look at every sandbox.
    pub pruned: bool,
}

impl Desired {
    /// Networks with at least one endpoint on this node: the ones whose
    /// bridges and rules must exist.
    pub fn active_networks(&self) -> Vec<&NetworkSpec> {
        if self.pruned {
            return self.networks.values().collect();
        }
        let used: std::collections::BTreeSet<&str> = self
            .sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().map(|e| e.network_id.as_str()))
            .collect();
        self.networks
            .values()
            .filter(|n| used.contains(n.id.as_str()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad spec from the API server: {0}")]
pub struct BadSpec(pub String);

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

impl NetworkSpec {
    /// Networks with addresses (bridge, overlay); `None` for host and null.
    pub fn from_proto(n: &pb::Network) -> Result<Option<Self>, BadSpec> {
        let driver = match pb::NetworkDriver::try_from(n.driver) {
            Ok(pb::NetworkDriver::Bridge) => Driver::Bridge,
            Ok(pb::NetworkDriver::Overlay) => Driver::Overlay,
            Ok(pb::NetworkDriver::Host | pb::NetworkDriver::Null) => return Ok(None),
            Ok(pb::NetworkDriver::Unspecified) | Err(_) => {
                return Err(BadSpec(format!(
                    "network {} has unknown driver {}",
                    n.name, n.driver
                )));
            }
        };
        let subnet: Ipv4Net = n
            .subnet
            .parse()
            .map_err(|_| BadSpec(format!("network {} subnet {:?}", n.name, n.subnet)))?;
        let gateway: Ipv4Addr = n
            .gateway
            .parse()
            .map_err(|_| BadSpec(format!("network {} gateway {:?}", n.name, n.gateway)))?;
        let v6 = if n.enable_ipv6 {
            let subnet6: Ipv6Net = n
                .subnet6
                .parse()
                .map_err(|_| BadSpec(format!("network {} subnet6 {:?}", n.name, n.subnet6)))?;
            let gateway6: Ipv6Addr = n
                .gateway6
                .parse()
                .map_err(|_| BadSpec(format!("network {} gateway6 {:?}", n.name, n.gateway6)))?;
            Some((subnet6, gateway6))
        } else {
            None
        };
        let opts = NetworkOptions::parse(driver, &n.options.clone().into_iter().collect())
            .map_err(|e| BadSpec(format!("network {}: {e}", n.name)))?;
        if driver == Driver::Overlay && n.vni == 0 {
            return Err(BadSpec(format!("overlay network {} has no VNI", n.name)));
        }
        if n.bridge.is_empty() {
            return Err(BadSpec(format!("network {} has no bridge name", n.name)));
        }
        // The name reaches netlink and the nftables rules; the API refuses bad
        // ones, this refuses them from records written before it did.
        validate_ifname("bridge", &n.bridge).map_err(|e| BadSpec(format!("network {}: {e}", n.name)))?;
        Ok(Some(Self {
            id: n.id.clone(),
            name: n.name.clone(),
            driver,
            bridge: n.bridge.clone(),
            subnet,
            gateway,
            mtu: n.mtu,
            icc: opts.enable_icc,
            masquerade: opts.enable_ip_masquerade && !n.internal,
            internal: n.internal,
            vni: (driver == Driver::Overlay).then_some(n.vni).filter(|v| *v > 0),
            v6,
        }))
    }
}

impl SandboxSpec {
    pub fn from_proto(s: &pb::Sandbox, netns_prefix: &str) -> Result<Self, BadSpec> {
        let mode = match s.mode() {
            pb::SandboxMode::Namespace => SandboxMode::Namespace,
            pb::SandboxMode::Host => SandboxMode::Host,
            pb::SandboxMode::None => SandboxMode::None,
            pb::SandboxMode::Unspecified => {
                return Err(BadSpec(format!("sandbox {} has no mode", s.name)));
            }
        };
        let origin = match s.origin() {
            pb::SandboxOrigin::Unspecified | pb::SandboxOrigin::Berth => SandboxOrigin::Berth,
            pb::SandboxOrigin::Cni => SandboxOrigin::Cni,
            pb::SandboxOrigin::Docker => SandboxOrigin::Docker,
        };
        let external = if origin.is_external() {
            if mode != SandboxMode::Namespace {
                return Err(BadSpec(format!(
                    "sandbox {} of origin {origin} has mode {mode:?}",
                    s.name
                )));
            }
            // Docker's endpoints: no namespace berth sees (dockerd moves the
            // interface the plugin hands it; docs/docker.md).
            if !(origin == SandboxOrigin::Docker && s.netns_path.is_empty()) {
                check_netns_path(&s.netns_path)?;
            }
            validate_ifname("ifname", &s.ifname).map_err(|e| BadSpec(format!("sandbox {}: {e}", s.name)))?;
            berth_core::names::validate_container_id("container id", &s.container_id)
                .map_err(|e| BadSpec(format!("sandbox {}: {e}", s.name)))?;
            Some(External {
                origin,
                container_id: s.container_id.clone(),
                netns_path: s.netns_path.clone(),
                inode: s.netns_inode,
                ifname: s.ifname.clone(),
            })
        } else {
            None
        };
        let netns = match (&external, mode) {
            (Some(x), _) if x.netns_path.is_empty() => None,
            (Some(x), _) => Some(x.netns_path.clone()),
            (None, SandboxMode::Host) => None,
            _ if s.netns.is_empty() => return Err(BadSpec(format!("sandbox {} has no netns", s.name))),
            _ => Some(format!("{netns_prefix}{}", s.netns)),
        };
        let mut endpoints = Vec::new();
        if mode == SandboxMode::Namespace {
            for e in &s.endpoints {
                let ip: Ipv4Addr =
                    e.ip.parse()
                        .map_err(|_| BadSpec(format!("endpoint ip {:?}", e.ip)))?;
                let mac = parse_mac(&e.mac).unwrap_or_else(|| berth_core::net::mac_from_ip(ip));
                // berth names its own interfaces ethN; a runtime names its
                // (any valid name): berth then removes only links it made.
                let ifname_ok = match &external {
                    None => e.ifname.starts_with("eth"),
                    Some(_) => validate_ifname("ifname", &e.ifname).is_ok(),
                };
                if !ifname_ok || e.id.len() < 12 {
                    return Err(BadSpec(format!("endpoint {} ifname {:?}", e.id, e.ifname)));
                }
                let ip6 = match e.ip6.as_str() {
                    "" => None,
                    s => Some((
                        s.parse().map_err(|_| BadSpec(format!("endpoint ip6 {s:?}")))?,
                        e.prefix_len6 as u8,
                    )),
                };
                endpoints.push(EndpointSpec {
                    ip6,
                    id: e.id.clone(),
                    network_id: e.network_id.clone(),
                    ifname: e.ifname.clone(),
                    ip,
                    prefix: e.prefix_len as u8,
                    mac,
                    default_route: e.default_route,
                    aliases: e.aliases.clone(),
                });
            }
        }
        let ports = s
            .ports
            .iter()
            .map(|p| {
                PortMapping::validate(
                    &p.host_ip,
                    p.host_port,
                    p.container_port,
                    &pb::PortProtocol::name_of(p.protocol),
                )
                .map_err(|e| BadSpec(format!("sandbox {}: {e}", s.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            id: s.id.clone(),
            name: s.name.clone(),
            mode,
            netns,
            endpoints,
            command: s.command.clone(),
            ports,
            links: s
                .links
                .iter()
                .map(|l| (l.name.clone(), l.alias.clone()))
                .collect(),
            generation: s.generation,
            external,
        })
    }
}

/// Parses a whole node state.
pub fn desired_from_proto(state: &pb::NodeState, netns_prefix: &str) -> Result<Desired, BadSpec> {
    let mut d = Desired::default();
    for n in &state.networks {
        if let Some(spec) = NetworkSpec::from_proto(n)? {
            d.networks.insert(spec.id.clone(), spec);
        }
    }
    for s in &state.sandboxes {
        let spec = SandboxSpec::from_proto(s, netns_prefix)?;
        d.sandboxes.insert(spec.id.clone(), spec);
    }
    for p in &state.peers {
        let (id, set) = PeerSet::from_proto(p)?;
        d.peers.insert(id, set);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sandbox_and_network() {
        let n = pb::Network {
            id: "n1".into(),
            name: "bridge".into(),
            driver: pb::NetworkDriver::Bridge as i32,
            subnet: "172.17.0.0/16".into(),
            gateway: "172.17.0.1".into(),
            bridge: "berth0".into(),
            options: [(
                "com.docker.network.bridge.enable_icc".to_string(),
                "false".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let spec = NetworkSpec::from_proto(&n).unwrap().unwrap();
        assert!(!spec.icc && spec.masquerade && spec.mtu == 0 && spec.vni.is_none());
        for hostile in ["a\"b", "e*", "0123456789abcdef"] {
            let bad = pb::Network {
                bridge: hostile.into(),
                ..n.clone()
            };
            let err = NetworkSpec::from_proto(&bad).unwrap_err();
            assert!(err.0.contains("invalid bridge"), "{hostile}: {err:?}");
        }
        let host = pb::Network {
            driver: pb::NetworkDriver::Host as i32,
            ..Default::default()
        };
        assert!(NetworkSpec::from_proto(&host).unwrap().is_none());
        let s = pb::Sandbox {
            id: "s1".into(),
            name: "test1".into(),
            mode: pb::SandboxMode::Namespace as i32,
            netns: "test1".into(),
            endpoints: vec![pb::Endpoint {
                id: "0123456789abcdef".into(),
                network_id: "n1".into(),
                ip: "172.17.0.2".into(),
                prefix_len: 16,
                mac: "02:42:ac:11:00:02".into(),
                ifname: "eth0".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let spec = SandboxSpec::from_proto(&s, "t-").unwrap();
        assert_eq!(spec.netns.as_deref(), Some("t-test1"));
        assert_eq!(spec.endpoints[0].mac, [2, 0x42, 172, 17, 0, 2]);
        assert_eq!(spec.endpoints[0].host_ifname(), "bv0123456789ab");
        assert!(spec.external.is_none());
        let cni = pb::Sandbox {
            origin: pb::SandboxOrigin::Cni as i32,
            container_id: "c0ffee".into(),
            netns_path: "/run/netns/netns-1234".into(),
            netns_inode: 4026532999,
            ifname: "net1".into(),
            endpoints: vec![pb::Endpoint {
                ifname: "net1".into(),
                ..s.endpoints[0].clone()
            }],
            ..s.clone()
        };
        let spec = SandboxSpec::from_proto(&cni, "t-").unwrap();
        assert_eq!(
            spec.netns.as_deref(),
            Some("/run/netns/netns-1234"),
            "the runtime's path, no prefix"
        );
        let x = spec.external.unwrap();
        assert_eq!(
            (x.inode, x.ifname.as_str(), x.container_id.as_str()),
            (4026532999, "net1", "c0ffee")
        );
        for bad_path in ["netns-1234", "/run/netns/../etc", ""] {
            let bad = pb::Sandbox {
                netns_path: bad_path.into(),
                ..cni.clone()
            };
            assert!(SandboxSpec::from_proto(&bad, "").is_err(), "{bad_path}");
        }
        let bad = pb::Sandbox {
            mode: pb::SandboxMode::Unspecified as i32,
            ..s
        };
        assert!(SandboxSpec::from_proto(&bad, "").is_err());
    }
}
