"""CM-GNN and InfoNCE: hand-computed loss, exact batch-restricted H-GCN, components, depth variants, learning."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.ablate import build_variants
from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.data.subset import top_items_subset
from sbrbench.errors import SbrError
from sbrbench.graphs import session_hypergraph
from sbrbench.losses import info_nce
from sbrbench.models import create_model, resolve_config
from sbrbench.models.cmgnn import CMGNN, HypergraphRows
from sbrbench.evaluate import evaluate_run, score_examples
from sbrbench.optim import make_optimizer
from sbrbench.train import train


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: on this shared 2-core machine a second thread makes small ops spin-wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_dataset(n_sessions: int = 80, n_items: int = 40, seed: int = 0) -> ProcessedDataset:
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(1, n_items, size=int(rng.integers(2, 10))).tolist() for _ in range(n_sessions)]
    items, offsets, n = from_sequences("toy", "t", sessions)
    idx = np.arange(n_sessions)
    a, b = int(n_sessions * 0.7), int(n_sessions * 0.85)
    splits = {
        "train": augment_all_prefixes(offsets, idx[:a]),
        "valid": augment_all_prefixes(offsets, idx[a:b]),
        "test": augment_all_prefixes(offsets, idx[b:]),
    }
    return ProcessedDataset("toy", "t", n, items, offsets, splits)


# ---- InfoNCE --------------------------------------------------------------------------------------
def test_info_nce_matches_a_hand_computed_value() -> None:
    # Normalised: a1=(1,0), a2=(0,1); b1=(1,0), b2=(1,1)/sqrt2. Cosines: [[1, 1/sqrt2], [0, 1/sqrt2]].
    # At tau = 0.5 the logits are [[2, sqrt2], [0, sqrt2]]; the positives are the diagonal.
    a = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # norms do not matter
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    r2 = math.sqrt(2.0)
    row1 = math.log(1 + math.exp(r2 - 2))  # -log(e^2 / (e^2 + e^sqrt2))
    row2 = math.log(1 + math.exp(-r2))  # -log(e^sqrt2 / (e^0 + e^sqrt2))
    assert info_nce(a, b, 0.5).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)
    col1 = math.log(1 + math.exp(-2.0))  # column 1: logits [2, 0], positive 2
    col2 = math.log(2.0)  # column 2: logits [sqrt2, sqrt2]
    both = 0.5 * ((row1 + row2) / 2 + (col1 + col2) / 2)
    assert info_nce(a, b, 0.5, symmetric=True).item() == pytest.approx(both, rel=1e-6)
    assert info_nce(a[:1], b[:1], 0.5).item() == pytest.approx(0.0, abs=1e-7)  # no negatives
    with pytest.raises(ValueError):
        info_nce(a, b, 0.0)


def test_info_nce_rewards_aligned_views() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    assert info_nce(x, x, 0.2) < info_nce(x, torch.randn(16, 8, generator=g), 0.2)


# ---- H-GCN ----------------------------------------------------------------------------------------
def test_hypergraph_convolution_matches_dense_formula_and_batch_rows_are_exact() -> None:
    ds = _random_dataset()
    fitted = ds.fit_sessions(("train",))
    items, offsets = fitted.items, fitted.offsets
    h = session_hypergraph(items, offsets, ds.n_items)
    inc = np.zeros((h.n_items, h.n_edges))
    inc[h.item, h.edge] = 1.0
    d = np.maximum(inc.sum(1), 1)
    b = np.maximum(inc.sum(0), 1)
    prop = torch.tensor((inc / d[:, None]) @ (inc / b[None, :]).T, dtype=torch.float32)
    x = torch.randn(ds.n_items, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    rows_of = HypergraphRows.from_graph(h)
    sel = torch.tensor([0, 3, 7, 20, 33])
    for layers in (1, 2):
        dense, cur = x, x
        for _ in range(layers):
            cur = prop @ cur
            dense = dense + cur
        dense = dense / (layers + 1)
        got = rows_of.rows(x, sel, layers)
        torch.testing.assert_close(got, dense[sel])
        g_got = torch.autograd.grad(got.square().sum(), x)[0]
        g_dense = torch.autograd.grad(dense[sel].square().sum(), x)[0]
        torch.testing.assert_close(g_got, g_dense)


@pytest.mark.parametrize("layers", [1, 2])
def test_batch_scope_equals_dhcn_full_propagation(layers: int) -> None:
    ds = _random_dataset()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 40))
    out = []
    for scope in ("all", "batch"):
        torch.manual_seed(0)
        m = create_model("cmgnn", ds.n_items, "toy", dim=8, hgcn_layers=layers, hgcn_scope=scope)
        m.prepare(ds, ("train",))
        s_h = m.high_order_session(batch.seq, batch.mask)
        grad = torch.autograd.grad(s_h.sum(), m.embedding.weight)[0]
        out.append((s_h.detach(), grad))
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])


# ---- components and configuration -------------------------------------------------------------------
ABSENT = {
    "lgcn": ("lgcn.", "fusion."),
    "ggcn": ("ggcn.", "nbr_items", "fusion."),
    "hgcn": ("hyper.",),
    "fusion": ("fusion.",),
    "cl": ("hyper.",),
}


@pytest.mark.parametrize("component", sorted(CMGNN.components))
def test_every_component_switches_off_cleanly(component: str) -> None:
    ds = _random_dataset()

    def names(m: torch.nn.Module) -> set[str]:
        return {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}

    torch.manual_seed(0)
    full = create_model("cmgnn", ds.n_items, "toy", dim=8)
    full.prepare(ds, ("train",))
    model = create_model("cmgnn", ds.n_items, "toy", dim=8, drop=component)
    model.prepare(ds, ("train",))
    for prefix in ABSENT[component]:
        assert any(n.startswith(prefix) for n in names(full)), prefix
        assert not any(n.startswith(prefix) for n in names(model)), (component, prefix)
    model.train()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 50))
    scores = model(batch)
    extra = model.extra_loss(batch, scores)
    assert (extra is None) == (component in ("hgcn", "cl"))
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # graphs stay out of checkpoints
    # scores, loss and gradients of every variant: test_every_model.py


def test_full_model_adds_the_weighted_contrastive_loss_only_in_training() -> None:
    ds = _random_dataset()
    torch.manual_seed(0)
    m = create_model("cmgnn", ds.n_items, "toy", dim=8, beta=0.5, temperature=0.3)
    m.prepare(ds, ("train",))
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 30))
    m.train()
    scores = m(batch)
    assert m._views is not None
    s_p, s_h = m._views
    extra = m.extra_loss(batch, scores)
    assert extra is not None and extra.item() == pytest.approx(0.5 * info_nce(s_p, s_h, 0.3).item())
    m.eval()
    with torch.no_grad():
        m(batch)
    assert m.extra_loss(batch, scores) is None


def test_defaults_and_validation() -> None:
    p = resolve_config("cmgnn", "diginetica").params
    assert (p.ggcn_layers, p.hgcn_layers, p.lgcn_layers, p.beta, p.eps, p.topk) == (2, 1, 1, 0.01, 3, 12)
    assert resolve_config("cmgnn", "tmall").params.dropout_gcn == 0.6
    for bad in ({"ggcn_layers": 0}, {"temperature": 0.0}, {"hgcn_scope": "some"}, {"dropout_gcn": 1.0}):
        with pytest.raises(SbrError):
            create_model("cmgnn", 10, **bad)
    ds = _random_dataset()
    model = create_model("cmgnn", ds.n_items, "toy", dim=8)
    with pytest.raises(SbrError, match="prepare"):
        model(ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 4)))


def test_vary_ggcn_layers_builds_models_of_different_depth() -> None:
    variants = build_variants("cmgnn", "diginetica", [], {"ggcn_layers": ["1", "2", "3"]})
    by_name = {v.name: v for v in variants}
    assert by_name["ggcn_layers=2"].alias_of == "full"  # the default depth is the full model
    depths = {}
    for name in ("ggcn_layers=1", "ggcn_layers=3"):
        model = create_model("cmgnn", 50, "diginetica", **by_name[name].overrides)
        depths[name] = len(model.ggcn)
    assert depths == {"ggcn_layers=1": 1, "ggcn_layers=3": 3}
    assert [v.name for v in build_variants("cmgnn", "diginetica", ["ggcn"], {})] == ["full", "-ggcn"]


def test_trainer_run_and_re_evaluation_agree(tmp_path: Path, one_thread: None) -> None:
    # The graphs are buffers outside the checkpoint: re-evaluation must rebuild the same ones.
    _random_dataset(n_sessions=200, n_items=100).save(tmp_path / "toy")
    overrides = {"epochs": 1, "dim": 8, "lr": 0.01}
    rec = train("cmgnn", tmp_path / "toy", results_dir=tmp_path / "runs", overrides=overrides, ks=(1, 5, 20))
    assert rec["status"] == "complete" and rec["hparams"]["ggcn_layers"] == 2
    again = evaluate_run(rec["run_dir"], ks=(1, 5, 20))
    assert again["metrics"] == pytest.approx(rec["test"])
    cached = {p.name.split("-")[0] for p in (tmp_path / "toy" / "graphs").glob("*.npz")}
    assert cached == {"global", "hyper"}


# ---- learning on real data --------------------------------------------------------------------------
def test_cmgnn_learns_on_real_data_and_beats_spop(diginetica, one_thread: None) -> None:
    # 100 batches of Diginetica restricted to its 3,000 most frequent items, with all five
    # components on (one G-GCN layer and dim 64 keep it within the CI budget).
    sub = top_items_subset(diginetica, 3000)
    torch.manual_seed(0)
    model = create_model("cmgnn", sub.n_items, sub.name, dim=64, ggcn_layers=1)
    model.prepare(sub, ("train",))
    opt = make_optimizer(model, 3e-3, 1e-5)
    model.train()
    fit = ExampleSource.from_dataset(sub, "train", graphs=True)
    for i, batch in enumerate(fit.batches(100, generator=torch.Generator().manual_seed(0))):
        if i == 100:
            break
        opt.zero_grad()
        scores = model(batch)
        extra = model.extra_loss(batch, scores)
        assert extra is not None
        (F.cross_entropy(scores, batch.targets) + extra).backward()
        opt.step()
    ours = score_examples(model, ExampleSource.from_dataset(sub, "test", graphs=True, limit=4000), 500, "cpu").metrics((20,))
    base = {}
    for name in ("pop", "spop"):
        b = create_model(name, sub.n_items)
        b.fit(sub, ("train",))
        base[name] = score_examples(b, ExampleSource.from_dataset(sub, "test", limit=4000), 500, "cpu").metrics((20,))
    assert ours["HR@20"] > base["spop"]["HR@20"] + 0.05, (ours, base)
    assert ours["MRR@20"] > base["spop"]["MRR@20"], (ours, base)
    assert ours["HR@20"] > 5 * base["pop"]["HR@20"], (ours, base)
