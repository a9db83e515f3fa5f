//! Conversions between domain types (records, views, requests) and the
//! generated proto types; the only place that knows both.
use berth_core::Invalid;
use berth_core::model::{Driver, Scope};
use berth_core::ports::Proto;
use berth_proto::v1 as pb;

use crate::nodes::NodeStatus;
use crate::overlay::PeerSet;
use crate::sandboxes::{NodeState, PortRequest, SandboxRequest, SandboxView};
use crate::store::records::{
    EndpointRecord, NetworkRecord, Phase, SandboxMode, SandboxOrigin, SandboxRecord,
};

/// The proto enum of a driver.
pub fn driver(d: Driver) -> pb::NetworkDriver {
    match d {
        Driver::Bridge => pb::NetworkDriver::Bridge,
        Driver::Overlay => pb::NetworkDriver::Overlay,
        Driver::Host => pb::NetworkDriver::Host,
        Driver::Null => pb::NetworkDriver::Null,
    }
}

/// The driver a request names; `None` when unspecified.
pub fn driver_from_proto(value: i32) -> Result<Option<Driver>, Invalid> {
    match pb::NetworkDriver::try_from(value) {
        Ok(pb::NetworkDriver::Unspecified) => Ok(None),
        Ok(pb::NetworkDriver::Bridge) => Ok(Some(Driver::Bridge)),
        Ok(pb::NetworkDriver::Overlay) => Ok(Some(Driver::Overlay)),
        Ok(pb::NetworkDriver::Host) => Ok(Some(Driver::Host)),
        Ok(pb::NetworkDriver::Null) => Ok(Some(Driver::Null)),
        Err(_) => Err(Invalid::new(
            "driver",
            format!("unknown driver {value} (use bridge or overlay)"),
        )),
    }
}

pub fn network(n: &NetworkRecord) -> pb::Network {
    pb::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: driver(n.driver) as i32,
        scope: match n.scope {
            Scope::Local => pb::NetworkScope::Local,
            Scope::Global => pb::NetworkScope::Global,
        } as i32,
        subnet: n.subnet.map(|s| s.to_string()).unwrap_or_default(),
        gateway: n.gateway.map(|g| g.to_string()).unwrap_or_default(),
        options: n.options.clone().into_iter().collect(),
        labels: n.labels.clone().into_iter().collect(),
        created: n.created.clone(),
        vni: n.vni.unwrap_or(0),
        bridge: n.bridge.clone().unwrap_or_default(),
        mtu: n.mtu.unwrap_or(0),
        builtin: n.builtin,
        internal: n.internal,
        ip_range: n.ip_range.map(|r| r.to_string()).unwrap_or_default(),
        aux_addresses: n
            .aux_addresses
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        enable_ipv6: n.enable_ipv6,
        subnet6: n.subnet6.map(|s| s.to_string()).unwrap_or_default(),
        gateway6: n.gateway6.map(|g| g.to_string()).unwrap_or_default(),
    }
}

pub fn endpoint(e: &EndpointRecord, net: &NetworkRecord) -> pb::Endpoint {
    pb::Endpoint {
        id: e.id.clone(),
        network_id: e.network_id.clone(),
        network_name: net.name.clone(),
        sandbox_id: e.sandbox_id.clone(),
        sandbox_name: e.sandbox_name.clone(),
        node: e.node.clone(),
        ip: e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        prefix_len: match (e.ip, net.subnet) {
            (Some(_), Some(s)) => u32::from(s.prefix_len()),
            _ => 0,
        },
        mac: e.mac.clone(),
        ifname: e.ifname.clone(),
        aliases: e.aliases.clone(),
        gateway: net.gateway.map(|g| g.to_string()).unwrap_or_default(),
        revision: 0,
        default_route: false,
        ip6: e.ip6.map(|ip| ip.to_string()).unwrap_or_default(),
        prefix_len6: match (e.ip6, net.subnet6) {
            (Some(_), Some(s)) => u32::from(s.prefix_len()),
            _ => 0,
        },
        gateway6: match e.ip6 {
            Some(_) => net.gateway6.map(|g| g.to_string()).unwrap_or_default(),
            None => String::new(),
        },
    }
}

pub fn node(n: &NodeStatus) -> pb::Node {
    pb::Node {
        name: n.record.name.clone(),
        address: n.record.address.to_string(),
        agent_url: n.record.agent_url.clone(),
        ready: n.ready,
        registered: n.record.registered.clone(),
        mtu: n.record.mtu,
        routes: n
            .record
            .routes
            .iter()
            .map(|r| pb::NodeRoute {
                destination: r.destination.to_string(),
                device: r.device.clone(),
            })
            .collect(),
    }
}

pub fn sandbox(r: &SandboxRecord, endpoints: &[(EndpointRecord, NetworkRecord)]) -> pb::Sandbox {
    pb::Sandbox {
        id: r.id.clone(),
        name: r.name.clone(),
        node: r.node.clone(),
        mode: match r.mode {
            SandboxMode::Namespace => pb::SandboxMode::Namespace,
            SandboxMode::Host => pb::SandboxMode::Host,
            SandboxMode::None => pb::SandboxMode::None,
        } as i32,
        ports: r
            .ports
            .iter()
            .map(|p| pb::PortMapping {
                host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                host_port: u32::from(p.host_port),
                container_port: u32::from(p.container_port),
                protocol: match p.proto {
                    Proto::Tcp => pb::PortProtocol::Tcp,
                    Proto::Udp => pb::PortProtocol::Udp,
                } as i32,
            })
            .collect(),
        links: r
            .links
            .iter()
            .map(|(name, alias)| pb::Link {
                name: name.clone(),
                alias: alias.clone(),
            })
            .collect(),
        command: r.command.clone(),
        created: r.created.clone(),
        endpoints: {
            // The default route goes through the first endpoint on a bridge
            // network that is not internal (overlays have no way out; their
            // sandboxes use the gateway bridge), in attach order.
            let default = endpoints
                .iter()
                .position(|(_, n)| n.driver == Driver::Bridge && !n.internal);
            endpoints
                .iter()
                .enumerate()
                .map(|(i, (e, n))| pb::Endpoint {
                    default_route: Some(i) == default,
                    ..endpoint(e, n)
                })
                .collect()
        },
        netns: r.netns.clone().unwrap_or_default(),
        generation: 0,
        phase: match r.phase {
            Phase::Creating => pb::SandboxPhase::Creating,
            Phase::Ready => pb::SandboxPhase::Ready,
            Phase::Removing => pb::SandboxPhase::Removing,
        } as i32,
        origin: origin(r.origin) as i32,
        container_id: r
            .external
            .as_ref()
            .map(|x| x.container_id.clone())
            .unwrap_or_default(),
        netns_path: r
            .external
            .as_ref()
            .map(|x| x.netns_path.clone())
            .unwrap_or_default(),
        netns_inode: r.external.as_ref().map_or(0, |x| x.netns_inode),
        ifname: r.external.as_ref().map(|x| x.ifname.clone()).unwrap_or_default(),
    }
}

pub fn origin(o: SandboxOrigin) -> pb::SandboxOrigin {
    match o {
        SandboxOrigin::Berth => pb::SandboxOrigin::Berth,
        SandboxOrigin::Cni => pb::SandboxOrigin::Cni,
        SandboxOrigin::Docker => pb::SandboxOrigin::Docker,
    }
}

/// A sandbox with its endpoints, at the revision it was read at.
pub fn sandbox_view(v: &SandboxView) -> pb::Sandbox {
    pb::Sandbox {
        generation: v.generation,
        ..sandbox(&v.record, &v.endpoints)
    }
}

/// The networks of a sandbox's endpoints, in attach order.
pub fn sandbox_networks(v: &SandboxView) -> Vec<pb::Network> {
    v.endpoints.iter().map(|(_, n)| network(n)).collect()
}

pub fn peer_set(p: &PeerSet) -> pb::OverlayPeers {
    pb::OverlayPeers {
        network_id: p.network_id.clone(),
        peers: p
            .peers
            .iter()
            .map(|peer| pb::OverlayPeer {
                ip: peer.ip.to_string(),
                mac: peer.mac.clone(),
                vtep: peer.vtep.to_string(),
                node: peer.node.clone(),
                sandbox_name: peer.sandbox_name.clone(),
                aliases: peer.aliases.clone(),
                ip6: peer.ip6.map(|a| a.to_string()).unwrap_or_default(),
            })
            .collect(),
        vteps: p.vteps.iter().map(|v| v.to_string()).collect(),
        revision: p.revision,
    }
}

pub fn node_state(s: &NodeState) -> pb::NodeState {
    pb::NodeState {
        node: s.node.clone(),
        networks: s.networks.iter().map(network).collect(),
        sandboxes: s.sandboxes.iter().map(sandbox_view).collect(),
        peers: s.peers.iter().map(peer_set).collect(),
        revision: s.revision,
    }
}

/// A create request, fields as sent (validated by `SandboxSpec::validate`).
pub fn sandbox_request(r: pb::CreateSandboxRequest) -> SandboxRequest {
    // Every field by name: a field added to the proto is a compile error here.
    let pb::CreateSandboxRequest {
        name,
        node,
        network,
        ip,
        aliases,
        links,
        ports,
        command,
        ip6,
    } = r;
    SandboxRequest {
        name,
        node,
        network,
        ip,
        ip6,
        aliases,
        command,
        ports: ports
            .into_iter()
            .map(|p| PortRequest {
                host_ip: p.host_ip,
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: pb::PortProtocol::name_of(p.protocol),
            })
            .collect(),
        links: links.into_iter().map(|l| (l.name, l.alias)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_both_ways() {
        for d in [Driver::Bridge, Driver::Overlay, Driver::Host, Driver::Null] {
            assert_eq!(driver_from_proto(driver(d) as i32).unwrap(), Some(d));
        }
        assert_eq!(driver_from_proto(0).unwrap(), None);
        assert_eq!(
            driver_from_proto(42).unwrap_err().to_string(),
            "invalid driver: unknown driver 42 (use bridge or overlay)"
        );
    }
}
