//! Runs the `berth` binary against a fake API server on a Unix socket: the
//! connection, the requests the CLI builds, what it prints and its exit codes.

use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;

use berth_proto::v1::network_service_server::{NetworkService, NetworkServiceServer};
use berth_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use berth_proto::v1::sandbox_service_server::{SandboxService, SandboxServiceServer};
use berth_proto::v1::*;
use serde_json::{Value, json};
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::{Code, Request, Response, Status};

const NET_ID: &str = "3f1a9c0e5b7d2a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";
const SB_ID: &str = "9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
const EP_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fake;

fn network(name: &str, driver: &str) -> Network {
    let (subnet, gateway) = match driver {
        "bridge" => ("172.17.0.0/16", "172.17.0.1"),
        _ => ("", ""),
    };
    Network {
        id: format!("{:0<64}", name.len()),
        name: name.into(),
        driver: match driver {
            "bridge" => NetworkDriver::Bridge,
            "overlay" => NetworkDriver::Overlay,
            "host" => NetworkDriver::Host,
            _ => NetworkDriver::Null,
        } as i32,
        scope: berth_proto::v1::NetworkScope::Local as i32,
        subnet: subnet.into(),
        gateway: gateway.into(),
        created: "2024-05-01T10:00:00Z".into(),
        ..Default::default()
    }
}

fn endpoint() -> Endpoint {
    Endpoint {
        id: EP_ID.into(),
        network_id: NET_ID.into(),
        network_name: "bridge".into(),
        sandbox_id: SB_ID.into(),
        sandbox_name: "test1".into(),
        node: "node1".into(),
        ip: "172.17.0.2".into(),
        prefix_len: 16,
        mac: "02:42:ac:11:00:02".into(),
        ifname: "eth0".into(),
        gateway: "172.17.0.1".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl NetworkService for Fake {
    async fn create_network(
        &self,
        request: Request<CreateNetworkRequest>,
    ) -> Result<Response<CreateNetworkResponse>, Status> {
        let r = request.into_inner();
        if r.name == "taken" {
            return Err(Status::already_exists("network name taken is already in use"));
        }
        let network = Network {
            id: NET_ID.into(),
            name: r.name,
            driver: match r.driver {
                0 => NetworkDriver::Bridge as i32,
                d => d,
            },
            scope: berth_proto::v1::NetworkScope::Local as i32,
            subnet: if r.subnet.is_empty() {
                "172.18.0.0/16".into()
            } else {
                r.subnet
            },
            gateway: if r.gateway.is_empty() {
                "172.18.0.1".into()
            } else {
                r.gateway
            },
            options: r.options,
            labels: r.labels,
            ..Default::default()
        };
        Ok(Response::new(CreateNetworkResponse {
            network: Some(network),
        }))
    }

    /// Two pages, as a real server gives them: in id order, not by name.
    async fn list_networks(
        &self,
        request: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let r = request.into_inner();
        let (networks, next) = match r.page_token.as_str() {
            "" => (vec![network("none", "null"), network("bridge", "bridge")], "p2"),
            "p2" => (vec![network("host", "host")], ""),
            t => return Err(Status::invalid_argument(format!("unexpected token {t}"))),
        };
        Ok(Response::new(ListNetworksResponse {
            networks,
            next_page_token: next.into(),
        }))
    }

    async fn inspect_network(
        &self,
        request: Request<InspectNetworkRequest>,
    ) -> Result<Response<InspectNetworkResponse>, Status> {
        let name = request.into_inner().name_or_id;
        if name != "bridge" {
            return Err(Status::not_found(format!("no such network: {name}")));
        }
        Ok(Response::new(InspectNetworkResponse {
            network: Some(Network {
                id: NET_ID.into(),
                ..network("bridge", "bridge")
            }),
            endpoints: vec![endpoint()],
        }))
    }

    async fn remove_network(
        &self,
        request: Request<RemoveNetworkRequest>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let name = request.into_inner().name_or_id;
        if name == "busy" {
            return Err(Status::failed_precondition("network busy has active endpoints"));
        }
        Ok(Response::new(RemoveNetworkResponse { id: NET_ID.into() }))
    }

    async fn connect_network(
        &self,
        request: Request<ConnectNetworkRequest>,
    ) -> Result<Response<ConnectNetworkResponse>, Status> {
        let r = request.into_inner();
        if r.ip != "172.18.0.9" || r.aliases != ["a", "b"] {
            return Err(Status::invalid_argument(format!("unexpected request {r:?}")));
        }
        Ok(Response::new(ConnectNetworkResponse { endpoint: None }))
    }

    async fn disconnect_network(
        &self,
        _: Request<DisconnectNetworkRequest>,
    ) -> Result<Response<DisconnectNetworkResponse>, Status> {
        // An empty message: the CLI falls back to the code's description.
        Err(Status::new(Code::Unavailable, ""))
    }
}

#[tonic::async_trait]
impl SandboxService for Fake {
    async fn create_sandbox(
        &self,
        request: Request<CreateSandboxRequest>,
    ) -> Result<Response<CreateSandboxResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(CreateSandboxResponse {
            sandbox: Some(Sandbox {
                id: SB_ID.into(),
                name: r.name,
                node: if r.node.is_empty() { "node1".into() } else { r.node },
                mode: berth_proto::v1::SandboxMode::Namespace as i32,
                // Echoes the network asked for, so the test sees the flag arrive.
                netns: format!("on-{}", r.network),
                ports: r.ports,
                links: r.links,
                command: r.command,
                endpoints: vec![endpoint()],
                ..Default::default()
            }),
        }))
    }

    /// Three pages; the middle one empty (a server may end a page early).
    async fn list_sandboxes(
        &self,
        request: Request<ListSandboxesRequest>,
    ) -> Result<Response<ListSandboxesResponse>, Status> {
        let sandbox = |name: &str| Sandbox {
            id: SB_ID.into(),
            name: name.into(),
            node: "node1".into(),
            mode: SandboxMode::Namespace as i32,
            endpoints: vec![Endpoint {
                sandbox_name: name.into(),
                ..endpoint()
            }],
            ..Default::default()
        };
        let (sandboxes, next) = match request.into_inner().page_token.as_str() {
            "" => (vec![sandbox("web"), sandbox("db")], "p2"),
            "p2" => (vec![], "p3"),
            "p3" => (vec![sandbox("cache")], ""),
            t => return Err(Status::invalid_argument(format!("unexpected token {t}"))),
        };
        Ok(Response::new(ListSandboxesResponse {
            sandboxes,
            next_page_token: next.into(),
        }))
    }

    async fn inspect_sandbox(
        &self,
        _: Request<InspectSandboxRequest>,
    ) -> Result<Response<InspectSandboxResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn remove_sandbox(
        &self,
        request: Request<RemoveSandboxRequest>,
    ) -> Result<Response<RemoveSandboxResponse>, Status> {
        let r = request.into_inner();
        if !r.force {
            return Err(Status::failed_precondition("use --force"));
        }
        Ok(Response::new(RemoveSandboxResponse { id: SB_ID.into() }))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<Self::ExecStream>, Status> {
        use exec_output::Kind;
        let r = request.into_inner();
        let out = |kind| Ok(ExecOutput { kind: Some(kind) });
        let mut messages = vec![
            out(Kind::Stdout(
                format!("{}:{}\n", r.sandbox, r.command.join(" ")).into_bytes(),
            )),
            out(Kind::Stderr(b"to stderr\n".to_vec())),
        ];
        match r.command[0].as_str() {
            "noexit" => {}
            "fail" => messages.push(Err(Status::unavailable("agent on node1 is unreachable"))),
            _ => messages.push(out(Kind::ExitCode(3))),
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }
}

#[tonic::async_trait]
impl NodeService for Fake {
    async fn list_nodes(&self, _: Request<ListNodesRequest>) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: vec![Node {
                name: "node1".into(),
                address: "192.168.205.10".into(),
                agent_url: "http://192.168.205.10:7001".into(),
                ready: true,
                registered: "2024-05-01T10:00:00Z".into(),
                mtu: 1500,
                routes: Vec::new(),
            }],
        }))
    }

    async fn remove_node(
        &self,
        _: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "9.8.7".into(),
            api_version: "berth.v1".into(),
            os: "linux".into(),
            arch: "riscv64".into(),
        }))
    }
}

/// A fake API server on a socket in a fresh temporary directory.
struct Server {
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("api.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(NetworkServiceServer::new(Fake))
                    .add_service(SandboxServiceServer::new(Fake))
                    .add_service(NodeServiceServer::new(Fake))
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                    .await
                    .unwrap();
            });
        });
        Server { dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// Runs `berth --api unix://SOCKET ARGS...`; returns (exit code, stdout, stderr).
    fn berth(&self, args: &[&str]) -> (i32, String, String) {
        run_berth(&format!("unix://{}", self.socket().display()), args)
    }
}

fn run_berth(api: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env_remove("BERTH_OUTPUT")
        .arg("--api")
        .arg(api)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn network_create_prints_the_id_or_json() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["network", "create", "-d", "bridge", "my-bridge"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, &*format!("{NET_ID}\n"), "")
    );

    let (code, out, _) = s.berth(&[
        "--output",
        "json",
        "network",
        "create",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "team=net",
        "--subnet",
        "10.9.0.0/24",
        "--gateway",
        "10.9.0.254",
        "n2",
    ]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["Name"], "n2");
    assert_eq!(v["Driver"], "bridge");
    assert_eq!(v["Subnet"], "10.9.0.0/24");
    assert_eq!(v["Gateway"], "10.9.0.254");
    assert_eq!(v["Options"], json!({"com.docker.network.driver.mtu": "1400"}));
    assert_eq!(v["Labels"], json!({"team": "net"}));

    let (code, out, err) = s.berth(&["network", "create", "taken"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err, "berth: network name taken is already in use\n");
}

#[test]
fn network_ls_table_and_json() {
    let s = Server::start();
    let (code, out, _) = s.berth(&["network", "ls"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "NETWORK ID     NAME     DRIVER   SCOPE\n\
         600000000000   bridge   bridge   local\n\
         400000000000   host     host     local\n\
         400000000000   none     null     local\n"
    );
    let (_, out, _) = s.berth(&["network", "ls", "--output", "json"]);
    let v = json(&out);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["Name"], "bridge", "sorted by name across pages");
    assert_eq!(v[2]["Name"], "none");
    assert_eq!(v[0]["Id"].as_str().unwrap().len(), 64);
}

#[test]
fn sandbox_ls_follows_every_page() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["sandbox", "ls"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(names, ["cache", "db", "web"], "{out}");
    let (_, out, _) = s.berth(&["sandbox", "ls", "--output", "json"]);
    let v = json(&out);
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v[0]["Name"], "cache");
}

#[test]
fn network_inspect_prints_found_then_errors() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["network", "inspect", "bridge"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let v = json(&out);
    assert_eq!(
        v[0]["IPAM"]["Config"],
        json!([{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}])
    );
    assert_eq!(v[0]["Containers"][SB_ID]["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(v[0]["Containers"][SB_ID]["IPv4Address"], "172.17.0.2/16");

    let (code, out, err) = s.berth(&["network", "inspect", "nope", "bridge"]);
    assert_eq!(code, 1);
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
    assert_eq!(err, "berth: no such network: nope\n");

    let (code, out, _) = s.berth(&["network", "inspect", "nope"]);
    assert_eq!((code, out.as_str()), (1, "[]\n"));
}

#[test]
fn network_rm_goes_on_past_failures() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["network", "rm", "a", "busy", "b"]);
    assert_eq!(code, 1);
    assert_eq!(out, "a\nb\n");
    assert_eq!(err, "berth: network busy has active endpoints\n");
}

#[test]
fn network_connect_and_disconnect() {
    let s = Server::start();
    let (code, out, err) = s.berth(&[
        "network",
        "connect",
        "--ip",
        "172.18.0.9",
        "--alias",
        "a",
        "--alias",
        "b",
        "my-bridge",
        "test1",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let (code, _, err) = s.berth(&["network", "disconnect", "my-bridge", "test1"]);
    assert_eq!(code, 1);
    assert_eq!(err, format!("berth: {}\n", Code::Unavailable.description()));
}

#[test]
fn sandbox_create_sends_parsed_ports_links_and_command() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["sandbox", "create", "test1", "--node", "node1"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, &*format!("{SB_ID}\n"), "")
    );

    let (code, out, _) = s.berth(&[
        "--output",
        "json",
        "sandbox",
        "create",
        "web",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:5000-5001:6000-6001/udp",
        "--link",
        "test1",
        "--link",
        "db:database",
        "--network",
        "my-bridge",
        "--",
        "python3",
        "-m",
        "http.server",
        "80",
    ]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["Node"], "node1");
    assert_eq!(v["Mode"], "namespace");
    assert_eq!(v["Netns"], "on-my-bridge", "--network reached the server");
    assert_eq!(
        v["Ports"],
        json!([
            {"HostIp": "", "HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"},
            {"HostIp": "127.0.0.1", "HostPort": 5000, "ContainerPort": 6000, "Protocol": "udp"},
            {"HostIp": "127.0.0.1", "HostPort": 5001, "ContainerPort": 6001, "Protocol": "udp"},
        ])
    );
    assert_eq!(
        v["Links"],
        json!([{"Name": "test1", "Alias": ""}, {"Name": "db", "Alias": "database"}])
    );
    assert_eq!(v["Command"], json!(["python3", "-m", "http.server", "80"]));
    assert_eq!(v["Networks"]["bridge"]["IPAddress"], "172.17.0.2");
}

#[test]
fn sandbox_rm_passes_force() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["sandbox", "rm", "-f", "t0", "t1"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "t0\nt1\n", ""));
    let (code, out, err) = s.berth(&["sandbox", "rm", "t0"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "berth: use --force\n")
    );
}

#[test]
fn exec_streams_and_exits_with_the_status() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["exec", "test2", "--", "ping", "-c1", "test1"]);
    assert_eq!(code, 3);
    assert_eq!(out, "test2:ping -c1 test1\n");
    assert_eq!(err, "to stderr\n");

    let (code, out, err) = s.berth(&["exec", "test2", "--", "noexit"]);
    assert_eq!(code, 1);
    assert_eq!(out, "test2:noexit\n");
    assert_eq!(
        err,
        "to stderr\nberth: exec stream ended without an exit status\n"
    );

    let (code, _, err) = s.berth(&["exec", "test2", "--", "fail"]);
    assert_eq!(code, 1);
    assert_eq!(err, "to stderr\nberth: agent on node1 is unreachable\n");
}

#[test]
fn node_ls() {
    let s = Server::start();
    let (code, out, _) = s.berth(&["node", "ls"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "NAME    ADDRESS          STATUS   AGENT\n\
         node1   192.168.205.10   ready    http://192.168.205.10:7001\n"
    );
    let (_, out, _) = s.berth(&["node", "ls", "--output", "json"]);
    assert_eq!(json(&out)[0]["Mtu"], 1500);
}

#[test]
fn quiet_ls_prints_ids_only() {
    let s = Server::start();
    let (code, out, _) = s.berth(&["network", "ls", "-q"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "600000000000\n400000000000\n400000000000\n")
    );
    let (code, out, _) = s.berth(&["node", "ls", "--quiet"]);
    assert_eq!((code, out.as_str()), (0, "node1\n"));
    let (code, out, _) = s.berth(&["sandbox", "ls", "-q"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.len() == 12), "{out}");
}

#[test]
fn version_shows_client_and_server() {
    let s = Server::start();
    let (code, out, err) = s.berth(&["version"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(
        out.starts_with(&format!(
            "Client:\n Version:      {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    assert!(
        out.contains("Server:\n Version:      9.8.7\n API version:  berth.v1\n OS/Arch:      linux/riscv64"),
        "{out}"
    );
    let (_, out, _) = s.berth(&["--output", "json", "version"]);
    assert_eq!(json(&out)["Server"]["Arch"], "riscv64");
    // The client's version even without a server, then the error.
    let (code, out, err) = run_berth("unix:///nonexistent/berth.sock", &["version"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("Client:\n"), "{out}");
    assert!(err.starts_with("berth: ") && err.lines().count() == 1, "{err}");
}

#[test]
fn completion_scripts_need_no_server() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_berth("unix:///nonexistent/berth.sock", &["completion", shell]);
        assert_eq!((code, err.as_str()), (0, ""), "{shell}");
        assert!(out.contains("events") && out.contains("prune"), "{shell}: {out}");
    }
    let (code, _, err) = run_berth("unix:///nonexistent/berth.sock", &["completion", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn all_address_forms_reach_the_socket() {
    let s = Server::start();
    let path = s.socket();
    let path = path.to_str().unwrap();
    for api in [format!("unix://{path}"), format!("unix:{path}"), path.to_string()] {
        let (code, out, err) = run_berth(&api, &["node", "ls"]);
        assert_eq!(code, 0, "{api}: {err}");
        assert!(out.starts_with("NAME"));
    }
}

#[test]
fn unreachable_server_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("missing.sock");
    let api = format!("unix://{}", sock.display());
    let (code, out, err) = run_berth(&api, &["network", "ls"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with(&format!("berth: cannot reach the API server at {api}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}
