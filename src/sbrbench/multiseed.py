"""Several seeds of a reproduced table: mean ± std per row, and paired tests between rows.

`reproduce` runs a table's neural rows once per seed when its budget asks for several
(`Budget.seeds`; non-neural rows are deterministic and fitted once). `aggregate_seeds` folds the
per-seed rows of one (dataset, row label) into one row: the mean of each metric, its sample
standard deviation over seeds (None with one seed), the seeds and their run directories.
`paired_test` compares two rows on the same test examples: each row's per-example values are
averaged over its seeds, then a Wilcoxon signed-rank and a paired t-test run on the pairs
(`significance.paired_tests`) — the same pooling as `sbrbench ablate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.metrics import per_example_from_ranks
from sbrbench.results import RunDir
from sbrbench.significance import paired_tests


def aggregate_seeds(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (dataset, model label): metric means over its seeds, std (ddof=1) and the runs.

    Rows keep their first appearance's order; fields other than the metrics come from the first
    seed's row (data, device, budget), `epochs` is the mean epochs run.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    out = []
    for rs in groups.values():
        first = dict(rs[0])
        ours, std = {}, {}
        for m in metrics:
            vals = np.array([r["ours"][m] for r in rs if r["ours"].get(m) is not None], dtype=np.float64)
            ours[m] = float(vals.mean()) if vals.size else None
            std[m] = float(vals.std(ddof=1)) if vals.size > 1 else None
        first["ours"], first["std"] = ours, std
        first["delta"] = {m: (ours[m] - first["paper"][m]) if ours[m] is not None and first["paper"].get(m) is not None
                          else None for m in metrics}
        first["seeds"] = [r.get("seed") for r in rs]
        first["per_seed"] = [{"seed": r.get("seed"), **{m: r["ours"].get(m) for m in metrics}} for r in rs]
        first["run_dirs"] = [r["run_dir"] for r in rs]
        epochs = [r["epochs"] for r in rs if r.get("epochs") is not None]
        first["epochs"] = round(float(np.mean(epochs)), 1) if epochs else None
        if any(r.get("best_of") for r in rs):
            first["best_of"] = {m: float(np.mean([r["best_of"][m] for r in rs if r.get("best_of") and m in r["best_of"]]))
                                for m in metrics if any(r.get("best_of") and m in r["best_of"] for r in rs)}
        out.append(first)
    return out


def pooled_per_example(run_dirs: Sequence[str], metric: str, split: str = "test") -> np.ndarray:
    """Per-example values of `metric` averaged over the runs (seeds) of one row."""
    vals = [per_example_from_ranks(RunDir(d).load_ranks(split), metric) for d in run_dirs]
    if len({v.shape for v in vals}) != 1:
        raise ValueError("the runs of one row scored different example sets")
    return np.mean(np.stack(vals), axis=0)


def paired_test(a_runs: Sequence[str], b_runs: Sequence[str], metric: str, split: str = "test") -> dict[str, Any] | None:
    """Row b against row a on the same examples (seed-averaged per example); None when the two
    rows were scored on different example sets (e.g. one on a subset) or a run lacks its ranks."""
    try:
        a = pooled_per_example(a_runs, metric, split)
        b = pooled_per_example(b_runs, metric, split)
    except (ValueError, SbrError):  # a row without comparable ranks gets no test
        return None
    if a.shape != b.shape:
        return None
    t = paired_tests(a, b)
    return {"wilcoxon": t["wilcoxon"]["pvalue"], "ttest_rel": t["ttest_rel"]["pvalue"], "n_examples": t["n_examples"],
            "wins": t["wins_b"], "losses": t["wins_a"], "seeds": [len(a_runs), len(b_runs)]}
