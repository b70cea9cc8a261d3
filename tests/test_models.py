"""Model registry loop (timm-style), hyper-parameter validation, per-dataset defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.errors import SbrError
from sbrbench.models import MODELS, create_model, model_info, parse_set_options, resolve_config


def small_dataset(n_sessions: int = 60, n_items: int = 30, seed: int = 0) -> ProcessedDataset:
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(1, n_items, size=int(rng.integers(2, 9))).tolist() for _ in range(n_sessions)]
    items, offsets, _ = from_sequences("small", "t", sessions)
    idx = np.arange(n_sessions)
    splits = {
        "train": augment_all_prefixes(offsets, idx[: int(n_sessions * 0.7)]),
        "valid": augment_all_prefixes(offsets, idx[int(n_sessions * 0.7) : int(n_sessions * 0.85)]),
        "test": augment_all_prefixes(offsets, idx[int(n_sessions * 0.85) :]),
    }
    return ProcessedDataset("small", "t", n_items, items, offsets, splits)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_scores_and_learns(name: str) -> None:
    ds = small_dataset()
    torch.manual_seed(0)
    overrides = {"dim": 16} if "dim" in model_info(name)["hparams"] else {}
    model = create_model(name, ds.n_items, ds.name, **overrides)
    model.fit(ds, ("train",))
    model.prepare(ds, ("train",))
    src = ExampleSource.from_dataset(ds, "train", graphs=model.needs_graph)
    batch = src.batch(slice(0, 32))
    scores = model(batch)
    assert scores.shape == (32, ds.n_items)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    if model.neural:
        loss = F.cross_entropy(scores, batch.targets)
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"


def test_spop_ranks_session_items_first_then_popularity() -> None:
    ds = small_dataset()
    model = create_model("spop", ds.n_items)
    model.fit(ds, ("train",))
    model.prepare(ds, ("train",))
    src = ExampleSource.from_dataset(ds, "test")
    b = src.batch(slice(0, 1))
    scores = model(b)[0]
    session = set(b.seq[0, : b.lengths[0]].tolist())
    top = torch.argsort(scores, descending=True)[: len(session)].tolist()
    assert set(top) == session


def test_itemknn_is_cosine_of_session_cooccurrence() -> None:
    sessions = [[1, 2], [1, 3], [2, 1, 2], [3, 4]]
    items, offsets, n = from_sequences("k", "t", sessions)
    ds = ProcessedDataset("k", "t", n, items, offsets, {"train": augment_all_prefixes(offsets, np.arange(4))})
    model = create_model("itemknn", n)
    model.fit(ds, ("train",))
    sim = model.similarity.toarray()
    # item 1 in sessions {0,1,2}, item 2 in {0,2}, item 3 in {1,3}: co(1,2)=2, co(1,3)=1
    assert sim[1, 2] == pytest.approx(2 / np.sqrt(3 * 2))
    assert sim[1, 3] == pytest.approx(1 / np.sqrt(3 * 2))
    assert sim[1, 1] == 0 and sim[1, 4] == 0


def test_srgnn_defaults_are_the_papers() -> None:
    cfg = resolve_config("srgnn")
    assert cfg.params_dict() == {"dim": 100, "step": 1, "hybrid": True, "drop": ""}
    t = cfg.train
    assert (t.batch_size, t.epochs, t.lr, t.lr_dc, t.lr_dc_step, t.l2, t.patience) == (100, 30, 1e-3, 0.1, 3, 1e-5, 10)


def test_overrides_are_typed_and_validated() -> None:
    cfg = resolve_config("srgnn", None, parse_set_options(["dim=120", "hybrid=false", "lr=0.01"]))
    assert cfg.params.dim == 120 and cfg.params.hybrid is False and cfg.train.lr == 0.01
    with pytest.raises(SbrError, match="valid keys: .*dim"):
        resolve_config("srgnn", None, {"dimm": 3})
    with pytest.raises(SbrError, match="expects an integer"):
        resolve_config("srgnn", None, {"dim": "wide"})
    with pytest.raises(SbrError, match="no component"):
        resolve_config("srgnn", None, {"drop": "transformer"})
    with pytest.raises(SbrError, match="key=value"):
        parse_set_options(["dim"])
    with pytest.raises(SbrError, match="Did you mean 'srgnn'"):
        create_model("sr-gnn", 10)


def test_dataset_defaults_merge_before_user_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = MODELS.get("srgnn")
    monkeypatch.setattr(cls, "dataset_defaults", {"diginetica": {"dim": 120, "batch_size": 50}})
    assert resolve_config("srgnn", "diginetica").params.dim == 120
    assert resolve_config("srgnn", "diginetica").train.batch_size == 50
    assert resolve_config("srgnn", "yoochoose1_64").params.dim == 100
    assert resolve_config("srgnn", "diginetica", {"dim": 64}).params.dim == 64


def test_srgnn_drop_components_still_trains() -> None:
    ds = small_dataset()
    for drop in ("gnn", "global"):
        model = create_model("srgnn", ds.n_items, dim=8, drop=drop)
        b = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 8))
        F.cross_entropy(model(b), b.targets).backward()
        assert all(p.grad is not None for p in model.parameters())
