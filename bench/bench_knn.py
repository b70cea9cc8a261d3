"""Fit and evaluate the session-rec baselines (sknn, vsknn, stan, vstan, sr, ar) on the full
SR-GNN-protocol datasets; write `results/baselines/<dataset>.json` and `results/baselines/README.md`.

Each model uses its per-dataset tuned defaults (`dataset_defaults`), is fitted on the protocol's
whole training set (train ∪ valid, as session-rec and the papers do; no selection happens) and
evaluated on every test example with sbrbench's evaluator (pessimistic ties). Fit and evaluation
wall-clock seconds are measured separately; the load average at the time is recorded, since the
machine may be shared.

    python bench/bench_knn.py [--datasets diginetica,tmall] [--models sknn,sr] [--readme-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS_DIR = Path(os.environ.get("SBRBENCH_SHARED", REPO.parent / "shared")) / "datasets"
OUT = REPO / "results" / "baselines"
MODELS = ("sknn", "vsknn", "stan", "vstan", "sr", "ar")
SOURCES = {
    "diginetica": ("diginetica/GCE-GNN", "srgnn", None),
    "yoochoose1_64": ("yoochoose1_64/WSDM23-DGNNs--for-Session-based-Recommendation", "srgnn", 37484),
    "tmall": ("tmall/GCE-GNN", "gcegnn", None),
    "nowplaying": ("nowplaying/GCE-GNN", "gcegnn", None),
}
NEURAL = ("srgnn", "gcegnn")


def load(name: str) -> Any:
    """The processed dataset `name` built from the published pickles."""
    from sbrbench.data.srgnn_pickles import build_from_srgnn_pickles, read_pairs, read_train_sessions

    sub, protocol, n_items = SOURCES[name]
    d = DATASETS_DIR / sub
    prefixes, targets = read_pairs(d / "test.txt")
    return build_from_srgnn_pickles(name, protocol, read_train_sessions(d / "all_train_seq.txt"),
                                    prefixes, targets, n_items=n_items)


def run_one(ds: Any, model_name: str) -> dict[str, Any]:
    """Fit on train ∪ valid, evaluate on test; metrics and timings."""
    import torch

    from sbrbench.batching import ExampleSource
    from sbrbench.metrics import RankCollector
    from sbrbench.models import create_model, resolve_config

    cfg = resolve_config(model_name, ds.name)
    model = create_model(model_name, ds.n_items, ds.name)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    model.fit(ds, ("train", "valid"))
    fit_s = time.perf_counter() - t0
    src = ExampleSource.from_dataset(ds, "test")
    col = RankCollector("cpu")
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in src.batches(cfg.train.eval_batch_size):
            col.update(model(batch), batch.targets)
    metrics = col.metrics((10, 20))
    eval_s = time.perf_counter() - t0
    return {
        "model": model_name,
        "hparams": cfg.params_dict(),
        "fit_info": getattr(model, "fit_info", {}),
        "P@20": metrics["P@20"],
        "MRR@20": metrics["MRR@20"],
        "P@10": metrics["P@10"],
        "MRR@10": metrics["MRR@10"],
        "fit_seconds": round(fit_s, 2),
        "eval_seconds": round(eval_s, 2),
        "test_examples": len(src),
        "load_average_1min_at_start": round(load0, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def published(dataset: str) -> dict[str, dict[str, Any]]:
    """Published P@20 / MRR@20 of the neural models and of session-rec's baselines."""
    from sbrbench.paper_figures import find

    out: dict[str, dict[str, Any]] = {}
    for model in NEURAL + MODELS:
        p, m = find(dataset, model, "P@20"), find(dataset, model, "MRR@20")
        if p or m:
            out[model] = {"P@20": p.value if p else None, "MRR@20": m.value if m else None,
                          "table": (p or m).table}
    return out


def write_readme() -> None:
    """Summarise every results/baselines/*.json as a Markdown table."""
    rows, pubs = [], []
    for path in sorted(OUT.glob("*.json")):
        data = json.loads(path.read_text())
        for r in data["rows"]:
            rows.append((data["dataset"], r))
        for model, f in data.get("published", {}).items():
            pubs.append((data["dataset"], model, f))
    lines = [
        "# Session-rec baselines on the SR-GNN-protocol datasets",
        "",
        "Measured by `bench/bench_knn.py` (fit on train ∪ valid with each model's tuned per-dataset",
        "defaults, evaluated on every test example, pessimistic ties, float32 scores). Times are",
        "wall-clock seconds on the shared 2-core CPU machine; the 1-minute load average at the start",
        "of each run shows how busy it was (2.0 = both cores taken by others).",
        "",
        "| dataset | model | P@20 | MRR@20 | fit s | eval s | test examples | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds, r in rows:
        lines.append(f"| {ds} | {r['model']} | {100 * r['P@20']:.2f} | {100 * r['MRR@20']:.2f} | "
                     f"{r['fit_seconds']:.1f} | {r['eval_seconds']:.1f} | {r['test_examples']} | "
                     f"{r['load_average_1min_at_start']:.1f} |")
    lines += [
        "",
        "## Published figures on the same datasets (for comparison)",
        "",
        "Neural models from their papers (SR-GNN protocol); session-rec's baselines from session-rec's",
        "own preprocessing (raw ids, all positions), which is *not* this split.",
        "",
        "| dataset | model | P@20 | MRR@20 | source table |",
        "|---|---|---|---|---|",
    ]
    for ds, model, f in pubs:
        p = "—" if f["P@20"] is None else f"{100 * f['P@20']:.2f}"
        m = "—" if f["MRR@20"] is None else f"{100 * f['MRR@20']:.2f}"
        lines.append(f"| {ds} | {model} | {p} | {m} | {f['table']} |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(SOURCES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--readme-only", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from sbrbench.io import atomic_write_json

    OUT.mkdir(parents=True, exist_ok=True)
    if not args.readme_only:
        for dname in args.datasets.split(","):
            ds = load(dname)
            path = OUT / f"{dname}.json"
            data = json.loads(path.read_text()) if path.is_file() else {"dataset": dname, "rows": []}
            data.update(dataset=dname, protocol=ds.protocol, n_items=ds.n_items,
                        machine={"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version()},
                        published=published(dname))
            for m in args.models.split(","):
                row = run_one(ds, m)
                print(f"{dname} {m}: P@20 {100 * row['P@20']:.2f} MRR@20 {100 * row['MRR@20']:.2f} "
                      f"fit {row['fit_seconds']:.1f}s eval {row['eval_seconds']:.1f}s "
                      f"(load {row['load_average_1min_at_start']:.1f})", flush=True)
                data["rows"] = [r for r in data["rows"] if r["model"] != m] + [row]
                data["rows"].sort(key=lambda r: MODELS.index(r["model"]))
                atomic_write_json(path, data)
    write_readme()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
