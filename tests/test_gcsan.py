"""GC-SAN: scores equal a plain re-statement of RecBole's GCSAN forward (its `_get_slice` session
graphs, GNN cell, BERT-style Transformer layer with its additive attention mask, ω mix) on copied
weights; components."""

from __future__ import annotations

from math import erf, sqrt

import numpy as np
import pytest
import torch

from sbrbench.batching import make_batch, pad_prefixes
from sbrbench.models import create_model

PREFIXES = [[3, 1, 4, 1, 5], [7], [2, 7, 2, 7, 6, 2], [8, 8, 1], [5, 3, 9]]
N_ITEMS = 11


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy().copy()


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * w + b


def recbole_gcsan(model, prefixes: list[list[int]]) -> np.ndarray:
    """RecBole GCSAN.forward + full_sort_predict in evaluation, for right-padded item_seq."""
    p = model.params
    width = max(len(s) for s in prefixes)
    item_seq = np.array([s + [0] * (width - len(s)) for s in prefixes])
    emb = _np(model.embedding.weight)
    g = model.gnn
    w_ih, w_hh, b_ih, b_hh = _np(g.w_ih), _np(g.w_hh), _np(g.b_ih), _np(g.b_hh)
    win, bin_, wout, bout = _np(g.edge_in.weight), _np(g.edge_in.bias), _np(g.edge_out.weight), _np(g.edge_out.bias)
    out = []
    for row, length in zip(item_seq, (len(s) for s in prefixes)):
        node = np.unique(row)  # 0 is a node of a padded sequence, as in RecBole
        items = np.concatenate([node, np.zeros(width - len(node), dtype=int)])
        a = np.zeros((width, width))
        for i in range(width - 1):
            if row[i + 1] == 0:
                break
            a[np.where(node == row[i])[0][0], np.where(node == row[i + 1])[0][0]] = 1
        s_in = a.sum(0)
        s_in[s_in == 0] = 1
        s_out = a.sum(1)
        s_out[s_out == 0] = 1
        big = np.concatenate([a / s_in, a.T / s_out]).T  # (width, 2·width)
        alias = [np.where(node == i)[0][0] for i in row]
        h = emb[items]
        for _ in range(p.step):
            x = np.concatenate([big[:, :width] @ (h @ win.T + bin_), big[:, width:] @ (h @ wout.T + bout)], 1)
            gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
            (i_r, i_i, i_n), (h_r, h_i, h_n) = np.split(gi, 3, 1), np.split(gh, 3, 1)
            r, z = 1 / (1 + np.exp(-(i_r + h_r))), 1 / (1 + np.exp(-(i_i + h_i)))
            n = np.tanh(i_n + r * h_n)
            h = (1 - z) * h + z * n
        seq_hidden = h[alias]
        ht = seq_hidden[length - 1]
        mask = (row > 0)[None, :] * (np.triu(np.ones((width, width)), 1) == 0)
        add = (1.0 - mask) * -10000.0
        x = seq_hidden
        for blk in model.blocks:
            heads, d = p.heads, p.dim
            hd = d // heads
            q, k, v = (x @ _np(m.weight).T + _np(m.bias) for m in (blk.query, blk.key, blk.value))
            ctx = np.zeros_like(x)
            for hh in range(heads):
                sl = slice(hh * hd, (hh + 1) * hd)
                sc = q[:, sl] @ k[:, sl].T / sqrt(hd) + add
                e = np.exp(sc - sc.max(1, keepdims=True))
                ctx[:, sl] = (e / e.sum(1, keepdims=True)) @ v[:, sl]
            y = _ln(ctx @ _np(blk.dense.weight).T + _np(blk.dense.bias) + x, _np(blk.ln1.weight), _np(blk.ln1.bias))
            f = y @ _np(blk.ffn1.weight).T + _np(blk.ffn1.bias)
            f = f * 0.5 * (1.0 + np.vectorize(erf)(f / sqrt(2.0)))
            x = _ln(f @ _np(blk.ffn2.weight).T + _np(blk.ffn2.bias) + y, _np(blk.ln2.weight), _np(blk.ln2.bias))
        s = p.weight * x[length - 1] + (1 - p.weight) * ht
        out.append(s @ emb.T)
    return np.stack(out)


@pytest.mark.parametrize("heads", [1, 2])
def test_scores_equal_recboles_forward(heads: int) -> None:
    torch.manual_seed(0)
    model = create_model("gcsan", N_ITEMS, dim=8, heads=heads, layers=2, inner=12, step=2).double().eval()
    with torch.no_grad():  # larger weights than RecBole's N(0, 0.02²), biases non-zero
        for name, w in model.named_parameters():
            if "ln" not in name:
                w.normal_(0, 0.5)
    flat = torch.tensor([i for s in PREFIXES for i in s])
    lengths = torch.tensor([len(s) for s in PREFIXES])
    seq, mask = pad_prefixes(flat, torch.cumsum(lengths, 0) - lengths, lengths)
    with torch.no_grad():
        ours = model(make_batch(seq, lengths, torch.ones(len(PREFIXES), dtype=torch.long), mask, graphs=True)).numpy()
    want = recbole_gcsan(model, PREFIXES)
    assert np.isneginf(ours[:, 0]).all()
    np.testing.assert_allclose(ours[:, 1:], want[:, 1:], rtol=1e-9, atol=1e-10)


def test_components_and_regulariser() -> None:
    full = create_model("gcsan", N_ITEMS, dim=8)
    assert full.params.weight == 0.6 and full.params.dim == 8
    assert create_model("gcsan", N_ITEMS, dim=8, drop="gnn").gnn is None
    assert create_model("gcsan", N_ITEMS, dim=8, drop="attention").blocks is None
    reg = full.extra_loss(None, None)  # type: ignore[arg-type]
    assert reg.item() == pytest.approx(5e-5 * full.embedding.weight.norm().item() / N_ITEMS)
    defaults = create_model("gcsan", N_ITEMS).params
    assert (defaults.dim, defaults.layers, defaults.heads, defaults.inner, defaults.dropout) == (64, 1, 1, 256, 0.2)


# Learning on real data: `reproduce tagnnpp-table2 --budget ci` (test_reproduce_baselines.py).
