//! The Prometheus exporters of berth-api and berth-agent (`--metrics-listen`)
//! on a real two-node cluster: scraped from inside their namespaces over
//! HTTP and parsed with a real OpenMetrics parser (Python's
//! `prometheus_client`, Debian's python3-prometheus-client, which `.ci/run`
//! installs), after real traffic: RPCs that succeed and fail, etcd
//! transactions, repair passes, reconcile passes, objects, DNS queries.
use std::collections::BTreeMap;
use std::process::Command;

use berth_tests::bin;
use berth_tests::cluster::{Cluster, ClusterOptions, in_ns, must};
use serde_json::Value;

/// The Python that has Debian's prometheus_client (not a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";

/// Fetches URL, parses it as OpenMetrics text (a parse error fails), checks
/// the content type and that other paths are 404; prints the families as JSON.
const SCRAPE: &str = r#"
import json, sys, urllib.request, urllib.error
from prometheus_client.openmetrics.parser import text_string_to_metric_families
url = sys.argv[1]
with urllib.request.urlopen(url, timeout=5) as r:
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode()
assert ctype.startswith("application/openmetrics-text"), ctype
try:
    urllib.request.urlopen(url.replace("/metrics", "/nope"), timeout=5)
    raise SystemExit("/nope answered")
except urllib.error.HTTPError as e:
    assert e.code == 404, e.code
out = []
for f in text_string_to_metric_families(text):
    out.append({"name": f.name, "type": f.type, "unit": f.unit,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"#;

/// One parsed family: its type and samples (name, labels, value).
struct Family {
    kind: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn scrape(ns: &str, url: &str) -> BTreeMap<String, Family> {
    let out = in_ns(ns, &[PYTHON, "-c", SCRAPE, url]);
    assert!(
        out.status.success(),
        "scraping {url} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("scrape JSON");
    v.as_array()
        .expect("families")
        .iter()
        .map(|f| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect();
                    (s[0].as_str().unwrap().to_string(), labels, s[2].as_f64().unwrap())
                })
                .collect();
            (
                f["name"].as_str().unwrap().to_string(),
                Family {
                    kind: f["type"].as_str().unwrap().to_string(),
                    samples,
                },
            )
        })
        .collect()
}

/// The value of sample `sample` of family `family` whose labels include `want`.
fn value(m: &BTreeMap<String, Family>, family: &str, sample: &str, want: &[(&str, &str)]) -> f64 {
    let f = m
        .get(family)
        .unwrap_or_else(|| panic!("no family {family} in {:?}", m.keys().collect::<Vec<_>>()));
    f.samples
        .iter()
        .filter(|(n, l, _)| {
            n == sample
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

fn python_has_prometheus_client() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn both_exporters_parse_and_count_real_work() {
    assert!(
        python_has_prometheus_client(),
        "{PYTHON} lacks prometheus_client: apt-get install python3-prometheus-client (.ci/run does)"
    );
    let metrics = |port: &str| vec!["--metrics-listen".to_string(), format!("127.0.0.1:{port}")];
    let c = must(
        Cluster::start_with(
            2,
            ClusterOptions {
                api_args: metrics("9464"),
                agent_args: vec![metrics("9465"), metrics("9465")],
                ..Default::default()
            },
        ),
        "cluster",
    );
    c.cli_ok(&["network", "create", "mnet"]);
    c.cli_ok(&["sandbox", "create", "ma", "--node", "node1", "--network", "mnet"]);
    c.cli_ok(&["sandbox", "create", "mb", "--node", "node1", "--network", "mnet"]);
    let out = c.cli_ok(&["exec", "ma", "--", "getent", "hosts", "mb"]);
    assert!(out.contains("mb"), "{out}");
    let missing = c.cli(&["sandbox", "inspect", "nosuch"]);
    assert!(!missing.status.success());

    let api_url = "http://127.0.0.1:9464/metrics";
    let agent_url = "http://127.0.0.1:9465/metrics";
    // The repair loop runs every 2 s in the harness; wait for a pass.
    c.eventually("a repair pass counted", || {
        value(
            &scrape(&c.ctl(), api_url),
            "berth_repair_passes",
            "berth_repair_passes_total",
            &[],
        ) >= 1.0
    });
    let api = scrape(&c.ctl(), api_url);
    assert_eq!(api["berth_rpc_duration_seconds"].kind, "histogram");
    let rpc = |m: &BTreeMap<String, Family>, svc: &str, method: &str, code: &str| {
        value(
            m,
            "berth_rpc_duration_seconds",
            "berth_rpc_duration_seconds_count",
            &[("service", svc), ("method", method), ("code", code)],
        )
    };
    assert!(rpc(&api, "berth.v1.SandboxService", "CreateSandbox", "OK") >= 2.0);
    assert!(rpc(&api, "berth.v1.SandboxService", "InspectSandbox", "NOT_FOUND") >= 1.0);
    assert!(rpc(&api, "berth.v1.NetworkService", "CreateNetwork", "OK") >= 1.0);
    // The streaming Exec is recorded when its stream ends, with its status.
    assert!(rpc(&api, "berth.v1.SandboxService", "Exec", "OK") >= 1.0);
    // Agents register and heartbeat over TCP with their certificates.
    assert!(rpc(&api, "berth.v1.RegistryService", "Heartbeat", "OK") >= 1.0);
    assert!(
        value(
            &api,
            "berth_etcd_txn_duration_seconds",
            "berth_etcd_txn_duration_seconds_count",
            &[("outcome", "committed")]
        ) >= 3.0
    );
    assert!(api.contains_key("berth_etcd_txn_retries"));
    assert!(api.contains_key("berth_repair_actions"));
    // No series is labelled with a sandbox's name.
    for f in api.values() {
        for (_, labels, _) in &f.samples {
            assert!(!labels.values().any(|v| v == "ma" || v == "mb"), "{labels:?}");
        }
    }

    let n1 = scrape(&c.node(1), agent_url);
    let node1 = [("node", "node1")];
    assert!(
        value(
            &n1,
            "berth_reconcile_passes",
            "berth_reconcile_passes_total",
            &[("scope", "command")]
        ) >= 2.0
    );
    assert!(
        value(
            &n1,
            "berth_reconcile_actions",
            "berth_reconcile_actions_total",
            &[("kind", "namespace"), ("result", "ok"), ("node", "node1")]
        ) >= 2.0
    );
    assert!(
        value(
            &n1,
            "berth_objects",
            "berth_objects",
            &[("kind", "namespace"), ("state", "ok"), ("node", "node1")]
        ) >= 2.0,
        "objects: {:?}",
        n1["berth_objects"].samples
    );
    assert!(
        value(
            &n1,
            "berth_dns_queries",
            "berth_dns_queries_total",
            &[("result", "answered"), ("node", "node1")]
        ) >= 1.0
    );
    assert!(rpc(&n1, "berth.v1.AgentService", "EnsureSandbox", "OK") >= 2.0);
    assert!(rpc(&n1, "berth.v1.AgentService", "Exec", "OK") >= 1.0);
    assert!(value(&n1, "berth_kernel_errors", "berth_kernel_errors_total", &node1) == 0.0);
    // node2 has its own exporter, with its own name and no sandbox of ours.
    let n2 = scrape(&c.node(2), agent_url);
    assert_eq!(
        value(
            &n2,
            "berth_objects",
            "berth_objects",
            &[("kind", "namespace"), ("node", "node2")]
        ),
        0.0
    );
    assert!(
        value(
            &n2,
            "berth_reconcile_passes",
            "berth_reconcile_passes_total",
            &[("node", "node2")]
        ) >= 1.0
    );

    // Every series the Grafana dashboard queries exists.
    let served: std::collections::BTreeSet<&str> = [&api, &n1, &n2]
        .iter()
        .flat_map(|m| m.values())
        .flat_map(|f| f.samples.iter().map(|(n, _, _)| n.as_str()))
        .collect();
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/berth-dashboard.json"),
    )
    .unwrap();
    let mut used = 0;
    for (i, _) in dashboard.match_indices("berth_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used += 1;
        assert!(
            served.contains(name.as_str()),
            "the dashboard queries {name}, which nobody serves"
        );
    }
    assert!(used >= 15, "{used}");
}

#[test]
fn a_bad_metrics_address_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("berth-api"))
        .args(["--metrics-listen", "nonsense", "--socket"])
        .arg(dir.path().join("api.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-listen \"nonsense\"") && err.contains("IP:PORT"),
        "{err}"
    );
    assert!(!dir.path().join("api.sock").exists(), "left a socket behind");
}
