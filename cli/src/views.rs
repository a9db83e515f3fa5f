//! The JSON shapes of networks, sandboxes and nodes (docker's where docker
//! has one), built from the API's messages.

use std::collections::{BTreeMap, HashMap};

use berth_core::model::Driver;
use berth_proto::v1::{Endpoint, Network, NetworkDriver, NetworkScope, Node, PortProtocol, Sandbox};
use serde::Serialize;

/// The driver's name as people and scripts read it (`bridge`, `overlay`,
/// `host`, `null`); empty for a value this CLI does not know.
pub fn driver_name(n: &Network) -> String {
    match NetworkDriver::try_from(n.driver) {
        Ok(NetworkDriver::Bridge) => Driver::Bridge.to_string(),
        Ok(NetworkDriver::Overlay) => Driver::Overlay.to_string(),
        Ok(NetworkDriver::Host) => Driver::Host.to_string(),
        Ok(NetworkDriver::Null) => Driver::Null.to_string(),
        Ok(NetworkDriver::Unspecified) | Err(_) => String::new(),
    }
}

/// The proto value of a driver named on the command line.
pub fn driver_value(d: Driver) -> i32 {
    (match d {
        Driver::Bridge => NetworkDriver::Bridge,
        Driver::Overlay => NetworkDriver::Overlay,
        Driver::Host => NetworkDriver::Host,
        Driver::Null => NetworkDriver::Null,
    }) as i32
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

// ---------------------------------------------------------------- networks

/// A network as `network ls --output json` and `network create --output json` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub subnet: String,
    pub gateway: String,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

impl From<&Network> for NetworkSummary {
    fn from(n: &Network) -> Self {
        NetworkSummary {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: driver_name(n),
            scope: NetworkScope::name_of(n.scope).to_string(),
            subnet: n.subnet.clone(),
            gateway: n.gateway.clone(),
            created: n.created.clone(),
            labels: sorted(&n.labels),
            options: sorted(&n.options),
        }
    }
}

/// One network in the shape of `docker network inspect`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigFrom,
    pub config_only: bool,
    pub containers: BTreeMap<String, NetworkContainer>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// `IPAM` of [`NetworkInspect`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub config: Vec<IpamConfig>,
}

/// One subnet of [`Ipam`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    pub subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    pub gateway: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// `ConfigFrom` of [`NetworkInspect`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFrom {
    pub network: String,
}

/// A sandbox attached to the network, under `Containers`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// Builds the docker-shaped inspect document of `network` and its endpoints.
pub fn network_inspect(network: &Network, endpoints: &[Endpoint]) -> NetworkInspect {
    let mut config = if network.subnet.is_empty() {
        Vec::new()
    } else {
        vec![IpamConfig {
            subnet: network.subnet.clone(),
            ip_range: network.ip_range.clone(),
            gateway: network.gateway.clone(),
            auxiliary_addresses: sorted(&network.aux_addresses),
        }]
    };
    // Docker lists a dual-stack network's IPv6 subnet as a second entry.
    if network.enable_ipv6 && !network.subnet6.is_empty() {
        config.push(IpamConfig {
            subnet: network.subnet6.clone(),
            ip_range: String::new(),
            gateway: network.gateway6.clone(),
            auxiliary_addresses: BTreeMap::new(),
        });
    }
    let containers = endpoints
        .iter()
        .map(|ep| {
            let ipv4_address = if ep.ip.is_empty() {
                String::new()
            } else {
                format!("{}/{}", ep.ip, ep.prefix_len)
            };
            let entry = NetworkContainer {
                name: ep.sandbox_name.clone(),
                endpoint_id: ep.id.clone(),
                mac_address: ep.mac.clone(),
                ipv4_address,
                ipv6_address: if ep.ip6.is_empty() {
                    String::new()
                } else {
                    format!("{}/{}", ep.ip6, ep.prefix_len6)
                },
            };
            (ep.sandbox_id.clone(), entry)
        })
        .collect();
    NetworkInspect {
        name: network.name.clone(),
        id: network.id.clone(),
        created: network.created.clone(),
        scope: NetworkScope::name_of(network.scope).to_string(),
        driver: driver_name(network),
        enable_ipv6: network.enable_ipv6,
        ipam: Ipam {
            driver: "default".to_string(),
            options: BTreeMap::new(),
            config,
        },
        internal: network.internal,
        attachable: network.driver == NetworkDriver::Overlay as i32,
        ingress: false,
        config_from: ConfigFrom {
            network: String::new(),
        },
        config_only: false,
        containers,
        options: sorted(&network.options),
        labels: sorted(&network.labels),
    }
}

// ------------------------------------------------------------------- nodes

/// A node as `node ls --output json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeView {
    pub name: String,
    pub address: String,
    pub status: String,
    pub agent: String,
    pub registered: String,
    pub mtu: u32,
    /// The node's own routes (`DESTINATION dev DEVICE`), which berth's
    /// subnets do not overlap.
    pub routes: Vec<String>,
}

pub fn node_status(node: &Node) -> &'static str {
    if node.ready { "ready" } else { "not ready" }
}

impl From<&Node> for NodeView {
    fn from(n: &Node) -> Self {
        NodeView {
            name: n.name.clone(),
            address: n.address.clone(),
            status: node_status(n).to_string(),
            agent: n.agent_url.clone(),
            registered: n.registered.clone(),
            mtu: n.mtu,
            routes: n
                .routes
                .iter()
                .map(|r| format!("{} dev {}", r.destination, r.device))
                .collect(),
        }
    }
}

// --------------------------------------------------------------- sandboxes

/// A sandbox as `sandbox inspect` and `sandbox ls --output json` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxView {
    pub id: String,
    pub name: String,
    pub node: String,
    pub mode: String,
    /// creating, ready or removing.
    pub phase: String,
    pub created: String,
    pub netns: String,
    pub command: Vec<String>,
    pub ports: Vec<PortView>,
    pub links: Vec<LinkView>,
    pub networks: BTreeMap<String, SandboxNetwork>,
    /// berth, cni or docker.
    pub origin: String,
    /// For a runtime's sandbox: its container id, namespace path and interface.
    #[serde(rename = "ContainerID", skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub netns_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interface: String,
}

/// The origin of a sandbox by name.
pub fn origin_name(s: &Sandbox) -> &'static str {
    match s.origin() {
        berth_proto::v1::SandboxOrigin::Cni => "cni",
        berth_proto::v1::SandboxOrigin::Docker => "docker",
        _ => "berth",
    }
}

/// One published port of a sandbox.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortView {
    pub host_ip: String,
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: String,
}

/// One legacy link of a sandbox.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinkView {
    pub name: String,
    pub alias: String,
}

/// A sandbox's attachment to one network, keyed by network name.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u32,
    pub gateway: String,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: u32,
    pub mac_address: String,
    pub aliases: Vec<String>,
    pub interface: String,
}

impl From<&Sandbox> for SandboxView {
    fn from(s: &Sandbox) -> Self {
        SandboxView {
            id: s.id.clone(),
            name: s.name.clone(),
            node: s.node.clone(),
            mode: match s.mode() {
                berth_proto::v1::SandboxMode::Namespace => "namespace",
                berth_proto::v1::SandboxMode::Host => "host",
                berth_proto::v1::SandboxMode::None => "none",
                berth_proto::v1::SandboxMode::Unspecified => "",
            }
            .to_string(),
            phase: match s.phase() {
                berth_proto::v1::SandboxPhase::Creating => "creating",
                berth_proto::v1::SandboxPhase::Removing => "removing",
                _ => "ready",
            }
            .to_string(),
            created: s.created.clone(),
            netns: s.netns.clone(),
            origin: origin_name(s).to_string(),
            container_id: s.container_id.clone(),
            netns_path: s.netns_path.clone(),
            interface: s.ifname.clone(),
            command: s.command.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| PortView {
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: PortProtocol::name_of(p.protocol),
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| LinkView {
                    name: l.name.clone(),
                    alias: l.alias.clone(),
                })
                .collect(),
            networks: s
                .endpoints
                .iter()
                .map(|ep| {
                    let key = if ep.network_name.is_empty() {
                        ep.network_id.clone()
                    } else {
                        ep.network_name.clone()
                    };
                    let net = SandboxNetwork {
                        network_id: ep.network_id.clone(),
                        endpoint_id: ep.id.clone(),
                        ip_address: ep.ip.clone(),
                        ip_prefix_len: ep.prefix_len,
                        gateway: ep.gateway.clone(),
                        ipv6_gateway: ep.gateway6.clone(),
                        global_ipv6_address: ep.ip6.clone(),
                        global_ipv6_prefix_len: ep.prefix_len6,
                        mac_address: ep.mac.clone(),
                        aliases: ep.aliases.clone(),
                        interface: ep.ifname.clone(),
                    };
                    (key, net)
                })
                .collect(),
        }
    }
}

/// Messages shared by the tests of this module and of `output`.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashMap;

    use berth_proto::v1::{Endpoint, Network, NetworkScope, Node, PortMapping, PortProtocol, Sandbox};

    pub const NET_ID: &str = "3f1a9c0e5b7d2a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";
    pub const SB_ID: &str = "9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    pub const EP_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub fn bridge() -> Network {
        Network {
            id: NET_ID.into(),
            name: "bridge".into(),
            driver: berth_proto::v1::NetworkDriver::Bridge as i32,
            scope: NetworkScope::Local as i32,
            subnet: "172.17.0.0/16".into(),
            gateway: "172.17.0.1".into(),
            options: HashMap::from([("com.docker.network.bridge.name".to_string(), "berth0".to_string())]),
            labels: HashMap::new(),
            created: "2024-05-01T10:00:00Z".into(),
            vni: 0,
            bridge: "berth0".into(),
            mtu: 0,
            builtin: true,
            ..Default::default()
        }
    }

    pub fn test1_endpoint() -> Endpoint {
        Endpoint {
            id: EP_ID.into(),
            network_id: NET_ID.into(),
            network_name: "bridge".into(),
            sandbox_id: SB_ID.into(),
            sandbox_name: "test1".into(),
            node: "node1".into(),
            ip: "172.17.0.2".into(),
            prefix_len: 16,
            mac: "02:42:ac:11:00:02".into(),
            ifname: "eth0".into(),
            aliases: vec![],
            gateway: "172.17.0.1".into(),
            revision: 7,
            default_route: true,
            ..Default::default()
        }
    }

    pub fn port(host_ip: &str, host: u32, cont: u32, proto: &str) -> PortMapping {
        PortMapping {
            host_ip: host_ip.into(),
            host_port: host,
            container_port: cont,
            protocol: PortProtocol::from_name(proto).expect("tcp or udp") as i32,
        }
    }

    fn pb_route(destination: &str, device: &str) -> berth_proto::v1::NodeRoute {
        berth_proto::v1::NodeRoute {
            destination: destination.into(),
            device: device.into(),
        }
    }

    pub fn nodes() -> [Node; 2] {
        [
            Node {
                name: "node2".into(),
                address: "192.168.205.11".into(),
                agent_url: "http://192.168.205.11:7001".into(),
                ready: false,
                registered: "t".into(),
                mtu: 1500,
                routes: vec![pb_route("192.168.205.0/24", "eth0")],
            },
            Node {
                name: "node1".into(),
                address: "192.168.205.10".into(),
                agent_url: "http://192.168.205.10:7001".into(),
                ready: true,
                registered: "t".into(),
                mtu: 1500,
                routes: vec![pb_route("192.168.205.0/24", "eth0")],
            },
        ]
    }

    pub fn sandbox() -> Sandbox {
        let mut ep2 = test1_endpoint();
        ep2.network_name = "my-bridge".into();
        ep2.network_id = "ffff".into();
        ep2.ip = "172.18.0.3".into();
        ep2.ifname = "eth1".into();
        ep2.aliases = vec!["web".into()];
        Sandbox {
            id: SB_ID.into(),
            name: "test1".into(),
            node: "node1".into(),
            mode: berth_proto::v1::SandboxMode::Namespace as i32,
            ports: vec![port("", 8080, 80, "tcp")],
            links: vec![berth_proto::v1::Link {
                name: "db".into(),
                alias: "".into(),
            }],
            command: vec![],
            created: "c".into(),
            endpoints: vec![test1_endpoint(), ep2],
            netns: "test1".into(),
            generation: 7,
            phase: berth_proto::v1::SandboxPhase::Ready as i32,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::output::to_json;
    use serde_json::{Value, json};

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        k
    }

    #[test]
    fn bridge_inspect_is_docker_shaped() {
        let doc = network_inspect(&bridge(), &[test1_endpoint()]);
        let v = serde_json::to_value(&doc).unwrap();
        let mut expected_keys = vec![
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Options",
            "Labels",
        ];
        expected_keys.sort();
        assert_eq!(keys(&v), expected_keys);
        assert_eq!(
            v,
            json!({
                "Name": "bridge",
                "Id": NET_ID,
                "Created": "2024-05-01T10:00:00Z",
                "Scope": "local",
                "Driver": "bridge",
                "EnableIPv6": false,
                "IPAM": {
                    "Driver": "default",
                    "Options": {},
                    "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
                },
                "Internal": false,
                "Attachable": false,
                "Ingress": false,
                "ConfigFrom": {"Network": ""},
                "ConfigOnly": false,
                "Containers": {
                    SB_ID: {
                        "Name": "test1",
                        "EndpointID": EP_ID,
                        "MacAddress": "02:42:ac:11:00:02",
                        "IPv4Address": "172.17.0.2/16",
                        "IPv6Address": ""
                    }
                },
                "Options": {"com.docker.network.bridge.name": "berth0"},
                "Labels": {}
            })
        );
    }

    #[test]
    fn inspect_json_keeps_docker_key_order() {
        let text = to_json(&[network_inspect(&bridge(), &[test1_endpoint()])]).unwrap();
        assert!(text.starts_with("[\n    {\n        \"Name\": \"bridge\",\n        \"Id\": "));
        let order = [
            "\"Name\"",
            "\"Id\"",
            "\"Created\"",
            "\"Scope\"",
            "\"Driver\"",
            "\"EnableIPv6\"",
            "\"IPAM\"",
            "\"Internal\"",
            "\"Attachable\"",
            "\"Ingress\"",
            "\"ConfigFrom\"",
            "\"ConfigOnly\"",
            "\"Containers\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn host_and_overlay_inspect() {
        let host = Network {
            name: "host".into(),
            driver: berth_proto::v1::NetworkDriver::Host as i32,
            subnet: String::new(),
            gateway: String::new(),
            options: HashMap::new(),
            ..bridge()
        };
        let ep = Endpoint {
            ip: String::new(),
            prefix_len: 0,
            mac: String::new(),
            ..test1_endpoint()
        };
        let v = serde_json::to_value(network_inspect(&host, &[ep])).unwrap();
        assert_eq!(v["IPAM"]["Config"], json!([]));
        assert_eq!(v["Containers"][SB_ID]["IPv4Address"], "");
        assert_eq!(v["Containers"][SB_ID]["MacAddress"], "");
        assert_eq!(v["Attachable"], false);

        let overlay = Network {
            driver: berth_proto::v1::NetworkDriver::Overlay as i32,
            scope: NetworkScope::Global as i32,
            ..bridge()
        };
        let v = serde_json::to_value(network_inspect(&overlay, &[])).unwrap();
        assert_eq!(v["Attachable"], true);
        assert_eq!(v["Containers"], json!({}));
    }

    #[test]
    fn node_json() {
        let v = serde_json::to_value(NodeView::from(&nodes()[1])).unwrap();
        assert_eq!(
            v,
            json!({"Name": "node1", "Address": "192.168.205.10", "Status": "ready",
                   "Agent": "http://192.168.205.10:7001", "Registered": "t", "Mtu": 1500,
                   "Routes": ["192.168.205.0/24 dev eth0"]})
        );
    }

    #[test]
    fn sandbox_json() {
        let v = serde_json::to_value(SandboxView::from(&sandbox())).unwrap();
        assert_eq!(
            v["Ports"],
            json!([{"HostIp": "", "HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"}])
        );
        assert_eq!(v["Links"], json!([{"Name": "db", "Alias": ""}]));
        assert_eq!(
            v["Networks"]["my-bridge"],
            json!({"NetworkID": "ffff", "EndpointID": EP_ID, "IPAddress": "172.18.0.3",
                   "IPPrefixLen": 16, "Gateway": "172.17.0.1", "IPv6Gateway": "",
                   "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "02:42:ac:11:00:02",
                   "Aliases": ["web"], "Interface": "eth1"})
        );
        assert_eq!(v["Networks"]["bridge"]["IPAddress"], "172.17.0.2");
        assert_eq!(v["Mode"], "namespace");
        assert_eq!(v["Id"], SB_ID);
    }
}
