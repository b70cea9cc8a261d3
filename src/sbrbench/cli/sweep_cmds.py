"""Many-run commands on Ray: sweep (a grid of runs) and tune (hyper-parameter search)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import DataDirOpt, JsonOpt, ResultsDirOpt, emit_json, stdout_console

WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Runs at once (a local Ray instance gets workers × --cpus-per-trial CPUs; default: the free "
    "cores, or the cluster's CPUs); 0: one at a time in this process, without Ray.", show_default=False)]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="An existing Ray cluster HOST:PORT (default $RAY_ADDRESS, else a local instance started "
    "and stopped by sbrbench). Data and results directories must be shared with its nodes.", show_default=False)]
CpusOpt = Annotated[float, typer.Option("--cpus-per-trial", help="CPUs declared per trial (also its torch threads).")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-trial", help="GPUs declared per trial (> 0: trains on CUDA).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="A setting and its grid values: key=v1,v2 (repeatable).", show_default=False)]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Epochs of every neural run.", show_default=False)]
ProtocolOpt = Annotated[str | None, typer.Option("--protocol", help="Preprocessing protocol.", show_default=False)]
MaxTrainOpt = Annotated[int | None, typer.Option(
    "--max-train-examples", help="Train on the first N training examples only.", show_default=False)]
NameOpt = Annotated[str | None, typer.Option("--name", help="Name of the sweep / study.", show_default=False)]


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _seeds(value: str | None) -> list[int] | None:
    from sbrbench.errors import SbrError

    items = _split(value)
    if items is None:
        return None
    try:
        return [int(s) for s in items]
    except ValueError:
        raise SbrError(f"--seeds expects integers like 42,43, got {value!r}") from None


class _Progress:
    """One line on stderr per event: counts, ETA and what happened."""

    def __call__(self, s: dict[str, Any]) -> None:
        eta = "–" if s["eta_seconds"] is None else _duration(s["eta_seconds"])
        reused = f" · {s['reused']} reused" if s["reused"] else ""
        pruned = f" · {s['pruned']} pruned" if s.get("pruned") else ""
        print(f"[{s['done']} done · {s['running']} running · {s['failed']} failed{pruned}{reused} · "
              f"{s['pending']} pending "
              f"of {s['total']} · {_duration(s['elapsed_seconds'])} · ETA {eta}] {s['message']}",
              file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def sweep(
    file: Annotated[Path | None, typer.Argument(help="A TOML grid file (optional).", show_default=False)] = None,
    models: Annotated[str | None, typer.Option("--models", help="Models, comma-separated.", show_default=False)] = None,
    datasets: Annotated[str | None, typer.Option("--datasets", help="Datasets, comma-separated.",
                                                 show_default=False)] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds, comma-separated (default 42).",
                                              show_default=False)] = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    select_on: Annotated[str | None, typer.Option("--select-on", help="valid (default) or test (paper habit).",
                                                  show_default=False)] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Selection metric.", show_default=False)] = None,
    protocol: ProtocolOpt = None,
    max_train_examples: MaxTrainOpt = None,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    cpus_per_trial: CpusOpt = 1.0,
    gpus_per_trial: GpusOpt = 0.0,
    name: NameOpt = None,
    status: Annotated[bool, typer.Option("--status", help="Only say which cells are done, running, interrupted "
                                                          "or missing.")] = False,
    data_dir: DataDirOpt = None,
    results_dir: ResultsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a grid of models × datasets × seeds × settings on Ray; re-run to skip finished cells."""
    from sbrbench import sweep as sw
    from sbrbench.options import parse_key_values

    settings = parse_key_values(set_, "--set", "values")
    if epochs is not None:
        settings["epochs"] = [epochs]
    grid = sw.make_grid(file, models=_split(models), datasets=_split(datasets), seeds=_seeds(seeds),
                        settings=settings, select_on=select_on, metric=metric, protocol=protocol,
                        max_train_examples=max_train_examples)
    if status:
        rows = sw.sweep_status(grid, results_dir=results_dir)
        if json_out:
            emit_json({"cells": rows})
            return
        from rich.table import Table

        t = Table("cell", "status", "epochs", "run")
        for r in rows:
            epochs = str(r["epochs_done"]) if r["epochs_done"] else ("fit" if r["status"] == "done" else "–")
            t.add_row(r["label"], r["status"], epochs, r["run_dir"] or "–")
        stdout_console().print(t)
        return
    out = sw.sweep(grid, workers=workers, address=address, cpus_per_trial=cpus_per_trial,
                   gpus_per_trial=gpus_per_trial, data_dir=data_dir, results_dir=results_dir, name=name,
                   progress=_Progress())
    con = stdout_console(json_out)
    _print_summary(con, out)
    if json_out:
        emit_json({k: v for k, v in out.items() if k != "markdown"})


def _print_summary(con: Any, out: dict[str, Any]) -> None:
    from rich.table import Table

    from sbrbench.sweep import summary_rows

    head, rows = summary_rows(out, short=True)
    counts = ", ".join(f"{n} {s}" for s, n in out["counts"].items())
    t = Table(title=f"sweep {out['name']}: {counts}")
    for h in head:
        t.add_column(h, justify="right" if "%" in h or h in ("seed", "seconds") else "left",
                     overflow="fold" if h == "run / error" else "ellipsis")
    for r in rows:
        t.add_row(*r, style="red" if r[4] not in ("done", "reused") else None)
    con.print(t)
    con.print(f"written: {out['files']['markdown']}")


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help="Model name (see `sbrbench models`).", show_default=False)],
    dataset: Annotated[str, typer.Argument(help="Dataset name or processed directory.", show_default=False)],
    trials: Annotated[int, typer.Option("--trials", help="Trial budget of the study (finished trials count, "
                                                         "also those of earlier invocations).")] = 20,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds of the final runs of the best configuration "
                                                              "(default: --seed).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler and of the trials' training.")] = 42,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe or random.")] = "tpe",
    no_prune: Annotated[bool, typer.Option("--no-prune", help="No median pruning of neural trials.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Pin a setting for every trial: key=value.",
                                                   show_default=False)] = None,
    epochs: EpochsOpt = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Validation metric to maximise (default: the "
                                                                "selection metric).", show_default=False)] = None,
    protocol: ProtocolOpt = None,
    max_train_examples: MaxTrainOpt = None,
    name: NameOpt = None,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    cpus_per_trial: CpusOpt = 1.0,
    gpus_per_trial: GpusOpt = 0.0,
    data_dir: DataDirOpt = None,
    results_dir: ResultsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tune a model's hyper-parameters with Optuna (on Ray), selecting on validation; re-run the best."""
    from sbrbench.options import parse_key_values
    from sbrbench.tune import tune as run_tune

    overrides: dict[str, Any] = parse_key_values(set_, "--set")
    if epochs is not None:
        overrides["epochs"] = epochs
    out = run_tune(model, dataset, trials=trials, seeds=_seeds(seeds), seed=seed, sampler=sampler,
                   prune=not no_prune, overrides=overrides, metric=metric, protocol=protocol,
                   max_train_examples=max_train_examples, name=name, workers=workers, address=address,
                   cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, data_dir=data_dir,
                   results_dir=results_dir, progress=_Progress())
    con = stdout_console(json_out)
    con.print(out["markdown"], soft_wrap=True)
    con.print(f"study: {out['files']['study']} (inspect: {out['inspect']})")
    if json_out:
        emit_json({k: v for k, v in out.items() if k != "markdown"})
