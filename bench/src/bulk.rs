//! Bulk: many sandboxes over two nodes and two networks, a fixed number at a
//! time; then duplicate-address checks (records and kernel), resident
//! memory at that size, an agent restart under a ping flow, and the bulk
//! removal.
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use berth_agent::kernel::{link, netns};
use berth_proto::v1 as pb;
use berth_proto::v1::agent_service_client::AgentServiceClient;
use futures::StreamExt;

use crate::lab::{AGENT_PORT, Lab, node_addr};
use crate::profile;
use crate::results::{Bulk, Memory, Restart, RowStatus};
use crate::run::{Ctx, create_req, remove_req};
use crate::stats::Series;
use crate::util::{ms, spawn_in};

const NETWORKS: [&str; 2] = ["bulk-a", "bulk-b"];

/// Name, node and network of bulk sandbox `i`: nodes alternate, and each
/// node gets both networks alike.
fn spec(i: usize) -> (String, String, &'static str) {
    (
        format!("b{i:04}"),
        format!("node{}", 1 + i % 2),
        NETWORKS[(i / 2) % 2],
    )
}

pub async fn phase_bulk(ctx: &mut Ctx) -> Result<()> {
    let (n, conc) = (ctx.cfg.bulk, ctx.cfg.concurrency);
    let mut net = ctx.networks();
    for name in NETWORKS {
        net.create_network(pb::CreateNetworkRequest {
            name: name.into(),
            driver: pb::NetworkDriver::Bridge as i32,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("network create {name}: {}", s.message()))?;
    }
    let sb = ctx.sandboxes();
    let start = Instant::now();
    let created: Vec<(f64, Result<(), String>)> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = sb.clone();
            async move {
                let (name, node, network) = spec(i);
                let t = Instant::now();
                let r = c.create_sandbox(create_req(&name, &node, network)).await;
                (
                    ms(t.elapsed()),
                    r.map(drop)
                        .map_err(|s| format!("{name}: {:?}: {}", s.code(), s.message())),
                )
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    let total = start.elapsed().as_secs_f64();
    let mut bulk = Bulk {
        sandboxes: n,
        nodes: ctx.lab.nodes,
        networks: NETWORKS.iter().map(|s| s.to_string()).collect(),
        concurrency: conc,
        total_s: total,
        ..Default::default()
    };
    let mut lat = Vec::new();
    for (d, r) in created {
        match r {
            Ok(()) => lat.push(d),
            Err(e) => {
                bulk.errors += 1;
                if bulk.error_samples.len() < 5 {
                    bulk.error_samples.push(e);
                }
            }
        }
    }
    bulk.per_second = lat.len() as f64 / total;
    bulk.create = Some(Series::new("CreateSandbox under concurrency", lat));

    // Every page (a page holds at most 1000).
    let mut list = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ctx
            .sandboxes()
            .list_sandboxes(pb::ListSandboxesRequest {
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        list.extend(page.sandboxes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let ours: Vec<&pb::Sandbox> = list.iter().filter(|s| is_bulk(&s.name)).collect();
    let (dups, mismatches, kernel_dups) = check_addresses(&ctx.lab, &ours).await?;
    bulk.duplicate_addresses_records = dups;
    bulk.kernel_mismatches = mismatches;
    bulk.duplicate_addresses_kernel = kernel_dups;

    ctx.res.memory = memory(&ctx.lab, Some(&ctx.res.memory), list.len());

    match restart(ctx, &list).await {
        Ok(r) => ctx.res.restart = Some(r),
        Err(e) => {
            ctx.res.failures.push(format!("agent restart: {e:#}"));
            ctx.res.restart = Some(Restart {
                status: RowStatus::Failed(format!("{e:#}")),
                node: "node1".into(),
                sandboxes_on_node: 0,
                stop_ms: 0.0,
                converge_ms: 0.0,
                full_sync_log_ms: None,
                ping_interval_ms: 10.0,
                pings_sent: 0,
                pings_received: 0,
            });
        }
    }

    let start = Instant::now();
    let removed: Vec<(f64, bool)> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = sb.clone();
            async move {
                let t = Instant::now();
                let r = c.remove_sandbox(remove_req(&spec(i).0)).await;
                (ms(t.elapsed()), r.is_ok())
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    bulk.remove_total_s = start.elapsed().as_secs_f64();
    let ok: Vec<f64> = removed.iter().filter(|r| r.1).map(|r| r.0).collect();
    bulk.remove_errors = removed.len() - ok.len();
    bulk.remove_per_second = ok.len() as f64 / bulk.remove_total_s;
    bulk.remove = Some(Series::new("RemoveSandbox under concurrency", ok));
    let prefix = ctx.lab.sandbox_ns("b");
    bulk.leftover_namespaces = netns::list()?.iter().filter(|n| n.starts_with(&prefix)).count();
    for name in NETWORKS {
        let _ = net
            .remove_network(pb::RemoveNetworkRequest {
                name_or_id: name.into(),
            })
            .await;
    }
    ctx.res.bulk = Some(bulk);
    Ok(())
}

fn is_bulk(name: &str) -> bool {
    name.len() == 5 && name.starts_with('b') && name[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Duplicate addresses per node per network in the records; then each
/// sandbox's `eth0` read from the kernel: mismatches with the record, and
/// duplicates among what the kernel holds.
async fn check_addresses(lab: &Lab, sandboxes: &[&pb::Sandbox]) -> Result<(usize, usize, usize)> {
    let mut records: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let mut kernel: HashMap<(String, String), HashSet<Ipv4Addr>> = HashMap::new();
    let (mut dups, mut mismatches, mut kernel_dups) = (0, 0, 0);
    for s in sandboxes {
        let Some(ep) = s.endpoints.first() else {
            mismatches += 1;
            continue;
        };
        let key = (s.node.clone(), ep.network_id.clone());
        if !records.entry(key.clone()).or_default().insert(ep.ip.clone()) {
            dups += 1;
        }
        match eth0_addr(&lab.sandbox_ns(&s.name)).await {
            Ok(Some(a)) => {
                if a.to_string() != ep.ip {
                    mismatches += 1;
                }
                if !kernel.entry(key).or_default().insert(a) {
                    kernel_dups += 1;
                }
            }
            _ => mismatches += 1,
        }
    }
    Ok((dups, mismatches, kernel_dups))
}

async fn eth0_addr(ns: &str) -> Result<Option<Ipv4Addr>> {
    let h = netns::netlink(Some(ns)).await?;
    let Some(l) = link::get(&h, "eth0").await? else {
        return Ok(None);
    };
    Ok(link::ipv4_addrs(&h, l.index).await?.first().map(|(a, _)| *a))
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of berth's processes and etcd. With `idle`, fills the
/// loaded column of that earlier snapshot.
pub fn memory(lab: &Lab, idle: Option<&[Memory]>, sandboxes: usize) -> Vec<Memory> {
    let mut procs: Vec<(String, Option<u32>)> = vec![("berth-api".into(), lab.api_pid())];
    for i in 1..=lab.nodes {
        procs.push((format!("berth-agent node{i}"), lab.agent_pid(i)));
    }
    procs.push(("etcd".into(), lab.etcd_pid()));
    procs
        .into_iter()
        .filter_map(|(name, pid)| Some((name, pid?)))
        .map(|(process, pid)| {
            let now = rss_kib(pid);
            match idle.and_then(|m| m.iter().find(|x| x.process == process)) {
                Some(prev) => Memory {
                    process,
                    pid,
                    idle_kib: prev.idle_kib,
                    loaded_kib: now,
                    sandboxes_loaded: sandboxes,
                },
                None => Memory {
                    process,
                    pid,
                    idle_kib: now,
                    loaded_kib: None,
                    sandboxes_loaded: 0,
                },
            }
        })
        .collect()
}

/// Restarts node1's agent while two of its sandboxes ping each other every
/// 10 ms; measures until the new agent's Status says converged with every
/// sandbox of the node.
async fn restart(ctx: &mut Ctx, list: &[pb::Sandbox]) -> Result<Restart> {
    let on_node: Vec<&pb::Sandbox> = list.iter().filter(|s| s.node == "node1").collect();
    let expected = on_node.len();
    let first_net = |s: &pb::Sandbox| s.endpoints.first().map(|e| e.network_id.clone());
    let a = on_node
        .iter()
        .find(|s| is_bulk(&s.name))
        .context("no bulk sandbox on node1")?;
    let b = on_node
        .iter()
        .find(|s| is_bulk(&s.name) && s.name != a.name && first_net(s) == first_net(a))
        .context("no second bulk sandbox on node1 in the same network")?;
    let target = b.endpoints[0].ip.clone();
    let log = ctx.lab.log_path("ping-restart");
    let mut ping = spawn_in(
        &ctx.lab.sandbox_ns(&a.name),
        "ping",
        "ping",
        &["-q", "-i", "0.01", &target],
        &log,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t = Instant::now();
    ctx.lab.stop_agent(1);
    let stop_ms = ms(t.elapsed());
    let spawned_wall = SystemTime::now();
    let converge_ms = restart_agent1(ctx, expected).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ping.finish_with(nix::sys::signal::Signal::SIGINT, Duration::from_secs(3));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (sent, received) = parse_ping(&text).with_context(|| format!("ping output: {text}"))?;
    let full_sync_log_ms = profile::last_line_time(&ctx.lab.agent_log(1), "full sync done")
        .and_then(|t| t.duration_since(spawned_wall).ok())
        .map(ms);
    Ok(Restart {
        status: RowStatus::Ok,
        node: "node1".into(),
        sandboxes_on_node: expected,
        stop_ms,
        converge_ms,
        full_sync_log_ms,
        ping_interval_ms: 10.0,
        pings_sent: sent,
        pings_received: received,
    })
}

/// Starts node1's (stopped) agent and polls `AgentService.Status` every 5 ms
/// from the control namespace until it reports converged with `expected`
/// sandboxes: the milliseconds from the spawn.
pub async fn restart_agent1(ctx: &mut Ctx, expected: usize) -> Result<f64> {
    let spawned = Instant::now();
    ctx.lab.start_agent(1, &ctx.bin_dir)?;
    let addr: SocketAddr = format!("{}:{AGENT_PORT}", node_addr(1)).parse()?;
    let ctl = ctx.lab.ns("c");
    let deadline = spawned + Duration::from_secs(300);
    let mut last = String::new();
    let converge_ms = 'outer: loop {
        if Instant::now() > deadline {
            bail!("node1's agent did not converge with {expected} sandboxes in 300 s (last status: {last})");
        }
        let tls = ctx.lab.agent_tls()?;
        let Ok(ch) = crate::client::netns_channel(&ctl, addr, Duration::from_secs(300), tls).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let mut agent = AgentServiceClient::new(ch);
        loop {
            match agent.status(pb::StatusRequest {}).await {
                Ok(r) => {
                    let s = r.into_inner();
                    if s.converged && s.sandboxes as usize == expected {
                        break 'outer ms(spawned.elapsed());
                    }
                    last = format!(
                        "converged={} sandboxes={} error={}",
                        s.converged, s.sandboxes, s.last_error
                    );
                }
                Err(_) => break,
            }
            if Instant::now() > deadline {
                continue 'outer;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    Ok(converge_ms)
}

/// `N packets transmitted, M received` from ping's summary.
fn parse_ping(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok());
    Some((nums.next()?, nums.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let t = "--- 10.0.0.3 ping statistics ---\n\
                 1234 packets transmitted, 1230 received, 0.324% packet loss, time 12345ms\n";
        assert_eq!(parse_ping(t), Some((1234, 1230)));
        assert!(is_bulk("b0042"));
        assert!(!is_bulk("bulk-a"));
    }
}
