//! 10,000 sandboxes (issue #12 item 6: "no response approaches the message
//! limit at 10,000 sandboxes"). They are real sandboxes made through the
//! public API, in host mode so that the node does not need 10,000
//! namespaces: every one has its records, its name key and its agent's
//! confirmation. Then the paged list returns each exactly once, the CLI's
//! `sandbox ls` follows every page, and the agent, which pulls the node's
//! whole desired state every period, still can.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use berth_tests::cluster::{Cluster, ClusterOptions};
use berth_tests::unix::unix_channel;

const SANDBOXES: usize = 10_000;

/// `BERTH_SCALE_SANDBOXES` (default 10,000), for a quicker look.
fn sandboxes() -> usize {
    std::env::var("BERTH_SCALE_SANDBOXES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SANDBOXES)
}
const CLIENTS: usize = 16;

#[test]
fn ten_thousand_sandboxes_are_listed_and_converged() {
    let opts = ClusterOptions {
        agent_args: vec![vec!["--resync-period".to_string(), "2".to_string()]],
        ..Default::default()
    };
    let c = Cluster::start_with(1, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n = sandboxes();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for k in 0..CLIENTS {
            let mut sb = SandboxServiceClient::new(unix_channel(c.socket.clone()));
            tasks.push(tokio::spawn(async move {
                for i in (k..n).step_by(CLIENTS) {
                    sb.create_sandbox(pb::CreateSandboxRequest {
                        name: format!("h{i:05}"),
                        node: "node1".into(),
                        network: "host".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("create h{i:05}: {e:?}"));
                }
            }));
        }
        for t in tasks {
            t.await.expect("a client");
        }
    });
    println!("{n} creates in {:?}", started.elapsed());

    let listed = rt.block_on(async {
        let mut sb = SandboxServiceClient::new(unix_channel(c.socket.clone()));
        let mut names = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let r = sb
                .list_sandboxes(pb::ListSandboxesRequest {
                    page_size: 1000,
                    page_token,
                })
                .await
                .expect("a page")
                .into_inner();
            pages += 1;
            names.extend(r.sandboxes.into_iter().map(|s| s.name));
            page_token = r.next_page_token;
            if page_token.is_empty() || pages > 20 {
                break;
            }
        }
        names
    });
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(listed.len(), n, "each sandbox once");
    assert_eq!(unique.len(), n, "each sandbox once");

    let ls = c.cli_json(&["sandbox", "ls"]);
    assert_eq!(ls.as_array().map(Vec::len), Some(n), "the CLI follows every page");

    // Two more periods: the agent pulled the whole desired state of its
    // node (10,000 sandboxes) and passed over it.
    let log_len = c.agent_log(1).len();
    std::thread::sleep(Duration::from_secs(5));
    let log = c.agent_log(1);
    let since = &log[log_len..];
    assert!(
        !since.contains("cannot pull the desired state") && !since.contains("left errors"),
        "the agent converges with 10,000 sandboxes: {since}"
    );
    let nodes = c.cli_json(&["node", "ls"]);
    assert_eq!(nodes[0]["Status"], "ready", "{nodes}");
}
