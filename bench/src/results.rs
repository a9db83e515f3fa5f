//! What one run measured, as written to the JSON file (raw samples included)
//! and rendered into the Markdown report.
use serde::{Deserialize, Serialize};

use crate::stats::Series;

/// Whether a row was measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum RowStatus {
    Ok,
    /// The feature is not in berth yet; the row's code is ready.
    Pending(String),
    /// The measurement itself failed.
    Failed(String),
}

impl RowStatus {
    pub fn label(&self) -> String {
        match self {
            RowStatus::Ok => "ok".into(),
            RowStatus::Pending(m) => format!("pending: {m}"),
            RowStatus::Failed(m) => format!("failed: {m}"),
        }
    }
}

/// A latency row: berth and its peers, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRow {
    pub id: String,
    pub title: String,
    pub status: RowStatus,
    pub berth: Option<Series>,
    /// The first is the peer the ratio is taken against.
    pub peers: Vec<Series>,
    pub note: String,
}

/// A throughput row: berth's path and the hand-built one, Gbit/s per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRow {
    pub id: String,
    pub title: String,
    pub status: RowStatus,
    pub berth: Option<Series>,
    pub hand: Option<Series>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Bulk {
    pub sandboxes: usize,
    pub nodes: usize,
    pub networks: Vec<String>,
    pub concurrency: usize,
    pub total_s: f64,
    pub per_second: f64,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// Same address twice on one node in one network, by the API's records.
    pub duplicate_addresses_records: usize,
    /// The same, reading `eth0` in every sandbox namespace.
    pub duplicate_addresses_kernel: usize,
    /// Sandboxes whose `eth0` address differs from the record (or is missing).
    pub kernel_mismatches: usize,
    pub create: Option<Series>,
    pub remove_total_s: f64,
    pub remove_per_second: f64,
    pub remove_errors: usize,
    pub remove: Option<Series>,
    pub leftover_namespaces: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restart {
    pub status: RowStatus,
    pub node: String,
    pub sandboxes_on_node: usize,
    /// SIGTERM until the old agent exited.
    pub stop_ms: f64,
    /// New process spawned until Status said converged with every sandbox.
    pub converge_ms: f64,
    /// The agent's own log line "full sync done", when found: its time after the spawn.
    pub full_sync_log_ms: Option<f64>,
    pub ping_interval_ms: f64,
    pub pings_sent: u64,
    pub pings_received: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    pub process: String,
    pub pid: u32,
    pub idle_kib: Option<u64>,
    pub loaded_kib: Option<u64>,
    pub sandboxes_loaded: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_gib: f64,
    pub os: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub etcd_fs: String,
    pub versions: Vec<(String, String)>,
}

/// What one system's overlay trials counted (issue #15's overlay targets).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct OverlayCounts {
    pub who: String,
    pub trials: usize,
    /// First reply later than [`crate::overlay::LATE_MS`] after the call returned.
    pub late_create: usize,
    pub late_connect: usize,
    /// No reply at all within the probe's timeout.
    pub lost_create: usize,
    pub lost_connect: usize,
    /// Trials whose departed address or MAC was still in node1's neighbour
    /// or FDB table when disconnect / removal returned, and 1 s later.
    pub stale_disconnect: usize,
    pub stale_disconnect_1s: usize,
    pub stale_remove: usize,
    pub stale_remove_1s: usize,
    /// The first stale entry found, as `ip -j` / `bridge -j` printed it.
    #[serde(default)]
    pub stale_example: String,
    /// Trials that failed (the peer's), and the first one's error.
    #[serde(default)]
    pub errors: usize,
    #[serde(default)]
    pub error_example: String,
}

/// Bulk create throughput at one number of calls in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcurrencyPoint {
    pub concurrency: usize,
    pub sandboxes: usize,
    pub per_second: f64,
    pub errors: usize,
}

/// Sequential create latency with `sandboxes` already in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizePoint {
    pub sandboxes: usize,
    pub create: Series,
}

/// At the curves' largest cluster size: memory, and node1's agent
/// restarted (a full sync of every sandbox on its node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AtSize {
    pub sandboxes: usize,
    pub on_node1: usize,
    pub memory: Vec<Memory>,
    /// node1's agent spawned → `Status` converged with all of them.
    pub full_sync_ms: Option<f64>,
}

/// The curves behind the charts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Curves {
    pub throughput: Vec<ConcurrencyPoint>,
    pub by_size: Vec<SizePoint>,
    #[serde(default)]
    pub at_max: Option<AtSize>,
}

/// One step of berth's create path, from the timestamps of the bench and the logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub series: Series,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Results {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub machine: Machine,
    pub samples: usize,
    pub warmup: usize,
    pub total_s: f64,
    pub latency: Vec<LatencyRow>,
    pub reach: Vec<LatencyRow>,
    pub bulk: Option<Bulk>,
    pub restart: Option<Restart>,
    pub throughput: Vec<ThroughputRow>,
    pub memory: Vec<Memory>,
    /// Overlay operations across two nodes, berth and the Docker peer.
    #[serde(default)]
    pub overlay: Vec<LatencyRow>,
    #[serde(default)]
    pub overlay_counts: Vec<OverlayCounts>,
    #[serde(default)]
    pub curves: Option<Curves>,
    pub breakdown: Vec<Step>,
    pub breakdown_remove: Vec<Step>,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}
