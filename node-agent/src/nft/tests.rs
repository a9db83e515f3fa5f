//! The rendering of berth's tables and the reading of listings, as data.
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

fn dual(name: &str, subnet: &str, subnet6: &str) -> BridgeRules {
    BridgeRules {
        subnet6: Some(subnet6.parse().unwrap()),
        ..b(name, subnet, true)
    }
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

fn six(ip: &str, hp: u32, cp: u32, proto: &str) -> PortRule {
    PortRule {
        target6: Some("fd66::2".parse().unwrap()),
        ..port_rule(ip, hp, cp, proto, "10.66.0.2", "br-6")
    }
}

fn elem(host: Option<&str>, proto: Proto, hp: u16, target: &str, port: u16) -> PortElem {
    PortElem {
        host: host.map(|h| h.parse().unwrap()),
        proto,
        host_port: hp,
        target: target.parse().unwrap(),
        port,
    }
}

/// The statements of each rule of `name` in the `ip6` table.
fn rules6(r: &Ruleset, name: &str) -> Vec<Value> {
    commands(r)
        .into_iter()
        .filter(|c| c["add"]["rule"]["chain"] == name && c["add"]["rule"]["family"] == "ip6")
        .map(|c| c["add"]["rule"]["expr"].clone())
        .collect()
}

/// A dual-stack bridge gets the `ip6 berth` table: hairpin and outbound
/// masquerade for its IPv6 subnet (no outbound one with masquerade off),
/// isolation from the other bridges; its chains are counted as `ip6 <chain>`.
#[test]
fn dual_stack_bridges_get_the_ip6_table() {
    let quiet = BridgeRules {
        masquerade: false,
        ..dual("br-7", "10.67.0.0/24", "fd67::/64")
    };
    let r = render(
        &[
            dual("br-6", "10.66.0.0/24", "fd66::/64"),
            quiet,
            b("berth0", "172.17.0.0/16", true),
        ],
        &[],
    );
    let saddr6 = json!({"payload": {"protocol": "ip6", "field": "saddr"}});
    let post = rules6(&r, "postrouting");
    assert_eq!(
        post[0],
        json!([ct_dnat(), eq(saddr6.clone(), net("fd66::", 64)), eq(oifname(), json!("br-6")), {"masquerade": null}])
    );
    assert_eq!(
        post[2],
        json!([eq(saddr6, net("fd66::", 64)),
            {"match": {"op": "!=", "left": oifname(), "right": "br-6"}}, {"masquerade": null}])
    );
    assert_eq!(post.len(), 3, "two hairpins, one outbound: {post:?}");
    let forward = rules6(&r, "forward");
    assert_eq!(forward[0], json!([ct_dnat(), {"accept": null}]));
    assert_eq!(forward.len(), 3, "then one isolation rule per dual bridge");
    let counts = r.rule_counts();
    assert_eq!(counts["ip6 postrouting"], 3);
    assert_eq!(counts["ip6 forward"], 3);
    assert_eq!(counts["ip6 ports"], 2);
    assert_eq!(
        counts["postrouting"], 8,
        "IPv4: loopback and hairpin per bridge, outbound for berth0 and br-6"
    );
}

#[test]
fn replaces_the_table_in_one_batch() {
    let r = render(&[b("berth0", "172.17.0.0/16", true)], &[]);
    let cmds = commands(&r);
    let table = json!({"family": "ip", "name": "berth"});
    assert_eq!(cmds[0], json!({"add": {"table": table}}));
    assert_eq!(cmds[1], json!({"delete": {"table": table}}));
    assert_eq!(cmds[2], json!({"add": {"table": table}}));
    // The maps, then every chain, before the first rule of the table (the
    // jump to `ports` and the lookups need them).
    let first_rule = cmds.iter().position(|c| c["add"].get("rule").is_some()).unwrap();
    let last_chain = cmds
        .iter()
        .rposition(|c| c["add"].get("chain").is_some() && c["add"]["chain"]["family"] == "ip")
        .unwrap();
    let last_map = cmds.iter().rposition(|c| c["add"].get("map").is_some()).unwrap();
    assert!(last_map < last_chain && last_chain < first_rule);
    assert_eq!(
        cmds[3],
        json!({"add": {"map": {"family": "ip", "table": "berth", "name": "addr_dnat_ip",
            "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "ipv4_addr"}}})
    );
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
        BTreeMap::from([
            ("forward".into(), 1),
            ("output".into(), 1),
            ("ports".into(), 2),
            ("postrouting".into(), 3),
            ("prerouting".into(), 1),
        ])
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
    let ne = |key: &str, v: &str| json!({"match": {"op": "!=", "left": {"meta": {"key": key}}, "right": v}});
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
    let post = rules(&r, "postrouting");
    assert_eq!(post.len(), 8, "loopback and hairpin for 3 bridges, 2 outbound");
    assert_eq!(
        post[6..],
        [
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
            json!([ct_dnat(), {"accept": null}]),
            drop("berth0", &["br-1", "br-2"]),
            drop("br-1", &["berth0", "br-2"]),
            drop("br-2", &["berth0", "br-1"]),
        ]
    );
}

/// The two lookups of the `ports` chain and the jumps to it; the ports
/// themselves are only elements, so the structure does not depend on them.
#[test]
fn renders_published_ports_as_elements() {
    let ports = [
        port_rule("192.168.205.10", 5353, 53, "udp", "172.17.0.3", "berth0"),
        port_rule("", 8080, 80, "tcp", "172.17.0.2", "berth0"),
    ];
    let bridges = [
        b("berth0", "172.17.0.0/16", true),
        b("br-1", "172.18.0.0/16", true),
    ];
    let r = render(&bridges, &ports);
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
    let l4 = json!({"meta": {"key": "l4proto"}});
    let dport = json!({"payload": {"protocol": "th", "field": "dport"}});
    let daddr = json!({"payload": {"protocol": "ip", "field": "daddr"}});
    let lookup = |key: Value, map: &str| json!({"map": {"key": {"concat": key}, "data": format!("@{map}")}});
    assert_eq!(
        rules(&r, "ports"),
        vec![
            json!([{"dnat": {"family": "ip",
                "addr": lookup(json!([daddr, l4, dport]), "addr_dnat_ip"),
                "port": lookup(json!([daddr, l4, dport]), "addr_dnat_port")}}]),
            json!([{"dnat": {"family": "ip",
                "addr": lookup(json!([l4, dport]), "any_dnat_ip"),
                "port": lookup(json!([l4, dport]), "any_dnat_port")}}]),
        ]
    );
    assert_eq!(
        r.elements().iter().copied().collect::<Vec<_>>(),
        vec![
            elem(None, Proto::Tcp, 8080, "172.17.0.2", 80),
            elem(Some("192.168.205.10"), Proto::Udp, 5353, "172.17.0.3", 53),
        ]
    );
    assert!(r.proxies().is_empty(), "no IPv6 here");
    let bare = render(&bridges, &[]);
    assert!(bare.same_structure(&r) && bare != r);
    // The order of the inputs does not matter.
    let again = render(
        &[bridges[1].clone(), bridges[0].clone()],
        &[ports[1].clone(), ports[0].clone()],
    );
    assert_eq!(again, r);
    // The batches for elements: one command per map, deletes by key.
    let elems: Vec<PortElem> = r.elements().iter().copied().collect();
    let add = serde_json::to_value(element_cmds(&elems[..1], true)).unwrap();
    assert_eq!(
        add,
        json!([
            {"add": {"element": {"family": "ip", "table": "berth", "name": "any_dnat_ip",
                "elem": [[{"concat": ["tcp", 8080]}, "172.17.0.2"]]}}},
            {"add": {"element": {"family": "ip", "table": "berth", "name": "any_dnat_port",
                "elem": [[{"concat": ["tcp", 8080]}, 80]]}}},
        ])
    );
    let del = serde_json::to_value(element_cmds(&elems[1..], false)).unwrap();
    assert_eq!(
        del[0],
        json!({"delete": {"element": {"family": "ip", "table": "berth", "name": "addr_dnat_ip",
            "elem": [{"concat": ["192.168.205.10", "udp", 5353]}]}}})
    );
}

/// IPv6 host addresses: all addresses publishes on both families (and
/// [::1] through the proxy), `[::]` on IPv6 only, one IPv6 address on it,
/// `[::1]` only through the proxy, an IPv4 address never on IPv6; nothing
/// on IPv6 for a target without an IPv6 address.
#[test]
fn ipv6_ports_are_ip6_elements_and_loopback_proxies() {
    let bridges = [dual("br-6", "10.66.0.0/24", "fd66::/64")];
    let r = render(
        &bridges,
        &[
            six("", 8080, 80, "tcp"),
            six("::", 8081, 81, "tcp"),
            six("fd99::10", 8082, 82, "udp"),
            six("::1", 8083, 83, "udp"),
            six("10.0.0.1", 8084, 84, "tcp"),
            port_rule("", 8085, 85, "tcp", "10.66.0.3", "br-6"),
        ],
    );
    assert_eq!(
        r.elements().iter().copied().collect::<Vec<_>>(),
        vec![
            elem(None, Proto::Tcp, 8080, "10.66.0.2", 80),
            elem(None, Proto::Tcp, 8080, "fd66::2", 80),
            elem(None, Proto::Tcp, 8081, "fd66::2", 81),
            elem(None, Proto::Tcp, 8085, "10.66.0.3", 85),
            elem(Some("10.0.0.1"), Proto::Tcp, 8084, "10.66.0.2", 84),
            elem(Some("fd99::10"), Proto::Udp, 8082, "fd66::2", 82),
        ]
    );
    let to = |p| SocketAddrV6::new("fd66::2".parse().unwrap(), p, 0, 0);
    assert_eq!(
        r.proxies(),
        &Proxies::from([
            ((Proto::Tcp, 8080), to(80)),
            ((Proto::Tcp, 8081), to(81)),
            ((Proto::Udp, 8083), to(83)),
        ])
    );
    let out = rules6(&r, "output");
    assert_eq!(
        out[0][0],
        json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "::1"}}),
        "[::1] is the proxy's, not DNAT's"
    );
    // A dual-stack target behind a bridge that is not dual here: no IPv6.
    let r4 = render(&[b("br-6", "10.66.0.0/24", true)], &[six("", 8080, 80, "tcp")]);
    assert_eq!(r4.elements().len(), 1);
    assert!(r4.proxies().is_empty());
}

#[test]
fn empty_only_deletes() {
    let r = render(&[], &[port_rule("", 8080, 80, "tcp", "172.17.0.2", "berth0")]);
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
    assert!(r.elements().is_empty(), "no table, no elements");
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
        let json = serde_json::to_string(&r.doc).unwrap() + &format!("{:?}", r.elements());
        assert!(!json.contains("172.18."), "{name:?}: {json}");
    }
}

#[test]
fn reads_a_listing() {
    let listing = json!({"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "berth", "handle": 2}},
        {"map": {"family": "ip", "name": "any_dnat_ip", "table": "berth", "type": ["inet_proto", "inet_service"],
                 "handle": 3, "map": "ipv4_addr",
                 "elem": [[{"concat": ["tcp", 8080]}, "172.17.0.2"], [{"concat": ["udp", 53]}, "172.17.0.3"]]}},
        {"map": {"family": "ip", "name": "any_dnat_port", "table": "berth", "type": ["inet_proto", "inet_service"],
                 "handle": 4, "map": "inet_service", "elem": [[{"concat": ["tcp", 8080]}, 80]]}},
        {"map": {"family": "ip", "name": "addr_dnat_ip", "table": "berth", "handle": 5, "map": "ipv4_addr",
                 "elem": [[{"concat": ["192.168.205.10", "tcp", 81]}, "172.17.0.4"]]}},
        {"map": {"family": "ip", "name": "addr_dnat_port", "table": "berth", "handle": 6, "map": "inet_service",
                 "elem": [[{"concat": ["192.168.205.10", "tcp", 81]}, 8081]]}},
        {"chain": {"family": "ip", "table": "berth", "name": "postrouting", "handle": 1,
                   "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "berth", "name": "forward", "handle": 2}},
        {"rule": {"family": "ip", "table": "berth", "chain": "postrouting", "handle": 3,
                  "expr": [{"something": {"new": true}}, {"masquerade": null}]}},
        {"rule": {"family": "ip", "table": "berth", "chain": "postrouting", "handle": 4, "expr": []}}
    ]});
    let mut seen = Seen::default();
    listing::read(&listing, "", &mut seen);
    assert_eq!(
        seen.counts,
        BTreeMap::from([("forward".into(), 0), ("postrouting".into(), 2)])
    );
    assert_eq!(
        seen.elements.into_iter().collect::<Vec<_>>(),
        vec![
            elem(None, Proto::Tcp, 8080, "172.17.0.2", 80),
            // Half an element (its port map entry deleted): port 0, never desired.
            elem(None, Proto::Udp, 53, "172.17.0.3", 0),
            elem(Some("192.168.205.10"), Proto::Tcp, 81, "172.17.0.4", 8081),
        ]
    );
    let mut six = Seen::default();
    let listing6 = json!({"nftables": [
        {"map": {"family": "ip6", "name": "any_dnat_port", "table": "berth", "map": "inet_service",
                 "elem": [[{"concat": ["tcp", 8080]}, 80]]}}
    ]});
    listing::read(&listing6, "ip6 ", &mut six);
    assert_eq!(
        six.elements.into_iter().collect::<Vec<_>>(),
        vec![elem(None, Proto::Tcp, 8080, "::", 80)],
        "half an IPv6 element keeps its family"
    );
}
