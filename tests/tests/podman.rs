//! Real containers through real podman (Debian's 4.3, its CNI backend, runc)
//! on berth's overlay across two nodes: each node's podman is configured as
//! the lab does it (its own containers.conf, storage and conflists, the
//! plugin talking to that node's agent), nothing of the machine's own podman
//! configuration is read or changed. Unmodified `podman run`/`rm`; berth's
//! addresses, a ping across nodes, `--ip`, `-p` from the other node, and
//! nothing left behind, also after a container is killed without a DEL.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, in_ns_ok, must, node_addr};
use berth_tests::{bin, wait_until};
use serde_json::Value;

/// One node's podman: its configuration files and state under the test's
/// directory; every container is removed on drop.
struct Podman {
    node_ns: String,
    dir: PathBuf,
}

/// A root filesystem from Debian's busybox-static (`--rootfs`).
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox: install busybox-static (.ci/run does)");
    // Relative links: inside the container the rootfs is /.
    let out = Command::new(root.join("bin/busybox"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    root
}

impl Podman {
    /// `plugins`: the directory holding the plugin as `berth`.
    fn new(c: &Cluster, node: usize, plugins: &Path, networks: &[&str]) -> Self {
        let dir = c.dir().join(format!("podman-node{node}"));
        let netd = dir.join("net.d");
        std::fs::create_dir_all(&netd).unwrap();
        let conf = dir.join("containers.conf");
        let storage = dir.join("storage.conf");
        for net in networks {
            let list = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": net,
                "plugins": [{
                    "type": "berth",
                    "network": net,
                    "agent_socket": c.local_socket(node),
                    "capabilities": {"portMappings": true}
                }]
            });
            std::fs::write(netd.join(format!("{net}.conflist")), list.to_string()).unwrap();
        }
        std::fs::write(
            &conf,
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}"]
network_config_dir = "{netd}"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "{dir}/tmp"
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF={conf}", "CONTAINERS_STORAGE_CONF={storage}"]
"#,
                plugins = plugins.display(),
                netd = netd.display(),
                dir = dir.display(),
                conf = conf.display(),
                storage = storage.display(),
            ),
        )
        .unwrap();
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/storage\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .unwrap();
        Self {
            node_ns: c.node(node),
            dir,
        }
    }

    /// `podman ARGS…` in the node's namespace (shared mount namespace, as the lab's exec).
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg("--")
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .output()
            .expect("running podman: install podman and runc (.ci/run does)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
    }
}

fn sandboxes(c: &Cluster) -> Vec<Value> {
    c.cli_json(&["sandbox", "ls"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn bv_links(c: &Cluster, node: usize) -> String {
    let out = in_ns_ok(&c.node(node), &["ip", "-o", "link", "show"]);
    out.lines()
        .filter(|l| l.contains(": bv"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn podman_containers_on_two_nodes_share_a_berth_overlay() {
    let c = must(
        Cluster::start_with(
            2,
            ClusterOptions {
                agent_args: vec![vec!["--resync-period".into(), "2".into()]; 2],
                ..Default::default()
            },
        ),
        "cluster",
    );
    c.cli_ok(&["network", "create", "-d", "overlay", "demo"]);
    let plugins = c.dir().join("cni-bin");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(bin("berth-cni"), plugins.join("berth")).unwrap();
    let root = rootfs(c.dir());
    let root = root.to_str().unwrap();
    let p1 = Podman::new(&c, 1, &plugins, &["demo"]);
    let p2 = Podman::new(&c, 2, &plugins, &["demo"]);

    // node1: a web server published on 18081; node2: a fixed address.
    let web = "echo berth-podman > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    p1.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "demo",
        "-p",
        "18081:80",
        "--cap-add",
        "NET_RAW",
        "--rootfs",
        root,
        "sh",
        "-c",
        web,
    ]);
    p2.ok(&[
        "run",
        "-d",
        "--name",
        "pinger",
        "--network",
        "demo",
        "--ip",
        "10.0.0.77",
        "--cap-add",
        "NET_RAW",
        "--rootfs",
        root,
        "sleep",
        "1000",
    ]);
    // podman shows berth's addresses, and berth records both containers as CNI's.
    let i1 = p1.inspect("web");
    let ip1 = i1["NetworkSettings"]["Networks"]["demo"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let i2 = p2.inspect("pinger");
    assert_eq!(
        i2["NetworkSettings"]["Networks"]["demo"]["IPAddress"], "10.0.0.77",
        "{i2}"
    );
    let listed = sandboxes(&c);
    let web_id = i1["Id"].as_str().unwrap();
    let sb = listed
        .iter()
        .find(|s| s["ContainerID"] == web_id)
        .unwrap_or_else(|| panic!("web not in berth: {listed:?}"));
    assert_eq!(sb["Origin"], "cni");
    assert_eq!(sb["Node"], "node1");
    assert_eq!(sb["Networks"]["demo"]["IPAddress"], ip1.as_str());
    assert_eq!(sb["NetnsPath"], i1["NetworkSettings"]["SandboxKey"]);

    // Across nodes on the overlay, both ways, by berth's addresses.
    let pinged = wait_until(Duration::from_secs(10), || {
        p2.run(&["exec", "pinger", "ping", "-c1", "-W1", &ip1])
            .status
            .success()
    });
    assert!(pinged, "pinger -> web\n{}", c.logs());
    p1.ok(&["exec", "web", "ping", "-c1", "-W2", "10.0.0.77"]);

    // -p: the published port answers from the other node.
    let get = format!(
        "import socket\nc=socket.create_connection(('{}',18081),timeout=2)\nc.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n')\nprint(c.recv(4096).decode())",
        node_addr(1)
    );
    let answered = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&in_ns(&c.node(2), &["python3", "-c", &get]).stdout).contains("berth-podman")
    });
    assert!(answered, "port 18081 on node1 from node2\n{}", c.logs());

    // podman rm: the address, the port and berth's interfaces go.
    p1.ok(&["rm", "-f", "-t", "0", "web"]);
    c.eventually("web's attachment gone", || {
        !sandboxes(&c).iter().any(|s| s["ContainerID"] == web_id)
    });
    assert!(
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with(&ip1)),
        "address freed"
    );
    assert!(
        !c.etcd_keys().iter().any(|k| k.contains("/ports/node1/")),
        "port freed"
    );
    let nft = String::from_utf8_lossy(&in_ns(&c.node(1), &["nft", "list", "table", "ip", "berth"]).stdout)
        .into_owned();
    assert!(!nft.contains("18081"), "{nft}");
    c.eventually("node1's veths gone", || bv_links(&c, 1).is_empty());

    // Killed without DEL: conmon and the container die, the namespace goes; convergence detaches it.
    let i2 = p2.inspect("pinger");
    let (pid, conmon) = (
        i2["State"]["Pid"].as_i64().unwrap(),
        i2["State"]["ConmonPid"].as_i64().unwrap(),
    );
    let netns = i2["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    for p in [conmon, pid] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = nix::mount::umount2(netns.as_str(), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&netns);
    c.eventually("the killed container's attachment detached", || {
        sandboxes(&c).is_empty()
    });
    assert!(
        !c.etcd_keys()
            .iter()
            .any(|k| k.contains("/ipam/") && k.ends_with("10.0.0.77"))
    );
    c.eventually("node2's veths gone", || bv_links(&c, 2).is_empty());
    // podman's own cleanup afterwards (its first try trips over the namespace it
    // lost): a DEL of what berth already removed is fine.
    let removed = (0..3).any(|_| p2.run(&["rm", "-f", "-t", "0", "pinger"]).status.success());
    assert!(
        removed,
        "{}",
        String::from_utf8_lossy(&p2.run(&["rm", "-f", "pinger"]).stderr)
    );
    assert_eq!(p2.ok(&["ps", "-aq"]), "");
    assert!(sandboxes(&c).is_empty());
}
