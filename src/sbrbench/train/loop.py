"""The Trainer: one run's model trained epoch by epoch, selected on a split, evaluated, recorded.

Per epoch (`Trainer.train_epoch`): batches of the fit source in an order drawn from a generator
seeded by (seed, epoch); for each, `loss = model.training_loss(batch)` (the model decides the
objective: full-catalogue cross-entropy by default), backward, `model.clip_gradients()`, an
optimizer step. The loss is summed on the device and read only when the callback asks for it
(`TrainingCallback.every`) and at the end of the epoch, so the step has no host synchronisation.
Then the selection split is scored, early stopping updated and a checkpoint written.

Ctrl-C or SIGTERM inside an epoch lets the step in progress finish and checkpoints that batch
(`PartialEpoch`): `--resume` skips the batches done (the order is redrawn from the same seed),
puts back the random state and the model's carried state of that moment and goes on, so a long
epoch interrupted loses at most one step and ends with the numbers of an uninterrupted run. A
second signal, or one outside the steps (evaluation), interrupts at once: the last epoch's
checkpoint is kept.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sbrbench.batching import BatchSource, item_tensor, training_source
from sbrbench.config import RunConfig
from sbrbench.device import autocast, rng_state, set_rng_state
from sbrbench.errors import SbrError
from sbrbench.evaluate import evaluation_source, score_examples
from sbrbench.metrics import metric_definitions
from sbrbench.optim import make_optimizer
from sbrbench.results import RunDir, build_model
from sbrbench.train.callbacks import SILENT, TrainingCallback, TrainingStart
from sbrbench.train.checkpoint import Checkpointer, PartialEpoch, TrainingProgress
from sbrbench.train.extras import RunExtras
from sbrbench.train.stopping import EarlyStopping

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from sbrbench.data.dataset import ProcessedDataset


class TrainingInterrupted(SbrError):
    """Ctrl-C or SIGTERM during training: the last completed epoch's checkpoint is kept."""

    exit_code = 130


class TrainingDiverged(SbrError):
    """The loss became NaN or infinite."""


class _StopInEpoch(Exception):
    """A stop requested inside an epoch, raised after the step in progress: where the epoch stands."""

    def __init__(self, partial: PartialEpoch) -> None:
        super().__init__(f"stop after batch {partial.batch}")
        self.partial = partial


class Trainer:
    """One run: fit (non-neural) or train (neural), select, evaluate on valid and test, record."""

    heartbeat_seconds: float = 60.0  # how often `running.json` records where the epoch stands

    def __init__(self, cfg: RunConfig, run: RunDir, ds: ProcessedDataset, ds_dir: Path | None, checksum: str,
                 callback: TrainingCallback | None = None) -> None:
        self.cfg, self.run, self.ds, self.checksum = cfg, run, ds, checksum
        self.callback = callback or SILENT
        self.device = cfg.device
        if cfg.select_split == "valid" and ("valid" not in ds.splits or len(ds.splits["valid"]) == 0):
            raise SbrError(
                f"dataset {ds.name!r} has no validation split: preprocess it with a validation fraction "
                "or use --select-on test (paper-compatible, selects on the test set)"
            )
        self.model = build_model(cfg, ds, ds_dir, self.device)
        self.extras = RunExtras(self.model, ds, cfg, run)  # ties, length buckets, cost, leak check
        if self.model.neural:
            self.extras.check_structures()  # a structure holding held-out pairs stops the run here
        self.items = item_tensor(ds, self.device)
        self.progress = TrainingProgress()
        self.stops = StopRequests()
        self.epoch_seconds = 0.0  # training seconds of the last epoch trained (`train_epoch`)
        self.n_batches = 0  # batches per epoch, once training starts
        # built here so that a model refusing the run's options (a one-line error) leaves no run behind
        self.optimizer = (self.model.configure_optimizer(cfg.train.lr, cfg.train.l2)
                          or make_optimizer(self.model, cfg.train.lr, cfg.train.l2)) if self.model.neural else None

    # ---- pieces --------------------------------------------------------------------------------
    def fit_source(self) -> BatchSource:
        """The training examples: the model's or protocol's kind of source over the fit splits."""
        return training_source(self.model, self.ds, tuple(self.cfg.fit_splits), self.device, items=self.items,
                               limit=self.cfg.max_train_examples)

    def score_split(self, split: str) -> Any:
        """A `RankCollector` holding the ranks of every example of `split`."""
        src = evaluation_source(self.model, self.ds, split, self.device, items=self.items)
        return score_examples(self.model, src, int(self.cfg.train.eval_batch_size), self.device,
                              self.cfg.precision)

    def train_epoch(self, epoch: int, source: BatchSource, optimizer: torch.optim.Optimizer,
                    resume: PartialEpoch | None = None) -> float:
        """One pass over `source` (epoch is 0-based); returns the mean training loss.

        `resume`: the epoch was interrupted after `resume.batch` batches; those are drawn again
        (same order) but not trained on, then the random and carried state of that moment are
        restored. A stop request (`StopRequests`) raises `_StopInEpoch` after the step in progress.
        """
        import torch

        model, cb = self.model, self.callback
        bs = int(self.cfg.train.batch_size)
        model.train()
        model.on_epoch_start(epoch)
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + epoch)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, first, t0 = 0, 0, time.perf_counter()
        batches = source.batches(bs, generator=gen)
        if resume is not None:
            for _ in itertools.islice(batches, resume.batch):
                pass
            total.fill_(resume.loss_sum)
            seen, first = resume.seen, resume.batch
            t0 -= resume.seconds
            model.load_carried_state(resume.carried)
            set_rng_state(resume.rng)
            cb.on_epoch_resumed(epoch + 1, first, seen)
        every = max(int(cb.every), 0)
        beat = time.perf_counter()  # the first beat after the epoch's first batch, so --status sees it at once
        n_batches = self.n_batches or source.n_batches(bs)
        self.stops.deferring = True
        try:
            i = first - 1
            for i, batch in enumerate(batches, start=first):
                optimizer.zero_grad(set_to_none=True)
                with autocast(self.device, self.cfg.precision):
                    loss = model.training_loss(batch)
                loss.backward()
                model.clip_gradients()
                optimizer.step()
                n = len(batch)
                total += loss.detach().double() * n
                seen += n
                if i == first or (every and (i + 1) % every == 0):
                    mean = self._checked_loss(total, seen, epoch, i)
                    if every and (i + 1) % every == 0:
                        cb.on_batch(epoch + 1, i + 1, seen, mean)
                if (now := time.perf_counter()) >= beat:
                    beat = now + self.heartbeat_seconds
                    self._heartbeat({"epoch": epoch + 1, "batch": i + 1, "batches": n_batches,
                                     "seconds": round(now - t0, 3)})
                if self.stops.pending:
                    break
            if self.stops.pending:
                raise _StopInEpoch(PartialEpoch(batch=i + 1, loss_sum=float(total), seen=seen,
                                                seconds=time.perf_counter() - t0, rng=rng_state(),
                                                carried=model.carried_state()))
        finally:
            self.stops.deferring = False
        self.epoch_seconds = time.perf_counter() - t0
        return self._checked_loss(total, seen, epoch, None)

    def _heartbeat(self, progress: dict[str, Any]) -> None:
        try:
            self.run.mark_running(progress)
        except OSError:  # a status aid: a full or read-only disk must not end hours of training here
            pass

    def _checked_loss(self, total: torch.Tensor, seen: int, epoch: int, batch: int | None) -> float:
        value = float(total) / max(seen, 1)
        if not math.isfinite(value):
            where = f"batch {batch + 1}" if batch is not None else "its end"
            self._finish("failed", None, None)
            raise TrainingDiverged(
                f"loss became {value} at epoch {epoch + 1}, {where}: training diverged "
                f"(try a lower learning rate); record in {self.run}"
            )
        return value

    # ---- the run -------------------------------------------------------------------------------
    def run_all(self, resumed: bool = False) -> dict[str, Any]:
        """Fit or train, then evaluate on valid and test and write the record."""
        if not self.model.neural:
            t0 = time.perf_counter()
            self.model.fit(self.ds, tuple(self.cfg.fit_splits))
            self.progress.train_seconds = time.perf_counter() - t0
            self.extras.check_structures()
            return self._evaluate_and_finish(None)
        return self._train(resumed)

    def _train(self, resumed: bool) -> dict[str, Any]:
        import torch

        tcfg, model, cb = self.cfg.train, self.model, self.callback
        optimizer = self.optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tcfg.lr_dc_step, gamma=tcfg.lr_dc)
        stopping = EarlyStopping(tcfg.patience, self.cfg.metric, tcfg.stopping)
        ckpt = Checkpointer(self.run)
        if resumed:
            restored = ckpt.restore(model, optimizer, scheduler, stopping, self.device)
            if restored is not None:
                self.progress = restored
        fit = self.fit_source()
        select = self.cfg.select_split
        key = self.cfg.metric
        bs = int(tcfg.batch_size)
        n_batches = self.n_batches = fit.n_batches(bs)
        cb.on_start(TrainingStart(
            model=self.cfg.model, dataset=self.cfg.dataset, run_dir=str(self.run), examples=len(fit),
            batches_per_epoch=n_batches, epochs=int(tcfg.epochs), first_epoch=self.progress.epoch,
            select_split=select, metric=key,
        ))
        epoch = self.progress.epoch
        partial, self.progress.partial = self.progress.partial, None
        on_disk = partial  # what an immediate interruption leaves to resume from
        restore_signals = self.stops.install()
        self.run.mark_running()
        try:
            for epoch in range(self.progress.epoch, int(tcfg.epochs)):
                if stopping.should_stop:
                    break
                if tcfg.lr_schedule == "epoch-start" and partial is None:  # stepped before the interruption
                    _step_quietly(scheduler)
                lr = optimizer.param_groups[0]["lr"]
                cb.on_epoch_start(epoch + 1, n_batches, len(fit))
                done_before = partial.seconds if partial is not None else 0.0
                loss = self.train_epoch(epoch, fit, optimizer, resume=partial)
                partial = None
                secs = self.epoch_seconds
                self.progress.train_seconds += secs - done_before
                if tcfg.lr_schedule == "epoch-end":
                    scheduler.step()
                t1 = time.perf_counter()
                metrics = self.score_split(select).metrics(tuple(self.cfg.ks))
                self.progress.eval_seconds += time.perf_counter() - t1
                row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss}
                row.update({f"{select}_{k}": v for k, v in metrics.items()})
                row.update({"lr": lr, "seconds": secs, "examples_per_s": len(fit) / max(secs, 1e-9)})
                self.progress.history.append(row)
                self.progress.epoch = epoch + 1
                best = stopping.update(epoch + 1, metrics)
                ckpt.save(model, optimizer, scheduler, stopping, self.progress, best=best)
                on_disk = None
                self.run.write_history(self.progress.history)
                cb.on_epoch_end(epoch + 1, row)
        except _StopInEpoch as stop:
            done = stop.partial
            self.progress.train_seconds += done.seconds - (partial.seconds if partial is not None else 0.0)
            self.progress.partial = done
            ckpt.save(model, optimizer, scheduler, stopping, self.progress, best=False)
            cb.on_end()
            self._finish("interrupted", stopping.best_epoch, None)
            raise TrainingInterrupted(
                f"interrupted in epoch {epoch + 1} after batch {done.batch} of {n_batches}; checkpoint at that "
                f"batch kept: resume with `sbrbench train --resume {self.run}`"
            ) from None
        except KeyboardInterrupt:
            cb.on_end()
            self._finish("interrupted", stopping.best_epoch, None)
            at = f"batch {on_disk.batch} of epoch {self.progress.epoch + 1}" if on_disk else f"epoch {self.progress.epoch}"
            raise TrainingInterrupted(
                f"interrupted during epoch {epoch + 1}; checkpoint of {at} kept: "
                f"resume with `sbrbench train --resume {self.run}`"
            ) from None
        finally:
            restore_signals()
            self.run.clear_running()
        cb.on_end()
        if stopping.best_epoch is not None:
            self.run.load_weights(model, "best", self.device)
        return self._evaluate_and_finish(stopping.best_epoch)

    def _evaluate_and_finish(self, best_epoch: int | None) -> dict[str, Any]:
        out: dict[str, dict[str, float] | None] = {"valid": None, "test": None}
        for split in ("valid", "test"):
            if split not in self.ds.splits or len(self.ds.splits[split]) == 0:
                continue
            t0 = time.perf_counter()
            col = self.score_split(split)
            out[split] = col.metrics(tuple(self.cfg.ks))
            self.run.save_ranks(split, col.ranks())
            self.extras.add_split(split, col, time.perf_counter() - t0)
            self.progress.eval_seconds += time.perf_counter() - t0
        return self._finish("complete", best_epoch, out)

    def record(self, status: str, best_epoch: int | None, out: dict[str, Any] | None) -> dict[str, Any]:
        """The `metrics.json` record."""
        c = self.cfg
        out = out or {}
        return {
            "model": c.model,
            "dataset": c.dataset,
            "protocol": c.protocol,
            "seed": c.seed,
            "select_on": c.select_on,
            "selection": {"split": c.select_split, "metric": c.metric, "paper_compatible": c.select_on == "test"},
            "status": status,
            "best_epoch": best_epoch,
            "epochs_run": len(self.progress.history),
            "valid": out.get("valid"),
            "test": out.get("test"),
            "train_seconds": round(self.progress.train_seconds, 3),
            "eval_seconds": round(self.progress.eval_seconds, 3),
            "dataset_checksum": self.checksum,
            "metric_definitions": metric_definitions(self.ds.info.get("rank_options")),  # what the numbers mean
            "device": self.device,
            "threads": c.threads,
            "precision": c.precision,
            "hparams": c.hparams,
            "train": dataclasses.asdict(c.train) if self.model.neural else {},
            "fit_info": getattr(self.model, "fit_info", None),
            **({"stopped_in_epoch": {"epoch": self.progress.epoch + 1, "batch": part.batch,
                                     "batches": self.n_batches, "seconds": round(part.seconds, 3)}}
               if status == "interrupted" and (part := self.progress.partial) is not None else {}),
            **({"paper_best": self.paper_best()} if c.select_on == "test" and self.progress.history else {}),
            **self.extras.fields(self.progress.train_seconds, self.progress.eval_seconds, self.progress.history),
        }

    def paper_best(self) -> dict[str, dict[str, Any]]:
        """Each metric's best value over the epochs, with its epoch: what papers that select on the
        test set report (best HR@20 and best MRR@20 may come from different epochs)."""
        out: dict[str, dict[str, Any]] = {}
        prefix = f"{self.cfg.select_split}_"
        for key in self.progress.history[0]:
            if key.startswith(prefix):
                rows = [(row[key], row["epoch"]) for row in self.progress.history if key in row]
                value, epoch = max(rows, key=lambda r: (r[0], -r[1]))
                out[key[len(prefix):]] = {"value": value, "epoch": epoch}
        return out

    def _finish(self, status: str, best_epoch: int | None, out: dict[str, Any] | None) -> dict[str, Any]:
        rec = self.record(status, best_epoch, out)
        self.run.write_metrics(rec)
        if self.progress.history:
            self.run.write_history(self.progress.history)
        return {**rec, "run_dir": str(self.run), "epochs": len(self.progress.history)}


def _step_quietly(scheduler: Any) -> None:
    """`scheduler.step()` before any optimizer step, without torch's order warning (intended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


class StopRequests:
    """Ctrl-C and SIGTERM (a scheduler's pre-emption, `kill`; background jobs ignore SIGINT) while
    training. Inside the steps of an epoch (`deferring`) the first request only sets `pending`, so
    that the step in progress finishes and is checkpointed; a second request, or one anywhere
    else, raises KeyboardInterrupt at once (the last epoch's checkpoint is kept)."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.deferring and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    def install(self) -> Callable[[], None]:
        """Handle SIGINT and SIGTERM with `handler`; returns the undo (nothing off the main thread)."""
        import signal

        self.pending = False
        previous: dict[int, Any] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self.handler)
        except ValueError:  # not the main thread: leave signals alone
            return lambda: None

        def undo() -> None:
            for sig, before in previous.items():
                signal.signal(sig, before)

        return undo
