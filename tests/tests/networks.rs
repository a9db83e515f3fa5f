//! Network create/list/inspect/remove through the real CLI and gRPC against a
//! real berth-api and etcd: defaults, validation codes, overlap, exhaustion,
//! and that failed requests leave no key behind.
use std::collections::HashMap;

use berth_proto::v1 as pb;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_tests::{ApiServer, Etcd, stderr, unique};
use tonic::Code;

fn setup() -> (Etcd, ApiServer) {
    let etcd = Etcd::start().expect("etcd");
    let prefix = format!("/{}", unique("net"));
    let api = ApiServer::start(&etcd, &prefix, &[]).expect("berth-api");
    (etcd, api)
}

fn create_req(name: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        name: name.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_network_lifecycle_matches_docker_shapes() {
    let (etcd, api) = setup();

    let id = api.cli_ok(&["network", "create", "-d", "bridge", "my-bridge"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "create prints the full id: {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    let v = api.cli_json(&["network", "inspect", "my-bridge"]);
    let n = &v[0];
    assert_eq!(n["Name"], "my-bridge");
    assert_eq!(n["Id"], id);
    assert_eq!(n["Driver"], "bridge");
    assert_eq!(n["Scope"], "local");
    assert_eq!(n["EnableIPv6"], false);
    assert_eq!(n["IPAM"]["Driver"], "default");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "172.18.0.1");
    for key in [
        "Created",
        "Internal",
        "Attachable",
        "Ingress",
        "ConfigFrom",
        "ConfigOnly",
        "Containers",
        "Options",
        "Labels",
    ] {
        assert!(n.get(key).is_some(), "inspect lacks {key}: {n}");
    }
    assert!(n["Containers"].as_object().expect("Containers map").is_empty());
    // Inspect by id prefix finds the same network.
    let by_prefix = api.cli_json(&["network", "inspect", &id[..12]]);
    assert_eq!(by_prefix[0]["Name"], "my-bridge");

    let table = api.cli_ok(&["network", "ls"]);
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    for col in ["NETWORK ID", "NAME", "DRIVER", "SCOPE"] {
        assert!(header.contains(col), "header {header:?} lacks {col}");
    }
    let rows: HashMap<String, Vec<String>> = lines
        .map(|l| {
            let cols: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            (cols[1].clone(), cols)
        })
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(
        rows["my-bridge"],
        vec![
            id[..12].to_string(),
            "my-bridge".into(),
            "bridge".into(),
            "local".into()
        ]
    );
    assert_eq!(rows["bridge"][2], "bridge");
    assert_eq!(rows["host"][2], "host");
    assert_eq!(rows["none"][2], "null");

    // The built-in bridge is Docker's default.
    let b = api.cli_json(&["network", "inspect", "bridge"]);
    assert_eq!(b[0]["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(b[0]["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
    let h = api.cli_json(&["network", "inspect", "host"]);
    assert_eq!(h[0]["IPAM"]["Config"].as_array().map(Vec::len), Some(0));

    // Next automatic subnet, and an explicit one honoured.
    api.cli_ok(&["network", "create", "second"]);
    let s = api.cli_json(&["network", "inspect", "second"]);
    assert_eq!(s[0]["IPAM"]["Config"][0]["Subnet"], "172.19.0.0/16");
    api.cli_ok(&[
        "network",
        "create",
        "--subnet",
        "10.10.0.0/24",
        "--gateway",
        "10.10.0.254",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--label",
        "team=net",
        "explicit",
    ]);
    let e = api.cli_json(&["network", "inspect", "explicit"]);
    assert_eq!(e[0]["IPAM"]["Config"][0]["Subnet"], "10.10.0.0/24");
    assert_eq!(e[0]["IPAM"]["Config"][0]["Gateway"], "10.10.0.254");
    assert_eq!(e[0]["Options"]["com.docker.network.bridge.enable_icc"], "false");
    assert_eq!(e[0]["Labels"]["team"], "net");

    // Removal takes every key of the network with it.
    let prefix = format!("{}/v1/", api.prefix);
    assert!(etcd.keys(&prefix).iter().any(|k| k.contains(id)));
    assert_eq!(api.cli_ok(&["network", "rm", "my-bridge"]).trim(), "my-bridge");
    let left: Vec<String> = etcd
        .keys(&prefix)
        .into_iter()
        .filter(|k| k.contains(id) || k.contains("172.18.0.0"))
        .collect();
    assert!(left.is_empty(), "keys left after rm: {left:?}");
    // The freed subnet is handed out again.
    api.cli_ok(&["network", "create", "again"]);
    assert_eq!(
        api.cli_json(&["network", "inspect", "again"])[0]["IPAM"]["Config"][0]["Subnet"],
        "172.18.0.0/16"
    );

    let out = api.cli(&["network", "inspect", "my-bridge"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("berth: ") && err.contains("not found") && err.lines().count() == 1,
        "{err:?}"
    );

    let out = api.cli(&["network", "rm", "bridge"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pre-defined"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_codes_and_leave_no_key() {
    let (etcd, api) = setup();
    let mut client = NetworkServiceClient::new(api.channel().await);
    client
        .create_network(pb::CreateNetworkRequest {
            name: "taken".into(),
            subnet: "172.25.0.0/16".into(),
            options: [(
                "com.docker.network.bridge.name".to_string(),
                "br-taken".to_string(),
            )]
            .into(),
            ..Default::default()
        })
        .await
        .expect("first create");
    let prefix = format!("{}/v1/", api.prefix);
    let before = etcd.keys(&prefix);

    let opt = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
    let cases: Vec<(pb::CreateNetworkRequest, Code, &str)> = vec![
        (create_req("-bad"), Code::InvalidArgument, "name"),
        (create_req(""), Code::InvalidArgument, "name"),
        (
            pb::CreateNetworkRequest {
                driver: 42,
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "driver",
        ),
        (
            pb::CreateNetworkRequest {
                driver: pb::NetworkDriver::Host as i32,
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "driver",
        ),
        (
            pb::CreateNetworkRequest {
                subnet: "300.1.0.0/16".into(),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "subnet",
        ),
        (
            pb::CreateNetworkRequest {
                subnet: "172.30.0.1/16".into(),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "host bits",
        ),
        (
            pb::CreateNetworkRequest {
                subnet: "172.30.0.0/16".into(),
                gateway: "172.31.0.1".into(),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "outside",
        ),
        (
            pb::CreateNetworkRequest {
                subnet: "172.30.0.0/16".into(),
                gateway: "172.30.255.255".into(),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "broadcast",
        ),
        (
            pb::CreateNetworkRequest {
                gateway: "172.30.0.1".into(),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "gateway",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.example.foo", "1"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "unknown option",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.docker.network.driver.mtu", "9"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "mtu",
        ),
        (
            pb::CreateNetworkRequest {
                labels: opt("bad key", "v"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "label",
        ),
        (create_req("taken"), Code::AlreadyExists, "already exists"),
        (create_req("bridge"), Code::AlreadyExists, "already exists"),
        (
            pb::CreateNetworkRequest {
                subnet: "172.25.128.0/24".into(),
                ..create_req("n1")
            },
            Code::FailedPrecondition,
            "overlaps",
        ),
        (
            pb::CreateNetworkRequest {
                subnet: "172.16.0.0/12".into(),
                ..create_req("n1")
            },
            Code::FailedPrecondition,
            "overlaps",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.docker.network.bridge.name", "br-taken"),
                ..create_req("n1")
            },
            Code::FailedPrecondition,
            "br-taken",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.docker.network.bridge.name", "berth0"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "reserved",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.docker.network.bridge.name", "bv1"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "com.docker.network.bridge.name: \"bv1\" uses the prefix bv, reserved for berth's veths",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.docker.network.bridge.name", "a\"b"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "com.docker.network.bridge.name",
        ),
        (
            pb::CreateNetworkRequest {
                options: opt("com.docker.network.bridge.name", "e*"),
                ..create_req("n1")
            },
            Code::InvalidArgument,
            "only [a-za-z0-9_.-]",
        ),
    ];
    for (req, code, needle) in cases {
        let what = format!("{req:?}");
        let err = client.create_network(req).await.expect_err(&what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(
            err.message().to_lowercase().contains(needle),
            "{what}: message {:?} should mention {needle:?}",
            err.message()
        );
        assert_eq!(etcd.keys(&prefix), before, "{what} left keys behind");
    }

    for (req, code) in [
        (
            pb::RemoveNetworkRequest {
                name_or_id: "nope".into(),
            },
            Code::NotFound,
        ),
        (
            pb::RemoveNetworkRequest {
                name_or_id: "none".into(),
            },
            Code::FailedPrecondition,
        ),
    ] {
        assert_eq!(client.remove_network(req).await.expect_err("rm").code(), code);
    }
    let err = client
        .inspect_network(pb::InspectNetworkRequest {
            name_or_id: "ffffffffffff".into(),
        })
        .await
        .expect_err("inspect");
    assert_eq!(err.code(), Code::NotFound);

    // The CLI says the same in one line and exits 1; a malformed -o never reaches the server.
    let out = api.cli(&["network", "create", "--subnet", "172.25.0.0/24", "n2"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).starts_with("berth: "), "{}", stderr(&out));
    let out = api.cli(&["network", "create", "-o", "novalue", "n3"]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(etcd.keys(&prefix), before, "CLI failures left keys behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_pool_exhaustion_is_resource_exhausted() {
    let (etcd, api) = setup();
    let mut client = NetworkServiceClient::new(api.channel().await);
    // 15 /16s from 172.17 to 172.31 (172.17 is the built-in bridge) and 16 /20s of 192.168.
    for i in 0..30 {
        let net = client
            .create_network(create_req(&format!("pool{i}")))
            .await
            .unwrap_or_else(|e| panic!("network {i}: {e}"))
            .into_inner()
            .network
            .expect("network");
        if i == 14 {
            assert_eq!(net.subnet, "192.168.0.0/20");
        }
    }
    let prefix = format!("{}/v1/", api.prefix);
    let before = etcd.keys(&prefix);
    let err = client
        .create_network(create_req("one-too-many"))
        .await
        .expect_err("exhausted");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("172.17.0.0/16"), "{}", err.message());
    assert_eq!(etcd.keys(&prefix), before);
    // An explicit subnet outside the pools still works.
    client
        .create_network(pb::CreateNetworkRequest {
            subnet: "10.200.0.0/16".into(),
            ..create_req("explicit")
        })
        .await
        .expect("explicit subnet");
    let list = client
        .list_networks(pb::ListNetworksRequest::default())
        .await
        .expect("ls")
        .into_inner();
    let mut subnets: Vec<&str> = list
        .networks
        .iter()
        .map(|n| n.subnet.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    let n = subnets.len();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), n, "a subnet was handed out twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn overlay_networks_take_the_global_pool_and_a_vni() {
    let (etcd, api) = setup();
    let mut client = NetworkServiceClient::new(api.channel().await);
    let a = client
        .create_network(pb::CreateNetworkRequest {
            driver: pb::NetworkDriver::Overlay as i32,
            ..create_req("demo")
        })
        .await
        .expect("overlay")
        .into_inner()
        .network
        .expect("network");
    assert_eq!(
        (
            pb::NetworkScope::name_of(a.scope),
            a.subnet.as_str(),
            a.gateway.as_str(),
            a.vni
        ),
        ("global", "10.0.0.0/24", "10.0.0.1", 4096)
    );
    let b = client
        .create_network(pb::CreateNetworkRequest {
            driver: pb::NetworkDriver::Overlay as i32,
            ..create_req("demo2")
        })
        .await
        .expect("overlay 2")
        .into_inner()
        .network
        .expect("network");
    assert_eq!((b.subnet.as_str(), b.vni), ("10.0.1.0/24", 4097));
    // A local bridge may not take a range a global network has: a sandbox
    // on both would have two routes to it (docs/ipam.md).
    let clash = client
        .create_network(pb::CreateNetworkRequest {
            subnet: "10.0.0.0/24".into(),
            ..create_req("local-ten")
        })
        .await
        .expect_err("a local network overlapping a global one");
    assert_eq!(clash.code(), tonic::Code::FailedPrecondition, "{clash:?}");
    assert_eq!(
        clash.message(),
        "subnet 10.0.0.0/24 overlaps 10.0.0.0/24 of global network demo"
    );
    let v = api.cli_json(&["network", "inspect", "demo"]);
    assert_eq!(v[0]["Scope"], "global");
    assert_eq!(v[0]["Attachable"], true);
    let vni_key = format!("{}/v1/vni/4096", api.prefix);
    assert_eq!(etcd.get(&vni_key).as_deref(), Some(a.id.as_str()));
    api.cli_ok(&["network", "rm", "demo"]);
    assert_eq!(etcd.get(&vni_key), None, "VNI released");
}
