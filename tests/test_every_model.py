"""Every registered model, full and with each of its components dropped, on a tiny dataset.

A model registered with `@register_model` or `register_variant` is tested here with no test code
of its own: a neural model scores a batch as (B, n_items), finite, column 0 = -inf, in evaluation
and training mode, and `training_loss` gives a finite, non-zero gradient to every trainable
parameter of the variant (a dropped component must take its parameters with it); a non-neural
model fits, then scores. Models whose defaults are slow on a CPU get smaller settings in `TINY`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.models import MODELS, create_model, model_info
from toy_data import random_sessions, split_dataset

#: Applied to every model that has such a hyper-parameter.
SMALL = {"dim": 8, "heads": 2}
#: Per-model settings that keep a forward and backward pass in the tens of milliseconds.
TINY: dict[str, dict[str, Any]] = {
    "gcegnn": {"sample_num": 4, "topk": 4},
    "cmgnn": {"topk": 4},
    "macl-text": {"text_encoder": "hash"},  # offline stand-in for MiniLM: CI installs no [text] extra
    "gru4rec": {"layers": "8", "n_sample": 16, "sparse": False},  # sparse gradients: no isfinite on CPU
    "bpr-mf": {"sparse": False},
    "fpmc": {"sparse": False},
}
BATCH = 128  # enough prefixes for every parameter to matter (e.g. a last click with an out-edge)


def tiny_dataset(n_sessions: int = 60, n_items: int = 30, seed: int = 0) -> ProcessedDataset:
    """Random sessions of 2-8 clicks over 29 items (repeats, self-loops), 70/15/15 by session."""
    ds = split_dataset("tiny", random_sessions(n_sessions, n_items, seed),
                       (int(n_sessions * 0.7), int(n_sessions * 0.85)))
    return dataclasses.replace(ds, item_text=item_texts(ds.n_items))


def item_texts(n: int) -> list[str]:
    """A short text per item id (index 0 = padding), for models with a text modality (macl-text)."""
    return [""] + [f"{['red', 'green', 'blue', 'amber'][i % 4]} {['cube', 'sphere', 'prism'][i % 3]} gadget {i}"
                   for i in range(1, n)]


def settings(name: str) -> dict[str, Any]:
    """The small settings of model `name`."""
    hparams = model_info(name)["hparams"]
    out = {k: v for k, v in SMALL.items() if k in hparams}
    out.update(TINY.get(name, {}))
    return out


CASES = [(name, comp) for name in MODELS.names() for comp in ("", *sorted(MODELS.get(name).components))]


@pytest.fixture(scope="module")
def tiny() -> ProcessedDataset:
    return tiny_dataset()


def _build(name: str, ds: ProcessedDataset, device: str = "cpu", **extra: Any) -> Any:
    torch.manual_seed(0)
    model = create_model(name, ds.n_items, ds.name, **settings(name), **extra)
    model.fit(ds, ("train",))
    if model.neural:
        model.prepare(ds, ("train",))
    return model.to(device)


def _check_scores(scores: torch.Tensor, n_rows: int, n_items: int) -> None:
    assert scores.shape == (n_rows, n_items)
    assert torch.isneginf(scores[:, 0]).all(), "column 0 (padding) must be -inf"
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize(("name", "drop"), CASES, ids=[f"{n}-{c or 'full'}" for n, c in CASES])
def test_model_scores_and_learns(name: str, drop: str, tiny: ProcessedDataset, device: str) -> None:
    model = _build(name, tiny, device, **({"drop": drop} if drop else {}))
    src = ExampleSource.from_dataset(tiny, "train", device, graphs=model.needs_graph)
    batch = src.batch(slice(0, BATCH))
    model.eval()
    with torch.no_grad():
        _check_scores(model(batch), BATCH, tiny.n_items)
    if not model.neural:
        return

    if drop:  # a dropped component takes its parameters with it, never adds any
        full = _build(name, tiny)
        assert sum(p.numel() for p in model.parameters()) <= sum(p.numel() for p in full.parameters())
    model.train()
    _check_scores(model(batch), BATCH, tiny.n_items)
    model.zero_grad()
    loss = model.training_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"neural model {name} has no trainable parameter"
    for pname, p in trainable:
        assert p.grad is not None, f"{name} (drop={drop!r}): {pname} is not used"
        assert torch.isfinite(p.grad).all(), f"{name} (drop={drop!r}): {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} (drop={drop!r}): {pname} got a zero gradient"
    model.clip_gradients()
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


@pytest.mark.parametrize("name", MODELS.names())
def test_the_next_steps_depend_only_on_what_a_mid_epoch_checkpoint_holds(name: str, tiny: ProcessedDataset) -> None:
    """A checkpoint taken inside an epoch holds the weights and persistent buffers, the optimizer,
    the random state and `Model.carried_state`; a model rebuilt from exactly that must take the same
    next training steps as the model that kept running (else a resumed epoch would drift)."""
    import copy

    from sbrbench.device import rng_state, set_rng_state

    model = _build(name, tiny)
    if not model.neural:
        return
    src = ExampleSource.from_dataset(tiny, "train", "cpu", graphs=model.needs_graph)
    batches = [src.batch(slice(i, i + 32)) for i in range(0, 4 * 32, 32)]

    def step(m: Any, opt: torch.optim.Optimizer, batch: Any) -> float:
        opt.zero_grad(set_to_none=True)
        loss = m.training_loss(batch)
        loss.backward()
        m.clip_gradients()
        opt.step()
        return float(loss.detach())

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    model.on_epoch_start(0)
    for batch in batches[:2]:
        step(model, opt, batch)
    saved = ({k: v.clone() for k, v in model.state_dict().items()}, copy.deepcopy(opt.state_dict()), rng_state(),
             {k: v.clone() for k, v in model.carried_state().items()})
    kept_running = [step(model, opt, batch) for batch in batches[2:]]

    twin = _build(name, tiny)
    twin.load_state_dict(saved[0])
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.01)
    twin_opt.load_state_dict(saved[1])
    twin.train()
    twin.on_epoch_start(0)
    twin.load_carried_state(saved[3])
    set_rng_state(saved[2])
    assert [step(twin, twin_opt, batch) for batch in batches[2:]] == kept_running
