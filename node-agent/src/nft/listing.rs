//! Reading berth's tables back (`list table`, in process): rules per chain
//! and the DNAT elements of the published ports, for drift and doctor.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use berth_core::ports::Proto;
use serde_json::Value;

use super::{ADDR_MAPS, ANY_MAPS, NftError, PortElem, TABLE, run};

/// berth's tables as the kernel has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Rules per chain, chains without rules included; `ip6 <chain>` for
    /// the `ip6 berth` table (see [`super::Ruleset::rule_counts`]).
    pub counts: BTreeMap<String, usize>,
    /// The elements of the DNAT maps of both tables. A key found in only
    /// one of a pair of maps (someone deleted the other half) is an
    /// element with target port 0, which no desired element has.
    pub elements: BTreeSet<PortElem>,
}

/// berth's tables as the kernel has them now, in the calling thread's
/// namespace; `None` when `ip berth` does not exist. `counts` equal
/// [`super::Ruleset::rule_counts`] and `elements` [`super::Ruleset::elements`]
/// of the last applied ruleset unless someone changed the tables since.
pub async fn observe() -> Result<Option<Seen>, NftError> {
    let Some(v4) = list("ip").await? else {
        return Ok(None);
    };
    let mut seen = Seen::default();
    read(&v4, "", &mut seen);
    if let Some(v6) = list("ip6").await? {
        read(&v6, "ip6 ", &mut seen);
    }
    Ok(Some(seen))
}

/// The DNAT elements that take effect now (those of a table whose `ports`
/// chain holds its two lookups), for `berth doctor`; `None` when `ip berth`
/// does not exist.
pub async fn published() -> Result<Option<BTreeSet<PortElem>>, NftError> {
    let Some(v4) = list("ip").await? else {
        return Ok(None);
    };
    let mut out = BTreeSet::new();
    for (listing, prefix) in [(Some(v4), ""), (list("ip6").await?, "ip6 ")] {
        let Some(listing) = listing else { continue };
        let mut seen = Seen::default();
        read(&listing, prefix, &mut seen);
        if seen.counts.get(&format!("{prefix}ports")) == Some(&2) {
            out.extend(seen.elements);
        }
    }
    Ok(Some(out))
}

/// `list table <family> berth` as JSON; `None` when it does not exist.
async fn list(family: &str) -> Result<Option<Value>, NftError> {
    let cmd = serde_json::json!({"nftables": [{"list": {"table": {"family": family, "name": TABLE}}}]});
    match run::run(&serde_json::to_vec(&cmd)?).await {
        Ok(out) => Ok(Some(serde_json::from_str(&out)?)),
        Err(NftError::Refused(e)) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adds a listing's chains, rules and DNAT elements to `seen`, chain names
/// prefixed with `prefix`. Reads only what it needs, not the crate's full
/// schema: a rule someone added by hand with an expression the crate does
/// not model must count as drift, not fail the read.
pub(super) fn read(listing: &Value, prefix: &str, seen: &mut Seen) {
    // map name → key → value
    let mut maps: BTreeMap<&str, BTreeMap<String, &Value>> = BTreeMap::new();
    let mut keys: BTreeMap<String, &Value> = BTreeMap::new();
    for item in listing["nftables"].as_array().into_iter().flatten() {
        if let Some(name) = item["chain"]["name"].as_str() {
            seen.counts.entry(format!("{prefix}{name}")).or_insert(0);
        }
        if let Some(chain) = item["rule"]["chain"].as_str() {
            *seen.counts.entry(format!("{prefix}{chain}")).or_insert(0) += 1;
        }
        if let Some(name) = item["map"]["name"].as_str() {
            let m = maps.entry(name).or_default();
            for e in item["map"]["elem"].as_array().into_iter().flatten() {
                if let [k, v] = e.as_array().map(Vec::as_slice).unwrap_or_default() {
                    m.insert(k.to_string(), v);
                    keys.insert(k.to_string(), k);
                }
            }
        }
    }
    for (ip_map, port_map) in [ADDR_MAPS, ANY_MAPS] {
        let empty = BTreeMap::new();
        let ips = maps.get(ip_map).unwrap_or(&empty);
        let ports = maps.get(port_map).unwrap_or(&empty);
        let both: BTreeSet<&String> = ips.keys().chain(ports.keys()).collect();
        for k in both {
            let Some((host, proto, host_port)) = key_of(keys[k]) else {
                continue;
            };
            let target = ips
                .get(k)
                .and_then(|v| v.as_str())
                .and_then(|a| a.parse::<IpAddr>().ok());
            let port = ports
                .get(k)
                .and_then(|v| v.as_u64())
                .and_then(|p| u16::try_from(p).ok());
            let unspecified = if prefix.is_empty() {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            };
            seen.elements.insert(PortElem {
                host,
                proto,
                host_port,
                target: target.unwrap_or(unspecified),
                port: port.unwrap_or(0),
            });
        }
    }
}

/// `{"concat": [addr?, "tcp", 8080]}` as (host, protocol, host port).
fn key_of(k: &Value) -> Option<(Option<IpAddr>, Proto, u16)> {
    let parts = k["concat"].as_array()?;
    let (host, rest) = match parts.len() {
        3 => (Some(parts[0].as_str()?.parse().ok()?), &parts[1..]),
        2 => (None, &parts[..]),
        _ => return None,
    };
    let proto = match rest[0].as_str()? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    Some((host, proto, u16::try_from(rest[1].as_u64()?).ok()?))
}
