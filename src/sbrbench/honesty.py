"""Honest-by-default diagnostics: pure functions over stored ranks, per-example values and records.

Everything here takes arrays or plain dicts and returns plain dicts (JSON-ready), so the Trainer,
`evaluate`, the leaderboard, reproduced tables, ablations and the HTML report share one definition:

* ties — `tie_summary(ranks, ties, ks)`: the share of examples whose target ties with another
  candidate, and HR@K / MRR@K under the pessimistic rank (sbrbench's, ties never favour the target)
  beside the optimistic one (`1 + #strictly higher`, what `torch.topk`-style evaluation can give
  a model with many equal scores). A model that scores constants shows the full gap.
* targets the fit never contains — `unfitted_summary(ranks, index, ks)`: the share of examples whose
  target item no fitted session contains (`ProcessedDataset.unfitted_examples`; with selection on
  validation, the items only the held-out sessions hold) and HR@K / MRR@K on them and on the rest:
  no model can learn to rank such a target, so their share caps every row's figure alike.
* session length — `length_breakdown(ranks, lengths, ks, edges)`: metrics per prefix-length bucket
  (default short ≤ 2, medium 3–5, long > 5; `parse_length_buckets("2,5")`).
* significance across a table — `table_significance({metric: {row: per-example values}})`: every
  row against the best row (paired Wilcoxon signed-rank on per-example values, already averaged
  over seeds by the caller), Holm–Bonferroni over every comparison of the table (`holm`); "best" is
  claimed only when every other row is significantly worse after the correction.
* seed sensitivity — `seed_stability({row: {seed: value}})`: how often the ordering of two rows
  flips across seeds; `seed_summary(records)`: mean ± std of several seeds' records.
* cost — `cost_from_record(record, history)`: training time per epoch and in total, examples/s,
  peak memory, evaluation latency per example, parameter count, device and threads, read from a
  run record (never typed by hand); `aggregate_costs`, `cost_cells` for tables.

Marks used in tables (`MARKS`): `*` best, significantly better than every other row; `=` not
significantly different from the best row (the nominal best too when no claim is allowed); no mark:
significantly worse than the best; `?` not tested (no stored ranks, or other examples); `~` the
row's ordering against another row flips across seeds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.metrics import metrics_from_ranks, parse_ks, per_example_from_ranks
from sbrbench.significance import paired_tests

TIE_FAMILIES = ("HR", "MRR")
DEFAULT_LENGTH_EDGES: tuple[int, ...] = (2, 5)
LENGTH_FAMILIES = ("HR", "MRR", "NDCG")
ALPHA = 0.05
MARKS = {
    "best": "*", "tied": "=", "worse": "", "untested": "?", "unstable": "~",
}
MARK_LEGEND = (
    "`*` best, significantly better than every other row (paired Wilcoxon signed-rank on per-example "
    "values averaged over seeds, Holm–Bonferroni over the table, α = 0.05); `=` not significantly "
    "different from the best row; no mark: significantly worse than the best; `?` not tested; "
    "`~` its ordering against another row flips across seeds"
)


# ---- ties -------------------------------------------------------------------------------------------
def optimistic_ranks(ranks: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """`1 + #strictly higher` per target: the pessimistic rank minus the tie count (0/-1 kept)."""
    r = np.asarray(ranks, dtype=np.int64)
    t = np.asarray(ties, dtype=np.int64)
    if t.shape != r.shape:
        raise SbrError(f"tie counts have shape {t.shape}, ranks {r.shape}: they belong to different evaluations")
    return np.where(r > 0, np.maximum(r - t, 1), r)


def tie_summary(ranks: np.ndarray, ties: np.ndarray, ks: Sequence[int] = (20,),
                families: Sequence[str] = TIE_FAMILIES) -> dict[str, Any]:
    """Tie diagnostics of one evaluation: `examples`, `tied_examples` (some target ties with at least
    one other candidate), `tied_share`, `mean_tied_candidates` (over tied targets), and
    `pessimistic` / `optimistic` / `gap` (= optimistic − pessimistic) for `families` at `ks`."""
    r = np.asarray(ranks, dtype=np.int64)
    t = np.asarray(ties, dtype=np.int64)
    opt = optimistic_ranks(r, t)
    tied_target = (t > 0) & (r > 0)
    valid_ex = (r > 0) if r.ndim == 1 else (r > 0).any(axis=1)
    tied_ex = tied_target if r.ndim == 1 else tied_target.any(axis=1)
    n = int(valid_ex.sum())
    kk = parse_ks(list(ks))
    keys = [f"{f}@{k}" for f in families for k in kk]
    pess = metrics_from_ranks(r, kk)
    optm = metrics_from_ranks(opt, kk)
    return {
        "examples": n,
        "tied_examples": int(tied_ex.sum()),
        "tied_share": float(tied_ex.sum() / n) if n else 0.0,
        "mean_tied_candidates": float(t[tied_target].mean()) if tied_target.any() else 0.0,
        "pessimistic": {k: pess[k] for k in keys},
        "optimistic": {k: optm[k] for k in keys},
        "gap": {k: optm[k] - pess[k] for k in keys},
    }


def tie_gap_differs(summary: Mapping[str, Any] | None, tol: float = 1e-12) -> bool:
    """True when optimistic and pessimistic figures differ (what a report shows side by side)."""
    if not summary:
        return False
    return any(abs(float(v)) > tol for v in (summary.get("gap") or {}).values())


# ---- targets the fit never contains ---------------------------------------------------------------------
def unfitted_summary(ranks: np.ndarray, index: np.ndarray, ks: Sequence[int] = (20,),
                     families: Sequence[str] = TIE_FAMILIES) -> dict[str, Any]:
    """`examples`, `unfitted_examples` (the examples at `index`: their target is in no fitted session),
    `unfitted_share`, and `families` at `ks` on those examples (`unfitted`) and on the others (`fitted`).

    `ranks` (N,) are one evaluation's; an empty group's figures are None.
    """
    r = np.asarray(ranks, dtype=np.int64)
    idx = np.asarray(index, dtype=np.int64)
    if r.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= r.shape[0])):
        raise SbrError(f"{idx.size} unfitted-example indices do not index {r.shape} ranks: "
                       "they belong to different evaluations")
    mask = np.zeros(r.shape[0], dtype=bool)
    mask[idx] = True
    kk = parse_ks(list(ks))
    keys = [f"{f}@{k}" for f in families for k in kk]

    def figures(part: np.ndarray) -> dict[str, float] | None:
        if not part.size:
            return None
        m = metrics_from_ranks(part, kk)
        return {k: m[k] for k in keys}

    n = int(r.shape[0])
    return {
        "examples": n,
        "unfitted_examples": int(mask.sum()),
        "unfitted_share": float(mask.sum() / n) if n else 0.0,
        "unfitted": figures(r[mask]),
        "fitted": figures(r[~mask]),
    }


# ---- session length -----------------------------------------------------------------------------------
def parse_length_buckets(text: str | Sequence[int] | None) -> tuple[int, ...]:
    """`"2,5"` → (2, 5): the upper ends of all buckets but the last (≤ 2, 3–5, > 5); SbrError else."""
    if text is None:
        return DEFAULT_LENGTH_EDGES
    parts = str(text).split(",") if isinstance(text, str) else [str(x) for x in text]
    out = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        if not p.isdigit() or int(p) < 1:
            raise SbrError(f"bad length bucket edge {p!r} in {text!r}: use increasing positive integers like 2,5")
        out.append(int(p))
    if not out or any(b <= a for a, b in pairwise(out)):
        raise SbrError(f"length buckets {text!r} must be strictly increasing positive integers, e.g. 2,5")
    return tuple(out)


def length_buckets(edges: Sequence[int] = DEFAULT_LENGTH_EDGES) -> list[dict[str, Any]]:
    """The buckets of `edges`: [{"bucket": "<=2", "name": "short", "min": 1, "max": 2}, ...]."""
    edges = tuple(edges)
    names = ["short", "medium", "long"] if len(edges) == 2 else [f"b{i + 1}" for i in range(len(edges) + 1)]
    out, lo = [], 1
    for i, hi in enumerate(edges):
        label = f"<={hi}" if lo == 1 else (f"{lo}" if lo == hi else f"{lo}-{hi}")
        out.append({"bucket": label, "name": names[i], "min": lo, "max": hi})
        lo = hi + 1
    out.append({"bucket": f">{edges[-1]}", "name": names[-1], "min": lo, "max": None})
    return out


def bucket_index(lengths: np.ndarray, edges: Sequence[int] = DEFAULT_LENGTH_EDGES) -> np.ndarray:
    """Bucket of each prefix length (0 = shortest)."""
    return np.searchsorted(np.asarray(edges, dtype=np.int64), np.asarray(lengths, dtype=np.int64), side="left")


def length_breakdown(ranks: np.ndarray, lengths: np.ndarray, ks: Sequence[int] = (20,),
                     edges: Sequence[int] = DEFAULT_LENGTH_EDGES,
                     families: Sequence[str] = LENGTH_FAMILIES) -> list[dict[str, Any]]:
    """Metrics per prefix-length bucket from stored ranks and each example's prefix length.

    Returns one dict per bucket: bucket, name, min, max, examples, share, metrics ({"HR@20": ...};
    NaN-free: an empty bucket has `metrics` {}).
    """
    r = np.asarray(ranks)
    ln = np.asarray(lengths, dtype=np.int64)
    if ln.shape[0] != r.shape[0]:
        raise SbrError(f"{ln.shape[0]} prefix lengths for {r.shape[0]} ranks: they belong to different evaluations")
    kk = parse_ks(list(ks))
    keys = [f"{f}@{k}" for f in families for k in kk]
    idx = bucket_index(ln, edges)
    n = int(r.shape[0])
    out = []
    for i, b in enumerate(length_buckets(edges)):
        sel = idx == i
        m = int(sel.sum())
        mets = metrics_from_ranks(r[sel], kk) if m else {}
        out.append({**b, "examples": m, "share": m / n if n else 0.0,
                    "metrics": {k: mets[k] for k in keys if k in mets}})
    return out


# ---- significance across a table ------------------------------------------------------------------------
def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given; monotone, capped at 1)."""
    p = np.asarray(list(pvalues), dtype=np.float64)
    m = p.shape[0]
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def mean_over_seeds(values: Sequence[np.ndarray]) -> np.ndarray | None:
    """Per-example values averaged over seeds (None when the runs hold different numbers of examples)."""
    arrs = [np.asarray(v, dtype=np.float64) for v in values]
    if not arrs or len({a.shape for a in arrs}) != 1:
        return None
    return np.mean(np.stack(arrs), axis=0)


def table_significance(per_example: Mapping[str, Mapping[Hashable, np.ndarray | None]],
                       alpha: float = ALPHA,
                       reported: Mapping[str, Mapping[Hashable, float | None]] | None = None,
                       ) -> dict[str, dict[Hashable, dict[str, Any]]]:
    """Every row against the best row of each metric, Holm–Bonferroni over the whole table.

    `per_example[metric][row]` is the row's per-example values (higher is better; averaged over its
    seeds) or None when it has none. Rows are compared with the best only on the same number of
    examples. `reported[metric][row]` (optional) is each row's figure as its records state it: the
    best tested row claims nothing when an untested row reports a higher one. Returns
    `{metric: {row: {"role", "mark", "mean", "diff", "p", "p_holm", "vs"}}}` with
    role `best` (claimed: every other tested row significantly worse), `tied` (not significantly
    different from the best, or the nominal best without a claim), `worse`, or `untested`.
    """
    out: dict[str, dict[Hashable, dict[str, Any]]] = {}
    tests: list[tuple[str, Hashable, float]] = []
    best_of: dict[str, Hashable | None] = {}
    for metric, rows in per_example.items():
        res: dict[Hashable, dict[str, Any]] = {}
        means = {k: float(np.nanmean(v)) for k, v in rows.items() if v is not None and np.isfinite(v).any()}
        best = max(means, key=lambda k: means[k]) if means else None
        best_of[metric] = best
        for key, v in rows.items():
            res[key] = {"role": "untested", "mean": means.get(key), "diff": None, "p": None, "p_holm": None,
                        "vs": None}
        if best is not None:
            ref = np.asarray(rows[best], dtype=np.float64)
            for key, v in rows.items():
                if key == best or key not in means:
                    continue
                arr = np.asarray(v, dtype=np.float64)
                if arr.shape != ref.shape:
                    continue
                t = paired_tests(ref, arr)
                res[key].update(diff=means[key] - means[best], p=float(t["wilcoxon"]["pvalue"]), vs=best)
                tests.append((metric, key, float(t["wilcoxon"]["pvalue"])))
        out[metric] = res
    adjusted = holm([p for _, _, p in tests])
    for (metric, key, _), pa in zip(tests, adjusted):
        out[metric][key]["p_holm"] = pa
        out[metric][key]["role"] = "worse" if pa < alpha else "tied"
    for metric, best in best_of.items():
        if best is None:
            continue
        others = [r for k, r in out[metric].items() if k != best and r["p_holm"] is not None]
        claim = bool(others) and all(r["role"] == "worse" for r in others)
        figures = (reported or {}).get(metric) or {}
        top = figures.get(best)
        if top is not None and any(r["role"] == "untested" and (figures.get(k) or float("-inf")) > top
                                   for k, r in out[metric].items()):
            claim = False
        out[metric][best].update(role="best" if claim else "tied", claim=claim, vs=None)
    for res in out.values():
        for r in res.values():
            r["mark"] = MARKS[r["role"]]
    return out


# ---- seeds ---------------------------------------------------------------------------------------------------
def seed_stability(values: Mapping[Hashable, Mapping[Any, float]]) -> dict[Hashable, dict[str, Any]] | None:
    """How stable the ordering of rows is across seeds (higher values rank first).

    `values[row][seed]` is the row's metric for that seed. Rows are paired by seed; a row with a
    single run is taken as the same for every seed (a deterministic fit). For each pair of rows
    the flip rate is min(#seeds a > b, #seeds b > a) / #shared seeds. Returns per row:
    `rank_by_mean`, `ranks_per_seed` ({seed: rank}), `rank_agreement` (share of seeds in which its
    rank equals its rank by mean), `flip_rates` ({other row: rate > 0}), `stable` (no flip) and
    `mark` ("~" when unstable); None when fewer than two seeds are shared by two rows.
    """
    rows = {k: dict(v) for k, v in values.items() if v}
    seeds = sorted({s for v in rows.values() if len(v) > 1 for s in v}, key=str)
    if len(rows) < 2 or len(seeds) < 2:
        return None

    def at(row: Hashable, seed: Any) -> float | None:
        v = rows[row]
        if len(v) == 1:
            return float(next(iter(v.values())))
        return float(v[seed]) if seed in v else None

    means = {k: float(np.mean(list(v.values()))) for k, v in rows.items()}
    order = sorted(rows, key=lambda k: -means[k])
    rank_by_mean = {k: i + 1 for i, k in enumerate(order)}
    ranks_per_seed: dict[Hashable, dict[Any, int]] = {k: {} for k in rows}
    for s in seeds:
        vals = {k: at(k, s) for k in rows}
        present = [k for k in rows if vals[k] is not None]
        for i, k in enumerate(sorted(present, key=lambda k: -vals[k])):  # type: ignore[operator]
            ranks_per_seed[k][s] = i + 1
    flips: dict[Hashable, dict[Hashable, float]] = {k: {} for k in rows}
    keys = list(rows)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            shared = [(at(a, s), at(b, s)) for s in seeds]
            shared = [(x, y) for x, y in shared if x is not None and y is not None]
            if len(shared) < 2:
                continue
            up = sum(1 for x, y in shared if x > y)
            down = sum(1 for x, y in shared if x < y)
            rate = min(up, down) / len(shared)
            if rate > 0:
                flips[a][b] = flips[b][a] = rate
    out: dict[Hashable, dict[str, Any]] = {}
    for k, vals in rows.items():
        rps = ranks_per_seed[k]
        agree = sum(1 for r in rps.values() if r == rank_by_mean[k]) / len(rps) if rps else None
        out[k] = {"rank_by_mean": rank_by_mean[k], "ranks_per_seed": rps, "rank_agreement": agree,
                  "flip_rates": flips[k], "stable": not flips[k], "seeds": len(vals),
                  "mark": "" if not flips[k] else MARKS["unstable"]}
    return out


def seed_summary(records: Sequence[Mapping[str, Any]], split: str = "test") -> dict[str, Any]:
    """Mean ± sample std (and min, max, values) of every metric of several seeds' run records."""
    seeds = [r.get("seed") for r in records]
    names: list[str] = []
    for r in records:
        names += [k for k in (r.get(split) or {}) if k not in names]
    metrics = {}
    for name in names:
        vals = np.array([float((r.get(split) or {}).get(name, math.nan)) for r in records], dtype=np.float64)
        ok = vals[np.isfinite(vals)]
        metrics[name] = {"mean": float(ok.mean()) if ok.size else None,
                         "std": float(ok.std(ddof=1)) if ok.size > 1 else None,
                         "min": float(ok.min()) if ok.size else None, "max": float(ok.max()) if ok.size else None,
                         "values": vals.tolist()}
    return {"split": split, "seeds": seeds, "n": len(records), "metrics": metrics,
            "run_dirs": [r.get("run_dir") for r in records]}


# ---- cost -------------------------------------------------------------------------------------------------
COST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("s/epoch", "seconds_per_epoch"), ("train s", "train_seconds"), ("ex/s", "examples_per_s"),
    ("peak MB", "peak_memory_mb"), ("eval ms/ex", "eval_ms_per_example"), ("params", "n_params"),
    ("device", "device"), ("threads", "threads"),
)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def cost_from_record(rec: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The cost of a run from its record (`metrics.json`, whose `cost` block newer runs hold) and
    its history rows: seconds_per_epoch, train_seconds, examples_per_s, peak_memory_mb (+ kind),
    eval_ms_per_example, n_params, device, threads. Older runs give what their record allows
    (missing figures are None, never guessed)."""
    c: dict[str, Any] = dict(rec.get("cost") or {})
    train_s = _num(c.get("train_seconds", rec.get("train_seconds")))
    epochs = rec.get("epochs_run")
    hist = list(history or [])
    secs = [v for v in (_num(h.get("seconds")) for h in hist) if v is not None]
    eps = [v for v in (_num(h.get("examples_per_s")) for h in hist) if v is not None]
    out = {
        "seconds_per_epoch": _num(c.get("seconds_per_epoch")) if "seconds_per_epoch" in c else (
            float(np.mean(secs)) if secs else (train_s / epochs if train_s is not None and epochs else None)),
        "train_seconds": train_s,
        "examples_per_s": _num(c.get("examples_per_s")) if "examples_per_s" in c else (
            float(np.mean(eps)) if eps else None),
        "peak_memory_mb": _num(c.get("peak_memory_mb")),
        "peak_memory_kind": c.get("peak_memory_kind"),
        "eval_ms_per_example": _num(c.get("eval_ms_per_example")),
        "n_params": c.get("n_params"),
        "device": c.get("device", rec.get("device")),
        "threads": c.get("threads", rec.get("threads")),
    }
    for key in ("device_name", "epochs", "fit_examples", "eval_seconds"):
        if key in c:
            out[key] = c[key]
    return out


def aggregate_costs(costs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean of the numeric cost figures of several runs (seeds); devices and threads listed."""
    if not costs:
        return {}
    out: dict[str, Any] = {}
    for _, key in COST_COLUMNS:
        vals = [c.get(key) for c in costs]
        if key in ("device", "threads"):
            uniq = list(dict.fromkeys(str(v) for v in vals if v is not None))
            out[key] = ",".join(uniq) if uniq else None
            continue
        nums = [v for v in (_num(x) for x in vals) if v is not None]
        out[key] = float(np.mean(nums)) if nums else None
    kinds = {c.get("peak_memory_kind") for c in costs if c.get("peak_memory_kind")}
    out["peak_memory_kind"] = ",".join(sorted(kinds)) if kinds else None
    out["runs"] = len(costs)
    return out


def _fmt_num(v: Any, key: str) -> str:
    x = _num(v)
    if x is None:
        return "–" if key not in ("device", "threads") or v is None else str(v)
    if key == "n_params":
        return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{int(x):,}"
    if key == "threads":
        return str(int(x))
    if key in ("examples_per_s", "peak_memory_mb"):
        return f"{x:,.0f}"
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def cost_cells(cost: Mapping[str, Any] | None) -> list[str]:
    """Table cells of `COST_COLUMNS` (– for missing figures)."""
    cost = cost or {}
    return [_fmt_num(cost.get(key), key) if key not in ("device",) else str(cost.get(key) or "–")
            for _, key in COST_COLUMNS]


def per_example_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-example values of `metric` (e.g. "MRR@20") from ranks (NaN for rows without a target)."""
    return per_example_from_ranks(ranks, metric)
