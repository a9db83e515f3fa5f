//! berth's nftables rules on a node, built as typed data (libnftables' JSON
//! schema, through the `nftables` crate) from the networks realised here and
//! applied as one atomic batch (`nft -j -f -`): the whole table is replaced in
//! a single transaction, so traffic never sees a half-written ruleset, and an
//! identical re-apply (agent restart) changes nothing for established flows.
//! Two tables: `ip berth` (published ports, masquerade per bridge subnet and
//! isolation between bridges) and, for dual-stack bridge networks, `ip6
//! berth` (masquerade per IPv6 subnet, isolation and `--internal` for IPv6;
//! no published ports, which the API refuses for IPv6), replaced together in
//! the same batch. No rule is ever text: names and addresses are
//! JSON strings, so no value can change the syntax of the batch, and interface
//! names are checked with [`berth_core::names::validate_ifname`] on top (nft
//! reads a trailing `*` as a wildcard even in JSON). [`observe`] reads the
//! table back so drift (a table flushed or deleted by hand) can be seen.
//! (`enable_icc=false` is not a rule: the agent marks the bridge ports
//! isolated instead, which needs no firewall and no per-sandbox rule; this
//! kernel also lacks `meta ibrname` in bridge tables.)
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::process::Stdio;

use berth_core::names::validate_ifname;
use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
    SetItem,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::io::AsyncWriteExt;

/// The name of berth's tables.
pub const TABLE: &str = "berth";

/// A published port and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRule {
    pub mapping: berth_core::ports::PortMapping,
    pub target: std::net::Ipv4Addr,
    /// The target's IPv6 address on a dual-stack bridge network: a port
    /// published on all addresses is DNATed from the node's IPv6 addresses
    /// to it too (`ip6 berth`), as Docker publishes on both families.
    pub target6: Option<std::net::Ipv6Addr>,
    /// The bridge the target sits behind.
    pub bridge: String,
}

/// What the rules need to know about one bridge on this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// A dual-stack network's IPv6 subnet.
    pub subnet6: Option<ipnet::Ipv6Net>,
    pub masquerade: bool,
    /// `--internal`: nothing is forwarded into or out of the bridge.
    pub internal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    /// nft's JSON output could not be read (or, never in practice, the
    /// ruleset could not be written as JSON).
    #[error("nft JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The batch that replaces berth's table: `add table`, `delete table` (so the
/// delete succeeds whether or not the table existed), then the new table, its
/// chains and rules, all one transaction. With no bridges it only deletes the
/// table. Built by [`render`], installed by [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    doc: Nftables<'static>,
}

impl Ruleset {
    /// Rules per chain that this ruleset installs, chains without rules
    /// included (as 0); empty when it installs no table. Compare with
    /// [`observe`] to notice a table changed behind the agent's back.
    pub fn rule_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for obj in self.doc.objects.iter() {
            match obj {
                NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c))) => {
                    counts.entry(count_key(&c.family, &c.name)).or_insert(0);
                }
                NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(r))) => {
                    *counts.entry(count_key(&r.family, &r.chain)).or_insert(0) += 1;
                }
                _ => {}
            }
        }
        counts
    }
}

/// The key of a chain in [`Ruleset::rule_counts`] and [`observe`]: its name
/// in `ip berth`, `ip6 ` + its name in `ip6 berth`.
fn count_key(family: &NfFamily, chain: &str) -> String {
    match family {
        NfFamily::IP6 => format!("ip6 {chain}"),
        _ => chain.to_string(),
    }
}

/// Whether `name` may be written into the rules; a name that fails
/// [`validate_ifname`] is logged and left out. The API refuses such names and
/// the agent's model refuses networks that carry one, so this never happens
/// unless a caller builds rules from unchecked input: better to leave that one
/// bridge (or port) out than to fail, or widen, the rules of every network on
/// the node.
fn usable(what: &str, name: &str) -> bool {
    match validate_ifname("bridge", name) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(ifname = ?name, "{what} left out of the nftables rules: {e}");
            false
        }
    }
}

/// The ruleset for `bridges` and the published `ports` behind them (see
/// [`Ruleset`]). Bridges and ports whose bridge name fails
/// [`validate_ifname`] are left out (logged); the output does not depend on
/// the order of the inputs.
pub fn render(bridges: &[BridgeRules], ports: &[PortRule]) -> Ruleset {
    let mut bridges: Vec<&BridgeRules> = bridges.iter().filter(|b| usable("bridge", &b.bridge)).collect();
    bridges.sort();
    let mut ports: Vec<&PortRule> = ports
        .iter()
        .filter(|p| usable("published port behind bridge", &p.bridge))
        .collect();
    ports.sort();

    let table = Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    };
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table.clone()));
    batch.delete(NfListObject::Table(table.clone()));
    if bridges.is_empty() {
        render6(&mut batch, &bridges, &ports);
        return Ruleset {
            doc: batch.to_nftables(),
        };
    }
    batch.add(NfListObject::Table(table));

    let mut chains = Vec::new();
    let mut rules = Vec::new();
    if !ports.is_empty() {
        // Published ports: DNAT for traffic to any local address, arriving
        // (prerouting) or sent by the node itself (output, for 127.0.0.1).
        // Priority -100 is dstnat.
        for (name, hook) in [("prerouting", NfHook::Prerouting), ("output", NfHook::Output)] {
            chains.push(base_chain(name, NfChainType::NAT, hook, -100));
            rules.push(rule(
                name,
                vec![
                    is(fib_daddr_type(), text("local")),
                    Statement::Jump(JumpTarget {
                        target: "ports".into(),
                    }),
                ],
            ));
        }
        chains.push(Chain {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: "ports".into(),
            ..Chain::default()
        });
        for p in &ports {
            let m = &p.mapping;
            let mut expr = Vec::new();
            if let Some(ip) = m.host_ip {
                expr.push(is(field("ip", "daddr"), text(ip.to_string())));
            }
            expr.push(is(field(m.proto.as_str(), "dport"), port(m.host_port)));
            expr.push(Statement::DNAT(Some(NAT {
                addr: Some(text(p.target.to_string())),
                family: None,
                port: Some(port(m.container_port)),
                flags: None,
            })));
            rules.push(rule("ports", expr));
        }
    }

    // Priority 100 is srcnat.
    chains.push(base_chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    let port_bridges: BTreeSet<&str> = ports.iter().map(|p| p.bridge.as_str()).collect();
    for b in bridges
        .iter()
        .filter(|b| port_bridges.contains(b.bridge.as_str()))
    {
        // 127.0.0.1:PORT from the node (route_localnet is on for this bridge),
        // and hairpin: a sandbox reaching a port published by its own bridge.
        let loopback: Ipv4Net = "127.0.0.0/8".parse().expect("a valid prefix");
        rules.push(rule(
            "postrouting",
            vec![
                is(field("ip", "saddr"), prefix(loopback)),
                is(meta(MetaKey::Oifname), text(&b.bridge)),
                masquerade(),
            ],
        ));
        rules.push(rule(
            "postrouting",
            vec![
                ct_status_dnat(),
                is(field("ip", "saddr"), prefix(b.subnet)),
                is(meta(MetaKey::Oifname), text(&b.bridge)),
                masquerade(),
            ],
        ));
    }
    for b in bridges.iter().filter(|b| b.masquerade) {
        rules.push(rule(
            "postrouting",
            vec![
                is(field("ip", "saddr"), prefix(b.subnet)),
                Statement::Match(Match {
                    left: meta(MetaKey::Oifname),
                    right: text(&b.bridge),
                    op: Operator::NEQ,
                }),
                masquerade(),
            ],
        ));
    }

    chains.push(base_chain("forward", NfChainType::Filter, NfHook::Forward, 0));
    // Internal networks first: nothing crosses their bridge, not even a
    // published port of another network reached through the gateway.
    for b in bridges.iter().filter(|b| b.internal) {
        for (inside, outside) in [
            (MetaKey::Iifname, MetaKey::Oifname),
            (MetaKey::Oifname, MetaKey::Iifname),
        ] {
            rules.push(rule(
                "forward",
                vec![
                    is(meta(inside), text(&b.bridge)),
                    Statement::Match(Match {
                        left: meta(outside),
                        right: text(&b.bridge),
                        op: Operator::NEQ,
                    }),
                    Statement::Drop(None),
                ],
            ));
        }
    }
    if !ports.is_empty() {
        // Published ports are reachable from every network.
        rules.push(rule("forward", vec![ct_status_dnat(), Statement::Accept(None)]));
    }
    for b in &bridges {
        // Bridges are isolated from each other.
        let others: Vec<SetItem<'static>> = bridges
            .iter()
            .filter(|o| o.bridge != b.bridge)
            .map(|o| SetItem::Element(text(&o.bridge)))
            .collect();
        if others.is_empty() {
            continue;
        }
        rules.push(rule(
            "forward",
            vec![
                is(meta(MetaKey::Iifname), text(&b.bridge)),
                is(
                    meta(MetaKey::Oifname),
                    Expression::Named(NamedExpression::Set(others)),
                ),
                Statement::Drop(None),
            ],
        ));
    }

    for c in chains {
        batch.add(NfListObject::Chain(c));
    }
    for r in rules {
        batch.add(NfListObject::Rule(r));
    }
    render6(&mut batch, &bridges, &ports);
    Ruleset {
        doc: batch.to_nftables(),
    }
}

/// The `ip6 berth` part of the batch: always deleted (a table left by a
/// removed dual-stack network goes), then, if a bridge here is dual stack,
/// made again with masquerade per IPv6 subnet (unless
/// `enable_ip_masquerade=false` or `--internal`), `--internal` drops and
/// isolation between bridges, as the `ip` table does for IPv4; DNAT from the
/// node's IPv6 addresses for ports published on all addresses by sandboxes
/// with an IPv6 address (with hairpin masquerade). (Ports on one IPv6 host
/// address, `[::1]` included, are refused by the API.)
fn render6(batch: &mut Batch<'static>, bridges: &[&BridgeRules], ports: &[&PortRule]) {
    let table = Table {
        family: NfFamily::IP6,
        name: TABLE.into(),
        handle: None,
    };
    batch.add(NfListObject::Table(table.clone()));
    batch.delete(NfListObject::Table(table.clone()));
    let dual: Vec<(&BridgeRules, ipnet::Ipv6Net)> =
        bridges.iter().filter_map(|b| Some((*b, b.subnet6?))).collect();
    if dual.is_empty() {
        return;
    }
    batch.add(NfListObject::Table(table));
    let f = NfFamily::IP6;
    batch.add(NfListObject::Chain(base_chain_in(
        f,
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    )));
    batch.add(NfListObject::Chain(base_chain_in(
        f,
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
    )));
    let dual_bridges: BTreeSet<&str> = dual.iter().map(|(b, _)| b.bridge.as_str()).collect();
    let ports6: Vec<(&PortRule, std::net::Ipv6Addr)> = ports
        .iter()
        .filter(|p| p.mapping.host_ip.is_none() && dual_bridges.contains(p.bridge.as_str()))
        .filter_map(|p| Some((*p, p.target6?)))
        .collect();
    if !ports6.is_empty() {
        for (name, hook) in [("prerouting", NfHook::Prerouting), ("output", NfHook::Output)] {
            batch.add(NfListObject::Chain(base_chain_in(
                f,
                name,
                NfChainType::NAT,
                hook,
                -100,
            )));
        }
        batch.add(NfListObject::Chain(Chain {
            family: f,
            table: TABLE.into(),
            name: "ports".into(),
            ..Chain::default()
        }));
        for name in ["prerouting", "output"] {
            batch.add(NfListObject::Rule(rule_in(
                f,
                name,
                vec![
                    is(fib_daddr_type(), text("local")),
                    Statement::Jump(JumpTarget {
                        target: "ports".into(),
                    }),
                ],
            )));
        }
        for (p, target6) in &ports6 {
            let m = &p.mapping;
            batch.add(NfListObject::Rule(rule_in(
                f,
                "ports",
                vec![
                    is(field(m.proto.as_str(), "dport"), port(m.host_port)),
                    Statement::DNAT(Some(NAT {
                        addr: Some(text(target6.to_string())),
                        family: None,
                        port: Some(port(m.container_port)),
                        flags: None,
                    })),
                ],
            )));
        }
        // Hairpin: a sandbox reaching a port its own bridge publishes.
        let hairpin: BTreeSet<&str> = ports6.iter().map(|(p, _)| p.bridge.as_str()).collect();
        for (b, subnet6) in dual.iter().filter(|(b, _)| hairpin.contains(b.bridge.as_str())) {
            batch.add(NfListObject::Rule(rule_in(
                f,
                "postrouting",
                vec![
                    ct_status_dnat(),
                    is(field("ip6", "saddr"), prefix6(*subnet6)),
                    is(meta(MetaKey::Oifname), text(&b.bridge)),
                    masquerade(),
                ],
            )));
        }
        batch.add(NfListObject::Rule(rule_in(
            f,
            "forward",
            vec![ct_status_dnat(), Statement::Accept(None)],
        )));
    }
    for (b, subnet6) in dual.iter().filter(|(b, _)| b.masquerade) {
        batch.add(NfListObject::Rule(rule_in(
            f,
            "postrouting",
            vec![
                is(field("ip6", "saddr"), prefix6(*subnet6)),
                Statement::Match(Match {
                    left: meta(MetaKey::Oifname),
                    right: text(&b.bridge),
                    op: Operator::NEQ,
                }),
                masquerade(),
            ],
        )));
    }
    for b in bridges.iter().filter(|b| b.internal) {
        for (inside, outside) in [
            (MetaKey::Iifname, MetaKey::Oifname),
            (MetaKey::Oifname, MetaKey::Iifname),
        ] {
            batch.add(NfListObject::Rule(rule_in(
                f,
                "forward",
                vec![
                    is(meta(inside), text(&b.bridge)),
                    Statement::Match(Match {
                        left: meta(outside),
                        right: text(&b.bridge),
                        op: Operator::NEQ,
                    }),
                    Statement::Drop(None),
                ],
            )));
        }
    }
    for (b, _) in &dual {
        let others: Vec<SetItem<'static>> = bridges
            .iter()
            .filter(|o| o.bridge != b.bridge)
            .map(|o| SetItem::Element(text(&o.bridge)))
            .collect();
        if others.is_empty() {
            continue;
        }
        batch.add(NfListObject::Rule(rule_in(
            f,
            "forward",
            vec![
                is(meta(MetaKey::Iifname), text(&b.bridge)),
                is(
                    meta(MetaKey::Oifname),
                    Expression::Named(NamedExpression::Set(others)),
                ),
                Statement::Drop(None),
            ],
        )));
    }
}

fn base_chain(name: &'static str, kind: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
    base_chain_in(NfFamily::IP, name, kind, hook, prio)
}

fn base_chain_in(
    family: NfFamily,
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
) -> Chain<'static> {
    Chain {
        family,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn rule(chain: &'static str, expr: Vec<Statement<'static>>) -> Rule<'static> {
    rule_in(NfFamily::IP, chain, expr)
}

fn rule_in(family: NfFamily, chain: &'static str, expr: Vec<Statement<'static>>) -> Rule<'static> {
    Rule {
        family,
        table: TABLE.into(),
        chain: chain.into(),
        expr: expr.into(),
        ..Rule::default()
    }
}

/// A string value (a name or an address): always one JSON string.
fn text(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

fn port(p: u16) -> Expression<'static> {
    Expression::Number(u32::from(p))
}

fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn field(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

fn prefix6(net: ipnet::Ipv6Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

/// `fib daddr type`: the route type of the destination (`local` for the node's own addresses).
fn fib_daddr_type() -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    }))
}

/// `ct status dnat`: the connection was destination-NATed (a published port).
fn ct_status_dnat() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: "status".into(),
            family: None,
            dir: None,
        })),
        right: text("dnat"),
        op: Operator::IN,
    })
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

/// `nft` with the C locale, so its messages are the ones matched here.
fn nft() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("nft");
    cmd.env("LC_ALL", "C");
    cmd
}

/// Applies a ruleset from [`render`] in the calling thread's network
/// namespace (for the agent: the process's), as one `nft -j -f -` transaction.
pub async fn apply(rules: &Ruleset) -> Result<(), NftError> {
    let json = serde_json::to_vec(&rules.doc)?;
    let mut child = nft()
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(&json).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Rules per chain of berth's table as the kernel has it now (`nft -j list
/// table ip berth` in the calling thread's namespace), chains without rules
/// included; `None` when the table does not exist. Equal to
/// [`Ruleset::rule_counts`] of the last applied ruleset unless someone changed
/// the table since.
pub async fn observe() -> Result<Option<BTreeMap<String, usize>>, NftError> {
    let Some(mut counts) = list_table("ip").await? else {
        return Ok(None);
    };
    // The `ip6 berth` table's chains, as `ip6 <chain>` (see `count_key`).
    for (chain, n) in list_table("ip6").await?.unwrap_or_default() {
        counts.insert(format!("ip6 {chain}"), n);
    }
    Ok(Some(counts))
}

/// `nft -j list table <family> berth`; `None` when the table does not exist.
async fn list_json(family: &str) -> Result<Option<Vec<u8>>, NftError> {
    let out = nft()
        .args(["-j", "list", "table", family, TABLE])
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NftError::Refused(err));
    }
    Ok(Some(out.stdout))
}

/// Rules per chain of `<family> berth`; `None` when it does not exist.
async fn list_table(family: &str) -> Result<Option<BTreeMap<String, usize>>, NftError> {
    Ok(list_json(family)
        .await?
        .map(|json| count_listed(&json))
        .transpose()?)
}

/// The DNAT rules of berth's `ports` chain as the kernel has them now, as
/// (protocol, host port, target address, container port); `None` when the
/// table does not exist. Read for `berth doctor` only.
pub async fn published() -> Result<Option<BTreeSet<(String, u16, Ipv4Addr, u16)>>, NftError> {
    Ok(list_json("ip")
        .await?
        .map(|json| dnat_listed(&json))
        .transpose()?)
}

/// The DNAT rules of chain `ports` in a JSON listing (see [`published`]).
fn dnat_listed(json: &[u8]) -> Result<BTreeSet<(String, u16, Ipv4Addr, u16)>, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_slice(json)?;
    let mut out = BTreeSet::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        if rule["chain"] != "ports" {
            continue;
        }
        let mut dport = None;
        let mut target = None;
        for e in rule["expr"].as_array().into_iter().flatten() {
            let m = &e["match"];
            if m["left"]["payload"]["field"] == "dport"
                && let (Some(proto), Some(p)) =
                    (m["left"]["payload"]["protocol"].as_str(), m["right"].as_u64())
            {
                dport = Some((proto.to_string(), p as u16));
            }
            let d = &e["dnat"];
            if let (Some(addr), Some(p)) = (
                d["addr"].as_str().and_then(|a| a.parse().ok()),
                d["port"].as_u64(),
            ) {
                target = Some((addr, p as u16));
            }
        }
        if let (Some((proto, hp)), Some((addr, cp))) = (dport, target) {
            out.insert((proto, hp, addr, cp));
        }
    }
    Ok(out)
}

/// Counts chains and rules in a JSON listing. Reads only the chain names, not
/// the crate's full schema: a rule someone added by hand with an expression
/// the crate does not model must count as drift, not fail the read.
fn count_listed(json: &[u8]) -> Result<BTreeMap<String, usize>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Listing {
        nftables: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        chain: Option<Named>,
        rule: Option<InChain>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct InChain {
        chain: String,
    }
    let listing: Listing = serde_json::from_slice(json)?;
    let mut counts = BTreeMap::new();
    for item in listing.nftables {
        if let Some(c) = item.chain {
            counts.entry(c.name).or_insert(0);
        }
        if let Some(r) = item.rule {
            *counts.entry(r.chain).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn b(name: &str, subnet: &str, masq: bool) -> BridgeRules {
        BridgeRules {
            bridge: name.into(),
            subnet: subnet.parse().unwrap(),
            subnet6: None,
            masquerade: masq,
            internal: false,
        }
    }

    /// A dual-stack bridge gets the `ip6 berth` table: masquerade for its
    /// IPv6 subnet (not for one with masquerade off), isolation from the
    /// other bridges; its chains are counted as `ip6 <chain>`.
    #[test]
    fn dual_stack_bridges_get_the_ip6_table() {
        let dual = BridgeRules {
            subnet6: Some("fd66::/64".parse().unwrap()),
            ..b("br-6", "10.66.0.0/24", true)
        };
        let quiet = BridgeRules {
            subnet6: Some("fd67::/64".parse().unwrap()),
            ..b("br-7", "10.67.0.0/24", false)
        };
        let r = render(&[dual, quiet, b("berth0", "172.17.0.0/16", true)], &[]);
        let six: Vec<Value> = commands(&r)
            .into_iter()
            .filter(|c| c["add"]["rule"]["family"] == "ip6")
            .map(|c| {
                (
                    c["add"]["rule"]["chain"].clone(),
                    c["add"]["rule"]["expr"].clone(),
                )
            })
            .map(|(chain, expr)| json!([chain, expr]))
            .collect();
        let saddr6 = json!({"payload": {"protocol": "ip6", "field": "saddr"}});
        assert_eq!(
            six[0],
            json!(["postrouting", [eq(saddr6, net("fd66::", 64)),
                {"match": {"op": "!=", "left": oifname(), "right": "br-6"}}, {"masquerade": null}]])
        );
        assert_eq!(six.iter().filter(|r| r[0] == "postrouting").count(), 1, "{six:?}");
        assert_eq!(
            six.iter().filter(|r| r[0] == "forward").count(),
            2,
            "one isolation rule per dual bridge"
        );
        let counts = r.rule_counts();
        assert_eq!(counts["ip6 postrouting"], 1);
        assert_eq!(counts["ip6 forward"], 2);
        assert_eq!(counts["postrouting"], 2, "IPv4 masquerade for berth0 and br-6");
    }

    fn port_rule(ip: &str, hp: u32, cp: u32, proto: &str, target: &str, bridge: &str) -> PortRule {
        PortRule {
            mapping: berth_core::ports::PortMapping::validate(ip, hp, cp, proto).unwrap(),
            target: target.parse().unwrap(),
            target6: None,
            bridge: bridge.into(),
        }
    }

    /// The batch as nft will read it.
    fn commands(r: &Ruleset) -> Vec<Value> {
        let v = serde_json::to_value(&r.doc).unwrap();
        v["nftables"].as_array().unwrap().clone()
    }

    fn chain(r: &Ruleset, name: &str) -> Value {
        commands(r)
            .into_iter()
            .find(|c| c["add"]["chain"]["name"] == name)
            .map(|c| c["add"]["chain"].clone())
            .unwrap_or_else(|| panic!("no chain {name}"))
    }

    /// The statements of each rule of `name`, in order.
    fn rules(r: &Ruleset, name: &str) -> Vec<Value> {
        commands(r)
            .into_iter()
            .filter(|c| c["add"]["rule"]["chain"] == name && c["add"]["rule"]["family"] == "ip")
            .map(|c| {
                let rule = &c["add"]["rule"];
                assert_eq!((&rule["family"], &rule["table"]), (&json!("ip"), &json!("berth")));
                rule["expr"].clone()
            })
            .collect()
    }

    fn eq(left: Value, right: Value) -> Value {
        json!({"match": {"op": "==", "left": left, "right": right}})
    }

    fn oifname() -> Value {
        json!({"meta": {"key": "oifname"}})
    }

    fn saddr() -> Value {
        json!({"payload": {"protocol": "ip", "field": "saddr"}})
    }

    fn ct_dnat() -> Value {
        json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}})
    }

    fn net(addr: &str, len: u32) -> Value {
        json!({"prefix": {"addr": addr, "len": len}})
    }

    #[test]
    fn replaces_the_table_in_one_batch() {
        let r = render(&[b("berth0", "172.17.0.0/16", true)], &[]);
        let cmds = commands(&r);
        let table = json!({"family": "ip", "name": "berth"});
        assert_eq!(cmds[0], json!({"add": {"table": table}}));
        assert_eq!(cmds[1], json!({"delete": {"table": table}}));
        assert_eq!(cmds[2], json!({"add": {"table": table}}));
        // Every chain comes before the first rule of its table (the jump to `ports` needs it).
        let first_rule = cmds.iter().position(|c| c["add"].get("rule").is_some());
        let last_chain = cmds
            .iter()
            .rposition(|c| c["add"].get("chain").is_some() && c["add"]["chain"]["family"] == "ip");
        assert!(last_chain < first_rule || first_rule.is_none());
        assert_eq!(
            chain(&r, "postrouting"),
            json!({"family": "ip", "table": "berth", "name": "postrouting",
                   "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"})
        );
        assert_eq!(
            chain(&r, "forward"),
            json!({"family": "ip", "table": "berth", "name": "forward",
                   "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"})
        );
        assert_eq!(
            r.rule_counts(),
            BTreeMap::from([("forward".into(), 0), ("postrouting".into(), 1)])
        );
    }

    /// An internal bridge: nothing forwarded in or out, checked before the
    /// accept of published ports; no masquerade.
    #[test]
    fn internal_bridges_forward_nothing_across() {
        let internal = BridgeRules {
            internal: true,
            ..b("br-in", "172.30.0.0/16", false)
        };
        let r = render(
            &[internal, b("berth0", "172.17.0.0/16", true)],
            &[port_rule("", 8080, 80, "tcp", "172.17.0.2", "berth0")],
        );
        let ne =
            |key: &str, v: &str| json!({"match": {"op": "!=", "left": {"meta": {"key": key}}, "right": v}});
        let iif = json!({"meta": {"key": "iifname"}});
        let forward = rules(&r, "forward");
        assert_eq!(
            forward[0],
            json!([eq(iif.clone(), json!("br-in")), ne("oifname", "br-in"), {"drop": null}])
        );
        assert_eq!(
            forward[1],
            json!([eq(oifname(), json!("br-in")), ne("iifname", "br-in"), {"drop": null}])
        );
        assert_eq!(forward[2], json!([ct_dnat(), {"accept": null}]));
        let post = serde_json::to_string(&rules(&r, "postrouting")).unwrap();
        assert!(
            !post.contains("172.30.0.0"),
            "an internal subnet is not masqueraded: {post}"
        );
    }

    #[test]
    fn renders_masquerade_and_isolation() {
        let r = render(
            &[
                b("br-1", "172.18.0.0/16", false),
                b("berth0", "172.17.0.0/16", true),
                b("br-2", "172.19.0.5/16", true),
            ],
            &[],
        );
        assert_eq!(
            rules(&r, "postrouting"),
            vec![
                json!([
                    eq(saddr(), net("172.17.0.0", 16)),
                    {"match": {"op": "!=", "left": oifname(), "right": "berth0"}},
                    {"masquerade": null}
                ]),
                // No rule for br-1 (masquerade off); host bits are dropped.
                json!([
                    eq(saddr(), net("172.19.0.0", 16)),
                    {"match": {"op": "!=", "left": oifname(), "right": "br-2"}},
                    {"masquerade": null}
                ]),
            ]
        );
        let drop = |from: &str, to: &[&str]| {
            json!([
                eq(json!({"meta": {"key": "iifname"}}), json!(from)),
                eq(oifname(), json!({"set": to})),
                {"drop": null}
            ])
        };
        assert_eq!(
            rules(&r, "forward"),
            vec![
                drop("berth0", &["br-1", "br-2"]),
                drop("br-1", &["berth0", "br-2"]),
                drop("br-2", &["berth0", "br-1"]),
            ]
        );
        assert!(commands(&r).iter().all(|c| c["add"]["chain"]["name"] != "ports"));
        assert_eq!(
            r.rule_counts(),
            BTreeMap::from([("forward".into(), 3), ("postrouting".into(), 2)])
        );
    }

    #[test]
    fn renders_published_ports() {
        let ports = [
            port_rule("192.168.205.10", 5353, 53, "udp", "172.17.0.3", "berth0"),
            port_rule("", 8080, 80, "tcp", "172.17.0.2", "berth0"),
        ];
        let r = render(
            &[
                b("berth0", "172.17.0.0/16", true),
                b("br-1", "172.18.0.0/16", true),
            ],
            &ports,
        );
        let jump = json!([
            eq(json!({"fib": {"result": "type", "flags": ["daddr"]}}), json!("local")),
            {"jump": {"target": "ports"}}
        ]);
        for hook in ["prerouting", "output"] {
            assert_eq!(
                chain(&r, hook),
                json!({"family": "ip", "table": "berth", "name": hook,
                       "type": "nat", "hook": hook, "prio": -100, "policy": "accept"})
            );
            assert_eq!(rules(&r, hook), vec![jump.clone()]);
        }
        assert_eq!(
            chain(&r, "ports"),
            json!({"family": "ip", "table": "berth", "name": "ports"})
        );
        let dport = |proto: &str, p: u16| {
            eq(
                json!({"payload": {"protocol": proto, "field": "dport"}}),
                json!(p),
            )
        };
        assert_eq!(
            rules(&r, "ports"),
            vec![
                json!([dport("tcp", 8080), {"dnat": {"addr": "172.17.0.2", "port": 80}}]),
                json!([
                    eq(json!({"payload": {"protocol": "ip", "field": "daddr"}}), json!("192.168.205.10")),
                    dport("udp", 5353),
                    {"dnat": {"addr": "172.17.0.3", "port": 53}}
                ]),
            ]
        );
        // Loopback and hairpin masquerade only for the bridge with published ports.
        let post = rules(&r, "postrouting");
        assert_eq!(
            post[..2],
            [
                json!([eq(saddr(), net("127.0.0.0", 8)), eq(oifname(), json!("berth0")), {"masquerade": null}]),
                json!([
                    ct_dnat(),
                    eq(saddr(), net("172.17.0.0", 16)),
                    eq(oifname(), json!("berth0")),
                    {"masquerade": null}
                ]),
            ]
        );
        assert_eq!(post.len(), 4, "then one outbound masquerade per bridge: {post:?}");
        let forward = rules(&r, "forward");
        assert_eq!(forward[0], json!([ct_dnat(), {"accept": null}]));
        assert_eq!(forward.len(), 3);
        assert_eq!(
            r.rule_counts(),
            BTreeMap::from([
                ("forward".into(), 3),
                ("output".into(), 1),
                ("ports".into(), 2),
                ("postrouting".into(), 4),
                ("prerouting".into(), 1),
            ])
        );
        // The order of the inputs does not matter.
        let again = render(
            &[
                b("br-1", "172.18.0.0/16", true),
                b("berth0", "172.17.0.0/16", true),
            ],
            &[ports[1].clone(), ports[0].clone()],
        );
        assert_eq!(again, r);
    }

    #[test]
    fn empty_only_deletes() {
        let r = render(&[], &[]);
        let table = json!({"family": "ip", "name": "berth"});
        let table6 = json!({"family": "ip6", "name": "berth"});
        assert_eq!(
            commands(&r),
            vec![
                json!({"add": {"table": table}}),
                json!({"delete": {"table": table}}),
                json!({"add": {"table": table6}}),
                json!({"delete": {"table": table6}})
            ]
        );
        assert!(r.rule_counts().is_empty());
    }

    #[test]
    fn hostile_names_never_reach_the_rules() {
        let good = render(&[b("berth0", "172.17.0.0/16", true)], &[]);
        for name in ["a\"b", "e*", "x;y", "{", "0123456789abcdef", "", "..", "a b"] {
            let r = render(
                &[b("berth0", "172.17.0.0/16", true), b(name, "172.18.0.0/16", true)],
                &[port_rule("", 8080, 80, "tcp", "172.18.0.2", name)],
            );
            assert_eq!(r, good, "{name:?} is left out with its port");
            let json = serde_json::to_string(&r.doc).unwrap();
            assert!(!json.contains("172.18."), "{name:?}: {json}");
        }
    }

    #[test]
    fn reads_the_dnat_rules_of_a_listing() {
        let listing = br#"{"nftables": [
            {"chain": {"family": "ip", "table": "berth", "name": "ports", "handle": 3}},
            {"rule": {"family": "ip", "table": "berth", "chain": "ports", "handle": 9, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}},
                {"dnat": {"addr": "172.17.0.2", "port": 80}}]}},
            {"rule": {"family": "ip", "table": "berth", "chain": "prerouting", "handle": 4, "expr": [
                {"jump": {"target": "ports"}}]}}
        ]}"#;
        assert_eq!(
            dnat_listed(listing).unwrap(),
            BTreeSet::from([("tcp".to_string(), 8080, "172.17.0.2".parse().unwrap(), 80)])
        );
    }

    #[test]
    fn counts_a_listing() {
        let listing = br#"{"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "ip", "name": "berth", "handle": 2}},
            {"chain": {"family": "ip", "table": "berth", "name": "postrouting", "handle": 1,
                       "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
            {"chain": {"family": "ip", "table": "berth", "name": "forward", "handle": 2}},
            {"rule": {"family": "ip", "table": "berth", "chain": "postrouting", "handle": 3,
                      "expr": [{"something": {"new": true}}, {"masquerade": null}]}},
            {"rule": {"family": "ip", "table": "berth", "chain": "postrouting", "handle": 4, "expr": []}}
        ]}"#;
        assert_eq!(
            count_listed(listing).unwrap(),
            BTreeMap::from([("forward".into(), 0), ("postrouting".into(), 2)])
        );
        assert!(count_listed(b"not json").is_err());
    }
}
