"""Checkpoints that make `--resume` give the numbers of an uninterrupted run.

After every epoch: the weights (`checkpoint/model.safetensors`, and `best.safetensors` when the
epoch is the best so far) and the training state (`checkpoint/state.pt`): optimizer, scheduler,
early stopping, history, timers, the epoch, and every random state (Python, NumPy, torch CPU and
CUDA). The data order needs no state: epoch e shuffles with a generator seeded by (seed, e).
A stop inside an epoch also checkpoints, after the step in progress: the same, plus where the epoch
stands (`PartialEpoch`: batches done, their loss sum and example count, seconds spent, the model's
carried state). The state holds tensors and plain values only, so it is read with
`torch.load(weights_only=True)` and a hostile file cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sbrbench.device import rng_state, set_rng_state
from sbrbench.errors import DataError
from sbrbench.results import RunDir
from sbrbench.train.stopping import EarlyStopping

if TYPE_CHECKING:
    import torch

    from sbrbench.models import Model

STATE_VERSION = 2


@dataclass
class PartialEpoch:
    """An epoch stopped after `batch` batches: the sum of their losses (each batch's mean times
    its size, float64) over `seen` examples, `seconds` of training, the random state (`rng_state`)
    and the model's carried state (`Model.carried_state`) at that moment."""

    batch: int
    loss_sum: float
    seen: int
    seconds: float
    rng: dict[str, Any]
    carried: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingProgress:
    """Where training stands: epochs done, history rows, seconds spent training and evaluating,
    and the epoch in progress when training stopped inside one (`partial`)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    partial: PartialEpoch | None = None


class Checkpointer:
    """Saves and restores a run's training state in its `RunDir`."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.best_sha256: str | None = None

    def save(self, model: Model, optimizer: torch.optim.Optimizer, scheduler: Any, stopping: EarlyStopping,
             progress: TrainingProgress, *, best: bool) -> None:
        """Checkpoint after an epoch, or inside one when `progress.partial` is set (`best`: also keep
        these weights as the selected ones); a kill at any moment leaves this checkpoint or the
        previous one, whole (`RunDir.commit_checkpoint`)."""
        self.run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        part = progress.partial
        weights = self.run.commit_checkpoint(model, {
            "version": STATE_VERSION,
            "epoch": progress.epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "stopping": stopping.state_dict(),
            "history": progress.history,
            "train_seconds": progress.train_seconds,
            "eval_seconds": progress.eval_seconds,
            "rng": part.rng if part is not None else rng_state(),
            "partial": None if part is None else {
                "batch": part.batch, "loss_sum": part.loss_sum, "seen": part.seen, "seconds": part.seconds,
                "carried": dict(part.carried),
            },
        }, best=best, best_sha256=self.best_sha256)
        self.best_sha256 = weights["best"]

    def restore(self, model: Model, optimizer: torch.optim.Optimizer, scheduler: Any, stopping: EarlyStopping,
                device: str) -> TrainingProgress | None:
        """Load the last complete checkpoint into the given objects; None when the run has none."""
        state = self.run.load_state()
        if state is None:
            return None
        if state.get("version") != STATE_VERSION:
            raise DataError(f"{self.run.state_path} was written by another version of sbrbench; start a new run")
        self.run.settle_checkpoint(state)
        weights = state.get("weights")
        self.best_sha256 = weights.get("best") if isinstance(weights, dict) else None
        self.run.load_weights(model, "model", device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopping.load_state_dict(state["stopping"])
        set_rng_state(state["rng"])
        part = state.get("partial")
        try:
            partial = None if not part else PartialEpoch(
                batch=int(part["batch"]), loss_sum=float(part["loss_sum"]), seen=int(part["seen"]),
                seconds=float(part["seconds"]), rng=state["rng"], carried=dict(part.get("carried") or {}))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DataError(f"damaged checkpoint state {self.run.state_path}: its epoch in progress is unreadable; "
                            f"{self.run.retrain_hint()}") from None
        return TrainingProgress(epoch=int(state["epoch"]), history=list(state["history"]),
                                train_seconds=float(state["train_seconds"]),
                                eval_seconds=float(state["eval_seconds"]), partial=partial)
