"""Evaluation commands: evaluate, leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import JsonOpt, ResultsDirOpt, emit_json, existing_results_dir, stdout_console
from sbrbench.errors import SbrError


@app.command()
def evaluate(
    run_dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="A run directory (results/runs/<dataset>/<model>/<run_id>); two with --compare.",
                       show_default=False),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate: test or valid.")] = "test",
    ks: Annotated[str, typer.Option("--ks", help="Cut-offs, comma-separated.")] = "5,10,20",
    compare: Annotated[
        bool, typer.Option("--compare", help="Compare RUN_A RUN_B with paired significance tests.")
    ] = False,
    metric: Annotated[str, typer.Option("--metric", help="Metric for --compare, e.g. MRR@20 or P@20.")] = "MRR@20",
    recompute: Annotated[
        bool, typer.Option("--recompute", help="Re-run the model from its checkpoint instead of stored ranks.")
    ] = False,
    gpu: Annotated[int | None, typer.Option("--gpu", help="Evaluate on CUDA device N.", show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", help="Torch device, e.g. cpu or cuda:1.",
                                               show_default=False)] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for --recompute.",
                                                show_default=False)] = None,
    length_buckets: Annotated[str, typer.Option(
        "--length-buckets", help="Prefix-length bucket edges for the per-length metrics (2,5: <=2, 3-5, >5).")] = "2,5",
    json_out: JsonOpt = False,
) -> None:
    """Re-evaluate a run on a split at any Ks; compare two runs with paired tests."""
    from sbrbench import evaluate as ev
    from sbrbench.device import resolve_device

    paths = run_dirs or []
    if compare:
        if len(paths) != 2:
            raise SbrError(f"--compare needs exactly two run directories, got {len(paths)}")
        res = ev.compare_runs(paths[0], paths[1], split=split, metric=metric)
        _print_compare(res, json_out)
        return
    if len(paths) != 1:
        raise SbrError(f"give one run directory to evaluate (or two with --compare), got {len(paths)}")
    dev = resolve_device(gpu, device) if (recompute or gpu is not None or device) else "cpu"
    if recompute:
        from sbrbench.device import resolve_threads

        resolve_threads(threads)
    res = ev.evaluate_run_dir(paths[0], split=split, ks=ks, recompute=recompute, device=dev,
                              length_buckets=length_buckets)
    _print_metrics(res, json_out)
    if not json_out:
        _print_honesty(res)


def _print_metrics(res: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(res)
        return
    from rich.table import Table

    from sbrbench.metrics import EXTRA_METRICS, METRICS

    con = stdout_console(json_out)
    ks = res["ks"]
    t = Table(title=f"{res['model']} on {res['dataset']} ({res['protocol']}), {res['split']} split, "
                    f"{res['n_examples']} examples — {res['source']}")
    t.add_column("metric")
    for k in ks:
        t.add_column(f"@{k} (%)", justify="right")
    for fam in (*METRICS, *EXTRA_METRICS):
        vals = [res["metrics"].get(f"{fam}@{k}") for k in ks]
        if fam in EXTRA_METRICS and all(v is None for v in vals):
            continue  # an extra family the run did not ask for
        t.add_row(fam, *("–" if v is None else f"{100 * v:.2f}" for v in vals))
    con.print(t)


def _print_honesty(res: dict[str, Any]) -> None:
    """Tie diagnostics (optimistic beside pessimistic when they differ) and metrics per prefix length."""
    from rich.table import Table

    con = stdout_console(False)
    ties = res.get("ties")
    if ties is None:
        con.print("ties: not recorded by this run (re-evaluate with --recompute to measure them)")
    else:
        line = (f"ties: {ties['tied_examples']} of {ties['examples']} examples "
                f"({100 * ties['tied_share']:.2f}%) have a target tying with another item")
        if any(abs(v) > 0 for v in ties["gap"].values()):
            t = Table(title="pessimistic (sbrbench) vs optimistic ranks of tied targets")
            for col in ("metric", "pessimistic (%)", "optimistic (%)", "gap (points)"):
                t.add_column(col, justify="left" if col == "metric" else "right")
            for k, v in ties["pessimistic"].items():
                t.add_row(k, f"{100 * v:.2f}", f"{100 * ties['optimistic'][k]:.2f}", f"{100 * ties['gap'][k]:+.2f}")
            con.print(line)
            con.print(t)
        else:
            con.print(line + "; optimistic and pessimistic figures agree")
    buckets = res.get("by_length")
    if buckets:
        keys = [k for k in buckets[0]["metrics"] if k.startswith(("HR@", "MRR@"))] or list(buckets[0]["metrics"])
        t = Table(title="metrics per prefix length (%)")
        for col in ["bucket", "examples", "share", *keys]:
            t.add_column(col, justify="left" if col == "bucket" else "right")
        for b in buckets:
            t.add_row(f"{b['name']} ({b['bucket']})", f"{b['examples']:,}", f"{100 * b['share']:.1f}",
                      *("–" if k not in b["metrics"] else f"{100 * b['metrics'][k]:.2f}" for k in keys))
        con.print(t)
    elif res.get("by_length_note"):
        con.print(f"per-length metrics: {res['by_length_note']}")
    unfitted = res.get("unfitted")
    if unfitted and unfitted["unfitted_examples"]:
        on, off = unfitted["unfitted"] or {}, unfitted["fitted"] or {}
        k = next((k for k in reversed(list(on)) if k.startswith("HR@")), None)  # the largest K
        con.print(f"targets the fit never contains: {unfitted['unfitted_examples']:,} of {unfitted['examples']:,} "
                  f"examples ({100 * unfitted['unfitted_share']:.2f}%)"
                  + (f"; {k} {100 * on[k]:.2f}% on them, {100 * off[k]:.2f}% on the others" if k and k in off else ""),
                  soft_wrap=True)


def _print_compare(res: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(res)
        return
    from rich.table import Table

    con = stdout_console(json_out)
    t = Table(title=f"{res['metric']} on {res['split']} ({res['n_examples']} paired examples)")
    for col in ("run", "model", "seed", f"{res['metric']} (%)"):
        t.add_column(col, justify="right" if "%" in col else "left")
    for tag in ("run_a", "run_b"):
        r = res[tag]
        t.add_row(f"{tag[-1].upper()}: {Path(r['run_dir']).name}", str(r["model"]), str(r["seed"]),
                  f"{100 * r['mean']:.2f}")
    con.print(t)
    rel = f" ({100 * res['relative_diff']:+.1f}% relative)" if res["relative_diff"] is not None else ""
    con.print(f"B − A = {100 * res['diff']:+.2f} points{rel}; B better on {res['wins_b']}, "
              f"A better on {res['wins_a']}, equal on {res['ties']}")
    con.print(f"Wilcoxon signed-rank p = {res['wilcoxon']['pvalue']:.3g}; "
              f"paired t-test p = {res['ttest_rel']['pvalue']:.3g}")


@app.command()
def leaderboard(
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only this dataset.", show_default=False)] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Metric column (repeatable); default P@20 and MRR@20.", show_default=False),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split whose metrics are aggregated.")] = "test",
    results_dir: ResultsDirOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Directory for leaderboard.md and leaderboard.csv (default: the results directory; "
        "e.g. to read committed records under results/reference without writing beside them).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Aggregate runs into a leaderboard (mean ± std over seeds) beside published figures."""
    from sbrbench import leaderboard as lbm

    results_dir = existing_results_dir(results_dir)
    lb = lbm.build_leaderboard(results_dir, dataset=dataset, metrics=metric, split=split)
    md, cs = lbm.write_leaderboard(lb, out if out is not None else results_dir)
    if json_out:
        emit_json({**lb.to_dict(), "markdown": str(md), "csv": str(cs)})
        return
    from rich.table import Table

    con = stdout_console(json_out)
    header, rows = lbm.display_rows(lb)
    from sbrbench.honesty import COST_COLUMNS, MARK_LEGEND

    n_cost = len(COST_COLUMNS)  # the cost columns go into a table of their own below
    shown = [i for i in range(len(header) - n_cost) if any(row[i] for row in rows)]  # drop all-empty columns
    # a descriptive column with one value in every row goes to a line below: the table fits 80 columns
    same = {header[i]: rows[0][i] for i in shown if rows and header[i] in ("dataset", "protocol", "selection",
                                                                           "tuning budget", "n")
            and len({row[i] for row in rows}) == 1}
    shown = [i for i in shown if header[i] not in same]
    title = f"sbrbench leaderboard ({lb.split} split, %, mean ± std over seeds)"
    t = Table(title=title, min_width=len(title))
    for i in shown:
        name = "paper" if header[i].endswith(" published (%)") else header[i]
        t.add_column(name, justify="right" if "%" in header[i] or header[i] == "n" else "left")
    for r, cells in zip(lb.rows, rows):
        t.add_row(*(cells[i] for i in shown), style="yellow" if r["select_on"] == "test" else None)
    con.print(t)
    if same:  # printed, not a caption: a caption wraps to the table's width, a narrow table's to a few letters
        con.print(_pairs(same))
    for line in lbm.unfitted_lines(lb):
        con.print(line)
    if lb.rows:
        names = ["dataset", "model", "selection"] + header[len(header) - n_cost:]
        grid = [[r["dataset"], r["model"], r["select_on"], *cells[len(header) - n_cost:]]
                for r, cells in zip(lb.rows, rows)]
        const = {j: grid[0][j] for j, h in enumerate(names)
                 if h != "model" and len({g[j] for g in grid}) == 1}
        cols = [j for j in range(len(names)) if j not in const]
        title = "cost (from the run records, mean over seeds)"
        if len(grid) == 1:  # one row: a line, not a table of one model name
            con.print(f"{title} of {grid[0][1]}: " + _pairs({names[j]: v for j, v in const.items()}))
        else:
            ct = Table(title=title, min_width=len(title))
            for j in cols:
                ct.add_column(names[j], justify="left" if names[j] in ("dataset", "model", "selection", "device")
                              else "right")
            for g in grid:
                ct.add_row(*(g[j] for j in cols))
            con.print(ct)
            if const:
                con.print(_pairs({names[j]: v for j, v in const.items()}))
        con.print(f"marks: {MARK_LEGEND.replace('`', '')}")
    if any(r["select_on"] == "test" for r in lb.rows):
        con.print("yellow rows: paper-compatible runs that selected their epoch on the test set (optimistic)")
    con.print(f"{lb.n_runs} run(s) aggregated, {len(lb.skipped)} skipped (incomplete or unreadable); "
              f"wrote {md} and {cs}")


def _pairs(values: dict[str, Any]) -> str:
    """`k: v; k: v` — the values every row of a leaderboard table shares, printed below it."""
    return "; ".join(f"{k}: {v}" for k, v in values.items())
