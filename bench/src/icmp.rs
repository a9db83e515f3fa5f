//! Reachability probe: ICMP echo from inside a sandbox's namespace, one
//! request per millisecond, starting the moment it is told to go; reports
//! how long after "go" the first reply from the target arrived. A raw socket
//! made on a thread that entered the namespace (so no process is spawned
//! between the create returning and the first echo).
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_agent::kernel::netns;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A probe armed inside a namespace, waiting for [`Probe::go`].
pub struct Probe {
    go: mpsc::Sender<Instant>,
    done: tokio::task::JoinHandle<Result<Option<Duration>>>,
}

impl Probe {
    /// Opens the socket inside `ns` and waits for the signal.
    pub async fn arm(ns: &str, target: Ipv4Addr, timeout: Duration) -> Result<Self> {
        let (go_tx, go_rx) = mpsc::channel::<Instant>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let ns = ns.to_string();
        let done = tokio::spawn(async move {
            netns::run_in(&ns, move || probe(go_rx, ready_tx, target, timeout))
                .await
                .context("probe thread")?
        });
        ready_rx.await.context("probe thread died")??;
        Ok(Self { go: go_tx, done })
    }

    /// Starts probing now (call it right after the operation returns) and
    /// waits for the first reply; `None` when none came within the timeout.
    pub async fn go(self, t0: Instant) -> Result<Option<Duration>> {
        let _ = self.go.send(t0);
        self.done.await?
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let word = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"berth-bench-echo");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `pkt` (IPv4 header + ICMP) is an echo reply from `target` with `id`.
fn is_reply(pkt: &[u8], target: Ipv4Addr, id: u16) -> bool {
    if pkt.len() < 20 {
        return false;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if pkt.len() < ihl + 8 {
        return false;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let icmp = &pkt[ihl..];
    src == target && icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id
}

/// Runs on a thread inside the sandbox's namespace.
fn probe(
    go: mpsc::Receiver<Instant>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
    target: Ipv4Addr,
    timeout: Duration,
) -> Result<Option<Duration>> {
    let socket = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .and_then(|s| s.set_read_timeout(Some(Duration::from_micros(200))).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("raw ICMP socket: {e}");
            let _ = ready.send(Err(anyhow::anyhow!(msg.clone())));
            anyhow::bail!(msg);
        }
    };
    let _ = ready.send(Ok(()));
    let Ok(t0) = go.recv() else {
        return Ok(None);
    };
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let dest = SockAddr::from(SocketAddrV4::new(target, 0));
    let mut buf = [0u8; 1500];
    let mut seq: u16 = 0;
    let mut sock = &socket;
    while t0.elapsed() < timeout {
        seq = seq.wrapping_add(1);
        // Unreachable destinations may fail the send (e.g. no route yet); keep trying.
        let _ = socket.send_to(&echo_request(id, seq), &dest);
        let next = Instant::now() + Duration::from_millis(1);
        while Instant::now() < next {
            match sock.read(&mut buf) {
                Ok(n) if is_reply(&buf[..n], target, id) => return Ok(Some(t0.elapsed())),
                _ => {}
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0);
    }
}
