//! Forwarding names that are not berth's to the node's resolvers.
//!
//! The raw query goes out unchanged (so the client's id, EDNS options and DO bit reach the upstream
//! and the reply fits what the client announced) from a fresh socket with a random source port in the
//! *node's* namespace, never the sandbox's: a sandbox may have no route out at all. Upstreams are tried
//! in order, staggered: the next one is asked when the previous one refused or stayed silent for
//! [`STAGGER`]; the first valid reply wins; after [`FORWARD_TIMEOUT`] the caller answers SERVFAIL.
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hickory_proto::op::{Header, MessageType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use nix::sched::CloneFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::debug;

use super::DnsError;
use crate::kernel::netns;

/// How long a forwarded query may take in all, over every upstream. Below glibc's 5 s first-try
/// timeout, so a client gets our SERVFAIL rather than timing out itself.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one upstream may stay silent before the next one is asked too.
pub const STAGGER: Duration = Duration::from_millis(500);

/// Where upstream sockets come from.
enum Sockets {
    /// The calling thread's namespace: the agent's own (its runtime threads never change namespace).
    Local,
    /// A named namespace: a helper thread that entered it makes the sockets (a socket belongs to the
    /// namespace of the thread that created it). The thread ends when this sender is dropped.
    Netns(mpsc::Sender<SocketRequest>),
}

enum SocketRequest {
    Udp(bool, oneshot::Sender<io::Result<std::net::UdpSocket>>),
    Tcp(bool, oneshot::Sender<io::Result<TcpSocket>>),
}

/// The upstream resolvers and how to reach them.
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    sockets: Sockets,
}

impl Forwarder {
    /// Upstream sockets from the calling thread's namespace.
    pub(crate) fn local(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            sockets: Sockets::Local,
        }
    }

    pub(crate) fn new(upstreams: Vec<SocketAddr>, netns: Option<&str>) -> Result<Forwarder, DnsError> {
        let sockets = match netns {
            None => Sockets::Local,
            Some(name) => Sockets::Netns(socket_thread(name)?),
        };
        Ok(Forwarder { upstreams, sockets })
    }

    pub(crate) fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The first valid reply to `query` (whose id is `id`) from any upstream, over UDP or TCP (the
    /// latter for clients that retried over TCP after a truncated reply). `None` when there are no
    /// upstreams, all failed or [`FORWARD_TIMEOUT`] passed.
    pub(crate) async fn forward(&self, query: &[u8], id: u16, tcp: bool) -> Option<Vec<u8>> {
        if self.upstreams.is_empty() {
            return None;
        }
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        let mut pending = FuturesUnordered::new();
        let mut next = 0;
        loop {
            if let Some(&upstream) = self.upstreams.get(next) {
                next += 1;
                pending.push(async move {
                    let result = if tcp {
                        self.exchange_tcp(upstream, query).await
                    } else {
                        self.exchange_udp(upstream, query, id).await
                    };
                    (upstream, result)
                });
            }
            let more = next < self.upstreams.len();
            tokio::select! {
                Some((upstream, result)) = pending.next() => match result {
                    Ok(reply) => return Some(reply),
                    Err(e) => {
                        debug!(%upstream, error = %e, "upstream DNS failed");
                        if pending.is_empty() && !more {
                            return None;
                        }
                    }
                },
                _ = sleep(STAGGER), if more => {}
                _ = sleep_until(deadline) => {
                    debug!(upstreams = ?self.upstreams, "no upstream DNS answered in time");
                    return None;
                }
            }
        }
    }

    async fn exchange_udp(&self, upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
        let socket = self.udp_socket(upstream.is_ipv6()).await?;
        // Connected: the kernel drops datagrams from other sources, and an ICMP port unreachable
        // (nothing listening, e.g. a loopback resolver that is not there) fails the recv at once.
        socket.connect(upstream).await?;
        socket.send(query).await?;
        let mut buf = vec![0; 65535];
        loop {
            let n = socket.recv(&mut buf).await?;
            if is_reply_to(&buf[..n], id) {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn exchange_tcp(&self, upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = self.tcp_connect(upstream).await?;
        let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut reply = vec![0; usize::from(len)];
        stream.read_exact(&mut reply).await?;
        Ok(reply)
    }

    async fn udp_socket(&self, v6: bool) -> io::Result<UdpSocket> {
        match &self.sockets {
            Sockets::Local => UdpSocket::bind(unspecified(v6)).await,
            Sockets::Netns(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(SocketRequest::Udp(v6, reply)).map_err(|_| gone())?;
                UdpSocket::from_std(rx.await.map_err(|_| gone())??)
            }
        }
    }

    async fn tcp_connect(&self, upstream: SocketAddr) -> io::Result<TcpStream> {
        let v6 = upstream.is_ipv6();
        let socket = match &self.sockets {
            Sockets::Local => new_tcp(v6)?,
            Sockets::Netns(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(SocketRequest::Tcp(v6, reply)).map_err(|_| gone())?;
                rx.await.map_err(|_| gone())??
            }
        };
        socket.connect(upstream).await
    }
}

/// Whether `packet` is a response carrying `id` (hickory reads the header).
fn is_reply_to(packet: &[u8], id: u16) -> bool {
    Header::read(&mut BinDecoder::new(packet))
        .is_ok_and(|h| h.metadata.id == id && h.metadata.message_type == MessageType::Response)
}

fn unspecified(v6: bool) -> SocketAddr {
    if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

fn new_tcp(v6: bool) -> io::Result<TcpSocket> {
    if v6 {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
}

fn gone() -> io::Error {
    io::Error::other("the DNS forwarding socket thread has gone")
}

/// Starts the thread that makes upstream sockets inside namespace `name`.
fn socket_thread(name: &str) -> Result<mpsc::Sender<SocketRequest>, DnsError> {
    let forward_err = |source: io::Error| DnsError::ForwardNetns {
        netns: name.to_owned(),
        source,
    };
    let file = netns::open(name).map_err(|e| forward_err(io::Error::other(e.to_string())))?;
    let (tx, rx) = mpsc::channel::<SocketRequest>();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("berth-dns-fwd".into())
        .spawn(move || {
            let entered = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET);
            drop(file);
            let failed = entered.is_err();
            let _ = ready_tx.send(entered);
            if failed {
                return;
            }
            while let Ok(request) = rx.recv() {
                match request {
                    SocketRequest::Udp(v6, reply) => {
                        let socket = std::net::UdpSocket::bind(unspecified(v6))
                            .and_then(|s| s.set_nonblocking(true).map(|()| s));
                        let _ = reply.send(socket);
                    }
                    SocketRequest::Tcp(v6, reply) => {
                        let _ = reply.send(new_tcp(v6));
                    }
                }
            }
        })
        .map_err(forward_err)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(e)) => Err(forward_err(io::Error::from(e))),
        Err(_) => Err(forward_err(io::Error::other("the socket thread died"))),
    }
}
