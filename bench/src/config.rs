//! berth-bench's flags, each with a `BERTH_BENCH_*` environment variable.
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "berth-bench",
    about = "benchmarks berth against its peers in a lab of network namespaces"
)]
pub struct Config {
    /// Where the report (benchmarks.md, benchmarks.json) and the lab's logs go.
    #[arg(long, env = "BERTH_BENCH_OUT", default_value = "bench-out")]
    pub out: PathBuf,
    /// Measured iterations of each sequential row.
    #[arg(long, env = "BERTH_BENCH_SAMPLES", default_value_t = 200)]
    pub samples: usize,
    /// Unmeasured iterations before them.
    #[arg(long, env = "BERTH_BENCH_WARMUP", default_value_t = 10)]
    pub warmup: usize,
    /// Sandboxes in the bulk phase (over two nodes).
    #[arg(long, env = "BERTH_BENCH_BULK", default_value_t = 1000)]
    pub bulk: usize,
    /// Calls in flight in the bulk phase.
    #[arg(long, env = "BERTH_BENCH_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Trials of the reachability rows.
    #[arg(long, env = "BERTH_BENCH_REACH_TRIALS", default_value_t = 20)]
    pub reach_trials: usize,
    /// Trials of berth's overlay phase (create, connect, disconnect, removal across nodes).
    #[arg(long, env = "BERTH_BENCH_OVERLAY_TRIALS", default_value_t = 200)]
    pub overlay_trials: usize,
    /// Trials of the Docker 20.10 overlay peer in the same phase (0: skip it).
    #[arg(long, env = "BERTH_BENCH_DOCKER_TRIALS", default_value_t = 30)]
    pub docker_trials: usize,
    /// Sandboxes per point of the throughput-against-concurrency curve.
    #[arg(long, env = "BERTH_BENCH_CURVE_BATCH", default_value_t = 200)]
    pub curve_batch: usize,
    /// Cluster sizes (sandboxes present) at which create latency is sampled, comma separated.
    #[arg(
        long,
        env = "BERTH_BENCH_CURVE_SIZES",
        value_delimiter = ',',
        default_value = "0,1000,2000,4000"
    )]
    pub curve_sizes: Vec<usize>,
    /// iperf3 runs per path and side.
    #[arg(long, env = "BERTH_BENCH_IPERF_RUNS", default_value_t = 5)]
    pub iperf_runs: u32,
    /// Seconds per iperf3 run.
    #[arg(long, env = "BERTH_BENCH_IPERF_SECONDS", default_value_t = 5)]
    pub iperf_seconds: u32,
    /// Log filter for berth-api and the agents (the default is theirs).
    #[arg(long, env = "BERTH_BENCH_LOG", default_value = "info")]
    pub log: String,
    /// Where berth-api and berth-agent are (default: beside this binary).
    #[arg(long, env = "BERTH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Phases to run, comma separated.
    #[arg(
        long,
        env = "BERTH_BENCH_PHASES",
        value_delimiter = ',',
        default_value = "create,ports,reach,overlay,dataplane,bulk,curves"
    )]
    pub phases: Vec<String>,
    /// Only render the Markdown again from an earlier run's JSON (no lab, no root needed).
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
    /// A short smoke run: 20 samples, 100 bulk sandboxes, 1 × 2 s iperf3 runs.
    #[arg(long)]
    pub quick: bool,
}

impl Config {
    pub fn effective(mut self) -> Self {
        if self.quick {
            self.samples = self.samples.min(20);
            self.warmup = self.warmup.min(3);
            self.bulk = self.bulk.min(100);
            self.reach_trials = self.reach_trials.min(5);
            self.overlay_trials = self.overlay_trials.min(10);
            self.docker_trials = self.docker_trials.min(3);
            self.curve_batch = self.curve_batch.min(20);
            self.curve_sizes = vec![0, 40];
            self.iperf_runs = 1;
            self.iperf_seconds = self.iperf_seconds.min(2);
        }
        self
    }
}
