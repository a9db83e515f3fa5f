//! The bench's own lab, built like the local lab and the integration tests:
//! an underlay bridge in its own namespace, a control namespace with etcd and
//! berth-api, node namespaces each running a berth-agent, plus namespaces for
//! the peers (CNI, the raw floor, hand-built data-plane paths, an underlay
//! host). Every name starts with the lab's tag; everything is removed on
//! drop (namespaces, `/etc/netns` files, processes by PID), on failure too.
//!
//! Like the local lab it runs berth's default: mutual TLS between berth-api
//! and the agents (a PKI made with `berth cert` in the lab's directory), so
//! the figures include the TLS hop API → agent. The bench's own calls to
//! berth-api go through the Unix socket, as the CLI's do.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_agent::kernel::netns;
use berth_proto::v1 as pb;
use tempfile::TempDir;

use crate::client;
use crate::util::{Proc, ip, output_in, wait_until};

/// The control namespace's underlay address (berth-api listens here).
pub const CTL_ADDR: &str = "192.168.205.2";
/// An extra host on the underlay (not a berth node): the data-plane target.
pub const UL_HOST_ADDR: &str = "192.168.205.50";
pub const AGENT_PORT: u16 = 7421;

/// Underlay address of node `i` (1-based): node1 = .10, node2 = .11, …
pub fn node_addr(i: usize) -> String {
    format!("192.168.205.{}", 9 + i)
}

pub struct Lab {
    pub tag: String,
    pub socket: PathBuf,
    pub nodes: usize,
    pub log_filter: String,
    agents: Vec<Option<Proc>>,
    api: Option<Proc>,
    etcd: Option<Proc>,
    /// Namespaces of the lab itself, deleted last (in reverse order).
    namespaces: Vec<String>,
    /// Where to keep the logs when the lab goes.
    keep_logs: Option<PathBuf>,
    dir: TempDir,
}

impl Lab {
    /// Brings up etcd, berth-api and `nodes` agents and waits until every
    /// node is ready.
    pub async fn start(nodes: usize, log_filter: &str, bin_dir: &Path) -> Result<Self> {
        // The tag ends in a letter, so no other run's tag is a prefix of it.
        let tag = format!("bench{}z", std::process::id());
        let dir = tempfile::Builder::new().prefix("berth-bench").tempdir()?;
        let mut lab = Self {
            socket: dir.path().join("api.sock"),
            tag: tag.clone(),
            nodes,
            log_filter: log_filter.to_string(),
            agents: Vec::new(),
            api: None,
            etcd: None,
            namespaces: Vec::new(),
            keep_logs: None,
            dir,
        };
        let ul = lab.ns("ul");
        lab.add_ns(&ul)?;
        ip(&["-n", &ul, "link", "add", "br-ul", "type", "bridge"])?;
        ip(&["-n", &ul, "link", "set", "br-ul", "up"])?;
        lab.attach(&lab.ns("c"), "ulc", CTL_ADDR)?;
        lab.cert(bin_dir, &["ca"])?;
        lab.cert(bin_dir, &["api", "--san", CTL_ADDR])?;
        for i in 1..=nodes {
            lab.attach(&lab.node(i), &format!("ul{i}"), &node_addr(i))?;
        }

        let etcd_dir = lab.dir.path().join("etcd");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", lab.ns("c")))
            .args(["--", "etcd", "--name", "bench", "--data-dir"])
            .arg(&etcd_dir)
            // Also on the underlay with the v2 API: the Docker overlay peer's
            // cluster store (dockerd 20.10 speaks etcd v2 only).
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:2379,http://{CTL_ADDR}:2379"),
            ])
            // dockerd's v2 client syncs its endpoints to the advertised URLs.
            .args(["--advertise-client-urls", &format!("http://{CTL_ADDR}:2379")])
            .arg("--enable-v2")
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "bench=http://127.0.0.1:2380"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        lab.etcd = Some(Proc::spawn("etcd", &mut cmd, &lab.log_path("etcd"))?);
        let ctl = lab.ns("c");
        let healthy = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let ctl = ctl.clone();
            async move {
                output_in(
                    &ctl,
                    "etcdctl",
                    &["--endpoints", "http://127.0.0.1:2379", "endpoint", "health"],
                )
                .await
                .is_ok()
            }
        })
        .await;
        if !healthy {
            bail!("etcd did not start:\n{}", lab.proc_log(&lab.etcd));
        }

        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", lab.ns("c")))
            .arg("--")
            .arg(bin_dir.join("berth-api"))
            .args(["--etcd-endpoints", "http://127.0.0.1:2379"])
            .args(["--listen", &format!("{CTL_ADDR}:7420")])
            .arg("--socket")
            .arg(&lab.socket)
            .args(lab.tls_flags("api"))
            .args(["--log", log_filter]);
        lab.api = Some(Proc::spawn("berth-api", &mut cmd, &lab.log_path("api"))?);
        let socket = lab.socket.clone();
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let socket = socket.clone();
            async move {
                match client::unix_channel(&socket).await {
                    Ok(ch) => pb::network_service_client::NetworkServiceClient::new(ch)
                        .list_networks(pb::ListNetworksRequest::default())
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        if !up {
            bail!("berth-api did not start:\n{}", lab.proc_log(&lab.api));
        }

        for i in 1..=nodes {
            lab.agents.push(None);
            lab.start_agent(i, bin_dir)?;
        }
        lab.wait_ready().await?;
        Ok(lab)
    }

    /// A lab namespace name: the tag then `suffix`.
    pub fn ns(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.tag)
    }

    /// The namespace of node `i` (1-based).
    pub fn node(&self, i: usize) -> String {
        self.ns(&format!("n{i}"))
    }

    /// The agents' prefix for sandbox namespaces.
    pub fn netns_prefix(&self) -> String {
        format!("{}-", self.tag)
    }

    /// The namespace name of berth sandbox `name` on its node.
    pub fn sandbox_ns(&self, name: &str) -> String {
        format!("{}{name}", self.netns_prefix())
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Keep every log under `dir` when the lab goes.
    pub fn keep_logs_in(&mut self, dir: &Path) {
        self.keep_logs = Some(dir.to_path_buf());
    }

    fn proc_log(&self, p: &Option<Proc>) -> String {
        p.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    /// Creates a namespace owned by the lab (deleted when the lab goes).
    pub fn add_ns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A new lab namespace joined to the underlay with `addr`/24 on its `eth0`.
    pub fn attach(&mut self, ns: &str, ul_side: &str, addr: &str) -> Result<()> {
        let ul = self.ns("ul");
        self.add_ns(ns)?;
        ip(&[
            "link", "add", ul_side, "netns", &ul, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", &ul, "link", "set", ul_side, "master", "br-ul", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])
    }

    /// Runs `berth cert ARGS… --dir PKI` with the bench's `berth` binary.
    fn cert(&self, bin_dir: &Path, args: &[&str]) -> Result<()> {
        let pki = self.dir.path().join("pki");
        std::fs::create_dir_all(&pki)?;
        let out = Command::new(bin_dir.join("berth"))
            .arg("cert")
            .args(args)
            .arg("--dir")
            .arg(&pki)
            .output()?;
        if !out.status.success() {
            bail!(
                "berth cert {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `--tls-ca … --tls-cert STEM.crt --tls-key STEM.key`.
    fn tls_flags(&self, stem: &str) -> Vec<String> {
        let pki = self.dir.path().join("pki");
        let p = |f: &str| pki.join(f).display().to_string();
        vec![
            "--tls-ca".into(),
            p("ca.crt"),
            "--tls-cert".into(),
            p(&format!("{stem}.crt")),
            "--tls-key".into(),
            p(&format!("{stem}.key")),
        ]
    }

    /// The client configuration for calling agents as berth-api does.
    pub fn agent_tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let pki = self.dir.path().join("pki");
        let read = |f: &str| std::fs::read(pki.join(f));
        let ca = tonic::transport::Certificate::from_pem(read("ca.crt")?);
        let id = tonic::transport::Identity::from_pem(read("api.crt")?, read("api.key")?);
        Ok(Some(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(id),
        ))
    }

    pub fn start_agent(&mut self, i: usize, bin_dir: &Path) -> Result<()> {
        let name = format!("node{i}");
        let addr = node_addr(i);
        let stem = format!("agent-{name}");
        if !self.dir.path().join("pki").join(format!("{stem}.crt")).exists() {
            self.cert(bin_dir, &["agent", "--node", &name, "--san", &addr])?;
        }
        let mut cmd = Command::new(bin_dir.join("berth-agent"));
        cmd.args(["--netns", &self.node(i), "--name", &name, "--address", &addr])
            .args(["--api", &format!("https://{CTL_ADDR}:7420")])
            .args(self.tls_flags(&stem))
            .args(["--listen", &format!("{addr}:{AGENT_PORT}")])
            .args(["--netns-prefix", &self.netns_prefix()])
            .arg("--state-dir")
            .arg(self.dir.path().join(&name))
            .arg("--local-socket")
            .arg(self.dir.path().join(format!("{name}-agent.sock")))
            .args(["--log", &self.log_filter]);
        let proc = Proc::spawn(&name, &mut cmd, &self.log_path(&name))?;
        self.agents[i - 1] = Some(proc);
        Ok(())
    }

    /// SIGTERM to node `i`'s agent; returns once it has exited.
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i - 1].take() {
            p.stop();
        }
    }

    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents[i - 1].as_ref().map(Proc::pid)
    }

    pub fn api_pid(&self) -> Option<u32> {
        self.api.as_ref().map(Proc::pid)
    }

    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.as_ref().map(Proc::pid)
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(&format!("node{i}"))).unwrap_or_default()
    }

    pub fn api_log(&self) -> String {
        self.proc_log(&self.api)
    }

    /// Waits until every node is ready.
    pub async fn wait_ready(&self) -> Result<()> {
        let socket = self.socket.clone();
        let n = self.nodes;
        let start = Instant::now();
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let socket = socket.clone();
            async move {
                let Ok(ch) = client::unix_channel(&socket).await else {
                    return false;
                };
                let Ok(r) = pb::node_service_client::NodeServiceClient::new(ch)
                    .list_nodes(pb::ListNodesRequest {})
                    .await
                else {
                    return false;
                };
                let nodes = r.into_inner().nodes;
                (1..=n).all(|i| nodes.iter().any(|x| x.name == format!("node{i}") && x.ready))
            }
        })
        .await;
        if !ok {
            let mut logs = format!("--- berth-api ---\n{}", self.api_log());
            for i in 1..=self.nodes {
                logs += &format!("--- node{i} ---\n{}", self.agent_log(i));
            }
            bail!("nodes not ready after {:?}:\n{logs}", start.elapsed());
        }
        Ok(())
    }

    /// Every namespace whose name starts with the tag (sandboxes, peers' containers, the lab's own).
    pub fn tagged_namespaces(&self) -> Vec<String> {
        netns::list()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.starts_with(&self.tag))
            .collect()
    }

    /// The temporary directory of this lab.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for a in self.agents.iter_mut() {
            if let Some(mut p) = a.take() {
                p.stop();
            }
        }
        if let Some(mut p) = self.api.take() {
            p.stop();
        }
        if let Some(mut p) = self.etcd.take() {
            p.stop();
        }
        // Sandboxes and peers' containers first, then the lab's namespaces.
        for ns in self.tagged_namespaces() {
            if !self.namespaces.contains(&ns) {
                let _ = netns::delete_sync(&ns);
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        for ns in self.tagged_namespaces() {
            let _ = netns::delete_sync(&ns);
        }
        if let Ok(entries) = std::fs::read_dir("/etc/netns") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.tag) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        if let Some(keep) = &self.keep_logs
            && std::fs::create_dir_all(keep).is_ok()
            && let Ok(entries) = std::fs::read_dir(self.dir.path())
        {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(&p, keep.join(e.file_name()));
                }
            }
        }
    }
}
