//! CLI habits Docker users have, on a real cluster: `ls -q`, `network
//! prune` (keeps networks in use and the built-in ones; refuses to run
//! unasked without a terminal) and `berth version` (client and server).
use berth_tests::cluster::{Cluster, must};
use berth_tests::stderr;

#[test]
fn quiet_ls_prune_and_version() {
    let c = must(Cluster::start(1), "cluster");
    c.cli_ok(&["network", "create", "used"]);
    c.cli_ok(&["network", "create", "spare1"]);
    c.cli_ok(&["network", "create", "spare2"]);
    c.cli_ok(&["sandbox", "create", "hq", "--node", "node1", "--network", "used"]);

    let ids = c.cli_ok(&["network", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 6, "{ids}");
    assert!(
        ids.lines()
            .all(|l| l.len() == 12 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "{ids}"
    );
    let sb = c.cli_ok(&["sandbox", "ls", "-q"]);
    let full = c.cli_json(&["sandbox", "inspect", "hq"]);
    assert!(full[0]["Id"].as_str().unwrap().starts_with(sb.trim()), "{sb}");
    assert_eq!(c.cli_ok(&["node", "ls", "-q"]), "node1\n");

    // Not a terminal and no --force: nothing is removed.
    let out = c.cli(&["network", "prune"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("berth: network prune removes every unused network: pass --force"));
    assert_eq!(c.cli_ok(&["network", "ls", "-q"]).lines().count(), 6);

    let out = c.cli_ok(&["network", "prune", "--force"]);
    assert_eq!(out, "Deleted Networks:\nspare1\nspare2\n");
    let names: Vec<String> = c
        .cli_json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["bridge", "host", "none", "used"]);
    // Nothing left to prune: no output.
    assert_eq!(c.cli_ok(&["network", "prune", "-f"]), "");

    let v = c.cli_json(&["version"]);
    assert_eq!(v["Server"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["Client"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["Server"]["ApiVersion"], "berth.v1");
}

/// `ls --filter KEY=VALUE`, as Docker's: one key's values ORed, keys
/// ANDed, `name` a part of the name, `id` a prefix; an unknown key is one
/// line and exit 1, before any call. `--format` templates on `ls` and
/// `inspect`.
#[test]
fn ls_filters_and_formats() {
    let c = must(Cluster::start(2), "cluster");
    c.cli_ok(&["network", "create", "front-net", "--label", "team=blue"]);
    c.cli_ok(&["network", "create", "-d", "overlay", "back-net"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "web1",
        "--node",
        "node1",
        "--network",
        "front-net",
    ]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "web2",
        "--node",
        "node2",
        "--network",
        "back-net",
    ]);
    c.cli_ok(&["sandbox", "create", "db", "--node", "node2"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = c
            .cli_json(args)
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["Name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&["network", "ls", "--filter", "name=-net"]),
        ["back-net", "front-net"]
    );
    assert_eq!(names(&["network", "ls", "-f", "driver=overlay"]), ["back-net"]);
    assert_eq!(
        names(&["network", "ls", "-f", "scope=global"]),
        ["back-net"],
        "the scope of overlays"
    );
    assert_eq!(names(&["network", "ls", "-f", "label=team=blue"]), ["front-net"]);
    assert_eq!(
        names(&["network", "ls", "-f", "name=front", "-f", "name=none"]),
        ["front-net", "none"]
    );
    assert_eq!(
        names(&["network", "ls", "-f", "name=net", "-f", "driver=bridge"]),
        ["front-net"]
    );
    let id = c.cli_ok(&["network", "ls", "-q", "-f", "name=back"]);
    assert_eq!(id.lines().count(), 1, "{id}");
    assert_eq!(
        names(&["network", "ls", "-f", &format!("id={}", &id[..6])]),
        ["back-net"]
    );

    assert_eq!(names(&["sandbox", "ls", "-f", "name=web"]), ["web1", "web2"]);
    assert_eq!(names(&["sandbox", "ls", "-f", "node=node2"]), ["db", "web2"]);
    assert_eq!(names(&["sandbox", "ls", "-f", "network=front-net"]), ["web1"]);
    assert_eq!(
        names(&["sandbox", "ls", "-f", "network=bridge", "-f", "node=node2"]),
        ["db"]
    );
    assert_eq!(names(&["sandbox", "ls", "-f", "status=ready"]).len(), 3);
    assert!(names(&["sandbox", "ls", "-f", "status=creating"]).is_empty());
    assert_eq!(names(&["sandbox", "ls", "-f", "origin=berth"]).len(), 3);
    assert!(names(&["sandbox", "ls", "-f", "origin=cni"]).is_empty());
    let table = c.cli_ok(&["sandbox", "ls", "-f", "name=db"]);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert_eq!(c.cli_ok(&["node", "ls", "-q", "-f", "name=2"]), "node2\n");

    for (args, want) in [
        (
            vec!["network", "ls", "-f", "colour=red"],
            "berth: invalid filter \"colour\": network ls filters by name, id, driver, scope, label",
        ),
        (
            vec!["sandbox", "ls", "--filter", "driver=bridge"],
            "berth: invalid filter \"driver\": sandbox ls filters by name, id, network, node, status, origin",
        ),
    ] {
        let out = c.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out).trim_end(), want);
    }
    // Not KEY=VALUE: an argument error, as clap's.
    assert_eq!(c.cli(&["sandbox", "ls", "-f", "name"]).status.code(), Some(2));

    // --format: Docker's template habits on the --output json documents.
    assert_eq!(
        c.cli_ok(&[
            "network",
            "ls",
            "-f",
            "name=-net",
            "--format",
            "{{.Name}}\\t{{.Driver}}"
        ]),
        "back-net\toverlay\nfront-net\tbridge\n"
    );
    assert_eq!(
        c.cli_ok(&[
            "network",
            "ls",
            "-f",
            "driver=overlay",
            "--format",
            "table {{.Name}}\\t{{.Scope}}"
        ]),
        "NAME       SCOPE\nback-net   global\n"
    );
    let id = c.cli_ok(&["network", "ls", "-q", "-f", "name=front"]);
    assert_eq!(
        c.cli_ok(&[
            "network",
            "ls",
            "-f",
            "name=front",
            "--format",
            "{{.ID}} {{json .Labels}}"
        ]),
        format!(
            "{} {{\"team\":\"blue\"}}\n",
            &c.cli_json(&["network", "inspect", "front-net"])[0]["Id"]
                .as_str()
                .unwrap()
        )
    );
    assert!(
        c.cli_json(&["network", "inspect", "front-net"])[0]["Id"]
            .as_str()
            .unwrap()
            .starts_with(id.trim())
    );
    let ip = c.cli_ok(&[
        "sandbox",
        "inspect",
        "web1",
        "--format",
        "{{.Networks.front-net.IPAddress}}",
    ]);
    assert_eq!(
        ip,
        format!(
            "{}\n",
            c.cli_json(&["sandbox", "inspect", "web1"])[0]["Networks"]["front-net"]["IPAddress"]
                .as_str()
                .unwrap()
        )
    );
    let doc: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["sandbox", "inspect", "-f", "{{json .}}", "db"])).unwrap();
    assert_eq!(doc, c.cli_json(&["sandbox", "inspect", "db"])[0]);
    assert_eq!(
        c.cli_ok(&[
            "sandbox",
            "ls",
            "-f",
            "node=node2",
            "--format",
            "{{.Name}}@{{.Node}}"
        ]),
        "db@node2\nweb2@node2\n"
    );
    assert_eq!(
        c.cli_ok(&["node", "ls", "--format", "{{.Name}} {{.Status}}"]),
        "node1 ready\nnode2 ready\n"
    );
    // An empty list: nothing, or the header alone with table.
    assert_eq!(
        c.cli_ok(&["sandbox", "ls", "-f", "name=zzz", "--format", "{{.Name}}"]),
        ""
    );
    assert_eq!(
        c.cli_ok(&["sandbox", "ls", "-f", "name=zzz", "--format", "table {{.Name}}"]),
        "NAME\n"
    );
    for (args, want) in [
        (
            vec!["sandbox", "ls", "--format", "{{.Nmae}}"],
            "berth: invalid --format: sandbox ls has no field \"Nmae\" (fields: ",
        ),
        (
            vec!["network", "inspect", "bridge", "--format", "{{.Name | upper}}"],
            "berth: invalid --format \"{{.Name | upper}}\": {{.Name | upper}}: only {{.Field}} and {{json .Field}} are supported",
        ),
        (
            vec!["network", "ls", "--format", "{{.Name"],
            "berth: invalid --format \"{{.Name\": a {{ without its }}",
        ),
    ] {
        let out = c.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).starts_with(want), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1);
    }
}

/// `-p PORT` and `-P --expose PORT`: berth chooses free host ports from
/// berth-api's `--ephemeral-ports` (four here, to run out), in the create's
/// transaction, so concurrent creates never get the same one; a create
/// that finds none left is refused and leaves nothing behind.
#[test]
fn host_ports_berth_chooses() {
    use berth_tests::cluster::ClusterOptions;
    let c = must(
        Cluster::start_with(
            1,
            ClusterOptions {
                api_args: vec!["--ephemeral-ports".into(), "40000-40003".into()],
                ..Default::default()
            },
        ),
        "cluster",
    );
    let ports_of = |name: &str| -> Vec<(u64, u64, String)> {
        c.cli_json(&["sandbox", "inspect", name])[0]["Ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["HostPort"].as_u64().unwrap(),
                    p["ContainerPort"].as_u64().unwrap(),
                    p["Protocol"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    c.cli_ok(&["sandbox", "create", "w1", "--node", "node1", "-p", "80"]);
    let w1 = ports_of("w1");
    assert_eq!(w1.len(), 1);
    let (host, cont, proto) = w1[0].clone();
    assert!((40000..=40003).contains(&host), "{w1:?}");
    assert_eq!((cont, proto.as_str()), (80, "tcp"));
    let ls = c.cli_ok(&["sandbox", "ls", "-f", "name=w1"]);
    assert!(ls.contains(&format!("0.0.0.0:{host}->80/tcp")), "{ls}");
    // Realised like an explicit port: the agent's DNAT element names it.
    let rules = berth_tests::cluster::in_ns_ok(&c.node(1), &["nft", "list", "table", "ip", "berth"]);
    assert!(rules.contains(&format!("tcp . {host} : ")), "{rules}");

    // -P publishes every --expose'd port; udp is its own space.
    c.cli_ok(&[
        "sandbox", "create", "w2", "--node", "node1", "-P", "--expose", "8080", "--expose", "53/udp",
    ]);
    let w2 = ports_of("w2");
    assert_eq!(w2.len(), 2, "{w2:?}");
    assert!(w2.iter().all(|(h, _, _)| (40000..=40003).contains(h)));
    assert_ne!(w2.iter().find(|p| p.2 == "tcp").unwrap().0, host);

    // Two tcp ports left, five creates at once: two win distinct ports.
    let keys = c.etcd_keys();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..5)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    c.cli(&[
                        "sandbox",
                        "create",
                        &format!("r{i}"),
                        "--node",
                        "node1",
                        "-p",
                        "80",
                    ])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<String> = (0..5)
        .filter(|i| outs[*i].status.success())
        .map(|i| format!("r{i}"))
        .collect();
    assert_eq!(won.len(), 2, "{:?}", outs.iter().map(stderr).collect::<Vec<_>>());
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(o).trim_end(),
            "berth: no free host port left in 40000-40003 (berth-api's --ephemeral-ports) on node1 for 1 port(s)"
        );
    }
    let mut all: Vec<u64> = won.iter().map(|n| ports_of(n)[0].0).collect();
    all.extend(w1.iter().map(|p| p.0));
    all.extend(w2.iter().filter(|p| p.2 == "tcp").map(|p| p.0));
    all.sort();
    assert_eq!(all, [40000, 40001, 40002, 40003], "every tcp port once");
    // The refused ones left nothing: only the winners' six keys each
    // (name, record, node index, endpoint, address, port) are new.
    let after = c.etcd_keys();
    let new: Vec<&String> = after.iter().filter(|k| !keys.contains(k)).collect();
    assert_eq!(new.len(), 6 * won.len(), "{new:#?}");
    let names: Vec<&&String> = new.iter().filter(|k| k.contains("/names/sandboxes/")).collect();
    assert!(
        names
            .iter()
            .all(|k| won.iter().any(|w| k.ends_with(&format!("/{w}")))),
        "{names:?}"
    );
    assert_eq!(new.iter().filter(|k| k.contains("/ports/node1/tcp/")).count(), 2);
    assert_eq!(c.sandbox_namespaces().len(), 4);
    // Removing one frees its port for the next.
    c.cli_ok(&["sandbox", "rm", &won[0]]);
    c.cli_ok(&["sandbox", "create", "again", "--node", "node1", "-p", "80"]);
    // -P without --expose, --expose without -P: argument errors.
    assert_eq!(c.cli(&["sandbox", "create", "x", "-P"]).status.code(), Some(2));
    assert_eq!(
        c.cli(&["sandbox", "create", "x", "--expose", "80"]).status.code(),
        Some(2)
    );
}
