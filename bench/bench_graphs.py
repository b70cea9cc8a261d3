"""Time building the dataset-level graphs (global ε-neighbour item graph, session hypergraph).

Builds both graphs from the training sessions of Diginetica, Tmall and Nowplaying (GCE-GNN
pickles in ../shared/datasets) and reports seconds, edge counts and peak RSS; writes
`results/bench/graphs.json`.

    python bench/bench_graphs.py [--datasets diginetica,tmall,nowplaying]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS_DIR = Path(os.environ.get("SBRBENCH_SHARED", REPO.parent / "shared")) / "datasets"
OUT = REPO / "results" / "bench" / "graphs.json"


def run(name: str) -> dict[str, Any]:
    """Build both graphs of `name`'s full training set; returns timings and sizes."""
    import numpy as np

    from sbrbench.data.srgnn_pickles import read_train_sessions
    from sbrbench.graphs import global_item_graph, session_hypergraph

    seqs = read_train_sessions(DATASETS_DIR / name / "GCE-GNN" / "all_train_seq.txt")
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    items = np.fromiter((x for s in seqs for x in s), dtype=np.int64, count=int(offsets[-1]))
    n_items = int(items.max()) + 1
    t0 = time.perf_counter()
    g = global_item_graph(items, offsets, n_items, eps=3, topk=12)
    t1 = time.perf_counter()
    h = session_hypergraph(items, offsets, n_items)
    t2 = time.perf_counter()
    return {
        "dataset": name, "sessions": len(seqs), "clicks": int(offsets[-1]), "n_items": n_items,
        "global_seconds": round(t1 - t0, 3), "global_edges": int(g.counts.sum()),
        "hypergraph_seconds": round(t2 - t1, 3), "hypergraph_incidences": int(h.edge.shape[0]),
    }


def main() -> None:
    """Run the benchmark and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="diginetica,tmall,nowplaying")
    args = ap.parse_args()
    rows = [run(d) for d in args.datasets.split(",")]
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": sys.version.split()[0],
        "load_avg_1m": os.getloadavg()[0], "rows": rows,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['dataset']:>11}: global graph {r['global_seconds']:.2f} s ({r['global_edges']} edges), "
              f"hypergraph {r['hypergraph_seconds']:.2f} s ({r['hypergraph_incidences']} incidences)")
    print(f"peak RSS {out['peak_rss_mib']} MiB, load {out['load_avg_1m']:.1f}")


if __name__ == "__main__":
    main()
