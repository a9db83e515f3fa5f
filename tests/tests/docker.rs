//! Real containers through real dockerd (Debian's docker.io 20.10) on berth
//! networks across two nodes: each node's agent serves Docker's remote
//! network and IPAM driver protocols (`--docker-plugin`), each node runs a
//! dockerd of its own (own data, exec and pid paths and API socket under
//! the test's directory, `--bridge=none --iptables=false`) in the node's
//! network namespace and in a private mount namespace where only its own
//! agent's socket is at /run/docker/plugins. The seed's part 2 literally
//! (`docker network create` on both nodes, test1 and test2, a ping across),
//! `-p` through berth from the other node, removal freeing the address, a
//! mismatch refused, and dockerd restarted with a container running.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, must, node_addr};
use berth_tests::{Proc, wait_until};
use serde_json::Value;

const DOCKER: &str = "/usr/bin/docker";

/// One node's dockerd, stopped (by PID) and its containers removed on drop.
struct Dockerd {
    dir: PathBuf,
    node_ns: String,
    proc: Option<Proc>,
}

fn plugin_dir(base: &Path, node: usize) -> PathBuf {
    base.join(format!("node{node}")).join("plugins")
}

impl Dockerd {
    fn start(base: &Path, node: usize, node_ns: &str) -> Self {
        let dir = base.join(format!("node{node}"));
        std::fs::create_dir_all(dir.join("exec")).unwrap();
        let mut d = Self {
            dir,
            node_ns: node_ns.to_string(),
            proc: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let dir = self.dir.display().to_string();
        // The bind mount over the fixed discovery directory is private to
        // this dockerd (unshare -m makes the new mount namespace private).
        let script = format!(
            "mkdir -p /run/docker/plugins && mount --bind {dir}/plugins /run/docker/plugins && \
             exec nsenter --net=/run/netns/{ns} -- dockerd --data-root {dir}/data --exec-root {dir}/exec \
             --pidfile {dir}/docker.pid --host unix://{dir}/docker.sock --bridge=none --iptables=false \
             --ip6tables=false --ip-masq=false --storage-driver vfs --shutdown-timeout 1 --log-level debug",
            ns = self.node_ns
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        let proc = Proc::spawn_append("dockerd", &mut cmd, self.dir.join("dockerd.log")).unwrap();
        self.proc = Some(proc);
        let up = wait_until(Duration::from_secs(60), || {
            self.run(&["version"]).status.success()
        });
        assert!(up, "dockerd did not come up:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}/docker.sock", self.dir.display()))
            .args(args)
            .output()
            .expect("running docker: install docker.io (.ci/run does)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log().lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "docker {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    fn ip(&self, container: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}"),
            container,
        ])
    }

    /// SIGKILL, containers left running (their shims and containerd live on).
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            p.stop();
        }
    }

    /// SIGTERM (dockerd stops its containers: 10 s for a shell that ignores
    /// it) and wait up to 30 s, then SIGKILL; by PID.
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            wait_until(Duration::from_secs(30), || !p.alive());
            p.stop();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.proc.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        self.stop();
        kill_leftovers(&self.dir.join("exec"));
    }
}

/// SIGKILLs what this dockerd started and left behind (its containerd, the
/// shims and their containers when dockerd itself died): processes whose
/// command line names the dockerd's exec root (the agent's names only the
/// plugin socket and the API socket), and their children. By PID.
fn kill_leftovers(dir: &Path) {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            pids.push(pid);
        }
    }
    let mut all = pids.clone();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid.is_some_and(|p| pids.contains(&p)) {
            all.push(pid);
        }
    }
    for pid in all {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A busybox image from Debian's busybox-static, imported (no registry).
fn import_busybox(d: &Dockerd, base: &Path) {
    let tar = base.join("busybox.tar");
    if !tar.exists() {
        let root = base.join("rootfs");
        for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("install busybox-static");
        let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
    }
    d.ok(&["import", tar.to_str().unwrap(), "busybox"]);
}

/// One call on a plugin socket, as dockerd makes it.
fn plugin_call(sock: &Path, path: &str, body: &Value) -> Value {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (_, json) = out.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sandboxes(c: &Cluster) -> Vec<Value> {
    c.cli_json(&["sandbox", "ls"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn docker_sandboxes(c: &Cluster) -> Vec<Value> {
    sandboxes(c)
        .into_iter()
        .filter(|s| s["Origin"] == "docker")
        .collect()
}

#[test]
fn docker_containers_on_two_nodes_share_a_berth_overlay() {
    let base = tempfile::Builder::new()
        .prefix("berth-docker-")
        .tempdir()
        .unwrap();
    let agent_args = |i: usize| {
        let d = base.path().join(format!("node{i}"));
        std::fs::create_dir_all(d.join("plugins")).unwrap();
        vec![
            "--resync-period".to_string(),
            "2".into(),
            "--docker-grace".into(),
            "3".into(),
            "--docker-plugin".into(),
            "--docker-plugin-socket".into(),
            plugin_dir(base.path(), i)
                .join("berth.sock")
                .display()
                .to_string(),
            "--docker-host".into(),
            format!("unix://{}/docker.sock", d.display()),
        ]
    };
    let mut c = must(
        Cluster::start_with(
            2,
            ClusterOptions {
                agent_args: vec![agent_args(1), agent_args(2)],
                ..Default::default()
            },
        ),
        "cluster",
    );
    let mut d1 = Dockerd::start(base.path(), 1, &c.node(1));
    let d2 = Dockerd::start(base.path(), 2, &c.node(2));
    import_busybox(&d1, base.path());
    import_busybox(&d2, base.path());

    // The seed's part 2: the same command on both nodes, one berth network.
    let create = [
        "network",
        "create",
        "-d",
        "berth",
        "--ipam-driver",
        "berth",
        "demo",
    ];
    d1.ok(&create);
    c.eventually("berth network demo", || {
        c.cli(&["network", "inspect", "demo"]).status.success()
    });
    d2.ok(&create);
    let net = c.cli_json(&["network", "inspect", "demo"]);
    let net = if net.is_array() { net[0].clone() } else { net };
    assert_eq!(net["Driver"], "overlay", "{net}");
    let sleep = ["sh", "-c", "while true; do sleep 3600; done"];
    let mut run1 = vec!["run", "-d", "--name", "test1", "--network", "demo", "busybox"];
    run1.extend(sleep);
    d1.ok(&run1);
    let mut run2 = vec!["run", "-d", "--name", "test2", "--network", "demo", "busybox"];
    run2.extend(sleep);
    d2.ok(&run2);
    let ip1 = d1.ip("test1", "demo");
    let ip2 = d2.ip("test2", "demo");
    assert!(
        ip1.starts_with("10.0.") && ip2.starts_with("10.0.") && ip1 != ip2,
        "{ip1} {ip2}"
    );
    // Both are berth's, marked as Docker's, on their nodes.
    let listed = docker_sandboxes(&c);
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (node, ip) in [("node1", &ip1), ("node2", &ip2)] {
        let sb = listed
            .iter()
            .find(|s| s["Node"] == node)
            .unwrap_or_else(|| panic!("{node}: {listed:?}"));
        assert_eq!(sb["Networks"]["demo"]["IPAddress"], ip.as_str(), "{sb}");
    }
    // MTU 1450 on the overlay, and a ping across nodes over VXLAN.
    let link = d1.ok(&["exec", "test1", "ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    let pinged = wait_until(Duration::from_secs(10), || {
        d1.run(&["exec", "test1", "ping", "-c1", "-W1", &ip2])
            .status
            .success()
    });
    assert!(pinged, "test1 -> test2\n{}", c.logs());
    d1.ok(&["exec", "test1", "ping", "-c3", &ip2]);
    d2.ok(&["exec", "test2", "ping", "-c1", "-W2", &ip1]);
    // Outside the overlay through berth_gwbridge's masquerade (the other
    // node's underlay address), and -p on the overlay from the other node.
    let out = wait_until(Duration::from_secs(10), || {
        d1.run(&["exec", "test1", "ping", "-c1", "-W1", &node_addr(2)])
            .status
            .success()
    });
    assert!(out, "test1 -> {}\n{}", node_addr(2), c.logs());
    d1.ok(&[
        "run",
        "-d",
        "--name",
        "ovweb",
        "--network",
        "demo",
        "-p",
        "18083:80",
        "busybox",
        "sh",
        "-c",
        "echo berth-overlay > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ]);
    let get = format!(
        "import socket\nc=socket.create_connection(('{}',18083),timeout=2)\nc.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n')\nprint(c.recv(4096).decode())",
        node_addr(1)
    );
    let answered = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&in_ns(&c.node(2), &["python3", "-c", &get]).stdout).contains("berth-overlay")
    });
    assert!(answered, "overlay port 18083 on node1 from node2\n{}", c.logs());
    d1.ok(&["rm", "-f", "ovweb"]);
    c.eventually("ovweb freed", || docker_sandboxes(&c).len() == 2);

    // -p on a berth bridge network, published through berth: from the other node.
    d1.ok(&[
        "network",
        "create",
        "-d",
        "berth",
        "--ipam-driver",
        "berth",
        "-o",
        "berth.driver=bridge",
        "--subnet",
        "172.29.3.0/24",
        "web",
    ]);
    d1.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "web",
        "-p",
        "18082:80",
        "busybox",
        "sh",
        "-c",
        "echo berth-docker > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ]);
    assert!(d1.ip("web", "web").starts_with("172.29.3."));
    let get = format!(
        "import socket\nc=socket.create_connection(('{}',18082),timeout=2)\nc.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n')\nprint(c.recv(4096).decode())",
        node_addr(1)
    );
    let answered = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&in_ns(&c.node(2), &["python3", "-c", &get]).stdout).contains("berth-docker")
    });
    assert!(answered, "port 18082 on node1 from node2\n{}", c.logs());
    // The same port again on node1 is refused by berth's clash rules, and leaves nothing.
    let before = docker_sandboxes(&c).len();
    let e = d1.err(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "web",
        "-p",
        "18082:80",
        "busybox",
        "sleep",
        "100",
    ]);
    assert!(e.contains("18082"), "{e}");
    let _ = d1.run(&["rm", "-f", "web2"]);
    c.eventually("web2 left nothing", || docker_sandboxes(&c).len() == before);
    d1.ok(&["rm", "-f", "web"]);
    assert!(
        !c.etcd_keys().iter().any(|k| k.contains("/ports/node1/")),
        "port freed"
    );

    // --ip is honoured (Docker allows it on networks made with --subnet).
    d1.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "web",
        "--ip",
        "172.29.3.50",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(d1.ip("fixed", "web"), "172.29.3.50");
    let fixed = docker_sandboxes(&c);
    assert!(
        fixed
            .iter()
            .any(|s| s["Networks"]["web"]["IPAddress"] == "172.29.3.50"),
        "{fixed:?}"
    );
    d1.ok(&["rm", "-f", "fixed"]);
    // Bad options are refused at `docker network create`, and leave nothing.
    let nets = c.cli_json(&["network", "ls"]).as_array().map_or(0, Vec::len);
    let e = d1.err(&[
        "network",
        "create",
        "-d",
        "berth",
        "--ipam-driver",
        "berth",
        "-o",
        "foo=1",
        "bad1",
    ]);
    assert!(e.contains("unknown option -o foo"), "{e}");
    let e = d1.err(&[
        "network",
        "create",
        "-d",
        "berth",
        "--ipam-driver",
        "berth",
        "--subnet",
        "10.77.0.1/24",
        "bad2",
    ]);
    assert!(e.contains("host bits"), "{e}");
    let e = d1.err(&[
        "network",
        "create",
        "-d",
        "berth",
        "--ipam-driver",
        "berth",
        "-o",
        "berth.driver=macvlan",
        "bad3",
    ]);
    assert!(e.contains("berth.driver"), "{e}");
    assert_eq!(
        c.cli_json(&["network", "ls"]).as_array().map_or(0, Vec::len),
        nets
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(c.dir().join("node1/docker.json")).unwrap()).unwrap();
    let unlinked = state["pools"]
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p["network"].is_null())
        .count();
    assert_eq!(unlinked, 0, "pools of refused networks released: {state}");

    // A mismatch with an existing berth network is a clear error.
    c.cli_ok(&["network", "create", "-d", "bridge", "mm"]);
    d2.ok(&["network", "create", "-d", "berth", "--ipam-driver", "berth", "mm"]);
    let e = d2.err(&[
        "run",
        "-d",
        "--name",
        "mm1",
        "--network",
        "mm",
        "busybox",
        "sleep",
        "100",
    ]);
    assert!(e.contains("driver bridge"), "{e}");
    let _ = d2.run(&["rm", "-f", "mm1"]);

    // The agent killed between RequestAddress and Join (here: dockerd's
    // RequestAddress made by hand, then the agent SIGKILLed): the address is
    // berth's until the restarted agent's sweep sees no endpoint came.
    let demo_id = d1.ok(&["network", "inspect", "-f", "{{.Id}}", "demo"]);
    let state: Value =
        serde_json::from_slice(&std::fs::read(c.dir().join("node1/docker.json")).unwrap()).unwrap();
    let pool = state["networks"][&demo_id]["pool"].as_str().unwrap().to_string();
    let sock1 = plugin_dir(base.path(), 1).join("berth.sock");
    let got = plugin_call(
        &sock1,
        "/IpamDriver.RequestAddress",
        &serde_json::json!({"PoolID": pool, "Address": "", "Options": null}),
    );
    let orphan = got["Address"]
        .as_str()
        .unwrap_or_else(|| panic!("{got}"))
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with(&orphan))
    );
    c.crash_agent(1);
    must(c.start_agent(1), "agent restart");
    must(c.wait_ready(&[1]), "node1 ready");
    c.eventually("the orphaned address freed", || {
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with(&orphan))
    });
    // The agent's restart left the running containers' traffic alone.
    assert_eq!(docker_sandboxes(&c).len(), 2);
    d1.ok(&["exec", "test1", "ping", "-c1", "-W2", &ip2]);
    // Bad input over the socket: Docker's error fields, nothing recorded.
    let bad = plugin_call(
        &sock1,
        "/IpamDriver.RequestAddress",
        &serde_json::json!({"PoolID": "nope", "Address": ""}),
    );
    assert!(bad["Error"].as_str().unwrap().contains("unknown pool"), "{bad}");
    let bad = plugin_call(
        &sock1,
        "/NetworkDriver.Join",
        &serde_json::json!({"EndpointID": "x"}),
    );
    assert!(bad["Err"].as_str().unwrap().contains("unknown endpoint"), "{bad}");
    assert_eq!(docker_sandboxes(&c).len(), 2);

    // dockerd SIGKILLed with test2 running: berth keeps its address while
    // dockerd is away (the container still runs); the restarted dockerd
    // stops it, and its address is freed; it starts again, no stale endpoint.
    let mut d2 = d2;
    d2.kill();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(docker_sandboxes(&c).len(), 2, "kept while dockerd is away");
    d1.ok(&["exec", "test1", "ping", "-c1", "-W2", &ip2]);
    d2.spawn();
    c.eventually("test2's address freed after dockerd's restart", || {
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with(&ip2))
    });
    d2.ok(&["start", "test2"]);
    let ip2 = d2.ip("test2", "demo");
    d1.ok(&["exec", "test1", "ping", "-c1", "-W2", &ip2]);

    // docker rm: the address goes.
    d2.ok(&["rm", "-f", "test2"]);
    c.eventually("test2's address freed", || {
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with(&ip2))
    });

    // dockerd restarted with test1 running: dockerd stops it, nothing is leaked,
    // and test1 starts again on berth with no stale endpoint.
    d1.stop();
    d1.spawn();
    c.eventually("node1's docker addresses freed after the restart", || {
        docker_sandboxes(&c).iter().all(|s| s["Node"] != "node1")
    });
    d1.ok(&["start", "test1"]);
    let again = d1.ip("test1", "demo");
    assert!(again.starts_with("10.0."), "{again}");
    assert_eq!(docker_sandboxes(&c).len(), 1);
    // A container killed with SIGKILL: dockerd tears its endpoint down; freed.
    d1.ok(&["kill", "-s", "KILL", "test1"]);
    c.eventually("the killed container's address freed", || {
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with(&again))
    });
    d1.ok(&["start", "test1"]);
    d1.ok(&["rm", "-f", "test1"]);
    c.eventually("every docker address freed", || docker_sandboxes(&c).is_empty());
    // The fault matrix for Docker's paths: berth-agent or berth-api SIGKILLed
    // 0–40 ms into a `docker run` or a `docker rm`, then restarted. Whatever
    // the command's outcome, the cluster must converge (every record ready,
    // keys with owners, veths exactly the recorded ones) and berth must hold
    // an address for the container exactly when dockerd runs it.
    for (round, delay) in [0u64, 15, 40].into_iter().enumerate() {
        for victim in ["agent", "api"] {
            for op in ["run", "rm"] {
                let name = format!("f{round}{victim}{op}");
                if op == "rm" {
                    d1.ok(&[
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--network",
                        "demo",
                        "busybox",
                        "sleep",
                        "1000",
                    ]);
                }
                let mut cmd = Command::new(DOCKER);
                cmd.arg("-H")
                    .arg(format!("unix://{}/docker.sock", d1.dir.display()));
                if op == "run" {
                    cmd.args([
                        "run",
                        "-d",
                        "--name",
                        &name,
                        "--network",
                        "demo",
                        "busybox",
                        "sleep",
                        "1000",
                    ]);
                } else {
                    cmd.args(["rm", "-f", &name]);
                }
                let mut child = cmd
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(delay));
                if victim == "agent" {
                    c.crash_agent(1);
                    must(c.start_agent(1), "agent restart");
                } else {
                    c.crash_api();
                    must(c.start_api(), "api restart");
                }
                let _ = child.wait();
                must(c.wait_ready(&[1, 2]), "nodes ready");
                let converged = wait_until(Duration::from_secs(45), || {
                    let running = d1.ok(&["ps", "-q", "--filter", &format!("name=^{name}$")]);
                    let held = docker_sandboxes(&c)
                        .iter()
                        .filter(|s| s["Node"] == "node1")
                        .count();
                    // test1 is not running here; only this round's container is.
                    let want = usize::from(!running.is_empty());
                    berth_tests::invariants::consistent(&c).is_ok() && held == want
                });
                assert!(
                    converged,
                    "{victim} killed {delay} ms into docker {op}: {:?}\n{}",
                    berth_tests::invariants::consistent(&c),
                    c.logs()
                );
                let _ = d1.run(&["rm", "-f", &name]);
                c.eventually("the round's container freed", || {
                    docker_sandboxes(&c).iter().all(|s| s["Node"] != "node1")
                });
            }
        }
    }

    d1.ok(&["network", "rm", "demo", "web"]);
    d2.ok(&["network", "rm", "demo", "mm"]);
}
