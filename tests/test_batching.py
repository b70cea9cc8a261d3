"""Vectorised batching and session graphs against a per-example reference (the official construction)."""

from __future__ import annotations

import numpy as np
import torch

from sbrbench.batching import ExampleSource, pad_prefixes, session_graphs
from sbrbench.data.dataset import ProcessedDataset, augment_all_prefixes, from_sequences


def reference_graph(prefix: list[int]) -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray]:
    """SR-GNN `utils.Data.get_slice` for one unpadded prefix: nodes, alias, A_in, A_out."""
    node = np.unique(prefix)
    n = len(node)
    u_a = np.zeros((n, n))
    for a, b in zip(prefix[:-1], prefix[1:]):
        u_a[np.where(node == a)[0][0], np.where(node == b)[0][0]] = 1
    s_in = u_a.sum(0)
    s_in[s_in == 0] = 1
    s_out = u_a.sum(1)
    s_out[s_out == 0] = 1
    a_full = np.concatenate([u_a / s_in, u_a.T / s_out]).T  # the official (N, 2N) matrix
    alias = [int(np.where(node == i)[0][0]) for i in prefix]
    return node, alias, a_full[:, :n], a_full[:, n:]


def random_prefixes(rng: np.random.Generator, n: int) -> list[list[int]]:
    out = []
    for _ in range(n):
        length = int(rng.integers(1, 12))
        # few distinct items so that repeats and repeated edges are common
        out.append(rng.integers(1, 8 if rng.random() < 0.5 else 40, size=length).tolist())
    return out


def test_session_graphs_match_official_construction() -> None:
    rng = np.random.default_rng(0)
    prefixes = random_prefixes(rng, 300)
    prefixes[0] = [5, 5, 5, 5]  # self loops only
    prefixes[1] = [3]  # single item
    prefixes[2] = [1, 2, 1, 2, 1, 3]  # repeated edges count once
    items = torch.tensor([x for p in prefixes for x in p])
    lens = torch.tensor([len(p) for p in prefixes])
    starts = torch.cumsum(lens, 0) - lens
    seq, mask = pad_prefixes(items, starts, lens)
    nodes, alias, a_in, a_out = session_graphs(seq, lens, mask)
    for i, p in enumerate(prefixes):
        node, ref_alias, ref_in, ref_out = reference_graph(p)
        n = len(node)
        assert nodes[i, :n].tolist() == node.tolist()
        assert (nodes[i, n:] == 0).all()
        assert alias[i, : len(p)].tolist() == ref_alias
        assert torch.allclose(a_in[i, :n, :n].double(), torch.from_numpy(ref_in))
        assert torch.allclose(a_out[i, :n, :n].double(), torch.from_numpy(ref_out))
        assert a_in[i, n:].abs().sum() == 0 and a_in[i, :, n:].abs().sum() == 0
        assert seq[i, : len(p)].tolist() == p and (seq[i, len(p):] == 0).all()


def _tiny_dataset() -> ProcessedDataset:
    sessions = [[1, 2, 3], [2, 2, 4, 5], [3, 1], [4, 5, 6, 7, 1], [6, 7]]
    items, offsets, n_items = from_sequences("tiny", "t", sessions)
    splits = {
        "train": augment_all_prefixes(offsets, np.array([0, 1, 2])),
        "valid": augment_all_prefixes(offsets, np.array([3])),
        "test": augment_all_prefixes(offsets, np.array([4])),
    }
    return ProcessedDataset("tiny", "t", n_items, items, offsets, splits)


def test_example_source_batches_cover_each_example_once() -> None:
    ds = _tiny_dataset()
    src = ExampleSource.from_dataset(ds, "train", graphs=True)
    prefixes, targets = ds.prefixes("train")
    got = []
    for b in src.batches(2, generator=torch.Generator().manual_seed(1)):
        for row, n, t in zip(b.seq.tolist(), b.lengths.tolist(), b.targets.tolist()):
            got.append((tuple(row[:n]), t))
        assert b.last_items.tolist() == [r[n - 1] for r, n in zip(b.seq.tolist(), b.lengths.tolist())]
    assert sorted(got) == sorted(zip(map(tuple, prefixes), targets))


def test_batches_carry_their_packed_positions_and_nodes() -> None:
    ds = _tiny_dataset()
    src = ExampleSource.from_dataset(ds, "train", graphs=True)
    for index in (slice(0, len(src)), torch.tensor([4, 0, 2]), slice(1, 2)):
        b = src.batch(index)
        rows, cols = b.mask.nonzero(as_tuple=True)
        assert b.pos_rows.tolist() == rows.tolist() and b.pos_cols.tolist() == cols.tolist()
        rows, cols = (b.nodes != 0).nonzero(as_tuple=True)
        assert b.node_rows.tolist() == rows.tolist() and b.node_cols.tolist() == cols.tolist()
