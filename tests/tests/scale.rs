//! 10,000 sandboxes (issue #12 item 6: "no response approaches the message
//! limit at 10,000 sandboxes"). They are real sandboxes made through the
//! public API, in host mode so that the node does not need 10,000
//! namespaces: every one has its records, its name key and its agent's
//! confirmation. Then the paged list returns each exactly once, the CLI's
//! `sandbox ls` follows every page, and the agent, which pulls the node's
//! whole desired state every period, still can. Printed (not asserted: the
//! machine is shared): the creates' time, bridge create p50 in the empty
//! cluster and with the sandboxes, the processes' RSS and one full sync.
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
    // Sequential creates of real bridge sandboxes (namespace, veth,
    // address) in the empty cluster, to compare with the same once the
    // cluster holds n more: the cost of a create must not grow with it.
    let empty = timed_creates(&rt, &c, "e");
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
    let full = timed_creates(&rt, &c, "f");
    let (p50_empty, p50_full) = (p50(&empty), p50(&full));
    println!(
        "bridge create p50: {p50_empty:.1} ms in the empty cluster, {p50_full:.1} ms with {n} more sandboxes (ratio {:.2})",
        p50_full / p50_empty
    );
    for (what, pid) in [("berth-api", c.api_pid()), ("berth-agent", c.agent_pid(1))] {
        if let Some(rss) = pid.and_then(rss_kib) {
            println!("{what} RSS with {n} sandboxes: {:.1} MiB", rss as f64 / 1024.0);
        }
    }

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
    let total = n + 2 * TIMED;
    assert_eq!(listed.len(), total, "each sandbox once");
    assert_eq!(unique.len(), total, "each sandbox once");

    let ls = c.cli_json(&["sandbox", "ls"]);
    assert_eq!(
        ls.as_array().map(Vec::len),
        Some(total),
        "the CLI follows every page"
    );

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
    // One full sync of the node: the pull of its desired state, then the pass.
    let field = |line: &str, f: &str| -> Option<u64> {
        let at = line.find(&format!("{f}="))? + f.len() + 1;
        line[at..]
            .split(|ch: char| !ch.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let pull = since
        .lines()
        .rev()
        .find(|l| l.contains("pulled the desired state"));
    let pass = since.lines().rev().find(|l| l.contains("full pass done"));
    if let (Some(pull), Some(pass)) = (pull, pass) {
        println!(
            "full sync of node1 ({} sandboxes): pull {} ms, pass {} ms",
            field(pass, "sandboxes").unwrap_or(0),
            field(pull, "pull_ms").unwrap_or(0),
            field(pass, "elapsed_ms").unwrap_or(0)
        );
    }
}

/// Sandboxes created one after another by [`timed_creates`].
const TIMED: usize = 30;

/// Creates `TIMED` bridge sandboxes `<prefix>00…` on node1, one at a
/// time, and returns each call's milliseconds.
fn timed_creates(rt: &tokio::runtime::Runtime, c: &Cluster, prefix: &str) -> Vec<f64> {
    rt.block_on(async {
        let mut sb = SandboxServiceClient::new(unix_channel(c.socket.clone()));
        let mut out = Vec::new();
        for i in 0..TIMED {
            let t = Instant::now();
            sb.create_sandbox(pb::CreateSandboxRequest {
                name: format!("{prefix}{i:02}"),
                node: "node1".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create {prefix}{i:02}: {e:?}"));
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        out
    })
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Resident set size of a process, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
