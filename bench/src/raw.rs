//! The raw floor: what the kernel work of a sandbox costs with no berth
//! around it, done with berth-agent's own kernel layer inside a lab node
//! namespace: create the named namespace (lo up), open a netlink socket in
//! it, and create the veth with its peer born inside (one RTM_NEWLINK),
//! attached to a bridge, with address and default route. Removal is the
//! namespace deletion (the kernel removes the veth pair asynchronously).
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_agent::kernel::{link, netns};
use rtnetlink::Handle;

pub struct RawFloor {
    node: Handle,
    master: u32,
    gateway: Ipv4Addr,
}

impl RawFloor {
    /// Opens netlink in `node_ns` and makes the bridge (not timed).
    pub async fn new(node_ns: &str) -> Result<Self> {
        let node = netns::netlink(Some(node_ns)).await?;
        let gateway = Ipv4Addr::new(10, 90, 0, 1);
        let master = link::ensure_bridge(&node, "rawbr0", 1500, Some((gateway, 16))).await?;
        Ok(Self {
            node,
            master,
            gateway,
        })
    }

    fn addr(i: usize) -> Ipv4Addr {
        let n = i as u32 + 2;
        Ipv4Addr::new(10, 90, (n >> 8) as u8, (n & 0xff) as u8)
    }

    /// Creates sandbox `i` as namespace `name`; returns the time it took.
    pub async fn create(&self, name: &str, i: usize) -> Result<Duration> {
        let addr = Self::addr(i);
        let o = addr.octets();
        let host = format!("rv{i}");
        let start = Instant::now();
        netns::create(name, "berth:bench").await?;
        let sandbox = netns::netlink(Some(name)).await?;
        let spec = link::VethSpec {
            host_name: &host,
            master: self.master,
            mtu: 1500,
            netns: name,
            peer_name: "eth0",
            peer_mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
            addr,
            prefix: 16,
            gateway: Some(self.gateway),
            foreign_netns: false,
        };
        link::ensure_veth_with(&self.node, &sandbox, &spec).await?;
        Ok(start.elapsed())
    }

    /// Deletes namespace `name`; returns the time it took.
    pub async fn remove(&self, name: &str) -> Result<Duration> {
        let start = Instant::now();
        netns::delete(name).await?;
        Ok(start.elapsed())
    }

    /// Deletes namespace `name` of sandbox `i`, then at once its host veth
    /// end (as berth's agent does); returns the time it took.
    pub async fn remove_with_veth(&self, name: &str, i: usize) -> Result<Duration> {
        let start = Instant::now();
        netns::delete(name).await?;
        link::delete(&self.node, &format!("rv{i}")).await?;
        Ok(start.elapsed())
    }
}
