//! Secure by default, with the real binaries: client roles per RPC (viewer
//! reads, operator changes networks and sandboxes, only admin execs or
//! removes nodes; every exec logged with who asked), an agent without a
//! certificate cannot register, a heartbeat cannot renew another node's
//! lease, plain listeners beyond loopback are refused unless `--insecure`,
//! and the Unix socket is 0660, group-owned, and admits only root, the
//! server's user and its group.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::registry_service_client::RegistryServiceClient;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use berth_tests::cluster::{CTL_ADDR, Cluster, ip, must, node_addr};
use berth_tests::tls::{channel, in_netns};
use berth_tests::{ApiServer, Etcd, Proc, bin, stderr, unique, wait_until};
use tonic::Code;

/// A refused CLI call: exit 1, nothing on stdout, the one-line error.
fn refused(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(out));
    assert!(out.stdout.is_empty(), "{what}: printed {:?}", out.stdout);
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    err
}

fn ok(c: &Cluster, out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}\n{}", stderr(&out), c.logs());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn roles_decide_per_rpc_and_exec_is_logged() {
    let c = must(Cluster::start(1), "cluster");
    let viewer = c.client_cert("vera", "viewer");
    let operator = c.client_cert("otto", "operator");
    let admin = c.client_cert("ada", "admin");
    c.cli_ok(&["sandbox", "create", "base", "--node", "node1"]);

    // Viewer: reads everything, changes nothing.
    for args in [
        &["network", "ls"][..],
        &["sandbox", "ls"],
        &["node", "ls"],
        &["sandbox", "inspect", "base"],
    ] {
        ok(&c, c.cli_as(&viewer, args), &format!("viewer {args:?}"));
    }
    for (args, rpc) in [
        (
            &["sandbox", "create", "v1", "--node", "node1"][..],
            "SandboxService/CreateSandbox",
        ),
        (&["network", "create", "vnet"], "NetworkService/CreateNetwork"),
        (&["sandbox", "rm", "base"], "SandboxService/RemoveSandbox"),
        (&["exec", "base", "--", "true"], "SandboxService/Exec"),
        (&["node", "rm", "node1", "--force"], "NodeService/RemoveNode"),
    ] {
        let err = refused(&c.cli_as(&viewer, args), &format!("viewer {args:?}"));
        assert!(
            err.contains(&format!(
                "the viewer vera (spiffe://berth/viewer/vera) may not call /berth.v1.{rpc}"
            )),
            "viewer {args:?}: {err}"
        );
    }

    // Operator: networks and sandboxes, but no exec and no node rm.
    ok(
        &c,
        c.cli_as(&operator, &["network", "create", "onet"]),
        "operator network create",
    );
    ok(
        &c,
        c.cli_as(
            &operator,
            &["sandbox", "create", "o1", "--node", "node1", "--network", "onet"],
        ),
        "operator sandbox create",
    );
    ok(
        &c,
        c.cli_as(&operator, &["network", "create", "onet2"]),
        "operator network create",
    );
    ok(
        &c,
        c.cli_as(&operator, &["network", "connect", "onet2", "o1"]),
        "operator connect",
    );
    ok(
        &c,
        c.cli_as(&operator, &["network", "disconnect", "onet2", "o1"]),
        "operator disconnect",
    );
    let err = refused(&c.cli_as(&operator, &["exec", "o1", "--", "id"]), "operator exec");
    assert!(
        err.contains("may not call /berth.v1.SandboxService/Exec: it needs an admin certificate"),
        "{err}"
    );
    let err = refused(
        &c.cli_as(&operator, &["node", "rm", "node1", "--force"]),
        "operator node rm",
    );
    assert!(err.contains("NodeService/RemoveNode"), "{err}");
    ok(
        &c,
        c.cli_as(&operator, &["sandbox", "rm", "o1"]),
        "operator sandbox rm",
    );
    ok(
        &c,
        c.cli_as(&operator, &["network", "rm", "onet", "onet2"]),
        "operator network rm",
    );

    // The codes behind those lines.
    let (url, v_tls, o_tls) = (c.api_url(), c.client_tls(&viewer), c.client_tls(&operator));
    let codes = in_netns(&c.ctl(), || async {
        let exec = |tls| async {
            let mut sb = SandboxServiceClient::new(channel(&url, tls));
            sb.exec(pb::ExecRequest {
                sandbox: "base".into(),
                command: vec!["true".into()],
            })
            .await
            .map(drop)
            .unwrap_err()
            .code()
        };
        let mut sb = SandboxServiceClient::new(channel(&url, v_tls.clone()));
        let create = sb
            .create_sandbox(pb::CreateSandboxRequest {
                name: "v2".into(),
                node: "node1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code();
        (create, exec(v_tls).await, exec(o_tls).await)
    });
    assert_eq!(
        codes,
        (
            Code::PermissionDenied,
            Code::PermissionDenied,
            Code::PermissionDenied
        )
    );

    // Refused requests left nothing behind.
    let keys = c.etcd_keys();
    for gone in [
        "/names/sandboxes/v1",
        "/names/sandboxes/v2",
        "/names/networks/vnet",
    ] {
        assert!(!keys.iter().any(|k| k.ends_with(gone)), "{gone} in {keys:?}");
    }
    assert!(c.cli_json(&["node", "ls"])[0]["Status"] == "ready");

    // Admin: exec, logged with the caller's identity; so is the socket's.
    let out = ok(
        &c,
        c.cli_as(&admin, &["exec", "base", "--", "ip", "-br", "addr"]),
        "admin exec",
    );
    assert!(out.contains("172.17.0.2/16"), "{out}");
    c.cli_ok(&["exec", "base", "--", "true"]);
    let log = c.api_log();
    let execs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" exec ") || l.ends_with(" exec"))
        .collect();
    assert!(
        execs
            .iter()
            .any(|l| l.contains("caller=admin ada (spiffe://berth/admin/ada)") && l.contains("\"ip\"")),
        "no exec log line naming ada: {execs:#?}"
    );
    assert!(
        execs.iter().any(|l| l.contains("caller=unix socket uid 0")),
        "no exec log line naming the socket's caller: {execs:#?}"
    );

    // A client certificate from before roles (spiffe://berth/client/NAME)
    // keeps the admin power it had.
    let pki = c.pki();
    let dir = pki.dir();
    let openssl = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=old", "-days", "1"])
        .arg("-CA")
        .arg(pki.ca())
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .args(["-addext", "subjectAltName=URI:spiffe://berth/client/old"])
        .args(["-addext", "extendedKeyUsage=clientAuth"])
        .args(["-addext", "basicConstraints=CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("client-old.key"))
        .arg("-out")
        .arg(dir.join("client-old.crt"))
        .output()
        .expect("openssl");
    assert!(openssl.status.success(), "openssl: {}", stderr(&openssl));
    ok(
        &c,
        c.cli_as("client-old", &["exec", "base", "--", "true"]),
        "legacy client exec",
    );
    assert!(
        c.api_log()
            .contains("caller=client old (spiffe://berth/client/old)")
    );
}

#[test]
fn an_agent_without_a_certificate_cannot_register() {
    let mut c = must(Cluster::start(1), "cluster");
    let rogue_addr = "192.168.205.60";
    let rogue = must(c.add_underlay_host("rogue", rogue_addr), "rogue host");
    // Raw gRPC with the CA but no client certificate: UNAUTHENTICATED.
    let (url, ca_only) = (c.api_url(), Some(c.pki().client_tls(None)));
    let codes = in_netns(&rogue, || async {
        let mut reg = RegistryServiceClient::new(channel(&url, ca_only));
        let register = reg
            .register(pb::RegisterRequest {
                name: "node1".into(),
                address: rogue_addr.into(),
                agent_url: format!("https://{rogue_addr}:7421"),
                mtu: 1500,
                routes: Vec::new(),
            })
            .await
            .unwrap_err();
        let state = reg
            .desired_state(pb::DesiredStateRequest { node: "node1".into() })
            .await
            .unwrap_err();
        let beat = reg
            .heartbeat(pb::HeartbeatRequest {
                name: "node1".into(),
                lease_id: 1,
            })
            .await
            .unwrap_err();
        (
            register.code(),
            state.code(),
            beat.code(),
            register.message().to_string(),
        )
    });
    assert_eq!(
        (codes.0, codes.1, codes.2),
        (
            Code::Unauthenticated,
            Code::Unauthenticated,
            Code::Unauthenticated
        ),
        "{codes:?}"
    );
    assert!(codes.3.contains("needs a client certificate"), "{codes:?}");

    // A real agent started without TLS (it must say --insecure to listen on
    // the underlay) never registers: the API's port speaks only mTLS.
    let state = c.dir().join("rogue-state");
    let mut cmd = Command::new(bin("berth-agent"));
    cmd.args(["--netns", &rogue, "--name", "rogue", "--address", rogue_addr])
        .args(["--api", &format!("http://{CTL_ADDR}:7420")])
        .args(["--listen", &format!("{rogue_addr}:7421"), "--insecure"])
        .args(["--dns-upstream", "none", "--netns-prefix", &format!("{}-", c.tag)])
        .arg("--state-dir")
        .arg(&state);
    let mut agent = must(
        Proc::spawn("rogue", &mut cmd, c.dir().join("rogue.log")),
        "rogue agent",
    );
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log();
    assert!(
        log.contains("--insecure: serving the agent API without TLS"),
        "{log}"
    );
    assert!(!c.cli_ok(&["node", "ls"]).contains("rogue"));
    assert!(!c.etcd_keys().iter().any(|k| k.contains("rogue")));
    assert!(
        log.contains("registration failed") || log.contains("first sync failed"),
        "no failure logged: {log}"
    );
    agent.stop();
    c.wait_ready(&[1]).unwrap();
}

/// node2's lease id, from its node record in etcd.
fn lease_of(c: &Cluster, node: &str) -> i64 {
    let key = format!("/berth/v1/nodes/{node}");
    let (_, v) = c
        .etcd_dump()
        .into_iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no {key}"));
    let v: serde_json::Value = serde_json::from_str(&v).expect("node record");
    v["lease"].as_i64().expect("lease")
}

#[test]
fn a_heartbeat_cannot_renew_another_nodes_lease() {
    let mut c = must(Cluster::start(2), "cluster");
    let lease2 = lease_of(&c, "node2");
    assert_ne!(lease2, lease_of(&c, "node1"));
    c.stop_agent(2);
    // node1's agent certificate, from node1, with node2's lease: never
    // renews it, under node2's name (not its node) or its own (not its lease).
    let (url, tls) = (c.api_url(), c.client_tls("agent-node1"));
    let started = std::time::Instant::now();
    let seen = in_netns(&c.node(1), || async {
        let mut reg = RegistryServiceClient::new(channel(&url, tls));
        let mut seen = Vec::new();
        while started.elapsed() < Duration::from_secs(8) {
            for name in ["node2", "node1"] {
                let r = reg
                    .heartbeat(pb::HeartbeatRequest {
                        name: name.into(),
                        lease_id: lease2,
                    })
                    .await;
                let s = r.expect_err("a foreign lease was renewed");
                seen.push((name, s.code(), s.message().to_string()));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        seen
    });
    for (name, code, msg) in &seen {
        match *name {
            "node2" => {
                assert_eq!(*code, Code::PermissionDenied, "{msg}");
                assert!(msg.contains("may not act for node node2"), "{msg}");
            }
            _ => {
                assert_eq!(*code, Code::NotFound, "{msg}");
                assert!(msg.contains("is not its current registration"), "{msg}");
            }
        }
    }
    // So node2's lease lapsed (TTL 4 s) although heartbeats named it.
    let nodes = c.cli_json(&["node", "ls"]);
    let node2 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Name"] == "node2")
        .unwrap();
    assert_ne!(node2["Status"], "ready", "{nodes}");
    c.wait_ready(&[1]).unwrap();
}

/// A throwaway namespace for processes that must refuse to start.
struct Ns(String);
impl Ns {
    fn new() -> Self {
        let name = unique("br");
        ip(&["netns", "add", &name]).unwrap();
        ip(&["-n", &name, "link", "set", "lo", "up"]).unwrap();
        Ns(name)
    }
}
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Runs `cmd` until it exits (at most 20 s): (exit code, stderr).
fn exit_of(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let ok = wait_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not exit");
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plain_listeners_beyond_loopback_need_insecure() {
    let ns = Ns::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // An agent without TLS flags on its default --listen 0.0.0.0:7421.
    let (code, err) = exit_of(
        Command::new(bin("berth-agent"))
            .args(["--netns", &ns.0, "--name", "node1", "--address", &node_addr(1)])
            .arg("--state-dir")
            .arg(&state),
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("berth-agent: refusing to serve --listen 0.0.0.0:7421 without TLS")
            && err.contains("--tls-ca, --tls-cert and --tls-key")
            && err.contains("--insecure"),
        "{err}"
    );
    assert!(!state.exists(), "the agent got past its checks");

    // berth-api: a plain listener on an underlay address, plain etcd beyond loopback.
    let sock = dir.path().join("api.sock");
    let api = |args: &[&str]| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.0))
            .arg("--")
            .arg(bin("berth-api"))
            .arg("--socket")
            .arg(&sock)
            .args(args);
        cmd
    };
    let (code, err) = exit_of(&mut api(&["--listen", "192.168.205.2:7420"]));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("berth-api: refusing to serve --listen 192.168.205.2:7420 without TLS"),
        "{err}"
    );
    let (code, err) = exit_of(&mut api(&[
        "--listen",
        "",
        "--etcd-endpoints",
        "http://192.168.205.2:2379",
    ]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("berth-api: refusing plain --etcd-endpoints http://192.168.205.2:2379"),
        "{err}"
    );
    assert!(!sock.exists());

    // With --insecure both start, and say so in their log.
    let port = berth_tests::free_port();
    let mut cmd = Command::new(bin("berth-agent"));
    cmd.args(["--netns", &ns.0, "--name", "node1", "--address", &node_addr(1)])
        .args(["--listen", &format!("0.0.0.0:{port}"), "--insecure"])
        .args(["--api", "http://127.0.0.1:9", "--dns-upstream", "none"])
        .arg("--state-dir")
        .arg(&state);
    let mut agent = must(
        Proc::spawn("agent", &mut cmd, dir.path().join("agent.log")),
        "agent",
    );
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log()
            .contains("agent listening")),
        "{}",
        agent.log()
    );
    assert!(agent.alive());
    assert!(
        agent
            .log()
            .contains("--insecure: serving the agent API without TLS"),
        "{}",
        agent.log()
    );
    agent.stop();
    let mut api = must(
        Proc::spawn(
            "api",
            &mut api(&["--listen", &format!("0.0.0.0:{port}"), "--insecure"]),
            dir.path().join("api.log"),
        ),
        "api",
    );
    assert!(
        wait_until(Duration::from_secs(10), || api.log().contains("without TLS")),
        "{}",
        api.log()
    );
    assert!(
        api.log().contains("--insecure: serving 0.0.0.0:"),
        "{}",
        api.log()
    );
    api.stop();
}

/// `berth --api unix://SOCK network ls` as uid/gid with supplementary `groups`.
fn cli_as_user(api: &ApiServer, uid: u32, gid: u32, groups: &str) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.args(["--groups", groups]);
    }
    cmd.arg("--")
        .arg(bin("berth"))
        .args(["--api", &api.api_arg(), "network", "ls"])
        .output()
        .expect("setpriv")
}

#[test]
fn unix_socket_is_0660_and_admits_its_group_only() {
    let etcd = must(Etcd::start(), "etcd");
    let prefix = format!("/{}", unique("sock"));
    let api = must(
        ApiServer::start(&etcd, &prefix, &["--socket-group", "nogroup"]),
        "api",
    );
    let meta = std::fs::metadata(&api.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode {:o}", meta.mode());
    assert_eq!(meta.gid(), 65534, "socket group");
    // Let other users reach the socket's directory (a tempdir, 0700).
    let parent = api.socket.parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();

    // nobody:nogroup (the socket's group) and a user with nogroup as a
    // supplementary group are admins.
    let out = cli_as_user(&api, 65534, 65534, "");
    assert!(
        out.status.success(),
        "nogroup: {}\n{}",
        stderr(&out),
        api.proc.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bridge"));
    let out = cli_as_user(&api, 1, 1, "65534");
    assert!(out.status.success(), "supplementary nogroup: {}", stderr(&out));
    // Anyone else cannot even connect (mode 0660) …
    let out = cli_as_user(&api, 65534, 1, "");
    let err = refused(&out, "daemon group");
    assert!(err.contains("Permission denied"), "{err}");
    // … and if someone loosens the mode, the server refuses them itself.
    std::fs::set_permissions(&api.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = refused(&cli_as_user(&api, 65534, 1, ""), "daemon group, socket 0666");
    assert!(
        err.contains("unix socket: uid 65534 is neither root, the API server's user (uid 0) nor in its group (gid 65534)"),
        "{err}"
    );
    // Root always is an admin.
    assert!(api.cli(&["network", "ls"]).status.success());
}
