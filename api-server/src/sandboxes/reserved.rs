//! Host ports no sandbox may publish on a node, because a DNAT rule for them
//! would take over a connection the cluster itself depends on: the node's
//! agent (its gRPC port, from the URL it registered), the API server's gRPC
//! port, VXLAN (4789/udp), and `berth-api --reserved-ports` (default ssh
//! and etcd's client and peer ports: `22,2379,2380`).
//!
//! A published port's DNAT rule matches every local address of the node
//! (`fib daddr type local`), so a port is reserved whatever host address
//! the mapping names. The configured list is TCP unless an entry says
//! `/udp`: every service it protects by default speaks TCP, and a UDP
//! mapping on 2379 takes nothing from etcd.
use berth_core::ports::{PortMapping, PortRange, Proto, VXLAN_UDP_PORT};

use super::Sandboxes;
use crate::error::{ApiError, Result};
use crate::store::records::NodeRecord;

/// `--reserved-ports` when not given.
pub const DEFAULT_RESERVED_PORTS: &str = "22,2379,2380";

/// The reservations that hold on every node; each node's agent port is
/// added when a sandbox is placed.
#[derive(Debug, Clone, Default)]
pub struct ReservedPorts {
    ranges: Vec<(PortRange, String)>,
}

/// Why a configured port is reserved, for the error message.
fn why_configured(r: &PortRange) -> String {
    let known = match (r.start, r.end, r.proto) {
        (22, 22, Proto::Tcp) => "ssh, ",
        (2379, 2379, Proto::Tcp) => "etcd's client port, ",
        (2380, 2380, Proto::Tcp) => "etcd's peer port, ",
        _ => "",
    };
    format!("{known}in berth-api's --reserved-ports")
}

/// The TCP port berth-api reaches the agent on: the port of its
/// registered URL, or the scheme's default.
pub fn agent_port(agent_url: &str) -> Option<u16> {
    let uri: tonic::transport::Uri = agent_url.parse().ok()?;
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

impl ReservedPorts {
    /// The configured ranges, the API server's own TCP port (if it listens
    /// on TCP) and VXLAN's UDP port.
    pub fn new(configured: &[PortRange], api_port: Option<u16>) -> Self {
        let mut ranges = Vec::new();
        if let Some(port) = api_port {
            ranges.push((PortRange::one(port, Proto::Tcp), "berth-api's gRPC port".into()));
        }
        ranges.push((
            PortRange::one(VXLAN_UDP_PORT, Proto::Udp),
            "VXLAN of overlay networks".into(),
        ));
        ranges.extend(configured.iter().map(|r| (*r, why_configured(r))));
        Self { ranges }
    }

    /// Refuses the first of `ports` that is reserved on `node`:
    /// `port 7421/tcp is reserved on node1 (berth-agent's gRPC port)`.
    pub fn check(&self, node: &NodeRecord, ports: &[PortMapping]) -> Result<()> {
        let agent = agent_port(&node.agent_url).map(|p| {
            (
                PortRange::one(p, Proto::Tcp),
                "berth-agent's gRPC port".to_string(),
            )
        });
        for p in ports {
            if let Some((_, why)) = agent.iter().chain(&self.ranges).find(|(r, _)| r.covers(p)) {
                return Err(ApiError::FailedPrecondition(format!(
                    "port {}/{} is reserved on {} ({why})",
                    p.host_port, p.proto, node.name
                )));
            }
        }
        Ok(())
    }
}

impl Sandboxes {
    /// Uses `reserved` for every later create.
    pub fn with_reserved_ports(mut self, reserved: ReservedPorts) -> Self {
        self.reserved = reserved;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str) -> NodeRecord {
        NodeRecord {
            name: "node1".into(),
            address: "192.168.205.10".parse().unwrap(),
            agent_url: url.into(),
            mtu: 1500,
            registered: String::new(),
            lease: 0,
            removing: false,
            routes: Vec::new(),
        }
    }

    fn publish(spec: &str) -> Vec<PortMapping> {
        let (rest, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let (ip, port) = rest.rsplit_once(':').map_or(("", rest), |(ip, p)| (ip, p));
        vec![PortMapping::validate(ip, port.parse().unwrap(), 80, proto).unwrap()]
    }

    fn defaults() -> ReservedPorts {
        let configured: Vec<PortRange> = DEFAULT_RESERVED_PORTS
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        ReservedPorts::new(&configured, Some(7420))
    }

    #[test]
    fn agent_ports_from_urls() {
        assert_eq!(agent_port("http://192.168.205.10:7421"), Some(7421));
        assert_eq!(agent_port("https://node1.example:9000/"), Some(9000));
        assert_eq!(agent_port("https://node1.example"), Some(443));
        assert_eq!(agent_port("http://[fd00::1]"), Some(80));
        assert_eq!(agent_port("not a url"), None);
    }

    #[test]
    fn the_defaults_refuse_what_would_hijack_the_cluster() {
        let r = defaults();
        let n = node("http://192.168.205.10:7421");
        let refused = |spec: &str| match r.check(&n, &publish(spec)) {
            Err(ApiError::FailedPrecondition(m)) => m,
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(
            refused("7421"),
            "port 7421/tcp is reserved on node1 (berth-agent's gRPC port)"
        );
        assert_eq!(
            refused("127.0.0.1:7421"),
            "port 7421/tcp is reserved on node1 (berth-agent's gRPC port)",
            "whatever the host address"
        );
        assert_eq!(
            refused("7420"),
            "port 7420/tcp is reserved on node1 (berth-api's gRPC port)"
        );
        assert_eq!(
            refused("22"),
            "port 22/tcp is reserved on node1 (ssh, in berth-api's --reserved-ports)"
        );
        assert_eq!(
            refused("2379"),
            "port 2379/tcp is reserved on node1 (etcd's client port, in berth-api's --reserved-ports)"
        );
        assert!(refused("2380").contains("etcd's peer port"));
        assert_eq!(
            refused("4789/udp"),
            "port 4789/udp is reserved on node1 (VXLAN of overlay networks)"
        );
        for ok in ["8080", "22/udp", "7421/udp", "2379/udp", "4789", "7422", "1"] {
            assert!(r.check(&n, &publish(ok)).is_ok(), "{ok}");
        }
        // Another node's agent port is its own.
        assert!(r.check(&node("http://10.0.0.1:9999"), &publish("7421")).is_ok());
        assert!(r.check(&node("http://10.0.0.1:9999"), &publish("9999")).is_err());
    }

    #[test]
    fn configured_ranges_and_protocols() {
        let r = ReservedPorts::new(&["30000-30010".parse().unwrap(), "53/udp".parse().unwrap()], None);
        let n = node("https://node1:7421");
        let m = |port: u32, proto: &str| PortMapping::validate("", port, 80, proto).unwrap();
        let err = r
            .check(&n, &[m(8080, "tcp"), m(30005, "tcp")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "port 30005/tcp is reserved on node1 (in berth-api's --reserved-ports)"
        );
        assert!(r.check(&n, &[m(53, "udp")]).is_err());
        assert!(r.check(&n, &[m(53, "tcp"), m(30011, "tcp")]).is_ok());
        // Without the defaults, 22 is free; without a TCP listener, 7420 is.
        assert!(r.check(&n, &[m(22, "tcp"), m(7420, "tcp")]).is_ok());
        assert!(r.check(&n, &[m(7421, "tcp")]).is_err(), "the agent's port always");
        assert!(r.check(&n, &[m(4789, "udp")]).is_err(), "VXLAN always");
    }
}
