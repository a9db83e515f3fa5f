//! Data-plane throughput with iperf3 (TCP, one stream), through berth's paths
//! and through the same paths built by hand with `ip` in the lab's own
//! namespaces on the same kernel: a bridge with two veth "sandboxes", the
//! same bridge's node masquerading onto the underlay, and two nodes joined
//! by VXLAN (learning off, static all-zero FDB entry, MTU 1450).
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::lab::Lab;
use crate::util::{Proc, ip, nft_in, output_in, run, spawn_in, sysctl_in};

pub const IPERF_PORT: &str = "5201";

/// An iperf3 server bound to `addr` inside `ns`.
pub async fn server(ns: &str, addr: &str, log: &Path) -> Result<Proc> {
    spawn_in(
        ns,
        "iperf3 -s",
        "iperf3",
        &["-s", "-B", addr, "-p", IPERF_PORT],
        log,
    )
    .await
}

/// One iperf3 run from `ns` to `addr`: received Gbit/s.
pub async fn client(ns: &str, addr: &str, seconds: u32) -> Result<f64> {
    let secs = seconds.to_string();
    let mut last = None;
    for _ in 0..20 {
        match output_in(ns, "iperf3", &["-c", addr, "-p", IPERF_PORT, "-t", &secs, "-J"]).await {
            Ok(out) => {
                let v: Value = serde_json::from_str(&out).context("iperf3 JSON")?;
                match v["end"]["sum_received"]["bits_per_second"].as_f64() {
                    Some(bps) => return Ok(bps / 1e9),
                    None => {
                        let msg = v["error"].as_str().unwrap_or("no end.sum_received in its JSON");
                        last = Some(anyhow::anyhow!("iperf3: {msg}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            Err(e) => {
                // The server may still be starting; iperf3 says so in its JSON error.
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(last.expect("tried")).with_context(|| format!("iperf3 from {ns} to {addr}"))
}

/// Hand-built bridge: node namespace with bridge `hbr0` 172.31.0.1/16,
/// sandboxes `ha` (172.31.0.2) and `hb` (172.31.0.3), the node joined to
/// the underlay and masquerading the subnet (one nft rule, as berth's table).
pub struct HandBridge {
    pub node: String,
    pub a: String,
    pub b: String,
    pub a_ip: &'static str,
    pub b_ip: &'static str,
}

pub const HAND_NODE_ADDR: &str = "192.168.205.60";

pub async fn hand_bridge(lab: &mut Lab) -> Result<HandBridge> {
    let node = lab.ns("hn");
    lab.attach(&node, "ulhn", HAND_NODE_ADDR)?;
    ip(&["-n", &node, "link", "add", "hbr0", "type", "bridge"])?;
    ip(&["-n", &node, "addr", "add", "172.31.0.1/16", "dev", "hbr0"])?;
    ip(&["-n", &node, "link", "set", "hbr0", "up"])?;
    let h = HandBridge {
        a: lab.ns("ha"),
        b: lab.ns("hb"),
        node,
        a_ip: "172.31.0.2",
        b_ip: "172.31.0.3",
    };
    for (ns, host, addr) in [(&h.a, "hv1", h.a_ip), (&h.b, "hv2", h.b_ip)] {
        lab.add_ns(ns)?;
        veth_into(&h.node, host, ns, 1500)?;
        ip(&["-n", &h.node, "link", "set", host, "master", "hbr0", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", "172.31.0.1"])?;
    }
    sysctl_in(&h.node, "net.ipv4.ip_forward", "1").await?;
    nft_in(
        &h.node,
        "table ip hand {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr 172.31.0.0/16 oifname != \"hbr0\" masquerade\n  }\n}\n",
    )
    .await?;
    Ok(h)
}

/// A veth from `node` (host end `host`) with its peer `eth0` born in `ns`.
fn veth_into(node: &str, host: &str, ns: &str, mtu: u32) -> Result<()> {
    let mtu = mtu.to_string();
    ip(&[
        "-n", node, "link", "add", host, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu,
        "netns", ns,
    ])
}

/// Hand-built overlay: nodes `o1` (.61) and `o2` (.62) on the underlay, each
/// with bridge `obr0` and VXLAN `vx0` (VNI 4242, port 4789, learning off,
/// all-zero FDB entry to the other node), sandboxes `oa` 10.99.0.2/24 on o1
/// and `ob` 10.99.0.3/24 on o2, MTU 1450 as berth's overlay uses.
pub struct HandOverlay {
    pub a: String,
    pub b: String,
    pub b_ip: &'static str,
}

pub async fn hand_overlay(lab: &mut Lab) -> Result<HandOverlay> {
    let nodes = [
        (
            lab.ns("o1"),
            "ulo1",
            "192.168.205.61",
            "192.168.205.62",
            lab.ns("oa"),
            "10.99.0.2",
        ),
        (
            lab.ns("o2"),
            "ulo2",
            "192.168.205.62",
            "192.168.205.61",
            lab.ns("ob"),
            "10.99.0.3",
        ),
    ];
    for (node, ul, local, remote, sb, addr) in &nodes {
        lab.attach(node, ul, local)?;
        ip(&["-n", node, "link", "add", "obr0", "type", "bridge"])?;
        ip(&["-n", node, "link", "set", "obr0", "up"])?;
        ip(&[
            "-n",
            node,
            "link",
            "add",
            "vx0",
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "4242",
            "local",
            local,
            "dstport",
            "4789",
            "nolearning",
        ])?;
        ip(&["-n", node, "link", "set", "vx0", "master", "obr0", "up"])?;
        run(
            "bridge",
            &[
                "-n",
                node,
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                remote,
            ],
        )?;
        lab.add_ns(sb)?;
        veth_into(node, "ov1", sb, 1450)?;
        ip(&["-n", node, "link", "set", "ov1", "master", "obr0", "up"])?;
        ip(&["-n", sb, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", sb, "link", "set", "eth0", "up"])?;
    }
    let (a, b) = (nodes[0].4.clone(), nodes[1].4.clone());
    // Check the hand-built path works before measuring it.
    if output_in(&a, "ping", &["-c", "1", "-W", "2", "10.99.0.3"])
        .await
        .is_err()
    {
        bail!("hand-built overlay: 10.99.0.3 not reachable from {a}");
    }
    Ok(HandOverlay {
        a,
        b,
        b_ip: "10.99.0.3",
    })
}
