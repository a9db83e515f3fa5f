//! Reverse lookups (PTR) from the embedded DNS responder, through glibc in
//! the sandbox: IPv4 and IPv6 addresses of members of a shared network
//! answer `SANDBOX.NETWORK` (as Docker's embedded DNS does), across nodes on
//! an overlay too; an address on a network the asker does not share is not
//! berth's to answer, and a departed member's address stops answering.
use berth_tests::cluster::Cluster;

#[test]
fn ptr_answers_members_of_shared_networks_in_both_families() {
    let c = Cluster::start(2).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    c.cli_ok(&["network", "create", "-d", "overlay", "--ipv6", "rv6"]);
    c.cli_ok(&["network", "create", "-d", "bridge", "other"]);
    c.cli_ok(&["sandbox", "create", "ra", "--node", "node1", "--network", "rv6"]);
    c.cli_ok(&["sandbox", "create", "rb", "--node", "node2", "--network", "rv6"]);
    c.cli_ok(&["sandbox", "create", "rc", "--node", "node1", "--network", "other"]);
    let b = c.cli_json(&["sandbox", "inspect", "rb"]);
    let ip4 = b[0]["Networks"]["rv6"]["IPAddress"]
        .as_str()
        .expect("IPAddress")
        .to_string();
    let ip6 = b[0]["Networks"]["rv6"]["GlobalIPv6Address"]
        .as_str()
        .expect("GlobalIPv6Address")
        .to_string();
    let rc = c.cli_json(&["sandbox", "inspect", "rc"]);
    let ip_c = rc[0]["Networks"]["other"]["IPAddress"]
        .as_str()
        .expect("IPAddress")
        .to_string();

    for ip in [&ip4, &ip6] {
        let out = c.cli_ok(&["exec", "ra", "--", "getent", "hosts", ip]);
        assert!(
            out.contains("rb.rv6"),
            "PTR of {ip} from ra (a remote peer): {out}"
        );
    }
    let out = c.cli(&["exec", "ra", "--", "getent", "hosts", &ip_c]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("rc."),
        "rc shares no network with ra: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    c.cli_ok(&["sandbox", "rm", "rb"]);
    c.eventually("rb's addresses stop answering", || {
        [&ip4, &ip6].iter().all(|ip| {
            let out = c.cli(&["exec", "ra", "--", "getent", "hosts", ip]);
            !String::from_utf8_lossy(&out.stdout).contains("rb.rv6")
        })
    });
}
