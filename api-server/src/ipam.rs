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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_core::model::Scope;
use berth_core::net::{self, GLOBAL_POOL_TEXT, LOCAL_POOL_TEXT};
use ipnet::{Ipv4Net, Ipv6Net};
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

/// The IPv6 subnets of `scope` (`subnets6/<scope>/`), read as the IPv4
/// ones are; the per-scope guard is the same, so a dual-stack allocation
/// compares one key for both families.
pub async fn taken_subnets6(store: &Store, scope: Scope) -> Result<Vec<(Ipv6Net, String)>> {
    let mut subnets = Vec::new();
    for (key, id) in store.list_strings(&store.keys.subnets6(scope)).await? {
        // .../subnets6/<scope>/<addr>-<len>/<network-id>
        let seg = key.rsplit('/').nth(1).unwrap_or_default();
        let net: Ipv6Net = seg
            .rsplit_once('-')
            .and_then(|(a, l)| format!("{a}/{l}").parse().ok())
            .ok_or_else(|| ApiError::Internal(format!("bad subnet key {key}")))?;
        subnets.push((net, id));
    }
    Ok(subnets)
}

/// Chooses the IPv6 subnet of a new dual-stack network, by the rules of
/// [`choose_subnet`]: `requested` unless it overlaps a subnet of the other
/// scope (`avoid`) or, in local scope, a taken one; else the first /64 of
/// the scope's ULA pool that overlaps neither.
pub fn choose_subnet6(
    scope: Scope,
    requested: Option<Ipv6Net>,
    taken: &[(Ipv6Net, String)],
    avoid: &[(Ipv6Net, String)],
    name_of: impl Fn(&str) -> String,
) -> Result<Ipv6Net> {
    use berth_core::net6;
    match requested {
        Some(want) => {
            if let Some((net, what)) = avoid.iter().find(|(a, _)| net6::overlaps6(want, *a)) {
                return Err(ApiError::FailedPrecondition(format!(
                    "subnet {want} overlaps {net} of {what}"
                )));
            }
            if scope == Scope::Local
                && let Some((net, id)) = taken.iter().find(|(net, _)| net6::overlaps6(want, *net))
            {
                return Err(ApiError::FailedPrecondition(format!(
                    "subnet {want} overlaps {net} of network {}",
                    name_of(id)
                )));
            }
            Ok(want)
        }
        None => {
            let nets: Vec<Ipv6Net> = taken.iter().chain(avoid).map(|(n, _)| *n).collect();
            let (free, pools) = match scope {
                Scope::Local => (
                    net6::first_free6(net6::local_pool6(), &nets),
                    net6::LOCAL_POOL6_TEXT,
                ),
                Scope::Global => (
                    net6::first_free6(net6::global_pool6(), &nets),
                    net6::GLOBAL_POOL6_TEXT,
                ),
            };
            free.ok_or_else(|| {
                ApiError::Exhausted(format!(
                    "all predefined {scope} IPv6 address pools ({pools}) are in use; pass an IPv6 --subnet"
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
    /// The address (and on a dual-stack network the IPv6 one) was taken and
    /// the caller's operations committed with it, at this etcd revision.
    Committed(Ipv4Addr, Option<Ipv6Addr>, i64),
    /// One of the caller's own guards failed; nothing was written.
    CallerConflict,
}

/// Addresses read per window when the next address after the cursor was
/// taken (one read transaction of this many keys).
const WINDOW: usize = 32;
/// Addresses looked at after the cursor before falling back to reading the
/// whole pool's keys (which finds the lowest free one, or says the pool is full).
const MAX_SCAN: usize = 8 * WINDOW;

/// Which address family of a network an allocation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The addresses a network hands out automatically: the host addresses of
/// its subnet, or of its `--ip-range` inside it, without the gateway and the
/// `--aux-address`es. Addresses are numbers (u128, so a /64's 2^64
/// addresses are no special case); nothing here is proportional to the
/// range's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First address (as a number).
    first: u128,
    /// One past the last address.
    end: u128,
    /// Addresses inside `first..end` that are never handed out.
    skip: Vec<u128>,
    v6: bool,
}

fn num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Range {
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, ip_range: Option<Ipv4Net>, aux: &[Ipv4Addr]) -> Self {
        let n = |a: Ipv4Addr| num(a.into());
        // The subnet's host addresses: not its network or broadcast address.
        let mut first = n(subnet.network()) + 1;
        let mut end = n(subnet.broadcast()).max(first);
        if let Some(r) = ip_range {
            first = first.max(n(r.network()));
            end = end.min(n(r.broadcast()) + 1).max(first);
        }
        let skip = std::iter::once(gateway).chain(aux.iter().copied()).map(n);
        Self::with_skip(first, end, skip, false)
    }

    /// An IPv6 subnet's addresses: all but the subnet-router anycast
    /// (network) address and the gateway.
    pub fn new6(subnet: Ipv6Net, gateway: Ipv6Addr) -> Self {
        let first = u128::from(subnet.network()) + 1;
        let end = u128::from(subnet.broadcast()).saturating_add(1).max(first);
        Self::with_skip(first, end, std::iter::once(u128::from(gateway)), true)
    }

    fn with_skip(first: u128, end: u128, skip: impl Iterator<Item = u128>, v6: bool) -> Self {
        let mut skip: Vec<u128> = skip.filter(|a| (first..end).contains(a)).collect();
        skip.sort();
        skip.dedup();
        Self { first, end, skip, v6 }
    }

    /// The range of `network` for `family` (`None` for a network without
    /// a subnet of that family).
    pub fn of(network: &NetworkRecord, family: Family) -> Option<Self> {
        match family {
            Family::V4 => {
                let aux: Vec<Ipv4Addr> = network.aux_addresses.values().copied().collect();
                Some(Self::new(
                    network.subnet?,
                    network.gateway?,
                    network.ip_range,
                    &aux,
                ))
            }
            Family::V6 => Some(Self::new6(network.subnet6?, network.gateway6?)),
        }
    }

    fn ip(&self, n: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        }
    }

    /// How many addresses can be handed out.
    pub fn count(&self) -> u128 {
        (self.end - self.first) - self.skip.len() as u128
    }

    #[cfg(test)]
    fn contains(&self, ip: impl Into<IpAddr>) -> bool {
        let n = num(ip.into());
        (self.first..self.end).contains(&n) && !self.skip.contains(&n)
    }

    /// Every address in order (lazily: callers take what they need).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        (self.first..self.end)
            .filter(|n| !self.skip.contains(n))
            .map(|n| self.ip(n))
    }

    /// Up to `n` addresses after `after` (from the first one when `after` is
    /// `None` or outside the range), wrapping around at the end, each at
    /// most once.
    pub fn after(&self, after: Option<IpAddr>, n: usize) -> Vec<IpAddr> {
        let size = self.end - self.first;
        if size == 0 {
            return Vec::new(); // a /31 or /32, or an empty range: nothing to hand out
        }
        let start = after
            .filter(|a| a.is_ipv6() == self.v6)
            .map(num)
            .filter(|a| (self.first..self.end).contains(a))
            .map_or(0, |a| a - self.first + 1);
        (0..size)
            .map(|i| self.first + (start + i) % size)
            .filter(|a| !self.skip.contains(a))
            .take(n)
            .map(|a| self.ip(a))
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

/// Checks an address asked for with `--ip6`: the network is dual stack,
/// and the address is inside its IPv6 subnet and not the gateway.
pub fn check_requested6(network: &NetworkRecord, ip: Ipv6Addr) -> Result<()> {
    match (network.enable_ipv6, network.subnet6, network.gateway6) {
        (true, Some(subnet), Some(gateway)) => {
            Ok(berth_core::net6::check_assignable6("ip6", subnet, gateway, ip)?)
        }
        _ => Err(berth_core::Invalid::new(
            "ip6",
            format!(
                "network {} does not enable IPv6 (create it with --ipv6)",
                network.name
            ),
        )
        .into()),
    }
}

fn cursor_key(network_id: &str, pool: &str, ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{network_id}/{pool}"),
        IpAddr::V6(_) => format!("{network_id}/{pool}/6"),
    }
}

fn before(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_sub(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_sub(1))),
    }
}

/// Gives back an address [`pick_free`] picked that a request did not take
/// (it failed for another reason): the cursor steps back if nothing moved
/// it since, so a refused request leaves no gap in the sequence.
pub fn unpick(store: &Store, network_id: &str, pool: &str, ip: impl Into<IpAddr>) {
    let ip = ip.into();
    let key = cursor_key(network_id, pool, ip);
    let mut cursors = store.cursors.lock().unwrap_or_else(|e| e.into_inner());
    if cursors.get(&key) == Some(&ip) {
        cursors.insert(key, before(ip));
    }
}

/// Tells the cursor an address was released (after the commit): the next
/// pick starts at the lowest address released since, so freed addresses are
/// reused first and pools stay compact, as with a lowest-free allocator.
pub fn released(store: &Store, network_id: &str, pool: &str, ip: impl Into<IpAddr>) {
    let ip = ip.into();
    let key = cursor_key(network_id, pool, ip);
    let before = before(ip);
    let mut cursors = store.cursors.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cursors.get_mut(&key)
        && num(before) < num(*c)
    {
        *c = before;
    }
}

/// A free IPv4 address of `network` in `pool` (see [`pick_free_of`]).
pub async fn pick_free(
    store: &Store,
    network: &NetworkRecord,
    pool: &str,
    attempt: usize,
) -> Result<Ipv4Addr> {
    match pick_free_of(store, network, Family::V4, pool, attempt).await? {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => Err(ApiError::Internal(format!("picked {a} for IPv4"))),
    }
}

/// A free address of `family` of `network` in `pool`, as read now (nothing
/// is taken), next-fit as CNI's host-local does, from a cursor this process
/// keeps per pool and family: the first attempt takes the address after the
/// cursor without reading the pool, and moves the cursor, so concurrent
/// requests in one process get different addresses. After a lost race,
/// windows of [`WINDOW`] addresses after the cursor are read by key (one
/// transaction each) and the first free one is taken (on later attempts one
/// at random, so replicas spread out); only when [`MAX_SCAN`] addresses in a
/// row are taken, or the process has no cursor yet, are the pool's keys
/// read (the lowest free address: the walk stops at the first free ones, so
/// it costs the number of addresses in use, not the size of the range — a
/// /64 is never walked). So a pick costs a few key reads at most.
pub async fn pick_free_of(
    store: &Store,
    network: &NetworkRecord,
    family: Family,
    pool: &str,
    attempt: usize,
) -> Result<IpAddr> {
    let Some(range) = Range::of(network, family) else {
        return Err(ApiError::Internal(format!(
            "network {} has no {family:?} subnet to allocate from",
            network.name
        )));
    };
    let key = cursor_key(
        &network.id,
        pool,
        match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        },
    );
    let exhausted = || {
        let (within, what) = match (family, network.ip_range) {
            (Family::V4, Some(r)) => (r.to_string(), "ip-range"),
            (Family::V4, None) => (
                network.subnet.map(|s| s.to_string()).unwrap_or_default(),
                "subnet",
            ),
            (Family::V6, _) => (
                network.subnet6.map(|s| s.to_string()).unwrap_or_default(),
                "subnet",
            ),
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
    let set = |ip: IpAddr| {
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
        let limit = total.min(MAX_SCAN as u128) as usize;
        let mut from = cursor;
        let mut scanned = 0;
        while scanned < limit {
            let window = range.after(Some(from), WINDOW.min(limit - scanned));
            let Some(&last) = window.last() else { break };
            let reads = window
                .iter()
                .map(|ip| Read::Key(store.keys.ipam(&network.id, pool, ip)))
                .collect();
            let free: Vec<IpAddr> = window
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
        if scanned as u128 >= total {
            return Err(exhausted());
        }
    }
    // No cursor yet (the first pick of this process) or a dense stretch:
    // read the pool's keys once, take the lowest free address (at random
    // among the first few free ones on later attempts). The walk below
    // passes at most `used.len()` taken addresses before it has `window`
    // free ones, or ends with the range.
    let used: HashSet<IpAddr> = store
        .list_keys(&store.keys.ipam_pool(&network.id, pool))
        .await?
        .iter()
        .filter_map(|k| last_segment(k).parse().ok())
        .collect();
    let window = if attempt == 0 { 1 } else { 8 * attempt };
    let free: Vec<IpAddr> = range
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

/// Takes an address of `network` in `pool` for `owner` (on a dual-stack
/// network an IPv6 address too, in the same pool and transaction), together
/// with the caller's guards and operations built by `extra` for the chosen
/// addresses. `requested` and `requested6` are honoured or refused with
/// ALREADY_EXISTS.
///
/// Automatic addresses come from [`pick_free_of`] (next-fit after this
/// process's cursor of the pool).
pub async fn allocate_ip<F>(
    store: &Store,
    network: &NetworkRecord,
    pool: &str,
    requested: Option<Ipv4Addr>,
    requested6: Option<Ipv6Addr>,
    owner: &str,
    mut extra: F,
) -> Result<Allocated>
where
    F: FnMut(Ipv4Addr, Option<Ipv6Addr>) -> Result<Write>,
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
    if let Some(ip) = requested6 {
        check_requested6(network, ip)?;
    }
    let dual = network.enable_ipv6 && network.subnet6.is_some();
    let net_key = store.keys.network(&network.id);
    for attempt in 0..MAX_ATTEMPTS {
        let ip = match requested {
            Some(ip) => ip,
            None => pick_free(store, network, pool, attempt).await?,
        };
        let ip6 = match (dual, requested6) {
            (_, Some(ip6)) => Some(ip6),
            (true, None) => match pick_free_of(store, network, Family::V6, pool, attempt).await {
                Ok(IpAddr::V6(a)) => Some(a),
                Ok(IpAddr::V4(a)) => return Err(ApiError::Internal(format!("picked {a} for IPv6"))),
                Err(e) => {
                    if requested.is_none() {
                        unpick(store, &network.id, pool, ip);
                    }
                    return Err(e);
                }
            },
            (false, None) => None,
        };
        let ip_key = store.keys.ipam(&network.id, pool, ip);
        let ip6_key = ip6.map(|a| store.keys.ipam(&network.id, pool, a));
        let mut write = extra(ip, ip6)?
            .when(Guard::Absent(ip_key.clone()))
            .when(Guard::Present(net_key.clone()))
            .then(Op::put(ip_key.clone(), owner));
        if let Some(k) = &ip6_key {
            write = write
                .when(Guard::Absent(k.clone()))
                .then(Op::put(k.clone(), owner));
        }
        let lost = match store.write(write).await? {
            Outcome::Committed { revision } => return Ok(Allocated::Committed(ip, ip6, revision)),
            lost => lost,
        };
        let ip_taken = lost.failed_on(&ip_key);
        let ip6_taken = ip6_key.as_ref().is_some_and(|k| lost.failed_on(k));
        let network_exists = !lost.failed_on(&net_key);
        if requested.is_none() && !ip_taken {
            unpick(store, &network.id, pool, ip);
        }
        if let Some(a) = ip6
            && requested6.is_none()
            && !ip6_taken
        {
            unpick(store, &network.id, pool, a);
        }
        if !network_exists {
            return Err(ApiError::not_found("network", &network.name));
        }
        if !ip_taken && !ip6_taken {
            return Ok(Allocated::CallerConflict);
        }
        if ip_taken && requested.is_some() {
            return Err(ApiError::AlreadyExists(format!(
                "address {ip} is already in use on network {}",
                network.name
            )));
        }
        if let Some(a) = ip6
            && ip6_taken
            && requested6.is_some()
        {
            return Err(ApiError::AlreadyExists(format!(
                "address {a} is already in use on network {}",
                network.name
            )));
        }
        tracing::debug!(network = %network.name, %ip, ?ip6, attempt, "address taken concurrently, retrying");
        crate::metrics::retry("address");
    }
    Err(ApiError::Aborted(format!(
        "could not allocate an address on network {} after {MAX_ATTEMPTS} attempts",
        network.name
    )))
}

/// The operation releasing `ip` (either family) of `network` in `pool`.
pub fn release_op(store: &Store, network_id: &str, pool: &str, ip: impl Into<IpAddr>) -> Op {
    Op::delete(store.keys.ipam(network_id, pool, ip.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn un4(a: IpAddr) -> Ipv4Addr {
        match a {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => panic!("{a} is not IPv4"),
        }
    }

    fn v4(v: Vec<IpAddr>) -> Vec<Ipv4Addr> {
        v.into_iter().map(un4).collect()
    }

    /// A /64's range is counted and walked as numbers: the first picks are
    /// ::2, ::3 after the gateway ::1, the last address is a host, and the
    /// cursor wraps around at the end of 2^64 addresses.
    #[test]
    fn ipv6_ranges_are_u128() {
        let s: Ipv6Net = "fd42:be47:2::/64".parse().unwrap();
        let r = Range::new6(s, "fd42:be47:2::1".parse().unwrap());
        assert_eq!(r.count(), (1u128 << 64) - 2);
        let a = |x: &str| -> IpAddr { x.parse().unwrap() };
        assert_eq!(r.after(None, 2), [a("fd42:be47:2::2"), a("fd42:be47:2::3")]);
        let last = a("fd42:be47:2::ffff:ffff:ffff:ffff");
        assert!(r.contains(last));
        assert_eq!(r.after(Some(last), 1), [a("fd42:be47:2::2")]);
        assert_eq!(
            r.after(Some(a("10.0.0.9")), 1),
            [a("fd42:be47:2::2")],
            "another family starts over"
        );
        assert_eq!(r.iter().nth(1), Some(a("fd42:be47:2::3")));
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
        assert_eq!(v4(r.after(None, 2)), [ip("10.1.0.2"), ip("10.1.0.3")]);
        assert_eq!(
            v4(r.after(Some(ip("10.1.0.5").into()), 3)),
            [ip("10.1.0.6"), ip("10.1.0.2"), ip("10.1.0.3")],
            "wraps around, skipping the gateway"
        );
        assert_eq!(v4(r.after(Some(ip("10.9.9.9").into()), 1)), [ip("10.1.0.2")]);
        assert_eq!(v4(r.after(Some(ip("10.1.0.3").into()), 99)).len(), 5, "each once");
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
        let all: Vec<_> = r.iter().map(un4).collect();
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
            v4(r.after(Some(ip("10.2.0.15").into()), 2)),
            [ip("10.2.0.8"), ip("10.2.0.10")]
        );
        assert!(r.contains(ip("10.2.0.8")) && !r.contains(ip("10.2.0.9")) && !r.contains(ip("10.2.0.16")));
        // A range at the subnet's edge keeps out the subnet's own network
        // and broadcast addresses.
        let edge = Range::new(n("10.3.0.0/24"), ip("10.3.0.1"), Some(n("10.3.0.0/30")), &[]);
        assert_eq!(
            edge.iter().map(un4).collect::<Vec<_>>(),
            [ip("10.3.0.2"), ip("10.3.0.3")]
        );
        let top = Range::new(n("10.3.0.0/24"), ip("10.3.0.1"), Some(n("10.3.0.252/30")), &[]);
        assert_eq!(
            top.iter().map(un4).collect::<Vec<_>>(),
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
