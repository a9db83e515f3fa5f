//! The embedded DNS responder: like Docker's `127.0.0.11`, one per sandbox on a user-defined bridge
//! or overlay network, so a sandbox resolves the names and aliases of the sandboxes it shares a
//! network with, and nothing else of berth's.
//!
//! Each served sandbox gets a UDP socket and a TCP listener on [`DNS_ADDR`]`:53` inside its namespace
//! (made on a throwaway thread that entered the namespace, then handed to the agent's runtime) and one
//! task that owns both. 127.0.0.11 needs no address of its own: `lo` holds 127.0.0.1/8, and the whole
//! 127.0.0.0/8 is local on it (`local 127.0.0.0/8 dev lo` in the local table), so `lo` only has to be
//! up, which [`crate::kernel::netns::create`] does. Packets from outside cannot reach it (martian
//! destination without `route_localnet`).
//!
//! Answers, per query (names are case-insensitive; [`Names`] gets them lowercase without the dot):
//! - a berth name ([`Names::lookup`] says `Some`): A → its addresses (TTL [`TTL`] = 0, because the
//!   names change the moment a sandbox connects or disconnects; rotated on every answer, as Docker
//!   shuffles them), any other type (AAAA above all) → NOERROR without records, so a resolver asking
//!   for A and AAAA in parallel does not wait for a timeout;
//! - `PTR` for `d.c.b.a.in-addr.arpa` when [`Names::reverse`] knows the address (optional);
//! - anything else: forwarded unchanged to the upstreams from the *node's* namespace (tried in order,
//!   the next one [`STAGGER`] after a silent one or at once after a refusal), and the first reply
//!   relayed as it came (same id); SERVFAIL when all of them failed or none answered within
//!   [`FORWARD_TIMEOUT`] (2 s); REFUSED at once when there are no upstreams (the responder refuses
//!   to resolve what it does not own: glibc moves on and reports failure without retrying for
//!   seconds);
//! - replies that do not fit the client's UDP size (512 bytes, or its EDNS size up to 1232) are sent
//!   truncated (TC), and the client retries over TCP, which is served too (forwarded over TCP).
//!
//! Lifecycle: [`DnsServer::serve`] when a sandbox joins its first user-defined network,
//! [`DnsServer::stop`] when it leaves its last one *and before its namespace is deleted*: an open
//! socket holds a reference to its namespace, so the namespace (and the veths in it) would otherwise
//! stay alive, unnamed, until `stop`. `stop` aborts the task, which closes both sockets and every
//! in-flight forward of that sandbox.
//!
//! Search domains: glibc tries a single-label name with the `search` domains of resolv.conf appended
//! first (without a `search` line, with the domain of a dotted host name), and each such try is a
//! forwarded round trip before the bare name is answered here; only the exact name is matched. A
//! sandbox resolv.conf with `search .` (glibc skips the root domain) avoids that.
mod answer;
mod forward;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

use crate::kernel::{KernelError, netns};
use answer::{Context, Outcome};
use forward::Forwarder;
pub use forward::{FORWARD_TIMEOUT, STAGGER};

/// Where the responder listens inside every served sandbox (port [`DNS_PORT`]).
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// The port, UDP and TCP.
pub const DNS_PORT: u16 = 53;
/// TTL of every record we answer: 0, so no cache keeps a name after its sandbox left the network.
pub const TTL: u32 = 0;

/// Forwards in flight plus open TCP connections per sandbox; beyond it, forwards are answered
/// SERVFAIL at once and new TCP connections are closed.
const MAX_JOBS: usize = 256;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest query we accept over UDP (queries are tiny; bigger ones get FORMERR).
const UDP_QUERY_MAX: usize = 4096;

/// Answers for one sandbox: A records for the names it may see.
pub trait Names: Send + Sync + 'static {
    /// Addresses for `name` (already lowercased, without trailing dot) as seen by `sandbox_id`;
    /// None = not a berth name (forward it).
    ///
    /// Called on the runtime for every query: must be quick and must not block (a `std` lock
    /// around an in-memory map is fine). A panic ends that sandbox's responder
    /// ([`DnsServer::is_serving`] turns false; `serve` starts it again).
    fn lookup(&self, sandbox_id: &str, name: &str) -> Option<Vec<Ipv4Addr>>;

    /// The IPv6 addresses of a name [`Names::lookup`] knows (its endpoints on
    /// dual-stack networks), for AAAA; by default none.
    fn lookup6(&self, sandbox_id: &str, name: &str) -> Vec<std::net::Ipv6Addr> {
        let _ = (sandbox_id, name);
        Vec::new()
    }

    /// Names (without or with trailing dot, e.g. `web.mynet`) for a PTR query of `addr` (IPv4, or
    /// IPv6 on a dual-stack network) as seen by `sandbox_id`; None = not a berth address (forward
    /// it). By default none are berth's.
    fn reverse(&self, sandbox_id: &str, addr: std::net::IpAddr) -> Option<Vec<String>> {
        let _ = (sandbox_id, addr);
        None
    }
}

/// Why a sandbox could not be served.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The sandbox's namespace could not be entered (e.g. it does not exist).
    #[error("serving DNS for sandbox {sandbox}: {source}")]
    Netns {
        sandbox: String,
        #[source]
        source: KernelError,
    },
    /// 127.0.0.11:53 could not be bound in the namespace (`lo` down, or something else holds it).
    #[error(
        "serving DNS for sandbox {sandbox}: binding {proto} {DNS_ADDR}:{DNS_PORT} in netns {netns}: {source}"
    )]
    Bind {
        sandbox: String,
        netns: String,
        proto: &'static str,
        #[source]
        source: io::Error,
    },
    /// The namespace to forward from could not be entered.
    #[error("preparing DNS forwarding from netns {netns}: {source}")]
    ForwardNetns {
        netns: String,
        #[source]
        source: io::Error,
    },
}

/// The responder for every served sandbox of this node.
pub struct DnsServer {
    shared: Arc<Shared>,
    serving: Mutex<HashMap<String, Serving>>,
    /// Serialises `serve` calls, so two for one sandbox cannot race for its port.
    serve_lock: tokio::sync::Mutex<()>,
}

struct Serving {
    netns: String,
    task: JoinHandle<()>,
}

/// What every sandbox task shares.
struct Shared {
    names: Arc<dyn Names>,
    forwarder: Forwarder,
    rotation: AtomicUsize,
}

impl DnsServer {
    /// `upstreams`: resolvers to forward other names to (UDP port 53 unless given; TCP to the same
    /// address for clients that retry over TCP), used from the agent's own (node) namespace;
    /// empty = answer other names at once with REFUSED.
    pub fn new(names: Arc<dyn Names>, upstreams: Vec<SocketAddr>) -> Self {
        Self::with_forwarder(names, Forwarder::local(upstreams))
    }

    /// As [`DnsServer::new`], but the sockets to the upstreams are made inside namespace
    /// `forward_netns` instead of the calling thread's (for an agent that did not enter its node's
    /// namespace, and for tests). A helper thread stays in that namespace while the server lives.
    pub fn with_forward_netns(
        names: Arc<dyn Names>,
        upstreams: Vec<SocketAddr>,
        forward_netns: &str,
    ) -> Result<Self, DnsError> {
        Ok(Self::with_forwarder(
            names,
            Forwarder::new(upstreams, Some(forward_netns))?,
        ))
    }

    fn with_forwarder(names: Arc<dyn Names>, forwarder: Forwarder) -> Self {
        DnsServer {
            shared: Arc::new(Shared {
                names,
                forwarder,
                rotation: AtomicUsize::new(0),
            }),
            serving: Mutex::new(HashMap::new()),
            serve_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The upstreams other names are forwarded to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        self.shared.forwarder.upstreams()
    }

    /// Starts serving inside namespace `netns` for `sandbox_id` (idempotent: a second call for the
    /// same sandbox is a no-op while its task runs in the same namespace; a different namespace
    /// replaces it). Must run inside the agent's tokio runtime.
    pub async fn serve(&self, sandbox_id: &str, netns: &str) -> Result<(), DnsError> {
        let _one_at_a_time = self.serve_lock.lock().await;
        let replaced = {
            let mut serving = lock(&self.serving);
            match serving.get(sandbox_id) {
                Some(s) if s.netns == netns && !s.task.is_finished() => return Ok(()),
                _ => serving.remove(sandbox_id),
            }
        };
        if let Some(old) = replaced {
            old.task.abort();
        }
        let (udp, tcp) = bind(sandbox_id, netns).await?;
        let task = tokio::spawn(run(self.shared.clone(), sandbox_id.to_owned(), udp, tcp));
        lock(&self.serving).insert(
            sandbox_id.to_owned(),
            Serving {
                netns: netns.to_owned(),
                task,
            },
        );
        info!(
            sandbox = sandbox_id,
            netns, "serving DNS on {DNS_ADDR}:{DNS_PORT}"
        );
        Ok(())
    }

    /// Stops serving for the sandbox (idempotent). Aborts its task, which closes its sockets and
    /// releases its namespace; call it before deleting the namespace.
    pub fn stop(&self, sandbox_id: &str) {
        if let Some(s) = lock(&self.serving).remove(sandbox_id) {
            s.task.abort();
            info!(sandbox = sandbox_id, netns = %s.netns, "stopped serving DNS");
        }
    }

    /// Whether `sandbox_id` is being served (its task is running).
    pub fn is_serving(&self, sandbox_id: &str) -> bool {
        lock(&self.serving)
            .get(sandbox_id)
            .is_some_and(|s| !s.task.is_finished())
    }

    /// The served sandbox ids, sorted (for a full sync's sweep).
    pub fn serving(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.serving).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Upstreams from a resolv.conf text: the address of every `nameserver` line, port 53, in order,
    /// without duplicates. Loopback ones (127.0.0.53 of systemd-resolved, ::1) are *kept*: the
    /// forwarder runs in the node's namespace, where they work (a sandbox never talks to them). Lines
    /// with an IPv6 zone (`fe80::1%eth0`) and unparsable ones are skipped.
    pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
        let mut upstreams = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                continue;
            }
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            let upstream = SocketAddr::new(ip, DNS_PORT);
            if !upstreams.contains(&upstream) {
                upstreams.push(upstream);
            }
        }
        upstreams
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for (_, s) in lock(&self.serving).drain() {
            s.task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Decides how to answer a query, and counts it (`berth_dns_queries_total`).
    fn answer(&self, sandbox_id: &str, packet: &[u8], udp: bool) -> Outcome {
        let outcome = answer::answer(
            &Context {
                names: &*self.names,
                sandbox_id,
                can_forward: !self.forwarder.upstreams().is_empty(),
                udp,
                rotation: self.rotation.fetch_add(1, Ordering::Relaxed),
            },
            packet,
        );
        let result = match &outcome {
            Outcome::Reply(reply) => crate::metrics::dns_result_of(reply),
            Outcome::Forward { .. } => "forwarded",
            Outcome::Ignore => "ignored",
        };
        crate::metrics::dns_query(!udp, result);
        outcome
    }

    /// Relays a query to the upstreams, timed (`berth_dns_forward_duration_seconds`).
    async fn forward(&self, query: &[u8], id: u16, tcp: bool) -> Option<Vec<u8>> {
        let start = std::time::Instant::now();
        let reply = self.forwarder.forward(query, id, tcp).await;
        crate::metrics::dns_forward(reply.is_some(), start);
        reply
    }
}

/// Binds UDP and TCP 127.0.0.11:53 inside `netns`. Retries briefly while the port is still held: a
/// task aborted by `stop` or a replacing `serve` closes its sockets a moment later.
async fn bind(sandbox: &str, ns: &str) -> Result<(UdpSocket, TcpListener), DnsError> {
    let addr = SocketAddr::from((DNS_ADDR, DNS_PORT));
    let bind_err = |proto, source| DnsError::Bind {
        sandbox: sandbox.to_owned(),
        netns: ns.to_owned(),
        proto,
        source,
    };
    let mut retries = 50;
    loop {
        let bound = netns::run_in(ns, move || -> Result<_, (&'static str, io::Error)> {
            let udp = std::net::UdpSocket::bind(addr).map_err(|e| ("UDP", e))?;
            udp.set_nonblocking(true).map_err(|e| ("UDP", e))?;
            let tcp = std::net::TcpListener::bind(addr).map_err(|e| ("TCP", e))?;
            tcp.set_nonblocking(true).map_err(|e| ("TCP", e))?;
            Ok((udp, tcp))
        })
        .await
        .map_err(|source| DnsError::Netns {
            sandbox: sandbox.to_owned(),
            source,
        })?;
        match bound {
            Ok((udp, tcp)) => {
                let udp = UdpSocket::from_std(udp).map_err(|e| bind_err("UDP", e))?;
                let tcp = TcpListener::from_std(tcp).map_err(|e| bind_err("TCP", e))?;
                return Ok((udp, tcp));
            }
            Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse && retries > 0 => {
                retries -= 1;
                sleep(Duration::from_millis(10)).await;
            }
            Err((proto, e)) => return Err(bind_err(proto, e)),
        }
    }
}

/// A reply to send back over UDP when a job ends (`None` for TCP connections, which answer themselves).
type JobOutput = Option<(Vec<u8>, SocketAddr)>;

/// One sandbox's responder. Owns its sockets and, through `jobs`, its forwards and TCP connections:
/// aborting it closes all of them. An idle responder holds no buffer: a query is read into the
/// stack once the socket is readable (a node serves thousands of sandboxes).
async fn run(shared: Arc<Shared>, sandbox: String, udp: UdpSocket, tcp: TcpListener) {
    let mut jobs: JoinSet<JobOutput> = JoinSet::new();
    loop {
        tokio::select! {
            readable = udp.readable() => {
                if let Err(e) = readable {
                    debug!(sandbox, error = %e, "DNS socket failed");
                    sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let Some((query, peer)) = recv_query(&udp, &sandbox) else { continue };
                match shared.answer(&sandbox, &query, true) {
                    Outcome::Reply(reply) => send(&udp, &reply, peer).await,
                    Outcome::Forward { fallback, .. } if jobs.len() >= MAX_JOBS => {
                        warn!(sandbox, "too many DNS forwards in flight; answering SERVFAIL");
                        crate::metrics::dns_query(false, "servfail");
                        send(&udp, &fallback, peer).await;
                    }
                    Outcome::Forward { id, fallback } => {
                        let shared = shared.clone();
                        jobs.spawn(async move {
                            let reply = shared.forward(&query, id, false).await;
                            Some((reply.unwrap_or(fallback), peer))
                        });
                    }
                    Outcome::Ignore => {}
                }
            }
            accepted = tcp.accept() => match accepted {
                Ok((stream, _)) if jobs.len() < MAX_JOBS => {
                    jobs.spawn(serve_tcp(shared.clone(), sandbox.clone(), stream));
                }
                Ok(_) => warn!(sandbox, "too many DNS jobs; closing a TCP connection"),
                Err(e) => {
                    debug!(sandbox, error = %e, "DNS accept failed");
                    sleep(Duration::from_millis(10)).await;
                }
            },
            Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                if let Ok(Some((reply, peer))) = done {
                    send(&udp, &reply, peer).await;
                }
            }
        }
    }
}

/// Reads one datagram from a readable socket (None: nothing there after all, or an error).
fn recv_query(udp: &UdpSocket, sandbox: &str) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; UDP_QUERY_MAX];
    match udp.try_recv_from(&mut buf) {
        Ok((n, peer)) => Some((buf[..n].to_vec(), peer)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => {
            debug!(sandbox, error = %e, "DNS recv failed");
            None
        }
    }
}

async fn send(udp: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = udp.send_to(reply, peer).await {
        debug!(%peer, error = %e, "DNS send failed");
    }
}

/// One TCP client: length-prefixed queries, answered in order, until it closes or idles.
async fn serve_tcp(shared: Arc<Shared>, sandbox: String, mut stream: TcpStream) -> JobOutput {
    loop {
        let len = timeout(TCP_IDLE, stream.read_u16()).await.ok()?.ok()?;
        let mut query = vec![0; usize::from(len)];
        timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .ok()?
            .ok()?;
        let reply = match shared.answer(&sandbox, &query, false) {
            Outcome::Reply(reply) => reply,
            Outcome::Forward { id, fallback } => shared.forward(&query, id, true).await.unwrap_or(fallback),
            Outcome::Ignore => continue,
        };
        let len = u16::try_from(reply.len()).ok()?;
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        timeout(TCP_IDLE, stream.write_all(&framed)).await.ok()?.ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_upstreams() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  127.0.0.53 \n\
                    nameserver ::1\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n\
                    ;nameserver 9.9.9.9\noptions ndots:2\n";
        let got = DnsServer::upstreams_from_resolv_conf(text);
        let want: Vec<SocketAddr> = ["10.0.0.2:53", "127.0.0.53:53", "[::1]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
}
