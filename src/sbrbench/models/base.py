"""The model interface, typed hyper-parameters, the resolution of defaults, and the model registry.

Every model is an `nn.Module` subclass of `Model`, registered by name with `@register_model`:

* `Params`: a dataclass of the model's hyper-parameters (types are enforced on override);
* `train_defaults`: the training options the paper used (`TrainOptions` field names);
* `dataset_defaults`: per-dataset overrides of either, merged before the user's overrides;
* `components`: named switchable parts (hyper-parameter `drop`) so ablations need no model code;
* `forward(batch) -> scores (B, n_items)`, column 0 (padding) is `-inf`;
* neural models: the Trainer minimises `training_loss(batch)` — by default full-catalogue
  cross-entropy on `forward`'s scores plus `extra_loss(batch, scores)`; a model with another
  objective (sampled softmax, BPR-max, contrastive terms) overrides it. `example_source(...)` may
  supply the model's own training examples (default: the protocol's, `batching.training_source`).
  `prepare(dataset, splits, cache_dir)` builds dataset-level structures (global graphs) from the
  fitted sessions before training and evaluation; `clip_gradients()` runs between backward and
  the optimizer step;
* non-neural models (`neural = False`): `fit(dataset, splits)` instead of gradient training.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from sbrbench.config import LR_SCHEDULES, STOPPING_RULES, TrainOptions
from sbrbench.errors import SbrError
from sbrbench.models.layers import reset_children_
from sbrbench.registry import Registry, unknown_name_message

if TYPE_CHECKING:
    from sbrbench.batching import Batch, BatchSource
    from sbrbench.data.dataset import ProcessedDataset

MODELS: Registry[type[Model]] = Registry("model")


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
    component_aliases: ClassVar[dict[str, str]] = {}  # renamed components: old name → new name
    # Settings that describe what the official code did, applied (below the user's own) in
    # paper-compatible runs (`--select-on test`), e.g. {"stopping": "official"}.
    paper_compatible: ClassVar[dict[str, Any]] = {}
    neural: ClassVar[bool] = True
    needs_graph: ClassVar[bool] = False
    variant_of: ClassVar[str | None] = None  # `register_variant`: the model this one presets
    # What `sbrbench tune` may vary: hyper-parameter or training option → `IntRange` /
    # `FloatRange` / `Choice` (`sbrbench.models.search`); empty: the model cannot be tuned.
    search_space: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_items: int, params: Any = None) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.params = params if params is not None else self.Params()

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        """Scores (B, n_items) over the whole catalogue; column 0 is padding (-inf)."""
        raise NotImplementedError

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """The scalar the Trainer minimises on a training batch.

        Default: full-catalogue cross-entropy of `forward`'s scores against `batch.targets`, plus
        `extra_loss`. A model with another objective (sampled softmax, BPR-max with negatives,
        auxiliary contrastive terms) overrides this; the Trainer does not know which.
        """
        import torch.nn.functional as F

        scores = self(batch)
        loss = F.cross_entropy(scores, batch.targets)
        extra = self.extra_loss(batch, scores)
        return loss if extra is None else loss + extra

    def example_source(
        self, dataset: ProcessedDataset, splits: tuple[str, ...], items: torch.Tensor, limit: int | None
    ) -> BatchSource | None:
        """This model's own training examples over the fit `splits` (None: the protocol's kind,
        see `sbrbench.batching.training_source`). `items` is the dataset's item tensor on the
        model's device; `limit` the run's `max_train_examples`."""
        return None

    def configure_optimizer(self, lr: float, l2: float) -> torch.optim.Optimizer | None:
        """This model's own optimizer for the run's `lr` and `l2` (None: sbrbench's Adam with L2 as
        weight decay, `sbrbench.optim.make_optimizer`), e.g. GRU4Rec's Adagrad with momentum."""
        return None

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

    def evaluation_split(self, dataset: ProcessedDataset, split: str) -> None:
        """Called before the examples of `split` are scored for evaluation (default: nothing).

        For models whose official code shapes its inputs per split (TAGNN's padding length).
        Only the split's inputs may be read here, never its targets.
        """

    def clip_gradients(self) -> None:
        """Called after `backward()` and before the optimizer step (default: nothing)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the Trainer at the start of each training epoch (0-based `epoch`), after
        `train()` (default: nothing). For models whose released code changes with the epoch."""

    def carried_state(self) -> dict[str, torch.Tensor]:
        """Training state a model carries from one batch to the next outside its parameters and
        persistent buffers (default: none), saved with a checkpoint taken inside an epoch.
        GRU4Rec's session-parallel hidden states are one."""
        return {}

    def load_carried_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `carried_state` returned, on the model's device (default: nothing)."""

    def reset_parameters(self) -> None:
        """Re-initialise the parameters.

        Default: every sub-module with its own scheme (`sbrbench.models.layers.reset_children_`):
        the layers of `layers.py` and PyTorch modules initialise themselves when built, so a model
        made of them needs no initialisation code. A model with parameters of its own
        (`nn.Parameter` attributes) or another scheme overrides this and calls it from its
        constructor; the SR-GNN family declares U(-1/sqrt(dim), 1/sqrt(dim)) on every parameter
        that way (`layers.uniform_init_`, with the layers built inside `layers.overwritten_init()`).
        """
        reset_children_(self)


def register_model(name: str, *, aliases: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Class decorator registering a `Model` subclass under `name`.

    `aliases`: former names that keep working, with a one-line deprecation warning (see
    `Registry.alias`). Naming convention: the bare name is the paper's model; `<name>-code` is the
    released code's behaviour where it differs (see docs/adding-a-model.md).
    """

    def deco(cls: type[Model]) -> type[Model]:
        cls.name = name
        MODELS.register(name)(cls)
        for old in aliases:
            MODELS.alias(old, name)
        return cls

    return deco


def register_variant(
    name: str, base: str, *, doc: str | None = None, aliases: tuple[str, ...] = (),
    paper_compatible: dict[str, Any] | None = None, **defaults: Any
) -> type[Model]:
    """Register `name` as the registered model `base` with other defaults: same class, same code.

    `defaults` are hyper-parameters (they become the defaults of the variant's `Params`) or
    training options (merged over `base`'s `train_defaults`); `base`'s per-dataset defaults still
    apply, except for the keys fixed here. E.g. `register_variant("tagnn-code", "tagnn",
    padding="official")`. The variant is a subclass of `base`'s class, so it is listed, trained,
    ablated and tested like any model; the user can still override its defaults (`--set`).
    Returns the new class, named after `name` (`tagnn-code` -> `TagnnCode`): assign it to that
    module-level name in `base`'s module so that it can be found by name. `paper_compatible`
    replaces `base`'s settings for paper-compatible runs (see `Model.paper_compatible`).
    """
    parent = MODELS.get(base)
    ptypes = _field_types(parent.Params)
    ttypes = _field_types(TrainOptions)
    unknown = [k for k in defaults if k not in ptypes and k not in ttypes]
    if unknown:
        raise ValueError(f"variant {name!r} of {base!r}: {unknown[0]!r} is neither a hyper-parameter nor a training option")
    fixed = {k: v for k, v in defaults.items() if k in ptypes}
    cls_name = "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
    params = dataclasses.make_dataclass(
        parent.Params.__name__ + "Variant",
        [(k, ptypes[k], field(default=v)) for k, v in fixed.items()],
        bases=(parent.Params,),
    )
    params.__module__ = parent.__module__
    params.__qualname__ = f"{cls_name}.Params"
    params.__doc__ = f"{parent.Params.__doc__ or ''} Variant {name!r}: defaults {fixed}.".strip()
    attrs: dict[str, Any] = {
        "__module__": parent.__module__,
        "__qualname__": cls_name,
        "__doc__": doc or f"{base} with defaults {defaults}.",
        "Params": params,
        "variant_of": parent.name,
        "paper_compatible": dict(parent.paper_compatible if paper_compatible is None else paper_compatible),
        "train_defaults": {**parent.train_defaults, **{k: v for k, v in defaults.items() if k not in ptypes}},
        "dataset_defaults": {
            ds: {k: v for k, v in over.items() if k not in defaults} for ds, over in parent.dataset_defaults.items()
        },
    }
    cls = type(cls_name, (parent,), attrs)
    return register_model(name, aliases=aliases)(cls)


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
    if pvals.get("drop"):
        pvals["drop"] = _renamed_components(cls, pvals["drop"])
    params = cls.Params(**pvals)
    _check_params(cls, params)
    train = TrainOptions(**tvals)
    for key in ("epochs", "batch_size", "eval_batch_size", "lr_dc_step"):
        if getattr(train, key) < 1:
            raise SbrError(f"training option {key!r} must be >= 1, got {getattr(train, key)}")
    if train.patience < 0 or train.lr <= 0 or train.l2 < 0:
        raise SbrError("training options need patience >= 0, lr > 0 and l2 >= 0")
    if train.lr_schedule not in LR_SCHEDULES:
        raise SbrError(unknown_name_message("lr_schedule", train.lr_schedule, list(LR_SCHEDULES)))
    if train.stopping not in STOPPING_RULES:
        raise SbrError(unknown_name_message("stopping rule", train.stopping, list(STOPPING_RULES)))
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


def _renamed_components(cls: type[Model], drop: str) -> str:
    """`drop` with renamed components under their new names (one deprecation line each)."""
    out = []
    for c in (c.strip() for c in drop.split(",") if c.strip()):
        new = cls.component_aliases.get(c)
        if new is not None:
            logging.getLogger(__name__).warning(
                "warning: component %r of %s is now called %r", c, cls.name, new)
            c = new
        out.append(c)
    return ",".join(dict.fromkeys(out))


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
