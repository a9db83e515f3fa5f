//! berth-api's Prometheus metrics (docs/metrics.md): RPCs (the shared
//! layer of `berth_core::metrics`), etcd transactions and their lost
//! races, the repair loop, event watchers. One process-wide set; the
//! exporter serves it on `--metrics-listen`.
use std::sync::LazyLock;
use std::time::Instant;

use berth_core::metrics::{LatencyFamily, RpcMetrics, latency_family, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `committed`, `compare_failed` (a compare did not hold: a lost race
    /// or a taken name) or `error` (etcd did not answer).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

pub struct ApiMetrics {
    pub rpc: RpcMetrics,
    pub txn: LatencyFamily<OutcomeLabels>,
    pub txn_retries: Family<OpLabels, Counter>,
    pub repair_passes: Counter,
    pub repair_duration: Histogram,
    pub repair_actions: Family<ActionLabels, Counter>,
    pub event_watchers: Gauge,
    pub events_sent: Counter,
}

/// The process's metrics.
pub static METRICS: LazyLock<ApiMetrics> = LazyLock::new(|| ApiMetrics {
    rpc: RpcMetrics::default(),
    txn: latency_family(),
    txn_retries: Family::default(),
    repair_passes: Counter::default(),
    repair_duration: latency_histogram(),
    repair_actions: Family::default(),
    event_watchers: Gauge::default(),
    events_sent: Counter::default(),
});

/// The actions of the repair loop, all of them exported from the start (at 0).
pub const REPAIR_ACTIONS: [&str; 8] = [
    "removal_finished",
    "create_finished",
    "create_undone",
    "detach_finished",
    "node_removed",
    "node_resynced",
    "orphan_freed",
    "index_fixed",
];

/// The operations whose retries after a lost race are counted.
pub const RETRY_OPS: [&str; 5] = [
    "network_create",
    "address",
    "sandbox_gateway",
    "sandbox_host_port",
    "sandbox_remove",
];

/// A registry holding every metric of berth-api.
pub fn registry() -> Registry {
    let m = &*METRICS;
    let mut r = Registry::default();
    m.rpc.register(&mut r);
    r.register_with_unit(
        "berth_etcd_txn_duration",
        "Time of one etcd transaction, by outcome (committed, compare_failed, error)",
        Unit::Seconds,
        m.txn.clone(),
    );
    r.register(
        "berth_etcd_txn_retries",
        "Operations retried after losing a transaction race, by operation",
        m.txn_retries.clone(),
    );
    r.register(
        "berth_repair_passes",
        "Passes of the repair loop run by this replica (only the elected one runs them)",
        m.repair_passes.clone(),
    );
    r.register_with_unit(
        "berth_repair_pass_duration",
        "Time of one repair pass",
        Unit::Seconds,
        m.repair_duration.clone(),
    );
    r.register(
        "berth_repair_actions",
        "Repairs done by the repair loop, by action",
        m.repair_actions.clone(),
    );
    r.register(
        "berth_event_watchers",
        "Open berth events streams on this replica",
        m.event_watchers.clone(),
    );
    r.register(
        "berth_events_sent",
        "Events sent to berth events streams",
        m.events_sent.clone(),
    );
    for outcome in ["committed", "compare_failed", "error"] {
        let _ = m.txn.get_or_create(&OutcomeLabels { outcome });
    }
    for op in RETRY_OPS {
        let _ = m.txn_retries.get_or_create(&OpLabels { op });
    }
    for action in REPAIR_ACTIONS {
        let _ = m.repair_actions.get_or_create(&ActionLabels { action });
    }
    r
}

/// Records one etcd transaction that started at `start`.
pub fn txn(start: Instant, outcome: &'static str) {
    METRICS
        .txn
        .get_or_create(&OutcomeLabels { outcome })
        .observe(start.elapsed().as_secs_f64());
}

/// Counts a retry of `op` (one of [`RETRY_OPS`]) after a lost race.
pub fn retry(op: &'static str) {
    debug_assert!(RETRY_OPS.contains(&op));
    METRICS.txn_retries.get_or_create(&OpLabels { op }).inc();
}

/// Counts a repair `action` (one of [`REPAIR_ACTIONS`]).
pub fn repaired(action: &'static str) {
    debug_assert!(REPAIR_ACTIONS.contains(&action));
    METRICS
        .repair_actions
        .get_or_create(&ActionLabels { action })
        .inc();
}

/// Whether `path` is one of the RPCs berth-api serves (the others are
/// counted as `unknown`, so a caller cannot grow the label set).
pub fn known_rpc(path: &str) -> bool {
    crate::access::need(path).is_some()
}

/// Starts the exporter on `--metrics-listen` (nothing when empty).
pub async fn registry_started(listen: &str) -> anyhow::Result<()> {
    berth_core::metrics::start("--metrics-listen", listen, registry())
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}
