//! The fault matrix: for each of {berth-agent, berth-api, etcd} × {sandbox
//! create, rm, connect, disconnect, network create, network rm, node rm, a
//! burst of six creates and two removals served by shared agent passes},
//! SIGKILL at a random point (0–25 ms into the operation), restart, and
//! check that within a few repair periods the cluster is consistent:
//! every node's kernel matches the records, every IPAM, port, name and VNI
//! key has exactly one owner and every owner its keys, no address is on two
//! endpoints of a network, nothing is left of removed sandboxes. Plus two
//! API replicas racing on the same names.
//!
//! Seeded: set BERTH_FAULT_SEED to replay a run; the seed is printed on
//! failure. BERTH_FAULT_ROUNDS (default 2) is how many times each operation
//! is interrupted per victim.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::cluster::{Cluster, ClusterOptions};
use berth_tests::invariants::{consistent, state};
use berth_tests::{bin, run_cli, wait_until};

#[derive(Debug, Clone, Copy)]
enum Victim {
    Agent,
    Api,
    Etcd,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Remove,
    Connect,
    Disconnect,
    NetworkCreate,
    NetworkRemove,
    NodeRemove,
    /// Six creates and two removals at once on one node: the agent serves
    /// them in shared passes, so the kill lands in the middle of a batch.
    Burst,
}

const OPS: [Op; 8] = [
    Op::Create,
    Op::Remove,
    Op::Connect,
    Op::Disconnect,
    Op::NetworkCreate,
    Op::NetworkRemove,
    Op::NodeRemove,
    Op::Burst,
];

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn seed() -> u64 {
    std::env::var("BERTH_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

fn cluster() -> Cluster {
    let opts = ClusterOptions {
        agent_args: vec![vec!["--resync-period".to_string(), "2".to_string()]; 2],
        ..Default::default()
    };
    Cluster::start_with(2, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"))
}

/// `berth ARGS` against the cluster's main API server, in the background.
fn spawn_cli(c: &Cluster, args: &[&str]) -> Child {
    Command::new(bin("berth"))
        .arg("--api")
        .arg(format!("unix://{}", c.socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning berth")
}

/// The operation's exit status (`None`: still running after `limit`, killed).
fn wait_child(mut child: Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn kill(c: &mut Cluster, v: Victim) {
    match v {
        Victim::Agent => c.crash_agent(1),
        Victim::Api => c.crash_api(),
        Victim::Etcd => c.crash_etcd(),
    }
}

fn restart(c: &mut Cluster, v: Victim) {
    match v {
        Victim::Agent => c.start_agent(1).expect("agent"),
        Victim::Api => c.start_api().expect("api"),
        Victim::Etcd => c.start_etcd().expect("etcd"),
    }
}

/// Sets up what `op` needs; returns its command lines (run at once).
fn prepare(c: &mut Cluster, op: Op, round: usize) -> Vec<Vec<String>> {
    if let Op::Burst = op {
        let mut cmds = Vec::new();
        for k in 0..2 {
            let sb = format!("r{round}x{k}");
            c.cli_ok(&["sandbox", "create", &sb, "--node", "node1", "--network", "user"]);
            cmds.push(vec!["sandbox".into(), "rm".into(), sb]);
        }
        for k in 0..6 {
            let network = if k % 2 == 0 { "user" } else { "demo" };
            cmds.push(
                [
                    "sandbox",
                    "create",
                    &format!("b{round}x{k}"),
                    "--node",
                    "node1",
                    "--network",
                    network,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            );
        }
        return cmds;
    }
    vec![prepare_one(c, op, round)]
}

/// Sets up what a single-command `op` needs; returns its command line.
fn prepare_one(c: &mut Cluster, op: Op, round: usize) -> Vec<String> {
    let sb = format!("s{round}");
    let net = format!("n{round}");
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match op {
        Op::Create => {
            let network = if round.is_multiple_of(2) { "bridge" } else { "demo" };
            own(&[
                "sandbox",
                "create",
                &sb,
                "--node",
                "node1",
                "--network",
                network,
                "-p",
                &format!("{}:80", 9000 + round),
            ])
        }
        Op::Remove => {
            c.cli_ok(&["sandbox", "create", &sb, "--node", "node1", "--network", "demo"]);
            own(&["sandbox", "rm", &sb])
        }
        Op::Connect => {
            c.cli_ok(&["sandbox", "create", &sb, "--node", "node1"]);
            own(&["network", "connect", "user", &sb])
        }
        Op::Disconnect => {
            c.cli_ok(&["sandbox", "create", &sb, "--node", "node1"]);
            c.cli_ok(&["network", "connect", "user", &sb]);
            own(&["network", "disconnect", "user", &sb])
        }
        Op::NetworkCreate => own(&["network", "create", "-d", "overlay", "--ipv6", &net]),
        Op::NetworkRemove => {
            c.cli_ok(&["network", "create", "-d", "overlay", "--ipv6", &net]);
            own(&["network", "rm", &net])
        }
        Op::NodeRemove => {
            c.cli_ok(&["sandbox", "create", &sb, "--node", "node2", "--network", "demo"]);
            c.stop_agent(2);
            c.eventually("node2 not ready", || {
                let v = c.cli_json(&["node", "ls"]);
                v.as_array()
                    .is_some_and(|a| a.iter().any(|n| n["Name"] == "node2" && n["Status"] != "ready"))
            });
            own(&["node", "rm", "node2"])
        }
        Op::Burst => unreachable!("prepared by prepare"),
    }
}

fn run_matrix(victim: Victim) {
    let seed = seed();
    let mut rng = Rng(seed);
    let mut c = cluster();
    // Dual stack, so every create, rm, connect and disconnect on them also
    // takes or frees an IPv6 address key in the same transaction.
    c.cli_ok(&["network", "create", "-d", "overlay", "--ipv6", "demo"]);
    c.cli_ok(&["network", "create", "--ipv6", "user"]);
    let reps: usize = std::env::var("BERTH_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let (mut failed, mut succeeded) = (0, 0);
    for (round, op) in (0..reps).flat_map(|_| OPS.iter()).enumerate() {
        let cmds = prepare(&mut c, *op, round);
        let delay = rng.below(26);
        let children: Vec<Child> = cmds
            .iter()
            .map(|args| spawn_cli(&c, &args.iter().map(String::as_str).collect::<Vec<_>>()))
            .collect();
        std::thread::sleep(Duration::from_millis(delay));
        kill(&mut c, victim);
        for child in children {
            match wait_child(child, Duration::from_secs(40)) {
                Some(0) => succeeded += 1,
                _ => failed += 1,
            }
        }
        let args = cmds.concat();
        restart(&mut c, victim);
        if matches!(op, Op::NodeRemove) {
            // node2 comes back as a new, empty node.
            c.start_agent(2).expect("agent2");
        }
        if let Err(e) = c.wait_ready(&[1, 2]) {
            panic!("seed {seed}: {victim:?} × {op:?} after {delay} ms: {e}");
        }
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(45), || match consistent(&c) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        });
        assert!(
            ok,
            "seed {seed} (BERTH_FAULT_SEED={seed} replays it): {victim:?} killed {delay} ms into {op:?} {args:?}: {last}\n{}",
            c.logs()
        );
    }
    eprintln!(
        "fault matrix, {victim:?} (seed {seed}): {succeeded} operations completed, {failed} interrupted; consistent after each"
    );
}

#[test]
fn agent_killed_during_every_operation() {
    run_matrix(Victim::Agent);
}

#[test]
fn api_killed_during_every_operation() {
    run_matrix(Victim::Api);
}

#[test]
fn etcd_killed_during_every_operation() {
    run_matrix(Victim::Etcd);
}

/// Two replicas on one etcd race creates, removals, connects and network
/// removals on the same names; the outcome is one consistent state.
#[test]
fn two_replicas_racing_on_the_same_names() {
    let mut c = cluster();
    let other = c.start_replica(7430).expect("second replica");
    let apis = [
        format!("unix://{}", c.socket.display()),
        format!("unix://{}", other.display()),
    ];
    c.cli_ok(&["network", "create", "shared"]);
    for round in 0..4 {
        let name = format!("r{round}");
        let steps: [&[&str]; 5] = [
            &["sandbox", "create", &name, "--node", "node1"],
            &["network", "connect", "shared", &name],
            &["network", "disconnect", "shared", &name],
            &["sandbox", "rm", &name],
            &["network", "rm", "shared"],
        ];
        for step in steps {
            std::thread::scope(|s| {
                for api in &apis {
                    s.spawn(move || run_cli(api, step));
                }
            });
        }
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(30), || match consistent(&c) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        });
        assert!(ok, "round {round}: {last}\n{}", c.logs());
        // The network went in the last step (no endpoint left): recreate it.
        let _ = c.cli(&["network", "create", "shared"]);
    }
    // Exactly one of each create won; nothing is left of the sandboxes.
    let s = state(&c);
    assert!(s.sandboxes.is_empty(), "{:?}", s.sandboxes.keys());
    assert!(s.ipam.keys().all(|(net, _, _)| s.networks.contains_key(net)));
}
