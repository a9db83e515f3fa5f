//! The seed's own multi-host overlay as a peer: Docker 20.10 (Debian's
//! docker.io) with its classic, pre-swarm cluster store. One dockerd per
//! lab node namespace, each in its own mount and UTS namespace with the
//! node's name as hostname (serf, Docker's gossip, quits on a name clash),
//! `--cluster-store etcd://CTL:2379` (the lab's etcd, whose v2 API the
//! bench switches on for this) and `--cluster-advertise NODE_IP:2375`.
//! Containers are busybox (imported from busybox-static, no registry).
//!
//! Every operation goes through the Engine API on the dockerd's Unix socket
//! (`docker run -d` = create + start, `network connect`, `network
//! disconnect`, `rm -f`), so no CLI process is in Docker's time either.
//! Everything is removed on drop: containers, networks, the daemons by PID.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_agent::docker::dockerd::Dockerd;
use serde_json::{Value, json};

use crate::lab::{CTL_ADDR, Lab, node_addr};
use crate::util::{Proc, wait_until};

pub const DOCKERD: &str = "/usr/sbin/dockerd";

/// Why the peer cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    (!Path::new(DOCKERD).exists())
        .then(|| format!("{DOCKERD} is not installed (Debian's docker.io 20.10 is the peer)"))
}

/// A timeout long enough for `docker run` on the vfs storage driver.
const API_TIMEOUT: Duration = Duration::from_secs(60);

pub struct DockerNode {
    pub api: Dockerd,
    pub dir: PathBuf,
    proc: Proc,
}

impl DockerNode {
    /// dockerd's PID (to enter its mount namespace, where its overlay
    /// namespaces are mounted).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The Engine API: `method path [body]`, expecting a 2xx status.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, out) = self
            .api
            .request(method, path, body.as_ref(), API_TIMEOUT)
            .await
            .with_context(|| format!("dockerd {method} {path}"))?;
        if !(200..300).contains(&status) {
            bail!(
                "dockerd {method} {path}: {status} {}",
                String::from_utf8_lossy(&out).trim()
            );
        }
        if out.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    /// `docker run -d --name NAME --network NET --ip IP busybox sleep 1d`.
    pub async fn run(&self, name: &str, network: &str, ip: &str) -> Result<String> {
        let created = self
            .call(
                "POST",
                &format!("/containers/create?name={name}"),
                Some(json!({
                    "Image": "busybox",
                    "Cmd": ["sleep", "1d"],
                    "HostConfig": {"NetworkMode": network},
                    "NetworkingConfig": {"EndpointsConfig": {
                        network: {"IPAMConfig": {"IPv4Address": ip}}
                    }},
                })),
            )
            .await?;
        let id = created["Id"]
            .as_str()
            .context("create answered no Id")?
            .to_string();
        self.call("POST", &format!("/containers/{id}/start"), None)
            .await?;
        Ok(id)
    }

    pub async fn connect(&self, network: &str, id: &str, ip: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/networks/{network}/connect"),
            Some(json!({"Container": id, "EndpointConfig": {"IPAMConfig": {"IPv4Address": ip}}})),
        )
        .await
        .map(drop)
    }

    pub async fn disconnect(&self, network: &str, id: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/networks/{network}/disconnect"),
            Some(json!({"Container": id})),
        )
        .await
        .map(drop)
    }

    /// `docker rm -f`.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.call("DELETE", &format!("/containers/{id}?force=1"), None)
            .await
            .map(drop)
    }

    /// The container's PID (its network namespace is /proc/PID/ns/net) and
    /// its MAC address on `network`.
    pub async fn pid_and_mac(&self, id: &str, network: &str) -> Result<(u32, String)> {
        let v = self.call("GET", &format!("/containers/{id}/json"), None).await?;
        let pid = v["State"]["Pid"].as_u64().context("no State.Pid")? as u32;
        let mac = v["NetworkSettings"]["Networks"][network]["MacAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((pid, mac))
    }

    /// Neighbour and FDB entries in this dockerd's namespace of overlay
    /// `network_id`, as `ip -j neigh` / `bridge -j fdb` print them.
    pub fn overlay_tables(&self, network_id: &str) -> Result<String> {
        let ns = self
            .dir
            .join("exec/netns")
            .join(format!("1-{}", &network_id[..10]));
        let script = format!(
            "nsenter --net={ns} -- ip -j neigh show; nsenter --net={ns} -- bridge -j fdb show",
            ns = ns.display()
        );
        let out = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .args(["--", "sh", "-c", &script])
            .output()?;
        if !out.status.success() {
            bail!(
                "reading Docker's overlay namespace {}: {}",
                ns.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Two (or more) dockerds sharing the lab's etcd as their cluster store.
pub struct DockerOverlay {
    pub nodes: Vec<DockerNode>,
    networks: Vec<String>,
}

impl DockerOverlay {
    /// Starts one dockerd in each of the lab's first `n` node namespaces.
    pub async fn start(lab: &Lab, n: usize) -> Result<Self> {
        let root = lab.dir().join("docker");
        let image = root.join("busybox.tar");
        busybox_tar(&root.join("rootfs"), &image)?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            let dir = root.join(format!("node{i}"));
            std::fs::create_dir_all(dir.join("exec"))?;
            let socket = dir.join("docker.sock");
            let script = format!(
                "hostname node{i} && exec nsenter --net=/run/netns/{ns} -- {DOCKERD} \
                 --data-root {dir}/data --exec-root {dir}/exec --pidfile {dir}/docker.pid \
                 --host unix://{sock} --bridge=none --iptables=false --ip6tables=false \
                 --ip-masq=false --storage-driver vfs --shutdown-timeout 2 \
                 --cluster-store etcd://{CTL_ADDR}:2379 --cluster-advertise {addr}:2375",
                ns = lab.node(i),
                dir = dir.display(),
                sock = socket.display(),
                addr = node_addr(i),
            );
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ]);
            let proc = Proc::spawn("dockerd", &mut cmd, &lab.log_path(&format!("dockerd-node{i}")))?;
            let api = Dockerd::new(&format!("unix://{}", socket.display()))?;
            nodes.push(DockerNode { api, dir, proc });
        }
        let peer = Self {
            nodes,
            networks: Vec::new(),
        };
        for (i, node) in peer.nodes.iter().enumerate() {
            let up = wait_until(Duration::from_secs(60), Duration::from_millis(200), || async {
                node.call("GET", "/version", None).await.is_ok()
            })
            .await;
            if !up {
                bail!("dockerd on node{} did not start: {}", i + 1, node.proc.log_text());
            }
            let out = Command::new("/usr/bin/docker")
                .arg("-H")
                .arg(format!("unix://{}", node.dir.join("docker.sock").display()))
                .arg("import")
                .arg(&image)
                .arg("busybox")
                .output()?;
            if !out.status.success() {
                bail!("docker import: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Ok(peer)
    }

    /// Creates an overlay network on node1 and waits until every node
    /// lists it; returns its id.
    pub async fn network(&mut self, name: &str, subnet: &str) -> Result<String> {
        let v = self.nodes[0]
            .call(
                "POST",
                "/networks/create",
                Some(json!({"Name": name, "Driver": "overlay", "CheckDuplicate": true,
                            "IPAM": {"Config": [{"Subnet": subnet}]}})),
            )
            .await?;
        let id = v["Id"]
            .as_str()
            .context("network create answered no Id")?
            .to_string();
        self.networks.push(id.clone());
        for node in &self.nodes[1..] {
            let path = format!("/networks/{id}");
            let seen = wait_until(Duration::from_secs(30), Duration::from_millis(20), || async {
                node.call("GET", &path, None).await.is_ok()
            })
            .await;
            if !seen {
                bail!("Docker overlay {name} never reached the other node");
            }
        }
        Ok(id)
    }

    /// Removes every container and the networks, then stops the daemons.
    pub async fn shutdown(mut self) {
        for node in &self.nodes {
            if let Ok(list) = node.call("GET", "/containers/json?all=1", None).await {
                for c in list.as_array().into_iter().flatten() {
                    if let Some(id) = c["Id"].as_str() {
                        let _ = node.remove(id).await;
                    }
                }
            }
        }
        for id in std::mem::take(&mut self.networks) {
            let _ = self.nodes[0]
                .call("DELETE", &format!("/networks/{id}"), None)
                .await;
        }
        for node in &mut self.nodes {
            node.proc.stop();
        }
    }
}

/// busybox's root filesystem as an image tarball (the lab's recipe).
fn busybox_tar(root: &Path, tar: &Path) -> Result<()> {
    if tar.exists() {
        return Ok(());
    }
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static is needed")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    let out = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .output()?;
    if !out.status.success() {
        bail!("tar: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
