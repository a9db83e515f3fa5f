//! berth-bench: builds its own lab of network namespaces (etcd, berth-api,
//! two agents, and the peers' namespaces), measures berth against the CNI
//! reference plugins, the raw kernel floor and hand-built data paths, and
//! writes `benchmarks.md` and `benchmarks.json`. Run it as root through
//! `bench/run`. Everything it creates is removed when it ends, on failure
//! and on Ctrl-C too.
mod bulk;
mod client;
mod cni;
mod config;
mod curves;
mod dataplane;
mod dockerov;
mod etcdfloor;
mod icmp;
mod lab;
mod machine;
mod netavark;
mod overlay;
mod profile;
mod raw;
mod report;
mod results;
mod run;
mod stats;
mod util;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("berth-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cfg = config::Config::parse().effective();
    if let Some(json) = &cfg.render {
        let results: results::Results = serde_json::from_slice(&std::fs::read(json)?)
            .with_context(|| format!("reading {}", json.display()))?;
        print!("{}", report::markdown(&results));
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("berth-bench needs root (namespaces, netlink, iptables in its own namespaces): use bench/run");
    }
    if !cni::installed() {
        bail!(
            "the CNI plugins are missing from {}: apt-get install containernetworking-plugins",
            cni::PLUGIN_DIR
        );
    }
    let bin_dir = match &cfg.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .context("locating the binaries")?,
    };
    for b in ["berth-api", "berth-agent", "berth"] {
        if !bin_dir.join(b).exists() {
            bail!(
                "{} is missing: build with cargo build --release --workspace --bins",
                bin_dir.join(b).display()
            );
        }
    }
    std::fs::create_dir_all(&cfg.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let results = rt.block_on(async {
        tokio::select! {
            r = run::run(cfg.clone(), bin_dir) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; the lab was removed")),
        }
    })?;
    let md = report::markdown(&results);
    let md_path = cfg.out.join("benchmarks.md");
    let json_path = cfg.out.join("benchmarks.json");
    std::fs::write(&md_path, &md)?;
    std::fs::write(&json_path, serde_json::to_vec_pretty(&results)?)?;
    println!("{md}");
    eprintln!(
        "berth-bench: wrote {} and {} ({:.0} s)",
        md_path.display(),
        json_path.display(),
        results.total_s
    );
    if !results.failures.is_empty() {
        bail!("{} phase(s) failed; see the report", results.failures.len());
    }
    Ok(())
}
