"""The leaderboard: run records → mean ± std over seeds, beside published figures.

Runs are read from `<results>/runs/<dataset>/<model>/<run_id>/metrics.json`. Runs whose status is
not "complete", whose record is unreadable, or that have no record yet (being written, or killed
first) are skipped and counted. Runs are grouped by
(dataset, protocol, model, select_on); when one seed was run several times only its latest run
counts. Runs that selected their epoch on the test set ("paper-compatible", `select_on = "test"`)
are reported apart from validation-selected runs: their numbers are optimistic by construction.
Runs are also grouped by tuning budget (`sbrbench.budget`: "untuned", or "tuned, N trials" for the
final runs of `sbrbench tune`), and rows are ranked only within one budget.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrbench import paper_figures
from sbrbench.budget import TUNE_NOTE, UNTUNED, budget_label
from sbrbench.errors import SbrError
from sbrbench.guards import annotate_rows, leaderboard_runs
from sbrbench.honesty import COST_COLUMNS, MARK_LEGEND, cost_cells
from sbrbench.io import atomic_write_text
from sbrbench.metrics import DEFAULT_METRICS, metrics_from_ranks, parse_metric
from sbrbench.paths import results_dir
from sbrbench.results import RunDir

log = logging.getLogger(__name__)

MODES = {"valid": "validation-selected", "test": "paper-compatible (epoch selected on test)"}


@dataclass
class Leaderboard:
    """Aggregated rows plus what was skipped; `rows` are plain dicts (see `build_leaderboard`)."""

    metrics: list[str]
    rows: list[dict[str, Any]]
    n_runs: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    split: str = "test"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "metrics": self.metrics, "split": self.split, "n_runs": self.n_runs,
            "n_skipped": len(self.skipped), "skipped": self.skipped, "rows": self.rows,
        }


def _canonical(metric: str) -> str:
    fam, k = parse_metric(metric)
    return f"{fam}@{k}"


def _metric_values(run: RunDir, rec: dict[str, Any], split: str, metrics: list[str]) -> dict[str, float]:
    stored = rec.get(split) or {}
    have: dict[str, float] = {}
    if isinstance(stored, dict):
        for key, v in stored.items():
            try:
                have[_canonical(str(key))] = float(v)
            except (SbrError, TypeError, ValueError):
                continue
    missing = [m for m in metrics if m not in have]
    if missing and run.has_ranks(split):
        ks = sorted({parse_metric(m)[1] for m in missing})
        have.update({k: v for k, v in metrics_from_ranks(run.load_ranks(split), ks).items() if k not in have})
    return {m: have[m] for m in metrics if m in have}


def collect_runs(
    results_root: Path, dataset: str | None = None, split: str = "test", metrics: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Read every run record under `results_root/runs`; returns (runs, skipped with reasons)."""
    metrics = metrics or list(DEFAULT_METRICS)
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    root = results_root / "runs"
    pattern = f"{dataset}/*/*" if dataset else "*/*/*"
    for run_dir in sorted(p for p in root.glob(pattern) if p.is_dir()):
        run = RunDir(run_dir)
        mpath = run.metrics_path
        if not mpath.is_file():  # being written, or killed before its record: said, never read
            skipped.append({"run": str(run_dir), "reason": f"no metrics.json yet (status {run.status()!r})"})
            continue
        try:
            rec = run.read_metrics()
        except SbrError as exc:
            skipped.append({"run": str(run_dir), "reason": f"unreadable metrics.json ({exc})"})
            continue
        status = rec.get("status")
        if status != "complete":
            skipped.append({"run": str(run_dir), "reason": f"status {status!r}"})
            continue
        try:
            values = _metric_values(run, rec, split, metrics)
        except SbrError as exc:
            skipped.append({"run": str(run_dir), "reason": str(exc)})
            continue
        if not values:
            skipped.append({"run": str(run_dir), "reason": f"no {split} metrics"})
            continue
        runs.append({
            "run_dir": str(run_dir),
            "dataset": str(rec.get("dataset") or run_dir.parent.parent.name),
            "model": str(rec.get("model") or run_dir.parent.name),
            "protocol": str(rec.get("protocol") or "?"),
            "select_on": str(rec.get("select_on") or "valid"),
            "seed": rec.get("seed"),
            "mtime": mpath.stat().st_mtime,
            "budget": budget_label(run.read_sidecar(TUNE_NOTE)),  # "untuned" or "tuned, N trials"
            "values": values,
            "unfitted_share": ((rec.get("unfitted_targets") or {}).get(split) or {}).get("unfitted_share"),
        })
    return runs, skipped


def build_leaderboard(
    results_root: str | Path | None = None,
    dataset: str | None = None,
    metrics: list[str] | tuple[str, ...] | None = None,
    split: str = "test",
) -> Leaderboard:
    """Aggregate the runs under `results_root` (default `sbrbench.paths.results_dir()`).

    Each row: dataset, protocol, model, select_on, mode, n (runs = seeds), seeds, and for each
    metric M: `M` (mean, fraction), `M std` (sample std, NaN when n = 1), `M published`
    (fraction or None) and `M source` (published table key). Sorted by dataset, protocol,
    selection (validation first) and the first metric, best first.
    """
    root = results_dir(results_root)
    mets = [_canonical(m) for m in (metrics or DEFAULT_METRICS)]
    runs, skipped = collect_runs(root, dataset, split, mets)
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in runs:
        key = (r["dataset"], r["protocol"], r["model"], r["select_on"], r["budget"],
               r["seed"] if r["seed"] is not None else r["run_dir"])
        if key not in latest or r["mtime"] > latest[key]["mtime"]:
            latest[key] = r
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in latest.values():
        groups.setdefault((r["dataset"], r["protocol"], r["model"], r["select_on"], r["budget"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for (ds, proto, model, sel, budget), rs in groups.items():
        row: dict[str, Any] = {
            "dataset": ds, "protocol": proto, "model": model, "select_on": sel,
            "mode": MODES.get(sel, sel), "budget": budget, "n": len(rs),
            "seeds": sorted((r["seed"] for r in rs if r["seed"] is not None), key=str),
            "runs": [{"run_dir": r["run_dir"], "seed": r["seed"], "values": r["values"]} for r in rs],
            "unfitted_share": max((r["unfitted_share"] for r in rs if r["unfitted_share"] is not None), default=None),
        }
        for m in mets:
            vals = np.array([r["values"][m] for r in rs if m in r["values"]], dtype=np.float64)
            row[m] = float(vals.mean()) if vals.size else None
            row[f"{m} std"] = float(vals.std(ddof=1)) if vals.size > 1 else None
            fig = paper_figures.find(ds, model, m)
            row[f"{m} published"] = fig.value if fig else None
            row[f"{m} source"] = fig.table if fig else None
        rows.append(row)
    first = mets[0]
    # ranked only within one tuning budget: "untuned" first, then "tuned, N trials" (Shehzad & Jannach 2023)
    rows.sort(key=lambda r: (r["dataset"], r["protocol"], r["select_on"] != "valid", r["select_on"],
                             r["budget"] != UNTUNED, r["budget"],
                             -(r[first] if r[first] is not None else -math.inf), r["model"]))
    # every row against its table's best (Holm over the table), seed stability, cost from the records
    annotate_rows(rows, mets, split, table_key=lambda r: (r["dataset"], r["protocol"], r["select_on"], r["budget"]),
                  runs_of=leaderboard_runs)
    return Leaderboard(metrics=mets, rows=rows, n_runs=len(runs), skipped=skipped, split=split)


def _pct(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def format_cell(row: dict[str, Any], metric: str) -> str:
    """`mean ± std` in percent with 2 decimals (std omitted for one run)."""
    mean, std = row.get(metric), row.get(f"{metric} std")
    if mean is None:
        return "–"
    mark = (row.get("marks") or {}).get(metric, "")  # significance against the table's best, seed stability
    return (f"{_pct(mean)} ± {_pct(std)}" if std is not None else _pct(mean)) + (f" {mark}" if mark else "")


def display_rows(lb: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and string rows for terminal / Markdown tables (percent, like the papers)."""
    header = ["dataset", "protocol", "model", "selection", "tuning budget", "n"]
    for m in lb.metrics:
        header += [f"{m} (%)", f"{m} published (%)"]
    header += [h for h, _ in COST_COLUMNS]
    out = []
    for r in lb.rows:
        cells = [r["dataset"], r["protocol"], r["model"],
                 "test (paper-compatible)" if r["select_on"] == "test" else r["select_on"], r.get("budget", UNTUNED),
                 str(r["n"])]
        for m in lb.metrics:
            pub = r[f"{m} published"]
            cells += [format_cell(r, m), f"{_pct(pub)} [{r[f'{m} source']}]" if pub is not None else ""]
        out.append(cells + cost_cells(r.get("cost")))
    return header, out


def unfitted_lines(lb: Leaderboard) -> list[str]:
    """One line per dataset and selection whose runs record examples with a target no fitted session
    contains (`metrics.json` `unfitted_targets`): no model saw those targets in training."""
    shares: dict[tuple[str, str], float] = {}
    for r in lb.rows:
        if r.get("unfitted_share"):
            key = (r["dataset"], r["select_on"])
            shares[key] = max(shares.get(key, 0.0), float(r["unfitted_share"]))
    return [f"{ds}, {MODES.get(sel, sel)} runs: {100 * s:.2f}% of the {lb.split} examples have a target that no "
            f"fitted session contains (no model saw it in training; `sbrbench evaluate RUN` shows the hit rate on them)"
            for (ds, sel), s in sorted(shares.items())]


def render_leaderboard_markdown(lb: Leaderboard) -> str:
    """The leaderboard as Markdown: one table per (dataset, protocol), test-selected rows apart."""
    from tabulate import tabulate

    header, cells = display_rows(lb)
    lines = [
        "# sbrbench leaderboard", "",
        f"Split: {lb.split}. Values in percent, mean ± sample std over seeds (n = runs). "
        "P@K is the hit rate (the SR-GNN papers' \"precision\"). Published figures in brackets name "
        "their table (see `sbrbench.paper_figures`).", "",
    ]
    sections: dict[tuple[str, str], list[tuple[dict[str, Any], list[str]]]] = {}
    for r, c in zip(lb.rows, cells):
        sections.setdefault((r["dataset"], r["protocol"]), []).append((r, c))
    keep = [i for i, h in enumerate(header) if h not in ("dataset", "protocol", "selection")]
    for (ds, proto), items in sections.items():
        lines += [f"## {ds} ({proto})", ""]
        for sel, title in (("valid", "Validation-selected runs"),
                           ("test", "Paper-compatible runs (epoch selected on the TEST set; optimistic, "
                                    "not comparable with the rows above)")):
            part = [c for r, c in items if (r["select_on"] == "test") == (sel == "test")]
            if not part:
                continue
            lines += [f"**{title}**", "",
                      tabulate([[c[i] for i in keep] for c in part], headers=[header[i] for i in keep],
                               tablefmt="github", disable_numparse=True), ""]
    if not lb.rows:
        lines += ["(no complete runs)", ""]
    lines += [line for u in unfitted_lines(lb) for line in (u + ".", "")]
    if lb.skipped:
        lines += [f"{len(lb.skipped)} run(s) skipped (incomplete or unreadable).", ""]
    if len({r.get("budget", UNTUNED) for r in lb.rows}) > 1:
        lines += ["Tuning budget: the hyper-parameter search a row got (`sbrbench tune`: tuned, N trials). Rows are "
                  "ranked and tested only against rows of the same budget: tuned and untuned rows are not comparable.",
                  ""]
    if lb.rows:
        lines += [f"Marks: {MARK_LEGEND}. Cost columns come from the run records (mean over seeds; peak MB is "
                  "the process's peak RSS on CPU, CUDA memory allocated on a GPU).", ""]
    return "\n".join(lines)


def render_csv(lb: Leaderboard) -> str:
    """The leaderboard as CSV (fractions, not percent; one column per statistic)."""
    cols = ["dataset", "protocol", "model", "select_on", "mode", "budget", "n", "seeds"]
    for m in lb.metrics:
        cols += [m, f"{m} std", f"{m} published", f"{m} source"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols + [f"{m} mark" for m in lb.metrics] + [key for _, key in COST_COLUMNS])
    for r in lb.rows:
        w.writerow(["" if r.get(c) is None else (" ".join(map(str, r[c])) if c == "seeds" else r[c]) for c in cols]
                   + [(r.get("marks") or {}).get(m, "") for m in lb.metrics]
                   + ["" if (r.get("cost") or {}).get(k) is None else r["cost"][k] for _, k in COST_COLUMNS])
    return buf.getvalue()


def write_leaderboard(lb: Leaderboard, results_root: str | Path | None = None) -> tuple[Path, Path]:
    """Write `leaderboard.md` and `leaderboard.csv` atomically into `results_root` (created if needed;
    default: the results directory)."""
    root = results_dir(results_root)
    if root.exists() and not root.is_dir():
        raise SbrError(f"cannot write the leaderboard into {root}: not a directory")
    md, cs = root / "leaderboard.md", root / "leaderboard.csv"
    atomic_write_text(md, render_leaderboard_markdown(lb))
    atomic_write_text(cs, render_csv(lb))
    return md, cs
