"""`sbrbench audit`: leak and data-quality checks of a dataset, its graphs, models and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import DataDirOpt, JsonOpt, emit_json, stdout_console


@app.command()
def audit(
    dataset: Annotated[str | None, typer.Argument(help="Processed dataset (name or directory).", show_default=False)] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", help="Protocol (default: the dataset's).", show_default=False)] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Also build/fit this model and check its structures and batch independence (repeatable).",
        show_default=False)] = None,
    run: Annotated[Path | None, typer.Option(
        "--run", help="Check a run's model (its structures and batch independence) and its dataset.",
        show_default=False)] = None,
    select_on: Annotated[str, typer.Option("--select-on", help="Fit splits for --model and the graphs: valid (train only) or test (train + valid).")] = "valid",
    graphs: Annotated[bool, typer.Option("--graphs/--no-graphs", help="Check the library's dataset-level graphs.")] = True,
    length_buckets: Annotated[str, typer.Option("--length-buckets", help="Prefix-length bucket edges (2,5: <=2, 3-5, >5).")] = "2,5",
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Audit a dataset for leaks and traps (duplicates, unseen targets, repeats, split crossing,
    length and popularity shift) and check that no dataset-level structure holds test-only pairs.

    Exits non-zero when a leak is found."""
    from sbrbench.audit import audit as run_audit
    from sbrbench.errors import SbrError
    from sbrbench.honesty import parse_length_buckets

    if select_on not in ("valid", "test"):
        raise SbrError(f"--select-on must be valid or test, got {select_on!r}")
    if dataset is None and run is None:
        raise SbrError("give a DATASET (see `sbrbench datasets`) or --run RUN_DIR")
    rep = run_audit(dataset, protocol=protocol, data_dir=data_dir, models=model or (), run=run,
                    select_on=select_on, graphs=graphs, edges=parse_length_buckets(length_buckets))
    if json_out:
        emit_json(rep)
    else:
        _print_audit(rep)
    if rep["leaks"]:
        raise SbrError(f"audit of {rep['dataset']} found {rep['leaks']} leak(s): "
                       + "; ".join(f["message"] for f in rep["findings"] if f["severity"] == "leak"))


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _print_audit(rep: dict[str, Any]) -> None:
    from rich.table import Table

    from sbrbench.honesty import length_buckets

    con = stdout_console()
    c = rep["checks"]
    t = Table(title=f"audit of {rep['dataset']} ({rep['protocol']}), {rep['items']:,} items, {rep['seconds']:.1f} s")
    t.add_column("check")
    t.add_column("figures")
    d = c["duplicates"]
    t.add_row("duplicates", f"test sessions equal to a training session {d['exact']:,} ({_pct(d['exact_share'])}), "
                            f"start of a longer one {d['prefix']:,} ({_pct(d['prefix_share'])}); test examples at the "
                            f"start of a training session {d['examples']:,} ({_pct(d['examples_share'])})")
    u = c["unseen_targets"]
    t.add_row("unseen targets", f"{u['unseen']:,} test examples ({_pct(u['share'])}), {u['items']:,} items")
    r = c["repeats"]
    t.add_row("repeats", f"{r['consecutive_clicks']:,} consecutive repeated clicks ({_pct(r['share_of_clicks'])}) in "
                         f"{r['sessions']:,} sessions; test target = last click {_pct(r['test_target_is_last_click_share'])}")
    x = c["crossing"]
    t.add_row("split crossing", f"shared sessions {x['shared_sessions']:,}; test targets read by training "
                                f"{x['test_targets_read_by_fit']:,}; test sessions older than training "
                                f"{'n/a (no times)' if x['time_overlap'] is None else format(x['time_overlap'], ',')}")
    t.add_row("target in prefix", f"{_pct(c['target_in_prefix']['share'])} of test targets")
    ln = c["lengths"]
    edges = ln["edges"]
    names = [b["bucket"] for b in length_buckets(edges)]
    for split, st in ln["splits"].items():
        t.add_row(f"lengths: {split}", f"mean {st['mean']:.2f}, median {st['median']:.0f}, p90 {st['p90']:.0f}, "
                                       f"max {st['max']}; " + ", ".join(f"{n} {_pct(v)}" for n, v in zip(names, st["buckets"])))
    if ln["train_test_tv"] is not None:
        t.add_row("lengths: train vs test", f"total variation {ln['train_test_tv']:.3f}")
    p = c["popularity"]
    t.add_row("popularity", f"top-{p['k']} overlap {p['topk_jaccard']:.2f}; train top-{p['k']} share of training clicks "
                            f"{_pct(p['train_clicks_in_train_topk'])} vs of test targets {_pct(p['test_targets_in_train_topk'])}; "
                            f"Spearman {p['spearman'] if p['spearman'] is None else format(p['spearman'], '.2f')}")
    st = rep.get("structures")
    if st:
        t.add_row("library graphs", f"{st['pairs']:,} pairs checked against the {'+'.join(st['fit_splits'])} sessions: "
                                    f"{st['test_only']} test-only, {st.get('valid_only', 0)} validation-only, "
                                    f"{st['not_in_fit']} not in the fitted sessions")
    for m in rep.get("models", []):
        s, b = m["structures"], m["batch"]
        names_ = ", ".join(x["structure"] for x in s["structures"]) or "none"
        t.add_row(f"model {m['model']}", f"structures ({names_}): {s['pairs']:,} pairs, {s['test_only']} test-only, "
                                         f"{s['valid_only']} validation-only; batch independence on {b['examples']} "
                                         f"test examples: {'yes' if b['independent'] else 'NO'}")
    con.print(t)
    if not rep["findings"]:
        con.print("no findings")
    for f in rep["findings"]:
        con.print(f"{f['severity']}: {f['message']}")
