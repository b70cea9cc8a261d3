"""BPR-MF and FPMC on sessions (sessions as users): scores of a new session, the LearnBPR / S-BPR
updates against MyMediaLite's per-triple rule, the training triples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbrbench.batching import item_tensor, make_batch
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.errors import SbrError
from sbrbench.models import create_model, resolve_config
from sbrbench.models.bprmf import TripleBatch

SESSIONS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8], [9, 3], [2, 3, 8, 4], [7, 9, 1]]
N_ITEMS = 10


def _dataset() -> ProcessedDataset:
    items, offsets, _ = from_sequences("f", "t", SESSIONS, n_items=N_ITEMS)
    idx = np.arange(len(SESSIONS))
    splits = {"train": augment_all_prefixes(offsets, idx[:4]), "valid": augment_all_prefixes(offsets, idx[4:5]),
              "test": augment_all_prefixes(offsets, idx[5:])}
    return ProcessedDataset("f", "t", N_ITEMS, items, offsets, splits)


def _prefix_batch(prefixes: list[list[int]]):
    width = max(len(p) for p in prefixes)
    seq = torch.tensor([p + [0] * (width - len(p)) for p in prefixes])
    lengths = torch.tensor([len(p) for p in prefixes])
    return make_batch(seq, lengths, torch.ones(len(prefixes), dtype=torch.long), seq > 0)


def test_new_sessions_score_without_session_factors() -> None:
    torch.manual_seed(0)
    bpr = create_model("bpr-mf", N_ITEMS, dim=4, sparse=False)
    fpmc = create_model("fpmc", N_ITEMS, dim=4, sparse=False)
    with torch.no_grad():
        bpr.bias.weight.normal_()
    batch = _prefix_batch([[3, 1, 4], [9]])
    with torch.no_grad():
        s_bpr, s_fpmc = bpr(batch), fpmc(batch)
    h, b = bpr.item.weight, bpr.bias.weight[:, 0]
    want = torch.stack([h[[3, 1, 4]].mean(0) @ h.t() + b, h[9] @ h.t() + b])
    torch.testing.assert_close(s_bpr[:, 1:], want[:, 1:])
    want = torch.stack([fpmc.item_prev.weight[4], fpmc.item_prev.weight[9]]) @ fpmc.item_next.weight.t()
    torch.testing.assert_close(s_fpmc[:, 1:], want[:, 1:])
    assert torch.isneginf(s_bpr[:, 0]).all() and torch.isneginf(s_fpmc[:, 0]).all()


@pytest.mark.parametrize("item_bias", [True, False])
def test_sgd_step_is_the_learnbpr_update(item_bias: bool) -> None:
    """One triple: θ ← θ + α (σ(−x_uij) ∂x/∂θ − λ θ), the per-triple update of MyMediaLite's BPRMF (learnt
    bias, bias reg 0) and of the GRU4Rec authors' `BPR` baseline (its biases never move)."""
    ds = _dataset()
    torch.manual_seed(0)
    model = create_model("bpr-mf", N_ITEMS, dim=3, sparse=True, item_bias=item_bias, reg_u=0.0025, reg_i=0.0025,
                         reg_j=0.00025)
    model.prepare(ds, ("train",))
    with torch.no_grad():
        model.bias.weight.normal_()
    u, i, j, lr = 2, 5, 7, 0.05
    w, hi, hj = (t.detach().clone() for t in (model.user.weight[u], model.item.weight[i], model.item.weight[j]))
    bi, bj = model.bias.weight[i, 0].item(), model.bias.weight[j, 0].item()
    x = bi - bj + float(w @ (hi - hj))
    g = 1.0 / (1.0 + np.exp(x))  # σ(−x)
    opt = model.configure_optimizer(lr, 0.0)
    batch = TripleBatch(seq=torch.tensor([[0]]), lengths=torch.tensor([1]), targets=torch.tensor([i]),
                        mask=torch.tensor([[False]]), users=torch.tensor([u]), negatives=torch.tensor([j]))
    opt.zero_grad()
    model.training_loss(batch).backward()
    opt.step()
    p = model.params
    torch.testing.assert_close(model.user.weight[u], w + lr * (g * (hi - hj) - p.reg_u * w))
    torch.testing.assert_close(model.item.weight[i], hi + lr * (g * w - p.reg_i * hi))
    torch.testing.assert_close(model.item.weight[j], hj + lr * (-g * w - p.reg_j * hj))
    assert model.bias.weight[i, 0].item() == pytest.approx(bi + lr * g if item_bias else bi, rel=1e-5)


def test_fpmc_sbpr_loss_by_hand() -> None:
    ds = _dataset()
    torch.manual_seed(0)
    model = create_model("fpmc", N_ITEMS, dim=3, reg=0.1, reg_j=0.01, sparse=False)
    model.prepare(ds, ("train",))
    u, l, i, j = 1, 9, 2, 6
    batch = TripleBatch(seq=torch.tensor([[l]]), lengths=torch.tensor([1]), targets=torch.tensor([i]),
                        mask=torch.tensor([[True]]), users=torch.tensor([u]), negatives=torch.tensor([j]))
    vu, vl = model.user.weight[u], model.item_prev.weight[l]
    ui, uj, ni, nj = (t.weight[k] for t, k in ((model.item_user, i), (model.item_user, j), (model.item_next, i),
                                                (model.item_next, j)))
    x = vu @ ui + vl @ ni - vu @ uj - vl @ nj
    reg = 0.1 * (vu @ vu + vl @ vl + ui @ ui + ni @ ni) + 0.01 * (uj @ uj + nj @ nj)
    assert model.training_loss(batch).item() == pytest.approx((-torch.nn.functional.logsigmoid(x) + reg / 2).item())


def test_triples_cover_every_fitted_click_or_transition_once() -> None:
    ds = _dataset()
    fit = ds.fit_sessions(("train",))
    for name, n in (("bpr-mf", fit.items.shape[0]), ("fpmc", fit.items.shape[0] - len(fit))):
        model = create_model(name, N_ITEMS, dim=3)
        model.prepare(ds, ("train",))
        src = model.example_source(ds, ("train",), item_tensor(ds), None)
        got = [(u, p, t) for b in src.batches(4, generator=torch.Generator().manual_seed(0))
               for u, p, t in zip(b.users.tolist(), b.seq[:, 0].tolist(), b.targets.tolist())]
        assert len(got) == len(src) == n
        sessions = [fit.items[fit.offsets[k] : fit.offsets[k + 1]].tolist() for k in range(len(fit))]
        for u, p, t in got:
            assert t in sessions[u]
            if name == "fpmc":
                assert any(a == p and b == t for a, b in zip(sessions[u], sessions[u][1:]))
    assert model.user.weight.shape[0] == len(fit)
    with pytest.raises(SbrError, match="l2"):
        model.configure_optimizer(0.05, 1e-5)


def test_defaults() -> None:
    cfg = resolve_config("bpr-mf", "diginetica")
    p = cfg.params
    assert (p.dim, p.reg_u, p.reg_j, p.item_bias, p.init, p.init_std, cfg.train.lr, cfg.train.epochs) == (
        100, 0.0, 0.0, False, "uniform", 0.05, 0.01, 10)
    weight = create_model("bpr-mf", N_ITEMS).item.weight
    assert weight.abs().max() <= 0.05 and weight.std() > 0.02
    with pytest.raises(SbrError, match="uniform or normal"):
        create_model("bpr-mf", N_ITEMS, init="xavier")
    assert resolve_config("fpmc").params.dim == 100


# Learning on real data: `reproduce srgnn-table2 --budget ci` (test_reproduce.py) trains both one
# epoch on Diginetica's 3,000-item slice and checks them against POP.


def _pairwise_accuracy(model, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Share of (session, clicked item, other item) triples that the session factors order right."""
    with torch.no_grad():
        u, hi, hj = model.user.weight[users], model.item.weight[pos], model.item.weight[neg]
        return float(((u * (hi - hj)).sum(1) > 0).float().mean())


def test_bpr_mf_learns_the_fitted_sessions_on_real_data(diginetica) -> None:
    """One epoch of LearnBPR (lr 0.05) on Diginetica's 3,000 most frequent items orders the fitted
    sessions' clicks above random items (half of 20,000 triples before training, 0.70 after), and
    ranking new sessions by the mean of their items' factors beats POP on the slice's test prefixes."""
    from sbrbench.data.subset import top_items_subset
    from tests.learning_check import train_then_vs_pop

    torch.manual_seed(0)
    sub = top_items_subset(diginetica, 3000)
    model = create_model("bpr-mf", sub.n_items)
    model.prepare(sub, ("train",))
    src = model.example_source(sub, ("train",), item_tensor(sub), None)
    check = next(iter(src.batches(20_000, generator=torch.Generator().manual_seed(1))))
    before = _pairwise_accuracy(model, check.users, check.targets, check.negatives)
    opt = model.configure_optimizer(0.05, 0.0)
    batches = src.batches(256, generator=torch.Generator().manual_seed(2))
    ours, pop = train_then_vs_pop(model, opt, batches, src.n_batches(256), sub, 5000)
    after = _pairwise_accuracy(model, check.users, check.targets, check.negatives)
    assert abs(before - 0.5) < 0.02 and after > 0.65, (before, after)
    assert ours["HR@20"] > 2 * pop["HR@20"] and ours["MRR@20"] > 2 * pop["MRR@20"], (ours, pop)
