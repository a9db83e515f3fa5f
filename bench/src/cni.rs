//! The CNI reference plugins (Debian's containernetworking-plugins), exec'd
//! as a container runtime does: environment `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`, the network configuration on stdin.
//! Each plugin is spawned from a thread inside the lab's CNI node namespace,
//! so its bridge, veth host ends and iptables rules land there and never in
//! the root namespace; host-local keeps its state in the lab's directory.
//! The time measured is from spawning the plugin to its exit.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::util::exec_timed_in;

pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// One CNI network, run inside node namespace `node_ns`.
pub struct CniNet {
    pub node_ns: String,
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    data_dir: PathBuf,
}

/// What an ADD answered and how long it took.
pub struct Added {
    pub elapsed: Duration,
    pub result: Value,
}

impl CniNet {
    pub fn new(node_ns: &str, name: &str, bridge: &str, subnet: &str, lab_dir: &Path) -> Self {
        Self {
            node_ns: node_ns.to_string(),
            name: name.to_string(),
            bridge: bridge.to_string(),
            subnet: subnet.to_string(),
            data_dir: lab_dir.join("cni-ipam"),
        }
    }

    /// `bridge` + `host-local`, `ipMasq: true`, as in the CNI docs' examples.
    pub fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": self.subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.data_dir.display().to_string(),
            }
        })
    }

    /// `portmap` chained after `bridge`, as libcni would run it.
    fn portmap_conf(&self, host_port: u16, container_port: u16, prev: &Value) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
            "runtimeConfig": {
                "portMappings": [
                    { "hostPort": host_port, "containerPort": container_port, "protocol": "tcp" }
                ]
            },
            "prevResult": prev,
        })
    }

    fn with_prev(conf: Value, prev: &Value) -> Value {
        let mut conf = conf;
        conf["prevResult"] = prev.clone();
        conf
    }

    /// Execs one plugin; returns its wall time and parsed stdout (Null when empty).
    pub async fn exec(
        &self,
        plugin: &str,
        command: &str,
        container_id: &str,
        netns_path: &str,
        conf: &Value,
    ) -> Result<(Duration, Value)> {
        let program = Path::new(PLUGIN_DIR).join(plugin);
        let env: Vec<(&'static str, String)> = vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", container_id.to_string()),
            ("CNI_NETNS", netns_path.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", PLUGIN_DIR.to_string()),
        ];
        let stdin = serde_json::to_vec(conf)?;
        let (elapsed, out) = exec_timed_in(&self.node_ns, program, Vec::new(), env, stdin).await?;
        if !out.status.success() {
            bail!(
                "CNI {plugin} {command} for {container_id}: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout)?
        };
        Ok((elapsed, value))
    }

    /// `bridge` ADD.
    pub async fn add(&self, id: &str, netns_path: &str) -> Result<Added> {
        let (elapsed, result) = self
            .exec("bridge", "ADD", id, netns_path, &self.bridge_conf())
            .await?;
        Ok(Added { elapsed, result })
    }

    /// `bridge` DEL (with the cached ADD result, as libcni passes it).
    pub async fn del(&self, id: &str, netns_path: &str, prev: &Value) -> Result<Duration> {
        let conf = Self::with_prev(self.bridge_conf(), prev);
        Ok(self.exec("bridge", "DEL", id, netns_path, &conf).await?.0)
    }

    /// `bridge` then `portmap` ADD (one published port); the time is the sum of both execs.
    pub async fn add_with_port(&self, id: &str, netns_path: &str, host_port: u16) -> Result<Added> {
        let bridge = self.add(id, netns_path).await?;
        let conf = self.portmap_conf(host_port, 80, &bridge.result);
        let (pm, result) = self.exec("portmap", "ADD", id, netns_path, &conf).await?;
        Ok(Added {
            elapsed: bridge.elapsed + pm,
            result,
        })
    }

    /// `portmap` then `bridge` DEL (libcni deletes in reverse order).
    pub async fn del_with_port(
        &self,
        id: &str,
        netns_path: &str,
        host_port: u16,
        prev: &Value,
    ) -> Result<Duration> {
        let conf = self.portmap_conf(host_port, 80, prev);
        let (pm, _) = self.exec("portmap", "DEL", id, netns_path, &conf).await?;
        Ok(pm + self.del(id, netns_path, prev).await?)
    }
}

/// The first IPv4 address of a CNI result (`ips[0].address`, without the prefix).
pub fn first_ip(result: &Value) -> Option<String> {
    result["ips"][0]["address"]
        .as_str()
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

/// Whether the plugins are installed.
pub fn installed() -> bool {
    ["bridge", "host-local", "portmap"]
        .iter()
        .all(|p| Path::new(PLUGIN_DIR).join(p).exists())
}
