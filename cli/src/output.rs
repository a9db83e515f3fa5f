//! Printing: aligned tables and JSON documents (the shapes are in `views`).

use std::io::Write;

use anyhow::{Context, Result};
use berth_proto::v1::{Network, NetworkScope, Node, PortMapping, PortProtocol, Sandbox};
use serde::Serialize;

use crate::views::{driver_name, node_status};

/// Spaces between table columns, after the widest cell (docker's tabwriter padding).
const COLUMN_GAP: usize = 3;

/// Writes `text` and a newline to stdout. A closed pipe (`berth ... | head`) is not an error.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Prints `value` as a JSON document.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    print(&to_json(value)?)
}

/// Serializes `value` as JSON indented by four spaces, like `docker inspect`.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    value.serialize(&mut ser).context("cannot encode JSON")?;
    String::from_utf8(buf).context("cannot encode JSON")
}

/// Renders left-aligned columns, each padded to its widest cell plus three
/// spaces; the last column is not padded and no line has trailing spaces.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + COLUMN_GAP - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// The first 12 characters of an id, as docker shows them.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// `network ls`: NETWORK ID, NAME, DRIVER, SCOPE, sorted by name like docker.
pub fn networks_table(networks: &[Network]) -> String {
    let mut networks: Vec<&Network> = networks.iter().collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            vec![
                short_id(&n.id),
                n.name.clone(),
                driver_name(n),
                NetworkScope::name_of(n.scope).to_string(),
            ]
        })
        .collect();
    render_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
}

pub fn nodes_table(nodes: &[Node]) -> String {
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.address.clone(),
                node_status(n).to_string(),
                n.agent_url.clone(),
            ]
        })
        .collect();
    render_table(&["NAME", "ADDRESS", "STATUS", "AGENT"], &rows)
}

/// Formats published ports like `docker ps`: `0.0.0.0:8080->80/tcp`, with runs
/// of consecutive ports folded into ranges (`0.0.0.0:8000-8010->8000-8010/tcp`).
pub fn format_ports(ports: &[PortMapping]) -> String {
    // (host ip, protocol, first host port, first container port, run length)
    let mut runs: Vec<(&str, &str, u32, u32, u32)> = Vec::new();
    for p in ports {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            p.host_ip.as_str()
        };
        let proto = match PortProtocol::try_from(p.protocol) {
            Ok(PortProtocol::Udp) => "udp",
            _ => "tcp",
        };
        if let Some(last) = runs.last_mut() {
            let (lip, lproto, host, cont, len) = *last;
            if lip == ip && lproto == proto && host + len == p.host_port && cont + len == p.container_port {
                last.4 += 1;
                continue;
            }
        }
        runs.push((ip, proto, p.host_port, p.container_port, 1));
    }
    runs.iter()
        .map(|&(ip, proto, host, cont, len)| {
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            if len == 1 {
                format!("{ip}:{host}->{cont}/{proto}")
            } else {
                let (host_end, cont_end) = (host + len - 1, cont + len - 1);
                format!("{ip}:{host}-{host_end}->{cont}-{cont_end}/{proto}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who made a sandbox: `berth`, or a runtime front with the container's
/// short id (`cni:3f1c0e2a9b7d`).
pub fn origin_label(s: &Sandbox) -> String {
    let origin = crate::views::origin_name(s);
    if s.container_id.is_empty() {
        origin.to_string()
    } else {
        format!("{origin}:{}", short_id(&s.container_id))
    }
}

/// `sandbox ls`: SANDBOX ID, NAME, NODE, ORIGIN, NETWORKS, IP ADDRESSES, PORTS.
pub fn sandboxes_table(sandboxes: &[Sandbox]) -> String {
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|s| {
            let networks: Vec<&str> = s.endpoints.iter().map(|ep| ep.network_name.as_str()).collect();
            // Both families of a dual-stack endpoint, IPv4 first.
            let ips: Vec<&str> = s
                .endpoints
                .iter()
                .flat_map(|ep| [ep.ip.as_str(), ep.ip6.as_str()])
                .filter(|ip| !ip.is_empty())
                .collect();
            vec![
                short_id(&s.id),
                s.name.clone(),
                s.node.clone(),
                origin_label(s),
                networks.join(","),
                ips.join(","),
                format_ports(&s.ports),
            ]
        })
        .collect();
    render_table(
        &[
            "SANDBOX ID",
            "NAME",
            "NODE",
            "ORIGIN",
            "NETWORKS",
            "IP ADDRESSES",
            "PORTS",
        ],
        &rows,
    )
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::fixtures::*;

    #[test]
    fn table_pads_columns_by_three() {
        let rows = vec![
            vec!["a1".to_string(), "bridge".to_string(), "x".to_string()],
            vec!["b2".to_string(), "my-bridge".to_string(), "".to_string()],
        ];
        let table = render_table(&["ID", "NAME", "LAST"], &rows);
        assert_eq!(
            table,
            "ID   NAME        LAST\n\
             a1   bridge      x\n\
             b2   my-bridge"
        );
        assert_eq!(render_table(&["A", "B"], &[]), "A   B");
    }

    #[test]
    fn networks_table_like_docker() {
        let mut my = bridge();
        my.id = "aaaabbbbccccdddd".into();
        my.name = "my-bridge".into();
        let mut none = bridge();
        none.id = "0000111122223333".into();
        none.name = "none".into();
        none.driver = berth_proto::v1::NetworkDriver::Null as i32;
        let table = networks_table(&[none, my, bridge()]);
        assert_eq!(
            table,
            "NETWORK ID     NAME        DRIVER   SCOPE\n\
             3f1a9c0e5b7d   bridge      bridge   local\n\
             aaaabbbbcccc   my-bridge   bridge   local\n\
             000011112222   none        null     local"
        );
    }

    #[test]
    fn nodes_table_sorted_with_status() {
        assert_eq!(
            nodes_table(&nodes()),
            "NAME    ADDRESS          STATUS      AGENT\n\
             node1   192.168.205.10   ready       http://192.168.205.10:7001\n\
             node2   192.168.205.11   not ready   http://192.168.205.11:7001"
        );
    }

    #[test]
    fn ports_like_docker_ps() {
        assert_eq!(format_ports(&[]), "");
        assert_eq!(format_ports(&[port("", 8080, 80, "tcp")]), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            format_ports(&[port("127.0.0.1", 53, 53, "udp"), port("::1", 1, 2, "")]),
            "127.0.0.1:53->53/udp, [::1]:1->2/tcp"
        );
        let range: Vec<PortMapping> = (0..3).map(|i| port("", 8000 + i, 9000 + i, "tcp")).collect();
        assert_eq!(format_ports(&range), "0.0.0.0:8000-8002->9000-9002/tcp");
    }

    #[test]
    fn sandboxes_table_lists_networks_ips_ports() {
        assert_eq!(
            sandboxes_table(&[sandbox()]),
            "SANDBOX ID     NAME    NODE    ORIGIN   NETWORKS           IP ADDRESSES            PORTS\n\
             9b8a7c6d5e4f   test1   node1   berth    bridge,my-bridge   172.17.0.2,172.18.0.3   0.0.0.0:8080->80/tcp"
        );
        let mut cni = sandbox();
        cni.name = "cni-3f1c0e2a9b7d".into();
        cni.origin = berth_proto::v1::SandboxOrigin::Cni as i32;
        cni.container_id = "3f1c0e2a9b7d44aa0011".into();
        cni.ports.clear();
        assert!(
            sandboxes_table(&[cni]).contains("   node1   cni:3f1c0e2a9b7d   bridge,my-bridge"),
            "marked as CNI's, with the container id"
        );
        let mut dual = sandbox();
        dual.endpoints[1].ip6 = "fd42:be47:1::3".into();
        assert!(
            sandboxes_table(&[dual]).contains("172.17.0.2,172.18.0.3,fd42:be47:1::3"),
            "both families of a dual-stack endpoint"
        );
    }
}
