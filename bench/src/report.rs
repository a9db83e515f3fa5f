//! The Markdown report (and the JSON file beside it) from one run's [`Results`].
use std::fmt::Write;

use crate::results::{LatencyRow, Results, RowStatus};
use crate::stats::Summary;

fn f(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "–".into()
    } else {
        format!("{:.3}", a / b)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn summary_cells(s: &Summary) -> String {
    format!("{} | {} | {} | {}", s.n, f(s.p50), f(s.p99), f(s.mean))
}

/// A target: what was measured, the limit, and whether it held.
pub struct Target {
    pub what: String,
    pub measured: String,
    pub limit: String,
    pub met: Option<bool>,
    pub why: String,
}

fn row<'a>(rows: &'a [LatencyRow], id: &str) -> Option<&'a LatencyRow> {
    rows.iter().find(|r| r.id == id)
}

/// The p50 of the series of row `id` whose label starts with `prefix`
/// (`"berth"` for berth's own series), when it was measured.
fn p50_of(rows: &[LatencyRow], id: &str, prefix: &str) -> Option<f64> {
    let row = row(rows, id)?;
    let series = if prefix == "berth" {
        row.berth.as_ref()
    } else {
        row.peers.iter().find(|p| p.name.starts_with(prefix))
    }?;
    (series.summary.n > 0).then_some(series.summary.p50)
}

fn unmeasured(what: &str, limit: &str, why: &str) -> Target {
    Target {
        what: what.into(),
        measured: why.into(),
        limit: limit.into(),
        met: None,
        why: String::new(),
    }
}

/// Issue #15's targets, each a ratio of two series measured in this run.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    // berth's p50 of row `a` over the p50 of series `b_prefix` of row `b`.
    let ratio_target = |what: &str, a: (&str, &str), b: (&str, &str), limit: f64| match (
        p50_of(&r.latency, a.0, a.1),
        p50_of(&r.latency, b.0, b.1),
    ) {
        (Some(x), Some(y)) => {
            let q = x / y;
            Target {
                what: what.into(),
                measured: format!("{} / {} ms = {q:.3}", f(x), f(y)),
                limit: format!("≤ {limit}"),
                met: Some(q <= limit),
                why: String::new(),
            }
        }
        _ => unmeasured(what, &format!("≤ {limit}"), "not measured in this run"),
    };
    out.push(ratio_target(
        "create p50 / raw floor p50",
        ("create", "berth"),
        ("create", "raw floor"),
        1.3,
    ));
    out.push(ratio_target(
        "create p50 / netavark setup p50",
        ("create", "berth"),
        ("create", "netavark"),
        0.5,
    ));
    out.push(ratio_target(
        "removal p50 / raw floor p50 (netns and host veth deleted)",
        ("remove", "berth"),
        ("remove", "raw floor: netns delete, then"),
        1.3,
    ));
    out.push(ratio_target(
        "create with one published port p50 / plain create p50",
        ("create_port", "berth"),
        ("create", "berth"),
        1.5,
    ));
    // Bulk: 3× the 169 sandboxes/s measured before issue #15, with 0 errors.
    const BULK_BEFORE: f64 = 169.0;
    out.push(match &r.bulk {
        Some(b) => Target {
            what: format!("bulk create throughput ({} nodes), errors", b.nodes),
            measured: format!("{:.0}/s, {} errors", b.per_second, b.errors),
            limit: format!("≥ {:.0}/s (3 × {BULK_BEFORE:.0}), 0 errors", 3.0 * BULK_BEFORE),
            met: Some(b.per_second >= 3.0 * BULK_BEFORE && b.errors == 0),
            why: String::new(),
        },
        None => unmeasured("bulk create throughput", "≥ 507/s, 0 errors", "not run"),
    });
    // First ping p99: the overlay phase's 200+ trials when run, else the reach phase's.
    let ov = row(&r.overlay, "ov_reach_create")
        .filter(|o| o.berth.is_some())
        .or_else(|| row(&r.reach, "reach_overlay"));
    out.push(match ov.and_then(|o| o.berth.as_ref()) {
        Some(b) => Target {
            what: "overlay: create returned → first ping reply, p99".into(),
            measured: format!(
                "p50 {} ms, p99 {} ms (n = {})",
                f(b.summary.p50),
                f(b.summary.p99),
                b.summary.n
            ),
            limit: "p99 ≤ 1 ms".into(),
            met: Some(b.summary.p99 <= 1.0),
            why: String::new(),
        },
        None => unmeasured(
            "overlay: create returned → first ping reply, p99",
            "p99 ≤ 1 ms",
            &ov.map(|o| o.status.label()).unwrap_or_else(|| "not run".into()),
        ),
    });
    out.extend(overlay_targets(r));
    out.extend(scale_targets(r));
    let sizes = r.curves.as_ref().map(|c| &c.by_size[..]).unwrap_or_default();
    let what = "create p50 in a full cluster / in an empty one";
    out.push(match (sizes.first(), sizes.last()) {
        (Some(a), Some(b))
            if b.sandboxes > a.sandboxes && a.create.summary.n > 0 && b.create.summary.n > 0 =>
        {
            let q = b.create.summary.p50 / a.create.summary.p50;
            Target {
                what: format!(
                    "{what} ({} vs {} sandboxes; the issue asks 10,000)",
                    b.sandboxes, a.sandboxes
                ),
                measured: format!(
                    "{} / {} ms = {q:.3}",
                    f(b.create.summary.p50),
                    f(a.create.summary.p50)
                ),
                limit: "≤ 1.2".into(),
                met: Some(q <= 1.2),
                why: String::new(),
            }
        }
        _ => unmeasured(what, "≤ 1.2", "curves not run"),
    });
    for (id, what) in [
        (
            "tput_bridge",
            "bridge throughput (sandbox → sandbox) / hand-built",
        ),
        (
            "tput_underlay",
            "bridge throughput (sandbox → underlay host) / hand-built",
        ),
        ("tput_overlay", "overlay throughput / hand-built"),
    ] {
        let t = r.throughput.iter().find(|t| t.id == id);
        out.push(match t.map(|t| (&t.berth, &t.hand, &t.status)) {
            Some((Some(b), Some(h), _)) => {
                let q = b.summary.mean / h.summary.mean;
                Target {
                    what: what.into(),
                    measured: format!("{} / {} Gbit/s = {q:.3}", f(b.summary.mean), f(h.summary.mean)),
                    limit: "≥ 0.97 (ratio of means)".into(),
                    met: Some(q >= 0.97),
                    why: String::new(),
                }
            }
            Some((_, _, status)) => unmeasured(what, "≥ 0.97", &status.label()),
            None => unmeasured(what, "≥ 0.97", "not run"),
        });
    }
    out
}

/// Issue #15's scale rows the curves phase measures (at its largest size,
/// which is below the issue's 10,000 sandboxes on 10 nodes).
fn scale_targets(r: &Results) -> Vec<Target> {
    let Some(m) = r.curves.as_ref().and_then(|c| c.at_max.as_ref()) else {
        return vec![unmeasured(
            "full sync, agent and API memory at size",
            "see issue #15",
            "curves not run",
        )];
    };
    let rss = |p: &str| m.memory.iter().find(|x| x.process == p).and_then(|x| x.idle_kib);
    let mut out = vec![match m.full_sync_ms {
        Some(v) => Target {
            what: format!(
                "one node's full sync (agent restart → converged), {} sandboxes on it",
                m.on_node1
            ),
            measured: format!("{} ms", f(v)),
            limit: "≤ 2 s with 2,000".into(),
            met: (m.on_node1 >= 2000).then_some(v <= 2000.0),
            why: if m.on_node1 < 2000 {
                " (fewer than 2,000)".into()
            } else {
                String::new()
            },
        },
        None => unmeasured("one node's full sync", "≤ 2 s with 2,000", "the restart failed"),
    }];
    if let Some(kib) = rss("berth-agent node1") {
        out.push(Target {
            what: format!("agent RSS with {} sandboxes on its node", m.on_node1),
            measured: mib(kib),
            limit: "≤ 50 MiB with 2,000".into(),
            met: (m.on_node1 >= 2000).then_some((kib as f64) / 1024.0 <= 50.0),
            why: if m.on_node1 < 2000 {
                " (fewer than 2,000)".into()
            } else {
                String::new()
            },
        });
    }
    if let Some(kib) = rss("berth-api") {
        out.push(Target {
            what: format!("API RSS with {} sandboxes in the cluster", m.sandboxes),
            measured: mib(kib),
            limit: "≤ 100 MiB with 10,000".into(),
            met: None,
            why: " (the bench's largest size is below 10,000: see the Scale section)".into(),
        });
    }
    out
}

/// The overlay phase's targets: late first pings, stale entries, and
/// connect / disconnect / removal against Docker's overlay.
fn overlay_targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let berth = r.overlay_counts.iter().find(|c| c.who == "berth");
    let docker = r.overlay_counts.iter().find(|c| c.who != "berth");
    let late_limit = format!("0 late (> {} ms) in ≥ 200 tries each", crate::overlay::LATE_MS);
    out.push(match berth {
        Some(b) => {
            let peer = docker
                .map(|d| {
                    format!(
                        " (Docker: {} and {} of {})",
                        d.late_create, d.late_connect, d.trials
                    )
                })
                .unwrap_or_default();
            Target {
                what: "overlay: late first pings after create, after connect".into(),
                measured: format!("{} and {} of {}{peer}", b.late_create, b.late_connect, b.trials),
                limit: late_limit,
                met: Some(b.trials >= 200 && b.late_create == 0 && b.late_connect == 0),
                why: String::new(),
            }
        }
        None => unmeasured("overlay: late first pings", &late_limit, "not run"),
    });
    out.push(match berth {
        Some(b) => {
            let peer = docker
                .map(|d| {
                    format!(
                        " (Docker: {} and {}, 1 s later {} and {})",
                        d.stale_disconnect, d.stale_remove, d.stale_disconnect_1s, d.stale_remove_1s
                    )
                })
                .unwrap_or_default();
            Target {
                what: "overlay: trials with a stale neighbour or FDB entry on node1 when disconnect, removal returned"
                    .into(),
                measured: format!(
                    "{} and {} of {} (1 s later {} and {}){peer}",
                    b.stale_disconnect, b.stale_remove, b.trials, b.stale_disconnect_1s, b.stale_remove_1s
                ),
                limit: "0".into(),
                met: Some(b.trials > 0 && b.stale_disconnect == 0 && b.stale_remove == 0),
                why: String::new(),
            }
        }
        None => unmeasured("overlay: stale entries after disconnect, removal", "0", "not run"),
    });
    for (id, what) in [
        ("ov_connect", "overlay connect p50 / Docker 20.10 overlay's"),
        ("ov_disconnect", "overlay disconnect p50 / Docker's"),
        ("ov_remove", "overlay removal p50 / Docker's (rm -f)"),
    ] {
        out.push(
            match (p50_of(&r.overlay, id, "berth"), p50_of(&r.overlay, id, "Docker")) {
                (Some(x), Some(y)) => Target {
                    what: what.into(),
                    measured: format!("{} / {} ms = {:.3}", f(x), f(y), x / y),
                    limit: "≤ 0.1".into(),
                    met: Some(x / y <= 0.1),
                    why: String::new(),
                },
                _ => unmeasured(
                    what,
                    "≤ 0.1",
                    &row(&r.overlay, id)
                        .map(|o| format!("Docker peer not measured ({})", o.status.label()))
                        .unwrap_or_else(|| "not run".into()),
                ),
            },
        );
    }
    out
}

fn latency_table(s: &mut String, rows: &[LatencyRow]) {
    s.push_str("| operation | who | n | p50 | p99 | mean | berth p50 ÷ this p50 |\n");
    s.push_str("|---|---|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let title = match &r.status {
            RowStatus::Ok => r.title.clone(),
            other => format!("{} — **{}**", r.title, other.label()),
        };
        match &r.berth {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| {title} | **{}** | {} | |",
                    b.name,
                    summary_cells(&b.summary)
                );
            }
            None => {
                let _ = writeln!(s, "| {title} | berth | – | – | – | – | |");
            }
        }
        for p in &r.peers {
            let q = r
                .berth
                .as_ref()
                .map(|b| ratio(b.summary.p50, p.summary.p50))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(s, "| | {} | {} | {q} |", p.name, summary_cells(&p.summary));
        }
    }
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(s, "\n*{}*: {}", r.title, r.note);
    }
}

pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    s.push_str("# berth benchmarks\n\n");
    let _ = writeln!(
        s,
        "Generated by `bench/run` (crate `berth-bench`) on {}, berth commit `{}`; the whole run took {:.0} s. \
         Raw samples: the JSON file written beside this report.\n",
        r.date, r.commit, r.total_s
    );
    let _ = writeln!(
        s,
        "**Machine**: {} cores (nproc) of {}, Linux {}, {:.1} GiB RAM, {}; etcd's data on {}. \
         This is a **2-core machine shared with other engineers' builds**, so absolute numbers are noisy: \
         each comparison is measured in the same run, interleaved per iteration (control plane) or \
         alternated per run (data plane). Load average at start {}, at end {}.\n",
        m.nproc, m.cpu, m.kernel, m.memory_gib, m.os, m.etcd_fs, m.loadavg_start, m.loadavg_end
    );
    if !m.versions.is_empty() {
        let v: Vec<String> = m.versions.iter().map(|(p, v)| format!("{p} {v}")).collect();
        let _ = writeln!(s, "**Peers and tools** (Debian packages): {}.\n", v.join(", "));
    }

    s.push_str("## Targets\n\n| target | measured | limit | result |\n|---|---|---|---|\n");
    for t in targets(r) {
        let res = match t.met {
            Some(true) => "met".to_string(),
            Some(false) => "**missed**".to_string(),
            None => "not measured".to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {res}{} |",
            t.what, t.measured, t.limit, t.why
        );
    }

    let _ = writeln!(
        s,
        "\n## Control plane: sequential latency (ms)\n\n{} samples per line after {} warm-up iterations; \
         berth, CNI and the raw floor interleaved in every iteration. p50 and p99 are nearest-rank.\n",
        r.samples, r.warmup
    );
    latency_table(&mut s, &r.latency);

    for (what, steps) in [("create", &r.breakdown), ("removal", &r.breakdown_remove)] {
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\n### Where berth's {what} time goes (ms)\n\nFrom the bench's clock around each measured call and \
             the microsecond timestamps of berth-api's and node1's agent's own info-level log lines for that \
             sandbox; each step ends at the log line named.\n\n| step | n | p50 | p99 | mean |\n|---|--:|--:|--:|--:|"
        );
        for st in steps {
            let _ = writeln!(s, "| {} | {} |", st.step, summary_cells(&st.series.summary));
        }
    }

    s.push_str("\n## Reachability after create (ms)\n\n");
    latency_table(&mut s, &r.reach);

    if !r.overlay.is_empty() {
        let _ = writeln!(
            s,
            "\n## Overlay across two nodes: berth and Docker 20.10's own overlay (ms)\n\n\
             Trial by trial, interleaved: on node2 a new endpoint is created, a second one connected, \
             disconnected, and the first removed, each with a fresh address; node1 pings each new endpoint \
             from the moment the call returns, and reads its neighbour and FDB tables after each departure. \
             Docker: one dockerd per node namespace with `--cluster-store etcd://` (the lab's etcd, v2 API) \
             and `--cluster-advertise`, busybox containers, every call on the Engine API's Unix socket.\n"
        );
        latency_table(&mut s, &r.overlay);
        s.push_str(
            "\n| who | trials | late first pings: create / connect | no reply in 3 s: create / connect | \
             stale on node1 at return: disconnect / removal | still stale 1 s later |\n|---|--:|--:|--:|--:|--:|\n",
        );
        for c in &r.overlay_counts {
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {} / {} | {} / {} | {} / {} |",
                c.who,
                c.trials,
                c.late_create,
                c.late_connect,
                c.lost_create,
                c.lost_connect,
                c.stale_disconnect,
                c.stale_remove,
                c.stale_disconnect_1s,
                c.stale_remove_1s
            );
        }
        let _ = writeln!(
            s,
            "\nLate: first reply more than {} ms after the call returned (lost ones count as late).",
            crate::overlay::LATE_MS
        );
        for c in r.overlay_counts.iter().filter(|c| !c.stale_example.is_empty()) {
            let _ = writeln!(s, "\nA stale entry ({}): `{}`", c.who, c.stale_example);
        }
        for c in r.overlay_counts.iter().filter(|c| c.errors > 0) {
            let _ = writeln!(
                s,
                "\n{} trials of {} failed and were left out; the first: `{}`",
                c.errors, c.who, c.error_example
            );
        }
    }

    if let Some(c) = &r.curves {
        s.push_str(
            "\n## Curves\n\nBridge sandboxes over both nodes and two networks. Charts (PNG, \
             drawn by `bench/charts.py` from the JSON): `create-vs-cluster-size.png`, \
             `bulk-vs-concurrency.png`, `berth-vs-peers.png`.\n\n\
             | calls in flight | sandboxes | created per second | errors |\n|--:|--:|--:|--:|\n",
        );
        for p in &c.throughput {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} |",
                p.concurrency, p.sandboxes, p.per_second, p.errors
            );
        }
        s.push_str("\n| sandboxes in the cluster | n | create p50 | p99 | mean |\n|--:|--:|--:|--:|--:|\n");
        for p in &c.by_size {
            let _ = writeln!(s, "| {} | {} |", p.sandboxes, summary_cells(&p.create.summary));
        }
        if let Some(m) = &c.at_max {
            let _ = writeln!(
                s,
                "\nAt {} sandboxes ({} on node1): node1's agent restarted, spawned → `Status` converged with \
                 all of them: {}; resident memory: {}.",
                m.sandboxes,
                m.on_node1,
                m.full_sync_ms
                    .map(|v| format!("{} ms", f(v)))
                    .unwrap_or_else(|| "failed".into()),
                m.memory
                    .iter()
                    .map(|x| format!(
                        "{} {}",
                        x.process,
                        x.idle_kib.map(mib).unwrap_or_else(|| "–".into())
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    if let Some(b) = &r.bulk {
        let _ = writeln!(
            s,
            "\n## Bulk: {} sandboxes over {} nodes and {} networks ({}), {} at a time\n",
            b.sandboxes,
            b.nodes,
            b.networks.len(),
            b.networks.join(", "),
            b.concurrency
        );
        s.push_str("| measure | value |\n|---|--:|\n");
        let _ = writeln!(s, "| create: total time | {:.2} s |", b.total_s);
        let _ = writeln!(s, "| create: throughput | {:.1} sandboxes/s |", b.per_second);
        let _ = writeln!(s, "| create: errors | {} |", b.errors);
        if let Some(c) = &b.create {
            let _ = writeln!(
                s,
                "| create latency under load p50 / p99 / mean | {} / {} / {} ms |",
                f(c.summary.p50),
                f(c.summary.p99),
                f(c.summary.mean)
            );
        }
        let _ = writeln!(
            s,
            "| duplicate addresses per node per network (records) | {} |",
            b.duplicate_addresses_records
        );
        let _ = writeln!(
            s,
            "| duplicate addresses per node per network (kernel, `eth0` of every sandbox) | {} |",
            b.duplicate_addresses_kernel
        );
        let _ = writeln!(
            s,
            "| sandboxes whose `eth0` differs from the record | {} |",
            b.kernel_mismatches
        );
        let _ = writeln!(s, "| remove: total time | {:.2} s |", b.remove_total_s);
        let _ = writeln!(
            s,
            "| remove: throughput | {:.1} sandboxes/s |",
            b.remove_per_second
        );
        let _ = writeln!(s, "| remove: errors | {} |", b.remove_errors);
        if let Some(c) = &b.remove {
            let _ = writeln!(
                s,
                "| remove latency under load p50 / p99 / mean | {} / {} / {} ms |",
                f(c.summary.p50),
                f(c.summary.p99),
                f(c.summary.mean)
            );
        }
        let _ = writeln!(
            s,
            "| sandbox namespaces left after removal | {} |",
            b.leftover_namespaces
        );
        for e in &b.error_samples {
            let _ = writeln!(s, "\nerror: `{e}`");
        }
    }

    if let Some(x) = &r.restart {
        let _ = writeln!(
            s,
            "\n## Agent restart with {} sandboxes on {}\n",
            x.sandboxes_on_node, x.node
        );
        if x.status != RowStatus::Ok {
            let _ = writeln!(s, "**{}**\n", x.status.label());
        }
        s.push_str("| measure | value |\n|---|--:|\n");
        let _ = writeln!(s, "| old agent: SIGTERM → exited | {} ms |", f(x.stop_ms));
        let _ = writeln!(
            s,
            "| new agent: spawned → `Status` converged with {} sandboxes | {} ms |",
            x.sandboxes_on_node,
            f(x.converge_ms)
        );
        if let Some(l) = x.full_sync_log_ms {
            let _ = writeln!(
                s,
                "| new agent: spawned → its log line \"full sync done\" | {} ms |",
                f(l)
            );
        }
        let _ = writeln!(
            s,
            "| ping every {} ms between two sandboxes on {} across the restart: sent / received / lost | {} / {} / {} |",
            x.ping_interval_ms,
            x.node,
            x.pings_sent,
            x.pings_received,
            x.pings_sent.saturating_sub(x.pings_received)
        );
    }

    s.push_str("\n## Data plane: iperf3 TCP throughput (Gbit/s)\n\n");
    s.push_str(
        "| path | berth runs | berth mean (p50) | hand-built runs | hand-built mean (p50) \
         | berth ÷ hand-built: of means (of p50s) |\n",
    );
    s.push_str("|---|---|--:|---|--:|--:|\n");
    for t in &r.throughput {
        match (&t.berth, &t.hand) {
            (Some(b), Some(h)) => {
                let runs = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ");
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ({}) | {} | {} ({}) | {} ({}) |",
                    t.title,
                    runs(&b.samples),
                    f(b.summary.mean),
                    f(b.summary.p50),
                    runs(&h.samples),
                    f(h.summary.mean),
                    f(h.summary.p50),
                    ratio(b.summary.mean, h.summary.mean),
                    ratio(b.summary.p50, h.summary.p50)
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "| {} — **{}** | – | – | – | – | – |",
                    t.title,
                    t.status.label()
                );
            }
        }
    }

    if !r.memory.is_empty() {
        s.push_str("\n## Resident memory (VmRSS from /proc/PID/status)\n\n");
        s.push_str("| process | idle (after start, 2 anchors) | with the bulk sandboxes |\n|---|--:|--:|\n");
        for m in &r.memory {
            let kib = |v: Option<u64>| v.map(mib).unwrap_or("–".into());
            let loaded = if m.loaded_kib.is_some() {
                format!(
                    "{} ({} sandboxes in the cluster)",
                    kib(m.loaded_kib),
                    m.sandboxes_loaded
                )
            } else {
                "–".into()
            };
            let _ = writeln!(s, "| {} | {} | {loaded} |", m.process, kib(m.idle_kib));
        }
    }

    s.push_str(METHOD);
    if !r.failures.is_empty() {
        s.push_str("\n## Failures in this run\n\n");
        for e in &r.failures {
            let _ = writeln!(s, "- `{}`", e.replace('`', "'").replace('\n', " "));
        }
    }
    s
}

const METHOD: &str = r#"
## How it is measured

- **Lab** (made by the harness, removed afterwards, also on failure): an underlay bridge in its own
  namespace; a control namespace with etcd (Debian's etcd-server, its own data directory) and berth-api;
  node namespaces `node1`, `node2` with a berth-agent each (`--netns`, info-level logs); further
  namespaces for the peers. Nothing is added to the root namespace; every process is stopped by PID.
- **berth create/remove**: gRPC `CreateSandbox` / `RemoveSandbox` from a client in the bench process
  over berth-api's Unix socket, one connection, sequential, on node1's default `bridge` network; the
  time is the call's round trip, so it includes validation, the etcd transaction, the agent's kernel
  work (namespace, veth with peer inside, address, route, `/etc/netns` files) and both gRPC hops.
  One sandbox per node stays for the whole run, so the bridge and berth's nftables table exist.
- **CNI**: `/usr/lib/cni/bridge` (+ `host-local`, `ipMasq: true`, `isGateway: true`) exec'd with the
  CNI environment and the configuration on stdin, from a thread inside a dedicated lab node namespace
  (so its bridge, host veths and iptables rules land there — checked after each phase — and never in
  the root namespace); host-local's `dataDir` is in the lab's directory. Each ADD gets a fresh
  namespace created beforehand (timed on its own line, not in the ADD); DEL is passed the ADD's result
  as `prevResult`, as libcni does. The port row chains `portmap` after `bridge` (two execs, summed),
  deleting in reverse order.
- **Raw floor**: berth-agent's own kernel layer called in-process in a lab node namespace: named
  namespace (lo up), a netlink socket inside it, one RTM_NEWLINK creating the veth with its peer born
  inside and the host end on a bridge, then peer up, address and default route. Removal: namespace delete.
- **Overlay** (`overlay` phase): berth and Docker 20.10's own overlay (one dockerd per node namespace,
  own mount and UTS namespace, `--cluster-store etcd://` on the lab's etcd with its v2 API,
  `--cluster-advertise`; busybox containers; every call on the Engine API's Unix socket, so no CLI
  process is timed), trial by trial interleaved; first pings from a sandbox / container on node1,
  neighbour and FDB tables of node1 (berth: the node namespace; Docker: its overlay namespace) read
  after each departure.
- **Curves** (`curves` phase): creates of bridge sandboxes over both nodes at 1 to 32 calls in flight
  (each batch removed after), then sequential creates on node1 with the cluster filled to each size
  of `--curve-sizes`.
- **Reachability**: a raw ICMP socket inside the pinging sandbox sends an echo every 1 ms starting
  when `CreateSandbox` for the target (with an explicit address) returns; the time is to the first reply.
- **Bulk**: `CreateSandbox` with 16 calls in flight over one HTTP/2 connection; duplicates are
  checked per node per network in the records (`ListSandboxes`) and in the kernel (`eth0` of every
  sandbox namespace, over netlink).
- **Agent restart**: `ping -i 0.01` between two bulk sandboxes on node1; the agent gets SIGTERM, is
  started again, and `AgentService.Status` is polled (every 5 ms, from the control namespace) until it
  reports `converged` with every sandbox of the node.
- **Data plane**: iperf3 (one TCP stream, `-t` per run), berth's paths vs the same topology made with
  `ip` in lab namespaces on the same kernel (bridge + veth pairs, MTU 1500; the node masquerades the
  bridge subnet with one nftables rule, as berth's table does; for overlays, VXLAN with learning off,
  a static all-zero FDB entry and MTU 1450). Runs alternate berth/hand-built.
"#;
