//! A whole berth cluster on one machine, as the local lab builds it: an
//! underlay bridge in its own namespace, a control namespace with etcd and
//! berth-api, and node namespaces each running a berth-agent (entered with
//! its `--netns` flag). All names start with a per-cluster tag so tests run
//! in parallel; everything is removed on drop, on failure too.
//!
//! Like the lab, a cluster runs with mutual TLS by default: a per-cluster
//! PKI made with `berth cert` (CA, the API server, one certificate per
//! agent, made when the agent first starts), agents registering over
//! `https://`. [`Cluster::cli`] goes through the API's Unix socket (root is
//! an admin there), so tests need no certificate; [`Cluster::pki`] holds the
//! certificates for tests that talk TCP. `ClusterOptions::insecure` starts
//! the old plain-HTTP cluster (`--insecure` on both binaries).
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::tls::Pki;
use crate::{Proc, bin, expect_ok, json_args, parse_json, run_cli, unique, wait_until};

/// Where the repair loop publishes its events (see docs/events.md).
const EVENTS_PREFIX: &str = "/berth/v1/events/";

/// The control namespace's underlay address (berth-api listens here).
pub const CTL_ADDR: &str = "192.168.205.2";

/// Underlay address of node `i` (1-based): node1 = .10, node2 = .11, …
pub fn node_addr(i: usize) -> String {
    format!("192.168.205.{}", 9 + i)
}

/// Runs `ip ARGS` (test set-up only; berth itself never runs `ip`).
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs ARGS inside network namespace `ns` (shared mount namespace).
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .args(args)
        .output()
        .expect("running nsenter")
}

/// Like [`in_ns`], failing the test unless it succeeds; returns stdout.
pub fn in_ns_ok(ns: &str, args: &[&str]) -> String {
    let out = in_ns(ns, args);
    assert!(
        out.status.success(),
        "{args:?} in {ns} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Extra command-line arguments for a cluster's processes (e.g. TLS
/// flags); the binaries let a repeated flag override an earlier one.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Appended to berth-api's arguments.
    pub api_args: Vec<String>,
    /// Appended to node i's agent arguments (`agent_args[i - 1]`).
    pub agent_args: Vec<Vec<String>>,
    /// No TLS: plain HTTP/2 on the underlay, both binaries with `--insecure`.
    pub insecure: bool,
}

pub struct Cluster {
    pub tag: String,
    opts: ClusterOptions,
    pub socket: PathBuf,
    pub nodes: usize,
    agents: Vec<Option<Proc>>,
    api: Option<Proc>,
    /// More berth-api replicas on the same etcd.
    replicas: Vec<Proc>,
    etcd: Option<Proc>,
    namespaces: Vec<String>,
    /// The cluster's certificates (`None` for an insecure cluster).
    pki: Option<Pki>,
    dir: TempDir,
}

impl Cluster {
    /// Brings up etcd, berth-api and `nodes` agents, and waits until every
    /// node is ready.
    pub fn start(nodes: usize) -> Result<Self> {
        Self::start_with(nodes, ClusterOptions::default())
    }

    /// Like [`Cluster::start`], with extra arguments for the processes.
    pub fn start_with(nodes: usize, opts: ClusterOptions) -> Result<Self> {
        let tag = unique("b");
        let dir = tempfile::Builder::new().prefix("berth-cluster").tempdir()?;
        let pki = if opts.insecure {
            None
        } else {
            let pki = Pki::new()?;
            pki.cert(&["api", "--san", CTL_ADDR])?;
            Some(pki)
        };
        let mut c = Self {
            pki,
            opts,
            socket: dir.path().join("api.sock"),
            tag: tag.clone(),
            nodes,
            agents: Vec::new(),
            api: None,
            replicas: Vec::new(),
            etcd: None,
            namespaces: Vec::new(),
            dir,
        };
        let ul = format!("{tag}ul");
        c.add_ns(&ul)?;
        ip(&["-n", &ul, "link", "add", "br-ul", "type", "bridge"])?;
        ip(&["-n", &ul, "link", "set", "br-ul", "up"])?;
        c.attach(&c.ctl(), "ulc", &format!("{CTL_ADDR}/24"))?;
        for i in 1..=nodes {
            c.attach(&c.node(i), &format!("ul{i}"), &format!("{}/24", node_addr(i)))?;
        }
        c.start_etcd()?;
        c.start_api()?;
        for i in 1..=nodes {
            c.agents.push(None);
            c.start_agent(i)?;
        }
        c.wait_ready(&(1..=nodes).collect::<Vec<_>>())?;
        Ok(c)
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A namespace joined to the underlay with `addr` on its `eth0`.
    fn attach(&mut self, ns: &str, ul_side: &str, addr: &str) -> Result<()> {
        let ul = format!("{}ul", self.tag);
        self.add_ns(ns)?;
        ip(&[
            "link", "add", ul_side, "netns", &ul, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", &ul, "link", "set", ul_side, "master", "br-ul", "up"])?;
        ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])
    }

    /// Adds an extra host on the underlay (not a berth node), e.g. to see
    /// which source address masqueraded traffic arrives with.
    pub fn add_underlay_host(&mut self, name: &str, addr: &str) -> Result<String> {
        let ns = format!("{}{name}", self.tag);
        self.attach(&ns, &format!("ul{name}"), &format!("{addr}/24"))?;
        Ok(ns)
    }

    pub fn ctl(&self) -> String {
        format!("{}c", self.tag)
    }

    /// The namespace of node `i` (1-based).
    pub fn node(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The namespace name of sandbox `name` on its node.
    pub fn sandbox_ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Starts etcd in the control namespace (its data survives restarts)
    /// and waits until it is healthy.
    pub fn start_etcd(&mut self) -> Result<()> {
        let etcd_dir = self.dir.path().join("etcd");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ctl()))
            .args(["--", "etcd", "--name", "t", "--data-dir"])
            .arg(&etcd_dir)
            .args([
                "--listen-client-urls",
                "http://127.0.0.1:2379",
                "--advertise-client-urls",
                "http://127.0.0.1:2379",
            ])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
            ])
            .args([
                "--initial-cluster",
                "t=http://127.0.0.1:2380",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]);
        self.etcd = Some(Proc::spawn_append(
            "etcd",
            &mut cmd,
            self.dir.path().join("etcd.log"),
        )?);
        let ctl = self.ctl();
        if !wait_until(Duration::from_secs(20), || {
            in_ns(
                &ctl,
                &[
                    "etcdctl",
                    "--endpoints",
                    "http://127.0.0.1:2379",
                    "endpoint",
                    "health",
                ],
            )
            .status
            .success()
        }) {
            bail!(
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Starts another berth-api replica on the same etcd (TCP port `port`
    /// in the control namespace, its own Unix socket); returns the socket.
    pub fn start_replica(&mut self, port: u16) -> Result<PathBuf> {
        let socket = self.dir.path().join(format!("api-{port}.sock"));
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ctl()))
            .arg("--")
            .arg(bin("berth-api"))
            .args([
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
                "--listen",
                &format!("{CTL_ADDR}:{port}"),
            ])
            .arg("--socket")
            .arg(&socket)
            .args(["--node-ttl", "4", "--repair-period", "2"])
            .args(self.api_security())
            .args(&self.opts.api_args);
        let log = self.dir.path().join(format!("api-{port}.log"));
        self.replicas
            .push(Proc::spawn_append("berth-api", &mut cmd, log)?);
        let api = format!("unix://{}", socket.display());
        if !wait_until(Duration::from_secs(20), || {
            run_cli(&api, &["network", "ls"]).status.success()
        }) {
            bail!("replica on port {port} did not start");
        }
        Ok(socket)
    }

    /// SIGKILL to etcd, as a crash.
    pub fn crash_etcd(&mut self) {
        if let Some(mut p) = self.etcd.take() {
            p.crash();
        }
    }

    /// SIGKILL to berth-api, as a crash.
    pub fn crash_api(&mut self) {
        if let Some(mut p) = self.api.take() {
            p.crash();
        }
    }

    /// Every key and value under berth's prefix in the cluster's etcd,
    /// except the last repair event (`events/repair`, written by the repair
    /// loop whenever it acts: not state a request leaves behind).
    pub fn etcd_dump(&self) -> Vec<(String, String)> {
        let out = in_ns(
            &self.ctl(),
            &[
                "etcdctl",
                "--endpoints",
                "http://127.0.0.1:2379",
                "get",
                "--prefix",
                "/berth/",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2 && !c[0].starts_with(EVENTS_PREFIX))
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }

    /// Starts berth-api in the control namespace and waits until it answers.
    pub fn start_api(&mut self) -> Result<()> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ctl()))
            .arg("--")
            .arg(bin("berth-api"))
            .args([
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
                "--listen",
                &format!("{CTL_ADDR}:7420"),
            ])
            .arg("--socket")
            .arg(&self.socket)
            .args([
                "--node-ttl",
                "4",
                "--repair-period",
                "2",
                "--log",
                "info,berth_api=debug",
            ])
            .args(self.api_security())
            .args(&self.opts.api_args);
        self.api = Some(Proc::spawn_append(
            "berth-api",
            &mut cmd,
            self.dir.path().join("api.log"),
        )?);
        if !wait_until(Duration::from_secs(20), || {
            self.cli(&["network", "ls"]).status.success()
        }) {
            bail!("berth-api did not start: {}", self.api_log());
        }
        Ok(())
    }

    /// SIGTERM to berth-api.
    pub fn stop_api(&mut self) {
        if let Some(mut p) = self.api.take() {
            p.stop();
        }
    }

    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let name = format!("node{i}");
        let addr = node_addr(i);
        let security = match &self.pki {
            Some(pki) => {
                let stem = format!("agent-{name}");
                if !pki.pair(&stem).0.exists() {
                    pki.cert(&["agent", "--node", &name, "--san", &addr])?;
                }
                pki.flags(&stem)
            }
            None => vec!["--insecure".to_string()],
        };
        let mut cmd = Command::new(bin("berth-agent"));
        cmd.args(["--netns", &self.node(i), "--name", &name, "--address", &addr])
            .args(["--api", &self.api_url(), "--listen", &format!("{addr}:7421")])
            .args(security)
            .args(["--netns-prefix", &format!("{}-", self.tag)])
            // Never forward sandbox DNS to the machine's real resolver.
            .args(["--dns-upstream", "none"])
            .arg("--state-dir")
            .arg(self.dir.path().join(&name))
            .arg("--local-socket")
            .arg(self.local_socket(i))
            .args(["--log", "info,berth_agent=debug"])
            .args(self.opts.agent_args.get(i - 1).into_iter().flatten());
        let log = self.dir.path().join(format!("{name}.log"));
        // Keep earlier runs' output: append a marker and reopen for append.
        let proc = Proc::spawn_append(&name, &mut cmd, log)?;
        self.agents[i - 1] = Some(proc);
        Ok(())
    }

    /// The Unix socket of node `i`'s local service (what berth-cni talks to).
    pub fn local_socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}-agent.sock"))
    }

    /// berth-api's TLS flags (or `--insecure`).
    fn api_security(&self) -> Vec<String> {
        match &self.pki {
            Some(pki) => pki.flags("api"),
            None => vec!["--insecure".to_string()],
        }
    }

    /// The cluster's certificates; panics for an insecure cluster.
    pub fn pki(&self) -> &Pki {
        self.pki
            .as_ref()
            .expect("an insecure cluster has no certificates")
    }

    /// Whether the cluster runs with mutual TLS (the default).
    pub fn tls(&self) -> bool {
        self.pki.is_some()
    }

    /// The URL of berth-api's TCP port (in the control namespace and on the
    /// underlay): `https://` unless the cluster is insecure.
    pub fn api_url(&self) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://{CTL_ADDR}:7420")
    }

    /// The URL of node `i`'s agent.
    pub fn agent_url(&self, i: usize) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://{}:7421", node_addr(i))
    }

    /// A gRPC client configuration presenting certificate `stem` (e.g.
    /// `api` to call agents as the API server does, `client-NAME` for the
    /// public API); `None` for an insecure cluster.
    pub fn client_tls(&self, stem: &str) -> Option<tonic::transport::ClientTlsConfig> {
        self.pki.as_ref().map(|p| p.client_tls(Some(stem)))
    }

    /// A client certificate `client-NAME` with `role` (admin, operator,
    /// viewer), made once; returns its stem.
    pub fn client_cert(&self, name: &str, role: &str) -> String {
        let stem = format!("client-{name}");
        let pki = self.pki();
        if !pki.pair(&stem).0.exists() {
            must(
                pki.cert(&["client", "--name", name, "--role", role]),
                "client cert",
            );
        }
        stem
    }

    /// A client configuration for the public API as an admin (certificate
    /// `client-admin`); `None` for an insecure cluster.
    pub fn admin_tls(&self) -> Option<tonic::transport::ClientTlsConfig> {
        self.pki.as_ref()?;
        self.client_tls(&self.client_cert("admin", "admin"))
    }

    /// A client configuration for calling agents as the API server does.
    pub fn api_tls(&self) -> Option<tonic::transport::ClientTlsConfig> {
        self.client_tls("api")
    }

    /// Runs `berth --api https://CTL:7420 --tls-… ARGS…` from the control
    /// namespace with the client certificate `stem`.
    pub fn cli_as(&self, stem: &str, args: &[&str]) -> Output {
        let (crt, key) = self.pki().pair(stem);
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ctl()))
            .arg("--")
            .arg(bin("berth"))
            .args(["--api", &self.api_url(), "--tls-ca"])
            .arg(self.pki().ca())
            .arg("--tls-cert")
            .arg(crt)
            .arg("--tls-key")
            .arg(key)
            .args(args)
            .output()
            .expect("running berth")
    }

    /// SIGTERM to node `i`'s agent.
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i - 1].take() {
            p.stop();
        }
    }

    /// SIGKILL to node `i`'s agent, as a crash.
    pub fn crash_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i - 1].take() {
            p.crash();
        }
    }

    pub fn wait_ready(&self, nodes: &[usize]) -> Result<()> {
        let ok = wait_until(Duration::from_secs(30), || {
            let out = self.cli(&["--output", "json", "node", "ls"]);
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            nodes.iter().all(|i| {
                v.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|n| n["Name"] == format!("node{i}").as_str() && n["Status"] == "ready")
                })
            })
        });
        if !ok {
            bail!("nodes {nodes:?} not ready:\n{}", self.logs());
        }
        Ok(())
    }

    /// The PID of the running berth-api.
    pub fn api_pid(&self) -> Option<u32> {
        self.api.as_ref().map(Proc::pid)
    }

    /// The PID of node `i`'s running agent.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i - 1)?.as_ref().map(Proc::pid)
    }

    pub fn api_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.log")).unwrap_or_default()
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{i}.log"))).unwrap_or_default()
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!("--- berth-api ---\n{}", self.api_log());
        for i in 1..=self.nodes {
            s += &format!("--- node{i} ---\n{}", self.agent_log(i));
        }
        s
    }

    /// Runs `berth --api unix://SOCKET ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_cli(&format!("unix://{}", self.socket.display()), args)
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        expect_ok(self.cli(args), args, || self.logs())
    }

    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        parse_json(&self.cli_ok(&json_args(args)), args)
    }

    /// Keys under berth's prefix in the cluster's etcd (without
    /// `events/repair`, as [`Cluster::etcd_dump`]).
    pub fn etcd_keys(&self) -> Vec<String> {
        let out = in_ns(
            &self.ctl(),
            &[
                "etcdctl",
                "--endpoints",
                "http://127.0.0.1:2379",
                "get",
                "--prefix",
                "--keys-only",
                "/berth/",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(EVENTS_PREFIX))
            .map(str::to_string)
            .collect()
    }

    /// Names of the network namespaces of this cluster's sandboxes.
    pub fn sandbox_namespaces(&self) -> Vec<String> {
        let prefix = format!("{}-", self.tag);
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in self.agents.iter_mut() {
            if let Some(mut p) = a.take() {
                p.stop();
            }
        }
        for ns in self.sandbox_namespaces() {
            let _ = ip(&["netns", "del", &ns]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        if let Some(mut p) = self.api.take() {
            p.stop();
        }
        for p in &mut self.replicas {
            p.stop();
        }
        if let Some(mut p) = self.etcd.take() {
            p.stop();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

impl Cluster {
    /// Waits for `f` to hold, failing with every log otherwise.
    pub fn eventually(&self, what: &str, f: impl FnMut() -> bool) {
        assert!(
            wait_until(Duration::from_secs(20), f),
            "timed out waiting for {what}\n{}",
            self.logs()
        );
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A context for `anyhow` results in tests.
pub fn must<T>(r: Result<T>, what: &str) -> T {
    r.context(what.to_string()).unwrap_or_else(|e| panic!("{e:?}"))
}
