"""Baselines, hyper-parameter validation, per-dataset defaults, variants, initialisation.

Every registered model's forward and backward pass is tested in `test_every_model.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset
from sbrbench.errors import SbrError
from sbrbench.models import MODELS, Model, create_model, model_info, resolve_config
from sbrbench.models import layers
from sbrbench.models.base import register_variant
from sbrbench.options import parse_key_values
from toy_data import random_sessions, split_dataset


def small_dataset(n_sessions: int = 60, n_items: int = 30, seed: int = 0) -> ProcessedDataset:
    return split_dataset("small", random_sessions(n_sessions, n_items, seed),
                         (int(n_sessions * 0.7), int(n_sessions * 0.85)), n_items=n_items)


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
    ds = split_dataset("k", sessions)
    model = create_model("itemknn", ds.n_items)
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
    cfg = resolve_config("srgnn", None, parse_key_values(["dim=120", "hybrid=false", "lr=0.01"], "--set"))
    assert cfg.params.dim == 120 and cfg.params.hybrid is False and cfg.train.lr == 0.01
    with pytest.raises(SbrError, match="valid keys: .*dim"):
        resolve_config("srgnn", None, {"dimm": 3})
    with pytest.raises(SbrError, match="expects an integer"):
        resolve_config("srgnn", None, {"dim": "wide"})
    with pytest.raises(SbrError, match="no component"):
        resolve_config("srgnn", None, {"drop": "transformer"})
    with pytest.raises(SbrError, match="key=value"):
        parse_key_values(["dim"], "--set")
    with pytest.raises(SbrError, match="Did you mean 'srgnn'"):
        create_model("sr-gnn", 10)


def test_dataset_defaults_merge_before_user_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = MODELS.get("srgnn")
    monkeypatch.setattr(cls, "dataset_defaults", {"diginetica": {"dim": 120, "batch_size": 50}})
    assert resolve_config("srgnn", "diginetica").params.dim == 120
    assert resolve_config("srgnn", "diginetica").train.batch_size == 50
    assert resolve_config("srgnn", "yoochoose1_64").params.dim == 100
    assert resolve_config("srgnn", "diginetica", {"dim": 64}).params.dim == 64



# ---- variants and renamed models -------------------------------------------------------------------
def test_code_variants_are_the_released_codes_behaviour() -> None:
    assert {"tagnn", "tagnn-code", "tagnnpp", "tagnnpp-code"} <= set(MODELS.names())
    assert "tagnnpp-released" not in MODELS.names() and "tagnnpp-released" in MODELS
    # tagnn is the paper (softmaxes over the clicks), tagnn-code the official padding; nothing else differs
    paper, code = resolve_config("tagnn", "diginetica"), resolve_config("tagnn-code", "diginetica")
    assert paper.params.padding == "masked" and code.params.padding == "official"
    assert {**code.params_dict(), "padding": "masked"} == paper.params_dict()
    # ... and the released code's scheduler timing (scheduler.step() first, PyTorch >= 1.1)
    assert code.train.lr_schedule == "epoch-start" and paper.train.lr_schedule == "epoch-end"
    assert dataclasses.replace(code.train, lr_schedule="epoch-end") == paper.train
    cls = MODELS.get("tagnn-code")
    assert issubclass(cls, MODELS.get("tagnn")) and cls.name == "tagnn-code" and cls.variant_of == "tagnn"
    assert cls.components == MODELS.get("tagnn").components
    assert cls(10).params.padding == "official"  # the class's own default, not only resolve_config's
    assert resolve_config("tagnn-code", None, {"padding": "masked"}).params.padding == "masked"
    info = model_info("tagnn-code")
    assert info["hparams"]["padding"] == "official" and "official" in info["description"]
    assert resolve_config("tagnnpp-released", "diginetica").model == "tagnnpp-code"


def test_register_variant_presets_hyper_parameters_and_training_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))  # registrations here stay here
    monkeypatch.setattr(MODELS.get("tagnnpp"), "dataset_defaults", {"diginetica": {"dim": 120, "heads": 8}})
    cls = register_variant("tagnnpp-wide", "tagnnpp", dim=64, heads=4, lr=1e-3, doc="TAGNN++ wider.")
    assert cls.__name__ == "TagnnppWide" and MODELS.get("tagnnpp-wide") is cls
    cfg = resolve_config("tagnnpp-wide", "diginetica")  # the preset beats the base's dataset defaults
    assert (cfg.params.dim, cfg.params.heads, cfg.train.lr, cfg.train.batch_size) == (64, 4, 1e-3, 50)
    assert [f.name for f in dataclasses.fields(cls.Params)] == [f.name for f in dataclasses.fields(MODELS.get("tagnnpp").Params)]
    assert resolve_config("tagnnpp", "diginetica").params.dim == 120  # the base is untouched
    with pytest.raises(ValueError, match="neither"):
        register_variant("tagnnpp-bad", "tagnnpp", dimm=3)


# ---- initialisation -----------------------------------------------------------------------------------
def _layer_builders() -> dict[str, Any]:
    from sbrbench.models.cmgnn import ViewFusion
    from sbrbench.models.tagnn import TagnnReadout, TargetAttention
    from sbrbench.models.tagnnpp_released import CausalNodeAttention

    return {
        "GatedGraphCell": lambda d: layers.GatedGraphCell(d, 2),
        "SoftAttentionReadout": lambda d: layers.SoftAttentionReadout(d),
        "RelationalGraphAttention": lambda d: layers.RelationalGraphAttention(d),
        "SessionAwareNeighbourAggregator": lambda d: layers.SessionAwareNeighbourAggregator(d),
        "ReversedPositionReadout": lambda d: layers.ReversedPositionReadout(d, 20),
        "TargetAttention": lambda d: TargetAttention(d),
        "TagnnReadout": lambda d: TagnnReadout(d),
        "ViewFusion": lambda d: ViewFusion(d),
        "CausalNodeAttention": lambda d: CausalNodeAttention(d, 2, 0.0),
    }


def _assert_initialised(module: nn.Module, what: str) -> None:
    for pname, p in module.named_parameters():
        assert torch.isfinite(p).all(), f"{what}.{pname} is not finite"
        assert p.abs().max() < 10, f"{what}.{pname} holds huge values"
        if "bias" not in pname.split(".")[-1] and "norm" not in pname:  # biases and LayerNorm may be constant
            assert p.std() > 0, f"{what}.{pname} is constant"


def _poison_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `torch.empty` return NaN-filled memory, so an uninitialised parameter cannot pass."""
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))


@pytest.mark.parametrize("layer", sorted(_layer_builders()))
def test_every_layer_initialises_itself(layer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison_allocator(monkeypatch)
    torch.manual_seed(0)
    module = _layer_builders()[layer](12)
    _assert_initialised(module, layer)
    before = [p.detach().clone() for p in module.parameters()]
    module.reset_parameters()  # re-initialises (new draws), still within the same bounds
    _assert_initialised(module, layer)
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))


@dataclass
class HiddenParams:
    hidden: int = 16  # the model's width is not called `dim`


class HiddenSizeModel(Model):
    """SR-GNN and GCE-GNN layers in a model whose width is `hidden`; no initialisation code."""

    Params: ClassVar[type] = HiddenParams
    needs_graph: ClassVar[bool] = True

    def __init__(self, n_items: int, params: HiddenParams | None = None) -> None:
        super().__init__(n_items, params)
        h = self.params.hidden
        self.embedding = nn.Embedding(n_items, h)
        self.gnn = layers.GatedGraphCell(h)
        self.attn = layers.RelationalGraphAttention(h)
        self.aggs = nn.ModuleList(layers.SessionAwareNeighbourAggregator(h) for _ in range(2))
        self.readout = layers.SoftAttentionReadout(h)
        self.rev_readout = layers.ReversedPositionReadout(h, 50)

    def forward(self, batch: Any) -> torch.Tensor:
        hidden = self.gnn(batch.adj_in, batch.adj_out, self.embedding(batch.nodes))
        seq = hidden.gather(1, batch.alias.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
        s = self.readout(seq, batch.mask, batch.lengths) + self.rev_readout(seq, batch.mask)
        scores = s @ self.embedding.weight.t()
        scores[:, 0] = float("-inf")
        return scores


def test_layers_in_a_model_without_a_dim_field_are_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    _poison_allocator(monkeypatch)
    torch.manual_seed(0)
    model = HiddenSizeModel(30)
    _assert_initialised(model, "model")
    a, b = model.aggs  # two layers built in a row draw different values
    assert not torch.equal(a.w_3, b.w_3)
    ds = small_dataset()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 16))
    loss = model.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.reset_parameters()  # default: every layer with its own scheme
    _assert_initialised(model, "model")


# Sum and sum of squares of every parameter after `torch.manual_seed(123)` and construction with
# dim 8 (heads 2), and the next draw of the global RNG, computed with the code before layers
# initialised themselves: a model's seeded initial values (and what it leaves of the RNG stream)
# must not drift, so results of fixed-seed runs stay comparable.
SEEDED = {
    "cmgnn": (-7.020575348375132, 120.70484407268016, 0.14923733472824097),
    "gcegnn": (-4.444986800168408, 108.46721976803266, 0.12289607524871826),
    "srgnn": (5.061948971255333, 65.36890959418155, 0.2649569511413574),
    "tagnn": (7.443352686372236, 67.99291825754965, 0.8850566744804382),
    "tagnn-code": (7.443352686372236, 67.99291825754965, 0.8850566744804382),
    "tagnnpp": (12.147322067886307, 195.19459419531316, 0.5863890051841736),  # encoder: PyTorch's init
    "tagnnpp-code": (3.6135421232465887, 75.3772651921847, 0.16916805505752563),
}


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seeded_initial_values_are_unchanged(name: str) -> None:
    kw = {"dim": 8, **({"heads": 2} if "heads" in model_info(name)["hparams"] else {})}
    torch.manual_seed(123)
    model = create_model(name, 57, **kw)
    values = [p.detach().double() for p in model.parameters()]
    total, squares, next_draw = SEEDED[name]
    assert torch.rand(1).item() == pytest.approx(next_draw, rel=1e-7)
    assert sum(v.sum().item() for v in values) == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert sum(v.square().sum().item() for v in values) == pytest.approx(squares, rel=1e-9)
    # every parameter ~ U(-1/sqrt(dim), 1/sqrt(dim)) (tagnnpp: except its encoder, PyTorch's own)
    encoder = getattr(model, "encoder", None)
    skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    assert max(p.detach().abs().max().item() for p in model.parameters() if id(p) not in skip) <= 1 / np.sqrt(8)
    if encoder is not None:  # LayerNorm gains 1, biases 0: no random signs
        norm = encoder.layers[0].norm1
        assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))


def test_a_renamed_component_keeps_its_old_name_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from sbrbench.models import resolve_config

    with caplog.at_level("WARNING"):
        cfg = resolve_config("srgnn", None, {"drop": "global,gnn"})
    assert cfg.params.drop == "attention,gnn"
    assert "now called 'attention'" in caplog.text
    old = create_model("srgnn", 20, dim=8, drop="global")
    new = create_model("srgnn", 20, dim=8, drop="attention")
    assert set(old.state_dict()) == set(new.state_dict())
    assert old.readout.q is None
