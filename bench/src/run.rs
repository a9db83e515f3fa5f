//! The benchmark run: brings up the lab, runs each phase (a failed phase is
//! recorded and the next one runs), and collects [`Results`].
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use berth_agent::kernel::netns;
use berth_proto::v1 as pb;
use berth_proto::v1::network_service_client::NetworkServiceClient;
use berth_proto::v1::sandbox_service_client::SandboxServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::cni::{self, CniNet};
use crate::config::Config;
use crate::icmp::Probe;
use crate::lab::{Lab, UL_HOST_ADDR};
use crate::netavark::{self, Netavark};
use crate::profile::Mark;
use crate::raw::RawFloor;
use crate::results::{LatencyRow, Results, RowStatus, ThroughputRow};
use crate::stats::Series;
use crate::util::ms;
use crate::{bulk, dataplane, etcdfloor, machine, profile};

/// Everything a phase needs.
pub struct Ctx {
    pub cfg: Config,
    pub bin_dir: PathBuf,
    pub lab: Lab,
    pub ch: Channel,
    pub res: Results,
    /// Whether overlay sandboxes reach across nodes (set by the reach phase).
    pub overlay_ok: Option<bool>,
}

impl Ctx {
    pub fn sandboxes(&self) -> SandboxServiceClient<Channel> {
        SandboxServiceClient::new(self.ch.clone())
    }

    pub fn networks(&self) -> NetworkServiceClient<Channel> {
        NetworkServiceClient::new(self.ch.clone())
    }
}

/// A create request for `name` on `node`.
pub fn create_req(name: &str, node: &str, network: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        node: node.into(),
        network: network.into(),
        ..Default::default()
    }
}

pub fn remove_req(name: &str) -> pb::RemoveSandboxRequest {
    pb::RemoveSandboxRequest {
        name_or_id: name.into(),
        force: false,
    }
}

/// The first endpoint's address of a created sandbox.
pub fn sandbox_ip(s: &pb::Sandbox) -> Result<Ipv4Addr> {
    let ep = s
        .endpoints
        .first()
        .with_context(|| format!("sandbox {} has no endpoint", s.name))?;
    ep.ip
        .parse()
        .with_context(|| format!("sandbox {} address {:?}", s.name, ep.ip))
}

/// Creates a sandbox and fails with the status message otherwise.
pub async fn create_ok(ctx: &Ctx, req: pb::CreateSandboxRequest) -> Result<pb::Sandbox> {
    let name = req.name.clone();
    let r = ctx
        .sandboxes()
        .create_sandbox(req)
        .await
        .map_err(|s| anyhow::anyhow!("create {name}: {:?}: {}", s.code(), s.message()))?;
    r.into_inner().sandbox.context("create answered no sandbox")
}

pub async fn run(cfg: Config, bin_dir: PathBuf) -> Result<Results> {
    let started = Instant::now();
    let mut res = Results {
        date: machine::date(),
        commit: machine::commit(),
        command: "bench/run".into(),
        machine: machine::describe(),
        samples: cfg.samples,
        warmup: cfg.warmup,
        ..Default::default()
    };
    let mut lab = Lab::start(2, &cfg.log, &bin_dir)
        .await
        .context("starting the lab")?;
    lab.keep_logs_in(&cfg.out.join("logs"));
    let ch = crate::client::unix_channel(&lab.socket).await?;
    res.memory = bulk::memory(&lab, None, 0);
    let mut ctx = Ctx {
        cfg: cfg.clone(),
        bin_dir,
        lab,
        ch,
        res,
        overlay_ok: None,
    };
    // One sandbox per node for the whole run: the bridge (berth0) and berth's
    // rules stay, so the rows measure sandboxes, not the first one's bridge.
    for i in 1..=ctx.lab.nodes {
        create_ok(
            &ctx,
            create_req(&format!("anchor{i}"), &format!("node{i}"), "bridge"),
        )
        .await?;
    }
    let phases: [(&str, Phase); 7] = [
        ("create", |c| Box::pin(phase_create(c))),
        ("ports", |c| Box::pin(phase_ports(c))),
        ("reach", |c| Box::pin(phase_reach(c))),
        ("overlay", |c| Box::pin(crate::overlay::phase_overlay(c))),
        ("dataplane", |c| Box::pin(phase_dataplane(c))),
        ("bulk", |c| Box::pin(bulk::phase_bulk(c))),
        ("curves", |c| Box::pin(crate::curves::phase_curves(c))),
    ];
    for (name, phase) in phases {
        if !cfg.phases.iter().any(|p| p == name) {
            continue;
        }
        eprintln!(
            "berth-bench: phase {name} ({:.0} s so far)",
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = phase(&mut ctx).await {
            eprintln!("berth-bench: phase {name} failed: {e:#}");
            ctx.res.failures.push(format!("phase {name}: {e:#}"));
        }
    }
    for i in 1..=ctx.lab.nodes {
        let _ = ctx
            .sandboxes()
            .remove_sandbox(remove_req(&format!("anchor{i}")))
            .await;
    }
    ctx.res.machine.loadavg_end = machine::loadavg();
    ctx.res.total_s = started.elapsed().as_secs_f64();
    Ok(ctx.res)
}

type Phase = for<'a> fn(&'a mut Ctx) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// Sequential create and remove: berth (gRPC CreateSandbox/RemoveSandbox on
/// node1's default bridge), CNI bridge ADD/DEL in fresh namespaces, and the
/// raw floor, interleaved per iteration so all three see the same noise.
async fn phase_create(ctx: &mut Ctx) -> Result<()> {
    let cni_ns = ctx.lab.ns("cni");
    ctx.lab.add_ns(&cni_ns)?;
    let raw_ns = ctx.lab.ns("raw");
    ctx.lab.add_ns(&raw_ns)?;
    let cni = CniNet::new(&cni_ns, "benchnet", "cni-bench0", "10.88.0.0/16", ctx.lab.dir());
    let raw = RawFloor::new(&raw_ns).await?;
    let (w, n) = (ctx.cfg.warmup, ctx.cfg.samples);
    let mut sb = ctx.sandboxes();
    let nv = NetavarkPeer::start(ctx, "benchnv", "nv-bench0", "10.90.0.0/16").await?;

    let mut ns_create = Vec::new();
    for i in 0..w + n {
        let name = ctx.lab.ns(&format!("k{i}"));
        let t = Instant::now();
        netns::create(&name, "berth:bench").await?;
        if i >= w {
            ns_create.push(ms(t.elapsed()));
        }
        if nv.is_some() {
            netns::create(&ctx.lab.ns(&format!("v{i}")), "berth:bench").await?;
        }
    }
    let (mut berth_c, mut cni_c, mut raw_c, mut nv_c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cni_results = Vec::new();
    let (mut create_marks, mut ids) = (Vec::new(), Vec::new());
    for i in 0..w + n {
        let name = format!("c{i}");
        let sent = SystemTime::now();
        let t = Instant::now();
        let r = sb.create_sandbox(create_req(&name, "node1", "bridge")).await;
        let d = ms(t.elapsed());
        let got = SystemTime::now();
        let id = r
            .map_err(|s| anyhow::anyhow!("create {name}: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .sandbox
            .map(|s| s.id)
            .unwrap_or_default();
        let added = cni
            .add(
                &format!("bench-c{i}"),
                &netns::path(&ctx.lab.ns(&format!("k{i}"))).display().to_string(),
            )
            .await?;
        let raw_d = raw.create(&ctx.lab.ns(&format!("r{i}")), i).await?;
        if let Some(nv) = &nv {
            let d = nv
                .net
                .setup(
                    &format!("bench-v{i}"),
                    &nv.path(ctx, i),
                    nv.net.address(i + 1),
                    None,
                )
                .await?;
            if i >= w {
                nv_c.push(ms(d));
            }
        }
        if i >= w {
            berth_c.push(d);
            cni_c.push(ms(added.elapsed));
            raw_c.push(ms(raw_d));
            create_marks.push(Mark {
                name,
                id: id.clone(),
                sent,
                got,
            });
        }
        ids.push(id);
        cni_results.push(added.result);
    }
    if cni::first_ip(&cni_results[0]).is_none() {
        bail!("CNI ADD answered no address: {}", cni_results[0]);
    }
    check_root_untouched()?;

    let (mut berth_r, mut cni_r, mut raw_r, mut raw_rv, mut nv_r) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut remove_marks = Vec::new();
    for i in 0..w + n {
        let name = format!("c{i}");
        let sent = SystemTime::now();
        let t = Instant::now();
        sb.remove_sandbox(remove_req(&name))
            .await
            .map_err(|s| anyhow::anyhow!("remove {name}: {}", s.message()))?;
        let d = ms(t.elapsed());
        if i >= w {
            remove_marks.push(Mark {
                name,
                id: ids[i].clone(),
                sent,
                got: SystemTime::now(),
            });
        }
        let k = ctx.lab.ns(&format!("k{i}"));
        let cd = cni
            .del(
                &format!("bench-c{i}"),
                &netns::path(&k).display().to_string(),
                &cni_results[i],
            )
            .await?;
        // Every other raw sandbox also has its host veth deleted at once, as the agent does.
        let r = ctx.lab.ns(&format!("r{i}"));
        let raw_d = if i % 2 == 0 {
            raw.remove(&r).await?
        } else {
            raw.remove_with_veth(&r, i).await?
        };
        netns::delete(&k).await?;
        if let Some(nv) = &nv {
            let d = nv
                .net
                .teardown(
                    &format!("bench-v{i}"),
                    &nv.path(ctx, i),
                    nv.net.address(i + 1),
                    None,
                )
                .await?;
            netns::delete(&ctx.lab.ns(&format!("v{i}"))).await?;
            if i >= w {
                nv_r.push(ms(d));
            }
        }
        if i >= w {
            berth_r.push(d);
            cni_r.push(ms(cd));
            if i % 2 == 0 { &mut raw_r } else { &mut raw_rv }.push(ms(raw_d));
        }
    }
    check_root_untouched()?;
    let nv_status = match nv {
        Some(nv) => {
            nv.stop(ctx).await?;
            None
        }
        None => Some(format!(
            "netavark not run: {} is missing (apt-get install netavark)",
            netavark::BINARY
        )),
    };
    let (etcd_get, etcd_txn) = etcdfloor::measure(&ctx.lab.ns("c"), w, n).await?;
    ctx.res.latency.push(LatencyRow {
        id: "create".into(),
        title: "sandbox create + attach to a bridge network".into(),
        status: RowStatus::Ok,
        berth: Some(Series::new(
            "berth CreateSandbox (gRPC, Unix socket, end to end)",
            berth_c,
        )),
        peers: vec![
            Series::new("CNI bridge + host-local ADD (ipMasq)", cni_c),
            Series::new(
                "netavark setup (bridge, address given by the caller, iptables)",
                nv_c,
            ),
            Series::new("raw floor: netns + veth with peer inside (netlink)", raw_c),
            Series::new("netns creation before each CNI ADD (not in ADD)", ns_create),
            Series::new(
                "etcd floor: one create-if-absent txn (from the control namespace)",
                etcd_txn,
            ),
            Series::new("etcd floor: one get", etcd_get),
        ],
        note: format!(
            "berth's time includes creating the namespace; the CNI ADD's and netavark's do not (their \
             namespaces were created beforehand, timed in the `netns creation` line), and netavark is \
             handed its address (podman allocates in-process).{}",
            nv_status.as_deref().map(|s| format!(" {s}.")).unwrap_or_default()
        ),
    });
    ctx.res.latency.push(LatencyRow {
        id: "remove".into(),
        title: "sandbox removal".into(),
        status: RowStatus::Ok,
        berth: Some(Series::new("berth RemoveSandbox (gRPC, end to end)", berth_r)),
        peers: vec![
            Series::new("CNI bridge DEL", cni_r),
            Series::new("netavark teardown", nv_r),
            Series::new("raw floor: netns delete (every other iteration)", raw_r),
            Series::new(
                "raw floor: netns delete, then delete the host veth at once (the other iterations)",
                raw_rv,
            ),
        ],
        note: "berth's removal deletes the namespace; CNI DEL leaves it to the runtime (not timed).".into(),
    });
    ctx.res.breakdown = profile::create_breakdown(&ctx.lab, &create_marks);
    ctx.res.breakdown_remove = profile::remove_breakdown(&ctx.lab, &remove_marks);
    Ok(())
}

/// netavark's network in its own lab node namespace, with one container
/// that stays attached the whole phase: netavark deletes its bridge with
/// the last container, and neither berth's nor CNI's bridge goes away, so
/// the keeper makes every measured setup find the bridge as the others do.
struct NetavarkPeer {
    net: Netavark,
}

impl NetavarkPeer {
    /// `None` when netavark is not installed (the row says so).
    async fn start(ctx: &mut Ctx, name: &str, bridge: &str, subnet: &str) -> Result<Option<Self>> {
        if !netavark::installed() {
            return Ok(None);
        }
        let node_ns = ctx.lab.ns(&format!("nv-{name}"));
        if !netns::exists(&node_ns) {
            ctx.lab.add_ns(&node_ns)?;
        }
        let net = Netavark::new(&node_ns, name, bridge, subnet.parse()?, ctx.lab.dir());
        let keeper = ctx.lab.ns(&format!("{name}-keep"));
        netns::create(&keeper, "berth:bench").await?;
        net.setup(
            "keeper",
            &netns::path(&keeper).display().to_string(),
            net.address(0),
            None,
        )
        .await?;
        Ok(Some(Self { net }))
    }

    /// The namespace path of container `i`.
    fn path(&self, ctx: &Ctx, i: usize) -> String {
        netns::path(&ctx.lab.ns(&format!("v{i}"))).display().to_string()
    }

    async fn stop(self, ctx: &Ctx) -> Result<()> {
        let keeper = ctx.lab.ns(&format!("{}-keep", self.net.name()));
        let path = netns::path(&keeper).display().to_string();
        self.net
            .teardown("keeper", &path, self.net.address(0), None)
            .await?;
        netns::delete(&keeper).await?;
        Ok(())
    }
}

/// The CNI plugins run in a lab namespace; make sure nothing of theirs
/// reached the root namespace.
fn check_root_untouched() -> Result<()> {
    let links = crate::util::run("ip", &["-o", "link", "show"])?;
    if links.contains("cni-bench") || links.contains("nv-bench") {
        bail!("a peer's bridge appeared in the root namespace");
    }
    if let Ok(rules) = crate::util::run("nft", &["list", "ruleset"])
        && (rules.contains("CNI-") || rules.contains("NETAVARK"))
    {
        bail!("a peer's rules appeared in the root namespace's nftables");
    }
    Ok(())
}

/// Create with one published port: berth's `-p` against CNI bridge + portmap.
async fn phase_ports(ctx: &mut Ctx) -> Result<()> {
    let cni_ns = ctx.lab.ns("cni");
    if !netns::exists(&cni_ns) {
        ctx.lab.add_ns(&cni_ns)?;
    }
    let cni = CniNet::new(&cni_ns, "benchpm", "cni-bench1", "10.89.0.0/16", ctx.lab.dir());
    let (w, n) = (ctx.cfg.warmup, ctx.cfg.samples);
    let mut sb = ctx.sandboxes();
    let nv = NetavarkPeer::start(ctx, "benchnvp", "nv-bench1", "10.91.0.0/16").await?;
    let port_req = |name: &str, port: u16| {
        let mut r = create_req(name, "node1", "bridge");
        r.ports = vec![pb::PortMapping {
            host_ip: String::new(),
            host_port: u32::from(port),
            container_port: 80,
            protocol: pb::PortProtocol::Tcp as i32,
        }];
        r
    };
    let status = match sb.create_sandbox(port_req("pcheck", 19999)).await {
        Ok(_) => {
            sb.remove_sandbox(remove_req("pcheck")).await?;
            RowStatus::Ok
        }
        Err(s) if s.code() == Code::Unimplemented => RowStatus::Pending(format!(
            "ports not implemented yet (CreateSandbox: {})",
            s.message()
        )),
        Err(s) => RowStatus::Failed(format!(
            "CreateSandbox with a port: {:?}: {}",
            s.code(),
            s.message()
        )),
    };
    let berth_ok = status == RowStatus::Ok;
    let names: Vec<String> = (0..w + n).map(|i| ctx.lab.ns(&format!("q{i}"))).collect();
    for (i, name) in names.iter().enumerate() {
        netns::create(name, "berth:bench").await?;
        if nv.is_some() {
            netns::create(&ctx.lab.ns(&format!("v{i}")), "berth:bench").await?;
        }
    }
    let (mut berth_c, mut cni_c, mut prev, mut nv_c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, ns) in names.iter().enumerate() {
        let port = 20000 + i as u16;
        if berth_ok {
            let t = Instant::now();
            sb.create_sandbox(port_req(&format!("p{i}"), port))
                .await
                .map_err(|s| anyhow::anyhow!("create p{i}: {}", s.message()))?;
            if i >= w {
                berth_c.push(ms(t.elapsed()));
            }
        }
        let added = cni
            .add_with_port(
                &format!("bench-p{i}"),
                &netns::path(ns).display().to_string(),
                port,
            )
            .await?;
        if i >= w {
            cni_c.push(ms(added.elapsed));
        }
        prev.push(added.result);
        if let Some(nv) = &nv {
            // Host ports of their own: netavark's DNAT lives in its own namespace anyway.
            let id = format!("bench-vp{i}");
            let d = nv
                .net
                .setup(&id, &nv.path(ctx, i), nv.net.address(i + 1), Some(port))
                .await?;
            if i >= w {
                nv_c.push(ms(d));
            }
        }
    }
    check_root_untouched()?;
    let (mut berth_r, mut cni_r, mut nv_r) = (Vec::new(), Vec::new(), Vec::new());
    for (i, ns) in names.iter().enumerate() {
        let port = 20000 + i as u16;
        if berth_ok {
            let t = Instant::now();
            sb.remove_sandbox(remove_req(&format!("p{i}")))
                .await
                .map_err(|s| anyhow::anyhow!("remove p{i}: {}", s.message()))?;
            if i >= w {
                berth_r.push(ms(t.elapsed()));
            }
        }
        let d = cni
            .del_with_port(
                &format!("bench-p{i}"),
                &netns::path(ns).display().to_string(),
                port,
                &prev[i],
            )
            .await?;
        if i >= w {
            cni_r.push(ms(d));
        }
        netns::delete(ns).await?;
        if let Some(nv) = &nv {
            let id = format!("bench-vp{i}");
            let d = nv
                .net
                .teardown(&id, &nv.path(ctx, i), nv.net.address(i + 1), Some(port))
                .await?;
            netns::delete(&ctx.lab.ns(&format!("v{i}"))).await?;
            if i >= w {
                nv_r.push(ms(d));
            }
        }
    }
    if let Some(nv) = nv {
        nv.stop(ctx).await?;
    }
    let berth = |name: &str, v: Vec<f64>| berth_ok.then(|| Series::new(name, v));
    ctx.res.latency.push(LatencyRow {
        id: "create_port".into(),
        title: "sandbox create with one published port".into(),
        status: status.clone(),
        berth: berth("berth CreateSandbox with -p (gRPC, end to end)", berth_c),
        peers: vec![
            Series::new("CNI bridge + portmap ADD (two execs, chained)", cni_c),
            Series::new("netavark setup with one port mapping (iptables)", nv_c),
        ],
        note: String::new(),
    });
    ctx.res.latency.push(LatencyRow {
        id: "remove_port".into(),
        title: "sandbox removal with one published port".into(),
        status,
        berth: berth("berth RemoveSandbox", berth_r),
        peers: vec![
            Series::new("CNI portmap + bridge DEL", cni_r),
            Series::new("netavark teardown with one port mapping", nv_r),
        ],
        note: String::new(),
    });
    Ok(())
}

/// Time from CreateSandbox returning to the first echo reply from the new
/// sandbox: on the same node's bridge (context), and across nodes on an overlay.
async fn phase_reach(ctx: &mut Ctx) -> Result<()> {
    let trials = ctx.cfg.reach_trials;
    // Same node, default bridge: explicit addresses, so the probe knows its target.
    create_ok(ctx, create_req("reach-a", "node1", "bridge")).await?;
    let from = ctx.lab.sandbox_ns("reach-a");
    let (bridge, bridge_failed) = reach_trials(ctx, &from, "bridge", "node1", trials, |k| {
        Ipv4Addr::new(172, 17, 200, 10 + k as u8)
    })
    .await?;
    ctx.sandboxes().remove_sandbox(remove_req("reach-a")).await?;
    let status = if bridge_failed > 0 {
        RowStatus::Failed(format!(
            "{bridge_failed} of {trials} trials got no reply within 5 s"
        ))
    } else {
        RowStatus::Ok
    };
    ctx.res.reach.push(LatencyRow {
        id: "reach_bridge".into(),
        title: "create returned → first ping reply, same node, bridge (context)".into(),
        status,
        berth: Some(Series::new("berth, sandbox on node1 pinged from node1", bridge)),
        peers: vec![],
        note: "ICMP echo every 1 ms from a raw socket in the pinging sandbox, started when create returns."
            .into(),
    });

    // Overlay: a sandbox on node1, new ones on node2.
    let overlay = async {
        let mut net = ctx.networks();
        net.create_network(pb::CreateNetworkRequest {
            name: "bench-ovl".into(),
            driver: pb::NetworkDriver::Overlay as i32,
            subnet: "10.213.0.0/24".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("overlay network create: {:?}: {}", s.code(), s.message()))?;
        create_ok(ctx, create_req("ovl-a", "node1", "bench-ovl")).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let row = |status, berth| LatencyRow {
        id: "reach_overlay".into(),
        title: "overlay: create returned on node2 → first ping reply from node1".into(),
        status,
        berth,
        peers: vec![],
        note: "target: within 50 ms".into(),
    };
    if let Err(e) = overlay {
        ctx.overlay_ok = Some(false);
        ctx.res.reach.push(row(
            RowStatus::Pending(format!("overlay sandboxes do not work yet ({e:#})")),
            None,
        ));
        return Ok(());
    }
    let from = ctx.lab.sandbox_ns("ovl-a");
    let (samples, failed) = reach_trials(ctx, &from, "bench-ovl", "node2", trials, |k| {
        Ipv4Addr::new(10, 213, 0, 100 + k as u8)
    })
    .await?;
    let _ = ctx.sandboxes().remove_sandbox(remove_req("ovl-a")).await;
    ctx.overlay_ok = Some(!samples.is_empty());
    let status = if samples.is_empty() {
        RowStatus::Pending(
            "overlay sandboxes are created but node2 is not reachable from node1 \
                            (no reply within 5 s): agents do not realise overlays yet"
                .into(),
        )
    } else if failed > 0 {
        RowStatus::Failed(format!(
            "{failed} of {} trials got no reply within 5 s",
            failed + samples.len()
        ))
    } else {
        RowStatus::Ok
    };
    let berth =
        (!samples.is_empty()).then(|| Series::new("berth overlay, node2 sandbox pinged from node1", samples));
    ctx.res.reach.push(row(status, berth));
    Ok(())
}

/// Creates `trials` sandboxes one by one (explicit address from `ip_of`) and
/// probes each from namespace `from` the moment its create returns. Returns
/// the reply delays and how many got no reply; stops after a first trial
/// without any reply (nothing will answer).
async fn reach_trials(
    ctx: &Ctx,
    from: &str,
    network: &str,
    node: &str,
    trials: usize,
    ip_of: impl Fn(usize) -> Ipv4Addr,
) -> Result<(Vec<f64>, usize)> {
    let (mut got, mut failed) = (Vec::new(), 0);
    let mut sb = ctx.sandboxes();
    for k in 0..trials {
        let ip = ip_of(k);
        let name = format!("reach-{network}-{k}");
        let probe = Probe::arm(from, ip, Duration::from_secs(5)).await?;
        let mut req = create_req(&name, node, network);
        req.ip = ip.to_string();
        let r = sb.create_sandbox(req).await;
        let t0 = Instant::now();
        if let Err(s) = r {
            drop(probe); // its thread sees the closed channel and ends
            bail!("create {name}: {:?}: {}", s.code(), s.message());
        }
        let reply = probe.go(t0).await?;
        sb.remove_sandbox(remove_req(&name)).await?;
        match reply {
            Some(d) => got.push(ms(d)),
            None if got.is_empty() && k == 0 => return Ok((got, 1)),
            None => failed += 1,
        }
    }
    Ok((got, failed))
}

/// iperf3 through berth's paths and the hand-built ones, alternating.
async fn phase_dataplane(ctx: &mut Ctx) -> Result<()> {
    let (runs, secs) = (ctx.cfg.iperf_runs, ctx.cfg.iperf_seconds);
    let a = create_ok(ctx, create_req("dp-a", "node1", "bridge")).await?;
    let b = create_ok(ctx, create_req("dp-b", "node1", "bridge")).await?;
    let (a_ns, b_ns) = (ctx.lab.sandbox_ns(&a.name), ctx.lab.sandbox_ns(&b.name));
    let b_ip = sandbox_ip(&b)?.to_string();
    let host = ctx.lab.ns("h");
    ctx.lab.attach(&host, "ulh", UL_HOST_ADDR)?;
    let hand = dataplane::hand_bridge(&mut ctx.lab).await?;
    let log = ctx.lab.log_path("iperf3");
    let mut servers = vec![
        dataplane::server(&b_ns, &b_ip, &log).await?,
        dataplane::server(&hand.b, hand.b_ip, &log).await?,
        dataplane::server(&host, UL_HOST_ADDR, &log).await?,
    ];
    // (row id, title, berth client ns, berth target, hand client ns, hand target)
    let mut paths: Vec<(&str, &str, String, String, String, String)> = vec![
        (
            "tput_bridge",
            "bridge: sandbox → sandbox, same node",
            a_ns.clone(),
            b_ip.clone(),
            hand.a.clone(),
            hand.b_ip.to_string(),
        ),
        (
            "tput_underlay",
            "bridge: sandbox on node1 → underlay host (masquerade)",
            a_ns.clone(),
            UL_HOST_ADDR.to_string(),
            hand.a.clone(),
            UL_HOST_ADDR.to_string(),
        ),
    ];
    let mut overlay_status = RowStatus::Pending("overlay sandboxes do not reach across nodes yet".into());
    if ctx.overlay_ok == Some(true) {
        let oa = create_ok(ctx, create_req("dp-oa", "node1", "bench-ovl")).await?;
        let ob = create_ok(ctx, create_req("dp-ob", "node2", "bench-ovl")).await?;
        let ob_ip = sandbox_ip(&ob)?.to_string();
        let ob_ns = ctx.lab.sandbox_ns(&ob.name);
        let ho = dataplane::hand_overlay(&mut ctx.lab).await?;
        servers.push(dataplane::server(&ob_ns, &ob_ip, &log).await?);
        servers.push(dataplane::server(&ho.b, ho.b_ip, &log).await?);
        paths.push((
            "tput_overlay",
            "overlay: sandbox on node1 → sandbox on node2",
            ctx.lab.sandbox_ns(&oa.name),
            ob_ip,
            ho.a.clone(),
            ho.b_ip.to_string(),
        ));
        overlay_status = RowStatus::Ok;
    }
    let mut samples: HashMap<&str, (Vec<f64>, Vec<f64>)> = HashMap::new();
    for run in 0..runs {
        for (id, _, bns, bip, hns, hip) in &paths {
            let e = samples.entry(id).or_default();
            // Alternate which goes first, so a drift in the machine's load hits both alike.
            if run % 2 == 0 {
                e.0.push(dataplane::client(bns, bip, secs).await?);
                e.1.push(dataplane::client(hns, hip, secs).await?);
            } else {
                e.1.push(dataplane::client(hns, hip, secs).await?);
                e.0.push(dataplane::client(bns, bip, secs).await?);
            }
        }
    }
    for (id, title, ..) in &paths {
        let (b, h) = samples.remove(id).unwrap_or_default();
        ctx.res.throughput.push(ThroughputRow {
            id: id.to_string(),
            title: title.to_string(),
            status: RowStatus::Ok,
            berth: Some(Series::new("berth", b)),
            hand: Some(Series::new("hand-built (ip, same kernel)", h)),
        });
    }
    if overlay_status != RowStatus::Ok {
        ctx.res.throughput.push(ThroughputRow {
            id: "tput_overlay".into(),
            title: "overlay: sandbox on node1 → sandbox on node2".into(),
            status: overlay_status,
            berth: None,
            hand: None,
        });
    }
    for s in servers.iter_mut() {
        s.stop();
    }
    let mut sb = ctx.sandboxes();
    for n in ["dp-a", "dp-b", "dp-oa", "dp-ob"] {
        let _ = sb.remove_sandbox(remove_req(n)).await;
    }
    Ok(())
}
