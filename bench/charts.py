#!/usr/bin/python3
"""PNG charts of one berth-bench run, from its JSON (benchmarks.json):

  create-vs-cluster-size.png  create latency p50/p99 against sandboxes in the cluster
  bulk-vs-concurrency.png     bulk create throughput against calls in flight
  berth-vs-peers.png          p50 per operation, berth and each peer measured in the same run

usage: bench/charts.py BENCH_OUT_DIR   (needs python3-matplotlib)
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def summary(series):
    return series["summary"] if series else None


def create_vs_size(r, out):
    points = (r.get("curves") or {}).get("by_size") or []
    if not points:
        return False
    x = [p["sandboxes"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [p["create"]["summary"]["p50"] for p in points], "o-", label="p50")
    ax.plot(x, [p["create"]["summary"]["p99"] for p in points], "s--", label="p99")
    ax.set_xlabel("sandboxes in the cluster")
    ax.set_ylabel("create latency (ms)")
    ax.set_title("berth: sequential create against cluster size")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "create-vs-cluster-size.png", dpi=110)
    plt.close(fig)
    return True


def bulk_vs_concurrency(r, out):
    points = (r.get("curves") or {}).get("throughput") or []
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [p["concurrency"] for p in points]
    ax.plot(x, [p["per_second"] for p in points], "o-", label="berth, 2 nodes")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(c) for c in x])
    ax.set_xlabel("calls in flight")
    ax.set_ylabel("sandboxes created per second")
    ax.set_title("berth: bulk create throughput")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bulk-vs-concurrency.png", dpi=110)
    plt.close(fig)
    return True


def is_peer(name):
    """The other tools; the floors and set-up lines are context, not peers."""
    return not name.startswith(("raw floor", "etcd floor", "netns creation"))


def berth_vs_peers(r, out):
    rows = [row for row in r.get("latency", []) + r.get("overlay", []) if row.get("berth") and row.get("peers")]
    rows = [row for row in rows if not row["id"].startswith("ov_reach")]
    rows = [row for row in rows if any(is_peer(p["name"]) for p in row["peers"])]
    if not rows:
        return False
    names = ["berth"] + sorted({p["name"] for row in rows for p in row["peers"] if is_peer(p["name"])})
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 5.5))
    labelled = set()
    for i, row in enumerate(rows):
        bars = [("berth", row["berth"])] + [(p["name"], p) for p in row["peers"] if is_peer(p["name"])]
        width = 0.8 / len(bars)
        for j, (name, series) in enumerate(bars):
            ax.bar(i - 0.4 + (j + 0.5) * width, series["summary"]["p50"], width,
                   color=colors(names.index(name) % 10), label=None if name in labelled else name)
            labelled.add(name)
    ax.set_xticks(range(len(rows)),
                  [row["title"].replace("sandbox ", "").replace("overlay: ", "overlay ")[:38] for row in rows],
                  rotation=25, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("p50 (ms, log scale)")
    ax.set_title("berth against each peer, same run (lower is better)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "berth-vs-peers.png", dpi=110)
    plt.close(fig)
    return True


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    r = json.loads((out / "benchmarks.json").read_text())
    made = [f for f, ok in [("create-vs-cluster-size.png", create_vs_size(r, out)),
                            ("bulk-vs-concurrency.png", bulk_vs_concurrency(r, out)),
                            ("berth-vs-peers.png", berth_vs_peers(r, out))] if ok]
    print(f"bench/charts.py: wrote {', '.join(made) or 'nothing (no data)'} in {out}")


if __name__ == "__main__":
    main()
