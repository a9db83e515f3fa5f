//! berth-cni: a CNI plugin (spec 1.0.0 and 1.1.0) that attaches a container
//! runtime's network namespace to a berth network. Thin: it parses the
//! environment and stdin ([`spec`]), asks the node's berth-agent over its
//! local Unix socket (`berth.v1.LocalService`), and prints the result or
//! the error. The agent records the attachment in berth (IPAM, ports,
//! names, convergence) and realises it with the code of its own sandboxes.
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::v1 as pb;
use berth_proto::v1::local_service_client::LocalServiceClient;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::spec::{AddResult, Args, CniError, Command, Env, Interface, IpConfig, NetConf, Route, code};

/// Where the agent's local service listens unless told otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/berth/agent.sock";

/// How long one verb may take end to end (an ADD waits for the API server
/// and the agent to record and realise the attachment).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent socket: the configuration's `agent_socket`, else
/// `$BERTH_AGENT_SOCKET`, else [`DEFAULT_AGENT_SOCKET`].
pub fn agent_socket(conf: &NetConf) -> PathBuf {
    conf.agent_socket
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("BERTH_AGENT_SOCKET").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_AGENT_SOCKET.to_string())
        .into()
}

async fn connect(path: &Path) -> Result<LocalServiceClient<Channel>, CniError> {
    let p = path.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| {
            let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "cannot reach berth-agent at {}: {why} (is berth-agent running on this node? the socket is set by \"agent_socket\" or $BERTH_AGENT_SOCKET)",
                    path.display()
                ),
            )
        })?;
    Ok(LocalServiceClient::new(channel))
}

/// A status from the agent (or, through it, the API server) as a CNI error.
fn from_status(s: tonic::Status, verb: Command) -> CniError {
    let c = match s.code() {
        Code::InvalidArgument => code::INVALID_CONFIG,
        Code::NotFound if verb == Command::Check => code::UNKNOWN_CONTAINER,
        Code::NotFound => code::INVALID_CONFIG,
        Code::AlreadyExists => code::TAKEN,
        Code::FailedPrecondition => code::REFUSED,
        Code::ResourceExhausted => code::EXHAUSTED,
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded => code::TRY_AGAIN_LATER,
        _ => code::OTHER,
    };
    CniError::new(c, format!("berth: {}", s.message())).with_details(format!("grpc code {:?}", s.code()))
}

/// Runs one verb; `Ok(Some(json))` is printed on stdout.
pub async fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, (String, CniError)> {
    let command = env.command().map_err(|e| (spec::LATEST.to_string(), e))?;
    let conf = if command == Command::Version && stdin.iter().all(u8::is_ascii_whitespace) {
        NetConf::default()
    } else {
        NetConf::parse(stdin).map_err(|e| (spec::LATEST.to_string(), e))?
    };
    let version = conf.version().to_string();
    verb(command, env, &conf).await.map_err(|e| (version, e))
}

async fn verb(command: Command, env: &Env, conf: &NetConf) -> Result<Option<Value>, CniError> {
    match command {
        Command::Version => Ok(Some(spec::version_json(conf.version()))),
        Command::Add => add(env, conf).await.map(Some),
        Command::Del => del(env, conf).await.map(|()| None),
        Command::Check => check(env, conf).await.map(|()| None),
        Command::Status => status(conf).await.map(|()| None),
        Command::Gc => gc(conf).await.map(|()| None),
    }
}

fn origin() -> i32 {
    pb::SandboxOrigin::Cni as i32
}

async fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let container_id = env.require("CNI_CONTAINERID", &env.container_id)?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    let network = conf.network()?;
    let args = Args::parse(&env.args)?;
    if args.mac.is_some() {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "CNI_ARGS MAC: berth derives each interface's MAC address from its IP address; drop --mac-address",
        ));
    }
    let ports = conf
        .runtime_config
        .port_mappings
        .iter()
        .map(|p| {
            let protocol = pb::PortProtocol::from_name(&p.protocol).ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "runtimeConfig.portMappings: protocol {:?} is not tcp or udp",
                        p.protocol
                    ),
                )
            })?;
            Ok(pb::PortMapping {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: protocol as i32,
            })
        })
        .collect::<Result<Vec<_>, CniError>>()?;
    let mut client = connect(&agent_socket(conf)).await?;
    let resp = client
        .attach(pb::LocalAttachRequest {
            origin: origin(),
            container_id: container_id.to_string(),
            netns_path: netns.to_string(),
            ifname: ifname.to_string(),
            network: network.to_string(),
            ip: args.ip.unwrap_or_default(),
            ports,
            aliases: vec![],
        })
        .await
        .map_err(|s| from_status(s, Command::Add))?
        .into_inner();
    Ok(result_of(&resp, netns).to_json(conf.version(), conf.prev_result.as_ref()))
}

/// The CNI result of an attachment.
pub fn result_of(resp: &pb::LocalAttachResponse, netns: &str) -> AddResult {
    let mut r = AddResult {
        nameservers: resp.nameservers.clone(),
        search: resp.search.clone(),
        ..Default::default()
    };
    let Some(s) = &resp.sandbox else { return r };
    for ep in &s.endpoints {
        let bridge = resp
            .networks
            .iter()
            .any(|n| n.id == ep.network_id && n.driver() == pb::NetworkDriver::Bridge);
        r.interfaces.push(Interface {
            name: ep.ifname.clone(),
            mac: ep.mac.clone(),
            sandbox: netns.to_string(),
        });
        // An overlay's gateway is no address anyone answers on: only bridges
        // give one. A dual-stack network's IPv6 address goes on the same interface.
        let families = [
            (&ep.ip, ep.prefix_len, &ep.gateway, "0.0.0.0/0"),
            (&ep.ip6, ep.prefix_len6, &ep.gateway6, "::/0"),
        ];
        for (ip, prefix, gw, default) in families.into_iter().filter(|f| !f.0.is_empty()) {
            let gateway = (bridge && !gw.is_empty()).then(|| gw.clone());
            r.ips.push(IpConfig {
                address: format!("{ip}/{prefix}"),
                gateway: gateway.clone(),
                interface: r.interfaces.len() - 1,
            });
            if ep.default_route
                && let Some(gw) = gateway
            {
                r.routes.push(Route {
                    dst: default.into(),
                    gw: Some(gw),
                });
            }
        }
    }
    r
}

async fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.require("CNI_CONTAINERID", &env.container_id)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    let mut client = connect(&agent_socket(conf)).await?;
    client
        .detach(pb::LocalDetachRequest {
            origin: origin(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        })
        .await
        .map_err(|s| from_status(s, Command::Del))?;
    Ok(())
}

async fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.require("CNI_CONTAINERID", &env.container_id)?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    conf.network()?;
    if conf.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs the ADD's result as prevResult in the configuration",
        ));
    }
    let mut client = connect(&agent_socket(conf)).await?;
    client
        .check(pb::LocalCheckRequest {
            origin: origin(),
            container_id: container_id.to_string(),
            netns_path: netns.to_string(),
            ifname: ifname.to_string(),
        })
        .await
        .map_err(|s| from_status(s, Command::Check))?;
    Ok(())
}

async fn status(conf: &NetConf) -> Result<(), CniError> {
    let socket = agent_socket(conf);
    let mut client = connect(&socket)
        .await
        .map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg))?;
    let r = client
        .ready(pb::LocalReadyRequest {})
        .await
        .map_err(|s| {
            CniError::new(
                code::NOT_AVAILABLE,
                format!("berth-agent at {}: {}", socket.display(), s.message()),
            )
        })?
        .into_inner();
    if !r.ready {
        return Err(CniError::new(code::NOT_AVAILABLE, r.reason));
    }
    Ok(())
}

async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "GC needs \"cni.dev/valid-attachments\" in the configuration",
        ));
    };
    // GC is per network configuration: attachments to other networks stay.
    let network = conf.network()?.to_string();
    let mut client = connect(&agent_socket(conf)).await?;
    client
        .collect(pb::LocalCollectRequest {
            origin: origin(),
            network,
            keep: valid
                .iter()
                .map(|a| pb::Attachment {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                })
                .collect(),
        })
        .await
        .map_err(|s| from_status(s, Command::Gc))?;
    Ok(())
}
