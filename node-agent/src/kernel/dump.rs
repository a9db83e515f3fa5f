//! Netlink dumps read one message at a time, for the node-wide dumps whose
//! size grows with the node's sandboxes (its links: one host veth each).
//!
//! rtnetlink's connection task parses a whole dump into its queue before its
//! caller sees the first message: every read of the socket makes the kernel
//! fill the next chunk, so the task never finds it empty until the dump ends.
//! A dump of 2,000 links held ~75 MiB of parsed messages at once, and glibc
//! kept that as the agent's resident memory. Here the socket is read in a
//! blocking thread and each message is reduced by the caller before the next
//! is parsed, so the dump costs one receive buffer plus what the caller keeps.
//! The socket checks requests strictly, so the kernel applies their filters
//! (the addresses of one link, not of all 2,000).
use std::io;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{KernelError, Result};

/// Receive buffer: the kernel fills at most ~32 KiB per read of a dump.
const RECV_BUF: usize = 64 * 1024;

/// Sends `request` as a dump on a new socket in the calling thread's
/// namespace (the socket's namespace is fixed when it is made), then reads
/// the answer on a blocking thread, keeping what `keep` returns for each message.
pub async fn dump<T, F>(what: &str, request: RouteNetlinkMessage, keep: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(RouteNetlinkMessage) -> Option<T> + Send + 'static,
{
    let io_err = |e: io::Error| KernelError::Io {
        op: what.to_string(),
        source: e,
    };
    let socket = open().map_err(io_err)?;
    tokio::task::spawn_blocking(move || read_dump(&socket, request, keep))
        .await
        .map_err(|e| io_err(io::Error::other(e)))?
        .map_err(io_err)
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    // The kernel then honours a request's filters (an address dump's
    // ifa_index) instead of answering with every object.
    socket.set_netlink_get_strict_chk(true)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn read_dump<T>(
    socket: &Socket,
    request: RouteNetlinkMessage,
    mut keep: impl FnMut(RouteNetlinkMessage) -> Option<T>,
) -> io::Result<Vec<T>> {
    const SEQ: u32 = 1;
    let mut msg = NetlinkMessage::from(request);
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.header.sequence_number = SEQ;
    msg.finalize();
    let mut out_buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut out_buf);
    socket.send(&out_buf, 0)?;

    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut offset = 0;
        while offset < n {
            let bytes = &buf[offset..n];
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            if len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "empty netlink message",
                ));
            }
            offset += len.next_multiple_of(4);
            if msg.header.sequence_number != SEQ {
                continue;
            }
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(match e.code {
                        Some(code) => io::Error::from_raw_os_error(-code.get()),
                        None => io::Error::other("netlink: unexpected ACK to a dump"),
                    });
                }
                NetlinkPayload::InnerMessage(m) => out.extend(keep(m)),
                _ => {}
            }
        }
    }
}
