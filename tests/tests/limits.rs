//! Secure by default: host ports that would take over the cluster's own
//! connections are refused on every node (FAILED_PRECONDITION), requests
//! over a limit are refused with the limit named (INVALID_ARGUMENT), both
//! before anything is written; lists come a page at a time.
use std::collections::BTreeSet;

use berth_proto::v1 as pb;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use berth_tests::cluster::{Cluster, ClusterOptions};
use berth_tests::stderr;
use berth_tests::tls::{channel, in_netns};
use tonic::Code;

fn cluster_with(api_args: &[&str]) -> Cluster {
    let opts = ClusterOptions {
        api_args: api_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Cluster::start_with(1, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

/// The error line of a CLI call that must fail with `code`.
fn refused(c: &Cluster, code: i32, args: &[&str]) -> String {
    let out = c.cli(args);
    assert_eq!(out.status.code(), Some(code), "berth {args:?}: {}", stderr(&out));
    stderr(&out)
}

fn publish(port: u32) -> pb::PortMapping {
    pb::PortMapping {
        host_port: port,
        container_port: 80,
        protocol: pb::PortProtocol::Tcp as i32,
        ..Default::default()
    }
}

fn create_req(name: &str, ports: Vec<pb::PortMapping>) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        node: "node1".into(),
        ports,
        ..Default::default()
    }
}

/// `-p 7421:80` would have the API server's commands to node1's agent
/// answered by a sandbox; 22, 2379, 2380, the API's port and VXLAN are
/// refused the same way, whatever the host address, and nothing is written.
#[test]
fn reserved_ports_are_refused_before_anything_is_written() {
    let c = cluster_with(&[]);
    let keys = c.etcd_keys();
    assert!(keys.iter().any(|k| k.contains("/v1/networks/")), "{keys:?}");
    for (spec, port, why) in [
        ("7421:80", "7421/tcp", "berth-agent's gRPC port"),
        ("192.168.205.10:7421:80", "7421/tcp", "berth-agent's gRPC port"),
        ("22:80", "22/tcp", "ssh, in berth-api's --reserved-ports"),
        (
            "2379:80",
            "2379/tcp",
            "etcd's client port, in berth-api's --reserved-ports",
        ),
        (
            "2380:80",
            "2380/tcp",
            "etcd's peer port, in berth-api's --reserved-ports",
        ),
        ("7420:80", "7420/tcp", "berth-api's gRPC port"),
        ("7410-7440:7410-7440", "7420/tcp", "berth-api's gRPC port"),
        ("4789:4789/udp", "4789/udp", "VXLAN of overlay networks"),
    ] {
        let err = refused(
            &c,
            1,
            &["sandbox", "create", "hijack", "--node", "node1", "-p", spec],
        );
        assert_eq!(
            err,
            format!("berth: port {port} is reserved on node1 ({why})"),
            "-p {spec}"
        );
    }
    let (url, tls) = (c.api_url(), c.admin_tls());
    let codes = in_netns(&c.ctl(), || async {
        let mut sb = SandboxServiceClient::new(channel(&url, tls.clone()));
        let mut codes = Vec::new();
        for port in [7421, 22, 2379] {
            let s = sb
                .create_sandbox(create_req("hijack", vec![publish(port)]))
                .await
                .unwrap_err();
            codes.push((port, s.code(), s.message().to_string()));
        }
        codes
    });
    for (port, code, message) in codes {
        assert_eq!(code, Code::FailedPrecondition, "{port}: {message}");
        assert!(
            message.starts_with(&format!("port {port}/tcp is reserved on node1 (")),
            "{message}"
        );
    }
    assert_eq!(c.etcd_keys(), keys, "a refused create writes nothing");
    assert!(c.sandbox_namespaces().is_empty());

    // UDP on the TCP services' ports, and the ports next to them, are free.
    c.cli_ok(&[
        "sandbox",
        "create",
        "fine",
        "--node",
        "node1",
        "-p",
        "22:22/udp",
        "-p",
        "7421:80/udp",
        "-p",
        "7422:80",
        "-p",
        "4789:80",
    ]);
    c.cli_ok(&["sandbox", "rm", "fine"]);
    assert_eq!(c.etcd_keys(), keys);
}

/// `--reserved-ports` replaces 22,2379,2380; the API's and the agent's
/// ports and VXLAN stay reserved.
#[test]
fn reserved_ports_are_configurable() {
    let c = cluster_with(&["--reserved-ports", "8080,5000-5010/udp"]);
    let keys = c.etcd_keys();
    assert!(keys.iter().any(|k| k.contains("/v1/networks/")), "{keys:?}");
    for (spec, port, why) in [
        ("8080:80", "8080/tcp", "in berth-api's --reserved-ports"),
        ("5005:53/udp", "5005/udp", "in berth-api's --reserved-ports"),
        ("7421:80", "7421/tcp", "berth-agent's gRPC port"),
        ("7420:80", "7420/tcp", "berth-api's gRPC port"),
        ("4789:80/udp", "4789/udp", "VXLAN of overlay networks"),
    ] {
        let err = refused(&c, 1, &["sandbox", "create", "x", "--node", "node1", "-p", spec]);
        assert_eq!(
            err,
            format!("berth: port {port} is reserved on node1 ({why})"),
            "-p {spec}"
        );
    }
    assert_eq!(c.etcd_keys(), keys);
    c.cli_ok(&[
        "sandbox", "create", "ssh", "--node", "node1", "-p", "22:22", "-p", "2379:80", "-p", "5005:53",
    ]);
}

/// Every limit of a create, connect, exec and network create refused with
/// INVALID_ARGUMENT naming it, before anything is written; at the limit
/// the request works.
#[test]
fn requests_over_a_limit_are_refused_with_the_limit_named() {
    let c = cluster_with(&[]);
    let keys = c.etcd_keys();
    assert!(keys.iter().any(|k| k.contains("/v1/networks/")), "{keys:?}");

    // The CLI refuses a huge range before expanding it (exit 2, as clap).
    let err = refused(
        &c,
        2,
        &[
            "sandbox",
            "create",
            "big",
            "--node",
            "node1",
            "-p",
            "1-65535:1-65535",
        ],
    );
    assert!(
        err.contains(
            "invalid port mapping '1-65535:1-65535': the range has 65535 ports, at most 50 per sandbox"
        ),
        "{err}"
    );
    let err = refused(
        &c,
        2,
        &[
            "sandbox",
            "create",
            "big",
            "--node",
            "node1",
            "-p",
            "8000-8030:8000-8030",
            "-p",
            "9000-9030:9000-9030",
        ],
    );
    assert!(
        err.contains("--publish: 62 ports in all, at most 50 per sandbox"),
        "{err}"
    );

    let (url, tls) = (c.api_url(), c.admin_tls());
    let results = in_netns(&c.ctl(), || async {
        let mut sb = SandboxServiceClient::new(channel(&url, tls.clone()));
        let mut net = NetworkServiceClient::new(channel(&url, tls.clone()));
        let mut out: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
        let create = |what: &'static str, r: pb::CreateSandboxRequest| {
            let mut sb = sb.clone();
            async move { (what, sb.create_sandbox(r).await.map(drop)) }
        };
        // The server refuses the expanded request itself: one comparison,
        // no clash check over 65,535 ports, no read per port.
        let every_port = (1..=65535).map(publish).collect();
        out.push(create("65535 ports", create_req("big", every_port)).await);
        out.push(create("51 ports", create_req("big", (8000..8051).map(publish).collect())).await);
        out.push(
            create(
                "17 aliases",
                pb::CreateSandboxRequest {
                    aliases: (0..17).map(|i| format!("a{i}")).collect(),
                    ..create_req("big", vec![])
                },
            )
            .await,
        );
        out.push(
            create(
                "33 links",
                pb::CreateSandboxRequest {
                    links: (0..33)
                        .map(|i| pb::Link {
                            name: format!("l{i}"),
                            alias: String::new(),
                        })
                        .collect(),
                    ..create_req("big", vec![])
                },
            )
            .await,
        );
        out.push(
            create(
                "257 arguments",
                pb::CreateSandboxRequest {
                    command: vec!["true".into(); 257],
                    ..create_req("big", vec![])
                },
            )
            .await,
        );
        out.push(
            create(
                "a 4097-byte argument",
                pb::CreateSandboxRequest {
                    command: vec!["echo".into(), "x".repeat(4097)],
                    ..create_req("big", vec![])
                },
            )
            .await,
        );
        out.push(
            create(
                "16385 bytes of command",
                pb::CreateSandboxRequest {
                    command: vec!["x".repeat(4096); 4]
                        .into_iter()
                        .chain(["y".into()])
                        .collect(),
                    ..create_req("big", vec![])
                },
            )
            .await,
        );
        let exec = sb
            .exec(pb::ExecRequest {
                sandbox: "nobody".into(),
                command: vec!["true".into(); 257],
            })
            .await
            .map(drop);
        out.push(("exec of 257 arguments", exec));
        let labels = |n: usize, len: usize| (0..n).map(|i| (format!("l{i}"), "v".repeat(len))).collect();
        for (what, labels) in [
            ("65 labels", labels(65, 1)),
            ("16 KiB of labels", labels(5, 4000)),
        ] {
            let r = net
                .create_network(pb::CreateNetworkRequest {
                    name: "big".into(),
                    labels,
                    ..Default::default()
                })
                .await
                .map(drop);
            out.push((what, r));
        }
        let r = net
            .create_network(pb::CreateNetworkRequest {
                name: "big".into(),
                options: [("com.docker.network.bridge.name".to_string(), "b".repeat(257))].into(),
                ..Default::default()
            })
            .await
            .map(drop);
        out.push(("a 257-byte option", r));
        out
    });
    let expected = [
        ("65535 ports", "invalid publish: 65535 ports, at most 50"),
        ("51 ports", "invalid publish: 51 ports, at most 50"),
        ("17 aliases", "invalid aliases: 17 aliases, at most 16"),
        ("33 links", "invalid links: 33 links, at most 32"),
        ("257 arguments", "invalid command: 257 arguments, at most 256"),
        (
            "a 4097-byte argument",
            "invalid command: argument 1 is 4097 bytes, at most 4096",
        ),
        (
            "16385 bytes of command",
            "invalid command: 16385 bytes in all, at most 16384",
        ),
        (
            "exec of 257 arguments",
            "invalid command: 257 arguments, at most 256",
        ),
        ("65 labels", "invalid labels: 65 labels, at most 64"),
        (
            "16 KiB of labels",
            "invalid labels: 20010 bytes of keys and values, at most 16384",
        ),
        (
            "a 257-byte option",
            "invalid option com.docker.network.bridge.name: a value of 257 bytes, at most 256",
        ),
    ];
    assert_eq!(results.len(), expected.len());
    for ((what, got), (want_what, message)) in results.into_iter().zip(expected) {
        assert_eq!(what, want_what);
        let s = got.expect_err(what);
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, message),
            "{what}"
        );
    }
    assert_eq!(c.etcd_keys(), keys, "refused requests write nothing");
    assert!(c.sandbox_namespaces().is_empty());

    // At the limit: 50 ports on one host address (two compares each in the
    // create transaction), created, listed and removed again.
    c.cli_ok(&[
        "sandbox",
        "create",
        "fifty",
        "--node",
        "node1",
        "-p",
        "192.168.205.10:8000-8049:8000-8049",
    ]);
    let v = c.cli_json(&["sandbox", "inspect", "fifty"]);
    assert_eq!(v[0]["Ports"].as_array().map(Vec::len), Some(50), "{v}");
    c.cli_ok(&["sandbox", "rm", "fifty"]);
    assert_eq!(c.etcd_keys(), keys);

    // Networks per sandbox: bridge plus 15 connects is 16; the 17th is refused.
    c.cli_ok(&["sandbox", "create", "multi", "--node", "node1"]);
    for i in 1..=16 {
        let name = format!("n{i}");
        c.cli_ok(&["network", "create", "--subnet", &format!("10.99.{i}.0/24"), &name]);
        if i <= 15 {
            c.cli_ok(&["network", "connect", &name, "multi"]);
        }
    }
    let err = refused(&c, 1, &["network", "connect", "n16", "multi"]);
    assert_eq!(
        err,
        "berth: invalid network: 17 networks for sandbox multi, at most 16"
    );
    let v = c.cli_json(&["sandbox", "inspect", "multi"]);
    let eps = v[0]["Networks"].as_object().map(|o| o.len());
    assert_eq!(eps, Some(16), "{v}");
    let ls = c.cli_ok(&["network", "inspect", "n16"]);
    assert!(
        !ls.contains("multi"),
        "the refused connect left an endpoint: {ls}"
    );
}

/// 7 sandboxes in pages of 3: every one exactly once, in id order, the
/// last page without a token; the CLI follows every page.
#[test]
fn lists_are_paged() {
    let c = cluster_with(&[]);
    let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    for n in &names {
        c.cli_ok(&["sandbox", "create", n, "--node", "node1", "--network", "none"]);
    }
    let (url, tls) = (c.api_url(), c.admin_tls());
    let (pages, bad_token, networks) = in_netns(&c.ctl(), || async {
        let mut sb = SandboxServiceClient::new(channel(&url, tls.clone()));
        let mut pages: Vec<(Vec<pb::Sandbox>, String)> = Vec::new();
        let mut page_token = String::new();
        loop {
            let r = sb
                .list_sandboxes(pb::ListSandboxesRequest {
                    page_size: 3,
                    page_token,
                })
                .await
                .expect("a page")
                .into_inner();
            page_token = r.next_page_token.clone();
            pages.push((r.sandboxes, r.next_page_token));
            if page_token.is_empty() || pages.len() > 10 {
                break;
            }
        }
        let bad = sb
            .list_sandboxes(pb::ListSandboxesRequest {
                page_size: 3,
                page_token: "../names".into(),
            })
            .await
            .unwrap_err();
        let mut net = NetworkServiceClient::new(channel(&url, tls.clone()));
        let mut networks = Vec::new();
        let mut page_token = String::new();
        loop {
            let r = net
                .list_networks(pb::ListNetworksRequest {
                    page_size: 1,
                    page_token,
                })
                .await
                .expect("a page of networks")
                .into_inner();
            assert!(r.networks.len() <= 1);
            networks.extend(r.networks.into_iter().map(|n| n.name));
            page_token = r.next_page_token;
            if page_token.is_empty() || networks.len() > 10 {
                break;
            }
        }
        (pages, bad, networks)
    });
    let sizes: Vec<usize> = pages.iter().map(|(s, _)| s.len()).collect();
    assert_eq!(sizes, [3, 3, 1], "{pages:?}");
    assert!(pages[2].1.is_empty() && !pages[0].1.is_empty());
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|(s, _)| s.iter().map(|s| s.id.as_str()))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "id order, none twice: {ids:?}"
    );
    assert_eq!(pages[0].1, ids[2], "the token is the last id of the page");
    let listed: BTreeSet<&str> = pages
        .iter()
        .flat_map(|(s, _)| s.iter().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect());
    assert_eq!(bad_token.code(), Code::InvalidArgument, "{bad_token:?}");
    assert_eq!(
        bad_token.message(),
        "invalid page_token: not a token from a previous page of this list"
    );
    let networks: BTreeSet<&str> = networks.iter().map(String::as_str).collect();
    assert_eq!(networks, BTreeSet::from(["bridge", "host", "none"]));

    let ls = c.cli_ok(&["sandbox", "ls"]);
    let rows: Vec<&str> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(rows, names, "{ls}");
}
