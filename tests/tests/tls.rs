//! Mutual TLS on every TCP connection, with the real binaries in node
//! namespaces: agents register over mTLS, the API server reaches agents over
//! mTLS, the CLI works with a client certificate; and what is refused.
//!
//! What a refusal looks like, as observed here (tonic 0.14, rustls, TLS 1.3):
//! - A client without a certificate: the handshake completes (client
//!   authentication is optional at the TLS layer) and every berth service
//!   answers `UNAUTHENTICATED`.
//! - A client with a certificate from another CA: the
//!   server aborts the handshake. With TLS 1.3 the client learns it only
//!   when it next reads or writes, so the call fails at the transport with
//!   `UNAVAILABLE` ("received fatal alert: CertificateRequired"),
//!   `CANCELLED` ("connection closed") or `UNKNOWN` ("broken pipe"),
//!   depending on timing — never with an answer from the service. The CLI
//!   exits 1 and says so.
//! - A certificate the CA signed but with the wrong role: the handshake
//!   succeeds and the call is `PERMISSION_DENIED`, naming the role.
//! - Plain HTTP/2 to a TLS port: the call fails at the transport
//!   (`UNAVAILABLE` or `UNKNOWN`/`INTERNAL` h2 errors), never answered.
//!
//! Also: bad TLS flags stop every binary at start with a clear message,
//! and the configuration file layer (flags > env > file > defaults).
use std::process::Command;
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_service_client::AgentServiceClient;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_proto::v1::registry_service_client::RegistryServiceClient;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use berth_tests::cluster::{CTL_ADDR, Cluster, ip, must, node_addr};
use berth_tests::tls::{Pki, channel, in_netns};
use berth_tests::{bin, stderr, unique};
use tonic::Code;

const API_PORT: u16 = 7420;
const AGENT_PORT: u16 = 7421;

fn api_url() -> String {
    format!("https://{CTL_ADDR}:{API_PORT}")
}

fn agent_url(i: usize) -> String {
    format!("https://{}:{AGENT_PORT}", node_addr(i))
}

/// A cluster PKI of its own, for tests without a cluster: CA, the API
/// server (its underlay address), agents node1..nodeN (theirs), client
/// alice (admin).
fn pki(nodes: usize) -> Pki {
    let pki = must(Pki::new(), "cluster CA");
    must(pki.cert(&["api", "--san", CTL_ADDR]), "api cert");
    for i in 1..=nodes {
        let node = format!("node{i}");
        must(
            pki.cert(&["agent", "--node", &node, "--san", &node_addr(i)]),
            "agent cert",
        );
    }
    must(
        pki.cert(&["client", "--name", "alice", "--role", "admin"]),
        "client cert",
    );
    pki
}

/// A second CA, with an admin client mallory and an agent node1: valid
/// certificates the cluster must not trust.
fn other_ca() -> Pki {
    let other = must(Pki::new(), "other CA");
    must(
        other.cert(&["client", "--name", "mallory", "--role", "admin"]),
        "other client cert",
    );
    must(
        other.cert(&["agent", "--node", "node1", "--san", &node_addr(1)]),
        "other agent cert",
    );
    other
}

/// `berth --api https://CTL:7420 --tls-ca … ARGS…` run in `ns`.
fn cli_in(ns: &str, tls: &[String], args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(bin("berth"))
        .args(["--api", &api_url()])
        .args(tls)
        .args(args)
        .output()
        .expect("running berth")
}

fn client_flags(pki: &Pki, stem: Option<&str>) -> Vec<String> {
    let mut f = vec!["--tls-ca".to_string(), pki.ca().display().to_string()];
    if let Some(stem) = stem {
        let (crt, key) = pki.pair(stem);
        f.extend([
            "--tls-cert".to_string(),
            crt.display().to_string(),
            "--tls-key".to_string(),
            key.display().to_string(),
        ]);
    }
    f
}

/// Every AgentService RPC, with harmless arguments, as `who` sees it.
async fn agent_codes(url: &str, tls: Option<tonic::transport::ClientTlsConfig>) -> Vec<(&'static str, Code)> {
    let mut c = AgentServiceClient::new(channel(url, tls));
    let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code()).unwrap_or(Code::Ok);
    vec![
        (
            "Exec",
            code(
                c.exec(pb::AgentExecRequest {
                    command: vec!["true".into()],
                    ..Default::default()
                })
                .await
                .map(drop),
            ),
        ),
        ("Status", code(c.status(pb::StatusRequest {}).await.map(drop))),
        (
            "EnsureSandbox",
            code(
                c.ensure_sandbox(pb::EnsureSandboxRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "RemoveSandbox",
            code(
                c.remove_sandbox(pb::RemoveAgentSandboxRequest {
                    sandbox_id: "0".repeat(64),
                    netns: "no-such-sandbox".into(),
                    generation: 0,
                })
                .await
                .map(drop),
            ),
        ),
        (
            "SetOverlayPeers",
            code(c.set_overlay_peers(pb::OverlayPeers::default()).await.map(drop)),
        ),
        ("Sync", code(c.sync(pb::NodeState::default()).await.map(drop))),
    ]
}

/// The codes a call gets when the server aborts the TLS handshake: tonic
/// reports the transport failure as UNAVAILABLE ("received fatal alert:
/// CertificateRequired"), CANCELLED ("connection closed") or UNKNOWN
/// ("broken pipe"), depending on when the client notices.
fn handshake_refused(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Cancelled | Code::Unknown)
}

fn all(codes: &[(&str, Code)], want: Code) -> bool {
    codes.iter().all(|(_, c)| *c == want)
}

#[test]
fn mutual_tls_cluster() {
    // The harness runs clusters with mutual TLS by default.
    let c = must(Cluster::start(2), "starting a TLS cluster");
    let pki = c.pki();
    let other = other_ca();
    c.client_cert("alice", "admin");
    // Agents registered (the API's TCP port speaks only mTLS) with https URLs.
    let nodes = c.cli_json(&["node", "ls"]);
    for i in 1..=2 {
        let n = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["Name"] == format!("node{i}").as_str())
            .unwrap_or_else(|| panic!("node{i} missing: {nodes}"));
        assert_eq!(n["Status"], "ready");
        assert_eq!(n["Agent"], agent_url(i).as_str());
    }

    // The CLI with a client certificate, over TCP from node1's namespace:
    // sandbox create and exec on node2 go API → agent over mTLS.
    let alice = client_flags(pki, Some("client-alice"));
    let out = cli_in(
        &c.node(1),
        &alice,
        &["sandbox", "create", "t1", "--node", "node2"],
    );
    assert!(out.status.success(), "create: {}\n{}", stderr(&out), c.logs());
    let out = cli_in(&c.node(1), &alice, &["exec", "t1", "--", "ip", "-br", "addr"]);
    assert!(out.status.success(), "exec: {}\n{}", stderr(&out), c.logs());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("172.17.0.2/16"), "{text}");
    // The Unix socket stays plain.
    assert!(c.cli_ok(&["sandbox", "ls"]).contains("t1"));

    // No certificate: UNAUTHENTICATED from the service.
    let out = cli_in(&c.node(1), &client_flags(pki, None), &["network", "ls"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("client certificate"), "{}", stderr(&out));
    // Refused at the handshake: another CA's certificate.
    let mut flags = client_flags(pki, None);
    let (crt, key) = other.pair("client-mallory");
    flags.extend([
        "--tls-cert".into(),
        crt.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]);
    let out = cli_in(&c.node(1), &flags, &["network", "ls"]);
    assert_eq!(out.status.code(), Some(1), "another CA: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "another CA");
    let err = stderr(&out);
    assert!(
        err.contains("refuses clients without a certificate"),
        "another CA: {err}"
    );

    let node1 = c.node(1);
    in_netns(&node1, || async {
        // The same through raw gRPC. No certificate: UNAUTHENTICATED everywhere.
        let mut api = NetworkServiceClient::new(channel(&api_url(), Some(pki.client_tls(None))));
        let s = api
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "API, no certificate: {s:?}");
        let codes = agent_codes(&agent_url(2), Some(pki.client_tls(None))).await;
        assert!(
            codes.iter().all(|(_, c)| *c == Code::Unauthenticated),
            "agent, no certificate: {codes:?}"
        );
        // Another CA: the status code a refused handshake gives.
        let ca = tonic::transport::Certificate::from_pem(std::fs::read(pki.ca()).unwrap());
        let (crt, key) = other.pair("client-mallory");
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(tonic::transport::Identity::from_pem(
                std::fs::read(crt).unwrap(),
                std::fs::read(key).unwrap(),
            ));
        let mut api = NetworkServiceClient::new(channel(&api_url(), Some(tls.clone())));
        let s = api
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .unwrap_err();
        assert!(handshake_refused(s.code()), "API, another CA: {s:?}");
        let codes = agent_codes(&agent_url(2), Some(tls)).await;
        assert!(
            codes.iter().all(|(_, c)| handshake_refused(*c)),
            "agent, another CA: {codes:?}"
        );
        // Another CA's agent certificate for node1 is no better.
        let ca = tonic::transport::Certificate::from_pem(std::fs::read(pki.ca()).unwrap());
        let (crt, key) = other.pair("agent-node1");
        let forged = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(tonic::transport::Identity::from_pem(
                std::fs::read(crt).unwrap(),
                std::fs::read(key).unwrap(),
            ));
        let codes = agent_codes(&agent_url(2), Some(forged)).await;
        assert!(
            codes.iter().all(|(_, c)| handshake_refused(*c)),
            "forged agent cert: {codes:?}"
        );

        // Plain HTTP/2 to the TLS ports: never answered.
        let mut api = NetworkServiceClient::new(channel(&format!("http://{CTL_ADDR}:{API_PORT}"), None));
        let s = api
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal),
            "plain to API: {s:?}"
        );
        let plain = format!("http://{}:{AGENT_PORT}", node_addr(2));
        for (rpc, code) in agent_codes(&plain, None).await {
            assert!(
                matches!(code, Code::Unavailable | Code::Unknown | Code::Internal),
                "plain {rpc} to agent: {code:?}"
            );
        }

        // Signed by the CA, wrong role: PERMISSION_DENIED on every agent RPC —
        // node1's agent certificate against node2, and a client certificate.
        for stem in ["agent-node1", "client-alice"] {
            let codes = agent_codes(&agent_url(2), Some(pki.client_tls(Some(stem)))).await;
            assert!(all(&codes, Code::PermissionDenied), "{stem} → agent: {codes:?}");
        }
        let mut agent =
            AgentServiceClient::new(channel(&agent_url(2), Some(pki.client_tls(Some("agent-node1")))));
        let s = agent
            .exec(pb::AgentExecRequest {
                command: vec!["id".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(s.message().contains("spiffe://berth/agent/node1"), "{s:?}");

        // The API server's certificate is what agents accept.
        let codes = agent_codes(&agent_url(2), Some(pki.client_tls(Some("api")))).await;
        assert_eq!(codes[1], ("Status", Code::Ok), "{codes:?}");

        // An agent certificate is not a client of the public API (no exec on
        // other nodes through the API server) …
        let agent_tls = Some(pki.client_tls(Some("agent-node1")));
        let mut api = NetworkServiceClient::new(channel(&api_url(), agent_tls.clone()));
        let s = api
            .list_networks(pb::ListNetworksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let mut sb = SandboxServiceClient::new(channel(&api_url(), agent_tls.clone()));
        let s = sb
            .exec(pb::ExecRequest {
                sandbox: "t1".into(),
                command: vec!["id".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        // … and acts in the registry only for its own node.
        let mut reg = RegistryServiceClient::new(channel(&api_url(), agent_tls));
        let s = reg
            .register(pb::RegisterRequest {
                name: "node2".into(),
                address: node_addr(1),
                agent_url: agent_url(1),
                mtu: 1500,
                routes: Vec::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let s = reg
            .desired_state(pb::DesiredStateRequest { node: "node2".into() })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let s = reg
            .heartbeat(pb::HeartbeatRequest {
                name: "node2".into(),
                lease_id: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        let s = reg
            .register(pb::RegisterRequest {
                name: "node1".into(),
                address: node_addr(1),
                agent_url: format!("http://{}:{AGENT_PORT}", node_addr(1)),
                mtu: 1500,
                routes: Vec::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("https://"), "{s:?}");
        // A client certificate is not an agent.
        let mut reg =
            RegistryServiceClient::new(channel(&api_url(), Some(pki.client_tls(Some("client-alice")))));
        let s = reg
            .desired_state(pb::DesiredStateRequest { node: "node1".into() })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    });

    // Nothing above disturbed the cluster.
    c.wait_ready(&[1, 2]).unwrap();
    let out = cli_in(&c.node(1), &alice, &["sandbox", "rm", "t1"]);
    assert!(out.status.success(), "rm: {}\n{}", stderr(&out), c.logs());
}

/// Runs a binary and returns (exit code, stderr) once it exits by itself.
fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (st.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway namespace for agents that must refuse to start (so that a
/// regression could not touch the root namespace).
struct Ns(String);
impl Ns {
    fn new() -> Self {
        let name = unique("bt");
        ip(&["netns", "add", &name]).unwrap();
        Ns(name)
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

#[test]
fn bad_tls_flags_stop_the_binaries() {
    let (pki, other) = (pki(1), other_ca());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let api = |extra: Vec<String>| {
        let mut cmd = Command::new(bin("berth-api"));
        cmd.args([
            "--etcd-endpoints",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--socket")
        .arg(&sock)
        .args(extra);
        run_to_exit(&mut cmd)
    };
    let ca = pki.ca().display().to_string();
    let (code, err) = api(vec!["--tls-ca".into(), ca.clone()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("missing --tls-cert, --tls-key"), "{err}");
    let (code, err) = api(pki.flags("agent-node1"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("the certificate is for the agent of node node1") && err.contains("spiffe://berth/api"),
        "{err}"
    );
    let mut f = pki.flags("api");
    f[1] = other.ca().display().to_string();
    let (code, err) = api(f);
    assert_eq!(code, Some(1));
    assert!(err.contains("not signed by the CA"), "{err}");
    let mut f = pki.flags("api");
    f[5] = dir.path().join("missing.key").display().to_string();
    let (code, err) = api(f);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot read --tls-key"), "{err}");
    let (code, err) = api(vec![
        "--etcd-cert".into(),
        ca.clone(),
        "--etcd-key".into(),
        ca.clone(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("need --etcd-ca"), "{err}");

    let ns = Ns::new();
    let agent = |extra: Vec<String>| {
        let mut cmd = Command::new(bin("berth-agent"));
        cmd.args(["--netns", &ns.0, "--name", "node1", "--address", &node_addr(1)])
            .args(["--listen", "127.0.0.1:7421"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra);
        run_to_exit(&mut cmd)
    };
    let https_api = ["--api".to_string(), api_url()];
    let (code, err) = agent([pki.flags("api"), https_api.to_vec()].concat());
    assert_eq!(code, Some(1));
    assert!(
        err.contains("for the api server") && err.contains("agent/node1"),
        "{err}"
    );
    let (code, err) = agent(pki.flags("agent-node1"));
    assert_eq!(code, Some(1));
    assert!(err.contains("use an https:// URL"), "{err}");
    let (code, err) = agent(https_api.to_vec());
    assert_eq!(code, Some(1));
    assert!(err.contains("https needs --tls-ca"), "{err}");
    assert!(
        !dir.path().join("state").exists(),
        "the agent got past its checks"
    );

    // The CLI: argument-level mistakes.
    let out = Command::new(bin("berth"))
        .args(["--api", "http://127.0.0.1:9", "--tls-ca", &ca, "network", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("plain http but TLS flags"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(bin("berth"))
        .args(["--api", "https://127.0.0.1:9", "network", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("give --tls-ca"), "{}", stderr(&out));
}

#[test]
fn config_files_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin("berth"));
        cmd.args(args).env_remove("BERTH_API").env_remove("BERTH_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    std::fs::write(
        &file,
        "api = \"unix:///nonexistent/from-file.sock\"\noutput = \"json\"\n",
    )
    .unwrap();
    let f = file.display().to_string();
    // file > default
    let out = run(&["--config", &f, "node", "ls"], &[]);
    assert!(stderr(&out).contains("from-file.sock"), "{}", stderr(&out));
    let out = run(&["node", "ls"], &[("BERTH_CONFIG", &f)]);
    assert!(stderr(&out).contains("from-file.sock"), "{}", stderr(&out));
    // env > file
    let env = [("BERTH_API", "unix:///nonexistent/from-env.sock")];
    let out = run(&["--config", &f, "node", "ls"], &env);
    assert!(stderr(&out).contains("from-env.sock"), "{}", stderr(&out));
    // flag > env
    let out = run(
        &[
            "--config",
            &f,
            "--api",
            "/nonexistent/from-flag.sock",
            "node",
            "ls",
        ],
        &env,
    );
    assert!(stderr(&out).contains("from-flag.sock"), "{}", stderr(&out));

    // Unknown keys and bad values are refused, for every binary (exit 2).
    std::fs::write(&file, "api = \"x:1\"\nnode-ttl = 5\n").unwrap();
    let out = run(&["--config", &f, "node", "ls"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("config file {f}: unknown key 'node-ttl'")),
        "{}",
        stderr(&out)
    );
    for (binary, body, want) in [
        (
            "berth-api",
            "node-ttl = \"soon\"\n",
            "key 'node-ttl': invalid value 'soon'",
        ),
        (
            "berth-api",
            "etcd_prefix = \"/x\"\n",
            "unknown key 'etcd_prefix' (did you mean 'etcd-prefix'?)",
        ),
        (
            "berth-agent",
            "mtu = 1500\nname = [\"a\"]\n",
            "key 'name': takes one value",
        ),
        (
            "berth-agent",
            "tls-ca = \"/x\"\nlisten-addr = \"0.0.0.0:1\"\n",
            "unknown key 'listen-addr'",
        ),
    ] {
        std::fs::write(&file, body).unwrap();
        let (code, err) = run_to_exit(Command::new(bin(binary)).args(["--config", &f]));
        assert_eq!(code, Some(2), "{binary} {body}: {err}");
        assert!(err.contains(want), "{binary} {body}: {err}");
    }
    // A file can carry what would otherwise be a required flag; the flag
    // still wins (the agent then stops at the TLS check, before any work).
    std::fs::write(
        &file,
        "name = \"from-file\"\naddress = \"192.168.205.10\"\napi = \"https://192.168.205.2:7420\"\n",
    )
    .unwrap();
    let ns = Ns::new();
    let (code, err) = run_to_exit(
        Command::new(bin("berth-agent"))
            .args(["--config", &f, "--netns", &ns.0, "--listen", "127.0.0.1:7421"])
            .arg("--state-dir")
            .arg(dir.path().join("state")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("https needs --tls-ca"), "{err}");
}

/// A one-member etcd on loopback with TLS and client certificate
/// authentication (its own CA, as docs/security.md advises), and berth-api
/// talking to it with --etcd-ca/--etcd-cert/--etcd-key.
#[test]
fn etcd_over_tls() {
    let etcd_pki = must(Pki::new(), "etcd CA");
    must(
        etcd_pki.cert(&["etcd", "--name", "etcd1", "--san", "127.0.0.1"]),
        "etcd server cert",
    );
    must(
        etcd_pki.cert(&["etcd", "--name", "berth-api"]),
        "etcd client cert",
    );
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (berth_tests::free_port(), berth_tests::free_port());
    let url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let (crt, key) = etcd_pki.pair("etcd-etcd1");
    let mut cmd = berth_tests::etcd_command(&dir.path().join("data"), &url, &peer_url);
    cmd.arg("--cert-file")
        .arg(&crt)
        .arg("--key-file")
        .arg(&key)
        .arg("--trusted-ca-file")
        .arg(etcd_pki.ca())
        .arg("--client-cert-auth");
    let _etcd = must(
        berth_tests::Proc::spawn("etcd", &mut cmd, dir.path().join("etcd.log")),
        "etcd",
    );
    let (ccrt, ckey) = etcd_pki.pair("etcd-berth-api");
    let ca = etcd_pki.ca().display().to_string();
    let healthy = berth_tests::wait_until(Duration::from_secs(20), || {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &url, "--cacert", &ca])
            .arg("--cert")
            .arg(&ccrt)
            .arg("--key")
            .arg(&ckey)
            .args(["endpoint", "health"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    assert!(healthy, "etcd with TLS did not come up");

    let prefix = format!("/{}", unique("etls"));
    let etcd_flags = |with_cert: bool| {
        let mut v = vec!["--etcd-ca".to_string(), ca.clone()];
        if with_cert {
            v.extend([
                "--etcd-cert".to_string(),
                ccrt.display().to_string(),
                "--etcd-key".to_string(),
                ckey.display().to_string(),
            ]);
        }
        v
    };
    let sock = dir.path().join("api.sock");
    let start = |with_cert: bool, sock: &std::path::Path| {
        let mut cmd = Command::new(bin("berth-api"));
        cmd.args(["--etcd-endpoints", &url, "--etcd-prefix", &prefix, "--listen", ""])
            .arg("--socket")
            .arg(sock)
            .args(etcd_flags(with_cert));
        must(
            berth_tests::Proc::spawn(
                "berth-api",
                &mut cmd,
                dir.path().join(format!("api-{with_cert}.log")),
            ),
            "berth-api",
        )
    };
    let api = start(true, &sock);
    let cli = |sock: &std::path::Path| {
        Command::new(bin("berth"))
            .args(["--api", &format!("unix://{}", sock.display()), "network", "ls"])
            .output()
            .unwrap()
    };
    let ok = berth_tests::wait_until(Duration::from_secs(20), || {
        sock.exists() && cli(&sock).status.success()
    });
    assert!(ok, "berth-api over etcd TLS did not serve:\n{}", api.log());
    assert!(String::from_utf8_lossy(&cli(&sock).stdout).contains("bridge"));

    // Without a client certificate etcd refuses it: the built-in networks
    // are never written and the socket never answers.
    let sock2 = dir.path().join("api2.sock");
    let mut api2 = start(false, &sock2);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!cli(&sock2).status.success());
    assert!(api2.alive());
    assert!(
        api2.log().contains("cannot ensure built-in networks"),
        "{}",
        api2.log()
    );
    api2.stop();
}

#[test]
fn agent_certificates_carry_the_node_address() {
    // What `berth cert` writes is what openssl sees: the role URI, the SANs,
    // the key usages, and a chain to the CA.
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl binary");
        return;
    }
    let pki = pki(1);
    let (crt, key) = pki.pair("agent-node1");
    let text = openssl(&["x509", "-noout", "-text", "-in", &crt.display().to_string()]);
    assert!(text.contains("URI:spiffe://berth/agent/node1"), "{text}");
    assert!(text.contains(&format!("IP Address:{}", node_addr(1))), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    let verify = openssl(&[
        "verify",
        "-CAfile",
        &pki.ca().display().to_string(),
        &crt.display().to_string(),
    ]);
    assert!(verify.contains(": OK"), "{verify}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (ccrt, _) = pki.pair("client-alice");
    let text = openssl(&["x509", "-noout", "-text", "-in", &ccrt.display().to_string()]);
    assert!(text.contains("URI:spiffe://berth/admin/alice"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
