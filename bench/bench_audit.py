"""Time `sbrbench audit` (dataset checks + library graphs) on every processed registered dataset.

For each registered dataset processed under the data directory (every protocol it is processed
with), runs `sbrbench.audit.audit` in this process and records wall seconds, the headline figures
and the findings; writes `results/bench/audit.json` and prints a Markdown table.

    python bench/bench_audit.py [--data-dir /tmp/sbrdata] [--no-graphs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench" / "audit.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("SBRBENCH_DATA_DIR"))
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    from sbrbench import paths
    from sbrbench.audit import audit
    from sbrbench.data.audit import audit_summary
    from sbrbench.data.registry import load_registry

    root = paths.data_dir(args.data_dir)
    rows: list[dict[str, Any]] = []
    for name in load_registry():
        for d in sorted((root / "processed" / name).glob("*/manifest.json")):
            t0 = time.perf_counter()
            rep = audit(d.parent, graphs=not args.no_graphs)
            secs = time.perf_counter() - t0
            summ = audit_summary(rep)
            rows.append({"dataset": name, "protocol": d.parent.name, "seconds": round(secs, 2),
                         "figures": summ["figures"], "findings": summ["findings"], "leaks": rep["leaks"],
                         "graph_pairs": (rep.get("structures") or {}).get("pairs")})
            print(f"{name} ({d.parent.name}): {secs:.1f} s, {len(summ['findings'])} findings", flush=True)
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS"),
           "graphs": not args.no_graphs, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    keys = ["duplicate_test_sessions_exact", "duplicate_test_sessions_prefix", "duplicate_test_examples",
            "unseen_test_targets", "consecutive_repeats", "test_target_is_last_click_share", "shared_sessions",
            "test_targets_read_by_fit", "time_overlap", "target_in_prefix_share", "length_tv", "popularity_ratio"]
    print("\n| dataset | protocol | s | " + " | ".join(keys) + " |")
    print("|" + "---|" * (3 + len(keys)))
    for r in rows:
        print(f"| {r['dataset']} | {r['protocol']} | {r['seconds']} | "
              + " | ".join(str(r["figures"].get(k)) for k in keys) + " |")


if __name__ == "__main__":
    main()
