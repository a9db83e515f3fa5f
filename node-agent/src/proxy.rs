//! Userland proxies for ports published on `[::1]`, as Docker's
//! docker-proxy: the kernel drops DNAT-ed IPv6 traffic from `::1` (IPv6 has
//! no `route_localnet`), so the agent listens on `[::1]:PORT` in its node's
//! namespace and forwards to the sandbox's IPv6 address and container port
//! (TCP connections and UDP flows). One set per agent process, converged
//! by the firewall's actions to the wanted set ([`sync`]: stopped when the
//! sandbox or mapping goes, or the target changes; started again after an
//! agent restart by the first pass); [`running`] is what full passes
//! compare with. Stopping a proxy closes its listener and every connection
//! and flow it carries.
//!
//! Bounded: at most [`MAX_TCP`] connections and [`MAX_UDP`] flows per port
//! (more wait, or their datagrams are dropped); a TCP connection idle for
//! [`TCP_IDLE`] is closed, a UDP flow that got no reply for [`UDP_IDLE`]
//! forgotten (the client's next datagram opens a new one).
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::ports::Proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::nft::Proxies;

/// Connections one TCP proxy carries at once.
pub const MAX_TCP: usize = 1024;
/// Client addresses one UDP proxy keeps a flow for at once.
pub const MAX_UDP: usize = 256;
/// A TCP connection with no byte either way for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(600);
/// A UDP flow with no reply from the sandbox for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long connecting to the sandbox may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("proxy for [::1]:{port}/{proto}: {source}")]
pub struct ProxyError {
    pub port: u16,
    pub proto: Proto,
    #[source]
    pub source: std::io::Error,
}

struct Running {
    target: SocketAddrV6,
    /// Owns the listener and its connections' tasks: aborting it closes all.
    task: JoinHandle<()>,
}

fn proxies() -> &'static Mutex<BTreeMap<(Proto, u16), Running>> {
    static PROXIES: Mutex<BTreeMap<(Proto, u16), Running>> = Mutex::new(BTreeMap::new());
    &PROXIES
}

/// The proxies that run now (a proxy whose task ended, which only an
/// unexpected listener error does, is not counted).
pub fn running() -> Proxies {
    proxies()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, r)| !r.task.is_finished())
        .map(|(k, r)| (*k, r.target))
        .collect()
}

/// Makes the running proxies exactly `want`: stops the others (and those
/// whose target changed or that ended), starts the missing ones, binding
/// `[::1]:PORT` in the calling thread's namespace. Every proxy is tried;
/// the first bind that failed is returned.
pub async fn sync(want: &Proxies) -> Result<(), ProxyError> {
    let stopped: Vec<((Proto, u16), Running)> = {
        let mut map = proxies().lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(Proto, u16)> = map
            .iter()
            .filter(|(k, r)| want.get(k) != Some(&r.target) || r.task.is_finished())
            .map(|(k, _)| *k)
            .collect();
        gone.into_iter()
            .filter_map(|k| map.remove(&k).map(|r| (k, r)))
            .collect()
    };
    for ((proto, port), r) in stopped {
        r.task.abort();
        // Closed (listener and connections) before the caller answers.
        let _ = r.task.await;
        tracing::info!(port, %proto, "[::1] proxy stopped");
    }
    let mut map = proxies().lock().unwrap_or_else(|e| e.into_inner());
    let mut first = None;
    for (&(proto, port), &target) in want {
        if map.contains_key(&(proto, port)) {
            continue;
        }
        match start(proto, port, target) {
            Ok(task) => {
                tracing::info!(port, %proto, %target, "[::1] proxy started");
                map.insert((proto, port), Running { target, task });
            }
            Err(source) => {
                tracing::warn!(port, %proto, error = %source, "[::1] proxy could not listen");
                first.get_or_insert(ProxyError { port, proto, source });
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Binds now (so the error is the caller's) and serves in a task.
fn start(proto: Proto, port: u16, target: SocketAddrV6) -> std::io::Result<JoinHandle<()>> {
    let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    Ok(match proto {
        Proto::Tcp => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            let listener = socket.listen(1024)?;
            tokio::spawn(serve_tcp(listener, target))
        }
        Proto::Udp => {
            let std = std::net::UdpSocket::bind(addr)?;
            std.set_nonblocking(true)?;
            tokio::spawn(serve_udp(Arc::new(UdpSocket::from_std(std)?), target))
        }
    })
}

async fn serve_tcp(listener: TcpListener, target: SocketAddrV6) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    // Dropped with this task: every connection closes with the proxy.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    conns.spawn(async move {
                        let _permit = permit;
                        let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
                        match upstream {
                            Ok(Ok(up)) => pump(client, up).await,
                            // The client sees its connection closed, as with docker-proxy.
                            Ok(Err(e)) => tracing::debug!(%target, error = %e, "[::1] proxy: sandbox refused"),
                            Err(_) => tracing::debug!(%target, "[::1] proxy: sandbox did not answer"),
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "[::1] proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Copies both ways until both sides are done or nothing moved for [`TCP_IDLE`].
async fn pump(mut a: TcpStream, mut b: TcpStream) {
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let (mut abuf, mut bbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r {
                Ok(0) | Err(_) => { a_open = false; let _ = bw.shutdown().await; }
                Ok(n) => if bw.write_all(&abuf[..n]).await.is_err() { return },
            },
            r = br.read(&mut bbuf), if b_open => match r {
                Ok(0) | Err(_) => { b_open = false; let _ = aw.shutdown().await; }
                Ok(n) => if aw.write_all(&bbuf[..n]).await.is_err() { return },
            },
            _ = tokio::time::sleep(TCP_IDLE) => return,
        }
    }
}

async fn serve_udp(listener: Arc<UdpSocket>, target: SocketAddrV6) {
    // Client → its flow's socket (connected to the sandbox) and task.
    let mut flows: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<SocketAddr>();
    let mut buf = vec![0u8; 65536];
    // Flows' tasks are aborted when this task ends (the proxy stopped).
    struct Flows<'a>(&'a mut HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)>);
    impl Drop for Flows<'_> {
        fn drop(&mut self) {
            for (_, (_, t)) in self.0.drain() {
                t.abort();
            }
        }
    }
    let flows = Flows(&mut flows);
    loop {
        tokio::select! {
            r = listener.recv_from(&mut buf) => {
                let Ok((n, client)) = r else { continue };
                if !flows.0.contains_key(&client) {
                    if flows.0.len() >= MAX_UDP {
                        tracing::debug!(%client, "[::1] proxy: too many UDP flows, datagram dropped");
                        continue;
                    }
                    let Ok(up) = open_flow(target).await else { continue };
                    let up = Arc::new(up);
                    let task = tokio::spawn(udp_replies(up.clone(), listener.clone(), client, done_tx.clone()));
                    flows.0.insert(client, (up, task));
                }
                if let Some((up, _)) = flows.0.get(&client) {
                    let _ = up.send(&buf[..n]).await;
                }
            }
            Some(client) = done_rx.recv() => {
                flows.0.remove(&client);
            }
        }
    }
}

async fn open_flow(target: SocketAddrV6) -> std::io::Result<UdpSocket> {
    let up = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).await?;
    up.connect(target).await?;
    Ok(up)
}

/// A flow's replies back to its client, until [`UDP_IDLE`] passes without one.
async fn udp_replies(
    up: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    done: tokio::sync::mpsc::UnboundedSender<SocketAddr>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up.recv(&mut buf)).await {
        let _ = listener.send_to(&buf[..n], client).await;
    }
    let _ = done.send(client);
}
