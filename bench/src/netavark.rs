//! netavark (Debian's package, the network tool podman runs), exec'd as
//! podman does: `netavark --config DIR setup|teardown NETNS_PATH` with the
//! network options as JSON on stdin (the shape of its repository's
//! test/testfiles/*.json). netavark does no address management: podman
//! picks the address in-process and passes it as `static_ips`, so this
//! bench hands it the next address of its subnet. Each exec is spawned from
//! a thread inside the lab's netavark node namespace, so its bridge, veth
//! host ends and iptables rules land there, never in the root namespace.
//! The time measured is from spawning netavark to its exit.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::util::exec_timed_in;

/// Where Debian's package puts the binary (podman finds it there).
pub const BINARY: &str = "/usr/lib/podman/netavark";

/// Whether netavark is installed.
pub fn installed() -> bool {
    Path::new(BINARY).exists()
}

/// One netavark bridge network, run inside node namespace `node_ns`.
pub struct Netavark {
    pub node_ns: String,
    name: String,
    bridge: String,
    subnet: Ipv4Net,
    config_dir: PathBuf,
}

impl Netavark {
    pub fn new(node_ns: &str, name: &str, bridge: &str, subnet: Ipv4Net, lab_dir: &Path) -> Self {
        Self {
            node_ns: node_ns.to_string(),
            name: name.to_string(),
            bridge: bridge.to_string(),
            subnet,
            config_dir: lab_dir.join(format!("netavark-{name}")),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address podman would hand container number `i` (the gateway is .1).
    pub fn address(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 2 + i as u32)
    }

    /// The options podman writes for one container on this network, with
    /// one published TCP port when `host_port` is given.
    fn options(&self, id: &str, ip: Ipv4Addr, host_port: Option<u16>) -> Value {
        let gateway = Ipv4Addr::from(u32::from(self.subnet.network()) + 1);
        let mut v = json!({
            "container_id": id,
            "container_name": id,
            "networks": {
                self.name.as_str(): { "static_ips": [ip.to_string()], "interface_name": "eth0" }
            },
            "network_info": {
                self.name.as_str(): {
                    "dns_enabled": false,
                    "driver": "bridge",
                    "id": format!("{:0>64}", hex_of(&self.name)),
                    "internal": false,
                    "ipv6_enabled": false,
                    "name": self.name,
                    "network_interface": self.bridge,
                    "subnets": [{ "gateway": gateway.to_string(), "subnet": self.subnet.to_string() }]
                }
            }
        });
        if let Some(port) = host_port {
            v["port_mappings"] = json!([{
                "host_ip": "", "container_port": 80, "host_port": port, "range": 1, "protocol": "tcp"
            }]);
        }
        v
    }

    async fn exec(&self, command: &str, netns_path: &str, options: &Value) -> Result<Duration> {
        let args = [
            "--config".to_string(),
            self.config_dir.display().to_string(),
            command.to_string(),
            netns_path.to_string(),
        ];
        std::fs::create_dir_all(&self.config_dir)?;
        let stdin = serde_json::to_vec(options)?;
        let (elapsed, out) =
            exec_timed_in(&self.node_ns, BINARY.into(), args.to_vec(), Vec::new(), stdin).await?;
        if !out.status.success() {
            bail!(
                "netavark {command} {netns_path}: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(elapsed)
    }

    /// `setup` of container `id` (address `ip`) into the namespace at `netns_path`.
    pub async fn setup(
        &self,
        id: &str,
        netns_path: &str,
        ip: Ipv4Addr,
        host_port: Option<u16>,
    ) -> Result<Duration> {
        self.exec("setup", netns_path, &self.options(id, ip, host_port))
            .await
    }

    /// `teardown` of what [`Netavark::setup`] made.
    pub async fn teardown(
        &self,
        id: &str,
        netns_path: &str,
        ip: Ipv4Addr,
        host_port: Option<u16>,
    ) -> Result<Duration> {
        self.exec("teardown", netns_path, &self.options(id, ip, host_port))
            .await
    }
}

/// A stable 64-hex id for a network name (netavark wants one).
fn hex_of(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}
