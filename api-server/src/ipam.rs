//! Address management in etcd: subnets from Docker's pools, VNIs, and
//! endpoint addresses, each taken with a transaction so two API servers can
//! never hand out the same one.
//!
//! * Subnets: one key per subnet under `subnets/<scope>/`, plus a guard key
//!   per scope that every allocation rewrites and compares. Two requests for
//!   overlapping (not only identical) subnets therefore cannot both commit.
//! * Addresses: one key per address under `ipam/<network>/<pool>/`, taken with
//!   `create_revision == 0`. The pool is the node for local-scope networks
//!   (each node has its own bridge) and `_cluster` for global ones.
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

/// A free address of `network` in `pool`, as read now (nothing is taken):
/// the lowest on a first attempt, then one at random among the first few
/// free ones, so concurrent callers spread out.
pub async fn pick_free(
    store: &Store,
    network: &NetworkRecord,
    pool: &str,
    attempt: usize,
) -> Result<Ipv4Addr> {
    let (Some(subnet), Some(gateway)) = (network.subnet, network.gateway) else {
        return Err(ApiError::Internal(format!(
            "network {} has no subnet to allocate from",
            network.name
        )));
    };
    let used: HashSet<Ipv4Addr> = store
        .list_keys(&store.keys.ipam_pool(&network.id, pool))
        .await?
        .iter()
        .filter_map(|k| last_segment(k).parse().ok())
        .collect();
    let window = if attempt == 0 { 1 } else { 8 * attempt };
    let free: Vec<Ipv4Addr> = net::assignable(subnet, gateway)
        .filter(|ip| !used.contains(ip))
        .take(window)
        .collect();
    if free.is_empty() {
        return Err(ApiError::Exhausted(format!(
            "no free address left in {subnet} of network {}",
            network.name
        )));
    }
    Ok(free[rand::rng().random_range(0..free.len())])
}

/// Takes an address of `network` in `pool` for `owner`, in one transaction
/// together with the caller's guards and operations built by `extra` for
/// the chosen address. `requested` is honoured or refused with ALREADY_EXISTS.
///
/// The first attempt takes the lowest free address; after losing a race it
/// picks at random among the first few free ones, so many concurrent callers
/// spread out instead of colliding on the same address again.
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
    let (Some(subnet), Some(gateway)) = (network.subnet, network.gateway) else {
        return Err(ApiError::Internal(format!(
            "network {} has no subnet to allocate from",
            network.name
        )));
    };
    if let Some(ip) = requested {
        net::check_assignable("ip", subnet, gateway, ip)?;
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
    fn vni_choice() {
        let mut taken = HashSet::new();
        assert_eq!(choose_vni(&taken).unwrap(), 4096);
        taken.insert(4096);
        taken.insert(4098);
        assert_eq!(choose_vni(&taken).unwrap(), 4097);
    }
}
