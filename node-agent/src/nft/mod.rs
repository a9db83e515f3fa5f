//! berth's nftables rules on a node, built as typed data (libnftables' JSON
//! schema, through the `nftables` crate) and run in process through
//! libnftables ([`run`]). Two tables: `ip berth` (published ports,
//! masquerade per bridge subnet, isolation between bridges) and, for
//! dual-stack bridge networks, `ip6 berth` (the same for IPv6).
//!
//! The tables' *structure* (chains, rules, maps) depends only on the
//! bridges realised here; it is replaced as one atomic batch (`add table;
//! delete table; add table, maps, chains, rules, elements`) when it
//! changes, so traffic never sees a half-written ruleset. Published ports
//! are *elements* of DNAT maps in that structure ([`PortElem`]): publishing
//! or withdrawing a port is one batch of `add element`/`delete element`
//! ([`update_ports`]), with no rewrite. `[::1]` is not DNAT (the kernel
//! drops DNAT-ed traffic from ::1): [`Ruleset::proxies`] lists the userland
//! proxies the agent runs instead ([`crate::proxy`]).
//!
//! No rule is ever text: names and addresses are JSON strings, so no value
//! can change the syntax of the batch, and interface names are checked with
//! [`berth_core::names::validate_ifname`] on top (nft reads a trailing `*`
//! as a wildcard even in JSON). [`observe`] reads the tables back (rules
//! per chain and the map elements) so drift can be seen and repaired.
//! (`enable_icc=false` is not a rule: the agent marks the bridge ports
//! isolated instead, which needs no firewall and no per-sandbox rule; this
//! kernel also lacks `meta ibrname` in bridge tables.)
mod listing;
pub mod run;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};

use berth_core::names::validate_ifname;
use berth_core::ports::Proto;
use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
    SetItem,
};
use nftables::schema::{
    Chain, Element, Map, NfCmd, NfListObject, NfObject, Nftables, Rule, SetType, SetTypeValue, Table,
};
use nftables::stmt::{JumpTarget, Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

pub use self::listing::{Seen, observe, published};

/// The name of berth's tables.
pub const TABLE: &str = "berth";

/// The DNAT maps of each table: (address map, port map) for ports on one
/// host address (key `daddr . l4proto . dport`) and on every local address
/// of the family (key `l4proto . dport`).
pub const ADDR_MAPS: (&str, &str) = ("addr_dnat_ip", "addr_dnat_port");
pub const ANY_MAPS: (&str, &str) = ("any_dnat_ip", "any_dnat_port");

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

/// One DNAT of a published port, as elements of berth's maps: packets to
/// `host` (any local address of the target's family when `None`),
/// `proto`/`host_port` go to `target:port`. The family (`ip` or `ip6`
/// table) is the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortElem {
    pub host: Option<IpAddr>,
    pub proto: Proto,
    pub host_port: u16,
    pub target: IpAddr,
    pub port: u16,
}

impl PortElem {
    fn family(&self) -> NfFamily {
        match self.target {
            IpAddr::V4(_) => NfFamily::IP,
            IpAddr::V6(_) => NfFamily::IP6,
        }
    }

    /// The (address map, port map) the element lives in.
    fn maps(&self) -> (&'static str, &'static str) {
        if self.host.is_some() { ADDR_MAPS } else { ANY_MAPS }
    }

    fn key(&self) -> Expression<'static> {
        let mut parts = Vec::new();
        if let Some(h) = self.host {
            parts.push(text(h.to_string()));
        }
        parts.push(text(self.proto.as_str()));
        parts.push(port(self.host_port));
        Expression::Named(NamedExpression::Concat(parts))
    }

    /// `[::1]:8080 → …` style, for logs and doctor.
    pub fn describe(&self) -> String {
        let host = match self.host {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None if self.target.is_ipv4() => "0.0.0.0".into(),
            None => "[::]".into(),
        };
        let target = match self.target {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        format!(
            "{host}:{}/{} -> {target}:{}",
            self.host_port, self.proto, self.port
        )
    }
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

/// A `[::1]` port proxied in userland: (protocol, host port) → where to.
pub type Proxies = BTreeMap<(Proto, u16), SocketAddrV6>;

/// What [`render`] makes: the batch that replaces berth's tables
/// (structure only: `add table`, `delete table` (so the delete succeeds
/// whether or not the table existed), then the new table, its maps, chains
/// and rules; with no bridges it only deletes), the DNAT elements of the
/// published ports and the `[::1]` proxies. Installed by [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    doc: Nftables<'static>,
    elements: BTreeSet<PortElem>,
    proxies: Proxies,
}

impl Ruleset {
    /// Rules per chain that this ruleset installs, chains without rules
    /// included (as 0); empty when it installs no table. Compare with
    /// [`observe`] to notice a table changed behind the agent's back. Does
    /// not depend on the published ports.
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

    /// Whether `other` has the same tables, chains, rules and maps (the
    /// published ports aside): then going from one to the other is a matter
    /// of elements ([`update_ports`]).
    pub fn same_structure(&self, other: &Ruleset) -> bool {
        self.doc == other.doc
    }

    /// The DNAT elements of the published ports.
    pub fn elements(&self) -> &BTreeSet<PortElem> {
        &self.elements
    }

    /// The `[::1]` ports the agent proxies.
    pub fn proxies(&self) -> &Proxies {
        &self.proxies
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
    let ports: Vec<&PortRule> = ports
        .iter()
        .filter(|p| usable("published port behind bridge", &p.bridge))
        .collect();
    let dual: BTreeSet<&str> = bridges
        .iter()
        .filter(|b| b.subnet6.is_some())
        .map(|b| b.bridge.as_str())
        .collect();

    let mut batch = Batch::new();
    render4(&mut batch, &bridges);
    render6(&mut batch, &bridges);

    let mut elements = BTreeSet::new();
    let mut proxies = Proxies::new();
    for p in &ports {
        let m = &p.mapping;
        if !bridges.is_empty() && m.on_ipv4() {
            elements.insert(PortElem {
                host: m.host_ip.filter(IpAddr::is_ipv4),
                proto: m.proto,
                host_port: m.host_port,
                target: IpAddr::V4(p.target),
                port: m.container_port,
            });
        }
        let Some(target6) = p.target6.filter(|_| dual.contains(p.bridge.as_str())) else {
            continue;
        };
        if !m.on_ipv6() {
            continue;
        }
        // [::1] (asked for, or part of all addresses): a proxy, not DNAT.
        if m.on_ipv6_loopback() || m.host_ip.is_none_or(|h| h.is_unspecified()) {
            proxies.insert(
                (m.proto, m.host_port),
                SocketAddrV6::new(target6, m.container_port, 0, 0),
            );
        }
        if !m.on_ipv6_loopback() {
            elements.insert(PortElem {
                host: m.host_ip.filter(|h| !h.is_unspecified()),
                proto: m.proto,
                host_port: m.host_port,
                target: IpAddr::V6(target6),
                port: m.container_port,
            });
        }
    }
    Ruleset {
        doc: batch.to_nftables(),
        elements,
        proxies,
    }
}

/// The DNAT maps, chains and rules of a table of `family`: `prerouting`
/// and `output` (nat, priority -100 = dstnat) jump to `ports` for traffic
/// to a local address; `ports` looks the packet up in the address maps,
/// then in the all-addresses maps.
fn dnat_structure(
    f: NfFamily,
    chains: &mut Vec<Chain<'static>>,
    rules: &mut Vec<Rule<'static>>,
    batch: &mut Batch<'static>,
) {
    let (addr_type, nat) = match f {
        NfFamily::IP6 => (SetType::Ipv6Addr, NATFamily::IP6),
        _ => (SetType::Ipv4Addr, NATFamily::IP),
    };
    let proto_port = || vec![meta(MetaKey::L4proto), field("th", "dport")];
    for (maps, with_addr) in [(ADDR_MAPS, true), (ANY_MAPS, false)] {
        let mut key_type = vec![SetType::InetProto, SetType::InetService];
        if with_addr {
            key_type.insert(0, addr_type);
        }
        for (name, data) in [(maps.0, addr_type), (maps.1, SetType::InetService)] {
            batch.add(NfListObject::Map(Box::new(Map {
                family: f,
                table: TABLE.into(),
                name: name.into(),
                handle: None,
                set_type: SetTypeValue::Concatenated(key_type.clone().into()),
                map: SetTypeValue::Single(data),
                policy: None,
                flags: None,
                elem: None,
                timeout: None,
                gc_interval: None,
                size: None,
                comment: None,
            })));
        }
        let mut key = proto_port();
        if with_addr {
            let proto = if f == NfFamily::IP6 { "ip6" } else { "ip" };
            key.insert(0, field(proto, "daddr"));
        }
        let lookup = |map: &str| {
            Expression::Named(NamedExpression::Map(Box::new(nftables::expr::Map {
                key: Expression::Named(NamedExpression::Concat(key.clone())),
                data: text(format!("@{map}")),
            })))
        };
        rules.push(rule_in(
            f,
            "ports",
            vec![Statement::DNAT(Some(NAT {
                addr: Some(lookup(maps.0)),
                family: Some(nat),
                port: Some(lookup(maps.1)),
                flags: None,
            }))],
        ));
    }
    for (name, hook) in [("prerouting", NfHook::Prerouting), ("output", NfHook::Output)] {
        chains.push(base_chain_in(f, name, NfChainType::NAT, hook, -100));
        let mut expr = Vec::new();
        if f == NfFamily::IP6 && name == "output" {
            // [::1] is the userland proxy's (see `render`).
            expr.push(Statement::Match(Match {
                left: field("ip6", "daddr"),
                right: text(Ipv6Addr::LOCALHOST.to_string()),
                op: Operator::NEQ,
            }));
        }
        expr.push(is(fib_daddr_type(), text("local")));
        expr.push(Statement::Jump(JumpTarget {
            target: "ports".into(),
        }));
        rules.push(rule_in(f, name, expr));
    }
    chains.push(Chain {
        family: f,
        table: TABLE.into(),
        name: "ports".into(),
        ..Chain::default()
    });
}

/// The `ip berth` part of the batch: always deleted, then, with bridges
/// here, made again with the DNAT maps and chains, masquerade (loopback
/// sources for 127.0.0.1:PORT, hairpin, outbound), `--internal` drops,
/// the accept of published ports and isolation between bridges.
fn render4(batch: &mut Batch<'static>, bridges: &[&BridgeRules]) {
    let table = Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    };
    batch.add(NfListObject::Table(table.clone()));
    batch.delete(NfListObject::Table(table.clone()));
    if bridges.is_empty() {
        return;
    }
    batch.add(NfListObject::Table(table));

    let mut chains = Vec::new();
    let mut rules = Vec::new();
    let f = NfFamily::IP;
    dnat_structure(f, &mut chains, &mut rules, batch);

    // Priority 100 is srcnat.
    chains.push(base_chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    for b in bridges.iter().filter(|b| !b.internal) {
        // 127.0.0.1:PORT from the node (route_localnet is on for bridges
        // with published ports), and hairpin: a sandbox reaching a port
        // published by its own bridge. Inert without published ports.
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
    forward_rules(f, bridges, bridges, &mut rules);

    for c in chains {
        batch.add(NfListObject::Chain(c));
    }
    for r in rules {
        batch.add(NfListObject::Rule(r));
    }
}

/// The forward chain of `f`: internal networks first (nothing crosses
/// their bridge, not even a published port of another network reached
/// through the gateway), then published ports from every network, then
/// each of `own` isolated from every other bridge.
fn forward_rules(f: NfFamily, all: &[&BridgeRules], own: &[&BridgeRules], rules: &mut Vec<Rule<'static>>) {
    for b in own.iter().filter(|b| b.internal) {
        for (inside, outside) in [
            (MetaKey::Iifname, MetaKey::Oifname),
            (MetaKey::Oifname, MetaKey::Iifname),
        ] {
            rules.push(rule_in(
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
            ));
        }
    }
    rules.push(rule_in(
        f,
        "forward",
        vec![ct_status_dnat(), Statement::Accept(None)],
    ));
    for b in own {
        let others: Vec<SetItem<'static>> = all
            .iter()
            .filter(|o| o.bridge != b.bridge)
            .map(|o| SetItem::Element(text(&o.bridge)))
            .collect();
        if others.is_empty() {
            continue;
        }
        rules.push(rule_in(
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
        ));
    }
}

/// The `ip6 berth` part of the batch: always deleted (a table left by a
/// removed dual-stack network goes), then, if a bridge here is dual stack,
/// made again as the `ip` table is for IPv4: the DNAT maps and chains
/// (`output` leaves `::1` to the userland proxy), hairpin and outbound
/// masquerade per IPv6 subnet (unless `enable_ip_masquerade=false` or
/// `--internal`), `--internal` drops, the accept of published ports and
/// isolation from every other bridge.
fn render6(batch: &mut Batch<'static>, bridges: &[&BridgeRules]) {
    let table = Table {
        family: NfFamily::IP6,
        name: TABLE.into(),
        handle: None,
    };
    batch.add(NfListObject::Table(table.clone()));
    batch.delete(NfListObject::Table(table.clone()));
    let dual: Vec<&BridgeRules> = bridges.iter().copied().filter(|b| b.subnet6.is_some()).collect();
    if dual.is_empty() {
        return;
    }
    batch.add(NfListObject::Table(table));
    let f = NfFamily::IP6;
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    dnat_structure(f, &mut chains, &mut rules, batch);
    chains.push(base_chain_in(
        f,
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    for b in dual.iter().filter(|b| !b.internal) {
        let subnet6 = b.subnet6.expect("dual stack");
        // Hairpin: a sandbox reaching a port its own bridge publishes.
        rules.push(rule_in(
            f,
            "postrouting",
            vec![
                ct_status_dnat(),
                is(field("ip6", "saddr"), prefix6(subnet6)),
                is(meta(MetaKey::Oifname), text(&b.bridge)),
                masquerade(),
            ],
        ));
    }
    for b in dual.iter().filter(|b| b.masquerade) {
        let subnet6 = b.subnet6.expect("dual stack");
        rules.push(rule_in(
            f,
            "postrouting",
            vec![
                is(field("ip6", "saddr"), prefix6(subnet6)),
                Statement::Match(Match {
                    left: meta(MetaKey::Oifname),
                    right: text(&b.bridge),
                    op: Operator::NEQ,
                }),
                masquerade(),
            ],
        ));
    }
    chains.push(base_chain_in(
        f,
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
    ));
    forward_rules(f, bridges, &dual, &mut rules);
    for c in chains {
        batch.add(NfListObject::Chain(c));
    }
    for r in rules {
        batch.add(NfListObject::Rule(r));
    }
}

/// `add element` (or `delete element`) commands for `elems`, one per map.
fn element_cmds(elems: &[PortElem], add: bool) -> Vec<NfObject<'static>> {
    let mut per_map: BTreeMap<(bool, &'static str), (NfFamily, Vec<Expression<'static>>)> = BTreeMap::new();
    for e in elems {
        let (ip_map, port_map) = e.maps();
        let v6 = e.family() == NfFamily::IP6;
        for (map, value) in [(ip_map, text(e.target.to_string())), (port_map, port(e.port))] {
            let item = if add {
                Expression::List(vec![e.key(), value])
            } else {
                e.key()
            };
            per_map
                .entry((v6, map))
                .or_insert_with(|| (e.family(), Vec::new()))
                .1
                .push(item);
        }
    }
    per_map
        .into_iter()
        .map(|((_, map), (family, elem))| {
            let el = NfListObject::Element(Element {
                family,
                table: TABLE.into(),
                name: map.into(),
                elem: elem.into(),
            });
            NfObject::CmdObject(if add { NfCmd::Add(el) } else { NfCmd::Delete(el) })
        })
        .collect()
}

/// Installs a ruleset from [`render`] in the calling thread's network
/// namespace (for the agent: its node's) as one transaction: the tables
/// replaced, with every element of the published ports.
pub async fn apply(rules: &Ruleset) -> Result<(), NftError> {
    let elems: Vec<PortElem> = rules.elements.iter().copied().collect();
    let mut objects = rules.doc.objects.to_vec();
    objects.extend(element_cmds(&elems, true));
    let json = serde_json::to_vec(&Nftables {
        objects: objects.into(),
    })?;
    run::run(&json).await.map(drop)
}

/// Publishes `add` and withdraws `remove` in berth's maps as they stand,
/// in one transaction (a changed target is in both): no table is
/// rewritten. Fails as a whole when an element to remove is not there or
/// a map is missing; the caller then applies the whole ruleset.
pub async fn update_ports(add: &[PortElem], remove: &[PortElem]) -> Result<(), NftError> {
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let mut objects = element_cmds(remove, false);
    objects.extend(element_cmds(add, true));
    let json = serde_json::to_vec(&Nftables {
        objects: objects.into(),
    })?;
    run::run(&json).await.map(drop)
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

#[cfg(test)]
mod tests;
