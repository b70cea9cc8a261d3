"""Tiny hand-made datasets and batches for the kNN and rule model tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sbrbench.batching import Batch
from sbrbench.data.dataset import ProcessedDataset, Split


def toy_dataset(train: list[list[int]], times: list[float] | None = None, n_items: int | None = None) -> ProcessedDataset:
    """Training sessions (index order = date order) with every prefix as a training example."""
    lens = [len(s) for s in train]
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    items = np.array([x for s in train for x in s], dtype=np.int32)
    sess = np.concatenate([np.full(n - 1, i) for i, n in enumerate(lens)]).astype(np.int32)
    pos = np.concatenate([np.arange(1, n) for n in lens]).astype(np.int32)
    return ProcessedDataset(
        name="toy", protocol="toy", n_items=n_items or int(items.max()) + 1, items=items, offsets=offsets,
        splits={"train": Split(sess, pos)},
        session_time=np.asarray(times, dtype=np.float64) if times is not None else None,
    )


def batch_of(prefixes: list[list[int]]) -> Batch:
    """A padded batch of prefixes (targets are dummies)."""
    lmax = max(len(p) for p in prefixes)
    seq = torch.zeros(len(prefixes), lmax, dtype=torch.long)
    for i, p in enumerate(prefixes):
        seq[i, : len(p)] = torch.tensor(p)
    lengths = torch.tensor([len(p) for p in prefixes])
    mask = torch.arange(lmax)[None, :] < lengths[:, None]
    return Batch(seq=seq, lengths=lengths, targets=torch.ones(len(prefixes), dtype=torch.long), mask=mask)


def scores64(model: Any, prefixes: list[list[int]]) -> np.ndarray:
    """The model's float64 scores of `prefixes` (column 0 dropped)."""
    model.score_dtype = np.float64
    out = model(batch_of(prefixes)).numpy()
    assert out.dtype == np.float64 and np.isneginf(out[:, 0]).all()
    return out[:, 1:]


def dense(values: dict[int, float], n_items: int) -> np.ndarray:
    """{item: score} as a vector over items 1..n_items-1."""
    out = np.zeros(n_items - 1)
    for k, v in values.items():
        out[k - 1] = v
    return out
