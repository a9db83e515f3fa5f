//! `berth.v1.AgentService`: turns the API server's commands into domain
//! types and hands them to the [`Reconciler`]; `Exec` streams a process's
//! output back.
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use berth_proto::v1 as pb;
use berth_proto::v1::agent_service_server::AgentService;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::model::{self, NetworkSpec, PeerSet, SandboxSpec};
use crate::reconcile::Reconciler;
use crate::reconcile::report::{AgentError, ErrorKind};
use crate::{doctor, exec};

pub struct AgentApi {
    pub node: String,
    pub reconciler: Arc<Reconciler>,
}

type Reply = Result<Response<pb::AgentReply>, Status>;

fn status(e: AgentError) -> Status {
    e.into()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn error_kind(k: ErrorKind) -> pb::ObjectErrorKind {
    match k {
        ErrorKind::Conflict => pb::ObjectErrorKind::Conflict,
        ErrorKind::Kernel => pb::ObjectErrorKind::Kernel,
        ErrorKind::Io => pb::ObjectErrorKind::Io,
        ErrorKind::Blocked => pb::ObjectErrorKind::Blocked,
    }
}

fn bad(e: model::BadSpec) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A doctor's question, parsed.
fn question(p: &pb::PathQuestion) -> Result<doctor::Question, Status> {
    let ip = |what: &str, v: &str| -> Result<Option<std::net::Ipv4Addr>, Status> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("{what} {v:?} is not an IPv4 address")))
    };
    let remote = match (p.peer_mac.as_str(), ip("peer_vtep", &p.peer_vtep)?) {
        ("", None) => None,
        (mac, Some(vtep)) => Some((
            model::parse_mac(mac)
                .ok_or_else(|| Status::invalid_argument(format!("peer_mac {mac:?} is not a MAC")))?,
            vtep,
        )),
        (_, None) => return Err(Status::invalid_argument("peer_mac needs peer_vtep")),
    };
    Ok(doctor::Question {
        sandbox_id: p.sandbox_id.clone(),
        network_id: p.network_id.clone(),
        peer_ip: ip("peer_ip", &p.peer_ip)?,
        remote,
        outside: p.outside,
    })
}

fn ok() -> Reply {
    Ok(Response::new(pb::AgentReply::default()))
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    #[tracing::instrument(skip_all, fields(node = %self.node, sandbox = tracing::field::Empty))]
    async fn ensure_sandbox(&self, req: Request<pb::EnsureSandboxRequest>) -> Reply {
        let r = req.into_inner();
        let s = r
            .sandbox
            .ok_or_else(|| Status::invalid_argument("sandbox missing"))?;
        tracing::Span::current().record("sandbox", s.name.as_str());
        let sandbox = SandboxSpec::from_proto(&s, self.reconciler.netns_prefix()).map_err(bad)?;
        let mut networks = Vec::new();
        for n in &r.networks {
            if let Some(spec) = NetworkSpec::from_proto(n).map_err(bad)? {
                networks.push(spec);
            }
        }
        let peers = r
            .peers
            .iter()
            .map(PeerSet::from_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        self.reconciler
            .ensure_sandbox(sandbox, networks, peers)
            .await
            .map_err(status)?;
        ok()
    }

    #[tracing::instrument(skip_all, fields(node = %self.node, sandbox = %req.get_ref().sandbox_id))]
    async fn remove_sandbox(&self, req: Request<pb::RemoveAgentSandboxRequest>) -> Reply {
        let r = req.into_inner();
        self.reconciler
            .remove_sandbox(&r.sandbox_id, &r.netns)
            .await
            .map_err(status)?;
        ok()
    }

    #[tracing::instrument(skip_all, fields(node = %self.node, network = %req.get_ref().network_id))]
    async fn set_overlay_peers(&self, req: Request<pb::OverlayPeers>) -> Reply {
        let (id, set) = PeerSet::from_proto(req.get_ref()).map_err(bad)?;
        self.reconciler.set_peers(&id, set).await.map_err(status)?;
        ok()
    }

    #[tracing::instrument(skip_all, fields(node = %self.node))]
    async fn sync(&self, req: Request<pb::NodeState>) -> Reply {
        let desired =
            model::desired_from_proto(req.get_ref(), self.reconciler.netns_prefix()).map_err(bad)?;
        self.reconciler
            .sync(desired, req.get_ref().revision)
            .await
            .map_err(Status::internal)?;
        ok()
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.reconciler.status().await;
        let objects = s
            .objects
            .iter()
            .map(|(k, o)| pb::ObjectStatus {
                kind: k.kind.as_str().to_string(),
                name: k.name.clone(),
                ok: o.result.is_ok(),
                error_kind: o
                    .result
                    .as_ref()
                    .err()
                    .map_or(pb::ObjectErrorKind::Unspecified, |e| error_kind(e.kind))
                    as i32,
                message: o
                    .result
                    .as_ref()
                    .err()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                sandbox: o.sandbox.clone().unwrap_or_default(),
                at: rfc3339(o.at),
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            node: self.node.clone(),
            converged: s.converged,
            commands: s.commands,
            sandboxes: s.sandboxes,
            networks: s.networks,
            last_error: s.last_error(),
            objects,
            passes: s.passes,
            last_full_pass: s.last_full_pass.map(rfc3339).unwrap_or_default(),
            revision: s.revision,
        }))
    }

    async fn diagnose(
        &self,
        req: Request<pb::DiagnoseRequest>,
    ) -> Result<Response<pb::DiagnoseResponse>, Status> {
        let mut questions = Vec::new();
        for p in &req.get_ref().paths {
            questions.push(question(p)?);
        }
        let (underlay, underlay_mtu) = self.reconciler.underlay();
        let forwarding =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
        let dnat = crate::nft::published()
            .await
            .map_err(|e| Status::internal(format!("cannot read berth's nftables table: {e}")))?;
        let reply = self
            .reconciler
            .dry_run(|d, observed, plan, synced| {
                let o = observed
                    .map_err(|e| Status::internal(format!("cannot observe the node: {}", e.message)))?;
                let facts = doctor::Facts {
                    underlay,
                    underlay_mtu,
                    forwarding,
                    synced,
                    dnat,
                    proxies: crate::proxy::running(),
                };
                Ok::<_, Status>(pb::DiagnoseResponse {
                    node: self.node.clone(),
                    synced,
                    differences: doctor::differences(d, o, plan)
                        .into_iter()
                        .map(|x| pb::Difference {
                            object: x.object,
                            change: x.change,
                            sandbox: x.sandbox.unwrap_or_default(),
                        })
                        .collect(),
                    paths: questions
                        .iter()
                        .map(|q| pb::PathAnswer {
                            hops: doctor::path(d, o, plan, &facts, q)
                                .into_iter()
                                .map(|h| pb::Hop {
                                    node: self.node.clone(),
                                    name: h.name,
                                    state: match h.state {
                                        doctor::State::Ok => pb::HopState::Ok,
                                        doctor::State::Broken => pb::HopState::Broken,
                                        doctor::State::Skipped => pb::HopState::Skipped,
                                    } as i32,
                                    detail: h.detail,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(node = %self.node, netns = %req.get_ref().netns))]
    async fn exec(&self, req: Request<pb::AgentExecRequest>) -> Result<Response<Self::ExecStream>, Status> {
        let r = req.into_inner();
        let target = self.reconciler.exec_target(&r.netns);
        if let Some(p) = &target.netns
            && !p.exists()
        {
            return Err(Status::not_found(format!(
                "namespace of sandbox {} is missing on this node",
                r.sandbox_name
            )));
        }
        let mut cmd =
            exec::command(&target, &r.command, false).map_err(|e| Status::invalid_argument(e.to_string()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Status::invalid_argument(format!("cannot run {:?}: {e}", r.command[0])))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        tokio::spawn(async move {
            let (mut ob, mut eb) = ([0u8; 8192], [0u8; 8192]);
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                let msg = tokio::select! {
                    n = stdout.read(&mut ob), if out_open => match n {
                        Ok(0) | Err(_) => { out_open = false; continue }
                        Ok(n) => pb::exec_output::Kind::Stdout(ob[..n].to_vec()),
                    },
                    n = stderr.read(&mut eb), if err_open => match n {
                        Ok(0) | Err(_) => { err_open = false; continue }
                        Ok(n) => pb::exec_output::Kind::Stderr(eb[..n].to_vec()),
                    },
                };
                if tx.send(Ok(pb::ExecOutput { kind: Some(msg) })).await.is_err() {
                    return; // client went away; kill_on_drop stops the child
                }
            }
            let code = match child.wait().await {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
                }
                Err(_) => 255,
            };
            let _ = tx
                .send(Ok(pb::ExecOutput {
                    kind: Some(pb::exec_output::Kind::ExitCode(code)),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
