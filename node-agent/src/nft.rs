//! berth's nftables rules on a node, built as data from the networks realised
//! here and applied as one atomic batch (`nft -f -`): the whole table is
//! replaced in a single transaction, so traffic never sees a half-written
//! ruleset, and an identical re-apply (agent restart) changes nothing for
//! established flows. One table, `ip berth`: masquerade per bridge subnet and
//! isolation between bridges. (`enable_icc=false` is not a rule: the agent
//! marks the bridge ports isolated instead, which needs no firewall and no
//! per-sandbox rule; this kernel also lacks `meta ibrname` in bridge tables.)
use std::fmt::Write as _;
use std::process::Stdio;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

/// The name of berth's tables.
pub const TABLE: &str = "berth";

/// A published port and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRule {
    pub mapping: berth_core::ports::PortMapping,
    pub target: std::net::Ipv4Addr,
    /// The bridge the target sits behind.
    pub bridge: String,
}

/// What the rules need to know about one bridge on this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub masquerade: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// A whole ruleset for berth's table, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset(String);

impl Ruleset {
    /// Rules per chain that applying this installs (empty: no table).
    pub fn rule_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        let mut chain: Option<String> = None;
        for line in self.0.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("chain ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                counts.insert(name.clone(), 0);
                chain = Some(name);
            } else if line == "}" {
                chain = None;
            } else if let Some(c) = &chain
                && !line.starts_with("type ")
                && !line.is_empty()
            {
                *counts.entry(c.clone()).or_default() += 1;
            }
        }
        counts
    }
}

/// Rules per chain of berth's table as the kernel holds it; `None` when
/// there is no table.
pub async fn observe() -> Result<Option<std::collections::BTreeMap<String, usize>>, NftError> {
    let out = tokio::process::Command::new("nft")
        .args(["-j", "list", "table", "ip", TABLE])
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NftError::Refused(err.trim().to_string()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| NftError::Refused(format!("nft -j output: {e}")))?;
    let mut counts = std::collections::BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("chain") {
            counts
                .entry(c["name"].as_str().unwrap_or_default().to_string())
                .or_insert(0);
        }
        if let Some(r) = item.get("rule") {
            *counts
                .entry(r["chain"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(Some(counts))
}

/// The batch that replaces berth's tables with rules for `bridges`; with no
/// bridges it only deletes them.
pub fn render(bridges: &[BridgeRules], ports: &[PortRule]) -> Ruleset {
    Ruleset(render_text(bridges, ports))
}

fn render_text(bridges: &[BridgeRules], ports: &[PortRule]) -> String {
    let mut bridges = bridges.to_vec();
    bridges.sort();
    let mut ports = ports.to_vec();
    ports.sort();
    let mut out = String::new();
    // `add` then `delete` makes the delete succeed whether or not the table
    // existed; the whole file is one transaction.
    let _ = writeln!(out, "add table ip {TABLE}\ndelete table ip {TABLE}");
    if bridges.is_empty() {
        return out;
    }
    let port_bridges: std::collections::BTreeSet<&str> = ports.iter().map(|p| p.bridge.as_str()).collect();
    let names: Vec<String> = bridges.iter().map(|b| format!("\"{}\"", b.bridge)).collect();
    let _ = writeln!(out, "table ip {TABLE} {{");
    if !ports.is_empty() {
        // Published ports: DNAT for traffic to any local address, arriving
        // (prerouting) or sent by the node itself (output, for 127.0.0.1).
        // (Numeric priority: this nft only knows `dstnat` for prerouting.)
        for hook in ["prerouting", "output"] {
            let _ = writeln!(
                out,
                "  chain {hook} {{\n    type nat hook {hook} priority -100; policy accept;\n    fib daddr type local jump ports\n  }}"
            );
        }
        let _ = writeln!(out, "  chain ports {{");
        for p in &ports {
            let m = &p.mapping;
            let daddr = m.host_ip.map(|ip| format!("ip daddr {ip} ")).unwrap_or_default();
            let _ = writeln!(
                out,
                "    {daddr}{} dport {} dnat to {}:{}",
                m.proto, m.host_port, p.target, m.container_port
            );
        }
        let _ = writeln!(out, "  }}");
    }
    let _ = writeln!(
        out,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
    );
    for b in bridges
        .iter()
        .filter(|b| port_bridges.contains(b.bridge.as_str()))
    {
        // 127.0.0.1:PORT from the node (route_localnet is on for this bridge),
        // and hairpin: a sandbox reaching a port published by its own bridge.
        let _ = writeln!(
            out,
            "    ip saddr 127.0.0.0/8 oifname \"{}\" masquerade",
            b.bridge
        );
        let _ = writeln!(
            out,
            "    ct status dnat ip saddr {} oifname \"{}\" masquerade",
            b.subnet, b.bridge
        );
    }
    for b in bridges.iter().filter(|b| b.masquerade) {
        let _ = writeln!(
            out,
            "    ip saddr {} oifname != \"{}\" masquerade",
            b.subnet, b.bridge
        );
    }
    let _ = writeln!(out, "  }}");
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
    );
    if !ports.is_empty() {
        // Published ports are reachable from every network.
        let _ = writeln!(out, "    ct status dnat accept");
    }
    if bridges.len() > 1 {
        for b in &bridges {
            let others: Vec<&String> = names.iter().filter(|n| n.trim_matches('"') != b.bridge).collect();
            let set = others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            let _ = writeln!(out, "    iifname \"{}\" oifname {{ {set} }} drop", b.bridge);
        }
    }
    let _ = writeln!(out, "  }}\n}}");
    out
}

/// Applies a batch from [`render`] in the calling process's network namespace.
pub async fn apply(rules: &Ruleset) -> Result<(), NftError> {
    let batch = rules.0.as_str();
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(batch.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str, subnet: &str, masq: bool) -> BridgeRules {
        BridgeRules {
            bridge: name.into(),
            subnet: subnet.parse().unwrap(),
            masquerade: masq,
        }
    }

    #[test]
    fn renders_masquerade_and_isolation() {
        let text = render_text(
            &[
                b("berth0", "172.17.0.0/16", true),
                b("br-1", "172.18.0.0/16", false),
            ],
            &[],
        );
        assert!(text.contains("ip saddr 172.17.0.0/16 oifname != \"berth0\" masquerade"));
        assert!(!text.contains("172.18.0.0/16 oifname"), "masquerade off for br-1");
        assert!(text.contains("iifname \"berth0\" oifname { \"br-1\" } drop"));
        assert!(text.contains("iifname \"br-1\" oifname { \"berth0\" } drop"));
    }

    #[test]
    fn renders_published_ports() {
        let m =
            |ip: &str, hp, cp, proto| berth_core::ports::PortMapping::validate(ip, hp, cp, proto).unwrap();
        let ports = [
            PortRule {
                mapping: m("", 8080, 80, "tcp"),
                target: "172.17.0.2".parse().unwrap(),
                bridge: "berth0".into(),
            },
            PortRule {
                mapping: m("192.168.205.10", 5353, 53, "udp"),
                target: "172.17.0.3".parse().unwrap(),
                bridge: "berth0".into(),
            },
        ];
        let text = render_text(&[b("berth0", "172.17.0.0/16", true)], &ports);
        assert!(text.contains("fib daddr type local jump ports"));
        assert!(
            text.contains("    tcp dport 8080 dnat to 172.17.0.2:80\n"),
            "{text}"
        );
        assert!(
            text.contains("    ip daddr 192.168.205.10 udp dport 5353 dnat to 172.17.0.3:53\n"),
            "{text}"
        );
        assert!(text.contains("ip saddr 127.0.0.0/8 oifname \"berth0\" masquerade"));
        assert!(text.contains("ct status dnat ip saddr 172.17.0.0/16 oifname \"berth0\" masquerade"));
        assert!(text.contains("ct status dnat accept"));
    }

    #[test]
    fn empty_only_deletes() {
        let text = render_text(&[], &[]);
        assert!(text.contains("delete table ip berth"));
        assert!(!text.contains("chain"));
    }
}
