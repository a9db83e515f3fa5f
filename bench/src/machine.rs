//! What the run was on: CPU, kernel, memory, load, tool versions, commit, date.
use std::process::Command;

use crate::results::Machine;

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn date() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ))
    .unwrap_or_default()
}

/// `$BERTH_BENCH_COMMIT`, else `git rev-parse --short HEAD` with `+changes` when the tree differs.
pub fn commit() -> String {
    if let Ok(c) = std::env::var("BERTH_BENCH_COMMIT") {
        return c;
    }
    let head = output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        output("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+changes") } else { head }
}

pub fn describe() -> Machine {
    let mem_kib: f64 = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default();
    let mut versions = Vec::new();
    for pkg in [
        "containernetworking-plugins",
        "netavark",
        "iperf3",
        "etcd-server",
        "iptables",
        "nftables",
        "iproute2",
    ] {
        if let Some(v) = output("dpkg-query", &["-W", "-f", "${Version}", pkg]) {
            versions.push((pkg.to_string(), v));
        }
    }
    let fs = output(
        "df",
        &["--output=fstype", std::env::temp_dir().to_str().unwrap_or("/tmp")],
    )
    .and_then(|s| s.lines().nth(1).map(str::trim).map(String::from))
    .unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu: first_line_with("/proc/cpuinfo", "model name").unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        os,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        etcd_fs: fs,
        versions,
    }
}
