"""Dataset-level graphs: the ε-neighbour global item graph and the session hypergraph."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from sbrbench.errors import SbrError
from sbrbench.graphs import dataset_graph, global_item_graph, session_hypergraph

# Four hand-made sessions over items 1..6.
SESSIONS = [[1, 2, 3], [2, 3, 4, 2], [5], [1, 2]]


def _csr(sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sessions], out=offsets[1:])
    return np.array([x for s in sessions for x in s], dtype=np.int64), offsets


def _official_build_graph(seqs: list[list[int]], num: int, eps: int, sample_num: int) -> tuple[list, list]:
    """A plain re-statement of GCE-GNN `build_graph.py`'s loops (dict counts, stable sort)."""
    counts: list[dict[int, int]] = [dict() for _ in range(num)]
    for data in seqs:
        for k in range(1, eps + 1):
            for j in range(len(data) - k):
                for a, b in ((data[j], data[j + k]), (data[j + k], data[j])):
                    counts[a][b] = counts[a].get(b, 0) + 1
    adj, weight = [], []
    for t in range(num):
        ranked = sorted(counts[t].items(), reverse=True, key=lambda x: x[1])[:sample_num]
        adj.append([v for v, _ in ranked])
        weight.append([c for _, c in ranked])
    return adj, weight


def _as_dict(g, item: int) -> dict[int, float]:  # type: ignore[no-untyped-def]
    c = int(g.counts[item])
    return dict(zip(g.neighbors[item, :c].tolist(), g.weights[item, :c].tolist()))


def test_global_graph_hand_made_edges_weights_and_eps() -> None:
    items, offsets = _csr(SESSIONS)
    g = global_item_graph(items, offsets, 7, eps=1, topk=12)
    # ε = 1: consecutive pairs both ways; 1-2 twice (sessions 1 and 4), 2-3 twice, 3-4 and 4-2 once.
    assert _as_dict(g, 1) == {2: 2.0}
    assert _as_dict(g, 2) == {1: 2.0, 3: 2.0, 4: 1.0}
    assert _as_dict(g, 3) == {2: 2.0, 4: 1.0}
    assert _as_dict(g, 4) == {3: 1.0, 2: 1.0}
    assert g.counts[5] == 0 and g.counts[0] == 0 and g.counts[6] == 0
    assert not g.neighbors[5].any() and not g.weights[5].any()

    g3 = global_item_graph(items, offsets, 7, eps=3, topk=12)
    # distance 2 and 3 add 1-3 (session 1), 2-4, 3-2 (session 2, positions 1,3) and 2-2 (distance 3).
    assert _as_dict(g3, 1) == {2: 2.0, 3: 1.0}
    assert _as_dict(g3, 2) == {3: 3.0, 1: 2.0, 4: 2.0, 2: 2.0}
    assert _as_dict(g3, 4) == {2: 2.0, 3: 1.0}
    # top-k keeps the strongest; ties keep the official script's first-occurrence order.
    g1 = global_item_graph(items, offsets, 7, eps=3, topk=2)
    assert g1.neighbors[2].tolist() == [3, 1] and g1.weights[2].tolist() == [3.0, 2.0]
    assert g1.counts[2] == 2
    adj = g3.adjacency().to_dense()
    assert adj[2, 3] == 3.0 and adj[3, 2] == 3.0 and adj[5].sum() == 0


def test_global_graph_equals_official_script_on_real_sessions(shared_datasets: Path) -> None:
    from sbrbench.data.srgnn_pickles import read_train_sessions

    seqs = [list(s) for s in read_train_sessions(shared_datasets / "diginetica" / "GCE-GNN" / "all_train_seq.txt")]
    seqs = seqs[:15000]
    num = 1 + max(max(s) for s in seqs)
    adj, weight = _official_build_graph(seqs, num, 3, 12)
    items, offsets = _csr(seqs)
    g = global_item_graph(items, offsets, num, eps=3, topk=12)
    for t in range(num):
        c = int(g.counts[t])
        assert g.neighbors[t, :c].tolist() == adj[t], t
        assert g.weights[t, :c].tolist() == weight[t], t


def test_hypergraph_propagation_matches_dense() -> None:
    items, offsets = _csr(SESSIONS)
    h = session_hypergraph(items, offsets, 7)
    assert h.n_edges == 4
    dense_h = np.zeros((7, 4), dtype=np.float64)  # item × hyperedge incidence, binary
    for e, s in enumerate(SESSIONS):
        dense_h[s, e] = 1.0
    assert dense_h[2, 1] == 1.0  # item 2 twice in session 2 still counts once
    d = np.maximum(dense_h.sum(1), 1.0)
    b = np.maximum(dense_h.sum(0), 1.0)
    prop = np.diag(1 / d) @ dense_h @ np.diag(1 / b) @ dense_h.T
    x = torch.randn(7, 5, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    got = h.propagate(x)
    np.testing.assert_allclose(got.numpy(), prop @ x.numpy().astype(np.float64), rtol=1e-5, atol=1e-6)
    # rows of D^-1 H B^-1 H^T sum to 1 for items in some session, 0 for others
    np.testing.assert_allclose(prop.sum(1), [0, 1, 1, 1, 1, 1, 0])
    e2i, i2e = h.operators()
    assert e2i.shape == (4, 7) and i2e.shape == (7, 4)
    # CSR forms: the two factors, and their product (DHCN's item × item adjacency), in float64
    (e_ptr, e_idx, e_val), (i_ptr, i_idx, i_val) = h.factors()

    def to_dense(ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        parts = (torch.from_numpy(ptr), torch.from_numpy(idx), torch.from_numpy(val))
        return torch.sparse_csr_tensor(*parts, shape, check_invariants=True).to_dense().numpy()

    np.testing.assert_array_equal(to_dense(e_ptr, e_idx, e_val, (4, 7)), (dense_h @ np.diag(1 / b)).T)
    np.testing.assert_array_equal(to_dense(i_ptr, i_idx, i_val, (7, 4)), np.diag(1 / d) @ dense_h)
    ptr, idx, val = h.propagation()
    assert ptr.dtype == idx.dtype == np.int64 and val.dtype == np.float64
    assert all((np.diff(idx[a:z]) > 0).all() for a, z in itertools.pairwise(ptr))  # sorted, no duplicates
    np.testing.assert_allclose(to_dense(ptr, idx, val, (7, 7)), prop, rtol=1e-15, atol=0)


def test_dataset_graph_uses_fitted_sessions_only_and_caches(tmp_path: Path) -> None:
    from sbrbench.data.srgnn_pickles import build_from_srgnn_pickles

    train = [[1, 2, 3], [2, 3, 4, 2], [5, 1], [1, 2], [6, 7, 6], [3, 1]]
    ds = build_from_srgnn_pickles("toy", "srgnn", train, [[1, 6], [7]], [7, 5], valid_fraction=0.34, n_items=8)
    fit_items = set()
    for s, p in zip(ds.splits["train"].session, ds.splits["train"].pos):
        fit_items.update(ds.items[ds.offsets[s] : ds.offsets[s] + p + 1].tolist())
    valid_only = {(int(a), int(b)) for s in set(ds.splits["valid"].session.tolist())
                  for a, b in zip(ds.session(s)[:-1], ds.session(s)[1:])}
    g = dataset_graph("global", ds, ("train",), tmp_path, eps=1, topk=12)
    src, dst, _ = g.edges()
    edges = set(zip(src.tolist(), dst.tolist()))
    assert set(src.tolist()) <= fit_items
    assert (6, 7) not in edges and (1, 6) not in edges and (6, 1) not in edges  # valid/test transitions
    assert valid_only - edges, "some validation transition should be absent from the train-only graph"
    g_all = dataset_graph("global", ds, ("train", "valid"), tmp_path, eps=1, topk=12)
    src2, dst2, _ = g_all.edges()
    assert valid_only <= set(zip(src2.tolist(), dst2.tolist()))

    cached = sorted(tmp_path.glob("global-*.npz"))
    assert len(cached) == 2
    again = dataset_graph("global", ds, ("train",), tmp_path, eps=1, topk=12)
    np.testing.assert_array_equal(again.neighbors, g.neighbors)
    for f in cached:
        f.write_bytes(b"not a npz")
    rebuilt = dataset_graph("global", ds, ("train",), tmp_path, eps=1, topk=12)
    np.testing.assert_array_equal(rebuilt.neighbors, g.neighbors)

    h = dataset_graph("hyper", ds, ("train",), tmp_path)
    assert 7 not in set(h.item.tolist())
    with pytest.raises(SbrError, match="never the test split"):
        dataset_graph("global", ds, ("train", "test"), tmp_path)
    with pytest.raises(SbrError, match="unknown graph kind"):
        dataset_graph("line", ds, ("train",), tmp_path)
