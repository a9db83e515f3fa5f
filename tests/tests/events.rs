//! `berth events` against a real two-node cluster: a stream started in
//! "another terminal" (a child process) sees creates, connects,
//! disconnects and removals made by other CLI calls, node down/ready, and
//! a repair action; a filtered stream sees only what it asked for;
//! `--since/--until` replays history and ends by itself; bad input is one
//! line and exit 1 (or 2 for what clap refuses); a viewer may watch.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_tests::bin;
use berth_tests::cluster::{Cluster, in_ns_ok, must};
use serde_json::Value;

/// A `berth events` process whose stdout lines arrive on a channel; killed on drop.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Events {
    fn start(c: &Cluster, args: &[&str]) -> Self {
        let mut child = Command::new(bin("berth"))
            .arg("--api")
            .arg(format!("unix://{}", c.socket.display()))
            .args(["--output", "json", "events"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting berth events");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until an event with these fields arrives (up to `secs`).
    fn expect(&mut self, kind: &str, action: &str, name: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        if let Some(e) = self.seen.iter().find(|e| matches(e, kind, action, name)) {
            return e.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let e: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            self.seen.push(e.clone());
            if matches(&e, kind, action, name) {
                return e;
            }
        }
        panic!("no {kind} {action} {name} within {secs} s; saw {:#?}", self.seen);
    }

    /// Position of the first seen event with these fields.
    fn index(&self, kind: &str, action: &str, name: &str) -> usize {
        self.seen
            .iter()
            .position(|e| matches(e, kind, action, name))
            .unwrap_or_else(|| panic!("{kind} {action} {name} not seen"))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn matches(e: &Value, kind: &str, action: &str, name: &str) -> bool {
    e["Type"] == kind && e["Action"] == action && e["Actor"]["Attributes"]["name"] == name
}

fn now_unix() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Runs a finite `berth events …` (with --until) and waits for it to end by itself.
fn finite(c: &Cluster, args: &[&str]) -> (Vec<Value>, String, Option<i32>) {
    let mut child = Command::new(bin("berth"))
        .arg("--api")
        .arg(format!("unix://{}", c.socket.display()))
        .args(["--output", "json", "events"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth events {args:?} did not end by itself");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        events,
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
        out.status.code(),
    )
}

#[test]
fn events_stream_replay_and_filters() {
    let mut c = must(Cluster::start(2), "cluster");
    let t0 = now_unix();
    let mut all = Events::start(&c, &[]);
    let mut node2 = Events::start(&c, &["--filter", "type=sandbox", "--filter", "node=node2"]);
    let mut nets = Events::start(&c, &["-f", "type=network", "-f", "network=evnet"]);
    // The streams start their etcd watches before answering; give the
    // processes a moment to connect.
    std::thread::sleep(Duration::from_millis(1500));

    c.cli_ok(&["network", "create", "evnet"]);
    c.cli_ok(&[
        "sandbox",
        "create",
        "es1",
        "--node",
        "node1",
        "--network",
        "evnet",
    ]);
    c.cli_ok(&["sandbox", "create", "es2", "--node", "node2"]);
    c.cli_ok(&["network", "connect", "bridge", "es1"]);
    c.cli_ok(&["network", "disconnect", "bridge", "es1"]);
    c.cli_ok(&["sandbox", "rm", "-f", "es1", "es2"]);
    c.cli_ok(&["network", "rm", "evnet"]);

    let created = all.expect("network", "create", "evnet", 15);
    assert_eq!(created["Actor"]["Attributes"]["driver"], "bridge");
    assert_eq!(created["Actor"]["ID"].as_str().unwrap().len(), 64);
    let sb = all.expect("sandbox", "create", "es1", 15);
    assert_eq!(sb["Node"], "node1");
    assert_eq!(sb["Network"], "evnet");
    let conn = all.expect("sandbox", "connect", "es1", 15);
    assert_eq!(conn["Network"], "evnet");
    assert!(
        conn["Actor"]["Attributes"]["ip"]
            .as_str()
            .unwrap()
            .starts_with("172.")
    );
    all.expect("sandbox", "ready", "es1", 15);
    all.expect("sandbox", "disconnect", "es1", 15);
    all.expect("sandbox", "remove", "es1", 15);
    all.expect("network", "remove", "evnet", 15);
    // In the order they happened.
    let order = [
        all.index("network", "create", "evnet"),
        all.index("sandbox", "create", "es1"),
        all.index("sandbox", "ready", "es1"),
        all.index("sandbox", "remove", "es1"),
        all.index("network", "remove", "evnet"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?}: {:#?}",
        all.seen
    );
    // Within the removal's transaction: the disconnect before the removal.
    let left = all
        .seen
        .iter()
        .position(|e| matches(e, "sandbox", "disconnect", "es1") && e["Network"] == "evnet")
        .expect("es1 left evnet");
    assert!(left < all.index("sandbox", "remove", "es1"), "{:#?}", all.seen);
    // Revisions never go back, times neither.
    for w in all.seen.windows(2) {
        assert!(w[0]["Revision"].as_i64() <= w[1]["Revision"].as_i64());
        assert!(w[0]["timeNano"].as_i64() <= w[1]["timeNano"].as_i64());
    }

    // The filtered streams saw only what they asked for.
    node2.expect("sandbox", "create", "es2", 15);
    node2.expect("sandbox", "remove", "es2", 15);
    assert!(
        node2
            .seen
            .iter()
            .all(|e| e["Type"] == "sandbox" && e["Node"] == "node2"),
        "{:#?}",
        node2.seen
    );
    nets.expect("network", "create", "evnet", 15);
    nets.expect("network", "remove", "evnet", 15);
    assert!(
        nets.seen.iter().all(|e| e["Type"] == "network"),
        "{:#?}",
        nets.seen
    );
    let t1 = now_unix();

    // History: the same window replayed, and the stream ends by itself.
    let (past, err, code) = finite(&c, &["--since", &t0, "--until", &t1]);
    assert_eq!(code, Some(0), "{err}");
    let names: Vec<String> = past
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["Type"], e["Action"], e["Actor"]["Attributes"]["name"]
            )
        })
        .collect();
    for want in [
        r#""network" "create" "evnet""#,
        r#""sandbox" "create" "es1""#,
        r#""sandbox" "remove" "es2""#,
        r#""network" "remove" "evnet""#,
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not replayed: {names:#?}\n{}",
            c.api_log()
        );
    }
    // Replayed events keep the times they happened at.
    let live = all.expect("network", "create", "evnet", 1)["timeNano"].clone();
    let again = past
        .iter()
        .find(|e| matches(e, "network", "create", "evnet"))
        .unwrap();
    assert_eq!(again["timeNano"], live);
    // A window without our events replays none of them.
    let (past, err, code) = finite(
        &c,
        &["--since", &t1, "--until", &now_unix(), "-f", "type=network"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(past.is_empty(), "{past:#?}");

    // A repair action: a name key without an owner is freed after two passes.
    in_ns_ok(
        &c.ctl(),
        &[
            "etcdctl",
            "--endpoints",
            "http://127.0.0.1:2379",
            "put",
            "/berth/v1/names/sandboxes/ghost",
            "no-such-sandbox",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let freed = loop {
        let line = all
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no repair event within 20 s");
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["Type"] == "repair" {
            break e;
        }
    };
    assert_eq!(freed["Action"], "orphan_freed");
    assert_eq!(
        freed["Actor"]["Attributes"]["key"],
        "/berth/v1/names/sandboxes/ghost"
    );

    // A node that goes down and comes back.
    c.stop_agent(2);
    all.expect("node", "down", "node2", 20);
    must(c.start_agent(2), "restart node2");
    all.expect("node", "ready", "node2", 20);
    drop(node2);
    drop(nets);

    // A viewer may watch (over mutual TLS).
    let viewer = c.client_cert("vic", "viewer");
    let out = c.cli_as(
        &viewer,
        &["events", "--since", &t0, "--until", &t1, "-f", "type=network"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" network create ") && text.contains("name=evnet"),
        "{text}"
    );
}

#[test]
fn bad_event_requests_are_one_line() {
    let c = must(Cluster::start(1), "cluster");
    let out = c.cli(&["events", "--filter", "colour=red"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("berth: invalid filter: unknown key \"colour\""),
        "{err}"
    );

    let out = c.cli(&["events", "--filter", "type=container"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("type=\"container\""));

    let out = c.cli(&["events", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a time"));

    // Before this API server's revision clock began: refused, not silently empty.
    let out = c.cli(&["events", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "berth: --since 2000-01-01T00:00:00Z: this API server knows the cluster's history only from"
        ),
        "{err}"
    );

    let out = c.cli(&["events", "--since", "1m", "--until", "2m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid until: is before --since"));

    // History that etcd compacted away is refused with a clear error.
    let t = now_unix();
    c.cli_ok(&["network", "create", "cnet"]);
    c.cli_ok(&["network", "rm", "cnet"]);
    let etcdctl = |args: &[&str]| {
        let mut all = vec!["etcdctl", "--endpoints", "http://127.0.0.1:2379"];
        all.extend_from_slice(args);
        in_ns_ok(&c.ctl(), &all)
    };
    let status: Value = serde_json::from_str(&etcdctl(&["get", "/", "-w", "json"])).unwrap();
    let rev = status["header"]["revision"].as_i64().unwrap().to_string();
    etcdctl(&["compact", &rev]);
    let (events, err, code) = finite(&c, &["--since", &t, "--until", &now_unix()]);
    assert_eq!(code, Some(1), "{events:?}");
    assert!(
        err.starts_with("berth: etcd has compacted its history past revision"),
        "{err}"
    );
}
