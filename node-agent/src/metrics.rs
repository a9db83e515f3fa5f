//! berth-agent's Prometheus metrics (docs/metrics.md): RPCs (the shared
//! layer of `berth_core::metrics`), reconcile passes, their duration and
//! actions (repairs) by object kind, kernel operation errors, objects per
//! kind, DNS queries. One process-wide set; every series carries the
//! node's name as label `node`.
use std::sync::LazyLock;
use std::time::Instant;

use berth_core::metrics::{LatencyFamily, RpcMetrics, latency_family};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::reconcile::action::ObjectKind;
use crate::reconcile::report::{ErrorKind, Results};

/// Every object kind, for series that exist from the start.
pub const KINDS: [ObjectKind; 9] = [
    ObjectKind::Bridge,
    ObjectKind::Vxlan,
    ObjectKind::Peers,
    ObjectKind::Firewall,
    ObjectKind::Namespace,
    ObjectKind::Endpoint,
    ObjectKind::EtcFiles,
    ObjectKind::Dns,
    ObjectKind::Command,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    /// `full` (the whole node) or `command` (one command's sandbox).
    pub scope: &'static str,
    /// `ok` or `error` (some object failed).
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub scope: &'static str,
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    /// `kernel` (netlink or nftables refused), `io`, `conflict`, `blocked`.
    pub error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: &'static str,
    /// `ok` or `failed` (its last outcome).
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// `udp` or `tcp`.
    pub proto: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    pub result: &'static str,
}

pub struct AgentMetrics {
    pub rpc: RpcMetrics,
    pub passes: Family<PassLabels, Counter>,
    pub batched_commands: Counter,
    pub pass_duration: LatencyFamily<ScopeLabels>,
    pub actions: Family<ActionLabels, Counter>,
    pub kernel_errors: Family<ErrorLabels, Counter>,
    pub objects: Family<ObjectLabels, Gauge>,
    pub dns_queries: Family<DnsLabels, Counter>,
    pub dns_forward: LatencyFamily<ForwardLabels>,
}

/// The process's metrics.
pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    rpc: RpcMetrics::default(),
    passes: Family::default(),
    batched_commands: Counter::default(),
    pass_duration: latency_family(),
    actions: Family::default(),
    kernel_errors: Family::default(),
    objects: Family::default(),
    dns_queries: Family::default(),
    dns_forward: latency_family(),
});

/// What a DNS query came to.
pub const DNS_RESULTS: [&str; 7] = [
    "answered",
    "nxdomain",
    "refused",
    "servfail",
    "formerr",
    "forwarded",
    "ignored",
];

/// A registry holding every metric of this agent, labelled `node=NODE`.
pub fn registry(node: &str) -> Registry {
    let m = &*METRICS;
    let mut r = Registry::with_labels(std::iter::once(("node".into(), node.to_string().into())));
    m.rpc.register(&mut r);
    r.register(
        "berth_reconcile_passes",
        "Reconcile passes, by scope (full, command) and result (ok, error)",
        m.passes.clone(),
    );
    r.register(
        "berth_reconcile_commands",
        "Commands (EnsureSandbox, RemoveSandbox, SetOverlayPeers) served by command passes; divided by berth_reconcile_passes{scope=\"command\"} it is the mean batch",
        m.batched_commands.clone(),
    );
    r.register_with_unit(
        "berth_reconcile_pass_duration",
        "Time of one reconcile pass (observe, plan, execute), by scope",
        Unit::Seconds,
        m.pass_duration.clone(),
    );
    r.register(
        "berth_reconcile_actions",
        "Actions executed by reconcile passes (in full passes: repairs), by scope, object kind and result",
        m.actions.clone(),
    );
    r.register(
        "berth_kernel_errors",
        "Failed kernel and file operations of reconcile actions, by object kind and error class",
        m.kernel_errors.clone(),
    );
    r.register(
        "berth_objects",
        "Objects this node's agent holds, by kind and last outcome (ok, failed)",
        m.objects.clone(),
    );
    r.register(
        "berth_dns_queries",
        "DNS queries from sandboxes to the embedded responder, by transport and result",
        m.dns_queries.clone(),
    );
    r.register_with_unit(
        "berth_dns_forward_duration",
        "Time to relay a forwarded DNS query to the upstreams, by result (ok, failed)",
        Unit::Seconds,
        m.dns_forward.clone(),
    );
    for scope in ["full", "command"] {
        let _ = m.pass_duration.get_or_create(&ScopeLabels { scope });
        for result in ["ok", "error"] {
            let _ = m.passes.get_or_create(&PassLabels { scope, result });
        }
    }
    for kind in KINDS {
        for error in ["kernel", "io", "conflict"] {
            let _ = m.kernel_errors.get_or_create(&ErrorLabels {
                kind: kind.as_str(),
                error,
            });
        }
        for state in ["ok", "failed"] {
            let _ = m.objects.get_or_create(&ObjectLabels {
                kind: kind.as_str(),
                state,
            });
        }
    }
    for result in ["ok", "failed"] {
        let _ = m.dns_forward.get_or_create(&ForwardLabels { result });
    }
    for proto in ["udp", "tcp"] {
        for result in DNS_RESULTS {
            let _ = m.dns_queries.get_or_create(&DnsLabels { proto, result });
        }
    }
    r
}

fn scope_name(full: bool) -> &'static str {
    if full { "full" } else { "command" }
}

/// Records the commands one command pass served.
pub fn batch(commands: usize) {
    METRICS.batched_commands.inc_by(commands as u64);
}

/// Records a finished pass.
pub fn pass(full: bool, ok: bool, start: Instant) {
    let scope = scope_name(full);
    let m = &*METRICS;
    m.passes
        .get_or_create(&PassLabels {
            scope,
            result: if ok { "ok" } else { "error" },
        })
        .inc();
    m.pass_duration
        .get_or_create(&ScopeLabels { scope })
        .observe(start.elapsed().as_secs_f64());
}

/// Records one executed action; a failure also counts as a kernel error.
pub fn action(full: bool, kind: ObjectKind, failed: Option<ErrorKind>) {
    let m = &*METRICS;
    m.actions
        .get_or_create(&ActionLabels {
            scope: scope_name(full),
            kind: kind.as_str(),
            result: if failed.is_some() { "error" } else { "ok" },
        })
        .inc();
    if let Some(e) = failed {
        let error = match e {
            ErrorKind::Kernel => "kernel",
            ErrorKind::Io => "io",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Blocked => "blocked",
        };
        m.kernel_errors
            .get_or_create(&ErrorLabels {
                kind: kind.as_str(),
                error,
            })
            .inc();
    }
}

/// Sets the object gauges from the per-object results.
pub fn objects(results: &Results) {
    let m = &*METRICS;
    // One walk over the results (a node holds several per sandbox).
    let mut counts = [(0i64, 0i64); KINDS.len()];
    for (k, o) in results.iter() {
        if let Some(i) = KINDS.iter().position(|kind| *kind == k.kind) {
            if o.result.is_ok() {
                counts[i].0 += 1;
            } else {
                counts[i].1 += 1;
            }
        }
    }
    for (kind, (ok, failed)) in KINDS.iter().zip(counts) {
        for (state, n) in [("ok", ok), ("failed", failed)] {
            m.objects
                .get_or_create(&ObjectLabels {
                    kind: kind.as_str(),
                    state,
                })
                .set(n);
        }
    }
}

/// Counts one DNS query (`result` one of [`DNS_RESULTS`]).
pub fn dns_query(tcp: bool, result: &'static str) {
    METRICS
        .dns_queries
        .get_or_create(&DnsLabels {
            proto: if tcp { "tcp" } else { "udp" },
            result,
        })
        .inc();
}

/// Records one forwarded DNS query.
pub fn dns_forward(ok: bool, start: Instant) {
    METRICS
        .dns_forward
        .get_or_create(&ForwardLabels {
            result: if ok { "ok" } else { "failed" },
        })
        .observe(start.elapsed().as_secs_f64());
}

/// The DNS result of a reply the responder sends itself (its RCODE).
pub fn dns_result_of(reply: &[u8]) -> &'static str {
    match reply.get(3).map(|b| b & 0x0f) {
        Some(0) => "answered",
        Some(1) => "formerr",
        Some(2) => "servfail",
        Some(3) => "nxdomain",
        Some(5) => "refused",
        _ => "servfail",
    }
}

/// The agent's own RPCs (others are counted as `unknown`).
pub fn known_rpc(path: &str) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    match service {
        "berth.v1.AgentService" => AGENT_METHODS.contains(&method),
        "grpc.health.v1.Health" => matches!(method, "Check" | "Watch"),
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            method == "ServerReflectionInfo"
        }
        _ => false,
    }
}

/// The methods of `berth.v1.AgentService` (a unit test compares them with the proto).
pub const AGENT_METHODS: [&str; 7] = [
    "EnsureSandbox",
    "RemoveSandbox",
    "SetOverlayPeers",
    "Sync",
    "Status",
    "Exec",
    "Diagnose",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_methods_match_the_proto() {
        let proto = include_str!("../../proto/berth/v1/agent.proto");
        let service = proto
            .split("service AgentService")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .expect("service AgentService in agent.proto");
        let methods: Vec<&str> = service
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        assert_eq!(methods, AGENT_METHODS);
        assert!(known_rpc("/berth.v1.AgentService/Exec"));
        assert!(!known_rpc("/berth.v1.AgentService/Nope"));
        assert!(!known_rpc("/berth.v1.SandboxService/Exec"));
    }

    #[test]
    fn dns_rcodes() {
        let mut reply = vec![0u8; 12];
        assert_eq!(dns_result_of(&reply), "answered");
        reply[3] = 0x83;
        assert_eq!(dns_result_of(&reply), "nxdomain");
        reply[3] = 0x05;
        assert_eq!(dns_result_of(&reply), "refused");
        assert_eq!(dns_result_of(&[]), "servfail");
    }
}
