//! Curves for the charts: bulk create throughput against the number of
//! calls in flight, and sequential create latency against the number of
//! sandboxes already in the cluster. Bridge sandboxes over both nodes and
//! two networks, like the bulk phase (own networks, own names).
use std::time::Instant;

use anyhow::Result;
use berth_proto::v1 as pb;
use futures::StreamExt;

use crate::results::{AtSize, ConcurrencyPoint, Curves, SizePoint};
use crate::run::{Ctx, create_req, remove_req};
use crate::stats::Series;
use crate::util::ms;

const NETWORKS: [&str; 2] = ["curve-a", "curve-b"];
/// Calls in flight for the throughput curve.
const CONCURRENCY: [usize; 6] = [1, 2, 4, 8, 16, 32];
/// Sequential creates (each removed at once) measured at every cluster size.
const PROBES: usize = 40;

fn name(tag: &str, i: usize) -> String {
    format!("{tag}{i:05}")
}

fn spec(i: usize) -> (String, &'static str) {
    (format!("node{}", 1 + i % 2), NETWORKS[(i / 2) % 2])
}

/// Creates sandboxes `range` with `conc` calls in flight; (seconds, errors).
async fn fill(ctx: &Ctx, tag: &str, range: std::ops::Range<usize>, conc: usize) -> (f64, usize) {
    let sb = ctx.sandboxes();
    let t = Instant::now();
    let errors = futures::stream::iter(range)
        .map(|i| {
            let mut c = sb.clone();
            let tag = tag.to_string();
            async move {
                let (node, net) = spec(i);
                c.create_sandbox(create_req(&name(&tag, i), &node, net))
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(conc)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    (t.elapsed().as_secs_f64(), errors)
}

async fn drain(ctx: &Ctx, tag: &str, range: std::ops::Range<usize>) {
    let sb = ctx.sandboxes();
    futures::stream::iter(range)
        .map(|i| {
            let mut c = sb.clone();
            let n = name(tag, i);
            async move {
                let _ = c.remove_sandbox(remove_req(&n)).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Sandboxes in the cluster, and on node1 (the API's pages).
async fn count(ctx: &Ctx) -> Result<(usize, usize)> {
    let mut sb = ctx.sandboxes();
    let (mut total, mut node1, mut page_token) = (0, 0, String::new());
    loop {
        let page = sb
            .list_sandboxes(pb::ListSandboxesRequest {
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        total += page.sandboxes.len();
        node1 += page.sandboxes.iter().filter(|s| s.node == "node1").count();
        if page.next_page_token.is_empty() {
            return Ok((total, node1));
        }
        page_token = page.next_page_token;
    }
}

pub async fn phase_curves(ctx: &mut Ctx) -> Result<()> {
    let mut net = ctx.networks();
    for n in NETWORKS {
        net.create_network(pb::CreateNetworkRequest {
            name: n.into(),
            driver: pb::NetworkDriver::Bridge as i32,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("network create {n}: {}", s.message()))?;
    }
    let mut curves = Curves::default();
    let batch = ctx.cfg.curve_batch;
    for conc in CONCURRENCY {
        let (secs, errors) = fill(ctx, "t", 0..batch, conc).await;
        curves.throughput.push(ConcurrencyPoint {
            concurrency: conc,
            sandboxes: batch,
            per_second: batch as f64 / secs,
            errors,
        });
        drain(ctx, "t", 0..batch).await;
    }

    let mut sb = ctx.sandboxes();
    let mut size = 0;
    for target in ctx.cfg.curve_sizes.clone() {
        if target > size {
            fill(ctx, "s", size..target, 16).await;
            size = target;
        }
        let mut lat = Vec::new();
        for k in 0..PROBES {
            let n = format!("probe{k}");
            let t = Instant::now();
            let r = sb.create_sandbox(create_req(&n, "node1", "bridge")).await;
            let d = ms(t.elapsed());
            if r.is_ok() {
                lat.push(d);
                let _ = sb.remove_sandbox(remove_req(&n)).await;
            }
        }
        curves.by_size.push(SizePoint {
            sandboxes: size + ctx.lab.nodes,
            create: Series::new("berth create (node1, default bridge)", lat),
        });
    }
    // At the largest size: resident memory, then node1's agent restarted
    // (its full sync of every sandbox on node1).
    let (total, on_node1) = count(ctx).await?;
    let memory = crate::bulk::memory(&ctx.lab, None, total);
    ctx.lab.stop_agent(1);
    let full_sync_ms = match crate::bulk::restart_agent1(ctx, on_node1).await {
        Ok(ms) => Some(ms),
        Err(e) => {
            ctx.res
                .failures
                .push(format!("curves: agent restart at {size}: {e:#}"));
            None
        }
    };
    curves.at_max = Some(AtSize {
        sandboxes: total,
        on_node1,
        memory,
        full_sync_ms,
    });
    drain(ctx, "s", 0..size).await;
    for n in NETWORKS {
        let _ = net
            .remove_network(pb::RemoveNetworkRequest { name_or_id: n.into() })
            .await;
    }
    ctx.res.curves = Some(curves);
    Ok(())
}
