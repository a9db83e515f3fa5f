//! Address allocation under concurrency: two processes, 32 concurrent
//! allocations each, on one network, through berth-api's own allocation code.
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::Command;

use berth_api::error::ApiError;
use berth_api::ipam::{self, Allocated};
use berth_api::networks::{NetworkSpec, Networks};
use berth_api::store::{Guard, Store, Write};
use berth_core::model::Driver;
use berth_tests::{ApiServer, Etcd, unique};

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_allocations_from_two_processes() {
    let etcd = Etcd::start().expect("etcd");
    let prefix = format!("/{}", unique("ipam"));
    let api = ApiServer::start(&etcd, &prefix, &[]).expect("api");
    api.cli_ok(&["network", "create", "--subnet", "10.77.0.0/24", "stress"]);
    let id = api.cli_json(&["network", "inspect", "stress"])[0]["Id"]
        .as_str()
        .expect("id")
        .to_string();

    let stress = env!("CARGO_BIN_EXE_ipam-stress");
    let spawn = |tag: &str| {
        Command::new(stress)
            .args([&etcd.url, &prefix, "stress", "node1", "32", tag])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| spawn("a"));
        let hb = s.spawn(|| spawn("b"));
        (ha.join().expect("a"), hb.join().expect("b"))
    });
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "ipam-stress failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ips: Vec<Ipv4Addr> = [&a, &b]
        .iter()
        .flat_map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.parse().expect("ip"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ips.len(), 64, "lost allocations");
    let unique_ips: HashSet<_> = ips.iter().copied().collect();
    assert_eq!(unique_ips.len(), 64, "duplicate addresses: {ips:?}");
    for ip in &unique_ips {
        assert!(
            ip.octets()[..3] == [10, 77, 0] && ip.octets()[3] >= 2 && ip.octets()[3] <= 254,
            "{ip}"
        );
    }
    let keys = etcd.keys(&format!("{prefix}/v1/ipam/{id}/node1/"));
    let stored: HashSet<Ipv4Addr> = keys
        .iter()
        .map(|k| k.rsplit('/').next().expect("ip").parse().expect("ip"))
        .collect();
    assert_eq!(stored, unique_ips, "etcd holds exactly the handed-out addresses");
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_addresses_pools_per_node_and_exhaustion() {
    let etcd = Etcd::start().expect("etcd");
    let prefix = format!("/{}", unique("ipam2"));
    let store = Store::connect(std::slice::from_ref(&etcd.url), &prefix)
        .await
        .expect("store");
    let nets = Networks::new(store.clone());
    let spec = |name: &str, subnet: &str| {
        NetworkSpec::validate(
            name,
            Some(Driver::Bridge),
            subnet,
            "",
            Default::default(),
            Default::default(),
        )
        .expect("spec")
    };
    let tiny = nets.create(spec("tiny", "10.9.0.0/30")).await.expect("tiny");
    let alloc = |net, node: &'static str, want: Option<Ipv4Addr>| {
        let store = store.clone();
        async move {
            let pool = ipam::pool_for(&net, node).to_string();
            ipam::allocate_ip(&store, &net, &pool, want, None, "owner", |_, _| Ok(Write::new())).await
        }
    };
    // A /30 has exactly one address besides the gateway, per node.
    let got = alloc(tiny.clone(), "node1", None).await.expect("first");
    assert!(
        matches!(got, Allocated::Committed(ip, _, _) if ip == Ipv4Addr::new(10, 9, 0, 2)),
        "{got:?}"
    );
    let err = alloc(tiny.clone(), "node1", None).await.expect_err("exhausted");
    assert!(matches!(err, ApiError::Exhausted(_)), "{err}");
    // Local scope: another node has its own pool.
    assert!(matches!(
        alloc(tiny.clone(), "node2", None).await.expect("node2"),
        Allocated::Committed(..)
    ));

    let wide = nets.create(spec("wide", "10.8.0.0/24")).await.expect("wide");
    let want = Ipv4Addr::new(10, 8, 0, 50);
    assert!(
        matches!(alloc(wide.clone(), "node1", Some(want)).await.expect("explicit"), Allocated::Committed(ip, _, _) if ip == want)
    );
    let err = alloc(wide.clone(), "node1", Some(want)).await.expect_err("taken");
    assert!(matches!(err, ApiError::AlreadyExists(_)), "{err}");
    for bad in [
        Ipv4Addr::new(10, 8, 0, 1),
        Ipv4Addr::new(10, 8, 0, 0),
        Ipv4Addr::new(10, 8, 0, 255),
        Ipv4Addr::new(10, 8, 1, 5),
    ] {
        let err = alloc(wide.clone(), "node1", Some(bad))
            .await
            .expect_err("reserved");
        assert!(matches!(err, ApiError::Invalid(_)), "{bad}: {err}");
    }
    // A caller's failing compare writes nothing.
    let guard = format!("{prefix}/v1/guard-test");
    let pool = ipam::pool_for(&wide, "node1").to_string();
    let res = ipam::allocate_ip(&store, &wide, &pool, None, None, "o", |_, _| {
        Ok(Write::new().when(Guard::Present(guard.clone())))
    })
    .await
    .expect("allocate");
    assert!(matches!(res, Allocated::CallerConflict));
    assert_eq!(
        etcd.keys(&format!("{prefix}/v1/ipam/{}/node1/", wide.id)).len(),
        1
    );
    // Removing the network releases its addresses.
    nets.remove("wide").await.expect("remove");
    assert!(etcd.keys(&format!("{prefix}/v1/ipam/{}/", wide.id)).is_empty());
}

/// A dual-stack network takes an IPv6 address in the same transaction as
/// the IPv4 one, next-fit from ::2; a taken IPv6 address is refused as
/// ALREADY_EXISTS and writes nothing; the IPv6 range can run out before the
/// IPv4 one (RESOURCE_EXHAUSTED naming the IPv6 subnet); removing the
/// network frees both families' keys and its IPv6 subnet key.
#[tokio::test(flavor = "multi_thread")]
async fn dual_stack_addresses_in_one_transaction() {
    use std::net::Ipv6Addr;
    let etcd = Etcd::start().expect("etcd");
    let prefix = format!("/{}", unique("ipam6"));
    let store = Store::connect(std::slice::from_ref(&etcd.url), &prefix)
        .await
        .expect("store");
    let nets = Networks::new(store.clone());
    let spec = NetworkSpec::validate(
        "dual",
        Some(Driver::Bridge),
        "10.6.0.0/24",
        "",
        Default::default(),
        Default::default(),
    )
    .and_then(|s| s.with_ipv6(true, "fd77::/124", ""))
    .expect("spec");
    let dual = nets.create(spec).await.expect("dual");
    assert_eq!(dual.gateway6, Some("fd77::1".parse().unwrap()));
    assert_eq!(etcd.keys(&format!("{prefix}/v1/subnets6/local/")).len(), 1);
    let pool = ipam::pool_for(&dual, "node1").to_string();
    let alloc = |want6: Option<Ipv6Addr>| {
        let (store, net, pool) = (store.clone(), dual.clone(), pool.clone());
        async move { ipam::allocate_ip(&store, &net, &pool, None, want6, "owner", |_, _| Ok(Write::new())).await }
    };
    let got = alloc(None).await.expect("first");
    assert!(
        matches!(got, Allocated::Committed(ip, Some(ip6), _)
            if ip == Ipv4Addr::new(10, 6, 0, 2) && ip6 == "fd77::2".parse::<Ipv6Addr>().unwrap()),
        "{got:?}"
    );
    let err = alloc(Some("fd77::2".parse().unwrap())).await.expect_err("taken");
    assert!(
        matches!(err, ApiError::AlreadyExists(ref m) if m.contains("fd77::2")),
        "{err}"
    );
    let err = alloc(Some("fd77::1".parse().unwrap()))
        .await
        .expect_err("gateway");
    assert!(matches!(err, ApiError::Invalid(_)), "{err}");
    // fd77::3 ... fd77::f are the other 13 addresses of the /124.
    for _ in 0..13 {
        assert!(matches!(
            alloc(None).await.expect("fits"),
            Allocated::Committed(_, Some(_), _)
        ));
    }
    let err = alloc(None).await.expect_err("IPv6 exhausted");
    assert!(
        matches!(err, ApiError::Exhausted(ref m) if m.contains("fd77::/124")),
        "{err}"
    );
    let keys = etcd.keys(&format!("{prefix}/v1/ipam/{}/node1/", dual.id));
    assert_eq!(
        keys.len(),
        28,
        "14 addresses of each family, nothing from the refusals"
    );
    let v6: HashSet<Ipv6Addr> = keys
        .iter()
        .filter_map(|k| k.rsplit('/').next()?.parse().ok())
        .collect();
    assert_eq!(v6.len(), 14, "distinct IPv6 addresses");
    nets.remove("dual").await.expect("remove");
    assert!(etcd.keys(&format!("{prefix}/v1/ipam/{}/", dual.id)).is_empty());
    assert!(etcd.keys(&format!("{prefix}/v1/subnets6/")).is_empty());
}
