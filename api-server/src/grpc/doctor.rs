//! `berth.v1.DiagnosticsService` (berth doctor): works out from etcd which
//! path two sandboxes (or a sandbox and an address) take — the same node's
//! bridge, an overlay across nodes, out through the node's NAT — asks the
//! agents on it their own view (`AgentService.Diagnose`, a dry run that
//! changes nothing) and puts the hops in path order. Without a sandbox it
//! gathers every node's differences between desired and observed state.
//! Read-only throughout: nothing is written to etcd or to any node.
use std::net::Ipv4Addr;

use berth_core::model::{Driver, Scope};
use berth_proto::v1 as pb;
use berth_proto::v1::diagnostics_service_server::DiagnosticsService;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, Result};
use crate::networks::Networks;
use crate::nodes::Nodes;
use crate::sandboxes::{SandboxView, Sandboxes};
use crate::store::records::{EndpointRecord, NetworkRecord, NodeRecord};

pub struct DiagnosticsApi {
    pub sandboxes: Sandboxes,
    pub networks: Networks,
    pub nodes: Nodes,
}

#[tonic::async_trait]
impl DiagnosticsService for DiagnosticsApi {
    #[tracing::instrument(skip_all, fields(sandbox = %req.get_ref().sandbox))]
    async fn doctor(&self, req: Request<pb::DoctorRequest>) -> Result<Response<pb::DoctorResponse>, Status> {
        let r = req.into_inner();
        let resp = if r.sandbox.is_empty() {
            if !r.target.is_empty() {
                return Err(ApiError::from(berth_core::Invalid::new(
                    "target",
                    "needs a sandbox to start from",
                ))
                .into());
            }
            pb::DoctorResponse {
                nodes: self.every_node().await?,
                ..Default::default()
            }
        } else {
            let (path, hops) = self.walk(&r.sandbox, &r.target).await?;
            pb::DoctorResponse {
                path,
                hops,
                ..Default::default()
            }
        };
        Ok(Response::new(resp))
    }
}

fn api_hop(name: impl Into<String>, state: pb::HopState, detail: impl Into<String>) -> pb::Hop {
    pb::Hop {
        node: String::new(),
        name: name.into(),
        state: state as i32,
        detail: detail.into(),
    }
}

/// One side of a path: the node, and the questions for its agent.
struct Side {
    node: NodeRecord,
    questions: Vec<pb::PathQuestion>,
}

fn question(ep: &EndpointRecord, peer: Option<(&EndpointRecord, Option<&NodeRecord>)>) -> pb::PathQuestion {
    let mut q = pb::PathQuestion {
        sandbox_id: ep.sandbox_id.clone(),
        network_id: ep.network_id.clone(),
        ..Default::default()
    };
    if let Some((p, remote)) = peer {
        q.peer_ip = p.ip.map(|i| i.to_string()).unwrap_or_default();
        if let Some(n) = remote {
            q.peer_mac = p.mac.clone();
            q.peer_vtep = n.address.to_string();
        }
    }
    q
}

fn describe_ep(v: &SandboxView, ep: &EndpointRecord) -> String {
    match ep.ip {
        Some(ip) => format!("{} ({}, {ip})", v.record.name, v.record.node),
        None => format!("{} ({})", v.record.name, v.record.node),
    }
}

fn describe_net(n: &NetworkRecord) -> String {
    let dev = n.bridge.clone().unwrap_or_default();
    match (n.driver, n.vni) {
        (Driver::Overlay, Some(vni)) => format!("overlay {} (VNI {vni}, bridge {dev})", n.name),
        _ => format!("{} {} (bridge {dev})", n.driver.as_str(), n.name),
    }
}

impl DiagnosticsApi {
    /// Every node's differences; a node whose agent does not answer says so.
    async fn every_node(&self) -> Result<Vec<pb::NodeDiagnosis>> {
        let nodes = self.nodes.list().await?;
        let agents = self.sandboxes.agents();
        let calls = nodes.iter().map(|n| agents.diagnose(&n.record, Vec::new()));
        let answers = futures::future::join_all(calls).await;
        Ok(nodes
            .iter()
            .zip(answers)
            .map(|(n, a)| match a {
                Ok(r) => pb::NodeDiagnosis {
                    node: n.record.name.clone(),
                    ready: n.ready,
                    reachable: true,
                    error: String::new(),
                    synced: r.synced,
                    differences: r.differences,
                },
                Err(e) => pb::NodeDiagnosis {
                    node: n.record.name.clone(),
                    ready: n.ready,
                    reachable: false,
                    error: if n.ready {
                        e.to_string()
                    } else {
                        format!("not ready (no heartbeat within the node TTL); {e}")
                    },
                    synced: false,
                    differences: Vec::new(),
                },
            })
            .collect())
    }

    /// The target as a sandbox, if it names one or is one's address.
    async fn target_sandbox(&self, src: &SandboxView, target: &str) -> Result<Option<SandboxView>> {
        let Ok(ip) = target.parse::<Ipv4Addr>() else {
            return self.sandboxes.find(target).await.map(Some);
        };
        for (_, net) in &src.endpoints {
            for ep in self.networks.endpoints(&net.id).await? {
                let same_pool = net.scope == Scope::Global || ep.node == src.record.node;
                if ep.ip == Some(ip) && same_pool && !ep.removing {
                    return self.sandboxes.find(&ep.sandbox_id).await.map(Some);
                }
            }
        }
        Ok(None)
    }

    async fn walk(&self, sandbox: &str, target: &str) -> Result<(String, Vec<pb::Hop>)> {
        use pb::HopState::{Broken, Skipped};
        let src = self.sandboxes.find(sandbox).await?;
        let src_node = self.nodes.get(&src.record.node).await?.record;
        if src.endpoints.is_empty() {
            let why = match src.record.mode {
                berth_core::model::SandboxMode::Host => {
                    "host mode: the sandbox uses its node's own network stack; berth has no hops of its own to check"
                }
                _ => "the sandbox has no network endpoint (network none): only lo",
            };
            let state = if target.is_empty() { Skipped } else { Broken };
            return Ok((
                format!("{} on {}", src.record.name, src.record.node),
                vec![api_hop(format!("endpoints of {}", src.record.name), state, why)],
            ));
        }
        let mut hops = Vec::new();
        // Sandbox to sandbox: after the hops, one ping from the source.
        let mut probe: Option<Ipv4Addr> = None;
        let (path, sides) = if target.is_empty() {
            let qs = src.endpoints.iter().map(|(e, _)| question(e, None)).collect();
            (
                format!("{}: its endpoints on {}", src.record.name, src.record.node),
                vec![Side {
                    node: src_node,
                    questions: qs,
                }],
            )
        } else {
            match self.target_sandbox(&src, target).await? {
                None => {
                    let ip: Ipv4Addr = target
                        .parse()
                        .map_err(|_| ApiError::not_found("sandbox", target))?;
                    // Out through the default route: the first endpoint on a
                    // bridge network (overlay sandboxes: berth_gwbridge's).
                    let Some((ep, net)) = src.endpoints.iter().find(|(_, n)| n.driver == Driver::Bridge)
                    else {
                        return Ok((
                            format!("{} → {ip}", src.record.name),
                            vec![api_hop(
                                "default route",
                                Broken,
                                format!(
                                    "{} has no endpoint on a bridge network, so no way out of berth",
                                    src.record.name
                                ),
                            )],
                        ));
                    };
                    let mut q = question(ep, None);
                    q.peer_ip = ip.to_string();
                    q.outside = true;
                    hops.push((
                        usize::MAX,
                        api_hop(
                            format!("beyond {}", src.record.node),
                            Skipped,
                            format!("{ip} is outside berth: not probed"),
                        ),
                    ));
                    (
                        format!(
                            "{} → {ip} (outside berth) via {} and {}'s NAT",
                            describe_ep(&src, ep),
                            describe_net(net),
                            src.record.node
                        ),
                        vec![Side {
                            node: src_node,
                            questions: vec![q],
                        }],
                    )
                }
                Some(dst) => {
                    if dst.record.id == src.record.id {
                        return Err(berth_core::Invalid::new("target", "is the sandbox itself").into());
                    }
                    let same_node = dst.record.node == src.record.node;
                    let common = src.endpoints.iter().find_map(|(e, n)| {
                        let d = dst.endpoints.iter().find(|(d, _)| d.network_id == e.network_id)?;
                        (same_node || n.scope == Scope::Global).then_some((e, &d.0, n))
                    });
                    let Some((se, de, net)) = common else {
                        let local = src
                            .endpoints
                            .iter()
                            .find(|(e, _)| dst.endpoints.iter().any(|(d, _)| d.network_id == e.network_id));
                        let (name, detail) = match local {
                            Some((_, n)) => (
                                format!("network {}", n.name),
                                format!(
                                    "{} is a local-scope {} network: {} on {} and {} on {} are not connected by it (use an overlay network)",
                                    n.name,
                                    n.driver.as_str(),
                                    src.record.name,
                                    src.record.node,
                                    dst.record.name,
                                    dst.record.node
                                ),
                            ),
                            None => (
                                "common network".to_string(),
                                format!(
                                    "{} ({}) and {} ({}) share no network: berth isolates networks from each other (berth network connect NETWORK {})",
                                    src.record.name,
                                    names(&src),
                                    dst.record.name,
                                    names(&dst),
                                    dst.record.name
                                ),
                            ),
                        };
                        return Ok((
                            format!("{} → {}", src.record.name, dst.record.name),
                            vec![api_hop(name, Broken, detail)],
                        ));
                    };
                    probe = de.ip;
                    let path = format!(
                        "{} → {} on {}{}",
                        describe_ep(&src, se),
                        describe_ep(&dst, de),
                        describe_net(net),
                        if same_node {
                            ", same node"
                        } else {
                            ", across nodes"
                        }
                    );
                    if same_node {
                        (
                            path,
                            vec![Side {
                                node: src_node,
                                questions: vec![
                                    question(se, Some((de, None))),
                                    question(de, Some((se, None))),
                                ],
                            }],
                        )
                    } else {
                        let dst_node = self.nodes.get(&dst.record.node).await?.record;
                        hops.push((
                            1,
                            api_hop(
                                format!("underlay {} → {}", src_node.address, dst_node.address),
                                Skipped,
                                format!(
                                    "VXLAN (UDP 4789) between {} and {}: not probed",
                                    src_node.name, dst_node.name
                                ),
                            ),
                        ));
                        let s = Side {
                            questions: vec![question(se, Some((de, Some(&dst_node))))],
                            node: src_node.clone(),
                        };
                        let d = Side {
                            questions: vec![question(de, Some((se, Some(&src_node))))],
                            node: dst_node,
                        };
                        (path, vec![s, d])
                    }
                }
            }
        };
        // Ask every side's agent; answers are placed in path order: the
        // source side as is, the far side reversed (towards its sandbox).
        let agents = self.sandboxes.agents();
        let mut parts: Vec<(usize, Vec<pb::Hop>)> = Vec::new();
        let answers = futures::future::join_all(
            sides
                .iter()
                .map(|s| agents.diagnose(&s.node, s.questions.clone())),
        )
        .await;
        let mut slot = 0;
        for (side, answer) in sides.iter().zip(answers) {
            match answer {
                Ok(r) => {
                    for (i, p) in r.paths.into_iter().enumerate() {
                        let mut h = p.hops;
                        if i > 0 || slot > 0 {
                            h.reverse();
                        }
                        parts.push((slot * 2, h));
                        slot += 1;
                    }
                }
                Err(e) => {
                    parts.push((
                        slot * 2,
                        vec![pb::Hop {
                            node: side.node.name.clone(),
                            name: format!("agent on {}", side.node.name),
                            state: Broken as i32,
                            detail: format!("unreachable, so its hops are not checked: {e}"),
                        }],
                    ));
                    slot += 1;
                }
            }
        }
        for (at, h) in hops {
            parts.push((at, vec![h]));
        }
        parts.sort_by_key(|(at, _)| *at);
        let mut out: Vec<pb::Hop> = Vec::new();
        for h in parts.into_iter().flat_map(|(_, h)| h) {
            // One node's bridge and table are one hop, whichever side saw them.
            if !out.iter().any(|o| o.node == h.node && o.name == h.name) {
                out.push(h);
            }
        }
        if let Some(ip) = probe {
            let source_answered = !out
                .iter()
                .any(|h| h.name == format!("agent on {}", src.record.node));
            out.push(if source_answered {
                self.ping(&src, ip).await
            } else {
                api_hop(
                    format!("probe: ping {ip} from {}", src.record.name),
                    Skipped,
                    "the source's agent is unreachable",
                )
            });
        }
        Ok((path, out))
    }

    /// One ICMP echo from the sandbox to `ip` (1 s), run by its agent as
    /// `berth exec` runs commands: the end-to-end check of the hops above.
    async fn ping(&self, src: &SandboxView, ip: Ipv4Addr) -> pb::Hop {
        use pb::HopState::{Broken, Ok as Fine, Skipped};
        let name = format!("probe: ping {ip} from {}", src.record.name);
        let node = src.record.node.clone();
        let hop = |state: pb::HopState, detail: String| pb::Hop {
            node: node.clone(),
            name: name.clone(),
            state: state as i32,
            detail,
        };
        let (node_rec, target) = match self.sandboxes.exec_target(&src.record.id).await {
            Ok(t) => t,
            Err(e) => return hop(Skipped, format!("cannot run it: {e}")),
        };
        let command = ["ping", "-n", "-c", "1", "-W", "1", &ip.to_string()]
            .map(String::from)
            .to_vec();
        let mut stream = match self.sandboxes.agents().exec(&node_rec, &target, command).await {
            Ok(s) => s,
            Err(e) => return hop(Skipped, format!("cannot run ping on {node}: {}", e.message())),
        };
        let mut code = None;
        while let Ok(Some(msg)) = stream.message().await {
            if let Some(pb::exec_output::Kind::ExitCode(c)) = msg.kind {
                code = Some(c);
            }
        }
        match code {
            Some(0) => hop(Fine, "answered".into()),
            Some(1) => hop(
                Broken,
                "no answer within 1 s: the packet is lost on the way (see the hops above) or dropped by something berth does not manage".into(),
            ),
            Some(c) => hop(Skipped, format!("ping could not run in the sandbox (exit {c})")),
            None => hop(Skipped, "ping ended without a status".into()),
        }
    }
}

fn names(v: &SandboxView) -> String {
    v.endpoints
        .iter()
        .map(|(_, n)| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
