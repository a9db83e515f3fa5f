//! Overlay operations across two nodes, berth against Docker 20.10's own
//! multi-host overlay (the seed's setup, [`crate::dockerov`]), interleaved
//! trial by trial. Each trial, on node2:
//!
//! 1. create an endpoint on the overlay with a fresh address (berth
//!    CreateSandbox / `docker run -d`), timed; a probe in a sandbox (a
//!    container) on node1 starts pinging it the moment the call returns;
//! 2. make a second one on another overlay (untimed), then connect it to
//!    the first overlay, timed, probed the same way;
//! 3. disconnect it, timed, then read node1's neighbour and FDB tables
//!    (berth: the node's namespace; Docker: its overlay namespace) for the
//!    departed address and MAC — at once, and again 1 s later if found;
//! 4. remove the first endpoint, timed, and check node1 the same way.
//!
//! A first reply later than [`LATE_MS`] counts as late: Docker's misses are
//! its gossip grid (~200 ms) and ARP retries (~1 s), far beyond it.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_proto::v1 as pb;
use serde_json::Value;

use crate::dockerov::{self, DockerOverlay};
use crate::icmp::Probe;
use crate::results::{LatencyRow, OverlayCounts, RowStatus};
use crate::run::{Ctx, create_ok, create_req, remove_req};
use crate::stats::Series;
use crate::util::{ms, output_in};

/// A first ping reply later than this (ms after the call returned) is late.
pub const LATE_MS: f64 = 10.0;
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `k`-th address after `base`.
fn nth(base: Ipv4Addr, k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + k as u32)
}

/// Timed samples of one system, per operation.
#[derive(Default)]
struct Samples {
    create: Vec<f64>,
    connect: Vec<f64>,
    disconnect: Vec<f64>,
    remove: Vec<f64>,
    reach_create: Vec<f64>,
    reach_connect: Vec<f64>,
    counts: OverlayCounts,
}

impl Samples {
    /// The samples in the order of the phase's rows.
    fn series(&mut self) -> [Vec<f64>; 6] {
        [
            std::mem::take(&mut self.create),
            std::mem::take(&mut self.connect),
            std::mem::take(&mut self.disconnect),
            std::mem::take(&mut self.remove),
            std::mem::take(&mut self.reach_create),
            std::mem::take(&mut self.reach_connect),
        ]
    }

    fn reached(&mut self, got: Option<Duration>, connect: bool) {
        let c = &mut self.counts;
        let (series, late, lost) = if connect {
            (&mut self.reach_connect, &mut c.late_connect, &mut c.lost_connect)
        } else {
            (&mut self.reach_create, &mut c.late_create, &mut c.lost_create)
        };
        match got {
            Some(d) => {
                series.push(ms(d));
                if ms(d) > LATE_MS {
                    *late += 1;
                }
            }
            None => {
                *lost += 1;
                *late += 1;
            }
        }
    }
}

/// The first entry of `ip -j neigh` + `bridge -j fdb` output (JSON arrays,
/// one per line) that still names `ip` or `mac`.
fn naming(tables: &str, ip: &str, mac: &str) -> Option<String> {
    tables
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .find(|e| {
            e["dst"].as_str() == Some(ip)
                || (!mac.is_empty() && (e["mac"].as_str() == Some(mac) || e["lladdr"].as_str() == Some(mac)))
        })
        .map(|e| e.to_string())
}

async fn berth_tables(ctx: &Ctx) -> Result<String> {
    let node1 = ctx.lab.node(1);
    let neigh = output_in(&node1, "ip", &["-j", "neigh", "show"]).await?;
    let fdb = output_in(&node1, "bridge", &["-j", "fdb", "show"]).await?;
    Ok(format!("{}\n{}", neigh.trim(), fdb.trim()))
}

/// Counts a stale entry at once and, if found, again after 1 s; keeps the
/// first one found as an example for the report.
async fn stale<F, Fut>(read: F, ip: &str, mac: &str, counts: &mut OverlayCounts, removal: bool) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    let Some(entry) = naming(&read().await?, ip, mac) else {
        return Ok(());
    };
    let (now, later) = if removal {
        (&mut counts.stale_remove, &mut counts.stale_remove_1s)
    } else {
        (&mut counts.stale_disconnect, &mut counts.stale_disconnect_1s)
    };
    *now += 1;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if naming(&read().await?, ip, mac).is_some() {
        *later += 1;
    }
    if counts.stale_example.is_empty() {
        counts.stale_example = entry;
    }
    Ok(())
}

const BERTH_NET: &str = "bench-ov";
const BERTH_NET2: &str = "bench-ov2";

async fn berth_setup(ctx: &Ctx) -> Result<()> {
    let mut net = ctx.networks();
    for (name, subnet) in [(BERTH_NET, "10.216.0.0/16"), (BERTH_NET2, "10.217.0.0/16")] {
        net.create_network(pb::CreateNetworkRequest {
            name: name.into(),
            driver: pb::NetworkDriver::Overlay as i32,
            subnet: subnet.into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("overlay {name}: {:?}: {}", s.code(), s.message()))?;
    }
    // A sandbox on each overlay on node2 for the whole phase, as on node1:
    // the trials measure endpoints, not node2 making and removing its
    // bridges, VXLAN devices and gateway bridge each time.
    for (name, node, net, ip) in [
        ("ovp", "node1", BERTH_NET, "10.216.0.2"),
        ("ovq", "node2", BERTH_NET, "10.216.0.3"),
        ("ovq2", "node2", BERTH_NET2, "10.217.0.3"),
    ] {
        let mut req = create_req(name, node, net);
        req.ip = ip.into();
        create_ok(ctx, req).await?;
    }
    Ok(())
}

async fn berth_trial(ctx: &Ctx, k: usize, s: &mut Samples) -> Result<()> {
    let from = ctx.lab.sandbox_ns("ovp");
    let mut sb = ctx.sandboxes();
    let mut net = ctx.networks();
    let (ip_c, ip_n) = (nth([10, 216, 16, 1].into(), k), nth([10, 216, 64, 1].into(), k));
    let (c, n) = (format!("ovc{k}"), format!("ovn{k}"));

    let probe = Probe::arm(&from, ip_c, PROBE_TIMEOUT).await?;
    let mut req = create_req(&c, "node2", BERTH_NET);
    req.ip = ip_c.to_string();
    let t = Instant::now();
    let created = sb.create_sandbox(req).await;
    let took = t.elapsed();
    let t0 = Instant::now();
    let created = created.map_err(|e| anyhow::anyhow!("create {c}: {}", e.message()))?;
    s.reached(probe.go(t0).await?, false);
    s.create.push(ms(took));
    let mac_c = created
        .into_inner()
        .sandbox
        .and_then(|b| b.endpoints.first().map(|e| e.mac.clone()))
        .unwrap_or_default();

    let mut req = create_req(&n, "node2", BERTH_NET2);
    req.ip = nth([10, 217, 16, 1].into(), k).to_string();
    create_ok(ctx, req).await?;
    let probe = Probe::arm(&from, ip_n, PROBE_TIMEOUT).await?;
    let t = Instant::now();
    let connected = net
        .connect_network(pb::ConnectNetworkRequest {
            network: BERTH_NET.into(),
            sandbox: n.clone(),
            ip: ip_n.to_string(),
            ..Default::default()
        })
        .await;
    let took = t.elapsed();
    let t0 = Instant::now();
    let connected = connected.map_err(|e| anyhow::anyhow!("connect {n}: {}", e.message()))?;
    s.reached(probe.go(t0).await?, true);
    s.connect.push(ms(took));
    let mac_n = connected.into_inner().endpoint.map(|e| e.mac).unwrap_or_default();

    let t = Instant::now();
    net.disconnect_network(pb::DisconnectNetworkRequest {
        network: BERTH_NET.into(),
        sandbox: n.clone(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("disconnect {n}: {}", e.message()))?;
    s.disconnect.push(ms(t.elapsed()));
    stale(
        || berth_tables(ctx),
        &ip_n.to_string(),
        &mac_n,
        &mut s.counts,
        false,
    )
    .await?;

    let t = Instant::now();
    sb.remove_sandbox(remove_req(&c))
        .await
        .map_err(|e| anyhow::anyhow!("remove {c}: {}", e.message()))?;
    s.remove.push(ms(t.elapsed()));
    stale(
        || berth_tables(ctx),
        &ip_c.to_string(),
        &mac_c,
        &mut s.counts,
        true,
    )
    .await?;
    sb.remove_sandbox(remove_req(&n)).await?;
    s.counts.trials += 1;
    Ok(())
}

struct DockerSide {
    peer: DockerOverlay,
    net: String,
    net_id: String,
    net2: String,
    /// The pinging container's namespace on node1.
    from: String,
}

async fn docker_setup(ctx: &Ctx) -> Result<DockerSide> {
    let mut peer = DockerOverlay::start(&ctx.lab, 2).await?;
    let setup = async {
        let net_id = peer.network("bench-dov", "10.214.0.0/16").await?;
        peer.network("bench-dov2", "10.215.0.0/16").await?;
        let id = peer.nodes[0].run("dkp", "bench-dov", "10.214.0.2").await?;
        let (pid, _) = peer.nodes[0].pid_and_mac(&id, "bench-dov").await?;
        // As for berth: a container on each overlay on node2 throughout.
        peer.nodes[1].run("dkq", "bench-dov", "10.214.0.3").await?;
        peer.nodes[1].run("dkq2", "bench-dov2", "10.215.0.3").await?;
        Ok::<_, anyhow::Error>((net_id, format!("/proc/{pid}/ns/net")))
    }
    .await;
    match setup {
        Ok((net_id, from)) => Ok(DockerSide {
            peer,
            net: "bench-dov".into(),
            net_id,
            net2: "bench-dov2".into(),
            from,
        }),
        Err(e) => {
            peer.shutdown().await;
            Err(e)
        }
    }
}

async fn docker_trial(d: &DockerSide, k: usize, s: &mut Samples) -> Result<()> {
    let (n1, n2) = (&d.peer.nodes[0], &d.peer.nodes[1]);
    let (ip_c, ip_n) = (nth([10, 214, 16, 1].into(), k), nth([10, 214, 64, 1].into(), k));

    let probe = Probe::arm(&d.from, ip_c, PROBE_TIMEOUT).await?;
    let t = Instant::now();
    let run = n2.run(&format!("dkc{k}"), &d.net, &ip_c.to_string()).await;
    let took = t.elapsed();
    let t0 = Instant::now();
    let c = run?;
    s.reached(probe.go(t0).await?, false);
    s.create.push(ms(took));
    let (_, mac_c) = n2.pid_and_mac(&c, &d.net).await?;

    let n = n2
        .run(
            &format!("dkn{k}"),
            &d.net2,
            &nth([10, 215, 16, 1].into(), k).to_string(),
        )
        .await?;
    let probe = Probe::arm(&d.from, ip_n, PROBE_TIMEOUT).await?;
    let t = Instant::now();
    let connected = n2.connect(&d.net, &n, &ip_n.to_string()).await;
    let took = t.elapsed();
    let t0 = Instant::now();
    connected?;
    s.reached(probe.go(t0).await?, true);
    s.connect.push(ms(took));
    let (_, mac_n) = n2.pid_and_mac(&n, &d.net).await?;

    let t = Instant::now();
    n2.disconnect(&d.net, &n).await?;
    s.disconnect.push(ms(t.elapsed()));
    let read = || async { n1.overlay_tables(&d.net_id) };
    stale(read, &ip_n.to_string(), &mac_n, &mut s.counts, false).await?;

    let t = Instant::now();
    n2.remove(&c).await?;
    s.remove.push(ms(t.elapsed()));
    stale(read, &ip_c.to_string(), &mac_c, &mut s.counts, true).await?;
    n2.remove(&n).await?;
    s.counts.trials += 1;
    Ok(())
}

pub async fn phase_overlay(ctx: &mut Ctx) -> Result<()> {
    berth_setup(ctx).await.context("berth overlay set-up")?;
    let (mut berth, mut docker) = (Samples::default(), Samples::default());
    berth.counts.who = "berth".into();
    docker.counts.who = "Docker 20.10 overlay (cluster store etcd v2)".into();
    let mut docker_status = RowStatus::Ok;
    let mut side = None;
    if ctx.cfg.docker_trials > 0 {
        match dockerov::unavailable() {
            Some(why) => docker_status = RowStatus::Pending(why),
            None => match docker_setup(ctx).await {
                Ok(d) => side = Some(d),
                Err(e) => docker_status = RowStatus::Failed(format!("Docker peer set-up: {e:#}")),
            },
        }
    }
    let mut berth_status = RowStatus::Ok;
    for k in 0..ctx.cfg.overlay_trials.max(ctx.cfg.docker_trials) {
        if k < ctx.cfg.overlay_trials
            && berth_status == RowStatus::Ok
            && let Err(e) = berth_trial(ctx, k, &mut berth).await
        {
            berth_status = RowStatus::Failed(format!("trial {k}: {e:#}"));
        }
        // Docker's own failures (its cluster store calls fail now and then
        // under load) are counted, and the peer stops after three.
        if k < ctx.cfg.docker_trials
            && docker_status == RowStatus::Ok
            && let Some(d) = &side
            && let Err(e) = docker_trial(d, k, &mut docker).await
        {
            docker.counts.errors += 1;
            if docker.counts.error_example.is_empty() {
                docker.counts.error_example = format!("trial {k}: {e:#}");
            }
            if docker.counts.errors >= 3 {
                docker_status = RowStatus::Failed(format!(
                    "3 trials failed, the first: {}",
                    docker.counts.error_example
                ));
            }
        }
    }
    if let Some(d) = side {
        d.peer.shutdown().await;
    }
    for name in ["ovp", "ovq", "ovq2"] {
        let _ = ctx.sandboxes().remove_sandbox(remove_req(name)).await;
    }
    for name in [BERTH_NET, BERTH_NET2] {
        let _ = ctx
            .networks()
            .remove_network(pb::RemoveNetworkRequest {
                name_or_id: name.into(),
            })
            .await;
    }

    let status = match (&berth_status, &docker_status) {
        (RowStatus::Ok, RowStatus::Ok) => RowStatus::Ok,
        (RowStatus::Ok, d) => match d {
            RowStatus::Pending(m) => RowStatus::Pending(format!("Docker peer: {m}")),
            RowStatus::Failed(m) => RowStatus::Failed(format!("Docker peer: {m}")),
            RowStatus::Ok => RowStatus::Ok,
        },
        (b, _) => b.clone(),
    };
    let ops = [
        (
            "ov_create",
            "overlay: create on node2",
            "berth CreateSandbox / docker run -d (create + start, Engine API)",
        ),
        (
            "ov_connect",
            "overlay: connect a node2 endpoint",
            "ConnectNetwork / POST /networks/NET/connect",
        ),
        (
            "ov_disconnect",
            "overlay: disconnect it",
            "DisconnectNetwork / POST /networks/NET/disconnect",
        ),
        (
            "ov_remove",
            "overlay: remove the created endpoint",
            "RemoveSandbox / DELETE /containers/ID?force=1 (docker rm -f)",
        ),
        (
            "ov_reach_create",
            "overlay: create returned → first ping reply from node1",
            "ICMP echo every 1 ms from a raw socket in a node1 sandbox / container",
        ),
        (
            "ov_reach_connect",
            "overlay: connect returned → first ping reply from node1",
            "as above",
        ),
    ];
    let (b, d) = (berth.series(), docker.series());
    for (((id, title, note), b), d) in ops.into_iter().zip(b).zip(d) {
        ctx.res.overlay.push(LatencyRow {
            id: id.into(),
            title: title.into(),
            status: status.clone(),
            berth: (!b.is_empty()).then(|| Series::new("berth", b)),
            peers: if d.is_empty() {
                vec![]
            } else {
                vec![Series::new("Docker 20.10 overlay", d)]
            },
            note: note.into(),
        });
    }
    ctx.res.overlay_counts.push(berth.counts);
    if side_ran(&docker) {
        ctx.res.overlay_counts.push(docker.counts);
    }
    if let RowStatus::Failed(m) = &berth_status {
        anyhow::bail!("{m}");
    }
    Ok(())
}

fn side_ran(s: &Samples) -> bool {
    s.counts.trials > 0
}
