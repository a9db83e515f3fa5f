//! Who may call which RPC of the API server: one tower layer in front of
//! every service, on TCP and on the Unix socket, that finds out who the
//! caller is and checks the RPC's entry in [`need`] before the service runs.
//!
//! The caller is
//! - on TLS: the role in its certificate (`spiffe://berth/…`); without a
//!   certificate every berth service is `UNAUTHENTICATED`;
//! - on the Unix socket: its peer credentials. Root, the server's own user
//!   and members of the socket's group (`--socket-group`) are admins; anyone
//!   else (possible only if someone loosened the socket's mode) is
//!   `PERMISSION_DENIED`;
//! - on plain TCP (loopback, or anywhere with `--insecure`): unknown, and
//!   allowed everything, as documented for that mode.
//!
//! The caller is put in the request's extensions ([`Caller`]) so services
//! can log it (every exec names it). The node name in registry requests is
//! checked by `tls::RegistryGuard`. The table is in docs/security.md.
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_core::tls::{Access, Role};
use tonic::Status;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

/// What an RPC asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone who got through the transport (health, reflection).
    Anyone,
    /// A client (or API server) certificate with at least this access.
    Access(Access),
    /// An agent certificate (its node is checked per request).
    Agent,
}

/// The rule for one gRPC path (`/package.Service/Method`); `None` for a
/// path nobody classified, which is treated as admin-only (a new RPC is
/// closed until it is given an entry; a unit test keeps the table complete).
pub fn need(path: &str) -> Option<Need> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    use Access::*;
    Some(match (service, method) {
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _) => Need::Anyone,
        ("berth.v1.NetworkService", "ListNetworks" | "InspectNetwork") => Need::Access(Viewer),
        (
            "berth.v1.NetworkService",
            "CreateNetwork" | "RemoveNetwork" | "ConnectNetwork" | "DisconnectNetwork",
        ) => Need::Access(Operator),
        ("berth.v1.SandboxService", "ListSandboxes" | "InspectSandbox") => Need::Access(Viewer),
        ("berth.v1.SandboxService", "CreateSandbox" | "RemoveSandbox") => Need::Access(Operator),
        ("berth.v1.SandboxService", "Exec") => Need::Access(Admin),
        ("berth.v1.NodeService", "ListNodes" | "Version") => Need::Access(Viewer),
        ("berth.v1.EventService", "Watch") => Need::Access(Viewer),
        // It reveals node internals (links, MACs, VTEPs, rule counts) and
        // asks every agent for a dry run: operators, not viewers.
        ("berth.v1.DiagnosticsService", "Doctor") => Need::Access(Operator),
        ("berth.v1.NodeService", "RemoveNode") => Need::Access(Admin),
        (
            "berth.v1.RegistryService",
            "Register" | "Heartbeat" | "DesiredState" | "AttachLocal" | "DetachLocal" | "ListLocal"
            | "EnsureNetwork",
        ) => Need::Agent,
        _ => return None,
    })
}

/// Who made a request, as far as the connection tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A TLS peer with this certificate role.
    Cert(Role),
    /// A process on the Unix socket allowed in by its credentials.
    Unix { uid: u32, gid: u32, pid: Option<i32> },
    /// A plain TCP peer (loopback or `--insecure`): not authenticated.
    Plain(Option<std::net::SocketAddr>),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Cert(role) => write!(f, "{role} ({})", role.uri()),
            Caller::Unix { uid, gid, pid } => {
                write!(f, "unix socket uid {uid} gid {gid}")?;
                if let Some(pid) = pid {
                    write!(f, " pid {pid}")?;
                }
                Ok(())
            }
            Caller::Plain(Some(addr)) => write!(f, "unauthenticated tcp peer {addr}"),
            Caller::Plain(None) => write!(f, "unauthenticated tcp peer"),
        }
    }
}

/// Who counts as an admin on the Unix socket: root, this user, the socket's group.
#[derive(Debug, Clone, Copy)]
pub struct UnixPolicy {
    pub uid: u32,
    pub gid: u32,
}

impl UnixPolicy {
    fn admits(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        uid == 0 || uid == self.uid || gid == self.gid || pid.is_some_and(|p| in_group(p, self.gid))
    }
}

/// Whether process `pid` has `gid` among its supplementary groups.
fn in_group(pid: i32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

/// Identifies the caller of `req` and checks it against `need(path)`.
pub fn authorize<B>(req: &http::Request<B>, unix: &UnixPolicy) -> Result<Caller, Status> {
    let path = req.uri().path();
    let need = need(path).unwrap_or(Need::Access(Access::Admin));
    let ext = req.extensions();
    let caller = if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let leaf = tls.peer_certs().and_then(|c| c.first().cloned());
        match leaf {
            Some(der) => Caller::Cert(
                Role::of_der(der.as_ref())
                    .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?,
            ),
            None if need == Need::Anyone => return Ok(Caller::Plain(tls.get_ref().remote_addr())),
            None => {
                return Err(Status::unauthenticated(format!(
                    "{path} needs a client certificate (this listener uses mutual TLS)"
                )));
            }
        }
    } else if let Some(uds) = ext.get::<UdsConnectInfo>() {
        let Some(cred) = uds.peer_cred else {
            return Err(Status::unauthenticated("unix socket peer without credentials"));
        };
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        if !unix.admits(uid, gid, pid) && need != Need::Anyone {
            return Err(Status::permission_denied(format!(
                "unix socket: uid {uid} is neither root, the API server's user (uid {}) nor in its group (gid {})",
                unix.uid, unix.gid
            )));
        }
        Caller::Unix { uid, gid, pid }
    } else if let Some(tcp) = ext.get::<TcpConnectInfo>() {
        Caller::Plain(tcp.remote_addr())
    } else {
        Caller::Plain(None)
    };
    let Caller::Cert(role) = &caller else {
        return Ok(caller);
    };
    let ok = match need {
        Need::Anyone => true,
        Need::Agent => matches!(role, Role::Agent(_)),
        Need::Access(want) => role.access().is_some_and(|have| have >= want),
    };
    if ok {
        return Ok(caller);
    }
    let wanted = match need {
        Need::Agent => "an agent certificate".to_string(),
        Need::Access(Access::Viewer) => "a viewer, operator or admin certificate".to_string(),
        Need::Access(Access::Operator) => "an operator or admin certificate".to_string(),
        Need::Access(Access::Admin) => "an admin certificate".to_string(),
        Need::Anyone => unreachable!(),
    };
    Err(Status::permission_denied(format!(
        "the {role} ({}) may not call {path}: it needs {wanted}",
        role.uri()
    )))
}

/// The layer for `Server::builder().layer(…)`.
#[derive(Clone)]
pub struct AccessLayer {
    pub unix: UnixPolicy,
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            unix: self.unix,
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    unix: UnixPolicy,
}

impl<S, B, R> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorize(&req, &self.unix) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                tracing::info!(
                    path = req.uri().path(),
                    error = status.message(),
                    "request refused"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The caller of a request, for logs (`unknown` if the layer did not run).
pub fn caller_of<T>(req: &tonic::Request<T>) -> String {
    req.extensions()
        .get::<Caller>()
        .map_or_else(|| "unknown caller".to_string(), Caller::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC that the API server serves has an explicit entry.
    #[test]
    fn every_served_rpc_is_classified() {
        let set =
            <prost_types::FileDescriptorSet as prost::Message>::decode(berth_proto::FILE_DESCRIPTOR_SET)
                .expect("descriptor set");
        let mut seen = 0;
        for file in &set.file {
            for svc in &file.service {
                let full = format!("{}.{}", file.package(), svc.name());
                if !crate::tooling::API_SERVICES.contains(&full.as_str()) {
                    continue;
                }
                for m in &svc.method {
                    let path = format!("/{full}/{}", m.name());
                    assert!(need(&path).is_some(), "{path} has no access rule");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 15, "only {seen} RPCs found");
        assert_eq!(
            need("/berth.v1.SandboxService/Exec"),
            Some(Need::Access(Access::Admin))
        );
        assert_eq!(need("/berth.v1.SandboxService/Nope"), None);
        assert_eq!(need("/grpc.health.v1.Health/Watch"), Some(Need::Anyone));
    }

    #[test]
    fn unix_policy() {
        let p = UnixPolicy { uid: 5, gid: 7 };
        assert!(p.admits(0, 100, None));
        assert!(p.admits(5, 100, None));
        assert!(p.admits(100, 7, None));
        assert!(!p.admits(100, 100, None));
        // This process's supplementary groups come from /proc.
        let me = std::process::id() as i32;
        let groups = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        if let Some(g) = groups
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .and_then(|g| g.split_whitespace().next())
        {
            let gid: u32 = g.parse().unwrap();
            assert!(UnixPolicy { uid: 5, gid }.admits(100, 100, Some(me)));
        }
    }
}
