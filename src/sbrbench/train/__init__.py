"""Training: `train(...)` runs one model on one dataset and writes a run record.

* neural models: Adam (weight decay = L2), StepLR decay (after or at the start of each epoch),
  early stopping with `patience` on the selection metric (default MRR@20 on the validation split,
  or the protocol's: `dataset.info["selection_metric"]`, e.g. ComiRec's Recall@50),
  the best weights restored before the final evaluation; a checkpoint after every epoch, so
  `resume` continues to exactly the result of an uninterrupted run; Ctrl-C or SIGTERM leaves the
  last epoch's checkpoint and a record with status "interrupted"; a NaN/inf loss stops with a
  one-line error;
* non-neural baselines: `fit` on the fit sessions, then the same evaluation and record.

`select_on="valid"` (default) fits on the train split and selects on the validation split;
`select_on="test"` reproduces the papers' habit: fit on train ∪ valid (the paper's training set)
and pick the best epoch on the test set, with the model's `paper_compatible` settings (what its
official code did, e.g. its early-stopping rule); the record says so (`paper_compatible`) and adds
each metric's best epoch (`paper_best`), as such papers report.

The parts: `RunConfig` (`sbrbench.config`), `RunDir` (`sbrbench.results`), `Checkpointer`,
`EarlyStopping`, `TrainingCallback` and the `Trainer` with its `train_epoch` (this package).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from sbrbench import paths
from sbrbench.config import SELECT_CHOICES, DataRef, RunConfig
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.data.store import dataset_checksum, load_processed
from sbrbench.device import check_seeds, configure_precision, resolve_threads, seed_everything
from sbrbench.errors import SbrError
from sbrbench.metrics import DEFAULT_KS, parse_metric
from sbrbench.models import MODELS, resolve_config
from sbrbench.results import RunDir, environment
from sbrbench.train.callbacks import SILENT, TrainingCallback, TrainingStart
from sbrbench.train.loop import Trainer, TrainingDiverged, TrainingInterrupted

__all__ = ["TrainingCallback", "TrainingDiverged", "TrainingInterrupted", "TrainingStart", "Trainer", "train"]


def _selection(metric: str, ks: tuple[int, ...]) -> tuple[str, list[int]]:
    family, k = parse_metric(metric, 20)
    return f"{family}@{k}", sorted(set(ks) | {k})


def new_config(
    model: str, ds: ProcessedDataset, ds_dir: Path | None, *, data_dir: str | Path | None,
    overrides: dict[str, Any] | None, seed: int, select_on: str, metric: str | None, device: str,
    threads: int | None, max_train_examples: int | None, ks: tuple[int, ...],
) -> RunConfig:
    """The typed configuration of a new run (defaults < dataset defaults < `overrides`)."""
    if select_on not in SELECT_CHOICES:
        raise SbrError(f"--select-on must be one of {', '.join(SELECT_CHOICES)}, got {select_on!r}")
    if max_train_examples is not None and max_train_examples < 1:
        raise SbrError(f"--max-train-examples must be >= 1, got {max_train_examples}")
    check_seeds(seed)
    if select_on == "test":  # the official code's habits, below the user's own settings
        overrides = {**MODELS.get(model).paper_compatible, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    mc = resolve_config(model, ds.name, overrides)
    # the protocol's selection metric and cut-offs (ComiRec: Recall@50, K = 20 and 50) unless asked
    metric = metric or str(ds.info.get("selection_metric") or "MRR@20")
    key, kk = _selection(metric, tuple(ks) + tuple(int(k) for k in ds.info.get("ks") or ()))
    return RunConfig(
        model=mc.model, dataset=ds.name, protocol=ds.protocol, seed=int(seed), select_on=select_on,
        metric=key, hparams=mc.params_dict(), train=mc.train, ks=kk, device=device, threads=threads,
        max_train_examples=max_train_examples,
        fit_splits=["train"] if select_on == "valid" else ["train", "valid"],
        data=DataRef(path=str(ds_dir) if ds_dir else None, data_dir=str(data_dir) if data_dir else None),
    )


def train(
    model: str | None = None,
    dataset: str | Path | ProcessedDataset | None = None,
    *,
    protocol: str | None = None,
    data_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 42,
    select_on: str = "valid",
    metric: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    deterministic: bool = False,
    max_train_examples: int | None = None,
    resume: str | Path | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    callback: TrainingCallback | None = None,
    sidecars: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train (or fit) `model` on `dataset` and write a run record; returns the final record.

    `dataset` is a registry name, a processed directory or a `ProcessedDataset`. `overrides` hold
    hyper-parameters and training options (`epochs`, `batch_size`, `lr`, ...). With
    `resume=RUN_DIR` everything is read from that run's config (only `epochs` may grow, and the
    device, threads, precision and determinism may change). `sidecars` are notes written into the
    run directory as soon as it exists (e.g. the `reproduce.json` of a table row, so that an
    interrupted row is found again). The returned dict is `metrics.json` plus `run_dir` and
    `epochs` (epochs run).
    """
    callback = callback or SILENT
    precision_flags = configure_precision(precision, device, deterministic)
    n_threads = resolve_threads(threads)
    if resume is not None:
        run = RunDir.open(resume)
        cfg = run.read_config()
        if overrides and overrides.get("epochs") is not None:
            cfg.train = dataclasses.replace(cfg.train, epochs=int(overrides["epochs"]))
        if isinstance(dataset, ProcessedDataset):
            ds, ds_dir = dataset, None
        else:
            ds, ds_dir = run.load_dataset(cfg)
    else:
        if model is None or dataset is None:
            raise SbrError("train needs a model and a dataset (or --resume RUN_DIR)")
        if isinstance(dataset, ProcessedDataset):
            ds, ds_dir = dataset, None
        else:
            ds, ds_dir = load_processed(dataset, protocol, data_dir=data_dir)
        cfg = new_config(model, ds, ds_dir, data_dir=data_dir, overrides=overrides, seed=seed, select_on=select_on,
                         metric=metric, device=device, threads=threads, max_train_examples=max_train_examples,
                         ks=tuple(ks))
        run = RunDir.create(paths.results_dir(results_dir), ds.name, cfg.model, cfg.seed)
    cfg.device, cfg.threads, cfg.precision, cfg.deterministic = device, n_threads, precision, deterministic
    run.write_config(cfg)
    for name, note in (sidecars or {}).items():
        run.write_sidecar(name, note)
    determinism = {**seed_everything(cfg.seed, device), **precision_flags}
    checksum = dataset_checksum(ds, ds_dir)
    env = environment(device, cfg.seed, determinism, checksum)
    if resume is None:
        run.write_env(env)
    else:
        run.note_resume(env)  # env.json keeps the start; each resumption adds its own provenance
    try:
        trainer = Trainer(cfg, run, ds, ds_dir, checksum, callback)
    except BaseException:
        if resume is None:  # nothing ran: leave no half-made run directory behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    record = trainer.run_all(resumed=resume is not None)
    run.finish_env()
    return record
