"""The report command: one self-contained HTML page of the results directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import JsonOpt, ResultsDirOpt, emit_json, existing_results_dir, stdout_console


@app.command()
def report(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to write the page (default: <results>/report.html).", show_default=False)] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", "-d", help="Only these datasets (repeatable; default: all).", show_default=False)] = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Leaderboard metric (repeatable; default P@20 and MRR@20).", show_default=False)] = None,
    results_dir: ResultsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write one self-contained HTML page: leaderboards beside published figures (sortable), learning
    curves, ablation charts with significance marks, reproduced tables and every run's provenance."""
    from sbrbench.report import write_report

    res = write_report(existing_results_dir(results_dir), out, datasets=dataset, metrics=metric)
    if json_out:
        emit_json(res)
        return
    skipped = f", {res['skipped']} skipped (incomplete or unreadable)" if res["skipped"] else ""
    stdout_console().print(
        f"wrote {res['path']} ({res['bytes'] / 1024:.0f} KiB, {res['runs']} runs{skipped}, {res['figures']} figures, "
        f"{res['ablations']} ablations, {res['reproductions']} reproduced tables; {res['seconds']:.1f} s); "
        "open it in any browser, no network needed", soft_wrap=True)
