"""MCLSR (reference implementation): its graphs by hand, its losses in closed form, the training-only
views kept out of inference, no held-out user in any graph or sampler statistic, and a small end-to-end
learning check against POP."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sbrbench.batching import ExampleSource
from sbrbench.data.formats import UserSequences
from sbrbench.data.protocols import get_protocol
from sbrbench.errors import SbrError
from sbrbench.models import create_model
from sbrbench.models.mclsr import _csr, _rows_spmm, _SymmetricSpMM
from sbrbench.models.seqrec import cross_view_nce
from sbrbench.user_graphs import (
    bipartite_adjacency,
    cooccurrence_graph,
    transpose_permutation,
    user_item_matrix,
)

TINY = {"dim": 8}


def comirec_dataset(sequences: list[list[int]], **options):  # type: ignore[no-untyped-def]
    n = max(max(s) for s in sequences) + 1
    data = UserSequences([np.asarray(s, np.int32) for s in sequences], [f"u{i}" for i in range(len(sequences))],
                         [""] + [str(k) for k in range(1, n)])
    return get_protocol("comirec").build(data, "syn", options={"min_item_support": 1, **options})


def random_users(n: int, n_items: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, n_items, size=int(rng.integers(5, 12))).tolist() for _ in range(n)]


# ---- graphs ------------------------------------------------------------------------------------------
def fit_of(seqs: list[list[int]]):  # type: ignore[no-untyped-def]
    from sbrbench.data.dataset import FitSessions

    lens = np.array([len(s) for s in seqs])
    return FitSessions(np.concatenate(seqs).astype(np.int64), np.r_[0, np.cumsum(lens)].astype(np.int64),
                       np.arange(len(seqs), dtype=np.int64), ("train",))


def test_graphs_by_hand() -> None:
    fit = fit_of([[1, 2], [2, 3], [3, 4, 3], [2, 3]])  # 4 users, items 1..4 (0 = padding)
    r = user_item_matrix(fit, 5)
    assert r.toarray().tolist() == [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1], [0, 0, 1, 1, 0]]
    a = bipartite_adjacency(r).toarray()
    du, di = np.array([2, 2, 2, 2]), np.array([0, 1, 3, 3, 1])
    want = np.zeros((9, 9))
    for u in range(4):
        for i in range(5):
            if r[u, i]:
                want[u, 4 + i] = want[4 + i, u] = 1 / math.sqrt(du[u] * di[i])
    assert a == pytest.approx(want)
    assert not a[4].any()  # the padding item is isolated
    # user-user: shared items (u1 and u3 share 2, u0-u1 / u0-u3 share 1 ...), no self loops
    cu = cooccurrence_graph(r, mode="count", topk=0).toarray()
    w = np.array([[0, 1, 0, 1], [1, 0, 1, 2], [0, 1, 0, 1], [1, 2, 1, 0]], dtype=float)
    d = w.sum(1)
    assert cu == pytest.approx(w / np.sqrt(np.outer(d, d)))
    wb = (w > 0).astype(float)
    db = wb.sum(1)
    assert cooccurrence_graph(r, mode="binary", topk=0).toarray() == pytest.approx(wb / np.sqrt(np.outer(db, db)))
    # item-item with top-1: item 2 keeps 3 (2 shared users > 1), item 1 keeps 2; then A = max(A, Aᵀ)
    ci = cooccurrence_graph(r.T.tocsr(), mode="count", topk=1).toarray()
    assert (ci > 0).astype(int).tolist() == [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 1],
                                             [0, 0, 0, 1, 0]]
    assert ci == pytest.approx(ci.T)
    # holding each user's last item out of G^uv
    assert user_item_matrix(fit, 5, holdout_last=True).toarray()[2].tolist() == [0, 0, 0, 1, 1]  # [3, 4] of [3, 4, 3]
    assert user_item_matrix(fit, 5, holdout_last=True).toarray()[0].tolist() == [0, 1, 0, 0, 0]


def test_sparse_products_and_their_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(7, 7, generator=g) < 0.4).double() * torch.rand(7, 7, generator=g, dtype=torch.float64)
    dense = dense + dense.t()
    m = sp.csr_matrix(dense.numpy())
    m.sort_indices()
    tperm = torch.from_numpy(transpose_permutation(m))
    crow, col = torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64))
    val = torch.from_numpy(m.data.astype(np.float64))
    drop = val * (torch.rand(val.shape, generator=g, dtype=torch.float64) > 0.3)  # asymmetric values
    ref = _csr(crow, col, drop, 7).to_dense()
    x = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = _SymmetricSpMM.apply(crow, col, drop, tperm, x)
    assert torch.allclose(y, ref @ x)
    (gx,) = torch.autograd.grad((y * torch.arange(21.0, dtype=torch.float64).view(7, 3)).sum(), x)
    assert torch.allclose(gx, ref.t() @ torch.arange(21.0, dtype=torch.float64).view(7, 3))
    rows = torch.tensor([5, 0, 3])
    z = _rows_spmm(crow, col, drop, rows, x)
    assert torch.allclose(z, (ref @ x)[rows])
    (gz,) = torch.autograd.grad(z.sum(), x)
    assert torch.allclose(gz, ref[rows].sum(0).unsqueeze(1).expand(7, 3))


# ---- losses and encoders -----------------------------------------------------------------------------
def test_cross_view_nce_closed_form() -> None:
    v = torch.eye(3)  # identical views, orthonormal rows; cos, tau = 1
    want = -math.log(math.e / (math.e + 4.0))  # positive e^1; 2 cross + 2 intra negatives e^0; not the anchor itself
    assert cross_view_nce(v, v.clone(), 1.0, "cos").item() == pytest.approx(want)
    assert cross_view_nce(v, v.clone(), 1.0, "cos", symmetric=True).item() == pytest.approx(want)
    assert cross_view_nce(v[:0], v[:0], 1.0).item() == 0.0


def test_current_interest_is_comirec_sa_with_one_interest() -> None:
    ds = comirec_dataset(random_users(30, 20, 0))
    torch.manual_seed(0)
    m = create_model("mclsr", ds.n_items, **TINY, max_len=4)
    b = ExampleSource.from_dataset(ds, "train").batch(slice(0, 5))
    got, _, _ = m.current_interest(b)
    for r in range(5):
        items = b.seq[r, : b.lengths[r]][-4:]
        e = m.item_emb.weight[items]
        a = torch.softmax(m.w2(torch.tanh(m.w1(e + m.pos_emb.weight[: len(items)]))).squeeze(-1), 0)
        assert torch.allclose(got[r], a @ e, atol=1e-6)


def test_inference_needs_neither_users_nor_graphs() -> None:
    ds = comirec_dataset(random_users(40, 25, 1))
    torch.manual_seed(0)
    m = create_model("mclsr", ds.n_items, **TINY)
    batch = ExampleSource.from_dataset(ds, "test").batch(slice(0, 4))
    m.eval()
    fresh = m(batch)  # never prepared: no user table, no graph
    m.prepare(ds, ("train",))
    assert m.user_emb is not None and m.uv_crow is not None
    assert (m.user_of_session[batch.session] == -1).all()  # test users have no user row
    assert torch.equal(m(batch), fresh)
    m.user_emb, m.uv_crow = None, None
    assert torch.equal(m(batch), fresh)
    with pytest.raises(SbrError, match="prepare"):
        m.train()
        m.training_loss(ExampleSource.from_dataset(ds, "train").batch(slice(0, 4)))


def test_components_take_their_parts_with_them() -> None:
    ds = comirec_dataset(random_users(40, 25, 2))
    for drop, gone in [("uv", ["user_emb", "w3", "head_i", "head_u", "head_v", "uv_crow", "uu_crow", "vv_crow"]),
                       ("fl", ["head_u", "head_v", "uu_crow", "vv_crow"]), ("il", ["head_i"]),
                       ("uu", ["head_u", "uu_crow"]), ("vv", ["head_v", "vv_crow"])]:
        m = create_model("mclsr", ds.n_items, **TINY, drop=drop)
        m.prepare(ds, ("train",))
        assert all(getattr(m, name) is None for name in gone), drop
    for lg in (0, 1, 3):
        m = create_model("mclsr", ds.n_items, **TINY, L_g=lg, graph_readout="mean" if lg == 1 else "last")
        m.prepare(ds, ("train",))
        m.train()
        loss = m.training_loss(ExampleSource.from_dataset(ds, "train").batch(slice(0, 16)))
        assert torch.isfinite(loss)
    with pytest.raises(SbrError, match="cooc_graph"):
        create_model("mclsr", ds.n_items, cooc_graph="weighted")
    with pytest.raises(SbrError, match="no component"):
        create_model("mclsr", ds.n_items, drop="gnn")


# ---- leakage ------------------------------------------------------------------------------------------
def state(m) -> dict:  # type: ignore[no-untyped-def]
    out = {k: v.clone() for k, v in m.named_buffers() if v is not None}
    out["user_rows"] = torch.tensor(m.user_emb.num_embeddings)
    return out


def test_no_held_out_user_enters_a_graph_or_the_sampler() -> None:
    ds = comirec_dataset(random_users(60, 30, 3))
    n_train = ds.info["users_train"]
    held = np.arange(ds.offsets[n_train], ds.items.shape[0])
    rng = np.random.default_rng(9)
    other = ds.items.copy()
    other[held] = (other[held] % 29) + 1 + rng.integers(0, 2, size=held.shape[0])  # every held-out item changed
    other[held] = np.where(other[held] == ds.items[held], other[held] % 30 + 1, other[held])
    assert (other[held] != ds.items[held]).all()
    scrambled = dataclasses.replace(ds, items=other.astype(np.int32))
    torch.manual_seed(0)
    a = create_model("mclsr", ds.n_items, **TINY)
    a.prepare(ds, ("train",))
    torch.manual_seed(0)
    b = create_model("mclsr", ds.n_items, **TINY)
    b.prepare(scrambled, ("train",))
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert int(sa["user_rows"]) == n_train  # one user row per training user, none for valid / test users
    counts = np.bincount(ds.fit_sessions(("train",)).items, minlength=ds.n_items)
    ranked = a.sampler.rank_item[1:].numpy()
    assert (np.diff(counts[ranked]) <= 0).all()  # the sampler ranks by training counts only
    # positive control: fitting on the validation users too changes the graphs
    c = create_model("mclsr", ds.n_items, **TINY)
    c.prepare(scrambled, ("train", "valid"))
    d = create_model("mclsr", ds.n_items, **TINY)
    d.prepare(ds, ("train", "valid"))
    assert not torch.equal(c.uv_col, d.uv_col) or not torch.equal(c.uv_crow, d.uv_crow)


# ---- learning ---------------------------------------------------------------------------------------------
def cluster_users(n: int, seed: int) -> list[list[int]]:
    """Users who each stay within one of 20 clusters of 10 items (popularity alone cannot tell which)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = int(rng.integers(0, 20))
        out.append((1 + 10 * c + rng.integers(0, 10, size=int(rng.integers(6, 14)))).tolist())
    return out


def test_mclsr_learns_far_beyond_pop(tmp_path) -> None:
    from sbrbench.train import train

    ds = comirec_dataset(cluster_users(1200, 0))
    common = {"results_dir": tmp_path, "threads": 1, "seed": 1}
    pop = train("pop", ds, select_on="test", **common)
    rec = train("mclsr", ds, overrides={"dim": 16, "epochs": 4, "batch_size": 64, "lr": 5e-3}, **common)
    assert rec["selection"]["metric"] == "Recall@50" and rec["metric_definitions"]["Recall"].startswith("hits")
    assert {"Recall@20", "NDCG@50", "NDCG_comirec@50"} <= set(rec["test"])
    ours, base = rec["test"]["Recall@20"], pop["test"]["Recall@20"]
    assert ours > 2.5 * base and ours > 0.5, (ours, base)
