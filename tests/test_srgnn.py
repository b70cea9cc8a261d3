"""SR-GNN's fast training path: the same values and gradients as the plain score product."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbrbench.batching import ExampleSource
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences
from sbrbench.models import create_model
from sbrbench.models.layers import catalogue_scores
from sbrbench.models.srgnn import SRGNN
from sbrbench.optim import make_optimizer


def _plain_scores(session: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    scores = session @ table.t()
    scores[:, 0] = float("-inf")
    return scores


def _padded_session_embedding(model: SRGNN, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """SR-GNN's session vector on the padded (B, N) node grid and (B, L) positions (the layers' `forward`)."""
    hidden = model.embedding(batch.nodes)
    if model.gnn is not None:
        hidden = model.gnn(batch.adj_in, batch.adj_out, hidden)
    seq_hidden = hidden.gather(1, batch.alias.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
    return model.readout(seq_hidden, batch.mask, batch.lengths)


def _dataset(n_sessions: int = 60, n_items: int = 30, seed: int = 0) -> ProcessedDataset:
    rng = np.random.default_rng(seed)
    sessions = [rng.integers(1, n_items, size=int(rng.integers(2, 9))).tolist() for _ in range(n_sessions)]
    items, offsets, _ = from_sequences("small", "t", sessions)
    idx = np.arange(n_sessions)
    splits = {"train": augment_all_prefixes(offsets, idx[:40]), "test": augment_all_prefixes(offsets, idx[40:])}
    return ProcessedDataset("small", "t", n_items, items, offsets, splits)


def test_catalogue_scores_equal_the_plain_product_in_values_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    upstream = torch.randn(7, 11, generator=gen, dtype=torch.float64)  # column 0 too: it must be ignored
    grads = []
    for fn in (catalogue_scores, _plain_scores):
        a, b = s.clone().requires_grad_(), w.clone().requires_grad_()
        out = fn(a, b)
        (torch.where(torch.isinf(out), 0, out) * upstream).sum().backward()
        grads.append((out.detach(), a.grad, b.grad))
    for new, old in zip(*grads):
        torch.testing.assert_close(new, old, rtol=1e-12, atol=1e-12)
    assert torch.all(grads[0][2][0] == 0)
    with torch.no_grad():
        torch.testing.assert_close(catalogue_scores(s, w), _plain_scores(s, w))


@pytest.mark.parametrize(("drop", "step", "hybrid"), [("", 1, True), ("", 2, False), ("gnn", 1, True),
                                                      ("attention", 1, True)])
def test_srgnn_training_step_equals_the_plain_form(
    drop: str, step: int, hybrid: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packed nodes and positions, sparse node-lookup gradient and `catalogue_scores`: the padded,
    dense-gradient form's scores, loss and gradients."""
    ds = _dataset()
    torch.manual_seed(0)
    model = create_model("srgnn", ds.n_items, dim=6, drop=drop, step=step, hybrid=hybrid).double()
    batch = ExampleSource.from_dataset(ds, "train", graphs=True).batch(slice(0, 50))
    assert batch.adj_in is not None and batch.adj_out is not None
    batch = dataclasses.replace(batch, adj_in=batch.adj_in.double(), adj_out=batch.adj_out.double())

    def plain(self: SRGNN, b):  # type: ignore[no-untyped-def]
        return _plain_scores(_padded_session_embedding(self, b), self.embedding.weight)

    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(batch), plain(model, batch), rtol=1e-12, atol=1e-12)
        hand_made = dataclasses.replace(batch, pos_rows=None, pos_cols=None, node_rows=None, node_cols=None)
        torch.testing.assert_close(model(hand_made), plain(model, batch), rtol=1e-12, atol=1e-12)
        model.train()
    results = []
    for reference in (False, True):
        model.zero_grad(set_to_none=True)
        with monkeypatch.context() as m:
            if reference:
                m.setattr(SRGNN, "forward", plain)
            loss = model.training_loss(batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (new_loss, new_grads), (old_loss, old_grads) = results
    torch.testing.assert_close(new_loss, old_loss, rtol=1e-12, atol=1e-12)
    for g_new, g_old in zip(new_grads, old_grads):
        assert not g_new.is_sparse
        torch.testing.assert_close(g_new, g_old, rtol=1e-10, atol=1e-12)
    opt = make_optimizer(model, 1e-3, 1e-5)
    model.zero_grad(set_to_none=True)
    model.training_loss(batch).backward()
    opt.step()  # the fused Adam takes the table's (dense) gradient
