"""The model interface, typed hyper-parameters and training options, and the model registry.

Every model is an `nn.Module` subclass of `Model`, registered by name with `@register_model`:

* `Params`: a dataclass of the model's hyper-parameters (types are enforced on override);
* `train_defaults`: the training options the paper used (`TrainOptions` field names);
* `dataset_defaults`: per-dataset overrides of either, merged before the user's overrides;
* `components`: named switchable parts (hyper-parameter `drop`) so ablations need no model code;
* `forward(batch) -> scores (B, n_items)`, column 0 (padding) is `-inf`;
* neural models: the Trainer computes cross-entropy; `extra_loss(batch, scores)` adds terms;
  `prepare(dataset, splits, cache_dir)` builds dataset-level structures (global graphs) from the
  fitted sessions before training and evaluation; `clip_gradients()` runs between backward and
  the optimizer step;
* non-neural models (`neural = False`): `fit(dataset, splits)` instead of gradient training.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sbrbench.errors import SbrError
from sbrbench.registry import Registry

if TYPE_CHECKING:
    from sbrbench.batching import Batch
    from sbrbench.data.dataset import ProcessedDataset

MODELS: Registry[type[Model]] = Registry("model")


@dataclass
class TrainOptions:
    """Optimisation options of a run (Adam with L2, step decay, early stopping)."""

    epochs: int = 30
    batch_size: int = 100
    lr: float = 1e-3
    lr_dc: float = 0.1
    lr_dc_step: int = 3
    l2: float = 1e-5
    patience: int = 10
    eval_batch_size: int = 500


@dataclass
class NoParams:
    """Hyper-parameters of a model that has none."""


class Model(nn.Module):
    """Base class of every sbrbench model (see the module docstring)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    train_defaults: ClassVar[dict[str, Any]] = {}
    dataset_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    components: ClassVar[frozenset[str]] = frozenset()
    neural: ClassVar[bool] = True
    needs_graph: ClassVar[bool] = False

    def __init__(self, n_items: int, params: Any = None) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.params = params if params is not None else self.Params()

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        """Scores (B, n_items) over the whole catalogue; column 0 is padding (-inf)."""
        raise NotImplementedError

    def extra_loss(self, batch: Batch, scores: torch.Tensor) -> torch.Tensor | None:
        """Auxiliary loss added to the Trainer's cross-entropy (None: nothing to add)."""
        return None

    def fit(self, dataset: ProcessedDataset, splits: tuple[str, ...]) -> None:
        """Fit a non-neural model on the sessions read by `splits` (neural models: no-op)."""

    def prepare(
        self, dataset: ProcessedDataset, splits: tuple[str, ...], cache_dir: Path | None = None
    ) -> None:
        """Build dataset-level structures of a neural model from the sessions `splits` read.

        Called once after construction and before the model moves to its device, both for
        training and for re-evaluating a saved run, with the run's fit splits (never the test
        split, and the validation split only when it is part of the fitted data). Structures go
        into non-persistent buffers so they follow `.to(device)` but stay out of checkpoints.
        Must be deterministic: use a private `torch.Generator`, not the global RNG.
        `cache_dir` (the processed dataset's `graphs/` directory, or None) may hold a cache.
        """

    def clip_gradients(self) -> None:
        """Called after `backward()` and before the optimizer step (default: nothing)."""

    def reset_parameters(self) -> None:
        """Initialise the parameters (called by the constructor of neural models).

        Default: every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)), the initialisation of the
        official SR-GNN, TAGNN, TAGNN++, GCE-GNN and DHCN code; models without a `dim`
        hyper-parameter keep PyTorch's defaults. Override for another scheme.
        """
        dim = getattr(self.params, "dim", None)
        if isinstance(dim, int) and dim > 0:
            from sbrbench.models.layers import uniform_init_

            uniform_init_(self, dim)


def register_model(name: str):  # type: ignore[no-untyped-def]
    """Class decorator registering a `Model` subclass under `name`."""

    def deco(cls: type[Model]) -> type[Model]:
        cls.name = name
        MODELS.register(name)(cls)
        return cls

    return deco


def _field_types(dc: type) -> dict[str, Any]:
    hints = typing.get_type_hints(dc)
    return {f.name: hints[f.name] for f in dataclasses.fields(dc)}


def coerce(key: str, value: Any, typ: Any, where: str) -> Any:
    """Convert `value` (a CLI string or a Python value) to `typ`, or raise a one-line `SbrError`."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise SbrError(f"{where} {key!r} expects true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise SbrError(f"{where} {key!r} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise SbrError(f"{where} {key!r} expects an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise SbrError(f"{where} {key!r} expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SbrError(f"{where} {key!r} expects a number, got {value!r}") from None
    if typ is str:
        return str(value)
    return value


@dataclass
class ModelConfig:
    """A model's resolved configuration: hyper-parameters and training options."""

    model: str
    params: Any
    train: TrainOptions = field(default_factory=TrainOptions)

    def params_dict(self) -> dict[str, Any]:
        """Hyper-parameters as a plain dict."""
        return dataclasses.asdict(self.params)


def resolve_config(
    name: str, dataset_name: str | None = None, overrides: dict[str, Any] | None = None
) -> ModelConfig:
    """Merge defaults: model Params < model train_defaults < dataset_defaults < `overrides`.

    `overrides` may name hyper-parameters or training options; `None` values are ignored (so
    CLI options left unset never override a model default). Unknown keys or values of the
    wrong type raise a one-line `SbrError` that lists the valid keys.
    """
    cls = MODELS.get(name)
    ptypes = _field_types(cls.Params)
    ttypes = _field_types(TrainOptions)
    merged: dict[str, Any] = dict(cls.train_defaults)
    merged.update(dataset_overrides(cls, dataset_name))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    pvals: dict[str, Any] = {}
    tvals: dict[str, Any] = {}
    for key, value in merged.items():
        if key in ptypes:
            pvals[key] = coerce(key, value, ptypes[key], f"{name} hyper-parameter")
        elif key in ttypes:
            tvals[key] = coerce(key, value, ttypes[key], "training option")
        else:
            valid = sorted(ptypes) + sorted(ttypes)
            raise SbrError(f"{name} has no setting {key!r}; valid keys: {', '.join(valid)}")
    params = cls.Params(**pvals)
    _check_params(cls, params)
    train = TrainOptions(**tvals)
    for key in ("epochs", "batch_size", "eval_batch_size", "lr_dc_step"):
        if getattr(train, key) < 1:
            raise SbrError(f"training option {key!r} must be >= 1, got {getattr(train, key)}")
    if train.patience < 0 or train.lr <= 0 or train.l2 < 0:
        raise SbrError("training options need patience >= 0, lr > 0 and l2 >= 0")
    return ModelConfig(model=cls.name, params=params, train=train)


def dataset_overrides(cls: type[Model], dataset_name: str | None) -> dict[str, Any]:
    """The model's per-dataset defaults that apply to `dataset_name`.

    An exact key wins; otherwise the longest key of which the name is a derived dataset
    (`diginetica` applies to `diginetica-top3000` and `diginetica-sample`, `yoochoose` to
    `yoochoose1_64`).
    """
    if not dataset_name:
        return {}
    if dataset_name in cls.dataset_defaults:
        return dict(cls.dataset_defaults[dataset_name])
    keys = [k for k in cls.dataset_defaults if dataset_name.startswith(k) and dataset_name[len(k)] in "-_0123456789"]
    return dict(cls.dataset_defaults[max(keys, key=len)]) if keys else {}


def _check_params(cls: type[Model], params: Any) -> None:
    drop = getattr(params, "drop", "")
    if drop:
        bad = [c for c in drop.split(",") if c and c not in cls.components]
        if bad:
            raise SbrError(
                f"{cls.name} has no component {bad[0]!r}; components: {', '.join(sorted(cls.components)) or '(none)'}"
            )
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and f.name in ("dim", "step", "heads") and v < 1:
            raise SbrError(f"{cls.name} hyper-parameter {f.name!r} must be >= 1, got {v}")


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """Parse `--set key=value` strings into a dict (values stay strings; typed later)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SbrError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def create_model(
    name: str, n_items: int, dataset_name: str | None = None, **overrides: Any
) -> Model:
    """Instantiate a registered model with defaults merged as in `resolve_config`.

    Training options among `overrides` are validated but do not affect the module itself.
    """
    cfg = resolve_config(name, dataset_name, overrides)
    return MODELS.get(name)(n_items, cfg.params)


def model_info(name: str) -> dict[str, Any]:
    """A registered model's description: hyper-parameters, training defaults, components."""
    cls = MODELS.get(name)
    cfg = resolve_config(name)
    return {
        "name": cls.name,
        "neural": cls.neural,
        "description": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        "hparams": cfg.params_dict(),
        "train": dataclasses.asdict(cfg.train) if cls.neural else {},
        "components": sorted(cls.components),
        "dataset_defaults": cls.dataset_defaults,
    }


def dropped(params: Any) -> frozenset[str]:
    """The set of components switched off by a `drop` hyper-parameter."""
    drop = getattr(params, "drop", "") or ""
    return frozenset(c for c in drop.split(",") if c)
