//! The soak: a long random run of operations (sandbox create and rm on
//! bridge, user-bridge and overlay networks, connect, disconnect, network
//! create and rm) on three nodes, with a random fault every few operations
//! — SIGKILL of an agent or of berth-api, an etcd restart, or an agent's
//! gRPC port blocked by an nftables rule inside its node's namespace —
//! while more operations run. After each fault is healed it measures the
//! time from the fault until the cluster is consistent again (the
//! checker in `berth_tests::invariants`); a fault after which it does not
//! converge is a divergence, and the run ends with 0 divergences or fails.
//!
//! Too long for CI, so `#[ignore]`d; run it (as root, after
//! `cargo build --workspace --bins`) with
//!
//! ```sh
//! cargo test -p berth-tests --test soak -- --ignored --nocapture
//! ```
//!
//! Environment: `BERTH_SOAK_SEED` replays a run (the seed is printed
//! first), `BERTH_SOAK_OPS` (default 1000) operations, a fault every
//! `BERTH_SOAK_FAULT_EVERY` (default 5, uniformly 3–7) operations,
//! `BERTH_SOAK_PERIOD` (default 2) seconds for the agents'
//! `--resync-period` and berth-api's `--repair-period`,
//! `BERTH_SOAK_CONVERGE_LIMIT` (default 120) seconds before a fault that
//! has not healed counts as a divergence, `BERTH_SOAK_OUT` where the report
//! goes (default `target/debug/soak/<seed>/`: `report.md`, `faults.csv`,
//! `fault-errors.txt`, and with `BERTH_SOAK_KEEP_LOGS=1` every process's
//! log). See docs/reliability.md.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::cluster::{Cluster, ClusterOptions, in_ns};
use berth_tests::invariants::{State, consistent, state};
use berth_tests::{bin, bin_dir, wait_until};

const NODES: usize = 3;
/// At most this many sandboxes at a time (an overlay /24 has 253 addresses).
const MAX_SANDBOXES: usize = 24;
/// At most this many networks made by the soak (besides the fixed ones).
const MAX_DYNAMIC_NETWORKS: usize = 4;
/// While a fault lasts, a new operation starts at most this often (most
/// fail at once while berth-api or etcd is down; a few are enough).
const FAULT_OP_SPACING: Duration = Duration::from_millis(300);
/// The harness's `--node-ttl` (4 s) plus one heartbeat period (a third of
/// it) and a margin: how long after a heal a node may still turn not ready
/// because its lease lapsed during the fault.
const AFTERMATH: Duration = Duration::from_millis(4000 + 1333 + 700);
/// How long one CLI call may take before it counts as hung.
const OP_LIMIT: Duration = Duration::from_secs(90);
/// The fixed networks: the default bridge, a user bridge, an overlay.
const FIXED: [(&str, bool); 3] = [("bridge", false), ("user", false), ("ov1", true)];

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

struct Config {
    seed: u64,
    ops: usize,
    fault_every: u64,
    period: u64,
    converge_limit: Duration,
    out: PathBuf,
}

impl Config {
    fn from_env() -> Self {
        let seed = env_u64(
            "BERTH_SOAK_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        );
        let out = std::env::var_os("BERTH_SOAK_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin_dir().join("soak").join(seed.to_string()));
        Self {
            seed,
            ops: env_u64("BERTH_SOAK_OPS", 1000) as usize,
            fault_every: env_u64("BERTH_SOAK_FAULT_EVERY", 5).max(1),
            period: env_u64("BERTH_SOAK_PERIOD", 2).max(1),
            converge_limit: Duration::from_secs(env_u64("BERTH_SOAK_CONVERGE_LIMIT", 120)),
            out,
        }
    }
}

/// What the soak believes exists; rebuilt from etcd after every fault.
#[derive(Debug, Default, Clone)]
struct Model {
    /// sandbox name → (node, the soak's networks it is on)
    sandboxes: BTreeMap<String, (usize, BTreeSet<String>)>,
    /// network name → overlay?
    networks: BTreeMap<String, bool>,
}

impl Model {
    fn from_state(s: &State) -> Self {
        let mut m = Model::default();
        let mut names = BTreeMap::new();
        for (id, n) in &s.networks {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            let visible = FIXED.iter().any(|(f, _)| *f == name) || name.starts_with('d');
            if visible {
                m.networks.insert(name.clone(), n["driver"] == "overlay");
                names.insert(id.clone(), name);
            }
        }
        for r in s.sandboxes.values() {
            let node = r["node"]
                .as_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let nets = r["networks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str().and_then(|id| names.get(id)).cloned())
                .collect();
            m.sandboxes
                .insert(r["name"].as_str().unwrap_or_default().to_string(), (node, nets));
        }
        m
    }

    fn in_use(&self, net: &str) -> bool {
        self.sandboxes.values().any(|(_, nets)| nets.contains(net))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: String,
        node: usize,
        network: String,
        port: Option<u16>,
    },
    Remove {
        name: String,
        force: bool,
    },
    Connect {
        network: String,
        name: String,
    },
    Disconnect {
        network: String,
        name: String,
    },
    NetworkCreate {
        name: String,
        overlay: bool,
    },
    NetworkRemove {
        name: String,
    },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "sandbox create",
            Op::Remove { .. } => "sandbox rm",
            Op::Connect { .. } => "network connect",
            Op::Disconnect { .. } => "network disconnect",
            Op::NetworkCreate { .. } => "network create",
            Op::NetworkRemove { .. } => "network rm",
        }
    }

    fn args(&self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match self {
            Op::Create {
                name,
                node,
                network,
                port,
            } => {
                let mut a = s(&["sandbox", "create", name, "--node", &format!("node{node}")]);
                a.extend(s(&["--network", network]));
                if let Some(p) = port {
                    a.extend(s(&["-p", &format!("{p}:80")]));
                }
                a
            }
            Op::Remove { name, force: true } => s(&["sandbox", "rm", "-f", name]),
            Op::Remove { name, force: false } => s(&["sandbox", "rm", name]),
            Op::Connect { network, name } => s(&["network", "connect", network, name]),
            Op::Disconnect { network, name } => s(&["network", "disconnect", network, name]),
            Op::NetworkCreate { name, overlay } => s(&[
                "network",
                "create",
                "-d",
                if *overlay { "overlay" } else { "bridge" },
                name,
            ]),
            Op::NetworkRemove { name } => s(&["network", "rm", name]),
        }
    }

    /// What the operation did, once it succeeded.
    fn apply(&self, m: &mut Model) {
        match self {
            Op::Create {
                name, node, network, ..
            } => {
                m.sandboxes
                    .insert(name.clone(), (*node, BTreeSet::from([network.clone()])));
            }
            Op::Remove { name, .. } => {
                m.sandboxes.remove(name);
            }
            Op::Connect { network, name } => {
                if let Some((_, nets)) = m.sandboxes.get_mut(name) {
                    nets.insert(network.clone());
                }
            }
            Op::Disconnect { network, name } => {
                if let Some((_, nets)) = m.sandboxes.get_mut(name) {
                    nets.remove(network);
                }
            }
            Op::NetworkCreate { name, overlay } => {
                m.networks.insert(name.clone(), *overlay);
            }
            Op::NetworkRemove { name } => {
                m.networks.remove(name);
            }
        }
    }
}

/// Chooses the next operation, one the model says should succeed.
struct Generator {
    rng: Rng,
    next_sandbox: usize,
    next_network: usize,
    next_port: u16,
}

impl Generator {
    fn next(&mut self, m: &Model) -> Op {
        let n = m.sandboxes.len();
        let dynamic: Vec<&String> = m.networks.keys().filter(|k| k.starts_with('d')).collect();
        let weights = [
            (0, if n < MAX_SANDBOXES { 30 } else { 0 }),
            (1, if n > 16 { 40 } else { 22 }),
            (2, 15),
            (3, 12),
            (
                4,
                if dynamic.len() < MAX_DYNAMIC_NETWORKS {
                    8
                } else {
                    0
                },
            ),
            (5, 8),
        ];
        let total: u64 = weights.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total);
        let mut kind = 0;
        for (k, w) in weights {
            if roll < w {
                kind = k;
                break;
            }
            roll -= w;
        }
        let sandboxes: Vec<&String> = m.sandboxes.keys().collect();
        let op = match kind {
            1 => self.rng.pick(&sandboxes).map(|name| Op::Remove {
                name: name.to_string(),
                force: self.rng.below(5) == 0,
            }),
            2 => {
                let choices: Vec<(String, String)> = m
                    .sandboxes
                    .iter()
                    .flat_map(|(sb, (_, nets))| {
                        m.networks
                            .keys()
                            .filter(|net| *net != "bridge" && !nets.contains(*net))
                            .map(|net| (net.clone(), sb.clone()))
                    })
                    .collect();
                self.rng.pick(&choices).map(|(network, name)| Op::Connect {
                    network: network.clone(),
                    name: name.clone(),
                })
            }
            3 => {
                let choices: Vec<(String, String)> = m
                    .sandboxes
                    .iter()
                    .filter(|(_, (_, nets))| nets.len() >= 2)
                    .flat_map(|(sb, (_, nets))| nets.iter().map(|net| (net.clone(), sb.clone())))
                    .collect();
                self.rng.pick(&choices).map(|(network, name)| Op::Disconnect {
                    network: network.clone(),
                    name: name.clone(),
                })
            }
            4 => {
                self.next_network += 1;
                Some(Op::NetworkCreate {
                    name: format!("d{}", self.next_network),
                    overlay: self.rng.below(2) == 0,
                })
            }
            5 => {
                let free: Vec<&&String> = dynamic.iter().filter(|d| !m.in_use(d)).collect();
                match self.rng.pick(&free) {
                    Some(name) => Some(Op::NetworkRemove {
                        name: name.to_string(),
                    }),
                    // Every network the soak made is in use: drain one, a
                    // sandbox at a time, so network rm comes round often.
                    None => self.rng.pick(&dynamic).and_then(|net| {
                        let (name, (_, nets)) =
                            m.sandboxes.iter().find(|(_, (_, nets))| nets.contains(*net))?;
                        Some(if nets.len() >= 2 {
                            Op::Disconnect {
                                network: net.to_string(),
                                name: name.clone(),
                            }
                        } else {
                            Op::Remove {
                                name: name.clone(),
                                force: false,
                            }
                        })
                    }),
                }
            }
            _ => None,
        };
        op.unwrap_or_else(|| {
            if n >= MAX_SANDBOXES {
                let name = sandboxes[self.rng.below(n as u64) as usize].clone();
                return Op::Remove { name, force: false };
            }
            self.create(m)
        })
    }

    fn create(&mut self, m: &Model) -> Op {
        self.next_sandbox += 1;
        let nets: Vec<(&String, &bool)> = m.networks.iter().collect();
        let (network, overlay) = self.rng.pick(&nets).map(|(n, o)| ((*n).clone(), **o)).unwrap();
        let port = (!overlay && self.rng.below(4) == 0).then(|| {
            self.next_port += 1;
            self.next_port
        });
        Op::Create {
            name: format!("s{}", self.next_sandbox),
            node: self.rng.range(1, NODES as u64) as usize,
            network,
            port,
        }
    }
}

/// A CLI call in the background; killed if still running when dropped.
struct Running {
    op: Op,
    child: Option<Child>,
    started: Instant,
}

impl Running {
    fn spawn(c: &Cluster, op: Op) -> Self {
        let child = Command::new(bin("berth"))
            .arg("--api")
            .arg(format!("unix://{}", c.socket.display()))
            .args(op.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning berth");
        Self {
            op,
            child: Some(child),
            started: Instant::now(),
        }
    }

    /// `Some(Ok(()))` or `Some(Err(stderr))` once it ended; `None` while running.
    fn poll(&mut self) -> Option<Result<(), String>> {
        let child = self.child.as_mut()?;
        let status = match child.try_wait() {
            Ok(Some(st)) => st,
            Ok(None) if self.started.elapsed() < OP_LIMIT => return None,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Some(Err(format!("hung: still running after {OP_LIMIT:?}")));
            }
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        self.child = None;
        Some(if status.success() {
            Ok(())
        } else {
            Err(err.trim().to_string())
        })
    }

    fn wait(&mut self) -> Result<(), String> {
        loop {
            if let Some(r) = self.poll() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    AgentKill(usize),
    ApiKill,
    EtcdRestart,
    PortBlock(usize),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::AgentKill(_) => "SIGKILL berth-agent",
            Fault::ApiKill => "SIGKILL berth-api",
            Fault::EtcdRestart => "etcd SIGKILL + restart",
            Fault::PortBlock(_) => "agent gRPC port blocked (nft drop)",
        }
    }

    /// How long the fault lasts before it is healed.
    fn outage(&self, rng: &mut Rng) -> Duration {
        Duration::from_millis(match self {
            Fault::AgentKill(_) | Fault::ApiKill => rng.range(300, 2000),
            Fault::EtcdRestart => rng.range(500, 2500),
            Fault::PortBlock(_) => rng.range(2000, 5000),
        })
    }
}

const KINDS: [&str; 4] = [
    "SIGKILL berth-agent",
    "SIGKILL berth-api",
    "etcd SIGKILL + restart",
    "agent gRPC port blocked (nft drop)",
];

/// Runs `nft ARGS` inside node `i`'s namespace only (never the root one).
fn nft_in_node(c: &Cluster, i: usize, args: &[&str], stdin: Option<&str>) {
    let ns = format!("/run/netns/{}", c.node(i));
    assert!(std::path::Path::new(&ns).exists(), "{ns} is missing");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={ns}"))
        .arg("--")
        .arg("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("nsenter nft");
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        w.write_all(text.as_bytes()).expect("writing the ruleset");
    }
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const BLOCK: &str = "table inet soak {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 7421 drop
    }
}
";

fn inject(c: &mut Cluster, f: Fault) {
    match f {
        Fault::AgentKill(i) => c.crash_agent(i),
        Fault::ApiKill => c.crash_api(),
        Fault::EtcdRestart => c.crash_etcd(),
        Fault::PortBlock(i) => nft_in_node(c, i, &["-f", "-"], Some(BLOCK)),
    }
}

fn heal(c: &mut Cluster, f: Fault) {
    match f {
        Fault::AgentKill(i) => c.start_agent(i).expect("restarting the agent"),
        Fault::ApiKill => c.start_api().expect("restarting berth-api"),
        Fault::EtcdRestart => c.start_etcd().expect("restarting etcd"),
        Fault::PortBlock(i) => nft_in_node(c, i, &["delete", "table", "inet", "soak"], None),
    }
}

/// Every node ready, as berth-api reports it.
fn all_ready(c: &Cluster) -> bool {
    let out = c.cli(&["--output", "json", "node", "ls"]);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    (1..=NODES).all(|i| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["Name"] == format!("node{i}").as_str() && n["Status"] == "ready")
        })
    })
}

/// Polls the checker until it passes; the last error on timeout. Adds
/// each check's duration to `checks` (the measurement's resolution).
fn converge(c: &Cluster, limit: Duration, checks: &mut Vec<Duration>) -> Result<(), String> {
    let mut last = String::new();
    if wait_until(limit, || {
        let start = Instant::now();
        let r = consistent(c);
        checks.push(start.elapsed());
        match r {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    }) {
        Ok(())
    } else {
        Err(last)
    }
}

/// One healed fault, measured.
struct Sample {
    fault: Fault,
    outage: Duration,
    /// fault → the checker passing
    converged: Duration,
    /// heal → the checker passing
    after_heal: Duration,
}

#[derive(Default)]
struct Tally {
    ok: usize,
    /// failed while a fault was active (expected)
    failed_in_fault: usize,
    /// succeeded while a fault was active
    ok_in_fault: usize,
    /// failed with no fault active (unexpected), with their errors
    unexpected: Vec<String>,
    hung: usize,
    /// of `failed_in_fault`: "node not ready" right after a heal
    aftermath: usize,
    /// the errors of the operations that failed during faults
    fault_errors: Vec<String>,
    by_kind: BTreeMap<&'static str, (usize, usize)>,
}

impl Tally {
    fn record(&mut self, op: &Op, r: &Result<(), String>, in_fault: bool, m: &mut Model) {
        let e = self.by_kind.entry(op.kind()).or_default();
        match r {
            Ok(()) => {
                e.0 += 1;
                self.ok += 1;
                if in_fault {
                    self.ok_in_fault += 1;
                }
                op.apply(m);
            }
            Err(err) => {
                e.1 += 1;
                if err.starts_with("hung") {
                    self.hung += 1;
                }
                if in_fault {
                    self.failed_in_fault += 1;
                    self.fault_errors.push(format!("{:?}: {err}", op.args()));
                } else {
                    self.unexpected.push(format!("{:?}: {err}", op.args()));
                }
            }
        }
    }

    fn total(&self) -> usize {
        self.ok + self.failed_in_fault + self.unexpected.len()
    }
}

/// What kind of failure an operation's error is (during a fault).
fn failure_kind(err: &str) -> &'static str {
    if err.contains("cannot reach the API server") {
        "berth-api down: the CLI cannot connect"
    } else if err.contains("berth: etcd:") {
        "etcd unreachable from berth-api"
    } else if err.contains("is unavailable") {
        "agent unreachable from berth-api"
    } else if err.contains("broken pipe") || err.contains("stream closed") || err.contains("connection reset")
    {
        "berth-api killed mid-request"
    } else if err.contains("not ready") {
        "node not ready"
    } else if err.contains("try again when it is ready") {
        "sandbox still creating or removing"
    } else if err.contains("not found") || err.contains("already") || err.contains("active endpoints") {
        "stale plan: an earlier operation was interrupted"
    } else if err.contains("hung: still running") {
        "hung"
    } else {
        "other"
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Saves what a divergence left behind: the error, every key, every
/// node's links and overlay entries, every process's log.
fn save_evidence(c: &Cluster, cfg: &Config, n: usize, fault: Fault, err: &str) -> PathBuf {
    let dir = cfg.out.join(format!("divergence-{n}"));
    let _ = std::fs::create_dir_all(&dir);
    let mut text = format!("seed {} fault {fault:?}\n{err}\n\n--- etcd ---\n", cfg.seed);
    for (k, v) in c.etcd_dump() {
        let _ = writeln!(text, "{k}\n  {v}");
    }
    for i in 1..=NODES {
        for args in [
            &["ip", "-d", "link"][..],
            &["bridge", "fdb", "show"][..],
            &["ip", "neigh"][..],
            &["nft", "list", "ruleset"][..],
        ] {
            let out = in_ns(&c.node(i), args);
            let _ = writeln!(
                text,
                "--- node{i}: {args:?} ---\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    let _ = writeln!(text, "--- /run/netns (the cluster's) ---");
    for name in c.sandbox_namespaces() {
        let p = std::path::Path::new("/run/netns").join(&name);
        let nsfs =
            nix::sys::statfs::statfs(&p).is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or_default();
        let _ = writeln!(
            text,
            "{name}: {}, {len} bytes",
            if nsfs { "a namespace" } else { "a plain file" }
        );
    }
    let _ = std::fs::write(dir.join("state.txt"), text);
    copy_logs(c, &dir);
    dir
}

/// Copies every process's log (etcd, berth-api, the agents) into `dir`.
fn copy_logs(c: &Cluster, dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(c.dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                let _ = std::fs::copy(e.path(), dir.join(e.file_name()));
            }
        }
    }
}

#[test]
#[ignore = "the soak runs for many minutes: cargo test -p berth-tests --test soak -- --ignored --nocapture"]
fn soak_with_faults() {
    let cfg = Config::from_env();
    std::fs::create_dir_all(&cfg.out).expect("creating the report directory");
    eprintln!(
        "soak: seed {} (BERTH_SOAK_SEED={} replays it), {} operations, a fault every ~{} operations, periods {} s, report in {}",
        cfg.seed,
        cfg.seed,
        cfg.ops,
        cfg.fault_every,
        cfg.period,
        cfg.out.display()
    );
    let period = cfg.period.to_string();
    let opts = ClusterOptions {
        api_args: vec!["--repair-period".into(), period.clone()],
        agent_args: vec![vec!["--resync-period".into(), period]; NODES],
        ..Default::default()
    };
    let mut c = Cluster::start_with(NODES, opts).unwrap_or_else(|e| panic!("cluster: {e:?}"));
    c.cli_ok(&["network", "create", "user"]);
    c.cli_ok(&["network", "create", "-d", "overlay", "ov1"]);
    let mut rng = Rng(cfg.seed);
    let mut generator = Generator {
        rng: Rng(cfg.seed.rotate_left(17) | 1),
        next_sandbox: 0,
        next_network: 0,
        next_port: 20000,
    };
    let mut model = Model::from_state(&state(&c));
    let mut tally = Tally::default();
    let mut samples: Vec<Sample> = Vec::new();
    let mut divergences: Vec<String> = Vec::new();
    let mut checks: Vec<Duration> = Vec::new();
    let mut last_heal: Option<Instant> = None;
    let started = Instant::now();
    let mut next_progress = 50;

    'run: while tally.total() < cfg.ops {
        // Operations with no fault: each must succeed.
        let gap = rng.range(cfg.fault_every.div_ceil(2), cfg.fault_every + cfg.fault_every / 2);
        for _ in 0..gap {
            if tally.total() >= cfg.ops {
                break 'run;
            }
            let op = generator.next(&model);
            let r = Running::spawn(&c, op.clone()).wait();
            // A node whose lease lapsed while berth-api or etcd was down is
            // not ready for a moment after the heal, until its agent's next
            // heartbeat registers it again: part of the fault.
            let aftermath = matches!(&r, Err(e) if e.contains("is not ready"))
                && last_heal.is_some_and(|h| h.elapsed() < AFTERMATH);
            match &r {
                Err(e) if aftermath => {
                    tally.aftermath += 1;
                    eprintln!("soak: right after a heal: {:?}: {e}", op.args());
                }
                Err(e) => eprintln!("soak: unexpected failure of {:?}: {e}", op.args()),
                Ok(()) => {}
            }
            let failed = r.is_err();
            tally.record(&op, &r, aftermath, &mut model);
            if failed {
                // The model was wrong or something broke: believe etcd again.
                model = Model::from_state(&state(&c));
            }
        }
        // A fault, with one operation in flight and more while it lasts.
        let node = rng.range(1, NODES as u64) as usize;
        let fault = match rng.below(4) {
            0 => Fault::AgentKill(node),
            1 => Fault::ApiKill,
            2 => Fault::EtcdRestart,
            _ => Fault::PortBlock(node),
        };
        let outage = fault.outage(&mut rng);
        let mut running = Some(Running::spawn(&c, generator.next(&model)));
        let mut last_start = Instant::now();
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        inject(&mut c, fault);
        let t0 = Instant::now();
        while t0.elapsed() < outage {
            if let Some(r) = running.as_mut().and_then(Running::poll) {
                let op = running.take().map(|r| r.op.clone()).expect("running");
                tally.record(&op, &r, true, &mut model);
            }
            if running.is_none() && tally.total() < cfg.ops && last_start.elapsed() >= FAULT_OP_SPACING {
                running = Some(Running::spawn(&c, generator.next(&model)));
                last_start = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        heal(&mut c, fault);
        let healed = Instant::now();
        last_heal = Some(healed);
        if let Some(mut r) = running.take() {
            let res = r.wait();
            tally.record(&r.op, &res, true, &mut model);
        }
        match converge(&c, cfg.converge_limit, &mut checks) {
            Ok(()) => samples.push(Sample {
                fault,
                outage,
                converged: t0.elapsed(),
                after_heal: healed.elapsed(),
            }),
            Err(e) => {
                let dir = save_evidence(&c, &cfg, divergences.len() + 1, fault, &e);
                eprintln!(
                    "soak: DIVERGENCE after {fault:?} (seed {}): not consistent {:?} after healing: {e}; evidence in {}",
                    cfg.seed,
                    cfg.converge_limit,
                    dir.display()
                );
                divergences.push(format!("{fault:?}: {e}"));
                break 'run;
            }
        }
        if !wait_until(Duration::from_secs(60), || all_ready(&c)) {
            divergences.push(format!("{fault:?}: nodes not ready 60 s after healing"));
            save_evidence(&c, &cfg, divergences.len(), fault, "nodes not ready");
            break 'run;
        }
        model = Model::from_state(&state(&c));
        if tally.total() >= next_progress {
            eprintln!(
                "soak: {} operations, {} faults, {:.0} s",
                tally.total(),
                samples.len(),
                started.elapsed().as_secs_f64()
            );
            next_progress += 50;
        }
    }
    // The end: every fault healed; the cluster must be consistent.
    if divergences.is_empty()
        && let Err(e) = converge(&c, cfg.converge_limit, &mut checks)
    {
        let dir = save_evidence(&c, &cfg, divergences.len() + 1, Fault::ApiKill, &e);
        eprintln!("soak: DIVERGENCE at the end: {e}; evidence in {}", dir.display());
        divergences.push(format!("at the end: {e}"));
    }
    let run_time = started.elapsed();
    // Then everything is removed with no fault, and must leave nothing.
    let mut cleanup_failed = Vec::new();
    if divergences.is_empty() {
        let model = Model::from_state(&state(&c));
        for name in model.sandboxes.keys() {
            let out = c.cli(&["sandbox", "rm", name]);
            if !out.status.success() {
                cleanup_failed.push(format!("sandbox rm {name}: {}", berth_tests::stderr(&out)));
            }
        }
        for name in model.networks.keys().filter(|n| n.starts_with('d')) {
            let out = c.cli(&["network", "rm", name]);
            if !out.status.success() {
                cleanup_failed.push(format!("network rm {name}: {}", berth_tests::stderr(&out)));
            }
        }
        if let Err(e) = converge(&c, cfg.converge_limit, &mut checks) {
            cleanup_failed.push(format!("not consistent after removing everything: {e}"));
        }
        let s = state(&c);
        if !s.sandboxes.is_empty() || !s.endpoints.is_empty() || !s.ipam.is_empty() || !s.ports.is_empty() {
            cleanup_failed.push(format!(
                "left after removing everything: {} sandboxes, {} endpoints, {} addresses, {} ports",
                s.sandboxes.len(),
                s.endpoints.len(),
                s.ipam.len(),
                s.ports.len()
            ));
        }
    }
    let report = report(&cfg, &tally, &samples, &divergences, &mut checks, run_time);
    eprintln!("{report}");
    let _ = std::fs::write(cfg.out.join("report.md"), &report);
    let mut csv = String::from("fault,target,outage_ms,fault_to_converged_ms,heal_to_converged_ms\n");
    for s in &samples {
        let target = match s.fault {
            Fault::AgentKill(i) | Fault::PortBlock(i) => format!("node{i}"),
            Fault::ApiKill => "berth-api".into(),
            Fault::EtcdRestart => "etcd".into(),
        };
        let _ = writeln!(
            csv,
            "{},{target},{},{},{}",
            s.fault.kind(),
            s.outage.as_millis(),
            s.converged.as_millis(),
            s.after_heal.as_millis()
        );
    }
    let _ = std::fs::write(cfg.out.join("faults.csv"), csv);
    let _ = std::fs::write(cfg.out.join("fault-errors.txt"), tally.fault_errors.join("\n"));
    if std::env::var_os("BERTH_SOAK_KEEP_LOGS").is_some() {
        copy_logs(&c, &cfg.out);
    }
    assert!(
        divergences.is_empty(),
        "seed {} (BERTH_SOAK_SEED={} replays it): {} divergence(s): {divergences:?}",
        cfg.seed,
        cfg.seed,
        divergences.len()
    );
    assert_eq!(tally.hung, 0, "seed {}: operations hung", cfg.seed);
    assert!(
        tally.unexpected.is_empty(),
        "seed {}: operations failed with no fault active: {:?}",
        cfg.seed,
        tally.unexpected
    );
    assert!(cleanup_failed.is_empty(), "seed {}: {cleanup_failed:?}", cfg.seed);
    assert!(tally.total() >= cfg.ops);
}

/// The run's numbers as a Markdown report.
fn report(
    cfg: &Config,
    t: &Tally,
    samples: &[Sample],
    divergences: &[String],
    checks: &mut [Duration],
    run_time: Duration,
) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "## berth soak, seed {}\n", cfg.seed);
    let _ = writeln!(r, "| | |\n|---|---|");
    let _ = writeln!(
        r,
        "| operations | {} ({} succeeded, {} failed during or right after faults as expected, {} failed with no fault active, {} hung) |",
        t.total(),
        t.ok,
        t.failed_in_fault,
        t.unexpected.len(),
        t.hung
    );
    let _ = writeln!(
        r,
        "| operations while a fault was active | {} ({} of them succeeded) |",
        t.ok_in_fault + t.failed_in_fault - t.aftermath,
        t.ok_in_fault
    );
    let _ = writeln!(
        r,
        "| failed right after a heal: node not ready (its lease lapsed during the fault) | {} |",
        t.aftermath
    );
    let _ = writeln!(r, "| faults injected and healed | {} |", samples.len());
    let _ = writeln!(r, "| divergences after repair | {} |", divergences.len());
    let mut all: Vec<Duration> = samples.iter().map(|s| s.converged).collect();
    all.sort();
    let mut heal: Vec<Duration> = samples.iter().map(|s| s.after_heal).collect();
    heal.sort();
    let _ = writeln!(
        r,
        "| fault → converged | p50 {}, p99 {}, max {} |",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default())
    );
    let _ = writeln!(
        r,
        "| heal → converged | p50 {}, p99 {}, max {} |",
        ms(percentile(&heal, 50.0)),
        ms(percentile(&heal, 99.0)),
        ms(heal.last().copied().unwrap_or_default())
    );
    checks.sort();
    let _ = writeln!(
        r,
        "| one pass of the checker (the resolution) | p50 {}, {} passes |",
        ms(percentile(checks, 50.0)),
        checks.len()
    );
    let _ = writeln!(r, "| run time | {:.0} s |", run_time.as_secs_f64());
    let _ = writeln!(
        r,
        "| settings | 3 nodes, a fault every {}–{} operations, --resync-period {p} s, --repair-period {p} s |",
        cfg.fault_every.div_ceil(2),
        cfg.fault_every + cfg.fault_every / 2,
        p = cfg.period
    );
    let _ = writeln!(
        r,
        "\n| fault | injected | outage p50 | fault → converged p50 | p99 | max | heal → converged p50 | p99 |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|");
    for kind in KINDS {
        let of: Vec<&Sample> = samples.iter().filter(|s| s.fault.kind() == kind).collect();
        let mut conv: Vec<Duration> = of.iter().map(|s| s.converged).collect();
        conv.sort();
        let mut out: Vec<Duration> = of.iter().map(|s| s.outage).collect();
        out.sort();
        let mut h: Vec<Duration> = of.iter().map(|s| s.after_heal).collect();
        h.sort();
        let _ = writeln!(
            r,
            "| {kind} | {} | {} | {} | {} | {} | {} | {} |",
            of.len(),
            ms(percentile(&out, 50.0)),
            ms(percentile(&conv, 50.0)),
            ms(percentile(&conv, 99.0)),
            ms(conv.last().copied().unwrap_or_default()),
            ms(percentile(&h, 50.0)),
            ms(percentile(&h, 99.0)),
        );
    }
    let _ = writeln!(r, "\n| operation | succeeded | failed |\n|---|---|---|");
    for (kind, (ok, failed)) in &t.by_kind {
        let _ = writeln!(r, "| {kind} | {ok} | {failed} |");
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &t.fault_errors {
        *kinds.entry(failure_kind(e)).or_default() += 1;
    }
    let _ = writeln!(r, "\n| failures during faults | count |\n|---|---|");
    for (kind, n) in &kinds {
        let _ = writeln!(r, "| {kind} | {n} |");
    }
    for e in t.fault_errors.iter().filter(|e| failure_kind(e) == "other") {
        let _ = writeln!(r, "\nother failure during a fault: {e}");
    }
    for d in divergences {
        let _ = writeln!(r, "\ndivergence: {d}");
    }
    for u in &t.unexpected {
        let _ = writeln!(r, "\nfailed with no fault active: {u}");
    }
    r
}
