"""The Trainer: seeded training with validation-based model selection, checkpoints and resume.

`train(...)` runs one model on one dataset and writes a run record (see `sbrbench.results`):

* neural models: Adam (weight decay = L2), StepLR decay after each epoch, early stopping with
  `patience` on the selection metric (default MRR@20 on the validation split), the best weights
  restored before the final evaluation; a checkpoint after every epoch (weights in safetensors,
  optimizer/scheduler/RNG/early-stopping state in `state.pt`), so `resume` continues to exactly
  the result of an uninterrupted run; Ctrl-C leaves the last epoch's checkpoint and a record with
  status "interrupted"; a NaN/inf loss stops with a one-line error;
* non-neural baselines: `fit` on the fit sessions, then the same evaluation and record.

`select_on="valid"` (default) fits on the train split and selects on the validation split;
`select_on="test"` reproduces the papers' habit: fit on train ∪ valid (the paper's training set)
and pick the best epoch on the test set; the record says so (`paper_compatible`).
"""

from __future__ import annotations

import io
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbrbench.errors import DataError, SbrError

if TYPE_CHECKING:
    import torch

    from sbrbench.batching import ExampleSource
    from sbrbench.data.dataset import ProcessedDataset
    from sbrbench.models.base import Model

log = logging.getLogger(__name__)

DEFAULT_KS = (5, 10, 20)
SELECT_CHOICES = ("valid", "test")


class TrainingInterrupted(SbrError):
    """Ctrl-C during training: the last completed epoch's checkpoint is kept for `--resume`."""

    exit_code = 130


class TrainingDiverged(SbrError):
    """The loss became NaN or infinite."""


# ---- datasets ------------------------------------------------------------------------------------
def load_processed(
    name_or_path: str | Path, protocol: str | None = None, *, data_dir: str | Path | None = None
) -> tuple[ProcessedDataset, Path | None]:
    """Load a processed dataset by registry name (+ protocol) or directory; returns (dataset, dir)."""
    from sbrbench.data.dataset import ProcessedDataset

    p = Path(name_or_path)
    if (p / "manifest.json").is_file():
        return ProcessedDataset.load(p), p
    try:
        from sbrbench.data.preprocess import load_dataset  # type: ignore[import-not-found]
    except ImportError:
        load_dataset = None
    if load_dataset is not None:
        ds = load_dataset(str(name_or_path), protocol, data_dir=data_dir)
        return ds, _dataset_dir(ds, str(name_or_path), protocol, data_dir)
    from sbrbench import paths

    d = paths.processed_dir(paths.data_dir(data_dir), str(name_or_path), protocol or "srgnn")
    if not (d / "manifest.json").is_file():
        raise DataError(f"{name_or_path} is not processed yet: run `sbrbench preprocess {name_or_path}`")
    return ProcessedDataset.load(d), d


def _dataset_dir(ds: ProcessedDataset, name: str, protocol: str | None, data_dir: Any) -> Path | None:
    from sbrbench import paths

    d = paths.processed_dir(paths.data_dir(data_dir), ds.name, ds.protocol)
    return d if (d / "manifest.json").is_file() else None


def dataset_checksum(ds: ProcessedDataset, directory: Path | None) -> str:
    """The manifest checksum when the dataset is on disk, else a sha256 of its arrays."""
    if directory is not None:
        from sbrbench.data.dataset import manifest_checksum

        return manifest_checksum(directory)
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.items).tobytes())
    h.update(np.ascontiguousarray(ds.offsets).tobytes())
    for name in sorted(ds.splits):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds.splits[name].session).tobytes())
        h.update(np.ascontiguousarray(ds.splits[name].pos).tobytes())
    return "arrays:" + h.hexdigest()


# ---- seeds and evaluation --------------------------------------------------------------------------
def seed_everything(seed: int, device: str) -> dict[str, Any]:
    """Seed python, numpy and torch; deterministic algorithms on CPU. Returns the flags set."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    flags: dict[str, Any] = {"seed": seed, "deterministic_algorithms": False, "num_threads": torch.get_num_threads()}
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        flags["deterministic_algorithms"] = True
    else:
        torch.backends.cudnn.benchmark = False
        flags["cudnn_benchmark"] = False
    return flags


def _collector(device: str) -> Any:
    from sbrbench.evaluate import RankCollector

    return RankCollector(device)


def score_source(model: Model, source: ExampleSource, batch_size: int, device: str) -> Any:
    """Rank every example of `source` with `model`; returns the filled `RankCollector`."""
    import torch

    col = _collector(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in source.batches(batch_size):
            col.update(model(batch), batch.targets)
    model.train(was_training)
    return col


# ---- progress -----------------------------------------------------------------------------------
class Progress:
    """Epoch and batch progress: rich bars on a terminal, plain lines on stderr otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rich = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._epoch_task: Any = None
        self._batch_task: Any = None
        self._n_batches = 0
        self._t0 = 0.0

    def start(self, epochs: int, first_epoch: int) -> None:
        """Begin the epoch bar."""
        if self.rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeRemainingColumn

            self._bar = RP(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=False,
            )
            self._bar.start()
            self._epoch_task = self._bar.add_task("epochs", total=epochs, completed=first_epoch, info="")

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        """Begin one epoch's batch bar."""
        self._n_batches = n_batches
        self._t0 = time.perf_counter()
        if self._bar is not None:
            if self._batch_task is not None:
                self._bar.remove_task(self._batch_task)
            self._batch_task = self._bar.add_task(f"epoch {epoch}", total=n_batches, info="")

    def batch(self, i: int, loss: float) -> None:
        """After batch `i` (0-based)."""
        if not self.enabled:
            return
        if self._bar is not None:
            if i % 10 == 0 or i + 1 == self._n_batches:
                self._bar.update(self._batch_task, completed=i + 1, info=f"loss {loss:.4f}")
        elif self._n_batches >= 50 and (i + 1) % (self._n_batches // 10) == 0:  # short epochs: epoch lines only
            el = time.perf_counter() - self._t0
            eta = el / (i + 1) * (self._n_batches - i - 1)
            print(f"  batch {i + 1}/{self._n_batches} loss {loss:.4f} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def epoch_end(self, row: dict[str, Any], metric_key: str) -> None:
        """After an epoch's evaluation."""
        if not self.enabled:
            return
        msg = (
            f"epoch {row['epoch']}: loss {row['loss']:.4f} {metric_key} {row.get(metric_key, float('nan')):.4f} "
            f"lr {row['lr']:.2g} {row['seconds']:.1f}s {row['examples_per_s']:.0f} ex/s"
        )
        if self._bar is not None:
            self._bar.update(self._epoch_task, advance=1, info=f"{metric_key} {row.get(metric_key, 0):.4f}")
            self._bar.console.print(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        """A one-off message."""
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Close the bars."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ---- checkpoints --------------------------------------------------------------------------------
def _save_weights(path: Path, model: Model) -> None:
    from safetensors.torch import save

    from sbrbench.io import atomic_write_bytes

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors))


def _load_weights(path: Path, model: Model, device: str) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise SbrError(f"missing checkpoint weights {path}")
    model.load_state_dict(load_file(str(path), device=device))


def _save_state(path: Path, state: dict[str, Any]) -> None:
    import torch

    from sbrbench.io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


# ---- the training entry point -------------------------------------------------------------------
def _metric_key(metric: str, ks: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    from sbrbench.metrics import parse_metric

    family, k = parse_metric(metric, 20)
    key = f"{family}@{k}"
    return key, tuple(sorted(set(ks) | {k}))


def _make_model(name: str, n_items: int, params: dict[str, Any]) -> Model:
    from sbrbench.models import MODELS

    cls = MODELS.get(name)
    return cls(n_items, cls.Params(**params))


def _build_model(
    cfg: dict[str, Any], ds: ProcessedDataset, fit_splits: tuple[str, ...], ds_dir: Path | None, device: str
) -> Model:
    """The run's model, prepared on its fit splits (neural models) and moved to `device`."""
    model = _make_model(cfg["model"], ds.n_items, cfg["hparams"])
    if model.neural:
        model.prepare(ds, fit_splits, ds_dir / "graphs" if ds_dir is not None else None)
    return model.to(device)


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
    metric: str = "MRR@20",
    device: str = "cpu",
    max_train_examples: int | None = None,
    resume: str | Path | None = None,
    progress: bool = False,
    ks: tuple[int, ...] = DEFAULT_KS,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train (or fit) `model` on `dataset` and write a run record; returns the final record.

    `overrides` hold hyper-parameters and training options (`epochs`, `batch_size`, `lr`, ...);
    with `resume=RUN_DIR` everything is read from that run's config (only `epochs` may grow).
    The returned dict is `metrics.json` plus `run_dir` and `epochs` (epochs run).
    """
    import torch

    from sbrbench import paths, results
    from sbrbench.models import resolve_config

    if resume is not None:
        run_dir = Path(resume)
        cfg = results.read_config(run_dir)
        if overrides and overrides.get("epochs") is not None:
            cfg["train"]["epochs"] = int(overrides["epochs"])
        model, seed, select_on, metric = cfg["model"], cfg["seed"], cfg["select_on"], cfg["metric"]
        ks = tuple(cfg["ks"])
        max_train_examples = cfg.get("max_train_examples")
        src = cfg["data"].get("path") or cfg["dataset"]
        ds, ds_dir = (
            (dataset, None) if _is_dataset(dataset) else
            load_processed(src, cfg["protocol"], data_dir=cfg["data"].get("data_dir"))
        )
    else:
        if model is None or dataset is None:
            raise SbrError("train needs a model and a dataset (or --resume RUN_DIR)")
        if select_on not in SELECT_CHOICES:
            raise SbrError(f"--select-on must be one of {', '.join(SELECT_CHOICES)}, got {select_on!r}")
        if _is_dataset(dataset):
            ds, ds_dir = dataset, None  # type: ignore[assignment]
        else:
            ds, ds_dir = load_processed(dataset, protocol, data_dir=data_dir)  # type: ignore[arg-type]
        mc = resolve_config(model, ds.name, overrides)
        model = mc.model
        metric_key, ks = _metric_key(metric, tuple(ks))
        cfg = {
            "model": model,
            "dataset": ds.name,
            "protocol": ds.protocol,
            "seed": int(seed),
            "select_on": select_on,
            "metric": metric_key,
            "hparams": mc.params_dict(),
            "train": __import__("dataclasses").asdict(mc.train),
            "device": device,
            "ks": list(ks),
            "max_train_examples": max_train_examples,
            "fit_splits": ["train"] if select_on == "valid" else ["train", "valid"],
            "data": {"path": str(ds_dir) if ds_dir else None, "data_dir": str(data_dir) if data_dir else None},
        }
        run_dir = results.new_run_dir(paths.results_dir(results_dir), ds.name, model, int(seed))
        results.write_config(run_dir, cfg)
    metric_key = cfg["metric"]
    if resume is not None:
        results.write_config(run_dir, cfg)
    cfg["device"] = device
    determinism = seed_everything(int(seed), device)
    checksum = dataset_checksum(ds, ds_dir)
    env_path = run_dir / "env.json"
    if not env_path.is_file() or resume is None:
        results.write_env(run_dir, results.environment(device, int(seed), determinism, checksum))
    trainer = _Trainer(ds, cfg, run_dir, device, checksum, Progress(progress), on_epoch_end, ds_dir)
    record = trainer.run(resumed=resume is not None)
    results.finish_env(run_dir)
    return record


def _is_dataset(obj: Any) -> bool:
    from sbrbench.data.dataset import ProcessedDataset

    return isinstance(obj, ProcessedDataset)


class _Trainer:
    """One run: fit/train, select, evaluate, record."""

    def __init__(
        self,
        ds: ProcessedDataset,
        cfg: dict[str, Any],
        run_dir: Path,
        device: str,
        checksum: str,
        progress: Progress,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
        ds_dir: Path | None = None,
    ) -> None:
        from sbrbench.batching import item_tensor

        self.ds, self.cfg, self.run_dir, self.device = ds, cfg, run_dir, device
        self.checksum, self.progress, self.on_epoch_end = checksum, progress, on_epoch_end
        self.fit_splits = tuple(cfg["fit_splits"])
        self.model = _build_model(cfg, ds, self.fit_splits, ds_dir, device)
        self.items = item_tensor(ds, device)
        self.ks = tuple(cfg["ks"])
        self.select_split = "valid" if cfg["select_on"] == "valid" else "test"
        if self.select_split == "valid" and ("valid" not in ds.splits or len(ds.splits["valid"]) == 0):
            raise SbrError(
                f"dataset {ds.name!r} has no validation split: preprocess it with a validation fraction "
                "or use --select-on test (paper-compatible, selects on the test set)"
            )
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.eval_seconds = 0.0

    def _source(self, split: str, graphs: bool) -> ExampleSource:
        from sbrbench.batching import ExampleSource

        return ExampleSource.from_dataset(self.ds, split, self.device, graphs=graphs, items=self.items)

    def _fit_source(self) -> ExampleSource:
        from sbrbench.batching import ExampleSource

        graphs = self.model.needs_graph
        parts = [self._source(s, graphs) for s in self.fit_splits if s in self.ds.splits]
        src = ExampleSource.concat(parts) if len(parts) > 1 else parts[0]
        limit = self.cfg.get("max_train_examples")
        if limit is not None and limit < len(src):
            src.start, src.length, src.target = src.start[:limit], src.length[:limit], src.target[:limit]
        return src

    def _record(self, status: str, best_epoch: int | None, valid: dict | None, test: dict | None) -> dict[str, Any]:
        c = self.cfg
        return {
            "model": c["model"],
            "dataset": c["dataset"],
            "protocol": c["protocol"],
            "seed": c["seed"],
            "select_on": c["select_on"],
            "selection": {
                "split": self.select_split,
                "metric": c["metric"],
                "paper_compatible": c["select_on"] == "test",
            },
            "status": status,
            "best_epoch": best_epoch,
            "epochs_run": len(self.history),
            "valid": valid,
            "test": test,
            "train_seconds": round(self.train_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "dataset_checksum": self.checksum,
            "device": self.device,
            "hparams": c["hparams"],
            "train": c["train"] if self.model.neural else {},
            "fit_info": getattr(self.model, "fit_info", None),
        }

    def _final_eval(self) -> tuple[dict | None, dict | None]:
        from sbrbench.evaluate import save_ranks

        out: dict[str, dict | None] = {"valid": None, "test": None}
        graphs = self.model.needs_graph
        bs = int(self.cfg["train"]["eval_batch_size"])
        for split in ("valid", "test"):
            if split not in self.ds.splits or len(self.ds.splits[split]) == 0:
                continue
            t0 = time.perf_counter()
            col = score_source(self.model, self._source(split, graphs), bs, self.device)
            out[split] = col.metrics(self.ks)
            save_ranks(self.run_dir / "ranks" / f"{split}.npy", col.ranks())
            self.eval_seconds += time.perf_counter() - t0
        return out["valid"], out["test"]

    def _finish(self, status: str, best_epoch: int | None, valid: dict | None, test: dict | None) -> dict[str, Any]:
        from sbrbench import results

        rec = self._record(status, best_epoch, valid, test)
        results.write_metrics(self.run_dir, rec)
        if self.history:
            results.write_history(self.run_dir, self.history)
        return {**rec, "run_dir": str(self.run_dir), "epochs": len(self.history)}

    def run(self, resumed: bool = False) -> dict[str, Any]:
        """Fit or train, then evaluate and record."""
        if not self.model.neural:
            t0 = time.perf_counter()
            self.model.fit(self.ds, self.fit_splits)
            self.train_seconds = time.perf_counter() - t0
            valid, test = self._final_eval()
            return self._finish("complete", None, valid, test)
        return self._train_neural(resumed)

    def _train_neural(self, resumed: bool) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        tcfg = self.cfg["train"]
        model = self.model
        opt = make_optimizer(model, tcfg)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tcfg["lr_dc_step"], gamma=tcfg["lr_dc"])
        ckpt = self.run_dir / "checkpoint"
        ckpt.mkdir(exist_ok=True)
        start_epoch, best_value, best_epoch, bad = 0, -math.inf, None, 0
        if resumed and (ckpt / "state.pt").is_file():
            st = _load_state(ckpt / "state.pt")
            _load_weights(ckpt / "model.safetensors", model, self.device)
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            start_epoch, best_value, best_epoch, bad = st["epoch"], st["best_value"], st["best_epoch"], st["bad"]
            self.history = st["history"]
            self.train_seconds, self.eval_seconds = st["train_seconds"], st["eval_seconds"]
            torch.set_rng_state(st["torch_rng"])
            np.random.set_state(st["numpy_rng"])
            random.setstate(st["python_rng"])
        fit = self._fit_source()
        select = self._source(self.select_split, model.needs_graph)
        bs, ebs = int(tcfg["batch_size"]), int(tcfg["eval_batch_size"])
        n_batches = fit.n_batches(bs)
        epochs, patience = int(tcfg["epochs"]), int(tcfg["patience"])
        key = self.cfg["metric"]
        hist_key = f"{self.select_split}_{key}"
        self.progress.note(
            f"training {self.cfg['model']} on {self.cfg['dataset']}: {len(fit)} examples, "
            f"{n_batches} batches/epoch, selecting on {self.select_split} {key}; run dir {self.run_dir}"
        )
        self.progress.start(epochs, start_epoch)
        epoch = start_epoch
        restore_term = _sigterm_interrupts()
        try:
            for epoch in range(start_epoch, epochs):
                if patience and bad >= patience:
                    break
                self.progress.epoch_start(epoch + 1, n_batches)
                model.train()
                gen = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1_000_003 + epoch)
                lr = opt.param_groups[0]["lr"]
                t0 = time.perf_counter()
                total = 0.0
                for i, batch in enumerate(fit.batches(bs, generator=gen)):
                    opt.zero_grad(set_to_none=True)
                    scores = model(batch)
                    loss = F.cross_entropy(scores, batch.targets)
                    extra = model.extra_loss(batch, scores)
                    if extra is not None:
                        loss = loss + extra
                    val = float(loss.item())
                    if not math.isfinite(val):
                        self._finish("failed", best_epoch, None, None)
                        raise TrainingDiverged(
                            f"loss became {val} at epoch {epoch + 1}, batch {i + 1}: training diverged "
                            f"(try a lower learning rate); record in {self.run_dir}"
                        )
                    loss.backward()
                    model.clip_gradients()
                    opt.step()
                    total += val * len(batch)
                    self.progress.batch(i, val)
                secs = time.perf_counter() - t0
                self.train_seconds += secs
                sched.step()
                t1 = time.perf_counter()
                metrics = score_source(model, select, ebs, self.device).metrics(self.ks)
                self.eval_seconds += time.perf_counter() - t1
                row: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(len(fit), 1)}
                row.update({f"{self.select_split}_{k}": v for k, v in metrics.items()})
                row.update({"lr": lr, "seconds": secs, "examples_per_s": len(fit) / max(secs, 1e-9)})
                self.history.append(row)
                value = metrics[key]
                if value > best_value:
                    best_value, best_epoch, bad = value, epoch + 1, 0
                    _save_weights(ckpt / "best.safetensors", model)
                else:
                    bad += 1
                _save_weights(ckpt / "model.safetensors", model)
                _save_state(ckpt / "state.pt", {
                    "epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "best_value": best_value, "best_epoch": best_epoch, "bad": bad,
                    "history": self.history, "train_seconds": self.train_seconds,
                    "eval_seconds": self.eval_seconds, "torch_rng": torch.get_rng_state(),
                    "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
                })
                from sbrbench import results

                results.write_history(self.run_dir, self.history)
                self.progress.epoch_end(row, hist_key)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(epoch + 1, row)
        except KeyboardInterrupt:
            self.progress.stop()
            self._finish("interrupted", best_epoch, None, None)
            done = len(self.history)
            raise TrainingInterrupted(
                f"interrupted during epoch {epoch + 1}; checkpoint of epoch {done} kept: "
                f"resume with `sbrbench train --resume {self.run_dir}`"
            ) from None
        finally:
            restore_term()
            self.progress.stop()
        if best_epoch is not None:
            _load_weights(ckpt / "best.safetensors", model, self.device)
        valid, test = self._final_eval()
        return self._finish("complete", best_epoch, valid, test)


def _sigterm_interrupts() -> Callable[[], None]:
    """Treat SIGTERM (a scheduler's pre-emption, `kill`) like Ctrl-C while training; returns the undo.

    Background jobs ignore SIGINT, so SIGTERM is how they are stopped: the run then keeps its last
    epoch's checkpoint and an "interrupted" record for `--resume`.
    """
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def make_optimizer(model: Model, tcfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam with L2 as weight decay; the fused kernel when torch has one for the device (same maths)."""
    import torch

    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=tcfg["lr"], weight_decay=tcfg["l2"], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=tcfg["lr"], weight_decay=tcfg["l2"])


def evaluate_run(
    run_dir: str | Path, *, split: str = "test", ks: tuple[int, ...] = DEFAULT_KS, device: str = "cpu"
) -> dict[str, Any]:
    """Reload a run's model (best checkpoint, or a deterministic re-fit) and re-score `split`.

    Returns {"metrics": {...}, "n_examples": N}.
    """
    from sbrbench import results
    from sbrbench.batching import ExampleSource, item_tensor

    run_dir = Path(run_dir)
    cfg = results.read_config(run_dir)
    src = cfg["data"].get("path") or cfg["dataset"]
    ds, ds_dir = load_processed(src, cfg["protocol"], data_dir=cfg["data"].get("data_dir"))
    model = _build_model(cfg, ds, tuple(cfg["fit_splits"]), ds_dir, device)
    if model.neural:
        _load_weights(run_dir / "checkpoint" / "best.safetensors", model, device)
    else:
        model.fit(ds, tuple(cfg["fit_splits"]))
    source = ExampleSource.from_dataset(ds, split, device, graphs=model.needs_graph, items=item_tensor(ds, device))
    col = score_source(model, source, int(cfg["train"].get("eval_batch_size", 500)), device)
    return {"metrics": col.metrics(tuple(ks)), "n_examples": len(source)}
