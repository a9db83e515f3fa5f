//! Address management in etcd: subnets from Docker's pools, VNIs, and
//! endpoint addresses, each taken with a transaction so two API servers can
//! never hand out the same one.
//!
//! * Subnets: one key per subnet under `subnets/<scope>/`, plus a guard key
//!   per scope that every allocation rewrites and compares. Two requests for
//!   overlapping (not only identical) subnets therefore cannot both commit.
//! * Addresses: one key per address under `ipam/<network>/<pool>/`, taken with
//!   `create_revision == 0`. The pool is the node for local-scope networks
//!   (each node has its own bridge) and `_cluster` for global ones. Picked
//!   next-fit after a per-pool cursor kept in memory (a hint: the
//!   transaction decides), so a pick reads a few keys, not the pool.
use std::collections::HashSet;
use std::net::Ipv4Addr;

use berth_core::model::Scope;
use berth_core::net::{self, GLOBAL_POOL_TEXT, LOCAL_POOL_TEXT};
use ipnet::Ipv4Net;
use rand::Rng;

use crate::error::{ApiError, Result};
use crate::store::keys::{CLUSTER_POOL, last_segment};
use crate::store::records::NetworkRecord;
use crate::store::{Guard, Op, Outcome, Read, Store, Write};

/// First VXLAN network identifier handed out (Docker's overlay driver starts here too).
pub const FIRST_VNI: u32 = 4096;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// How many times an allocation retries after losing a race.
pub const MAX_ATTEMPTS: usize = 64;

/// Subnets taken in one scope, with the guard revision they were read at.
#[derive(Debug, Clone)]
pub struct TakenSubnets {
    pub subnets: Vec<(Ipv4Net, String)>,
    pub guard_revision: i64,
}

/// Reads the subnets of `scope` and the guard revision, in one consistent read.
pub async fn taken_subnets(store: &Store, scope: Scope) -> Result<TakenSubnets> {
    let guard = store.keys.subnet_guard(scope);
    let prefix = store.keys.subnets(scope);
    let mut reads = store
        .read_together(vec![Read::Key(guard), Read::Under(prefix)])
        .await?
        .into_iter();
    let guard_revision = reads
        .next()
        .and_then(|g| g.first().map(|e| e.mod_revision))
        .unwrap_or(0);
    let mut subnets = Vec::new();
    for entry in reads.next().unwrap_or_default() {
        let key = &entry.key;
        // .../subnets/<scope>/<a.b.c.d>-<len>/<network-id>
        let seg = key.rsplit('/').nth(1).unwrap_or_default().replacen('-', "/", 1);
        let net: Ipv4Net = seg
            .parse()
            .map_err(|_| ApiError::Internal(format!("bad subnet key {key}")))?;
        subnets.push((net, String::from_utf8_lossy(&entry.value).into_owned()));
    }
    Ok(TakenSubnets {
        subnets,
        guard_revision,
    })
}

/// A subnet a new network must not overlap whatever its scope, and what it
/// is, for the refusal: a node's own route, or a network of the other scope
/// (an overlay and a local bridge network meet on every node).
#[derive(Debug, Clone)]
pub struct Avoid {
    pub subnet: Ipv4Net,
    pub what: String,
}

/// Chooses the subnet for a new network: `requested` if it overlaps nothing
/// taken (local scope; a global network's explicit subnet may overlap
/// other global ones, since overlays never share a routing table) and
/// nothing in `avoid`, else the first subnet of the scope's pool that
/// overlaps neither.
/// `name_of` turns a network id into a name for the error message.
pub fn choose_subnet(
    scope: Scope,
    requested: Option<Ipv4Net>,
    taken: &[(Ipv4Net, String)],
    avoid: &[Avoid],
    name_of: impl Fn(&str) -> String,
) -> Result<Ipv4Net> {
    match requested {
        Some(want) => {
            if let Some(a) = avoid.iter().find(|a| net::overlaps(want, a.subnet)) {
                return Err(ApiError::FailedPrecondition(format!(
                    "subnet {want} overlaps {}",
                    a.what
                )));
            }
            if scope == Scope::Global {
                return Ok(want);
            }
            if let Some((net, id)) = taken.iter().find(|(net, _)| net::overlaps(want, *net)) {
                return Err(ApiError::FailedPrecondition(format!(
                    "subnet {want} overlaps {net} of network {}",
                    name_of(id)
                )));
            }
            Ok(want)
        }
        None => {
            let nets: Vec<Ipv4Net> = taken
                .iter()
                .map(|(n, _)| *n)
                .chain(avoid.iter().map(|a| a.subnet))
                .collect();
            let (free, pools) = match scope {
                Scope::Local => (net::first_free(net::local_pool(), &nets), LOCAL_POOL_TEXT),
                Scope::Global => (net::first_free(net::global_pool(), &nets), GLOBAL_POOL_TEXT),
            };
            free.ok_or_else(|| {
                ApiError::Exhausted(format!(
                    "all predefined {scope} address pools ({pools}) are in use; pass --subnet"
                ))
            })
        }
    }
}

/// The lowest VNI from [`FIRST_VNI`] not in `taken`.
pub fn choose_vni(taken: &HashSet<u32>) -> Result<u32> {
    (FIRST_VNI..=MAX_VNI)
        .find(|v| !taken.contains(v))
        .ok_or_else(|| ApiError::Exhausted("no VXLAN network identifier left".into()))
}

/// VNIs in use.
pub async fn taken_vnis(store: &Store) -> Result<HashSet<u32>> {
    Ok(store
        .list_keys(&store.keys.vnis())
        .await?
        .iter()
        .filter_map(|k| last_segment(k).parse().ok())
        .collect())
}

/// The IPAM pool an endpoint of `network` on `node` allocates from.
pub fn pool_for<'a>(network: &NetworkRecord, node: &'a str) -> &'a str {
    match network.scope {
        Scope::Local => node,
        Scope::Global => CLUSTER_POOL,
    }
}

/// The outcome of [`allocate_ip`].
#[derive(Debug)]
pub enum Allocated {
    /// The address was taken and the caller's operations committed with it,
    /// at this etcd revision.
    Committed(Ipv4Addr, i64),
    /// One of the caller's own guards failed; nothing was written.
    CallerConflict,
}

/// Addresses read per window when the next address after the cursor was
/// taken (one read transaction of this many keys).
const WINDOW: usize = 32;
/// Addresses looked at after the cursor before falling back to reading the
/// whole pool (which finds the lowest free one, or says the pool is full).
const MAX_SCAN: usize = 8 * WINDOW;

/// The addresses a network hands out automatically: the host addresses of
/// its subnet, or of its `--ip-range` inside it, without the gateway and the
/// `--aux-address`es.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First address (as a number).
    first: u64,
    /// One past the last address.
    end: u64,
    /// Addresses inside `first..end` that are never handed out.
    skip: Vec<Ipv4Addr>,
}

impl Range {
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, ip_range: Option<Ipv4Net>, aux: &[Ipv4Addr]) -> Self {
        let num = |a: Ipv4Addr| u64::from(u32::from(a));
        // The subnet's host addresses: not its network or broadcast address.
        let mut first = num(subnet.network()) + 1;
        let mut end = num(subnet.broadcast()).max(first);
        if let Some(r) = ip_range {
            first = first.max(num(r.network()));
            end = end.min(num(r.broadcast()) + 1).max(first);
        }
        let mut skip: Vec<Ipv4Addr> = std::iter::once(gateway)
            .chain(aux.iter().copied())
            .filter(|a| (first..end).contains(&num(*a)))
            .collect();
        skip.sort();
        skip.dedup();
        Self { first, end, skip }
    }

    /// The range of `network` (`None` for a network without a subnet).
    pub fn of(network: &NetworkRecord) -> Option<Self> {
        let aux: Vec<Ipv4Addr> = network.aux_addresses.values().copied().collect();
        Some(Self::new(
            network.subnet?,
            network.gateway?,
            network.ip_range,
            &aux,
        ))
    }

    /// How many addresses can be handed out.
    pub fn count(&self) -> usize {
        (self.end - self.first) as usize - self.skip.len()
    }

    #[cfg(test)]
    fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..self.end).contains(&u64::from(u32::from(ip))) && !self.skip.contains(&ip)
    }

    /// Every address in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (self.first..self.end)
            .map(|a| Ipv4Addr::from(a as u32))
            .filter(|ip| !self.skip.contains(ip))
    }

    /// Up to `n` addresses after `after` (from the first one when `after` is
    /// `None` or outside the range), wrapping around at the end, each at
    /// most once.
    pub fn after(&self, after: Option<Ipv4Addr>, n: usize) -> Vec<Ipv4Addr> {
        let size = self.end - self.first;
        if size == 0 {
            return Vec::new(); // a /31 or /32, or an empty range: nothing to hand out
        }
        let start = after
            .map(|a| u64::from(u32::from(a)))
            .filter(|a| (self.first..self.end).contains(a))
            .map_or(0, |a| a - self.first + 1);
        (0..size)
            .map(|i| Ipv4Addr::from((self.first + (start + i) % size) as u32))
            .filter(|ip| !self.skip.contains(ip))
            .take(n)
            .collect()
    }
}

/// Checks an address asked for with `--ip`: inside the subnet (not only the
/// `--ip-range`, as Docker), not its network, broadcast or gateway address
/// (INVALID_ARGUMENT), and not one of the network's `--aux-address`es
/// (ALREADY_EXISTS, as an address in use).
pub fn check_requested(network: &NetworkRecord, ip: Ipv4Addr) -> Result<()> {
    if let (Some(subnet), Some(gateway)) = (network.subnet, network.gateway) {
        net::check_assignable("ip", subnet, gateway, ip)?;
    }
    if let Some((name, _)) = network.aux_addresses.iter().find(|(_, a)| **a == ip) {
        return Err(ApiError::AlreadyExists(format!(
            "address {ip} is reserved as aux-address {name} of network {}",
            network.name
        )));
    }
    Ok(())
}

fn cursor_key(network_id: &str, pool: &str) -> String {
    format!("{network_id}/{pool}")
}

/// Gives back an address [`pick_free`] picked that a request did not take
/// (it failed for another reason): the cursor steps back if nothing moved
/// it since, so a refused request leaves no gap in the sequence.
pub fn unpick(store: &Store, network_id: &str, pool: &str, ip: Ipv4Addr) {
    let key = cursor_key(network_id, pool);
    let mut cursors = store.cursors.lock().unwrap_or_else(|e| e.into_inner());
    if cursors.get(&key) == Some(&ip) {
        cursors.insert(key, Ipv4Addr::from(u32::from(ip).wrapping_sub(1)));
    }
}

/// Tells the cursor an address was released (after the commit): the next
/// pick starts at the lowest address released since, so freed addresses are
/// reused first and pools stay compact, as with a lowest-free allocator.
pub fn released(store: &Store, network_id: &str, pool: &str, ip: Ipv4Addr) {
    let key = cursor_key(network_id, pool);
    let before = Ipv4Addr::from(u32::from(ip).wrapping_sub(1));
    let mut cursors = store.cursors.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cursors.get_mut(&key)
        && before < *c
    {
        *c = before;
    }
}

/// A free address of `network` in `pool`, as read now (nothing is taken),
/// next-fit as CNI's host-local does, from a cursor this process keeps per
/// pool: the first attempt takes the address after the cursor without
/// reading the pool, and moves the cursor, so concurrent requests in one
/// process get different addresses. After a lost race, windows of
/// [`WINDOW`] addresses after the cursor are read by key (one transaction
/// each) and the first free one is taken (on later attempts one at random,
/// so replicas spread out); only when [`MAX_SCAN`] addresses in a row are
/// taken, or the process has no cursor yet, is the whole pool read (the
/// lowest free address). So a pick costs a few key reads at most, not a
/// read of the pool.
pub async fn pick_free(
    store: &Store,
    network: &NetworkRecord,
    pool: &str,
    attempt: usize,
) -> Result<Ipv4Addr> {
    let (Some(subnet), Some(range)) = (network.subnet, Range::of(network)) else {
        return Err(ApiError::Internal(format!(
            "network {} has no subnet to allocate from",
            network.name
        )));
    };
    let key = cursor_key(&network.id, pool);
    let exhausted = || {
        let within = network.ip_range.map_or(subnet, |r| r);
        let what = if network.ip_range.is_some() {
            "ip-range"
        } else {
            "subnet"
        };
        ApiError::Exhausted(format!(
            "no free address left in {within} ({what}) of network {}",
            network.name
        ))
    };
    let cursor = store
        .cursors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    let set = |ip: Ipv4Addr| {
        store
            .cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), ip);
    };
    if let Some(cursor) = cursor {
        if attempt == 0 {
            let mut cursors = store.cursors.lock().unwrap_or_else(|e| e.into_inner());
            let from = cursors.get(&key).copied().unwrap_or(cursor);
            let ip = *range.after(Some(from), 1).first().ok_or_else(exhausted)?;
            cursors.insert(key, ip);
            return Ok(ip);
        }
        let total = range.count();
        let mut from = cursor;
        let mut scanned = 0;
        while scanned < total.min(MAX_SCAN) {
            let window = range.after(Some(from), WINDOW.min(total - scanned));
            let Some(&last) = window.last() else { break };
            let reads = window
                .iter()
                .map(|ip| Read::Key(store.keys.ipam(&network.id, pool, *ip)))
                .collect();
            let free: Vec<Ipv4Addr> = window
                .iter()
                .zip(store.read_together(reads).await?)
                .filter(|(_, got)| got.is_empty())
                .map(|(ip, _)| *ip)
                .collect();
            if !free.is_empty() {
                let i = if attempt == 1 {
                    0
                } else {
                    rand::rng().random_range(0..free.len())
                };
                set(free[i]);
                return Ok(free[i]);
            }
            scanned += window.len();
            from = last;
        }
        if scanned >= total {
            return Err(exhausted());
        }
    }
    // No cursor yet (the first pick of this process) or a dense stretch:
    // read the whole pool once, take the lowest free address (at random
    // among the first few free ones on later attempts).
    let used: HashSet<Ipv4Addr> = store
        .list_keys(&store.keys.ipam_pool(&network.id, pool))
        .await?
        .iter()
        .filter_map(|k| last_segment(k).parse().ok())
        .collect();
    let window = if attempt == 0 { 1 } else { 8 * attempt };
    let free: Vec<Ipv4Addr> = range
        .iter()
        .filter(|ip| !used.contains(ip))
        .take(window)
        .collect();
    if free.is_empty() {
        return Err(exhausted());
    }
    let ip = free[rand::rng().random_range(0..free.len())];
    set(ip);
    Ok(ip)
}

/// Takes an address of `network` in `pool` for `owner`, in one transaction
/// together with the caller's guards and operations built by `extra` for
/// the chosen address. `requested` is honoured or refused with ALREADY_EXISTS.
///
/// Automatic addresses come from [`pick_free`] (next-fit after this
/// process's cursor of the pool).
pub async fn allocate_ip<F>(
    store: &Store,
    network: &NetworkRecord,
    pool: &str,
    requested: Option<Ipv4Addr>,
    owner: &str,
    mut extra: F,
) -> Result<Allocated>
where
    F: FnMut(Ipv4Addr) -> Result<Write>,
{
    if network.subnet.is_none() || network.gateway.is_none() {
        return Err(ApiError::Internal(format!(
            "network {} has no subnet to allocate from",
            network.name
        )));
    }
    if let Some(ip) = requested {
        check_requested(network, ip)?;
    }
    let net_key = store.keys.network(&network.id);
    for attempt in 0..MAX_ATTEMPTS {
        let ip = match requested {
            Some(ip) => ip,
            None => pick_free(store, network, pool, attempt).await?,
        };
        let ip_key = store.keys.ipam(&network.id, pool, ip);
        let write = extra(ip)?
            .when(Guard::Absent(ip_key.clone()))
            .when(Guard::Present(net_key.clone()))
            .then(Op::put(ip_key.clone(), owner));
        let lost = match store.write(write).await? {
            Outcome::Committed { revision } => return Ok(Allocated::Committed(ip, revision)),
            lost => lost,
        };
        let (ip_taken, network_exists) = (lost.failed_on(&ip_key), !lost.failed_on(&net_key));
        if requested.is_none() && !ip_taken {
            unpick(store, &network.id, pool, ip);
        }
        if !network_exists {
            return Err(ApiError::not_found("network", &network.name));
        }
        if !ip_taken {
            return Ok(Allocated::CallerConflict);
        }
        if requested.is_some() {
            return Err(ApiError::AlreadyExists(format!(
                "address {ip} is already in use on network {}",
                network.name
            )));
        }
        tracing::debug!(network = %network.name, %ip, attempt, "address taken concurrently, retrying");
        crate::metrics::retry("address");
    }
    Err(ApiError::Aborted(format!(
        "could not allocate an address on network {} after {MAX_ATTEMPTS} attempts",
        network.name
    )))
}

/// The operation releasing `ip` of `network` in `pool`.
pub fn release_op(store: &Store, network_id: &str, pool: &str, ip: Ipv4Addr) -> Op {
    Op::delete(store.keys.ipam(network_id, pool, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_choice() {
        let taken = vec![(n("172.17.0.0/16"), "id-bridge".to_string())];
        let name = |id: &str| id.trim_start_matches("id-").to_string();
        assert_eq!(
            choose_subnet(Scope::Local, None, &taken, &[], name).unwrap(),
            n("172.18.0.0/16")
        );
        assert_eq!(
            choose_subnet(Scope::Global, None, &[], &[], name).unwrap(),
            n("10.0.0.0/24")
        );
        let e = choose_subnet(Scope::Local, Some(n("172.17.3.0/24")), &taken, &[], name).unwrap_err();
        assert!(
            matches!(e, ApiError::FailedPrecondition(ref m) if m.contains("bridge")),
            "{e}"
        );
        assert_eq!(
            choose_subnet(Scope::Local, Some(n("172.30.3.0/24")), &taken, &[], name).unwrap(),
            n("172.30.3.0/24")
        );
        let all: Vec<_> = net::local_pool().map(|p| (p, "x".to_string())).collect();
        let e = choose_subnet(Scope::Local, None, &all, &[], name).unwrap_err();
        assert!(
            matches!(e, ApiError::Exhausted(ref m) if m.contains("172.17.0.0/16")),
            "{e}"
        );
    }

    /// A node's route is skipped by the pool and refuses an explicit subnet
    /// of either scope, named in the message.
    #[test]
    fn subnets_avoid_node_routes() {
        let name = |id: &str| id.to_string();
        let route = Avoid {
            subnet: n("172.18.5.0/24"),
            what: "route 172.18.5.0/24 (dev eth0) of node node1".into(),
        };
        let taken = vec![(n("172.17.0.0/16"), "bridge".to_string())];
        assert_eq!(
            choose_subnet(Scope::Local, None, &taken, std::slice::from_ref(&route), name).unwrap(),
            n("172.19.0.0/16")
        );
        for scope in [Scope::Local, Scope::Global] {
            let e = choose_subnet(
                scope,
                Some(n("172.18.0.0/16")),
                &taken,
                std::slice::from_ref(&route),
                name,
            )
            .unwrap_err();
            assert!(
                matches!(e, ApiError::FailedPrecondition(ref m)
                    if m == "subnet 172.18.0.0/16 overlaps route 172.18.5.0/24 (dev eth0) of node node1"),
                "{e}"
            );
        }
    }

    #[test]
    fn next_fit_after_the_cursor() {
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let plain = |sub: &str, gw: &str| Range::new(n(sub), ip(gw), None, &[]);
        let r = plain("10.1.0.0/29", "10.1.0.1");
        // .2 ... .6 are assignable (.1 is the gateway, .7 broadcast).
        assert_eq!(r.after(None, 2), [ip("10.1.0.2"), ip("10.1.0.3")]);
        assert_eq!(
            r.after(Some(ip("10.1.0.5")), 3),
            [ip("10.1.0.6"), ip("10.1.0.2"), ip("10.1.0.3")],
            "wraps around, skipping the gateway"
        );
        assert_eq!(r.after(Some(ip("10.9.9.9")), 1), [ip("10.1.0.2")]);
        assert_eq!(r.after(Some(ip("10.1.0.3")), 99).len(), 5, "each once");
        assert_eq!(r.count(), 5);
        assert_eq!(plain("10.9.0.0/30", "10.9.0.1").count(), 1);
        assert!(plain("10.9.0.0/31", "10.9.0.0").after(None, 4).is_empty());
        assert_eq!(plain("10.9.0.0/31", "10.9.0.0").count(), 0);
    }

    /// `--ip-range` bounds the picks (its own network and broadcast
    /// addresses are ordinary hosts of the subnet); aux addresses and the
    /// gateway are skipped wherever they fall.
    #[test]
    fn ip_range_and_aux_addresses_bound_the_picks() {
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let r = Range::new(
            n("10.2.0.0/24"),
            ip("10.2.0.1"),
            Some(n("10.2.0.8/29")),
            &[ip("10.2.0.9"), ip("10.2.0.200")],
        );
        let all: Vec<_> = r.iter().collect();
        assert_eq!(
            all,
            [
                "10.2.0.8",
                "10.2.0.10",
                "10.2.0.11",
                "10.2.0.12",
                "10.2.0.13",
                "10.2.0.14",
                "10.2.0.15"
            ]
            .map(ip)
        );
        assert_eq!(r.count(), 7);
        assert_eq!(
            r.after(Some(ip("10.2.0.15")), 2),
            [ip("10.2.0.8"), ip("10.2.0.10")]
        );
        assert!(r.contains(ip("10.2.0.8")) && !r.contains(ip("10.2.0.9")) && !r.contains(ip("10.2.0.16")));
        // A range at the subnet's edge keeps out the subnet's own network
        // and broadcast addresses.
        let edge = Range::new(n("10.3.0.0/24"), ip("10.3.0.1"), Some(n("10.3.0.0/30")), &[]);
        assert_eq!(edge.iter().collect::<Vec<_>>(), [ip("10.3.0.2"), ip("10.3.0.3")]);
        let top = Range::new(n("10.3.0.0/24"), ip("10.3.0.1"), Some(n("10.3.0.252/30")), &[]);
        assert_eq!(
            top.iter().collect::<Vec<_>>(),
            ["10.3.0.252", "10.3.0.253", "10.3.0.254"].map(ip)
        );
    }

    #[test]
    fn vni_choice() {
        let mut taken = HashSet::new();
        assert_eq!(choose_vni(&taken).unwrap(), 4096);
        taken.insert(4096);
        taken.insert(4098);
        assert_eq!(choose_vni(&taken).unwrap(), 4097);
    }
}
