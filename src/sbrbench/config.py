"""Typed configuration of a run: training options (`TrainOptions`) and the whole run (`RunConfig`).

Both are plain dataclasses without torch, so that reading run records stays cheap. `RunConfig` is
what `config.json` holds; `RunConfig.from_dict` also reads configs written by earlier versions
(missing fields take their defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sbrbench.errors import DataError
from sbrbench.metrics import DEFAULT_KS

SELECT_CHOICES = ("valid", "test")
LR_SCHEDULES = ("epoch-end", "epoch-start")
STOPPING_RULES = ("metric", "official")


@dataclass
class TrainOptions:
    """Optimisation options of a run: Adam with L2, step decay, early stopping.

    `lr_schedule`: `epoch-end` steps the StepLR schedule after each epoch (first decay after
    `lr_dc_step` epochs); `epoch-start` steps it at the start of each epoch, as code written for
    PyTorch >= 1.1 that calls `scheduler.step()` first does (first decay after `lr_dc_step - 1`).

    `stopping`: `metric` stops after `patience` epochs in a row without a gain in the selection
    metric; `official` is what the SR-GNN, TAGNN and GCE-GNN code does: an epoch counts as improving
    when HR@K *or* MRR@K (K of the selection metric) is >= its best so far, and the run stops once
    `patience` epochs in total (the counter is never reset) did not improve.
    """

    epochs: int = 30
    batch_size: int = 100
    lr: float = 1e-3
    lr_dc: float = 0.1
    lr_dc_step: int = 3
    l2: float = 1e-5
    patience: int = 10
    eval_batch_size: int = 500
    lr_schedule: str = "epoch-end"
    stopping: str = "metric"


@dataclass
class DataRef:
    """Where a run's processed dataset was read from (`path` None: an in-memory dataset)."""

    path: str | None = None
    data_dir: str | None = None


@dataclass
class RunConfig:
    """What a run was asked to do: everything needed to re-run, resume or reload it.

    `select_on="valid"` fits on the train split and selects the epoch on the validation split;
    `"test"` is the papers' habit (fit on train ∪ valid, select on test), recorded as such.
    """

    model: str
    dataset: str
    protocol: str
    seed: int
    select_on: str
    metric: str
    hparams: dict[str, Any]
    train: TrainOptions
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    device: str = "cpu"
    threads: int | None = None
    precision: str = "fp32"
    deterministic: bool = False
    max_train_examples: int | None = None
    fit_splits: list[str] = field(default_factory=lambda: ["train"])
    data: DataRef = field(default_factory=DataRef)

    @property
    def select_split(self) -> str:
        """The split the epoch is selected on."""
        return "valid" if self.select_on == "valid" else "test"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to `config.json`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        """Read the JSON form (also configs written by earlier versions); one-line errors."""
        try:
            known = {f.name for f in dataclasses.fields(TrainOptions)}
            train = TrainOptions(**{k: v for k, v in (d.get("train") or {}).items() if k in known})
            data = d.get("data") or {}
            return cls(
                model=str(d["model"]), dataset=str(d["dataset"]), protocol=str(d["protocol"]),
                seed=int(d["seed"]), select_on=str(d.get("select_on", "valid")),
                metric=str(d.get("metric", "MRR@20")), hparams=dict(d.get("hparams") or {}), train=train,
                ks=[int(k) for k in d.get("ks", DEFAULT_KS)], device=str(d.get("device", "cpu")),
                threads=d.get("threads"), precision=str(d.get("precision", "fp32")),
                deterministic=bool(d.get("deterministic", False)), max_train_examples=d.get("max_train_examples"),
                fit_splits=list(d.get("fit_splits") or ["train"]),
                data=DataRef(path=data.get("path"), data_dir=data.get("data_dir")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed {where}: {type(exc).__name__} {exc}") from None


