"""Honest-by-default annotations of run records and tables (reads run directories through `RunDir`).

The statistics themselves live in `sbrbench.honesty` (pure functions); this module feeds them from
run directories and writes the results into the rows of leaderboards, reproduced tables and
ablations:

* `split_extras(run, split)`: tie diagnostics, the session-length breakdown and the targets the fit
  never contains of a stored split (what `sbrbench evaluate` prints and the HTML report reads);
* `run_cost(run)`: the cost figures of a run record (`honesty.cost_from_record`);
* `annotate_rows(rows, metrics, split)`: for each table (rows sharing `table_key`), every row
  against the best row — paired Wilcoxon on per-example values averaged over the row's seeds,
  Holm–Bonferroni over the table — plus the rows' seed stability and mean cost. Each row gains
  `significance` ({metric: {role, mark, p, p_holm, diff, vs}}), `marks` ({metric: "*", "=", "", "?"
  followed by "~" when unstable}), `stability` (`honesty.seed_stability`, or None) and `cost`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.honesty import (
    DEFAULT_LENGTH_EDGES,
    aggregate_costs,
    cost_from_record,
    length_breakdown,
    mean_over_seeds,
    seed_stability,
    table_significance,
    tie_summary,
    unfitted_summary,
)
from sbrbench.metrics import per_example_from_ranks
from sbrbench.results import RunDir


def split_extras(run: RunDir, split: str = "test", ks: Sequence[int] = (20,),
                 edges: Sequence[int] = DEFAULT_LENGTH_EDGES, *, load_dataset: bool = True) -> dict[str, Any]:
    """`ties`, `by_length` and `unfitted` (`honesty.unfitted_summary`) of a stored split (None where the
    run did not record what they need).

    Prefix lengths and the examples whose target the fit never contains come from `ranks/`, or for
    older runs from the run's dataset (`RunDir.load_dataset`, checksum-verified; the fit splits from
    its config) when `load_dataset` and it is available.
    """
    out: dict[str, Any] = {"ties": None, "by_length": None, "by_length_note": None, "unfitted": None}
    if not run.has_ranks(split):
        return out
    ranks = run.load_ranks(split)
    ties = run.load_ties(split)
    if ties is not None and ties.shape == ranks.shape:
        out["ties"] = tie_summary(ranks, ties, ks)
    lengths, unfitted = run.load_lengths(split), run.load_unfitted(split)
    if (lengths is None or (unfitted is None and ranks.ndim == 1)) and load_dataset:
        try:
            ds, _ = run.load_dataset()
            if lengths is None:
                lengths = ds.examples(split).length
            if unfitted is None and ranks.ndim == 1 and len(ds.split(split)) == ranks.shape[0]:
                unfitted = ds.unfitted_examples(split, tuple(run.read_config().fit_splits))
        except SbrError as exc:
            if lengths is None:
                out["by_length_note"] = f"prefix lengths not recorded and the dataset is unavailable ({exc})"
    if lengths is not None:
        if lengths.shape[0] == ranks.shape[0]:
            out["by_length"] = length_breakdown(ranks, lengths, ks, edges)
        else:
            out["by_length_note"] = f"{lengths.shape[0]} prefix lengths for {ranks.shape[0]} ranks"
    if unfitted is not None and ranks.ndim == 1:
        out["unfitted"] = unfitted_summary(ranks, unfitted, ks)
    return out


def run_cost(run: RunDir | str | Path) -> dict[str, Any]:
    """The cost figures of a run (from `metrics.json` and `history.csv`)."""
    rd = run if isinstance(run, RunDir) else RunDir(run)
    try:
        rec = rd.read_metrics()
    except SbrError:
        return {}
    return cost_from_record(rec, rd.read_history())


def per_example_over_seeds(run_dirs: Sequence[str | Path], split: str, metric: str) -> np.ndarray | None:
    """Per-example values of `metric`, averaged over the runs (seeds); None without stored ranks
    or when the runs hold different numbers of examples."""
    vals = []
    for d in run_dirs:
        rd = RunDir(d)
        if not rd.has_ranks(split):
            return None
        try:
            vals.append(per_example_from_ranks(rd.load_ranks(split), metric))
        except SbrError:
            return None
    return mean_over_seeds(vals)


def _checksum(run_dir: str | Path) -> str | None:
    try:
        return RunDir(run_dir).data_checksum()
    except SbrError:
        return None


def annotate_rows(
    rows: list[dict[str, Any]],
    metrics: Sequence[str],
    split: str = "test",
    *,
    table_key: Callable[[dict[str, Any]], Hashable],
    runs_of: Callable[[dict[str, Any]], list[dict[str, Any]]],
    alpha: float = 0.05,
    label: Callable[[dict[str, Any]], str] = lambda r: str(r.get("model")),
) -> list[dict[str, Any]]:
    """Significance against the best row, seed stability and cost, in place (see the module doc).

    `runs_of(row)` lists the row's runs as {"run_dir", "seed", "values": {metric: value}}. Rows of a
    table whose runs used another dataset checksum than the table's majority are left untested.
    """
    tables: dict[Hashable, list[int]] = {}
    for i, r in enumerate(rows):
        tables.setdefault(table_key(r), []).append(i)
    for idx in tables.values():
        runs = {i: runs_of(rows[i]) for i in idx}
        sums = {i: {_checksum(x["run_dir"]) for x in runs[i]} for i in idx}
        flat = [next(iter(s)) for s in sums.values() if len(s) == 1]
        major = max(set(flat), key=flat.count) if flat else None
        per_example: dict[str, dict[Hashable, np.ndarray | None]] = {}
        for m in metrics:
            per_example[m] = {
                i: (per_example_over_seeds([x["run_dir"] for x in runs[i]], split, m)
                    if sums[i] == {major} and major is not None else None)
                for i in idx
            }
        reported = {m: {i: (float(np.mean(v)) if (v := [x["values"][m] for x in runs[i]
                                                        if (x.get("values") or {}).get(m) is not None]) else None)
                        for i in idx} for m in metrics}
        sig = table_significance(per_example, alpha, reported)
        stab = {m: seed_stability({i: {x["seed"]: x["values"][m] for x in runs[i]
                                       if m in (x.get("values") or {}) and x.get("seed") is not None}
                                   for i in idx}) for m in metrics}
        for m in metrics:  # name the other rows by their labels, not their positions
            for i in idx:
                if sig[m][i].get("vs") is not None:
                    sig[m][i]["vs"] = label(rows[sig[m][i]["vs"]])
                st = (stab[m] or {}).get(i)
                if st:
                    st["flip_rates"] = {label(rows[j]): v for j, v in st["flip_rates"].items()}
        for i in idx:
            r = rows[i]
            r["significance"] = {m: sig[m][i] for m in metrics}
            r["stability"] = {m: (stab[m] or {}).get(i) for m in metrics}
            r["marks"] = {m: sig[m][i]["mark"] + (((stab[m] or {}).get(i) or {}).get("mark") or "") for m in metrics}
            r["cost"] = aggregate_costs([c for c in (run_cost(x["run_dir"]) for x in runs[i]) if c])
    return rows


def annotate_ablation(variants: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Seed stability of an ablation's variants (paired by seed), Holm-adjusted p-values of their
    changes against the reference (over every variant and metric of the study), in place."""
    from sbrbench.honesty import holm

    cells = [(v, m) for v in variants for m in metrics if m in (v.get("tests") or {})]
    adj = holm([float(v["tests"][m]["wilcoxon"]) for v, m in cells])
    for (v, m), p in zip(cells, adj):
        v["tests"][m]["wilcoxon_holm"] = p
    for m in metrics:
        stab = seed_stability({v["name"]: {r["seed"]: r["metrics"][m] for r in v["runs"] if m in r.get("metrics", {})}
                               for v in variants})
        for v in variants:
            v.setdefault("stability", {})[m] = (stab or {}).get(v["name"])
    for v in variants:
        v["unstable"] = any(s is not None and not s["stable"] for s in v.get("stability", {}).values())
        v["cost"] = aggregate_costs([c for c in (run_cost(r["run_dir"]) for r in v["runs"]) if c])
    return variants


def leaderboard_runs(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a leaderboard row (`build_leaderboard` keeps them under `runs`)."""
    return list(row.get("runs") or [])


def reproduction_runs(row: dict[str, Any], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """The runs of a reproduced table's row: one per seed (`multiseed.aggregate_seeds` keeps
    `run_dirs` and `per_seed`), or its single run."""
    dirs = row.get("run_dirs") or [row["run_dir"]]
    per_seed = row.get("per_seed") or [{"seed": row.get("seed"), **(row.get("ours") or {})}]
    return [{"run_dir": d, "seed": ps.get("seed"),
             "values": {m: ps[m] for m in metrics if ps.get(m) is not None}} for d, ps in zip(dirs, per_seed)]


def annotate_reproduction(rows: list[dict[str, Any]], metrics: Sequence[str], split: str = "test") -> dict[str, Any]:
    """Significance (every row against the best row of its dataset), seed stability and cost of a
    reproduced table's rows (one row per dataset and label, its seeds folded in), in place."""
    annotate_rows(rows, metrics, split, table_key=lambda r: r["dataset"],
                  runs_of=lambda r: reproduction_runs(r, metrics))
    return {"alpha": 0.05, "test": "paired Wilcoxon signed-rank on per-example values averaged over seeds, "
                                   "every row against the best row of its dataset, Holm-Bonferroni over the table",
            "marks": {"*": "best (claimed)", "=": "not significantly different from the best", "": "worse",
                      "?": "not tested", "~": "ordering flips across seeds"}}
