"""Model commands: models, train, ablate, reproduce."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sbrbench.cli.app import app
from sbrbench.cli.common import DataDirOpt, JsonOpt, ResultsDirOpt, emit_json, stdout_console

if TYPE_CHECKING:
    from sbrbench.train.callbacks import TrainingCallback

DEFAULT_DATASET = "diginetica"
GpuOpt = Annotated[int | None, typer.Option("--gpu", help="Use GPU N (cuda:N).", show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu or cuda:N (default cpu).", show_default=False)]
MaxTrainOpt = Annotated[int | None, typer.Option("--max-train-examples", help="Train on the first N training examples only.")]
SelectOnOpt = Annotated[str, typer.Option("--select-on", help="valid (honest) or test (paper habit, recorded).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset name or processed directory.")]
ProtocolOpt = Annotated[str | None, typer.Option("--protocol", help="Preprocessing protocol.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Number of epochs.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads (default: $OMP_NUM_THREADS, else the cores available).",
                 show_default=False),
]
DatasetArg = Annotated[
    str | None,
    typer.Argument(help=f"Dataset name or processed directory (same as --dataset; default {DEFAULT_DATASET}).",
                   show_default=False),
]


def _dataset(positional: str | None, option: str | None) -> str:
    """The dataset given positionally or with --dataset (not two different ones), else the default."""
    from sbrbench.errors import SbrError

    if positional and option and positional != option:
        raise SbrError(f"two datasets given ({positional!r} and --dataset {option!r}); give one")
    chosen = positional or option
    if chosen is None:
        stdout_console(True).print(f"dataset: {DEFAULT_DATASET} (default; choose another with --dataset)")
        return DEFAULT_DATASET
    return chosen


def _device(gpu: int | None, device: str | None) -> str:
    from sbrbench.device import resolve_device

    return resolve_device(gpu, device)


def _progress() -> TrainingCallback:
    from sbrbench.cli.progress import ConsoleProgress

    return ConsoleProgress()


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(
        help="A model: every hyper-parameter with its type, default, per-dataset defaults and meaning.",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the models, one line each (kind, components, the paper it follows); `models NAME` for one in full."""
    from sbrbench.cli.catalogue import show_models

    show_models(name, json_out)


@app.command()
def train(
    model: Annotated[str | None, typer.Argument(help="Model name (see `sbrbench models`).", show_default=False)] = None,
    dataset_arg: DatasetArg = None,
    dataset: DatasetOpt = None,
    protocol: ProtocolOpt = None,
    epochs: EpochsOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    l2: Annotated[float | None, typer.Option("--l2", help="L2 penalty (Adam weight decay).")] = None,
    patience: Annotated[int | None, typer.Option("--patience", help="Early-stopping patience (0: off).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Train N runs with seeds seed, seed+1, ... and print mean ± std.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeatable).")] = None,
    select_on: SelectOnOpt = "valid",
    metric: Annotated[str | None, typer.Option("--metric", help="Selection metric (default MRR@20, or the protocol's: comirec Recall@50).", show_default=False)] = None,
    gpu: GpuOpt = None,
    device: DeviceOpt = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run directory.")] = None,
    max_train_examples: MaxTrainOpt = None,
    threads: ThreadsOpt = None,
    precision: Annotated[str, typer.Option("--precision", help="fp32, tf32 or bf16 (the last two on CUDA).")] = "fp32",
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Repeatable CUDA runs (deterministic kernels; slower).")
    ] = False,
    data_dir: DataDirOpt = None,
    results_dir: ResultsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train (or fit) a model on a processed dataset and write a run record."""
    from sbrbench.errors import SbrError
    from sbrbench.options import parse_key_values
    from sbrbench.train import train as run_train

    overrides: dict[str, object] = parse_key_values(set_, "--set")
    typed = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "l2": l2, "patience": patience}
    overrides.update({k: v for k, v in typed.items() if v is not None})
    if resume is None:
        if model is None:
            raise SbrError("give a MODEL (and a dataset), or --resume RUN_DIR")
        from sbrbench.models import resolve_config

        resolve_config(model, None, overrides)  # an unknown model or setting is named before any data is read
        dataset = _dataset(dataset_arg, dataset)
    dev = _device(gpu, device)
    if seeds is not None and seeds != 1:
        _train_seeds(run_train, model, dataset, seeds=seeds, seed=seed, json_out=json_out, protocol=protocol,
                     data_dir=data_dir, results_dir=results_dir, overrides=overrides, select_on=select_on,
                     metric=metric, device=dev, threads=threads, precision=precision, deterministic=deterministic,
                     max_train_examples=max_train_examples, resume=resume, callback=_progress())
        return
    rec = run_train(
        model, dataset, protocol=protocol, data_dir=data_dir, results_dir=results_dir, overrides=overrides,
        seed=seed, select_on=select_on, metric=metric, device=dev, threads=threads, precision=precision,
        deterministic=deterministic, max_train_examples=max_train_examples, resume=resume, callback=_progress(),
    )
    if json_out:
        emit_json(rec)
        return
    con = stdout_console()
    con.print(f"{rec['model']} on {rec['dataset']} ({rec['status']}, best epoch {rec['best_epoch'] or 'n/a (fitted)'}, "
              f"selected on {rec['select_on']}) → {rec['run_dir']}")
    for split in ("valid", "test"):
        m = rec.get(split)
        if m:
            con.print(f"  {split}: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in m.items() if k.endswith("@20")))


def _train_seeds(run_train: object, model: str | None, dataset: str | None, *, seeds: int, seed: int,
                 json_out: bool, **kw: object) -> None:
    """`train --seeds N`: N runs, each printed, then mean ± std over the seeds."""
    from sbrbench.train.seeds import train_seeds

    out = train_seeds(run_train, model, dataset, seeds=seeds, seed=seed, **kw)  # type: ignore[arg-type]
    if json_out:
        emit_json(out)
        return
    con = stdout_console()
    for rec in out["runs"]:
        con.print(f"seed {rec['seed']}: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in (rec.get("test") or {}).items()
                                                      if k.endswith("@20")) + f" → {rec['run_dir']}")
    summ = out["summary"]
    con.print(f"{out['runs'][0]['model']} on {out['runs'][0]['dataset']}, test split, {summ['n']} seeds "
              f"({', '.join(map(str, summ['seeds']))}), mean ± std:")
    con.print("  " + "  ".join(
        f"{k} {100 * v['mean']:.2f} ± {100 * v['std']:.2f}" if v["std"] is not None else f"{k} {100 * v['mean']:.2f}"
        for k, v in summ["metrics"].items() if k.endswith("@20") and v["mean"] is not None))


@app.command()
def ablate(
    model: Annotated[str, typer.Argument(help="Model name (see `sbrbench models`).", show_default=False)],
    dataset_arg: DatasetArg = None,
    dataset: DatasetOpt = None,
    drop: Annotated[
        list[str] | None, typer.Option("--drop", help="A component to switch off (repeatable; C1,C2 = both at once).")
    ] = None,
    vary: Annotated[
        list[str] | None, typer.Option("--vary", help="Sensitivity study: PARAM=v1,v2,... (repeatable, one at a time).")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="Seeds per variant (default 3 for neural models, 1 otherwise).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="First seed (then seed+1, ...).")] = 42,
    protocol: ProtocolOpt = None,
    epochs: EpochsOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a setting for every variant: key=value.")] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="Metric to report (repeatable; default P@20 and MRR@20, or the protocol's).")
    ] = None,
    select_on: SelectOnOpt = "valid",
    max_train_examples: MaxTrainOpt = None,
    gpu: GpuOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    data_dir: DataDirOpt = None,
    results_dir: ResultsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a model and its variants (--drop components, --vary settings) with the same seeds; report the deltas."""
    from sbrbench.ablate import ablate as run_ablate
    from sbrbench.errors import SbrError
    from sbrbench.options import parse_key_values

    varies = parse_key_values(vary, "--vary", "values")
    if not drop and not varies:
        raise SbrError("ablate needs at least one --drop COMPONENT or --vary PARAM=v1,v2,...")
    overrides: dict[str, object] = parse_key_values(set_, "--set")
    if epochs is not None:
        overrides["epochs"] = epochs
    dataset = _dataset(dataset_arg, dataset)
    out = run_ablate(
        model, dataset, drops=drop or [], varies=varies, seeds=seeds, first_seed=seed, overrides=overrides,
        metrics=metric or None, select_on=select_on, protocol=protocol, data_dir=data_dir,
        results_dir=results_dir, device=_device(gpu, device), threads=threads, max_train_examples=max_train_examples,
        callback=_progress(),
    )
    from sbrbench.ablate import rich_table

    con = stdout_console(json_out)
    con.print(rich_table(out))
    con.print("written: " + ", ".join(out["files"].values()))
    if json_out:
        emit_json(out)


@app.command()
def reproduce(
    table: Annotated[str, typer.Argument(help="Table to reproduce, e.g. srgnn-table2.")],
    budget: Annotated[str, typer.Option("--budget", help="full (paper settings), reduced (3 epochs for every neural row, full data), long (10 epochs, full data), small (1 epoch on the top-1000-item subset) or ci.")] = "full",
    datasets: Annotated[list[str] | None, typer.Option("--datasets", help="Only these datasets.")] = None,
    rows: Annotated[list[str] | None, typer.Option(
        "--rows", help="Train only these rows (labels); other rows are shown when already finished (with --status: only these rows).")] = None,
    select_on: SelectOnOpt = "valid",
    gpu: GpuOpt = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    status: Annotated[bool, typer.Option("--status", help="Only say which rows are done, running, interrupted or missing.")] = False,
    no_train: Annotated[bool, typer.Option(
        "--no-train", help="Train nothing: write and print the table of the rows already finished (e.g. while others run).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="First seed (then seed+1, ... with --seeds).")] = 42,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Run every neural row with N seeds: mean ± std and rank stability (default: the budget's).",
        show_default=False)] = None,
    data_dir: DataDirOpt = None,
    results_dir: ResultsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reproduce a paper table: our figures beside the published ones (re-run to resume)."""
    from sbrbench.reproduce import reproduce as run_reproduce
    from sbrbench.reproduce import reproduce_status

    if status:
        rows = reproduce_status(table, budget=budget, datasets=datasets, results_dir=results_dir,
                                select_on=select_on, seed=seed, seeds=seeds, only_rows=rows)
        if json_out:
            emit_json({"table": table, "budget": budget, "rows": rows})
            return
        from rich.table import Table

        t = Table("dataset", "row", "status", "epochs", "ETA", "run", title=f"{table} (budget {budget})")
        for r in rows:
            epochs = "fit" if r["epochs"] is None and r["status"] == "done" else f"{r['epochs_done']}/{r['epochs'] or '?'}"
            if r.get("epoch_part_done"):
                epochs += f" (+{100 * r['epoch_part_done']:.0f} % of epoch {r['epochs_done'] + 1})"
            eta = "–" if r["eta_seconds"] is None else f"{'~' if r['eta_estimated'] else ''}{r['eta_seconds'] / 60:.0f} min"
            t.add_row(r["dataset"], r["row"], r["status"], epochs, eta, r["run_dir"] or "–")
        left = [r for r in rows if r["status"] != "done"]
        known = [r["eta_seconds"] for r in left if r["eta_seconds"] is not None]
        if left and known:
            t.caption = (f"{len(left)} of {len(rows)} rows to run; ≈ {sum(known) / 3600:.1f} h of training left for "
                         f"{len(known)} of them (~: projected from part of its first epoch or from the same "
                         "row's other seeds)")
        elif left:
            t.caption = f"{len(left)} of {len(rows)} rows to run; no epoch time known yet for any of them"
        stdout_console().print(t)
        return
    out = run_reproduce(
        table, budget=budget, datasets=datasets, device=_device(gpu, device), data_dir=data_dir,
        results_dir=results_dir, select_on=select_on, threads=threads, callback=_progress(), seed=seed, seeds=seeds,
        only_rows=rows, train_missing=not no_train,
    )
    if json_out:
        emit_json(out)
    else:
        stdout_console().print(out["markdown"], soft_wrap=True)  # Markdown: wrapped lines would break its tables
    failed = [c for c in out.get("checks") or () if not c["ok"]]
    if failed:
        from sbrbench.errors import SbrError

        c = failed[0]
        raise SbrError(f"check failed on {c['dataset']}: {c['model']} / {c['baseline']} on {c['metric']} = "
                       f"{c['ratio']:.2f} < {c['min_ratio']:.2f}")
